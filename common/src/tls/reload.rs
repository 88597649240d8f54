//! Key material that follows its files: the rustls configurations are built once, with a
//! certificate resolver and certificate verifiers that read the current material. Before a
//! handshake uses it, the files' modification times and sizes are compared with those of the
//! loaded material (at most once per [`RELOAD_CHECK_INTERVAL`]); a change loads the files
//! again and checks them as at startup. Connections already open keep their session.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha1::Digest;
use tracing::{info, warn};

use super::material::{self, MaterialError};
use super::options::{KeySource, Scope, TlsSettings, TrustSource};
use super::TlsError;

/// How often, at most, the key material's files are checked for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

struct Loaded {
    key: Option<Arc<CertifiedKey>>,
    roots: Option<Arc<RootCertStore>>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

type Stamp = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

pub(super) struct Reloading {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    state: RwLock<Arc<Loaded>>,
    checked: Mutex<(Instant, Stamp)>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("scope", &self.settings.scope).finish_non_exhaustive()
    }
}

fn paths(settings: &TlsSettings) -> Vec<PathBuf> {
    let mut out = Vec::new();
    match &settings.key {
        Some(KeySource::Pkcs12 { path, .. }) => out.push(path.clone()),
        Some(KeySource::Pem { certificate, private_key, .. }) => {
            out.push(certificate.clone());
            out.push(private_key.clone());
        }
        None => {}
    }
    match &settings.trust {
        Some(TrustSource::Pkcs12 { path, .. }) | Some(TrustSource::Pem { path, .. }) => out.push(path.clone()),
        None => {}
    }
    out
}

fn stamp(settings: &TlsSettings) -> Stamp {
    paths(settings)
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, meta)
        })
        .collect()
}

// ring's provider (deprecated only for lacking post-quantum key exchange) builds much faster
// than aws-lc's on a fresh machine, and is the one ureq's rustls feature uses.
#[allow(deprecated)]
fn provider(settings: &TlsSettings) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = &settings.cipher_suites {
        provider.cipher_suites = suites.clone();
    }
    Arc::new(provider)
}

fn load_material(settings: &TlsSettings, provider: &Arc<CryptoProvider>) -> Result<Loaded, MaterialError> {
    let roots = match &settings.trust {
        Some(source) => {
            let (certs, key) = material::load_trust(source)?;
            let file = match source {
                TrustSource::Pkcs12 { path, .. } | TrustSource::Pem { path, .. } => path.display().to_string(),
            };
            Some((Arc::new(material::root_store(certs, key, file)?), key))
        }
        None => None,
    };
    let key = match &settings.key {
        Some(source) => {
            let loaded = material::load_key(source)?;
            // Internal TLS is mutual with one cluster certificate: a process whose own
            // certificate its truststore does not trust could talk to nobody.
            let trust = match settings.scope {
                Scope::Internal => roots.as_ref().map(|(r, k)| (r.as_ref(), *k)),
                Scope::Rest => None,
            };
            Some(material::check_and_certify(loaded, trust, provider, SystemTime::now())?)
        }
        None => None,
    };
    let client_verifier = match &roots {
        Some((roots, _)) if settings.client_auth => {
            Some(WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build().map_err(|e| {
                MaterialError::BadCertificate { key: roots_key(settings), file: String::new(), reason: e.to_string() }
            })?)
        }
        _ => None,
    };
    Ok(Loaded { key, roots: roots.map(|(r, _)| r), client_verifier })
}

fn roots_key(settings: &TlsSettings) -> &'static str {
    match &settings.trust {
        Some(TrustSource::Pkcs12 { path_key, .. }) | Some(TrustSource::Pem { path_key, .. }) => path_key,
        None => "truststore",
    }
}

