//! The Kafka test harness (`flint_tests::kafka`) against the real broker it starts (tansu):
//! topics, produce and consume with keys, timestamps and headers, a consumer group's committed
//! offsets, ListOffsets by timestamp, and all of that surviving a restart of the broker. Every
//! wait has a deadline; the broker's log is printed when a test fails.

use std::collections::BTreeMap;
use std::time::Duration;

use flint_tests::kafka::{unique_topic, ConsumedRecord, KafkaBroker, TestRecord};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const RECORDS: usize = 1_000;
const PARTITIONS: i32 = 4;
/// Record `i` has the timestamp `BASE_TIMESTAMP + 10 * i`.
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;
const DEADLINE: Duration = Duration::from_secs(20);

fn timestamp_of(index: usize) -> i64 {
    BASE_TIMESTAMP + 10 * index as i64
}

/// Joins `group` with a subscribing consumer, reads `count` records of `topic`, commits the
/// next offset of every partition it read from (as a member of the group) and leaves.
/// Returns what it committed.
fn read_and_commit(broker: &KafkaBroker, group: &str, topic: &str, count: usize) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("group consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let until = std::time::Instant::now() + DEADLINE;
    let mut next = BTreeMap::new();
    let mut read = 0;
    while read < count {
        assert!(std::time::Instant::now() < until, "group {group} read {read} of {count} records within {DEADLINE:?}");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                next.insert(message.partition(), message.offset() + 1);
                read += 1;
            }
            Some(Err(e)) => eprintln!("group consumer: {e}"),
            None => {}
        }
    }
    let mut offsets = TopicPartitionList::new();
    for (&partition, &offset) in &next {
        offsets.add_partition_offset(topic, partition, Offset::Offset(offset)).expect("offset");
    }
    consumer.commit(&offsets, CommitMode::Sync).expect("commit as a group member");
    next
}

/// For every partition, the offset of the first record at or after `timestamp` (`None` if
/// there is none), from the records' known positions.
fn expected_offsets_for_time(positions: &[(i32, i64)], timestamp: i64) -> BTreeMap<i32, Option<i64>> {
    let mut expected: BTreeMap<i32, Option<i64>> = (0..PARTITIONS).map(|p| (p, None)).collect();
    for (index, &(partition, offset)) in positions.iter().enumerate() {
        if timestamp_of(index) >= timestamp {
            let first = expected.get_mut(&partition).expect("known partition");
            *first = Some(first.map_or(offset, |o| o.min(offset)));
        }
    }
    expected
}

