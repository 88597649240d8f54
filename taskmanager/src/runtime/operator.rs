//! The operator contract of the task runtime.
//!
//! Records travel as Arrow [`RecordBatch`]es end to end: sources produce batches,
//! chained operators are plain method calls on batches, exchanges serialize batches into
//! network buffers. An operator never sees a single record on its own, so per-record
//! work stays inside tight loops over columns.
//!
//! A task runs one chain: either a [`SourceOperator`] or network input gates at the head,
//! then [`Operator`]s, the last one writing into a [`Collector`] that is the task's
//! output (partitioners and result partitions) or nothing (sinks).

use arrow::record_batch::RecordBatch;
use flint_common::messages::{FileCommit, GroupedMetric};
use futures::future::BoxFuture;

use crate::state::StateStore;

/// Why a task stopped with an error. `retryable` tells a restart strategy whether a
/// new attempt can help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    pub message: String,
    pub retryable: bool,
}

impl TaskError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }

    /// An I/O error with what was being done (`context`); retryable by its kind.
    pub fn io(context: impl std::fmt::Display, e: &std::io::Error) -> Self {
        Self { message: format!("{context}: {e}"), retryable: io_error_is_retryable(e) }
    }

    /// An Arrow error with what was being done (`context`); retryable by its kind.
    pub fn arrow(context: impl std::fmt::Display, e: &arrow::error::ArrowError) -> Self {
        Self { message: format!("{context}: {e}"), retryable: arrow_error_is_retryable(e) }
    }
}

impl From<arrow::error::ArrowError> for TaskError {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self { retryable: arrow_error_is_retryable(&e), message: e.to_string() }
    }
}

impl From<std::io::Error> for TaskError {
    fn from(e: std::io::Error) -> Self {
        Self { retryable: io_error_is_retryable(&e), message: e.to_string() }
    }
}

/// Whether an I/O error can go away on a new attempt. Kinds that describe the input or
/// the file itself (bad data, a bad argument, an unsupported operation, a missing file
/// or one we may not open) repeat on every attempt; the rest (network, interruptions,
/// full disks, timeouts) may not.
fn io_error_is_retryable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    !matches!(
        e.kind(),
        K::InvalidData
            | K::InvalidInput
            | K::Unsupported
            | K::NotFound
            | K::PermissionDenied
            | K::IsADirectory
            | K::NotADirectory
            | K::InvalidFilename
            | K::ReadOnlyFilesystem
    )
}

/// Whether an Arrow error can go away on a new attempt: only I/O and external failures
/// (and memory pressure) can; schema, cast, parse, compute and argument errors are
/// deterministic for the same input.
fn arrow_error_is_retryable(e: &arrow::error::ArrowError) -> bool {
    use arrow::error::ArrowError as A;
    match e {
        A::IoError(_, io) => io_error_is_retryable(io),
        A::ExternalError(source) => {
            if let Some(io) = source.downcast_ref::<std::io::Error>() {
                io_error_is_retryable(io)
            } else if let Some(arrow) = source.downcast_ref::<A>() {
                arrow_error_is_retryable(arrow)
            } else {
                true
            }
        }
        A::MemoryError(_) => true,
        _ => false,
    }
}

/// Where an operator puts its output.
pub trait Collector: Send {
    fn collect(&mut self, batch: RecordBatch) -> Result<(), TaskError>;
    /// Event time progressed to `watermark` (ms): no later record will carry an
    /// earlier timestamp.
    fn emit_watermark(&mut self, watermark: i64) -> Result<(), TaskError>;
}

/// What an operator knows about where it runs.
#[derive(Clone, Debug)]
pub struct OperatorContext {
    pub job_name: String,
    pub operator_id: String,
    pub subtask: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// Number of upstream channels of each input (network inputs only; 1 when chained).
    pub input_channels: Vec<usize>,
    /// What WebAssembly operators run under (`wasm.memory.max`, `wasm.call.timeout`).
    pub wasm_limits: flint_wasm::Limits,
}

