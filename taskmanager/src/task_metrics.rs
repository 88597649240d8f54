//! What a task measures about itself, under Flink's metric names.
//!
//! - [`TaskIo`]: the task's counters (records and bytes in and out, time spent waiting for
//!   input, watermarks), shared between the task thread and its operators.
//! - [`OperatorIo`] and [`Metered`]: every chained operator is wrapped so that its records
//!   in and out, its watermarks and its late records are counted where they pass.
//! - [`Idle`]: a future wrapper that counts the time a task waits for input (between polls
//!   of its input) as idle; the time spent inside the polls is work.
//! - [`TaskMeter`]: at each report (every second) turns the counters into a
//!   [`MetricDump`]: counts, per-second rates over Flink's 60 s window, and
//!   `busyTimeMsPerSecond` / `idleTimeMsPerSecond` / `backPressuredTimeMsPerSecond` as Flink
//!   defines them: back-pressured is the time the task waited for room in its output queues
//!   (measured in [`ResultPartition::emit`]), idle the time it waited for input, busy the
//!   rest of the wall time.
//!
//! Everything runs on the task's thread; the atomics only let the operator wrappers and the
//! meter share the counters without locks.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use flint_common::messages::{FileCommit, MetricDump, TaskMetrics};
use flint_common::metrics::RateWindow;

use crate::network::ResultPartition;
use crate::runtime::operator::{Collector, Operator, TaskError};
use crate::state::StateStore;

/// No watermark yet: Flink's gauges start at `Long.MIN_VALUE`.
const NO_WATERMARK: i64 = i64::MIN;

/// The counters of one task.
#[derive(Debug)]
pub struct TaskIo {
    pub read_records: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_records: AtomicU64,
    pub write_bytes: AtomicU64,
    pub sink_records: AtomicU64,
    /// Time spent waiting for input (or, in sources, for the next batch to be due).
    pub idle_nanos: AtomicU64,
    /// The combined watermark of the task's inputs.
    pub input_watermark: AtomicI64,
    /// From the trigger of the newest checkpoint to its barrier reaching this task.
    pub checkpoint_start_delay_nanos: AtomicU64,
}

impl Default for TaskIo {
    fn default() -> Self {
        Self {
            read_records: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            write_records: AtomicU64::new(0),
            write_bytes: AtomicU64::new(0),
            sink_records: AtomicU64::new(0),
            idle_nanos: AtomicU64::new(0),
            input_watermark: AtomicI64::new(NO_WATERMARK),
            checkpoint_start_delay_nanos: AtomicU64::new(0),
        }
    }
}

impl TaskIo {
    /// The record and byte counts (every report carries them).
    pub fn counts(&self) -> TaskMetrics {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TaskMetrics {
            read_records: load(&self.read_records),
            write_records: load(&self.write_records),
            read_bytes: load(&self.read_bytes),
            write_bytes: load(&self.write_bytes),
            sink_records: load(&self.sink_records),
            dump: MetricDump::default(),
        }
    }
}

/// The counters of one chained operator (or of the source at the head).
#[derive(Debug)]
pub struct OperatorIo {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub input_watermark: AtomicI64,
    pub output_watermark: AtomicI64,
    /// `u64::MAX`: the operator drops no late records.
    late_dropped: AtomicU64,
}

impl Default for OperatorIo {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            input_watermark: AtomicI64::new(NO_WATERMARK),
            output_watermark: AtomicI64::new(NO_WATERMARK),
            late_dropped: AtomicU64::new(u64::MAX),
        }
    }
}

/// An operator of the chain with its counters.
pub struct Metered {
    inner: Box<dyn Operator>,
    io: Arc<OperatorIo>,
    /// The head of a task with network inputs: its input watermark is the task's.
    task: Option<Arc<TaskIo>>,
    /// The sink at the end of the chain: its records in are the task's sink records.
    sink: Option<Arc<TaskIo>>,
}

impl Metered {
    pub fn new(inner: Box<dyn Operator>, io: Arc<OperatorIo>) -> Self {
        Self { inner, io, task: None, sink: None }
    }

    /// The head of a task with network inputs takes its input watermark from the task.
    pub fn head_of(mut self, task: Arc<TaskIo>) -> Self {
        self.task = Some(task);
        self
    }

    /// A sink counts its records in as the task's sink records too.
    pub fn sink_of(mut self, task: Arc<TaskIo>) -> Self {
        self.sink = Some(task);
        self
    }

    fn after_call(&self) {
        if let Some(late) = self.inner.late_records_dropped() {
            self.io.late_dropped.store(late, Ordering::Relaxed);
        }
    }
}

