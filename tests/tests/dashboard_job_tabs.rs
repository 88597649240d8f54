//! The job page's tabs in a real browser: Timeline, Exceptions, Checkpoints and
//! Configuration (`pages/job_tabs.js`). One cluster runs a checkpointed job with a keyed
//! shuffle, a job that restarts once and then finishes, and a job that fails on a missing
//! input file. Each tab is deep-linked (`#/jobs/<id>/<tab>`), rendered by headless Chromium
//! and checked against the REST answers it is drawn from; the clicks (a vertex's subtasks, an
//! exception's stack trace, a checkpoint's vertices and subtasks, the checkpoint sub-tabs) go
//! through WebDriver. Every state is saved as a screenshot under `target/tmp/dashboard/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flint_tests::browser::{render, row, screenshot, Browser};
use flint_tests::{all_running, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

/// The attributes of every start tag of `html` that begins with `start` (e.g. `<rect class="bar"`).
fn tags<'a>(html: &'a str, start: &str) -> Vec<BTreeMap<&'a str, &'a str>> {
    html.match_indices(start)
        .map(|(at, _)| {
            let tag = &html[at..at + html[at..].find('>').expect("an end of the tag")];
            let mut rest = tag.split_once(' ').map_or("", |(_, r)| r);
            let mut attrs = BTreeMap::new();
            while let Some(eq) = rest.find("=\"") {
                let name = rest[..eq].trim();
                let after = &rest[eq + 2..];
                let end = after.find('"').expect("a closing quote");
                attrs.insert(name, &after[..end]);
                rest = &after[end + 1..];
            }
            attrs
        })
        .collect()
}

/// `text` as Chromium serializes a text node (`&`, `<`, `>` escaped).
fn html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn num(v: &Value) -> String {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}")).to_string()
}

/// The text between `marker` and the next `<`.
fn text_after<'a>(dom: &'a str, marker: &str) -> &'a str {
    let at = dom.find(marker).unwrap_or_else(|| panic!("no {marker} in:\n{dom}")) + marker.len();
    &dom[at..at + dom[at..].find('<').unwrap()]
}

struct Cluster {
    h: Harness,
    render_profile: PathBuf,
    base: String,
    running: String,
    finished: String,
    failed: String,
}

impl Cluster {
    fn start() -> Cluster {
        let mut h = Harness::new("dashboard-job-tabs");
        let checkpoints = h.home.join("checkpoints");
        h.set("execution.checkpointing.interval", "1 s");
        h.set("state.checkpoints.dir", format!("file://{}", checkpoints.display()));
        h.start_jobmanager("jobmanager");
        h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=6".into()]);
        h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 6);

        // Fails at once: its input does not exist (not retryable).
        let missing = h.home.join("no-such-input.txt");
        let failed = h.submit(
            "",
            &json!({ "flint": 1, "name": "tabs-failing", "parallelism": 1, "operators": [
                { "id": "lines", "op": "source.file", "path": missing.display().to_string() },
                { "id": "out", "op": "sink.blackhole", "inputs": ["lines"] } ] }),
        );
        h.wait_for("the failing job to fail", DEADLINE, || (h.job(&failed)["state"] == "FAILED").then_some(()));

        // Subtask 1 of `boom` fails once; the job restarts every subtask and then finishes.
        let finished = h.submit(
            "",
            &json!({ "flint": 1, "name": "tabs-restarted", "parallelism": 2,
                "config": { "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": "2",
                            "restart-strategy.fixed-delay.delay": "200 ms" },
                "operators": [
                { "id": "numbers", "op": "source.sequence", "from": 0, "to": 199999, "parallelism": 1 },
                { "id": "boom", "op": "fail", "inputs": ["numbers"], "subtask": 1, "after": 1000 },
                { "id": "keys", "op": "map", "inputs": ["boom"], "fields": { "k": "n % 5", "n": "n" } },
                { "id": "sums", "op": "aggregate", "inputs": ["keys"], "key": ["k"], "aggs": { "total": "sum(n)" } },
                { "id": "out", "op": "sink.blackhole", "inputs": ["sums"] } ] }),
        );
        h.wait_job_state(&finished, "FINISHED", DEADLINE);

