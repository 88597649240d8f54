//! Internal TLS with real processes (issue 16): a process without the cluster certificate
//! cannot register, open a data connection or fetch a blob, and each attempt is logged and
//! changes nothing; unusable key material fails startup naming the key; rotated files are
//! used by new connections without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use flint_common::blob::{BlobKey, BlobKind, BlobSettings};
use flint_common::config::Configuration;
use flint_common::tls::certgen::{write_ca, write_file, write_host, Ca, Validity};
use flint_common::tls::{Scope, TlsContext};
use flint_tests::{free_port, Harness};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

/// The internal TLS of a process holding a certificate of another CA (and trusting it).
fn stranger(dir: &Path) -> (TlsContext, std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let ca = Ca::generate("someone else's CA", Validity::days(1)).unwrap();
    let issued = ca.issue(&["localhost".into(), "127.0.0.1".into()], Validity::days(1)).unwrap();
    let files = write_host(dir, "stranger", &issued, "stranger-pw").unwrap();
    let (_, truststore) = write_ca(dir, &ca, "stranger-pw").unwrap();
    let mut config = Configuration::new();
    config.set("security.ssl.internal.enabled", "true");
    config.set("security.ssl.internal.keystore", files.keystore.display().to_string());
    config.set("security.ssl.internal.keystore-password", "stranger-pw");
    config.set("security.ssl.internal.truststore", truststore.display().to_string());
    config.set("security.ssl.internal.truststore-password", "stranger-pw");
    (TlsContext::from_config(&config, Scope::Internal).unwrap().unwrap(), files.keystore, truststore)
}

fn bounded_job(out: &Path) -> serde_json::Value {
    json!({
        "flint": 1, "name": "over-tls", "parallelism": 2,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": 99_999 },
            { "id": "keyed", "op": "map", "inputs": ["numbers"], "fields": { "k": "n % 10", "n": "n" } },
            { "id": "sums", "op": "aggregate", "inputs": ["keyed"], "key": ["k"], "aggs": { "c": "count()" } },
            { "id": "out", "op": "sink.file", "inputs": ["sums"], "path": out }
        ]
    })
}

#[test]
fn a_process_without_the_cluster_certificate_is_refused_everywhere_and_changes_nothing() {
    let mut h = Harness::new("tls-refused");
    let certs = h.with_tls();
    let blob_port = free_port();
    h.set("blob.server.port", blob_port);
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("one taskmanager over TLS", DEADLINE, |o| o["taskmanagers"] == 1 && o["slots-total"] == 2);

    // 1. A taskmanager without TLS, and one with another CA's certificate, cannot register.
    h.start_taskmanager("plain-taskmanager", &["security.ssl.internal.enabled=false".into()]);
    let (other, other_keystore, other_truststore) = stranger(&h.home.join("stranger"));
    h.start_taskmanager(
        "stranger-taskmanager",
        &[
            format!("security.ssl.internal.keystore={}", other_keystore.display()),
            format!("security.ssl.internal.truststore={}", other_truststore.display()),
            "security.ssl.internal.keystore-password=stranger-pw".into(),
            "security.ssl.internal.key-password=stranger-pw".into(),
            "security.ssl.internal.truststore-password=stranger-pw".into(),
        ],
    );
    h.wait_log("the jobmanager refusing both taskmanagers' rpc connections", |logs| {
        logs.lines().filter(|l| l.contains("refused a connection: TLS handshake failed") && l.contains("rpc")).count()
            >= 2
    });

    // 2. Data connections: plain bytes, and a TLS client of another CA.
    let tms = h.get_ok("/taskmanagers");
    let data_port = tms["taskmanagers"][0]["dataPort"].as_u64().expect("dataPort") as u16;
    {
        use std::io::Write;
        let mut plain = std::net::TcpStream::connect(("127.0.0.1", data_port)).unwrap();
        let _ = plain.write_all(&[0, 0, 0, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let refused = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", data_port)).await.unwrap();
        let address = format!("127.0.0.1:{data_port}");
        match flint_common::tls::stream::connect(Some(&other), tcp, &address).await {
            // TLS 1.3: the client finishes first; the refusal arrives with the first read.
            Ok((mut read, _write)) => {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1];
                tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await.ok().and_then(|r| r.ok())
                    != Some(1)
            }
            Err(_) => true,
        }
    });
    assert!(refused, "a data connection with another CA's certificate was accepted");
    h.wait_log("the taskmanager refusing both data connections", |logs| {
        logs.lines().filter(|l| l.contains("refused a connection: TLS handshake failed") && l.contains("data")).count()
            >= 2
    });

    // 3. Blobs: neither a plain client nor one of another CA gets an answer.
    let address = format!("127.0.0.1:{blob_port}");
    let key = BlobKey::new(BlobKind::Permanent, [7; 32]);
    let dest = h.home.join("stolen-blob");
    let settings = BlobSettings { retries: 0, socket_timeout: Duration::from_secs(10), ..BlobSettings::default() };
    let plain = flint_common::blob::fetch(&address, None, key, &dest, &settings);
    assert!(plain.is_err(), "a plain blob client got {plain:?}");
    let with_other = BlobSettings { tls: Some(other.clone()), ..settings.clone() };
    let wrong_ca = flint_common::blob::fetch(&address, None, key, &dest, &with_other);
    assert!(wrong_ca.is_err(), "a blob client of another CA got {wrong_ca:?}");
    assert!(!dest.exists());
    h.wait_log("the jobmanager refusing both blob connections", |logs| {
        logs.lines().filter(|l| l.contains("refused a connection: TLS handshake failed") && l.contains("blob")).count()
            >= 2
    });
    // The cluster's own blob client (the cluster certificate) is served: a missing key is
    // answered as missing, not refused.
    let cluster_tls = TlsContext::from_config(&config_of(&h), Scope::Internal).unwrap().unwrap();
    let with_cluster = BlobSettings { tls: Some(cluster_tls), ..settings };
    let missing = flint_common::blob::fetch(&address, None, key, &dest, &with_cluster).unwrap_err();
    assert!(matches!(missing, flint_common::blob::BlobError::NotFound { .. }), "{missing}");

    // Nothing changed: still one taskmanager, and a job runs over TLS end to end.
    let overview = h.get_ok("/overview");
    assert_eq!(overview["taskmanagers"], 1, "{overview}");
    let out = h.home.join("out");
    let id = h.submit("", &bounded_job(&out));
    h.wait_job_state(&id, "FINISHED", DEADLINE);
    assert!(!flint_tests::files_under(&out).is_empty());
    drop(certs);
}

