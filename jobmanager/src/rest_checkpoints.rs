//! The checkpoint and savepoint endpoints of the REST API, in Flink 1.20's shapes.
//!
//! - Statistics: `GET /jobs/:jobid/checkpoints`, `.../checkpoints/config`,
//!   `.../checkpoints/details/:checkpointid` and
//!   `.../checkpoints/details/:checkpointid/subtasks/:vertexid`, built from the JobMaster's
//!   [`CheckpointStatistics`] in its [`JobSnapshot`](crate::job_master::JobSnapshot).
//! - Asynchronous operations: `POST /jobs/:jobid/savepoints`, `/stop` and `/checkpoints`
//!   answer `202 {"request-id": ...}` at once; `GET .../savepoints/:triggerid` and
//!   `.../checkpoints/:triggerid` poll the Dispatcher for the outcome.
//!
//! The JSON is built by plain functions (tested against Flink's captured answers); the
//! handlers only fetch and translate.
//!
//! What is measured and what is reported as 0: per checkpoint Flint measures the state size,
//! trigger and acknowledgement times (so the end-to-end durations), and per subtask the
//! barrier alignment time and the time the snapshot took in the task (shown as the
//! synchronous part). `checkpointed_size` equals `state_size` (every snapshot is full).
//! Buffered, processed and persisted data, the asynchronous duration and the start delay are
//! not measured: they are 0, and their summaries look like Flink's for a quantity that is
//! always 0 (percentiles `0.0` once a checkpoint completed, `"NaN"` before). As in Flink,
//! per-task summaries carry no percentiles (`"NaN"`), and `alignment_buffered` is a constant
//! 0 with `0.0` percentiles.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use flint_common::ids::{ExecutionAttemptId, JobId, JobVertexId, TriggerId};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::checkpoint_coordinator::{
    CheckpointStatistics, CheckpointStats, CheckpointStatus, RestoredCheckpointStats, StatsSummary,
    SubtaskCheckpointStats,
};
use crate::dispatcher::{
    GetOperationStatus, OperationError, OperationResult, OperationStatus, SavepointOperation, TriggerOperation,
};
use crate::execution_graph::ExecutionGraph;
use crate::job_master::{CheckpointSettings, Retention};
use crate::rest::{parse_job_id, Rest, RestError, RestState};
use crate::rest_jobs::{dispatcher_gone, snapshot};

/// What Flink shows for the settings of a job without periodic checkpoints.
const DEFAULT_TIMEOUT_MS: u64 = 600_000;
const CHANGELOG_MATERIALIZATION_INTERVAL_MS: u64 = 600_000;
/// The class named in a failed operation's cause when the cause names none.
const CHECKPOINT_EXCEPTION: &str = "org.apache.flink.runtime.checkpoint.CheckpointException";

// ---------------------------------------------------------------------------------------
// Statistics as JSON
// ---------------------------------------------------------------------------------------

fn percentile_json(value: Option<f64>) -> Value {
    match value {
        Some(v) if v.is_finite() => json!(v),
        _ => json!("NaN"),
    }
}

/// A measured job-level summary.
fn summary_json(s: &StatsSummary) -> Value {
    json!({
        "min": s.min,
        "max": s.max,
        "avg": s.avg,
        "p50": percentile_json(s.p50),
        "p90": percentile_json(s.p90),
        "p95": percentile_json(s.p95),
        "p99": percentile_json(s.p99),
        "p999": percentile_json(s.p999),
    })
}

/// A job-level summary of a quantity that is 0 in each of `count` completed checkpoints.
fn zero_summary_json(count: u64) -> Value {
    let p = (count > 0).then_some(0.0);
    summary_json(&StatsSummary { count, p50: p, p90: p, p95: p, p99: p, p999: p, ..StatsSummary::default() })
}

/// A task-level summary: min, max and (integer) mean; Flink computes no percentiles here.
fn task_summary_json(values: impl IntoIterator<Item = u64>) -> Value {
    let values: Vec<u64> = values.into_iter().collect();
    let (min, max, avg) = match (values.iter().min(), values.iter().max()) {
        (Some(&min), Some(&max)) => {
            let sum: u128 = values.iter().map(|&v| u128::from(v)).sum();
            (min, max, u64::try_from(sum / values.len() as u128).unwrap_or(u64::MAX))
        }
        _ => (0, 0, 0),
    };
    json!({
        "min": min, "max": max, "avg": avg,
        "p50": "NaN", "p90": "NaN", "p95": "NaN", "p99": "NaN", "p999": "NaN",
    })
}

fn status_name(status: CheckpointStatus) -> &'static str {
    match status {
        CheckpointStatus::InProgress => "IN_PROGRESS",
        CheckpointStatus::Completed => "COMPLETED",
        CheckpointStatus::Failed => "FAILED",
    }
}

fn class_name(status: CheckpointStatus) -> &'static str {
    match status {
        CheckpointStatus::InProgress => "in_progress",
        CheckpointStatus::Completed => "completed",
        CheckpointStatus::Failed => "failed",
    }
}

/// Trigger to latest acknowledgement (a failed checkpoint: to its failure); -1 before the
/// first acknowledgement, as Flink.
fn end_to_end_duration(s: &CheckpointStats) -> i64 {
    match (s.status, s.failure_timestamp, s.latest_ack_timestamp) {
        (CheckpointStatus::Failed, Some(failed), _) => failed.saturating_sub(s.trigger_timestamp) as i64,
        (_, _, Some(_)) => s.end_to_end_duration as i64,
        _ => -1,
    }
}

/// One checkpoint as `/checkpoints` (history, latest) and `/checkpoints/details/:id` show it;
/// `tasks` is empty except in the details.
pub fn checkpoint_json(s: &CheckpointStats, tasks: Map<String, Value>) -> Value {
    let mut body = json!({
        "className": class_name(s.status),
        "id": s.id,
        "status": status_name(s.status),
        "is_savepoint": s.is_savepoint,
        "savepointFormat": if s.is_savepoint { json!("CANONICAL") } else { Value::Null },
        "trigger_timestamp": s.trigger_timestamp,
        "latest_ack_timestamp": s.latest_ack_timestamp.map_or(-1, |t| t as i64),
        "checkpointed_size": s.state_size,
        "state_size": s.state_size,
        "end_to_end_duration": end_to_end_duration(s),
        "alignment_buffered": 0,
        "processed_data": 0,
        "persisted_data": 0,
        "num_subtasks": s.num_subtasks,
        "num_acknowledged_subtasks": s.num_acknowledged_subtasks,
        "checkpoint_type": s.checkpoint_type,
        "tasks": tasks,
    });
    match s.status {
        CheckpointStatus::Completed => {
            body["external_path"] = json!(s.external_path);
            body["discarded"] = json!(s.discarded);
        }
        CheckpointStatus::Failed => {
            body["failure_timestamp"] = json!(s.failure_timestamp.unwrap_or(0));
            body["failure_message"] = json!(s.failure_message);
        }
        CheckpointStatus::InProgress => {}
    }
    body
}

