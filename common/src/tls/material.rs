//! Loading and checking key material: PKCS#12 keystores (Flink's keys) and PEM files
//! (Flint's keys). Every error names the configuration key of the file it is about.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::options::{KeySource, TrustSource};

/// Keystores, truststores and PEM files larger than this are refused unread (they hold a
/// handful of certificates, a few KiB).
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Why key material could not be used. A retry does not help until the files or the
/// configuration change.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("{key}: cannot read '{file}': {reason}")]
    Read { key: &'static str, file: String, reason: String },
    #[error(
        "{key}: '{file}' is a Java {kind} keystore; Flint reads PKCS#12 keystores. Convert it with \
         `keytool -importkeystore -srckeystore {file} -srcstoretype {kind} -destkeystore {file}.p12 \
         -deststoretype PKCS12` and point {key} at the .p12 file"
    )]
    JavaKeystore { key: &'static str, file: String, kind: &'static str },
    #[error("{password_key} is wrong: it does not open the keystore of {key} ('{file}')")]
    WrongPassword { key: &'static str, password_key: &'static str, file: String },
    #[error("{key}: '{file}' is not a PKCS#12 keystore: {reason}")]
    NotPkcs12 { key: &'static str, file: String, reason: String },
    #[error("{key}: '{file}' holds no private key with a certificate")]
    NoPrivateKey { key: &'static str, file: String },
    #[error("{key}: '{file}' holds no certificate")]
    NoCertificate { key: &'static str, file: String },
    #[error("{key}: '{file}': {reason}")]
    Pem { key: &'static str, file: String, reason: String },
    #[error("{key}: the private key in '{file}' cannot be used: {reason}")]
    BadKey { key: &'static str, file: String, reason: String },
    #[error("{key}: the certificate in '{file}' ({subject}) expired on {not_after}")]
    Expired { key: &'static str, file: String, subject: String, not_after: String },
    #[error("{key}: the certificate in '{file}' ({subject}) is not valid before {not_before}")]
    NotYetValid { key: &'static str, file: String, subject: String, not_before: String },
    #[error("{key}: the certificate in '{file}' cannot be parsed: {reason}")]
    BadCertificate { key: &'static str, file: String, reason: String },
    #[error(
        "{key}: the certificate in '{file}' ({subject}) is not trusted by {trust_key} (signed by another CA?): {reason}"
    )]
    Untrusted { key: &'static str, file: String, subject: String, trust_key: &'static str, reason: String },
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn read_bounded(path: &Path, key: &'static str) -> Result<Vec<u8>, MaterialError> {
    let read_error = |reason: String| MaterialError::Read { key, file: display(path), reason };
    let meta = std::fs::metadata(path).map_err(|e| read_error(e.to_string()))?;
    if !meta.is_file() {
        return Err(read_error("not a regular file".into()));
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(read_error(format!("{} bytes; at most {MAX_FILE_SIZE} are read", meta.len())));
    }
    std::fs::read(path).map_err(|e| read_error(e.to_string()))
}

fn open_pkcs12(
    path: &Path,
    key: &'static str,
    password: &str,
    password_key: &'static str,
) -> Result<p12_keystore::KeyStore, MaterialError> {
    let data = read_bounded(path, key)?;
    let kind = match data.get(..4) {
        Some([0xFE, 0xED, 0xFE, 0xED]) => Some("JKS"),
        Some([0xCE, 0xCE, 0xCE, 0xCE]) => Some("JCEKS"),
        _ => None,
    };
    if let Some(kind) = kind {
        return Err(MaterialError::JavaKeystore { key, file: display(path), kind });
    }
    // One password protects a PKCS#12 file as keytool writes it (keytool ignores a
    // different -keypass for PKCS#12), so the keystore password opens the key too.
    p12_keystore::KeyStore::from_pkcs12(&data, password).map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) => {
            MaterialError::WrongPassword { key, password_key, file: display(path) }
        }
        other => MaterialError::NotPkcs12 { key, file: display(path), reason: other.to_string() },
    })
}

/// The own certificate chain and private key.
pub struct KeyMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The key whose file this came from (for messages).
    pub source_key: &'static str,
    pub file: String,
}

pub fn load_key(source: &KeySource) -> Result<KeyMaterial, MaterialError> {
    match source {
        KeySource::Pkcs12 { path, path_key, password, password_key, .. } => {
            let store = open_pkcs12(path, path_key, password, password_key)?;
            let (_, chain) =
                store.private_key_chain().ok_or(MaterialError::NoPrivateKey { key: path_key, file: display(path) })?;
            let certs: Vec<CertificateDer<'static>> =
                chain.chain().iter().map(|c| CertificateDer::from(c.as_der().to_vec())).collect();
            if certs.is_empty() {
                return Err(MaterialError::NoCertificate { key: path_key, file: display(path) });
            }
            let key = PrivateKeyDer::try_from(chain.key().to_vec()).map_err(|e| MaterialError::BadKey {
                key: path_key,
                file: display(path),
                reason: e.to_string(),
            })?;
            Ok(KeyMaterial { chain: certs, key, source_key: path_key, file: display(path) })
        }
        KeySource::Pem { certificate, certificate_key, private_key, private_key_key } => {
            let chain = pem_certificates(certificate, certificate_key)?;
            let key_bytes = read_bounded(private_key, private_key_key)?;
            let pem_error =
                |reason: String| MaterialError::Pem { key: private_key_key, file: display(private_key), reason };
            if key_bytes.windows(9).any(|w| w == b"ENCRYPTED") {
                return Err(pem_error(
                    "encrypted private keys are not supported; write it unencrypted (`openssl pkcs8 -topk8 -nocrypt`) \
                     and protect the file with its permissions"
                        .into(),
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(&key_bytes)
                .map_err(|e| pem_error(format!("no PEM private key found ({e})")))?;
            Ok(KeyMaterial { chain, key, source_key: certificate_key, file: display(certificate) })
        }
    }
}

fn pem_certificates(path: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let bytes = read_bounded(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MaterialError::Pem { key, file: display(path), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(MaterialError::NoCertificate { key, file: display(path) });
    }
    Ok(certs)
}

/// The trusted CA certificates, and the key they came from.
pub fn load_trust(source: &TrustSource) -> Result<(Vec<CertificateDer<'static>>, &'static str), MaterialError> {
    match source {
        TrustSource::Pkcs12 { path, path_key, password, password_key } => {
            let store = open_pkcs12(path, path_key, password, password_key)?;
            let mut certs = Vec::new();
            for (_, entry) in store.entries() {
                match entry {
                    p12_keystore::KeyStoreEntry::Certificate(c) => {
                        certs.push(CertificateDer::from(c.as_der().to_vec()))
                    }
                    // A keystore used as truststore (as Flink's docs allow): its chain's CA.
                    p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                        certs.extend(chain.chain().iter().map(|c| CertificateDer::from(c.as_der().to_vec())))
                    }
                    p12_keystore::KeyStoreEntry::Secret(_) => {}
                }
            }
            if certs.is_empty() {
                return Err(MaterialError::NoCertificate { key: path_key, file: display(path) });
            }
            Ok((certs, path_key))
        }
        TrustSource::Pem { path, path_key } => Ok((pem_certificates(path, path_key)?, path_key)),
    }
}

/// A certificate's subject, validity and SHA-1/SHA-256 fingerprints.
pub struct CertificateInfo {
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub not_before_text: String,
    pub not_after_text: String,
}

pub fn certificate_info(cert: &CertificateDer<'_>) -> Result<CertificateInfo, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| e.to_string())?;
    let validity = parsed.validity();
    Ok(CertificateInfo {
        subject: parsed.subject().to_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        not_before_text: validity.not_before.to_string(),
        not_after_text: validity.not_after.to_string(),
    })
}

/// Checks the own chain: parseable, valid now, key matching, and (when `trust` is given)
/// chaining to one of its CAs. Returns the key rustls signs with.
pub fn check_and_certify(
    material: KeyMaterial,
    trust: Option<(&RootCertStore, &'static str)>,
    provider: &Arc<CryptoProvider>,
    now: SystemTime,
) -> Result<Arc<CertifiedKey>, MaterialError> {
    let KeyMaterial { chain, key, source_key, file } = material;
    let leaf = &chain[0];
    let info = certificate_info(leaf).map_err(|reason| MaterialError::BadCertificate {
        key: source_key,
        file: file.clone(),
        reason,
    })?;
    let now_secs = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    if now_secs > info.not_after {
        return Err(MaterialError::Expired {
            key: source_key,
            file,
            subject: info.subject,
            not_after: info.not_after_text,
        });
    }
    if now_secs < info.not_before {
        return Err(MaterialError::NotYetValid {
            key: source_key,
            file,
            subject: info.subject,
            not_before: info.not_before_text,
        });
    }
    if let Some((roots, trust_key)) = trust {
        let parsed = rustls::server::ParsedCertificate::try_from(leaf).map_err(|e| MaterialError::BadCertificate {
            key: source_key,
            file: file.clone(),
            reason: e.to_string(),
        })?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            &chain[1..],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_secs.max(0) as u64)),
            provider.signature_verification_algorithms.all,
        )
        .map_err(|e| MaterialError::Untrusted {
            key: source_key,
            file: file.clone(),
            subject: info.subject.clone(),
            trust_key,
            reason: e.to_string(),
        })?;
    }
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| MaterialError::BadKey {
        key: source_key,
        file,
        reason: e.to_string(),
    })?;
    Ok(Arc::new(certified))
}

/// A root store of `certs`; certificates that are not usable trust anchors are reported.
pub fn root_store(
    certs: Vec<CertificateDer<'static>>,
    key: &'static str,
    file: String,
) -> Result<RootCertStore, MaterialError> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(MaterialError::BadCertificate {
            key,
            file,
            reason: format!("none of its {ignored} certificates can be a trust anchor"),
        });
    }
    Ok(roots)
}
