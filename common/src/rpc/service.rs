//! The per-process RPC service: one TCP listener, outbound connections, ask and tell.
//!
//! The service runs on its own thread with a small tokio runtime, independent of the
//! actix systems of the process; actors reach it through a cloneable [`RpcService`]
//! handle and their messages reach actors through endpoints.
//!
//! - Requests travel on the *sender's* outbound connection to the receiver's listener;
//!   replies come back on the same connection, paired by correlation id. A reply never
//!   completes an ask twice; a reply that comes after its ask timed out is dropped.
//! - An outbound connection is opened on first use. When it breaks, every ask waiting
//!   on it fails at once with `ConnectionLost`, subscribers of [`RpcService::disconnects`]
//!   are told, and the next call opens a new connection.
//! - Bytes from a peer never panic the process: a malformed, oversized or
//!   other-version frame closes that connection only, with a logged reason.
//! - A call whose target is this process skips the socket but keeps the
//!   serialization, so local and remote calls behave the same.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::endpoint::{decode_body, encode_body, Endpoint};
use super::frame::{Frame, FrameError, FrameHeader, FrameKind};
use super::framing::{write_frame, FrameReader};
use super::{RpcAddress, RpcError, RpcMessage};
use crate::ids::LeaderSessionId;
use crate::tls::TlsContext;

/// How to start an [`RpcService`].
#[derive(Clone, Debug)]
pub struct RpcServiceConfig {
    /// The interface to listen on (`0.0.0.0`, `localhost`, an address).
    pub bind_host: String,
    /// Ports to try in order; `0` means any free port.
    pub ports: Vec<u16>,
    /// The host other processes use to reach this one.
    pub advertised_host: String,
    /// The largest frame sent or accepted, in bytes (`pekko.framesize`).
    pub max_frame_size: usize,
    /// How long opening a connection may take; also how long a frame may take to arrive
    /// once it started, how long a peer may leave a written frame unread, and how long a new
    /// inbound connection has to send its first frame (`pekko.ask.timeout`).
    pub connect_timeout: Duration,
    /// Mutual TLS on every connection (`security.ssl.internal.*`), or plain TCP.
    pub tls: Option<TlsContext>,
}

/// Requests of one inbound connection being handled at once; the connection is not read
/// further until one completes (back-pressure instead of unbounded work).
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;

/// Replies waiting to be written on one inbound connection.
const REPLY_QUEUE: usize = 64;

/// Requests waiting to be written on one outbound connection; a call beyond it fails at
/// once (the peer is not reading).
pub const OUTBOUND_QUEUE: usize = 1024;

/// Inbound RPC connections this process keeps at most: a quarter of its open-file limit,
/// so that the REST server, the data plane, outbound connections and files always have
/// descriptors left.
fn max_inbound_connections() -> usize {
    (crate::process::open_files_limit() / 4).clamp(16, 65_536) as usize
}

