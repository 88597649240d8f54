//! Kafka → map → Kafka on a real cluster: `source.kafka` + `map` + `sink.kafka` against a
//! plain rdkafka client pipeline doing the same work, on the same broker.
//!
//! `cargo build --release --workspace --bins && target/release/bench_kafka [--records N]
//! [--mock-records N] [--rounds R] [--only throughput,mock,latency,latency-tansu,latency-mock]
//! [--rates 100000,50000,...] [--latency-seconds S] [--warmup-seconds S]
//! [--latency-parallelism P] [--fetch-wait-ms MS] [--floor-seconds W+S]
//! [--checkpoint-interval '1 s'|off]`
//!
//! Defaults: 300,000 records on tansu (it moves about 20,000 records/s on 2 cores), 1,000,000
//! on the mock, 3 rounds, rates 100,000 → 2,000 records/s, a 20 s window after 5 s, p=1; about
//! 8 minutes in all. One cluster (1 jobmanager, 1 taskmanager with 2 slots) serves every Flint
//! run. Records are JSON `{"id":n,"key":"k<n%100>","v":n*7%1000,"ts":<epoch µs>}` keyed by
//! `key`. The map is the same on both sides: the JSON value is parsed, `v` doubled, and the
//! record re-serialized as JSON with `key` as the record key (the plain pipeline with
//! serde_json, Flint with its JSON decoder, a `map` expression and its JSON encoder). Both use
//! librdkafka's default client properties (acks=all, linger.ms=5) and the `murmur2_random`
//! partitioner.
//!
//! - **throughput** (tansu, the harness's `KafkaBroker::start`): N records pre-produced once
//!   into 4 partitions; per round a fresh output topic (4 partitions) for each of: the plain
//!   pipeline (one thread: a `BaseConsumer` assigned every partition, serde_json, a
//!   `BaseProducer`; records/s = N / time until the last record is acknowledged), and the
//!   Flint job (bounded `latest-offset`, `at-least-once`, checkpoints every 1 s) at
//!   parallelism 1 and 2 (records/s = N / (end-time − start-time) of `GET /jobs/:id`, also
//!   shown from RUNNING). CPU-seconds per million records of the taskmanager (utime + stime
//!   from `/proc/<pid>/stat`, `getconf CLK_TCK`), of the plain client (this process) and of
//!   the broker. The output topic must hold ≥ N records (the sum of its high watermarks).
//!   Every figure also shows how many cores other processes used meanwhile (`/proc/stat`
//!   minus the cluster, the broker and this process): the machine is shared.
//! - **mock**: the same against librdkafka's mock cluster (`MockCluster::new(3)`, in this
//!   process, on 127.0.0.1 ports), plus the Flint job with `exactly-once`
//!   (`sink.transactional-id-prefix`), at p=1 and 2. tansu 0.6.0 answers `EndTxn` with "not
//!   supported", so this is the only exactly-once figure. The mock keeps at most 5 MiB per
//!   partition (older record sets are dropped), so its input topic has 16 partitions to hold
//!   1 M records; it neither writes transaction markers nor hides open transactions from
//!   `read_committed` readers, so exactly-once costs here are the client's protocol round
//!   trips, not a real broker's transaction work. Its broker CPU is its thread's (`rdk:mock`).
//! - **latency**: a producer thread writes at a fixed rate (paced per millisecond) with the
//!   send time in `ts` (µs) into a fresh 4-partition topic; a consumer thread takes now − `ts`
//!   of every record sent in the measured window (after a warm-up) from the output topic.
//!   Per rate, three runs: the broker alone (producer → broker → consumer, 5 s after 2 s;
//!   when it cannot sustain the rate the other two are skipped), the plain pipeline as a relay
//!   (the same two hops through the broker as Flint, without Flint), and an unbounded Flint job
//!   (`at-least-once`, checkpoints every 1 s, p=1). On each broker the rates of `--rates` are
//!   tried in order until Flint sustains one. The consumers (the bench's, the relay's and the
//!   job's source) use a short `fetch.wait.max.ms` (see [`Broker::fetch_wait_ms`]).
//!   `BENCH_KAFKA_DEBUG=1` also prints the median latency per 250 ms.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flint_tests::kafka::{unique_topic, KafkaBroker};
use flint_tests::Harness;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Partitions of the input topic on tansu, and of every output topic.
const PARTITIONS: i32 = 4;
/// Partitions of the mock cluster's input topic (it keeps 5 MiB per partition).
const MOCK_INPUT_PARTITIONS: i32 = 16;
/// The most records the mock's input topic holds safely (about 70 bytes each).
const MOCK_MAX_RECORDS: u64 = 1_000_000;
const KEYS: u64 = 100;
const SLOTS: u64 = 2;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a producer with a full queue serves delivery reports before it retries.
const QUEUE_FULL_POLL: Duration = Duration::from_millis(5);
/// The target of the issue: Flint at least this share of the plain client pipeline.
const TARGET_RATIO: f64 = 0.70;

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

