//! The ExecutionGraph: a job's subtasks, their attempts and states, as a pure state
//! machine (no I/O, time passed in). The JobMaster actor owns one and performs the I/O.
//!
//! Job status (Flink's `JobStatus`); every legal transition is listed in
//! [`JobStatus::can_transition_to`]:
//!
//! ```text
//! INITIALIZING -> CREATED -> RUNNING -> FINISHED
//!                    |          |  \--> FAILING -----> FAILED
//!                    |          |  \--> RESTARTING --> RUNNING
//!                    |          \-----> CANCELLING --> CANCELED
//!                    +--> FAILED / CANCELLING / SUSPENDED  (any non-terminal -> SUSPENDED)
//! ```
//!
//! Execution state of one attempt of one subtask (Flink's `ExecutionState`), see
//! [`ExecutionState::can_transition_to`]:
//!
//! ```text
//! CREATED -> SCHEDULED -> DEPLOYING -> INITIALIZING -> RUNNING -> FINISHED
//!    any non-terminal ----> CANCELING -> CANCELED
//!    any non-terminal ----> FAILED
//! ```
//!
//! An illegal transition is a bug; it is refused and reported with both states.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use flint_common::ids::{AllocationId, ExecutionAttemptId, JobId, JobVertexId, ResourceId};
use flint_common::job::plan::JobGraph;
use flint_common::messages::MetricDump;
use serde::{Deserialize, Serialize};

/// The status of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobStatus {
    Initializing,
    Created,
    Running,
    Failing,
    Failed,
    Cancelling,
    Canceled,
    Finished,
    Restarting,
    Suspended,
}

impl JobStatus {
    pub const ALL: [JobStatus; 10] = [
        JobStatus::Initializing,
        JobStatus::Created,
        JobStatus::Running,
        JobStatus::Failing,
        JobStatus::Failed,
        JobStatus::Cancelling,
        JobStatus::Canceled,
        JobStatus::Finished,
        JobStatus::Restarting,
        JobStatus::Suspended,
    ];

    /// The name the REST API shows.
    pub fn flink_name(self) -> &'static str {
        match self {
            JobStatus::Initializing => "INITIALIZING",
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Failing => "FAILING",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Finished => "FINISHED",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Suspended => "SUSPENDED",
        }
    }

    /// Finished, canceled or failed: the job will never run again.
    pub fn is_globally_terminal(self) -> bool {
        matches!(self, JobStatus::Finished | JobStatus::Canceled | JobStatus::Failed)
    }

    pub fn is_terminal(self) -> bool {
        self.is_globally_terminal() || self == JobStatus::Suspended
    }

    /// The legal transitions, all in one place.
    pub fn can_transition_to(self, to: JobStatus) -> bool {
        use JobStatus::*;
        if self.is_terminal() {
            return false;
        }
        if to == Suspended {
            return true;
        }
        matches!(
            (self, to),
            (Initializing, Created)
                | (Initializing, Failed)
                | (Created, Running)
                | (Created, Failed)
                | (Created, Cancelling)
                | (Running, Finished)
                | (Running, Failing)
                | (Running, Cancelling)
                | (Running, Restarting)
                | (Running, Failed)
                | (Failing, Failed)
                | (Failing, Restarting)
                | (Failing, Cancelling)
                | (Restarting, Running)
                | (Restarting, Failed)
                | (Restarting, Cancelling)
                | (Restarting, Canceled)
                | (Cancelling, Canceled)
                | (Cancelling, Failed)
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.flink_name())
    }
}

/// The state of one execution attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExecutionState {
    Created,
    Scheduled,
    Deploying,
    Initializing,
    Running,
    Finished,
    Canceling,
    Canceled,
    Failed,
}

impl ExecutionState {
    pub const ALL: [ExecutionState; 9] = [
        ExecutionState::Created,
        ExecutionState::Scheduled,
        ExecutionState::Deploying,
        ExecutionState::Initializing,
        ExecutionState::Running,
        ExecutionState::Finished,
        ExecutionState::Canceling,
        ExecutionState::Canceled,
        ExecutionState::Failed,
    ];

