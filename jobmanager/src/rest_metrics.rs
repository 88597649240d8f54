//! `GET /jobs/:jobid/metrics`: the job-level metrics of Flink's JobManager job metric group
//! (`numRestarts`, `uptime`, the checkpoint gauges, ...), computed from the job's snapshot.
//!
//! Without `get` the answer lists the available metric ids; with `get=a,b` it gives their
//! values as strings, as Flink does. A job that reached a globally terminal state has no
//! metrics any more (Flink's archived jobs answer `[]`).

use actix_web::{web, HttpResponse};
use flint_common::process::epoch_ms;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::execution_graph::JobStatus;
use crate::job_master::JobSnapshot;
use crate::rest::{parse_job_id, Rest, RestState};
use crate::rest_jobs::snapshot;

#[derive(Deserialize)]
pub struct MetricsQuery {
    get: Option<String>,
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

/// The metrics of one job: ids, or the values asked for with `get`.
fn metrics_json(s: &JobSnapshot, get: Option<&str>, now: u64) -> Value {
    if s.graph.status.is_globally_terminal() {
        return json!([]);
    }
    let metrics = job_metrics(s, now);
    match get {
        None => Value::Array(metrics.iter().map(|(id, _)| json!({ "id": id })).collect()),
        Some(wanted) => Value::Array(
            wanted
                .split(',')
                .map(str::trim)
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
    Ok(HttpResponse::Ok().json(metrics_json(&s, query.get.as_deref(), epoch_ms())))
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
        };
        let values = metrics_json(&snapshot, Some("numRestarts,lastCheckpointDuration,nope"), 10);
        assert_eq!(
            values,
            json!([{ "id": "numRestarts", "value": "2" }, { "id": "lastCheckpointDuration", "value": "-1" }])
        );
        job_metrics(&snapshot, 10).into_iter().map(|(id, _)| id).collect()
    }
}
