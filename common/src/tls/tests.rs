//! Handshakes between real rustls endpoints over in-memory pipes, with certificates from
//! [`super::certgen`] written to files as a cluster would have them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::certgen::{write_ca, write_file, write_host, Ca, Validity};
use super::*;
use crate::config::Configuration;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flint-tls-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CA in `dir` and a host certificate `name` signed by it; PEM options of `scope`.
fn pem_config(dir: &Path, scope: &str, ca: &Ca, name: &str, validity: Validity) -> Configuration {
    let issued = ca.issue(&["localhost".into(), "127.0.0.1".into()], validity).unwrap();
    let files = write_host(dir, name, &issued, "pw").unwrap();
    write_ca(dir, ca, "pw").unwrap();
    let mut config = Configuration::new();
    config.set(format!("security.ssl.{scope}.enabled"), "true");
    config.set(format!("flint.ssl.{scope}.certificate"), files.certificate.display().to_string());
    config.set(format!("flint.ssl.{scope}.private-key"), files.private_key.display().to_string());
    config.set(format!("flint.ssl.{scope}.ca-certificates"), dir.join("ca.pem").display().to_string());
    config
}

fn internal(config: &Configuration) -> TlsContext {
    TlsContext::from_config(config, Scope::Internal).unwrap().unwrap()
}

