//! High availability: leader election, leader retrieval and the stores a new leader recovers
//! from, each behind a trait with a standalone (in-memory) and a ZooKeeper implementation.
//!
//! A leader-elected component (ResourceManager, Dispatcher, REST server, each JobMaster) is a
//! [`LeaderContender`]. It starts a [`LeaderElection`], is granted leadership with a fresh
//! [`LeaderSessionId`] (which becomes its fencing token), confirms it with its address once it
//! acts as leader, and stops acting the moment leadership is revoked. Other processes find the
//! leader through a [`LeaderRetrieval`]. Everything above the traits is written against them.
//!
//! [`HaServices`] bundles one process's HA seams and is created from the configuration by
//! [`create_ha_services`] (`high-availability.type`, see [`HaConfig`]):
//!
//! | seam                         | `none` ([`StandaloneHaServices`])   | `zookeeper` ([`ZooKeeperHaServices`])            |
//! |------------------------------|-------------------------------------|--------------------------------------------------|
//! | [`LeaderElection`]           | [`StandaloneLeaderElection`]        | one leader latch per process, shared by all components |
//! | [`LeaderRetrieval`]          | a fixed address given at construction | watches `leader/<component>/connection_info`  |
//! | [`JobGraphStore`]            | in memory                           | handle in `jobgraphs/<job-id>`, bytes in `high-availability.storageDir` |
//! | [`CompletedCheckpointStore`] | in memory                           | handles in `jobs/<job-id>/checkpoints/<id>`      |
//! | [`CheckpointIdCounter`]      | [`StandaloneCheckpointIdCounter`]   | compare-and-set on `jobs/<job-id>/checkpoint_id_counter` |
//! | [`JobResultStore`]           | in memory                           | files in `<storageDir>/job-result-store/<cluster-id>/` |
//!
//! [`HaServices`] is a trait (not an enum) so that tests and later backends can supply their
//! own; the two implementations are chosen once, in [`create_ha_services`].
//!
//! Calling conventions, chosen so that actix actors can use everything without blocking:
//! - Callbacks ([`LeaderContender`], [`LeaderRetrievalListener`]) are `Send + Sync` trait
//!   objects, called from HA threads (never from the caller's thread while it holds an HA
//!   lock). They must not block: an actor forwards them as messages (`addr.do_send`). Calls to
//!   one contender are serialized and alternate grant/revoke.
//! - Store operations return an [`HaFuture`]: a boxed `Send + 'static` future that runs on the
//!   HA services' own threads and can be awaited from any executor (actix, tokio, or
//!   [`wait`] from plain threads).
//! - [`LeaderElection`], [`CheckpointIdCounter`] and [`JobResultStore`] are synchronous; the
//!   counter and the job result store do one small I/O round trip on the calling thread.
//!
//! From an actor (sketch):
//!
//! ```text
//! struct Contender(Addr<Dispatcher>);
//! impl LeaderContender for Contender {
//!     fn grant_leadership(&self, session: LeaderSessionId) { self.0.do_send(GrantLeadership(session)) }
//!     fn revoke_leadership(&self) { self.0.do_send(RevokeLeadership) }
//! }
//! let election = services.leader_election(DISPATCHER);
//! election.start(Arc::new(Contender(ctx.address())));
//! // in the GrantLeadership handler: election.confirm_leadership(session, &my_rpc_address);
//!
//! let put = services.job_graph_store().put(job_id, bytes);           // an HaFuture
//! ctx.spawn(put.into_actor(self).map(|result, act, _| act.job_graph_stored(job_id, result)));
//! ```
//!
//! Layout: this file holds the traits and [`HaError`]; `standalone` the in-memory
//! implementations; `config` the options; `store` the state-handle store seam and its typed
//! wrappers; `job_result_store` both job result stores; `files` durable writes to the HA
//! storage dir; `zookeeper` everything ZooKeeper.

