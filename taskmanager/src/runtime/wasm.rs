//! `map.wasm`, `flat_map.wasm` and `process.wasm`: operators whose work is a WebAssembly
//! module's export, called once per batch (see `docs/wasm.md` and the `flint-wasm` crate).
//!
//! The operator reads its module from the job's artifact directory, compiles it through
//! the process-wide cache and instantiates it for this subtask under the job's
//! `wasm.memory.max` and `wasm.call.timeout`. `map.wasm` must return as many rows as it got;
//! `flat_map.wasm` any number. `process.wasm` is keyed: each batch's rows are grouped by key
//! (first appearance order, rows of a key contiguous and in arrival order), the guest selects
//! a group's key with `flint.key(g)` and reaches that key's state and timers through host
//! functions. Watermarks fire due event-time timers through the timer export before they go
//! downstream; the end of the input fires every timer left.
//!
//! Checkpoints: each state slot of a key goes into keyed raw state `wasm/<kind>/<name>`, and
//! the key's timers into `wasm/timers`, under the key's key group, so a restore at another
//! parallelism gives each subtask exactly its keys.
//!
//! Every guest failure fails the task with a non-retryable error naming the module and the
//! function (a guest fails the same way on the same input).

use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::{Int64Array, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field as ArrowField, Schema as ArrowSchema, SchemaRef};
use arrow::record_batch::RecordBatch;
use flint_common::job::{FieldType, OperatorKind, OperatorSpec, WasmFunction};
use flint_wasm::keyed::{encode_timers, StateKind};
use flint_wasm::{Guest, GuestRole, WasmError};

use super::keyed::{as_type, hash_key, key_group_for_hash, KeyEncoder, KeyMap};
use super::operator::{Collector, Operator, OperatorContext, TaskError};
use super::schema::{arrow_type, required_schema};
use crate::state::StateStore;

/// Keyed raw state of the timers.
const TIMERS_STATE: &str = "wasm/timers";
/// Timers handed to the guest per call.
const TIMERS_PER_CALL: usize = 4096;

fn state_name(kind: StateKind, name: &str) -> String {
    format!("wasm/{}/{name}", kind.name())
}

fn guest_error(e: WasmError) -> TaskError {
    TaskError { message: e.to_string(), retryable: e.is_retryable() }
}