fn restored_json(r: &RestoredCheckpointStats) -> Value {
    json!({
        "id": r.id,
        "restore_timestamp": r.restore_timestamp,
        "is_savepoint": r.is_savepoint,
        "external_path": r.external_path,
    })
}

/// `GET /jobs/:jobid/checkpoints`.
pub fn statistics_json(stats: &CheckpointStatistics) -> Value {
    let c = &stats.counts;
    let summary = &stats.summary;
    let completed = summary.state_size.count;
    let latest = |s: &Option<CheckpointStats>| s.as_ref().map_or(Value::Null, |s| checkpoint_json(s, Map::new()));
    let history: Vec<Value> = stats.history.iter().map(|s| checkpoint_json(s, Map::new())).collect();
    json!({
        "counts": {
            "restored": c.restored,
            "total": c.total,
            "in_progress": c.in_progress,
            "completed": c.completed,
            "failed": c.failed,
        },
        "summary": {
            "checkpointed_size": summary_json(&summary.state_size),
            "state_size": summary_json(&summary.state_size),
            "end_to_end_duration": summary_json(&summary.end_to_end_duration),
            // Flink shows a constant here.
            "alignment_buffered": zero_summary_json(1),
            "processed_data": zero_summary_json(completed),
            "persisted_data": zero_summary_json(completed),
        },
        "latest": {
            "completed": latest(&stats.latest.completed),
            "savepoint": latest(&stats.latest.savepoint),
            "failed": latest(&stats.latest.failed),
            "restored": stats.latest.restored.as_ref().map_or(Value::Null, restored_json),
        },
        "history": history,
    })
}

/// `GET /jobs/:jobid/checkpoints/config`. Without periodic checkpoints it shows what Flink
/// shows for a streaming job without checkpointing: `at_least_once` and an interval of
/// `Long.MAX_VALUE`.
pub fn config_json(settings: &CheckpointSettings) -> Value {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let config = settings.config.as_ref();
    json!({
        "mode": if config.is_some() { "exactly_once" } else { "at_least_once" },
        "interval": config.map_or(i64::MAX, |c| i64::try_from(millis(c.interval)).unwrap_or(i64::MAX)),
        "timeout": config.map_or(DEFAULT_TIMEOUT_MS, |c| millis(c.timeout)),
        "min_pause": config.map_or(0, |c| millis(c.min_pause)),
        "max_concurrent": config.map_or(1, |c| c.max_concurrent),
        "externalization": {
            "enabled": settings.retention != Retention::NoExternalized,
            "delete_on_cancellation": settings.retention != Retention::RetainOnCancellation,
        },
        "state_backend": "HashMapStateBackend",
        "checkpoint_storage": if settings.checkpoints_dir.is_some() {
            "FileSystemCheckpointStorage"
        } else {
            "JobManagerCheckpointStorage"
        },
        "unaligned_checkpoints": false,
        "tolerable_failed_checkpoints": config.map_or(0, |c| c.tolerable_failures),
        "aligned_checkpoint_timeout": 0,
        // Flint checkpoints only while every task runs.
        "checkpoints_after_tasks_finish": false,
        "state_changelog_enabled": false,
        "changelog_periodic_materialization_interval": CHANGELOG_MATERIALIZATION_INTERVAL_MS,
        "changelog_storage": "memory",
    })
}

/// A job vertex as the checkpoint statistics need it: its parallelism and which subtask each
/// of its attempts (current and prior) ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VertexLayout {
    pub id: JobVertexId,
    pub parallelism: u32,
    pub attempts: BTreeMap<ExecutionAttemptId, u32>,
}

/// The vertices of `graph`, in order.
pub fn layout(graph: &ExecutionGraph) -> Vec<VertexLayout> {
    graph
        .vertices
        .iter()
        .map(|v| VertexLayout {
            id: v.id,
            parallelism: v.parallelism,
            attempts: v
                .subtasks
                .iter()
                .flat_map(|st| std::iter::once(&st.current).chain(&st.prior).map(|e| (e.attempt_id, st.subtask)))
                .collect(),
        })
        .collect()
}

/// The acknowledgements of `vertex`'s subtasks in checkpoint `s`, by subtask index.
fn acks_of<'a>(s: &'a CheckpointStats, vertex: &VertexLayout) -> BTreeMap<u32, &'a SubtaskCheckpointStats> {
    s.subtasks.iter().filter_map(|a| vertex.attempts.get(&a.attempt).map(|&index| (index, a))).collect()
}

/// One vertex's part of checkpoint `s`.
fn task_json(s: &CheckpointStats, vertex: &VertexLayout, acks: &BTreeMap<u32, &SubtaskCheckpointStats>) -> Value {
    let latest_ack = acks.values().map(|a| a.ack_timestamp).max();
    let state_size: u64 = acks.values().map(|a| a.state_size).sum();
    json!({
        "id": s.id,
        "status": status_name(s.status),
        "latest_ack_timestamp": latest_ack.map_or(-1, |t| t as i64),
        "checkpointed_size": state_size,
        "state_size": state_size,
        "end_to_end_duration": latest_ack.map_or(-1, |t| t.saturating_sub(s.trigger_timestamp) as i64),
        "alignment_buffered": 0,
        "processed_data": 0,
        "persisted_data": 0,
        "num_subtasks": vertex.parallelism,
        "num_acknowledged_subtasks": acks.len(),
    })
}

