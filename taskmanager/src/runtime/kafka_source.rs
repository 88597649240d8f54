//! `source.kafka`: reads Kafka topics as Flink's `KafkaSource` does (FLIP-27, partitions
//! as splits).
//!
//! - **Splits.** Every partition of the topics (a list, or those matching `topic-pattern`)
//!   is owned by exactly one instance, chosen as Flink's enumerator does
//!   (`(hash(topic) * 31 & 0x7FFFFFFF) % parallelism + partition`, modulo parallelism), so
//!   instances agree without talking to each other. Partitions that appear later are found
//!   every `scan.topic-partition-discovery.interval` and start at their earliest offset.
//! - **Fetching.** A fetcher thread per instance (Flink's split fetcher) owns a librdkafka
//!   consumer with manual assignment (no group rebalancing), polls, decodes up to a batch of
//!   records into an Arrow batch and hands it over through a queue of [`QUEUE`] batches
//!   (back-pressure stops the polling).
//! - **Checkpoints.** The state is, per owned partition, the offset of the next record not
//!   emitted yet (and the stop offset of a bounded read), in a union list: a restore at any
//!   parallelism gives every instance every partition's position and each keeps the ones it
//!   owns now. Offsets are committed to `properties.group.id` when a checkpoint completes,
//!   never before (`enable.auto.commit` is off), for lag monitoring.
//! - **Event time.** With `timestamp_field`, each partition's watermark trails the largest
//!   timestamp it emitted by `max_out_of_orderness`; the source's watermark is the minimum
//!   over its partitions that are not idle (no record for `scan.watermark.idle-timeout`).
//!
//! Isolation is librdkafka's default, `read_committed`: records of open or aborted
//! transactions are not read.
//!
//! **Metrics** (Flink's `KafkaSourceReaderMetrics` names, below the source operator):
//! `pendingRecords` (records not emitted yet up to each partition's end: its last stable
//! offset under `read_committed`, else its high watermark, as librdkafka's statistics report
//! them every `statistics.interval.ms`, 1 s by default here),
//! `KafkaSourceReader.KafkaConsumer.records-lag-max` (the largest of those per partition),
//! `KafkaSourceReader.topic.<t>.partition.<p>.currentOffset` / `.committedOffset` (the
//! offset the group confirmed, from the statistics), and `KafkaSourceReader.commitsSucceeded`
//! / `.commitsFailed` (offset commits at completed checkpoints, from their results).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::{
    new_null_array, Array, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Array, Int64Builder,
    StringBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use flint_common::job::catalog::{
    property, topic_pattern, BoundedMode, KafkaFormat, KafkaSourceSpec, KafkaTopics, MetadataKey, OffsetReset,
    StartupMode,
};
use flint_common::messages::{GroupedMetric, MetricGroupKey};
use futures::future::BoxFuture;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::operator::{OperatorContext, SourceMetrics, SourceOperator, TaskError};
use crate::state::{decode_value, encode_value, Redistribution, StateError, StateStore};

/// The union list of partition positions.
const PARTITIONS: &str = "kafka-partitions";
/// Union list: `true` from an instance that had not assigned its first partitions yet when
/// the checkpoint was taken (their partitions then start by the startup mode, not earliest).
const STARTUP_PENDING: &str = "kafka-startup-pending";
/// Decoded batches waiting between the fetcher thread and the task.
const QUEUE: usize = 4;
/// How long metadata, offset and watermark requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A poll waits at most this long when nothing is buffered (also how often commands run).
const POLL: Duration = Duration::from_millis(50);

/// A partition's position in the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PartitionState {
    topic: String,
    partition: i32,
    /// The offset of the next record to emit.
    offset: i64,
    /// A bounded read stops before this offset.
    stop: Option<i64>,
}

type Tp = (Arc<str>, i32);

/// What the consumer's callbacks (on the fetcher thread) learn for the source's metrics.
#[derive(Debug, Default)]
struct ReaderMetrics {
    /// Per partition: the offset a reader can reach now (see the module doc).
    ends: Mutex<HashMap<(String, i32), i64>>,
    /// Per partition: the offset last committed to the consumer group.
    committed: Mutex<HashMap<(String, i32), i64>>,
    /// Offset commits the group coordinator confirmed, and those that failed.
    commits_succeeded: AtomicU64,
    commits_failed: AtomicU64,
}

/// The consumer's context: collects partition ends and committed offsets from librdkafka's
/// statistics, and the outcome of every offset commit.
struct SourceContext {
    metrics: Arc<ReaderMetrics>,
    read_committed: bool,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let mut ends = self.metrics.ends.lock().unwrap_or_else(|e| e.into_inner());
        let mut committed = self.metrics.committed.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                // librdkafka's internal "unassigned" partition is -1; -1 offsets are unknown.
                if partition < 0 {
                    continue;
                }
                let end = if self.read_committed && p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
                if end >= 0 {
                    ends.insert((topic.clone(), partition), end);
                }
                if p.committed_offset >= 0 {
                    committed.insert((topic.clone(), partition), p.committed_offset);
                }
            }
        }
    }
}

/// An asynchronous offset commit whose result comes back as an event on the consumer's queue,
/// which the fetcher's poll serves to [`SourceContext::commit_callback`]. rdkafka's
/// `commit(.., Async)` calls `rd_kafka_commit` without a reply queue, and librdkafka then
/// reports the result to nobody unless a global `offset_commit_cb` is set, which the Rust
/// client does not set; `rd_kafka_commit_queue` takes the queue to report to.
fn commit_reporting(consumer: &SourceConsumer, offsets: &TopicPartitionList) -> Result<(), KafkaError> {
    use rdkafka::bindings as rd;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live consumer handle (borrowed from `consumer` for this call).
    // `rd_kafka_queue_get_consumer` returns a new reference to the consumer queue (NULL
    // without a group), released below; `rd_kafka_commit_queue` copies `offsets` and keeps
    // its own reference to the queue for the reply, so both may go when it returns.
    let err = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            return Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::UnknownGroup));
        }
        let err = rd::rd_kafka_commit_queue(rk, offsets.ptr(), queue, None, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(queue);
        err
    };
    match rdkafka::types::RDKafkaErrorCode::from(err) {
        rdkafka::types::RDKafkaErrorCode::NoError => Ok(()),
        code => Err(KafkaError::ConsumerCommit(code)),
    }
}