impl RpcServiceConfig {
    /// A service on a free loopback port (tests, benchmarks).
    pub fn loopback() -> Self {
        Self {
            bind_host: "127.0.0.1".into(),
            ports: vec![0],
            advertised_host: "127.0.0.1".into(),
            max_frame_size: 10 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Errors starting the service.
#[derive(Debug, thiserror::Error)]
pub enum RpcStartError {
    #[error("could not bind the rpc listener to {bind_host} on any of the ports {ports:?}: {reason}")]
    Bind { bind_host: String, ports: Vec<u16>, reason: String },
    #[error("could not start the rpc runtime: {0}")]
    Runtime(std::io::Error),
}

/// A handle to this process's RPC service. Cheap to clone.
#[derive(Clone)]
pub struct RpcService {
    inner: Arc<Inner>,
}

struct PendingAsk {
    tx: oneshot::Sender<Result<Bytes, RpcError>>,
    connection: u64,
}

struct Connection {
    id: u64,
    tx: mpsc::Sender<Bytes>,
}

struct Inner {
    host_port: String,
    local_addr: SocketAddr,
    max_frame_size: usize,
    connect_timeout: Duration,
    endpoints: RwLock<HashMap<String, Arc<Endpoint>>>,
    connections: Mutex<HashMap<String, Connection>>,
    pending: Mutex<HashMap<u64, PendingAsk>>,
    next_id: AtomicU64,
    handle: tokio::runtime::Handle,
    shutdown: CancellationToken,
    disconnects: broadcast::Sender<String>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Inbound connections open now, and the most allowed.
    inbound: AtomicU64,
    max_inbound: usize,
    tls: Option<TlsContext>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RpcService {
    /// Binds the listener and starts the service thread.
    pub fn start(config: RpcServiceConfig) -> Result<RpcService, RpcStartError> {
        let listener = bind_first(&config)?;
        let local_addr = listener.local_addr().map_err(RpcStartError::Runtime)?;
        listener.set_nonblocking(true).map_err(RpcStartError::Runtime)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("flint-rpc")
            .build()
            .map_err(RpcStartError::Runtime)?;
        let shutdown = CancellationToken::new();
        let inner = Arc::new(Inner {
            host_port: format!("{}:{}", config.advertised_host, local_addr.port()),
            local_addr,
            max_frame_size: config.max_frame_size,
            connect_timeout: config.connect_timeout,
            endpoints: RwLock::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            handle: runtime.handle().clone(),
            shutdown: shutdown.clone(),
            disconnects: broadcast::channel(64).0,
            thread: Mutex::new(None),
            inbound: AtomicU64::new(0),
            max_inbound: max_inbound_connections(),
            tls: config.tls.clone(),
        });
        let accept_inner = Arc::downgrade(&inner);
        let thread = std::thread::Builder::new()
            .name("flint-rpc".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            warn!(error = %e, "rpc listener could not be registered");
                            return;
                        }
                    };
                    accept_loop(listener, accept_inner, shutdown).await;
                });
                // Dropping the runtime here ends every connection task.
            })
            .map_err(RpcStartError::Runtime)?;
        *lock(&inner.thread) = Some(thread);
        info!(address = %inner.host_port, bind = %local_addr, tls = inner.tls.is_some(), "rpc service started");
        Ok(RpcService { inner })
    }

    /// `host:port` under which other processes reach this one.
    pub fn host_port(&self) -> &str {
        &self.inner.host_port
    }

    /// The port the listener is bound to.
    pub fn port(&self) -> u16 {
        self.inner.local_addr.port()
    }

    /// The address of a local endpoint.
    pub fn address_of(&self, endpoint: &str) -> RpcAddress {
        RpcAddress::new(self.inner.host_port.clone(), endpoint)
    }

    pub fn max_frame_size(&self) -> usize {
        self.inner.max_frame_size
    }

    /// Makes an endpoint reachable (replacing one of the same name).
    pub fn register_endpoint(&self, endpoint: Endpoint) {
        let name = endpoint.name().to_string();
        self.inner.endpoints.write().unwrap_or_else(|e| e.into_inner()).insert(name, Arc::new(endpoint));
    }

    pub fn unregister_endpoint(&self, name: &str) {
        self.inner.endpoints.write().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    /// Peers (`host:port`) whose outbound connection from this process broke.
    pub fn disconnects(&self) -> broadcast::Receiver<String> {
        self.inner.disconnects.subscribe()
    }

    /// Sends `msg` and waits for the reply, at most `timeout`.
    pub fn ask<M: RpcMessage>(
        &self,
        target: &RpcAddress,
        fencing_token: Option<LeaderSessionId>,
        msg: &M,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<M::Response, RpcError>> + Send + 'static {
        let inner = self.inner.clone();
        let target = target.clone();
        let prepared = encode_body(M::TYPE_NAME, msg).and_then(|body| {
            let header = FrameHeader {
                kind: FrameKind::Ask,
                correlation_id: inner.next_id.fetch_add(1, Ordering::Relaxed),
                target: target.endpoint.clone(),
                fencing_token,
                type_name: M::TYPE_NAME.to_string(),
            };
            let payload = Frame::new(header.clone(), body.clone()).encode();
            inner.check_size(M::TYPE_NAME, payload.len())?;
            Ok((header, body, payload))
        });
        async move {
            let (header, body, payload) = prepared?;
            let timed_out = || RpcError::Timeout {
                target: target.to_string(),
                type_name: M::TYPE_NAME.to_string(),
                timeout_ms: timeout.as_millis() as u64,
            };
            let reply = if target.host_port == inner.host_port {
                let fut = inner.dispatch(&header, body)?;
                tokio::time::timeout(timeout, fut).await.map_err(|_| timed_out())??
            } else {
                let (tx, rx) = oneshot::channel();
                let correlation_id = header.correlation_id;
                let connection = inner.connection_to(&target.host_port);
                lock(&inner.pending).insert(correlation_id, PendingAsk { tx, connection: connection.id });
                if let Err(e) = connection.send(payload, &target.host_port) {
                    lock(&inner.pending).remove(&correlation_id);
                    return Err(e);
                }
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(result)) => result?,
                    Ok(Err(_)) => return Err(RpcError::ServiceStopped),
                    Err(_) => {
                        lock(&inner.pending).remove(&correlation_id);
                        return Err(timed_out());
                    }
                }
            };
            decode_body(M::TYPE_NAME, &reply)
        }
    }

    /// Sends `msg` without waiting for anything. Delivery is best effort: a message to
    /// an unreachable peer is dropped (and logged at debug level).
    pub fn tell<M: RpcMessage>(
        &self,
        target: &RpcAddress,
        fencing_token: Option<LeaderSessionId>,
        msg: &M,
    ) -> Result<(), RpcError> {
        let body = encode_body(M::TYPE_NAME, msg)?;
        let header = FrameHeader {
            kind: FrameKind::Tell,
            correlation_id: 0,
            target: target.endpoint.clone(),
            fencing_token,
            type_name: M::TYPE_NAME.to_string(),
        };
        let payload = Frame::new(header.clone(), body.clone()).encode();
        self.inner.check_size(M::TYPE_NAME, payload.len())?;
        if target.host_port == self.inner.host_port {
            let fut = self.inner.dispatch(&header, body)?;
            self.inner.handle.spawn(async move {
                if let Err(e) = fut.await {
                    debug!(error = %e, "local tell failed");
                }
            });
            return Ok(());
        }
        self.inner.connection_to(&target.host_port).send(payload, &target.host_port)
    }

    /// Stops the listener and every connection; waits for the service thread.
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
        let thread = lock(&self.inner.thread).take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        for (_, pending) in lock(&self.inner.pending).drain() {
            let _ = pending.tx.send(Err(RpcError::ServiceStopped));
        }
    }
}

