//! Hostile and careless input against real processes: every parser of outside bytes is
//! bounded in memory and time, and bad input gets a clear error and changes nothing.

use std::time::{Duration, Instant};

use flint_tests::{rss_kib, Harness};

const DEADLINE: Duration = Duration::from_secs(30);

/// The "billion laughs" YAML document of the finding: nine levels of nine aliases each
/// (306 bytes; expanded, 9^9 = 387,420,489 scalars).
const ALIAS_BOMB: &str = "\
a: &a [x,x,x,x,x,x,x,x,x]\n\
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n\
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n\
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n\
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n\
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n\
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n\
";

#[test]
fn a_yaml_alias_bomb_is_refused_quickly_without_memory_growth() {
    let mut h = Harness::new("alias-bomb");
    let jm = h.start_jobmanager("jobmanager");
    h.wait_for_overview("the jobmanager", DEADLINE, |_| true);
    let pid = h.process(jm).pid();
    let body = ALIAS_BOMB;
    assert_eq!(body.len(), 306);
    let before = rss_kib(pid).expect("jobmanager rss");
    let started = Instant::now();
    let reply = h.post_raw("/jobs", body).expect("an answer");
    let elapsed = started.elapsed();
    let after = rss_kib(pid).expect("the jobmanager survives");
    eprintln!(
        "alias bomb ({} bytes, 9 levels): {} in {:.1} ms, jobmanager RSS {} KiB -> {} KiB",
        body.len(),
        reply.status,
        elapsed.as_secs_f64() * 1000.0,
        before,
        after
    );
    assert_eq!(reply.status, 400, "{}", reply.text);
    let errors = reply.body["errors"].to_string();
    assert!(errors.contains("line 1") && errors.contains("aliases"), "{errors}");
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
    assert!(after.saturating_sub(before) < 20 * 1024, "RSS grew from {before} KiB to {after} KiB");
    // Nothing was stored; the jobmanager still answers.
    assert_eq!(h.get_ok("/jobs/overview")["jobs"].as_array().map(Vec::len), Some(0));
}

/// The worst job documents within the 1 MiB body limit: JSON and YAML nested 200,000 deep,
/// and an expression of a thousand chained additions. Each is a 400 naming the problem, in
/// bounded time, and the jobmanager (its REST thread is shared with every JobMaster) lives.
#[test]
fn deeply_nested_job_documents_and_expressions_are_refused() {
    let mut h = Harness::new("deep-documents");
    let jm = h.start_jobmanager("jobmanager");
    h.wait_for_overview("the jobmanager", DEADLINE, |_| true);
    let pid = h.process(jm).pid();
    let deep_json = format!("{{\"flint\": 1, \"name\": {}1{}}}", "[".repeat(200_000), "]".repeat(200_000));
    let deep_yaml = format!("flint: 1\nname: {}1{}\n", "[".repeat(200_000), "]".repeat(200_000));
    let long_expression = serde_json::json!({
        "flint": 1, "name": "long", "parallelism": 1,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": 9 },
            { "id": "sum", "op": "map", "inputs": ["numbers"], "fields": { "x": "n+".repeat(1000) + "n" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["sum"] }
        ]
    })
    .to_string();
    for (what, body, expect) in [
        ("JSON nested 200,000 deep", deep_json, "recursion limit"),
        ("YAML nested 200,000 deep", deep_yaml, "recursion limit"),
        ("an expression of 1,000 additions", long_expression, "at most 256"),
    ] {
        let started = Instant::now();
        let reply = h.post_raw("/jobs", &body).expect("an answer");
        let elapsed = started.elapsed();
        eprintln!("{what}: {} in {:.1} ms", reply.status, elapsed.as_secs_f64() * 1000.0);
        assert_eq!(reply.status, 400, "{what}: {}", reply.text);
        assert!(reply.body["errors"].to_string().contains(expect), "{what}: {}", reply.text);
        assert!(elapsed < Duration::from_secs(2), "{what}: {elapsed:?}");
        assert!(flint_tests::is_alive(pid), "{what} took the jobmanager down");
    }
    assert_eq!(h.get_ok("/jobs/overview")["jobs"].as_array().map(Vec::len), Some(0));
}

