//! The built-in operator catalog: what each operator type takes and what it emits.
//!
//! [`OPERATOR_TYPES`] lists every type with its role, its number of inputs and its
//! parameter names. [`check_operator`] reads one operator's parameters against its type
//! (missing, mistyped and unknown parameters are all problems), resolves field references
//! against the input schemas, compiles expressions and aggregates, and returns the typed
//! [`OperatorKind`] with the operator's output schema. `docs/jobs.md` documents every type
//! with an example; keep the two in step.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::expr::{parse_simple_call, CompiledExpr, ScalarFunctions, WasmFunction, WASM_FUNCTION_PREFIX};
use super::schema::{Field, FieldType, Schema};
use super::spec::DocValue;
use crate::config::parse_duration;

mod kafka;
pub use kafka::{
    check_topic_name, property, topic_pattern, BoundedMode, DeliveryGuarantee, KafkaFormat, KafkaSinkSpec,
    KafkaSourceKey, KafkaSourceSpec, KafkaTopics, KafkaWatermark, MetadataKey, OffsetReset, PartitionOffset,
    SinkPartitioner, StartupMode,
};

/// Where an operator sits in a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No inputs; emits records.
    Source,
    /// Inputs and an output.
    Transform,
    /// One input; no output (cannot be another operator's input).
    Sink,
}

/// How many inputs an operator type takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    None,
    One,
    TwoOrMore,
}

/// One operator type of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct OperatorType {
    /// The `op` value in job files.
    pub name: &'static str,
    pub role: Role,
    pub inputs: Arity,
    /// Hash-partitions its input on a key (`aggregate`, `window`, `key_by`).
    pub keyed: bool,
    /// Every parameter it accepts.
    pub params: &'static [&'static str],
}

const fn op(
    name: &'static str,
    role: Role,
    inputs: Arity,
    keyed: bool,
    params: &'static [&'static str],
) -> OperatorType {
    OperatorType { name, role, inputs, keyed, params }
}

/// Every operator type, in documentation order.
pub const OPERATOR_TYPES: &[OperatorType] = &[
    op("source.sequence", Role::Source, Arity::None, false, &["from", "to", "rate", "rate_until_checkpoints"]),
    op(
        "source.datagen",
        Role::Source,
        Arity::None,
        false,
        &["fields", "seed", "rows", "rate", "rate_until_checkpoints"],
    ),
    op("source.file", Role::Source, Arity::None, false, &["path", "format", "schema"]),
    op("source.socket", Role::Source, Arity::None, false, &["host", "port"]),
    op("source.kafka", Role::Source, Arity::None, false, kafka::SOURCE_PARAMS),
    op("map", Role::Transform, Arity::One, false, &["fields", "keep_input", "counter"]),
    op("filter", Role::Transform, Arity::One, false, &["predicate", "counter"]),
    op("flat_map.split", Role::Transform, Arity::One, false, &["field", "separator", "as"]),
    op("union", Role::Transform, Arity::TwoOrMore, false, &[]),
    op("key_by", Role::Transform, Arity::One, true, &["key"]),
    op("aggregate", Role::Transform, Arity::One, true, &["key", "aggs"]),
    op(
        "window",
        Role::Transform,
        Arity::One,
        true,
        &["key", "size", "slide", "time", "timestamp_field", "max_out_of_orderness", "aggs"],
    ),
    op("map.wasm", Role::Transform, Arity::One, false, &["module", "function", "schema", "params"]),
    op("flat_map.wasm", Role::Transform, Arity::One, false, &["module", "function", "schema", "params"]),
    op(
        "process.wasm",
        Role::Transform,
        Arity::One,
        true,
        &["key", "module", "function", "timer_function", "schema", "params", "timestamp_field", "max_out_of_orderness"],
    ),
    op("fail", Role::Transform, Arity::One, false, &["subtask", "after"]),
    op("sink.print", Role::Sink, Arity::One, false, &[]),
    op("sink.file", Role::Sink, Arity::One, false, &["path", "format"]),
    op("sink.blackhole", Role::Sink, Arity::One, false, &["rate"]),
    op("sink.kafka", Role::Sink, Arity::One, false, kafka::SINK_PARAMS),
];

/// The catalog entry for `name`.
pub fn operator_type(name: &str) -> Option<&'static OperatorType> {
    OPERATOR_TYPES.iter().find(|t| t.name == name)
}

/// The known type names joined with ", " (for messages).
pub fn operator_type_names() -> String {
    OPERATOR_TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

/// `text` (one line per record) or `json` (one JSON object per line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Text,
    Json,
}

/// How `source.datagen` fills one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Generator {
    /// `start, start+1, ..., end`, then from `start` again.
    Sequence { start: i64, end: i64 },
    /// Uniform in `min..=max`.
    RandomInt { min: i64, max: i64 },
    /// Uniform in `min..max`.
    RandomFloat { min: f64, max: f64 },
    /// `length` random alphanumeric characters.
    RandomString { length: u32 },
}

impl Generator {
    pub fn field_type(&self) -> FieldType {
        match self {
            Generator::Sequence { .. } | Generator::RandomInt { .. } => FieldType::Int,
            Generator::RandomFloat { .. } => FieldType::Float,
            Generator::RandomString { .. } => FieldType::String,
        }
    }
}

/// One output field of `source.datagen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedField {
    pub name: String,
    pub generator: Generator,
}

/// One output field of `map`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapField {
    pub name: String,
    pub expr: CompiledExpr,
}

/// An aggregate function of `aggregate` and `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggFunc {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

impl AggFunc {
    fn from_name(name: &str) -> Option<AggFunc> {
        Some(match name {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "avg" => AggFunc::Avg,
            _ => return None,
        })
    }
}

/// One output field computed by an aggregate function (`"total": "sum(amount)"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggSpec {
    /// The output field.
    pub name: String,
    pub func: AggFunc,
    /// The input field (`None` for `count()`).
    pub field: Option<String>,
    /// The output type.
    pub ty: FieldType,
}

/// Which clock assigns records to windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowTime {
    /// The wall clock of the subtask when the record arrives.
    Processing,
    /// The record's `timestamp_field` (epoch millis); watermarks trail the largest
    /// timestamp seen by `max_out_of_orderness`.
    Event { timestamp_field: String, max_out_of_orderness: Duration },
}

/// How a WebAssembly operator calls its module (`docs/wasm.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WasmCall {
    /// The module's path in the job package (`.wasm`, or WebAssembly text `.wat`); the
    /// taskmanager points it at its copy.
    pub module: String,
    /// The export called per batch.
    pub function: String,
    /// `process.wasm`: the export called with firing timers (optional in the module).
    #[serde(default)]
    pub timer_function: Option<String>,
    /// Given to the module's `flint_open` as `key=value` lines.
    #[serde(default)]
    pub params: Vec<(String, String)>,
}

