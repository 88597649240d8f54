//! The consumer side of remote exchanges: one TCP connection per producer taskmanager,
//! multiplexing every remote channel of this taskmanager that reads from it.
//!
//! The [`DataClient`] runs on its own thread with a current-thread tokio runtime. A
//! connection is opened on first use; its task writes requests, credits and cancellations
//! (batched: every command waiting is fed before one flush) and routes received frames to
//! channels by receiver id. A connection stays open while the client lives; when it
//! breaks (or the peer violates the protocol) every request on it fails with
//! [`NetworkError::ConnectionLost`] and the next request opens a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use flint_common::tls::TlsContext;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::channel::ChannelShared;
use super::protocol::{DataCodec, Header, Message};
use super::{lock, NetworkError};

/// The outbound data connections of one taskmanager. Cheap to clone; dropping the last
/// clone (or [`DataClient::stop`]) closes every connection.
#[derive(Clone)]
pub struct DataClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    max_frame_size: usize,
    connect_timeout: Duration,
    handle: tokio::runtime::Handle,
    shutdown: CancellationToken,
    connections: Mutex<HashMap<String, Arc<ClientConnection>>>,
    next_id: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Mutual TLS of every connection (`security.ssl.internal.*`).
    tls: Option<TlsContext>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl DataClient {
    /// Starts the client's thread. `max_frame_size` bounds frames both ways (as
    /// `pekko.framesize` does for RPC); `connect_timeout` bounds opening a connection.
    pub fn start(
        max_frame_size: usize,
        connect_timeout: Duration,
        tls: Option<TlsContext>,
    ) -> std::io::Result<DataClient> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().thread_name("flint-data-client").build()?;
        let shutdown = CancellationToken::new();
        let handle = runtime.handle().clone();
        let token = shutdown.clone();
        let thread = std::thread::Builder::new().name("flint-data-client".into()).spawn(move || {
            runtime.block_on(token.cancelled());
            // Dropping the runtime ends every connection task; their guards fail the
            // channels still reading.
        })?;
        Ok(DataClient {
            inner: Arc::new(ClientInner {
                max_frame_size,
                connect_timeout,
                handle,
                shutdown,
                connections: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                thread: Mutex::new(Some(thread)),
                tls,
            }),
        })
    }

    /// Closes every connection and waits for the client's thread.
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
        let thread = lock(&self.inner.thread).take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }

    /// Peers with an open (or opening) connection.
    pub fn connected_peers(&self) -> Vec<String> {
        lock(&self.inner.connections).iter().filter(|(_, c)| !c.is_closed()).map(|(a, _)| a.clone()).collect()
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.inner.handle
    }

    pub(crate) fn next_receiver_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The live connection to `address`, opening one if needed.
    pub(crate) fn connection(&self, address: &str) -> Arc<ClientConnection> {
        let mut connections = lock(&self.inner.connections);
        if let Some(c) = connections.get(address) {
            if !c.is_closed() {
                return c.clone();
            }
        }
        // Unbounded on purpose: only this taskmanager's own input gates write here (one
        // request per input channel, credits never beyond the buffers they hold), so it is
        // bounded by the deployed tasks, not by any peer.
        let (tx, rx) = mpsc::unbounded_channel();
        let connection = Arc::new(ClientConnection {
            address: address.to_string(),
            tx,
            receivers: Mutex::new(Some(HashMap::new())),
        });
        connections.insert(address.to_string(), connection.clone());
        let guard = CloseGuard {
            connection: connection.clone(),
            client: Arc::downgrade(&self.inner),
            reason: "the data client stopped".into(),
        };
        let shutdown = self.inner.shutdown.clone();
        let (max_frame_size, connect_timeout) = (self.inner.max_frame_size, self.inner.connect_timeout);
        let tls = self.inner.tls.clone();
        self.inner.handle.spawn(async move {
            let mut guard = guard;
            guard.reason = drive(&guard.connection, rx, shutdown, max_frame_size, connect_timeout, tls).await;
        });
        connection
    }
}

