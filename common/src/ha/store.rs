//! State-handle stores: named, opaque values that a new leader recovers (job graphs,
//! completed checkpoints), with per-owner locks so that one JobManager does not delete what
//! another still uses.
//!
//! [`StateHandleStore`] is the seam, with [`MemoryStateHandleStore`] (standalone) and
//! `ZooKeeperStateHandleStore` (handle in ZooKeeper, bytes in the HA storage dir) behind it.
//! [`JobGraphStore`] and [`CompletedCheckpointStore`] are the typed views the JobManager uses.
//!
//! Lock semantics (Flink's `StateHandleStore`): `put` and `get` lock the entry for the
//! calling owner (a process; ZooKeeper: an ephemeral lock node, so a dead process's locks
//! vanish with its session); `release` drops the owner's lock; `remove` drops it and removes
//! the entry only if no other owner holds a lock, answering `false` otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::warn;

use super::{HaError, HaFuture};
use crate::ids::JobId;

/// Named opaque values with per-owner locks. All methods run asynchronously (see
/// [`HaFuture`]).
pub trait StateHandleStore: Send + Sync {
    /// Adds `name` with `value`, locked by this owner. Fails with [`HaError::AlreadyExists`]
    /// when the entry exists.
    fn put(&self, name: &str, value: Vec<u8>) -> HaFuture<()>;
    /// The value of `name`, which is now locked by this owner; `None` without such an entry.
    /// An entry whose stored value is missing is an error ([`HaError::MissingStateFile`]).
    fn get(&self, name: &str) -> HaFuture<Option<Vec<u8>>>;
    /// The names of all entries, sorted, whoever locks them.
    fn names(&self) -> HaFuture<Vec<String>>;
    /// Drops this owner's lock and removes the entry with its value, unless another owner
    /// still locks it: `true` when it is gone (or never existed), `false` when it stays.
    fn remove(&self, name: &str) -> HaFuture<bool>;
    /// Drops this owner's lock on `name` (nothing if there is none).
    fn release(&self, name: &str) -> HaFuture<()>;
    /// Drops all locks of this owner.
    fn release_all(&self) -> HaFuture<()>;
    /// Collects garbage a crash can leave: stored values no entry points at that are older
    /// than `min_age` (a younger one may belong to a `put` in flight elsewhere), and entries
    /// whose removal was interrupted. Returns how many values were deleted.
    fn cleanup(&self, min_age: Duration) -> HaFuture<usize>;
}

fn ready<T: Send + 'static>(result: Result<T, HaError>) -> HaFuture<T> {
    Box::pin(futures::future::ready(result))
}

// ---------------------------------------------------------------------------------------
// In memory
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct MemoryEntry {
    value: Vec<u8>,
    locks: BTreeSet<u64>,
}

#[derive(Default)]
struct MemoryShared {
    entries: BTreeMap<String, MemoryEntry>,
    next_owner: u64,
}

/// The standalone [`StateHandleStore`]: entries in memory. Clones share entries and owner;
/// [`MemoryStateHandleStore::new_owner`] gives another owner over the same entries (what a
/// second process would be), for tests of the lock semantics.
#[derive(Clone)]
pub struct MemoryStateHandleStore {
    shared: Arc<Mutex<MemoryShared>>,
    owner: u64,
}

impl Default for MemoryStateHandleStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStateHandleStore {
    pub fn new() -> Self {
        Self { shared: Arc::new(Mutex::new(MemoryShared { entries: BTreeMap::new(), next_owner: 1 })), owner: 0 }
    }

    /// A view on the same entries with its own locks.
    pub fn new_owner(&self) -> Self {
        let mut shared = self.shared();
        let owner = shared.next_owner;
        shared.next_owner += 1;
        Self { shared: self.shared.clone(), owner }
    }

    fn shared(&self) -> MutexGuard<'_, MemoryShared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateHandleStore for MemoryStateHandleStore {
    fn put(&self, name: &str, value: Vec<u8>) -> HaFuture<()> {
        let mut shared = self.shared();
        if shared.entries.contains_key(name) {
            return ready(Err(HaError::AlreadyExists { name: name.to_string() }));
        }
        shared.entries.insert(name.to_string(), MemoryEntry { value, locks: BTreeSet::from([self.owner]) });
        ready(Ok(()))
    }

