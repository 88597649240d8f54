//! The JobMaster's core: everything the JobMaster decides, with no I/O, no sockets and an
//! injected clock.
//!
//! [`JobCore`] takes what happened as calls (slots offered or lost, task state updates,
//! answers of the TaskExecutors and of the blocking pool, timers that fired, checkpoint
//! acknowledgements, operations and cancels from the Dispatcher) and answers with
//! [`Action`]s: request or cancel slots, deploy, cancel, send heartbeats, arm timers tagged
//! with their round, create checkpoint directories, write `_metadata`, add a checkpoint to
//! the HA store, notify tasks, discard files, commit output, report the job terminated. The
//! actor in [`super`] only carries actions out and feeds their results back, so every
//! interleaving can be tested here without processes (see the tests at the end).
//!
//! The job's phase and its legal moves live in [`super::lifecycle`]; the checkpoint
//! decisions in the [`CheckpointCoordinator`]; the restart decisions in [`RestartBackoff`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_common::checkpoint_storage::{CheckpointStorage, OperatorStateEntry};
use flint_common::config::Configuration;
use flint_common::ids::{AllocationId, ExecutionAttemptId, JobId, LeaderSessionId, ResourceId};
use flint_common::job::plan::JobGraph;
use flint_common::keygroups::key_group_range;
use flint_common::messages::{
    CheckpointBarrierInfo, FileCommit, InputChannelDeployment, InputGateDeployment, MetricDump, OutputDeployment,
    RestoreSpec, SlotRequestFailure, TaskDeploymentDescriptor, TaskFailure,
};
use flint_common::rpc::RpcAddress;
use tracing::{debug, info, warn};

use super::lifecycle::{Event, Phase, Step};
use super::types::*;
use crate::checkpoint_coordinator::{
    AckState, CheckpointAction, CheckpointConfig, CheckpointCoordinator, CheckpointKind, CompletedCheckpointInfo,
    JOB_RESTARTING,
};
use crate::execution_graph::{ExecutionGraph, ExecutionState, IoMetrics, JobStatus, SlotAssignment, UpdateOutcome};
use crate::restart::{RestartBackoff, RestartDecision, RestartStrategyConfig};

/// The core's clock: monotonic instants for timeouts and the wall clock for what users see.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    fn epoch_ms(&self) -> u64;
}

/// The process's clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn epoch_ms(&self) -> u64 {
        flint_common::process::epoch_ms()
    }
}

/// What the core needs of the cluster configuration.
#[derive(Clone)]
pub struct CoreConfig {
    pub cluster: Configuration,
    pub slot_request_timeout: Duration,
    pub heartbeat: HeartbeatSettings,
    /// The BlobServer's `host:port`, given to the tasks for offloaded artifacts.
    pub blob_server: Option<String>,
}

/// A timer the core asked for; it comes back through [`JobCore::timer_fired`]. Timers carry
/// the round they were armed in: one that fires in another round changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Not every slot of `round` came in time.
    SlotTimeout { round: u64 },
    /// The restart delay before `round` elapsed.
    RestartDue { round: u64 },
    /// Ask the ResourceManager again for the slots of `round` (the request failed).
    RetrySlotRequest { round: u64 },
}

/// Where a checkpoint's directory is made.
#[derive(Clone, Debug)]
pub enum DirectoryTarget {
    /// A savepoint directory under this target directory.
    Savepoint { target: String },
    /// `chk-<n>` in the job's checkpoint storage.
    Checkpoint { storage: CheckpointStorage },
    /// No checkpoint storage is configured: the creation fails.
    None,
}

/// What the actor carries out.
#[derive(Debug)]
pub enum Action {
    /// Ask the ResourceManager for these slots (answer: [`JobCore::slot_request_sent`]).
    RequestSlots(Vec<AllocationId>),
    /// Withdraw these slot requests (no answer).
    CancelSlotRequests(Vec<AllocationId>),
    /// Call [`JobCore::timer_fired`] with `timer` after `after`.
    ArmTimer { after: Duration, timer: Timer },
    /// Submit a task (answer: [`JobCore::deploy_answered`]).
    Deploy { task_executor: RpcAddress, resource_id: ResourceId, task_name: String, tdd: Box<TaskDeploymentDescriptor> },
    /// Cancel a task; with `answer`, report [`JobCore::cancel_answered`] (without: the job
    /// master is going away, the cancel is best effort).
    CancelTask { task_executor: RpcAddress, attempt: ExecutionAttemptId, answer: bool },
    /// Heartbeat a TaskExecutor (answer: [`JobCore::heartbeat_answered`]).
    Heartbeat { task_executor: RpcAddress, resource_id: ResourceId },
    /// Give a slot back (no answer).
    FreeSlot { task_executor: RpcAddress, allocation_id: AllocationId, cause: String },
    /// Reserve the next checkpoint id from the (HA) id counter, in order with the other id
    /// work, for a periodic checkpoint or for the operation `operation` (answer:
    /// [`JobCore::checkpoint_id_reserved`]).
    ReserveCheckpointId { operation: Option<u64> },
    /// Move the id counter past `past` (after a restore; no answer).
    AdvanceCheckpointIds { past: u64 },
    /// Make a checkpoint's directory, in order with the job's other file work (answer:
    /// [`JobCore::directory_created`]).
    CreateDirectory { checkpoint_id: u64, target: DirectoryTarget },
    /// Inject the barrier at a source task (answer: [`JobCore::trigger_answered`]).
    TriggerCheckpoint { task_executor: RpcAddress, attempt: ExecutionAttemptId, barrier: CheckpointBarrierInfo },
    /// Write `_metadata` into `directory`: each entry with the state file whose size is read
    /// then (answer: [`JobCore::metadata_written`]).
    WriteMetadata {
        checkpoint_id: u64,
        directory: PathBuf,
        is_savepoint: bool,
        entries: Vec<(OperatorStateEntry, Option<PathBuf>)>,
    },
    /// Add a completed checkpoint to the HA completed checkpoint store (answer:
    /// [`JobCore::checkpoint_stored`]).
    StoreCheckpoint { checkpoint_id: u64, handle: SavepointRestore },
    /// Tell a task that a checkpoint completed or was aborted (no answer).
    NotifyCheckpoint {
        task_executor: RpcAddress,
        attempt: ExecutionAttemptId,
        checkpoint_id: u64,
        completed: bool,
        final_checkpoint: bool,
    },
    /// Delete a checkpoint directory and/or state files, in order with the other file work.
    Discard { checkpoint_id: u64, location: Option<String>, handles: Vec<String> },
    /// The job ended: delete the retained checkpoints it owns, then its directory if empty.
    DiscardRetained { locations: Vec<String>, job_dir: Option<PathBuf> },
    /// Commit the output finished tasks left for the end of the job, after the other file
    /// work (answer: [`JobCore::output_committed`]).
    CommitOutput(Vec<FileCommit>),
    /// The savepoint or checkpoint requested with [`JobCore::start_operation`] (which
    /// answered `operation`) completed or failed.
    OperationDone { operation: u64, result: Result<OperationResult, String> },
    /// The job reached a globally terminal state: report it and stop. Always the last
    /// action of a call; no call after it returns any action.
    Terminated(Box<JobSnapshot>),
}

/// How a task submission went, as the actor saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeployOutcome {
    Ok,
    /// The TaskExecutor refused the task.
    Refused {
        message: String,
        retryable: bool,
    },
    /// The TaskExecutor cannot be reached: it is gone, and its slots with it.
    Unreachable(String),
    /// Another RPC failure (e.g. a timeout).
    Failed(String),
}

/// How a heartbeat went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    Ok,
    /// The TaskExecutor cannot be reached (counts towards the RPC failure threshold).
    Unreachable(String),
    /// Another failure (e.g. a timeout): the heartbeat timeout decides.
    Failed,
}

/// A task state update from a TaskExecutor.
#[derive(Clone, Debug)]
pub struct TaskUpdate {
    pub attempt: ExecutionAttemptId,
    pub state: ExecutionState,
    pub failure: Option<TaskFailure>,
    /// Counts and metrics by name.
    pub metrics: Option<(IoMetrics, Arc<MetricDump>)>,
    pub accumulators: Vec<(String, u64)>,
    pub commits: Vec<FileCommit>,
}

/// A slot the job holds.
#[derive(Clone, Debug)]
struct HeldSlot {
    allocation_id: AllocationId,
    resource_id: ResourceId,
    task_executor: RpcAddress,
    host: String,
    data_address: String,
}

