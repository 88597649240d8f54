//! `source.kafka` and `sink.kafka` on a real cluster against a real Kafka-protocol broker
//! (tansu, started by the harness; `FLINT_TEST_KAFKA_BOOTSTRAP` points the tests at another
//! broker instead).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use flint_tests::kafka::{unique_topic, KafkaBroker, TestRecord};
use flint_tests::{read_output_lines, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);
const KEYS: u64 = 50;

fn cluster(name: &str, taskmanagers: usize) -> Harness {
    let mut h = Harness::new(name);
    h.set("heartbeat.interval", "1 s").set("heartbeat.timeout", "5 s");
    h.start_jobmanager("jobmanager");
    for i in 1..=taskmanagers {
        h.start_taskmanager(&format!("taskmanager-{i}"), &["taskmanager.numberOfTaskSlots=4".into()]);
    }
    let slots = 4 * taskmanagers as u64;
    h.wait_for_overview("the task managers", DEADLINE, |o| o["slots-total"] == slots);
    h
}

/// `count` JSON records `{"k": "k<n % 50>", "n": n}` for n in `from..from+count`, keyed by `k`.
fn numbered(from: u64, count: u64) -> Vec<TestRecord> {
    (from..from + count)
        .map(|n| {
            let k = format!("k{}", n % KEYS);
            TestRecord::keyed(k.clone(), json!({ "k": k, "n": n }).to_string())
        })
        .collect()
}

fn source(broker: &KafkaBroker, topic: &str, extra: Value) -> Value {
    let mut op = json!({
        "id": "events", "op": "source.kafka", "topic": topic,
        "properties.bootstrap.servers": broker.bootstrap(),
        "scan.startup.mode": "earliest-offset",
        "format": "json", "schema": { "k": "string", "n": "integer" }
    });
    for (k, v) in extra.as_object().unwrap() {
        op[k] = v.clone();
    }
    op
}

/// `n` of every row of a JSON file sink.
fn output_numbers(dir: &Path) -> Vec<u64> {
    read_output_lines(dir)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["n"].as_u64().unwrap_or_else(|| panic!("bad row {l}")))
        .collect()
}

/// Every number of `0..expected` appears exactly once.
fn assert_each_once(mut numbers: Vec<u64>, expected: u64) {
    numbers.sort_unstable();
    let duplicates = numbers.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(duplicates, 0, "{duplicates} duplicated records");
    assert_eq!(numbers.len() as u64, expected, "records: {} of {expected}", numbers.len());
    assert_eq!(numbers.last().copied(), expected.checked_sub(1));
}

/// Every key's running counts `1..=per_key` appear exactly once (text sink of `k \t c`).
fn assert_counts_exactly_once(dir: &Path, per_key: u64) {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in read_output_lines(dir) {
        let (k, c) = line.split_once('\t').unwrap_or_else(|| panic!("bad line {line:?}"));
        seen.entry(k.to_owned()).or_default().push(c.parse().unwrap());
    }
    assert_eq!(seen.len() as u64, KEYS, "keys: {:?}", seen.keys().collect::<Vec<_>>());
    for (key, mut counts) in seen {
        counts.sort_unstable();
        let expected: Vec<u64> = (1..=per_key).collect();
        assert!(
            counts == expected,
            "key {key}: {} rows, last {:?}; expected 1..={per_key} once each",
            counts.len(),
            counts.last()
        );
    }
}

fn poll_operation(h: &Harness, path: &str) -> Value {
    h.wait_for(&format!("operation {path}"), DEADLINE, || {
        let r = h.get_ok(path);
        (r["status"]["id"] == "COMPLETED").then_some(r)
    })
}

/// `POST /jobs/:id/stop` into `<home>/savepoints` without draining; the trigger id.
fn stop_with_savepoint(h: &Harness, id: &str) -> String {
    let body = json!({ "targetDirectory": h.home.join("savepoints"), "drain": false });
    let reply = h.post_json(&format!("/jobs/{id}/stop"), &body).unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body["request-id"].as_str().unwrap().to_string()
}

