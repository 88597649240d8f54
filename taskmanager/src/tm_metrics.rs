//! What the taskmanager reports about itself and its running tasks.
//!
//! - The taskmanager's own metrics ([`TaskManagerMetrics::taskmanager_metrics`]): the
//!   process figures (`common::process_metrics`, under Flint's and Flink's names), the
//!   network buffers (`Status.Shuffle.Netty.{Total,Available,Used}MemorySegments`,
//!   `RequestedMemoryUsage` in percent, and the legacy `Status.Network.*MemorySegments`: a
//!   segment is one buffer slot of the running tasks' bounded input and output queues;
//!   Flint's buffers are record batches of varying size, so the byte gauges
//!   `Status.Shuffle.Netty.*Memory` are not reported), and managed memory
//!   (`Status.Flink.Memory.Managed.Total` is the configured size; `.Used` is 0 because
//!   Flint's state lives in the allocator's heap, not in a managed pool). They travel to the
//!   ResourceManager with every heartbeat answer.
//! - Each running task's latest [`MetricDump`] (updated with the task's status reports,
//!   once a second), so that the Prometheus reporter can serve task and operator metrics
//!   with Flink's scopes and labels without touching the tasks' threads.

use std::collections::BTreeMap;
use std::sync::Mutex;

use flint_common::ids::{ExecutionAttemptId, JobId, JobVertexId};
use flint_common::messages::{MetricDump, TaskDeploymentDescriptor};
use flint_common::metric_reporter::{MetricPoint, Scope};
use flint_common::process_metrics::{mimalloc_committed, ProcessMetrics};

/// What identifies a task's metrics: Flink's task scope variables.
struct TaskEntry {
    job_id: JobId,
    job_name: String,
    vertex_id: JobVertexId,
    task_name: String,
    subtask: u32,
    attempt_number: u32,
    dump: MetricDump,
    /// The task thread's pthread id, once it runs.
    thread: Option<u64>,
}

/// The taskmanager's metrics and its tasks' latest ones.
pub struct TaskManagerMetrics {
    host: String,
    tm_id: String,
    managed_memory: u64,
    process: ProcessMetrics,
    tasks: Mutex<BTreeMap<ExecutionAttemptId, TaskEntry>>,
}

impl TaskManagerMetrics {
    pub fn new(host: String, tm_id: String, managed_memory: u64) -> Self {
        Self {
            host,
            tm_id,
            managed_memory,
            process: ProcessMetrics::new(mimalloc_committed),
            tasks: Mutex::new(BTreeMap::new()),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, BTreeMap<ExecutionAttemptId, TaskEntry>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A task was deployed here.
    pub fn task_started(&self, tdd: &TaskDeploymentDescriptor) {
        self.tasks().insert(
            tdd.attempt_id,
            TaskEntry {
                job_id: tdd.job_id,
                job_name: tdd.job_name.clone(),
                vertex_id: tdd.vertex.id,
                task_name: tdd.vertex.name.clone(),
                subtask: tdd.subtask,
                attempt_number: tdd.attempt_number,
                dump: MetricDump::default(),
                thread: None,
            },
        );
    }

    /// A task reported its metrics.
    pub fn task_reported(&self, attempt: ExecutionAttemptId, dump: &MetricDump) {
        if let Some(entry) = self.tasks().get_mut(&attempt) {
            entry.dump = dump.clone();
        }
    }

    /// A task's thread started.
    pub fn task_thread(&self, attempt: ExecutionAttemptId, thread: u64) {
        if let Some(entry) = self.tasks().get_mut(&attempt) {
            entry.thread = Some(thread);
        }
    }

    /// The threads of these attempts that run here.
    pub fn task_threads(&self, attempts: &[ExecutionAttemptId]) -> Vec<u64> {
        let tasks = self.tasks();
        attempts.iter().filter_map(|a| tasks.get(a)?.thread).collect()
    }

    /// A task reached a terminal state: its metrics are gone, as in Flink.
    pub fn task_ended(&self, attempt: ExecutionAttemptId) {
        self.tasks().remove(&attempt);
    }

    /// The taskmanager's own metrics by id.
    pub fn taskmanager_metrics(&self) -> Vec<(String, f64)> {
        let (queued, capacity) = self
            .tasks()
            .values()
            .fold((0u64, 0u64), |(q, c), t| (q + t.dump.buffers_queued, c + t.dump.buffers_capacity));
        let available = capacity.saturating_sub(queued);
        let mut out: Vec<(String, f64)> = self.process.sample().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        for (name, value) in [
            ("Status.Shuffle.Netty.TotalMemorySegments", capacity),
            ("Status.Shuffle.Netty.AvailableMemorySegments", available),
            ("Status.Shuffle.Netty.UsedMemorySegments", queued),
            ("Status.Network.TotalMemorySegments", capacity),
            ("Status.Network.AvailableMemorySegments", available),
        ] {
            out.push((name.to_string(), value as f64));
        }
        let usage = (queued * 100).checked_div(capacity).unwrap_or(0) as f64;
        out.push(("Status.Shuffle.Netty.RequestedMemoryUsage".into(), usage));
        out.push(("Status.Flink.Memory.Managed.Total".into(), self.managed_memory as f64));
        out.push(("Status.Flink.Memory.Managed.Used".into(), 0.0));
        out
    }

    /// Every metric of this process with Flink's scopes and variables, for the reporter.
    pub fn points(&self) -> Vec<MetricPoint> {
        let tm_labels = || vec![("host", self.host.clone()), ("tm_id", self.tm_id.clone())];
        let mut points: Vec<MetricPoint> = self
            .taskmanager_metrics()
            .into_iter()
            .map(|(name, value)| MetricPoint { scope: Scope::TaskManager, name, labels: tm_labels(), value })
            .collect();
        for (attempt, t) in self.tasks().iter() {
            let mut labels = tm_labels();
            labels.extend([
                ("job_id", t.job_id.to_string()),
                ("job_name", t.job_name.clone()),
                ("task_id", t.vertex_id.to_string()),
                ("task_attempt_id", attempt.to_string()),
                ("task_name", t.task_name.clone()),
                ("subtask_index", t.subtask.to_string()),
                ("task_attempt_num", t.attempt_number.to_string()),
            ]);
            for (name, value) in &t.dump.task {
                points.push(MetricPoint {
                    scope: Scope::TaskManagerJobTask,
                    name: name.clone(),
                    labels: labels.clone(),
                    value: *value,
                });
            }
            for (operator, metrics) in &t.dump.operators {
                let mut op_labels = labels.clone();
                op_labels.push(("operator_name", operator.clone()));
                for (name, value) in metrics {
                    points.push(MetricPoint {
                        scope: Scope::TaskManagerJobTaskOperator,
                        name: name.clone(),
                        labels: op_labels.clone(),
                        value: *value,
                    });
                }
            }
            for metric in &t.dump.grouped {
                let mut op_labels = labels.clone();
                op_labels.push(("operator_name", metric.operator.clone()));
                op_labels.extend(metric.variables.iter().map(|(key, value)| (key.name(), value.clone())));
                points.push(MetricPoint {
                    scope: Scope::TaskManagerJobTaskOperator,
                    name: metric.logical_name(),
                    labels: op_labels,
                    value: metric.value,
                });
            }
        }
        points
    }
}
