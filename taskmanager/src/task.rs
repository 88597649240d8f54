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

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flint_common::checkpoint_storage::{state_file_name, write_state_file_in};
use flint_common::ids::ResourceId;
use flint_common::job::catalog::OperatorKind;
use flint_common::job::plan::ShipStrategy;
use flint_common::messages::{
    CheckpointBarrierInfo, FileCommit, GroupedMetric, MetricDump, TaskCheckpointState, TaskDeploymentDescriptor,
    TaskFailure, TaskMetrics, TaskState,
};
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
use crate::runtime::operator::{Collector, Operator, OperatorContext, SourceMetrics, SourceOperator, TaskError};
use crate::runtime::partition::{non_keyed_partitioner, Partitioner};
use crate::runtime::schema::arrow_schema;
use crate::runtime::transforms::OperatorChain;
use crate::state::{encode_task_state, restore_stores, OperatorStateSnapshot, StateStore};
use crate::task_metrics::{Idle, InputQueue, Metered, OperatorIo, TaskIo, TaskMeter};

/// What every task of a TaskExecutor shares.
pub struct TaskEnvironment {
    pub resource_id: ResourceId,
    pub partitions: PartitionManager,
    pub data_client: DataClient,
    pub gate_config: GateConfig,
    pub max_queued_buffers: usize,
    /// The taskmanager's metrics and its tasks' latest ones.
    pub metrics: Arc<crate::tm_metrics::TaskManagerMetrics>,
    /// Where the tasks' job artifacts are written.
    pub artifacts: crate::artifacts::ArtifactStore,
    /// The taskmanager's `wasm.memory.max` and `wasm.call.timeout`.
    pub wasm_limits: flint_wasm::Limits,
    /// The taskmanager's `flint.io.allowed-paths`, checked again when a task starts.
    pub allowed_paths: flint_common::io_paths::AllowedPaths,
}

impl TaskEnvironment {
    /// The WebAssembly limits of a job: its own `wasm.*` keys over the taskmanager's. The
    /// JobMaster refused jobs whose values do not parse, so a bad one falls back quietly.
    pub fn wasm_limits_for(&self, job_config: &std::collections::BTreeMap<String, String>) -> flint_wasm::Limits {
        wasm_limits(job_config.iter(), self.wasm_limits)
    }
}

/// `wasm.memory.max` and `wasm.call.timeout` from `entries`, else from `base`.
pub fn wasm_limits<'a>(
    entries: impl Iterator<Item = (&'a String, &'a String)>,
    base: flint_wasm::Limits,
) -> flint_wasm::Limits {
    use flint_common::config::{options, Configuration};
    let mut config = Configuration::new();
    for (k, v) in entries.filter(|(k, _)| k.starts_with("wasm.")) {
        config.set(k.clone(), v.clone());
    }
    flint_wasm::Limits {
        memory_max: config
            .get_optional(&options::WASM_MEMORY_MAX)
            .ok()
            .flatten()
            .map_or(base.memory_max, |m| m.bytes()),
        call_timeout: config.get_optional(&options::WASM_CALL_TIMEOUT).ok().flatten().unwrap_or(base.call_timeout),
    }
}

/// What a task tells its TaskExecutor (which forwards it to the JobMaster).
#[derive(Debug)]
pub enum TaskEvent {
    /// A state change, with the failure cause, the counts so far and, for FINISHED, the
    /// output the JobMaster commits when the job finished.
    State {
        state: TaskState,
        failure: Option<TaskFailure>,
        metrics: TaskMetrics,
        accumulators: Vec<(String, u64)>,
        commits: Vec<FileCommit>,
    },
    /// The task wrote its part of a checkpoint.
    CheckpointAck { checkpoint_id: u64, state: TaskCheckpointState },
    /// The task could not take a checkpoint (`uncounted`: for a reason that is no
    /// checkpointing failure).
    CheckpointDecline { checkpoint_id: u64, reason: String, uncounted: bool },
}

/// Receives a task's [`TaskEvent`]s.
pub type Reporter = Box<dyn Fn(TaskEvent) + Send>;

/// What a TaskExecutor tells a running task.
#[derive(Clone, Debug)]
pub enum TaskCommand {
    /// Source tasks: inject this barrier (and snapshot).
    TriggerCheckpoint(CheckpointBarrierInfo),
    /// A checkpoint completed (`true`) or was aborted; `final_checkpoint`: it is the job's
    /// final checkpoint (see [`TaskDeploymentDescriptor::final_checkpoint`]).
    NotifyCheckpoint { checkpoint_id: u64, completed: bool, final_checkpoint: bool },
}

