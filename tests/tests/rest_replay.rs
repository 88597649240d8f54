//! REST completeness against Flink 1.20: every call of Flink's REST API snapshot
//! (`tests/fixtures/flink-rest-api-v1.snapshot.json`, 69 calls) is replayed against a real
//! cluster with a running checkpointed job and a finished job, and its answer compared with
//! Flink's: the status code of the snapshot, and every field of Flink's captured answer
//! (`tests/fixtures/flink-rest/`, matched by method and path) present with the same JSON
//! type (recursively; for arrays the first elements are compared; objects keyed by ids
//! compare their first values; Flink's `"NaN"` for an unmeasured double matches a number).
//! Where Flink 1.20 itself answers with another status than the snapshot's nominal one,
//! the comparison uses Flink's real answer ([`FLINK_ANSWERS`]). Prints one line per call
//! and the count; the count may not fall below [`AT_LEAST`].

use std::collections::BTreeMap;
use std::time::Duration;

use flint_tests::Harness;
use serde_json::{json, Value};

/// The count this suite holds Flint to (raise it when more calls answer as Flink does).
const AT_LEAST: usize = 69;
const DEADLINE: Duration = Duration::from_secs(60);

/// Calls Flink 1.20 answers with another status than the snapshot's nominal one.
const FLINK_ANSWERS: &[(&str, &str, u16)] = &[
    // RescalingHandlers: "Rescaling is temporarily disabled. See FLINK-12312." (503).
    ("PATCH", "/jobs/:jobid/rescaling", 503),
    ("GET", "/jobs/:jobid/rescaling/:triggerid", 503),
    // An operator without a coordinator (every streaming operator of the replayed job):
    // the JobMaster's FlinkException surfaces as 500.
    ("POST", "/jobs/:jobid/coordinators/:operatorid", 500),
];

fn fixtures() -> std::path::PathBuf {
    flint_tests::repo_root().join("tests/fixtures")
}

/// One snapshot call.
struct Call {
    method: String,
    url: String,
    status: u16,
}

fn snapshot_calls() -> Vec<Call> {
    let text = std::fs::read_to_string(fixtures().join("flink-rest-api-v1.snapshot.json")).unwrap();
    let snapshot: Value = serde_json::from_str(&text).unwrap();
    snapshot["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Call {
            method: c["method"].as_str().unwrap().to_string(),
            url: c["url"].as_str().unwrap().to_string(),
            status: c["status-code"].as_str().unwrap().split(' ').next().unwrap().parse().unwrap(),
        })
        .collect()
}

/// A capture's path with Flink's placeholders turned into the snapshot's parameters.
fn pattern_of(path: &str) -> String {
    let path = path.split(['?', ' ']).next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let mut out = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let prev = if i > 0 { segments[i - 1] } else { "" };
        let mapped = match *seg {
            "JOBID" | "FINISHEDJOBID" | "RESTJOBID" | "00000000000000000000000000000000" => ":jobid",
            "VERTEXID" | "VERTEXID2" | "FVERTEXID" | "FVERTEXID2" => ":vertexid",
            "TMID" => ":taskmanagerid",
            "CHECKPOINTID" => ":checkpointid",
            "TRIGGERID" | "CKPTTRIGGERID" | "FTRIGGERID" | "STOPTRIGGERID" => ":triggerid",
            "JARID" => ":jarid",
            s if prev == "subtasks" && s.chars().all(|c| c.is_ascii_digit()) => ":subtaskindex",
            s if prev == "attempts" && s.chars().all(|c| c.is_ascii_digit()) => ":attempt",
            s => s,
        };
        out.push(mapped.to_string());
    }
    out.join("/")
}

