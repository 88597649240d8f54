//! The CheckpointCoordinator of one job, as a pure state machine: it takes events
//! (ticks, trigger requests, acknowledgements, declines, "metadata written", restarts) and
//! returns [`CheckpointAction`]s; the JobMaster actor performs them (sends the RPCs, writes
//! and deletes files, fails the job). Time is passed in as [`Instant`]s; nothing here sleeps,
//! reads the clock for a decision or touches the disk.
//!
//! Lifecycle of one checkpoint (or savepoint):
//!
//! ```text
//!  on_tick (when due) ---+
//!  trigger_now ----------+--> PENDING --(last task acked)--> FINALIZING --(on_metadata_written)--> COMPLETED
//!                             [Trigger -> sources]  |        [WriteMetadata]   |    [Completed, NotifyComplete,
//!                                                   |                          |     Discard beyond `retained`]
//!                                                   +------------+-------------+
//!                                                                v
//!                                                             ABORTED
//!  on_decline, timeout, on_metadata_failed, subsumed:  [Abort, Discard partial state, NotifyAborted]
//!  on_job_restart, shutdown:                           [Abort, Discard partial state]
//!  counted failures beyond `tolerable_failures`:       [FailJob] (once per streak)
//! ```
//!
//! A timeout is noticed by the first event returning actions at or after trigger + timeout
//! (normally the next tick).
//!
//! A timeout is noticed by the first event returning actions at or after trigger + timeout
//! (normally the next tick).
//!
//! Who does what: the JobMaster ticks the coordinator (a message it schedules to itself),
//! forwards task acknowledgements and declines, writes `_metadata` when asked
//! ([`CheckpointAction::WriteMetadata`]) and reports back with
//! [`CheckpointCoordinator::on_metadata_written`]. Only then is a checkpoint complete, so a
//! half-written checkpoint is never taken for a complete one.
//!
//! Choices, with Flink's `CheckpointCoordinator`, `CheckpointRequestDecider` and
//! `CheckpointFailureManager` as the reference:
//! - Periodic checkpoints trigger once `interval` has passed since the last periodic trigger
//!   (the first one, one interval after the first tick), `min_pause` has passed since the last
//!   checkpoint completed or was aborted, and fewer than `max_concurrent` checkpoints
//!   (savepoints included) are pending.
//! - Savepoints and manual checkpoints ([`CheckpointKind::Savepoint`], [`CheckpointKind::Manual`])
//!   are forced, as in Flink: they ignore the interval, `min_pause` and `max_concurrent`, and do
//!   not move the periodic schedule. [`CheckpointKind::Checkpoint`] through
//!   [`CheckpointCoordinator::trigger_now`] ignores only the interval.
//! - Counted failures: declines, timeouts and failed metadata writes of checkpoints (manual ones
//!   included). Not counted: savepoint failures, aborts for a restart or shutdown, subsumed
//!   checkpoints, and failures of checkpoints older than the last completed one. When the count
//!   exceeds `tolerable_failures`, one [`CheckpointAction::FailJob`] is emitted and the count
//!   starts over; any completion resets it.
//! - Completed checkpoints form the store [`CheckpointCoordinator::latest_completed`] reads:
//!   at most `retained` checkpoints, the oldest discarded first. Triggered savepoints never
//!   enter it and are never discarded; a savepoint seeded with
//!   [`CheckpointCoordinator::restore_from`] does enter it (a failover before the first
//!   checkpoint restores from it) but does not count against `retained` and is dropped
//!   without being discarded once older than every retained checkpoint.
//! - A newer completed checkpoint subsumes (aborts, uncounted) older pending checkpoints, not
//!   savepoints.
//! - An acknowledgement for a recently aborted checkpoint discards the state it names; other
//!   unknown, duplicate or stale (unexpected attempt) acknowledgements are ignored.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flint_common::config::{parse_duration, Configuration};
use flint_common::ids::ExecutionAttemptId;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// Checkpoints shown in the statistics history (Flink's `web.checkpoints.history`).
pub const HISTORY_SIZE: usize = 10;
/// Completed checkpoints the percentiles are computed over (the newest ones).
pub const SUMMARY_WINDOW: usize = 10_000;
/// Recently aborted checkpoint ids remembered, so late acknowledgements get their state discarded.
const RECENTLY_ABORTED: usize = 32;

pub const INTERVAL_KEY: &str = "execution.checkpointing.interval";
pub const TIMEOUT_KEY: &str = "execution.checkpointing.timeout";
pub const MIN_PAUSE_KEY: &str = "execution.checkpointing.min-pause";
pub const MAX_CONCURRENT_KEY: &str = "execution.checkpointing.max-concurrent-checkpoints";
pub const TOLERABLE_FAILURES_KEY: &str = "execution.checkpointing.tolerable-failed-checkpoints";
/// Flink 2's name of the number of retained checkpoints.
pub const RETAINED_KEY: &str = "execution.checkpointing.num-retained";
/// Flink 1's name, still accepted.
pub const RETAINED_DEPRECATED_KEY: &str = "state.checkpoints.num-retained";
pub const AFTER_TASKS_FINISH_KEY: &str = "execution.checkpointing.checkpoints-after-tasks-finish";
pub const AFTER_TASKS_FINISH_DEPRECATED_KEY: &str = "execution.checkpointing.checkpoints-after-tasks-finish.enabled";

/// Abort reason of checkpoints pending when the job restarts.
pub const JOB_RESTARTING: &str = "job restarting";
const EXPIRED: &str = "Checkpoint expired before completing.";
const SUBSUMED: &str = "Checkpoint has been subsumed.";
const SHUT_DOWN: &str = "Checkpoint coordinator is shut down.";
/// Flink refuses intervals and timeouts below this.
const MINIMAL_CHECKPOINT_TIME: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// Checkpointing settings of one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// `execution.checkpointing.interval`: time between periodic checkpoints.
    pub interval: Duration,
    /// `execution.checkpointing.timeout` (10 min): a checkpoint pending longer is aborted.
    pub timeout: Duration,
    /// `execution.checkpointing.min-pause` (0): least time between the end of one checkpoint
    /// and the next periodic trigger.
    pub min_pause: Duration,
    /// `execution.checkpointing.max-concurrent-checkpoints` (1).
    pub max_concurrent: u32,
    /// `execution.checkpointing.tolerable-failed-checkpoints` (0): consecutive failed
    /// checkpoints tolerated before the job is failed.
    pub tolerable_failures: u32,
    /// `state.checkpoints.num-retained` / `execution.checkpointing.num-retained` (1).
    pub retained: u32,
    /// `execution.checkpointing.checkpoints-after-tasks-finish` (true): tasks at the end of
    /// their input wait for a final checkpoint, which commits the sinks' last output.
    pub after_tasks_finish: bool,
}

impl CheckpointConfig {
    /// Defaults for everything but the interval.
    pub fn with_interval(interval: Duration) -> Self {
        Self {
            interval,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: 0,
            retained: 1,
            after_tasks_finish: true,
        }
    }

    /// Reads the settings from the job's configuration, falling back to the cluster's.
    /// `Ok(None)` when `execution.checkpointing.interval` is set in neither: checkpointing is
    /// off. Errors name the key and the value.
    pub fn from_config(job: &BTreeMap<String, String>, cluster: &Configuration) -> Result<Option<Self>, String> {
        let lookup = |keys: &[&'static str]| -> Option<(&'static str, String)> {
            keys.iter()
                .find_map(|&k| job.get(k).map(|v| (k, v.clone())))
                .or_else(|| keys.iter().find_map(|&k| cluster.get_raw(k).map(|v| (k, v.to_owned()))))
        };
        let duration = |keys: &[&'static str]| -> Result<Option<Duration>, String> {
            lookup(keys)
                .map(|(key, value)| {
                    parse_duration(value.trim()).map_err(|e| format!("invalid value '{value}' for '{key}': {e}"))
                })
                .transpose()
        };
        let count = |keys: &[&'static str], least: u32| -> Result<Option<u32>, String> {
            lookup(keys)
                .map(|(key, value)| match value.trim().parse::<u32>() {
                    Ok(n) if n >= least => Ok(n),
                    _ => Err(format!("invalid value '{value}' for '{key}': expected an integer of at least {least}")),
                })
                .transpose()
        };
        let at_least_minimal = |key: &str, d: Duration| {
            if d < MINIMAL_CHECKPOINT_TIME {
                Err(format!("invalid value for '{key}': {} ms is below the minimum of 10 ms", d.as_millis()))
            } else {
                Ok(d)
            }
        };

        let Some(interval) = duration(&[INTERVAL_KEY])? else {
            return Ok(None);
        };
        let mut config = Self::with_interval(at_least_minimal(INTERVAL_KEY, interval)?);
        if let Some(timeout) = duration(&[TIMEOUT_KEY])? {
            config.timeout = at_least_minimal(TIMEOUT_KEY, timeout)?;
        }
        if let Some(min_pause) = duration(&[MIN_PAUSE_KEY])? {
            config.min_pause = min_pause;
        }
        if let Some(n) = count(&[MAX_CONCURRENT_KEY], 1)? {
            config.max_concurrent = n;
        }
        if let Some(n) = count(&[TOLERABLE_FAILURES_KEY], 0)? {
            config.tolerable_failures = n;
        }
        if let Some(n) = count(&[RETAINED_KEY, RETAINED_DEPRECATED_KEY], 1)? {
            config.retained = n;
        }
        if let Some((key, value)) = lookup(&[AFTER_TASKS_FINISH_KEY, AFTER_TASKS_FINISH_DEPRECATED_KEY]) {
            config.after_tasks_finish = match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(format!("invalid value '{value}' for '{key}': expected true or false")),
            };
        }
        Ok(Some(config))
    }
}

// ---------------------------------------------------------------------------------------
// Events and actions
// ---------------------------------------------------------------------------------------

/// What is being taken.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckpointKind {
    /// A checkpoint of the periodic kind.
    Checkpoint,
    /// A savepoint written under `target` (`state.savepoints.dir` or the request's directory).
    Savepoint { target: String },
    /// A checkpoint requested through `POST /jobs/:id/checkpoints`.
    Manual,
}

