//! High availability with ZooKeeper and real processes: leader election between two
//! jobmanagers, fencing, failover of running jobs, taskmanagers following the leader, and
//! the job result store (the acceptance tests of the HA issue). Every test starts its own
//! ZooKeeper server (Debian's `zookeeper` package) on a free port.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flint_common::config::Configuration;
use flint_common::ha::{create_ha_services, RESOURCE_MANAGER, REST_SERVER};
use flint_common::ids::LeaderSessionId;
use flint_tests::zookeeper::ZooKeeperServer;
use flint_tests::{all_running, free_ports, read_output_lines, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

/// A ZooKeeper-mode cluster: ZooKeeper, two jobmanagers (own REST and RPC ports) and
/// `taskmanagers` taskmanagers × 2 slots.
struct HaCluster {
    h: Harness,
    zk: ZooKeeperServer,
    /// (process index, REST port) per jobmanager.
    jobmanagers: Vec<(usize, u16)>,
    taskmanagers: Vec<usize>,
}

fn ha_cluster(name: &str, session_timeout: &str, taskmanagers: usize) -> HaCluster {
    ha_cluster_with(name, session_timeout, taskmanagers, false)
}

/// With `tls`: internal TLS and REST HTTPS with mutual authentication.
fn ha_cluster_with(name: &str, session_timeout: &str, taskmanagers: usize, tls: bool) -> HaCluster {
    let zk = ZooKeeperServer::start(name).unwrap_or_else(|e| panic!("ZooKeeper must run for this test: {e}"));
    let mut h = Harness::new(name);
    if tls {
        h.with_tls();
    }
    h.zookeeper_ha(&zk.connect_string(), session_timeout)
        .set("heartbeat.interval", "1 s")
        .set("heartbeat.timeout", "5 s");
    // Each jobmanager gets its own REST port; RPC ports are any free ones
    // (`high-availability.jobmanager.port` defaults to 0): taskmanagers find the leader
    // through ZooKeeper.
    let mut jobmanagers = Vec::new();
    for (i, port) in free_ports(2).into_iter().enumerate() {
        let index = h.start_jobmanager_with(&format!("jobmanager-{i}"), &[format!("rest.port={port}")]);
        jobmanagers.push((index, port));
    }
    let taskmanagers = (1..=taskmanagers)
        .map(|i| h.start_taskmanager(&format!("taskmanager-{i}"), &["taskmanager.numberOfTaskSlots=2".into()]))
        .collect();
    HaCluster { h, zk, jobmanagers, taskmanagers }
}

impl HaCluster {
    /// The REST port of the jobmanager that answers `/overview` (the leader), once exactly
    /// one does and every other one answers 503 (or is gone).
    fn leader(&mut self, slots: u64) -> (usize, u16) {
        let jobmanagers = self.jobmanagers.clone();
        self.h.wait_for_leader(&jobmanagers, slots, DEADLINE)
    }
}

/// The leader of `component` as ZooKeeper names it (read with a separate HA client).
fn published_leader(zk: &ZooKeeperServer, component: &str) -> Option<(LeaderSessionId, String)> {
    let mut conf = Configuration::new();
    conf.set("high-availability.type", "zookeeper");
    conf.set("high-availability.zookeeper.quorum", zk.connect_string());
    conf.set("high-availability.storageDir", std::env::temp_dir().join("flint-ha-reader").display().to_string());
    let services = create_ha_services(&conf, BTreeMap::new()).expect("HA client");
    let retrieval = services.leader_retrieval(component).expect("retrieval");
    let (tx, rx) = std::sync::mpsc::channel();
    retrieval.start(std::sync::Arc::new(move |leader: Option<(LeaderSessionId, String)>| {
        let _ = tx.send(leader);
    }));
    let until = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < until {
        if let Ok(Some(leader)) = rx.recv_timeout(Duration::from_millis(200)) {
            last = Some(leader);
            break;
        }
    }
    retrieval.stop();
    services.close();
    last
}

/// Acceptance 1 and 3: one leader, whose published REST address is the one answering; the
/// standby answers 503 naming it; after `kill -9` of the leader the other one leads under a
/// new session, every taskmanager is registered with it and `/overview` shows all slots.
#[test]
fn leader_election_failover_and_fencing() {
    let mut c = ha_cluster("ha-election", "4 s", 2);
    let (leader_index, leader_port) = c.leader(4);
    let (session, url) = published_leader(&c.zk, REST_SERVER).expect("a published REST leader");
    let (old_rm, _) = published_leader(&c.zk, RESOURCE_MANAGER).expect("a published resource manager leader");
    assert!(url.ends_with(&format!(":{leader_port}")), "connection_info {url} vs leading port {leader_port}");
    let standby_port = c.jobmanagers.iter().find(|(i, _)| *i != leader_index).unwrap().1;
    c.h.rest_port = standby_port;
    let reply = c.h.get("/jobs/overview").unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(reply.text.contains(&format!(":{leader_port}")), "the standby names the leader: {}", reply.text);
    let reply = c.h.post_json("/jobs", &json!({})).unwrap();
    assert_eq!(reply.status, 503, "a standby takes no submissions: {}", reply.text);
    // The `flint` client pointed at the standby follows it to the leader.
    let list = std::process::Command::new(flint_tests::bin_dir().join("flint"))
        .args(["-m", &format!("localhost:{standby_port}"), "list"])
        .output()
        .expect("run flint list");
    assert!(list.status.success(), "flint list via the standby: {}", String::from_utf8_lossy(&list.stderr));

    let killed = Instant::now();
    c.h.process(leader_index).kill9();
    let (new_index, new_port) = c.leader(4);
    eprintln!("kill -9 leading jobmanager -> new leader with all 4 slots: {} ms", killed.elapsed().as_millis());
    assert_ne!(new_index, leader_index);
    let (new_session, new_url) = published_leader(&c.zk, REST_SERVER).expect("a new REST leader");
    assert_ne!(new_session, session, "a new leadership has a new session id");
    assert!(new_url.ends_with(&format!(":{new_port}")), "{new_url}");
    let overview = c.h.get_ok("/overview");
    assert_eq!(overview["taskmanagers"], 2, "{overview}");

    // A message fenced with the old leader's session is refused by the new leader's
    // resource manager; the new session is accepted.
    let rpc = flint_common::rpc::RpcService::start(flint_common::rpc::RpcServiceConfig {
        bind_host: "127.0.0.1".into(),
        ports: vec![0],
        advertised_host: "127.0.0.1".into(),
        max_frame_size: 10 * 1024 * 1024,
        connect_timeout: Duration::from_secs(5),
        tls: None,
    })
    .unwrap();
    let (rm_session, rm_address) = published_leader(&c.zk, RESOURCE_MANAGER).expect("a resource manager leader");
    let address: flint_common::rpc::RpcAddress = rm_address.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // (Disconnecting a taskmanager that is not registered changes nothing.)
    let ask = |token: LeaderSessionId| {
        let gateway = flint_common::messages::ResourceManagerGateway(
            flint_common::messages::RemoteEndpoint::new(rpc.clone(), address.clone(), Duration::from_secs(5))
                .with_token(Some(token)),
        );
        let unknown = flint_common::ids::ResourceId::new("nobody:1-000000".to_string());
        runtime.block_on(gateway.disconnect_task_manager(unknown, "fencing test"))
    };
    let stale = ask(old_rm);
    assert!(matches!(stale, Err(flint_common::rpc::RpcError::Fenced { .. })), "{stale:?}");
    assert!(ask(rm_session).is_ok());
    assert_ne!(rm_session, old_rm);
    rpc.stop();
    assert_eq!(c.taskmanagers.len(), 2);
}

/// The checkpointed, exactly-once job of the failover tests.
fn failover_job(out: &std::path::Path, records: u64, rate: u64, checkpoints: &std::path::Path) -> Value {
    json!({
        "flint": 1, "name": "failover", "parallelism": 4,
        "config": {
            "execution.checkpointing.interval": "200 ms",
            "state.checkpoints.dir": checkpoints,
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": "10",
            "restart-strategy.fixed-delay.delay": "100 ms"
        },
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": records - 1, "rate": rate },
            { "id": "keys", "op": "map", "inputs": ["numbers"], "fields": { "k": "\"k\" + str::from(n % 20)" } },
            { "id": "counts", "op": "aggregate", "inputs": ["keys"], "key": ["k"], "aggs": { "c": "count()" } },
            { "id": "out", "op": "sink.file", "inputs": ["counts"], "path": out }
        ]
    })
}

