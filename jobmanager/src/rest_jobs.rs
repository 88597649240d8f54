//! The job endpoints of the REST API: submission, cancellation and the job, vertex and
//! subtask views, in Flink 1.20's shapes. Job state comes from the Dispatcher as
//! [`JobSnapshot`]s (a running job's JobMaster answers; a finished job's snapshot is
//! archived in the Dispatcher).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use flint_common::ids::{JobId, JobVertexId};
use flint_common::job::load_job;
use flint_common::process::epoch_ms;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::dispatcher::{CancelError, CancelJobRequest, GetJob, SubmitError, SubmitJob};
use crate::execution_graph::{ExecutionJobVertex, ExecutionState, ExecutionVertex, JobStatus};
use crate::job_master::JobSnapshot;
use crate::rest::{parse_job_id, Rest, RestError, RestState};

pub(crate) fn dispatcher_gone() -> RestError {
    RestError::new(StatusCode::SERVICE_UNAVAILABLE, "The Dispatcher is not available.")
}

pub(crate) async fn snapshot(state: &RestState, job_id: JobId) -> Result<std::sync::Arc<JobSnapshot>, RestError> {
    state
        .dispatcher_addr
        .send(GetJob(job_id))
        .await
        .map_err(|_| dispatcher_gone())?
        .ok_or_else(|| RestError::new(StatusCode::NOT_FOUND, format!("Job {job_id} not found")))
}

fn counts_json(counts: &std::collections::BTreeMap<ExecutionState, usize>) -> Value {
    let mut map = serde_json::Map::new();
    for state in ExecutionState::ALL {
        map.insert(state.flink_name().to_string(), json!(counts.get(&state).copied().unwrap_or(0)));
    }
    map.insert("RECONCILING".into(), json!(0));
    Value::Object(map)
}

/// Start, end (-1 while running) and duration of a vertex, from its subtasks.
fn vertex_times(v: &ExecutionJobVertex, now: u64) -> (i64, i64, i64) {
    let start = v
        .subtasks
        .iter()
        .map(|s| s.current.timestamp(ExecutionState::Deploying))
        .filter(|t| *t > 0)
        .min()
        .map_or(-1, |t| t as i64);
    let all_done = v.subtasks.iter().all(|s| s.current.state.is_terminal());
    let end = if all_done {
        v.subtasks
            .iter()
            .map(|s| {
                [ExecutionState::Finished, ExecutionState::Canceled, ExecutionState::Failed]
                    .iter()
                    .map(|st| s.current.timestamp(*st))
                    .max()
                    .unwrap_or(0)
            })
            .max()
            .map_or(-1, |t| t as i64)
    } else {
        -1
    };
    let duration = match (start, end) {
        (-1, _) => -1,
        (s, -1) => now as i64 - s,
        (s, e) => e - s,
    };
    (start, end, duration)
}

fn metrics_json(m: &crate::execution_graph::IoMetrics) -> Value {
    json!({
        "read-bytes": m.read_bytes,
        "read-bytes-complete": true,
        "write-bytes": m.write_bytes,
        "write-bytes-complete": true,
        "read-records": m.read_records,
        "read-records-complete": true,
        "write-records": m.write_records,
        "write-records-complete": true,
        "accumulated-backpressured-time": 0,
        "accumulated-idle-time": 0,
        "accumulated-busy-time": "NaN",
    })
}

fn job_times(s: &JobSnapshot, now: u64) -> (i64, i64, i64) {
    let g = &s.graph;
    let start = g.status_timestamp(JobStatus::Initializing);
    let end = if g.status.is_globally_terminal() { g.status_timestamp(g.status) } else { -1 };
    let duration = if end >= 0 { end - start } else { now as i64 - start };
    (start, end, duration)
}

