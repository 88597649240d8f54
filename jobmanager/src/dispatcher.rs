//! The Dispatcher: owns the set of jobs of this cluster.
//!
//! Job submission and JobMasters arrive with job scheduling; until then the Dispatcher
//! knows no jobs and answers `/jobs` from its (empty) table. It is a leader-elected,
//! fenced endpoint like the ResourceManager.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use flint_common::ha::{LeaderContender, LeaderElection};
use flint_common::ids::{JobId, LeaderSessionId};
use flint_common::messages::{endpoints, JobStatusEntry, ListJobs};
use flint_common::rpc::{Endpoint, FencingToken, RpcService};
use tracing::info;

pub struct Dispatcher {
    rpc: RpcService,
    fencing: FencingToken,
    election: Arc<dyn LeaderElection>,
    jobs: BTreeMap<JobId, JobStatusEntry>,
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

impl Handler<ListJobs> for Dispatcher {
    type Result = MessageResult<ListJobs>;
    fn handle(&mut self, _: ListJobs, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.jobs.values().cloned().collect())
    }
}

/// Starts the Dispatcher in the current actix system and enters its election.
pub fn start(rpc: &RpcService, election: Arc<dyn LeaderElection>) -> Addr<Dispatcher> {
    let fencing = FencingToken::new();
    let addr =
        Dispatcher { rpc: rpc.clone(), fencing: fencing.clone(), election: election.clone(), jobs: BTreeMap::new() }
            .start();
    rpc.register_endpoint(Endpoint::new(endpoints::DISPATCHER).fenced(fencing).on_actor::<ListJobs, _>(addr.clone()));
    election.start(Arc::new(Contender(addr.clone())));
    addr
}
