//! The Dispatcher: accepts jobs, runs a JobMaster per job, keeps the jobs' results.
//!
//! A submitted JobGraph gets a JobMaster actor in the same actix system. When the job
//! reaches a terminal state the JobMaster hands the Dispatcher its final snapshot,
//! which is kept (like Flink's archived execution graphs) so `/jobs` and `/jobs/:id`
//! keep answering for finished jobs. The Dispatcher is a leader-elected, fenced
//! endpoint like the ResourceManager.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use flint_common::ha::{HaServices, LeaderContender, LeaderElection};
use flint_common::ids::{JobId, LeaderSessionId, TriggerId};
use flint_common::job::plan::JobGraph;
use flint_common::messages::{endpoints, JobStatusEntry, ListJobs};
use flint_common::rpc::{Endpoint, FencingToken, RpcService};
use futures::future::join_all;
use tracing::{info, warn};

use crate::execution_graph::JobStatus;
use crate::job_master::{
    CancelJob, GetSnapshot, JobMaster, JobMasterConfig, JobSnapshot, RunOperation, SavepointRestore, Suspend,
};
pub use crate::job_master::{JobTerminated, OperationResult, SavepointOperation};

/// How the Dispatcher starts JobMasters.
pub type DispatcherConfig = JobMasterConfig;

enum JobEntry {
    Running(Addr<JobMaster>),
    /// A terminated job's final state and when it was archived (for `jobstore.*`).
    Done(Arc<JobSnapshot>, std::time::Instant),
}

/// `jobstore.max-capacity` and `jobstore.expiration-time`: how many finished jobs the
/// Dispatcher keeps for the REST API, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct JobStoreLimits {
    pub max_capacity: usize,
    pub expiration: Duration,
}

impl JobStoreLimits {
    pub fn from_config(
        config: &flint_common::config::Configuration,
    ) -> Result<Self, flint_common::config::ConfigError> {
        use flint_common::config::options::{JOBSTORE_EXPIRATION_TIME, JOBSTORE_MAX_CAPACITY};
        Ok(Self {
            max_capacity: config.get(&JOBSTORE_MAX_CAPACITY)? as usize,
            expiration: Duration::from_secs(config.get(&JOBSTORE_EXPIRATION_TIME)?),
        })
    }
}

/// The finished jobs to drop from `jobs` now: expired ones, then the oldest beyond the
/// capacity (pure, for tests).
fn archive_evictions(
    archived: &[(JobId, std::time::Instant)],
    limits: JobStoreLimits,
    now: std::time::Instant,
) -> Vec<JobId> {
    let mut by_age: Vec<&(JobId, std::time::Instant)> = archived.iter().collect();
    by_age.sort_by_key(|(_, at)| *at);
    let expired = by_age.iter().filter(|(_, at)| now.saturating_duration_since(*at) >= limits.expiration).count();
    let over = by_age.len().saturating_sub(expired).saturating_sub(limits.max_capacity);
    by_age.iter().take(expired + over).map(|(id, _)| *id).collect()
}

/// What the job graph store keeps of a submitted job (MessagePack).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredJob {
    graph: JobGraph,
    restore: Option<SavepointRestore>,
}

pub struct Dispatcher {
    rpc: RpcService,
    fencing: FencingToken,
    election: Arc<dyn LeaderElection>,
    config: DispatcherConfig,
    jobs: BTreeMap<JobId, JobEntry>,
    /// The current leadership (submissions are only taken while leader).
    leader: Option<LeaderSessionId>,
    /// Savepoint/checkpoint operations by job and trigger id (at most [`MAX_OPERATIONS`]).
    operations: BTreeMap<(JobId, TriggerId), OperationStatus>,
    job_store: JobStoreLimits,
}

/// Further reads of the job result store after a failed one, during recovery.
const RESULT_STORE_RETRIES: usize = 5;

/// Operations remembered for status requests.
const MAX_OPERATIONS: usize = 1024;

#[derive(Message)]
#[rtype(result = "()")]
struct Leadership(Option<LeaderSessionId>);

struct Contender(Addr<Dispatcher>);

