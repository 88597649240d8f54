//! What every Flint process does the same way: command-line arguments, loading and
//! validating the configuration, logging, waiting for a stop signal, and reading its
//! own resource usage.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Configuration};
use crate::messages::LogFileError;

/// The arguments every Flint daemon takes, as Flink's do.
#[derive(Debug, Clone, Parser)]
pub struct DaemonArgs {
    /// The configuration directory (holding config.yaml or flink-conf.yaml).
    #[arg(long = "configDir", short = 'c', env = "FLINT_CONF_DIR")]
    pub config_dir: Option<PathBuf>,
    /// A configuration override, `-D key=value`; repeatable.
    #[arg(short = 'D', value_name = "key=value")]
    pub dynamic: Vec<String>,
}

impl DaemonArgs {
    /// Loads the configuration: file, then `-D` overrides; fails on invalid values and
    /// warns about unknown keys.
    pub fn load_configuration(&self) -> Result<Configuration, ConfigError> {
        let dynamic =
            self.dynamic.iter().map(|d| Configuration::parse_dynamic_property(d)).collect::<Result<Vec<_>, _>>()?;
        let config_dir = self.config_dir.clone().or_else(|| std::env::var_os("FLINK_CONF_DIR").map(PathBuf::from));
        let config = Configuration::load(config_dir.as_deref(), &dynamic)?;
        config.validate()?;
        config.warn_unknown_keys();
        Ok(config)
    }
}

/// Logs to the file named by `FLINT_LOG_FILE` (the scripts set it), else to stderr.
/// The level comes from `RUST_LOG` (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let file = std::env::var_os("FLINT_LOG_FILE")
        .and_then(|path| std::fs::OpenOptions::new().create(true).append(true).open(path).ok());
    match file {
        Some(file) => builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}

/// The log directory: `FLINT_LOG_DIR`, `env.log.dir`, or the directory of `FLINT_LOG_FILE`.
pub fn log_dir(config: &Configuration) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FLINT_LOG_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Ok(Some(dir)) = config.get_optional(&crate::config::options::ENV_LOG_DIR) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("FLINT_LOG_FILE").and_then(|f| PathBuf::from(f).parent().map(|p| p.to_path_buf()))
}

/// A token cancelled on SIGTERM or SIGINT. Call from within a tokio runtime.
pub fn shutdown_on_signals(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("could not install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
            _ = token.cancelled() => return,
        }
        token.cancel();
    });
}

/// The files of a log directory (name, size, modification time), sorted by name.
pub fn list_log_files(dir: &std::path::Path) -> Vec<crate::messages::LogFileInfo> {
    let mut logs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let mtime_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            logs.push(crate::messages::LogFileInfo {
                name: entry.file_name().to_string_lossy().into_owned(),
                size: meta.len(),
                mtime_ms,
            });
        }
    }
    logs.sort_by(|a, b| a.name.cmp(&b.name));
    logs
}

/// This process's log file (`FLINT_LOG_FILE`) and its `.out` sibling.
pub fn own_log_files() -> Option<(PathBuf, PathBuf)> {
    let log = PathBuf::from(std::env::var_os("FLINT_LOG_FILE")?);
    Some((log.clone(), log.with_extension("out")))
}

/// Resolves which file a request names: the log, the stdout, or a plain file name in
/// the log directory (no paths: a name with a separator or `..` is refused).
///
/// `dir` is the directory the process lists its log files from (`env.log.dir`); without
/// one, named files are looked up next to the process's own log file.
pub fn resolve_log_file(
    file: &crate::messages::LogFile,
    dir: Option<&std::path::Path>,
) -> Result<PathBuf, LogFileError> {
    match file {
        crate::messages::LogFile::Log => own_log_files().map(|(log, _)| log).ok_or(LogFileError::NoLogFile),
        crate::messages::LogFile::Stdout => own_log_files().map(|(_, out)| out).ok_or(LogFileError::NoLogFile),
        crate::messages::LogFile::Named(name) => {
            if name.is_empty() || name.contains('/') || name.contains("..") {
                return Err(LogFileError::InvalidName { name: name.clone() });
            }
            if let Some(dir) = dir {
                return Ok(dir.join(name));
            }
            let (log, _) = own_log_files().ok_or(LogFileError::NoLogFile)?;
            Ok(log.parent().map_or_else(|| PathBuf::from(name), |d| d.join(name)))
        }
    }
}

/// The last `max_bytes` of a file as text.
pub fn read_tail(path: &std::path::Path, max_bytes: u64) -> Result<String, LogFileError> {
    use std::io::{Read, Seek, SeekFrom};
    // Errors go to REST clients: they name the file, never the server's directories.
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let error = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => LogFileError::NotFound { name: name.clone() },
        kind => LogFileError::Io { name: name.clone(), reason: kind.to_string() },
    };
    let mut file = std::fs::File::open(path).map_err(error)?;
    let len = file.metadata().map_err(error)?.len();
    if len > max_bytes {
        file.seek(SeekFrom::Start(len - max_bytes)).map_err(error)?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(error)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Milliseconds since the epoch.
pub fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn proc_kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of open files of this process (1024 where unknown).
pub fn open_files_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Raises the soft limit of open files to the hard limit (as a JVM does at start), so that
/// connection floods meet Flint's own connection limits long before the kernel's; returns
/// the soft limit in force.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
            tracing::debug!(soft, hard, "could not raise the open-file limit");
        }
    }
    open_files_limit()
}

