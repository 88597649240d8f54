//! Flink's monitoring REST API (v1), served by actix-web.
//!
//! Every route is served both under `/v1` and unversioned, with Flink 1.20's paths,
//! field names and status codes. Handlers only translate: they ask the Dispatcher or
//! the ResourceManager through their gateways, exactly as a remote client would.
//! Errors are mapped to status codes in one place ([`RestError`]) and always come as
//! `{"errors": ["..."]}`. The dashboard's static files are served at `/`.

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use flint_common::config::Configuration;
use flint_common::ids::{JobId, LeaderSessionId, ResourceId};

use crate::{cluster_metrics, rest_checkpoints, rest_jars, rest_jobs, rest_metrics, rest_misc};
use flint_common::messages::{
    DispatcherGateway, LogFile, LogFileError, RemoteEndpoint, ResourceManagerError, ResourceManagerGateway,
    TaskExecutorGateway, TaskManagerInfo,
};
use flint_common::resources::ResourceProfile;
use flint_common::rpc::RpcError;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// What the handlers share.
pub struct RestState {
    pub dispatcher_addr: actix::Addr<crate::dispatcher::Dispatcher>,
    pub default_parallelism: u32,
    pub resource_manager: ResourceManagerGateway,
    pub dispatcher: DispatcherGateway,
    /// The effective configuration, with the ports actually bound.
    pub config: Configuration,
    pub log_dir: Option<PathBuf>,
    pub shutdown: CancellationToken,
    pub refresh_interval_ms: u64,
    /// Whether this jobmanager's REST endpoint leads, and where the leader's is.
    pub leadership: Arc<RestLeadership>,
    /// This process's memory, CPU and threads (`/jobmanager/metrics`, the reporter).
    pub process_metrics: Arc<flint_common::process_metrics::ProcessMetrics>,
    /// The vertex flame graphs sampled or being sampled.
    pub flame_graphs: Arc<crate::rest_flamegraph::FlameGraphs>,
    /// Savepoint disposals and data set deletions.
    pub operations: Arc<rest_misc::Operations>,
    /// This REST endpoint's URL (`http://<rest.address>:<port>`, `https://` with REST TLS).
    pub rest_url: String,
    /// The BlobServer's store: artifacts over `blob.offload.minsize` go there.
    pub blobs: Arc<flint_common::blob::BlobStore>,
    /// Packages uploaded through `/jars/upload`.
    pub jars: Arc<crate::rest_jars::JarStore>,
}

/// The REST endpoint's leadership (component `rest_server`). Only the leading jobmanager
/// answers the API; a standby answers 503 naming the leader's REST address (the dashboard's
/// static files are served by both).
#[derive(Default)]
pub struct RestLeadership {
    state: std::sync::Mutex<(Option<LeaderSessionId>, Option<String>)>,
}

impl RestLeadership {
    pub fn set_leader(&self, session: Option<LeaderSessionId>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = session;
    }

    pub fn set_leader_address(&self, address: Option<String>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = address;
    }

    pub fn is_leader(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0.is_some()
    }

    pub fn leader_address(&self) -> Option<String> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// The answer of a standby.
    pub fn not_leader_error(&self) -> RestError {
        let message = match self.leader_address() {
            Some(url) => format!("This jobmanager is not the leader. The leading jobmanager's REST endpoint is {url}."),
            None => "This jobmanager is not the leader, and no leader is known at the moment.".to_string(),
        };
        RestError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

/// Flint's version and revision as the REST API reports them.
pub const REVISION: &str = env!("FLINT_REVISION");

/// An error answer: a status code and messages.
#[derive(Debug)]
pub struct RestError {
    pub status: StatusCode,
    pub errors: Vec<String>,
}

impl From<flint_common::metrics::MetricsQueryError> for RestError {
    fn from(e: flint_common::metrics::MetricsQueryError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl RestError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, errors: vec![message.into()] }
    }

    fn leader_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable due to an ongoing leader election. Please refresh.",
        )
    }
}

impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.errors.join("; "))
    }
}

impl ResponseError for RestError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({ "errors": self.errors }))
    }
}