impl LeaderContender for Contender {
    fn grant_leadership(&self, session: LeaderSessionId) {
        self.0.do_send(Leadership(Some(session)));
    }
    fn revoke_leadership(&self) {
        self.0.do_send(Leadership(None));
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.job_store.expiration / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        ctx.run_interval(every, |act, _| act.evict_archived());
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.rpc.unregister_endpoint(endpoints::DISPATCHER);
        self.election.stop();
    }
}

impl Handler<Leadership> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: Leadership, ctx: &mut Context<Self>) {
        self.fencing.set(msg.0);
        self.leader = msg.0;
        match msg.0 {
            Some(session) => {
                info!(%session, "dispatcher granted leadership");
                let address = self.rpc.address_of(endpoints::DISPATCHER).to_string();
                self.election.confirm_leadership(session, &address);
                self.recover_jobs(ctx, session);
            }
            None => {
                info!("dispatcher lost leadership; suspending its jobs");
                for (job_id, entry) in std::mem::take(&mut self.jobs) {
                    if let JobEntry::Running(master) = entry {
                        info!(%job_id, "suspending job");
                        master.do_send(Suspend);
                    }
                }
                let release = self.config.ha.job_graph_store().release_all();
                actix::spawn(async move {
                    if let Err(e) = release.await {
                        warn!(error = %e, "could not release the job graphs");
                    }
                });
            }
        }
    }
}

/// Recovered job graphs of one leadership.
#[derive(Message)]
#[rtype(result = "()")]
struct Recovered {
    session: LeaderSessionId,
    jobs: Vec<(JobId, StoredJob)>,
}

impl Dispatcher {
    /// A new leader: finishes the cleanup of jobs that terminated under an earlier leader
    /// and starts a JobMaster for every other job in the job graph store.
    fn recover_jobs(&mut self, ctx: &mut Context<Self>, session: LeaderSessionId) {
        let ha = self.config.ha.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            let results = ha.job_result_store();
            let dirty = {
                let results = results.clone();
                off_thread(move || results.dirty_results().map_err(|e| e.to_string())).await
            };
            match dirty {
                Ok(dirty) => {
                    for entry in dirty {
                        cleanup_job(&ha, entry.job_id).await;
                    }
                }
                Err(e) => warn!(error = %e, "could not read the job result store"),
            }
            let store = ha.job_graph_store();
            let ids = match store.job_ids().await {
                Ok(ids) => ids,
                Err(e) => {
                    warn!(error = %e, "could not list the job graphs to recover");
                    return;
                }
            };
            let mut jobs = Vec::new();
            for job_id in ids {
                // Never guess whether a job finished: retry the read, and if the store stays
                // unreadable leave the job stored (not run, not removed) and say so.
                let read = || {
                    let results = results.clone();
                    off_thread(move || results.has_result(job_id).map_err(|e| e.to_string()))
                };
                let mut known = read().await;
                for _ in 0..RESULT_STORE_RETRIES {
                    if known.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    known = read().await;
                }
                match known {
                    Ok(true) => {
                        // Terminated already: never run again.
                        let _ = store.remove(job_id).await;
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(%job_id, error = %e, "the job result store cannot be read; the job is not recovered now");
                        continue;
                    }
                }
                match store.get(job_id).await {
                    Ok(Some(bytes)) => match rmp_serde::from_slice::<StoredJob>(&bytes) {
                        Ok(mut job) => {
                            // Resume from the job's latest completed checkpoint, if any.
                            let checkpoints = ha.completed_checkpoint_store(job_id, 1);
                            match checkpoints.latest().await {
                                Ok(Some((_, bytes))) => match serde_json::from_slice::<SavepointRestore>(&bytes) {
                                    Ok(latest) => job.restore = Some(latest),
                                    Err(e) => warn!(%job_id, error = %e, "unreadable checkpoint handle; ignored"),
                                },
                                Ok(None) => {}
                                Err(e) => {
                                    warn!(%job_id, error = %e, "cannot read the job's checkpoints; not recovering it now");
                                    continue;
                                }
                            }
                            jobs.push((job_id, job))
                        }
                        Err(e) => warn!(%job_id, error = %e, "cannot read a stored job graph; skipping it"),
                    },
                    Ok(None) => {}
                    Err(e) => warn!(%job_id, error = %e, "cannot read a stored job graph; skipping it"),
                }
            }
            addr.do_send(Recovered { session, jobs });
        });
    }
}

