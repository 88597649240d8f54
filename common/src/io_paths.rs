//! `flint.io.allowed-paths`: the local directories jobs may read and write.
//!
//! Unset (the default) a job may name any path its processes can reach, as in Flink. Set to
//! absolute directories (`/data/in;/data/out`, or a YAML list), every local path a job or a
//! request names must lie under one of them ([`AllowedPaths::named_by_job`] lists a job's):
//!
//! - `source.file` and `sink.file` paths (a relative `source.file` path naming files of the
//!   job package is the package's own and not checked), and the file-valued client
//!   properties of the Kafka connectors ([`KAFKA_PATH_PROPERTIES`]);
//! - the checkpoint and savepoint directories the job's own `config` names
//!   ([`JOB_DIRECTORY_KEYS`]; the cluster's values come from the operator and are trusted);
//! - `savepointPath` at submission, the target directory of a savepoint or
//!   stop-with-savepoint, the path of a savepoint disposal.
//!
//! How a path is checked ([`AllowedPaths::check_path`]): it is read as the process using it
//! reads it (a relative path against the working directory; `file:` URIs where that use
//! accepts them), then
//! 1. the longest prefix that exists is resolved with `std::fs::canonicalize` (symbolic
//!    links, and `..` as the kernel sees it) and the rest is appended and normalized
//!    lexically (`.` dropped, `..` pops: that part does not exist, so it holds no link); a
//!    dangling link on the way is refused;
//! 2. the result must lie under a root resolved the same way, by whole components
//!    (`/data2` is not under `/data`).
//!
//! A refusal names the field, the path as given and the roots, never where a link leads nor
//! the working directory. The jobmanager checks at submission (400, nothing is stored);
//! a taskmanager checks its operators' paths again when it builds the task (a link made in
//! between; relative paths against its own working directory).
//!
//! ```text
//! roots /data          /data/in/a.txt        allowed
//!                      /data/../etc/passwd   outside
//!                      /data2/x              outside (not a component prefix)
//!                      /data/link/passwd     refused: /data/link -> /etc
//! ```

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::checkpoint_storage::CheckpointStorage;
use crate::config::{options, ConfigError, ConfigValue, Configuration};
use crate::job::catalog::OperatorKind;
use crate::job::package::{is_package_relative, safe_relative};
use crate::job::plan::JobGraph;
use crate::job::{JobError, JobProblem};

/// The job `config` keys naming checkpoint and savepoint directories.
pub const JOB_DIRECTORY_KEYS: [&str; 4] = [
    "state.checkpoints.dir",
    "execution.checkpointing.dir",
    "state.savepoints.dir",
    "execution.checkpointing.savepoint-dir",
];

/// The Kafka client properties (librdkafka) naming local files. `plugin.library.paths` is a
/// `;`-separated list; `ssl.ca.location` may also be `probe` (the system's CA locations).
pub const KAFKA_PATH_PROPERTIES: [&str; 8] = [
    "ssl.ca.location",
    "ssl.crl.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.engine.location",
    "sasl.kerberos.keytab",
    "plugin.library.paths",
];

const EXPECTED: &str = "absolute directories separated by ';'";

/// The roots of `flint.io.allowed-paths`; none means unrestricted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedPaths {
    roots: Vec<PathBuf>,
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not under any root.
    Outside,
    /// Under a root as written, but a symbolic link on the way leads out (or nowhere).
    Link,
    /// Not a local path (another file system's URI).
    NotLocal,
}

impl AllowedPaths {
    /// No restriction.
    pub fn unrestricted() -> Self {
        Self::default()
    }

