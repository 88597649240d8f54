//! Job package figures of issue 12 on a real cluster (1 jobmanager, 2 taskmanagers × 2 slots).
//!
//! `cargo build --release --workspace --bins && target/release/bench_packages`
//!
//! Prints, per run and as medians of `RUNS` runs (default 3):
//! - upload throughput of a 100 MiB package through `POST /jars/upload` (MiB/s);
//! - deployment time of a p=4 job reading a 768 KiB artifact: `/jars/:id/run` → every subtask
//!   past DEPLOYING/INITIALIZING, once with the artifact inline (default
//!   `blob.offload.minsize`) and once offloaded to the BlobServer (`blob.offload.minsize: 0`);
//! - the same for the 100 MiB artifact (always offloaded), with the blob downloads per
//!   taskmanager counted from their logs.

use std::time::{Duration, Instant};

use flint_tests::{zip_of, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);

fn runs() -> usize {
    std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn cluster(name: &str, extra: &[(&str, &str)]) -> Harness {
    let mut h = Harness::new(name);
    h.set("rest.server.max-content-length", 256 << 20).set("heartbeat.interval", "1 s");
    for (k, v) in extra {
        h.set(k, v);
    }
    h.start_jobmanager("jobmanager");
    for i in 1..=2 {
        h.start_taskmanager(&format!("taskmanager-{i}"), &["taskmanager.numberOfTaskSlots=2".into()]);
    }
    h.wait_for_overview("2 task managers", DEADLINE, |o| o["slots-total"] == 4);
    h
}

/// Incompressible text lines of about `bytes` bytes.
fn data(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 1024);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while out.len() < bytes {
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(format!("{x:016x}").as_bytes());
        }
        out.push(b'\n');
    }
    out
}

fn package(bytes: usize) -> Vec<u8> {
    let job = "flint: 1\nname: package-bench\nparallelism: 4\noperators:\n  \
               - { id: lines, op: source.file, path: data/input.txt }\n  \
               - { id: short, op: filter, inputs: [lines], predicate: 'len(line) < 10' }\n  \
               - { id: out, op: sink.blackhole, inputs: [short] }\n";
    zip_of(&[("job.yaml", job.as_bytes()), ("data/input.txt", &data(bytes))])
}

fn upload(h: &Harness, zip: &[u8]) -> (String, f64) {
    let started = Instant::now();
    let up = h.upload("bench.zip", zip).expect("upload");
    let took = started.elapsed().as_secs_f64();
    assert_eq!(up.status, 200, "{}", up.text);
    (up.body["filename"].as_str().unwrap().to_string(), took)
}

/// `/jars/:id/run` → no subtask CREATED, SCHEDULED, DEPLOYING or INITIALIZING; in ms. Waits
/// for the job to finish before returning.
fn deploy(h: &Harness, id: &str) -> f64 {
    let started = Instant::now();
    let run = h.post_json(&format!("/jars/{id}/run"), &json!({})).expect("run");
    assert_eq!(run.status, 200, "{}", run.text);
    let job_id = run.body["jobid"].as_str().unwrap().to_string();
    let pending = |job: &Value| {
        ["CREATED", "SCHEDULED", "DEPLOYING", "INITIALIZING"]
            .iter()
            .map(|s| job["status-counts"][s].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let deployed = loop {
        let job = h.job(&job_id);
        if job["status-counts"].is_object() && pending(&job) == 0 {
            break started.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(started.elapsed() < DEADLINE, "not deployed: {job}");
        std::thread::sleep(Duration::from_millis(2));
    };
    h.wait_job_state(&job_id, "FINISHED", DEADLINE);
    h.wait_for_overview("slots free", DEADLINE, |o| o["slots-available"] == 4);
    deployed
}

fn downloads(h: &Harness) -> Vec<usize> {
    (1..=2)
        .map(|i| {
            std::fs::read_to_string(h.log_dir.join(format!("taskmanager-{i}.log")))
                .unwrap_or_default()
                .matches("blob downloaded")
                .count()
        })
        .collect()
}

fn main() {
    let small = package(768 << 10);
    for (label, extra) in [("inline", vec![]), ("offloaded", vec![("blob.offload.minsize", "0")])] {
        let h = cluster(&format!("bench-pkg-{label}"), &extra);
        let (id, _) = upload(&h, &small);
        // A first run warms the cluster up; it is not counted.
        deploy(&h, &id);
        let times: Vec<f64> = (0..runs()).map(|_| deploy(&h, &id)).collect();
        println!(
            "p=4 job, 768 KiB artifact {label}: deployment {:?} ms, median {:.1} ms; downloads per taskmanager {:?}",
            times.iter().map(|t| (t * 10.0).round() / 10.0).collect::<Vec<_>>(),
            median(times.clone()),
            downloads(&h)
        );
    }
    let big = package(100 << 20);
    let h = cluster("bench-pkg-100mib", &[]);
    let mut rates = Vec::new();
    let mut times = Vec::new();
    for run in 0..runs() {
        let before = downloads(&h);
        let (id, took) = upload(&h, &big);
        rates.push(big.len() as f64 / 1048576.0 / took);
        times.push(deploy(&h, &id));
        let after = downloads(&h);
        println!(
            "run {run}: upload {:.0} MiB/s, p=4 deployment with the 100 MiB artifact {:.0} ms, downloads per taskmanager {:?}",
            rates[run],
            times[run],
            after.iter().zip(&before).map(|(a, b)| a - b).collect::<Vec<_>>()
        );
    }
    println!(
        "median: upload {:.0} MiB/s of a {:.1} MiB package; deployment {:.0} ms with the 100 MiB artifact",
        median(rates),
        big.len() as f64 / 1048576.0,
        median(times)
    );
}
