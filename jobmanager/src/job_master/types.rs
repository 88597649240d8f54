//! What the JobMaster shares with the Dispatcher and the REST API: the job's snapshot, its
//! checkpoint settings, the operations it runs and the report of its end.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use flint_common::ids::JobId;
use flint_common::job::plan::JobGraph;

use crate::checkpoint_coordinator::{CheckpointConfig, CheckpointStatistics};
use crate::execution_graph::{ExecutionGraph, JobStatus};

/// A failure recorded for `/jobs/:id/exceptions`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ExceptionEntry {
    pub timestamp_ms: u64,
    pub exception: String,
    pub task_name: Option<String>,
    pub location: Option<String>,
}

/// How the JobMaster watches the TaskExecutors that hold its slots.
#[derive(Clone, Copy, Debug)]
pub struct HeartbeatSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive unreachable heartbeats that mark a TaskExecutor lost; ≤ 0 disables.
    pub rpc_failure_threshold: i32,
}

/// What the REST API sees of a job: its plan and a copy of its ExecutionGraph. Serializable
/// (without the checkpoint statistics), so a job's final state can be archived.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct JobSnapshot {
    pub restart_strategy: String,
    pub num_restarts: u32,
    /// Shared with the JobMaster until its next change (copy on write): a snapshot costs
    /// no copy of the graphs.
    pub graph: Arc<ExecutionGraph>,
    pub job_graph: Arc<JobGraph>,
    pub exceptions: Vec<ExceptionEntry>,
    /// Checkpoint statistics (`None` while no coordinator exists: checkpointing off and no
    /// savepoint taken or restored). Not archived.
    #[serde(skip)]
    pub checkpoints: Option<CheckpointStatistics>,
    pub checkpoint_settings: CheckpointSettings,
    /// Accumulators summed over the subtasks' current attempts.
    pub accumulators: Vec<(String, u64)>,
    /// Each subtask's current attempt's accumulators, by (vertex index, subtask index).
    #[serde(default)]
    pub subtask_accumulators: Vec<((usize, usize), Accumulators)>,
}

/// Named counters by name.
pub type Accumulators = Vec<(String, u64)>;

/// The checkpointing configuration of a job, as `/jobs/:id/checkpoints/config` shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CheckpointSettings {
    /// `None`: periodic checkpointing is off.
    pub config: Option<CheckpointConfig>,
    pub checkpoints_dir: Option<String>,
    pub savepoints_dir: Option<String>,
    pub retention: Retention,
}

/// `execution.checkpointing.externalized-checkpoint-retention`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Retention {
    /// Checkpoints are deleted when the job terminates in any way.
    NoExternalized,
    /// Kept when the job fails, deleted when it is canceled or finishes.
    DeleteOnCancellation,
    /// Kept when the job fails or is canceled, deleted when it finishes.
    RetainOnCancellation,
}

impl Retention {
    pub const KEY: &'static str = "execution.checkpointing.externalized-checkpoint-retention";

    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_uppercase().as_str() {
            "NO_EXTERNALIZED_CHECKPOINTS" => Ok(Retention::NoExternalized),
            "DELETE_ON_CANCELLATION" => Ok(Retention::DeleteOnCancellation),
            "RETAIN_ON_CANCELLATION" => Ok(Retention::RetainOnCancellation),
            _ => Err(format!(
                "invalid value '{value}' for '{}': expected NO_EXTERNALIZED_CHECKPOINTS, DELETE_ON_CANCELLATION or \
                 RETAIN_ON_CANCELLATION",
                Self::KEY
            )),
        }
    }

    pub fn flink_name(&self) -> &'static str {
        match self {
            Retention::NoExternalized => "NO_EXTERNALIZED_CHECKPOINTS",
            Retention::DeleteOnCancellation => "DELETE_ON_CANCELLATION",
            Retention::RetainOnCancellation => "RETAIN_ON_CANCELLATION",
        }
    }

    /// Whether the retained checkpoints survive a job ending in `status`.
    pub(crate) fn keeps(&self, status: JobStatus) -> bool {
        match status {
            JobStatus::Failed => *self != Retention::NoExternalized,
            JobStatus::Canceled => *self == Retention::RetainOnCancellation,
            _ => false,
        }
    }
}

/// Where a job resumes from: the savepoint it was submitted with (`savepointPath`), or after a
/// jobmanager failover its latest completed checkpoint (the completed checkpoint store keeps
/// this as JSON).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavepointRestore {
    pub checkpoint_id: u64,
    pub location: String,
    pub is_savepoint: bool,
}

/// What `POST /jobs/:id/savepoints`, `/stop` and `/checkpoints` ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SavepointOperation {
    /// A savepoint into `target_directory` (default `state.savepoints.dir`); cancel the job
    /// after it completed when `cancel_job`.
    Savepoint { target_directory: Option<String>, cancel_job: bool },
    /// Stop-with-savepoint: take a savepoint, then finish the job (`drain`: fire every
    /// pending window / event-time timer first, as at the end of the input).
    Stop { target_directory: Option<String>, drain: bool },
    /// A checkpoint now (Flink 1.19+ manual checkpoint).
    Checkpoint,
}

/// What an operation produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperationResult {
    Savepoint { location: String },
    Checkpoint { checkpoint_id: u64 },
}

/// JobMaster → whoever started it (the Dispatcher): the job reached a globally terminal
/// state; this is its final state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobTerminated {
    pub job_id: JobId,
    pub snapshot: Box<JobSnapshot>,
}
