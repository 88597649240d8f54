//! The standalone (`high-availability.type: none`) implementations: one jobmanager, nothing
//! survives it. Leadership is granted at start; leader retrieval reports a fixed address; the
//! stores live in memory for the life of the [`StandaloneHaServices`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::job_result_store::MemoryJobResultStore;
use super::store::{CompletedCheckpointStore, JobGraphStore, MemoryStateHandleStore};
use super::{
    CheckpointIdCounter, HaError, HaFuture, HaServices, JobResultStore, LeaderContender, LeaderElection,
    LeaderRetrieval, LeaderRetrievalListener,
};
use crate::ids::{JobId, LeaderSessionId};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// Election
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct StandaloneState {
    contender: Option<Arc<dyn LeaderContender>>,
    session: Option<LeaderSessionId>,
    confirmed: Option<(LeaderSessionId, String)>,
}

/// The election of a cluster with exactly one jobmanager: whoever starts is leader,
/// with a fresh session id per grant (so peers notice a restarted jobmanager by its new
/// token).
#[derive(Default)]
pub struct StandaloneLeaderElection {
    state: Mutex<StandaloneState>,
}

impl StandaloneLeaderElection {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, StandaloneState> {
        lock(&self.state)
    }

    /// Takes leadership away (shutdown; tests of revocation).
    pub fn revoke(&self) {
        let contender = {
            let mut state = self.state();
            state.session = None;
            state.confirmed = None;
            state.contender.clone()
        };
        if let Some(contender) = contender {
            contender.revoke_leadership();
        }
    }

    /// Grants leadership again under a fresh session id.
    pub fn grant(&self) -> Option<LeaderSessionId> {
        let (contender, session) = {
            let mut state = self.state();
            let contender = state.contender.clone()?;
            let session = LeaderSessionId::generate();
            state.session = Some(session);
            state.confirmed = None;
            (contender, session)
        };
        contender.grant_leadership(session);
        Some(session)
    }
}

impl LeaderElection for StandaloneLeaderElection {
    fn start(&self, contender: Arc<dyn LeaderContender>) {
        self.state().contender = Some(contender);
        self.grant();
    }

    fn confirm_leadership(&self, session: LeaderSessionId, address: &str) {
        let mut state = self.state();
        if state.session == Some(session) {
            state.confirmed = Some((session, address.to_string()));
        }
    }

    fn has_leadership(&self, session: LeaderSessionId) -> bool {
        self.state().session == Some(session)
    }

    fn confirmed_leader(&self) -> Option<(LeaderSessionId, String)> {
        self.state().confirmed.clone()
    }

    fn stop(&self) {
        self.revoke();
        self.state().contender = None;
    }
}

// ---------------------------------------------------------------------------------------
// Retrieval
// ---------------------------------------------------------------------------------------

/// The session id standalone leader retrieval reports: the nil id (Flink's
/// `DEFAULT_LEADER_ID`). It means "unknown": the peer learns the real fencing token from the
/// leader (e.g. in the registration answer).
pub const STANDALONE_LEADER_SESSION: LeaderSessionId = LeaderSessionId::from_u128(0);

/// Leader retrieval with a fixed address: `start` reports
/// `Some((STANDALONE_LEADER_SESSION, address))` once; the leader never changes.
pub struct StandaloneLeaderRetrieval {
    address: String,
    listener: Mutex<Option<Arc<dyn LeaderRetrievalListener>>>,
}

impl StandaloneLeaderRetrieval {
    pub fn new(address: impl Into<String>) -> Self {
        Self { address: address.into(), listener: Mutex::new(None) }
    }
}

impl LeaderRetrieval for StandaloneLeaderRetrieval {
    fn start(&self, listener: Arc<dyn LeaderRetrievalListener>) {
        *lock(&self.listener) = Some(listener.clone());
        listener.notify_leader(Some((STANDALONE_LEADER_SESSION, self.address.clone())));
    }

    fn stop(&self) {
        lock(&self.listener).take();
    }
}

// ---------------------------------------------------------------------------------------
// Checkpoint ids
// ---------------------------------------------------------------------------------------

/// An in-memory [`CheckpointIdCounter`]; the first id is 1.
#[derive(Debug)]
pub struct StandaloneCheckpointIdCounter {
    next: std::sync::atomic::AtomicU64,
}

impl StandaloneCheckpointIdCounter {
    pub fn new() -> Self {
        Self { next: std::sync::atomic::AtomicU64::new(1) }
    }
}

impl Default for StandaloneCheckpointIdCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl CheckpointIdCounter for StandaloneCheckpointIdCounter {
    fn get_and_increment(&self) -> Result<u64, HaError> {
        Ok(self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
    }

    fn get(&self) -> Result<u64, HaError> {
        Ok(self.next.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn set_count(&self, next: u64) -> Result<(), HaError> {
        self.next.store(next, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------

/// [`HaServices`] of `high-availability.type: none`. Stores and counters are kept per
/// services instance, so a JobMaster restarted in the same process finds its checkpoints.
pub struct StandaloneHaServices {
    leaders: BTreeMap<String, String>,
    job_graphs: MemoryStateHandleStore,
    checkpoints: Mutex<HashMap<JobId, MemoryStateHandleStore>>,
    counters: Mutex<HashMap<JobId, Arc<StandaloneCheckpointIdCounter>>>,
    job_results: Arc<MemoryJobResultStore>,
}

impl StandaloneHaServices {
    /// `leaders`: component name → the address its standalone retrieval reports.
    pub fn new(leaders: BTreeMap<String, String>) -> Self {
        Self {
            leaders,
            job_graphs: MemoryStateHandleStore::new(),
            checkpoints: Mutex::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
            job_results: Arc::new(MemoryJobResultStore::new()),
        }
    }

    /// Adds (or replaces) the fixed leader address of `component`.
    pub fn with_leader(mut self, component: &str, address: impl Into<String>) -> Self {
        self.leaders.insert(component.to_string(), address.into());
        self
    }
}

impl HaServices for StandaloneHaServices {
    fn mode(&self) -> &'static str {
        "none"
    }

    fn leader_election(&self, _component: &str) -> Arc<dyn LeaderElection> {
        Arc::new(StandaloneLeaderElection::new())
    }

    fn leader_retrieval(&self, component: &str) -> Result<Arc<dyn LeaderRetrieval>, HaError> {
        let address =
            self.leaders.get(component).ok_or_else(|| HaError::NoLeaderAddress { component: component.to_string() })?;
        Ok(Arc::new(StandaloneLeaderRetrieval::new(address.clone())))
    }

    fn job_graph_store(&self) -> JobGraphStore {
        JobGraphStore::new(Arc::new(self.job_graphs.clone()))
    }

    fn completed_checkpoint_store(&self, job_id: JobId, max_retained: usize) -> CompletedCheckpointStore {
        let store = lock(&self.checkpoints).entry(job_id).or_default().clone();
        CompletedCheckpointStore::new(Arc::new(store), max_retained)
    }

    fn checkpoint_id_counter(&self, job_id: JobId) -> Arc<dyn CheckpointIdCounter> {
        lock(&self.counters).entry(job_id).or_default().clone()
    }

    fn job_result_store(&self) -> Arc<dyn JobResultStore> {
        self.job_results.clone()
    }

    fn cleanup_job_data(&self, job_id: JobId) -> HaFuture<()> {
        lock(&self.checkpoints).remove(&job_id);
        lock(&self.counters).remove(&job_id);
        Box::pin(futures::future::ready(Ok(())))
    }

    fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<Option<LeaderSessionId>>>,
    }

    impl LeaderContender for Recorder {
        fn grant_leadership(&self, session: LeaderSessionId) {
            self.events.lock().unwrap().push(Some(session));
        }
        fn revoke_leadership(&self) {
            self.events.lock().unwrap().push(None);
        }
    }

    #[test]
    fn standalone_grants_at_start_and_revoke_clears_the_session() {
        let election = StandaloneLeaderElection::new();
        let contender = Arc::new(Recorder::default());
        election.start(contender.clone());
        let session = contender.events.lock().unwrap()[0].expect("granted at start");
        assert!(election.has_leadership(session));
        assert_eq!(election.confirmed_leader(), None);
        election.confirm_leadership(session, "flint://localhost:6123/resourcemanager");
        assert_eq!(election.confirmed_leader().unwrap().0, session);

        election.revoke();
        assert!(!election.has_leadership(session));
        assert_eq!(election.confirmed_leader(), None);
        assert_eq!(contender.events.lock().unwrap().last(), Some(&None));

        // A stale confirmation after revocation changes nothing; a new grant has a new id.
        election.confirm_leadership(session, "x");
        assert_eq!(election.confirmed_leader(), None);
        let again = election.grant().unwrap();
        assert_ne!(again, session);
        election.stop();
        assert!(!election.has_leadership(again));
    }

    #[test]
    fn standalone_checkpoint_id_counter_starts_at_one_and_can_be_moved() {
        let counter = StandaloneCheckpointIdCounter::new();
        assert_eq!(counter.get().unwrap(), 1);
        assert_eq!(counter.get_and_increment().unwrap(), 1);
        assert_eq!(counter.get_and_increment().unwrap(), 2);
        assert_eq!(counter.get().unwrap(), 3);
        counter.set_count(42).unwrap();
        assert_eq!(counter.get_and_increment().unwrap(), 42);
        assert_eq!(counter.get().unwrap(), 43);

        // Usable through the trait object the coordinator holds.
        let shared: Arc<dyn CheckpointIdCounter> = Arc::new(StandaloneCheckpointIdCounter::default());
        assert_eq!(shared.get_and_increment().unwrap(), 1);
    }

    #[test]
    fn standalone_retrieval_reports_the_fixed_address_once() {
        let services = StandaloneHaServices::new(BTreeMap::new()).with_leader("dispatcher", "flint://h:1/dispatcher");
        let retrieval = services.leader_retrieval("dispatcher").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        retrieval.start(Arc::new(move |leader: Option<(LeaderSessionId, String)>| sink.lock().unwrap().push(leader)));
        retrieval.stop();
        assert_eq!(*seen.lock().unwrap(), vec![Some((STANDALONE_LEADER_SESSION, "flint://h:1/dispatcher".into()))]);
        assert!(services.leader_retrieval("resource_manager").is_err());
    }

    #[test]
    fn standalone_services_keep_stores_and_counters_per_job() {
        let services = StandaloneHaServices::new(BTreeMap::new());
        let job = JobId::generate();
        let counter = services.checkpoint_id_counter(job);
        assert_eq!(counter.get_and_increment().unwrap(), 1);
        // The same job gets the same counter back (a JobMaster restarted in this process).
        assert_eq!(services.checkpoint_id_counter(job).get().unwrap(), 2);
        let store = services.completed_checkpoint_store(job, 2);
        super::super::wait(store.add(1, b"one".to_vec())).unwrap();
        let again = services.completed_checkpoint_store(job, 2);
        assert_eq!(super::super::wait(again.latest()).unwrap(), Some((1, b"one".to_vec())));
        super::super::wait(services.cleanup_job_data(job)).unwrap();
        assert_eq!(services.checkpoint_id_counter(job).get().unwrap(), 1);
        assert_eq!(super::super::wait(services.completed_checkpoint_store(job, 2).latest()).unwrap(), None);
    }
}
