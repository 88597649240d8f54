//! Dashboard figures of issue 14 on a real cluster (1 jobmanager, 1 taskmanager × 64 slots)
//! holding 100 finished jobs and a running p=64 job, in headless Chromium (ChromeDriver).
//!
//! `cargo build --release --workspace --bins && target/release/bench_dashboard`
//!
//! Prints, per page and run, the time from opening the page (a fresh document load) to its
//! first rendering with data (`performance.mark("flint-first-render")`, set by `app.js` when
//! `body[data-loaded]` first becomes true), and the medians of `RUNS` runs (default 5):
//! the overview, the jobs list, the p=64 job's page (graph, vertices, back-pressure) and one
//! of its vertices (64 subtasks). Then it reports how long one refresh of each page takes
//! (REST answers plus rendering), from the browser's resource timings.

use std::time::Duration;

use flint_tests::browser::Browser;
use flint_tests::Harness;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(180);

fn runs() -> usize {
    std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(5)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A REST path with its 32-digit ids shortened to `<id>`.
fn short(path: &str) -> String {
    path.split('/')
        .map(|p| if p.len() == 32 && p.bytes().all(|b| b.is_ascii_hexdigit()) { "<id>" } else { p })
        .collect::<Vec<_>>()
        .join("/")
}

fn main() {
    let mut h = Harness::new("bench-dashboard");
    h.set("heartbeat.interval", "1 s");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=64".into()]);
    h.wait_for_overview("64 slots", DEADLINE, |o| o["slots-total"] == 64);

    // 100 finished jobs.
    let mut finished = Vec::new();
    for i in 0..100 {
        let job = json!({
            "flint": 1, "name": format!("finished-{i:03}"), "parallelism": 2,
            "operators": [
                { "id": "numbers", "op": "source.sequence", "from": 0, "to": 999, "parallelism": 1 },
                { "id": "keys", "op": "map", "inputs": ["numbers"], "fields": { "k": "n % 10", "n": "n" } },
                { "id": "sums", "op": "aggregate", "inputs": ["keys"], "key": ["k"], "aggs": { "total": "sum(n)" } },
                { "id": "out", "op": "sink.blackhole", "inputs": ["sums"] } ] });
        let jid = h.submit("", &job);
        h.wait_job_state(&jid, "FINISHED", DEADLINE);
        finished.push(jid);
    }
    // A running p=64 job with a keyed shuffle and a slow sink.
    let wide = json!({
        "flint": 1, "name": "wide-64", "parallelism": 64,
        "operators": [
            { "id": "clicks", "op": "source.sequence", "from": 0, "parallelism": 1 },
            { "id": "users", "op": "map", "inputs": ["clicks"], "fields": { "user": "n % 1000", "n": "n" } },
            { "id": "per-user", "op": "aggregate", "inputs": ["users"], "key": ["user"], "aggs": { "clicks": "count()" } },
            { "id": "slow", "op": "sink.blackhole", "inputs": ["per-user"], "rate": 20000 } ] });
    let wid = h.submit("", &wide);
    h.wait_for("all 129 subtasks of wide-64 RUNNING", DEADLINE, || {
        (h.get(&format!("/jobs/{wid}")).ok()?.body["status-counts"]["RUNNING"] == 129).then_some(())
    });
    let job: Value = h.job(&wid);
    let vertex = job["vertices"].as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    let overview = h.get_ok("/jobs/overview");
    println!(
        "cluster: {} jobs in /jobs/overview, wide-64 has {} vertices and {} subtasks",
        overview["jobs"].as_array().unwrap().len(),
        job["vertices"].as_array().unwrap().len(),
        job["vertices"].as_array().unwrap().iter().map(|v| v["parallelism"].as_u64().unwrap()).sum::<u64>()
    );

    let browser = Browser::start(&h.home.join("chromium"));
    let base = format!("http://127.0.0.1:{}/", h.rest_port);
    let pages = [
        ("overview", base.clone()),
        ("jobs list", format!("{base}#/jobs")),
        ("job p=64", format!("{base}#/jobs/{wid}")),
        ("vertex p=64", format!("{base}#/jobs/{wid}/vertices/{vertex}")),
    ];
    println!("\nfirst rendering with data after opening the page (ms), {} runs:", runs());
    let mut medians = Vec::new();
    for (name, url) in &pages {
        let mut times = Vec::new();
        for _ in 0..runs() {
            browser.goto("about:blank");
            browser.open(url);
            let t = browser.script("return performance.getEntriesByName('flint-first-render')[0].startTime");
            times.push(t.as_f64().expect("the page marks its first rendering"));
        }
        let m = median(times.clone());
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.0}")).collect();
        println!("  {name:<12} {}  median {m:.0} ms", shown.join(" "));
        medians.push((name, m));
        // One refresh of the page: the REST calls the page makes in one cycle, from the
        // browser's resource timings (the last cycle's, after another refresh).
        browser.count_refreshes();
        browser.wait_refreshes(1);
        let calls = browser.script(
            "return performance.getEntriesByType('resource')
               .filter(e => !/\\.(js|css|svg)$/.test(e.name))
               .map(e => [e.name.replace(location.origin + '/', ''), e.duration, e.transferSize])",
        );
        let calls = calls.as_array().cloned().unwrap_or_default();
        let recent: Vec<&Value> = calls.iter().rev().take(6).collect();
        let summary: Vec<String> = recent
            .iter()
            .rev()
            .map(|c| {
                format!("{} {:.0} ms {} B", short(c[0].as_str().unwrap_or("")), c[1].as_f64().unwrap_or(0.0), c[2])
            })
            .collect();
        println!("    last REST calls: {}", summary.join("; "));
    }
    println!("\nmedians: {}", medians.iter().map(|(n, m)| format!("{n} {m:.0} ms")).collect::<Vec<_>>().join(", "));
    drop(browser);
}
