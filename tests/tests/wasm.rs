//! WebAssembly user code on a real cluster: `map.wasm`, `flat_map.wasm` and `process.wasm`
//! shipped in job packages (as WebAssembly text and as binaries), their counters shown as
//! accumulators; modules that do not fit the job refused at submission with 400 (and by
//! `flint run` with exit 1) with nothing started; guests that loop, outgrow their memory,
//! trap or reach for files failing their job once with a clear error while the taskmanager
//! stays up and runs the next job; a keyed WebAssembly counter exact across an injected
//! failure and across a savepoint taken at parallelism 4 and resumed at 2.
//!
//! Scalar functions declared under `functions` run inside `map` and `filter` expressions.
//!
//! The guests are the WebAssembly text files under `tests/wasm/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flint_taskmanager::runtime::keyed::{hash_key, subtask_for_hash};
use flint_tests::{all_running, read_output_lines, zip_of, Harness};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(90);

fn guest(name: &str) -> String {
    std::fs::read_to_string(flint_tests::repo_root().join("tests/wasm").join(name)).unwrap()
}

fn cluster(name: &str, taskmanagers: usize) -> Harness {
    let mut h = Harness::new(name);
    h.set("heartbeat.interval", "1 s").set("heartbeat.timeout", "10 s");
    h.start_jobmanager("jobmanager");
    for i in 1..=taskmanagers {
        h.start_taskmanager(&format!("taskmanager-{i}"), &["taskmanager.numberOfTaskSlots=2".into()]);
    }
    let slots = 2 * taskmanagers as u64;
    h.wait_for_overview("the task managers", DEADLINE, |o| o["slots-total"] == slots);
    h
}

/// `POST /jobs` of a package (multipart: the run request and the zip).
fn submit_package(h: &Harness, zip: &[u8], request: &Value) -> flint_tests::Reply {
    let request = serde_json::to_vec(request).unwrap();
    h.post_multipart("/jobs", &[("request", "request.json", &request), ("package", "job.zip", zip)]).unwrap()
}

fn submitted(reply: &flint_tests::Reply) -> String {
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body["jobUrl"].as_str().unwrap().trim_start_matches("/jobs/").to_string()
}

