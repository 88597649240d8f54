//! Test harness for integration tests that start real Flint processes.
//!
//! A [`Harness`] owns a fresh Flint "home" under the system temp directory (its own
//! `conf/`, `log/` and pid directory), picks free ports, starts the real binaries (built
//! by the same `cargo` profile as the test) directly or through the real scripts, and
//! talks to them over REST. Every wait has a deadline and prints the tails of all
//! process logs when it runs out. On drop, every process it started — directly or via
//! the scripts' pid files — is killed by pid.

pub mod browser;
pub mod kafka;
pub mod prometheus;
pub mod zookeeper;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The directory holding the binaries of the profile this test was built with.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLINT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary>, or target/<profile>/<binary> for the benches.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("the executable's directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Resident memory (VmRSS) of a process in KiB, `None` once it is gone.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..].split_whitespace().next()?.parse().ok()
}

/// The repository root (for `scripts/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// `n` distinct ports that were free a moment ago. The listeners are held until all are
/// bound (so one call never returns a port twice), and a port is never handed out twice
/// by this process.
pub fn free_ports(n: usize) -> Vec<u16> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = listener.local_addr().expect("local addr").port();
        if !handed_out.contains(&port) && !ports.contains(&port) {
            ports.push(port);
            handed_out.push(port);
        }
        held.push(listener);
    }
    ports
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// The JSON type of a value, for comparing the shapes of REST answers with Flink's.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn is_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// A process started directly by the harness.
pub struct Process {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Process {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        signal(self.pid(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `deadline` for the exit code.
    pub fn terminate(&mut self, deadline: Duration) -> Option<i32> {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(deadline)
    }

    /// Waits for the process to exit on its own; `None` if it did not within `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}

/// An HTTP answer: status code and parsed JSON body (or `Value::Null`).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One test's Flint installation and the processes it runs.
pub struct Harness {
    pub home: PathBuf,
    pub conf_dir: PathBuf,
    pub log_dir: PathBuf,
    pub pid_dir: PathBuf,
    pub rest_port: u16,
    pub rpc_port: u16,
    config: BTreeMap<String, String>,
    processes: Vec<Process>,
    agent: ureq::Agent,
    /// `https` once [`Harness::with_tls`] turned REST TLS on.
    scheme: &'static str,
}

/// The certificates [`Harness::with_tls`] wrote under `<home>/tls`.
pub struct TestCerts {
    pub dir: PathBuf,
    pub ca: flint_common::tls::certgen::Ca,
    pub password: String,
    /// The cluster certificate (for `localhost` and `127.0.0.1`): PEM files and keystore.
    pub cluster: flint_common::tls::certgen::HostFiles,
    pub truststore: PathBuf,
    pub ca_pem: PathBuf,
}

/// A ureq agent like the harness's: HTTPS trusting `ca_pem`, presenting `client` (chain PEM,
/// key PEM) when given.
pub fn https_agent(ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let roots: Vec<Certificate<'static>> = ureq::tls::parse_pem(ca_pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let client_cert = client.map(|(chain, key)| {
        let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(chain)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        ClientCert::new_with_certs(&chain, PrivateKey::from_pem(key).expect("client key PEM"))
    });
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(&roots))
        .client_cert(client_cert)
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(tls)
        .build()
        .into()
}

impl Harness {
    /// A fresh home with free REST and RPC ports and fast-failing defaults.
    pub fn new(test_name: &str) -> Self {
        let home = std::env::temp_dir().join(format!(
            "flint-it-{}-{}-{}",
            test_name,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&home);
        let conf_dir = home.join("conf");
        let log_dir = home.join("log");
        let pid_dir = home.join("pids");
        for d in [&conf_dir, &log_dir, &pid_dir] {
            fs::create_dir_all(d).expect("create harness dirs");
        }
        let ports = free_ports(2);
        let (rest_port, rpc_port) = (ports[0], ports[1]);
        let mut config = BTreeMap::new();
        for (k, v) in [
            ("jobmanager.rpc.address", "localhost".to_string()),
            ("jobmanager.rpc.port", rpc_port.to_string()),
            ("jobmanager.bind-host", "localhost".to_string()),
            ("taskmanager.bind-host", "localhost".to_string()),
            ("taskmanager.host", "localhost".to_string()),
            ("rest.address", "localhost".to_string()),
            ("rest.bind-address", "localhost".to_string()),
            ("rest.port", rest_port.to_string()),
            ("env.log.dir", log_dir.display().to_string()),
            ("env.pid.dir", pid_dir.display().to_string()),
            ("cluster.registration.max-timeout", "1 s".to_string()),
            // Blob stores, caches and uploads stay inside the test's home, also when a
            // process is killed before it removes them.
            ("blob.storage.directory", home.join("blob-storage").display().to_string()),
            ("web.tmpdir", home.join("web-tmp").display().to_string()),
        ] {
            config.insert(k.to_string(), v);
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let harness = Self {
            home,
            conf_dir,
            log_dir,
            pid_dir,
            rest_port,
            rpc_port,
            config,
            processes: Vec::new(),
            agent,
            scheme: "http",
        };
        harness.write_config();
        harness
    }

    /// Sets a configuration key (written to `conf/config.yaml` at once).
    pub fn set(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.config.insert(key.to_string(), value.to_string());
        self.write_config();
        self
    }

    /// ZooKeeper high availability against `quorum`, with the HA storage under this test's
    /// home and the given ZooKeeper session timeout.
    pub fn zookeeper_ha(&mut self, quorum: &str, session_timeout: &str) -> &mut Self {
        let storage = self.home.join("ha").display().to_string();
        self.set("high-availability.type", "zookeeper")
            .set("high-availability.zookeeper.quorum", quorum)
            .set("high-availability.storageDir", storage)
            .set("high-availability.zookeeper.client.session-timeout", session_timeout)
            .set("high-availability.zookeeper.client.connection-timeout", "15 s")
    }

    /// Internal TLS (RPC, data plane, BlobServer) and REST HTTPS with mutual authentication,
    /// with a fresh CA and one cluster certificate in PKCS#12 keystores (Flink's keys); the
    /// harness's own REST calls present the cluster certificate.
    pub fn with_tls(&mut self) -> TestCerts {
        use flint_common::tls::certgen::{write_ca, write_host, Ca, Validity};
        let dir = self.home.join("tls");
        fs::create_dir_all(&dir).expect("tls dir");
        let password = "flint-test-password".to_string();
        let ca = Ca::generate("Flint test CA", Validity::days(2)).expect("CA");
        let (ca_pem, truststore) = write_ca(&dir, &ca, &password).expect("write CA");
        let issued = ca.issue(&["localhost".into(), "127.0.0.1".into()], Validity::days(2)).expect("cluster cert");
        let cluster = write_host(&dir, "cluster", &issued, &password).expect("write cluster cert");
        for scope in ["internal", "rest"] {
            self.set(&format!("security.ssl.{scope}.enabled"), "true")
                .set(&format!("security.ssl.{scope}.keystore"), cluster.keystore.display())
                .set(&format!("security.ssl.{scope}.keystore-password"), &password)
                .set(&format!("security.ssl.{scope}.key-password"), &password)
                .set(&format!("security.ssl.{scope}.truststore"), truststore.display())
                .set(&format!("security.ssl.{scope}.truststore-password"), &password);
        }
        self.set("security.ssl.rest.authentication-enabled", "true");
        self.agent =
            https_agent(issued.ca_pem.as_bytes(), Some((issued.chain_pem().as_bytes(), issued.key_pem.as_bytes())));
        self.scheme = "https";
        TestCerts { dir, ca, password, cluster, truststore, ca_pem }
    }

    /// Everything the processes logged so far (log files and captured output).
    pub fn all_logs(&self) -> String {
        let mut text = String::new();
        for entry in fs::read_dir(&self.log_dir).expect("log dir").flatten() {
            text.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
        }
        text
    }

    /// Waits up to a minute until the processes' logs satisfy `check`.
    pub fn wait_log(&self, what: &str, check: impl Fn(&str) -> bool) {
        let start = std::time::Instant::now();
        while !check(&self.all_logs()) {
            if start.elapsed() > Duration::from_secs(60) {
                self.dump_logs();
                panic!("no log line: {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Replaces the agent the harness's REST calls go through.
    pub fn set_agent(&mut self, agent: ureq::Agent) {
        self.agent = agent;
    }

    fn write_config(&self) {
        let mut text = String::from("# written by the Flint test harness\n");
        for (k, v) in &self.config {
            text.push_str(&format!("{k}: \"{v}\"\n"));
        }
        // Atomically (temp file + rename): a process starting meanwhile must never read a
        // half-written file.
        let tmp = self.conf_dir.join(".config.yaml.tmp");
        fs::write(&tmp, text).expect("write config.yaml");
        fs::rename(&tmp, self.conf_dir.join("config.yaml")).expect("rename config.yaml");
    }

    /// Writes `conf/masters` and `conf/workers`.
    pub fn write_hosts(&self, masters: &[&str], workers: &[&str]) {
        fs::write(self.conf_dir.join("masters"), masters.join("\n") + "\n").expect("masters");
        fs::write(self.conf_dir.join("workers"), workers.join("\n") + "\n").expect("workers");
    }

    fn spawn(&mut self, binary: &str, name: &str, extra: &[String]) -> &mut Process {
        self.spawn_wrapped(&[], binary, name, extra)
    }

    /// Starts `binary` as the last argument of `wrapper` (e.g. `strace ... --`); the
    /// process is the wrapper's.
    fn spawn_wrapped(&mut self, wrapper: &[String], binary: &str, name: &str, extra: &[String]) -> &mut Process {
        let log = self.log_dir.join(format!("{name}.log"));
        let out = fs::File::create(self.log_dir.join(format!("{name}.out"))).expect("create .out");
        let err = out.try_clone().expect("clone .out");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin_dir().join(binary));
                cmd
            }
            None => Command::new(bin_dir().join(binary)),
        };
        cmd.arg("--configDir").arg(&self.conf_dir);
        for d in extra {
            cmd.arg("-D").arg(d);
        }
        cmd.env("FLINT_LOG_FILE", &log)
            .env("RUST_LOG", "info,flint=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child =
            cmd.spawn().unwrap_or_else(|e| panic!("could not start {binary} from {}: {e}", bin_dir().display()));
        self.processes.push(Process { name: name.to_string(), log, child });
        self.processes.last_mut().expect("just pushed")
    }

    /// Starts a jobmanager directly (not through the scripts).
    pub fn start_jobmanager(&mut self, name: &str) -> usize {
        self.spawn("flint-jobmanager", name, &[]);
        self.processes.len() - 1
    }

    /// Starts a jobmanager directly with extra `-D` settings (e.g. its own ports, for
    /// several jobmanagers of one high-availability cluster).
    pub fn start_jobmanager_with(&mut self, name: &str, extra: &[String]) -> usize {
        self.spawn("flint-jobmanager", name, extra);
        self.processes.len() - 1
    }

    /// Starts a jobmanager under a wrapper program (`strace` injecting delays, ...).
    pub fn start_jobmanager_wrapped(&mut self, name: &str, wrapper: &[String]) -> usize {
        self.spawn_wrapped(wrapper, "flint-jobmanager", name, &[]);
        self.processes.len() - 1
    }

    /// Starts a taskmanager directly, with extra `-D` settings.
    pub fn start_taskmanager(&mut self, name: &str, extra: &[String]) -> usize {
        self.spawn("flint-taskmanager", name, extra);
        self.processes.len() - 1
    }

    pub fn process(&mut self, index: usize) -> &mut Process {
        &mut self.processes[index]
    }

    /// Runs one of `scripts/` with this home's conf, log and pid dirs.
    pub fn script(&self, name: &str, args: &[&str]) -> Output {
        let output = Command::new("bash")
            .arg(repo_root().join("scripts").join(name))
            .args(args)
            .env("FLINT_CONF_DIR", &self.conf_dir)
            .env("FLINT_LOG_DIR", &self.log_dir)
            .env("FLINT_PID_DIR", &self.pid_dir)
            .env("FLINT_BIN_DIR", bin_dir())
            .env("RUST_LOG", "info,flint=debug")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run scripts/{name}: {e}"));
        if !output.status.success() {
            self.dump_logs();
            panic!(
                "scripts/{name} {args:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output
    }

    /// Pids recorded in the scripts' pid files.
    pub fn script_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        if let Ok(entries) = fs::read_dir(&self.pid_dir) {
            for entry in entries.flatten() {
                if let Ok(text) = fs::read_to_string(entry.path()) {
                    pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            }
        }
        pids
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{}", self.scheme, self.rest_port, path)
    }

    fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, String> {
        let mut response = result.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let mut text = String::new();
        response.body_mut().as_reader().read_to_string(&mut text).map_err(|e| e.to_string())?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, body, text })
    }

    /// `GET` on the REST port; `Err` when the server cannot be reached.
    pub fn get(&self, path: &str) -> Result<Reply, String> {
        Self::reply(self.agent.get(&self.url(path)).call())
    }

    pub fn delete(&self, path: &str) -> Result<Reply, String> {
        Self::reply(self.agent.delete(&self.url(path)).call())
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Result<Reply, String> {
        Self::reply(self.agent.post(&self.url(path)).send_json(body))
    }

    pub fn post_raw(&self, path: &str, body: &str) -> Result<Reply, String> {
        Self::reply(self.agent.post(&self.url(path)).content_type("application/json").send(body))
    }

    /// `POST` a multipart form of `(field, file name, bytes)` parts.
    pub fn post_multipart(&self, path: &str, parts: &[(&str, &str, &[u8])]) -> Result<Reply, String> {
        use ureq::unversioned::multipart::{Form, Part};
        let form = parts
            .iter()
            .fold(Form::new(), |form, (name, file, bytes)| form.part(name, Part::bytes(bytes).file_name(file)));
        Self::reply(self.agent.post(&self.url(path)).send(form))
    }

    /// `POST /jars/upload` of `bytes` named `file_name` (Flink's field `jarfile`).
    pub fn upload(&self, file_name: &str, bytes: &[u8]) -> Result<Reply, String> {
        self.post_multipart("/jars/upload", &[("jarfile", file_name, bytes)])
    }

    pub fn patch(&self, path: &str) -> Result<Reply, String> {
        Self::reply(self.agent.patch(&self.url(path)).send_empty())
    }

    pub fn patch_json(&self, path: &str, body: &Value) -> Result<Reply, String> {
        Self::reply(self.agent.patch(&self.url(path)).send_json(body))
    }

    /// `GET` that must answer 200 with JSON.
    pub fn get_ok(&self, path: &str) -> Value {
        match self.get(path) {
            Ok(r) if r.status == 200 => r.body,
            other => {
                self.dump_logs();
                panic!("GET {path} did not answer 200: {other:?}");
            }
        }
    }

    /// Polls `check` until it returns `Some`, at most `deadline`; on time-out prints the
    /// logs and fails naming `what`.
    pub fn wait_for<T>(&self, what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let until = Instant::now() + deadline;
        loop {
            if let Some(v) = check() {
                return v;
            }
            if Instant::now() >= until {
                self.dump_logs();
                panic!("timed out after {deadline:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// With several jobmanagers (`(process index, REST port)`): waits until exactly one
    /// answers `/overview` with `slots` slots (the leader) and every other one answers 503
    /// or is gone; the harness talks to the leader from then. Returns its index and port.
    pub fn wait_for_leader(&mut self, jobmanagers: &[(usize, u16)], slots: u64, deadline: Duration) -> (usize, u16) {
        let found = self.wait_for_with("exactly one leading jobmanager with all slots", deadline, |h| {
            let mut leaders = Vec::new();
            let mut others = 0;
            for (index, port) in jobmanagers {
                h.rest_port = *port;
                match h.get("/overview") {
                    Ok(r) if r.status == 200 && r.body["slots-total"] == slots => leaders.push((*index, *port)),
                    Ok(r) if r.status == 503 => others += 1,
                    Err(_) if !h.process(*index).is_running() => others += 1,
                    _ => {}
                }
            }
            (leaders.len() == 1 && others == jobmanagers.len() - 1).then(|| leaders[0])
        });
        self.rest_port = found.1;
        found
    }

    /// [`Harness::wait_for`] with a check that may change the harness (e.g. its REST port).
    pub fn wait_for_with<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut(&mut Self) -> Option<T>,
    ) -> T {
        let until = Instant::now() + deadline;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if Instant::now() >= until {
                self.dump_logs();
                panic!("timed out after {deadline:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Submits a job document (`POST /jobs<query>`, e.g. `?parallelism=2`); returns its id.
    /// A refused submission fails the test with the answer and the process logs.
    pub fn submit(&self, query: &str, job: &Value) -> String {
        let reply = self.post_json(&format!("/jobs{query}"), job).expect("POST /jobs");
        if reply.status != 202 {
            self.dump_logs();
            panic!("submission refused: {} {}", reply.status, reply.text);
        }
        let url = reply.body["jobUrl"].as_str().expect("jobUrl");
        url.trim_start_matches("/jobs/").to_string()
    }

    /// `GET /jobs/:id` (`null` when it cannot be read).
    pub fn job(&self, id: &str) -> Value {
        self.get(&format!("/jobs/{id}")).map(|r| r.body).unwrap_or(Value::Null)
    }

    /// Waits (up to `deadline`) for job `id` to reach `state`; a job that FAILED instead
    /// fails the test with its exceptions.
    /// The job's user accumulators (`/jobs/:id/accumulators`) by name.
    pub fn accumulators(&self, id: &str) -> std::collections::BTreeMap<String, u64> {
        let body = self.get_ok(&format!("/jobs/{id}/accumulators"));
        body["user-task-accumulators"]
            .as_array()
            .unwrap_or_else(|| panic!("no user accumulators: {body}"))
            .iter()
            .map(|a| {
                let value = a["value"].as_str().map_or_else(|| a["value"].as_u64().unwrap(), |v| v.parse().unwrap());
                (a["name"].as_str().unwrap().to_string(), value)
            })
            .collect()
    }

    pub fn wait_job_state(&self, id: &str, state: &str, deadline: Duration) -> Value {
        self.wait_for(&format!("job {id} to be {state}"), deadline, || {
            let job = self.job(id);
            if job["state"] == "FAILED" && state != "FAILED" {
                self.dump_logs();
                panic!("job failed: {}", self.get(&format!("/jobs/{id}/exceptions")).unwrap().text);
            }
            (job["state"] == state).then_some(job)
        })
    }

    /// Waits until `/overview` satisfies `check`; returns it.
    pub fn wait_for_overview(&self, what: &str, deadline: Duration, check: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(what, deadline, || {
            let reply = self.get("/overview").ok()?;
            (reply.status == 200 && check(&reply.body)).then_some(reply.body)
        })
    }

    /// Prints the last lines of every log and out file.
    pub fn dump_logs(&self) {
        eprintln!("===== logs of {} =====", self.home.display());
        let mut files: Vec<PathBuf> =
            fs::read_dir(&self.log_dir).map(|e| e.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        for file in files {
            let text = fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("----- {} ({} lines, last {}) -----", file.display(), lines.len(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }

    /// Talks HTTPS through `agent` from now on (a cluster whose REST TLS the test set up
    /// itself rather than through [`Harness::with_tls`]).
    pub fn use_https(&mut self, agent: ureq::Agent) {
        self.agent = agent;
        self.scheme = "https";
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for p in &mut self.processes {
            if p.is_running() {
                p.kill9();
            }
        }
        for pid in self.script_pids() {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("flint-") {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.home);
        }
    }
}

/// Whether every subtask of a job (its `GET /jobs/:id` answer) runs.
pub fn all_running(job: &Value) -> bool {
    let tasks: u64 =
        job["vertices"].as_array().map_or(0, |v| v.iter().map(|v| v["parallelism"].as_u64().unwrap_or(0)).sum());
    tasks > 0 && job["state"] == "RUNNING" && job["status-counts"]["RUNNING"] == tasks
}

/// A zip archive of `(name, bytes)` entries, stored uncompressed (a name ending in `/` is a
/// directory).
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        if name.ends_with('/') {
            w.add_directory(name.to_string(), options).expect("zip directory");
        } else {
            w.start_file(name.to_string(), options).expect("zip entry");
            w.write_all(bytes).expect("zip write");
        }
    }
    w.finish().expect("zip finish").into_inner()
}

/// Every file under `dir`, recursively (none when it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

/// The committed output of a `sink.file` directory: the lines of every visible part file
/// (hidden files, i.e. in-progress output of a failed attempt, are not output).
pub fn read_output_lines(dir: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return lines };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.')))
        .collect();
    paths.sort();
    for path in paths {
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        lines.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned));
    }
    lines
}
