//! The slot path end to end with a real ResourceManager and a real TaskExecutor: a
//! JobMaster (scripted here) requests slots, the TaskExecutor allocates and offers them,
//! declined or released slots flow back to the ResourceManager, and pending requests are
//! served when slots free up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flint_common::config::Configuration;
use flint_common::ha::StandaloneLeaderElection;
use flint_common::ids::{AllocationId, JobId, LeaderSessionId};
use flint_common::messages::*;
use flint_common::resources::ResourceProfile;
use flint_common::rpc::{Endpoint, FencingToken, RpcService, RpcServiceConfig};
use flint_resourcemanager::{spawn, ResourceManagerConfig};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);
const ASK: Duration = Duration::from_secs(5);

/// Polls `check` every 20 ms until it yields a value; fails after the deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_are_allocated_offered_declined_freed_and_reused() {
    // The jobmanager side: RPC service and ResourceManager.
    let jm_rpc = RpcService::start(RpcServiceConfig::loopback()).unwrap();
    let rm_config = ResourceManagerConfig {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(10),
        rpc_failure_threshold: 2,
        slot_request_timeout: Duration::from_secs(300),
    };
    let rm = spawn(rm_config, jm_rpc.clone(), Arc::new(StandaloneLeaderElection::new())).unwrap();
    let rm_address = rm.address.clone();
    let rm_gateway = {
        let rpc = jm_rpc.clone();
        move |token: Option<LeaderSessionId>| {
            ResourceManagerGateway(RemoteEndpoint::new(rpc.clone(), rm_address.clone(), ASK).with_token(token))
        }
    };

    // A real TaskExecutor with 2 slots.
    let mut config = Configuration::new();
    for (k, v) in [
        ("jobmanager.rpc.address", "127.0.0.1".to_string()),
        ("jobmanager.rpc.port", jm_rpc.port().to_string()),
        ("taskmanager.host", "127.0.0.1".into()),
        ("taskmanager.bind-host", "127.0.0.1".into()),
        ("taskmanager.numberOfTaskSlots", "2".into()),
    ] {
        config.set(k, v);
    }
    let te_shutdown = CancellationToken::new();
    let te_token = te_shutdown.clone();
    let te_thread = std::thread::spawn(move || flint_taskmanager::run(config, te_token));

    // A scripted JobMaster: accepts offers while `accept` is set, records them.
    let job_id = JobId::generate();
    let jm_session = LeaderSessionId::generate();
    let fencing = FencingToken::new();
    fencing.set(Some(jm_session));
    let accept = Arc::new(AtomicBool::new(true));
    let offers: Arc<Mutex<Vec<(OfferSlots, bool)>>> = Arc::default();
    let (a, o) = (accept.clone(), offers.clone());
    let job_master = jm_rpc.address_of(&format!("jobmaster/{job_id}"));
    jm_rpc.register_endpoint(
        Endpoint::new(job_master.endpoint.clone())
            .fenced(fencing)
            .on_fn(move |_: IdentifyLeader| async move {
                LeaderInfo {
                    leader_session_id: Some(jm_session),
                    protocol_version: flint_common::rpc::PROTOCOL_VERSION,
                }
            })
            .on_fn(move |offer: OfferSlots| {
                let accepted = a.load(Ordering::SeqCst);
                o.lock().unwrap().push((offer.clone(), accepted));
                async move {
                    if accepted {
                        offer.slots.iter().map(|s| s.allocation_id).collect()
                    } else {
                        Vec::new()
                    }
                }
            }),
    );

    let overview = {
        let gateway = rm_gateway.clone();
        move || {
            let fut = gateway(None).overview();
            async move { fut.await.ok().and_then(Result::ok) }
        }
    };
    let free_slots = |n: usize| {
        let overview = overview.clone();
        move || {
            let fut = overview();
            async move { fut.await.filter(|o| o.slots_total == 2 && o.slots_free == n) }
        }
    };
    eventually("the task executor to register", free_slots(2)).await;
    let rm_session = rm_gateway(None).identify().await.unwrap().leader_session_id.unwrap();
    let request = |allocation_id| RequestSlots {
        job_id,
        job_master: job_master.clone(),
        requests: vec![SlotRequestSpec { allocation_id, profile: ResourceProfile::ANY }],
    };
    let offered = |allocation_id: AllocationId, accepted: bool| {
        let offers = offers.clone();
        move || {
            let found = offers
                .lock()
                .unwrap()
                .iter()
                .find(|(o, ok)| *ok == accepted && o.slots[0].allocation_id == allocation_id)
                .map(|(o, _)| o.clone());
            async move { found }
        }
    };

    // 1. A requested slot is allocated at the task executor and offered to the job master.
    let first = AllocationId::generate();
    rm_gateway(Some(rm_session)).request_slots(&request(first)).await.unwrap().unwrap();
    let offer = eventually("the slot offer", offered(first, true)).await;
    assert!(offer.data_address.starts_with("127.0.0.1:"), "{}", offer.data_address);
    eventually("one slot in use", free_slots(1)).await;
    let tm = rm_gateway(None).task_managers().await.unwrap().unwrap().remove(0);
    assert_eq!(tm.allocated_slots.len(), 1);
    assert_eq!(tm.allocated_slots[0].job_id, job_id);

    // Unfenced slot requests are refused.
    assert!(rm_gateway(None).request_slots(&request(AllocationId::generate())).await.is_err());

    // 2. A declined offer frees the slot again.
    accept.store(false, Ordering::SeqCst);
    let declined = AllocationId::generate();
    rm_gateway(Some(rm_session)).request_slots(&request(declined)).await.unwrap().unwrap();
    eventually("the declined offer", offered(declined, false)).await;
    eventually("the declined slot to be free again", free_slots(1)).await;

    // 3. With every slot taken a request waits, and is served when a slot is released.
    accept.store(true, Ordering::SeqCst);
    let second = AllocationId::generate();
    let third = AllocationId::generate();
    rm_gateway(Some(rm_session)).request_slots(&request(second)).await.unwrap().unwrap();
    eventually("the second offer", offered(second, true)).await;
    rm_gateway(Some(rm_session)).request_slots(&request(third)).await.unwrap().unwrap();
    eventually("both slots in use", free_slots(0)).await;
    let te = TaskExecutorGateway(RemoteEndpoint::new(jm_rpc.clone(), tm.address.clone(), ASK));
    assert!(te.free_slot(first, "job finished").await.unwrap());
    assert!(!te.free_slot(first, "again").await.unwrap(), "freeing twice is a no-op");
    eventually("the waiting request to get the released slot", offered(third, true)).await;
    eventually("both slots in use again", free_slots(0)).await;

    te_shutdown.cancel();
    tokio::task::spawn_blocking(move || te_thread.join().unwrap().unwrap()).await.unwrap();
    rm.stop();
    jm_rpc.stop();
}
