//! The operator's path: `start-cluster.sh` / `stop-cluster.sh` with `conf/workers`, the
//! per-role scripts, and the `flint` client against the running cluster.

use std::process::Command;
use std::time::Duration;

use flint_tests::{bin_dir, is_alive, Harness};

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn start_cluster_with_two_workers_then_stop_leaves_nothing_behind() {
    let mut h = Harness::new("start-cluster");
    h.set("taskmanager.numberOfTaskSlots", 2);
    h.write_hosts(&[&format!("localhost:{}", h.rest_port)], &["localhost", "localhost"]);

    let out = h.script("start-cluster.sh", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Starting standalonesession daemon"), "{stdout}");
    assert_eq!(stdout.matches("Starting taskexecutor daemon").count(), 2, "{stdout}");

    let o = h.wait_for_overview("2 task managers with 4 slots", DEADLINE, |o| {
        o["taskmanagers"] == 2 && o["slots-total"] == 4
    });
    assert_eq!(o["slots-available"], 4);
    let tms = h.get_ok("/taskmanagers");
    let tms = tms["taskmanagers"].as_array().unwrap();
    assert_eq!(tms.len(), 2);
    assert!(tms.iter().all(|t| t["slotsNumber"] == 2 && t["freeSlots"] == 2), "{tms:?}");

    // The client sees the same cluster.
    let info = Command::new(bin_dir().join("flint"))
        .args(["-m", &format!("localhost:{}", h.rest_port), "info"])
        .output()
        .expect("run flint info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "flint info failed: {text} {}", String::from_utf8_lossy(&info.stderr));
    assert!(text.contains("Task managers:  2") && text.contains("4 total, 4 available"), "{text}");

    // Log files follow Flink's naming.
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let names: Vec<String> = std::fs::read_dir(&h.log_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for prefix in [
        format!("flint-{user}-standalonesession-0-"),
        format!("flint-{user}-taskexecutor-0-"),
        format!("flint-{user}-taskexecutor-1-"),
    ] {
        assert!(names.iter().any(|n| n.starts_with(&prefix) && n.ends_with(".log")), "no {prefix}*.log in {names:?}");
    }

    let pids = h.script_pids();
    assert_eq!(pids.len(), 3, "one jobmanager and two taskmanagers in the pid files");
    h.script("stop-cluster.sh", &[]);
    h.wait_for("every Flint process to exit", DEADLINE, || pids.iter().all(|p| !is_alive(*p)).then_some(()));
    assert!(h.get("/overview").is_err(), "the REST API is gone");
    // Each daemon logged a graceful stop (SIGTERM handled, not killed).
    let logs: String = names
        .iter()
        .filter(|n| n.ends_with(".log"))
        .map(|n| std::fs::read_to_string(h.log_dir.join(n)).unwrap_or_default())
        .collect();
    assert_eq!(logs.matches("task manager stopped").count(), 2, "both task managers stopped gracefully");
    assert_eq!(logs.matches("job manager stopped").count(), 1, "the job manager stopped gracefully");
}

#[test]
fn role_scripts_start_and_stop_single_daemons_with_dynamic_properties() {
    let h = Harness::new("role-scripts");
    h.script("jobmanager.sh", &["start"]);
    h.script("taskmanager.sh", &["start", "-D", "taskmanager.numberOfTaskSlots=3"]);
    h.script("taskmanager.sh", &["start", "-D", "taskmanager.numberOfTaskSlots=1"]);
    h.wait_for_overview("two task managers with 4 slots", DEADLINE, |o| {
        o["taskmanagers"] == 2 && o["slots-total"] == 4
    });

    // `stop` stops the most recently started taskmanager only.
    h.script("taskmanager.sh", &["stop"]);
    let o = h.wait_for_overview("one task manager left", DEADLINE, |o| o["taskmanagers"] == 1);
    assert_eq!(o["slots-total"], 3, "the last started (1 slot) was stopped");

    let pids = h.script_pids();
    h.script("taskmanager.sh", &["stop-all"]);
    h.script("jobmanager.sh", &["stop-all"]);
    h.wait_for("every Flint process to exit", DEADLINE, || pids.iter().all(|p| !is_alive(*p)).then_some(()));
}