/// Removes what is left of a globally terminated job and marks its result clean.
async fn cleanup_job(ha: &Arc<dyn HaServices>, job_id: JobId) {
    if let Err(e) = ha.job_graph_store().remove(job_id).await {
        warn!(%job_id, error = %e, "could not remove the job graph");
        return;
    }
    if let Err(e) = ha.cleanup_job_data(job_id).await {
        warn!(%job_id, error = %e, "could not clean up the job's HA data");
        return;
    }
    let results = ha.job_result_store();
    if let Err(e) = off_thread(move || results.mark_clean(job_id).map_err(|e| e.to_string())).await {
        warn!(%job_id, error = %e, "could not mark the job result clean");
    }
}

/// Runs file work of the HA stores on the blocking pool: the Dispatcher's thread is shared
/// with every JobMaster and the REST API and never waits for a disk.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(format!("the blocking task failed: {e}")))
}

impl Handler<Recovered> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: Recovered, ctx: &mut Context<Self>) {
        if self.leader != Some(msg.session) {
            return;
        }
        for (job_id, job) in msg.jobs {
            if self.jobs.contains_key(&job_id) {
                continue;
            }
            info!(%job_id, name = %job.graph.name, "recovering job");
            let master = JobMaster::new(
                job_id,
                job.graph,
                self.rpc.clone(),
                ctx.address().recipient(),
                &self.config,
                job.restore,
            )
            .start();
            self.jobs.insert(job_id, JobEntry::Running(master));
        }
    }
}

/// Stops the Dispatcher: it leaves its election and its endpoint goes away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for Dispatcher {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Submits a job; the id is the given one or a fresh one.
#[derive(Message)]
#[rtype(result = "Result<JobId, SubmitError>")]
pub struct SubmitJob {
    pub job_id: Option<JobId>,
    pub graph: JobGraph,
    /// Resume from this savepoint or retained checkpoint (`savepointPath`).
    pub savepoint_path: Option<String>,
    /// Accept a savepoint with state of operators the job no longer has.
    pub allow_non_restored_state: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("Job has already been submitted: {0}")]
    Duplicate(JobId),
    #[error("{0}")]
    InvalidSavepoint(String),
    #[error("This jobmanager is not the leader; submit the job to the leading jobmanager.")]
    NotLeader,
    #[error("Could not persist the job graph: {0}")]
    Store(String),
}

