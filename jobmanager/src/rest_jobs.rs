//! The job endpoints of the REST API: submission, cancellation and the job, vertex and
//! subtask views, in Flink 1.20's shapes. Job state comes from the Dispatcher as
//! [`JobSnapshot`]s (a running job's JobMaster answers; a finished job's snapshot is
//! archived in the Dispatcher).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use flint_common::ids::{JobId, JobVertexId};
use flint_common::io_paths::AllowedPaths;
use flint_common::job::load_job;
use flint_common::job::package::looks_like_zip;
use flint_common::process::epoch_ms;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::dispatcher::{CancelError, CancelJobRequest, GetJob, SubmitError, SubmitJob};
use crate::execution_graph::{Execution, ExecutionJobVertex, ExecutionState, ExecutionVertex, JobStatus};
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

/// Every job the Dispatcher knows, running or archived.
pub(crate) async fn all_snapshots(state: &RestState) -> Result<Vec<std::sync::Arc<JobSnapshot>>, RestError> {
    state.dispatcher_addr.send(crate::dispatcher::GetAllJobs).await.map_err(|_| dispatcher_gone())
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

/// The current execution of every subtask of a vertex.
fn executions(v: &ExecutionJobVertex) -> Vec<&Execution> {
    v.subtasks.iter().map(|st| &st.current).collect()
}

/// The host of a `host:port` endpoint (Flink's `host` next to `endpoint`).
fn host_name(endpoint: &str) -> &str {
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => endpoint,
    }
}

/// A number a task reported by Flink's name.
fn dump_value(e: &Execution, id: &str) -> Option<f64> {
    e.metric_dump.task.iter().find(|(name, _)| name == id).map(|(_, v)| *v)
}

/// Flink's `metrics` object of one execution or a sum over several: counts and the
/// accumulated back-pressured, idle and busy time (`NaN` busy time while none was measured).
fn metrics_json(executions: &[&Execution]) -> Value {
    let mut counts = crate::execution_graph::IoMetrics::default();
    let (mut back_pressured, mut idle, mut busy) = (0.0, 0.0, None::<f64>);
    for e in executions {
        counts.add(&e.metrics);
        back_pressured += dump_value(e, "accumulateBackPressuredTimeMs").unwrap_or(0.0);
        idle += dump_value(e, "accumulateIdleTimeMs").unwrap_or(0.0);
        if let Some(b) = dump_value(e, "accumulateBusyTimeMs") {
            busy = Some(busy.unwrap_or(0.0) + b);
        }
    }
    json!({
        "read-bytes": counts.read_bytes,
        "read-bytes-complete": true,
        "write-bytes": counts.write_bytes,
        "write-bytes-complete": true,
        "read-records": counts.read_records,
        "read-records-complete": true,
        "write-records": counts.write_records,
        "write-records-complete": true,
        "accumulated-backpressured-time": back_pressured as u64,
        "accumulated-idle-time": idle as u64,
        "accumulated-busy-time": busy.map_or(json!("NaN"), |b| json!(b as u64)),
    })
}

/// How long an execution spent in each state it entered (ms), Flink's `status-duration`.
fn status_durations(e: &Execution, now: u64) -> BTreeMap<ExecutionState, u64> {
    let mut entered: Vec<(u64, ExecutionState)> = e.timestamps.iter().map(|(state, ts)| (*ts, *state)).collect();
    entered.sort();
    let mut out = BTreeMap::new();
    for (i, (ts, state)) in entered.iter().enumerate() {
        let until = entered.get(i + 1).map_or(if e.state.is_terminal() { *ts } else { now }, |(next, _)| *next);
        out.insert(*state, until.saturating_sub(*ts));
    }
    out
}

fn status_durations_json(e: &Execution, now: u64) -> Value {
    let map: serde_json::Map<String, Value> =
        status_durations(e, now).into_iter().map(|(state, ms)| (state.flink_name().to_string(), json!(ms))).collect();
    Value::Object(map)
}

