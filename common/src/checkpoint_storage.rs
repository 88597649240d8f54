//! Checkpoint and savepoint storage on a filesystem path.
//!
//! The on-disk layout follows Flink's `FsCheckpointStorageAccess`:
//!
//! ```text
//! <state.checkpoints.dir>/<job-id>/chk-<n>/
//!     <operator-id>-<subtask>-<uuid>     state files written by tasks
//!     _metadata                          written LAST: its presence marks the checkpoint complete
//! <state.savepoints.dir>/savepoint-<6 hex of job id>-<12 random hex>/
//!     (same contents as a checkpoint directory)
//! ```
//!
//! Every file is written to a hidden temporary name (`.<name>.<uuid>.tmp`), fsynced and
//! renamed into place. `_metadata` is written only after the state files, and the
//! directory is fsynced after its rename, which also makes the earlier renames durable.
//! A directory without `_metadata` is *torn* (a crash or an abort mid-checkpoint): readers
//! get [`StorageError::Incomplete`] and [`CheckpointStorage::latest_completed`] skips it.
//! [`discard`] removes `_metadata` first, so a half-deleted checkpoint is torn, never a
//! "complete" one with missing state.
//!
//! # The `_metadata` format
//!
//! Pretty-printed JSON of [`CheckpointMetadata`], readable with any text tool:
//!
//! ```json
//! {
//!   "version": 1,
//!   "job_id": "<32 hex>",
//!   "checkpoint_id": 7,
//!   "timestamp_ms": 1700000000000,
//!   "is_savepoint": false,
//!   "operators": [
//!     {
//!       "operator_id": "map-1",
//!       "subtask": 0,
//!       "parallelism": 2,
//!       "max_parallelism": 128,
//!       "handles": [{ "path": "map-1-0-<uuid>", "size": 42 }],
//!       "key_group_range": [0, 63]
//!     }
//!   ]
//! }
//! ```
//!
//! `handles[].path` is relative to the checkpoint directory (a single file name), so a
//! savepoint directory can be copied or moved elsewhere and still be read.
//! `key_group_range` is an inclusive `[start, end]` pair, or `null` for non-keyed state.
//! Readers reject a `version` newer than [`METADATA_VERSION`].
//!
//! Job-scoped operations are methods of [`CheckpointStorage`]; operations on an existing
//! location ([`read_metadata`], [`discard`], [`resolve_handle`], [`read_state_file`]) are
//! free functions, because a savepoint may live anywhere.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::ids::JobId;

/// The current `_metadata` format version.
pub const METADATA_VERSION: u32 = 1;

/// Name of the file that marks a checkpoint directory complete.
pub const METADATA_FILE: &str = "_metadata";

const CHECKPOINT_PREFIX: &str = "chk-";
const SAVEPOINT_PREFIX: &str = "savepoint-";

/// Errors of checkpoint storage. Every variant that concerns a file names its path.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unsupported checkpoint storage location '{value}': {reason}")]
    UnsupportedLocation { value: String, reason: String },
    #[error("{op} '{}': {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint at '{}' is incomplete: no {METADATA_FILE}", path.display())]
    Incomplete { path: PathBuf },
    #[error("corrupt checkpoint metadata '{}': {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid state file name '{name}': {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid metadata for '{}': {reason}", path.display())]
    InvalidMetadata { path: PathBuf, reason: String },
    #[error("refusing to discard '{}': not a checkpoint or savepoint directory", path.display())]
    NotACheckpoint { path: PathBuf },
}

impl StorageError {
    /// Whether retrying the same operation may succeed (I/O trouble), as opposed to a
    /// problem in the data or the configuration that a retry cannot fix.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Io { .. })
    }

    /// The path an error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            StorageError::Io { path, .. }
            | StorageError::Incomplete { path }
            | StorageError::Corrupt { path, .. }
            | StorageError::InvalidMetadata { path, .. }
            | StorageError::NotACheckpoint { path } => Some(path),
            StorageError::UnsupportedLocation { .. } | StorageError::InvalidName { .. } => None,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io { op, path: path.to_path_buf(), source }
}

/// A state file inside a checkpoint directory. `path` is relative to that directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateHandle {
    pub path: String,
    pub size: u64,
}

