//! The ResourceManager actor: TaskExecutor registration, heartbeats, slot reports.
//!
//! It runs in its own actix system on its own thread (also when the jobmanager process
//! hosts it) and is reached only through its `resourcemanager` endpoint, which is
//! fenced by the leader session id. All slot bookkeeping is delegated to the pure
//! [`SlotManager`]; this actor performs the actions it returns.
//!
//! Heartbeats: every `heartbeat.interval` the ResourceManager asks each registered
//! TaskExecutor for a heartbeat, which answers with its slot report (the ground
//! truth, reconciled by the SlotManager). A TaskExecutor not heard from within
//! `heartbeat.timeout`, or whose heartbeat RPC failed `heartbeat.rpc-failure-threshold`
//! times in a row because it was unreachable, is lost: its slots are removed and it is
//! told to register again (in case it is alive but was cut off).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use flint_common::config::{options, ConfigError, Configuration};
use flint_common::ha::{LeaderContender, LeaderElection};
use flint_common::ids::{AllocationId, InstanceId, LeaderSessionId, ResourceId, SlotId};
use flint_common::messages::*;
use flint_common::process::epoch_ms;
use flint_common::resources::ResourceProfile;
use flint_common::rpc::{Endpoint, FencingToken, RpcAddress, RpcError, RpcService, PROTOCOL_VERSION};
use tracing::{debug, info, warn};

use crate::slot_batches::SlotBatches;
use crate::slot_manager::{SlotManager, SlotManagerAction, SlotRequest, SlotRequestFailure, SlotState};
use flint_common::messages::SlotRequestFailure as JobSlotFailure;

/// The ResourceManager's settings.
#[derive(Clone, Debug)]
pub struct ResourceManagerConfig {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Consecutive unreachable heartbeat RPCs that mark a TaskExecutor lost; ≤ 0 disables.
    pub rpc_failure_threshold: i32,
    pub slot_request_timeout: Duration,
}

impl ResourceManagerConfig {
    pub fn from_configuration(config: &Configuration) -> Result<Self, ConfigError> {
        Ok(Self {
            heartbeat_interval: config.get(&options::HEARTBEAT_INTERVAL)?,
            heartbeat_timeout: config.get(&options::HEARTBEAT_TIMEOUT)?,
            rpc_failure_threshold: config.get(&options::HEARTBEAT_RPC_FAILURE_THRESHOLD)?,
            slot_request_timeout: config.get(&options::SLOT_REQUEST_TIMEOUT)?,
        })
    }
}

struct WorkerRegistration {
    instance_id: InstanceId,
    gateway: TaskExecutorGateway,
    registration: RegisterTaskExecutor,
    last_heartbeat: Instant,
    last_heartbeat_ms: u64,
    failed_rpcs: i32,
    heartbeat_in_flight: bool,
    process_memory: u64,
    /// The taskmanager's metrics of its last heartbeat answer.
    metrics: Vec<(String, f64)>,
}

/// The ResourceManager actor.
pub struct ResourceManager {
    rpc: RpcService,
    config: ResourceManagerConfig,
    fencing: FencingToken,
    session: Option<LeaderSessionId>,
    election: Arc<dyn LeaderElection>,
    slot_manager: SlotManager,
    /// Slot request batches not yet handed to the SlotManager (all-or-nothing per job).
    batches: SlotBatches,
    /// Where to report a slot request's failure: the requesting JobMaster, by allocation.
    job_masters: BTreeMap<AllocationId, RpcAddress>,
    workers: BTreeMap<ResourceId, WorkerRegistration>,
    /// This actor's own address, for answers of asynchronous calls.
    myself: Option<Addr<ResourceManager>>,
}

// Internal messages.
#[derive(Message)]
#[rtype(result = "()")]
struct GrantLeadership(LeaderSessionId);

#[derive(Message)]
#[rtype(result = "()")]
struct RevokeLeadership;

