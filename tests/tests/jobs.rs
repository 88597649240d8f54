//! Jobs on a real cluster (1 jobmanager, 2 taskmanagers × 2 slots): submission over
//! REST, scheduling across both taskmanagers, hash shuffles over TCP, exact results,
//! cancellation, slot time-outs and the job REST views.

use std::collections::BTreeMap;
use std::time::Duration;

use flint_tests::Harness;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

fn cluster(name: &str) -> Harness {
    let mut h = Harness::new(name);
    h.set("heartbeat.interval", "1 s").set("heartbeat.timeout", "10 s");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.start_taskmanager("taskmanager-2", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("2 task managers with 4 slots", DEADLINE, |o| o["taskmanagers"] == 2 && o["slots-total"] == 4);
    h
}

/// Reads every JSON line of every part file under `dir`.
fn read_json_lines(dir: &std::path::Path) -> Vec<Value> {
    assert!(dir.is_dir(), "{} does not exist", dir.display());
    flint_tests::read_output_lines(dir).iter().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect()
}

#[test]
fn word_count_with_a_hash_shuffle_across_taskmanagers_is_exact() {
    let h = cluster("wordcount");
    // A deterministic text: 20,000 lines over a 97-word vocabulary.
    let vocabulary: Vec<String> = (0..97).map(|i| format!("w{i:03}")).collect();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut text = String::new();
    let mut x: u64 = 7;
    for _ in 0..20_000 {
        let words = 1 + (x % 9) as usize;
        let mut line = Vec::new();
        for _ in 0..words {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let w = &vocabulary[((x >> 33) % 97) as usize];
            *expected.entry(w.clone()).or_default() += 1;
            line.push(w.as_str());
        }
        text.push_str(&line.join(" "));
        text.push('\n');
    }
    let input = h.home.join("words.txt");
    std::fs::write(&input, text).unwrap();
    let out = h.home.join("out");
    let job = json!({
        "flint": 1, "name": "word-count", "parallelism": 4,
        "operators": [
            { "id": "lines", "op": "source.file", "path": input },
            { "id": "words", "op": "flat_map.split", "inputs": ["lines"], "field": "line", "separator": " ", "as": "word" },
            { "id": "counts", "op": "aggregate", "inputs": ["words"], "key": ["word"], "aggs": { "count": "count()" } },
            { "id": "out", "op": "sink.file", "inputs": ["counts"], "path": out, "format": "json" }
        ]
    });
    let job_id = h.submit("", &job);
    let done = h.wait_job_state(&job_id, "FINISHED", DEADLINE);

    // Tasks ran on both taskmanagers.
    let vertices = done["vertices"].as_array().unwrap();
    assert_eq!(vertices.len(), 2, "source+split chained, aggregate+sink chained: {done}");
    let agg = vertices.iter().find(|v| v["name"].as_str().unwrap().contains("counts")).unwrap();
    let tms = h.get_ok(&format!("/jobs/{job_id}/vertices/{}/taskmanagers", agg["id"].as_str().unwrap()));
    assert_eq!(tms["taskmanagers"].as_array().unwrap().len(), 2, "{tms}");
    let total_words: u64 = expected.values().sum();
    assert_eq!(agg["metrics"]["read-records"], total_words, "records crossed the shuffle exactly once");

    // The running count's final value per word is the word's count.
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    let rows = read_json_lines(&out);
    assert_eq!(rows.len() as u64, total_words, "one updated count per word occurrence");
    for row in rows {
        let word = row["word"].as_str().unwrap().to_string();
        let count = row["count"].as_u64().unwrap();
        let e = counted.entry(word).or_default();
        *e = (*e).max(count);
    }
    assert_eq!(counted, expected);

    // Slots are released; the job is listed as finished.
    h.wait_for_overview("slots freed", DEADLINE, |o| o["slots-available"] == 4 && o["jobs-finished"] == 1);
    let plan = h.get_ok(&format!("/jobs/{job_id}/plan"));
    assert_eq!(plan["plan"]["nodes"].as_array().unwrap().len(), 2);
}

#[test]
fn cancelling_an_unbounded_job_frees_every_slot() {
    let h = cluster("cancel");
    let job = json!({
        "flint": 1, "name": "forever", "parallelism": 4,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "rate": 10000 },
            { "id": "keyed", "op": "aggregate", "inputs": ["numbers"], "key": ["n"], "aggs": { "c": "count()" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["keyed"] }
        ]
    });
    let job_id = h.submit("", &job);
    let running = h.wait_for("all 8 subtasks RUNNING", DEADLINE, || {
        let job = h.get(&format!("/jobs/{job_id}")).ok()?;
        (job.body["status-counts"]["RUNNING"] == 8).then_some(job.body)
    });
    assert_eq!(running["state"], "RUNNING");
    h.wait_for_overview("all slots in use", DEADLINE, |o| o["slots-available"] == 0 && o["jobs-running"] == 1);

    let reply = h.patch(&format!("/jobs/{job_id}?mode=cancel")).unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text);
    h.wait_job_state(&job_id, "CANCELED", DEADLINE);
    h.wait_for_overview("every slot free again", DEADLINE, |o| o["slots-available"] == 4 && o["jobs-cancelled"] == 1);

    // Cancelling again: the job is already terminal.
    let again = h.patch(&format!("/jobs/{job_id}?mode=cancel")).unwrap();
    assert_eq!(again.status, 409, "{}", again.text);
    let unknown = h.patch("/jobs/00000000000000000000000000000000?mode=cancel").unwrap();
    assert_eq!(unknown.status, 404);
    let bogus = h.patch(&format!("/jobs/{job_id}?mode=bogus")).unwrap();
    assert_eq!(bogus.status, 400);
}