/// The state of one subtask of one operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateEntry {
    pub operator_id: String,
    pub subtask: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub handles: Vec<StateHandle>,
    /// Inclusive key-group range of keyed state; `None` for operator (non-keyed) state.
    pub key_group_range: Option<(u32, u32)>,
}

/// The contents of `_metadata`; see the module documentation for the JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    pub version: u32,
    pub job_id: JobId,
    pub checkpoint_id: u64,
    pub timestamp_ms: u64,
    pub is_savepoint: bool,
    pub operators: Vec<OperatorStateEntry>,
}

impl CheckpointMetadata {
    /// Metadata of the current version with no operator state yet.
    pub fn new(job_id: JobId, checkpoint_id: u64, timestamp_ms: u64, is_savepoint: bool) -> Self {
        Self { version: METADATA_VERSION, job_id, checkpoint_id, timestamp_ms, is_savepoint, operators: Vec::new() }
    }
}

/// Where a completed checkpoint or savepoint lives, returned once its `_metadata` is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedCheckpointPointer {
    /// The checkpoint (or savepoint) directory; what `read_metadata` and restores take.
    pub location: PathBuf,
    /// `<location>/_metadata`.
    pub metadata_file: PathBuf,
    pub checkpoint_id: u64,
    pub is_savepoint: bool,
}

/// One `chk-<n>` directory found under a job's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDirEntry {
    pub checkpoint_id: u64,
    pub path: PathBuf,
    /// `_metadata` exists and parses; otherwise the directory is torn (or corrupt).
    pub complete: bool,
}

/// Checkpoint or savepoint storage rooted at a local filesystem directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointStorage {
    base: PathBuf,
}