impl ConsumerContext for SourceContext {
    /// The result of an asynchronous commit, served by the fetcher's poll.
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _offsets: &TopicPartitionList) {
        let counter = match result {
            Ok(()) => &self.metrics.commits_succeeded,
            Err(e) => {
                warn!("committing offsets to the consumer group failed: {e}");
                &self.metrics.commits_failed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

type SourceConsumer = BaseConsumer<SourceContext>;

/// Which instance owns a partition: Flink's `KafkaSourceEnumerator.getSplitOwner`.
pub fn split_owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let hash = java_string_hash(topic);
    let start = (hash.wrapping_mul(31) & 0x7FFF_FFFF) as u32 % parallelism;
    (start + partition as u32) % parallelism
}

/// Java's `String.hashCode` (over UTF-16 code units).
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// From the fetcher thread to the task.
enum Event {
    /// Partitions now read, with their starting positions.
    Assigned(Vec<PartitionState>),
    Batch(Fetched),
    /// Partitions that reached their stop offset.
    Done(Vec<Tp>),
    /// Every partition of a bounded read is done.
    Finished,
    Failed(TaskError),
}

/// A decoded batch and what it moves.
struct Fetched {
    batch: RecordBatch,
    /// Per partition: the offset after its last record in the batch (or skipped after it).
    positions: Vec<(Tp, i64)>,
    /// Per partition: the largest event time in the batch (with a watermark).
    max_event_time: Vec<(Tp, i64)>,
}

/// From the task to the fetcher thread.
enum Command {
    /// A checkpoint completed: commit these positions to the consumer group.
    Commit(Vec<(Tp, i64)>),
}

/// What the task knows about an owned partition.
#[derive(Debug, Clone)]
struct Position {
    offset: i64,
    stop: Option<i64>,
    done: bool,
    /// Largest event time emitted, and when a record last arrived (idleness).
    max_event_time: Option<i64>,
    last_record: Instant,
}

/// `source.kafka`.
pub struct KafkaSource {
    spec: Arc<KafkaSourceSpec>,
    schema: SchemaRef,
    ctx: OperatorContext,
    batch_size: usize,
    positions: BTreeMap<Tp, Position>,
    /// Positions from the restored checkpoint (all partitions; the fetcher keeps its own).
    restored: Option<HashMap<(String, i32), PartitionState>>,
    startup_pending: bool,
    assigned_once: bool,
    events: Option<mpsc::Receiver<Event>>,
    commands: Option<std_mpsc::Sender<Command>>,
    fetcher: Option<JoinHandle<()>>,
    /// Positions of the checkpoints taken and not completed yet.
    pending_commits: BTreeMap<u64, Vec<(Tp, i64)>>,
    skipped: Arc<AtomicU64>,
    metrics: Arc<ReaderMetrics>,
    emitted: u64,
    last_watermark: i64,
    finished: bool,
}

impl KafkaSource {
    pub fn new(
        spec: &KafkaSourceSpec,
        schema: SchemaRef,
        ctx: &OperatorContext,
        batch_size: usize,
    ) -> Result<Self, TaskError> {
        Ok(Self {
            spec: Arc::new(spec.clone()),
            schema,
            ctx: ctx.clone(),
            batch_size: batch_size.max(1),
            positions: BTreeMap::new(),
            restored: None,
            startup_pending: true,
            assigned_once: false,
            events: None,
            commands: None,
            fetcher: None,
            pending_commits: BTreeMap::new(),
            skipped: Arc::new(AtomicU64::new(0)),
            metrics: Arc::default(),
            emitted: 0,
            last_watermark: i64::MIN,
            finished: false,
        })
    }

    /// Records emitted so far.
    pub fn records(&self) -> u64 {
        self.emitted
    }

    /// Records skipped as unreadable (`json.ignore-parse-errors`, `csv.ignore-parse-errors`).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    fn start_fetcher(&mut self) -> Result<(), TaskError> {
        let consumer = consumer(&self.spec, &self.ctx, self.metrics.clone())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (ctx_tx, ctx_rx) = std_mpsc::channel();
        let mut fetcher = Fetcher {
            consumer,
            spec: self.spec.clone(),
            subtask: self.ctx.subtask,
            parallelism: self.ctx.parallelism.max(1),
            pattern: match &self.spec.topics {
                KafkaTopics::Pattern(p) => Some(topic_pattern(p).map_err(TaskError::fatal)?),
                KafkaTopics::List(_) => None,
            },
            restored: self.restored.take(),
            use_startup_mode: self.startup_pending,
            active: HashMap::new(),
            known: HashMap::new(),
            decoder: RecordDecoder::new(&self.spec, self.schema.clone(), self.batch_size)?,
            skipped: self.skipped.clone(),
            tx,
            commands: ctx_rx,
            name: format!("{} ({}/{})", self.ctx.operator_id, self.ctx.subtask + 1, self.ctx.parallelism),
        };
        let handle = std::thread::Builder::new()
            .name(format!("kafka-fetch-{}", self.ctx.subtask))
            .spawn(move || {
                if let Err(e) = fetcher.run() {
                    let _ = fetcher.tx.blocking_send(Event::Failed(e));
                }
            })
            .map_err(|e| TaskError::new(format!("starting the Kafka fetcher thread: {e}")))?;
        self.events = Some(rx);
        self.commands = Some(ctx_tx);
        self.fetcher = Some(handle);
        Ok(())
    }

    async fn next(&mut self) -> Result<Option<RecordBatch>, TaskError> {
        if self.finished {
            return Ok(None);
        }
        if self.events.is_none() {
            self.start_fetcher()?;
        }
        loop {
            let events = self.events.as_mut().expect("started above");
            let Some(event) = events.recv().await else {
                return Err(TaskError::new("the Kafka fetcher thread ended unexpectedly"));
            };
            match event {
                Event::Assigned(partitions) => {
                    self.assigned_once = true;
                    self.startup_pending = false;
                    for p in partitions {
                        let done = p.stop.is_some_and(|s| p.offset >= s);
                        self.positions.insert(
                            (Arc::from(p.topic.as_str()), p.partition),
                            Position {
                                offset: p.offset,
                                stop: p.stop,
                                done,
                                max_event_time: None,
                                last_record: Instant::now(),
                            },
                        );
                    }
                }
                Event::Done(partitions) => {
                    for tp in partitions {
                        if let Some(p) = self.positions.get_mut(&tp) {
                            p.done = true;
                        }
                    }
                }
                Event::Finished => {
                    self.finished = true;
                    return Ok(None);
                }
                Event::Failed(e) => return Err(e),
                Event::Batch(fetched) => {
                    let now = Instant::now();
                    for (tp, offset) in fetched.positions {
                        if let Some(p) = self.positions.get_mut(&tp) {
                            p.offset = p.offset.max(offset);
                            p.last_record = now;
                        }
                    }
                    for (tp, ts) in fetched.max_event_time {
                        if let Some(p) = self.positions.get_mut(&tp) {
                            p.max_event_time = p.max_event_time.max(Some(ts));
                        }
                    }
                    if fetched.batch.num_rows() > 0 {
                        self.emitted += fetched.batch.num_rows() as u64;
                        return Ok(Some(fetched.batch));
                    }
                }
            }
        }
    }

    fn states(&self) -> Vec<PartitionState> {
        self.positions
            .iter()
            .map(|((topic, partition), p)| PartitionState {
                topic: topic.to_string(),
                partition: *partition,
                offset: p.offset,
                stop: p.stop,
            })
            .collect()
    }
}

fn state_error(what: &'static str) -> impl Fn(StateError) -> TaskError {
    move |e| TaskError::fatal(format!("{what}: {e}"))
}

impl SourceOperator for KafkaSource {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<RecordBatch>, TaskError>> {
        Box::pin(self.next())
    }

    fn snapshot_state(&mut self, checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        let error = state_error("snapshotting the Kafka source position");
        let states = self.states();
        let encoded = states.iter().map(|s| encode_value(PARTITIONS, s)).collect::<Result<Vec<_>, _>>();
        *state.operator.list_state(PARTITIONS, Redistribution::Union).map_err(&error)? = encoded.map_err(&error)?;
        // Before the first assignment the restore must still apply the startup mode.
        let pending = self.startup_pending && !self.assigned_once;
        let pending = encode_value(STARTUP_PENDING, &pending).map_err(&error)?;
        *state.operator.list_state(STARTUP_PENDING, Redistribution::Union).map_err(&error)? = vec![pending];
        if self.spec.group_id().is_some() {
            let positions = states.into_iter().map(|s| ((Arc::from(s.topic.as_str()), s.partition), s.offset));
            self.pending_commits.insert(checkpoint_id, positions.collect());
            // Keep a bounded number of checkpoints waiting for completion.
            while self.pending_commits.len() > 32 {
                self.pending_commits.pop_first();
            }
        }
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        let error = state_error("restoring the Kafka source position");
        let Some(elements) = state.operator.get(PARTITIONS) else { return Ok(()) };
        let mut restored = HashMap::new();
        for element in elements {
            let s: PartitionState = decode_value(PARTITIONS, element).map_err(&error)?;
            restored.insert((s.topic.clone(), s.partition), s);
        }
        let mut pending = false;
        for element in state.operator.get(STARTUP_PENDING).unwrap_or_default() {
            pending |= decode_value::<bool>(STARTUP_PENDING, element).map_err(&error)?;
        }
        self.startup_pending = pending;
        self.restored = Some(restored);
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), TaskError> {
        let Some(positions) = self.pending_commits.remove(&checkpoint_id) else { return Ok(()) };
        self.pending_commits.retain(|id, _| *id > checkpoint_id);
        if let Some(commands) = &self.commands {
            // The fetcher may be gone (the source finished): nothing to commit with then.
            let _ = commands.send(Command::Commit(positions));
        }
        Ok(())
    }

    fn watermark(&mut self) -> Option<i64> {
        let watermark = self.spec.watermark.as_ref()?;
        let now = Instant::now();
        let mut min: Option<i64> = None;
        for p in self.positions.values() {
            let idle = watermark.idle_timeout.is_some_and(|t| now.duration_since(p.last_record) >= t);
            if p.done || idle {
                continue;
            }
            // A partition that emitted nothing yet holds the watermark back.
            let partition_watermark = p
                .max_event_time
                .map_or(i64::MIN, |t| t.saturating_sub(watermark.max_out_of_orderness.as_millis() as i64 + 1));
            min = Some(min.map_or(partition_watermark, |m| m.min(partition_watermark)));
        }
        let min = min.filter(|m| *m > self.last_watermark && *m != i64::MIN)?;
        self.last_watermark = min;
        Some(min)
    }

    fn accumulators(&self, out: &mut Vec<(String, u64)>) {
        if self.spec.ignore_parse_errors {
            out.push(("kafka-records-skipped".to_owned(), self.skipped()));
        }
    }

    fn metrics(&self, out: &mut SourceMetrics) {
        let ends = self.metrics.ends.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let committed = self.metrics.committed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        reader_metrics(&self.positions, &ends, &committed, out);
        for (name, counter) in
            [("commitsSucceeded", &self.metrics.commits_succeeded), ("commitsFailed", &self.metrics.commits_failed)]
        {
            out.gauges.push((format!("{READER_GROUP}.{name}"), counter.load(Ordering::Relaxed) as f64));
        }
    }
}

/// The source's metrics from its partitions' positions and what librdkafka reported.
fn reader_metrics(
    positions: &BTreeMap<Tp, Position>,
    ends: &HashMap<(String, i32), i64>,
    committed: &HashMap<(String, i32), i64>,
    out: &mut SourceMetrics,
) {
    let (mut pending, mut lag_max, mut known) = (0i64, 0i64, false);
    for ((topic, partition), p) in positions {
        let key = (topic.to_string(), *partition);
        if !p.done {
            if let Some(end) = ends.get(&key) {
                let end = p.stop.map_or(*end, |stop| stop.min(*end));
                let lag = (end - p.offset).max(0);
                pending += lag;
                lag_max = lag_max.max(lag);
                known = true;
            }
        }
        let variables =
            vec![(MetricGroupKey::Topic, topic.to_string()), (MetricGroupKey::Partition, partition.to_string())];
        let gauge = |name: &str, value: i64| GroupedMetric {
            operator: String::new(),
            group: READER_GROUP.to_owned(),
            variables: variables.clone(),
            name: name.to_owned(),
            value: value as f64,
        };
        // The offset of the last record emitted (-1 before the first), as Flink's.
        out.grouped.push(gauge("currentOffset", p.offset - 1));
        out.grouped.push(gauge("committedOffset", committed.get(&key).copied().unwrap_or(-1)));
    }
    // Before librdkafka reported any partition's end the lag is unknown, not 0.
    if known {
        out.gauges.push(("pendingRecords".to_owned(), pending as f64));
        out.gauges.push((format!("{READER_GROUP}.KafkaConsumer.records-lag-max"), lag_max as f64));
    }
}

/// Flink's metric group of the Kafka source reader.
const READER_GROUP: &str = "KafkaSourceReader";

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Closing the queue makes the fetcher thread end at its next send or poll (within
        // a poll, or a metadata request at worst); the task does not wait for it.
        self.events = None;
        self.commands = None;
        self.fetcher = None;
    }
}