/// A running task.
pub struct TaskHandle {
    cancel: CancellationToken,
    commands: mpsc::UnboundedSender<TaskCommand>,
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

    /// Hands the task a command; `false` when it no longer runs.
    pub fn command(&self, command: TaskCommand) -> bool {
        self.commands.send(command).is_ok()
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

const WATERMARK_TAG: u8 = 0x01;
const BARRIER_TAG: u8 = 0x02;
/// Flink's `EndOfData`: the producer's input ended and its operators finished; it stays
/// for the final checkpoint before it ends its partition.
const END_OF_DATA_TAG: u8 = 0x03;

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

fn encode_barrier(barrier: &CheckpointBarrierInfo) -> Bytes {
    let mut v = vec![BARRIER_TAG];
    v.extend_from_slice(&rmp_serde::to_vec(barrier).expect("a barrier serializes"));
    Bytes::from(v)
}

fn decode_barrier(bytes: &[u8]) -> Option<CheckpointBarrierInfo> {
    match bytes {
        [BARRIER_TAG, rest @ ..] => rmp_serde::from_slice(rest).ok(),
        _ => None,
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
    // Unbounded on purpose: the TaskExecutor forwards the JobMaster's checkpoint triggers
    // and notifications, at most `max-concurrent-checkpoints` pending ones plus their
    // notifications; a frame flood cannot reach it (RPC requests per connection are bounded).
    let (commands, rx) = mpsc::unbounded_channel();
    // A thread name with a NUL byte would panic the spawning thread (the TaskExecutor).
    let short: String = tdd.vertex.name.chars().filter(|c| *c != '\0').take(16).collect();
    let name = format!("task-{short}-{}", tdd.subtask);
    let thread = std::thread::Builder::new().name(name).spawn(move || run(tdd, env, token, rx, report))?;
    Ok(TaskHandle { cancel, commands, thread: Some(thread) })
}

fn state_event(state: TaskState, failure: Option<TaskFailure>, metrics: TaskMetrics) -> TaskEvent {
    TaskEvent::State { state, failure, metrics, accumulators: Vec::new(), commits: Vec::new() }
}

/// `flint.io.allowed-paths` once more, as the task is about to open its files: the
/// jobmanager checked at submission, but a link may have been made since, and relative
/// paths are this process's. The job's own package files (under the artifact directory)
/// are allowed to its `source.file` operators. A refusal fails the task for good.
fn check_paths(tdd: &TaskDeploymentDescriptor, env: &TaskEnvironment) -> Result<(), String> {
    use flint_common::job::OperatorKind;
    let allowed = &env.allowed_paths;
    if !allowed.is_restricted() {
        return Ok(());
    }
    let with_package = allowed.with_root(&env.artifacts.job_dir(tdd.job_id));
    for op in &tdd.vertex.operators {
        let roots = if matches!(op.kind, OperatorKind::FileSource { .. }) { &with_package } else { allowed };
        for (field, path) in flint_common::io_paths::operator_paths(&op.kind, |_| false) {
            roots
                .allows(Path::new(path))
                .map_err(|r| format!("operator '{}': {}", op.id, allowed.message(r, &field, path)))?;
        }
    }
    Ok(())
}

fn run(
    mut tdd: TaskDeploymentDescriptor,
    env: Arc<TaskEnvironment>,
    cancel: CancellationToken,
    commands: mpsc::UnboundedReceiver<TaskCommand>,
    report: Reporter,
) {
    let io = Arc::new(TaskIo::default());
    // The flame graph sampler tells this thread's samples apart by its pthread id.
    env.metrics.task_thread(tdd.attempt_id, nix::sys::pthread::pthread_self() as u64);
    report(state_event(TaskState::Initializing, None, TaskMetrics::default()));
    if let Err(e) = env.artifacts.materialize(&mut tdd) {
        let failure =
            TaskFailure { message: format!("could not provide the job's artifacts: {e}"), retryable: e.is_retryable() };
        report(state_event(TaskState::Failed, Some(failure), TaskMetrics::default()));
        return;
    }
    if let Err(message) = check_paths(&tdd, &env) {
        report(state_event(TaskState::Failed, Some(TaskFailure::permanent(message)), TaskMetrics::default()));
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let cause = format!("could not start the task runtime: {e}");
            report(state_event(TaskState::Failed, Some(TaskFailure::retryable(cause)), io.counts()));
            return;
        }
    };
    let mut task = TaskRun {
        tdd: &tdd,
        env: &env,
        cancel: &cancel,
        report: &report,
        io: io.clone(),
        meter: None,
        input_queue: InputQueue::default(),
        partitions: Vec::new(),
        commands,
        last_barrier: 0,
        stop: None,
        input_ended: false,
        final_done: false,
    };
    let result = runtime.block_on(task.execute());
    let partitions = std::mem::take(&mut task.partitions);
    let name = format!("{} ({}/{})", tdd.vertex.name, tdd.subtask + 1, tdd.vertex.parallelism);
    match result {
        _ if cancel.is_cancelled() => {
            for p in &partitions {
                p.fail("the producing task was canceled");
            }
            info!(task = name, attempt = %tdd.attempt_id, "task canceled");
            report(state_event(TaskState::Canceled, None, io.counts()));
        }
        Ok(end) => {
            info!(task = name, attempt = %tdd.attempt_id, "task finished");
            report(TaskEvent::State {
                state: TaskState::Finished,
                failure: None,
                metrics: io.counts(),
                accumulators: end.accumulators,
                commits: end.commits,
            });
        }
        Err(e) => {
            for p in &partitions {
                p.fail(format!("the producing task failed: {}", e.message));
            }
            warn!(task = name, attempt = %tdd.attempt_id, error = %e.message, "task failed");
            let failure = TaskFailure { message: format!("{name} failed: {}", e.message), retryable: e.retryable };
            report(state_event(TaskState::Failed, Some(failure), io.counts()));
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
    io: Arc<TaskIo>,
}

impl Collector for OutputCollector {
    fn collect(&mut self, batch: RecordBatch) -> Result<(), TaskError> {
        self.io.write_records.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        for output in &mut self.outputs {
            self.parts.clear();
            output.partitioner.partition(&batch, output.channels, &mut self.parts)?;
            for (channel, part) in self.parts.drain(..) {
                let bytes = encode_batch(&part)?;
                self.io.write_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                futures::executor::block_on(output.partition.emit(channel, bytes))
                    .map_err(|e| TaskError::new(e.to_string()))?;
            }
        }
        Ok(())
    }

    fn emit_watermark(&mut self, watermark: i64) -> Result<(), TaskError> {
        self.broadcast(Event::Custom(encode_watermark(watermark)))
    }
}

impl OutputCollector {
    fn broadcast_barrier(&mut self, barrier: &CheckpointBarrierInfo) -> Result<(), TaskError> {
        self.broadcast(Event::Custom(encode_barrier(barrier)))
    }

    fn broadcast_end_of_data(&mut self) -> Result<(), TaskError> {
        self.broadcast(Event::Custom(Bytes::from_static(&[END_OF_DATA_TAG])))
    }

    fn broadcast(&mut self, event: Event) -> Result<(), TaskError> {
        for output in &self.outputs {
            futures::executor::block_on(output.partition.broadcast_event(event.clone()))
                .map_err(|e| TaskError::new(e.to_string()))?;
        }
        Ok(())
    }
}

/// The task's operators: the source (source tasks), the chained operators (one
/// [`OperatorChain`]: plain calls from one to the next) and the output collector.
struct Chain {
    source: Option<Box<dyn SourceOperator>>,
    operators: OperatorChain,
    output: OutputCollector,
    /// Operator ids in chain order, the source first.
    ids: Vec<String>,
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
        self.source_watermark()?;
        self.operators.on_processing_time(now_ms, &mut self.output)
    }

    /// Passes on the source's own watermark when it advanced.
    fn source_watermark(&mut self) -> Result<(), TaskError> {
        match self.source.as_mut().and_then(|s| s.watermark()) {
            Some(watermark) => self.watermark(0, 0, watermark),
            None => Ok(()),
        }
    }

    /// The end of the input: the operators emit what is left (windows fire).
    /// `final_checkpoint`: a checkpoint follows and commits what is still uncommitted.
    fn finish(&mut self, final_checkpoint: bool) -> Result<(), TaskError> {
        if final_checkpoint {
            for operator in self.operators.operators_mut() {
                operator.expect_final_checkpoint();
            }
        }
        self.operators.finish(&mut self.output)
    }

    /// The task ends well: every operator waits for what is still underway.
    fn close(&mut self) -> Result<(), TaskError> {
        for operator in self.operators.operators_mut() {
            operator.close()?;
        }
        Ok(())
    }

    /// Every operator's state, in chain order.
    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        tdd: &TaskDeploymentDescriptor,
    ) -> Result<Vec<OperatorStateSnapshot>, TaskError> {
        let new_store = || StateStore::new(tdd.subtask, tdd.vertex.parallelism, tdd.max_parallelism);
        let mut snapshots = Vec::with_capacity(self.ids.len());
        let mut ids = self.ids.iter();
        let mut keep = |store: StateStore, id: Option<&String>| {
            let (keyed, operator) = store.snapshot();
            let operator_id = id.cloned().unwrap_or_default();
            snapshots.push(OperatorStateSnapshot { operator_id, keyed, operator });
        };
        if let Some(source) = &mut self.source {
            let mut store = new_store();
            source.snapshot_state(checkpoint_id, &mut store)?;
            keep(store, ids.next());
        }
        for operator in self.operators.operators_mut() {
            let mut store = new_store();
            operator.snapshot_state(checkpoint_id, &mut store)?;
            keep(store, ids.next());
        }
        Ok(snapshots)
    }

    /// Gives every operator its restored state (`stores` in chain order).
    fn restore(&mut self, stores: Vec<StateStore>) -> Result<(), TaskError> {
        let mut stores = stores.into_iter();
        if let Some(source) = &mut self.source {
            if let Some(mut store) = stores.next() {
                source.restore_state(&mut store)?;
            }
        }
        for (operator, mut store) in self.operators.operators_mut().iter_mut().zip(stores) {
            operator.restore_state(&mut store)?;
        }
        Ok(())
    }

    fn notify_complete(&mut self, checkpoint_id: u64) -> Result<(), TaskError> {
        if let Some(source) = &mut self.source {
            source.notify_checkpoint_complete(checkpoint_id)?;
        }
        for operator in self.operators.operators_mut() {
            operator.notify_checkpoint_complete(checkpoint_id)?;
        }
        Ok(())
    }

    fn accumulators(&mut self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        if let Some(source) = &self.source {
            source.accumulators(&mut out);
        }
        for operator in self.operators.operators_mut() {
            operator.accumulators(&mut out);
        }
        out
    }

    /// Adds the source's own metrics to the source operator's (the first of the dump).
    fn source_metrics(&self, dump: &mut MetricDump) {
        let (Some(source), Some((operator, metrics))) = (&self.source, dump.operators.first_mut()) else { return };
        let mut out = SourceMetrics::default();
        source.metrics(&mut out);
        metrics.extend(out.gauges);
        dump.grouped.extend(out.grouped.into_iter().map(|m| GroupedMetric { operator: operator.clone(), ..m }));
    }

    fn final_commits(&mut self) -> Vec<FileCommit> {
        self.operators.operators_mut().iter_mut().flat_map(|o| o.final_commits()).collect()
    }
}

/// Barriers seen so far of the checkpoint being aligned, and what the blocked channels
/// delivered meanwhile.
struct Alignment {
    barrier: CheckpointBarrierInfo,
    started: Instant,
    /// Channels that delivered the barrier: their later input waits.
    blocked: HashSet<(usize, usize)>,
    buffered: VecDeque<(usize, usize, BufferOrEvent)>,
}

/// How a task ended well: what the FINISHED report carries.
struct TaskEnd {
    accumulators: Vec<(String, u64)>,
    commits: Vec<FileCommit>,
}

/// What a task waits for next.
enum Step<T> {
    Canceled,
    Command(Option<TaskCommand>),
    Next(T),
}

/// One running task.
struct TaskRun<'a> {
    tdd: &'a TaskDeploymentDescriptor,
    env: &'a TaskEnvironment,
    cancel: &'a CancellationToken,
    report: &'a Reporter,
    io: Arc<TaskIo>,
    /// Set once the chain is built.
    meter: Option<TaskMeter>,
    /// The input queue as last seen by the input loop.
    input_queue: InputQueue,
    partitions: Vec<ResultPartition>,
    commands: mpsc::UnboundedReceiver<TaskCommand>,
    /// The newest checkpoint this task took part in.
    last_barrier: u64,
    /// Set by a stop-with-savepoint barrier: `Some(drain)`.
    stop: Option<bool>,
    /// Every input ended and the operators finished (Flink's end of data).
    input_ended: bool,
    /// The job's final checkpoint completed: the task may end.
    final_done: bool,
}

const TICK: Duration = Duration::from_millis(100);

impl TaskRun<'_> {
    fn report_running(&mut self, chain: &mut Chain) {
        let mut metrics = match &mut self.meter {
            Some(meter) => meter.measure(&self.partitions, self.input_queue),
            None => self.io.counts(),
        };
        chain.source_metrics(&mut metrics.dump);
        (self.report)(TaskEvent::State {
            state: TaskState::Running,
            failure: None,
            metrics,
            accumulators: chain.accumulators(),
            commits: Vec::new(),
        });
    }