fn assert_exactly_once(out: &std::path::Path, keys: u64, per_key: u64) {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in read_output_lines(out) {
        let (k, c) = line.split_once('\t').unwrap();
        seen.entry(k.to_string()).or_default().push(c.parse().unwrap());
    }
    assert_eq!(seen.len() as u64, keys, "{:?}", seen.keys().collect::<Vec<_>>());
    for (k, mut counts) in seen {
        counts.sort_unstable();
        let expected: Vec<u64> = (1..=per_key).collect();
        assert!(counts == expected, "key {k}: {} rows, max {:?}", counts.len(), counts.last());
    }
}

/// Acceptance 2: `kill -9` of the leading jobmanager while a checkpointed job runs: the
/// standby recovers the job from its latest checkpoint, the job finishes and its output is
/// exactly once. With a 6 s session timeout, the time from the kill to all tasks RUNNING.
#[test]
fn jobmanager_failover_recovers_the_job_from_its_latest_checkpoint() {
    jobmanager_failover_in("ha-failover", false);
}

/// The same with every connection TLS (issue 16): the new leader's RPC, the taskmanagers'
/// re-registration and REST all go through mutually authenticated TLS.
#[test]
fn jobmanager_failover_recovers_the_job_from_its_latest_checkpoint_over_tls() {
    jobmanager_failover_in("ha-failover-tls", true);
}

