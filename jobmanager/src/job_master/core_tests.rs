//! The JobMaster core without processes: the interleavings that are hard to reach with real
//! TaskExecutors, driven by a manual clock, plus a seeded random-event test with invariants.

use std::sync::Mutex;

use flint_common::job::load_job;
use flint_common::messages::TaskFailure;

use super::*;

/// A clock the test moves.
struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    fn new() -> Self {
        Self { start: Instant::now(), offset: Mutex::new(Duration::ZERO) }
    }
    fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap()
    }
    fn epoch_ms(&self) -> u64 {
        1_700_000_000_000 + self.offset.lock().unwrap().as_millis() as u64
    }
}

const HEARTBEAT: HeartbeatSettings =
    HeartbeatSettings { interval: Duration::from_secs(1), timeout: Duration::from_secs(5), rpc_failure_threshold: 2 };
const SLOT_TIMEOUT: Duration = Duration::from_secs(300);

/// A job of `parallelism` (source → keyed aggregate + sink: two vertices, one slot per subtask) with `config` (JSON
/// members) on two TaskExecutors.
struct Fixture {
    core: JobCore,
    clock: Arc<ManualClock>,
    tms: Vec<(ResourceId, RpcAddress)>,
    /// Every action the core returned, in order.
    log: Vec<String>,
    /// The id counter, as the actor keeps it.
    next_id: u64,
    /// Every attempt ever deployed.
    deployed: std::collections::HashSet<ExecutionAttemptId>,
    terminated: Option<JobSnapshot>,
}

fn job(parallelism: u32, config: &str) -> JobGraph {
    let text = format!(
        r#"{{ "flint": 1, "name": "t", "parallelism": {parallelism}, "config": {{ {config} }}, "operators": [
            {{ "id": "src", "op": "source.sequence", "from": 0, "to": 10 }},
            {{ "id": "agg", "op": "aggregate", "inputs": ["src"], "key": ["n"], "aggs": {{ "c": "count()" }} }},
            {{ "id": "out", "op": "sink.blackhole", "inputs": ["agg"] }} ] }}"#
    );
    load_job(&text, 1).expect("valid job").job_graph()
}

const FIXED: &str = r#""restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": 3,
    "restart-strategy.fixed-delay.delay": "200 ms""#;

fn checkpointed(dir: &str) -> String {
    format!(r#"{FIXED}, "execution.checkpointing.interval": "100 ms", "state.checkpoints.dir": "{dir}""#)
}

impl Fixture {
    fn new(parallelism: u32, config: &str) -> Self {
        let clock = Arc::new(ManualClock::new());
        let core_config = CoreConfig {
            cluster: Configuration::new(),
            slot_request_timeout: SLOT_TIMEOUT,
            heartbeat: HEARTBEAT,
            blob_server: None,
        };
        let job_id = JobId::generate();
        let core = JobCore::new(
            job_id,
            job(parallelism, config),
            RpcAddress::new("127.0.0.1:1", format!("jobmaster/{job_id}")),
            LeaderSessionId::generate(),
            &core_config,
            None,
            clock.clone(),
        );
        let tms = (0..2)
            .map(|i| {
                (ResourceId::new(format!("tm-{i}")), RpcAddress::new(format!("127.0.0.1:{}", 100 + i), "taskexecutor"))
            })
            .collect();
        Self { core, clock, tms, log: Vec::new(), next_id: 1, deployed: Default::default(), terminated: None }
    }

    /// Records `actions` and checks what must hold of every batch.
    fn see(&mut self, actions: Vec<Action>) -> Vec<Action> {
        assert!(self.terminated.is_none() || actions.is_empty(), "actions after the job terminated: {actions:?}");
        for (i, action) in actions.iter().enumerate() {
            self.log.push(format!("{action:?}").chars().take(120).collect());
            if let Action::Terminated(snapshot) = action {
                assert_eq!(i, actions.len() - 1, "Terminated is the last action");
                assert!(snapshot.graph.status.is_globally_terminal());
                self.terminated = Some((**snapshot).clone());
            }
        }
        let deploys: Vec<_> = actions.iter().filter(|a| matches!(a, Action::Deploy { .. })).collect();
        if !deploys.is_empty() {
            assert_eq!(deploys.len(), self.core.graph.num_tasks(), "every task is deployed at once");
            assert!(self.core.slots.iter().all(Option::is_some), "deployed with every slot held");
            assert!(self.core.phase().is_deployed(), "deployed in phase {:?}", self.core.phase());
            for action in &deploys {
                let Action::Deploy { tdd, .. } = action else { unreachable!() };
                assert!(self.deployed.insert(tdd.attempt_id), "attempt {} deployed twice", tdd.attempt_id);
                let current = self.core.graph.execution(tdd.attempt_id).expect("a current attempt");
                assert_eq!(current.state, ExecutionState::Deploying);
            }
        }
        actions
    }

    fn start(&mut self) -> Vec<Action> {
        let actions = self.core.start();
        self.see(actions)
    }

    /// Offers the requested allocations, split over the TaskExecutors (`split` of them to
    /// the first).
    fn offer(&mut self, allocations: &[AllocationId], split: usize) -> Vec<Action> {
        let (first, second) = allocations.split_at(split.min(allocations.len()));
        let mut all = Vec::new();
        for (tm, part) in [(0, first), (1, second)] {
            if part.is_empty() {
                continue;
            }
            let (rid, addr) = self.tms[tm].clone();
            let (accepted, actions) = self.core.slots_offered(&rid, &addr, "127.0.0.1:9000", part);
            assert_eq!(accepted, part);
            all.extend(self.see(actions));
        }
        all
    }

    fn attempts(&self) -> Vec<ExecutionAttemptId> {
        self.core.graph.executions().map(|(_, s)| s.current.attempt_id).collect()
    }

    fn update(
        &mut self,
        attempt: ExecutionAttemptId,
        state: ExecutionState,
        failure: Option<TaskFailure>,
    ) -> Vec<Action> {
        let update = TaskUpdate { attempt, state, failure, metrics: None, accumulators: vec![], commits: vec![] };
        let (_, actions) = self.core.task_updated(update);
        self.see(actions)
    }

    fn run_all(&mut self) {
        for a in self.attempts() {
            assert!(self.update(a, ExecutionState::Initializing, None).is_empty());
            assert!(self.update(a, ExecutionState::Running, None).is_empty());
        }
    }

    /// Answers every cancel in `actions` with the task reporting CANCELED.
    fn confirm_cancels(&mut self, actions: &[Action]) -> Vec<Action> {
        let mut out = Vec::new();
        for action in actions {
            if let Action::CancelTask { attempt, answer: true, .. } = action {
                out.extend(self.update(*attempt, ExecutionState::Canceled, None));
            }
        }
        out
    }

    /// Answers the id work in `actions` as the actor does; the other actions.
    fn ids(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let mut out = Vec::new();
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::ReserveCheckpointId { operation } => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let more = self.core.checkpoint_id_reserved(operation, Ok(id));
                    queue.extend(self.see(more));
                }
                Action::AdvanceCheckpointIds { past } => self.next_id = self.next_id.max(past + 1),
                other => out.push(other),
            }
        }
        out
    }

    fn fire(&mut self, timer: Timer) -> Vec<Action> {
        let actions = self.core.timer_fired(timer);
        self.see(actions)
    }

    /// Starts the job and runs every task: the job is deployed and RUNNING.
    fn running(parallelism: u32, config: &str) -> Self {
        let mut f = Self::new(parallelism, config);
        let actions = f.start();
        let allocations = requested(&actions);
        let deployed = f.offer(&allocations, allocations.len().div_ceil(2));
        assert_eq!(deploys(&deployed).len(), 2 * parallelism as usize);
        f.run_all();
        assert_eq!(f.core.status(), JobStatus::Running);
        f
    }
}