struct Options {
    records: u64,
    mock_records: u64,
    rounds: usize,
    throughput: bool,
    mock: bool,
    latency_tansu: bool,
    latency_mock: bool,
    rates: Vec<u64>,
    latency_seconds: u64,
    warmup_seconds: u64,
    latency_parallelism: u32,
    /// `execution.checkpointing.interval` of the Flint jobs (`None`: no checkpoints).
    checkpoint_interval: Option<String>,
    /// Warm-up and window of the broker-alone runs.
    floor_seconds: (u64, u64),
    /// `fetch.wait.max.ms` of every consumer of the latency runs (`None`: per broker, see
    /// [`Broker::fetch_wait_ms`]).
    fetch_wait_ms: Option<u64>,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            records: 300_000,
            mock_records: 1_000_000,
            rounds: 3,
            throughput: true,
            mock: true,
            latency_tansu: true,
            latency_mock: true,
            rates: vec![100_000, 50_000, 20_000, 10_000, 5_000, 2_000],
            latency_seconds: 20,
            warmup_seconds: 5,
            latency_parallelism: 1,
            floor_seconds: (2, 5),
            checkpoint_interval: Some("1 s".to_string()),
            fetch_wait_ms: None,
        };
        let mut only: Vec<String> = Vec::new();
        let mut args = std::env::args().skip(1);
        let usage = "usage: bench_kafka [--records N] [--mock-records N] [--rounds R] [--only throughput,mock,latency[-tansu|-mock]] \
                     [--rates 100000,50000,20000,10000,5000,2000] [--latency-seconds S] [--warmup-seconds S] [--latency-parallelism P] \
                     [--fetch-wait-ms MS] [--floor-seconds WARMUP+WINDOW] \
                     [--checkpoint-interval '1 s'|off]";
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            if name == "--help" || name == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            let value = inline.or_else(|| args.next()).unwrap_or_else(|| panic!("{name} needs a value\n{usage}"));
            let number = |v: &str| -> u64 {
                v.replace('_', "").parse().unwrap_or_else(|_| panic!("{name}: not a number: {v}\n{usage}"))
            };
            match name.as_str() {
                "--records" => {
                    o.records = number(&value);
                    o.mock_records = o.records.min(MOCK_MAX_RECORDS);
                }
                "--mock-records" => o.mock_records = number(&value).min(MOCK_MAX_RECORDS),
                "--rounds" => o.rounds = number(&value) as usize,
                "--only" => only.extend(value.split(',').map(|s| s.trim().to_lowercase())),
                "--rates" => o.rates = value.split(',').map(|v| number(v.trim())).collect(),
                "--latency-seconds" => o.latency_seconds = number(&value),
                "--warmup-seconds" => o.warmup_seconds = number(&value),
                "--latency-parallelism" => o.latency_parallelism = number(&value) as u32,
                "--fetch-wait-ms" => o.fetch_wait_ms = Some(number(&value)),
                "--checkpoint-interval" => o.checkpoint_interval = (value != "off").then_some(value),
                "--floor-seconds" => {
                    let (warmup, window) = value.split_once('+').unwrap_or(("2", value.as_str()));
                    o.floor_seconds = (number(warmup), number(window));
                }
                _ => panic!("unknown option {name}\n{usage}"),
            }
        }
        if !only.is_empty() {
            for part in &only {
                let known = ["throughput", "mock", "latency", "latency-tansu", "latency-mock"];
                assert!(known.contains(&part.as_str()), "--only {part}?\n{usage}");
            }
            o.throughput = only.iter().any(|p| p == "throughput");
            o.mock = only.iter().any(|p| p == "mock");
            o.latency_tansu = only.iter().any(|p| p == "latency" || p == "latency-tansu");
            o.latency_mock = only.iter().any(|p| p == "latency" || p == "latency-mock");
        }
        assert!(o.records > 0 && o.rounds > 0 && !o.rates.is_empty(), "{usage}");
        assert!((1..=SLOTS as u32).contains(&o.latency_parallelism), "--latency-parallelism 1 or 2");
        o
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (`"self"` or a pid) in seconds, all its threads.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / clock_ticks()
}

/// utime + stime of the threads of this process named `comm`, in seconds.
fn thread_cpu_seconds(comm: &str) -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let path = entry.path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == comm) {
            total += cpu_seconds(&format!("self/task/{}", entry.file_name().to_string_lossy()));
        }
    }
    total
}

/// Busy CPU seconds of the whole machine (all CPUs) from `/proc/stat`.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    busy / clock_ticks()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cluster's processes.
#[derive(Clone, Copy)]
struct Pids {
    jm: i32,
    tm: i32,
}

/// CPU seconds used so far by the machine, the jobmanager, the taskmanager, the broker and
/// this process.
struct CpuSnapshot {
    at: Instant,
    machine: f64,
    jm: f64,
    tm: f64,
    broker: f64,
    bench: f64,
}

/// CPU seconds used between two snapshots.
struct CpuUse {
    seconds: f64,
    tm: f64,
    broker: f64,
    /// This process without the mock broker's thread: the plain pipeline, or the latency
    /// producer and consumer.
    client: f64,
    /// Everything else on the machine (other people's builds and tests, the kernel).
    others: f64,
}

impl CpuSnapshot {
    fn take(pids: Pids, broker: Broker) -> CpuSnapshot {
        CpuSnapshot {
            at: Instant::now(),
            machine: machine_busy_seconds(),
            jm: cpu_seconds(&pids.jm.to_string()),
            tm: cpu_seconds(&pids.tm.to_string()),
            broker: broker.cpu_seconds(),
            bench: cpu_seconds("self"),
        }
    }

    fn since(&self, pids: Pids, broker: Broker) -> CpuUse {
        let now = CpuSnapshot::take(pids, broker);
        let (jm, tm, broker_cpu, bench) =
            (now.jm - self.jm, now.tm - self.tm, now.broker - self.broker, now.bench - self.bench);
        let (client, outside) = match broker {
            // The mock's thread is part of this process.
            Broker::Mock(_) => (bench - broker_cpu, 0.0),
            Broker::Tansu(_) => (bench, broker_cpu),
        };
        CpuUse {
            seconds: now.at.duration_since(self.at).as_secs_f64(),
            tm,
            broker: broker_cpu,
            client,
            others: (now.machine - self.machine - jm - tm - bench - outside).max(0.0),
        }
    }
}

impl CpuUse {
    fn cores(&self) -> String {
        let s = self.seconds.max(1e-9);
        format!(
            "CPU cores: taskmanager {:.2}, broker {:.2}, bench process {:.2}, other processes {:.2}",
            self.tm / s,
            self.broker / s,
            self.client / s,
            self.others / s
        )
    }

    /// Cores used by everything else on the machine.
    fn others_cores(&self) -> f64 {
        self.others / self.seconds.max(1e-9)
    }
}

fn epoch_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// `sorted` must be sorted; `p` in 0..=1.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn thousands(n: f64) -> String {
    if !n.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The JSON value of record `id` (written into `out`).
fn write_value(out: &mut Vec<u8>, id: u64, ts: i64) {
    out.clear();
    let _ = write!(out, r#"{{"id":{id},"key":"k{}","v":{},"ts":{ts}}}"#, id % KEYS, id * 7 % 1000);
}

/// The plain pipeline's view of a record.
#[derive(Deserialize, Serialize)]
struct Event<'a> {
    id: i64,
    #[serde(borrow)]
    key: Cow<'a, str>,
    v: i64,
    ts: i64,
}