/// The librdkafka consumer of one instance: the job's properties, then what Flint owns.
fn consumer(
    spec: &KafkaSourceSpec,
    ctx: &OperatorContext,
    metrics: Arc<ReaderMetrics>,
) -> Result<SourceConsumer, TaskError> {
    let mut config = ClientConfig::new();
    for (key, value) in &spec.properties {
        let value = match (key.as_str(), value.as_str()) {
            // Kafka's Java name for librdkafka's `error`.
            ("auto.offset.reset", "none") => "error",
            _ => value.as_str(),
        };
        config.set(key, value);
    }
    if property(&spec.properties, "client.id").is_none() {
        config.set("client.id", format!("flint-{}-{}-{}", ctx.job_name, ctx.operator_id, ctx.subtask));
    }
    if spec.group_id().is_none() {
        // librdkafka wants a group for commits and offset lookups; it is never joined.
        config.set("group.id", format!("flint-{}-{}", ctx.job_name, ctx.operator_id));
    }
    config.set("enable.auto.commit", "false");
    config.set("enable.auto.offset.store", "false");
    config.set("enable.partition.eof", "false");
    if property(&spec.properties, "statistics.interval.ms").is_none() {
        config.set("statistics.interval.ms", "1000");
    }
    let read_committed = property(&spec.properties, "isolation.level") != Some("read_uncommitted");
    config.create_with_context(SourceContext { metrics, read_committed }).map_err(|e| {
        TaskError::fatal(format!("source.kafka '{}': the Kafka client cannot be created: {e}", ctx.operator_id))
    })
}