    fn get(&self, name: &str) -> HaFuture<Option<Vec<u8>>> {
        let mut shared = self.shared();
        let value = shared.entries.get_mut(name).map(|entry| {
            entry.locks.insert(self.owner);
            entry.value.clone()
        });
        ready(Ok(value))
    }

    fn names(&self) -> HaFuture<Vec<String>> {
        ready(Ok(self.shared().entries.keys().cloned().collect()))
    }

    fn remove(&self, name: &str) -> HaFuture<bool> {
        let mut shared = self.shared();
        let removable = match shared.entries.get_mut(name) {
            None => true,
            Some(entry) => {
                entry.locks.remove(&self.owner);
                entry.locks.is_empty()
            }
        };
        if removable {
            shared.entries.remove(name);
        }
        ready(Ok(removable))
    }

    fn release(&self, name: &str) -> HaFuture<()> {
        if let Some(entry) = self.shared().entries.get_mut(name) {
            entry.locks.remove(&self.owner);
        }
        ready(Ok(()))
    }

    fn release_all(&self) -> HaFuture<()> {
        for entry in self.shared().entries.values_mut() {
            entry.locks.remove(&self.owner);
        }
        ready(Ok(()))
    }

    fn cleanup(&self, _min_age: Duration) -> HaFuture<usize> {
        ready(Ok(0))
    }
}

// ---------------------------------------------------------------------------------------
// Typed views
// ---------------------------------------------------------------------------------------

/// The submitted job graphs, one entry per job (named by the job id), values opaque.
#[derive(Clone)]
pub struct JobGraphStore {
    store: Arc<dyn StateHandleStore>,
}

