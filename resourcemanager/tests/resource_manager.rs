//! The ResourceManager actor over real TCP, with a scripted TaskExecutor endpoint:
//! registration, fencing across revocation, heartbeat timeouts and slot reports.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flint_common::ha::StandaloneLeaderElection;
use flint_common::ids::{AllocationId, JobId, LeaderSessionId, ResourceId, SlotId};
use flint_common::messages::*;
use flint_common::resources::{ResourceProfile, SlotReport, SlotStatus};
use flint_common::rpc::{Endpoint, RpcError, RpcService, RpcServiceConfig, PROTOCOL_VERSION};
use flint_resourcemanager::{spawn, ResourceManagerConfig, ResourceManagerHandle};

const DEADLINE: Duration = Duration::from_secs(10);

struct FakeTaskExecutor {
    rpc: RpcService,
    resource_id: ResourceId,
    answer: Arc<AtomicBool>,
    report: Arc<Mutex<SlotReport>>,
    disconnects: Arc<AtomicUsize>,
}

fn profile() -> ResourceProfile {
    ResourceProfile { cpu_cores: 1.0, ..ResourceProfile::ANY }
}

impl FakeTaskExecutor {
    fn start(slots: u32) -> Self {
        let rpc = RpcService::start(RpcServiceConfig::loopback()).unwrap();
        let resource_id = ResourceId::generate_for("127.0.0.1", rpc.port());
        let report = Arc::new(Mutex::new(SlotReport {
            slots: (0..slots)
                .map(|i| SlotStatus {
                    slot_id: SlotId::new(resource_id.clone(), i),
                    profile: profile(),
                    allocation_id: None,
                    job_id: None,
                })
                .collect(),
        }));
        let answer = Arc::new(AtomicBool::new(true));
        let disconnects = Arc::new(AtomicUsize::new(0));
        let (a, r, id, d) = (answer.clone(), report.clone(), resource_id.clone(), disconnects.clone());
        rpc.register_endpoint(
            Endpoint::new(endpoints::TASK_EXECUTOR)
                .on_fn(move |_: HeartbeatFromResourceManager| {
                    let (a, r, id) = (a.clone(), r.clone(), id.clone());
                    async move {
                        while !a.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_secs(60)).await; // never answers
                        }
                        TaskExecutorHeartbeatPayload {
                            resource_id: id,
                            slot_report: r.lock().unwrap().clone(),
                            process_memory: 1,
                            metrics: Vec::new(),
                        }
                    }
                })
                .on_fn(move |_: DisconnectResourceManager| {
                    d.fetch_add(1, Ordering::SeqCst);
                    async {}
                }),
        );
        Self { rpc, resource_id, answer, report, disconnects }
    }

    fn registration(&self, protocol_version: u16) -> RegisterTaskExecutor {
        let slot_report = self.report.lock().unwrap().clone();
        RegisterTaskExecutor {
            protocol_version,
            resource_id: self.resource_id.clone(),
            address: self.rpc.address_of(endpoints::TASK_EXECUTOR),
            data_port: 1,
            hardware: HardwareDescription::default(),
            memory: TaskExecutorMemoryConfiguration::default(),
            total_resource: profile().times(slot_report.slots.len() as u32),
            default_slot_resource: profile(),
            slot_report,
        }
    }
}

struct Cluster {
    rpc: RpcService,
    election: Arc<StandaloneLeaderElection>,
    handle: Option<ResourceManagerHandle>,
}

impl Cluster {
    fn start(heartbeat_interval: Duration, heartbeat_timeout: Duration) -> Self {
        let rpc = RpcService::start(RpcServiceConfig::loopback()).unwrap();
        let election = Arc::new(StandaloneLeaderElection::new());
        let config = ResourceManagerConfig {
            heartbeat_interval,
            heartbeat_timeout,
            rpc_failure_threshold: 2,
            slot_request_timeout: Duration::from_secs(300),
        };
        let handle = spawn(config, rpc.clone(), election.clone()).unwrap();
        Self { rpc, election, handle: Some(handle) }
    }

    fn gateway(&self, from: &RpcService, token: Option<LeaderSessionId>) -> ResourceManagerGateway {
        let address = self.handle.as_ref().unwrap().address.clone();
        ResourceManagerGateway(RemoteEndpoint::new(from.clone(), address, Duration::from_secs(5)).with_token(token))
    }

