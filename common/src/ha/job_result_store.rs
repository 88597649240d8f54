//! The job result store: the result of every globally terminated job, first *dirty* (its
//! resources may still need cleaning up), then *clean*. A dispatcher that takes over finds
//! the dirty results and finishes their cleanup instead of running those jobs again.
//!
//! [`FileJobResultStore`] is Flink's `FileSystemJobResultStore` layout: one JSON file per job
//! in `<storageDir>/job-result-store/<cluster-id>/`, `<job-id>_DIRTY.json` while dirty,
//! renamed to `<job-id>.json` when clean, content `{"result": ..., "version": 1}`.
//! [`MemoryJobResultStore`] is the standalone one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use super::files::{io_error, list_files, rename_durably, write_atomically};
use super::HaError;
use crate::ids::JobId;

/// One job's stored result.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResultEntry {
    pub job_id: JobId,
    /// The result as the dispatcher gave it (opaque JSON).
    pub result: Value,
    /// Whether the job's cleanup finished.
    pub clean: bool,
}

/// The results of finished jobs. Operations are synchronous (small local writes).
pub trait JobResultStore: Send + Sync {
    /// Records the result of `job_id` as dirty. Fails if the job has a result already.
    fn create_dirty(&self, job_id: JobId, result: Value) -> Result<(), HaError>;
    /// Marks the result of `job_id` clean; idempotent. [`HaError::NotFound`] without a result.
    fn mark_clean(&self, job_id: JobId) -> Result<(), HaError>;
    /// Whether `job_id` has a result, dirty or clean.
    fn has_result(&self, job_id: JobId) -> Result<bool, HaError> {
        Ok(self.get(job_id)?.is_some())
    }
    /// Whether `job_id` has a dirty result.
    fn has_dirty_result(&self, job_id: JobId) -> Result<bool, HaError> {
        Ok(self.get(job_id)?.is_some_and(|e| !e.clean))
    }
    /// Whether `job_id` has a clean result.
    fn has_clean_result(&self, job_id: JobId) -> Result<bool, HaError> {
        Ok(self.get(job_id)?.is_some_and(|e| e.clean))
    }
    /// All dirty results (jobs whose cleanup must still be done), sorted by job id.
    fn dirty_results(&self) -> Result<Vec<JobResultEntry>, HaError>;
    /// The result of `job_id`, if any.
    fn get(&self, job_id: JobId) -> Result<Option<JobResultEntry>, HaError>;
}

/// The standalone [`JobResultStore`].
#[derive(Default)]
pub struct MemoryJobResultStore {
    entries: Mutex<BTreeMap<JobId, JobResultEntry>>,
}

impl MemoryJobResultStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<JobId, JobResultEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl JobResultStore for MemoryJobResultStore {
    fn create_dirty(&self, job_id: JobId, result: Value) -> Result<(), HaError> {
        let mut entries = self.entries();
        if entries.contains_key(&job_id) {
            return Err(HaError::AlreadyExists { name: job_id.to_string() });
        }
        entries.insert(job_id, JobResultEntry { job_id, result, clean: false });
        Ok(())
    }

    fn mark_clean(&self, job_id: JobId) -> Result<(), HaError> {
        match self.entries().get_mut(&job_id) {
            Some(entry) => {
                entry.clean = true;
                Ok(())
            }
            None => Err(HaError::NotFound { name: job_id.to_string() }),
        }
    }

    fn dirty_results(&self) -> Result<Vec<JobResultEntry>, HaError> {
        Ok(self.entries().values().filter(|e| !e.clean).cloned().collect())
    }

    fn get(&self, job_id: JobId) -> Result<Option<JobResultEntry>, HaError> {
        Ok(self.entries().get(&job_id).cloned())
    }
}

const DIRTY_SUFFIX: &str = "_DIRTY.json";
const CLEAN_SUFFIX: &str = ".json";
const VERSION: u64 = 1;

/// The file-based [`JobResultStore`] of ZooKeeper mode (see the module documentation).
pub struct FileJobResultStore {
    dir: PathBuf,
}

impl FileJobResultStore {
    /// A store in `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn dirty_path(&self, job_id: JobId) -> PathBuf {
        self.dir.join(format!("{job_id}{DIRTY_SUFFIX}"))
    }

    fn clean_path(&self, job_id: JobId) -> PathBuf {
        self.dir.join(format!("{job_id}{CLEAN_SUFFIX}"))
    }

    fn read(&self, path: &Path, job_id: JobId, clean: bool) -> Result<Option<JobResultEntry>, HaError> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path, e)),
        };
        let corrupt = |reason: String| HaError::Corrupt { location: path.display().to_string(), reason };
        let mut value: Value = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        let result = value.get_mut("result").map(Value::take).ok_or_else(|| corrupt("no 'result' field".into()))?;
        Ok(Some(JobResultEntry { job_id, result, clean }))
    }
}