#[test]
fn records_group_offsets_and_timestamps_survive_a_broker_restart() {
    let mut broker = KafkaBroker::start("kafka_broker");
    let topic = "harness-records";
    broker.create_topic(topic, PARTITIONS);
    assert_eq!(broker.partitions(topic), (0..PARTITIONS).collect::<Vec<_>>());

    // 1,000 keyed records, placed by the producer's partitioner.
    let records: Vec<TestRecord> = (0..RECORDS)
        .map(|i| {
            TestRecord::keyed(format!("key-{i}"), format!("value-{i}"))
                .timestamp(timestamp_of(i))
                .header("index", i.to_string())
        })
        .collect();
    let positions = broker.produce(topic, &records);
    let mut per_partition = BTreeMap::<i32, i64>::new();
    for &(partition, offset) in &positions {
        let count = per_partition.entry(partition).or_default();
        assert_eq!(offset, *count, "offsets of partition {partition} are dense and in production order");
        *count += 1;
    }
    assert_eq!(per_partition.len(), PARTITIONS as usize, "records spread over all partitions: {per_partition:?}");
    assert_eq!(broker.end_offsets(topic), per_partition);

    let mut expected: Vec<ConsumedRecord> = records
        .iter()
        .zip(&positions)
        .map(|(record, &(partition, offset))| ConsumedRecord {
            partition,
            offset,
            key: record.key.clone(),
            value: record.value.clone(),
            timestamp: record.timestamp,
            headers: record.headers.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect(),
        })
        .collect();
    expected.sort_by_key(|r| (r.partition, r.offset));
    assert_eq!(broker.consume(topic, RECORDS, DEADLINE), expected);

    // A consumer group commits as a member; the offsets read back are the committed ones.
    let group = "harness-group";
    let committed = read_and_commit(&broker, group, topic, 400);
    assert_eq!(broker.committed_offsets(group, topic), committed);
    // And a commit from outside the group (the group is empty now).
    let outside: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 1 + p as i64)).collect();
    broker.commit_offsets("harness-other-group", topic, &outside);
    assert_eq!(broker.committed_offsets("harness-other-group", topic), outside);
    assert!(broker.committed_offsets("harness-no-group", topic).is_empty());

    // ListOffsets by timestamp: between records 500 and 501, and exactly on record 0 (after the
    // last record: see `offsets_for_a_time_after_the_last_record_are_none`).
    let between = timestamp_of(500) + 5;
    let by_time = broker.offsets_for_time(topic, between);
    assert_eq!(by_time, expected_offsets_for_time(&positions, between));
    let at_start: BTreeMap<i32, Option<i64>> = (0..PARTITIONS).map(|p| (p, Some(0))).collect();
    assert_eq!(broker.offsets_for_time(topic, BASE_TIMESTAMP), at_start);

    broker.restart();
    assert_eq!(broker.partitions(topic), (0..PARTITIONS).collect::<Vec<_>>());
    assert_eq!(broker.end_offsets(topic), per_partition);
    assert_eq!(broker.consume(topic, RECORDS, DEADLINE), expected);
    assert_eq!(broker.committed_offsets(group, topic), committed);
    assert_eq!(broker.committed_offsets("harness-other-group", topic), outside);
    assert_eq!(broker.offsets_for_time(topic, between), by_time);

    // Offsets go on where they were.
    let after = broker.produce(topic, &[TestRecord::keyed("after", "restart").partition(0)]);
    assert_eq!(after, vec![(0, per_partition[&0])]);
    assert!(broker.log().contains("start #2"), "the log keeps both starts:\n{}", broker.log());
}

#[test]
fn topics_are_deleted_and_partitions_cannot_be_added_to_tansu() {
    let mut broker = KafkaBroker::start("kafka_broker_topics");
    assert!(!broker.supports_transactions());
    broker.create_topic("short-lived", 2);
    broker.produce("short-lived", &[TestRecord::value("one"), TestRecord::value("two").partition(1)]);
    assert_eq!(broker.consume_all("short-lived", Duration::from_millis(500)).len(), 2);
    let error = broker.add_partitions("short-lived", 4).expect_err("tansu cannot add partitions");
    assert!(error.contains("CreatePartitions") && error.contains("UnsupportedFeature"), "{error}");
    broker.delete_topic("short-lived");

    // Stopped, clients see no broker; started again, the topic is still gone and a new one works.
    broker.stop();
    assert!(!broker.is_running());
    broker.start_again();
    broker.create_topic("short-lived", 1);
    assert_eq!(broker.end_offsets("short-lived"), BTreeMap::from([(0, 0)]));
    let read = broker.consume_all("short-lived", Duration::from_millis(300));
    assert!(read.is_empty(), "a re-created topic starts empty: {read:?}");
}

/// Kafka answers ListOffsets for a timestamp after the last record of a partition with -1
/// (no such record); tansu 0.6.0 answers offset 0, which would make a source starting "from
/// a timestamp" re-read the whole partition. Runs against a real Kafka with
/// `FLINT_TEST_KAFKA_BOOTSTRAP`.
#[test]
#[ignore = "tansu 0.6.0 answers ListOffsets for a timestamp after the last record with offset 0, not -1"]
fn offsets_for_a_time_after_the_last_record_are_none() {
    let broker = KafkaBroker::external_or_start("kafka_broker_late");
    let topic = unique_topic("harness-late");
    broker.create_topic(&topic, 2);
    broker.produce(&topic, &[TestRecord::value("a").partition(0).timestamp(BASE_TIMESTAMP)]);
    let none = BTreeMap::from([(0, None), (1, None)]);
    assert_eq!(broker.offsets_for_time(&topic, BASE_TIMESTAMP + 1), none);
}