/// `GET /jobs/:jobid/checkpoints/details/:checkpointid`: the checkpoint with its tasks keyed
/// by vertex id.
pub fn details_json(s: &CheckpointStats, vertices: &[VertexLayout]) -> Value {
    let tasks = vertices.iter().map(|v| (v.id.to_string(), task_json(s, v, &acks_of(s, v)))).collect();
    checkpoint_json(s, tasks)
}

/// `GET /jobs/:jobid/checkpoints/details/:checkpointid/subtasks/:vertexid`.
pub fn task_details_json(s: &CheckpointStats, vertex: &VertexLayout) -> Value {
    let acks = acks_of(s, vertex);
    let mut body = task_json(s, vertex, &acks);
    let acked = || acks.values();
    let zeros = || acked().map(|_| 0);
    body["summary"] = json!({
        "checkpointed_size": task_summary_json(acked().map(|a| a.state_size)),
        "state_size": task_summary_json(acked().map(|a| a.state_size)),
        "end_to_end_duration": task_summary_json(acked().map(|a| a.end_to_end_duration)),
        "checkpoint_duration": {
            "sync": task_summary_json(acked().map(|a| a.duration)),
            "async": task_summary_json(zeros()),
        },
        "alignment": {
            "buffered": zero_summary_json(1),
            "processed": task_summary_json(zeros()),
            "persisted": task_summary_json(zeros()),
            "duration": task_summary_json(acked().map(|a| a.alignment_duration)),
        },
        "start_delay": task_summary_json(zeros()),
    });
    let subtasks: Vec<Value> = (0..vertex.parallelism)
        .map(|index| match acks.get(&index) {
            None => json!({ "className": "pending", "index": index, "status": "pending_or_failed" }),
            Some(a) => json!({
                "className": "completed",
                "index": index,
                "ack_timestamp": a.ack_timestamp,
                "end_to_end_duration": a.end_to_end_duration,
                "checkpointed_size": a.state_size,
                "state_size": a.state_size,
                "checkpoint": { "sync": a.duration, "async": 0 },
                "alignment": { "buffered": 0, "processed": 0, "persisted": 0, "duration": a.alignment_duration },
                "start_delay": 0,
                "unaligned_checkpoint": false,
                "aborted": false,
                "status": "completed",
            }),
        })
        .collect();
    body["subtasks"] = json!(subtasks);
    body
}

/// A checkpoint still in the statistics (history or latest), by id.
pub fn find_checkpoint(stats: &CheckpointStatistics, id: u64) -> Option<&CheckpointStats> {
    let latest = [&stats.latest.completed, &stats.latest.savepoint, &stats.latest.failed];
    stats.history.iter().chain(latest.into_iter().flatten()).chain(stats.evicted.iter()).find(|s| s.id == id)
}

// ---------------------------------------------------------------------------------------
// Operations as JSON
// ---------------------------------------------------------------------------------------

/// Which status route asks: Flink keeps savepoint and checkpoint operations apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// Savepoints and stop-with-savepoint: `/jobs/:jobid/savepoints/:triggerid`.
    Savepoint,
    /// `/jobs/:jobid/checkpoints/:triggerid`.
    Checkpoint,
}

impl OperationKind {
    fn name(self) -> &'static str {
        match self {
            OperationKind::Savepoint => "savepoint",
            OperationKind::Checkpoint => "checkpoint",
        }
    }
}

/// A failure cause as Flink serializes a throwable. The class is the cause's leading
/// `java.like.ClassName:` when it has one, else a `CheckpointException`; `serialized-throwable`
/// is a Java-serialized `SerializedThrowable` of it (`flint_common::java_serialized_throwable`).
pub fn failure_cause_json(cause: &str) -> Value {
    let named = cause.split_once(": ").map(|(head, _)| head).filter(|head| {
        head.contains('.')
            && head
                .split('.')
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$'))
    });
    let (class, stack_trace) = match named {
        Some(class) => (class.to_string(), cause.to_string()),
        None => (CHECKPOINT_EXCEPTION.to_string(), format!("{CHECKPOINT_EXCEPTION}: {cause}")),
    };
    let message = stack_trace.strip_prefix(&format!("{class}: ")).unwrap_or(&stack_trace).lines().next().unwrap_or("");
    let serialized = flint_common::java_serialized_throwable::serialize_base64(&class, Some(message), &stack_trace);
    json!({ "class": class, "stack-trace": stack_trace, "serialized-throwable": serialized })
}

/// The answer of a status route, `None` when `status` belongs to the other kind.
pub fn operation_status_json(kind: OperationKind, status: &OperationStatus) -> Option<Value> {
    let completed = |operation: Value| json!({ "status": { "id": "COMPLETED" }, "operation": operation });
    match (kind, status) {
        (_, OperationStatus::InProgress) => Some(json!({ "status": { "id": "IN_PROGRESS" }, "operation": null })),
        (OperationKind::Savepoint, OperationStatus::Completed(OperationResult::Savepoint { location })) => {
            Some(completed(json!({ "location": location })))
        }
        (OperationKind::Checkpoint, OperationStatus::Completed(OperationResult::Checkpoint { checkpoint_id })) => {
            Some(completed(json!({ "checkpointId": checkpoint_id })))
        }
        (_, OperationStatus::Completed(_)) => None,
        (OperationKind::Savepoint, OperationStatus::Failed(cause)) => {
            Some(completed(json!({ "failure-cause": failure_cause_json(cause) })))
        }
        (OperationKind::Checkpoint, OperationStatus::Failed(cause)) => {
            Some(completed(json!({ "failureCause": failure_cause_json(cause) })))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------

/// Accepted and checked, not used: Flint writes one savepoint format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SavepointFormat {
    Canonical,
    Native,
}

/// Accepted and checked, not used: every Flint checkpoint is a full one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckpointType {
    Configured,
    Full,
    Incremental,
}

/// `POST /jobs/:jobid/savepoints`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavepointTriggerRequestBody {
    #[serde(rename = "target-directory")]
    pub target_directory: Option<String>,
    #[serde(rename = "cancel-job")]
    pub cancel_job: Option<bool>,
    #[serde(rename = "triggerId")]
    pub trigger_id: Option<TriggerId>,
    #[serde(rename = "formatType")]
    pub format_type: Option<SavepointFormat>,
}