    pub fn flink_name(self) -> &'static str {
        match self {
            ExecutionState::Created => "CREATED",
            ExecutionState::Scheduled => "SCHEDULED",
            ExecutionState::Deploying => "DEPLOYING",
            ExecutionState::Initializing => "INITIALIZING",
            ExecutionState::Running => "RUNNING",
            ExecutionState::Finished => "FINISHED",
            ExecutionState::Canceling => "CANCELING",
            ExecutionState::Canceled => "CANCELED",
            ExecutionState::Failed => "FAILED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, ExecutionState::Finished | ExecutionState::Canceled | ExecutionState::Failed)
    }

    /// The legal transitions, all in one place.
    pub fn can_transition_to(self, to: ExecutionState) -> bool {
        use ExecutionState::*;
        if self.is_terminal() {
            return false;
        }
        match to {
            Failed => true,
            Canceling => self != Canceling,
            Canceled => true,
            Scheduled => self == Created,
            Deploying => self == Scheduled,
            Initializing => self == Deploying,
            Running => matches!(self, Deploying | Initializing),
            Finished => matches!(self, Running | Initializing | Deploying),
            Created => false,
        }
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.flink_name())
    }
}

/// A transition that the state machine does not allow.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TransitionError {
    #[error("illegal job status transition {from} -> {to}")]
    Job { from: JobStatus, to: JobStatus },
    #[error("illegal execution state transition {from} -> {to} of attempt {attempt}")]
    Execution { attempt: ExecutionAttemptId, from: ExecutionState, to: ExecutionState },
    #[error("unknown execution attempt {0}")]
    UnknownAttempt(ExecutionAttemptId),
}

/// Where an execution runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotAssignment {
    pub allocation_id: AllocationId,
    pub resource_id: ResourceId,
    /// `host` of the TaskExecutor, for the REST API.
    pub host: String,
    /// `host:port` of the TaskExecutor's data server.
    pub data_address: String,
}

/// One attempt of one subtask.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Execution {
    pub attempt_id: ExecutionAttemptId,
    pub attempt_number: u32,
    pub state: ExecutionState,
    /// Epoch ms when each state was entered.
    pub timestamps: BTreeMap<ExecutionState, u64>,
    pub assignment: Option<SlotAssignment>,
    pub failure: Option<String>,
    /// Record and byte counts reported by the task.
    pub metrics: IoMetrics,
    /// The task's metrics by Flink's names, as it last measured them.
    #[serde(default)]
    pub metric_dump: Arc<MetricDump>,
}

/// Record and byte counts of one execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IoMetrics {
    pub read_records: u64,
    pub write_records: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub sink_records: u64,
}

impl IoMetrics {
    pub fn add(&mut self, other: &IoMetrics) {
        self.read_records += other.read_records;
        self.write_records += other.write_records;
        self.read_bytes += other.read_bytes;
        self.write_bytes += other.write_bytes;
        self.sink_records += other.sink_records;
    }
}

impl Execution {
    fn new(attempt_number: u32, now_ms: u64) -> Self {
        Self {
            attempt_id: ExecutionAttemptId::generate(),
            attempt_number,
            state: ExecutionState::Created,
            timestamps: BTreeMap::from([(ExecutionState::Created, now_ms)]),
            assignment: None,
            failure: None,
            metrics: IoMetrics::default(),
            metric_dump: Arc::default(),
        }
    }

    /// When the attempt entered `state`, 0 if never.
    pub fn timestamp(&self, state: ExecutionState) -> u64 {
        self.timestamps.get(&state).copied().unwrap_or(0)
    }
}

/// One parallel instance of a job vertex, with its current and earlier attempts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecutionVertex {
    pub subtask: u32,
    pub current: Execution,
    pub prior: Vec<Execution>,
}

