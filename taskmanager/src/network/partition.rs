//! Result partitions (the producer side) and the per-taskmanager [`PartitionManager`].
//!
//! A [`ResultPartition`] has one [`Subpartition`] per consuming subtask: a queue of
//! buffers and events guarded by a mutex, a `Notify` the producer waits on while the queue
//! holds `max_queued_buffers` buffers, and at most one reader. The reader (a local input
//! channel or a data server connection) is told through an [`AvailabilityListener`] when
//! the queue turns non-empty, and polls it without waiting.
//!
//! Lock order: a subpartition's lock is never held while calling a listener or taking any
//! other lock except the partition's lifecycle lock; the manager's map lock may be held
//! while taking a lifecycle lock, never the other way round.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flint_common::ids::JobId;
use tokio::sync::Notify;
use tracing::debug;

use super::{lock, BufferOrEvent, Event, NetworkError, PartitionId};

/// Told when a subpartition the listener reads has something new: data after being empty,
/// a failure, or a release.
pub(crate) trait AvailabilityListener: Send + Sync {
    fn notify_available(&self);
}

/// Why a subpartition cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    Failed(String),
    Released,
}

/// What is at the head of a subpartition queue after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Nothing,
    Buffer,
    Event,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReaderState {
    Unattached,
    Attached,
    /// The reader took the end of partition.
    Consumed,
    /// The reader went away before the end; the queue is dropped, later emits discarded.
    Cancelled,
}

#[derive(Clone, Debug)]
enum Terminal {
    Failed(String),
    Released,
}

struct SubState {
    queue: VecDeque<BufferOrEvent>,
    /// Buffers (not events) in `queue`.
    buffers: usize,
    /// `EndOfPartition` was appended.
    finished: bool,
    reader: ReaderState,
    listener: Option<Arc<dyn AvailabilityListener>>,
    terminal: Option<Terminal>,
}

impl SubState {
    /// Appends an item; returns the listener to notify (outside the lock) if the queue was
    /// empty.
    fn push(&mut self, item: BufferOrEvent) -> Option<Arc<dyn AvailabilityListener>> {
        let was_empty = self.queue.is_empty();
        if matches!(item, BufferOrEvent::Buffer(_)) {
            self.buffers += 1;
        }
        self.queue.push_back(item);
        if was_empty {
            self.listener.clone()
        } else {
            None
        }
    }

    fn drop_queue(&mut self) {
        self.queue.clear();
        self.buffers = 0;
    }
}

struct Subpartition {
    state: Mutex<SubState>,
    /// Woken when buffers leave the queue or the subpartition ends.
    space: Notify,
}

struct Lifecycle {
    finished: bool,
    /// Subpartitions whose reader consumed the end of partition or went away.
    done: usize,
    released: bool,
    manager: Option<Weak<ManagerInner>>,
}

struct PartitionInner {
    id: PartitionId,
    max_queued_buffers: usize,
    subpartitions: Vec<Subpartition>,
    lifecycle: Mutex<Lifecycle>,
    buffers_written: AtomicU64,
    bytes_written: AtomicU64,
    backpressured_nanos: AtomicU64,
    /// Whether the newest `emit` had to wait for room.
    last_emit_waited: std::sync::atomic::AtomicBool,
}

/// How full a partition's queues are (see [`ResultPartition::queue_usage`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueUsage {
    pub queued: usize,
    pub capacity: usize,
    /// A queue is full now, or the newest `emit` had to wait for room.
    pub back_pressured: bool,
}

/// Counters of one partition, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Buffers queued for a consumer (discarded ones not included).
    pub buffers_written: u64,
    pub bytes_written: u64,
    /// Total time `emit` waited for queue space.
    pub backpressured_time: Duration,
}

/// The producer side of an exchange: one bounded queue per consuming subtask.
///
/// Cheap to clone; all clones are the same partition.
#[derive(Clone)]
pub struct ResultPartition {
    inner: Arc<PartitionInner>,
}

