//! The dashboard in a real browser: headless Chromium loads the page from a running
//! jobmanager, runs its JavaScript against the live REST API, and the rendered DOM
//! must show the cluster's task managers and slots.

use std::process::Command;
use std::time::Duration;

use flint_tests::Harness;

const DEADLINE: Duration = Duration::from_secs(30);

/// Renders `url` in headless Chromium and returns the DOM after scripts ran.
fn render(url: &str, profile_dir: &std::path::Path) -> String {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Chromium is required for the dashboard test: apt-get install -y chromium (see .ci/run)");
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--timeout=20000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn dashboard_shows_task_managers_and_slots() {
    let mut h = Harness::new("dashboard");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.start_taskmanager("taskmanager-2", &["taskmanager.numberOfTaskSlots=3".into()]);
    h.wait_for_overview("two task managers", DEADLINE, |o| o["taskmanagers"] == 2 && o["slots-total"] == 5);
    let tms = h.get_ok("/taskmanagers");
    let ids: Vec<String> =
        tms["taskmanagers"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();

    let url = format!("http://127.0.0.1:{}/", h.rest_port);
    let profile = h.home.join("chromium-profile");
    let dom = h.wait_for("the dashboard to render the cluster", DEADLINE, || {
        let dom = render(&url, &profile);
        dom.contains("data-loaded=\"true\"").then_some(dom)
    });
    assert!(dom.contains(r#"id="tm-count" class="card-value">2<"#), "task manager count not shown:\n{dom}");
    assert!(dom.contains(r#"id="slots-total" class="card-value">5<"#), "slot total not shown:\n{dom}");
    assert!(dom.contains(r#"id="slots-available" class="card-value">5<"#), "available slots not shown:\n{dom}");
    for id in &ids {
        assert!(dom.contains(&format!("data-tm-id=\"{id}\"")), "task manager {id} missing from the table:\n{dom}");
    }
    assert!(dom.contains("No jobs"), "the empty job list is shown");
}