/// An operator type with its checked parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OperatorKind {
    #[serde(rename = "source.sequence")]
    Sequence {
        from: i64,
        to: Option<i64>,
        rate: Option<f64>,
        /// `rate` applies only until this many checkpoints completed (absent in old graphs).
        #[serde(default)]
        rate_until_checkpoints: Option<u64>,
    },
    #[serde(rename = "source.datagen")]
    Datagen {
        fields: Vec<GeneratedField>,
        seed: i64,
        rows: Option<u64>,
        rate: Option<f64>,
        /// As for `Sequence`.
        #[serde(default)]
        rate_until_checkpoints: Option<u64>,
    },
    #[serde(rename = "source.file")]
    FileSource { path: String, format: FileFormat, schema: Option<Schema> },
    #[serde(rename = "source.socket")]
    Socket { host: String, port: u16 },
    #[serde(rename = "source.kafka")]
    KafkaSource(Box<KafkaSourceSpec>),
    /// `counter`: the name of an accumulator counting the records the operator receives.
    #[serde(rename = "map")]
    Map {
        fields: Vec<MapField>,
        keep_input: bool,
        #[serde(default)]
        counter: Option<String>,
    },
    #[serde(rename = "filter")]
    Filter {
        predicate: CompiledExpr,
        #[serde(default)]
        counter: Option<String>,
    },
    #[serde(rename = "flat_map.split")]
    Split {
        field: String,
        separator: String,
        #[serde(rename = "as")]
        output: String,
    },
    #[serde(rename = "union")]
    Union,
    #[serde(rename = "key_by")]
    KeyBy { key: Vec<String> },
    #[serde(rename = "aggregate")]
    Aggregate { key: Vec<String>, aggs: Vec<AggSpec> },
    #[serde(rename = "window")]
    Window { key: Vec<String>, size: Duration, slide: Option<Duration>, time: WindowTime, aggs: Vec<AggSpec> },
    #[serde(rename = "map.wasm")]
    WasmMap { call: WasmCall },
    #[serde(rename = "flat_map.wasm")]
    WasmFlatMap { call: WasmCall },
    /// `event_time`: the timestamp field and the out-of-orderness the operator's own
    /// watermarks come from (else only upstream watermarks fire timers).
    #[serde(rename = "process.wasm")]
    WasmProcess { key: Vec<String>, call: WasmCall, event_time: Option<(String, Duration)> },
    #[serde(rename = "fail")]
    Fail { subtask: u32, after: u64 },
    #[serde(rename = "sink.print")]
    PrintSink,
    #[serde(rename = "sink.file")]
    FileSink { path: String, format: FileFormat },
    #[serde(rename = "sink.blackhole")]
    BlackholeSink { rate: Option<f64> },
    #[serde(rename = "sink.kafka")]
    KafkaSink(Box<KafkaSinkSpec>),
}

