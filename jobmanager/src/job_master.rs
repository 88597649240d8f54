//! The JobMaster: runs one job.
//!
//! It owns the job's [`ExecutionGraph`] and drives it: asks the ResourceManager for one
//! slot per parallel pipeline (slot sharing: subtask *i* of every vertex runs in slot
//! *i*, so a job needs max-parallelism slots), accepts the slots TaskExecutors offer,
//! deploys every subtask once all slots are there, and follows the state updates the
//! TaskExecutors report until the job finishes, fails or is canceled. Then it gives the
//! slots back and tells the Dispatcher.
//!
//! Its endpoint `jobmaster/<job-id>` is fenced by its own leader session id, which
//! TaskExecutors learn with `IdentifyLeader` before offering slots.
//!
//! Failures: a failed task or a lost TaskExecutor (heartbeat timeout or broken connection)
//! fails the job globally; the restart strategy decides whether and when all tasks are
//! redeployed, restoring from the latest completed checkpoint.
//!
//! Checkpoints: the [`CheckpointCoordinator`] (a pure state machine) decides; this actor
//! performs its actions: it creates `chk-<n>` (or a savepoint directory), sends the
//! trigger to the source tasks, collects acknowledgements, writes `_metadata` (listing
//! every operator's state file per subtask, with key-group ranges for keyed operators),
//! notifies the tasks of completions (sinks commit) and discards aborted or subsumed
//! checkpoints. Savepoints, stop-with-savepoint and manual checkpoints come from the
//! Dispatcher ([`RunOperation`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use flint_common::ids::{AllocationId, ExecutionAttemptId, JobId, LeaderSessionId, ResourceId};
use flint_common::job::plan::JobGraph;
use flint_common::keygroups::key_group_range;
use flint_common::messages::*;
use flint_common::process::epoch_ms;
use flint_common::resources::ResourceProfile;
use flint_common::rpc::{Endpoint, FencingToken, RpcAddress, RpcService, PROTOCOL_VERSION};
use tracing::{debug, info, warn};

use flint_common::checkpoint_storage::{
    self as storage, CheckpointMetadata, CheckpointStorage, OperatorStateEntry, StateHandle,
};
use tokio::sync::oneshot;

use crate::checkpoint_coordinator::{
    AckState, CheckpointAction, CheckpointConfig, CheckpointCoordinator, CheckpointKind, CheckpointStatistics,
    CompletedCheckpointInfo,
};
use crate::dispatcher::{Dispatcher, DispatcherConfig, JobTerminated, OperationResult, SavepointOperation};
use crate::execution_graph::{ExecutionGraph, ExecutionState, IoMetrics, JobStatus, SlotAssignment, UpdateOutcome};
use crate::lifecycle::{Event, Phase, Step};
use crate::restart::{RestartBackoff, RestartDecision, RestartStrategyConfig};

/// A failure recorded for `/jobs/:id/exceptions`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ExceptionEntry {
    pub timestamp_ms: u64,
    pub exception: String,
    pub task_name: Option<String>,
    pub location: Option<String>,
}

/// A slot the job holds.
#[derive(Clone)]
struct HeldSlot {
    allocation_id: AllocationId,
    resource_id: ResourceId,
    gateway: TaskExecutorGateway,
    host: String,
    data_address: String,
}

/// How the JobMaster watches the TaskExecutors that hold its slots.
#[derive(Clone, Copy, Debug)]
pub struct HeartbeatSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive unreachable heartbeats that mark a TaskExecutor lost; ≤ 0 disables.
    pub rpc_failure_threshold: i32,
}

struct Peer {
    last_ok: std::time::Instant,
    failures: i32,
    in_flight: bool,
}

/// What the REST API sees of a job: its plan and a copy of its ExecutionGraph. Serializable
/// (without the checkpoint statistics), so a job's final state can be archived.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct JobSnapshot {
    pub restart_strategy: String,
    pub num_restarts: u32,
    /// Shared with the JobMaster until its next change (copy on write): a snapshot costs
    /// no copy of the graphs.
    pub graph: Arc<ExecutionGraph>,
    pub job_graph: Arc<JobGraph>,
    pub exceptions: Vec<ExceptionEntry>,
    /// Checkpoint statistics (`None` while no coordinator exists: checkpointing off and no
    /// savepoint taken or restored). Not archived.
    #[serde(skip)]
    pub checkpoints: Option<CheckpointStatistics>,
    pub checkpoint_settings: CheckpointSettings,
    /// Accumulators summed over the subtasks' current attempts.
    pub accumulators: Vec<(String, u64)>,
}

/// The checkpointing configuration of a job, as `/jobs/:id/checkpoints/config` shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CheckpointSettings {
    /// `None`: periodic checkpointing is off.
    pub config: Option<CheckpointConfig>,
    pub checkpoints_dir: Option<String>,
    pub savepoints_dir: Option<String>,
    pub retention: Retention,
}

/// `execution.checkpointing.externalized-checkpoint-retention`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Retention {
    /// Checkpoints are deleted when the job terminates in any way.
    NoExternalized,
    /// Kept when the job fails, deleted when it is canceled or finishes.
    DeleteOnCancellation,
    /// Kept when the job fails or is canceled, deleted when it finishes.
    RetainOnCancellation,
}

impl Retention {
    pub const KEY: &'static str = "execution.checkpointing.externalized-checkpoint-retention";

    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_uppercase().as_str() {
            "NO_EXTERNALIZED_CHECKPOINTS" => Ok(Retention::NoExternalized),
            "DELETE_ON_CANCELLATION" => Ok(Retention::DeleteOnCancellation),
            "RETAIN_ON_CANCELLATION" => Ok(Retention::RetainOnCancellation),
            _ => Err(format!(
                "invalid value '{value}' for '{}': expected NO_EXTERNALIZED_CHECKPOINTS, DELETE_ON_CANCELLATION or \
                 RETAIN_ON_CANCELLATION",
                Self::KEY
            )),
        }
    }

    pub fn flink_name(&self) -> &'static str {
        match self {
            Retention::NoExternalized => "NO_EXTERNALIZED_CHECKPOINTS",
            Retention::DeleteOnCancellation => "DELETE_ON_CANCELLATION",
            Retention::RetainOnCancellation => "RETAIN_ON_CANCELLATION",
        }
    }

    /// Whether the retained checkpoints survive a job ending in `status`.
    fn keeps(&self, status: JobStatus) -> bool {
        match status {
            JobStatus::Failed => *self != Retention::NoExternalized,
            JobStatus::Canceled => *self == Retention::RetainOnCancellation,
            _ => false,
        }
    }
}

/// Where a job resumes from: the savepoint it was submitted with (`savepointPath`), or after a
/// jobmanager failover its latest completed checkpoint (the completed checkpoint store keeps
/// this as JSON).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavepointRestore {
    pub checkpoint_id: u64,
    pub location: String,
    pub is_savepoint: bool,
}

/// A savepoint or checkpoint requested through the REST API, waiting for its checkpoint.
struct PendingOperation {
    operation: SavepointOperation,
    reply: oneshot::Sender<Result<OperationResult, String>>,
}

