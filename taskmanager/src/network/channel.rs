//! Input channels: the consumer-side state of one (partition, subpartition) an input gate
//! reads, and the gate's queue of channels with something to read.
//!
//! A channel is local (it holds the subpartition's reader and polls the producer's queue
//! directly) or remote (the data client pushes received frames into its queue, bounded by
//! the credit it granted). Whenever a channel may have something new — data after being
//! empty, an error — it puts its index on the gate's ready queue and wakes the gate.
//!
//! Lock order: channel state, then a subpartition (through its reader). The gate's ready
//! queue lock is taken alone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::client::ClientConnection;
use super::partition::{AvailabilityListener, Next, ReadError, SubpartitionReader};
use super::protocol::ErrorKind;
use super::{lock, BufferOrEvent, Event, NetworkError, PartitionId};

/// The channels of one gate that may have something to read, in arrival order.
pub(crate) struct GateShared {
    ready: Mutex<ReadyQueue>,
    /// Wakes the gate's reader; `notify_one` keeps a permit, so no wake-up is lost.
    notify: Notify,
}

struct ReadyQueue {
    queue: VecDeque<usize>,
    queued: Vec<bool>,
}

impl GateShared {
    pub(crate) fn new(num_channels: usize) -> Self {
        Self {
            ready: Mutex::new(ReadyQueue { queue: VecDeque::new(), queued: vec![false; num_channels] }),
            notify: Notify::new(),
        }
    }

    /// Marks a channel ready and wakes the reader.
    pub(crate) fn enqueue(&self, index: usize) {
        if self.push(index) {
            self.notify.notify_one();
        }
    }

    /// Marks a channel ready without waking anyone (the reader itself re-queues it).
    pub(crate) fn push(&self, index: usize) -> bool {
        let mut ready = lock(&self.ready);
        if ready.queued[index] {
            return false;
        }
        ready.queued[index] = true;
        ready.queue.push_back(index);
        true
    }

    pub(crate) fn pop(&self) -> Option<usize> {
        let mut ready = lock(&self.ready);
        let index = ready.queue.pop_front()?;
        ready.queued[index] = false;
        Some(index)
    }

    pub(crate) async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// Tells the gate that a local channel's subpartition has something new.
struct ChannelListener {
    gate: Arc<GateShared>,
    index: usize,
}

impl AvailabilityListener for ChannelListener {
    fn notify_available(&self) {
        self.gate.enqueue(self.index);
    }
}

/// A remote channel's side of one request.
struct RemoteState {
    connection: Arc<ClientConnection>,
    receiver_id: u64,
    queue: VecDeque<BufferOrEvent>,
    next_sequence: u64,
    /// Buffers the server may still send (granted and not yet received).
    credit: u32,
    /// Buffers handed out by the gate whose credit is not yet announced.
    unannounced: u32,
    /// `EndOfPartition` arrived: the request is over.
    ended: bool,
}

#[derive(Default)]
struct ChannelState {
    /// The gate is gone; whatever arrives is dropped.
    closed: bool,
    error: Option<NetworkError>,
    local: Option<SubpartitionReader>,
    remote: Option<RemoteState>,
}

/// What a poll of a channel gave.
pub(crate) enum Polled {
    /// An item, and whether more may be ready right away.
    Item(BufferOrEvent, bool),
    Nothing,
}

/// One input channel of a gate.
pub(crate) struct ChannelShared {
    pub(crate) index: usize,
    pub(crate) partition: PartitionId,
    pub(crate) subpartition: u32,
    gate: Arc<GateShared>,
    state: Mutex<ChannelState>,
}

impl ChannelShared {
    pub(crate) fn new(index: usize, partition: PartitionId, subpartition: u32, gate: Arc<GateShared>) -> Self {
        Self { index, partition, subpartition, gate, state: Mutex::new(ChannelState::default()) }
    }

    /// The listener a local subpartition reader reports to.
    pub(crate) fn listener(&self) -> Arc<dyn AvailabilityListener> {
        Arc::new(ChannelListener { gate: self.gate.clone(), index: self.index })
    }

    /// Installs the local reader (dropped at once, cancelling the subpartition, if the gate
    /// is gone).
    pub(crate) fn attach_local(&self, reader: SubpartitionReader) {
        let rejected = {
            let mut state = lock(&self.state);
            if state.closed {
                Some(reader)
            } else {
                state.local = Some(reader);
                None
            }
        };
        if rejected.is_none() {
            self.gate.enqueue(self.index);
        }
    }

    /// Starts a (new) remote request. False if the gate is gone.
    pub(crate) fn begin_remote(&self, connection: Arc<ClientConnection>, receiver_id: u64, credit: u32) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        state.remote = Some(RemoteState {
            connection,
            receiver_id,
            queue: VecDeque::new(),
            next_sequence: 0,
            credit,
            unannounced: 0,
            ended: false,
        });
        true
    }

    /// Fails the channel (the first error wins) and wakes the gate.
    pub(crate) fn fail(&self, error: NetworkError) {
        {
            let mut state = lock(&self.state);
            if state.closed || state.error.is_some() {
                return;
            }
            state.error = Some(error);
        }
        self.gate.enqueue(self.index);
    }

