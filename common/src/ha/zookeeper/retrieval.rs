//! Leader retrieval: watches one component's `connection_info` node.
//!
//! The node is read with an exists-watch (which also fires when the node is created), and
//! read again after every watch event, after every reconnect (events can be lost while
//! disconnected) and with every new session. The listener hears `None` while the node is
//! missing or unreadable, when the session is lost, and — unless
//! `tolerate-suspended-connections` — while the connection is suspended (Flink's
//! `LeaderInformationClearancePolicy`). It is only called when the value changes.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};
use zookeeper_client::{Client, Error as Zk, OneshotWatcher, SessionState};

use super::election::ConnectionInfo;
use super::{session_gone, wait_connected, Connection, Runtime, Shared, ZkResult};
use crate::ha::{LeaderRetrieval, LeaderRetrievalListener};
use crate::ids::LeaderSessionId;

type Leader = Option<(LeaderSessionId, String)>;

/// The leader retrieval of one component; see the module documentation.
pub struct ZooKeeperLeaderRetrieval {
    runtime: Arc<Runtime>,
    component: String,
    running: Mutex<Option<CancellationToken>>,
}

impl ZooKeeperLeaderRetrieval {
    pub(crate) fn new(runtime: Arc<Runtime>, component: &str) -> Self {
        Self { runtime, component: component.to_string(), running: Mutex::new(None) }
    }

    pub fn component(&self) -> &str {
        &self.component
    }
}

impl LeaderRetrieval for ZooKeeperLeaderRetrieval {
    fn start(&self, listener: Arc<dyn LeaderRetrievalListener>) {
        let shared = self.runtime.shared.clone();
        let token = shared.shutdown.child_token();
        if let Some(previous) = self.running.lock().unwrap_or_else(|e| e.into_inner()).replace(token.clone()) {
            previous.cancel();
        }
        let path = shared.path(&["leader", &self.component, "connection_info"]);
        shared.handle.clone().spawn(watch_leader(shared, path, listener, token));
    }

    fn stop(&self) {
        if let Some(token) = self.running.lock().unwrap_or_else(|e| e.into_inner()).take() {
            token.cancel();
        }
    }
}

impl Drop for ZooKeeperLeaderRetrieval {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Notifier {
    listener: Arc<dyn LeaderRetrievalListener>,
    last: Option<Leader>,
    path: String,
}

impl Notifier {
    fn notify(&mut self, leader: Leader) {
        if self.last.as_ref() == Some(&leader) {
            return;
        }
        debug!(path = %self.path, ?leader, "leader changed");
        self.last = Some(leader.clone());
        let listener = &self.listener;
        if std::panic::catch_unwind(AssertUnwindSafe(|| listener.notify_leader(leader))).is_err() {
            error!(path = %self.path, "leader retrieval listener panicked");
        }
    }
}

/// Reads the node and sets a watch on it.
async fn read(client: &Client, path: &str) -> ZkResult<(Leader, OneshotWatcher)> {
    let (stat, watcher) = client.check_and_watch_stat(path).await?;
    if stat.is_none() {
        return Ok((None, watcher));
    }
    let data = match client.get_data(path).await {
        Ok((data, _)) => data,
        // Deleted meanwhile: the watch fires too.
        Err(Zk::NoNode) => return Ok((None, watcher)),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice::<ConnectionInfo>(&data) {
        Ok(info) => Ok((Some((info.session_id, info.address)), watcher)),
        Err(e) => {
            warn!(path, error = %e, "unreadable leader information");
            Ok((None, watcher))
        }
    }
}

async fn watch_leader(
    shared: Arc<Shared>,
    path: String,
    listener: Arc<dyn LeaderRetrievalListener>,
    token: CancellationToken,
) {
    let mut notifier = Notifier { listener, last: None, path: path.clone() };
    let tolerate = shared.config.tolerate_suspended_connections;
    let mut lost_generation = 0;
    'sessions: loop {
        let session = tokio::select! {
            _ = token.cancelled() => return,
            session = shared.next_session(lost_generation) => match session {
                Some(session) => session,
                None => return,
            },
        };
        let mut states = session.client.state_watcher();
        loop {
            if !matches!(states.peek_state(), SessionState::SyncConnected | SessionState::ConnectedReadOnly) {
                if !tolerate {
                    notifier.notify(None);
                }
                match wait_connected(&mut states, &token).await {
                    Connection::Connected => {}
                    Connection::Lost => {
                        notifier.notify(None);
                        lost_generation = session.generation;
                        continue 'sessions;
                    }
                    Connection::Shutdown => return,
                }
            }
            let result = tokio::select! {
                _ = token.cancelled() => return,
                result = read(&session.client, &path) => result,
            };
            match result {
                Ok((leader, watcher)) => {
                    notifier.notify(leader);
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = watcher.changed() => {}
                        _ = states.changed() => {}
                    }
                }
                Err(e) if session_gone(&e) => {
                    notifier.notify(None);
                    lost_generation = session.generation;
                    continue 'sessions;
                }
                Err(e) => {
                    debug!(path = %path, error = %e, "reading leader information failed, retrying");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(shared.config.retry_wait) => {}
                    }
                }
            }
        }
    }
}
