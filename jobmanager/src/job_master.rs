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
//! Not yet here (later issues): restarts after failures, heartbeats with the
//! TaskExecutors, checkpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use flint_common::ids::{AllocationId, ExecutionAttemptId, JobId, LeaderSessionId, ResourceId};
use flint_common::job::plan::JobGraph;
use flint_common::messages::*;
use flint_common::process::epoch_ms;
use flint_common::resources::ResourceProfile;
use flint_common::rpc::{Endpoint, FencingToken, RpcAddress, RpcService, PROTOCOL_VERSION};
use tracing::{debug, info, warn};

use crate::dispatcher::{Dispatcher, DispatcherConfig, JobTerminated};
use crate::execution_graph::{ExecutionGraph, ExecutionState, IoMetrics, JobStatus, SlotAssignment, UpdateOutcome};
use crate::restart::{RestartBackoff, RestartDecision, RestartStrategyConfig};

/// A failure recorded for `/jobs/:id/exceptions`.
#[derive(Clone, Debug)]
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

/// What the REST API sees of a job: its plan and a copy of its ExecutionGraph.
#[derive(Clone)]
pub struct JobSnapshot {
    pub restart_strategy: String,
    pub num_restarts: u32,
    pub graph: ExecutionGraph,
    pub job_graph: JobGraph,
    pub exceptions: Vec<ExceptionEntry>,
}

pub struct JobMaster {
    job_id: JobId,
    job_graph: JobGraph,
    graph: ExecutionGraph,
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
    exceptions: Vec<ExceptionEntry>,
    deployed: bool,
    heartbeat: HeartbeatSettings,
    /// TaskExecutors holding slots of this job.
    peers: BTreeMap<ResourceId, Peer>,
    /// The restart strategy (an invalid configuration fails the job at start).
    restart: Result<RestartBackoff, String>,
    restart_description: String,
    /// Set when a failure was decided to be restarted: the delay before redeploying.
    pending_restart: Option<Duration>,
}

