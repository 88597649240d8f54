//! Flink's metric REST calls for jobs, vertices and subtasks, and the vertex views built on
//! the task metrics (back-pressure, watermarks).
//!
//! - `GET /jobs/:jobid/metrics`: the job-level metrics of Flink's JobManager job metric
//!   group (`numRestarts`, `uptime`, the checkpoint gauges, ...), computed from the job's
//!   snapshot; `GET /jobs/metrics` aggregates them over the jobs.
//! - `GET /jobs/:jobid/vertices/:vertexid/metrics` (ids `<subtask>.<metric>` and
//!   `<subtask>.<operator>.<metric>`), `.../subtasks/metrics` (aggregated over the subtasks,
//!   `subtasks=0,2-3`), `.../subtasks/:index/metrics`: the metrics each task last reported
//!   (every second, with its running report; `taskmanager::task_metrics` measures them).
//! - `.../backpressure`: Flink's ratios from `backPressuredTimeMsPerSecond`,
//!   `busyTimeMsPerSecond` and `idleTimeMsPerSecond`, with its levels (ok up to 10 %, low
//!   up to 50 %, high above); `.../watermarks`: each subtask's `currentInputWatermark`.
//!
//! Without `get` an answer lists the available metric ids; with `get=a,b` it gives their
//! values as strings, as Flink does. A job that reached a globally terminal state has no
//! metrics any more (Flink's archived jobs answer `[]`).

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use flint_common::metrics::{format_value, MetricsQuery};
use flint_common::process::epoch_ms;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::execution_graph::{Execution, ExecutionJobVertex, JobStatus};
use crate::job_master::JobSnapshot;
use crate::rest::{parse_job_id, Rest, RestError, RestState};
use crate::rest_jobs::{all_snapshots, find_subtask, find_vertex, snapshot};

/// The query of the aggregating calls: `get`, `agg` and which components.
#[derive(Deserialize)]
pub struct AggregatedQuery {
    get: Option<String>,
    agg: Option<String>,
    subtasks: Option<String>,
    jobs: Option<String>,
}

impl AggregatedQuery {
    fn metrics_query(&self) -> MetricsQuery {
        MetricsQuery { get: self.get.clone(), agg: self.agg.clone() }
    }
}

/// Every job metric with its current value.
fn job_metrics(s: &JobSnapshot, now: u64) -> Vec<(&'static str, String)> {
    let g = &s.graph;
    let since = |status: JobStatus| -> u64 {
        if g.status == status {
            now.saturating_sub(u64::try_from(g.status_timestamp(status)).unwrap_or(now))
        } else {
            0
        }
    };
    let downtime = if matches!(g.status, JobStatus::Failing | JobStatus::Restarting) {
        let from = [JobStatus::Failing, JobStatus::Restarting]
            .iter()
            .filter_map(|st| u64::try_from(g.status_timestamp(*st)).ok())
            .min()
            .unwrap_or(now);
        now.saturating_sub(from)
    } else {
        0
    };
    let stats = s.checkpoints.as_ref();
    let counts = stats.map(|c| c.counts).unwrap_or_default();
    let latest = stats.and_then(|c| c.latest.completed.as_ref());
    let restored = stats.and_then(|c| c.latest.restored.as_ref());
    let or_minus_one = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    vec![
        ("numRestarts", s.num_restarts.to_string()),
        ("fullRestarts", s.num_restarts.to_string()),
        ("uptime", since(JobStatus::Running).to_string()),
        ("runningTime", since(JobStatus::Running).to_string()),
        ("downtime", downtime.to_string()),
        ("restartingTime", since(JobStatus::Restarting).to_string()),
        ("failingTime", since(JobStatus::Failing).to_string()),
        ("cancellingTime", since(JobStatus::Cancelling).to_string()),
        ("initializingTime", since(JobStatus::Initializing).to_string()),
        ("createdTime", since(JobStatus::Created).to_string()),
        ("deployingTime", "0".to_string()),
        ("totalNumberOfCheckpoints", counts.total.to_string()),
        ("numberOfInProgressCheckpoints", counts.in_progress.to_string()),
        ("numberOfCompletedCheckpoints", counts.completed.to_string()),
        ("numberOfFailedCheckpoints", counts.failed.to_string()),
        ("lastCheckpointDuration", or_minus_one(latest.map(|c| c.end_to_end_duration))),
        ("lastCheckpointSize", or_minus_one(latest.map(|c| c.state_size))),
        ("lastCheckpointFullSize", or_minus_one(latest.map(|c| c.state_size))),
        ("lastCompletedCheckpointId", or_minus_one(latest.map(|c| c.id))),
        ("lastCheckpointExternalPath", latest.and_then(|c| c.external_path.clone()).unwrap_or_else(|| "n/a".into())),
        ("lastCheckpointRestoreTimestamp", or_minus_one(restored.map(|r| r.restore_timestamp))),
        ("lastCheckpointProcessedData", or_minus_one(latest.map(|_| 0))),
        ("lastCheckpointPersistedData", or_minus_one(latest.map(|_| 0))),
    ]
}