fn json_rows(dir: &Path) -> Vec<Value> {
    read_output_lines(dir).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const PIPELINE: &str = "\
flint: 1
name: wasm-pipeline
parallelism: 2
operators:
  - { id: numbers, op: source.sequence, from: 0, to: 9999 }
  - { id: b1, op: map.wasm, inputs: [numbers], module: guests/b1_map.wat, schema: { n: integer, s: string } }
  - { id: explode, op: flat_map.wasm, inputs: [b1], module: guests/explode.wasm, schema: { n: integer } }
  - { id: keys, op: map, inputs: [explode], fields: { key: '\"k\" + str::from(n % 7)', n: n } }
  - { id: count, op: process.wasm, inputs: [keys], key: [key], module: guests/count.wat,
      schema: { key: string, count: integer } }
  - { id: out, op: sink.file, inputs: [count], path: '${out}', format: json }
";

#[test]
fn wasm_operators_run_from_a_package_and_modules_that_do_not_fit_are_refused() {
    let h = cluster("wasm-ops", 1);
    let explode = wat::parse_str(guest("explode.wat")).unwrap();
    let zip = zip_of(&[
        ("job.yaml", PIPELINE.as_bytes()),
        ("guests/b1_map.wat", guest("b1_map.wat").as_bytes()),
        ("guests/explode.wasm", &explode),
        ("guests/count.wat", guest("count.wat").as_bytes()),
    ]);
    let out = h.home.join("out");
    let id = submitted(&submit_package(&h, &zip, &json!({ "programArgsList": ["--out", out.display().to_string()] })));
    h.wait_job_state(&id, "FINISHED", DEADLINE);

    // 2n emitted (2n % 3) times, counted per key 2n % 7.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for n in 0..10_000u64 {
        *expected.entry(format!("k{}", (2 * n) % 7)).or_default() += (2 * n) % 3;
    }
    let rows = json_rows(&out);
    assert_eq!(rows.len() as u64, expected.values().sum::<u64>());
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for row in &rows {
        let (k, c) = (row["key"].as_str().unwrap().to_string(), row["count"].as_u64().unwrap());
        let e = last.entry(k).or_default();
        *e = (*e).max(c);
    }
    assert_eq!(last, expected);
    assert_eq!(h.accumulators(&id).get("rows"), Some(&10_000), "the guest's counter");
    // Three modules, two subtasks each on one taskmanager: each compiled once.
    let log = std::fs::read_to_string(h.log_dir.join("taskmanager-1.log")).unwrap();
    assert_eq!(log.matches("WebAssembly module compiled").count(), 3, "compiled once per taskmanager");

    // Modules that do not fit the job: 400 with the reason, nothing started.
    let jobs_before = h.get_ok("/jobs/overview")["jobs"].as_array().unwrap().len();
    let with = |module: &[u8]| {
        zip_of(&[
            ("job.yaml", PIPELINE.as_bytes()),
            ("guests/b1_map.wat", guest("b1_map.wat").as_bytes()),
            ("guests/explode.wasm", module),
            ("guests/count.wat", guest("count.wat").as_bytes()),
        ])
    };
    let no_export = wat::parse_str(
        r#"(module (memory (export "memory") 1)
        (func (export "flint_alloc") (param i32) (result i32) i32.const 8))"#,
    )
    .unwrap();
    let bad_signature = wat::parse_str(
        r#"(module (memory (export "memory") 1)
        (func (export "flint_alloc") (param i32) (result i32) i32.const 8)
        (func (export "flat_map") (param i64) (result i32) i32.const 0))"#,
    )
    .unwrap();
    let foreign_import = wat::parse_str(
        r#"(module (import "env" "system" (func))
        (memory (export "memory") 1)
        (func (export "flint_alloc") (param i32) (result i32) i32.const 8)
        (func (export "flat_map") (param i32) (result i32) i32.const 0))"#,
    )
    .unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed", b"\0asm\x01\0\0\0not a module".to_vec(), "module 'guests/explode.wasm' does not compile"),
        ("no export", no_export, "does not export 'flat_map' (flat_map.wasm)"),
        ("bad signature", bad_signature, "export 'flat_map' has signature (i64) -> (i32)"),
        ("foreign import", foreign_import, "imports env::system, which Flint does not provide"),
    ];
    for (what, module, reason) in &cases {
        let reply = submit_package(&h, &with(module), &json!({ "programArgsList": ["--out", "/nonexistent"] }));
        assert_eq!(reply.status, 400, "{what}: {}", reply.text);
        assert!(reply.text.contains(reason), "{what}: {}", reply.text);
        assert!(reply.text.contains("operator 'explode'"), "{what}: {}", reply.text);
    }
    // The CLI says the same and exits 1.
    let package = h.home.join("malformed.zip");
    std::fs::write(&package, with(&cases[0].1)).unwrap();
    let run = std::process::Command::new(flint_tests::bin_dir().join("flint"))
        .args(["-m", &format!("127.0.0.1:{}", h.rest_port), "run"])
        .arg(&package)
        .args(["--out", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stdout));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("does not compile"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(h.get_ok("/jobs/overview")["jobs"].as_array().unwrap().len(), jobs_before, "nothing started");
}

/// A one-operator map.wasm job whose export is `body`.
const SCALARS_JOB: &str = "\
flint: 1
name: wasm-scalars
parallelism: 2
functions:
  s:
    module: fns/scalars.wat
    params: { factor: 3 }
    exports:
      scale: { args: [float], returns: float }
      shout: { args: [string], returns: string }
      above: { args: [integer, integer], returns: boolean }
operators:
  - { id: numbers, op: source.sequence, from: 0, to: 9999 }
  - { id: named, op: map, inputs: [numbers],
      fields: { n: n, x: 'wasm::s::scale(n)', name: 'wasm::s::shout(\"k\" + str::from(n % 5))' } }
  - { id: upper, op: filter, inputs: [named], predicate: 'wasm::s::above(n, 4999)' }
  - { id: out, op: sink.file, inputs: [upper], path: '${out}', format: json }
";

