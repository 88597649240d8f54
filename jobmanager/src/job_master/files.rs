//! A JobMaster's file work, off the control thread: checkpoint directories, `_metadata`
//! with its fsyncs, discards and output commits, in order per job on the blocking pool.

use std::path::{Path, PathBuf};

use flint_common::checkpoint_storage::{
    self as storage, CheckpointMetadata, CheckpointStorage, OperatorStateEntry, StateHandle,
};
use flint_common::ids::JobId;
use flint_common::messages::FileCommit;
use tokio::sync::oneshot;
use tracing::warn;

use super::core::DirectoryTarget;

pub(super) type FileWork = Box<dyn FnOnce() + Send>;

/// A JobMaster's file work (directories, `_metadata` with its fsyncs, discards, output
/// commits), run in order on the blocking pool so that the control thread, shared by the
/// Dispatcher and every JobMaster, never waits for a disk. One blocking task drains the
/// queue while it is not empty. The queue holds at most what the job's checkpoints in
/// flight (bounded by the coordinator) and its end need.
#[derive(Clone, Default)]
pub(super) struct FileQueue {
    inner: std::sync::Arc<std::sync::Mutex<(std::collections::VecDeque<FileWork>, bool)>>,
}

impl FileQueue {
    /// Queues `work`; its result arrives when it and everything queued before it ran.
    pub(super) fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, String>> {
        let (tx, rx) = oneshot::channel();
        self.push(Box::new(move || {
            let _ = tx.send(work());
        }));
        async move { rx.await.unwrap_or_else(|_| Err("the file operation did not complete".to_string())) }
    }

    pub(super) fn push(&self, work: FileWork) {
        let start = {
            let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            state.0.push_back(work);
            !std::mem::replace(&mut state.1, true)
        };
        if start {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || loop {
                let next = {
                    let mut state = inner.lock().unwrap_or_else(|e| e.into_inner());
                    let next = state.0.pop_front();
                    state.1 = next.is_some();
                    next
                };
                match next {
                    Some(work) => work(),
                    None => break,
                }
            });
        }
    }
}

/// Deletes a checkpoint directory (`location`) and/or state files (`handles`, absolute), in
/// order with the job's other file work.
pub(super) fn discard_files(files: &FileQueue, checkpoint_id: u64, location: Option<&str>, handles: &[String]) {
    let (location, handles) = (location.map(str::to_owned), handles.to_vec());
    files.push(Box::new(move || discard_files_now(checkpoint_id, location.as_deref(), &handles)));
}

pub(super) fn discard_files_now(checkpoint_id: u64, location: Option<&str>, handles: &[String]) {
    if let Some(location) = location {
        if let Err(e) = storage::discard(Path::new(location)) {
            warn!(checkpoint_id, location, error = %e, "could not discard checkpoint");
        }
    }
    for handle in handles.iter().filter(|h| !h.is_empty()) {
        match std::fs::remove_file(handle) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(checkpoint_id, handle, error = %e, "could not delete state file"),
        }
    }
}

/// Makes a checkpoint's or savepoint's directory.
pub(super) fn create_directory(job_id: JobId, checkpoint_id: u64, target: DirectoryTarget) -> Result<PathBuf, String> {
    match target {
        DirectoryTarget::Savepoint { target } => {
            CheckpointStorage::new(&target).and_then(|s| s.init_savepoint(job_id)).map_err(|e| e.to_string())
        }
        DirectoryTarget::Checkpoint { storage } => {
            storage.init_checkpoint(job_id, checkpoint_id).map_err(|e| e.to_string())
        }
        DirectoryTarget::None => Err("no checkpoint directory is configured".to_string()),
    }
}

/// Writes and syncs `_metadata` (the state files' sizes read now); the checkpoint's location.
pub(super) fn write_metadata(
    job_id: JobId,
    checkpoint_id: u64,
    timestamp_ms: u64,
    directory: &Path,
    is_savepoint: bool,
    entries: Vec<(OperatorStateEntry, Option<PathBuf>)>,
) -> Result<String, String> {
    let mut metadata = CheckpointMetadata::new(job_id, checkpoint_id, timestamp_ms, is_savepoint);
    for (mut entry, state) in entries {
        if let Some(path) = state {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            entry.handles.push(StateHandle { path: name, size });
        }
        metadata.operators.push(entry);
    }
    storage::write_metadata_in(directory, &metadata)
        .map(|pointer| pointer.location.to_string_lossy().into_owned())
        .map_err(|e| e.to_string())
}

/// Applies the commits; the errors of those that failed.
pub(super) fn commit_output(commits: &[FileCommit]) -> Vec<String> {
    commits.iter().filter_map(|c| c.apply().err().map(|e| e.to_string())).collect()
}

/// Deletes the retained checkpoints a job owns, then its directory when empty.
pub(super) fn discard_retained(locations: &[String], job_dir: Option<&Path>) {
    for location in locations {
        discard_files_now(0, Some(location), &[]);
    }
    if let Some(dir) = job_dir {
        let _ = std::fs::remove_dir(dir); // only when empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[actix_rt::test]
    async fn file_work_runs_in_order_off_the_calling_thread() {
        let files = FileQueue::default();
        let caller = std::thread::current().id();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut replies = Vec::new();
        for i in 0..50 {
            let order = order.clone();
            replies.push(files.run(move || {
                std::thread::sleep(Duration::from_micros(100));
                order.lock().unwrap().push(i);
                Ok(std::thread::current().id())
            }));
        }
        for reply in replies {
            assert_ne!(reply.await.unwrap(), caller);
        }
        assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>());
        let failed: Result<(), String> = files.run(|| Err("disk full".into())).await;
        assert_eq!(failed, Err("disk full".to_string()));
    }
}
