//! The TaskExecutor actor: finds the ResourceManager, registers (with retry and
//! backoff), answers heartbeats with its slot report, and registers again whenever the
//! ResourceManager restarts, tells it that it is unknown, or goes silent.
//!
//! ```text
//!   Disconnected --register ok--> Registered --timeout / disconnect / new leader--> Disconnected
//!        ^  |                                                                          |
//!        |  +--error: retry after backoff (initial-timeout, doubling, max-timeout)     |
//!        +----------------------------------------------------------------------------+
//! ```
//!
//! Loss of the ResourceManager is noticed three ways: no heartbeat request within
//! `heartbeat.timeout`; the ResourceManager telling us to disconnect; or the connection
//! to it breaking, after which the current leader is asked for its session id and a
//! changed (or missing) one triggers registration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use flint_common::ids::{AllocationId, ExecutionAttemptId, InstanceId, JobId, LeaderSessionId, ResourceId, SlotId};
use flint_common::messages::*;
use flint_common::process::resident_memory_bytes;
use flint_common::resources::{ResourceProfile, SlotReport, SlotStatus};
use flint_common::rpc::{Endpoint, RpcAddress, RpcError, RpcService, PROTOCOL_VERSION};
use tracing::{debug, error, info, warn};

use crate::task::{self, Reporter, TaskCommand, TaskEnvironment, TaskEvent, TaskHandle};
use crate::TaskManagerConfig;

/// The slots of this TaskExecutor: the ground truth reported to the ResourceManager.
pub struct SlotTable {
    slots: Vec<SlotStatus>,
}

impl SlotTable {
    pub fn new(resource_id: &ResourceId, count: u32, profile: ResourceProfile) -> Self {
        let slots = (0..count)
            .map(|i| SlotStatus {
                slot_id: SlotId::new(resource_id.clone(), i),
                profile,
                allocation_id: None,
                job_id: None,
            })
            .collect();
        Self { slots }
    }

    pub fn report(&self) -> SlotReport {
        SlotReport { slots: self.slots.clone() }
    }

    /// Allocates `slot_id` for a job; allocating it again for the same allocation is a
    /// no-op.
    pub fn allocate(
        &mut self,
        slot_id: &SlotId,
        allocation_id: AllocationId,
        job_id: JobId,
    ) -> Result<(), SlotAllocationError> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| &s.slot_id == slot_id)
            .ok_or_else(|| SlotAllocationError::UnknownSlot { slot_id: slot_id.clone() })?;
        match slot.allocation_id {
            None => {
                slot.allocation_id = Some(allocation_id);
                slot.job_id = Some(job_id);
                Ok(())
            }
            Some(existing) if existing == allocation_id => Ok(()),
            Some(existing) => Err(SlotAllocationError::SlotOccupied {
                slot_id: slot_id.clone(),
                allocation_id: existing,
                job_id: slot.job_id.unwrap_or(job_id),
            }),
        }
    }

    /// Frees the slot holding `allocation_id`; returns its id.
    pub fn free(&mut self, allocation_id: AllocationId) -> Option<SlotId> {
        let slot = self.slots.iter_mut().find(|s| s.allocation_id == Some(allocation_id))?;
        slot.allocation_id = None;
        slot.job_id = None;
        Some(slot.slot_id.clone())
    }

    pub fn slot_of(&self, allocation_id: AllocationId) -> Option<&SlotStatus> {
        self.slots.iter().find(|s| s.allocation_id == Some(allocation_id))
    }
}

struct Connection {
    gateway: ResourceManagerGateway,
    session: LeaderSessionId,
    instance_id: InstanceId,
    last_heartbeat: Instant,
}

/// What a TaskExecutor tells the ResourceManager about itself.
#[derive(Clone)]
pub struct TaskExecutorDescription {
    pub resource_id: ResourceId,
    pub data_port: u16,
    pub hardware: HardwareDescription,
    pub memory: TaskExecutorMemoryConfiguration,
    pub total_resource: ResourceProfile,
    pub slot_resource: ResourceProfile,
}

/// A task this TaskExecutor runs.
struct RunningTask {
    handle: TaskHandle,
    allocation_id: AllocationId,
    job_master: JobMasterGateway,
}

