//! Gang admission of slot requests: a JobMaster asks for all the slots it misses in one
//! batch (`RequestSlots`), and the batch enters the [`SlotManager`](crate::slot_manager)
//! only once every slot of it can be served at once.
//!
//! Without this, concurrent jobs each grabbed part of the free slots and waited for the
//! rest forever (50 jobs of 2 slots on 4 slots ended with 4 jobs holding 1 slot each until
//! the slot request timeout failed them). A pure state machine, like the SlotManager:
//!
//! - Batches wait in arrival order. [`SlotBatches::admit`] hands out, oldest first, every
//!   batch that fits into the free slots. A batch that fits into the cluster but not into
//!   the free slots now stops admission (later, smaller batches do not overtake it, so
//!   large jobs are not starved); a batch larger than every registered slot together is
//!   passed over until the cluster grows or it times out.
//! - A batch waits at most the slot request timeout; then its requests are returned as
//!   expired (the ResourceManager tells the JobMaster).
//! - A request of a waiting batch can be cancelled; an emptied batch disappears.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use flint_common::ids::{AllocationId, JobId};

use crate::slot_manager::SlotRequest;

struct Batch {
    job_id: JobId,
    requests: Vec<SlotRequest>,
    arrived: Instant,
}

/// Slot request batches waiting to be admitted. See the module docs.
pub struct SlotBatches {
    waiting: VecDeque<Batch>,
    timeout: Duration,
}

impl SlotBatches {
    pub fn new(timeout: Duration) -> Self {
        Self { waiting: VecDeque::new(), timeout }
    }

    /// Queues a job's batch (an empty batch is ignored).
    pub fn enqueue(&mut self, job_id: JobId, requests: Vec<SlotRequest>, now: Instant) {
        if !requests.is_empty() {
            self.waiting.push_back(Batch { job_id, requests, arrived: now });
        }
    }

    /// The batches to hand to the SlotManager now, oldest first, given `free` free slots
    /// and `total` registered slots.
    pub fn admit(&mut self, mut free: usize, total: usize) -> Vec<Vec<SlotRequest>> {
        let mut admitted = Vec::new();
        let mut index = 0;
        while index < self.waiting.len() {
            let size = self.waiting[index].requests.len();
            if size <= free {
                free -= size;
                if let Some(batch) = self.waiting.remove(index) {
                    admitted.push(batch.requests);
                }
            } else if size <= total {
                break;
            } else {
                index += 1;
            }
        }
        admitted
    }

    /// Removes a waiting request; whether it was one.
    pub fn cancel(&mut self, allocation_id: AllocationId) -> bool {
        let Some(batch) = self.waiting.iter_mut().find(|b| b.requests.iter().any(|r| r.allocation_id == allocation_id))
        else {
            return false;
        };
        batch.requests.retain(|r| r.allocation_id != allocation_id);
        self.waiting.retain(|b| !b.requests.is_empty());
        true
    }