/// Resident memory of this process in bytes (VmRSS), 0 where unknown.
pub fn resident_memory_bytes() -> u64 {
    proc_kib("/proc/self/status", "VmRSS:").unwrap_or(0) * 1024
}

/// Physical and available memory of the machine in bytes.
pub fn machine_memory_bytes() -> (u64, u64) {
    (
        proc_kib("/proc/meminfo", "MemTotal:").unwrap_or(0) * 1024,
        proc_kib("/proc/meminfo", "MemAvailable:").unwrap_or(0) * 1024,
    )
}

/// The most threads a thread dump lists.
pub const MAX_DUMPED_THREADS: usize = 4096;

/// This process's threads as Flink's thread dumps list them: each thread's name and a text
/// in the shape of Java's `ThreadInfo` (`"name" Id=<tid> <STATE>`), with what Linux knows
/// of it: its state, CPU time and, when it sleeps, the kernel function it waits in. Flint
/// cannot walk other threads' user-space stacks without stopping them, so no frames.
pub fn thread_dump() -> Vec<crate::messages::ThreadDumpEntry> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    let mut tids: Vec<u64> =
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).take(MAX_DUMPED_THREADS).collect();
    tids.sort_unstable();
    tids.into_iter()
        .filter_map(|tid| {
            let base = format!("/proc/self/task/{tid}");
            let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let state = fields.first().copied().unwrap_or("?");
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            // utime and stime, in USER_HZ (100 per second on Linux).
            let cpu_ms = (ticks(11) + ticks(12)) * 10;
            let java_state = match state {
                "R" => "RUNNABLE",
                "S" | "I" => "TIMED_WAITING",
                "D" => "WAITING",
                "T" | "t" => "BLOCKED",
                _ => "TERMINATED",
            };
            let wchan = std::fs::read_to_string(format!("{base}/wchan")).unwrap_or_default();
            let waiting = match wchan.trim() {
                "" | "0" => String::new(),
                w => format!(", waiting in {w}"),
            };
            let text =
                format!("\"{name}\" Id={tid} {java_state}\n\t(linux state {state}, cpu time {cpu_ms} ms{waiting})\n\n");
            Some(crate::messages::ThreadDumpEntry { thread_name: name, stringified_thread_info: text })
        })
        .collect()
}

/// Number of CPU cores this process may use.
pub fn cpu_cores() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_log_files_come_from_the_listed_directory_and_never_from_elsewhere() {
        use crate::messages::LogFile;
        let dir = std::path::Path::new("/var/log/flint");
        let named = |n: &str| resolve_log_file(&LogFile::Named(n.into()), Some(dir));
        assert_eq!(named("jobmanager.log").unwrap(), dir.join("jobmanager.log"));
        for bad in ["", "../etc/passwd", "a/b", ".."] {
            assert!(matches!(named(bad), Err(LogFileError::InvalidName { .. })), "{bad}");
        }
    }

    #[test]
    fn a_thread_dump_lists_this_processs_threads_by_name() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("dump-me".into())
            .spawn(move || {
                started_tx.send(()).unwrap();
                rx.recv()
            })
            .unwrap();
        started_rx.recv().unwrap();
        // Blocked on the channel by now (or about to be): wait until Linux says it sleeps.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut dump = thread_dump();
        while std::time::Instant::now() < until
            && !dump.iter().any(|e| e.thread_name == "dump-me" && e.stringified_thread_info.contains("WAITING"))
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
            dump = thread_dump();
        }
        assert!(dump.len() >= 2, "{dump:?}");
        let me = dump.iter().find(|e| e.thread_name == "dump-me").expect("the named thread");
        assert!(me.stringified_thread_info.starts_with("\"dump-me\" Id="), "{me:?}");
        assert!(me.stringified_thread_info.contains("WAITING"), "a thread blocked on a channel waits: {me:?}");
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn reads_own_resource_usage() {
        assert!(resident_memory_bytes() > 0);
        let (total, available) = machine_memory_bytes();
        assert!(total >= available && total > 0);
        assert!(cpu_cores() >= 1);
        assert!(epoch_ms() > 1_600_000_000_000);
    }

    #[test]
    fn dynamic_properties_override_and_bad_ones_fail() {
        let args = DaemonArgs::parse_from(["x", "-D", "rest.port=9999", "-Dtaskmanager.numberOfTaskSlots=3"]);
        let config = args.load_configuration().unwrap();
        assert_eq!(config.get_raw("rest.port"), Some("9999"));
        assert_eq!(config.get_raw("taskmanager.numberOfTaskSlots"), Some("3"));
        let bad = DaemonArgs::parse_from(["x", "-D", "heartbeat.interval=soon"]);
        let err = bad.load_configuration().unwrap_err().to_string();
        assert!(err.contains("heartbeat.interval") && err.contains("soon"), "{err}");
    }
}