#[derive(Message)]
#[rtype(result = "()")]
struct SlotAllocationAnswer {
    allocation_id: AllocationId,
    slot_id: SlotId,
    result: Result<Result<(), SlotAllocationError>, RpcError>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct HeartbeatAnswer {
    resource_id: ResourceId,
    instance_id: InstanceId,
    result: Result<TaskExecutorHeartbeatPayload, RpcError>,
}

struct Contender(Addr<ResourceManager>);

impl LeaderContender for Contender {
    fn grant_leadership(&self, session: LeaderSessionId) {
        self.0.do_send(GrantLeadership(session));
    }
    fn revoke_leadership(&self) {
        self.0.do_send(RevokeLeadership);
    }
}

impl ResourceManager {
    fn address(&self) -> RpcAddress {
        self.rpc.address_of(endpoints::RESOURCE_MANAGER)
    }

    fn is_leader(&self) -> bool {
        self.session.is_some()
    }

    /// Tells a JobMaster that one of its slot requests failed (best effort: a JobMaster that
    /// is gone needs no answer).
    fn tell_job_master(
        &mut self,
        job_id: flint_common::ids::JobId,
        allocation_id: AllocationId,
        failure: JobSlotFailure,
    ) {
        let Some(job_master) = self.job_masters.remove(&allocation_id) else { return };
        let notice = NotifySlotRequestFailed { job_id, allocation_id, failure };
        if let Err(e) = self.rpc.tell(&job_master, None, &notice) {
            debug!(%allocation_id, error = %e, "could not tell the job master about a failed slot request");
        }
    }

    /// Hands every waiting batch that fits into the free slots to the SlotManager, oldest
    /// first (see `slot_batches`).
    fn admit_batches(&mut self) {
        let now = Instant::now();
        let admitted = self.batches.admit(self.slot_manager.num_free_slots(), self.slot_manager.num_registered_slots());
        for batch in admitted {
            for request in batch {
                let actions = self.slot_manager.request_slot(request, now);
                self.perform(actions);
            }
        }
    }

    fn perform(&mut self, actions: Vec<SlotManagerAction>) {
        for action in actions {
            match action {
                SlotManagerAction::NewWorkerNeeded { profile, pending_requests } => {
                    info!(
                        ?profile,
                        pending_requests, "a new task manager would be needed; a standalone cluster cannot start one"
                    )
                }
                SlotManagerAction::RequestTimedOut { allocation_id, job_id, reason } => {
                    warn!(%allocation_id, %job_id, reason, "slot request timed out");
                    self.tell_job_master(job_id, allocation_id, JobSlotFailure::TimedOut { message: reason });
                }
                SlotManagerAction::AllocationLost { allocation_id, job_id, reason } => {
                    warn!(%allocation_id, %job_id, reason, "slot allocation lost");
                    self.tell_job_master(job_id, allocation_id, JobSlotFailure::AllocationLost { message: reason });
                }
                SlotManagerAction::AllocateSlot {
                    slot_id,
                    instance_id,
                    allocation_id,
                    job_id,
                    profile,
                    target_address,
                } => {
                    self.allocate_at_task_executor(slot_id, instance_id, allocation_id, job_id, profile, target_address)
                }
            }
        }
    }

    /// Asks the TaskExecutor owning `slot_id` to allocate it; the answer comes back as
    /// a [`SlotAllocationAnswer`].
    fn allocate_at_task_executor(
        &mut self,
        slot_id: SlotId,
        instance_id: InstanceId,
        allocation_id: AllocationId,
        job_id: flint_common::ids::JobId,
        profile: ResourceProfile,
        job_master: RpcAddress,
    ) {
        let (Some(session), Some(myself)) = (self.session, self.myself.clone()) else { return };
        let gateway = match self.workers.get(&slot_id.resource_id) {
            Some(worker) if worker.instance_id == instance_id => worker.gateway.clone(),
            _ => {
                let actions = self.slot_manager.slot_request_failed(
                    allocation_id,
                    &slot_id,
                    SlotRequestFailure::Unreachable("the task manager is no longer registered".into()),
                    Instant::now(),
                );
                return self.perform(actions);
            }
        };
        debug!(%slot_id, %allocation_id, %job_id, "allocating slot at task manager");
        let request = AllocateSlot {
            slot_id: slot_id.clone(),
            job_id,
            allocation_id,
            profile,
            job_master,
            resource_manager_session: session,
        };
        let fut = gateway.allocate_slot(&request);
        actix::spawn(async move {
            let result = fut.await;
            myself.do_send(SlotAllocationAnswer { allocation_id, slot_id, result });
        });
    }

