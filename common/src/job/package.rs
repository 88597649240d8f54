//! Job packages: a zip archive with a job file at its root and the artifacts it names.
//!
//! ```text
//! package.zip
//! ├── job.yaml            (or job.yml / job.json: exactly one, at the root)
//! └── data/lines.txt      (an artifact: `source.file` with `path: data/lines.txt`)
//! ```
//!
//! - [`read_package`] reads an archive from untrusted bytes, bounded by [`PackageLimits`]
//!   (entries, bytes of the job file, expanded bytes in all): zip-slip (`../`) and absolute
//!   names, links, encrypted entries, a missing or second job file are refused, and no
//!   entry is believed about its size (every read is capped).
//! - [`substitute_parameters`] fills `${name}` in the job file from a program's arguments
//!   (`--name value`, `--name=value`), as `/jars/:id/run`'s `programArgsList` gives them.
//! - [`JobPackage::compile`] validates the job and attaches the artifacts its relative
//!   `source.file` paths name to the [`JobGraph`] (a path naming no artifact is refused).
//!
//! A job file alone (not a zip) is a package without artifacts ([`JobPackage::from_job_file`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{load_job_with_config, JobError, JobGraph, OperatorKind};

/// The job file names a package may hold at its root, in order of preference.
pub const JOB_FILE_NAMES: [&str; 3] = ["job.yaml", "job.yml", "job.json"];

/// Bounds on what reading a package may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageLimits {
    /// Entries in the archive (directories included).
    pub max_entries: usize,
    /// Bytes of all entries once expanded.
    pub max_expanded_bytes: u64,
    /// Bytes of the job file.
    pub max_job_file_bytes: u64,
}

impl Default for PackageLimits {
    fn default() -> Self {
        Self { max_entries: 10_000, max_expanded_bytes: 256 << 20, max_job_file_bytes: 4 << 20 }
    }
}

/// Why a package was refused. None of these is helped by a retry: the package must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("The package is not a zip archive: {reason}.")]
    NotZip { reason: String },
    #[error("The package entry '{name}' has an unsafe path (absolute, '..' or empty segments are not allowed).")]
    UnsafePath { name: String },
    #[error("The package entry '{name}' is a link; packages may only hold files and directories.")]
    Link { name: String },
    #[error("The package entry '{name}' is encrypted.")]
    Encrypted { name: String },
    #[error("The package entry '{name}' appears twice.")]
    Duplicate { name: String },
    #[error("The package has more than {limit} entries.")]
    TooManyEntries { limit: usize },
    #[error("The package expands to more than {limit} bytes.")]
    TooLarge { limit: u64 },
    #[error("The job file '{name}' is larger than {limit} bytes.")]
    JobFileTooLarge { name: String, limit: u64 },
    #[error("The package entry '{name}' could not be read: {reason}.")]
    Corrupt { name: String, reason: String },
    #[error("The package holds no job file at its root (job.yaml, job.yml or job.json).")]
    NoJobFile,
    #[error("The package holds more than one job file at its root: {names}.")]
    SeveralJobFiles { names: String },
    #[error("The job file '{name}' is not valid UTF-8.")]
    NotUtf8 { name: String },
}

impl PackageError {
    /// Always false: the same bytes fail the same way.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// One file of a package, shipped with the job (inline in the job graph).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Lowercase hex of the content's SHA-256.
    pub sha256: String,
    /// The content, or nothing when it was offloaded to the BlobServer.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// Whether the content is a permanent blob of the job (key: `sha256`) instead of inline.
    #[serde(default)]
    pub offloaded: bool,
    /// The content's size.
    #[serde(default)]
    pub size: u64,
}

impl Artifact {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { sha256: sha256_hex(&bytes), size: bytes.len() as u64, bytes, offloaded: false }
    }

    /// Whether the bytes still hash to `sha256`.
    pub fn is_intact(&self) -> bool {
        sha256_hex(&self.bytes) == self.sha256
    }

    /// The blob key of an offloaded artifact.
    pub fn blob_key(&self) -> Option<crate::blob::BlobKey> {
        let hash: [u8; 32] = hex::decode(&self.sha256).ok()?.try_into().ok()?;
        Some(crate::blob::BlobKey::new(crate::blob::BlobKind::Permanent, hash))
    }
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = if self.offloaded { "offloaded" } else { "inline" };
        write!(f, "Artifact({} bytes {place}, sha256 {})", self.size, self.sha256)
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A read package: the job file's name and text, and every other file by its relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPackage {
    pub job_file: String,
    pub job_text: String,
    pub artifacts: BTreeMap<String, Vec<u8>>,
}

