//! Every message that crosses a process boundary, and the typed gateways that send them.
//!
//! Messages are grouped by the endpoint that receives them. Each is declared with
//! [`rpc_message!`](crate::rpc_message), which fixes its reply type and whether a fenced
//! endpoint checks the sender's fencing token. Callers use the gateways at the end of
//! this module; nobody builds frames by hand.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::ids::{
    AllocationId, ExecutionAttemptId, InstanceId, JobId, JobVertexId, LeaderSessionId, ResourceId, SlotId,
};
use crate::job::plan::{JobVertex, ShipStrategy};
use crate::resources::{ResourceProfile, SlotReport};
use crate::rpc::{RpcAddress, RpcError, RpcMessage, RpcService};
use crate::rpc_message;

/// Endpoint names.
pub mod endpoints {
    pub const RESOURCE_MANAGER: &str = "resourcemanager";
    pub const DISPATCHER: &str = "dispatcher";
    pub const TASK_EXECUTOR: &str = "taskmanager";
}

// ---------------------------------------------------------------------------------
// Leader discovery (any leader-elected endpoint)

/// Asks an endpoint for its current leader session. Unfenced: this is how a peer learns
/// the token to put on fenced messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentifyLeader {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// `None` while the endpoint is not leader.
    pub leader_session_id: Option<LeaderSessionId>,
    pub protocol_version: u16,
}

rpc_message!(unfenced IdentifyLeader => LeaderInfo);

// ---------------------------------------------------------------------------------
// TaskExecutor → ResourceManager

/// The machine a TaskExecutor runs on (the REST API's `hardware`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HardwareDescription {
    pub cpu_cores: u32,
    pub physical_memory: u64,
    pub free_memory: u64,
    pub managed_memory: u64,
}

/// A TaskExecutor's memory budget in bytes (the REST API's `memoryConfiguration`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskExecutorMemoryConfiguration {
    pub framework_heap: u64,
    pub task_heap: u64,
    pub framework_off_heap: u64,
    pub task_off_heap: u64,
    pub network_memory: u64,
    pub managed_memory: u64,
    pub jvm_metaspace: u64,
    pub jvm_overhead: u64,
    pub total_flink_memory: u64,
    pub total_process_memory: u64,
}

/// Registration of a TaskExecutor at the ResourceManager, with its initial slot report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisterTaskExecutor {
    pub protocol_version: u16,
    pub resource_id: ResourceId,
    /// Where the TaskExecutor's endpoint is reached.
    pub address: RpcAddress,
    pub data_port: u16,
    pub hardware: HardwareDescription,
    pub memory: TaskExecutorMemoryConfiguration,
    pub total_resource: ResourceProfile,
    pub default_slot_resource: ResourceProfile,
    pub slot_report: SlotReport,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RegistrationResponse {
    Success { instance_id: InstanceId, heartbeat_interval_ms: u64 },
    Rejected { reason: String },
}

rpc_message!(fenced RegisterTaskExecutor => RegistrationResponse);

/// A TaskExecutor going away on purpose (graceful shutdown).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DisconnectTaskManager {
    pub resource_id: ResourceId,
    pub reason: String,
}

rpc_message!(fenced DisconnectTaskManager => ());

// ---------------------------------------------------------------------------------
// ResourceManager → TaskExecutor

/// Heartbeat request; the TaskExecutor answers with its slot report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatFromResourceManager {
    pub resource_manager_session: LeaderSessionId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskExecutorHeartbeatPayload {
    pub resource_id: ResourceId,
    pub slot_report: SlotReport,
    /// Resident memory of the TaskExecutor process in bytes.
    #[serde(default)]
    pub process_memory: u64,
    /// The taskmanager's own metrics by Flink's names (`Status.JVM.*`, `Status.Shuffle.Netty.*`,
    /// `Status.Flink.Memory.Managed.*`, ...); they travel with the heartbeats, as Flink's
    /// MetricFetcher would pull them every `metrics.fetcher.update-interval`.
    #[serde(default)]
    pub metrics: Vec<(String, f64)>,
}

rpc_message!(unfenced HeartbeatFromResourceManager => TaskExecutorHeartbeatPayload);

/// The ResourceManager no longer knows this TaskExecutor (heartbeat timeout, revoked
/// leadership); the TaskExecutor should register again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DisconnectResourceManager {
    pub resource_manager_session: Option<LeaderSessionId>,
    pub reason: String,
}

rpc_message!(unfenced DisconnectResourceManager => ());

// ---------------------------------------------------------------------------------
// Slots: JobMaster → ResourceManager → TaskExecutor → JobMaster

/// One slot of a [`RequestSlots`] batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotRequestSpec {
    pub allocation_id: AllocationId,
    pub profile: ResourceProfile,
}

