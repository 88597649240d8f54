//! The SlotManager: which slots the cluster has, and which slot requests they serve.
//!
//! The SlotManager is a pure state machine. It does no I/O, spawns nothing and never
//! reads a clock: the ResourceManager actor feeds it events (a TaskExecutor registered,
//! a slot report arrived, a JobMaster asked for a slot, a TaskExecutor answered a slot
//! request, ...) together with the current [`Instant`] where time matters, and gets back
//! a list of [`SlotManagerAction`]s to carry out (send a slot request to a TaskExecutor,
//! tell a JobMaster its request timed out or its allocation is lost, ...).
//!
//! # Slots
//!
//! Slots are registered per TaskExecutor (a [`ResourceId`] with the [`InstanceId`] of its
//! current registration). Each slot is in one of three [`SlotState`]s:
//!
//! ```text
//!            request a assigned          TaskExecutor confirms a
//!    Free ----------------------> Pending(a) ----------------------> Allocated(a)
//!     ^ ^                            |                                   |
//!     | +----------------------------+                                   |
//!     |   request failed / cancelled / report shows another allocation   |
//!     +------------------------------------------------------------------+
//!          JobMaster frees a / slot report shows the slot free
//! ```
//!
//! `Pending(a)` means "the ResourceManager asked the TaskExecutor to allocate this slot
//! for `a` and has no answer yet". A slot report that shows a slot allocated moves it to
//! `Allocated` from any state (the report is the ground truth), and a slot vanishes when
//! its TaskExecutor is lost or stops reporting it.
//!
//! # Requests
//!
//! ```text
//!   request_slot
//!        |
//!        v         free slot found             confirmed (answer or report)
//!     Waiting ---------------------> InFlight(slot) ---------------------> Fulfilled
//!      |   ^                               |
//!      |   +-------------------------------+
//!      |     slot failed / lost / taken by another allocation (retried elsewhere first)
//!      v
//!   TimedOut (check_timeouts)
//! ```
//!
//! Waiting requests are kept in arrival order, each with the `Instant` it arrived; a
//! request that goes back to waiting keeps its original arrival time (and so its place at
//! the front of the queue). A fulfilled request is forgotten: from then on only its slot
//! (`Allocated`) remembers the allocation. [`SlotManager::cancel_slot_request`] removes a
//! waiting or in-flight request at any time.
//!
//! # Matching
//!
//! - A request looking for a slot takes the *best-fitting* matching free slot: among the
//!   free slots whose profile [satisfies](ResourceProfile::satisfies) the request, the
//!   smallest one (by total memory, then CPU cores), ties broken by slot id, i.e.
//!   `(resource_id, index)` order. With uniform slots this is simply the first free slot
//!   in `(resource_id, index)` order; with mixed slots small requests do not eat up the
//!   big slots big requests need.
//! - When slots become free (registered, reported free, freed by the JobMaster, released
//!   by a failed request), the waiting requests are served oldest first, each taking the
//!   best-fitting freed slot it fits. So a freed slot serves the oldest waiting request it
//!   satisfies (FIFO among the requests it can serve), unless another freed slot fits
//!   that request better; a freed slot nobody can use joins the free pool.
//! - Every event settles completely: when it returns, no free slot satisfies a waiting
//!   request, with two deliberate exceptions. A request whose slot request just failed is
//!   not retried on the slot that failed it, and the slot released by cancelling an
//!   in-flight request ([`SlotManager::cancel_slot_request`] returns no actions) is handed
//!   out by the next event that is not a no-op. [`SlotManager::check_timeouts`] retries
//!   every waiting request against the whole free pool before timing anything out.
//! - Whenever a request ends up waiting without a slot, a
//!   [`SlotManagerAction::NewWorkerNeeded`] is emitted once for it, after the event's
//!   `AllocateSlot` actions.
//!
//! # Slot reports
//!
//! A slot report (at registration, or later with heartbeats) is the TaskExecutor's ground
//! truth, reconciled slot by slot: slots reported allocated are recorded `Allocated` to
//! the reported allocation (fulfilling our request for it, displacing ours if another
//! allocation took the slot); slots reported free that we think `Allocated` are freed,
//! while slots we think `Pending` stay so (the report may predate our request); slots we
//! know but the report lacks are removed like lost slots, and new slot ids are added.
//! The allocated slots of a report are applied before the free ones, and displaced
//! requests and freed slots are matched only once the whole report has been applied, so
//! that a report does not trigger slot requests it immediately contradicts.
//!
//! Some choices the reconciliation makes:
//! - `AllocationLost` is emitted only when an allocated slot disappears (its TaskExecutor
//!   unregistered or re-registered with a new instance id, or the slot no longer
//!   reported). An allocation replaced by another one, or released on the TaskExecutor,
//!   emits nothing: the slot is still there, and the TaskExecutor tells its JobMaster.
//! - An allocation reported on a slot other than the one we recorded it on moves there;
//!   the old record is released (and a request in flight for it is fulfilled).
//! - A slot reported allocated without a job id gets the job we know for that allocation,
//!   or the nil `JobId` if we know none.
//! - Reported slots whose id names another TaskExecutor are ignored.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use flint_common::ids::{AllocationId, InstanceId, JobId, ResourceId, SlotId};
use flint_common::resources::{ResourceProfile, SlotReport, SlotStatus};

/// A JobMaster's request for one slot.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotRequest {
    pub allocation_id: AllocationId,
    pub job_id: JobId,
    pub profile: ResourceProfile,
    /// The JobMaster's address, which the TaskExecutor offers the allocated slot to.
    pub target_address: flint_common::rpc::RpcAddress,
}

/// The state of one registered slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotState {
    Free,
    /// The ResourceManager asked the TaskExecutor to allocate the slot; no answer yet.
    Pending {
        allocation_id: AllocationId,
        job_id: JobId,
    },
    Allocated {
        allocation_id: AllocationId,
        job_id: JobId,
    },
}

impl SlotState {
    /// The allocation of a `Pending` or `Allocated` slot.
    pub fn allocation_id(&self) -> Option<AllocationId> {
        match self {
            SlotState::Free => None,
            SlotState::Pending { allocation_id, .. } | SlotState::Allocated { allocation_id, .. } => {
                Some(*allocation_id)
            }
        }
    }

    /// The job of a `Pending` or `Allocated` slot.
    pub fn job_id(&self) -> Option<JobId> {
        match self {
            SlotState::Free => None,
            SlotState::Pending { job_id, .. } | SlotState::Allocated { job_id, .. } => Some(*job_id),
        }
    }
}

/// Why a TaskExecutor did not allocate a slot the ResourceManager asked it for.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SlotRequestFailure {
    /// The TaskExecutor refused the request.
    #[error("the TaskExecutor rejected the slot request: {0}")]
    Rejected(String),
    /// The slot is already allocated to another allocation.
    #[error("the slot is already occupied by allocation {by} of job {job_id}")]
    SlotOccupied { by: AllocationId, job_id: JobId },
    /// The TaskExecutor could not be reached (the request's outcome is unknown).
    #[error("the TaskExecutor is unreachable: {0}")]
    Unreachable(String),
}

/// What the ResourceManager has to do after an event.
#[derive(Clone, Debug, PartialEq)]
pub enum SlotManagerAction {
    /// Send a slot request to the TaskExecutor owning `slot_id`: allocate the slot for
    /// `allocation_id` and offer it to the JobMaster at `target_address`.
    AllocateSlot {
        slot_id: SlotId,
        instance_id: InstanceId,
        allocation_id: AllocationId,
        job_id: JobId,
        profile: ResourceProfile,
        target_address: flint_common::rpc::RpcAddress,
    },
    /// No registered slot can serve a request that just became waiting. A standalone
    /// cluster only logs this; an active one would start a TaskExecutor.
    NewWorkerNeeded {
        profile: ResourceProfile,
        /// The number of waiting requests at that moment.
        pending_requests: usize,
    },
    /// A waiting request was not fulfilled within the slot request timeout; tell its
    /// JobMaster.
    RequestTimedOut { allocation_id: AllocationId, job_id: JobId, reason: String },
    /// An allocated slot disappeared (its TaskExecutor was lost or stopped reporting it);
    /// tell the owning job.
    AllocationLost { allocation_id: AllocationId, job_id: JobId, reason: String },
}

/// One registered slot.
#[derive(Clone, Debug)]
struct Slot {
    profile: ResourceProfile,
    state: SlotState,
}

/// A request we track, with the instant it first arrived.
#[derive(Clone, Debug)]
struct TrackedRequest {
    request: SlotRequest,
    arrived: Instant,
}

/// A request whose slot request is out at a TaskExecutor.
#[derive(Clone, Debug)]
struct InFlight {
    tracked: TrackedRequest,
    slot_id: SlotId,
}

/// What an event left to match once its state changes are applied.
#[derive(Debug, Default)]
struct Changes {
    /// New requests, and requests that lost the slot they were in flight on.
    unplaced: Vec<TrackedRequest>,
    /// Slots that became free (or changed profile while free).
    freed: Vec<SlotId>,
}

/// A request that must not be placed on a slot: (request, the slot that just failed it).
type Avoid = Option<(AllocationId, SlotId)>;

/// The cluster's slots and the slot requests waiting for them. See the module docs.
#[derive(Debug)]
pub struct SlotManager {
    slot_request_timeout: Duration,
    /// Registered TaskExecutors and the instance id of their registration.
    task_executors: BTreeMap<ResourceId, InstanceId>,
    /// All registered slots, in `(resource_id, index)` order.
    slots: BTreeMap<SlotId, Slot>,
    /// Index: the `Free` slots.
    free_slots: BTreeSet<SlotId>,
    /// Index: the slot holding each `Pending` or `Allocated` allocation.
    slot_of_allocation: BTreeMap<AllocationId, SlotId>,
    /// Requests without a slot, in arrival order.
    waiting: VecDeque<TrackedRequest>,
    /// Requests whose slot request is out; their slot is `Pending` with their allocation.
    in_flight: BTreeMap<AllocationId, InFlight>,
    /// Slots released by `cancel_slot_request`, to hand out at the next settling.
    freed_by_cancel: Vec<SlotId>,
}

impl SlotManager {
    /// A SlotManager whose waiting requests time out after `slot_request_timeout`.
    pub fn new(slot_request_timeout: Duration) -> Self {
        Self {
            slot_request_timeout,
            task_executors: BTreeMap::new(),
            slots: BTreeMap::new(),
            free_slots: BTreeSet::new(),
            slot_of_allocation: BTreeMap::new(),
            waiting: VecDeque::new(),
            in_flight: BTreeMap::new(),
            freed_by_cancel: Vec::new(),
        }
    }

    pub fn slot_request_timeout(&self) -> Duration {
        self.slot_request_timeout
    }

    // ---------------------------------------------------------------- events

    /// A TaskExecutor registered with its slots.
    ///
    /// Free slots serve the oldest waiting requests they satisfy or join the free pool;
    /// allocated slots are recorded `Allocated` (fulfilling our request for that
    /// allocation, if any). A known resource id with a new instance id replaces the old
    /// registration (as unregister + register); the same instance id again is treated as
    /// a slot report.
    pub fn register_task_executor(
        &mut self,
        resource_id: &ResourceId,
        instance_id: InstanceId,
        report: &SlotReport,
        now: Instant,
    ) -> Vec<SlotManagerAction> {
        let mut actions = Vec::new();
        let mut changes = Changes::default();
        match self.task_executors.get(resource_id) {
            Some(known) if *known == instance_id => {
                tracing::debug!(
                    %resource_id,
                    %instance_id,
                    "TaskExecutor registered again; treating it as a slot report",
                );
                return self.report_slot_status(resource_id, report, now);
            }
            Some(known) => {
                tracing::info!(
                    %resource_id,
                    old_instance_id = %known,
                    %instance_id,
                    "TaskExecutor re-registered; replacing its old registration",
                );
                let reason = format!("it re-registered with the new instance id {instance_id}");
                self.drop_task_executor(resource_id, &reason, &mut changes, &mut actions);
            }
            None => {}
        }
        self.task_executors.insert(resource_id.clone(), instance_id);
        self.apply_report(resource_id, report, &mut changes, &mut actions);
        self.settle(changes, None, &mut actions);
        tracing::info!(
            %resource_id,
            %instance_id,
            slots = self.num_registered_slots_of(resource_id),
            free_slots = self.num_free_slots_of(resource_id),
            "registered TaskExecutor"
        );
        actions
    }