/// The integer after `"ts":` in a JSON value, without parsing the rest.
fn ts_field(value: &[u8]) -> Option<i64> {
    let at = value.windows(5).position(|w| w == b"\"ts\":")? + 5;
    let digits: &[u8] = &value[at..];
    let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Brokers
// ---------------------------------------------------------------------------------------

/// The broker a measurement runs against.
#[derive(Clone, Copy)]
enum Broker<'a> {
    Tansu(&'a KafkaBroker),
    Mock(&'a MockCluster<'static, DefaultProducerContext>),
}

impl Broker<'_> {
    fn label(&self) -> &'static str {
        match self {
            Broker::Tansu(_) => "tansu",
            Broker::Mock(_) => "mock",
        }
    }

    fn bootstrap(&self) -> String {
        match self {
            Broker::Tansu(b) => b.bootstrap(),
            Broker::Mock(m) => m.bootstrap_servers(),
        }
    }

    /// `fetch.wait.max.ms` of the consumers of the latency runs. Neither broker answers a
    /// fetch as soon as records arrive, as Kafka does (`fetch.min.bytes`): the mock holds a
    /// fetch that finds nothing new for the whole wait, and tansu 0.6.0 sleeps after every
    /// pass over the partitions, also one that found records (`tansu-storage`
    /// `src/service/fetch.rs`: the remaining wait, or half of it when ≥ 250 ms), so every
    /// tansu fetch takes about the wait. With librdkafka's 500 ms that alone is 250-500 ms
    /// of latency. The mock answers polls cheaply: 10 ms. tansu runs SQLite queries per pass
    /// and is overloaded by 100 passes/s per consumer: 100 ms.
    fn fetch_wait_ms(&self) -> u64 {
        match self {
            Broker::Tansu(_) => 100,
            Broker::Mock(_) => 10,
        }
    }

    /// CPU seconds the broker used so far: the tansu process, or the mock cluster's thread
    /// in this process (`rdk:mock`).
    fn cpu_seconds(&self) -> f64 {
        match self {
            Broker::Tansu(b) => b.pid().map_or(0.0, |p| cpu_seconds(&p.to_string())),
            Broker::Mock(_) => thread_cpu_seconds("rdk:mock"),
        }
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap()).set("broker.address.family", "v4");
        config
    }

    fn create_topic(&self, topic: &str, partitions: i32) {
        match self {
            Broker::Tansu(b) => b.create_topic(topic, partitions),
            Broker::Mock(m) => {
                m.create_topic(topic, partitions, 1)
                    .unwrap_or_else(|e| panic!("cannot create topic {topic} on the mock cluster: {e}"));
                let reader = self.reader();
                let until = Instant::now() + Duration::from_secs(30);
                while partitions_of(&reader, topic).map(|p| p.len()) != Ok(partitions as usize) {
                    assert!(Instant::now() < until, "topic {topic} did not appear on the mock cluster");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// A consumer for `assign()` (librdkafka wants a group id; it is never joined).
    fn reader(&self) -> BaseConsumer {
        self.reader_with(None)
    }

    /// [`Broker::reader`] with `fetch.wait.max.ms` when given.
    fn reader_with(&self, fetch_wait_ms: Option<u64>) -> BaseConsumer {
        let mut config = self.config();
        if let Some(ms) = fetch_wait_ms {
            config.set("fetch.wait.max.ms", ms.to_string());
        }
        config
            .set("group.id", unique_topic("bench-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .unwrap_or_else(|e| panic!("cannot create a consumer for {}: {e}", self.bootstrap()))
    }

    /// `(low, high)` watermarks of every partition of `topic`.
    fn watermarks(&self, topic: &str) -> Result<Vec<(i64, i64)>, String> {
        let reader = self.reader();
        partitions_of(&reader, topic)?
            .into_iter()
            .map(|p| reader.fetch_watermarks(topic, p, REQUEST_TIMEOUT).map_err(|e| format!("{topic}/{p}: {e}")))
            .collect()
    }

    /// Records written to `topic` (the sum of the high watermarks; no topic here holds
    /// transaction markers: tansu has no transactions, the mock writes no markers).
    fn records_in(&self, topic: &str) -> Result<u64, String> {
        Ok(self.watermarks(topic)?.iter().map(|(_, high)| *high as u64).sum())
    }
}

fn partitions_of(client: &BaseConsumer, topic: &str) -> Result<Vec<i32>, String> {
    let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT).map_err(|e| format!("{topic}: {e}"))?;
    let t = metadata.topics().iter().find(|t| t.name() == topic).ok_or(format!("no topic {topic}"))?;
    if let Some(e) = t.error() {
        return Err(format!("topic {topic}: {e:?}"));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Counts delivery reports (also those arriving within a window of epoch µs).
#[derive(Default)]
struct Acks {
    acked: AtomicU64,
    window: Option<(i64, i64)>,
    acked_in_window: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                if let Some((from, to)) = self.window {
                    if (from..to).contains(&epoch_micros()) {
                        self.acked_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e.to_string());
            }
        }
    }
}

impl Acks {
    fn check(&self) -> Result<(), String> {
        match self.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(format!(
                "{n} deliveries failed, the first: {}",
                self.first_failure.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default()
            )),
        }
    }
}

/// Sends `record`, serving delivery reports while the producer's queue is full.
fn send<'a>(
    producer: &BaseProducer<Acks>,
    mut record: BaseRecord<'a, [u8], [u8]>,
    until: Instant,
) -> Result<(), String> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if Instant::now() < until => {
                record = back;
                // As `sink.kafka` does (5 ms). rdkafka 0.39's `poll(d)` spins through the last
                // sub-millisecond of `d` (it rounds the remaining time down to 0 ms), so a
                // short `d` would be a busy wait.
                producer.poll(QUEUE_FULL_POLL);
            }
            Err((e, _)) => return Err(format!("cannot produce: {e}")),
        }
    }
}

/// Flushes and waits until `total` records are acknowledged.
fn await_acks(producer: &BaseProducer<Acks>, total: u64, until: Instant) -> Result<(), String> {
    let _ = producer.flush(until.saturating_duration_since(Instant::now()));
    loop {
        producer.context().check()?;
        let acked = producer.context().acked.load(Ordering::Relaxed);
        if acked >= total {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!("only {acked} of {total} records acknowledged in time"));
        }
        producer.poll(Duration::from_millis(20));
    }
}

/// Produces the `n` input records (`id % partitions` is the partition) as fast as the broker
/// takes them, and checks that the topic holds all of them.
fn produce_input(broker: Broker, topic: &str, partitions: i32, n: u64) {
    let started = Instant::now();
    let until = started + Duration::from_secs(60 + n / 2_000);
    let producer: BaseProducer<Acks> = broker
        .config()
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "600000")
        .create_with_context(Acks::default())
        .expect("input producer");
    let mut value = Vec::with_capacity(128);
    for id in 0..n {
        write_value(&mut value, id, epoch_micros());
        let key = format!("k{}", id % KEYS);
        let record = BaseRecord::to(topic)
            .partition((id % partitions as u64) as i32)
            .key(key.as_bytes())
            .payload(value.as_slice());
        send(&producer, record, until).unwrap_or_else(|e| panic!("producing the input to {topic}: {e}"));
        if id.is_multiple_of(4096) {
            producer.poll(Duration::ZERO);
        }
    }
    await_acks(&producer, n, until).unwrap_or_else(|e| panic!("producing the input to {topic}: {e}"));
    let marks = broker.watermarks(topic).unwrap_or_else(|e| panic!("{e}"));
    let held: u64 = marks.iter().map(|(low, high)| (high - low) as u64).sum();
    assert!(
        marks.iter().all(|(low, _)| *low == 0) && held == n,
        "the {} broker holds {held} of the {n} input records of {topic} (watermarks {marks:?})",
        broker.label()
    );
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "[{}] produced {n} input records into {topic} ({partitions} partitions) in {seconds:.1} s ({} records/s)",
        broker.label(),
        thousands(n as f64 / seconds)
    );
}

// ---------------------------------------------------------------------------------------
// One throughput run
// ---------------------------------------------------------------------------------------

