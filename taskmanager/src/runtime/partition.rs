//! The output side of a task for non-keyed ship strategies: which downstream channel
//! (consumer subtask) gets which records.
//!
//! A [`Partitioner`] sees each output batch once and appends `(channel, batch)` pairs to a
//! vector the caller reuses, so partitioning allocates nothing per record and, for the
//! strategies here, nothing per batch beyond the `Arc` clones of the batch's columns.
//! The keyed hash partitioner (in `keyed.rs`) implements the same trait.
//!
//! - [`Forward`]: everything to the consumer with the producer's own index (equal
//!   parallelism), or to channel 0 when the partition has a single channel.
//! - [`Rebalance`]: whole batches rotate round-robin over all channels. Flink rotates per
//!   record; rotating per batch keeps batches intact (no copying) and is just as fair
//!   over time since sources emit batches of a fixed size.
//! - [`Rescale`]: round-robin like [`Rebalance`], but only over the producer's local group
//!   of consumers, computed as Flink's pointwise pattern does ([`rescale_targets`]).
//! - [`Broadcast`]: every channel gets the batch (a cheap clone: columns are shared).

use std::ops::Range;

use arrow::record_batch::RecordBatch;
use flint_common::job::ShipStrategy;

use super::operator::TaskError;

/// Decides which output channels receive a batch.
pub trait Partitioner: Send {
    /// Appends the parts of `batch` and their channel indices (each `< num_channels`) to
    /// `out`. `out` is not cleared: the caller drains it after each call. Empty parts are
    /// not appended.
    fn partition(
        &mut self,
        batch: &RecordBatch,
        num_channels: usize,
        out: &mut Vec<(usize, RecordBatch)>,
    ) -> Result<(), TaskError>;

    /// Whether every channel receives every record (a watermark or an end-of-stream
    /// event goes to every channel regardless of the strategy).
    fn is_broadcast(&self) -> bool {
        false
    }
}

/// `forward`: the producer's records go to the consumer with the same subtask index.
#[derive(Debug, Clone)]
pub struct Forward {
    subtask: usize,
}

impl Forward {
    /// The partitioner of producer subtask `subtask`.
    pub fn new(subtask: usize) -> Self {
        Self { subtask }
    }
}

impl Partitioner for Forward {
    fn partition(
        &mut self,
        batch: &RecordBatch,
        num_channels: usize,
        out: &mut Vec<(usize, RecordBatch)>,
    ) -> Result<(), TaskError> {
        // A pointwise (one-channel) partition, or an all-to-all one with a channel per consumer.
        let channel = if num_channels == 1 { 0 } else { self.subtask };
        if channel >= num_channels {
            return Err(TaskError::fatal(format!(
                "forward partitioning from subtask {} to {num_channels} channels: the parallelism must be equal",
                self.subtask
            )));
        }
        if batch.num_rows() > 0 {
            out.push((channel, batch.clone()));
        }
        Ok(())
    }
}

/// `rebalance`: whole batches in turn to every channel, starting at the producer's own
/// index so that parallel producers do not all start on channel 0.
#[derive(Debug, Clone)]
pub struct Rebalance {
    next: usize,
}

impl Rebalance {
    /// The partitioner of producer subtask `subtask`.
    pub fn new(subtask: usize) -> Self {
        Self { next: subtask }
    }
}

impl Partitioner for Rebalance {
    fn partition(
        &mut self,
        batch: &RecordBatch,
        num_channels: usize,
        out: &mut Vec<(usize, RecordBatch)>,
    ) -> Result<(), TaskError> {
        if num_channels == 0 {
            return Err(TaskError::fatal("rebalance partitioning to zero channels"));
        }
        if batch.num_rows() > 0 {
            let channel = self.next % num_channels;
            self.next = (channel + 1) % num_channels;
            out.push((channel, batch.clone()));
        }
        Ok(())
    }
}