/// A JobMaster asks for every slot it misses in one call (fenced by the ResourceManager's
/// session). The slots arrive later as [`OfferSlots`] from the TaskExecutors that got them;
/// a request that cannot be served within `slot.request.timeout`, or a slot lost after it
/// was allocated, is reported back with [`NotifySlotRequestFailed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestSlots {
    pub job_id: JobId,
    /// Where the TaskExecutors offer the slots and where failures are reported.
    pub job_master: RpcAddress,
    pub requests: Vec<SlotRequestSpec>,
}

rpc_message!(fenced RequestSlots => Result<(), ResourceManagerError>);

/// Why the ResourceManager gave up a JobMaster's slot request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum SlotRequestFailure {
    /// No slot could serve the request within `slot.request.timeout`.
    #[error("{message}")]
    TimedOut { message: String },
    /// The slot was allocated, then lost with its TaskExecutor (or no longer reported).
    #[error("{message}")]
    AllocationLost { message: String },
}

/// ResourceManager → JobMaster (unfenced: the ResourceManager does not know the JobMaster's
/// session): a slot request of the job failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotifySlotRequestFailed {
    pub job_id: JobId,
    pub allocation_id: AllocationId,
    pub failure: SlotRequestFailure,
}

rpc_message!(unfenced NotifySlotRequestFailed => ());

/// A JobMaster no longer needs a requested slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelSlotRequest {
    pub allocation_id: AllocationId,
}

rpc_message!(fenced CancelSlotRequest => bool);

/// A TaskExecutor freed a slot (its JobMaster released it, or the offer was refused).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotifySlotAvailable {
    pub resource_id: ResourceId,
    pub slot_id: SlotId,
    pub allocation_id: AllocationId,
}

rpc_message!(fenced NotifySlotAvailable => ());

/// ResourceManager → TaskExecutor: allocate this slot for a job and offer it to the
/// job's JobMaster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocateSlot {
    pub slot_id: SlotId,
    pub job_id: JobId,
    pub allocation_id: AllocationId,
    pub profile: ResourceProfile,
    pub job_master: RpcAddress,
    pub resource_manager_session: LeaderSessionId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum SlotAllocationError {
    #[error("slot {slot_id} is allocated to {allocation_id} of job {job_id}")]
    SlotOccupied { slot_id: SlotId, allocation_id: AllocationId, job_id: JobId },
    #[error("no slot {slot_id} at this task executor")]
    UnknownSlot { slot_id: SlotId },
    #[error("the task executor is not registered with resource manager session {session}")]
    WrongResourceManager { session: LeaderSessionId },
}

rpc_message!(unfenced AllocateSlot => Result<(), SlotAllocationError>);

/// One slot offered to a JobMaster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotOffer {
    pub allocation_id: AllocationId,
    pub slot_index: u32,
    pub profile: ResourceProfile,
}

/// TaskExecutor → JobMaster (fenced by the JobMaster's session): slots allocated for
/// its job. The reply lists the accepted allocations; the rest are freed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferSlots {
    pub resource_id: ResourceId,
    pub task_executor: RpcAddress,
    /// `host:port` of the TaskExecutor's data server.
    pub data_address: String,
    pub slots: Vec<SlotOffer>,
}

rpc_message!(fenced OfferSlots => Vec<AllocationId>);

/// JobMaster → TaskExecutor: give a slot back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreeSlot {
    pub allocation_id: AllocationId,
    pub cause: String,
}

rpc_message!(unfenced FreeSlot => bool);

// ---------------------------------------------------------------------------------
// Tasks: JobMaster → TaskExecutor → JobMaster

/// One channel of an input gate: which producer subtask, and where its data server is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputChannelDeployment {
    pub producer_subtask: u32,
    pub producer_resource: ResourceId,
    /// `host:port` of the producer's data server.
    pub data_address: String,
}

/// One input of a task: an edge of the job graph and a channel per producer subtask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputGateDeployment {
    /// Index of the edge in `JobGraph::edges`.
    pub edge: u32,
    /// Which input of the head operator this gate feeds.
    pub input: usize,
    pub producer_vertex: JobVertexId,
    pub ship: ShipStrategy,
    pub channels: Vec<InputChannelDeployment>,
}

/// One output of a task: an edge of the job graph, with a subpartition per consumer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputDeployment {
    pub edge: u32,
    pub consumer_vertex: JobVertexId,
    pub consumer_parallelism: u32,
    pub ship: ShipStrategy,
}

