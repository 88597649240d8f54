//! The dashboard's job lists (`#/jobs`) and Submit page (`#/submit`) driven in a real
//! browser (ChromeDriver) against a real cluster: what the pages show must match the REST
//! API, the filter and the typed form values must survive refreshes, and uploads, plans,
//! runs and deletions made through the page must show in REST.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flint_tests::browser::Browser;
use flint_tests::{all_running, zip_of, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

/// A jobmanager refreshing the dashboard every 500 ms and one taskmanager with 4 slots.
fn cluster(name: &str) -> Harness {
    let mut h = Harness::new(name);
    h.set("web.refresh-interval", "500");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager", &["taskmanager.numberOfTaskSlots=4".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 4);
    h
}

fn finite_job(name: &str) -> Value {
    json!({ "flint": 1, "name": name, "parallelism": 1, "operators": [
        { "id": "numbers", "op": "source.sequence", "from": 0, "to": 999 },
        { "id": "out", "op": "sink.blackhole", "inputs": ["numbers"] } ] })
}

/// A job that runs until cancelled (an endless sequence into a rate-limited sink).
fn endless_job(name: &str) -> Value {
    json!({ "flint": 1, "name": name, "parallelism": 1, "operators": [
        { "id": "numbers", "op": "source.sequence", "from": 0 },
        { "id": "out", "op": "sink.blackhole", "inputs": ["numbers"], "rate": 1000 } ] })
}

fn start_running(h: &Harness, name: &str) -> String {
    let jid = h.submit("", &endless_job(name));
    h.wait_for(&format!("{name} to run"), DEADLINE, || all_running(&h.job(&jid)).then_some(()));
    jid
}

/// The result of `js` as a string (`""` when it is not one).
fn js_string(b: &Browser, js: &str) -> String {
    b.script(js).as_str().unwrap_or_default().to_string()
}

/// The rows of both job tables: `[{table, jid, name, state, tasks: {state: count}}]`.
fn job_rows(b: &Browser) -> Vec<Value> {
    let rows = b.script(
        "return [...document.querySelectorAll('#page-jobs tr[data-job-id]')].map((r) => ({ \
           table: r.closest('table').id, jid: r.dataset.jobId, \
           name: r.querySelector('[data-col=name]').textContent, \
           state: r.querySelector('[data-col=state]').textContent, \
           tasks: Object.fromEntries([...r.querySelectorAll('[data-col=tasks] .task-count')] \
             .map((p) => [p.dataset.state, Number(p.textContent)])) }));",
    );
    rows.as_array().cloned().unwrap_or_default()
}

fn jids_of(rows: &[Value], table: &str) -> Vec<String> {
    rows.iter().filter(|r| r["table"] == table).map(|r| r["jid"].as_str().unwrap().to_string()).collect()
}

/// What the job tables should show for `jobs/overview`'s jobs (same shape as `job_rows`),
/// newest first as the page sorts them.
fn expected_rows(overview: &Value) -> Vec<Value> {
    let mut jobs = overview["jobs"].as_array().unwrap().clone();
    jobs.sort_by_key(|j| {
        (std::cmp::Reverse(j["start-time"].as_i64().unwrap()), j["jid"].as_str().unwrap().to_string())
    });
    let done = |s: &str| matches!(s, "FINISHED" | "CANCELED" | "FAILED" | "SUSPENDED");
    let mut rows: Vec<Value> = Vec::new();
    for table in ["running-jobs-table", "completed-jobs-table"] {
        for j in &jobs {
            let state = j["state"].as_str().unwrap();
            if done(state) != (table == "completed-jobs-table") {
                continue;
            }
            let tasks: serde_json::Map<String, Value> = j["tasks"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, v)| k.as_str() != "total" && v.as_u64().unwrap_or(0) > 0)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            rows.push(json!({ "table": table, "jid": j["jid"], "name": j["name"], "state": state, "tasks": tasks }));
        }
    }
    rows
}