/// The checkpointing side of a JobMaster.
struct Checkpointing {
    coordinator: CheckpointCoordinator,
    settings: CheckpointSettings,
    storage: Option<CheckpointStorage>,
    /// Directories of pending checkpoints and savepoints.
    directories: BTreeMap<u64, PathBuf>,
    operations: BTreeMap<u64, PendingOperation>,
    /// Completed savepoints whose completion the tasks are not told of: as in Flink, an
    /// intermediate savepoint commits no side effects (its pending output is committed by a
    /// job restored from it); only stop-with-savepoint does.
    quiet_savepoints: std::collections::BTreeSet<u64>,
    /// The job was submitted with a savepoint, not restored from it yet.
    submitted_restore: bool,
    /// The HA completed checkpoint store: what a new leader resumes the job from.
    store: flint_common::ha::CompletedCheckpointStore,
}

pub struct JobMaster {
    job_id: JobId,
    job_graph: Arc<JobGraph>,
    /// Changed through `Arc::make_mut`: copied only when a snapshot still holds it.
    graph: Arc<ExecutionGraph>,
    rpc: RpcService,
    session: LeaderSessionId,
    fencing: FencingToken,
    resource_manager: RemoteEndpoint,
    dispatcher: Addr<Dispatcher>,
    slot_request_timeout: Duration,
    ask_timeout: Duration,
    /// One entry per parallel pipeline.
    slots: Vec<Option<HeldSlot>>,
    /// Requested allocations not yet offered: allocation → slot index.
    pending: BTreeMap<AllocationId, usize>,
    exceptions: std::collections::VecDeque<ExceptionEntry>,
    /// `web.exception-history-size`.
    exception_history_size: usize,
    /// Where the job is in its lifecycle (the legal moves are in [`crate::lifecycle`]);
    /// timers carry the round they were armed in.
    phase: Phase,
    heartbeat: HeartbeatSettings,
    /// TaskExecutors holding slots of this job.
    peers: BTreeMap<ResourceId, Peer>,
    /// The restart strategy (an invalid configuration fails the job at start).
    restart: Result<RestartBackoff, String>,
    restart_description: String,
    /// `Err`: the checkpoint configuration is invalid (the job fails at start).
    checkpointing: Result<Checkpointing, String>,
    /// Output finished tasks left for the end of the job.
    final_commits: Vec<FileCommit>,
    /// Accumulators of each subtask's current attempt, by vertex and subtask.
    accumulators: BTreeMap<(usize, usize), Vec<(String, u64)>>,
    /// File work, off the control thread.
    files: FileQueue,
}

impl JobMaster {
    pub fn new(
        job_id: JobId,
        job_graph: JobGraph,
        rpc: RpcService,
        dispatcher: Addr<Dispatcher>,
        config: &DispatcherConfig,
        restore: Option<SavepointRestore>,
    ) -> Self {
        let graph = Arc::new(ExecutionGraph::new(job_id, &job_graph, epoch_ms()));
        let job_graph = Arc::new(job_graph);
        let checkpointing = Checkpointing::new(job_id, &job_graph, config, restore);
        let periodic = checkpointing.as_ref().is_ok_and(|c| c.settings.config.is_some());
        let strategy = RestartStrategyConfig::from_config(&job_graph.config, &config.cluster, periodic);
        let restart_description = strategy.as_ref().map_or_else(|e| e.clone(), RestartStrategyConfig::description);
        let restart = strategy.map(|s| RestartBackoff::new(s, job_id.as_u128() as u64));
        let slots = vec![None; job_graph.slots_needed() as usize];
        Self {
            job_id,
            job_graph,
            graph,
            rpc,
            session: LeaderSessionId::generate(),
            fencing: FencingToken::new(),
            resource_manager: config.resource_manager.clone(),
            dispatcher,
            slot_request_timeout: config.slot_request_timeout,
            ask_timeout: config.ask_timeout,
            slots,
            pending: BTreeMap::new(),
            exceptions: Default::default(),
            exception_history_size: config
                .cluster
                .get(&flint_common::config::options::WEB_EXCEPTION_HISTORY_SIZE)
                .map_or(16, |n| n as usize),
            phase: Phase::start(),
            heartbeat: config.heartbeat,
            peers: BTreeMap::new(),
            restart,
            restart_description,
            checkpointing,
            final_commits: Vec::new(),
            accumulators: BTreeMap::new(),
            files: FileQueue::default(),
        }
    }

    /// The endpoint name of a job's JobMaster.
    pub fn endpoint_name(job_id: JobId) -> String {
        format!("jobmaster/{job_id}")
    }

    fn address(&self) -> RpcAddress {
        self.rpc.address_of(&Self::endpoint_name(self.job_id))
    }