impl OperatorKind {
    /// The `op` name of this kind.
    pub fn op_type(&self) -> &'static str {
        match self {
            OperatorKind::Sequence { .. } => "source.sequence",
            OperatorKind::Datagen { .. } => "source.datagen",
            OperatorKind::FileSource { .. } => "source.file",
            OperatorKind::Socket { .. } => "source.socket",
            OperatorKind::KafkaSource(_) => "source.kafka",
            OperatorKind::Map { .. } => "map",
            OperatorKind::Filter { .. } => "filter",
            OperatorKind::Split { .. } => "flat_map.split",
            OperatorKind::Union => "union",
            OperatorKind::KeyBy { .. } => "key_by",
            OperatorKind::Aggregate { .. } => "aggregate",
            OperatorKind::Window { .. } => "window",
            OperatorKind::WasmMap { .. } => "map.wasm",
            OperatorKind::WasmFlatMap { .. } => "flat_map.wasm",
            OperatorKind::WasmProcess { .. } => "process.wasm",
            OperatorKind::Fail { .. } => "fail",
            OperatorKind::PrintSink => "sink.print",
            OperatorKind::FileSink { .. } => "sink.file",
            OperatorKind::BlackholeSink { .. } => "sink.blackhole",
            OperatorKind::KafkaSink(_) => "sink.kafka",
        }
    }

    pub fn role(&self) -> Role {
        operator_type(self.op_type()).map_or(Role::Transform, |t| t.role)
    }

    /// The key of a keyed operator (its input edge is hash-partitioned on it).
    pub fn key(&self) -> Option<&[String]> {
        match self {
            OperatorKind::KeyBy { key }
            | OperatorKind::Aggregate { key, .. }
            | OperatorKind::Window { key, .. }
            | OperatorKind::WasmProcess { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The WebAssembly call of a `*.wasm` operator.
    pub fn wasm_call(&self) -> Option<&WasmCall> {
        match self {
            OperatorKind::WasmMap { call }
            | OperatorKind::WasmFlatMap { call }
            | OperatorKind::WasmProcess { call, .. } => Some(call),
            _ => None,
        }
    }

    /// The WebAssembly scalar functions its expressions call (`map` fields, `filter`'s predicate).
    pub fn wasm_functions(&self) -> Vec<&WasmFunction> {
        match self {
            OperatorKind::Map { fields, .. } => fields.iter().flat_map(|f| &f.expr.wasm).collect(),
            OperatorKind::Filter { predicate, .. } => predicate.wasm.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The WebAssembly modules it loads from the job package: a `*.wasm` operator's module
    /// and the modules of the scalar functions its expressions call, each once.
    pub fn module_paths(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.wasm_call().map(|c| c.module.as_str()).into_iter().collect();
        for f in self.wasm_functions() {
            if !out.contains(&f.module.as_str()) {
                out.push(&f.module);
            }
        }
        out
    }

    /// The paths of the files this operator reads from the job package (a `source.file`
    /// path, modules), whether or not they are package-relative.
    pub fn artifact_paths(&self) -> Vec<&str> {
        match self {
            OperatorKind::FileSource { path, .. } => vec![path],
            other => other.module_paths(),
        }
    }

    /// Every path of [`OperatorKind::artifact_paths`] (a module as often as it is named),
    /// to point them at the taskmanager's copies.
    pub fn artifact_paths_mut(&mut self) -> Vec<&mut String> {
        match self {
            OperatorKind::FileSource { path, .. } => vec![path],
            OperatorKind::WasmMap { call }
            | OperatorKind::WasmFlatMap { call }
            | OperatorKind::WasmProcess { call, .. } => vec![&mut call.module],
            OperatorKind::Map { fields, .. } => {
                fields.iter_mut().flat_map(|f| f.expr.wasm.iter_mut().map(|w| &mut w.module)).collect()
            }
            OperatorKind::Filter { predicate, .. } => predicate.wasm.iter_mut().map(|w| &mut w.module).collect(),
            _ => Vec::new(),
        }
    }

    /// For a source: whether it ends by itself (`None` for other operators).
    pub fn is_bounded_source(&self) -> Option<bool> {
        match self {
            OperatorKind::Sequence { to, .. } => Some(to.is_some()),
            OperatorKind::Datagen { rows, .. } => Some(rows.is_some()),
            OperatorKind::FileSource { .. } => Some(true),
            OperatorKind::Socket { .. } => Some(false),
            OperatorKind::KafkaSource(spec) => Some(spec.bounded != BoundedMode::Unbounded),
            _ => None,
        }
    }
}

/// One operator of a validated job (and of a job vertex's chain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorSpec {
    pub id: String,
    /// The display name (the id unless the file gives a `name`).
    pub name: String,
    pub parallelism: u32,
    pub kind: OperatorKind,
    /// The schema of its input records (`None` for sources).
    pub input_schema: Option<Schema>,
    /// The schema of its output records (`None` for sinks).
    pub output_schema: Option<Schema>,
}

impl OperatorSpec {
    /// The name shown in vertex names: `Source: x` for sources, `Sink: x` for sinks.
    pub fn display_name(&self) -> String {
        match self.kind.role() {
            Role::Source => format!("Source: {}", self.name),
            Role::Sink => format!("Sink: {}", self.name),
            Role::Transform => self.name.clone(),
        }
    }
}

/// Checks the parameters of one operator of type `ty`. `inputs` are the input operator
/// ids with their output schemas, or `None` when some input's schema is unknown (then
/// field references are not checked). Problems are appended to `problems`. The kind and
/// the output schema come back whenever the parameters they need are valid, even if
/// another is not (an unknown parameter, say), so that checks downstream can go on.
pub fn check_operator(
    ty: &OperatorType,
    params: &[(String, DocValue)],
    inputs: Option<&[(&str, &Schema)]>,
    functions: &ScalarFunctions,
    problems: &mut Vec<String>,
) -> Option<(OperatorKind, Option<Schema>)> {
    let mut p = Params::new(params, ty.params, format!("parameters of {}", ty.name));
    let input = inputs.and_then(|i| i.first().map(|(_, s)| *s));
    let result = match ty.name {
        "source.sequence" => sequence(&mut p),
        "source.datagen" => datagen(&mut p),
        "source.file" => file_source(&mut p),
        "source.socket" => socket(&mut p),
        "source.kafka" => kafka::source(&mut p),
        "map" => map(&mut p, input, functions),
        "filter" => filter(&mut p, input, functions),
        "flat_map.split" => split(&mut p, input),
        "union" => union(&mut p, inputs),
        "key_by" => p.key_fields("key", input).map(|key| (OperatorKind::KeyBy { key }, input.cloned())),
        "aggregate" => aggregate(&mut p, input),
        "window" => window(&mut p, input),
        "map.wasm" => wasm(&mut p, input, ty.name),
        "flat_map.wasm" => wasm(&mut p, input, ty.name),
        "process.wasm" => wasm(&mut p, input, ty.name),
        "fail" => fail(&mut p, input),
        "sink.print" => Some((OperatorKind::PrintSink, None)),
        "sink.file" => {
            let path = p.string("path", true);
            let format = p.format("format");
            Some((OperatorKind::FileSink { path: path?, format: format? }, None))
        }
        "sink.blackhole" => {
            let rate = p.rate("rate");
            Some((OperatorKind::BlackholeSink { rate: rate? }, None))
        }
        "sink.kafka" => kafka::sink(&mut p, input),
        other => {
            p.problem(format!("unknown operator type '{other}'"));
            None
        }
    };
    p.finish(problems);
    // Without input schemas, a transform's output cannot be known.
    let schema_known = inputs.is_some() || ty.role != Role::Transform;
    result.filter(|_| schema_known)
}

/// Reads parameters, remembering which were used so that the rest can be reported.
struct Params<'a> {
    entries: &'a [(String, DocValue)],
    known: &'static [&'static str],
    /// "parameters of map", "parameters of the random_int generator"
    what: String,
    /// Prefix of every message ("" or "field 'x': ").
    context: String,
    problems: Vec<String>,
}

impl<'a> Params<'a> {
    fn new(entries: &'a [(String, DocValue)], known: &'static [&'static str], what: String) -> Self {
        Self { entries, known, what, context: String::new(), problems: Vec::new() }
    }

    fn problem(&mut self, message: String) {
        self.problems.push(format!("{}{message}", self.context));
    }

    /// Appends the problems (and one per unknown parameter); true if there were none.
    fn finish(mut self, problems: &mut Vec<String>) -> bool {
        for (key, _) in self.entries {
            let prefixed = self.known.iter().any(|k| k.strip_suffix('*').is_some_and(|prefix| key.starts_with(prefix)));
            if !self.known.contains(&key.as_str()) && !prefixed {
                let known = if self.known.is_empty() {
                    format!("{} takes none", self.what.trim_start_matches("parameters of "))
                } else {
                    format!("{}: {}", self.what, self.known.join(", "))
                };
                self.problems.push(format!("{}unknown parameter '{key}' ({known})", self.context));
            }
        }
        let ok = self.problems.is_empty();
        problems.append(&mut self.problems);
        ok
    }

    /// The value of `key`; a `null` counts as absent. Reports a missing required one.
    fn get(&mut self, key: &str, required: bool) -> Option<&'a DocValue> {
        let value = self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v).filter(|v| **v != DocValue::Null);
        if value.is_none() && required {
            self.problem(format!("missing required parameter '{key}'"));
        }
        value
    }

    fn typed<T>(&mut self, key: &str, required: bool, what: &str, read: impl Fn(&DocValue) -> Option<T>) -> Option<T> {
        let value = self.get(key, required)?;
        let typed = read(value);
        if typed.is_none() {
            self.problem(format!("parameter '{key}' must be {what}, got {}", value.describe()));
        }
        typed
    }

    fn string(&mut self, key: &str, required: bool) -> Option<String> {
        let s = self.typed(key, required, "a string", |v| v.as_str().map(str::to_owned))?;
        if s.is_empty() {
            self.problem(format!("parameter '{key}' must not be empty"));
            return None;
        }
        Some(s)
    }

    fn int(&mut self, key: &str, required: bool) -> Option<i64> {
        self.typed(key, required, "an integer", DocValue::as_i64)
    }

    /// A non-negative integer.
    fn count(&mut self, key: &str, required: bool) -> Option<u64> {
        let v = self.int(key, required)?;
        let n = u64::try_from(v).ok();
        if n.is_none() {
            self.problem(format!("parameter '{key}' must not be negative, got {v}"));
        }
        n
    }

    /// A number above zero (records per second).
    fn rate(&mut self, key: &str) -> Option<Option<f64>> {
        match self.typed(key, false, "a number", DocValue::as_f64) {
            None if self.get(key, false).is_none() => Some(None),
            None => None,
            Some(r) if r > 0.0 && r.is_finite() => Some(Some(r)),
            Some(r) => {
                self.problem(format!("parameter '{key}' must be a positive number, got {r}"));
                None
            }
        }
    }

    /// `rate_until_checkpoints`: an integer of at least 1, only with a `rate` (`rate` is the
    /// parsed `rate` parameter, `None` when absent or invalid).
    fn rate_until_checkpoints(&mut self, rate: Option<f64>) -> Option<Option<u64>> {
        const KEY: &str = "rate_until_checkpoints";
        if self.get(KEY, false).is_none() {
            return Some(None);
        }
        let n = self.int(KEY, false)?;
        if n < 1 {
            self.problem(format!("parameter '{KEY}' must be at least 1, got {n}"));
            return None;
        }
        if rate.is_none() {
            if self.get("rate", false).is_none() {
                self.problem(format!("'{KEY}' requires 'rate'"));
            }
            return None;
        }
        Some(Some(n as u64))
    }

    /// A duration such as `"1 s"` or `"500 ms"` (a bare integer is milliseconds).
    fn duration(&mut self, key: &str, required: bool) -> Option<Duration> {
        let value = self.get(key, required)?;
        let parsed = match value {
            DocValue::String(s) => parse_duration(s),
            DocValue::Int(ms) if *ms >= 0 => Ok(Duration::from_millis(ms.unsigned_abs())),
            other => Err(format!("a duration such as \"1 s\" or \"500 ms\", got {}", other.describe())),
        };
        match parsed {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(format!("parameter '{key}': {e}"));
                None
            }
        }
    }

    fn format(&mut self, key: &str) -> Option<FileFormat> {
        match self.get(key, false) {
            None => Some(FileFormat::Text),
            Some(DocValue::String(s)) if s == "text" => Some(FileFormat::Text),
            Some(DocValue::String(s)) if s == "json" => Some(FileFormat::Json),
            Some(other) => {
                self.problem(format!("parameter '{key}' must be \"text\" or \"json\", got {}", other.describe()));
                None
            }
        }
    }

    fn map(&mut self, key: &str) -> Option<&'a [(String, DocValue)]> {
        let value = self.get(key, true)?;
        let Some(entries) = value.as_map() else {
            self.problem(format!("parameter '{key}' must be an object, got {}", value.describe()));
            return None;
        };
        if entries.is_empty() {
            self.problem(format!("parameter '{key}' must not be empty"));
            return None;
        }
        Some(entries)
    }

    /// A list of input field names (a single string is a list of one).
    fn key_fields(&mut self, key: &str, input: Option<&Schema>) -> Option<Vec<String>> {
        let names: Vec<String> = self.typed(key, true, "a list of field names", |v| match v {
            DocValue::String(s) => Some(vec![s.clone()]),
            DocValue::List(items) => items.iter().map(|i| i.as_str().map(str::to_owned)).collect(),
            _ => None,
        })?;
        if names.is_empty() {
            self.problem(format!("parameter '{key}' must name at least one field"));
            return None;
        }
        let mut ok = true;
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                self.problem(format!("field '{name}' appears twice in '{key}'"));
                ok = false;
            } else if let Some(schema) = input {
                ok &= self.require_field(schema, name).is_some();
            }
        }
        ok.then_some(names)
    }

    fn require_field<'s>(&mut self, schema: &'s Schema, name: &str) -> Option<&'s Field> {
        let field = schema.field(name);
        if field.is_none() {
            self.problem(format!("unknown field '{name}' (input fields: {})", schema.names_list()));
        }
        field
    }
}