fn requested(actions: &[Action]) -> Vec<AllocationId> {
    actions
        .iter()
        .filter_map(|a| if let Action::RequestSlots(r) = a { Some(r.clone()) } else { None })
        .flatten()
        .collect()
}

fn deploys(actions: &[Action]) -> Vec<(ExecutionAttemptId, RpcAddress)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deploy { task_executor, tdd, .. } => Some((tdd.attempt_id, task_executor.clone())),
            _ => None,
        })
        .collect()
}

fn timers(actions: &[Action]) -> Vec<Timer> {
    actions.iter().filter_map(|a| if let Action::ArmTimer { timer, .. } = a { Some(*timer) } else { None }).collect()
}

fn cancels(actions: &[Action]) -> usize {
    actions.iter().filter(|a| matches!(a, Action::CancelTask { answer: true, .. })).count()
}

#[test]
fn the_exception_history_keeps_the_newest_entries_up_to_its_size() {
    let mut history = VecDeque::new();
    for i in 0..1000 {
        push_capped(&mut history, i, 16);
    }
    assert_eq!(history.len(), 16);
    assert_eq!(history.front(), Some(&984));
    assert_eq!(history.back(), Some(&999));
    push_capped(&mut history, 1000, 0);
    assert_eq!(history.into_iter().collect::<Vec<_>>(), [1000]);
}

#[test]
fn a_job_asks_for_its_slots_once_and_deploys_when_the_last_arrives() {
    let mut f = Fixture::new(2, FIXED);
    let actions = f.start();
    let allocations = requested(&actions);
    assert_eq!(allocations.len(), 2);
    assert_eq!(timers(&actions), [Timer::SlotTimeout { round: 1 }]);
    assert!(deploys(&f.offer(&allocations[..1], 1)).is_empty());
    // An offer nobody asked for is declined.
    let (rid, addr) = f.tms[1].clone();
    let (accepted, actions) = f.core.slots_offered(&rid, &addr, "h:1", &[AllocationId::generate()]);
    assert!(accepted.is_empty() && actions.is_empty());
    let actions = f.offer(&allocations[1..], 1);
    assert_eq!(deploys(&actions).len(), 4);
    // Subtask i of every vertex runs in slot i.
    assert_eq!(f.core.phase(), &Phase::Deployed { round: 1 });
    f.run_all();
    // A stale slot timeout of the finished round does nothing.
    assert!(f.fire(Timer::SlotTimeout { round: 1 }).is_empty());
    assert_eq!(f.core.status(), JobStatus::Running);
}

