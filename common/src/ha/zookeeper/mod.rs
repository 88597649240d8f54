//! The ZooKeeper implementations of the HA seams ([`ZooKeeperHaServices`]).
//!
//! Znode layout, as Flink 1.20's `ZooKeeperLeaderElectionHaServices` (base =
//! `high-availability.zookeeper.path.root` + `high-availability.cluster-id`, e.g.
//! `/flink/default`):
//!
//! ```text
//! <base>/leader/latch/_c_<uuid>-latch-<seq>       ephemeral sequential, one per process (Curator LeaderLatch names)
//! <base>/leader/<component>/connection_info       ephemeral, {"address": "...", "sessionId": "<32 hex>"}
//!        (component: dispatcher, resource_manager, rest_server, job-<job-id>)
//! <base>/jobgraphs/<job-id>                       {"path": "<file>", "size": n}  (state handle)
//! <base>/jobgraphs/<job-id>/locks/<process-id>    ephemeral: this process uses the entry
//! <base>/jobs/<job-id>/checkpoints/<19-digit id>  state handle, with locks/ as above
//! <base>/jobs/<job-id>/checkpoint_id_counter      the next checkpoint id, decimal text
//! ```
//!
//! Values behind state handles live in `<storageDir>/<cluster-id>/jobgraphs/` and
//! `<storageDir>/<cluster-id>/checkpoints/<job-id>/`; job results in
//! `<storageDir>/job-result-store/<cluster-id>/`.
//!
//! Threads and sessions: each services instance owns a small tokio runtime ("flint-ha"
//! threads) on which all ZooKeeper I/O runs, so callers never need a runtime of their own and
//! never run ZooKeeper work on theirs. A supervisor task keeps one ZooKeeper session: it
//! connects (retrying every `retry-wait`), publishes the session to the other tasks through a
//! watch channel, and after the session is lost (expired, closed) connects a new one. A
//! `Disconnected` connection is Curator's SUSPENDED: the client reconnects within the
//! session on its own; the election revokes leadership at once unless
//! `tolerate-suspended-connections` is set. Asynchronous methods hand back the runtime's join
//! handle as an [`HaFuture`]; synchronous ones wait for it on the calling thread (with
//! `block_in_place` when the caller is itself an HA thread, e.g. inside a callback).

mod election;
mod retrieval;
mod store;

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, SessionState, Stat, StateWatcher};

use super::config::{zk_path, ZooKeeperAcl, ZooKeeperHaConfig};
use super::job_result_store::FileJobResultStore;
use super::store::{CompletedCheckpointStore, JobGraphStore};
use super::{
    job_component, CheckpointIdCounter, HaError, HaFuture, HaServices, JobResultStore, LeaderElection, LeaderRetrieval,
};
use crate::ids::JobId;

pub use election::ZooKeeperLeaderElection;
pub use retrieval::ZooKeeperLeaderRetrieval;
pub use store::{ZooKeeperCheckpointIdCounter, ZooKeeperStateHandleStore};

use election::ProcessLatch;

thread_local! {
    /// Set on the HA runtime's threads: blocking there needs `block_in_place`.
    static ON_HA_THREAD: Cell<bool> = const { Cell::new(false) };
}

type ZkResult<T> = Result<T, zookeeper_client::Error>;

/// One ZooKeeper session and its number (1 for the first session of a services instance).
pub(crate) struct Session {
    pub client: Client,
    pub generation: u64,
}

impl Session {
    pub fn id(&self) -> i64 {
        self.client.session_id().0
    }
}

/// Errors after which the session is gone for good (a new one must be connected).
pub(crate) fn session_gone(e: &zookeeper_client::Error) -> bool {
    use zookeeper_client::Error as Zk;
    matches!(e, Zk::SessionExpired | Zk::SessionMoved | Zk::ClientClosed | Zk::AuthFailed)
}

/// Errors after which the same request may succeed (and a write may or may not have
/// happened).
pub(crate) fn transient(e: &zookeeper_client::Error) -> bool {
    use zookeeper_client::Error as Zk;
    matches!(e, Zk::ConnectionLoss | Zk::Timeout | Zk::Throttled) || (session_gone(e) && *e != Zk::AuthFailed)
}

/// How waiting for a usable connection ended.
pub(crate) enum Connection {
    Connected,
    Lost,
    Shutdown,
}

