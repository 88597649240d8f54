//! The input gate: what one consuming subtask reads for one input edge.
//!
//! A gate has one channel per producing subtask. It asks for every channel's subpartition
//! when it is created (requests run on the [`DataClient`]'s runtime, waiting and retrying
//! while a partition is not registered yet) and then hands out whatever the channels
//! receive: channels with data queue up on the gate's ready queue, and [`InputGate::next`]
//! takes one item from the first ready channel and puts that channel at the back if it has
//! more, so a busy channel cannot starve the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::channel::{ChannelShared, GateShared, Polled};
use super::client::DataClient;
use super::partition::PartitionManager;
use super::{BufferOrEvent, Event, NetworkError, PartitionId, DEFAULT_MAX_QUEUED_BUFFERS};

/// Where a channel's producer runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChannelLocation {
    /// In this taskmanager: read from its [`PartitionManager`].
    Local,
    /// In another taskmanager, whose data server listens at `host:port`.
    Remote { data_address: String },
}

/// One channel of a gate: the subpartition of one producer's partition to read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InputChannelSpec {
    pub partition: PartitionId,
    pub subpartition: u32,
    pub location: ChannelLocation,
}

/// How a gate requests its partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateConfig {
    /// Buffers a remote producer may send before the first credit comes back (at least 1;
    /// defaults to the subpartition bound, 8).
    pub initial_credit: u32,
    /// First wait before asking again for a partition that is not registered
    /// (`taskmanager.network.request-backoff.initial`, 10 ms); doubles each time...
    pub request_backoff_initial: Duration,
    /// ... up to this (`taskmanager.network.request-backoff.max`, 1 s).
    pub request_backoff_max: Duration,
    /// How long a partition may stay unregistered before the channel fails with
    /// [`NetworkError::PartitionNotFound`] (30 s).
    pub request_timeout: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            initial_credit: DEFAULT_MAX_QUEUED_BUFFERS as u32,
            request_backoff_initial: Duration::from_millis(10),
            request_backoff_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of one gate, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    pub buffers_read: u64,
    pub bytes_read: u64,
    pub events_read: u64,
    /// Total time [`InputGate::next`] waited for input.
    pub idle_time: Duration,
}

/// Reads the channels of one input edge of one consuming subtask.
///
/// Dropping the gate cancels every channel still reading: local subpartitions drop their
/// queues, remote requests are cancelled at the producer.
pub struct InputGate {
    channels: Vec<Arc<ChannelShared>>,
    shared: Arc<GateShared>,
    finished: Vec<bool>,
    num_finished: usize,
    failure: Option<NetworkError>,
    requests: Vec<AbortHandle>,
    stats: GateStats,
}

impl InputGate {
    /// Creates the gate and requests every channel's subpartition: local ones from
    /// `manager`, remote ones through `client`, whose runtime runs the requests.
    pub fn new(
        specs: Vec<InputChannelSpec>,
        manager: &PartitionManager,
        client: &DataClient,
        config: GateConfig,
    ) -> InputGate {
        let shared = Arc::new(GateShared::new(specs.len()));
        let mut channels = Vec::with_capacity(specs.len());
        let mut requests = Vec::new();
        for (index, spec) in specs.into_iter().enumerate() {
            let channel = Arc::new(ChannelShared::new(index, spec.partition, spec.subpartition, shared.clone()));
            match spec.location {
                ChannelLocation::Local => {
                    if !try_attach_local(&channel, manager) {
                        let guard = RequestGuard { channel: channel.clone(), finished: false };
                        let (manager, timeout) = (manager.clone(), config.request_timeout);
                        let task = async move {
                            let mut guard = guard;
                            wait_for_local(&guard.channel, &manager, timeout).await;
                            guard.finished = true;
                        };
                        requests.push(client.handle().spawn(task).abort_handle());
                    }
                }
                ChannelLocation::Remote { data_address } => {
                    let guard = RequestGuard { channel: channel.clone(), finished: false };
                    let (task_client, config) = (client.clone(), config.clone());
                    let task = async move {
                        let mut guard = guard;
                        request_remote(&guard.channel, &task_client, &data_address, &config).await;
                        guard.finished = true;
                    };
                    requests.push(client.handle().spawn(task).abort_handle());
                }
            }
            channels.push(channel);
        }
        let n = channels.len();
        InputGate {
            channels,
            shared,
            finished: vec![false; n],
            num_finished: 0,
            failure: None,
            requests,
            stats: GateStats::default(),
        }
    }

    pub fn num_channels(&self) -> usize {
        self.channels.len()
    }