impl From<RpcError> for RestError {
    fn from(e: RpcError) -> Self {
        match e {
            RpcError::Fenced { .. } | RpcError::Unreachable { .. } | RpcError::UnknownEndpoint { .. } => {
                RestError::leader_unavailable()
            }
            other => RestError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                errors: vec![
                    "Internal server error.".into(),
                    format!("<Exception on server side:\n{other}\nEnd of exception on server side>"),
                ],
            },
        }
    }
}

impl From<ResourceManagerError> for RestError {
    fn from(e: ResourceManagerError) -> Self {
        match e {
            ResourceManagerError::NotLeader => RestError::leader_unavailable(),
            ResourceManagerError::UnknownTaskExecutor { .. } => RestError::new(StatusCode::NOT_FOUND, e.to_string()),
        }
    }
}

impl From<LogFileError> for RestError {
    fn from(e: LogFileError) -> Self {
        let status = match e {
            // What the client asked for is not there (as before typed errors: 404).
            LogFileError::NotFound { .. } | LogFileError::NoLogFile | LogFileError::InvalidName { .. } => {
                StatusCode::NOT_FOUND
            }
            LogFileError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        RestError::new(status, e.to_string())
    }
}

pub type Rest = Result<HttpResponse, RestError>;

pub fn parse_job_id(raw: &str) -> Result<JobId, RestError> {
    raw.parse().map_err(|_| {
        RestError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Bad request, could not parse parameters: Cannot resolve path parameter (jobid) from value \"{raw}\"."
            ),
        )
    })
}

fn resource_json(p: &ResourceProfile) -> Value {
    json!({
        "cpuCores": p.cpu_cores,
        "taskHeapMemory": p.task_heap_mb,
        "taskOffHeapMemory": p.task_off_heap_mb,
        "managedMemory": p.managed_mb,
        "networkMemory": p.network_mb,
        "extendedResources": {},
    })
}

fn task_manager_json(tm: &TaskManagerInfo) -> Value {
    let m = &tm.memory;
    json!({
        "id": tm.resource_id.as_str(),
        "path": tm.address.to_string(),
        "dataPort": tm.data_port,
        "jmxPort": -1,
        "timeSinceLastHeartbeat": tm.last_heartbeat_ms,
        "slotsNumber": tm.slots_number,
        "freeSlots": tm.free_slots,
        "totalResource": resource_json(&tm.total_resource),
        "freeResource": resource_json(&tm.free_resource),
        "hardware": {
            "cpuCores": tm.hardware.cpu_cores,
            "physicalMemory": tm.hardware.physical_memory,
            "freeMemory": tm.hardware.free_memory,
            "managedMemory": tm.hardware.managed_memory,
        },
        "memoryConfiguration": {
            "frameworkHeap": m.framework_heap,
            "taskHeap": m.task_heap,
            "frameworkOffHeap": m.framework_off_heap,
            "taskOffHeap": m.task_off_heap,
            "networkMemory": m.network_memory,
            "managedMemory": m.managed_memory,
            "jvmMetaspace": m.jvm_metaspace,
            "jvmOverhead": m.jvm_overhead,
            "totalFlinkMemory": m.total_flink_memory,
            "totalProcessMemory": m.total_process_memory,
        },
    })
}

async fn config(state: web::Data<RestState>) -> Rest {
    Ok(HttpResponse::Ok().json(json!({
        "refresh-interval": state.refresh_interval_ms,
        "timezone-name": "Coordinated Universal Time",
        "timezone-offset": 0,
        "flink-version": flint_common::FLINT_VERSION,
        "flink-revision": REVISION,
        "features": {
            "web-submit": state.jars.enabled,
            // Flink's `web.cancel.enable` (default true): the dashboards show "Cancel Job".
            "web-cancel": !state.config.get_raw("web.cancel.enable").is_some_and(|v| v.trim().eq_ignore_ascii_case("false")),
            "web-rescale": false,
            "web-history": false,
        },
    })))
}

async fn overview(state: web::Data<RestState>) -> Rest {
    let resources = state.resource_manager.overview().await??;
    let jobs = state.dispatcher.list_jobs().await?;
    let count = |status: &str| jobs.iter().filter(|j| j.status == status).count();
    Ok(HttpResponse::Ok().json(json!({
        "taskmanagers": resources.task_managers,
        "slots-total": resources.slots_total,
        "slots-available": resources.slots_free,
        "jobs-running": jobs.len() - count("FINISHED") - count("CANCELED") - count("FAILED"),
        "jobs-finished": count("FINISHED"),
        "jobs-cancelled": count("CANCELED"),
        "jobs-failed": count("FAILED"),
        "flink-version": flint_common::FLINT_VERSION,
        "flink-commit": REVISION,
    })))
}