    fn remove_worker(&mut self, resource_id: &ResourceId, reason: &str, tell_worker: bool) {
        if let Some(worker) = self.workers.remove(resource_id) {
            info!(%resource_id, instance_id = %worker.instance_id, reason, "task manager removed");
            let actions = self.slot_manager.unregister_task_executor(resource_id, reason, Instant::now());
            self.perform(actions);
            if tell_worker {
                worker.gateway.disconnect_resource_manager(self.session, reason);
            }
        }
    }

    fn heartbeat_round(&mut self, ctx: &mut Context<Self>) {
        let Some(session) = self.session else { return };
        let now = Instant::now();
        let timeout = self.config.heartbeat_timeout;
        let timed_out: Vec<ResourceId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.duration_since(w.last_heartbeat) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for resource_id in timed_out {
            let reason = format!("The heartbeat of TaskManager with id {resource_id} timed out.");
            self.remove_worker(&resource_id, &reason, true);
        }
        for (resource_id, worker) in self.workers.iter_mut() {
            if worker.heartbeat_in_flight {
                continue;
            }
            worker.heartbeat_in_flight = true;
            let fut = worker.gateway.heartbeat(session);
            let addr = ctx.address();
            let resource_id = resource_id.clone();
            let instance_id = worker.instance_id;
            actix::spawn(async move {
                let result = fut.await;
                addr.do_send(HeartbeatAnswer { resource_id, instance_id, result });
            });
        }
        let actions = self.slot_manager.check_timeouts(now);
        self.perform(actions);
        for request in self.batches.expire(now) {
            let message = format!(
                "not enough slots were free at once for the job within slot.request.timeout ({} ms)",
                self.slot_manager.slot_request_timeout().as_millis()
            );
            warn!(allocation_id = %request.allocation_id, job_id = %request.job_id, "slot request timed out waiting for its batch");
            self.tell_job_master(request.job_id, request.allocation_id, JobSlotFailure::TimedOut { message });
        }
        self.admit_batches();
    }