    fn snapshot(&self) -> JobSnapshot {
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
        }
    }

    fn accumulator_totals(&self) -> Vec<(String, u64)> {
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for (name, value) in self.accumulators.values().flatten() {
            *totals.entry(name).or_default() += value;
        }
        totals.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Records a failure; only the newest `web.exception-history-size` are kept.
    fn record_exception(&mut self, exception: String, task_name: Option<String>, location: Option<String>) {
        let entry = ExceptionEntry { timestamp_ms: epoch_ms(), exception, task_name, location };
        push_capped(&mut self.exceptions, entry, self.exception_history_size);
    }

    /// Asks the ResourceManager (after learning its session) for every slot still missing.
    fn request_slots(&mut self, ctx: &mut Context<Self>) {
        let request = RequestSlots {
            job_id: self.job_id,
            job_master: self.address(),
            requests: self
                .pending
                .keys()
                .map(|allocation_id| SlotRequestSpec { allocation_id: *allocation_id, profile: ResourceProfile::ANY })
                .collect(),
        };
        let rm = self.resource_manager.clone();
        let fut = async move {
            let info = ResourceManagerGateway(rm.clone()).identify().await.map_err(|e| e.to_string())?;
            let Some(session) = info.leader_session_id else {
                return Err("the resource manager has no leader".to_string());
            };
            let gateway = ResourceManagerGateway(rm.with_token(Some(session)));
            gateway.request_slots(&request).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
        };
        ctx.spawn(fut.into_actor(self).map(|result: Result<(), String>, act, ctx| {
            if let Err(e) = result {
                if act.graph.status == JobStatus::Running && !act.pending.is_empty() {
                    warn!(job_id = %act.job_id, error = %e, "slot request failed; retrying");
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.request_slots(ctx));
                }
            }
        }));
    }

    fn deploy(&mut self, ctx: &mut Context<Self>) {
        let now = epoch_ms();
        let restore = self.checkpointing.as_mut().ok().and_then(|c| {
            let info = c.coordinator.latest_completed()?.clone();
            // The savepoint a job was submitted with is counted as restored already.
            if !std::mem::take(&mut c.submitted_restore) {
                if let Err(e) = c.coordinator.restore_from(info.clone(), Instant::now()) {
                    warn!(error = %e, "could not record the restore");
                }
            }
            Some(RestoreSpec { checkpoint_id: info.id, location: info.location })
        });
        if let Some(r) = &restore {
            info!(job_id = %self.job_id, checkpoint = r.checkpoint_id, location = %r.location, "restoring tasks from checkpoint");
        }
        let graph = &self.job_graph;
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
                    vertex: vertex.clone(),
                    max_parallelism: graph.max_parallelism,
                    job_config: graph.config.clone(),
                    allocation_id: slot.allocation_id,
                    inputs: inputs.clone(),
                    outputs: outputs.clone(),
                    job_master: self.address(),
                    job_master_session: self.session,
                    restore: restore.clone(),
                };
                let assignment = SlotAssignment {
                    allocation_id: slot.allocation_id,
                    resource_id: slot.resource_id.clone(),
                    host: slot.host.clone(),
                    data_address: slot.data_address.clone(),
                };
                let _ = Arc::make_mut(&mut self.graph).assign(attempt_id, assignment);
                let task_name = format!("{} ({}/{})", vertex.name, subtask + 1, vertex.parallelism);
                submissions.push((attempt_id, task_name, slot, tdd));
            }
        }
        Arc::make_mut(&mut self.graph).transition_all(ExecutionState::Scheduled, ExecutionState::Deploying, now);
        info!(job_id = %self.job_id, tasks = submissions.len(), "deploying tasks");
        for (attempt_id, task_name, slot, tdd) in submissions {
            let fut = slot.gateway.submit_task(tdd);
            ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                let mut retryable = true;
                let (error, unreachable) = match result {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => {
                        retryable = e.is_retryable();
                        (e.to_string(), false)
                    }
                    Err(e) => {
                        let unreachable = matches!(
                            e,
                            flint_common::rpc::RpcError::Unreachable { .. }
                                | flint_common::rpc::RpcError::ConnectionLost { .. }
                        );
                        (e.to_string(), unreachable)
                    }
                };
                let cause = format!("Could not deploy {task_name} to {}: {error}", slot.resource_id);
                if unreachable {
                    // The TaskExecutor is gone: its slots with it.
                    act.task_manager_lost(ctx, &slot.resource_id, cause);
                } else {
                    act.apply_update(
                        ctx,
                        attempt_id,
                        ExecutionState::Failed,
                        Some(TaskFailure { message: cause, retryable }),
                        None,
                    );
                }
            }));
        }
    }

    fn apply_update(
        &mut self,
        ctx: &mut Context<Self>,
        attempt_id: ExecutionAttemptId,
        state: ExecutionState,
        failure: Option<TaskFailure>,
        metrics: Option<IoMetrics>,
    ) -> bool {
        let retryable = failure.as_ref().is_none_or(|f| f.retryable);
        let failure = failure.map(|f| f.message);
        if let Some(m) = metrics {
            Arc::make_mut(&mut self.graph).update_metrics(attempt_id, m);
        }
        let location =
            self.graph.execution(attempt_id).and_then(|e| e.assignment.as_ref()).map(|a| a.resource_id.to_string());
        match Arc::make_mut(&mut self.graph).update_execution(attempt_id, state, failure, epoch_ms()) {
            Ok(UpdateOutcome::None) => {}
            Ok(UpdateOutcome::JobFinished) => {
                info!(job_id = %self.job_id, "every task finished; committing the output");
                self.advance(Event::Finished);
                self.commit_final_output(ctx);
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
                    self.abort_checkpoints_for_failover(ctx);
                    self.cancel_executions(ctx);
                }
            }
            Ok(UpdateOutcome::AllTerminal) => self.all_terminal(ctx),
            Err(e) => {
                warn!(job_id = %self.job_id, error = %e, "refusing state update");
                return false;
            }
        }
        true
    }

    /// Asks the restart strategy about a failure: `Ok(delay)` (the restart is then pending)
    /// or `Err(why not)`.
    fn decide_restart(&mut self, retryable: bool) -> Result<Duration, String> {
        let decision = match &mut self.restart {
            _ if !retryable => RestartDecision::Fail { reason: "the failure is not retryable".to_owned() },
            Ok(backoff) => backoff.on_failure(Instant::now()),
            Err(e) => RestartDecision::Fail { reason: e.clone() },
        };
        match decision {
            RestartDecision::Restart { delay } => Ok(delay),
            RestartDecision::Fail { reason } => Err(reason),
        }
    }

    /// Cancels every execution that still runs; ends the job when none is left.
    fn cancel_executions(&mut self, ctx: &mut Context<Self>) {
        let to_cancel = Arc::make_mut(&mut self.graph).begin_cancel(epoch_ms());
        self.cancel_pending_slot_requests();
        for (attempt_id, assignment) in to_cancel {
            let Some(assignment) = assignment else { continue };
            let Some(slot) = self.slots.iter().flatten().find(|s| s.allocation_id == assignment.allocation_id) else {
                continue;
            };
            let fut = slot.gateway.cancel_task(attempt_id);
            ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                // A task executor that cannot be reached cannot run the task either.
                if result.is_err() || result == Ok(false) {
                    act.apply_update(ctx, attempt_id, ExecutionState::Canceled, None, None);
                }
            }));
        }
        if self.graph.all_terminal() {
            self.all_terminal(ctx);
        }
    }

    /// Every task ended after a failure or a cancel: the job restarts (after the restart
    /// strategy's delay, the timer tagged with the new round) or ends.
    fn all_terminal(&mut self, ctx: &mut Context<Self>) {
        match self.phase.on(Event::AllTerminal) {
            Ok(Step::ArmRestart { round, delay }) => {
                if Arc::make_mut(&mut self.graph).transition(JobStatus::Restarting, epoch_ms()).is_ok() {
                    info!(job_id = %self.job_id, delay_ms = delay.as_millis() as u64, round, "job restarting");
                    ctx.run_later(delay, move |act, ctx| {
                        if act.advance(Event::RestartDue { round }) == (Step::Redeploy { round }) {
                            act.restart(ctx);
                        }
                    });
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
        if let Err(e) = Arc::make_mut(&mut self.graph).transition(target, epoch_ms()) {
            warn!(job_id = %self.job_id, error = %e, "job status");
        }
        info!(job_id = %self.job_id, status = %self.graph.status, "job ended");
        self.terminate(ctx);
    }

    /// Applies a lifecycle event; an illegal one is logged and changes nothing.
    fn advance(&mut self, event: Event) -> Step {
        self.phase.on(event).unwrap_or_else(|e| {
            warn!(job_id = %self.job_id, error = %e, "lifecycle event refused");
            Step::Nothing
        })
    }

    /// A global failover: new attempts of every subtask, deployed into the slots still
    /// held; slots lost with their TaskExecutor are requested again.
    fn restart(&mut self, ctx: &mut Context<Self>) {
        if self.graph.status != JobStatus::Restarting {
            return;
        }
        let now = epoch_ms();
        Arc::make_mut(&mut self.graph).reset_for_restart(now);
        self.accumulators.clear();
        self.final_commits.clear();
        if let Err(e) = Arc::make_mut(&mut self.graph).transition(JobStatus::Running, now) {
            warn!(job_id = %self.job_id, error = %e, "cannot restart");
            return;
        }
        Arc::make_mut(&mut self.graph).transition_all(ExecutionState::Created, ExecutionState::Scheduled, now);
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.is_none() {
                self.pending.insert(AllocationId::generate(), index);
            }
        }
        info!(job_id = %self.job_id, missing_slots = self.pending.len(), "redeploying the job");
        if self.pending.is_empty() {
            if self.advance(Event::AllSlotsHeld) == Step::Deploy {
                self.deploy(ctx);
            }
        } else {
            self.request_slots(ctx);
            self.arm_slot_timeout(ctx);
        }
    }

    /// One slot timeout per round of requests, tagged with the round: one that fires in
    /// another round does nothing.
    fn arm_slot_timeout(&mut self, ctx: &mut Context<Self>) {
        let round = self.phase.round();
        ctx.run_later(self.slot_request_timeout, move |act, ctx| act.slot_timeout(ctx, round));
    }

    fn cancel_pending_slot_requests(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let rm = self.resource_manager.clone();
        let pending: Vec<AllocationId> = std::mem::take(&mut self.pending).into_keys().collect();
        actix::spawn(async move {
            let Ok(info) = ResourceManagerGateway(rm.clone()).identify().await else { return };
            let gateway = ResourceManagerGateway(rm.with_token(info.leader_session_id));
            for allocation_id in pending {
                let _ = gateway.cancel_slot_request(allocation_id).await;
            }
        });
    }

    /// Gives every slot back, reports to the Dispatcher and stops.
    fn terminate(&mut self, ctx: &mut Context<Self>) {
        self.cancel_pending_slot_requests();
        self.shutdown_checkpointing(ctx);
        let cause = format!("job {} reached {}", self.job_id, self.graph.status);
        for slot in self.slots.iter_mut().filter_map(Option::take) {
            let fut = slot.gateway.free_slot(slot.allocation_id, cause.clone());
            actix::spawn(async move {
                if let Err(e) = fut.await {
                    debug!(error = %e, "could not free slot");
                }
            });
        }
        self.dispatcher.do_send(JobTerminated { job_id: self.job_id, snapshot: Box::new(self.snapshot()) });
        ctx.stop();
    }

    /// One heartbeat round with every TaskExecutor holding a slot of this job.
    fn heartbeat_round(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.heartbeat.timeout;
        let silent: Vec<ResourceId> =
            self.peers.iter().filter(|(_, p)| p.last_ok.elapsed() > timeout).map(|(id, _)| id.clone()).collect();
        for resource_id in silent {
            let reason = format!("The heartbeat of TaskManager with id {resource_id} timed out.");
            self.task_manager_lost(ctx, &resource_id, reason);
        }
        let job_id = self.job_id;
        let due: Vec<(ResourceId, TaskExecutorGateway)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.in_flight)
            .filter_map(|(id, _)| {
                self.slots.iter().flatten().find(|s| &s.resource_id == id).map(|s| (id.clone(), s.gateway.clone()))
            })
            .collect();
        for (resource_id, gateway) in due {
            if let Some(peer) = self.peers.get_mut(&resource_id) {
                peer.in_flight = true;
            }
            let fut = gateway.heartbeat_from_job_manager(job_id);
            ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                let threshold = act.heartbeat.rpc_failure_threshold;
                let Some(peer) = act.peers.get_mut(&resource_id) else { return };
                peer.in_flight = false;
                match result {
                    Ok(_) => {
                        peer.last_ok = std::time::Instant::now();
                        peer.failures = 0;
                    }
                    Err(e @ (flint_common::rpc::RpcError::Unreachable { .. }
                    | flint_common::rpc::RpcError::ConnectionLost { .. })) => {
                        peer.failures += 1;
                        if threshold > 0 && peer.failures >= threshold {
                            let reason = format!(
                                "TaskManager with id {resource_id} is unreachable: {threshold} consecutive heartbeats failed ({e})"
                            );
                            act.task_manager_lost(ctx, &resource_id, reason);
                        }
                    }
                    Err(_) => {}
                }
            }));
        }
    }

    /// A TaskExecutor of this job is gone: its slots are gone and its tasks failed.
    fn task_manager_lost(&mut self, ctx: &mut Context<Self>, resource_id: &ResourceId, reason: String) {
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
            self.apply_update(ctx, attempt_id, state, Some(TaskFailure::retryable(reason.clone())), None);
        }
    }

    /// The slots of `round` did not all come in time: unless that round is over, the job
    /// fails as Flink's does.
    fn slot_timeout(&mut self, ctx: &mut Context<Self>, round: u64) {
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
        Arc::make_mut(&mut self.graph).failure_cause = Some(cause);
        let _ = Arc::make_mut(&mut self.graph).transition(JobStatus::Failing, epoch_ms());
        self.cancel_executions(ctx);
    }
}