/// Flink's summary of some values (`min`, `max`, `avg`, `sum`, `median`, `p25`, `p75`,
/// `p95`, as longs), with its quantile estimate: position `p·(n+1)`, interpolated.
fn summary(values: &mut [f64]) -> Value {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let quantile = |p: f64| -> f64 {
        let pos = p * (n as f64 + 1.0);
        if pos < 1.0 {
            values[0]
        } else if pos >= n as f64 {
            values[n - 1]
        } else {
            let lower = values[pos.floor() as usize - 1];
            let upper = values[pos.floor() as usize];
            lower + (pos - pos.floor()) * (upper - lower)
        }
    };
    let sum: f64 = values.iter().sum();
    json!({
        "min": values[0] as i64,
        "max": values[n - 1] as i64,
        "avg": (sum / n as f64) as i64,
        "sum": sum as i64,
        "median": quantile(0.5) as i64,
        "p25": quantile(0.25) as i64,
        "p75": quantile(0.75) as i64,
        "p95": quantile(0.95) as i64,
    })
}

/// Flink's `aggregated` object: summaries of the executions' metrics and state durations.
fn aggregated_json(executions: &[&Execution], now: u64) -> Value {
    if executions.is_empty() {
        return json!({ "metrics": {}, "status-duration": {} });
    }
    let per: Vec<Value> = executions.iter().map(|e| metrics_json(&[e])).collect();
    let mut metrics = serde_json::Map::new();
    for name in [
        "read-bytes",
        "write-bytes",
        "read-records",
        "write-records",
        "accumulated-backpressured-time",
        "accumulated-idle-time",
        "accumulated-busy-time",
    ] {
        // Busy time not measured (`NaN`) counts as -1, as Flink's summaries show it.
        let mut values: Vec<f64> = per.iter().map(|m| m[name].as_f64().unwrap_or(-1.0)).collect();
        metrics.insert(name.to_string(), summary(&mut values));
    }
    let mut durations: BTreeMap<ExecutionState, Vec<f64>> = BTreeMap::new();
    for e in executions {
        for (state, ms) in status_durations(e, now) {
            durations.entry(state).or_default().push(ms as f64);
        }
    }
    let durations: serde_json::Map<String, Value> =
        durations.into_iter().map(|(state, mut v)| (state.flink_name().to_string(), summary(&mut v))).collect();
    json!({ "metrics": metrics, "status-duration": durations })
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
                "metrics": metrics_json(&executions(v)),
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

pub async fn submit(
    state: web::Data<RestState>,
    req: actix_web::HttpRequest,
    query: web::Query<SubmitQuery>,
    payload: web::Payload,
) -> Rest {
    let job_id = match &query.job_id {
        Some(raw) => Some(parse_job_id(raw)?),
        None => None,
    };
    let parallelism = query.parallelism.unwrap_or(state.default_parallelism);
    if parallelism == 0 {
        return Err(RestError::new(StatusCode::BAD_REQUEST, "parallelism must be positive"));
    }
    let savepoint = query.savepoint_path.clone().filter(|p| !p.trim().is_empty());
    let allow_non_restored = query.allow_non_restored_state.unwrap_or(false);
    let multipart = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    let submission = if multipart {
        let mut pairs = vec![("parallelism".to_string(), parallelism.to_string())];
        pairs.extend(job_id.map(|id| ("jobId".to_string(), id.to_string())));
        pairs.extend(savepoint.map(|p| ("savepointPath".to_string(), p)));
        pairs.push(("allowNonRestoredState".to_string(), allow_non_restored.to_string()));
        let form = actix_multipart::Multipart::new(req.headers(), payload);
        crate::rest_jars::multipart_submission(&state, form, &pairs).await?
    } else {
        // The guard read the body already (bounded by rest.server.max-content-length).
        let body = payload.to_bytes().await.map_err(|e| RestError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        // A zip body is a job package, anything else a job document.
        let graph = if looks_like_zip(&body) {
            let package = state.jars.read_package_bytes(body).await?;
            package.into_graph(&BTreeMap::new(), &BTreeMap::new(), parallelism).map_err(job_error)?
        } else {
            if body.len() > crate::rest::MAX_JOB_DOCUMENT_BYTES {
                return Err(RestError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "A job document may have at most {} bytes; send larger jobs as a job package.",
                        crate::rest::MAX_JOB_DOCUMENT_BYTES
                    ),
                ));
            }
            let text = std::str::from_utf8(&body)
                .map_err(|_| RestError::new(StatusCode::BAD_REQUEST, "The job document is not valid UTF-8."))?;
            load_job(text, parallelism).map_err(job_error)?.job_graph()
        };
        crate::rest_jars::Submission {
            graph,
            job_id,
            savepoint_path: savepoint,
            allow_non_restored_state: allow_non_restored,
        }
    };
    let job_id = submit_graph(
        &state,
        submission.job_id,
        submission.graph,
        submission.savepoint_path,
        submission.allow_non_restored_state,
    )
    .await?;
    Ok(HttpResponse::Accepted().json(json!({ "jobUrl": format!("/jobs/{job_id}") })))
}