async fn task_managers(state: web::Data<RestState>) -> Rest {
    let tms = state.resource_manager.task_managers().await??;
    let list: Vec<Value> = tms.iter().map(task_manager_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "taskmanagers": list })))
}

async fn task_manager(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let tm = state.resource_manager.task_manager(ResourceId::new(path.into_inner())).await??;
    let mut body = task_manager_json(&tm);
    let slots: Vec<Value> = tm
        .allocated_slots
        .iter()
        .map(|s| json!({ "jobId": s.job_id, "resource": resource_json(&s.resource) }))
        .collect();
    body["allocatedSlots"] = json!(slots);
    // Flint has no JVM: the heap figures are the process's (see `common::process_metrics`
    // for the mapping); direct and mapped buffers and garbage collectors do not exist.
    let metric = |name: &str| -> i64 { tm.metrics.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v as i64) };
    body["metrics"] = json!({
        "heapUsed": metric("Status.JVM.Memory.Heap.Used"),
        "heapCommitted": metric("Status.JVM.Memory.Heap.Committed"),
        "heapMax": metric("Status.JVM.Memory.Heap.Max"),
        "nonHeapUsed": metric("Status.JVM.Memory.NonHeap.Used"),
        "nonHeapCommitted": metric("Status.JVM.Memory.NonHeap.Committed"),
        "nonHeapMax": metric("Status.JVM.Memory.NonHeap.Max"),
        "directCount": 0, "directUsed": 0, "directMax": 0,
        "mappedCount": 0, "mappedUsed": 0, "mappedMax": 0,
        "memorySegmentsAvailable": metric("Status.Network.AvailableMemorySegments"),
        "memorySegmentsTotal": metric("Status.Network.TotalMemorySegments"),
        "nettyShuffleMemorySegmentsAvailable": metric("Status.Shuffle.Netty.AvailableMemorySegments"),
        "nettyShuffleMemorySegmentsUsed": metric("Status.Shuffle.Netty.UsedMemorySegments"),
        "nettyShuffleMemorySegmentsTotal": metric("Status.Shuffle.Netty.TotalMemorySegments"),
        "nettyShuffleMemoryAvailable": 0,
        "nettyShuffleMemoryUsed": 0, "nettyShuffleMemoryTotal": 0,
        "garbageCollectors": [],
    });
    Ok(HttpResponse::Ok().json(body))
}

pub(crate) async fn jobmanager_config(state: web::Data<RestState>) -> Rest {
    let entries: Vec<Value> = state.config.entries().map(|(k, v)| json!({ "key": k, "value": v })).collect();
    Ok(HttpResponse::Ok().json(entries))
}

pub(crate) async fn jobmanager_environment() -> Rest {
    Ok(HttpResponse::Ok().json(json!({
        "jvm": {
            "version": format!("Flint {} (native, no JVM)", flint_common::FLINT_VERSION),
            "arch": std::env::consts::ARCH,
            "options": std::env::args().skip(1).collect::<Vec<_>>(),
        },
        "classpath": [],
    })))
}

fn logs_json(logs: &[flint_common::messages::LogFileInfo]) -> Value {
    let list: Vec<Value> =
        logs.iter().map(|l| json!({ "name": l.name, "size": l.size, "mtime": l.mtime_ms })).collect();
    json!({ "logs": list })
}

/// The most of a log file the REST API returns (its tail).
const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;

fn text(body: String) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(body)
}

async fn jobmanager_logs(state: web::Data<RestState>) -> Rest {
    let logs = state.log_dir.as_deref().map(flint_common::process::list_log_files).unwrap_or_default();
    Ok(HttpResponse::Ok().json(logs_json(&logs)))
}

fn jobmanager_file(state: &RestState, file: LogFile) -> Rest {
    // Named files come from the directory `/jobmanager/logs` lists.
    let path = flint_common::process::resolve_log_file(&file, state.log_dir.as_deref())?;
    let body = flint_common::process::read_tail(&path, MAX_LOG_BYTES)?;
    Ok(text(body))
}

