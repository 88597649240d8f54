//! The REST endpoint and dashboard over HTTPS (issue 16) with real processes: clients
//! without the cluster certificate, with one of another CA, or speaking plain HTTP are
//! refused at the handshake and logged with their address; the `flint` CLI talks HTTPS
//! from its configuration and says what is missing when it cannot; `flint cert` writes
//! certificates a cluster starts with; Chromium renders the dashboard over HTTPS; a wrong
//! keystore password fails the start naming the key.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use flint_common::config::Configuration;
use flint_common::tls::certgen::{write_ca, write_host, Ca, HostFiles, Validity};
use flint_common::tls::options::{Role, Scope, TlsSettings};
use flint_common::tls::stream::BlockingStream;
use flint_common::tls::TlsContext;
use flint_tests::browser::render_with;
use flint_tests::{bin_dir, https_agent, Harness};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

/// Waits for the jobmanager's WARN line refusing the connection from `peer` for `reason`.
fn wait_refusal_logged(h: &Harness, peer: SocketAddr, reason: &str) {
    let peer = format!("peer={peer}");
    h.wait_log(&format!("a refused REST handshake from {peer} ({reason})"), |logs| {
        logs.lines().any(|l| {
            l.contains(" WARN ") && l.contains("refused a REST connection") && l.contains(&peer) && l.contains(reason)
        })
    });
}

/// A REST client's TLS (as the `flint` CLI reads it): trusting `ca_pem`, presenting
/// `client` when given.
fn client_tls(ca_pem: &Path, client: Option<&HostFiles>) -> TlsContext {
    let mut config = Configuration::new();
    config.set("security.ssl.rest.enabled", "true");
    config.set("flint.ssl.rest.ca-certificates", ca_pem.display().to_string());
    if let Some(files) = client {
        config.set("flint.ssl.rest.certificate", files.certificate.display().to_string());
        config.set("flint.ssl.rest.private-key", files.private_key.display().to_string());
    }
    let settings = TlsSettings::from_config_for(&config, Scope::Rest, Role::RestClient).unwrap().unwrap();
    TlsContext::new(settings).unwrap()
}

