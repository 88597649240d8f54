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
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::endpoint::{decode_body, encode_body, Endpoint};
use super::frame::{Frame, FrameError, FrameHeader, FrameKind};
use super::{RpcAddress, RpcError, RpcMessage};
use crate::ids::LeaderSessionId;

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
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
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
    tx: mpsc::UnboundedSender<Bytes>,
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
}

fn codec(max_frame_size: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(max_frame_size).new_codec()
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
        info!(address = %inner.host_port, bind = %local_addr, "rpc service started");
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
                if connection.tx.send(payload).is_err() {
                    lock(&inner.pending).remove(&correlation_id);
                    return Err(RpcError::ConnectionLost {
                        address: target.host_port.clone(),
                        reason: "connection closed".into(),
                    });
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
        let connection = self.inner.connection_to(&target.host_port);
        connection.tx.send(payload).map_err(|_| RpcError::ConnectionLost {
            address: target.host_port.clone(),
            reason: "connection closed".into(),
        })
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
        let (tx, rx) = mpsc::unbounded_channel();
        connections.insert(host_port.to_string(), Connection { id, tx: tx.clone() });
        let inner = Arc::downgrade(self);
        let host_port = host_port.to_string();
        let shutdown = self.shutdown.clone();
        let max_frame_size = self.max_frame_size;
        let connect_timeout = self.connect_timeout;
        self.handle.spawn(async move {
            let reason = run_outbound(&inner, &host_port, rx, shutdown, max_frame_size, connect_timeout).await;
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
    tx: mpsc::UnboundedSender<Bytes>,
}

/// Runs one outbound connection until it breaks; returns why it ended.
async fn run_outbound(
    inner: &std::sync::Weak<Inner>,
    host_port: &str,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    shutdown: CancellationToken,
    max_frame_size: usize,
    connect_timeout: Duration,
) -> RpcError {
    let unreachable = |reason: String| RpcError::Unreachable { address: host_port.to_string(), reason };
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(host_port)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return unreachable(e.to_string()),
        Err(_) => return unreachable(format!("connect timed out after {} ms", connect_timeout.as_millis())),
    };
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, codec(max_frame_size));
    let mut writer = FramedWrite::new(write, codec(max_frame_size));
    let lost = |reason: String| RpcError::ConnectionLost { address: host_port.to_string(), reason };
    loop {
        tokio::select! {
            outgoing = rx.recv() => {
                let Some(payload) = outgoing else { return lost("rpc service dropped the connection".into()) };
                if let Err(e) = writer.feed(payload).await {
                    return lost(e.to_string());
                }
                while let Ok(more) = rx.try_recv() {
                    if let Err(e) = writer.feed(more).await {
                        return lost(e.to_string());
                    }
                }
                if let Err(e) = SinkExt::<Bytes>::flush(&mut writer).await {
                    return lost(e.to_string());
                }
            }
            incoming = reader.next() => {
                let payload = match incoming {
                    Some(Ok(payload)) => payload.freeze(),
                    Some(Err(e)) => {
                        warn!(peer = host_port, error = %e, "closing connection: unreadable frame");
                        return lost(e.to_string());
                    }
                    None => return lost("closed by peer".into()),
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
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(strong) = inner.upgrade() else { return };
                    let max = strong.max_frame_size;
                    drop(strong);
                    tokio::spawn(serve_inbound(stream, peer, inner.clone(), shutdown.clone(), max));
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
async fn serve_inbound(
    stream: TcpStream,
    peer: SocketAddr,
    inner: std::sync::Weak<Inner>,
    shutdown: CancellationToken,
    max_frame_size: usize,
) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, codec(max_frame_size));
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Bytes>();
    let writer_task = tokio::spawn(async move {
        let mut writer = FramedWrite::new(write, codec(max_frame_size));
        while let Some(payload) = reply_rx.recv().await {
            if writer.feed(payload).await.is_err() {
                return;
            }
            while let Ok(more) = reply_rx.try_recv() {
                if writer.feed(more).await.is_err() {
                    return;
                }
            }
            if SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
                return;
            }
        }
    });
    loop {
        let payload = tokio::select! {
            incoming = reader.next() => incoming,
            _ = shutdown.cancelled() => break,
        };
        let payload = match payload {
            Some(Ok(payload)) => payload.freeze(),
            Some(Err(e)) => {
                warn!(%peer, error = %e, "closing connection: unreadable frame");
                break;
            }
            None => break,
        };
        let frame = match Frame::decode(payload) {
            Ok(frame) => frame,
            Err(e) => {
                warn!(%peer, error = %e, "closing connection: malformed frame");
                if let FrameError::VersionMismatch { .. } = e {
                    let _ =
                        reply_tx.send(error_frame(0, &RpcError::VersionMismatch(format!("refused by {}: {e}", peer))));
                }
                break;
            }
        };
        let Some(inner) = inner.upgrade() else { break };
        let header = frame.header;
        match header.kind {
            FrameKind::Ask => {
                let max = inner.max_frame_size;
                let result = inner.dispatch(&header, frame.body);
                let reply_tx = reply_tx.clone();
                let correlation_id = header.correlation_id;
                let type_name = header.type_name.clone();
                let respond = move |result: Result<Bytes, RpcError>| {
                    let payload = match result {
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
                                error_frame(
                                    correlation_id,
                                    &RpcError::FrameTooLarge { type_name, size: payload.len(), max },
                                )
                            } else {
                                payload
                            }
                        }
                        Err(e) => error_frame(correlation_id, &e),
                    };
                    let _ = reply_tx.send(payload);
                };
                match result {
                    Ok(fut) => {
                        tokio::spawn(async move { respond(fut.await) });
                    }
                    Err(e) => {
                        debug!(%peer, error = %e, "rejecting ask");
                        respond(Err(e));
                    }
                }
            }
            FrameKind::Tell => match inner.dispatch(&header, frame.body) {
                Ok(fut) => {
                    tokio::spawn(async move {
                        if let Err(e) = fut.await {
                            debug!(error = %e, "tell failed");
                        }
                    });
                }
                Err(e) => debug!(%peer, error = %e, "dropping tell"),
            },
            FrameKind::Reply | FrameKind::Error => {
                warn!(%peer, "closing connection: peer sent a reply on a request channel");
                break;
            }
        }
    }
    drop(reply_tx);
    // Let replies already produced go out, bounded.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
}