    /// A TaskExecutor is gone: all its slots are removed. Allocated slots emit
    /// `AllocationLost`; requests in flight on its slots go back to waiting (and are
    /// served elsewhere if possible). An unknown TaskExecutor changes nothing.
    pub fn unregister_task_executor(
        &mut self,
        resource_id: &ResourceId,
        reason: &str,
        _now: Instant,
    ) -> Vec<SlotManagerAction> {
        let mut actions = Vec::new();
        let mut changes = Changes::default();
        if !self.drop_task_executor(resource_id, reason, &mut changes, &mut actions) {
            return actions;
        }
        self.settle(changes, None, &mut actions);
        tracing::info!(%resource_id, reason, "unregistered TaskExecutor");
        actions
    }

    /// Reconciles our view of a registered TaskExecutor's slots with its report (the
    /// ground truth; see the module docs). A report from an unknown TaskExecutor is
    /// ignored.
    pub fn report_slot_status(
        &mut self,
        resource_id: &ResourceId,
        report: &SlotReport,
        _now: Instant,
    ) -> Vec<SlotManagerAction> {
        let mut actions = Vec::new();
        if !self.task_executors.contains_key(resource_id) {
            tracing::debug!(%resource_id, "ignoring a slot report from an unknown TaskExecutor");
            return actions;
        }
        let mut changes = Changes::default();
        self.apply_report(resource_id, report, &mut changes, &mut actions);
        self.settle(changes, None, &mut actions);
        actions
    }

    /// A JobMaster asks for a slot. It is assigned the best-fitting free slot at once
    /// (`AllocateSlot`), or waits (`NewWorkerNeeded`). A request whose allocation id we
    /// already know (waiting, in flight or allocated) is ignored.
    pub fn request_slot(&mut self, request: SlotRequest, now: Instant) -> Vec<SlotManagerAction> {
        let mut actions = Vec::new();
        if self.knows_allocation(request.allocation_id) {
            tracing::debug!(
                allocation_id = %request.allocation_id,
                "ignoring a duplicate slot request",
            );
            return actions;
        }
        let mut changes = Changes::default();
        changes.unplaced.push(TrackedRequest { request, arrived: now });
        self.settle(changes, None, &mut actions);
        actions
    }

    /// The TaskExecutor allocated `slot_id` for `allocation_id`: the request in flight on
    /// that slot is fulfilled. Unknown or stale answers are ignored.
    pub fn slot_request_succeeded(&mut self, allocation_id: AllocationId, slot_id: &SlotId) -> Vec<SlotManagerAction> {
        let mut actions = Vec::new();
        if !self.is_in_flight_on(allocation_id, slot_id) {
            tracing::debug!(%allocation_id, %slot_id, "ignoring a stale slot request answer");
            return actions;
        }
        let in_flight = self.in_flight.remove(&allocation_id).expect("checked above");
        let job_id = in_flight.tracked.request.job_id;
        self.set_state(slot_id, SlotState::Allocated { allocation_id, job_id });
        self.settle(Changes::default(), None, &mut actions);
        actions
    }

    /// The TaskExecutor did not allocate `slot_id` for `allocation_id`.
    ///
    /// If the request is no longer in flight on that slot (fulfilled meanwhile, cancelled,
    /// already retried elsewhere) nothing happens. Otherwise the slot is released (`Free`,
    /// or `Allocated` to the occupying allocation for [`SlotRequestFailure::SlotOccupied`])
    /// and the request is retried on another matching free slot, or goes back to waiting
    /// with its original arrival time.
    pub fn slot_request_failed(
        &mut self,
        allocation_id: AllocationId,
        slot_id: &SlotId,
        cause: SlotRequestFailure,
        _now: Instant,
    ) -> Vec<SlotManagerAction> {
        if !self.is_in_flight_on(allocation_id, slot_id) {
            tracing::debug!(
                %allocation_id,
                %slot_id,
                %cause,
                "ignoring a stale slot request failure",
            );
            return Vec::new();
        }
        if matches!(cause, SlotRequestFailure::SlotOccupied { by, .. } if by == allocation_id) {
            // Occupied by the very allocation we asked for: that is a success.
            return self.slot_request_succeeded(allocation_id, slot_id);
        }
        tracing::debug!(
            %allocation_id,
            %slot_id,
            %cause,
            "slot request failed; retrying on another slot",
        );
        let mut actions = Vec::new();
        let mut changes = Changes::default();
        let in_flight = self.in_flight.remove(&allocation_id).expect("checked above");
        self.set_state(slot_id, SlotState::Free);
        match cause {
            SlotRequestFailure::SlotOccupied { by, job_id } => {
                self.record_allocated(slot_id, by, Some(job_id), &mut changes);
            }
            SlotRequestFailure::Rejected(_) | SlotRequestFailure::Unreachable(_) => {
                changes.freed.push(slot_id.clone());
            }
        }
        changes.unplaced.push(in_flight.tracked);
        self.settle(changes, Some((allocation_id, slot_id.clone())), &mut actions);
        actions
    }

    /// The JobMaster released `allocation_id`: if `slot_id` is allocated to it, the slot
    /// serves the oldest waiting request it satisfies or becomes free. Otherwise ignored.
    pub fn free_slot(
        &mut self,
        slot_id: &SlotId,
        allocation_id: AllocationId,
        _now: Instant,
    ) -> Vec<SlotManagerAction> {
        let mut actions = Vec::new();
        let allocated_to_it = self.slots.get(slot_id).is_some_and(|slot| match slot.state {
            SlotState::Allocated { allocation_id: a, .. } => a == allocation_id,
            _ => false,
        });
        if !allocated_to_it {
            tracing::debug!(
                %slot_id,
                %allocation_id,
                "ignoring a request to free a slot not allocated to that allocation",
            );
            return actions;
        }
        self.set_state(slot_id, SlotState::Free);
        let changes = Changes { unplaced: Vec::new(), freed: vec![slot_id.clone()] };
        self.settle(changes, None, &mut actions);
        actions
    }

    /// Removes a waiting or in-flight request (an in-flight request's slot becomes free
    /// and is handed out by the next event). Returns false for an unknown (or already
    /// fulfilled) request.
    pub fn cancel_slot_request(&mut self, allocation_id: AllocationId) -> bool {
        if let Some(position) = self.waiting_position(allocation_id) {
            self.waiting.remove(position);
            true
        } else if let Some(in_flight) = self.in_flight.remove(&allocation_id) {
            self.set_state(&in_flight.slot_id, SlotState::Free);
            self.freed_by_cancel.push(in_flight.slot_id);
            true
        } else {
            false
        }
    }

    /// Retries every waiting request against the free pool, then removes every waiting
    /// request that has waited at least the slot request timeout, with `RequestTimedOut`.
    /// In-flight requests are not timed out here.
    pub fn check_timeouts(&mut self, now: Instant) -> Vec<SlotManagerAction> {
        let mut actions = Vec::new();
        self.settle(Changes::default(), None, &mut actions);
        self.serve_waiting(|_| true, &BTreeSet::new(), &None, &mut actions);

        let timeout = self.slot_request_timeout;
        let (expired, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|waiting| now.saturating_duration_since(waiting.arrived) >= timeout);
        self.waiting = kept;
        for TrackedRequest { request, .. } in expired {
            let reason = format!(
                "Could not fulfill slot request {} within {} ms: no free slot matches {} \
                 ({} slots registered, {} free)",
                request.allocation_id,
                timeout.as_millis(),
                DisplayProfile(&request.profile),
                self.slots.len(),
                self.free_slots.len(),
            );
            actions.push(SlotManagerAction::RequestTimedOut {
                allocation_id: request.allocation_id,
                job_id: request.job_id,
                reason,
            });
        }
        actions
    }

    // --------------------------------------------------------------- queries

    pub fn is_registered(&self, resource_id: &ResourceId) -> bool {
        self.task_executors.contains_key(resource_id)
    }

    pub fn instance_id(&self, resource_id: &ResourceId) -> Option<InstanceId> {
        self.task_executors.get(resource_id).copied()
    }

    pub fn num_registered_task_executors(&self) -> usize {
        self.task_executors.len()
    }

    pub fn num_registered_slots(&self) -> usize {
        self.slots.len()
    }

    pub fn num_free_slots(&self) -> usize {
        self.free_slots.len()
    }