async fn jobmanager_log(state: web::Data<RestState>) -> Rest {
    jobmanager_file(&state, LogFile::Log)
}

async fn jobmanager_stdout(state: web::Data<RestState>) -> Rest {
    jobmanager_file(&state, LogFile::Stdout)
}

async fn jobmanager_named_log(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    jobmanager_file(&state, LogFile::Named(path.into_inner()))
}

/// The gateway of a registered TaskExecutor (404 for an unknown id).
pub(crate) async fn task_executor(state: &RestState, id: String) -> Result<TaskExecutorGateway, RestError> {
    let tm = state.resource_manager.task_manager(ResourceId::new(id)).await??;
    Ok(TaskExecutorGateway(RemoteEndpoint::new(
        state.resource_manager.0.rpc.clone(),
        tm.address,
        state.resource_manager.0.timeout,
    )))
}

async fn task_manager_logs(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    let te = task_executor(&state, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(logs_json(&te.log_list().await?)))
}

async fn task_manager_file(state: &RestState, id: String, file: LogFile) -> Rest {
    let te = task_executor(state, id).await?;
    let body = te.log_file(file, MAX_LOG_BYTES).await??;
    Ok(text(body))
}

async fn task_manager_log(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    task_manager_file(&state, path.into_inner(), LogFile::Log).await
}

async fn task_manager_stdout(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    task_manager_file(&state, path.into_inner(), LogFile::Stdout).await
}

async fn task_manager_named_log(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (id, name) = path.into_inner();
    task_manager_file(&state, id, LogFile::Named(name)).await
}

async fn jobs(state: web::Data<RestState>) -> Rest {
    let jobs = state.dispatcher.list_jobs().await?;
    let list: Vec<Value> = jobs.iter().map(|j| json!({ "id": j.job_id, "status": j.status })).collect();
    Ok(HttpResponse::Ok().json(json!({ "jobs": list })))
}

async fn jobs_overview(state: web::Data<RestState>) -> Rest {
    let snapshots = rest_jobs::all_snapshots(&state).await?;
    let list: Vec<Value> = snapshots.iter().map(|s| rest_jobs::overview_json(s)).collect();
    Ok(HttpResponse::Ok().json(json!({ "jobs": list })))
}

async fn shutdown_cluster(state: web::Data<RestState>) -> Rest {
    tracing::info!("shutdown requested through the REST API");
    state.shutdown.cancel();
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn static_file(req: HttpRequest) -> HttpResponse {
    let path = req.path().trim_start_matches('/');
    match flint_webui::asset(path) {
        Some(asset) if req.method() == Method::GET => {
            HttpResponse::Ok().content_type(asset.content_type).body(asset.body)
        }
        _ => not_found(req).await,
    }
}

/// Unknown paths: 404 in Flink's words.
async fn not_found(req: HttpRequest) -> HttpResponse {
    let message = if req.method() == Method::GET {
        format!("Unable to load requested file {}.", req.path())
    } else {
        format!("Not found: {}", req.path())
    };
    RestError::new(StatusCode::NOT_FOUND, message).error_response()
}

/// A path served for one method; any other method gets Flink's 404, not a 405.
fn resource<F, Args>(path: &str, method: fn() -> actix_web::Route, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path).route(method().to(handler)).default_service(web::to(not_found))
}