fn sequence(p: &mut Params) -> Option<(OperatorKind, Option<Schema>)> {
    let from = p.int("from", false);
    let to = p.int("to", false);
    let rate = p.rate("rate");
    let until = p.rate_until_checkpoints(rate.flatten());
    if (p.get("from", false).is_some() && from.is_none()) || (p.get("to", false).is_some() && to.is_none()) {
        return None;
    }
    let from = from.unwrap_or(0);
    if let Some(to) = to.filter(|to| *to < from) {
        p.problem(format!("'to' ({to}) is less than 'from' ({from})"));
        return None;
    }
    let schema = Schema::new(vec![Field::new("n", FieldType::Int)]);
    Some((OperatorKind::Sequence { from, to, rate: rate?, rate_until_checkpoints: until? }, Some(schema)))
}

fn datagen(p: &mut Params) -> Option<(OperatorKind, Option<Schema>)> {
    let seed = if p.get("seed", false).is_some() { p.int("seed", false) } else { Some(0) };
    let rows = if p.get("rows", false).is_some() { p.count("rows", false).map(Some) } else { Some(None) };
    let rate = p.rate("rate");
    let until = p.rate_until_checkpoints(rate.flatten());
    let entries = p.map("fields")?;
    let mut fields = Vec::new();
    let mut ok = true;
    for (name, spec) in entries {
        match generator(name, spec) {
            Ok(generator) => fields.push(GeneratedField { name: name.clone(), generator }),
            Err(mut problems) => {
                p.problems.append(&mut problems);
                ok = false;
            }
        }
    }
    let (seed, rows, rate, rate_until_checkpoints) = (seed?, rows?, rate?, until?);
    if !ok {
        return None;
    }
    let schema = Schema::new(fields.iter().map(|f| Field::new(&f.name, f.generator.field_type())).collect());
    Some((OperatorKind::Datagen { fields, seed, rows, rate, rate_until_checkpoints }, Some(schema)))
}

const GENERATOR_KINDS: &str = "sequence, random_int, random_float, random_string";

fn generator(field: &str, spec: &DocValue) -> Result<Generator, Vec<String>> {
    let context = format!("field '{field}': ");
    let Some(entries) = spec.as_map() else {
        return Err(vec![format!(
            "{context}a generator must be an object such as {{\"kind\": \"random_int\", \"min\": 0, \"max\": 9}}, got {}",
            spec.describe()
        )]);
    };
    let kind = entries.iter().find(|(k, _)| k == "kind").and_then(|(_, v)| v.as_str());
    let params: &'static [&'static str] = match kind {
        Some("sequence") => &["kind", "start", "end"],
        Some("random_int") | Some("random_float") => &["kind", "min", "max"],
        Some("random_string") => &["kind", "length"],
        Some(other) => {
            return Err(vec![format!("{context}unknown generator kind '{other}' (known: {GENERATOR_KINDS})")])
        }
        None => return Err(vec![format!("{context}missing generator 'kind' (known: {GENERATOR_KINDS})")]),
    };
    let kind = kind.unwrap_or_default();
    let mut p = Params::new(entries, params, format!("parameters of the {kind} generator"));
    p.context = context;
    let generator = match kind {
        "sequence" => {
            let (start, end) = (p.int("start", true), p.int("end", true));
            match (start, end) {
                (Some(start), Some(end)) if start <= end => Some(Generator::Sequence { start, end }),
                (Some(start), Some(end)) => {
                    p.problem(format!("'end' ({end}) is less than 'start' ({start})"));
                    None
                }
                _ => None,
            }
        }
        "random_int" => match (p.int("min", true), p.int("max", true)) {
            (Some(min), Some(max)) if min <= max => Some(Generator::RandomInt { min, max }),
            (Some(min), Some(max)) => {
                p.problem(format!("'max' ({max}) is less than 'min' ({min})"));
                None
            }
            _ => None,
        },
        "random_float" => {
            let min = p.typed("min", true, "a number", DocValue::as_f64);
            let max = p.typed("max", true, "a number", DocValue::as_f64);
            match (min, max) {
                (Some(min), Some(max)) if min < max => Some(Generator::RandomFloat { min, max }),
                (Some(min), Some(max)) => {
                    p.problem(format!("'max' ({max}) must be greater than 'min' ({min})"));
                    None
                }
                _ => None,
            }
        }
        _ => p.count("length", true).and_then(|length| match u32::try_from(length) {
            Ok(length) => Some(Generator::RandomString { length }),
            Err(_) => {
                p.problem(format!("'length' {length} is too large"));
                None
            }
        }),
    };
    let mut problems = Vec::new();
    match (p.finish(&mut problems), generator) {
        (true, Some(g)) => Ok(g),
        _ => Err(problems),
    }
}

fn file_source(p: &mut Params) -> Option<(OperatorKind, Option<Schema>)> {
    let path = p.string("path", true);
    let format = p.format("format")?;
    let schema = match format {
        FileFormat::Text => {
            if p.get("schema", false).is_some() {
                p.problem("parameter 'schema' is only used with format \"json\"".to_owned());
                return None;
            }
            None
        }
        FileFormat::Json => {
            if p.get("schema", false).is_none() {
                p.problem("format \"json\" needs a 'schema': an object of field name to type".to_owned());
                return None;
            }
            Some(schema_param(p)?)
        }
    };
    let output = match format {
        FileFormat::Text => Schema::new(vec![Field::new("line", FieldType::String)]),
        FileFormat::Json => schema.clone()?,
    };
    Some((OperatorKind::FileSource { path: path?, format, schema }, Some(output)))
}

/// `timestamp_field` (required, an integer field of `input`) and `max_out_of_orderness`
/// (default 0) of an event-time operator.
fn event_time(p: &mut Params, input: Option<&Schema>) -> (Option<String>, Option<Duration>) {
    let field = p.string("timestamp_field", true);
    if let (Some(field), Some(input)) = (&field, input) {
        match p.require_field(input, field).map(|f| f.ty) {
            Some(FieldType::Int) | None => {}
            Some(other) => p.problem(format!(
                "timestamp field '{field}' has type {other}; it must be an integer (epoch milliseconds)"
            )),
        }
    }
    let lateness = if p.get("max_out_of_orderness", false).is_some() {
        p.duration("max_out_of_orderness", false)
    } else {
        Some(Duration::ZERO)
    };
    (field, lateness)
}

/// A required `schema` parameter: a non-empty object of field name to type; every field is nullable.
fn schema_param(p: &mut Params) -> Option<Schema> {
    let entries = p.get("schema", true).map(|v| v.as_map())?;
    let Some(entries) = entries.filter(|e| !e.is_empty()) else {
        p.problem("parameter 'schema' must be a non-empty object of field name to type".to_owned());
        return None;
    };
    let mut fields = Vec::new();
    for (name, ty) in entries {
        match ty.as_str().and_then(FieldType::from_name) {
            Some(ty) => fields.push(Field::nullable(name, ty)),
            None => p.problem(format!(
                "schema field '{name}': unknown type {} (known: {})",
                ty.describe(),
                FieldType::ALL.map(FieldType::name).join(", ")
            )),
        }
    }
    (fields.len() == entries.len()).then_some(Schema::new(fields))
}