impl Reloading {
    pub(super) fn load(settings: TlsSettings) -> Result<Arc<Reloading>, TlsError> {
        let provider = provider(&settings);
        let first_stamp = stamp(&settings);
        let loaded = load_material(&settings, &provider)?;
        Ok(Arc::new(Reloading {
            settings,
            provider,
            state: RwLock::new(Arc::new(loaded)),
            checked: Mutex::new((Instant::now(), first_stamp)),
        }))
    }

    fn current(&self) -> Arc<Loaded> {
        self.maybe_reload();
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn maybe_reload(&self) {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.0.elapsed() < RELOAD_CHECK_INTERVAL {
            return;
        }
        checked.0 = Instant::now();
        let now = stamp(&self.settings);
        if now == checked.1 {
            return;
        }
        // Remembered either way: a half-written rotation is tried again when the files
        // change again, not every second.
        checked.1 = now;
        let scope = self.settings.scope.name();
        match load_material(&self.settings, &self.provider) {
            Ok(loaded) => {
                *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                info!(scope, "TLS key material changed on disk; new connections use the new files");
            }
            Err(e) => {
                warn!(scope, error = %e, "TLS key material changed on disk but cannot be used; keeping the previous")
            }
        }
    }

    fn check_fingerprint(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let pins = &self.settings.fingerprints;
        if pins.is_empty() {
            return Ok(());
        }
        let sha1 = sha1::Sha1::digest(end_entity.as_ref()).to_vec();
        let sha256 = sha2::Sha256::digest(end_entity.as_ref()).to_vec();
        if pins.iter().any(|p| *p == sha1 || *p == sha256) {
            return Ok(());
        }
        warn!(
            key = self.settings.fingerprint_key,
            sha1 = %hex::encode(&sha1),
            "refusing a peer certificate whose fingerprint is not pinned"
        );
        Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
    }

    fn versions(&self) -> &[&'static rustls::SupportedProtocolVersion] {
        &self.settings.versions
    }

    /// The server and client configurations over this material.
    pub(super) fn configs(
        self: &Arc<Self>,
    ) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), TlsError> {
        let versions_error =
            |e: rustls::Error| TlsError::Rustls { key: "security.ssl.algorithms", reason: e.to_string() };
        let server_builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(self.versions())
            .map_err(versions_error)?;
        let server_builder = if self.settings.client_auth {
            server_builder.with_client_cert_verifier(Arc::new(ClientVerifier(self.clone())))
        } else {
            server_builder.with_no_client_auth()
        };
        let server = server_builder.with_cert_resolver(Arc::new(ServerCert(self.clone())));
        let client = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(self.versions())
            .map_err(versions_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier(self.clone())))
            .with_client_cert_resolver(Arc::new(ClientCert(self.clone())));
        Ok((Arc::new(server), Arc::new(client)))
    }
}

#[derive(Debug)]
struct ServerCert(Arc<Reloading>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().key.clone()
    }
}

#[derive(Debug)]
struct ClientCert(Arc<Reloading>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().key.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.settings.key.is_some()
    }
}

/// Checks a client's certificate against the current truststore (and pins).
#[derive(Debug)]
struct ClientVerifier(Arc<Reloading>);

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The CA names are optional hints; the truststore can change under us.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let loaded = self.0.current();
        let verifier = loaded
            .client_verifier
            .as_ref()
            .ok_or(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))?;
        let verified = verifier.verify_client_cert(end_entity, intermediates, now)?;
        self.0.check_fingerprint(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks a server's certificate against the current truststore (and pins). Host names are
/// not checked: every process of a cluster presents the same cluster certificate (as in
/// Flink's internal SSL).
#[derive(Debug)]
struct ServerVerifier(Arc<Reloading>);

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let loaded = self.0.current();
        let roots = loaded
            .roots
            .as_ref()
            .ok_or(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))?;
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            intermediates,
            now,
            self.0.provider.signature_verification_algorithms.all,
        )?;
        self.0.check_fingerprint(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.provider.signature_verification_algorithms.supported_schemes()
    }
}
