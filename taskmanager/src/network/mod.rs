//! The data plane: moving serialized record batches from producing to consuming subtasks.
//!
//! The transport is payload-agnostic: a *buffer* is an opaque [`Bytes`] holding a batch of
//! records (the record format is decided elsewhere); *events* ([`Event`]) travel in-band,
//! in order with the buffers.
//!
//! ```text
//!   producing subtask                                   consuming subtask (one gate per input edge)
//!
//!   ResultPartition                                     InputGate
//!   +-------------------------+                         +------------------------------+
//!   | subpartition 0: queue   |--- local channel ------>| channel 0 --+                |
//!   |   (<= max_queued_bufs)  |   (same taskmanager:    |             +-- round robin --+--> next()
//!   | subpartition 1: queue   |    reads the queue)     | channel 1 --+                |
//!   +-------------------------+                         +------------------------------+
//!     ^ emit() waits while         |                            ^ remote channels
//!     | the queue is full          | other taskmanager          |
//!     | (= back-pressure)          v                            |
//!                             DataServer ======= TCP ======> DataClient
//!                             sends a buffer   <== AddCredit  routes frames to channels; one
//!                             only against     (one per       connection per (consumer TM,
//!                             credit            buffer read)  producer TM) pair, multiplexed
//! ```
//!
//! - [`ResultPartition`]: written by one producing subtask; one bounded queue per consuming
//!   subtask (subpartition). [`ResultPartition::emit`] waits while the queue is full: that
//!   wait *is* back-pressure, and its duration is counted.
//! - [`PartitionManager`]: one per taskmanager; the live partitions by [`PartitionId`].
//! - [`DataServer`]: the taskmanager's data port; serves subpartitions to remote consumers.
//! - [`DataClient`]: one per taskmanager; the outbound connections of remote channels.
//! - [`InputGate`]: read by one consuming subtask; one channel per producing subtask,
//!   local (straight from the [`PartitionManager`], no serialization, no socket) or remote.
//!
//! # Lifecycle of a partition
//!
//! The producer registers its partition, emits, then calls [`ResultPartition::finish`],
//! which appends [`Event::EndOfPartition`] to every subpartition. A finished partition
//! releases itself (leaves the manager) once every subpartition has been read to its end or
//! abandoned by its reader, as Flink's pipelined partitions do; the producer must not call
//! [`ResultPartition::release`] after finishing, or consumers still reading fail.
//! [`ResultPartition::fail`] drops queued data and makes every reader fail with
//! [`NetworkError::ProducerFailed`]; a failed partition stays registered (so late requests
//! learn the cause) until it is released, e.g. by [`PartitionManager::release`] for its job.
//!
//! A subpartition has at most one reader. When its reader goes away before the end (the
//! consumer was cancelled, or its connection broke), the subpartition's queue is dropped
//! and later emits to it are *discarded* (they return `Ok` at once), so the producer never
//! blocks on a consumer that is gone.
//!
//! # Flow control
//!
//! Locally, the subpartition bound is the only buffer between producer and consumer. Over
//! TCP a channel asks for a subpartition with an initial credit (default: the queue bound);
//! the server sends a buffer only while the channel has credit, and the channel returns one
//! credit per buffer its gate has handed out (coalesced into one `AddCredit` per burst).
//! Events are sent regardless of credit, as in Flink. So per channel at most
//! `max_queued_buffers` buffers wait at the producer and at most `credit` are in flight or
//! queued at the consumer.
//!
//! A partition requested before it is registered (the consumer was deployed first) is
//! waited for: remotely the server answers `PartitionNotFound` and the channel asks again
//! with exponential backoff (10 ms doubling to 1 s, Flink's
//! `taskmanager.network.request-backoff.initial/max`); locally the channel waits for the
//! manager to announce a registration. After [`GateConfig::request_timeout`] the channel
//! fails with [`NetworkError::PartitionNotFound`].
//!
//! # Wire protocol
//!
//! See [`protocol`]: length-delimited frames (4-byte big-endian length, bounded by the
//! `max_frame_size` given to server and client, like `pekko.framesize`), each
//! `version: u16 | header_len: u32 | MessagePack header | raw payload`. The payload (only
//! for buffers and custom events) is not MessagePack-encoded. Client to server:
//! `PartitionRequest`, `AddCredit`, `CancelRequest`; server to client: `Buffer`, `Event`,
//! `Error`, `PartitionNotFound`. Buffers and events carry a per-request sequence number
//! that the receiver checks. Malformed, oversized, other-version or out-of-place frames
//! close that connection with a `warn!` naming the peer; nothing a peer sends panics.
//!
//! # Threads
//!
//! [`DataServer`] and [`DataClient`] each run on their own thread with a small tokio
//! runtime (like the RPC service), independent of the task threads. Producers and gates are
//! woken through `tokio::sync::Notify`, so [`ResultPartition::emit`] and
//! [`InputGate::next`] can be awaited on any executor; gates spawn their partition requests
//! onto the [`DataClient`]'s runtime.