    /// The next buffer or event of any channel, with the channel's index; waits for one.
    ///
    /// Each channel's [`Event::EndOfPartition`] is returned too; after the last one,
    /// `Ok(None)`. A channel error fails the gate: this and every later call return it.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<Option<(usize, BufferOrEvent)>, NetworkError> {
        let mut idle_since: Option<Instant> = None;
        let result = loop {
            if let Some(e) = &self.failure {
                break Err(e.clone());
            }
            if self.num_finished == self.channels.len() {
                break Ok(None);
            }
            let Some(index) = self.shared.pop() else {
                idle_since.get_or_insert_with(Instant::now);
                self.shared.wait().await;
                continue;
            };
            if self.finished[index] {
                continue;
            }
            match self.channels[index].poll() {
                Ok(Polled::Item(item, more)) => {
                    if more {
                        self.shared.push(index);
                    }
                    match &item {
                        BufferOrEvent::Buffer(buffer) => {
                            self.stats.buffers_read += 1;
                            self.stats.bytes_read += buffer.len() as u64;
                        }
                        BufferOrEvent::Event(event) => {
                            self.stats.events_read += 1;
                            if *event == Event::EndOfPartition {
                                self.finished[index] = true;
                                self.num_finished += 1;
                            }
                        }
                    }
                    break Ok(Some((index, item)));
                }
                Ok(Polled::Nothing) => {}
                Err(e) => self.failure = Some(e),
            }
        };
        if let Some(since) = idle_since {
            self.stats.idle_time += since.elapsed();
        }
        result
    }

    /// Whether every channel delivered its end of partition.
    pub fn is_finished(&self) -> bool {
        self.num_finished == self.channels.len()
    }

    pub fn stats(&self) -> GateStats {
        self.stats
    }

    /// Buffers a remote channel received and the gate has not handed out yet (never more
    /// than its credit); 0 for local channels, which read the producer's queue directly.
    pub fn queued_buffers(&self, channel: usize) -> usize {
        self.channels.get(channel).map_or(0, |c| c.queued_remote_buffers())
    }
}

impl Drop for InputGate {
    fn drop(&mut self) {
        for channel in &self.channels {
            channel.close();
        }
        for request in &self.requests {
            request.abort();
        }
    }
}

/// Fails its channel if a request task is dropped before it finished: the client's
/// runtime stopped under it (a gate being dropped closes its channels first, so this is
/// then a no-op).
struct RequestGuard {
    channel: Arc<ChannelShared>,
    finished: bool,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.channel.fail(NetworkError::Stopped);
        }
    }
}

/// Attaches a local channel if its partition is registered. False if it is not (yet).
fn try_attach_local(channel: &Arc<ChannelShared>, manager: &PartitionManager) -> bool {
    let Some(partition) = manager.get(&channel.partition) else { return false };
    match partition.create_reader(channel.subpartition, channel.listener()) {
        Ok(reader) => channel.attach_local(reader),
        Err(e) => channel.fail(e),
    }
    true
}

/// Waits for a local partition to be registered, at most `timeout`.
async fn wait_for_local(channel: &Arc<ChannelShared>, manager: &PartitionManager, timeout: Duration) {
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    loop {
        let registered = manager.registered();
        let mut registered = std::pin::pin!(registered);
        registered.as_mut().enable();
        if try_attach_local(channel, manager) {
            return;
        }
        if tokio::time::timeout_at(deadline, registered).await.is_err() {
            if !try_attach_local(channel, manager) {
                channel.fail(NetworkError::PartitionNotFound {
                    partition: channel.partition,
                    subpartition: channel.subpartition,
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            return;
        }
    }
}

/// Requests a remote subpartition, asking again with backoff while the server answers
/// `PartitionNotFound`, at most `config.request_timeout`. Ends once a request is accepted
/// (data flows) or failed.
async fn request_remote(channel: &Arc<ChannelShared>, client: &DataClient, address: &str, config: &GateConfig) {
    let start = tokio::time::Instant::now();
    let mut backoff = config.request_backoff_initial;
    let credit = config.initial_credit.max(1);
    loop {
        let connection = client.connection(address);
        let receiver_id = client.next_receiver_id();
        if !channel.begin_remote(connection.clone(), receiver_id, credit) {
            return;
        }
        let (not_found_tx, not_found) = oneshot::channel();
        if !connection.request(channel, receiver_id, credit, not_found_tx) {
            channel.fail(NetworkError::ConnectionLost {
                address: connection.address().to_string(),
                reason: "the connection closed".into(),
            });
            return;
        }
        if not_found.await.is_err() {
            // Data arrived, or the request failed or was cancelled: nothing to retry.
            return;
        }
        let waited = start.elapsed();
        if waited >= config.request_timeout {
            channel.fail(NetworkError::PartitionNotFound {
                partition: channel.partition,
                subpartition: channel.subpartition,
                waited_ms: waited.as_millis() as u64,
            });
            return;
        }
        tokio::time::sleep(backoff.min(config.request_timeout - waited)).await;
        backoff = (backoff * 2).min(config.request_backoff_max);
    }
}
