//! A real ZooKeeper server for tests: the Debian `zookeeper` package's jars, started directly
//! with `java` as a child process on a free port, in its own directory under the system temp
//! dir (config, data, log).
//!
//! The server runs standalone with a short tick (200 ms: session timeouts from 400 ms up to
//! 60 s are allowed), the admin server off, no fsync of its log (a test server; its data still
//! survives a restart of the process), and the four-letter words `ruok` (readiness), `srvr`, `stat`, `cons` and
//! `dump` (ephemeral nodes per session) on. [`ZooKeeperServer::restart`] keeps port and data (sessions survive a
//! restart shorter than their timeout). Everything is killed by pid on drop. When ZooKeeper
//! cannot be started, [`ZooKeeperServer::start`] fails with a message saying why: tests that
//! need it fail loudly rather than skip.
//!
//! [`TcpProxy`] sits between one client and the server so that a test can cut that client
//! off (a network partition) while everybody else stays connected.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::free_port;

/// Where the Debian package puts the server jar (its manifest lists the dependencies).
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// A logging backend for the server's slf4j (optional: without it the server is silent).
const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";
const MAIN_CLASS: &str = "org.apache.zookeeper.server.ZooKeeperServerMain";
/// The server's tick; the minimum session timeout is two ticks.
pub const TICK: Duration = Duration::from_millis(200);
const READY_DEADLINE: Duration = Duration::from_secs(30);
const STOP_DEADLINE: Duration = Duration::from_secs(5);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A ZooKeeper server child process.
pub struct ZooKeeperServer {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

fn java() -> PathBuf {
    if let Some(java) = std::env::var_os("JAVA") {
        return PathBuf::from(java);
    }
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        let java = PathBuf::from(home).join("bin/java");
        if java.exists() {
            return java;
        }
    }
    PathBuf::from("java")
}

impl ZooKeeperServer {
    /// Starts a fresh server and waits until it answers `ruok`.
    pub fn start(name: &str) -> Result<ZooKeeperServer, String> {
        if !Path::new(ZOOKEEPER_JAR).exists() {
            return Err(format!(
                "ZooKeeper is not installed: {ZOOKEEPER_JAR} is missing (install it with \
                 `apt-get update && apt-get install -y zookeeper`)"
            ));
        }
        let dir = std::env::temp_dir().join(format!(
            "flint-zk-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut server =
            ZooKeeperServer { name: name.to_string(), log: dir.join("zookeeper.log"), dir, port: 0, child: None };
        // The port was free a moment ago; if someone else took it meanwhile, pick another.
        let mut last_error = String::new();
        for _ in 0..3 {
            server.port = free_port();
            server.write_config()?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => return Err(e),
            }
        }
        Err(last_error)
    }

    fn write_config(&self) -> Result<(), String> {
        let config = format!(
            "# written by the Flint test harness\n\
             tickTime={tick}\n\
             dataDir={data}\n\
             clientPort={port}\n\
             clientPortAddress=127.0.0.1\n\
             maxSessionTimeout=60000\n\
             maxClientCnxns=0\n\
             forceSync=no\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr,stat,cons,dump\n",
            tick = TICK.as_millis(),
            data = self.dir.join("data").display(),
            port = self.port,
        );
        fs::write(self.dir.join("zoo.cfg"), config).map_err(|e| format!("cannot write zoo.cfg: {e}"))
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut classpath = ZOOKEEPER_JAR.to_string();
        if Path::new(SLF4J_SIMPLE_JAR).exists() {
            classpath.push(':');
            classpath.push_str(SLF4J_SIMPLE_JAR);
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open {}: {e}", self.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(java())
            .args(["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"])
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=info")
            .arg("-Dorg.slf4j.simpleLogger.showDateTime=true")
            .arg("-cp")
            .arg(&classpath)
            .arg(MAIN_CLASS)
            .arg(self.dir.join("zoo.cfg"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start ZooKeeper with '{}': {e} (is Java installed?)", java().display()))?;
        self.child = Some(child);
        let until = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!(
                    "ZooKeeper '{}' exited with {status} before it was ready; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(40)
                ));
            }
            if self.four_letter_word("ruok").is_ok_and(|answer| answer.trim() == "imok") {
                return Ok(());
            }
            if Instant::now() >= until {
                self.kill();
                return Err(format!(
                    "ZooKeeper '{}' did not answer on port {} within {READY_DEADLINE:?}; log {}:\n{}",
                    self.name,
                    self.port,
                    self.log.display(),
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`, for `high-availability.zookeeper.quorum`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends a four-letter word (`ruok`, `srvr`, `stat`, `cons`, `dump`: the ephemeral nodes
    /// per session) and returns the answer.
    pub fn four_letter_word(&self, word: &str) -> Result<String, String> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        stream.write_all(word.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        Ok(answer)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + STOP_DEADLINE;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same port with the same data (sessions
    /// and ephemeral nodes survive if it is back within their timeout).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn_and_wait()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("===== ZooKeeper '{}' log {} =====\n{}", self.name, self.log.display(), self.log_tail(60));
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

struct ProxyState {
    upstream: SocketAddr,
    open: AtomicBool,
    stopped: AtomicBool,
    connections: Mutex<Vec<TcpStream>>,
}

impl ProxyState {
    fn close_all(&self) {
        for stream in self.connections.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A TCP proxy to a local port that can cut its connections: [`TcpProxy::cut`] closes every
/// connection and closes new ones at once (the client sees a dead server) until
/// [`TcpProxy::restore`]. Listens on a port the OS picked; stops on drop.
pub struct TcpProxy {
    port: u16,
    state: Arc<ProxyState>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// A proxy to `127.0.0.1:<upstream_port>`.
    pub fn start(upstream_port: u16) -> Result<TcpProxy, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy cannot listen: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let state = Arc::new(ProxyState {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            open: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let accepting = state.clone();
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if !accepting.open.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&accepting.upstream, Duration::from_secs(1)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else { continue };
                {
                    let mut connections = accepting.connections.lock().unwrap_or_else(|e| e.into_inner());
                    connections.extend(client.try_clone().ok());
                    connections.extend(server.try_clone().ok());
                }
                pump(client, server_copy);
                pump(server, client_copy);
            }
        });
        Ok(TcpProxy { port, state, acceptor: Some(acceptor) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<proxy port>`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes all connections and refuses new ones.
    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        self.state.close_all();
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the acceptor so that it sees the stop flag.
        let _ = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], self.port)), Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