/// A transformation or sink, fed batches.
pub trait Operator: Send {
    /// A batch arrived on `input` (0 unless the operator has several inputs, e.g. union),
    /// from upstream channel `channel` of that input (0 when chained).
    fn process_batch(
        &mut self,
        input: usize,
        channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError>;

    /// A watermark from upstream channel `channel` of `input`. Operators that do not
    /// care forward the combined watermark (see the task runner) unchanged.
    fn process_watermark(
        &mut self,
        _input: usize,
        _channel: usize,
        watermark: i64,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        out.emit_watermark(watermark)
    }

    /// Called about every 100 ms with the current epoch ms (processing-time timers).
    fn on_processing_time(&mut self, _now_ms: i64, _out: &mut dyn Collector) -> Result<(), TaskError> {
        Ok(())
    }

    /// Every input ended: emit what is left (e.g. fire all windows).
    fn finish(&mut self, _out: &mut dyn Collector) -> Result<(), TaskError> {
        Ok(())
    }

    /// Called before [`Operator::finish`] when a final checkpoint follows the end of the
    /// input (checkpointing is on and `execution.checkpointing.checkpoints-after-tasks-finish`,
    /// Flink's FLIP-147): what is still uncommitted at `finish` is committed through that
    /// checkpoint ([`Operator::notify_checkpoint_complete`]), not at `finish`.
    fn expect_final_checkpoint(&mut self) {}

    /// The task ends well, after [`Operator::finish`] and the final checkpoint (if any):
    /// wait for what is still underway (e.g. a commit).
    fn close(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id`: write everything needed to resume from this exact point
    /// of the input into `state` (a fresh store with this subtask's key groups). Called
    /// between batches, after every earlier input was processed and before any later one.
    fn snapshot_state(&mut self, _checkpoint_id: u64, _state: &mut StateStore) -> Result<(), TaskError> {
        Ok(())
    }

    /// Before the first input, when the job resumes from a checkpoint or savepoint: take the
    /// state back. `state` holds this subtask's share (its key groups; operator state
    /// redistributed), empty if the checkpoint had nothing for this operator.
    fn restore_state(&mut self, _state: &mut StateStore) -> Result<(), TaskError> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` (and so every earlier one) completed: make what it covers
    /// visible (sinks commit).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<(), TaskError> {
        Ok(())
    }

    /// After [`Operator::finish`]: output that is ready but not committed yet, because no
    /// checkpoint covers it. The JobMaster commits it when the whole job finished.
    fn final_commits(&mut self) -> Vec<FileCommit> {
        Vec::new()
    }

    /// Named counters shown as accumulators (`/jobs/:id/accumulators`).
    fn accumulators(&self, _out: &mut Vec<(String, u64)>) {}

    /// Records dropped as late so far (`numLateRecordsDropped`), for operators that drop
    /// late records (windows); `None` for the others.
    fn late_records_dropped(&self) -> Option<u64> {
        None
    }
}

/// The head of a source task.
pub trait SourceOperator: Send {
    /// The next batch, or `None` when a bounded source is exhausted. May wait (rate
    /// limits, sockets); must return promptly when there is nothing more to do.
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<RecordBatch>, TaskError>>;

    /// See [`Operator::snapshot_state`]; for sources, the read position (what was emitted).
    fn snapshot_state(&mut self, _checkpoint_id: u64, _state: &mut StateStore) -> Result<(), TaskError> {
        Ok(())
    }

    /// See [`Operator::restore_state`].
    fn restore_state(&mut self, _state: &mut StateStore) -> Result<(), TaskError> {
        Ok(())
    }

    /// See [`Operator::notify_checkpoint_complete`].
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<(), TaskError> {
        Ok(())
    }

    /// The source's own event-time watermark when it advanced since the last call (sources
    /// with per-split watermarks, e.g. `source.kafka`); asked after every batch and
    /// periodically (idle splits stop holding it back).
    fn watermark(&mut self) -> Option<i64> {
        None
    }

    /// See [`Operator::accumulators`].
    fn accumulators(&self, _out: &mut Vec<(String, u64)>) {}

    /// The source's own metrics at a report (e.g. `pendingRecords`, a Kafka source's lag):
    /// they join the source operator's metrics.
    fn metrics(&self, _out: &mut SourceMetrics) {}
}

/// What a source adds to its operator's metrics at a report.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// Gauges by their id below the operator (`pendingRecords`,
    /// `KafkaSourceReader.KafkaConsumer.records-lag-max`).
    pub gauges: Vec<(String, f64)>,
    /// Gauges in key/value groups; `operator` is filled in by the task.
    pub grouped: Vec<GroupedMetric>,
}

#[cfg(test)]
mod tests {
    use std::io::{Error as IoError, ErrorKind};

    use arrow::error::ArrowError;

    use super::*;

    #[test]
    fn io_errors_are_retryable_unless_the_input_or_the_file_is_at_fault() {
        for kind in [ErrorKind::ConnectionReset, ErrorKind::TimedOut, ErrorKind::Interrupted, ErrorKind::UnexpectedEof]
        {
            let e = TaskError::from(IoError::new(kind, "boom"));
            assert!(e.retryable, "{kind:?}");
            assert_eq!(e.message, "boom");
        }
        for kind in [
            ErrorKind::InvalidData,
            ErrorKind::InvalidInput,
            ErrorKind::Unsupported,
            ErrorKind::NotFound,
            ErrorKind::PermissionDenied,
        ] {
            assert!(!TaskError::from(IoError::new(kind, "boom")).retryable, "{kind:?}");
        }
        assert!(!TaskError::from(IoError::from(ErrorKind::NotFound)).retryable);
    }

    #[test]
    fn arrow_errors_are_retryable_only_for_io_external_and_memory_failures() {
        let retryable = [
            ArrowError::IoError("read".into(), IoError::from(ErrorKind::ConnectionReset)),
            ArrowError::ExternalError(Box::new(IoError::from(ErrorKind::BrokenPipe))),
            ArrowError::ExternalError("a user function failed".into()),
            ArrowError::MemoryError("out of memory".into()),
        ];
        for e in retryable {
            let text = e.to_string();
            let task = TaskError::from(e);
            assert!(task.retryable, "{text}");
            assert_eq!(task.message, text);
        }
        let deterministic = [
            ArrowError::SchemaError("no field 'x'".into()),
            ArrowError::CastError("cannot cast".into()),
            ArrowError::ComputeError("bad kernel input".into()),
            ArrowError::InvalidArgumentError("lengths differ".into()),
            ArrowError::ParseError("not a number".into()),
            ArrowError::DivideByZero,
            ArrowError::ArithmeticOverflow("overflow".into()),
            ArrowError::IoError("read".into(), IoError::from(ErrorKind::InvalidData)),
            ArrowError::ExternalError(Box::new(IoError::from(ErrorKind::NotFound))),
            ArrowError::ExternalError(Box::new(ArrowError::SchemaError("nested".into()))),
        ];
        for e in deterministic {
            let text = e.to_string();
            assert!(!TaskError::from(e).retryable, "{text}");
        }
    }
}
