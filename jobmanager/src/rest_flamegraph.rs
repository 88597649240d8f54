//! `GET /jobs/:jobid/vertices/:vertexid/flamegraph[?type=full|on_cpu|off_cpu&subtaskindex=i]`:
//! Flink's vertex flame graphs.
//!
//! With `rest.flamegraph.enabled: false` (the default) the answer is Flink's
//! `{"endTimestamp": -2}`. Enabled, the first request for a vertex (and subtask, and type)
//! starts a sampling of the on-CPU stacks of its running task threads on their
//! taskmanagers (`RequestThreadSamples`: `rest.flamegraph.num-samples` ×
//! `rest.flamegraph.delay-between-samples`, at most `rest.flamegraph.stack-depth` frames;
//! `taskmanager::stack_sampler`) and answers Flink's "waiting" (`-3`); once the samples are
//! in, the graph (`{"endTimestamp", "data": {"name": "root", "value", "children"}}`, frames
//! merged into a tree outermost first) is served until it is older than
//! `rest.flamegraph.refresh-interval`, then the old graph is served while a new one is
//! sampled. A vertex with no running subtask answers Flink's "terminated" (`-1`).
//! Flint's sampler sees threads only while they run on a CPU (`SIGPROF`): `on_cpu` and
//! `full` graphs hold those samples, an `off_cpu` graph is empty. At most
//! [`MAX_CACHED`] graphs are kept; at most [`MAX_STACKS`] distinct stacks make a graph.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use flint_common::config::{options, ConfigError, Configuration};
use flint_common::ids::{ExecutionAttemptId, JobId, JobVertexId, ResourceId};
use flint_common::messages::{RemoteEndpoint, RequestThreadSamples, TaskExecutorGateway};
use flint_common::process::epoch_ms;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use crate::execution_graph::ExecutionState;
use crate::rest::{parse_job_id, Rest, RestError, RestState};
use crate::rest_jobs::{find_vertex, snapshot};

/// The most graphs kept at once (the oldest go first).
pub const MAX_CACHED: usize = 64;
/// The most distinct stacks merged into one graph (the most frequent).
pub const MAX_STACKS: usize = 2_000;

/// Flink's flame graph settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlameGraphSettings {
    pub enabled: bool,
    pub refresh_interval: Duration,
    pub num_samples: u32,
    pub delay_between_samples: Duration,
    pub stack_depth: u32,
}

impl FlameGraphSettings {
    pub fn from_config(config: &Configuration) -> Result<Self, ConfigError> {
        Ok(Self {
            enabled: config.get(&options::REST_FLAMEGRAPH_ENABLED)?,
            refresh_interval: config.get(&options::REST_FLAMEGRAPH_REFRESH_INTERVAL)?,
            num_samples: config.get(&options::REST_FLAMEGRAPH_NUM_SAMPLES)?.max(1),
            delay_between_samples: config.get(&options::REST_FLAMEGRAPH_DELAY_BETWEEN_SAMPLES)?,
            stack_depth: config.get(&options::REST_FLAMEGRAPH_STACK_DEPTH)?.max(1),
        })
    }

    /// The sampling period: the samples times the delay between them, at most 30 s.
    fn period(&self) -> Duration {
        (self.delay_between_samples * self.num_samples).min(Duration::from_secs(30))
    }

    fn frequency_hz(&self) -> u32 {
        (1000 / self.delay_between_samples.as_millis().max(1)).clamp(1, 1000) as u32
    }
}

/// Flink's graph types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum GraphType {
    Full,
    OnCpu,
    OffCpu,
}

type Key = (JobId, JobVertexId, Option<u32>, GraphType);

enum Entry {
    Sampling { since: Instant },
    Ready { at: Instant, graph: Value, refreshing: bool },
}

/// The graphs sampled or being sampled.
pub struct FlameGraphs {
    settings: FlameGraphSettings,
    cache: Mutex<HashMap<Key, Entry>>,
}

impl FlameGraphs {
    pub fn new(settings: FlameGraphSettings) -> Self {
        Self { settings, cache: Mutex::new(HashMap::new()) }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Deserialize)]