fn job_json(s: &JobSnapshot) -> Value {
    let now = epoch_ms();
    let g = &s.graph;
    let (start, end, duration) = job_times(s, now);
    let mut timestamps = serde_json::Map::new();
    for status in JobStatus::ALL {
        timestamps.insert(status.flink_name().into(), json!(g.status_timestamps.get(&status).copied().unwrap_or(0)));
    }
    timestamps.insert("RECONCILING".into(), json!(0));
    let vertices: Vec<Value> = g
        .vertices
        .iter()
        .map(|v| {
            let (vs, ve, vd) = vertex_times(v, now);
            json!({
                "id": v.id,
                "slotSharingGroupId": v.id,
                "name": v.name,
                "maxParallelism": s.job_graph.max_parallelism,
                "parallelism": v.parallelism,
                "status": v.aggregate_state().flink_name(),
                "start-time": vs,
                "end-time": ve,
                "duration": vd,
                "tasks": counts_json(&v.state_counts()),
                "metrics": metrics_json(&v.metrics()),
            })
        })
        .collect();
    json!({
        "jid": g.job_id,
        "name": g.name,
        "isStoppable": false,
        "state": g.status.flink_name(),
        "job-type": "STREAMING",
        "start-time": start,
        "end-time": end,
        "duration": duration,
        "maxParallelism": -1,
        "now": now,
        "timestamps": timestamps,
        "vertices": vertices,
        "status-counts": counts_json(&g.state_counts()),
        "plan": s.job_graph.plan_json(g.job_id),
    })
}

/// One job in `/jobs/overview`.
pub fn overview_json(s: &JobSnapshot) -> Value {
    let (start, end, duration) = job_times(s, epoch_ms());
    let g = &s.graph;
    let mut tasks = serde_json::Map::new();
    for (state, n) in g.state_counts() {
        tasks.insert(state.flink_name().to_lowercase(), json!(n));
    }
    tasks.insert("reconciling".into(), json!(0));
    tasks.insert("total".into(), json!(g.num_tasks()));
    json!({
        "jid": g.job_id,
        "name": g.name,
        "start-time": start,
        "end-time": end,
        "duration": duration,
        "state": g.status.flink_name(),
        "last-modification": g.status_timestamp(g.status),
        "tasks": tasks,
    })
}

/// `POST /jobs`: the body is a job document (JSON). Query `jobId` fixes the id,
/// `parallelism` overrides the default parallelism.
#[derive(Deserialize)]
pub struct SubmitQuery {
    #[serde(rename = "jobId")]
    job_id: Option<String>,
    parallelism: Option<u32>,
    #[serde(rename = "savepointPath")]
    savepoint_path: Option<String>,
    #[serde(rename = "allowNonRestoredState", default)]
    allow_non_restored_state: Option<bool>,
}