/// Everything a TaskExecutor needs to run one subtask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDeploymentDescriptor {
    pub job_id: JobId,
    pub job_name: String,
    pub attempt_id: ExecutionAttemptId,
    pub attempt_number: u32,
    pub subtask: u32,
    pub vertex: JobVertex,
    pub max_parallelism: u32,
    pub job_config: BTreeMap<String, String>,
    pub allocation_id: AllocationId,
    pub inputs: Vec<InputGateDeployment>,
    pub outputs: Vec<OutputDeployment>,
    pub job_master: RpcAddress,
    pub job_master_session: LeaderSessionId,
    /// The checkpoint or savepoint every operator of the task restores its state from
    /// (`None`: start from scratch).
    #[serde(default)]
    pub restore: Option<RestoreSpec>,
    /// The files of the job's package this vertex's operators read, by package path
    /// ([`crate::job::JobGraph::artifacts_of`]); the taskmanager writes them to its artifact
    /// directory and points the operators there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, crate::job::package::Artifact>,
    /// The BlobServer (`host:port`) the offloaded artifacts are fetched from.
    #[serde(default)]
    pub blob_server: Option<String>,
    /// Set when the vertex's operators were offloaded (`vertex.operators` is then empty):
    /// the sha256 of their MessagePack bytes, a permanent blob of the job.
    #[serde(default)]
    pub operators_blob: Option<String>,
    /// At the end of its input the task waits for a final checkpoint before it ends
    /// (checkpointing is on and `execution.checkpointing.checkpoints-after-tasks-finish`), so
    /// that a checkpoint covers all output and sinks commit their tail through it.
    #[serde(default)]
    pub final_checkpoint: bool,
}

/// Where a task finds the state it restores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSpec {
    pub checkpoint_id: u64,
    /// The checkpoint or savepoint directory (holding `_metadata`).
    pub location: String,
}

/// JobMaster → TaskExecutor: run this subtask in the slot of its allocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitTask {
    pub tdd: Box<TaskDeploymentDescriptor>,
}

rpc_message!(unfenced SubmitTask => Result<(), SubmitTaskError>);

/// Why a TaskExecutor did not start a submitted task (the reply to [`SubmitTask`]).
/// Texts name ids only, never paths of the TaskExecutor's host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SubmitTaskError {
    /// No slot of the TaskExecutor holds the allocation: it was freed, timed out, or was
    /// never allocated here.
    #[error("no slot of allocation {allocation_id} is allocated to job {job_id} at task manager {resource_id}")]
    SlotNotFound { allocation_id: AllocationId, job_id: JobId, resource_id: ResourceId },
    /// The allocation's slot is held for another job.
    #[error(
        "no slot of allocation {allocation_id} is allocated to job {job_id} at task manager {resource_id} \
         (it is allocated to job {owner})"
    )]
    SlotOwnedByOtherJob { allocation_id: AllocationId, job_id: JobId, owner: JobId, resource_id: ResourceId },
    /// The deployment descriptor contradicts itself; the same deployment fails every time.
    #[error("invalid task deployment: {reason}")]
    InvalidDeployment { reason: String },
    /// The task's thread could not be started (the process is out of threads or memory).
    #[error("could not start the task thread: {reason}")]
    TaskStartFailed { reason: String },
}

impl SubmitTaskError {
    /// Whether deploying the task again (in fresh slots, after a restart) can succeed.
    /// Only a descriptor that contradicts itself fails every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            SubmitTaskError::SlotNotFound { .. }
            | SubmitTaskError::SlotOwnedByOtherJob { .. }
            | SubmitTaskError::TaskStartFailed { .. } => true,
            SubmitTaskError::InvalidDeployment { .. } => false,
        }
    }
}

/// JobMaster → TaskExecutor: cancel a running attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelTask {
    pub attempt_id: ExecutionAttemptId,
}

rpc_message!(unfenced CancelTask => bool);

/// JobMaster → TaskExecutor heartbeat, for one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatFromJobManager {
    pub job_id: JobId,
}

rpc_message!(unfenced HeartbeatFromJobManager => ResourceId);

/// The states a TaskExecutor reports for a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    Initializing,
    Running,
    Finished,
    Canceled,
    Failed,
}

/// Record and byte counts of a task, and its metrics under Flink's names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    pub read_records: u64,
    pub write_records: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// Records that reached the sink at the end of the task's chain.
    #[serde(default)]
    pub sink_records: u64,
    /// Every task and operator metric (`numRecordsInPerSecond`, `busyTimeMsPerSecond`,
    /// `currentInputWatermark`, ...), as the task measured them at this report.
    #[serde(default)]
    pub dump: MetricDump,
}