    /// `Allocated` plus `Pending` slots.
    pub fn num_allocated_slots(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    /// Waiting requests (not in flight).
    pub fn num_pending_requests(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_registered_slots_of(&self, resource_id: &ResourceId) -> usize {
        self.slots.range(slot_range(resource_id)).count()
    }

    pub fn num_free_slots_of(&self, resource_id: &ResourceId) -> usize {
        self.free_slots.range(slot_range(resource_id)).count()
    }

    pub fn slot_state(&self, slot_id: &SlotId) -> Option<SlotState> {
        self.slots.get(slot_id).map(|slot| slot.state.clone())
    }

    /// The slots of a TaskExecutor, sorted by slot index.
    pub fn slots_of(&self, resource_id: &ResourceId) -> Vec<(SlotId, ResourceProfile, SlotState)> {
        self.slots
            .range(slot_range(resource_id))
            .map(|(slot_id, slot)| (slot_id.clone(), slot.profile, slot.state.clone()))
            .collect()
    }

    /// The registered TaskExecutors, sorted.
    pub fn task_executors(&self) -> Vec<ResourceId> {
        self.task_executors.keys().cloned().collect()
    }

    // --------------------------------------------------------- state changes

    /// Removes a TaskExecutor and all its slots; false if it is unknown.
    fn drop_task_executor(
        &mut self,
        resource_id: &ResourceId,
        reason: &str,
        changes: &mut Changes,
        actions: &mut Vec<SlotManagerAction>,
    ) -> bool {
        if self.task_executors.remove(resource_id).is_none() {
            return false;
        }
        let reason = format!("TaskExecutor {resource_id} was unregistered: {reason}");
        for slot_id in self.slot_ids_of(resource_id) {
            self.remove_slot(&slot_id, &reason, changes, actions);
        }
        true
    }

    /// Applies a slot report of a registered TaskExecutor: allocated slots first, then
    /// free ones, then the slots the report no longer lists.
    fn apply_report(
        &mut self,
        resource_id: &ResourceId,
        report: &SlotReport,
        changes: &mut Changes,
        actions: &mut Vec<SlotManagerAction>,
    ) {
        let mut reported: BTreeMap<&SlotId, &SlotStatus> = BTreeMap::new();
        for status in &report.slots {
            if status.slot_id.resource_id != *resource_id {
                tracing::warn!(
                    %resource_id,
                    slot_id = %status.slot_id,
                    "ignoring a reported slot of another TaskExecutor",
                );
                continue;
            }
            reported.insert(&status.slot_id, status);
        }

        for (slot_id, status) in &reported {
            if let Some(allocation_id) = status.allocation_id {
                self.upsert_slot(slot_id, status.profile);
                self.record_allocated(slot_id, allocation_id, status.job_id, changes);
            }
        }

        for (slot_id, status) in reported.iter().filter(|(_, status)| status.allocation_id.is_none()) {
            let Some(slot) = self.slots.get_mut(*slot_id) else {
                self.upsert_slot(slot_id, status.profile);
                changes.freed.push((*slot_id).clone());
                continue;
            };
            let profile_changed = slot.profile != status.profile;
            slot.profile = status.profile;
            match slot.state.clone() {
                SlotState::Free => {
                    if profile_changed {
                        changes.freed.push((*slot_id).clone());
                    }
                }
                SlotState::Pending { .. } => {
                    // The report may predate our slot request: keep waiting for the answer.
                }
                SlotState::Allocated { .. } => {
                    // Released on the TaskExecutor: our allocation is gone.
                    self.set_state(slot_id, SlotState::Free);
                    changes.freed.push((*slot_id).clone());
                }
            }
        }

        for slot_id in self.slot_ids_of(resource_id) {
            if !reported.contains_key(&slot_id) {
                let reason = format!("slot {slot_id} is no longer reported by TaskExecutor {resource_id}");
                self.remove_slot(&slot_id, &reason, changes, actions);
            }
        }
    }

    /// Records `slot_id` as allocated to `allocation_id` because its TaskExecutor says so.
    ///
    /// A request of ours for that allocation is fulfilled (wherever it waited or was in
    /// flight); a request in flight on this slot for another allocation is displaced; a
    /// stale record of the allocation on another slot is released.
    fn record_allocated(
        &mut self,
        slot_id: &SlotId,
        allocation_id: AllocationId,
        reported_job_id: Option<JobId>,
        changes: &mut Changes,
    ) {
        let job_id = reported_job_id.or_else(|| self.known_job_of(allocation_id, changes)).unwrap_or_else(|| {
            tracing::warn!(
                %slot_id,
                %allocation_id,
                "slot reported allocated without a job id",
            );
            JobId::from_u128(0)
        });

        match self.slots[slot_id].state.clone() {
            SlotState::Allocated { allocation_id: ours, .. } if ours == allocation_id => {
                self.set_state(slot_id, SlotState::Allocated { allocation_id, job_id });
                return;
            }
            SlotState::Pending { allocation_id: ours, .. } if ours == allocation_id => {
                self.in_flight.remove(&ours);
                self.set_state(slot_id, SlotState::Allocated { allocation_id, job_id });
                return;
            }
            SlotState::Pending { allocation_id: ours, .. } => {
                tracing::debug!(
                    %slot_id,
                    %allocation_id,
                    displaced = %ours,
                    "slot taken by another allocation; retrying our request",
                );
                if let Some(in_flight) = self.in_flight.remove(&ours) {
                    changes.unplaced.push(in_flight.tracked);
                }
            }
            SlotState::Allocated { allocation_id: ours, .. } => {
                tracing::debug!(
                    %slot_id,
                    %allocation_id,
                    replaced = %ours,
                    "slot reported allocated to another allocation",
                );
            }
            SlotState::Free => {}
        }

        // The allocation lives in this slot now: any other record of it is stale. If it
        // was our request in flight on another slot, the request is fulfilled here.
        if let Some(other) = self.slot_of_allocation.get(&allocation_id).cloned() {
            tracing::debug!(
                %allocation_id,
                from = %other,
                to = %slot_id,
                "allocation reported on another slot",
            );
            self.in_flight.remove(&allocation_id);
            self.set_state(&other, SlotState::Free);
            changes.freed.push(other);
        }
        if let Some(position) = self.waiting_position(allocation_id) {
            self.waiting.remove(position);
        }
        changes.unplaced.retain(|unplaced| unplaced.request.allocation_id != allocation_id);

        self.set_state(slot_id, SlotState::Allocated { allocation_id, job_id });
    }

    /// Removes a slot that disappeared: an allocated one emits `AllocationLost`, a pending
    /// one displaces the request in flight on it.
    fn remove_slot(
        &mut self,
        slot_id: &SlotId,
        reason: &str,
        changes: &mut Changes,
        actions: &mut Vec<SlotManagerAction>,
    ) {
        let Some(slot) = self.slots.remove(slot_id) else {
            return;
        };
        self.free_slots.remove(slot_id);
        match slot.state {
            SlotState::Free => {}
            SlotState::Pending { allocation_id, .. } => {
                self.slot_of_allocation.remove(&allocation_id);
                if let Some(in_flight) = self.in_flight.remove(&allocation_id) {
                    changes.unplaced.push(in_flight.tracked);
                }
            }
            SlotState::Allocated { allocation_id, job_id } => {
                self.slot_of_allocation.remove(&allocation_id);
                actions.push(SlotManagerAction::AllocationLost { allocation_id, job_id, reason: reason.to_string() });
            }
        }
    }

    /// Matches what an event left over: unplaced requests join the waiting queue at
    /// their arrival position, then the queue is served oldest first (see
    /// [`Self::serve_waiting`]), unplaced requests from the whole free pool and the others
    /// from the freed slots only. Every unplaced request still waiting at the end emits
    /// `NewWorkerNeeded`.
    ///
    /// Slots that were free before the event satisfy no request that waited before it,
    /// so looking only at the freed slots for those requests loses nothing.
    fn settle(&mut self, mut changes: Changes, avoid: Avoid, actions: &mut Vec<SlotManagerAction>) {
        changes.freed.append(&mut self.freed_by_cancel);
        let unplaced: BTreeSet<AllocationId> =
            changes.unplaced.iter().map(|tracked| tracked.request.allocation_id).collect();
        for tracked in changes.unplaced {
            self.enqueue(tracked);
        }
        let freed: BTreeSet<SlotId> = changes.freed.into_iter().collect();

        self.serve_waiting(|allocation_id| unplaced.contains(&allocation_id), &freed, &avoid, actions);

        let pending_requests = self.waiting.len();
        let unserved = self.waiting.iter().filter(|w| unplaced.contains(&w.request.allocation_id));
        actions.extend(
            unserved.map(|waiting| SlotManagerAction::NewWorkerNeeded {
                profile: waiting.request.profile,
                pending_requests,
            }),
        );
    }

    /// Serves the waiting queue oldest first: each request takes the best-fitting free
    /// slot it may use (any free slot if `whole_pool_for` its allocation, otherwise only
    /// the `freed` ones), never the slot `avoid` bars it from.
    fn serve_waiting(
        &mut self,
        whole_pool_for: impl Fn(AllocationId) -> bool,
        freed: &BTreeSet<SlotId>,
        avoid: &Avoid,
        actions: &mut Vec<SlotManagerAction>,
    ) {
        let mut position = 0;
        while position < self.waiting.len() && !self.free_slots.is_empty() {
            let request = &self.waiting[position].request;
            let allocation_id = request.allocation_id;
            let skip = avoid.as_ref().filter(|(avoided, _)| *avoided == allocation_id).map(|(_, slot)| slot);
            let slot_id = if whole_pool_for(allocation_id) {
                self.best_slot_among(self.free_slots.iter(), &request.profile, skip)
            } else {
                self.best_slot_among(freed.iter(), &request.profile, skip)
            };
            match slot_id {
                Some(slot_id) => {
                    let tracked = self.waiting.remove(position).expect("valid position");
                    self.assign(slot_id, tracked, actions);
                }
                None => position += 1,
            }
        }
    }

    /// Puts a request in flight on a free slot and asks its TaskExecutor for it.
    fn assign(&mut self, slot_id: SlotId, tracked: TrackedRequest, actions: &mut Vec<SlotManagerAction>) {
        let request = &tracked.request;
        let instance_id = self.task_executors[&slot_id.resource_id];
        tracing::debug!(
            allocation_id = %request.allocation_id,
            %slot_id,
            "assigning slot to request",
        );
        actions.push(SlotManagerAction::AllocateSlot {
            slot_id: slot_id.clone(),
            instance_id,
            allocation_id: request.allocation_id,
            job_id: request.job_id,
            profile: request.profile,
            target_address: request.target_address.clone(),
        });
        let state = SlotState::Pending { allocation_id: request.allocation_id, job_id: request.job_id };
        self.set_state(&slot_id, state);
        self.in_flight.insert(request.allocation_id, InFlight { tracked, slot_id });
    }

    /// Inserts a request into the waiting queue behind every request that arrived no
    /// later than it did.
    fn enqueue(&mut self, tracked: TrackedRequest) {
        let position = self.waiting.partition_point(|waiting| waiting.arrived <= tracked.arrived);
        self.waiting.insert(position, tracked);
    }

    /// Adds a slot as free, or updates the profile of a known one.
    fn upsert_slot(&mut self, slot_id: &SlotId, profile: ResourceProfile) {
        match self.slots.get_mut(slot_id) {
            Some(slot) => slot.profile = profile,
            None => {
                self.slots.insert(slot_id.clone(), Slot { profile, state: SlotState::Free });
                self.free_slots.insert(slot_id.clone());
            }
        }
    }

    /// Sets the state of a known slot, keeping the free pool and allocation index right.
    fn set_state(&mut self, slot_id: &SlotId, state: SlotState) {
        let slot = self.slots.get_mut(slot_id).expect("a registered slot");
        if let Some(old) = slot.state.allocation_id() {
            self.slot_of_allocation.remove(&old);
        }
        match state.allocation_id() {
            None => {
                self.free_slots.insert(slot_id.clone());
            }
            Some(new) => {
                self.free_slots.remove(slot_id);
                let previous = self.slot_of_allocation.insert(new, slot_id.clone());
                debug_assert!(previous.is_none(), "allocation {new} on two slots");
            }
        }
        slot.state = state;
    }

    // --------------------------------------------------------------- lookups

    /// The best-fitting free slot among `candidates` that satisfies `profile` (smallest by
    /// total memory, then CPU cores, then slot id), other than `skip`.
    fn best_slot_among<'a>(
        &self,
        candidates: impl Iterator<Item = &'a SlotId>,
        profile: &ResourceProfile,
        skip: Option<&SlotId>,
    ) -> Option<SlotId> {
        candidates
            .filter(|slot_id| Some(*slot_id) != skip && self.free_slots.contains(*slot_id))
            .map(|slot_id| (slot_id, &self.slots[slot_id].profile))
            .filter(|(_, offered)| offered.satisfies(profile))
            .min_by(|(id_a, a), (id_b, b)| compare_size(a, b).then_with(|| id_a.cmp(id_b)))
            .map(|(slot_id, _)| slot_id.clone())
    }

    fn knows_allocation(&self, allocation_id: AllocationId) -> bool {
        self.slot_of_allocation.contains_key(&allocation_id)
            || self.in_flight.contains_key(&allocation_id)
            || self.waiting_position(allocation_id).is_some()
    }

    fn is_in_flight_on(&self, allocation_id: AllocationId, slot_id: &SlotId) -> bool {
        self.in_flight.get(&allocation_id).is_some_and(|in_flight| in_flight.slot_id == *slot_id)
    }

    /// The job of an allocation we know of, from our requests or our slots.
    fn known_job_of(&self, allocation_id: AllocationId, changes: &Changes) -> Option<JobId> {
        self.slot_of_allocation
            .get(&allocation_id)
            .and_then(|slot_id| self.slots[slot_id].state.job_id())
            .or_else(|| self.waiting_position(allocation_id).map(|i| self.waiting[i].request.job_id))
            .or_else(|| {
                changes
                    .unplaced
                    .iter()
                    .find(|unplaced| unplaced.request.allocation_id == allocation_id)
                    .map(|unplaced| unplaced.request.job_id)
            })
    }

    fn waiting_position(&self, allocation_id: AllocationId) -> Option<usize> {
        self.waiting.iter().position(|waiting| waiting.request.allocation_id == allocation_id)
    }

    fn slot_ids_of(&self, resource_id: &ResourceId) -> Vec<SlotId> {
        self.slots.range(slot_range(resource_id)).map(|(slot_id, _)| slot_id.clone()).collect()
    }
}

/// All slot ids of one TaskExecutor.
fn slot_range(resource_id: &ResourceId) -> RangeInclusive<SlotId> {
    SlotId::new(resource_id.clone(), 0)..=SlotId::new(resource_id.clone(), u32::MAX)
}

fn total_memory_mb(profile: &ResourceProfile) -> u64 {
    profile
        .task_heap_mb
        .saturating_add(profile.task_off_heap_mb)
        .saturating_add(profile.managed_mb)
        .saturating_add(profile.network_mb)
}

/// Orders slot profiles by size: total memory, then CPU cores.
fn compare_size(a: &ResourceProfile, b: &ResourceProfile) -> Ordering {
    total_memory_mb(a).cmp(&total_memory_mb(b)).then_with(|| a.cpu_cores.total_cmp(&b.cpu_cores))
}

/// A profile as Flink prints it in messages.
struct DisplayProfile<'a>(&'a ResourceProfile);