    fn info_of(&self, resource_id: &ResourceId, worker: &WorkerRegistration) -> TaskManagerInfo {
        let slots = self.slot_manager.slots_of(resource_id);
        let free: Vec<&ResourceProfile> =
            slots.iter().filter(|(_, _, s)| matches!(s, SlotState::Free)).map(|(_, p, _)| p).collect();
        let mut free_resource = ResourceProfile::ANY;
        for p in &free {
            free_resource.cpu_cores += p.cpu_cores;
            free_resource.task_heap_mb += p.task_heap_mb;
            free_resource.task_off_heap_mb += p.task_off_heap_mb;
            free_resource.managed_mb += p.managed_mb;
            free_resource.network_mb += p.network_mb;
        }
        let allocated_slots = slots
            .iter()
            .filter_map(|(_, profile, state)| match state {
                SlotState::Allocated { job_id, .. } | SlotState::Pending { job_id, .. } => {
                    Some(AllocatedSlotInfo { job_id: *job_id, resource: *profile })
                }
                SlotState::Free => None,
            })
            .collect();
        let r = &worker.registration;
        TaskManagerInfo {
            resource_id: resource_id.clone(),
            address: r.address.clone(),
            data_port: r.data_port,
            last_heartbeat_ms: worker.last_heartbeat_ms,
            slots_number: slots.len(),
            free_slots: free.len(),
            total_resource: r.total_resource,
            free_resource,
            hardware: r.hardware.clone(),
            memory: r.memory.clone(),
            allocated_slots,
            process_memory: worker.process_memory,
            metrics: worker.metrics.clone(),
        }
    }
}

impl Actor for ResourceManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.myself = Some(ctx.address());
        ctx.run_interval(self.config.heartbeat_interval, |act, ctx| act.heartbeat_round(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.rpc.unregister_endpoint(endpoints::RESOURCE_MANAGER);
    }
}

impl Handler<GrantLeadership> for ResourceManager {
    type Result = ();
    fn handle(&mut self, msg: GrantLeadership, _ctx: &mut Context<Self>) {
        let session = msg.0;
        info!(%session, address = %self.address(), "resource manager granted leadership");
        self.session = Some(session);
        self.fencing.set(Some(session));
        self.election.confirm_leadership(session, &self.address().to_string());
    }
}

impl Handler<RevokeLeadership> for ResourceManager {
    type Result = ();
    fn handle(&mut self, _: RevokeLeadership, _ctx: &mut Context<Self>) {
        info!("resource manager lost leadership");
        self.fencing.set(None);
        let ids: Vec<ResourceId> = self.workers.keys().cloned().collect();
        for id in ids {
            self.remove_worker(&id, "ResourceManager leadership was revoked", true);
        }
        self.session = None;
        self.slot_manager = SlotManager::new(self.config.slot_request_timeout);
        self.batches = SlotBatches::new(self.config.slot_request_timeout);
        self.job_masters.clear();
    }
}

impl Handler<HeartbeatAnswer> for ResourceManager {
    type Result = ();
    fn handle(&mut self, msg: HeartbeatAnswer, _ctx: &mut Context<Self>) {
        let Some(worker) = self.workers.get_mut(&msg.resource_id) else { return };
        if worker.instance_id != msg.instance_id {
            return; // an answer for an earlier registration
        }
        worker.heartbeat_in_flight = false;
        match msg.result {
            Ok(payload) => {
                worker.last_heartbeat = Instant::now();
                worker.last_heartbeat_ms = epoch_ms();
                worker.failed_rpcs = 0;
                worker.process_memory = payload.process_memory;
                worker.metrics = payload.metrics;
                let actions =
                    self.slot_manager.report_slot_status(&msg.resource_id, &payload.slot_report, Instant::now());
                self.perform(actions);
                self.admit_batches();
            }
            Err(error) => {
                let unreachable = matches!(error, RpcError::Unreachable { .. } | RpcError::ConnectionLost { .. });
                debug!(resource_id = %msg.resource_id, %error, "heartbeat failed");
                if unreachable {
                    worker.failed_rpcs += 1;
                    let threshold = self.config.rpc_failure_threshold;
                    if threshold > 0 && worker.failed_rpcs >= threshold {
                        let reason = format!(
                            "TaskManager with id {} is unreachable: {threshold} consecutive heartbeat RPCs failed ({error})",
                            msg.resource_id
                        );
                        self.remove_worker(&msg.resource_id, &reason, false);
                    }
                }
            }
        }
    }
}

impl Handler<IdentifyLeader> for ResourceManager {
    type Result = MessageResult<IdentifyLeader>;
    fn handle(&mut self, _: IdentifyLeader, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(LeaderInfo { leader_session_id: self.session, protocol_version: PROTOCOL_VERSION })
    }
}

impl Handler<RegisterTaskExecutor> for ResourceManager {
    type Result = MessageResult<RegisterTaskExecutor>;
    fn handle(&mut self, msg: RegisterTaskExecutor, _ctx: &mut Context<Self>) -> Self::Result {
        if msg.protocol_version != PROTOCOL_VERSION {
            let reason = format!(
                "TaskExecutor {} speaks protocol version {}, this ResourceManager speaks {}; upgrade both to the same Flint version",
                msg.resource_id, msg.protocol_version, PROTOCOL_VERSION
            );
            warn!(resource_id = %msg.resource_id, reason, "refusing task manager registration");
            return MessageResult(RegistrationResponse::Rejected { reason });
        }
        if !self.is_leader() {
            return MessageResult(RegistrationResponse::Rejected {
                reason: "the ResourceManager is not the leader".into(),
            });
        }
        let resource_id = msg.resource_id.clone();
        if self.workers.contains_key(&resource_id) {
            self.remove_worker(&resource_id, "the task manager registered again", false);
        }
        let instance_id = InstanceId::generate();
        let gateway = TaskExecutorGateway(RemoteEndpoint::new(
            self.rpc.clone(),
            msg.address.clone(),
            self.config.heartbeat_interval.max(Duration::from_millis(100)),
        ));
        info!(%resource_id, %instance_id, address = %msg.address, slots = msg.slot_report.slots.len(), "task manager registered");
        let actions =
            self.slot_manager.register_task_executor(&resource_id, instance_id, &msg.slot_report, Instant::now());
        self.workers.insert(
            resource_id,
            WorkerRegistration {
                instance_id,
                gateway,
                registration: msg,
                last_heartbeat: Instant::now(),
                last_heartbeat_ms: epoch_ms(),
                failed_rpcs: 0,
                heartbeat_in_flight: false,
                process_memory: 0,
                metrics: Vec::new(),
            },
        );
        self.perform(actions);
        self.admit_batches();
        MessageResult(RegistrationResponse::Success {
            instance_id,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
        })
    }
}

impl Handler<SlotAllocationAnswer> for ResourceManager {
    type Result = ();
    fn handle(&mut self, msg: SlotAllocationAnswer, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        let actions = match msg.result {
            Ok(Ok(())) => self.slot_manager.slot_request_succeeded(msg.allocation_id, &msg.slot_id),
            Ok(Err(SlotAllocationError::SlotOccupied { allocation_id, job_id, .. })) => {
                self.slot_manager.slot_request_failed(
                    msg.allocation_id,
                    &msg.slot_id,
                    SlotRequestFailure::SlotOccupied { by: allocation_id, job_id },
                    now,
                )
            }
            Ok(Err(e)) => self.slot_manager.slot_request_failed(
                msg.allocation_id,
                &msg.slot_id,
                SlotRequestFailure::Rejected(e.to_string()),
                now,
            ),
            Err(e) => self.slot_manager.slot_request_failed(
                msg.allocation_id,
                &msg.slot_id,
                SlotRequestFailure::Unreachable(e.to_string()),
                now,
            ),
        };
        self.perform(actions);
        self.admit_batches();
    }
}

impl Handler<RequestSlots> for ResourceManager {
    type Result = MessageResult<RequestSlots>;
    fn handle(&mut self, msg: RequestSlots, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.is_leader() {
            return MessageResult(Err(ResourceManagerError::NotLeader));
        }
        info!(job_id = %msg.job_id, slots = msg.requests.len(), job_master = %msg.job_master, "slots requested");
        let requests: Vec<SlotRequest> = msg
            .requests
            .into_iter()
            .map(|spec| {
                self.job_masters.insert(spec.allocation_id, msg.job_master.clone());
                SlotRequest {
                    allocation_id: spec.allocation_id,
                    job_id: msg.job_id,
                    profile: spec.profile,
                    target_address: msg.job_master.clone(),
                }
            })
            .collect();
        self.batches.enqueue(msg.job_id, requests, Instant::now());
        self.admit_batches();
        MessageResult(Ok(()))
    }
}

impl Handler<CancelSlotRequest> for ResourceManager {
    type Result = bool;
    fn handle(&mut self, msg: CancelSlotRequest, _ctx: &mut Context<Self>) -> bool {
        self.job_masters.remove(&msg.allocation_id);
        let cancelled =
            self.batches.cancel(msg.allocation_id) || self.slot_manager.cancel_slot_request(msg.allocation_id);
        self.admit_batches();
        cancelled
    }
}

impl Handler<NotifySlotAvailable> for ResourceManager {
    type Result = ();
    fn handle(&mut self, msg: NotifySlotAvailable, _ctx: &mut Context<Self>) {
        if self.workers.contains_key(&msg.resource_id) {
            debug!(slot_id = %msg.slot_id, allocation_id = %msg.allocation_id, "slot available again");
            self.job_masters.remove(&msg.allocation_id);
            let actions = self.slot_manager.free_slot(&msg.slot_id, msg.allocation_id, Instant::now());
            self.perform(actions);
            self.admit_batches();
        }
    }
}

impl Handler<DisconnectTaskManager> for ResourceManager {
    type Result = ();
    fn handle(&mut self, msg: DisconnectTaskManager, _ctx: &mut Context<Self>) {
        self.remove_worker(&msg.resource_id, &msg.reason, false);
    }
}

impl Handler<RequestResourceOverview> for ResourceManager {
    type Result = MessageResult<RequestResourceOverview>;
    fn handle(&mut self, _: RequestResourceOverview, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.is_leader() {
            return MessageResult(Err(ResourceManagerError::NotLeader));
        }
        MessageResult(Ok(ResourceOverview {
            task_managers: self.workers.len(),
            slots_total: self.slot_manager.num_registered_slots(),
            slots_free: self.slot_manager.num_free_slots(),
        }))
    }
}

impl Handler<RequestTaskManagerInfos> for ResourceManager {
    type Result = MessageResult<RequestTaskManagerInfos>;
    fn handle(&mut self, _: RequestTaskManagerInfos, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.is_leader() {
            return MessageResult(Err(ResourceManagerError::NotLeader));
        }
        MessageResult(Ok(self.workers.iter().map(|(id, w)| self.info_of(id, w)).collect()))
    }
}

impl Handler<RequestTaskManagerInfo> for ResourceManager {
    type Result = MessageResult<RequestTaskManagerInfo>;
    fn handle(&mut self, msg: RequestTaskManagerInfo, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.is_leader() {
            return MessageResult(Err(ResourceManagerError::NotLeader));
        }
        MessageResult(match self.workers.get(&msg.resource_id) {
            Some(w) => Ok(self.info_of(&msg.resource_id, w)),
            None => Err(ResourceManagerError::UnknownTaskExecutor { resource_id: msg.resource_id }),
        })
    }
}

/// A running ResourceManager: its address and how to stop it.
pub struct ResourceManagerHandle {
    pub address: RpcAddress,
    system: actix::System,
    thread: Option<std::thread::JoinHandle<()>>,
    election: Arc<dyn LeaderElection>,
}

impl ResourceManagerHandle {
    /// Leaves the election, stops the actor system and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.election.stop();
            self.system.stop();
            let _ = thread.join();
        }
    }
}

