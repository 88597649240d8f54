//! Floods against real processes (bounded in count and time, 127.0.0.1 only): peers that
//! never read, announce frames they never send, trickle bytes, or just hold connections.
//! (That a peer leaving its replies unread is dropped is tested in `common/tests/rpc.rs`,
//! where replies are large enough to fill the socket buffers quickly.)
//! Under each the process's memory stays bounded, the taskmanagers stay registered and a
//! small job still finishes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flint_common::messages::{LogFile, RequestLogFile, RequestTaskManagerInfos};
use flint_common::rpc::frame::{Frame, FrameHeader, FrameKind};
use flint_common::rpc::RpcMessage;
use flint_tests::{rss_kib, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

/// A cluster of one jobmanager and one taskmanager with short I/O timeouts.
fn cluster(name: &str) -> Harness {
    let mut h = Harness::new(name);
    h.set("pekko.ask.timeout", "2 s").set("heartbeat.interval", "500 ms").set("heartbeat.timeout", "5 s");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("the taskmanager", DEADLINE, |o| o["taskmanagers"] == 1);
    h
}

/// The taskmanager's RPC and data ports, from the REST API.
fn taskmanager_ports(h: &Harness) -> (u16, u16) {
    let tms = h.get_ok("/taskmanagers");
    let tm = &tms["taskmanagers"][0];
    let path = tm["path"].as_str().expect("path");
    let rpc = path.rsplit_once(':').unwrap().1.split('/').next().unwrap().parse().unwrap();
    (rpc, tm["dataPort"].as_u64().unwrap() as u16)
}

/// A length-prefixed RPC frame asking `target` with `msg`.
fn ask_frame<M: RpcMessage>(target: &str, msg: &M) -> Vec<u8> {
    let header = FrameHeader {
        kind: FrameKind::Ask,
        correlation_id: 1,
        target: target.into(),
        fencing_token: None,
        type_name: M::TYPE_NAME.into(),
    };
    let frame = Frame::new(header, Bytes::from(rmp_serde::to_vec_named(msg).unwrap())).encode();
    let mut wire = (frame.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&frame);
    wire
}

/// Writes `wire` again and again without reading, for at most `budget`; returns how many
/// were written before the server stopped reading.
fn flood_without_reading(port: u16, wire: &[u8], budget: Duration) -> (TcpStream, usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < budget {
        if stream.write_all(wire).is_err() {
            break;
        }
        sent += 1;
    }
    (stream, sent)
}

/// Whether the server closed `stream` within `deadline`.
fn closed_by_server(mut stream: TcpStream, deadline: Duration) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let until = Instant::now() + deadline;
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A small bounded job finishes (the cluster still works).
fn small_job_finishes(h: &Harness) {
    let job = json!({
        "flint": 1, "name": "small", "parallelism": 2,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": 9999 },
            { "id": "out", "op": "sink.blackhole", "inputs": ["numbers"] }
        ]
    });
    let id = h.submit("", &job);
    h.wait_job_state(&id, "FINISHED", DEADLINE);
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn check_rss(what: &str, before: u64, peak: u64, limit_mib: u64) {
    eprintln!("{what}: RSS {:.1} MiB before, {:.1} MiB at the peak", mib(before), mib(peak));
    assert!(peak.saturating_sub(before) < limit_mib * 1024, "{what}: RSS grew from {before} KiB to {peak} KiB");
}

#[test]
fn asks_whose_replies_are_never_read_do_not_grow_the_jobmanager() {
    let mut h = cluster("flood-tm-infos");
    let jm = h.process(0).pid();
    let before = rss_kib(jm).unwrap();
    let wire = ask_frame("resourcemanager", &RequestTaskManagerInfos {});
    let (stream, sent) = flood_without_reading(h.rpc_port, &wire, Duration::from_secs(6));
    let peak = rss_kib(jm).unwrap();
    eprintln!("RequestTaskManagerInfos asks written before the jobmanager stopped reading: {sent}");
    check_rss("jobmanager under an unread ask flood", before, peak, 64);
    drop(stream);
    assert_eq!(h.get_ok("/overview")["taskmanagers"], 1, "the taskmanager stayed registered");
    small_job_finishes(&h);
}

#[test]
fn log_file_asks_whose_replies_are_never_read_do_not_grow_the_taskmanager() {
    let mut h = cluster("flood-log-file");
    let tm = h.process(1).pid();
    let (rpc_port, _) = taskmanager_ports(&h);
    let before = rss_kib(tm).unwrap();
    let wire = ask_frame("taskmanager", &RequestLogFile { file: LogFile::Log, max_bytes: 4 * 1024 * 1024 });
    let (stream, sent) = flood_without_reading(rpc_port, &wire, Duration::from_secs(6));
    let peak = rss_kib(tm).unwrap();
    eprintln!("RequestLogFile asks written before the taskmanager stopped reading: {sent}");
    check_rss("taskmanager under an unread log-file flood", before, peak, 64);
    drop(stream);
    assert_eq!(h.get_ok("/overview")["taskmanagers"], 1);
    small_job_finishes(&h);
}

#[test]
fn partition_requests_for_unknown_partitions_do_not_grow_the_taskmanager() {
    use flint_taskmanager::network::protocol::{Header, Message};
    use flint_taskmanager::network::PartitionId;
    let mut h = cluster("flood-partition-requests");
    let tm = h.process(1).pid();
    let (_, data_port) = taskmanager_ports(&h);
    let before = rss_kib(tm).unwrap();
    // One connection, requests with fresh receiver ids, answers (not found) never read.
    let partition = PartitionId {
        job_id: flint_common::ids::JobId::generate(),
        result: flint_common::ids::JobVertexId::generate(),
        edge: 0,
        producer_subtask: 0,
        attempt: 0,
    };
    let mut stream = TcpStream::connect(("127.0.0.1", data_port)).unwrap();
    stream.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
    let started = Instant::now();
    let mut total = 0u64;
    'flood: while started.elapsed() < Duration::from_secs(6) {
        let mut wire = Vec::new();
        for _ in 0..1000 {
            let header = Header::PartitionRequest { receiver_id: total, partition, subpartition: 0, credit: 2 };
            let frame = Message::new(header).encode();
            wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            wire.extend_from_slice(&frame);
            total += 1;
        }
        if stream.write_all(&wire).is_err() {
            break 'flood;
        }
    }
    drop(stream);
    let peak = rss_kib(tm).unwrap();
    eprintln!("partition requests written before the taskmanager dropped the connection: {total}");
    check_rss("taskmanager under a partition request flood", before, peak, 64);
    assert_eq!(h.get_ok("/overview")["taskmanagers"], 1);
    small_job_finishes(&h);
}