/// A TaskExecutor holding slots of the job, as the heartbeats see it.
struct Peer {
    last_ok: Instant,
    failures: i32,
    in_flight: bool,
}

/// A checkpoint whose directory is being made; triggered at `tasks` once it exists.
struct PendingTrigger {
    timestamp_ms: u64,
    is_savepoint: bool,
    tasks: Vec<ExecutionAttemptId>,
}

/// The checkpointing side of a job.
struct Checkpointing {
    coordinator: CheckpointCoordinator,
    settings: CheckpointSettings,
    storage: Option<CheckpointStorage>,
    /// Checkpoints whose directories are being made.
    triggers: BTreeMap<u64, PendingTrigger>,
    /// Directories of pending checkpoints and savepoints.
    directories: BTreeMap<u64, PathBuf>,
    /// Operations from the Dispatcher waiting for a checkpoint id, by operation number.
    reserving: BTreeMap<u64, (SavepointOperation, CheckpointKind)>,
    /// Operations from the Dispatcher, by the checkpoint that serves them.
    operations: BTreeMap<u64, (u64, SavepointOperation)>,
    /// The number of the next operation.
    next_operation: u64,
    /// What the coordinator asked for while the job master was built (restores).
    initial: Vec<CheckpointAction>,
    /// Completed savepoints whose completion the tasks are not told of: as in Flink, an
    /// intermediate savepoint commits no side effects (its pending output is committed by a
    /// job restored from it); only stop-with-savepoint does.
    quiet_savepoints: BTreeSet<u64>,
    /// The job was submitted with a savepoint, not restored from it yet.
    submitted_restore: bool,
    /// Tasks wait for a final checkpoint at the end of their input: periodic checkpoints
    /// are on and `execution.checkpointing.checkpoints-after-tasks-finish` is true.
    final_checkpoint: bool,
}

/// Where checkpoints go when checkpointing is on but `state.checkpoints.dir` is not set.
fn default_checkpoints_dir() -> String {
    std::env::temp_dir().join("flint-checkpoints").to_string_lossy().into_owned()
}

impl Checkpointing {
    fn new(
        job_graph: &JobGraph,
        config: &CoreConfig,
        restore: Option<SavepointRestore>,
        clock: &dyn Clock,
    ) -> Result<Self, String> {
        let lookup = |keys: &[&str]| {
            keys.iter().find_map(|k| {
                job_graph.config.get(*k).cloned().or_else(|| config.cluster.get_raw(k).map(str::to_owned))
            })
        };
        let periodic = CheckpointConfig::from_config(&job_graph.config, &config.cluster)?;
        let retention =
            lookup(&[Retention::KEY]).map(|v| Retention::parse(&v)).transpose()?.unwrap_or(Retention::NoExternalized);
        let mut checkpoints_dir = lookup(&["state.checkpoints.dir", "execution.checkpointing.dir"]);
        if checkpoints_dir.is_none() && periodic.is_some() {
            let dir = default_checkpoints_dir();
            warn!(dir, "checkpointing is on but 'state.checkpoints.dir' is not set; using the default");
            checkpoints_dir = Some(dir);
        }
        let savepoints_dir = lookup(&["state.savepoints.dir", "execution.checkpointing.savepoint-dir"]);
        let storage = checkpoints_dir
            .as_deref()
            .map(CheckpointStorage::new)
            .transpose()
            .map_err(|e| format!("invalid value for 'state.checkpoints.dir': {e}"))?;
        // Without periodic checkpoints the coordinator still takes savepoints and manual
        // checkpoints; its interval never comes due.
        let coordinator_config =
            periodic.clone().unwrap_or_else(|| CheckpointConfig::with_interval(Duration::from_secs(u32::MAX.into())));
        let mut coordinator =
            CheckpointCoordinator::new(coordinator_config).with_clock_anchor(clock.now(), clock.epoch_ms());
        let submitted_restore = restore.is_some();
        let mut initial = Vec::new();
        if let Some(r) = restore {
            let info = CompletedCheckpointInfo {
                id: r.checkpoint_id,
                location: r.location,
                completed_at_ms: clock.epoch_ms(),
                size_bytes: 0,
                is_savepoint: r.is_savepoint,
            };
            initial = coordinator.restore_from(info, clock.now())?;
        }
        let final_checkpoint = periodic.as_ref().is_some_and(|c| c.after_tasks_finish);
        Ok(Self {
            final_checkpoint,
            coordinator,
            settings: CheckpointSettings { config: periodic, checkpoints_dir, savepoints_dir, retention },
            storage,
            triggers: BTreeMap::new(),
            directories: BTreeMap::new(),
            reserving: BTreeMap::new(),
            operations: BTreeMap::new(),
            next_operation: 1,
            initial,
            quiet_savepoints: Default::default(),
            submitted_restore,
        })
    }
}

/// The JobMaster's decisions for one job. See the module documentation.
pub struct JobCore {
    job_id: JobId,
    job_graph: Arc<JobGraph>,
    /// Changed through `Arc::make_mut`: copied only when a snapshot still holds it.
    graph: Arc<ExecutionGraph>,
    /// The JobMaster's own address and session, which the tasks report to.
    address: RpcAddress,
    session: LeaderSessionId,
    slot_request_timeout: Duration,
    heartbeat: HeartbeatSettings,
    blob_server: Option<String>,
    clock: Arc<dyn Clock>,
    /// One entry per parallel pipeline.
    slots: Vec<Option<HeldSlot>>,
    /// Requested allocations not yet offered: allocation → slot index.
    pending: BTreeMap<AllocationId, usize>,
    exceptions: VecDeque<ExceptionEntry>,
    /// `web.exception-history-size`.
    exception_history_size: usize,
    /// Where the job is in its lifecycle; timers carry the round they were armed in.
    phase: Phase,
    /// TaskExecutors holding slots of this job.
    peers: BTreeMap<ResourceId, Peer>,
    /// The restart strategy (an invalid configuration fails the job at start).
    restart: Result<RestartBackoff, String>,
    restart_description: String,
    /// `Err`: the checkpoint configuration is invalid (the job fails at start).
    checkpointing: Result<Checkpointing, String>,
    /// Output finished tasks left for the end of the job.
    final_commits: Vec<FileCommit>,
    /// Every task finished while the savepoint of a stop was still being completed: the
    /// job's end waits for that savepoint (or its failure, at the latest its timeout).
    finish_after_stop: bool,
    /// Accumulators of each subtask's current attempt, by vertex and subtask.
    accumulators: BTreeMap<(usize, usize), Vec<(String, u64)>>,
    /// Actions of the call in progress.
    out: Vec<Action>,
}

impl JobCore {
    pub fn new(
        job_id: JobId,
        job_graph: JobGraph,
        address: RpcAddress,
        session: LeaderSessionId,
        config: &CoreConfig,
        restore: Option<SavepointRestore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let graph = Arc::new(ExecutionGraph::new(job_id, &job_graph, clock.epoch_ms()));
        let job_graph = Arc::new(job_graph);
        let checkpointing = Checkpointing::new(&job_graph, config, restore, clock.as_ref());
        let periodic = checkpointing.as_ref().is_ok_and(|c| c.settings.config.is_some());
        let strategy = RestartStrategyConfig::from_config(&job_graph.config, &config.cluster, periodic);
        let restart_description = strategy.as_ref().map_or_else(|e| e.clone(), RestartStrategyConfig::description);
        let restart = strategy.map(|s| RestartBackoff::new(s, job_id.as_u128() as u64));
        let slots = vec![None; job_graph.slots_needed() as usize];
        Self {
            job_id,
            job_graph,
            graph,
            address,
            session,
            slot_request_timeout: config.slot_request_timeout,
            heartbeat: config.heartbeat,
            blob_server: config.blob_server.clone(),
            clock,
            slots,
            pending: BTreeMap::new(),
            exceptions: VecDeque::new(),
            exception_history_size: config
                .cluster
                .get(&flint_common::config::options::WEB_EXCEPTION_HISTORY_SIZE)
                .map_or(16, |n| n as usize),
            phase: Phase::start(),
            peers: BTreeMap::new(),
            restart,
            restart_description,
            checkpointing,
            final_commits: Vec::new(),
            finish_after_stop: false,
            accumulators: BTreeMap::new(),
            out: Vec::new(),
        }
    }

    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    pub fn status(&self) -> JobStatus {
        self.graph.status
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// How often the actor calls [`JobCore::heartbeat_tick`].
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat.interval
    }