/// The `module` parameter: the relative path of a `.wasm` or `.wat` file of the job package.
fn module_param(p: &mut Params) -> Option<String> {
    p.string("module", true).filter(|m| {
        let ok = super::package::safe_relative(m).is_some_and(|r| r == *m) && (m.ends_with(".wasm") || m.ends_with(".wat"));
        if !ok {
            p.problem(format!(
                "'module' '{m}' must be the relative path of a .wasm or .wat file of the job package (plain segments, no '.' or '..')"
            ));
        }
        ok
    })
}

/// The optional `params` of a module: `name: value` pairs for `flint_open`.
fn open_params(p: &mut Params) -> Option<Vec<(String, String)>> {
    match p.get("params", false) {
        None => Some(Vec::new()),
        Some(value) => match value.as_map() {
            None => {
                p.problem(format!("parameter 'params' must be an object of name to value, got {}", value.describe()));
                None
            }
            Some(entries) => {
                let mut params = Vec::new();
                for (name, value) in entries {
                    let text = match value {
                        DocValue::String(s) => Some(s.clone()),
                        DocValue::Int(i) => Some(i.to_string()),
                        DocValue::Float(f) => Some(f.to_string()),
                        DocValue::Bool(b) => Some(b.to_string()),
                        _ => None,
                    };
                    match text {
                        Some(text) if !name.is_empty() && !name.contains(['=', '\n']) && !text.contains('\n') => {
                            params.push((name.clone(), text))
                        }
                        _ => p.problem(format!(
                            "params '{name}': a name without '=' or line breaks and a single-line string, number or boolean"
                        )),
                    }
                }
                (params.len() == entries.len()).then_some(params)
            }
        },
    }
}

/// Keys of a module declaration under `functions`.
const FUNCTION_MODULE_FIELDS: &[&str] = &["module", "params", "exports"];
/// Keys of an export declaration.
const FUNCTION_EXPORT_FIELDS: &[&str] = &["args", "returns"];

/// Whether `name` may be a module or export name in `wasm::<module>::<export>`.
fn plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// Reads the job file's `functions`: per module name, the module of the job package, its
/// `flint_open` parameters and its exports with argument and result types. Returns the
/// functions by their name in expressions (`wasm::<module>::<export>`); problems go to
/// `problems`, naming the declaration.
pub fn scalar_functions(decls: &[(String, DocValue)], problems: &mut Vec<String>) -> ScalarFunctions {
    let mut out = ScalarFunctions::new();
    let types = || FieldType::ALL.map(FieldType::name).join(", ");
    for (module_name, decl) in decls {
        let what = format!("function module '{module_name}'");
        if !plain_identifier(module_name) {
            problems.push(format!(
                "{what}: a module name is a letter or '_' followed by letters, digits or '_' (at most 128)"
            ));
            continue;
        }
        let Some(entries) = decl.as_map() else {
            problems.push(format!(
                "{what} must be an object with 'module', 'exports' and optional 'params', got {}",
                decl.describe()
            ));
            continue;
        };
        let mut p = Params::new(entries, FUNCTION_MODULE_FIELDS, format!("parameters of {what}"));
        p.context = format!("{what}: ");
        let module = module_param(&mut p);
        let params = open_params(&mut p);
        let exports = p.map("exports");
        let mut declared = Vec::new();
        if let Some(exports) = exports {
            if exports.is_empty() {
                p.problem("'exports' must declare at least one function".to_owned());
            }
            for (export, sig) in exports {
                if !plain_identifier(export) || export.starts_with("flint_") {
                    p.problem(format!(
                        "export '{export}': a letter or '_' followed by letters, digits or '_', not starting with 'flint_'"
                    ));
                    continue;
                }
                let Some(sig) = sig.as_map() else {
                    p.problem(format!(
                        "export '{export}' must be an object with 'args' (a list of types) and 'returns' (a type), got {}",
                        sig.describe()
                    ));
                    continue;
                };
                let mut q = Params::new(sig, FUNCTION_EXPORT_FIELDS, format!("parameters of export '{export}'"));
                q.context = format!("{what}: export '{export}': ");
                let args = q.get("args", true).and_then(|v| match v.as_list() {
                    Some(items) => {
                        let typed: Vec<Option<FieldType>> = items
                            .iter()
                            .map(|t| t.as_str().and_then(FieldType::from_name).filter(|t| *t != FieldType::Null))
                            .collect();
                        if typed.iter().all(Option::is_some) {
                            Some(typed.into_iter().flatten().collect::<Vec<_>>())
                        } else {
                            q.problem(format!(
                                "'args' must be a list of types (known: {}; not null), got {v}",
                                types()
                            ));
                            None
                        }
                    }
                    None => {
                        q.problem(format!("'args' must be a list of types, got {}", v.describe()));
                        None
                    }
                });
                let returns = q.get("returns", true).and_then(|v| {
                    let ty = v.as_str().and_then(FieldType::from_name).filter(|t| *t != FieldType::Null);
                    if ty.is_none() {
                        q.problem(format!("'returns' must be a type (known: {}; not null), got {v}", types()));
                    }
                    ty
                });
                let mut found = Vec::new();
                q.finish(&mut found);
                p.problems.extend(found);
                if let (Some(args), Some(returns)) = (args, returns) {
                    declared.push((export.clone(), args, returns));
                }
            }
        }
        let ok = p.finish(problems);
        let (Some(module), Some(params), true) = (module, params, ok) else { continue };
        for (export, args, returns) in declared {
            let name = format!("{WASM_FUNCTION_PREFIX}{module_name}::{export}");
            out.insert(
                name.clone(),
                WasmFunction { name, module: module.clone(), export, args, returns, params: params.clone() },
            );
        }
    }
    out
}

/// `map.wasm`, `flat_map.wasm` and `process.wasm`: a module of the job package, the export
/// to call (default: the operator's kind), the output schema and the `flint_open` parameters.
fn wasm(p: &mut Params, input: Option<&Schema>, op: &str) -> Option<(OperatorKind, Option<Schema>)> {
    let keyed = op == "process.wasm";
    let key = if keyed { Some(p.key_fields("key", input)) } else { None };
    let module = module_param(p);
    let default_function = op.trim_end_matches(".wasm");
    let export_name = |p: &mut Params, key: &str, default: &str| -> Option<String> {
        let name = if p.get(key, false).is_some() { p.string(key, false)? } else { default.to_string() };
        if name.is_empty() || name.len() > 256 || name.starts_with("flint_") {
            p.problem(format!(
                "'{key}' must name an export of 1 to 256 bytes, not starting with 'flint_', got '{name}'"
            ));
            return None;
        }
        Some(name)
    };
    let function = export_name(p, "function", default_function);
    let timer_function = if keyed { export_name(p, "timer_function", "on_timer").map(Some) } else { Some(None) };
    let params = open_params(p);
    let event_time = if !keyed {
        Some(None)
    } else if p.get("timestamp_field", false).is_some() {
        let (field, lateness) = event_time(p, input);
        field.zip(lateness).map(Some)
    } else if p.get("max_out_of_orderness", false).is_some() {
        p.problem("parameter 'max_out_of_orderness' needs a 'timestamp_field'".to_owned());
        None
    } else {
        Some(None)
    };
    let schema = schema_param(p);
    let call = WasmCall { module: module?, function: function?, timer_function: timer_function?, params: params? };
    let schema = schema?;
    input?;
    let kind = match op {
        "map.wasm" => OperatorKind::WasmMap { call },
        "flat_map.wasm" => OperatorKind::WasmFlatMap { call },
        _ => OperatorKind::WasmProcess { key: key.flatten()?, call, event_time: event_time? },
    };
    Some((kind, Some(schema)))
}