mod config;
mod files;
mod job_result_store;
mod standalone;
mod store;
mod zookeeper;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::Configuration;
use crate::ids::{JobId, LeaderSessionId};

pub use config::{HaConfig, ZooKeeperAcl, ZooKeeperHaConfig};
pub use job_result_store::{FileJobResultStore, JobResultEntry, JobResultStore, MemoryJobResultStore};
pub use standalone::{
    StandaloneCheckpointIdCounter, StandaloneHaServices, StandaloneLeaderElection, StandaloneLeaderRetrieval,
    STANDALONE_LEADER_SESSION,
};
pub use store::{CompletedCheckpointStore, JobGraphStore, MemoryStateHandleStore, StateHandleStore};
pub use zookeeper::{
    ZooKeeperCheckpointIdCounter, ZooKeeperHaServices, ZooKeeperLeaderElection, ZooKeeperLeaderRetrieval,
    ZooKeeperStateHandleStore,
};

/// Component name of the Dispatcher (Flink's `dispatcher` leader node).
pub const DISPATCHER: &str = "dispatcher";
/// Component name of the ResourceManager (Flink's `resource_manager` leader node).
pub const RESOURCE_MANAGER: &str = "resource_manager";
/// Component name of the REST endpoint (Flink's `rest_server` leader node).
pub const REST_SERVER: &str = "rest_server";

/// Component name of one job's JobMaster: `job-<job-id>`, as Flink names it.
pub fn job_component(job_id: JobId) -> String {
    format!("job-{job_id}")
}

// ---------------------------------------------------------------------------------------
// Errors and futures
// ---------------------------------------------------------------------------------------

/// Everything that can go wrong in the HA services.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// A configuration value does not parse or is not supported.
    #[error("invalid value '{value}' for configuration key '{key}': expected {expected}")]
    InvalidConfig { key: &'static str, value: String, expected: String },
    /// A key required by the chosen HA mode is missing.
    #[error("missing configuration key '{key}': {reason}")]
    MissingConfig { key: &'static str, reason: String },
    /// No ZooKeeper session could be established or re-established in time.
    #[error("no ZooKeeper session with quorum '{quorum}' (high-availability.zookeeper.quorum) within {timeout:?}")]
    NoSession { quorum: String, timeout: Duration },
    /// A ZooKeeper request failed.
    #[error("zookeeper {operation} on '{path}' failed: {source}")]
    ZooKeeper {
        operation: &'static str,
        path: String,
        #[source]
        source: zookeeper_client::Error,
    },
    /// A file under the HA storage directory could not be read or written.
    #[error("i/o error on '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A handle in the store points at a file that does not exist (or was truncated): the
    /// store's ground truth says the value exists, the storage lost it.
    #[error("entry '{name}' points at '{}', which is missing or truncated", path.display())]
    MissingStateFile { name: String, path: PathBuf },
    /// Stored data does not parse.
    #[error("corrupt HA data at '{location}': {reason}")]
    Corrupt { location: String, reason: String },
    /// `put` of an entry that already exists.
    #[error("entry '{name}' already exists")]
    AlreadyExists { name: String },
    /// `mark_clean` of a job without a dirty result, or a lookup of an unknown entry.
    #[error("no entry '{name}'")]
    NotFound { name: String },
    /// A standalone leader retrieval for a component without a configured address.
    #[error("no leader address configured for component '{component}' (standalone high availability)")]
    NoLeaderAddress { component: String },
    /// The HA services were closed.
    #[error("the HA services are closed")]
    Closed,
}

impl HaError {
    /// Whether retrying the same operation later can succeed (connection problems), as
    /// opposed to errors that will repeat (bad configuration, corrupt data, missing files).
    pub fn is_retryable(&self) -> bool {
        use zookeeper_client::Error as Zk;
        match self {
            HaError::NoSession { .. } => true,
            HaError::ZooKeeper { source, .. } => matches!(
                source,
                Zk::ConnectionLoss
                    | Zk::SessionExpired
                    | Zk::SessionMoved
                    | Zk::Timeout
                    | Zk::ClientClosed
                    | Zk::Throttled
            ),
            HaError::Io { .. } => true,
            _ => false,
        }
    }
}

/// The result of an asynchronous HA operation: runs on the HA services' threads, awaitable
/// from any executor.
pub type HaFuture<T> = BoxFuture<'static, Result<T, HaError>>;

/// Waits for an [`HaFuture`] on the current thread. For plain threads and tests; an actor
/// awaits the future instead (this blocks the calling thread until the operation is done).
pub fn wait<T>(future: HaFuture<T>) -> Result<T, HaError> {
    futures::executor::block_on(future)
}

// ---------------------------------------------------------------------------------------
// Leader election and retrieval
// ---------------------------------------------------------------------------------------

/// A component that can be leader.
pub trait LeaderContender: Send + Sync + 'static {
    /// Leadership is granted under `session`. The contender starts acting as leader and
    /// calls [`LeaderElection::confirm_leadership`]. Must not block.
    fn grant_leadership(&self, session: LeaderSessionId);
    /// Leadership is gone; the contender stops acting at once. Must not block.
    fn revoke_leadership(&self);
}