fn api(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/config", web::get, config))
        .service(resource("/overview", web::get, overview))
        .service(resource("/taskmanagers", web::get, task_managers))
        .service(resource("/jobmanager/config", web::get, jobmanager_config))
        .service(resource("/jobmanager/thread-dump", web::get, rest_misc::jobmanager_thread_dump))
        .service(resource("/taskmanagers/{taskmanagerid}/thread-dump", web::get, rest_misc::taskmanager_thread_dump))
        .service(resource("/jars", web::get, rest_jars::list))
        .service(resource("/jars/upload", web::post, rest_jars::upload))
        .service(resource("/jars/{jarid}", web::delete, rest_jars::delete))
        .service(
            web::resource("/jars/{jarid}/plan")
                .route(web::get().to(rest_jars::plan))
                .route(web::post().to(rest_jars::plan))
                .default_service(web::to(not_found)),
        )
        .service(resource("/jars/{jarid}/run", web::post, rest_jars::run))
        .service(resource("/datasets", web::get, rest_misc::datasets))
        .service(resource("/datasets/delete/{triggerid}", web::get, rest_misc::delete_dataset_status))
        .service(resource("/datasets/{datasetid}", web::delete, rest_misc::delete_dataset))
        .service(resource("/savepoint-disposal", web::post, rest_misc::dispose_savepoint))
        .service(resource("/savepoint-disposal/{triggerid}", web::get, rest_misc::disposal_status))
        .service(resource("/jobs/{jobid}/jobmanager/config", web::get, rest_misc::job_jobmanager_config))
        .service(resource("/jobs/{jobid}/jobmanager/environment", web::get, rest_misc::job_jobmanager_environment))
        .service(resource("/jobs/{jobid}/jobmanager/log-url", web::get, rest_misc::jobmanager_log_url))
        .service(resource(
            "/jobs/{jobid}/taskmanagers/{taskmanagerid}/log-url",
            web::get,
            rest_misc::taskmanager_log_url,
        ))
        .service(resource("/jobs/{jobid}/clientHeartbeat", web::patch, rest_misc::client_heartbeat))
        .service(resource("/jobs/{jobid}/coordinators/{operatorid}", web::post, rest_misc::coordination_request))
        .service(resource("/jobs/{jobid}/rescaling", web::patch, rest_misc::rescaling))
        .service(resource("/jobs/{jobid}/rescaling/{triggerid}", web::get, rest_misc::rescaling))
        .service(resource("/jobmanager/metrics", web::get, cluster_metrics::jobmanager_metrics_handler))
        .service(resource("/taskmanagers/metrics", web::get, cluster_metrics::taskmanagers_metrics_handler))
        .service(resource(
            "/taskmanagers/{taskmanagerid}/metrics",
            web::get,
            cluster_metrics::taskmanager_metrics_handler,
        ))
        .service(resource("/taskmanagers/{taskmanagerid}", web::get, task_manager))
        .service(resource("/jobmanager/environment", web::get, jobmanager_environment))
        .service(resource("/jobmanager/logs", web::get, jobmanager_logs))
        .service(resource("/jobmanager/logs/{name}", web::get, jobmanager_named_log))
        .service(resource("/jobmanager/log", web::get, jobmanager_log))
        .service(resource("/jobmanager/stdout", web::get, jobmanager_stdout))
        .service(resource("/taskmanagers/{taskmanagerid}/logs", web::get, task_manager_logs))
        .service(resource("/taskmanagers/{taskmanagerid}/logs/{name}", web::get, task_manager_named_log))
        .service(resource("/taskmanagers/{taskmanagerid}/log", web::get, task_manager_log))
        .service(resource("/taskmanagers/{taskmanagerid}/stdout", web::get, task_manager_stdout))
        .service(
            web::resource("/jobs")
                .route(web::get().to(jobs))
                .route(web::post().to(rest_jobs::submit))
                .default_service(web::to(not_found)),
        )
        .service(resource("/jobs/overview", web::get, jobs_overview))
        .service(resource("/jobs/metrics", web::get, rest_metrics::jobs_metrics))
        .service(
            web::resource("/jobs/{jobid}")
                .route(web::get().to(rest_jobs::job))
                .route(web::patch().to(rest_jobs::cancel))
                .default_service(web::to(not_found)),
        )
        .service(resource("/jobs/{jobid}/status", web::get, rest_jobs::status))
        .service(resource("/jobs/{jobid}/plan", web::get, rest_jobs::plan))
        .service(resource("/jobs/{jobid}/config", web::get, rest_jobs::config))
        .service(resource("/jobs/{jobid}/exceptions", web::get, rest_jobs::exceptions))
        .service(resource("/jobs/{jobid}/accumulators", web::get, rest_jobs::accumulators))
        .service(resource("/jobs/{jobid}/metrics", web::get, rest_metrics::job_metrics_handler))
        .service(resource("/jobs/{jobid}/execution-result", web::get, rest_jobs::execution_result))
        // Checkpoints: `config` and `details/...` before `{triggerid}`, which would match
        // `config` too (resources match in registration order).
        .service(
            web::resource("/jobs/{jobid}/checkpoints")
                .route(web::get().to(rest_checkpoints::statistics))
                .route(web::post().to(rest_checkpoints::trigger_checkpoint))
                .default_service(web::to(not_found)),
        )
        .service(resource("/jobs/{jobid}/checkpoints/config", web::get, rest_checkpoints::config))
        .service(resource("/jobs/{jobid}/checkpoints/details/{checkpointid}", web::get, rest_checkpoints::details))
        .service(resource(
            "/jobs/{jobid}/checkpoints/details/{checkpointid}/subtasks/{vertexid}",
            web::get,
            rest_checkpoints::task_details,
        ))
        .service(resource("/jobs/{jobid}/checkpoints/{triggerid}", web::get, rest_checkpoints::checkpoint_status))
        .service(resource("/jobs/{jobid}/savepoints", web::post, rest_checkpoints::trigger_savepoint))
        .service(resource("/jobs/{jobid}/savepoints/{triggerid}", web::get, rest_checkpoints::savepoint_status))
        .service(resource("/jobs/{jobid}/stop", web::post, rest_checkpoints::stop))
        .service(resource("/jobs/{jobid}/vertices/{vertexid}", web::get, rest_jobs::vertex))
        .service(resource("/jobs/{jobid}/vertices/{vertexid}/subtasktimes", web::get, rest_jobs::subtask_times))
        .service(resource("/jobs/{jobid}/vertices/{vertexid}/taskmanagers", web::get, rest_jobs::vertex_taskmanagers))
        .service(resource(
            "/jobs/{jobid}/vertices/{vertexid}/subtasks/accumulators",
            web::get,
            rest_misc::subtasks_accumulators,
        ))
        .service(resource("/jobs/{jobid}/vertices/{vertexid}/accumulators", web::get, rest_misc::vertex_accumulators))
        .service(resource(
            "/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}/attempts/{attempt}/accumulators",
            web::get,
            rest_misc::attempt_accumulators,
        ))
        .service(resource("/jobs/{jobid}/vertices/{vertexid}/metrics", web::get, rest_metrics::vertex_metrics))
        .service(resource("/jobs/{jobid}/vertices/{vertexid}/backpressure", web::get, rest_metrics::backpressure))
        .service(resource("/jobs/{jobid}/vertices/{vertexid}/watermarks", web::get, rest_metrics::watermarks))
        .service(resource("/jobs/{jobid}/vertices/{vertexid}/flamegraph", web::get, crate::rest_flamegraph::flamegraph))
        .service(resource(
            "/jobs/{jobid}/vertices/{vertexid}/subtasks/metrics",
            web::get,
            rest_metrics::subtasks_metrics,
        ))
        .service(resource("/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}", web::get, rest_jobs::subtask))
        .service(resource(
            "/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}/metrics",
            web::get,
            rest_metrics::subtask_metrics_handler,
        ))
        .service(resource(
            "/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}/attempts/{attempt}",
            web::get,
            rest_jobs::subtask_attempt,
        ))
        .service(resource("/cluster", web::delete, shutdown_cluster));
}

