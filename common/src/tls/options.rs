//! The `security.ssl.*` options (Flink's names) and Flint's PEM options, read into
//! [`TlsSettings`].

use std::path::PathBuf;
use std::time::Duration;

use super::TlsError;
use crate::config::{ConfigOption, Configuration};

/// Which ports a TLS setup is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// RPC, data plane, BlobServer: always mutual.
    Internal,
    /// The REST endpoint and the dashboard.
    Rest,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Internal => "internal",
            Scope::Rest => "rest",
        }
    }
}

pub const SSL_INTERNAL_ENABLED: ConfigOption<bool> = ConfigOption::new(
    "security.ssl.internal.enabled",
    Some("false"),
    &["security.ssl.enabled"],
    "Mutual TLS on RPC, data-plane and BlobServer connections (every process presents the cluster certificate).",
);
pub const SSL_REST_ENABLED: ConfigOption<bool> =
    ConfigOption::new("security.ssl.rest.enabled", Some("false"), &[], "HTTPS on the REST endpoint and dashboard.");
pub const SSL_REST_AUTHENTICATION_ENABLED: ConfigOption<bool> = ConfigOption::new(
    "security.ssl.rest.authentication-enabled",
    Some("false"),
    &[],
    "REST clients must present a certificate trusted by the REST truststore (mutual TLS).",
);
pub const SSL_INTERNAL_KEYSTORE: ConfigOption<String> = ConfigOption::new(
    "security.ssl.internal.keystore",
    None,
    &["security.ssl.keystore"],
    "PKCS#12 keystore with the cluster certificate and its private key.",
);
pub const SSL_INTERNAL_KEYSTORE_PASSWORD: ConfigOption<String> = ConfigOption::new(
    "security.ssl.internal.keystore-password",
    None,
    &["security.ssl.keystore-password"],
    "Password of security.ssl.internal.keystore.",
);
pub const SSL_INTERNAL_KEY_PASSWORD: ConfigOption<String> = ConfigOption::new(
    "security.ssl.internal.key-password",
    None,
    &["security.ssl.key-password"],
    "Accepted for Flink compatibility: a PKCS#12 keystore (as keytool writes it) protects its key with the keystore password.",
);
pub const SSL_INTERNAL_KEYSTORE_TYPE: ConfigOption<String> = ConfigOption::new(
    "security.ssl.internal.keystore-type",
    Some("PKCS12"),
    &[],
    "Type of security.ssl.internal.keystore: only PKCS12 (convert JKS keystores with keytool).",
);
pub const SSL_INTERNAL_TRUSTSTORE: ConfigOption<String> = ConfigOption::new(
    "security.ssl.internal.truststore",
    None,
    &["security.ssl.truststore"],
    "PKCS#12 truststore with the CA certificates peers' certificates must chain to.",
);
pub const SSL_INTERNAL_TRUSTSTORE_PASSWORD: ConfigOption<String> = ConfigOption::new(
    "security.ssl.internal.truststore-password",
    None,
    &["security.ssl.truststore-password"],
    "Password of security.ssl.internal.truststore.",
);
pub const SSL_INTERNAL_TRUSTSTORE_TYPE: ConfigOption<String> = ConfigOption::new(
    "security.ssl.internal.truststore-type",
    Some("PKCS12"),
    &[],
    "Type of security.ssl.internal.truststore: only PKCS12.",
);
pub const SSL_INTERNAL_CERT_FINGERPRINT: ConfigOption<String> = ConfigOption::new(
    "security.ssl.internal.cert.fingerprint",
    None,
    &[],
    "Comma-separated SHA-1 (or SHA-256) fingerprints, hex with optional colons: a peer's certificate must be one of them.",
);
pub const SSL_INTERNAL_HANDSHAKE_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
    "security.ssl.internal.handshake-timeout",
    Some("10 s"),
    &[],
    "How long a TLS handshake of an internal connection may take (a bare number is milliseconds, as in Flink).",
);
pub const SSL_REST_KEYSTORE: ConfigOption<String> = ConfigOption::new(
    "security.ssl.rest.keystore",
    None,
    &["security.ssl.keystore"],
    "PKCS#12 keystore with the REST endpoint's certificate and private key.",
);
pub const SSL_REST_KEYSTORE_PASSWORD: ConfigOption<String> = ConfigOption::new(
    "security.ssl.rest.keystore-password",
    None,
    &["security.ssl.keystore-password"],
    "Password of security.ssl.rest.keystore.",
);
pub const SSL_REST_KEY_PASSWORD: ConfigOption<String> = ConfigOption::new(
    "security.ssl.rest.key-password",
    None,
    &["security.ssl.key-password"],
    "Password of the private key in security.ssl.rest.keystore.",
);
pub const SSL_REST_KEYSTORE_TYPE: ConfigOption<String> = ConfigOption::new(
    "security.ssl.rest.keystore-type",
    Some("PKCS12"),
    &[],
    "Type of security.ssl.rest.keystore: only PKCS12.",
);
pub const SSL_REST_TRUSTSTORE: ConfigOption<String> = ConfigOption::new(
    "security.ssl.rest.truststore",
    None,
    &["security.ssl.truststore"],
    "PKCS#12 truststore: the CAs of REST client certificates (server) or of the REST endpoint (the flint CLI).",
);
pub const SSL_REST_TRUSTSTORE_PASSWORD: ConfigOption<String> = ConfigOption::new(
    "security.ssl.rest.truststore-password",
    None,
    &["security.ssl.truststore-password"],
    "Password of security.ssl.rest.truststore.",
);
pub const SSL_REST_TRUSTSTORE_TYPE: ConfigOption<String> = ConfigOption::new(
    "security.ssl.rest.truststore-type",
    Some("PKCS12"),
    &[],
    "Type of security.ssl.rest.truststore: only PKCS12.",
);
pub const SSL_REST_CERT_FINGERPRINT: ConfigOption<String> = ConfigOption::new(
    "security.ssl.rest.cert.fingerprint",
    None,
    &[],
    "Comma-separated SHA-1 (or SHA-256) fingerprints a REST client certificate must match.",
);
pub const SSL_PROTOCOL: ConfigOption<String> = ConfigOption::new(
    "security.ssl.protocol",
    None,
    &[],
    "TLS versions allowed, comma-separated: TLSv1.2, TLSv1.3 (default both).",
);
pub const SSL_ALGORITHMS: ConfigOption<String> = ConfigOption::new(
    "security.ssl.algorithms",
    None,
    &[],
    "Cipher suites allowed, comma-separated IANA names (default: rustls's safe defaults).",
);
pub const FLINT_SSL_INTERNAL_CERTIFICATE: ConfigOption<String> = ConfigOption::new(
    "flint.ssl.internal.certificate",
    None,
    &[],
    "PEM file with the cluster certificate (and intermediates), instead of security.ssl.internal.keystore.",
);
pub const FLINT_SSL_INTERNAL_PRIVATE_KEY: ConfigOption<String> = ConfigOption::new(
    "flint.ssl.internal.private-key",
    None,
    &[],
    "PEM file with the unencrypted private key of flint.ssl.internal.certificate.",
);
pub const FLINT_SSL_INTERNAL_CA_CERTIFICATES: ConfigOption<String> = ConfigOption::new(
    "flint.ssl.internal.ca-certificates",
    None,
    &[],
    "PEM file with the trusted CA certificates, instead of security.ssl.internal.truststore.",
);
pub const FLINT_SSL_REST_CERTIFICATE: ConfigOption<String> = ConfigOption::new(
    "flint.ssl.rest.certificate",
    None,
    &[],
    "PEM file with the REST endpoint's certificate chain, instead of security.ssl.rest.keystore.",
);
pub const FLINT_SSL_REST_PRIVATE_KEY: ConfigOption<String> = ConfigOption::new(
    "flint.ssl.rest.private-key",
    None,
    &[],
    "PEM file with the unencrypted private key of flint.ssl.rest.certificate.",
);
pub const FLINT_SSL_REST_CA_CERTIFICATES: ConfigOption<String> = ConfigOption::new(
    "flint.ssl.rest.ca-certificates",
    None,
    &[],
    "PEM file with the trusted CA certificates, instead of security.ssl.rest.truststore.",
);