pub struct FlameGraphQuery {
    #[serde(rename = "type")]
    graph_type: Option<String>,
    subtaskindex: Option<String>,
}

fn bad_request(message: String) -> RestError {
    RestError::new(StatusCode::BAD_REQUEST, message)
}

/// The tree of `stacks` (frames outermost first) under a `root` node.
fn tree(stacks: &[(Vec<String>, u64)]) -> Value {
    #[derive(Default)]
    struct Node {
        value: u64,
        children: BTreeMap<String, Node>,
    }
    fn to_json(name: &str, node: &Node) -> Value {
        let children: Vec<Value> = node.children.iter().map(|(n, c)| to_json(n, c)).collect();
        json!({ "name": name, "value": node.value, "children": children })
    }
    let mut root = Node::default();
    for (stack, count) in stacks {
        root.value += count;
        let mut node = &mut root;
        for frame in stack {
            node = node.children.entry(frame.clone()).or_default();
            node.value += count;
        }
    }
    to_json("root", &root)
}

/// Samples the threads of `attempts` (by taskmanager) and builds the graph.
async fn sample(
    state: &RestState,
    attempts: Vec<(ResourceId, ExecutionAttemptId)>,
    settings: FlameGraphSettings,
    graph_type: GraphType,
) -> Result<Value, String> {
    let tms = state.resource_manager.task_managers().await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    let mut by_tm: HashMap<ResourceId, Vec<ExecutionAttemptId>> = HashMap::new();
    for (tm, attempt) in attempts {
        by_tm.entry(tm).or_default().push(attempt);
    }
    let period = settings.period();
    let requests = by_tm.into_iter().filter_map(|(tm, attempts)| {
        let info = tms.iter().find(|t| t.resource_id == tm)?;
        let gateway = TaskExecutorGateway(RemoteEndpoint::new(
            state.resource_manager.0.rpc.clone(),
            info.address.clone(),
            period + state.resource_manager.0.timeout,
        ));
        let request = RequestThreadSamples {
            attempts,
            duration_ms: period.as_millis() as u64,
            frequency_hz: settings.frequency_hz(),
            max_depth: settings.stack_depth,
        };
        Some(async move { gateway.thread_samples(&request).await })
    });
    let mut stacks: Vec<(Vec<String>, u64)> = Vec::new();
    if graph_type != GraphType::OffCpu {
        for answer in futures::future::join_all(requests).await {
            let samples = answer.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            stacks.extend(samples.stacks);
        }
    }
    stacks.sort_by_key(|s| std::cmp::Reverse(s.1));
    stacks.truncate(MAX_STACKS);
    Ok(json!({ "endTimestamp": epoch_ms(), "data": tree(&stacks) }))
}