/// `POST /jobs/:jobid/stop`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopWithSavepointRequestBody {
    #[serde(rename = "targetDirectory")]
    pub target_directory: Option<String>,
    pub drain: Option<bool>,
    #[serde(rename = "triggerId")]
    pub trigger_id: Option<TriggerId>,
    #[serde(rename = "formatType")]
    pub format_type: Option<SavepointFormat>,
}

/// `POST /jobs/:jobid/checkpoints`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointTriggerRequestBody {
    #[serde(rename = "checkpointType")]
    pub checkpoint_type: Option<CheckpointType>,
    #[serde(rename = "triggerId")]
    pub trigger_id: Option<TriggerId>,
}

/// Decodes a request body named `name` after Flink's class; an empty body is `{}`.
pub fn parse_body<T: DeserializeOwned + Default>(body: &[u8], name: &str) -> Result<T, RestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|_| RestError::new(StatusCode::BAD_REQUEST, format!("Request did not match expected format {name}.")))
}

fn directory(raw: Option<String>) -> Option<String> {
    raw.filter(|d| !d.trim().is_empty())
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

pub(crate) fn bad_path_parameter(name: &str, raw: &str) -> RestError {
    RestError::new(
        StatusCode::BAD_REQUEST,
        format!(
            "Bad request, could not parse parameters: Cannot resolve path parameter ({name}) from value \"{raw}\"."
        ),
    )
}

fn parse_checkpoint_id(raw: &str) -> Result<u64, RestError> {
    raw.parse().map_err(|_| bad_path_parameter("checkpointid", raw))
}

pub(crate) fn parse_trigger_id(raw: &str) -> Result<TriggerId, RestError> {
    raw.parse().map_err(|_| bad_path_parameter("triggerid", raw))
}

fn parse_vertex_id(raw: &str) -> Result<JobVertexId, RestError> {
    raw.parse().map_err(|_| bad_path_parameter("vertexid", raw))
}

fn not_found(message: String) -> RestError {
    RestError::new(StatusCode::NOT_FOUND, message)
}

/// The statistics of a job, or Flink's 404 for a job that has none.
async fn job_statistics(
    state: &RestState,
    job_id: JobId,
    message: &str,
) -> Result<(CheckpointStatistics, std::sync::Arc<ExecutionGraph>), RestError> {
    // A running job's snapshot is its own (the graphs in it are shared): unwrapping it
    // copies no graph.
    let s = std::sync::Arc::unwrap_or_clone(snapshot(state, job_id).await?);
    match s.checkpoints {
        Some(stats) => Ok((stats, s.graph)),
        None => Err(not_found(message.to_string())),
    }
}

pub async fn statistics(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let job_id = parse_job_id(&path)?;
    let (stats, _) = job_statistics(&state, job_id, "Checkpointing has not been enabled.").await?;
    Ok(HttpResponse::Ok().json(statistics_json(&stats)))
}

pub async fn config(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let job_id = parse_job_id(&path)?;
    let s = snapshot(&state, job_id).await?;
    if s.checkpoints.is_none() {
        return Err(not_found(format!("Checkpointing is not enabled for this job ({job_id}).")));
    }
    Ok(HttpResponse::Ok().json(config_json(&s.checkpoint_settings)))
}

/// The statistics of one checkpoint of a job and the job's vertices.
async fn checkpoint(
    state: &RestState,
    job: &str,
    checkpoint: &str,
) -> Result<(CheckpointStats, Vec<VertexLayout>), RestError> {
    let job_id = parse_job_id(job)?;
    let checkpoint_id = parse_checkpoint_id(checkpoint)?;
    let (stats, graph) =
        job_statistics(state, job_id, &format!("Checkpointing was not enabled for job {job_id}.")).await?;
    let found = find_checkpoint(&stats, checkpoint_id)
        .cloned()
        .ok_or_else(|| not_found(format!("Could not find checkpointing statistics for checkpoint {checkpoint_id}.")))?;
    Ok((found, layout(&graph)))
}

pub async fn details(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, id) = path.into_inner();
    let (stats, vertices) = checkpoint(&state, &job, &id).await?;
    Ok(HttpResponse::Ok().json(details_json(&stats, &vertices)))
}

pub async fn task_details(state: web::Data<RestState>, path: web::Path<(String, String, String)>) -> Rest {
    let (job, id, vertex) = path.into_inner();
    let vertex_id = parse_vertex_id(&vertex)?;
    let (stats, vertices) = checkpoint(&state, &job, &id).await?;
    let vertex = vertices
        .iter()
        .find(|v| v.id == vertex_id)
        .ok_or_else(|| not_found(format!("There is no checkpoint statistics for task {vertex_id}.")))?;
    Ok(HttpResponse::Ok().json(task_details_json(&stats, vertex)))
}

async fn trigger(
    state: &RestState,
    job_id: JobId,
    operation: SavepointOperation,
    trigger_id: Option<TriggerId>,
) -> Rest {
    let trigger_id = state
        .dispatcher_addr
        .send(TriggerOperation { job_id, operation, trigger_id })
        .await
        .map_err(|_| dispatcher_gone())?
        .map_err(|e| match e {
            OperationError::NotFound(_) => not_found(e.to_string()),
        })?;
    Ok(HttpResponse::Accepted().json(json!({ "request-id": trigger_id })))
}

/// Flink's 400 for a savepoint without a target when the job has no default directory
/// (`state.savepoints.dir` of the cluster or the job).
async fn require_directory(
    state: &RestState,
    job_id: JobId,
    given: &Option<String>,
    field: &str,
) -> Result<(), RestError> {
    if given.is_some() {
        return Ok(());
    }
    let s = snapshot(state, job_id).await?;
    if s.checkpoint_settings.savepoints_dir.is_some() {
        return Ok(());
    }
    Err(RestError::new(
        StatusCode::BAD_REQUEST,
        format!("Config key [state.savepoints.dir] is not set. Property [{field}] must be provided."),
    ))
}

/// `POST /jobs/:jobid/savepoints`.
pub async fn trigger_savepoint(state: web::Data<RestState>, path: web::Path<String>, body: web::Bytes) -> Rest {
    let job_id = parse_job_id(&path)?;
    let body: SavepointTriggerRequestBody = parse_body(&body, "SavepointTriggerRequestBody")?;
    let target_directory = directory(body.target_directory.clone());
    require_directory(&state, job_id, &target_directory, "target-directory").await?;
    if let Some(dir) = &target_directory {
        crate::rest_jobs::check_location(&state, "'target-directory'", dir).await?;
    }
    let operation = SavepointOperation::Savepoint {
        target_directory: directory(body.target_directory),
        cancel_job: body.cancel_job.unwrap_or(false),
    };
    trigger(&state, job_id, operation, body.trigger_id).await
}

