//! Job files end to end: validation problems, chaining, ids, plan JSON, wire formats.

use std::path::PathBuf;

use super::*;
use crate::ids::JobId;

const WORD_COUNT: &str = r#"
{ "flint": 1, "name": "word-count", "parallelism": 2,
  "config": { "pipeline.max-parallelism": "128" },
  "operators": [
    { "id": "lines", "op": "source.file", "path": "/data/words.txt" },
    { "id": "words", "op": "flat_map.split", "inputs": ["lines"], "field": "line", "separator": " ", "as": "word" },
    { "id": "counts", "op": "aggregate", "inputs": ["words"], "key": ["word"], "aggs": { "count": "count()" } },
    { "id": "out", "op": "sink.file", "inputs": ["counts"], "path": "/data/out" } ] }
"#;

const WORD_COUNT_YAML: &str = r#"
flint: 1
name: word-count
parallelism: 2
config:
  pipeline.max-parallelism: "128"
operators:
  - id: lines
    op: source.file
    path: /data/words.txt
  - id: words
    op: flat_map.split
    inputs: [lines]
    field: line
    separator: " "
    as: word
  - id: counts
    op: aggregate
    inputs: [words]
    key: [word]
    aggs:
      count: count()
  - id: out
    op: sink.file
    inputs: [counts]
    path: /data/out
"#;

/// A job of parallelism 2 with the given operators (JSON objects, comma separated).
fn job(operators: &str) -> String {
    format!(r#"{{"flint": 1, "name": "t", "parallelism": 2, "operators": [{operators}]}}"#)
}

fn graph(text: &str) -> JobGraph {
    match compile_job(text, 1) {
        Ok(g) => g,
        Err(e) => panic!("job did not validate:\n{e}"),
    }
}

/// The problems of a job that must not validate, as displayed.
fn problems(text: &str) -> Vec<String> {
    match load_job(text, 1) {
        Ok(_) => panic!("job validated:\n{text}"),
        Err(e) => e.lines(),
    }
}

/// The only problem of a job, asserting which operator it concerns.
fn only_problem(text: &str) -> JobProblem {
    let err = load_job(text, 1).expect_err("job validated");
    assert_eq!(err.problems.len(), 1, "expected one problem, got:\n{err}");
    err.problems.into_iter().next().unwrap()
}

fn assert_problem(text: &str, operator: Option<&str>, message: &str) {
    let p = only_problem(text);
    assert_eq!(p.operator.as_deref(), operator, "{p}");
    assert_eq!(p.message, message);
}

fn names(g: &JobGraph) -> Vec<&str> {
    g.vertices.iter().map(|v| v.name.as_str()).collect()
}

const SEQ: &str = r#"{"id": "seq", "op": "source.sequence", "to": 100}"#;

// ---- valid jobs --------------------------------------------------------------------------

#[test]
fn word_count_validates_and_plans_two_vertices() {
    let job = load_job(WORD_COUNT, 1).unwrap();
    assert_eq!(job.name, "word-count");
    assert_eq!((job.parallelism, job.max_parallelism), (2, 128));
    let ids: Vec<&str> = job.operators.iter().map(|o| o.spec.id.as_str()).collect();
    assert_eq!(ids, ["lines", "words", "counts", "out"]);
    assert_eq!(job.operators[2].spec.output_schema.as_ref().unwrap().to_string(), "(word: string, count: integer)");

    let g = job.job_graph();
    assert_eq!(names(&g), ["Source: lines -> words", "counts -> Sink: out"]);
    assert_eq!(g.vertices[0].input_schema, None);
    assert_eq!(g.vertices[0].output_schema.as_ref().unwrap().to_string(), "(word: string)");
    assert_eq!(g.vertices[1].input_schema.as_ref().unwrap().to_string(), "(word: string)");
    assert_eq!(g.vertices[1].output_schema, None);
    assert_eq!(
        g.edges,
        vec![JobEdge {
            source: g.vertices[0].id,
            target: g.vertices[1].id,
            ship: ShipStrategy::Hash { keys: vec!["word".into()] },
            target_input: 0,
        }]
    );
    assert!(g.is_bounded());
    assert_eq!(g.slots_needed(), 2);
    assert_eq!(g.config.get("pipeline.max-parallelism").map(String::as_str), Some("128"));
}

#[test]
fn yaml_input_equals_json_input() {
    assert_eq!(parse_job(WORD_COUNT_YAML).unwrap(), parse_job(WORD_COUNT).unwrap());
    assert_eq!(graph(WORD_COUNT_YAML), graph(WORD_COUNT));
}

#[test]
fn cluster_default_parallelism_applies_when_the_job_sets_none() {
    let text = r#"{"flint": 1, "name": "d", "operators": [
        {"id": "s", "op": "source.sequence"}, {"id": "p", "op": "sink.print", "inputs": ["s"], "parallelism": 1}]}"#;
    let job = load_job(text, 3).unwrap();
    assert_eq!(job.parallelism, 3);
    assert_eq!(job.operators[0].spec.parallelism, 3);
    assert_eq!(job.operators[1].spec.parallelism, 1);
}

