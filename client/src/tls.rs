//! HTTPS to the REST endpoint: the `security.ssl.rest.*` options of the client's
//! configuration, read with the cluster's own option definitions
//! ([`flint_common::tls::options`]), so both ends agree on keys and defaults.
//!
//! With `security.ssl.rest.enabled: true` the client talks `https://`, trusting the CA
//! certificates of `security.ssl.rest.truststore` (PKCS#12) or
//! `flint.ssl.rest.ca-certificates` (PEM), and presents the certificate of
//! `security.ssl.rest.keystore` or `flint.ssl.rest.certificate` + `flint.ssl.rest.private-key`
//! when one is set (required when `security.ssl.rest.authentication-enabled` is true).
//! Unlike the cluster's internal connections, the client checks that the endpoint's
//! certificate names the host it connects to (`rest.address` or `-m`); `flint cert` puts
//! the host names given to it into the certificate.
//!
//! `security.ssl.algorithms` and `security.ssl.protocol` restrict the cipher suites (and so
//! the versions) offered. `security.ssl.rest.cert.fingerprint` is not checked by the client.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{anyhow, Result};
use flint_common::config::Configuration;
use flint_common::tls::material::{self, MaterialError};
use flint_common::tls::options::{Role, Scope, TlsSettings};
use rustls::pki_types::PrivateKeyDer;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

/// The TLS configuration of `config` (the client's flat configuration, read from
/// `source`), or `None` when `security.ssl.rest.enabled` is not true. Errors name the key.
pub fn from_config<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>, source: &str) -> Result<Option<TlsConfig>> {
    let mut conf = Configuration::new();
    for (key, value) in entries {
        conf.set(key, value);
    }
    let invalid = |e: &dyn std::fmt::Display| anyhow!("Invalid TLS configuration in {source}: {e}");
    let Some(settings) = TlsSettings::from_config_for(&conf, Scope::Rest, Role::RestClient).map_err(|e| invalid(&e))?
    else {
        return Ok(None);
    };
    let roots = match &settings.trust {
        Some(source) => material::load_trust(source).map_err(|e| invalid(&e))?.0,
        // The client role always needs one; TlsSettings says so, naming the key.
        None => return Err(anyhow!("Invalid TLS configuration in {source}: no truststore")),
    };
    let roots: Vec<Certificate<'static>> = roots.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect();
    let client_cert = match &settings.key {
        Some(key_source) => {
            let loaded = material::load_key(key_source).map_err(|e| invalid(&e))?;
            check_validity(&loaded).map_err(|e| invalid(&e))?;
            let chain: Vec<Certificate<'static>> =
                loaded.chain.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect();
            let key = PrivateKey::from_pem(pem_key(&loaded.key).as_bytes())
                .map_err(|e| anyhow!("Invalid TLS configuration in {source}: {}: {e}", loaded.source_key))?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
        None => None,
    };
    let mut builder = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(&roots))
        .client_cert(client_cert);
    if settings.cipher_suites.is_some() || settings.versions.len() < 2 {
        builder = builder.unversioned_rustls_crypto_provider(Arc::new(provider(&settings)));
    }
    Ok(Some(builder.build()))
}

/// The key as PEM: ureq takes keys of a given kind only from PEM text.
fn pem_key(key: &PrivateKeyDer<'_>) -> String {
    use base64::Engine as _;
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(key.secret_der());
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// ring's provider (what ureq uses) with the cipher suites of `security.ssl.algorithms`,
/// keeping only those of the versions `security.ssl.protocol` allows.
// ring's provider is deprecated only for lacking post-quantum key exchange; it is the one
// the cluster uses too.
#[allow(deprecated)]
fn provider(settings: &TlsSettings) -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = &settings.cipher_suites {
        provider.cipher_suites = suites.clone();
    }
    provider.cipher_suites.retain(|suite| settings.versions.iter().any(|v| v.version == suite.version().version));
    provider
}

