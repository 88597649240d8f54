//! Task metrics through Flink's REST calls, with real processes: back-pressure measured as
//! Flink defines it (a slow sink is busy, the fast source before it back-pressured),
//! advancing watermarks, and the metric calls' `get`/`agg` answers.

use std::time::Duration;

use flint_tests::Harness;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

fn cluster(name: &str) -> Harness {
    let mut h = Harness::new(name);
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 2);
    h
}

fn vertex_ids(h: &Harness, job: &str) -> Vec<String> {
    h.job(job)["vertices"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_string()).collect()
}

/// The value of metric `id` in a `get` answer, as a number.
fn value(answer: &Value, id: &str) -> Option<f64> {
    answer.as_array()?.iter().find(|m| m["id"] == id)?["value"].as_str()?.parse().ok()
}

#[test]
fn a_slow_sink_is_busy_and_the_fast_source_before_it_back_pressured() {
    let h = cluster("metrics-backpressure");
    let job = json!({
        "flint": 1, "name": "slow-sink", "parallelism": 1,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0 },
            { "id": "slow", "op": "sink.blackhole", "inputs": ["numbers"], "rate": 20000, "ship": "rebalance" }
        ]
    });
    let id = h.submit("", &job);
    let vertices = vertex_ids(&h, &id);
    assert_eq!(vertices.len(), 2, "source and sink are separate vertices");
    let (source, sink) = (&vertices[0], &vertices[1]);
    let pressure = h.wait_for("the source back-pressured above 50 %", DEADLINE, || {
        let bp = h.get_ok(&format!("/jobs/{id}/vertices/{source}/backpressure"));
        (bp["status"] == "ok" && bp["subtasks"][0]["ratio"].as_f64().unwrap_or(0.0) > 0.5).then_some(bp)
    });
    eprintln!("source back-pressure: {pressure}");
    assert_eq!(pressure["backpressure-level"], "high", "{pressure}");
    assert_eq!(pressure["backpressureLevel"], "high", "{pressure}");
    let entry = &pressure["subtasks"][0];
    assert_eq!(entry["subtask"], 0);
    let sum =
        entry["ratio"].as_f64().unwrap() + entry["busyRatio"].as_f64().unwrap() + entry["idleRatio"].as_f64().unwrap();
    assert!((0.9..=1.1).contains(&sum), "the ratios split the time: {entry}");
    let sink_pressure = h.wait_for("the sink busy above 50 %", DEADLINE, || {
        let bp = h.get_ok(&format!("/jobs/{id}/vertices/{sink}/backpressure"));
        (bp["status"] == "ok" && bp["subtasks"][0]["busyRatio"].as_f64().unwrap_or(0.0) > 0.5).then_some(bp)
    });
    assert_eq!(sink_pressure["backpressure-level"], "ok", "the sink waits for nothing: {sink_pressure}");

    // The same figures as metrics.
    let subtask = h.get_ok(&format!(
        "/jobs/{id}/vertices/{source}/subtasks/0/metrics?get=isBackPressured,backPressuredTimeMsPerSecond,numRecordsOut,numRecordsOutPerSecond,buffers.outPoolUsage"
    ));
    assert_eq!(value(&subtask, "isBackPressured"), Some(1.0), "{subtask}");
    assert!(value(&subtask, "backPressuredTimeMsPerSecond").unwrap() > 500.0, "{subtask}");
    assert!(value(&subtask, "buffers.outPoolUsage").unwrap() > 0.5, "{subtask}");
    let out = value(&subtask, "numRecordsOut").unwrap();
    let rate = value(&subtask, "numRecordsOutPerSecond").unwrap();
    assert!(out > 0.0 && rate > 1000.0 && rate < 200_000.0, "the source runs at the sink's pace: {subtask}");
    let sink_metrics =
        h.get_ok(&format!("/jobs/{id}/vertices/{sink}/subtasks/0/metrics?get=busyTimeMsPerSecond,numRecordsIn"));
    assert!(value(&sink_metrics, "busyTimeMsPerSecond").unwrap() > 500.0, "{sink_metrics}");
    assert!(value(&sink_metrics, "numRecordsIn").unwrap() > 0.0, "{sink_metrics}");

    // Vertex metrics: `<subtask>.<metric>` and `<subtask>.<operator>.<metric>` ids.
    let ids = h.get_ok(&format!("/jobs/{id}/vertices/{sink}/metrics"));
    let ids: Vec<&str> = ids.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    for expected in ["0.numRecordsIn", "0.busyTimeMsPerSecond", "0.slow.numRecordsIn", "0.currentInputWatermark"] {
        assert!(ids.contains(&expected), "{expected} in {ids:?}");
    }
    let two = h.get_ok(&format!("/jobs/{id}/vertices/{sink}/metrics?get=0.numRecordsIn,0.slow.numRecordsIn"));
    assert_eq!(two.as_array().unwrap().len(), 2, "{two}");
    // Aggregated over the subtasks, in Flink's shape.
    let agg = h.get_ok(&format!("/jobs/{id}/vertices/{source}/subtasks/metrics?get=numRecordsOut&agg=sum,max"));
    let entry = &agg.as_array().unwrap()[0];
    assert_eq!(entry["id"], "numRecordsOut");
    assert!(entry["sum"].as_f64().unwrap() > 0.0 && entry["max"].is_number() && entry.get("min").is_none(), "{agg}");
    let all = h.get_ok(&format!("/jobs/{id}/vertices/{source}/subtasks/metrics?get=numRecordsOut"));
    for a in ["min", "max", "avg", "sum", "skew"] {
        assert!(all[0][a].is_number(), "{a} in {all}");
    }
    let bad = h.get(&format!("/jobs/{id}/vertices/{source}/subtasks/metrics?get=numRecordsOut&agg=median")).unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
    let selected = h.get_ok(&format!("/jobs/{id}/vertices/{source}/subtasks/metrics?get=numRecordsOut&subtasks=0-0"));
    assert_eq!(selected.as_array().unwrap().len(), 1, "{selected}");
    // Job metrics over all jobs.
    let jobs = h.get_ok("/jobs/metrics?get=numRestarts&agg=sum");
    assert_eq!(jobs, json!([{ "id": "numRestarts", "sum": 0.0 }]));
    assert!(h.get_ok("/jobs/metrics").as_array().unwrap().iter().any(|m| m["id"] == "uptime"));

    let reply = h.patch(&format!("/jobs/{id}?mode=cancel")).unwrap();
    assert_eq!(reply.status, 202);
    h.wait_job_state(&id, "CANCELED", DEADLINE);
    // An ended job has no metrics any more, as Flink's archived jobs.
    assert_eq!(h.get_ok(&format!("/jobs/{id}/vertices/{source}/metrics")), json!([]));
    assert_eq!(h.get_ok(&format!("/jobs/{id}/vertices/{source}/backpressure")), json!({ "status": "deprecated" }));
}