impl Actor for JobMaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.fencing.set(Some(self.session));
        let addr = ctx.address();
        self.rpc.register_endpoint(
            Endpoint::new(Self::endpoint_name(self.job_id))
                .fenced(self.fencing.clone())
                .on_actor::<IdentifyLeader, _>(addr.clone())
                .on_actor::<OfferSlots, _>(addr.clone())
                .on_actor::<AcknowledgeCheckpoint, _>(addr.clone())
                .on_actor::<DeclineCheckpoint, _>(addr.clone())
                .on_actor::<NotifySlotRequestFailed, _>(addr.clone())
                .on_actor::<UpdateTaskExecutionState, _>(addr),
        );
        let now = epoch_ms();
        if let Err(e) = Arc::make_mut(&mut self.graph).transition(JobStatus::Running, now) {
            warn!(job_id = %self.job_id, error = %e, "cannot start job");
            return;
        }
        let invalid = match (&self.restart, &self.checkpointing) {
            (Err(e), _) => Some(format!("invalid restart strategy configuration: {e}")),
            (_, Err(e)) => Some(format!("invalid checkpoint configuration: {e}")),
            _ => None,
        };
        if let Some(cause) = invalid {
            self.record_exception(cause.clone(), None, None);
            Arc::make_mut(&mut self.graph).failure_cause = Some(cause);
            let _ = Arc::make_mut(&mut self.graph).transition(JobStatus::Failed, now);
            self.phase = Phase::Terminated;
            self.terminate(ctx);
            return;
        }
        Arc::make_mut(&mut self.graph).transition_all(ExecutionState::Created, ExecutionState::Scheduled, now);
        for index in 0..self.slots.len() {
            self.pending.insert(AllocationId::generate(), index);
        }
        info!(job_id = %self.job_id, name = %self.job_graph.name, slots = self.slots.len(), "job master started");
        self.request_slots(ctx);
        self.arm_slot_timeout(ctx);
        ctx.run_interval(self.heartbeat.interval, |act, ctx| act.heartbeat_round(ctx));
        if let Ok(c) = &self.checkpointing {
            let tick = c.settings.config.as_ref().map_or(Duration::from_millis(100), |cfg| {
                (cfg.interval / 4).clamp(Duration::from_millis(10), Duration::from_millis(100))
            });
            ctx.run_interval(tick, |act, ctx| act.checkpoint_tick(ctx));
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.fencing.set(None);
        self.rpc.unregister_endpoint(&Self::endpoint_name(self.job_id));
    }
}

impl Handler<IdentifyLeader> for JobMaster {
    type Result = MessageResult<IdentifyLeader>;
    fn handle(&mut self, _: IdentifyLeader, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(LeaderInfo { leader_session_id: Some(self.session), protocol_version: PROTOCOL_VERSION })
    }
}