impl JobMaster {
    pub fn new(
        job_id: JobId,
        job_graph: JobGraph,
        rpc: RpcService,
        dispatcher: Addr<Dispatcher>,
        config: &DispatcherConfig,
    ) -> Self {
        let graph = ExecutionGraph::new(job_id, &job_graph, epoch_ms());
        let checkpointing = job_graph.config.contains_key("execution.checkpointing.interval")
            || config.cluster.contains("execution.checkpointing.interval");
        let strategy = RestartStrategyConfig::from_config(&job_graph.config, &config.cluster, checkpointing);
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
            exceptions: Vec::new(),
            deployed: false,
            heartbeat: config.heartbeat,
            peers: BTreeMap::new(),
            restart,
            restart_description,
            pending_restart: None,
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
            exceptions: self.exceptions.clone(),
        }
    }

    fn record_exception(&mut self, exception: String, task_name: Option<String>, location: Option<String>) {
        self.exceptions.push(ExceptionEntry { timestamp_ms: epoch_ms(), exception, task_name, location });
    }

    /// Asks the ResourceManager (after learning its session) for every slot still missing.
    fn request_slots(&mut self, ctx: &mut Context<Self>) {
        let requests: Vec<RequestSlot> = self
            .pending
            .keys()
            .map(|allocation_id| RequestSlot {
                job_id: self.job_id,
                allocation_id: *allocation_id,
                profile: ResourceProfile::ANY,
                job_master: self.address(),
            })
            .collect();
        let rm = self.resource_manager.clone();
        let fut = async move {
            let info = ResourceManagerGateway(rm.clone()).identify().await.map_err(|e| e.to_string())?;
            let Some(session) = info.leader_session_id else {
                return Err("the resource manager has no leader".to_string());
            };
            let gateway = ResourceManagerGateway(rm.with_token(Some(session)));
            for request in &requests {
                gateway.request_slot(request).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            }
            Ok(())
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
        self.deployed = true;
        let now = epoch_ms();
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
                };
                let assignment = SlotAssignment {
                    allocation_id: slot.allocation_id,
                    resource_id: slot.resource_id.clone(),
                    host: slot.host.clone(),
                    data_address: slot.data_address.clone(),
                };
                let _ = self.graph.assign(attempt_id, assignment);
                let task_name = format!("{} ({}/{})", vertex.name, subtask + 1, vertex.parallelism);
                submissions.push((attempt_id, task_name, slot, tdd));
            }
        }
        self.graph.transition_all(ExecutionState::Scheduled, ExecutionState::Deploying, now);
        info!(job_id = %self.job_id, tasks = submissions.len(), "deploying tasks");
        for (attempt_id, task_name, slot, tdd) in submissions {
            let fut = slot.gateway.submit_task(tdd);
            ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                let (error, unreachable) = match result {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => (e, false),
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
                    act.apply_update(ctx, attempt_id, ExecutionState::Failed, Some(cause), None);
                }
            }));
        }
    }

    fn apply_update(
        &mut self,
        ctx: &mut Context<Self>,
        attempt_id: ExecutionAttemptId,
        state: ExecutionState,
        failure: Option<String>,
        metrics: Option<IoMetrics>,
    ) -> bool {
        if let Some(m) = metrics {
            self.graph.update_metrics(attempt_id, m);
        }
        let location =
            self.graph.execution(attempt_id).and_then(|e| e.assignment.as_ref()).map(|a| a.resource_id.to_string());
        match self.graph.update_execution(attempt_id, state, failure, epoch_ms()) {
            Ok(UpdateOutcome::None) => {}
            Ok(UpdateOutcome::JobFinished) => {
                info!(job_id = %self.job_id, "job finished");
                self.terminate(ctx);
            }
            Ok(UpdateOutcome::TaskFailed { vertex, subtask, cause }) => {
                let parallelism = self.graph.vertices.iter().find(|v| v.name == vertex).map_or(1, |v| v.parallelism);
                self.record_exception(
                    cause.clone(),
                    Some(format!("{vertex} ({}/{parallelism})", subtask + 1)),
                    location,
                );
                let decision = match &mut self.restart {
                    Ok(backoff) => backoff.on_failure(std::time::Instant::now()),
                    Err(e) => RestartDecision::Fail { reason: e.clone() },
                };
                match decision {
                    RestartDecision::Restart { delay } => {
                        warn!(job_id = %self.job_id, vertex, subtask, cause, delay_ms = delay.as_millis() as u64, "task failed; restarting the job");
                        self.pending_restart = Some(delay);
                    }
                    RestartDecision::Fail { reason } => {
                        warn!(job_id = %self.job_id, vertex, subtask, cause, reason, "task failed; failing the job");
                    }
                }
                self.cancel_executions(ctx);
            }
            Ok(UpdateOutcome::AllTerminal) => self.all_terminal(ctx),
            Err(e) => {
                warn!(job_id = %self.job_id, error = %e, "refusing state update");
                return false;
            }
        }
        true
    }

    /// Cancels every execution that still runs; ends the job when none is left.
    fn cancel_executions(&mut self, ctx: &mut Context<Self>) {
        let to_cancel = self.graph.begin_cancel(epoch_ms());
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

    fn all_terminal(&mut self, ctx: &mut Context<Self>) {
        if self.graph.status == JobStatus::Failing {
            if let Some(delay) = self.pending_restart.take() {
                if self.graph.transition(JobStatus::Restarting, epoch_ms()).is_ok() {
                    info!(job_id = %self.job_id, delay_ms = delay.as_millis() as u64, "job restarting");
                    ctx.run_later(delay, |act, ctx| act.restart(ctx));
                    return;
                }
            }
        }
        let target = if self.graph.status == JobStatus::Cancelling { JobStatus::Canceled } else { JobStatus::Failed };
        if let Err(e) = self.graph.transition(target, epoch_ms()) {
            warn!(job_id = %self.job_id, error = %e, "job status");
        }
        info!(job_id = %self.job_id, status = %self.graph.status, "job ended");
        self.terminate(ctx);
    }

    /// A global failover: new attempts of every subtask, deployed into the slots still
    /// held; slots lost with their TaskExecutor are requested again.
    fn restart(&mut self, ctx: &mut Context<Self>) {
        if self.graph.status != JobStatus::Restarting {
            return;
        }
        let now = epoch_ms();
        self.graph.reset_for_restart(now);
        if let Err(e) = self.graph.transition(JobStatus::Running, now) {
            warn!(job_id = %self.job_id, error = %e, "cannot restart");
            return;
        }
        self.graph.transition_all(ExecutionState::Created, ExecutionState::Scheduled, now);
        self.deployed = false;
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.is_none() {
                self.pending.insert(AllocationId::generate(), index);
            }
        }
        info!(job_id = %self.job_id, missing_slots = self.pending.len(), "redeploying the job");
        if self.pending.is_empty() {
            self.deploy(ctx);
        } else {
            self.request_slots(ctx);
            ctx.run_later(self.slot_request_timeout, |act, ctx| act.check_slot_timeout(ctx));
        }
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
            self.apply_update(ctx, attempt_id, state, Some(reason.clone()), None);
        }
    }

    fn check_slot_timeout(&mut self, ctx: &mut Context<Self>) {
        if self.deployed || self.graph.status != JobStatus::Running {
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
        self.graph.failure_cause = Some(cause);
        let _ = self.graph.transition(JobStatus::Failing, epoch_ms());
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
                .on_actor::<UpdateTaskExecutionState, _>(addr),
        );
        let now = epoch_ms();
        if let Err(e) = self.graph.transition(JobStatus::Running, now) {
            warn!(job_id = %self.job_id, error = %e, "cannot start job");
            return;
        }
        if let Err(e) = &self.restart {
            let cause = format!("invalid restart strategy configuration: {e}");
            self.record_exception(cause.clone(), None, None);
            self.graph.failure_cause = Some(cause);
            let _ = self.graph.transition(JobStatus::Failed, now);
            self.terminate(ctx);
            return;
        }
        self.graph.transition_all(ExecutionState::Created, ExecutionState::Scheduled, now);
        for index in 0..self.slots.len() {
            self.pending.insert(AllocationId::generate(), index);
        }
        info!(job_id = %self.job_id, name = %self.job_graph.name, slots = self.slots.len(), "job master started");
        self.request_slots(ctx);
        ctx.run_later(self.slot_request_timeout, |act, ctx| act.check_slot_timeout(ctx));
        ctx.run_interval(self.heartbeat.interval, |act, ctx| act.heartbeat_round(ctx));
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
        if !self.deployed && self.graph.status == JobStatus::Running && self.slots.iter().all(Option::is_some) {
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
        self.apply_update(ctx, msg.attempt_id, state, msg.failure, Some(metrics))
    }
}

/// Dispatcher → JobMaster: cancel the job.
#[derive(Message)]
#[rtype(result = "Result<(), JobStatus>")]
pub struct CancelJob;

impl Handler<CancelJob> for JobMaster {
    type Result = Result<(), JobStatus>;
    fn handle(&mut self, _: CancelJob, ctx: &mut Context<Self>) -> Self::Result {
        if self.graph.status.is_globally_terminal() || self.graph.status == JobStatus::Cancelling {
            return Err(self.graph.status);
        }
        info!(job_id = %self.job_id, "canceling job");
        self.graph.transition(JobStatus::Cancelling, epoch_ms()).map_err(|_| self.graph.status)?;
        self.cancel_executions(ctx);
        Ok(())
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
