//! The rest of Flink 1.20's REST API, answered as Flink answers it.
//!
//! - Thread dumps: `GET /jobmanager/thread-dump` and `/taskmanagers/:id/thread-dump`
//!   (`common::process::thread_dump`: names, states, CPU time, kernel wait channel).
//! - `/jobs/:jobid/jobmanager/{config,environment,log-url}` and
//!   `/jobs/:jobid/taskmanagers/:tmid/log-url`: the jobmanager's answers for an existing job;
//!   log URLs follow `historyserver.log.jobmanager.url-pattern` /
//!   `historyserver.log.taskmanager.url-pattern` (`<jobid>`, `<tmid>`) and default to the
//!   dashboard's log pages, as in Flink.
//! - Accumulators of a vertex, of its subtasks and of an attempt (the current attempts'
//!   accumulators; earlier attempts have none).
//! - `PATCH /jobs/:jobid/clientHeartbeat` (202; Flint has no attached-client mode, so a
//!   heartbeat is checked and acknowledged but cancels nothing when it stops),
//!   `POST /jobs/:jobid/coordinators/:operatorid` (Flint's operators have no coordinators:
//!   Flink's 500 for an operator without one), `/jobs/:jobid/rescaling` (Flink 1.20: 503,
//!   "temporarily disabled").
//! - `/datasets`: Flint keeps no cluster data sets (no persisted intermediate results), so
//!   the list is empty and deleting one completes with nothing to release.
//! - `POST /savepoint-disposal` + `GET /savepoint-disposal/:triggerid`: a savepoint (a
//!   directory with a readable `_metadata`, named `savepoint-*` or `chk-*`) is deleted on the
//!   blocking pool; anything else fails the operation with its cause and is left alone.
//!
//! Asynchronous operations of this module live in [`Operations`] (at most
//! [`MAX_OPERATIONS`], the oldest forgotten first).

use std::collections::VecDeque;
use std::sync::Mutex;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use flint_common::config::options;
use flint_common::ids::{JobVertexId, TriggerId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::rest::{parse_job_id, task_executor, Rest, RestError, RestState};
use crate::rest_checkpoints::{bad_path_parameter, failure_cause_json, parse_body, parse_trigger_id};
use crate::rest_jobs::{find_subtask, find_vertex, snapshot};

/// The most asynchronous operations remembered.
pub const MAX_OPERATIONS: usize = 1024;

/// What kind of operation a trigger id belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    DataSetDelete,
    SavepointDisposal,
}

/// The state of the operations of this module: `None` while in progress, else the
/// `operation` object of the answer.
#[derive(Default)]
pub struct Operations {
    entries: Mutex<VecDeque<(TriggerId, Kind, Option<Value>)>>,
}

impl Operations {
    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<(TriggerId, Kind, Option<Value>)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self, kind: Kind, done: Option<Value>) -> TriggerId {
        let id = TriggerId::generate();
        let mut entries = self.entries();
        if entries.len() >= MAX_OPERATIONS {
            entries.pop_front();
        }
        entries.push_back((id, kind, done));
        id
    }

    fn finish(&self, id: TriggerId, operation: Value) {
        if let Some(entry) = self.entries().iter_mut().find(|(t, _, _)| *t == id) {
            entry.2 = Some(operation);
        }
    }

    fn status(&self, id: TriggerId, kind: Kind) -> Option<Value> {
        let entries = self.entries();
        let (_, _, done) = entries.iter().find(|(t, k, _)| *t == id && *k == kind)?;
        Some(match done {
            None => json!({ "status": { "id": "IN_PROGRESS" }, "operation": null }),
            Some(operation) => json!({ "status": { "id": "COMPLETED" }, "operation": operation }),
        })
    }
}

fn bad_request(message: impl Into<String>) -> RestError {
    RestError::new(StatusCode::BAD_REQUEST, message)
}

fn unknown_operation(id: TriggerId) -> RestError {
    RestError::new(StatusCode::NOT_FOUND, format!("Operation not found under key: {id}"))
}

// ---------------------------------------------------------------------------------------
// Thread dumps
// ---------------------------------------------------------------------------------------

fn thread_dump_json(entries: &[flint_common::messages::ThreadDumpEntry]) -> Value {
    let infos: Vec<Value> = entries
        .iter()
        .map(|e| json!({ "threadName": e.thread_name, "stringifiedThreadInfo": e.stringified_thread_info }))
        .collect();
    json!({ "threadInfos": infos })
}