impl JobGraphStore {
    pub fn new(store: Arc<dyn StateHandleStore>) -> Self {
        Self { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn StateHandleStore> {
        &self.store
    }

    /// Stores the job graph of a newly submitted job (fails if the job has one).
    pub fn put(&self, job_id: JobId, value: Vec<u8>) -> HaFuture<()> {
        self.store.put(&job_id.to_string(), value)
    }

    /// The job graph of `job_id` (locked for this process), if stored.
    pub fn get(&self, job_id: JobId) -> HaFuture<Option<Vec<u8>>> {
        self.store.get(&job_id.to_string())
    }

    /// The jobs with a stored job graph; entries that are not job ids are skipped.
    pub fn job_ids(&self) -> HaFuture<Vec<JobId>> {
        let names = self.store.names();
        Box::pin(async move {
            let mut ids = Vec::new();
            for name in names.await? {
                match name.parse() {
                    Ok(id) => ids.push(id),
                    Err(_) => warn!(%name, "ignoring job graph entry that is not a job id"),
                }
            }
            Ok(ids)
        })
    }

    /// Removes the job graph of a finished job (see [`StateHandleStore::remove`]).
    pub fn remove(&self, job_id: JobId) -> HaFuture<bool> {
        self.store.remove(&job_id.to_string())
    }

    /// Drops this process's lock on the job graph (the job moved elsewhere).
    pub fn release(&self, job_id: JobId) -> HaFuture<()> {
        self.store.release(&job_id.to_string())
    }

    pub fn release_all(&self) -> HaFuture<()> {
        self.store.release_all()
    }
}

/// The name of checkpoint `id` in the store: 19 digits, zero-padded, so that names sort
/// like ids (Flink's `ZooKeeperCheckpointStoreUtil`).
pub fn checkpoint_name(id: u64) -> String {
    format!("{id:019}")
}

/// The completed checkpoints of one job, keeping the newest `max_retained`.
#[derive(Clone)]
pub struct CompletedCheckpointStore {
    store: Arc<dyn StateHandleStore>,
    max_retained: usize,
}

impl CompletedCheckpointStore {
    /// `max_retained` is at least 1.
    pub fn new(store: Arc<dyn StateHandleStore>, max_retained: usize) -> Self {
        Self { store, max_retained: max_retained.max(1) }
    }

    pub fn max_retained(&self) -> usize {
        self.max_retained
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn StateHandleStore> {
        &self.store
    }

    /// Adds checkpoint `id`, then removes the oldest ones beyond `max_retained` (those
    /// another process still locks stay). Returns the ids removed.
    pub fn add(&self, id: u64, value: Vec<u8>) -> HaFuture<Vec<u64>> {
        let store = self.store.clone();
        let max_retained = self.max_retained;
        let put = store.put(&checkpoint_name(id), value);
        Box::pin(async move {
            put.await?;
            let ids = checkpoint_ids(&*store).await?;
            let mut removed = Vec::new();
            for old in ids.iter().take(ids.len().saturating_sub(max_retained)) {
                if store.remove(&checkpoint_name(*old)).await? {
                    removed.push(*old);
                } else {
                    warn!(checkpoint_id = old, "subsumed checkpoint is still locked elsewhere, keeping it");
                }
            }
            Ok(removed)
        })
    }

    /// The stored checkpoint ids, ascending.
    pub fn checkpoint_ids(&self) -> HaFuture<Vec<u64>> {
        let store = self.store.clone();
        Box::pin(async move { checkpoint_ids(&*store).await })
    }

    /// Checkpoint `id` (locked for this process), if stored.
    pub fn get(&self, id: u64) -> HaFuture<Option<Vec<u8>>> {
        self.store.get(&checkpoint_name(id))
    }

    /// The newest checkpoint (locked for this process), if any.
    pub fn latest(&self) -> HaFuture<Option<(u64, Vec<u8>)>> {
        let store = self.store.clone();
        Box::pin(async move {
            for id in checkpoint_ids(&*store).await?.into_iter().rev() {
                // Removed between listing and reading: try the next older one.
                if let Some(value) = store.get(&checkpoint_name(id)).await? {
                    return Ok(Some((id, value)));
                }
            }
            Ok(None)
        })
    }

    /// Removes checkpoint `id` (see [`StateHandleStore::remove`]).
    pub fn remove(&self, id: u64) -> HaFuture<bool> {
        self.store.remove(&checkpoint_name(id))
    }

    /// Drops this process's locks (the job moved elsewhere or is suspended).
    pub fn release_all(&self) -> HaFuture<()> {
        self.store.release_all()
    }
}

async fn checkpoint_ids(store: &dyn StateHandleStore) -> Result<Vec<u64>, HaError> {
    let mut ids: Vec<u64> = store
        .names()
        .await?
        .into_iter()
        .filter_map(|name| match name.parse() {
            Ok(id) => Some(id),
            Err(_) => {
                warn!(%name, "ignoring checkpoint entry that is not a checkpoint id");
                None
            }
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::super::wait;
    use super::*;

    #[test]
    fn memory_store_locks_keep_entries_of_other_owners() {
        let a = MemoryStateHandleStore::new();
        let b = a.new_owner();
        wait(a.put("x", b"1".to_vec())).unwrap();
        assert!(matches!(wait(b.put("x", b"2".to_vec())), Err(HaError::AlreadyExists { .. })));
        assert_eq!(wait(b.get("x")).unwrap(), Some(b"1".to_vec()));
        assert!(!wait(a.remove("x")).unwrap(), "b still locks x");
        assert_eq!(wait(a.names()).unwrap(), vec!["x".to_string()]);
        wait(b.release_all()).unwrap();
        assert!(wait(a.remove("x")).unwrap());
        assert_eq!(wait(a.get("x")).unwrap(), None);
        assert!(wait(a.remove("x")).unwrap(), "removing nothing is done");
    }

    #[test]
    fn completed_checkpoints_keep_the_newest_and_sort_numerically() {
        let store = CompletedCheckpointStore::new(Arc::new(MemoryStateHandleStore::new()), 2);
        assert_eq!(wait(store.latest()).unwrap(), None);
        assert_eq!(wait(store.add(9, b"9".to_vec())).unwrap(), Vec::<u64>::new());
        assert_eq!(wait(store.add(10, b"10".to_vec())).unwrap(), Vec::<u64>::new());
        assert_eq!(wait(store.add(11, b"11".to_vec())).unwrap(), vec![9]);
        assert_eq!(wait(store.checkpoint_ids()).unwrap(), vec![10, 11]);
        assert_eq!(wait(store.latest()).unwrap(), Some((11, b"11".to_vec())));
        assert_eq!(checkpoint_name(11), "0000000000000000011");
    }

    #[test]
    fn job_graph_store_is_keyed_by_job_id() {
        let store = JobGraphStore::new(Arc::new(MemoryStateHandleStore::new()));
        let job = JobId::generate();
        wait(store.put(job, b"graph".to_vec())).unwrap();
        assert_eq!(wait(store.job_ids()).unwrap(), vec![job]);
        assert_eq!(wait(store.get(job)).unwrap(), Some(b"graph".to_vec()));
        assert!(wait(store.remove(job)).unwrap());
        assert!(wait(store.job_ids()).unwrap().is_empty());
    }
}
