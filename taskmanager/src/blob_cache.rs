//! The taskmanager's BlobCache: permanent blobs of its jobs, downloaded from the BlobServer
//! once per taskmanager however many tasks need them.
//!
//! ```text
//! <blob.storage.directory>/blobCache-<uuid>/job_<id>/blob_p-<sha256>
//! ```
//!
//! - [`BlobCache::get`]: the blob's file; the first caller downloads it
//!   ([`flint_common::blob::fetch`]: hash checked, retried), concurrent callers for the same
//!   blob wait for that download instead of starting their own.
//! - Jobs hold references ([`BlobCache::register_job`] with each task's artifacts,
//!   [`BlobCache::release_job`] when the job's last slot here is freed); a job's blobs are
//!   removed `blob.service.cleanup.interval` after its last release ([`BlobCache::cleanup`],
//!   run by a background thread), unless the job comes back first.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flint_common::blob::{fetch, BlobError, BlobKey, BlobSettings};
use flint_common::ids::JobId;
use tracing::{debug, info, warn};

#[derive(Default)]
struct State {
    /// Downloads in progress.
    downloading: HashSet<(JobId, BlobKey)>,
    /// Jobs by number of live references, and when the last one went.
    jobs: HashMap<JobId, (usize, Option<Instant>)>,
}

pub struct BlobCache {
    dir: PathBuf,
    settings: BlobSettings,
    cleanup_after: Duration,
    state: Mutex<State>,
    done: Condvar,
    downloads: AtomicU64,
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for BlobCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCache").field("dir", &self.dir).field("downloads", &self.downloads()).finish()
    }
}

impl BlobCache {
    /// A cache in `dir` (created) keeping released jobs' blobs for `cleanup_after`.
    pub fn new(dir: PathBuf, settings: BlobSettings, cleanup_after: Duration) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Self {
            dir,
            settings,
            cleanup_after,
            state: Mutex::default(),
            done: Condvar::new(),
            downloads: AtomicU64::new(0),
            stopped: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// Runs [`BlobCache::cleanup`] every second until [`BlobCache::close`].
    pub fn start_cleanup(self: &Arc<Self>) -> std::io::Result<()> {
        let cache = Arc::downgrade(self);
        let stopped = self.stopped.clone();
        std::thread::Builder::new().name("blob-cache-cleanup".into()).spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(1));
                match cache.upgrade() {
                    Some(cache) => cache.cleanup(Instant::now()),
                    None => return,
                }
            }
        })?;
        Ok(())
    }

    fn job_dir(&self, job_id: JobId) -> PathBuf {
        self.dir.join(format!("job_{job_id}"))
    }

    /// Blobs downloaded since the start.
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A task of `job_id` runs here: its blobs stay.
    pub fn register_job(&self, job_id: JobId) {
        let mut state = self.lock();
        let entry = state.jobs.entry(job_id).or_insert((0, None));
        entry.0 += 1;
        entry.1 = None;
    }

    /// The job's last slot here was freed.
    pub fn release_job(&self, job_id: JobId) {
        let mut state = self.lock();
        if let Some(entry) = state.jobs.get_mut(&job_id) {
            entry.0 = 0;
            entry.1 = Some(Instant::now());
        }
    }

    /// Removes the blobs of jobs released at least `cleanup_after` before `now`.
    pub fn cleanup(&self, now: Instant) {
        let expired: Vec<JobId> = {
            let mut state = self.lock();
            let expired: Vec<JobId> = state
                .jobs
                .iter()
                .filter(|(_, (refs, at))| *refs == 0 && at.is_some_and(|t| now.duration_since(t) >= self.cleanup_after))
                .map(|(j, _)| *j)
                .collect();
            for job in &expired {
                state.jobs.remove(job);
            }
            expired
        };
        for job_id in expired {
            match std::fs::remove_dir_all(self.job_dir(job_id)) {
                Ok(()) => debug!(%job_id, "cached blobs removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(%job_id, error = %e, "could not remove cached blobs"),
            }
        }
    }

    /// The file of blob `key` of `job_id`, downloaded from `server` unless cached.
    pub fn get(&self, server: &str, job_id: JobId, key: BlobKey) -> Result<PathBuf, BlobError> {
        let path = self.job_dir(job_id).join(key.file_name());
        {
            let mut state = self.lock();
            loop {
                if path.exists() {
                    return Ok(path);
                }
                if !state.downloading.contains(&(job_id, key)) {
                    state.downloading.insert((job_id, key));
                    break;
                }
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        }
        let started = Instant::now();
        let result = fetch(server, Some(job_id), key, &path, &self.settings);
        self.lock().downloading.remove(&(job_id, key));
        self.done.notify_all();
        let size = result?;
        self.downloads.fetch_add(1, Ordering::Relaxed);
        info!(%job_id, %key, bytes = size, ms = started.elapsed().as_millis() as u64, "blob downloaded");
        Ok(path)
    }

    /// Stops the cleanup thread and removes the directory (at shutdown).
    pub fn close(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %e, "could not remove the blob cache");
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use flint_common::blob::{BlobKind, BlobServer, BlobStore};

    use super::*;

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("flint-blob-cache-test-{}", uuid::Uuid::new_v4().simple()))
    }

    fn settings() -> BlobSettings {
        BlobSettings { socket_timeout: Duration::from_secs(10), retries: 1, ..BlobSettings::default() }
    }

    #[test]
    fn concurrent_requests_for_one_blob_download_it_once() {
        let root = scratch();
        let store = Arc::new(BlobStore::new(root.join("server"), None).unwrap());
        let server = BlobServer::start(TcpListener::bind("127.0.0.1:0").unwrap(), store.clone(), settings()).unwrap();
        let address = format!("127.0.0.1:{}", server.port());
        let job = JobId::generate();
        let content = vec![42u8; 8 << 20];
        let key = store.put_bytes(Some(job), BlobKind::Permanent, &content).unwrap();
        let cache = BlobCache::new(root.join("cache"), settings(), Duration::from_secs(3600)).unwrap();
        cache.register_job(job);
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| cache.get(&address, job, key).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(paths.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(cache.downloads(), 1, "one download for eight tasks");
        assert_eq!(std::fs::read(&paths[0]).unwrap(), content);
        // A blob the server does not have fails without a retry storm.
        let missing = BlobKey::new(BlobKind::Permanent, [1; 32]);
        assert!(matches!(cache.get(&address, job, missing), Err(BlobError::NotFound { .. })));
        drop(server);
        cache.close();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_released_jobs_blobs_go_after_the_cleanup_interval_unless_it_comes_back() {
        let root = scratch();
        let cache = BlobCache::new(root.clone(), settings(), Duration::from_secs(60)).unwrap();
        let (a, b) = (JobId::generate(), JobId::generate());
        for job in [a, b] {
            cache.register_job(job);
            std::fs::create_dir_all(cache.job_dir(job)).unwrap();
            std::fs::write(cache.job_dir(job).join("blob_x"), b"x").unwrap();
            cache.release_job(job);
        }
        cache.register_job(b);
        let now = Instant::now();
        cache.cleanup(now);
        assert!(cache.job_dir(a).exists(), "kept within the interval");
        cache.cleanup(now + Duration::from_secs(61));
        assert!(!cache.job_dir(a).exists());
        assert!(cache.job_dir(b).exists(), "b runs again");
        cache.close();
        assert!(!root.exists());
    }
}