/// `GET /jobmanager/thread-dump`.
pub async fn jobmanager_thread_dump() -> Rest {
    let entries = web::block(flint_common::process::thread_dump)
        .await
        .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(HttpResponse::Ok().json(thread_dump_json(&entries)))
}

/// `GET /taskmanagers/:taskmanagerid/thread-dump`.
pub async fn taskmanager_thread_dump(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let te = task_executor(&state, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(thread_dump_json(&te.thread_dump().await?)))
}

// ---------------------------------------------------------------------------------------
// Job-scoped jobmanager calls and log URLs
// ---------------------------------------------------------------------------------------

/// `GET /jobs/:jobid/jobmanager/config`.
pub async fn job_jobmanager_config(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    snapshot(&state, parse_job_id(&path)?).await?;
    crate::rest::jobmanager_config(state).await
}

/// `GET /jobs/:jobid/jobmanager/environment`.
pub async fn job_jobmanager_environment(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    snapshot(&state, parse_job_id(&path)?).await?;
    crate::rest::jobmanager_environment().await
}

/// The dashboard's address, as the default log URLs name it (`https` when the REST
/// endpoint serves HTTPS).
fn web_url(state: &RestState) -> String {
    let host = state.config.get(&options::REST_ADDRESS).unwrap_or_else(|_| "localhost".into());
    let port = state.config.get_raw(options::REST_PORT.key).unwrap_or("8081");
    let scheme = if state.rest_url.starts_with("https://") { "https" } else { "http" };
    format!("{scheme}://{host}:{port}")
}

/// `GET /jobs/:jobid/jobmanager/log-url`.
pub async fn jobmanager_log_url(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let job = parse_job_id(&path)?;
    snapshot(&state, job).await?;
    let url = match state.config.get_raw("historyserver.log.jobmanager.url-pattern") {
        Some(pattern) => pattern.replace("<jobid>", &job.to_string()),
        None => format!("{}/#/job-manager/logs", web_url(&state)),
    };
    Ok(HttpResponse::Ok().json(json!({ "url": url })))
}

/// `GET /jobs/:jobid/taskmanagers/:taskmanagerid/log-url`.
pub async fn taskmanager_log_url(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, tm) = path.into_inner();
    let job = parse_job_id(&job)?;
    snapshot(&state, job).await?;
    let url = match state.config.get_raw("historyserver.log.taskmanager.url-pattern") {
        Some(pattern) => pattern.replace("<jobid>", &job.to_string()).replace("<tmid>", &tm),
        None => format!("{}/#/task-manager/{tm}/logs", web_url(&state)),
    };
    Ok(HttpResponse::Ok().json(json!({ "url": url })))
}

// ---------------------------------------------------------------------------------------
// Accumulators
// ---------------------------------------------------------------------------------------

fn accumulators_json(values: &[(String, u64)]) -> Vec<Value> {
    values.iter().map(|(name, value)| json!({ "name": name, "type": "Long", "value": value.to_string() })).collect()
}

/// The current attempt's accumulators of subtask `subtask` of the vertex at `vertex_index`.
fn subtask_accumulators(s: &crate::job_master::JobSnapshot, vertex_index: usize, subtask: usize) -> &[(String, u64)] {
    s.subtask_accumulators.iter().find(|(k, _)| *k == (vertex_index, subtask)).map_or(&[], |(_, v)| v.as_slice())
}

fn vertex_index(s: &crate::job_master::JobSnapshot, v: &crate::execution_graph::ExecutionJobVertex) -> usize {
    s.graph.vertices.iter().position(|x| x.id == v.id).unwrap_or(usize::MAX)
}

/// `GET /jobs/:jobid/vertices/:vertexid/accumulators`: summed over the subtasks.
pub async fn vertex_accumulators(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, vertex) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let index = vertex_index(&s, v);
    let mut totals: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for subtask in 0..v.subtasks.len() {
        for (name, value) in subtask_accumulators(&s, index, subtask) {
            *totals.entry(name.clone()).or_default() += value;
        }
    }
    let totals: Vec<(String, u64)> = totals.into_iter().collect();
    Ok(HttpResponse::Ok().json(json!({ "id": v.id, "user-accumulators": accumulators_json(&totals) })))
}