/// Whether `path` is part of the REST API (not the dashboard's static files).
fn is_api_path(path: &str) -> bool {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    matches!(
        first,
        "config"
            | "overview"
            | "taskmanagers"
            | "jobmanager"
            | "jobs"
            | "cluster"
            | "jars"
            | "datasets"
            | "savepoint-disposal"
    )
}

/// Middleware: a standby jobmanager answers every API request with 503 naming the leader.
pub async fn leader_only(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if is_api_path(req.path()) {
        if let Some(state) = req.app_data::<web::Data<RestState>>() {
            if !state.leadership.is_leader() {
                return Err(state.leadership.not_leader_error().into());
            }
        }
    }
    next.call(req).await
}

/// Bounds on what a REST request may send (read from the configuration once).
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// `rest.server.max-content-length`.
    pub max_content_length: usize,
    /// `rest.idleness-timeout`: the whole body must arrive within it.
    pub body_timeout: std::time::Duration,
}

/// The longest request target (path and query) accepted; Flink's HTTP decoder allows 4096
/// bytes for the initial line.
pub const MAX_URI_LENGTH: usize = 4096;

/// The largest job document `POST /jobs` takes (a job file, not a package: packages will go
/// through the upload endpoints, bounded by `rest.server.max-content-length`).
pub const MAX_JOB_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why a request was refused before it reached a handler.
#[derive(Debug, thiserror::Error)]
enum RequestRefused {
    #[error("The request target is longer than {MAX_URI_LENGTH} bytes.")]
    UriTooLong,
    #[error("Request entity too large: the body exceeds rest.server.max-content-length ({0} bytes).")]
    TooLarge(usize),
    #[error("The request body did not arrive within {0} ms (rest.idleness-timeout).")]
    Timeout(u128),
    #[error("Bad request: the request body could not be read: {0}")]
    Broken(String),
}