impl std::fmt::Debug for ResultPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultPartition")
            .field("id", &self.inner.id)
            .field("subpartitions", &self.inner.subpartitions.len())
            .finish_non_exhaustive()
    }
}

impl ResultPartition {
    /// A partition with `num_subpartitions` queues of at most `max_queued_buffers` buffers
    /// each (`taskmanager.network.max-queued-buffers`; at least 1).
    pub fn new(id: PartitionId, num_subpartitions: usize, max_queued_buffers: usize) -> Self {
        let subpartitions = (0..num_subpartitions)
            .map(|_| Subpartition {
                state: Mutex::new(SubState {
                    queue: VecDeque::new(),
                    buffers: 0,
                    finished: false,
                    reader: ReaderState::Unattached,
                    listener: None,
                    terminal: None,
                }),
                space: Notify::new(),
            })
            .collect();
        Self {
            inner: Arc::new(PartitionInner {
                id,
                max_queued_buffers: max_queued_buffers.max(1),
                subpartitions,
                lifecycle: Mutex::new(Lifecycle { finished: false, done: 0, released: false, manager: None }),
                buffers_written: AtomicU64::new(0),
                bytes_written: AtomicU64::new(0),
                backpressured_nanos: AtomicU64::new(0),
                last_emit_waited: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn id(&self) -> PartitionId {
        self.inner.id
    }

    pub fn num_subpartitions(&self) -> usize {
        self.inner.subpartitions.len()
    }

    pub fn max_queued_buffers(&self) -> usize {
        self.inner.max_queued_buffers
    }

    /// Queues a buffer for one consumer, waiting while its queue is full (back-pressure).
    ///
    /// Fails when the subpartition's reader went away before the end (nothing is dropped
    /// silently: the producer fails and the job fails over), and after `finish`, `fail` or
    /// `release`. Cancel-safe: a dropped call queued nothing.
    pub async fn emit(&self, subpartition: usize, buffer: Bytes) -> Result<(), NetworkError> {
        let sub = self.subpartition(subpartition)?;
        let len = buffer.len() as u64;
        let mut blocked_since: Option<Instant> = None;
        let outcome = loop {
            let notified = sub.space.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = lock(&sub.state);
                if let Some(e) = self.writable(&state) {
                    break Err(e);
                }
                if state.reader == ReaderState::Cancelled {
                    break Err(self.consumer_gone(subpartition));
                }
                if state.buffers < self.inner.max_queued_buffers {
                    break Ok(Some(state.push(BufferOrEvent::Buffer(buffer))));
                }
            }
            blocked_since.get_or_insert_with(Instant::now);
            notified.await;
        };
        if let Some(since) = blocked_since {
            self.inner.backpressured_nanos.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.inner.last_emit_waited.store(blocked_since.is_some(), Ordering::Relaxed);
        match outcome? {
            None => {}
            Some(listener) => {
                self.inner.buffers_written.fetch_add(1, Ordering::Relaxed);
                self.inner.bytes_written.fetch_add(len, Ordering::Relaxed);
                if let Some(listener) = listener {
                    listener.notify_available();
                }
            }
        }
        Ok(())
    }

    /// Queues the same buffer for every consumer (the bytes are shared, not copied).
    pub async fn broadcast(&self, buffer: Bytes) -> Result<(), NetworkError> {
        for i in 0..self.num_subpartitions() {
            self.emit(i, buffer.clone()).await?;
        }
        Ok(())
    }

    /// Queues an event for one consumer, in order with its buffers. Events do not count
    /// against the queue bound and never wait: they are few (end of partition, checkpoint
    /// barriers), and must not be held up behind a slow consumer.
    pub async fn emit_event(&self, subpartition: usize, event: Event) -> Result<(), NetworkError> {
        let sub = self.subpartition(subpartition)?;
        let listener = {
            let mut state = lock(&sub.state);
            if let Some(e) = self.writable(&state) {
                return Err(e);
            }
            if state.reader == ReaderState::Cancelled {
                return Err(self.consumer_gone(subpartition));
            }
            state.push(BufferOrEvent::Event(event))
        };
        if let Some(listener) = listener {
            listener.notify_available();
        }
        Ok(())
    }

    /// Queues an event for every consumer.
    pub async fn broadcast_event(&self, event: Event) -> Result<(), NetworkError> {
        for i in 0..self.num_subpartitions() {
            self.emit_event(i, event.clone()).await?;
        }
        Ok(())
    }

    /// Ends the partition: appends `EndOfPartition` to every subpartition. The partition
    /// releases itself once every consumer has read to the end (or gone away).
    pub async fn finish(&self) -> Result<(), NetworkError> {
        for (index, sub) in self.inner.subpartitions.iter().enumerate() {
            let listener = {
                let mut state = lock(&sub.state);
                if let Some(e) = self.terminal_error(&state) {
                    return Err(e);
                }
                if state.finished {
                    continue;
                }
                if state.reader == ReaderState::Cancelled {
                    return Err(self.consumer_gone(index));
                }
                state.finished = true;
                state.push(BufferOrEvent::Event(Event::EndOfPartition))
            };
            if let Some(listener) = listener {
                listener.notify_available();
            }
        }
        let release = {
            let mut lifecycle = lock(&self.inner.lifecycle);
            lifecycle.finished = true;
            lifecycle.done == self.num_subpartitions()
        };
        if release {
            self.unregister();
        }
        Ok(())
    }

    /// Fails the partition: queued data is dropped and every reader fails with
    /// [`NetworkError::ProducerFailed`]. The partition stays registered until released.
    pub fn fail(&self, cause: impl Into<String>) {
        let cause = cause.into();
        debug!(partition = %self.inner.id, %cause, "result partition failed");
        self.terminate(Terminal::Failed(cause));
    }

    /// Releases the partition: queued data is dropped, readers fail with
    /// [`NetworkError::PartitionReleased`] (or keep the failure cause if it failed), and it
    /// leaves the manager. For cancellation and cleanup: a finished partition releases
    /// itself once consumed.
    pub fn release(&self) {
        self.release_local();
        self.unregister();
    }

    /// The buffers waiting in one subpartition's queue (never more than the bound).
    pub fn queued_buffers(&self, subpartition: usize) -> usize {
        self.inner.subpartitions.get(subpartition).map_or(0, |s| lock(&s.state).buffers)
    }

    /// The buffers queued over all subpartitions, their bound, and whether the task is
    /// back-pressured: a queue is full now, or the newest `emit` had to wait for room.
    pub fn queue_usage(&self) -> QueueUsage {
        let mut usage =
            QueueUsage { back_pressured: self.inner.last_emit_waited.load(Ordering::Relaxed), ..QueueUsage::default() };
        for sub in self.inner.subpartitions.iter() {
            let queued = lock(&sub.state).buffers;
            usage.queued += queued;
            usage.capacity += self.inner.max_queued_buffers;
            usage.back_pressured |= queued >= self.inner.max_queued_buffers;
        }
        usage
    }

    /// Total time `emit` waited for queue space.
    pub fn backpressured_time(&self) -> Duration {
        Duration::from_nanos(self.inner.backpressured_nanos.load(Ordering::Relaxed))
    }

    pub fn stats(&self) -> PartitionStats {
        PartitionStats {
            buffers_written: self.inner.buffers_written.load(Ordering::Relaxed),
            bytes_written: self.inner.bytes_written.load(Ordering::Relaxed),
            backpressured_time: self.backpressured_time(),
        }
    }

    /// Attaches the one reader of a subpartition. The caller polls once after attaching
    /// (the listener only reports changes from then on).
    pub(crate) fn create_reader(
        &self,
        subpartition: u32,
        listener: Arc<dyn AvailabilityListener>,
    ) -> Result<SubpartitionReader, NetworkError> {
        let index = subpartition as usize;
        let sub = self.subpartition(index)?;
        let mut state = lock(&sub.state);
        if let Some(Terminal::Released) = state.terminal {
            return Err(NetworkError::PartitionReleased { partition: self.inner.id });
        }
        if state.reader != ReaderState::Unattached {
            return Err(NetworkError::AlreadyConsumed { partition: self.inner.id, subpartition });
        }
        state.reader = ReaderState::Attached;
        state.listener = Some(listener);
        Ok(SubpartitionReader { partition: self.clone(), index })
    }

    fn same_as(&self, other: &ResultPartition) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn subpartition(&self, index: usize) -> Result<&Subpartition, NetworkError> {
        self.inner.subpartitions.get(index).ok_or(NetworkError::SubpartitionOutOfRange {
            partition: self.inner.id,
            subpartition: index as u32,
            num_subpartitions: self.inner.subpartitions.len(),
        })
    }

    fn terminal_error(&self, state: &SubState) -> Option<NetworkError> {
        let partition = self.inner.id;
        match &state.terminal {
            Some(Terminal::Failed(cause)) => Some(NetworkError::ProducerFailed { partition, cause: cause.clone() }),
            Some(Terminal::Released) => Some(NetworkError::PartitionReleased { partition }),
            None => None,
        }
    }

    fn writable(&self, state: &SubState) -> Option<NetworkError> {
        self.terminal_error(state)
            .or_else(|| state.finished.then_some(NetworkError::PartitionFinished { partition: self.inner.id }))
    }

    fn consumer_gone(&self, subpartition: usize) -> NetworkError {
        NetworkError::ConsumerGone { partition: self.inner.id, subpartition: subpartition as u32 }
    }

    fn terminate(&self, terminal: Terminal) {
        for sub in &self.inner.subpartitions {
            let listener = {
                let mut state = lock(&sub.state);
                if state.terminal.is_some() {
                    continue;
                }
                state.terminal = Some(terminal.clone());
                state.drop_queue();
                state.listener.clone()
            };
            sub.space.notify_waiters();
            if let Some(listener) = listener {
                listener.notify_available();
            }
        }
    }

    fn release_local(&self) {
        debug!(partition = %self.inner.id, "releasing result partition");
        lock(&self.inner.lifecycle).released = true;
        self.terminate(Terminal::Released);
    }

    /// Leaves the manager it is registered with, if any.
    fn unregister(&self) {
        let manager = lock(&self.inner.lifecycle).manager.take().and_then(|m| m.upgrade());
        if let Some(manager) = manager {
            let mut partitions = lock(&manager.partitions);
            if partitions.get(&self.inner.id).is_some_and(|p| p.same_as(self)) {
                partitions.remove(&self.inner.id);
            }
        }
    }

    /// A subpartition's reader consumed the end or went away.
    fn subpartition_done(&self) {
        let release = {
            let mut lifecycle = lock(&self.inner.lifecycle);
            lifecycle.done += 1;
            lifecycle.finished && lifecycle.done == self.num_subpartitions()
        };
        if release {
            debug!(partition = %self.inner.id, "result partition consumed");
            self.unregister();
        }
    }
}

/// The one reader of a subpartition. Dropping it before the end of partition cancels the
/// subpartition: its queue is dropped and the producer's later emits to it are discarded.
pub(crate) struct SubpartitionReader {
    partition: ResultPartition,
    index: usize,
}

impl SubpartitionReader {
    /// Takes the head of the queue, unless it is a buffer and `allow_buffer` is false (no
    /// credit). Returns the item and what is now at the head. Never waits.
    pub(crate) fn poll(&self, allow_buffer: bool) -> Result<Option<(BufferOrEvent, Next)>, ReadError> {
        let sub = &self.partition.inner.subpartitions[self.index];
        let max = self.partition.inner.max_queued_buffers;
        let (item, next, woke_producer) = {
            let mut state = lock(&sub.state);
            match &state.terminal {
                Some(Terminal::Failed(cause)) => return Err(ReadError::Failed(cause.clone())),
                Some(Terminal::Released) => return Err(ReadError::Released),
                None => {}
            }
            if state.reader != ReaderState::Attached {
                return Ok(None);
            }
            match state.queue.front() {
                None => return Ok(None),
                Some(BufferOrEvent::Buffer(_)) if !allow_buffer => return Ok(None),
                Some(_) => {}
            }
            let Some(item) = state.queue.pop_front() else { return Ok(None) };
            let mut woke_producer = false;
            if matches!(item, BufferOrEvent::Buffer(_)) {
                woke_producer = state.buffers >= max;
                state.buffers -= 1;
            }
            if matches!(item, BufferOrEvent::Event(Event::EndOfPartition)) {
                state.reader = ReaderState::Consumed;
                state.listener = None;
            }
            let next = match state.queue.front() {
                None => Next::Nothing,
                Some(BufferOrEvent::Buffer(_)) => Next::Buffer,
                Some(BufferOrEvent::Event(_)) => Next::Event,
            };
            (item, next, woke_producer)
        };
        if woke_producer {
            sub.space.notify_waiters();
        }
        if matches!(item, BufferOrEvent::Event(Event::EndOfPartition)) {
            self.partition.subpartition_done();
        }
        Ok(Some((item, next)))
    }
}

impl Drop for SubpartitionReader {
    fn drop(&mut self) {
        let sub = &self.partition.inner.subpartitions[self.index];
        let cancelled = {
            let mut state = lock(&sub.state);
            if state.reader == ReaderState::Attached {
                state.reader = ReaderState::Cancelled;
                state.listener = None;
                state.drop_queue();
                true
            } else {
                false
            }
        };
        if cancelled {
            debug!(partition = %self.partition.inner.id, subpartition = self.index, "subpartition reader cancelled");
            sub.space.notify_waiters();
            self.partition.subpartition_done();
        }
    }
}

#[derive(Default)]
struct ManagerInner {
    partitions: Mutex<HashMap<PartitionId, ResultPartition>>,
    /// Woken on every registration, for consumers waiting for a local partition.
    registered: Notify,
}

/// The live result partitions of one taskmanager, read by its data server and by local
/// input channels. Cheap to clone; all clones are the same registry.
#[derive(Clone, Default)]
pub struct PartitionManager {
    inner: Arc<ManagerInner>,
}

impl PartitionManager {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a partition readable by consumers.
    pub fn register(&self, partition: &ResultPartition) -> Result<(), NetworkError> {
        let id = partition.id();
        {
            let mut partitions = lock(&self.inner.partitions);
            if partitions.contains_key(&id) {
                return Err(NetworkError::DuplicatePartition { partition: id });
            }
            let mut lifecycle = lock(&partition.inner.lifecycle);
            if lifecycle.released {
                return Err(NetworkError::PartitionReleased { partition: id });
            }
            lifecycle.manager = Some(Arc::downgrade(&self.inner));
            drop(lifecycle);
            partitions.insert(id, partition.clone());
        }
        debug!(partition = %id, "result partition registered");
        self.inner.registered.notify_waiters();
        Ok(())
    }

    /// A registered partition.
    pub fn get(&self, id: &PartitionId) -> Option<ResultPartition> {
        lock(&self.inner.partitions).get(id).cloned()
    }

    /// Releases every partition of a job.
    pub fn release(&self, job_id: JobId) {
        let released: Vec<ResultPartition> = {
            let mut partitions = lock(&self.inner.partitions);
            let ids: Vec<PartitionId> = partitions.keys().filter(|id| id.job_id == job_id).copied().collect();
            ids.iter().filter_map(|id| partitions.remove(id)).collect()
        };
        for partition in released {
            partition.release_local();
        }
    }

    /// Releases one partition.
    pub fn release_partition(&self, id: &PartitionId) {
        let removed = lock(&self.inner.partitions).remove(id);
        if let Some(partition) = removed {
            partition.release_local();
        }
    }

    /// The ids of the registered partitions.
    pub fn partition_ids(&self) -> Vec<PartitionId> {
        lock(&self.inner.partitions).keys().copied().collect()
    }

    /// Resolves at the next registration (create it, `enable` it, then look up).
    pub(crate) fn registered(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.registered.notified()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use flint_common::ids::JobVertexId;
    use futures::FutureExt;

    use super::*;

    fn id(job: u128, subtask: u32) -> PartitionId {
        PartitionId {
            job_id: JobId::from_u128(job),
            result: JobVertexId::from_u128(1),
            edge: 0,
            producer_subtask: subtask,
            attempt: 0,
        }
    }

    #[derive(Default)]
    struct Counting(AtomicUsize);
    impl AvailabilityListener for Counting {
        fn notify_available(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn buf(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn emit_waits_while_the_queue_is_full() {
        let p = ResultPartition::new(id(1, 0), 1, 2);
        let listener = Arc::new(Counting::default());
        let reader = p.create_reader(0, listener.clone()).unwrap();
        assert_eq!(p.emit(0, buf(0)).now_or_never(), Some(Ok(())));
        assert_eq!(listener.0.load(Ordering::SeqCst), 1, "notified when the queue turned non-empty");
        assert_eq!(p.emit(0, buf(1)).now_or_never(), Some(Ok(())));
        assert_eq!(listener.0.load(Ordering::SeqCst), 1);
        assert_eq!(p.queued_buffers(0), 2);
        // Full: the third emit waits until the reader takes one.
        let mut third = Box::pin(p.emit(0, buf(2)));
        assert!((&mut third).now_or_never().is_none());
        // Events do not wait.
        assert_eq!(p.emit_event(0, Event::Custom(buf(9))).now_or_never(), Some(Ok(())));
        let (item, next) = reader.poll(true).unwrap().unwrap();
        assert_eq!(item, BufferOrEvent::Buffer(buf(0)));
        assert_eq!(next, Next::Buffer);
        assert_eq!(third.now_or_never(), Some(Ok(())));
        assert_eq!(p.queued_buffers(0), 2);
        assert_eq!(reader.poll(true).unwrap().unwrap().0, BufferOrEvent::Buffer(buf(1)));
        // Without credit only events pass.
        assert_eq!(reader.poll(false).unwrap().unwrap().0, BufferOrEvent::Event(Event::Custom(buf(9))));
        assert_eq!(reader.poll(false).unwrap(), None);
        assert_eq!(reader.poll(true).unwrap().unwrap(), (BufferOrEvent::Buffer(buf(2)), Next::Nothing));
        assert_eq!(reader.poll(true).unwrap(), None);
        assert_eq!(p.stats().buffers_written, 3);
        assert!(p.backpressured_time() > Duration::ZERO);
    }

    #[test]
    fn out_of_range_and_second_readers_are_refused() {
        let p = ResultPartition::new(id(1, 0), 2, 2);
        assert!(matches!(p.emit(2, buf(0)).now_or_never(), Some(Err(NetworkError::SubpartitionOutOfRange { .. }))));
        let _reader = p.create_reader(1, Arc::new(Counting::default())).unwrap();
        assert!(matches!(
            p.create_reader(1, Arc::new(Counting::default())),
            Err(NetworkError::AlreadyConsumed { subpartition: 1, .. })
        ));
        assert!(matches!(
            p.create_reader(5, Arc::new(Counting::default())),
            Err(NetworkError::SubpartitionOutOfRange { .. })
        ));
    }

    #[test]
    fn a_reader_that_goes_away_fails_the_producer_instead_of_dropping_records() {
        let p = ResultPartition::new(id(1, 0), 1, 1);
        let reader = p.create_reader(0, Arc::new(Counting::default())).unwrap();
        assert_eq!(p.emit(0, buf(0)).now_or_never(), Some(Ok(())));
        let mut blocked = Box::pin(p.emit(0, buf(1)));
        assert!((&mut blocked).now_or_never().is_none());
        drop(reader);
        let gone = |r: Option<Result<(), NetworkError>>| matches!(r, Some(Err(NetworkError::ConsumerGone { .. })));
        assert!(gone(blocked.now_or_never()), "a waiting emit fails");
        assert_eq!(p.queued_buffers(0), 0);
        assert!(gone(p.emit(0, buf(2)).now_or_never()), "later emits fail");
        assert!(gone(p.emit_event(0, Event::EndOfPartition).now_or_never()));
        assert!(gone(p.finish().now_or_never()), "finishing cannot claim the output was delivered");
    }

    #[test]
    fn failure_reaches_readers_and_writers() {
        let p = ResultPartition::new(id(1, 0), 1, 1);
        let listener = Arc::new(Counting::default());
        let reader = p.create_reader(0, listener.clone()).unwrap();
        assert_eq!(p.emit(0, buf(0)).now_or_never(), Some(Ok(())));
        let mut blocked = Box::pin(p.emit(0, buf(1)));
        assert!((&mut blocked).now_or_never().is_none());
        p.fail("boom");
        assert!(matches!(blocked.now_or_never(), Some(Err(NetworkError::ProducerFailed { .. }))));
        assert_eq!(listener.0.load(Ordering::SeqCst), 2);
        assert_eq!(reader.poll(true), Err(ReadError::Failed("boom".into())));
        assert!(matches!(p.finish().now_or_never(), Some(Err(NetworkError::ProducerFailed { .. }))));
    }

    #[test]
    fn a_finished_partition_leaves_the_manager_once_consumed() {
        let manager = PartitionManager::new();
        let p = ResultPartition::new(id(1, 0), 2, 4);
        manager.register(&p).unwrap();
        assert!(matches!(manager.register(&p), Err(NetworkError::DuplicatePartition { .. })));
        let r0 = p.create_reader(0, Arc::new(Counting::default())).unwrap();
        let r1 = p.create_reader(1, Arc::new(Counting::default())).unwrap();
        p.emit(0, buf(1)).now_or_never().unwrap().unwrap();
        p.finish().now_or_never().unwrap().unwrap();
        assert!(matches!(p.emit(0, buf(2)).now_or_never(), Some(Err(NetworkError::PartitionFinished { .. }))));
        assert_eq!(r1.poll(true).unwrap().unwrap().0, BufferOrEvent::Event(Event::EndOfPartition));
        assert!(manager.get(&p.id()).is_some());
        assert_eq!(r0.poll(true).unwrap().unwrap().0, BufferOrEvent::Buffer(buf(1)));
        assert!(manager.get(&p.id()).is_some());
        assert_eq!(r0.poll(true).unwrap().unwrap().0, BufferOrEvent::Event(Event::EndOfPartition));
        assert!(manager.get(&p.id()).is_none(), "consumed partitions release themselves");
    }

    #[test]
    fn releasing_a_job_releases_its_partitions_only() {
        let manager = PartitionManager::new();
        let a = ResultPartition::new(id(1, 0), 1, 4);
        let b = ResultPartition::new(id(2, 0), 1, 4);
        manager.register(&a).unwrap();
        manager.register(&b).unwrap();
        let reader = a.create_reader(0, Arc::new(Counting::default())).unwrap();
        manager.release(JobId::from_u128(1));
        assert_eq!(manager.partition_ids(), vec![b.id()]);
        assert_eq!(reader.poll(true), Err(ReadError::Released));
        assert!(matches!(a.emit(0, buf(0)).now_or_never(), Some(Err(NetworkError::PartitionReleased { .. }))));
        b.release();
        assert!(manager.partition_ids().is_empty());
        assert!(matches!(manager.register(&b), Err(NetworkError::PartitionReleased { .. })));
    }
}