fn completed_checkpoints(h: &Harness, id: &str) -> u64 {
    h.get(&format!("/jobs/{id}/checkpoints")).ok().and_then(|r| r.body["counts"]["completed"].as_u64()).unwrap_or(0)
}

/// 8 partitions of keyed records → running count per key → exactly-once file sink, p=4 on
/// 2 taskmanagers, with a failure injected mid-run: after the restore from a checkpoint
/// every key's running counts appear exactly once, which holds only if the source resumed
/// every partition from the offsets in the checkpoint. Offsets are committed to the
/// consumer group when checkpoints complete.
#[test]
fn exactly_once_through_a_failure_resumes_every_partition_from_the_checkpoint() {
    const RECORDS: u64 = 200_000;
    let broker = KafkaBroker::external_or_start("eo-source");
    let topic = unique_topic("eo-source");
    broker.create_topic(&topic, 8);
    let started = Instant::now();
    broker.produce(&topic, &numbered(0, RECORDS));
    println!("produced {RECORDS} records in {:?}", started.elapsed());

    let h = cluster("kafka-eo-source", 2);
    let out = h.home.join("out");
    let group = format!("{topic}-group");
    let spec = json!({
        "flint": 1, "name": "kafka-counts", "parallelism": 4,
        "config": {
            "execution.checkpointing.interval": "200 ms",
            "state.checkpoints.dir": h.home.join("checkpoints"),
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": "3",
            "restart-strategy.fixed-delay.delay": "200 ms"
        },
        "operators": [
            source(&broker, &topic, json!({ "scan.bounded.mode": "latest-offset", "properties.group.id": group })),
            { "id": "counts", "op": "aggregate", "inputs": ["events"], "key": ["k"], "aggs": { "c": "count()" } },
            { "id": "boom", "op": "fail", "inputs": ["counts"], "subtask": 1, "after": RECORDS / 4 / 2 },
            { "id": "out", "op": "sink.file", "inputs": ["boom"], "path": out }
        ]
    });
    let id = h.submit("", &spec);
    let done = h.wait_job_state(&id, "FINISHED", DEADLINE);
    assert!(done["timestamps"]["RESTARTING"].as_u64().unwrap_or(0) > 0, "the job restarted: {done}");
    let stats = h.get_ok(&format!("/jobs/{id}/checkpoints"));
    assert!(stats["latest"]["restored"]["id"].as_u64().is_some(), "restored from a checkpoint: {stats}");
    assert_counts_exactly_once(&out, RECORDS / KEYS);

    // The group's committed offsets only come from completed checkpoints: never beyond the end.
    let committed = broker.committed_offsets(&group, &topic);
    let end = broker.end_offsets(&topic);
    assert!(!committed.is_empty(), "offsets were committed to {group}");
    for (partition, offset) in &committed {
        assert!(*offset <= end[partition], "partition {partition}: committed {offset} > end {}", end[partition]);
    }
}