fn jobmanager_failover_in(name: &str, tls: bool) {
    const RECORDS: u64 = 600_000;
    let mut c = ha_cluster_with(name, "6 s", 2, tls);
    let (leader_index, _) = c.leader(4);
    let out = c.h.home.join("out");
    let id = c.h.submit("", &failover_job(&out, RECORDS, 50_000, &c.h.home.join("checkpoints")));
    c.h.wait_for("all tasks RUNNING and a checkpoint completed", DEADLINE, || {
        let completed = c.h.get(&format!("/jobs/{id}/checkpoints")).ok()?.body["counts"]["completed"].as_u64()?;
        (all_running(&c.h.job(&id)) && completed >= 2).then_some(())
    });
    let killed = Instant::now();
    c.h.process(leader_index).kill9();
    c.leader(4);
    let j = c.h.wait_for("the job RUNNING again under the new leader", DEADLINE, || {
        let j = c.h.job(&id);
        all_running(&j).then_some(j)
    });
    let recovery = killed.elapsed();
    eprintln!(
        "kill -9 leading jobmanager -> all tasks RUNNING again: {} ms (session timeout 6 s)",
        recovery.as_millis()
    );
    let stats = c.h.get_ok(&format!("/jobs/{id}/checkpoints"));
    assert!(stats["latest"]["restored"]["id"].as_u64().unwrap_or(0) >= 2, "restored from a checkpoint: {stats} {j}");
    c.h.wait_for("the job FINISHED", DEADLINE, || (c.h.job(&id)["state"] == "FINISHED").then_some(()));
    assert_exactly_once(&out, 20, RECORDS / 20);
}

