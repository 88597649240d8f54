//! The job page in a real browser (ChromeDriver driving headless Chromium) against a real
//! cluster: the walk from the overview to a job, its graph coloured by back-pressure, a
//! vertex and each of its detail tabs (checked against the REST API), browser back through
//! the tab routes; and the job actions (savepoint, cancel, stop with savepoint) confirmed in
//! the dialog and checked through REST and on disk.

use std::path::Path;
use std::time::Duration;

use flint_tests::browser::Browser;
use flint_tests::{all_running, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

/// A checkpointed job whose source is back-pressured: an unbounded sequence, a map that
/// counts its records (accumulator `users-seen`), a keyed running count (hash shuffle) and
/// a sink limited to 20,000 records per second.
fn backpressured_job(name: &str) -> Value {
    json!({
        "flint": 1, "name": name, "parallelism": 2,
        "operators": [
            { "id": "clicks", "op": "source.sequence", "from": 0, "parallelism": 1 },
            { "id": "users", "op": "map", "inputs": ["clicks"], "fields": { "user": "n % 100", "n": "n" },
              "counter": "users-seen" },
            { "id": "per-user", "op": "aggregate", "inputs": ["users"], "key": ["user"], "aggs": { "clicks": "count()" } },
            { "id": "slow-sink", "op": "sink.blackhole", "inputs": ["per-user"], "rate": 20000 } ] })
}

/// A job with event time: its windows emit watermarks, which the sink (its own vertex, at
/// parallelism 1) receives as its input watermark.
fn windowed_job(name: &str) -> Value {
    json!({
        "flint": 1, "name": name, "parallelism": 2,
        "operators": [
            { "id": "ticks", "op": "source.sequence", "from": 0, "rate": 2000, "parallelism": 1 },
            { "id": "stamped", "op": "map", "inputs": ["ticks"], "fields": { "k": "n % 10", "ts": "n" } },
            { "id": "per-second", "op": "window", "inputs": ["stamped"], "key": ["k"], "size": "1 s",
              "time": "event", "timestamp_field": "ts", "aggs": { "ticks": "count()" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["per-second"], "parallelism": 1 } ] })
}

/// A cluster with one task manager of 12 slots, checkpointing every second, savepoints and
/// checkpoints under the test's home.
fn cluster(name: &str) -> Harness {
    let mut h = Harness::new(name);
    let savepoints = format!("file://{}", h.home.join("savepoints").display());
    let checkpoints = format!("file://{}", h.home.join("checkpoints").display());
    h.set("execution.checkpointing.interval", "1 s");
    h.set("state.savepoints.dir", savepoints);
    h.set("state.checkpoints.dir", checkpoints);
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager", &["taskmanager.numberOfTaskSlots=12".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 12);
    h
}

fn start_job(h: &Harness, job: &Value) -> String {
    let jid = h.submit("", job);
    h.wait_for(&format!("job {jid} to run all its tasks"), DEADLINE, || all_running(&h.job(&jid)).then_some(()));
    jid
}

/// The id of the vertex whose name contains `part`.
fn vertex(job: &Value, part: &str) -> Value {
    job["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().contains(part))
        .unwrap_or_else(|| panic!("no vertex {part} in {job}"))
        .clone()
}

/// `js` returns a JSON-able value; `None` while it is null.
fn value(b: &Browser, js: &str) -> Option<Value> {
    Some(b.script(js)).filter(|v| !v.is_null())
}

/// A number as the page prints it (`12,345.5`, `87%`).
fn number(text: &str) -> f64 {
    text.trim_end_matches('%').replace(',', "").parse().unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

/// A screenshot of the vertex's details (scrolled to the top of the vertex section).
fn vertex_screenshot(b: &Browser, name: &str) {
    b.script("document.getElementById('vertex-section').scrollIntoView({ block: 'start' })");
    b.screenshot(name);
}

fn active_vertex_tab(b: &Browser) -> Option<String> {
    b.text_of("#vertex-tabs a.tab.active")
}

/// Clicks vertex tab `key` and waits until it is the shown route.
fn open_vertex_tab(b: &Browser, key: &str) {
    b.click(&format!("#vertex-tabs a[data-tab=\"{key}\"]"));
    b.wait_for(&format!("the {key} tab"), || {
        let shown = b.script(&format!(
            "return location.hash.endsWith('/{key}') && !document.getElementById('vertex-tab-{key}').hidden \
             && document.body.dataset.loaded === 'true'"
        ));
        (shown == Value::Bool(true)).then_some(())
    });
}

#[test]
fn job_page_walks_from_the_overview_through_the_vertex_tabs_and_shows_back_pressure() {
    let h = cluster("dashboard-job-walk");
    let jid = start_job(&h, &backpressured_job("clicks-per-user"));
    let windowed = start_job(&h, &windowed_job("windowed-ticks"));
    let job = h.job(&jid);
    let source = vertex(&job, "Source: clicks");
    let users = vertex(&job, "users");
    let sid = source["id"].as_str().unwrap().to_string();
    let uid = users["id"].as_str().unwrap().to_string();
    // The sink is rate-limited, so the source backs up; REST reports it as highly
    // back-pressured once its buffers are full.
    h.wait_for("the source to be back-pressured", DEADLINE, || {
        let bp = h.get_ok(&format!("/jobs/{jid}/vertices/{sid}/backpressure"));
        (bp["backpressure-level"] == "high").then_some(())
    });

    let base = format!("http://127.0.0.1:{}/", h.rest_port);
    let b = Browser::start(&h.home.join("chromium-profile"));
    b.open(&base);
    b.click(&format!("#jobs-table tr[data-job-id=\"{jid}\"] td.job-name a"));
    b.wait_text("#job-name", |t| t == "clicks-per-user");
    assert_eq!(b.text_of("#job-state").as_deref(), Some("RUNNING"));
    // Actions are offered for a running job.
    assert_eq!(b.script("return document.getElementById('job-actions').hidden"), Value::Bool(false));

    // The graph: the source node carries its back-pressure (max over subtasks, in %) and is
    // coloured by it; REST's level for it is high (ratio > 50 %).
    let node = format!("#job-graph g.vertex[data-vertex-id=\"{sid}\"]");
    let node_bp = b.wait_for("the source node's back-pressure", || {
        let v = value(&b, &format!("return document.querySelector('{node}')?.getAttribute('data-backpressured')"))?;
        let pct: u64 = v.as_str()?.parse().ok()?;
        (pct > 50).then_some(pct)
    });
    let level = h.get_ok(&format!("/jobs/{jid}/vertices/{sid}/backpressure"))["backpressure-level"].clone();
    assert_eq!(level, "high", "REST's level for the source");
    let text = b.text_of(&node).unwrap();
    assert!(text.contains("Backpressured (max):"), "{text}");
    assert!(text.contains("Busy (max):"), "{text}");
    let fill = b.script(&format!("return document.querySelector('{node} rect').style.fill"));
    assert!(fill.as_str().is_some_and(|f| !f.is_empty()), "the node is coloured by its load: {fill}");
    // The rate-limited sink is the busy one.
    let sink = vertex(&job, "slow-sink");
    let sink_node = format!("#job-graph g.vertex[data-vertex-id=\"{}\"]", sink["id"].as_str().unwrap());
    b.wait_for("the sink node's busy time", || {
        let v = value(&b, &format!("return document.querySelector('{sink_node}')?.getAttribute('data-busy')"))?;
        (v.as_str()?.parse::<u64>().ok()? > 50).then_some(())
    });
    println!("source back-pressured {node_bp}%");
    b.screenshot("job-graph-backpressure");

    // Click the `users` vertex in the graph: its subtasks show.
    b.click(&format!("#job-graph g.vertex[data-vertex-id=\"{uid}\"]"));
    b.wait_for("the vertex section", || {
        (b.script("return !document.getElementById('vertex-section').hidden") == Value::Bool(true)).then_some(())
    });
    assert_eq!(b.text_of("#vertex-name").as_deref(), Some("users"));
    assert_eq!(active_vertex_tab(&b).as_deref(), Some("Subtasks"));
    assert!(b.url().ends_with(&format!("#/jobs/{jid}/vertices/{uid}")), "{}", b.url());
    open_vertex_tab(&b, "subtasks");
    let detail = h.get_ok(&format!("/jobs/{jid}/vertices/{uid}"));
    let subtasks = detail["subtasks"].as_array().unwrap();
    assert_eq!(subtasks.len() as u64, users["parallelism"].as_u64().unwrap());
    let shown = b.wait_for("the subtasks with their back-pressure", || {
        let r = b.rows("subtasks-table", "data-subtask");
        (r.len() == subtasks.len() && r.iter().all(|(_, c)| c["backpressured"] != "–")).then_some(r)
    });
    for ((index, cells), rest) in shown.iter().zip(subtasks) {
        assert_eq!(index, &rest["subtask"].to_string());
        assert_eq!(cells["status"], "RUNNING");
        assert_eq!(cells["attempt"], rest["attempt"].to_string());
        // Busy + back-pressured + idle cover (about) the whole second; the subtask is
        // mostly back-pressured, as REST says.
        let (busy, bp, idle) = (
            number(cells["busy"].as_str().unwrap()),
            number(cells["backpressured"].as_str().unwrap()),
            number(cells["idle"].as_str().unwrap()),
        );
        assert!((90.0..=110.0).contains(&(busy + bp + idle)), "{cells:?}");
        assert!(bp > 50.0, "{cells:?}");
    }
    let tm = subtasks[0]["taskmanager-id"].as_str().unwrap();
    let link = b.script(
        "return document.querySelector('#subtasks-table tr[data-subtask=\"0\"] td[data-col=\"host\"] a').getAttribute('href')",
    );
    assert_eq!(link, Value::String(format!("#/taskmanagers/{tm}")));
    vertex_screenshot(&b, "vertex-subtasks");

    // TaskManagers: one row per task manager running the vertex, its tasks as REST counts.
    open_vertex_tab(&b, "taskmanagers");
    let tms = h.get_ok(&format!("/jobs/{jid}/vertices/{uid}/taskmanagers"))["taskmanagers"].clone();
    let tms = tms.as_array().unwrap();
    let shown = b.wait_for("the task managers", || {
        let r = b.rows("vertex-taskmanagers-table", "data-tm-id");
        (r.len() == tms.len()).then_some(r)
    });
    for ((id, cells), rest) in shown.iter().zip(tms) {
        assert_eq!(id, rest["taskmanager-id"].as_str().unwrap());
        assert_eq!(cells["id"], id.as_str());
        assert_eq!(cells["status"], "RUNNING");
        let running = rest["status-counts"]["RUNNING"].as_u64().unwrap();
        assert_eq!(running, users["parallelism"].as_u64().unwrap());
        assert!(cells["tasks"].as_str().unwrap().contains(&format!("{running} RUNNING")), "{cells:?}");
    }
    vertex_screenshot(&b, "vertex-taskmanagers");

    // Watermarks: this job has none (processing time): one row per subtask, "No Watermark".
    open_vertex_tab(&b, "watermarks");
    let marks = h.get_ok(&format!("/jobs/{jid}/vertices/{uid}/watermarks"));
    let marks = marks.as_array().unwrap();
    assert_eq!(marks.len(), subtasks.len(), "{marks:?}");
    let shown = b.wait_for("the watermarks", || {
        let r = b.rows("watermarks-table", "data-subtask");
        (r.len() == marks.len()).then_some(r)
    });
    for (m, (index, cells)) in marks.iter().zip(&shown) {
        assert_eq!(m["id"].as_str().unwrap(), format!("{index}.currentInputWatermark"));
        assert_eq!(m["value"], i64::MIN.to_string());
        assert_eq!(cells["watermark"], "No Watermark");
    }

    // Accumulators: the map's counter, summed and per subtask, growing between two reads.
    open_vertex_tab(&b, "accumulators");
    let before = h.get_ok(&format!("/jobs/{jid}/vertices/{uid}/accumulators"));
    let shown = b.wait_for("the accumulator", || {
        let r = b.rows("accumulators-table", "data-name");
        (r.len() == 1).then_some(r)
    });
    let after = h.get_ok(&format!("/jobs/{jid}/vertices/{uid}/accumulators"));
    let acc = |v: &Value| v["user-accumulators"][0]["value"].as_str().unwrap().parse::<f64>().unwrap();
    assert_eq!(shown[0].0, "users-seen");
    assert_eq!(before["user-accumulators"][0]["name"], "users-seen");
    assert_eq!(shown[0].1["type"], "Long");
    let ui = number(shown[0].1["value"].as_str().unwrap());
    // The page may have read it just before our first read.
    assert!(ui > 0.0 && ui <= acc(&after), "{ui} within (0, {}]", acc(&after));
    assert!(acc(&before) <= acc(&after));
    let per_subtask = b.wait_for("the subtask accumulators", || {
        let r = b.rows("subtask-accumulators-table", "data-subtask");
        (r.len() == subtasks.len()).then_some(r)
    });
    for (index, cells) in &per_subtask {
        assert_eq!(cells["name"], "users-seen", "subtask {index}: {cells:?}");
        assert!(number(cells["value"].as_str().unwrap()) > 0.0, "{cells:?}");
    }
    vertex_screenshot(&b, "vertex-accumulators");

    // BackPressure: REST's level, and one row per subtask with its level.
    open_vertex_tab(&b, "backpressure");
    let bp = h.get_ok(&format!("/jobs/{jid}/vertices/{uid}/backpressure"));
    assert_eq!(bp["backpressure-level"], "high", "{bp}");
    b.wait_text("#backpressure-level", |t| t == "HIGH");
    let shown = b.wait_for("the per-subtask back-pressure", || {
        let r = b.rows("backpressure-table", "data-subtask");
        (r.len() == subtasks.len()).then_some(r)
    });
    for (index, cells) in &shown {
        let rest =
            bp["subtasks"].as_array().unwrap().iter().find(|s| s["subtask"].as_u64() == index.parse().ok()).unwrap();
        assert_eq!(cells["level"], rest["backpressure-level"].as_str().unwrap().to_uppercase());
        assert!(number(cells["backpressured"].as_str().unwrap()) > 50.0, "{cells:?}");
    }
    assert_eq!(b.text_of("#backpressure-status").as_deref(), Some("ok"));
    vertex_screenshot(&b, "vertex-backpressure");

    // Metrics: the list is REST's; picking one draws a chart fed by `metrics?get=`.
    open_vertex_tab(&b, "metrics");
    let names = h.get_ok(&format!("/jobs/{jid}/vertices/{uid}/metrics"));
    let names: Vec<&str> = names.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    let metric = "0.numRecordsOut";
    assert!(names.contains(&metric), "{names:?}");
    b.wait_for("the metric list", || {
        let n = b.script("return document.getElementById('metric-picker').options.length").as_u64()?;
        (n as usize == names.len()).then_some(())
    });
    b.click(&format!("#metric-picker option[value=\"{metric}\"]"));
    b.click("#metric-add");
    let chart = format!("#metric-charts .metric-chart[data-metric=\"{metric}\"]");
    let get = format!("/jobs/{jid}/vertices/{uid}/metrics?get={metric}");
    let rest_value = |v: Value| v[0]["value"].as_str().unwrap().parse::<f64>().unwrap();
    let low = rest_value(h.get_ok(&get));
    // A later refresh than our read: the chart has grown by a point.
    let points = b.wait_for("the chart's second point", || {
        value(&b, &format!("return document.querySelector('{chart} canvas') ? true : null"))?;
        let text = b.text_of(&format!("{chart} .metric-value"))?;
        let shown = text.replace(',', "").parse::<f64>().ok()?;
        (shown > low).then_some(shown)
    });
    assert!(points <= rest_value(h.get_ok(&get)), "the chart shows REST's value");
    let in_picker = b.script(&format!("return document.querySelector('#metric-picker option[value=\"{metric}\"]')"));
    assert_eq!(in_picker, Value::Null, "a shown metric leaves the picker");
    vertex_screenshot(&b, "vertex-metrics");
    // The chosen metric survives a route change within the vertex.
    open_vertex_tab(&b, "subtasks");
    open_vertex_tab(&b, "metrics");
    b.wait_for("the chart to come back", || b.text_of(&format!("{chart} .metric-name")).filter(|t| t == metric));

    // Browser back walks the tab routes, then the job, then the overview.
    for expected in ["Subtasks", "Metrics", "BackPressure", "Accumulators", "Watermarks", "TaskManagers", "Subtasks"] {
        b.back();
        b.wait_for(&format!("the {expected} tab after going back"), || {
            active_vertex_tab(&b).filter(|t| t == expected).and_then(|_| {
                let shown = b
                    .script("return document.querySelector('#vertex-section .vertex-tab:not([hidden])')?.dataset.vtab");
                (shown.as_str()? == expected.to_lowercase()).then_some(())
            })
        });
    }
    // ... the vertex as the graph click opened it (its default tab), then the job.
    b.back();
    b.wait_for("the vertex route", || b.url().ends_with(&format!("#/jobs/{jid}/vertices/{uid}")).then_some(()));
    b.wait_for("the default tab", || active_vertex_tab(&b).filter(|t| t == "Subtasks"));
    b.back();
    b.wait_for("the job route", || b.url().ends_with(&format!("#/jobs/{jid}")).then_some(()));
    b.wait_for("the vertex section to close", || {
        (b.script("return document.getElementById('vertex-section').hidden") == Value::Bool(true)).then_some(())
    });
    b.wait_text("#job-name", |t| t == "clicks-per-user");
    b.back();
    b.wait_for("the overview", || {
        (b.script(
            "return !document.getElementById('page-overview').hidden && document.getElementById('page-job').hidden",
        ) == Value::Bool(true))
        .then_some(())
    });

    // A deep link to the watermarks of the windowed job's sink: its input watermark, which
    // only grows, lies between two REST reads around the page's.
    let wjob = h.job(&windowed);
    let wsink = vertex(&wjob, "Sink: out");
    let wsid = wsink["id"].as_str().unwrap();
    let read = || -> i64 {
        let m = h.get_ok(&format!("/jobs/{windowed}/vertices/{wsid}/watermarks"));
        m[0]["value"].as_str().unwrap().parse().unwrap()
    };
    h.wait_for("the sink's first watermark", DEADLINE, || (read() > i64::MIN).then_some(()));
    let low = read();
    b.open(&format!("{base}#/jobs/{windowed}/vertices/{wsid}/watermarks"));
    let shown = b.wait_for("the sink's watermark", || {
        let r = b.rows("watermarks-table", "data-subtask");
        let text = r.first()?.1.get("watermark")?.as_str()?.to_string();
        text.parse::<i64>().ok()
    });
    let high = read();
    assert!(low <= shown && shown <= high, "{low} <= {shown} <= {high}");
    let low_text = b.text_of("#low-watermark").unwrap();
    assert!(low_text.starts_with(|c: char| c.is_ascii_digit()), "{low_text}");
    vertex_screenshot(&b, "vertex-watermarks");
}

/// Polls the notice until it reports the end of an action (`done` in its text).
fn wait_notice(b: &Browser, done: &str) -> String {
    b.wait_text("#notice", |t| t.contains(done) || t.contains("failed"))
}

/// The path at the end of a notice (`... completed: /path`).
fn path_of(notice: &str) -> String {
    notice.rsplit(": ").next().unwrap().trim().to_string()
}

#[test]
fn job_actions_take_a_savepoint_cancel_and_stop_with_a_savepoint_after_confirmation() {
    let h = cluster("dashboard-job-actions");
    let jid = start_job(&h, &backpressured_job("to-cancel"));
    let stoppable = start_job(&h, &windowed_job("to-stop"));
    let base = format!("http://127.0.0.1:{}/", h.rest_port);
    let mut b = Browser::start(&h.home.join("chromium-profile"));
    b.deadline = Duration::from_secs(45);

    // Trigger Savepoint into the configured directory, confirmed in the dialog.
    b.open(&format!("{base}#/jobs/{jid}"));
    b.wait_text("#job-name", |t| t == "to-cancel");
    b.click("#job-savepoint");
    b.wait_text("#confirm-title", |t| t == "Trigger Savepoint");
    b.click("#confirm-ok");
    let notice = wait_notice(&b, "completed:");
    assert!(notice.contains("completed:"), "{notice}");
    let location = path_of(&notice);
    let on_disk = location.trim_start_matches("file:");
    assert!(Path::new(on_disk).is_dir(), "the savepoint {location} is not on disk");
    assert!(Path::new(on_disk).starts_with(h.home.join("savepoints")), "{location} under state.savepoints.dir");
    let stats = h.get_ok(&format!("/jobs/{jid}/checkpoints"));
    let savepoint = &stats["latest"]["savepoint"];
    assert_eq!(savepoint["is_savepoint"], true, "{stats}");
    assert_eq!(savepoint["status"], "COMPLETED", "{savepoint}");
    assert_eq!(savepoint["external_path"].as_str().map(|p| p.trim_start_matches("file:")), Some(on_disk));
    let id = &savepoint["id"];
    let history = stats["history"].as_array().unwrap();
    assert!(history.iter().any(|c| c["id"] == *id && c["is_savepoint"] == true), "not in the history: {stats}");
    b.screenshot("job-savepoint-done");

    // Cancel, then the dialog's Cancel: nothing happens.
    b.click("#job-cancel");
    b.wait_text("#confirm-title", |t| t == "Cancel Job");
    b.click("#confirm-cancel");
    b.wait_for("the dialog to close", || {
        (b.script("return document.getElementById('confirm-dialog').open") == Value::Bool(false)).then_some(())
    });

    // Stop with Savepoint on the second job, into a directory typed in the input.
    let target = h.home.join("stop-savepoints");
    b.open(&format!("{base}#/jobs/{stoppable}"));
    b.wait_text("#job-name", |t| t == "to-stop");
    b.type_into("#savepoint-dir", &format!("file://{}", target.display()));
    b.click("#job-stop");
    b.wait_text("#confirm-message", |t| t.contains(&target.display().to_string()));
    b.click("#confirm-ok");
    let notice = wait_notice(&b, "stopped with a savepoint:");
    assert!(notice.contains("stopped with a savepoint:"), "{notice}");
    let location = path_of(&notice);
    let on_disk = location.trim_start_matches("file:");
    assert!(Path::new(on_disk).is_dir(), "the savepoint {location} is not on disk");
    assert!(Path::new(on_disk).starts_with(&target), "{location} under {}", target.display());
    h.wait_job_state(&stoppable, "FINISHED", DEADLINE);
    b.wait_for("the actions to go away", || {
        (b.script("return document.getElementById('job-actions').hidden") == Value::Bool(true)).then_some(())
    });

    // The dismissed cancel left the first job running; confirming cancels it.
    assert_eq!(h.job(&jid)["state"], "RUNNING", "a dismissed dialog cancelled the job");
    b.open(&format!("{base}#/jobs/{jid}"));
    b.wait_text("#job-name", |t| t == "to-cancel");
    b.click("#job-cancel");
    b.wait_text("#confirm-title", |t| t == "Cancel Job");
    b.click("#confirm-ok");
    let notice = b.wait_text("#notice", |t| t.contains("Cancelling") || t.contains("Could not"));
    assert!(notice.contains(&jid), "{notice}");
    h.wait_job_state(&jid, "CANCELED", DEADLINE);
    b.wait_text("#job-state", |t| t == "CANCELED");
}
