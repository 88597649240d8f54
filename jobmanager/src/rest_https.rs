//! HTTPS for the REST endpoint and the dashboard (`security.ssl.rest.*`).
//!
//! actix-web's `HttpServer::listen_rustls_0_23` drops a failed TLS handshake without a
//! word, so an operator would never learn that a client without a certificate, with one
//! of another CA, or speaking plain HTTP to the HTTPS port was turned away. [`listen`]
//! therefore builds the same server from actix-web's own parts (what
//! `listen_rustls_0_23` does, with the settings the plain listener gets in [`crate::run`])
//! and wraps the TLS service in one that logs every refused handshake at WARN with the
//! peer's address. The rustls configuration is [`TlsContext`]'s: it asks for and checks
//! client certificates when `security.ssl.rest.authentication-enabled` is true and reads
//! rotated key material, so a new certificate is served without a restart.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::{HttpService, KeepAlive, Request, Response, TlsAcceptorConfig};
use actix_service::{apply_fn_factory, map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt};
use actix_tls::accept::TlsError;
use actix_web::dev::{AppConfig, Server};
use flint_common::tls::TlsContext;
use tracing::{debug, warn};

/// What the HTTPS listener shares with the plain one.
#[derive(Clone, Copy, Debug)]
pub struct ListenSettings {
    /// Concurrent connections kept; the same number waits in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's head.
    pub client_request_timeout: Duration,
    /// Seconds a graceful stop waits for requests in flight.
    pub shutdown_timeout: u64,
}

/// Serves the apps `factory` makes over HTTPS on `listener`, with one worker and no signal
/// handling of its own (the process's shutdown token stops it), like the plain listener.
pub fn listen<F, I, S, B>(
    factory: F,
    listener: std::net::TcpListener,
    tls: &TlsContext,
    settings: ListenSettings,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    // actix-http adds the ALPN protocol it speaks (http/1.1) itself.
    let mut server_config = (*tls.server_config()).clone();
    server_config.alpn_protocols.clear();
    let handshake_timeout = tls.handshake_timeout();
    let builder = actix_server::Server::build()
        .max_concurrent_connections(settings.max_connections)
        .backlog(settings.max_connections as u32)
        .workers(1)
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout);
    let graceful_shutdown = builder.graceful_shutdown_signal();
    let host = addr.to_string();
    let server = builder.listen(format!("flint-rest-https-{addr}"), listener, move || {
        let shutdown = graceful_shutdown.clone();
        let host = host.clone();
        let app = factory().into_factory().map_err(|err| {
            let err: actix_web::Error = err.into();
            err.error_response()
        });
        let https = HttpService::build()
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .keep_alive(KeepAlive::default())
            .client_request_timeout(settings.client_request_timeout)
            .client_disconnect_timeout(Duration::from_secs(1))
            .h1_allow_half_closed(true)
            .local_addr(addr)
            // `AppConfig::new` is crate-private; this is its public (doc-hidden) twin, the
            // same secure/host/address triple `listen_rustls_0_23` passes.
            .finish(map_config(app, move |_| AppConfig::__priv_test_new(true, host.clone(), addr)))
            .rustls_0_23_with_config(
                server_config.clone(),
                TlsAcceptorConfig::default().handshake_timeout(handshake_timeout),
            );
        apply_fn_factory(https, |stream: actix_rt::net::TcpStream, service| {
            let peer = stream.peer_addr().ok();
            let connection = service.call(stream);
            async move { connection.await.inspect_err(|error| log_failure(peer, error)) }
        })
    })?;
    Ok(server.run())
}

/// A refused handshake is the operator's business (WARN, with the peer); an HTTP-level
/// error on an established connection is the client's (DEBUG).
fn log_failure<E: fmt::Debug>(peer: Option<SocketAddr>, error: &TlsError<std::io::Error, E>) {
    let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
    match error {
        TlsError::Tls(e) => warn!(%peer, error = %e, "refused a REST connection: TLS handshake failed"),
        TlsError::Timeout => warn!(%peer, "refused a REST connection: TLS handshake timed out"),
        TlsError::Service(e) => debug!(%peer, error = ?e, "REST connection ended with an error"),
    }
}
