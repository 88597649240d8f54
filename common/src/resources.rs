//! Resource profiles of slots and slot requests, and the slot report a TaskExecutor
//! sends as the ground truth about its slots.

use serde::{Deserialize, Serialize};

use crate::ids::{AllocationId, JobId, SlotId};

/// What a slot offers or a request needs. Memory in MiB, as Flink's REST API shows it.
///
/// `ResourceProfile::ANY` (Flink's `UNKNOWN`) as a request matches every slot.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceProfile {
    pub cpu_cores: f64,
    pub task_heap_mb: u64,
    pub task_off_heap_mb: u64,
    pub managed_mb: u64,
    pub network_mb: u64,
}

impl ResourceProfile {
    /// A request profile that any slot satisfies.
    pub const ANY: ResourceProfile =
        ResourceProfile { cpu_cores: 0.0, task_heap_mb: 0, task_off_heap_mb: 0, managed_mb: 0, network_mb: 0 };

    /// True when a slot with this profile can serve a request for `required`.
    pub fn satisfies(&self, required: &ResourceProfile) -> bool {
        self.cpu_cores + 1e-9 >= required.cpu_cores
            && self.task_heap_mb >= required.task_heap_mb
            && self.task_off_heap_mb >= required.task_off_heap_mb
            && self.managed_mb >= required.managed_mb
            && self.network_mb >= required.network_mb
    }

    /// This profile multiplied by `n` (the total of `n` equal slots).
    pub fn times(&self, n: u32) -> ResourceProfile {
        let k = u64::from(n);
        ResourceProfile {
            cpu_cores: self.cpu_cores * f64::from(n),
            task_heap_mb: self.task_heap_mb * k,
            task_off_heap_mb: self.task_off_heap_mb * k,
            managed_mb: self.managed_mb * k,
            network_mb: self.network_mb * k,
        }
    }
}

/// One slot as its TaskExecutor reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot_id: SlotId,
    pub profile: ResourceProfile,
    /// `Some` when the slot is allocated.
    #[serde(default)]
    pub allocation_id: Option<AllocationId>,
    /// The job the allocation belongs to.
    #[serde(default)]
    pub job_id: Option<JobId>,
}

/// All slots of one TaskExecutor: the ground truth the SlotManager reconciles with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotReport {
    pub slots: Vec<SlotStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(cpu: f64, heap: u64) -> ResourceProfile {
        ResourceProfile { cpu_cores: cpu, task_heap_mb: heap, ..ResourceProfile::ANY }
    }

    #[test]
    fn any_is_satisfied_by_every_slot() {
        assert!(profile(0.5, 10).satisfies(&ResourceProfile::ANY));
        assert!(ResourceProfile::ANY.satisfies(&ResourceProfile::ANY));
    }

    #[test]
    fn every_dimension_must_suffice() {
        assert!(profile(1.0, 100).satisfies(&profile(1.0, 100)));
        assert!(!profile(1.0, 100).satisfies(&profile(2.0, 100)));
        assert!(!profile(1.0, 100).satisfies(&profile(1.0, 101)));
        assert_eq!(profile(1.0, 100).times(2), profile(2.0, 200));
    }
}