pub struct TaskExecutor {
    env: Arc<TaskEnvironment>,
    tasks: HashMap<ExecutionAttemptId, RunningTask>,
    /// When each job's JobMaster was last heard from (jobs with slots here).
    job_masters: HashMap<JobId, Instant>,
    rpc: RpcService,
    config: TaskManagerConfig,
    description: TaskExecutorDescription,
    slots: SlotTable,
    resource_manager: RpcAddress,
    connection: Option<Connection>,
    /// Bumped by every registration start; answers of older attempts are ignored.
    registration_generation: u64,
    /// The generation the running registration loop belongs to; a loop whose generation
    /// is no longer current (the leader moved) gives up.
    current_generation: Arc<std::sync::atomic::AtomicU64>,
    registering: bool,
    /// Since when no registration holds (`taskmanager.registration.timeout` counts from here).
    unregistered_since: Instant,
    fatal: crate::FatalErrorHandler,
    /// Slot offers by JobMaster: one offer in flight per JobMaster, slots allocated
    /// meanwhile go together in the next (one `OfferSlots` for all of them), and the
    /// JobMaster's session is learned once.
    offers: HashMap<RpcAddress, OfferQueue>,
}

/// The offers to one JobMaster.
#[derive(Default)]
struct OfferQueue {
    in_flight: bool,
    queued: Vec<AllocationId>,
    /// The JobMaster's leader session, once learned (forgotten when an offer fails).
    session: Option<LeaderSessionId>,
}

/// The outcome of one `OfferSlots` (after up to three tries).
#[derive(Message)]
#[rtype(result = "()")]
struct OffersAnswered {
    job_master: RpcAddress,
    session: Option<LeaderSessionId>,
    answers: Vec<OfferAnswer>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Registered {
    generation: u64,
    session: LeaderSessionId,
    instance_id: InstanceId,
}

#[derive(Message)]
#[rtype(result = "()")]
struct PeerDisconnected(String);

#[derive(Message)]
#[rtype(result = "()")]
struct LeaderChecked {
    session: LeaderSessionId,
    result: Result<LeaderInfo, RpcError>,
}

struct OfferAnswer {
    allocation_id: AllocationId,
    /// `Ok(accepted)`, or why the offer could not be made.
    result: Result<bool, String>,
}

/// Graceful stop: tell the ResourceManager we are leaving.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl TaskExecutor {
    pub fn new(
        rpc: RpcService,
        config: TaskManagerConfig,
        description: TaskExecutorDescription,
        env: Arc<TaskEnvironment>,
        fatal: crate::FatalErrorHandler,
    ) -> Self {
        let slots = SlotTable::new(&description.resource_id, config.num_slots, description.slot_resource);
        let resource_manager = config.resource_manager_address.clone();
        Self {
            env,
            tasks: HashMap::new(),
            job_masters: HashMap::new(),
            rpc,
            config,
            description,
            slots,
            resource_manager,
            connection: None,
            registration_generation: 0,
            current_generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            registering: false,
            unregistered_since: Instant::now(),
            fatal,
            offers: HashMap::new(),
        }
    }

    /// As Flink: a taskmanager that stays unregistered for `taskmanager.registration.timeout`
    /// gives up and exits non-zero instead of retrying forever.
    fn check_registration_timeout(&mut self) {
        let timeout = self.config.registration_timeout;
        if self.connection.is_none()
            && self.unregistered_since.elapsed() > timeout
            && !self.fatal.shutdown.is_cancelled()
        {
            let cause = format!(
                "Could not register at the ResourceManager within the duration of taskmanager.registration.timeout \
                 ({} ms). This indicates a problem with this instance. Terminating now.",
                timeout.as_millis()
            );
            error!(resource_manager = %self.resource_manager, "{cause}");
            self.fatal.fail(cause);
        }
    }

    fn gateway(&self, token: Option<LeaderSessionId>) -> ResourceManagerGateway {
        ResourceManagerGateway(
            RemoteEndpoint::new(self.rpc.clone(), self.resource_manager.clone(), self.config.ask_timeout)
                .with_token(token),
        )
    }