#[test]
fn a_failure_during_a_failover_is_part_of_it() {
    let mut f = Fixture::running(2, FIXED);
    let attempts = f.attempts();
    let first = f.update(attempts[0], ExecutionState::Failed, Some(TaskFailure::retryable("boom")));
    assert_eq!(cancels(&first), attempts.len() - 1);
    assert_eq!(f.core.snapshot().num_restarts, 1);
    // A second task fails while the first failover cancels: no second restart decision.
    let second = f.update(attempts[1], ExecutionState::Failed, Some(TaskFailure::retryable("boom again")));
    assert!(timers(&second).is_empty());
    assert_eq!(f.core.snapshot().num_restarts, 1);
    let rest: Vec<Action> = first
        .into_iter()
        .filter(|a| !matches!(a, Action::CancelTask { attempt, .. } if *attempt == attempts[1]))
        .collect();
    let done = f.confirm_cancels(&rest);
    assert_eq!(timers(&done), [Timer::RestartDue { round: 2 }]);
    assert_eq!(f.core.status(), JobStatus::Restarting);
    // A late report of an ended attempt while restarting is taken as late: nothing changes.
    let (_, actions) = f.core.task_updated(TaskUpdate {
        attempt: attempts[2],
        state: ExecutionState::Failed,
        failure: Some(TaskFailure::retryable("late")),
        metrics: None,
        accumulators: vec![],
        commits: vec![],
    });
    assert!(actions.is_empty());
    assert_eq!(f.core.status(), JobStatus::Restarting);
    // Every slot is still held: the restart deploys at once, new attempts.
    let redeployed = f.fire(Timer::RestartDue { round: 2 });
    assert!(requested(&redeployed).is_empty());
    let new: Vec<_> = deploys(&redeployed).into_iter().map(|(a, _)| a).collect();
    assert_eq!(new.len(), attempts.len());
    assert!(new.iter().all(|a| !attempts.contains(a)));
    assert_eq!(f.core.snapshot().num_restarts, 1);
    // One failover, one root exception.
    assert_eq!(f.core.snapshot().exceptions.len(), 1);
}

#[test]
fn a_taskmanager_lost_during_deployment_requests_its_slots_again() {
    let mut f = Fixture::new(2, FIXED);
    let actions = f.start();
    let allocations = requested(&actions);
    let deployed = deploys(&f.offer(&allocations, 1));
    let (lost_rid, lost_addr) = f.tms[1].clone();
    let (on_lost, _): (Vec<_>, Vec<_>) = deployed.iter().partition(|(_, tm)| *tm == lost_addr);
    // The first submission to the lost TaskExecutor finds it unreachable.
    let actions =
        f.core.deploy_answered(on_lost[0].0, &lost_rid, "agg (2/2)", DeployOutcome::Unreachable("refused".into()));
    let actions = f.see(actions);
    // The others are canceled (the lost TaskExecutor's tasks are already gone).
    assert_eq!(cancels(&actions), 2);
    assert!(actions
        .iter()
        .all(|a| !matches!(a, Action::CancelTask { task_executor, .. } if *task_executor == lost_addr)));
    let done = f.confirm_cancels(&actions);
    assert_eq!(timers(&done), [Timer::RestartDue { round: 2 }]);
    // A second answer from the same TaskExecutor changes nothing.
    let again =
        f.core.deploy_answered(on_lost[1].0, &lost_rid, "src (2/2)", DeployOutcome::Unreachable("refused".into()));
    assert!(again.is_empty());
    let restart = f.fire(Timer::RestartDue { round: 2 });
    assert_eq!(requested(&restart).len(), 1, "only the lost slot is requested again");
    assert_eq!(timers(&restart), [Timer::SlotTimeout { round: 2 }]);
    // The slot timeout of round 1 fires now: stale.
    assert!(f.fire(Timer::SlotTimeout { round: 1 }).is_empty());
    let (rid, addr) = f.tms[0].clone();
    let (_, actions) = f.core.slots_offered(&rid, &addr, "h:1", &requested(&restart));
    assert_eq!(deploys(&f.see(actions)).len(), 4);
    assert_eq!(f.core.phase(), &Phase::Deployed { round: 2 });
}

#[test]
fn slots_that_do_not_come_fail_the_job_as_flink_does() {
    let mut f = Fixture::new(2, FIXED);
    let actions = f.start();
    let allocations = requested(&actions);
    f.offer(&allocations[..1], 1);
    let actions = f.fire(Timer::SlotTimeout { round: 1 });
    assert!(matches!(actions.first(), Some(Action::CancelSlotRequests(a)) if a == &allocations[1..]));
    let snapshot = f.terminated.clone().expect("the job ended");
    assert_eq!(snapshot.graph.status, JobStatus::Failed);
    assert!(snapshot.exceptions[0].exception.contains("NoResourceAvailableException"));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::FreeSlot { allocation_id, .. } if *allocation_id == allocations[0])));
}

#[test]
fn a_failed_slot_request_is_retried_only_in_its_round() {
    let mut f = Fixture::new(1, FIXED);
    let allocations = requested(&f.start());
    let actions = f.core.slot_request_sent(Err("no leader".into()));
    assert_eq!(timers(&actions), [Timer::RetrySlotRequest { round: 1 }]);
    assert_eq!(requested(&f.fire(Timer::RetrySlotRequest { round: 1 })), allocations);
    f.offer(&allocations, 1);
    assert!(f.fire(Timer::RetrySlotRequest { round: 1 }).is_empty());
}

