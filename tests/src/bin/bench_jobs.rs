//! Throughput and latency benchmarks of BENCHMARKS.md on a real cluster.
//!
//! `cargo build --release --workspace --bins && target/release/bench_jobs [B1 B2 B3 B4 B1W B2W LATENCY CONTROL]`
//!
//! Each throughput job runs on a fresh cluster of 1 jobmanager + 1 taskmanager with 2
//! slots at parallelism 2, `RUNS` times (default 3), and prints per run and as medians:
//! records/s from job RUNNING to FINISHED, taskmanager CPU seconds per million records,
//! and the taskmanager's peak RSS. Every run's record count at the sinks is checked
//! against the expected total. B1W and B2W are B1 and B2 with their map and keyed count as
//! WebAssembly operators (`tests/wasm/b1_map.wat`, `tests/wasm/count.wat`), submitted as
//! job packages; run them next to B1 and B2 to compare. B4 needs the word file of `shared/bench/gen_words.py`
//! (`FLINT_WORDS_FILE`, generated into the temp directory if absent).
//! LATENCY measures POST → all subtasks RUNNING of a parallelism-4 job, inside the
//! jobmanager (from its timestamps) and end to end through `flint run -d`. CONTROL measures
//! `GET /jobs/overview` while checkpoint fsyncs of the jobmanager take 200 ms (needs strace).
//! B2TLS runs B2 on two clusters of 2 taskmanagers × 1 slot (so the keyed shuffle crosses
//! the network), one plain and one with internal TLS (issue 16), runs interleaved, and
//! prints both medians and their ratio.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use flint_tests::{bin_dir, repo_root, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(900);