/// Acceptance 6: a finished job is not run again after a leader change (job result store).
#[test]
fn a_finished_job_is_not_rerun_after_a_leader_change() {
    let mut c = ha_cluster("ha-finished", "3 s", 1);
    let (leader_index, _) = c.leader(2);
    let out = c.h.home.join("out");
    let spec = json!({
        "flint": 1, "name": "short", "parallelism": 2,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": 9999 },
            { "id": "keys", "op": "map", "inputs": ["numbers"], "fields": { "k": "\"k\" + str::from(n % 20)" } },
            { "id": "counts", "op": "aggregate", "inputs": ["keys"], "key": ["k"], "aggs": { "c": "count()" } },
            { "id": "out", "op": "sink.file", "inputs": ["counts"], "path": out }
        ]
    });
    let id = c.h.submit("", &spec);
    c.h.wait_for("the job FINISHED", DEADLINE, || (c.h.job(&id)["state"] == "FINISHED").then_some(()));
    let rows = read_output_lines(&out).len();
    assert_eq!(rows, 10_000);
    c.h.process(leader_index).kill9();
    c.leader(2);
    // Give a wrongly recovered job time to show up and write.
    std::thread::sleep(Duration::from_secs(2));
    let jobs = c.h.get_ok("/jobs/overview");
    assert!(
        jobs["jobs"].as_array().unwrap().iter().all(|j| j["jid"] != id.as_str()),
        "the finished job was started again: {jobs}"
    );
    assert_eq!(read_output_lines(&out).len(), rows, "no second run wrote output");
    let reply = c.h.post_json(&format!("/jobs?jobId={id}"), &spec).unwrap();
    assert_eq!(reply.status, 409, "a finished job's id is not taken again: {}", reply.text);
}

/// Acceptance 4: ZooKeeper is stopped and restarted (shorter than the session timeout)
/// while a job runs: no job is lost, exactly one jobmanager leads afterwards, and the job
/// runs to the end with exactly-once output.
#[test]
fn a_zookeeper_restart_loses_no_job() {
    const RECORDS: u64 = 400_000;
    let mut c = ha_cluster("ha-zk-restart", "10 s", 2);
    c.leader(4);
    let out = c.h.home.join("out");
    let id = c.h.submit("", &failover_job(&out, RECORDS, 40_000, &c.h.home.join("checkpoints")));
    c.h.wait_for("all tasks RUNNING and a checkpoint completed", DEADLINE, || {
        let completed = c.h.get(&format!("/jobs/{id}/checkpoints")).ok()?.body["counts"]["completed"].as_u64()?;
        (all_running(&c.h.job(&id)) && completed >= 1).then_some(())
    });
    c.zk.stop();
    std::thread::sleep(Duration::from_secs(2));
    c.zk.restart().expect("ZooKeeper restarts");
    c.leader(4);
    c.h.wait_for("the job RUNNING under the leader", DEADLINE, || all_running(&c.h.job(&id)).then_some(()));
    c.h.wait_for("the job FINISHED", DEADLINE, || (c.h.job(&id)["state"] == "FINISHED").then_some(()));
    assert_exactly_once(&out, 20, RECORDS / 20);
}