#[test]
fn a_failure_that_cannot_be_retried_fails_the_job_with_its_cause() {
    let mut f = Fixture::running(2, FIXED);
    let attempts = f.attempts();
    let actions = f.update(attempts[0], ExecutionState::Failed, Some(TaskFailure::permanent("division by a string")));
    let done = f.confirm_cancels(&actions);
    assert!(timers(&done).is_empty());
    let snapshot = f.terminated.clone().expect("the job ended");
    assert_eq!(snapshot.graph.status, JobStatus::Failed);
    assert_eq!(snapshot.num_restarts, 0);
    assert!(snapshot.exceptions[0].exception.contains("division by a string"));
}

#[test]
fn a_silent_taskmanager_is_lost_after_the_heartbeat_timeout() {
    let mut f = Fixture::running(2, FIXED);
    let beats = f.core.heartbeat_tick();
    assert_eq!(beats.len(), 2);
    // No second heartbeat while one is in flight.
    assert!(f.core.heartbeat_tick().is_empty());
    let (rid0, _) = f.tms[0].clone();
    f.clock.advance(Duration::from_secs(3));
    f.core.heartbeat_answered(&rid0, HeartbeatOutcome::Ok);
    f.clock.advance(Duration::from_secs(3));
    // tm-1 has been silent for 6 s > 5 s; tm-0 answered 3 s ago.
    let actions = f.core.heartbeat_tick();
    let actions = f.see(actions);
    let snapshot = f.core.snapshot();
    assert!(snapshot.exceptions[0].exception.contains("heartbeat of TaskManager with id tm-1 timed out"));
    assert_eq!(snapshot.graph.status, JobStatus::Failing);
    let done = f.confirm_cancels(&actions);
    assert_eq!(timers(&done), [Timer::RestartDue { round: 2 }]);
}

#[test]
fn unreachable_heartbeats_lose_the_taskmanager_at_the_threshold() {
    let mut f = Fixture::running(2, FIXED);
    let (rid1, _) = f.tms[1].clone();
    f.core.heartbeat_tick();
    assert!(f.core.heartbeat_answered(&rid1, HeartbeatOutcome::Unreachable("refused".into())).is_empty());
    f.core.heartbeat_tick();
    let actions = f.core.heartbeat_answered(&rid1, HeartbeatOutcome::Unreachable("refused".into()));
    assert!(cancels(&actions) > 0, "{actions:?}");
}

#[test]
fn a_cancel_while_the_output_is_committed_lets_the_job_finish() {
    let mut f = Fixture::running(1, FIXED);
    let attempts = f.attempts();
    let sink = *attempts.last().unwrap();
    for a in &attempts[..attempts.len() - 1] {
        f.update(*a, ExecutionState::Finished, None);
    }
    let update = TaskUpdate {
        attempt: sink,
        state: ExecutionState::Finished,
        failure: None,
        metrics: None,
        accumulators: vec![("records".into(), 10)],
        commits: vec![FileCommit { from: "/x/.part".into(), to: "/x/part".into() }],
    };
    let (_, actions) = f.core.task_updated(update);
    let actions = f.see(actions);
    assert!(matches!(actions.as_slice(), [Action::CommitOutput(c)] if c.len() == 1));
    assert_eq!(f.core.phase(), &Phase::Committing);
    // The job is not FINISHED before its output is visible.
    assert_eq!(f.core.status(), JobStatus::Running);
    let (result, actions) = f.core.cancel();
    assert_eq!(result, Ok(()));
    assert!(actions.is_empty());
    let actions = f.core.output_committed(vec![]);
    f.see(actions);
    let snapshot = f.terminated.clone().expect("the job ended");
    assert_eq!(snapshot.graph.status, JobStatus::Finished);
    assert_eq!(snapshot.accumulators, [("records".to_string(), 10)]);
}

#[test]
fn a_cancel_during_the_restart_delay_ends_the_job() {
    let mut f = Fixture::running(1, FIXED);
    let attempts = f.attempts();
    let actions = f.update(attempts[0], ExecutionState::Failed, Some(TaskFailure::retryable("boom")));
    let done = f.confirm_cancels(&actions);
    assert_eq!(timers(&done), [Timer::RestartDue { round: 2 }]);
    let (result, actions) = f.core.cancel();
    assert_eq!(result, Ok(()));
    f.see(actions);
    assert_eq!(f.terminated.as_ref().map(|s| s.graph.status), Some(JobStatus::Canceled));
    // The restart timer fires after the end: nothing.
    assert!(f.core.timer_fired(Timer::RestartDue { round: 2 }).is_empty());
}

#[test]
fn a_savepoint_requested_while_restarting_is_refused_and_changes_nothing() {
    let dir = tempdir();
    let mut f = Fixture::running(1, &checkpointed(&dir));
    let attempts = f.attempts();
    let actions = f.update(attempts[0], ExecutionState::Failed, Some(TaskFailure::retryable("boom")));
    let _ = f.confirm_cancels(&actions);
    let operation = SavepointOperation::Savepoint { target_directory: Some(dir.clone()), cancel_job: false };
    let (result, actions) = f.core.start_operation(operation);
    assert!(result.unwrap_err().contains("not all tasks"), "refused");
    assert!(actions.is_empty());
    assert_eq!(f.core.status(), JobStatus::Restarting);
}