/// Whether `bytes` start like a zip archive (a local file header or an empty archive's end).
pub fn looks_like_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// A relative path made of plain segments (`data/lines.txt`), as artifacts are named; a
/// trailing `/` is dropped. `None` for absolute paths, `.`/`..`/empty segments, backslashes.
pub fn safe_relative(name: &str) -> Option<String> {
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    if trimmed.is_empty() || trimmed.starts_with('/') || trimmed.contains('\\') || trimmed.contains('\0') {
        return None;
    }
    let ok = trimmed.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    // A drive letter (`C:`) is absolute on Windows: refused everywhere.
    (ok && !trimmed.split('/').next().is_some_and(|s| s.ends_with(':'))).then(|| trimmed.to_string())
}

/// `S_IFLNK` in the unix mode of an entry.
const UNIX_LINK: u32 = 0o120000;
const UNIX_TYPE_MASK: u32 = 0o170000;

/// Reads a package from `reader` (see the module documentation for what is refused).
pub fn read_package<R: Read + Seek>(reader: R, limits: PackageLimits) -> Result<JobPackage, PackageError> {
    read_archive(reader, limits, Mode::Full)
}

/// Checks every entry's name and kind as [`read_package`] does but reads only the job
/// file (the artifacts come back empty): what a listing of packages needs.
pub fn read_job_file<R: Read + Seek>(reader: R, limits: PackageLimits) -> Result<JobPackage, PackageError> {
    read_archive(reader, limits, Mode::JobFileOnly)
}

/// Checks a package as [`read_package`] does, expanding every entry, without keeping the
/// artifacts in memory (they come back empty): what accepting an upload needs.
pub fn check_package<R: Read + Seek>(reader: R, limits: PackageLimits) -> Result<JobPackage, PackageError> {
    read_archive(reader, limits, Mode::Check)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    JobFileOnly,
    Check,
}

fn read_archive<R: Read + Seek>(reader: R, limits: PackageLimits, mode: Mode) -> Result<JobPackage, PackageError> {
    let mut archive = zip::ZipArchive::new(reader).map_err(|e| PackageError::NotZip { reason: e.to_string() })?;
    if archive.len() > limits.max_entries {
        return Err(PackageError::TooManyEntries { limit: limits.max_entries });
    }
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut expanded: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(|e| PackageError::NotZip { reason: e.to_string() })?;
        let raw_name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let name = safe_relative(&raw_name).ok_or_else(|| PackageError::UnsafePath { name: raw_name.clone() })?;
        if entry.unix_mode().is_some_and(|m| m & UNIX_TYPE_MASK == UNIX_LINK) {
            return Err(PackageError::Link { name });
        }
        if entry.encrypted() {
            return Err(PackageError::Encrypted { name });
        }
        if entry.is_dir() {
            continue;
        }
        let job_file = JOB_FILE_NAMES.contains(&name.as_str());
        drop(entry);
        if mode == Mode::JobFileOnly && !job_file {
            continue;
        }
        let entry =
            archive.by_index(index).map_err(|e| PackageError::Corrupt { name: name.clone(), reason: e.to_string() })?;
        // Sizes in the archive are claims: every read is capped at what is still allowed.
        let room = limits.max_expanded_bytes - expanded;
        let cap = if job_file { room.min(limits.max_job_file_bytes) } else { room };
        let corrupt = |e: std::io::Error| PackageError::Corrupt { name: name.clone(), reason: e.to_string() };
        // Reserved once (the claim is bounded by the cap): a growing buffer would hold
        // up to twice the entry while it is copied.
        let mut bytes = if mode == Mode::Check && !job_file {
            Vec::new()
        } else {
            Vec::with_capacity(entry.size().min(cap) as usize)
        };
        let size = if mode == Mode::Check && !job_file {
            std::io::copy(&mut entry.take(cap + 1), &mut std::io::sink()).map_err(corrupt)?
        } else {
            entry.take(cap + 1).read_to_end(&mut bytes).map_err(corrupt)? as u64
        };
        if size > cap {
            return Err(if job_file && cap == limits.max_job_file_bytes {
                PackageError::JobFileTooLarge { name, limit: limits.max_job_file_bytes }
            } else {
                PackageError::TooLarge { limit: limits.max_expanded_bytes }
            });
        }
        expanded += size;
        if files.insert(name.clone(), bytes).is_some() {
            return Err(PackageError::Duplicate { name });
        }
    }
    let present: Vec<&str> = JOB_FILE_NAMES.iter().copied().filter(|n| files.contains_key(*n)).collect();
    let job_file = match present.as_slice() {
        [] => return Err(PackageError::NoJobFile),
        [one] => one.to_string(),
        several => return Err(PackageError::SeveralJobFiles { names: several.join(", ") }),
    };
    let bytes = files.remove(&job_file).unwrap_or_default();
    let job_text = String::from_utf8(bytes).map_err(|_| PackageError::NotUtf8 { name: job_file.clone() })?;
    Ok(JobPackage { job_file, job_text, artifacts: files })
}

