//! Certificates for a test cluster (`flint cert`): a CA, and per-host certificates signed
//! by it, written as PEM files and as PKCS#12 keystores and a truststore for Flink's keys.
//!
//! Keys are ECDSA P-256. Host certificates are good for both TLS server and client
//! authentication, so one certificate serves a process's listener and its connections.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Why certificates could not be generated or written. Retrying does not help.
#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    #[error("cannot generate the certificate: {0}")]
    Generate(String),
    #[error("cannot write '{file}': {reason}")]
    Write { file: String, reason: String },
    #[error("cannot read the CA from '{file}': {reason}")]
    ReadCa { file: String, reason: String },
}

fn generate_error(e: impl std::fmt::Display) -> CertGenError {
    CertGenError::Generate(e.to_string())
}

/// Validity of a certificate: from `not_before` to `not_after`.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clock skew) for `days` days.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Duration::hours(1), not_after: now + Duration::days(days) }
    }

    /// A certificate that expired a day ago (tests).
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Duration::days(30), not_after: now - Duration::days(1) }
    }
}

/// A certificate authority that signs host certificates.
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate with its private key, and the CA chain above it.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    /// PKCS#8.
    pub key_der: Vec<u8>,
    pub ca_der: Vec<u8>,
    pub ca_pem: String,
}

impl Ca {
    /// A new self-signed CA.
    pub fn generate(common_name: &str, validity: Validity) -> Result<Ca, CertGenError> {
        let key = KeyPair::generate().map_err(generate_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Flint");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key).map_err(generate_error)?;
        let (cert_pem, key_pem, cert_der) = (cert.pem(), key.serialize_pem(), cert.der().to_vec());
        Ok(Ca { cert_pem, key_pem, cert_der, issuer: Issuer::new(params, key) })
    }

    /// A CA written earlier (`ca.pem`, `ca-key.pem`).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, CertGenError> {
        let read_error = |reason: String| CertGenError::ReadCa { file: "ca.pem".into(), reason };
        let key = KeyPair::from_pem(key_pem).map_err(|e| read_error(e.to_string()))?;
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            .map_err(|e| read_error(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| read_error(e.to_string()))?;
        Ok(Ca { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), cert_der: der, issuer })
    }

    /// A certificate for `names` (host names and IP addresses; the first is the common
    /// name), for server and client authentication.
    pub fn issue(&self, names: &[String], validity: Validity) -> Result<Issued, CertGenError> {
        let key = KeyPair::generate().map_err(generate_error)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(generate_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().map(String::as_str).unwrap_or("flint"));
        dn.push(DnType::OrganizationName, "Flint");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            ca_der: self.cert_der.clone(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

impl Issued {
    /// The certificate followed by its CA, as a PEM chain.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.ca_pem)
    }

    /// A PKCS#12 keystore with the key and its chain under `alias`.
    pub fn pkcs12(&self, alias: &str, password: &str) -> Result<Vec<u8>, CertGenError> {
        let chain = vec![
            p12_keystore::Certificate::from_der(&self.cert_der).map_err(generate_error)?,
            p12_keystore::Certificate::from_der(&self.ca_der).map_err(generate_error)?,
        ];
        let local_key_id = <sha1::Sha1 as sha1::Digest>::digest(&self.cert_der).to_vec();
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry(
            alias,
            p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
                &self.key_der,
                local_key_id,
                chain,
            )),
        );
        store.writer(password).write().map_err(generate_error)
    }
}

/// A PKCS#12 truststore holding `ca_der`.
pub fn pkcs12_truststore(ca_der: &[u8], alias: &str, password: &str) -> Result<Vec<u8>, CertGenError> {
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        alias,
        p12_keystore::KeyStoreEntry::Certificate(p12_keystore::Certificate::from_der(ca_der).map_err(generate_error)?),
    );
    store.writer(password).write().map_err(generate_error)
}

/// Writes `bytes` to `path`; `private` files are readable by their owner only.
pub fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), CertGenError> {
    let write_error =
        |e: std::io::Error| CertGenError::Write { file: path.display().to_string(), reason: e.to_string() };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(write_error)?;
    std::io::Write::write_all(&mut file, bytes).map_err(write_error)
}

/// What [`write_host`] wrote for one host.
#[derive(Clone, Debug)]
pub struct HostFiles {
    /// The certificate and CA chain (PEM).
    pub certificate: PathBuf,
    /// The unencrypted private key (PEM, PKCS#8).
    pub private_key: PathBuf,
    /// Key and chain as a PKCS#12 keystore.
    pub keystore: PathBuf,
}

/// Writes `<name>.pem`, `<name>-key.pem` and `<name>.p12` into `dir`.
pub fn write_host(dir: &Path, name: &str, issued: &Issued, password: &str) -> Result<HostFiles, CertGenError> {
    let files = HostFiles {
        certificate: dir.join(format!("{name}.pem")),
        private_key: dir.join(format!("{name}-key.pem")),
        keystore: dir.join(format!("{name}.p12")),
    };
    write_file(&files.certificate, issued.chain_pem().as_bytes(), false)?;
    write_file(&files.private_key, issued.key_pem.as_bytes(), true)?;
    write_file(&files.keystore, &issued.pkcs12(name, password)?, true)?;
    Ok(files)
}

/// Writes `ca.pem`, `ca-key.pem` and `truststore.p12` into `dir`.
pub fn write_ca(dir: &Path, ca: &Ca, password: &str) -> Result<(PathBuf, PathBuf), CertGenError> {
    let (pem, truststore) = (dir.join("ca.pem"), dir.join("truststore.p12"));
    write_file(&pem, ca.cert_pem.as_bytes(), false)?;
    write_file(&dir.join("ca-key.pem"), ca.key_pem.as_bytes(), true)?;
    write_file(&truststore, &pkcs12_truststore(&ca.cert_der, "flint-ca", password)?, false)?;
    Ok((pem, truststore))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keystores_and_truststores_read_back() {
        let ca = Ca::generate("test ca", Validity::days(1)).unwrap();
        let host = ca.issue(&["localhost".into(), "127.0.0.1".into()], Validity::days(1)).unwrap();
        let p12 = host.pkcs12("localhost", "secret").unwrap();
        let store = p12_keystore::KeyStore::from_pkcs12(&p12, "secret").unwrap();
        let (_, chain) = store.private_key_chain().unwrap();
        assert_eq!(chain.chain().len(), 2);
        assert_eq!(chain.key(), host.key_der.as_slice());
        assert!(p12_keystore::KeyStore::from_pkcs12(&p12, "wrong").is_err());
        let trust = pkcs12_truststore(&ca.cert_der, "ca", "pw").unwrap();
        let store = p12_keystore::KeyStore::from_pkcs12(&trust, "pw").unwrap();
        assert_eq!(store.entries_count(), 1);
        let again = Ca::load(&ca.cert_pem, &ca.key_pem).unwrap();
        again.issue(&["other".into()], Validity::days(1)).unwrap();
    }
}
