//! The jobmanager's and the taskmanagers' own metrics, their REST calls, and what the
//! jobmanager's Prometheus reporter serves.
//!
//! - Jobmanager metrics (`GET /jobmanager/metrics`): the process figures
//!   (`common::process_metrics`, Flint's and Flink's `Status.JVM.*` names) and Flink's
//!   cluster gauges `numRegisteredTaskManagers`, `taskSlotsTotal`, `taskSlotsAvailable`
//!   (from the ResourceManager) and `numRunningJobs` (jobs not globally terminal).
//! - Taskmanager metrics (`GET /taskmanagers/:id/metrics`, aggregated over taskmanagers by
//!   `GET /taskmanagers/metrics[?taskmanagers=a,b]`): what each taskmanager sent with its
//!   last heartbeat answer (`taskmanager::tm_metrics`). An unknown taskmanager has no
//!   metrics (`[]`), as in Flink's metric store.
//! - The Prometheus reporter's points: the jobmanager metrics (scope `jobmanager`, label
//!   `host`) and every running job's metrics (scope `jobmanager_job`, labels `job_id`,
//!   `job_name`).

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use flint_common::ids::ResourceId;
use flint_common::metric_reporter::{MetricPoint, Scope};
use flint_common::metrics::MetricsQuery;
use flint_common::process::epoch_ms;
use serde::Deserialize;

use crate::rest::{Rest, RestError, RestState};
use crate::rest_jobs::all_snapshots;
use crate::rest_metrics::numeric_job_metrics;

/// Every jobmanager metric with its current value.
pub(crate) async fn jobmanager_metrics(state: &RestState) -> Result<BTreeMap<String, f64>, RestError> {
    let resources = state.resource_manager.overview().await??;
    let jobs = state.dispatcher.list_jobs().await?;
    let running = jobs.iter().filter(|j| !matches!(j.status.as_str(), "FINISHED" | "CANCELED" | "FAILED")).count();
    let mut out: BTreeMap<String, f64> =
        state.process_metrics.sample().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    out.insert("numRegisteredTaskManagers".into(), resources.task_managers as f64);
    out.insert("taskSlotsTotal".into(), resources.slots_total as f64);
    out.insert("taskSlotsAvailable".into(), resources.slots_free as f64);
    out.insert("numRunningJobs".into(), running as f64);
    Ok(out)
}

/// `GET /jobmanager/metrics[?get=a,b]`.
pub async fn jobmanager_metrics_handler(state: web::Data<RestState>, query: web::Query<MetricsQuery>) -> Rest {
    let metrics = jobmanager_metrics(&state).await?;
    Ok(HttpResponse::Ok().json(query.answer(&metrics)))
}

/// `GET /taskmanagers/:taskmanagerid/metrics[?get=a,b]`.
pub async fn taskmanager_metrics_handler(
    state: web::Data<RestState>,
    path: web::Path<String>,
    query: web::Query<MetricsQuery>,
) -> Rest {
    let id = ResourceId::new(path.into_inner());
    let tms = state.resource_manager.task_managers().await??;
    let metrics: BTreeMap<String, f64> =
        tms.into_iter().find(|tm| tm.resource_id == id).map(|tm| tm.metrics.into_iter().collect()).unwrap_or_default();
    Ok(HttpResponse::Ok().json(query.answer(&metrics)))
}

/// The query of `GET /taskmanagers/metrics`.
#[derive(Deserialize)]
pub struct TaskManagersQuery {
    get: Option<String>,
    agg: Option<String>,
    taskmanagers: Option<String>,
}

/// `GET /taskmanagers/metrics[?get=..&agg=..&taskmanagers=..]`: aggregated over the
/// taskmanagers (all, or those listed).
pub async fn taskmanagers_metrics_handler(state: web::Data<RestState>, query: web::Query<TaskManagersQuery>) -> Rest {
    let wanted: Option<Vec<&str>> = query.taskmanagers.as_deref().map(|t| t.split(',').map(str::trim).collect());
    let per_tm: Vec<BTreeMap<String, f64>> = state
        .resource_manager
        .task_managers()
        .await??
        .into_iter()
        .filter(|tm| wanted.as_ref().is_none_or(|w| w.contains(&tm.resource_id.as_str())))
        .map(|tm| tm.metrics.into_iter().collect())
        .collect();
    let components: Vec<&BTreeMap<String, f64>> = per_tm.iter().collect();
    let metrics_query = MetricsQuery { get: query.get.clone(), agg: query.agg.clone() };
    Ok(HttpResponse::Ok().json(metrics_query.answer_aggregated(&components)?))
}

/// What the jobmanager's Prometheus reporter serves at a scrape. A part that cannot be
/// read now (the ResourceManager did not answer) is left out of this scrape.
pub async fn prometheus_points(state: web::Data<RestState>, host: String) -> Vec<MetricPoint> {
    let mut points = Vec::new();
    if let Ok(metrics) = jobmanager_metrics(&state).await {
        points.extend(metrics.into_iter().map(|(name, value)| MetricPoint {
            scope: Scope::JobManager,
            name,
            labels: vec![("host", host.clone())],
            value,
        }));
    }
    if let Ok(snapshots) = all_snapshots(&state).await {
        let now = epoch_ms();
        for s in snapshots.iter().filter(|s| !s.graph.status.is_globally_terminal()) {
            let labels = vec![
                ("host", host.clone()),
                ("job_id", s.graph.job_id.to_string()),
                ("job_name", s.job_graph.name.clone()),
            ];
            points.extend(numeric_job_metrics(s, now).into_iter().map(|(name, value)| MetricPoint {
                scope: Scope::JobManagerJob,
                name: name.to_string(),
                labels: labels.clone(),
                value,
            }));
        }
    }
    points
}