/// Checks that the savepoint at `path` can be restored into `graph`.
fn check_savepoint(path: &str, graph: &JobGraph, allow_non_restored: bool) -> Result<SavepointRestore, String> {
    use flint_common::checkpoint_storage::{read_metadata, CheckpointStorage, METADATA_FILE};
    // `flint.io.allowed-paths` reads the path the same way (checked before this runs).
    let location = std::path::PathBuf::from(flint_common::io_paths::strip_file_scheme(path.trim()));
    // A job's checkpoint directory (`<state.checkpoints.dir>/<job-id>`) stands for its newest
    // complete checkpoint; torn ones (no `_metadata`) are skipped.
    let job_dir_of = |dir: &std::path::Path| -> Option<(std::path::PathBuf, JobId)> {
        let job = dir.file_name()?.to_str()?.parse::<JobId>().ok()?;
        Some((dir.parent()?.to_path_buf(), job))
    };
    let location = match job_dir_of(&location) {
        Some((base, job)) if location.is_dir() && !location.join(METADATA_FILE).exists() => {
            let storage = CheckpointStorage::new(&base.to_string_lossy()).map_err(|e| e.to_string())?;
            match storage.latest_completed(job).map_err(|e| e.to_string())? {
                Some((_, dir)) => dir,
                None => return Err(format!("Cannot restore from '{path}': it holds no complete checkpoint.")),
            }
        }
        _ => location,
    };
    let metadata = read_metadata(&location).map_err(|e| format!("Cannot restore from savepoint '{path}': {e}"))?;
    let known: std::collections::BTreeSet<&str> =
        graph.vertices.iter().flat_map(|v| v.operators.iter().map(|o| o.id.as_str())).collect();
    let unknown: std::collections::BTreeSet<&str> = metadata
        .operators
        .iter()
        .filter(|e| !e.handles.is_empty() && !known.contains(e.operator_id.as_str()))
        .map(|e| e.operator_id.as_str())
        .collect();
    if !unknown.is_empty() && !allow_non_restored {
        return Err(format!(
            "Failed to rollback to checkpoint/savepoint {path}. Cannot map checkpoint/savepoint state for operator(s) \
             {} to the new program, because the operator is not available in the new program. If you want to allow \
             to skip this, you can set the --allowNonRestoredState option on the CLI.",
            unknown.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(entry) = metadata.operators.iter().find(|e| e.max_parallelism != graph.max_parallelism) {
        return Err(format!(
            "Cannot restore from savepoint '{path}': operator '{}' was saved with max parallelism {}, the job has {}.",
            entry.operator_id, entry.max_parallelism, graph.max_parallelism
        ));
    }
    let dir = location.as_path();
    let dir = if dir.ends_with(METADATA_FILE) { dir.parent().unwrap_or(dir) } else { dir };
    Ok(SavepointRestore {
        checkpoint_id: metadata.checkpoint_id,
        location: dir.to_string_lossy().into_owned(),
        is_savepoint: metadata.is_savepoint,
    })
}

impl Handler<SubmitJob> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<JobId, SubmitError>>;
    fn handle(&mut self, msg: SubmitJob, _ctx: &mut Context<Self>) -> Self::Result {
        let job_id = match self.check_submission(&msg) {
            Ok(id) => id,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        // The job result store and the savepoint are read, and the job graph stored, off the
        // control thread. Nothing a user submitted is lost: the job graph is stored (in
        // ZooKeeper mode a file in the HA storage directory plus its handle) before the
        // submission is acknowledged.
        let ha = self.config.ha.clone();
        let leader = self.leader;
        let prepare = async move {
            let SubmitJob { graph, savepoint_path, allow_non_restored_state, .. } = msg;
            let checks = ha.clone();
            let restore = tokio::task::spawn_blocking(move || {
                // Never guess: a result store that cannot be read refuses the submission (a
                // retry may help) rather than risk running a finished job again.
                let known = checks
                    .job_result_store()
                    .has_result(job_id)
                    .map_err(|e| SubmitError::Store(format!("could not read the job result store: {e}")))?;
                if known {
                    return Err(SubmitError::Duplicate(job_id));
                }
                savepoint_path
                    .map(|path| {
                        check_savepoint(&path, &graph, allow_non_restored_state).map_err(SubmitError::InvalidSavepoint)
                    })
                    .transpose()
                    .map(|restore| StoredJob { graph, restore })
            })
            .await
            .unwrap_or_else(|e| Err(SubmitError::Store(format!("the submission checks failed: {e}"))))?;
            let bytes = rmp_serde::to_vec_named(&restore).map_err(|e| SubmitError::Store(e.to_string()))?;
            ha.job_graph_store().put(job_id, bytes).await.map_err(|e| SubmitError::Store(e.to_string()))?;
            Ok(restore)
        };
        Box::pin(prepare.into_actor(self).map(move |prepared: Result<StoredJob, SubmitError>, act, ctx| {
            let stored = prepared?;
            if act.leader != leader {
                return Err(SubmitError::NotLeader);
            }
            if act.jobs.contains_key(&job_id) {
                return Err(SubmitError::Duplicate(job_id));
            }
            info!(%job_id, name = %stored.graph.name, "job submitted");
            let master = JobMaster::new(
                job_id,
                stored.graph,
                act.rpc.clone(),
                ctx.address().recipient(),
                &act.config,
                stored.restore,
            )
            .start();
            act.jobs.insert(job_id, JobEntry::Running(master));
            Ok(job_id)
        }))
    }
}

impl Dispatcher {
    /// Drops finished jobs past `jobstore.expiration-time` or beyond `jobstore.max-capacity`.
    fn evict_archived(&mut self) {
        let archived: Vec<(JobId, std::time::Instant)> = self
            .jobs
            .iter()
            .filter_map(|(id, e)| match e {
                JobEntry::Done(_, at) => Some((*id, *at)),
                JobEntry::Running(_) => None,
            })
            .collect();
        for job_id in archive_evictions(&archived, self.job_store, std::time::Instant::now()) {
            info!(%job_id, "finished job removed from the job store");
            self.jobs.remove(&job_id);
        }
    }

    /// What can be checked without I/O: leadership and the jobs this Dispatcher holds.
    fn check_submission(&self, msg: &SubmitJob) -> Result<JobId, SubmitError> {
        if self.leader.is_none() {
            return Err(SubmitError::NotLeader);
        }
        let job_id = msg.job_id.unwrap_or_else(JobId::generate);
        if self.jobs.contains_key(&job_id) {
            return Err(SubmitError::Duplicate(job_id));
        }
        Ok(job_id)
    }
}

impl Handler<JobTerminated> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: JobTerminated, _ctx: &mut Context<Self>) {
        let job_id = msg.job_id;
        info!(%job_id, status = %msg.snapshot.graph.status, "job terminated");
        // The result first (a new leader must not run the job again), then the cleanup.
        let result = serde_json::to_value(&*msg.snapshot).unwrap_or(serde_json::Value::Null);
        let ha = self.config.ha.clone();
        let blobs = self.config.blobs.clone();
        actix::spawn(async move {
            let store = ha.clone();
            let recorded = tokio::task::spawn_blocking(move || store.job_result_store().create_dirty(job_id, result))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match recorded {
                Ok(()) => {
                    if let Some((store, _)) = blobs {
                        let _ = off_thread(move || {
                            store.delete_job(job_id);
                            Ok(())
                        })
                        .await;
                    }
                    cleanup_job(&ha, job_id).await
                }
                Err(e) => warn!(%job_id, error = %e, "could not record the job result"),
            }
        });
        self.jobs.insert(job_id, JobEntry::Done(Arc::from(msg.snapshot), std::time::Instant::now()));
        self.evict_archived();
    }
}

/// The final state of a job whose JobMaster stopped (`None`: unknown or evicted). Asked
/// after a snapshot request to a stopping JobMaster failed: the JobMaster hands over its
/// final state before it stops, so by the time this is handled the Dispatcher has it.
#[derive(Message)]
#[rtype(result = "Option<Arc<JobSnapshot>>")]
struct GetArchivedJob(JobId);

impl Handler<GetArchivedJob> for Dispatcher {
    type Result = Option<Arc<JobSnapshot>>;
    fn handle(&mut self, msg: GetArchivedJob, _ctx: &mut Context<Self>) -> Self::Result {
        match self.jobs.get(&msg.0) {
            Some(JobEntry::Done(s, _)) => Some(s.clone()),
            _ => None,
        }
    }
}

/// A running job's snapshot, or its final state if its JobMaster stopped meanwhile: a job
/// is always visible, running or archived.
async fn snapshot_of(dispatcher: Addr<Dispatcher>, job_id: JobId, master: Addr<JobMaster>) -> Option<Arc<JobSnapshot>> {
    match master.send(GetSnapshot).await {
        Ok(snapshot) => Some(Arc::new(snapshot)),
        Err(_) => dispatcher.send(GetArchivedJob(job_id)).await.ok().flatten(),
    }
}

/// The current state of one job (`None`: unknown job).
#[derive(Message)]
#[rtype(result = "Option<Arc<JobSnapshot>>")]
pub struct GetJob(pub JobId);

impl Handler<GetJob> for Dispatcher {
    type Result = ResponseFuture<Option<Arc<JobSnapshot>>>;
    fn handle(&mut self, msg: GetJob, ctx: &mut Context<Self>) -> Self::Result {
        match self.jobs.get(&msg.0) {
            None => Box::pin(async { None }),
            Some(JobEntry::Done(s, _)) => {
                let s = s.clone();
                Box::pin(async move { Some(s) })
            }
            Some(JobEntry::Running(addr)) => Box::pin(snapshot_of(ctx.address(), msg.0, addr.clone())),
        }
    }
}

/// Snapshots of every job, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<Arc<JobSnapshot>>")]
pub struct GetAllJobs;

impl Handler<GetAllJobs> for Dispatcher {
    type Result = ResponseFuture<Vec<Arc<JobSnapshot>>>;
    fn handle(&mut self, _: GetAllJobs, ctx: &mut Context<Self>) -> Self::Result {
        let mut done = Vec::new();
        let mut running = Vec::new();
        for (job_id, entry) in &self.jobs {
            match entry {
                JobEntry::Done(s, _) => done.push(s.clone()),
                JobEntry::Running(addr) => running.push(snapshot_of(ctx.address(), *job_id, addr.clone())),
            }
        }
        Box::pin(async move {
            let mut all = done;
            all.extend(join_all(running).await.into_iter().flatten());
            all.sort_by_key(|s| s.graph.status_timestamp(JobStatus::Created));
            all
        })
    }
}

/// Cancels a job.
#[derive(Message)]
#[rtype(result = "Result<(), CancelError>")]
pub struct CancelJobRequest(pub JobId);

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("Job {0} not found")]
    NotFound(JobId),
    #[error("Job {job_id} is in state {status} and cannot be canceled.")]
    NotCancelable { job_id: JobId, status: JobStatus },
}