    /// How often the actor calls [`JobCore::checkpoint_tick`] (`None`: never, the checkpoint
    /// configuration is invalid).
    pub fn checkpoint_tick_interval(&self) -> Option<Duration> {
        let c = self.checkpointing.as_ref().ok()?;
        Some(c.settings.config.as_ref().map_or(Duration::from_millis(100), |cfg| {
            (cfg.interval / 4).clamp(Duration::from_millis(10), Duration::from_millis(100))
        }))
    }

    /// How many checkpoints the HA completed checkpoint store keeps.
    pub fn checkpoints_to_retain(&self) -> usize {
        self.checkpointing.as_ref().map_or(1, |c| c.coordinator.config().retained as usize)
    }

    /// What the REST API sees of the job.
    pub fn snapshot(&self) -> JobSnapshot {
        JobSnapshot {
            restart_strategy: self.restart_description.clone(),
            num_restarts: self.restart.as_ref().map_or(0, RestartBackoff::restarts),
            graph: self.graph.clone(),
            job_graph: self.job_graph.clone(),
            exceptions: self.exceptions.iter().cloned().collect(),
            checkpoints: self.checkpointing.as_ref().ok().map(|c| c.coordinator.statistics()),
            checkpoint_settings: match &self.checkpointing {
                Ok(c) => c.settings.clone(),
                Err(_) => CheckpointSettings {
                    config: None,
                    checkpoints_dir: None,
                    savepoints_dir: None,
                    retention: Retention::NoExternalized,
                },
            },
            accumulators: self.accumulator_totals(),
            subtask_accumulators: self.accumulators.iter().map(|(k, v)| (*k, v.clone())).collect(),
        }
    }