/// Why a program argument list or a parameter could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    #[error("The program argument '{arg}' is not of the form --name value or --name=value.")]
    Malformed { arg: String },
    #[error("The job file uses parameters that were not given: {names} (pass them as program arguments, e.g. --{first} <value>).")]
    Missing { names: String, first: String },
    #[error("The job file has an unterminated parameter starting '{start}'.")]
    Unterminated { start: String },
}

/// Program arguments as parameters: `--name value`, `--name=value` or `-name value`; a
/// trailing name without a value is an error.
pub fn parse_program_args(args: &[String]) -> Result<BTreeMap<String, String>, ParameterError> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let name = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ParameterError::Malformed { arg: arg.clone() })?;
        match name.split_once('=') {
            Some((n, v)) if !n.is_empty() => {
                out.insert(n.to_string(), v.to_string());
            }
            Some(_) => return Err(ParameterError::Malformed { arg: arg.clone() }),
            None => {
                let value = it.next().ok_or_else(|| ParameterError::Malformed { arg: arg.clone() })?;
                out.insert(name.to_string(), value.clone());
            }
        }
    }
    Ok(out)
}

/// Flink's `programArgs` string: arguments separated by spaces, single or double quotes
/// keeping spaces together.
pub fn split_program_args(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started || !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            (None, c) => current.push(c),
        }
    }
    if started || !current.is_empty() {
        out.push(current);
    }
    out
}