/// `POST /jobs/:jobid/stop`.
pub async fn stop(state: web::Data<RestState>, path: web::Path<String>, body: web::Bytes) -> Rest {
    let job_id = parse_job_id(&path)?;
    let body: StopWithSavepointRequestBody = parse_body(&body, "StopWithSavepointRequestBody")?;
    let target_directory = directory(body.target_directory.clone());
    require_directory(&state, job_id, &target_directory, "targetDirectory").await?;
    if let Some(dir) = &target_directory {
        crate::rest_jobs::check_location(&state, "'targetDirectory'", dir).await?;
    }
    let operation = SavepointOperation::Stop {
        target_directory: directory(body.target_directory),
        drain: body.drain.unwrap_or(false),
    };
    trigger(&state, job_id, operation, body.trigger_id).await
}

/// `POST /jobs/:jobid/checkpoints`.
pub async fn trigger_checkpoint(state: web::Data<RestState>, path: web::Path<String>, body: web::Bytes) -> Rest {
    let job_id = parse_job_id(&path)?;
    let body: CheckpointTriggerRequestBody = parse_body(&body, "CheckpointTriggerRequestBody")?;
    trigger(&state, job_id, SavepointOperation::Checkpoint, body.trigger_id).await
}

async fn operation_status(state: &RestState, job: &str, trigger: &str, kind: OperationKind) -> Rest {
    let job_id = parse_job_id(job)?;
    let trigger_id = parse_trigger_id(trigger)?;
    let status =
        state.dispatcher_addr.send(GetOperationStatus { job_id, trigger_id }).await.map_err(|_| dispatcher_gone())?;
    status.and_then(|s| operation_status_json(kind, &s)).map(|body| HttpResponse::Ok().json(body)).ok_or_else(|| {
        not_found(format!("There is no {} operation with triggerId={trigger_id} for job {job_id}.", kind.name()))
    })
}

/// `GET /jobs/:jobid/savepoints/:triggerid` (savepoints and stop-with-savepoint).
pub async fn savepoint_status(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, trigger) = path.into_inner();
    operation_status(&state, &job, &trigger, OperationKind::Savepoint).await
}