/// A request on a connection.
struct Receiver {
    channel: Weak<ChannelShared>,
    /// Told if the server answers `PartitionNotFound`; dropped once data arrives.
    not_found: Option<oneshot::Sender<()>>,
}

enum Command {
    Send(Header),
    AnnounceCredit(Weak<ChannelShared>),
}

/// One connection to a producer taskmanager's data server.
pub(crate) struct ClientConnection {
    address: String,
    tx: mpsc::UnboundedSender<Command>,
    /// `None` once closed.
    receivers: Mutex<Option<HashMap<u64, Receiver>>>,
}

impl ClientConnection {
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    fn is_closed(&self) -> bool {
        lock(&self.receivers).is_none()
    }

    /// Registers a request and sends it. False if the connection is closed.
    pub(crate) fn request(
        &self,
        channel: &Arc<ChannelShared>,
        receiver_id: u64,
        credit: u32,
        not_found: oneshot::Sender<()>,
    ) -> bool {
        {
            let mut receivers = lock(&self.receivers);
            let Some(receivers) = receivers.as_mut() else { return false };
            receivers.insert(receiver_id, Receiver { channel: Arc::downgrade(channel), not_found: Some(not_found) });
        }
        let header = Header::PartitionRequest {
            receiver_id,
            partition: channel.partition,
            subpartition: channel.subpartition,
            credit,
        };
        self.tx.send(Command::Send(header)).is_ok()
    }

    /// The channel's gate handed out buffers: announce their credit (coalesced).
    pub(crate) fn announce_credit(&self, channel: Weak<ChannelShared>) {
        let _ = self.tx.send(Command::AnnounceCredit(channel));
    }

    /// The channel's gate is gone: forget the request and tell the server.
    pub(crate) fn cancel(&self, receiver_id: u64) {
        let known = lock(&self.receivers).as_mut().and_then(|r| r.remove(&receiver_id)).is_some();
        if known {
            let _ = self.tx.send(Command::Send(Header::CancelRequest { receiver_id }));
        }
    }

    fn remove(&self, receiver_id: u64) -> Option<Receiver> {
        lock(&self.receivers).as_mut().and_then(|r| r.remove(&receiver_id))
    }

    /// The channel of a request that data arrived for; stops its not-found watch.
    fn data_channel(&self, receiver_id: u64) -> Option<Arc<ChannelShared>> {
        let mut receivers = lock(&self.receivers);
        let receiver = receivers.as_mut()?.get_mut(&receiver_id)?;
        receiver.not_found = None;
        receiver.channel.upgrade()
    }

    /// Routes one frame from the server. `Err` is a protocol violation.
    fn dispatch(&self, message: Message) -> Result<(), String> {
        match &message.header {
            Header::Buffer { .. } | Header::Event { .. } => {
                let Some((receiver_id, sequence, item)) = message.into_item() else { return Ok(()) };
                let Some(channel) = self.data_channel(receiver_id) else {
                    debug!(peer = %self.address, receiver_id, "dropping data for a finished request");
                    return Ok(());
                };
                if channel.on_item(receiver_id, sequence, item)? {
                    self.remove(receiver_id);
                }
            }
            Header::Error { receiver_id, kind, message } => {
                if let Some(channel) = self.remove(*receiver_id).and_then(|r| r.channel.upgrade()) {
                    channel.on_error(*receiver_id, &self.address, *kind, message.clone());
                }
            }
            Header::PartitionNotFound { receiver_id } => {
                if let Some(receiver) = self.remove(*receiver_id) {
                    let Some(not_found) = receiver.not_found else {
                        return Err(format!("PartitionNotFound for receiver {receiver_id} after its data"));
                    };
                    let _ = not_found.send(());
                }
            }
            Header::PartitionRequest { .. } | Header::AddCredit { .. } | Header::CancelRequest { .. } => {
                return Err(format!("server sent a client frame ({})", message.header.name()));
            }
        }
        Ok(())
    }