/// Acceptance 5: every jobmanager and taskmanager dies (`kill -9`) while a job runs; started
/// again, the cluster recovers the job from its latest checkpoint and finishes it exactly once.
#[test]
fn a_full_cluster_restart_recovers_the_job() {
    const RECORDS: u64 = 400_000;
    let mut c = ha_cluster("ha-full-restart", "2 s", 2);
    c.leader(4);
    let out = c.h.home.join("out");
    let id = c.h.submit("", &failover_job(&out, RECORDS, 40_000, &c.h.home.join("checkpoints")));
    c.h.wait_for("all tasks RUNNING and 2 checkpoints completed", DEADLINE, || {
        let completed = c.h.get(&format!("/jobs/{id}/checkpoints")).ok()?.body["counts"]["completed"].as_u64()?;
        (all_running(&c.h.job(&id)) && completed >= 2).then_some(())
    });
    let everyone: Vec<usize> = c.jobmanagers.iter().map(|(i, _)| *i).chain(c.taskmanagers.iter().copied()).collect();
    for index in everyone {
        c.h.process(index).kill9();
    }
    // The same cluster again: two jobmanagers on their ports, two taskmanagers.
    let mut restarted = Vec::new();
    for (i, (_, port)) in c.jobmanagers.clone().into_iter().enumerate() {
        let extra = [format!("rest.port={port}")];
        restarted.push((c.h.start_jobmanager_with(&format!("jobmanager-{i}-again"), &extra), port));
    }
    c.jobmanagers = restarted;
    for i in 1..=2 {
        c.h.start_taskmanager(&format!("taskmanager-{i}-again"), &["taskmanager.numberOfTaskSlots=2".into()]);
    }
    c.leader(4);
    c.h.wait_for("the job recovered and RUNNING", DEADLINE, || all_running(&c.h.job(&id)).then_some(()));
    let stats = c.h.get_ok(&format!("/jobs/{id}/checkpoints"));
    assert!(stats["latest"]["restored"]["id"].as_u64().unwrap_or(0) >= 2, "restored from a checkpoint: {stats}");
    c.h.wait_for("the job FINISHED", DEADLINE, || (c.h.job(&id)["state"] == "FINISHED").then_some(()));
    assert_exactly_once(&out, 20, RECORDS / 20);
}

