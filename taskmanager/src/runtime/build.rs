//! From an operator's specification to a running operator.
//!
//! [`build_source`] builds the head of a source task, [`build_operator`] every other
//! operator of a chain. Both take the subtask's [`OperatorContext`] (index and
//! parallelism decide which part of the input a source reads) and the execution attempt
//! number (0 for the first attempt; `fail` only fails in attempt 0). Batches hold
//! [`DEFAULT_BATCH_SIZE`] rows unless [`BuildOptions`] say otherwise.

use flint_common::job::{OperatorKind, OperatorSpec};

use super::aggregate::AggregateOperator;
use super::kafka_sink::KafkaSink;
use super::kafka_source::KafkaSource;
use super::operator::{Operator, OperatorContext, SourceOperator, TaskError};
use super::schema::required_schema;
use super::sinks::{BlackholeSink, FileSink, PrintSink};
use super::sources::{DatagenSource, FileSource, SequenceSource, SocketSource, DEFAULT_BATCH_SIZE};
use super::transforms::{FailOperator, FilterOperator, MapOperator, PassThrough, SplitOperator};
use super::wasm::WasmOperator;
use super::window::WindowOperator;

/// Settings that are not part of an operator's specification.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Rows per source batch (`pipeline.batch-size` would set it).
    pub batch_size: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self { batch_size: DEFAULT_BATCH_SIZE }
    }
}

/// The source at the head of a source task.
pub fn build_source(
    spec: &OperatorSpec,
    ctx: &OperatorContext,
    attempt: u32,
) -> Result<Box<dyn SourceOperator>, TaskError> {
    build_source_with(spec, ctx, attempt, &BuildOptions::default())
}

/// [`build_source`] with explicit options.
pub fn build_source_with(
    spec: &OperatorSpec,
    ctx: &OperatorContext,
    _attempt: u32,
    options: &BuildOptions,
) -> Result<Box<dyn SourceOperator>, TaskError> {
    let schema = || required_schema(spec.output_schema.as_ref(), &spec.id, "output");
    let (subtask, parallelism, batch) = (ctx.subtask, ctx.parallelism.max(1), options.batch_size);
    Ok(match &spec.kind {
        OperatorKind::Sequence { from, to, rate, rate_until_checkpoints } => Box::new(
            SequenceSource::new(schema()?, *from, *to, *rate, subtask, parallelism, batch)
                .with_rate_until_checkpoints(*rate_until_checkpoints),
        ),
        OperatorKind::Datagen { fields, seed, rows, rate, rate_until_checkpoints } => Box::new(
            DatagenSource::new(schema()?, fields, *seed, *rows, *rate, subtask, parallelism, batch)
                .with_rate_until_checkpoints(*rate_until_checkpoints),
        ),
        OperatorKind::FileSource { path, format, .. } => {
            Box::new(FileSource::new(schema()?, path, *format, subtask, parallelism, batch)?)
        }
        OperatorKind::Socket { host, port } => Box::new(SocketSource::new(schema()?, host, *port, batch)),
        OperatorKind::KafkaSource(kafka) => Box::new(KafkaSource::new(kafka, schema()?, ctx, batch)?),
        other => return Err(TaskError::fatal(format!("operator '{}' ({}) is not a source", spec.id, other.op_type()))),
    })
}