impl Handler<OfferSlots> for JobMaster {
    type Result = MessageResult<OfferSlots>;
    fn handle(&mut self, msg: OfferSlots, ctx: &mut Context<Self>) -> Self::Result {
        let mut accepted = Vec::new();
        let host = msg.data_address.rsplit_once(':').map_or(msg.data_address.as_str(), |(h, _)| h).to_string();
        for offer in &msg.slots {
            let Some(index) = self.pending.remove(&offer.allocation_id) else { continue };
            let gateway =
                TaskExecutorGateway(RemoteEndpoint::new(self.rpc.clone(), msg.task_executor.clone(), self.ask_timeout));
            self.peers.entry(msg.resource_id.clone()).or_insert(Peer {
                last_ok: std::time::Instant::now(),
                failures: 0,
                in_flight: false,
            });
            self.slots[index] = Some(HeldSlot {
                allocation_id: offer.allocation_id,
                resource_id: msg.resource_id.clone(),
                gateway,
                host: host.clone(),
                data_address: msg.data_address.clone(),
            });
            accepted.push(offer.allocation_id);
        }
        debug!(job_id = %self.job_id, accepted = accepted.len(), from = %msg.resource_id, "slots offered");
        let awaiting = matches!(self.phase, Phase::AwaitingSlots { .. });
        if awaiting
            && self.graph.status == JobStatus::Running
            && self.slots.iter().all(Option::is_some)
            && self.advance(Event::AllSlotsHeld) == Step::Deploy
        {
            self.deploy(ctx);
        }
        MessageResult(accepted)
    }
}

impl Handler<UpdateTaskExecutionState> for JobMaster {
    type Result = bool;
    fn handle(&mut self, msg: UpdateTaskExecutionState, ctx: &mut Context<Self>) -> bool {
        let state = match msg.state {
            TaskState::Initializing => ExecutionState::Initializing,
            TaskState::Running => ExecutionState::Running,
            TaskState::Finished => ExecutionState::Finished,
            TaskState::Canceled => ExecutionState::Canceled,
            TaskState::Failed => ExecutionState::Failed,
        };
        let m = msg.metrics;
        let metrics = IoMetrics {
            read_records: m.read_records,
            write_records: m.write_records,
            read_bytes: m.read_bytes,
            write_bytes: m.write_bytes,
            sink_records: m.sink_records,
        };
        if let Some(index) = self.graph.locate(msg.attempt_id) {
            if !msg.accumulators.is_empty() {
                self.accumulators.insert(index, msg.accumulators);
            }
            if state == ExecutionState::Finished {
                self.final_commits.extend(msg.commits);
            }
        }
        self.apply_update(ctx, msg.attempt_id, state, msg.failure, Some(metrics))
    }
}

/// ResourceManager → JobMaster: a slot request failed. A timeout (the one slot timeout,
/// the SlotManager's `slot.request.timeout`) fails the job as Flink does; a lost allocation
/// of a held slot is the loss of that slot's TaskExecutor.
impl Handler<NotifySlotRequestFailed> for JobMaster {
    type Result = ();
    fn handle(&mut self, msg: NotifySlotRequestFailed, ctx: &mut Context<Self>) {
        if msg.job_id != self.job_id {
            return;
        }
        match msg.failure {
            SlotRequestFailure::TimedOut { message } => {
                if self.pending.contains_key(&msg.allocation_id) {
                    debug!(job_id = %self.job_id, allocation_id = %msg.allocation_id, message, "slot request timed out");
                    self.slot_timeout(ctx, self.phase.round());
                }
            }
            SlotRequestFailure::AllocationLost { message } => {
                let lost = self
                    .slots
                    .iter()
                    .flatten()
                    .find(|s| s.allocation_id == msg.allocation_id)
                    .map(|s| s.resource_id.clone());
                if let Some(resource_id) = lost {
                    self.task_manager_lost(ctx, &resource_id, message);
                }
            }
        }
    }
}

/// Dispatcher → JobMaster: cancel the job.
#[derive(Message)]
#[rtype(result = "Result<(), JobStatus>")]
pub struct CancelJob;

impl Handler<CancelJob> for JobMaster {
    type Result = Result<(), JobStatus>;
    fn handle(&mut self, _: CancelJob, ctx: &mut Context<Self>) -> Self::Result {
        self.cancel_job(ctx)
    }
}

/// Dispatcher → JobMaster: the Dispatcher lost leadership. The job stops here without
/// reaching a terminal state (its graph and checkpoints stay for the new leader): tasks are
/// canceled best effort, slots freed, nothing is reported.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Suspend;

impl Handler<Suspend> for JobMaster {
    type Result = ();
    fn handle(&mut self, _: Suspend, ctx: &mut Context<Self>) {
        info!(job_id = %self.job_id, "job master suspended");
        self.fencing.set(None);
        self.cancel_pending_slot_requests();
        for (_, subtask) in self.graph.executions() {
            let attempt = subtask.current.attempt_id;
            if subtask.current.state.is_terminal() {
                continue;
            }
            if let Some(gateway) = self.gateway_of(attempt) {
                let fut = gateway.cancel_task(attempt);
                actix::spawn(async move {
                    let _ = fut.await;
                });
            }
        }
        for slot in self.slots.iter_mut().filter_map(Option::take) {
            let fut = slot.gateway.free_slot(slot.allocation_id, "the job master lost leadership");
            actix::spawn(async move {
                let _ = fut.await;
            });
        }
        ctx.stop();
    }
}

/// Dispatcher → JobMaster: a copy of the job's state for the REST API.
#[derive(Message)]
#[rtype(result = "JobSnapshot")]
pub struct GetSnapshot;