    /// Fails every request still on the connection; later requests open a new one.
    fn close(&self, reason: &str) {
        let receivers = lock(&self.receivers).take();
        for (receiver_id, receiver) in receivers.into_iter().flatten() {
            if let Some(channel) = receiver.channel.upgrade() {
                channel.fail_request(
                    receiver_id,
                    NetworkError::ConnectionLost { address: self.address.clone(), reason: reason.to_string() },
                );
            }
        }
    }
}

/// Closes the connection however its task ends, including when the runtime drops it.
struct CloseGuard {
    connection: Arc<ClientConnection>,
    client: Weak<ClientInner>,
    reason: String,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.connection.close(&self.reason);
        if let Some(client) = self.client.upgrade() {
            let mut connections = lock(&client.connections);
            if connections.get(&self.connection.address).is_some_and(|c| Arc::ptr_eq(c, &self.connection)) {
                connections.remove(&self.connection.address);
            }
        }
    }
}

/// Runs one connection until it ends; returns why.
async fn drive(
    connection: &ClientConnection,
    mut rx: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
    max_frame_size: usize,
    connect_timeout: Duration,
    tls: Option<TlsContext>,
) -> String {
    let peer = connection.address.as_str();
    let stream = tokio::select! {
        connected = tokio::time::timeout(connect_timeout, TcpStream::connect(peer)) => match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return format!("could not connect: {e}"),
            Err(_) => return format!("connect timed out after {} ms", connect_timeout.as_millis()),
        },
        _ = shutdown.cancelled() => return "the data client stopped".into(),
    };
    let _ = stream.set_nodelay(true);
    let (read, write) = tokio::select! {
        halves = flint_common::tls::stream::connect(tls.as_ref(), stream, peer) => match halves {
            Ok(halves) => halves,
            Err(e) => {
                warn!(peer, error = %e, "data connection refused: TLS handshake failed");
                return format!("TLS handshake failed: {e}");
            }
        },
        _ = shutdown.cancelled() => return "the data client stopped".into(),
    };
    debug!(peer, "data connection opened");
    let mut reader = FramedRead::new(read, DataCodec::new(max_frame_size));
    let mut writer = FramedWrite::new(write, DataCodec::new(max_frame_size));
    loop {
        tokio::select! {
            command = rx.recv() => {
                let Some(command) = command else { return "the connection was dropped".into() };
                let mut next = Some(command);
                while let Some(command) = next {
                    let header = match command {
                        Command::Send(header) => Some(header),
                        Command::AnnounceCredit(channel) => channel
                            .upgrade()
                            .and_then(|c| c.take_credit())
                            .map(|(receiver_id, credit)| Header::AddCredit { receiver_id, credit }),
                    };
                    if let Some(header) = header {
                        if let Err(e) = writer.feed(Message::new(header)).await {
                            return format!("write failed: {e}");
                        }
                    }
                    next = rx.try_recv().ok();
                }
                if let Err(e) = writer.flush().await {
                    return format!("write failed: {e}");
                }
            }
            incoming = reader.next() => {
                let frame = match incoming {
                    Some(Ok(frame)) => frame.freeze(),
                    Some(Err(e)) => {
                        warn!(peer, error = %e, "closing data connection: unreadable frame");
                        return format!("unreadable frame: {e}");
                    }
                    None => return "closed by the peer".into(),
                };
                let message = match Message::decode(frame) {
                    Ok(message) => message,
                    Err(e) => {
                        warn!(peer, error = %e, "closing data connection: malformed frame");
                        return format!("malformed frame: {e}");
                    }
                };
                if let Err(reason) = connection.dispatch(message) {
                    warn!(peer, %reason, "closing data connection: protocol violation");
                    return format!("protocol violation: {reason}");
                }
            }
            _ = shutdown.cancelled() => return "the data client stopped".into(),
        }
    }
}