/// Reads and compiles (through the process-wide cache) the module at `path`; returns the
/// name messages use for it (its file name: the taskmanager's directories are not the
/// client's business) and the module.
fn load_module(path: &str) -> Result<(String, flint_wasm::Module), TaskError> {
    let path = Path::new(path);
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let size = std::fs::metadata(path).map_err(|e| TaskError::io(format!("module '{name}'"), &e))?.len();
    if size > flint_wasm::engine::MAX_MODULE_BYTES as u64 {
        return Err(TaskError::fatal(format!(
            "module '{name}' has {size} bytes; at most {} are accepted",
            flint_wasm::engine::MAX_MODULE_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| TaskError::io(format!("module '{name}'"), &e))?;
    let module = flint_wasm::compile(&name, &bytes).map_err(guest_error)?;
    Ok((name, module))
}

/// The instances of the scalar-function modules one operator's expressions call: one per
/// module, shared by every function of that module the operator calls (as an operator's
/// own module has one instance per subtask).
#[derive(Default)]
pub struct ScalarGuests {
    limits: flint_wasm::Limits,
    /// By module path.
    guests: Vec<(String, Arc<Mutex<Guest>>)>,
}

impl ScalarGuests {
    pub fn new(limits: flint_wasm::Limits) -> Self {
        Self { limits, guests: Vec::new() }
    }

    /// The instance of `function`'s module, instantiated (and opened with the module's
    /// parameters) on first use.
    pub fn instance(&mut self, function: &WasmFunction) -> Result<Arc<Mutex<Guest>>, TaskError> {
        if let Some((_, guest)) = self.guests.iter().find(|(path, _)| *path == function.module) {
            return Ok(Arc::clone(guest));
        }
        let (name, module) = load_module(&function.module)?;
        let output = scalar_output(function.returns);
        let guest = Guest::new(
            &name,
            &module,
            GuestRole::Scalar,
            &function.export,
            None,
            &function.params,
            output,
            self.limits,
        )
        .map_err(guest_error)?;
        let guest = Arc::new(Mutex::new(guest));
        self.guests.push((function.module.clone(), Arc::clone(&guest)));
        Ok(guest)
    }

    /// The counters the instances bumped, summed by name.
    pub fn accumulators(&self, out: &mut Vec<(String, u64)>) {
        for (_, guest) in &self.guests {
            let guest = guest.lock().unwrap_or_else(|e| e.into_inner());
            for (name, value) in guest.counters() {
                match out.iter_mut().find(|(n, _)| n == name) {
                    Some((_, total)) => *total += value,
                    None => out.push((name.clone(), *value)),
                }
            }
        }
    }

    /// Calls every instance's `flint_close`.
    pub fn close(&self) -> Result<(), TaskError> {
        for (_, guest) in &self.guests {
            guest.lock().unwrap_or_else(|e| e.into_inner()).close().map_err(guest_error)?;
        }
        Ok(())
    }
}

/// The batch a scalar function returns: one nullable column `result` of its type.
pub fn scalar_output(returns: FieldType) -> SchemaRef {
    Arc::new(ArrowSchema::new(vec![ArrowField::new("result", arrow_type(returns), true)]))
}

/// The batch a scalar function is called with: one nullable column per argument, `arg0`...
pub fn scalar_input(args: &[FieldType]) -> SchemaRef {
    Arc::new(ArrowSchema::new(
        args.iter()
            .enumerate()
            .map(|(i, t)| ArrowField::new(format!("arg{i}"), arrow_type(*t), true))
            .collect::<Vec<_>>(),
    ))
}

/// The keyed half of `process.wasm`.
struct Keyed {
    encoder: KeyEncoder,
    keys: KeyMap,
    /// The key fields' Arrow types, and the schema of timer batches (key fields + `timestamp`).
    key_types: Vec<DataType>,
    timer_schema: SchemaRef,
    /// Scratch, per batch: the group of each key id (`u32::MAX`: none yet), the key id of
    /// each group, rows per group, each row's group.
    group_of_key: Vec<u32>,
    group_keys: Vec<u32>,
    offsets: Vec<u32>,
    row_group: Vec<u32>,
    counts: Vec<u32>,
}

/// A WebAssembly operator (any of the three kinds).
pub struct WasmOperator {
    guest: Guest,
    role: GuestRole,
    keyed: Option<Keyed>,
    /// `process.wasm`: the timestamp column and out-of-orderness of its own watermarks.
    event_time: Option<(usize, i64)>,
    /// Per input channel: the largest timestamp seen and the watermark received.
    channels: Vec<(i64, i64)>,
    watermark: i64,
}

impl WasmOperator {
    pub fn new(spec: &OperatorSpec, ctx: &OperatorContext) -> Result<Self, TaskError> {
        let (role, call, key) = match &spec.kind {
            OperatorKind::WasmMap { call } => (GuestRole::Map, call, None),
            OperatorKind::WasmFlatMap { call } => (GuestRole::FlatMap, call, None),
            OperatorKind::WasmProcess { key, call, .. } => (GuestRole::Process, call, Some(key)),
            other => {
                return Err(TaskError::fatal(format!(
                    "{} is a {}, not a WebAssembly operator",
                    spec.id,
                    other.op_type()
                )))
            }
        };
        let output = required_schema(spec.output_schema.as_ref(), &spec.id, "output")?;
        let (name, module) = load_module(&call.module)?;
        let timer_function = call.timer_function.as_deref().filter(|_| role == GuestRole::Process);
        let guest =
            Guest::new(&name, &module, role, &call.function, timer_function, &call.params, output, ctx.wasm_limits)
                .map_err(guest_error)?;
        let keyed = match key {
            None => None,
            Some(key) => {
                let input = spec
                    .input_schema
                    .clone()
                    .ok_or_else(|| TaskError::fatal(format!("{}: no input schema", spec.id)))?;
                let mut key_types = Vec::new();
                let mut fields = Vec::new();
                for k in key {
                    let field =
                        input.field(k).ok_or_else(|| TaskError::fatal(format!("{}: no key field '{k}'", spec.id)))?;
                    key_types.push(arrow_type(field.ty));
                    fields.push(ArrowField::new(k, arrow_type(field.ty), field.nullable));
                }
                fields.push(ArrowField::new("timestamp", DataType::Int64, false));
                Some(Keyed {
                    encoder: KeyEncoder::new(&input, key)?,
                    keys: KeyMap::new(),
                    key_types,
                    timer_schema: Arc::new(ArrowSchema::new(fields)),
                    group_of_key: Vec::new(),
                    group_keys: Vec::new(),
                    offsets: Vec::new(),
                    row_group: Vec::new(),
                    counts: Vec::new(),
                })
            }
        };
        let event_time = match &spec.kind {
            OperatorKind::WasmProcess { event_time: Some((field, lag)), .. } => {
                let input = spec
                    .input_schema
                    .as_ref()
                    .ok_or_else(|| TaskError::fatal(format!("{}: no input schema", spec.id)))?;
                let column = input
                    .index_of(field)
                    .ok_or_else(|| TaskError::fatal(format!("{}: no timestamp field '{field}'", spec.id)))?;
                Some((column, i64::try_from(lag.as_millis()).unwrap_or(i64::MAX)))
            }
            _ => None,
        };
        let channels = vec![(i64::MIN, i64::MIN); ctx.input_channels.iter().sum::<usize>().max(1)];
        Ok(Self { guest, role, keyed, event_time, channels, watermark: i64::MIN })
    }

    /// The watermark from every channel's (received watermark, largest timestamp − lag − 1);
    /// fires timers and emits it when it advanced.
    fn advance_watermark(&mut self, out: &mut dyn Collector) -> Result<(), TaskError> {
        let lag = self.event_time.map(|(_, lag)| lag);
        let combined = self
            .channels
            .iter()
            .map(|&(max_ts, received)| match lag {
                Some(lag) => received.max(max_ts.saturating_sub(lag).saturating_sub(1)),
                None => received,
            })
            .min()
            .unwrap_or(i64::MIN);
        if combined <= self.watermark {
            return Ok(());
        }
        self.watermark = combined;
        self.fire_timers(combined, out)?;
        out.emit_watermark(combined)
    }

    fn channel(&mut self, channel: usize) -> &mut (i64, i64) {
        if channel >= self.channels.len() {
            self.channels.resize(channel + 1, (i64::MIN, i64::MIN));
        }
        &mut self.channels[channel]
    }

    /// Fires the timers due at `watermark` through the guest's timer export.
    fn fire_timers(&mut self, watermark: i64, out: &mut dyn Collector) -> Result<(), TaskError> {
        let Some(keyed) = self.keyed.as_mut() else { return Ok(()) };
        loop {
            let state = self.guest.keyed().ok_or_else(|| TaskError::fatal("process.wasm without keyed state"))?;
            state.set_watermark(watermark);
            let due = state.take_due_timers(watermark, TIMERS_PER_CALL);
            if due.is_empty() {
                return Ok(());
            }
            let mut builder = keyed.encoder.columns_builder(due.len());
            for &(_, id) in &due {
                builder.append(keyed.keys.key(id))?;
            }
            let mut columns = Vec::with_capacity(keyed.key_types.len() + 1);
            for (column, ty) in builder.finish().iter().zip(&keyed.key_types) {
                columns.push(as_type(column, ty)?);
            }
            columns.push(Arc::new(Int64Array::from_iter_values(due.iter().map(|(ts, _)| *ts))));
            let batch = RecordBatch::try_new(keyed.timer_schema.clone(), columns)?;
            let ids: Vec<u32> = due.iter().map(|(_, id)| *id).collect();
            let offsets: Vec<u32> = (0..=due.len() as u32).collect();
            self.guest.keyed().expect("checked").set_groups(&ids);
            if !self.guest.has_timer_function() {
                return Err(TaskError::fatal(format!(
                    "module '{}' registered timers but exports no timer function",
                    self.guest.module()
                )));
            }
            if let Some(result) = self.guest.call_timers(&batch, &offsets).map_err(guest_error)? {
                if result.num_rows() > 0 {
                    out.collect(result)?;
                }
            }
        }
    }

    fn process_keyed(&mut self, batch: RecordBatch, out: &mut dyn Collector) -> Result<(), TaskError> {
        let keyed = self.keyed.as_mut().expect("keyed");
        let n = batch.num_rows();
        let Keyed { encoder, keys, group_of_key, group_keys, offsets, row_group, counts, .. } = keyed;
        let encoded = encoder.encode(&batch)?;
        group_keys.clear();
        row_group.clear();
        counts.clear();
        for row in 0..n {
            let id = keys.intern(encoded.hash(row), encoded.key(row)).0 as usize;
            if id >= group_of_key.len() {
                group_of_key.resize(id + 1, u32::MAX);
            }
            let mut g = group_of_key[id];
            if g == u32::MAX {
                g = group_keys.len() as u32;
                group_of_key[id] = g;
                group_keys.push(id as u32);
                counts.push(0);
            }
            counts[g as usize] += 1;
            row_group.push(g);
        }
        for &id in group_keys.iter() {
            group_of_key[id as usize] = u32::MAX;
        }
        offsets.clear();
        offsets.push(0);
        let mut total = 0;
        for c in counts.iter() {
            total += c;
            offsets.push(total);
        }
        // Rows of a key together, in arrival order (already so when every group is one run).
        let batch = if row_group.windows(2).all(|w| w[0] <= w[1]) {
            batch
        } else {
            let mut next: Vec<u32> = offsets[..offsets.len() - 1].to_vec();
            let mut order = vec![0u32; n];
            for (row, &g) in row_group.iter().enumerate() {
                order[next[g as usize] as usize] = row as u32;
                next[g as usize] += 1;
            }
            take_record_batch(&batch, &UInt32Array::from(order))?
        };
        self.guest.keyed().expect("process.wasm has keyed state").set_groups(group_keys);
        let result = self.guest.call(&batch, offsets).map_err(guest_error)?;
        if let Some(result) = result.filter(|b| b.num_rows() > 0) {
            out.collect(result)?;
        }
        Ok(())
    }
}

impl Operator for WasmOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.keyed.is_some() {
            let max = match self.event_time {
                Some((column, _)) => {
                    batch.column(column).as_any().downcast_ref::<Int64Array>().and_then(arrow::compute::max)
                }
                None => None,
            };
            self.process_keyed(batch, out)?;
            if let Some(max) = max {
                let state = self.channel(channel);
                state.0 = state.0.max(max);
                return self.advance_watermark(out);
            }
            return Ok(());
        }
        let rows = batch.num_rows();
        let result = self.guest.call(&batch, &[]).map_err(guest_error)?;
        let got = result.as_ref().map_or(0, RecordBatch::num_rows);
        if self.role == GuestRole::Map && got != rows {
            return Err(TaskError::fatal(format!(
                "module '{}' function '{}' returned {got} rows for {rows}: map.wasm keeps the row count (use flat_map.wasm)",
                self.guest.module(),
                self.guest.function()
            )));
        }
        match result {
            Some(b) if b.num_rows() > 0 => out.collect(b),
            _ => Ok(()),
        }
    }

    fn process_watermark(
        &mut self,
        _input: usize,
        channel: usize,
        watermark: i64,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        if self.keyed.is_none() {
            return out.emit_watermark(watermark);
        }
        let state = self.channel(channel);
        state.1 = state.1.max(watermark);
        self.advance_watermark(out)
    }

    /// The end of the input is the end of time: every timer fires.
    fn finish(&mut self, out: &mut dyn Collector) -> Result<(), TaskError> {
        if self.keyed.is_some() && self.watermark < i64::MAX {
            self.watermark = i64::MAX;
            self.fire_timers(i64::MAX, out)?;
            out.emit_watermark(i64::MAX)?;
        }
        self.guest.close().map_err(guest_error)
    }

    fn snapshot_state(&mut self, _checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        let Some(keyed) = self.keyed.as_ref() else { return Ok(()) };
        let max_parallelism = state.keyed.max_parallelism();
        let guest_state = self.guest.keyed().ok_or_else(|| TaskError::fatal("process.wasm without keyed state"))?;
        let mut slots = Vec::new();
        for (id, key) in keyed.keys.iter() {
            slots.clear();
            guest_state.snapshot_key(id, &mut slots);
            if slots.is_empty() {
                continue;
            }
            let key_group = key_group_for_hash(keyed.keys.hash(id), max_parallelism);
            for (kind, name, bytes) in slots.drain(..) {
                let raw = state.keyed.raw_state(&state_name(kind, &name));
                let map = raw.group_mut(key_group).ok_or_else(|| {
                    TaskError::fatal(format!("a key in key group {key_group} is outside this subtask's key groups"))
                })?;
                map.insert(key.to_vec(), bytes);
            }
        }
        let timers = guest_state.timers_by_key();
        if !timers.is_empty() {
            let raw = state.keyed.raw_state(TIMERS_STATE);
            for (id, timestamps) in timers {
                let key_group = key_group_for_hash(keyed.keys.hash(id), max_parallelism);
                let map = raw.group_mut(key_group).ok_or_else(|| {
                    TaskError::fatal(format!("a timer in key group {key_group} is outside this subtask's key groups"))
                })?;
                map.insert(keyed.keys.key(id).to_vec(), encode_timers(&timestamps));
            }
        }
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        let Some(keyed) = self.keyed.as_mut() else { return Ok(()) };
        let max_parallelism = state.keyed.max_parallelism();
        let names: Vec<String> =
            state.keyed.state_names().filter(|n| n.starts_with("wasm/")).map(str::to_string).collect();
        let guest_state = self.guest.keyed().ok_or_else(|| TaskError::fatal("process.wasm without keyed state"))?;
        guest_state.clear_all();
        keyed.keys.clear();
        let corrupt = |what: String| TaskError::fatal(format!("cannot restore the WebAssembly state: {what}"));
        for name in names {
            let kind = if name == TIMERS_STATE {
                None
            } else {
                let rest = name.trim_start_matches("wasm/");
                let (kind, _) = rest.split_once('/').ok_or_else(|| corrupt(format!("state '{name}'")))?;
                Some(match kind {
                    "value" => StateKind::Value,
                    "list" => StateKind::List,
                    "map" => StateKind::Map,
                    other => return Err(corrupt(format!("unknown state kind '{other}'"))),
                })
            };
            let user_name = name.splitn(3, '/').nth(2).unwrap_or_default().to_string();
            let raw = state.keyed.raw_state(&name);
            for (key_group, map) in raw.groups() {
                for (key, bytes) in map {
                    let hash = hash_key(key);
                    if key_group_for_hash(hash, max_parallelism) != key_group {
                        return Err(corrupt(format!("a key of '{name}' is filed under another key group")));
                    }
                    let id = keyed.keys.intern(hash, key).0;
                    match kind {
                        Some(kind) => guest_state.restore_slot(kind, &user_name, id, bytes).map_err(&corrupt)?,
                        None => guest_state.restore_timers(id, bytes).map_err(&corrupt)?,
                    }
                }
            }
        }
        Ok(())
    }

    fn accumulators(&self, out: &mut Vec<(String, u64)>) {
        out.extend(self.guest.counters().iter().map(|(k, v)| (k.clone(), *v)));
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    use flint_common::job::load_job;

    use super::*;
    use crate::runtime::keyed::HashPartitioner;
    use crate::runtime::partition::Partitioner;
    use crate::runtime::transforms::tests::{checkpoint_and_restore, ctx, VecCollector};

    fn guests() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/wasm")
    }

    /// The operator `id` of a job whose source is `source` (fields), with its module at `module`.
    fn spec_with(source_fields: &str, operator: &str, module: &Path) -> OperatorSpec {
        let text = format!(
            r#"{{"flint": 1, "name": "t", "parallelism": 1, "operators": [
                {{"id": "src", "op": "source.file", "path": "/x", "format": "json", "schema": {source_fields}}},
                {operator} ]}}"#
        );
        let job = load_job(&text, 1).unwrap_or_else(|e| panic!("{e}"));
        let mut spec = job.job_graph().vertices.iter().flat_map(|v| v.operators.clone()).find(|o| o.id == "w").unwrap();
        *spec.kind.artifact_paths_mut().remove(0) = module.display().to_string();
        spec
    }

    fn ints(n: impl IntoIterator<Item = i64>) -> RecordBatch {
        let schema = Arc::new(ArrowSchema::new(vec![ArrowField::new("n", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(n))]).unwrap()
    }

    fn keyed_batch(keys: &[&str], n: &[i64]) -> RecordBatch {
        let schema = Arc::new(ArrowSchema::new(vec![
            ArrowField::new("key", DataType::Utf8, true),
            ArrowField::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(keys.to_vec())), Arc::new(Int64Array::from(n.to_vec()))],
        )
        .unwrap()
    }

    fn module_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flint-wasm-op-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn map_wasm_computes_b1s_fields_and_counts_rows() {
        let spec = spec_with(
            r#"{"n": "integer"}"#,
            r#"{"id": "w", "op": "map.wasm", "inputs": ["src"], "module": "b1_map.wat", "function": "map",
                "schema": {"n": "integer", "s": "string"}}"#,
            &guests().join("b1_map.wat"),
        );
        let mut op = WasmOperator::new(&spec, &ctx(0, 1)).unwrap();
        let mut out = VecCollector::default();
        for chunk in [0..5000i64, 1_234_567_890_123..1_234_567_890_130] {
            op.process_batch(0, 0, ints(chunk), &mut out).unwrap();
        }
        let rows: Vec<(i64, String)> = out
            .batches
            .iter()
            .flat_map(|b| {
                let n = b.column(0).as_primitive::<Int64Type>().values().to_vec();
                let s: Vec<String> = b.column(1).as_string::<i32>().iter().map(|s| s.unwrap().to_string()).collect();
                n.into_iter().zip(s)
            })
            .collect();
        assert_eq!(rows.len(), 5007);
        for (n, s) in rows {
            assert_eq!(s, format!("{:016}", n / 2));
        }
        let mut acc = Vec::new();
        op.accumulators(&mut acc);
        assert_eq!(acc, vec![("rows".to_string(), 5007)]);
    }

    /// A `map` and a `filter` of a job declaring `tests/wasm/scalars.wat`'s functions, with
    /// the module pointed at `module`.
    fn scalar_job(module: &Path, factor: &str) -> (OperatorSpec, OperatorSpec) {
        let text = format!(
            r#"
flint: 1
name: t
functions:
  s:
    module: scalars.wat
    params: {{ factor: "{factor}" }}
    exports:
      scale: {{ args: [float], returns: float }}
      above: {{ args: [integer, integer], returns: boolean }}
      shout: {{ args: [string], returns: string }}
operators:
  - {{ id: src, op: source.file, path: /x, format: json, schema: {{ n: integer, name: string }} }}
  - id: m
    op: map
    inputs: [src]
    keep_input: true
    fields: {{ x: "wasm::s::scale(n) + 0.5", loud: "wasm::s::shout(name + \"!\")", big: "wasm::s::above(n, 2)",
              none: "wasm::s::scale(())" }}
  - {{ id: f, op: filter, inputs: [m], predicate: "wasm::s::above(n * 10, 25) && big" }}
  - {{ id: out, op: sink.print, inputs: [f] }}
"#
        );
        let job = load_job(&text, 1).unwrap_or_else(|e| panic!("{e}"));
        let mut ops = job.job_graph().vertices.iter().flat_map(|v| v.operators.clone()).collect::<Vec<_>>();
        for op in &mut ops {
            for path in op.kind.artifact_paths_mut() {
                if path.ends_with(".wat") {
                    *path = module.display().to_string();
                }
            }
        }
        let take = |id: &str| ops.iter().find(|o| o.id == id).unwrap().clone();
        (take("m"), take("f"))
    }

    #[test]
    fn scalar_functions_run_in_map_and_filter_expressions() {
        use crate::runtime::transforms::{FilterOperator, MapOperator};
        let (m, f) = scalar_job(&guests().join("scalars.wat"), "3");
        assert!(m.output_schema.as_ref().unwrap().field("x").unwrap().nullable, "function results may be null");
        let mut map = MapOperator::new(&m).unwrap();
        let mut filter = FilterOperator::new(&f).unwrap();
        let schema = Arc::new(ArrowSchema::new(vec![
            ArrowField::new("n", DataType::Int64, true),
            ArrowField::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])),
                Arc::new(StringArray::from(vec![Some("ab"), Some("x"), None, Some("Zoë")])),
            ],
        )
        .unwrap();
        let mut mapped = VecCollector::default();
        map.process_batch(0, 0, batch, &mut mapped).unwrap();
        let out = &mapped.batches[0];
        let x: Vec<Option<f64>> = out.column_by_name("x").unwrap().as_primitive::<Float64Type>().iter().collect();
        assert_eq!(x, vec![Some(3.5), None, Some(9.5), Some(12.5)]);
        let loud: Vec<Option<&str>> = out.column_by_name("loud").unwrap().as_string::<i32>().iter().collect();
        assert_eq!(loud, vec![Some("AB!"), Some("X!"), None, Some("ZOë!")]);
        let big: Vec<Option<bool>> = out.column_by_name("big").unwrap().as_boolean().iter().collect();
        assert_eq!(big, vec![Some(false), None, Some(true), Some(true)]);
        // `()` is a null of the declared type on every row.
        let none = out.column_by_name("none").unwrap();
        assert_eq!((none.data_type(), none.null_count()), (&DataType::Float64, 4));
        let mut kept = VecCollector::default();
        filter.process_batch(0, 0, out.clone(), &mut kept).unwrap();
        let n: Vec<i64> = kept.batches[0].column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(n, vec![3, 4]);
        // Four calls of one instance (scale twice, shout, above) of 4 rows each; the filter's own instance one of 4.
        let mut acc = Vec::new();
        map.accumulators(&mut acc);
        assert_eq!(acc, vec![("rows".to_string(), 16)]);
        let mut acc = Vec::new();
        filter.accumulators(&mut acc);
        assert_eq!(acc, vec![("rows".to_string(), 4)]);
    }

    #[test]
    fn a_failing_scalar_function_fails_its_task_naming_the_function() {
        use crate::runtime::transforms::MapOperator;
        // flint_open refuses a factor without digits.
        let (m, _) = scalar_job(&guests().join("scalars.wat"), "many");
        let e = MapOperator::new(&m).err().expect("flint_open failed");
        assert!(e.message.contains("scalars.wat") && e.message.contains("flint_open"), "{}", e.message);
        assert!(!e.retryable);
        // A module whose export traps: the error names the expression, function and module.
        let trapping = module_file(
            "scalars.wat",
            r#"(module (memory (export "memory") 1)
                (func (export "flint_alloc") (param i32) (result i32) i32.const 1024)
                (func (export "scale") (param i32) (result i32) unreachable)
                (func (export "above") (param i32) (result i32) i32.const 0)
                (func (export "shout") (param i32) (result i32) i32.const 0))"#,
        );
        let (m, _) = scalar_job(&trapping, "1");
        let mut map = MapOperator::new(&m).unwrap();
        let e = map.process_batch(0, 0, ints([1, 2]), &mut VecCollector::default()).unwrap_err();
        assert!(
            e.message.contains("wasm::s::scale")
                && e.message.contains("scalars.wat")
                && e.message.contains("unreachable"),
            "{}",
            e.message
        );
        assert!(!e.retryable);
    }

    #[test]
    fn flat_map_wasm_emits_any_number_of_rows() {
        let spec = spec_with(
            r#"{"n": "integer"}"#,
            r#"{"id": "w", "op": "flat_map.wasm", "inputs": ["src"], "module": "explode.wat", "schema": {"n": "integer"}}"#,
            &guests().join("explode.wat"),
        );
        let mut op = WasmOperator::new(&spec, &ctx(0, 1)).unwrap();
        let mut out = VecCollector::default();
        op.process_batch(0, 0, ints(0..10), &mut out).unwrap();
        op.process_batch(0, 0, ints([3, 6, 9]), &mut out).unwrap();
        assert_eq!(out.ints("n"), vec![1, 2, 2, 4, 5, 5, 7, 8, 8]);
    }

    fn counter(subtask: u32, parallelism: u32) -> WasmOperator {
        let spec = spec_with(
            r#"{"key": "string", "n": "integer"}"#,
            r#"{"id": "w", "op": "process.wasm", "inputs": ["src"], "key": ["key"], "module": "count.wat",
                "schema": {"key": "string", "count": "integer"}}"#,
            &guests().join("count.wat"),
        );
        WasmOperator::new(&spec, &ctx(subtask, parallelism)).unwrap()
    }

    fn counts(out: &VecCollector) -> Vec<(String, i64)> {
        out.batches
            .iter()
            .flat_map(|b| {
                let k: Vec<String> = b.column(0).as_string::<i32>().iter().map(|s| s.unwrap().to_string()).collect();
                k.into_iter().zip(b.column(1).as_primitive::<Int64Type>().values().to_vec())
            })
            .collect()
    }

    #[test]
    fn process_wasm_counts_per_key_in_arrival_order() {
        let mut op = counter(0, 1);
        let mut out = VecCollector::default();
        op.process_batch(0, 0, keyed_batch(&["a", "b", "a", "c", "b", "a"], &[1, 2, 3, 4, 5, 6]), &mut out).unwrap();
        op.process_batch(0, 0, keyed_batch(&["c", "a"], &[7, 8]), &mut out).unwrap();
        // Rows of a key come together, keys in order of first appearance.
        let expected = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("c", 1), ("c", 2), ("a", 4)];
        assert_eq!(counts(&out), expected.map(|(k, c)| (k.to_string(), c)).to_vec());
    }

    #[test]
    fn process_wasm_state_survives_a_checkpoint_at_another_parallelism() {
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let batch = |repeat: usize| {
            let k: Vec<&str> = (0..repeat).flat_map(|_| keys.iter().map(String::as_str)).collect();
            let n: Vec<i64> = (0..k.len() as i64).collect();
            keyed_batch(&k, &n)
        };
        // p=4: each subtask counts its keys 3 times.
        use flint_common::job::{Field, FieldType, Schema};
        let input = Schema::new(vec![Field::new("key", FieldType::String), Field::new("n", FieldType::Int)]);
        let mut partitioner = HashPartitioner::new(&input, &["key".into()], 128).unwrap();
        let split = |partitioner: &mut HashPartitioner, b: RecordBatch, p: usize| {
            let mut parts = Vec::new();
            partitioner.partition(&b, p, &mut parts).unwrap();
            let mut by = vec![None; p];
            for (i, part) in parts {
                by[i] = Some(part);
            }
            by
        };
        let parts = split(&mut partitioner, batch(3), 4);
        let mut stores = Vec::new();
        for (subtask, part) in parts.into_iter().enumerate() {
            let mut op = counter(subtask as u32, 4);
            let mut out = VecCollector::default();
            if let Some(part) = part {
                op.process_batch(0, 0, part, &mut out).unwrap();
            }
            let mut store = StateStore::new(subtask as u32, 4, 128);
            op.snapshot_state(1, &mut store).unwrap();
            stores.push(store);
        }
        // Restored at p=2, one more round: every key reaches 4.
        let mut restored = checkpoint_and_restore("w", &stores, 2);
        let parts = split(&mut partitioner, batch(1), 2);
        let mut total = Vec::new();
        for (subtask, part) in parts.into_iter().enumerate() {
            let mut op = counter(subtask as u32, 2);
            op.restore_state(&mut restored[subtask]).unwrap();
            let mut out = VecCollector::default();
            op.process_batch(0, 0, part.unwrap(), &mut out).unwrap();
            total.extend(counts(&out));
        }
        total.sort();
        assert_eq!(total.len(), 200);
        assert!(total.iter().all(|(_, c)| *c == 4), "{total:?}");
    }

    #[test]
    fn process_wasm_timers_fire_with_the_watermark_and_at_the_end() {
        let spec = spec_with(
            r#"{"key": "string", "ts": "integer"}"#,
            r#"{"id": "w", "op": "process.wasm", "inputs": ["src"], "key": ["key"], "module": "windows.wat",
                "timestamp_field": "ts", "schema": {"key": "string", "window_start": "integer", "count": "integer"}}"#,
            &guests().join("windows.wat"),
        );
        let mut op = WasmOperator::new(&spec, &ctx(0, 1)).unwrap();
        let mut out = VecCollector::default();
        let schema = Arc::new(ArrowSchema::new(vec![
            ArrowField::new("key", DataType::Utf8, true),
            ArrowField::new("ts", DataType::Int64, true),
        ]));
        let events = |keys: Vec<&str>, ts: Vec<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(keys)), Arc::new(Int64Array::from(ts))],
            )
            .unwrap()
        };
        op.process_batch(0, 0, events(vec!["a", "b", "a", "a"], vec![10, 20, 999, 1500]), &mut out).unwrap();
        // The watermark is 1499: window [0, 1000) of both keys fired, [1000, 2000) of a is open.
        let fired = out.batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!(fired, 2);
        assert_eq!(out.watermarks.last(), Some(&1499));
        let mut snapshot = StateStore::new(0, 1, 128);
        op.snapshot_state(1, &mut snapshot).unwrap();
        op.finish(&mut out).unwrap();
        let rows: Vec<(String, i64, i64)> = out
            .batches
            .iter()
            .flat_map(|b| {
                let k: Vec<String> = b.column(0).as_string::<i32>().iter().map(|s| s.unwrap().to_string()).collect();
                let s = b.column(1).as_primitive::<Int64Type>().values().to_vec();
                let c = b.column(2).as_primitive::<Int64Type>().values().to_vec();
                k.into_iter().zip(s).zip(c).map(|((k, s), c)| (k, s, c))
            })
            .collect();
        assert_eq!(rows, vec![("a".into(), 0, 2), ("b".into(), 0, 1), ("a".into(), 1000, 1)]);
        let mut acc = Vec::new();
        op.accumulators(&mut acc);
        assert_eq!(acc, vec![("fired".to_string(), 3)]);

        // The open window and its timer come back from the snapshot.
        let mut again = WasmOperator::new(&spec, &ctx(0, 1)).unwrap();
        again.restore_state(&mut snapshot).unwrap();
        let mut out = VecCollector::default();
        again.finish(&mut out).unwrap();
        assert_eq!(out.batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    }

    /// A map.wasm whose export is `body` (WebAssembly text inside the function), run on one batch.
    fn run_map(body: &str, imports: &str, limits: flint_wasm::Limits) -> Result<(), TaskError> {
        let text = format!(
            r#"(module {imports}
                (memory (export "memory") 1)
                (func (export "flint_alloc") (param i32) (result i32) i32.const 1024)
                (func (export "map") (param $in i32) (result i32) {body}))"#
        );
        let path = module_file("guest.wat", &text);
        let spec = spec_with(
            r#"{"n": "integer"}"#,
            r#"{"id": "w", "op": "map.wasm", "inputs": ["src"], "module": "guest.wat", "schema": {"n": "integer"}}"#,
            &path,
        );
        let mut c = ctx(0, 1);
        c.wasm_limits = limits;
        let mut op = WasmOperator::new(&spec, &c)?;
        op.process_batch(0, 0, ints(0..10), &mut VecCollector::default())
    }

    #[test]
    fn guests_that_loop_trap_outgrow_memory_or_reach_for_files_fail_their_task_cleanly() {
        let limits = flint_wasm::Limits { memory_max: 4 << 20, call_timeout: std::time::Duration::from_millis(200) };
        let started = std::time::Instant::now();
        let e = run_map("(loop $l (br $l)) unreachable", "", limits).unwrap_err();
        assert!(e.message.contains("ran longer than 200 ms (wasm.call.timeout)"), "{}", e.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(!e.retryable);

        let grow = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
        let e = run_map(grow, "", limits).unwrap_err();
        assert!(e.message.contains("needed more than 4194304 bytes of memory (wasm.memory.max)"), "{}", e.message);

        let e = run_map("(i32.load (i32.const 0x7ffffff0))", "", limits).unwrap_err();
        assert!(e.message.contains("module 'guest.wat' function 'map' failed"), "{}", e.message);
        assert!(e.message.contains("out of bounds memory access"), "{}", e.message);

        let e = run_map("unreachable", "", limits).unwrap_err();
        assert!(e.message.contains("unreachable"), "{}", e.message);

        let open = r#"(import "wasi_snapshot_preview1" "path_open"
            (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#;
        let e = run_map(
            "(drop (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 11) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0))) (local.get $in)",
            open,
            limits,
        )
        .unwrap_err();
        assert!(e.message.contains("called wasi_snapshot_preview1::path_open"), "{}", e.message);
        assert!(e.message.contains("grants no file system"), "{}", e.message);

        // Bad output: a pointer past the memory, and a map that drops rows.
        let e = run_map("(i32.const 65530)", "", limits).unwrap_err();
        assert!(e.message.contains("returned a bad batch"), "{}", e.message);
        let e = run_map("(i32.const 0)", "", limits).unwrap_err();
        assert!(e.message.contains("returned 0 rows for 10"), "{}", e.message);
        // A guest that fails on purpose says why.
        let fail = r#"(import "flint" "fail" (func $fail (param i32 i32))) (data (i32.const 16) "bad record")"#;
        let e = run_map("(call $fail (i32.const 16) (i32.const 10)) (i32.const 0)", fail, limits).unwrap_err();
        assert!(e.message.contains("the guest failed: bad record"), "{}", e.message);
        // The same process runs a healthy guest afterwards.
        assert!(run_map("(local.get $in)", "", limits).is_ok());
    }
}

#[cfg(test)]
mod bench {
    use std::path::PathBuf;
    use std::time::Instant;

    use flint_common::job::load_job;

    use super::*;
    use crate::runtime::build::{build_operator, build_source};
    use crate::runtime::sinks::BlackholeSink;
    use crate::runtime::transforms::tests::{ctx, VecCollector};
    use crate::runtime::transforms::OperatorChain;

    /// Source → operators → blackhole in one thread; records/s at the sink's input side (source records).
    fn run(job: &str, guests: &Path, n: i64) -> f64 {
        let job = load_job(job, 1).unwrap_or_else(|e| panic!("{e}"));
        let mut specs: Vec<OperatorSpec> = job.job_graph().vertices.iter().flat_map(|v| v.operators.clone()).collect();
        for path in specs.iter_mut().flat_map(|s| s.kind.artifact_paths_mut()) {
            *path = guests.join(path.as_str()).display().to_string();
        }
        let c = ctx(0, 1);
        let mut operators: Vec<Box<dyn Operator>> =
            specs[1..].iter().map(|s| build_operator(s, &c, 0).unwrap_or_else(|e| panic!("{}", e.message))).collect();
        operators.push(Box::new(BlackholeSink::new()));
        let mut chain = OperatorChain::new(operators);
        let mut source = build_source(&specs[0], &c, 0).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut out = VecCollector::default();
        let start = Instant::now();
        while let Some(batch) = rt.block_on(source.next_batch()).unwrap() {
            chain.process_batch(0, 0, batch, &mut out).unwrap();
        }
        chain.finish(&mut out).unwrap();
        n as f64 / start.elapsed().as_secs_f64()
    }

    /// B1's map and B2's keyed count, built-in and as WebAssembly, interleaved; prints the
    /// medians of 3 runs and their ratios.
    #[test]
    #[ignore = "benchmark: cargo test --release -p flint-taskmanager --lib -- --ignored wasm_vs_builtin --nocapture"]
    fn wasm_vs_builtin() {
        let guests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/wasm");
        const B1: i64 = 20_000_000;
        const B2: i64 = 5_000_000;
        let b1 = |map: &str| {
            format!(
                r#"{{"flint": 1, "name": "b1", "parallelism": 1, "operators": [
                {{"id": "src", "op": "source.sequence", "from": 0, "to": {}}}, {map},
                {{"id": "filter", "op": "filter", "inputs": ["map"], "predicate": "n % 3 != 0"}} ]}}"#,
                B1 - 1
            )
        };
        let builtin_map = r#"{"id": "map", "op": "map", "inputs": ["src"],
            "fields": {"n": "n * 2", "s": "str::substring(str::from(n + 10000000000000000), 1)"}}"#;
        let wasm_map = r#"{"id": "map", "op": "map.wasm", "inputs": ["src"], "module": "b1_map.wat",
            "schema": {"n": "integer", "s": "string"}}"#;
        let b2 = |count: &str| {
            format!(
                r#"{{"flint": 1, "name": "b2", "parallelism": 1, "operators": [
                {{"id": "src", "op": "source.sequence", "from": 0, "to": {}}},
                {{"id": "keys", "op": "map", "inputs": ["src"], "fields": {{"key": "\"k\" + str::from(n % 100000)", "n": "n"}}}},
                {count} ]}}"#,
                B2 - 1
            )
        };
        let builtin_count =
            r#"{"id": "count", "op": "aggregate", "inputs": ["keys"], "key": ["key"], "aggs": {"count": "count()"}}"#;
        let wasm_count = r#"{"id": "count", "op": "process.wasm", "inputs": ["keys"], "key": ["key"],
            "module": "count.wat", "schema": {"key": "string", "count": "integer"}}"#;
        // A scalar function in a map expression next to the same arithmetic built in.
        let b1s = |x: &str| {
            format!(
                r#"{{"flint": 1, "name": "b1s", "parallelism": 1,
                "functions": {{"s": {{"module": "scalars.wat", "params": {{"factor": 3}},
                    "exports": {{"scale": {{"args": ["float"], "returns": "float"}}}}}}}},
                "operators": [
                {{"id": "src", "op": "source.sequence", "from": 0, "to": {}}},
                {{"id": "map", "op": "map", "inputs": ["src"], "fields": {{"n": "n", "x": "{x}"}}}},
                {{"id": "filter", "op": "filter", "inputs": ["map"], "predicate": "n % 3 != 0"}} ]}}"#,
                B1 - 1
            )
        };
        let mut figures: [Vec<f64>; 6] = Default::default();
        for _ in 0..3 {
            figures[0].push(run(&b1(builtin_map), &guests, B1));
            figures[1].push(run(&b1(wasm_map), &guests, B1));
            figures[2].push(run(&b2(builtin_count), &guests, B2));
            figures[3].push(run(&b2(wasm_count), &guests, B2));
            figures[4].push(run(&b1s("n * 3.0"), &guests, B1));
            figures[5].push(run(&b1s("wasm::s::scale(n)"), &guests, B1));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let m: Vec<f64> = figures.iter_mut().map(median).collect();
        println!("B1 map, built-in:      {:.2} M records/s (median of 3, one thread)", m[0] / 1e6);
        println!("B1 map.wasm:           {:.2} M records/s = {:.0} % of built-in", m[1] / 1e6, 100.0 * m[1] / m[0]);
        println!("B2 aggregate count():  {:.2} M records/s", m[2] / 1e6);
        println!("B2 process.wasm count: {:.2} M records/s = {:.0} % of built-in", m[3] / 1e6, 100.0 * m[3] / m[2]);
        println!("x = n * 3.0, built-in: {:.2} M records/s", m[4] / 1e6);
        println!("x = wasm::s::scale(n): {:.2} M records/s = {:.0} % of built-in", m[5] / 1e6, 100.0 * m[5] / m[4]);
    }
}