impl Handler<GetSnapshot> for JobMaster {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

// ---------------------------------------------------------------------------------------
// Checkpoints and savepoints
// ---------------------------------------------------------------------------------------

/// Where checkpoints go when checkpointing is on but `state.checkpoints.dir` is not set.
fn default_checkpoints_dir() -> String {
    std::env::temp_dir().join("flint-checkpoints").to_string_lossy().into_owned()
}

impl Checkpointing {
    fn new(
        job_id: JobId,
        job_graph: &JobGraph,
        config: &DispatcherConfig,
        restore: Option<SavepointRestore>,
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
        let retained = coordinator_config.retained as usize;
        let mut coordinator = CheckpointCoordinator::new(coordinator_config, config.ha.checkpoint_id_counter(job_id));
        let submitted_restore = restore.is_some();
        if let Some(r) = restore {
            let info = CompletedCheckpointInfo {
                id: r.checkpoint_id,
                location: r.location,
                completed_at_ms: epoch_ms(),
                size_bytes: 0,
                is_savepoint: r.is_savepoint,
            };
            coordinator.restore_from(info, Instant::now())?;
        }
        Ok(Self {
            coordinator,
            settings: CheckpointSettings { config: periodic, checkpoints_dir, savepoints_dir, retention },
            storage,
            directories: BTreeMap::new(),
            operations: BTreeMap::new(),
            quiet_savepoints: Default::default(),
            submitted_restore,
            store: config.ha.completed_checkpoint_store(job_id, retained),
        })
    }
}

/// Dispatcher → JobMaster: take a savepoint / stop with savepoint / checkpoint now; the
/// answer comes when it completed or failed.
#[derive(Message)]
#[rtype(result = "Result<OperationResult, String>")]
pub struct RunOperation(pub SavepointOperation);

impl Handler<RunOperation> for JobMaster {
    type Result = ResponseFuture<Result<OperationResult, String>>;
    fn handle(&mut self, msg: RunOperation, ctx: &mut Context<Self>) -> Self::Result {
        let started = self.start_operation(ctx, msg.0);
        Box::pin(async move {
            match started {
                Ok(reply) => reply
                    .await
                    .unwrap_or_else(|_| Err("the job master stopped before the operation completed".to_string())),
                Err(e) => Err(e),
            }
        })
    }
}

impl Handler<AcknowledgeCheckpoint> for JobMaster {
    type Result = ();
    fn handle(&mut self, msg: AcknowledgeCheckpoint, ctx: &mut Context<Self>) {
        let Ok(c) = &mut self.checkpointing else { return };
        let state = AckState {
            handle: msg.state.file.unwrap_or_default(),
            size_bytes: msg.state.size_bytes,
            alignment_ms: msg.state.alignment_ms,
            duration_ms: msg.state.duration_ms,
        };
        let actions = c.coordinator.on_ack(msg.checkpoint_id, msg.attempt_id, state, Instant::now());
        self.perform(ctx, actions);
    }
}

impl Handler<DeclineCheckpoint> for JobMaster {
    type Result = ();
    fn handle(&mut self, msg: DeclineCheckpoint, ctx: &mut Context<Self>) {
        let Ok(c) = &mut self.checkpointing else { return };
        debug!(job_id = %self.job_id, checkpoint = msg.checkpoint_id, reason = %msg.reason, "checkpoint declined");
        let now = Instant::now();
        let actions = if msg.uncounted {
            c.coordinator.on_decline_uncounted(msg.checkpoint_id, msg.attempt_id, &msg.reason, now)
        } else {
            c.coordinator.on_decline(msg.checkpoint_id, msg.attempt_id, &msg.reason, now)
        };
        self.perform(ctx, actions);
    }
}

impl JobMaster {
    /// The tasks a checkpoint needs (all of them, only when every one runs) and the source
    /// tasks it is triggered at.
    fn checkpoint_tasks(&self) -> (Vec<ExecutionAttemptId>, Vec<ExecutionAttemptId>) {
        let all_running = self.graph.status == JobStatus::Running
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

    fn gateway_of(&self, attempt: ExecutionAttemptId) -> Option<TaskExecutorGateway> {
        let allocation = self.graph.execution(attempt)?.assignment.as_ref()?.allocation_id;
        self.slots.iter().flatten().find(|s| s.allocation_id == allocation).map(|s| s.gateway.clone())
    }

    fn checkpoint_tick(&mut self, ctx: &mut Context<Self>) {
        let (running, sources) = self.checkpoint_tasks();
        let Ok(c) = &mut self.checkpointing else { return };
        let actions = c.coordinator.on_tick(Instant::now(), &running, &sources);
        self.perform(ctx, actions);
    }

    fn start_operation(
        &mut self,
        ctx: &mut Context<Self>,
        operation: SavepointOperation,
    ) -> Result<oneshot::Receiver<Result<OperationResult, String>>, String> {
        let (running, sources) = self.checkpoint_tasks();
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
        let (id, actions) =
            c.coordinator.trigger_now(Instant::now(), kind, &running, &sources).map_err(|e| e.to_string())?;
        let (reply, receiver) = oneshot::channel();
        info!(job_id = %self.job_id, checkpoint = id, ?operation, "operation triggered");
        c.operations.insert(id, PendingOperation { operation, reply });
        self.perform(ctx, actions);
        Ok(receiver)
    }

    /// Carries out what the coordinator asked for (which may ask for more).
    fn perform(&mut self, ctx: &mut Context<Self>, actions: Vec<CheckpointAction>) {
        let mut queue: std::collections::VecDeque<CheckpointAction> = actions.into();
        while let Some(action) = queue.pop_front() {
            let more = match action {
                CheckpointAction::Trigger { checkpoint_id, timestamp_ms, kind, tasks } => {
                    self.send_trigger(ctx, checkpoint_id, timestamp_ms, &kind, tasks)
                }
                CheckpointAction::WriteMetadata { checkpoint_id, kind, handles } => {
                    self.write_metadata(ctx, checkpoint_id, &kind, handles)
                }
                CheckpointAction::Completed { checkpoint_id, info } => {
                    self.checkpoint_completed(ctx, checkpoint_id, &info);
                    Vec::new()
                }
                CheckpointAction::NotifyComplete { checkpoint_id, tasks } => {
                    let savepoint =
                        self.checkpointing.as_mut().is_ok_and(|c| c.quiet_savepoints.remove(&checkpoint_id));
                    if !savepoint {
                        self.notify_tasks(ctx, checkpoint_id, tasks, true);
                    }
                    Vec::new()
                }
                CheckpointAction::NotifyAborted { checkpoint_id, tasks } => {
                    self.notify_tasks(ctx, checkpoint_id, tasks, false);
                    Vec::new()
                }
                CheckpointAction::Abort { checkpoint_id, reason } => {
                    self.checkpoint_aborted(checkpoint_id, reason);
                    Vec::new()
                }
                CheckpointAction::Discard { checkpoint_id, location, handles } => {
                    discard_files(&self.files, checkpoint_id, location.as_deref(), &handles);
                    Vec::new()
                }
                CheckpointAction::FailJob { reason } => {
                    self.fail_job(ctx, reason);
                    Vec::new()
                }
            };
            queue.extend(more);
        }
    }

    /// Creates the checkpoint's directory on the blocking pool (never on this thread), then
    /// sends the trigger to the source tasks.
    fn send_trigger(
        &mut self,
        ctx: &mut Context<Self>,
        checkpoint_id: u64,
        timestamp_ms: u64,
        kind: &CheckpointKind,
        tasks: Vec<ExecutionAttemptId>,
    ) -> Vec<CheckpointAction> {
        let Ok(c) = &mut self.checkpointing else { return Vec::new() };
        let job_id = self.job_id;
        let create: Box<dyn FnOnce() -> Result<PathBuf, String> + Send> = match kind {
            CheckpointKind::Savepoint { target } => {
                let target = target.clone();
                Box::new(move || {
                    CheckpointStorage::new(&target).and_then(|s| s.init_savepoint(job_id)).map_err(|e| e.to_string())
                })
            }
            _ => match &c.storage {
                Some(storage) => {
                    let storage = storage.clone();
                    Box::new(move || storage.init_checkpoint(job_id, checkpoint_id).map_err(|e| e.to_string()))
                }
                None => Box::new(|| Err("no checkpoint directory is configured".to_string())),
            },
        };
        let is_savepoint = kind.is_savepoint();
        ctx.spawn(self.files.run(create).into_actor(self).map(move |directory, act, ctx| {
            let Ok(c) = &mut act.checkpointing else { return };
            if !c.coordinator.pending_ids().contains(&checkpoint_id) {
                // Aborted meanwhile (failover, timeout, job end): nothing is triggered, and
                // the directory just made goes.
                if let Ok(dir) = directory {
                    discard_files(&act.files, checkpoint_id, Some(&dir.to_string_lossy()), &[]);
                }
                return;
            }
            let directory = match directory {
                Ok(d) => d,
                Err(e) => {
                    let reason = format!("could not create the checkpoint directory: {e}");
                    let Some(first) = tasks.first() else { return };
                    let actions = c.coordinator.on_decline(checkpoint_id, *first, &reason, Instant::now());
                    act.perform(ctx, actions);
                    return;
                }
            };
            let (terminate, drain) = match c.operations.get(&checkpoint_id).map(|o| &o.operation) {
                Some(SavepointOperation::Stop { drain, .. }) => (true, *drain),
                _ => (false, false),
            };
            let barrier = CheckpointBarrierInfo {
                checkpoint_id,
                timestamp_ms,
                directory: directory.to_string_lossy().into_owned(),
                is_savepoint,
                terminate,
                drain,
            };
            c.directories.insert(checkpoint_id, directory);
            debug!(job_id = %act.job_id, checkpoint_id, sources = tasks.len(), "triggering checkpoint");
            for attempt in tasks {
                let Some(gateway) = act.gateway_of(attempt) else { continue };
                let fut = gateway.trigger_checkpoint(attempt, barrier.clone());
                ctx.spawn(fut.into_actor(act).map(move |result, act, ctx| {
                    // Not a checkpointing failure: the task finished or is going away (its loss
                    // is handled by the failover).
                    let reason = match result {
                        Ok(true) => return,
                        Ok(false) => "the task is not running".to_string(),
                        Err(e) => format!("could not trigger the task: {e}"),
                    };
                    let Ok(c) = &mut act.checkpointing else { return };
                    let actions = c.coordinator.on_decline_uncounted(checkpoint_id, attempt, &reason, Instant::now());
                    act.perform(ctx, actions);
                }));
            }
        }));
        Vec::new()
    }

    /// Every task acknowledged: `_metadata` lists each operator's state per subtask. A
    /// checkpoint (not a savepoint) is complete only once it is also in the HA completed
    /// checkpoint store: before that no task is told (no sink commits) and no older checkpoint
    /// is discarded, so a new leader never resumes from less than what was committed.
    fn write_metadata(
        &mut self,
        ctx: &mut Context<Self>,
        checkpoint_id: u64,
        kind: &CheckpointKind,
        handles: Vec<(ExecutionAttemptId, String)>,
    ) -> Vec<CheckpointAction> {
        let now = Instant::now();
        let (job_id, max_parallelism) = (self.job_id, self.job_graph.max_parallelism);
        let Ok(c) = &mut self.checkpointing else { return Vec::new() };
        let Some(directory) = c.directories.get(&checkpoint_id).cloned() else {
            return c.coordinator.on_metadata_failed(checkpoint_id, "the checkpoint directory is unknown", now);
        };
        // The entries are built here (they need the graph); the state files' sizes are read,
        // and `_metadata` written and synced, on the blocking pool.
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
        let is_savepoint = kind.is_savepoint();
        let write = move || {
            let mut metadata = CheckpointMetadata::new(job_id, checkpoint_id, epoch_ms(), is_savepoint);
            for (mut entry, state) in entries {
                if let Some(path) = state {
                    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    entry.handles.push(StateHandle { path: name, size });
                }
                metadata.operators.push(entry);
            }
            storage::write_metadata_in(&directory, &metadata)
                .map(|pointer| pointer.location.to_string_lossy().into_owned())
                .map_err(|e| e.to_string())
        };
        ctx.spawn(self.files.run(write).into_actor(self).map(move |written, act, ctx| {
            let Ok(c) = &mut act.checkpointing else { return };
            let now = Instant::now();
            let location = match written {
                Ok(location) => location,
                Err(e) => {
                    let actions = c.coordinator.on_metadata_failed(checkpoint_id, &e, now);
                    act.perform(ctx, actions);
                    return;
                }
            };
            if is_savepoint {
                c.directories.remove(&checkpoint_id);
                let actions = c.coordinator.on_metadata_written(checkpoint_id, location, now);
                act.perform(ctx, actions);
                return;
            }
            let handle = SavepointRestore { checkpoint_id, location: location.clone(), is_savepoint: false };
            let add = c.store.add(checkpoint_id, serde_json::to_vec(&handle).unwrap_or_default());
            ctx.spawn(add.into_actor(act).map(move |result, act, ctx| {
                let Ok(c) = &mut act.checkpointing else { return };
                let now = Instant::now();
                let actions = match result {
                    Ok(_) => {
                        c.directories.remove(&checkpoint_id);
                        c.coordinator.on_metadata_written(checkpoint_id, location, now)
                    }
                    Err(e) => {
                        let reason = format!("could not add the checkpoint to the completed checkpoint store: {e}");
                        c.coordinator.on_metadata_failed(checkpoint_id, &reason, now)
                    }
                };
                act.perform(ctx, actions);
            }));
        }));
        Vec::new()
    }

    fn checkpoint_completed(&mut self, ctx: &mut Context<Self>, checkpoint_id: u64, info: &CompletedCheckpointInfo) {
        debug!(job_id = %self.job_id, checkpoint_id, location = %info.location, "checkpoint completed");
        let Ok(c) = &mut self.checkpointing else { return };
        let stop =
            matches!(c.operations.get(&checkpoint_id).map(|o| &o.operation), Some(SavepointOperation::Stop { .. }));
        if info.is_savepoint && !stop {
            c.quiet_savepoints.insert(checkpoint_id);
        }
        let Some(pending) = c.operations.remove(&checkpoint_id) else { return };
        let result = match pending.operation {
            SavepointOperation::Checkpoint => OperationResult::Checkpoint { checkpoint_id },
            _ => OperationResult::Savepoint { location: info.location.clone() },
        };
        info!(job_id = %self.job_id, checkpoint_id, ?result, "operation completed");
        let _ = pending.reply.send(Ok(result));
        if let SavepointOperation::Savepoint { cancel_job: true, .. } = pending.operation {
            let _ = self.cancel_job(ctx);
        }
    }

    fn checkpoint_aborted(&mut self, checkpoint_id: u64, reason: String) {
        let Ok(c) = &mut self.checkpointing else { return };
        if let Some(dir) = c.directories.remove(&checkpoint_id) {
            discard_files(&self.files, checkpoint_id, Some(&dir.to_string_lossy()), &[]);
        }
        if let Some(pending) = c.operations.remove(&checkpoint_id) {
            warn!(job_id = %self.job_id, checkpoint_id, reason, "operation failed");
            let _ = pending.reply.send(Err(reason));
        } else if reason != crate::checkpoint_coordinator::JOB_RESTARTING {
            info!(job_id = %self.job_id, checkpoint_id, reason, "checkpoint aborted");
        }
    }

    fn notify_tasks(
        &mut self,
        ctx: &mut Context<Self>,
        checkpoint_id: u64,
        tasks: Vec<ExecutionAttemptId>,
        completed: bool,
    ) {
        for attempt in tasks {
            let Some(gateway) = self.gateway_of(attempt) else { continue };
            let fut = gateway.notify_checkpoint(attempt, checkpoint_id, completed);
            ctx.spawn(fut.into_actor(self).map(move |result, _act, _ctx| {
                if let Err(e) = result {
                    debug!(checkpoint_id, attempt = %attempt, error = %e, "could not notify task of checkpoint");
                }
            }));
        }
    }

    /// Pending checkpoints are given up when the job fails over.
    fn abort_checkpoints_for_failover(&mut self, ctx: &mut Context<Self>) {
        let Ok(c) = &mut self.checkpointing else { return };
        let actions = c.coordinator.on_job_restart(Instant::now());
        self.perform(ctx, actions);
    }

    /// The job reached a terminal state: nothing more is triggered; retained checkpoints are
    /// deleted unless `externalized-checkpoint-retention` keeps them for this outcome.
    fn shutdown_checkpointing(&mut self, ctx: &mut Context<Self>) {
        let status = self.graph.status;
        let job_id = self.job_id;
        let Ok(c) = &mut self.checkpointing else { return };
        let actions = c.coordinator.shutdown(Instant::now());
        let keep = c.settings.retention.keeps(status);
        let owned: Vec<String> = match &c.storage {
            Some(storage) => {
                let job_dir = storage.job_dir(job_id);
                c.coordinator
                    .retained_checkpoints()
                    .into_iter()
                    .filter(|info| !info.is_savepoint && Path::new(&info.location).starts_with(&job_dir))
                    .map(|info| info.location.clone())
                    .collect()
            }
            None => Vec::new(),
        };
        let job_dir = c.storage.as_ref().map(|s| s.job_dir(job_id));
        self.perform(ctx, actions);
        if !keep {
            self.files.push(Box::new(move || {
                for location in owned {
                    discard_files_now(0, Some(&location), &[]);
                }
                if let Some(dir) = job_dir {
                    let _ = std::fs::remove_dir(dir); // only when empty
                }
            }));
        }
    }

    /// The job finished: output that finished tasks left uncommitted becomes visible (on the
    /// blocking pool, after the job's other file work), then the JobMaster terminates.
    fn commit_final_output(&mut self, ctx: &mut Context<Self>) {
        let commits = std::mem::take(&mut self.final_commits);
        if commits.is_empty() {
            self.finished(ctx);
            return;
        }
        let commit = move || Ok(commits.iter().filter_map(|c| c.apply().err().map(|e| e.to_string())).collect());
        ctx.spawn(self.files.run(commit).into_actor(self).map(|errors: Result<Vec<String>, String>, act, ctx| {
            for error in errors.unwrap_or_else(|e| vec![e]) {
                warn!(job_id = %act.job_id, error, "could not commit output");
                act.record_exception(error, None, None);
            }
            act.finished(ctx);
        }));
    }

    /// The output is committed: the job is FINISHED.
    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.advance(Event::Committed);
        if let Err(e) = Arc::make_mut(&mut self.graph).transition(JobStatus::Finished, epoch_ms()) {
            warn!(job_id = %self.job_id, error = %e, "job status");
        }
        info!(job_id = %self.job_id, "job finished");
        self.terminate(ctx);
    }