impl Handler<CancelJobRequest> for Dispatcher {
    type Result = ResponseFuture<Result<(), CancelError>>;
    fn handle(&mut self, msg: CancelJobRequest, _ctx: &mut Context<Self>) -> Self::Result {
        let job_id = msg.0;
        match self.jobs.get(&job_id) {
            None => Box::pin(async move { Err(CancelError::NotFound(job_id)) }),
            Some(JobEntry::Done(s, _)) => {
                let status = s.graph.status;
                Box::pin(async move { Err(CancelError::NotCancelable { job_id, status }) })
            }
            Some(JobEntry::Running(addr)) => {
                let request = addr.send(CancelJob);
                Box::pin(async move {
                    match request.await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(status)) => Err(CancelError::NotCancelable { job_id, status }),
                        Err(_) => Err(CancelError::NotCancelable { job_id, status: JobStatus::Finished }),
                    }
                })
            }
        }
    }
}

/// State of an operation, as `GET /jobs/:id/savepoints/:triggerid` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperationStatus {
    InProgress,
    Completed(OperationResult),
    Failed(String),
}

/// Starts an operation; answers with its trigger id at once (the operation goes on).
#[derive(Message)]
#[rtype(result = "Result<TriggerId, OperationError>")]
pub struct TriggerOperation {
    pub job_id: JobId,
    pub operation: SavepointOperation,
    /// The client's own trigger id (`triggerId` in the body), if any.
    pub trigger_id: Option<TriggerId>,
}