/// A savepoint of an unbounded p=4 read, resumed at p=2 and (separately) at p=8 with more
/// records produced meanwhile: each resumed run reads every partition from where the
/// savepoint left it, so the first run's output plus either resumed run's output is every
/// record exactly once.
#[test]
fn savepoint_at_p4_resumes_at_p2_and_p8_from_the_same_offsets() {
    const FIRST: u64 = 40_000;
    const SECOND: u64 = 20_000;
    let broker = KafkaBroker::external_or_start("rescale");
    let topic = unique_topic("rescale");
    broker.create_topic(&topic, 8);
    broker.produce(&topic, &numbered(0, FIRST));

    let h = cluster("kafka-rescale", 2);
    let job = |out: &Path, bounded: bool| {
        let extra = if bounded { json!({ "scan.bounded.mode": "latest-offset" }) } else { json!({}) };
        json!({
            "flint": 1, "name": "kafka-copy",
            "config": { "execution.checkpointing.interval": "300 ms", "state.checkpoints.dir": h.home.join("checkpoints") },
            "operators": [
                source(&broker, &topic, extra),
                { "id": "out", "op": "sink.file", "inputs": ["events"], "path": out, "format": "json" }
            ]
        })
    };
    let first_out = h.home.join("first");
    let id = h.submit("?parallelism=4", &job(&first_out, false));
    h.wait_for("the first records to be read", DEADLINE, || {
        let read = h.accumulators(&id).get("sink-records").copied().unwrap_or(0);
        (read >= FIRST).then_some(())
    });
    let trigger = stop_with_savepoint(&h, &id);
    let status = poll_operation(&h, &format!("/jobs/{id}/savepoints/{trigger}"));
    let location = status["operation"]["location"].as_str().unwrap_or_else(|| panic!("savepoint failed: {status}"));
    h.wait_job_state(&id, "FINISHED", DEADLINE);
    let first = output_numbers(&first_out);
    assert_each_once(first.clone(), FIRST);

    broker.produce(&topic, &numbered(FIRST, SECOND));
    for parallelism in [2, 8] {
        let out = h.home.join(format!("resumed-p{parallelism}"));
        let resumed = h.submit(&format!("?parallelism={parallelism}&savepointPath={location}"), &job(&out, true));
        h.wait_job_state(&resumed, "FINISHED", DEADLINE);
        let mut all = first.clone();
        let more = output_numbers(&out);
        assert_eq!(more.len() as u64, SECOND, "p={parallelism} read only what came after the savepoint");
        all.extend(more);
        assert_each_once(all, FIRST + SECOND);
    }
}

/// source.kafka → map → sink.kafka at-least-once, end to end through the broker: every
/// record arrives in the output topic, with its key and in the partition of its key.
#[test]
fn at_least_once_sink_writes_every_record_to_the_output_topic() {
    const RECORDS: u64 = 30_000;
    let broker = KafkaBroker::external_or_start("alo-sink");
    let (input, output) = (unique_topic("alo-in"), unique_topic("alo-out"));
    broker.create_topic(&input, 4);
    broker.create_topic(&output, 3);
    broker.produce(&input, &numbered(0, RECORDS));

    let h = cluster("kafka-alo-sink", 1);
    let spec = json!({
        "flint": 1, "name": "kafka-to-kafka", "parallelism": 2,
        "config": { "execution.checkpointing.interval": "200 ms", "state.checkpoints.dir": h.home.join("checkpoints") },
        "operators": [
            source(&broker, &input, json!({ "scan.bounded.mode": "latest-offset" })),
            { "id": "doubled", "op": "map", "inputs": ["events"], "fields": { "k": "k", "n": "n", "twice": "n * 2" } },
            { "id": "out", "op": "sink.kafka", "inputs": ["doubled"], "topic": output,
              "properties.bootstrap.servers": broker.bootstrap(), "format": "json",
              "key.format": "raw", "key.fields": ["k"], "sink.delivery-guarantee": "at-least-once" }
        ]
    });
    let id = h.submit("", &spec);
    h.wait_job_state(&id, "FINISHED", DEADLINE);
    let records = broker.consume(&output, RECORDS as usize, DEADLINE);
    let mut numbers = Vec::new();
    let mut partition_of_key: BTreeMap<String, i32> = BTreeMap::new();
    for r in &records {
        let v: Value = serde_json::from_str(&r.value_str()).unwrap();
        let n = v["n"].as_u64().unwrap();
        assert_eq!(v["twice"].as_u64(), Some(n * 2), "{v}");
        assert_eq!(r.key_str(), v["k"].as_str().unwrap(), "the key is field k");
        let first = *partition_of_key.entry(r.key_str()).or_insert(r.partition);
        assert_eq!(first, r.partition, "key {} in two partitions", r.key_str());
        numbers.push(n);
    }
    assert_each_once(numbers, RECORDS);
}