mod channel;
mod client;
mod gate;
mod partition;
pub mod protocol;
mod server;

use std::fmt;

use bytes::Bytes;
use flint_common::ids::{JobId, JobVertexId};
use serde::{Deserialize, Serialize};

pub use client::DataClient;
pub use gate::{ChannelLocation, GateConfig, GateStats, InputChannelSpec, InputGate};
pub use partition::{PartitionManager, PartitionStats, QueueUsage, ResultPartition};
pub use server::DataServer;

/// Default bound of a subpartition queue (`taskmanager.network.max-queued-buffers`).
pub const DEFAULT_MAX_QUEUED_BUFFERS: usize = 8;

/// One result partition: what one attempt of one producing subtask writes for one of
/// its vertex's output edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionId {
    pub job_id: JobId,
    /// The producing vertex.
    pub result: JobVertexId,
    /// Which output edge of the producing vertex.
    pub edge: u32,
    pub producer_subtask: u32,
    pub attempt: u32,
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}.{}[{}]#{}", self.job_id, self.result, self.edge, self.producer_subtask, self.attempt)
    }
}

/// What travels through a channel, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BufferOrEvent {
    /// A serialized batch of records.
    Buffer(Bytes),
    Event(Event),
}

/// An in-band event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The producer finished; nothing follows on this channel.
    EndOfPartition,
    /// Reserved for events defined above the transport (checkpoint barriers, …): an
    /// encoded event, delivered in order with the buffers and not subject to credit.
    Custom(Bytes),
}

/// Why sending or receiving data failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("partition {partition} (subpartition {subpartition}) was not found within {waited_ms} ms")]
    PartitionNotFound { partition: PartitionId, subpartition: u32, waited_ms: u64 },
    #[error("the producer of partition {partition} failed: {cause}")]
    ProducerFailed { partition: PartitionId, cause: String },
    #[error("partition {partition} was released")]
    PartitionReleased { partition: PartitionId },
    #[error("partition {partition} is finished; nothing more can be written to it")]
    PartitionFinished { partition: PartitionId },
    #[error("data connection to {address} lost: {reason}")]
    ConnectionLost { address: String, reason: String },
    #[error("partition {partition} has {num_subpartitions} subpartitions, there is no subpartition {subpartition}")]
    SubpartitionOutOfRange { partition: PartitionId, subpartition: u32, num_subpartitions: usize },
    #[error("subpartition {subpartition} of partition {partition} already has a reader")]
    AlreadyConsumed { partition: PartitionId, subpartition: u32 },
    #[error("partition {partition} is already registered")]
    DuplicatePartition { partition: PartitionId },
    #[error("{address} rejected the request for partition {partition}: {message}")]
    RequestRejected { address: String, partition: PartitionId, message: String },
    #[error("the data client of this taskmanager is stopped")]
    Stopped,
    /// The consumer of a subpartition went away before the end: what is written to it
    /// now would be lost, so the producer fails instead (the job fails over).
    #[error("the consumer of subpartition {subpartition} of partition {partition} went away before the end")]
    ConsumerGone { partition: PartitionId, subpartition: u32 },
}

impl NetworkError {
    /// Whether running the consumer again (after a restart) can succeed: true for lost
    /// producers and connections, false for requests that are wrong in themselves.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            NetworkError::PartitionNotFound { .. }
                | NetworkError::ConsumerGone { .. }
                | NetworkError::ProducerFailed { .. }
                | NetworkError::PartitionReleased { .. }
                | NetworkError::ConnectionLost { .. }
                | NetworkError::Stopped
        )
    }
}

/// Locks a std mutex, ignoring poisoning: the protected state stays consistent because no
/// code here panics while holding a lock.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ids_display_and_round_trip() {
        let id = PartitionId {
            job_id: JobId::from_u128(1),
            result: JobVertexId::from_u128(2),
            edge: 0,
            producer_subtask: 3,
            attempt: 1,
        };
        assert_eq!(id.to_string(), format!("{}/{}.0[3]#1", JobId::from_u128(1), JobVertexId::from_u128(2)));
        let bytes = rmp_serde::to_vec_named(&id).unwrap();
        assert_eq!(rmp_serde::from_slice::<PartitionId>(&bytes).unwrap(), id);
    }
}