#[test]
fn an_event_time_job_shows_advancing_watermarks() {
    let h = cluster("metrics-watermarks");
    // Timestamps run 1 ms per record at 5,000 records per second: the watermark advances
    // about 5 s per second.
    let job = json!({
        "flint": 1, "name": "event-time", "parallelism": 1,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "rate": 5000 },
            { "id": "stamped", "op": "map", "inputs": ["numbers"], "fields": { "ts": "n", "k": "n % 3" } },
            { "id": "counts", "op": "window", "inputs": ["stamped"], "key": ["k"], "size": "100 ms",
              "time": "event", "timestamp_field": "ts", "aggs": { "c": "count()" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["counts"], "ship": "rebalance" }
        ]
    });
    let id = h.submit("", &job);
    let vertices = vertex_ids(&h, &id);
    assert_eq!(vertices.len(), 3, "{vertices:?}");
    let (window, sink) = (&vertices[1], &vertices[2]);
    let watermark = |vertex: &str| -> Option<f64> {
        let list = h.get_ok(&format!("/jobs/{id}/vertices/{vertex}/watermarks"));
        let entry = list.as_array()?.first()?.clone();
        assert_eq!(entry["id"], "0.currentInputWatermark", "{list}");
        entry["value"].as_str()?.parse().ok()
    };
    let first = h.wait_for("a watermark at the sink", DEADLINE, || watermark(sink).filter(|w| *w > 0.0));
    let later = h.wait_for("the watermark to advance", DEADLINE, || watermark(sink).filter(|w| *w > first + 1000.0));
    eprintln!("sink watermark {first} -> {later}");
    // The window makes the watermarks: its operator's output watermark leads the sink's input.
    let window_metrics = h.get_ok(&format!("/jobs/{id}/vertices/{window}/subtasks/0/metrics?get=counts.currentOutputWatermark,currentInputWatermark,counts.numLateRecordsDropped"));
    assert!(value(&window_metrics, "counts.currentOutputWatermark").unwrap() >= first, "{window_metrics}");
    assert_eq!(value(&window_metrics, "counts.numLateRecordsDropped"), Some(0.0), "{window_metrics}");
    // No watermark reaches the window from its input: Flink's Long.MIN_VALUE.
    assert_eq!(value(&window_metrics, "currentInputWatermark"), Some(i64::MIN as f64), "{window_metrics}");
    let reply = h.patch(&format!("/jobs/{id}?mode=cancel")).unwrap();
    assert_eq!(reply.status, 202);
}