    fn registration(&self) -> RegisterTaskExecutor {
        let d = &self.description;
        RegisterTaskExecutor {
            protocol_version: PROTOCOL_VERSION,
            resource_id: d.resource_id.clone(),
            address: self.rpc.address_of(endpoints::TASK_EXECUTOR),
            data_port: d.data_port,
            hardware: d.hardware.clone(),
            memory: d.memory.clone(),
            total_resource: d.total_resource,
            default_slot_resource: d.slot_resource,
            slot_report: self.slots.report(),
        }
    }

    /// Drops the current connection (if any) and registers anew in the background.
    fn start_registration(&mut self, ctx: &mut Context<Self>, reason: &str) {
        if let Some(old) = self.connection.take() {
            info!(reason, session = %old.session, "disconnected from the resource manager");
            self.unregistered_since = Instant::now();
        }
        if self.registering {
            return;
        }
        self.registering = true;
        self.registration_generation += 1;
        let generation = self.registration_generation;
        self.current_generation.store(generation, std::sync::atomic::Ordering::SeqCst);
        let current = self.current_generation.clone();
        let unfenced = self.gateway(None);
        let registration = self.registration();
        let initial = self.config.registration_initial_backoff;
        let max = self.config.registration_max_backoff;
        let addr = ctx.address();
        let target = self.resource_manager.clone();
        info!(resource_manager = %target, reason, "registering at the resource manager");
        actix::spawn(async move {
            let mut backoff = initial;
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let outcome = register_once(&unfenced, &registration).await;
                match outcome {
                    Ok((session, instance_id)) => {
                        addr.do_send(Registered { generation, session, instance_id });
                        return;
                    }
                    Err(RegistrationFailure::Rejected(reason)) => {
                        error!(attempt, reason, "the resource manager refused the registration")
                    }
                    Err(RegistrationFailure::Failed(reason)) => {
                        if attempt == 1 || attempt.is_multiple_of(10) {
                            warn!(attempt, resource_manager = %target, reason, "registration failed; retrying")
                        } else {
                            debug!(attempt, reason, "registration failed; retrying")
                        }
                    }
                }
                if !addr.connected() || current.load(std::sync::atomic::Ordering::SeqCst) != generation {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max);
            }
        });
    }
}

enum RegistrationFailure {
    Rejected(String),
    Failed(String),
}

/// One registration attempt: learn the leader's session, then register fenced by it.
async fn register_once(
    unfenced: &ResourceManagerGateway,
    registration: &RegisterTaskExecutor,
) -> Result<(LeaderSessionId, InstanceId), RegistrationFailure> {
    let info = unfenced.identify().await.map_err(|e| RegistrationFailure::Failed(e.to_string()))?;
    let session = info
        .leader_session_id
        .ok_or_else(|| RegistrationFailure::Failed("the resource manager has no leader yet".into()))?;
    let fenced = ResourceManagerGateway(unfenced.0.clone().with_token(Some(session)));
    match fenced.register_task_executor(registration).await {
        Ok(RegistrationResponse::Success { instance_id, .. }) => Ok((session, instance_id)),
        Ok(RegistrationResponse::Rejected { reason }) => Err(RegistrationFailure::Rejected(reason)),
        Err(e) => Err(RegistrationFailure::Failed(e.to_string())),
    }
}