    /// Every 100 ms: processing-time timers; every second: metrics to the JobMaster.
    fn periodic(
        &mut self,
        chain: &mut Chain,
        last_tick: &mut Instant,
        last_report: &mut Instant,
    ) -> Result<(), TaskError> {
        if last_tick.elapsed() >= TICK {
            *last_tick = Instant::now();
            chain.tick(flint_common::process::epoch_ms() as i64)?;
            if last_report.elapsed() >= Duration::from_secs(1) {
                *last_report = Instant::now();
                self.report_running(chain);
            }
        }
        Ok(())
    }

    /// Takes checkpoint `barrier`: snapshots every operator, passes the barrier on, writes
    /// the state file and acknowledges (or declines) to the JobMaster.
    fn checkpoint(
        &mut self,
        chain: &mut Chain,
        barrier: &CheckpointBarrierInfo,
        alignment: Duration,
    ) -> Result<(), TaskError> {
        let started = Instant::now();
        // From the trigger to the first barrier reaching this task (alignment excluded).
        let since_trigger =
            Duration::from_millis(flint_common::process::epoch_ms().saturating_sub(barrier.timestamp_ms));
        let start_delay = since_trigger.saturating_sub(alignment);
        self.io.checkpoint_start_delay_nanos.store(start_delay.as_nanos() as u64, Ordering::Relaxed);
        self.last_barrier = self.last_barrier.max(barrier.checkpoint_id);
        let snapshot = chain.snapshot(barrier.checkpoint_id, self.tdd);
        // Downstream gets the barrier even when the snapshot failed: it must not wait for it.
        chain.output.broadcast_barrier(barrier)?;
        if barrier.terminate {
            self.stop = Some(barrier.drain);
        }
        let written = snapshot.map_err(|e| e.message).and_then(|operators| {
            if operators.iter().all(OperatorStateSnapshot::is_empty) {
                return Ok((None, 0));
            }
            let bytes = encode_task_state(&operators);
            let dir = Path::new(&barrier.directory);
            let name = state_file_name(&chain.ids[0], self.tdd.subtask);
            let handle = write_state_file_in(dir, &name, &bytes).map_err(|e| e.to_string())?;
            Ok((Some(dir.join(&handle.path).to_string_lossy().into_owned()), handle.size))
        });
        let event = match written {
            Ok((file, size_bytes)) => TaskEvent::CheckpointAck {
                checkpoint_id: barrier.checkpoint_id,
                state: TaskCheckpointState {
                    file,
                    size_bytes,
                    alignment_ms: alignment.as_millis() as u64,
                    duration_ms: started.elapsed().as_millis() as u64,
                    end_of_input: self.input_ended,
                },
            },
            Err(reason) => {
                warn!(checkpoint = barrier.checkpoint_id, reason, "declining checkpoint");
                TaskEvent::CheckpointDecline { checkpoint_id: barrier.checkpoint_id, reason, uncounted: false }
            }
        };
        (self.report)(event);
        Ok(())
    }