/// The consumers that producer `producer` of `producers` sends to under `rescale` when
/// there are `consumers` consumers: Flink's pointwise pattern. With more consumers than
/// producers each producer feeds its own contiguous group; with fewer, groups of
/// producers share one consumer; with as many, producer `i` feeds consumer `i`.
pub fn rescale_targets(producer: usize, producers: usize, consumers: usize) -> Range<usize> {
    if producers == 0 || consumers == 0 {
        return 0..0;
    }
    if producers >= consumers {
        // Consumer j reads producers [j*p/c, (j+1)*p/c): find the j whose range holds us.
        let j = ((producer + 1) * consumers).div_ceil(producers) - 1;
        j..j + 1
    } else {
        producer * consumers / producers..(producer + 1) * consumers / producers
    }
}

/// The producers that consumer `consumer` reads from under `rescale` (the inverse of
/// [`rescale_targets`]).
pub fn rescale_sources(consumer: usize, producers: usize, consumers: usize) -> Range<usize> {
    if producers == 0 || consumers == 0 {
        return 0..0;
    }
    if producers >= consumers {
        consumer * producers / consumers..(consumer + 1) * producers / consumers
    } else {
        let i = ((consumer + 1) * producers).div_ceil(consumers) - 1;
        i..i + 1
    }
}

/// `rescale`: whole batches round-robin over the producer's local group of consumers
/// ([`rescale_targets`]). `num_channels` is the number of consumers; with a partition
/// that has one channel per consumer, the channels outside the group get nothing. With a
/// partition that only has the group's channels (pointwise wiring, `num_channels` equal
/// to the group size) it rotates over all of them.
#[derive(Debug, Clone)]
pub struct Rescale {
    subtask: usize,
    parallelism: usize,
    next: usize,
}

impl Rescale {
    /// The partitioner of producer subtask `subtask` of `parallelism`.
    pub fn new(subtask: usize, parallelism: usize) -> Self {
        Self { subtask, parallelism: parallelism.max(1), next: 0 }
    }
}

impl Partitioner for Rescale {
    fn partition(
        &mut self,
        batch: &RecordBatch,
        num_channels: usize,
        out: &mut Vec<(usize, RecordBatch)>,
    ) -> Result<(), TaskError> {
        if num_channels == 0 {
            return Err(TaskError::fatal("rescale partitioning to zero channels"));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let group = rescale_targets(self.subtask, self.parallelism, num_channels);
        let group = if group.is_empty() { 0..num_channels } else { group };
        let channel = group.start + self.next % group.len();
        self.next = (self.next + 1) % group.len();
        out.push((channel, batch.clone()));
        Ok(())
    }
}

/// `broadcast`: every channel gets every batch.
#[derive(Debug, Clone, Default)]
pub struct Broadcast;

impl Partitioner for Broadcast {
    fn partition(
        &mut self,
        batch: &RecordBatch,
        num_channels: usize,
        out: &mut Vec<(usize, RecordBatch)>,
    ) -> Result<(), TaskError> {
        if batch.num_rows() > 0 {
            out.extend((0..num_channels).map(|c| (c, batch.clone())));
        }
        Ok(())
    }