/// Checks the job's WebAssembly operators before anything is stored or started: their
/// modules compile, export what the operators call with the right signatures and import only
/// what Flint provides, and the job's `wasm.*` settings parse. Every problem is a 400.
async fn check_wasm(graph: flint_common::job::JobGraph) -> Result<flint_common::job::JobGraph, RestError> {
    use flint_common::job::OperatorKind;
    use flint_wasm::GuestRole;
    let wasm_ops = graph.vertices.iter().flat_map(|v| &v.operators).any(|o| !o.kind.module_paths().is_empty());
    let wasm_config = graph.config.keys().any(|k| k.starts_with("wasm."));
    if !wasm_ops && !wasm_config {
        return Ok(graph);
    }
    let (graph, problems) = tokio::task::spawn_blocking(move || {
        let mut problems = Vec::new();
        let mut config = flint_common::config::Configuration::new();
        for (k, v) in graph.config.iter().filter(|(k, _)| k.starts_with("wasm.")) {
            config.set(k.clone(), v.clone());
        }
        if let Err(e) = config.get_optional(&flint_common::config::options::WASM_MEMORY_MAX) {
            problems.push(format!("job config: {e}"));
        }
        if let Err(e) = config.get_optional(&flint_common::config::options::WASM_CALL_TIMEOUT) {
            problems.push(format!("job config: {e}"));
        }
        for op in graph.vertices.iter().flat_map(|v| &v.operators) {
            let mut checks: Vec<(&str, GuestRole, Vec<&str>, Option<&str>)> = Vec::new();
            if let Some(call) = op.kind.wasm_call() {
                let role = match &op.kind {
                    OperatorKind::WasmMap { .. } => GuestRole::Map,
                    OperatorKind::WasmFlatMap { .. } => GuestRole::FlatMap,
                    _ => GuestRole::Process,
                };
                checks.push((&call.module, role, vec![&call.function], call.timer_function.as_deref()));
            }
            // Scalar functions: each module once, with every export the operator calls.
            for f in op.kind.wasm_functions() {
                match checks.iter_mut().find(|c| c.0 == f.module && c.1 == GuestRole::Scalar) {
                    Some(c) if !c.2.contains(&f.export.as_str()) => c.2.push(&f.export),
                    Some(_) => {}
                    None => checks.push((&f.module, GuestRole::Scalar, vec![&f.export], None)),
                }
            }
            for (module, role, functions, timer_function) in checks {
                let Some(artifact) = graph.artifacts.get(module) else {
                    problems
                        .push(format!("operator '{}': 'module' '{module}' names no file of the job package", op.id));
                    continue;
                };
                let found = flint_wasm::validate::validate(module, &artifact.bytes, role, &functions, timer_function);
                problems.extend(found.into_iter().map(|p| format!("operator '{}': {p}", op.id)));
            }
        }
        (graph, problems)
    })
    .await
    .map_err(|e| {
        RestError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("checking the WebAssembly modules failed: {e}"))
    })?;
    if problems.is_empty() {
        Ok(graph)
    } else {
        Err(RestError { status: StatusCode::BAD_REQUEST, errors: problems })
    }
}

/// This jobmanager's `flint.io.allowed-paths` (validated at startup, so an error here is
/// the server's).
pub(crate) fn allowed_paths(state: &RestState) -> Result<AllowedPaths, RestError> {
    AllowedPaths::from_config(&state.config)
        .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Checks a checkpoint or savepoint directory a request names (`field`) against
/// `flint.io.allowed-paths`, on a blocking thread (it resolves links): 400 when refused.
pub(crate) async fn check_location(state: &RestState, field: &'static str, given: &str) -> Result<(), RestError> {
    let allowed = allowed_paths(state)?;
    if !allowed.is_restricted() {
        return Ok(());
    }
    let given = given.to_string();
    tokio::task::spawn_blocking(move || allowed.check_location(field, &given))
        .await
        .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("checking the path failed: {e}")))?
        .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, e))
}

