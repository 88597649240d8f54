//! `flint.io.allowed-paths` with real processes: jobs read and write inside the allowed
//! roots; a job, a savepoint or a disposal naming a path outside them (directly or through
//! a symbolic link) is refused with 400 and nothing is created; a taskmanager refuses a path
//! its own setting does not allow; a bad value fails startup naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flint_tests::{all_running, read_output_lines, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

/// A cluster (one jobmanager, one taskmanager with 2 slots) whose jobs may use `root` only;
/// `tm_root` restricts the taskmanager further.
fn cluster(name: &str, tm_root: Option<&Path>) -> (Harness, PathBuf) {
    let mut h = Harness::new(name);
    let root = h.home.join("allowed");
    std::fs::create_dir_all(&root).unwrap();
    h.set("flint.io.allowed-paths", root.display());
    h.start_jobmanager("jobmanager");
    let mut extra = vec!["taskmanager.numberOfTaskSlots=2".to_string()];
    extra.extend(tm_root.map(|r| format!("flint.io.allowed-paths={}", r.display())));
    h.start_taskmanager("taskmanager", &extra);
    h.wait_for_overview("the taskmanager", DEADLINE, |o| o["slots-total"] == 2);
    (h, root)
}

fn file_job(source: &Path, sink: &Path) -> Value {
    json!({
        "flint": 1, "name": "copy",
        "operators": [
            { "id": "lines", "op": "source.file", "path": source },
            { "id": "out", "op": "sink.file", "inputs": ["lines"], "path": sink }
        ]
    })
}

fn job_count(h: &Harness) -> usize {
    h.get_ok("/jobs/overview")["jobs"].as_array().map_or(0, Vec::len)
}

/// Asserts a 400 whose errors name `given` and `field` and the root, and nothing else of the
/// server's file system (`hidden`).
fn assert_refused(reply: flint_tests::Reply, field: &str, given: &str, root: &Path, hidden: &[&str]) {
    assert_eq!(reply.status, 400, "{}", reply.text);
    let errors = reply.body["errors"].as_array().unwrap_or_else(|| panic!("no errors: {}", reply.text));
    let text = errors.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n");
    assert!(text.contains(field) && text.contains(given), "{text}");
    assert!(text.contains(&root.display().to_string()) && text.contains("flint.io.allowed-paths"), "{text}");
    for h in hidden {
        assert!(!text.contains(h), "the answer leaks '{h}': {text}");
    }
}