/// A job vertex with its subtasks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecutionJobVertex {
    pub id: JobVertexId,
    pub name: String,
    pub parallelism: u32,
    pub subtasks: Vec<ExecutionVertex>,
}

impl ExecutionJobVertex {
    /// Number of current attempts per state.
    pub fn state_counts(&self) -> BTreeMap<ExecutionState, usize> {
        let mut counts: BTreeMap<ExecutionState, usize> = ExecutionState::ALL.iter().map(|s| (*s, 0)).collect();
        for s in &self.subtasks {
            *counts.entry(s.current.state).or_default() += 1;
        }
        counts
    }

    /// The vertex's aggregate state, as Flink derives it.
    pub fn aggregate_state(&self) -> ExecutionState {
        let counts = self.state_counts();
        let n = self.subtasks.len();
        let count = |s| counts.get(&s).copied().unwrap_or(0);
        use ExecutionState::*;
        if count(Failed) > 0 {
            Failed
        } else if count(Canceling) > 0 {
            Canceling
        } else if count(Canceled) > 0 && count(Canceled) + count(Finished) == n {
            Canceled
        } else if count(Finished) == n {
            Finished
        } else if count(Running) > 0 {
            Running
        } else if count(Initializing) > 0 {
            Initializing
        } else if count(Deploying) > 0 {
            Deploying
        } else if count(Scheduled) > 0 {
            Scheduled
        } else {
            Created
        }
    }

    pub fn metrics(&self) -> IoMetrics {
        let mut total = IoMetrics::default();
        for s in &self.subtasks {
            total.add(&s.current.metrics);
        }
        total
    }
}

/// What a state update changed for the job as a whole.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateOutcome {
    /// Nothing the JobMaster must act on.
    None,
    /// Every subtask finished. The job stays RUNNING until the JobMaster committed the
    /// output left for the end and moves it to FINISHED: a client that sees FINISHED sees
    /// the whole output.
    JobFinished,
    /// A subtask failed while the job was running: the job is FAILING.
    TaskFailed { vertex: String, subtask: u32, cause: String },
    /// While cancelling or failing, every subtask reached a terminal state.
    AllTerminal,
}

/// The whole job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecutionGraph {
    pub job_id: JobId,
    pub name: String,
    pub status: JobStatus,
    /// Epoch ms when each status was (last) entered.
    pub status_timestamps: BTreeMap<JobStatus, u64>,
    pub vertices: Vec<ExecutionJobVertex>,
    pub failure_cause: Option<String>,
}

impl ExecutionGraph {
    /// A graph in CREATED with one CREATED execution per subtask.
    pub fn new(job_id: JobId, graph: &JobGraph, now_ms: u64) -> Self {
        let vertices = graph
            .vertices
            .iter()
            .map(|v| ExecutionJobVertex {
                id: v.id,
                name: v.name.clone(),
                parallelism: v.parallelism,
                subtasks: (0..v.parallelism)
                    .map(|subtask| ExecutionVertex { subtask, current: Execution::new(0, now_ms), prior: Vec::new() })
                    .collect(),
            })
            .collect();
        Self {
            job_id,
            name: graph.name.clone(),
            status: JobStatus::Created,
            status_timestamps: BTreeMap::from([(JobStatus::Initializing, now_ms), (JobStatus::Created, now_ms)]),
            vertices,
            failure_cause: None,
        }
    }

    pub fn transition(&mut self, to: JobStatus, now_ms: u64) -> Result<(), TransitionError> {
        if !self.status.can_transition_to(to) {
            return Err(TransitionError::Job { from: self.status, to });
        }
        self.status = to;
        self.status_timestamps.insert(to, now_ms);
        Ok(())
    }

    /// When the job entered `status`, -1 if never (Flink's convention).
    pub fn status_timestamp(&self, status: JobStatus) -> i64 {
        self.status_timestamps.get(&status).map_or(-1, |t| *t as i64)
    }

    pub fn executions(&self) -> impl Iterator<Item = (&ExecutionJobVertex, &ExecutionVertex)> {
        self.vertices.iter().flat_map(|v| v.subtasks.iter().map(move |s| (v, s)))
    }

