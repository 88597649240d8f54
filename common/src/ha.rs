//! High-availability seams: leader election.
//!
//! A leader-elected component (ResourceManager, Dispatcher, later each JobMaster) is a
//! [`LeaderContender`]. It starts a [`LeaderElection`], is granted leadership with a
//! fresh [`LeaderSessionId`] (which becomes its fencing token), confirms it once it
//! acts as leader, and stops acting the moment leadership is revoked.
//!
//! Two implementations sit behind the trait: [`StandaloneLeaderElection`] (one
//! jobmanager; leadership granted at start, `high-availability.type: none`) and, later,
//! ZooKeeper's. Everything above the trait is written against the trait.

use std::sync::{Arc, Mutex};

use crate::ids::LeaderSessionId;

/// A component that can be leader.
pub trait LeaderContender: Send + Sync + 'static {
    /// Leadership is granted under `session`. The contender starts acting as leader and
    /// calls [`LeaderElection::confirm_leadership`].
    fn grant_leadership(&self, session: LeaderSessionId);
    /// Leadership is gone; the contender stops acting at once.
    fn revoke_leadership(&self);
}

/// The election of one component.
pub trait LeaderElection: Send + Sync {
    /// Enters the election.
    fn start(&self, contender: Arc<dyn LeaderContender>);
    /// The contender accepted leadership `session` and is reachable at `address`.
    fn confirm_leadership(&self, session: LeaderSessionId, address: &str);
    /// Whether `session` is the current leadership.
    fn has_leadership(&self, session: LeaderSessionId) -> bool;
    /// The confirmed leader: session and address.
    fn confirmed_leader(&self) -> Option<(LeaderSessionId, String)>;
    /// Leaves the election; leadership held is revoked.
    fn stop(&self);
}

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

    fn state(&self) -> std::sync::MutexGuard<'_, StandaloneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
}

// ---------------------------------------------------------------------------------------
// Checkpoint ids
// ---------------------------------------------------------------------------------------

/// Hands out checkpoint ids for one job: strictly increasing, never reused, also across a
/// JobManager failover (which is why it sits behind an HA trait). The CheckpointCoordinator
/// takes one id per trigger and, after a restore, moves the counter above the restored id.
///
/// [`StandaloneCheckpointIdCounter`] keeps the count in memory (`high-availability.type:
/// none`); ZooKeeper's keeps it in a shared counter node.
pub trait CheckpointIdCounter: Send + Sync {
    /// The next id; the counter moves past it.
    fn get_and_increment(&self) -> Result<u64, String>;
    /// The id the next [`CheckpointIdCounter::get_and_increment`] returns.
    fn get(&self) -> Result<u64, String>;
    /// Makes `next` the id handed out next.
    fn set_count(&self, next: u64) -> Result<(), String>;
}

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
    fn get_and_increment(&self) -> Result<u64, String> {
        Ok(self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
    }

    fn get(&self) -> Result<u64, String> {
        Ok(self.next.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn set_count(&self, next: u64) -> Result<(), String> {
        self.next.store(next, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod checkpoint_id_counter_tests {
    use super::*;

    #[test]
    fn standalone_checkpoint_id_counter_starts_at_one_and_can_be_moved() {
        let counter = StandaloneCheckpointIdCounter::new();
        assert_eq!(counter.get(), Ok(1));
        assert_eq!(counter.get_and_increment(), Ok(1));
        assert_eq!(counter.get_and_increment(), Ok(2));
        assert_eq!(counter.get(), Ok(3));
        counter.set_count(42).unwrap();
        assert_eq!(counter.get_and_increment(), Ok(42));
        assert_eq!(counter.get(), Ok(43));

        // Usable through the trait object the coordinator holds.
        let shared: Arc<dyn CheckpointIdCounter> = Arc::new(StandaloneCheckpointIdCounter::default());
        assert_eq!(shared.get_and_increment(), Ok(1));
    }
}