impl RequestRefused {
    fn status(&self) -> StatusCode {
        match self {
            RequestRefused::UriTooLong => StatusCode::URI_TOO_LONG,
            RequestRefused::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestRefused::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            RequestRefused::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a request body whole, bounded in size and in time.
async fn read_body(
    mut payload: actix_web::dev::Payload,
    limits: RequestLimits,
) -> Result<bytes::Bytes, RequestRefused> {
    use futures::StreamExt;
    let read = async {
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| match e {
                actix_web::error::PayloadError::Overflow => RequestRefused::TooLarge(limits.max_content_length),
                other => RequestRefused::Broken(other.to_string()),
            })?;
            if body.len() + chunk.len() > limits.max_content_length {
                return Err(RequestRefused::TooLarge(limits.max_content_length));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(limits.body_timeout, read)
        .await
        .map_err(|_| RequestRefused::Timeout(limits.body_timeout.as_millis()))?
}

/// Ends the connection once `response` is written (the request body was not read whole).
pub fn close_after(response: &mut HttpResponse) {
    response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
}

/// Middleware around everything: request targets and bodies are bounded (a body that does
/// not arrive in time gets 408, one too large 413), and every error of the API is JSON
/// `{"errors": [...]}` — also those actix-web produces itself (bad query strings, paths or
/// bodies, payload limits), which come as plain text.
pub async fn guard_requests(
    mut req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    let refuse = |req: actix_web::dev::ServiceRequest, e: RequestRefused| {
        let error = RestError::new(e.status(), e.to_string());
        let mut response = error.error_response();
        if matches!(e, RequestRefused::TooLarge(_)) {
            // The rest of the body is never read: the connection ends with the answer.
            close_after(&mut response);
        }
        Ok(req.into_response(response))
    };
    if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > MAX_URI_LENGTH {
        return refuse(req, RequestRefused::UriTooLong);
    }
    if let Some(limits) = req.app_data::<web::Data<RequestLimits>>().map(|l| *l.get_ref()) {
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let chunked = req.headers().contains_key(actix_web::http::header::TRANSFER_ENCODING);
        if declared.is_some_and(|n| n > limits.max_content_length as u64) {
            return refuse(req, RequestRefused::TooLarge(limits.max_content_length));
        }
        // Uploads stream to disk in their handler, under the same bounds.
        let streamed = req.path().ends_with("/jars/upload");
        if !streamed && (declared.is_some_and(|n| n > 0) || chunked) {
            match read_body(req.take_payload(), limits).await {
                Ok(body) => req.set_payload(actix_web::dev::Payload::from(body)),
                Err(e) => return refuse(req, e),
            }
        }
    }
    let api = is_api_path(req.path());
    // Errors of the inner services are `RestError`s (JSON already); actix-web turns them
    // into responses. (The request must not be cloned here: actix-web needs it unshared.)
    let res = next.call(req).await?.map_into_boxed_body();
    let status = res.status();
    let is_json = res
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || is_json || !(status.is_client_error() || status.is_server_error()) {
        return Ok(res);
    }
    let (request, response) = res.into_parts();
    let text = actix_web::body::to_bytes_limited(response.into_body(), 64 * 1024)
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_owned());
    Ok(actix_web::dev::ServiceResponse::new(request, RestError::new(status, text).error_response()))
}

/// Flink's words for a query string that does not parse.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    RestError::new(StatusCode::BAD_REQUEST, format!("Bad request, could not parse parameters: {err}")).into()
}

/// Flink's words for a path parameter that does not parse.
pub fn path_error(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    RestError::new(StatusCode::BAD_REQUEST, format!("Bad request, could not parse parameters: {err}")).into()
}

/// The whole application: API (versioned and not), dashboard, 404s.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/v1").configure(api).default_service(web::to(not_found)))
        .configure(api)
        .route("/", web::get().to(static_file))
        .default_service(web::to(static_file));
}
