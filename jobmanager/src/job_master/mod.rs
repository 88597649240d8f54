//! The JobMaster: runs one job.
//!
//! It owns the job's [`ExecutionGraph`](crate::execution_graph::ExecutionGraph) and drives it: asks the ResourceManager for one
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
//! Checkpoints: the [`CheckpointCoordinator`](crate::checkpoint_coordinator::CheckpointCoordinator) (a pure state machine) decides; this actor
//! performs its actions: it creates `chk-<n>` (or a savepoint directory), sends the
//! trigger to the source tasks, collects acknowledgements, writes `_metadata` (listing
//! every operator's state file per subtask, with key-group ranges for keyed operators),
//! notifies the tasks of completions (sinks commit) and discards aborted or subsumed
//! checkpoints. Savepoints, stop-with-savepoint and manual checkpoints come from the
//! Dispatcher ([`RunOperation`]).
//!
//! The actor is thin: [`JobCore`](core::JobCore) decides everything (no I/O, an injected
//! clock, tested alone); this actor feeds it what arrives (RPCs, answers, timers, results of
//! the blocking pool) and carries out the [`Action`]s it returns. It knows nothing of the
//! Dispatcher: it gets its settings as a [`JobMasterConfig`] and reports the job's end to a
//! [`Recipient`] of [`JobTerminated`].

pub mod core;
mod files;
pub mod lifecycle;
mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use flint_common::ha::{CheckpointIdCounter, CompletedCheckpointStore, HaServices};
use flint_common::ids::{JobId, LeaderSessionId};
use flint_common::job::plan::JobGraph;
use flint_common::messages::*;
use flint_common::process::epoch_ms;
use flint_common::resources::ResourceProfile;
use flint_common::rpc::{Endpoint, FencingToken, RpcAddress, RpcError, RpcService, PROTOCOL_VERSION};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use self::core::{Action, CoreConfig, DeployOutcome, HeartbeatOutcome, JobCore, SystemClock, TaskUpdate};
use self::files::FileQueue;
pub use self::types::*;
use crate::checkpoint_coordinator::AckState;
use crate::execution_graph::{ExecutionState, IoMetrics, JobStatus};

/// What a JobMaster needs of the cluster: where the ResourceManager is, timeouts, the
/// cluster configuration and the HA services.
#[derive(Clone)]
pub struct JobMasterConfig {
    pub resource_manager: RemoteEndpoint,
    pub slot_request_timeout: Duration,
    pub ask_timeout: Duration,
    pub heartbeat: HeartbeatSettings,
    /// The cluster configuration (defaults for job settings such as restarts).
    pub cluster: flint_common::config::Configuration,
    /// High availability: job graph, checkpoint and job result stores, checkpoint ids.
    pub ha: Arc<dyn HaServices>,
    /// The BlobServer's store (jobs' blobs are deleted when they end) and `host:port`.
    pub blobs: Option<(Arc<flint_common::blob::BlobStore>, String)>,
}

pub struct JobMaster {
    core: JobCore,
    rpc: RpcService,
    session: LeaderSessionId,
    fencing: FencingToken,
    resource_manager: RemoteEndpoint,
    ask_timeout: Duration,
    /// Where the job's end is reported.
    terminated: Recipient<JobTerminated>,
    /// The HA completed checkpoint store: what a new leader resumes the job from.
    store: CompletedCheckpointStore,
    /// Operations of the Dispatcher waiting for their checkpoint, by operation number.
    operations: BTreeMap<u64, oneshot::Sender<Result<OperationResult, String>>>,
    /// File work, off the control thread.
    files: FileQueue,
    /// The checkpoint id counter (a ZooKeeper round trip per id in HA mode) and its work in
    /// order, off the control thread and not behind the file work.
    ids: Arc<dyn CheckpointIdCounter>,
    id_work: FileQueue,
}

impl JobMaster {
    pub fn new(
        job_id: JobId,
        job_graph: JobGraph,
        rpc: RpcService,
        terminated: Recipient<JobTerminated>,
        config: &JobMasterConfig,
        restore: Option<SavepointRestore>,
    ) -> Self {
        let session = LeaderSessionId::generate();
        let address = rpc.address_of(&Self::endpoint_name(job_id));
        let core_config = CoreConfig {
            cluster: config.cluster.clone(),
            slot_request_timeout: config.slot_request_timeout,
            heartbeat: config.heartbeat,
            blob_server: config.blobs.as_ref().map(|(_, address)| address.clone()),
        };
        let core = JobCore::new(job_id, job_graph, address, session, &core_config, restore, Arc::new(SystemClock));
        let store = config.ha.completed_checkpoint_store(job_id, core.checkpoints_to_retain());
        Self {
            core,
            rpc,
            session,
            fencing: FencingToken::new(),
            resource_manager: config.resource_manager.clone(),
            ask_timeout: config.ask_timeout,
            terminated,
            store,
            operations: BTreeMap::new(),
            files: FileQueue::default(),
            ids: config.ha.checkpoint_id_counter(job_id),
            id_work: FileQueue::default(),
        }
    }