#[test]
fn scalar_functions_run_in_expressions_and_undeclared_exports_are_refused() {
    let h = cluster("wasm-scalars", 1);
    let zip = zip_of(&[("job.yaml", SCALARS_JOB.as_bytes()), ("fns/scalars.wat", guest("scalars.wat").as_bytes())]);
    let out = h.home.join("out");
    let id = submitted(&submit_package(&h, &zip, &json!({ "programArgsList": ["--out", out.display().to_string()] })));
    h.wait_job_state(&id, "FINISHED", DEADLINE);
    let mut rows: Vec<(i64, f64, String)> = json_rows(&out)
        .iter()
        .map(|r| (r["n"].as_i64().unwrap(), r["x"].as_f64().unwrap(), r["name"].as_str().unwrap().to_string()))
        .collect();
    rows.sort_by_key(|r| r.0);
    let expected: Vec<(i64, f64, String)> =
        (5000..10_000).map(|n| (n, 3.0 * n as f64, format!("K{}", n % 5))).collect();
    assert_eq!(rows, expected);
    // map: scale and shout over 10,000 rows; filter: above over 10,000 rows.
    assert_eq!(h.accumulators(&id).get("rows"), Some(&30_000), "the guests' counter");

    // A declared export the module lacks: 400 naming it, nothing started.
    let jobs_before = h.get_ok("/jobs/overview")["jobs"].as_array().unwrap().len();
    let missing = SCALARS_JOB.replace("above: {", "below: {").replace("wasm::s::above", "wasm::s::below");
    let zip = zip_of(&[("job.yaml", missing.as_bytes()), ("fns/scalars.wat", guest("scalars.wat").as_bytes())]);
    let reply = submit_package(&h, &zip, &json!({ "programArgsList": ["--out", "/nonexistent"] }));
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(
        reply.text.contains("operator 'upper': module 'fns/scalars.wat' does not export 'below' (a scalar function)"),
        "{}",
        reply.text
    );
    // A call whose arguments do not fit the declaration: 400 from validation.
    let mistyped = SCALARS_JOB.replace("'wasm::s::scale(n)'", "'wasm::s::scale(str::from(n))'");
    let zip = zip_of(&[("job.yaml", mistyped.as_bytes()), ("fns/scalars.wat", guest("scalars.wat").as_bytes())]);
    let reply = submit_package(&h, &zip, &json!({ "programArgsList": ["--out", "/nonexistent"] }));
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.text.contains("function 'wasm::s::scale' needs float as argument 1, got string"), "{}", reply.text);
    assert_eq!(h.get_ok("/jobs/overview")["jobs"].as_array().unwrap().len(), jobs_before, "nothing started");
}