impl CheckpointKind {
    pub fn is_savepoint(&self) -> bool {
        matches!(self, CheckpointKind::Savepoint { .. })
    }

    /// Forced requests bypass `min_pause` and `max_concurrent`.
    fn is_forced(&self) -> bool {
        !matches!(self, CheckpointKind::Checkpoint)
    }

    /// The `checkpoint_type` the REST API shows.
    pub fn type_name(&self) -> &'static str {
        if self.is_savepoint() {
            "SAVEPOINT"
        } else {
            "CHECKPOINT"
        }
    }
}

/// What a task reports when it has written its part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckState {
    /// Where the task wrote its state.
    pub handle: String,
    pub size_bytes: u64,
    /// Time spent aligning barriers.
    pub alignment_ms: u64,
    /// Time the snapshot took in the task.
    pub duration_ms: u64,
    /// The task took the checkpoint after the end of its input.
    #[serde(default)]
    pub end_of_input: bool,
}

/// What the JobMaster is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointAction {
    /// Inject barriers: send the trigger to these source tasks.
    Trigger { checkpoint_id: u64, timestamp_ms: u64, kind: CheckpointKind, tasks: Vec<ExecutionAttemptId> },
    /// Every task acknowledged: write `_metadata` (last) naming these handles, then call
    /// [`CheckpointCoordinator::on_metadata_written`] (or `on_metadata_failed`).
    WriteMetadata { checkpoint_id: u64, kind: CheckpointKind, handles: Vec<(ExecutionAttemptId, String)> },
    /// The checkpoint is complete (for a savepoint: the answer to the trigger request).
    Completed { checkpoint_id: u64, info: CompletedCheckpointInfo },
    /// Tell the tasks (sinks commit here). `final_checkpoint`: every task took it after the
    /// end of its input (Flink's final checkpoint): the tasks waiting for it end.
    NotifyComplete { checkpoint_id: u64, tasks: Vec<ExecutionAttemptId>, final_checkpoint: bool },
    /// The checkpoint failed or was given up.
    Abort { checkpoint_id: u64, reason: String },
    /// Tell the tasks to drop what they hold for the checkpoint.
    NotifyAborted { checkpoint_id: u64, tasks: Vec<ExecutionAttemptId> },
    /// Delete the checkpoint's files: `location` (the checkpoint directory, when known) and
    /// every handle.
    Discard { checkpoint_id: u64, location: Option<String>, handles: Vec<String> },
    /// Too many consecutive checkpoint failures: fail the job (restart strategy applies).
    FailJob { reason: String },
    /// A periodic checkpoint is due: reserve the next id from the (HA) id counter, off the
    /// control thread, and call [`CheckpointCoordinator::on_id_reserved`] with it.
    ReserveId,
    /// After a restore: move the id counter past `past` (in order with the reservations).
    AdvanceIds { past: u64 },
}

/// Why [`CheckpointCoordinator::trigger_now`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("not all required tasks are currently running")]
    NotAllTasksRunning,
    #[error("the maximum number of concurrent checkpoints ({max}) is pending")]
    TooManyConcurrentCheckpoints { max: u32 },
    #[error("the minimum pause between checkpoints has not passed")]
    MinPauseNotElapsed,
    #[error("the checkpoint coordinator is shut down")]
    ShutDown,
    #[error("could not get a checkpoint id: {reason}")]
    IdCounter { reason: String },
}

/// A completed checkpoint or savepoint, as kept in the store and restored from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedCheckpointInfo {
    pub id: u64,
    /// The directory holding `_metadata`.
    pub location: String,
    /// Epoch milliseconds.
    pub completed_at_ms: u64,
    pub size_bytes: u64,
    pub is_savepoint: bool,
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// Everything `/jobs/:id/checkpoints` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckpointStatistics {
    pub counts: CheckpointCounts,
    pub summary: CheckpointSummary,
    pub latest: LatestCheckpoints,
    /// The last [`HISTORY_SIZE`] triggered checkpoints, newest first.
    pub history: Vec<CheckpointStats>,
    /// The [`HISTORY_SIZE`] checkpoints that left the history last, newest first: their
    /// details stay readable for a while (a dashboard that listed the history asks for
    /// them), as Flink's checkpoint statistics cache keeps them.
    #[serde(skip)]
    pub evicted: Vec<CheckpointStats>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointCounts {
    pub restored: u64,
    /// Triggered.
    pub total: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
}

/// Over completed checkpoints and savepoints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckpointSummary {
    pub state_size: StatsSummary,
    pub end_to_end_duration: StatsSummary,
    /// Per checkpoint the longest barrier alignment of its tasks.
    pub alignment_duration: StatsSummary,
}