        // Checkpointed, with a keyed shuffle; runs until the test ends.
        let running = h.submit(
            "",
            &json!({ "flint": 1, "name": "tabs-running", "parallelism": 2, "operators": [
                { "id": "clicks", "op": "source.sequence", "from": 0, "rate": 5000, "parallelism": 1 },
                { "id": "users", "op": "map", "inputs": ["clicks"], "fields": { "user": "n % 100", "n": "n" } },
                { "id": "per-user", "op": "aggregate", "inputs": ["users"], "key": ["user"], "aggs": { "clicks": "count()" } },
                { "id": "out", "op": "sink.blackhole", "inputs": ["per-user"] } ] }),
        );
        h.wait_for("the checkpointed job to run every subtask", DEADLINE, || {
            all_running(&h.job(&running)).then_some(())
        });
        h.wait_for("two completed checkpoints", DEADLINE, || {
            let stats = h.get_ok(&format!("/jobs/{running}/checkpoints"));
            (stats["counts"]["completed"].as_u64() >= Some(2)).then_some(())
        });

        let render_profile = h.home.join("chromium-render");
        let base = format!("http://127.0.0.1:{}/", h.rest_port);
        Cluster { h, render_profile, base, running, finished, failed }
    }

    fn url(&self, jid: &str, tab: &str) -> String {
        format!("{}#/jobs/{jid}/{tab}", self.base)
    }

    /// Renders `url` until the page is loaded and `ok` holds for its DOM.
    fn render_until(&self, url: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let dom = render(url, &self.render_profile);
            if dom.contains(r#"data-loaded="true""#) && ok(&dom) {
                return dom;
            }
            if Instant::now() >= until {
                self.h.dump_logs();
                panic!("{what} not rendered within {DEADLINE:?}; the last rendering:\n{dom}");
            }
        }
    }
}

/// The inner HTML of the element matching `css`, read in the browser.
fn inner_html(b: &Browser, css: &str) -> String {
    let js = format!("const e = document.querySelector({css:?}); return e ? e.innerHTML : '';");
    b.script(&js).as_str().unwrap_or_default().to_string()
}

fn count(b: &Browser, css: &str) -> u64 {
    b.script(&format!("return document.querySelectorAll({css:?}).length")).as_u64().unwrap_or(0)
}

fn scroll_to(b: &Browser, css: &str) {
    b.script(&format!("document.querySelector({css:?}).scrollIntoView({{ block: 'start' }}); return true"));
}

#[test]
fn job_tabs_show_the_timeline_exceptions_checkpoints_and_configuration_rest_reports() {
    let c = Cluster::start();
    let browser = Browser::start(&c.h.home.join("chromium-driver"));
    timeline(&c, &browser);
    exceptions(&c, &browser);
    checkpoints(&c, &browser);
    configuration(&c);
}

