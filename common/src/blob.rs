//! Blobs: large files moved between processes by content hash, as Flink's BlobServer does.
//!
//! ```text
//! jobmanager                                 taskmanager
//! BlobStore (files, HA copy) ── BlobServer ◀── fetch ── BlobCache (taskmanager::blob_cache)
//!   <blob.storage.directory>/blobStore-<uuid>/job_<id>/blob_p-<sha256>
//!   <high-availability.storageDir>/<cluster-id>/blob/job_<id>/blob_p-<sha256>
//! ```
//!
//! - [`BlobKey`]: the kind (permanent: belongs to a job until it ends; transient: served once)
//!   and the SHA-256 of the content.
//! - [`BlobStore`]: the jobmanager's files. A permanent blob is also written under the HA
//!   storage directory before it is acknowledged, so a new leader serves the blobs of the
//!   jobs it recovers (copied back on first request, hash checked).
//! - [`BlobServer`]: serves the store on `blob.server.port`, one request per connection on
//!   its own thread, at most `blob.fetch.num-concurrent` at once; every read and write is
//!   bounded by `blob.client.socket.timeout`.
//! - [`fetch`] / [`put`]: the blocking client. Content streams in 64 KiB chunks and is
//!   hashed on both ends: a corrupt or truncated transfer is never used (the temporary file
//!   is removed) and is retried up to `blob.fetch.retries` times.
//!
//! The wire format (version 1): the client sends `FLB1`, a big-endian `u32` header length
//! and a MessagePack [`BlobRequest`] (at most 4 KiB), then for a put the content; the server
//! answers with a length-prefixed [`BlobResponse`], then for a get the content.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use crate::tls::BlockingStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::ids::JobId;

const MAGIC: &[u8; 4] = b"FLB1";
const MAX_HEADER: usize = 4096;
const CHUNK: usize = 64 * 1024;

/// Whether a blob belongs to a job (kept until it ends) or is served once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BlobKind {
    Permanent,
    Transient,
}

/// A blob's kind and content hash, displayed as `p-<sha256 hex>` / `t-<sha256 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobKey {
    pub kind: BlobKind,
    pub sha256: [u8; 32],
}

impl BlobKey {
    pub fn new(kind: BlobKind, sha256: [u8; 32]) -> Self {
        Self { kind, sha256 }
    }

    /// The file name of the blob in a store or cache.
    pub fn file_name(&self) -> String {
        format!("blob_{self}")
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BlobKind::Permanent => 'p',
            BlobKind::Transient => 't',
        };
        write!(f, "{kind}-{}", hex::encode(self.sha256))
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for BlobKey {
    type Err = BlobError;
    fn from_str(s: &str) -> Result<Self, BlobError> {
        let bad = || BlobError::Protocol(format!("'{s}' is not a blob key"));
        let (kind, hash) = s.split_once('-').ok_or_else(bad)?;
        let kind = match kind {
            "p" => BlobKind::Permanent,
            "t" => BlobKind::Transient,
            _ => return Err(bad()),
        };
        let bytes = hex::decode(hash).map_err(|_| bad())?;
        Ok(Self { kind, sha256: bytes.try_into().map_err(|_| bad())? })
    }
}

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The store does not have it (and neither does the HA storage).
    #[error("blob {key} of job {job} not found")]
    NotFound { key: BlobKey, job: String },
    /// The content did not hash to its key or was cut short: a retry may help.
    #[error("blob transfer corrupt: {0}")]
    Corrupt(String),
    #[error("blob protocol: {0}")]
    Protocol(String),
    /// The server said no for a reason a retry may or may not help with.
    #[error("blob server: {message}")]
    Server { message: String, retryable: bool },
    #[error("blob I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl BlobError {
    pub fn is_retryable(&self) -> bool {
        match self {
            BlobError::NotFound { .. } | BlobError::Protocol(_) => false,
            BlobError::Corrupt(_) | BlobError::Io(_) => true,
            BlobError::Server { retryable, .. } => *retryable,
        }
    }
}

/// A request to the BlobServer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BlobRequest {
    /// `size` bytes follow, which must hash to `sha256`.
    Put {
        job_id: Option<JobId>,
        kind: BlobKind,
        size: u64,
        sha256: [u8; 32],
    },
    Get {
        job_id: Option<JobId>,
        key: BlobKey,
    },
}