    /// Vertex and subtask index of the current attempt `attempt`.
    pub fn locate(&self, attempt: ExecutionAttemptId) -> Option<(usize, usize)> {
        self.vertices
            .iter()
            .enumerate()
            .find_map(|(vi, v)| v.subtasks.iter().position(|s| s.current.attempt_id == attempt).map(|si| (vi, si)))
    }

    pub fn execution(&self, attempt: ExecutionAttemptId) -> Option<&Execution> {
        self.locate(attempt).map(|(v, s)| &self.vertices[v].subtasks[s].current)
    }

    /// Moves every current, non-terminal execution in `from` to `to` (e.g. all CREATED to
    /// SCHEDULED); returns the attempts moved.
    pub fn transition_all(&mut self, from: ExecutionState, to: ExecutionState, now_ms: u64) -> Vec<ExecutionAttemptId> {
        let mut moved = Vec::new();
        for v in &mut self.vertices {
            for s in &mut v.subtasks {
                if s.current.state == from && from.can_transition_to(to) {
                    s.current.state = to;
                    s.current.timestamps.insert(to, now_ms);
                    moved.push(s.current.attempt_id);
                }
            }
        }
        moved
    }

    /// Assigns the slot an execution is deployed to.
    pub fn assign(&mut self, attempt: ExecutionAttemptId, assignment: SlotAssignment) -> Result<(), TransitionError> {
        let (v, s) = self.locate(attempt).ok_or(TransitionError::UnknownAttempt(attempt))?;
        self.vertices[v].subtasks[s].current.assignment = Some(assignment);
        Ok(())
    }

    /// The counts and metrics a task reported. Reports without metrics by name (the first
    /// and the last of a task) keep the ones measured before.
    pub fn update_metrics(&mut self, attempt: ExecutionAttemptId, metrics: IoMetrics, dump: Arc<MetricDump>) {
        if let Some((v, s)) = self.locate(attempt) {
            let execution = &mut self.vertices[v].subtasks[s].current;
            execution.metrics = metrics;
            if !dump.task.is_empty() {
                execution.metric_dump = dump;
            }
        }
    }

    /// Applies a state update of one attempt and derives what it means for the job.
    /// Updates of earlier attempts are ignored (`Ok(None)`).
    pub fn update_execution(
        &mut self,
        attempt: ExecutionAttemptId,
        to: ExecutionState,
        failure: Option<String>,
        now_ms: u64,
    ) -> Result<UpdateOutcome, TransitionError> {
        let Some((v, s)) = self.locate(attempt) else {
            return Ok(UpdateOutcome::None);
        };
        let execution = &mut self.vertices[v].subtasks[s].current;
        let from = execution.state;
        // Reports that arrive after the attempt ended or was asked to cancel are late,
        // not illegal: a task may report RUNNING just as its cancel is sent.
        if from == to || from.is_terminal() || (from == ExecutionState::Canceling && !to.is_terminal()) {
            return Ok(UpdateOutcome::None);
        }
        // A task that ends CANCELED although nobody asked it to (e.g. a stray `CancelTask`)
        // while the job runs is a failure: the job fails over instead of running on without
        // it (Flink: "canceled without being requested").
        let (to, failure) = if to == ExecutionState::Canceled
            && from != ExecutionState::Canceling
            && matches!(self.status, JobStatus::Running | JobStatus::Created)
        {
            let cause = format!(
                "java.lang.IllegalStateException: Task {} ({}/{}) was canceled without being requested.",
                self.vertices[v].name,
                self.vertices[v].subtasks[s].subtask + 1,
                self.vertices[v].parallelism
            );
            (ExecutionState::Failed, Some(cause))
        } else {
            (to, failure)
        };
        let execution = &mut self.vertices[v].subtasks[s].current;
        if !from.can_transition_to(to) {
            return Err(TransitionError::Execution { attempt, from, to });
        }
        execution.state = to;
        execution.timestamps.insert(to, now_ms);
        if to == ExecutionState::Failed {
            execution.failure = failure.clone();
        }
        let vertex_name = self.vertices[v].name.clone();
        let subtask = self.vertices[v].subtasks[s].subtask;

        if to == ExecutionState::Failed && matches!(self.status, JobStatus::Running | JobStatus::Created) {
            let cause = failure.unwrap_or_else(|| "unknown failure".into());
            self.failure_cause = Some(cause.clone());
            self.transition(JobStatus::Failing, now_ms)?;
            return Ok(UpdateOutcome::TaskFailed { vertex: vertex_name, subtask, cause });
        }
        if self.executions().all(|(_, s)| s.current.state == ExecutionState::Finished)
            && self.status == JobStatus::Running
        {
            return Ok(UpdateOutcome::JobFinished);
        }
        if matches!(self.status, JobStatus::Cancelling | JobStatus::Failing)
            && self.executions().all(|(_, s)| s.current.state.is_terminal())
        {
            return Ok(UpdateOutcome::AllTerminal);
        }
        Ok(UpdateOutcome::None)
    }

