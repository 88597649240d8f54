//! The high-availability options, read with Flink's keys, defaults and legacy aliases.
//!
//! | key | default | legacy keys |
//! |-----|---------|-------------|
//! | `high-availability.type` (`none`, `zookeeper`; any case) | `none` | `high-availability` |
//! | `high-availability.zookeeper.quorum` | required with ZooKeeper | |
//! | `high-availability.zookeeper.path.root` | `/flink` | |
//! | `high-availability.cluster-id` | `/default` | `high-availability.zookeeper.path.namespace` |
//! | `high-availability.storageDir` | required with ZooKeeper | `high-availability.zookeeper.storageDir` |
//! | `high-availability.zookeeper.client.session-timeout` | `60 s` | |
//! | `high-availability.zookeeper.client.connection-timeout` | `15 s` | |
//! | `high-availability.zookeeper.client.retry-wait` | `5 s` | |
//! | `high-availability.zookeeper.client.max-retry-attempts` | `3` | |
//! | `high-availability.zookeeper.client.tolerate-suspended-connections` | `false` | |
//! | `high-availability.zookeeper.client.acl` (`open`, `creator`) | `open` | |
//!
//! Durations are written as Flink writes them (`60 s`, `500 ms`; a bare number is
//! milliseconds). Errors name the key that was read and its value.

use std::path::PathBuf;
use std::time::Duration;

use super::HaError;
use crate::config::{parse_duration, Configuration};

pub(crate) const TYPE: &str = "high-availability.type";
const TYPE_LEGACY: &[&str] = &["high-availability"];
pub(crate) const QUORUM: &str = "high-availability.zookeeper.quorum";
const ROOT: &str = "high-availability.zookeeper.path.root";
const CLUSTER_ID: &str = "high-availability.cluster-id";
const CLUSTER_ID_LEGACY: &[&str] = &["high-availability.zookeeper.path.namespace"];
pub(crate) const STORAGE_DIR: &str = "high-availability.storageDir";
const STORAGE_DIR_LEGACY: &[&str] = &["high-availability.zookeeper.storageDir"];
const SESSION_TIMEOUT: &str = "high-availability.zookeeper.client.session-timeout";
const CONNECTION_TIMEOUT: &str = "high-availability.zookeeper.client.connection-timeout";
const RETRY_WAIT: &str = "high-availability.zookeeper.client.retry-wait";
const MAX_RETRY_ATTEMPTS: &str = "high-availability.zookeeper.client.max-retry-attempts";
const TOLERATE_SUSPENDED: &str = "high-availability.zookeeper.client.tolerate-suspended-connections";
const ACL: &str = "high-availability.zookeeper.client.acl";

/// Which HA services a process uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaConfig {
    /// `none`: standalone, in memory.
    None,
    /// `zookeeper`.
    ZooKeeper(ZooKeeperHaConfig),
}

/// The ACL of the znodes Flint creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZooKeeperAcl {
    /// Anyone may do anything (`open`, Flink's default).
    Open,
    /// Only the authenticated creator (`creator`; needs an authenticated session, which Flint
    /// does not set up yet, so ZooKeeper rejects the ACL without one).
    Creator,
}

/// The ZooKeeper HA options. [`ZooKeeperHaConfig::new`] gives Flink's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZooKeeperHaConfig {
    /// `host:port[,host:port...]`, whitespace removed.
    pub quorum: String,
    /// Normalized root path, e.g. `/flink`.
    pub root: String,
    /// Normalized cluster id, e.g. `/default`.
    pub cluster_id: String,
    /// Where values too large for ZooKeeper are written (a local or mounted path).
    pub storage_dir: PathBuf,
    pub session_timeout: Duration,
    pub connection_timeout: Duration,
    pub retry_wait: Duration,
    pub max_retry_attempts: u32,
    pub tolerate_suspended_connections: bool,
    pub acl: ZooKeeperAcl,
}

impl ZooKeeperHaConfig {
    /// Flink's defaults for everything but the two required settings.
    pub fn new(quorum: impl Into<String>, storage_dir: impl Into<PathBuf>) -> Self {
        Self {
            quorum: quorum.into().split_whitespace().collect(),
            root: "/flink".into(),
            cluster_id: "/default".into(),
            storage_dir: storage_dir.into(),
            session_timeout: Duration::from_secs(60),
            connection_timeout: Duration::from_secs(15),
            retry_wait: Duration::from_secs(5),
            max_retry_attempts: 3,
            tolerate_suspended_connections: false,
            acl: ZooKeeperAcl::Open,
        }
    }