#[test]
fn allowed_paths_confine_jobs_and_requests_to_their_roots() {
    let (h, root) = cluster("io-paths", None);
    let outside = h.home.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret\n").unwrap();

    // Inside the root: runs.
    let input = root.join("in.txt");
    std::fs::write(&input, "a\nb\nc\n").unwrap();
    let id = h.submit("", &file_job(&input, &root.join("out")));
    h.wait_job_state(&id, "FINISHED", DEADLINE);
    let mut lines = read_output_lines(&root.join("out"));
    lines.sort();
    assert_eq!(lines, ["a", "b", "c"]);
    assert_eq!(job_count(&h), 1);

    // source.file outside: 400, no job.
    let passwd = Path::new("/etc/passwd");
    let reply = h.post_json("/jobs", &file_job(passwd, &root.join("out2"))).unwrap();
    assert_refused(reply, "operator 'lines': 'path'", "/etc/passwd", &root, &[]);
    // sink.file outside, also as a relative escape.
    let escape = root.join("../outside/out");
    let reply = h.post_json("/jobs", &file_job(&input, &escape)).unwrap();
    assert_refused(reply, "operator 'out': 'path'", &escape.display().to_string(), &root, &[]);
    // A symbolic link inside the root leading out.
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let through = root.join("link/secret.txt");
    let reply = h.post_json("/jobs", &file_job(&through, &root.join("out3"))).unwrap();
    let outside_text = outside.display().to_string();
    assert_refused(reply.clone(), "'path'", &through.display().to_string(), &root, &[&outside_text]);
    assert!(reply.text.contains("symbolic link"), "{}", reply.text);
    // The job's own checkpoint directory, and savepointPath.
    let mut job = file_job(&input, &root.join("out4"));
    job["config"] = json!({ "state.checkpoints.dir": format!("file://{outside_text}/ckpt") });
    let reply = h.post_json("/jobs", &job).unwrap();
    assert_refused(reply, "config 'state.checkpoints.dir'", "/ckpt", &root, &[]);
    let reply =
        h.post_json(&format!("/jobs?savepointPath={outside_text}"), &file_job(&input, &root.join("o"))).unwrap();
    assert_refused(reply, "'savepointPath'", &outside_text, &root, &[]);
    assert_eq!(job_count(&h), 1, "no refused job was created");
    assert!(!outside.join("out").exists() && !outside.join("ckpt").exists());

    // Savepoints of a running job: a target outside is a 400, inside works.
    let endless = json!({
        "flint": 1, "name": "endless",
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "rate": 1000 },
            { "id": "sink", "op": "sink.blackhole", "inputs": ["numbers"] }
        ]
    });
    let id = h.submit("", &endless);
    h.wait_for("all tasks RUNNING", DEADLINE, || all_running(&h.job(&id)).then_some(()));
    let reply = h.post_json(&format!("/jobs/{id}/savepoints"), &json!({ "target-directory": outside })).unwrap();
    assert_refused(reply, "'target-directory'", &outside_text, &root, &[]);
    let reply = h.post_json(&format!("/jobs/{id}/stop"), &json!({ "targetDirectory": root.join("link") })).unwrap();
    assert_refused(reply, "'targetDirectory'", "link", &root, &[&outside_text]);
    let reply = h
        .post_json(&format!("/jobs/{id}/savepoints"), &json!({ "target-directory": root.join("savepoints") }))
        .unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text);
    let trigger = reply.body["request-id"].as_str().unwrap().to_string();
    let status = h.wait_for("the savepoint", DEADLINE, || {
        let r = h.get_ok(&format!("/jobs/{id}/savepoints/{trigger}"));
        (r["status"]["id"] == "COMPLETED").then_some(r)
    });
    assert!(status["operation"]["location"].as_str().is_some(), "{status}");
    // Disposal deletes: a path outside is refused before anything is touched.
    let reply = h.post_json("/savepoint-disposal", &json!({ "savepoint-path": outside })).unwrap();
    assert_refused(reply, "'savepoint-path'", &outside_text, &root, &[]);
    assert!(outside.join("secret.txt").exists());
    assert_eq!(h.patch(&format!("/jobs/{id}?mode=cancel")).unwrap().status, 202);
    h.wait_job_state(&id, "CANCELED", DEADLINE);

    // A job package's own files are not the taskmanager's paths: they are read from its
    // artifact directory, outside the roots.
    let package_job = json!({
        "flint": 1, "name": "package",
        "operators": [
            { "id": "lines", "op": "source.file", "path": "data/p.txt" },
            { "id": "out", "op": "sink.file", "inputs": ["lines"], "path": root.join("from-package") }
        ]
    });
    let text = serde_json::to_vec(&package_job).unwrap();
    let reply =
        h.post_multipart("/jobs", &[("job", "job.yaml", &text), ("artifact", "data/p.txt", b"x\ny\n")]).unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["jobUrl"].as_str().unwrap().trim_start_matches("/jobs/").to_string();
    h.wait_job_state(&id, "FINISHED", DEADLINE);
    let mut lines = read_output_lines(&root.join("from-package"));
    lines.sort();
    assert_eq!(lines, ["x", "y"]);
}

#[test]
fn a_taskmanager_checks_its_own_allowed_paths_when_a_task_starts() {
    let (h, root) = cluster("io-paths-tm", Some(Path::new("/nonexistent/flint-io-paths")));
    let input = root.join("in.txt");
    std::fs::write(&input, "a\n").unwrap();
    // Allowed by the jobmanager, refused by the taskmanager: the job fails for good.
    let id = h.submit("", &file_job(&input, &root.join("out")));
    h.wait_for("the job to fail", DEADLINE, || (h.job(&id)["state"] == "FAILED").then_some(()));
    let exceptions = h.get_ok(&format!("/jobs/{id}/exceptions")).to_string();
    assert!(exceptions.contains("/nonexistent/flint-io-paths") && exceptions.contains("'path'"), "{exceptions}");
    assert!(!root.join("out").exists());
}

#[test]
fn a_bad_allowed_paths_value_fails_startup_naming_the_key() {
    let mut h = Harness::new("io-paths-bad");
    h.set("flint.io.allowed-paths", "/data;relative/dir");
    let jm = h.start_jobmanager("jobmanager");
    assert_eq!(h.process(jm).wait_exit(DEADLINE), Some(1));
    let out = std::fs::read_to_string(h.log_dir.join("jobmanager.out")).unwrap();
    assert!(out.contains("flint.io.allowed-paths") && out.contains("relative/dir"), "{out}");
}