/// A task's metrics by Flink's names: the task's own and each chained operator's, in
/// chain order (operators by their name in the job).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricDump {
    pub task: Vec<(String, f64)>,
    pub operators: Vec<(String, Vec<(String, f64)>)>,
    /// Buffers waiting in the task's input and output queues, and the queues' bounds (the
    /// taskmanager sums them into its network buffer metrics).
    #[serde(default)]
    pub buffers_queued: u64,
    #[serde(default)]
    pub buffers_capacity: u64,
    /// Operator metrics below key/value groups (Flink's `addGroup(key, value)`), e.g. a
    /// Kafka source's offsets per partition.
    #[serde(default)]
    pub grouped: Vec<GroupedMetric>,
}

/// The key of a key/value metric group; its value becomes a label in Prometheus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricGroupKey {
    Topic,
    Partition,
}

impl MetricGroupKey {
    pub fn name(self) -> &'static str {
        match self {
            MetricGroupKey::Topic => "topic",
            MetricGroupKey::Partition => "partition",
        }
    }
}

/// A metric of an operator inside groups, as Flink registers
/// `operator.addGroup("KafkaSourceReader").addGroup("topic", t).addGroup("partition", p)`:
/// its REST id is `<operator>.KafkaSourceReader.topic.<t>.partition.<p>.<name>`; in
/// Prometheus the keys are part of the name and the values are labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupedMetric {
    /// The operator's metric name (as in [`MetricDump::operators`]).
    pub operator: String,
    /// The plain group below the operator (`KafkaSourceReader`).
    pub group: String,
    pub variables: Vec<(MetricGroupKey, String)>,
    pub name: String,
    pub value: f64,
}

impl GroupedMetric {
    /// The id below the operator: `<group>.<key>.<value>...<name>`.
    pub fn rest_id(&self) -> String {
        let mut id = self.group.clone();
        for (key, value) in &self.variables {
            id.push('.');
            id.push_str(key.name());
            id.push('.');
            id.push_str(value);
        }
        id.push('.');
        id.push_str(&self.name);
        id
    }

    /// The name without the groups' values: `<group>.<key>...<name>`.
    pub fn logical_name(&self) -> String {
        let mut id = self.group.clone();
        for (key, _) in &self.variables {
            id.push('.');
            id.push_str(key.name());
        }
        id.push('.');
        id.push_str(&self.name);
        id
    }
}

/// Why a task failed: the cause shown in `/jobs/:id/exceptions` and whether running the
/// task again can help (the restart strategy fails the job at once when it cannot, e.g. a
/// configuration that cannot work or a user function that rejects its input deterministically).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub message: String,
    pub retryable: bool,
}

impl TaskFailure {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}

/// TaskExecutor → JobMaster (fenced by the JobMaster's session).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateTaskExecutionState {
    pub attempt_id: ExecutionAttemptId,
    pub state: TaskState,
    #[serde(default)]
    pub failure: Option<TaskFailure>,
    #[serde(default)]
    pub metrics: TaskMetrics,
    /// Named counters of the task's operators (`/jobs/:id/accumulators`), summed over the
    /// subtasks; restored with the operator state, so they count exactly once.
    #[serde(default)]
    pub accumulators: Vec<(String, u64)>,
    /// With FINISHED: output the task's sinks made ready but did not commit, because no
    /// checkpoint covers it; the JobMaster commits it once the whole job finished.
    #[serde(default)]
    pub commits: Vec<FileCommit>,
}

rpc_message!(fenced UpdateTaskExecutionState => bool);

/// Output made visible by renaming a finished, hidden file to its final name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileCommit {
    pub from: String,
    pub to: String,
}

impl FileCommit {
    /// Renames `from` to `to`; done already (no `from`, `to` exists) counts as success, so a
    /// commit may be repeated after a failure.
    pub fn apply(&self) -> std::io::Result<()> {
        match std::fs::rename(&self.from, &self.to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::path::Path::new(&self.to).exists() => Ok(()),
            Err(e) => Err(std::io::Error::new(e.kind(), format!("committing {} as {}: {e}", self.from, self.to))),
        }
    }
}

// ---------------------------------------------------------------------------------
// Checkpoints: JobMaster ↔ TaskExecutor
// ---------------------------------------------------------------------------------

/// What a checkpoint barrier carries and a trigger starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBarrierInfo {
    pub checkpoint_id: u64,
    pub timestamp_ms: u64,
    /// The directory the tasks write their state files into (`chk-<n>` or a savepoint
    /// directory).
    pub directory: String,
    pub is_savepoint: bool,
    /// Stop-with-savepoint: sources end right after this barrier, and every task ends once
    /// it passed the barrier on...
    #[serde(default)]
    pub terminate: bool,
    /// ... with (`drain`) or without running the operators' end of input (windows fire).
    #[serde(default)]
    pub drain: bool,
}

/// JobMaster → TaskExecutor: a source task injects a barrier and snapshots its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerCheckpoint {
    pub attempt_id: ExecutionAttemptId,
    pub barrier: CheckpointBarrierInfo,
}