    /// A failure of the whole job (e.g. too many failed checkpoints): the restart strategy
    /// decides as for a task failure.
    fn fail_job(&mut self, ctx: &mut Context<Self>, cause: String) {
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
                Arc::make_mut(&mut self.graph).failure_cause = Some(cause);
                None
            }
        };
        if self.advance(Event::Failed { restart }) != Step::CancelTasks {
            return;
        }
        let _ = Arc::make_mut(&mut self.graph).transition(JobStatus::Failing, epoch_ms());
        self.abort_checkpoints_for_failover(ctx);
        self.cancel_executions(ctx);
    }

    fn cancel_job(&mut self, ctx: &mut Context<Self>) -> Result<(), JobStatus> {
        if self.phase == Phase::Committing {
            // Every task finished; the job is FINISHED once its output is committed.
            return Ok(());
        }
        if self.graph.status.is_globally_terminal() || self.graph.status == JobStatus::Cancelling {
            return Err(self.graph.status);
        }
        Arc::make_mut(&mut self.graph).transition(JobStatus::Cancelling, epoch_ms()).map_err(|_| self.graph.status)?;
        info!(job_id = %self.job_id, "canceling job");
        self.advance(Event::Cancel);
        self.cancel_executions(ctx);
        Ok(())
    }
}