#[test]
fn a_job_needing_more_slots_than_exist_fails_after_the_slot_timeout() {
    let mut h = Harness::new("slot-timeout");
    h.set("slot.request.timeout", "2 s");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 2);
    let job = json!({
        "flint": 1, "name": "too-wide", "parallelism": 3,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": 100 },
            { "id": "out", "op": "sink.blackhole", "inputs": ["numbers"] }
        ]
    });
    let job_id = h.submit("", &job);
    h.wait_job_state(&job_id, "FAILED", DEADLINE);
    let exceptions = h.get_ok(&format!("/jobs/{job_id}/exceptions"));
    let root = exceptions["root-exception"].as_str().unwrap();
    assert!(root.contains("NoResourceAvailableException") && root.contains("slot.request.timeout"), "{root}");
    h.wait_for_overview("the two slots free again", DEADLINE, |o| o["slots-available"] == 2 && o["jobs-failed"] == 1);
}

#[test]
fn invalid_jobs_are_refused_with_every_problem_and_nothing_runs() {
    let h = cluster("invalid");
    let job = json!({
        "flint": 1, "name": "broken", "parallelism": 0,
        "operators": [
            { "id": "numbers", "op": "source.nope" },
            { "id": "out", "op": "sink.blackhole", "inputs": ["missing"] }
        ]
    });
    let reply = h.post_json("/jobs", &job).unwrap();
    assert_eq!(reply.status, 400, "{}", reply.text);
    let errors: Vec<String> =
        reply.body["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect();
    assert!(errors.len() >= 3, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("'numbers'") && e.contains("source.nope")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("'out'") && e.contains("missing")), "{errors:?}");
    assert_eq!(h.get_ok("/jobs"), json!({ "jobs": [] }));
    let garbage = h.post_raw("/jobs", "{ not json").unwrap();
    assert_eq!(garbage.status, 400);
}

#[test]
fn an_event_time_window_over_generated_data_is_exact() {
    let h = cluster("window");
    let rows: u64 = 50_000;
    let out = h.home.join("windows");
    let job = json!({
        "flint": 1, "name": "windows", "parallelism": 2,
        "operators": [
            { "id": "gen", "op": "source.datagen", "parallelism": 1, "rows": rows,
              "fields": { "n": { "kind": "sequence", "start": 0, "end": rows - 1 } } },
            { "id": "events", "op": "map", "inputs": ["gen"], "parallelism": 1,
              "fields": { "key": "n % 7", "ts": "n * 10" } },
            { "id": "counts", "op": "window", "inputs": ["events"], "key": ["key"], "size": "1 s",
              "time": "event", "timestamp_field": "ts", "max_out_of_orderness": "0 ms",
              "aggs": { "count": "count()", "last": "max(ts)" } },
            { "id": "out", "op": "sink.file", "inputs": ["counts"], "path": out, "format": "json" }
        ]
    });
    let job_id = h.submit("", &job);
    h.wait_job_state(&job_id, "FINISHED", DEADLINE);

    let mut expected: BTreeMap<(i64, i64), (u64, i64)> = BTreeMap::new();
    for n in 0..rows as i64 {
        let ts = n * 10;
        let e = expected.entry((n % 7, ts - ts % 1000)).or_default();
        e.0 += 1;
        e.1 = e.1.max(ts);
    }
    let mut actual: BTreeMap<(i64, i64), (u64, i64)> = BTreeMap::new();
    for row in read_json_lines(&out) {
        let key = (row["key"].as_i64().unwrap(), row["window_start"].as_i64().unwrap());
        assert_eq!(row["window_end"].as_i64().unwrap(), key.1 + 1000, "{row}");
        let previous = actual.insert(key, (row["count"].as_u64().unwrap(), row["last"].as_i64().unwrap()));
        assert!(previous.is_none(), "window {key:?} fired twice");
    }
    assert_eq!(actual.len(), expected.len());
    assert_eq!(actual, expected);
}