    /// The endpoint name of a job's JobMaster.
    pub fn endpoint_name(job_id: JobId) -> String {
        format!("jobmaster/{job_id}")
    }

    fn job_id(&self) -> JobId {
        self.core.job_id()
    }

    fn task_executor(&self, address: RpcAddress) -> TaskExecutorGateway {
        TaskExecutorGateway(RemoteEndpoint::new(self.rpc.clone(), address, self.ask_timeout))
    }

    /// Carries out the core's actions; their results come back into the core.
    fn run(&mut self, ctx: &mut Context<Self>, actions: Vec<Action>) {
        for action in actions {
            self.carry_out(ctx, action);
        }
    }

    fn carry_out(&mut self, ctx: &mut Context<Self>, action: Action) {
        let job_id = self.job_id();
        match action {
            Action::RequestSlots(allocations) => {
                let request = RequestSlots {
                    job_id,
                    job_master: self.rpc.address_of(&Self::endpoint_name(job_id)),
                    requests: allocations
                        .into_iter()
                        .map(|allocation_id| SlotRequestSpec { allocation_id, profile: ResourceProfile::ANY })
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
                ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
                    let actions = act.core.slot_request_sent(result);
                    act.run(ctx, actions);
                }));
            }
            Action::CancelSlotRequests(allocations) => {
                let rm = self.resource_manager.clone();
                actix::spawn(async move {
                    let Ok(info) = ResourceManagerGateway(rm.clone()).identify().await else { return };
                    let gateway = ResourceManagerGateway(rm.with_token(info.leader_session_id));
                    for allocation_id in allocations {
                        let _ = gateway.cancel_slot_request(allocation_id).await;
                    }
                });
            }
            Action::ArmTimer { after, timer } => {
                ctx.run_later(after, move |act, ctx| {
                    let actions = act.core.timer_fired(timer);
                    act.run(ctx, actions);
                });
            }
            Action::Deploy { task_executor, resource_id, task_name, tdd } => {
                let attempt = tdd.attempt_id;
                let fut = self.task_executor(task_executor).submit_task(*tdd);
                ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                    let outcome = match result {
                        Ok(Ok(())) => DeployOutcome::Ok,
                        Ok(Err(e)) => DeployOutcome::Refused { retryable: e.is_retryable(), message: e.to_string() },
                        Err(e) if unreachable(&e) => DeployOutcome::Unreachable(e.to_string()),
                        Err(e) => DeployOutcome::Failed(e.to_string()),
                    };
                    let actions = act.core.deploy_answered(attempt, &resource_id, &task_name, outcome);
                    act.run(ctx, actions);
                }));
            }
            Action::CancelTask { task_executor, attempt, answer } => {
                let fut = self.task_executor(task_executor).cancel_task(attempt);
                if answer {
                    ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                        let actions = act.core.cancel_answered(attempt, result == Ok(true));
                        act.run(ctx, actions);
                    }));
                } else {
                    actix::spawn(async move {
                        let _ = fut.await;
                    });
                }
            }
            Action::Heartbeat { task_executor, resource_id } => {
                let fut = self.task_executor(task_executor).heartbeat_from_job_manager(job_id);
                ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                    let outcome = match result {
                        Ok(_) => HeartbeatOutcome::Ok,
                        Err(e) if unreachable(&e) => HeartbeatOutcome::Unreachable(e.to_string()),
                        Err(_) => HeartbeatOutcome::Failed,
                    };
                    let actions = act.core.heartbeat_answered(&resource_id, outcome);
                    act.run(ctx, actions);
                }));
            }
            Action::FreeSlot { task_executor, allocation_id, cause } => {
                let fut = self.task_executor(task_executor).free_slot(allocation_id, cause);
                actix::spawn(async move {
                    if let Err(e) = fut.await {
                        debug!(error = %e, "could not free slot");
                    }
                });
            }
            Action::ReserveCheckpointId { operation } => {
                let ids = self.ids.clone();
                let reserve = move || ids.get_and_increment().map_err(|e| e.to_string());
                ctx.spawn(self.id_work.run(reserve).into_actor(self).map(move |id, act, ctx| {
                    let actions = act.core.checkpoint_id_reserved(operation, id);
                    act.run(ctx, actions);
                }));
            }
            Action::AdvanceCheckpointIds { past } => {
                let ids = self.ids.clone();
                self.id_work.push(Box::new(move || {
                    let advanced =
                        ids.get().and_then(|next| if next <= past { ids.set_count(past + 1) } else { Ok(()) });
                    if let Err(e) = advanced {
                        // The coordinator refuses ids at or below `past` and asks again.
                        warn!(%job_id, past, error = %e, "could not move the checkpoint id counter");
                    }
                }));
            }
            Action::CreateDirectory { checkpoint_id, target } => {
                let create = move || files::create_directory(job_id, checkpoint_id, target);
                ctx.spawn(self.files.run(create).into_actor(self).map(move |result, act, ctx| {
                    let actions = act.core.directory_created(checkpoint_id, result);
                    act.run(ctx, actions);
                }));
            }
            Action::TriggerCheckpoint { task_executor, attempt, barrier } => {
                let checkpoint_id = barrier.checkpoint_id;
                let fut = self.task_executor(task_executor).trigger_checkpoint(attempt, barrier);
                ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                    let actions = act.core.trigger_answered(checkpoint_id, attempt, result.map_err(|e| e.to_string()));
                    act.run(ctx, actions);
                }));
            }
            Action::WriteMetadata { checkpoint_id, directory, is_savepoint, entries } => {
                let write =
                    move || files::write_metadata(job_id, checkpoint_id, epoch_ms(), &directory, is_savepoint, entries);
                ctx.spawn(self.files.run(write).into_actor(self).map(move |written, act, ctx| {
                    let actions = act.core.metadata_written(checkpoint_id, is_savepoint, written);
                    act.run(ctx, actions);
                }));
            }
            Action::StoreCheckpoint { checkpoint_id, handle } => {
                let location = handle.location.clone();
                let add = self.store.add(checkpoint_id, serde_json::to_vec(&handle).unwrap_or_default());
                ctx.spawn(add.into_actor(self).map(move |result, act, ctx| {
                    let result = result.map(|_| ()).map_err(|e| e.to_string());
                    let actions = act.core.checkpoint_stored(checkpoint_id, location, result);
                    act.run(ctx, actions);
                }));
            }
            Action::NotifyCheckpoint { task_executor, attempt, checkpoint_id, completed, final_checkpoint } => {
                let fut = self.task_executor(task_executor).notify_checkpoint(
                    attempt,
                    checkpoint_id,
                    completed,
                    final_checkpoint,
                );
                actix::spawn(async move {
                    if let Err(e) = fut.await {
                        debug!(checkpoint_id, attempt = %attempt, error = %e, "could not notify task of checkpoint");
                    }
                });
            }
            Action::Discard { checkpoint_id, location, handles } => {
                files::discard_files(&self.files, checkpoint_id, location.as_deref(), &handles);
            }
            Action::DiscardRetained { locations, job_dir } => {
                self.files.push(Box::new(move || files::discard_retained(&locations, job_dir.as_deref())));
            }
            Action::CommitOutput(commits) => {
                let commit = move || Ok(files::commit_output(&commits));
                ctx.spawn(self.files.run(commit).into_actor(self).map(
                    |errors: Result<Vec<String>, String>, act, ctx| {
                        let actions = act.core.output_committed(errors.unwrap_or_else(|e| vec![e]));
                        act.run(ctx, actions);
                    },
                ));
            }
            Action::OperationDone { operation, result } => {
                if let Some(reply) = self.operations.remove(&operation) {
                    let _ = reply.send(result);
                }
            }
            Action::Terminated(snapshot) => {
                self.terminated.do_send(JobTerminated { job_id, snapshot });
                ctx.stop();
            }
        }
    }
}

