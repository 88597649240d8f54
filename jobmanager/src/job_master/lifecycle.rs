//! The lifecycle of a JobMaster: which phase its job is in, and the legal moves between
//! phases, in one place. Pure: no I/O, no clock; the JobMaster feeds it what happened and
//! carries out what it answers (deploy, arm a timer tagged with the round, redeploy, end).
//!
//! ```text
//!              AllSlotsHeld                    Finished                 Committed
//!  AwaitingSlots ─────────────► Deployed ─────────────► Committing ─────────────► Terminated
//!     ▲   │ SlotTimeout(round)     │ Failed(restart?)                               ▲
//!     │   └──────────────┐         ▼                                                │
//!     │                  └────► Failing ──AllTerminal, no restart──────────────────┤
//!     │ RestartDue(round)          │ AllTerminal, restart after d                   │
//!     └─────────────────────── Restarting(round+1)                                 │
//!                                                                                   │
//!  any phase but Committing/Terminated ──Cancel──► Cancelling ──AllTerminal─────────┘
//! ```
//!
//! A round counts the rounds of slot requests (the first deployment and each restart):
//! timers carry the round they were armed in, and one that fires in another round is stale
//! and changes nothing. A failure while already failing, cancelling or restarting is part of
//! the failover in progress.

use std::time::Duration;

/// The phase of a job in its JobMaster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Slots of round `round` are requested; not all are held yet.
    AwaitingSlots { round: u64 },
    /// Every task was deployed (they run, or finish).
    Deployed { round: u64 },
    /// A failure: the tasks are being canceled; then the job restarts after `restart`, or
    /// fails when that is `None`.
    Failing { round: u64, restart: Option<Duration> },
    /// Every task ended; round `round` starts when its delay has elapsed.
    Restarting { round: u64 },
    /// Canceled by the user: the tasks are being canceled.
    Cancelling,
    /// Every task finished: the output left for the end is being committed.
    Committing,
    /// The job reached a globally terminal state; nothing moves any more.
    Terminated,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The last missing slot was offered.
    AllSlotsHeld,
    /// The slot timeout armed in `round` fired (or the ResourceManager reported a timeout).
    SlotTimeout { round: u64 },
    /// A task or the job failed; `restart` is the restart strategy's answer.
    Failed { restart: Option<Duration> },
    /// Every task reached a terminal state after a failure or a cancel.
    AllTerminal,
    /// The restart delay armed for `round` elapsed.
    RestartDue { round: u64 },
    /// The user canceled the job.
    Cancel,
    /// Every task finished.
    Finished,
    /// The final output commit is done.
    Committed,
}

/// What the JobMaster does about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Deploy every task into the slots held.
    Deploy,
    /// Fail the job: no slots came in time.
    FailForSlots,
    /// Cancel every task still running (a failover or a cancel began).
    CancelTasks,
    /// Arm the restart timer of `round` after `delay`.
    ArmRestart { round: u64, delay: Duration },
    /// Start round `round`: new attempts, missing slots requested (timer tagged `round`).
    Redeploy { round: u64 },
    /// Commit the output left for the end.
    Commit,
    /// The job ended: report it and stop.
    Terminate,
    /// Nothing to do (a stale timer, a failure within a failover in progress).
    Nothing,
}

/// An event the phase cannot take: a bug in the caller, refused without any change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event {event:?} is not legal in phase {phase:?}")]
pub struct IllegalTransition {
    pub phase: Phase,
    pub event: Event,
}

impl Phase {
    /// The phase of a JobMaster that just asked for its first slots.
    pub fn start() -> Self {
        Phase::AwaitingSlots { round: 1 }
    }

    /// The round of slot requests the job is in (0 once it is no longer in one).
    pub fn round(&self) -> u64 {
        match self {
            Phase::AwaitingSlots { round }
            | Phase::Deployed { round }
            | Phase::Failing { round, .. }
            | Phase::Restarting { round } => *round,
            Phase::Cancelling | Phase::Committing | Phase::Terminated => 0,
        }
    }

    /// Whether the tasks of the current round were deployed.
    pub fn is_deployed(&self) -> bool {
        matches!(self, Phase::Deployed { .. })
    }