/// Drives one checkpoint from the tick to the written `_metadata`; the id.
fn checkpoint_up_to_metadata(f: &mut Fixture) -> (u64, Vec<Action>) {
    f.clock.advance(Duration::from_millis(150));
    f.core.checkpoint_tick(); // arms the schedule
    f.clock.advance(Duration::from_millis(150));
    let actions = f.core.checkpoint_tick();
    assert_eq!(actions.len(), 1, "one id reservation: {actions:?}");
    let actions = f.ids(actions);
    let Some(Action::CreateDirectory { checkpoint_id, .. }) = actions.first() else { panic!("{actions:?}") };
    let id = *checkpoint_id;
    let triggers = f.core.directory_created(id, Ok(PathBuf::from(format!("/cp/chk-{id}"))));
    assert_eq!(triggers.len(), 1, "one source subtask: {triggers:?}");
    let mut last = Vec::new();
    for a in f.attempts() {
        let state =
            AckState { handle: String::new(), size_bytes: 1, alignment_ms: 0, duration_ms: 1, end_of_input: false };
        last = f.core.checkpoint_acknowledged(id, a, state);
    }
    (id, last)
}

#[test]
fn a_checkpoint_completing_while_a_failover_starts_is_not_used() {
    let dir = tempdir();
    let mut f = Fixture::running(1, &checkpointed(&dir));
    let (id, actions) = checkpoint_up_to_metadata(&mut f);
    assert!(matches!(actions.as_slice(), [Action::WriteMetadata { checkpoint_id, .. }] if *checkpoint_id == id));
    // The failover starts while `_metadata` is being written.
    let attempts = f.attempts();
    let failing = f.update(attempts[1], ExecutionState::Failed, Some(TaskFailure::retryable("boom")));
    assert!(failing.iter().any(|a| matches!(a, Action::Discard { checkpoint_id, .. } if *checkpoint_id == id)));
    // The write completes afterwards: the checkpoint is not stored, no task is told.
    let actions = f.core.metadata_written(id, false, Ok(format!("/cp/chk-{id}")));
    assert!(
        actions.iter().all(|a| !matches!(a, Action::StoreCheckpoint { .. } | Action::NotifyCheckpoint { .. })),
        "{actions:?}"
    );
    assert!(f.core.snapshot().checkpoints.unwrap().latest.completed.is_none());
    let done = f.confirm_cancels(&failing);
    assert_eq!(timers(&done), [Timer::RestartDue { round: 2 }]);
    // The restart restores from nothing.
    let redeployed = f.fire(Timer::RestartDue { round: 2 });
    assert!(redeployed.iter().all(|a| !matches!(a, Action::Deploy { tdd, .. } if tdd.restore.is_some())));
}

#[test]
fn a_completed_checkpoint_is_restored_by_the_next_failover() {
    let dir = tempdir();
    let mut f = Fixture::running(1, &checkpointed(&dir));
    let (id, _) = checkpoint_up_to_metadata(&mut f);
    let location = format!("/cp/chk-{id}");
    let actions = f.core.metadata_written(id, false, Ok(location.clone()));
    assert!(matches!(actions.as_slice(), [Action::StoreCheckpoint { checkpoint_id, .. }] if *checkpoint_id == id));
    // Only once it is in the HA store are the tasks told.
    let actions = f.core.checkpoint_stored(id, location.clone(), Ok(()));
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::NotifyCheckpoint { completed: true, .. })).count(), 2);
    let attempts = f.attempts();
    let failing = f.update(attempts[0], ExecutionState::Failed, Some(TaskFailure::retryable("boom")));
    f.confirm_cancels(&failing);
    let redeployed = f.fire(Timer::RestartDue { round: 2 });
    let restored: Vec<_> = redeployed
        .iter()
        .filter_map(|a| if let Action::Deploy { tdd, .. } = a { tdd.restore.clone() } else { None })
        .collect();
    assert_eq!(restored.len(), 2);
    assert!(restored.iter().all(|r| r.checkpoint_id == id && r.location == location));
}

