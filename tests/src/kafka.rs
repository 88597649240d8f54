//! A real Kafka-protocol broker for tests: [tansu](https://crates.io/crates/tansu) 0.6.0 (a
//! Kafka-compatible broker written in Rust) with its SQLite storage engine, started as a child
//! process on a free port of 127.0.0.1 in its own data directory under the repository's
//! `target/tmp/kafka/` (database, log).
//!
//! The binary is `$FLINT_TANSU`, else `${FLINT_TOOLS_DIR:-$HOME/.cache/flint}/tansu-0.6.0/bin/tansu`,
//! where `scripts/install-test-deps.sh` builds it (outside the repository, so that CI reuses it
//! across fresh clones). Without it [`KafkaBroker::start`] fails saying so: tests that need a
//! broker fail loudly rather than skip.
//!
//! [`KafkaBroker::restart`] (or [`KafkaBroker::stop`] + [`KafkaBroker::start_again`]) keeps
//! port and data: topics, records and committed offsets survive. Everything is killed by pid
//! on drop; a test that panics leaves the data directory in place and prints the broker log.
//!
//! What tansu 0.6.0 does: topics (create, delete), produce (also idempotent), fetch,
//! ListOffsets (also by timestamp), consumer groups with committed offsets (commits by members
//! and by non-members). What it does not: transactions (`EndTxn` answers "not supported"; see
//! [`KafkaBroker::supports_transactions`]) and `CreatePartitions` (see
//! [`KafkaBroker::add_partitions`]). Where it differs: ListOffsets for a timestamp after the
//! last record answers offset 0 instead of -1 (see [`KafkaBroker::offsets_for_time`]). A test
//! that needs what tansu lacks runs against a real Kafka: set
//! `FLINT_TEST_KAFKA_BOOTSTRAP=host:port` and use [`KafkaBroker::external`], which starts
//! nothing (and cannot be stopped or restarted).
//!
//! The helpers ([`KafkaBroker::create_topic`], [`KafkaBroker::produce`],
//! [`KafkaBroker::consume`], ...) are synchronous and built on rdkafka; every wait has a
//! deadline, and a helper that cannot do its job fails the test with what it saw.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::free_port;

/// The version `scripts/install-test-deps.sh` installs.
const TANSU_VERSION: &str = "0.6.0";
/// Overrides where the broker binary is.
const TANSU_ENV: &str = "FLINT_TANSU";
/// Overrides tansu's `RUST_LOG` (default `warn`; `info` writes every storage query).
const TANSU_LOG_ENV: &str = "FLINT_TANSU_LOG";
/// `host:port` of a broker the tests use instead of starting one.
pub const EXTERNAL_BOOTSTRAP_ENV: &str = "FLINT_TEST_KAFKA_BOOTSTRAP";
const READY_DEADLINE: Duration = Duration::from_secs(30);
const STOP_DEADLINE: Duration = Duration::from_secs(5);
/// How long one admin, metadata or offset request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a topic may take to appear in (or vanish from) the metadata.
const TOPIC_DEADLINE: Duration = Duration::from_secs(30);
/// How long [`KafkaBroker::produce`] waits for all delivery reports.
const PRODUCE_DEADLINE: Duration = Duration::from_secs(30);
/// The longest [`KafkaBroker::consume_all`] reads, however busy the topic.
const CONSUME_ALL_LIMIT: Duration = Duration::from_secs(120);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A record to produce. Without a partition the producer's partitioner picks one (by key);
/// without a timestamp the producer's clock is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    pub partition: Option<i32>,
    /// Milliseconds since the epoch (CreateTime).
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl TestRecord {
    /// A record without key.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        TestRecord { value: Some(value.into()), ..Default::default() }
    }

    /// A record with key and value.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        TestRecord { key: Some(key.into()), value: Some(value.into()), ..Default::default() }
    }

    /// A record with a key and no value (a delete for compacted and upsert topics).
    pub fn tombstone(key: impl Into<Vec<u8>>) -> Self {
        TestRecord { key: Some(key.into()), ..Default::default() }
    }

    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    pub fn header(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((key.to_string(), value.into()));
        self
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Milliseconds since the epoch, `None` when the record has none.
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ConsumedRecord {
    /// The key as (lossy) UTF-8, `""` without key.
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }

    /// The value as (lossy) UTF-8, `""` for a tombstone.
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }
}

