//! A running task: one subtask of one job vertex, on its own thread.
//!
//! The thread owns a small current-thread tokio runtime (timers, input forwarding) and
//! runs the vertex's operator chain:
//!
//! ```text
//!  source head:   SourceOperator ──batches──▶ chain ──▶ output collector
//!  network head:  InputGate(s) ──forwarders──▶ mpsc ──▶ decode ──▶ chain ──▶ output collector
//!  output collector: per output edge, partitioner ─▶ encode ─▶ ResultPartition::emit
//!                    (waits while the consumer has no room: back-pressure)
//! ```
//!
//! States go to the TaskExecutor through a callback: INITIALIZING, RUNNING, then
//! FINISHED (every input ended, `finish()` ran, every partition got end-of-partition),
//! CANCELED (cancel requested) or FAILED (any error, with its message). Watermarks
//! travel as custom events (`0x01` + i64 big-endian).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flint_common::ids::ResourceId;
use flint_common::job::catalog::OperatorKind;
use flint_common::job::plan::ShipStrategy;
use flint_common::messages::{TaskDeploymentDescriptor, TaskMetrics, TaskState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::network::{
    BufferOrEvent, ChannelLocation, DataClient, Event, GateConfig, InputChannelSpec, InputGate, PartitionId,
    PartitionManager, ResultPartition,
};
use crate::runtime::build::{build_operator, build_source};
use crate::runtime::codec::{decode_batch, encode_batch};
use crate::runtime::keyed::HashPartitioner;
use crate::runtime::operator::{Collector, Operator, OperatorContext, SourceOperator, TaskError};
use crate::runtime::partition::{non_keyed_partitioner, Partitioner};
use crate::runtime::schema::arrow_schema;
use crate::runtime::transforms::OperatorChain;

/// What every task of a TaskExecutor shares.
pub struct TaskEnvironment {
    pub resource_id: ResourceId,
    pub partitions: PartitionManager,
    pub data_client: DataClient,
    pub gate_config: GateConfig,
    pub max_queued_buffers: usize,
}

/// Reports a state change (with the failure cause and the counts so far).
pub type Reporter = Box<dyn Fn(TaskState, Option<String>, TaskMetrics) + Send>;

/// A running task.
pub struct TaskHandle {
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TaskHandle {
    /// Asks the task to stop; it reports CANCELED once it has.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    pub fn is_done(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

const WATERMARK_TAG: u8 = 0x01;

fn encode_watermark(watermark: i64) -> Bytes {
    let mut v = Vec::with_capacity(9);
    v.push(WATERMARK_TAG);
    v.extend_from_slice(&watermark.to_be_bytes());
    Bytes::from(v)
}

fn decode_watermark(bytes: &[u8]) -> Option<i64> {
    match bytes {
        [WATERMARK_TAG, rest @ ..] if rest.len() == 8 => Some(i64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

#[derive(Default)]
struct Counters {
    read_records: AtomicU64,
    read_bytes: AtomicU64,
    write_records: AtomicU64,
    write_bytes: AtomicU64,
    sink_records: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> TaskMetrics {
        TaskMetrics {
            read_records: self.read_records.load(Ordering::Relaxed),
            write_records: self.write_records.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            sink_records: self.sink_records.load(Ordering::Relaxed),
        }
    }
}

/// Starts a task on its own thread.
pub fn spawn(
    tdd: TaskDeploymentDescriptor,
    env: Arc<TaskEnvironment>,
    report: Reporter,
) -> std::io::Result<TaskHandle> {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let name = format!("task-{}-{}", tdd.vertex.name.chars().take(16).collect::<String>(), tdd.subtask);
    let thread = std::thread::Builder::new().name(name).spawn(move || run(tdd, env, token, report))?;
    Ok(TaskHandle { cancel, thread: Some(thread) })
}

fn run(tdd: TaskDeploymentDescriptor, env: Arc<TaskEnvironment>, cancel: CancellationToken, report: Reporter) {
    let counters = Arc::new(Counters::default());
    report(TaskState::Initializing, None, TaskMetrics::default());
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            report(TaskState::Failed, Some(format!("could not start the task runtime: {e}")), counters.snapshot());
            return;
        }
    };
    let mut partitions = Vec::new();
    let result = runtime.block_on(execute(&tdd, &env, &cancel, &report, &counters, &mut partitions));
    let task = format!("{} ({}/{})", tdd.vertex.name, tdd.subtask + 1, tdd.vertex.parallelism);
    match result {
        _ if cancel.is_cancelled() => {
            for p in &partitions {
                p.fail("the producing task was canceled");
            }
            info!(task, attempt = %tdd.attempt_id, "task canceled");
            report(TaskState::Canceled, None, counters.snapshot());
        }
        Ok(()) => {
            info!(task, attempt = %tdd.attempt_id, "task finished");
            report(TaskState::Finished, None, counters.snapshot());
        }
        Err(e) => {
            for p in &partitions {
                p.fail(format!("the producing task failed: {}", e.message));
            }
            warn!(task, attempt = %tdd.attempt_id, error = %e.message, "task failed");
            report(TaskState::Failed, Some(format!("{task} failed: {}", e.message)), counters.snapshot());
        }
    }
}

/// One output edge of the task.
struct Output {
    partition: ResultPartition,
    partitioner: Box<dyn Partitioner>,
    channels: usize,
}

/// The tail of the chain: partitions, encodes and emits batches.
struct OutputCollector {
    outputs: Vec<Output>,
    parts: Vec<(usize, RecordBatch)>,
    counters: Arc<Counters>,
}

impl Collector for OutputCollector {
    fn collect(&mut self, batch: RecordBatch) -> Result<(), TaskError> {
        self.counters.write_records.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        for output in &mut self.outputs {
            self.parts.clear();
            output.partitioner.partition(&batch, output.channels, &mut self.parts)?;
            for (channel, part) in self.parts.drain(..) {
                let bytes = encode_batch(&part)?;
                self.counters.write_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                futures::executor::block_on(output.partition.emit(channel, bytes))
                    .map_err(|e| TaskError::new(e.to_string()))?;
            }
        }
        Ok(())
    }

    fn emit_watermark(&mut self, watermark: i64) -> Result<(), TaskError> {
        for output in &self.outputs {
            futures::executor::block_on(output.partition.broadcast_event(Event::Custom(encode_watermark(watermark))))
                .map_err(|e| TaskError::new(e.to_string()))?;
        }
        Ok(())
    }
}

/// Counts the records a sink at the end of the chain takes.
struct CountingSink {
    inner: Box<dyn Operator>,
    counters: Arc<Counters>,
}

impl Operator for CountingSink {
    fn process_batch(
        &mut self,
        input: usize,
        channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        self.counters.sink_records.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.inner.process_batch(input, channel, batch, out)
    }

    fn process_watermark(
        &mut self,
        input: usize,
        channel: usize,
        watermark: i64,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        self.inner.process_watermark(input, channel, watermark, out)
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut dyn Collector) -> Result<(), TaskError> {
        self.inner.on_processing_time(now_ms, out)
    }

    fn finish(&mut self, out: &mut dyn Collector) -> Result<(), TaskError> {
        self.inner.finish(out)
    }
}

/// The task's operators (one [`OperatorChain`]: plain calls from one to the next) and
/// the output collector after the last one.
struct Chain {
    operators: OperatorChain,
    output: OutputCollector,
}

impl Chain {
    /// A batch entering the chain at its head (input `input`, channel `channel`).
    fn push(&mut self, input: usize, channel: usize, batch: RecordBatch) -> Result<(), TaskError> {
        self.operators.process_batch(input, channel, batch, &mut self.output)
    }

    fn watermark(&mut self, input: usize, channel: usize, watermark: i64) -> Result<(), TaskError> {
        self.operators.process_watermark(input, channel, watermark, &mut self.output)
    }

    fn tick(&mut self, now_ms: i64) -> Result<(), TaskError> {
        self.operators.on_processing_time(now_ms, &mut self.output)
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        self.operators.finish(&mut self.output)
    }
}

fn partitioner_for(tdd: &TaskDeploymentDescriptor, ship: &ShipStrategy) -> Result<Box<dyn Partitioner>, TaskError> {
    match ship {
        ShipStrategy::Hash { keys } => {
            let schema = tdd
                .vertex
                .output_schema
                .as_ref()
                .ok_or_else(|| TaskError::fatal("a hash edge leaves a vertex without output schema"))?;
            Ok(Box::new(HashPartitioner::new(schema, keys, tdd.max_parallelism)?))
        }
        other => non_keyed_partitioner(other, tdd.subtask as usize, tdd.vertex.parallelism as usize),
    }
}

enum Input {
    Item(usize, usize, BufferOrEvent),
    Ended,
    Failed(String),
}

async fn execute(
    tdd: &TaskDeploymentDescriptor,
    env: &TaskEnvironment,
    cancel: &CancellationToken,
    report: &Reporter,
    counters: &Arc<Counters>,
    partitions: &mut Vec<ResultPartition>,
) -> Result<(), TaskError> {
    let vertex = &tdd.vertex;
    let mut input_channels = vec![0usize; tdd.inputs.iter().map(|g| g.input + 1).max().unwrap_or(0)];
    for gate in &tdd.inputs {
        input_channels[gate.input] += gate.channels.len();
    }
    let context = |operator_id: &str| OperatorContext {
        job_name: tdd.job_name.clone(),
        operator_id: operator_id.to_string(),
        subtask: tdd.subtask,
        parallelism: vertex.parallelism,
        max_parallelism: tdd.max_parallelism,
        input_channels: if input_channels.is_empty() { vec![1] } else { input_channels.clone() },
    };

    // Outputs first, so consumers can find our partitions early.
    let mut outputs = Vec::new();
    for out in &tdd.outputs {
        let id = PartitionId {
            job_id: tdd.job_id,
            result: vertex.id,
            edge: out.edge,
            producer_subtask: tdd.subtask,
            attempt: tdd.attempt_number,
        };
        let partition = ResultPartition::new(id, out.consumer_parallelism as usize, env.max_queued_buffers);
        env.partitions.register(&partition).map_err(|e| TaskError::new(e.to_string()))?;
        partitions.push(partition.clone());
        outputs.push(Output {
            partition,
            partitioner: partitioner_for(tdd, &out.ship)?,
            channels: out.consumer_parallelism as usize,
        });
    }

    // The chain.
    let mut source: Option<Box<dyn SourceOperator>> = None;
    let mut operators = Vec::new();
    for (i, spec) in vertex.operators.iter().enumerate() {
        let ctx = context(&spec.id);
        if i == 0 && vertex.is_source() {
            source = Some(build_source(spec, &ctx, tdd.attempt_number)?);
        } else {
            let operator = build_operator(spec, &ctx, tdd.attempt_number)?;
            let is_sink = spec.kind.role() == flint_common::job::catalog::Role::Sink;
            operators.push(if is_sink {
                Box::new(CountingSink { inner: operator, counters: counters.clone() })
            } else {
                operator
            });
        }
    }
    let mut chain = Chain {
        operators: OperatorChain::new(operators),
        output: OutputCollector { outputs, parts: Vec::new(), counters: counters.clone() },
    };

    report(TaskState::Running, None, counters.snapshot());
    let tick = Duration::from_millis(100);
    let mut last_tick = std::time::Instant::now();
    let mut last_report = std::time::Instant::now();
    // Every 100 ms: processing-time timers; every second: counts to the JobMaster.
    let mut periodic = |chain: &mut Chain, last_tick: &mut std::time::Instant| -> Result<(), TaskError> {
        if last_tick.elapsed() >= tick {
            *last_tick = std::time::Instant::now();
            chain.tick(flint_common::process::epoch_ms() as i64)?;
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = std::time::Instant::now();
                report(TaskState::Running, None, counters.snapshot());
            }
        }
        Ok(())
    };

    if let Some(mut source) = source {
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let next = tokio::select! {
                next = source.next_batch() => next?,
                _ = cancel.cancelled() => return Ok(()),
            };
            let Some(batch) = next else { break };
            chain.push(0, 0, batch)?;
            periodic(&mut chain, &mut last_tick)?;
        }
    } else {
        // One forwarder per input gate into one queue; each channel index is made unique
        // per input by offsetting with the channels of earlier gates of that input.
        let (tx, mut rx) = mpsc::channel::<Input>(4);
        let mut offsets = vec![0usize; input_channels.len()];
        let mut gates_open = 0;
        let mut schemas: Vec<SchemaRef> = Vec::new();
        for gate in &tdd.inputs {
            let specs: Vec<InputChannelSpec> = gate
                .channels
                .iter()
                .map(|c| InputChannelSpec {
                    partition: PartitionId {
                        job_id: tdd.job_id,
                        result: gate.producer_vertex,
                        edge: gate.edge,
                        producer_subtask: c.producer_subtask,
                        attempt: tdd.attempt_number,
                    },
                    subpartition: tdd.subtask,
                    location: if c.producer_resource == env.resource_id {
                        ChannelLocation::Local
                    } else {
                        ChannelLocation::Remote { data_address: c.data_address.clone() }
                    },
                })
                .collect();
            let mut input_gate = InputGate::new(specs, &env.partitions, &env.data_client, env.gate_config.clone());
            let input = gate.input;
            let offset = offsets[input];
            offsets[input] += gate.channels.len();
            let tx = tx.clone();
            gates_open += 1;
            tokio::spawn(async move {
                loop {
                    match input_gate.next().await {
                        Ok(Some((channel, item))) => {
                            if tx.send(Input::Item(input, offset + channel, item)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ = tx.send(Input::Ended).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Input::Failed(e.to_string())).await;
                            return;
                        }
                    }
                }
            });
        }
        drop(tx);
        let head_schema = vertex
            .input_schema
            .as_ref()
            .ok_or_else(|| TaskError::fatal("a vertex with network inputs has no input schema"))?;
        schemas.push(arrow_schema(head_schema));
        let schema = schemas[0].clone();
        let total_channels: usize = input_channels.iter().sum();
        let mut channel_watermarks: std::collections::BTreeMap<(usize, usize), i64> = Default::default();
        let mut current_watermark = i64::MIN;
        let head_tracks_channels = matches!(vertex.head().kind, OperatorKind::Window { .. });
        while gates_open > 0 {
            let received = tokio::select! {
                r = tokio::time::timeout(tick, rx.recv()) => r,
                _ = cancel.cancelled() => return Ok(()),
            };
            match received {
                Ok(Some(Input::Item(input, channel, BufferOrEvent::Buffer(bytes)))) => {
                    counters.read_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    let batch = decode_batch(&bytes, &schema)?;
                    counters.read_records.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    chain.push(input, channel, batch)?;
                }
                Ok(Some(Input::Item(input, channel, BufferOrEvent::Event(Event::Custom(bytes))))) => {
                    // A window at the head tracks watermarks per channel itself; any other
                    // head sees one watermark: the minimum over every channel, and only
                    // when it advances.
                    if let (Some(watermark), true) = (decode_watermark(&bytes), head_tracks_channels) {
                        chain.watermark(input, channel, watermark)?;
                    } else if let Some(watermark) = decode_watermark(&bytes) {
                        let slot = channel_watermarks.entry((input, channel)).or_insert(i64::MIN);
                        *slot = (*slot).max(watermark);
                        if channel_watermarks.len() == total_channels {
                            let combined = channel_watermarks.values().copied().min().unwrap_or(i64::MIN);
                            if combined > current_watermark {
                                current_watermark = combined;
                                chain.watermark(0, 0, combined)?;
                            }
                        }
                    }
                }
                Ok(Some(Input::Item(_, _, BufferOrEvent::Event(_)))) => {}
                Ok(Some(Input::Ended)) => gates_open -= 1,
                Ok(Some(Input::Failed(e))) => return Err(TaskError::new(format!("reading input failed: {e}"))),
                Ok(None) => break,
                Err(_) => {}
            }
            periodic(&mut chain, &mut last_tick)?;
        }
    }
    if cancel.is_cancelled() {
        return Ok(());
    }
    chain.finish()?;
    for output in &chain.output.outputs {
        output.partition.finish().await.map_err(|e| TaskError::new(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_round_trip_and_other_events_are_not_watermarks() {
        for wm in [i64::MIN, -1, 0, 1_795_216_169_449, i64::MAX] {
            assert_eq!(decode_watermark(&encode_watermark(wm)), Some(wm));
        }
        assert_eq!(decode_watermark(b"\x02\x00\x00\x00\x00\x00\x00\x00\x00"), None);
        assert_eq!(decode_watermark(b"\x01\x00"), None);
    }
}