/// Where the own certificate and key come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    Pkcs12 {
        path: PathBuf,
        path_key: &'static str,
        password: String,
        password_key: &'static str,
        key_password: Option<String>,
    },
    Pem {
        certificate: PathBuf,
        certificate_key: &'static str,
        private_key: PathBuf,
        private_key_key: &'static str,
    },
}

/// Where the trusted CA certificates come from.
#[derive(Clone, Debug)]
pub enum TrustSource {
    Pkcs12 { path: PathBuf, path_key: &'static str, password: String, password_key: &'static str },
    Pem { path: PathBuf, path_key: &'static str },
}

/// One scope's TLS settings, as configured (nothing loaded yet).
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub scope: Scope,
    /// The own certificate: required for internal and for the REST server; the `flint` CLI
    /// has one only when the cluster asks clients for certificates.
    pub key: Option<KeySource>,
    pub trust: Option<TrustSource>,
    /// Peer certificates must have one of these SHA-1 (20 bytes) or SHA-256 (32 bytes)
    /// fingerprints; empty means any certificate the truststore trusts.
    pub fingerprints: Vec<Vec<u8>>,
    pub fingerprint_key: &'static str,
    /// Whether peers must present a certificate (always for internal).
    pub client_auth: bool,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// `None`: the provider's defaults.
    pub cipher_suites: Option<Vec<rustls::SupportedCipherSuite>>,
    pub handshake_timeout: Duration,
}

