//! High availability against a real ZooKeeper (started per test by
//! `flint_tests::zookeeper::ZooKeeperServer`), and the same behaviours of the standalone
//! implementations where they apply. Two `ZooKeeperHaServices` in one test play two
//! JobManager processes (each has its own session, latch node and lock id).
//!
//! The behavioural checks are written once against the traits (`exercise_*`) and run on both
//! implementations. Every wait has a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flint_common::config::Configuration;
use flint_common::ha::{
    create_ha_services, job_component, wait, CheckpointIdCounter, CompletedCheckpointStore, HaConfig, HaError,
    HaServices, JobResultStore, LeaderContender, LeaderRetrieval, MemoryJobResultStore, MemoryStateHandleStore,
    StandaloneHaServices, StateHandleStore, ZooKeeperHaServices, DISPATCHER, RESOURCE_MANAGER,
};
use flint_common::ids::{JobId, LeaderSessionId};
use flint_tests::zookeeper::{TcpProxy, ZooKeeperServer};

const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it answers `Some`, failing after `deadline` with `what`.
fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Recorders
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Granted(LeaderSessionId),
    Revoked,
}

#[derive(Default)]
struct Contender {
    events: Mutex<Vec<Event>>,
}

impl LeaderContender for Contender {
    fn grant_leadership(&self, session: LeaderSessionId) {
        self.events.lock().unwrap().push(Event::Granted(session));
    }
    fn revoke_leadership(&self) {
        self.events.lock().unwrap().push(Event::Revoked);
    }
}

impl Contender {
    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The session the contender believes it leads under.
    fn leading(&self) -> Option<LeaderSessionId> {
        match self.events().last() {
            Some(Event::Granted(session)) => Some(*session),
            _ => None,
        }
    }

    fn wait_leading(&self, what: &str) -> LeaderSessionId {
        wait_for(what, DEADLINE, || self.leading())
    }

    fn wait_revoked(&self, what: &str) {
        wait_for(what, DEADLINE, || (self.events().last() == Some(&Event::Revoked)).then_some(()))
    }
}

type Leader = Option<(LeaderSessionId, String)>;

/// A started retrieval and everything it reported.
struct Retrieved {
    retrieval: Arc<dyn LeaderRetrieval>,
    seen: Arc<Mutex<Vec<Leader>>>,
}

impl Retrieved {
    fn start(retrieval: Arc<dyn LeaderRetrieval>) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        retrieval.start(Arc::new(move |leader: Leader| sink.lock().unwrap().push(leader)));
        Self { retrieval, seen }
    }

    fn wait_for_leader(&self, what: &str, expected: Leader) {
        wait_for(what, DEADLINE, || (self.seen.lock().unwrap().last() == Some(&expected)).then_some(()));
    }
}