/// Checks every local path of a submission (the job's and `savepointPath`) against
/// `flint.io.allowed-paths`, on a blocking thread (it resolves links): 400 with every
/// refused path, nothing stored.
async fn check_paths(
    state: &RestState,
    graph: flint_common::job::JobGraph,
    savepoint_path: Option<&str>,
) -> Result<flint_common::job::JobGraph, RestError> {
    let allowed = allowed_paths(state)?;
    if !allowed.is_restricted() {
        return Ok(graph);
    }
    let savepoint_path = savepoint_path.map(str::to_owned);
    let (graph, problems) = tokio::task::spawn_blocking(move || {
        let mut problems = allowed.check_job(&graph).err().map(|e| e.lines()).unwrap_or_default();
        if let Some(path) = savepoint_path {
            problems.extend(allowed.check_restore_path("'savepointPath'", &path).err());
        }
        (graph, problems)
    })
    .await
    .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("checking the job's paths failed: {e}")))?;
    if problems.is_empty() {
        Ok(graph)
    } else {
        Err(RestError { status: StatusCode::BAD_REQUEST, errors: problems })
    }
}

/// A job file's problems as Flink's `{"errors": [...]}` (400).
pub(crate) fn job_error(e: flint_common::job::JobError) -> RestError {
    RestError { status: StatusCode::BAD_REQUEST, errors: e.lines() }
}

/// Hands a compiled job to the Dispatcher: its local paths must be allowed
/// (`flint.io.allowed-paths`), its WebAssembly modules valid. Artifacts that together pass
/// `blob.offload.minsize` are stored as permanent blobs of the job first (mirrored to the
/// HA storage) and the job graph keeps only their keys; smaller ones travel inline.
pub(crate) async fn submit_graph(
    state: &RestState,
    job_id: Option<JobId>,
    mut graph: flint_common::job::JobGraph,
    savepoint_path: Option<String>,
    allow_non_restored_state: bool,
) -> Result<JobId, RestError> {
    graph = check_paths(state, graph, savepoint_path.as_deref()).await?;
    graph = check_wasm(graph).await?;
    let inline: u64 = graph.artifacts.values().map(|a| a.size).sum();
    // Never above half an RPC frame, whatever blob.offload.minsize says: every deployment
    // descriptor fits `pekko.framesize`.
    let frame = state.config.get(&flint_common::config::options::PEKKO_FRAMESIZE).map_or(10 << 20, |m| m.bytes());
    let limit = state
        .config
        .get(&flint_common::config::options::BLOB_OFFLOAD_MINSIZE)
        .map_or(1 << 20, |m| m.bytes())
        .min(frame / 2);
    let fresh_id = job_id.is_none();
    // Operator chains whose serialized form passes the limit go to the BlobServer too.
    let large_vertices: Vec<(flint_common::ids::JobVertexId, Vec<u8>)> = graph
        .vertices
        .iter()
        .filter_map(|v| rmp_serde::to_vec_named(&v.operators).ok().map(|bytes| (v.id, bytes)))
        .filter(|(_, bytes)| bytes.len() as u64 > limit)
        .collect();
    let offloaded = inline > limit || !large_vertices.is_empty();
    let job_id = if offloaded {
        let id = job_id.unwrap_or_else(JobId::generate);
        let store = state.blobs.clone();
        let artifacts = std::mem::take(&mut graph.artifacts);
        let started = std::time::Instant::now();
        let offload_all = inline > limit;
        let (artifacts, operators) = tokio::task::spawn_blocking(move || {
            let artifacts = if offload_all { offload(&store, id, artifacts)? } else { artifacts };
            let mut operators = BTreeMap::new();
            for (vertex, bytes) in large_vertices {
                let key = store.put_bytes(Some(id), flint_common::blob::BlobKind::Permanent, &bytes).map_err(|e| {
                    RestError::new(StatusCode::SERVICE_UNAVAILABLE, format!("Could not store a vertex: {e}"))
                })?;
                operators.insert(vertex, hex::encode(key.sha256));
            }
            Ok::<_, RestError>((artifacts, operators))
        })
        .await
        .map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("offloading failed: {e}")))??;
        graph.artifacts = artifacts;
        graph.offloaded_operators = operators;
        tracing::info!(
            job_id = %id,
            artifact_bytes = if offload_all { inline } else { 0 },
            vertices = graph.offloaded_operators.len(),
            ms = started.elapsed().as_millis() as u64,
            "deployment data offloaded to the blob server"
        );
        Some(id)
    } else {
        job_id
    };
    let submitted = state
        .dispatcher_addr
        .send(SubmitJob { job_id, graph, savepoint_path, allow_non_restored_state })
        .await
        .map_err(|_| dispatcher_gone())?
        .map_err(|e| match e {
            SubmitError::Duplicate(_) => RestError::new(StatusCode::CONFLICT, e.to_string()),
            SubmitError::InvalidSavepoint(_) => RestError::new(StatusCode::BAD_REQUEST, e.to_string()),
            SubmitError::NotLeader | SubmitError::Store(_) => {
                RestError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        });
    // Nothing runs under this id because of this submission: the blobs it stored go, unless
    // the id belongs to another submission of the job (409), whose blobs they may be.
    let foreign = matches!(&submitted, Err(e) if e.status == StatusCode::CONFLICT && !fresh_id);
    if let (Err(_), Some(id), true, false) = (&submitted, job_id, offloaded, foreign) {
        let store = state.blobs.clone();
        let _ = tokio::task::spawn_blocking(move || store.delete_job(id)).await;
    }
    submitted
}

