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
use futures::future::BoxFuture;

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
}

impl From<arrow::error::ArrowError> for TaskError {
    fn from(e: arrow::error::ArrowError) -> Self {
        TaskError::new(e.to_string())
    }
}

impl From<std::io::Error> for TaskError {
    fn from(e: std::io::Error) -> Self {
        TaskError::new(e.to_string())
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
}

/// The head of a source task.
pub trait SourceOperator: Send {
    /// The next batch, or `None` when a bounded source is exhausted. May wait (rate
    /// limits, sockets); must return promptly when there is nothing more to do.
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<RecordBatch>, TaskError>>;
}