impl Actor for TaskExecutor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Forward broken outbound connections into the mailbox.
        let mut disconnects = self.rpc.disconnects();
        let addr = ctx.address();
        actix::spawn(async move {
            loop {
                match disconnects.recv().await {
                    Ok(peer) => addr.do_send(PeerDisconnected(peer)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let check_every = (self.config.heartbeat_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        ctx.run_interval(check_every, |act, ctx| {
            let timeout = act.config.heartbeat_timeout;
            if act.connection.as_ref().is_some_and(|c| c.last_heartbeat.elapsed() > timeout) {
                let reason = format!("no heartbeat from the resource manager within {} ms", timeout.as_millis());
                act.start_registration(ctx, &reason);
            }
            act.check_job_masters();
            act.check_registration_timeout();
        });
        self.start_registration(ctx, "task executor started");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.rpc.unregister_endpoint(endpoints::TASK_EXECUTOR);
    }
}

/// The ResourceManager's leader moved (leader retrieval): register at the new one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResourceManagerLeader {
    pub address: RpcAddress,
    /// The leader's session, when the retrieval knows it.
    pub session: Option<LeaderSessionId>,
}

impl Handler<ResourceManagerLeader> for TaskExecutor {
    type Result = ();
    fn handle(&mut self, msg: ResourceManagerLeader, ctx: &mut Context<Self>) {
        let same_session = match (&self.connection, msg.session) {
            (Some(c), Some(session)) => c.session == session,
            (Some(_), None) => true,
            (None, _) => self.registering,
        };
        if msg.address == self.resource_manager && same_session {
            return;
        }
        info!(from = %self.resource_manager, to = %msg.address, "the resource manager leader changed");
        self.resource_manager = msg.address;
        // The loop of the old address gives up once the generation moves on.
        self.registering = false;
        self.start_registration(ctx, "new resource manager leader");
    }
}

impl Handler<Registered> for TaskExecutor {
    type Result = ();
    fn handle(&mut self, msg: Registered, _ctx: &mut Context<Self>) {
        if msg.generation != self.registration_generation {
            return;
        }
        self.registering = false;
        info!(session = %msg.session, instance_id = %msg.instance_id, resource_id = %self.description.resource_id,
            "registered at the resource manager");
        self.connection = Some(Connection {
            gateway: self.gateway(Some(msg.session)),
            session: msg.session,
            instance_id: msg.instance_id,
            last_heartbeat: Instant::now(),
        });
    }
}

impl Handler<HeartbeatFromResourceManager> for TaskExecutor {
    type Result = MessageResult<HeartbeatFromResourceManager>;
    fn handle(&mut self, msg: HeartbeatFromResourceManager, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(c) = self.connection.as_mut() {
            if c.session == msg.resource_manager_session {
                c.last_heartbeat = Instant::now();
            }
        }
        MessageResult(TaskExecutorHeartbeatPayload {
            resource_id: self.description.resource_id.clone(),
            slot_report: self.slots.report(),
            process_memory: resident_memory_bytes(),
            metrics: self.env.metrics.taskmanager_metrics(),
        })
    }
}

impl Handler<DisconnectResourceManager> for TaskExecutor {
    type Result = ();
    fn handle(&mut self, msg: DisconnectResourceManager, ctx: &mut Context<Self>) {
        let ours = self.connection.as_ref().map(|c| c.session);
        if msg.resource_manager_session.is_none() || msg.resource_manager_session == ours || ours.is_none() {
            let reason = format!("the resource manager disconnected us: {}", msg.reason);
            self.start_registration(ctx, &reason);
        }
    }
}

impl Handler<PeerDisconnected> for TaskExecutor {
    type Result = ();
    fn handle(&mut self, msg: PeerDisconnected, ctx: &mut Context<Self>) {
        let Some(connection) = self.connection.as_ref() else { return };
        if msg.0 != self.resource_manager.host_port {
            return;
        }
        // The connection broke: is the leader we registered with still there?
        let session = connection.session;
        let gateway = self.gateway(None);
        let addr = ctx.address();
        actix::spawn(async move {
            let result = gateway.identify().await;
            addr.do_send(LeaderChecked { session, result });
        });
    }
}

impl Handler<LeaderChecked> for TaskExecutor {
    type Result = ();
    fn handle(&mut self, msg: LeaderChecked, ctx: &mut Context<Self>) {
        if self.connection.as_ref().map(|c| c.session) != Some(msg.session) {
            return;
        }
        match msg.result {
            Ok(info) if info.leader_session_id == Some(msg.session) => {
                debug!("connection to the resource manager was re-established; same leader")
            }
            Ok(_) => self.start_registration(ctx, "the resource manager has a new leader session"),
            Err(e) => self.start_registration(ctx, &format!("lost the connection to the resource manager: {e}")),
        }
    }
}

impl TaskExecutor {
    /// Offers a freshly allocated slot to its JobMaster: at once when no offer to it is in
    /// flight, else with the next one.
    fn offer_slot(&mut self, ctx: &mut Context<Self>, allocation_id: AllocationId, job_master: RpcAddress) {
        let queue = self.offers.entry(job_master.clone()).or_default();
        queue.queued.push(allocation_id);
        if !queue.in_flight {
            self.send_offers(ctx, job_master);
        }
    }

    /// Offers every queued slot still allocated in one `OfferSlots` (learning the
    /// JobMaster's session first unless known); the outcome comes back as
    /// [`OffersAnswered`].
    fn send_offers(&mut self, ctx: &mut Context<Self>, job_master: RpcAddress) {
        let Some(queue) = self.offers.get_mut(&job_master) else { return };
        let slots: Vec<SlotOffer> = std::mem::take(&mut queue.queued)
            .into_iter()
            .filter_map(|allocation_id| {
                let slot = self.slots.slot_of(allocation_id)?;
                Some(SlotOffer { allocation_id, slot_index: slot.slot_id.index, profile: slot.profile })
            })
            .collect();
        if slots.is_empty() {
            queue.in_flight = false;
            return;
        }
        queue.in_flight = true;
        let mut session = queue.session;
        let offer = OfferSlots {
            resource_id: self.description.resource_id.clone(),
            task_executor: self.rpc.address_of(endpoints::TASK_EXECUTOR),
            data_address: format!("{}:{}", self.config.host, self.description.data_port),
            slots,
        };
        let endpoint = RemoteEndpoint::new(self.rpc.clone(), job_master.clone(), self.config.ask_timeout);
        let addr = ctx.address();
        actix::spawn(async move {
            let mut last_error = String::new();
            let mut accepted = None;
            for attempt in 0..3u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                let current = match session {
                    Some(s) => s,
                    None => match JobMasterGateway(endpoint.clone()).identify().await {
                        Ok(LeaderInfo { leader_session_id: Some(s), .. }) => s,
                        Ok(_) => {
                            last_error = "the job master is not leader".into();
                            continue;
                        }
                        Err(e) => {
                            last_error = e.to_string();
                            continue;
                        }
                    },
                };
                let fenced = JobMasterGateway(endpoint.clone().with_token(Some(current)));
                match fenced.offer_slots(&offer).await {
                    Ok(list) => {
                        session = Some(current);
                        accepted = Some(list);
                        break;
                    }
                    Err(e) => {
                        // Maybe a new session: learn it again.
                        session = None;
                        last_error = e.to_string();
                    }
                }
            }
            let answers = offer
                .slots
                .iter()
                .map(|s| OfferAnswer {
                    allocation_id: s.allocation_id,
                    result: match &accepted {
                        Some(list) => Ok(list.contains(&s.allocation_id)),
                        None => Err(last_error.clone()),
                    },
                })
                .collect();
            addr.do_send(OffersAnswered { job_master, session, answers });
        });
    }

    /// Releases every slot (and cancels every task) of a job whose JobMaster has not
    /// sent a heartbeat within `heartbeat.timeout`: nobody is there to use them.
    fn check_job_masters(&mut self) {
        let timeout = self.config.heartbeat_timeout;
        let lost: Vec<JobId> =
            self.job_masters.iter().filter(|(_, last)| last.elapsed() > timeout).map(|(job, _)| *job).collect();
        for job_id in lost {
            self.job_masters.remove(&job_id);
            warn!(%job_id, "no heartbeat from the job master; releasing the job's slots");
            let allocations: Vec<AllocationId> = self
                .slots
                .report()
                .slots
                .iter()
                .filter(|s| s.job_id == Some(job_id))
                .filter_map(|s| s.allocation_id)
                .collect();
            for allocation_id in allocations {
                self.free_slot(allocation_id, "the job master is gone");
            }
        }
    }

    /// Frees a slot and tells the ResourceManager at once (the next heartbeat would too).
    /// Tasks still running in the slot are canceled.
    fn free_slot(&mut self, allocation_id: AllocationId, cause: &str) -> bool {
        for task in self.tasks.values().filter(|t| t.allocation_id == allocation_id) {
            task.handle.cancel();
        }
        let job_id = self.slots.slot_of(allocation_id).and_then(|s| s.job_id);
        let Some(slot_id) = self.slots.free(allocation_id) else { return false };
        if let Some(job_id) = job_id {
            if !self.slots.report().slots.iter().any(|s| s.job_id == Some(job_id)) {
                // The job's last slot here: its partitions go too.
                self.env.partitions.release(job_id);
                self.env.artifacts.release_job(job_id);
                self.job_masters.remove(&job_id);
            }
        }
        info!(%slot_id, %allocation_id, cause, "slot freed");
        if let Some(c) = &self.connection {
            let notice =
                NotifySlotAvailable { resource_id: self.description.resource_id.clone(), slot_id, allocation_id };
            let fut = c.gateway.notify_slot_available(&notice);
            actix::spawn(async move {
                if let Err(e) = fut.await {
                    debug!(error = %e, "could not tell the resource manager about a free slot");
                }
            });
        }
        true
    }
}

impl Handler<AllocateSlot> for TaskExecutor {
    type Result = MessageResult<AllocateSlot>;
    fn handle(&mut self, msg: AllocateSlot, ctx: &mut Context<Self>) -> Self::Result {
        let session = self.connection.as_ref().map(|c| c.session);
        if session != Some(msg.resource_manager_session) {
            return MessageResult(Err(SlotAllocationError::WrongResourceManager {
                session: msg.resource_manager_session,
            }));
        }
        let result = self.slots.allocate(&msg.slot_id, msg.allocation_id, msg.job_id);
        if result.is_ok() {
            self.job_masters.entry(msg.job_id).or_insert_with(Instant::now);
            info!(slot_id = %msg.slot_id, allocation_id = %msg.allocation_id, job_id = %msg.job_id, "slot allocated");
            self.offer_slot(ctx, msg.allocation_id, msg.job_master);
        }
        MessageResult(result)
    }
}

impl Handler<OffersAnswered> for TaskExecutor {
    type Result = ();
    fn handle(&mut self, msg: OffersAnswered, ctx: &mut Context<Self>) {
        for answer in msg.answers {
            match answer.result {
                Ok(true) => debug!(allocation_id = %answer.allocation_id, "slot offer accepted"),
                Ok(false) => {
                    self.free_slot(answer.allocation_id, "the job master declined the slot offer");
                }
                Err(e) => {
                    warn!(allocation_id = %answer.allocation_id, error = %e, "could not offer slot to the job master");
                    self.free_slot(answer.allocation_id, "the job master could not be reached");
                }
            }
        }
        let Some(queue) = self.offers.get_mut(&msg.job_master) else { return };
        queue.in_flight = false;
        queue.session = msg.session;
        if queue.queued.is_empty() {
            // Nothing waits: the entry goes (a later slot learns the session again).
            self.offers.remove(&msg.job_master);
        } else {
            self.send_offers(ctx, msg.job_master);
        }
    }
}

impl Handler<SubmitTask> for TaskExecutor {
    type Result = MessageResult<SubmitTask>;
    fn handle(&mut self, msg: SubmitTask, ctx: &mut Context<Self>) -> Self::Result {
        let tdd = *msg.tdd;
        let (allocation_id, job_id, resource_id) =
            (tdd.allocation_id, tdd.job_id, self.description.resource_id.clone());
        match self.slots.slot_of(allocation_id).and_then(|s| s.job_id) {
            Some(owner) if owner == job_id => {}
            Some(owner) => {
                return MessageResult(Err(SubmitTaskError::SlotOwnedByOtherJob {
                    allocation_id,
                    job_id,
                    owner,
                    resource_id,
                }))
            }
            None => return MessageResult(Err(SubmitTaskError::SlotNotFound { allocation_id, job_id, resource_id })),
        }
        if tdd.subtask >= tdd.vertex.parallelism {
            let reason = format!("subtask {} of a vertex of parallelism {}", tdd.subtask, tdd.vertex.parallelism);
            return MessageResult(Err(SubmitTaskError::InvalidDeployment { reason }));
        }
        if self.tasks.contains_key(&tdd.attempt_id) {
            return MessageResult(Ok(()));
        }
        let attempt_id = tdd.attempt_id;
        let job_master = JobMasterGateway(
            RemoteEndpoint::new(self.rpc.clone(), tdd.job_master.clone(), self.config.ask_timeout)
                .with_token(Some(tdd.job_master_session)),
        );
        info!(%job_id, attempt = %attempt_id, task = %tdd.vertex.name, subtask = tdd.subtask, "deploying task");
        let addr = ctx.address();
        let reporter: Reporter = Box::new(move |event| addr.do_send(TaskEventFor { attempt_id, event }));
        self.env.metrics.task_started(&tdd);
        match task::spawn(tdd, self.env.clone(), reporter) {
            Ok(handle) => {
                self.tasks.insert(attempt_id, RunningTask { handle, allocation_id, job_master });
                MessageResult(Ok(()))
            }
            Err(e) => {
                self.env.metrics.task_ended(attempt_id);
                MessageResult(Err(SubmitTaskError::TaskStartFailed { reason: e.to_string() }))
            }
        }
    }
}

/// Something a task reported; forwarded to its JobMaster.
#[derive(Message)]
#[rtype(result = "()")]
struct TaskEventFor {
    attempt_id: ExecutionAttemptId,
    event: TaskEvent,
}

impl Handler<TaskEventFor> for TaskExecutor {
    type Result = ();
    fn handle(&mut self, msg: TaskEventFor, _ctx: &mut Context<Self>) {
        let attempt_id = msg.attempt_id;
        let Some(task) = self.tasks.get(&attempt_id) else { return };
        let gateway = task.job_master.clone();
        match msg.event {
            TaskEvent::State { state, failure, metrics, accumulators, commits } => {
                if matches!(state, TaskState::Finished | TaskState::Canceled | TaskState::Failed) {
                    self.tasks.remove(&attempt_id);
                    self.env.metrics.task_ended(attempt_id);
                } else if !metrics.dump.task.is_empty() {
                    self.env.metrics.task_reported(attempt_id, &metrics.dump);
                }
                let update = UpdateTaskExecutionState { attempt_id, state, failure, metrics, accumulators, commits };
                actix::spawn(async move {
                    if let Err(e) = gateway.update_task_execution_state(&update).await {
                        warn!(attempt = %attempt_id, error = %e, "could not report task state to the job master");
                    }
                });
            }
            TaskEvent::CheckpointAck { checkpoint_id, state } => {
                let ack = AcknowledgeCheckpoint { attempt_id, checkpoint_id, state };
                actix::spawn(async move {
                    if let Err(e) = gateway.acknowledge_checkpoint(&ack).await {
                        warn!(attempt = %attempt_id, checkpoint_id, error = %e, "could not acknowledge checkpoint");
                    }
                });
            }
            TaskEvent::CheckpointDecline { checkpoint_id, reason, uncounted } => {
                let decline = DeclineCheckpoint { attempt_id, checkpoint_id, reason, uncounted };
                actix::spawn(async move {
                    if let Err(e) = gateway.decline_checkpoint(&decline).await {
                        warn!(attempt = %attempt_id, checkpoint_id, error = %e, "could not decline checkpoint");
                    }
                });
            }
        }
    }
}

impl Handler<TriggerCheckpoint> for TaskExecutor {
    type Result = bool;
    fn handle(&mut self, msg: TriggerCheckpoint, _ctx: &mut Context<Self>) -> bool {
        self.tasks.get(&msg.attempt_id).is_some_and(|t| t.handle.command(TaskCommand::TriggerCheckpoint(msg.barrier)))
    }
}

impl Handler<NotifyCheckpoint> for TaskExecutor {
    type Result = bool;
    fn handle(&mut self, msg: NotifyCheckpoint, _ctx: &mut Context<Self>) -> bool {
        let command = TaskCommand::NotifyCheckpoint {
            checkpoint_id: msg.checkpoint_id,
            completed: msg.completed,
            final_checkpoint: msg.final_checkpoint,
        };
        self.tasks.get(&msg.attempt_id).is_some_and(|t| t.handle.command(command))
    }
}

impl Handler<RequestLogList> for TaskExecutor {
    type Result = MessageResult<RequestLogList>;
    fn handle(&mut self, _: RequestLogList, _ctx: &mut Context<Self>) -> Self::Result {
        let dir = flint_common::process::own_log_files().and_then(|(log, _)| log.parent().map(|d| d.to_path_buf()));
        MessageResult(dir.map(|d| flint_common::process::list_log_files(&d)).unwrap_or_default())
    }
}

impl Handler<RequestThreadDump> for TaskExecutor {
    type Result = MessageResult<RequestThreadDump>;
    fn handle(&mut self, _: RequestThreadDump, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(flint_common::process::thread_dump())
    }
}

impl Handler<RequestThreadSamples> for TaskExecutor {
    type Result = ResponseFuture<Result<ThreadSamples, ThreadSamplingError>>;
    fn handle(&mut self, msg: RequestThreadSamples, _ctx: &mut Context<Self>) -> Self::Result {
        let threads = self.env.metrics.task_threads(&msg.attempts);
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            // The sampler sleeps through its period: on a thread of its own.
            let spawned = std::thread::Builder::new().name("stack-sampler".into()).spawn(move || {
                let duration = std::time::Duration::from_millis(msg.duration_ms);
                let _ =
                    tx.send(crate::stack_sampler::sample(&threads, duration, msg.frequency_hz, msg.max_depth as usize));
            });
            if let Err(e) = spawned {
                return Err(ThreadSamplingError::SamplerFailed { reason: e.to_string() });
            }
            rx.await
                .unwrap_or_else(|_| Err(ThreadSamplingError::SamplerFailed { reason: "the sampler stopped".into() }))
        })
    }
}

