//! The stateless transforms and the chaining glue.
//!
//! - [`MapOperator`] (`map`): evaluates its [`VectorExpr`]s once per batch; the output
//!   columns are the results, or with `keep_input` the input columns (shared, not copied)
//!   with the results replacing or following them.
//! - [`FilterOperator`] (`filter`): one predicate evaluation per batch, then one
//!   `filter_record_batch`; a batch where every row passes is forwarded as is, one where
//!   none passes is dropped.
//! - Both take an optional `counter`: a [`RecordCounter`] counts the records the operator
//!   receives, keeps the count in checkpointed operator state and reports it as an
//!   accumulator of that name.
//! - [`SplitOperator`] (`flat_map.split`): splits a string column into one output string
//!   column built in one pass (the builder is sized from the input's bytes).
//! - [`PassThrough`] (`union`, `key_by`): forwards batches; the exchange in front does the
//!   work (`union` relabels batches with its output schema, whose fields may be nullable
//!   where an input's are not).
//! - [`FailOperator`] (`fail`): fails one subtask once, in attempt 0 only.
//! - [`OperatorChain`]: runs operators back to back with plain calls: operator k's
//!   collector is a [`ChainedCollector`] that calls operator k+1's `process_batch`.
//!
//! None of them allocates per record: every per-row loop is over columns.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use flint_common::job::{OperatorKind, OperatorSpec};

use super::expr::{Utf8Out, VectorExpr};
use super::operator::{Collector, Operator, OperatorContext, TaskError};
use super::schema::required_schema;
use super::wasm::ScalarGuests;
use crate::state::{Redistribution, StateStore};

fn wrong_kind(spec: &OperatorSpec, expected: &str) -> TaskError {
    TaskError::fatal(format!("operator '{}' is a {}, not a {expected}", spec.id, spec.kind.op_type()))
}

/// The list state of a [`RecordCounter`]: one little-endian `u64` per subtask that
/// snapshotted, split on restore, so a subtask restored at another parallelism sums the
/// counts of the old subtasks it was given.
const COUNTER_STATE: &str = "record-count";

/// The `counter` of `map` and `filter`: the number of records the operator received, over
/// all restarts that resumed from a checkpoint (the count is part of the checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCounter {
    name: String,
    count: u64,
}

impl RecordCounter {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), count: 0 }
    }

    /// The accumulator name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records counted so far (including those of the restored state).
    pub fn count(&self) -> u64 {
        self.count
    }

    #[inline]
    fn add(&mut self, records: usize) {
        self.count += records as u64;
    }

    fn snapshot(&self, state: &mut StateStore) -> Result<(), TaskError> {
        let list = state.operator.list_state(COUNTER_STATE, Redistribution::Split).map_err(state_error)?;
        list.clear();
        list.push(self.count.to_le_bytes().to_vec());
        Ok(())
    }

    fn restore(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        let mut total = 0u64;
        for element in state.operator.get(COUNTER_STATE).unwrap_or_default() {
            let bytes: [u8; 8] = element.as_slice().try_into().map_err(|_| {
                TaskError::fatal(format!("counter '{}': corrupt state element of {} bytes", self.name, element.len()))
            })?;
            total += u64::from_le_bytes(bytes);
        }
        self.count = total;
        Ok(())
    }
}

fn state_error(e: crate::state::StateError) -> TaskError {
    TaskError::fatal(e.to_string())
}

/// Where an output column of `map` comes from.
#[derive(Debug, Clone, Copy)]
enum MapColumn {
    Input(usize),
    Expr(usize),
}

/// `map`: computed fields, optionally after the input fields.
pub struct MapOperator {
    schema: SchemaRef,
    exprs: Vec<VectorExpr>,
    columns: Vec<MapColumn>,
    counter: Option<RecordCounter>,
    /// The instances of the WebAssembly functions its expressions call.
    guests: ScalarGuests,
}

impl MapOperator {
    /// A `map` whose WebAssembly functions (if any) run under the default limits.
    pub fn new(spec: &OperatorSpec) -> Result<Self, TaskError> {
        Self::with_wasm_limits(spec, flint_wasm::Limits::default())
    }