/// The BlobServer's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BlobResponse {
    Stored {
        key: BlobKey,
    },
    /// `size` bytes follow.
    Content {
        size: u64,
    },
    Error {
        message: String,
        retryable: bool,
        not_found: bool,
    },
}

fn write_frame<T: Serialize>(w: &mut impl Write, magic: bool, value: &T) -> Result<(), BlobError> {
    let bytes = rmp_serde::to_vec_named(value).map_err(|e| BlobError::Protocol(e.to_string()))?;
    if magic {
        w.write_all(MAGIC)?;
    }
    w.write_all(&(bytes.len() as u32).to_be_bytes())?;
    w.write_all(&bytes)?;
    Ok(())
}

fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read, magic: bool) -> Result<T, BlobError> {
    if magic {
        let mut m = [0u8; 4];
        r.read_exact(&mut m)?;
        if &m != MAGIC {
            return Err(BlobError::Protocol("not a Flint blob request".into()));
        }
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(BlobError::Protocol(format!("header of {len} bytes (at most {MAX_HEADER})")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    rmp_serde::from_slice(&buf).map_err(|e| BlobError::Protocol(e.to_string()))
}

/// Copies exactly `size` bytes from `r` to `w`, hashing them; a short read is `Corrupt`.
fn copy_hashed(r: &mut impl Read, w: &mut impl Write, size: u64) -> Result<[u8; 32], BlobError> {
    let mut hasher = Sha256::new();
    let mut left = size;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = (left as usize).min(CHUNK);
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(BlobError::Corrupt(format!("transfer ended {left} bytes early")));
        }
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(hasher.finalize().into())
}

/// The SHA-256 and size of a file.
pub fn hash_file(path: &Path) -> std::io::Result<([u8; 32], u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hasher.finalize().into(), size));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Writes `content` of `size` bytes to `dest` through a temporary file in the same directory,
/// renamed into place only when it hashed to `expected` (`Corrupt` otherwise, nothing left).
pub fn write_checked(dest: &Path, content: &mut impl Read, size: u64, expected: [u8; 32]) -> Result<(), BlobError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".incoming-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let hash = copy_hashed(content, &mut file, size)?;
        file.flush()?;
        file.get_ref().sync_all()?;
        if hash != expected {
            return Err(BlobError::Corrupt(format!(
                "content hashes to {} instead of {}",
                hex::encode(hash),
                hex::encode(expected)
            )));
        }
        std::fs::rename(&tmp, dest)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn job_dir_name(job_id: Option<JobId>) -> String {
    job_id.map_or_else(|| "no_job".to_string(), |j| format!("job_{j}"))
}

/// The jobmanager's blob files (see the module documentation).
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    /// `<HA storage>/blob`, where permanent blobs are mirrored.
    ha_dir: Option<PathBuf>,
}