#[test]
fn a_stop_with_savepoint_during_a_checkpoint_finishes_the_job() {
    let dir = tempdir();
    let mut f = Fixture::running(1, &checkpointed(&dir));
    let (checkpoint, _) = checkpoint_up_to_metadata(&mut f);
    let operation = SavepointOperation::Stop { target_directory: Some(dir.clone()), drain: false };
    let (result, actions) = f.core.start_operation(operation);
    let number = result.expect("a stop is forced while a checkpoint is pending");
    let actions = f.ids(actions);
    let [Action::CreateDirectory { target: DirectoryTarget::Savepoint { .. }, checkpoint_id: savepoint }] =
        actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    let savepoint = *savepoint;
    assert!(savepoint > checkpoint);
    let triggers = f.core.directory_created(savepoint, Ok(PathBuf::from("/sp/savepoint-1")));
    let Some(Action::TriggerCheckpoint { barrier, .. }) = triggers.first() else { panic!("{triggers:?}") };
    assert!(barrier.terminate && barrier.is_savepoint && !barrier.drain);
    // The checkpoint completes first, then the savepoint.
    f.core.metadata_written(checkpoint, false, Ok("/cp/chk".into()));
    f.core.checkpoint_stored(checkpoint, "/cp/chk".into(), Ok(()));
    for a in f.attempts() {
        let state =
            AckState { handle: String::new(), size_bytes: 1, alignment_ms: 0, duration_ms: 1, end_of_input: false };
        f.core.checkpoint_acknowledged(savepoint, a, state);
    }
    let actions = f.core.metadata_written(savepoint, true, Ok("/sp/savepoint-1".into()));
    let done = actions.iter().find_map(|a| match a {
        Action::OperationDone { operation, result } if *operation == number => Some(result.clone()),
        _ => None,
    });
    assert_eq!(done, Some(Ok(OperationResult::Savepoint { location: "/sp/savepoint-1".into() })));
    // Stop-with-savepoint commits side effects: the tasks are told.
    assert!(actions.iter().any(
        |a| matches!(a, Action::NotifyCheckpoint { completed: true, checkpoint_id, .. } if *checkpoint_id == savepoint)
    ));
    for a in f.attempts() {
        f.update(a, ExecutionState::Finished, None);
    }
    assert_eq!(f.terminated.as_ref().map(|s| s.graph.status), Some(JobStatus::Finished));
}

/// The sources of a stop end as soon as they took the savepoint; the job must not end (and
/// shut its coordinator down) while the savepoint's metadata is still being written.
#[test]
fn a_stop_whose_tasks_finish_before_its_savepoint_is_written_completes_the_savepoint() {
    let dir = tempdir();
    let mut f = Fixture::running(1, &checkpointed(&dir));
    let operation = SavepointOperation::Stop { target_directory: Some(dir.clone()), drain: false };
    let (result, actions) = f.core.start_operation(operation);
    let number = result.unwrap();
    let Some(Action::CreateDirectory { checkpoint_id: savepoint, .. }) = f.ids(actions).pop() else { panic!() };
    f.core.directory_created(savepoint, Ok(PathBuf::from("/sp/savepoint-2")));
    for a in f.attempts() {
        let state =
            AckState { handle: String::new(), size_bytes: 1, alignment_ms: 0, duration_ms: 1, end_of_input: false };
        f.core.checkpoint_acknowledged(savepoint, a, state);
    }
    for a in f.attempts() {
        f.update(a, ExecutionState::Finished, None);
    }
    assert!(f.terminated.is_none(), "the job waits for its stop's savepoint");
    let actions = f.core.metadata_written(savepoint, true, Ok("/sp/savepoint-2".into()));
    let done = actions.iter().find_map(|a| match a {
        Action::OperationDone { operation, result } if *operation == number => Some(result.clone()),
        _ => None,
    });
    assert_eq!(done, Some(Ok(OperationResult::Savepoint { location: "/sp/savepoint-2".into() })));
    f.see(actions);
    assert_eq!(f.terminated.as_ref().map(|s| s.graph.status), Some(JobStatus::Finished));
}

#[test]
fn an_operation_whose_checkpoint_is_aborted_by_a_failover_fails() {
    let dir = tempdir();
    let mut f = Fixture::running(1, &checkpointed(&dir));
    let operation = SavepointOperation::Savepoint { target_directory: Some(dir.clone()), cancel_job: false };
    let (result, actions) = f.core.start_operation(operation);
    let number = result.unwrap();
    let Some(Action::CreateDirectory { checkpoint_id: id, .. }) = f.ids(actions).pop() else { panic!() };
    let attempts = f.attempts();
    let actions = f.update(attempts[0], ExecutionState::Failed, Some(TaskFailure::retryable("boom")));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::OperationDone { operation, result: Err(_) } if *operation == number)));
    // The directory made after the abort is removed, nothing is triggered.
    let late = f.core.directory_created(id, Ok(PathBuf::from("/sp/late")));
    assert!(matches!(late.as_slice(), [Action::Discard { location: Some(l), .. }] if l == "/sp/late"));
}

#[test]
fn an_invalid_configuration_fails_the_job_at_start() {
    let mut f = Fixture::new(1, r#""restart-strategy.type": "sometimes""#);
    let actions = f.start();
    assert!(requested(&actions).is_empty());
    let snapshot = f.terminated.clone().expect("the job ended");
    assert_eq!(snapshot.graph.status, JobStatus::Failed);
    assert!(snapshot.exceptions[0].exception.contains("invalid restart strategy"));
}

#[test]
fn suspending_frees_everything_and_reports_nothing() {
    let mut f = Fixture::running(2, FIXED);
    let actions = f.core.suspend();
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::CancelTask { answer: false, .. })).count(), 4);
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::FreeSlot { .. })).count(), 2);
    assert!(actions.iter().all(|a| !matches!(a, Action::Terminated(_))));
    assert!(f.core.heartbeat_tick().is_empty());
}

fn tempdir() -> String {
    let dir = std::env::temp_dir().join(format!("flint-core-test-{}", AllocationId::generate()));
    dir.to_string_lossy().into_owned()
}