/// Counts what an operator emits.
struct Counting<'a> {
    out: &'a mut dyn Collector,
    io: &'a OperatorIo,
}

impl Collector for Counting<'_> {
    fn collect(&mut self, batch: RecordBatch) -> Result<(), TaskError> {
        self.io.records_out.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.out.collect(batch)
    }

    fn emit_watermark(&mut self, watermark: i64) -> Result<(), TaskError> {
        self.io.output_watermark.fetch_max(watermark, Ordering::Relaxed);
        self.out.emit_watermark(watermark)
    }
}

impl Operator for Metered {
    fn process_batch(
        &mut self,
        input: usize,
        channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        let rows = batch.num_rows() as u64;
        self.io.records_in.fetch_add(rows, Ordering::Relaxed);
        if let Some(task) = &self.sink {
            task.sink_records.fetch_add(rows, Ordering::Relaxed);
        }
        let result = self.inner.process_batch(input, channel, batch, &mut Counting { out, io: &self.io });
        self.after_call();
        result
    }

    fn process_watermark(
        &mut self,
        input: usize,
        channel: usize,
        watermark: i64,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        let combined = match &self.task {
            Some(task) => task.input_watermark.load(Ordering::Relaxed),
            None => watermark,
        };
        self.io.input_watermark.fetch_max(combined, Ordering::Relaxed);
        let result = self.inner.process_watermark(input, channel, watermark, &mut Counting { out, io: &self.io });
        self.after_call();
        result
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut dyn Collector) -> Result<(), TaskError> {
        self.inner.on_processing_time(now_ms, &mut Counting { out, io: &self.io })
    }

    fn finish(&mut self, out: &mut dyn Collector) -> Result<(), TaskError> {
        self.inner.finish(&mut Counting { out, io: &self.io })
    }

    fn snapshot_state(&mut self, checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        self.inner.snapshot_state(checkpoint_id, state)
    }

    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        self.inner.restore_state(state)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), TaskError> {
        self.inner.notify_checkpoint_complete(checkpoint_id)
    }

    fn final_commits(&mut self) -> Vec<FileCommit> {
        self.inner.final_commits()
    }

    fn expect_final_checkpoint(&mut self) {
        self.inner.expect_final_checkpoint()
    }

    fn close(&mut self) -> Result<(), TaskError> {
        self.inner.close()
    }

    fn accumulators(&self, out: &mut Vec<(String, u64)>) {
        self.inner.accumulators(out)
    }

    fn late_records_dropped(&self) -> Option<u64> {
        self.inner.late_records_dropped()
    }
}

/// A future whose waiting counts as idle time of the task: the wall time from its first
/// poll until it completes (or is dropped) minus the time spent inside its polls.
pub struct Idle<'a, F> {
    inner: F,
    io: &'a TaskIo,
    first_poll: Option<Instant>,
    polling: Duration,
}

impl<'a, F: Future + Unpin> Idle<'a, F> {
    pub fn new(inner: F, io: &'a TaskIo) -> Self {
        Self { inner, io, first_poll: None, polling: Duration::ZERO }
    }
}

impl<F: Future + Unpin> Future for Idle<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = Instant::now();
        self.first_poll.get_or_insert(start);
        let result = Pin::new(&mut self.inner).poll(cx);
        self.polling += start.elapsed();
        result
    }
}