    /// Marks every non-terminal execution that never reached a TaskExecutor (CREATED or
    /// SCHEDULED) as CANCELED, and returns the attempts that are deployed and must be
    /// canceled at their TaskExecutor (moved to CANCELING).
    pub fn begin_cancel(&mut self, now_ms: u64) -> Vec<(ExecutionAttemptId, Option<SlotAssignment>)> {
        let mut to_cancel = Vec::new();
        for v in &mut self.vertices {
            for s in &mut v.subtasks {
                let e = &mut s.current;
                match e.state {
                    ExecutionState::Created | ExecutionState::Scheduled => {
                        e.state = ExecutionState::Canceled;
                        e.timestamps.insert(ExecutionState::Canceled, now_ms);
                    }
                    st if !st.is_terminal() && st != ExecutionState::Canceling => {
                        e.state = ExecutionState::Canceling;
                        e.timestamps.insert(ExecutionState::Canceling, now_ms);
                        to_cancel.push((e.attempt_id, e.assignment.clone()));
                    }
                    _ => {}
                }
            }
        }
        to_cancel
    }

    /// A global failover: every subtask gets a new CREATED attempt (its current one is
    /// kept in its history). Call once every execution is terminal.
    pub fn reset_for_restart(&mut self, now_ms: u64) {
        for v in &mut self.vertices {
            for s in &mut v.subtasks {
                let next = Execution::new(s.current.attempt_number + 1, now_ms);
                s.prior.push(std::mem::replace(&mut s.current, next));
            }
        }
    }

    pub fn all_terminal(&self) -> bool {
        self.executions().all(|(_, s)| s.current.state.is_terminal())
    }

    /// Total number of subtasks.
    pub fn num_tasks(&self) -> usize {
        self.vertices.iter().map(|v| v.subtasks.len()).sum()
    }