    /// A `map` whose WebAssembly functions run under `limits` (the job's `wasm.*`).
    pub fn with_wasm_limits(spec: &OperatorSpec, limits: flint_wasm::Limits) -> Result<Self, TaskError> {
        let OperatorKind::Map { fields, keep_input, counter } = &spec.kind else {
            return Err(wrong_kind(spec, "map"));
        };
        let input = required_schema(spec.input_schema.as_ref(), &spec.id, "input")?;
        let schema = required_schema(spec.output_schema.as_ref(), &spec.id, "output")?;
        let mut guests = ScalarGuests::new(limits);
        let exprs = fields
            .iter()
            .map(|f| VectorExpr::compile_with(&f.expr, &input, Some(&mut guests)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for out in schema.fields() {
            let column = match fields.iter().position(|f| &f.name == out.name()) {
                Some(k) => MapColumn::Expr(k),
                None if *keep_input => MapColumn::Input(input.index_of(out.name()).map_err(|_| {
                    TaskError::fatal(format!(
                        "operator '{}': output field '{}' is not an input field",
                        spec.id,
                        out.name()
                    ))
                })?),
                None => {
                    return Err(TaskError::fatal(format!(
                        "operator '{}': output field '{}' has no expression",
                        spec.id,
                        out.name()
                    )))
                }
            };
            if let MapColumn::Expr(k) = column {
                if &exprs[k].data_type() != out.data_type() {
                    return Err(TaskError::fatal(format!(
                        "operator '{}': field '{}' is {} but its expression gives {}",
                        spec.id,
                        out.name(),
                        out.data_type(),
                        exprs[k].data_type()
                    )));
                }
            }
            columns.push(column);
        }
        Ok(Self { schema, exprs, columns, counter: counter.as_deref().map(RecordCounter::new), guests })
    }

    /// The `counter`, if the operator has one.
    pub fn counter(&self) -> Option<&RecordCounter> {
        self.counter.as_ref()
    }
}

impl Operator for MapOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        _channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        if let Some(counter) = &mut self.counter {
            counter.add(batch.num_rows());
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let results: Vec<ArrayRef> = self.exprs.iter().map(|e| e.eval(&batch)).collect::<Result<_, _>>()?;
        let columns = self
            .columns
            .iter()
            .map(|c| match c {
                MapColumn::Input(i) => Arc::clone(batch.column(*i)),
                MapColumn::Expr(k) => Arc::clone(&results[*k]),
            })
            .collect();
        out.collect(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    fn snapshot_state(&mut self, _checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        self.counter.as_ref().map_or(Ok(()), |c| c.snapshot(state))
    }

    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        self.counter.as_mut().map_or(Ok(()), |c| c.restore(state))
    }

    fn finish(&mut self, _out: &mut dyn Collector) -> Result<(), TaskError> {
        self.guests.close()
    }

    fn accumulators(&self, out: &mut Vec<(String, u64)>) {
        if let Some(c) = &self.counter {
            out.push((c.name.clone(), c.count));
        }
        self.guests.accumulators(out);
    }
}

/// `filter`: keeps the rows whose predicate is true.
pub struct FilterOperator {
    predicate: VectorExpr,
    counter: Option<RecordCounter>,
    /// The instances of the WebAssembly functions its predicate calls.
    guests: ScalarGuests,
}

impl FilterOperator {
    /// A `filter` whose WebAssembly functions (if any) run under the default limits.
    pub fn new(spec: &OperatorSpec) -> Result<Self, TaskError> {
        Self::with_wasm_limits(spec, flint_wasm::Limits::default())
    }

    /// A `filter` whose WebAssembly functions run under `limits` (the job's `wasm.*`).
    pub fn with_wasm_limits(spec: &OperatorSpec, limits: flint_wasm::Limits) -> Result<Self, TaskError> {
        let OperatorKind::Filter { predicate, counter } = &spec.kind else {
            return Err(wrong_kind(spec, "filter"));
        };
        let input = required_schema(spec.input_schema.as_ref(), &spec.id, "input")?;
        let mut guests = ScalarGuests::new(limits);
        Ok(Self {
            predicate: VectorExpr::compile_with(predicate, &input, Some(&mut guests))?,
            counter: counter.as_deref().map(RecordCounter::new),
            guests,
        })
    }

    /// The `counter`, if the operator has one.
    pub fn counter(&self) -> Option<&RecordCounter> {
        self.counter.as_ref()
    }
}

impl Operator for FilterOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        _channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        let rows = batch.num_rows();
        if let Some(counter) = &mut self.counter {
            counter.add(rows);
        }
        if rows == 0 {
            return Ok(());
        }
        match self.predicate.eval_mask(&batch)? {
            Ok(mask) => match mask.true_count() {
                0 => Ok(()),
                n if n == rows => out.collect(batch),
                _ => out.collect(filter_record_batch(&batch, &mask)?),
            },
            Err(Some(true)) => out.collect(batch),
            Err(_) => Ok(()),
        }
    }

