//! Leader election: one leader latch per process, shared by all of its components.
//!
//! The latch is Curator's `LeaderLatch` recipe (and its node names): every process that has at
//! least one started election owns one ephemeral sequential node
//! `<base>/leader/latch/_c_<uuid>-latch-<seq>`; the lowest sequence number leads, every other
//! process watches its predecessor. The `_c_<uuid>-` prefix finds our node again when a lost
//! connection hid whether the create succeeded.
//!
//! When the process gets the latch, every registered component is granted leadership with a
//! fresh [`LeaderSessionId`]; a component registered later is granted at once. A contender's
//! confirmation is published to `<base>/leader/<component>/connection_info` (ephemeral, JSON)
//! by a multi-op whose first op checks that our latch node still exists, so a process that
//! lost the latch cannot overwrite the new leader. Leadership ends (every contender revoked)
//! when the latch node or the session is lost, when the connection is suspended (unless
//! `tolerate-suspended-connections`), and when the last component stops (the node is then
//! deleted: the process leaves the election). After a session loss the process re-enters the
//! election with the new session.
//!
//! Contender callbacks run on one dispatcher task, in the order the state changed, never
//! under the latch's lock.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use zookeeper_client::{CheckWriteError, Client, CreateMode, Error as Zk, SessionState};

use super::{session_gone, wait_connected, Connection, Runtime, Session, Shared, ZkResult};
use crate::ha::{HaError, LeaderContender, LeaderElection};
use crate::ids::LeaderSessionId;

/// The content of a `connection_info` node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConnectionInfo {
    pub address: String,
    #[serde(rename = "sessionId")]
    pub session_id: LeaderSessionId,
}

enum Action {
    Grant(Arc<dyn LeaderContender>, LeaderSessionId, String),
    Revoke(Arc<dyn LeaderContender>, String),
    Flush(oneshot::Sender<()>),
}

struct Component {
    contender: Arc<dyn LeaderContender>,
    registration: u64,
    session: Option<LeaderSessionId>,
    confirmed: Option<(LeaderSessionId, String)>,
}

/// The latch held in one session.
#[derive(Clone)]
struct Leadership {
    latch_node: String,
    zk_session: i64,
}

#[derive(Default)]
struct LatchState {
    leadership: Option<Leadership>,
    components: BTreeMap<String, Component>,
}

/// The process's leader latch and the components taking part through it.
pub(crate) struct ProcessLatch {
    shared: Arc<Shared>,
    state: Mutex<LatchState>,
    members: watch::Sender<usize>,
    actions: mpsc::UnboundedSender<Action>,
    registrations: AtomicU64,
    /// One connection_info write at a time, each writing the then current confirmation.
    publishing: tokio::sync::Mutex<()>,
}

enum Outcome {
    Left,
    SessionLost,
    Shutdown,
    Failed(Zk),
}

impl ProcessLatch {
    /// The latch and the task driving it (to await on close).
    pub fn start(shared: Arc<Shared>) -> (Arc<Self>, Vec<JoinHandle<()>>) {
        // Unbounded on purpose: only this process's own latch events and contender calls
        // go in (a handful per leadership change), never anything a peer sends.
        let (actions, receiver) = mpsc::unbounded_channel();
        let latch = Arc::new(Self {
            shared: shared.clone(),
            state: Mutex::default(),
            members: watch::channel(0).0,
            actions,
            registrations: AtomicU64::new(0),
            publishing: tokio::sync::Mutex::new(()),
        });
        shared.handle.spawn(dispatch(receiver));
        let driver = shared.handle.spawn(drive(latch.clone()));
        (latch, vec![driver])
    }

