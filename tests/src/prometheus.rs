//! A real Prometheus server for tests: Debian's `prometheus` package's binary, started as a
//! child process on a free port of 127.0.0.1, in its own directory under the system temp
//! dir (config, TSDB, log), scraping the given targets every 500 ms.
//!
//! [`PrometheusServer::query`] runs an instant query through Prometheus's HTTP API and
//! returns its result vector. The server is killed by pid on drop. When Prometheus is not
//! installed, [`PrometheusServer::start`] fails with a message saying how to install it:
//! tests that need it fail loudly rather than skip.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::free_port;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const READY_DEADLINE: Duration = Duration::from_secs(60);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A Prometheus server child process.
pub struct PrometheusServer {
    pub dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl PrometheusServer {
    /// Starts a server scraping `targets` (`host:port`, path `/metrics`) and waits until it
    /// is ready.
    pub fn start(name: &str, targets: &[String]) -> Result<PrometheusServer, String> {
        if !Path::new(PROMETHEUS).exists() {
            return Err(format!(
                "Prometheus is not installed: {PROMETHEUS} is missing (install it with \
                 `apt-get update && apt-get install -y --no-install-recommends prometheus`, or \
                 run scripts/install-test-deps.sh)"
            ));
        }
        let dir = std::env::temp_dir().join(format!(
            "flint-prometheus-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "# written by the Flint test harness\n\
             global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
             scrape_configs:\n  - job_name: flint\n    static_configs:\n      - targets: [{}]\n",
            quoted.join(", ")
        );
        fs::write(dir.join("prometheus.yml"), config).map_err(|e| format!("cannot write prometheus.yml: {e}"))?;
        let log = dir.join("prometheus.log");
        let port = free_port();
        let out = fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {PROMETHEUS}: {e}"))?;
        let mut server = PrometheusServer { dir, port, log, child };
        let until = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("prometheus exited with {status}:\n{}", server.log_tail()));
            }
            if let Ok(reply) = ureq::get(&format!("http://127.0.0.1:{port}/-/ready")).call() {
                if reply.status() == 200 {
                    return Ok(server);
                }
            }
            if Instant::now() > until {
                return Err(format!("prometheus not ready after {READY_DEADLINE:?}:\n{}", server.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The result vector of an instant query (`[{"metric": {...}, "value": [ts, "v"]}]`).
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let mut reply = ureq::get(&format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query("query", promql)
            .call()
            .map_err(|e| format!("query {promql}: {e}"))?;
        let body: Value = reply.body_mut().read_json().map_err(|e| format!("query {promql}: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("query {promql}: {body}"));
        }
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The state of every scrape target (`up`/`down`, last error) from `/api/v1/targets`.
    pub fn targets(&self) -> String {
        ureq::get(&format!("http://127.0.0.1:{}/api/v1/targets", self.port))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