    /// The znode everything of this cluster lives under: root + cluster id, e.g.
    /// `/flink/default`.
    pub fn base_path(&self) -> String {
        zk_path(&[&self.root, &self.cluster_id])
    }

    /// The cluster's directory under the storage dir (`<storageDir>/<cluster-id>`).
    pub fn cluster_storage_dir(&self) -> PathBuf {
        self.storage_dir.join(self.cluster_id.trim_matches('/'))
    }

    /// The job result store's directory (`<storageDir>/job-result-store/<cluster-id>`, as
    /// Flink's `job-result-store.storage-path` default).
    pub fn job_result_store_dir(&self) -> PathBuf {
        self.storage_dir.join("job-result-store").join(self.cluster_id.trim_matches('/'))
    }
}

/// Joins path segments as Flink's `ZooKeeperUtils.generateZookeeperPath`: each trimmed of
/// slashes, empty ones dropped, joined with `/`, with a leading `/`.
pub(crate) fn zk_path(segments: &[&str]) -> String {
    let mut path = String::new();
    for segment in segments.iter().map(|s| s.trim_matches('/')).filter(|s| !s.is_empty()) {
        path.push('/');
        path.push_str(segment);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// The configured value of `key` or of the first legacy key present: (key read, value).
fn lookup<'a>(conf: &'a Configuration, key: &'static str, legacy: &[&'static str]) -> Option<(&'static str, &'a str)> {
    if let Some(value) = conf.get_raw(key) {
        return Some((key, value));
    }
    legacy.iter().find_map(|&k| conf.get_raw(k).map(|v| (k, v)))
}

fn invalid(key: &'static str, value: &str, expected: &str) -> HaError {
    HaError::InvalidConfig { key, value: value.to_string(), expected: expected.to_string() }
}

fn duration(conf: &Configuration, key: &'static str, default: Duration) -> Result<Duration, HaError> {
    match conf.get_raw(key) {
        None => Ok(default),
        Some(value) => match parse_duration(value) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(invalid(key, value, "a positive duration")),
            Err(expected) => Err(invalid(key, value, &expected)),
        },
    }
}