/// A name no other test (and no earlier run against an external broker) uses:
/// `<prefix>-<pid>-<n>`.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Where the broker binary is: `$FLINT_TANSU`, else the cache `scripts/install-test-deps.sh`
/// fills.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(TANSU_ENV) {
        return PathBuf::from(path);
    }
    let tools = match std::env::var_os("FLINT_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/flint"),
    };
    tools.join(format!("tansu-{TANSU_VERSION}")).join("bin/tansu")
}

/// `target/` of this build (next to the binaries' `target/<profile>/`).
fn target_dir() -> PathBuf {
    crate::bin_dir().parent().map(Path::to_path_buf).unwrap_or_else(|| crate::repo_root().join("target"))
}

/// The broker process the harness runs.
struct Local {
    binary: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: usize,
}

/// A Kafka broker for one test: a tansu child process, or an external broker.
pub struct KafkaBroker {
    pub name: String,
    bootstrap: String,
    local: Option<Local>,
    /// librdkafka's mock cluster (`rdkafka::mocking::MockCluster`) of the test process.
    mock: bool,
}

impl KafkaBroker {
    /// Starts a fresh tansu broker on a free port and waits (up to 30 s) until it answers a
    /// metadata request. Fails the test when tansu is not installed or does not get ready
    /// (with its log).
    pub fn start(name: &str) -> KafkaBroker {
        let binary = tansu_binary();
        if !binary.is_file() {
            panic!(
                "the Kafka test broker tansu {TANSU_VERSION} is not installed: {} is missing (run \
                 scripts/install-test-deps.sh, or point {TANSU_ENV} at a tansu binary)",
                binary.display()
            );
        }
        let dir = target_dir().join("tmp").join("kafka").join(format!(
            "{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let log = dir.join("tansu.log");
        let mut broker = KafkaBroker {
            name: name.to_string(),
            bootstrap: String::new(),
            local: Some(Local { binary, dir, log, port: 0, child: None, starts: 0 }),
            mock: false,
        };
        // The port was free a moment ago; if someone else took it meanwhile, pick another.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            broker.bootstrap = format!("127.0.0.1:{port}");
            broker.local_mut("started").port = port;
            match broker.spawn_and_wait() {
                Ok(()) => return broker,
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_error}")
    }

    /// The broker named by `FLINT_TEST_KAFKA_BOOTSTRAP`, once it answers a metadata request
    /// (up to 30 s); `None` when the variable is not set. Starts nothing.
    pub fn external() -> Option<KafkaBroker> {
        let bootstrap = std::env::var(EXTERNAL_BOOTSTRAP_ENV).ok().filter(|b| !b.trim().is_empty())?;
        let broker = KafkaBroker {
            name: "external".to_string(),
            bootstrap: bootstrap.trim().to_string(),
            local: None,
            mock: false,
        };
        let until = Instant::now() + READY_DEADLINE;
        loop {
            match broker.metadata_answers(Duration::from_secs(2)) {
                Ok(()) => return Some(broker),
                Err(e) if Instant::now() >= until => {
                    panic!(
                        "the external Kafka broker {} ({EXTERNAL_BOOTSTRAP_ENV}) does not answer: {e}",
                        broker.bootstrap
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// [`KafkaBroker::external`] when `FLINT_TEST_KAFKA_BOOTSTRAP` is set, else
    /// [`KafkaBroker::start`]. For tests that neither stop nor restart the broker; use
    /// [`unique_topic`] names, an external broker is shared.
    pub fn external_or_start(name: &str) -> KafkaBroker {
        KafkaBroker::external().unwrap_or_else(|| KafkaBroker::start(name))
    }

    /// A client of librdkafka's mock cluster running in this test process (`bootstrap`:
    /// its `bootstrap_servers()`): it takes the transactional calls but keeps no records away
    /// from `read_committed` readers. Create its topics through the `MockCluster`.
    pub fn mock_cluster(bootstrap: &str) -> KafkaBroker {
        KafkaBroker { name: "mock".to_string(), bootstrap: bootstrap.to_string(), local: None, mock: true }
    }

    /// Whether this is an external broker rather than one the harness started.
    pub fn is_external(&self) -> bool {
        self.local.is_none() && !self.mock
    }

    /// Whether the broker implements Kafka transactions: an external broker (a real Kafka)
    /// does, tansu 0.6.0 does not.
    pub fn supports_transactions(&self) -> bool {
        self.is_external()
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// The broker's data directory (`None` for an external broker).
    pub fn dir(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.dir.as_path())
    }

    pub fn pid(&self) -> Option<i32> {
        self.local.as_ref().and_then(|l| l.child.as_ref()).map(|c| c.id() as i32)
    }

    /// Whether the harness's broker process runs (always `true` for an external broker).
    pub fn is_running(&mut self) -> bool {
        match &mut self.local {
            None => true,
            Some(local) => local.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))),
        }
    }

    fn local_mut(&mut self, what: &str) -> &mut Local {
        let bootstrap = self.bootstrap.clone();
        self.local.as_mut().unwrap_or_else(|| {
            panic!("the external Kafka broker {bootstrap} ({EXTERNAL_BOOTSTRAP_ENV}) cannot be {what} by a test")
        })
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let name = self.name.clone();
        let local = self.local_mut("started");
        local.starts += 1;
        let url = format!("tcp://127.0.0.1:{}", local.port);
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&local.log)
            .map_err(|e| format!("cannot open {}: {e}", local.log.display()))?;
        let _ = writeln!(log, "===== flint test harness: start #{} of tansu '{name}' on {url} =====", local.starts);
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&local.binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // Relative to the working directory: the data directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&local.dir)
            // Only the arguments above configure it, whatever the test's environment holds.
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", std::env::var(TANSU_LOG_ENV).unwrap_or_else(|_| "warn".to_string()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start tansu '{}': {e}", local.binary.display()))?;
        local.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], local.port));
        let log_path = local.log.clone();
        let until = Instant::now() + READY_DEADLINE;
        let mut last_error = String::from("no answer yet");
        loop {
            let local = self.local_mut("started");
            if let Some(status) = local.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                local.child = None;
                return Err(format!(
                    "tansu '{name}' exited with {status} before it was ready; log {}:\n{}",
                    log_path.display(),
                    self.log_tail(60)
                ));
            }
            // A cheap connect first: librdkafka backs off after a refused connection.
            if TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok() {
                match self.metadata_answers(Duration::from_secs(2)) {
                    Ok(()) => return Ok(()),
                    Err(e) => last_error = e,
                }
            }
            if Instant::now() >= until {
                self.kill();
                return Err(format!(
                    "tansu '{name}' did not answer a metadata request on {address} within {READY_DEADLINE:?} \
                     ({last_error}); log {}:\n{}",
                    log_path.display(),
                    self.log_tail(60)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metadata_answers(&self, timeout: Duration) -> Result<(), String> {
        let client: BaseConsumer = self.client_config().create().map_err(|e| e.to_string())?;
        let metadata = client.fetch_metadata(None, timeout).map_err(|e| e.to_string())?;
        if metadata.brokers().is_empty() {
            return Err("the metadata lists no broker".to_string());
        }
        Ok(())
    }

    /// Stops the broker: SIGTERM, SIGKILL if it has not exited within 5 s. Port and data stay;
    /// [`KafkaBroker::start_again`] brings it back.
    pub fn stop(&mut self) {
        let local = self.local_mut("stopped");
        let Some(mut child) = local.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + STOP_DEADLINE;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }

    /// SIGKILL (a crash), and reap. Port and data stay.
    pub fn kill(&mut self) {
        let local = self.local_mut("killed");
        if let Some(mut child) = local.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts the stopped broker again on the same port with the same data and waits until it
    /// is ready (fails the test with its log if it is not).
    pub fn start_again(&mut self) {
        if self.is_running() {
            panic!("tansu '{}' is still running; stop it first", self.name);
        }
        if let Err(e) = self.spawn_and_wait() {
            panic!("{e}");
        }
    }

    /// [`KafkaBroker::stop`], then [`KafkaBroker::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// The broker's log (stdout and stderr of every start; `""` for an external broker).
    pub fn log(&self) -> String {
        self.local.as_ref().map(|l| fs::read_to_string(&l.log).unwrap_or_default()).unwrap_or_default()
    }

    /// The last `lines` lines of [`KafkaBroker::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A client configuration for this broker (`bootstrap.servers`, IPv4, a short reconnect
    /// back-off so that clients find a restarted broker quickly) to build further clients on.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("broker.address.family", "v4")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "500");
        config
    }

    /// A consumer of `group` that neither commits nor stores offsets by itself.
    fn group_consumer(&self, group: &str) -> BaseConsumer {
        self.client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap_or_else(|e| panic!("cannot create a Kafka consumer for {}: {e}", self.bootstrap))
    }

    /// A consumer for reading with `assign()`: librdkafka needs a group id for that, but the
    /// group is never joined and nothing is committed.
    fn reader(&self) -> BaseConsumer {
        self.group_consumer(&unique_topic("flint-test-reader"))
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client_config()
            .create()
            .unwrap_or_else(|e| panic!("cannot create a Kafka admin client for {}: {e}", self.bootstrap))
    }

    fn admin_options() -> AdminOptions {
        AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT)).operation_timeout(Some(REQUEST_TIMEOUT))
    }

    /// The partition ids of `topic`, sorted (fails the test when the topic does not exist).
    pub fn partitions(&self, topic: &str) -> Vec<i32> {
        self.try_partitions(&self.reader(), topic).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_partitions(&self, client: &BaseConsumer, topic: &str) -> Result<Vec<i32>, String> {
        let metadata = client
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| format!("no metadata for topic {topic}: {e}"))?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(format!("topic {topic} is not in the metadata"));
        };
        if let Some(error) = t.error() {
            return Err(format!("topic {topic}: {:?}", RDKafkaErrorCode::from(error)));
        }
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Creates `topic` with `partitions` partitions (replication 1) and waits until the
    /// metadata shows all of them.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.create_topic_with(topic, partitions, &[]);
    }

    /// [`KafkaBroker::create_topic`] with topic configs (`cleanup.policy`, ...).
    pub fn create_topic_with(&self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        let new_topic =
            configs.iter().fold(NewTopic::new(topic, partitions, TopicReplication::Fixed(1)), |t, (k, v)| t.set(k, v));
        let admin = self.admin();
        let results = block_on(admin.create_topics([&new_topic], &Self::admin_options()))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("cannot create topic {topic}: {e}"));
        for result in results {
            if let Err((name, code)) = result {
                panic!("cannot create topic {name}: {code:?} ({code})");
            }
        }
        let reader = self.reader();
        self.wait_until(&format!("topic {topic} to have {partitions} partitions"), TOPIC_DEADLINE, || {
            self.try_partitions(&reader, topic).is_ok_and(|p| p.len() == partitions as usize)
        });
    }

    /// Deletes `topic` and waits until the metadata no longer lists it.
    pub fn delete_topic(&self, topic: &str) {
        let admin = self.admin();
        let results = block_on(admin.delete_topics(&[topic], &Self::admin_options()))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("cannot delete topic {topic}: {e}"));
        for result in results {
            if let Err((name, code)) = result {
                panic!("cannot delete topic {name}: {code:?} ({code})");
            }
        }
        let reader = self.reader();
        self.wait_until(&format!("topic {topic} to vanish"), TOPIC_DEADLINE, || {
            self.try_partitions(&reader, topic).is_err()
        });
    }

    /// Grows `topic` to `total` partitions and waits until the metadata shows them.
    ///
    /// tansu 0.6.0 does not implement `CreatePartitions` (its ApiVersions answer does not
    /// list the request): against it this fails at once with librdkafka's
    /// `UnsupportedFeature`. Tests that grow topics run against an external broker.
    pub fn add_partitions(&self, topic: &str, total: usize) -> Result<(), String> {
        let admin = self.admin();
        let request = NewPartitions::new(topic, total);
        let results = block_on(admin.create_partitions([&request], &Self::admin_options()))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot add partitions to topic {topic} (CreatePartitions): {e}"))?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(format!("cannot add partitions to topic {name} (CreatePartitions): {code:?} ({code})"));
            }
        }
        let reader = self.reader();
        let until = Instant::now() + TOPIC_DEADLINE;
        loop {
            match self.try_partitions(&reader, topic) {
                Ok(p) if p.len() == total => return Ok(()),
                other if Instant::now() >= until => {
                    return Err(format!(
                        "topic {topic} did not reach {total} partitions within {TOPIC_DEADLINE:?}: {other:?}"
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Produces `records` to `topic` (acks from all in-sync replicas), waits (up to 30 s) for
    /// every delivery report and returns where each record went, `(partition, offset)` in
    /// the order of `records`. Any failed delivery fails the test.
    pub fn produce(&self, topic: &str, records: &[TestRecord]) -> Vec<(i32, i64)> {
        let producer: BaseProducer<Deliveries> = self
            .client_config()
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", PRODUCE_DEADLINE.as_millis().to_string())
            .create_with_context(Deliveries::default())
            .unwrap_or_else(|e| panic!("cannot create a Kafka producer for {}: {e}", self.bootstrap));
        let until = Instant::now() + PRODUCE_DEADLINE;
        for (index, record) in records.iter().enumerate() {
            send(&producer, topic, record, index, index as u64, until);
        }
        let _ = producer.flush(until.saturating_duration_since(Instant::now()));
        loop {
            let done = producer.context().results.lock().unwrap_or_else(|e| e.into_inner()).len();
            if done == records.len() {
                break;
            }
            if Instant::now() >= until {
                panic!(
                    "only {done} of {} records produced to {topic} were acknowledged within {PRODUCE_DEADLINE:?}",
                    records.len()
                );
            }
            producer.poll(Duration::from_millis(50));
        }
        let results = std::mem::take(&mut *producer.context().results.lock().unwrap_or_else(|e| e.into_inner()));
        let failed: Vec<String> =
            results.iter().filter_map(|(i, r)| r.as_ref().err().map(|e| format!("record {i}: {e}"))).collect();
        if !failed.is_empty() {
            panic!("{} of {} records were not produced to {topic}: {}", failed.len(), records.len(), failed.join("; "));
        }
        results.into_values().map(|r| r.expect("checked above")).collect()
    }

    /// Produces the records `record(i)` for every `i` of `indices`, for tests that need
    /// millions: the records are made one at a time (none are held), only a count of delivery
    /// reports is kept (not [`KafkaBroker::produce`]'s per-record positions), and `deadline`
    /// bounds the whole call. One idempotent producer with large batches: the broker drops the
    /// duplicates of retried batches, so every record is in the topic once, and each partition
    /// keeps the order of `indices`. Against tansu it is no faster than `produce` (the broker,
    /// SQLite on one thread, takes about 40,000 records/s either way). Waits until every record
    /// is acknowledged; a failed delivery or the deadline fails the test. Returns how many
    /// records were produced.
    pub fn produce_bulk(
        &self,
        topic: &str,
        indices: std::ops::Range<u64>,
        deadline: Duration,
        mut record: impl FnMut(u64) -> TestRecord,
    ) -> u64 {
        let producer: BaseProducer<BulkDeliveries> = self
            .client_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("batch.num.messages", "100000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", deadline.as_millis().max(1).to_string())
            .create_with_context(BulkDeliveries::default())
            .unwrap_or_else(|e| panic!("cannot create a Kafka producer for {}: {e}", self.bootstrap));
        let until = Instant::now() + deadline;
        let total = indices.end.saturating_sub(indices.start);
        let failed = |producer: &BaseProducer<BulkDeliveries>| {
            let failures = producer.context().failures.lock().unwrap_or_else(|e| e.into_inner());
            (!failures.is_empty()).then(|| failures.join("; "))
        };
        for index in indices {
            send(&producer, topic, &record(index), (), index, until);
            if index.is_multiple_of(10_000) {
                producer.poll(Duration::ZERO);
                if let Some(failures) = failed(&producer) {
                    panic!("records were not produced to {topic}: {failures}");
                }
            }
        }
        let _ = producer.flush(until.saturating_duration_since(Instant::now()));
        loop {
            if let Some(failures) = failed(&producer) {
                panic!("records were not produced to {topic}: {failures}");
            }
            let done = producer.context().delivered.load(Ordering::SeqCst);
            if done == total {
                return total;
            }
            if Instant::now() >= until {
                panic!("only {done} of {total} records produced to {topic} were acknowledged within {deadline:?}");
            }
            producer.poll(Duration::from_millis(50));
        }
    }

    /// Reads `topic` from the earliest offset of every partition (with `assign()`, no group,
    /// committed records only) until `expected` records are read, and returns them sorted by
    /// partition and offset. Fails the test with what was read if `deadline` passes first.
    pub fn consume(&self, topic: &str, expected: usize, deadline: Duration) -> Vec<ConsumedRecord> {
        let consumer = self.assigned_reader(topic);
        let until = Instant::now() + deadline;
        let mut records = Vec::new();
        let mut errors = Vec::new();
        while records.len() < expected {
            if Instant::now() >= until {
                panic!(
                    "read {} of {expected} records from {topic} within {deadline:?}; errors: {errors:?}; read: {}",
                    records.len(),
                    summary(&records)
                );
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => records.push(consumed(&message)),
                Some(Err(e)) => errors.push(e.to_string()),
                None => {}
            }
        }
        records.sort_by_key(|r| (r.partition, r.offset));
        records
    }

    /// Reads `topic` from the earliest offset of every partition until nothing new arrives
    /// for `quiet`; returns the records sorted by partition and offset. Fails the test if
    /// records still arrive after 120 s.
    pub fn consume_all(&self, topic: &str, quiet: Duration) -> Vec<ConsumedRecord> {
        let consumer = self.assigned_reader(topic);
        let start = Instant::now();
        let mut last = Instant::now();
        let mut records = Vec::new();
        while last.elapsed() < quiet {
            if start.elapsed() >= CONSUME_ALL_LIMIT {
                panic!(
                    "{topic} did not fall quiet for {quiet:?} within {CONSUME_ALL_LIMIT:?}; read {}",
                    summary(&records)
                );
            }
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
                records.push(consumed(&message));
                last = Instant::now();
            }
        }
        records.sort_by_key(|r| (r.partition, r.offset));
        records
    }

    fn assigned_reader(&self, topic: &str) -> BaseConsumer {
        let consumer = self.reader();
        let partitions = self.try_partitions(&consumer, topic).unwrap_or_else(|e| panic!("cannot read {topic}: {e}"));
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .unwrap_or_else(|e| panic!("cannot assign {topic}/{partition}: {e}"));
        }
        consumer.assign(&assignment).unwrap_or_else(|e| panic!("cannot assign {topic}: {e}"));
        consumer
    }

    /// The offsets `group` has committed for `topic`, by partition (partitions without a
    /// committed offset are left out).
    pub fn committed_offsets(&self, group: &str, topic: &str) -> BTreeMap<i32, i64> {
        let consumer = self.group_consumer(group);
        let mut query = TopicPartitionList::new();
        for partition in self.try_partitions(&consumer, topic).unwrap_or_else(|e| panic!("{e}")) {
            query.add_partition(topic, partition);
        }
        let committed = consumer
            .committed_offsets(query, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot read the offsets of group {group} for {topic}: {e}"));
        committed
            .elements_for_topic(topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some((e.partition(), offset)),
                _ => None,
            })
            .collect()
    }

    /// Commits `offsets` (partition -> next offset to read) of `topic` for `group`, as a
    /// consumer that is not a member of the group (the group must have no active members).
    pub fn commit_offsets(&self, group: &str, topic: &str, offsets: &BTreeMap<i32, i64>) {
        let consumer = self.group_consumer(group);
        let mut list = TopicPartitionList::new();
        for (&partition, &offset) in offsets {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))
                .unwrap_or_else(|e| panic!("cannot commit {topic}/{partition}: {e}"));
        }
        consumer
            .commit(&list, CommitMode::Sync)
            .unwrap_or_else(|e| panic!("cannot commit offsets of group {group} for {topic}: {e}"));
    }

    /// The high watermark (the offset the next record gets) of every partition of `topic`.
    pub fn end_offsets(&self, topic: &str) -> BTreeMap<i32, i64> {
        let consumer = self.reader();
        let partitions = self.try_partitions(&consumer, topic).unwrap_or_else(|e| panic!("{e}"));
        partitions
            .into_iter()
            .map(|partition| {
                let (_, high) = consumer
                    .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                    .unwrap_or_else(|e| panic!("cannot read the watermarks of {topic}/{partition}: {e}"));
                (partition, high)
            })
            .collect()
    }

    /// ListOffsets by timestamp: for every partition of `topic`, the offset of the first
    /// record with a timestamp at or after `timestamp_ms`, `None` when there is none.
    ///
    /// tansu 0.6.0 answers offset `0` rather than "none" (`-1`) when no record is at or after
    /// `timestamp_ms`, so against it that case reads `Some(0)`.
    pub fn offsets_for_time(&self, topic: &str, timestamp_ms: i64) -> BTreeMap<i32, Option<i64>> {
        let consumer = self.reader();
        let mut query = TopicPartitionList::new();
        for partition in self.try_partitions(&consumer, topic).unwrap_or_else(|e| panic!("{e}")) {
            query
                .add_partition_offset(topic, partition, Offset::Offset(timestamp_ms))
                .unwrap_or_else(|e| panic!("cannot query {topic}/{partition}: {e}"));
        }
        let answer = consumer
            .offsets_for_times(query, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot list the offsets of {topic} at {timestamp_ms}: {e}"));
        answer
            .elements_for_topic(topic)
            .iter()
            .map(|e| {
                if let Err(error) = e.error() {
                    panic!("cannot list the offset of {topic}/{} at {timestamp_ms}: {error}", e.partition());
                }
                match e.offset() {
                    Offset::Offset(offset) => (e.partition(), Some(offset)),
                    Offset::End => (e.partition(), None),
                    other => panic!("unexpected offset {other:?} for {topic}/{} at {timestamp_ms}", e.partition()),
                }
            })
            .collect()
    }

    /// Polls `check` until it is true, at most `deadline`; fails the test naming `what`.
    fn wait_until(&self, what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
        let until = Instant::now() + deadline;
        while !check() {
            if Instant::now() >= until {
                panic!("timed out after {deadline:?} waiting for {what} on {}", self.bootstrap);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if self.local.is_none() {
            return;
        }
        self.kill();
        let local = self.local_mut("dropped");
        if std::thread::panicking() {
            let (log, dir) = (local.log.clone(), local.dir.clone());
            eprintln!(
                "===== tansu '{}' log {} (data kept in {}) =====\n{}",
                self.name,
                log.display(),
                dir.display(),
                self.log_tail(60)
            );
        } else {
            let _ = fs::remove_dir_all(&local.dir);
        }
    }
}

/// Where a record went, `(partition, offset)`, or why it did not.
type Delivery = Result<(i32, i64), String>;

/// Collects delivery reports by record index.
#[derive(Default)]
struct Deliveries {
    results: Mutex<BTreeMap<usize, Delivery>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let outcome = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.to_string()),
        };
        self.results.lock().unwrap_or_else(|e| e.into_inner()).insert(index, outcome);
    }
}