impl BlobStore {
    /// A store in `dir` (created), mirroring permanent blobs under `ha_dir`.
    pub fn new(dir: PathBuf, ha_dir: Option<PathBuf>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, ha_dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn local_path(&self, job_id: Option<JobId>, key: &BlobKey) -> PathBuf {
        self.dir.join(job_dir_name(job_id)).join(key.file_name())
    }

    fn ha_path(&self, job_id: JobId, key: &BlobKey) -> Option<PathBuf> {
        self.ha_dir.as_ref().map(|d| d.join(job_dir_name(Some(job_id))).join(key.file_name()))
    }

    /// Stores `size` bytes from `content` that must hash to `sha256`; a permanent blob of a
    /// job is in the HA storage too when this returns.
    pub fn put(
        &self,
        job_id: Option<JobId>,
        kind: BlobKind,
        content: &mut impl Read,
        size: u64,
        sha256: [u8; 32],
    ) -> Result<BlobKey, BlobError> {
        if kind == BlobKind::Permanent && job_id.is_none() {
            return Err(BlobError::Protocol("a permanent blob belongs to a job".into()));
        }
        let key = BlobKey::new(kind, sha256);
        let path = self.local_path(job_id, &key);
        if !path.exists() {
            write_checked(&path, content, size, sha256)?;
        } else {
            // Already here (same content): the bytes are read and checked all the same.
            let hash = copy_hashed(content, &mut std::io::sink(), size)?;
            if hash != sha256 {
                return Err(BlobError::Corrupt(format!("content hashes to {} instead of {key}", hex::encode(hash))));
            }
        }
        if let (Some(job), BlobKind::Permanent) = (job_id, kind) {
            if let Some(ha) = self.ha_path(job, &key) {
                if !ha.exists() {
                    let mut local = std::fs::File::open(&path)?;
                    write_checked(&ha, &mut local, size, sha256)?;
                }
            }
        }
        debug!(%key, job = %job_dir_name(job_id), size, "blob stored");
        Ok(key)
    }

    /// Stores bytes held in memory.
    pub fn put_bytes(&self, job_id: Option<JobId>, kind: BlobKind, bytes: &[u8]) -> Result<BlobKey, BlobError> {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        self.put(job_id, kind, &mut &bytes[..], bytes.len() as u64, sha256)
    }

    /// The file of a blob: local, else copied back from the HA storage (hash checked).
    pub fn open(&self, job_id: Option<JobId>, key: &BlobKey) -> Result<(std::fs::File, u64), BlobError> {
        let path = self.local_path(job_id, key);
        if !path.exists() {
            let from_ha = job_id.and_then(|j| self.ha_path(j, key)).filter(|p| p.exists());
            match from_ha {
                Some(ha) => {
                    let size = std::fs::metadata(&ha)?.len();
                    write_checked(&path, &mut std::fs::File::open(&ha)?, size, key.sha256)?;
                    info!(%key, job = %job_dir_name(job_id), "blob recovered from the HA storage");
                }
                None => return Err(BlobError::NotFound { key: *key, job: job_dir_name(job_id) }),
            }
        }
        let file = std::fs::File::open(&path)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    /// Removes a transient blob once served.
    fn served(&self, job_id: Option<JobId>, key: &BlobKey) {
        if key.kind == BlobKind::Transient {
            let _ = std::fs::remove_file(self.local_path(job_id, key));
        }
    }

    /// Removes every blob of a job, here and in the HA storage (the job reached a terminal
    /// state).
    pub fn delete_job(&self, job_id: JobId) {
        let mut dirs = vec![self.dir.join(job_dir_name(Some(job_id)))];
        dirs.extend(self.ha_dir.as_ref().map(|d| d.join(job_dir_name(Some(job_id)))));
        for dir in dirs {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => debug!(%job_id, "job blobs removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(%job_id, error = %e, "could not remove the job's blobs"),
            }
        }
    }

    /// Removes the local directory (at shutdown; the HA copies stay for the next leader).
    pub fn close(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %e, "could not remove the blob store");
            }
        }
    }
}

/// Settings of the server and the client.
#[derive(Debug, Clone)]
pub struct BlobSettings {
    /// `blob.client.socket.timeout`: bound on every read and write.
    pub socket_timeout: Duration,
    /// `blob.fetch.num-concurrent`: connections served at once.
    pub max_connections: usize,
    /// `blob.fetch.retries`.
    pub retries: u32,
    /// The largest blob accepted.
    pub max_blob_bytes: u64,
    /// Mutual TLS of the server and its clients (`security.ssl.internal.*`).
    pub tls: Option<crate::tls::TlsContext>,
}

impl BlobSettings {
    /// `blob.client.socket.timeout`, `blob.fetch.num-concurrent` and `blob.fetch.retries`.
    pub fn from_config(config: &crate::config::Configuration) -> Result<Self, crate::config::ConfigError> {
        use crate::config::options;
        Ok(Self {
            socket_timeout: config.get(&options::BLOB_CLIENT_SOCKET_TIMEOUT)?,
            max_connections: config.get(&options::BLOB_FETCH_NUM_CONCURRENT)?.max(1) as usize,
            retries: config.get(&options::BLOB_FETCH_RETRIES)?,
            ..Self::default()
        })
    }