#[test]
fn the_readme_quickstart_job_runs_and_prints_to_the_taskmanager_stdout() {
    let h = cluster("quickstart");
    let file = flint_tests::repo_root().join("examples/quickstart.yaml");
    let run = std::process::Command::new(flint_tests::bin_dir().join("flint"))
        .args(["-m", &format!("localhost:{}", h.rest_port), "run", "-d"])
        .arg(&file)
        .output()
        .expect("run flint");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{stdout} {}", String::from_utf8_lossy(&run.stderr));
    let job_id = stdout.split_whitespace().last().unwrap().to_string();
    assert!(stdout.contains("Job has been submitted with JobID"), "{stdout}");
    h.wait_job_state(&job_id, "RUNNING", DEADLINE);

    // Counts appear on the stdout of the taskmanager that runs the printing sink.
    let tms = h.get_ok("/taskmanagers");
    let ids: Vec<String> =
        tms["taskmanagers"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    h.wait_for("printed counts on a taskmanager's stdout", DEADLINE, || {
        ids.iter().find_map(|id| {
            let reply = h.get(&format!("/taskmanagers/{id}/stdout")).ok()?;
            (reply.status == 200 && reply.text.lines().count() >= 5).then_some(())
        })
    });
    let list = std::process::Command::new(flint_tests::bin_dir().join("flint"))
        .args(["-m", &format!("localhost:{}", h.rest_port), "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains(&job_id));
    let cancel = std::process::Command::new(flint_tests::bin_dir().join("flint"))
        .args(["-m", &format!("localhost:{}", h.rest_port), "cancel", &job_id])
        .output()
        .unwrap();
    assert!(cancel.status.success(), "{}", String::from_utf8_lossy(&cancel.stderr));
    h.wait_job_state(&job_id, "CANCELED", DEADLINE);
}

#[test]
fn flint_run_of_an_invalid_file_exits_non_zero_listing_the_problems() {
    let h = cluster("cli-invalid");
    let file = h.home.join("broken.json");
    std::fs::write(
        &file,
        r#"{ "flint": 1, "name": "broken", "operators": [
            { "id": "numbers", "op": "source.sequence", "from": "zero" },
            { "id": "more", "op": "source.sequence", "from": 0, "to": 10 },
            { "id": "m", "op": "map", "inputs": ["more"], "fields": { "x": "nope + 1" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["m"] } ] }"#,
    )
    .unwrap();
    let run = std::process::Command::new(flint_tests::bin_dir().join("flint"))
        .args(["-m", &format!("localhost:{}", h.rest_port), "run"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("'numbers'") && stderr.contains("'m'"), "{stderr}");
    assert_eq!(h.get_ok("/jobs"), json!({ "jobs": [] }), "nothing was submitted");
}

fn rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[test]
fn a_slow_sink_back_pressures_a_fast_source_with_bounded_memory() {
    let mut h = Harness::new("backpressure");
    h.start_jobmanager("jobmanager");
    let tm = h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=1".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["taskmanagers"] == 1);
    let tm_pid = h.process(tm).pid();
    // An unthrottled source (millions of records/s) → network exchange → a sink that
    // takes 20,000 records/s.
    let job = json!({
        "flint": 1, "name": "backpressure", "parallelism": 1,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0 },
            { "id": "shuffle", "op": "key_by", "inputs": ["numbers"], "key": ["n"] },
            { "id": "slow", "op": "sink.blackhole", "inputs": ["shuffle"], "rate": 20000 }
        ]
    });
    let job_id = h.submit("", &job);
    h.wait_job_state(&job_id, "RUNNING", DEADLINE);
    std::thread::sleep(Duration::from_secs(2));
    let mut samples = Vec::new();
    let mut in_flight = Vec::new();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(rss_mib(tm_pid));
        let job = h.get_ok(&format!("/jobs/{job_id}"));
        let vertices = job["vertices"].as_array().unwrap();
        let produced = vertices.iter().map(|v| v["metrics"]["write-records"].as_u64().unwrap()).sum::<u64>();
        let acc = h.get_ok(&format!("/jobs/{job_id}/accumulators"));
        let consumed: u64 = acc["user-task-accumulators"][0]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no sink-records accumulator: {acc}"))
            .parse()
            .unwrap();
        in_flight.push(produced.saturating_sub(consumed));
    }
    let (min, max) = samples.iter().fold((f64::MAX, 0.0f64), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    eprintln!("taskmanager RSS samples (MiB): {samples:?}; records between source and sink: {in_flight:?}");
    assert!(max - min < 64.0, "taskmanager memory grew from {min:.1} to {max:.1} MiB under back-pressure");
    // The source is held back to the sink's pace: what it produced but the sink has not
    // taken is bounded by the queues (a few buffers of 4096 records), not by time.
    assert!(in_flight.iter().all(|n| *n < 500_000), "records in flight {in_flight:?}");
    let reply = h.patch(&format!("/jobs/{job_id}?mode=cancel")).unwrap();
    assert_eq!(reply.status, 202);
    h.wait_job_state(&job_id, "CANCELED", DEADLINE);
}

fn unbounded_job(parallelism: u32) -> Value {
    json!({
        "flint": 1, "name": "unbounded", "parallelism": parallelism,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "rate": 1000 },
            { "id": "keyed", "op": "aggregate", "inputs": ["numbers"], "key": ["n"], "aggs": { "c": "count()" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["keyed"] }
        ]
    })
}