// `false`: the task is not running here.
rpc_message!(unfenced TriggerCheckpoint => bool);

/// JobMaster → TaskExecutor: a checkpoint completed (sinks commit) or was aborted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotifyCheckpoint {
    pub attempt_id: ExecutionAttemptId,
    pub checkpoint_id: u64,
    pub completed: bool,
    /// The completed checkpoint is the job's final one: every task took it after the end of
    /// its input, so a task waiting for it ends now.
    #[serde(default)]
    pub final_checkpoint: bool,
}

rpc_message!(unfenced NotifyCheckpoint => bool);

/// One task's part of a checkpoint: the state file it wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCheckpointState {
    /// Absolute path of the task's state file; `None` when no operator of the task has state.
    pub file: Option<String>,
    pub size_bytes: u64,
    pub alignment_ms: u64,
    pub duration_ms: u64,
    /// The task took the checkpoint after the end of its input (every operator finished).
    #[serde(default)]
    pub end_of_input: bool,
}

/// TaskExecutor → JobMaster (fenced): the task wrote its state for the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AcknowledgeCheckpoint {
    pub attempt_id: ExecutionAttemptId,
    pub checkpoint_id: u64,
    pub state: TaskCheckpointState,
}

rpc_message!(fenced AcknowledgeCheckpoint => ());

/// TaskExecutor → JobMaster (fenced): the task could not take the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeclineCheckpoint {
    pub attempt_id: ExecutionAttemptId,
    pub checkpoint_id: u64,
    pub reason: String,
    /// The decline is no checkpointing failure (a newer checkpoint overtook this one, the
    /// task is closing): not counted towards the tolerable failed checkpoints.
    #[serde(default)]
    pub uncounted: bool,
}

rpc_message!(fenced DeclineCheckpoint => ());

// ---------------------------------------------------------------------------------
// Logs: REST → TaskExecutor

/// One file in a log directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogFileInfo {
    pub name: String,
    pub size: u64,
    pub mtime_ms: u64,
}

/// Which file of a TaskExecutor to read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LogFile {
    /// The process's log (`FLINT_LOG_FILE`).
    Log,
    /// The process's stdout/stderr (the `.out` next to the log).
    Stdout,
    /// A file of the log directory by name.
    Named(String),
}

/// The files of the TaskExecutor's log directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestLogList {}

rpc_message!(unfenced RequestLogList => Vec<LogFileInfo>);

/// One thread of a thread dump (`/jobmanager/thread-dump`, `/taskmanagers/:id/thread-dump`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadDumpEntry {
    pub thread_name: String,
    pub stringified_thread_info: String,
}

/// The TaskExecutor's threads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestThreadDump {}

rpc_message!(unfenced RequestThreadDump => Vec<ThreadDumpEntry>);

/// Samples the on-CPU stacks of these tasks' threads for `duration_ms` at `frequency_hz`
/// (the flame graphs of `/jobs/:id/vertices/:v/flamegraph`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestThreadSamples {
    pub attempts: Vec<ExecutionAttemptId>,
    pub duration_ms: u64,
    pub frequency_hz: u32,
    /// At most this many frames per stack (the innermost ones).
    pub max_depth: u32,
}

/// Sampled stacks (frame names, outermost first) and how often each was seen.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadSamples {
    pub stacks: Vec<(Vec<String>, u64)>,
}

/// Why a TaskExecutor could not sample its task threads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ThreadSamplingError {
    #[error("another flame graph is being sampled on this taskmanager")]
    Busy,
    #[error("the stack sampler could not run: {reason}")]
    SamplerFailed { reason: String },
}

impl ThreadSamplingError {
    /// A busy sampler is free again after its sampling period.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ThreadSamplingError::Busy)
    }
}

rpc_message!(unfenced RequestThreadSamples => Result<ThreadSamples, ThreadSamplingError>);

/// The last `max_bytes` of one log file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestLogFile {
    pub file: LogFile,
    pub max_bytes: u64,
}

rpc_message!(unfenced RequestLogFile => Result<String, LogFileError>);

/// Why a log file could not be read (the reply to [`RequestLogFile`], and the
/// JobManager's own log files). Texts go to REST clients: they name the file, never a
/// directory of the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LogFileError {
    /// The process was not started with a log file (`FLINT_LOG_FILE`).
    #[error("this process does not log to a file (FLINT_LOG_FILE is not set)")]
    NoLogFile,
    /// The name is not a plain file name (empty, or holds a separator or `..`).
    #[error("invalid log file name '{name}'")]
    InvalidName { name: String },
    /// No such file in the log directory.
    #[error("log file '{name}': entity not found")]
    NotFound { name: String },
    /// Opening or reading the file failed; `reason` is the kind of I/O error.
    #[error("log file '{name}': {reason}")]
    Io { name: String, reason: String },
}