/// An expired (or not yet valid) client certificate is named here rather than refused by
/// the server without a word.
fn check_validity(loaded: &material::KeyMaterial) -> Result<(), MaterialError> {
    let info = material::certificate_info(&loaded.chain[0]).map_err(|reason| MaterialError::BadCertificate {
        key: loaded.source_key,
        file: loaded.file.clone(),
        reason,
    })?;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    if now > info.not_after {
        return Err(MaterialError::Expired {
            key: loaded.source_key,
            file: loaded.file.clone(),
            subject: info.subject,
            not_after: info.not_after_text,
        });
    }
    if now < info.not_before {
        return Err(MaterialError::NotYetValid {
            key: loaded.source_key,
            file: loaded.file.clone(),
            subject: info.subject,
            not_before: info.not_before_text,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flint_common::tls::certgen::{write_ca, write_host, Ca, Validity};

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("flint-client-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(entries: &[(&str, String)]) -> Result<Option<TlsConfig>> {
        from_config(entries.iter().map(|(k, v)| (*k, v.as_str())), "config.yaml")
    }

    #[test]
    fn off_unless_enabled_and_errors_name_the_key() {
        assert!(read(&[]).unwrap().is_none());
        assert!(read(&[("security.ssl.rest.enabled", "false".into())]).unwrap().is_none());
        let error = read(&[("security.ssl.rest.enabled", "true".into())]).err().unwrap().to_string();
        assert!(error.contains("security.ssl.rest.truststore") && error.contains("config.yaml"), "{error}");
        let error = read(&[("security.ssl.rest.enabled", "maybe".into())]).err().unwrap().to_string();
        assert!(error.contains("security.ssl.rest.enabled"), "{error}");

        let dir = temp_dir("keys");
        let ca = Ca::generate("test", Validity::days(1)).unwrap();
        let (ca_pem, truststore) = write_ca(&dir, &ca, "pw").unwrap();
        let host = write_host(&dir, "c", &ca.issue(&["localhost".into()], Validity::days(1)).unwrap(), "pw").unwrap();
        let pem_only = read(&[
            ("security.ssl.rest.enabled", "true".into()),
            ("flint.ssl.rest.ca-certificates", ca_pem.display().to_string()),
        ])
        .unwrap()
        .unwrap();
        assert!(pem_only.client_cert().is_none());
        let with_cert = read(&[
            ("security.ssl.rest.enabled", "true".into()),
            ("security.ssl.rest.authentication-enabled", "true".into()),
            ("security.ssl.rest.truststore", truststore.display().to_string()),
            ("security.ssl.rest.truststore-password", "pw".into()),
            ("security.ssl.rest.keystore", host.keystore.display().to_string()),
            ("security.ssl.rest.keystore-password", "pw".into()),
            ("security.ssl.protocol", "TLSv1.3".into()),
        ])
        .unwrap()
        .unwrap();
        assert!(with_cert.client_cert().is_some());
        let error = read(&[
            ("security.ssl.rest.enabled", "true".into()),
            ("security.ssl.rest.truststore", truststore.display().to_string()),
            ("security.ssl.rest.truststore-password", "wrong".into()),
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("security.ssl.rest.truststore-password is wrong"), "{error}");
        let error = read(&[
            ("security.ssl.rest.enabled", "true".into()),
            ("security.ssl.rest.authentication-enabled", "true".into()),
            ("flint.ssl.rest.ca-certificates", ca_pem.display().to_string()),
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("security.ssl.rest.keystore") && error.contains("authentication-enabled"), "{error}");

        let expired = ca.issue(&["localhost".into()], Validity::expired()).unwrap();
        let old = write_host(&dir, "old", &expired, "pw").unwrap();
        let error = read(&[
            ("security.ssl.rest.enabled", "true".into()),
            ("flint.ssl.rest.ca-certificates", ca_pem.display().to_string()),
            ("flint.ssl.rest.certificate", old.certificate.display().to_string()),
            ("flint.ssl.rest.private-key", old.private_key.display().to_string()),
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("flint.ssl.rest.certificate") && error.contains("expired"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