    fn snapshot_state(&mut self, _checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        self.counter.as_ref().map_or(Ok(()), |c| c.snapshot(state))
    }

    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        self.counter.as_mut().map_or(Ok(()), |c| c.restore(state))
    }

    fn finish(&mut self, _out: &mut dyn Collector) -> Result<(), TaskError> {
        self.guests.close()
    }

    fn accumulators(&self, out: &mut Vec<(String, u64)>) {
        if let Some(c) = &self.counter {
            out.push((c.name.clone(), c.count));
        }
        self.guests.accumulators(out);
    }
}

/// `flat_map.split`: one output record per non-empty piece of a string field.
pub struct SplitOperator {
    schema: SchemaRef,
    column: usize,
    separator: String,
}

impl SplitOperator {
    pub fn new(spec: &OperatorSpec) -> Result<Self, TaskError> {
        let OperatorKind::Split { field, separator, .. } = &spec.kind else {
            return Err(wrong_kind(spec, "flat_map.split"));
        };
        if separator.is_empty() {
            return Err(TaskError::fatal(format!("operator '{}': the separator is empty", spec.id)));
        }
        let input = required_schema(spec.input_schema.as_ref(), &spec.id, "input")?;
        let column = input
            .index_of(field)
            .map_err(|_| TaskError::fatal(format!("operator '{}': no input field '{field}'", spec.id)))?;
        Ok(Self {
            schema: required_schema(spec.output_schema.as_ref(), &spec.id, "output")?,
            column,
            separator: separator.clone(),
        })
    }

    /// The pieces of every row of `strings`, in order, as one string column.
    fn split(&self, strings: &arrow::array::StringArray) -> Result<ArrayRef, TaskError> {
        let data = strings.value_data();
        // Pieces take at most the input's bytes; guess one piece per 6 bytes.
        let mut out = Utf8Out::new(data.len() / 6 + strings.len(), data.len());
        let mut emit = |piece: &str| {
            if !piece.is_empty() {
                // Where the piece lies in the value buffer (it is a part of it).
                let start = piece.as_ptr() as usize - data.as_ptr() as usize;
                out.write(data, start, piece.len());
                out.end_value();
            }
        };
        match self.separator.chars().collect::<Vec<_>>()[..] {
            [c] => strings.iter().flatten().for_each(|value| value.split(c).for_each(&mut emit)),
            _ => strings.iter().flatten().for_each(|value| value.split(self.separator.as_str()).for_each(&mut emit)),
        }
        Ok(Arc::new(out.finish()?))
    }
}

impl Operator for SplitOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        _channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        let words = self.split(batch.column(self.column).as_string::<i32>())?;
        if words.is_empty() {
            return Ok(());
        }
        out.collect(RecordBatch::try_new(Arc::clone(&self.schema), vec![words])?)
    }
}

/// `union` and `key_by`: batches pass unchanged (relabelled with the output schema when
/// it differs only in nullability, as for a `union`).
pub struct PassThrough {
    schema: Option<SchemaRef>,
}

impl PassThrough {
    pub fn new(spec: &OperatorSpec) -> Result<Self, TaskError> {
        match &spec.kind {
            OperatorKind::Union => {
                Ok(Self { schema: Some(required_schema(spec.output_schema.as_ref(), &spec.id, "output")?) })
            }
            OperatorKind::KeyBy { .. } => Ok(Self { schema: None }),
            _ => Err(wrong_kind(spec, "union or key_by")),
        }
    }
}

impl Operator for PassThrough {
    fn process_batch(
        &mut self,
        _input: usize,
        _channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match &self.schema {
            Some(schema) if batch.schema_ref() != schema => {
                let columns = batch.columns().to_vec();
                out.collect(RecordBatch::try_new(Arc::clone(schema), columns)?)
            }
            _ => out.collect(batch),
        }
    }
}

/// `fail`: subtask `subtask` passes `after` records, then fails the task. Only in the
/// first attempt (attempt number 0), so a restarted job gets through.
pub struct FailOperator {
    id: String,
    armed: bool,
    after: u64,
    passed: u64,
}