/// Sends raw bytes to the REST port and reads the answer until the server closes or the
/// deadline passes.
fn raw_http(port: u16, request: &[u8], hold_open: bool, deadline: Duration) -> (String, Duration) {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(deadline)).unwrap();
    stream.write_all(request).unwrap();
    if !hold_open {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && String::from_utf8_lossy(&answer).contains("}") {
                    break;
                }
            }
        }
        if started.elapsed() > deadline {
            break;
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[test]
fn rest_errors_are_json_with_flinks_status_codes() {
    let mut h = Harness::new("rest-errors");
    h.set("rest.idleness-timeout", "1 s");
    h.start_jobmanager("jobmanager");
    h.wait_for_overview("the jobmanager", DEADLINE, |_| true);

    // A job document over the job document limit: 413, JSON.
    let big = format!("{{\"flint\": 1, \"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let reply = h.post_raw("/jobs", &big).expect("an answer");
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert!(reply.body["errors"][0].as_str().is_some(), "{}", reply.text);

    // A query parameter of the wrong type: 400 in Flink's words, JSON.
    let reply = h.get("/jobs/00000000000000000000000000000000/exceptions?maxExceptions=many").unwrap();
    assert_eq!(reply.status, 400, "{}", reply.text);
    let error = reply.body["errors"][0].as_str().unwrap_or_default().to_owned();
    assert!(error.starts_with("Bad request, could not parse parameters"), "{error}");

    // An over-long request target: 414, JSON.
    let reply = h.get(&format!("/jobs/{}", "a".repeat(5000))).unwrap();
    assert_eq!(reply.status, 414, "{}", reply.text);
    assert!(reply.body["errors"][0].as_str().is_some(), "{}", reply.text);

    // A body shorter than its Content-Length: 408 after rest.idleness-timeout, JSON.
    let port = h.rest_port;
    let request = b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"flint\"";
    let (answer, took) = raw_http(port, request, true, Duration::from_secs(10));
    eprintln!("short body answered after {} ms", took.as_millis());
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("{\"errors\":["), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A missing log file names no server directory.
    let reply = h.get("/jobmanager/logs/missing.log").unwrap();
    assert_eq!(reply.status, 404, "{}", reply.text);
    let home = h.home.to_string_lossy().into_owned();
    assert!(!reply.text.contains(&home) && !reply.text.contains("/tmp"), "{}", reply.text);

    // The server still answers normally.
    assert_eq!(h.get_ok("/jobs/overview")["jobs"].as_array().map(Vec::len), Some(0));
}

fn log_text(h: &Harness) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(&h.log_dir).unwrap().flatten() {
        text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    text
}

#[test]
fn a_taskmanager_that_cannot_register_exits_after_the_registration_timeout() {
    // No jobmanager at all.
    let mut h = Harness::new("registration-timeout");
    h.set("taskmanager.registration.timeout", "2 s");
    let tm = h.start_taskmanager("taskmanager", &[]);
    let code = h.process(tm).wait_exit(Duration::from_secs(20));
    if code != Some(1) {
        h.dump_logs();
    }
    assert_eq!(code, Some(1), "the taskmanager must exit non-zero");
    assert!(log_text(&h).contains("taskmanager.registration.timeout"), "the log names the option");
}

#[test]
fn taskmanagers_exit_after_the_cluster_was_shut_down() {
    let mut h = Harness::new("registration-timeout-after-stop");
    h.set("taskmanager.registration.timeout", "3 s")
        .set("heartbeat.interval", "500 ms")
        .set("heartbeat.timeout", "2 s");
    let jm = h.start_jobmanager("jobmanager");
    let tm = h.start_taskmanager("taskmanager", &[]);
    h.wait_for_overview("one taskmanager", DEADLINE, |o| o["taskmanagers"] == 1);
    assert_eq!(h.delete("/cluster").expect("an answer").status, 200);
    assert_eq!(h.process(jm).wait_exit(DEADLINE), Some(0));
    let started = Instant::now();
    let code = h.process(tm).wait_exit(Duration::from_secs(30));
    eprintln!("taskmanager exited {:?} after {} ms", code, started.elapsed().as_millis());
    if code != Some(1) {
        h.dump_logs();
    }
    assert_eq!(code, Some(1));
}

#[test]
fn a_finishing_job_is_always_visible() {
    let mut h = Harness::new("always-visible");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("the taskmanager", DEADLINE, |o| o["slots-total"] == 2);
    let job = serde_json::json!({
        "flint": 1, "name": "short", "parallelism": 1,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": 999 },
            { "id": "out", "op": "sink.blackhole", "inputs": ["numbers"] }
        ]
    });
    let mut polls = 0u64;
    for round in 0..40 {
        let id = h.submit("", &job);
        let until = Instant::now() + DEADLINE;
        loop {
            let reply = h.get(&format!("/jobs/{id}")).expect("an answer");
            polls += 1;
            assert_eq!(reply.status, 200, "round {round}: job {id} answered {}", reply.text);
            if reply.body["state"] == "FINISHED" {
                break;
            }
            assert!(Instant::now() < until, "round {round}: job {id} did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
        // And right after, from the archive.
        assert_eq!(h.get(&format!("/jobs/{id}")).unwrap().status, 200);
    }
    eprintln!("40 short jobs polled every 5 ms: {polls} polls, never a 404");
}