/// The TaskExecutor is gone (not merely slow).
fn unreachable(e: &RpcError) -> bool {
    matches!(e, RpcError::Unreachable { .. } | RpcError::ConnectionLost { .. })
}

impl Actor for JobMaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.fencing.set(Some(self.session));
        let addr = ctx.address();
        self.rpc.register_endpoint(
            Endpoint::new(Self::endpoint_name(self.job_id()))
                .fenced(self.fencing.clone())
                .on_actor::<IdentifyLeader, _>(addr.clone())
                .on_actor::<OfferSlots, _>(addr.clone())
                .on_actor::<AcknowledgeCheckpoint, _>(addr.clone())
                .on_actor::<DeclineCheckpoint, _>(addr.clone())
                .on_actor::<NotifySlotRequestFailed, _>(addr.clone())
                .on_actor::<UpdateTaskExecutionState, _>(addr),
        );
        let actions = self.core.start();
        if self.core.status().is_globally_terminal() {
            self.run(ctx, actions);
            return;
        }
        ctx.run_interval(self.core.heartbeat_interval(), |act, ctx| {
            let actions = act.core.heartbeat_tick();
            act.run(ctx, actions);
        });
        if let Some(tick) = self.core.checkpoint_tick_interval() {
            ctx.run_interval(tick, |act, ctx| {
                let actions = act.core.checkpoint_tick();
                act.run(ctx, actions);
            });
        }
        self.run(ctx, actions);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.fencing.set(None);
        self.rpc.unregister_endpoint(&Self::endpoint_name(self.job_id()));
        for (_, reply) in std::mem::take(&mut self.operations) {
            let _ = reply.send(Err("the job master stopped before the operation completed".to_string()));
        }
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
        let offers: Vec<_> = msg.slots.iter().map(|o| o.allocation_id).collect();
        let (accepted, actions) =
            self.core.slots_offered(&msg.resource_id, &msg.task_executor, &msg.data_address, &offers);
        self.run(ctx, actions);
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
        let dump = Arc::new(m.dump);
        let update = TaskUpdate {
            attempt: msg.attempt_id,
            state,
            failure: msg.failure,
            metrics: Some((metrics, dump)),
            accumulators: msg.accumulators,
            commits: msg.commits,
        };
        let (accepted, actions) = self.core.task_updated(update);
        self.run(ctx, actions);
        accepted
    }
}