    /// Parses the option's value: absolute directories (or `file:` URIs of them) separated
    /// by `;`; an empty entry or a relative path is an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut roots = Vec::new();
        for entry in text.split(';').map(str::trim) {
            if entry.is_empty() {
                return Err(format!("{EXPECTED} (an entry is empty)"));
            }
            let path = Path::new(strip_file_scheme(entry));
            if !path.is_absolute() {
                return Err(format!("{EXPECTED} ('{entry}' is not absolute)"));
            }
            roots.push(normalize(path));
        }
        Ok(Self { roots })
    }

    /// `flint.io.allowed-paths` of `config` (unrestricted when unset).
    pub fn from_config(config: &Configuration) -> Result<Self, ConfigError> {
        Ok(config.get_optional(&options::FLINT_IO_ALLOWED_PATHS)?.unwrap_or_default())
    }

    pub fn is_restricted(&self) -> bool {
        !self.roots.is_empty()
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// These roots and `root` (which must be absolute); unrestricted stays unrestricted.
    pub fn with_root(&self, root: &Path) -> Self {
        let mut out = self.clone();
        if out.is_restricted() {
            out.roots.push(normalize(root));
        }
        out
    }

    /// Whether `path` (relative: against the working directory) lies under a root; see the
    /// module documentation.
    pub fn allows(&self, path: &Path) -> Result<(), Refusal> {
        if !self.is_restricted() {
            return Ok(());
        }
        let absolute = std::path::absolute(path).map_err(|_| Refusal::Outside)?;
        let roots: Vec<PathBuf> = self.roots.iter().map(|r| resolve(r).unwrap_or_else(|| r.clone())).collect();
        match resolve(&absolute) {
            Some(real) if roots.iter().any(|r| real.starts_with(r)) => Ok(()),
            _ if self.roots.iter().any(|r| normalize(&absolute).starts_with(r)) => Err(Refusal::Link),
            _ => Err(Refusal::Outside),
        }
    }

    /// [`AllowedPaths::allows`] for a plain path (as `source.file` and `sink.file` read it),
    /// with the message naming `field`.
    pub fn check_path(&self, field: &str, given: &str) -> Result<(), String> {
        self.allows(Path::new(given)).map_err(|r| self.message(r, field, given))
    }

    /// For a checkpoint or savepoint directory, read as `state.checkpoints.dir` is
    /// ([`CheckpointStorage::new`]: plain paths and local `file:` URIs).
    pub fn check_location(&self, field: &str, given: &str) -> Result<(), String> {
        if !self.is_restricted() {
            return Ok(());
        }
        let storage = CheckpointStorage::new(given).map_err(|_| self.message(Refusal::NotLocal, field, given))?;
        self.allows(storage.base()).map_err(|r| self.message(r, field, given))
    }

    /// For `savepointPath` at submission, read as the Dispatcher reads it
    /// ([`strip_file_scheme`], then a plain path).
    pub fn check_restore_path(&self, field: &str, given: &str) -> Result<(), String> {
        self.allows(Path::new(strip_file_scheme(given.trim()))).map_err(|r| self.message(r, field, given))
    }

    /// Every local path `graph` names that is not under a root, as one problem each.
    pub fn check_job(&self, graph: &JobGraph) -> Result<(), JobError> {
        if !self.is_restricted() {
            return Ok(());
        }
        let mut problems = Vec::new();
        for op in graph.vertices.iter().flat_map(|v| &v.operators) {
            for (field, path) in operator_paths(&op.kind, |p| names_artifact(graph, p)) {
                if let Err(e) = self.check_path(&field, path) {
                    problems.push(JobProblem::operator(&op.id, e));
                }
            }
        }
        for key in JOB_DIRECTORY_KEYS {
            if let Some(value) = graph.config.get(key) {
                if let Err(e) = self.check_location(&format!("config '{key}'"), value) {
                    problems.push(JobProblem::job(e));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(JobError { problems })
        }
    }

    /// The refusal of `given` (never anything it resolves to).
    pub fn message(&self, refusal: Refusal, field: &str, given: &str) -> String {
        let roots = self.to_string();
        match refusal {
            Refusal::Outside => {
                format!("{field} '{given}' is outside the allowed paths ({roots}; set by 'flint.io.allowed-paths')")
            }
            Refusal::Link => format!(
                "{field} '{given}' leads outside the allowed paths through a symbolic link ({roots}; set by \
                 'flint.io.allowed-paths')"
            ),
            Refusal::NotLocal => format!(
                "{field} '{given}' is not a local path; only local paths under the allowed paths ({roots}; set by \
                 'flint.io.allowed-paths') may be used"
            ),
        }
    }
}

/// The roots joined with `;`, as the option is written.
impl fmt::Display for AllowedPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, root) in self.roots.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{}", root.display())?;
        }
        Ok(())
    }
}