/// Random events (answers, updates of current and stale attempts, timers of any round,
/// heartbeats, checkpoints, operations, cancels) against the core. Invariants, checked after
/// every call by [`Fixture::see`] and here: no action after the end, one end at most,
/// deployments only with every slot held, restart rounds only grow, phase and status agree.
#[test]
fn random_events_keep_the_invariants() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut ended = 0;
    for run in 0..400 {
        let dir = tempdir();
        let config = if run % 2 == 0 { checkpointed(&dir) } else { FIXED.to_string() };
        let mut f = Fixture::new(1 + (run % 3) as u32, &config);
        let mut actions = f.start();
        let mut outstanding: Vec<Action> = Vec::new();
        let mut max_round = 1;
        let mut old_attempts: Vec<ExecutionAttemptId> = Vec::new();
        for _ in 0..150 {
            for a in &actions {
                if let Action::ArmTimer { timer: Timer::RestartDue { round }, .. } = a {
                    assert!(*round > max_round, "restart rounds grow");
                    max_round = *round;
                }
            }
            outstanding.append(&mut actions);
            if f.terminated.is_some() {
                break;
            }
            old_attempts.extend(f.attempts());
            let choice = next(14);
            actions = match choice {
                // Answer an outstanding action.
                0..=4 if !outstanding.is_empty() => {
                    let action = outstanding.swap_remove(next(outstanding.len()));
                    match action {
                        Action::RequestSlots(allocations) => {
                            if next(4) == 0 {
                                f.core.slot_request_sent(Err("lost".into()))
                            } else {
                                let tm = f.tms[next(2)].clone();
                                let (_, a) = f.core.slots_offered(&tm.0, &tm.1, "h:1", &allocations);
                                a
                            }
                        }
                        Action::ArmTimer { timer, .. } => f.core.timer_fired(timer),
                        Action::Deploy { resource_id, tdd, task_name, .. } => {
                            let outcome = match next(6) {
                                0 => DeployOutcome::Unreachable("gone".into()),
                                1 => DeployOutcome::Refused { message: "no".into(), retryable: next(2) == 0 },
                                _ => DeployOutcome::Ok,
                            };
                            f.core.deploy_answered(tdd.attempt_id, &resource_id, &task_name, outcome)
                        }
                        Action::CancelTask { attempt, answer: true, .. } => {
                            if next(2) == 0 {
                                f.core.cancel_answered(attempt, false)
                            } else {
                                f.core
                                    .task_updated(TaskUpdate {
                                        attempt,
                                        state: ExecutionState::Canceled,
                                        failure: None,
                                        metrics: None,
                                        accumulators: vec![],
                                        commits: vec![],
                                    })
                                    .1
                            }
                        }
                        Action::Heartbeat { resource_id, .. } => {
                            let outcome = match next(3) {
                                0 => HeartbeatOutcome::Unreachable("x".into()),
                                1 => HeartbeatOutcome::Failed,
                                _ => HeartbeatOutcome::Ok,
                            };
                            f.core.heartbeat_answered(&resource_id, outcome)
                        }
                        Action::CreateDirectory { checkpoint_id, .. } => {
                            let result = if next(5) == 0 { Err("disk".into()) } else { Ok(PathBuf::from("/cp/x")) };
                            f.core.directory_created(checkpoint_id, result)
                        }
                        Action::TriggerCheckpoint { attempt, barrier, .. } => match next(3) {
                            0 => f.core.trigger_answered(barrier.checkpoint_id, attempt, Ok(false)),
                            _ => {
                                let mut all = f.core.trigger_answered(barrier.checkpoint_id, attempt, Ok(true));
                                for a in f.attempts() {
                                    let state = AckState {
                                        handle: String::new(),
                                        size_bytes: 1,
                                        alignment_ms: 0,
                                        duration_ms: 1,
                                        end_of_input: false,
                                    };
                                    all.extend(f.core.checkpoint_acknowledged(barrier.checkpoint_id, a, state));
                                }
                                all
                            }
                        },
                        Action::WriteMetadata { checkpoint_id, is_savepoint, .. } => {
                            let result = if next(5) == 0 { Err("disk".into()) } else { Ok("/cp/x".to_string()) };
                            f.core.metadata_written(checkpoint_id, is_savepoint, result)
                        }
                        Action::StoreCheckpoint { checkpoint_id, handle } => {
                            let result = if next(5) == 0 { Err("zk".into()) } else { Ok(()) };
                            f.core.checkpoint_stored(checkpoint_id, handle.location, result)
                        }
                        Action::CommitOutput(_) => f.core.output_committed(vec![]),
                        Action::ReserveCheckpointId { operation } => {
                            let id = if next(6) == 0 { Err("zk".to_string()) } else { Ok(f.next_id) };
                            f.next_id += 1;
                            f.core.checkpoint_id_reserved(operation, id)
                        }
                        _ => Vec::new(),
                    }
                }
                5..=7 => {
                    // A task reports: current or stale attempt, any state.
                    let pool =
                        if next(3) == 0 && !old_attempts.is_empty() { old_attempts.clone() } else { f.attempts() };
                    let attempt = pool[next(pool.len())];
                    let state = [
                        ExecutionState::Initializing,
                        ExecutionState::Running,
                        ExecutionState::Running,
                        ExecutionState::Finished,
                        ExecutionState::Failed,
                        ExecutionState::Canceled,
                    ][next(6)];
                    let failure = (state == ExecutionState::Failed).then(|| TaskFailure::retryable("x"));
                    f.core
                        .task_updated(TaskUpdate {
                            attempt,
                            state,
                            failure,
                            metrics: None,
                            accumulators: vec![],
                            commits: vec![],
                        })
                        .1
                }
                8 => {
                    f.clock.advance(Duration::from_millis(next(3000) as u64));
                    f.core.heartbeat_tick()
                }
                9 => {
                    f.clock.advance(Duration::from_millis(next(300) as u64));
                    f.core.checkpoint_tick()
                }
                10 => {
                    // A timer of any round, stale or not.
                    let round = 1 + next(4) as u64;
                    let timer =
                        [Timer::SlotTimeout { round }, Timer::RestartDue { round }, Timer::RetrySlotRequest { round }]
                            [next(3)];
                    f.core.timer_fired(timer)
                }
                11 => {
                    let operation = match next(3) {
                        0 => SavepointOperation::Checkpoint,
                        1 => SavepointOperation::Stop { target_directory: Some(dir.clone()), drain: false },
                        _ => SavepointOperation::Savepoint {
                            target_directory: Some(dir.clone()),
                            cancel_job: next(2) == 0,
                        },
                    };
                    f.core.start_operation(operation).1
                }
                12 if next(8) == 0 => f.core.cancel().1,
                _ => {
                    let allocation = f
                        .core
                        .slots
                        .iter()
                        .flatten()
                        .map(|s| s.allocation_id)
                        .next()
                        .unwrap_or_else(AllocationId::generate);
                    let failure = if next(2) == 0 {
                        SlotRequestFailure::AllocationLost { message: "lost".into() }
                    } else {
                        SlotRequestFailure::TimedOut { message: "late".into() }
                    };
                    f.core.slot_request_failed(allocation, failure)
                }
            };
            actions = f.see(actions);
            // Phase and status agree.
            match f.core.phase() {
                Phase::Terminated => assert!(f.terminated.is_some() || f.core.status().is_globally_terminal()),
                Phase::Restarting { .. } => assert_eq!(f.core.status(), JobStatus::Restarting),
                Phase::Cancelling => assert_eq!(f.core.status(), JobStatus::Cancelling),
                Phase::AwaitingSlots { .. } | Phase::Deployed { .. } | Phase::Committing => {
                    assert_eq!(f.core.status(), JobStatus::Running, "{:?}\n{}", f.core.phase(), f.log.join("\n"))
                }
                Phase::Failing { .. } => {
                    assert!(matches!(f.core.status(), JobStatus::Running | JobStatus::Failing), "{:?}", f.core.status())
                }
            }
        }
        if f.terminated.is_some() {
            ended += 1;
        }
    }
    assert!(ended > 50, "the random runs reach the end of a job often enough ({ended} of 400)");
}