fn fast_heartbeats(name: &str) -> (Harness, usize, usize) {
    let mut h = Harness::new(name);
    h.set("heartbeat.interval", "500 ms").set("heartbeat.timeout", "2 s");
    h.start_jobmanager("jobmanager");
    let tm1 = h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    let tm2 = h.start_taskmanager("taskmanager-2", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("2 task managers with 4 slots", DEADLINE, |o| o["taskmanagers"] == 2 && o["slots-total"] == 4);
    (h, tm1, tm2)
}

#[test]
fn a_killed_taskmanager_fails_its_job_through_the_job_masters_heartbeat() {
    let (mut h, _, tm2) = fast_heartbeats("tm-lost");
    let job_id = h.submit("", &unbounded_job(4));
    h.wait_for("all 8 subtasks RUNNING", DEADLINE, || {
        (h.get(&format!("/jobs/{job_id}")).ok()?.body["status-counts"]["RUNNING"] == 8).then_some(())
    });
    h.process(tm2).kill9();
    // Restarts come with fault tolerance; until then the job fails, with the reason.
    h.wait_job_state(&job_id, "FAILED", DEADLINE);
    let exceptions = h.get_ok(&format!("/jobs/{job_id}/exceptions"));
    let root = exceptions["root-exception"].as_str().unwrap_or_default().to_string();
    assert!(root.contains("TaskManager with id") || root.contains("failed"), "{exceptions}");
    h.wait_for_overview("the survivor's slots free", DEADLINE, |o| o["taskmanagers"] == 1 && o["slots-available"] == 2);
}

#[test]
fn taskmanagers_release_the_slots_of_a_dead_jobmanagers_jobs() {
    let (mut h, _, _) = fast_heartbeats("jm-lost");
    let jm = 0;
    let job_id = h.submit("", &unbounded_job(4));
    h.wait_for("all 8 subtasks RUNNING", DEADLINE, || {
        (h.get(&format!("/jobs/{job_id}")).ok()?.body["status-counts"]["RUNNING"] == 8).then_some(())
    });
    h.process(jm).kill9();
    h.start_jobmanager("jobmanager-2");
    // The new jobmanager does not know the job (no HA yet); the taskmanagers notice the
    // job master is gone, cancel its tasks and report every slot free.
    h.wait_for_overview("every slot free at the new jobmanager", DEADLINE, |o| {
        o["taskmanagers"] == 2 && o["slots-total"] == 4 && o["slots-available"] == 4
    });
}