/// `GET /jobs/:jobid/vertices/:vertexid/subtasks/accumulators`.
pub async fn subtasks_accumulators(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, vertex) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let index = vertex_index(&s, v);
    let subtasks: Vec<Value> = v
        .subtasks
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let assignment = st.current.assignment.as_ref();
            json!({
                "subtask": st.subtask,
                "attempt": st.current.attempt_number,
                "host": assignment.map_or("(unassigned)", |a| a.host.as_str()),
                "endpoint": assignment.map_or("(unassigned)", |a| a.data_address.as_str()),
                "user-accumulators": accumulators_json(subtask_accumulators(&s, index, i)),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "id": v.id, "parallelism": v.parallelism, "subtasks": subtasks })))
}

/// `GET /jobs/:jobid/vertices/:vertexid/subtasks/:subtaskindex/attempts/:attempt/accumulators`.
pub async fn attempt_accumulators(
    state: web::Data<RestState>,
    path: web::Path<(String, String, String, String)>,
) -> Rest {
    let (job, vertex, subtask, attempt) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let st = find_subtask(v, &subtask)?;
    let attempt: u32 = attempt.parse().map_err(|_| bad_path_parameter("attempt", &attempt))?;
    let execution = std::iter::once(&st.current).chain(st.prior.iter()).find(|e| e.attempt_number == attempt);
    let Some(execution) = execution else {
        return Err(RestError::new(
            StatusCode::NOT_FOUND,
            format!("Attempt {attempt} not found for subtask {} of vertex {}.", st.subtask, v.id),
        ));
    };
    let values = if execution.attempt_id == st.current.attempt_id {
        subtask_accumulators(&s, vertex_index(&s, v), st.subtask as usize)
    } else {
        &[]
    };
    Ok(HttpResponse::Ok().json(json!({
        "subtask": st.subtask,
        "attempt": attempt,
        "id": execution.attempt_id,
        "user-accumulators": accumulators_json(values),
    })))
}

// ---------------------------------------------------------------------------------------
// Client heartbeat, coordinators, rescaling
// ---------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct ClientHeartbeat {
    #[serde(rename = "expiredTimestamp")]
    expired_timestamp: Option<i64>,
}

/// `PATCH /jobs/:jobid/clientHeartbeat`.
pub async fn client_heartbeat(state: web::Data<RestState>, path: web::Path<String>, body: web::Bytes) -> Rest {
    let job = parse_job_id(&path)?;
    let heartbeat: ClientHeartbeat = parse_body(&body, "JobClientHeartbeatRequestBody")?;
    if heartbeat.expired_timestamp.is_none() {
        return Err(bad_request("Request did not match expected format JobClientHeartbeatRequestBody."));
    }
    snapshot(&state, job).await?;
    Ok(HttpResponse::Accepted().json(json!({})))
}

/// `POST /jobs/:jobid/coordinators/:operatorid`.
pub async fn coordination_request(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, operator) = path.into_inner();
    let job = parse_job_id(&job)?;
    let operator: JobVertexId = operator.parse().map_err(|_| bad_path_parameter("operatorid", &operator))?;
    snapshot(&state, job).await?;
    Err(RestError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "Coordinator of operator {operator} does not exist or the job vertex this operator belongs to is not initialized."
        ),
    ))
}

/// `PATCH /jobs/:jobid/rescaling` and `GET /jobs/:jobid/rescaling/:triggerid`.
pub async fn rescaling() -> Rest {
    Err(RestError::new(StatusCode::SERVICE_UNAVAILABLE, "Rescaling is temporarily disabled. See FLINK-12312."))
}

// ---------------------------------------------------------------------------------------
// Cluster data sets
// ---------------------------------------------------------------------------------------

/// `GET /datasets`.
pub async fn datasets() -> Rest {
    Ok(HttpResponse::Ok().json(json!({ "dataSets": [] })))
}

/// `DELETE /datasets/:datasetid`: nothing to release.
pub async fn delete_dataset(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let raw = path.into_inner();
    if raw.len() != 32 || !raw.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad_path_parameter("datasetid", &raw));
    }
    let id = state.operations.start(Kind::DataSetDelete, Some(json!({ "failure-cause": null })));
    Ok(HttpResponse::Accepted().json(json!({ "request-id": id })))
}

/// `GET /datasets/delete/:triggerid`.
pub async fn delete_dataset_status(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let id = parse_trigger_id(&path)?;
    let status = state.operations.status(id, Kind::DataSetDelete).ok_or_else(|| unknown_operation(id))?;
    Ok(HttpResponse::Ok().json(status))
}

// ---------------------------------------------------------------------------------------
// Savepoint disposal
// ---------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct DisposalRequest {
    #[serde(rename = "savepoint-path")]
    savepoint_path: Option<String>,
}