/// What one run measured.
struct Run {
    /// N / seconds (Flint: end-time − start-time).
    rate: f64,
    /// Flint: N / (FINISHED − RUNNING).
    rate_running: Option<f64>,
    /// CPU seconds per million records of the pipeline's process (taskmanager or this one).
    cpu_per_m: f64,
    broker_cpu_per_m: f64,
    /// Cores used meanwhile by other processes on the machine.
    others_cores: f64,
    output: u64,
    note: String,
}

/// The plain rdkafka client pipeline: one thread consuming every partition, mapping with
/// serde_json, producing.
fn plain_pipeline(pids: Pids, broker: Broker, input: &str, output: &str, n: u64) -> Result<Run, String> {
    let cpu = CpuSnapshot::take(pids, broker);
    let started = Instant::now();
    let until = started + Duration::from_secs(60 + n / 2_000);
    let consumer = broker.reader();
    let mut assignment = TopicPartitionList::new();
    for p in partitions_of(&consumer, input)? {
        assignment.add_partition_offset(input, p, Offset::Beginning).map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let producer: BaseProducer<Acks> = broker
        .config()
        .set("partitioner", "murmur2_random")
        .create_with_context(Acks::default())
        .map_err(|e| e.to_string())?;
    let mut consumed = 0u64;
    let mut buffer = Vec::with_capacity(128);
    let mut errors = 0u64;
    while consumed < n {
        if Instant::now() >= until {
            return Err(format!("plain pipeline: only {consumed} of {n} records consumed in time"));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let payload = message.payload().unwrap_or_default();
                let mut event: Event = serde_json::from_slice(payload).map_err(|e| format!("bad input: {e}"))?;
                event.v *= 2;
                buffer.clear();
                serde_json::to_writer(&mut buffer, &event).map_err(|e| e.to_string())?;
                send(&producer, BaseRecord::to(output).key(event.key.as_bytes()).payload(buffer.as_slice()), until)?;
                consumed += 1;
                if consumed.is_multiple_of(128) {
                    producer.poll(Duration::ZERO);
                    producer.context().check()?;
                }
            }
            Some(Err(e)) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("plain pipeline: consumer error: {e}");
                }
            }
            None => {}
        }
    }
    await_acks(&producer, n, until)?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.since(pids, broker);
    let millions = n as f64 / 1e6;
    Ok(Run {
        rate: n as f64 / seconds,
        rate_running: None,
        cpu_per_m: cpu.client / millions,
        broker_cpu_per_m: cpu.broker / millions,
        others_cores: cpu.others_cores(),
        output: broker.records_in(output)?,
        note: format!("{seconds:.2} s"),
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

impl Guarantee {
    fn name(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }
}

/// One Flint job of the benchmark.
struct JobSpec<'a> {
    input: &'a str,
    output: &'a str,
    parallelism: u32,
    guarantee: Guarantee,
    /// `scan.bounded.mode: latest-offset` (else unbounded).
    bounded: bool,
    /// The source's `properties.fetch.wait.max.ms` (else librdkafka's default, 500 ms).
    fetch_wait_ms: Option<u64>,
    checkpoint_interval: Option<&'a str>,
}

/// source.kafka → map (v doubled) → sink.kafka, checkpoints every second.
fn kafka_job(broker: Broker, spec: &JobSpec, checkpoints: &Path) -> Value {
    let JobSpec { input, output, parallelism, guarantee, bounded, fetch_wait_ms, checkpoint_interval } = *spec;
    let bootstrap = broker.bootstrap();
    let mut source = json!({
        "id": "events", "op": "source.kafka", "topic": input,
        "properties.bootstrap.servers": bootstrap, "scan.startup.mode": "earliest-offset",
        "format": "json", "schema": { "id": "integer", "key": "string", "v": "integer", "ts": "integer" }
    });
    if bounded {
        source["scan.bounded.mode"] = json!("latest-offset");
    }
    if let Some(ms) = fetch_wait_ms {
        source["properties.fetch.wait.max.ms"] = json!(ms.to_string());
    }
    let mut sink = json!({
        "id": "out", "op": "sink.kafka", "inputs": ["mapped"], "topic": output,
        "properties.bootstrap.servers": bootstrap, "format": "json",
        "key.format": "raw", "key.fields": ["key"], "sink.delivery-guarantee": guarantee.name()
    });
    if guarantee == Guarantee::ExactlyOnce {
        sink["sink.transactional-id-prefix"] = json!(format!("{output}-txn"));
    }
    let mut config = json!({ "state.checkpoints.dir": checkpoints });
    if let Some(interval) = checkpoint_interval {
        config["execution.checkpointing.interval"] = json!(interval);
    }
    json!({
        "flint": 1, "name": format!("kafka-map-kafka p{parallelism} {}", guarantee.name()), "parallelism": parallelism,
        "config": config,
        "operators": [
            source,
            { "id": "mapped", "op": "map", "inputs": ["events"],
              "fields": { "id": "id", "key": "key", "v": "v * 2", "ts": "ts" } },
            sink
        ]
    })
}

fn submit(h: &Harness, job: &Value) -> Result<String, String> {
    let reply = h.post_json("/jobs", job)?;
    if reply.status != 202 {
        return Err(format!("submission refused: {} {}", reply.status, reply.text));
    }
    Ok(reply.body["jobUrl"].as_str().ok_or("no jobUrl")?.trim_start_matches("/jobs/").to_string())
}

/// Waits for job `id` to be `state`; FAILED or CANCELED instead is an error with the root
/// exception.
fn wait_job(h: &Harness, id: &str, state: &str, deadline: Duration) -> Result<Value, String> {
    let until = Instant::now() + deadline;
    loop {
        let job = h.job(id);
        let now = job["state"].as_str().unwrap_or_default().to_string();
        if now == state {
            return Ok(job);
        }
        if now == "FAILED" || (now == "CANCELED" && state != "CANCELED") {
            let exceptions = h.get(&format!("/jobs/{id}/exceptions")).map(|r| r.body).unwrap_or_default();
            let root = exceptions["root-exception"].as_str().unwrap_or("(none)");
            return Err(format!("job {id} is {now}: {}", root.lines().next().unwrap_or_default()));
        }
        if Instant::now() >= until {
            return Err(format!("job {id} is not {state} after {deadline:?} (it is {now})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_slots_free(h: &Harness) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if h.get("/overview").ok().is_some_and(|r| r.body["slots-available"] == SLOTS) {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err("the slots were not free again within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cancel(h: &Harness, id: &str) {
    let _ = h.patch(&format!("/jobs/{id}?mode=cancel"));
    if let Err(e) = wait_job(h, id, "CANCELED", Duration::from_secs(60)) {
        eprintln!("cancelling job {id}: {e}");
    }
}

/// The Flint job over the whole input topic (bounded), timed by the jobmanager.
fn flint_pipeline(h: &Harness, pids: Pids, broker: Broker, spec: &JobSpec, n: u64) -> Result<Run, String> {
    let job = kafka_job(broker, spec, &h.home.join("checkpoints"));
    wait_slots_free(h)?;
    let cpu = CpuSnapshot::take(pids, broker);
    let id = submit(h, &job)?;
    let done = match wait_job(h, &id, "FINISHED", Duration::from_secs(120 + n / 2_000)) {
        Ok(done) => done,
        Err(e) => {
            cancel(h, &id);
            return Err(e);
        }
    };
    let cpu = cpu.since(pids, broker);
    let ms = |v: &Value| v.as_f64().ok_or_else(|| format!("job {id}: no timestamp in {done}"));
    let seconds = (ms(&done["end-time"])? - ms(&done["start-time"])?) / 1000.0;
    let running = (ms(&done["timestamps"]["FINISHED"])? - ms(&done["timestamps"]["RUNNING"])?) / 1000.0;
    let checkpoints = h.get(&format!("/jobs/{id}/checkpoints")).map(|r| r.body).unwrap_or_default();
    let written = h.accumulators(&id).get("kafka-records-written").copied().unwrap_or(0);
    let millions = n as f64 / 1e6;
    Ok(Run {
        rate: n as f64 / seconds,
        rate_running: Some(n as f64 / running),
        cpu_per_m: cpu.tm / millions,
        broker_cpu_per_m: cpu.broker / millions,
        others_cores: cpu.others_cores(),
        output: broker.records_in(spec.output)?,
        note: format!(
            "{seconds:.2} s start→end ({running:.2} s RUNNING→FINISHED), {} checkpoints completed (state max {} bytes), {} failed{}, \
             kafka-records-written {written}",
            checkpoints["counts"]["completed"],
            checkpoints["summary"]["state_size"]["max"],
            checkpoints["counts"]["failed"],
            checkpoints["latest"]["failed"]["failure_message"]
                .as_str()
                .map(|m| format!(" (last: {m})"))
                .unwrap_or_default()
        ),
    })
}

// ---------------------------------------------------------------------------------------
// Throughput series
// ---------------------------------------------------------------------------------------

/// One pipeline's runs over the rounds.
struct Series {
    broker: &'static str,
    name: String,
    /// Whether `cpu_per_m` is the taskmanager's (else the client process's).
    flint: bool,
    n: u64,
    runs: Vec<Run>,
    failures: Vec<String>,
}

impl Series {
    fn new(broker: Broker, name: &str, flint: bool, n: u64) -> Series {
        Series { broker: broker.label(), name: name.to_string(), flint, n, runs: Vec::new(), failures: Vec::new() }
    }

    fn rate(&self) -> f64 {
        median(&self.runs.iter().map(|r| r.rate).collect::<Vec<_>>())
    }

    /// Records one round's outcome and prints it.
    fn record(&mut self, round: usize, h: Option<&Harness>, result: Result<Run, String>) {
        match result {
            Ok(run) => {
                let check = if run.output >= self.n { "ok" } else { "MISSING RECORDS" };
                println!(
                    "[{}] {} round {round}: {} records/s{}, {} {:.2} CPU-s/1M, broker {:.2} CPU-s/1M, other processes \
                     {:.2} cores, output {} records ({check}); {}",
                    self.broker,
                    self.name,
                    thousands(run.rate),
                    run.rate_running.map(|r| format!(" ({} from RUNNING)", thousands(r))).unwrap_or_default(),
                    if self.flint { "taskmanager" } else { "client process" },
                    run.cpu_per_m,
                    run.broker_cpu_per_m,
                    run.others_cores,
                    run.output,
                    run.note
                );
                if run.output < self.n {
                    self.failures.push(format!("round {round}: output {} < {}", run.output, self.n));
                }
                self.runs.push(run);
            }
            Err(e) => {
                println!("[{}] {} round {round}: FAILED: {e}", self.broker, self.name);
                if let Some(h) = h {
                    h.dump_logs();
                }
                self.failures.push(format!("round {round}: {e}"));
            }
        }
    }
}

/// Runs the plain pipeline and the Flint jobs `o.rounds` times each, interleaved.
fn throughput_rounds(
    h: &Harness,
    pids: Pids,
    broker: Broker,
    input: &str,
    n: u64,
    o: &Options,
    flint_runs: &[(u32, Guarantee)],
) -> Vec<Series> {
    let mut plain = Series::new(broker, "plain rdkafka pipeline (1 thread)", false, n);
    let mut flint: Vec<Series> =
        flint_runs.iter().map(|(p, g)| Series::new(broker, &format!("Flint p={p} {}", g.name()), true, n)).collect();
    for round in 1..=o.rounds {
        let output = unique_topic(&format!("bench-out-{}", broker.label()));
        broker.create_topic(&output, PARTITIONS);
        plain.record(round, None, plain_pipeline(pids, broker, input, &output, n));
        for ((parallelism, guarantee), series) in flint_runs.iter().zip(flint.iter_mut()) {
            let output = unique_topic(&format!("bench-out-{}", broker.label()));
            broker.create_topic(&output, PARTITIONS);
            let spec = JobSpec {
                input,
                output: &output,
                parallelism: *parallelism,
                guarantee: *guarantee,
                bounded: true,
                fetch_wait_ms: None,
                checkpoint_interval: o.checkpoint_interval.as_deref(),
            };
            let result = flint_pipeline(h, pids, broker, &spec, n);
            series.record(round, Some(h), result);
        }
    }
    let mut all = vec![plain];
    all.extend(flint);
    all
}

fn print_throughput_table(all: &[Series]) {
    println!();
    println!("== Kafka → map → Kafka throughput (medians; per-round figures in brackets) ==");
    println!(
        "{:<6} {:<34} {:>10} {:>8} {:>12} {:>9} {:>7}  {:<32} output",
        "broker", "pipeline", "records/s", "vs plain", "CPU-s/1M", "broker", "others", "rounds (records/s)"
    );
    for s in all {
        let plain = all.iter().find(|p| p.broker == s.broker && !p.flint).map(Series::rate);
        let ratio = match plain {
            Some(p) if s.flint && p > 0.0 => format!("{:.0} %", 100.0 * s.rate() / p),
            _ if !s.flint => "100 %".to_string(),
            _ => "-".to_string(),
        };
        let cpu = median(&s.runs.iter().map(|r| r.cpu_per_m).collect::<Vec<_>>());
        let broker_cpu = median(&s.runs.iter().map(|r| r.broker_cpu_per_m).collect::<Vec<_>>());
        let others = s.runs.iter().map(|r| r.others_cores).fold(0.0, f64::max);
        let rounds: Vec<String> = s.runs.iter().map(|r| thousands(r.rate)).collect();
        let output = if s.failures.is_empty() {
            format!("≥ {} in every round", s.n)
        } else {
            format!("FAILURES: {}", s.failures.join("; "))
        };
        println!(
            "{:<6} {:<34} {:>10} {:>8} {:>7.2} ({}) {:>9.2} {:>7.2}  {:<32} {output}",
            s.broker,
            s.name,
            thousands(s.rate()),
            ratio,
            cpu,
            if s.flint { "TM" } else { "cl" },
            broker_cpu,
            others,
            format!("[{}]", rounds.join(", "))
        );
    }
    for s in all.iter().filter(|s| s.flint && s.name.contains("p=1 at-least-once")) {
        if let Some(plain) = all.iter().find(|p| p.broker == s.broker && !p.flint) {
            let ratio = s.rate() / plain.rate();
            println!(
                "[{}] Flint p=1 / plain = {:.0} % (target ≥ {:.0} %: {})",
                s.broker,
                100.0 * ratio,
                100.0 * TARGET_RATIO,
                if ratio >= TARGET_RATIO { "met" } else { "NOT met" }
            );
        }
    }
    println!(
        "CPU-s/1M: TM = the taskmanager process, cl = this bench process without the mock's thread (the plain \
         client). broker = CPU-s/1M of the tansu process, or of the mock cluster's thread (rdk:mock). others = the \
         most cores other processes on the machine used during a round (a quiet machine shows ~0.0x)."
    );
}

// ---------------------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------------------

struct Latency {
    target: u64,
    rate_in: f64,
    rate_out: f64,
    /// End-to-end latencies in µs of the records sent in the window, sorted.
    sorted: Vec<u64>,
    /// Records sent in the window that never arrived (within the drain time).
    missing: u64,
    /// Median latency per fifth of the window (ms), in send order.
    fifths: Vec<f64>,
}

impl Latency {
    fn p(&self, p: f64) -> f64 {
        percentile(&self.sorted, p) as f64 / 1000.0
    }

    /// Sustained: ≥ 95 % of the target rate in and out, nothing lost, latency not growing
    /// (the last fifth's median at most 500 ms above the first's).
    fn sustained(&self) -> bool {
        let growing = match (self.fifths.first(), self.fifths.last()) {
            (Some(first), Some(last)) => last - first > 500.0,
            _ => true,
        };
        self.rate_in >= 0.95 * self.target as f64
            && self.rate_out >= 0.95 * self.target as f64
            && self.missing == 0
            && !self.sorted.is_empty()
            && !growing
    }

    fn line(&self) -> String {
        format!(
            "in {} records/s, out {} records/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} records; \
             missing {}; median per fifth of the window (ms) {:?} → {}",
            thousands(self.rate_in),
            thousands(self.rate_out),
            self.p(0.5),
            self.p(0.99),
            self.p(1.0),
            self.sorted.len(),
            self.missing,
            self.fifths.iter().map(|f| (f * 10.0).round() / 10.0).collect::<Vec<_>>(),
            if self.sustained() { "sustained" } else { "NOT sustained" }
        )
    }
}

/// Writes `rate` records/s into `input` for warm-up + window, and reads `read` (the same topic
/// for the broker's floor, else the job's output): now − `ts` of every record sent in the
/// window. The rate in is what the broker acknowledged within the window.
fn paced_latency(
    broker: Broker,
    input: &str,
    read: &str,
    rate: u64,
    warmup: Duration,
    window: Duration,
    fetch_wait_ms: Option<u64>,
) -> Latency {
    let consumer = broker.reader_with(fetch_wait_ms);
    let mut assignment = TopicPartitionList::new();
    for p in partitions_of(&consumer, read).unwrap_or_else(|e| panic!("{e}")) {
        assignment.add_partition_offset(read, p, Offset::Beginning).expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let start_us = epoch_micros() + 200_000;
    let (from_us, to_us) = (start_us + warmup.as_micros() as i64, start_us + (warmup + window).as_micros() as i64);
    let sent_in_window = Arc::new(AtomicU64::new(0));
    let received_in_window = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let reader = {
        let (received_in_window, stop) = (received_in_window.clone(), stop.clone());
        std::thread::spawn(move || {
            // (send µs, latency µs) of the records sent in the window; arrivals in the window.
            let mut samples: Vec<(i64, u64)> = Vec::with_capacity((rate * 30).min(1 << 22) as usize);
            let mut arrived_in_window = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
                    let now = epoch_micros();
                    if (from_us..to_us).contains(&now) {
                        arrived_in_window += 1;
                    }
                    if let Some(ts) = message.payload().and_then(ts_field) {
                        if (from_us..to_us).contains(&ts) {
                            samples.push((ts, (now - ts).max(0) as u64));
                            received_in_window.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            (samples, arrived_in_window)
        })
    };

    let writer = {
        let (config, input) = (broker.config(), input.to_string());
        let sent_in_window = sent_in_window.clone();
        std::thread::spawn(move || {
            let acks = Acks { window: Some((from_us, to_us)), ..Default::default() };
            // Its own thread serves the delivery reports (polling here would spin, see `send`).
            let producer: ThreadedProducer<Acks> = config
                .clone()
                .set("queue.buffering.max.messages", "2000000")
                .create_with_context(acks)
                .expect("latency producer");
            while epoch_micros() < start_us {
                std::thread::sleep(Duration::from_millis(1));
            }
            let until = Instant::now() + warmup + window + Duration::from_secs(10);
            let mut value = Vec::with_capacity(128);
            let mut sent = 0u64;
            'paced: loop {
                let now = epoch_micros();
                if now >= to_us {
                    break;
                }
                let due = ((now - start_us).max(0) as u128 * rate as u128 / 1_000_000) as u64;
                while sent < due {
                    let ts = epoch_micros();
                    write_value(&mut value, sent, ts);
                    let key = format!("k{}", sent % KEYS);
                    let mut record = BaseRecord::to(&input).key(key.as_bytes()).payload(value.as_slice());
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                                if Instant::now() < until =>
                            {
                                record = back;
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            Err((e, _)) => {
                                eprintln!("latency producer: {e}");
                                break 'paced;
                            }
                        }
                    }
                    if (from_us..to_us).contains(&ts) {
                        sent_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            // What the broker did not take within 10 s more is reported missing.
            let _ = producer.flush(Duration::from_secs(10));
            let acked = producer.context().acked.load(Ordering::Relaxed);
            if acked < sent {
                eprintln!("latency producer: only {acked} of {sent} records acknowledged in time");
            }
            producer.context().acked_in_window.load(Ordering::Relaxed)
        })
    };

    let acked_in_window = writer.join().expect("latency producer");
    // After the window: wait until every record sent in it arrived, at most 20 s and while
    // records still arrive (3 s without one ends the wait).
    let drain_until = Instant::now() + Duration::from_secs(20);
    let (mut last_count, mut last_progress) = (0, Instant::now());
    loop {
        let received = received_in_window.load(Ordering::Relaxed);
        if received >= sent_in_window.load(Ordering::Relaxed)
            || Instant::now() >= drain_until
            || last_progress.elapsed() >= Duration::from_secs(3)
        {
            break;
        }
        if received != last_count {
            (last_count, last_progress) = (received, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut samples, arrived_in_window) = reader.join().expect("latency reader");
    let sent = sent_in_window.load(Ordering::Relaxed);
    let seconds = window.as_secs_f64();
    samples.sort_unstable_by_key(|(ts, _)| *ts);
    if std::env::var_os("BENCH_KAFKA_DEBUG").is_some() {
        let mut line = String::new();
        let mut t = from_us;
        while t < to_us {
            let mut part: Vec<u64> =
                samples.iter().filter(|(ts, _)| (t..t + 250_000).contains(ts)).map(|s| s.1).collect();
            part.sort_unstable();
            line.push_str(&format!("{} ", percentile(&part, 0.5) / 1000));
            t += 250_000;
        }
        eprintln!("DEBUG per-250ms medians (ms): {line}");
    }
    let fifths = (0..5)
        .map(|i| {
            let lo = from_us + (to_us - from_us) * i / 5;
            let hi = from_us + (to_us - from_us) * (i + 1) / 5;
            let mut part: Vec<u64> = samples.iter().filter(|(ts, _)| (lo..hi).contains(ts)).map(|s| s.1).collect();
            part.sort_unstable();
            percentile(&part, 0.5) as f64 / 1000.0
        })
        .collect();
    let mut sorted: Vec<u64> = samples.iter().map(|s| s.1).collect();
    sorted.sort_unstable();
    Latency {
        target: rate,
        rate_in: acked_in_window as f64 / seconds,
        rate_out: arrived_in_window as f64 / seconds,
        missing: sent.saturating_sub(sorted.len() as u64),
        sorted,
        fifths,
    }
}

/// The plain pipeline of [`plain_pipeline`] as an unbounded relay on its own thread, until
/// stopped: the latency baseline with the same two hops through the broker as the Flint job.
struct Relay {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<u64, String>>,
}

impl Relay {
    fn start(broker: Broker, input: &str, output: &str, fetch_wait_ms: Option<u64>) -> Relay {
        let consumer = broker.reader_with(fetch_wait_ms);
        let mut assignment = TopicPartitionList::new();
        for p in partitions_of(&consumer, input).unwrap_or_else(|e| panic!("{e}")) {
            assignment.add_partition_offset(input, p, Offset::Beginning).expect("assignment");
        }
        consumer.assign(&assignment).expect("assign");
        let producer: BaseProducer<Acks> = broker
            .config()
            .set("partitioner", "murmur2_random")
            .create_with_context(Acks::default())
            .expect("relay producer");
        let stop = Arc::new(AtomicBool::new(false));
        let (output, flag) = (output.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buffer = Vec::with_capacity(128);
            let mut relayed = 0u64;
            let until = Instant::now() + Duration::from_secs(3600);
            while !flag.load(Ordering::Relaxed) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
                    let payload = message.payload().unwrap_or_default();
                    let mut event: Event = serde_json::from_slice(payload).map_err(|e| format!("bad input: {e}"))?;
                    event.v *= 2;
                    buffer.clear();
                    serde_json::to_writer(&mut buffer, &event).map_err(|e| e.to_string())?;
                    send(
                        &producer,
                        BaseRecord::to(&output).key(event.key.as_bytes()).payload(buffer.as_slice()),
                        until,
                    )?;
                    relayed += 1;
                }
                // One delivery report per call, without waiting.
                producer.poll(Duration::ZERO);
            }
            producer.context().check()?;
            Ok(relayed)
        });
        Relay { stop, thread }
    }

    fn stop(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| Err("the relay thread panicked".to_string()))
    }
}

/// The broker's floor; when the broker alone sustains `rate`, the plain relay and the Flint
/// job at `rate`. Returns the Flint figure.
fn latency_at(
    h: &Harness,
    pids: Pids,
    broker: Broker,
    rate: u64,
    o: &Options,
    table: &mut Vec<String>,
) -> Option<Latency> {
    let (parallelism, fetch_wait_ms) = (o.latency_parallelism, Some(o.fetch_wait_ms.unwrap_or(broker.fetch_wait_ms())));
    let (warmup, window) = (Duration::from_secs(o.warmup_seconds), Duration::from_secs(o.latency_seconds));
    let floor_topic = unique_topic(&format!("bench-floor-{}", broker.label()));
    // 4 on the mock too: it finds a fetch's records by walking the partition's list of
    // record sets (librdkafka `rdkafka_mock.c` `rd_kafka_mock_msgset_find`, "FIXME: Maintain
    // an index"), and with 16 partitions of small record sets the mock's thread saturated
    // within 20 s even at 10,000 records/s. On 4 its 5 MiB per partition are 3 s of records
    // at 100,000 records/s: a reader further behind misses records, which is reported.
    let partitions = PARTITIONS;
    broker.create_topic(&floor_topic, partitions);
    let cpu = CpuSnapshot::take(pids, broker);
    let floor = paced_latency(
        broker,
        &floor_topic,
        &floor_topic,
        rate,
        Duration::from_secs(o.floor_seconds.0),
        Duration::from_secs(o.floor_seconds.1),
        fetch_wait_ms,
    );
    let line = format!(
        "[{}] {} records/s, broker alone (producer → broker → consumer): {} ({})",
        broker.label(),
        thousands(rate as f64),
        floor.line(),
        cpu.since(pids, broker).cores()
    );
    println!("{line}");
    table.push(line);
    if !floor.sustained() {
        let line = format!(
            "[{}] {} records/s, Flint: not run (the broker alone does not sustain this rate)",
            broker.label(),
            thousands(rate as f64)
        );
        println!("{line}");
        table.push(line);
        return None;
    }

    // The plain pipeline as a relay: the same two hops through the broker without Flint.
    let (input, output) = (
        unique_topic(&format!("bench-relay-in-{}", broker.label())),
        unique_topic(&format!("bench-relay-out-{}", broker.label())),
    );
    broker.create_topic(&input, partitions);
    broker.create_topic(&output, partitions);
    let cpu = CpuSnapshot::take(pids, broker);
    let relay = Relay::start(broker, &input, &output, fetch_wait_ms);
    let latency = paced_latency(broker, &input, &output, rate, warmup, window, fetch_wait_ms);
    let cores = cpu.since(pids, broker).cores();
    let relayed = relay.stop();
    let line = format!(
        "[{}] {} records/s, plain rdkafka relay (producer → broker → relay → broker → consumer): {} ({cores}){}",
        broker.label(),
        thousands(rate as f64),
        latency.line(),
        relayed.err().map(|e| format!("; relay FAILED: {e}")).unwrap_or_default()
    );
    println!("{line}");
    table.push(line);

    let (input, output) = (
        unique_topic(&format!("bench-lat-in-{}", broker.label())),
        unique_topic(&format!("bench-lat-out-{}", broker.label())),
    );
    broker.create_topic(&input, partitions);
    broker.create_topic(&output, partitions);
    let spec = JobSpec {
        input: &input,
        output: &output,
        parallelism,
        guarantee: Guarantee::AtLeastOnce,
        bounded: false,
        fetch_wait_ms,
        checkpoint_interval: o.checkpoint_interval.as_deref(),
    };
    let job = kafka_job(broker, &spec, &h.home.join("checkpoints"));
    let result = (|| {
        wait_slots_free(h)?;
        let id = submit(h, &job)?;
        let until = Instant::now() + Duration::from_secs(60);
        while !flint_tests::all_running(&h.job(&id)) {
            if Instant::now() >= until {
                cancel(h, &id);
                return Err(format!("job {id} did not run within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(1));
        let cpu = CpuSnapshot::take(pids, broker);
        let latency = paced_latency(broker, &input, &output, rate, warmup, window, fetch_wait_ms);
        let cores = cpu.since(pids, broker).cores();
        let job = h.job(&id);
        let state = job["state"].as_str().unwrap_or_default().to_string();
        let checkpoints = h.get(&format!("/jobs/{id}/checkpoints")).map(|r| r.body).unwrap_or_default();
        cancel(h, &id);
        if state != "RUNNING" {
            return Err(format!("job {id} was {state} after the measurement"));
        }
        Ok((latency, checkpoints, cores))
    })();
    match result {
        Ok((latency, checkpoints, cores)) => {
            let line = format!(
                "[{}] {} records/s, Flint p={parallelism} at-least-once: {} ({} checkpoints completed, p50 duration {} ms; {cores})",
                broker.label(),
                thousands(rate as f64),
                latency.line(),
                checkpoints["counts"]["completed"],
                checkpoints["summary"]["end_to_end_duration"]["p50"]
            );
            println!("{line}");
            table.push(line);
            Some(latency)
        }
        Err(e) => {
            let line = format!("[{}] {} records/s, Flint: FAILED: {e}", broker.label(), thousands(rate as f64));
            println!("{line}");
            h.dump_logs();
            table.push(line);
            None
        }
    }
}

/// The rates of `--rates` in order until Flint sustains one.
fn latency_ladder(h: &Harness, pids: Pids, broker: Broker, o: &Options, table: &mut Vec<String>) {
    let mut sustained = None;
    for &rate in &o.rates {
        let result = latency_at(h, pids, broker, rate, o, table);
        if result.as_ref().is_some_and(Latency::sustained) {
            sustained = Some(rate);
            break;
        }
    }
    let label = broker.label();
    let line = match sustained {
        Some(rate) if rate == o.rates[0] => {
            format!("[{label}] {} records/s is sustained through Flint", thousands(rate as f64))
        }
        Some(rate) => format!(
            "[{label}] {} records/s is NOT sustained through Flint on {label}; the highest rate tried that is: {}",
            thousands(o.rates[0] as f64),
            thousands(rate as f64)
        ),
        None => format!("[{label}] none of the rates {:?} is sustained through Flint on {label}", o.rates),
    };
    println!("{line}");
    table.push(line);
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

fn start_cluster() -> (Harness, Pids) {
    let mut h = Harness::new("bench-kafka");
    h.set("heartbeat.interval", "1 s");
    let jm = h.start_jobmanager("jobmanager");
    let tm = h.start_taskmanager("taskmanager", &[format!("taskmanager.numberOfTaskSlots={SLOTS}")]);
    h.wait_for_overview("the task manager", Duration::from_secs(30), |o| o["slots-total"] == SLOTS);
    let pids = Pids { jm: h.process(jm).pid(), tm: h.process(tm).pid() };
    (h, pids)
}

fn main() {
    let o = Options::parse();
    let started = Instant::now();
    println!(
        "bench_kafka: {} records (mock {}), {} rounds, throughput {}, mock {}, latency on (tansu, mock) {:?} (rates {:?}, {} s after {} s warm-up, p={}, consumers' fetch.wait.max.ms {}); \
         {} CPUs, clock ticks {}",
        o.records,
        o.mock_records,
        o.rounds,
        o.throughput,
        o.mock,
        (o.latency_tansu, o.latency_mock),
        o.rates,
        o.latency_seconds,
        o.warmup_seconds,
        o.latency_parallelism,
        o.fetch_wait_ms.map_or("tansu 100, mock 10".to_string(), |ms| ms.to_string()),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        clock_ticks()
    );
    println!("load average at start: {}", load_average());
    let (h, pids) = start_cluster();
    let mut series: Vec<Series> = Vec::new();
    let mut latency_lines: Vec<String> = Vec::new();

    if o.throughput || o.latency_tansu {
        let tansu = KafkaBroker::start("bench-kafka");
        let broker = Broker::Tansu(&tansu);
        if o.throughput {
            let input = unique_topic("bench-in-tansu");
            broker.create_topic(&input, PARTITIONS);
            produce_input(broker, &input, PARTITIONS, o.records);
            let flint = [(1, Guarantee::AtLeastOnce), (2, Guarantee::AtLeastOnce)];
            series.extend(throughput_rounds(&h, pids, broker, &input, o.records, &o, &flint));
        }
        if o.latency_tansu {
            latency_ladder(&h, pids, broker, &o, &mut latency_lines);
        }
    }

    if o.mock || o.latency_mock {
        let mock = MockCluster::new(3).expect("librdkafka mock cluster");
        let broker = Broker::Mock(&mock);
        println!("[mock] librdkafka mock cluster with 3 brokers at {}", mock.bootstrap_servers());
        if o.mock {
            let n = o.mock_records;
            let input = unique_topic("bench-in-mock");
            broker.create_topic(&input, MOCK_INPUT_PARTITIONS);
            produce_input(broker, &input, MOCK_INPUT_PARTITIONS, n);
            let flint = [
                (1, Guarantee::AtLeastOnce),
                (1, Guarantee::ExactlyOnce),
                (2, Guarantee::AtLeastOnce),
                (2, Guarantee::ExactlyOnce),
            ];
            series.extend(throughput_rounds(&h, pids, broker, &input, n, &o, &flint));
        }
        if o.latency_mock {
            latency_ladder(&h, pids, broker, &o, &mut latency_lines);
        }
    }

    if !series.is_empty() {
        print_throughput_table(&series);
    }
    if !latency_lines.is_empty() {
        println!();
        println!(
            "== End-to-end latency (send → output topic), checkpoints every {}, {} s window after {} s warm-up ==",
            o.checkpoint_interval.as_deref().unwrap_or("(off)"),
            o.latency_seconds,
            o.warmup_seconds
        );
        for line in &latency_lines {
            println!("{line}");
        }
        println!(
            "sustained = ≥ 95 % of the rate in and out, no record missing 20 s after the window, the last fifth's median \
             latency at most 500 ms above the first's. The broker-alone figures are over {} s after {} s. CPU cores: \
             'bench process' is the paced producer, the consumer and the plain relay (without the mock's thread).",
            o.floor_seconds.1, o.floor_seconds.0
        );
    }
    let total = started.elapsed().as_secs_f64();
    println!();
    println!(
        "bench_kafka finished in {:.0} s ({:.1} min); load average at the end: {}",
        total,
        total / 60.0,
        load_average()
    );
}