/// The job metrics that are numbers (`lastCheckpointExternalPath` is a text).
pub(crate) fn numeric_job_metrics(s: &JobSnapshot, now: u64) -> Vec<(&'static str, f64)> {
    job_metrics(s, now).into_iter().filter_map(|(id, v)| Some((id, v.parse::<f64>().ok()?))).collect()
}

/// The metrics of one job: ids, or the values asked for with `get`.
fn metrics_json(s: &JobSnapshot, query: &MetricsQuery, now: u64) -> Value {
    if s.graph.status.is_globally_terminal() {
        return json!([]);
    }
    let metrics = job_metrics(s, now);
    match query.requested() {
        None => Value::Array(metrics.iter().map(|(id, _)| json!({ "id": id })).collect()),
        Some(wanted) => Value::Array(
            wanted
                .into_iter()
                .filter_map(|name| metrics.iter().find(|(id, _)| *id == name))
                .map(|(id, value)| json!({ "id": id, "value": value }))
                .collect(),
        ),
    }
}

/// `GET /jobs/:jobid/metrics[?get=a,b]`.
pub async fn job_metrics_handler(
    state: web::Data<RestState>,
    path: web::Path<String>,
    query: web::Query<MetricsQuery>,
) -> Rest {
    let s = snapshot(&state, parse_job_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(metrics_json(&s, &query, epoch_ms())))
}

/// `GET /jobs/metrics[?get=..&agg=..&jobs=..]`: job metrics aggregated over the jobs that
/// still run (numeric ones; `lastCheckpointExternalPath` is a text).
pub async fn jobs_metrics(state: web::Data<RestState>, query: web::Query<AggregatedQuery>) -> Rest {
    let snapshots = all_snapshots(&state).await?;
    let wanted: Option<Vec<&str>> = query.jobs.as_deref().map(|j| j.split(',').map(str::trim).collect());
    let now = epoch_ms();
    let per_job: Vec<BTreeMap<String, f64>> = snapshots
        .iter()
        .filter(|s| !s.graph.status.is_globally_terminal())
        .filter(|s| wanted.as_ref().is_none_or(|w| w.contains(&s.graph.job_id.to_string().as_str())))
        .map(|s| numeric_job_metrics(s, now).into_iter().map(|(id, v)| (id.to_string(), v)).collect())
        .collect();
    let components: Vec<&BTreeMap<String, f64>> = per_job.iter().collect();
    Ok(HttpResponse::Ok().json(query.metrics_query().answer_aggregated(&components)?))
}