impl CheckpointStorage {
    /// Storage rooted at `base`, a `state.checkpoints.dir` / `state.savepoints.dir` value:
    /// `file:///abs/path`, `file:/abs/path`, `file://localhost/abs/path` or a plain path
    /// (a relative one is made absolute against the working directory). Nothing is created.
    pub fn new(base: &str) -> Result<Self, StorageError> {
        let unsupported =
            |reason: &str| StorageError::UnsupportedLocation { value: base.to_string(), reason: reason.to_string() };
        let trimmed = base.trim();
        if trimmed.is_empty() {
            return Err(unsupported("the path is empty"));
        }
        let path = match uri_scheme(trimmed) {
            None => PathBuf::from(trimmed),
            Some(scheme) if scheme.eq_ignore_ascii_case("file") => {
                let rest = &trimmed[scheme.len() + 1..];
                let path = match rest.strip_prefix("//") {
                    Some(authority_and_path) => {
                        let slash = authority_and_path.find('/').unwrap_or(authority_and_path.len());
                        let host = &authority_and_path[..slash];
                        if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
                            return Err(unsupported(&format!("remote host '{host}' in a file URI is not supported")));
                        }
                        &authority_and_path[slash..]
                    }
                    None => rest,
                };
                if !path.starts_with('/') {
                    return Err(unsupported("a file URI needs an absolute path"));
                }
                PathBuf::from(path)
            }
            Some(scheme) => {
                return Err(unsupported(&format!(
                    "scheme '{scheme}' is not supported (use file:///absolute/path or a plain path)"
                )))
            }
        };
        let base = std::path::absolute(&path).map_err(io_err("resolve", &path))?;
        Ok(Self { base })
    }

    /// The root directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `<base>/<job-id>`.
    pub fn job_dir(&self, job: JobId) -> PathBuf {
        self.base.join(job.to_string())
    }

    /// `<base>/<job-id>/chk-<n>`.
    pub fn checkpoint_dir(&self, job: JobId, checkpoint_id: u64) -> PathBuf {
        self.job_dir(job).join(format!("{CHECKPOINT_PREFIX}{checkpoint_id}"))
    }

    /// Creates (if needed) and returns the directory of checkpoint `checkpoint_id`.
    pub fn init_checkpoint(&self, job: JobId, checkpoint_id: u64) -> Result<PathBuf, StorageError> {
        let dir = self.checkpoint_dir(job, checkpoint_id);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        Ok(dir)
    }

    /// Writes one state file of checkpoint `checkpoint_id` (temp name, fsync, rename).
    /// `name` is a plain file name, typically from [`state_file_name`].
    pub fn write_state_file(
        &self,
        job: JobId,
        checkpoint_id: u64,
        name: &str,
        bytes: &[u8],
    ) -> Result<StateHandle, StorageError> {
        let dir = self.init_checkpoint(job, checkpoint_id)?;
        write_state_file_in(&dir, name, bytes)
    }

    /// Completes checkpoint `checkpoint_id` by writing its `_metadata` (see [`write_metadata_in`]).
    pub fn write_metadata(
        &self,
        job: JobId,
        checkpoint_id: u64,
        metadata: &CheckpointMetadata,
    ) -> Result<CompletedCheckpointPointer, StorageError> {
        let dir = self.checkpoint_dir(job, checkpoint_id);
        if metadata.job_id != job || metadata.checkpoint_id != checkpoint_id {
            return Err(StorageError::InvalidMetadata {
                path: dir,
                reason: format!(
                    "metadata is for job {} checkpoint {}, not job {job} checkpoint {checkpoint_id}",
                    metadata.job_id, metadata.checkpoint_id
                ),
            });
        }
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        write_metadata_in(&dir, metadata)
    }

    /// Creates a fresh savepoint directory `<base>/savepoint-<6 hex of job>-<12 random hex>`;
    /// fill it with [`write_state_file_in`] and complete it with [`write_metadata_in`].
    pub fn init_savepoint(&self, job: JobId) -> Result<PathBuf, StorageError> {
        fs::create_dir_all(&self.base).map_err(io_err("create directory", &self.base))?;
        loop {
            let random = uuid::Uuid::new_v4().simple().to_string();
            let job_hex = job.to_string();
            let dir = self.base.join(format!("{SAVEPOINT_PREFIX}{}-{}", &job_hex[..6], &random[..12]));
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create directory", &dir)(e)),
            }
        }
    }

    /// All `chk-<n>` directories of `job`, ascending by id, each marked complete or not.
    /// A missing job directory yields an empty list.
    pub fn list_checkpoints(&self, job: JobId) -> Result<Vec<CheckpointDirEntry>, StorageError> {
        let list = self
            .checkpoint_dirs(job)?
            .into_iter()
            .map(|(checkpoint_id, path)| {
                let complete = is_readable_checkpoint(&path, checkpoint_id);
                CheckpointDirEntry { checkpoint_id, path, complete }
            })
            .collect();
        Ok(list)
    }

    /// The highest complete checkpoint of `job` and its directory. Torn directories (no
    /// `_metadata`) are skipped silently, unreadable ones with a warning.
    pub fn latest_completed(&self, job: JobId) -> Result<Option<(u64, PathBuf)>, StorageError> {
        let dirs = self.checkpoint_dirs(job)?;
        Ok(dirs.into_iter().rev().find(|(id, path)| is_readable_checkpoint(path, *id)))
    }

    /// Deletes all but the newest `keep` complete checkpoints of `job`, and every torn
    /// directory older than the newest complete one. Torn directories newer than that are
    /// checkpoints in progress and are left alone. Returns the removed checkpoint ids.
    /// `keep == 0` removes every complete checkpoint.
    pub fn retain(&self, job: JobId, keep: usize) -> Result<Vec<u64>, StorageError> {
        let entries = self.list_checkpoints(job)?;
        let Some(newest_complete) = entries.iter().rev().find(|e| e.complete).map(|e| e.checkpoint_id) else {
            return Ok(Vec::new());
        };
        let mut kept = 0;
        let mut doomed = Vec::new();
        for entry in entries.iter().rev() {
            if entry.complete {
                if kept < keep {
                    kept += 1;
                } else {
                    doomed.push(entry);
                }
            } else if entry.checkpoint_id < newest_complete {
                doomed.push(entry);
            }
        }
        let mut removed = Vec::with_capacity(doomed.len());
        for entry in doomed.into_iter().rev() {
            debug!(%job, checkpoint_id = entry.checkpoint_id, complete = entry.complete, "discarding checkpoint");
            discard(&entry.path)?;
            removed.push(entry.checkpoint_id);
        }
        Ok(removed)
    }

    /// `(id, path)` of every `chk-<n>` directory of `job`, ascending by id.
    fn checkpoint_dirs(&self, job: JobId) -> Result<Vec<(u64, PathBuf)>, StorageError> {
        let job_dir = self.job_dir(job);
        let read = match fs::read_dir(&job_dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list directory", &job_dir)(e)),
        };
        let mut dirs = Vec::new();
        for entry in read {
            let entry = entry.map_err(io_err("list directory", &job_dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_prefix(CHECKPOINT_PREFIX)).and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let path = entry.path();
            if path.is_dir() {
                dirs.push((id, path));
            }
        }
        dirs.sort_unstable_by_key(|(id, _)| *id);
        Ok(dirs)
    }
}