fn socket(p: &mut Params) -> Option<(OperatorKind, Option<Schema>)> {
    let host = p.string("host", true);
    let port = p.int("port", true).and_then(|port| match u16::try_from(port) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            p.problem(format!("parameter 'port' must be between 1 and 65535, got {port}"));
            None
        }
    });
    let schema = Schema::new(vec![Field::new("line", FieldType::String)]);
    Some((OperatorKind::Socket { host: host?, port: port? }, Some(schema)))
}

/// The optional `counter` of `map` and `filter`: an accumulator name, a non-empty string.
fn counter(p: &mut Params) -> Option<Option<String>> {
    if p.get("counter", false).is_some() {
        p.string("counter", false).map(Some)
    } else {
        Some(None)
    }
}

fn map(p: &mut Params, input: Option<&Schema>, functions: &ScalarFunctions) -> Option<(OperatorKind, Option<Schema>)> {
    let keep_input = if p.get("keep_input", false).is_some() {
        p.typed("keep_input", false, "a boolean", DocValue::as_bool)
    } else {
        Some(false)
    };
    let counter = counter(p);
    let entries = p.map("fields")?;
    let mut fields = Vec::new();
    for (name, source) in entries {
        let Some(source) = source.as_str() else {
            p.problem(format!("field '{name}': the expression must be a string, got {}", source.describe()));
            continue;
        };
        let Some(input) = input else { continue };
        match CompiledExpr::compile_with(source, input, functions) {
            Ok(expr) => fields.push(MapField { name: name.clone(), expr }),
            Err(problems) => problems.into_iter().for_each(|m| p.problem(m)),
        }
    }
    let (keep_input, counter, input) = (keep_input?, counter?, input?);
    if fields.len() != entries.len() {
        return None;
    }
    let mut schema = if keep_input { input.clone() } else { Schema::default() };
    for f in &fields {
        schema.upsert(Field { name: f.name.clone(), ty: f.expr.ty, nullable: f.expr.nullable(input) });
    }
    Some((OperatorKind::Map { fields, keep_input, counter }, Some(schema)))
}

fn filter(
    p: &mut Params,
    input: Option<&Schema>,
    functions: &ScalarFunctions,
) -> Option<(OperatorKind, Option<Schema>)> {
    let counter = counter(p);
    let source = p.typed("predicate", true, "a string", |v| v.as_str().map(str::to_owned))?;
    let input = input?;
    let predicate = match CompiledExpr::compile_with(&source, input, functions) {
        Ok(predicate) if predicate.ty == FieldType::Bool => Some(predicate),
        Ok(predicate) => {
            p.problem(format!("the predicate '{source}' has type {}, not boolean", predicate.ty));
            None
        }
        Err(problems) => {
            problems.into_iter().for_each(|m| p.problem(m));
            None
        }
    };
    Some((OperatorKind::Filter { predicate: predicate?, counter: counter? }, Some(input.clone())))
}

fn split(p: &mut Params, input: Option<&Schema>) -> Option<(OperatorKind, Option<Schema>)> {
    let field = p.string("field", true);
    let separator = if p.get("separator", false).is_some() { p.string("separator", false) } else { Some(" ".into()) };
    let output = if p.get("as", false).is_some() { p.string("as", false) } else { Some("word".into()) };
    let (field, separator, output) = (field?, separator?, output?);
    // The output does not depend on the input, so a bad field does not hide later problems.
    if let Some(ty) = input.and_then(|input| p.require_field(input, &field)).map(|f| f.ty) {
        if ty != FieldType::String {
            p.problem(format!("field '{field}' has type {ty}; flat_map.split needs a string field"));
        }
    }
    let schema = Schema::new(vec![Field::new(&output, FieldType::String)]);
    Some((OperatorKind::Split { field, separator, output }, Some(schema)))
}

fn union(p: &mut Params, inputs: Option<&[(&str, &Schema)]>) -> Option<(OperatorKind, Option<Schema>)> {
    let inputs = inputs?;
    let (first_id, first) = *inputs.first()?;
    let mut schema = first.clone();
    for (id, other) in &inputs[1..] {
        if !first.same_shape(other) {
            p.problem(format!("union inputs have different schemas: '{first_id}' has {first}, '{id}' has {other}"));
            return None;
        }
        for (f, o) in schema.fields.iter_mut().zip(&other.fields) {
            f.nullable |= o.nullable;
        }
    }
    Some((OperatorKind::Union, Some(schema)))
}

/// Reads `aggs`: output name to `count()`, `sum(f)`, `min(f)`, `max(f)` or `avg(f)`.
fn aggs(p: &mut Params, input: Option<&Schema>) -> Option<Vec<AggSpec>> {
    let entries = p.map("aggs")?;
    let mut aggs = Vec::new();
    for (name, spec) in entries {
        let text = spec.as_str().unwrap_or_default();
        let call = parse_simple_call(text).and_then(|(func, args)| Some((AggFunc::from_name(&func)?, args)));
        let (func, field) = match call {
            Some((AggFunc::Count, args)) if args.is_empty() => (AggFunc::Count, None),
            Some((func, args)) if func != AggFunc::Count && args.len() == 1 => (func, args.into_iter().next()),
            _ => {
                p.problem(format!(
                    "aggregate '{name}': invalid {}; expected count(), sum(field), min(field), max(field) or avg(field)",
                    spec.describe()
                ));
                continue;
            }
        };
        let Some(input) = input else { continue };
        let ty = match &field {
            None => FieldType::Int,
            Some(f) => {
                let Some(field_ty) = input.field(f).map(|f| f.ty) else {
                    p.problem(format!(
                        "unknown field '{f}' in aggregate '{text}' (input fields: {})",
                        input.names_list()
                    ));
                    continue;
                };
                let ok = match func {
                    AggFunc::Sum | AggFunc::Avg => field_ty.is_numeric(),
                    _ => field_ty.is_numeric() || field_ty == FieldType::String,
                };
                if !ok {
                    p.problem(format!("aggregate '{name}': cannot apply {text} to a field of type {field_ty}"));
                    continue;
                }
                match func {
                    AggFunc::Avg => FieldType::Float,
                    _ => field_ty,
                }
            }
        };
        aggs.push(AggSpec { name: name.clone(), func, field, ty });
    }
    (aggs.len() == entries.len()).then_some(aggs)
}

/// The key fields of `input`, followed by `extra` and the aggregates; names must be unique.
fn keyed_output(p: &mut Params, input: &Schema, key: &[String], extra: &[Field], aggs: &[AggSpec]) -> Option<Schema> {
    let mut fields: Vec<Field> = key.iter().filter_map(|k| input.field(k).cloned()).collect();
    fields.extend(extra.iter().cloned());
    let mut ok = true;
    for agg in aggs {
        if fields.iter().any(|f| f.name == agg.name) {
            p.problem(format!("aggregate '{}' has the same name as another output field", agg.name));
            ok = false;
        }
        fields.push(Field { name: agg.name.clone(), ty: agg.ty, nullable: false });
    }
    ok.then(|| Schema::new(fields))
}

fn aggregate(p: &mut Params, input: Option<&Schema>) -> Option<(OperatorKind, Option<Schema>)> {
    let key = p.key_fields("key", input);
    let aggs = aggs(p, input);
    let (key, aggs, input) = (key?, aggs?, input?);
    let schema = keyed_output(p, input, &key, &[], &aggs)?;
    Some((OperatorKind::Aggregate { key, aggs }, Some(schema)))
}