/// A GET /overview over TLS from a socket whose address is known; returns that address
/// after checking that no HTTP answer came back.
fn tls_attempt(port: u16, tls: &TlsContext) -> SocketAddr {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let local = stream.local_addr().unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // TLS 1.3: the client may finish its handshake first; the refusal then arrives with
    // the first read.
    if let Ok(mut tls_stream) = BlockingStream::connect(Some(tls), stream, "localhost") {
        let _ = tls_stream.write_all(b"GET /overview HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        let _ = tls_stream.read_to_end(&mut answer);
        assert!(!answer.starts_with(b"HTTP/"), "answered: {}", String::from_utf8_lossy(&answer));
    }
    local
}

/// Plain HTTP to the HTTPS port, from a known address.
fn plain_attempt(port: u16) -> SocketAddr {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let local = stream.local_addr().unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.write_all(b"GET /overview HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered: {}", String::from_utf8_lossy(&answer));
    local
}

/// A CA other than the cluster's, and a certificate of it for localhost.
fn stranger(dir: &Path) -> HostFiles {
    std::fs::create_dir_all(dir).unwrap();
    let ca = Ca::generate("someone else's CA", Validity::days(1)).unwrap();
    let issued = ca.issue(&["localhost".into(), "127.0.0.1".into()], Validity::days(1)).unwrap();
    write_host(dir, "stranger", &issued, "stranger-pw").unwrap()
}

/// Runs the real `flint` binary.
fn flint(args: &[&str]) -> Output {
    Command::new(bin_dir().join("flint")).args(args).output().expect("run flint")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A configuration directory for the `flint` CLI holding `lines` (YAML).
fn client_conf(h: &Harness, name: &str, lines: &[String]) -> PathBuf {
    let dir = h.home.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut yaml = format!("rest.address: localhost\nrest.port: {}\n", h.rest_port);
    for line in lines {
        yaml.push_str(line);
        yaml.push('\n');
    }
    std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    dir
}

#[test]
fn https_with_client_certificates_refuses_and_logs_clients_without_the_cluster_certificate() {
    let mut h = Harness::new("tls-rest");
    let certs = h.with_tls();
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    // Registration goes over internal TLS; the harness's own calls present the cluster
    // certificate over HTTPS.
    h.wait_for_overview("one taskmanager, over HTTPS", DEADLINE, |o| o["taskmanagers"] == 1 && o["slots-total"] == 2);
    let port = h.rest_port;
    // The advertised REST URL says https.
    let jars = h.get_ok("/jars");
    assert_eq!(jars["address"], format!("https://localhost:{port}"), "{jars}");
    assert!(h.all_logs().contains(&format!("job manager started rest=https://localhost:{port}")));

    // Clients refused: no certificate, another CA's certificate, plain HTTP.
    let ca_pem = std::fs::read(&certs.ca_pem).unwrap();
    let other = stranger(&h.home.join("stranger"));
    let url = h.url("/overview");
    let no_certificate = https_agent(&ca_pem, None).get(&url).call();
    assert!(no_certificate.is_err(), "a client without a certificate got {no_certificate:?}");
    let (chain, key) = (std::fs::read(&other.certificate).unwrap(), std::fs::read(&other.private_key).unwrap());
    let wrong_ca = https_agent(&ca_pem, Some((&chain, &key))).get(&url).call();
    assert!(wrong_ca.is_err(), "a client with another CA's certificate got {wrong_ca:?}");
    let plain = ureq::get(&format!("http://127.0.0.1:{port}/overview")).call();
    assert!(plain.is_err(), "plain HTTP to the HTTPS port got {plain:?}");

    // Each refusal is a WARN naming the client's address.
    let peer = tls_attempt(port, &client_tls(&certs.ca_pem, None));
    wait_refusal_logged(&h, peer, "no certificates");
    let peer = tls_attempt(port, &client_tls(&certs.ca_pem, Some(&other)));
    wait_refusal_logged(&h, peer, "UnknownIssuer");
    let peer = plain_attempt(port);
    wait_refusal_logged(&h, peer, "corrupt message");

    // Nothing changed for clients with the certificate.
    let overview = h.get_ok("/overview");
    assert_eq!(overview["taskmanagers"], 1, "{overview}");
}

#[test]
fn the_flint_cli_talks_https_from_its_configuration_and_says_what_is_missing() {
    let mut h = Harness::new("tls-rest-cli");
    let certs = h.with_tls();
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("one taskmanager", DEADLINE, |o| o["taskmanagers"] == 1);
    let conf = h.conf_dir.display().to_string();
    let port = h.rest_port;

    // The cluster's configuration (keystore and truststore, Flink's keys) works as is.
    let info = flint(&["--configDir", &conf, "info"]);
    let out = text(&info.stdout);
    assert!(info.status.success(), "{out}{}", text(&info.stderr));
    assert!(out.contains(&format!("Flint cluster at https://localhost:{port}")), "{out}");
    assert!(out.contains("Task managers:  1"), "{out}");
    let job = h.home.join("job.yaml");
    std::fs::write(
        &job,
        "flint: 1\nname: over-https\noperators:\n  - { id: numbers, op: source.sequence, to: 99 }\n  \
         - { id: out, op: sink.blackhole, inputs: [numbers] }\n",
    )
    .unwrap();
    let run = flint(&["--configDir", &conf, "run", job.to_str().unwrap()]);
    assert!(run.status.success(), "{}{}", text(&run.stdout), text(&run.stderr));
    let list = flint(&["--configDir", &conf, "list", "-a"]);
    assert!(list.status.success() && text(&list.stdout).contains("over-https"), "{}", text(&list.stdout));
    // An https:// address (as a standby names its leader); the certificate names 127.0.0.1.
    let explicit = flint(&["--configDir", &conf, "-m", &format!("https://127.0.0.1:{port}"), "list"]);
    assert!(explicit.status.success(), "{}", text(&explicit.stderr));

    // Without TLS in the client's configuration.
    let plain = client_conf(&h, "plain-conf", &[]);
    let failed = flint(&["--configDir", plain.to_str().unwrap(), "list"]);
    let error = text(&failed.stderr);
    assert!(!failed.status.success(), "{}", text(&failed.stdout));
    assert!(
        error.contains(&format!("http://localhost:{port}")) && error.contains("security.ssl.rest.enabled"),
        "{error}"
    );

    // Trusting the cluster but without a client certificate.
    let trust_only = client_conf(
        &h,
        "trust-only-conf",
        &[
            "security.ssl.rest.enabled: true".into(),
            format!("security.ssl.rest.truststore: \"{}\"", certs.truststore.display()),
            format!("security.ssl.rest.truststore-password: \"{}\"", certs.password),
        ],
    );
    let failed = flint(&["--configDir", trust_only.to_str().unwrap(), "list"]);
    let error = text(&failed.stderr);
    assert!(!failed.status.success());
    assert!(error.contains("CertificateRequired") && error.contains("security.ssl.rest.keystore"), "{error}");

    // Trusting another CA only.
    let other = stranger(&h.home.join("stranger"));
    let other_ca = h.home.join("stranger").join("ca.pem");
    let other_authority = Ca::generate("yet another CA", Validity::days(1)).unwrap();
    write_ca(&h.home.join("stranger"), &other_authority, "pw").unwrap();
    let wrong_trust = client_conf(
        &h,
        "wrong-trust-conf",
        &[
            "security.ssl.rest.enabled: true".into(),
            format!("flint.ssl.rest.ca-certificates: \"{}\"", other_ca.display()),
            format!("flint.ssl.rest.certificate: \"{}\"", other.certificate.display()),
            format!("flint.ssl.rest.private-key: \"{}\"", other.private_key.display()),
        ],
    );
    let failed = flint(&["--configDir", wrong_trust.to_str().unwrap(), "list"]);
    let error = text(&failed.stderr);
    assert!(!failed.status.success());
    assert!(error.contains("invalid peer certificate") && error.contains("flint.ssl.rest.ca-certificates"), "{error}");

    // Unusable client configuration: named before anything is sent.
    let wrong_password = client_conf(
        &h,
        "wrong-password-conf",
        &[
            "security.ssl.rest.enabled: true".into(),
            format!("security.ssl.rest.truststore: \"{}\"", certs.truststore.display()),
            "security.ssl.rest.truststore-password: not-it".into(),
        ],
    );
    let failed = flint(&["--configDir", wrong_password.to_str().unwrap(), "list"]);
    let error = text(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{error}");
    assert!(error.contains("security.ssl.rest.truststore-password is wrong"), "{error}");
    let missing = client_conf(&h, "missing-conf", &["security.ssl.rest.enabled: true".into()]);
    let failed = flint(&["--configDir", missing.to_str().unwrap(), "list"]);
    let error = text(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{error}");
    assert!(
        error.contains("security.ssl.rest.truststore") && error.contains("flint.ssl.rest.ca-certificates"),
        "{error}"
    );
}

/// The `key: value` lines of one block of `flint cert`'s output (after `heading`, up to the
/// next blank line).
fn config_block(output: &str, heading: &str) -> Vec<(String, String)> {
    let block = output.split(heading).nth(1).unwrap_or_else(|| panic!("no '{heading}' in:\n{output}"));
    block
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.split_once(": ").unwrap_or_else(|| panic!("not a config line: {l}"));
            (key.to_string(), value.trim_matches('"').to_string())
        })
        .collect()
}

#[test]
fn flint_cert_writes_certificates_a_cluster_starts_with() {
    let mut h = Harness::new("tls-flint-cert");
    let dir = h.home.join("certs");
    let dir_arg = dir.display().to_string();
    let args = ["cert", "--out", &dir_arg, "--host", "localhost", "--host", "127.0.0.1", "--password", "pw-123"];
    let made = flint(&args);
    let out = text(&made.stdout);
    assert!(made.status.success(), "{out}{}", text(&made.stderr));
    for file in ["ca.pem", "ca-key.pem", "truststore.p12", "cluster.pem", "cluster-key.pem", "cluster.p12"] {
        assert!(dir.join(file).is_file(), "{file} missing; flint cert said:\n{out}");
    }
    {
        use std::os::unix::fs::PermissionsExt;
        for private in ["ca-key.pem", "cluster-key.pem", "cluster.p12"] {
            let mode = std::fs::metadata(dir.join(private)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{private}");
        }
    }

    // The keystore variant it prints is loadable as printed.
    let mut flink_keys = Configuration::new();
    for (key, value) in config_block(&out, "# config.yaml with Flink's keys (PKCS#12 keystores):") {
        flink_keys.set(key, value);
    }
    TlsContext::from_config(&flink_keys, Scope::Rest).unwrap().expect("REST TLS on");
    TlsContext::from_config(&flink_keys, Scope::Internal).unwrap().expect("internal TLS on");

    // A cluster started with the PEM variant, as printed.
    for (key, value) in config_block(&out, "# or with Flint's keys (PEM files):") {
        h.set(&key, value);
    }
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    h.use_https(https_agent(&read("ca.pem"), Some((&read("cluster.pem"), &read("cluster-key.pem")))));
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=1".into()]);
    h.wait_for_overview("a taskmanager registered over TLS", DEADLINE, |o| o["taskmanagers"] == 1);

    // Again: the files exist.
    let again = flint(&args);
    let error = text(&again.stderr);
    assert!(!again.status.success());
    assert!(error.contains("Refusing to overwrite") && error.contains("--force"), "{error}");

    // A second certificate (an operator's), signed by the same CA: the cluster accepts it.
    let ca_before = read("ca.pem");
    let operator =
        flint(&["cert", "--out", &dir_arg, "--name", "operator", "--host", "localhost", "--password", "pw-123"]);
    assert!(operator.status.success(), "{}", text(&operator.stderr));
    assert!(text(&operator.stdout).contains("Signed with the CA"), "{}", text(&operator.stdout));
    assert_eq!(read("ca.pem"), ca_before, "the CA was reused");
    h.use_https(https_agent(&read("ca.pem"), Some((&read("operator.pem"), &read("operator-key.pem")))));
    assert_eq!(h.get_ok("/overview")["taskmanagers"], 1);
    // --force replaces the cluster certificate (still of the same CA).
    let forced = flint(&[&args[..], &["--force"]].concat());
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(read("ca.pem"), ca_before);
}

#[test]
fn the_dashboard_renders_over_https_in_chromium() {
    let mut h = Harness::new("tls-dashboard");
    let dir = h.home.join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::generate("dashboard test CA", Validity::days(1)).unwrap();
    let (ca_pem, _) = write_ca(&dir, &ca, "pw").unwrap();
    let files = write_host(
        &dir,
        "cluster",
        &ca.issue(&["localhost".into(), "127.0.0.1".into()], Validity::days(1)).unwrap(),
        "pw",
    )
    .unwrap();
    // HTTPS without client certificates: a browser has none.
    h.set("security.ssl.rest.enabled", "true")
        .set("flint.ssl.rest.certificate", files.certificate.display())
        .set("flint.ssl.rest.private-key", files.private_key.display());
    h.use_https(https_agent(&std::fs::read(&ca_pem).unwrap(), None));
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=3".into()]);
    h.wait_for_overview("the taskmanager", DEADLINE, |o| o["taskmanagers"] == 1 && o["slots-total"] == 3);
    let jid = h.submit(
        "",
        &json!({ "flint": 1, "name": "shown-over-https", "operators": [
        { "id": "numbers", "op": "source.sequence", "to": 9 },
        { "id": "out", "op": "sink.blackhole", "inputs": ["numbers"] } ] }),
    );
    h.wait_job_state(&jid, "FINISHED", DEADLINE);

    // The test CA is not Chromium's: its certificate errors are ignored, the TLS is real.
    let url = format!("https://127.0.0.1:{}/", h.rest_port);
    let profile = h.home.join("chromium-profile");
    let dom = h.wait_for("the dashboard to render over HTTPS", DEADLINE, || {
        let dom = render_with(&url, &profile, &["--ignore-certificate-errors"]);
        (dom.contains("data-loaded=\"true\"") && dom.contains("shown-over-https")).then_some(dom)
    });
    assert!(dom.contains(r#"id="tm-count" class="card-value">1<"#), "task manager count not shown:\n{dom}");
    assert!(dom.contains(r#"id="slots-total" class="card-value">3<"#), "slot total not shown:\n{dom}");
}

#[test]
fn a_wrong_rest_keystore_password_fails_the_start_naming_the_key() {
    let mut h = Harness::new("tls-rest-bad-password");
    h.with_tls();
    h.set("security.ssl.rest.keystore-password", "not-the-password")
        .set("security.ssl.rest.key-password", "not-the-password");
    let jm = h.start_jobmanager("jobmanager");
    let code = h.process(jm).wait_exit(DEADLINE);
    if code.is_none_or(|c| c == 0) {
        h.dump_logs();
        panic!("the jobmanager did not fail: {code:?}");
    }
    let logs = h.all_logs();
    assert!(logs.contains("security.ssl.rest.keystore-password is wrong"), "{logs}");
    let out = std::fs::read_to_string(h.log_dir.join("jobmanager.out")).unwrap();
    assert!(out.contains("flint-jobmanager: TLS: security.ssl.rest.keystore-password is wrong"), "{out}");
}
