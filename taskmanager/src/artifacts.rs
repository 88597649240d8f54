//! The job artifacts of this taskmanager's tasks: the files of a job package that its
//! `source.file` operators read, shipped inline in the TaskDeploymentDescriptor.
//!
//! ```text
//! <blob.storage.directory>/flint-artifacts-<uuid>/     (fresh per process, removed at shutdown)
//! └── job_<job id>/data/lines.txt                      (removed when the job's last slot here is freed)
//! ```
//!
//! [`ArtifactStore::materialize`] checks each artifact (a safe relative name, bytes that
//! hash to the key), writes it once per taskmanager (a temporary file renamed into place,
//! so concurrent subtasks never read a half-written file) and points the operators'
//! package-relative paths at the job's directory. Artifacts the JobMaster offloaded
//! (larger together than `blob.offload.minsize`) come from the BlobServer through the
//! [`BlobCache`] (downloaded once per taskmanager) and are linked into the job's directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use flint_common::blob::{write_checked, BlobError, BlobSettings};
use flint_common::config::{options, Configuration};
use flint_common::ids::JobId;
use flint_common::job::package::{is_package_relative, safe_relative, sha256_hex};
use flint_common::messages::TaskDeploymentDescriptor;
use tracing::{debug, warn};

use crate::blob_cache::BlobCache;

/// Why a task's artifacts could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A name that would leave the job's directory: the deployment is bad, not the disk.
    #[error("the artifact name '{name}' is not a plain relative path")]
    UnsafeName { name: String },
    /// Bytes that do not hash to their key: corrupted on the way, a redeployment may help.
    #[error("the artifact '{name}' does not match its sha256 {sha256}")]
    Corrupt { name: String, sha256: String },
    #[error("could not write the artifact '{name}': {source}")]
    Io { name: String, source: std::io::Error },
    #[error("could not fetch the artifact '{name}': {source}")]
    Blob { name: String, source: flint_common::blob::BlobError },
    #[error("the artifact '{name}' was offloaded but the deployment names no blob server")]
    NoBlobServer { name: String },
    #[error("the offloaded operators do not decode: {reason}")]
    Operators { reason: String },
}

impl ArtifactError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ArtifactError::UnsafeName { .. } | ArtifactError::NoBlobServer { .. } | ArtifactError::Operators { .. } => {
                false
            }
            ArtifactError::Blob { source, .. } => source.is_retryable(),
            ArtifactError::Corrupt { .. } | ArtifactError::Io { .. } => true,
        }
    }
}

/// The largest offloaded operator chain read back (job files are at most 4 MiB).
const MAX_OPERATORS_BLOB: u64 = 64 << 20;

/// This process's artifact directory.
#[derive(Debug)]
pub struct ArtifactStore {
    root: PathBuf,
    /// Offloaded artifacts (absent in tests without a BlobServer).
    cache: Option<Arc<BlobCache>>,
}

impl ArtifactStore {
    /// Fresh directories under `blob.storage.directory` (default: the system's temp
    /// directory) for the artifacts and the blob cache.
    /// Blob downloads use `tls` (the internal TLS) when it is set.
    pub fn open(
        config: &Configuration,
        tls: Option<flint_common::tls::TlsContext>,
    ) -> Result<Self, crate::TaskManagerError> {
        let base = BlobSettings::storage_base(config);
        let id = uuid::Uuid::new_v4().simple();
        let cleanup = Duration::from_secs(config.get(&options::BLOB_SERVICE_CLEANUP_INTERVAL)?);
        let settings = BlobSettings { tls, ..BlobSettings::from_config(config)? };
        let cache = BlobCache::new(base.join(format!("blobCache-{id}")), settings, cleanup)?;
        cache.start_cleanup()?;
        let mut store = Self::at(base.join(format!("flint-artifacts-{id}")))?;
        store.cache = Some(cache);
        Ok(store)
    }

    /// The store in `root` (created), without a blob cache.
    pub fn at(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        Ok(Self { root, cache: None })
    }

    pub fn cache(&self) -> Option<&Arc<BlobCache>> {
        self.cache.as_ref()
    }

    pub fn job_dir(&self, job_id: JobId) -> PathBuf {
        self.root.join(format!("job_{job_id}"))
    }