impl JobResultStore for FileJobResultStore {
    fn create_dirty(&self, job_id: JobId, result: Value) -> Result<(), HaError> {
        if self.has_result(job_id)? {
            return Err(HaError::AlreadyExists { name: job_id.to_string() });
        }
        let text = serde_json::to_vec(&serde_json::json!({ "result": result, "version": VERSION }))
            .map_err(|e| HaError::Corrupt { location: job_id.to_string(), reason: e.to_string() })?;
        write_atomically(&self.dirty_path(job_id), &text)
    }

    fn mark_clean(&self, job_id: JobId) -> Result<(), HaError> {
        let (dirty, clean) = (self.dirty_path(job_id), self.clean_path(job_id));
        match rename_durably(&dirty, &clean) {
            Ok(()) => Ok(()),
            // Already clean (or marked clean by a concurrent dispatcher): done.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && clean.exists() => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(HaError::NotFound { name: format!("dirty job result of {job_id}") })
            }
            Err(e) => Err(io_error(&dirty, e)),
        }
    }

    fn dirty_results(&self) -> Result<Vec<JobResultEntry>, HaError> {
        let mut results = Vec::new();
        for path in list_files(&self.dir)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let Some(job_id) = name.strip_suffix(DIRTY_SUFFIX).and_then(|id| id.parse().ok()) else { continue };
            // Marked clean since the listing: not dirty any more.
            if let Some(entry) = self.read(&path, job_id, false)? {
                results.push(entry);
            }
        }
        Ok(results)
    }

    fn get(&self, job_id: JobId) -> Result<Option<JobResultEntry>, HaError> {
        if let Some(entry) = self.read(&self.dirty_path(job_id), job_id, false)? {
            return Ok(Some(entry));
        }
        self.read(&self.clean_path(job_id), job_id, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn JobResultStore) {
        let (a, b) = (JobId::from_u128(0xa), JobId::from_u128(0xb));
        assert!(!store.has_result(a).unwrap());
        assert!(matches!(store.mark_clean(a), Err(HaError::NotFound { .. })));
        store.create_dirty(a, serde_json::json!({"state": "FINISHED"})).unwrap();
        store.create_dirty(b, serde_json::json!({"state": "FAILED"})).unwrap();
        assert!(matches!(store.create_dirty(a, Value::Null), Err(HaError::AlreadyExists { .. })));
        assert!(store.has_dirty_result(a).unwrap() && !store.has_clean_result(a).unwrap());
        let dirty: Vec<JobId> = store.dirty_results().unwrap().into_iter().map(|e| e.job_id).collect();
        assert_eq!(dirty, vec![a, b]);
        store.mark_clean(a).unwrap();
        store.mark_clean(a).unwrap();
        assert!(store.has_clean_result(a).unwrap() && store.has_result(a).unwrap());
        let entry = store.get(a).unwrap().unwrap();
        assert_eq!((entry.clean, entry.result), (true, serde_json::json!({"state": "FINISHED"})));
        assert_eq!(store.dirty_results().unwrap().len(), 1);
        assert!(matches!(store.create_dirty(a, Value::Null), Err(HaError::AlreadyExists { .. })));
    }

    #[test]
    fn memory_job_result_store() {
        exercise(&MemoryJobResultStore::new());
    }

    #[test]
    fn file_job_result_store_uses_flinks_file_names() {
        let dir = std::env::temp_dir().join(format!("flint-jrs-{}", uuid::Uuid::new_v4().simple()));
        let store = FileJobResultStore::new(dir.join("job-result-store").join("default"));
        exercise(&store);
        let mut names: Vec<String> = list_files(store.dir())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![format!("{}.json", JobId::from_u128(0xa)), format!("{}_DIRTY.json", JobId::from_u128(0xb))]
        );
        let text = fs::read_to_string(store.dir().join(&names[0])).unwrap();
        assert!(text.contains("\"version\":1") && text.contains("FINISHED"), "{text}");
        // A second store on the same directory (another dispatcher) sees the same results.
        let other = FileJobResultStore::new(store.dir());
        assert_eq!(other.dirty_results().unwrap().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