impl LogFileError {
    /// Whether asking again later can succeed: only for I/O failures (a missing file or
    /// a bad name stays so).
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogFileError::Io { .. })
    }
}

// ---------------------------------------------------------------------------------
// REST → ResourceManager (read-only; answered only while leader)

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum ResourceManagerError {
    #[error("the ResourceManager is not the leader")]
    NotLeader,
    #[error("No TaskExecutor registered under {resource_id}.")]
    UnknownTaskExecutor { resource_id: ResourceId },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestResourceOverview {}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceOverview {
    pub task_managers: usize,
    pub slots_total: usize,
    pub slots_free: usize,
}

rpc_message!(unfenced RequestResourceOverview => Result<ResourceOverview, ResourceManagerError>);

/// One allocated slot as the REST API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocatedSlotInfo {
    pub job_id: JobId,
    pub resource: ResourceProfile,
}

/// What the ResourceManager knows of one registered TaskExecutor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskManagerInfo {
    pub resource_id: ResourceId,
    pub address: RpcAddress,
    pub data_port: u16,
    /// Epoch milliseconds of the last heartbeat answer.
    pub last_heartbeat_ms: u64,
    pub slots_number: usize,
    pub free_slots: usize,
    pub total_resource: ResourceProfile,
    pub free_resource: ResourceProfile,
    pub hardware: HardwareDescription,
    pub memory: TaskExecutorMemoryConfiguration,
    pub allocated_slots: Vec<AllocatedSlotInfo>,
    pub process_memory: u64,
    /// The metrics of the last heartbeat (see [`TaskExecutorHeartbeatPayload::metrics`]).
    #[serde(default)]
    pub metrics: Vec<(String, f64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestTaskManagerInfos {}

rpc_message!(unfenced RequestTaskManagerInfos => Result<Vec<TaskManagerInfo>, ResourceManagerError>);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestTaskManagerInfo {
    pub resource_id: ResourceId,
}

rpc_message!(unfenced RequestTaskManagerInfo => Result<TaskManagerInfo, ResourceManagerError>);

// ---------------------------------------------------------------------------------
// REST → Dispatcher

/// A job as `/jobs` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobStatusEntry {
    pub job_id: JobId,
    pub name: String,
    /// Flink's job status name (`RUNNING`, `FINISHED`, ...).
    pub status: String,
    pub start_time_ms: i64,
    pub end_time_ms: i64,
    pub last_modification_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListJobs {}

rpc_message!(unfenced ListJobs => Vec<JobStatusEntry>);

// ---------------------------------------------------------------------------------
// Gateways

/// A remote endpoint with the fencing token and timeout to use for it.
#[derive(Clone)]
pub struct RemoteEndpoint {
    pub rpc: RpcService,
    pub address: RpcAddress,
    pub fencing_token: Option<LeaderSessionId>,
    pub timeout: Duration,
}

impl RemoteEndpoint {
    pub fn new(rpc: RpcService, address: RpcAddress, timeout: Duration) -> Self {
        Self { rpc, address, fencing_token: None, timeout }
    }

    pub fn with_token(mut self, token: Option<LeaderSessionId>) -> Self {
        self.fencing_token = token;
        self
    }

    pub fn ask<M: RpcMessage>(&self, msg: &M) -> impl Future<Output = Result<M::Response, RpcError>> + Send + 'static {
        self.rpc.ask(&self.address, self.fencing_token, msg, self.timeout)
    }

    pub fn tell<M: RpcMessage>(&self, msg: &M) -> Result<(), RpcError> {
        self.rpc.tell(&self.address, self.fencing_token, msg)
    }
}

/// How the TaskExecutor and the REST layer talk to the ResourceManager.
#[derive(Clone)]
pub struct ResourceManagerGateway(pub RemoteEndpoint);

type Reply<T> = std::pin::Pin<Box<dyn Future<Output = Result<T, RpcError>> + Send + 'static>>;

impl ResourceManagerGateway {
    pub fn identify(&self) -> Reply<LeaderInfo> {
        Box::pin(self.0.ask(&IdentifyLeader {}))
    }

    pub fn register_task_executor(&self, registration: &RegisterTaskExecutor) -> Reply<RegistrationResponse> {
        Box::pin(self.0.ask(registration))
    }

    pub fn disconnect_task_manager(&self, resource_id: ResourceId, reason: impl Into<String>) -> Reply<()> {
        Box::pin(self.0.ask(&DisconnectTaskManager { resource_id, reason: reason.into() }))
    }

    pub fn overview(&self) -> Reply<Result<ResourceOverview, ResourceManagerError>> {
        Box::pin(self.0.ask(&RequestResourceOverview {}))
    }