fn window(p: &mut Params, input: Option<&Schema>) -> Option<(OperatorKind, Option<Schema>)> {
    let key = p.key_fields("key", input);
    let size = p.duration("size", true);
    let slide = if p.get("slide", false).is_some() { p.duration("slide", false).map(Some) } else { Some(None) };
    for (name, d) in [("size", size), ("slide", slide.flatten())] {
        if d == Some(Duration::ZERO) {
            p.problem(format!("parameter '{name}' must be longer than 0 ms"));
        }
    }
    let time = match p.get("time", false).map(|t| t.as_str()) {
        None | Some(Some("processing")) => {
            for key in ["timestamp_field", "max_out_of_orderness"] {
                if p.get(key, false).is_some() {
                    p.problem(format!("parameter '{key}' is only used with time \"event\""));
                }
            }
            Some(WindowTime::Processing)
        }
        Some(Some("event")) => {
            let (field, lateness) = event_time(p, input);
            Some(WindowTime::Event { timestamp_field: field?, max_out_of_orderness: lateness? })
        }
        Some(_) => {
            let got = p.get("time", false).map(DocValue::describe).unwrap_or_default();
            p.problem(format!("parameter 'time' must be \"processing\" or \"event\", got {got}"));
            None
        }
    };
    let aggs = aggs(p, input);
    let (key, size, slide, time, aggs, input) = (key?, size?, slide?, time?, aggs?, input?);
    if !p.problems.is_empty() {
        return None;
    }
    let bounds = [Field::new("window_start", FieldType::Int), Field::new("window_end", FieldType::Int)];
    let schema = keyed_output(p, input, &key, &bounds, &aggs)?;
    Some((OperatorKind::Window { key, size, slide, time, aggs }, Some(schema)))
}