    async fn session(&self, from: &RpcService) -> Option<LeaderSessionId> {
        self.gateway(from, None).identify().await.unwrap().leader_session_id
    }

    /// Waits until the RM is leader and returns its session id.
    async fn leader_session(&self, from: &RpcService) -> LeaderSessionId {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.session(from).await {
                return s;
            }
            assert!(Instant::now() < until, "no leader within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_for_overview(
        &self,
        from: &RpcService,
        check: impl Fn(&ResourceOverview) -> bool,
    ) -> ResourceOverview {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Ok(Ok(o)) = self.gateway(from, None).overview().await {
                if check(&o) {
                    return o;
                }
                assert!(Instant::now() < until, "overview never matched; last {o:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
        self.rpc.stop();
    }
}

#[tokio::test]
async fn registration_is_fenced_and_counted() {
    let cluster = Cluster::start(Duration::from_secs(10), Duration::from_secs(50));
    let te = FakeTaskExecutor::start(2);
    let session = cluster.leader_session(&te.rpc).await;

    let reply =
        cluster.gateway(&te.rpc, Some(session)).register_task_executor(&te.registration(PROTOCOL_VERSION)).await;
    assert!(matches!(reply, Ok(RegistrationResponse::Success { .. })), "{reply:?}");
    let o = cluster.wait_for_overview(&te.rpc, |o| o.task_managers == 1).await;
    assert_eq!((o.slots_total, o.slots_free), (2, 2));

    let infos = cluster.gateway(&te.rpc, None).task_managers().await.unwrap().unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].resource_id, te.resource_id);
    assert_eq!(infos[0].slots_number, 2);
    let unknown = cluster.gateway(&te.rpc, None).task_manager(ResourceId::new("nope")).await.unwrap();
    assert!(matches!(unknown, Err(ResourceManagerError::UnknownTaskExecutor { .. })));

    // Unfenced registration is refused by the transport.
    let err = cluster.gateway(&te.rpc, None).register_task_executor(&te.registration(PROTOCOL_VERSION)).await;
    assert!(matches!(err, Err(RpcError::Fenced { .. })), "{err:?}");

    // Another protocol version is refused with a clear reason.
    let reply = cluster
        .gateway(&te.rpc, Some(session))
        .register_task_executor(&te.registration(PROTOCOL_VERSION + 1))
        .await
        .unwrap();
    match reply {
        RegistrationResponse::Rejected { reason } => assert!(reason.contains("protocol version"), "{reason}"),
        other => panic!("expected a rejection, got {other:?}"),
    }

    // A graceful disconnect removes the task executor and its slots.
    cluster.gateway(&te.rpc, Some(session)).disconnect_task_manager(te.resource_id.clone(), "bye").await.unwrap();
    cluster.wait_for_overview(&te.rpc, |o| o.task_managers == 0 && o.slots_total == 0).await;
    te.rpc.stop();
}

#[tokio::test]
async fn revoke_clears_the_session_and_rejects_fenced_messages() {
    let cluster = Cluster::start(Duration::from_secs(10), Duration::from_secs(50));
    let te = FakeTaskExecutor::start(1);
    let old = cluster.leader_session(&te.rpc).await;
    let reply = cluster.gateway(&te.rpc, Some(old)).register_task_executor(&te.registration(PROTOCOL_VERSION)).await;
    assert!(matches!(reply, Ok(RegistrationResponse::Success { .. })));

    cluster.election.revoke();
    let until = Instant::now() + DEADLINE;
    while cluster.session(&te.rpc).await.is_some() {
        assert!(Instant::now() < until, "session not cleared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = cluster.gateway(&te.rpc, Some(old)).register_task_executor(&te.registration(PROTOCOL_VERSION)).await;
    assert!(matches!(err, Err(RpcError::Fenced { .. })), "{err:?}");
    let err = cluster.gateway(&te.rpc, Some(old)).disconnect_task_manager(te.resource_id.clone(), "x").await;
    assert!(matches!(err, Err(RpcError::Fenced { .. })), "{err:?}");
    assert_eq!(cluster.gateway(&te.rpc, None).overview().await.unwrap(), Err(ResourceManagerError::NotLeader));
    // The deposed leader told its task executor to register again.
    let until = Instant::now() + DEADLINE;
    while te.disconnects.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < until, "task executor was not told to disconnect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A new grant has a new session; the old token stays useless.
    let new = cluster.election.grant().unwrap();
    assert_ne!(new, old);
    assert_eq!(cluster.leader_session(&te.rpc).await, new);
    let err = cluster.gateway(&te.rpc, Some(old)).register_task_executor(&te.registration(PROTOCOL_VERSION)).await;
    assert!(matches!(err, Err(RpcError::Fenced { .. })));
    let reply = cluster.gateway(&te.rpc, Some(new)).register_task_executor(&te.registration(PROTOCOL_VERSION)).await;
    assert!(matches!(reply, Ok(RegistrationResponse::Success { .. })));
    te.rpc.stop();
}

#[tokio::test]
async fn a_silent_task_executor_is_removed_after_the_heartbeat_timeout() {
    let cluster = Cluster::start(Duration::from_millis(100), Duration::from_millis(500));
    let silent = FakeTaskExecutor::start(2);
    let healthy = FakeTaskExecutor::start(1);
    let session = cluster.leader_session(&silent.rpc).await;
    for te in [&silent, &healthy] {
        let r =
            cluster.gateway(&te.rpc, Some(session)).register_task_executor(&te.registration(PROTOCOL_VERSION)).await;
        assert!(matches!(r, Ok(RegistrationResponse::Success { .. })));
    }
    cluster.wait_for_overview(&healthy.rpc, |o| o.task_managers == 2 && o.slots_total == 3).await;

    silent.answer.store(false, Ordering::SeqCst);
    let started = Instant::now();
    let o = cluster.wait_for_overview(&healthy.rpc, |o| o.task_managers == 1).await;
    assert_eq!(o.slots_total, 1, "only the healthy task executor's slot remains");
    assert!(started.elapsed() >= Duration::from_millis(400), "removed before its timeout");
    let until = Instant::now() + DEADLINE;
    while silent.disconnects.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < until, "the silent task executor was not told to register again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    silent.rpc.stop();
    healthy.rpc.stop();
}

#[tokio::test]
async fn an_unreachable_task_executor_is_removed_after_the_rpc_failure_threshold() {
    let cluster = Cluster::start(Duration::from_millis(100), Duration::from_secs(50));
    let te = FakeTaskExecutor::start(2);
    let session = cluster.leader_session(&te.rpc).await;
    let r = cluster.gateway(&te.rpc, Some(session)).register_task_executor(&te.registration(PROTOCOL_VERSION)).await;
    assert!(matches!(r, Ok(RegistrationResponse::Success { .. })));
    cluster.wait_for_overview(&cluster.rpc, |o| o.task_managers == 1).await;
    te.rpc.stop(); // the process is gone: connections are refused
    cluster.wait_for_overview(&cluster.rpc, |o| o.task_managers == 0 && o.slots_total == 0).await;
}

#[tokio::test]
async fn heartbeat_slot_reports_are_the_ground_truth() {
    let cluster = Cluster::start(Duration::from_millis(50), Duration::from_secs(50));
    let te = FakeTaskExecutor::start(2);
    let session = cluster.leader_session(&te.rpc).await;
    let r = cluster.gateway(&te.rpc, Some(session)).register_task_executor(&te.registration(PROTOCOL_VERSION)).await;
    assert!(matches!(r, Ok(RegistrationResponse::Success { .. })));
    cluster.wait_for_overview(&te.rpc, |o| o.slots_free == 2).await;

    // The task executor reports slot 1 taken: the ResourceManager follows the report.
    {
        let mut report = te.report.lock().unwrap();
        report.slots[1].allocation_id = Some(AllocationId::generate());
        report.slots[1].job_id = Some(JobId::generate());
    }
    cluster.wait_for_overview(&te.rpc, |o| o.slots_free == 1 && o.slots_total == 2).await;
    let info = cluster.gateway(&te.rpc, None).task_manager(te.resource_id.clone()).await.unwrap().unwrap();
    assert_eq!(info.allocated_slots.len(), 1);
    assert_eq!(info.free_slots, 1);

    // And frees it again when the report says so.
    te.report.lock().unwrap().slots[1].allocation_id = None;
    cluster.wait_for_overview(&te.rpc, |o| o.slots_free == 2).await;
    te.rpc.stop();
}