/// The election of one component.
pub trait LeaderElection: Send + Sync {
    /// Enters the election.
    fn start(&self, contender: Arc<dyn LeaderContender>);
    /// The contender accepted leadership `session` and is reachable at `address`. Ignored
    /// unless `session` is the current leadership; published to retrievers (ZooKeeper: in the
    /// background, and only while this process still holds the leader latch).
    fn confirm_leadership(&self, session: LeaderSessionId, address: &str);
    /// Whether `session` is the current leadership.
    fn has_leadership(&self, session: LeaderSessionId) -> bool;
    /// The confirmed leader: session and address.
    fn confirmed_leader(&self) -> Option<(LeaderSessionId, String)>;
    /// Leaves the election; leadership held is revoked.
    fn stop(&self);
}

/// Receives the leader of one component: `Some((session, address))`, or `None` while there
/// is no (known) leader. Called once with the initial state and then on every change; must
/// not block. Closures `Fn(Option<(LeaderSessionId, String)>)` are listeners.
pub trait LeaderRetrievalListener: Send + Sync + 'static {
    fn notify_leader(&self, leader: Option<(LeaderSessionId, String)>);
}

impl<F> LeaderRetrievalListener for F
where
    F: Fn(Option<(LeaderSessionId, String)>) + Send + Sync + 'static,
{
    fn notify_leader(&self, leader: Option<(LeaderSessionId, String)>) {
        self(leader)
    }
}

/// Finds the leader of one component.
pub trait LeaderRetrieval: Send + Sync {
    /// Starts reporting the leader to `listener`. A second start replaces the listener.
    fn start(&self, listener: Arc<dyn LeaderRetrievalListener>);
    /// Stops reporting.
    fn stop(&self);
}

// ---------------------------------------------------------------------------------------
// Checkpoint ids
// ---------------------------------------------------------------------------------------

/// Hands out checkpoint ids for one job: strictly increasing, never reused, also across a
/// JobManager failover (which is why it sits behind an HA trait). The CheckpointCoordinator
/// takes one id per trigger and, after a restore, moves the counter above the restored id.
///
/// [`StandaloneCheckpointIdCounter`] keeps the count in memory (`high-availability.type:
/// none`); [`ZooKeeperCheckpointIdCounter`] keeps it in a shared counter node. Ids may have
/// gaps (an increment whose outcome a lost connection hid is never reused).
pub trait CheckpointIdCounter: Send + Sync {
    /// The next id; the counter moves past it.
    fn get_and_increment(&self) -> Result<u64, HaError>;
    /// The id the next [`CheckpointIdCounter::get_and_increment`] returns.
    fn get(&self) -> Result<u64, HaError>;
    /// Makes `next` the id handed out next.
    fn set_count(&self, next: u64) -> Result<(), HaError>;
}