/// The fetcher thread's state.
struct Fetcher {
    consumer: SourceConsumer,
    spec: Arc<KafkaSourceSpec>,
    subtask: u32,
    parallelism: u32,
    pattern: Option<regex::Regex>,
    restored: Option<HashMap<(String, i32), PartitionState>>,
    /// The first assignment starts partitions by `scan.startup.mode` (later ones: earliest).
    use_startup_mode: bool,
    /// Partitions being read, with their stop offsets.
    active: HashMap<Tp, Option<i64>>,
    /// Every owned partition seen (read or done).
    known: HashMap<Tp, ()>,
    decoder: RecordDecoder,
    skipped: Arc<AtomicU64>,
    tx: mpsc::Sender<Event>,
    commands: std_mpsc::Receiver<Command>,
    name: String,
}

impl Fetcher {
    fn send(&self, event: Event) -> bool {
        self.tx.blocking_send(event).is_ok()
    }

    fn run(&mut self) -> Result<(), TaskError> {
        let bounded = self.spec.bounded != BoundedMode::Unbounded;
        self.discover(true)?;
        let interval = if bounded { None } else { self.spec.discovery_interval };
        let mut next_discovery = interval.map(|i| Instant::now() + i);
        let mut last_done_check = Instant::now();
        loop {
            if self.tx.is_closed() {
                return Ok(());
            }
            while let Ok(command) = self.commands.try_recv() {
                match command {
                    Command::Commit(positions) => self.commit(positions),
                }
            }
            if let (Some(at), Some(interval)) = (next_discovery, interval) {
                if Instant::now() >= at {
                    if let Err(e) = self.discover(false) {
                        if !e.retryable {
                            return Err(e);
                        }
                        warn!(source = %self.name, "partition discovery failed, retrying later: {}", e.message);
                    }
                    next_discovery = Some(Instant::now() + interval);
                }
            }
            if bounded && self.active.is_empty() {
                if !self.decoder.is_empty() && !self.ship()? {
                    return Ok(());
                }
                self.send(Event::Finished);
                return Ok(());
            }
            // Partitions still sending records past their stop offset are finished too.
            if bounded && last_done_check.elapsed() >= POLL * 2 {
                last_done_check = Instant::now();
                self.check_done()?;
            }
            if self.active.is_empty() {
                std::thread::sleep(POLL);
                continue;
            }
            let timeout = if self.decoder.is_empty() { POLL } else { Duration::ZERO };
            let full = match self.consumer.poll(timeout) {
                Some(Ok(message)) => {
                    take(&mut self.decoder, &self.active, &message)?;
                    self.decoder.len() >= self.decoder.batch_size
                }
                Some(Err(e)) => {
                    self.poll_error(e)?;
                    false
                }
                None => !self.decoder.is_empty(),
            };
            if full && !self.ship()? {
                return Ok(());
            }
        }
    }

    /// Hands the built batch to the task; false when the task is gone.
    fn ship(&mut self) -> Result<bool, TaskError> {
        let fetched = self.decoder.finish(&self.skipped)?;
        Ok(self.send(Event::Batch(fetched)))
    }