/// min/max/avg over every value, percentiles over the last [`SUMMARY_WINDOW`] (`None`
/// without data; the REST API shows `"NaN"`). Percentiles interpolate as Flink's (Commons
/// Math's legacy estimate: position `q * (n + 1)`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatsSummary {
    pub count: u64,
    pub min: u64,
    pub max: u64,
    /// Integer mean, as Flink shows it.
    pub avg: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatestCheckpoints {
    /// The latest completed checkpoint (not savepoint).
    pub completed: Option<CheckpointStats>,
    pub savepoint: Option<CheckpointStats>,
    pub failed: Option<CheckpointStats>,
    pub restored: Option<RestoredCheckpointStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoredCheckpointStats {
    pub id: u64,
    pub restore_timestamp: u64,
    pub is_savepoint: bool,
    pub external_path: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckpointStatus {
    InProgress,
    Completed,
    Failed,
}

/// One checkpoint; timestamps are epoch milliseconds, durations milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointStats {
    pub id: u64,
    pub status: CheckpointStatus,
    pub is_savepoint: bool,
    /// `CHECKPOINT` or `SAVEPOINT`.
    pub checkpoint_type: &'static str,
    pub trigger_timestamp: u64,
    /// `None` before the first acknowledgement.
    pub latest_ack_timestamp: Option<u64>,
    /// Sum over the acknowledged tasks.
    pub state_size: u64,
    /// Trigger to latest acknowledgement.
    pub end_to_end_duration: u64,
    /// Longest alignment of the acknowledged tasks.
    pub alignment_duration: u64,
    pub num_subtasks: u32,
    pub num_acknowledged_subtasks: u32,
    /// Completed: where `_metadata` is.
    pub external_path: Option<String>,
    /// Completed and since discarded (beyond `retained`).
    pub discarded: bool,
    pub failure_timestamp: Option<u64>,
    pub failure_message: Option<String>,
    /// The acknowledged tasks, by attempt; the REST layer groups them by vertex.
    pub subtasks: Vec<SubtaskCheckpointStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubtaskCheckpointStats {
    pub attempt: ExecutionAttemptId,
    pub ack_timestamp: u64,
    pub end_to_end_duration: u64,
    pub state_size: u64,
    pub alignment_duration: u64,
    /// Time the snapshot took in the task.
    pub duration: u64,
}

/// Accumulates one [`StatsSummary`].
#[derive(Clone, Debug, Default)]
struct SummaryAccumulator {
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
    window: VecDeque<u64>,
}

impl SummaryAccumulator {
    fn add(&mut self, value: u64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += u128::from(value);
        if self.window.len() == SUMMARY_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(value);
    }

    fn summary(&self) -> StatsSummary {
        let mut sorted: Vec<u64> = self.window.iter().copied().collect();
        sorted.sort_unstable();
        let avg =
            if self.count == 0 { 0 } else { u64::try_from(self.sum / u128::from(self.count)).unwrap_or(u64::MAX) };
        StatsSummary {
            count: self.count,
            min: self.min,
            max: self.max,
            avg,
            p50: percentile(&sorted, 0.5),
            p90: percentile(&sorted, 0.9),
            p95: percentile(&sorted, 0.95),
            p99: percentile(&sorted, 0.99),
            p999: percentile(&sorted, 0.999),
        }
    }
}

/// The `quantile` (0.5 for the median) of sorted values, estimated as Flink does (Commons
/// Math `Percentile`, legacy estimation): 1-based position `quantile * (n + 1)`, linear
/// interpolation between neighbours, clamped to the smallest and largest value. The
/// arithmetic follows Flink's step by step (quantile to percent and back), so results match
/// it to the last bit.
fn percentile(sorted: &[u64], quantile: f64) -> Option<f64> {
    let n = sorted.len();
    let (&first, &last) = (sorted.first()?, sorted.last()?);
    let percent = quantile * 100.0;
    let pos = percent / 100.0 * (n as f64 + 1.0);
    if pos < 1.0 {
        return Some(first as f64);
    }
    if pos >= n as f64 {
        return Some(last as f64);
    }
    let whole = pos.floor();
    let fraction = pos - whole;
    let lower = sorted[whole as usize - 1] as f64;
    let upper = sorted[whole as usize] as f64;
    Some(lower + fraction * (upper - lower))
}

// ---------------------------------------------------------------------------------------
// The coordinator
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Ack {
    state: AckState,
    at: Instant,
}

#[derive(Clone, Debug)]
struct Pending {
    kind: CheckpointKind,
    triggered_at: Instant,
    /// Tasks that must acknowledge.
    tasks: BTreeSet<ExecutionAttemptId>,
    acks: BTreeMap<ExecutionAttemptId, Ack>,
    /// Every task acknowledged; `_metadata` is being written.
    finalizing: bool,
}

/// A completed checkpoint in the store.
#[derive(Clone, Debug)]
struct Retained {
    info: CompletedCheckpointInfo,
    handles: Vec<String>,
}

/// How an abort counts towards the tolerable failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    Yes,
    No,
}

/// The CheckpointCoordinator of one job. See the module documentation.
pub struct CheckpointCoordinator {
    config: CheckpointConfig,
    /// A [`CheckpointAction::ReserveId`] is out.
    reserving: bool,
    /// Ids below are refused (they belong to restored checkpoints or older ones).
    id_floor: u64,
    /// Maps instants to epoch milliseconds for the statistics.
    clock_anchor: (Instant, u64),
    pending: BTreeMap<u64, Pending>,
    store: VecDeque<Retained>,
    /// When periodic triggering was (re)armed, or the last periodic trigger.
    last_periodic: Option<Instant>,
    /// Last completion or abort of a non-savepoint checkpoint, for `min_pause`.
    last_finished: Option<Instant>,
    last_completed_id: Option<u64>,
    consecutive_failures: u32,
    recently_aborted: VecDeque<u64>,
    shut_down: bool,
    // statistics
    counts: CheckpointCounts,
    history: VecDeque<CheckpointStats>,
    evicted: VecDeque<CheckpointStats>,
    latest: LatestCheckpoints,
    size_summary: SummaryAccumulator,
    duration_summary: SummaryAccumulator,
    alignment_summary: SummaryAccumulator,
}

impl CheckpointCoordinator {
    /// A coordinator with no checkpoint yet. Epoch timestamps in the statistics are anchored
    /// at the system clock now; see [`CheckpointCoordinator::with_clock_anchor`].
    pub fn new(config: CheckpointConfig) -> Self {
        let epoch_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(millis).unwrap_or(0);
        Self {
            config,
            reserving: false,
            id_floor: 1,
            clock_anchor: (Instant::now(), epoch_ms),
            pending: BTreeMap::new(),
            store: VecDeque::new(),
            last_periodic: None,
            last_finished: None,
            last_completed_id: None,
            consecutive_failures: 0,
            recently_aborted: VecDeque::new(),
            shut_down: false,
            counts: CheckpointCounts::default(),
            history: VecDeque::new(),
            evicted: VecDeque::new(),
            latest: LatestCheckpoints::default(),
            size_summary: SummaryAccumulator::default(),
            duration_summary: SummaryAccumulator::default(),
            alignment_summary: SummaryAccumulator::default(),
        }
    }

    /// Declares that `instant` is `epoch_ms` on the wall clock (deterministic timestamps in
    /// tests). Only the statistics and [`CompletedCheckpointInfo::completed_at_ms`] use it.
    pub fn with_clock_anchor(mut self, instant: Instant, epoch_ms: u64) -> Self {
        self.clock_anchor = (instant, epoch_ms);
        self
    }

    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    /// Ids of the pending checkpoints, oldest first.
    pub fn pending_ids(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// The newest checkpoint in the store (what a failover restores from).
    pub fn latest_completed(&self) -> Option<&CompletedCheckpointInfo> {
        self.store.back().map(|r| &r.info)
    }

    /// The store, oldest first.
    pub fn retained_checkpoints(&self) -> Vec<&CompletedCheckpointInfo> {
        self.store.iter().map(|r| &r.info).collect()
    }

    /// Periodic work: aborts checkpoints pending longer than the timeout, then triggers a
    /// periodic checkpoint when due. `running` are the tasks that must acknowledge (pass them
    /// only when all of the job's tasks run; empty means "not all running"), `sources` the
    /// tasks that receive the trigger.
    pub fn on_tick(
        &mut self,
        now: Instant,
        running: &[ExecutionAttemptId],
        sources: &[ExecutionAttemptId],
    ) -> Vec<CheckpointAction> {
        let mut actions = self.expire(now);
        if self.shut_down {
            return actions;
        }
        let Some(last) = self.last_periodic else {
            self.last_periodic = Some(now);
            return actions;
        };
        let due = now.saturating_duration_since(last) >= self.config.interval;
        if !due || self.check_periodic_allowed(now).is_err() || running.is_empty() || sources.is_empty() {
            return actions;
        }
        if !self.reserving {
            self.reserving = true;
            actions.push(CheckpointAction::ReserveId);
        }
        actions
    }

    /// The id asked for with [`CheckpointAction::ReserveId`]: the periodic checkpoint starts
    /// unless it is no longer allowed (the id is then left unused: ids may have gaps).
    pub fn on_id_reserved(
        &mut self,
        id: Result<u64, String>,
        now: Instant,
        running: &[ExecutionAttemptId],
        sources: &[ExecutionAttemptId],
    ) -> Vec<CheckpointAction> {
        self.reserving = false;
        let mut actions = self.expire(now);
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                warn!(error = %e, "could not get a checkpoint id; skipping this checkpoint");
                return actions;
            }
        };
        if id < self.id_floor {
            warn!(id, floor = self.id_floor, "the checkpoint id counter is behind a restored checkpoint; moving it");
            actions.push(CheckpointAction::AdvanceIds { past: self.id_floor - 1 });
            return actions;
        }
        if self.shut_down || self.check_periodic_allowed(now).is_err() || running.is_empty() || sources.is_empty() {
            return actions;
        }
        self.last_periodic = Some(now);
        actions.push(self.start(id, CheckpointKind::Checkpoint, now, running, sources));
        actions
    }

    /// Whether [`CheckpointCoordinator::trigger_now`] would take `kind` now (checked before an
    /// id is reserved for it).
    pub fn check_trigger(
        &self,
        now: Instant,
        kind: &CheckpointKind,
        running: &[ExecutionAttemptId],
        sources: &[ExecutionAttemptId],
    ) -> Result<(), TriggerError> {
        if self.shut_down {
            return Err(TriggerError::ShutDown);
        }
        if running.is_empty() || sources.is_empty() {
            return Err(TriggerError::NotAllTasksRunning);
        }
        if !kind.is_forced() {
            self.check_periodic_allowed(now)?;
        }
        Ok(())
    }

    /// Triggers now, whatever the interval. Savepoints and manual checkpoints are forced
    /// (they also ignore `min_pause` and `max_concurrent`); a plain
    /// [`CheckpointKind::Checkpoint`] respects both and restarts the periodic schedule.
    /// Expired checkpoints are left for the next event that returns actions (an error could
    /// not carry their aborts), so they may still count against `max_concurrent` here.
    pub fn trigger_now(
        &mut self,
        now: Instant,
        kind: CheckpointKind,
        id: u64,
        running: &[ExecutionAttemptId],
        sources: &[ExecutionAttemptId],
    ) -> Result<Vec<CheckpointAction>, TriggerError> {
        self.check_trigger(now, &kind, running, sources)?;
        if id < self.id_floor {
            return Err(TriggerError::IdCounter {
                reason: format!("id {id} is not above the restored checkpoint {}", self.id_floor - 1),
            });
        }
        if !kind.is_forced() {
            self.last_periodic = Some(now);
        }
        Ok(vec![self.start(id, kind, now, running, sources)])
    }

    /// A task acknowledged `checkpoint_id`. When it was the last one, asks for `_metadata`.
    pub fn on_ack(
        &mut self,
        checkpoint_id: u64,
        attempt: ExecutionAttemptId,
        state: AckState,
        now: Instant,
    ) -> Vec<CheckpointAction> {
        let mut actions = self.expire(now);
        let Some(pending) = self.pending.get_mut(&checkpoint_id) else {
            if self.recently_aborted.contains(&checkpoint_id) {
                // Late: the checkpoint is gone, so is the use of this state.
                actions.push(CheckpointAction::Discard { checkpoint_id, location: None, handles: vec![state.handle] });
            }
            return actions;
        };
        if pending.finalizing || !pending.tasks.contains(&attempt) || pending.acks.contains_key(&attempt) {
            return actions;
        }
        pending.acks.insert(attempt, Ack { state, at: now });
        if pending.acks.len() == pending.tasks.len() {
            pending.finalizing = true;
            actions.push(CheckpointAction::WriteMetadata {
                checkpoint_id,
                kind: pending.kind.clone(),
                handles: pending.acks.iter().map(|(a, ack)| (*a, ack.state.handle.clone())).collect(),
            });
        }
        actions
    }

    /// A task declined `checkpoint_id`: the checkpoint is aborted.
    pub fn on_decline(
        &mut self,
        checkpoint_id: u64,
        attempt: ExecutionAttemptId,
        reason: &str,
        now: Instant,
    ) -> Vec<CheckpointAction> {
        self.decline(checkpoint_id, attempt, reason, Counted::Yes, now)
    }

    /// `checkpoint_id` cannot complete for a reason that is no failure of checkpointing: a
    /// task it needs is no longer running (it finished or is going away), or a newer
    /// checkpoint overtook it. Aborted like a decline, but not counted towards
    /// `tolerable_failures` (Flink ignores these reasons in its failure manager).
    pub fn on_decline_uncounted(
        &mut self,
        checkpoint_id: u64,
        attempt: ExecutionAttemptId,
        reason: &str,
        now: Instant,
    ) -> Vec<CheckpointAction> {
        self.decline(checkpoint_id, attempt, reason, Counted::No, now)
    }

    fn decline(
        &mut self,
        checkpoint_id: u64,
        attempt: ExecutionAttemptId,
        reason: &str,
        counted: Counted,
        now: Instant,
    ) -> Vec<CheckpointAction> {
        let mut actions = self.expire(now);
        let declined = self.pending.get(&checkpoint_id).is_some_and(|p| !p.finalizing && p.tasks.contains(&attempt));
        if declined {
            let reason = format!("Checkpoint was declined: {reason}");
            self.abort(checkpoint_id, reason, counted, true, now, &mut actions);
        }
        actions
    }

    /// `_metadata` of `checkpoint_id` is written at `location`: the checkpoint is complete.
    /// A write for a checkpoint aborted meanwhile is discarded.
    pub fn on_metadata_written(&mut self, checkpoint_id: u64, location: String, now: Instant) -> Vec<CheckpointAction> {
        let mut actions = self.expire(now);
        let pending = match self.pending.remove(&checkpoint_id) {
            Some(p) if p.finalizing => p,
            Some(p) => {
                // Not asked for yet: a bug in the caller; the checkpoint carries on.
                self.pending.insert(checkpoint_id, p);
                return actions;
            }
            None => {
                actions.push(CheckpointAction::Discard { checkpoint_id, location: Some(location), handles: vec![] });
                return actions;
            }
        };
        let is_savepoint = pending.kind.is_savepoint();
        let mut stats = self.stats_of(checkpoint_id, &pending);
        stats.status = CheckpointStatus::Completed;
        stats.external_path = Some(location.clone());
        let info = CompletedCheckpointInfo {
            id: checkpoint_id,
            location,
            completed_at_ms: self.epoch_ms(now),
            size_bytes: stats.state_size,
            is_savepoint,
        };
        let tasks: Vec<_> = pending.tasks.iter().copied().collect();
        let final_checkpoint = pending.acks.values().all(|a| a.state.end_of_input);

        self.counts.completed += 1;
        self.size_summary.add(stats.state_size);
        self.duration_summary.add(stats.end_to_end_duration);
        self.alignment_summary.add(stats.alignment_duration);
        self.replace_history(stats.clone());
        if is_savepoint {
            self.latest.savepoint = Some(stats);
        } else {
            self.latest.completed = Some(stats);
            self.last_finished = Some(now);
        }
        self.consecutive_failures = 0;
        self.last_completed_id = Some(self.last_completed_id.map_or(checkpoint_id, |l| l.max(checkpoint_id)));

        actions.push(CheckpointAction::Completed { checkpoint_id, info: info.clone() });
        actions.push(CheckpointAction::NotifyComplete { checkpoint_id, tasks, final_checkpoint });
        if !is_savepoint {
            let handles = pending.acks.values().map(|a| a.state.handle.clone()).collect();
            self.store.push_back(Retained { info, handles });
            self.enforce_retention(&mut actions);
            let subsumed: Vec<u64> = self
                .pending
                .iter()
                .filter(|(id, p)| **id < checkpoint_id && !p.kind.is_savepoint())
                .map(|(id, _)| *id)
                .collect();
            for id in subsumed {
                self.abort(id, SUBSUMED.to_owned(), Counted::No, true, now, &mut actions);
            }
        }
        actions
    }

    /// Writing `_metadata` of `checkpoint_id` failed: the checkpoint is aborted (counted).
    pub fn on_metadata_failed(&mut self, checkpoint_id: u64, reason: &str, now: Instant) -> Vec<CheckpointAction> {
        let mut actions = self.expire(now);
        if self.pending.get(&checkpoint_id).is_some_and(|p| p.finalizing) {
            let reason = format!("Failure to finalize checkpoint: {reason}");
            self.abort(checkpoint_id, reason, Counted::Yes, true, now, &mut actions);
        }
        actions
    }

    /// The job restarts: every pending checkpoint is aborted ([`JOB_RESTARTING`], not counted,
    /// no notification to the tasks, which are going away); completed ones are kept. Periodic
    /// triggering re-arms on the next tick.
    pub fn on_job_restart(&mut self, now: Instant) -> Vec<CheckpointAction> {
        let mut actions = Vec::new();
        for id in self.pending_ids() {
            self.abort(id, JOB_RESTARTING.to_owned(), Counted::No, false, now, &mut actions);
        }
        self.last_periodic = None;
        actions
    }

    /// The job reached a terminal state: pending checkpoints are aborted and nothing is
    /// triggered any more.
    pub fn shutdown(&mut self, now: Instant) -> Vec<CheckpointAction> {
        let mut actions = Vec::new();
        for id in self.pending_ids() {
            self.abort(id, SHUT_DOWN.to_owned(), Counted::No, false, now, &mut actions);
        }
        self.shut_down = true;
        actions
    }

    /// Seeds the coordinator after recovery with a checkpoint or savepoint the job restored
    /// from (call in ascending id order for several). Ids handed out later are above it.
    pub fn restore_from(
        &mut self,
        info: CompletedCheckpointInfo,
        now: Instant,
    ) -> Result<Vec<CheckpointAction>, String> {
        let mut actions = Vec::new();
        if info.id >= self.id_floor {
            self.id_floor = info.id + 1;
            actions.push(CheckpointAction::AdvanceIds { past: info.id });
        }
        self.counts.restored += 1;
        self.latest.restored = Some(RestoredCheckpointStats {
            id: info.id,
            restore_timestamp: self.epoch_ms(now),
            is_savepoint: info.is_savepoint,
            external_path: info.location.clone(),
        });
        self.last_completed_id = Some(self.last_completed_id.map_or(info.id, |l| l.max(info.id)));
        if !self.store.iter().any(|r| r.info.id == info.id) {
            self.store.push_back(Retained { info, handles: vec![] });
            self.store.make_contiguous().sort_by_key(|r| r.info.id);
            self.enforce_retention(&mut actions);
        }
        Ok(actions)
    }

    /// Statistics for the REST API.
    pub fn statistics(&self) -> CheckpointStatistics {
        let history = self
            .history
            .iter()
            .map(|s| match self.pending.get(&s.id) {
                Some(p) if s.status == CheckpointStatus::InProgress => self.stats_of(s.id, p),
                _ => s.clone(),
            })
            .collect();
        CheckpointStatistics {
            counts: CheckpointCounts { in_progress: self.pending.len() as u64, ..self.counts },
            summary: CheckpointSummary {
                state_size: self.size_summary.summary(),
                end_to_end_duration: self.duration_summary.summary(),
                alignment_duration: self.alignment_summary.summary(),
            },
            latest: self.latest.clone(),
            history,
            evicted: self.evicted.iter().cloned().collect(),
        }
    }

    /// One checkpoint's statistics (`/jobs/:id/checkpoints/details/:checkpointid`), when it is
    /// still in the history or among the latest.
    pub fn checkpoint_details(&self, checkpoint_id: u64) -> Option<CheckpointStats> {
        if let Some(p) = self.pending.get(&checkpoint_id) {
            return Some(self.stats_of(checkpoint_id, p));
        }
        let latest = [&self.latest.completed, &self.latest.savepoint, &self.latest.failed];
        self.history
            .iter()
            .chain(latest.into_iter().flatten())
            .chain(self.evicted.iter())
            .find(|s| s.id == checkpoint_id)
            .cloned()
    }

    // -- internals ------------------------------------------------------------------------

    /// Whether a non-forced trigger may start now (interval aside).
    fn check_periodic_allowed(&self, now: Instant) -> Result<(), TriggerError> {
        if self.pending.len() >= self.config.max_concurrent as usize {
            return Err(TriggerError::TooManyConcurrentCheckpoints { max: self.config.max_concurrent });
        }
        if self.last_finished.is_some_and(|f| now.saturating_duration_since(f) < self.config.min_pause) {
            return Err(TriggerError::MinPauseNotElapsed);
        }
        Ok(())
    }

    fn start(
        &mut self,
        checkpoint_id: u64,
        kind: CheckpointKind,
        now: Instant,
        running: &[ExecutionAttemptId],
        sources: &[ExecutionAttemptId],
    ) -> CheckpointAction {
        let pending = Pending {
            kind: kind.clone(),
            triggered_at: now,
            tasks: running.iter().copied().collect(),
            acks: BTreeMap::new(),
            finalizing: false,
        };
        self.counts.total += 1;
        let stats = self.stats_of(checkpoint_id, &pending);
        self.history.push_front(stats);
        while self.history.len() > HISTORY_SIZE {
            if let Some(old) = self.history.pop_back() {
                self.evicted.push_front(old);
                self.evicted.truncate(HISTORY_SIZE);
            }
        }
        self.pending.insert(checkpoint_id, pending);
        CheckpointAction::Trigger { checkpoint_id, timestamp_ms: self.epoch_ms(now), kind, tasks: sources.to_vec() }
    }

    /// Aborts checkpoints pending since `timeout` or longer.
    fn expire(&mut self, now: Instant) -> Vec<CheckpointAction> {
        let mut actions = Vec::new();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.triggered_at) >= self.config.timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.abort(id, EXPIRED.to_owned(), Counted::Yes, true, now, &mut actions);
        }
        actions
    }

    fn abort(
        &mut self,
        checkpoint_id: u64,
        reason: String,
        counted: Counted,
        notify_tasks: bool,
        now: Instant,
        actions: &mut Vec<CheckpointAction>,
    ) {
        let Some(pending) = self.pending.remove(&checkpoint_id) else {
            return;
        };
        let mut stats = self.stats_of(checkpoint_id, &pending);
        stats.status = CheckpointStatus::Failed;
        stats.failure_timestamp = Some(self.epoch_ms(now));
        stats.failure_message = Some(reason.clone());
        self.counts.failed += 1;
        self.replace_history(stats.clone());
        self.latest.failed = Some(stats);
        if self.recently_aborted.len() == RECENTLY_ABORTED {
            self.recently_aborted.pop_front();
        }
        self.recently_aborted.push_back(checkpoint_id);
        let is_savepoint = pending.kind.is_savepoint();
        if !is_savepoint {
            self.last_finished = Some(now);
        }

        actions.push(CheckpointAction::Abort { checkpoint_id, reason: reason.clone() });
        actions.push(CheckpointAction::Discard {
            checkpoint_id,
            location: None,
            handles: pending.acks.into_values().map(|a| a.state.handle).collect(),
        });
        if notify_tasks {
            actions.push(CheckpointAction::NotifyAborted { checkpoint_id, tasks: pending.tasks.into_iter().collect() });
        }

        let older_than_success = self.last_completed_id.is_some_and(|l| checkpoint_id < l);
        if counted == Counted::Yes && !is_savepoint && !older_than_success {
            self.consecutive_failures += 1;
            if self.consecutive_failures > self.config.tolerable_failures {
                self.consecutive_failures = 0;
                warn!(
                    checkpoint_id,
                    tolerable = self.config.tolerable_failures,
                    "checkpoint failures exceed tolerance"
                );
                actions.push(CheckpointAction::FailJob {
                    reason: format!(
                        "Exceeded checkpoint tolerable failure threshold ({}): checkpoint {checkpoint_id} failed: {reason}",
                        self.config.tolerable_failures
                    ),
                });
            }
        }
    }

    /// Drops checkpoints beyond `retained` (oldest first, with a [`CheckpointAction::Discard`])
    /// and savepoints older than every retained checkpoint (without).
    fn enforce_retention(&mut self, actions: &mut Vec<CheckpointAction>) {
        let retained = self.config.retained as usize;
        while self.store.iter().filter(|r| !r.info.is_savepoint).count() > retained {
            let Some(index) = self.store.iter().position(|r| !r.info.is_savepoint) else { break };
            let Some(old) = self.store.remove(index) else { break };
            self.mark_discarded(old.info.id);
            actions.push(CheckpointAction::Discard {
                checkpoint_id: old.info.id,
                location: Some(old.info.location),
                handles: old.handles,
            });
        }
        let oldest_checkpoint = self.store.iter().find(|r| !r.info.is_savepoint).map(|r| r.info.id);
        if let Some(oldest) = oldest_checkpoint {
            self.store.retain(|r| !r.info.is_savepoint || r.info.id > oldest);
        }
    }

    fn mark_discarded(&mut self, checkpoint_id: u64) {
        for stats in self.history.iter_mut().chain(self.latest.completed.as_mut()) {
            if stats.id == checkpoint_id {
                stats.discarded = true;
            }
        }
    }

    fn replace_history(&mut self, stats: CheckpointStats) {
        if let Some(entry) = self.history.iter_mut().chain(self.evicted.iter_mut()).find(|s| s.id == stats.id) {
            *entry = stats;
        }
    }

    fn stats_of(&self, checkpoint_id: u64, pending: &Pending) -> CheckpointStats {
        let since_trigger = |at: Instant| millis(at.saturating_duration_since(pending.triggered_at));
        let latest_ack = pending.acks.values().map(|a| a.at).max();
        CheckpointStats {
            id: checkpoint_id,
            status: CheckpointStatus::InProgress,
            is_savepoint: pending.kind.is_savepoint(),
            checkpoint_type: pending.kind.type_name(),
            trigger_timestamp: self.epoch_ms(pending.triggered_at),
            latest_ack_timestamp: latest_ack.map(|at| self.epoch_ms(at)),
            state_size: pending.acks.values().map(|a| a.state.size_bytes).sum(),
            end_to_end_duration: latest_ack.map(since_trigger).unwrap_or(0),
            alignment_duration: pending.acks.values().map(|a| a.state.alignment_ms).max().unwrap_or(0),
            num_subtasks: pending.tasks.len() as u32,
            num_acknowledged_subtasks: pending.acks.len() as u32,
            external_path: None,
            discarded: false,
            failure_timestamp: None,
            failure_message: None,
            subtasks: pending
                .acks
                .iter()
                .map(|(attempt, ack)| SubtaskCheckpointStats {
                    attempt: *attempt,
                    ack_timestamp: self.epoch_ms(ack.at),
                    end_to_end_duration: since_trigger(ack.at),
                    state_size: ack.state.size_bytes,
                    alignment_duration: ack.state.alignment_ms,
                    duration: ack.state.duration_ms,
                })
                .collect(),
        }
    }

    fn epoch_ms(&self, at: Instant) -> u64 {
        let (base, base_ms) = self.clock_anchor;
        if at >= base {
            base_ms.saturating_add(millis(at - base))
        } else {
            base_ms.saturating_sub(millis(base - at))
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flint_common::ha::{CheckpointIdCounter, StandaloneCheckpointIdCounter};

    use super::*;

    const EPOCH: u64 = 1_795_216_000_000;

    struct Fixture {
        t0: Instant,
        counter: Arc<StandaloneCheckpointIdCounter>,
        c: CheckpointCoordinator,
        tasks: Vec<ExecutionAttemptId>,
        sources: Vec<ExecutionAttemptId>,
    }

    impl Fixture {
        fn new(config: CheckpointConfig) -> Self {
            let t0 = Instant::now();
            let counter = Arc::new(StandaloneCheckpointIdCounter::new());
            let c = CheckpointCoordinator::new(config).with_clock_anchor(t0, EPOCH);
            let tasks: Vec<_> = (1..=3).map(ExecutionAttemptId::from_u128).collect();
            let sources = vec![tasks[0]];
            Self { t0, counter, c, tasks, sources }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn tick(&mut self, ms: u64) -> Vec<CheckpointAction> {
            let now = self.at(ms);
            let actions = self.c.on_tick(now, &self.tasks, &self.sources);
            self.ids(actions, now)
        }

        /// Carries out the id actions as the JobMaster does (reserve from the counter,
        /// advance it); the other actions.
        fn ids(&mut self, actions: Vec<CheckpointAction>, now: Instant) -> Vec<CheckpointAction> {
            let mut out = Vec::new();
            let mut queue: VecDeque<CheckpointAction> = actions.into();
            while let Some(action) = queue.pop_front() {
                match action {
                    CheckpointAction::ReserveId => {
                        let id = self.counter.get_and_increment().map_err(|e| e.to_string());
                        queue.extend(self.c.on_id_reserved(id, now, &self.tasks, &self.sources));
                    }
                    CheckpointAction::AdvanceIds { past } => {
                        if self.counter.get().unwrap() <= past {
                            self.counter.set_count(past + 1).unwrap();
                        }
                    }
                    other => out.push(other),
                }
            }
            out
        }

        fn restore(&mut self, info: CompletedCheckpointInfo, ms: u64) -> Vec<CheckpointAction> {
            let now = self.at(ms);
            let actions = self.c.restore_from(info, now).unwrap();
            self.ids(actions, now)
        }

        fn trigger_now(&mut self, kind: CheckpointKind, ms: u64) -> Result<(u64, Vec<CheckpointAction>), TriggerError> {
            let now = self.at(ms);
            self.c.check_trigger(now, &kind, &self.tasks, &self.sources)?;
            let id = self.counter.get_and_increment().unwrap();
            self.c.trigger_now(now, kind, id, &self.tasks, &self.sources).map(|actions| (id, actions))
        }

        fn trigger(&mut self, kind: CheckpointKind, ms: u64) -> u64 {
            self.trigger_now(kind, ms).expect("triggered").0
        }

        fn ack(&mut self, id: u64, task: usize, ms: u64) -> Vec<CheckpointAction> {
            let now = self.at(ms);
            self.c.on_ack(id, self.tasks[task], ack_state(id, task, 100, 1), now)
        }

        fn ack_all(&mut self, id: u64, ms: u64) -> Vec<CheckpointAction> {
            (0..self.tasks.len()).flat_map(|t| self.ack(id, t, ms)).collect()
        }

        fn complete(&mut self, id: u64, ms: u64) -> Vec<CheckpointAction> {
            let acks = self.ack_all(id, ms);
            assert!(
                matches!(acks.last(), Some(CheckpointAction::WriteMetadata { checkpoint_id, .. }) if *checkpoint_id == id)
            );
            self.c.on_metadata_written(id, location(id), self.at(ms))
        }

        fn decline(&mut self, id: u64, ms: u64) -> Vec<CheckpointAction> {
            let now = self.at(ms);
            self.c.on_decline(id, self.tasks[1], "task failed", now)
        }
    }

    fn ack_state(id: u64, task: usize, size_bytes: u64, alignment_ms: u64) -> AckState {
        AckState {
            handle: format!("chk-{id}/task-{task}"),
            size_bytes,
            alignment_ms,
            duration_ms: 2,
            end_of_input: false,
        }
    }

    fn location(id: u64) -> String {
        format!("file:/ckpt/job/chk-{id}")
    }

    fn config(interval_s: u64) -> CheckpointConfig {
        CheckpointConfig::with_interval(Duration::from_secs(interval_s))
    }

    fn triggered(actions: &[CheckpointAction]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                CheckpointAction::Trigger { checkpoint_id, .. } => Some(*checkpoint_id),
                _ => None,
            })
            .collect()
    }

    fn discarded(actions: &[CheckpointAction]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                CheckpointAction::Discard { checkpoint_id, .. } => Some(*checkpoint_id),
                _ => None,
            })
            .collect()
    }

    fn fail_jobs(actions: &[CheckpointAction]) -> usize {
        actions.iter().filter(|a| matches!(a, CheckpointAction::FailJob { .. })).count()
    }

    #[test]
    fn config_is_read_from_job_then_cluster_with_defaults_and_named_errors() {
        let mut cluster = Configuration::new();
        let job = BTreeMap::new();
        assert_eq!(CheckpointConfig::from_config(&job, &cluster), Ok(None));

        cluster.set(INTERVAL_KEY, "1 min");
        assert_eq!(CheckpointConfig::from_config(&job, &cluster), Ok(Some(config(60))));

        cluster.set(MIN_PAUSE_KEY, "500 ms");
        cluster.set(MAX_CONCURRENT_KEY, "2");
        cluster.set(RETAINED_DEPRECATED_KEY, "5");
        cluster.set(AFTER_TASKS_FINISH_DEPRECATED_KEY, "true");
        let job: BTreeMap<String, String> = [
            (INTERVAL_KEY, "10 s"),
            (TIMEOUT_KEY, "30 s"),
            (TOLERABLE_FAILURES_KEY, "3"),
            (RETAINED_KEY, "4"),
            (AFTER_TASKS_FINISH_KEY, "False"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let expected = CheckpointConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            min_pause: Duration::from_millis(500),
            max_concurrent: 2,
            tolerable_failures: 3,
            retained: 4,
            after_tasks_finish: false,
        };
        assert_eq!(CheckpointConfig::from_config(&job, &cluster), Ok(Some(expected)));

        for (key, value) in [
            (INTERVAL_KEY, "soon"),
            (INTERVAL_KEY, "5 ms"),
            (TIMEOUT_KEY, "1 ms"),
            (MAX_CONCURRENT_KEY, "0"),
            (TOLERABLE_FAILURES_KEY, "-1"),
            (RETAINED_DEPRECATED_KEY, "0"),
            (AFTER_TASKS_FINISH_KEY, "yes"),
        ] {
            let job = BTreeMap::from([(key.to_owned(), value.to_owned())]);
            let error = CheckpointConfig::from_config(&job, &cluster).unwrap_err();
            assert!(error.contains(key), "{error}");
            assert!(error.contains(value.trim_end_matches(" ms")), "{error}");
        }
    }

    #[test]
    fn periodic_triggers_follow_the_interval() {
        let mut f = Fixture::new(config(10));
        assert!(f.tick(0).is_empty(), "the first tick arms the schedule");
        assert!(f.tick(5_000).is_empty());
        let actions = f.tick(10_000);
        assert_eq!(
            actions,
            vec![CheckpointAction::Trigger {
                checkpoint_id: 1,
                timestamp_ms: EPOCH + 10_000,
                kind: CheckpointKind::Checkpoint,
                tasks: f.sources.clone(),
            }]
        );
        f.complete(1, 11_000);
        assert!(f.tick(15_000).is_empty());
        assert_eq!(triggered(&f.tick(20_500)), vec![2]);
        // The next interval counts from the actual trigger.
        f.complete(2, 21_000);
        assert!(f.tick(30_000).is_empty());
        assert_eq!(triggered(&f.tick(30_500)), vec![3]);
    }

    #[test]
    fn min_pause_delays_the_trigger_after_a_completion_or_an_abort() {
        let mut f =
            Fixture::new(CheckpointConfig { min_pause: Duration::from_secs(8), tolerable_failures: 9, ..config(10) });
        f.tick(0);
        assert_eq!(triggered(&f.tick(10_000)), vec![1]);
        f.complete(1, 17_000);
        assert!(f.tick(20_000).is_empty(), "only 3 s since the completion");
        assert!(f.tick(24_999).is_empty());
        assert_eq!(triggered(&f.tick(25_000)), vec![2]);
        f.decline(2, 26_000);
        assert!(f.tick(33_999).is_empty(), "the pause also follows an abort");
        assert_eq!(triggered(&f.tick(35_000)), vec![3]);
        // A plain trigger_now respects the pause, forced kinds do not.
        f.decline(3, 36_000);
        assert_eq!(f.trigger_now(CheckpointKind::Checkpoint, 37_000), Err(TriggerError::MinPauseNotElapsed));
        assert_eq!(f.trigger(CheckpointKind::Manual, 37_000), 4);
    }

    #[test]
    fn max_concurrent_blocks_further_periodic_triggers() {
        let mut f = Fixture::new(config(10));
        f.tick(0);
        assert_eq!(triggered(&f.tick(10_000)), vec![1]);
        assert!(f.tick(20_000).is_empty());
        assert!(f.tick(30_000).is_empty());
        assert_eq!(
            f.trigger_now(CheckpointKind::Checkpoint, 30_000),
            Err(TriggerError::TooManyConcurrentCheckpoints { max: 1 })
        );
        f.complete(1, 31_000);
        assert_eq!(triggered(&f.tick(31_000)), vec![2]);

        let mut f = Fixture::new(CheckpointConfig { max_concurrent: 2, ..config(10) });
        f.tick(0);
        assert_eq!(triggered(&f.tick(10_000)), vec![1]);
        assert_eq!(triggered(&f.tick(20_000)), vec![2]);
        assert!(f.tick(30_000).is_empty());
        assert_eq!(f.c.pending_ids(), vec![1, 2]);
    }

    #[test]
    fn completion_needs_every_ack_then_the_metadata() {
        let mut f = Fixture::new(config(10));
        f.tick(0);
        f.tick(10_000);
        assert!(f.ack(1, 0, 10_003).is_empty());
        assert!(f.ack(1, 2, 10_004).is_empty());
        assert_eq!(f.c.statistics().history[0].num_acknowledged_subtasks, 2);
        let actions = f.ack(1, 1, 10_007);
        assert_eq!(
            actions,
            vec![CheckpointAction::WriteMetadata {
                checkpoint_id: 1,
                kind: CheckpointKind::Checkpoint,
                handles: (0..3).map(|t| (f.tasks[t], format!("chk-1/task-{t}"))).collect(),
            }]
        );
        assert_eq!(f.c.latest_completed(), None, "not complete before _metadata is written");

        let actions = f.c.on_metadata_written(1, location(1), f.at(10_010));
        let info = CompletedCheckpointInfo {
            id: 1,
            location: location(1),
            completed_at_ms: EPOCH + 10_010,
            size_bytes: 300,
            is_savepoint: false,
        };
        assert_eq!(
            actions,
            vec![
                CheckpointAction::Completed { checkpoint_id: 1, info: info.clone() },
                CheckpointAction::NotifyComplete { checkpoint_id: 1, tasks: f.tasks.clone(), final_checkpoint: false },
            ]
        );
        assert_eq!(f.c.latest_completed(), Some(&info));
        assert!(f.c.pending_ids().is_empty());
    }

    /// Flink's final checkpoint: a completed checkpoint is final only when every task took
    /// it after the end of its input; one task still reading makes it an ordinary one.
    #[test]
    fn a_checkpoint_is_final_when_every_task_took_it_after_its_end_of_input() {
        let mut f = Fixture::new(config(10));
        f.tick(0);
        let finality = |actions: &[CheckpointAction]| {
            actions.iter().find_map(|a| match a {
                CheckpointAction::NotifyComplete { final_checkpoint, .. } => Some(*final_checkpoint),
                _ => None,
            })
        };
        for (id, ended) in [(1, [true, false, true]), (2, [true, true, true])] {
            let ms = id * 10_000;
            assert_eq!(triggered(&f.tick(ms)), vec![id]);
            for (task, end_of_input) in ended.into_iter().enumerate() {
                let state = AckState { end_of_input, ..ack_state(id, task, 1, 0) };
                f.c.on_ack(id, f.tasks[task], state, f.at(ms + 1));
            }
            let actions = f.c.on_metadata_written(id, location(id), f.at(ms + 2));
            assert_eq!(finality(&actions), Some(id == 2), "checkpoint {id}");
        }
    }

    #[test]
    fn duplicate_stale_and_unknown_acks_are_ignored_late_ones_discarded() {
        let mut f = Fixture::new(CheckpointConfig { tolerable_failures: 9, ..config(10) });
        f.tick(0);
        f.tick(10_000);
        assert!(f.ack(1, 0, 10_001).is_empty());
        assert!(f.ack(1, 0, 10_002).is_empty(), "duplicate");
        assert!(f.ack(1, 1, 10_002).is_empty());
        let stale = ExecutionAttemptId::from_u128(99);
        assert!(f.c.on_ack(1, stale, ack_state(1, 9, 1, 0), f.at(10_003)).is_empty(), "attempt not expected");
        assert!(f.c.on_decline(1, stale, "old attempt", f.at(10_003)).is_empty());
        assert!(f.c.on_ack(77, f.tasks[2], ack_state(77, 2, 1, 0), f.at(10_003)).is_empty(), "unknown checkpoint");
        assert_eq!(f.c.statistics().history[0].num_acknowledged_subtasks, 2);
        assert_eq!(f.c.statistics().history[0].state_size, 200, "the duplicate did not count twice");
        assert!(matches!(f.ack(1, 2, 10_004)[..], [CheckpointAction::WriteMetadata { .. }]));
        assert!(f.ack(1, 2, 10_005).is_empty(), "ack while finalizing");
        f.c.on_metadata_written(1, location(1), f.at(10_006));
        assert!(f.ack(1, 2, 10_007).is_empty(), "ack after completion: its state belongs to the checkpoint");

        // A late ack for an aborted checkpoint has its state discarded.
        f.tick(20_000);
        f.decline(2, 20_001);
        assert_eq!(
            f.ack(2, 0, 20_002),
            vec![CheckpointAction::Discard { checkpoint_id: 2, location: None, handles: vec!["chk-2/task-0".into()] }]
        );
        // So is a late _metadata.
        f.tick(30_000);
        f.ack_all(3, 30_001);
        f.c.on_job_restart(f.at(30_002));
        assert_eq!(
            f.c.on_metadata_written(3, location(3), f.at(30_003)),
            vec![CheckpointAction::Discard { checkpoint_id: 3, location: Some(location(3)), handles: vec![] }]
        );
        assert_eq!(f.c.latest_completed().map(|i| i.id), Some(1));
    }

    #[test]
    fn decline_aborts_discards_partial_state_and_notifies_tasks() {
        let mut f = Fixture::new(CheckpointConfig { tolerable_failures: 5, ..config(10) });
        f.tick(0);
        f.tick(10_000);
        f.ack(1, 0, 10_001);
        let actions = f.decline(1, 10_002);
        assert_eq!(
            actions,
            vec![
                CheckpointAction::Abort { checkpoint_id: 1, reason: "Checkpoint was declined: task failed".into() },
                CheckpointAction::Discard { checkpoint_id: 1, location: None, handles: vec!["chk-1/task-0".into()] },
                CheckpointAction::NotifyAborted { checkpoint_id: 1, tasks: f.tasks.clone() },
            ]
        );
        assert!(f.c.pending_ids().is_empty());
        assert!(f.decline(1, 10_003).is_empty(), "already aborted");
        let stats = f.c.statistics();
        assert_eq!(stats.counts.failed, 1);
        let failed = stats.latest.failed.unwrap();
        assert_eq!(failed.status, CheckpointStatus::Failed);
        assert_eq!(failed.failure_timestamp, Some(EPOCH + 10_002));
        assert_eq!(failed.failure_message.as_deref(), Some("Checkpoint was declined: task failed"));
    }

    #[test]
    fn uncounted_declines_abort_without_failing_the_job() {
        let mut f = Fixture::new(config(10));
        f.tick(0);
        f.tick(10_000);
        let now = f.at(10_001);
        let actions = f.c.on_decline_uncounted(1, f.tasks[0], "the task is not running", now);
        assert!(matches!(actions.first(), Some(CheckpointAction::Abort { checkpoint_id: 1, .. })), "{actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, CheckpointAction::FailJob { .. })), "{actions:?}");
        assert!(f.c.pending_ids().is_empty());
        // The same with a counted decline exceeds the tolerable failures (0).
        f.tick(20_002);
        let actions = f.decline(2, 20_003);
        assert!(actions.iter().any(|a| matches!(a, CheckpointAction::FailJob { .. })), "{actions:?}");
    }

    #[test]
    fn a_checkpoint_pending_past_the_timeout_is_aborted() {
        let mut f =
            Fixture::new(CheckpointConfig { timeout: Duration::from_secs(60), tolerable_failures: 5, ..config(10) });
        f.tick(0);
        f.tick(10_000);
        f.ack(1, 0, 10_001);
        assert!(f.tick(69_999).is_empty());
        let actions = f.tick(70_000);
        assert_eq!(
            actions,
            vec![
                CheckpointAction::Abort { checkpoint_id: 1, reason: EXPIRED.into() },
                CheckpointAction::Discard { checkpoint_id: 1, location: None, handles: vec!["chk-1/task-0".into()] },
                CheckpointAction::NotifyAborted { checkpoint_id: 1, tasks: f.tasks.clone() },
                CheckpointAction::Trigger {
                    checkpoint_id: 2,
                    timestamp_ms: EPOCH + 70_000,
                    kind: CheckpointKind::Checkpoint,
                    tasks: f.sources.clone(),
                },
            ],
            "the freed slot is used in the same tick"
        );
        // Finalizing checkpoints expire too; any event notices.
        f.ack_all(2, 70_001);
        let actions = f.ack(2, 0, 130_000);
        assert_eq!(actions[0], CheckpointAction::Abort { checkpoint_id: 2, reason: EXPIRED.into() });
    }

    #[test]
    fn tolerable_failures_fail_the_job_once_exceeded_and_reset_on_completion() {
        let mut f = Fixture::new(CheckpointConfig { tolerable_failures: 2, ..config(10) });
        let fail = |f: &mut Fixture, ms: u64| {
            let id = f.trigger(CheckpointKind::Manual, ms);
            fail_jobs(&f.decline(id, ms + 1))
        };
        assert_eq!(fail(&mut f, 1_000), 0);
        assert_eq!(fail(&mut f, 2_000), 0);
        let id = f.trigger(CheckpointKind::Manual, 3_000);
        let actions = f.decline(id, 3_001);
        assert_eq!(fail_jobs(&actions), 1);
        let Some(CheckpointAction::FailJob { reason }) = actions.last() else { panic!("{actions:?}") };
        assert!(reason.contains("tolerable failure threshold (2)") && reason.contains("declined"), "{reason}");
        // The count starts over after failing the job.
        assert_eq!(fail(&mut f, 4_000), 0);
        assert_eq!(fail(&mut f, 5_000), 0);
        // A completion resets it.
        let id = f.trigger(CheckpointKind::Manual, 6_000);
        f.complete(id, 6_001);
        assert_eq!(fail(&mut f, 7_000), 0);
        assert_eq!(fail(&mut f, 8_000), 0);
        // Savepoint failures and restarts do not count.
        let sp = f.trigger(CheckpointKind::Savepoint { target: "file:/sp".into() }, 9_000);
        assert_eq!(fail_jobs(&f.decline(sp, 9_001)), 0);
        f.trigger(CheckpointKind::Manual, 9_500);
        assert_eq!(fail_jobs(&f.c.on_job_restart(f.at(9_600))), 0);
        assert_eq!(fail(&mut f, 10_000), 1);
    }

    #[test]
    fn failed_metadata_write_aborts_and_counts() {
        let mut f = Fixture::new(config(10));
        let id = f.trigger(CheckpointKind::Manual, 1_000);
        f.ack_all(id, 1_001);
        let actions = f.c.on_metadata_failed(id, "disk full", f.at(1_002));
        assert_eq!(
            actions[0],
            CheckpointAction::Abort { checkpoint_id: id, reason: "Failure to finalize checkpoint: disk full".into() }
        );
        assert_eq!(discarded(&actions), vec![id]);
        assert_eq!(fail_jobs(&actions), 1, "tolerable_failures 0");
    }

    #[test]
    fn retention_discards_the_oldest_checkpoints_and_never_savepoints() {
        let mut f = Fixture::new(CheckpointConfig { retained: 2, ..config(10) });
        let id = f.trigger(CheckpointKind::Manual, 1_000);
        assert!(discarded(&f.complete(id, 1_001)).is_empty());
        let id = f.trigger(CheckpointKind::Manual, 2_000);
        assert!(discarded(&f.complete(id, 2_001)).is_empty());
        let id = f.trigger(CheckpointKind::Manual, 3_000);
        let actions = f.complete(id, 3_001);
        assert_eq!(
            actions[2],
            CheckpointAction::Discard {
                checkpoint_id: 1,
                location: Some(location(1)),
                handles: (0..3).map(|t| format!("chk-1/task-{t}")).collect(),
            }
        );
        assert_eq!(discarded(&actions), vec![1]);

        let sp = f.trigger(CheckpointKind::Savepoint { target: "file:/sp".into() }, 4_000);
        let actions = f.complete(sp, 4_001);
        assert!(discarded(&actions).is_empty());
        assert!(matches!(&actions[0], CheckpointAction::Completed { info, .. } if info.is_savepoint));
        assert_eq!(f.c.latest_completed().map(|i| i.id), Some(3), "savepoints do not enter the store");

        let id = f.trigger(CheckpointKind::Manual, 5_000);
        assert_eq!(discarded(&f.complete(id, 5_001)), vec![2]);
        let ids: Vec<u64> = f.c.retained_checkpoints().iter().map(|i| i.id).collect();
        assert_eq!(ids, vec![3, 5]);

        let stats = f.c.statistics();
        let discarded_flags: Vec<(u64, bool)> = stats.history.iter().map(|s| (s.id, s.discarded)).collect();
        assert_eq!(discarded_flags, vec![(5, false), (4, false), (3, false), (2, true), (1, true)]);
        assert_eq!(stats.latest.savepoint.map(|s| s.id), Some(4));
        assert_eq!(stats.latest.completed.map(|s| s.id), Some(5));
    }

    #[test]
    fn a_restored_savepoint_is_kept_until_subsumed_and_never_discarded() {
        let mut f = Fixture::new(CheckpointConfig { retained: 1, ..config(10) });
        let savepoint = CompletedCheckpointInfo {
            id: 10,
            location: "file:/sp/savepoint-1".into(),
            completed_at_ms: 5,
            size_bytes: 7,
            is_savepoint: true,
        };
        assert!(f.restore(savepoint.clone(), 0).is_empty());
        assert_eq!(f.c.latest_completed(), Some(&savepoint));
        let id = f.trigger(CheckpointKind::Manual, 1_000);
        assert_eq!(id, 11);
        assert!(discarded(&f.complete(id, 1_001)).is_empty());
        let id = f.trigger(CheckpointKind::Manual, 2_000);
        assert_eq!(discarded(&f.complete(id, 2_001)), vec![11]);
        let ids: Vec<u64> = f.c.retained_checkpoints().iter().map(|i| i.id).collect();
        assert_eq!(ids, vec![12]);
    }

    #[test]
    fn manual_and_savepoint_triggers_are_forced_and_leave_the_schedule_alone() {
        let mut f = Fixture::new(CheckpointConfig { tolerable_failures: 0, ..config(10) });
        f.tick(0);
        assert_eq!(triggered(&f.tick(10_000)), vec![1]);
        let target = "file:/savepoints".to_owned();
        let (sp, actions) = f.trigger_now(CheckpointKind::Savepoint { target: target.clone() }, 12_000).unwrap();
        assert_eq!(sp, 2);
        assert_eq!(
            actions,
            vec![CheckpointAction::Trigger {
                checkpoint_id: 2,
                timestamp_ms: EPOCH + 12_000,
                kind: CheckpointKind::Savepoint { target: target.clone() },
                tasks: f.sources.clone(),
            }]
        );
        assert_eq!(f.trigger(CheckpointKind::Manual, 13_000), 3);
        assert_eq!(f.c.pending_ids(), vec![1, 2, 3]);

        // The savepoint's metadata request names its target.
        let actions = f.ack_all(2, 14_000);
        assert!(
            matches!(&actions[..], [CheckpointAction::WriteMetadata { kind: CheckpointKind::Savepoint { target: t }, .. }] if *t == target)
        );
        let actions = f.c.on_metadata_written(2, "file:/savepoints/savepoint-1".into(), f.at(14_001));
        assert!(matches!(&actions[0], CheckpointAction::Completed { checkpoint_id: 2, info } if info.is_savepoint));
        assert_eq!(f.c.latest_completed(), None);

        // The manual checkpoint completes and subsumes the older periodic one (not counted).
        let actions = f.complete(3, 15_000);
        assert!(actions.contains(&CheckpointAction::Abort { checkpoint_id: 1, reason: SUBSUMED.into() }));
        assert_eq!(fail_jobs(&actions), 0);
        assert_eq!(f.c.latest_completed().map(|i| i.id), Some(3));

        // The periodic schedule still counts from the periodic trigger at 10 s.
        assert_eq!(triggered(&f.tick(20_000)), vec![4]);

        let now = f.at(21_000);
        assert_eq!(
            f.c.check_trigger(now, &CheckpointKind::Manual, &[], &f.sources),
            Err(TriggerError::NotAllTasksRunning)
        );
        assert_eq!(
            f.c.trigger_now(now, CheckpointKind::Manual, 99, &[], &f.sources),
            Err(TriggerError::NotAllTasksRunning)
        );
    }

    #[test]
    fn a_savepoint_is_not_subsumed_by_a_newer_checkpoint() {
        let mut f = Fixture::new(config(10));
        let sp = f.trigger(CheckpointKind::Savepoint { target: "file:/sp".into() }, 1_000);
        let id = f.trigger(CheckpointKind::Manual, 1_001);
        let actions = f.complete(id, 1_002);
        assert!(!actions.iter().any(|a| matches!(a, CheckpointAction::Abort { .. })));
        assert_eq!(f.c.pending_ids(), vec![sp]);
    }

    #[test]
    fn restart_aborts_pending_keeps_completed_and_rearms() {
        let mut f = Fixture::new(config(10));
        f.tick(0);
        f.tick(10_000);
        f.complete(1, 10_001);
        f.tick(20_000);
        f.ack(2, 0, 20_001);
        let actions = f.c.on_job_restart(f.at(20_002));
        assert_eq!(
            actions,
            vec![
                CheckpointAction::Abort { checkpoint_id: 2, reason: JOB_RESTARTING.into() },
                CheckpointAction::Discard { checkpoint_id: 2, location: None, handles: vec!["chk-2/task-0".into()] },
            ]
        );
        assert_eq!(f.c.latest_completed().map(|i| i.id), Some(1));
        assert!(f.tick(25_000).is_empty(), "re-arms");
        assert!(f.tick(34_999).is_empty());
        assert_eq!(triggered(&f.tick(35_000)), vec![3]);
    }

    #[test]
    fn shutdown_aborts_pending_and_stops_triggering() {
        let mut f = Fixture::new(config(10));
        f.tick(0);
        f.tick(10_000);
        let actions = f.c.shutdown(f.at(11_000));
        assert_eq!(actions[0], CheckpointAction::Abort { checkpoint_id: 1, reason: SHUT_DOWN.into() });
        assert_eq!(fail_jobs(&actions), 0);
        assert!(f.tick(100_000).is_empty());
        assert_eq!(f.trigger_now(CheckpointKind::Manual, 100_000), Err(TriggerError::ShutDown));
    }

    #[test]
    fn percentiles_match_flinks_estimate() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.5), Some(7.0));
        let one_to_ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&one_to_ten, 0.5), Some(5.5));
        assert_eq!(percentile(&one_to_ten, 0.05), Some(1.0));
        assert_eq!(percentile(&one_to_ten, 0.99), Some(10.0));
        // 60 durations shaped like the reference capture: Flink shows p90 13.899999999999999
        // and p95 14.949999999999996 for them.
        let mut durations = vec![13; 54];
        durations.extend([14, 14, 14, 15, 15, 18]);
        assert_eq!(percentile(&durations, 0.9), Some(13.899999999999999));
        assert_eq!(percentile(&durations, 0.95), Some(14.949999999999996));
        assert_eq!(percentile(&durations, 0.99), Some(18.0));
    }

    #[test]
    fn statistics_report_counts_history_and_summary() {
        let mut f = Fixture::new(CheckpointConfig { tolerable_failures: 99, ..config(10) });
        // Five completed checkpoints: end-to-end 10..=50 ms, sizes 3 * 100..=500, alignment 1..=5.
        for i in 1..=5u64 {
            let start = i * 1_000;
            let id = f.trigger(CheckpointKind::Manual, start);
            for t in 0..3 {
                f.c.on_ack(id, f.tasks[t], ack_state(id, t, i * 100, i), f.at(start + i * 10));
            }
            f.c.on_metadata_written(id, location(id), f.at(start + i * 10 + 1));
        }
        let stats = f.c.statistics();
        let size = &stats.summary.state_size;
        assert_eq!((size.count, size.min, size.max, size.avg), (5, 300, 1500, 900));
        assert_eq!(size.p50, Some(900.0));
        let e2e = &stats.summary.end_to_end_duration;
        assert_eq!((e2e.min, e2e.max, e2e.avg), (10, 50, 30));
        // Position 0.9 * 6 = 5.4 >= 5: the maximum.
        assert_eq!(e2e.p90, Some(50.0));
        assert_eq!(e2e.p50, Some(30.0));
        let alignment = &stats.summary.alignment_duration;
        assert_eq!((alignment.min, alignment.max, alignment.avg), (1, 5, 3));

        let c = &stats.history[0];
        assert_eq!(c.id, 5);
        assert_eq!(c.status, CheckpointStatus::Completed);
        assert_eq!(c.trigger_timestamp, EPOCH + 5_000);
        assert_eq!(c.latest_ack_timestamp, Some(EPOCH + 5_050));
        assert_eq!(c.end_to_end_duration, 50);
        assert_eq!((c.num_acknowledged_subtasks, c.num_subtasks), (3, 3));
        assert_eq!(c.external_path.as_deref(), Some(location(5).as_str()));
        assert_eq!(c.subtasks.len(), 3);
        assert_eq!(c.subtasks[0].duration, 2);

        // A failure, a pending savepoint, more than HISTORY_SIZE entries.
        let id = f.trigger(CheckpointKind::Manual, 10_000);
        f.decline(id, 10_005);
        for i in 0..5u64 {
            let id = f.trigger(CheckpointKind::Manual, 11_000 + i);
            f.complete(id, 11_010 + i);
        }
        let sp = f.trigger(CheckpointKind::Savepoint { target: "file:/sp".into() }, 12_000);
        f.ack(sp, 0, 12_004);
        let stats = f.c.statistics();
        assert_eq!(stats.counts, CheckpointCounts { restored: 0, total: 12, in_progress: 1, completed: 10, failed: 1 });
        assert_eq!(stats.history.len(), HISTORY_SIZE);
        let ids: Vec<u64> = stats.history.iter().map(|s| s.id).collect();
        assert_eq!(ids, (3..=12).rev().collect::<Vec<_>>());
        let pending = &stats.history[0];
        assert_eq!(pending.status, CheckpointStatus::InProgress);
        assert!(pending.is_savepoint);
        assert_eq!(pending.checkpoint_type, "SAVEPOINT");
        assert_eq!((pending.num_acknowledged_subtasks, pending.num_subtasks), (1, 3));
        assert_eq!(pending.latest_ack_timestamp, Some(EPOCH + 12_004));
        assert_eq!(pending.end_to_end_duration, 4);
        let failed = stats.history.iter().find(|s| s.id == 6).unwrap();
        assert_eq!(failed.status, CheckpointStatus::Failed);
        assert!(failed.failure_message.as_deref().unwrap().contains("task failed"));
        assert_eq!(f.c.checkpoint_details(6).map(|s| s.status), Some(CheckpointStatus::Failed));
        // Just out of the history: still readable (a dashboard listed it a moment ago).
        assert_eq!(f.c.checkpoint_details(1).map(|s| s.id), Some(1));
        assert_eq!(stats.evicted.iter().map(|s| s.id).collect::<Vec<_>>(), [2, 1]);

        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["history"][0]["status"], "IN_PROGRESS");
        assert_eq!(json["counts"]["in_progress"], 1);
    }

    #[test]
    fn ids_are_reserved_one_at_a_time_off_the_coordinator() {
        let mut f = Fixture::new(config(10));
        f.c.on_tick(f.at(0), &f.tasks, &f.sources);
        let (tasks, sources) = (f.tasks.clone(), f.sources.clone());
        // Due: one reservation, and no second one while it is out.
        assert_eq!(f.c.on_tick(f.at(10_000), &tasks, &sources), vec![CheckpointAction::ReserveId]);
        assert!(f.c.on_tick(f.at(10_050), &tasks, &sources).is_empty());
        // A failed reservation skips the checkpoint; the next tick asks again.
        assert!(f.c.on_id_reserved(Err("connection loss".into()), f.at(10_100), &tasks, &sources).is_empty());
        assert_eq!(f.c.on_tick(f.at(10_150), &tasks, &sources), vec![CheckpointAction::ReserveId]);
        // The id arrives when the tasks no longer all run: left unused (a gap).
        assert!(f.c.on_id_reserved(Ok(5), f.at(10_200), &[], &sources).is_empty());
        assert!(f.c.pending_ids().is_empty());
        assert_eq!(f.c.on_tick(f.at(10_250), &tasks, &sources), vec![CheckpointAction::ReserveId]);
        assert_eq!(triggered(&f.c.on_id_reserved(Ok(6), f.at(10_300), &tasks, &sources)), vec![6]);
    }

    #[test]
    fn an_id_at_or_below_a_restored_checkpoint_is_never_used() {
        let mut f = Fixture::new(config(10));
        let restored = CompletedCheckpointInfo {
            id: 41,
            location: location(41),
            completed_at_ms: EPOCH,
            size_bytes: 1,
            is_savepoint: true,
        };
        // The counter is not advanced (e.g. the write failed): the coordinator refuses the id.
        let actions = f.c.restore_from(restored, f.at(0)).unwrap();
        assert_eq!(actions, vec![CheckpointAction::AdvanceIds { past: 41 }]);
        let (tasks, sources) = (f.tasks.clone(), f.sources.clone());
        f.c.on_tick(f.at(0), &tasks, &sources);
        assert_eq!(f.c.on_tick(f.at(10_000), &tasks, &sources), vec![CheckpointAction::ReserveId]);
        assert_eq!(
            f.c.on_id_reserved(Ok(1), f.at(10_001), &tasks, &sources),
            vec![CheckpointAction::AdvanceIds { past: 41 }]
        );
        assert!(matches!(
            f.c.trigger_now(f.at(10_002), CheckpointKind::Manual, 41, &tasks, &sources),
            Err(TriggerError::IdCounter { .. })
        ));
        assert_eq!(
            triggered(&f.c.trigger_now(f.at(10_003), CheckpointKind::Manual, 42, &tasks, &sources).unwrap()),
            vec![42]
        );
    }

    #[test]
    fn ids_continue_above_a_restored_checkpoint() {
        let mut f = Fixture::new(config(10));
        let restored = CompletedCheckpointInfo {
            id: 41,
            location: location(41),
            completed_at_ms: EPOCH - 5_000,
            size_bytes: 1_234,
            is_savepoint: false,
        };
        f.restore(restored.clone(), 0);
        assert_eq!(f.counter.get().unwrap(), 42);
        assert_eq!(f.c.latest_completed(), Some(&restored));
        f.tick(0);
        assert_eq!(triggered(&f.tick(10_000)), vec![42]);
        // Restoring an older checkpoint does not move the counter back.
        let older = CompletedCheckpointInfo { id: 7, ..restored.clone() };
        f.restore(older, 10_001);
        assert_eq!(f.counter.get().unwrap(), 43);

        let stats = f.c.statistics();
        assert_eq!(stats.counts.restored, 2);
        let latest = stats.latest.restored.unwrap();
        assert_eq!((latest.id, latest.restore_timestamp), (7, EPOCH + 10_001));
        // The completed 42 subsumes the restored checkpoint in the store.
        assert_eq!(f.c.retained_checkpoints().len(), 1);
        assert_eq!(discarded(&f.complete(42, 10_002)), vec![41]);
    }
}