    fn command(&mut self, chain: &mut Chain, command: TaskCommand) -> Result<(), TaskError> {
        match command {
            TaskCommand::TriggerCheckpoint(barrier) if chain.source.is_some() => {
                if barrier.checkpoint_id > self.last_barrier && self.stop.is_none() {
                    self.checkpoint(chain, &barrier, Duration::ZERO)?;
                }
            }
            TaskCommand::TriggerCheckpoint(barrier) => {
                (self.report)(TaskEvent::CheckpointDecline {
                    checkpoint_id: barrier.checkpoint_id,
                    reason: "only source tasks are triggered".to_string(),
                    uncounted: false,
                });
            }
            TaskCommand::NotifyCheckpoint { checkpoint_id, completed: true, final_checkpoint } => {
                chain.notify_complete(checkpoint_id)?;
                if final_checkpoint && self.input_ended {
                    self.final_done = true;
                }
            }
            TaskCommand::NotifyCheckpoint { completed: false, .. } => {}
        }
        Ok(())
    }

    /// Runs the task; `Ok` when it finished (or was canceled: see the token).
    async fn execute(&mut self) -> Result<TaskEnd, TaskError> {
        let canceled = || Ok(TaskEnd { accumulators: Vec::new(), commits: Vec::new() });
        let (tdd, env) = (self.tdd, self.env);
        let vertex = &tdd.vertex;
        let mut input_channels = vec![0usize; tdd.inputs.iter().map(|g| g.input + 1).max().unwrap_or(0)];
        for gate in &tdd.inputs {
            input_channels[gate.input] += gate.channels.len();
        }
        let wasm_limits = env.wasm_limits_for(&tdd.job_config);
        let context = |operator_id: &str| OperatorContext {
            job_name: tdd.job_name.clone(),
            operator_id: operator_id.to_string(),
            subtask: tdd.subtask,
            parallelism: vertex.parallelism,
            max_parallelism: tdd.max_parallelism,
            input_channels: if input_channels.is_empty() { vec![1] } else { input_channels.clone() },
            wasm_limits,
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
            self.partitions.push(partition.clone());
            outputs.push(Output {
                partition,
                partitioner: partitioner_for(tdd, &out.ship)?,
                channels: out.consumer_parallelism as usize,
            });
        }

        // The chain.
        let mut source: Option<Box<dyn SourceOperator>> = None;
        let mut operators: Vec<Box<dyn Operator>> = Vec::new();
        let mut metered: Vec<(String, Arc<OperatorIo>)> = Vec::new();
        for (i, spec) in vertex.operators.iter().enumerate() {
            let ctx = context(&spec.id);
            let io = Arc::new(OperatorIo::default());
            metered.push((spec.id.clone(), io.clone()));
            if i == 0 && vertex.is_source() {
                source = Some(build_source(spec, &ctx, tdd.attempt_number)?);
            } else {
                let mut operator = Metered::new(build_operator(spec, &ctx, tdd.attempt_number)?, io);
                if i == 0 {
                    operator = operator.head_of(self.io.clone());
                }
                if spec.kind.role() == flint_common::job::catalog::Role::Sink {
                    operator = operator.sink_of(self.io.clone());
                }
                operators.push(Box::new(operator));
            }
        }
        let source_io = vertex.is_source().then(|| metered[0].1.clone());
        self.meter = Some(TaskMeter::new(self.io.clone(), metered, !vertex.is_source()));
        let mut chain = Chain {
            source,
            operators: OperatorChain::new(operators),
            output: OutputCollector { outputs, parts: Vec::new(), io: self.io.clone() },
            ids: vertex.operators.iter().map(|o| o.id.clone()).collect(),
        };
        if let Some(restore) = &tdd.restore {
            let stores = restore_stores(
                Path::new(&restore.location),
                &chain.ids,
                tdd.subtask,
                vertex.parallelism,
                tdd.max_parallelism,
            )
            .map_err(|e| TaskError::new(format!("restoring from checkpoint {}: {e}", restore.checkpoint_id)))?;
            chain.restore(stores)?;
            self.last_barrier = restore.checkpoint_id;
            info!(task = %vertex.name, subtask = tdd.subtask, checkpoint = restore.checkpoint_id, "state restored");
        }

        if let Some(meter) = &mut self.meter {
            meter.running();
        }
        self.report_running(&mut chain);
        let mut last_tick = Instant::now();
        let mut last_report = Instant::now();

        if chain.source.is_some() {
            while self.stop.is_none() {
                let step = {
                    let source = chain.source.as_mut().expect("checked above");
                    tokio::select! {
                        biased;
                        _ = self.cancel.cancelled() => Step::Canceled,
                        command = self.commands.recv() => Step::Command(command),
                        next = Idle::new(source.next_batch(), &self.io) => Step::Next(next),
                    }
                };
                match step {
                    Step::Canceled | Step::Command(None) => return canceled(),
                    Step::Command(Some(command)) => self.command(&mut chain, command)?,
                    Step::Next(next) => {
                        let Some(batch) = next? else {
                            if tdd.final_checkpoint {
                                self.end_input(&mut chain)?;
                                self.await_final_checkpoint(&mut chain, &mut last_tick, &mut last_report).await?;
                            }
                            break;
                        };
                        if let Some(io) = &source_io {
                            io.records_out.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                        }
                        chain.push(0, 0, batch)?;
                        chain.source_watermark()?;
                    }
                }
                self.periodic(&mut chain, &mut last_tick, &mut last_report)?;
            }
        } else {
            self.read_inputs(&mut chain, &input_channels, &mut last_tick, &mut last_report).await?;
        }
        if self.cancel.is_cancelled() {
            return canceled();
        }
        // Stop-with-savepoint without drain ends without the operators' end of input.
        if self.stop != Some(false) && !self.input_ended {
            chain.finish(false)?;
        }
        chain.close()?;
        let end = TaskEnd { accumulators: chain.accumulators(), commits: chain.final_commits() };
        for output in &chain.output.outputs {
            output.partition.finish().await.map_err(|e| TaskError::new(e.to_string()))?;
        }
        Ok(end)
    }