impl<F> Drop for Idle<'_, F> {
    fn drop(&mut self) {
        if let Some(first) = self.first_poll {
            let waited = first.elapsed().saturating_sub(self.polling);
            self.io.idle_nanos.fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

/// The task's input queue as the meter sees it: buffers waiting and the queue's bound.
#[derive(Clone, Copy, Debug, Default)]
pub struct InputQueue {
    pub queued: usize,
    pub capacity: usize,
}

/// Rates of one operator.
#[derive(Default)]
struct OperatorRates {
    records_in: RateWindow,
    records_out: RateWindow,
}

/// Turns a task's counters into its metrics at each report.
pub struct TaskMeter {
    io: Arc<TaskIo>,
    operators: Vec<(String, Arc<OperatorIo>)>,
    operator_rates: Vec<OperatorRates>,
    has_inputs: bool,
    created: Instant,
    running_since: Option<Instant>,
    initialization_ms: u64,
    records_in: RateWindow,
    records_out: RateWindow,
    bytes_in: RateWindow,
    bytes_out: RateWindow,
    busy: RateWindow,
    idle: RateWindow,
    back_pressured: RateWindow,
}

impl TaskMeter {
    /// `operators`: the chain's operators in order (the source first in source tasks), by
    /// their name in the job.
    pub fn new(io: Arc<TaskIo>, operators: Vec<(String, Arc<OperatorIo>)>, has_inputs: bool) -> Self {
        let operator_rates = operators.iter().map(|_| OperatorRates::default()).collect();
        Self {
            io,
            operators,
            operator_rates,
            has_inputs,
            created: Instant::now(),
            running_since: None,
            initialization_ms: 0,
            records_in: RateWindow::default(),
            records_out: RateWindow::default(),
            bytes_in: RateWindow::default(),
            bytes_out: RateWindow::default(),
            busy: RateWindow::default(),
            idle: RateWindow::default(),
            back_pressured: RateWindow::default(),
        }
    }

    /// The task switched to RUNNING: busy, idle and back-pressured time count from here.
    pub fn running(&mut self) {
        if self.running_since.is_none() {
            let now = Instant::now();
            self.initialization_ms = now.duration_since(self.created).as_millis() as u64;
            self.running_since = Some(now);
        }
    }

    /// Every metric of the task now.
    pub fn measure(&mut self, outputs: &[ResultPartition], input: InputQueue) -> TaskMetrics {
        let now = Instant::now();
        let mut metrics = self.io.counts();
        let wall = self.running_since.map_or(Duration::ZERO, |since| now.duration_since(since));
        let idle = Duration::from_nanos(self.io.idle_nanos.load(Ordering::Relaxed));
        let back_pressured: Duration = outputs.iter().map(ResultPartition::backpressured_time).sum();
        let busy = wall.saturating_sub(idle).saturating_sub(back_pressured);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        self.records_in.record(now, metrics.read_records as f64);
        self.records_out.record(now, metrics.write_records as f64);
        self.bytes_in.record(now, metrics.read_bytes as f64);
        self.bytes_out.record(now, metrics.write_bytes as f64);
        self.busy.record(now, ms(busy));
        self.idle.record(now, ms(idle));
        self.back_pressured.record(now, ms(back_pressured));
        let (mut queued, mut capacity, mut full) = (0usize, 0usize, false);
        for usage in outputs.iter().map(ResultPartition::queue_usage) {
            queued += usage.queued;
            capacity += usage.capacity;
            full |= usage.back_pressured;
        }
        let ratio = |part: usize, whole: usize| if whole == 0 { 0.0 } else { part as f64 / whole as f64 };
        // Rates of time are capped at a second per second (a report that came late).
        let per_second = |w: &RateWindow| w.per_second().clamp(0.0, 1000.0);
        let mut task = vec![
            ("numRecordsIn", metrics.read_records as f64),
            ("numRecordsInPerSecond", self.records_in.per_second()),
            ("numRecordsOut", metrics.write_records as f64),
            ("numRecordsOutPerSecond", self.records_out.per_second()),
            ("numBytesIn", metrics.read_bytes as f64),
            ("numBytesInPerSecond", self.bytes_in.per_second()),
            ("numBytesOut", metrics.write_bytes as f64),
            ("numBytesOutPerSecond", self.bytes_out.per_second()),
            ("busyTimeMsPerSecond", per_second(&self.busy)),
            ("idleTimeMsPerSecond", per_second(&self.idle)),
            ("backPressuredTimeMsPerSecond", per_second(&self.back_pressured)),
            // An emit waits until its queue has room: all of Flint's back-pressure is hard.
            ("hardBackPressuredTimeMsPerSecond", per_second(&self.back_pressured)),
            ("softBackPressuredTimeMsPerSecond", 0.0),
            ("accumulateBusyTimeMs", ms(busy).floor()),
            ("accumulateIdleTimeMs", ms(idle).floor()),
            ("accumulateBackPressuredTimeMs", ms(back_pressured).floor()),
            ("isBackPressured", if full { 1.0 } else { 0.0 }),
            ("buffers.outPoolUsage", ratio(queued, capacity)),
            ("buffers.outputQueueLength", queued as f64),
            ("buffers.inPoolUsage", ratio(input.queued, input.capacity)),
            ("buffers.inputQueueLength", input.queued as f64),
            ("checkpointStartDelayNanos", self.io.checkpoint_start_delay_nanos.load(Ordering::Relaxed) as f64),
            ("initializationTime", self.initialization_ms as f64),
        ];
        if self.has_inputs {
            task.push(("currentInputWatermark", self.io.input_watermark.load(Ordering::Relaxed) as f64));
        }
        metrics.dump.task = task.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        metrics.dump.buffers_queued = (queued + input.queued) as u64;
        metrics.dump.buffers_capacity = (capacity + input.capacity) as u64;
        for ((name, io), rates) in self.operators.iter().zip(&mut self.operator_rates) {
            let records_in = io.records_in.load(Ordering::Relaxed);
            let records_out = io.records_out.load(Ordering::Relaxed);
            rates.records_in.record(now, records_in as f64);
            rates.records_out.record(now, records_out as f64);
            let mut op = vec![
                ("numRecordsIn", records_in as f64),
                ("numRecordsInPerSecond", rates.records_in.per_second()),
                ("numRecordsOut", records_out as f64),
                ("numRecordsOutPerSecond", rates.records_out.per_second()),
                ("currentInputWatermark", io.input_watermark.load(Ordering::Relaxed) as f64),
                ("currentOutputWatermark", io.output_watermark.load(Ordering::Relaxed) as f64),
            ];
            let late = io.late_dropped.load(Ordering::Relaxed);
            if late != u64::MAX {
                op.push(("numLateRecordsDropped", late as f64));
            }
            metrics.dump.operators.push((metric_name(name), op.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
        }
        metrics
    }
}

/// An operator's name as a metric scope component: characters that would split or break a
/// metric id (dots, spaces, colons, ...) become `_`, as Flink's `Source: X` becomes
/// `Source__X`.
pub fn metric_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_between_polls_is_idle_and_work_inside_them_is_not() {
        let io = TaskIo::default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            Idle::new(Box::pin(tokio::time::sleep(Duration::from_millis(60))), &io).await;
            Idle::new(
                Box::pin(async {
                    std::thread::sleep(Duration::from_millis(60));
                }),
                &io,
            )
            .await;
        });
        let idle = Duration::from_nanos(io.idle_nanos.load(Ordering::Relaxed));
        assert!(idle >= Duration::from_millis(55) && idle < Duration::from_millis(110), "{idle:?}");
    }

    #[test]
    fn metered_operators_count_records_watermarks_and_late_records() {
        struct Window;
        impl Operator for Window {
            fn process_batch(
                &mut self,
                _: usize,
                _: usize,
                batch: RecordBatch,
                out: &mut dyn Collector,
            ) -> Result<(), TaskError> {
                out.collect(batch.slice(0, 1))
            }
            fn process_watermark(
                &mut self,
                _: usize,
                _: usize,
                watermark: i64,
                out: &mut dyn Collector,
            ) -> Result<(), TaskError> {
                out.emit_watermark(watermark - 1)
            }
            fn late_records_dropped(&self) -> Option<u64> {
                Some(7)
            }
        }
        struct Sink;
        impl Collector for Sink {
            fn collect(&mut self, _: RecordBatch) -> Result<(), TaskError> {
                Ok(())
            }
            fn emit_watermark(&mut self, _: i64) -> Result<(), TaskError> {
                Ok(())
            }
        }
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "n",
            arrow::datatypes::DataType::Int64,
            false,
        )]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3]))]).unwrap();
        let task = Arc::new(TaskIo::default());
        let io = Arc::new(OperatorIo::default());
        let mut op = Metered::new(Box::new(Window), io.clone()).sink_of(task.clone());
        op.process_batch(0, 0, batch.clone(), &mut Sink).unwrap();
        op.process_batch(0, 0, batch, &mut Sink).unwrap();
        op.process_watermark(0, 0, 100, &mut Sink).unwrap();
        let mut meter = TaskMeter::new(task.clone(), vec![("Window: x.y".into(), io)], true);
        meter.running();
        let m = meter.measure(&[], InputQueue { queued: 1, capacity: 4 });
        assert_eq!(m.sink_records, 6);
        let (name, op) = &m.dump.operators[0];
        assert_eq!(name, "Window__x_y");
        let get = |k: &str| op.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(get("numRecordsIn"), Some(6.0));
        assert_eq!(get("numRecordsOut"), Some(2.0));
        assert_eq!(get("currentInputWatermark"), Some(100.0));
        assert_eq!(get("currentOutputWatermark"), Some(99.0));
        assert_eq!(get("numLateRecordsDropped"), Some(7.0));
        let task_value = |k: &str| m.dump.task.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(task_value("buffers.inPoolUsage"), Some(0.25));
        assert_eq!(task_value("currentInputWatermark"), Some(i64::MIN as f64));
        assert_eq!(task_value("isBackPressured"), Some(0.0));
    }
}