    fn is_broadcast(&self) -> bool {
        true
    }
}

/// The partitioner for a non-keyed ship strategy, for producer subtask `subtask` of
/// `parallelism`. `Hash` is keyed: its partitioner lives with the keyed operators, so
/// this returns an error for it.
pub fn non_keyed_partitioner(
    strategy: &ShipStrategy,
    subtask: usize,
    parallelism: usize,
) -> Result<Box<dyn Partitioner>, TaskError> {
    Ok(match strategy {
        ShipStrategy::Forward => Box::new(Forward::new(subtask)),
        ShipStrategy::Rebalance => Box::new(Rebalance::new(subtask)),
        ShipStrategy::Rescale => Box::new(Rescale::new(subtask, parallelism)),
        ShipStrategy::Broadcast => Box::new(Broadcast),
        other => {
            return Err(TaskError::fatal(format!(
                "ship strategy {other:?} is keyed; use the hash partitioner of the keyed runtime"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let column: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows));
        RecordBatch::try_new(schema, vec![column]).unwrap()
    }

    /// The channels that get each of `batches` batches.
    fn channels(p: &mut dyn Partitioner, batches: usize, num_channels: usize) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        (0..batches)
            .map(|_| {
                p.partition(&batch(3), num_channels, &mut out).unwrap();
                let channels = out.iter().map(|(c, b)| {
                    assert_eq!(b.num_rows(), 3);
                    *c
                });
                let channels = channels.collect();
                out.clear();
                channels
            })
            .collect()
    }

    #[test]
    fn forward_goes_to_the_own_subtask() {
        assert_eq!(channels(&mut Forward::new(2), 2, 4), vec![vec![2], vec![2]]);
        assert_eq!(channels(&mut Forward::new(2), 1, 1), vec![vec![0]]);
        let mut out = Vec::new();
        assert!(Forward::new(3).partition(&batch(1), 2, &mut out).is_err());
    }

    #[test]
    fn rebalance_rotates_whole_batches() {
        assert_eq!(channels(&mut Rebalance::new(0), 5, 3), vec![vec![0], vec![1], vec![2], vec![0], vec![1]]);
        assert_eq!(channels(&mut Rebalance::new(1), 3, 3), vec![vec![1], vec![2], vec![0]]);
        assert_eq!(channels(&mut Rebalance::new(7), 2, 1), vec![vec![0], vec![0]]);
    }

    #[test]
    fn broadcast_sends_everywhere() {
        assert_eq!(channels(&mut Broadcast, 2, 3), vec![vec![0, 1, 2], vec![0, 1, 2]]);
        assert!(Broadcast.is_broadcast());
        assert!(!Rebalance::new(0).is_broadcast());
    }

    #[test]
    fn empty_batches_go_nowhere() {
        let mut out = Vec::new();
        for p in [
            &mut Forward::new(0) as &mut dyn Partitioner,
            &mut Rebalance::new(0),
            &mut Rescale::new(0, 1),
            &mut Broadcast,
        ] {
            p.partition(&batch(0), 2, &mut out).unwrap();
        }
        assert!(out.is_empty());
    }

    #[test]
    fn rescale_groups_follow_the_pointwise_pattern() {
        // 2 producers, 4 consumers: producer 0 feeds 0 and 1, producer 1 feeds 2 and 3.
        assert_eq!(rescale_targets(0, 2, 4), 0..2);
        assert_eq!(rescale_targets(1, 2, 4), 2..4);
        assert_eq!(rescale_sources(3, 2, 4), 1..2);
        // 4 producers, 2 consumers: producers 0, 1 feed consumer 0; 2, 3 feed consumer 1.
        assert_eq!((0..4).map(|i| rescale_targets(i, 4, 2)).collect::<Vec<_>>(), vec![0..1, 0..1, 1..2, 1..2]);
        assert_eq!(rescale_sources(1, 4, 2), 2..4);
        // Uneven: every consumer is fed by exactly the producers that target it.
        for (p, c) in [(3, 7), (7, 3), (5, 5), (1, 4), (4, 1), (6, 4)] {
            for consumer in 0..c {
                let sources: Vec<usize> = (0..p).filter(|i| rescale_targets(*i, p, c).contains(&consumer)).collect();
                assert_eq!(sources, rescale_sources(consumer, p, c).collect::<Vec<_>>(), "{p} -> {c}");
                assert!(!sources.is_empty());
            }
        }
        assert_eq!(channels(&mut Rescale::new(1, 2), 3, 4), vec![vec![2], vec![3], vec![2]]);
        assert_eq!(channels(&mut Rescale::new(3, 4), 2, 2), vec![vec![1], vec![1]]);
    }

    #[test]
    fn non_keyed_strategies_build_and_hash_does_not() {
        for s in [ShipStrategy::Forward, ShipStrategy::Rebalance, ShipStrategy::Rescale, ShipStrategy::Broadcast] {
            assert!(non_keyed_partitioner(&s, 0, 1).is_ok());
        }
        assert!(non_keyed_partitioner(&ShipStrategy::Hash { keys: vec!["k".into()] }, 0, 1).is_err());
    }
}
