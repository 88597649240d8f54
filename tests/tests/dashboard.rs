//! The dashboard in a real browser: headless Chromium loads the page from a running
//! jobmanager, runs its JavaScript against the live REST API, and the rendered DOM
//! must show the cluster's task managers and slots.

use std::time::Duration;

use flint_tests::browser::{render, row, screenshot, thousands};
use flint_tests::Harness;

const DEADLINE: Duration = Duration::from_secs(30);

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

#[test]
fn job_page_shows_the_laid_out_graph_its_vertices_and_the_selected_vertexs_subtasks() {
    let mut h = Harness::new("dashboard-job");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=4".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 4);
    let job = serde_json::json!({
        "flint": 1, "name": "graph-page", "parallelism": 2,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": 9999, "parallelism": 1 },
            { "id": "keys", "op": "map", "inputs": ["numbers"], "fields": { "k": "n % 10", "n": "n" } },
            { "id": "sums", "op": "aggregate", "inputs": ["keys"], "key": ["k"], "aggs": { "total": "sum(n)" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["sums"] } ] });
    let jid = h.submit("", &job);
    h.wait_job_state(&jid, "FINISHED", DEADLINE);
    let rest = h.job(&jid);
    let vertices = rest["vertices"].as_array().unwrap().clone();
    assert_eq!(vertices.len(), 3, "{rest}");
    let keyed =
        vertices.iter().find(|v| v["parallelism"] == 2 && v["name"].as_str().unwrap().contains("sums")).unwrap();
    let vid = keyed["id"].as_str().unwrap();

    let url = format!("http://127.0.0.1:{}/#/jobs/{jid}/vertices/{vid}", h.rest_port);
    let profile = h.home.join("chromium-profile");
    let until = std::time::Instant::now() + DEADLINE;
    let dom = loop {
        let dom = render(&url, &profile);
        if dom.contains("data-loaded=\"true\"") && dom.contains("data-subtask=\"1\"") {
            break dom;
        }
        if std::time::Instant::now() >= until {
            h.dump_logs();
            panic!("the job page did not render within {DEADLINE:?}; the last rendering:\n{dom}");
        }
    };
    assert!(dom.contains(r#"<main id="page-overview" hidden="">"#), "the overview is hidden:\n{dom}");
    assert!(dom.contains(r#"id="job-name">graph-page<"#), "{dom}");
    assert!(dom.contains(r#"id="job-state" class="badge state-finished">FINISHED<"#), "{dom}");
    // The graph: one laid-out node per vertex, the selected one marked; edges labelled with
    // the plan's ship strategies.
    for v in &vertices {
        let id = v["id"].as_str().unwrap();
        let selected = if id == vid { " selected" } else { "" };
        assert!(
            dom.contains(&format!(r#"<g class="vertex state-finished{selected}" data-vertex-id="{id}""#)),
            "vertex {id} is not drawn:\n{dom}"
        );
    }
    for node in rest["plan"]["nodes"].as_array().unwrap() {
        for input in node["inputs"].as_array().into_iter().flatten() {
            let label = format!(">{}</text>", input["ship_strategy"].as_str().unwrap());
            assert!(dom.contains(&label), "edge label {label} missing:\n{dom}");
        }
    }
    assert!(dom.contains("translate("), "nodes are placed by the layout");
    // The vertex table shows REST's figures.
    for v in &vertices {
        let r = row(&dom, "vertices-table", "data-vertex-id", v["id"].as_str().unwrap());
        assert!(r.contains(&format!(r#"data-col="parallelism">{}<"#, v["parallelism"])), "{r}");
        let out = v["metrics"]["write-records"].as_u64().unwrap();
        let formatted = thousands(out);
        assert!(r.contains(&format!(r#"data-col="write-records">{formatted}<"#)), "{formatted} in {r}");
    }
    // The selected vertex's subtasks, as `/jobs/:id/vertices/:vid` gives them.
    let detail = h.get_ok(&format!("/jobs/{jid}/vertices/{vid}"));
    for t in detail["subtasks"].as_array().unwrap() {
        let r = row(&dom, "subtasks-table", "data-subtask", &t["subtask"].to_string());
        assert!(r.contains(r#"data-col="status"><span class="badge state-finished">FINISHED<"#), "{r}");
        let read = t["metrics"]["read-records"].as_u64().unwrap();
        let formatted = thousands(read);
        assert!(r.contains(&format!(r#"data-col="read-records">{formatted}<"#)), "{formatted} in {r}");
    }
    screenshot(&url, &profile, "job-page");
    // The overview links to the job page.
    let link = format!(r##"<a href="#/jobs/{jid}">graph-page</a>"##);
    let overview_url = format!("http://127.0.0.1:{}/", h.rest_port);
    h.wait_for("the overview to link the job", DEADLINE, || {
        render(&overview_url, &profile).contains(&link).then_some(())
    });
}