#[test]
fn job_lists_show_rest_jobs_and_keep_the_filter_across_refreshes() {
    let h = cluster("dashboard-jobs");
    let finished_a = h.submit("", &finite_job("dash-finished-a"));
    h.wait_job_state(&finished_a, "FINISHED", DEADLINE);
    let finished_b = h.submit("", &finite_job("dash-finished-b"));
    h.wait_job_state(&finished_b, "FINISHED", DEADLINE);
    let cancelled = start_running(&h, "dash-cancelled");
    let reply = h.patch(&format!("/jobs/{cancelled}?mode=cancel")).unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text);
    h.wait_job_state(&cancelled, "CANCELED", DEADLINE);
    let running = start_running(&h, "dash-running");

    let b = Browser::start(&h.home.join("browser"));
    let base = format!("http://127.0.0.1:{}/", h.rest_port);
    b.open(&format!("{base}#/jobs"));

    // Every job in its table with REST's name, state and task counts, newest first.
    let shown = h.wait_for("the job tables to match jobs/overview", DEADLINE, || {
        let expected = expected_rows(&h.get_ok("/jobs/overview"));
        (job_rows(&b) == expected).then_some(expected)
    });
    assert_eq!(shown.len(), 4, "{shown:?}");
    assert_eq!(jids_of(&shown, "running-jobs-table"), [running.as_str()]);
    assert_eq!(jids_of(&shown, "completed-jobs-table").len(), 3);
    assert_eq!(shown[0]["tasks"], json!({ "running": 1 }), "{shown:?}");
    assert_eq!(js_string(&b, "return document.getElementById('running-jobs-count').textContent"), "(1)");
    assert_eq!(js_string(&b, "return document.getElementById('completed-jobs-count').textContent"), "(3)");
    let states: Vec<String> = b
        .script("return [...document.querySelectorAll('#jobs-state-filter option')].map((o) => o.value)")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["", "CANCELED", "FINISHED", "RUNNING"]);
    b.screenshot("jobs-list");

    // The search box narrows both tables (case-insensitively, by name).
    b.click("#jobs-filter");
    b.type_into("#jobs-filter", "DASH-FINISHED");
    b.wait_for("the filtered rows", || {
        let rows = job_rows(&b);
        let mut completed = jids_of(&rows, "completed-jobs-table");
        completed.sort();
        let mut want = vec![finished_a.clone(), finished_b.clone()];
        want.sort();
        (jids_of(&rows, "running-jobs-table").is_empty() && completed == want).then_some(())
    });
    assert_eq!(js_string(&b, "return document.getElementById('running-jobs-count').textContent"), "(0 of 1)");
    assert_eq!(js_string(&b, "return document.getElementById('completed-jobs-count').textContent"), "(2 of 3)");
    assert!(b.url().ends_with("#/jobs?q=DASH-FINISHED"), "{}", b.url());

    // Two refreshes later the text, the focus and the very same rows are still there.
    b.script("document.querySelectorAll('#page-jobs tr[data-job-id]').forEach((r) => { r.kept = true; });");
    b.count_refreshes();
    b.wait_refreshes(2);
    assert_eq!(js_string(&b, "return document.getElementById('jobs-filter').value"), "DASH-FINISHED");
    assert_eq!(js_string(&b, "return document.activeElement.id"), "jobs-filter");
    let kept =
        b.script("return [...document.querySelectorAll('#page-jobs tr[data-job-id]')].map((r) => r.kept === true)");
    assert_eq!(kept, json!([true, true]), "rows were re-created by a refresh");
    // The caret stayed at the end: more typing extends the text.
    b.type_into("#jobs-filter", "-a");
    b.wait_for("one row", || {
        let rows = job_rows(&b);
        (rows.len() == 1 && rows[0]["jid"] == finished_a.as_str()).then_some(())
    });
    b.screenshot("jobs-list-filtered");

    // A job's name opens its page; back returns to the filtered list.
    b.click(&format!("#completed-jobs-table tr[data-job-id=\"{finished_a}\"] [data-col=name] a"));
    b.wait_for("the job page", || b.url().ends_with(&format!("#/jobs/{finished_a}")).then_some(()));
    b.wait_loaded();
    b.wait_text("#job-name", |t| t == "dash-finished-a");
    b.back();
    assert!(b.url().ends_with("#/jobs?q=DASH-FINISHED-a"), "{}", b.url());
    assert_eq!(js_string(&b, "return document.getElementById('jobs-filter').value"), "DASH-FINISHED-a");
    b.wait_for("the filtered list again", || {
        let rows = job_rows(&b);
        (rows.len() == 1 && rows[0]["jid"] == finished_a.as_str()).then_some(())
    });

    // The state filter, with the search box emptied.
    b.script(
        "const i = document.getElementById('jobs-filter'); i.value = ''; \
         i.dispatchEvent(new Event('input', { bubbles: true }));",
    );
    b.click("#jobs-state-filter option[value=\"CANCELED\"]");
    b.wait_for("only the cancelled job", || {
        let rows = job_rows(&b);
        (rows.len() == 1 && rows[0]["jid"] == cancelled.as_str() && rows[0]["state"] == "CANCELED").then_some(())
    });
    assert!(b.url().ends_with("#/jobs?state=CANCELED"), "{}", b.url());
    assert_eq!(js_string(&b, "return document.getElementById('running-jobs-count').textContent"), "(0 of 1)");
    assert_eq!(js_string(&b, "return document.getElementById('completed-jobs-count').textContent"), "(1 of 3)");
}