#[test]
fn the_documented_examples_validate() {
    let windowed = r#"
flint: 1
name: clicks-per-user
parallelism: 2
operators:
  - id: clicks
    op: source.datagen
    rate: 1000
    fields:
      user: { kind: random_int, min: 1, max: 50 }
      ts: { kind: sequence, start: 1700000000000, end: 1800000000000 }
  - id: per-user
    op: window
    inputs: [clicks]
    key: [user]
    size: 10 s
    time: event
    timestamp_field: ts
    max_out_of_orderness: 500 ms
    aggs: { clicks: "count()", last: "max(ts)" }
  - id: print
    op: sink.print
    inputs: [per-user]
"#;
    let g = graph(windowed);
    assert_eq!(names(&g), ["Source: clicks", "per-user -> Sink: print"]);
    assert!(!g.is_bounded());
    let sequence = r#"
flint: 1
name: squares
parallelism: 4
operators:
  - { id: numbers, op: source.sequence, from: 1, to: 1000000 }
  - id: squares
    op: map
    inputs: [numbers]
    fields: { n: "n", square: "n * n", label: "\"n\" + str::from(n)" }
  - { id: odd, op: filter, inputs: [squares], predicate: "square % 2 == 1" }
  - { id: discard, op: sink.blackhole, inputs: [odd] }
"#;
    let g = graph(sequence);
    assert_eq!(names(&g), ["Source: numbers -> squares -> odd -> Sink: discard"]);
    assert_eq!(
        g.vertices[0].operators[1].output_schema.as_ref().unwrap().to_string(),
        "(n: integer, square: integer, label: string)"
    );
}

// ---- chaining and ship strategies -------------------------------------------------------

#[test]
fn equal_parallelism_forward_pipeline_is_one_vertex() {
    let g = graph(&job(&format!(
        r#"{SEQ},
        {{"id": "m", "op": "map", "inputs": ["seq"], "fields": {{"n": "n * 2"}}}},
        {{"id": "f", "op": "filter", "inputs": ["m"], "predicate": "n % 3 != 0", "name": "Not divisible"}},
        {{"id": "sink", "op": "sink.blackhole", "inputs": ["f"]}}"#
    )));
    assert_eq!(names(&g), ["Source: seq -> m -> Not divisible -> Sink: sink"]);
    assert!(g.edges.is_empty());
    let ops: Vec<&str> = g.vertices[0].operators.iter().map(|o| o.kind.op_type()).collect();
    assert_eq!(ops, ["source.sequence", "map", "filter", "sink.blackhole"]);
}

#[test]
fn a_hash_edge_splits_the_chain_even_for_key_by() {
    let g = graph(&job(&format!(
        r#"{SEQ},
        {{"id": "k", "op": "key_by", "inputs": ["seq"], "key": ["n"]}},
        {{"id": "p", "op": "sink.print", "inputs": ["k"]}}"#
    )));
    assert_eq!(names(&g), ["Source: seq", "k -> Sink: p"]);
    assert_eq!(g.edges[0].ship, ShipStrategy::Hash { keys: vec!["n".into()] });
}

#[test]
fn a_parallelism_change_splits_with_rebalance() {
    let g = graph(&job(&format!(
        r#"{SEQ},
        {{"id": "m", "op": "map", "inputs": ["seq"], "fields": {{"n": "n + 1"}}, "parallelism": 3}},
        {{"id": "p", "op": "sink.print", "inputs": ["m"], "parallelism": 3}}"#
    )));
    assert_eq!(names(&g), ["Source: seq", "m -> Sink: p"]);
    assert_eq!((g.vertices[0].parallelism, g.vertices[1].parallelism), (2, 3));
    assert_eq!(g.edges[0].ship, ShipStrategy::Rebalance);
}