/// One task's metrics by id: its own, and its operators' as `<operator>.<metric>`.
pub(crate) fn task_metrics(e: &Execution) -> BTreeMap<String, f64> {
    let dump = &e.metric_dump;
    let mut out: BTreeMap<String, f64> = dump.task.iter().cloned().collect();
    for (operator, metrics) in &dump.operators {
        for (name, value) in metrics {
            out.insert(format!("{operator}.{name}"), *value);
        }
    }
    for metric in &dump.grouped {
        out.insert(format!("{}.{}", metric.operator, metric.rest_id()), metric.value);
    }
    out
}

/// Every subtask's metrics of a vertex, by subtask index.
fn subtask_metrics(s: &JobSnapshot, v: &ExecutionJobVertex) -> Vec<BTreeMap<String, f64>> {
    if s.graph.status.is_globally_terminal() {
        return Vec::new();
    }
    v.subtasks.iter().map(|st| task_metrics(&st.current)).collect()
}

/// `GET /jobs/:jobid/vertices/:vertexid/metrics`: `<subtask>.<metric>` ids.
pub async fn vertex_metrics(
    state: web::Data<RestState>,
    path: web::Path<(String, String)>,
    query: web::Query<MetricsQuery>,
) -> Rest {
    let (job, vertex) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let mut all = BTreeMap::new();
    for (index, metrics) in subtask_metrics(&s, v).into_iter().enumerate() {
        all.extend(metrics.into_iter().map(|(id, value)| (format!("{index}.{id}"), value)));
    }
    Ok(HttpResponse::Ok().json(query.answer(&all)))
}

/// `GET /jobs/:jobid/vertices/:vertexid/subtasks/metrics`: aggregated over the subtasks
/// (all, or those of `subtasks=0,2-3`).
pub async fn subtasks_metrics(
    state: web::Data<RestState>,
    path: web::Path<(String, String)>,
    query: web::Query<AggregatedQuery>,
) -> Rest {
    let (job, vertex) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let selected = match query.subtasks.as_deref() {
        Some(list) => Some(parse_indices(list)?),
        None => None,
    };
    let per_subtask = subtask_metrics(&s, v);
    let components: Vec<&BTreeMap<String, f64>> = per_subtask
        .iter()
        .enumerate()
        .filter(|(i, _)| selected.as_ref().is_none_or(|sel| sel.contains(i)))
        .map(|(_, m)| m)
        .collect();
    Ok(HttpResponse::Ok().json(query.metrics_query().answer_aggregated(&components)?))
}

/// `subtasks=0,2-3` as indices (Flink's syntax: values and inclusive ranges).
fn parse_indices(list: &str) -> Result<Vec<usize>, RestError> {
    let bad = || {
        RestError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            format!("Invalid value for query parameter 'subtasks': '{}'.", list.chars().take(64).collect::<String>()),
        )
    };
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to): (usize, usize) =
                    (from.trim().parse().map_err(|_| bad())?, to.trim().parse().map_err(|_| bad())?);
                if to < from || to - from > 100_000 {
                    return Err(bad());
                }
                out.extend(from..=to);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

/// `GET /jobs/:jobid/vertices/:vertexid/subtasks/:subtaskindex/metrics`.
pub async fn subtask_metrics_handler(
    state: web::Data<RestState>,
    path: web::Path<(String, String, String)>,
    query: web::Query<MetricsQuery>,
) -> Rest {
    let (job, vertex, index) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let st = find_subtask(v, &index)?;
    let metrics = if s.graph.status.is_globally_terminal() { BTreeMap::new() } else { task_metrics(&st.current) };
    Ok(HttpResponse::Ok().json(query.answer(&metrics)))
}

/// Flink's back-pressure level of a ratio.
fn level(ratio: f64) -> &'static str {
    if ratio > 0.5 {
        "high"
    } else if ratio > 0.1 {
        "low"
    } else {
        "ok"
    }
}