impl Handler<RequestLogFile> for TaskExecutor {
    type Result = MessageResult<RequestLogFile>;
    fn handle(&mut self, msg: RequestLogFile, _ctx: &mut Context<Self>) -> Self::Result {
        let max = msg.max_bytes.min(self.rpc.max_frame_size() as u64 / 2);
        MessageResult(
            flint_common::process::resolve_log_file(&msg.file, None)
                .and_then(|path| flint_common::process::read_tail(&path, max)),
        )
    }
}

impl Handler<HeartbeatFromJobManager> for TaskExecutor {
    type Result = MessageResult<HeartbeatFromJobManager>;
    fn handle(&mut self, msg: HeartbeatFromJobManager, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(last) = self.job_masters.get_mut(&msg.job_id) {
            *last = Instant::now();
        }
        MessageResult(self.description.resource_id.clone())
    }
}

impl Handler<CancelTask> for TaskExecutor {
    type Result = bool;
    fn handle(&mut self, msg: CancelTask, _ctx: &mut Context<Self>) -> bool {
        match self.tasks.get(&msg.attempt_id) {
            Some(task) => {
                task.handle.cancel();
                true
            }
            None => false,
        }
    }
}

impl Handler<FreeSlot> for TaskExecutor {
    type Result = bool;
    fn handle(&mut self, msg: FreeSlot, _ctx: &mut Context<Self>) -> bool {
        self.free_slot(msg.allocation_id, &msg.cause)
    }
}

