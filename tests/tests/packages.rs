//! Job packages on a real cluster (1 jobmanager, 2 taskmanagers × 2 slots): upload → list
//! → plan → run through `/jars` as Flink's dashboard does it, the same package through
//! `flint run` and a multipart `POST /jobs`, its artifacts read on the taskmanagers and
//! removed when the job ends; bad packages refused with 400 and nothing stored; uploads
//! listed again after a jobmanager restart when `web.upload.dir` persists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flint_tests::{zip_of, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

const JOB: &str = "\
flint: 1
name: package-lines
parallelism: 2
operators:
  - { id: lines, op: source.file, path: \"${input}\" }
  - { id: out, op: sink.file, inputs: [lines], path: \"${out}\", format: json }
";

/// The package: the job file and two data files under `data/`.
fn package() -> (Vec<u8>, BTreeSet<String>) {
    let a: String = (0..500).map(|i| format!("a-{i}\n")).collect();
    let b: String = (0..300).map(|i| format!("b-{i}\n")).collect();
    let lines = a.lines().chain(b.lines()).map(str::to_owned).collect();
    (
        zip_of(&[
            ("job.yaml", JOB.as_bytes()),
            ("data/", b""),
            ("data/a.txt", a.as_bytes()),
            ("data/b.txt", b.as_bytes()),
        ]),
        lines,
    )
}

fn cluster(name: &str) -> Harness {
    let mut h = Harness::new(name);
    h.set("heartbeat.interval", "1 s").set("heartbeat.timeout", "10 s");
    let uploads = h.home.join("uploads");
    h.set("web.upload.dir", uploads.display());
    h.start_jobmanager("jobmanager");
    for i in 1..=2 {
        let blobs = h.home.join(format!("blobs-{i}"));
        h.start_taskmanager(
            &format!("taskmanager-{i}"),
            &["taskmanager.numberOfTaskSlots=2".into(), format!("blob.storage.directory={}", blobs.display())],
        );
    }
    h.wait_for_overview("2 task managers with 4 slots", DEADLINE, |o| o["taskmanagers"] == 2 && o["slots-total"] == 4);
    h
}

fn output(dir: &Path) -> BTreeSet<String> {
    flint_tests::read_output_lines(dir)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["line"].as_str().unwrap().to_string())
        .collect()
}

/// Every file left under the taskmanagers' artifact directories.
fn artifact_files(h: &Harness) -> Vec<PathBuf> {
    (1..=2).flat_map(|i| flint_tests::files_under(&h.home.join(format!("blobs-{i}")))).collect()
}

fn args(input: &str, out: &Path) -> Value {
    json!(["--input", input, "--out", out.display().to_string()])
}

#[test]
fn a_package_is_uploaded_planned_and_run_and_its_artifacts_read_on_the_taskmanagers() {
    let h = cluster("jars");
    let (zip, lines) = package();
    assert_eq!(h.get_ok("/config")["features"]["web-submit"], true);

    // Upload and list, as Flink's dashboard does.
    let up = h.upload("lines.zip", &zip).unwrap();
    assert_eq!(up.status, 200, "{}", up.text);
    assert_eq!(up.body["status"], "success");
    let id = up.body["filename"].as_str().unwrap().to_string();
    assert!(id.ends_with("_lines.zip") && !id.contains('/'), "{id}");
    let listed = h.get_ok("/jars");
    assert_eq!(listed["address"], format!("http://localhost:{}", h.rest_port));
    let file = &listed["files"][0];
    assert_eq!((file["id"].as_str(), file["name"].as_str()), (Some(id.as_str()), Some("lines.zip")), "{listed}");
    assert_eq!(file["entry"][0]["name"], "job.yaml");
    assert_eq!(file["entry"][0]["description"], "package-lines");
    assert!(file["uploaded"].as_u64().unwrap() > 0);

    // Plan: with the parameters, Flink's plan; without, a 400 naming them.
    let out = h.home.join("out-jars");
    let plan = h.post_json(&format!("/jars/{id}/plan"), &json!({ "programArgsList": args("data", &out) })).unwrap();
    assert_eq!(plan.status, 200, "{}", plan.text);
    assert_eq!(plan.body["plan"]["name"], "package-lines");
    assert_eq!(plan.body["plan"]["nodes"][0]["parallelism"], 2);
    let get_plan = h.get(&format!("/jars/{id}/plan?programArg=--input,data&programArg=--out,x&parallelism=3")).unwrap();
    assert_eq!(get_plan.status, 200, "{}", get_plan.text);
    let missing = h.post_json(&format!("/jars/{id}/plan"), &json!({})).unwrap();
    assert_eq!(missing.status, 400);
    assert!(missing.text.contains("input, out"), "{}", missing.text);
    let no_file =
        h.post_json(&format!("/jars/{id}/plan"), &json!({ "programArgsList": args("data/c.txt", &out) })).unwrap();
    assert_eq!(no_file.status, 400);
    assert!(no_file.text.contains("'data/c.txt' names no file of the job package"), "{}", no_file.text);

    // Run: the data directory of the package, read by 2 subtasks on the taskmanagers.
    let run = h
        .post_json(&format!("/jars/{id}/run"), &json!({ "programArgsList": args("data", &out), "parallelism": 4 }))
        .unwrap();
    assert_eq!(run.status, 200, "{}", run.text);
    let job_id = run.body["jobid"].as_str().unwrap().to_string();
    h.wait_job_state(&job_id, "FINISHED", DEADLINE);
    assert_eq!(output(&out), lines);
    // The job's artifacts leave the taskmanagers with its slots.
    h.wait_for_overview("slots freed", DEADLINE, |o| o["slots-available"] == 4);
    h.wait_for("no artifacts left", DEADLINE, || artifact_files(&h).is_empty().then_some(()));

    // The same package through the CLI (program arguments after the package) ...
    let cli_out = h.home.join("out-cli");
    let package_path = h.home.join("lines.zip");
    std::fs::write(&package_path, &zip).unwrap();
    let run = std::process::Command::new(flint_tests::bin_dir().join("flint"))
        .args(["-m", &format!("127.0.0.1:{}", h.rest_port), "run", "-p", "2"])
        .arg(&package_path)
        .args(["--input", "data/a.txt", "--out", &cli_out.display().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "flint run: {stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(output(&cli_out), lines.iter().filter(|l| l.starts_with("a-")).cloned().collect());
    let info = std::process::Command::new(flint_tests::bin_dir().join("flint"))
        .arg("info")
        .arg(&package_path)
        .args(["--input", "data/nothing", "--out", "x"])
        .output()
        .unwrap();
    assert_eq!(info.status.code(), Some(1), "a path naming no file fails locally");
    assert!(String::from_utf8_lossy(&info.stderr).contains("names no file of the job package"));

    // ... and as a multipart POST /jobs of the job file and one artifact.
    let multi_out = h.home.join("out-multipart");
    let request = serde_json::to_vec(&json!({ "programArgsList": args("data/b.txt", &multi_out) })).unwrap();
    let b: String = (0..300).map(|i| format!("b-{i}\n")).collect();
    let reply = h
        .post_multipart(
            "/jobs",
            &[
                ("request", "request.json", &request),
                ("job", "job.yaml", JOB.as_bytes()),
                ("artifact", "data/b.txt", b.as_bytes()),
            ],
        )
        .unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text);
    let job_id = reply.body["jobUrl"].as_str().unwrap().trim_start_matches("/jobs/").to_string();
    h.wait_job_state(&job_id, "FINISHED", DEADLINE);
    assert_eq!(output(&multi_out), lines.iter().filter(|l| l.starts_with("b-")).cloned().collect());

    // Delete: gone from the list and the directory; a second delete is a 400.
    assert_eq!(h.delete(&format!("/jars/{id}")).unwrap().status, 200);
    assert_eq!(h.get_ok("/jars")["files"], json!([]));
    assert_eq!(std::fs::read_dir(h.home.join("uploads")).unwrap().count(), 0);
    let again = h.delete(&format!("/jars/{id}")).unwrap();
    assert_eq!(again.status, 400);
    assert!(!again.text.contains(&h.home.display().to_string()), "no server paths: {}", again.text);
    h.wait_for("no artifacts left", DEADLINE, || artifact_files(&h).is_empty().then_some(()));
}

#[test]
fn bad_packages_are_refused_and_uploads_survive_a_jobmanager_restart() {
    let mut h = Harness::new("jars-bad");
    let uploads = h.home.join("uploads");
    h.set("web.upload.dir", uploads.display()).set("rest.server.max-content-length", 8 << 20);
    let jm = h.start_jobmanager("jobmanager");
    h.wait_for("the REST API", DEADLINE, || h.get("/jars").ok().filter(|r| r.status == 200));
    let job = ("job.yaml", JOB.as_bytes());

    // A zip bomb: 300 MiB of zeros in about 300 KiB.
    let bomb = {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("job.yaml", zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(JOB.as_bytes()).unwrap();
        let deflated = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        w.start_file("zeros.bin", deflated).unwrap();
        let block = vec![0u8; 1 << 20];
        for _ in 0..300 {
            w.write_all(&block).unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    let linked = {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("job.yaml", zip::write::SimpleFileOptions::default()).unwrap();
        std::io::Write::write_all(&mut w, JOB.as_bytes()).unwrap();
        w.add_symlink("data", "/etc", zip::write::SimpleFileOptions::default()).unwrap();
        w.finish().unwrap().into_inner()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("junk.zip", b"this is not a zip".to_vec(), "not a zip archive"),
        ("slip.zip", zip_of(&[job, ("../../evil.txt", b"x")]), "unsafe path"),
        ("abs.zip", zip_of(&[job, ("/tmp/evil.txt", b"x")]), "unsafe path"),
        ("link.zip", linked, "is a link"),
        ("nojob.zip", zip_of(&[("data/a.txt", b"x")]), "no job file"),
        ("bomb.zip", bomb, "expands to more than"),
        ("job.exe", JOB.as_bytes().to_vec(), "Only job packages"),
    ];
    // Over rest.server.max-content-length: 413 and the connection closed unread (the client
    // may see the reset before the answer).
    match h.upload("big.zip", &vec![b'x'; 9 << 20]) {
        Ok(reply) => assert_eq!(reply.status, 413, "{}", reply.text),
        Err(e) => eprintln!("the oversized upload ended with: {e}"),
    }
    for (name, bytes, reason) in &cases {
        let reply = h.upload(name, bytes).unwrap();
        assert!(matches!(reply.status, 400 | 413), "{name}: {} {}", reply.status, reply.text);
        assert!(reply.text.contains(reason), "{name}: {}", reply.text);
    }
    assert_eq!(h.get_ok("/jars")["files"], json!([]), "nothing stored");
    assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 0, "no partial upload left");
    let two = h
        .post_multipart("/jars/upload", &[("jarfile", "a.zip", &zip_of(&[job])), ("jarfile", "b.zip", &zip_of(&[job]))])
        .unwrap();
    assert_eq!(two.status, 400, "{}", two.text);
    assert!(two.text.contains("Exactly 1 file"), "{}", two.text);
    assert_eq!(h.post_json("/jars/nope.zip/run", &json!({})).unwrap().status, 400);

    // A job file on its own is an upload too; it outlives the jobmanager.
    let up = h.upload("job.yaml", JOB.as_bytes()).unwrap();
    assert_eq!(up.status, 200, "{}", up.text);
    h.process(jm).terminate(DEADLINE);
    h.start_jobmanager("jobmanager-2");
    let listed = h.wait_for("the upload listed again", DEADLINE, || {
        h.get("/jars").ok().filter(|r| r.status == 200 && r.body["files"].as_array().is_some_and(|f| f.len() == 1))
    });
    assert_eq!(listed.body["files"][0]["id"], up.body["filename"]);
    assert_eq!(listed.body["files"][0]["entry"][0]["description"], "package-lines");
}

#[test]
fn web_submit_disabled_hides_the_jar_handlers() {
    let mut h = Harness::new("jars-off");
    h.set("web.submit.enable", "false");
    h.start_jobmanager("jobmanager");
    let config = h.wait_for("the REST API", DEADLINE, || h.get("/config").ok().filter(|r| r.status == 200));
    assert_eq!(config.body["features"]["web-submit"], false);
    assert_eq!(h.get("/jars").unwrap().status, 404);
    assert_eq!(h.upload("job.yaml", JOB.as_bytes()).unwrap().status, 404);
}

/// Lines of `taskmanager-*.log` saying a blob was downloaded.
fn downloads(h: &Harness, tm: usize) -> usize {
    std::fs::read_to_string(h.log_dir.join(format!("taskmanager-{tm}.log")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("blob downloaded"))
        .count()
}

#[test]
fn a_100_mib_artifact_goes_through_the_blob_server_once_per_taskmanager() {
    let mut h = Harness::new("blob-100mib");
    h.set("rest.server.max-content-length", 256 << 20).set("heartbeat.interval", "1 s");
    let jm_blobs = h.home.join("jm-blobs");
    let jm = h.start_jobmanager_with("jobmanager", &[format!("blob.storage.directory={}", jm_blobs.display())]);
    for i in 1..=2 {
        let blobs = h.home.join(format!("blobs-{i}"));
        h.start_taskmanager(
            &format!("taskmanager-{i}"),
            &[
                "taskmanager.numberOfTaskSlots=2".into(),
                format!("blob.storage.directory={}", blobs.display()),
                "blob.service.cleanup.interval=1".into(),
            ],
        );
    }
    h.wait_for_overview("2 task managers with 4 slots", DEADLINE, |o| o["taskmanagers"] == 2 && o["slots-total"] == 4);

    // 100 MiB of incompressible 1 KiB lines, with 200 short marker lines among them.
    let mut data = Vec::with_capacity(101 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut markers = BTreeSet::new();
    for i in 0..102_400u32 {
        if i % 512 == 0 {
            let m = format!("m-{i}");
            data.extend_from_slice(m.as_bytes());
            data.push(b'\n');
            markers.insert(m);
        }
        for _ in 0..(1023 / 16) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(format!("{x:016x}").as_bytes());
        }
        data.extend_from_slice(&b"0123456789abcdef"[..1023 % 16]);
        data.push(b'\n');
    }
    assert!(data.len() >= 100 << 20);
    let job = "flint: 1\nname: big-artifact\nparallelism: 4\noperators:\n  \
               - { id: lines, op: source.file, path: data/big.txt }\n  \
               - { id: short, op: filter, inputs: [lines], predicate: 'len(line) < 100' }\n  \
               - { id: out, op: sink.file, inputs: [short], path: \"${out}\", format: json }\n";
    let zip = zip_of(&[("job.yaml", job.as_bytes()), ("data/big.txt", &data)]);
    drop(data);

    let started = std::time::Instant::now();
    let up = h.upload("big.zip", &zip).unwrap();
    let upload = started.elapsed();
    assert_eq!(up.status, 200, "{}", up.text);
    eprintln!(
        "upload of a {:.1} MiB package: {:.0} ms, {:.0} MiB/s",
        zip.len() as f64 / 1048576.0,
        upload.as_secs_f64() * 1000.0,
        zip.len() as f64 / 1048576.0 / upload.as_secs_f64()
    );
    let id = up.body["filename"].as_str().unwrap().to_string();

    // The jobmanager's resident memory while the job is deployed.
    let pid = h.process(jm).pid();
    let before = flint_tests::rss_kib(pid).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(flint_tests::rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let out = h.home.join("out");
    let started = std::time::Instant::now();
    let run = h
        .post_json(&format!("/jars/{id}/run"), &json!({ "programArgsList": ["--out", out.display().to_string()] }))
        .unwrap();
    assert_eq!(run.status, 200, "{}", run.text);
    let job_id = run.body["jobid"].as_str().unwrap().to_string();
    h.wait_for("every task deployed", DEADLINE, || {
        let job = h.job(&job_id);
        (flint_tests::all_running(&job) || job["state"] == "FINISHED").then_some(())
    });
    let deployed = started.elapsed();
    h.wait_job_state(&job_id, "FINISHED", DEADLINE);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    eprintln!(
        "p=4 on 2 taskmanagers: deployed (run request to every task running) in {} ms, finished after {} ms; \
         jobmanager RSS {} MiB before, peak {} MiB (+{} MiB)",
        deployed.as_millis(),
        started.elapsed().as_millis(),
        before / 1024,
        peak / 1024,
        peak.saturating_sub(before) / 1024
    );
    assert!(peak.saturating_sub(before) < 200 * 1024, "the jobmanager grew by {} KiB", peak - before);
    assert_eq!(output(&out), markers, "every marker line, once");
    assert_eq!((downloads(&h, 1), downloads(&h, 2)), (1, 1), "each taskmanager downloads the artifact once");

    // The job's blobs leave the jobmanager's store, the artifact directories and (after
    // blob.service.cleanup.interval) the taskmanagers' caches: no file is left.
    h.wait_for("the job's artifacts and cached blobs removed", DEADLINE, || {
        artifact_files(&h).is_empty().then_some(())
    });
    let job_blobs = || {
        std::fs::read_dir(&jm_blobs)
            .unwrap()
            .flatten()
            .filter(|store| store.path().join(format!("job_{job_id}")).exists())
            .count()
    };
    assert_eq!(std::fs::read_dir(&jm_blobs).unwrap().count(), 1, "one blob store");
    h.wait_for("the job's blobs removed from the blob server", DEADLINE, || (job_blobs() == 0).then_some(()));
}

/// With `blob.offload.minsize` low, the artifacts and every vertex's serialized operator
/// chain go through the BlobServer: the descriptors carry only their keys, the
/// taskmanagers fetch them, and the job's output is the same.
#[test]
fn operator_chains_over_the_offload_size_travel_as_blobs() {
    let mut h = Harness::new("blob-operators");
    h.set("heartbeat.interval", "1 s").set("blob.offload.minsize", "256b");
    h.start_jobmanager("jobmanager");
    for i in 1..=2 {
        h.start_taskmanager(&format!("taskmanager-{i}"), &["taskmanager.numberOfTaskSlots=2".into()]);
    }
    h.wait_for_overview("2 task managers with 4 slots", DEADLINE, |o| o["taskmanagers"] == 2 && o["slots-total"] == 4);
    let (zip, lines) = package();
    let up = h.upload("lines.zip", &zip).unwrap();
    assert_eq!(up.status, 200, "{}", up.text);
    let id = up.body["filename"].as_str().unwrap();
    let out = h.home.join("out");
    let run = h.post_json(&format!("/jars/{id}/run"), &json!({ "programArgsList": args("data", &out) })).unwrap();
    assert_eq!(run.status, 200, "{}", run.text);
    let job_id = run.body["jobid"].as_str().unwrap().to_string();
    h.wait_job_state(&job_id, "FINISHED", DEADLINE);
    assert_eq!(output(&out), lines);
    let jm_log = std::fs::read_to_string(h.log_dir.join("jobmanager.log")).unwrap();
    assert!(jm_log.contains("deployment data offloaded") && jm_log.contains("vertices=1"), "the chain was offloaded");
    // Per taskmanager that ran a subtask: the chain and both data files, once each.
    let fetched: usize = (1..=2).map(|i| downloads(&h, i)).sum();
    assert!((3..=6).contains(&fetched), "{fetched} downloads");
    // The plan still shows the operators (the jobmanager keeps the whole graph).
    let plan = h.get_ok(&format!("/jobs/{job_id}/plan"));
    assert!(plan["plan"]["nodes"][0]["description"].as_str().unwrap().contains("lines"), "{plan}");
}