/// `start-cluster.sh` in ZooKeeper mode starts every jobmanager of `conf/masters`
/// (`host:webui-port`) and the workers; exactly one jobmanager leads with every slot, and
/// `stop-cluster.sh` stops them all.
#[test]
fn start_cluster_starts_every_master_in_zookeeper_mode() {
    let zk = ZooKeeperServer::start("ha-scripts").unwrap_or_else(|e| panic!("ZooKeeper must run for this test: {e}"));
    let mut h = Harness::new("ha-scripts");
    let storage = h.home.join("ha").display().to_string();
    h.set("high-availability", "ZooKeeper")
        .set("high-availability.zookeeper.quorum", zk.connect_string())
        .set("high-availability.storageDir", storage)
        .set("high-availability.zookeeper.client.session-timeout", "3 s")
        .set("taskmanager.numberOfTaskSlots", 2);
    let ports = free_ports(2);
    let masters: Vec<String> = ports.iter().map(|p| format!("localhost:{p}")).collect();
    h.write_hosts(&[&masters[0], &masters[1]], &["localhost"]);
    let out = h.script("start-cluster.sh", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Starting HA cluster with 2 masters."), "{stdout}");
    assert_eq!(stdout.matches("Starting standalonesession daemon").count(), 2, "{stdout}");
    let pids = h.script_pids();
    assert_eq!(pids.len(), 3, "two jobmanagers and a taskmanager");
    let leader = h.wait_for_with("one leader with the taskmanager's slots, one standby", DEADLINE, |h| {
        let answers: Vec<(u16, u16, Value)> = ports
            .iter()
            .filter_map(|p| {
                h.rest_port = *p;
                h.get("/overview").ok().map(|r| (*p, r.status, r.body))
            })
            .collect();
        let leaders: Vec<u16> =
            answers.iter().filter(|(_, s, b)| *s == 200 && b["slots-total"] == 2).map(|(p, _, _)| *p).collect();
        let standbys = answers.iter().filter(|(_, s, _)| *s == 503).count();
        (leaders.len() == 1 && standbys == 1).then(|| leaders[0])
    });
    assert!(ports.contains(&leader));
    h.script("stop-cluster.sh", &[]);
    h.wait_for("every Flint process to exit", DEADLINE, || {
        pids.iter().all(|p| !flint_tests::is_alive(*p)).then_some(())
    });
}

/// Issue 12's HA case: a job whose 2 MiB package artifact went to the BlobServer (over
/// `blob.offload.minsize`) survives `kill -9` of the leading jobmanager and of every
/// taskmanager: the new leader serves the artifact from the HA storage to fresh
/// taskmanagers, and the output is exactly once (without checkpoints the job starts over;
/// the file sink commits only what a finished run wrote).
#[test]
fn a_job_with_offloaded_artifacts_recovers_on_a_new_leader() {
    const RECORDS: u64 = 40_000;
    let mut c = ha_cluster("ha-blobs", "2 s", 2);
    let (leader_index, _) = c.leader(4);
    let lines: Vec<String> = (0..40_000).map(|i| format!("file-{i:06}-{}", "x".repeat(40))).collect();
    let data = lines.join("\n") + "\n";
    assert!(data.len() > 2 << 20);
    let out = c.h.home.join("out");
    let job = json!({
        "flint": 1, "name": "blobs-failover", "parallelism": 2,
        "operators": [
            { "id": "file", "op": "source.file", "path": "data/lines.txt" },
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": RECORDS - 1, "rate": 5_000 },
            { "id": "numbered", "op": "map", "inputs": ["numbers"], "fields": { "line": "\"seq-\" + str::from(n)" } },
            { "id": "all", "op": "union", "inputs": ["file", "numbered"] },
            { "id": "out", "op": "sink.file", "inputs": ["all"], "path": out }
        ]
    });
    let zip = flint_tests::zip_of(&[("job.json", job.to_string().as_bytes()), ("data/lines.txt", data.as_bytes())]);
    let reply = c.h.post_multipart("/jobs", &[("package", "p.zip", &zip)]).unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["jobUrl"].as_str().unwrap().trim_start_matches("/jobs/").to_string();
    // The file is read (its source finished) while the slow sequence keeps the job running.
    c.h.wait_for("the file source FINISHED, the job RUNNING", DEADLINE, || {
        let job = c.h.job(&id);
        (job["state"] == "RUNNING" && job["status-counts"]["FINISHED"] == 2).then_some(())
    });
    let blob_dir = c.h.home.join("ha");
    let mirrored =
        flint_tests::files_under(&blob_dir).into_iter().filter(|p| p.to_string_lossy().contains("/blob/job_")).count();
    assert_eq!(mirrored, 1, "the artifact is in the HA storage");
    c.h.process(leader_index).kill9();
    for index in c.taskmanagers.clone() {
        c.h.process(index).kill9();
    }
    for i in 1..=2 {
        let index = c.h.start_taskmanager(&format!("taskmanager-{i}-new"), &["taskmanager.numberOfTaskSlots=2".into()]);
        c.taskmanagers.push(index);
    }
    c.leader(4);
    c.h.wait_for("the job FINISHED under the new leader", DEADLINE, || {
        (c.h.job(&id)["state"] == "FINISHED").then_some(())
    });
    let logs = |prefix: &str, what: &str| {
        std::fs::read_dir(&c.h.log_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default().matches(what).count())
            .sum::<usize>()
    };
    assert!(logs("jobmanager", "blob recovered from the HA storage") >= 1, "the new leader read the HA copy");
    assert!(logs("taskmanager-1-new", "blob downloaded") + logs("taskmanager-2-new", "blob downloaded") >= 1);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in read_output_lines(&out) {
        *seen.entry(line).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> =
        lines.iter().cloned().chain((0..RECORDS).map(|n| format!("seq-{n}"))).map(|l| (l, 1)).collect();
    assert_eq!(seen.len(), expected.len(), "every line");
    assert!(seen == expected, "exactly once: {:?}", seen.iter().find(|(_, n)| **n != 1));
    // The job's blobs leave the HA storage with the job.
    c.h.wait_for("the job's blobs removed from the HA storage", DEADLINE, || {
        flint_tests::files_under(&blob_dir).iter().all(|p| !p.to_string_lossy().contains("/blob/job_")).then_some(())
    });
}