    /// The end of the input when a final checkpoint follows: the operators finish, and
    /// downstream learns that no more data comes (before any later barrier).
    fn end_input(&mut self, chain: &mut Chain) -> Result<(), TaskError> {
        chain.finish(true)?;
        chain.output.broadcast_end_of_data()?;
        self.input_ended = true;
        Ok(())
    }

    /// After [`TaskRun::end_input`]: the task stays, takes part in checkpoints and ends
    /// once the job's final checkpoint completed (or a stop-with-savepoint came).
    async fn await_final_checkpoint(
        &mut self,
        chain: &mut Chain,
        last_tick: &mut Instant,
        last_report: &mut Instant,
    ) -> Result<(), TaskError> {
        while !self.final_done && self.stop.is_none() {
            let step = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Step::Canceled,
                command = self.commands.recv() => Step::Command(command),
                _ = tokio::time::sleep(TICK) => Step::Next(()),
            };
            match step {
                Step::Canceled | Step::Command(None) => return Ok(()),
                Step::Command(Some(command)) => self.command(chain, command)?,
                Step::Next(()) => {}
            }
            self.periodic(chain, last_tick, last_report)?;
        }
        Ok(())
    }

    /// The input loop of a task with network inputs: decodes buffers into the chain,
    /// combines watermarks and aligns checkpoint barriers.
    async fn read_inputs(
        &mut self,
        chain: &mut Chain,
        input_channels: &[usize],
        last_tick: &mut Instant,
        last_report: &mut Instant,
    ) -> Result<(), TaskError> {
        let (tdd, env) = (self.tdd, self.env);
        let vertex = &tdd.vertex;
        // One forwarder per input gate into one queue; each channel index is made unique
        // per input by offsetting with the channels of earlier gates of that input.
        let (tx, mut rx) = mpsc::channel::<Input>(4);
        let mut offsets = vec![0usize; input_channels.len()];
        let mut gates_open = 0;
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
        let schema: SchemaRef = arrow_schema(head_schema);
        let total_channels: usize = input_channels.iter().sum();
        let mut channel_watermarks: std::collections::BTreeMap<(usize, usize), i64> = Default::default();
        let mut current_watermark = i64::MIN;
        let head_tracks_channels =
            matches!(vertex.head().kind, OperatorKind::Window { .. } | OperatorKind::WasmProcess { .. });
        let mut ended: HashSet<(usize, usize)> = HashSet::new();
        // Channels whose producer's data ended (EndOfData or the partition's end).
        let mut data_ended: HashSet<(usize, usize)> = HashSet::new();
        let mut alignment: Option<Alignment> = None;
        let mut replay: VecDeque<(usize, usize, BufferOrEvent)> = VecDeque::new();
        while gates_open > 0 || !replay.is_empty() {
            let (input, channel, item) = if let Some(item) = replay.pop_front() {
                item
            } else {
                let step = {
                    let recv = tokio::time::timeout(TICK, rx.recv());
                    tokio::pin!(recv);
                    tokio::select! {
                        biased;
                        _ = self.cancel.cancelled() => Step::Canceled,
                        command = self.commands.recv() => Step::Command(command),
                        r = Idle::new(recv.as_mut(), &self.io) => Step::Next(r),
                    }
                };
                self.input_queue = InputQueue { queued: rx.len(), capacity: rx.max_capacity() };
                let received = match step {
                    Step::Canceled | Step::Command(None) => return Ok(()),
                    Step::Command(Some(command)) => {
                        self.command(chain, command)?;
                        continue;
                    }
                    Step::Next(received) => received,
                };
                match received {
                    Ok(Some(Input::Item(input, channel, item))) => (input, channel, item),
                    Ok(Some(Input::Ended)) => {
                        gates_open -= 1;
                        continue;
                    }
                    Ok(Some(Input::Failed(e))) => return Err(TaskError::new(format!("reading input failed: {e}"))),
                    Ok(None) => break,
                    Err(_) => {
                        self.periodic(chain, last_tick, last_report)?;
                        continue;
                    }
                }
            };
            if let Some(a) = &mut alignment {
                if a.blocked.contains(&(input, channel)) {
                    a.buffered.push_back((input, channel, item));
                    continue;
                }
            }
            match item {
                BufferOrEvent::Buffer(bytes) => {
                    self.io.read_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    let batch = decode_batch(&bytes, &schema)?;
                    self.io.read_records.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    chain.push(input, channel, batch)?;
                }
                BufferOrEvent::Event(Event::Custom(bytes)) if bytes[..] == [END_OF_DATA_TAG] => {
                    data_ended.insert((input, channel));
                }
                BufferOrEvent::Event(Event::Custom(bytes)) => {
                    if let Some(barrier) = decode_barrier(&bytes) {
                        let id = barrier.checkpoint_id;
                        if id <= self.last_barrier || alignment.as_ref().is_some_and(|a| a.barrier.checkpoint_id > id) {
                            continue; // an older checkpoint, given up already
                        }
                        if alignment.as_ref().is_some_and(|a| a.barrier.checkpoint_id < id) {
                            // A newer checkpoint overtook the one being aligned: give that up.
                            let old = alignment.take().expect("checked above");
                            (self.report)(TaskEvent::CheckpointDecline {
                                checkpoint_id: old.barrier.checkpoint_id,
                                reason: format!("the barrier of checkpoint {id} arrived before alignment completed"),
                                uncounted: true,
                            });
                            for item in old.buffered.into_iter().rev() {
                                replay.push_front(item);
                            }
                        }
                        alignment
                            .get_or_insert_with(|| Alignment {
                                barrier,
                                started: Instant::now(),
                                blocked: HashSet::new(),
                                buffered: VecDeque::new(),
                            })
                            .blocked
                            .insert((input, channel));
                    } else if let Some(watermark) = decode_watermark(&bytes) {
                        // The task's input watermark is the minimum over every channel. A
                        // window at the head tracks watermarks per channel itself; any other
                        // head sees that minimum, and only when it advances.
                        let slot = channel_watermarks.entry((input, channel)).or_insert(i64::MIN);
                        *slot = (*slot).max(watermark);
                        let combined = if channel_watermarks.len() == total_channels {
                            channel_watermarks.values().copied().min().unwrap_or(i64::MIN)
                        } else {
                            i64::MIN
                        };
                        self.io.input_watermark.fetch_max(combined, Ordering::Relaxed);
                        if head_tracks_channels {
                            chain.watermark(input, channel, watermark)?;
                        } else if combined > current_watermark {
                            current_watermark = combined;
                            chain.watermark(0, 0, combined)?;
                        }
                    }
                }
                BufferOrEvent::Event(Event::EndOfPartition) => {
                    ended.insert((input, channel));
                    data_ended.insert((input, channel));
                }
            }
            if tdd.final_checkpoint && !self.input_ended && self.stop.is_none() && data_ended.len() >= total_channels {
                self.end_input(chain)?;
            }
            // Aligned once every channel delivered the barrier or ended.
            let aligned = alignment.as_ref().is_some_and(|a| {
                a.blocked.len() + ended.iter().filter(|c| !a.blocked.contains(c)).count() >= total_channels
            });
            if aligned {
                let a = alignment.take().expect("checked above");
                self.checkpoint(chain, &a.barrier, a.started.elapsed())?;
                for item in a.buffered.into_iter().rev() {
                    replay.push_front(item);
                }
            }
            self.periodic(chain, last_tick, last_report)?;
        }
        if self.input_ended {
            self.await_final_checkpoint(chain, last_tick, last_report).await?;
        }
        Ok(())
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