/// Counts the delivery reports of [`KafkaBroker::produce_bulk`] (and keeps the first
/// failures).
#[derive(Default)]
struct BulkDeliveries {
    delivered: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl ClientContext for BulkDeliveries {}

impl ProducerContext for BulkDeliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::SeqCst);
            }
            Err((error, message)) => {
                let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                if failures.len() < 10 {
                    failures.push(format!("partition {}: {error}", message.partition()));
                }
            }
        }
    }
}

/// Hands `record` to `producer`; while its queue is full (until `until`), serves delivery
/// reports and tries again.
fn send<C: ProducerContext>(
    producer: &BaseProducer<C>,
    topic: &str,
    record: &TestRecord,
    opaque: C::DeliveryOpaque,
    index: u64,
    until: Instant,
) {
    let headers = record
        .headers
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value.as_slice()) }));
    let mut message = BaseRecord::<[u8], [u8], C::DeliveryOpaque>::with_opaque_to(topic, opaque).headers(headers);
    if let Some(key) = &record.key {
        message = message.key(key.as_slice());
    }
    if let Some(value) = &record.value {
        message = message.payload(value.as_slice());
    }
    if let Some(partition) = record.partition {
        message = message.partition(partition);
    }
    if let Some(timestamp) = record.timestamp {
        message = message.timestamp(timestamp);
    }
    loop {
        match producer.send(message) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if Instant::now() < until => {
                producer.poll(Duration::from_millis(10));
                message = back;
            }
            Err((e, _)) => panic!("cannot produce record {index} to {topic}: {e}"),
        }
    }
}

fn consumed(message: &impl Message) -> ConsumedRecord {
    ConsumedRecord {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        timestamp: message.timestamp().to_millis(),
        headers: message
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default(),
    }
}

/// How many records per partition, and the first few, for failure messages.
fn summary(records: &[ConsumedRecord]) -> String {
    let mut per_partition = BTreeMap::<i32, usize>::new();
    for r in records {
        *per_partition.entry(r.partition).or_default() += 1;
    }
    let first: Vec<String> = records
        .iter()
        .take(20)
        .map(|r| format!("{}@{} {}={}", r.partition, r.offset, r.key_str(), r.value_str()))
        .collect();
    format!("{} records (per partition {per_partition:?}), first: {first:?}", records.len())
}

/// Runs an rdkafka admin future (completed by rdkafka's own thread) with a deadline.
fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot build a runtime: {e}"))?;
    runtime
        .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), future).await })
        .map_err(|_| format!("no answer within {:?}", REQUEST_TIMEOUT + Duration::from_secs(5)))
}