fn bind_first(config: &RpcServiceConfig) -> Result<std::net::TcpListener, RpcStartError> {
    let mut last_error = String::from("no ports given");
    for port in &config.ports {
        match std::net::TcpListener::bind((config.bind_host.as_str(), *port)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(RpcStartError::Bind { bind_host: config.bind_host.clone(), ports: config.ports.clone(), reason: last_error })
}

impl Inner {
    fn check_size(&self, type_name: &str, size: usize) -> Result<(), RpcError> {
        if size > self.max_frame_size {
            return Err(RpcError::FrameTooLarge { type_name: type_name.to_string(), size, max: self.max_frame_size });
        }
        Ok(())
    }

    fn dispatch(&self, header: &FrameHeader, body: Bytes) -> Result<super::endpoint::ReplyFuture, RpcError> {
        let endpoint =
            self.endpoints.read().unwrap_or_else(|e| e.into_inner()).get(&header.target).cloned().ok_or_else(|| {
                RpcError::UnknownEndpoint { address: self.host_port.clone(), endpoint: header.target.clone() }
            })?;
        endpoint.dispatch(header, body)
    }

    /// The live outbound connection to `host_port`, opening one if needed.
    fn connection_to(self: &Arc<Self>, host_port: &str) -> ConnectionHandle {
        let mut connections = lock(&self.connections);
        if let Some(c) = connections.get(host_port) {
            if !c.tx.is_closed() {
                return ConnectionHandle { id: c.id, tx: c.tx.clone() };
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        connections.insert(host_port.to_string(), Connection { id, tx: tx.clone() });
        let inner = Arc::downgrade(self);
        let host_port = host_port.to_string();
        let shutdown = self.shutdown.clone();
        let max_frame_size = self.max_frame_size;
        let connect_timeout = self.connect_timeout;
        let tls = self.tls.clone();
        self.handle.spawn(async move {
            let reason =
                run_outbound(&inner, &host_port, rx, shutdown, max_frame_size, connect_timeout, tls.as_ref()).await;
            if let Some(inner) = inner.upgrade() {
                inner.connection_closed(&host_port, id, reason);
            }
        });
        ConnectionHandle { id, tx }
    }

    fn connection_closed(&self, host_port: &str, id: u64, error: RpcError) {
        {
            let mut connections = lock(&self.connections);
            if connections.get(host_port).is_some_and(|c| c.id == id) {
                connections.remove(host_port);
            }
        }
        let failed: Vec<PendingAsk> = {
            let mut pending = lock(&self.pending);
            let ids: Vec<u64> = pending.iter().filter(|(_, p)| p.connection == id).map(|(k, _)| *k).collect();
            ids.into_iter().filter_map(|k| pending.remove(&k)).collect()
        };
        debug!(peer = host_port, error = %error, failed_asks = failed.len(), "outbound connection closed");
        for p in failed {
            let _ = p.tx.send(Err(error.clone()));
        }
        let _ = self.disconnects.send(host_port.to_string());
    }

    fn complete(&self, correlation_id: u64, result: Result<Bytes, RpcError>) {
        let pending = lock(&self.pending).remove(&correlation_id);
        match pending {
            Some(p) => {
                let _ = p.tx.send(result);
            }
            None => debug!(correlation_id, "dropping reply to an ask that is no longer waiting"),
        }
    }
}

struct ConnectionHandle {
    id: u64,
    tx: mpsc::Sender<Bytes>,
}

impl ConnectionHandle {
    /// Queues a frame; a full queue means the peer has not been reading.
    fn send(&self, payload: Bytes, host_port: &str) -> Result<(), RpcError> {
        self.tx.try_send(payload).map_err(|e| RpcError::ConnectionLost {
            address: host_port.to_string(),
            reason: match e {
                mpsc::error::TrySendError::Full(_) => {
                    format!("{OUTBOUND_QUEUE} requests are waiting to be sent; the peer is not reading")
                }
                mpsc::error::TrySendError::Closed(_) => "connection closed".into(),
            },
        })
    }
}

/// Runs one outbound connection until it breaks; returns why it ended.
async fn run_outbound(
    inner: &std::sync::Weak<Inner>,
    host_port: &str,
    mut rx: mpsc::Receiver<Bytes>,
    shutdown: CancellationToken,
    max_frame_size: usize,
    io_timeout: Duration,
    tls: Option<&TlsContext>,
) -> RpcError {
    let unreachable = |reason: String| RpcError::Unreachable { address: host_port.to_string(), reason };
    let stream = match tokio::time::timeout(io_timeout, TcpStream::connect(host_port)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return unreachable(e.to_string()),
        Err(_) => return unreachable(format!("connect timed out after {} ms", io_timeout.as_millis())),
    };
    let _ = stream.set_nodelay(true);
    let (read, mut write) = match crate::tls::stream::connect(tls, stream, host_port).await {
        Ok(halves) => halves,
        Err(e) => {
            warn!(peer = host_port, error = %e, "rpc connection refused: TLS handshake failed");
            return unreachable(format!("TLS handshake failed: {e}"));
        }
    };
    let mut reader = FrameReader::new(read, max_frame_size, io_timeout);
    let lost = |reason: String| RpcError::ConnectionLost { address: host_port.to_string(), reason };
    loop {
        tokio::select! {
            outgoing = rx.recv() => {
                let Some(payload) = outgoing else { return lost("rpc service dropped the connection".into()) };
                if let Err(e) = write_frame(&mut write, &payload, io_timeout).await {
                    warn!(peer = host_port, error = %e, "closing connection: cannot send");
                    return lost(e.to_string());
                }
            }
            incoming = reader.next_frame() => {
                let payload = match incoming {
                    Ok(Some(payload)) => payload,
                    Err(e) => {
                        warn!(peer = host_port, error = %e, "closing connection: unreadable frame");
                        return lost(e.to_string());
                    }
                    Ok(None) => return lost("closed by peer".into()),
                };
                let Some(inner) = inner.upgrade() else { return RpcError::ServiceStopped };
                match Frame::decode(payload) {
                    Ok(frame) => match frame.header.kind {
                        FrameKind::Reply => inner.complete(frame.header.correlation_id, Ok(frame.body)),
                        FrameKind::Error => {
                            let error = decode_body::<RpcError>("error reply", &frame.body)
                                .unwrap_or_else(|e| e);
                            if frame.header.correlation_id == 0 {
                                warn!(peer = host_port, error = %error, "peer closed the connection");
                                return error;
                            }
                            inner.complete(frame.header.correlation_id, Err(error));
                        }
                        FrameKind::Ask | FrameKind::Tell => {
                            warn!(peer = host_port, "closing connection: peer sent a request on a reply channel");
                            return lost("protocol violation: request on a reply channel".into());
                        }
                    },
                    Err(e) => {
                        warn!(peer = host_port, error = %e, "closing connection: malformed frame");
                        return match e {
                            FrameError::VersionMismatch { .. } => RpcError::VersionMismatch(e.to_string()),
                            _ => lost(e.to_string()),
                        };
                    }
                }
            }
            _ = shutdown.cancelled() => return RpcError::ServiceStopped,
        }
    }
}

async fn accept_loop(listener: TcpListener, inner: std::sync::Weak<Inner>, shutdown: CancellationToken) {
    let mut refused = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(strong) = inner.upgrade() else { return };
                    let open = strong.inbound.load(Ordering::Relaxed) as usize;
                    if open >= strong.max_inbound {
                        refused += 1;
                        if refused == 1 || refused.is_multiple_of(1000) {
                            warn!(%peer, open, limit = strong.max_inbound, refused,
                                "rpc connection limit reached; refusing connections (a quarter of the open-file limit)");
                        }
                        drop(stream);
                        continue;
                    }
                    refused = 0;
                    strong.inbound.fetch_add(1, Ordering::Relaxed);
                    let (max, io_timeout) = (strong.max_frame_size, strong.connect_timeout);
                    let tls = strong.tls.clone();
                    drop(strong);
                    let inner = inner.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        serve_inbound(stream, peer, inner.clone(), shutdown, max, io_timeout, tls).await;
                        if let Some(inner) = inner.upgrade() {
                            inner.inbound.fetch_sub(1, Ordering::Relaxed);
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accepting an rpc connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.cancelled() => return,
        }
    }
}

fn error_frame(correlation_id: u64, error: &RpcError) -> Bytes {
    let body = encode_body("error", error).unwrap_or_default();
    let header = FrameHeader {
        kind: FrameKind::Error,
        correlation_id,
        target: String::new(),
        fencing_token: None,
        type_name: String::new(),
    };
    Frame::new(header, body).encode()
}

/// Serves one inbound connection: requests in, replies out.
///
/// Requests are handed to their endpoints in the order they arrive (an actor's mailbox
/// takes each at once, see `Endpoint::on_actor`), so per-connection order holds under
/// any load. At most [`MAX_IN_FLIGHT_PER_CONNECTION`] requests are handled at once and at
/// most [`REPLY_QUEUE`] replies wait to be written; beyond that the connection is not read
/// (back-pressure), and a peer that leaves its replies unread for `io_timeout` is dropped.
/// A connection must send its first frame within `io_timeout`.
async fn serve_inbound(
    stream: TcpStream,
    peer: SocketAddr,
    inner: std::sync::Weak<Inner>,
    shutdown: CancellationToken,
    max_frame_size: usize,
    io_timeout: Duration,
    tls: Option<TlsContext>,
) {
    let _ = stream.set_nodelay(true);
    // A refused handshake is logged with the peer's address by `accept`.
    let Ok((read, mut write)) = crate::tls::stream::accept(tls.as_ref(), stream, peer, "rpc").await else { return };
    let mut reader = FrameReader::new(read, max_frame_size, io_timeout).with_handshake_timeout(io_timeout);
    let (reply_tx, mut reply_rx) = mpsc::channel::<Bytes>(REPLY_QUEUE);
    let stalled = CancellationToken::new();
    let writer_task = {
        let stalled = stalled.clone();
        tokio::spawn(async move {
            while let Some(payload) = reply_rx.recv().await {
                if let Err(e) = write_frame(&mut write, &payload, io_timeout).await {
                    warn!(%peer, error = %e, "closing connection: cannot send replies");
                    stalled.cancel();
                    return;
                }
            }
        })
    };
    let mut in_flight = FuturesUnordered::new();
    loop {
        let accepting = in_flight.len() < MAX_IN_FLIGHT_PER_CONNECTION;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = stalled.cancelled() => break,
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                let reply: Option<Bytes> = reply;
                if let Some(payload) = reply {
                    // Waits while the reply queue is full: the peer is slow to read, so
                    // this connection is not read either.
                    tokio::select! {
                        sent = reply_tx.send(payload) => if sent.is_err() { break },
                        _ = stalled.cancelled() => break,
                    }
                }
            }
            incoming = reader.next_frame(), if accepting => {
                let payload = match incoming {
                    Ok(Some(payload)) => payload,
                    Err(e) => {
                        warn!(%peer, error = %e, "closing connection: unreadable frame");
                        break;
                    }
                    Ok(None) => break,
                };
                let frame = match Frame::decode(payload) {
                    Ok(frame) => frame,
                    Err(e) => {
                        warn!(%peer, error = %e, "closing connection: malformed frame");
                        if let FrameError::VersionMismatch { .. } = e {
                            let error = RpcError::VersionMismatch(format!("refused by {peer}: {e}"));
                            let _ = reply_tx.try_send(error_frame(0, &error));
                        }
                        break;
                    }
                };
                let Some(inner) = inner.upgrade() else { break };
                match handle_request(&inner, peer, frame) {
                    Some(fut) => in_flight.push(fut),
                    None => break,
                }
            }
        }
    }
    drop(reply_tx);
    // Let replies already produced go out, bounded.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
}

type RequestFuture = futures::future::BoxFuture<'static, Option<Bytes>>;

/// Dispatches one request frame; the future yields the reply frame of an ask (`None` for
/// a tell). `None` here: the frame breaks the protocol and the connection is closed.
fn handle_request(inner: &Inner, peer: SocketAddr, frame: Frame) -> Option<RequestFuture> {
    use futures::FutureExt;
    let header = frame.header;
    match header.kind {
        FrameKind::Ask => {
            let max = inner.max_frame_size;
            let correlation_id = header.correlation_id;
            let type_name = header.type_name.clone();
            let respond = move |result: Result<Bytes, RpcError>| match result {
                Ok(body) => {
                    let reply = FrameHeader {
                        kind: FrameKind::Reply,
                        correlation_id,
                        target: String::new(),
                        fencing_token: None,
                        type_name: String::new(),
                    };
                    let payload = Frame::new(reply, body).encode();
                    if payload.len() > max {
                        error_frame(correlation_id, &RpcError::FrameTooLarge { type_name, size: payload.len(), max })
                    } else {
                        payload
                    }
                }
                Err(e) => error_frame(correlation_id, &e),
            };
            Some(match inner.dispatch(&header, frame.body) {
                Ok(fut) => async move { Some(respond(fut.await)) }.boxed(),
                Err(e) => {
                    debug!(%peer, error = %e, "rejecting ask");
                    futures::future::ready(Some(respond(Err(e)))).boxed()
                }
            })
        }
        FrameKind::Tell => Some(match inner.dispatch(&header, frame.body) {
            Ok(fut) => async move {
                if let Err(e) = fut.await {
                    debug!(error = %e, "tell failed");
                }
                None
            }
            .boxed(),
            Err(e) => {
                debug!(%peer, error = %e, "dropping tell");
                futures::future::ready(None).boxed()
            }
        }),
        FrameKind::Reply | FrameKind::Error => {
            warn!(%peer, "closing connection: peer sent a reply on a request channel");
            None
        }
    }
}