fn sandbox_job(body: &str, imports: &str, config: Value) -> Vec<u8> {
    let module = format!(
        r#"(module {imports}
            (memory (export "memory") 1)
            (func (export "flint_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "map") (param $in i32) (result i32) {body}))"#
    );
    let job = json!({
        "flint": 1, "name": "sandbox", "parallelism": 1, "config": config,
        "operators": [
            { "id": "numbers", "op": "source.sequence", "from": 0, "to": 99 },
            { "id": "guest", "op": "map.wasm", "inputs": ["numbers"], "module": "guest.wat", "schema": { "n": "integer" } },
            { "id": "out", "op": "sink.blackhole", "inputs": ["guest"] }
        ]
    });
    zip_of(&[("job.json", job.to_string().as_bytes()), ("guest.wat", module.as_bytes())])
}

#[test]
fn guests_that_loop_outgrow_memory_trap_or_open_files_fail_once_and_the_taskmanager_runs_on() {
    let mut h = cluster("wasm-sandbox", 1);
    let tm_pid = h.process(1).pid();
    let config = json!({ "wasm.call.timeout": "500 ms", "wasm.memory.max": "2 mb",
                         "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": "3" });
    let open = r#"(import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#;
    let cases = [
        ("(loop $l (br $l)) unreachable", "", "ran longer than 500 ms (wasm.call.timeout)"),
        (
            "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 4)) (i32.const -1)))) unreachable",
            "",
            "needed more than 2097152 bytes of memory (wasm.memory.max)",
        ),
        ("(i32.load (i32.const 0x7ffffff0))", "", "out of bounds memory access"),
        (
            "(drop (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 11) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0))) (local.get $in)",
            open,
            "called wasi_snapshot_preview1::path_open: Flint grants no file system",
        ),
    ];
    for (body, imports, reason) in cases {
        let id = submitted(&submit_package(&h, &sandbox_job(body, imports, config.clone()), &json!({})));
        let failed = h.wait_job_state(&id, "FAILED", DEADLINE);
        let exceptions = h.get_ok(&format!("/jobs/{id}/exceptions"));
        let root = exceptions["root-exception"].as_str().unwrap_or_default();
        assert!(root.contains("module 'guest.wat' function 'map'"), "{reason}: {exceptions}");
        assert!(root.contains(reason), "{reason}: {exceptions}");
        // A guest failure repeats on the same input: no restart despite the strategy.
        assert_eq!(exceptions["exceptionHistory"]["entries"].as_array().map(Vec::len), Some(1), "{exceptions}");
        assert_eq!(failed["timestamps"]["RESTARTING"].as_u64().unwrap_or(0), 0, "{failed}");
        assert!(flint_tests::is_alive(tm_pid), "the taskmanager survived: {reason}");
    }
    // The same taskmanager runs a healthy job next.
    let id = submitted(&submit_package(&h, &sandbox_job("(local.get $in)", "", json!({})), &json!({})));
    h.wait_job_state(&id, "FINISHED", DEADLINE);
    assert_eq!(h.get_ok("/overview")["taskmanagers"], 1);
    assert!(flint_tests::is_alive(tm_pid));
}

fn counting_job(records: u64, rate: Option<u64>, checkpoints: Option<&Path>, fail_after: Option<u64>) -> String {
    let mut source = json!({ "id": "numbers", "op": "source.sequence", "from": 0, "to": records - 1 });
    if let Some(rate) = rate {
        source["rate"] = json!(rate);
        source["rate_until_checkpoints"] = json!(2);
    }
    let mut ops = vec![
        source,
        json!({ "id": "keys", "op": "map", "inputs": ["numbers"], "fields": { "key": "\"k\" + str::from(n % 50)", "n": "n" } }),
        // (serde_json writes keys sorted: the schema's fields are named in their order.)
        json!({ "id": "count", "op": "process.wasm", "inputs": ["keys"], "key": ["key"], "module": "count.wat",
                "schema": { "key": "string", "running": "integer" } }),
    ];
    let mut last = "count";
    if let Some(after) = fail_after {
        ops.push(json!({ "id": "boom", "op": "fail", "inputs": ["count"], "subtask": 1, "after": after }));
        last = "boom";
    }
    ops.push(json!({ "id": "out", "op": "sink.file", "inputs": [last], "path": "${out}", "format": "json" }));
    let mut config = json!({});
    if let Some(dir) = checkpoints {
        config = json!({
            "execution.checkpointing.interval": "200 ms",
            "state.checkpoints.dir": dir,
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": "3",
            "restart-strategy.fixed-delay.delay": "100 ms"
        });
    }
    json!({ "flint": 1, "name": "wasm-count", "config": config, "operators": ops }).to_string()
}

fn counting_package(job: &str) -> Vec<u8> {
    zip_of(&[("job.json", job.as_bytes()), ("count.wat", guest("count.wat").as_bytes())])
}

/// Every key's counts 1..=per_key appear exactly once.
fn assert_exactly_once(out: &Path, keys: u64, per_key: u64) {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in json_rows(out) {
        seen.entry(row["key"].as_str().unwrap().to_string()).or_default().push(row["running"].as_u64().unwrap());
    }
    assert_eq!(seen.len() as u64, keys);
    for (key, mut counts) in seen {
        counts.sort_unstable();
        assert_eq!(counts, (1..=per_key).collect::<Vec<_>>(), "key {key}: every count once");
    }
}

#[test]
fn a_wasm_keyed_counter_is_exact_across_a_failure_and_a_savepoint_rescale() {
    const RECORDS: u64 = 1_000_000;
    let h = cluster("wasm-exactly-once", 2);

    // An injected failure after 55 % of what subtask 1 of the counter emits (its keys follow
    // from the key hashing).
    let on_one = (0..50).filter(|k| subtask_for_hash(hash_key(format!("k{k}").as_bytes()), 128, 4) == 1).count() as u64;
    assert!(on_one > 0, "no key is routed to subtask 1");
    let out = h.home.join("out-failure");
    let checkpoints = h.home.join("checkpoints");
    let job = counting_job(RECORDS, Some(200_000), Some(&checkpoints), Some(on_one * (RECORDS / 50) * 55 / 100));
    let request = json!({ "parallelism": 4, "programArgsList": ["--out", out.display().to_string()] });
    let id = submitted(&submit_package(&h, &counting_package(&job), &request));
    let done = h.wait_job_state(&id, "FINISHED", DEADLINE);
    assert!(done["timestamps"]["RESTARTING"].as_u64().unwrap_or(0) > 0, "the job restarted: {done}");
    let stats = h.get_ok(&format!("/jobs/{id}/checkpoints"));
    assert!(stats["latest"]["restored"]["id"].as_u64().is_some(), "restored from a checkpoint: {stats}");
    assert_exactly_once(&out, 50, RECORDS / 50);

    // A savepoint at parallelism 4, resumed at 2.
    let out = h.home.join("out-savepoint");
    let savepoints = h.home.join("savepoints");
    let args = json!(["--out", out.display().to_string()]);
    let job = counting_job(RECORDS, Some(100_000), None, None);
    let id =
        submitted(&submit_package(&h, &counting_package(&job), &json!({ "parallelism": 4, "programArgsList": args })));
    h.wait_for("all tasks RUNNING", DEADLINE, || all_running(&h.job(&id)).then_some(()));
    h.wait_for("the source to emit", DEADLINE, || {
        (h.job(&id)["vertices"][0]["metrics"]["write-records"].as_u64().unwrap_or(0) > 0).then_some(())
    });
    let reply = h
        .post_json(&format!("/jobs/{id}/savepoints"), &json!({ "target-directory": savepoints, "cancel-job": true }))
        .unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text);
    let trigger = reply.body["request-id"].as_str().unwrap().to_string();
    let status = h.wait_for("the savepoint", DEADLINE, || {
        let r = h.get_ok(&format!("/jobs/{id}/savepoints/{trigger}"));
        (r["status"]["id"] == "COMPLETED").then_some(r)
    });
    let location = PathBuf::from(status["operation"]["location"].as_str().unwrap_or_else(|| panic!("{status}")));
    h.wait_job_state(&id, "CANCELED", DEADLINE);
    let job = counting_job(RECORDS, None, None, None);
    let request = json!({ "parallelism": 2, "programArgsList": args, "savepointPath": location.display().to_string() });
    let resumed = submitted(&submit_package(&h, &counting_package(&job), &request));
    h.wait_job_state(&resumed, "FINISHED", DEADLINE);
    let stats = h.get_ok(&format!("/jobs/{resumed}/checkpoints"));
    assert_eq!(stats["latest"]["restored"]["is_savepoint"], true, "{stats}");
    assert_exactly_once(&out, 50, RECORDS / 50);
}

/// The C example: built from `examples/fraud/fraud.c` with Debian's clang and wasi-libc
/// (the committed `fraud.wasm` must be that build), checked on input whose alerts are known,
/// and its package directory run as it is with `flint run`.
#[test]
fn the_c_fraud_example_builds_runs_and_raises_exactly_the_expected_alerts() {
    let root = flint_tests::repo_root();
    let example = root.join("examples/fraud");
    let h = cluster("wasm-c", 1);
    // Both modules build from their sources with Debian's clang and wasi-libc, to exactly
    // the committed binaries.
    let build = |name: &str| -> Vec<u8> {
        let built = h.home.join(format!("{name}.wasm"));
        let clang = std::process::Command::new("clang")
            .args(["--target=wasm32-wasi", "-O2", "-nostartfiles", "-Wl,--no-entry", "-Wl,--strip-all", "-I"])
            .arg(root.join("sdk/c"))
            .arg("-o")
            .arg(&built)
            .arg(example.join(format!("{name}.c")))
            .output()
            .expect("clang (installed by scripts/install-test-deps.sh with wasi-libc)");
        assert!(clang.status.success(), "clang {name}.c: {}", String::from_utf8_lossy(&clang.stderr));
        let module = std::fs::read(&built).unwrap();
        assert!(
            module == std::fs::read(example.join(format!("{name}.wasm"))).unwrap(),
            "examples/fraud/{name}.wasm is not the build of {name}.c: rebuild it with the command in {name}.c"
        );
        module
    };
    let module = build("fraud");
    let rules = build("rules");

    // Known input: account n % 3, small amounts at n % 7 == 0, large at n % 11 == 0, one
    // event a second; one source instance, so every account's events arrive in time order.
    const EVENTS: i64 = 20_000;
    let job = format!(
        "flint: 1
name: fraud-check
parallelism: 2
functions:
  rules: {{ module: rules.wasm, params: {{ small: 1, large: 500 }}, exports: {{ risk: {{ args: [float], returns: integer }} }} }}
operators:
  - {{ id: numbers, op: source.sequence, from: 0, to: {}, parallelism: 1 }}
  - {{ id: events, op: map, inputs: [numbers], parallelism: 1,
      fields: {{ account: '\"a\" + str::from(n % 3)', amount: 'if(n % 7 == 0, 0.5, if(n % 11 == 0, 900.0, 100.0))', ts: n * 1000 }} }}
  - {{ id: unusual, op: filter, inputs: [events], parallelism: 1, predicate: 'wasm::rules::risk(amount) != 1' }}
  - {{ id: detect, op: process.wasm, inputs: [unusual], key: [account], module: fraud.wasm, timestamp_field: ts,
      schema: {{ account: string, ts: integer, amount: float }}, params: {{ small: 1, large: 500, window_ms: 60000 }} }}
  - {{ id: out, op: sink.file, inputs: [detect], path: '${{out}}', format: json }}
",
        EVENTS - 1
    );
    let mut flagged: BTreeMap<i64, i64> = BTreeMap::new();
    let mut expected = Vec::new();
    for n in 0..EVENTS {
        let (account, ts) = (n % 3, n * 1000);
        let amount = if n % 7 == 0 {
            0.5
        } else if n % 11 == 0 {
            900.0
        } else {
            100.0
        };
        if let Some(&at) = flagged.get(&account) {
            if ts - at <= 60_000 && amount > 500.0 {
                expected.push((format!("a{account}"), ts));
                flagged.remove(&account);
            }
        }
        if amount < 1.0 {
            flagged.insert(account, ts);
        }
    }
    let out = h.home.join("alerts");
    let zip = zip_of(&[("job.yaml", job.as_bytes()), ("fraud.wasm", &module), ("rules.wasm", &rules)]);
    let id = submitted(&submit_package(&h, &zip, &json!({ "programArgsList": ["--out", out.display().to_string()] })));
    h.wait_job_state(&id, "FINISHED", DEADLINE);
    let mut alerts: Vec<(String, i64)> = json_rows(&out)
        .iter()
        .map(|r| (r["account"].as_str().unwrap().to_string(), r["ts"].as_i64().unwrap()))
        .collect();
    alerts.sort_by_key(|(_, ts)| *ts);
    assert!(!expected.is_empty());
    assert_eq!(alerts, expected);
    assert_eq!(h.accumulators(&id).get("alerts"), Some(&(expected.len() as u64)));
    // Its flint_open logged through flint.log, once per subtask, naming the module.
    let log = std::fs::read_to_string(h.log_dir.join("taskmanager-1.log")).unwrap();
    let ready: Vec<&str> = log.lines().filter(|l| l.contains("fraud detector ready")).collect();
    assert_eq!(ready.len(), 2, "{ready:?}");
    assert!(ready.iter().all(|l| l.contains("fraud.wasm")), "{ready:?}");

    // The example directory, zipped as it is, runs with `flint run`.
    let files: Vec<(String, Vec<u8>)> = ["job.yaml", "fraud.wasm", "fraud.c", "rules.wasm", "rules.c"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(example.join(f)).unwrap()))
        .collect();
    let entries: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let package = h.home.join("fraud.zip");
    std::fs::write(&package, zip_of(&entries)).unwrap();
    let run = std::process::Command::new(flint_tests::bin_dir().join("flint"))
        .args(["-m", &format!("127.0.0.1:{}", h.rest_port), "run"])
        .arg(&package)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(run.status.success(), "flint run: {stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let jobs = h.get_ok("/jobs/overview");
    let example_id = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "fraud-detection")
        .map(|j| j["jid"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("the example job is listed: {jobs}"));
    h.wait_job_state(&example_id, "FINISHED", DEADLINE);
    assert!(h.accumulators(&example_id).get("alerts").copied().unwrap_or(0) > 0, "the example raised alerts");
}