    fn state(&self) -> MutexGuard<'_, LatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, action: Action) {
        // Fails only when the runtime is gone; then nobody is left to call.
        let _ = self.actions.send(action);
    }

    pub fn is_leader(&self) -> bool {
        self.state().leadership.is_some()
    }

    /// Waits until every callback queued so far has run.
    pub async fn flush(&self) {
        let (done, finished) = oneshot::channel();
        if self.actions.send(Action::Flush(done)).is_ok() {
            let _ = finished.await;
        }
    }

    fn register(&self, component: &str, contender: Arc<dyn LeaderContender>) -> u64 {
        let registration = self.registrations.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.state();
        if let Some(old) = state.components.remove(component) {
            if old.session.is_some() {
                self.send(Action::Revoke(old.contender, component.to_string()));
            }
        }
        let session = state.leadership.as_ref().map(|_| LeaderSessionId::generate());
        if let Some(session) = session {
            self.send(Action::Grant(contender.clone(), session, component.to_string()));
        }
        state.components.insert(component.to_string(), Component { contender, registration, session, confirmed: None });
        self.members.send_replace(state.components.len());
        debug!(component, "joined the leader election");
        registration
    }

    fn unregister(self: &Arc<Self>, component: &str, registration: u64) {
        let mut state = self.state();
        if state.components.get(component).is_none_or(|c| c.registration != registration) {
            return;
        }
        let old = state.components.remove(component).expect("checked above");
        if old.session.is_some() {
            self.send(Action::Revoke(old.contender, component.to_string()));
        }
        if let (Some(_), Some(leadership)) = (old.confirmed, state.leadership.clone()) {
            let latch = self.clone();
            let component = component.to_string();
            self.shared.handle.spawn(async move { latch.retract(&component, leadership).await });
        }
        self.members.send_replace(state.components.len());
        debug!(component, "left the leader election");
    }

    fn confirm(self: &Arc<Self>, component: &str, session: LeaderSessionId, address: &str) {
        {
            let mut state = self.state();
            let Some(entry) = state.components.get_mut(component).filter(|c| c.session == Some(session)) else {
                debug!(component, %session, "ignoring confirmation of a leadership that is gone");
                return;
            };
            entry.confirmed = Some((session, address.to_string()));
        }
        let latch = self.clone();
        let component = component.to_string();
        self.shared.handle.spawn(async move { latch.publish(&component).await });
    }

    fn has_leadership(&self, component: &str, session: LeaderSessionId) -> bool {
        self.state().components.get(component).is_some_and(|c| c.session == Some(session))
    }

    fn confirmed(&self, component: &str) -> Option<(LeaderSessionId, String)> {
        self.state().components.get(component).and_then(|c| c.confirmed.clone())
    }

    fn become_leader(&self, latch_node: &str, zk_session: i64) {
        let mut state = self.state();
        if state.leadership.is_some() {
            return;
        }
        info!(node = latch_node, "this process holds the leader latch, granting leadership");
        state.leadership = Some(Leadership { latch_node: latch_node.to_string(), zk_session });
        for (name, component) in state.components.iter_mut() {
            let session = LeaderSessionId::generate();
            component.session = Some(session);
            component.confirmed = None;
            self.send(Action::Grant(component.contender.clone(), session, name.clone()));
        }
    }

    fn lose_leadership(&self, reason: &str) {
        let mut state = self.state();
        if state.leadership.take().is_none() {
            return;
        }
        warn!(reason, "leadership lost, revoking");
        for (name, component) in state.components.iter_mut() {
            component.confirmed = None;
            if component.session.take().is_some() {
                self.send(Action::Revoke(component.contender.clone(), name.clone()));
            }
        }
    }

    /// Writes the current confirmation of `component` to its connection_info node, retrying
    /// until it is written or no longer ours to write.
    async fn publish(&self, component: &str) {
        let _one_at_a_time = self.publishing.lock().await;
        let path = self.shared.path(&["leader", component, "connection_info"]);
        loop {
            let (info, leadership) = {
                let state = self.state();
                let Some(leadership) = state.leadership.clone() else { return };
                let Some((session_id, address)) = state.components.get(component).and_then(|c| c.confirmed.clone())
                else {
                    return;
                };
                (ConnectionInfo { address, session_id }, leadership)
            };
            let data = serde_json::to_vec(&info).expect("connection info serializes");
            let session = match self.shared.session().await {
                Ok(session) => session,
                Err(HaError::Closed) => return,
                Err(e) => {
                    warn!(component, error = %e, "cannot publish leader yet");
                    if !self.shared.pause().await {
                        return;
                    }
                    continue;
                }
            };
            if session.id() != leadership.zk_session {
                // Leadership of a lost session; the driver is about to revoke it.
                return;
            }
            match write_connection_info(&self.shared, &session.client, &leadership.latch_node, &path, &data).await {
                Ok(true) => {
                    info!(component, address = %info.address, session_id = %info.session_id, "published leader");
                    return;
                }
                Ok(false) => {
                    debug!(component, "leader latch no longer held, not publishing");
                    return;
                }
                Err(e) if session_gone(&e) => return,
                Err(e) => {
                    warn!(component, error = %e, "publishing leader failed, retrying");
                    if !self.shared.pause().await {
                        return;
                    }
                }
            }
        }
    }

    /// Deletes the connection_info of a component that stopped while leader (if it is still
    /// ours and we still hold the latch).
    async fn retract(&self, component: &str, leadership: Leadership) {
        let _one_at_a_time = self.publishing.lock().await;
        if self.state().components.get(component).is_some_and(|c| c.confirmed.is_some()) {
            return; // started and confirmed again meanwhile
        }
        let path = self.shared.path(&["leader", component, "connection_info"]);
        let Ok(session) = self.shared.session().await else { return };
        if session.id() != leadership.zk_session {
            return;
        }
        let Ok(Some(stat)) = session.client.check_stat(&path).await else { return };
        if stat.ephemeral_owner != session.id() {
            return;
        }
        let Ok(mut writer) = session.client.new_check_writer(&leadership.latch_node, Some(0)) else { return };
        if writer.add_delete(&path, Some(stat.version)).is_ok() {
            if let Err(e) = writer.commit().await {
                debug!(component, error = %e, "could not delete leader information");
            }
        }
    }

    /// Takes part in the election for the life of `session` (or until no component is left,
    /// or shutdown).
    async fn run(&self, session: &Session, members: &mut watch::Receiver<usize>) -> Outcome {
        let shared = &self.shared;
        let client = &session.client;
        let dir = shared.path(&["leader", "latch"]);
        let mut states = client.state_watcher();
        let mut node: Option<String> = None;
        loop {
            if *members.borrow_and_update() == 0 {
                if let Some(node) = &node {
                    leave(client, node).await;
                }
                return Outcome::Left;
            }
            if !matches!(states.peek_state(), SessionState::SyncConnected | SessionState::ConnectedReadOnly) {
                if !shared.config.tolerate_suspended_connections {
                    self.lose_leadership("zookeeper connection suspended");
                }
                match wait_connected(&mut states, &shared.shutdown).await {
                    Connection::Connected => {}
                    Connection::Lost => return Outcome::SessionLost,
                    Connection::Shutdown => return Outcome::Shutdown,
                }
            }
            let watched = match self.check(session, &dir, &mut node).await {
                Ok(Some(watched)) => watched,
                Ok(None) => continue,
                Err(e) => match self.on_error(client, &node, e).await {
                    Some(outcome) => return outcome,
                    None => continue,
                },
            };
            let watcher = match client.check_and_watch_stat(&watched).await {
                Ok((Some(_), watcher)) => watcher,
                Ok((None, _)) => continue,
                Err(e) => match self.on_error(client, &node, e).await {
                    Some(outcome) => return outcome,
                    None => continue,
                },
            };
            tokio::select! {
                _ = shared.shutdown.cancelled() => {
                    if let Some(node) = &node {
                        leave(client, node).await;
                    }
                    return Outcome::Shutdown;
                }
                _ = members.changed() => {}
                _ = watcher.changed() => {}
                _ = states.changed() => {}
            }
        }
    }

    /// Makes sure our latch node exists and compares it with the others: becomes leader or
    /// not, and answers the node to watch (our own when leading, else our predecessor).
    async fn check(&self, session: &Session, dir: &str, node: &mut Option<String>) -> ZkResult<Option<String>> {
        let client = &session.client;
        let mine = match node {
            Some(mine) => mine.clone(),
            None => {
                let created = self.create_node(client, dir).await?;
                debug!(node = %created, "entered the leader election");
                *node = Some(created.clone());
                created
            }
        };
        let children = match client.list_children(dir).await {
            Ok(children) => children,
            Err(Zk::NoNode) => {
                *node = None;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let sorted = sorted_latch_nodes(children);
        let my_name = mine.rsplit('/').next().unwrap_or_default();
        match sorted.iter().position(|name| name == my_name) {
            None => {
                warn!(node = %mine, "leader latch node vanished, entering the election again");
                self.lose_leadership("leader latch node deleted");
                *node = None;
                Ok(None)
            }
            Some(0) => {
                self.become_leader(&mine, session.id());
                Ok(Some(mine))
            }
            Some(i) => {
                self.lose_leadership("another process holds the leader latch");
                Ok(Some(format!("{dir}/{}", sorted[i - 1])))
            }
        }
    }

    /// Creates our latch node; after a lost connection, finds it by its protection prefix.
    async fn create_node(&self, client: &Client, dir: &str) -> ZkResult<String> {
        let protection = format!("_c_{}-", uuid::Uuid::new_v4());
        let prefix = format!("{dir}/{protection}latch-");
        let options = self.shared.options(CreateMode::EphemeralSequential);
        loop {
            match client.create(&prefix, self.shared.process_id.as_bytes(), &options).await {
                Ok((_, sequence)) => return Ok(format!("{prefix}{sequence}")),
                Err(Zk::NoNode) => client.mkdir(dir, &self.shared.options(CreateMode::Persistent)).await?,
                // Requests wait for the reconnect, so this does not spin.
                Err(Zk::ConnectionLoss) => match client.list_children(dir).await {
                    Ok(children) => {
                        if let Some(found) = children.iter().find(|c| c.starts_with(&protection)) {
                            return Ok(format!("{dir}/{found}"));
                        }
                    }
                    Err(Zk::ConnectionLoss | Zk::NoNode) => {}
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// What a failed request means for the election: `None` to look again. Before giving up
    /// on this session's election, our node is deleted: a node nobody watches over would
    /// block the election for the rest of the session.
    async fn on_error(&self, client: &Client, node: &Option<String>, e: Zk) -> Option<Outcome> {
        if session_gone(&e) {
            return Some(Outcome::SessionLost);
        }
        if matches!(e, Zk::ConnectionLoss | Zk::Timeout | Zk::Throttled) {
            debug!(error = %e, "leader election request failed, looking again");
            return if self.shared.pause().await { None } else { Some(Outcome::Shutdown) };
        }
        if let Some(node) = node {
            leave(client, node).await;
        }
        Some(Outcome::Failed(e))
    }
}

/// Deletes our latch node (bounded; the node vanishes with the session anyway).
async fn leave(client: &Client, node: &str) {
    match tokio::time::timeout(Duration::from_secs(2), client.delete(node, None)).await {
        Ok(Ok(()) | Err(Zk::NoNode)) => info!(node, "left the leader election"),
        Ok(Err(e)) => debug!(node, error = %e, "could not delete leader latch node"),
        Err(_) => debug!(node, "deleting leader latch node timed out"),
    }
}

/// Latch nodes ordered by sequence number (Curator sorts by what follows `latch-`).
fn sorted_latch_nodes(children: Vec<String>) -> Vec<String> {
    let mut nodes: Vec<(i64, String)> = children
        .into_iter()
        .filter_map(|name| {
            let at = name.rfind("latch-")?;
            let sequence = name[at + "latch-".len()..].parse().ok()?;
            Some((sequence, name))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, name)| name).collect()
}

/// Creates or replaces `path` with `data` (ephemeral, owned by this session) if and only if
/// `latch_node` still exists. `Ok(false)`: the latch is gone, nothing written. After a lost
/// connection the caller retries, and the retry reads the node first: never guesses.
async fn write_connection_info(
    shared: &Shared,
    client: &Client,
    latch_node: &str,
    path: &str,
    data: &[u8],
) -> ZkResult<bool> {
    loop {
        let stat = client.check_stat(path).await?;
        if stat.is_none() {
            let parent = &path[..path.rfind('/').unwrap_or(0)];
            client.mkdir(parent, &shared.options(CreateMode::Persistent)).await?;
        }
        let mut writer = client.new_check_writer(latch_node, Some(0))?;
        let foreign = match stat {
            Some(stat) if stat.ephemeral_owner == client.session_id().0 => {
                writer.add_set_data(path, data, Some(stat.version))?;
                false
            }
            // Left by an earlier leader (or an earlier session of ours): delete, then create.
            Some(stat) => {
                writer.add_delete(path, Some(stat.version))?;
                true
            }
            None => {
                writer.add_create(path, data, &shared.options(CreateMode::Ephemeral))?;
                false
            }
        };
        match writer.commit().await {
            Ok(_) if foreign => continue,
            Ok(_) => return Ok(true),
            Err(CheckWriteError::CheckFailed { .. }) => return Ok(false),
            Err(CheckWriteError::OperationFailed { source: Zk::NoNode | Zk::NodeExists | Zk::BadVersion, .. }) => {
                continue
            }
            Err(CheckWriteError::OperationFailed { source, .. } | CheckWriteError::RequestFailed { source }) => {
                return Err(source)
            }
        }
    }
}

/// Runs contender callbacks in order; a panicking contender is logged, not fatal.
async fn dispatch(mut actions: mpsc::UnboundedReceiver<Action>) {
    fn call(component: &str, f: impl FnOnce()) {
        if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
            error!(component, "leader contender panicked");
        }
    }
    while let Some(action) = actions.recv().await {
        match action {
            Action::Grant(contender, session, component) => {
                info!(component, %session, "granting leadership");
                call(&component, || contender.grant_leadership(session));
            }
            Action::Revoke(contender, component) => {
                info!(component, "revoking leadership");
                call(&component, || contender.revoke_leadership());
            }
            Action::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Enters the election while components take part, session after session.
async fn drive(latch: Arc<ProcessLatch>) {
    let shared = latch.shared.clone();
    let mut members = latch.members.subscribe();
    let mut lost_generation = 0;
    loop {
        while *members.borrow_and_update() == 0 {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                changed = members.changed() => if changed.is_err() { return },
            }
        }
        let Some(session) = shared.next_session(lost_generation).await else {
            latch.lose_leadership("shutting down");
            return;
        };
        match latch.run(&session, &mut members).await {
            Outcome::Left => latch.lose_leadership("no component left in the election"),
            Outcome::Shutdown => {
                latch.lose_leadership("shutting down");
                return;
            }
            Outcome::SessionLost => {
                latch.lose_leadership("zookeeper session lost");
                lost_generation = session.generation;
            }
            Outcome::Failed(e) => {
                latch.lose_leadership("leader election failed");
                warn!(error = %e, "leader election failed, retrying");
                if !shared.pause().await {
                    return;
                }
            }
        }
    }
}

/// The election of one component of a [`ZooKeeperHaServices`](super::ZooKeeperHaServices)
/// process. Dropping it leaves the election like [`LeaderElection::stop`].
pub struct ZooKeeperLeaderElection {
    _runtime: Arc<Runtime>,
    latch: Arc<ProcessLatch>,
    component: String,
    registration: AtomicU64,
}

impl ZooKeeperLeaderElection {
    pub(crate) fn new(runtime: Arc<Runtime>, latch: Arc<ProcessLatch>, component: &str) -> Self {
        Self { _runtime: runtime, latch, component: component.to_string(), registration: AtomicU64::new(0) }
    }

    pub fn component(&self) -> &str {
        &self.component
    }
}

impl LeaderElection for ZooKeeperLeaderElection {
    fn start(&self, contender: Arc<dyn LeaderContender>) {
        let registration = self.latch.register(&self.component, contender);
        self.registration.store(registration, Ordering::SeqCst);
    }

    fn confirm_leadership(&self, session: LeaderSessionId, address: &str) {
        self.latch.confirm(&self.component, session, address);
    }

    fn has_leadership(&self, session: LeaderSessionId) -> bool {
        self.latch.has_leadership(&self.component, session)
    }

    fn confirmed_leader(&self) -> Option<(LeaderSessionId, String)> {
        self.latch.confirmed(&self.component)
    }

    fn stop(&self) {
        let registration = self.registration.swap(0, Ordering::SeqCst);
        if registration != 0 {
            self.latch.unregister(&self.component, registration);
        }
    }
}

impl Drop for ZooKeeperLeaderElection {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latch_nodes_sort_by_sequence_like_curator() {
        let children = vec![
            "_c_b-latch-0000000010".to_string(),
            "_c_a-latch-0000000002".to_string(),
            "unrelated".to_string(),
            "_c_c-latch-0000000009".to_string(),
        ];
        assert_eq!(
            sorted_latch_nodes(children),
            vec!["_c_a-latch-0000000002", "_c_c-latch-0000000009", "_c_b-latch-0000000010"]
        );
    }

    #[test]
    fn connection_info_is_readable_json() {
        let info =
            ConnectionInfo { address: "flint://h:1/dispatcher".into(), session_id: LeaderSessionId::from_u128(1) };
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(text, r#"{"address":"flint://h:1/dispatcher","sessionId":"00000000000000000000000000000001"}"#);
        assert_eq!(serde_json::from_str::<ConnectionInfo>(&text).unwrap(), info);
    }
}