/// Stores every artifact as a permanent blob of `job_id`; the returned artifacts keep only
/// their hashes and sizes.
fn offload(
    store: &flint_common::blob::BlobStore,
    job_id: JobId,
    artifacts: BTreeMap<String, flint_common::job::package::Artifact>,
) -> Result<BTreeMap<String, flint_common::job::package::Artifact>, RestError> {
    let mut out = BTreeMap::new();
    for (name, mut artifact) in artifacts {
        store.put_bytes(Some(job_id), flint_common::blob::BlobKind::Permanent, &artifact.bytes).map_err(|e| {
            RestError::new(StatusCode::SERVICE_UNAVAILABLE, format!("Could not store the artifact {name}: {e}"))
        })?;
        artifact.bytes = Vec::new();
        artifact.offloaded = true;
        out.insert(name, artifact);
    }
    Ok(out)
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

/// Flink names an exception by its Java class; a Flint failure has no class, so its name is
/// the cause without the `<task> failed: ` prefix the stack trace starts with (the task is a
/// field of its own).
fn exception_name(exception: &str, task_name: &str) -> String {
    let cause = exception.strip_prefix(task_name).and_then(|rest| rest.strip_prefix(" failed: "));
    cause.unwrap_or(exception).lines().next().unwrap_or_default().to_string()
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
                "exceptionName": exception_name(&e.exception, e.task_name.as_deref().unwrap_or_default()),
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
        result["failure-cause"] = json!({ "class": "org.apache.flink.runtime.JobException", "stack-trace": cause, "serialized-throwable": flint_common::java_serialized_throwable::serialize_base64("org.apache.flink.runtime.JobException", cause.lines().next(), cause) });
    }
    Ok(HttpResponse::Ok().json(json!({ "status": { "id": "COMPLETED" }, "job-execution-result": result })))
}

pub(crate) fn find_vertex<'a>(s: &'a JobSnapshot, raw: &str) -> Result<&'a ExecutionJobVertex, RestError> {
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
    // Flink: `host` is the task manager's host, `endpoint` its data server's `host:port`.
    let host = attempt.assignment.as_ref().map_or_else(|| "(unassigned)".to_string(), |a| a.data_address.clone());
    let tm = attempt.assignment.as_ref().map_or_else(String::new, |a| a.resource_id.to_string());
    let _ = v;
    json!({
        "subtask": st.subtask,
        "status": attempt.state.flink_name(),
        "attempt": attempt.attempt_number,
        "host": host_name(&host),
        "endpoint": host,
        "start-time": start,
        "end-time": end,
        "duration": duration,
        "metrics": metrics_json(&[attempt]),
        "taskmanager-id": tm,
        "start_time": start,
        "status-duration": status_durations_json(attempt, now),
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
        "aggregated": aggregated_json(&executions(v), now),
    })))
}