/// Waits until the session is connected again (or lost for good, or the services stop).
pub(crate) async fn wait_connected(states: &mut StateWatcher, shutdown: &CancellationToken) -> Connection {
    loop {
        match states.peek_state() {
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => return Connection::Connected,
            s if s.is_terminated() => return Connection::Lost,
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Connection::Shutdown,
            _ = states.changed() => {}
        }
    }
}

/// What the tasks on the HA runtime share. Holds no runtime, so tasks holding it create no
/// cycle.
pub(crate) struct Shared {
    pub config: ZooKeeperHaConfig,
    pub base: String,
    pub handle: tokio::runtime::Handle,
    pub sessions: watch::Receiver<Option<Arc<Session>>>,
    pub shutdown: CancellationToken,
    /// This process's id: the name of its lock nodes, the data of its latch node.
    pub process_id: String,
}

impl Shared {
    /// `<base>/<segments...>`.
    pub fn path(&self, segments: &[&str]) -> String {
        let mut all = vec![self.base.as_str()];
        all.extend_from_slice(segments);
        zk_path(&all)
    }

    fn acls(&self) -> Acls<'static> {
        match self.config.acl {
            ZooKeeperAcl::Open => Acls::anyone_all(),
            ZooKeeperAcl::Creator => Acls::creator_all(),
        }
    }

    pub fn options(&self, mode: CreateMode) -> CreateOptions<'static> {
        mode.with_acls(self.acls())
    }

    /// A session of at least `min_generation`, waiting at most the connection timeout.
    pub async fn session_after(&self, min_generation: u64) -> Result<Arc<Session>, HaError> {
        let mut sessions = self.sessions.clone();
        let wait = sessions.wait_for(|s| s.as_ref().is_some_and(|s| s.generation >= min_generation));
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(HaError::Closed),
            result = tokio::time::timeout(self.config.connection_timeout, wait) => match result {
                Ok(Ok(session)) => Ok(session.clone().expect("waited for a session")),
                Ok(Err(_)) => Err(HaError::Closed),
                Err(_) => Err(HaError::NoSession {
                    quorum: self.config.quorum.clone(),
                    timeout: self.config.connection_timeout,
                }),
            },
        }
    }

    /// The current session, waiting at most the connection timeout for one.
    pub async fn session(&self) -> Result<Arc<Session>, HaError> {
        self.session_after(0).await
    }

    /// A session newer than `after_generation`, however long it takes; `None` on shutdown.
    pub async fn next_session(&self, after_generation: u64) -> Option<Arc<Session>> {
        let mut sessions = self.sessions.clone();
        let wait = sessions.wait_for(|s| s.as_ref().is_some_and(|s| s.generation > after_generation));
        tokio::select! {
            _ = self.shutdown.cancelled() => None,
            result = wait => result.ok().and_then(|s| s.clone()),
        }
    }

    /// Sleeps `retry-wait`; `false` if the services stopped meanwhile.
    pub async fn pause(&self) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(self.config.retry_wait) => true,
        }
    }

    /// Runs an idempotent request, retrying transient failures up to `max-retry-attempts`
    /// times (after `retry-wait`, or as soon as a new session exists if the old one is gone).
    pub async fn retry<T, F, Fut>(&self, operation: &'static str, path: &str, mut request: F) -> Result<T, HaError>
    where
        F: FnMut(Arc<Session>) -> Fut,
        Fut: Future<Output = ZkResult<T>>,
    {
        let mut attempt = 0;
        let mut min_generation = 0;
        loop {
            let session = self.session_after(min_generation).await?;
            match request(session.clone()).await {
                Ok(value) => return Ok(value),
                Err(e) if transient(&e) && attempt < self.config.max_retry_attempts => {
                    attempt += 1;
                    debug!(operation, path, attempt, error = %e, "retrying zookeeper request");
                    if session_gone(&e) {
                        min_generation = session.generation + 1;
                    } else if !self.pause().await {
                        return Err(HaError::Closed);
                    }
                }
                Err(source) => return Err(HaError::ZooKeeper { operation, path: path.to_string(), source }),
            }
        }
    }

    /// Creates `path` and its missing ancestors as persistent nodes.
    pub async fn mkdir(&self, path: &str) -> Result<(), HaError> {
        let options = self.options(CreateMode::Persistent);
        self.retry("mkdir", path, |s| {
            let (path, options) = (path.to_string(), options.clone());
            async move { s.client.mkdir(&path, &options).await }
        })
        .await
    }

    /// Data and stat of `path`; `None` if it does not exist.
    pub async fn get_data(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, HaError> {
        self.retry("get", path, |s| {
            let future = s.client.get_data(path);
            async move {
                match future.await {
                    Ok(found) => Ok(Some(found)),
                    Err(zookeeper_client::Error::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Stat of `path`; `None` if it does not exist.
    pub async fn stat(&self, path: &str) -> Result<Option<Stat>, HaError> {
        self.retry("stat", path, |s| s.client.check_stat(path)).await
    }

    /// Children of `path`; `None` if it does not exist.
    pub async fn children(&self, path: &str) -> Result<Option<Vec<String>>, HaError> {
        self.retry("list", path, |s| {
            let path = path.to_string();
            async move {
                match s.client.list_children(&path).await {
                    Ok(children) => Ok(Some(children)),
                    Err(zookeeper_client::Error::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Creates `path` unless it exists: `Ok(true)` if it exists now, `Ok(false)` if its parent
    /// does not exist. (Retrying after a lost connection may find the node created by the
    /// first attempt: it exists either way.)
    pub async fn create_if_absent(&self, path: &str, data: &[u8], mode: CreateMode) -> Result<bool, HaError> {
        let options = self.options(mode);
        self.retry("create", path, |s| {
            let (path, data, options) = (path.to_string(), data.to_vec(), options.clone());
            async move {
                match s.client.create(&path, &data, &options).await {
                    Ok(_) | Err(zookeeper_client::Error::NodeExists) => Ok(true),
                    Err(zookeeper_client::Error::NoNode) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Deletes `path` if it exists; `Ok(false)` if it has children.
    pub async fn delete_if_exists(&self, path: &str) -> Result<bool, HaError> {
        self.retry("delete", path, |s| {
            let future = s.client.delete(path, None);
            async move {
                match future.await {
                    Ok(()) | Err(zookeeper_client::Error::NoNode) => Ok(true),
                    Err(zookeeper_client::Error::NotEmpty) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Deletes `path` with everything below it.
    pub async fn delete_recursively(&self, path: &str) -> Result<(), HaError> {
        // Depth-first with an explicit stack; a node that gained children meanwhile is
        // listed again.
        let mut stack = vec![(path.to_string(), false)];
        while let Some((node, listed)) = stack.pop() {
            if !listed {
                stack.push((node.clone(), true));
                for child in self.children(&node).await?.unwrap_or_default() {
                    stack.push((format!("{node}/{child}"), false));
                }
            } else if !self.delete_if_exists(&node).await? {
                stack.push((node, false));
            }
        }
        Ok(())
    }
}

/// Owns the HA runtime. Dropping the last owner stops all tasks (the ZooKeeper session then
/// expires on the server after its timeout; [`HaServices::close`] closes it at once).
pub(crate) struct Runtime {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    pub shared: Arc<Shared>,
}

impl Runtime {
    /// Runs `future` on the HA runtime.
    pub fn spawn<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T, HaError>> + Send + 'static,
    ) -> HaFuture<T> {
        let task = self.shared.handle.spawn(future);
        Box::pin(async move {
            match task.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Err(HaError::Closed),
            }
        })
    }

    /// Runs `future` on the HA runtime and waits for it on this thread.
    pub fn block_on<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T, HaError>> + Send + 'static,
    ) -> Result<T, HaError> {
        let future = self.spawn(future);
        if ON_HA_THREAD.with(Cell::get) {
            tokio::task::block_in_place(|| futures::executor::block_on(future))
        } else {
            futures::executor::block_on(future)
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        if let Some(runtime) = self.runtime.lock().unwrap_or_else(|e| e.into_inner()).take() {
            runtime.shutdown_background();
        }
    }
}

async fn connect(config: &ZooKeeperHaConfig) -> ZkResult<Client> {
    Client::connector()
        .with_session_timeout(config.session_timeout)
        .with_connection_timeout(config.connection_timeout)
        .with_fail_eagerly()
        .connect(&config.quorum)
        .await
}

/// Keeps one session: connects, publishes it, waits for its end, connects the next one.
async fn supervise(shared: Arc<Shared>, sessions: watch::Sender<Option<Arc<Session>>>) {
    let config = &shared.config;
    let mut generation = 0;
    'sessions: loop {
        let client = loop {
            let attempt = tokio::select! {
                _ = shared.shutdown.cancelled() => break 'sessions,
                attempt = tokio::time::timeout(config.connection_timeout, connect(config)) => attempt,
            };
            match attempt {
                Ok(Ok(client)) => break client,
                Ok(Err(e)) => warn!(quorum = %config.quorum, error = %e, "cannot connect to zookeeper, retrying"),
                Err(_) => warn!(quorum = %config.quorum, "connecting to zookeeper timed out, retrying"),
            }
            if !shared.pause().await {
                break 'sessions;
            }
        };
        generation += 1;
        let mut states = client.state_watcher();
        info!(
            quorum = %config.quorum,
            session = %client.session_id(),
            timeout_ms = client.session_timeout().as_millis() as u64,
            "zookeeper session established"
        );
        sessions.send_replace(Some(Arc::new(Session { client, generation })));
        let end = loop {
            let state = states.peek_state();
            if state.is_terminated() {
                break state;
            }
            tokio::select! {
                _ = shared.shutdown.cancelled() => break 'sessions,
                state = states.changed() => match state {
                    SessionState::Disconnected => warn!("zookeeper connection suspended"),
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                        info!("zookeeper connection reconnected")
                    }
                    _ => {}
                },
            }
        };
        warn!(state = %end, "zookeeper session lost, connecting a new one");
        sessions.send_replace(None);
    }
    // Shutting down: once every task dropped its handle the client closes the session
    // (ephemeral nodes vanish at once); wait a little for that.
    if let Some(session) = sessions.send_replace(None) {
        let mut states = session.client.state_watcher();
        drop(session);
        let closed = async {
            while !states.peek_state().is_terminated() {
                states.changed().await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), closed).await.is_err() {
            debug!("zookeeper session not closed in time");
        }
    }
}

/// [`HaServices`] of `high-availability.type: zookeeper` (see the module documentation).
pub struct ZooKeeperHaServices {
    runtime: Arc<Runtime>,
    latch: Arc<ProcessLatch>,
    job_results: Arc<FileJobResultStore>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl ZooKeeperHaServices {
    /// Starts the HA runtime and connects; blocks until the first session is established
    /// (at most the connection timeout, then fails naming the quorum).
    pub fn start(config: ZooKeeperHaConfig) -> Result<Self, HaError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flint-ha")
            .on_thread_start(|| ON_HA_THREAD.with(|f| f.set(true)))
            .enable_all()
            .build()
            .map_err(|e| HaError::Io { path: "flint-ha runtime".into(), source: e })?;
        let (sessions_tx, sessions) = watch::channel(None);
        let shared = Arc::new(Shared {
            base: zk_path(&[&config.root, &config.cluster_id]),
            config,
            handle: runtime.handle().clone(),
            sessions,
            shutdown: CancellationToken::new(),
            process_id: uuid::Uuid::new_v4().to_string(),
        });
        let job_results = Arc::new(FileJobResultStore::new(shared.config.job_result_store_dir()));
        let supervisor = runtime.spawn(supervise(shared.clone(), sessions_tx));
        let runtime = Arc::new(Runtime { runtime: Mutex::new(Some(runtime)), shared: shared.clone() });
        let first = shared.clone();
        runtime.block_on(async move { first.session().await.map(drop) })?;
        let (latch, latch_tasks) = ProcessLatch::start(shared.clone());
        let mut tasks = vec![supervisor];
        tasks.extend(latch_tasks);
        info!(base = %shared.base, process = %shared.process_id, "zookeeper high availability started");
        Ok(Self { runtime, latch, job_results, tasks: Mutex::new(tasks), closed: AtomicBool::new(false) })
    }

    pub fn config(&self) -> &ZooKeeperHaConfig {
        &self.runtime.shared.config
    }

    /// The znode all of this cluster lives under, e.g. `/flink/default`.
    pub fn base_path(&self) -> &str {
        &self.runtime.shared.base
    }

    /// This process's id (the name of its lock nodes).
    pub fn process_id(&self) -> &str {
        &self.runtime.shared.process_id
    }

    /// Whether this process holds the leader latch (and has told its contenders so).
    pub fn is_leader(&self) -> bool {
        self.latch.is_leader()
    }

    /// The current ZooKeeper session id, if connected.
    pub fn session_id(&self) -> Option<i64> {
        self.runtime.shared.sessions.borrow().as_ref().map(|s| s.id())
    }

    /// The concrete election of `component` (see [`HaServices::leader_election`]).
    pub fn election(&self, component: &str) -> Arc<ZooKeeperLeaderElection> {
        Arc::new(ZooKeeperLeaderElection::new(self.runtime.clone(), self.latch.clone(), component))
    }
}

impl HaServices for ZooKeeperHaServices {
    fn mode(&self) -> &'static str {
        "zookeeper"
    }

    fn leader_election(&self, component: &str) -> Arc<dyn LeaderElection> {
        self.election(component)
    }

    fn leader_retrieval(&self, component: &str) -> Result<Arc<dyn LeaderRetrieval>, HaError> {
        Ok(Arc::new(ZooKeeperLeaderRetrieval::new(self.runtime.clone(), component)))
    }

    fn job_graph_store(&self) -> JobGraphStore {
        let shared = &self.runtime.shared;
        let store = ZooKeeperStateHandleStore::new(
            self.runtime.clone(),
            shared.path(&["jobgraphs"]),
            shared.config.cluster_storage_dir().join("jobgraphs"),
            "submittedJobGraph",
        );
        JobGraphStore::new(Arc::new(store))
    }

    fn completed_checkpoint_store(&self, job_id: JobId, max_retained: usize) -> CompletedCheckpointStore {
        let shared = &self.runtime.shared;
        let store = ZooKeeperStateHandleStore::new(
            self.runtime.clone(),
            shared.path(&["jobs", &job_id.to_string(), "checkpoints"]),
            shared.config.cluster_storage_dir().join("checkpoints").join(job_id.to_string()),
            "completedCheckpoint",
        );
        CompletedCheckpointStore::new(Arc::new(store), max_retained)
    }

    fn checkpoint_id_counter(&self, job_id: JobId) -> Arc<dyn CheckpointIdCounter> {
        let path = self.runtime.shared.path(&["jobs", &job_id.to_string(), "checkpoint_id_counter"]);
        Arc::new(ZooKeeperCheckpointIdCounter::new(self.runtime.clone(), path))
    }

    fn job_result_store(&self) -> Arc<dyn JobResultStore> {
        self.job_results.clone()
    }

    fn cleanup_job_data(&self, job_id: JobId) -> HaFuture<()> {
        let shared = self.runtime.shared.clone();
        self.runtime.spawn(async move {
            shared.delete_recursively(&shared.path(&["jobs", &job_id.to_string()])).await?;
            shared.delete_recursively(&shared.path(&["leader", &job_component(job_id)])).await?;
            let dir = shared.config.cluster_storage_dir().join("checkpoints").join(job_id.to_string());
            let blobs = shared.config.cluster_storage_dir().join("blob").join(format!("job_{job_id}"));
            for dir in [dir, blobs] {
                match tokio::fs::remove_dir_all(&dir).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(HaError::Io { path: dir, source: e }),
                }
            }
            Ok(())
        })
    }

    fn blob_storage_dir(&self) -> Option<std::path::PathBuf> {
        Some(self.runtime.shared.config.cluster_storage_dir().join("blob"))
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        info!(base = %self.runtime.shared.base, "closing zookeeper high availability");
        self.runtime.shared.shutdown.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let latch = self.latch.clone();
        let done = self.runtime.block_on(async move {
            let all = async {
                for task in tasks {
                    let _ = task.await;
                }
                latch.flush().await;
            };
            tokio::time::timeout(Duration::from_secs(5), all).await.map_err(|_| HaError::Closed)
        });
        if done.is_err() {
            warn!("zookeeper high availability did not close in time");
        }
    }
}

impl Drop for ZooKeeperHaServices {
    fn drop(&mut self) {
        // Without close(): the tasks stop with the runtime; the session expires on its own.
        self.runtime.shared.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starting_inside_a_runtime_without_zookeeper_fails_cleanly() {
        // Callers may sit on a tokio/actix thread: starting, failing and dropping the HA
        // runtime there must neither panic nor hang.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = ZooKeeperHaConfig::new(format!("127.0.0.1:{port}"), std::env::temp_dir());
        config.connection_timeout = Duration::from_millis(300);
        config.retry_wait = Duration::from_millis(50);
        match ZooKeeperHaServices::start(config) {
            Err(HaError::NoSession { quorum, .. }) => assert_eq!(quorum, format!("127.0.0.1:{port}")),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("nothing listens there"),
        }
    }

    #[test]
    fn transient_and_session_errors() {
        use zookeeper_client::Error as Zk;
        assert!(transient(&Zk::ConnectionLoss) && !session_gone(&Zk::ConnectionLoss));
        assert!(transient(&Zk::SessionExpired) && session_gone(&Zk::SessionExpired));
        assert!(!transient(&Zk::AuthFailed) && session_gone(&Zk::AuthFailed));
        assert!(!transient(&Zk::NodeExists) && !transient(&Zk::BadVersion));
    }
}