/// Flink's captured answers by (method, snapshot path): the first 2xx capture without a
/// query and tag, else the last 2xx one (completed operations come after pending ones).
fn captures() -> BTreeMap<(String, String), Value> {
    let index = std::fs::read_to_string(fixtures().join("flink-rest/index.md")).unwrap();
    let mut candidates: BTreeMap<(String, String), Vec<(bool, String)>> = BTreeMap::new();
    for line in index.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| #")) {
        let cols: Vec<&str> = line.split(" | ").map(str::trim).collect();
        if cols.len() < 7 || !cols[3].starts_with('2') {
            continue;
        }
        let path = cols[2].trim_matches('`');
        let Some(file) = cols[5].split("](").nth(1).map(|f| f.trim_end_matches(')')) else { continue };
        let plain = !path.contains('?') && cols[6].is_empty();
        candidates.entry((cols[1].to_string(), pattern_of(path))).or_default().push((plain, file.to_string()));
    }
    let mut out = BTreeMap::new();
    for (key, files) in candidates {
        let chosen = files.iter().find(|(plain, _)| *plain).or(files.last()).map(|(_, f)| f.clone()).unwrap();
        if let Ok(text) = std::fs::read_to_string(fixtures().join("flink-rest").join(&chosen)) {
            if let Ok(value) = serde_json::from_str(&text) {
                out.insert(key, value);
            }
        }
    }
    out
}

/// An object whose keys are ids or numbers (its entries all share one shape).
fn keyed_by_ids(map: &serde_json::Map<String, Value>) -> bool {
    !map.is_empty()
        && map.keys().all(|k| {
            (k.len() == 32 && k.chars().all(|c| c.is_ascii_hexdigit())) || k.chars().all(|c| c.is_ascii_digit())
        })
}

/// The fields of Flink's answer that ours lacks or types differently.
fn differences(flink: &Value, ours: &Value, path: &str, out: &mut Vec<String>) {
    match (flink, ours) {
        (Value::Null, _) => {}
        // Jackson's NaN for a double nobody measured.
        (Value::String(s), Value::Number(_)) if s == "NaN" => {}
        // Keys chosen by the user.
        (Value::Object(_), Value::Object(_)) if path.ends_with(".user-config") => {}
        (Value::Object(f), Value::Object(o)) if keyed_by_ids(f) => {
            if let (Some(fv), Some(ov)) = (f.values().next(), o.values().next()) {
                differences(fv, ov, &format!("{path}.*"), out);
            }
        }
        (Value::Object(f), Value::Object(o)) => {
            for (k, fv) in f {
                match o.get(k) {
                    None => out.push(format!("{path}.{k} missing")),
                    Some(ov) => differences(fv, ov, &format!("{path}.{k}"), out),
                }
            }
        }
        (Value::Array(f), Value::Array(o)) => {
            if let (Some(fv), Some(ov)) = (f.first(), o.first()) {
                differences(fv, ov, &format!("{path}[0]"), out);
            }
        }
        (f, o) if flint_tests::json_kind(f) == flint_tests::json_kind(o) => {}
        (f, o) => out.push(format!("{path} is {} (Flink: {})", flint_tests::json_kind(o), flint_tests::json_kind(f))),
    }
}

fn running_job(name: &str, checkpoints: &std::path::Path) -> Value {
    json!({
        "flint": 1, "name": name, "parallelism": 1,
        "config": {
            "execution.checkpointing.interval": "200 ms",
            "state.checkpoints.dir": checkpoints,
        },
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "rate": 2000 },
            { "id": "keys", "op": "map", "inputs": ["numbers"], "fields": { "k": "n % 10" } },
            { "id": "counts", "op": "aggregate", "inputs": ["keys"], "key": ["k"], "aggs": { "c": "count()" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["counts"] }
        ]
    })
}