#[test]
fn an_operation_waits_for_its_id_and_fails_when_the_job_stopped_running_meanwhile() {
    let dir = tempdir();
    let mut f = Fixture::running(1, &checkpointed(&dir));
    let operation = SavepointOperation::Savepoint { target_directory: Some(dir.clone()), cancel_job: true };
    let (result, actions) = f.core.start_operation(operation);
    let number = result.unwrap();
    assert!(matches!(actions.as_slice(), [Action::ReserveCheckpointId { operation: Some(n) }] if *n == number));
    let attempts = f.attempts();
    f.update(attempts[0], ExecutionState::Failed, Some(TaskFailure::retryable("boom")));
    let actions = f.core.checkpoint_id_reserved(Some(number), Ok(7));
    assert!(
        matches!(actions.as_slice(), [Action::OperationDone { operation, result: Err(e) }] if *operation == number && e.contains("not all")),
        "{actions:?}"
    );
    // A reservation that fails fails its operation with the reason.
    let mut f = Fixture::running(1, &checkpointed(&dir));
    let operation = SavepointOperation::Checkpoint;
    let (result, _) = f.core.start_operation(operation);
    let number = result.unwrap();
    let actions = f.core.checkpoint_id_reserved(Some(number), Err("ConnectionLoss".into()));
    assert!(
        matches!(actions.as_slice(), [Action::OperationDone { result: Err(e), .. }] if e.contains("ConnectionLoss"))
    );
}

#[test]
fn a_job_resumed_from_a_savepoint_moves_the_id_counter_past_it_first() {
    let clock = Arc::new(ManualClock::new());
    let config = CoreConfig {
        cluster: Configuration::new(),
        slot_request_timeout: SLOT_TIMEOUT,
        heartbeat: HEARTBEAT,
        blob_server: None,
    };
    let job_id = JobId::generate();
    let restore = SavepointRestore { checkpoint_id: 41, location: "/sp/savepoint-41".into(), is_savepoint: true };
    let mut core = JobCore::new(
        job_id,
        job(1, FIXED),
        RpcAddress::new("127.0.0.1:1", "jm"),
        LeaderSessionId::generate(),
        &config,
        Some(restore),
        clock,
    );
    let actions = core.start();
    assert!(matches!(actions.first(), Some(Action::AdvanceCheckpointIds { past: 41 })), "{actions:?}");
}