    pub fn task_managers(&self) -> Reply<Result<Vec<TaskManagerInfo>, ResourceManagerError>> {
        Box::pin(self.0.ask(&RequestTaskManagerInfos {}))
    }

    pub fn task_manager(&self, resource_id: ResourceId) -> Reply<Result<TaskManagerInfo, ResourceManagerError>> {
        Box::pin(self.0.ask(&RequestTaskManagerInfo { resource_id }))
    }

    pub fn request_slots(&self, request: &RequestSlots) -> Reply<Result<(), ResourceManagerError>> {
        Box::pin(self.0.ask(request))
    }

    pub fn cancel_slot_request(&self, allocation_id: AllocationId) -> Reply<bool> {
        Box::pin(self.0.ask(&CancelSlotRequest { allocation_id }))
    }

    pub fn notify_slot_available(&self, notice: &NotifySlotAvailable) -> Reply<()> {
        Box::pin(self.0.ask(notice))
    }
}

/// How the ResourceManager talks to a TaskExecutor.
#[derive(Clone)]
pub struct TaskExecutorGateway(pub RemoteEndpoint);

impl TaskExecutorGateway {
    pub fn heartbeat(&self, resource_manager_session: LeaderSessionId) -> Reply<TaskExecutorHeartbeatPayload> {
        Box::pin(self.0.ask(&HeartbeatFromResourceManager { resource_manager_session }))
    }

    pub fn submit_task(&self, tdd: TaskDeploymentDescriptor) -> Reply<Result<(), SubmitTaskError>> {
        Box::pin(self.0.ask(&SubmitTask { tdd: Box::new(tdd) }))
    }

    pub fn heartbeat_from_job_manager(&self, job_id: JobId) -> Reply<ResourceId> {
        Box::pin(self.0.ask(&HeartbeatFromJobManager { job_id }))
    }

    pub fn cancel_task(&self, attempt_id: ExecutionAttemptId) -> Reply<bool> {
        Box::pin(self.0.ask(&CancelTask { attempt_id }))
    }

    pub fn trigger_checkpoint(&self, attempt_id: ExecutionAttemptId, barrier: CheckpointBarrierInfo) -> Reply<bool> {
        Box::pin(self.0.ask(&TriggerCheckpoint { attempt_id, barrier }))
    }

    pub fn notify_checkpoint(
        &self,
        attempt_id: ExecutionAttemptId,
        checkpoint_id: u64,
        completed: bool,
        final_checkpoint: bool,
    ) -> Reply<bool> {
        Box::pin(self.0.ask(&NotifyCheckpoint { attempt_id, checkpoint_id, completed, final_checkpoint }))
    }

    pub fn log_list(&self) -> Reply<Vec<LogFileInfo>> {
        Box::pin(self.0.ask(&RequestLogList {}))
    }

    pub fn thread_dump(&self) -> Reply<Vec<ThreadDumpEntry>> {
        Box::pin(self.0.ask(&RequestThreadDump {}))
    }

    pub fn thread_samples(&self, request: &RequestThreadSamples) -> Reply<Result<ThreadSamples, ThreadSamplingError>> {
        Box::pin(self.0.ask(request))
    }

    pub fn log_file(&self, file: LogFile, max_bytes: u64) -> Reply<Result<String, LogFileError>> {
        Box::pin(self.0.ask(&RequestLogFile { file, max_bytes }))
    }

    pub fn allocate_slot(&self, request: &AllocateSlot) -> Reply<Result<(), SlotAllocationError>> {
        Box::pin(self.0.ask(request))
    }

    pub fn free_slot(&self, allocation_id: AllocationId, cause: impl Into<String>) -> Reply<bool> {
        Box::pin(self.0.ask(&FreeSlot { allocation_id, cause: cause.into() }))
    }

    pub fn disconnect_resource_manager(&self, session: Option<LeaderSessionId>, reason: impl Into<String>) {
        let msg = DisconnectResourceManager { resource_manager_session: session, reason: reason.into() };
        if let Err(e) = self.0.tell(&msg) {
            tracing::debug!(error = %e, "could not tell task executor to disconnect");
        }
    }
}

/// How a TaskExecutor talks to a JobMaster.
#[derive(Clone)]
pub struct JobMasterGateway(pub RemoteEndpoint);

impl JobMasterGateway {
    pub fn identify(&self) -> Reply<LeaderInfo> {
        Box::pin(self.0.ask(&IdentifyLeader {}))
    }

    pub fn offer_slots(&self, offer: &OfferSlots) -> Reply<Vec<AllocationId>> {
        Box::pin(self.0.ask(offer))
    }