// ---------------------------------------------------------------------------------------
// The services
// ---------------------------------------------------------------------------------------

/// One process's HA seams. See the module documentation for what each mode provides.
pub trait HaServices: Send + Sync {
    /// `none` or `zookeeper`.
    fn mode(&self) -> &'static str;
    /// The election of `component` ([`DISPATCHER`], [`RESOURCE_MANAGER`], [`REST_SERVER`],
    /// [`job_component`]). ZooKeeper: all elections of one services instance share the
    /// process's leader latch, so they are granted and revoked together.
    fn leader_election(&self, component: &str) -> Arc<dyn LeaderElection>;
    /// The retrieval of `component`'s leader.
    fn leader_retrieval(&self, component: &str) -> Result<Arc<dyn LeaderRetrieval>, HaError>;
    /// The submitted job graphs (opaque bytes per job).
    fn job_graph_store(&self) -> JobGraphStore;
    /// The completed checkpoints of `job_id`, keeping the newest `max_retained`.
    fn completed_checkpoint_store(&self, job_id: JobId, max_retained: usize) -> CompletedCheckpointStore;
    /// The checkpoint id counter of `job_id`.
    fn checkpoint_id_counter(&self, job_id: JobId) -> Arc<dyn CheckpointIdCounter>;
    /// The results of finished jobs.
    fn job_result_store(&self) -> Arc<dyn JobResultStore>;
    /// Deletes what the HA services hold for a globally terminated job: its checkpoints, its
    /// checkpoint counter and its leader node (not its job graph or job result).
    fn cleanup_job_data(&self, job_id: JobId) -> HaFuture<()>;

    /// Where the BlobServer mirrors permanent blobs so a new leader can serve them
    /// (`<storageDir>/<cluster-id>/blob`); `None` without high availability.
    fn blob_storage_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// Leaves all elections (revoking leadership held), stops retrievals and closes the
    /// connection. Blocks for a bounded time; idempotent.
    fn close(&self);
}

/// Creates the HA services the configuration asks for. `standalone_leaders` maps component
/// names to the fixed addresses standalone leader retrieval reports (ignored with ZooKeeper).
/// In ZooKeeper mode this connects and blocks until the first session is established, at
/// most `high-availability.zookeeper.client.connection-timeout`.
pub fn create_ha_services(
    conf: &Configuration,
    standalone_leaders: BTreeMap<String, String>,
) -> Result<Arc<dyn HaServices>, HaError> {
    match HaConfig::from_configuration(conf)? {
        HaConfig::None => Ok(Arc::new(StandaloneHaServices::new(standalone_leaders))),
        HaConfig::ZooKeeper(zk) => Ok(Arc::new(ZooKeeperHaServices::start(zk)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_follow_flink() {
        let job = JobId::from_u128(0xab);
        assert_eq!(job_component(job), "job-000000000000000000000000000000ab");
        assert_eq!((DISPATCHER, RESOURCE_MANAGER, REST_SERVER), ("dispatcher", "resource_manager", "rest_server"));
    }

    #[test]
    fn none_mode_creates_standalone_services() {
        let services = create_ha_services(&Configuration::new(), BTreeMap::new()).unwrap();
        assert_eq!(services.mode(), "none");
        assert!(matches!(services.leader_retrieval(DISPATCHER), Err(HaError::NoLeaderAddress { .. })));
    }

    #[test]
    fn closures_are_retrieval_listeners() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let listener: Arc<dyn LeaderRetrievalListener> =
            Arc::new(move |leader: Option<(LeaderSessionId, String)>| sink.lock().unwrap().push(leader));
        listener.notify_leader(None);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
