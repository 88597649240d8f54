//! The ZooKeeper state-handle store and checkpoint id counter.
//!
//! State-handle store (Flink's `ZooKeeperStateHandleStore` layout): the value is written to a
//! file in the store's directory under the HA storage dir first (temp file, fsync, rename),
//! then one multi-op creates `<root>/<name>` (data: `{"path": "<file>", "size": n}`),
//! `<root>/<name>/locks` and our ephemeral lock `<root>/<name>/locks/<process-id>`. The znode
//! is the ground truth: an entry means its file exists (a missing file is reported as
//! [`HaError::MissingStateFile`]); a file without an entry is garbage for `cleanup`.
//!
//! `remove` drops our lock, then deletes `locks`: that fails while another process holds a
//! lock (the entry stays, `false`); once it succeeded nobody can lock the entry any more
//! ("marked for deletion": `names` skips it), so the file and then the entry are deleted.
//! A crash in between leaves a marked entry that the next `put` of that name or `cleanup`
//! finishes.
//!
//! A write whose outcome a lost connection hid is resolved by reading the entry again (is its
//! handle ours?), never by assuming either outcome.
//!
//! The checkpoint id counter is one znode holding the next id as decimal text, advanced by
//! `set_data` with the version read (compare-and-set). An increment whose outcome is unknown
//! is never treated as ours: its id is skipped, so no id is handed out twice.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use zookeeper_client::{CreateMode, Error as Zk, MultiWriteError};

use super::{transient, Runtime, Shared};
use crate::ha::files::{io_error, list_files, write_atomically};
use crate::ha::{CheckpointIdCounter, HaError, HaFuture, StateHandleStore};

/// The data of an entry's znode: where its value is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Handle {
    path: PathBuf,
    size: u64,
}

/// The ZooKeeper [`StateHandleStore`]; see the module documentation.
pub struct ZooKeeperStateHandleStore {
    runtime: Arc<Runtime>,
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    root: String,
    dir: PathBuf,
    prefix: &'static str,
}

impl ZooKeeperStateHandleStore {
    /// A store of the entries under znode `root`, values in `dir`, value files named
    /// `<prefix>-<uuid>`.
    pub(crate) fn new(runtime: Arc<Runtime>, root: String, dir: PathBuf, prefix: &'static str) -> Self {
        let shared = runtime.shared.clone();
        Self { runtime, inner: Arc::new(Inner { shared, root, dir, prefix }) }
    }

    /// The znode holding the entries.
    pub fn root(&self) -> &str {
        &self.inner.root
    }

    /// The directory holding the values.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn run<T: Send + 'static, F>(&self, name: &str, operation: impl FnOnce(Arc<Inner>, String) -> F) -> HaFuture<T>
    where
        F: std::future::Future<Output = Result<T, HaError>> + Send + 'static,
    {
        if let Err(e) = valid_name(name) {
            return Box::pin(futures::future::ready(Err(e)));
        }
        self.runtime.spawn(operation(self.inner.clone(), name.to_string()))
    }
}

fn valid_name(name: &str) -> Result<(), HaError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(HaError::Corrupt { location: name.to_string(), reason: "not a valid entry name".into() });
    }
    Ok(())
}

impl StateHandleStore for ZooKeeperStateHandleStore {
    fn put(&self, name: &str, value: Vec<u8>) -> HaFuture<()> {
        self.run(name, |inner, name| async move { inner.put(&name, value).await })
    }

    fn get(&self, name: &str) -> HaFuture<Option<Vec<u8>>> {
        self.run(name, |inner, name| async move { inner.get(&name).await })
    }

    fn names(&self) -> HaFuture<Vec<String>> {
        let inner = self.inner.clone();
        self.runtime.spawn(async move { inner.names().await })
    }

    fn remove(&self, name: &str) -> HaFuture<bool> {
        self.run(name, |inner, name| async move { inner.remove(&name).await })
    }

    fn release(&self, name: &str) -> HaFuture<()> {
        self.run(name, |inner, name| async move { inner.release(&name).await })
    }

    fn release_all(&self) -> HaFuture<()> {
        let inner = self.inner.clone();
        self.runtime.spawn(async move {
            for name in inner.shared.children(&inner.root).await?.unwrap_or_default() {
                inner.release(&name).await?;
            }
            Ok(())
        })
    }