impl Drop for Retrieved {
    fn drop(&mut self) {
        self.retrieval.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Behaviours, written against the traits
// ---------------------------------------------------------------------------------------

/// A single election: granted at start (fresh session), confirmation only for the current
/// session, stop revokes.
fn exercise_single_election(services: &dyn HaServices) {
    let election = services.leader_election(DISPATCHER);
    let contender = Arc::new(Contender::default());
    election.start(contender.clone());
    let session = contender.wait_leading("leadership after start");
    assert!(election.has_leadership(session));
    assert!(!election.has_leadership(LeaderSessionId::generate()));
    election.confirm_leadership(LeaderSessionId::generate(), "flint://stale:1/dispatcher");
    assert_eq!(election.confirmed_leader(), None, "a stale confirmation is ignored");
    election.confirm_leadership(session, "flint://localhost:6123/dispatcher");
    assert_eq!(election.confirmed_leader(), Some((session, "flint://localhost:6123/dispatcher".to_string())));
    election.stop();
    contender.wait_revoked("revocation after stop");
    assert!(!election.has_leadership(session));
    assert_eq!(election.confirmed_leader(), None);
}

/// Lock semantics between two owners (two processes) of the same entries.
fn exercise_store_locks(a: &dyn StateHandleStore, b: &dyn StateHandleStore) {
    wait(a.put("x", b"first".to_vec())).unwrap();
    assert!(matches!(wait(b.put("x", b"second".to_vec())), Err(HaError::AlreadyExists { .. })));
    assert_eq!(wait(b.get("x")).unwrap(), Some(b"first".to_vec()), "b reads (and locks) a's entry");
    assert_eq!(wait(a.names()).unwrap(), vec!["x".to_string()]);
    assert!(!wait(a.remove("x")).unwrap(), "b still holds a lock on x");
    assert_eq!(wait(b.names()).unwrap(), vec!["x".to_string()], "the locked entry stays");
    assert_eq!(wait(a.get("x")).unwrap(), Some(b"first".to_vec()));
    wait(a.release("x")).unwrap();
    wait(b.release("x")).unwrap();
    assert!(wait(a.remove("x")).unwrap(), "no lock left");
    assert_eq!(wait(b.get("x")).unwrap(), None);
    assert!(wait(b.names()).unwrap().is_empty());
    assert!(wait(b.remove("x")).unwrap(), "removing what is gone is done");

    wait(a.put("y", b"y".to_vec())).unwrap();
    wait(b.put("z", b"z".to_vec())).unwrap();
    assert_eq!(wait(b.get("y")).unwrap(), Some(b"y".to_vec()));
    assert_eq!(wait(a.names()).unwrap(), vec!["y".to_string(), "z".to_string()]);
    assert!(!wait(a.remove("z")).unwrap(), "z is b's entry, locked by b");
    wait(b.release_all()).unwrap();
    assert!(wait(a.remove("y")).unwrap(), "b released all its locks");
    assert!(wait(a.remove("z")).unwrap(), "b released z too");
    assert!(wait(a.names()).unwrap().is_empty());
}

/// Ids from any number of counters on the same job, used concurrently, are never the same.
fn exercise_counter(counters: Vec<Arc<dyn CheckpointIdCounter>>, per_thread: usize) {
    let first = counters[0].get().unwrap();
    let threads: Vec<_> = counters
        .iter()
        .flat_map(|c| [c.clone(), c.clone()])
        .map(|counter| {
            std::thread::spawn(move || {
                (0..per_thread).map(|_| counter.get_and_increment().unwrap()).collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for thread in threads {
        let ids = thread.join().unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids of one thread increase: {ids:?}");
        for id in ids {
            assert!(id >= first);
            assert!(all.insert(id), "id {id} was handed out twice");
        }
    }
    assert_eq!(all.len(), counters.len() * 2 * per_thread);
    let next = counters[0].get().unwrap();
    assert!(next > *all.last().unwrap());
    counters[1].set_count(next + 100).unwrap();
    assert_eq!(counters[0].get_and_increment().unwrap(), next + 100);
}

/// Dirty, then clean; seen by a second store on the same backing.
fn exercise_job_result_store(a: &dyn JobResultStore, b: &dyn JobResultStore) {
    let job = JobId::generate();
    assert!(!a.has_result(job).unwrap());
    a.create_dirty(job, serde_json::json!({"application-status": "SUCCEEDED"})).unwrap();
    assert!(matches!(b.create_dirty(job, serde_json::json!({})), Err(HaError::AlreadyExists { .. })));
    assert!(b.has_dirty_result(job).unwrap());
    assert_eq!(b.dirty_results().unwrap().iter().map(|e| e.job_id).collect::<Vec<_>>(), vec![job]);
    b.mark_clean(job).unwrap();
    assert!(a.has_clean_result(job).unwrap() && !a.has_dirty_result(job).unwrap());
    assert!(a.dirty_results().unwrap().is_empty());
    let entry = a.get(job).unwrap().unwrap();
    assert!(entry.clean);
    assert_eq!(entry.result["application-status"], "SUCCEEDED");
    a.mark_clean(job).unwrap();
    assert!(matches!(a.mark_clean(JobId::generate()), Err(HaError::NotFound { .. })));
}

/// The newest checkpoints are kept and found by a second process.
fn exercise_completed_checkpoints(a: &CompletedCheckpointStore, b: &CompletedCheckpointStore) {
    assert_eq!(wait(a.latest()).unwrap(), None);
    for id in [7, 8] {
        assert!(wait(a.add(id, format!("checkpoint {id}").into_bytes())).unwrap().is_empty());
    }
    assert_eq!(wait(a.add(10, b"checkpoint 10".to_vec())).unwrap(), vec![7]);
    assert_eq!(wait(b.checkpoint_ids()).unwrap(), vec![8, 10]);
    assert_eq!(wait(b.latest()).unwrap(), Some((10, b"checkpoint 10".to_vec())));
    // b now holds locks on 10: a cannot subsume it while b uses it.
    assert_eq!(wait(a.add(11, b"11".to_vec())).unwrap(), vec![8]);
    assert_eq!(wait(a.add(12, b"12".to_vec())).unwrap(), Vec::<u64>::new(), "10 is locked by b");
    assert_eq!(wait(a.checkpoint_ids()).unwrap(), vec![10, 11, 12]);
    wait(b.release_all()).unwrap();
    assert_eq!(wait(a.add(13, b"13".to_vec())).unwrap(), vec![10, 11]);
    assert_eq!(wait(b.latest()).unwrap(), Some((13, b"13".to_vec())));
}

// ---------------------------------------------------------------------------------------
// Standalone
// ---------------------------------------------------------------------------------------

#[test]
fn standalone_election_grants_confirms_and_revokes() {
    exercise_single_election(&StandaloneHaServices::new(BTreeMap::new()));
}

#[test]
fn standalone_state_handle_store_locks() {
    let a = MemoryStateHandleStore::new();
    exercise_store_locks(&a, &a.new_owner());
}

#[test]
fn standalone_checkpoint_ids_are_unique() {
    let services = StandaloneHaServices::new(BTreeMap::new());
    let job = JobId::generate();
    exercise_counter(vec![services.checkpoint_id_counter(job), services.checkpoint_id_counter(job)], 200);
}

#[test]
fn standalone_job_result_store_dirty_then_clean() {
    let store = MemoryJobResultStore::new();
    exercise_job_result_store(&store, &store);
}

#[test]
fn standalone_completed_checkpoints_keep_the_newest() {
    let a = MemoryStateHandleStore::new();
    let b = a.new_owner();
    exercise_completed_checkpoints(
        &CompletedCheckpointStore::new(Arc::new(a), 2),
        &CompletedCheckpointStore::new(Arc::new(b), 2),
    );
}

// ---------------------------------------------------------------------------------------
// ZooKeeper
// ---------------------------------------------------------------------------------------

fn start_zookeeper(name: &str) -> ZooKeeperServer {
    ZooKeeperServer::start(name).unwrap_or_else(|e| panic!("cannot start ZooKeeper for {name}: {e}"))
}

/// The configuration of one test cluster (`cluster`) on `zk`, with short timeouts.
fn conf(zk: &ZooKeeperServer, cluster: &str, extra: &[(&str, &str)]) -> Configuration {
    let mut conf = Configuration::new();
    for (key, value) in [
        ("high-availability.type", "zookeeper"),
        ("high-availability.zookeeper.quorum", zk.connect_string().as_str()),
        ("high-availability.storageDir", storage(zk).to_str().unwrap()),
        ("high-availability.cluster-id", cluster),
        ("high-availability.zookeeper.client.session-timeout", "6 s"),
        // Bounds waiting for a session (generous: a loaded machine is slow), not the tests.
        ("high-availability.zookeeper.client.connection-timeout", "15 s"),
        ("high-availability.zookeeper.client.retry-wait", "100 ms"),
        ("high-availability.zookeeper.client.max-retry-attempts", "5"),
    ] {
        conf.set(key, value);
    }
    for (key, value) in extra {
        conf.set(*key, *value);
    }
    conf
}

fn storage(zk: &ZooKeeperServer) -> PathBuf {
    zk.dir.join("ha-storage")
}

/// One "JobManager process".
fn process(conf: &Configuration) -> Arc<ZooKeeperHaServices> {
    match HaConfig::from_configuration(conf).unwrap() {
        HaConfig::ZooKeeper(zk) => Arc::new(ZooKeeperHaServices::start(zk).unwrap()),
        HaConfig::None => panic!("not a zookeeper configuration"),
    }
}

#[test]
fn zookeeper_config_creates_services_and_an_unreachable_quorum_fails_clearly() {
    let zk = start_zookeeper("config");
    let services = create_ha_services(&conf(&zk, "config", &[]), BTreeMap::new()).unwrap();
    assert_eq!(services.mode(), "zookeeper");
    exercise_single_election(&*services);
    services.close();

    let mut unreachable = conf(&zk, "config", &[("high-availability.zookeeper.client.connection-timeout", "1 s")]);
    unreachable.set("high-availability.zookeeper.quorum", format!("127.0.0.1:{}", flint_tests::free_port()));
    let error = create_ha_services(&unreachable, BTreeMap::new()).err().expect("no zookeeper there");
    assert!(matches!(error, HaError::NoSession { .. }), "{error}");
    assert!(error.to_string().contains("high-availability.zookeeper.quorum"), "{error}");

    let mut no_storage = conf(&zk, "config", &[]);
    no_storage.remove("high-availability.storageDir");
    let error = create_ha_services(&no_storage, BTreeMap::new()).err().expect("storage dir is required");
    assert!(error.to_string().contains("high-availability.storageDir"), "{error}");
}

#[test]
fn zookeeper_exactly_one_process_leads_and_publishes_its_address() {
    let zk = start_zookeeper("one-leader");
    let conf = conf(&zk, "one-leader", &[]);
    let (a, b) = (process(&conf), process(&conf));
    let (dispatcher_a, dispatcher_b) = (a.leader_election(DISPATCHER), b.leader_election(DISPATCHER));
    let (contender_a, contender_b) = (Arc::new(Contender::default()), Arc::new(Contender::default()));
    dispatcher_a.start(contender_a.clone());
    dispatcher_b.start(contender_b.clone());

    let (leader, leader_contender, follower, follower_contender, leader_election, follower_election) =
        wait_for("a leader", DEADLINE, || match (contender_a.leading(), contender_b.leading()) {
            (Some(_), None) => Some((&a, &contender_a, &b, &contender_b, &dispatcher_a, &dispatcher_b)),
            (None, Some(_)) => Some((&b, &contender_b, &a, &contender_a, &dispatcher_b, &dispatcher_a)),
            (Some(_), Some(_)) => panic!("two leaders"),
            (None, None) => None,
        });
    let session = leader_contender.leading().unwrap();
    assert!(leader.is_leader() && !follower.is_leader());
    assert!(follower_contender.events().is_empty(), "the follower was never granted");

    // A second component of each process shares the process's latch.
    let (rm_leader, rm_follower) = (Arc::new(Contender::default()), Arc::new(Contender::default()));
    let (rm_leader_election, rm_follower_election) =
        (leader.leader_election(RESOURCE_MANAGER), follower.leader_election(RESOURCE_MANAGER));
    rm_leader_election.start(rm_leader.clone());
    rm_follower_election.start(rm_follower.clone());
    let rm_session = rm_leader.wait_leading("resource manager of the leading process");
    assert_ne!(rm_session, session, "one session id per grant");

    // The confirmed address is published and read back by the other process.
    let retrieved = Retrieved::start(follower.leader_retrieval(DISPATCHER).unwrap());
    retrieved.wait_for_leader("no leader before confirmation", None);
    leader_election.confirm_leadership(session, "flint://leader:6123/dispatcher");
    let expected = Some((session, "flint://leader:6123/dispatcher".to_string()));
    retrieved.wait_for_leader("the confirmed leader", expected.clone());
    let same_process = Retrieved::start(leader.leader_retrieval(DISPATCHER).unwrap());
    same_process.wait_for_leader("the confirmed leader, from the leading process", expected);
    // A follower's confirmation is ignored and publishes nothing.
    follower_election.confirm_leadership(LeaderSessionId::generate(), "flint://follower:1/dispatcher");
    assert_eq!(follower_election.confirmed_leader(), None);
    assert!(rm_follower.events().is_empty());

    // Flink's layout: one latch node per process, connection_info per component (ephemeral
    // nodes, as the server lists them per session).
    let dump = zk.four_letter_word("dump").unwrap();
    assert_eq!(dump.matches("/flink/one-leader/leader/latch/_c_").count(), 2, "{dump}");
    assert!(dump.contains("/flink/one-leader/leader/dispatcher/connection_info"), "{dump}");

    a.close();
    b.close();
}

#[test]
fn zookeeper_stopping_the_leader_hands_over_with_a_new_session() {
    let zk = start_zookeeper("handover");
    let conf = conf(&zk, "handover", &[]);
    let (a, b) = (process(&conf), process(&conf));
    let (election_a, election_b) = (a.leader_election(DISPATCHER), b.leader_election(DISPATCHER));
    let (contender_a, contender_b) = (Arc::new(Contender::default()), Arc::new(Contender::default()));
    election_a.start(contender_a.clone());
    let session_a = contender_a.wait_leading("a leads");
    election_b.start(contender_b.clone());
    election_a.confirm_leadership(session_a, "flint://a:1/dispatcher");
    let retrieved = Retrieved::start(b.leader_retrieval(DISPATCHER).unwrap());
    retrieved.wait_for_leader("a's address", Some((session_a, "flint://a:1/dispatcher".into())));
    assert!(contender_b.events().is_empty());

    election_a.stop();
    contender_a.wait_revoked("a revoked on stop");
    let session_b = contender_b.wait_leading("b takes over");
    assert_ne!(session_b, session_a, "a new leader session");
    assert!(!a.is_leader());
    election_b.confirm_leadership(session_b, "flint://b:1/dispatcher");
    retrieved.wait_for_leader("b's address", Some((session_b, "flint://b:1/dispatcher".into())));
    assert_eq!(contender_a.events(), vec![Event::Granted(session_a), Event::Revoked]);

    // a enters again and waits behind b.
    election_a.start(contender_a.clone());
    b.close();
    contender_b.wait_revoked("b revoked on close");
    let again = contender_a.wait_leading("a leads again");
    assert!(again != session_a && again != session_b);
    a.close();
}

#[test]
fn zookeeper_session_loss_revokes_and_the_other_process_takes_over() {
    let zk = start_zookeeper("session-loss");
    let proxy = TcpProxy::start(zk.port).unwrap();
    let short = ("high-availability.zookeeper.client.session-timeout", "2 s");
    // a reaches ZooKeeper through the proxy and tolerates a suspended connection, so only
    // the loss of its session can revoke its leadership.
    let mut conf_a = conf(
        &zk,
        "session-loss",
        &[short, ("high-availability.zookeeper.client.tolerate-suspended-connections", "true")],
    );
    conf_a.set("high-availability.zookeeper.quorum", proxy.connect_string());
    let (a, b) = (process(&conf_a), process(&conf(&zk, "session-loss", &[short])));
    let job = JobId::generate();
    let (election_a, election_b) = (a.leader_election(&job_component(job)), b.leader_election(&job_component(job)));
    let (contender_a, contender_b) = (Arc::new(Contender::default()), Arc::new(Contender::default()));
    election_a.start(contender_a.clone());
    let session_a = contender_a.wait_leading("a leads");
    election_a.confirm_leadership(session_a, "flint://a:1/jobmanager");
    election_b.start(contender_b.clone());
    let retrieved = Retrieved::start(b.leader_retrieval(&job_component(job)).unwrap());
    retrieved.wait_for_leader("a's address", Some((session_a, "flint://a:1/jobmanager".into())));
    let zk_session_a = a.session_id().unwrap();

    // A partition: ZooKeeper expires a's session (its latch and connection_info vanish) and b
    // takes over; a, unable to reach ZooKeeper, sees its session expire and revokes.
    proxy.cut();
    let session_b = contender_b.wait_leading("b takes over");
    assert_ne!(session_b, session_a);
    contender_a.wait_revoked("a revoked when its session expired");
    assert_eq!(contender_a.events(), vec![Event::Granted(session_a), Event::Revoked]);
    election_b.confirm_leadership(session_b, "flint://b:1/jobmanager");
    retrieved.wait_for_leader("b's address", Some((session_b, "flint://b:1/jobmanager".into())));

    // a reconnects with a new session and enters the election again, behind b.
    proxy.restore();
    wait_for("a's new session", DEADLINE, || a.session_id().filter(|id| *id != zk_session_a));
    let a_store = a.job_graph_store();
    wait(a_store.job_ids()).unwrap();
    assert_eq!(contender_a.events(), vec![Event::Granted(session_a), Event::Revoked]);
    assert!(!a.is_leader());
    b.close();
    let session_a2 = contender_a.wait_leading("a leads again after b closed");
    assert!(session_a2 != session_a && session_a2 != session_b);
    a.close();
}

#[test]
fn zookeeper_checkpoint_ids_are_unique_across_processes() {
    let zk = start_zookeeper("counter");
    let conf = conf(&zk, "counter", &[]);
    let (a, b) = (process(&conf), process(&conf));
    let job = JobId::generate();
    assert_eq!(a.checkpoint_id_counter(job).get().unwrap(), 1, "a new counter starts at 1");
    exercise_counter(vec![a.checkpoint_id_counter(job), b.checkpoint_id_counter(job)], 40);
    // Another job has its own counter.
    assert_eq!(b.checkpoint_id_counter(JobId::generate()).get_and_increment().unwrap(), 1);

    // The synchronous counter may be used inside a leadership callback (which runs on an HA
    // thread): a JobMaster that takes a checkpoint id as soon as it is granted.
    struct TakesAnId {
        counter: Arc<dyn CheckpointIdCounter>,
        taken: Mutex<Vec<u64>>,
    }
    impl LeaderContender for TakesAnId {
        fn grant_leadership(&self, _session: LeaderSessionId) {
            self.taken.lock().unwrap().push(self.counter.get_and_increment().unwrap());
        }
        fn revoke_leadership(&self) {}
    }
    let contender = Arc::new(TakesAnId { counter: a.checkpoint_id_counter(job), taken: Mutex::new(Vec::new()) });
    let election = a.leader_election(&job_component(job));
    let next = b.checkpoint_id_counter(job).get().unwrap();
    election.start(contender.clone());
    let taken = wait_for("an id taken on grant", DEADLINE, || contender.taken.lock().unwrap().first().copied());
    assert_eq!(taken, next);
    election.stop();
    a.close();
    b.close();
}

#[test]
fn zookeeper_state_handle_store_locks_across_processes() {
    let zk = start_zookeeper("store-locks");
    let conf = conf(&zk, "store-locks", &[]);
    let (a, b) = (process(&conf), process(&conf));
    let (store_a, store_b) = (a.job_graph_store(), b.job_graph_store());
    exercise_store_locks(&**store_a.store(), &**store_b.store());

    // Locks are ephemeral: a process that dies releases its locks.
    let job = JobId::generate();
    wait(store_a.put(job, b"graph".to_vec())).unwrap();
    wait(store_a.put(job, b"graph".to_vec())).expect_err("already stored");
    assert_eq!(wait(store_b.get(job)).unwrap(), Some(b"graph".to_vec()));
    let dump = zk.four_letter_word("dump").unwrap();
    for process in [&a, &b] {
        let lock = format!("/flink/store-locks/jobgraphs/{job}/locks/{}", process.process_id());
        assert!(dump.contains(&lock), "{lock} in {dump}");
    }
    assert!(!wait(store_a.remove(job)).unwrap(), "b uses the job graph");
    b.close();
    assert!(wait(store_a.remove(job)).unwrap(), "b's lock went with its session");
    assert!(wait(store_a.job_ids()).unwrap().is_empty());
    a.close();
}

/// The value files of a store directory.
fn value_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    files
}

#[test]
fn zookeeper_missing_state_files_are_errors_and_orphans_are_cleaned_up() {
    let zk = start_zookeeper("state-files");
    let conf = conf(&zk, "state-files", &[]);
    let a = process(&conf);
    let store = a.job_graph_store();
    let dir = storage(&zk).join("state-files").join("jobgraphs");
    let (lost, kept) = (JobId::generate(), JobId::generate());
    wait(store.put(lost, b"lost graph".to_vec())).unwrap();
    let lost_file = value_files(&dir).pop().expect("the value is a file in the storage dir");
    wait(store.put(kept, b"kept graph".to_vec())).unwrap();
    assert_eq!(value_files(&dir).len(), 2);

    std::fs::remove_file(&lost_file).unwrap();
    match wait(store.get(lost)) {
        Err(HaError::MissingStateFile { name, path }) => assert_eq!((name, path), (lost.to_string(), lost_file)),
        other => panic!("expected a missing state file, got {other:?}"),
    }
    assert!(!HaError::MissingStateFile { name: String::new(), path: PathBuf::new() }.is_retryable());

    // A file without a handle (a crash between writing the value and the handle) is garbage.
    let orphan = dir.join("submittedJobGraph-orphan");
    std::fs::write(&orphan, b"orphan").unwrap();
    assert_eq!(wait(store.store().cleanup(Duration::from_secs(3600))).unwrap(), 0, "too young to collect");
    assert_eq!(wait(store.store().cleanup(Duration::ZERO)).unwrap(), 1);
    assert!(!orphan.exists());
    assert_eq!(wait(store.get(kept)).unwrap(), Some(b"kept graph".to_vec()), "referenced files stay");
    assert!(wait(store.remove(lost)).unwrap(), "an entry with a lost file can still be removed");
    assert_eq!(wait(store.job_ids()).unwrap(), vec![kept]);
    a.close();
}

#[test]
fn zookeeper_job_results_and_checkpoints_are_shared_between_processes() {
    let zk = start_zookeeper("recovery");
    let conf = conf(&zk, "recovery", &[]);
    let (a, b) = (process(&conf), process(&conf));
    exercise_job_result_store(&*a.job_result_store(), &*b.job_result_store());
    let results_dir = storage(&zk).join("job-result-store").join("recovery");
    assert!(value_files(&results_dir).iter().all(|f| f.to_string_lossy().ends_with(".json")));

    let job = JobId::generate();
    exercise_completed_checkpoints(&a.completed_checkpoint_store(job, 2), &b.completed_checkpoint_store(job, 2));
    assert_eq!(a.checkpoint_id_counter(job).get_and_increment().unwrap(), 1);
    wait(b.cleanup_job_data(job)).unwrap();
    assert!(wait(a.completed_checkpoint_store(job, 2).checkpoint_ids()).unwrap().is_empty());
    assert_eq!(a.checkpoint_id_counter(job).get().unwrap(), 1, "the counter went with the job's data");
    a.close();
    b.close();
}

#[test]
fn zookeeper_restart_within_the_session_timeout_revokes_only_untolerated_leadership() {
    let mut zk = start_zookeeper("restart");
    let timeouts = [("high-availability.zookeeper.client.session-timeout", "20 s")];
    let tolerant = process(&conf(
        &zk,
        "tolerant",
        &[timeouts[0], ("high-availability.zookeeper.client.tolerate-suspended-connections", "true")],
    ));
    let strict = process(&conf(&zk, "strict", &timeouts));
    let (election_t, election_s) = (tolerant.leader_election(DISPATCHER), strict.leader_election(DISPATCHER));
    let (contender_t, contender_s) = (Arc::new(Contender::default()), Arc::new(Contender::default()));
    election_t.start(contender_t.clone());
    election_s.start(contender_s.clone());
    let session_t = contender_t.wait_leading("tolerant leads");
    let session_s = contender_s.wait_leading("strict leads");
    election_t.confirm_leadership(session_t, "flint://t:1/dispatcher");
    let retrieved = Retrieved::start(tolerant.leader_retrieval(DISPATCHER).unwrap());
    retrieved.wait_for_leader("published", Some((session_t, "flint://t:1/dispatcher".into())));
    let (zk_t, zk_s) = (tolerant.session_id().unwrap(), strict.session_id().unwrap());

    zk.restart().unwrap();

    // The strict process gave up leadership while suspended and got it back (new session id)
    // once reconnected within its ZooKeeper session.
    let events = wait_for("strict revoked while suspended and granted again", DEADLINE, || {
        let events = contender_s.events();
        (events.len() >= 3).then_some(events)
    });
    let session_s2 = match events[..] {
        [Event::Granted(first), Event::Revoked, Event::Granted(second)] if first == session_s => second,
        _ => panic!("unexpected events {events:?}"),
    };
    assert_ne!(session_s2, session_s);
    // The tolerant process kept it throughout, and its ZooKeeper state survived.
    wait(tolerant.job_graph_store().job_ids()).unwrap();
    assert_eq!(contender_t.events(), vec![Event::Granted(session_t)]);
    assert!(election_t.has_leadership(session_t));
    assert_eq!((tolerant.session_id(), strict.session_id()), (Some(zk_t), Some(zk_s)), "same zookeeper sessions");
    retrieved.wait_for_leader("still published", Some((session_t, "flint://t:1/dispatcher".into())));
    tolerant.close();
    strict.close();
}