/// A subtask's duration in `/subtasktimes`, as Flink's `SubtasksTimesHandler` computes it:
/// from SCHEDULED to the terminal state it reached, or to `now` while it is not terminal;
/// -1 before it was scheduled.
fn subtask_times_duration(e: &Execution, now: u64) -> i64 {
    let start = e.timestamp(ExecutionState::Scheduled);
    if start == 0 {
        return -1;
    }
    let end = if e.state.is_terminal() { e.timestamp(e.state) } else { now };
    end as i64 - start as i64
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
            // Flint never reconciles executions (Flink's job master failover without restart).
            timestamps.insert("RECONCILING".into(), json!(0));
            json!({
                "subtask": st.subtask,
                "host": host_name(st.current.assignment.as_ref().map_or("(unassigned)", |a| a.data_address.as_str())),
                "endpoint": st.current.assignment.as_ref().map_or("(unassigned)", |a| a.data_address.as_str()),
                "duration": subtask_times_duration(&st.current, now),
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
            for st in subtasks {
                *counts.entry(st.current.state).or_insert(0usize) += 1;
            }
            let executions: Vec<&Execution> = subtasks.iter().map(|st| &st.current).collect();
            let host = subtasks[0].current.assignment.as_ref().map_or("(unassigned)", |a| a.data_address.as_str());
            let first = subtasks.iter().map(|st| st.current.timestamp(ExecutionState::Deploying)).min().unwrap_or(0);
            json!({
                "host": host,
                "endpoint": host,
                "status": v.aggregate_state().flink_name(),
                "start-time": if first > 0 { first as i64 } else { -1 },
                "end-time": -1,
                "duration": if first > 0 { now as i64 - first as i64 } else { -1 },
                "metrics": metrics_json(&executions),
                "status-counts": counts_json(&counts),
                "taskmanager-id": tm,
                "aggregated": aggregated_json(&executions, now),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "id": v.id, "name": v.name, "now": now, "taskmanagers": tms })))
}

pub(crate) fn find_subtask<'a>(v: &'a ExecutionJobVertex, raw: &str) -> Result<&'a ExecutionVertex, RestError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_use_flinks_quantile_estimate() {
        // Flink 1.20's `aggregated` for two subtasks that wrote 51,456 and 51,467 records.
        let s = summary(&mut [51467.0, 51456.0]);
        assert_eq!(
            s,
            json!({ "min": 51456, "max": 51467, "avg": 51461, "sum": 102923, "median": 51461,
                    "p25": 51456, "p75": 51467, "p95": 51467 })
        );
        let s = summary(&mut [4.0, 1.0, 3.0, 2.0, 5.0]);
        assert_eq!((s["median"].as_i64(), s["p25"].as_i64(), s["p95"].as_i64()), (Some(3), Some(1), Some(5)));
    }

    #[test]
    fn state_durations_run_until_the_next_state_or_now() {
        let mut e = Execution {
            attempt_id: flint_common::ids::ExecutionAttemptId::generate(),
            attempt_number: 0,
            state: ExecutionState::Running,
            timestamps: BTreeMap::from([
                (ExecutionState::Created, 100),
                (ExecutionState::Scheduled, 106),
                (ExecutionState::Deploying, 198),
                (ExecutionState::Initializing, 228),
                (ExecutionState::Running, 231),
            ]),
            assignment: None,
            failure: None,
            metrics: Default::default(),
            metric_dump: Default::default(),
        };
        let d = status_durations(&e, 1231);
        assert_eq!(d[&ExecutionState::Created], 6);
        assert_eq!(d[&ExecutionState::Deploying], 30);
        assert_eq!(d[&ExecutionState::Running], 1000);
        e.state = ExecutionState::Finished;
        e.timestamps.insert(ExecutionState::Finished, 531);
        let d = status_durations(&e, 5000);
        assert_eq!((d[&ExecutionState::Running], d[&ExecutionState::Finished]), (300, 0));
        assert_eq!(metrics_json(&[&e])["accumulated-busy-time"], "NaN");
    }

    #[test]
    fn an_exception_is_named_by_its_cause_without_the_task() {
        assert_eq!(
            exception_name("Source: lines (1/1) failed: reading x: No such file\nmore", "Source: lines (1/1)"),
            "reading x: No such file"
        );
        assert_eq!(exception_name("slot request timed out", "Source: a (1/2)"), "slot request timed out");
    }

    #[test]
    fn subtask_times_run_from_scheduled_to_the_terminal_state_or_now() {
        let mut e = Execution {
            attempt_id: flint_common::ids::ExecutionAttemptId::generate(),
            attempt_number: 0,
            state: ExecutionState::Created,
            timestamps: BTreeMap::from([(ExecutionState::Created, 100)]),
            assignment: None,
            failure: None,
            metrics: Default::default(),
            metric_dump: Default::default(),
        };
        assert_eq!(subtask_times_duration(&e, 1000), -1);
        e.state = ExecutionState::Running;
        e.timestamps.extend([(ExecutionState::Scheduled, 106), (ExecutionState::Deploying, 198)]);
        assert_eq!(subtask_times_duration(&e, 1000), 894);
        e.state = ExecutionState::Finished;
        e.timestamps.insert(ExecutionState::Finished, 531);
        assert_eq!(subtask_times_duration(&e, 5000), 425);
    }
}
