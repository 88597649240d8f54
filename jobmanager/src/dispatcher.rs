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
use flint_common::ha::{LeaderContender, LeaderElection};
use flint_common::ids::{JobId, LeaderSessionId};
use flint_common::job::plan::JobGraph;
use flint_common::messages::{endpoints, JobStatusEntry, ListJobs, RemoteEndpoint};
use flint_common::rpc::{Endpoint, FencingToken, RpcService};
use futures::future::join_all;
use tracing::info;

use crate::execution_graph::JobStatus;
use crate::job_master::{CancelJob, GetSnapshot, HeartbeatSettings, JobMaster, JobSnapshot};

/// How the Dispatcher starts JobMasters.
#[derive(Clone)]
pub struct DispatcherConfig {
    pub resource_manager: RemoteEndpoint,
    pub slot_request_timeout: Duration,
    pub ask_timeout: Duration,
    pub heartbeat: HeartbeatSettings,
    /// The cluster configuration (defaults for job settings such as restarts).
    pub cluster: flint_common::config::Configuration,
}

enum JobEntry {
    Running(Addr<JobMaster>),
    Done(Box<JobSnapshot>),
}

pub struct Dispatcher {
    rpc: RpcService,
    fencing: FencingToken,
    election: Arc<dyn LeaderElection>,
    config: DispatcherConfig,
    jobs: BTreeMap<JobId, JobEntry>,
}

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

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.rpc.unregister_endpoint(endpoints::DISPATCHER);
        self.election.stop();
    }
}

impl Handler<Leadership> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: Leadership, _ctx: &mut Context<Self>) {
        self.fencing.set(msg.0);
        match msg.0 {
            Some(session) => {
                info!(%session, "dispatcher granted leadership");
                let address = self.rpc.address_of(endpoints::DISPATCHER).to_string();
                self.election.confirm_leadership(session, &address);
            }
            None => info!("dispatcher lost leadership"),
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
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("Job has already been submitted: {0}")]
    Duplicate(JobId),
}

impl Handler<SubmitJob> for Dispatcher {
    type Result = Result<JobId, SubmitError>;
    fn handle(&mut self, msg: SubmitJob, ctx: &mut Context<Self>) -> Self::Result {
        let job_id = msg.job_id.unwrap_or_else(JobId::generate);
        if self.jobs.contains_key(&job_id) {
            return Err(SubmitError::Duplicate(job_id));
        }
        info!(%job_id, name = %msg.graph.name, "job submitted");
        let master = JobMaster::new(job_id, msg.graph, self.rpc.clone(), ctx.address(), &self.config).start();
        self.jobs.insert(job_id, JobEntry::Running(master));
        Ok(job_id)
    }
}

/// A JobMaster's job ended; its final state is kept.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobTerminated {
    pub job_id: JobId,
    pub snapshot: Box<JobSnapshot>,
}

impl Handler<JobTerminated> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: JobTerminated, _ctx: &mut Context<Self>) {
        info!(job_id = %msg.job_id, status = %msg.snapshot.graph.status, "job terminated");
        self.jobs.insert(msg.job_id, JobEntry::Done(msg.snapshot));
    }
}

/// The current state of one job (`None`: unknown job).
#[derive(Message)]
#[rtype(result = "Option<JobSnapshot>")]
pub struct GetJob(pub JobId);

impl Handler<GetJob> for Dispatcher {
    type Result = ResponseFuture<Option<JobSnapshot>>;
    fn handle(&mut self, msg: GetJob, _ctx: &mut Context<Self>) -> Self::Result {
        match self.jobs.get(&msg.0) {
            None => Box::pin(async { None }),
            Some(JobEntry::Done(s)) => {
                let s = (**s).clone();
                Box::pin(async move { Some(s) })
            }
            Some(JobEntry::Running(addr)) => {
                let request = addr.send(GetSnapshot);
                Box::pin(async move { request.await.ok() })
            }
        }
    }
}

/// Snapshots of every job, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<JobSnapshot>")]
pub struct GetAllJobs;

impl Handler<GetAllJobs> for Dispatcher {
    type Result = ResponseFuture<Vec<JobSnapshot>>;
    fn handle(&mut self, _: GetAllJobs, _ctx: &mut Context<Self>) -> Self::Result {
        let mut done = Vec::new();
        let mut running = Vec::new();
        for entry in self.jobs.values() {
            match entry {
                JobEntry::Done(s) => done.push((**s).clone()),
                JobEntry::Running(addr) => running.push(addr.send(GetSnapshot)),
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
            Some(JobEntry::Done(s)) => {
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
pub fn start(rpc: &RpcService, election: Arc<dyn LeaderElection>, config: DispatcherConfig) -> Addr<Dispatcher> {
    let fencing = FencingToken::new();
    let addr = Dispatcher {
        rpc: rpc.clone(),
        fencing: fencing.clone(),
        election: election.clone(),
        config,
        jobs: BTreeMap::new(),
    }
    .start();
    rpc.register_endpoint(Endpoint::new(endpoints::DISPATCHER).fenced(fencing).on_actor::<ListJobs, _>(addr.clone()));
    election.start(Arc::new(Contender(addr.clone())));
    addr
}