    /// Writes the task's artifacts (unless present) and points its operators at them; the
    /// descriptor keeps no artifact bytes afterwards.
    pub fn materialize(&self, tdd: &mut TaskDeploymentDescriptor) -> Result<(), ArtifactError> {
        if let Some(hash) = tdd.operators_blob.take() {
            self.fetch_operators(tdd, &hash)?;
        }
        if tdd.artifacts.is_empty() {
            return Ok(());
        }
        let dir = self.job_dir(tdd.job_id);
        if let Some(cache) = &self.cache {
            if tdd.artifacts.values().any(|a| a.offloaded) {
                cache.register_job(tdd.job_id);
            }
        }
        for (name, artifact) in std::mem::take(&mut tdd.artifacts) {
            if safe_relative(&name).as_deref() != Some(name.as_str()) {
                return Err(ArtifactError::UnsafeName { name });
            }
            let dest = dir.join(&name);
            if artifact.offloaded {
                self.link_offloaded(tdd, &name, &artifact, &dest)?;
                continue;
            }
            if present(&dest, &artifact.sha256) {
                continue;
            }
            let corrupt = || ArtifactError::Corrupt { name: name.clone(), sha256: artifact.sha256.clone() };
            let key = artifact.blob_key().ok_or_else(corrupt)?;
            let size = artifact.bytes.len() as u64;
            match write_checked(&dest, &mut artifact.bytes.as_slice(), size, key.sha256) {
                Ok(()) => {}
                Err(BlobError::Corrupt(_)) => return Err(corrupt()),
                Err(e) => return Err(ArtifactError::Blob { name: name.clone(), source: e }),
            }
            debug!(job_id = %tdd.job_id, artifact = %name, bytes = artifact.bytes.len(), "artifact written");
        }
        for op in &mut tdd.vertex.operators {
            for path in op.kind.artifact_paths_mut() {
                if is_package_relative(path) {
                    *path = dir.join(path.as_str()).to_string_lossy().into_owned();
                }
            }
        }
        Ok(())
    }

    /// Reads the vertex's operators from the BlobServer (through the cache).
    fn fetch_operators(&self, tdd: &mut TaskDeploymentDescriptor, hash: &str) -> Result<(), ArtifactError> {
        let name = "operators";
        let bad = |reason: String| ArtifactError::Operators { reason };
        let key: flint_common::blob::BlobKey =
            format!("p-{hash}").parse().map_err(|_| bad(format!("'{hash}' is not a sha256")))?;
        let server = tdd.blob_server.as_deref().ok_or_else(|| ArtifactError::NoBlobServer { name: name.into() })?;
        let cache = self.cache.as_ref().ok_or_else(|| ArtifactError::NoBlobServer { name: name.into() })?;
        cache.register_job(tdd.job_id);
        let path =
            cache.get(server, tdd.job_id, key).map_err(|source| ArtifactError::Blob { name: name.into(), source })?;
        // The blob hashed to its key; the bound keeps a wrong key from costing memory.
        let len = std::fs::metadata(&path).map_err(|source| ArtifactError::Io { name: name.into(), source })?.len();
        if len > MAX_OPERATORS_BLOB {
            return Err(bad(format!("{len} bytes (at most {MAX_OPERATORS_BLOB})")));
        }
        let bytes = std::fs::read(&path).map_err(|source| ArtifactError::Io { name: name.into(), source })?;
        tdd.vertex.operators = rmp_serde::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        Ok(())
    }

    /// Puts an offloaded artifact at `dest`: the cached blob, hard-linked (copied across
    /// file systems).
    fn link_offloaded(
        &self,
        tdd: &TaskDeploymentDescriptor,
        name: &str,
        artifact: &flint_common::job::package::Artifact,
        dest: &Path,
    ) -> Result<(), ArtifactError> {
        if dest.exists() {
            return Ok(());
        }
        let server =
            tdd.blob_server.as_deref().ok_or_else(|| ArtifactError::NoBlobServer { name: name.to_string() })?;
        let key = artifact.blob_key().ok_or_else(|| ArtifactError::UnsafeName { name: name.to_string() })?;
        let cache = self.cache.as_ref().ok_or_else(|| ArtifactError::NoBlobServer { name: name.to_string() })?;
        let cached = cache
            .get(server, tdd.job_id, key)
            .map_err(|source| ArtifactError::Blob { name: name.to_string(), source })?;
        let io = |source| ArtifactError::Io { name: name.to_string(), source };
        let parent = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io)?;
        let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let placed = std::fs::hard_link(&cached, &tmp).or_else(|_| std::fs::copy(&cached, &tmp).map(|_| ()));
        match placed.and_then(|()| std::fs::rename(&tmp, dest)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(io(e))
            }
        }
    }

    /// Removes a job's artifacts (its last slot here was freed); its cached blobs go after
    /// `blob.service.cleanup.interval`.
    pub fn release_job(&self, job_id: JobId) {
        if let Some(cache) = &self.cache {
            cache.release_job(job_id);
        }
        let dir = self.job_dir(job_id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => debug!(%job_id, "job artifacts removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(%job_id, error = %e, "could not remove the job's artifacts"),
        }
    }

    /// Removes the whole directory and the cache (at shutdown).
    pub fn close(&self) {
        if let Some(cache) = &self.cache {
            cache.close();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %e, "could not remove the artifact directory");
            }
        }
    }
}