impl Drop for ResourceManagerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the ResourceManager in its own actix system on its own thread, registers its
/// endpoint with `rpc` and enters the election.
pub fn spawn(
    config: ResourceManagerConfig,
    rpc: RpcService,
    election: Arc<dyn LeaderElection>,
) -> std::io::Result<ResourceManagerHandle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let address = rpc.address_of(endpoints::RESOURCE_MANAGER);
    let thread_election = election.clone();
    let thread = std::thread::Builder::new().name("flint-resourcemanager".into()).spawn(move || {
        let system = actix::System::new();
        system.block_on(async move {
            let fencing = FencingToken::new();
            let slot_manager = SlotManager::new(config.slot_request_timeout);
            let config_timeout = config.slot_request_timeout;
            let rm = ResourceManager {
                rpc: rpc.clone(),
                config,
                fencing: fencing.clone(),
                session: None,
                election: thread_election.clone(),
                slot_manager,
                batches: SlotBatches::new(config_timeout),
                job_masters: BTreeMap::new(),
                workers: BTreeMap::new(),
                myself: None,
            }
            .start();
            rpc.register_endpoint(
                Endpoint::new(endpoints::RESOURCE_MANAGER)
                    .fenced(fencing)
                    .on_actor::<IdentifyLeader, _>(rm.clone())
                    .on_actor::<RegisterTaskExecutor, _>(rm.clone())
                    .on_actor::<DisconnectTaskManager, _>(rm.clone())
                    .on_actor::<RequestResourceOverview, _>(rm.clone())
                    .on_actor::<RequestTaskManagerInfos, _>(rm.clone())
                    .on_actor::<RequestTaskManagerInfo, _>(rm.clone())
                    .on_actor::<RequestSlots, _>(rm.clone())
                    .on_actor::<CancelSlotRequest, _>(rm.clone())
                    .on_actor::<NotifySlotAvailable, _>(rm.clone()),
            );
            thread_election.start(Arc::new(Contender(rm)));
            let _ = tx.send(actix::System::current());
        });
        if let Err(e) = system.run() {
            warn!(error = %e, "resource manager system ended with an error");
        }
    })?;
    let system = rx.recv().map_err(|_| std::io::Error::other("the resource manager thread ended during start-up"))?;
    Ok(ResourceManagerHandle { address, system, thread: Some(thread), election })
}