#[test]
fn union_of_two_sources_has_two_numbered_inputs() {
    let g = graph(&job(r#"{"id": "a", "op": "source.sequence", "to": 10},
        {"id": "b", "op": "source.sequence", "from": 100, "to": 110, "parallelism": 1},
        {"id": "u", "op": "union", "inputs": ["a", "b"]},
        {"id": "p", "op": "sink.print", "inputs": ["u"]}"#));
    assert_eq!(names(&g), ["Source: a", "Source: b", "u -> Sink: p"]);
    let u = g.vertex_of_operator("u").unwrap().id;
    let inputs = g.inputs_of(u);
    assert_eq!(inputs.len(), 2);
    assert_eq!(
        (inputs[0].source, inputs[0].target_input, &inputs[0].ship),
        (vertex_id_for("a"), 0, &ShipStrategy::Forward)
    );
    assert_eq!(
        (inputs[1].source, inputs[1].target_input, &inputs[1].ship),
        (vertex_id_for("b"), 1, &ShipStrategy::Rebalance)
    );
    assert_eq!(g.outputs_of(vertex_id_for("a")).len(), 1);
}

#[test]
fn an_explicit_ship_overrides_and_splits() {
    let g = graph(&job(&format!(
        r#"{SEQ},
        {{"id": "m", "op": "map", "inputs": ["seq"], "fields": {{"n": "n"}}, "ship": "rebalance"}},
        {{"id": "b", "op": "fail", "inputs": ["m"], "after": 10, "ship": "broadcast"}},
        {{"id": "r", "op": "sink.print", "inputs": ["b"], "ship": "rescale", "parallelism": 4}}"#
    )));
    assert_eq!(names(&g), ["Source: seq", "m", "b", "Sink: r"]);
    let ships: Vec<&str> = g.edges.iter().map(|e| e.ship.flink_name()).collect();
    assert_eq!(ships, ["REBALANCE", "BROADCAST", "RESCALE"]);
    // An explicit forward at equal parallelism chains like the default.
    let g = graph(&job(&format!(r#"{SEQ}, {{"id": "p", "op": "sink.print", "inputs": ["seq"], "ship": "forward"}}"#)));
    assert_eq!(names(&g), ["Source: seq -> Sink: p"]);
}

#[test]
fn an_upstream_with_two_consumers_does_not_chain() {
    let g = graph(&job(&format!(
        r#"{SEQ},
        {{"id": "p1", "op": "sink.print", "inputs": ["seq"]}},
        {{"id": "p2", "op": "sink.blackhole", "inputs": ["seq"]}}"#
    )));
    assert_eq!(names(&g), ["Source: seq", "Sink: p1", "Sink: p2"]);
    assert!(g.edges.iter().all(|e| e.ship == ShipStrategy::Forward));
}

#[test]
fn vertices_are_in_topological_order_whatever_the_file_order() {
    let g = graph(&job(r#"{"id": "p", "op": "sink.print", "inputs": ["k"]},
        {"id": "k", "op": "key_by", "inputs": ["s"], "key": "n"},
        {"id": "s", "op": "source.sequence"}"#));
    assert_eq!(names(&g), ["Source: s", "k -> Sink: p"]);
    assert!(!g.is_bounded());
}

#[test]
fn vertex_ids_are_deterministic() {
    let a = graph(WORD_COUNT);
    let b = graph(WORD_COUNT);
    let ids = |g: &JobGraph| g.vertices.iter().map(|v| v.id).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(ids(&a), [vertex_id_for("lines"), vertex_id_for("counts")]);
    assert_ne!(vertex_id_for("lines"), vertex_id_for("line"));
    // FNV-1a 128 of the empty input is its offset basis.
    assert_eq!(vertex_id_for("").to_string(), "6c62272e07bb014262b821756295c58d");
}

#[test]
fn boundedness_follows_the_sources() {
    let bounded = |source: &str| {
        graph(&job(&format!(r#"{source}, {{"id": "p", "op": "sink.print", "inputs": ["s"]}}"#))).is_bounded()
    };
    assert!(bounded(r#"{"id": "s", "op": "source.sequence", "to": 5}"#));
    assert!(!bounded(r#"{"id": "s", "op": "source.sequence"}"#));
    assert!(bounded(
        r#"{"id": "s", "op": "source.datagen", "rows": 5, "fields": {"x": {"kind": "random_int", "min": 0, "max": 1}}}"#
    ));
    assert!(!bounded(
        r#"{"id": "s", "op": "source.datagen", "fields": {"x": {"kind": "random_int", "min": 0, "max": 1}}}"#
    ));
    assert!(bounded(r#"{"id": "s", "op": "source.file", "path": "/in"}"#));
    assert!(!bounded(r#"{"id": "s", "op": "source.socket", "host": "localhost", "port": 9999}"#));
}

#[test]
fn a_socket_source_runs_at_parallelism_one() {
    let g = graph(&job(r#"{"id": "s", "op": "source.socket", "host": "localhost", "port": 9000},
        {"id": "p", "op": "sink.print", "inputs": ["s"]}"#));
    assert_eq!(names(&g), ["Source: s", "Sink: p"]);
    assert_eq!(g.vertices[0].parallelism, 1);
    assert_eq!(g.edges[0].ship, ShipStrategy::Rebalance);
    assert_problem(
        &job(
            r#"{"id": "s", "op": "source.socket", "host": "h", "port": 1, "parallelism": 2}, {"id": "p", "op": "sink.print", "inputs": ["s"]}"#,
        ),
        Some("s"),
        "source.socket is not parallel: its parallelism must be 1",
    );
}

// ---- plan JSON and wire formats ----------------------------------------------------------

fn reference(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/flink-rest").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Same keys at every level, and the same JSON type for every value (arrays compared by
/// their first element).
fn assert_same_shape(ours: &serde_json::Value, theirs: &serde_json::Value, path: &str) {
    use serde_json::Value::*;
    match (ours, theirs) {
        (Object(a), Object(b)) => {
            let (ka, kb): (Vec<_>, Vec<_>) = (a.keys().collect(), b.keys().collect());
            let (mut sa, mut sb) = (ka.clone(), kb.clone());
            sa.sort();
            sb.sort();
            assert_eq!(sa, sb, "keys differ at {path}");
            for k in kb {
                assert_same_shape(&a[k.as_str()], &b[k.as_str()], &format!("{path}.{k}"));
            }
        }
        (Array(a), Array(b)) => {
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                assert_same_shape(x, y, &format!("{path}[0]"));
            }
        }
        (Number(a), Number(b)) => assert_eq!(a.is_u64(), b.is_u64(), "number kinds differ at {path}"),
        (a, b) => assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b), "types differ at {path}"),
    }
}

#[test]
fn plan_json_matches_flinks_shape() {
    let job_id: JobId = "687b908870d5eca5b7f4a5d54f67e9b1".parse().unwrap();
    let ours = graph(WORD_COUNT).plan_json(job_id);
    for file in ["jobs_FINISHEDJOBID_plan.json", "jobs_JOBID_plan.json"] {
        let theirs = reference(file);
        assert_same_shape(&ours, &theirs["plan"], "plan");
        // Node by node: the one with inputs and the source without.
        let (ours_nodes, their_nodes) =
            (ours["nodes"].as_array().unwrap(), theirs["plan"]["nodes"].as_array().unwrap());
        assert_same_shape(&ours_nodes[0], &their_nodes[0], "nodes[0]");
        assert_same_shape(&ours_nodes[1], &their_nodes[1], "nodes[1]");
        assert_eq!(ours["type"], theirs["plan"]["type"]);
    }
    let counts = vertex_id_for("counts").to_string();
    let lines = vertex_id_for("lines").to_string();
    assert_eq!(
        ours,
        serde_json::json!({
            "jid": "687b908870d5eca5b7f4a5d54f67e9b1",
            "name": "word-count",
            "type": "STREAMING",
            "nodes": [
                {"id": counts, "parallelism": 2, "operator": "", "operator_strategy": "",
                 "description": "counts<br/>+- Sink: out<br/>",
                 "inputs": [{"num": 0, "id": lines, "ship_strategy": "HASH", "exchange": "pipelined_bounded"}],
                 "optimizer_properties": {}},
                {"id": lines, "parallelism": 2, "operator": "", "operator_strategy": "",
                 "description": "Source: lines<br/>+- words<br/>", "optimizer_properties": {}},
            ],
        })
    );
}

#[test]
fn plan_description_nests_long_chains_and_escapes_html() {
    let g = graph(&job(&format!(
        r#"{SEQ},
        {{"id": "m", "op": "map", "inputs": ["seq"], "fields": {{"n": "n"}}, "name": "a<b>&\"c\""}},
        {{"id": "p", "op": "sink.print", "inputs": ["m"]}}"#
    )));
    let plan = g.plan_json(JobId::from_u128(1));
    assert_eq!(
        plan["nodes"][0]["description"],
        "Source: seq<br/>+- a&lt;b&gt;&amp;&quot;c&quot;<br/>   +- Sink: p<br/>"
    );
    assert_eq!(plan["jid"], "00000000000000000000000000000001");
    assert!(plan["nodes"][0].get("inputs").is_none());
}

#[test]
fn job_graph_round_trips_through_messagepack_and_json() {
    let g = graph(
        r#"
flint: 1
name: everything
parallelism: 2
config: { pipeline.max-parallelism: 64 }
operators:
  - id: gen
    op: source.datagen
    seed: 7
    rows: 1000
    rate: 50.5
    fields:
      k: { kind: random_string, length: 3 }
      v: { kind: random_float, min: -1, max: 1 }
      ts: { kind: sequence, start: 0, end: 99 }
  - { id: m, op: map, inputs: [gen], keep_input: true, fields: { big: "v > 0.5", k: "str::to_uppercase(k)" } }
  - { id: f, op: filter, inputs: [m], predicate: "big || len(k) > 2" }
  - { id: w, op: window, inputs: [f], key: [k], size: 1 s, slide: 500 ms, time: event, timestamp_field: ts, aggs: { avg: "avg(v)" } }
  - { id: a, op: aggregate, inputs: [w], key: k, aggs: { n: "count()", hi: "max(avg)" } }
  - { id: out, op: sink.file, inputs: [a], path: /tmp/out, format: json, parallelism: 1 }
"#,
    );
    let bytes = rmp_serde::to_vec_named(&g).unwrap();
    let back: JobGraph = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, g);
    let json = serde_json::to_string(&g).unwrap();
    let back: JobGraph = serde_json::from_str(&json).unwrap();
    assert_eq!(back, g);
    assert_eq!(g.max_parallelism, 64);
    assert_eq!(names(&g), ["Source: gen -> m -> f", "w", "a", "Sink: out"]);
}

// ---- validation problems, one class each -------------------------------------------------

#[test]
fn malformed_json_reports_line_and_column() {
    let p = only_problem("{\"flint\": 1,\n \"name\": \"x\",,\n}");
    assert_eq!(p.operator, None);
    assert!(p.message.starts_with("malformed JSON: ") && p.message.contains("line 2 column"), "{}", p.message);
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    let p = only_problem("flint: 1\nname: x\noperators:\n  - id: [\n");
    assert!(p.message.starts_with("malformed YAML: ") && p.message.contains("line 5 column"), "{}", p.message);
}

#[test]
fn unknown_format_version() {
    let text = WORD_COUNT.replace("\"flint\": 1", "\"flint\": 2");
    assert_problem(&text, None, "unsupported job format version 2 (this Flint reads 'flint': 1)");
    let text = WORD_COUNT.replace("\"flint\": 1,", "");
    assert_problem(&text, None, "missing 'flint': the job format version (must be 1)");
}

#[test]
fn missing_name() {
    assert_problem(&WORD_COUNT.replace("\"name\": \"word-count\",", ""), None, "missing job 'name'");
    assert_problem(&WORD_COUNT.replace("\"word-count\"", "\" \""), None, "missing job 'name'");
}

#[test]
fn empty_operators() {
    assert_problem(r#"{"flint": 1, "name": "x", "operators": []}"#, None, "the job has no operators");
    assert_problem(r#"{"flint": 1, "name": "x"}"#, None, "the job has no operators");
}

#[test]
fn duplicate_ids() {
    assert_problem(
        &job(&format!(
            r#"{SEQ}, {{"id": "seq", "op": "source.sequence"}}, {{"id": "p", "op": "sink.print", "inputs": ["seq"]}}"#
        )),
        Some("seq"),
        "duplicate operator id (also used by operator #1)",
    );
}

#[test]
fn missing_id() {
    assert_problem(&job(r#"{"op": "source.sequence"}"#), None, "operator #1: missing 'id'");
}

#[test]
fn unknown_operator_type_lists_the_known_ones() {
    let p = only_problem(&job(&format!(r#"{SEQ}, {{"id": "m", "op": "mapp", "inputs": ["seq"]}}"#)));
    assert_eq!(p.operator.as_deref(), Some("m"));
    assert!(p.message.starts_with("unknown operator type 'mapp' (known: source.sequence, source.datagen, source.file, source.socket, source.kafka, map, filter,"), "{}", p.message);
    assert!(p.message.ends_with("sink.blackhole, sink.kafka)"));
    let p = only_problem(&job(r#"{"id": "x"}"#));
    assert!(p.message.starts_with("missing 'op' (known operator types: source.sequence"), "{}", p.message);
}

#[test]
fn missing_input() {
    assert_problem(
        &job(&format!(r#"{SEQ}, {{"id": "p", "op": "sink.print"}}"#)),
        Some("p"),
        "missing input: sink.print needs exactly 1 input",
    );
}

#[test]
fn unknown_input_id() {
    assert_problem(
        &job(&format!(r#"{SEQ}, {{"id": "p", "op": "sink.print", "inputs": ["sequence"]}}"#)),
        Some("p"),
        "unknown input 'sequence' (operators: seq, p)",
    );
}

#[test]
fn a_sink_used_as_input() {
    assert_problem(
        &job(&format!(
            r#"{SEQ}, {{"id": "p", "op": "sink.print", "inputs": ["seq"]}}, {{"id": "q", "op": "sink.print", "inputs": ["p"]}}"#
        )),
        Some("q"),
        "cannot read from sink 'p': sinks have no output",
    );
}

#[test]
fn a_cycle_names_its_operators() {
    assert_problem(
        &job(&format!(
            r#"{SEQ},
            {{"id": "u", "op": "union", "inputs": ["seq", "b"]}},
            {{"id": "a", "op": "map", "inputs": ["u"], "fields": {{"n": "n"}}}},
            {{"id": "b", "op": "filter", "inputs": ["a"], "predicate": "n > 0"}},
            {{"id": "p", "op": "sink.print", "inputs": ["b"]}}"#
        )),
        Some("u"),
        "is part of a cycle: u -> a -> b -> u",
    );
    assert_problem(
        &job(&format!(r#"{SEQ}, {{"id": "m", "op": "union", "inputs": ["seq", "m"]}}"#)),
        Some("m"),
        "is part of a cycle: m -> m",
    );
}

#[test]
fn wrong_number_of_inputs() {
    let two = r#"{"id": "a", "op": "source.sequence"}, {"id": "b", "op": "source.sequence"}"#;
    assert_problem(
        &job(&format!(r#"{two}, {{"id": "p", "op": "sink.print", "inputs": ["a", "b"]}}"#)),
        Some("p"),
        "sink.print takes exactly 1 input, got 2 (merge streams with a union)",
    );
    assert_problem(
        &job(&format!(
            r#"{two}, {{"id": "u", "op": "union", "inputs": ["a"]}}, {{"id": "p", "op": "sink.print", "inputs": ["b"]}}"#
        )),
        Some("u"),
        "union needs at least 2 inputs, got 1",
    );
    assert_problem(
        &job(r#"{"id": "a", "op": "source.sequence"}, {"id": "b", "op": "source.sequence", "inputs": ["a"]}"#),
        Some("b"),
        "a source takes no inputs, got 1",
    );
    assert_problem(
        &job(&format!(r#"{SEQ}, {{"id": "u", "op": "union", "inputs": ["seq", "seq"]}}"#)),
        Some("u"),
        "input 'seq' is listed twice",
    );
}

#[test]
fn missing_parameter() {
    assert_problem(
        &job(r#"{"id": "f", "op": "source.file"}, {"id": "p", "op": "sink.print", "inputs": ["f"]}"#),
        Some("f"),
        "missing required parameter 'path'",
    );
}

#[test]
fn invalid_parameter() {
    assert_problem(
        &job(r#"{"id": "s", "op": "source.sequence", "to": "ten"}, {"id": "p", "op": "sink.print", "inputs": ["s"]}"#),
        Some("s"),
        "parameter 'to' must be an integer, got string \"ten\"",
    );
    assert_problem(
        &job(
            r#"{"id": "s", "op": "source.sequence", "from": 5, "to": 1}, {"id": "p", "op": "sink.print", "inputs": ["s"]}"#,
        ),
        Some("s"),
        "'to' (1) is less than 'from' (5)",
    );
}

#[test]
fn unknown_parameter() {
    assert_problem(
        &job(
            r#"{"id": "f", "op": "source.file", "path": "/in"}, {"id": "w", "op": "flat_map.split", "inputs": ["f"], "field": "line", "seperator": ","}, {"id": "p", "op": "sink.print", "inputs": ["w"]}"#,
        ),
        Some("w"),
        "unknown parameter 'seperator' (parameters of flat_map.split: field, separator, as)",
    );
}

#[test]
fn unknown_field_in_field_parameter() {
    let text = WORD_COUNT.replace("\"field\": \"line\"", "\"field\": \"lin\"");
    let err = load_job(&text, 1).unwrap_err();
    assert_eq!(err.to_string(), "operator 'words': unknown field 'lin' (input fields: line)");
}

#[test]
fn unknown_field_in_key() {
    assert_problem(
        &WORD_COUNT.replace("\"key\": [\"word\"]", "\"key\": [\"wrd\"]"),
        Some("counts"),
        "unknown field 'wrd' (input fields: word)",
    );
}

#[test]
fn unknown_field_in_expression() {
    assert_problem(
        &job(&format!(
            r#"{SEQ}, {{"id": "m", "op": "map", "inputs": ["seq"], "fields": {{"x": "m * 2"}}}}, {{"id": "p", "op": "sink.print", "inputs": ["m"]}}"#
        )),
        Some("m"),
        "unknown field 'm' in expression 'm * 2' (input fields: n)",
    );
}

#[test]
fn unknown_field_in_aggregate() {
    assert_problem(
        &WORD_COUNT.replace("\"count()\"", "\"max(words)\""),
        Some("counts"),
        "unknown field 'words' in aggregate 'max(words)' (input fields: word)",
    );
}

#[test]
fn unknown_timestamp_field() {
    assert_problem(
        &job(&format!(
            r#"{SEQ}, {{"id": "w", "op": "window", "inputs": ["seq"], "key": ["n"], "size": "1 s", "time": "event",
                "timestamp_field": "ts", "aggs": {{"c": "count()"}}}}, {{"id": "p", "op": "sink.print", "inputs": ["w"]}}"#
        )),
        Some("w"),
        "unknown field 'ts' (input fields: n)",
    );
}

#[test]
fn non_boolean_filter_predicate() {
    assert_problem(
        &job(&format!(
            r#"{SEQ}, {{"id": "f", "op": "filter", "inputs": ["seq"], "predicate": "n % 3"}}, {{"id": "p", "op": "sink.print", "inputs": ["f"]}}"#
        )),
        Some("f"),
        "the predicate 'n % 3' has type integer, not boolean",
    );
}

#[test]
fn union_schema_mismatch() {
    assert_problem(
        &job(r#"{"id": "a", "op": "source.sequence"}, {"id": "b", "op": "source.socket", "host": "h", "port": 1},
            {"id": "u", "op": "union", "inputs": ["a", "b"]}, {"id": "p", "op": "sink.print", "inputs": ["u"]}"#),
        Some("u"),
        "union inputs have different schemas: 'a' has (n: integer), 'b' has (line: string)",
    );
}

#[test]
fn non_positive_parallelism() {
    assert_problem(
        &WORD_COUNT.replace("\"parallelism\": 2", "\"parallelism\": 0"),
        None,
        "job parallelism must be positive, got 0",
    );
    assert_problem(
        &job(&format!(r#"{SEQ}, {{"id": "p", "op": "sink.print", "inputs": ["seq"], "parallelism": -1}}"#)),
        Some("p"),
        "parallelism must be positive, got -1",
    );
}

#[test]
fn parallelism_above_max_parallelism() {
    let text = WORD_COUNT
        .replace("\"128\"", "\"4\"")
        .replace("\"path\": \"/data/out\"", "\"path\": \"/data/out\", \"parallelism\": 5");
    assert_problem(&text, Some("out"), "parallelism 5 exceeds the max parallelism 4 ('pipeline.max-parallelism')");
    let text = WORD_COUNT.replace("\"128\"", "\"1\"");
    assert_problem(&text, None, "job parallelism 2 exceeds the max parallelism 1 ('pipeline.max-parallelism')");
    let text = WORD_COUNT.replace("\"128\"", "\"lots\"");
    assert_problem(&text, None, "config 'pipeline.max-parallelism' must be an integer between 1 and 32768, got 'lots'");
    let text = r#"{"flint": 1, "name": "x", "operators": [{"id": "s", "op": "source.sequence"}, {"id": "p", "op": "sink.print", "inputs": ["s"]}]}"#;
    let err = load_job(text, 200).unwrap_err();
    assert!(err.to_string().starts_with("the default parallelism 200 exceeds the max parallelism 128"), "{err}");
}

#[test]
fn forward_between_different_parallelisms() {
    assert_problem(
        &job(&format!(
            r#"{SEQ}, {{"id": "p", "op": "sink.print", "inputs": ["seq"], "ship": "forward", "parallelism": 1}}"#
        )),
        Some("p"),
        "'ship: forward' needs equal parallelism, but 'seq' has 2 and 'p' has 1",
    );
}

#[test]
fn invalid_ship_overrides() {
    assert_problem(
        &job(&format!(r#"{SEQ}, {{"id": "p", "op": "sink.print", "inputs": ["seq"], "ship": "hash"}}"#)),
        Some("p"),
        "unknown ship strategy 'hash' (known: forward, broadcast, rebalance, rescale)",
    );
    assert_problem(
        &job(&format!(
            r#"{SEQ}, {{"id": "k", "op": "key_by", "inputs": ["seq"], "key": "n", "ship": "rebalance"}}, {{"id": "p", "op": "sink.print", "inputs": ["k"]}}"#
        )),
        Some("k"),
        "'ship' cannot be set on key_by: it always hash-partitions its input on its key",
    );
}

#[test]
fn fail_subtask_must_exist() {
    assert_problem(
        &job(&format!(
            r#"{SEQ}, {{"id": "f", "op": "fail", "inputs": ["seq"], "subtask": 2, "after": 5}}, {{"id": "p", "op": "sink.print", "inputs": ["f"]}}"#
        )),
        Some("f"),
        "subtask 2 does not exist at parallelism 2 (subtasks count from 0)",
    );
}

#[test]
fn unknown_top_level_field() {
    assert_problem(
        &WORD_COUNT.replace("\"parallelism\": 2", "\"paralellism\": 2"),
        None,
        "unknown top-level field 'paralellism' (known: flint, name, parallelism, config, functions, operators)",
    );
}

// ---- many problems at once ---------------------------------------------------------------

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
{ "flint": 3, "parallelism": 2,
  "operators": [
    { "id": "lines", "op": "source.file", "path": "/in", "colour": "red" },
    { "id": "words", "op": "flat_map.split", "inputs": ["lines"], "field": "lin" },
    { "id": "counts", "op": "aggregate", "inputs": ["words"], "key": ["word"], "aggs": { "n": "count()", "s": "sum(word)" } },
    { "id": "odd", "op": "filter", "inputs": ["words"], "predicate": "len(word)" },
    { "id": "out", "op": "sink.print", "inputs": ["odd"] },
    { "id": "out", "op": "sink.print", "inputs": ["nowhere"], "parallelism": 0 },
    { "id": "bad", "op": "frobnicate" } ] }
"#;
    let lines = problems(text);
    assert_eq!(
        lines,
        vec![
            "unsupported job format version 3 (this Flint reads 'flint': 1)",
            "missing job 'name'",
            "operator 'lines': unknown parameter 'colour' (parameters of source.file: path, format, schema)",
            "operator 'words': unknown field 'lin' (input fields: line)",
            "operator 'counts': aggregate 's': cannot apply sum(word) to a field of type string",
            "operator 'odd': the predicate 'len(word)' has type integer, not boolean",
            "operator 'out': duplicate operator id (also used by operator #5)",
            "operator 'out': parallelism must be positive, got 0",
            "operator 'out': unknown input 'nowhere' (operators: lines, words, counts, odd, out, out, bad)",
            "operator 'bad': unknown operator type 'frobnicate' (known: source.sequence, source.datagen, source.file, \
             source.socket, source.kafka, map, filter, flat_map.split, union, key_by, aggregate, window, map.wasm, \
             flat_map.wasm, process.wasm, fail, sink.print, sink.file, sink.blackhole, sink.kafka)",
        ]
    );
}

#[test]
fn a_mistyped_field_is_reported_once_with_the_other_problems() {
    let text = job(&format!(
        r#"{SEQ}, {{"id": "m", "op": "map", "inputs": 5, "fields": {{"x": "n"}}}},
        {{"id": "p", "op": "sink.print", "inputs": ["m"]}}, {{"id": "q", "op": "sink.print", "inputs": ["seq"], "parallelism": 0}}"#
    ))
    .replace("\"name\": \"t\"", "\"name\": 5");
    assert_eq!(
        problems(&text),
        vec![
            "'name' must be a string, got integer 5",
            "operator 'm': 'inputs' must be a list of operator ids, got integer 5",
            "operator 'q': parallelism must be positive, got 0",
        ]
    );
    // parse_job alone reports only what it reads.
    assert_eq!(parse_job(&text).unwrap_err().problems.len(), 2);
}

#[test]
fn problems_display_one_per_line_and_serialize() {
    let err = load_job(&job(r#"{"id": "a", "op": "nope"}, {"op": "sink.print"}"#), 1).unwrap_err();
    let text = err.to_string();
    assert_eq!(text.lines().count(), err.problems.len());
    assert!(text.starts_with("operator 'a': unknown operator type 'nope'"), "{text}");
    let json = serde_json::to_value(&err).unwrap();
    assert_eq!(json["problems"][0]["operator"], "a");
    assert_eq!(json["problems"][1]["operator"], serde_json::Value::Null);
}

#[test]
fn split_needs_a_string_field() {
    assert_problem(
        &job(&format!(
            r#"{SEQ}, {{"id": "w", "op": "flat_map.split", "inputs": ["seq"], "field": "n"}}, {{"id": "p", "op": "sink.print", "inputs": ["w"]}}"#
        )),
        Some("w"),
        "field 'n' has type integer; flat_map.split needs a string field",
    );
}

/// Every complete job in docs/jobs.md validates, except the error example, which fails
/// exactly as the page shows.
#[test]
fn the_jobs_in_the_docs_validate_as_documented() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/jobs.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let blocks: Vec<&str> = doc.split("```").skip(1).step_by(2).collect();
    let mut checked = 0;
    for (i, block) in blocks.iter().enumerate() {
        let Some((lang, body)) = block.split_once('\n') else { continue };
        if !matches!(lang, "json" | "yaml") || !(body.contains("\"flint\"") || body.starts_with("flint:")) {
            continue;
        }
        checked += 1;
        match load_job(body, 1) {
            Ok(job) => assert!(!job.job_graph().vertices.is_empty()),
            Err(err) if body.contains("fromat") => assert_eq!(blocks[i + 1].trim_start().trim_end(), err.to_string()),
            Err(err) => panic!("a job in docs/jobs.md does not validate:\n{err}\n{body}"),
        }
    }
    assert_eq!(checked, 5, "the top-level example, the error example and 3 complete examples");
}

/// Every single-operator example in docs/jobs.md has valid parameters, and every type
/// has one.
#[test]
fn the_operator_examples_in_the_docs_have_valid_parameters() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/jobs.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let mut seen = Vec::new();
    for block in doc.split("```").skip(1).step_by(2) {
        let Some(body) = block.strip_prefix("json\n").filter(|b| b.starts_with("{ \"id\"")) else { continue };
        let decl = spec::parse_doc(body).unwrap();
        let entries = decl.as_map().unwrap();
        let op = entries.iter().find(|(k, _)| k == "op").and_then(|(_, v)| v.as_str()).unwrap();
        let params: Vec<(String, DocValue)> =
            entries.iter().filter(|(k, _)| !spec::OPERATOR_FIELDS.contains(&k.as_str())).cloned().collect();
        let mut problems = Vec::new();
        catalog::check_operator(catalog::operator_type(op).unwrap(), &params, None, &Default::default(), &mut problems);
        assert!(problems.is_empty(), "{op}: {problems:?}");
        seen.push(op.to_owned());
    }
    for t in catalog::OPERATOR_TYPES {
        assert!(seen.iter().any(|s| s == t.name), "docs/jobs.md has no example of {}", t.name);
    }
}

const SCALARS: &str = r#"
flint: 1
name: scored
functions:
  risk:
    module: lib/risk.wasm
    params: { threshold: 5, mode: strict }
    exports:
      score: { args: [float, string], returns: float }
      flag: { args: [integer], returns: boolean }
operators:
  - { id: src, op: source.sequence, to: 9 }
  - { id: m, op: map, inputs: [src], keep_input: true, fields: { s: 'wasm::risk::score(n, "a") * 2.0', f: "wasm::risk::flag(n)" } }
  - { id: f, op: filter, inputs: [m], predicate: "wasm::risk::flag(n) && f" }
  - { id: out, op: sink.print, inputs: [f] }
"#;

#[test]
fn scalar_functions_are_declared_typed_and_carried_by_expressions() {
    let g = graph(SCALARS);
    let ops: Vec<&OperatorSpec> = g.vertices.iter().flat_map(|v| &v.operators).collect();
    let m = ops.iter().find(|o| o.id == "m").unwrap();
    let schema = m.output_schema.as_ref().unwrap();
    assert_eq!(schema.field("s").map(|f| (f.ty, f.nullable)), Some((FieldType::Float, true)));
    assert_eq!(schema.field("f").map(|f| (f.ty, f.nullable)), Some((FieldType::Bool, true)));
    let functions = m.kind.wasm_functions();
    let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["wasm::risk::score", "wasm::risk::flag"]);
    assert_eq!(functions[0].args, [FieldType::Float, FieldType::String]);
    assert_eq!(functions[0].params, [("threshold".to_string(), "5".to_string()), ("mode".into(), "strict".into())]);
    // Both operators load the one module, each once; it travels with the expressions.
    assert_eq!(m.kind.module_paths(), ["lib/risk.wasm"]);
    let f = ops.iter().find(|o| o.id == "f").unwrap();
    assert_eq!(f.kind.artifact_paths(), ["lib/risk.wasm"]);
    let wire: OperatorSpec = rmp_serde::from_slice(&rmp_serde::to_vec(*m).unwrap()).unwrap();
    assert_eq!(&wire, *m);
}

#[test]
fn bad_scalar_function_declarations_and_calls_are_reported() {
    let bad = r#"
flint: 1
name: bad
functions:
  1x: { module: a.wasm, exports: { f: { args: [], returns: integer } } }
  ok:
    module: ../up.wasm
    exports:
      f: { args: [integer, colour], returns: integer }
      flint_g: { args: [], returns: integer }
      h: { args: [integer] }
      k: { args: [integer], returns: colour, extra: 1 }
    colour: red
  empty: { module: e.wasm, exports: {} }
  list: [1]
operators:
  - { id: src, op: source.sequence, to: 9 }
  - { id: m, op: map, inputs: [src], fields: { a: "wasm::nope::f(n)" } }
  - { id: out, op: sink.print, inputs: [m] }
"#;
    let found = problems(bad).join("\n");
    for expected in [
        "function module '1x': a module name is a letter or '_'",
        "function module 'ok': 'module' '../up.wasm' must be the relative path of a .wasm or .wat file",
        "function module 'ok': export 'f': 'args' must be a list of types (known: ",
        "function module 'ok': export 'flint_g': a letter or '_' followed by letters, digits or '_', not starting with 'flint_'",
        "function module 'ok': export 'h': missing required parameter 'returns'",
        "function module 'ok': export 'k': 'returns' must be a type",
        "function module 'ok': export 'k': unknown parameter 'extra'",
        "function module 'ok': unknown parameter 'colour'",
        "function module 'empty': parameter 'exports' must not be empty",
        "function module 'list' must be an object with 'module', 'exports' and optional 'params', got list",
        "unknown function 'wasm::nope::f': the job declares no WebAssembly functions",
    ] {
        assert!(found.contains(expected), "missing: {expected}\nin:\n{found}");
    }
    let call = |expr: &str| {
        let text = SCALARS.replace(r#"'wasm::risk::score(n, "a") * 2.0'"#, &format!("'{expr}'"));
        problems(&text).join("\n")
    };
    assert!(call("wasm::risk::score(n)").contains("function 'wasm::risk::score' takes 2 argument(s), got 1"));
    assert!(call(r#"wasm::risk::score("x", "a")"#)
        .contains("function 'wasm::risk::score' needs float as argument 1, got string"));
    assert!(call("wasm::risk::other(n)")
        .contains("unknown function 'wasm::risk::other' (declared: wasm::risk::flag, wasm::risk::score)"));
    assert!(problems(&SCALARS.replace("functions:", "functions: 3\nx:"))
        .join("\n")
        .contains("'functions' must be an object"));
}