/// Whether `path` holds bytes with this hash already.
fn present(path: &Path, sha256: &str) -> bool {
    std::fs::read(path).is_ok_and(|bytes| sha256_hex(&bytes) == sha256)
}

#[cfg(test)]
mod tests {
    use flint_common::job::OperatorKind;
    use std::collections::BTreeMap;

    use flint_common::job::package::Artifact;

    use super::*;

    fn tdd(artifacts: &[(&str, &[u8])], path: &str) -> TaskDeploymentDescriptor {
        let text = format!(
            "flint: 1\nname: t\noperators:\n  - {{id: src, op: source.file, path: '{path}'}}\n  - {{id: out, op: sink.print, inputs: [src]}}\n"
        );
        let mut graph = flint_common::job::compile_job(&text, 1).unwrap();
        graph.artifacts = artifacts.iter().map(|(n, b)| (n.to_string(), Artifact::new(b.to_vec()))).collect();
        let vertex = graph.vertices[0].clone();
        let artifacts: BTreeMap<String, Artifact> = graph.artifacts_of(&vertex);
        TaskDeploymentDescriptor {
            job_id: JobId::generate(),
            job_name: "t".into(),
            attempt_id: flint_common::ids::ExecutionAttemptId::generate(),
            attempt_number: 0,
            subtask: 0,
            vertex,
            max_parallelism: 128,
            job_config: BTreeMap::new(),
            allocation_id: flint_common::ids::AllocationId::generate(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            job_master: "flint://127.0.0.1:1/jobmaster".parse().unwrap(),
            job_master_session: flint_common::ids::LeaderSessionId::generate(),
            restore: None,
            artifacts,
            blob_server: None,
            operators_blob: None,
            final_checkpoint: false,
        }
    }

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("flint-artifact-test-{}", uuid::Uuid::new_v4().simple()))
    }

    fn source_path(tdd: &TaskDeploymentDescriptor) -> String {
        match &tdd.vertex.operators[0].kind {
            OperatorKind::FileSource { path, .. } => path.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn artifacts_are_written_once_and_the_paths_point_at_them() {
        let root = scratch();
        let store = ArtifactStore::at(root.clone()).unwrap();
        let mut a = tdd(&[("data/a.txt", b"one\n"), ("data/b.txt", b"two\n"), ("x.txt", b"no")], "data");
        let job = a.job_id;
        assert_eq!(a.artifacts.len(), 2);
        store.materialize(&mut a).unwrap();
        assert!(a.artifacts.is_empty());
        let dir = store.job_dir(job);
        assert_eq!(source_path(&a), dir.join("data").to_string_lossy());
        assert_eq!(std::fs::read(dir.join("data/a.txt")).unwrap(), b"one\n");
        assert!(!dir.join("x.txt").exists());
        // A second subtask of the job finds them in place.
        let mut b = tdd(&[("data/a.txt", b"one\n")], "data/a.txt");
        b.job_id = job;
        store.materialize(&mut b).unwrap();
        assert_eq!(source_path(&b), dir.join("data/a.txt").to_string_lossy());
        store.release_job(job);
        assert!(!dir.exists());
        store.close();
        assert!(!root.exists());
    }

    #[test]
    fn corrupt_or_escaping_artifacts_are_refused() {
        let root = scratch();
        let store = ArtifactStore::at(root.join("store")).unwrap();
        let mut bad = tdd(&[("data/a.txt", b"one\n")], "data/a.txt");
        bad.artifacts.get_mut("data/a.txt").unwrap().bytes[0] = b'X';
        let err = store.materialize(&mut bad).unwrap_err();
        assert!(matches!(err, ArtifactError::Corrupt { .. }) && err.is_retryable(), "{err}");
        let mut escaping = tdd(&[("data/a.txt", b"one\n")], "data/a.txt");
        let artifact = escaping.artifacts.remove("data/a.txt").unwrap();
        escaping.artifacts.insert("../../evil".into(), artifact);
        let err = store.materialize(&mut escaping).unwrap_err();
        assert!(matches!(err, ArtifactError::UnsafeName { .. }) && !err.is_retryable(), "{err}");
        assert!(!root.join("evil").exists());
        std::fs::remove_dir_all(root).unwrap();
    }
}