/// Appends `item`, dropping the oldest entries beyond `cap` (at least one is kept).
fn push_capped<T>(queue: &mut std::collections::VecDeque<T>, item: T, cap: usize) {
    queue.push_back(item);
    while queue.len() > cap.max(1) {
        queue.pop_front();
    }
}

type FileWork = Box<dyn FnOnce() + Send>;

/// A JobMaster's file work (directories, `_metadata` with its fsyncs, discards, output
/// commits), run in order on the blocking pool so that the control thread, shared by the
/// Dispatcher and every JobMaster, never waits for a disk. One blocking task drains the
/// queue while it is not empty. The queue holds at most what the job's checkpoints in
/// flight (bounded by the coordinator) and its end need.
#[derive(Clone, Default)]
struct FileQueue {
    inner: std::sync::Arc<std::sync::Mutex<(std::collections::VecDeque<FileWork>, bool)>>,
}

impl FileQueue {
    /// Queues `work`; its result arrives when it and everything queued before it ran.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, String>> {
        let (tx, rx) = oneshot::channel();
        self.push(Box::new(move || {
            let _ = tx.send(work());
        }));
        async move { rx.await.unwrap_or_else(|_| Err("the file operation did not complete".to_string())) }
    }

    fn push(&self, work: FileWork) {
        let start = {
            let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            state.0.push_back(work);
            !std::mem::replace(&mut state.1, true)
        };
        if start {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || loop {
                let next = {
                    let mut state = inner.lock().unwrap_or_else(|e| e.into_inner());
                    let next = state.0.pop_front();
                    state.1 = next.is_some();
                    next
                };
                match next {
                    Some(work) => work(),
                    None => break,
                }
            });
        }
    }
}

/// Deletes a checkpoint directory (`location`) and/or state files (`handles`, absolute), in
/// order with the job's other file work.
fn discard_files(files: &FileQueue, checkpoint_id: u64, location: Option<&str>, handles: &[String]) {
    let (location, handles) = (location.map(str::to_owned), handles.to_vec());
    files.push(Box::new(move || discard_files_now(checkpoint_id, location.as_deref(), &handles)));
}

fn discard_files_now(checkpoint_id: u64, location: Option<&str>, handles: &[String]) {
    if let Some(location) = location {
        if let Err(e) = storage::discard(Path::new(location)) {
            warn!(checkpoint_id, location, error = %e, "could not discard checkpoint");
        }
    }
    for handle in handles.iter().filter(|h| !h.is_empty()) {
        match std::fs::remove_file(handle) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(checkpoint_id, handle, error = %e, "could not delete state file"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exception_history_keeps_the_newest_entries_up_to_its_size() {
        let mut history = std::collections::VecDeque::new();
        for i in 0..1000 {
            push_capped(&mut history, i, 16);
        }
        assert_eq!(history.len(), 16);
        assert_eq!(history.front(), Some(&984));
        assert_eq!(history.back(), Some(&999));
        push_capped(&mut history, 1000, 0);
        assert_eq!(history.into_iter().collect::<Vec<_>>(), [1000]);
    }

    #[actix_rt::test]
    async fn file_work_runs_in_order_off_the_calling_thread() {
        let files = FileQueue::default();
        let caller = std::thread::current().id();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut replies = Vec::new();
        for i in 0..50 {
            let order = order.clone();
            replies.push(files.run(move || {
                std::thread::sleep(Duration::from_micros(100));
                order.lock().unwrap().push(i);
                Ok(std::thread::current().id())
            }));
        }
        for reply in replies {
            assert_ne!(reply.await.unwrap(), caller);
        }
        assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>());
        let failed: Result<(), String> = files.run(|| Err("disk full".into())).await;
        assert_eq!(failed, Err("disk full".to_string()));
    }
}