impl FailOperator {
    /// `attempt` is the execution attempt number of this subtask (0 for the first).
    pub fn new(spec: &OperatorSpec, ctx: &OperatorContext, attempt: u32) -> Result<Self, TaskError> {
        let OperatorKind::Fail { subtask, after } = &spec.kind else { return Err(wrong_kind(spec, "fail")) };
        Ok(Self { id: spec.id.clone(), armed: attempt == 0 && ctx.subtask == *subtask, after: *after, passed: 0 })
    }

    /// Records passed so far.
    pub fn passed(&self) -> u64 {
        self.passed
    }
}

impl Operator for FailOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        _channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        let rows = batch.num_rows() as u64;
        if !self.armed {
            self.passed += rows;
            return out.collect(batch);
        }
        let left = self.after - self.passed;
        if rows < left {
            self.passed += rows;
            return out.collect(batch);
        }
        if left > 0 {
            self.passed += left;
            out.collect(batch.slice(0, left as usize))?;
        }
        self.armed = false;
        Err(TaskError::new(format!(
            "operator '{}' failed on purpose after {} records (a fail operator; it does not fail again after a restart)",
            self.id, self.passed
        )))
    }
}

/// The collector of one chained operator: what it emits goes straight into the next
/// operators of the chain, and after the last one into the task's output.
pub struct ChainedCollector<'a> {
    rest: &'a mut [Box<dyn Operator>],
    output: &'a mut dyn Collector,
}

impl<'a> ChainedCollector<'a> {
    /// Feeds `rest` in order, then `output`.
    pub fn new(rest: &'a mut [Box<dyn Operator>], output: &'a mut dyn Collector) -> Self {
        Self { rest, output }
    }
}

impl Collector for ChainedCollector<'_> {
    fn collect(&mut self, batch: RecordBatch) -> Result<(), TaskError> {
        match self.rest.split_first_mut() {
            Some((next, rest)) => next.process_batch(0, 0, batch, &mut ChainedCollector { rest, output: self.output }),
            None => self.output.collect(batch),
        }
    }

    fn emit_watermark(&mut self, watermark: i64) -> Result<(), TaskError> {
        match self.rest.split_first_mut() {
            Some((next, rest)) => {
                next.process_watermark(0, 0, watermark, &mut ChainedCollector { rest, output: self.output })
            }
            None => self.output.emit_watermark(watermark),
        }
    }
}

/// Operators run back to back as one [`Operator`]: the input goes to the first, each
/// one's output to the next, the last one's to the collector given to the chain.
pub struct OperatorChain {
    operators: Vec<Box<dyn Operator>>,
}

impl OperatorChain {
    pub fn new(operators: Vec<Box<dyn Operator>>) -> Self {
        Self { operators }
    }

    pub fn len(&self) -> usize {
        self.operators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operators.is_empty()
    }

    /// The operators, in chain order (checkpoints address each one).
    pub fn operators_mut(&mut self) -> &mut [Box<dyn Operator>] {
        &mut self.operators
    }
}

impl Operator for OperatorChain {
    fn process_batch(
        &mut self,
        input: usize,
        channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        match self.operators.split_first_mut() {
            Some((head, rest)) => head.process_batch(input, channel, batch, &mut ChainedCollector::new(rest, out)),
            None => out.collect(batch),
        }
    }

    fn process_watermark(
        &mut self,
        input: usize,
        channel: usize,
        watermark: i64,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        match self.operators.split_first_mut() {
            Some((head, rest)) => {
                head.process_watermark(input, channel, watermark, &mut ChainedCollector::new(rest, out))
            }
            None => out.emit_watermark(watermark),
        }
    }

    /// Every operator gets the time, in chain order.
    fn on_processing_time(&mut self, now_ms: i64, out: &mut dyn Collector) -> Result<(), TaskError> {
        for i in 0..self.operators.len() {
            let (current, rest) = self.operators[i..].split_first_mut().expect("i is in range");
            current.on_processing_time(now_ms, &mut ChainedCollector::new(rest, out))?;
        }
        Ok(())
    }

