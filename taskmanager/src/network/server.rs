//! The data server: serves this taskmanager's subpartitions to remote consumers.
//!
//! It runs on its own thread with a current-thread tokio runtime (as the RPC service
//! does), on the listener the taskmanager reserved at startup. Each connection has two
//! tasks: a reader that handles requests, credits and cancellations, and a writer that
//! sends data. A request attaches the subpartition's reader, whose listener puts the
//! request on the connection's ready queue when data arrives; the writer takes ready
//! requests in turn, one frame each (a buffer only against credit, events always), feeds
//! them and flushes once per round.
//!
//! A malformed, oversized, other-version or out-of-place frame closes that connection with
//! a `warn!`; its requests are cancelled (their subpartitions drop their queues). Other
//! connections go on.
//!
//! Bounds: frames are read as their bytes arrive (never allocated from an announced
//! length) and must arrive whole within the I/O timeout once started; a connection must
//! send its first request within the I/O timeout; at most [`CONTROL_QUEUE`] control
//! answers wait for the writer (a client that floods requests without reading is dropped);
//! a write the peer does not drain within the I/O timeout closes the connection; the
//! server keeps at most a quarter of the process's open-file limit of connections.
//!
//! Lock order: connection state, then a subpartition (through its reader).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use flint_common::rpc::framing::FrameReader;
use flint_common::tls::TlsContext;
use futures::SinkExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::partition::{AvailabilityListener, Next, PartitionManager, ReadError, SubpartitionReader};
use super::protocol::{DataCodec, ErrorKind, Header, Message, FRAME_OVERHEAD};
use super::{lock, BufferOrEvent, Event, NetworkError};

/// Frames one writer round sends before it looks at control messages again and yields.
const WRITE_BUDGET: usize = 64;

/// Control answers (not found, errors) waiting for the writer of one connection.
pub const CONTROL_QUEUE: usize = 1024;