fn proc_field(pid: i32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Bench {
    name: &'static str,
    job: Value,
    expected_sink_records: u64,
    /// What "records" means for records/s (B4 counts lines read too).
    records: u64,
    /// Files of the job package besides the job (empty: the job is posted as JSON).
    package: Vec<(&'static str, Vec<u8>)>,
}

/// B2 over `records` records, with exactly-once checkpoints every second into
/// `checkpoints` when given.
fn keyed_count(name: &'static str, records: u64, checkpoints: Option<PathBuf>) -> Bench {
    let mut job = json!({ "flint": 1, "name": name, "parallelism": 2, "operators": [
        { "id": "seq", "op": "source.sequence", "from": 0, "to": records - 1 },
        { "id": "keyed", "op": "map", "inputs": ["seq"],
          "fields": { "key": "\"k\" + str::from(n % 100000)", "n": "n" } },
        { "id": "count", "op": "aggregate", "inputs": ["keyed"], "key": ["key"],
          "aggs": { "count": "count()" } },
        { "id": "discard", "op": "sink.blackhole", "inputs": ["count"] } ] });
    if let Some(dir) = checkpoints {
        job["config"] = json!({ "execution.checkpointing.interval": "1 s", "state.checkpoints.dir": dir });
    }
    Bench { name, job, expected_sink_records: records, records, package: Vec::new() }
}

fn guest(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("tests/wasm").join(name)).expect("the WebAssembly guests of tests/wasm")
}

fn benches(words: &Option<PathBuf>) -> Vec<Bench> {
    let checkpoints = std::env::temp_dir().join(format!("flint-bench-checkpoints-{}", std::process::id()));
    let mut list = vec![
        Bench {
            name: "B1",
            job: json!({ "flint": 1, "name": "B1 passthrough", "parallelism": 2, "operators": [
                { "id": "seq", "op": "source.sequence", "from": 0, "to": 49_999_999 },
                { "id": "pad", "op": "map", "inputs": ["seq"],
                  "fields": { "n": "n", "s": "str::substring(str::from(n + 10000000000000000), 1)" } },
                { "id": "double", "op": "map", "inputs": ["pad"], "fields": { "n": "n * 2", "s": "s" } },
                { "id": "filter", "op": "filter", "inputs": ["double"], "predicate": "n % 3 != 0" },
                { "id": "discard", "op": "sink.blackhole", "inputs": ["filter"] } ] }),
            expected_sink_records: 33_333_333,
            records: 50_000_000,
            package: Vec::new(),
        },
        Bench {
            name: "B1W",
            job: json!({ "flint": 1, "name": "B1 passthrough (map.wasm)", "parallelism": 2, "operators": [
                { "id": "seq", "op": "source.sequence", "from": 0, "to": 49_999_999 },
                { "id": "map", "op": "map.wasm", "inputs": ["seq"], "module": "b1_map.wat",
                  "schema": { "n": "integer", "s": "string" } },
                { "id": "filter", "op": "filter", "inputs": ["map"], "predicate": "n % 3 != 0" },
                { "id": "discard", "op": "sink.blackhole", "inputs": ["filter"] } ] }),
            expected_sink_records: 33_333_333,
            records: 50_000_000,
            package: vec![("b1_map.wat", guest("b1_map.wat"))],
        },
        Bench {
            name: "B2W",
            // (serde_json writes keys sorted: the output fields are named in their order.)
            job: json!({ "flint": 1, "name": "B2 keyed-count (process.wasm)", "parallelism": 2, "operators": [
                { "id": "seq", "op": "source.sequence", "from": 0, "to": 19_999_999 },
                { "id": "keyed", "op": "map", "inputs": ["seq"],
                  "fields": { "key": "\"k\" + str::from(n % 100000)", "n": "n" } },
                { "id": "count", "op": "process.wasm", "inputs": ["keyed"], "key": ["key"], "module": "count.wat",
                  "schema": { "key": "string", "running": "integer" } },
                { "id": "discard", "op": "sink.blackhole", "inputs": ["count"] } ] }),
            expected_sink_records: 20_000_000,
            records: 20_000_000,
            package: vec![("count.wat", guest("count.wat"))],
        },
        Bench {
            name: "B2",
            job: json!({ "flint": 1, "name": "B2 keyed-count", "parallelism": 2, "operators": [
                { "id": "seq", "op": "source.sequence", "from": 0, "to": 19_999_999 },
                { "id": "keyed", "op": "map", "inputs": ["seq"],
                  "fields": { "key": "\"k\" + str::from(n % 100000)", "n": "n" } },
                { "id": "count", "op": "aggregate", "inputs": ["keyed"], "key": ["key"],
                  "aggs": { "count": "count()" } },
                { "id": "discard", "op": "sink.blackhole", "inputs": ["count"] } ] }),
            expected_sink_records: 20_000_000,
            records: 20_000_000,
            package: Vec::new(),
        },
        // B2 long enough for several checkpoints, without and with them (B2CP: interval 1 s).
        keyed_count("B2L", 100_000_000, None),
        keyed_count("B2CP", 100_000_000, Some(checkpoints)),
        Bench {
            name: "B3",
            job: json!({ "flint": 1, "name": "B3 tumbling-window", "parallelism": 2, "operators": [
                { "id": "seq", "op": "source.sequence", "from": 0, "to": 19_999_999 },
                { "id": "events", "op": "map", "inputs": ["seq"], "fields": { "key": "n % 1000", "ts": "n" } },
                { "id": "window", "op": "window", "inputs": ["events"], "key": ["key"], "size": "1 s",
                  "time": "event", "timestamp_field": "ts", "aggs": { "count": "count()" } },
                { "id": "discard", "op": "sink.blackhole", "inputs": ["window"] } ] }),
            expected_sink_records: 20_000_000,
            records: 20_000_000,
            package: Vec::new(),
        },
    ];
    if let Some(words) = words {
        list.push(Bench {
            name: "B4",
            job: json!({ "flint": 1, "name": "B4 wordcount", "parallelism": 2, "operators": [
                { "id": "lines", "op": "source.file", "path": words },
                { "id": "words", "op": "flat_map.split", "inputs": ["lines"], "field": "line", "separator": " ", "as": "word" },
                { "id": "count", "op": "aggregate", "inputs": ["words"], "key": ["word"], "aggs": { "count": "count()" } },
                { "id": "discard", "op": "sink.blackhole", "inputs": ["count"] } ] }),
            expected_sink_records: 27_000_000,
            records: 27_000_000,
            package: Vec::new(),
        });
    }
    list
}

fn start_cluster(name: &str, slots: u32) -> (Harness, i32) {
    let mut h = Harness::new(name);
    h.start_jobmanager("jobmanager");
    let tm = h.start_taskmanager("taskmanager", &[format!("taskmanager.numberOfTaskSlots={slots}")]);
    h.wait_for_overview("the task manager", Duration::from_secs(30), |o| o["slots-total"] == slots);
    let pid = h.process(tm).pid();
    (h, pid)
}

/// `taskmanagers` taskmanagers of `slots` slots; with `tls`, internal TLS and REST HTTPS with
/// mutual authentication. Returns the taskmanagers' pids.
fn start_cluster_with(name: &str, taskmanagers: usize, slots: u32, tls: bool) -> (Harness, Vec<i32>) {
    let mut h = Harness::new(name);
    if tls {
        h.with_tls();
    }
    h.start_jobmanager("jobmanager");
    let pids = (1..=taskmanagers)
        .map(|i| {
            let tm =
                h.start_taskmanager(&format!("taskmanager-{i}"), &[format!("taskmanager.numberOfTaskSlots={slots}")]);
            h.process(tm).pid()
        })
        .collect();
    let total = slots as usize * taskmanagers;
    h.wait_for_overview("the task managers", Duration::from_secs(30), |o| o["slots-total"] == total);
    (h, pids)
}

/// B2 across two taskmanagers, plain TCP against TLS, interleaved.
fn shuffle_over_tls(runs: usize) {
    let bench = benches(&None).into_iter().find(|b| b.name == "B2").expect("B2");
    let clusters = [
        ("plain", start_cluster_with("bench-b2-plain", 2, 1, false)),
        ("tls", start_cluster_with("bench-b2-tls", 2, 1, true)),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
    for run in 1..=runs {
        for (i, (label, (h, pids))) in clusters.iter().enumerate() {
            let cpu_before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
            let (job_id, done) = run_job(h, &bench.job, &bench.package);
            let cpu = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu_before;
            let seconds = (done["timestamps"]["FINISHED"].as_f64().unwrap()
                - done["timestamps"]["RUNNING"].as_f64().unwrap())
                / 1000.0;
            let sink = sink_records(h, &job_id);
            assert_eq!(sink, bench.expected_sink_records, "B2 over {label} produced a wrong result");
            let rate = bench.records as f64 / seconds;
            let cpu_per_m = cpu / (bench.records as f64 / 1e6);
            println!("B2 2 TMs {label} run {run}: {seconds:.2} s, {:.2} M records/s, taskmanagers {cpu_per_m:.3} CPU-s per 1M records", rate / 1e6);
            rates[i].push(rate);
            cpus[i].push(cpu_per_m);
        }
    }
    let (plain, tls) = (median(rates[0].clone()), median(rates[1].clone()));
    println!(
        "B2 2 TMs median: plain {:.2} M records/s ({:.3} CPU-s/1M), TLS {:.2} M records/s ({:.3} CPU-s/1M); TLS/plain {:.1} %",
        plain / 1e6,
        median(cpus[0].clone()),
        tls / 1e6,
        median(cpus[1].clone()),
        100.0 * tls / plain
    );
}

/// The `sink-records` accumulator of a finished job.
fn sink_records(h: &Harness, job_id: &str) -> u64 {
    let acc = h.get_ok(&format!("/jobs/{job_id}/accumulators"));
    acc["user-task-accumulators"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "sink-records"))
        .and_then(|a| a["value"].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sink-records accumulator: {acc}"))
}

fn run_job(h: &Harness, job: &Value, package: &[(&str, Vec<u8>)]) -> (String, Value) {
    let reply = if package.is_empty() {
        h.post_json("/jobs", job).expect("POST /jobs")
    } else {
        let text = job.to_string();
        let mut entries: Vec<(&str, &[u8])> = vec![("job.json", text.as_bytes())];
        entries.extend(package.iter().map(|(n, b)| (*n, b.as_slice())));
        let zip = flint_tests::zip_of(&entries);
        h.post_multipart("/jobs", &[("request", "request.json", b"{}"), ("package", "job.zip", &zip)])
            .expect("POST /jobs")
    };
    assert_eq!(reply.status, 202, "{}", reply.text);
    let job_id = reply.body["jobUrl"].as_str().unwrap().trim_start_matches("/jobs/").to_string();
    let done = h.wait_for("the job to finish", DEADLINE, || {
        let j = h.get(&format!("/jobs/{job_id}")).ok()?.body;
        match j["state"].as_str()? {
            "FINISHED" => Some(j),
            "FAILED" | "CANCELED" => panic!(
                "job {job_id} ended {}: {}",
                j["state"],
                h.get(&format!("/jobs/{job_id}/exceptions")).unwrap().text
            ),
            _ => None,
        }
    });
    (job_id, done)
}

fn throughput(bench: &Bench, runs: usize) {
    let (h, tm_pid) = start_cluster(&format!("bench-{}", bench.name), 2);
    let mut rates = Vec::new();
    let mut cpu_per_m = Vec::new();
    for run in 1..=runs {
        let cpu_before = cpu_seconds(tm_pid);
        let (job_id, done) = run_job(&h, &bench.job, &bench.package);
        let cpu = cpu_seconds(tm_pid) - cpu_before;
        let running = done["timestamps"]["RUNNING"].as_f64().unwrap();
        let finished = done["timestamps"]["FINISHED"].as_f64().unwrap();
        let seconds = (finished - running) / 1000.0;
        let sink = sink_records(&h, &job_id);
        let ok = if sink == bench.expected_sink_records { "ok" } else { "WRONG" };
        let rate = bench.records as f64 / seconds;
        println!(
            "{} run {run}: {:.2} s, {:.2} M records/s, taskmanager {:.3} CPU-s per 1M records, sink records {sink} ({ok})",
            bench.name,
            seconds,
            rate / 1e6,
            cpu / (bench.records as f64 / 1e6)
        );
        assert_eq!(sink, bench.expected_sink_records, "{} produced a wrong result", bench.name);
        if bench.job["config"]["execution.checkpointing.interval"].is_string() {
            let stats = h.get_ok(&format!("/jobs/{job_id}/checkpoints"));
            let d = &stats["summary"]["end_to_end_duration"];
            println!(
                "{} run {run}: {} checkpoints completed, {} failed; duration p50 {} ms, p99 {} ms, max {} ms; state p50 {} bytes",
                bench.name,
                stats["counts"]["completed"],
                stats["counts"]["failed"],
                d["p50"],
                d["p99"],
                d["max"],
                stats["summary"]["state_size"]["p50"]
            );
        }
        rates.push(rate);
        cpu_per_m.push(cpu / (bench.records as f64 / 1e6));
    }
    let peak = proc_field(tm_pid, "status", "VmHWM:") as f64 / 1024.0;
    println!(
        "{} median: {:.2} M records/s, {:.3} taskmanager CPU-s per 1M records, peak taskmanager RSS {:.1} MiB",
        bench.name,
        median(rates) / 1e6,
        median(cpu_per_m),
        peak
    );
}

fn latency(runs: usize) {
    let (h, _) = start_cluster("bench-latency", 4);
    let job = json!({ "flint": 1, "name": "latency", "parallelism": 4, "operators": [
        { "id": "seq", "op": "source.sequence", "from": 0, "rate": 10 },
        { "id": "keyed", "op": "aggregate", "inputs": ["seq"], "key": ["n"], "aggs": { "c": "count()" } },
        { "id": "discard", "op": "sink.blackhole", "inputs": ["keyed"] } ] });
    let file = h.home.join("latency.json");
    std::fs::write(&file, job.to_string()).unwrap();
    let mut inside = Vec::new();
    let mut end_to_end = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let out = Command::new(bin_dir().join("flint"))
            .args(["-m", &format!("127.0.0.1:{}", h.rest_port), "run", "-d"])
            .arg(&file)
            .output()
            .unwrap();
        let job_id = String::from_utf8_lossy(&out.stdout).split_whitespace().last().unwrap().to_string();
        let job = loop {
            let j = h.get(&format!("/jobs/{job_id}")).unwrap().body;
            if j["status-counts"]["RUNNING"] == 8 {
                break j;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        end_to_end.push(started.elapsed().as_secs_f64() * 1000.0);
        let submitted = job["timestamps"]["INITIALIZING"].as_f64().unwrap();
        let mut last_running = 0.0f64;
        for v in job["vertices"].as_array().unwrap() {
            let detail = h.get_ok(&format!("/jobs/{job_id}/vertices/{}/subtasktimes", v["id"].as_str().unwrap()));
            for s in detail["subtasks"].as_array().unwrap() {
                last_running = last_running.max(s["timestamps"]["RUNNING"].as_f64().unwrap());
            }
        }
        inside.push(last_running - submitted);
        let reply = h.patch(&format!("/jobs/{job_id}?mode=cancel")).unwrap();
        assert_eq!(reply.status, 202);
        h.wait_for("the job to be canceled", DEADLINE, || {
            (h.get(&format!("/jobs/{job_id}")).ok()?.body["state"] == "CANCELED").then_some(())
        });
        h.wait_for_overview("slots free", DEADLINE, |o| o["slots-available"] == 4);
    }
    println!(
        "LATENCY (p=4, 8 subtasks) inside the jobmanager: median {:.1} ms over {runs} runs {inside:?}",
        median(inside.clone())
    );
    println!(
        "LATENCY through `flint run -d` until all RUNNING: median {:.1} ms {end_to_end:.1?}",
        median(end_to_end.clone())
    );
}

/// The children of a process (the jobmanager under its `strace`).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// CONTROL: `GET /jobs/overview` latency while a job checkpoints every 100 ms and every
/// fsync of the jobmanager takes 200 ms (`strace` injects the delay into the jobmanager
/// only: its `_metadata` writes). Prints p50/p99/max per run and the medians.
fn control_latency(runs: usize) {
    let wrapper: Vec<String> = [
        "strace",
        "-f",
        "--seccomp-bpf",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fsync,fdatasync",
        "-e",
        "inject=fsync,fdatasync:delay_enter=200000",
        "--",
    ]
    .map(String::from)
    .to_vec();
    let (mut p50s, mut p99s, mut maxes) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let mut h = Harness::new("bench-control");
        let jm = h.start_jobmanager_wrapped("jobmanager", &wrapper);
        h.start_taskmanager("taskmanager", &["taskmanager.numberOfTaskSlots=2".into()]);
        h.wait_for_overview("the task manager", Duration::from_secs(30), |o| o["slots-total"] == 2);
        let checkpoints = h.home.join("checkpoints");
        let job = json!({ "flint": 1, "name": "control", "parallelism": 2,
            "config": { "execution.checkpointing.interval": "100 ms", "state.checkpoints.dir": checkpoints },
            "operators": [
                { "id": "seq", "op": "source.sequence", "from": 0, "rate": 1000 },
                { "id": "keyed", "op": "aggregate", "inputs": ["seq"], "key": ["n"], "aggs": { "c": "count()" } },
                { "id": "discard", "op": "sink.blackhole", "inputs": ["keyed"] } ] });
        let job_id = h.submit("", &job);
        h.wait_for("the job to run", Duration::from_secs(60), || {
            flint_tests::all_running(&h.get(&format!("/jobs/{job_id}")).ok()?.body).then_some(())
        });
        std::thread::sleep(Duration::from_secs(2));
        let mut samples = Vec::new();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            let started = Instant::now();
            let reply = h.get("/jobs/overview").expect("GET /jobs/overview");
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(reply.status, 200);
            std::thread::sleep(Duration::from_millis(20));
        }
        let completed = h.get_ok(&format!("/jobs/{job_id}/checkpoints"))["counts"]["completed"].as_u64().unwrap_or(0);
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (p50, p99, max) = (percentile(&samples, 0.5), percentile(&samples, 0.99), *samples.last().unwrap());
        println!(
            "CONTROL run {run}: {} requests, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; {completed} checkpoints completed",
            samples.len()
        );
        p50s.push(p50);
        p99s.push(p99);
        maxes.push(max);
        let tracer = h.process(jm).pid();
        for child in children(tracer) {
            let _ = Command::new("kill").args(["-9", &child.to_string()]).status();
        }
    }
    println!(
        "CONTROL GET /jobs/overview with 200 ms fsyncs, checkpoints every 100 ms: median p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {runs} runs",
        median(p50s),
        median(p99s),
        median(maxes)
    );
}

fn words_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLINT_WORDS_FILE") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::temp_dir().join("flint-bench-words.txt");
    if !path.exists() {
        println!("generating {} with shared/bench/gen_words.py ...", path.display());
        let status =
            Command::new("python3").arg(repo_root().join("../shared/bench/gen_words.py")).arg(&path).status().ok()?;
        if !status.success() {
            return None;
        }
    }
    Some(path)
}

fn main() {
    let selected: Vec<String> = std::env::args().skip(1).collect();
    let want = |name: &str| selected.is_empty() || selected.iter().any(|s| s.eq_ignore_ascii_case(name));
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let words = if want("B4") { words_file() } else { None };
    for bench in benches(&words) {
        if want(bench.name) {
            throughput(&bench, runs);
        }
    }
    if selected.iter().any(|s| s.eq_ignore_ascii_case("B2TLS")) {
        shuffle_over_tls(runs);
    }
    if want("LATENCY") {
        latency(5);
    }
    if want("CONTROL") {
        control_latency(runs);
    }
}
