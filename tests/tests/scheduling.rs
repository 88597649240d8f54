//! Many jobs competing for few slots: a job gets all of its slots at once or waits, so
//! concurrent submissions never deadlock holding partial sets. (Each job's source is
//! throttled to ~0.2 s so that the jobs really wait for each other's slots.)

use std::time::{Duration, Instant};

use flint_tests::Harness;
use serde_json::json;

#[test]
fn fifty_jobs_of_two_slots_on_four_slots_all_finish() {
    let mut h = Harness::new("fifty-jobs");
    h.set("heartbeat.interval", "1 s").set("heartbeat.timeout", "10 s");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.start_taskmanager("taskmanager-2", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("2 taskmanagers with 4 slots", Duration::from_secs(30), |o| o["slots-total"] == 4);
    let started = Instant::now();
    let ids: Vec<String> = (0..50)
        .map(|i| {
            let job = json!({
                "flint": 1, "name": format!("job-{i}"), "parallelism": 2,
                "operators": [
                    { "id": "numbers", "op": "source.sequence", "from": 0, "to": 19999, "rate": 100000 },
                    { "id": "by-key", "op": "aggregate", "inputs": ["numbers"], "key": ["n"],
                      "aggs": { "c": "count()" } },
                    { "id": "out", "op": "sink.blackhole", "inputs": ["by-key"] }
                ]
            });
            h.submit("", &job)
        })
        .collect();
    let submitted = started.elapsed();
    for id in &ids {
        let job = h.wait_for(&format!("job {id} to end"), Duration::from_secs(180), || {
            let j = h.job(id);
            matches!(j["state"].as_str(), Some("FINISHED" | "FAILED" | "CANCELED")).then_some(j)
        });
        if job["state"] != "FINISHED" {
            h.dump_logs();
            panic!("job {id} ended {}: {}", job["state"], h.get_ok(&format!("/jobs/{id}/exceptions")));
        }
    }
    eprintln!(
        "50 jobs of 2 slots on 4 slots: submitted in {} ms, all finished after {} ms",
        submitted.as_millis(),
        started.elapsed().as_millis()
    );
    let overview = h.get_ok("/overview");
    assert_eq!(overview["jobs-finished"], 50, "{overview}");
    h.wait_for_overview("every slot free again", Duration::from_secs(30), |o| o["slots-available"] == 4);
}