/// Replaces every `${name}` of `text` by its parameter (`$${` writes a literal `${`).
/// Every missing name is reported at once.
pub fn substitute_parameters(text: &str, params: &BTreeMap<String, String>) -> Result<String, ParameterError> {
    let mut out = String::with_capacity(text.len());
    let mut missing: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| ParameterError::Unterminated { start: rest[at..].chars().take(20).collect() })?;
        let name = after[..end].trim();
        match params.get(name) {
            Some(value) => out.push_str(value),
            None => {
                if !missing.iter().any(|m| m == name) {
                    missing.push(name.to_string());
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if let Some(first) = missing.first().cloned() {
        return Err(ParameterError::Missing { names: missing.join(", "), first });
    }
    Ok(out)
}

/// Whether a `source.file` path names something inside the job's package.
pub fn is_package_relative(path: &str) -> bool {
    !path.starts_with('/') && !path.contains("://") && !path.starts_with("file:")
}

impl JobPackage {
    /// A job file on its own: a package without artifacts.
    pub fn from_job_file(name: &str, text: String) -> Self {
        Self { job_file: name.to_string(), job_text: text, artifacts: BTreeMap::new() }
    }

    /// A job file and its artifacts sent separately (a multipart `POST /jobs`), checked as
    /// the entries of an archive are.
    pub fn from_parts(
        job_file: &str,
        job_text: String,
        parts: Vec<(String, Vec<u8>)>,
        limits: PackageLimits,
    ) -> Result<Self, PackageError> {
        if parts.len() + 1 > limits.max_entries {
            return Err(PackageError::TooManyEntries { limit: limits.max_entries });
        }
        if job_text.len() as u64 > limits.max_job_file_bytes {
            return Err(PackageError::JobFileTooLarge { name: job_file.to_string(), limit: limits.max_job_file_bytes });
        }
        let mut artifacts = BTreeMap::new();
        let mut total = 0u64;
        for (raw, bytes) in parts {
            let name = safe_relative(&raw).ok_or(PackageError::UnsafePath { name: raw })?;
            total += bytes.len() as u64;
            if total > limits.max_expanded_bytes {
                return Err(PackageError::TooLarge { limit: limits.max_expanded_bytes });
            }
            if artifacts.insert(name.clone(), bytes).is_some() {
                return Err(PackageError::Duplicate { name });
            }
        }
        Ok(Self { job_file: job_file.to_string(), job_text, artifacts })
    }

    /// The artifacts' expanded size.
    pub fn artifact_bytes(&self) -> u64 {
        self.artifacts.values().map(|b| b.len() as u64).sum()
    }

    /// Fills the parameters, validates the job (its `config` extended by `config`, as
    /// `/jars/:id/run`'s `flinkConfiguration`) and attaches the artifacts its relative
    /// `source.file` paths name (an artifact, or a directory of them).
    pub fn compile(
        &self,
        params: &BTreeMap<String, String>,
        config: &BTreeMap<String, String>,
        default_parallelism: u32,
    ) -> Result<JobGraph, JobError> {
        self.clone().into_graph(params, config, default_parallelism)
    }

    /// [`JobPackage::compile`], moving the artifacts' bytes into the graph (no copy).
    pub fn into_graph(
        mut self,
        params: &BTreeMap<String, String>,
        config: &BTreeMap<String, String>,
        default_parallelism: u32,
    ) -> Result<JobGraph, JobError> {
        let text = substitute_parameters(&self.job_text, params).map_err(|e| JobError::single(e.to_string()))?;
        let job = load_job_with_config(&text, config, default_parallelism)?;
        let mut problems = Vec::new();
        let mut used: BTreeSet<String> = BTreeSet::new();
        for op in &job.operators {
            // A module is one file of the package, never a directory of them.
            for path in op.spec.kind.module_paths() {
                if !is_package_relative(path) {
                    continue;
                }
                if self.artifacts.contains_key(path) {
                    used.insert(path.to_string());
                } else {
                    problems.push(super::JobProblem::operator(
                        &op.spec.id,
                        format!("'module' '{path}' names no file of the job package"),
                    ));
                }
            }
            let OperatorKind::FileSource { path, .. } = &op.spec.kind else { continue };
            if !is_package_relative(path) {
                continue;
            }
            let Some(prefix) = safe_relative(path) else {
                problems.push(super::JobProblem::operator(
                    &op.spec.id,
                    format!(
                        "'path' '{path}' must be a plain relative path inside the job package (no '.', '..' or empty segments)"
                    ),
                ));
                continue;
            };
            let mut named = false;
            for name in self.artifacts.keys() {
                if *name == prefix || name.strip_prefix(&prefix).is_some_and(|r| r.starts_with('/')) {
                    named = true;
                    used.insert(name.clone());
                }
            }
            if !named {
                problems.push(super::JobProblem::operator(
                    &op.spec.id,
                    format!("'path' '{path}' names no file of the job package"),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(JobError { problems });
        }
        let mut graph = job.job_graph();
        graph.artifacts = used
            .into_iter()
            .filter_map(|name| self.artifacts.remove(&name).map(|bytes| (name, Artifact::new(bytes))))
            .collect();
        Ok(graph)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use zip::write::SimpleFileOptions;

    use super::*;

    const JOB: &str = "flint: 1\nname: lines\noperators:\n  - id: src\n    op: source.file\n    path: ${input}\n  - id: out\n    op: sink.print\n    inputs: [src]\n";

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            if name.ends_with('/') {
                w.add_directory(name.to_string(), SimpleFileOptions::default()).unwrap();
            } else {
                w.start_file(name.to_string(), SimpleFileOptions::default()).unwrap();
                w.write_all(bytes).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn read(bytes: Vec<u8>) -> Result<JobPackage, PackageError> {
        read_package(Cursor::new(bytes), PackageLimits::default())
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_package_is_read_and_its_artifacts_attached_by_path() {
        let pkg = read(zip_of(&[
            ("job.yaml", JOB.as_bytes()),
            ("data/", b""),
            ("data/a.txt", b"x\ny\n"),
            ("data/b.txt", b"z\n"),
            ("other.txt", b"unused"),
        ]))
        .unwrap();
        assert_eq!(pkg.job_file, "job.yaml");
        assert_eq!(pkg.artifacts.len(), 3);
        let graph = pkg.compile(&params(&[("input", "data/a.txt")]), &BTreeMap::new(), 2).unwrap();
        assert_eq!(graph.artifacts.keys().collect::<Vec<_>>(), ["data/a.txt"]);
        assert!(graph.artifacts["data/a.txt"].is_intact());
        let dir = pkg.compile(&params(&[("input", "data")]), &BTreeMap::new(), 2).unwrap();
        assert_eq!(dir.artifacts.keys().collect::<Vec<_>>(), ["data/a.txt", "data/b.txt"]);
        // An absolute path is the taskmanager's file, not the package's.
        let abs = pkg.compile(&params(&[("input", "/etc/hostname")]), &BTreeMap::new(), 2).unwrap();
        assert!(abs.artifacts.is_empty());
    }

    #[test]
    fn a_path_naming_no_artifact_or_leaving_the_package_is_refused() {
        let pkg = read(zip_of(&[("job.yaml", JOB.as_bytes()), ("data/a.txt", b"x\n")])).unwrap();
        let err = pkg.compile(&params(&[("input", "data/missing.txt")]), &BTreeMap::new(), 1).unwrap_err();
        assert!(err.to_string().contains("'data/missing.txt' names no file of the job package"), "{err}");
        // `data/a` is not a directory of `data/a.txt`.
        assert!(pkg.compile(&params(&[("input", "data/a")]), &BTreeMap::new(), 1).is_err());
        let err = pkg.compile(&params(&[("input", "../data/a.txt")]), &BTreeMap::new(), 1).unwrap_err();
        assert!(err.to_string().contains("must be a plain relative path inside the job package"), "{err}");
    }

    #[test]
    fn bad_packages_are_refused_with_their_reason() {
        let job = ("job.yaml", JOB.as_bytes());
        assert!(matches!(read(b"not a zip at all".to_vec()), Err(PackageError::NotZip { .. })));
        assert!(matches!(read(zip_of(&[job, ("../evil", b"x")])), Err(PackageError::UnsafePath { .. })));
        assert!(matches!(read(zip_of(&[job, ("/etc/evil", b"x")])), Err(PackageError::UnsafePath { .. })));
        assert!(matches!(read(zip_of(&[job, ("a/../../evil", b"x")])), Err(PackageError::UnsafePath { .. })));
        assert!(matches!(read(zip_of(&[job, ("a\\..\\evil", b"x")])), Err(PackageError::UnsafePath { .. })));
        assert!(matches!(read(zip_of(&[("data/a.txt", b"x")])), Err(PackageError::NoJobFile)));
        // A job file below the root is an artifact, not the job.
        assert!(matches!(read(zip_of(&[("sub/job.yaml", JOB.as_bytes())])), Err(PackageError::NoJobFile)));
        assert!(matches!(
            read(zip_of(&[job, ("job.json", b"{}")])),
            Err(PackageError::SeveralJobFiles { names }) if names == "job.yaml, job.json"
        ));
        assert!(matches!(read(zip_of(&[("job.yaml", b"\xff\xfe")])), Err(PackageError::NotUtf8 { .. })));
        // A symbolic link.
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("job.yaml", SimpleFileOptions::default()).unwrap();
        w.write_all(JOB.as_bytes()).unwrap();
        w.add_symlink("data", "/etc", SimpleFileOptions::default()).unwrap();
        let linked = w.finish().unwrap().into_inner();
        assert!(matches!(read(linked), Err(PackageError::Link { name }) if name == "data"));
        // Truncated: the central directory is gone.
        let whole = zip_of(&[job, ("data/a.txt", b"x")]);
        assert!(matches!(read(whole[..whole.len() / 2].to_vec()), Err(PackageError::NotZip { .. })));
    }

    #[test]
    fn zip_bombs_are_stopped_by_the_limits_whatever_the_entries_claim() {
        // 64 MiB of zeros deflate to a few KiB.
        let zeros = vec![0u8; 64 << 20];
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("job.yaml", SimpleFileOptions::default()).unwrap();
        w.write_all(JOB.as_bytes()).unwrap();
        let deflated = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        w.start_file("bomb.bin", deflated).unwrap();
        w.write_all(&zeros).unwrap();
        let bomb = w.finish().unwrap().into_inner();
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let limits = PackageLimits { max_expanded_bytes: 16 << 20, ..PackageLimits::default() };
        assert!(matches!(read_package(Cursor::new(bomb.clone()), limits), Err(PackageError::TooLarge { .. })));
        assert!(read_package(Cursor::new(bomb.clone()), PackageLimits::default()).is_ok());
        let checked = check_package(Cursor::new(bomb.clone()), PackageLimits::default()).unwrap();
        assert_eq!(checked.artifacts["bomb.bin"].len(), 0, "checked, not kept");
        assert!(matches!(check_package(Cursor::new(bomb), limits), Err(PackageError::TooLarge { .. })));

        let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("f{i}"), Vec::new())).collect();
        let mut entries: Vec<(&str, &[u8])> = many.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        entries.push(("job.yaml", JOB.as_bytes()));
        let limits = PackageLimits { max_entries: 10, ..PackageLimits::default() };
        assert_eq!(
            read_package(Cursor::new(zip_of(&entries)), limits),
            Err(PackageError::TooManyEntries { limit: 10 })
        );
        let limits = PackageLimits { max_job_file_bytes: 10, ..PackageLimits::default() };
        assert!(matches!(
            read_package(Cursor::new(zip_of(&[("job.yaml", JOB.as_bytes())])), limits),
            Err(PackageError::JobFileTooLarge { .. })
        ));
    }

    #[test]
    fn a_job_file_and_its_artifacts_sent_apart_are_checked_as_entries() {
        let part = |n: &str| (n.to_string(), b"x".to_vec());
        let limits = PackageLimits::default();
        let pkg = JobPackage::from_parts("job.yaml", JOB.into(), vec![part("data/a.txt")], limits).unwrap();
        assert!(pkg.compile(&params(&[("input", "data/a.txt")]), &BTreeMap::new(), 1).is_ok());
        for bad in ["../a", "/a", "a//b", ""] {
            let err = JobPackage::from_parts("job.yaml", JOB.into(), vec![part(bad)], limits).unwrap_err();
            assert!(matches!(err, PackageError::UnsafePath { .. }), "{bad}: {err}");
        }
        let err = JobPackage::from_parts("job.yaml", JOB.into(), vec![part("a"), part("a")], limits).unwrap_err();
        assert_eq!(err, PackageError::Duplicate { name: "a".into() });
    }

    #[test]
    fn parameters_come_from_program_arguments() {
        let args: Vec<String> =
            ["--input", "data/a.txt", "--rate=5", "-n", "3"].iter().map(|s| s.to_string()).collect();
        let p = parse_program_args(&args).unwrap();
        assert_eq!(p, params(&[("input", "data/a.txt"), ("rate", "5"), ("n", "3")]));
        assert!(matches!(parse_program_args(&["--input".into()]), Err(ParameterError::Malformed { .. })));
        assert!(matches!(parse_program_args(&["input".into()]), Err(ParameterError::Malformed { .. })));
        assert_eq!(split_program_args(" --a 'b c'  --d \"\" e"), ["--a", "b c", "--d", "", "e"]);

        assert_eq!(
            substitute_parameters("x ${ a } $${a} ${b}", &params(&[("a", "1"), ("b", "2")])).unwrap(),
            "x 1 ${a} 2"
        );
        let err = substitute_parameters("${a} ${b} ${a}", &BTreeMap::new()).unwrap_err();
        assert_eq!(err, ParameterError::Missing { names: "a, b".into(), first: "a".into() });
        assert!(matches!(substitute_parameters("x ${a", &BTreeMap::new()), Err(ParameterError::Unterminated { .. })));
    }
}