/// Runs a handshake between `server` and `client` and echoes one message; the error of
/// whichever side failed.
async fn exchange(server: &TlsContext, client: &TlsContext) -> Result<(), String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = server.acceptor();
    let connector = client.connector();
    let server_side = async move {
        let mut s = acceptor.accept(a).await.map_err(|e| format!("server: {e}"))?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.map_err(|e| format!("server read: {e}"))?;
        s.write_all(&buf).await.map_err(|e| format!("server write: {e}"))?;
        s.flush().await.map_err(|e| format!("server flush: {e}"))?;
        Ok::<(), String>(())
    };
    let client_side = async move {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = connector.connect(name, b).await.map_err(|e| format!("client: {e}"))?;
        c.write_all(b"hello").await.map_err(|e| format!("client write: {e}"))?;
        c.flush().await.map_err(|e| format!("client flush: {e}"))?;
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.map_err(|e| format!("client read: {e}"))?;
        assert_eq!(&buf, b"hello");
        Ok::<(), String>(())
    };
    let (s, c) = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(server_side, client_side) })
        .await
        .map_err(|_| "handshake hung".to_string())?;
    s.and(c)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn mutual_tls_works_within_a_cluster_and_refuses_another_ca_and_missing_certificates() {
    let dir = scratch("mutual");
    let ca = Ca::generate("cluster CA", Validity::days(1)).unwrap();
    let a = internal(&pem_config(&dir.join("a").tap_mkdir(), "internal", &ca, "a", Validity::days(1)));
    let b = internal(&pem_config(&dir.join("b").tap_mkdir(), "internal", &ca, "b", Validity::days(1)));
    block_on(exchange(&a, &b)).unwrap();
    block_on(exchange(&b, &a)).unwrap();

    let other_ca = Ca::generate("other CA", Validity::days(1)).unwrap();
    let stranger = internal(&pem_config(&dir.join("c").tap_mkdir(), "internal", &other_ca, "c", Validity::days(1)));
    let error = block_on(exchange(&a, &stranger)).unwrap_err();
    assert!(error.contains("server") || error.contains("client"), "{error}");
    block_on(exchange(&stranger, &a)).unwrap_err();

    // A REST-scope client without a certificate against an internal (mutual) server.
    let mut rest = Configuration::new();
    rest.set("security.ssl.rest.enabled", "true");
    rest.set("flint.ssl.rest.ca-certificates", dir.join("a").join("ca.pem").display().to_string());
    let settings = TlsSettings::from_config_for(&rest, Scope::Rest, options::Role::RestClient).unwrap().unwrap();
    let no_cert = TlsContext::new(settings).unwrap();
    let error = block_on(exchange(&a, &no_cert)).unwrap_err();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

trait Mkdir {
    fn tap_mkdir(self) -> Self;
}

impl Mkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn a_pinned_fingerprint_refuses_other_certificates_of_the_same_ca() {
    let dir = scratch("pin");
    let ca = Ca::generate("cluster CA", Validity::days(1)).unwrap();
    let mut a_conf = pem_config(&dir.join("a").tap_mkdir(), "internal", &ca, "a", Validity::days(1));
    let b_conf = pem_config(&dir.join("b").tap_mkdir(), "internal", &ca, "b", Validity::days(1));
    let b_cert = std::fs::read(dir.join("b").join("b.pem")).unwrap();
    let b_der: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(&b_cert).unwrap();
    let sha1 = <sha1::Sha1 as sha1::Digest>::digest(b_der.as_ref());
    let pin: Vec<String> = sha1.iter().map(|b| format!("{b:02X}")).collect();
    a_conf.set("security.ssl.internal.cert.fingerprint", pin.join(":"));
    let a = internal(&a_conf);
    let b = internal(&b_conf);
    block_on(exchange(&a, &b)).unwrap();
    let c = internal(&pem_config(&dir.join("c").tap_mkdir(), "internal", &ca, "c", Validity::days(1)));
    block_on(exchange(&a, &c)).unwrap_err();
    block_on(exchange(&c, &a)).unwrap_err();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn protocol_versions_and_cipher_suites_are_restricted() {
    let dir = scratch("versions");
    let ca = Ca::generate("cluster CA", Validity::days(1)).unwrap();
    let mut v13 = pem_config(&dir.join("a").tap_mkdir(), "internal", &ca, "a", Validity::days(1));
    v13.set("security.ssl.protocol", "TLSv1.3");
    let mut v12 = pem_config(&dir.join("b").tap_mkdir(), "internal", &ca, "b", Validity::days(1));
    v12.set("security.ssl.protocol", "TLSv1.2");
    block_on(exchange(&internal(&v13), &internal(&v12))).unwrap_err();
    let mut v12_gcm = v12.clone();
    v12_gcm.set("security.ssl.algorithms", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384");
    let mut v12_chacha = v12.clone();
    v12_chacha.set("security.ssl.algorithms", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256");
    block_on(exchange(&internal(&v12_gcm), &internal(&v12))).unwrap();
    block_on(exchange(&internal(&v12_gcm), &internal(&v12_chacha))).unwrap_err();
    let mut bad = v12.clone();
    bad.set("security.ssl.algorithms", "TLS_RSA_WITH_AES_128_CBC_SHA");
    let error = TlsContext::from_config(&bad, Scope::Internal).unwrap_err().to_string();
    assert!(error.contains("security.ssl.algorithms"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unusable_key_material_fails_with_the_key_named() {
    let dir = scratch("startup");
    let ca = Ca::generate("cluster CA", Validity::days(1)).unwrap();
    // Expired.
    let expired = pem_config(&dir.join("expired").tap_mkdir(), "internal", &ca, "x", Validity::expired());
    let error = TlsContext::from_config(&expired, Scope::Internal).unwrap_err().to_string();
    assert!(error.contains("flint.ssl.internal.certificate") && error.contains("expired"), "{error}");
    // Signed by a CA the truststore does not hold.
    let other = Ca::generate("other CA", Validity::days(1)).unwrap();
    let wrong = pem_config(&dir.join("wrong").tap_mkdir(), "internal", &ca, "w", Validity::days(1));
    write_file(&dir.join("wrong").join("ca.pem"), other.cert_pem.as_bytes(), false).unwrap();
    let error = TlsContext::from_config(&wrong, Scope::Internal).unwrap_err().to_string();
    assert!(error.contains("not trusted by flint.ssl.internal.ca-certificates"), "{error}");
    // PKCS#12 with a wrong password.
    let p12_dir = dir.join("p12").tap_mkdir();
    let issued = ca.issue(&["localhost".into()], Validity::days(1)).unwrap();
    let files = write_host(&p12_dir, "host", &issued, "right").unwrap();
    let (_, truststore) = write_ca(&p12_dir, &ca, "right").unwrap();
    let mut p12 = Configuration::new();
    p12.set("security.ssl.internal.enabled", "true");
    p12.set("security.ssl.internal.keystore", files.keystore.display().to_string());
    p12.set("security.ssl.internal.keystore-password", "right");
    p12.set("security.ssl.internal.truststore", truststore.display().to_string());
    p12.set("security.ssl.internal.truststore-password", "right");
    TlsContext::from_config(&p12, Scope::Internal).unwrap().unwrap();
    let mut wrong_password = p12.clone();
    wrong_password.set("security.ssl.internal.keystore-password", "wrong");
    let error = TlsContext::from_config(&wrong_password, Scope::Internal).unwrap_err().to_string();
    assert!(error.contains("security.ssl.internal.keystore-password is wrong"), "{error}");
    let mut wrong_trust_password = p12.clone();
    wrong_trust_password.set("security.ssl.internal.truststore-password", "wrong");
    let error = TlsContext::from_config(&wrong_trust_password, Scope::Internal).unwrap_err().to_string();
    assert!(error.contains("security.ssl.internal.truststore-password is wrong"), "{error}");
    // Not a keystore at all; a missing file.
    let mut garbage = p12.clone();
    write_file(&p12_dir.join("garbage.p12"), b"not a keystore", false).unwrap();
    garbage.set("security.ssl.internal.keystore", p12_dir.join("garbage.p12").display().to_string());
    let error = TlsContext::from_config(&garbage, Scope::Internal).unwrap_err().to_string();
    assert!(error.contains("security.ssl.internal.keystore") && error.contains("not a PKCS#12"), "{error}");
    let mut missing = p12.clone();
    missing.set("security.ssl.internal.truststore", p12_dir.join("nope.p12").display().to_string());
    let error = TlsContext::from_config(&missing, Scope::Internal).unwrap_err().to_string();
    assert!(error.contains("security.ssl.internal.truststore") && error.contains("cannot read"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rotated_files_are_used_by_new_handshakes_and_a_broken_rotation_keeps_the_old_material() {
    let dir = scratch("rotate");
    let ca = Ca::generate("cluster CA", Validity::days(1)).unwrap();
    let server_dir = dir.join("server").tap_mkdir();
    let server = internal(&pem_config(&server_dir, "internal", &ca, "s", Validity::days(1)));
    // A client that knows only the next CA.
    let next_ca = Ca::generate("next CA", Validity::days(1)).unwrap();
    let client = internal(&pem_config(&dir.join("client").tap_mkdir(), "internal", &next_ca, "c", Validity::days(1)));
    block_on(exchange(&server, &client)).unwrap_err();

    // Rotation: trust both CAs, then present a certificate of the next CA.
    std::thread::sleep(reload::RELOAD_CHECK_INTERVAL);
    let bundle = format!("{}{}", ca.cert_pem, next_ca.cert_pem);
    write_file(&server_dir.join("ca.pem"), bundle.as_bytes(), false).unwrap();
    let issued = next_ca.issue(&["localhost".into()], Validity::days(1)).unwrap();
    write_host(&server_dir, "s", &issued, "pw").unwrap();
    block_on(exchange(&server, &client)).unwrap();

    // A half-written key is not taken: the previous material stays in use.
    std::thread::sleep(reload::RELOAD_CHECK_INTERVAL);
    write_file(&server_dir.join("s-key.pem"), b"-----BEGIN PRIVATE KEY-----\ngarbage\n", true).unwrap();
    block_on(exchange(&server, &client)).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_java_jks_keystore_is_refused_with_the_keytool_conversion() {
    let dir = scratch("jks");
    let jks = dir.join("flink.keystore");
    // Java's own keytool, as a Flink user would have made it (Java is installed for ZooKeeper).
    let made = std::process::Command::new("keytool")
        .args(["-genkeypair", "-alias", "flink.internal", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=flink"])
        .args(["-storetype", "JKS", "-storepass", "password", "-keypass", "password", "-keystore"])
        .arg(&jks)
        .output();
    let made = made.expect("keytool (Java is installed with ZooKeeper by scripts/install-test-deps.sh)");
    assert!(made.status.success(), "keytool failed: {}", String::from_utf8_lossy(&made.stderr));
    let mut config = Configuration::new();
    config.set("security.ssl.internal.enabled", "true");
    config.set("security.ssl.internal.keystore", jks.display().to_string());
    config.set("security.ssl.internal.keystore-password", "password");
    config.set("security.ssl.internal.truststore", jks.display().to_string());
    config.set("security.ssl.internal.truststore-password", "password");
    let error = TlsContext::from_config(&config, Scope::Internal).unwrap_err().to_string();
    assert!(
        error.contains("security.ssl.internal.") && error.contains("JKS") && error.contains("keytool -importkeystore"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_keytool_pkcs12_keystore_is_read() {
    let dir = scratch("keytool-p12");
    let store = dir.join("flink.p12");
    let made = std::process::Command::new("keytool")
        .args(["-genkeypair", "-alias", "flink.internal", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=flink"])
        .args(["-ext", "SAN=dns:localhost", "-validity", "2"])
        .args(["-storetype", "PKCS12", "-storepass", "password", "-keypass", "password", "-keystore"])
        .arg(&store)
        .output()
        .expect("keytool (Java is installed with ZooKeeper by scripts/install-test-deps.sh)");
    assert!(made.status.success(), "keytool failed: {}", String::from_utf8_lossy(&made.stderr));
    // Flink's docs use the same self-signed keystore as keystore and truststore.
    let mut config = Configuration::new();
    config.set("security.ssl.internal.enabled", "true");
    config.set("security.ssl.internal.keystore", store.display().to_string());
    config.set("security.ssl.internal.keystore-password", "password");
    config.set("security.ssl.internal.key-password", "password");
    config.set("security.ssl.internal.truststore", store.display().to_string());
    config.set("security.ssl.internal.truststore-password", "password");
    let a = internal(&config);
    let b = internal(&config);
    block_on(exchange(&a, &b)).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