/// Whether `dir` holds a readable `_metadata` for checkpoint `checkpoint_id`.
fn is_readable_checkpoint(dir: &Path, checkpoint_id: u64) -> bool {
    match read_metadata(dir) {
        Ok(meta) if meta.checkpoint_id == checkpoint_id => true,
        Ok(meta) => {
            warn!(path = %dir.display(), found = meta.checkpoint_id, "ignoring checkpoint with mismatched id");
            false
        }
        Err(StorageError::Incomplete { .. }) => {
            debug!(path = %dir.display(), "ignoring torn checkpoint");
            false
        }
        Err(error) => {
            warn!(path = %dir.display(), %error, "ignoring unreadable checkpoint");
            false
        }
    }
}

/// A fresh state file name, `<operator-id>-<subtask>-<uuid>`.
pub fn state_file_name(operator_id: &str, subtask: u32) -> String {
    format!("{operator_id}-{subtask}-{}", uuid::Uuid::new_v4().simple())
}

/// Checks that `name` is a plain file name that cannot escape its directory or collide
/// with `_metadata` or the hidden temporary files.
fn validate_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.starts_with('.') {
        return Err("must not start with '.'".into());
    }
    if name == METADATA_FILE {
        return Err(format!("'{METADATA_FILE}' is reserved"));
    }
    if name.contains(['/', '\\', '\0']) {
        return Err("must be a plain file name".into());
    }
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) => Ok(()),
        _ => Err("must be a plain file name".into()),
    }
}

/// Writes `bytes` to `<dir>/<name>` durably: a hidden temp file, fsync, rename. The
/// rename is made durable by the directory fsync in [`write_metadata_in`].
pub fn write_state_file_in(dir: &Path, name: &str, bytes: &[u8]) -> Result<StateHandle, StorageError> {
    validate_file_name(name).map_err(|reason| StorageError::InvalidName { name: name.to_string(), reason })?;
    write_atomically(dir, name, bytes)?;
    Ok(StateHandle { path: name.to_string(), size: bytes.len() as u64 })
}

/// Completes the checkpoint or savepoint in `dir`: checks every handle names an existing
/// file of the recorded size, then writes `_metadata` (temp file, fsync, rename) and
/// fsyncs the directory. Call it only after all state files are written.
pub fn write_metadata_in(
    dir: &Path,
    metadata: &CheckpointMetadata,
) -> Result<CompletedCheckpointPointer, StorageError> {
    let invalid = |reason: String| StorageError::InvalidMetadata { path: dir.to_path_buf(), reason };
    if metadata.version != METADATA_VERSION {
        return Err(invalid(format!("version {} is not the current version {METADATA_VERSION}", metadata.version)));
    }
    for entry in &metadata.operators {
        for handle in &entry.handles {
            validate_file_name(&handle.path).map_err(|reason| {
                invalid(format!("operator {} handle '{}': {reason}", entry.operator_id, handle.path))
            })?;
            let file = dir.join(&handle.path);
            let actual = fs::metadata(&file).map_err(io_err("stat state file", &file))?.len();
            if actual != handle.size {
                return Err(invalid(format!(
                    "state file '{}' has {actual} bytes, handle says {}",
                    file.display(),
                    handle.size
                )));
            }
        }
    }
    let json = serde_json::to_vec_pretty(metadata).map_err(|e| invalid(format!("cannot encode: {e}")))?;
    write_atomically(dir, METADATA_FILE, &json)?;
    sync_dir(dir)?;
    Ok(CompletedCheckpointPointer {
        location: dir.to_path_buf(),
        metadata_file: dir.join(METADATA_FILE),
        checkpoint_id: metadata.checkpoint_id,
        is_savepoint: metadata.is_savepoint,
    })
}