pub async fn submit(state: web::Data<RestState>, query: web::Query<SubmitQuery>, body: web::Bytes) -> Rest {
    let job_id = match &query.job_id {
        Some(raw) => Some(parse_job_id(raw)?),
        None => None,
    };
    let text = std::str::from_utf8(&body)
        .map_err(|_| RestError::new(StatusCode::BAD_REQUEST, "The job document is not valid UTF-8."))?;
    let parallelism = query.parallelism.unwrap_or(state.default_parallelism);
    if parallelism == 0 {
        return Err(RestError::new(StatusCode::BAD_REQUEST, "parallelism must be positive"));
    }
    let job = load_job(text, parallelism).map_err(|e| RestError {
        status: StatusCode::BAD_REQUEST,
        errors: e.problems.iter().map(ToString::to_string).collect(),
    })?;
    let graph = job.job_graph();
    let job_id = state
        .dispatcher_addr
        .send(SubmitJob {
            job_id,
            graph,
            savepoint_path: query.savepoint_path.clone().filter(|p| !p.trim().is_empty()),
            allow_non_restored_state: query.allow_non_restored_state.unwrap_or(false),
        })
        .await
        .map_err(|_| dispatcher_gone())?
        .map_err(|e| match e {
            SubmitError::Duplicate(_) => RestError::new(StatusCode::CONFLICT, e.to_string()),
            SubmitError::InvalidSavepoint(_) => RestError::new(StatusCode::BAD_REQUEST, e.to_string()),
            SubmitError::NotLeader | SubmitError::Store(_) => {
                RestError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        })?;
    Ok(HttpResponse::Accepted().json(json!({ "jobUrl": format!("/jobs/{job_id}") })))
}

#[derive(Deserialize)]
pub struct CancelQuery {
    mode: Option<String>,
}

/// `PATCH /jobs/:jobid?mode=cancel`.
pub async fn cancel(state: web::Data<RestState>, path: web::Path<String>, query: web::Query<CancelQuery>) -> Rest {
    let job_id = parse_job_id(&path)?;
    match query.mode.as_deref() {
        None | Some("cancel") => {}
        Some(other) => {
            return Err(RestError::new(
                StatusCode::BAD_REQUEST,
                format!("Bad request, could not parse parameters: Cannot resolve query parameter (mode) from value \"{other}\"."),
            ))
        }
    }
    let result = state.dispatcher_addr.send(CancelJobRequest(job_id)).await.map_err(|_| dispatcher_gone())?;
    match result {
        Ok(()) => Ok(HttpResponse::Accepted().json(json!({}))),
        Err(CancelError::NotFound(_)) => Err(RestError::new(StatusCode::NOT_FOUND, "Job could not be found.")),
        // Cancelling an already cancelling job is accepted again, as Flink does.
        Err(CancelError::NotCancelable { status: JobStatus::Cancelling, .. }) => {
            Ok(HttpResponse::Accepted().json(json!({})))
        }
        Err(CancelError::NotCancelable { status, .. }) => Err(RestError::new(
            StatusCode::CONFLICT,
            format!("Job cancellation failed because the job has already reached another terminal state ({status})."),
        )),
    }
}

pub async fn job(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let s = snapshot(&state, parse_job_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(job_json(&s)))
}

pub async fn status(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let s = snapshot(&state, parse_job_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(json!({ "status": s.graph.status.flink_name() })))
}

pub async fn plan(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let s = snapshot(&state, parse_job_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(json!({ "plan": s.job_graph.plan_json(s.graph.job_id) })))
}

pub async fn config(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let s = snapshot(&state, parse_job_id(&path)?).await?;
    let parallelism = s.job_graph.vertices.iter().map(|v| v.parallelism).max().unwrap_or(1);
    let mut user_config = serde_json::Map::new();
    for (k, v) in &s.job_graph.config {
        user_config.insert(k.clone(), json!(v));
    }
    Ok(HttpResponse::Ok().json(json!({
        "jid": s.graph.job_id,
        "name": s.graph.name,
        "execution-config": {
            "execution-mode": "PIPELINED",
            "restart-strategy": s.restart_strategy,
            "job-parallelism": parallelism,
            "object-reuse-mode": false,
            "user-config": user_config,
        },
    })))
}

#[derive(Deserialize)]
pub struct ExceptionsQuery {
    #[serde(rename = "maxExceptions")]
    max_exceptions: Option<usize>,
}

pub async fn exceptions(
    state: web::Data<RestState>,
    path: web::Path<String>,
    query: web::Query<ExceptionsQuery>,
) -> Rest {
    let s = snapshot(&state, parse_job_id(&path)?).await?;
    let max = query.max_exceptions.unwrap_or(usize::MAX);
    let entries: Vec<Value> = s
        .exceptions
        .iter()
        .rev()
        .take(max)
        .map(|e| {
            json!({
                "exceptionName": e.exception.split(':').next().unwrap_or_default(),
                "stacktrace": e.exception,
                "timestamp": e.timestamp_ms,
                "taskName": e.task_name,
                "location": e.location,
                "endpoint": e.location,
                "taskManagerId": e.location,
                "failureLabels": {},
                "concurrentExceptions": [],
            })
        })
        .collect();
    let all: Vec<Value> = s
        .exceptions
        .iter()
        .rev()
        .take(max)
        .map(|e| json!({ "exception": e.exception, "task": e.task_name, "location": e.location, "timestamp": e.timestamp_ms }))
        .collect();
    let root = s.exceptions.last();
    Ok(HttpResponse::Ok().json(json!({
        "root-exception": root.map(|e| e.exception.clone()),
        "timestamp": root.map(|e| e.timestamp_ms),
        "all-exceptions": all,
        "truncated": s.exceptions.len() > max,
        "exceptionHistory": { "entries": entries, "truncated": s.exceptions.len() > max },
    })))
}

/// The job's accumulators: Flint's built-in `sink-records` (records taken by the job's
/// sinks), then the named counters of its operators, summed over the subtasks (a counter
/// named `sink-records` replaces the built-in one).
pub(crate) fn user_accumulators(s: &JobSnapshot) -> Vec<(String, u64)> {
    let mut all = Vec::with_capacity(s.accumulators.len() + 1);
    if !s.accumulators.iter().any(|(name, _)| name == SINK_RECORDS) {
        all.push((SINK_RECORDS.to_string(), s.graph.vertices.iter().map(|v| v.metrics().sink_records).sum()));
    }
    all.extend(s.accumulators.iter().cloned());
    all
}

const SINK_RECORDS: &str = "sink-records";

/// `GET /jobs/:jobid/accumulators`: every accumulator is a `Long`, its value a string, as
/// Flink stringifies them.
pub async fn accumulators(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let s = snapshot(&state, parse_job_id(&path)?).await?;
    let user: Vec<Value> = user_accumulators(&s)
        .into_iter()
        .map(|(name, value)| json!({ "name": name, "type": "Long", "value": value.to_string() }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "job-accumulators": [],
        "user-task-accumulators": user,
        "serialized-user-task-accumulators": {},
    })))
}