    fn poll_error(&self, e: KafkaError) -> Result<(), TaskError> {
        let code = e.rdkafka_error_code();
        match code {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) | Some(RDKafkaErrorCode::UnknownTopic) => {
                Err(TaskError::fatal(format!("source.kafka: {e} (was a topic deleted?)")))
            }
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) | Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
                Err(TaskError::fatal(format!("source.kafka: {e}")))
            }
            Some(RDKafkaErrorCode::AutoOffsetReset) => Err(TaskError::fatal(format!(
                "source.kafka: {e} (an offset is out of range and 'properties.auto.offset.reset' is 'none')"
            ))),
            _ => {
                // Transport errors: librdkafka reconnects by itself.
                warn!(source = %self.name, "Kafka consumer: {e}");
                Ok(())
            }
        }
    }

    /// Bounded reads: partitions whose fetch position reached the stop offset are done
    /// (the position moves past transaction markers, which are never delivered).
    fn check_done(&mut self) -> Result<(), TaskError> {
        let position = self.consumer.position().map_err(|e| TaskError::new(format!("source.kafka: {e}")))?;
        let mut done = Vec::new();
        for element in position.elements() {
            let key: Tp = (Arc::from(element.topic()), element.partition());
            let Some(Some(stop)) = self.active.get(&key) else { continue };
            if let Offset::Offset(at) = element.offset() {
                if at >= *stop {
                    done.push(key);
                }
            }
        }
        if !done.is_empty() {
            self.unassign(&done)?;
            if !self.send(Event::Done(done)) {
                return Ok(());
            }
        }
        Ok(())
    }

    fn unassign(&mut self, partitions: &[Tp]) -> Result<(), TaskError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            self.active.remove(&(topic.clone(), *partition));
            tpl.add_partition(topic, *partition);
        }
        self.consumer
            .incremental_unassign(&tpl)
            .map_err(|e| TaskError::new(format!("source.kafka: releasing partitions: {e}")))
    }

    fn commit(&mut self, positions: Vec<(Tp, i64)>) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &positions {
            if tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).is_err() {
                return;
            }
        }
        if tpl.count() == 0 {
            return;
        }
        // Commits are for monitoring only (the checkpoint holds the positions): a failed
        // one is logged and superseded by the next.
        if let Err(e) = commit_reporting(&self.consumer, &tpl) {
            warn!(source = %self.name, "committing offsets to the consumer group failed: {e}");
        }
    }

    /// The topics and their partition counts as the broker knows them now.
    fn topic_partitions(&self) -> Result<Vec<(String, i32)>, TaskError> {
        let metadata = match &self.spec.topics {
            KafkaTopics::List(names) if names.len() == 1 => {
                self.consumer.fetch_metadata(Some(&names[0]), REQUEST_TIMEOUT)
            }
            _ => self.consumer.fetch_metadata(None, REQUEST_TIMEOUT),
        }
        .map_err(|e| TaskError::new(format!("source.kafka: reading topic metadata: {e}")))?;
        let mut out = Vec::new();
        match &self.spec.topics {
            KafkaTopics::List(names) => {
                for name in names {
                    let topic = metadata.topics().iter().find(|t| t.name() == name);
                    let topic = match topic {
                        Some(t) if t.error().is_none() && !t.partitions().is_empty() => t,
                        _ => {
                            return Err(TaskError::fatal(format!(
                                "source.kafka: topic '{name}' does not exist (or was deleted)"
                            )))
                        }
                    };
                    out.extend(topic.partitions().iter().map(|p| (name.clone(), p.id())));
                }
            }
            KafkaTopics::Pattern(_) => {
                let pattern = self.pattern.as_ref().expect("compiled at start");
                for topic in metadata.topics() {
                    if topic.error().is_none() && pattern.is_match(topic.name()) {
                        out.extend(topic.partitions().iter().map(|p| (topic.name().to_owned(), p.id())));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Finds the owned partitions not known yet, resolves where each starts (and stops),
    /// assigns them and tells the task.
    fn discover(&mut self, first: bool) -> Result<(), TaskError> {
        let all = self.topic_partitions()?;
        let mut new: Vec<(String, i32)> = all
            .into_iter()
            .filter(|(t, p)| split_owner(t, *p, self.parallelism) == self.subtask)
            .filter(|(t, p)| !self.known.contains_key(&(Arc::from(t.as_str()), *p)))
            .collect();
        new.sort();
        let mut states = Vec::new();
        for (topic, partition) in new {
            let restored = self.restored.as_ref().and_then(|r| r.get(&(topic.clone(), partition))).cloned();
            let state = match restored {
                // A read restored from an unbounded job stops where this job's bounded mode says.
                Some(s) if s.stop.is_none() => {
                    let stop = self.stop_offset(&s.topic, s.partition)?;
                    PartitionState { stop, ..s }
                }
                Some(s) => s,
                None => {
                    let by_startup = first && (self.restored.is_none() || self.use_startup_mode);
                    let offset = self.start_offset(&topic, partition, by_startup)?;
                    let stop = self.stop_offset(&topic, partition)?;
                    PartitionState { topic, partition, offset, stop }
                }
            };
            states.push(state);
        }
        if first {
            self.use_startup_mode = false;
        }
        let mut tpl = TopicPartitionList::new();
        for s in &states {
            let key: Tp = (Arc::from(s.topic.as_str()), s.partition);
            self.known.insert(key.clone(), ());
            if s.stop.is_some_and(|stop| s.offset >= stop) {
                continue;
            }
            self.active.insert(key, s.stop);
            tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.offset))
                .map_err(|e| TaskError::fatal(format!("source.kafka: {e}")))?;
        }
        if tpl.count() > 0 {
            self.consumer
                .incremental_assign(&tpl)
                .map_err(|e| TaskError::new(format!("source.kafka: assigning partitions: {e}")))?;
        }
        if first || !states.is_empty() {
            if !states.is_empty() {
                info!(source = %self.name, partitions = states.len(), "Kafka partitions assigned");
            }
            self.send(Event::Assigned(states));
        }
        Ok(())
    }

    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), TaskError> {
        self.consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| TaskError::new(format!("source.kafka: reading the offsets of {topic}-{partition}: {e}")))
    }

    fn offset_for_time(&self, topic: &str, partition: i32, ms: i64) -> Result<i64, TaskError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(ms))
            .map_err(|e| TaskError::fatal(format!("source.kafka: {e}")))?;
        let found = self.consumer.offsets_for_times(tpl, REQUEST_TIMEOUT).map_err(|e| {
            TaskError::new(format!("source.kafka: looking up offsets by timestamp of {topic}-{partition}: {e}"))
        })?;
        match found.find_partition(topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => Ok(o),
            // No record at or after the time: the end.
            _ => Ok(self.watermarks(topic, partition)?.1),
        }
    }

    fn committed(&self, topic: &str, partition: i32) -> Result<Option<i64>, TaskError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let found = self.consumer.committed_offsets(tpl, REQUEST_TIMEOUT).map_err(|e| {
            TaskError::new(format!("source.kafka: reading the committed offset of {topic}-{partition}: {e}"))
        })?;
        Ok(match found.find_partition(topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => Some(o),
            _ => None,
        })
    }

    fn start_offset(&self, topic: &str, partition: i32, by_startup: bool) -> Result<i64, TaskError> {
        if !by_startup {
            return Ok(self.watermarks(topic, partition)?.0);
        }
        Ok(match &self.spec.startup {
            StartupMode::Earliest => self.watermarks(topic, partition)?.0,
            StartupMode::Latest => self.watermarks(topic, partition)?.1,
            StartupMode::Timestamp(ms) => self.offset_for_time(topic, partition, *ms)?,
            StartupMode::Specific(offsets) => match offsets.iter().find(|o| o.partition == partition) {
                Some(o) => o.offset,
                None => self.watermarks(topic, partition)?.0,
            },
            StartupMode::GroupOffsets { reset } => match self.committed(topic, partition)? {
                Some(o) => o,
                None => match reset {
                    OffsetReset::Earliest => self.watermarks(topic, partition)?.0,
                    OffsetReset::Latest => self.watermarks(topic, partition)?.1,
                    OffsetReset::None => {
                        return Err(TaskError::fatal(format!(
                            "source.kafka: the consumer group has no committed offset for {topic}-{partition} and 'properties.auto.offset.reset' is 'none'"
                        )))
                    }
                },
            },
        })
    }

    fn stop_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, TaskError> {
        Ok(match &self.spec.bounded {
            BoundedMode::Unbounded => None,
            BoundedMode::Latest => Some(self.watermarks(topic, partition)?.1),
            BoundedMode::Timestamp(ms) => Some(self.offset_for_time(topic, partition, *ms)?),
            BoundedMode::Specific(offsets) => match offsets.iter().find(|o| o.partition == partition) {
                Some(o) => Some(o.offset),
                None => Some(self.watermarks(topic, partition)?.1),
            },
            BoundedMode::GroupOffsets => match self.committed(topic, partition)? {
                Some(o) => Some(o),
                None => {
                    return Err(TaskError::fatal(format!(
                        "source.kafka: 'scan.bounded.mode' is 'group-offsets' but the group has no committed offset for {topic}-{partition}"
                    )))
                }
            },
        })
    }
}

/// Adds one record to the batch being built (or drops it: no longer assigned, or past its
/// stop offset).
fn take(
    decoder: &mut RecordDecoder,
    active: &HashMap<Tp, Option<i64>>,
    message: &BorrowedMessage<'_>,
) -> Result<(), TaskError> {
    let Some((key, stop)) = active.get_key_value(&(Arc::from(message.topic()), message.partition())) else {
        return Ok(());
    };
    if stop.is_some_and(|s| message.offset() >= s) {
        return Ok(());
    }
    decoder.push(key.clone(), message)
}

/// The bytes of one part of the batch's records (their values, or their keys).
#[derive(Default)]
struct Payloads {
    /// Every payload, concatenated (offsets in `ends`).
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Payloads that were null (tombstone values, records without a key).
    nulls: Vec<bool>,
}

impl Payloads {
    fn with_capacity(records: usize) -> Self {
        Self { bytes: Vec::new(), ends: Vec::with_capacity(records), nulls: Vec::with_capacity(records) }
    }

    fn push(&mut self, payload: Option<&[u8]>) {
        self.bytes.extend_from_slice(payload.unwrap_or_default());
        self.ends.push(self.bytes.len());
        self.nulls.push(payload.is_none());
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.nulls.clear();
    }
}

/// Which part of the records a decoder reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The value: a null one (a tombstone) is skipped by json and csv, as Flink's formats do.
    Value,
    /// The key (`key.fields`): a null one gives null fields.
    Key,
}