    /// Finishes the operators in chain order, so what one emits while finishing still
    /// passes through the ones after it before they finish.
    fn finish(&mut self, out: &mut dyn Collector) -> Result<(), TaskError> {
        for i in 0..self.operators.len() {
            let (current, rest) = self.operators[i..].split_first_mut().expect("i is in range");
            current.finish(&mut ChainedCollector::new(rest, out))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::schema::arrow_schema;
    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use flint_common::job::{load_job, ValidatedJob};

    /// Collects what it is given.
    #[derive(Default)]
    pub(crate) struct VecCollector {
        pub batches: Vec<RecordBatch>,
        pub watermarks: Vec<i64>,
    }

    impl Collector for VecCollector {
        fn collect(&mut self, batch: RecordBatch) -> Result<(), TaskError> {
            self.batches.push(batch);
            Ok(())
        }

        fn emit_watermark(&mut self, watermark: i64) -> Result<(), TaskError> {
            self.watermarks.push(watermark);
            Ok(())
        }
    }

    impl VecCollector {
        pub fn rows(&self) -> usize {
            self.batches.iter().map(RecordBatch::num_rows).sum()
        }

        pub fn ints(&self, column: &str) -> Vec<i64> {
            self.batches
                .iter()
                .flat_map(|b| {
                    b.column_by_name(column).unwrap().as_primitive::<arrow::datatypes::Int64Type>().values().to_vec()
                })
                .collect()
        }

        pub fn strings(&self, column: &str) -> Vec<String> {
            self.batches
                .iter()
                .flat_map(|b| {
                    b.column_by_name(column)
                        .unwrap()
                        .as_string::<i32>()
                        .iter()
                        .map(|s| s.unwrap_or("<null>").to_owned())
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    }

    pub(crate) fn ctx(subtask: u32, parallelism: u32) -> OperatorContext {
        OperatorContext {
            job_name: "test".into(),
            operator_id: "op".into(),
            subtask,
            parallelism,
            max_parallelism: 128,
            input_channels: vec![1],
            wasm_limits: flint_wasm::Limits::default(),
        }
    }

    /// The validated operators of a job whose first operator is a four-field source.
    pub(crate) fn job(operators: &str) -> ValidatedJob {
        let text = format!(
            r#"{{"flint": 1, "name": "t", "parallelism": 1, "operators": [
                {{"id": "src", "op": "source.file", "path": "/x", "format": "json",
                  "schema": {{"n": "integer", "x": "float", "s": "string", "b": "boolean"}}}},
                {operators} ]}}"#
        );
        load_job(&text, 1).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn spec(job: &ValidatedJob, id: &str) -> OperatorSpec {
        job.job_graph()
            .vertices
            .iter()
            .flat_map(|v| v.operators.iter())
            .find(|o| o.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no operator {id}"))
    }

    /// Takes `old` (the stores one operator's subtasks snapshotted into, in subtask order)
    /// through a real checkpoint directory (task state files and `_metadata`), and restores
    /// that operator's state for every subtask of `parallelism`.
    pub(crate) fn checkpoint_and_restore(operator_id: &str, old: &[StateStore], parallelism: u32) -> Vec<StateStore> {
        use crate::state::{encode_task_state, restore_stores, OperatorStateSnapshot};
        use flint_common::checkpoint_storage::{
            write_metadata_in, write_state_file_in, CheckpointMetadata, OperatorStateEntry,
        };
        let dir = std::env::temp_dir().join(format!("flint-chk-{operator_id}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut meta = CheckpointMetadata::new(flint_common::ids::JobId::generate(), 1, 0, false);
        for store in old {
            let (keyed, operator) = store.snapshot();
            let bytes =
                encode_task_state(&[OperatorStateSnapshot { operator_id: operator_id.to_owned(), keyed, operator }]);
            let handle = write_state_file_in(&dir, &format!("{operator_id}-{}", store.subtask()), &bytes).unwrap();
            meta.operators.push(OperatorStateEntry {
                operator_id: operator_id.to_owned(),
                subtask: store.subtask(),
                parallelism: store.parallelism(),
                max_parallelism: 128,
                handles: vec![handle],
                key_group_range: None,
            });
        }
        write_metadata_in(&dir, &meta).unwrap();
        let restored = (0..parallelism)
            .map(|s| restore_stores(&dir, &[operator_id.to_owned()], s, parallelism, 128).unwrap().remove(0))
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        restored
    }

    fn accumulators(op: &dyn Operator) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        op.accumulators(&mut out);
        out
    }

    fn input(job: &ValidatedJob) -> RecordBatch {
        let schema = arrow_schema(spec(job, "src").output_schema.as_ref().unwrap());
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(3), None])),
                Arc::new(Float64Array::from(vec![Some(0.5), Some(1.5), Some(2.5), Some(3.5)])),
                Arc::new(StringArray::from(vec![Some("a b"), Some("  c  d "), Some(""), Some("e")])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), Some(true), Some(true)])),
            ],
        )
        .unwrap()
    }

    fn run(op: &mut dyn Operator, batch: RecordBatch) -> Result<VecCollector, TaskError> {
        let mut out = VecCollector::default();
        op.process_batch(0, 0, batch, &mut out)?;
        op.finish(&mut out)?;
        Ok(out)
    }

    #[test]
    fn map_computes_fields() {
        let job =
            job(r#"{"id": "m", "op": "map", "inputs": ["src"], "fields": {"double": "n * 2", "k": "\"k\" + s"}}"#);
        let mut op = MapOperator::new(&spec(&job, "m")).unwrap();
        let out = run(&mut op, input(&job)).unwrap();
        let b = &out.batches[0];
        assert_eq!(b.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), vec!["double", "k"]);
        let doubles = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(doubles.iter().collect::<Vec<_>>(), vec![Some(2), Some(4), Some(6), None]);
        assert_eq!(out.strings("k"), vec!["ka b", "k  c  d ", "k", "ke"]);
    }

    #[test]
    fn map_keep_input_replaces_in_place_and_appends() {
        let job = job(
            r#"{"id": "m", "op": "map", "inputs": ["src"], "keep_input": true, "fields": {"x": "x * 2.0", "len": "len(s)"}}"#,
        );
        let mut op = MapOperator::new(&spec(&job, "m")).unwrap();
        let out = run(&mut op, input(&job)).unwrap();
        let b = &out.batches[0];
        let names: Vec<&str> = b.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["n", "x", "s", "b", "len"]);
        assert_eq!(
            b.column(1).as_primitive::<arrow::datatypes::Float64Type>().values().to_vec(),
            vec![1.0, 3.0, 5.0, 7.0]
        );
        assert_eq!(out.ints("len"), vec![3, 7, 0, 1]);
        // Input columns are shared, not copied.
        assert!(
            Arc::ptr_eq(b.column(0), input(&job).column(0)) || b.column(0).to_data() == input(&job).column(0).to_data()
        );
    }

    #[test]
    fn counters_survive_snapshot_and_restore() {
        let job = job(r#"{"id": "m", "op": "map", "inputs": ["src"], "fields": {"n": "n"}, "counter": "mapped"},
               {"id": "f", "op": "filter", "inputs": ["m"], "predicate": "n > 1", "counter": "seen"},
               {"id": "plain", "op": "filter", "inputs": ["src"], "predicate": "n > 1"}"#);
        let batch = input(&job);
        let mut map = MapOperator::new(&spec(&job, "m")).unwrap();
        let mut filter = FilterOperator::new(&spec(&job, "f")).unwrap();
        let mut out = VecCollector::default();
        for _ in 0..3 {
            map.process_batch(0, 0, batch.clone(), &mut out).unwrap();
            filter.process_batch(0, 0, batch.clone(), &mut out).unwrap();
        }
        // Empty batches count nothing; the filter counts what it receives, not what passes.
        filter.process_batch(0, 0, batch.slice(0, 0), &mut out).unwrap();
        assert_eq!(accumulators(&map), vec![("mapped".to_string(), 12)]);
        assert_eq!(accumulators(&filter), vec![("seen".to_string(), 12)]);
        let (mut map_state, mut filter_state) = (StateStore::new(0, 1, 128), StateStore::new(0, 1, 128));
        map.snapshot_state(1, &mut map_state).unwrap();
        filter.snapshot_state(1, &mut filter_state).unwrap();
        // After the snapshot: lost with the failed instance.
        map.process_batch(0, 0, batch.clone(), &mut out).unwrap();

        let mut map_state = checkpoint_and_restore("m", &[map_state], 1).remove(0);
        let mut filter_state = checkpoint_and_restore("f", &[filter_state], 1).remove(0);
        let mut map = MapOperator::new(&spec(&job, "m")).unwrap();
        let mut filter = FilterOperator::new(&spec(&job, "f")).unwrap();
        map.restore_state(&mut map_state).unwrap();
        filter.restore_state(&mut filter_state).unwrap();
        assert_eq!(map.counter().unwrap().count(), 12);
        map.process_batch(0, 0, batch.clone(), &mut out).unwrap();
        filter.process_batch(0, 0, batch.slice(0, 2), &mut out).unwrap();
        assert_eq!(accumulators(&map), vec![("mapped".to_string(), 16)]);
        assert_eq!(accumulators(&filter), vec![("seen".to_string(), 14)]);

        // Without a counter: no accumulator and no state.
        let mut plain = FilterOperator::new(&spec(&job, "plain")).unwrap();
        plain.process_batch(0, 0, batch, &mut out).unwrap();
        assert!(plain.counter().is_none() && accumulators(&plain).is_empty());
        let mut state = StateStore::new(0, 1, 128);
        plain.snapshot_state(1, &mut state).unwrap();
        assert_eq!(state.operator.state_names().count(), 0);
        plain.restore_state(&mut StateStore::new(0, 1, 128)).unwrap();
        // A restore without state for the counter starts from zero.
        let mut fresh = MapOperator::new(&spec(&job, "m")).unwrap();
        fresh.restore_state(&mut StateStore::new(0, 1, 128)).unwrap();
        assert_eq!(fresh.counter().unwrap().count(), 0);
    }

    #[test]
    fn counters_sum_when_rescaled() {
        let job = job(r#"{"id": "f", "op": "filter", "inputs": ["src"], "predicate": "n > 1", "counter": "seen"}"#);
        let batch = input(&job);
        // Two subtasks counted 4 and 8 records.
        let old: Vec<StateStore> = (0..2u32)
            .map(|subtask| {
                let mut op = FilterOperator::new(&spec(&job, "f")).unwrap();
                for _ in 0..=subtask {
                    op.process_batch(0, 0, batch.clone(), &mut VecCollector::default()).unwrap();
                }
                let mut state = StateStore::new(subtask, 2, 128);
                op.snapshot_state(7, &mut state).unwrap();
                state
            })
            .collect();
        // 2 → 1: the one subtask gets both counts.
        let mut restored = checkpoint_and_restore("f", &old, 1);
        let mut op = FilterOperator::new(&spec(&job, "f")).unwrap();
        op.restore_state(&mut restored[0]).unwrap();
        assert_eq!(accumulators(&op), vec![("seen".to_string(), 12)]);
        // A snapshot after the rescale keeps the sum in one element.
        let mut state = StateStore::new(0, 1, 128);
        op.snapshot_state(8, &mut state).unwrap();
        assert_eq!(state.operator.get(COUNTER_STATE).unwrap(), &[12u64.to_le_bytes().to_vec()]);
        // 2 → 3: the counts summed over the new subtasks are unchanged.
        let total: u64 = checkpoint_and_restore("f", &old, 3)
            .iter_mut()
            .map(|store| {
                let mut op = FilterOperator::new(&spec(&job, "f")).unwrap();
                op.restore_state(store).unwrap();
                op.counter().unwrap().count()
            })
            .sum();
        assert_eq!(total, 12);
        // A corrupt element is an error, not a wrong count.
        let mut bad = StateStore::new(0, 1, 128);
        bad.operator.list_state(COUNTER_STATE, Redistribution::Split).unwrap().push(vec![1, 2, 3]);
        assert!(FilterOperator::new(&spec(&job, "f")).unwrap().restore_state(&mut bad).is_err());
    }

    #[test]
    fn filter_keeps_true_rows_and_drops_nulls() {
        let job = job(r#"{"id": "f", "op": "filter", "inputs": ["src"], "predicate": "n % 2 == 1 || !b"}"#);
        let mut op = FilterOperator::new(&spec(&job, "f")).unwrap();
        let out = run(&mut op, input(&job)).unwrap();
        // n = 1 (odd), 2 (b false), 3 (odd); null n with b true: null || false = null, dropped.
        assert_eq!(out.strings("s"), vec!["a b", "  c  d ", ""]);
        let all = self::job(r#"{"id": "f", "op": "filter", "inputs": ["src"], "predicate": "x > 0.0"}"#);
        let mut op = FilterOperator::new(&spec(&all, "f")).unwrap();
        let batch = input(&all);
        let out = run(&mut op, batch.clone()).unwrap();
        assert_eq!(out.batches.len(), 1);
        assert_eq!(out.batches[0].column(2).as_ref(), batch.column(2).as_ref());
        let none = self::job(r#"{"id": "f", "op": "filter", "inputs": ["src"], "predicate": "1 > 2"}"#);
        let mut op = FilterOperator::new(&spec(&none, "f")).unwrap();
        assert_eq!(run(&mut op, input(&none)).unwrap().batches.len(), 0);
    }

    #[test]
    fn split_drops_empty_pieces() {
        let job = job(r#"{"id": "w", "op": "flat_map.split", "inputs": ["src"], "field": "s"}"#);
        let mut op = SplitOperator::new(&spec(&job, "w")).unwrap();
        let out = run(&mut op, input(&job)).unwrap();
        assert_eq!(out.strings("word"), vec!["a", "b", "c", "d", "e"]);
        let job = self::job(
            r#"{"id": "w", "op": "flat_map.split", "inputs": ["src"], "field": "s", "separator": " d", "as": "part"}"#,
        );
        let mut op = SplitOperator::new(&spec(&job, "w")).unwrap();
        let out = run(&mut op, input(&job)).unwrap();
        assert_eq!(out.strings("part"), vec!["a b", "  c ", " ", "e"]);
    }

    #[test]
    fn union_relabels_and_key_by_passes() {
        let job = job(r#"{"id": "m", "op": "map", "inputs": ["src"], "fields": {"v": "1"}},
               {"id": "m2", "op": "map", "inputs": ["src"], "fields": {"v": "n"}},
               {"id": "u", "op": "union", "inputs": ["m", "m2"]},
               {"id": "k", "op": "key_by", "inputs": ["u"], "key": "v"}"#);
        let m = spec(&job, "m");
        let mut union = PassThrough::new(&spec(&job, "u")).unwrap();
        let batch = RecordBatch::try_new(
            arrow_schema(m.output_schema.as_ref().unwrap()),
            vec![Arc::new(Int64Array::from(vec![1, 1]))],
        )
        .unwrap();
        assert!(!batch.schema().field(0).is_nullable());
        let out = run(&mut union, batch.clone()).unwrap();
        assert!(out.batches[0].schema().field(0).is_nullable());
        let mut key_by = PassThrough::new(&spec(&job, "k")).unwrap();
        let out = run(&mut key_by, out.batches[0].clone()).unwrap();
        assert_eq!(out.ints("v"), vec![1, 1]);
    }

    #[test]
    fn fail_fails_once_after_the_given_records() {
        let job = job(r#"{"id": "boom", "op": "fail", "inputs": ["src"], "after": 5}"#);
        let spec = spec(&job, "boom");
        let batch = input(&job);
        let mut op = FailOperator::new(&spec, &ctx(0, 1), 0).unwrap();
        let mut out = VecCollector::default();
        op.process_batch(0, 0, batch.clone(), &mut out).unwrap();
        let err = op.process_batch(0, 0, batch.clone(), &mut out).unwrap_err();
        assert!(err.message.contains("operator 'boom' failed on purpose after 5 records"), "{}", err.message);
        assert!(err.retryable);
        assert_eq!(out.rows(), 5);
        // A restarted attempt, and other subtasks, never fail.
        for (subtask, attempt) in [(0, 1), (1, 0)] {
            let mut op = FailOperator::new(&spec, &ctx(subtask, 2), attempt).unwrap();
            let mut out = VecCollector::default();
            for _ in 0..3 {
                op.process_batch(0, 0, batch.clone(), &mut out).unwrap();
            }
            assert_eq!(out.rows(), 12);
        }
        // after = 0 fails on the first batch without passing anything.
        let job = self::job(r#"{"id": "boom", "op": "fail", "inputs": ["src"], "after": 0}"#);
        let mut op = FailOperator::new(&self::spec(&job, "boom"), &ctx(0, 1), 0).unwrap();
        let mut out = VecCollector::default();
        assert!(op.process_batch(0, 0, batch, &mut out).is_err());
        assert_eq!(out.rows(), 0);
    }

    #[test]
    fn chain_calls_operators_in_order() {
        let job = job(r#"{"id": "m", "op": "map", "inputs": ["src"], "fields": {"n": "n * 10"}},
               {"id": "f", "op": "filter", "inputs": ["m"], "predicate": "n > 10"}"#);
        let mut chain = OperatorChain::new(vec![
            Box::new(MapOperator::new(&spec(&job, "m")).unwrap()),
            Box::new(FilterOperator::new(&spec(&job, "f")).unwrap()),
        ]);
        assert_eq!(chain.len(), 2);
        let mut out = VecCollector::default();
        chain.process_batch(0, 0, input(&job), &mut out).unwrap();
        chain.process_watermark(0, 0, 42, &mut out).unwrap();
        chain.on_processing_time(1, &mut out).unwrap();
        chain.finish(&mut out).unwrap();
        assert_eq!(out.ints("n"), vec![20, 30]);
        assert_eq!(out.watermarks, vec![42]);
    }
}