#[test]
fn announced_but_unsent_frames_cost_nothing() {
    let mut h = cluster("flood-length-prefix");
    let (jm, tm) = (h.process(0).pid(), h.process(1).pid());
    let (tm_rpc, tm_data) = taskmanager_ports(&h);
    let (jm_before, tm_before) = (rss_kib(jm).unwrap(), rss_kib(tm).unwrap());
    let mut held = Vec::new();
    for port in [h.rpc_port, tm_rpc, tm_data] {
        for _ in 0..130 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&(10u32 * 1024 * 1024 - 1).to_be_bytes()).unwrap();
            s.write_all(&[0u8; 16]).unwrap();
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    check_rss("jobmanager with 130 connections announcing 10 MiB frames", jm_before, rss_kib(jm).unwrap(), 20);
    check_rss("taskmanager with 260 connections announcing 10 MiB frames", tm_before, rss_kib(tm).unwrap(), 20);
    // They are dropped once the frame timeout (pekko.ask.timeout, 2 s) passed.
    let started = Instant::now();
    let all_closed = held.into_iter().all(|s| closed_by_server(s, Duration::from_secs(10)));
    eprintln!("incomplete frames dropped after {} ms", started.elapsed().as_millis() + 500);
    assert!(all_closed, "connections with an incomplete frame are dropped");
    assert_eq!(h.get_ok("/overview")["taskmanagers"], 1);
    small_job_finishes(&h);
}