/// ResourceManager → JobMaster: a slot request failed.
impl Handler<NotifySlotRequestFailed> for JobMaster {
    type Result = ();
    fn handle(&mut self, msg: NotifySlotRequestFailed, ctx: &mut Context<Self>) {
        if msg.job_id == self.job_id() {
            let actions = self.core.slot_request_failed(msg.allocation_id, msg.failure);
            self.run(ctx, actions);
        }
    }
}

impl Handler<AcknowledgeCheckpoint> for JobMaster {
    type Result = ();
    fn handle(&mut self, msg: AcknowledgeCheckpoint, ctx: &mut Context<Self>) {
        let state = AckState {
            handle: msg.state.file.unwrap_or_default(),
            size_bytes: msg.state.size_bytes,
            alignment_ms: msg.state.alignment_ms,
            duration_ms: msg.state.duration_ms,
            end_of_input: msg.state.end_of_input,
        };
        let actions = self.core.checkpoint_acknowledged(msg.checkpoint_id, msg.attempt_id, state);
        self.run(ctx, actions);
    }
}

impl Handler<DeclineCheckpoint> for JobMaster {
    type Result = ();
    fn handle(&mut self, msg: DeclineCheckpoint, ctx: &mut Context<Self>) {
        let actions = self.core.checkpoint_declined(msg.checkpoint_id, msg.attempt_id, &msg.reason, msg.uncounted);
        self.run(ctx, actions);
    }
}

/// Dispatcher → JobMaster: cancel the job.
#[derive(Message)]
#[rtype(result = "Result<(), JobStatus>")]
pub struct CancelJob;

impl Handler<CancelJob> for JobMaster {
    type Result = Result<(), JobStatus>;
    fn handle(&mut self, _: CancelJob, ctx: &mut Context<Self>) -> Self::Result {
        let (result, actions) = self.core.cancel();
        self.run(ctx, actions);
        result
    }
}

/// Dispatcher → JobMaster: the Dispatcher lost leadership. The job stops here without
/// reaching a terminal state (its graph and checkpoints stay for the new leader).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Suspend;

impl Handler<Suspend> for JobMaster {
    type Result = ();
    fn handle(&mut self, _: Suspend, ctx: &mut Context<Self>) {
        self.fencing.set(None);
        let actions = self.core.suspend();
        self.run(ctx, actions);
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
        MessageResult(self.core.snapshot())
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
        let (started, actions) = self.core.start_operation(msg.0);
        let receiver = started.map(|operation| {
            let (reply, receiver) = oneshot::channel();
            self.operations.insert(operation, reply);
            receiver
        });
        // After registering the reply: the actions may complete the operation at once.
        self.run(ctx, actions);
        Box::pin(async move {
            match receiver {
                Ok(receiver) => receiver
                    .await
                    .unwrap_or_else(|_| Err("the job master stopped before the operation completed".to_string())),
                Err(e) => Err(e),
            }
        })
    }
}