/// The taskmanager's data server. Stops when dropped.
pub struct DataServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl DataServer {
    /// Serves `manager`'s partitions on `listener` (already bound: the taskmanager reserves
    /// its data port at startup), on a thread of its own. Frames larger than
    /// `max_frame_size` are refused, and buffers larger than
    /// `max_frame_size - protocol::FRAME_OVERHEAD` cannot be sent.
    pub fn start(
        listener: std::net::TcpListener,
        manager: PartitionManager,
        max_frame_size: usize,
        io_timeout: Duration,
        tls: Option<TlsContext>,
    ) -> std::io::Result<DataServer> {
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().thread_name("flint-data-server").build()?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::Builder::new().name("flint-data-server".into()).spawn(move || {
            runtime.block_on(accept_loop(listener, manager, max_frame_size, io_timeout, token, tls));
            // Dropping the runtime closes every connection.
        })?;
        info!(address = %local_addr, "data server started");
        Ok(DataServer { local_addr, shutdown, thread: Mutex::new(Some(thread)) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection, and waits for the server's thread.
    pub fn stop(&self) {
        self.shutdown.cancel();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
            info!(address = %self.local_addr, "data server stopped");
        }
    }
}

impl Drop for DataServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    manager: PartitionManager,
    max_frame_size: usize,
    io_timeout: Duration,
    shutdown: CancellationToken,
    tls: Option<TlsContext>,
) {
    let max_connections = (flint_common::process::open_files_limit() / 4).clamp(16, 65_536) as usize;
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut refused = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let now_open = open.load(std::sync::atomic::Ordering::Relaxed);
                    if now_open >= max_connections {
                        refused += 1;
                        if refused == 1 || refused.is_multiple_of(1000) {
                            warn!(%peer, open = now_open, limit = max_connections, refused,
                                "data connection limit reached; refusing connections (a quarter of the open-file limit)");
                        }
                        continue;
                    }
                    refused = 0;
                    open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (manager, token, open) = (manager.clone(), shutdown.child_token(), open.clone());
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        serve(stream, peer, manager, max_frame_size, io_timeout, token, tls).await;
                        open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accepting a data connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One request being served.
struct Request {
    reader: Arc<SubpartitionReader>,
    credit: u32,
    next_sequence: u64,
    /// On the ready queue.
    queued: bool,
}

#[derive(Default)]
struct ConnState {
    requests: HashMap<u64, Request>,
    ready: VecDeque<u64>,
    closed: bool,
}

/// The state one connection's reader and writer share.
struct Connection {
    state: Mutex<ConnState>,
    /// Wakes the writer; `notify_one` keeps a permit, so no wake-up is lost.
    ready: Notify,
}

impl Connection {
    /// Puts a request on the ready queue (once) and wakes the writer.
    fn enqueue(&self, receiver_id: u64) {
        {
            let mut state = lock(&self.state);
            let ConnState { requests, ready, .. } = &mut *state;
            let Some(request) = requests.get_mut(&receiver_id) else { return };
            if request.queued {
                return;
            }
            request.queued = true;
            ready.push_back(receiver_id);
        }
        self.ready.notify_one();
    }

    fn has_ready(&self) -> bool {
        !lock(&self.state).ready.is_empty()
    }

    fn remove(&self, receiver_id: u64) -> Option<Request> {
        lock(&self.state).requests.remove(&receiver_id)
    }

    /// Ends the connection: every request is dropped, cancelling its subpartition.
    fn close(&self) {
        let requests = {
            let mut state = lock(&self.state);
            state.closed = true;
            state.ready.clear();
            std::mem::take(&mut state.requests)
        };
        drop(requests);
    }

    /// The next frame to send, taking ready requests in turn. `None` when no request can
    /// send anything.
    fn next_frame(&self, max_frame_size: usize) -> Option<Message> {
        loop {
            let (receiver_id, reader, has_credit) = {
                let mut state = lock(&self.state);
                let receiver_id = state.ready.pop_front()?;
                let Some(request) = state.requests.get_mut(&receiver_id) else { continue };
                request.queued = false;
                (receiver_id, request.reader.clone(), request.credit > 0)
            };
            let polled = reader.poll(has_credit);
            drop(reader);
            let (item, next) = match polled {
                Ok(Some(polled)) => polled,
                Ok(None) => continue,
                Err(e) => {
                    drop(self.remove(receiver_id));
                    let (kind, message) = match e {
                        ReadError::Failed(cause) => (ErrorKind::ProducerFailed, cause),
                        ReadError::Released => (ErrorKind::Released, "the partition was released".to_string()),
                    };
                    return Some(Message::new(Header::Error { receiver_id, kind, message }));
                }
            };
            let mut state = lock(&self.state);
            let ConnState { requests, ready, .. } = &mut *state;
            let Some(request) = requests.get_mut(&receiver_id) else { continue };
            let payload_len = match &item {
                BufferOrEvent::Buffer(b) => b.len(),
                BufferOrEvent::Event(Event::Custom(b)) => b.len(),
                BufferOrEvent::Event(Event::EndOfPartition) => 0,
            };
            if payload_len + FRAME_OVERHEAD > max_frame_size {
                let removed = requests.remove(&receiver_id);
                drop(state);
                drop(removed);
                let message = format!(
                    "a {payload_len}-byte buffer does not fit the maximum frame size of {max_frame_size} bytes"
                );
                return Some(Message::new(Header::Error { receiver_id, kind: ErrorKind::Rejected, message }));
            }
            let sequence = request.next_sequence;
            request.next_sequence += 1;
            if matches!(item, BufferOrEvent::Buffer(_)) {
                request.credit -= 1;
            }
            if matches!(item, BufferOrEvent::Event(Event::EndOfPartition)) {
                let removed = requests.remove(&receiver_id);
                drop(state);
                drop(removed);
            } else if !request.queued && (next == Next::Event || (next == Next::Buffer && request.credit > 0)) {
                request.queued = true;
                ready.push_back(receiver_id);
            }
            return Some(Message::data(receiver_id, sequence, item));
        }
    }
}

/// Puts a request on its connection's ready queue when its subpartition has data.
struct RequestListener {
    connection: Weak<Connection>,
    receiver_id: u64,
}

impl AvailabilityListener for RequestListener {
    fn notify_available(&self) {
        if let Some(connection) = self.connection.upgrade() {
            connection.enqueue(self.receiver_id);
        }
    }
}

/// Serves one connection until it ends.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    manager: PartitionManager,
    max_frame_size: usize,
    io_timeout: Duration,
    token: CancellationToken,
    tls: Option<TlsContext>,
) {
    let _ = stream.set_nodelay(true);
    debug!(%peer, "data connection accepted");
    // A refused handshake is logged with the peer's address by `accept`.
    let Ok((read, write)) = flint_common::tls::stream::accept(tls.as_ref(), stream, peer, "data").await else {
        return;
    };
    let connection = Arc::new(Connection { state: Mutex::new(ConnState::default()), ready: Notify::new() });
    let (control_tx, control_rx) = mpsc::channel::<Header>(CONTROL_QUEUE);
    let writer = tokio::spawn(write_loop(
        write,
        connection.clone(),
        control_rx,
        max_frame_size,
        io_timeout,
        token.clone(),
        peer,
    ));
    let mut reader = FrameReader::new(read, max_frame_size, io_timeout).with_handshake_timeout(io_timeout);
    loop {
        let incoming = tokio::select! {
            incoming = reader.next_frame() => incoming,
            _ = token.cancelled() => break,
        };
        let frame = match incoming {
            Ok(Some(frame)) => frame,
            Err(e) => {
                warn!(%peer, error = %e, "closing data connection: unreadable frame");
                break;
            }
            Ok(None) => {
                debug!(%peer, "data connection closed by the peer");
                break;
            }
        };
        let message = match Message::decode(frame) {
            Ok(message) => message,
            Err(e) => {
                warn!(%peer, error = %e, "closing data connection: malformed frame");
                break;
            }
        };
        if let Err(reason) = handle(&connection, &manager, &control_tx, message.header) {
            warn!(%peer, %reason, "closing data connection: protocol violation");
            break;
        }
    }
    token.cancel();
    connection.close();
    let _ = writer.await;
}

/// Handles one frame from a client. `Err` is a protocol violation.
fn handle(
    connection: &Arc<Connection>,
    manager: &PartitionManager,
    control: &mpsc::Sender<Header>,
    header: Header,
) -> Result<(), String> {
    // A control answer that does not fit the queue means the client sends requests without
    // reading the answers: the connection is dropped.
    let answer = |header: Header| {
        control.try_send(header).map_err(|_| format!("{CONTROL_QUEUE} answers are waiting; the client is not reading"))
    };
    match header {
        Header::PartitionRequest { receiver_id, partition, subpartition, credit } => {
            if lock(&connection.state).requests.contains_key(&receiver_id) {
                return Err(format!("receiver id {receiver_id} is already in use"));
            }
            let Some(result_partition) = manager.get(&partition) else {
                debug!(%partition, subpartition, "requested partition not found");
                return answer(Header::PartitionNotFound { receiver_id });
            };
            let listener = Arc::new(RequestListener { connection: Arc::downgrade(connection), receiver_id });
            match result_partition.create_reader(subpartition, listener) {
                Ok(reader) => {
                    let request = Request { reader: Arc::new(reader), credit, next_sequence: 0, queued: false };
                    let rejected = {
                        let mut state = lock(&connection.state);
                        if state.closed {
                            Some(request)
                        } else {
                            state.requests.insert(receiver_id, request);
                            None
                        }
                    };
                    drop(rejected);
                    connection.enqueue(receiver_id);
                }
                Err(e) => {
                    let kind = match e {
                        NetworkError::ProducerFailed { .. } => ErrorKind::ProducerFailed,
                        NetworkError::PartitionReleased { .. } => ErrorKind::Released,
                        _ => ErrorKind::Rejected,
                    };
                    answer(Header::Error { receiver_id, kind, message: e.to_string() })?;
                }
            }
        }
        Header::AddCredit { receiver_id, credit } => {
            let add = {
                let mut state = lock(&connection.state);
                match state.requests.get_mut(&receiver_id) {
                    Some(request) => {
                        request.credit = request.credit.saturating_add(credit);
                        true
                    }
                    // A request that just ended; the credit is moot.
                    None => false,
                }
            };
            if add {
                connection.enqueue(receiver_id);
            }
        }
        Header::CancelRequest { receiver_id } => {
            debug!(receiver_id, "request cancelled by the consumer");
            drop(connection.remove(receiver_id));
        }
        other => return Err(format!("client sent a server frame ({})", other.name())),
    }
    Ok(())
}

/// Sends control answers and data until the connection ends.
async fn write_loop(
    write: flint_common::tls::BoxedWrite,
    connection: Arc<Connection>,
    mut control: mpsc::Receiver<Header>,
    max_frame_size: usize,
    io_timeout: Duration,
    token: CancellationToken,
    peer: SocketAddr,
) {
    let mut writer = FramedWrite::new(write, DataCodec::new(max_frame_size));
    // A write the client does not drain within the I/O timeout ends the connection.
    let timed = |result: Result<std::io::Result<()>, tokio::time::error::Elapsed>| {
        result.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client did not read for {} ms", io_timeout.as_millis()),
            ))
        })
    };
    let result = tokio::select! {
        result = async {
            loop {
                if !connection.has_ready() {
                    tokio::select! {
                        header = control.recv() => match header {
                            Some(header) => timed(tokio::time::timeout(io_timeout, writer.feed(Message::new(header))).await)?,
                            None => return Ok(()),
                        },
                        _ = connection.ready.notified() => {}
                    }
                }
                while let Ok(header) = control.try_recv() {
                    timed(tokio::time::timeout(io_timeout, writer.feed(Message::new(header))).await)?;
                }
                let mut sent = 0;
                while sent < WRITE_BUDGET {
                    let Some(message) = connection.next_frame(max_frame_size) else { break };
                    timed(tokio::time::timeout(io_timeout, writer.feed(message)).await)?;
                    sent += 1;
                }
                timed(tokio::time::timeout(io_timeout, writer.flush()).await)?;
                if sent == WRITE_BUDGET {
                    tokio::task::yield_now().await;
                }
            }
        } => result,
        _ = token.cancelled() => Ok(()),
    };
    if let Err(e) = result {
        let e: std::io::Error = e;
        if e.kind() == std::io::ErrorKind::TimedOut {
            warn!(%peer, error = %e, "closing data connection");
        } else {
            debug!(%peer, error = %e, "data connection write failed");
        }
    }
    token.cancel();
}
