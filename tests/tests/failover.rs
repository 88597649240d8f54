//! Restarts: a failed task or a lost taskmanager restarts the job under its restart
//! strategy (from scratch until checkpoints exist), on the slots that are left.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flint_tests::Harness;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn a_failed_task_restarts_the_job_which_then_finishes_with_exact_output() {
    let mut h = Harness::new("restart-fail");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 2);
    let out = h.home.join("out");
    let spec = json!({
        "flint": 1, "name": "fails-once", "parallelism": 2,
        "config": { "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": "3",
                    "restart-strategy.fixed-delay.delay": "200 ms" },
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": 99999 },
            { "id": "boom", "op": "fail", "inputs": ["numbers"], "subtask": 1, "after": 20000 },
            { "id": "out", "op": "sink.file", "inputs": ["boom"], "path": out, "format": "json" }
        ]
    });
    let id = h.submit("", &spec);
    let done = h.wait_for("the job to finish after one restart", DEADLINE, || {
        let j = h.job(&id);
        assert_ne!(j["state"], "FAILED", "{j}");
        (j["state"] == "FINISHED").then_some(j)
    });
    assert!(done["timestamps"]["RESTARTING"].as_u64().unwrap() > 0, "the job went through RESTARTING");
    let exceptions = h.get_ok(&format!("/jobs/{id}/exceptions"));
    let history = exceptions["exceptionHistory"]["entries"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{exceptions}");
    assert!(history[0]["stacktrace"].as_str().unwrap().contains("failed on purpose"), "{exceptions}");
    let config = h.get_ok(&format!("/jobs/{id}/config"));
    assert!(config["execution-config"]["restart-strategy"].as_str().unwrap().contains("fixed delay"), "{config}");
    // Attempt 1 of every subtask ran to the end and rewrote the output.
    let vertex = done["vertices"][0]["id"].as_str().unwrap();
    let subtask = h.get_ok(&format!("/jobs/{id}/vertices/{vertex}/subtasks/1"));
    assert_eq!(subtask["attempt"], 1);
    let mut seen: BTreeMap<i64, u32> = BTreeMap::new();
    for line in flint_tests::read_output_lines(&out) {
        let n = serde_json::from_str::<Value>(&line).unwrap()["n"].as_i64().unwrap();
        *seen.entry(n).or_default() += 1;
    }
    assert_eq!(seen.len(), 100_000);
    assert!(seen.values().all(|c| *c == 1), "every record exactly once in the final output");
}

#[test]
fn a_killed_taskmanager_restarts_the_job_on_the_remaining_slots() {
    let mut h = Harness::new("restart-tm-lost");
    h.set("heartbeat.interval", "1 s").set("heartbeat.timeout", "5 s");
    h.start_jobmanager("jobmanager");
    let victim = h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.start_taskmanager("taskmanager-2", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("2 task managers", DEADLINE, |o| o["slots-total"] == 4);
    let spec = json!({
        "flint": 1, "name": "survives", "parallelism": 4,
        "config": { "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": "5",
                    "restart-strategy.fixed-delay.delay": "100 ms" },
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "rate": 2000 },
            { "id": "keyed", "op": "aggregate", "inputs": ["numbers"], "key": ["n"], "aggs": { "c": "count()" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["keyed"] }
        ]
    });
    let id = h.submit("", &spec);
    h.wait_for("all 8 subtasks RUNNING", DEADLINE, || (h.job(&id)["status-counts"]["RUNNING"] == 8).then_some(()));
    // A third taskmanager joins; then one of the first two dies.
    h.start_taskmanager("taskmanager-3", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("3 task managers", DEADLINE, |o| o["taskmanagers"] == 3);
    let killed = Instant::now();
    h.process(victim).kill9();
    let running = h.wait_for("the job RUNNING again with 8 new subtasks", DEADLINE, || {
        let j = h.job(&id);
        let restarted = j["timestamps"]["RESTARTING"].as_u64().unwrap_or(0) > 0;
        (restarted && j["state"] == "RUNNING" && j["status-counts"]["RUNNING"] == 8).then_some(j)
    });
    eprintln!("kill -9 taskmanager -> all tasks RUNNING again: {} ms", killed.elapsed().as_millis());
    // Every subtask runs in a later attempt on a live taskmanager (a restart that raced
    // with the loss detection may have needed a second attempt).
    h.wait_for_overview("the dead taskmanager deregistered", DEADLINE, |o| o["taskmanagers"] == 2);
    let live: Vec<String> = h.get_ok("/taskmanagers")["taskmanagers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    for v in running["vertices"].as_array().unwrap() {
        let detail = h.get_ok(&format!("/jobs/{id}/vertices/{}", v["id"].as_str().unwrap()));
        for s in detail["subtasks"].as_array().unwrap() {
            assert!(s["attempt"].as_u64().unwrap() >= 1, "{s}");
            assert!(live.iter().any(|t| t == s["taskmanager-id"].as_str().unwrap()), "{s} runs on a dead taskmanager");
        }
    }
    let reply = h.patch(&format!("/jobs/{id}?mode=cancel")).unwrap();
    assert_eq!(reply.status, 202);
}

#[test]
fn a_failure_no_attempt_can_avoid_fails_the_job_at_once_with_its_cause() {
    let mut h = Harness::new("restart-permanent");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 2);
    // Record 500 divides by zero: every attempt would fail on it again.
    let spec = json!({
        "flint": 1, "name": "divides-by-zero", "parallelism": 1,
        "config": { "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": "1000",
                    "restart-strategy.fixed-delay.delay": "10 ms" },
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": 9999 },
            { "id": "ratio", "op": "map", "inputs": ["numbers"], "fields": { "r": "100 / (n - 500)" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["ratio"] }
        ]
    });
    let id = h.submit("", &spec);
    h.wait_job_state(&id, "FAILED", DEADLINE);
    let job = h.job(&id);
    assert_eq!(job["timestamps"]["RESTARTING"].as_u64().unwrap_or(0), 0, "never restarted: {job}");
    let exceptions = h.get_ok(&format!("/jobs/{id}/exceptions"));
    let history = exceptions["exceptionHistory"]["entries"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{exceptions}");
    let root = exceptions["root-exception"].as_str().unwrap();
    assert!(
        root.contains("expression '100 / (n - 500)' failed") && root.to_lowercase().contains("divide by zero"),
        "{root}"
    );
}