/// `GET /jobs/:jobid/vertices/:vertexid/flamegraph`.
pub async fn flamegraph(
    state: web::Data<RestState>,
    path: web::Path<(String, String)>,
    query: web::Query<FlameGraphQuery>,
) -> Rest {
    let (job, vertex) = path.into_inner();
    let job_id = parse_job_id(&job)?;
    let s = snapshot(&state, job_id).await?;
    let v = find_vertex(&s, &vertex)?;
    let graph_type = match query.graph_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("full") => GraphType::Full,
        Some("on_cpu") => GraphType::OnCpu,
        Some("off_cpu") => GraphType::OffCpu,
        Some(other) => {
            return Err(bad_request(format!(
                "Invalid value for query parameter 'type': '{}'. Known types: FULL, ON_CPU, OFF_CPU.",
                other.chars().take(64).collect::<String>()
            )))
        }
    };
    let subtask = match query.subtaskindex.as_deref() {
        None => None,
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(i) if (i as usize) < v.subtasks.len() => Some(i),
            _ => {
                return Err(bad_request(format!(
                    "Invalid subtask index '{}' for a vertex of parallelism {}.",
                    raw.chars().take(32).collect::<String>(),
                    v.subtasks.len()
                )))
            }
        },
    };
    let graphs = state.flame_graphs.clone();
    let settings = graphs.settings;
    if !settings.enabled {
        return Ok(HttpResponse::Ok().json(json!({ "endTimestamp": -2 })));
    }
    let attempts: Vec<(ResourceId, ExecutionAttemptId)> = v
        .subtasks
        .iter()
        .enumerate()
        .filter(|(i, _)| subtask.is_none_or(|s| s as usize == *i))
        .filter(|(_, st)| st.current.state == ExecutionState::Running)
        .filter_map(|(_, st)| Some((st.current.assignment.as_ref()?.resource_id.clone(), st.current.attempt_id)))
        .collect();
    if attempts.is_empty() || s.graph.status.is_globally_terminal() {
        return Ok(HttpResponse::Ok().json(json!({ "endTimestamp": -1 })));
    }
    let key: Key = (job_id, v.id, subtask, graph_type);
    let answer = {
        let mut cache = graphs.cache();
        let now = Instant::now();
        match cache.get_mut(&key) {
            Some(Entry::Ready { at, graph, refreshing }) => {
                let answer = graph.clone();
                if now.duration_since(*at) < settings.refresh_interval || *refreshing {
                    return Ok(HttpResponse::Ok().json(answer));
                }
                *refreshing = true;
                answer
            }
            Some(Entry::Sampling { .. }) => return Ok(HttpResponse::Ok().json(json!({ "endTimestamp": -3 }))),
            None => {
                if cache.len() >= MAX_CACHED {
                    let oldest = cache
                        .iter()
                        .map(|(k, e)| {
                            (
                                *k,
                                match e {
                                    Entry::Sampling { since } => *since,
                                    Entry::Ready { at, .. } => *at,
                                },
                            )
                        })
                        .min_by_key(|(_, t)| *t)
                        .map(|(k, _)| k);
                    if let Some(oldest) = oldest {
                        cache.remove(&oldest);
                    }
                }
                cache.insert(key, Entry::Sampling { since: now });
                json!({ "endTimestamp": -3 })
            }
        }
    };
    let state = state.clone();
    actix_web::rt::spawn(async move {
        let result = sample(&state, attempts, settings, graph_type).await;
        let mut cache = graphs.cache();
        match result {
            Ok(graph) => {
                cache.insert(key, Entry::Ready { at: Instant::now(), graph, refreshing: false });
            }
            Err(e) => {
                warn!(job = %key.0, vertex = %key.1, error = %e, "could not sample a flame graph");
                // A refresh that failed keeps the old graph; a first sampling is retried by
                // the next request.
                match cache.get_mut(&key) {
                    Some(Entry::Ready { refreshing, at, .. }) => {
                        *refreshing = false;
                        *at = Instant::now();
                    }
                    _ => {
                        cache.remove(&key);
                    }
                }
            }
        }
    });
    Ok(HttpResponse::Ok().json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_merge_into_a_tree_outermost_first() {
        let s = |frames: &[&str], n: u64| (frames.iter().map(|f| f.to_string()).collect::<Vec<_>>(), n);
        let graph = tree(&[s(&["main", "run", "map"], 3), s(&["main", "run", "emit"], 2), s(&["main", "poll"], 1)]);
        assert_eq!(graph["name"], "root");
        assert_eq!(graph["value"], 6);
        let main = &graph["children"][0];
        assert_eq!((main["name"].as_str(), main["value"].as_u64()), (Some("main"), Some(6)));
        let names: Vec<&str> =
            main["children"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["poll", "run"]);
        let run = &main["children"][1];
        assert_eq!(run["value"], 5);
        assert_eq!(run["children"].as_array().unwrap().len(), 2);
        assert_eq!(tree(&[]), json!({ "name": "root", "value": 0, "children": [] }));
    }

    #[test]
    fn settings_are_flinks() {
        let settings = FlameGraphSettings::from_config(&Configuration::new()).unwrap();
        assert!(!settings.enabled);
        assert_eq!(settings.period(), Duration::from_secs(5));
        assert_eq!(settings.frequency_hz(), 20);
        assert_eq!(settings.stack_depth, 100);
        assert_eq!(settings.refresh_interval, Duration::from_secs(60));
    }
}