/// `GET /jobs/:jobid/checkpoints/:triggerid`.
pub async fn checkpoint_status(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, trigger) = path.into_inner();
    operation_status(&state, &job, &trigger, OperationKind::Checkpoint).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flint_common::job::load_job;

    use super::*;
    use crate::checkpoint_coordinator::{CheckpointConfig, CheckpointCounts, CheckpointSummary, LatestCheckpoints};

    const TRIGGER: u64 = 1_795_216_169_746;

    /// A captured Flink 1.20 answer.
    fn reference(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/flink-rest").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reference {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// `ours` has exactly the fields of `reference`, with the same JSON types, recursively.
    /// Array elements are compared with the reference's first element; the values of objects
    /// keyed by id (`tasks`) with the reference's first value. A percentile may be `"NaN"`
    /// where the reference has a number and the other way round; `savepointFormat` is a string
    /// or null.
    fn assert_same_shape(path: &str, reference: &Value, ours: &Value) {
        let field = path.rsplit('.').next().unwrap_or_default();
        if ["p50", "p90", "p95", "p99", "p999"].contains(&field) {
            assert!(ours.is_number() || ours == "NaN", "{path}: {ours} is no percentile");
            return;
        }
        if field == "savepointFormat" {
            assert!(ours.is_null() || ours.is_string(), "{path}: {ours} is no savepoint format");
            return;
        }
        assert_eq!(kind(reference), kind(ours), "{path}: type differs (reference {reference}, ours {ours})");
        match (reference, ours) {
            (Value::Object(r), Value::Object(o)) if path.ends_with(".tasks") => {
                if let Some(first) = r.values().next() {
                    for (key, value) in o {
                        assert_same_shape(&format!("{path}.{key}"), first, value);
                    }
                }
            }
            (Value::Object(r), Value::Object(o)) => {
                for (key, rv) in r {
                    let ov = o.get(key).unwrap_or_else(|| panic!("{path}.{key} missing in {ours}"));
                    assert_same_shape(&format!("{path}.{key}"), rv, ov);
                }
                for key in o.keys() {
                    assert!(r.contains_key(key), "{path}.{key} is not a field of Flink's response");
                }
            }
            (Value::Array(r), Value::Array(o)) => {
                if let Some(first) = r.first() {
                    for item in o {
                        assert_same_shape(&format!("{path}[]"), first, item);
                    }
                }
            }
            _ => {}
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    /// A job with two vertices: `src` (parallelism 2) and `agg -> out` (parallelism 2).
    fn graph() -> ExecutionGraph {
        let text = r#"{ "flint": 1, "name": "t", "parallelism": 2, "operators": [
            { "id": "src", "op": "source.sequence", "from": 0, "to": 10 },
            { "id": "agg", "op": "aggregate", "inputs": ["src"], "key": ["n"], "aggs": { "c": "count()" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["agg"] } ] }"#;
        let job_graph = load_job(text, 1).expect("valid job").job_graph();
        ExecutionGraph::new(JobId::from_u128(7), &job_graph, 0)
    }

    fn ack(attempt: ExecutionAttemptId, after_ms: u64, state_size: u64) -> SubtaskCheckpointStats {
        SubtaskCheckpointStats {
            attempt,
            ack_timestamp: TRIGGER + after_ms,
            end_to_end_duration: after_ms,
            state_size,
            alignment_duration: 1,
            duration: 2,
        }
    }

    /// A completed checkpoint acknowledged by every subtask of `graph`.
    fn completed(id: u64, graph: &ExecutionGraph) -> CheckpointStats {
        let subtasks: Vec<_> = graph
            .executions()
            .enumerate()
            .map(|(i, (_, st))| ack(st.current.attempt_id, 3 + i as u64, 100 * (i as u64 + 1)))
            .collect();
        CheckpointStats {
            id,
            status: CheckpointStatus::Completed,
            is_savepoint: false,
            checkpoint_type: "CHECKPOINT",
            trigger_timestamp: TRIGGER,
            latest_ack_timestamp: subtasks.iter().map(|s| s.ack_timestamp).max(),
            state_size: subtasks.iter().map(|s| s.state_size).sum(),
            end_to_end_duration: subtasks.iter().map(|s| s.end_to_end_duration).max().unwrap_or(0),
            alignment_duration: 1,
            num_subtasks: subtasks.len() as u32,
            num_acknowledged_subtasks: subtasks.len() as u32,
            external_path: Some(format!("file:/ckpt/job/chk-{id}")),
            discarded: true,
            failure_timestamp: None,
            failure_message: None,
            subtasks,
        }
    }

    fn savepoint(id: u64, graph: &ExecutionGraph) -> CheckpointStats {
        CheckpointStats {
            is_savepoint: true,
            checkpoint_type: "SAVEPOINT",
            external_path: Some("file:/savepoints/savepoint-000007-abc".into()),
            discarded: false,
            ..completed(id, graph)
        }
    }

    /// What the coordinator reports for `count` values all equal to `value`.
    fn summary(count: u64, value: u64) -> StatsSummary {
        if count == 0 {
            return StatsSummary::default();
        }
        let p = Some(value as f64);
        StatsSummary { count, min: value, max: value, avg: value, p50: p, p90: p, p95: p, p99: p, p999: p }
    }

    fn statistics(history: Vec<CheckpointStats>, latest: LatestCheckpoints) -> CheckpointStatistics {
        let completed = history.iter().filter(|s| s.status == CheckpointStatus::Completed).count() as u64;
        CheckpointStatistics {
            counts: CheckpointCounts { total: history.len() as u64, completed, ..CheckpointCounts::default() },
            summary: CheckpointSummary {
                state_size: summary(completed, 1000),
                end_to_end_duration: StatsSummary {
                    p90: (completed > 0).then_some(13.899999999999999),
                    ..summary(completed, 6)
                },
                alignment_duration: summary(completed, 1),
            },
            latest,
            history,
            evicted: Vec::new(),
        }
    }

    #[test]
    fn a_job_without_checkpoints_looks_like_flinks() {
        let empty = statistics(vec![], LatestCheckpoints::default());
        assert_eq!(statistics_json(&empty), reference("jobs_FINISHEDJOBID_checkpoints.json"));
    }

    #[test]
    fn statistics_have_flinks_shape() {
        let g = graph();
        let history = vec![savepoint(3, &g), completed(2, &g), completed(1, &g)];
        let latest = LatestCheckpoints {
            completed: Some(history[1].clone()),
            savepoint: Some(history[0].clone()),
            ..LatestCheckpoints::default()
        };
        let ours = statistics_json(&statistics(history, latest));
        assert_same_shape("checkpoints", &reference("jobs_JOBID_checkpoints__after_savepoint.json"), &ours);
        assert_same_shape("checkpoints", &reference("jobs_JOBID_checkpoints.json")["summary"], &ours["summary"]);

        assert_eq!(ours["counts"], json!({ "restored": 0, "total": 3, "in_progress": 0, "completed": 3, "failed": 0 }));
        let summary = &ours["summary"];
        assert_eq!(summary["end_to_end_duration"]["p90"], json!(13.899999999999999));
        assert_eq!(summary["checkpointed_size"], summary["state_size"]);
        assert_eq!(summary["state_size"]["p50"], json!(1000.0));
        // Not measured: 0 per checkpoint, so 0.0 percentiles once checkpoints completed.
        for unmeasured in ["alignment_buffered", "processed_data", "persisted_data"] {
            assert_eq!(summary[unmeasured], reference("jobs_JOBID_checkpoints.json")["summary"]["persisted_data"]);
        }
        assert!(ours["history"].as_array().unwrap().iter().all(|h| h["tasks"] == json!({})));
        let sp = &ours["latest"]["savepoint"];
        assert_eq!((sp["is_savepoint"].as_bool(), sp["savepointFormat"].as_str()), (Some(true), Some("CANONICAL")));
        assert_eq!(sp["checkpoint_type"], "SAVEPOINT");
        assert_eq!(ours["latest"]["completed"]["savepointFormat"], Value::Null);
        assert_eq!(ours["latest"]["completed"]["end_to_end_duration"], 6);
    }

    #[test]
    fn failed_in_progress_and_restored_checkpoints_have_flinks_fields() {
        let g = graph();
        let reference = reference("jobs_JOBID_checkpoints.json")["latest"]["completed"].clone();
        let base: Vec<&str> =
            keys(&reference).into_iter().filter(|k| !["external_path", "discarded"].contains(k)).collect();

        let mut pending = completed(4, &g);
        pending.status = CheckpointStatus::InProgress;
        pending.subtasks.truncate(1);
        pending.num_acknowledged_subtasks = 1;
        pending.external_path = None;
        let json = checkpoint_json(&pending, Map::new());
        assert_eq!(keys(&json), base);
        assert_eq!((json["className"].as_str(), json["status"].as_str()), (Some("in_progress"), Some("IN_PROGRESS")));
        let mut unacknowledged = pending.clone();
        unacknowledged.latest_ack_timestamp = None;
        let json = checkpoint_json(&unacknowledged, Map::new());
        assert_eq!((json["latest_ack_timestamp"].as_i64(), json["end_to_end_duration"].as_i64()), (Some(-1), Some(-1)));

        let mut failed = pending;
        failed.status = CheckpointStatus::Failed;
        failed.failure_timestamp = Some(TRIGGER + 40);
        failed.failure_message = Some("Checkpoint expired before completing.".into());
        let json = checkpoint_json(&failed, Map::new());
        let mut expected = base.clone();
        expected.extend(["failure_message", "failure_timestamp"]);
        expected.sort_unstable();
        assert_eq!(keys(&json), expected);
        assert_eq!((json["className"].as_str(), json["status"].as_str()), (Some("failed"), Some("FAILED")));
        assert_eq!(json["end_to_end_duration"], 40, "trigger to failure");

        let restored = RestoredCheckpointStats {
            id: 7,
            restore_timestamp: TRIGGER,
            is_savepoint: true,
            external_path: "file:/savepoints/sp".into(),
        };
        let latest =
            LatestCheckpoints { failed: Some(failed), restored: Some(restored), ..LatestCheckpoints::default() };
        let ours = statistics_json(&statistics(vec![], latest));
        assert_eq!(keys(&ours["latest"]["restored"]), ["external_path", "id", "is_savepoint", "restore_timestamp"]);
        assert_eq!(ours["latest"]["failed"]["failure_message"], "Checkpoint expired before completing.");
    }

    fn settings(config: Option<CheckpointConfig>, checkpoints_dir: Option<&str>) -> CheckpointSettings {
        CheckpointSettings {
            config,
            checkpoints_dir: checkpoints_dir.map(str::to_owned),
            savepoints_dir: None,
            retention: Retention::NoExternalized,
        }
    }

    #[test]
    fn config_matches_flinks() {
        // Flint checkpoints only while every task runs, which Flink calls
        // `checkpoints_after_tasks_finish: false`.
        let mut flink = reference("jobs_JOBID_checkpoints_config.json");
        flink["checkpoints_after_tasks_finish"] = json!(false);
        let on = settings(Some(CheckpointConfig::with_interval(Duration::from_secs(1))), Some("file:/data/flink/ckpt"));
        assert_eq!(config_json(&on), flink);

        let mut flink = reference("jobs_FINISHEDJOBID_checkpoints_config.json");
        flink["checkpoints_after_tasks_finish"] = json!(false);
        assert_eq!(config_json(&settings(None, None)), flink);

        let mut custom = CheckpointConfig::with_interval(Duration::from_millis(500));
        custom.timeout = Duration::from_secs(30);
        custom.min_pause = Duration::from_millis(100);
        custom.max_concurrent = 2;
        custom.tolerable_failures = 3;
        let mut s = settings(Some(custom), Some("/ckpt"));
        let json = config_json(&s);
        assert_eq!(
            [&json["interval"], &json["timeout"], &json["min_pause"], &json["max_concurrent"]],
            [&json!(500), &json!(30_000), &json!(100), &json!(2)]
        );
        assert_eq!(json["tolerable_failed_checkpoints"], 3);
        for (retention, enabled, delete_on_cancellation) in [
            (Retention::NoExternalized, false, true),
            (Retention::DeleteOnCancellation, true, true),
            (Retention::RetainOnCancellation, true, false),
        ] {
            s.retention = retention;
            assert_eq!(
                config_json(&s)["externalization"],
                json!({ "enabled": enabled, "delete_on_cancellation": delete_on_cancellation }),
                "{retention:?}"
            );
        }
    }

    #[test]
    fn details_group_the_subtasks_by_vertex() {
        let g = graph();
        let vertices = layout(&g);
        assert_eq!(vertices.len(), 2);
        let stats = completed(60, &g);
        let ours = details_json(&stats, &vertices);
        assert_same_shape("details", &reference("jobs_JOBID_checkpoints_details_CHECKPOINTID.json"), &ours);

        let tasks = ours["tasks"].as_object().unwrap();
        assert_eq!(tasks.len(), 2);
        let (first, second) = (&tasks[&vertices[0].id.to_string()], &tasks[&vertices[1].id.to_string()]);
        // Subtasks ack 3, 4, 5, 6 ms after the trigger with 100, 200, 300, 400 bytes.
        assert_eq!((first["state_size"].as_u64(), second["state_size"].as_u64()), (Some(300), Some(700)));
        assert_eq!((first["end_to_end_duration"].as_u64(), second["end_to_end_duration"].as_u64()), (Some(4), Some(6)));
        assert_eq!(first["latest_ack_timestamp"], TRIGGER + 4);
        assert_eq!((first["num_subtasks"].as_u64(), first["num_acknowledged_subtasks"].as_u64()), (Some(2), Some(2)));
        assert_eq!(first["status"], "COMPLETED");
    }

    #[test]
    fn subtask_details_have_flinks_shape() {
        let mut g = graph();
        let stats = completed(60, &g);
        let vertices = layout(&g);
        let ours = task_details_json(&stats, &vertices[1]);
        assert_same_shape(
            "subtasks",
            &reference("jobs_JOBID_checkpoints_details_CHECKPOINTID_subtasks_VERTEXID2.json"),
            &ours,
        );
        assert_eq!(ours["summary"]["state_size"]["min"], 300);
        assert_eq!(ours["summary"]["state_size"]["avg"], 350);
        assert_eq!(ours["summary"]["checkpoint_duration"]["sync"]["max"], 2);
        assert_eq!(ours["summary"]["alignment"]["duration"]["max"], 1);
        assert_eq!(ours["subtasks"][1]["index"], 1);
        assert_eq!(ours["subtasks"][1]["end_to_end_duration"], 6);

        // A subtask not acknowledged yet; its attempt was replaced since (a prior attempt
        // still maps to its subtask).
        let mut pending = stats;
        pending.status = CheckpointStatus::InProgress;
        pending.subtasks.retain(|a| a.attempt != g.vertices[1].subtasks[0].current.attempt_id);
        let old = g.vertices[1].subtasks[1].current.clone();
        g.vertices[1].subtasks[1].prior.push(old);
        g.vertices[1].subtasks[1].current.attempt_id = ExecutionAttemptId::from_u128(99);
        let ours = task_details_json(&pending, &layout(&g)[1]);
        assert_eq!(ours["subtasks"][0], json!({ "className": "pending", "index": 0, "status": "pending_or_failed" }));
        assert_eq!(ours["subtasks"][1]["status"], "completed");
        assert_eq!((ours["num_subtasks"].as_u64(), ours["num_acknowledged_subtasks"].as_u64()), (Some(2), Some(1)));
        assert_eq!(ours["summary"]["state_size"]["p50"], "NaN");
    }

    #[test]
    fn checkpoints_are_found_in_history_and_latest() {
        let g = graph();
        let old_savepoint = savepoint(1, &g);
        let latest = LatestCheckpoints { savepoint: Some(old_savepoint), ..LatestCheckpoints::default() };
        let stats = statistics(vec![completed(12, &g)], latest);
        assert_eq!(find_checkpoint(&stats, 12).map(|s| s.id), Some(12));
        assert_eq!(find_checkpoint(&stats, 1).map(|s| s.is_savepoint), Some(true));
        assert!(find_checkpoint(&stats, 999_999).is_none());
    }

    #[test]
    fn operation_answers_match_flinks() {
        use OperationKind::{Checkpoint, Savepoint};
        let location = "file:/data/flink/savepoints/savepoint-d32372-909f1d4f8e88".to_string();
        let done = OperationStatus::Completed(OperationResult::Savepoint { location });
        assert_eq!(
            operation_status_json(Savepoint, &done),
            Some(reference("jobs_JOBID_savepoints_TRIGGERID__savepoint_COMPLETED.json"))
        );
        assert_eq!(
            operation_status_json(Savepoint, &OperationStatus::InProgress),
            Some(reference("jobs_RESTJOBID_savepoints_STOPTRIGGERID__stop_IN_PROGRESS.json"))
        );
        let checkpoint = OperationStatus::Completed(OperationResult::Checkpoint { checkpoint_id: 71 });
        assert_eq!(
            operation_status_json(Checkpoint, &checkpoint),
            Some(reference("jobs_JOBID_checkpoints_CKPTTRIGGERID__checkpoint_COMPLETED.json"))
        );
        assert_eq!(
            operation_status_json(Checkpoint, &OperationStatus::InProgress),
            Some(reference("jobs_JOBID_checkpoints_CKPTTRIGGERID__checkpoint_IN_PROGRESS.json"))
        );
        assert_eq!(operation_status_json(Savepoint, &checkpoint), None);
        assert_eq!(operation_status_json(Checkpoint, &done), None);

        let cause = "org.apache.flink.runtime.messages.FlinkJobNotFoundException: Could not find Flink job (x)";
        let failed = operation_status_json(Savepoint, &OperationStatus::Failed(cause.into())).unwrap();
        assert_same_shape("failed", &reference("jobs_FINISHEDJOBID_savepoints_FTRIGGERID__finishedjob.json"), &failed);
        let fc = &failed["operation"]["failure-cause"];
        assert_eq!(fc["class"], "org.apache.flink.runtime.messages.FlinkJobNotFoundException");
        assert_eq!(fc["stack-trace"], cause);
        let plain = failure_cause_json("Cannot take a savepoint: not all tasks of job x are running.");
        assert_eq!(plain["class"], CHECKPOINT_EXCEPTION);
        assert_eq!(
            plain["stack-trace"],
            format!("{CHECKPOINT_EXCEPTION}: Cannot take a savepoint: not all tasks of job x are running.")
        );
        let failed = operation_status_json(Checkpoint, &OperationStatus::Failed("declined".into())).unwrap();
        assert_eq!(keys(&failed["operation"]), ["failureCause"]);
    }

    #[test]
    fn request_bodies_as_flink_reads_them() {
        let body: SavepointTriggerRequestBody =
            parse_body(br#"{"target-directory": "file:///data/flink/savepoints", "cancel-job": false}"#, "X").unwrap();
        assert_eq!(body.target_directory.as_deref(), Some("file:///data/flink/savepoints"));
        assert_eq!(body.cancel_job, Some(false));
        let body: SavepointTriggerRequestBody = parse_body(
            br#"{"triggerId": "0123456789abcdef0123456789abcdef", "formatType": "NATIVE", "cancel-job": null}"#,
            "X",
        )
        .unwrap();
        assert_eq!(body.trigger_id, Some(TriggerId::from_u128(0x0123456789abcdef0123456789abcdef)));
        assert_eq!(body.format_type, Some(SavepointFormat::Native));
        let empty: SavepointTriggerRequestBody = parse_body(b" ", "X").unwrap();
        assert!(empty.target_directory.is_none() && empty.cancel_job.is_none());

        // The request of the captured 400, and other mismatches.
        let flink = reference("POST_jobs_JOBID_savepoints__error.json");
        let flink = flink["errors"][0].as_str().unwrap();
        for bad in [&br#"{"bogus": 1, "cancel-job": "notabool"}"#[..], br#"{"triggerId": "xyz"}"#, b"[", b"null"] {
            let err = parse_body::<SavepointTriggerRequestBody>(bad, "SavepointTriggerRequestBody").unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            let message = &err.errors[0];
            assert_eq!(message, "Request did not match expected format SavepointTriggerRequestBody.");
            assert!(flink.contains(message.as_str()), "{flink}");
        }

        let stop: StopWithSavepointRequestBody =
            parse_body(br#"{"targetDirectory": "file:///data/flink/savepoints", "drain": false}"#, "X").unwrap();
        assert_eq!(
            (stop.target_directory.as_deref(), stop.drain),
            (Some("file:///data/flink/savepoints"), Some(false))
        );
        assert!(parse_body::<StopWithSavepointRequestBody>(br#"{"target-directory": "/x"}"#, "X").is_err());

        let checkpoint: CheckpointTriggerRequestBody = parse_body(b"{}", "X").unwrap();
        assert_eq!(checkpoint.checkpoint_type, None);
        let checkpoint: CheckpointTriggerRequestBody = parse_body(br#"{"checkpointType": "FULL"}"#, "X").unwrap();
        assert_eq!(checkpoint.checkpoint_type, Some(CheckpointType::Full));
        assert!(parse_body::<CheckpointTriggerRequestBody>(br#"{"checkpointType": "SAVEPOINT"}"#, "X").is_err());
        assert_eq!(directory(Some(" ".into())), None);
    }

    #[test]
    fn error_messages_are_flinks() {
        let details = reference("jobs_JOBID_checkpoints_details_999999__error.json");
        assert!(details["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("org.apache.flink.runtime.rest.handler.RestHandlerException: Could not find checkpointing statistics for checkpoint 999999.\n"));
        let savepoint = reference("jobs_JOBID_savepoints_00000000000000000000000000000000__error.json");
        let job = "d32372ce5f35ca47aae45d20b7c5d776";
        let ours = format!(
            "There is no {} operation with triggerId={} for job {job}.",
            OperationKind::Savepoint.name(),
            TriggerId::from_u128(0)
        );
        assert!(savepoint["errors"][0].as_str().unwrap().contains(&ours), "{ours}");
        assert_eq!(
            bad_path_parameter("checkpointid", "x").errors[0],
            "Bad request, could not parse parameters: Cannot resolve path parameter (checkpointid) from value \"x\"."
        );
    }
}