/// Writes `<dir>/.<name>.<uuid>.tmp`, fsyncs it and renames it to `<dir>/<name>`.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let target = dir.join(name);
    let result = (|| {
        let mut file =
            OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io_err("create file", &tmp))?;
        file.write_all(bytes).map_err(io_err("write file", &tmp))?;
        file.sync_all().map_err(io_err("sync file", &tmp))?;
        fs::rename(&tmp, &target).map_err(io_err("rename file", &target))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the entries of `dir` (creations, renames, removals) durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    #[cfg(unix)]
    {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("sync directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The checkpoint directory of `location`, which is that directory or its `_metadata`.
fn checkpoint_dir_of(location: &Path) -> &Path {
    match (location.file_name(), location.parent()) {
        (Some(name), Some(parent)) if name == METADATA_FILE => parent,
        _ => location,
    }
}

/// The largest `_metadata` file read (it holds handles, never state).
pub const MAX_METADATA_BYTES: u64 = 64 * 1024 * 1024;

/// Reads the `_metadata` of a checkpoint or savepoint; `location` is its directory or the
/// `_metadata` file itself.
pub fn read_metadata(location: &Path) -> Result<CheckpointMetadata, StorageError> {
    let dir = checkpoint_dir_of(location);
    let file = dir.join(METADATA_FILE);
    // A `_metadata` lists handles only; one larger than this is not Flint's (or is hostile)
    // and is refused before it is read.
    match fs::metadata(&file) {
        Ok(m) if m.len() > MAX_METADATA_BYTES => {
            return Err(StorageError::Corrupt {
                path: file.clone(),
                reason: format!("{} bytes exceed the {MAX_METADATA_BYTES}-byte limit of a metadata file", m.len()),
            })
        }
        _ => {}
    }
    let bytes = match fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StorageError::Incomplete { path: dir.to_path_buf() });
        }
        Err(e) => return Err(io_err("read", &file)(e)),
    };
    let corrupt = |reason: String| StorageError::Corrupt { path: file.clone(), reason };
    let meta: CheckpointMetadata = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if meta.version > METADATA_VERSION {
        return Err(corrupt(format!("version {} is newer than supported {METADATA_VERSION}", meta.version)));
    }
    for entry in &meta.operators {
        for handle in &entry.handles {
            validate_file_name(&handle.path).map_err(|reason| {
                corrupt(format!("operator {} handle '{}': {reason}", entry.operator_id, handle.path))
            })?;
        }
    }
    Ok(meta)
}

/// Removes a checkpoint or savepoint directory (`location` may also be its `_metadata`).
/// `_metadata` goes first, so an interrupted discard leaves a torn directory. Removing
/// something already gone succeeds. Directories not named `chk-*` / `savepoint-*` are refused.
pub fn discard(location: &Path) -> Result<(), StorageError> {
    let dir = checkpoint_dir_of(location);
    let looks_right = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(CHECKPOINT_PREFIX) || n.starts_with(SAVEPOINT_PREFIX));
    if !looks_right {
        return Err(StorageError::NotACheckpoint { path: dir.to_path_buf() });
    }
    let metadata = dir.join(METADATA_FILE);
    match fs::remove_file(&metadata) {
        Ok(()) => sync_dir(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &metadata)(e)),
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove directory", dir)(e)),
    }
}

/// The absolute path of `handle` in `checkpoint_dir` (handles are relative file names,
/// validated when metadata is read or written).
pub fn resolve_handle(checkpoint_dir: &Path, handle: &StateHandle) -> PathBuf {
    checkpoint_dir_of(checkpoint_dir).join(&handle.path)
}

/// Reads the state file of `handle`; a size other than the recorded one is `Corrupt`.
pub fn read_state_file(checkpoint_dir: &Path, handle: &StateHandle) -> Result<Vec<u8>, StorageError> {
    let file = resolve_handle(checkpoint_dir, handle);
    let bytes = fs::read(&file).map_err(io_err("read state file", &file))?;
    if bytes.len() as u64 != handle.size {
        return Err(StorageError::Corrupt {
            path: file,
            reason: format!("{} bytes, handle says {}", bytes.len(), handle.size),
        });
    }
    Ok(bytes)
}

