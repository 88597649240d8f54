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

    // Flame graphs are off by default: Flink's "disabled".
    assert_eq!(h.get_ok(&format!("/jobs/{id}/vertices/{source}/flamegraph")), json!({ "endTimestamp": -2 }));

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

/// The value of the only series a PromQL query returns, if it returns exactly one.
fn single(series: &[Value]) -> Option<f64> {
    match series {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Waits for a PromQL query's single value to pass `accept`; on timeout prints Prometheus's
/// targets and log and the processes' logs.
fn wait_query(
    h: &Harness,
    prometheus: &flint_tests::prometheus::PrometheusServer,
    promql: &str,
    accept: impl Fn(f64) -> bool,
) -> f64 {
    let until = std::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = prometheus.query(promql).ok().as_deref().and_then(single).filter(|v| accept(*v)) {
            return v;
        }
        if std::time::Instant::now() > until {
            eprintln!("targets: {}\n{}", prometheus.targets(), prometheus.log_tail());
            h.dump_logs();
            panic!("timed out after {DEADLINE:?} waiting for {promql}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_real_prometheus_scrapes_every_process_with_flinks_names() {
    let mut h = Harness::new("metrics-prometheus");
    // Two ports for two processes: the jobmanager takes the first, the taskmanager finds it
    // taken and takes the next, as with Flink's `9250-9260`.
    let ports = flint_tests::free_ports(2);
    h.set("metrics.reporter.prom.factory.class", "org.apache.flink.metrics.prometheus.PrometheusReporterFactory");
    h.set("metrics.reporter.prom.port", format!("{},{}", ports[0], ports[1]));
    h.set("heartbeat.interval", "1000");
    h.start_jobmanager("jobmanager");
    h.wait_for_overview("the jobmanager", DEADLINE, |o| o["taskmanagers"] == 0);
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 2);
    let targets: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let prometheus = flint_tests::prometheus::PrometheusServer::start("metrics", &targets).unwrap_or_else(|e| {
        h.dump_logs();
        panic!("{e}")
    });
    let job = json!({
        "flint": 1, "name": "prom job", "parallelism": 2,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "rate": 20000 },
            { "id": "out", "op": "sink.blackhole", "inputs": ["numbers"], "ship": "rebalance" }
        ]
    });
    let id = h.submit("", &job);
    let vertices = vertex_ids(&h, &id);
    let source = &vertices[0];
    let rest_count = || -> f64 {
        let agg = h.get_ok(&format!("/jobs/{id}/vertices/{source}/subtasks/metrics?get=numRecordsOut&agg=sum"));
        agg[0]["sum"].as_f64().unwrap_or(0.0)
    };
    // The job's record counts: per source subtask with Flink's labels, summed by PromQL. The
    // jobmanager's copy (REST) and the taskmanager's (Prometheus) come from the same task
    // reports, so the scraped sum lies between two REST readings taken around it.
    let promql =
        "sum(flink_taskmanager_job_task_operator_numRecordsOut{job_name=\"prom_job\",operator_name=\"numbers\"})";
    let before = h.wait_for("records counted over REST", DEADLINE, || Some(rest_count()).filter(|c| *c > 0.0));
    let scraped = wait_query(&h, &prometheus, promql, |v| v >= before);
    let after =
        h.wait_for("REST to catch up with the scrape", DEADLINE, || Some(rest_count()).filter(|c| *c >= scraped));
    eprintln!("records out: REST {before} <= Prometheus {scraped} <= REST {after}");
    let series = prometheus
        .query(&format!(
            "flink_taskmanager_job_task_operator_numRecordsOut{{job_id=\"{id}\",operator_name=\"numbers\"}}"
        ))
        .unwrap();
    assert_eq!(series.len(), 2, "one series per subtask: {series:?}");
    let labels = &series[0]["metric"];
    for label in ["host", "tm_id", "job_id", "job_name", "task_name", "task_id", "subtask_index", "task_attempt_num"] {
        assert!(labels[label].is_string(), "label {label} in {labels}");
    }
    assert_eq!(labels["job_name"], "prom_job", "label values filtered as Flink does: {labels}");
    let mut subtasks: Vec<&str> = series.iter().map(|s| s["metric"]["subtask_index"].as_str().unwrap()).collect();
    subtasks.sort();
    assert_eq!(subtasks, ["0", "1"]);
    // Task metrics, jobmanager, job and process metrics, from both processes.
    let one = |q: &str| -> f64 { wait_query(&h, &prometheus, q, |_| true) };
    assert!(one("sum(flink_taskmanager_job_task_numRecordsInPerSecond{job_name=\"prom_job\"})") >= 0.0);
    assert_eq!(one("flink_jobmanager_numRegisteredTaskManagers"), 1.0);
    assert_eq!(one("flink_jobmanager_taskSlotsTotal"), 2.0);
    assert_eq!(one("flink_jobmanager_numRunningJobs"), 1.0);
    assert_eq!(one(&format!("flink_jobmanager_job_numRestarts{{job_id=\"{id}\"}}")), 0.0);
    assert!(one(&format!("flink_jobmanager_job_uptime{{job_id=\"{id}\"}}")) >= 0.0);
    for scope in ["jobmanager", "taskmanager"] {
        let heap = one(&format!("flink_{scope}_Status_JVM_Memory_Heap_Used"));
        let resident = one(&format!("flink_{scope}_Status_Process_Memory_Resident"));
        assert!(heap > 1e5 && resident > 1e6, "{scope}: heap {heap}, resident {resident}");
        assert!(one(&format!("flink_{scope}_Status_JVM_Threads_Count")) >= 2.0);
    }
    assert!(one("flink_taskmanager_Status_Shuffle_Netty_TotalMemorySegments") > 0.0, "the running tasks' queues");

    // The same taskmanager figures over REST, as Flink's MetricFetcher would show them.
    let tm = h.get_ok("/taskmanagers")["taskmanagers"][0]["id"].as_str().unwrap().to_string();
    let tm_metrics = h.wait_for("taskmanager metrics over REST", DEADLINE, || {
        let m = h.get_ok(&format!(
            "/taskmanagers/{tm}/metrics?get=Status.JVM.Memory.Heap.Used,Status.Shuffle.Netty.TotalMemorySegments"
        ));
        (value(&m, "Status.Shuffle.Netty.TotalMemorySegments")? > 0.0).then_some(m)
    });
    assert!(value(&tm_metrics, "Status.JVM.Memory.Heap.Used").unwrap() > 1e5, "{tm_metrics}");
    let agg = h.get_ok("/taskmanagers/metrics?get=Status.JVM.Memory.Heap.Used&agg=min,max,avg,sum");
    assert_eq!(agg[0]["id"], "Status.JVM.Memory.Heap.Used", "{agg}");
    assert_eq!(agg[0]["min"], agg[0]["max"], "one taskmanager: {agg}");
    let jm = h.get_ok("/jobmanager/metrics?get=Status.JVM.Memory.Heap.Used,Status.JVM.CPU.Load,numRegisteredTaskManagers,taskSlotsAvailable,taskSlotsTotal,numRunningJobs");
    assert_eq!(jm.as_array().unwrap().len(), 6, "{jm}");
    assert_eq!(value(&jm, "taskSlotsTotal"), Some(2.0), "{jm}");
    assert_eq!(h.get_ok("/taskmanagers/nosuchtm/metrics"), json!([]), "an unknown taskmanager has no metrics");
    let detail = h.get_ok(&format!("/taskmanagers/{tm}"));
    assert!(detail["metrics"]["heapUsed"].as_i64().unwrap() > 100_000, "{detail}");

    let reply = h.patch(&format!("/jobs/{id}?mode=cancel")).unwrap();
    assert_eq!(reply.status, 202);
    h.wait_job_state(&id, "CANCELED", DEADLINE);
}

#[test]
fn a_flame_graph_samples_the_running_task_threads() {
    let mut h = Harness::new("metrics-flamegraph");
    h.set("rest.flamegraph.enabled", "true");
    h.set("rest.flamegraph.num-samples", "20");
    h.set("rest.flamegraph.delay-between-samples", "50 ms");
    h.set("rest.flamegraph.refresh-interval", "2 s");
    // The innermost 40 frames: the graph nests within serde_json's parsing depth (128).
    h.set("rest.flamegraph.stack-depth", "40");
    h.start_jobmanager("jobmanager");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 2);
    // A source computing as fast as it can: its thread is on a CPU most of the time.
    let job = json!({
        "flint": 1, "name": "busy", "parallelism": 1,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0 },
            { "id": "squares", "op": "map", "inputs": ["numbers"], "fields": { "s": "(n % 1000) * (n % 7)" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["squares"], "ship": "rebalance" }
        ]
    });
    let id = h.submit("", &job);
    let vertices = vertex_ids(&h, &id);
    let source = &vertices[0];
    h.wait_for("the job running", DEADLINE, || flint_tests::all_running(&h.job(&id)).then_some(()));
    let first = h.get_ok(&format!("/jobs/{id}/vertices/{source}/flamegraph?type=on_cpu"));
    assert!(first["endTimestamp"] == -3 || first["data"].is_object(), "waiting for the samples: {first}");
    let graph = h.wait_for("a sampled flame graph", DEADLINE, || {
        let g = h.get_ok(&format!("/jobs/{id}/vertices/{source}/flamegraph?type=on_cpu"));
        (g["endTimestamp"].as_i64()? > 0).then_some(g)
    });
    let root = &graph["data"];
    assert_eq!(root["name"], "root", "{graph}");
    let total = root["value"].as_u64().unwrap();
    assert!(total > 0, "on-CPU samples of the source thread: {graph}");
    let children_sum: u64 = root["children"].as_array().unwrap().iter().map(|c| c["value"].as_u64().unwrap()).sum();
    assert_eq!(children_sum, total, "a node's value is the sum of its children's at the root: {graph}");
    let text = graph.to_string();
    assert!(text.contains("flint_taskmanager"), "Flint's own functions are on the stacks: {text:.2000}");
    fn depth(node: &Value) -> usize {
        1 + node["children"].as_array().map_or(0, |c| c.iter().map(depth).max().unwrap_or(0))
    }
    assert!(depth(root) <= 41, "at most 40 frames under the root: {}", depth(root));
    // One subtask, the off-CPU view (empty: only on-CPU time is sampled), bad parameters.
    let one = h.wait_for("the subtask's graph", DEADLINE, || {
        let g = h.get_ok(&format!("/jobs/{id}/vertices/{source}/flamegraph?type=full&subtaskindex=0"));
        (g["endTimestamp"].as_i64()? > 0).then_some(g)
    });
    assert!(one["data"]["value"].as_u64().unwrap() > 0, "{one}");
    let off = h.wait_for("the off-CPU graph", DEADLINE, || {
        let g = h.get_ok(&format!("/jobs/{id}/vertices/{source}/flamegraph?type=off_cpu"));
        (g["endTimestamp"].as_i64()? > 0).then_some(g)
    });
    assert_eq!(off["data"]["value"], 0, "{off}");
    for bad in ["type=hot", "subtaskindex=7", "subtaskindex=x"] {
        let reply = h.get(&format!("/jobs/{id}/vertices/{source}/flamegraph?{bad}")).unwrap();
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }
    let reply = h.patch(&format!("/jobs/{id}?mode=cancel")).unwrap();
    assert_eq!(reply.status, 202);
    h.wait_job_state(&id, "CANCELED", DEADLINE);
    assert_eq!(h.get_ok(&format!("/jobs/{id}/vertices/{source}/flamegraph")), json!({ "endTimestamp": -1 }));
}