impl Handler<Shutdown> for TaskExecutor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let connection = self.connection.take();
        let resource_id = self.description.resource_id.clone();
        self.registration_generation += 1;
        ctx.stop();
        Box::pin(async move {
            if let Some(c) = connection {
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    c.gateway.disconnect_task_manager(resource_id, "the task manager is shutting down"),
                )
                .await
                {
                    Ok(Ok(())) => info!(instance_id = %c.instance_id, "deregistered from the resource manager"),
                    Ok(Err(e)) => debug!(error = %e, "could not deregister from the resource manager"),
                    Err(_) => debug!("deregistering from the resource manager timed out"),
                }
            }
        })
    }
}

/// Registers the TaskExecutor's endpoint (unfenced: its peers are fenced instead).
pub fn register_endpoint(rpc: &RpcService, addr: Addr<TaskExecutor>) {
    rpc.register_endpoint(
        Endpoint::new(endpoints::TASK_EXECUTOR)
            .on_actor::<HeartbeatFromResourceManager, _>(addr.clone())
            .on_actor::<DisconnectResourceManager, _>(addr.clone())
            .on_actor::<AllocateSlot, _>(addr.clone())
            .on_actor::<FreeSlot, _>(addr.clone())
            .on_actor::<SubmitTask, _>(addr.clone())
            .on_actor::<CancelTask, _>(addr.clone())
            .on_actor::<TriggerCheckpoint, _>(addr.clone())
            .on_actor::<NotifyCheckpoint, _>(addr.clone())
            .on_actor::<RequestLogList, _>(addr.clone())
            .on_actor::<RequestThreadSamples, _>(addr.clone())
            .on_actor::<RequestThreadDump, _>(addr.clone())
            .on_actor::<HeartbeatFromJobManager, _>(addr.clone())
            .on_actor::<RequestLogFile, _>(addr),
    );
}