fn fail(p: &mut Params, input: Option<&Schema>) -> Option<(OperatorKind, Option<Schema>)> {
    let subtask = if p.get("subtask", false).is_some() { p.count("subtask", false) } else { Some(0) };
    let after = p.count("after", true);
    let subtask = match u32::try_from(subtask?) {
        Ok(s) => s,
        Err(_) => {
            p.problem("parameter 'subtask' is too large".to_owned());
            return None;
        }
    };
    Some((OperatorKind::Fail { subtask, after: after? }, input.cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::spec::parse_doc;

    fn params(json: &str) -> Vec<(String, DocValue)> {
        parse_doc(json).unwrap().as_map().unwrap().to_vec()
    }

    pub(super) fn check(op: &str, json: &str, input: &Schema) -> Result<(OperatorKind, Option<Schema>), Vec<String>> {
        let mut problems = Vec::new();
        let inputs = [("up", input)];
        let result = check_operator(
            operator_type(op).unwrap(),
            &params(json),
            Some(&inputs),
            &Default::default(),
            &mut problems,
        );
        match result {
            Some(r) if problems.is_empty() => Ok(r),
            _ => Err(problems),
        }
    }

    pub(super) fn words() -> Schema {
        Schema::new(vec![Field::new("word", FieldType::String), Field::new("n", FieldType::Int)])
    }

    #[test]
    fn every_type_is_listed_once() {
        for (i, t) in OPERATOR_TYPES.iter().enumerate() {
            assert!(OPERATOR_TYPES[..i].iter().all(|o| o.name != t.name), "{} listed twice", t.name);
            assert_eq!(t.keyed, matches!(t.name, "key_by" | "aggregate" | "window" | "process.wasm"));
        }
        assert!(operator_type_names().starts_with("source.sequence, source.datagen"));
    }

    #[test]
    fn datagen_output_follows_the_generators() {
        let (kind, schema) = check(
            "source.datagen",
            r#"{"fields": {"id": {"kind": "sequence", "start": 1, "end": 9}, "v": {"kind": "random_float", "min": 0, "max": 1},
                "s": {"kind": "random_string", "length": 4}}, "rows": 100}"#,
            &Schema::default(),
        )
        .unwrap();
        assert_eq!(schema.unwrap().to_string(), "(id: integer, v: float, s: string)");
        assert_eq!(kind.is_bounded_source(), Some(true));
    }

    #[test]
    fn datagen_generator_problems() {
        let problems = check(
            "source.datagen",
            r#"{"fields": {"a": {"kind": "seq"}, "b": {"kind": "random_int", "min": 5, "max": 1},
                "c": {"kind": "random_string", "length": 3, "colour": 1}, "d": 3}}"#,
            &Schema::default(),
        )
        .unwrap_err();
        assert_eq!(
            problems,
            vec![
                "field 'a': unknown generator kind 'seq' (known: sequence, random_int, random_float, random_string)",
                "field 'b': 'max' (1) is less than 'min' (5)",
                "field 'c': unknown parameter 'colour' (parameters of the random_string generator: kind, length)",
                "field 'd': a generator must be an object such as {\"kind\": \"random_int\", \"min\": 0, \"max\": 9}, got integer 3",
            ]
        );
    }

    #[test]
    fn map_infers_and_keeps_input() {
        let (_, schema) =
            check("map", r#"{"fields": {"n": "n * 2.0", "len": "len(word)"}, "keep_input": true}"#, &words()).unwrap();
        assert_eq!(schema.unwrap().to_string(), "(word: string, n: float, len: integer)");
        let (_, schema) = check("map", r#"{"fields": {"k": "word + \"!\""}}"#, &words()).unwrap();
        assert_eq!(schema.unwrap().to_string(), "(k: string)");
    }

    #[test]
    fn map_and_filter_take_an_optional_counter() {
        let (kind, _) = check("map", r#"{"fields": {"k": "n"}, "counter": "mapped"}"#, &words()).unwrap();
        assert!(matches!(kind, OperatorKind::Map { counter: Some(c), .. } if c == "mapped"));
        let (kind, _) = check("map", r#"{"fields": {"k": "n"}, "counter": null}"#, &words()).unwrap();
        assert!(matches!(kind, OperatorKind::Map { counter: None, .. }));
        let (kind, _) = check("filter", r#"{"predicate": "n > 1", "counter": "seen"}"#, &words()).unwrap();
        assert!(matches!(kind, OperatorKind::Filter { counter: Some(c), .. } if c == "seen"));
        let (kind, _) = check("filter", r#"{"predicate": "n > 1"}"#, &words()).unwrap();
        assert!(matches!(kind, OperatorKind::Filter { counter: None, .. }));
        let problems = check("map", r#"{"fields": {"k": "n"}, "counter": 3}"#, &words()).unwrap_err();
        assert_eq!(problems, vec!["parameter 'counter' must be a string, got integer 3"]);
        // Both problems are reported, not just the first.
        let problems = check("filter", r#"{"predicate": "n", "counter": ""}"#, &words()).unwrap_err();
        assert_eq!(
            problems,
            vec!["parameter 'counter' must not be empty", "the predicate 'n' has type integer, not boolean"]
        );
        // A spec serialized before the parameter existed still reads.
        let (kind, _) = check("filter", r#"{"predicate": "n > 1", "counter": "seen"}"#, &words()).unwrap();
        let mut json = serde_json::to_value(&kind).unwrap();
        assert!(json["filter"].as_object_mut().unwrap().remove("counter").is_some());
        let kind: OperatorKind = serde_json::from_value(json).unwrap();
        assert!(matches!(kind, OperatorKind::Filter { counter: None, .. }));
    }

    #[test]
    fn aggregate_output_types() {
        let input = Schema::new(vec![
            Field::new("k", FieldType::String),
            Field::new("i", FieldType::Int),
            Field::new("f", FieldType::Float),
        ]);
        let (_, schema) = check(
            "aggregate",
            r#"{"key": ["k"], "aggs": {"c": "count()", "si": "sum(i)", "sf": "sum(f)", "lo": "min(k)", "hi": "max(i)", "a": "avg(i)"}}"#,
            &input,
        )
        .unwrap();
        assert_eq!(
            schema.unwrap().to_string(),
            "(k: string, c: integer, si: integer, sf: float, lo: string, hi: integer, a: float)"
        );
        let problems =
            check("aggregate", r#"{"key": "k", "aggs": {"x": "sum(k)", "y": "median(i)", "k": "count()"}}"#, &input)
                .unwrap_err();
        assert_eq!(
            problems,
            vec![
                "aggregate 'x': cannot apply sum(k) to a field of type string",
                "aggregate 'y': invalid string \"median(i)\"; expected count(), sum(field), min(field), max(field) or avg(field)",
            ]
        );
        let problems = check("aggregate", r#"{"key": "k", "aggs": {"k": "count()"}}"#, &input).unwrap_err();
        assert_eq!(problems, vec!["aggregate 'k' has the same name as another output field"]);
    }

    #[test]
    fn window_outputs_bounds_and_checks_event_time() {
        let input = Schema::new(vec![Field::new("k", FieldType::Int), Field::new("ts", FieldType::Int)]);
        let (kind, schema) = check(
            "window",
            r#"{"key": ["k"], "size": "10 s", "slide": "5 s", "time": "event", "timestamp_field": "ts",
                "max_out_of_orderness": "200 ms", "aggs": {"c": "count()"}}"#,
            &input,
        )
        .unwrap();
        assert_eq!(schema.unwrap().to_string(), "(k: integer, window_start: integer, window_end: integer, c: integer)");
        let OperatorKind::Window { size, slide, time, .. } = kind else { panic!() };
        assert_eq!((size, slide), (Duration::from_secs(10), Some(Duration::from_secs(5))));
        assert_eq!(
            time,
            WindowTime::Event { timestamp_field: "ts".into(), max_out_of_orderness: Duration::from_millis(200) }
        );
        let problems = check(
            "window",
            r#"{"key": ["k"], "size": "ten", "time": "processing", "timestamp_field": "ts", "aggs": {"c": "count()"}}"#,
            &input,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("parameter 'size': "), "{problems:?}");
        assert_eq!(problems[1], "parameter 'timestamp_field' is only used with time \"event\"");
        let problems =
            check("window", r#"{"key": "k", "size": "1 s", "time": "event", "aggs": {"c": "count()"}}"#, &input)
                .unwrap_err();
        assert_eq!(problems, vec!["missing required parameter 'timestamp_field'"]);
    }

    #[test]
    fn file_source_formats() {
        let (_, schema) = check("source.file", r#"{"path": "/d"}"#, &Schema::default()).unwrap();
        assert_eq!(schema.unwrap().to_string(), "(line: string)");
        let (_, schema) = check(
            "source.file",
            r#"{"path": "/d", "format": "json", "schema": {"a": "integer", "b": "string"}}"#,
            &Schema::default(),
        )
        .unwrap();
        assert_eq!(schema.unwrap().to_string(), "(a: integer?, b: string?)");
        let problems = check("source.file", r#"{"path": "/d", "format": "json"}"#, &Schema::default()).unwrap_err();
        assert_eq!(problems, vec!["format \"json\" needs a 'schema': an object of field name to type"]);
        let problems =
            check("source.file", r#"{"path": "/d", "format": "json", "schema": {"a": "int"}}"#, &Schema::default())
                .unwrap_err();
        assert!(problems[0].starts_with("schema field 'a': unknown type string \"int\" (known: integer, float"));
    }

    #[test]
    fn parameter_type_problems() {
        let problems =
            check("source.sequence", r#"{"from": "0", "to": -5, "rate": 0}"#, &Schema::default()).unwrap_err();
        assert_eq!(
            problems,
            vec![
                "parameter 'from' must be an integer, got string \"0\"",
                "parameter 'rate' must be a positive number, got 0"
            ]
        );
        let problems = check("source.socket", r#"{"host": "", "port": 70000}"#, &Schema::default()).unwrap_err();
        assert_eq!(
            problems,
            vec!["parameter 'host' must not be empty", "parameter 'port' must be between 1 and 65535, got 70000"]
        );
        let problems = check("sink.print", r#"{"path": "/x"}"#, &words()).unwrap_err();
        assert_eq!(problems, vec!["unknown parameter 'path' (sink.print takes none)"]);
    }

    #[test]
    fn rate_until_checkpoints_needs_a_rate_and_a_positive_count() {
        let (kind, _) =
            check("source.sequence", r#"{"rate": 10, "rate_until_checkpoints": 2}"#, &Schema::default()).unwrap();
        assert_eq!(
            kind,
            OperatorKind::Sequence { from: 0, to: None, rate: Some(10.0), rate_until_checkpoints: Some(2) }
        );
        let (kind, _) = check("source.sequence", r#"{"to": 5}"#, &Schema::default()).unwrap();
        assert!(matches!(kind, OperatorKind::Sequence { rate_until_checkpoints: None, .. }));
        let gen = r#""fields": {"n": {"kind": "sequence", "start": 0, "end": 9}}"#;
        let (kind, _) = check(
            "source.datagen",
            &format!(r#"{{{gen}, "rate": 5, "rate_until_checkpoints": 1}}"#),
            &Schema::default(),
        )
        .unwrap();
        assert!(matches!(kind, OperatorKind::Datagen { rate: Some(_), rate_until_checkpoints: Some(1), .. }));

        let problems = check("source.sequence", r#"{"rate_until_checkpoints": 3}"#, &Schema::default()).unwrap_err();
        assert_eq!(problems, vec!["'rate_until_checkpoints' requires 'rate'"]);
        let problems =
            check("source.datagen", &format!(r#"{{{gen}, "rate_until_checkpoints": 3}}"#), &Schema::default())
                .unwrap_err();
        assert_eq!(problems, vec!["'rate_until_checkpoints' requires 'rate'"]);
        let problems =
            check("source.sequence", r#"{"rate": 1, "rate_until_checkpoints": 0}"#, &Schema::default()).unwrap_err();
        assert_eq!(problems, vec!["parameter 'rate_until_checkpoints' must be at least 1, got 0"]);
        let problems = check(
            "source.datagen",
            &format!(r#"{{{gen}, "rate": 1, "rate_until_checkpoints": "2"}}"#),
            &Schema::default(),
        )
        .unwrap_err();
        assert_eq!(problems, vec!["parameter 'rate_until_checkpoints' must be an integer, got string \"2\""]);
        // An invalid rate is reported once, not again as missing.
        let problems =
            check("source.sequence", r#"{"rate": -1, "rate_until_checkpoints": 2}"#, &Schema::default()).unwrap_err();
        assert_eq!(problems, vec!["parameter 'rate' must be a positive number, got -1"]);
        let problems =
            check("source.file", r#"{"path": "/d", "rate_until_checkpoints": 2}"#, &Schema::default()).unwrap_err();
        assert!(problems[0].starts_with("unknown parameter 'rate_until_checkpoints'"), "{problems:?}");
    }

    #[test]
    fn source_kinds_without_rate_until_checkpoints_still_deserialize() {
        let old = r#"{"source.sequence": {"from": 1, "to": 3, "rate": null}}"#;
        let kind: OperatorKind = serde_json::from_str(old).unwrap();
        assert_eq!(kind, OperatorKind::Sequence { from: 1, to: Some(3), rate: None, rate_until_checkpoints: None });
        let old = r#"{"source.datagen": {"fields": [], "seed": 0, "rows": null, "rate": 2.0}}"#;
        let kind: OperatorKind = serde_json::from_str(old).unwrap();
        assert!(matches!(kind, OperatorKind::Datagen { rate: Some(_), rate_until_checkpoints: None, .. }));
    }
}