fn timeline(c: &Cluster, b: &Browser) {
    // The finished job: one bar per vertex from its start to its end, coloured by its state,
    // and the job's states above them.
    let job = c.h.job(&c.finished);
    let vertices = job["vertices"].as_array().unwrap().clone();
    let dom = c.render_until(&c.url(&c.finished, "timeline"), "the timeline", |d| {
        vertices.iter().all(|v| d.contains(&format!(r#"data-vertex-id="{}""#, v["id"].as_str().unwrap())))
            && d.contains("rect class=\"bar\"")
    });
    let bars = tags(&dom, r#"<rect class="bar""#);
    for v in &vertices {
        let id = v["id"].as_str().unwrap();
        let bar = bars
            .iter()
            .find(|a| a.get("data-vertex-id") == Some(&id) && !a.contains_key("data-subtask"))
            .unwrap_or_else(|| panic!("no bar for vertex {id} in:\n{dom}"));
        assert_eq!(bar["data-state"], v["status"].as_str().unwrap(), "{bar:?}");
        assert_eq!(bar["data-start"], num(&v["start-time"]), "{bar:?}");
        assert_eq!(bar["data-end"], num(&v["end-time"]), "{bar:?}");
    }
    for (state, ts) in job["timestamps"].as_object().unwrap() {
        if ts.as_i64().unwrap() > 0 {
            assert!(
                bars.iter().any(|a| a.get("data-job-state") == Some(&state.as_str()) && a["data-start"] == num(ts)),
                "no bar for the job's state {state} at {ts}:\n{dom}"
            );
        }
    }

    // The running job: its vertices run since their start.
    let job = c.h.job(&c.running);
    let dom = c.render_until(&c.url(&c.running, "timeline"), "the running job's timeline", |d| {
        d.contains("rect class=\"bar\"") && d.contains("data-vertex-id")
    });
    let bars = tags(&dom, r#"<rect class="bar""#);
    for v in job["vertices"].as_array().unwrap() {
        let id = v["id"].as_str().unwrap();
        let bar = bars.iter().find(|a| a.get("data-vertex-id") == Some(&id)).expect("a bar per vertex");
        assert_eq!((bar["data-state"], bar["data-start"].to_string()), ("RUNNING", num(&v["start-time"])));
    }

    // A click on the restarted vertex shows its subtasks: every state of the current
    // attempts, and the earlier attempts that failed or were cancelled by the restart.
    b.open(&c.url(&c.finished, "timeline"));
    b.wait_for("the timeline's bars", || (count(b, "#timeline-main rect.bar") > 0).then_some(()));
    b.screenshot("job-timeline");
    let boom = vertices.iter().find(|v| v["name"].as_str().unwrap().contains("boom")).unwrap();
    let vid = boom["id"].as_str().unwrap();
    b.click(&format!(r#"#timeline-main g.row[data-vertex-id="{vid}"]"#));
    let times = c.h.get_ok(&format!("/jobs/{}/vertices/{vid}/subtasktimes", c.finished));
    let detail = c.h.get_ok(&format!("/jobs/{}/vertices/{vid}", c.finished));
    let subtasks = detail["subtasks"].as_array().unwrap();
    let earlier: u64 = subtasks.iter().map(|s| s["attempt"].as_u64().unwrap()).sum();
    assert!(earlier >= 2, "both subtasks restarted: {detail}");
    b.wait_for("the subtasks' bars of every attempt", || {
        let chart = inner_html(b, "#timeline-subtask-chart");
        (tags(&chart, r#"<g class="row"#).len() as u64 == subtasks.len() as u64 + earlier).then_some(())
    });
    let chart = inner_html(b, "#timeline-subtask-chart");
    let bars = tags(&chart, r#"<rect class="bar""#);
    for t in times["subtasks"].as_array().unwrap() {
        let i = t["subtask"].to_string();
        let attempt = subtasks.iter().find(|s| s["subtask"] == t["subtask"]).unwrap()["attempt"].to_string();
        for (state, ts) in t["timestamps"].as_object().unwrap() {
            if ts.as_i64().unwrap() <= 0 {
                continue;
            }
            assert!(
                bars.iter().any(|a| a["data-subtask"] == i
                    && a["data-attempt"] == attempt
                    && a["data-vertex-id"] == vid
                    && a["data-state"] == state
                    && a["data-start"] == num(ts)),
                "subtask {i} (attempt {attempt}) has no {state} bar at {ts}:\n{chart}"
            );
        }
        for n in 0..attempt.parse::<u64>().unwrap() {
            let a = c.h.get_ok(&format!("/jobs/{}/vertices/{vid}/subtasks/{i}/attempts/{n}", c.finished));
            let state = a["status"].as_str().unwrap();
            assert!(["FAILED", "CANCELED", "FINISHED"].contains(&state), "{a}");
            assert!(
                bars.iter().any(|b| b["data-subtask"] == i
                    && b["data-attempt"] == n.to_string()
                    && b["data-state"] == state
                    && b["data-start"] == num(&a["end-time"])),
                "subtask {i}'s attempt {n} does not end {state} at {}:\n{chart}",
                a["end-time"]
            );
        }
    }
    assert!(inner_html(b, "#timeline-subtask-legend").contains(r#"data-state="RUNNING""#), "a legend of the states");
    b.screenshot("job-timeline-subtasks");
}

fn exceptions(c: &Cluster, b: &Browser) {
    let rest = c.h.get_ok(&format!("/jobs/{}/exceptions", c.failed));
    let ts = num(&rest["timestamp"]);
    let root = rest["root-exception"].as_str().unwrap();
    let entry = &rest["exceptionHistory"]["entries"][0];
    let dom = c.render_until(&c.url(&c.failed, "exceptions"), "the exceptions", |d| d.contains("exception-row"));
    assert!(dom.contains(&format!(r#"id="root-exception-time" class="mono" data-timestamp="{ts}""#)), "{dom}");
    assert!(dom.contains(&format!(r#"<pre id="root-exception" class="log">{}</pre>"#, html(root))), "{dom}");
    let r = row(&dom, "exception-history", "data-timestamp", &ts);
    assert!(r.contains(&format!("<strong>{}</strong>", html(entry["exceptionName"].as_str().unwrap()))), "{r}");
    assert!(r.contains(&html(entry["taskName"].as_str().unwrap())), "{r}");

    // The time as the dashboard formats timestamps; a click shows the stack trace.
    b.open(&c.url(&c.failed, "exceptions"));
    let formatted = b.script(&format!("return Flint.formatTime({ts})"));
    assert_eq!(b.text_of("#root-exception-time").as_deref(), formatted.as_str());
    assert_eq!(b.text_of(r#"#exception-history tr.exception-row td[data-col="time"]"#).as_deref(), formatted.as_str());
    b.click("#exception-history tr.exception-row");
    let trace = b.wait_text("#exception-history pre.stacktrace", |t| !t.is_empty());
    assert_eq!(trace, entry["stacktrace"].as_str().unwrap());
    b.screenshot("job-exceptions");

    // A job without failures says so.
    let dom = c.render_until(&c.url(&c.running, "exceptions"), "no exceptions", |d| d.contains("exception-history"));
    assert!(dom.contains(r#"<p id="exceptions-none" class="tab-note">No exceptions</p>"#), "{dom}");
}

fn card(dom: &str, key: &str) -> u64 {
    text_after(dom, &format!(r#"id="cp-count-{key}" class="card-value" data-count="{key}">"#)).parse().unwrap()
}

fn checkpoints(c: &Cluster, b: &Browser) {
    let jid = &c.running;
    let before = c.h.get_ok(&format!("/jobs/{jid}/checkpoints"));
    let dom = c.render_until(&c.url(jid, "checkpoints"), "the checkpoints", |d| d.contains("checkpoint-row"));
    let after = c.h.get_ok(&format!("/jobs/{jid}/checkpoints"));

    // The counts lie between the answers before and after the rendering (the job keeps
    // checkpointing); nothing failed or was restored.
    for key in ["total", "completed"] {
        let shown = card(&dom, key);
        let (lo, hi) = (before["counts"][key].as_u64().unwrap(), after["counts"][key].as_u64().unwrap());
        assert!(lo <= shown && shown <= hi, "{key}: {shown} not within {lo}..={hi}");
    }
    assert_eq!((card(&dom, "failed"), card(&dom, "restored")), (0, 0));

    // The latest completed checkpoint, and its row in the history, as REST reports it.
    let latest = tags(&dom, r#"<tr data-latest="completed""#);
    let id: u64 = latest[0]["data-checkpoint-id"].parse().unwrap();
    let (lo, hi) =
        (before["latest"]["completed"]["id"].as_u64().unwrap(), after["latest"]["completed"]["id"].as_u64().unwrap());
    assert!(lo <= id && id <= hi, "latest completed {id} not within {lo}..={hi}");
    let rest = c.h.get_ok(&format!("/jobs/{jid}/checkpoints/details/{id}"));
    let r = row(&dom, "checkpoint-history", "data-checkpoint-id", &id.to_string());
    assert!(r.contains(r#"<span class="badge cp-completed">COMPLETED</span>"#), "{r}");
    assert!(r.contains(r#"data-col="type">Checkpoint<"#), "{r}");
    let acked = format!("{}/{}", rest["num_acknowledged_subtasks"], rest["num_subtasks"]);
    assert!(r.contains(&format!(r#"data-col="acknowledged">{acked}<"#)), "{acked} in {r}");
    assert!(r.contains(&format!(r#"data-col="trigger" data-timestamp="{}""#, rest["trigger_timestamp"])), "{r}");
    assert!(r.contains(&format!(r#"data-col="latest-ack" data-timestamp="{}""#, rest["latest_ack_timestamp"])), "{r}");
    for (col, field) in
        [("duration", "end_to_end_duration"), ("checkpointed-size", "checkpointed_size"), ("state-size", "state_size")]
    {
        assert!(r.contains(&format!(r#"data-col="{col}" data-value="{}""#, rest[field])), "{field} in {r}");
    }

    // Summary: minimum ≤ average ≤ maximum of the end-to-end durations, and the percentiles.
    let stats: Vec<u64> = ["min", "avg", "max"]
        .iter()
        .map(|k| {
            let r = row(&dom, "checkpoint-summary", "data-stat", k);
            tags(r, r#"<td class="num" data-col="duration""#)[0]["data-value"].parse().unwrap()
        })
        .collect();
    assert!(stats[0] <= stats[1] && stats[1] <= stats[2], "{stats:?}");
    for k in ["p50", "p90", "p95", "p99", "p999"] {
        row(&dom, "checkpoint-summary", "data-stat", k);
    }

    // Configuration, from `checkpoints/config`.
    let config = c.h.get_ok(&format!("/jobs/{jid}/checkpoints/config"));
    assert_eq!(config["interval"], 1000, "{config}");
    for (key, shown) in [
        ("interval", "1s".to_string()),
        ("mode", if config["mode"] == "exactly_once" { "Exactly Once" } else { "At Least Once" }.to_string()),
        ("max_concurrent", config["max_concurrent"].to_string()),
        ("state_backend", config["state_backend"].as_str().unwrap().to_string()),
        ("checkpoint_storage", config["checkpoint_storage"].as_str().unwrap().to_string()),
    ] {
        let r = row(&dom, "checkpoint-config", "data-key", key);
        assert!(r.contains(&format!(r#"data-col="value">{shown}<"#)), "{shown} in {r}");
    }

    // In the browser: the sub-tabs, and a checkpoint expanded to its vertices and a
    // vertex to its subtasks, with the figures of the details endpoints.
    b.open(&c.url(jid, "checkpoints"));
    b.wait_for("the counts", || (b.text_of("#cp-count-completed")? != "–").then_some(()));
    b.screenshot("job-checkpoints-overview");
    b.click(r#"#checkpoint-subtabs button[data-subtab="history"]"#);
    b.wait_for("the history", || (count(b, "#checkpoints-history:not([hidden]) tr.checkpoint-row") > 0).then_some(()));
    b.screenshot("job-checkpoints-history");
    let id = c.h.get_ok(&format!("/jobs/{jid}/checkpoints"))["latest"]["completed"]["id"].as_u64().unwrap();
    let job = c.h.job(jid);
    let vertices = job["vertices"].as_array().unwrap();
    b.click(&format!(r#"#checkpoint-history tr.checkpoint-row[data-checkpoint-id="{id}"]"#));
    let detail = format!(r#"#checkpoint-history tr.checkpoint-detail-row[data-detail-of="{id}"]"#);
    b.wait_for("the checkpoint's vertices", || {
        (count(b, &format!("{detail} tr.cp-vertex-row")) == vertices.len() as u64).then_some(())
    });
    let rest = c.h.get_ok(&format!("/jobs/{jid}/checkpoints/details/{id}"));
    let html_of = inner_html(b, &detail);
    for v in vertices {
        let vid = v["id"].as_str().unwrap();
        let t = &rest["tasks"][vid];
        let r = row(&format!("<table id=\"d\">{html_of}"), "d", "data-vertex-id", vid).to_string();
        let acked = format!("{}/{}", t["num_acknowledged_subtasks"], t["num_subtasks"]);
        assert!(r.contains(&format!(r#"data-col="acknowledged">{acked}<"#)), "{acked} in {r}");
        assert!(r.contains(&format!(r#"data-col="latest-ack" data-timestamp="{}""#, t["latest_ack_timestamp"])), "{r}");
        for (col, field) in [
            ("duration", "end_to_end_duration"),
            ("checkpointed-size", "checkpointed_size"),
            ("state-size", "state_size"),
        ] {
            assert!(
                r.contains(&format!(r#"data-col="{col}" data-value="{}""#, t[field])),
                "{field} {} in {r}",
                t[field]
            );
        }
        assert!(r.contains(&html(v["name"].as_str().unwrap())), "{r}");
    }
    let keyed = vertices.iter().find(|v| v["name"].as_str().unwrap().contains("per-user")).unwrap();
    let kid = keyed["id"].as_str().unwrap();
    b.click(&format!(r#"{detail} tr.cp-vertex-row[data-vertex-id="{kid}"]"#));
    let parallelism = keyed["parallelism"].as_u64().unwrap();
    b.wait_for("the vertex's subtasks", || {
        (count(b, &format!("{detail} .cp-subtask-table tr[data-subtask]")) == parallelism).then_some(())
    });
    let subtasks = c.h.get_ok(&format!("/jobs/{jid}/checkpoints/details/{id}/subtasks/{kid}"));
    let table = inner_html(b, &format!("{detail} .cp-subtask-table"));
    for s in subtasks["subtasks"].as_array().unwrap() {
        let r = row(&format!("<table id=\"s\">{table}"), "s", "data-subtask", &s["index"].to_string()).to_string();
        for (col, value) in [
            ("end-to-end", &s["end_to_end_duration"]),
            ("state-size", &s["state_size"]),
            ("sync", &s["checkpoint"]["sync"]),
            ("async", &s["checkpoint"]["async"]),
            ("alignment", &s["alignment"]["duration"]),
            ("start-delay", &s["start_delay"]),
        ] {
            assert!(r.contains(&format!(r#"data-col="{col}" data-value="{value}""#)), "{col} {value} in {r}");
        }
    }
    scroll_to(b, &format!(r#"#checkpoint-history tr.checkpoint-row[data-checkpoint-id="{id}"]"#));
    b.screenshot("job-checkpoints-details");
    b.click(r#"#checkpoint-subtabs button[data-subtab="summary"]"#);
    b.wait_for("the summary", || (count(b, "#checkpoints-summary:not([hidden]) tr[data-stat]") == 8).then_some(()));
    b.screenshot("job-checkpoints-summary");
    b.click(r#"#checkpoint-subtabs button[data-subtab="configuration"]"#);
    b.wait_for("the configuration", || {
        (count(b, "#checkpoints-configuration:not([hidden]) tr[data-key]") > 0).then_some(())
    });
    b.screenshot("job-checkpoints-config");
}

fn configuration(c: &Cluster) {
    let jid = &c.finished;
    let config = c.h.get_ok(&format!("/jobs/{jid}/config"));
    let ec = &config["execution-config"];
    let dom = c.render_until(&c.url(jid, "configuration"), "the configuration", |d| {
        d.contains(r#"data-key="job-parallelism""#)
    });
    let r = row(&dom, "config-execution", "data-key", "job-parallelism");
    assert!(r.contains(&format!(r#"data-col="value">{}<"#, ec["job-parallelism"])), "{r}");
    let r = row(&dom, "config-execution", "data-key", "restart-strategy");
    assert!(r.contains(&format!(r#"data-col="value">{}<"#, html(ec["restart-strategy"].as_str().unwrap()))), "{r}");
    assert!(ec["restart-strategy"].as_str().unwrap().contains("fixed delay"), "{ec}");
    for (key, value) in ec["user-config"].as_object().unwrap() {
        let r = row(&dom, "config-user", "data-key", key);
        assert!(r.contains(&format!(r#"<span class="mono">{}</span>"#, html(value.as_str().unwrap()))), "{r}");
    }
    // The job manager's configuration, when the endpoint answers.
    let jm = c.h.get(&format!("/jobs/{jid}/jobmanager/config")).unwrap();
    if jm.status == 200 {
        for entry in jm.body.as_array().unwrap() {
            let r = row(&dom, "config-jobmanager", "data-key", entry["key"].as_str().unwrap());
            assert!(r.contains(&html(entry["value"].as_str().unwrap())), "{r}");
        }
    }
    screenshot(&c.url(jid, "configuration"), &c.render_profile, "job-configuration");
}