struct Keys {
    keystore: ConfigOption<String>,
    keystore_password: ConfigOption<String>,
    key_password: ConfigOption<String>,
    keystore_type: ConfigOption<String>,
    truststore: ConfigOption<String>,
    truststore_password: ConfigOption<String>,
    truststore_type: ConfigOption<String>,
    fingerprint: ConfigOption<String>,
    pem_certificate: ConfigOption<String>,
    pem_private_key: ConfigOption<String>,
    pem_ca: ConfigOption<String>,
}

fn keys(scope: Scope) -> Keys {
    match scope {
        Scope::Internal => Keys {
            keystore: SSL_INTERNAL_KEYSTORE,
            keystore_password: SSL_INTERNAL_KEYSTORE_PASSWORD,
            key_password: SSL_INTERNAL_KEY_PASSWORD,
            keystore_type: SSL_INTERNAL_KEYSTORE_TYPE,
            truststore: SSL_INTERNAL_TRUSTSTORE,
            truststore_password: SSL_INTERNAL_TRUSTSTORE_PASSWORD,
            truststore_type: SSL_INTERNAL_TRUSTSTORE_TYPE,
            fingerprint: SSL_INTERNAL_CERT_FINGERPRINT,
            pem_certificate: FLINT_SSL_INTERNAL_CERTIFICATE,
            pem_private_key: FLINT_SSL_INTERNAL_PRIVATE_KEY,
            pem_ca: FLINT_SSL_INTERNAL_CA_CERTIFICATES,
        },
        Scope::Rest => Keys {
            keystore: SSL_REST_KEYSTORE,
            keystore_password: SSL_REST_KEYSTORE_PASSWORD,
            key_password: SSL_REST_KEY_PASSWORD,
            keystore_type: SSL_REST_KEYSTORE_TYPE,
            truststore: SSL_REST_TRUSTSTORE,
            truststore_password: SSL_REST_TRUSTSTORE_PASSWORD,
            truststore_type: SSL_REST_TRUSTSTORE_TYPE,
            fingerprint: SSL_REST_CERT_FINGERPRINT,
            pem_certificate: FLINT_SSL_REST_CERTIFICATE,
            pem_private_key: FLINT_SSL_REST_PRIVATE_KEY,
            pem_ca: FLINT_SSL_REST_CA_CERTIFICATES,
        },
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> TlsError {
    TlsError::Option { key: key.to_string(), reason: format!("invalid value '{value}': {}", reason.into()) }
}

fn missing(key: &str, why: &str) -> TlsError {
    TlsError::Option { key: key.to_string(), reason: format!("must be set {why}") }
}

/// Which end of a connection the settings are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A Flint process: serves (and, for internal, also connects).
    Process,
    /// The `flint` CLI talking to the REST endpoint: needs a truststore; a certificate only
    /// when the endpoint asks for one.
    RestClient,
}

impl TlsSettings {
    /// The settings of `scope` for a Flint process, or `None` when that scope's TLS is off.
    pub fn from_config(config: &Configuration, scope: Scope) -> Result<Option<TlsSettings>, TlsError> {
        Self::from_config_for(config, scope, Role::Process)
    }

    pub fn from_config_for(config: &Configuration, scope: Scope, role: Role) -> Result<Option<TlsSettings>, TlsError> {
        let enabled = match scope {
            Scope::Internal => config.get(&SSL_INTERNAL_ENABLED)?,
            Scope::Rest => config.get(&SSL_REST_ENABLED)?,
        };
        if !enabled {
            return Ok(None);
        }
        let client_auth = match scope {
            Scope::Internal => true,
            Scope::Rest => config.get(&SSL_REST_AUTHENTICATION_ENABLED)?,
        };
        let k = keys(scope);
        let enabled_key = match scope {
            Scope::Internal => SSL_INTERNAL_ENABLED.key,
            Scope::Rest => SSL_REST_ENABLED.key,
        };
        for ty in [k.keystore_type, k.truststore_type] {
            let value = config.get(&ty)?;
            match value.to_ascii_uppercase().as_str() {
                "PKCS12" | "P12" => {}
                "JKS" | "JCEKS" => return Err(invalid(
                    ty.key,
                    &value,
                    "Flint reads PKCS#12 keystores only; convert with `keytool -importkeystore -srckeystore <file> \
                         -srcstoretype JKS -destkeystore <file>.p12 -deststoretype PKCS12` and set the type to PKCS12",
                )),
                _ => return Err(invalid(ty.key, &value, "must be PKCS12")),
            }
        }

        let pem_cert = config.get_optional(&k.pem_certificate)?;
        let pem_key = config.get_optional(&k.pem_private_key)?;
        let keystore = config.get_optional(&k.keystore)?;
        let key = match (pem_cert, pem_key, keystore) {
            (Some(_), Some(_), Some(store)) => {
                return Err(invalid(
                    k.keystore.key,
                    &store,
                    format!(
                        "set either {} or {} and {}, not both",
                        k.keystore.key, k.pem_certificate.key, k.pem_private_key.key
                    ),
                ))
            }
            (Some(cert), Some(key), None) => Some(KeySource::Pem {
                certificate: PathBuf::from(cert),
                certificate_key: k.pem_certificate.key,
                private_key: PathBuf::from(key),
                private_key_key: k.pem_private_key.key,
            }),
            (Some(_), None, _) => {
                return Err(missing(k.pem_private_key.key, &format!("with {}", k.pem_certificate.key)))
            }
            (None, Some(_), _) => {
                return Err(missing(k.pem_certificate.key, &format!("with {}", k.pem_private_key.key)))
            }
            (None, None, Some(store)) => {
                let password = config
                    .get_optional(&k.keystore_password)?
                    .ok_or_else(|| missing(k.keystore_password.key, &format!("with {}", k.keystore.key)))?;
                Some(KeySource::Pkcs12 {
                    path: PathBuf::from(store),
                    path_key: k.keystore.key,
                    password,
                    password_key: k.keystore_password.key,
                    key_password: config.get_optional(&k.key_password)?,
                })
            }
            (None, None, None) => {
                if role == Role::Process || (client_auth && scope == Scope::Rest) {
                    if role == Role::Process {
                        return Err(missing(
                            k.keystore.key,
                            &format!(
                                "(or {} and {}) when {enabled_key} is true",
                                k.pem_certificate.key, k.pem_private_key.key
                            ),
                        ));
                    }
                    return Err(missing(
                        k.keystore.key,
                        &format!(
                            "(or {} and {}) when {} is true",
                            k.pem_certificate.key, k.pem_private_key.key, SSL_REST_AUTHENTICATION_ENABLED.key
                        ),
                    ));
                }
                None
            }
        };

        let pem_ca = config.get_optional(&k.pem_ca)?;
        let truststore = config.get_optional(&k.truststore)?;
        let trust = match (pem_ca, truststore) {
            (Some(_), Some(store)) => {
                return Err(invalid(
                    k.truststore.key,
                    &store,
                    format!("set either {} or {}, not both", k.truststore.key, k.pem_ca.key),
                ))
            }
            (Some(ca), None) => Some(TrustSource::Pem { path: PathBuf::from(ca), path_key: k.pem_ca.key }),
            (None, Some(store)) => {
                let password = config
                    .get_optional(&k.truststore_password)?
                    .ok_or_else(|| missing(k.truststore_password.key, &format!("with {}", k.truststore.key)))?;
                Some(TrustSource::Pkcs12 {
                    path: PathBuf::from(store),
                    path_key: k.truststore.key,
                    password,
                    password_key: k.truststore_password.key,
                })
            }
            (None, None) => {
                // Internal TLS is mutual; a REST server that asks clients for certificates
                // must know whom to trust; the CLI must know whom to trust.
                if scope == Scope::Internal || client_auth || role == Role::RestClient {
                    return Err(missing(
                        k.truststore.key,
                        &format!("(or {}) when {enabled_key} is true", k.pem_ca.key),
                    ));
                }
                None
            }
        };

        let fingerprints = match config.get_optional(&k.fingerprint)? {
            Some(text) => parse_fingerprints(&text).map_err(|reason| invalid(k.fingerprint.key, &text, reason))?,
            None => Vec::new(),
        };
        let versions = match config.get_optional(&SSL_PROTOCOL)? {
            Some(text) => parse_protocols(&text).map_err(|reason| invalid(SSL_PROTOCOL.key, &text, reason))?,
            None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let cipher_suites = match config.get_optional(&SSL_ALGORITHMS)? {
            Some(text) => Some(parse_algorithms(&text).map_err(|reason| invalid(SSL_ALGORITHMS.key, &text, reason))?),
            None => None,
        };
        let handshake_timeout = config.get(&SSL_INTERNAL_HANDSHAKE_TIMEOUT)?;
        Ok(Some(TlsSettings {
            scope,
            key,
            trust,
            fingerprints,
            fingerprint_key: k.fingerprint.key,
            client_auth,
            versions,
            cipher_suites,
            handshake_timeout,
        }))
    }
}

/// `AA:BB:..., cc dd ...`: comma-separated fingerprints, hex with optional `:` or spaces.
pub fn parse_fingerprints(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let hex_digits: String = part.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
        let bytes = hex::decode(&hex_digits).map_err(|_| format!("'{part}' is not a hex fingerprint"))?;
        if bytes.len() != 20 && bytes.len() != 32 {
            return Err(format!(
                "'{part}' has {} bytes; a SHA-1 fingerprint has 20, a SHA-256 fingerprint 32",
                bytes.len()
            ));
        }
        out.push(bytes);
    }
    if out.is_empty() {
        return Err("no fingerprint given".into());
    }
    Ok(out)
}

fn parse_protocols(text: &str) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let mut out: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let version = match part.to_ascii_uppercase().as_str() {
            "TLSV1.3" => &rustls::version::TLS13,
            "TLSV1.2" => &rustls::version::TLS12,
            "TLSV1" | "TLSV1.1" | "SSLV3" => {
                return Err(format!("{part} is not supported (insecure); use TLSv1.2 or TLSv1.3"));
            }
            _ => return Err(format!("unknown protocol '{part}'; use TLSv1.2 or TLSv1.3")),
        };
        if !out.iter().any(|v| v.version == version.version) {
            out.push(version);
        }
    }
    if out.is_empty() {
        return Err("no protocol given".into());
    }
    Ok(out)
}