/// Deletes the savepoint at `path` (a directory with Flint's `_metadata`, or that file).
fn dispose(path: &str) -> Result<(), String> {
    use flint_common::checkpoint_storage::{discard, read_metadata, CheckpointStorage};
    let failed =
        |e: flint_common::checkpoint_storage::StorageError| format!("Could not dispose the savepoint '{path}': {e}");
    // The same locations as `state.savepoints.dir` takes: plain paths and local file URIs.
    let location = CheckpointStorage::new(path).map_err(failed)?.base().to_path_buf();
    read_metadata(&location).map_err(failed)?;
    discard(&location).map_err(failed)
}

/// `POST /savepoint-disposal`.
pub async fn dispose_savepoint(state: web::Data<RestState>, body: web::Bytes) -> Rest {
    let request: DisposalRequest = parse_body(&body, "SavepointDisposalRequest")?;
    let Some(path) = request.savepoint_path.filter(|p| !p.trim().is_empty()) else {
        return Err(bad_request("Request did not match expected format SavepointDisposalRequest."));
    };
    crate::rest_jobs::check_location(&state, "'savepoint-path'", &path).await?;
    let id = state.operations.start(Kind::SavepointDisposal, None);
    let operations = state.clone();
    actix_web::rt::spawn(async move {
        let outcome = web::block(move || dispose(&path)).await.unwrap_or_else(|e| Err(e.to_string()));
        let operation = match outcome {
            Ok(()) => json!({ "failure-cause": null }),
            Err(cause) => json!({ "failure-cause": failure_cause_json(&format!("java.io.IOException: {cause}")) }),
        };
        operations.operations.finish(id, operation);
    });
    Ok(HttpResponse::Ok().json(json!({ "request-id": id })))
}

/// `GET /savepoint-disposal/:triggerid`.
pub async fn disposal_status(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let id = parse_trigger_id(&path)?;
    let status = state.operations.status(id, Kind::SavepointDisposal).ok_or_else(|| unknown_operation(id))?;
    Ok(HttpResponse::Ok().json(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_bounded_and_kept_apart_by_kind() {
        let ops = Operations::default();
        let first = ops.start(Kind::SavepointDisposal, None);
        assert_eq!(ops.status(first, Kind::SavepointDisposal).unwrap()["status"]["id"], "IN_PROGRESS");
        assert!(ops.status(first, Kind::DataSetDelete).is_none(), "a trigger id belongs to one kind");
        ops.finish(first, json!({ "failure-cause": null }));
        let done = ops.status(first, Kind::SavepointDisposal).unwrap();
        assert_eq!(done, json!({ "status": { "id": "COMPLETED" }, "operation": { "failure-cause": null } }));
        for _ in 0..MAX_OPERATIONS {
            ops.start(Kind::DataSetDelete, None);
        }
        assert!(ops.status(first, Kind::SavepointDisposal).is_none(), "the oldest is forgotten");
        assert_eq!(ops.entries().len(), MAX_OPERATIONS);
    }

    #[test]
    fn only_savepoints_are_disposed() {
        let base = std::env::temp_dir().join(format!("flint-dispose-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        // A directory that is not a savepoint (no _metadata) is left alone.
        let other = base.join("savepoint-abc");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("data"), b"keep me").unwrap();
        let err = dispose(other.to_str().unwrap()).unwrap_err();
        assert!(err.contains("incomplete"), "{err}");
        assert!(other.join("data").exists());
        // A directory with metadata but not named like a savepoint is left alone too.
        let named = base.join("important");
        std::fs::create_dir_all(&named).unwrap();
        let meta =
            flint_common::checkpoint_storage::CheckpointMetadata::new(flint_common::ids::JobId::generate(), 1, 1, true);
        std::fs::write(named.join("_metadata"), serde_json::to_vec(&meta).unwrap()).unwrap();
        assert!(dispose(named.to_str().unwrap()).is_err());
        assert!(named.join("_metadata").exists());
        // A savepoint goes, also given as a file:// URI of its _metadata.
        let savepoint = base.join("savepoint-123456-abcdef");
        std::fs::create_dir_all(&savepoint).unwrap();
        std::fs::write(savepoint.join("_metadata"), serde_json::to_vec(&meta).unwrap()).unwrap();
        dispose(&format!("file://{}", savepoint.join("_metadata").display())).unwrap();
        assert!(!savepoint.exists());
        assert!(dispose("/nonexistent/savepoint-1").is_err());
        let _ = std::fs::remove_dir_all(&base);
    }
}
