//! The Task Managers and Job Manager pages in a real browser (ChromeDriver driving headless
//! Chromium) against a real cluster of a jobmanager and two task managers with different
//! slot counts, one of them running a job: every figure the pages show is compared with the
//! REST API's answer, from the list through a task manager's tabs (metrics, logs, a log
//! file, stdout, thread dump) to the job manager's (metrics, configuration with its filter,
//! logs, stdout, environment).

use std::collections::BTreeSet;
use std::time::Duration;

use flint_tests::browser::Browser;
use flint_tests::{all_running, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

/// A running job whose rate-limited sink keeps it running (and its slots allocated).
fn running_job(name: &str) -> Value {
    json!({
        "flint": 1, "name": name, "parallelism": 2,
        "operators": [
            { "id": "clicks", "op": "source.sequence", "from": 0, "parallelism": 1 },
            { "id": "users", "op": "map", "inputs": ["clicks"], "fields": { "user": "n % 100", "n": "n" } },
            { "id": "per-user", "op": "aggregate", "inputs": ["users"], "key": ["user"], "aggs": { "clicks": "count()" } },
            { "id": "slow-sink", "op": "sink.blackhole", "inputs": ["per-user"], "rate": 20000 } ] })
}

/// Bytes as the dashboard prints them (`Flint.formatBytes`: 128 MiB, 64.0 MiB, 1.5 GiB).
fn format_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v >= 100.0 {
        format!("{v:.0} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// A REST text answer (logs, stdout).
fn text(h: &Harness, path: &str) -> String {
    let reply = h.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.text);
    reply.text
}

/// The first non-empty line of `text` (stable while a log grows).
fn first_line(text: &str) -> String {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or_else(|| panic!("an empty text")).to_string()
}

/// The text of the viewer once it loaded the view `key`.
fn viewer_text(b: &Browser, key: &str) -> String {
    b.wait_for(&format!("the viewer to load {key}"), || {
        let v = b.script(&format!(
            "const p = document.getElementById('log-text'); \
             return p && p.dataset.loaded === '{key}' && p.offsetParent !== null ? p.textContent : null"
        ));
        v.as_str().map(str::to_string)
    })
}

fn click_tab(b: &Browser, bar: &str, key: &str) {
    b.click(&format!("#{bar} a[data-tab=\"{key}\"]"));
    b.wait_for(&format!("the {key} tab"), || {
        let shown = b.script(&format!(
            "return document.querySelector('#{bar} a.tab.active')?.dataset.tab === '{key}' \
             && document.body.dataset.loaded === 'true'"
        ));
        (shown == Value::Bool(true)).then_some(())
    });
}

fn samples(b: &Browser, chart: &str) -> u64 {
    b.script(&format!("return Number(document.getElementById('{chart}')?.dataset.samples || 0)")).as_u64().unwrap_or(0)
}

fn log_names(answer: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        answer["logs"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

fn thread_names(dump: &Value) -> BTreeSet<String> {
    dump["threadInfos"].as_array().unwrap().iter().map(|t| t["threadName"].as_str().unwrap().to_string()).collect()
}

#[test]
fn task_manager_and_job_manager_pages_match_the_rest_api() {
    let mut h = Harness::new("dashboard-cluster-pages");
    h.set("web.refresh-interval", 500);
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-a", &["taskmanager.numberOfTaskSlots=3".into()]);
    h.start_taskmanager("taskmanager-b", &["taskmanager.numberOfTaskSlots=5".into()]);
    h.wait_for_overview("both task managers", DEADLINE, |o| o["taskmanagers"] == 2 && o["slots-total"] == 8);
    let jid = h.submit("", &running_job("cluster-pages-clicks"));
    h.wait_for(&format!("job {jid} to run all its tasks"), DEADLINE, || all_running(&h.job(&jid)).then_some(()));

    let base = format!("http://127.0.0.1:{}/", h.rest_port);
    let b = Browser::start(&h.home.join("chromium-profile"));
    b.open(&base);

    // ---- The list: one row per task manager, as REST lists them.
    b.click("a[data-nav=\"taskmanagers\"]");
    let tms = h.get_ok("/taskmanagers")["taskmanagers"].as_array().unwrap().clone();
    let shown = b.wait_for("the task manager rows", || {
        let r = b.rows("tm-list-table", "data-tm-id");
        (r.len() == tms.len()).then_some(r)
    });
    assert_eq!(
        shown.iter().map(|(id, _)| id.clone()).collect::<BTreeSet<_>>(),
        tms.iter().map(|t| t["id"].as_str().unwrap().to_string()).collect::<BTreeSet<_>>()
    );
    for tm in &tms {
        let id = tm["id"].as_str().unwrap();
        let cells = &shown.iter().find(|(i, _)| i == id).unwrap().1;
        assert_eq!(cells["id"], id);
        assert_eq!(cells["slots"], tm["slotsNumber"].to_string(), "{id}");
        assert_eq!(cells["free-slots"], tm["freeSlots"].to_string(), "{id}");
        assert_eq!(cells["cpu-cores"], tm["hardware"]["cpuCores"].to_string(), "{id}");
        assert_eq!(cells["data-port"], tm["dataPort"].to_string(), "{id}");
        assert_eq!(cells["physical-memory"], format_bytes(tm["hardware"]["physicalMemory"].as_u64().unwrap()));
    }
    let slot_counts: BTreeSet<u64> = tms.iter().map(|t| t["slotsNumber"].as_u64().unwrap()).collect();
    assert_eq!(slot_counts, BTreeSet::from([3, 5]));
    b.screenshot("taskmanagers");

    // ---- A task manager running the job: its slots, the job's link, its memory.
    let busy = tms
        .iter()
        .find(|t| t["freeSlots"].as_u64() < t["slotsNumber"].as_u64())
        .unwrap_or_else(|| panic!("no task manager runs the job: {tms:?}"));
    let id = busy["id"].as_str().unwrap().to_string();
    b.click(&format!("#tm-list-table tr[data-tm-id=\"{id}\"] td[data-col=\"id\"] a"));
    b.wait_text("#tm-id", |t| t == id);
    let detail = h.get_ok(&format!("/taskmanagers/{id}"));
    let (slot_count, free_slots) = (detail["slotsNumber"].to_string(), detail["freeSlots"].to_string());
    b.wait_text("#tm-card-slots", |t| t == slot_count);
    b.wait_text("#tm-card-free-slots", |t| t == free_slots);
    let allocated = detail["allocatedSlots"].as_array().unwrap();
    assert!(!allocated.is_empty(), "{detail}");
    let slots = b.wait_for("the allocated slots", || {
        let r = b.rows("tm-slots-table", "data-slot");
        (r.len() == allocated.len()).then_some(r)
    });
    for ((_, cells), rest) in slots.iter().zip(allocated) {
        assert_eq!(cells["job"], rest["jobId"].as_str().unwrap());
        assert_eq!(cells["job"], jid);
    }
    let href = b.script("return document.querySelector('#tm-slots-table td[data-col=\"job\"] a').getAttribute('href')");
    assert_eq!(href, Value::String(format!("#/jobs/{jid}")));
    let memory = &detail["memoryConfiguration"];
    for (key, field) in
        [("managed", "managedMemory"), ("network", "networkMemory"), ("total-flink", "totalFlinkMemory")]
    {
        let shown = b.text_of(&format!("#tm-memory-table tr[data-key=\"{key}\"] td[data-col=\"v0\"]")).unwrap();
        assert_eq!(shown, format_bytes(memory[field].as_u64().unwrap()), "{key}");
    }
    let heap = b.text_of("#tm-jvm-table tr[data-key=\"heap\"] td[data-col=\"v2\"]").unwrap();
    assert_eq!(heap, format_bytes(detail["metrics"]["heapMax"].as_u64().unwrap()));
    // The charts grow by one sample per refresh.
    b.wait_for("two samples in the charts", || {
        (samples(&b, "tm-chart-cpu") > 1 && samples(&b, "tm-chart-memory") > 1).then_some(())
    });
    // Once reported, the cards show the metrics too.
    assert_ne!(b.text_of("#tm-card-cpu-load").as_deref(), Some("–"));
    assert_ne!(b.text_of("#tm-card-threads").as_deref(), Some("–"));
    b.screenshot("taskmanager-metrics");

    // ---- Logs: the list as REST has it; one log file opens as text.
    click_tab(&b, "tm-tabs", "logs");
    let logs = h.get_ok(&format!("/taskmanagers/{id}/logs"));
    let names = log_names(&logs);
    assert!(names.iter().any(|n| n == "jobmanager.log"), "{names:?}");
    b.wait_for("the log files", || {
        let r = b.rows("tm-logs-table", "data-name");
        (r.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>() == names).then_some(())
    });
    b.screenshot("taskmanager-logs");
    b.click("#tm-logs-table tr[data-name=\"taskmanager-a.log\"] td[data-col=\"name\"] a");
    let shown = viewer_text(&b, &format!("tm:{id}:logs:taskmanager-a.log"));
    let line = first_line(&text(&h, &format!("/taskmanagers/{id}/logs/taskmanager-a.log")));
    assert!(shown.contains(&line), "the viewer lacks {line:?}");
    assert!(b.url().ends_with("/logs/taskmanager-a.log"), "{}", b.url());
    b.screenshot("taskmanager-log-view");

    // ---- Log, Stdout, Thread Dump.
    click_tab(&b, "tm-tabs", "log");
    let shown = viewer_text(&b, &format!("tm:{id}:log"));
    let line = first_line(&text(&h, &format!("/taskmanagers/{id}/log")));
    assert!(shown.contains(&line), "the log view lacks {line:?}");
    click_tab(&b, "tm-tabs", "stdout");
    let shown = viewer_text(&b, &format!("tm:{id}:stdout"));
    let stdout = text(&h, &format!("/taskmanagers/{id}/stdout"));
    if stdout.trim().is_empty() {
        assert_eq!(shown, "");
    } else {
        assert!(shown.contains(&first_line(&stdout)), "{shown}");
    }
    b.screenshot("taskmanager-stdout");
    let before = thread_names(&h.get_ok(&format!("/taskmanagers/{id}/thread-dump")));
    click_tab(&b, "tm-tabs", "thread-dump");
    let shown = viewer_text(&b, &format!("tm:{id}:thread-dump"));
    let after = thread_names(&h.get_ok(&format!("/taskmanagers/{id}/thread-dump")));
    let stable: Vec<&String> = before.intersection(&after).collect();
    assert!(!stable.is_empty(), "{before:?} {after:?}");
    for name in stable {
        assert!(shown.contains(&format!("\"{name}\"")), "thread {name} missing from the dump");
    }
    b.screenshot("taskmanager-thread-dump");
    // Back: the Stdout tab again.
    b.back();
    b.wait_for("the stdout tab after back", || {
        (b.url().ends_with("/stdout") && b.text_of("#tm-tabs a.tab.active").as_deref() == Some("Stdout")).then_some(())
    });
    // The vertex page links task managers with the raw id: that route works too.
    b.open(&format!("{base}#/taskmanagers/{id}/metrics"));
    b.wait_text("#tm-id", |t| t == id);
    b.wait_text("#tm-card-slots", |t| t == slot_count);

    // ---- The job manager: metrics.
    b.click("a[data-nav=\"jobmanager\"]");
    b.wait_text("#jm-card-taskmanagers", |t| t == "2");
    b.wait_text("#jm-card-slots-total", |t| t == "8");
    b.wait_for("two samples in the job manager's charts", || {
        (samples(&b, "jm-chart-cpu") > 1 && samples(&b, "jm-chart-memory") > 1).then_some(())
    });
    b.screenshot("jobmanager-metrics");

    // Configuration: every entry, `rest.port` as configured; the filter narrows the rows
    // and stays through refreshes.
    click_tab(&b, "jm-tabs", "config");
    let config = h.get_ok("/jobmanager/config").as_array().unwrap().clone();
    let entries = b.wait_for("the configuration", || {
        let r = b.rows("jm-config-table", "data-key");
        (r.len() == config.len()).then_some(r)
    });
    let port = &entries.iter().find(|(k, _)| k == "rest.port").expect("rest.port shown").1;
    assert_eq!(port["value"], h.rest_port.to_string());
    b.count_refreshes();
    b.type_into("#jm-config-filter", "rest.");
    let narrowed = b.wait_for("the filtered configuration", || {
        let r = b.rows("jm-config-table", "data-key");
        (!r.is_empty() && r.len() < config.len()).then_some(r)
    });
    assert!(narrowed.iter().all(|(k, c)| k.contains("rest.") || c["value"].as_str().unwrap().contains("rest.")));
    assert!(narrowed.iter().any(|(k, _)| k == "rest.port"));
    b.wait_refreshes(3);
    assert_eq!(b.script("return document.getElementById('jm-config-filter').value"), Value::String("rest.".into()));
    assert_eq!(b.rows("jm-config-table", "data-key").len(), narrowed.len());
    b.screenshot("jobmanager-config");

    // Logs and a log file.
    click_tab(&b, "jm-tabs", "logs");
    let names = log_names(&h.get_ok("/jobmanager/logs"));
    b.wait_for("the job manager's log files", || {
        let r = b.rows("jm-logs-table", "data-name");
        (r.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>() == names).then_some(())
    });
    b.screenshot("jobmanager-logs");
    b.click("#jm-logs-table tr[data-name=\"jobmanager.log\"] td[data-col=\"name\"] a");
    let shown = viewer_text(&b, "jm:logs:jobmanager.log");
    let line = first_line(&text(&h, "/jobmanager/logs/jobmanager.log"));
    assert!(shown.contains(&line), "the viewer lacks {line:?}");
    // Reload keeps the viewer's scroll position (the box is made small so that it scrolls).
    let scrolled = b.script(
        "const p = document.getElementById('log-text'); p.style.maxHeight = '60px'; p.scrollTop = 40; return p.scrollTop",
    );
    assert_eq!(scrolled, json!(40), "the log is too short to scroll");
    let loads = b.script("return Number(document.getElementById('log-text').dataset.loads)");
    b.click("#log-reload");
    b.wait_for("the reload", || {
        let now = b.script("return Number(document.getElementById('log-text').dataset.loads)");
        (now.as_u64() > loads.as_u64()).then_some(())
    });
    assert_eq!(b.script("return document.getElementById('log-text').scrollTop"), json!(40));
    b.script("document.getElementById('log-text').style.maxHeight = ''");

    // Stdout and Environment.
    click_tab(&b, "jm-tabs", "stdout");
    let shown = viewer_text(&b, "jm:stdout");
    let stdout = text(&h, "/jobmanager/stdout");
    if stdout.trim().is_empty() {
        assert_eq!(shown, "");
    } else {
        assert!(shown.contains(&first_line(&stdout)), "{shown}");
    }
    b.screenshot("jobmanager-stdout");
    click_tab(&b, "jm-tabs", "environment");
    let env = h.get_ok("/jobmanager/environment");
    b.wait_text("#jm-environment-table tr[data-key=\"version\"] td", |t| t == env["jvm"]["version"].as_str().unwrap());
    let options: Vec<String> =
        env["jvm"]["options"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().into()).collect();
    let shown = b.script(
        "return [...document.querySelectorAll('#jm-jvm-options li:not(.placeholder)')].map(l => l.textContent)",
    );
    assert_eq!(shown, json!(options));
    b.screenshot("jobmanager-environment");
}