#[test]
fn flinks_rest_api_snapshot_replayed() {
    let mut h = Harness::new("rest-replay");
    let savepoints = h.home.join("savepoints");
    let checkpoints = h.home.join("checkpoints");
    h.set("state.savepoints.dir", savepoints.display());
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=4".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 4);

    let finished = h.submit(
        "",
        &json!({
            "flint": 1, "name": "finished", "parallelism": 1,
            "operators": [
                { "id": "numbers", "op": "source.sequence", "from": 0, "to": 999 },
                { "id": "out", "op": "sink.blackhole", "inputs": ["numbers"], "ship": "rebalance" }
            ]
        }),
    );
    h.wait_job_state(&finished, "FINISHED", DEADLINE);
    let running = h.submit("", &running_job("running", &checkpoints));
    let to_cancel = h.submit("", &running_job("to-cancel", &checkpoints));
    let to_stop = h.submit("", &running_job("to-stop", &checkpoints));
    for job in [&running, &to_cancel, &to_stop] {
        h.wait_for("the job running", DEADLINE, || flint_tests::all_running(&h.job(job)).then_some(()));
    }
    let checkpoint = h.wait_for("a completed checkpoint", DEADLINE, || {
        h.get_ok(&format!("/jobs/{running}/checkpoints"))["latest"]["completed"]["id"].as_u64()
    });
    let vertex = h.job(&running)["vertices"][0]["id"].as_str().unwrap().to_string();
    let tm = h.get_ok("/taskmanagers")["taskmanagers"][0]["id"].as_str().unwrap().to_string();
    // A savepoint to dispose of.
    let trigger = h.post_json(&format!("/jobs/{running}/savepoints"), &json!({ "cancel-job": false })).unwrap();
    let trigger = trigger.body["request-id"].as_str().unwrap_or_default().to_string();
    let disposable = h.wait_for("a savepoint", DEADLINE, || {
        let s = h.get_ok(&format!("/jobs/{running}/savepoints/{trigger}"));
        s["operation"]["location"].as_str().map(str::to_string)
    });

    // Packages for the /jars calls: one to plan and run, one to delete.
    let package = flint_tests::zip_of(&[(
        "job.json",
        json!({
            "flint": 1, "name": "from-a-package", "parallelism": 1,
            "operators": [
                { "id": "numbers", "op": "source.sequence", "from": 0, "to": 99 },
                { "id": "out", "op": "sink.blackhole", "inputs": ["numbers"], "ship": "rebalance" }
            ]
        })
        .to_string()
        .as_bytes(),
    )]);
    let upload = |name: &str| {
        let reply = h.upload(name, &package).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body["filename"].as_str().unwrap().to_string()
    };
    let (jar, jar_to_delete) = (upload("kept.zip"), upload("deleted.zip"));

    let captures = captures();
    let mut triggers: BTreeMap<&str, String> = BTreeMap::new();
    let mut ok = 0;
    let mut report = Vec::new();
    let calls = snapshot_calls();
    assert_eq!(calls.len(), 69);
    // Operation status after the operations were triggered, the cluster's shutdown last.
    let (last, calls): (Vec<&Call>, Vec<&Call>) = calls.iter().partition(|c| c.url == "/cluster");
    let (statuses, calls): (Vec<&Call>, Vec<&Call>) =
        calls.into_iter().partition(|c| c.method == "GET" && c.url.ends_with(":triggerid"));
    for call in calls.into_iter().chain(statuses).chain(last) {
        let url = call.url.as_str();
        let job = match (call.method.as_str(), url) {
            ("PATCH", "/jobs/:jobid") => &to_cancel,
            ("POST", "/jobs/:jobid/stop") => &to_stop,
            (_, "/jobs/:jobid/execution-result") => &finished,
            _ => &running,
        };
        let trigger_of = |kind: &str| triggers.get(kind).cloned().unwrap_or_else(|| "0".repeat(32));
        let kind = if url.starts_with("/jobs/:jobid/checkpoints") {
            "checkpoint"
        } else if url.starts_with("/jobs/:jobid/rescaling") {
            "rescaling"
        } else if url.starts_with("/savepoint-disposal") {
            "disposal"
        } else if url.starts_with("/datasets") {
            "dataset"
        } else {
            "savepoint"
        };
        let mut path = url
            .replace(":jobid", job)
            .replace(":vertexid", &vertex)
            .replace(":subtaskindex", "0")
            .replace(":attempt", "0")
            .replace(":checkpointid", &checkpoint.to_string())
            .replace(":taskmanagerid", &tm)
            .replace(":jarid", if call.method == "DELETE" { &jar_to_delete } else { &jar })
            .replace(":operatorid", &"1".repeat(32))
            .replace(":datasetid", &"2".repeat(32))
            .replace(":triggerid", &trigger_of(kind));
        let reply = match call.method.as_str() {
            // A pending operation is polled until it completed, as Flink's captures show them.
            "GET" if url.ends_with(":triggerid") && kind != "rescaling" => {
                let until = std::time::Instant::now() + DEADLINE;
                loop {
                    let reply = h.get(&path);
                    let pending = reply.as_ref().is_ok_and(|r| r.body["status"]["id"] == "IN_PROGRESS");
                    if !pending || std::time::Instant::now() > until {
                        break reply;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            "POST" if url == "/jars/upload" => h.upload("uploaded.zip", &package),
            "GET" => h.get(&path),
            "DELETE" => h.delete(&path),
            "PATCH" if url == "/jobs/:jobid" => h.patch(&format!("{path}?mode=cancel")),
            "PATCH" if url.ends_with("/rescaling") => {
                path.push_str("?parallelism=2");
                h.patch(&path)
            }
            "PATCH" => h.patch_json(&path, &json!({ "expiredTimestamp": flint_common::process::epoch_ms() + 60_000 })),
            "POST" => {
                let body = match url {
                    "/jobs" => running_job("submitted", &checkpoints),
                    "/jobs/:jobid/savepoints" => json!({ "target-directory": savepoints, "cancel-job": false }),
                    "/jobs/:jobid/stop" => json!({ "targetDirectory": savepoints, "drain": false }),
                    "/savepoint-disposal" => json!({ "savepoint-path": disposable }),
                    "/jobs/:jobid/coordinators/:operatorid" => json!({ "serializedCoordinationRequest": "" }),
                    "/jars/:jarid/plan" | "/jars/:jarid/run" => json!({ "parallelism": 1 }),
                    _ => json!({}),
                };
                h.post_json(&path, &body)
            }
            other => panic!("method {other}"),
        }
        .unwrap_or_else(|e| panic!("{} {path}: {e}", call.method));
        // (The stop's trigger belongs to another job than the savepoint status asked for.)
        let trigger = reply.body["request-id"].as_str().filter(|_| url != "/jobs/:jobid/stop");
        if let Some(id) = trigger {
            triggers.insert(kind, id.to_string());
        }
        let mut problems = Vec::new();
        let expected = FLINK_ANSWERS
            .iter()
            .find(|(m, u, _)| *m == call.method && *u == url)
            .map_or(call.status, |(_, _, status)| *status);
        if reply.status != expected {
            problems.push(format!("status {} (Flink: {expected})", reply.status));
        } else if let Some(flink) = captures.get(&(call.method.clone(), url.to_string())) {
            differences(flink, &reply.body, "", &mut problems);
        }
        let verdict = if problems.is_empty() {
            ok += 1;
            "OK".to_string()
        } else {
            problems.truncate(6);
            problems.join("; ")
        };
        report.push(format!("{:6} {url}: {verdict}", call.method));
    }
    for line in &report {
        eprintln!("{line}");
    }
    eprintln!("REST replay: {ok} of 69 OK");
    assert!(ok >= AT_LEAST, "REST replay: {ok} of 69 OK, fewer than {AT_LEAST}:\n{}", report.join("\n"));
}

#[test]
fn capture_paths_map_to_the_snapshots_parameters() {
    assert_eq!(
        pattern_of("/jobs/JOBID/vertices/VERTEXID/subtasks/0/attempts/0"),
        "/jobs/:jobid/vertices/:vertexid/subtasks/:subtaskindex/attempts/:attempt"
    );
    assert_eq!(
        pattern_of("/jobs/JOBID/checkpoints/details/CHECKPOINTID/subtasks/VERTEXID2?x=1"),
        "/jobs/:jobid/checkpoints/details/:checkpointid/subtasks/:vertexid"
    );
    assert_eq!(pattern_of("/jars/upload (multipart, field jarfile)"), "/jars/upload");
    let mut out = Vec::new();
    differences(
        &json!({ "a": 1, "b": [{ "c": "x" }], "m": { "0123456789abcdef0123456789abcdef": { "v": 1 } } }),
        &json!({ "a": "1", "b": [{}], "m": { "fedcba9876543210fedcba9876543210": {} } }),
        "",
        &mut out,
    );
    assert_eq!(out, [".a is string (Flink: number)", ".b[0].c missing", ".m.*.v missing"]);
    assert!(captures().len() > 40, "the captures are read");
}