    /// The storage directory of this process: `blob.storage.directory`, else the temp directory.
    pub fn storage_base(config: &crate::config::Configuration) -> PathBuf {
        config
            .get(&crate::config::options::BLOB_STORAGE_DIRECTORY)
            .ok()
            .filter(|d| !d.trim().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
    }
}

impl Default for BlobSettings {
    fn default() -> Self {
        Self {
            socket_timeout: Duration::from_secs(300),
            max_connections: 50,
            retries: 5,
            max_blob_bytes: 4 << 30,
            tls: None,
        }
    }
}

/// The BlobServer: serves a [`BlobStore`] until [`BlobServer::stop`].
pub struct BlobServer {
    store: Arc<BlobStore>,
    port: u16,
    stopped: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlobServer {
    /// Serves `store` on `listener`.
    pub fn start(listener: TcpListener, store: Arc<BlobStore>, settings: BlobSettings) -> std::io::Result<Self> {
        let port = listener.local_addr()?.port();
        let stopped = Arc::new(AtomicBool::new(false));
        let (flag, served) = (stopped.clone(), store.clone());
        let thread = std::thread::Builder::new()
            .name("blob-server".into())
            .spawn(move || accept_loop(listener, served, settings, flag))?;
        info!(port, dir = %store.dir.display(), "blob server started");
        Ok(Self { store, port, stopped, thread: Some(thread) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store(&self) -> &Arc<BlobStore> {
        &self.store
    }

    /// Stops accepting (requests in progress finish on their threads).
    pub fn stop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BlobServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, store: Arc<BlobStore>, settings: BlobSettings, stopped: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stopped.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if active.load(Ordering::SeqCst) >= settings.max_connections {
            // Over the bound: refused at once, the client retries (over TLS the handshake
            // fails instead of this answer, which is retryable too).
            let mut s = stream;
            let _ = write_frame(
                &mut s,
                false,
                &BlobResponse::Error {
                    message: "too many concurrent blob requests".into(),
                    retryable: true,
                    not_found: false,
                },
            );
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (store, active, settings) = (store.clone(), active.clone(), settings.clone());
        let spawned = std::thread::Builder::new().name("blob-conn".into()).spawn(move || {
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            if let Err(e) = serve(stream, &store, &settings) {
                debug!(%peer, error = %e, "blob request failed");
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            warn!("could not start a blob connection thread");
        }
    }
}

fn serve(stream: TcpStream, store: &BlobStore, settings: &BlobSettings) -> Result<(), BlobError> {
    stream.set_read_timeout(Some(settings.socket_timeout))?;
    stream.set_write_timeout(Some(settings.socket_timeout))?;
    // A refused handshake is logged with the peer's address by `accept`.
    let mut stream = BlockingStream::accept(settings.tls.as_ref(), stream, "blob")?;
    let request: BlobRequest = read_frame(&mut stream, true)?;
    let error = |e: &BlobError| BlobResponse::Error {
        message: e.to_string(),
        retryable: e.is_retryable(),
        not_found: matches!(e, BlobError::NotFound { .. }),
    };
    match request {
        BlobRequest::Put { job_id, kind, size, sha256 } => {
            if size > settings.max_blob_bytes {
                let e = BlobError::Protocol(format!("blob of {size} bytes (at most {})", settings.max_blob_bytes));
                write_frame(&mut stream, false, &error(&e))?;
                return Err(e);
            }
            let stored = store.put(job_id, kind, &mut std::io::BufReader::new(&mut stream), size, sha256);
            let answer = match stored {
                Ok(key) => BlobResponse::Stored { key },
                Err(e) => error(&e),
            };
            write_frame(&mut stream, false, &answer)
        }
        BlobRequest::Get { job_id, key } => match store.open(job_id, &key) {
            Ok((mut file, size)) => {
                write_frame(&mut stream, false, &BlobResponse::Content { size })?;
                let mut out = std::io::BufWriter::new(&mut stream);
                std::io::copy(&mut (&mut file).take(size), &mut out)?;
                out.flush()?;
                drop(out);
                store.served(job_id, &key);
                Ok(())
            }
            Err(e) => write_frame(&mut stream, false, &error(&e)),
        },
    }
}

fn connect(address: &str, settings: &BlobSettings) -> Result<BlockingStream, BlobError> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, settings.socket_timeout.min(Duration::from_secs(30))) {
            Ok(s) => {
                s.set_read_timeout(Some(settings.socket_timeout))?;
                s.set_write_timeout(Some(settings.socket_timeout))?;
                let host = crate::tls::stream::host_of(address);
                return BlockingStream::connect(settings.tls.as_ref(), s, host).map_err(|e| match &settings.tls {
                    Some(_) => BlobError::Io(std::io::Error::new(e.kind(), format!("TLS handshake failed: {e}"))),
                    None => BlobError::Io(e),
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| BlobError::Protocol(format!("'{address}' resolves to nothing")), BlobError::Io))
}

fn server_error(message: String, retryable: bool, not_found: bool, key: BlobKey, job_id: Option<JobId>) -> BlobError {
    if not_found {
        BlobError::NotFound { key, job: job_dir_name(job_id) }
    } else {
        BlobError::Server { message, retryable }
    }
}

fn fetch_once(
    address: &str,
    job_id: Option<JobId>,
    key: BlobKey,
    dest: &Path,
    settings: &BlobSettings,
) -> Result<u64, BlobError> {
    let mut stream = connect(address, settings)?;
    write_frame(&mut stream, true, &BlobRequest::Get { job_id, key })?;
    stream.flush()?;
    match read_frame(&mut stream, false)? {
        BlobResponse::Content { size } => {
            let mut reader = std::io::BufReader::new(&mut stream);
            write_checked(dest, &mut reader, size, key.sha256)?;
            Ok(size)
        }
        BlobResponse::Error { message, retryable, not_found } => {
            Err(server_error(message, retryable, not_found, key, job_id))
        }
        other => Err(BlobError::Protocol(format!("unexpected answer {other:?}"))),
    }
}

/// Downloads blob `key` to `dest` (written only once it hashed right), retrying transfers
/// that broke or were corrupt up to `settings.retries` times. Returns the size.
pub fn fetch(
    address: &str,
    job_id: Option<JobId>,
    key: BlobKey,
    dest: &Path,
    settings: &BlobSettings,
) -> Result<u64, BlobError> {
    let mut attempt = 0;
    loop {
        match fetch_once(address, job_id, key, dest, settings) {
            Ok(size) => return Ok(size),
            Err(e) if e.is_retryable() && attempt < settings.retries => {
                attempt += 1;
                warn!(%key, attempt, error = %e, "blob download failed; retrying");
                std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Uploads the file at `path` (hashed first, then streamed).
pub fn put(
    address: &str,
    job_id: Option<JobId>,
    kind: BlobKind,
    path: &Path,
    settings: &BlobSettings,
) -> Result<BlobKey, BlobError> {
    let (sha256, size) = hash_file(path)?;
    let mut stream = connect(address, settings)?;
    write_frame(&mut stream, true, &BlobRequest::Put { job_id, kind, size, sha256 })?;
    let mut file = std::fs::File::open(path)?;
    let mut out = std::io::BufWriter::new(&mut stream);
    copy_hashed(&mut file, &mut out, size)?;
    out.flush()?;
    drop(out);
    match read_frame(&mut stream, false)? {
        BlobResponse::Stored { key } => Ok(key),
        BlobResponse::Error { message, retryable, .. } => Err(BlobError::Server { message, retryable }),
        other => Err(BlobError::Protocol(format!("unexpected answer {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("flint-blob-{name}-{}", uuid::Uuid::new_v4().simple()))
    }

    fn server(dir: &Path, ha: Option<PathBuf>) -> BlobServer {
        let store = Arc::new(BlobStore::new(dir.join("store"), ha).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = BlobSettings { socket_timeout: Duration::from_secs(10), ..BlobSettings::default() };
        BlobServer::start(listener, store, settings).unwrap()
    }

    fn settings() -> BlobSettings {
        BlobSettings { socket_timeout: Duration::from_secs(10), retries: 2, ..BlobSettings::default() }
    }

    #[test]
    fn keys_read_back_from_their_display() {
        let key = BlobKey::new(BlobKind::Permanent, [7; 32]);
        assert_eq!(key.to_string().parse::<BlobKey>().unwrap(), key);
        assert!("x-00".parse::<BlobKey>().is_err());
        assert!("p-zz".parse::<BlobKey>().is_err());
    }

    #[test]
    fn a_blob_round_trips_and_a_transient_one_is_served_once() {
        let dir = scratch("roundtrip");
        let server = server(&dir, None);
        let address = format!("127.0.0.1:{}", server.port());
        let job = JobId::generate();
        let content: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.bin");
        std::fs::write(&src, &content).unwrap();
        let key = put(&address, Some(job), BlobKind::Permanent, &src, &settings()).unwrap();
        let dest = dir.join("out/got.bin");
        assert_eq!(fetch(&address, Some(job), key, &dest, &settings()).unwrap(), content.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), content);
        // Another job does not see it.
        let other = fetch(&address, Some(JobId::generate()), key, &dir.join("x"), &settings()).unwrap_err();
        assert!(matches!(other, BlobError::NotFound { .. }), "{other}");

        let t = put(&address, None, BlobKind::Transient, &src, &settings()).unwrap();
        fetch(&address, None, t, &dir.join("t1"), &settings()).unwrap();
        assert!(matches!(fetch(&address, None, t, &dir.join("t2"), &settings()), Err(BlobError::NotFound { .. })));

        server.store().delete_job(job);
        assert!(matches!(
            fetch(&address, Some(job), key, &dir.join("y"), &settings()),
            Err(BlobError::NotFound { .. })
        ));
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_or_truncated_uploads_are_never_stored() {
        let dir = scratch("corrupt");
        let server = server(&dir, None);
        let address = format!("127.0.0.1:{}", server.port());
        let job = JobId::generate();
        // Declared hash of other content.
        let mut s = connect(&address, &settings()).unwrap();
        write_frame(
            &mut s,
            true,
            &BlobRequest::Put { job_id: Some(job), kind: BlobKind::Permanent, size: 3, sha256: [0; 32] },
        )
        .unwrap();
        s.write_all(b"abc").unwrap();
        let answer: BlobResponse = read_frame(&mut s, false).unwrap();
        assert!(matches!(answer, BlobResponse::Error { retryable: true, .. }), "{answer:?}");
        // Cut short: the connection ends before the declared size.
        let sha: [u8; 32] = Sha256::digest(b"abcdef").into();
        let mut s = connect(&address, &settings()).unwrap();
        write_frame(
            &mut s,
            true,
            &BlobRequest::Put { job_id: Some(job), kind: BlobKind::Permanent, size: 6, sha256: sha },
        )
        .unwrap();
        s.write_all(b"abc").unwrap();
        s.shutdown_write().unwrap();
        let answer: BlobResponse = read_frame(&mut s, false).unwrap();
        assert!(matches!(answer, BlobResponse::Error { .. }), "{answer:?}");
        // Garbage instead of a request: the server goes on serving.
        let mut s = connect(&address, &settings()).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        // Nothing but empty directories was left behind.
        let mut files = Vec::new();
        let mut stack = vec![server.store().dir().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path())
                } else {
                    files.push(e.path())
                }
            }
        }
        assert!(files.is_empty(), "{files:?}");
        let key = server.store().put_bytes(Some(job), BlobKind::Permanent, b"abcdef").unwrap();
        fetch(&address, Some(job), key, &dir.join("ok"), &settings()).unwrap();
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_download_that_hashes_wrong_is_retried_and_never_kept() {
        let dir = scratch("tampered");
        let server = server(&dir, None);
        let address = format!("127.0.0.1:{}", server.port());
        let job = JobId::generate();
        let key = server.store().put_bytes(Some(job), BlobKind::Permanent, b"the real content").unwrap();
        // Tamper with the stored file: every transfer now hashes wrong.
        std::fs::write(server.store().local_path(Some(job), &key), b"something else!!").unwrap();
        let dest = dir.join("dest.bin");
        let err = fetch(&address, Some(job), key, &dest, &settings()).unwrap_err();
        assert!(matches!(err, BlobError::Corrupt(_)), "{err}");
        assert!(!dest.exists());
        assert_eq!(
            std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".incoming"))
                .count(),
            0
        );
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_server_serves_permanent_blobs_from_the_ha_storage() {
        let dir = scratch("ha");
        let ha = dir.join("ha/blob");
        let first = server(&dir.join("first"), Some(ha.clone()));
        let job = JobId::generate();
        let key = first.store().put_bytes(Some(job), BlobKind::Permanent, b"recover me").unwrap();
        let transient = first.store().put_bytes(None, BlobKind::Transient, b"not mirrored").unwrap();
        drop(first);
        // Another "leader" with an empty local store.
        let second = server(&dir.join("second"), Some(ha.clone()));
        let address = format!("127.0.0.1:{}", second.port());
        fetch(&address, Some(job), key, &dir.join("got"), &settings()).unwrap();
        assert_eq!(std::fs::read(dir.join("got")).unwrap(), b"recover me");
        assert!(fetch(&address, None, transient, &dir.join("t"), &settings()).is_err());
        second.store().delete_job(job);
        assert!(!ha.join(format!("job_{job}")).exists());
        drop(second);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