/// The back-pressure view of a vertex; `{"status": "deprecated"}` (Flink's answer) while
/// no subtask reported its time metrics.
fn backpressure_json(s: &JobSnapshot, v: &ExecutionJobVertex, now: u64) -> Value {
    let per_subtask = subtask_metrics(s, v);
    let ms_per_second = |m: &BTreeMap<String, f64>, id: &str| m.get(id).copied();
    let mut subtasks = Vec::new();
    let mut worst = 0.0f64;
    for (index, m) in per_subtask.iter().enumerate() {
        let Some(back_pressured) = ms_per_second(m, "backPressuredTimeMsPerSecond") else { continue };
        let ratio = back_pressured / 1000.0;
        let busy = ms_per_second(m, "busyTimeMsPerSecond").unwrap_or(0.0) / 1000.0;
        let idle = ms_per_second(m, "idleTimeMsPerSecond").unwrap_or(0.0) / 1000.0;
        worst = worst.max(ratio);
        subtasks.push(json!({
            "subtask": index,
            "backpressureLevel": level(ratio),
            "ratio": ratio,
            "idleRatio": idle,
            "busyRatio": busy,
            "backpressure-level": level(ratio),
        }));
    }
    if subtasks.is_empty() {
        return json!({ "status": "deprecated" });
    }
    json!({
        "status": "ok",
        "backpressureLevel": level(worst),
        "end-timestamp": now,
        "subtasks": subtasks,
        "backpressure-level": level(worst),
    })
}

/// `GET /jobs/:jobid/vertices/:vertexid/backpressure`.
pub async fn backpressure(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, vertex) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    Ok(HttpResponse::Ok().json(backpressure_json(&s, v, epoch_ms())))
}

/// `GET /jobs/:jobid/vertices/:vertexid/watermarks`: `<subtask>.currentInputWatermark`.
pub async fn watermarks(state: web::Data<RestState>, path: web::Path<(String, String)>) -> Rest {
    let (job, vertex) = path.into_inner();
    let s = snapshot(&state, parse_job_id(&job)?).await?;
    let v = find_vertex(&s, &vertex)?;
    let list: Vec<Value> = subtask_metrics(&s, v)
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let wm = m.get("currentInputWatermark")?;
            Some(json!({ "id": format!("{i}.currentInputWatermark"), "value": format_value(*wm) }))
        })
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/flink-rest").join(name);
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .unwrap()
    }

    #[test]
    fn every_metric_flink_lists_is_offered() {
        let listed = reference("jobs_JOBID_metrics.json");
        let names: Vec<&str> = job_metrics_names();
        for entry in listed.as_array().unwrap() {
            let id = entry["id"].as_str().unwrap();
            assert!(names.contains(&id), "metric {id} is missing");
        }
        assert_eq!(names.len(), listed.as_array().unwrap().len());
    }

    fn job_metrics_names() -> Vec<&'static str> {
        let job = flint_common::job::load_job(
            r#"{"flint":1,"name":"m","operators":[{"id":"s","op":"source.sequence","from":0,"to":1},
                {"id":"o","op":"sink.blackhole","inputs":["s"]}]}"#,
            1,
        )
        .unwrap();
        let graph = job.job_graph();
        let snapshot = JobSnapshot {
            restart_strategy: String::new(),
            num_restarts: 2,
            graph: crate::execution_graph::ExecutionGraph::new(flint_common::ids::JobId::generate(), &graph, 0).into(),
            job_graph: graph.into(),
            exceptions: Vec::new(),
            checkpoints: None,
            checkpoint_settings: crate::job_master::CheckpointSettings {
                config: None,
                checkpoints_dir: None,
                savepoints_dir: None,
                retention: crate::job_master::Retention::NoExternalized,
            },
            accumulators: Vec::new(),
            subtask_accumulators: Vec::new(),
        };
        let query = MetricsQuery { get: Some("numRestarts,lastCheckpointDuration,nope".into()), agg: None };
        let values = metrics_json(&snapshot, &query, 10);
        assert_eq!(
            values,
            json!([{ "id": "numRestarts", "value": "2" }, { "id": "lastCheckpointDuration", "value": "-1" }])
        );
        job_metrics(&snapshot, 10).into_iter().map(|(id, _)| id).collect()
    }
}