/// The status of an operation started with [`TriggerOperation`]; `None` when unknown.
#[derive(Message)]
#[rtype(result = "Option<OperationStatus>")]
pub struct GetOperationStatus {
    pub job_id: JobId,
    pub trigger_id: TriggerId,
}

#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    #[error("Job {0} not found")]
    NotFound(JobId),
}

impl Handler<TriggerOperation> for Dispatcher {
    type Result = Result<TriggerId, OperationError>;
    fn handle(&mut self, msg: TriggerOperation, ctx: &mut Context<Self>) -> Self::Result {
        let job_id = msg.job_id;
        let trigger_id = msg.trigger_id.unwrap_or_else(TriggerId::generate);
        let key = (job_id, trigger_id);
        match self.jobs.get(&job_id) {
            None => return Err(OperationError::NotFound(job_id)),
            Some(JobEntry::Done(s, _)) => {
                // As Flink: accepted, then failed (the job is no longer running).
                let cause = format!(
                    "org.apache.flink.runtime.messages.FlinkJobNotFoundException: Could not find Flink job ({job_id}): \
                     the job reached {}",
                    s.graph.status
                );
                self.operations.insert(key, OperationStatus::Failed(cause));
            }
            Some(JobEntry::Running(addr)) => {
                if self.operations.get(&key) == Some(&OperationStatus::InProgress) {
                    return Ok(trigger_id);
                }
                self.operations.insert(key, OperationStatus::InProgress);
                let request = addr.send(RunOperation(msg.operation));
                ctx.spawn(request.into_actor(self).map(move |result, act, _ctx| {
                    let status = match result {
                        Ok(Ok(done)) => OperationStatus::Completed(done),
                        Ok(Err(cause)) => OperationStatus::Failed(cause),
                        Err(_) => OperationStatus::Failed(format!("the job master of job {job_id} stopped")),
                    };
                    act.operations.insert(key, status);
                }));
            }
        }
        if self.operations.len() > MAX_OPERATIONS {
            let first = *self.operations.keys().next().expect("not empty");
            self.operations.remove(&first);
        }
        Ok(trigger_id)
    }
}

