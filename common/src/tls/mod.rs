//! TLS of Flint's ports, with Flink's `security.ssl.*` options.
//!
//! Two scopes, as in Flink:
//! - **internal** (`security.ssl.internal.*`): RPC, the data plane and the BlobServer. Always
//!   mutual: both ends present the cluster certificate and check the other's against the
//!   truststore (and, when set, against `security.ssl.internal.cert.fingerprint`). Host names
//!   are not checked, as in Flink: the cluster certificate is shared by every process.
//! - **rest** (`security.ssl.rest.*`): the REST endpoint and the dashboard. HTTPS; clients
//!   must present a certificate trusted by the REST truststore when
//!   `security.ssl.rest.authentication-enabled` is true.
//!
//! Key material comes from PKCS#12 keystores (Flink's keys) or from PEM files (Flint's keys
//! `flint.ssl.<scope>.certificate` / `private-key` / `ca-certificates`); see [`material`].
//! Everything is loaded and checked at startup: a wrong password, a Java JKS keystore, an
//! expired certificate or a certificate the truststore does not trust fails the process with
//! a message naming the key. The files are re-read when they change (checked at most once a
//! second, when a connection is opened or accepted), so a rotated certificate is used by new
//! connections without a restart; a rotation that does not load is logged and the previous
//! material stays in use.
//!
//! The handshake is rustls with the ring provider; `security.ssl.protocol` and
//! `security.ssl.algorithms` restrict the versions and cipher suites.

pub mod certgen;
pub mod material;
pub mod options;
mod reload;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

pub use material::MaterialError;
pub use options::{Scope, TlsSettings};
pub use stream::{BlockingStream, BoxedRead, BoxedWrite};

use crate::config::{ConfigError, Configuration};

/// Errors setting TLS up from the configuration. A retry does not help: the configuration
/// or the files it names must change.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Material(#[from] MaterialError),
    #[error("configuration key '{key}': {reason}")]
    Option { key: String, reason: String },
    #[error("{key}: {reason}")]
    Rustls { key: &'static str, reason: String },
}

/// The TLS setup of one scope: a server and a client configuration that share the reloading
/// key material. Cheap to clone.
#[derive(Clone)]
pub struct TlsContext {
    scope: Scope,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext").field("scope", &self.scope).finish_non_exhaustive()
    }
}

impl TlsContext {
    /// The TLS of `scope` as configured, or `None` when it is off
    /// (`security.ssl.internal.enabled` / `security.ssl.rest.enabled` false).
    pub fn from_config(config: &Configuration, scope: Scope) -> Result<Option<TlsContext>, TlsError> {
        match TlsSettings::from_config(config, scope)? {
            Some(settings) => Ok(Some(TlsContext::new(settings)?)),
            None => Ok(None),
        }
    }

    /// Loads and checks the key material of `settings` and builds both configurations.
    pub fn new(settings: TlsSettings) -> Result<TlsContext, TlsError> {
        let scope = settings.scope;
        let handshake_timeout = settings.handshake_timeout;
        let reloading = reload::Reloading::load(settings)?;
        let (server, client) = reloading.configs()?;
        Ok(TlsContext { scope, server, client, handshake_timeout })
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The rustls server configuration (for actix-web's `bind_rustls_0_23`).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The rustls client configuration.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// How long a handshake may take (`security.ssl.internal.handshake-timeout`).
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }
}

#[cfg(test)]
mod tests;