#[test]
fn idle_and_trickling_connections_are_dropped_and_the_cluster_keeps_working() {
    flint_common::process::raise_open_files_limit();
    let mut h = cluster("flood-idle");
    let jm = h.process(0).pid();
    let before = rss_kib(jm).unwrap();
    let mut idle = Vec::new();
    for _ in 0..1100 {
        match TcpStream::connect(("127.0.0.1", h.rpc_port)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {} refused by the kernel: {e}", idle.len()),
        }
    }
    // REST still answers and a new taskmanager registers while they are open.
    assert_eq!(h.get_ok("/overview")["taskmanagers"], 1);
    h.start_taskmanager("taskmanager-2", &[]);
    h.wait_for_overview("the second taskmanager", DEADLINE, |o: &Value| o["taskmanagers"] == 2);
    check_rss("jobmanager with 1,100 idle connections", before, rss_kib(jm).unwrap(), 32);
    // A one-byte-per-200-ms sender: dropped once the frame timeout passed.
    let mut trickle = TcpStream::connect(("127.0.0.1", h.rpc_port)).unwrap();
    trickle.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let started = Instant::now();
    let mut dropped_after = None;
    for byte in (64u32).to_be_bytes().into_iter().chain(std::iter::repeat(0u8)) {
        if trickle.write_all(&[byte]).is_err() {
            dropped_after = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(15) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("trickling sender dropped after {:?}", dropped_after);
    assert!(dropped_after.is_some(), "a trickling sender is dropped");
    // Idle connections that never sent a frame are gone after the handshake timeout.
    let all_closed = idle.into_iter().all(|s| closed_by_server(s, Duration::from_secs(10)));
    assert!(all_closed, "idle connections are dropped");
    small_job_finishes(&h);
}

/// One raw `CancelTask` frame from a stranger cancels a running task: the job must not stay
/// RUNNING with a CANCELED task (checkpoints stopped, records dropped). It fails over like a
/// task failure, records the cause, and runs again with every task RUNNING.
#[test]
fn a_stray_cancel_fails_over_the_job_instead_of_leaving_it_half_running() {
    let h = cluster("stray-cancel");
    let job = json!({
        "flint": 1, "name": "endless", "parallelism": 2,
        "config": { "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": "5",
                    "restart-strategy.fixed-delay.delay": "200 ms" },
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "rate": 100 },
            { "id": "out", "op": "sink.blackhole", "inputs": ["numbers"] }
        ]
    });
    let id = h.submit("", &job);
    h.wait_for("the job to run", DEADLINE, || {
        flint_tests::all_running(&h.get(&format!("/jobs/{id}")).ok()?.body).then_some(())
    });
    // The attempt to cancel, from the taskmanager's log.
    let attempt = h.wait_for("a deployed attempt in the log", DEADLINE, || {
        let log = std::fs::read_to_string(h.log_dir.join("taskmanager.log")).ok()?;
        let line = log.lines().find(|l| l.contains("deploying task"))?;
        let token = line.split_whitespace().find_map(|w| w.strip_prefix("attempt="))?;
        token.trim_matches(|c: char| !c.is_ascii_hexdigit()).parse::<flint_common::ids::ExecutionAttemptId>().ok()
    });
    let (rpc_port, _) = taskmanager_ports(&h);
    let mut stream = TcpStream::connect(("127.0.0.1", rpc_port)).unwrap();
    stream.write_all(&ask_frame("taskmanager", &flint_common::messages::CancelTask { attempt_id: attempt })).unwrap();
    // The job restarts (one restart, one exception naming the cancellation) and runs again.
    let job = h.wait_for("the job to fail over and run again", DEADLINE, || {
        let job = h.get(&format!("/jobs/{id}")).ok()?.body;
        let restarted = h.get(&format!("/jobs/{id}/exceptions")).ok()?.body["exceptionHistory"]["entries"]
            .as_array()
            .is_some_and(|e| !e.is_empty());
        (restarted && flint_tests::all_running(&job)).then_some(job)
    });
    assert_eq!(job["state"], "RUNNING", "{job}");
    drop(stream);
    assert_eq!(h.patch(&format!("/jobs/{id}?mode=cancel")).unwrap().status, 202);
    h.wait_job_state(&id, "CANCELED", DEADLINE);
    small_job_finishes(&h);
}