/// Where an output column comes from.
#[derive(Clone, Copy)]
enum Column {
    Value(usize),
    Key(usize),
}

/// Builds one Arrow batch from records: the declared fields decoded from the value (and the
/// key, with `key.fields`) by their formats, then metadata.
struct RecordDecoder {
    format: KafkaFormat,
    ignore_parse_errors: bool,
    schema: SchemaRef,
    value_schema: SchemaRef,
    /// `key.format` and the key fields.
    key: Option<(KafkaFormat, SchemaRef)>,
    /// The declared fields of the output, in order.
    columns: Vec<Column>,
    metadata: Vec<MetadataKey>,
    batch_size: usize,
    /// Index of the event-time column, if any.
    event_time: Option<usize>,
    /// The records of the batch: partition, offset, timestamp, key, headers.
    rows: Vec<RowMeta>,
    values: Payloads,
    /// With `key.fields`: the records' keys.
    keys: Payloads,
}

struct RowMeta {
    tp: Tp,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    headers: Option<String>,
}

impl RecordDecoder {
    fn new(spec: &KafkaSourceSpec, schema: SchemaRef, batch_size: usize) -> Result<Self, TaskError> {
        let event_time = spec.watermark.as_ref().and_then(|w| schema.index_of(&w.field).ok());
        let arrow_schema = |s: &flint_common::job::schema::Schema| -> SchemaRef {
            let fields: Vec<arrow::datatypes::Field> =
                s.fields.iter().filter_map(|f| schema.field_with_name(&f.name).ok().cloned()).collect();
            Arc::new(arrow::datatypes::Schema::new(fields))
        };
        let value_schema = arrow_schema(&spec.value_schema);
        let (key, columns) = match &spec.key {
            None => (None, (0..value_schema.fields().len()).map(Column::Value).collect()),
            Some(key) => {
                let key_schema = arrow_schema(&key.schema);
                // A field in both (value.fields-include ALL) takes the value's, as in Flink.
                let columns = key
                    .declared
                    .fields
                    .iter()
                    .map(|f| match value_schema.index_of(&f.name) {
                        Ok(i) => Column::Value(i),
                        Err(_) => Column::Key(key_schema.index_of(&f.name).unwrap_or_default()),
                    })
                    .collect();
                (Some((key.format, key_schema)), columns)
            }
        };
        Ok(Self {
            format: spec.format,
            ignore_parse_errors: spec.ignore_parse_errors,
            value_schema,
            key,
            columns,
            metadata: spec.metadata.iter().map(|(_, k)| *k).collect(),
            schema,
            batch_size,
            event_time,
            rows: Vec::with_capacity(batch_size),
            values: Payloads::with_capacity(batch_size),
            keys: Payloads::default(),
        })
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn push(&mut self, tp: Tp, message: &BorrowedMessage<'_>) -> Result<(), TaskError> {
        let needs = |k: MetadataKey| self.metadata.contains(&k);
        let headers = if needs(MetadataKey::Headers) {
            let mut map = serde_json::Map::new();
            if let Some(headers) = message.headers() {
                for h in headers.iter() {
                    let value = h.value.map(|v| serde_json::Value::String(String::from_utf8_lossy(v).into_owned()));
                    map.insert(h.key.to_owned(), value.unwrap_or(serde_json::Value::Null));
                }
            }
            Some(serde_json::Value::Object(map).to_string())
        } else {
            None
        };
        let key = if needs(MetadataKey::Key) { message.key().map(<[u8]>::to_vec) } else { None };
        self.values.push(message.payload());
        if self.key.is_some() {
            self.keys.push(message.key());
        }
        self.rows.push(RowMeta {
            tp,
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key,
            headers,
        });
        Ok(())
    }

    /// The batch of the pushed records (bad ones skipped and counted, or an error), and the
    /// positions it moves; clears the buffers.
    fn finish(&mut self, skipped: &AtomicU64) -> Result<Fetched, TaskError> {
        let mut positions: HashMap<Tp, i64> = HashMap::new();
        for row in &self.rows {
            let next = positions.entry(row.tp.clone()).or_insert(row.offset + 1);
            *next = (*next).max(row.offset + 1);
        }
        let (value_columns, good) = self.decode_physical()?;
        let bad = good.iter().filter(|g| !**g).count();
        if bad > 0 {
            skipped.fetch_add(bad as u64, Ordering::Relaxed);
        }
        let mut columns = value_columns;
        for key in &self.metadata {
            let rows = self.rows.iter().zip(&good).filter(|(_, g)| **g).map(|(r, _)| r);
            let column: ArrayRef = match key {
                MetadataKey::Topic => {
                    Arc::new(rows.map(|r| Some(r.tp.0.as_ref())).collect::<arrow::array::StringArray>())
                }
                MetadataKey::Partition => Arc::new(rows.map(|r| Some(r.tp.1 as i64)).collect::<Int64Array>()),
                MetadataKey::Offset => Arc::new(rows.map(|r| Some(r.offset)).collect::<Int64Array>()),
                MetadataKey::Timestamp => Arc::new(rows.map(|r| r.timestamp).collect::<Int64Array>()),
                MetadataKey::Key => {
                    let mut b = StringBuilder::new();
                    for r in rows {
                        b.append_option(r.key.as_deref().map(String::from_utf8_lossy));
                    }
                    Arc::new(b.finish())
                }
                MetadataKey::Headers => {
                    Arc::new(rows.map(|r| r.headers.as_deref()).collect::<arrow::array::StringArray>())
                }
            };
            columns.push(column);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| TaskError::fatal(format!("source.kafka: building a batch: {e}")))?;
        let mut max_event_time: HashMap<Tp, i64> = HashMap::new();
        if let Some(index) = self.event_time {
            if let Some(times) = batch.column(index).as_any().downcast_ref::<Int64Array>() {
                let rows = self.rows.iter().zip(&good).filter(|(_, g)| **g).map(|(r, _)| r);
                for (row, t) in rows.zip(times.iter()) {
                    if let Some(t) = t {
                        let max = max_event_time.entry(row.tp.clone()).or_insert(t);
                        *max = (*max).max(t);
                    }
                }
            }
        }
        self.rows.clear();
        self.values.clear();
        self.keys.clear();
        Ok(Fetched {
            batch,
            positions: positions.into_iter().collect(),
            max_event_time: max_event_time.into_iter().collect(),
        })
    }

    fn describe(&self, i: usize) -> String {
        let row = &self.rows[i];
        format!("{}-{} offset {}", row.tp.0, row.tp.1, row.offset)
    }

    /// A record that cannot be read: an error, or (ignoring) skipped.
    fn bad(&self, i: usize, part: Part, why: &str) -> Result<(), TaskError> {
        if self.ignore_parse_errors {
            Ok(())
        } else {
            let hint = match self.format {
                KafkaFormat::Csv { .. } => " (set 'csv.ignore-parse-errors' to skip such records)",
                KafkaFormat::Json => " (set 'json.ignore-parse-errors' to skip such records)",
                KafkaFormat::Raw => "",
            };
            let what = match part {
                Part::Value => "record",
                Part::Key => "key of the record",
            };
            Err(TaskError::fatal(format!(
                "source.kafka: the {what} at {} cannot be read: {why}{hint}",
                self.describe(i)
            )))
        }
    }

    /// The declared columns of the good rows (value and key both readable), and which rows
    /// are good.
    fn decode_physical(&self) -> Result<(Vec<ArrayRef>, Vec<bool>), TaskError> {
        let (values, value_good) = self.decode(Part::Value, self.format, &self.value_schema, &self.values)?;
        let Some((key_format, key_schema)) = &self.key else { return Ok((values, value_good)) };
        let (keys, key_good) = self.decode(Part::Key, *key_format, key_schema, &self.keys)?;
        let good: Vec<bool> = value_good.iter().zip(&key_good).map(|(v, k)| *v && *k).collect();
        // Each part's columns hold its own good rows: keep those good in both.
        let keep = |columns: Vec<ArrayRef>, own: &[bool]| -> Result<Vec<ArrayRef>, TaskError> {
            if own == good.as_slice() {
                return Ok(columns);
            }
            let mask: arrow::array::BooleanArray =
                own.iter().zip(&good).filter(|(o, _)| **o).map(|(_, g)| Some(*g)).collect();
            columns
                .iter()
                .map(|c| arrow::compute::filter(c, &mask))
                .collect::<Result<_, _>>()
                .map_err(|e| TaskError::fatal(format!("source.kafka: {e}")))
        };
        let (values, keys) = (keep(values, &value_good)?, keep(keys, &key_good)?);
        let columns = self
            .columns
            .iter()
            .map(|c| match c {
                Column::Value(i) => values[*i].clone(),
                Column::Key(i) => keys[*i].clone(),
            })
            .collect();
        Ok((columns, good))
    }

    /// One part's columns of its good rows, and which rows are good.
    fn decode(
        &self,
        part: Part,
        format: KafkaFormat,
        schema: &SchemaRef,
        payloads: &Payloads,
    ) -> Result<(Vec<ArrayRef>, Vec<bool>), TaskError> {
        let n = self.rows.len();
        match format {
            KafkaFormat::Raw => {
                let field = schema.field(0);
                let column: ArrayRef = if field.data_type() == &DataType::Binary {
                    let mut b = BinaryBuilder::with_capacity(n, payloads.bytes.len());
                    for i in 0..n {
                        if payloads.nulls[i] {
                            b.append_null();
                        } else {
                            b.append_value(payloads.get(i));
                        }
                    }
                    Arc::new(b.finish())
                } else {
                    let mut b = StringBuilder::with_capacity(n, payloads.bytes.len());
                    for i in 0..n {
                        if payloads.nulls[i] {
                            b.append_null();
                        } else {
                            b.append_value(String::from_utf8_lossy(payloads.get(i)));
                        }
                    }
                    Arc::new(b.finish())
                };
                Ok((vec![column], vec![true; n]))
            }
            KafkaFormat::Json => self.decode_json(part, schema, payloads),
            KafkaFormat::Csv { delimiter } => self.decode_csv(part, schema, delimiter, payloads),
        }
    }

    fn json_decoder(schema: &SchemaRef, batch: usize) -> Result<arrow::json::reader::Decoder, TaskError> {
        arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(batch.max(1))
            .build_decoder()
            .map_err(|e| TaskError::fatal(format!("source.kafka: the JSON schema cannot be read: {e}")))
    }

    /// JSON payloads: all records at once; when that fails, one by one to find the bad ones.
    fn decode_json(
        &self,
        part: Part,
        schema: &SchemaRef,
        payloads: &Payloads,
    ) -> Result<(Vec<ArrayRef>, Vec<bool>), TaskError> {
        let n = self.rows.len();
        let all_present = payloads.nulls.iter().all(|null| !null);
        if all_present {
            let mut decoder = Self::json_decoder(schema, n)?;
            let mut ok = true;
            for i in 0..n {
                let before = decoder.len();
                let fed = decoder.decode(payloads.get(i)).and_then(|_| decoder.decode(b"\n"));
                if fed.is_err() || decoder.len() != before + 1 {
                    ok = false;
                    break;
                }
            }
            if ok {
                if let Ok(Some(batch)) = decoder.flush() {
                    if batch.num_rows() == n {
                        return Ok((batch.columns().to_vec(), vec![true; n]));
                    }
                } else if n == 0 {
                    return Ok((empty_columns(schema), Vec::new()));
                }
            }
        }
        // Slow path: record by record.
        let mut good = vec![false; n];
        let mut parts = Vec::new();
        #[allow(clippy::needless_range_loop)] // `i` indexes the payloads, the rows and `good`
        for i in 0..n {
            if payloads.nulls[i] {
                if part == Part::Key {
                    good[i] = true;
                    let nulls = schema.fields().iter().map(|f| new_null_array(f.data_type(), 1)).collect();
                    let row = RecordBatch::try_new(schema.clone(), nulls)
                        .map_err(|e| TaskError::fatal(format!("source.kafka: {e}")))?;
                    parts.push(row);
                }
                continue;
            }
            let mut decoder = Self::json_decoder(schema, 1)?;
            let payload = payloads.get(i);
            let result = decoder.decode(payload).and_then(|used| {
                if used != payload.len() || decoder.len() != 1 {
                    return Err(arrow::error::ArrowError::JsonError("not exactly one JSON object".to_owned()));
                }
                decoder.flush()
            });
            match result {
                Ok(Some(batch)) if batch.num_rows() == 1 => {
                    good[i] = true;
                    parts.push(batch);
                }
                Ok(_) => self.bad(i, part, "not a JSON object")?,
                Err(e) => self.bad(i, part, &e.to_string())?,
            }
        }
        let columns = if parts.is_empty() {
            empty_columns(schema)
        } else {
            arrow::compute::concat_batches(schema, &parts)
                .map_err(|e| TaskError::fatal(format!("source.kafka: {e}")))?
                .columns()
                .to_vec()
        };
        Ok((columns, good))
    }

    /// CSV payloads: one line per record, fields in schema order; an empty field is null.
    fn decode_csv(
        &self,
        part: Part,
        schema: &SchemaRef,
        delimiter: u8,
        payloads: &Payloads,
    ) -> Result<(Vec<ArrayRef>, Vec<bool>), TaskError> {
        let n = self.rows.len();
        let mut builders: Vec<ColumnBuilder> =
            schema.fields().iter().map(|f| ColumnBuilder::new(f.data_type(), n)).collect();
        let mut good = vec![false; n];
        let mut record = csv::ByteRecord::new();
        #[allow(clippy::needless_range_loop)] // `i` indexes the payloads, the rows and `good`
        for i in 0..n {
            if payloads.nulls[i] {
                if part == Part::Key {
                    good[i] = true;
                    builders.iter_mut().for_each(|b| b.append(Parsed::Null));
                }
                continue;
            }
            let payload = payloads.get(i);
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .delimiter(delimiter)
                .buffer_capacity(payload.len().clamp(64, 1 << 16))
                .from_reader(payload);
            let read = match reader.read_byte_record(&mut record) {
                Ok(true) => Ok(()),
                Ok(false) => Err("an empty record".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            let parsed = read.and_then(|()| {
                if record.len() != builders.len() {
                    return Err(format!("{} fields, the schema has {}", record.len(), builders.len()));
                }
                let mut values = Vec::with_capacity(record.len());
                for (field, builder) in record.iter().zip(&builders) {
                    values.push(builder.parse(field)?);
                }
                Ok(values)
            });
            match parsed {
                Ok(values) => {
                    good[i] = true;
                    for (builder, value) in builders.iter_mut().zip(values) {
                        builder.append(value);
                    }
                }
                Err(why) => self.bad(i, part, &why)?,
            }
        }
        Ok((builders.into_iter().map(ColumnBuilder::finish).collect(), good))
    }
}

fn empty_columns(schema: &SchemaRef) -> Vec<ArrayRef> {
    schema.fields().iter().map(|f| new_null_array(f.data_type(), 0)).collect()
}

/// One typed value parsed from text.
enum Parsed {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

/// An Arrow builder for a Flint field type, fed from text.
enum ColumnBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Null(usize),
}

impl ColumnBuilder {
    fn new(ty: &DataType, capacity: usize) -> Self {
        match ty {
            DataType::Int64 => ColumnBuilder::Int(Int64Builder::with_capacity(capacity)),
            DataType::Float64 => ColumnBuilder::Float(Float64Builder::with_capacity(capacity)),
            DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Binary => ColumnBuilder::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Null => ColumnBuilder::Null(0),
            _ => ColumnBuilder::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
        }
    }

    fn parse(&self, text: &[u8]) -> Result<Parsed, String> {
        if text.is_empty() {
            return Ok(Parsed::Null);
        }
        let as_str = || std::str::from_utf8(text).map_err(|_| "invalid UTF-8".to_owned());
        Ok(match self {
            ColumnBuilder::Int(_) => {
                let s = as_str()?;
                Parsed::Int(s.trim().parse().map_err(|_| format!("'{}' is not an integer", truncate(s)))?)
            }
            ColumnBuilder::Float(_) => {
                let s = as_str()?;
                Parsed::Float(s.trim().parse().map_err(|_| format!("'{}' is not a number", truncate(s)))?)
            }
            ColumnBuilder::Bool(_) => match as_str()?.trim() {
                s if s.eq_ignore_ascii_case("true") => Parsed::Bool(true),
                s if s.eq_ignore_ascii_case("false") => Parsed::Bool(false),
                s => return Err(format!("'{}' is not a boolean", truncate(s))),
            },
            ColumnBuilder::Text(_) => Parsed::Text(String::from_utf8_lossy(text).into_owned()),
            ColumnBuilder::Bytes(_) => Parsed::Bytes(text.to_vec()),
            ColumnBuilder::Null(_) => Parsed::Null,
        })
    }

    fn append(&mut self, value: Parsed) {
        match (self, value) {
            (ColumnBuilder::Int(b), Parsed::Int(v)) => b.append_value(v),
            (ColumnBuilder::Float(b), Parsed::Float(v)) => b.append_value(v),
            (ColumnBuilder::Bool(b), Parsed::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Text(b), Parsed::Text(v)) => b.append_value(v),
            (ColumnBuilder::Bytes(b), Parsed::Bytes(v)) => b.append_value(v),
            (ColumnBuilder::Null(n), _) => *n += 1,
            (ColumnBuilder::Int(b), _) => b.append_null(),
            (ColumnBuilder::Float(b), _) => b.append_null(),
            (ColumnBuilder::Bool(b), _) => b.append_null(),
            (ColumnBuilder::Text(b), _) => b.append_null(),
            (ColumnBuilder::Bytes(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Int(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Text(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Bytes(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Null(n) => new_null_array(&DataType::Null, n),
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_records_count_what_is_not_emitted_up_to_each_end() {
        let position =
            |offset, stop, done| Position { offset, stop, done, max_event_time: None, last_record: Instant::now() };
        let positions: BTreeMap<Tp, Position> = [
            ((Arc::from("t"), 0), position(10, None, false)),
            // Bounded: only up to the stop offset counts.
            ((Arc::from("t"), 1), position(5, Some(8), false)),
            // Done partitions have nothing pending.
            ((Arc::from("t"), 2), position(20, Some(20), true)),
            // No end reported yet: not counted.
            ((Arc::from("t"), 3), position(0, None, false)),
        ]
        .into_iter()
        .collect();
        let ends: HashMap<(String, i32), i64> =
            [(("t".into(), 0), 110), (("t".into(), 1), 50), (("t".into(), 2), 30)].into_iter().collect();
        let committed: HashMap<(String, i32), i64> = [(("t".into(), 0), 7)].into_iter().collect();
        let mut out = SourceMetrics::default();
        reader_metrics(&positions, &ends, &committed, &mut out);
        assert_eq!(
            out.gauges,
            vec![
                ("pendingRecords".to_owned(), 103.0),
                ("KafkaSourceReader.KafkaConsumer.records-lag-max".to_owned(), 100.0)
            ]
        );
        let ids: Vec<(String, f64)> = out.grouped.iter().map(|m| (m.rest_id(), m.value)).collect();
        assert_eq!(ids[0], ("KafkaSourceReader.topic.t.partition.0.currentOffset".to_owned(), 9.0));
        assert_eq!(ids[1], ("KafkaSourceReader.topic.t.partition.0.committedOffset".to_owned(), 7.0));
        assert_eq!(ids[3], ("KafkaSourceReader.topic.t.partition.1.committedOffset".to_owned(), -1.0));
        assert_eq!(ids[7], ("KafkaSourceReader.topic.t.partition.3.committedOffset".to_owned(), -1.0));
        assert_eq!(out.grouped[0].logical_name(), "KafkaSourceReader.topic.partition.currentOffset");

        // Nothing reported yet: no lag gauges rather than a false 0.
        let mut out = SourceMetrics::default();
        reader_metrics(&positions, &HashMap::new(), &committed, &mut out);
        assert!(out.gauges.is_empty());
    }

    #[test]
    fn split_owner_matches_flinks_enumerator() {
        // Java: "orders".hashCode() == -1008770331.
        assert_eq!(java_string_hash("orders"), -1008770331);
        let start = ((-1008770331i32).wrapping_mul(31) & 0x7FFF_FFFF) as u32 % 4;
        for p in 0..8 {
            assert_eq!(split_owner("orders", p, 4), (start + p as u32) % 4);
        }
        // Every partition has exactly one owner at any parallelism.
        for parallelism in 1..9 {
            let owners: Vec<u32> = (0..16).map(|p| split_owner("t", p, parallelism)).collect();
            assert!(owners.iter().all(|o| *o < parallelism));
        }
    }
}