/// A znode path option: must not contain empty, `.` or `..` segments once normalized.
fn znode_option(
    conf: &Configuration,
    key: &'static str,
    legacy: &[&'static str],
    default: &str,
) -> Result<String, HaError> {
    let Some((key, value)) = lookup(conf, key, legacy) else {
        return Ok(zk_path(&[default]));
    };
    let trimmed = value.trim();
    if trimmed.split('/').any(|s| s == "." || s == "..") || trimmed.contains(char::is_whitespace) {
        return Err(invalid(key, value, "a ZooKeeper path such as '/flink' (no '.', '..' or whitespace)"));
    }
    Ok(zk_path(&[trimmed]))
}

/// `file:///x`, `file:/x` or a plain path; other file systems are not supported.
fn storage_dir(key: &'static str, value: &str) -> Result<PathBuf, HaError> {
    let value_trimmed = value.trim();
    let path = if let Some(rest) = value_trimmed.strip_prefix("file://") {
        rest
    } else if let Some(rest) = value_trimmed.strip_prefix("file:") {
        rest
    } else if value_trimmed.contains("://") {
        return Err(invalid(key, value, "a local path or a file:// URI (other file systems are not supported)"));
    } else {
        value_trimmed
    };
    if path.is_empty() {
        return Err(invalid(key, value, "a non-empty path"));
    }
    Ok(PathBuf::from(path))
}

impl HaConfig {
    /// Reads the HA options. ZooKeeper mode requires the quorum and the storage dir.
    pub fn from_configuration(conf: &Configuration) -> Result<Self, HaError> {
        let mode = lookup(conf, TYPE, TYPE_LEGACY);
        match mode.map(|(k, v)| (k, v.trim().to_ascii_lowercase())) {
            None => return Ok(HaConfig::None),
            Some((_, m)) if m == "none" => return Ok(HaConfig::None),
            Some((_, m)) if m == "zookeeper" => {}
            Some((key, _)) => {
                let value = mode.map(|(_, v)| v).unwrap_or_default();
                return Err(invalid(key, value, "'none' or 'zookeeper' (other HA services are not supported)"));
            }
        }

        let quorum = match conf.get_raw(QUORUM) {
            Some(q) if !q.trim().is_empty() => q.split_whitespace().collect::<String>(),
            _ => {
                return Err(HaError::MissingConfig {
                    key: QUORUM,
                    reason: "ZooKeeper high availability needs the quorum, e.g. 'zk1:2181,zk2:2181'".into(),
                })
            }
        };
        let storage = match lookup(conf, STORAGE_DIR, STORAGE_DIR_LEGACY) {
            Some((key, value)) if !value.trim().is_empty() => storage_dir(key, value)?,
            _ => {
                return Err(HaError::MissingConfig {
                    key: STORAGE_DIR,
                    reason: "ZooKeeper high availability stores job graphs and checkpoint metadata there".into(),
                })
            }
        };
        let mut zk = ZooKeeperHaConfig::new(quorum, storage);
        zk.root = znode_option(conf, ROOT, &[], "/flink")?;
        zk.cluster_id = znode_option(conf, CLUSTER_ID, CLUSTER_ID_LEGACY, "/default")?;
        if zk.cluster_id == "/" {
            let value = lookup(conf, CLUSTER_ID, CLUSTER_ID_LEGACY).map(|(_, v)| v).unwrap_or_default();
            return Err(invalid(CLUSTER_ID, value, "a non-empty cluster id such as '/default'"));
        }
        zk.session_timeout = duration(conf, SESSION_TIMEOUT, zk.session_timeout)?;
        zk.connection_timeout = duration(conf, CONNECTION_TIMEOUT, zk.connection_timeout)?;
        zk.retry_wait = duration(conf, RETRY_WAIT, zk.retry_wait)?;
        if let Some(value) = conf.get_raw(MAX_RETRY_ATTEMPTS) {
            zk.max_retry_attempts =
                value.trim().parse().map_err(|_| invalid(MAX_RETRY_ATTEMPTS, value, "a non-negative integer"))?;
        }
        if let Some(value) = conf.get_raw(TOLERATE_SUSPENDED) {
            zk.tolerate_suspended_connections = match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(invalid(TOLERATE_SUSPENDED, value, "'true' or 'false'")),
            };
        }
        if let Some(value) = conf.get_raw(ACL) {
            zk.acl = match value.trim().to_ascii_lowercase().as_str() {
                "open" => ZooKeeperAcl::Open,
                "creator" => ZooKeeperAcl::Creator,
                _ => return Err(invalid(ACL, value, "'open' or 'creator'")),
            };
        }
        Ok(HaConfig::ZooKeeper(zk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(entries: &[(&str, &str)]) -> Configuration {
        let mut conf = Configuration::new();
        for (k, v) in entries {
            conf.set(*k, *v);
        }
        conf
    }

    fn zk(entries: &[(&str, &str)]) -> ZooKeeperHaConfig {
        let mut all = vec![(TYPE, "zookeeper"), (QUORUM, "localhost:2181"), (STORAGE_DIR, "/tmp/ha")];
        all.extend_from_slice(entries);
        match HaConfig::from_configuration(&conf(&all)).unwrap() {
            HaConfig::ZooKeeper(zk) => zk,
            HaConfig::None => panic!("expected zookeeper"),
        }
    }

    #[test]
    fn mode_defaults_to_none_and_accepts_any_case_and_the_legacy_key() {
        assert_eq!(HaConfig::from_configuration(&Configuration::new()).unwrap(), HaConfig::None);
        assert_eq!(HaConfig::from_configuration(&conf(&[(TYPE, "NONE")])).unwrap(), HaConfig::None);
        let legacy = conf(&[("high-availability", "ZOOKEEPER"), (QUORUM, "a:1, b:2"), (STORAGE_DIR, "file:///ha")]);
        let HaConfig::ZooKeeper(zk) = HaConfig::from_configuration(&legacy).unwrap() else { panic!() };
        assert_eq!(zk.quorum, "a:1,b:2");
        assert_eq!(zk.storage_dir, PathBuf::from("/ha"));
        // The new key wins over the legacy one.
        let both = conf(&[(TYPE, "none"), ("high-availability", "zookeeper")]);
        assert_eq!(HaConfig::from_configuration(&both).unwrap(), HaConfig::None);
    }

    #[test]
    fn flink_defaults() {
        let zk = zk(&[]);
        assert_eq!(zk.base_path(), "/flink/default");
        assert_eq!(zk.session_timeout, Duration::from_secs(60));
        assert_eq!(zk.connection_timeout, Duration::from_secs(15));
        assert_eq!(zk.retry_wait, Duration::from_secs(5));
        assert_eq!(zk.max_retry_attempts, 3);
        assert!(!zk.tolerate_suspended_connections);
        assert_eq!(zk.acl, ZooKeeperAcl::Open);
        assert_eq!(zk.job_result_store_dir(), PathBuf::from("/tmp/ha/job-result-store/default"));
        assert_eq!(zk.cluster_storage_dir(), PathBuf::from("/tmp/ha/default"));
    }

    #[test]
    fn options_are_read_and_paths_normalized() {
        let zk = zk(&[
            (ROOT, "flint/"),
            (CLUSTER_ID, "//my-cluster"),
            (SESSION_TIMEOUT, "4 s"),
            (CONNECTION_TIMEOUT, "2000"),
            (RETRY_WAIT, "100 ms"),
            (MAX_RETRY_ATTEMPTS, "7"),
            (TOLERATE_SUSPENDED, "TRUE"),
            (ACL, "Creator"),
        ]);
        assert_eq!(zk.base_path(), "/flint/my-cluster");
        assert_eq!(zk.session_timeout, Duration::from_secs(4));
        assert_eq!(zk.connection_timeout, Duration::from_secs(2));
        assert_eq!(zk.retry_wait, Duration::from_millis(100));
        assert_eq!(zk.max_retry_attempts, 7);
        assert!(zk.tolerate_suspended_connections);
        assert_eq!(zk.acl, ZooKeeperAcl::Creator);
        assert_eq!(zk_path(&["/", "/"]), "/");
        assert_eq!(zk_path(&["/", "/default", "leader"]), "/default/leader");
    }

    #[test]
    fn errors_name_the_key_and_value() {
        let err = |entries: &[(&str, &str)]| HaConfig::from_configuration(&conf(entries)).unwrap_err().to_string();
        let e = err(&[(TYPE, "kubernetes")]);
        assert!(e.contains("'high-availability.type'") && e.contains("'kubernetes'"), "{e}");
        let e = err(&[("high-availability", "etcd")]);
        assert!(e.contains("'high-availability'") && e.contains("'etcd'"), "{e}");
        let e = err(&[(TYPE, "zookeeper"), (STORAGE_DIR, "/x")]);
        assert!(e.contains(QUORUM), "{e}");
        let e = err(&[(TYPE, "zookeeper"), (QUORUM, "h:1")]);
        assert!(e.contains("'high-availability.storageDir'"), "{e}");
        let e = err(&[(TYPE, "zookeeper"), (QUORUM, "h:1"), (STORAGE_DIR, "s3://bucket/ha")]);
        assert!(e.contains("s3://bucket/ha") && e.contains(STORAGE_DIR), "{e}");
        let base = [(TYPE, "zookeeper"), (QUORUM, "h:1"), (STORAGE_DIR, "/x")];
        for (key, value) in [
            (SESSION_TIMEOUT, "soon"),
            (SESSION_TIMEOUT, "0 s"),
            (MAX_RETRY_ATTEMPTS, "-1"),
            (TOLERATE_SUSPENDED, "yes"),
            (ACL, "world"),
            (ROOT, "/a/../b"),
            (CLUSTER_ID, "/"),
        ] {
            let mut entries = base.to_vec();
            entries.push((key, value));
            let e = err(&entries);
            assert!(e.contains(key) && e.contains(value), "{key}={value}: {e}");
        }
        // The legacy storage key is named when it was the one read.
        let e = err(&[(TYPE, "zookeeper"), (QUORUM, "h:1"), ("high-availability.zookeeper.storageDir", "hdfs://x")]);
        assert!(e.contains("'high-availability.zookeeper.storageDir'"), "{e}");
    }
}