impl ConfigValue for AllowedPaths {
    fn parse_config(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

/// The local paths an operator names, each with its parameter (`'path'`,
/// `'properties.ssl.ca.location'`). A relative `source.file` path for which `is_artifact`
/// holds is a file of the job package and left out.
pub fn operator_paths<'a>(kind: &'a OperatorKind, is_artifact: impl Fn(&str) -> bool) -> Vec<(String, &'a str)> {
    let kafka = |properties: &'a [(String, String)]| -> Vec<(String, &'a str)> {
        let mut out = Vec::new();
        for (key, value) in properties.iter().filter(|(k, _)| KAFKA_PATH_PROPERTIES.contains(&k.as_str())) {
            let values: Vec<&str> =
                if key == "plugin.library.paths" { value.split(';').collect() } else { vec![value] };
            let probe = |v: &str| key == "ssl.ca.location" && v == "probe";
            for v in values.into_iter().map(str::trim).filter(|v| !v.is_empty() && !probe(v)) {
                out.push((format!("'properties.{key}'"), v));
            }
        }
        out
    };
    match kind {
        OperatorKind::FileSource { path, .. } if is_package_relative(path) && is_artifact(path) => Vec::new(),
        OperatorKind::FileSource { path, .. } | OperatorKind::FileSink { path, .. } => {
            vec![("'path'".to_string(), path.as_str())]
        }
        OperatorKind::KafkaSource(spec) => kafka(&spec.properties),
        OperatorKind::KafkaSink(spec) => kafka(&spec.properties),
        _ => Vec::new(),
    }
}

/// Whether `path` names a file or a directory of files of `graph`'s package.
fn names_artifact(graph: &JobGraph, path: &str) -> bool {
    let Some(prefix) = safe_relative(path) else { return false };
    graph.artifacts.keys().any(|name| *name == prefix || name.strip_prefix(&prefix).is_some_and(|r| r.starts_with('/')))
}

/// `file://x` and `file:x` as `x`; anything else as it is (how `savepointPath` is read).
pub fn strip_file_scheme(value: &str) -> &str {
    let value = value.strip_prefix("file://").unwrap_or(value);
    value.strip_prefix("file:").unwrap_or(value)
}