/// Unreadable records fail the job with the position of the record, or are skipped and
/// counted with `json.ignore-parse-errors`; a topic that does not exist fails the job with
/// a clear error.
#[test]
fn bad_records_and_missing_topics_have_clear_outcomes() {
    let broker = KafkaBroker::external_or_start("bad-records");
    let topic = unique_topic("bad");
    broker.create_topic(&topic, 1);
    let mut records = numbered(0, 10);
    records.insert(4, TestRecord::value("{not json"));
    records.insert(7, TestRecord::value(r#"{"k": "x", "n": "not a number"}"#));
    broker.produce(&topic, &records);

    let h = cluster("kafka-bad", 1);
    let job = |name: &str, topic: &str, extra: Value| {
        let mut extra = extra;
        extra["scan.bounded.mode"] = json!("latest-offset");
        json!({
            "flint": 1, "name": name, "parallelism": 1,
            "operators": [
                source(&broker, topic, extra),
                { "id": "out", "op": "sink.file", "inputs": ["events"], "path": h.home.join(name), "format": "json" }
            ]
        })
    };
    let failing = h.submit("", &job("strict", &topic, json!({})));
    h.wait_job_state(&failing, "FAILED", DEADLINE);
    let exceptions = h.get_ok(&format!("/jobs/{failing}/exceptions"));
    let root = exceptions["root-exception"].as_str().unwrap_or_default();
    assert!(root.contains(&format!("{topic}-0 offset 4")) && root.contains("json.ignore-parse-errors"), "{root}");

    let skipping = h.submit("", &job("skipping", &topic, json!({ "json.ignore-parse-errors": true })));
    h.wait_job_state(&skipping, "FINISHED", DEADLINE);
    assert_each_once(output_numbers(&h.home.join("skipping")), 10);
    assert_eq!(h.accumulators(&skipping).get("kafka-records-skipped"), Some(&2));

    let missing = h.submit("", &job("missing", "no-such-topic-here", json!({})));
    h.wait_job_state(&missing, "FAILED", DEADLINE);
    let exceptions = h.get_ok(&format!("/jobs/{missing}/exceptions"));
    let root = exceptions["root-exception"].as_str().unwrap_or_default();
    assert!(root.contains("topic 'no-such-topic-here' does not exist"), "{root}");

    // Invalid parameters are refused at submission with 400.
    let mut bad = job("bad-params", &topic, json!({ "scan.startup.mode": "sometime" }));
    bad["operators"][0]["properties.enable.auto.commit"] = json!(true);
    let reply = h.post_json("/jobs", &bad).unwrap();
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.text.contains("scan.startup.mode") && reply.text.contains("enable.auto.commit"), "{}", reply.text);
}

/// The broker stops for a few seconds while an unbounded job reads: the job keeps running
/// (the client reconnects), and records produced after the restart arrive exactly once.
#[test]
fn a_broker_restart_during_a_run_loses_nothing() {
    const BEFORE: u64 = 5_000;
    const AFTER: u64 = 5_000;
    let mut broker = KafkaBroker::start("restart");
    let topic = unique_topic("restart");
    broker.create_topic(&topic, 4);
    broker.produce(&topic, &numbered(0, BEFORE));

    let h = cluster("kafka-broker-restart", 1);
    let out = h.home.join("out");
    let spec = json!({
        "flint": 1, "name": "kafka-through-restart", "parallelism": 2,
        "config": {
            "execution.checkpointing.interval": "300 ms", "state.checkpoints.dir": h.home.join("checkpoints"),
            "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": "10",
            "restart-strategy.fixed-delay.delay": "1 s"
        },
        "operators": [
            source(&broker, &topic, json!({})),
            { "id": "out", "op": "sink.file", "inputs": ["events"], "path": out, "format": "json" }
        ]
    });
    let id = h.submit("", &spec);
    let sunk = |h: &Harness| h.accumulators(&id).get("sink-records").copied().unwrap_or(0);
    h.wait_for("the first records", DEADLINE, || (sunk(&h) >= BEFORE).then_some(()));
    broker.stop();
    // The outage itself: the broker stays away this long (nothing to wait for).
    std::thread::sleep(Duration::from_secs(3));
    broker.start_again();
    broker.produce(&topic, &numbered(BEFORE, AFTER));
    h.wait_for("the records produced after the restart", DEADLINE, || (sunk(&h) >= BEFORE + AFTER).then_some(()));
    // Committed output needs a checkpoint after the last record; stop with a savepoint.
    let checkpoints = completed_checkpoints(&h, &id);
    h.wait_for("a checkpoint after the records", DEADLINE, || {
        (completed_checkpoints(&h, &id) > checkpoints + 1).then_some(())
    });
    stop_with_savepoint(&h, &id);
    h.wait_job_state(&id, "FINISHED", DEADLINE);
    assert_each_once(output_numbers(&out), BEFORE + AFTER);
}

/// The source's lag and offset metrics under Flink's names, over REST and in the
/// taskmanager's Prometheus reporter: once the job caught up, nothing is pending, each
/// partition's current offset is its last record's, and completed checkpoints committed the
/// next offsets to the consumer group (which the broker confirms).
#[test]
fn lag_and_offset_metrics_have_flinks_names() {
    const RECORDS: u64 = 3_000;
    let broker = KafkaBroker::external_or_start("metrics");
    let topic = unique_topic("metrics");
    broker.create_topic(&topic, 3);
    broker.produce(&topic, &numbered(0, RECORDS));
    let group = format!("{topic}-group");

    let mut h = Harness::new("kafka-metrics");
    // One reporter port each for the jobmanager and the taskmanager, whichever binds first.
    let ports = flint_tests::free_ports(2);
    h.set("metrics.reporter.prom.factory.class", "org.apache.flink.metrics.prometheus.PrometheusReporterFactory");
    h.set("metrics.reporter.prom.port", format!("{},{}", ports[0], ports[1]));
    h.set("heartbeat.interval", "1 s");
    h.start_taskmanager("taskmanager-1", &["taskmanager.numberOfTaskSlots=2".into()]);
    h.start_jobmanager("jobmanager");
    h.wait_for_overview("the task manager", DEADLINE, |o| o["slots-total"] == 2);
    let spec = json!({
        "flint": 1, "name": "kafka-metrics", "parallelism": 1,
        "config": { "execution.checkpointing.interval": "300 ms", "state.checkpoints.dir": h.home.join("checkpoints") },
        "operators": [
            source(&broker, &topic, json!({ "properties.group.id": group })),
            { "id": "out", "op": "sink.blackhole", "inputs": ["events"] }
        ]
    });
    let id = h.submit("", &spec);
    let vertex = h.get_ok(&format!("/jobs/{id}"))["vertices"][0]["id"].as_str().unwrap().to_owned();
    let ends = broker.end_offsets(&topic);
    let metric = |name: &str| -> Option<f64> {
        let path = format!("/jobs/{id}/vertices/{vertex}/metrics?get=0.events.{name}");
        h.get(&path).ok()?.body[0]["value"].as_str()?.parse().ok()
    };
    let caught_up = || {
        (metric("pendingRecords")? == 0.0).then_some(())?;
        for (partition, end) in &ends {
            let at = |what: &str| metric(&format!("KafkaSourceReader.topic.{topic}.partition.{partition}.{what}"));
            (at("currentOffset")? == (*end - 1) as f64 && at("committedOffset")? == *end as f64).then_some(())?;
        }
        Some(())
    };
    h.wait_for("the source to catch up and commit", DEADLINE, caught_up);
    assert_eq!(metric("KafkaSourceReader.KafkaConsumer.records-lag-max"), Some(0.0));
    assert_eq!(broker.committed_offsets(&group, &topic), ends, "the group's offsets");
    // The commits at completed checkpoints, counted from their results.
    h.wait_for("a confirmed offset commit", DEADLINE, || {
        (metric("KafkaSourceReader.commitsSucceeded")? >= 1.0).then_some(())
    });
    assert_eq!(metric("KafkaSourceReader.commitsFailed"), Some(0.0));

    // The reporter: the topic and partition are labels, as Flink's key/value groups (label
    // values filtered as Flink's reporter does by default: `-` becomes `_`).
    let topic_label = topic.replace('-', "_");
    let scrape: String = ports
        .iter()
        .map(|port| {
            let reply = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap();
            reply.into_body().read_to_string().unwrap()
        })
        .collect();
    for (partition, end) in &ends {
        let line = scrape
            .lines()
            .find(|l| {
                l.starts_with("flink_taskmanager_job_task_operator_KafkaSourceReader_topic_partition_committedOffset{")
                    && l.contains(&format!("topic=\"{topic_label}\""))
                    && l.contains(&format!("partition=\"{partition}\""))
            })
            .unwrap_or_else(|| panic!("no committedOffset of partition {partition} in\n{scrape}"));
        assert!(line.ends_with(&format!(" {end}")) || line.ends_with(&format!(" {end}.0")), "{line}");
    }
    assert!(scrape.contains("flink_taskmanager_job_task_operator_pendingRecords{"), "{scrape}");
    assert!(scrape.contains("flink_taskmanager_job_task_operator_KafkaSourceReader_KafkaConsumer_records_lag_max{"));
    assert!(scrape.contains("flink_taskmanager_job_task_operator_KafkaSourceReader_commitsSucceeded{"));
    h.delete(&format!("/jobs/{id}")).unwrap();
}

/// `key.format` / `key.fields` on the source: fields decoded from the record key (csv here)
/// and the others from the value (`value.fields-include: EXCEPT_KEY`), in the declared
/// order. A record without a key has null key fields; an unreadable key is skipped and
/// counted with `json.ignore-parse-errors`, or fails the job naming the record.
#[test]
fn source_key_fields_are_decoded_from_the_record_key() {
    let broker = KafkaBroker::external_or_start("source-keys");
    let topic = unique_topic("keys");
    broker.create_topic(&topic, 1);
    let mut records: Vec<TestRecord> = (0..20)
        .map(|n| TestRecord::keyed(format!("u{},{n}", n % 3), json!({ "amount": n as f64 / 2.0 }).to_string()))
        .collect();
    records.push(TestRecord::value(json!({ "amount": 99.5 }).to_string()));
    records.push(TestRecord::keyed("u1,not-a-number", json!({ "amount": 1.0 }).to_string()));
    broker.produce(&topic, &records);

    let h = cluster("kafka-source-keys", 1);
    let job = |name: &str, extra: Value| {
        let mut op = source(
            &broker,
            &topic,
            json!({ "scan.bounded.mode": "latest-offset", "schema": { "user": "string", "amount": "float", "id": "integer" },
                    "key.format": "csv", "key.fields": ["user", "id"], "value.fields-include": "EXCEPT_KEY" }),
        );
        for (k, v) in extra.as_object().unwrap() {
            op[k] = v.clone();
        }
        json!({
            "flint": 1, "name": name, "parallelism": 1,
            "operators": [
                op,
                { "id": "out", "op": "sink.file", "inputs": ["events"], "path": h.home.join(name), "format": "json" }
            ]
        })
    };
    let strict = h.submit("", &job("strict", json!({})));
    h.wait_job_state(&strict, "FAILED", DEADLINE);
    let root =
        h.get_ok(&format!("/jobs/{strict}/exceptions"))["root-exception"].as_str().unwrap_or_default().to_owned();
    assert!(root.contains(&format!("the key of the record at {topic}-0 offset 21")), "{root}");

    let skipping = h.submit("", &job("skipping", json!({ "json.ignore-parse-errors": true })));
    h.wait_job_state(&skipping, "FINISHED", DEADLINE);
    assert_eq!(h.accumulators(&skipping).get("kafka-records-skipped"), Some(&1));
    let rows: Vec<Value> =
        read_output_lines(&h.home.join("skipping")).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 21, "{rows:?}");
    for n in 0..20u64 {
        let row = rows.iter().find(|r| r["id"] == n).unwrap_or_else(|| panic!("no id {n} in {rows:?}"));
        assert_eq!(row["user"], format!("u{}", n % 3), "{row}");
        assert_eq!(row["amount"].as_f64(), Some(n as f64 / 2.0), "{row}");
        let fields: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 3, "{row}");
    }
    let keyless = rows.iter().find(|r| r["amount"].as_f64() == Some(99.5)).expect("the record without a key");
    assert!(keyless["user"].is_null() && keyless["id"].is_null(), "{keyless}");
}

