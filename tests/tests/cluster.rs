//! A real jobmanager and real taskmanagers over real TCP: membership, heartbeats,
//! restarts, start order, graceful stops, bad configuration.

use std::time::Duration;

use flint_tests::Harness;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

fn slots(n: u32) -> Vec<String> {
    vec![format!("taskmanager.numberOfTaskSlots={n}")]
}

fn tm_ids(h: &Harness) -> Vec<String> {
    let body = h.get_ok("/taskmanagers");
    let mut ids: Vec<String> =
        body["taskmanagers"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

#[test]
fn a_killed_taskmanager_disappears_after_the_heartbeat_timeout() {
    let mut h = Harness::new("heartbeat");
    h.set("heartbeat.interval", "500 ms").set("heartbeat.timeout", "2 s");
    // A long rpc-failure threshold would hide the timeout; 0 disables it, so the
    // heartbeat timeout alone must detect the loss.
    h.set("heartbeat.rpc-failure-threshold", 0);
    h.start_jobmanager("jobmanager");
    let victim = h.start_taskmanager("taskmanager-1", &slots(2));
    h.start_taskmanager("taskmanager-2", &slots(2));
    h.wait_for_overview("2 task managers with 4 slots", DEADLINE, |o| o["taskmanagers"] == 2 && o["slots-total"] == 4);
    let before = tm_ids(&h);

    h.process(victim).kill9();
    let o = h.wait_for_overview("the killed task manager to disappear", DEADLINE, |o| o["taskmanagers"] == 1);
    assert_eq!(o["slots-total"], 2);
    assert_eq!(o["slots-available"], 2);
    let after = tm_ids(&h);
    assert_eq!(after.len(), 1);
    assert!(before.contains(&after[0]), "the survivor is one of the original task managers");
    // The survivor stays registered across further heartbeat rounds.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(tm_ids(&h), after);
}

#[test]
fn taskmanagers_register_again_with_a_restarted_jobmanager() {
    let mut h = Harness::new("jm-restart");
    h.set("heartbeat.interval", "1 s").set("heartbeat.timeout", "5 s");
    let jm = h.start_jobmanager("jobmanager-1");
    h.start_taskmanager("taskmanager-1", &slots(2));
    h.start_taskmanager("taskmanager-2", &slots(1));
    h.wait_for_overview("both task managers", DEADLINE, |o| o["taskmanagers"] == 2 && o["slots-total"] == 3);
    let before = tm_ids(&h);

    h.process(jm).kill9();
    assert!(h.get("/overview").is_err(), "the jobmanager is gone");
    h.start_jobmanager("jobmanager-2");
    h.wait_for_overview("task managers re-registered at the new jobmanager", DEADLINE, |o| {
        o["taskmanagers"] == 2 && o["slots-total"] == 3
    });
    assert_eq!(tm_ids(&h), before, "the same task managers came back");
}

#[test]
fn a_taskmanager_started_first_registers_once_the_jobmanager_is_up() {
    let mut h = Harness::new("tm-first");
    let tm = h.start_taskmanager("taskmanager-1", &slots(2));
    // It keeps trying (and keeps running) while nobody listens.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(h.process(tm).is_running(), "the taskmanager must wait for the jobmanager");
    h.start_jobmanager("jobmanager");
    let o = h.wait_for_overview("the early task manager", DEADLINE, |o| o["taskmanagers"] == 1);
    assert_eq!(o["slots-total"], 2);
}

#[test]
fn graceful_stops_exit_zero_and_deregister() {
    let mut h = Harness::new("graceful");
    let jm = h.start_jobmanager("jobmanager");
    let tm = h.start_taskmanager("taskmanager-1", &slots(1));
    h.wait_for_overview("the task manager", DEADLINE, |o| o["taskmanagers"] == 1);
    assert_eq!(h.process(tm).terminate(DEADLINE), Some(0), "taskmanager exit code");
    // Deregistration is immediate, not after a heartbeat timeout (50 s by default).
    h.wait_for_overview("the task manager to deregister", Duration::from_secs(5), |o| o["taskmanagers"] == 0);

    let reply = h.delete("/cluster").unwrap();
    assert_eq!((reply.status, reply.body.clone()), (200, serde_json::json!({})));
    assert_eq!(h.process(jm).wait_exit(DEADLINE), Some(0), "jobmanager exit code after DELETE /cluster");
}

#[test]
fn invalid_configuration_fails_startup_naming_key_and_value() {
    let mut h = Harness::new("bad-config");
    h.set("heartbeat.interval", "soonish");
    let jm = h.start_jobmanager("jobmanager");
    let code = h.process(jm).wait_exit(DEADLINE);
    assert_eq!(code, Some(1));
    let out = std::fs::read_to_string(h.log_dir.join("jobmanager.out")).unwrap();
    assert!(out.contains("heartbeat.interval") && out.contains("soonish"), "{out}");

    let tm = h.start_taskmanager("taskmanager", &["taskmanager.numberOfTaskSlots=zero".into()]);
    assert_eq!(h.process(tm).wait_exit(DEADLINE), Some(1));
    let out = std::fs::read_to_string(h.log_dir.join("taskmanager.out")).unwrap();
    assert!(out.contains("taskmanager.numberOfTaskSlots") && out.contains("zero"), "{out}");
}

/// Asserts `ours` has every field of `reference`, with the same JSON types, recursively
/// (arrays: element shapes compared against the reference's first element).
fn assert_same_shape(path: &str, reference: &Value, ours: &Value) {
    assert_eq!(
        flint_tests::json_kind(reference),
        flint_tests::json_kind(ours),
        "{path}: type differs (reference {reference}, ours {ours})"
    );
    match (reference, ours) {
        (Value::Object(r), Value::Object(o)) => {
            for (key, rv) in r {
                let ov = o.get(key).unwrap_or_else(|| panic!("{path}.{key} missing in {ours}"));
                assert_same_shape(&format!("{path}.{key}"), rv, ov);
            }
            for key in o.keys() {
                assert!(r.contains_key(key), "{path}.{key} is not a field of Flink's response");
            }
        }
        (Value::Array(r), Value::Array(o)) => {
            if let (Some(rf), Some(of)) = (r.first(), o.first()) {
                for item in o {
                    assert_same_shape(&format!("{path}[]"), rf, item);
                }
                let _ = of;
            }
        }
        _ => {}
    }
}

fn reference(name: &str) -> Value {
    let path = flint_tests::repo_root().join("tests/fixtures/flink-rest").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reference {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn rest_api_matches_flink_field_names_types_and_status_codes() {
    let mut h = Harness::new("rest");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &slots(2));
    h.wait_for_overview("the task manager", DEADLINE, |o| o["taskmanagers"] == 1);
    let tm_id = tm_ids(&h).remove(0);

    for (path, reference_file) in [
        ("/config", "config.json"),
        ("/v1/config", "v1_config.json"),
        ("/overview", "overview.json"),
        ("/v1/overview", "v1_overview.json"),
        ("/taskmanagers", "taskmanagers.json"),
        ("/jobmanager/environment", "jobmanager_environment.json"),
        ("/jobmanager/logs", "jobmanager_logs.json"),
    ] {
        let ours = h.get_ok(path);
        assert_same_shape(path, &reference(reference_file), &ours);
    }
    let ours = h.get_ok(&format!("/taskmanagers/{tm_id}"));
    let mut flink = reference("taskmanagers_TMID.json");
    // Flink lists one GC per JVM collector; Flint has no garbage collector.
    flink["metrics"]["garbageCollectors"] = serde_json::json!([]);
    assert_same_shape("/taskmanagers/:id", &flink, &ours);
    assert_eq!(ours["slotsNumber"], 2);
    assert_eq!(ours["id"], tm_id.as_str());

    let config = h.get_ok("/jobmanager/config");
    assert_same_shape("/jobmanager/config", &reference("jobmanager_config.json"), &config);
    let rest_port = config.as_array().unwrap().iter().find(|e| e["key"] == "rest.port").unwrap();
    assert_eq!(rest_port["value"], h.rest_port.to_string());

    // Empty job lists, in Flink's envelope.
    assert_eq!(h.get_ok("/jobs"), serde_json::json!({ "jobs": [] }));
    assert_eq!(h.get_ok("/jobs/overview"), serde_json::json!({ "jobs": [] }));
    let logs = h.get_ok("/jobmanager/logs");
    assert!(logs["logs"].as_array().unwrap().iter().any(|l| l["name"] == "jobmanager.log"), "{logs}");

    // Errors: status codes and the {"errors": [...]} envelope.
    for (method, path, status, message) in [
        ("GET", "/doesnotexist", 404, "Unable to load requested file /doesnotexist."),
        ("GET", "/jobs/overview/extra", 404, "Unable to load requested file /jobs/overview/extra."),
        ("DELETE", "/overview", 404, "Not found: /overview"),
        ("GET", "/jobs/notajobid", 400, "Cannot resolve path parameter (jobid) from value \"notajobid\""),
        ("GET", "/jobs/0123456789abcdef0123456789abcdeX", 400, "Cannot resolve path parameter (jobid)"),
        ("GET", "/v1/jobs/00000000000000000000000000000000", 404, "Job 00000000000000000000000000000000 not found"),
        ("GET", "/taskmanagers/doesnotexist", 404, "No TaskExecutor registered under doesnotexist."),
    ] {
        let reply = if method == "GET" { h.get(path) } else { h.delete(path) }.unwrap();
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
        let errors = reply.body["errors"].as_array().unwrap_or_else(|| panic!("{method} {path}: {}", reply.text));
        assert!(errors[0].as_str().unwrap().contains(message), "{method} {path}: {}", reply.text);
    }
    let reply = h.post_json("/overview", &serde_json::json!({})).unwrap();
    assert_eq!(reply.status, 404);

    // The dashboard is served at the root.
    let root = h.get("/").unwrap();
    assert_eq!(root.status, 200);
    assert!(
        root.text.contains("<html") || root.text.contains("<!DOCTYPE"),
        "{}",
        &root.text[..200.min(root.text.len())]
    );
}