const PACKAGE_JOB: &str = "\
flint: 1
name: dash-package
operators:
  - { id: lines, op: source.file, path: \"${input}\" }
  - { id: sizes, op: map, inputs: [lines], fields: { k: \"len(line) % 3\", line: line } }
  - { id: counts, op: aggregate, inputs: [sizes], key: [k], aggs: { n: \"count()\" } }
  - { id: out, op: sink.blackhole, inputs: [counts] }
";

const FILE_JOB: &str = "\
flint: 1
name: dash-file
operators:
  - { id: numbers, op: source.sequence, from: 0, to: 99 }
  - { id: out, op: sink.blackhole, inputs: [numbers] }
";

/// Writes `bytes` as `name` under the test's home; returns the path.
fn write_file(home: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let dir = home.join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn jar_ids(h: &Harness) -> Vec<String> {
    h.get_ok("/jars")["files"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect()
}

fn table_jar_ids(b: &Browser) -> Vec<String> {
    b.script("return [...document.querySelectorAll('#jars-table tr[data-jar-id]')].map((r) => r.dataset.jarId)")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Uploads `path` through the page; waits until REST lists one more upload; returns its id.
fn upload_through_page(h: &Harness, b: &Browser, path: &Path) -> String {
    let before = jar_ids(h);
    b.type_into("#submit-file", path.to_str().unwrap());
    b.click("#submit-upload");
    let id = h.wait_for("the upload in REST jars", DEADLINE, || jar_ids(h).into_iter().find(|id| !before.contains(id)));
    b.wait_for("the upload in #jars-table", || table_jar_ids(b).contains(&id).then_some(()));
    b.wait_text("#notice", |t| t.contains(&id));
    id
}

/// Uploads a bad file through the page: the server's own refusal must be shown and
/// nothing stored.
fn refused_upload(h: &Harness, b: &Browser, name: &str, bytes: &[u8]) -> String {
    let expected = h.upload(name, bytes).unwrap();
    assert_eq!(expected.status, 400, "{}", expected.text);
    let reason = expected.body["errors"][0].as_str().unwrap().to_string();
    let before = jar_ids(h);
    let path = write_file(&h.home, name, bytes);
    b.type_into("#submit-file", path.to_str().unwrap());
    b.click("#submit-upload");
    let notice = b.wait_text("#notice", |t| t.contains(name) && t.contains(&reason));
    assert!(notice.contains("HTTP 400"), "{notice}");
    assert_eq!(js_string(b, "return document.getElementById('notice').className"), "notice notice-error");
    assert_eq!(jar_ids(h), before, "a refused upload changed /jars");
    reason
}

fn is_visible(b: &Browser, id: &str) -> bool {
    b.script(&format!("return !document.getElementById('{id}').hidden")) == json!(true)
}

#[test]
fn submit_page_uploads_plans_runs_and_deletes_packages() {
    let h = cluster("dashboard-submit");
    let a: String = (0..200).map(|i| format!("a-{i}\n")).collect();
    let b_lines: String = (0..300).map(|i| format!("bb-{i}\n")).collect();
    let package = zip_of(&[
        ("job.yaml", PACKAGE_JOB.as_bytes()),
        ("data/", b""),
        ("data/a.txt", a.as_bytes()),
        ("data/b.txt", b_lines.as_bytes()),
    ]);
    let package_path = write_file(&h.home, "dash-package.zip", &package);
    let file_path = write_file(&h.home, "dash-file.yaml", FILE_JOB.as_bytes());

    let b = Browser::start(&h.home.join("browser"));
    let base = format!("http://127.0.0.1:{}/", h.rest_port);
    b.open(&format!("{base}#/submit"));
    b.wait_text("#jars-table tbody", |t| t.contains("No job packages uploaded yet"));
    assert!(is_visible(&b, "submit-enabled") && !is_visible(&b, "submit-disabled"));

    // Two uploads: a package and a plain job file, listed newest first as REST lists them.
    let package_id = upload_through_page(&h, &b, &package_path);
    let file_id = upload_through_page(&h, &b, &file_path);
    assert!(package_id.ends_with("_dash-package.zip") && file_id.ends_with("_dash-file.yaml"));
    let listed = h.get_ok("/jars");
    b.wait_for("the list in REST's order", || (table_jar_ids(&b) == jar_ids(&h)).then_some(()));
    for f in listed["files"].as_array().unwrap() {
        let id = f["id"].as_str().unwrap();
        let cells = b.script(&format!(
            "const r = document.querySelector('#jars-table tr[data-jar-id=\"{id}\"]'); \
             return ['name', 'job-name', 'job-file'].map((c) => r.querySelector(`[data-col=${{c}}]`).textContent);"
        ));
        assert_eq!(cells, json!([f["name"], f["entry"][0]["description"], f["entry"][0]["name"]]), "{f}");
    }
    b.screenshot("submit-list");

    // Refused uploads show the server's reason and store nothing.
    let reason = refused_upload(&h, &b, "notes.txt", b"not a job");
    assert!(reason.contains("Only job packages"), "{reason}");
    b.screenshot("submit-error");
    let reason = refused_upload(&h, &b, "nojob.zip", &zip_of(&[("data/a.txt", b"x")]));
    assert!(reason.contains("no job file"), "{reason}");

    // Select the package; the typed values survive refreshes.
    b.click(&format!("#jars-table tr[data-jar-id=\"{package_id}\"] td[data-col=name]"));
    b.wait_for("the form", || is_visible(&b, "submit-form").then_some(()));
    b.wait_text("#submit-jar-name", |t| t == "dash-package.zip");
    b.type_into("#submit-parallelism", "2");
    b.type_into("#submit-args", "--input data/b.txt");
    b.count_refreshes();
    b.wait_refreshes(2);
    assert_eq!(js_string(&b, "return document.getElementById('submit-parallelism').value"), "2");
    assert_eq!(js_string(&b, "return document.getElementById('submit-args').value"), "--input data/b.txt");
    assert_eq!(js_string(&b, "return document.activeElement.id"), "submit-args");

    // Show Plan draws REST's plan for the same values.
    let plan = h
        .post_json(
            &format!("/jars/{package_id}/plan"),
            &json!({ "parallelism": 2, "programArgsList": ["--input", "data/b.txt"] }),
        )
        .unwrap();
    assert_eq!(plan.status, 200, "{}", plan.text);
    let nodes = plan.body["plan"]["nodes"].as_array().unwrap().clone();
    assert!(nodes.len() >= 2, "{}", plan.text);
    b.click("#submit-plan");
    b.wait_for("the plan's nodes", || {
        (b.script("return document.querySelectorAll('#submit-plan-graph g.plan-node').length").as_u64()?
            == nodes.len() as u64)
            .then_some(())
    });
    for node in &nodes {
        let text = b
            .script(&format!(
                "return document.querySelector('#submit-plan-graph g.plan-node[data-node-id=\"{}\"]').textContent",
                node["id"].as_str().unwrap()
            ))
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.contains(&format!("Parallelism {}", node["parallelism"])), "{text} for {node}");
    }
    let labels =
        b.script("return [...document.querySelectorAll('#submit-plan-graph .edge-label')].map((t) => t.textContent)");
    let mut want: Vec<Value> = nodes
        .iter()
        .flat_map(|n| n["inputs"].as_array().cloned().unwrap_or_default())
        .map(|i| i["ship_strategy"].clone())
        .collect();
    let mut got = labels.as_array().unwrap().clone();
    want.sort_by_key(|v| v.to_string());
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, want);
    b.screenshot("submit-plan");

    // Submit runs the job with that parallelism and argument, and opens its page.
    b.click("#submit-run");
    let jid = b.wait_for("the new job's page", || {
        let url = b.url();
        let jid = url.split("#/jobs/").nth(1)?.to_string();
        (jid.len() == 32).then_some(jid)
    });
    b.wait_loaded();
    let job = h.wait_job_state(&jid, "FINISHED", DEADLINE);
    assert_eq!(job["name"], "dash-package");
    for v in job["vertices"].as_array().unwrap() {
        assert_eq!(v["parallelism"], 2, "{v}");
    }
    let source = job["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().contains("lines"))
        .unwrap_or_else(|| panic!("no source vertex: {job}"));
    assert_eq!(source["metrics"]["write-records"], 300, "--input data/b.txt was read: {source}");
    b.wait_text("#job-name", |t| t == "dash-package");

    // Delete (confirmed in the dialog) removes the job file's upload.
    b.open(&format!("{base}#/submit"));
    b.click(&format!("#jars-table tr[data-jar-id=\"{file_id}\"] [data-jar-action=open]"));
    b.wait_text("#submit-jar-name", |t| t == "dash-file.yaml");
    b.click("#submit-delete");
    b.wait_for("the dialog", || {
        (b.script("return document.getElementById('confirm-dialog').open") == json!(true)).then_some(())
    });
    b.click("#confirm-ok");
    h.wait_for("the upload gone from REST", DEADLINE, || (jar_ids(&h) == [package_id.clone()]).then_some(()));
    b.wait_for("the row gone", || (table_jar_ids(&b) == [package_id.clone()]).then_some(()));
    assert!(!is_visible(&b, "submit-form"), "the form of a deleted upload stays open");
}

#[test]
fn submit_page_says_when_web_submission_is_disabled() {
    let mut h = Harness::new("dashboard-submit-off");
    h.set("web.submit.enable", "false");
    h.start_jobmanager("jobmanager");
    h.wait_for_overview("the jobmanager", DEADLINE, |_| true);
    let b = Browser::start(&h.home.join("browser"));
    b.open(&format!("http://127.0.0.1:{}/#/submit", h.rest_port));
    assert!(is_visible(&b, "submit-disabled"), "no disabled notice");
    assert!(!is_visible(&b, "submit-enabled"), "the upload form is shown");
    b.wait_text("#submit-disabled", |t| t.contains("disabled"));
}