impl Handler<GetOperationStatus> for Dispatcher {
    type Result = Option<OperationStatus>;
    fn handle(&mut self, msg: GetOperationStatus, _ctx: &mut Context<Self>) -> Self::Result {
        self.operations.get(&(msg.job_id, msg.trigger_id)).cloned()
    }
}

impl Handler<ListJobs> for Dispatcher {
    type Result = ResponseFuture<Vec<JobStatusEntry>>;
    fn handle(&mut self, _: ListJobs, ctx: &mut Context<Self>) -> Self::Result {
        let all = ctx.address().send(GetAllJobs);
        Box::pin(async move {
            all.await
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    let g = &s.graph;
                    let end = [JobStatus::Finished, JobStatus::Canceled, JobStatus::Failed]
                        .iter()
                        .map(|st| g.status_timestamp(*st))
                        .max()
                        .unwrap_or(-1);
                    JobStatusEntry {
                        job_id: g.job_id,
                        name: g.name.clone(),
                        status: g.status.flink_name().to_string(),
                        start_time_ms: g.status_timestamp(JobStatus::Initializing),
                        end_time_ms: if g.status.is_globally_terminal() { end } else { -1 },
                        last_modification_ms: g.status_timestamp(g.status),
                    }
                })
                .collect()
        })
    }
}

/// Starts the Dispatcher in the current actix system and enters its election.
pub fn start(
    rpc: &RpcService,
    election: Arc<dyn LeaderElection>,
    config: DispatcherConfig,
    job_store: JobStoreLimits,
) -> Addr<Dispatcher> {
    let fencing = FencingToken::new();
    let addr = Dispatcher {
        rpc: rpc.clone(),
        fencing: fencing.clone(),
        election: election.clone(),
        config,
        jobs: BTreeMap::new(),
        leader: None,
        operations: BTreeMap::new(),
        job_store,
    }
    .start();
    rpc.register_endpoint(Endpoint::new(endpoints::DISPATCHER).fenced(fencing).on_actor::<ListJobs, _>(addr.clone()));
    election.start(Arc::new(Contender(addr.clone())));
    addr
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_job_store_evicts_expired_then_oldest_beyond_capacity() {
        let t0 = Instant::now();
        let ids: Vec<JobId> = (0..5).map(|_| JobId::generate()).collect();
        let archived: Vec<(JobId, Instant)> =
            ids.iter().enumerate().map(|(i, id)| (*id, t0 + Duration::from_secs(i as u64))).collect();
        let limits = JobStoreLimits { max_capacity: 3, expiration: Duration::from_secs(3600) };
        // Capacity 3 of 5: the two oldest go.
        assert_eq!(archive_evictions(&archived, limits, t0 + Duration::from_secs(10)), vec![ids[0], ids[1]]);
        // Expiry: everything archived 3600 s ago or earlier goes, and nothing more is needed.
        let later = t0 + Duration::from_secs(3602);
        assert_eq!(archive_evictions(&archived, limits, later), vec![ids[0], ids[1], ids[2]]);
        let unlimited = JobStoreLimits { max_capacity: usize::MAX, expiration: Duration::from_secs(3600) };
        assert!(archive_evictions(&archived, unlimited, t0 + Duration::from_secs(10)).is_empty());
    }
}
