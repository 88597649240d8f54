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
//! Lock order: connection state, then a subpartition (through its reader).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::partition::{AvailabilityListener, Next, PartitionManager, ReadError, SubpartitionReader};
use super::protocol::{DataCodec, ErrorKind, Header, Message, FRAME_OVERHEAD};
use super::{lock, BufferOrEvent, Event, NetworkError};

/// Frames one writer round sends before it looks at control messages again and yields.
const WRITE_BUDGET: usize = 64;

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
            runtime.block_on(accept_loop(listener, manager, max_frame_size, token));
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
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve(stream, peer, manager.clone(), max_frame_size, shutdown.child_token()));
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
    token: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    debug!(%peer, "data connection accepted");
    let (read, write) = stream.into_split();
    let connection = Arc::new(Connection { state: Mutex::new(ConnState::default()), ready: Notify::new() });
    let (control_tx, control_rx) = mpsc::unbounded_channel::<Header>();
    let writer = tokio::spawn(write_loop(write, connection.clone(), control_rx, max_frame_size, token.clone(), peer));
    let mut reader = FramedRead::new(read, DataCodec::new(max_frame_size));
    loop {
        let incoming = tokio::select! {
            incoming = reader.next() => incoming,
            _ = token.cancelled() => break,
        };
        let frame = match incoming {
            Some(Ok(frame)) => frame.freeze(),
            Some(Err(e)) => {
                warn!(%peer, error = %e, "closing data connection: unreadable frame");
                break;
            }
            None => {
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
    control: &mpsc::UnboundedSender<Header>,
    header: Header,
) -> Result<(), String> {
    match header {
        Header::PartitionRequest { receiver_id, partition, subpartition, credit } => {
            if lock(&connection.state).requests.contains_key(&receiver_id) {
                return Err(format!("receiver id {receiver_id} is already in use"));
            }
            let Some(result_partition) = manager.get(&partition) else {
                debug!(%partition, subpartition, "requested partition not found");
                let _ = control.send(Header::PartitionNotFound { receiver_id });
                return Ok(());
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
                    let _ = control.send(Header::Error { receiver_id, kind, message: e.to_string() });
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
    write: tokio::net::tcp::OwnedWriteHalf,
    connection: Arc<Connection>,
    mut control: mpsc::UnboundedReceiver<Header>,
    max_frame_size: usize,
    token: CancellationToken,
    peer: SocketAddr,
) {
    let mut writer = FramedWrite::new(write, DataCodec::new(max_frame_size));
    let result = tokio::select! {
        result = async {
            loop {
                if !connection.has_ready() {
                    tokio::select! {
                        header = control.recv() => match header {
                            Some(header) => writer.feed(Message::new(header)).await?,
                            None => return Ok(()),
                        },
                        _ = connection.ready.notified() => {}
                    }
                }
                while let Ok(header) = control.try_recv() {
                    writer.feed(Message::new(header)).await?;
                }
                let mut sent = 0;
                while sent < WRITE_BUDGET {
                    let Some(message) = connection.next_frame(max_frame_size) else { break };
                    writer.feed(message).await?;
                    sent += 1;
                }
                writer.flush().await?;
                if sent == WRITE_BUDGET {
                    tokio::task::yield_now().await;
                }
            }
        } => result,
        _ = token.cancelled() => Ok(()),
    };
    if let Err(e) = result {
        let e: std::io::Error = e;
        debug!(%peer, error = %e, "data connection write failed");
    }
    token.cancel();
}