pub async fn execution_result(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let s = snapshot(&state, parse_job_id(&path)?).await?;
    let g = &s.graph;
    if !g.status.is_globally_terminal() {
        return Ok(HttpResponse::Ok().json(json!({ "status": { "id": "IN_PROGRESS" } })));
    }
    let (_, _, duration) = job_times(&s, epoch_ms());
    // Flink sends each value as a serialized Java object; Flint has none and sends the
    // value as a decimal string (still a string, as the field's type is).
    let accumulator_results: serde_json::Map<String, Value> =
        user_accumulators(&s).into_iter().map(|(name, value)| (name, json!(value.to_string()))).collect();
    let mut result = json!({
        "id": g.job_id,
        "application-status": g.status.flink_name(),
        "accumulator-results": accumulator_results,
        "net-runtime": duration,
    });
    if let Some(cause) = &g.failure_cause {
        result["failure-cause"] = json!({ "class": "org.apache.flink.runtime.JobException", "stack-trace": cause, "serialized-throwable": "" });
    }
    Ok(HttpResponse::Ok().json(json!({ "status": { "id": "COMPLETED" }, "job-execution-result": result })))
}

fn find_vertex<'a>(s: &'a JobSnapshot, raw: &str) -> Result<&'a ExecutionJobVertex, RestError> {
    let id: JobVertexId = raw.parse().map_err(|_| {
        RestError::new(
            StatusCode::BAD_REQUEST,
            format!("Bad request, could not parse parameters: Cannot resolve path parameter (vertexid) from value \"{raw}\"."),
        )
    })?;
    s.graph
        .vertices
        .iter()
        .find(|v| v.id == id)
        .ok_or_else(|| RestError::new(StatusCode::NOT_FOUND, format!("JobVertex with id {id} not found.")))
}

fn subtask_json(
    v: &ExecutionJobVertex,
    st: &ExecutionVertex,
    attempt: &crate::execution_graph::Execution,
    now: u64,
) -> Value {
    let start = attempt.timestamp(ExecutionState::Deploying);
    let end_ts = [ExecutionState::Finished, ExecutionState::Canceled, ExecutionState::Failed]
        .iter()
        .map(|s| attempt.timestamp(*s))
        .max()
        .unwrap_or(0);
    let (start, end) = (if start > 0 { start as i64 } else { -1 }, if end_ts > 0 { end_ts as i64 } else { -1 });
    let duration = match (start, end) {
        (-1, _) => -1,
        (s, -1) => now as i64 - s,
        (s, e) => e - s,
    };
    let host = attempt.assignment.as_ref().map_or_else(|| "(unassigned)".to_string(), |a| a.host.clone());
    let tm = attempt.assignment.as_ref().map_or_else(String::new, |a| a.resource_id.to_string());
    let mut status_durations = serde_json::Map::new();
    for state in ExecutionState::ALL {
        status_durations.insert(state.flink_name().into(), json!(attempt.timestamp(state)));
    }
    let _ = v;
    json!({
        "subtask": st.subtask,
        "status": attempt.state.flink_name(),
        "attempt": attempt.attempt_number,
        "endpoint": host,
        "start-time": start,
        "end-time": end,
        "duration": duration,
        "metrics": metrics_json(&attempt.metrics),
        "taskmanager-id": tm,
        "start_time": start,
        "status-duration": status_durations,
    })
}

pub async fn vertex(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, vertex) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let now = epoch_ms();
    let subtasks: Vec<Value> = v.subtasks.iter().map(|st| subtask_json(v, st, &st.current, now)).collect();
    Ok(HttpResponse::Ok().json(json!({
        "id": v.id,
        "name": v.name,
        "parallelism": v.parallelism,
        "maxParallelism": s.job_graph.max_parallelism,
        "now": now,
        "subtasks": subtasks,
    })))
}

