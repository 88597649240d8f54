//! The job file as written: an order-preserving document model and the typed top level.
//!
//! A job file is JSON (when its first non-blank character is `{`) or YAML. Both are read
//! into [`DocValue`], which keeps the order of object keys (the order of `map` fields and
//! of aggregates is the order of the output fields) and rejects duplicate keys, so a key
//! written twice cannot silently replace the first. [`parse_job`] then reads the top-level
//! fields and the operator list into a [`JobSpec`]; operator parameters stay as
//! [`DocValue`]s until validation reads them against the operator catalog.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use yaml_rust2::Yaml;

use super::{JobError, JobProblem};

/// The only job format version this Flint reads (`"flint": 1`).
pub const JOB_FORMAT_VERSION: i64 = 1;

/// A value in a job document. Objects keep their key order.
#[derive(Debug, Clone, PartialEq)]
pub enum DocValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Vec<DocValue>),
    Map(Vec<(String, DocValue)>),
}

impl DocValue {
    /// The JSON-ish type name used in messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            DocValue::Null => "null",
            DocValue::Bool(_) => "boolean",
            DocValue::Int(_) => "integer",
            DocValue::Float(_) => "float",
            DocValue::String(_) => "string",
            DocValue::List(_) => "list",
            DocValue::Map(_) => "object",
        }
    }

    /// `string "abc"`, `integer 3`, `list`: what a message says was found.
    pub fn describe(&self) -> String {
        match self {
            DocValue::List(_) | DocValue::Map(_) | DocValue::Null => self.type_name().to_owned(),
            scalar => format!("{} {scalar}", scalar.type_name()),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            DocValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            DocValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// An integer or a float, as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            DocValue::Int(i) => Some(*i as f64),
            DocValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            DocValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[DocValue]> {
        match self {
            DocValue::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(String, DocValue)]> {
        match self {
            DocValue::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// Converts a YAML node; aliases and other unsupported nodes are errors.
    fn from_yaml(yaml: &Yaml) -> Result<DocValue, String> {
        Ok(match yaml {
            Yaml::Null => DocValue::Null,
            Yaml::Boolean(b) => DocValue::Bool(*b),
            Yaml::Integer(i) => DocValue::Int(*i),
            Yaml::Real(text) => {
                DocValue::Float(yaml.as_f64().ok_or_else(|| format!("'{text}' is not a valid number"))?)
            }
            Yaml::String(s) => DocValue::String(s.clone()),
            Yaml::Array(items) => DocValue::List(items.iter().map(DocValue::from_yaml).collect::<Result<_, _>>()?),
            Yaml::Hash(map) => {
                let mut entries = Vec::with_capacity(map.len());
                for (k, v) in map {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        Yaml::Real(r) => r.clone(),
                        _ => return Err("object keys must be strings".to_owned()),
                    };
                    entries.push((key, DocValue::from_yaml(v)?));
                }
                DocValue::Map(entries)
            }
            Yaml::Alias(_) => return Err("YAML aliases are not supported".to_owned()),
            Yaml::BadValue => return Err("invalid YAML value".to_owned()),
        })
    }
}

/// Compact JSON (object keys in document order).
impl fmt::Display for DocValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(text) => f.write_str(&text),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl Serialize for DocValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            DocValue::Null => serializer.serialize_unit(),
            DocValue::Bool(b) => serializer.serialize_bool(*b),
            DocValue::Int(i) => serializer.serialize_i64(*i),
            DocValue::Float(x) => serializer.serialize_f64(*x),
            DocValue::String(s) => serializer.serialize_str(s),
            DocValue::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            DocValue::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for DocValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> Visitor<'de> for DocVisitor {
    type Value = DocValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<DocValue, E> {
        Ok(DocValue::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<DocValue, E> {
        Ok(DocValue::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<DocValue, E> {
        i64::try_from(v).map(DocValue::Int).map_err(|_| E::custom(format!("integer {v} is too large")))
    }

    fn visit_f64<E>(self, v: f64) -> Result<DocValue, E> {
        Ok(DocValue::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<DocValue, E> {
        Ok(DocValue::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<DocValue, E> {
        Ok(DocValue::String(v))
    }

    fn visit_unit<E>(self) -> Result<DocValue, E> {
        Ok(DocValue::Null)
    }

    fn visit_none<E>(self) -> Result<DocValue, E> {
        Ok(DocValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<DocValue, D::Error> {
        DocValue::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DocValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(DocValue::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DocValue, A::Error> {
        let mut entries: Vec<(String, DocValue)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate key '{key}'")));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(DocValue::Map(entries))
    }
}

/// A job file's top level, as written (checked by [`super::validate()`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobSpec {
    /// The format version (`flint`); must be [`JOB_FORMAT_VERSION`].
    pub flint: Option<i64>,
    pub name: Option<String>,
    /// The job's default operator parallelism; the cluster default if absent.
    pub parallelism: Option<i64>,
    /// Job configuration, Flink keys (`pipeline.max-parallelism`, ...), values as text.
    pub config: BTreeMap<String, String>,
    /// WebAssembly scalar function declarations (`functions`), by module name, as written
    /// (checked by [`super::catalog::scalar_functions`]).
    pub functions: Vec<(String, DocValue)>,
    pub operators: Vec<OperatorDecl>,
}

/// One entry of `operators`, as written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OperatorDecl {
    /// Empty when the file gives none.
    pub id: String,
    /// The operator type (`source.file`, `map`, ...); empty when the file gives none.
    pub op: String,
    /// The display name; the id if absent.
    pub name: Option<String>,
    pub inputs: Vec<String>,
    pub parallelism: Option<i64>,
    /// Override of the ship strategy of the input edges.
    pub ship: Option<String>,
    /// Every other field of the operator object, in order: the operator's parameters.
    pub params: Vec<(String, DocValue)>,
}

impl OperatorDecl {
    /// An operator with an id and a type and nothing else (for building jobs in code).
    pub fn new(id: impl Into<String>, op: impl Into<String>) -> Self {
        Self { id: id.into(), op: op.into(), ..Self::default() }
    }

    pub fn with_inputs(mut self, inputs: &[&str]) -> Self {
        self.inputs = inputs.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn with_param(mut self, key: impl Into<String>, value: DocValue) -> Self {
        self.params.push((key.into(), value));
        self
    }

    /// The parameter `key`, if given.
    pub fn param(&self, key: &str) -> Option<&DocValue> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Top-level keys of a job file.
pub const JOB_FIELDS: &[&str] = &["flint", "name", "parallelism", "config", "functions", "operators"];
/// Keys of an operator object that are not parameters.
pub const OPERATOR_FIELDS: &[&str] = &["id", "op", "name", "inputs", "parallelism", "ship"];

/// What the reader found: the spec (with invalid fields left out), the problems, and
/// which fields were present but invalid, so that validation does not report them again
/// as missing.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub spec: JobSpec,
    /// `(order, problem)`: order 0 for the job, `i + 1` for operator `i`.
    pub problems: Vec<(usize, JobProblem)>,
    pub tainted_fields: BTreeSet<&'static str>,
    pub tainted_operators: BTreeSet<usize>,
}

/// Parses a job file (JSON or YAML). Fails on malformed text, on a top level that is not
/// an object, and on fields of the wrong type; it does not check the job's meaning
/// (that is [`super::validate()`]).
pub fn parse_job(text: &str) -> Result<JobSpec, JobError> {
    let parsed = parse_document(text)?;
    if parsed.problems.is_empty() {
        Ok(parsed.spec)
    } else {
        Err(JobError::from_ordered(parsed.problems))
    }
}

/// Reads the text into a document; malformed text is an error naming line and column.
pub fn parse_doc(text: &str) -> Result<DocValue, JobError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        serde_json::from_str::<DocValue>(text).map_err(|e| JobError::single(format!("malformed JSON: {e}")))
    } else {
        let docs = crate::yaml::load_plain(text).map_err(|e| JobError::single(format!("malformed YAML: {e}")))?;
        match docs.as_slice() {
            [] => Ok(DocValue::Null),
            [doc] => DocValue::from_yaml(doc).map_err(|e| JobError::single(format!("malformed YAML: {e}"))),
            _ => Err(JobError::single("malformed YAML: a job file holds exactly one document")),
        }
    }
}

pub(crate) fn parse_document(text: &str) -> Result<Parsed, JobError> {
    let DocValue::Map(top) = parse_doc(text)? else {
        return Err(JobError::single("a job file must be an object with 'flint', 'name' and 'operators'"));
    };
    let mut out = Parsed::default();
    let job_problem = |out: &mut Parsed, field: &'static str, message: String| {
        out.tainted_fields.insert(field);
        out.problems.push((0, JobProblem::job(message)));
    };
    for (key, value) in &top {
        match key.as_str() {
            "flint" => match value.as_i64() {
                Some(v) => out.spec.flint = Some(v),
                None => {
                    job_problem(&mut out, "flint", format!("'flint' must be the integer 1, got {}", value.describe()))
                }
            },
            "name" => match value.as_str() {
                Some(v) => out.spec.name = Some(v.to_owned()),
                None => job_problem(&mut out, "name", format!("'name' must be a string, got {}", value.describe())),
            },
            "parallelism" => match value.as_i64() {
                Some(v) => out.spec.parallelism = Some(v),
                None => job_problem(
                    &mut out,
                    "parallelism",
                    format!("'parallelism' must be an integer, got {}", value.describe()),
                ),
            },
            "config" => match value {
                DocValue::Map(entries) => {
                    for (k, v) in entries {
                        match config_text(v) {
                            Some(text) => {
                                out.spec.config.insert(k.clone(), text);
                            }
                            None => job_problem(
                                &mut out,
                                "config",
                                format!("config '{k}' must be a string, number or boolean, got {}", v.describe()),
                            ),
                        }
                    }
                }
                DocValue::Null => {}
                other => {
                    job_problem(&mut out, "config", format!("'config' must be an object, got {}", other.describe()))
                }
            },
            "functions" => match value {
                DocValue::Map(entries) => out.spec.functions = entries.clone(),
                DocValue::Null => {}
                other => job_problem(
                    &mut out,
                    "functions",
                    format!("'functions' must be an object of module name to declaration, got {}", other.describe()),
                ),
            },
            "operators" => match value {
                DocValue::List(items) => {
                    for (index, item) in items.iter().enumerate() {
                        let decl = read_operator(index, item, &mut out);
                        out.spec.operators.push(decl);
                    }
                }
                DocValue::Null => {}
                other => job_problem(
                    &mut out,
                    "operators",
                    format!("'operators' must be a list of operator objects, got {}", other.describe()),
                ),
            },
            unknown => out.problems.push((
                0,
                JobProblem::job(format!("unknown top-level field '{unknown}' (known: {})", JOB_FIELDS.join(", "))),
            )),
        }
    }
    Ok(out)
}

/// A config value as Flink text: scalars in their written form.
fn config_text(value: &DocValue) -> Option<String> {
    match value {
        DocValue::String(s) => Some(s.clone()),
        DocValue::Int(i) => Some(i.to_string()),
        DocValue::Float(x) => Some(x.to_string()),
        DocValue::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn read_operator(index: usize, item: &DocValue, out: &mut Parsed) -> OperatorDecl {
    let mut decl = OperatorDecl::default();
    let Some(entries) = item.as_map() else {
        out.tainted_operators.insert(index);
        out.problems.push((
            index + 1,
            JobProblem::job(format!("operator #{} must be an object, got {}", index + 1, item.describe())),
        ));
        return decl;
    };
    // The id first, so that every other problem can name the operator.
    if let Some((_, id)) = entries.iter().find(|(k, _)| k == "id") {
        match id.as_str() {
            Some(id) => decl.id = id.to_owned(),
            None => {
                out.tainted_operators.insert(index);
                out.problems.push((
                    index + 1,
                    JobProblem::job(format!("operator #{}: 'id' must be a string, got {}", index + 1, id.describe())),
                ));
            }
        }
    }
    let label = decl.id.clone();
    let mut problem = |message: String| {
        out.tainted_operators.insert(index);
        let p = if label.is_empty() {
            JobProblem::job(format!("operator #{}: {message}", index + 1))
        } else {
            JobProblem::operator(&label, message)
        };
        out.problems.push((index + 1, p));
    };
    for (key, value) in entries {
        match key.as_str() {
            "id" => {}
            "op" => match value.as_str() {
                Some(op) => decl.op = op.to_owned(),
                None => problem(format!("'op' must be a string, got {}", value.describe())),
            },
            "name" => match value.as_str() {
                Some(name) => decl.name = Some(name.to_owned()),
                None => problem(format!("'name' must be a string, got {}", value.describe())),
            },
            "inputs" => match value {
                DocValue::String(one) => decl.inputs = vec![one.clone()],
                DocValue::List(items) if items.iter().all(|i| i.as_str().is_some()) => {
                    decl.inputs = items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect();
                }
                other => problem(format!("'inputs' must be a list of operator ids, got {}", other.describe())),
            },
            "parallelism" => match value.as_i64() {
                Some(p) => decl.parallelism = Some(p),
                None => problem(format!("'parallelism' must be an integer, got {}", value.describe())),
            },
            "ship" => match value.as_str() {
                Some(s) => decl.ship = Some(s.to_owned()),
                None => problem(format!("'ship' must be a string, got {}", value.describe())),
            },
            _ => decl.params.push((key.clone(), value.clone())),
        }
    }
    decl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_keep_key_order() {
        let json = parse_doc(r#"{"b": 1, "a": [true, null, 2.5, "x"], "c": {"z": 1, "y": 2}}"#).unwrap();
        let yaml = parse_doc("b: 1\na: [true, null, 2.5, x]\nc:\n  z: 1\n  y: 2\n").unwrap();
        assert_eq!(json, yaml);
        assert_eq!(json.to_string(), r#"{"b":1,"a":[true,null,2.5,"x"],"c":{"z":1,"y":2}}"#);
    }

    #[test]
    fn malformed_text_names_line_and_column() {
        let err = parse_job("{\n  \"flint\": 1,\n  \"name\" \"x\"\n}").unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].message.starts_with("malformed JSON: expected `:` at line 3 column"), "{err}");
        let err = parse_job("flint: 1\nname: [x\n").unwrap_err();
        assert!(err.problems[0].message.starts_with("malformed YAML: "), "{err}");
        assert!(err.problems[0].message.contains("line 3"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = parse_job(r#"{"flint": 1, "name": "a", "name": "b"}"#).unwrap_err();
        assert!(err.problems[0].message.contains("duplicate key 'name' at line 1"), "{err}");
        let err = parse_job("flint: 1\nname: a\nname: b\n").unwrap_err();
        assert!(err.problems[0].message.contains("duplicated key"), "{err}");
    }

    #[test]
    fn top_level_must_be_an_object() {
        let err = parse_job("[1, 2]").unwrap_err();
        assert_eq!(err.to_string(), "a job file must be an object with 'flint', 'name' and 'operators'");
        assert!(parse_job("").is_err());
    }

    #[test]
    fn reads_operators_and_splits_params() {
        let spec = parse_job(
            r#"{"flint": 1, "name": "j", "parallelism": 3, "config": {"pipeline.max-parallelism": 64, "x": true},
                "operators": [{"id": "s", "op": "source.sequence", "to": 10, "parallelism": 1, "name": "Seq"},
                              {"id": "p", "op": "sink.print", "inputs": "s", "ship": "rebalance"}]}"#,
        )
        .unwrap();
        assert_eq!(spec.flint, Some(1));
        assert_eq!(spec.parallelism, Some(3));
        assert_eq!(spec.config.get("pipeline.max-parallelism").map(String::as_str), Some("64"));
        assert_eq!(spec.config.get("x").map(String::as_str), Some("true"));
        let s = &spec.operators[0];
        assert_eq!(
            (s.id.as_str(), s.op.as_str(), s.name.as_deref(), s.parallelism),
            ("s", "source.sequence", Some("Seq"), Some(1))
        );
        assert_eq!(s.params, vec![("to".to_owned(), DocValue::Int(10))]);
        assert_eq!(spec.operators[1].inputs, vec!["s"]);
        assert_eq!(spec.operators[1].ship.as_deref(), Some("rebalance"));
    }

    #[test]
    fn reports_every_field_of_the_wrong_type() {
        let err = parse_job(
            r#"{"flint": "1", "name": 7, "parallelism": "2", "config": {"a": [1]}, "colour": 1,
                "operators": [3, {"op": "map"}, {"id": "m", "op": 5, "inputs": [1], "parallelism": 1.5, "ship": true}]}"#,
        )
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "'flint' must be the integer 1, got string \"1\"",
            "'name' must be a string, got integer 7",
            "'parallelism' must be an integer, got string \"2\"",
            "config 'a' must be a string, number or boolean, got list",
            "unknown top-level field 'colour' (known: flint, name, parallelism, config, functions, operators)",
            "operator #1 must be an object, got integer 3",
            "operator 'm': 'op' must be a string, got integer 5",
            "operator 'm': 'inputs' must be a list of operator ids, got list",
            "operator 'm': 'parallelism' must be an integer, got float 1.5",
            "operator 'm': 'ship' must be a string, got boolean true",
        ] {
            assert!(text.contains(expected), "missing '{expected}' in:\n{text}");
        }
        assert_eq!(err.problems.len(), 10, "{text}");
    }
}