/// The harness's configuration as the processes read it.
fn config_of(h: &Harness) -> Configuration {
    Configuration::load(Some(&h.conf_dir), &[]).unwrap()
}

#[test]
fn unusable_key_material_fails_startup_naming_the_key() {
    let mut h = Harness::new("tls-startup");
    let certs = h.with_tls();
    let bad = h.home.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    // An expired certificate of the cluster's CA.
    let expired = certs.ca.issue(&["localhost".into()], Validity::expired()).unwrap();
    let expired = write_host(&bad, "expired", &expired, &certs.password).unwrap();
    // A certificate of another CA, with the cluster's truststore.
    let other = Ca::generate("other CA", Validity::days(1)).unwrap();
    let foreign = other.issue(&["localhost".into()], Validity::days(1)).unwrap();
    let foreign = write_host(&bad, "foreign", &foreign, &certs.password).unwrap();
    // A Java JKS keystore, as a Flink user has one.
    let jks = bad.join("flink.jks");
    let made = std::process::Command::new("keytool")
        .args(["-genkeypair", "-alias", "flink", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=flink"])
        .args(["-storetype", "JKS", "-storepass", "password", "-keypass", "password", "-keystore"])
        .arg(&jks)
        .output()
        .expect("keytool (Java is installed with ZooKeeper by scripts/install-test-deps.sh)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "wrong-password",
            vec!["security.ssl.internal.keystore-password=not-the-password".into()],
            vec!["security.ssl.internal.keystore-password is wrong"],
        ),
        (
            "expired",
            vec![format!("security.ssl.internal.keystore={}", expired.keystore.display())],
            vec!["security.ssl.internal.keystore", "expired on"],
        ),
        (
            "wrong-ca",
            vec![format!("security.ssl.internal.keystore={}", foreign.keystore.display())],
            vec!["security.ssl.internal.keystore", "not trusted by security.ssl.internal.truststore"],
        ),
        (
            "jks",
            vec![
                format!("security.ssl.internal.keystore={}", jks.display()),
                "security.ssl.internal.keystore-password=password".into(),
            ],
            vec!["security.ssl.internal.keystore", "JKS", "keytool -importkeystore"],
        ),
    ];
    for (name, extra, expected) in cases {
        for binary in ["taskmanager", "jobmanager"] {
            let process = format!("{binary}-{name}");
            let index = if binary == "taskmanager" {
                h.start_taskmanager(&process, &extra)
            } else {
                h.start_jobmanager_with(&process, &extra)
            };
            let code = h.process(index).wait_exit(Duration::from_secs(30));
            let log = std::fs::read_to_string(h.log_dir.join(format!("{process}.out"))).unwrap_or_default()
                + &std::fs::read_to_string(h.log_dir.join(format!("{process}.log"))).unwrap_or_default();
            if code.is_none_or(|c| c == 0) || !expected.iter().all(|e| log.contains(e)) {
                h.dump_logs();
                panic!("{process}: exit {code:?}, expected {expected:?} in its output:\n{log}");
            }
        }
    }
}

#[test]
fn rotated_certificates_are_used_by_new_connections_without_a_restart() {
    let mut h = Harness::new("tls-rotation");
    let dir = h.home.join("pem");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::generate("first CA", Validity::days(1)).unwrap();
    let first = ca.issue(&["localhost".into(), "127.0.0.1".into()], Validity::days(1)).unwrap();
    let files = write_host(&dir, "cluster", &first, "pw").unwrap();
    write_ca(&dir, &ca, "pw").unwrap();
    // Flint's PEM keys this time.
    h.set("security.ssl.internal.enabled", "true")
        .set("flint.ssl.internal.certificate", files.certificate.display())
        .set("flint.ssl.internal.private-key", files.private_key.display())
        .set("flint.ssl.internal.ca-certificates", dir.join("ca.pem").display());
    let jobmanager = h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("one taskmanager", DEADLINE, |o| o["taskmanagers"] == 1);
    let jobmanager_pid = h.process(jobmanager).pid();

    // A client that knows only the next CA cannot talk to the cluster yet.
    let next_ca = Ca::generate("next CA", Validity::days(1)).unwrap();
    let (next_client, _, _) = {
        let client_dir = h.home.join("next-client");
        std::fs::create_dir_all(&client_dir).unwrap();
        let issued = next_ca.issue(&["localhost".into()], Validity::days(1)).unwrap();
        let files = write_host(&client_dir, "client", &issued, "pw").unwrap();
        write_ca(&client_dir, &next_ca, "pw").unwrap();
        let mut config = Configuration::new();
        config.set("security.ssl.internal.enabled", "true");
        config.set("flint.ssl.internal.certificate", files.certificate.display().to_string());
        config.set("flint.ssl.internal.private-key", files.private_key.display().to_string());
        config.set("flint.ssl.internal.ca-certificates", client_dir.join("ca.pem").display().to_string());
        (TlsContext::from_config(&config, Scope::Internal).unwrap().unwrap(), (), ())
    };
    let rpc_address = format!("127.0.0.1:{}", h.rpc_port);
    let handshake = |tls: &TlsContext| -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(&rpc_address).await.unwrap();
            match flint_common::tls::stream::connect(Some(tls), tcp, &rpc_address).await {
                Ok((mut read, _write)) => {
                    // A refused client certificate shows with the first read (TLS 1.3).
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 1];
                    // Still open after 1.5 s: accepted, the server waits for a frame.
                    tokio::time::timeout(Duration::from_millis(1500), read.read(&mut buf)).await.is_err()
                }
                Err(_) => false,
            }
        })
    };
    assert!(!handshake(&next_client), "the cluster accepted a certificate of a CA it does not trust");

    // Rotation: trust both CAs, then present a certificate of the next CA (each file
    // replaced atomically, as a deployment tool does).
    let replace = |path: &Path, bytes: &[u8], private: bool| {
        let tmp = path.with_extension("tmp");
        write_file(&tmp, bytes, private).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    };
    replace(&dir.join("ca.pem"), format!("{}{}", ca.cert_pem, next_ca.cert_pem).as_bytes(), false);
    let next = next_ca.issue(&["localhost".into(), "127.0.0.1".into()], Validity::days(1)).unwrap();
    replace(&files.private_key, next.key_pem.as_bytes(), true);
    replace(&files.certificate, next.chain_pem().as_bytes(), false);
    let start = Instant::now();
    while !handshake(&next_client) {
        if start.elapsed() > DEADLINE {
            h.dump_logs();
            panic!("the rotated certificate is not used by new connections");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("rotated certificate in use after {} ms", start.elapsed().as_millis());
    h.wait_log("the jobmanager reloading its key material", |logs| {
        logs.contains("TLS key material changed on disk; new connections use the new files")
    });

    // Same jobmanager process; a new taskmanager (new connections) joins with the rotated
    // files and a job runs across both.
    assert_eq!(h.process(jobmanager).pid(), jobmanager_pid);
    assert!(h.process(jobmanager).is_running());
    h.start_taskmanager("taskmanager-2", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("two taskmanagers", DEADLINE, |o| o["taskmanagers"] == 2);
    let out = h.home.join("out");
    let mut job = bounded_job(&out);
    job["parallelism"] = json!(4);
    let id = h.submit("", &job);
    h.wait_job_state(&id, "FINISHED", DEADLINE);
}