/// Flink's final checkpoint (`execution.checkpointing.checkpoints-after-tasks-finish`): a
/// bounded pipeline into an exactly-once Kafka sink ends long before another pipeline of the
/// same job fails. Its tasks wait for a checkpoint taken after the end of every input, so
/// the failure restores a checkpoint that covers its whole output and nothing is written
/// twice. (Before, the sink committed its tail when its input ended and no checkpoint
/// followed; the restart wrote everything again.) Against librdkafka's mock cluster, which
/// takes transactions: the sink produces records only inside the transaction that commits
/// them, so counting what the topic holds counts what was committed.
#[test]
fn a_bounded_exactly_once_kafka_sink_commits_its_tail_through_the_final_checkpoint() {
    const RECORDS: u64 = 20_000;
    let mock = rdkafka::mocking::MockCluster::new(1).expect("librdkafka mock cluster");
    let broker = KafkaBroker::mock_cluster(&mock.bootstrap_servers());
    let output = unique_topic("final-out");
    mock.create_topic(&output, 2, 1).expect("create the output topic");

    let h = cluster("kafka-final-checkpoint", 1);
    let spec = json!({
        "flint": 1, "name": "final-checkpoint", "parallelism": 2,
        "config": {
            "execution.checkpointing.interval": "200 ms",
            "state.checkpoints.dir": h.home.join("checkpoints"),
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": "3",
            "restart-strategy.fixed-delay.delay": "100 ms"
        },
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": RECORDS - 1 },
            { "id": "out", "op": "sink.kafka", "inputs": ["numbers"], "topic": output,
              "properties.bootstrap.servers": broker.bootstrap(), "format": "json",
              "sink.delivery-guarantee": "exactly-once",
              "sink.transactional-id-prefix": unique_topic("final") },
            // A slower pipeline that fails once, well after the first one ended.
            { "id": "slow", "op": "source.sequence", "from": 0, "to": 5_999, "rate": 2000 },
            { "id": "boom", "op": "fail", "inputs": ["slow"], "subtask": 0, "after": 1500 },
            { "id": "discard", "op": "sink.blackhole", "inputs": ["boom"] }
        ]
    });
    let id = h.submit("", &spec);
    let done = h.wait_job_state(&id, "FINISHED", DEADLINE);
    assert!(done["timestamps"]["RESTARTING"].as_u64().unwrap_or(0) > 0, "the job restarted: {done}");
    let numbers = broker
        .consume_all(&output, Duration::from_secs(2))
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.value_str()).unwrap()["n"].as_u64().unwrap())
        .collect();
    assert_each_once(numbers, RECORDS);
    assert!(completed_checkpoints(&h, &id) >= 1, "checkpoints completed");
}