    /// Fails the channel if `receiver_id` is its current remote request.
    pub(crate) fn fail_request(&self, receiver_id: u64, error: NetworkError) {
        let current = lock(&self.state).remote.as_ref().is_some_and(|r| r.receiver_id == receiver_id && !r.ended);
        if current {
            self.fail(error);
        }
    }

    /// Takes the next item. Called by the gate only.
    pub(crate) fn poll(self: &Arc<Self>) -> Result<Polled, NetworkError> {
        let mut state = lock(&self.state);
        if let Some(e) = &state.error {
            return Err(e.clone());
        }
        if let Some(reader) = &state.local {
            return match reader.poll(true) {
                Ok(Some((item, next))) => {
                    if matches!(item, BufferOrEvent::Event(Event::EndOfPartition)) {
                        state.local = None;
                    }
                    Ok(Polled::Item(item, next != Next::Nothing))
                }
                Ok(None) => Ok(Polled::Nothing),
                Err(e) => {
                    let e = match e {
                        ReadError::Failed(cause) => NetworkError::ProducerFailed { partition: self.partition, cause },
                        ReadError::Released => NetworkError::PartitionReleased { partition: self.partition },
                    };
                    state.error = Some(e.clone());
                    Err(e)
                }
            };
        }
        if let Some(remote) = &mut state.remote {
            let Some(item) = remote.queue.pop_front() else { return Ok(Polled::Nothing) };
            if matches!(item, BufferOrEvent::Buffer(_)) && !remote.ended {
                remote.unannounced += 1;
                if remote.unannounced == 1 {
                    remote.connection.announce_credit(Arc::downgrade(self));
                }
            }
            return Ok(Polled::Item(item, !remote.queue.is_empty()));
        }
        Ok(Polled::Nothing)
    }

    /// Moves the credit of consumed buffers into an `AddCredit` for the request, if any.
    pub(crate) fn take_credit(&self) -> Option<(u64, u32)> {
        let mut state = lock(&self.state);
        let remote = state.remote.as_mut()?;
        if remote.unannounced == 0 || remote.ended {
            return None;
        }
        let credit = std::mem::take(&mut remote.unannounced);
        remote.credit += credit;
        Some((remote.receiver_id, credit))
    }

    /// A data frame of request `receiver_id` arrived. `Err` is a protocol violation.
    /// `Ok(true)` when it ended the request.
    pub(crate) fn on_item(&self, receiver_id: u64, sequence: u64, item: BufferOrEvent) -> Result<bool, String> {
        let (was_empty, ended) = {
            let mut state = lock(&self.state);
            if state.closed {
                return Ok(false);
            }
            let Some(remote) = state.remote.as_mut().filter(|r| r.receiver_id == receiver_id) else {
                return Ok(false);
            };
            if remote.ended {
                return Err(format!("receiver {receiver_id} got {sequence} after its end of partition"));
            }
            if sequence != remote.next_sequence {
                return Err(format!(
                    "sequence gap on receiver {receiver_id}: expected {}, got {sequence}",
                    remote.next_sequence
                ));
            }
            if matches!(item, BufferOrEvent::Buffer(_)) {
                if remote.credit == 0 {
                    return Err(format!("receiver {receiver_id} got buffer {sequence} without credit"));
                }
                remote.credit -= 1;
            }
            remote.next_sequence += 1;
            remote.ended = matches!(item, BufferOrEvent::Event(Event::EndOfPartition));
            let was_empty = remote.queue.is_empty();
            remote.queue.push_back(item);
            (was_empty, remote.ended)
        };
        if was_empty {
            self.gate.enqueue(self.index);
        }
        Ok(ended)
    }

    /// The server ended request `receiver_id` with an error.
    pub(crate) fn on_error(&self, receiver_id: u64, address: &str, kind: ErrorKind, message: String) {
        let partition = self.partition;
        let error = match kind {
            ErrorKind::ProducerFailed => NetworkError::ProducerFailed { partition, cause: message },
            ErrorKind::Released => NetworkError::PartitionReleased { partition },
            ErrorKind::Rejected => NetworkError::RequestRejected { address: address.to_string(), partition, message },
        };
        self.fail_request(receiver_id, error);
    }

    /// The gate is dropped: cancel the subpartition or the remote request.
    pub(crate) fn close(&self) {
        let (local, remote) = {
            let mut state = lock(&self.state);
            state.closed = true;
            (state.local.take(), state.remote.take())
        };
        drop(local);
        if let Some(remote) = remote {
            if !remote.ended {
                remote.connection.cancel(remote.receiver_id);
            }
        }
    }

    /// Buffers received and not yet read (remote channels; test-visible).
    pub(crate) fn queued_remote_buffers(&self) -> usize {
        lock(&self.state)
            .remote
            .as_ref()
            .map_or(0, |r| r.queue.iter().filter(|i| matches!(i, BufferOrEvent::Buffer(_))).count())
    }
}