/// The scheme of a URI (`file` in `file:///x`); `None` for a plain path. A one-letter
/// "scheme" is a Windows drive (`C:\x`), not a scheme.
fn uri_scheme(value: &str) -> Option<&str> {
    let colon = value.find(':')?;
    let scheme = &value[..colon];
    let mut chars = scheme.chars();
    let valid = scheme.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "flint-ckpt-{tag}-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn storage(&self) -> CheckpointStorage {
            CheckpointStorage::new(self.0.to_str().unwrap()).unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Writes two subtasks' state and returns the metadata that describes them.
    fn write_states(storage: &CheckpointStorage, job: JobId, id: u64) -> CheckpointMetadata {
        let mut meta = CheckpointMetadata::new(job, id, 1_700_000_000_000 + id, false);
        for subtask in 0..2u32 {
            let name = state_file_name("map-1", subtask);
            let bytes = format!("state of subtask {subtask} at {id}");
            let handle = storage.write_state_file(job, id, &name, bytes.as_bytes()).unwrap();
            meta.operators.push(OperatorStateEntry {
                operator_id: "map-1".into(),
                subtask,
                parallelism: 2,
                max_parallelism: 128,
                handles: vec![handle],
                key_group_range: Some((subtask * 64, subtask * 64 + 63)),
            });
        }
        meta
    }

    fn complete(storage: &CheckpointStorage, job: JobId, id: u64) -> CompletedCheckpointPointer {
        let meta = write_states(storage, job, id);
        storage.write_metadata(job, id, &meta).unwrap()
    }

    #[test]
    fn accepts_file_uris_and_plain_paths() {
        for value in
            ["file:///tmp/flint/ckpt", "file:/tmp/flint/ckpt", "file://localhost/tmp/flint/ckpt", "/tmp/flint/ckpt"]
        {
            assert_eq!(CheckpointStorage::new(value).unwrap().base(), Path::new("/tmp/flint/ckpt"), "{value}");
        }
        let relative = CheckpointStorage::new("ckpt/dir").unwrap();
        assert!(relative.base().is_absolute());
        assert!(relative.base().ends_with("ckpt/dir"));
    }

    #[test]
    fn rejects_other_schemes_naming_the_value() {
        for value in ["hdfs://namenode:8020/flink/ckpt", "s3://bucket/ckpt", "file://otherhost/x", "file:relative", ""]
        {
            let err = CheckpointStorage::new(value).unwrap_err();
            assert!(matches!(err, StorageError::UnsupportedLocation { .. }), "{value}: {err}");
            assert!(err.to_string().contains(&format!("'{value}'")), "{err}");
            assert!(!err.is_retryable());
        }
        let err = CheckpointStorage::new("s3://bucket/ckpt").unwrap_err();
        assert!(err.to_string().contains("scheme 's3'"), "{err}");
    }

    #[test]
    fn hostile_metadata_files_are_refused_without_reading_them_whole() {
        let tmp = TempDir::new("hostile-metadata");
        let dir = tmp.0.join("savepoint-x");
        fs::create_dir_all(&dir).unwrap();
        // Far too large: refused from its size (a sparse file: nothing is written).
        let file = fs::File::create(dir.join(METADATA_FILE)).unwrap();
        file.set_len(MAX_METADATA_BYTES + 1).unwrap();
        let err = read_metadata(&dir).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }) && err.to_string().contains("limit"), "{err}");
        // Deeply nested, truncated, or naming files outside the checkpoint: corrupt.
        for text in ["[".repeat(100_000), "{\"version\": 1, \"operators\": [".to_owned()] {
            fs::write(dir.join(METADATA_FILE), text).unwrap();
            assert!(matches!(read_metadata(&dir), Err(StorageError::Corrupt { .. })));
        }
    }

    #[test]
    fn write_read_round_trip() {
        let tmp = TempDir::new("roundtrip");
        let storage = tmp.storage();
        let job = JobId::generate();
        let meta = write_states(&storage, job, 3);
        let pointer = storage.write_metadata(job, 3, &meta).unwrap();

        let dir = storage.checkpoint_dir(job, 3);
        assert_eq!(dir, tmp.0.join(job.to_string()).join("chk-3"));
        assert_eq!(pointer.location, dir);
        assert_eq!(pointer.metadata_file, dir.join("_metadata"));
        assert_eq!(pointer.checkpoint_id, 3);

        // Both the directory and the `_metadata` file are accepted as locations.
        let read = read_metadata(&pointer.location).unwrap();
        assert_eq!(read, meta);
        assert_eq!(read_metadata(&pointer.metadata_file).unwrap(), meta);

        for entry in &read.operators {
            let handle = &entry.handles[0];
            assert!(handle.path.starts_with(&format!("map-1-{}-", entry.subtask)));
            assert_eq!(resolve_handle(&dir, handle), dir.join(&handle.path));
            let bytes = read_state_file(&dir, handle).unwrap();
            assert_eq!(bytes, format!("state of subtask {} at 3", entry.subtask).as_bytes());
        }

        // The format is readable JSON; no temporary files are left behind.
        let json: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("_metadata")).unwrap()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["job_id"], job.to_string());
        assert_eq!(json["operators"][1]["key_group_range"], serde_json::json!([64, 127]));
        let names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn state_without_metadata_is_incomplete_and_ignored() {
        let tmp = TempDir::new("torn");
        let storage = tmp.storage();
        let job = JobId::generate();
        assert_eq!(storage.latest_completed(job).unwrap(), None);

        complete(&storage, job, 1);
        // A crash after the state files but before `_metadata`.
        let _ = write_states(&storage, job, 2);
        let torn = storage.checkpoint_dir(job, 2);
        let err = read_metadata(&torn).unwrap_err();
        assert!(matches!(&err, StorageError::Incomplete { path } if *path == torn), "{err}");
        assert!(err.to_string().contains(&torn.display().to_string()), "{err}");

        assert_eq!(storage.latest_completed(job).unwrap(), Some((1, storage.checkpoint_dir(job, 1))));
        let listed: Vec<(u64, bool)> =
            storage.list_checkpoints(job).unwrap().iter().map(|e| (e.checkpoint_id, e.complete)).collect();
        assert_eq!(listed, vec![(1, true), (2, false)]);

        // Unrelated entries and unparsable checkpoints are ignored too.
        fs::create_dir_all(storage.job_dir(job).join("shared")).unwrap();
        fs::create_dir_all(storage.checkpoint_dir(job, 5)).unwrap();
        fs::write(storage.checkpoint_dir(job, 5).join("_metadata"), b"{not json").unwrap();
        assert_eq!(storage.latest_completed(job).unwrap().map(|(id, _)| id), Some(1));

        // Completing it later makes it the latest.
        storage.write_metadata(job, 10, &write_states(&storage, job, 10)).unwrap();
        assert_eq!(storage.latest_completed(job).unwrap().map(|(id, _)| id), Some(10));
    }

    #[test]
    fn metadata_refuses_missing_or_mismatched_state() {
        let tmp = TempDir::new("validate");
        let storage = tmp.storage();
        let job = JobId::generate();
        let mut meta = write_states(&storage, job, 4);

        let err = storage.write_metadata(job, 5, &meta).unwrap_err();
        assert!(matches!(err, StorageError::InvalidMetadata { .. }), "{err}");

        meta.operators[0].handles[0].size += 1;
        let err = storage.write_metadata(job, 4, &meta).unwrap_err();
        assert!(matches!(err, StorageError::InvalidMetadata { .. }), "{err}");
        meta.operators[0].handles[0].size -= 1;

        meta.operators[1].handles.push(StateHandle { path: "../escape".into(), size: 1 });
        let err = storage.write_metadata(job, 4, &meta).unwrap_err();
        assert!(matches!(err, StorageError::InvalidMetadata { .. }), "{err}");

        meta.operators[1].handles[1] = StateHandle { path: "missing".into(), size: 1 };
        let err = storage.write_metadata(job, 4, &meta).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(err.is_retryable());

        // Nothing was completed by the failed attempts.
        assert!(matches!(read_metadata(&storage.checkpoint_dir(job, 4)), Err(StorageError::Incomplete { .. })));

        for bad in ["", ".hidden", "_metadata", "a/b", ".."] {
            let err = storage.write_state_file(job, 4, bad, b"x").unwrap_err();
            assert!(matches!(err, StorageError::InvalidName { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn retention_keeps_newest_and_cleans_older_torn_only() {
        let tmp = TempDir::new("retain");
        let storage = tmp.storage();
        let job = JobId::generate();
        for id in [1, 3, 4, 6] {
            complete(&storage, job, id);
        }
        let _ = write_states(&storage, job, 2); // torn, older than the newest complete
        let _ = write_states(&storage, job, 5); // torn, older than the newest complete
        let _ = write_states(&storage, job, 7); // in progress, newer

        let removed = storage.retain(job, 2).unwrap();
        assert_eq!(removed, vec![1, 2, 3, 5]);
        let left: Vec<(u64, bool)> =
            storage.list_checkpoints(job).unwrap().iter().map(|e| (e.checkpoint_id, e.complete)).collect();
        assert_eq!(left, vec![(4, true), (6, true), (7, false)]);

        // Idempotent.
        assert_eq!(storage.retain(job, 2).unwrap(), Vec::<u64>::new());
        // No complete checkpoint: nothing to judge torn ones against, nothing is removed.
        let other = JobId::generate();
        let _ = write_states(&storage, other, 1);
        assert_eq!(storage.retain(other, 1).unwrap(), Vec::<u64>::new());
        assert!(storage.checkpoint_dir(other, 1).exists());
    }

    #[test]
    fn discard_is_idempotent_and_guarded() {
        let tmp = TempDir::new("discard");
        let storage = tmp.storage();
        let job = JobId::generate();
        let pointer = complete(&storage, job, 1);
        discard(&pointer.metadata_file).unwrap();
        assert!(!pointer.location.exists());
        discard(&pointer.location).unwrap();

        let err = discard(&tmp.0).unwrap_err();
        assert!(matches!(err, StorageError::NotACheckpoint { .. }), "{err}");
        assert!(tmp.0.exists());
    }

    #[test]
    fn moved_savepoint_still_reads() {
        let tmp = TempDir::new("savepoint");
        let storage = tmp.storage();
        let job = JobId::generate();
        let dir = storage.init_savepoint(job).unwrap();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let job_hex = job.to_string();
        let suffix = name.strip_prefix(&format!("savepoint-{}-", &job_hex[..6])).unwrap();
        assert_eq!(suffix.len(), 12);
        assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()));

        let mut meta = CheckpointMetadata::new(job, 9, 1_700_000_000_000, true);
        let handle = write_state_file_in(&dir, &state_file_name("src", 0), b"offsets").unwrap();
        meta.operators.push(OperatorStateEntry {
            operator_id: "src".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            handles: vec![handle],
            key_group_range: None,
        });
        let pointer = write_metadata_in(&dir, &meta).unwrap();
        assert!(pointer.is_savepoint);

        // Copy the savepoint somewhere else and drop the original.
        let elsewhere = TempDir::new("savepoint-moved");
        let moved = elsewhere.0.join(&name);
        fs::create_dir_all(&moved).unwrap();
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), moved.join(entry.file_name())).unwrap();
        }
        discard(&dir).unwrap();
        assert!(!dir.exists());

        let read = read_metadata(&moved).unwrap();
        assert_eq!(read, meta);
        assert_eq!(read_state_file(&moved, &read.operators[0].handles[0]).unwrap(), b"offsets");
    }

    #[test]
    fn corrupt_metadata_names_the_path() {
        let tmp = TempDir::new("corrupt");
        let storage = tmp.storage();
        let job = JobId::generate();
        let dir = storage.init_checkpoint(job, 1).unwrap();
        let file = dir.join("_metadata");

        let cases: [&[u8]; 3] = [
            b"\x00garbage",
            br#"{"version": 99, "job_id": "00000000000000000000000000000001", "checkpoint_id": 1,
                "timestamp_ms": 0, "is_savepoint": false, "operators": []}"#,
            br#"{"version": 1, "job_id": "00000000000000000000000000000001", "checkpoint_id": 1,
                "timestamp_ms": 0, "is_savepoint": false, "operators": [{"operator_id": "x", "subtask": 0,
                "parallelism": 1, "max_parallelism": 1, "key_group_range": null,
                "handles": [{"path": "/etc/passwd", "size": 1}]}]}"#,
        ];
        for bytes in cases {
            fs::write(&file, bytes).unwrap();
            let err = read_metadata(&dir).unwrap_err();
            assert!(matches!(&err, StorageError::Corrupt { path, .. } if *path == file), "{err}");
            assert!(err.to_string().contains(&file.display().to_string()), "{err}");
            assert_eq!(err.path(), Some(file.as_path()));
            assert!(!err.is_retryable());
        }

        // A state file of the wrong size is corrupt too, naming the file.
        fs::write(dir.join("s"), b"abc").unwrap();
        let err = read_state_file(&dir, &StateHandle { path: "s".into(), size: 4 }).unwrap_err();
        assert!(matches!(&err, StorageError::Corrupt { path, .. } if *path == dir.join("s")), "{err}");
        let err = read_state_file(&dir, &StateHandle { path: "absent".into(), size: 4 }).unwrap_err();
        assert!(err.to_string().contains(&dir.join("absent").display().to_string()), "{err}");
    }
}