    pub fn update_task_execution_state(&self, update: &UpdateTaskExecutionState) -> Reply<bool> {
        Box::pin(self.0.ask(update))
    }

    pub fn acknowledge_checkpoint(&self, ack: &AcknowledgeCheckpoint) -> Reply<()> {
        Box::pin(self.0.ask(ack))
    }

    pub fn decline_checkpoint(&self, decline: &DeclineCheckpoint) -> Reply<()> {
        Box::pin(self.0.ask(decline))
    }
}

/// How the REST layer talks to the Dispatcher.
#[derive(Clone)]
pub struct DispatcherGateway(pub RemoteEndpoint);

impl DispatcherGateway {
    pub fn list_jobs(&self) -> Reply<Vec<JobStatusEntry>> {
        Box::pin(self.0.ask(&ListJobs {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
        rmp_serde::from_slice(&rmp_serde::to_vec_named(value).unwrap()).unwrap()
    }

    fn submit_task_errors() -> Vec<SubmitTaskError> {
        let (allocation_id, job_id, owner) = (AllocationId::from_u128(1), JobId::from_u128(2), JobId::from_u128(3));
        let resource_id = ResourceId::new("127.0.0.1:6122-abcdef");
        vec![
            SubmitTaskError::SlotNotFound { allocation_id, job_id, resource_id: resource_id.clone() },
            SubmitTaskError::SlotOwnedByOtherJob { allocation_id, job_id, owner, resource_id },
            SubmitTaskError::InvalidDeployment { reason: "subtask 4 of a vertex of parallelism 2".into() },
            SubmitTaskError::TaskStartFailed { reason: "Resource temporarily unavailable (os error 11)".into() },
        ]
    }

    fn log_file_errors() -> Vec<LogFileError> {
        vec![
            LogFileError::NoLogFile,
            LogFileError::InvalidName { name: "../secret".into() },
            LogFileError::NotFound { name: "missing.log".into() },
            LogFileError::Io { name: "taskmanager.log".into(), reason: "permission denied".into() },
        ]
    }

    #[test]
    fn submit_task_errors_survive_the_wire_and_only_a_bad_descriptor_is_permanent() {
        for e in submit_task_errors() {
            assert_eq!(round_trip(&Ok::<(), _>(())), Ok::<(), SubmitTaskError>(()));
            assert_eq!(round_trip(&Err::<(), _>(e.clone())), Err(e.clone()));
            assert_eq!(e.is_retryable(), !matches!(e, SubmitTaskError::InvalidDeployment { .. }), "{e}");
            assert!(!e.to_string().contains("/tmp") && !e.to_string().contains("/home"), "{e}");
        }
        let texts: Vec<String> = submit_task_errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            texts[0],
            format!(
                "no slot of allocation {} is allocated to job {} at task manager 127.0.0.1:6122-abcdef",
                AllocationId::from_u128(1),
                JobId::from_u128(2)
            )
        );
        assert!(texts[1].starts_with(&texts[0]) && texts[1].contains(&JobId::from_u128(3).to_string()), "{}", texts[1]);
        assert_eq!(texts[3], "could not start the task thread: Resource temporarily unavailable (os error 11)");
    }

    #[test]
    fn log_file_errors_survive_the_wire_name_no_directory_and_only_io_is_retryable() {
        for e in log_file_errors() {
            assert_eq!(round_trip(&Err::<String, _>(e.clone())), Err(e.clone()));
            assert_eq!(e.is_retryable(), matches!(e, LogFileError::Io { .. }), "{e}");
            let text = e.to_string();
            assert!(!text.contains("/tmp") && !text.contains("/home") && !text.contains("/var"), "{text}");
        }
        let texts: Vec<String> = log_file_errors().iter().map(ToString::to_string).collect();
        assert_eq!(texts[0], "this process does not log to a file (FLINT_LOG_FILE is not set)");
        assert_eq!(texts[1], "invalid log file name '../secret'");
        assert_eq!(texts[2], "log file 'missing.log': entity not found");
        assert_eq!(texts[3], "log file 'taskmanager.log': permission denied");
        assert_eq!(round_trip(&Ok::<String, LogFileError>("tail".into())), Ok("tail".into()));
    }

    #[test]
    fn a_missing_log_file_is_not_found_and_names_only_the_file() {
        let dir = std::env::temp_dir().join(format!("flint-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = crate::process::read_tail(&dir.join("missing.log"), 1024).unwrap_err();
        assert_eq!(e, LogFileError::NotFound { name: "missing.log".into() });
        assert!(!e.to_string().contains(&dir.to_string_lossy().into_owned()), "{e}");
        std::fs::write(dir.join("present.log"), "0123456789").unwrap();
        assert_eq!(crate::process::read_tail(&dir.join("present.log"), 4).unwrap(), "6789");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