pub async fn subtask_times(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, vertex) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let now = epoch_ms();
    let subtasks: Vec<Value> = v
        .subtasks
        .iter()
        .map(|st| {
            let mut timestamps = serde_json::Map::new();
            for state in ExecutionState::ALL {
                timestamps.insert(state.flink_name().into(), json!(st.current.timestamp(state)));
            }
            let start = st.current.timestamp(ExecutionState::Deploying);
            json!({
                "subtask": st.subtask,
                "host": st.current.assignment.as_ref().map_or("(unassigned)", |a| a.host.as_str()),
                "endpoint": st.current.assignment.as_ref().map_or("(unassigned)", |a| a.host.as_str()),
                "duration": if start > 0 { now as i64 - start as i64 } else { -1 },
                "timestamps": timestamps,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "id": v.id, "name": v.name, "now": now, "subtasks": subtasks })))
}

pub async fn vertex_taskmanagers(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, vertex) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let now = epoch_ms();
    let mut by_tm: std::collections::BTreeMap<String, Vec<&ExecutionVertex>> = Default::default();
    for st in &v.subtasks {
        let tm =
            st.current.assignment.as_ref().map_or_else(|| "(unassigned)".to_string(), |a| a.resource_id.to_string());
        by_tm.entry(tm).or_default().push(st);
    }
    let tms: Vec<Value> = by_tm
        .iter()
        .map(|(tm, subtasks)| {
            let mut counts = std::collections::BTreeMap::new();
            let mut metrics = crate::execution_graph::IoMetrics::default();
            for st in subtasks {
                *counts.entry(st.current.state).or_insert(0usize) += 1;
                metrics.add(&st.current.metrics);
            }
            let host = subtasks[0].current.assignment.as_ref().map_or("(unassigned)", |a| a.host.as_str());
            let first = subtasks.iter().map(|st| st.current.timestamp(ExecutionState::Deploying)).min().unwrap_or(0);
            json!({
                "host": host,
                "endpoint": host,
                "status": v.aggregate_state().flink_name(),
                "start-time": if first > 0 { first as i64 } else { -1 },
                "end-time": -1,
                "duration": if first > 0 { now as i64 - first as i64 } else { -1 },
                "metrics": metrics_json(&metrics),
                "status-counts": counts_json(&counts),
                "taskmanager-id": tm,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "id": v.id, "name": v.name, "now": now, "taskmanagers": tms })))
}

fn find_subtask<'a>(v: &'a ExecutionJobVertex, raw: &str) -> Result<&'a ExecutionVertex, RestError> {
    let index: usize = raw.parse().map_err(|_| {
        RestError::new(
            StatusCode::BAD_REQUEST,
            format!("Bad request, could not parse parameters: Cannot resolve path parameter (subtaskindex) from value \"{raw}\"."),
        )
    })?;
    v.subtasks.get(index).ok_or_else(|| {
        RestError::new(
            StatusCode::NOT_FOUND,
            format!("Invalid subtask index for vertex {}: {index} (parallelism {}).", v.id, v.parallelism),
        )
    })
}

pub async fn subtask(state: web::Data<RestState>, path: web::Path<(String, String, String)>) -> Rest {
    let (job, vertex, index) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let st = find_subtask(v, &index)?;
    Ok(HttpResponse::Ok().json(subtask_json(v, st, &st.current, epoch_ms())))
}

pub async fn subtask_attempt(state: web::Data<RestState>, path: web::Path<(String, String, String, String)>) -> Rest {
    let (job, vertex, index, attempt) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let st = find_subtask(v, &index)?;
    let number: u32 = attempt
        .parse()
        .map_err(|_| RestError::new(StatusCode::BAD_REQUEST, format!("Invalid attempt number \"{attempt}\".")))?;
    let execution =
        std::iter::once(&st.current).chain(st.prior.iter()).find(|e| e.attempt_number == number).ok_or_else(|| {
            RestError::new(StatusCode::NOT_FOUND, format!("Attempt {number} of subtask {index} not found."))
        })?;
    Ok(HttpResponse::Ok().json(subtask_json(v, st, execution, epoch_ms())))
}

pub async fn subtasks_accumulators(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, vertex) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let subtasks: Vec<Value> = v
        .subtasks
        .iter()
        .map(|st| {
            json!({
                "subtask": st.subtask,
                "attempt": st.current.attempt_number,
                "endpoint": st.current.assignment.as_ref().map_or("(unassigned)", |a| a.host.as_str()),
                "user-accumulators": [],
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "id": v.id, "parallelism": v.parallelism, "subtasks": subtasks })))
}