    /// Current attempts per state over the whole job.
    pub fn state_counts(&self) -> BTreeMap<ExecutionState, usize> {
        let mut counts: BTreeMap<ExecutionState, usize> = ExecutionState::ALL.iter().map(|s| (*s, 0)).collect();
        for (_, s) in self.executions() {
            *counts.entry(s.current.state).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flint_common::job::load_job;

    fn graph() -> JobGraph {
        let text = r#"{ "flint": 1, "name": "t", "parallelism": 2, "operators": [
            { "id": "src", "op": "source.sequence", "from": 0, "to": 10 },
            { "id": "agg", "op": "aggregate", "inputs": ["src"], "key": ["n"], "aggs": { "c": "count()" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["agg"] } ] }"#;
        load_job(text, 1).expect("valid job").job_graph()
    }

    fn attempts(eg: &ExecutionGraph) -> Vec<ExecutionAttemptId> {
        eg.executions().map(|(_, s)| s.current.attempt_id).collect()
    }

    fn run_all(eg: &mut ExecutionGraph) {
        eg.transition(JobStatus::Running, 1).unwrap();
        eg.transition_all(ExecutionState::Created, ExecutionState::Scheduled, 2);
        eg.transition_all(ExecutionState::Scheduled, ExecutionState::Deploying, 3);
        for a in attempts(eg) {
            assert_eq!(eg.update_execution(a, ExecutionState::Initializing, None, 4).unwrap(), UpdateOutcome::None);
            assert_eq!(eg.update_execution(a, ExecutionState::Running, None, 5).unwrap(), UpdateOutcome::None);
        }
    }

    #[test]
    fn every_job_transition_is_checked() {
        use JobStatus::*;
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                let legal = from.can_transition_to(to);
                if from.is_terminal() {
                    assert!(!legal, "{from} is terminal");
                }
                if to == Suspended && !from.is_terminal() {
                    assert!(legal);
                }
            }
        }
        assert!(Created.can_transition_to(Running));
        assert!(Running.can_transition_to(Finished));
        assert!(!Created.can_transition_to(Finished));
        assert!(!Finished.can_transition_to(Running));
        assert!(Cancelling.can_transition_to(Canceled));
        assert!(!Cancelling.can_transition_to(Running));
    }

    #[test]
    fn every_execution_transition_is_checked() {
        use ExecutionState::*;
        let path = [Created, Scheduled, Deploying, Initializing, Running, Finished];
        for w in path.windows(2) {
            assert!(w[0].can_transition_to(w[1]), "{} -> {}", w[0], w[1]);
        }
        assert!(!Created.can_transition_to(Running));
        assert!(!Scheduled.can_transition_to(Running));
        assert!(!Finished.can_transition_to(Failed));
        assert!(!Canceled.can_transition_to(Running));
        for s in [Created, Scheduled, Deploying, Initializing, Running, Canceling] {
            assert!(s.can_transition_to(Failed));
            assert!(s.can_transition_to(Canceled));
        }
    }

    #[test]
    fn a_task_canceled_without_being_asked_fails_the_job_over() {
        let mut eg = ExecutionGraph::new(JobId::generate(), &graph(), 0);
        run_all(&mut eg);
        let victim = attempts(&eg)[1];
        let outcome = eg.update_execution(victim, ExecutionState::Canceled, None, 6).unwrap();
        let UpdateOutcome::TaskFailed { cause, .. } = outcome else { panic!("{outcome:?}") };
        assert!(cause.contains("canceled without being requested"), "{cause}");
        assert_eq!(eg.status, JobStatus::Failing);
        assert_eq!(eg.execution(victim).unwrap().state, ExecutionState::Failed);
        // Requested cancellations end CANCELED as before.
        let to_cancel = eg.begin_cancel(7);
        for (attempt, _) in to_cancel {
            eg.update_execution(attempt, ExecutionState::Canceled, None, 8).unwrap();
            assert_eq!(eg.execution(attempt).unwrap().state, ExecutionState::Canceled);
        }
    }

    #[test]
    fn the_job_finishes_when_every_subtask_finished() {
        let mut eg = ExecutionGraph::new(JobId::generate(), &graph(), 0);
        assert_eq!(eg.num_tasks(), 4);
        run_all(&mut eg);
        let all = attempts(&eg);
        for a in &all[..3] {
            assert_eq!(eg.update_execution(*a, ExecutionState::Finished, None, 6).unwrap(), UpdateOutcome::None);
        }
        assert_eq!(eg.update_execution(all[3], ExecutionState::Finished, None, 7).unwrap(), UpdateOutcome::JobFinished);
        assert_eq!(eg.status, JobStatus::Running, "until the JobMaster committed the output");
        eg.transition(JobStatus::Finished, 7).unwrap();
        assert_eq!(eg.status, JobStatus::Finished);
        assert_eq!(eg.status_timestamp(JobStatus::Finished), 7);
        assert_eq!(eg.vertices[0].aggregate_state(), ExecutionState::Finished);
    }

    #[test]
    fn a_failed_subtask_fails_the_job_and_the_rest_is_canceled() {
        let mut eg = ExecutionGraph::new(JobId::generate(), &graph(), 0);
        run_all(&mut eg);
        let all = attempts(&eg);
        let outcome = eg.update_execution(all[1], ExecutionState::Failed, Some("boom".into()), 6).unwrap();
        assert!(matches!(outcome, UpdateOutcome::TaskFailed { ref cause, subtask: 1, .. } if cause == "boom"));
        assert_eq!(eg.status, JobStatus::Failing);
        let to_cancel = eg.begin_cancel(7);
        assert_eq!(to_cancel.len(), 3);
        for (a, _) in &to_cancel[..2] {
            assert_eq!(eg.update_execution(*a, ExecutionState::Canceled, None, 8).unwrap(), UpdateOutcome::None);
        }
        assert_eq!(
            eg.update_execution(to_cancel[2].0, ExecutionState::Canceled, None, 8).unwrap(),
            UpdateOutcome::AllTerminal
        );
        eg.transition(JobStatus::Failed, 9).unwrap();
        assert_eq!(eg.failure_cause.as_deref(), Some("boom"));
        assert_eq!(eg.vertices[0].aggregate_state(), ExecutionState::Failed);
    }

    #[test]
    fn a_restart_gives_every_subtask_a_new_attempt() {
        let mut eg = ExecutionGraph::new(JobId::generate(), &graph(), 0);
        run_all(&mut eg);
        let old = attempts(&eg);
        assert!(matches!(
            eg.update_execution(old[0], ExecutionState::Failed, Some("x".into()), 6).unwrap(),
            UpdateOutcome::TaskFailed { .. }
        ));
        for (a, _) in eg.begin_cancel(7) {
            eg.update_execution(a, ExecutionState::Canceled, None, 8).unwrap();
        }
        eg.transition(JobStatus::Restarting, 9).unwrap();
        eg.reset_for_restart(10);
        eg.transition(JobStatus::Running, 11).unwrap();
        let new = attempts(&eg);
        assert!(new.iter().all(|a| !old.contains(a)));
        assert!(eg.executions().all(|(_, s)| s.current.attempt_number == 1
            && s.current.state == ExecutionState::Created
            && s.prior.len() == 1));
        // Updates of the old attempts no longer count.
        assert_eq!(eg.update_execution(old[1], ExecutionState::Failed, None, 12).unwrap(), UpdateOutcome::None);
    }

    #[test]
    fn cancel_before_deployment_needs_no_task_executor() {
        let mut eg = ExecutionGraph::new(JobId::generate(), &graph(), 0);
        eg.transition(JobStatus::Running, 1).unwrap();
        eg.transition_all(ExecutionState::Created, ExecutionState::Scheduled, 2);
        eg.transition(JobStatus::Cancelling, 3).unwrap();
        assert!(eg.begin_cancel(4).is_empty());
        assert!(eg.all_terminal());
        eg.transition(JobStatus::Canceled, 5).unwrap();
        assert_eq!(eg.state_counts()[&ExecutionState::Canceled], 4);
    }

    #[test]
    fn illegal_updates_are_refused_and_stale_attempts_ignored() {
        let mut eg = ExecutionGraph::new(JobId::generate(), &graph(), 0);
        let a = attempts(&eg)[0];
        let err = eg.update_execution(a, ExecutionState::Running, None, 1).unwrap_err();
        assert_eq!(
            err,
            TransitionError::Execution { attempt: a, from: ExecutionState::Created, to: ExecutionState::Running }
        );
        assert_eq!(err.to_string(), format!("illegal execution state transition CREATED -> RUNNING of attempt {a}"));
        let stale = ExecutionAttemptId::generate();
        assert_eq!(eg.update_execution(stale, ExecutionState::Failed, None, 1).unwrap(), UpdateOutcome::None);
        assert!(eg.transition(JobStatus::Finished, 1).is_err());
    }
}