/// `path` with `.` dropped and `..` popping the component before it (never above the root).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The absolute `path` as the file system resolves it: its longest existing prefix
/// canonicalized, the rest appended and normalized. `None` when a dangling symbolic link
/// is on the way.
fn resolve(path: &Path) -> Option<PathBuf> {
    for prefix in path.ancestors() {
        match std::fs::canonicalize(prefix) {
            Ok(real) => {
                let rest = path.strip_prefix(prefix).unwrap_or(Path::new(""));
                return Some(normalize(&real.join(rest)));
            }
            Err(_) if std::fs::symlink_metadata(prefix).is_ok_and(|m| m.file_type().is_symlink()) => return None,
            Err(_) => {}
        }
    }
    Some(normalize(path))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use super::*;

    /// A unique directory under the system temp dir (canonical), removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "flint-io-paths-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(fs::canonicalize(&dir).unwrap())
        }

        fn path(&self, rest: &str) -> String {
            self.0.join(rest).display().to_string()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn allowed(roots: &[&str]) -> AllowedPaths {
        AllowedPaths::parse(&roots.join(";")).unwrap()
    }

    #[test]
    fn the_option_parses_absolute_roots_and_refuses_the_rest() {
        let a = AllowedPaths::parse(" /data/in ; file:///data/out/ ;/x/./y/../z").unwrap();
        assert_eq!(a.roots(), [PathBuf::from("/data/in"), PathBuf::from("/data/out"), PathBuf::from("/x/z")]);
        assert_eq!(a.to_string(), "/data/in;/data/out;/x/z");
        for bad in ["", "/a;;/b", "data", "/a;rel/b", "file:relative", " ; "] {
            assert!(AllowedPaths::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(AllowedPaths::parse("data").unwrap_err().contains("'data' is not absolute"));
        assert!(AllowedPaths::parse("/a;").unwrap_err().contains("an entry is empty"));
    }

    #[test]
    fn a_bad_value_fails_validation_naming_the_key() {
        let mut config = Configuration::new();
        assert!(!AllowedPaths::from_config(&config).unwrap().is_restricted());
        config.set("flint.io.allowed-paths", "relative/dir");
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("'flint.io.allowed-paths'") && e.contains("relative/dir"), "{e}");
        // A YAML list is joined with ';' by the loader.
        let yaml = Configuration::from_yaml_str("flint:\n  io:\n    allowed-paths:\n      - /a\n      - /b\n").unwrap();
        assert_eq!(AllowedPaths::from_config(&yaml).unwrap().roots(), [PathBuf::from("/a"), PathBuf::from("/b")]);
    }

    #[test]
    fn unrestricted_allows_everything() {
        let a = AllowedPaths::unrestricted();
        assert!(a.check_path("'path'", "/etc/shadow").is_ok());
        assert!(a.check_location("x", "hdfs://nn/x").is_ok());
        assert!(!a.with_root(Path::new("/x")).is_restricted());
    }

    #[test]
    fn paths_are_compared_by_components_after_normalizing() {
        let a = allowed(&["/data"]);
        assert_eq!(a.allows(Path::new("/data")), Ok(()));
        assert_eq!(a.allows(Path::new("/data/in/a.txt")), Ok(()));
        assert_eq!(a.allows(Path::new("/data/./in/../b")), Ok(()));
        assert_eq!(a.allows(Path::new("/data2/x")), Err(Refusal::Outside));
        assert_eq!(a.allows(Path::new("/data/../etc/passwd")), Err(Refusal::Outside));
        assert_eq!(a.allows(Path::new("/data/x/../../etc")), Err(Refusal::Outside));
        assert_eq!(a.allows(Path::new("/")), Err(Refusal::Outside));
        assert_eq!(a.allows(Path::new("/etc/passwd")), Err(Refusal::Outside));
    }

    #[test]
    fn relative_paths_resolve_against_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        let a = AllowedPaths::parse(&cwd.display().to_string()).unwrap();
        assert_eq!(a.allows(Path::new("out/x")), Ok(()));
        assert_eq!(a.allows(Path::new("../../../../../../../../../../etc")), Err(Refusal::Outside));
    }

    #[test]
    fn a_symbolic_link_leading_out_of_a_root_is_refused() {
        let root = TempDir::new();
        let outside = TempDir::new();
        fs::write(outside.0.join("secret"), "s").unwrap();
        fs::create_dir(root.0.join("in")).unwrap();
        fs::write(root.0.join("in/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink(&outside.0, root.0.join("out-link")).unwrap();
        std::os::unix::fs::symlink(root.0.join("in"), root.0.join("in-link")).unwrap();
        std::os::unix::fs::symlink(outside.0.join("missing"), root.0.join("dangling")).unwrap();
        let a = allowed(&[&root.path("")]);
        assert_eq!(a.allows(&root.0.join("in/a.txt")), Ok(()));
        assert_eq!(a.allows(&root.0.join("in/new/file")), Ok(()));
        assert_eq!(a.allows(&root.0.join("in-link/a.txt")), Ok(()));
        assert_eq!(a.allows(&root.0.join("out-link")), Err(Refusal::Link));
        assert_eq!(a.allows(&root.0.join("out-link/secret")), Err(Refusal::Link));
        assert_eq!(a.allows(&root.0.join("out-link/not/yet")), Err(Refusal::Link));
        assert_eq!(a.allows(&root.0.join("dangling")), Err(Refusal::Link));
        assert_eq!(a.allows(&root.0.join("dangling/x")), Err(Refusal::Link));
        // `..` after a link is the link target's parent, as the kernel sees it.
        assert_eq!(a.allows(&root.0.join("out-link/../x")), Err(Refusal::Link));
        // The message names what was given, never where the link leads.
        let given = root.path("out-link/secret");
        let e = a.check_path("'path'", &given).unwrap_err();
        assert!(e.contains(&given) && e.contains("symbolic link") && !e.contains(&outside.path("secret")), "{e}");
        // A root that is itself a link is compared as resolved.
        let via_link = allowed(&[&root.path("in-link")]);
        assert_eq!(via_link.allows(&root.0.join("in-link/a.txt")), Ok(()));
        assert_eq!(via_link.allows(&root.0.join("in/a.txt")), Ok(()));
        assert_eq!(via_link.allows(&root.0.join("out-link")), Err(Refusal::Outside));
    }

    #[test]
    fn messages_name_the_field_the_path_and_the_roots() {
        let a = allowed(&["/data/in", "/data/out"]);
        let e = a.check_path("'path'", "/etc/passwd").unwrap_err();
        assert_eq!(
            e,
            "'path' '/etc/passwd' is outside the allowed paths (/data/in;/data/out; set by 'flint.io.allowed-paths')"
        );
        // A relative path is named as given, not with the working directory.
        let e = a.check_path("'path'", "rel/x").unwrap_err();
        assert!(e.contains("'rel/x'") && !e.contains(&std::env::current_dir().unwrap().display().to_string()));
    }

    #[test]
    fn locations_and_restore_paths_are_read_as_their_users_read_them() {
        let a = allowed(&["/data"]);
        assert!(a.check_location("c", "file:///data/ckpt").is_ok());
        assert!(a.check_location("c", "file://localhost/data/ckpt").is_ok());
        assert!(a.check_location("c", "/data/ckpt").is_ok());
        assert!(a.check_location("c", "file:///etc").unwrap_err().contains("outside"));
        assert!(a.check_location("c", "hdfs://nn/data").unwrap_err().contains("not a local path"));
        assert!(a.check_restore_path("s", "file:///data/sp").is_ok());
        assert!(a.check_restore_path("s", "file:/data/sp").is_ok());
        assert!(a.check_restore_path("s", "/etc/sp").is_err());
        assert_eq!(strip_file_scheme("file:///x"), "/x");
        assert_eq!(strip_file_scheme("file:/x"), "/x");
        assert_eq!(strip_file_scheme("/x"), "/x");
    }

    fn graph(job: &str, config: &[(&str, &str)]) -> JobGraph {
        let mut graph = crate::job::compile_job(job, 1).unwrap();
        graph.config = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        graph
    }

    const FILE_JOB: &str = r#"{"flint": 1, "name": "j", "operators": [
        {"id": "src", "op": "source.file", "path": "SRC"},
        {"id": "out", "op": "sink.file", "path": "DST", "inputs": ["src"]}]}"#;

    #[test]
    fn a_job_is_checked_operator_by_operator_and_by_its_directories() {
        let a = allowed(&["/data"]);
        let ok = graph(&FILE_JOB.replace("SRC", "/data/in").replace("DST", "/data/out"), &[]);
        assert!(a.check_job(&ok).is_ok());
        let bad = graph(
            &FILE_JOB.replace("SRC", "/etc/passwd").replace("DST", "/tmp/x"),
            &[("state.checkpoints.dir", "file:///data/ckpt"), ("state.savepoints.dir", "/var/sp")],
        );
        let lines = a.check_job(&bad).unwrap_err().lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("operator 'src': 'path' '/etc/passwd' is outside"), "{lines:?}");
        assert!(lines[1].starts_with("operator 'out': 'path' '/tmp/x' is outside"), "{lines:?}");
        assert!(lines[2].starts_with("config 'state.savepoints.dir' '/var/sp' is outside"), "{lines:?}");
        assert!(AllowedPaths::unrestricted().check_job(&bad).is_ok());
    }

    #[test]
    fn package_files_are_not_checked_and_other_relative_paths_are() {
        let a = allowed(&["/data"]);
        let mut g = graph(&FILE_JOB.replace("SRC", "data/lines.txt").replace("DST", "/data/out"), &[]);
        // No such file in the package: a path of the taskmanager's working directory.
        assert!(a.check_job(&g).is_err());
        g.artifacts.insert("data/lines.txt".into(), crate::job::package::Artifact::new(b"x".to_vec()));
        assert!(a.check_job(&g).is_ok());
        let dir = graph(&FILE_JOB.replace("SRC", "data").replace("DST", "/data/out"), &[]);
        assert!(a.check_job(&dir).is_err());
        let mut dir = dir;
        dir.artifacts.insert("data/lines.txt".into(), crate::job::package::Artifact::new(b"x".to_vec()));
        assert!(a.check_job(&dir).is_ok());
    }

    #[test]
    fn kafka_file_properties_are_paths() {
        let job = r#"{"flint": 1, "name": "k", "operators": [
            {"id": "src", "op": "source.kafka", "topic": "t", "format": "raw",
             "properties.bootstrap.servers": "127.0.0.1:9092", "properties.group.id": "g",
             "properties.ssl.ca.location": "probe", "properties.ssl.key.location": "/etc/ssl/private/k.pem",
             "properties.plugin.library.paths": "/data/p.so; /usr/lib/q.so"},
            {"id": "out", "op": "sink.blackhole", "inputs": ["src"]}]}"#;
        let lines = allowed(&["/data"]).check_job(&graph(job, &[])).unwrap_err().lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("'properties.ssl.key.location' '/etc/ssl/private/k.pem'"), "{lines:?}");
        assert!(lines[1].contains("'properties.plugin.library.paths' '/usr/lib/q.so'"), "{lines:?}");
    }
}