    /// Removes and returns the requests of batches that waited the whole timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<SlotRequest> {
        let timeout = self.timeout;
        let (expired, kept): (VecDeque<Batch>, VecDeque<Batch>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|b| now.saturating_duration_since(b.arrived) >= timeout);
        self.waiting = kept;
        expired.into_iter().flat_map(|b| b.requests).collect()
    }

    /// Waiting requests of every batch.
    pub fn num_waiting_requests(&self) -> usize {
        self.waiting.iter().map(|b| b.requests.len()).sum()
    }

    /// The jobs with a waiting batch, oldest first.
    pub fn waiting_jobs(&self) -> Vec<JobId> {
        self.waiting.iter().map(|b| b.job_id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flint_common::resources::ResourceProfile;
    use flint_common::rpc::RpcAddress;

    fn batch(job: JobId, n: usize) -> Vec<SlotRequest> {
        (0..n)
            .map(|_| SlotRequest {
                allocation_id: AllocationId::generate(),
                job_id: job,
                profile: ResourceProfile::ANY,
                target_address: RpcAddress::new("localhost:1", "jobmaster/x"),
            })
            .collect()
    }

    #[test]
    fn a_batch_is_admitted_whole_or_not_at_all() {
        let now = Instant::now();
        let mut b = SlotBatches::new(Duration::from_secs(300));
        let jobs: Vec<JobId> = (0..3).map(|_| JobId::generate()).collect();
        for job in &jobs {
            b.enqueue(*job, batch(*job, 2), now);
        }
        // 3 free slots: one batch of 2 goes, the next would get only 1 and waits.
        let admitted = b.admit(3, 4);
        assert_eq!(admitted.len(), 1);
        assert_eq!(admitted[0].len(), 2);
        assert_eq!(b.waiting_jobs(), vec![jobs[1], jobs[2]]);
        assert!(b.admit(1, 4).is_empty());
        assert_eq!(b.admit(4, 4).len(), 2);
        assert_eq!(b.num_waiting_requests(), 0);
    }

    #[test]
    fn later_small_batches_do_not_starve_an_earlier_large_one() {
        let now = Instant::now();
        let mut b = SlotBatches::new(Duration::from_secs(300));
        let (large, small) = (JobId::generate(), JobId::generate());
        b.enqueue(large, batch(large, 4), now);
        b.enqueue(small, batch(small, 1), now);
        assert!(b.admit(2, 4).is_empty(), "the small batch waits behind the large one");
        let admitted = b.admit(4, 4);
        assert_eq!(admitted.iter().map(Vec::len).collect::<Vec<_>>(), vec![4]);
        assert_eq!(b.waiting_jobs(), vec![small]);
    }

    #[test]
    fn a_batch_larger_than_the_cluster_is_passed_over_until_it_expires() {
        let now = Instant::now();
        let mut b = SlotBatches::new(Duration::from_secs(10));
        let (huge, small) = (JobId::generate(), JobId::generate());
        b.enqueue(huge, batch(huge, 8), now);
        b.enqueue(small, batch(small, 2), now + Duration::from_secs(5));
        assert_eq!(b.admit(4, 4).len(), 1, "the small batch is not blocked by one that cannot fit");
        assert_eq!(b.waiting_jobs(), vec![huge]);
        assert!(b.expire(now + Duration::from_secs(9)).is_empty());
        assert_eq!(b.expire(now + Duration::from_secs(10)).len(), 8);
        assert_eq!(b.num_waiting_requests(), 0);
    }

    #[test]
    fn cancelled_requests_leave_their_batch() {
        let now = Instant::now();
        let mut b = SlotBatches::new(Duration::from_secs(10));
        let job = JobId::generate();
        let requests = batch(job, 2);
        let ids: Vec<AllocationId> = requests.iter().map(|r| r.allocation_id).collect();
        b.enqueue(job, requests, now);
        assert!(b.cancel(ids[0]));
        assert!(!b.cancel(ids[0]));
        assert_eq!(b.num_waiting_requests(), 1);
        assert!(b.cancel(ids[1]));
        assert!(b.waiting_jobs().is_empty());
    }

    /// Seeded random arrivals, admissions and cancellations: every request is admitted,
    /// cancelled or expired exactly once, and a batch is never split.
    #[test]
    fn random_operations_keep_batches_whole() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let start = Instant::now();
        let mut b = SlotBatches::new(Duration::from_secs(50));
        let mut sizes = std::collections::HashMap::new();
        let mut outstanding = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for step in 0..5_000u64 {
            let now = start + Duration::from_secs(step / 10);
            match next(4) {
                0 => {
                    let job = JobId::generate();
                    let requests = batch(job, 1 + next(4) as usize);
                    sizes.insert(job, requests.len());
                    outstanding.extend(requests.iter().map(|r| r.allocation_id));
                    b.enqueue(job, requests, now);
                }
                1 => {
                    for admitted in b.admit(next(6) as usize, 4) {
                        let job = admitted[0].job_id;
                        assert!(admitted.iter().all(|r| r.job_id == job));
                        assert!(admitted.len() <= sizes[&job], "never more than the batch");
                        for r in admitted {
                            assert!(seen.insert(r.allocation_id), "admitted twice");
                        }
                    }
                }
                2 if !outstanding.is_empty() => {
                    let id = outstanding[next(outstanding.len() as u64) as usize];
                    if b.cancel(id) {
                        assert!(seen.insert(id), "cancelled after admission");
                    }
                }
                _ => {
                    for r in b.expire(now) {
                        assert!(seen.insert(r.allocation_id), "expired twice");
                    }
                }
            }
        }
        for r in b.expire(start + Duration::from_secs(10_000)) {
            assert!(seen.insert(r.allocation_id));
        }
        assert_eq!(seen.len(), outstanding.len(), "every request ended exactly once");
    }
}