    fn cleanup(&self, min_age: Duration) -> HaFuture<usize> {
        let inner = self.inner.clone();
        self.runtime.spawn(async move { inner.cleanup(min_age).await })
    }
}

impl Inner {
    fn entry(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }

    fn locks(&self, name: &str) -> String {
        format!("{}/{name}/locks", self.root)
    }

    fn lock(&self, name: &str) -> String {
        format!("{}/{name}/locks/{}", self.root, self.shared.process_id)
    }

    fn parse_handle(&self, name: &str, data: &[u8]) -> Result<Handle, HaError> {
        serde_json::from_slice(data)
            .map_err(|e| HaError::Corrupt { location: self.entry(name), reason: format!("not a state handle: {e}") })
    }

    async fn write_value(&self, value: Vec<u8>) -> Result<Handle, HaError> {
        let path = self.dir.join(format!("{}-{}", self.prefix, uuid::Uuid::new_v4().simple()));
        let size = value.len() as u64;
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&target, &value)).await.map_err(|_| HaError::Closed)??;
        Ok(Handle { path, size })
    }

    async fn discard_value(&self, handle: &Handle) {
        match tokio::fs::remove_file(&handle.path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(file = %handle.path.display(), error = %e, "could not delete state file"),
        }
    }

    async fn put(&self, name: &str, value: Vec<u8>) -> Result<(), HaError> {
        let path = self.entry(name);
        self.shared.mkdir(&self.root).await?;
        match self.shared.stat(&path).await? {
            Some(stat) if stat.num_children > 0 => return Err(HaError::AlreadyExists { name: name.to_string() }),
            // Marked for deletion by an interrupted remove: finish it first.
            Some(_) if !self.remove(name).await? => return Err(HaError::AlreadyExists { name: name.to_string() }),
            Some(_) | None => {}
        }
        let handle = self.write_value(value).await?;
        let data = serde_json::to_vec(&handle).expect("handles serialize");
        let persistent = self.shared.options(CreateMode::Persistent);
        let ephemeral = self.shared.options(CreateMode::Ephemeral);
        let mut attempt = 0;
        loop {
            let session = match self.shared.session().await {
                Ok(session) => session,
                Err(e) => {
                    self.discard_value(&handle).await;
                    return Err(e);
                }
            };
            let mut writer = session.client.new_multi_writer();
            let prepared = writer
                .add_create(&path, &data, &persistent)
                .and_then(|_| writer.add_create(&self.locks(name), &[], &persistent))
                .and_then(|_| writer.add_create(&self.lock(name), &[], &ephemeral));
            if let Err(source) = prepared {
                self.discard_value(&handle).await;
                return Err(HaError::ZooKeeper { operation: "put", path, source });
            }
            let source = match writer.commit().await {
                Ok(_) => {
                    debug!(entry = %path, file = %handle.path.display(), "stored state handle");
                    return Ok(());
                }
                Err(MultiWriteError::RequestFailed { source } | MultiWriteError::OperationFailed { source, .. }) => {
                    source
                }
            };
            if !(transient(&source) || source == Zk::NodeExists) {
                self.discard_value(&handle).await;
                return Err(HaError::ZooKeeper { operation: "put", path, source });
            }
            // Did it happen? Read the entry: the handle tells whose it is.
            let existing = match self.read_entry(&path).await {
                Ok(existing) => existing,
                // Unknown: keep the file (cleanup collects it if the entry never appears).
                Err(e) => return Err(e),
            };
            match existing {
                Some(data) if self.parse_handle(name, &data).ok().as_ref() == Some(&handle) => {
                    // Ours. The lock node may have gone with a lost session: take it again.
                    self.shared.create_if_absent(&self.lock(name), &[], CreateMode::Ephemeral).await?;
                    debug!(entry = %path, "stored state handle (confirmed by reading it back)");
                    return Ok(());
                }
                Some(_) => {
                    self.discard_value(&handle).await;
                    return Err(HaError::AlreadyExists { name: name.to_string() });
                }
                None if attempt < self.shared.config.max_retry_attempts => {
                    attempt += 1;
                    debug!(entry = %path, attempt, error = %source, "state handle not written, retrying");
                    if !self.shared.pause().await {
                        self.discard_value(&handle).await;
                        return Err(HaError::Closed);
                    }
                }
                None => {
                    self.discard_value(&handle).await;
                    return Err(HaError::ZooKeeper { operation: "put", path, source });
                }
            }
        }
    }

    /// The entry's data after a `sync` (so that the read follows the write in question).
    async fn read_entry(&self, path: &str) -> Result<Option<Vec<u8>>, HaError> {
        let synced = self.shared.retry("sync", path, |s| {
            let path = path.to_string();
            async move { s.client.sync(&path).await }
        });
        synced.await.or_else(|e| match e {
            HaError::ZooKeeper { source: Zk::NoNode, .. } => Ok(()),
            e => Err(e),
        })?;
        Ok(self.shared.get_data(path).await?.map(|(data, _)| data))
    }

    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, HaError> {
        // Lock first, so that the entry cannot be removed between reading its handle and
        // its file. No `locks` node: no entry, or one marked for deletion.
        if !self.shared.create_if_absent(&self.lock(name), &[], CreateMode::Ephemeral).await? {
            return Ok(None);
        }
        let result = self.read_value(name).await;
        if !matches!(result, Ok(Some(_))) {
            self.release(name).await?;
        }
        result
    }

    async fn read_value(&self, name: &str) -> Result<Option<Vec<u8>>, HaError> {
        let Some((data, _)) = self.shared.get_data(&self.entry(name)).await? else { return Ok(None) };
        let handle = self.parse_handle(name, &data)?;
        match tokio::fs::read(&handle.path).await {
            Ok(bytes) if bytes.len() as u64 == handle.size => Ok(Some(bytes)),
            Ok(_) => Err(HaError::MissingStateFile { name: name.to_string(), path: handle.path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(HaError::MissingStateFile { name: name.to_string(), path: handle.path })
            }
            Err(e) => Err(io_error(&handle.path, e)),
        }
    }

    async fn names(&self) -> Result<Vec<String>, HaError> {
        let children = self.shared.children(&self.root).await?.unwrap_or_default();
        let stats = join_all(children.iter().map(|name| self.shared.stat_owned(self.entry(name)))).await;
        let mut names = Vec::new();
        for (name, stat) in children.into_iter().zip(stats) {
            // Entries without children are marked for deletion.
            if stat?.is_some_and(|s| s.num_children > 0) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn release(&self, name: &str) -> Result<(), HaError> {
        self.shared.delete_if_exists(&self.lock(name)).await.map(drop)
    }

    async fn remove(&self, name: &str) -> Result<bool, HaError> {
        let path = self.entry(name);
        let Some(data) = self.read_entry(&path).await? else { return Ok(true) };
        self.release(name).await?;
        if !self.shared.delete_if_exists(&self.locks(name)).await? {
            debug!(entry = %path, "state handle still locked by another process, keeping it");
            return Ok(false);
        }
        // Marked for deletion: nobody can lock it any more.
        match self.parse_handle(name, &data) {
            Ok(handle) => self.discard_value(&handle).await,
            Err(e) => warn!(error = %e, "removing an entry whose handle does not parse"),
        }
        if !self.shared.delete_if_exists(&path).await? {
            warn!(entry = %path, "state handle gained children while being removed");
            return Ok(false);
        }
        debug!(entry = %path, "removed state handle");
        Ok(true)
    }

    async fn cleanup(&self, min_age: Duration) -> Result<usize, HaError> {
        let mut referenced = HashSet::new();
        let mut deleted = 0;
        for name in self.shared.children(&self.root).await?.unwrap_or_default() {
            let Some((data, stat)) = self.shared.get_data(&self.entry(&name)).await? else { continue };
            let handle = self.parse_handle(&name, &data);
            if stat.num_children == 0 {
                // An interrupted removal: finish it.
                if let Ok(handle) = &handle {
                    self.discard_value(handle).await;
                    deleted += 1;
                }
                self.shared.delete_if_exists(&self.entry(&name)).await?;
                info!(entry = %self.entry(&name), "finished an interrupted removal");
            } else if let Ok(handle) = handle {
                referenced.insert(handle.path);
            }
        }
        let dir = self.dir.clone();
        let files = tokio::task::spawn_blocking(move || list_files(&dir)).await.map_err(|_| HaError::Closed)??;
        let now = SystemTime::now();
        for file in files {
            if referenced.contains(&file) {
                continue;
            }
            let age = tokio::fs::metadata(&file)
                .await
                .and_then(|m| m.modified())
                .map(|modified| now.duration_since(modified).unwrap_or_default())
                .unwrap_or_default();
            if age < min_age {
                continue;
            }
            match tokio::fs::remove_file(&file).await {
                Ok(()) => {
                    info!(file = %file.display(), "deleted state file without a handle");
                    deleted += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&file, e)),
            }
        }
        Ok(deleted)
    }
}

impl Shared {
    /// [`Shared::stat`] for an owned path (for joining many).
    async fn stat_owned(&self, path: String) -> Result<Option<zookeeper_client::Stat>, HaError> {
        self.stat(&path).await
    }
}

/// The ZooKeeper [`CheckpointIdCounter`]; see the module documentation. Its methods block the
/// calling thread for a round trip to ZooKeeper.
pub struct ZooKeeperCheckpointIdCounter {
    runtime: Arc<Runtime>,
    path: String,
}

impl ZooKeeperCheckpointIdCounter {
    pub(crate) fn new(runtime: Arc<Runtime>, path: String) -> Self {
        Self { runtime, path }
    }

    /// The counter's znode.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// The counter's value and version, creating it with 1 if missing.
async fn read_counter(shared: &Shared, path: &str) -> Result<(u64, i32), HaError> {
    loop {
        if let Some((data, stat)) = shared.get_data(path).await? {
            let value = std::str::from_utf8(&data).ok().and_then(|text| text.trim().parse().ok()).ok_or_else(|| {
                HaError::Corrupt {
                    location: path.to_string(),
                    reason: format!("not a checkpoint id: {:?}", String::from_utf8_lossy(&data)),
                }
            })?;
            return Ok((value, stat.version));
        }
        if !shared.create_if_absent(path, b"1", CreateMode::Persistent).await? {
            shared.mkdir(&path[..path.rfind('/').unwrap_or(0)]).await?;
        }
    }
}

/// Compare-and-set of the counter from the value read to `next(value)`; answers the value
/// read. Retries on concurrent updates; an unknown outcome is retried with a fresh read.
async fn update_counter(shared: &Shared, path: &str, next: impl Fn(u64) -> u64) -> Result<u64, HaError> {
    let mut attempt = 0;
    loop {
        let (value, version) = read_counter(shared, path).await?;
        let session = shared.session().await?;
        let data = next(value).to_string();
        match session.client.set_data(path, data.as_bytes(), Some(version)).await {
            Ok(_) => return Ok(value),
            Err(Zk::BadVersion | Zk::NoNode) => continue,
            Err(e) if transient(&e) && attempt < shared.config.max_retry_attempts => {
                attempt += 1;
                debug!(path, attempt, error = %e, "checkpoint id update failed, reading again");
                if !shared.pause().await {
                    return Err(HaError::Closed);
                }
            }
            Err(source) => return Err(HaError::ZooKeeper { operation: "set", path: path.to_string(), source }),
        }
    }
}

impl CheckpointIdCounter for ZooKeeperCheckpointIdCounter {
    fn get_and_increment(&self) -> Result<u64, HaError> {
        let (shared, path) = (self.runtime.shared.clone(), self.path.clone());
        self.runtime.block_on(async move { update_counter(&shared, &path, |v| v + 1).await })
    }

    fn get(&self) -> Result<u64, HaError> {
        let (shared, path) = (self.runtime.shared.clone(), self.path.clone());
        self.runtime.block_on(async move { read_counter(&shared, &path).await.map(|(v, _)| v) })
    }

    fn set_count(&self, next: u64) -> Result<(), HaError> {
        let (shared, path) = (self.runtime.shared.clone(), self.path.clone());
        self.runtime.block_on(async move { update_counter(&shared, &path, |_| next).await.map(drop) })
    }
}