impl fmt::Display for DisplayProfile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        if *p == ResourceProfile::ANY {
            return f.write_str("ResourceProfile{UNKNOWN}");
        }
        write!(
            f,
            "ResourceProfile{{cpuCores={}, taskHeapMemory={} mb, taskOffHeapMemory={} mb, \
             managedMemory={} mb, networkMemory={} mb}}",
            p.cpu_cores, p.task_heap_mb, p.task_off_heap_mb, p.managed_mb, p.network_mb
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(300);

    // ------------------------------------------------------------- fixtures

    fn profile(cpu_cores: f64, task_heap_mb: u64) -> ResourceProfile {
        ResourceProfile { cpu_cores, task_heap_mb, ..ResourceProfile::ANY }
    }

    fn small() -> ResourceProfile {
        profile(1.0, 1024)
    }

    fn big() -> ResourceProfile {
        profile(2.0, 4096)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn te(name: &str) -> ResourceId {
        ResourceId::new(name)
    }

    fn slot(name: &str, index: u32) -> SlotId {
        SlotId::new(te(name), index)
    }

    fn instance(n: u128) -> InstanceId {
        InstanceId::from_u128(n)
    }

    fn alloc(n: u128) -> AllocationId {
        AllocationId::from_u128(n)
    }

    fn job(n: u128) -> JobId {
        JobId::from_u128(n)
    }

    /// A request of job 1.
    fn request(n: u128, profile: ResourceProfile) -> SlotRequest {
        SlotRequest {
            allocation_id: alloc(n),
            job_id: job(1),
            profile,
            target_address: flint_common::rpc::RpcAddress::new("jm:6123", format!("jobmaster/{n}")),
        }
    }

    fn free_status(name: &str, index: u32, profile: ResourceProfile) -> SlotStatus {
        SlotStatus { slot_id: slot(name, index), profile, allocation_id: None, job_id: None }
    }

    fn allocated_status(name: &str, index: u32, profile: ResourceProfile, a: u128, j: u128) -> SlotStatus {
        SlotStatus { slot_id: slot(name, index), profile, allocation_id: Some(alloc(a)), job_id: Some(job(j)) }
    }

    fn report(slots: Vec<SlotStatus>) -> SlotReport {
        SlotReport { slots }
    }

    /// A report of free slots with these profiles, indices 0, 1, ...
    fn free_report(name: &str, profiles: &[ResourceProfile]) -> SlotReport {
        report(profiles.iter().enumerate().map(|(i, p)| free_status(name, i as u32, *p)).collect())
    }

    fn register(
        sm: &mut SlotManager,
        name: &str,
        inst: u128,
        profiles: &[ResourceProfile],
        now: Instant,
    ) -> Vec<SlotManagerAction> {
        sm.register_task_executor(&te(name), instance(inst), &free_report(name, profiles), now)
    }

    fn allocate(slot_id: SlotId, inst: u128, request: &SlotRequest) -> SlotManagerAction {
        SlotManagerAction::AllocateSlot {
            slot_id,
            instance_id: instance(inst),
            allocation_id: request.allocation_id,
            job_id: request.job_id,
            profile: request.profile,
            target_address: request.target_address.clone(),
        }
    }

    fn new_worker(profile: ResourceProfile, pending_requests: usize) -> SlotManagerAction {
        SlotManagerAction::NewWorkerNeeded { profile, pending_requests }
    }

    fn pending(a: u128, j: u128) -> SlotState {
        SlotState::Pending { allocation_id: alloc(a), job_id: job(j) }
    }

    fn allocated(a: u128, j: u128) -> SlotState {
        SlotState::Allocated { allocation_id: alloc(a), job_id: job(j) }
    }

    /// The (slot, allocation) pairs of the AllocateSlot actions.
    fn assignments(actions: &[SlotManagerAction]) -> Vec<(SlotId, AllocationId)> {
        actions
            .iter()
            .filter_map(|action| match action {
                SlotManagerAction::AllocateSlot { slot_id, allocation_id, .. } => {
                    Some((slot_id.clone(), *allocation_id))
                }
                _ => None,
            })
            .collect()
    }

    /// The allocations of the AllocationLost actions, with job and reason.
    fn lost_allocations(actions: &[SlotManagerAction]) -> Vec<(AllocationId, JobId, String)> {
        actions
            .iter()
            .filter_map(|action| match action {
                SlotManagerAction::AllocationLost { allocation_id, job_id, reason } => {
                    Some((*allocation_id, *job_id, reason.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The allocations of the RequestTimedOut actions.
    fn timed_out(actions: &[SlotManagerAction]) -> Vec<AllocationId> {
        actions
            .iter()
            .filter_map(|action| match action {
                SlotManagerAction::RequestTimedOut { allocation_id, .. } => Some(*allocation_id),
                _ => None,
            })
            .collect()
    }

    fn waiting_ids(sm: &SlotManager) -> Vec<AllocationId> {
        sm.waiting.iter().map(|waiting| waiting.request.allocation_id).collect()
    }

    /// The whole state, to compare before and after a no-op.
    fn snapshot(sm: &SlotManager) -> String {
        format!("{sm:?}")
    }

    /// Requests `n` and lets the TaskExecutor confirm it; returns the slot it got.
    fn allocate_confirmed(sm: &mut SlotManager, n: u128, profile: ResourceProfile, now: Instant) -> SlotId {
        let actions = sm.request_slot(request(n, profile), now);
        let (slot_id, _) = assignments(&actions).pop().expect("a free slot");
        assert!(sm.slot_request_succeeded(alloc(n), &slot_id).is_empty());
        slot_id
    }

    /// The invariants every state must keep.
    fn check_invariants(sm: &SlotManager) {
        assert_eq!(sm.num_free_slots() + sm.num_allocated_slots(), sm.num_registered_slots());
        assert_eq!(sm.num_registered_task_executors(), sm.task_executors().len());

        let mut holders: BTreeMap<AllocationId, SlotId> = BTreeMap::new();
        let mut free = BTreeSet::new();
        let mut total = 0;
        for resource_id in sm.task_executors() {
            let slots = sm.slots_of(&resource_id);
            total += slots.len();
            assert_eq!(slots.len(), sm.num_registered_slots_of(&resource_id));
            let free_here = slots.iter().filter(|(_, _, state)| *state == SlotState::Free).count();
            assert_eq!(free_here, sm.num_free_slots_of(&resource_id));
            assert!(slots.windows(2).all(|w| w[0].0.index < w[1].0.index), "slots_of sorted by index");
            for (slot_id, _, state) in slots {
                assert_eq!(slot_id.resource_id, resource_id);
                match state.allocation_id() {
                    None => {
                        free.insert(slot_id);
                    }
                    Some(a) => {
                        let other = holders.insert(a, slot_id.clone());
                        assert!(other.is_none(), "allocation {a} on {other:?} and {slot_id}");
                    }
                }
            }
        }
        assert_eq!(total, sm.num_registered_slots(), "every slot belongs to a registered TaskExecutor");
        assert_eq!(sm.slot_of_allocation, holders, "allocation index");
        assert_eq!(sm.free_slots, free, "free pool");

        for (a, in_flight) in &sm.in_flight {
            assert_eq!(*a, in_flight.tracked.request.allocation_id);
            let expected = SlotState::Pending { allocation_id: *a, job_id: in_flight.tracked.request.job_id };
            assert_eq!(sm.slot_state(&in_flight.slot_id), Some(expected), "in-flight request {a}");
        }
        for (a, slot_id) in &holders {
            if let Some(SlotState::Pending { .. }) = sm.slot_state(slot_id) {
                assert!(sm.is_in_flight_on(*a, slot_id), "pending slot {slot_id} without its request");
            }
        }

        assert_eq!(sm.num_pending_requests(), sm.waiting.len());
        assert!(sm.waiting.iter().zip(sm.waiting.iter().skip(1)).all(|(a, b)| a.arrived <= b.arrived));
        let mut seen = BTreeSet::new();
        for a in waiting_ids(sm) {
            assert!(seen.insert(a), "{a} waits twice");
            assert!(!holders.contains_key(&a) && !sm.in_flight.contains_key(&a), "{a} waits and has a slot");
        }
    }

    /// After `check_timeouts`: nothing is left to hand out, no free slot satisfies a
    /// waiting request.
    fn check_settled(sm: &SlotManager) {
        assert!(sm.freed_by_cancel.is_empty());
        for waiting in &sm.waiting {
            for slot_id in &sm.free_slots {
                let offered = sm.slots[slot_id].profile;
                assert!(!offered.satisfies(&waiting.request.profile), "{slot_id} could serve {:?}", waiting.request);
            }
        }
    }

    /// Every AllocateSlot of one call leaves its slot pending for that request.
    fn check_actions(sm: &SlotManager, actions: &[SlotManagerAction]) {
        let mut allocations = BTreeSet::new();
        for action in actions {
            if let SlotManagerAction::AllocateSlot { slot_id, instance_id, allocation_id, job_id, .. } = action {
                assert!(allocations.insert(*allocation_id), "two AllocateSlot for {allocation_id}");
                let expected = SlotState::Pending { allocation_id: *allocation_id, job_id: *job_id };
                assert_eq!(sm.slot_state(slot_id), Some(expected));
                assert_eq!(sm.instance_id(&slot_id.resource_id), Some(*instance_id));
            }
        }
    }

    // --------------------------------------------------------- request_slot

    #[test]
    fn request_is_assigned_a_matching_free_slot_at_once() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        assert!(register(&mut sm, "a", 1, &[small(), small()], t0).is_empty());
        assert_eq!((sm.num_free_slots(), sm.num_allocated_slots()), (2, 0));

        let r = request(1, small());
        let actions = sm.request_slot(r.clone(), t0);

        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r)]);
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(pending(1, 1)));
        assert_eq!((sm.num_free_slots(), sm.num_allocated_slots()), (1, 1));
        assert_eq!(sm.num_pending_requests(), 0);
        check_invariants(&sm);
    }

    #[test]
    fn equally_fitting_slots_are_taken_in_slot_id_order() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "b", 1, &[small(), small()], t0);
        register(&mut sm, "a", 2, &[small(), small()], t0);

        let got: Vec<_> = (1..=4).flat_map(|n| assignments(&sm.request_slot(request(n, small()), t0))).collect();

        let expected = vec![
            (slot("a", 0), alloc(1)),
            (slot("a", 1), alloc(2)),
            (slot("b", 0), alloc(3)),
            (slot("b", 1), alloc(4)),
        ];
        assert_eq!(got, expected);
        check_invariants(&sm);
    }

    #[test]
    fn request_takes_the_best_fitting_free_slot() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[big(), profile(1.0, 2048), small()], t0);

        // The smallest slot that satisfies the request, whatever its index.
        assert_eq!(assignments(&sm.request_slot(request(1, ResourceProfile::ANY), t0)), vec![(slot("a", 2), alloc(1))]);
        assert_eq!(assignments(&sm.request_slot(request(2, small()), t0)), vec![(slot("a", 1), alloc(2))]);
        assert_eq!(assignments(&sm.request_slot(request(3, small()), t0)), vec![(slot("a", 0), alloc(3))]);
        check_invariants(&sm);
    }

    #[test]
    fn request_without_any_slot_waits_and_needs_a_worker() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);

        let actions = sm.request_slot(request(1, small()), t0);

        assert_eq!(actions, vec![new_worker(small(), 1)]);
        assert_eq!(sm.num_pending_requests(), 1);
        check_invariants(&sm);
    }

    #[test]
    fn request_no_free_slot_satisfies_waits_and_needs_a_worker() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);

        let actions = sm.request_slot(request(1, big()), t0);

        assert_eq!(actions, vec![new_worker(big(), 1)]);
        assert_eq!((sm.num_free_slots(), sm.num_pending_requests()), (2, 1));
        check_invariants(&sm);
    }

    #[test]
    fn requests_wait_when_all_slots_are_taken_and_count_the_waiting() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);

        assert_eq!(assignments(&sm.request_slot(request(1, small()), t0)).len(), 1);
        assert_eq!(sm.request_slot(request(2, small()), t0), vec![new_worker(small(), 1)]);
        assert_eq!(sm.request_slot(request(3, big()), t0), vec![new_worker(big(), 2)]);
        assert_eq!(waiting_ids(&sm), vec![alloc(2), alloc(3)]);
        check_invariants(&sm);
    }

    #[test]
    fn duplicate_waiting_request_is_ignored() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        sm.request_slot(request(1, small()), t0);
        let before = snapshot(&sm);

        assert!(sm.request_slot(request(1, big()), t0 + secs(1)).is_empty());
        assert_eq!(snapshot(&sm), before);
    }

    #[test]
    fn duplicate_in_flight_request_is_ignored() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        sm.request_slot(request(1, small()), t0);
        let before = snapshot(&sm);

        assert!(sm.request_slot(request(1, small()), t0 + secs(1)).is_empty());
        assert_eq!(snapshot(&sm), before);
    }

    #[test]
    fn duplicate_allocated_request_is_ignored() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        let slots = report(vec![free_status("a", 0, small()), allocated_status("a", 1, small(), 7, 2)]);
        sm.register_task_executor(&te("a"), instance(1), &slots, t0);
        allocate_confirmed(&mut sm, 1, small(), t0);
        let before = snapshot(&sm);

        assert!(sm.request_slot(request(1, small()), t0).is_empty());
        // An allocation a TaskExecutor reported is known too.
        assert!(sm.request_slot(request(7, small()), t0).is_empty());
        assert_eq!(snapshot(&sm), before);
    }

    #[test]
    fn mixed_profiles_end_with_the_right_counts() {
        let t0 = Instant::now();
        let setup = || {
            let mut sm = SlotManager::new(TIMEOUT);
            register(&mut sm, "a", 1, &[big(), big()], t0);
            register(&mut sm, "b", 2, &[small(), small()], t0);
            sm
        };
        let run = |sm: &mut SlotManager, profiles: &[ResourceProfile]| {
            for (n, p) in profiles.iter().enumerate() {
                sm.request_slot(request(n as u128 + 1, *p), t0);
                check_invariants(sm);
            }
            (sm.num_allocated_slots(), sm.num_pending_requests())
        };

        // Big slots also satisfy small requests: all four are served.
        let mut sm = setup();
        assert_eq!(run(&mut sm, &[big(), small(), small(), small()]), (4, 0));
        assert_eq!(
            sm.slot_state(&slot("a", 1)),
            Some(pending(4, 1)),
            "the third small request takes the spare big slot"
        );

        let mut sm = setup();
        assert_eq!(run(&mut sm, &[big(), big(), big(), small()]), (3, 1));
        assert_eq!(waiting_ids(&sm), vec![alloc(3)]);

        // Best fit keeps the big slots for the big requests that come later.
        let mut sm = setup();
        assert_eq!(run(&mut sm, &[small(), small(), big(), big()]), (4, 0));

        let mut sm = setup();
        assert_eq!(run(&mut sm, &[big(), small(), small(), small(), big()]), (4, 1));
        assert_eq!(waiting_ids(&sm), vec![alloc(5)]);
    }

    // --------------------------------------------------------- registration

    #[test]
    fn registered_free_slots_serve_the_oldest_waiting_requests_they_satisfy() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        let (r1, r2, r3, r4) = (request(1, big()), request(2, small()), request(3, small()), request(4, small()));
        sm.request_slot(r1, t0);
        sm.request_slot(r2.clone(), t0 + secs(1));
        sm.request_slot(r3.clone(), t0 + secs(2));
        sm.request_slot(r4, t0 + secs(3));

        let actions = register(&mut sm, "a", 1, &[small(), small()], t0 + secs(4));

        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r2), allocate(slot("a", 1), 1, &r3)]);
        assert_eq!(waiting_ids(&sm), vec![alloc(1), alloc(4)]);
        check_invariants(&sm);
    }

    #[test]
    fn a_registered_slot_serves_the_oldest_request_even_if_a_later_one_fits_better() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        let r1 = request(1, small());
        sm.request_slot(r1.clone(), t0);
        sm.request_slot(request(2, big()), t0 + secs(1));

        let actions = register(&mut sm, "a", 1, &[big()], t0 + secs(2));

        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r1)]);
        assert_eq!(waiting_ids(&sm), vec![alloc(2)]);
        check_invariants(&sm);
    }

    #[test]
    fn freed_slots_go_to_the_oldest_requests_each_taking_its_best_fit() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        let (r1, r2) = (request(1, small()), request(2, big()));
        sm.request_slot(r1.clone(), t0);
        sm.request_slot(r2.clone(), t0 + secs(1));

        // Slot 0 is big: taken in slot order, it would go to the small request 1 and leave
        // the big request 2 without a slot.
        let actions = register(&mut sm, "a", 1, &[big(), small()], t0 + secs(2));

        assert_eq!(actions, vec![allocate(slot("a", 1), 1, &r1), allocate(slot("a", 0), 1, &r2)]);
        assert_eq!(sm.num_pending_requests(), 0);
        check_invariants(&sm);
    }

    #[test]
    fn registered_slots_nobody_waits_for_join_the_free_pool() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        sm.request_slot(request(1, small()), t0);

        let actions = register(&mut sm, "a", 1, &[small(), small(), small()], t0);

        assert_eq!(assignments(&actions), vec![(slot("a", 0), alloc(1))]);
        assert!(sm.is_registered(&te("a")));
        assert_eq!(sm.instance_id(&te("a")), Some(instance(1)));
        assert_eq!((sm.num_registered_slots(), sm.num_free_slots(), sm.num_allocated_slots()), (3, 2, 1));
        check_invariants(&sm);
    }

    #[test]
    fn registration_records_reported_allocated_slots() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        let slots = report(vec![allocated_status("a", 0, small(), 9, 2), free_status("a", 1, small())]);

        let actions = sm.register_task_executor(&te("a"), instance(1), &slots, t0);

        assert!(actions.is_empty());
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(9, 2)));
        assert_eq!(sm.slot_state(&slot("a", 1)), Some(SlotState::Free));
        assert_eq!((sm.num_free_slots(), sm.num_allocated_slots()), (1, 1));
        check_invariants(&sm);
    }

    #[test]
    fn registration_fulfills_a_waiting_request_reported_allocated() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        sm.request_slot(request(1, small()), t0);
        // Slot 1 is free, but the report says slot 0 already holds allocation 1.
        let slots = report(vec![free_status("a", 1, small()), allocated_status("a", 0, small(), 1, 1)]);

        let actions = sm.register_task_executor(&te("a"), instance(1), &slots, t0);

        assert!(actions.is_empty());
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(1, 1)));
        assert_eq!(sm.slot_state(&slot("a", 1)), Some(SlotState::Free));
        assert_eq!(sm.num_pending_requests(), 0);
        check_invariants(&sm);
    }

    #[test]
    fn registration_fulfills_a_request_in_flight_on_another_slot() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);
        let r2 = request(2, small());
        sm.request_slot(r2.clone(), t0);

        let slots = report(vec![allocated_status("b", 0, small(), 1, 1)]);
        let actions = sm.register_task_executor(&te("b"), instance(2), &slots, t0);

        // Allocation 1 lives on b_0; a_0 is released and serves the waiting request 2.
        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r2)]);
        assert_eq!(sm.slot_state(&slot("b", 0)), Some(allocated(1, 1)));
        check_invariants(&sm);
    }

    #[test]
    fn reregistration_with_a_new_instance_id_replaces_the_old_registration() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        let slots = report(vec![allocated_status("a", 0, small(), 5, 2), free_status("a", 1, small())]);
        sm.register_task_executor(&te("a"), instance(1), &slots, t0);
        let r1 = request(1, small());
        assert_eq!(assignments(&sm.request_slot(r1.clone(), t0)), vec![(slot("a", 1), alloc(1))]);

        let actions = register(&mut sm, "a", 2, &[small(), small(), small()], t0 + secs(1));

        assert_eq!(actions.len(), 2, "{actions:?}");
        let [(lost, lost_job, reason)] = &lost_allocations(&actions)[..] else { panic!("{actions:?}") };
        assert_eq!((*lost, *lost_job), (alloc(5), job(2)));
        assert!(reason.contains("re-registered"), "{reason}");
        // The request in flight on the old registration is re-sent to the new one; no
        // NewWorkerNeeded in between.
        assert_eq!(actions[1], allocate(slot("a", 0), 2, &r1));
        assert_eq!(sm.instance_id(&te("a")), Some(instance(2)));
        assert_eq!(sm.num_registered_task_executors(), 1);
        assert_eq!((sm.num_registered_slots(), sm.num_free_slots()), (3, 2));
        check_invariants(&sm);
    }

    #[test]
    fn registering_the_same_instance_again_is_a_slot_report() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        sm.request_slot(request(1, small()), t0);
        let before = snapshot(&sm);

        assert!(register(&mut sm, "a", 1, &[small(), small()], t0 + secs(1)).is_empty());
        assert_eq!(snapshot(&sm), before, "idempotent");

        let slots = report(vec![free_status("a", 0, small()), allocated_status("a", 1, small(), 7, 3)]);
        assert!(sm.register_task_executor(&te("a"), instance(1), &slots, t0 + secs(2)).is_empty());
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(pending(1, 1)), "report predates the request");
        assert_eq!(sm.slot_state(&slot("a", 1)), Some(allocated(7, 3)));
        check_invariants(&sm);
    }

    // --------------------------------------------------------- slot reports

    #[test]
    fn allocated_slot_reported_free_serves_the_oldest_matching_waiting_request() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        allocate_confirmed(&mut sm, 1, small(), t0);
        sm.request_slot(request(2, big()), t0 + secs(1));
        let r3 = request(3, small());
        sm.request_slot(r3.clone(), t0 + secs(2));

        let actions = sm.report_slot_status(&te("a"), &free_report("a", &[small()]), t0 + secs(3));

        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r3)]);
        assert_eq!(waiting_ids(&sm), vec![alloc(2)]);
        check_invariants(&sm);
    }

    #[test]
    fn allocated_slot_reported_free_becomes_free() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        allocate_confirmed(&mut sm, 1, small(), t0);

        assert!(sm.report_slot_status(&te("a"), &free_report("a", &[small()]), t0).is_empty());
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(SlotState::Free));
        assert_eq!(sm.num_free_slots(), 1);
        // The allocation is forgotten: the same id may be requested anew.
        assert_eq!(assignments(&sm.request_slot(request(1, small()), t0)).len(), 1);
        check_invariants(&sm);
    }

    #[test]
    fn pending_slot_reported_free_stays_pending() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);
        let before = snapshot(&sm);

        assert!(sm.report_slot_status(&te("a"), &free_report("a", &[small()]), t0).is_empty());
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(pending(1, 1)));
        assert_eq!(snapshot(&sm), before);
        // The answer still counts.
        sm.slot_request_succeeded(alloc(1), &slot("a", 0));
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(1, 1)));
        check_invariants(&sm);
    }

    #[test]
    fn free_slot_reported_allocated_is_recorded_allocated() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);

        let slots = report(vec![allocated_status("a", 0, small(), 9, 3), free_status("a", 1, small())]);
        assert!(sm.report_slot_status(&te("a"), &slots, t0).is_empty());

        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(9, 3)));
        assert_eq!((sm.num_free_slots(), sm.num_allocated_slots()), (1, 1));
        // Not in the free pool any more.
        assert_eq!(assignments(&sm.request_slot(request(1, small()), t0)), vec![(slot("a", 1), alloc(1))]);
        check_invariants(&sm);
    }

    #[test]
    fn another_allocation_on_a_pending_slot_sends_our_request_to_another_free_slot() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        let r1 = request(1, small());
        sm.request_slot(r1.clone(), t0);

        let slots = report(vec![allocated_status("a", 0, small(), 9, 3), free_status("a", 1, small())]);
        let actions = sm.report_slot_status(&te("a"), &slots, t0);

        assert_eq!(actions, vec![allocate(slot("a", 1), 1, &r1)]);
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(9, 3)));
        check_invariants(&sm);
    }

    #[test]
    fn another_allocation_on_a_pending_slot_sends_our_request_back_to_the_front_of_the_queue() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);
        sm.request_slot(request(2, small()), t0 + secs(1));

        let slots = report(vec![allocated_status("a", 0, small(), 9, 3)]);
        let actions = sm.report_slot_status(&te("a"), &slots, t0 + secs(2));

        assert_eq!(actions, vec![new_worker(small(), 2)]);
        assert_eq!(waiting_ids(&sm), vec![alloc(1), alloc(2)]);
        assert_eq!(sm.waiting[0].arrived, t0, "keeps its arrival time");
        check_invariants(&sm);
    }

    #[test]
    fn another_allocation_on_an_allocated_slot_replaces_ours() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        allocate_confirmed(&mut sm, 1, small(), t0);

        let slots = report(vec![allocated_status("a", 0, small(), 9, 3)]);
        assert!(sm.report_slot_status(&te("a"), &slots, t0).is_empty());

        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(9, 3)));
        // Freeing the replaced allocation is ignored; freeing the reported one works.
        assert!(sm.free_slot(&slot("a", 0), alloc(1), t0).is_empty());
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(9, 3)));
        sm.free_slot(&slot("a", 0), alloc(9), t0);
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(SlotState::Free));
        check_invariants(&sm);
    }

    #[test]
    fn our_in_flight_allocation_reported_fulfills_the_request() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);

        let slots = report(vec![allocated_status("a", 0, small(), 1, 1)]);
        assert!(sm.report_slot_status(&te("a"), &slots, t0).is_empty());

        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(1, 1)));
        assert!(sm.in_flight.is_empty());
        // The late answer is stale now.
        assert!(sm.slot_request_succeeded(alloc(1), &slot("a", 0)).is_empty());
        assert!(sm
            .slot_request_failed(alloc(1), &slot("a", 0), SlotRequestFailure::Rejected("late".into()), t0)
            .is_empty());
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(1, 1)));
        check_invariants(&sm);
    }

    #[test]
    fn report_without_a_job_id_uses_the_job_we_know() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        let mut r = request(1, small());
        r.job_id = job(4);
        sm.request_slot(r, t0);

        let mut slots = free_report("a", &[small(), small()]);
        slots.slots[0].allocation_id = Some(alloc(1));
        slots.slots[1].allocation_id = Some(alloc(2));
        sm.report_slot_status(&te("a"), &slots, t0);

        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(1, 4)));
        assert_eq!(sm.slot_state(&slot("a", 1)), Some(allocated(2, 0)), "unknown job");
        check_invariants(&sm);
    }

    #[test]
    fn slots_missing_from_a_report_are_lost_and_new_ones_are_added() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small(), small()], t0);
        let r1 = request(1, small());
        assert_eq!(assignments(&sm.request_slot(r1.clone(), t0)), vec![(slot("a", 0), alloc(1))]);
        assert_eq!(allocate_confirmed(&mut sm, 2, small(), t0), slot("a", 1));

        // Slots 0 and 1 vanished, slot 3 is new.
        let slots = report(vec![free_status("a", 3, small()), free_status("a", 2, small())]);
        let actions = sm.report_slot_status(&te("a"), &slots, t0);

        assert_eq!(actions.len(), 2, "{actions:?}");
        let [(lost, lost_job, reason)] = &lost_allocations(&actions[..1])[..] else { panic!("{actions:?}") };
        assert_eq!((*lost, *lost_job), (alloc(2), job(1)));
        assert!(reason.contains("no longer reported"), "{reason}");
        assert_eq!(actions[1], allocate(slot("a", 2), 1, &r1));
        let indices: Vec<u32> = sm.slots_of(&te("a")).iter().map(|(id, _, _)| id.index).collect();
        assert_eq!(indices, vec![2, 3]);
        assert_eq!(sm.slot_state(&slot("a", 3)), Some(SlotState::Free));
        check_invariants(&sm);
    }

    #[test]
    fn new_slot_in_a_report_serves_a_waiting_request() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[], t0);
        let r1 = request(1, small());
        sm.request_slot(r1.clone(), t0);

        let actions = sm.report_slot_status(&te("a"), &free_report("a", &[small()]), t0);

        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r1)]);
        check_invariants(&sm);
    }

    #[test]
    fn a_free_slot_whose_profile_grew_serves_a_waiting_request() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        let r1 = request(1, big());
        sm.request_slot(r1.clone(), t0);

        let actions = sm.report_slot_status(&te("a"), &free_report("a", &[big()]), t0);

        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r1)]);
        assert_eq!(sm.slots_of(&te("a"))[0].1, big());
        check_invariants(&sm);
    }

    #[test]
    fn report_from_an_unknown_task_executor_is_ignored() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        sm.request_slot(request(1, small()), t0);
        let before = snapshot(&sm);

        assert!(sm.report_slot_status(&te("x"), &free_report("x", &[small()]), t0).is_empty());
        assert_eq!(snapshot(&sm), before);
        assert!(!sm.is_registered(&te("x")));
    }

    #[test]
    fn reported_slots_of_another_task_executor_are_ignored() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        let slots = report(vec![free_status("a", 0, small()), free_status("b", 0, small())]);

        sm.register_task_executor(&te("a"), instance(1), &slots, t0);

        assert_eq!(sm.num_registered_slots(), 1);
        assert_eq!(sm.slot_state(&slot("b", 0)), None);
        check_invariants(&sm);
    }

    // ------------------------------------------------ slot request answers

    #[test]
    fn slot_request_succeeded_fulfills_the_in_flight_request() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);

        assert!(sm.slot_request_succeeded(alloc(1), &slot("a", 0)).is_empty());

        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(1, 1)));
        assert_eq!((sm.num_allocated_slots(), sm.num_pending_requests()), (1, 0));
        assert!(sm.in_flight.is_empty());
        check_invariants(&sm);
    }

    #[test]
    fn unknown_or_stale_success_is_ignored() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        sm.request_slot(request(1, small()), t0);
        sm.request_slot(request(2, small()), t0);
        sm.slot_request_succeeded(alloc(2), &slot("a", 1));
        sm.request_slot(request(3, small()), t0);
        let before = snapshot(&sm);

        assert!(sm.slot_request_succeeded(alloc(9), &slot("a", 0)).is_empty(), "unknown allocation");
        assert!(sm.slot_request_succeeded(alloc(1), &slot("a", 1)).is_empty(), "wrong slot");
        assert!(sm.slot_request_succeeded(alloc(1), &slot("x", 0)).is_empty(), "unknown slot");
        assert!(sm.slot_request_succeeded(alloc(2), &slot("a", 1)).is_empty(), "already fulfilled");
        assert!(sm.slot_request_succeeded(alloc(3), &slot("a", 0)).is_empty(), "a waiting request");
        assert_eq!(snapshot(&sm), before);
    }

    #[test]
    fn failure_after_fulfilment_is_ignored() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        allocate_confirmed(&mut sm, 1, small(), t0);
        let before = snapshot(&sm);

        let cause = SlotRequestFailure::Unreachable("timeout".into());
        assert!(sm.slot_request_failed(alloc(1), &slot("a", 0), cause, t0).is_empty());
        assert_eq!(snapshot(&sm), before);
    }

    #[test]
    fn failure_of_a_cancelled_or_unknown_request_is_ignored() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        sm.request_slot(request(1, small()), t0);
        assert!(sm.cancel_slot_request(alloc(1)));
        let before = snapshot(&sm);

        let cause = SlotRequestFailure::Rejected("no".into());
        assert!(sm.slot_request_failed(alloc(1), &slot("a", 0), cause.clone(), t0).is_empty());
        assert!(sm.slot_request_failed(alloc(8), &slot("a", 1), cause, t0).is_empty());
        assert_eq!(snapshot(&sm), before);
    }

    #[test]
    fn failure_on_a_slot_the_request_already_left_is_ignored() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        sm.request_slot(request(1, small()), t0);
        let cause = SlotRequestFailure::Unreachable("timeout".into());
        let actions = sm.slot_request_failed(alloc(1), &slot("a", 0), cause.clone(), t0);
        assert_eq!(assignments(&actions), vec![(slot("a", 1), alloc(1))]);
        let before = snapshot(&sm);

        assert!(sm.slot_request_failed(alloc(1), &slot("a", 0), cause, t0).is_empty());
        assert_eq!(snapshot(&sm), before);
    }

    #[test]
    fn rejected_request_is_retried_on_another_free_slot() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        let r1 = request(1, small());
        sm.request_slot(r1.clone(), t0);

        let cause = SlotRequestFailure::Rejected("slot not free".into());
        let actions = sm.slot_request_failed(alloc(1), &slot("a", 0), cause, t0);

        assert_eq!(actions, vec![allocate(slot("a", 1), 1, &r1)]);
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(SlotState::Free));
        assert_eq!(sm.slot_state(&slot("a", 1)), Some(pending(1, 1)));
        check_invariants(&sm);
    }

    #[test]
    fn failed_request_without_another_slot_waits_at_the_front_and_avoids_the_failed_slot() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);
        sm.request_slot(request(2, big()), t0 + secs(1));

        let cause = SlotRequestFailure::Unreachable("connection refused".into());
        let actions = sm.slot_request_failed(alloc(1), &slot("a", 0), cause, t0 + secs(2));

        assert_eq!(actions, vec![new_worker(small(), 2)]);
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(SlotState::Free));
        assert_eq!(waiting_ids(&sm), vec![alloc(1), alloc(2)]);
        assert_eq!(sm.waiting[0].arrived, t0, "keeps its arrival time");
        check_invariants(&sm);
    }

    #[test]
    fn the_slot_a_request_failed_on_serves_another_waiting_request() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);
        let r2 = request(2, small());
        sm.request_slot(r2.clone(), t0 + secs(1));

        let cause = SlotRequestFailure::Rejected("busy".into());
        let actions = sm.slot_request_failed(alloc(1), &slot("a", 0), cause, t0 + secs(2));

        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r2), new_worker(small(), 1)]);
        assert_eq!(waiting_ids(&sm), vec![alloc(1)]);
        check_invariants(&sm);
    }

    #[test]
    fn occupied_slot_is_recorded_for_the_occupant_and_the_request_retried() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        let r1 = request(1, small());
        sm.request_slot(r1.clone(), t0);

        let cause = SlotRequestFailure::SlotOccupied { by: alloc(9), job_id: job(5) };
        let actions = sm.slot_request_failed(alloc(1), &slot("a", 0), cause, t0);

        assert_eq!(actions, vec![allocate(slot("a", 1), 1, &r1)]);
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(9, 5)));
        assert_eq!(sm.num_free_slots(), 0);
        check_invariants(&sm);
    }

    #[test]
    fn slot_occupied_by_a_waiting_request_of_ours_fulfills_that_request() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);
        sm.request_slot(request(2, small()), t0 + secs(1));

        let cause = SlotRequestFailure::SlotOccupied { by: alloc(2), job_id: job(1) };
        let actions = sm.slot_request_failed(alloc(1), &slot("a", 0), cause, t0 + secs(2));

        assert_eq!(actions, vec![new_worker(small(), 1)]);
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(2, 1)));
        assert_eq!(waiting_ids(&sm), vec![alloc(1)]);
        check_invariants(&sm);
    }

    #[test]
    fn slot_occupied_by_the_requested_allocation_is_a_success() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small()], t0);
        sm.request_slot(request(1, small()), t0);

        let cause = SlotRequestFailure::SlotOccupied { by: alloc(1), job_id: job(1) };
        assert!(sm.slot_request_failed(alloc(1), &slot("a", 0), cause, t0).is_empty());

        assert_eq!(sm.slot_state(&slot("a", 0)), Some(allocated(1, 1)));
        check_invariants(&sm);
    }

    // ------------------------------------------------------- unregistration

    #[test]
    fn unregistering_removes_all_slots_reports_lost_allocations_and_reserves_in_flight_requests() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small(), small()], t0);
        assert_eq!(allocate_confirmed(&mut sm, 1, small(), t0), slot("a", 0));
        let r2 = request(2, small());
        sm.request_slot(r2.clone(), t0);
        register(&mut sm, "b", 2, &[small()], t0);
        // a_0 allocated, a_1 pending for request 2, a_2 free.
        assert_eq!(sm.num_free_slots_of(&te("a")), 1);

        let actions = sm.unregister_task_executor(&te("a"), "heartbeat timeout", t0);

        assert_eq!(actions.len(), 2, "{actions:?}");
        let [(lost, lost_job, reason)] = &lost_allocations(&actions[..1])[..] else { panic!("{actions:?}") };
        assert_eq!((*lost, *lost_job), (alloc(1), job(1)));
        assert!(reason.contains("TaskExecutor a") && reason.contains("heartbeat timeout"), "{reason}");
        assert_eq!(actions[1], allocate(slot("b", 0), 2, &r2));
        assert!(!sm.is_registered(&te("a")));
        assert_eq!(sm.instance_id(&te("a")), None);
        assert_eq!((sm.num_registered_task_executors(), sm.num_registered_slots()), (1, 1));
        assert!(sm.slots_of(&te("a")).is_empty());
        check_invariants(&sm);
    }

    #[test]
    fn request_in_flight_on_a_lost_task_executor_waits_when_nothing_else_matches() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        register(&mut sm, "b", 2, &[small()], t0);
        sm.request_slot(request(1, big()), t0);
        register(&mut sm, "c", 3, &[big()], t0);
        assert_eq!(sm.num_pending_requests(), 0);

        let actions = sm.unregister_task_executor(&te("c"), "killed", t0);

        assert_eq!(actions, vec![new_worker(big(), 1)]);
        assert_eq!(sm.num_free_slots(), 2);
        check_invariants(&sm);
    }

    #[test]
    fn unregistering_an_unknown_task_executor_changes_nothing() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, big()), t0);
        let before = snapshot(&sm);

        assert!(sm.unregister_task_executor(&te("x"), "who?", t0).is_empty());
        assert_eq!(snapshot(&sm), before);
    }

    // ------------------------------------------------------------ free_slot

    #[test]
    fn freed_slot_serves_the_oldest_matching_waiting_request() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        allocate_confirmed(&mut sm, 1, small(), t0);
        sm.request_slot(request(2, big()), t0 + secs(1));
        let r3 = request(3, small());
        sm.request_slot(r3.clone(), t0 + secs(2));
        sm.request_slot(request(4, small()), t0 + secs(3));

        let actions = sm.free_slot(&slot("a", 0), alloc(1), t0 + secs(4));

        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r3)]);
        assert_eq!(waiting_ids(&sm), vec![alloc(2), alloc(4)]);
        check_invariants(&sm);
    }

    #[test]
    fn freed_slot_nobody_waits_for_becomes_free() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        allocate_confirmed(&mut sm, 1, small(), t0);

        assert!(sm.free_slot(&slot("a", 0), alloc(1), t0).is_empty());

        assert_eq!(sm.slot_state(&slot("a", 0)), Some(SlotState::Free));
        assert_eq!((sm.num_free_slots(), sm.num_allocated_slots()), (1, 0));
        check_invariants(&sm);
    }

    #[test]
    fn freeing_with_the_wrong_allocation_or_a_non_allocated_slot_is_ignored() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small(), small(), small()], t0);
        allocate_confirmed(&mut sm, 1, small(), t0);
        sm.request_slot(request(2, small()), t0);
        let before = snapshot(&sm);

        assert!(sm.free_slot(&slot("a", 0), alloc(2), t0).is_empty(), "wrong allocation");
        assert!(sm.free_slot(&slot("a", 1), alloc(2), t0).is_empty(), "pending slot");
        assert!(sm.free_slot(&slot("a", 2), alloc(1), t0).is_empty(), "free slot");
        assert!(sm.free_slot(&slot("x", 0), alloc(1), t0).is_empty(), "unknown slot");
        assert_eq!(snapshot(&sm), before);
    }

    // ------------------------------------------------- cancel_slot_request

    #[test]
    fn cancelling_a_waiting_request_removes_it() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        sm.request_slot(request(1, small()), t0);
        sm.request_slot(request(2, small()), t0);

        assert!(sm.cancel_slot_request(alloc(1)));
        assert_eq!(waiting_ids(&sm), vec![alloc(2)]);
        assert!(!sm.cancel_slot_request(alloc(1)), "already gone");
        check_invariants(&sm);
    }

    #[test]
    fn cancelling_an_in_flight_request_frees_its_slot() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);

        assert!(sm.cancel_slot_request(alloc(1)));

        assert_eq!(sm.slot_state(&slot("a", 0)), Some(SlotState::Free));
        assert_eq!((sm.num_free_slots(), sm.num_allocated_slots()), (1, 0));
        // The TaskExecutor's late answer is stale.
        assert!(sm.slot_request_succeeded(alloc(1), &slot("a", 0)).is_empty());
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(SlotState::Free));
        check_invariants(&sm);
    }

    #[test]
    fn cancelling_an_unknown_or_fulfilled_request_returns_false() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        allocate_confirmed(&mut sm, 1, small(), t0);
        let before = snapshot(&sm);

        assert!(!sm.cancel_slot_request(alloc(1)));
        assert!(!sm.cancel_slot_request(alloc(2)));
        assert_eq!(snapshot(&sm), before);
    }

    #[test]
    fn the_slot_freed_by_a_cancellation_is_handed_out_by_the_next_event() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);
        let r2 = request(2, small());
        sm.request_slot(r2.clone(), t0 + secs(1));

        assert!(sm.cancel_slot_request(alloc(1)));
        assert_eq!(sm.num_pending_requests(), 1);
        check_invariants(&sm);

        // The older waiting request gets the slot before the new one is considered.
        let actions = sm.request_slot(request(3, small()), t0 + secs(2));
        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r2), new_worker(small(), 1)]);
        assert_eq!(waiting_ids(&sm), vec![alloc(3)]);
        check_invariants(&sm);
    }

    // ------------------------------------------------------ check_timeouts

    #[test]
    fn requests_waiting_at_least_the_timeout_time_out() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        let mut r1 = request(1, big());
        r1.job_id = job(7);
        sm.request_slot(r1, t0);
        sm.request_slot(request(2, big()), t0 + secs(10));

        assert!(sm.check_timeouts(t0 + TIMEOUT - Duration::from_millis(1)).is_empty());

        let actions = sm.check_timeouts(t0 + TIMEOUT);
        let expected_reason = format!(
            "Could not fulfill slot request {} within 300000 ms: no free slot matches \
             ResourceProfile{{cpuCores=2, taskHeapMemory=4096 mb, taskOffHeapMemory=0 mb, \
             managedMemory=0 mb, networkMemory=0 mb}} (1 slots registered, 1 free)",
            alloc(1)
        );
        assert_eq!(
            actions,
            vec![SlotManagerAction::RequestTimedOut {
                allocation_id: alloc(1),
                job_id: job(7),
                reason: expected_reason
            }]
        );
        assert_eq!(waiting_ids(&sm), vec![alloc(2)]);
        check_invariants(&sm);

        let actions = sm.check_timeouts(t0 + secs(10) + TIMEOUT + secs(1));
        assert_eq!(timed_out(&actions), vec![alloc(2)]);
        assert_eq!(sm.num_pending_requests(), 0);
        // A cancelled or timed-out request cannot be cancelled again.
        assert!(!sm.cancel_slot_request(alloc(2)));
    }

    #[test]
    fn timeout_reason_names_an_any_profile_unknown() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(Duration::from_millis(1500));
        sm.request_slot(request(1, ResourceProfile::ANY), t0);

        let actions = sm.check_timeouts(t0 + secs(2));

        let [SlotManagerAction::RequestTimedOut { reason, .. }] = &actions[..] else { panic!("{actions:?}") };
        assert!(reason.contains("within 1500 ms"), "{reason}");
        assert!(reason.contains("ResourceProfile{UNKNOWN}"), "{reason}");
    }

    #[test]
    fn in_flight_requests_do_not_time_out() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);

        assert!(sm.check_timeouts(t0 + TIMEOUT * 10).is_empty());
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(pending(1, 1)));
        check_invariants(&sm);
    }

    #[test]
    fn a_request_back_in_the_queue_times_out_from_its_original_arrival() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        sm.request_slot(request(1, small()), t0);
        sm.unregister_task_executor(&te("a"), "lost", t0 + secs(200));
        assert_eq!(sm.num_pending_requests(), 1);

        let actions = sm.check_timeouts(t0 + TIMEOUT);

        assert_eq!(timed_out(&actions), vec![alloc(1)]);
    }

    #[test]
    fn check_timeouts_first_retries_waiting_requests_on_free_slots() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        register(&mut sm, "a", 1, &[small()], t0);
        let r1 = request(1, small());
        sm.request_slot(r1.clone(), t0);
        let cause = SlotRequestFailure::Rejected("not yet".into());
        sm.slot_request_failed(alloc(1), &slot("a", 0), cause, t0 + secs(1));
        assert_eq!(sm.num_pending_requests(), 1);

        // Even past its timeout, the request gets another chance at the free slot.
        let actions = sm.check_timeouts(t0 + TIMEOUT);

        assert_eq!(actions, vec![allocate(slot("a", 0), 1, &r1)]);
        check_invariants(&sm);
    }

    // --------------------------------------------------------------- queries

    #[test]
    fn queries_describe_the_registered_task_executors() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        assert_eq!(sm.slot_request_timeout(), TIMEOUT);
        let slots = report(vec![
            free_status("b", 2, big()),
            allocated_status("b", 0, small(), 9, 3),
            free_status("b", 1, small()),
        ]);
        sm.register_task_executor(&te("b"), instance(2), &slots, t0);
        register(&mut sm, "a", 1, &[small()], t0);

        assert_eq!(sm.task_executors(), vec![te("a"), te("b")]);
        assert_eq!(
            sm.slots_of(&te("b")),
            vec![
                (slot("b", 0), small(), allocated(9, 3)),
                (slot("b", 1), small(), SlotState::Free),
                (slot("b", 2), big(), SlotState::Free),
            ]
        );
        assert_eq!((sm.num_registered_slots_of(&te("b")), sm.num_free_slots_of(&te("b"))), (3, 2));
        assert_eq!((sm.num_registered_slots(), sm.num_free_slots(), sm.num_allocated_slots()), (4, 3, 1));
        assert_eq!(sm.instance_id(&te("b")), Some(instance(2)));

        assert_eq!(sm.instance_id(&te("x")), None);
        assert!(!sm.is_registered(&te("x")));
        assert_eq!((sm.num_registered_slots_of(&te("x")), sm.num_free_slots_of(&te("x"))), (0, 0));
        assert!(sm.slots_of(&te("x")).is_empty());
        assert_eq!(sm.slot_state(&slot("b", 3)), None);
        assert_eq!(allocated(9, 3).allocation_id(), Some(alloc(9)));
        assert_eq!(pending(9, 3).job_id(), Some(job(3)));
        assert_eq!(SlotState::Free.allocation_id(), None);
        check_invariants(&sm);
    }

    #[test]
    fn slot_request_failures_describe_themselves() {
        assert_eq!(
            SlotRequestFailure::Rejected("no".into()).to_string(),
            "the TaskExecutor rejected the slot request: no"
        );
        assert_eq!(
            SlotRequestFailure::SlotOccupied { by: alloc(1), job_id: job(2) }.to_string(),
            format!("the slot is already occupied by allocation {} of job {}", alloc(1), job(2))
        );
        assert_eq!(
            SlotRequestFailure::Unreachable("timeout".into()).to_string(),
            "the TaskExecutor is unreachable: timeout"
        );
    }

    // ------------------------------------------------------------ scenarios

    #[test]
    fn scenario_job_lifecycle_with_a_lost_task_executor() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        let step = |sm: &SlotManager, actions: &[SlotManagerAction]| {
            check_actions(sm, actions);
            check_invariants(sm);
        };

        // Two TaskExecutors with two slots each.
        let a = register(&mut sm, "a", 1, &[small(), small()], t0);
        step(&sm, &a);
        let a = register(&mut sm, "b", 2, &[small(), small()], t0);
        step(&sm, &a);

        // A job of parallelism 5 asks for its slots: four are served, one waits.
        let mut granted = Vec::new();
        for n in 1..=5 {
            let a = sm.request_slot(request(n, small()), t0 + secs(1));
            step(&sm, &a);
            granted.extend(assignments(&a));
        }
        assert_eq!(granted.len(), 4);
        assert_eq!(waiting_ids(&sm), vec![alloc(5)]);

        // The TaskExecutors answer: a's slots succeed, b_0 is unreachable, b_1 succeeds.
        for (slot_id, allocation_id) in &granted {
            let a = if *slot_id == slot("b", 0) {
                let cause = SlotRequestFailure::Unreachable("timeout".into());
                sm.slot_request_failed(*allocation_id, slot_id, cause, t0 + secs(2))
            } else {
                sm.slot_request_succeeded(*allocation_id, slot_id)
            };
            step(&sm, &a);
        }
        // b_0's request went back to the queue ahead of request 5, and the free b_0 went
        // to request 5 (the failed request does not retry the slot that failed it).
        assert_eq!(waiting_ids(&sm), vec![alloc(3)]);
        assert_eq!(sm.slot_state(&slot("b", 0)), Some(pending(5, 1)));
        let a = sm.slot_request_succeeded(alloc(5), &slot("b", 0));
        step(&sm, &a);

        // TaskExecutor a is lost: its two allocations are lost.
        let a = sm.unregister_task_executor(&te("a"), "heartbeat timeout", t0 + secs(3));
        step(&sm, &a);
        let lost: Vec<_> = lost_allocations(&a).into_iter().map(|(lost, _, _)| lost).collect();
        assert_eq!(lost, vec![alloc(1), alloc(2)]);

        // The job asks again for the lost slots; a replacement TaskExecutor registers.
        for n in 6..=7 {
            let a = sm.request_slot(request(n, small()), t0 + secs(4));
            step(&sm, &a);
        }
        assert_eq!(waiting_ids(&sm), vec![alloc(3), alloc(6), alloc(7)]);
        let a = register(&mut sm, "c", 3, &[small(), small(), small(), small()], t0 + secs(5));
        step(&sm, &a);
        assert_eq!(assignments(&a), vec![(slot("c", 0), alloc(3)), (slot("c", 1), alloc(6)), (slot("c", 2), alloc(7))]);

        // The heartbeat report of c shows two allocations made and one still pending.
        let slots = report(vec![
            allocated_status("c", 0, small(), 3, 1),
            allocated_status("c", 1, small(), 6, 1),
            free_status("c", 2, small()),
            free_status("c", 3, small()),
        ]);
        let a = sm.report_slot_status(&te("c"), &slots, t0 + secs(6));
        step(&sm, &a);
        assert!(a.is_empty());
        let a = sm.slot_request_succeeded(alloc(7), &slot("c", 2));
        step(&sm, &a);
        assert_eq!((sm.num_allocated_slots(), sm.num_free_slots(), sm.num_pending_requests()), (5, 1, 0));

        // The job finishes and frees everything.
        for (slot_id, _, state) in sm.task_executors().iter().flat_map(|rid| sm.slots_of(rid)).collect::<Vec<_>>() {
            if let SlotState::Allocated { allocation_id, .. } = state {
                let a = sm.free_slot(&slot_id, allocation_id, t0 + secs(7));
                step(&sm, &a);
                assert!(a.is_empty());
            }
        }
        assert_eq!((sm.num_allocated_slots(), sm.num_free_slots()), (0, 6));
        assert!(sm.check_timeouts(t0 + TIMEOUT * 2).is_empty());
    }

    #[test]
    fn scenario_report_races() {
        let t0 = Instant::now();
        let mut sm = SlotManager::new(TIMEOUT);
        let step = |sm: &SlotManager, actions: &[SlotManagerAction]| {
            check_actions(sm, actions);
            check_invariants(sm);
        };
        let a = register(&mut sm, "a", 1, &[small(), small()], t0);
        step(&sm, &a);
        let r1 = request(1, small());
        let a = sm.request_slot(r1.clone(), t0);
        step(&sm, &a);
        assert_eq!(a, vec![allocate(slot("a", 0), 1, &r1)]);

        // An old report (before our request) arrives: nothing changes.
        let a = sm.report_slot_status(&te("a"), &free_report("a", &[small(), small()]), t0);
        step(&sm, &a);
        assert!(a.is_empty());

        // The TaskExecutor put allocation 1 into slot 1 instead of slot 0.
        let slots = report(vec![free_status("a", 0, small()), allocated_status("a", 1, small(), 1, 1)]);
        let a = sm.report_slot_status(&te("a"), &slots, t0);
        step(&sm, &a);
        assert!(a.is_empty());
        assert_eq!(sm.slot_state(&slot("a", 0)), Some(SlotState::Free));
        assert_eq!(sm.slot_state(&slot("a", 1)), Some(allocated(1, 1)));
        // The late answer for slot 0 is stale.
        let a = sm.slot_request_failed(alloc(1), &slot("a", 0), SlotRequestFailure::Rejected("x".into()), t0);
        step(&sm, &a);
        assert!(a.is_empty());

        // Request 2 goes to slot 0, but another ResourceManager's allocation got there first.
        let r2 = request(2, small());
        let a = sm.request_slot(r2.clone(), t0 + secs(1));
        step(&sm, &a);
        let cause = SlotRequestFailure::SlotOccupied { by: alloc(42), job_id: job(9) };
        let a = sm.slot_request_failed(alloc(2), &slot("a", 0), cause, t0 + secs(2));
        step(&sm, &a);
        assert_eq!(a, vec![new_worker(small(), 1)]);

        // The allocation moves: a report frees slot 0 and request 2 gets it.
        let slots = report(vec![free_status("a", 0, small()), allocated_status("a", 1, small(), 1, 1)]);
        let a = sm.report_slot_status(&te("a"), &slots, t0 + secs(3));
        step(&sm, &a);
        assert_eq!(a, vec![allocate(slot("a", 0), 1, &r2)]);

        // The TaskExecutor re-registers (it restarted): everything it held is lost, and
        // request 2 is sent again to the new registration.
        let a = register(&mut sm, "a", 2, &[small(), small()], t0 + secs(4));
        step(&sm, &a);
        assert_eq!(lost_allocations(&a[..1])[0].0, alloc(1));
        assert_eq!(a[1..], [allocate(slot("a", 0), 2, &r2)]);
    }

    /// A small deterministic generator (xorshift64*), so the test needs no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
    }

    #[test]
    fn scenario_random_operations_keep_the_invariants() {
        let names = ["a", "b", "c", "d"];
        let slot_profiles = [small(), big()];
        let request_profiles = [small(), big(), ResourceProfile::ANY, profile(1.5, 100)];
        let mut kinds_seen = std::collections::HashSet::new();
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let t0 = Instant::now();
            let mut now = t0;
            let mut sm = SlotManager::new(secs(60));
            let mut next_instance = 1u128;
            for _ in 0..400 {
                now += secs(rng.below(8) as u64);
                let name = names[rng.below(names.len())];
                let random_allocation = |rng: &mut Rng| alloc(1 + rng.below(30) as u128);
                let op = rng.below(11);
                let actions = match op {
                    0 => {
                        let mut slots = Vec::new();
                        for index in 0..rng.below(4) as u32 {
                            let p = slot_profiles[rng.below(2)];
                            if rng.chance(20) {
                                let a = random_allocation(&mut rng).as_u128();
                                slots.push(allocated_status(name, index, p, a, 1 + rng.below(2) as u128));
                            } else {
                                slots.push(free_status(name, index, p));
                            }
                        }
                        // Mostly a new registration, sometimes the same one again.
                        let inst = match sm.instance_id(&te(name)) {
                            Some(known) if rng.chance(30) => known,
                            _ => {
                                next_instance += 1;
                                instance(next_instance)
                            }
                        };
                        sm.register_task_executor(&te(name), inst, &report(slots), now)
                    }
                    1 => sm.unregister_task_executor(&te(name), "random", now),
                    2 | 3 => {
                        // A report derived from our view, perturbed.
                        let mut slots = Vec::new();
                        for (slot_id, p, state) in sm.slots_of(&te(name)) {
                            let mut status = SlotStatus { slot_id, profile: p, allocation_id: None, job_id: None };
                            if let SlotState::Allocated { allocation_id, job_id } = state {
                                status.allocation_id = Some(allocation_id);
                                status.job_id = Some(job_id);
                            }
                            match rng.below(10) {
                                0 => continue,
                                1 => status.allocation_id = None,
                                2 => {
                                    status.allocation_id = Some(random_allocation(&mut rng));
                                    status.job_id = Some(job(1));
                                }
                                3 => status.profile = slot_profiles[rng.below(2)],
                                _ => {}
                            }
                            slots.push(status);
                        }
                        if rng.chance(20) {
                            slots.push(free_status(name, 4 + rng.below(3) as u32, slot_profiles[rng.below(2)]));
                        }
                        sm.report_slot_status(&te(name), &report(slots), now)
                    }
                    4 | 5 => {
                        let a = random_allocation(&mut rng).as_u128();
                        sm.request_slot(request(a, request_profiles[rng.below(4)]), now)
                    }
                    6 => match sm.in_flight.iter().nth(rng.below(sm.in_flight.len() + 1)) {
                        Some((a, in_flight)) => {
                            let (a, slot_id) = (*a, in_flight.slot_id.clone());
                            sm.slot_request_succeeded(a, &slot_id)
                        }
                        None => sm.slot_request_succeeded(random_allocation(&mut rng), &slot(name, 0)),
                    },
                    7 => {
                        let cause = match rng.below(3) {
                            0 => SlotRequestFailure::Rejected("random".into()),
                            1 => SlotRequestFailure::Unreachable("random".into()),
                            _ => SlotRequestFailure::SlotOccupied { by: random_allocation(&mut rng), job_id: job(2) },
                        };
                        match sm.in_flight.iter().nth(rng.below(sm.in_flight.len() + 1)) {
                            Some((a, in_flight)) => {
                                let (a, slot_id) = (*a, in_flight.slot_id.clone());
                                sm.slot_request_failed(a, &slot_id, cause, now)
                            }
                            None => sm.slot_request_failed(random_allocation(&mut rng), &slot(name, 1), cause, now),
                        }
                    }
                    8 => match sm.slot_of_allocation.iter().nth(rng.below(sm.slot_of_allocation.len() + 1)) {
                        Some((a, slot_id)) => {
                            let (a, slot_id) = (*a, slot_id.clone());
                            sm.free_slot(&slot_id, a, now)
                        }
                        None => sm.free_slot(&slot(name, 0), random_allocation(&mut rng), now),
                    },
                    9 => {
                        sm.cancel_slot_request(random_allocation(&mut rng));
                        Vec::new()
                    }
                    _ => sm.check_timeouts(now),
                };
                check_actions(&sm, &actions);
                check_invariants(&sm);
                kinds_seen.extend(actions.iter().map(std::mem::discriminant));
                if op == 10 {
                    check_settled(&sm);
                }
            }
        }
        assert_eq!(kinds_seen.len(), 4, "every kind of action happened");
    }
}