    /// Applies `event`: the new phase is set and the step to take returned. An illegal event
    /// changes nothing.
    pub fn on(&mut self, event: Event) -> Result<Step, IllegalTransition> {
        use Event as E;
        use Phase as P;
        let (next, step) = match (&*self, &event) {
            (P::AwaitingSlots { round }, E::AllSlotsHeld) => (P::Deployed { round: *round }, Step::Deploy),
            (P::AwaitingSlots { round }, E::SlotTimeout { round: armed }) if armed == round => {
                (P::Failing { round: *round, restart: None }, Step::FailForSlots)
            }
            (_, E::SlotTimeout { .. }) => return Ok(Step::Nothing),
            (P::AwaitingSlots { round } | P::Deployed { round }, E::Failed { restart }) => {
                (P::Failing { round: *round, restart: *restart }, Step::CancelTasks)
            }
            (P::Failing { .. } | P::Restarting { .. } | P::Cancelling, E::Failed { .. }) => return Ok(Step::Nothing),
            (P::Failing { round, restart: Some(delay) }, E::AllTerminal) => {
                (P::Restarting { round: round + 1 }, Step::ArmRestart { round: round + 1, delay: *delay })
            }
            (P::Failing { restart: None, .. } | P::Cancelling, E::AllTerminal) => (P::Terminated, Step::Terminate),
            (P::Restarting { round }, E::RestartDue { round: due }) if due == round => {
                (P::AwaitingSlots { round: *round }, Step::Redeploy { round: *round })
            }
            (_, E::RestartDue { .. }) => return Ok(Step::Nothing),
            (P::AwaitingSlots { .. } | P::Deployed { .. } | P::Failing { .. } | P::Restarting { .. }, E::Cancel) => {
                (P::Cancelling, Step::CancelTasks)
            }
            (P::Deployed { .. }, E::Finished) => (P::Committing, Step::Commit),
            (P::Committing, E::Committed) => (P::Terminated, Step::Terminate),
            _ => return Err(IllegalTransition { phase: self.clone(), event }),
        };
        *self = next;
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_millis(200);

    fn run(events: &[Event]) -> (Phase, Vec<Result<Step, IllegalTransition>>) {
        let mut phase = Phase::start();
        let steps = events.iter().map(|e| phase.on(e.clone())).collect();
        (phase, steps)
    }

    #[test]
    fn a_job_that_runs_to_the_end() {
        let (phase, steps) = run(&[Event::AllSlotsHeld, Event::Finished, Event::Committed]);
        assert_eq!(steps, [Ok(Step::Deploy), Ok(Step::Commit), Ok(Step::Terminate)]);
        assert_eq!(phase, Phase::Terminated);
    }

    #[test]
    fn a_failure_restarts_in_a_new_round_and_redeploys() {
        let (phase, steps) = run(&[
            Event::AllSlotsHeld,
            Event::Failed { restart: Some(D) },
            Event::AllTerminal,
            Event::RestartDue { round: 2 },
            Event::AllSlotsHeld,
        ]);
        assert_eq!(
            steps,
            [
                Ok(Step::Deploy),
                Ok(Step::CancelTasks),
                Ok(Step::ArmRestart { round: 2, delay: D }),
                Ok(Step::Redeploy { round: 2 }),
                Ok(Step::Deploy)
            ]
        );
        assert_eq!(phase, Phase::Deployed { round: 2 });
    }

    #[test]
    fn a_failure_without_restart_ends_the_job() {
        let (phase, steps) = run(&[Event::AllSlotsHeld, Event::Failed { restart: None }, Event::AllTerminal]);
        assert_eq!(steps.last(), Some(&Ok(Step::Terminate)));
        assert_eq!(phase, Phase::Terminated);
    }

    /// The slot timer of round 1 fires during round 2: it is stale and changes nothing
    /// (before the rounds, such a timer failed the restarted job).
    #[test]
    fn a_stale_slot_timeout_does_nothing() {
        let mut phase = Phase::start();
        phase.on(Event::AllSlotsHeld).unwrap();
        phase.on(Event::Failed { restart: Some(D) }).unwrap();
        phase.on(Event::AllTerminal).unwrap();
        phase.on(Event::RestartDue { round: 2 }).unwrap();
        assert_eq!(phase.on(Event::SlotTimeout { round: 1 }), Ok(Step::Nothing));
        assert_eq!(phase, Phase::AwaitingSlots { round: 2 });
        assert_eq!(phase.on(Event::SlotTimeout { round: 2 }), Ok(Step::FailForSlots));
        assert_eq!(phase.on(Event::AllTerminal), Ok(Step::Terminate));
    }

    #[test]
    fn a_restart_during_a_restart_is_part_of_it() {
        let mut phase = Phase::start();
        phase.on(Event::AllSlotsHeld).unwrap();
        phase.on(Event::Failed { restart: Some(D) }).unwrap();
        // A second task fails while the first failure's cancellation runs.
        assert_eq!(phase.on(Event::Failed { restart: Some(D) }), Ok(Step::Nothing));
        phase.on(Event::AllTerminal).unwrap();
        // ... and one more report arrives while the restart delay runs.
        assert_eq!(phase.on(Event::Failed { restart: None }), Ok(Step::Nothing));
        assert_eq!(phase.on(Event::RestartDue { round: 2 }), Ok(Step::Redeploy { round: 2 }));
    }

    #[test]
    fn a_taskmanager_lost_while_slots_are_awaited_fails_over() {
        let mut phase = Phase::start();
        assert_eq!(phase.on(Event::Failed { restart: Some(D) }), Ok(Step::CancelTasks));
        assert_eq!(phase.on(Event::AllTerminal), Ok(Step::ArmRestart { round: 2, delay: D }));
    }

    #[test]
    fn a_cancel_wins_over_a_restart_in_progress() {
        let mut phase = Phase::start();
        phase.on(Event::AllSlotsHeld).unwrap();
        phase.on(Event::Failed { restart: Some(D) }).unwrap();
        phase.on(Event::AllTerminal).unwrap();
        assert_eq!(phase.on(Event::Cancel), Ok(Step::CancelTasks));
        // The restart timer fires later: stale.
        assert_eq!(phase.on(Event::RestartDue { round: 2 }), Ok(Step::Nothing));
        assert_eq!(phase.on(Event::AllTerminal), Ok(Step::Terminate));
    }

    #[test]
    fn illegal_events_change_nothing() {
        let mut phase = Phase::start();
        let err = phase.on(Event::Finished).unwrap_err();
        assert_eq!(err.phase, Phase::AwaitingSlots { round: 1 });
        assert_eq!(phase, Phase::start());
        let mut done = Phase::Terminated;
        for event in [Event::Cancel, Event::AllSlotsHeld, Event::AllTerminal, Event::Finished, Event::Committed] {
            assert!(done.on(event).is_err());
            assert_eq!(done, Phase::Terminated);
        }
        assert!(Phase::Committing.on(Event::Cancel).is_err(), "a finished job cannot be canceled");
    }

    /// Seeded random events: whatever arrives, the phase only moves along the diagram, the
    /// round never decreases, and a terminated job stays terminated.
    #[test]
    fn random_events_keep_the_invariants() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let mut phase = Phase::start();
            let mut max_round = 1;
            for _ in 0..60 {
                let r = next();
                let event = match r % 8 {
                    0 => Event::AllSlotsHeld,
                    1 => Event::SlotTimeout { round: 1 + (r >> 8) % 4 },
                    2 => Event::Failed { restart: ((r >> 8) % 3 != 0).then_some(D) },
                    3 => Event::AllTerminal,
                    4 => Event::RestartDue { round: 1 + (r >> 8) % 4 },
                    5 if (r >> 8) % 8 == 0 => Event::Cancel,
                    6 => Event::Finished,
                    _ => Event::Committed,
                };
                let before = phase.clone();
                match phase.on(event.clone()) {
                    Err(e) => assert_eq!(phase, before, "{e}"),
                    Ok(Step::Nothing) => assert_eq!(phase, before, "{event:?} in {before:?}"),
                    Ok(step) => {
                        assert_ne!(before, Phase::Terminated);
                        if let Step::Redeploy { round } | Step::ArmRestart { round, .. } = step {
                            assert_eq!(round, phase.round());
                        }
                    }
                }
                if phase.round() > 0 {
                    assert!(phase.round() >= max_round, "{before:?} -> {phase:?}");
                    max_round = phase.round();
                }
            }
        }
    }
}