    fn accumulator_totals(&self) -> Vec<(String, u64)> {
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for (name, value) in self.accumulators.values().flatten() {
            *totals.entry(name).or_default() += value;
        }
        totals.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The actions of the call that ends; nothing once the job terminated.
    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    fn graph_mut(&mut self) -> &mut ExecutionGraph {
        Arc::make_mut(&mut self.graph)
    }

    /// Records a failure; only the newest `web.exception-history-size` are kept.
    fn record_exception(&mut self, exception: String, task_name: Option<String>, location: Option<String>) {
        let entry = ExceptionEntry { timestamp_ms: self.clock.epoch_ms(), exception, task_name, location };
        push_capped(&mut self.exceptions, entry, self.exception_history_size);
    }

    /// Applies a lifecycle event; an illegal one is logged and changes nothing.
    fn advance(&mut self, event: Event) -> Step {
        self.phase.on(event).unwrap_or_else(|e| {
            warn!(job_id = %self.job_id, error = %e, "lifecycle event refused");
            Step::Nothing
        })
    }

    fn task_executor_of(&self, attempt: ExecutionAttemptId) -> Option<RpcAddress> {
        let allocation = self.graph.execution(attempt)?.assignment.as_ref()?.allocation_id;
        self.slots.iter().flatten().find(|s| s.allocation_id == allocation).map(|s| s.task_executor.clone())
    }

    // -----------------------------------------------------------------------------------
    // Start, slots and deployment
    // -----------------------------------------------------------------------------------

    /// The JobMaster started: the job runs and asks for its slots (or fails at once when its
    /// configuration cannot work).
    pub fn start(&mut self) -> Vec<Action> {
        let now = self.clock.epoch_ms();
        if let Err(e) = self.graph_mut().transition(JobStatus::Running, now) {
            warn!(job_id = %self.job_id, error = %e, "cannot start job");
            return self.take();
        }
        let invalid = match (&self.restart, &self.checkpointing) {
            (Err(e), _) => Some(format!("invalid restart strategy configuration: {e}")),
            (_, Err(e)) => Some(format!("invalid checkpoint configuration: {e}")),
            _ => None,
        };
        if let Some(cause) = invalid {
            self.record_exception(cause.clone(), None, None);
            self.graph_mut().failure_cause = Some(cause);
            let _ = self.graph_mut().transition(JobStatus::Failed, now);
            self.phase = Phase::Terminated;
            self.terminate();
            return self.take();
        }
        if let Ok(c) = &mut self.checkpointing {
            let initial = std::mem::take(&mut c.initial);
            self.perform(initial);
        }
        self.graph_mut().transition_all(ExecutionState::Created, ExecutionState::Scheduled, now);
        for index in 0..self.slots.len() {
            self.pending.insert(AllocationId::generate(), index);
        }
        info!(job_id = %self.job_id, name = %self.job_graph.name, slots = self.slots.len(), "job master started");
        self.request_slots();
        self.arm_slot_timeout();
        self.take()
    }

    fn request_slots(&mut self) {
        if !self.pending.is_empty() {
            self.out.push(Action::RequestSlots(self.pending.keys().copied().collect()));
        }
    }

    /// One slot timeout per round of requests, tagged with the round.
    fn arm_slot_timeout(&mut self) {
        let timer = Timer::SlotTimeout { round: self.phase.round() };
        self.out.push(Action::ArmTimer { after: self.slot_request_timeout, timer });
    }

    fn cancel_pending_slot_requests(&mut self) {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending).into_keys().collect();
            self.out.push(Action::CancelSlotRequests(pending));
        }
    }

    /// The ResourceManager answered the slot request; a failed one is retried after 1 s
    /// while the same round still waits for slots.
    pub fn slot_request_sent(&mut self, result: Result<(), String>) -> Vec<Action> {
        if let Err(e) = result {
            if matches!(self.phase, Phase::AwaitingSlots { .. }) && !self.pending.is_empty() {
                warn!(job_id = %self.job_id, error = %e, "slot request failed; retrying");
                let timer = Timer::RetrySlotRequest { round: self.phase.round() };
                self.out.push(Action::ArmTimer { after: Duration::from_secs(1), timer });
            }
        }
        self.take()
    }

    /// A TaskExecutor offers slots: the requested ones are accepted (the answer); once every
    /// slot is held the job is deployed.
    pub fn slots_offered(
        &mut self,
        resource_id: &ResourceId,
        task_executor: &RpcAddress,
        data_address: &str,
        offers: &[AllocationId],
    ) -> (Vec<AllocationId>, Vec<Action>) {
        let mut accepted = Vec::new();
        let host = data_address.rsplit_once(':').map_or(data_address, |(h, _)| h).to_string();
        for allocation_id in offers {
            let Some(index) = self.pending.remove(allocation_id) else { continue };
            let now = self.clock.now();
            self.peers.entry(resource_id.clone()).or_insert(Peer { last_ok: now, failures: 0, in_flight: false });
            self.slots[index] = Some(HeldSlot {
                allocation_id: *allocation_id,
                resource_id: resource_id.clone(),
                task_executor: task_executor.clone(),
                host: host.clone(),
                data_address: data_address.to_owned(),
            });
            accepted.push(*allocation_id);
        }
        debug!(job_id = %self.job_id, accepted = accepted.len(), from = %resource_id, "slots offered");
        if matches!(self.phase, Phase::AwaitingSlots { .. })
            && self.graph.status == JobStatus::Running
            && self.slots.iter().all(Option::is_some)
            && self.advance(Event::AllSlotsHeld) == Step::Deploy
        {
            self.deploy();
        }
        (accepted, self.take())
    }

    /// Every slot is held: one task per subtask, subtask *i* of every vertex in slot *i*.
    fn deploy(&mut self) {
        let now = self.clock.epoch_ms();
        let restore_now = self.clock.now();
        let mut restored = Vec::new();
        let restore = self.checkpointing.as_mut().ok().and_then(|c| {
            let info = c.coordinator.latest_completed()?.clone();
            // The savepoint a job was submitted with is counted as restored already.
            if !std::mem::take(&mut c.submitted_restore) {
                match c.coordinator.restore_from(info.clone(), restore_now) {
                    Ok(actions) => restored = actions,
                    Err(e) => warn!(error = %e, "could not record the restore"),
                }
            }
            Some(RestoreSpec { checkpoint_id: info.id, location: info.location })
        });
        self.perform(restored);
        if let Some(r) = &restore {
            info!(job_id = %self.job_id, checkpoint = r.checkpoint_id, location = %r.location, "restoring tasks from checkpoint");
        }
        let graph = self.job_graph.clone();
        let final_checkpoint = self.checkpointing.as_ref().is_ok_and(|c| c.final_checkpoint);
        let mut submissions = Vec::new();
        for (vi, vertex) in graph.vertices.iter().enumerate() {
            let inputs: Vec<InputGateDeployment> = graph
                .edges
                .iter()
                .enumerate()
                .filter(|(_, e)| e.target == vertex.id)
                .map(|(ei, e)| {
                    let producer = graph.vertex(e.source).expect("edges connect vertices of the graph");
                    InputGateDeployment {
                        edge: ei as u32,
                        input: e.target_input,
                        producer_vertex: e.source,
                        ship: e.ship.clone(),
                        channels: (0..producer.parallelism)
                            .map(|p| {
                                let slot = self.slots[p as usize].as_ref().expect("all slots are held");
                                InputChannelDeployment {
                                    producer_subtask: p,
                                    producer_resource: slot.resource_id.clone(),
                                    data_address: slot.data_address.clone(),
                                }
                            })
                            .collect(),
                    }
                })
                .collect();
            let outputs: Vec<OutputDeployment> = graph
                .edges
                .iter()
                .enumerate()
                .filter(|(_, e)| e.source == vertex.id)
                .map(|(ei, e)| OutputDeployment {
                    edge: ei as u32,
                    consumer_vertex: e.target,
                    consumer_parallelism: graph.vertex(e.target).map_or(1, |v| v.parallelism),
                    ship: e.ship.clone(),
                })
                .collect();
            let artifacts = graph.artifacts_of(vertex);
            let operators_blob = graph.offloaded_operators.get(&vertex.id).cloned();
            let mut deployed_vertex = vertex.clone();
            if operators_blob.is_some() {
                deployed_vertex.operators = Vec::new();
            }
            for subtask in 0..vertex.parallelism {
                let slot = self.slots[subtask as usize].clone().expect("all slots are held");
                let execution = &self.graph.vertices[vi].subtasks[subtask as usize].current;
                let attempt_id = execution.attempt_id;
                let tdd = TaskDeploymentDescriptor {
                    job_id: self.job_id,
                    job_name: graph.name.clone(),
                    attempt_id,
                    attempt_number: execution.attempt_number,
                    subtask,
                    vertex: deployed_vertex.clone(),
                    max_parallelism: graph.max_parallelism,
                    job_config: graph.config.clone(),
                    allocation_id: slot.allocation_id,
                    inputs: inputs.clone(),
                    outputs: outputs.clone(),
                    job_master: self.address.clone(),
                    job_master_session: self.session,
                    restore: restore.clone(),
                    artifacts: artifacts.clone(),
                    blob_server: self.blob_server.clone(),
                    operators_blob: operators_blob.clone(),
                    final_checkpoint,
                };
                let assignment = SlotAssignment {
                    allocation_id: slot.allocation_id,
                    resource_id: slot.resource_id.clone(),
                    host: slot.host.clone(),
                    data_address: slot.data_address.clone(),
                };
                let _ = self.graph_mut().assign(attempt_id, assignment);
                let task_name = format!("{} ({}/{})", vertex.name, subtask + 1, vertex.parallelism);
                submissions.push(Action::Deploy {
                    task_executor: slot.task_executor,
                    resource_id: slot.resource_id,
                    task_name,
                    tdd: Box::new(tdd),
                });
            }
        }
        self.graph_mut().transition_all(ExecutionState::Scheduled, ExecutionState::Deploying, now);
        info!(job_id = %self.job_id, tasks = submissions.len(), "deploying tasks");
        self.out.extend(submissions);
    }

    /// A TaskExecutor answered a submission.
    pub fn deploy_answered(
        &mut self,
        attempt: ExecutionAttemptId,
        resource_id: &ResourceId,
        task_name: &str,
        outcome: DeployOutcome,
    ) -> Vec<Action> {
        let (error, retryable, unreachable) = match outcome {
            DeployOutcome::Ok => return self.take(),
            DeployOutcome::Refused { message, retryable } => (message, retryable, false),
            DeployOutcome::Unreachable(message) => (message, true, true),
            DeployOutcome::Failed(message) => (message, true, false),
        };
        let cause = format!("Could not deploy {task_name} to {resource_id}: {error}");
        if unreachable {
            self.task_manager_lost(resource_id, cause);
        } else {
            self.apply_update(attempt, ExecutionState::Failed, Some(TaskFailure { message: cause, retryable }), None);
        }
        self.take()
    }

    /// A task's state changed; `false` when the update was refused (unknown attempt or an
    /// illegal transition).
    pub fn task_updated(&mut self, update: TaskUpdate) -> (bool, Vec<Action>) {
        if let Some(index) = self.graph.locate(update.attempt) {
            if !update.accumulators.is_empty() {
                self.accumulators.insert(index, update.accumulators);
            }
            if update.state == ExecutionState::Finished {
                self.final_commits.extend(update.commits);
            }
        }
        let accepted = self.apply_update(update.attempt, update.state, update.failure, update.metrics);
        (accepted, self.take())
    }

    fn apply_update(
        &mut self,
        attempt_id: ExecutionAttemptId,
        state: ExecutionState,
        failure: Option<TaskFailure>,
        metrics: Option<(IoMetrics, Arc<MetricDump>)>,
    ) -> bool {
        let retryable = failure.as_ref().is_none_or(|f| f.retryable);
        let failure = failure.map(|f| f.message);
        if let Some((counts, dump)) = metrics {
            self.graph_mut().update_metrics(attempt_id, counts, dump);
        }
        let location =
            self.graph.execution(attempt_id).and_then(|e| e.assignment.as_ref()).map(|a| a.resource_id.to_string());
        let now = self.clock.epoch_ms();
        match self.graph_mut().update_execution(attempt_id, state, failure, now) {
            Ok(UpdateOutcome::None) => {}
            Ok(UpdateOutcome::JobFinished) => {
                info!(job_id = %self.job_id, "every task finished; committing the output");
                if self.advance(Event::Finished) == Step::Commit {
                    self.commit_final_output();
                }
            }
            Ok(UpdateOutcome::TaskFailed { vertex, subtask, cause }) => {
                let parallelism = self.graph.vertices.iter().find(|v| v.name == vertex).map_or(1, |v| v.parallelism);
                self.record_exception(
                    cause.clone(),
                    Some(format!("{vertex} ({}/{parallelism})", subtask + 1)),
                    location,
                );
                let restart = match self.decide_restart(retryable) {
                    Ok(delay) => {
                        warn!(job_id = %self.job_id, vertex, subtask, cause, delay_ms = delay.as_millis() as u64, "task failed; restarting the job");
                        Some(delay)
                    }
                    Err(reason) => {
                        warn!(job_id = %self.job_id, vertex, subtask, cause, reason, "task failed; failing the job");
                        None
                    }
                };
                if self.advance(Event::Failed { restart }) == Step::CancelTasks {
                    self.abort_checkpoints_for_failover();
                    self.cancel_executions();
                }
            }
            Ok(UpdateOutcome::AllTerminal) => self.all_terminal(),
            Err(e) => {
                warn!(job_id = %self.job_id, error = %e, "refusing state update");
                return false;
            }
        }
        true
    }

    /// Asks the restart strategy about a failure: `Ok(delay)` or `Err(why not)`.
    fn decide_restart(&mut self, retryable: bool) -> Result<Duration, String> {
        let now = self.clock.now();
        let decision = match &mut self.restart {
            _ if !retryable => RestartDecision::Fail { reason: "the failure is not retryable".to_owned() },
            Ok(backoff) => backoff.on_failure(now),
            Err(e) => RestartDecision::Fail { reason: e.clone() },
        };
        match decision {
            RestartDecision::Restart { delay } => Ok(delay),
            RestartDecision::Fail { reason } => Err(reason),
        }
    }

    /// Cancels every execution that still runs; ends the job when none is left.
    fn cancel_executions(&mut self) {
        let now = self.clock.epoch_ms();
        let to_cancel = self.graph_mut().begin_cancel(now);
        self.cancel_pending_slot_requests();
        for (attempt, assignment) in to_cancel {
            let Some(assignment) = assignment else { continue };
            let Some(slot) = self.slots.iter().flatten().find(|s| s.allocation_id == assignment.allocation_id) else {
                continue;
            };
            self.out.push(Action::CancelTask { task_executor: slot.task_executor.clone(), attempt, answer: true });
        }
        if self.graph.all_terminal() {
            self.all_terminal();
        }
    }

    /// A TaskExecutor answered a cancel: `false` when it does not run the task (or cannot be
    /// reached, so cannot run it either): the task counts as canceled.
    pub fn cancel_answered(&mut self, attempt: ExecutionAttemptId, running_there: bool) -> Vec<Action> {
        if !running_there {
            self.apply_update(attempt, ExecutionState::Canceled, None, None);
        }
        self.take()
    }

    /// Every task ended after a failure or a cancel: the job restarts (after the restart
    /// strategy's delay, the timer tagged with the new round) or ends.
    fn all_terminal(&mut self) {
        match self.phase.on(Event::AllTerminal) {
            Ok(Step::ArmRestart { round, delay }) => {
                let now = self.clock.epoch_ms();
                if self.graph_mut().transition(JobStatus::Restarting, now).is_ok() {
                    info!(job_id = %self.job_id, delay_ms = delay.as_millis() as u64, round, "job restarting");
                    self.out.push(Action::ArmTimer { after: delay, timer: Timer::RestartDue { round } });
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if self.phase == Phase::Terminated {
                    return;
                }
                warn!(job_id = %self.job_id, error = %e, "every task ended unexpectedly; the job fails");
            }
        }
        self.phase = Phase::Terminated;
        let target = if self.graph.status == JobStatus::Cancelling { JobStatus::Canceled } else { JobStatus::Failed };
        let now = self.clock.epoch_ms();
        if let Err(e) = self.graph_mut().transition(target, now) {
            warn!(job_id = %self.job_id, error = %e, "job status");
        }
        info!(job_id = %self.job_id, status = %self.graph.status, "job ended");
        self.terminate();
    }

    /// A global failover: new attempts of every subtask, deployed into the slots still
    /// held; slots lost with their TaskExecutor are requested again.
    fn restart(&mut self) {
        if self.graph.status != JobStatus::Restarting {
            return;
        }
        let now = self.clock.epoch_ms();
        self.graph_mut().reset_for_restart(now);
        self.accumulators.clear();
        self.final_commits.clear();
        if let Err(e) = self.graph_mut().transition(JobStatus::Running, now) {
            warn!(job_id = %self.job_id, error = %e, "cannot restart");
            return;
        }
        self.graph_mut().transition_all(ExecutionState::Created, ExecutionState::Scheduled, now);
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.is_none() {
                self.pending.insert(AllocationId::generate(), index);
            }
        }
        info!(job_id = %self.job_id, missing_slots = self.pending.len(), "redeploying the job");
        if self.pending.is_empty() {
            if self.advance(Event::AllSlotsHeld) == Step::Deploy {
                self.deploy();
            }
        } else {
            self.request_slots();
            self.arm_slot_timeout();
        }
    }

    /// A timer armed with [`Action::ArmTimer`] fired.
    pub fn timer_fired(&mut self, timer: Timer) -> Vec<Action> {
        match timer {
            Timer::SlotTimeout { round } => self.slot_timeout(round),
            Timer::RestartDue { round } => {
                if self.advance(Event::RestartDue { round }) == (Step::Redeploy { round }) {
                    self.restart();
                }
            }
            Timer::RetrySlotRequest { round } => {
                if self.phase == (Phase::AwaitingSlots { round }) && self.graph.status == JobStatus::Running {
                    self.request_slots();
                }
            }
        }
        self.take()
    }

    /// The slots of `round` did not all come in time: unless that round is over, the job
    /// fails as Flink's does.
    fn slot_timeout(&mut self, round: u64) {
        if self.advance(Event::SlotTimeout { round }) != Step::FailForSlots {
            return;
        }
        let missing = self.slots.iter().filter(|s| s.is_none()).count();
        let cause = format!(
            "org.apache.flink.runtime.jobmanager.scheduler.NoResourceAvailableException: Could not acquire the minimum \
             required resources: {missing} of {} slots are missing after slot.request.timeout ({} ms).",
            self.slots.len(),
            self.slot_request_timeout.as_millis()
        );
        warn!(job_id = %self.job_id, missing, "slot request timed out; failing the job");
        self.record_exception(cause.clone(), None, None);
        self.graph_mut().failure_cause = Some(cause);
        let now = self.clock.epoch_ms();
        let _ = self.graph_mut().transition(JobStatus::Failing, now);
        self.cancel_executions();
    }

    /// The ResourceManager reports a failed slot request: a timeout (the one slot timeout)
    /// fails the job as Flink does; a lost allocation of a held slot is the loss of that
    /// slot's TaskExecutor.
    pub fn slot_request_failed(&mut self, allocation_id: AllocationId, failure: SlotRequestFailure) -> Vec<Action> {
        match failure {
            SlotRequestFailure::TimedOut { message } => {
                if self.pending.contains_key(&allocation_id) {
                    debug!(job_id = %self.job_id, %allocation_id, message, "slot request timed out");
                    self.slot_timeout(self.phase.round());
                }
            }
            SlotRequestFailure::AllocationLost { message } => {
                let lost = self
                    .slots
                    .iter()
                    .flatten()
                    .find(|s| s.allocation_id == allocation_id)
                    .map(|s| s.resource_id.clone());
                if let Some(resource_id) = lost {
                    self.task_manager_lost(&resource_id, message);
                }
            }
        }
        self.take()
    }

    // -----------------------------------------------------------------------------------
    // Heartbeats and lost TaskExecutors
    // -----------------------------------------------------------------------------------

    /// One heartbeat round: silent TaskExecutors are lost, the others are asked.
    pub fn heartbeat_tick(&mut self) -> Vec<Action> {
        let now = self.clock.now();
        let timeout = self.heartbeat.timeout;
        let silent: Vec<ResourceId> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_ok) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for resource_id in silent {
            let reason = format!("The heartbeat of TaskManager with id {resource_id} timed out.");
            self.task_manager_lost(&resource_id, reason);
        }
        let due: Vec<(ResourceId, RpcAddress)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.in_flight)
            .filter_map(|(id, _)| {
                self.slots
                    .iter()
                    .flatten()
                    .find(|s| &s.resource_id == id)
                    .map(|s| (id.clone(), s.task_executor.clone()))
            })
            .collect();
        for (resource_id, task_executor) in due {
            if let Some(peer) = self.peers.get_mut(&resource_id) {
                peer.in_flight = true;
            }
            self.out.push(Action::Heartbeat { task_executor, resource_id });
        }
        self.take()
    }

    /// A heartbeat was answered (or failed).
    pub fn heartbeat_answered(&mut self, resource_id: &ResourceId, outcome: HeartbeatOutcome) -> Vec<Action> {
        let threshold = self.heartbeat.rpc_failure_threshold;
        let now = self.clock.now();
        let Some(peer) = self.peers.get_mut(resource_id) else { return self.take() };
        peer.in_flight = false;
        match outcome {
            HeartbeatOutcome::Ok => {
                peer.last_ok = now;
                peer.failures = 0;
            }
            HeartbeatOutcome::Unreachable(e) => {
                peer.failures += 1;
                if threshold > 0 && peer.failures >= threshold {
                    let reason = format!(
                        "TaskManager with id {resource_id} is unreachable: {threshold} consecutive heartbeats failed ({e})"
                    );
                    self.task_manager_lost(resource_id, reason);
                }
            }
            HeartbeatOutcome::Failed => {}
        }
        self.take()
    }

    /// A TaskExecutor of this job is gone: its slots are gone and its tasks failed.
    fn task_manager_lost(&mut self, resource_id: &ResourceId, reason: String) {
        if self.peers.remove(resource_id).is_none() {
            return;
        }
        warn!(job_id = %self.job_id, %resource_id, reason, "task manager lost");
        for slot in self.slots.iter_mut() {
            if slot.as_ref().is_some_and(|s| &s.resource_id == resource_id) {
                *slot = None;
            }
        }
        let affected: Vec<ExecutionAttemptId> = self
            .graph
            .executions()
            .filter(|(_, s)| {
                !s.current.state.is_terminal()
                    && s.current.assignment.as_ref().is_some_and(|a| &a.resource_id == resource_id)
            })
            .map(|(_, s)| s.current.attempt_id)
            .collect();
        for attempt_id in affected {
            let state =
                if self.graph.status == JobStatus::Running { ExecutionState::Failed } else { ExecutionState::Canceled };
            self.apply_update(attempt_id, state, Some(TaskFailure::retryable(reason.clone())), None);
        }
    }

    // -----------------------------------------------------------------------------------
    // Cancel, suspend and the end of the job
    // -----------------------------------------------------------------------------------

    /// The user cancels the job: `Err(status)` when it cannot be canceled (any more).
    pub fn cancel(&mut self) -> (Result<(), JobStatus>, Vec<Action>) {
        let result = self.cancel_job();
        (result, self.take())
    }

    fn cancel_job(&mut self) -> Result<(), JobStatus> {
        if self.phase == Phase::Committing {
            // Every task finished; the job is FINISHED once its output is committed.
            return Ok(());
        }
        if self.graph.status.is_globally_terminal() || self.graph.status == JobStatus::Cancelling {
            return Err(self.graph.status);
        }
        let now = self.clock.epoch_ms();
        self.graph_mut().transition(JobStatus::Cancelling, now).map_err(|_| self.graph.status)?;
        info!(job_id = %self.job_id, "canceling job");
        self.advance(Event::Cancel);
        self.cancel_executions();
        Ok(())
    }

    /// The Dispatcher lost leadership: the job stops here without reaching a terminal state
    /// (its graph and checkpoints stay for the new leader): tasks are canceled best effort,
    /// slots freed, nothing is reported.
    pub fn suspend(&mut self) -> Vec<Action> {
        info!(job_id = %self.job_id, "job master suspended");
        self.phase = Phase::Terminated;
        self.cancel_pending_slot_requests();
        let running: Vec<ExecutionAttemptId> = self
            .graph
            .executions()
            .filter(|(_, s)| !s.current.state.is_terminal())
            .map(|(_, s)| s.current.attempt_id)
            .collect();
        for attempt in running {
            if let Some(task_executor) = self.task_executor_of(attempt) {
                self.out.push(Action::CancelTask { task_executor, attempt, answer: false });
            }
        }
        for slot in self.slots.iter_mut().filter_map(Option::take) {
            self.out.push(Action::FreeSlot {
                task_executor: slot.task_executor,
                allocation_id: slot.allocation_id,
                cause: "the job master lost leadership".to_owned(),
            });
        }
        self.take()
    }

    /// Gives every slot back and reports the job terminated.
    fn terminate(&mut self) {
        self.cancel_pending_slot_requests();
        self.shutdown_checkpointing();
        let cause = format!("job {} reached {}", self.job_id, self.graph.status);
        for slot in self.slots.iter_mut().filter_map(Option::take) {
            self.out.push(Action::FreeSlot {
                task_executor: slot.task_executor,
                allocation_id: slot.allocation_id,
                cause: cause.clone(),
            });
        }
        self.peers.clear();
        let snapshot = Box::new(self.snapshot());
        self.out.push(Action::Terminated(snapshot));
    }

    /// The job finished: output that finished tasks left uncommitted becomes visible, then
    /// the job is FINISHED.
    /// Whether a stop-with-savepoint's savepoint is still being completed.
    fn stop_savepoint_pending(&self) -> bool {
        self.checkpointing
            .as_ref()
            .is_ok_and(|c| c.operations.values().any(|(_, op)| matches!(op, SavepointOperation::Stop { .. })))
    }

    /// The job's end after a stop waited for the stop's savepoint: it is decided now.
    fn finish_after_stop_savepoint(&mut self) {
        if self.finish_after_stop && !self.stop_savepoint_pending() {
            self.finish_after_stop = false;
            self.commit_final_output();
        }
    }

    fn commit_final_output(&mut self) {
        // The sources of a stop end once they took the savepoint, possibly before its
        // metadata is written: the job ends when the savepoint is complete (or failed).
        if self.stop_savepoint_pending() {
            info!(job_id = %self.job_id, "every task finished; waiting for the stop's savepoint to complete");
            self.finish_after_stop = true;
            return;
        }
        let commits = std::mem::take(&mut self.final_commits);
        if commits.is_empty() {
            self.finished();
        } else {
            self.out.push(Action::CommitOutput(commits));
        }
    }

    /// The final output commit is done (`errors`: the commits that failed).
    pub fn output_committed(&mut self, errors: Vec<String>) -> Vec<Action> {
        if self.phase != Phase::Committing {
            return self.take();
        }
        for error in errors {
            warn!(job_id = %self.job_id, error, "could not commit output");
            self.record_exception(error, None, None);
        }
        self.finished();
        self.take()
    }

    /// The output is committed: the job is FINISHED.
    fn finished(&mut self) {
        self.advance(Event::Committed);
        let now = self.clock.epoch_ms();
        if let Err(e) = self.graph_mut().transition(JobStatus::Finished, now) {
            warn!(job_id = %self.job_id, error = %e, "job status");
        }
        info!(job_id = %self.job_id, "job finished");
        self.terminate();
    }

    /// A failure of the whole job (e.g. too many failed checkpoints): the restart strategy
    /// decides as for a task failure.
    fn fail_job(&mut self, cause: String) {
        if self.graph.status != JobStatus::Running {
            return;
        }
        self.record_exception(cause.clone(), None, None);
        let restart = match self.decide_restart(true) {
            Ok(delay) => {
                warn!(job_id = %self.job_id, cause, "job failed; restarting");
                Some(delay)
            }
            Err(reason) => {
                warn!(job_id = %self.job_id, cause, reason, "job failed");
                self.graph_mut().failure_cause = Some(cause);
                None
            }
        };
        if self.advance(Event::Failed { restart }) != Step::CancelTasks {
            return;
        }
        let now = self.clock.epoch_ms();
        let _ = self.graph_mut().transition(JobStatus::Failing, now);
        self.abort_checkpoints_for_failover();
        self.cancel_executions();
    }

    // -----------------------------------------------------------------------------------
    // Checkpoints and savepoints
    // -----------------------------------------------------------------------------------

    /// The tasks a checkpoint needs (all of them, only when every one runs) and the source
    /// tasks it is triggered at.
    fn checkpoint_tasks(&self) -> (Vec<ExecutionAttemptId>, Vec<ExecutionAttemptId>) {
        let all_running = self.graph.status == JobStatus::Running
            && self.phase.is_deployed()
            && self.graph.executions().all(|(_, s)| s.current.state == ExecutionState::Running);
        if !all_running {
            return (Vec::new(), Vec::new());
        }
        let mut running = Vec::new();
        let mut sources = Vec::new();
        for (vertex, subtask) in self.graph.executions() {
            running.push(subtask.current.attempt_id);
            if self.job_graph.vertex(vertex.id).is_some_and(|v| v.is_source()) {
                sources.push(subtask.current.attempt_id);
            }
        }
        (running, sources)
    }

    /// Periodic checkpoint work (expiry, triggering when due).
    pub fn checkpoint_tick(&mut self) -> Vec<Action> {
        let (running, sources) = self.checkpoint_tasks();
        let now = self.clock.now();
        if let Ok(c) = &mut self.checkpointing {
            let actions = c.coordinator.on_tick(now, &running, &sources);
            self.perform(actions);
        }
        self.take()
    }

    /// A savepoint, stop-with-savepoint or checkpoint now: `Ok(operation number)` once it is
    /// accepted; its outcome comes as [`Action::OperationDone`] with that number.
    pub fn start_operation(&mut self, operation: SavepointOperation) -> (Result<u64, String>, Vec<Action>) {
        let result = self.trigger_operation(operation);
        (result, self.take())
    }

    fn trigger_operation(&mut self, operation: SavepointOperation) -> Result<u64, String> {
        let (running, sources) = self.checkpoint_tasks();
        let now = self.clock.now();
        let c = self.checkpointing.as_mut().map_err(|e| e.clone())?;
        let kind = match &operation {
            SavepointOperation::Savepoint { target_directory, .. }
            | SavepointOperation::Stop { target_directory, .. } => {
                let target =
                    target_directory.clone().or_else(|| c.settings.savepoints_dir.clone()).ok_or_else(|| {
                        "No savepoint directory configured. You can either specify a directory when triggering the \
                     savepoint or configure a cluster-wide default via key 'state.savepoints.dir'."
                            .to_string()
                    })?;
                CheckpointStorage::new(&target).map_err(|e| e.to_string())?;
                CheckpointKind::Savepoint { target }
            }
            SavepointOperation::Checkpoint => {
                if c.storage.is_none() {
                    return Err("Cannot take a checkpoint: no checkpoint directory is configured \
                                ('state.checkpoints.dir')."
                        .to_string());
                }
                CheckpointKind::Manual
            }
        };
        if running.is_empty() {
            return Err(format!(
                "Cannot take a {}: not all tasks of job {} are running (job status {}).",
                if kind.is_savepoint() { "savepoint" } else { "checkpoint" },
                self.job_id,
                self.graph.status
            ));
        }
        c.coordinator.check_trigger(now, &kind, &running, &sources).map_err(|e| e.to_string())?;
        let number = c.next_operation;
        c.next_operation += 1;
        c.reserving.insert(number, (operation, kind));
        self.out.push(Action::ReserveCheckpointId { operation: Some(number) });
        Ok(number)
    }

    /// A checkpoint id was reserved (or not) for a periodic checkpoint (`operation: None`) or
    /// an operation.
    pub fn checkpoint_id_reserved(&mut self, operation: Option<u64>, id: Result<u64, String>) -> Vec<Action> {
        let (running, sources) = self.checkpoint_tasks();
        let now = self.clock.now();
        let Ok(c) = &mut self.checkpointing else { return self.take() };
        let Some(number) = operation else {
            let actions = c.coordinator.on_id_reserved(id, now, &running, &sources);
            self.perform(actions);
            return self.take();
        };
        let Some((operation, kind)) = c.reserving.remove(&number) else { return self.take() };
        let triggered = id.map_err(|e| format!("could not get a checkpoint id: {e}")).and_then(|id| {
            c.coordinator.trigger_now(now, kind, id, &running, &sources).map(|a| (id, a)).map_err(|e| e.to_string())
        });
        match triggered {
            Ok((id, actions)) => {
                info!(job_id = %self.job_id, checkpoint = id, ?operation, "operation triggered");
                c.operations.insert(id, (number, operation));
                self.perform(actions);
            }
            Err(reason) => {
                warn!(job_id = %self.job_id, ?operation, reason, "operation failed");
                self.out.push(Action::OperationDone { operation: number, result: Err(reason) });
            }
        }
        self.take()
    }

    /// A task acknowledged a checkpoint.
    pub fn checkpoint_acknowledged(
        &mut self,
        checkpoint_id: u64,
        attempt: ExecutionAttemptId,
        state: AckState,
    ) -> Vec<Action> {
        let now = self.clock.now();
        if let Ok(c) = &mut self.checkpointing {
            let actions = c.coordinator.on_ack(checkpoint_id, attempt, state, now);
            self.perform(actions);
        }
        self.take()
    }

    /// A task declined a checkpoint (`uncounted`: not a checkpointing failure).
    pub fn checkpoint_declined(
        &mut self,
        checkpoint_id: u64,
        attempt: ExecutionAttemptId,
        reason: &str,
        uncounted: bool,
    ) -> Vec<Action> {
        let now = self.clock.now();
        if let Ok(c) = &mut self.checkpointing {
            debug!(job_id = %self.job_id, checkpoint = checkpoint_id, reason, "checkpoint declined");
            let actions = if uncounted {
                c.coordinator.on_decline_uncounted(checkpoint_id, attempt, reason, now)
            } else {
                c.coordinator.on_decline(checkpoint_id, attempt, reason, now)
            };
            self.perform(actions);
        }
        self.take()
    }

    /// Carries out what the coordinator asked for (which may ask for more).
    fn perform(&mut self, actions: Vec<CheckpointAction>) {
        let mut queue: VecDeque<CheckpointAction> = actions.into();
        while let Some(action) = queue.pop_front() {
            let more = match action {
                CheckpointAction::Trigger { checkpoint_id, timestamp_ms, kind, tasks } => {
                    self.create_directory(checkpoint_id, timestamp_ms, &kind, tasks);
                    Vec::new()
                }
                CheckpointAction::WriteMetadata { checkpoint_id, kind, handles } => {
                    self.write_metadata(checkpoint_id, &kind, handles)
                }
                CheckpointAction::Completed { checkpoint_id, info } => {
                    self.checkpoint_completed(checkpoint_id, &info);
                    Vec::new()
                }
                CheckpointAction::NotifyComplete { checkpoint_id, tasks, final_checkpoint } => {
                    let quiet = self.checkpointing.as_mut().is_ok_and(|c| c.quiet_savepoints.remove(&checkpoint_id));
                    if !quiet {
                        self.notify_tasks(checkpoint_id, tasks, true, final_checkpoint);
                    }
                    Vec::new()
                }
                CheckpointAction::NotifyAborted { checkpoint_id, tasks } => {
                    self.notify_tasks(checkpoint_id, tasks, false, false);
                    Vec::new()
                }
                CheckpointAction::Abort { checkpoint_id, reason } => {
                    self.checkpoint_aborted(checkpoint_id, reason);
                    Vec::new()
                }
                CheckpointAction::Discard { checkpoint_id, location, handles } => {
                    self.out.push(Action::Discard { checkpoint_id, location, handles });
                    Vec::new()
                }
                CheckpointAction::FailJob { reason } => {
                    self.fail_job(reason);
                    Vec::new()
                }
                CheckpointAction::ReserveId => {
                    self.out.push(Action::ReserveCheckpointId { operation: None });
                    Vec::new()
                }
                CheckpointAction::AdvanceIds { past } => {
                    self.out.push(Action::AdvanceCheckpointIds { past });
                    Vec::new()
                }
            };
            queue.extend(more);
        }
    }

    /// The checkpoint's directory is made first (off the control thread); the trigger goes
    /// to the sources once it exists.
    fn create_directory(
        &mut self,
        checkpoint_id: u64,
        timestamp_ms: u64,
        kind: &CheckpointKind,
        tasks: Vec<ExecutionAttemptId>,
    ) {
        let Ok(c) = &mut self.checkpointing else { return };
        let target = match kind {
            CheckpointKind::Savepoint { target } => DirectoryTarget::Savepoint { target: target.clone() },
            _ => match &c.storage {
                Some(storage) => DirectoryTarget::Checkpoint { storage: storage.clone() },
                None => DirectoryTarget::None,
            },
        };
        c.triggers.insert(checkpoint_id, PendingTrigger { timestamp_ms, is_savepoint: kind.is_savepoint(), tasks });
        self.out.push(Action::CreateDirectory { checkpoint_id, target });
    }

    /// A checkpoint's directory was made (or not): the sources get the trigger.
    pub fn directory_created(&mut self, checkpoint_id: u64, result: Result<PathBuf, String>) -> Vec<Action> {
        let now = self.clock.now();
        let Ok(c) = &mut self.checkpointing else { return self.take() };
        let trigger = c.triggers.remove(&checkpoint_id);
        let (Some(trigger), true) = (trigger, c.coordinator.pending_ids().contains(&checkpoint_id)) else {
            // Aborted meanwhile (failover, timeout, job end): nothing is triggered, and the
            // directory just made goes.
            if let Ok(dir) = result {
                let location = Some(dir.to_string_lossy().into_owned());
                self.out.push(Action::Discard { checkpoint_id, location, handles: Vec::new() });
            }
            return self.take();
        };
        let directory = match result {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("could not create the checkpoint directory: {e}");
                if let Some(first) = trigger.tasks.first() {
                    let actions = c.coordinator.on_decline(checkpoint_id, *first, &reason, now);
                    self.perform(actions);
                }
                return self.take();
            }
        };
        let (terminate, drain) = match c.operations.get(&checkpoint_id) {
            Some((_, SavepointOperation::Stop { drain, .. })) => (true, *drain),
            _ => (false, false),
        };
        let barrier = CheckpointBarrierInfo {
            checkpoint_id,
            timestamp_ms: trigger.timestamp_ms,
            directory: directory.to_string_lossy().into_owned(),
            is_savepoint: trigger.is_savepoint,
            terminate,
            drain,
        };
        c.directories.insert(checkpoint_id, directory);
        debug!(job_id = %self.job_id, checkpoint_id, sources = trigger.tasks.len(), "triggering checkpoint");
        for attempt in trigger.tasks {
            let Some(task_executor) = self.task_executor_of(attempt) else { continue };
            self.out.push(Action::TriggerCheckpoint { task_executor, attempt, barrier: barrier.clone() });
        }
        self.take()
    }

    /// A source task answered a trigger: `Ok(false)` when it does not run (any more).
    pub fn trigger_answered(
        &mut self,
        checkpoint_id: u64,
        attempt: ExecutionAttemptId,
        result: Result<bool, String>,
    ) -> Vec<Action> {
        // Not a checkpointing failure: the task finished or is going away (its loss is
        // handled by the failover).
        let reason = match result {
            Ok(true) => return self.take(),
            Ok(false) => "the task is not running".to_string(),
            Err(e) => format!("could not trigger the task: {e}"),
        };
        let now = self.clock.now();
        if let Ok(c) = &mut self.checkpointing {
            let actions = c.coordinator.on_decline_uncounted(checkpoint_id, attempt, &reason, now);
            self.perform(actions);
        }
        self.take()
    }

    /// Every task acknowledged: `_metadata` lists each operator's state per subtask.
    fn write_metadata(
        &mut self,
        checkpoint_id: u64,
        kind: &CheckpointKind,
        handles: Vec<(ExecutionAttemptId, String)>,
    ) -> Vec<CheckpointAction> {
        let now = self.clock.now();
        let max_parallelism = self.job_graph.max_parallelism;
        let Ok(c) = &mut self.checkpointing else { return Vec::new() };
        let Some(directory) = c.directories.get(&checkpoint_id).cloned() else {
            return c.coordinator.on_metadata_failed(checkpoint_id, "the checkpoint directory is unknown", now);
        };
        let mut entries: Vec<(OperatorStateEntry, Option<PathBuf>)> = Vec::new();
        for (attempt, handle) in handles {
            let Some((vi, si)) = self.graph.locate(attempt) else {
                return c.coordinator.on_metadata_failed(checkpoint_id, "an acknowledging task is unknown", now);
            };
            let Some(vertex) = self.job_graph.vertex(self.graph.vertices[vi].id) else { continue };
            let state = (!handle.is_empty()).then(|| PathBuf::from(&handle));
            for operator in &vertex.operators {
                let entry = OperatorStateEntry {
                    operator_id: operator.id.clone(),
                    subtask: si as u32,
                    parallelism: vertex.parallelism,
                    max_parallelism,
                    handles: Vec::new(),
                    key_group_range: operator.kind.key().map(|_| {
                        let range = key_group_range(si as u32, max_parallelism, vertex.parallelism);
                        (*range.start(), *range.end())
                    }),
                };
                entries.push((entry, state.clone()));
            }
        }
        self.out.push(Action::WriteMetadata { checkpoint_id, directory, is_savepoint: kind.is_savepoint(), entries });
        Vec::new()
    }

    /// `_metadata` was written (`Ok(location)`) or not. A checkpoint (not a savepoint) is
    /// complete only once it is also in the HA completed checkpoint store: before that no task
    /// is told (no sink commits) and no older checkpoint is discarded, so a new leader never
    /// resumes from less than what was committed.
    pub fn metadata_written(
        &mut self,
        checkpoint_id: u64,
        is_savepoint: bool,
        written: Result<String, String>,
    ) -> Vec<Action> {
        let now = self.clock.now();
        let Ok(c) = &mut self.checkpointing else { return self.take() };
        if !c.coordinator.pending_ids().contains(&checkpoint_id) {
            // Aborted while `_metadata` was written (a failover, a timeout, the job's end):
            // never stored, never restored from; what was written goes.
            if let Ok(location) = written {
                self.out.push(Action::Discard { checkpoint_id, location: Some(location), handles: Vec::new() });
            }
            return self.take();
        }
        let actions = match written {
            Err(e) => c.coordinator.on_metadata_failed(checkpoint_id, &e, now),
            Ok(location) if is_savepoint => {
                c.directories.remove(&checkpoint_id);
                c.coordinator.on_metadata_written(checkpoint_id, location, now)
            }
            Ok(location) => {
                let handle = SavepointRestore { checkpoint_id, location, is_savepoint: false };
                self.out.push(Action::StoreCheckpoint { checkpoint_id, handle });
                Vec::new()
            }
        };
        self.perform(actions);
        self.take()
    }

    /// The checkpoint was added to the HA completed checkpoint store (or not).
    pub fn checkpoint_stored(
        &mut self,
        checkpoint_id: u64,
        location: String,
        result: Result<(), String>,
    ) -> Vec<Action> {
        let now = self.clock.now();
        let Ok(c) = &mut self.checkpointing else { return self.take() };
        let actions = match result {
            Ok(()) => {
                c.directories.remove(&checkpoint_id);
                c.coordinator.on_metadata_written(checkpoint_id, location, now)
            }
            Err(e) => {
                let reason = format!("could not add the checkpoint to the completed checkpoint store: {e}");
                c.coordinator.on_metadata_failed(checkpoint_id, &reason, now)
            }
        };
        self.perform(actions);
        self.take()
    }

    fn checkpoint_completed(&mut self, checkpoint_id: u64, info: &CompletedCheckpointInfo) {
        debug!(job_id = %self.job_id, checkpoint_id, location = %info.location, "checkpoint completed");
        let Ok(c) = &mut self.checkpointing else { return };
        let stop = matches!(c.operations.get(&checkpoint_id), Some((_, SavepointOperation::Stop { .. })));
        if info.is_savepoint && !stop {
            c.quiet_savepoints.insert(checkpoint_id);
        }
        let Some((number, operation)) = c.operations.remove(&checkpoint_id) else { return };
        let result = match operation {
            SavepointOperation::Checkpoint => OperationResult::Checkpoint { checkpoint_id },
            _ => OperationResult::Savepoint { location: info.location.clone() },
        };
        info!(job_id = %self.job_id, checkpoint_id, ?result, "operation completed");
        self.out.push(Action::OperationDone { operation: number, result: Ok(result) });
        if let SavepointOperation::Savepoint { cancel_job: true, .. } = operation {
            let _ = self.cancel_job();
        }
        self.finish_after_stop_savepoint();
    }

    fn checkpoint_aborted(&mut self, checkpoint_id: u64, reason: String) {
        let Ok(c) = &mut self.checkpointing else { return };
        c.triggers.remove(&checkpoint_id);
        if let Some(dir) = c.directories.remove(&checkpoint_id) {
            let location = Some(dir.to_string_lossy().into_owned());
            self.out.push(Action::Discard { checkpoint_id, location, handles: Vec::new() });
        }
        if let Some((number, _)) = c.operations.remove(&checkpoint_id) {
            warn!(job_id = %self.job_id, checkpoint_id, reason, "operation failed");
            self.out.push(Action::OperationDone { operation: number, result: Err(reason) });
        } else if reason != JOB_RESTARTING {
            info!(job_id = %self.job_id, checkpoint_id, reason, "checkpoint aborted");
        }
        self.finish_after_stop_savepoint();
    }

    fn notify_tasks(
        &mut self,
        checkpoint_id: u64,
        tasks: Vec<ExecutionAttemptId>,
        completed: bool,
        final_checkpoint: bool,
    ) {
        for attempt in tasks {
            let Some(task_executor) = self.task_executor_of(attempt) else { continue };
            self.out.push(Action::NotifyCheckpoint {
                task_executor,
                attempt,
                checkpoint_id,
                completed,
                final_checkpoint,
            });
        }
    }

    /// Pending checkpoints are given up when the job fails over.
    fn abort_checkpoints_for_failover(&mut self) {
        let now = self.clock.now();
        let Ok(c) = &mut self.checkpointing else { return };
        let actions = c.coordinator.on_job_restart(now);
        self.perform(actions);
    }

    /// The job reached a terminal state: nothing more is triggered; retained checkpoints are
    /// deleted unless `externalized-checkpoint-retention` keeps them for this outcome.
    fn shutdown_checkpointing(&mut self) {
        let status = self.graph.status;
        let job_id = self.job_id;
        let now = self.clock.now();
        let Ok(c) = &mut self.checkpointing else { return };
        let actions = c.coordinator.shutdown(now);
        let keep = c.settings.retention.keeps(status);
        let job_dir = c.storage.as_ref().map(|s| s.job_dir(job_id));
        let owned: Vec<String> = match &job_dir {
            Some(job_dir) => c
                .coordinator
                .retained_checkpoints()
                .into_iter()
                .filter(|info| !info.is_savepoint && Path::new(&info.location).starts_with(job_dir))
                .map(|info| info.location.clone())
                .collect(),
            None => Vec::new(),
        };
        self.perform(actions);
        if !keep {
            self.out.push(Action::DiscardRetained { locations: owned, job_dir });
        }
    }
}

/// Appends `item`, dropping the oldest entries beyond `cap` (at least one is kept).
fn push_capped<T>(queue: &mut VecDeque<T>, item: T, cap: usize) {
    queue.push_back(item);
    while queue.len() > cap.max(1) {
        queue.pop_front();
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