/// The IANA name of a rustls cipher suite (`TLS_AES_128_GCM_SHA256`,
/// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`).
pub fn iana_name(suite: &rustls::SupportedCipherSuite) -> String {
    let name = format!("{:?}", suite.suite());
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

fn parse_algorithms(text: &str) -> Result<Vec<rustls::SupportedCipherSuite>, String> {
    let all = rustls::crypto::ring::ALL_CIPHER_SUITES;
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let wanted = part.to_ascii_uppercase();
        let found = all.iter().find(|s| iana_name(s) == wanted || format!("{:?}", s.suite()) == wanted);
        match found {
            Some(suite) => out.push(*suite),
            None => {
                let names: Vec<String> = all.iter().map(iana_name).collect();
                return Err(format!(
                    "cipher suite '{part}' is not supported (Flint's TLS offers only forward-secret AEAD suites): \
                     use some of {}",
                    names.join(", ")
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("no cipher suite given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_accept_colons_and_lists_and_refuse_wrong_lengths() {
        let sha1 = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD";
        let fps = parse_fingerprints(&format!("{sha1}, {}", "ab".repeat(32))).unwrap();
        assert_eq!(fps.len(), 2);
        assert_eq!(fps[0].len(), 20);
        assert_eq!(fps[1].len(), 32);
        assert!(parse_fingerprints("AA:BB").unwrap_err().contains("2 bytes"));
        assert!(parse_fingerprints("zz").unwrap_err().contains("not a hex"));
    }

    #[test]
    fn protocols_and_algorithms_map_to_rustls_or_name_what_is_wrong() {
        assert_eq!(parse_protocols("TLSv1.3").unwrap().len(), 1);
        assert_eq!(parse_protocols("TLSv1.2, TLSv1.3").unwrap().len(), 2);
        assert!(parse_protocols("TLSv1.1").unwrap_err().contains("insecure"));
        let suites = parse_algorithms("TLS_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").unwrap();
        assert_eq!(suites.len(), 2);
        let error = parse_algorithms("TLS_RSA_WITH_AES_128_CBC_SHA").unwrap_err();
        assert!(error.contains("TLS_RSA_WITH_AES_128_CBC_SHA") && error.contains("TLS_AES_128_GCM_SHA256"), "{error}");
    }

    #[test]
    fn enabled_scopes_need_their_key_material_and_name_the_missing_key() {
        let mut config = Configuration::new();
        assert!(TlsSettings::from_config(&config, Scope::Internal).unwrap().is_none());
        config.set("security.ssl.internal.enabled", "true");
        let error = TlsSettings::from_config(&config, Scope::Internal).unwrap_err().to_string();
        assert!(error.contains("security.ssl.internal.keystore"), "{error}");
        config.set("security.ssl.internal.keystore", "/k.p12");
        let error = TlsSettings::from_config(&config, Scope::Internal).unwrap_err().to_string();
        assert!(error.contains("security.ssl.internal.keystore-password"), "{error}");
        config.set("security.ssl.internal.keystore-password", "pw");
        let error = TlsSettings::from_config(&config, Scope::Internal).unwrap_err().to_string();
        assert!(error.contains("security.ssl.internal.truststore"), "{error}");
        config.set("security.ssl.internal.truststore", "/t.p12");
        config.set("security.ssl.internal.truststore-password", "pw");
        let settings = TlsSettings::from_config(&config, Scope::Internal).unwrap().unwrap();
        assert!(settings.client_auth);
        config.set("security.ssl.internal.keystore-type", "JKS");
        let error = TlsSettings::from_config(&config, Scope::Internal).unwrap_err().to_string();
        assert!(error.contains("keytool -importkeystore"), "{error}");

        // REST without client authentication needs no truststore on the server.
        let mut rest = Configuration::new();
        rest.set("security.ssl.rest.enabled", "true");
        rest.set("flint.ssl.rest.certificate", "/c.pem");
        rest.set("flint.ssl.rest.private-key", "/k.pem");
        let settings = TlsSettings::from_config(&rest, Scope::Rest).unwrap().unwrap();
        assert!(!settings.client_auth && settings.trust.is_none());
        rest.set("security.ssl.rest.authentication-enabled", "true");
        let error = TlsSettings::from_config(&rest, Scope::Rest).unwrap_err().to_string();
        assert!(error.contains("security.ssl.rest.truststore"), "{error}");
    }
}