/// A transform or sink of a chain.
pub fn build_operator(
    spec: &OperatorSpec,
    ctx: &OperatorContext,
    attempt: u32,
) -> Result<Box<dyn Operator>, TaskError> {
    Ok(match &spec.kind {
        OperatorKind::Map { .. } => Box::new(MapOperator::with_wasm_limits(spec, ctx.wasm_limits)?),
        OperatorKind::Filter { .. } => Box::new(FilterOperator::with_wasm_limits(spec, ctx.wasm_limits)?),
        OperatorKind::Split { .. } => Box::new(SplitOperator::new(spec)?),
        OperatorKind::Union | OperatorKind::KeyBy { .. } => Box::new(PassThrough::new(spec)?),
        OperatorKind::Aggregate { .. } => Box::new(AggregateOperator::new(spec, ctx)?),
        OperatorKind::Window { .. } => Box::new(WindowOperator::new(spec, ctx)?),
        OperatorKind::WasmMap { .. } | OperatorKind::WasmFlatMap { .. } | OperatorKind::WasmProcess { .. } => {
            Box::new(WasmOperator::new(spec, ctx)?)
        }
        OperatorKind::Fail { .. } => Box::new(FailOperator::new(spec, ctx, attempt)?),
        OperatorKind::PrintSink => Box::new(PrintSink::new(ctx.subtask, ctx.parallelism)),
        OperatorKind::FileSink { path, format } => Box::new(FileSink::new(path, *format, ctx.subtask)),
        OperatorKind::BlackholeSink { rate } => Box::new(BlackholeSink::with_rate(*rate)),
        OperatorKind::KafkaSink(kafka) => {
            let input = required_schema(spec.input_schema.as_ref(), &spec.id, "input")?;
            Box::new(KafkaSink::new(kafka, input, ctx)?)
        }
        OperatorKind::Sequence { .. }
        | OperatorKind::Datagen { .. }
        | OperatorKind::FileSource { .. }
        | OperatorKind::Socket { .. }
        | OperatorKind::KafkaSource(_) => {
            return Err(TaskError::fatal(format!(
                "operator '{}' ({}) is a source; build it with build_source",
                spec.id,
                spec.kind.op_type()
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use super::*;
    use crate::runtime::sinks::BlackholeSink;
    use crate::runtime::transforms::tests::{ctx, VecCollector};
    use crate::runtime::transforms::OperatorChain;
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use arrow::record_batch::RecordBatch;
    use flint_common::job::{load_job, ValidatedJob};

    fn operators(job: &ValidatedJob) -> Vec<OperatorSpec> {
        job.job_graph().vertices.iter().flat_map(|v| v.operators.clone()).collect()
    }

    fn drain(source: &mut dyn SourceOperator, chain: &mut OperatorChain, out: &mut VecCollector) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            while let Some(batch) = source.next_batch().await.unwrap() {
                chain.process_batch(0, 0, batch, out).unwrap();
            }
        });
        chain.finish(out).unwrap();
    }

    #[test]
    fn builds_every_kind() {
        let dir = std::env::temp_dir().join(format!("flint-build-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("in.txt"), "a b\nc\n").unwrap();
        let job = load_job(
            &format!(
                r#"{{"flint": 1, "name": "all", "operators": [
                {{"id": "seq", "op": "source.sequence", "from": 1, "to": 10}},
                {{"id": "gen", "op": "source.datagen", "rows": 5, "fields": {{"n": {{"kind": "sequence", "start": 0, "end": 9}}}}}},
                {{"id": "file", "op": "source.file", "path": "{}"}},
                {{"id": "sock", "op": "source.socket", "host": "localhost", "port": 9}},
                {{"id": "m", "op": "map", "inputs": ["seq"], "fields": {{"n": "n * 2"}}}},
                {{"id": "f", "op": "filter", "inputs": ["m"], "predicate": "n > 4"}},
                {{"id": "u", "op": "union", "inputs": ["f", "gen"]}},
                {{"id": "k", "op": "key_by", "inputs": ["u"], "key": "n"}},
                {{"id": "agg", "op": "aggregate", "inputs": ["k"], "key": "n", "aggs": {{"c": "count()"}}}},
                {{"id": "win", "op": "window", "inputs": ["u"], "key": "n", "size": "1 s", "aggs": {{"c": "count()"}}}},
                {{"id": "boom", "op": "fail", "inputs": ["agg"], "after": 100}},
                {{"id": "words", "op": "flat_map.split", "inputs": ["file"], "field": "line"}},
                {{"id": "p", "op": "sink.print", "inputs": ["boom"]}},
                {{"id": "out", "op": "sink.file", "inputs": ["words"], "path": "{}"}},
                {{"id": "w", "op": "sink.blackhole", "inputs": ["win"]}},
                {{"id": "s2", "op": "sink.blackhole", "inputs": ["sock"]}} ]}}"#,
                dir.join("in.txt").display(),
                dir.join("out").display()
            ),
            1,
        )
        .unwrap();
        let c = ctx(0, 1);
        for spec in operators(&job) {
            match spec.kind.role() {
                flint_common::job::catalog::Role::Source => {
                    assert!(build_source(&spec, &c, 0).is_ok(), "{}", spec.id);
                    assert!(build_operator(&spec, &c, 0).is_err(), "{}", spec.id);
                }
                _ => {
                    if let Err(e) = build_operator(&spec, &c, 0) {
                        panic!("{}: {}", spec.id, e.message);
                    }
                    assert!(build_source(&spec, &c, 0).is_err(), "{}", spec.id);
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_built_chain_runs() {
        let job = load_job(
            r#"{"flint": 1, "name": "squares", "parallelism": 1, "operators": [
                {"id": "numbers", "op": "source.sequence", "from": 1, "to": 10},
                {"id": "squares", "op": "map", "inputs": ["numbers"], "fields": {"n": "n", "square": "n * n"}},
                {"id": "odd", "op": "filter", "inputs": ["squares"], "predicate": "square % 2 == 1"} ]}"#,
            1,
        )
        .unwrap();
        let specs = operators(&job);
        let c = ctx(0, 1);
        let mut source = build_source(&specs[0], &c, 0).unwrap();
        let mut chain = OperatorChain::new(specs[1..].iter().map(|s| build_operator(s, &c, 0).unwrap()).collect());
        let mut out = VecCollector::default();
        drain(source.as_mut(), &mut chain, &mut out);
        assert_eq!(out.ints("square"), vec![1, 9, 25, 49, 81]);
    }

    /// B1 of BENCHMARKS.md in process, one subtask: sequence 0..20M → map (n·2, 16-char
    /// zero-padded n) → filter (n % 3 ≠ 0) → blackhole. Prints records/s.
    #[test]
    #[ignore = "benchmark: cargo test --release -p flint-taskmanager -- --ignored b1_chain --nocapture"]
    fn b1_chain_throughput() {
        const N: i64 = 20_000_000;
        // Zero padding with the builtins there are: n + 10^16 has 17 digits, drop the first.
        let b1 = |n: i64| {
            load_job(
                &format!(
                    r#"{{"flint": 1, "name": "b1", "parallelism": 1, "operators": [
                {{"id": "src", "op": "source.sequence", "from": 0, "to": {}}},
                {{"id": "map", "op": "map", "inputs": ["src"],
                  "fields": {{"n": "n * 2", "s": "str::substring(str::from(n + 10000000000000000), 1)"}}}},
                {{"id": "filter", "op": "filter", "inputs": ["map"], "predicate": "n % 3 != 0"}} ]}}"#,
                    n - 1
                ),
                1,
            )
            .unwrap()
        };
        let specs = operators(&b1(N));
        let c = ctx(0, 1);
        let mut best = f64::MAX;
        for run in 1..=3 {
            let sink = BlackholeSink::new();
            let count = sink.counter();
            let mut operators: Vec<Box<dyn Operator>> =
                specs[1..].iter().map(|s| build_operator(s, &c, 0).unwrap()).collect();
            operators.push(Box::new(sink));
            let mut chain = OperatorChain::new(operators);
            let mut source = build_source(&specs[0], &c, 0).unwrap();
            let mut out = VecCollector::default();
            let start = Instant::now();
            drain(source.as_mut(), &mut chain, &mut out);
            let secs = start.elapsed().as_secs_f64();
            best = best.min(secs);
            let kept = count.load(Ordering::Relaxed);
            println!("B1 chain run {run}: {N} records in {secs:.3} s = {:.2} M records/s", N as f64 / secs / 1e6);
            // 2n is divisible by 3 exactly when n is.
            assert_eq!(kept, (N - (N + 2) / 3) as u64);
        }
        println!("B1 chain best: {:.2} M records/s on one thread", N as f64 / best / 1e6);

        // A shorter run with a checking stage instead of the blackhole (not timed): Σn and
        // every padded string.
        const CHECKED: i64 = 1_000_000;
        let specs = operators(&b1(CHECKED));
        struct Check(i64);
        impl Operator for Check {
            fn process_batch(
                &mut self,
                _: usize,
                _: usize,
                batch: RecordBatch,
                _: &mut dyn crate::runtime::operator::Collector,
            ) -> Result<(), TaskError> {
                let doubled = batch.column(0).as_primitive::<Int64Type>();
                let padded = batch.column(1).as_string::<i32>();
                for (n, s) in doubled.values().iter().zip(padded.iter()) {
                    assert_eq!(s, Some(format!("{:016}", n / 2).as_str()));
                    self.0 += n;
                }
                Ok(())
            }
        }
        let mut chain = OperatorChain::new(specs[1..].iter().map(|s| build_operator(s, &c, 0).unwrap()).collect());
        let mut source = build_source(&specs[0], &c, 0).unwrap();
        let mut check = Check(0);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        while let Some(batch) = rt.block_on(source.next_batch()).unwrap() {
            let mut out = VecCollector::default();
            chain.process_batch(0, 0, batch, &mut out).unwrap();
            for b in out.batches {
                check.process_batch(0, 0, b, &mut VecCollector::default()).unwrap();
            }
        }
        let expected: i64 = (0..CHECKED).filter(|n| n % 3 != 0).map(|n| 2 * n).sum();
        assert_eq!(check.0, expected);
    }
}
