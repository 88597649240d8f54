//! `source.kafka` and `sink.kafka`: their parameters, named as the options of Flink's Kafka
//! SQL connector (`topic`, `properties.bootstrap.servers`, `scan.startup.mode`,
//! `sink.delivery-guarantee`, ...), checked into [`KafkaSourceSpec`] and [`KafkaSinkSpec`].
//! `docs/kafka.md` documents them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Params, Role};
use crate::job::schema::{Field, FieldType, Schema};
use crate::job::spec::DocValue;

/// The parameters of `source.kafka`.
pub const SOURCE_PARAMS: &[&str] = &[
    "topic",
    "topic-pattern",
    "properties.*",
    "scan.startup.mode",
    "scan.startup.specific-offsets",
    "scan.startup.timestamp-millis",
    "scan.bounded.mode",
    "scan.bounded.specific-offsets",
    "scan.bounded.timestamp-millis",
    "scan.topic-partition-discovery.interval",
    "format",
    "schema",
    "key.format",
    "key.fields",
    "value.fields-include",
    "json.ignore-parse-errors",
    "csv.field-delimiter",
    "csv.ignore-parse-errors",
    "metadata",
    "timestamp_field",
    "max_out_of_orderness",
    "scan.watermark.idle-timeout",
];

/// The parameters of `sink.kafka`.
pub const SINK_PARAMS: &[&str] = &[
    "topic",
    "properties.*",
    "format",
    "csv.field-delimiter",
    "key.format",
    "key.fields",
    "value.fields-include",
    "sink.partitioner",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
];

/// Client properties Flint sets itself: a job may not override them.
const MANAGED_PROPERTIES: &[(&str, &str)] = &[
    ("enable.auto.commit", "offsets are committed when a checkpoint completes"),
    ("enable.auto.offset.store", "offsets are committed when a checkpoint completes"),
    ("transactional.id", "set from 'sink.transactional-id-prefix'"),
];

/// Which topics a source reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaTopics {
    /// `topic`: one or more names (`"a;b"` or a list).
    List(Vec<String>),
    /// `topic-pattern`: a regular expression matched against whole topic names.
    Pattern(String),
}

/// An explicit position of one partition (`scan.startup.specific-offsets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub partition: i32,
    pub offset: i64,
}

/// Where a source starts reading a partition it has no checkpointed offset for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartupMode {
    Earliest,
    Latest,
    /// The consumer group's committed offset; without one, `properties.auto.offset.reset`
    /// (`earliest`, `latest`, or `none`: fail).
    GroupOffsets {
        reset: OffsetReset,
    },
    /// The first record with a timestamp at or after this (epoch ms).
    Timestamp(i64),
    /// The given offsets; partitions not listed start at the earliest offset.
    Specific(Vec<PartitionOffset>),
}

/// `properties.auto.offset.reset` for `group-offsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    Earliest,
    Latest,
    None,
}

/// Where a bounded source stops (exclusive), resolved when a partition is first assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundedMode {
    Unbounded,
    Latest,
    GroupOffsets,
    Timestamp(i64),
    Specific(Vec<PartitionOffset>),
}

/// How record values (and sink keys) are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaFormat {
    /// One JSON object per record, fields by name.
    Json,
    /// The bytes as they are: one field of type string or bytes.
    Raw,
    /// One CSV line per record, fields in schema order.
    Csv { delimiter: u8 },
}

/// Record metadata a source can put into a field (`metadata: {field: key}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataKey {
    Topic,
    Partition,
    Offset,
    /// The record timestamp, epoch ms.
    Timestamp,
    /// The record key as text (invalid UTF-8 replaced).
    Key,
    /// The headers as a JSON object of name → value text.
    Headers,
}

impl MetadataKey {
    const ALL: [(&'static str, MetadataKey); 6] = [
        ("topic", MetadataKey::Topic),
        ("partition", MetadataKey::Partition),
        ("offset", MetadataKey::Offset),
        ("timestamp", MetadataKey::Timestamp),
        ("key", MetadataKey::Key),
        ("headers", MetadataKey::Headers),
    ];

    pub fn field_type(self) -> FieldType {
        match self {
            MetadataKey::Partition | MetadataKey::Offset | MetadataKey::Timestamp => FieldType::Int,
            MetadataKey::Topic | MetadataKey::Key | MetadataKey::Headers => FieldType::String,
        }
    }
}

/// Event time of a source: per-partition watermarks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaWatermark {
    /// The integer field (epoch ms) holding the event time; may be a `timestamp` metadata field.
    pub field: String,
    pub max_out_of_orderness: Duration,
    /// A partition without records for this long no longer holds the watermark back.
    pub idle_timeout: Option<Duration>,
}

/// `source.kafka`, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaSourceSpec {
    pub topics: KafkaTopics,
    /// `properties.*` without the prefix, in the order written (`bootstrap.servers` among them).
    pub properties: Vec<(String, String)>,
    pub startup: StartupMode,
    pub bounded: BoundedMode,
    /// `scan.topic-partition-discovery.interval` (`None`: discovery off).
    pub discovery_interval: Option<Duration>,
    pub format: KafkaFormat,
    /// `json.ignore-parse-errors` / `csv.ignore-parse-errors`: skip and count bad records
    /// instead of failing.
    pub ignore_parse_errors: bool,
    /// The fields decoded from the record value.
    pub value_schema: Schema,
    /// `key.format` and `key.fields`: fields decoded from the record key.
    #[serde(default)]
    pub key: Option<KafkaSourceKey>,
    /// Fields filled from record metadata, after the value fields.
    pub metadata: Vec<(String, MetadataKey)>,
    pub watermark: Option<KafkaWatermark>,
}

/// The record key of a source as fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaSourceKey {
    pub format: KafkaFormat,
    /// The fields decoded from the key (`key.fields`, in that order).
    pub schema: Schema,
    /// `schema` as declared: the order of the key and value fields in the output. With
    /// `value.fields-include` `ALL` a field in both takes the value's.
    pub declared: Schema,
}

impl KafkaSourceSpec {
    /// The consumer group (`properties.group.id`), if given.
    pub fn group_id(&self) -> Option<&str> {
        property(&self.properties, "group.id")
    }

    /// The output schema: the declared fields (the value's, and the key's), then the
    /// metadata fields.
    pub fn output_schema(&self) -> Schema {
        let mut fields = match &self.key {
            Some(key) => key.declared.fields.clone(),
            None => self.value_schema.fields.clone(),
        };
        fields.extend(self.metadata.iter().map(|(name, key)| Field::new(name, key.field_type())));
        Schema::new(fields)
    }
}

/// `sink.partitioner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkPartitioner {
    /// By key hash (murmur2, as Kafka's Java client) when there is a key, else the client's
    /// sticky choice.
    Default,
    /// Each sink subtask writes to one partition (`subtask % partitions`).
    Fixed,
    RoundRobin,
}

/// `sink.delivery-guarantee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryGuarantee {
    None,
    AtLeastOnce,
    ExactlyOnce,
}

/// `sink.kafka`, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaSinkSpec {
    pub topic: String,
    pub properties: Vec<(String, String)>,
    pub format: KafkaFormat,
    /// The input fields written into the value, in input order.
    pub value_fields: Vec<String>,
    /// `key.format` and `key.fields`: the record key.
    pub key: Option<(KafkaFormat, Vec<String>)>,
    pub partitioner: SinkPartitioner,
    pub delivery: DeliveryGuarantee,
    pub transactional_id_prefix: Option<String>,
}

/// The value of client property `name`.
pub fn property<'a>(properties: &'a [(String, String)], name: &str) -> Option<&'a str> {
    properties.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

impl Params<'_> {
    /// Every `properties.*` parameter (without the prefix). Values may be strings, numbers or
    /// booleans (kept as text). `bootstrap.servers` is required.
    fn kafka_properties(&mut self, role: Role) -> Option<Vec<(String, String)>> {
        let mut properties = Vec::new();
        let mut ok = true;
        for (key, value) in self.entries {
            let Some(name) = key.strip_prefix("properties.") else { continue };
            let text = match value {
                DocValue::String(s) => Some(s.clone()),
                DocValue::Int(i) => Some(i.to_string()),
                DocValue::Bool(b) => Some(b.to_string()),
                DocValue::Float(f) => Some(f.to_string()),
                _ => None,
            };
            let Some(text) = text else {
                self.problem(format!(
                    "parameter '{key}' must be a string, number or boolean, got {}",
                    value.describe()
                ));
                ok = false;
                continue;
            };
            if name.is_empty() {
                self.problem("parameter 'properties.' names no client property".to_owned());
                ok = false;
            } else if let Some((_, why)) = MANAGED_PROPERTIES.iter().find(|(k, _)| *k == name) {
                self.problem(format!("parameter '{key}' cannot be set: Flint sets it ({why})"));
                ok = false;
            } else {
                properties.push((name.to_owned(), text));
            }
        }
        match property(&properties, "bootstrap.servers") {
            Some(s) if !s.trim().is_empty() => {}
            _ => {
                self.problem("missing required parameter 'properties.bootstrap.servers'".to_owned());
                ok = false;
            }
        }
        if role == Role::Sink && property(&properties, "group.id").is_some() {
            self.problem("parameter 'properties.group.id' is only used by source.kafka".to_owned());
            ok = false;
        }
        ok.then_some(properties)
    }

    /// One of `choices` (by name) for `key`, or `default` when absent.
    fn choice<T: Copy>(&mut self, key: &str, choices: &[(&str, T)], default: T) -> Option<T> {
        let Some(value) = self.get(key, false) else { return Some(default) };
        let found = value.as_str().and_then(|s| choices.iter().find(|(n, _)| *n == s).map(|(_, v)| *v));
        if found.is_none() {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("'{n}'")).collect();
            self.problem(format!("parameter '{key}' must be one of {}, got {}", names.join(", "), value.describe()));
        }
        found
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        if self.get(key, false).is_none() {
            return Some(false);
        }
        self.typed(key, false, "a boolean", DocValue::as_bool)
    }

    /// `format` (value format), with `csv.field-delimiter` for csv.
    fn kafka_format(&mut self, key: &str, required: bool) -> Option<KafkaFormat> {
        let name = self.string(key, required)?;
        let format = match name.as_str() {
            "json" => KafkaFormat::Json,
            "raw" => KafkaFormat::Raw,
            "csv" => {
                let delimiter = match self.get("csv.field-delimiter", false) {
                    None => b',',
                    Some(v) => match v.as_str().map(str::as_bytes) {
                        Some([b]) if b.is_ascii() && *b != b'\n' && *b != b'\r' && *b != b'"' => *b,
                        _ => {
                            self.problem(format!(
                                "parameter 'csv.field-delimiter' must be a single ASCII character other than a quote or a line break, got {}",
                                v.describe()
                            ));
                            return None;
                        }
                    },
                };
                KafkaFormat::Csv { delimiter }
            }
            other => {
                self.problem(format!("parameter '{key}' must be one of 'json', 'raw', 'csv', got '{other}'"));
                return None;
            }
        };
        if !matches!(format, KafkaFormat::Csv { .. }) && self.get("csv.field-delimiter", false).is_some() {
            self.problem(format!("parameter 'csv.field-delimiter' is only used with {key} 'csv'"));
        }
        Some(format)
    }

    /// `partition:0,offset:42;partition:1,offset:300` (Flink's syntax).
    fn specific_offsets(&mut self, key: &str) -> Option<Vec<PartitionOffset>> {
        let text = self.string(key, true)?;
        let mut out: Vec<PartitionOffset> = Vec::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let mut partition = None;
            let mut offset = None;
            for part in entry.split(',') {
                match part.trim().split_once(':') {
                    Some(("partition", v)) => partition = v.trim().parse::<i32>().ok().filter(|p| *p >= 0),
                    Some(("offset", v)) => offset = v.trim().parse::<i64>().ok().filter(|o| *o >= 0),
                    _ => {}
                }
            }
            match (partition, offset) {
                (Some(partition), Some(offset)) if !out.iter().any(|o| o.partition == partition) => {
                    out.push(PartitionOffset { partition, offset })
                }
                (Some(partition), Some(_)) => {
                    self.problem(format!("parameter '{key}' names partition {partition} twice"));
                    return None;
                }
                _ => {
                    self.problem(format!(
                        "parameter '{key}': '{entry}' is not of the form 'partition:<n>,offset:<n>' (non-negative numbers)"
                    ));
                    return None;
                }
            }
        }
        if out.is_empty() {
            self.problem(format!("parameter '{key}' lists no partition"));
            return None;
        }
        Some(out)
    }

    fn timestamp_millis(&mut self, key: &str) -> Option<i64> {
        let ms = self.int(key, true)?;
        if ms < 0 {
            self.problem(format!("parameter '{key}' must not be negative, got {ms}"));
            return None;
        }
        Some(ms)
    }

    /// `key` given only when `mode` needs it.
    fn only_with(&mut self, key: &str, mode_key: &str, mode: &str, used: bool) {
        if !used && self.get(key, false).is_some() {
            self.problem(format!("parameter '{key}' is only used with '{mode_key}' '{mode}'"));
        }
    }
}

fn topics(p: &mut Params) -> Option<KafkaTopics> {
    let (topic, pattern) = (p.get("topic", false), p.get("topic-pattern", false));
    match (topic, pattern) {
        (Some(_), Some(_)) => {
            p.problem("give either 'topic' or 'topic-pattern', not both".to_owned());
            None
        }
        (None, None) => {
            p.problem("missing required parameter 'topic' (or 'topic-pattern')".to_owned());
            None
        }
        (Some(value), None) => {
            let names: Option<Vec<String>> = match value {
                DocValue::String(s) => Some(s.split(';').map(|t| t.trim().to_owned()).collect()),
                DocValue::List(items) => items.iter().map(|i| i.as_str().map(|s| s.trim().to_owned())).collect(),
                _ => None,
            };
            let Some(names) = names else {
                p.problem(format!(
                    "parameter 'topic' must be a topic name, names separated by ';', or a list of names, got {}",
                    value.describe()
                ));
                return None;
            };
            for name in &names {
                if let Err(e) = check_topic_name(name) {
                    p.problem(format!("parameter 'topic': {e}"));
                    return None;
                }
            }
            Some(KafkaTopics::List(names))
        }
        (None, Some(_)) => {
            let pattern = p.string("topic-pattern", true)?;
            if pattern.len() > 1000 {
                p.problem("parameter 'topic-pattern' is longer than 1000 characters".to_owned());
                return None;
            }
            if let Err(e) = topic_pattern(&pattern) {
                p.problem(format!("parameter 'topic-pattern': {e}"));
                return None;
            }
            Some(KafkaTopics::Pattern(pattern))
        }
    }
}

/// `topic-pattern` compiled to match whole topic names (as Java's `Pattern.matches`), with
/// bounded compile size.
pub fn topic_pattern(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("not a valid regular expression: {e}"))
}

/// Kafka's rules for topic names.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a topic name is empty".to_owned());
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' is not a valid topic name"));
    }
    if name.len() > 249 {
        return Err(format!("topic name '{}...' is longer than 249 characters", &name[..20]));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name '{name}' contains '{c}' (allowed: ASCII letters, digits, '.', '_', '-')"));
    }
    Ok(())
}

fn startup(p: &mut Params, has_group: bool, reset: Option<&str>) -> Option<StartupMode> {
    const KEY: &str = "scan.startup.mode";
    let modes = [
        ("earliest-offset", 0u8),
        ("latest-offset", 1),
        ("group-offsets", 2),
        ("timestamp", 3),
        ("specific-offsets", 4),
    ];
    let mode = p.choice(KEY, &modes, 2)?;
    p.only_with("scan.startup.specific-offsets", KEY, "specific-offsets", mode == 4);
    p.only_with("scan.startup.timestamp-millis", KEY, "timestamp", mode == 3);
    Some(match mode {
        0 => StartupMode::Earliest,
        1 => StartupMode::Latest,
        2 => {
            if !has_group {
                p.problem(format!(
                    "'{KEY}' 'group-offsets' (the default) needs 'properties.group.id'; or set '{KEY}' to 'earliest-offset'"
                ));
                return None;
            }
            let reset = match reset {
                None | Some("latest") => OffsetReset::Latest,
                Some("earliest") | Some("smallest") | Some("beginning") => OffsetReset::Earliest,
                Some("none") | Some("error") => OffsetReset::None,
                Some(other) => {
                    p.problem(format!(
                        "parameter 'properties.auto.offset.reset' must be 'earliest', 'latest' or 'none', got '{other}'"
                    ));
                    return None;
                }
            };
            StartupMode::GroupOffsets { reset }
        }
        3 => StartupMode::Timestamp(p.timestamp_millis("scan.startup.timestamp-millis")?),
        _ => StartupMode::Specific(p.specific_offsets("scan.startup.specific-offsets")?),
    })
}

fn bounded(p: &mut Params, has_group: bool) -> Option<BoundedMode> {
    const KEY: &str = "scan.bounded.mode";
    let modes =
        [("unbounded", 0u8), ("latest-offset", 1), ("group-offsets", 2), ("timestamp", 3), ("specific-offsets", 4)];
    let mode = p.choice(KEY, &modes, 0)?;
    p.only_with("scan.bounded.specific-offsets", KEY, "specific-offsets", mode == 4);
    p.only_with("scan.bounded.timestamp-millis", KEY, "timestamp", mode == 3);
    Some(match mode {
        0 => BoundedMode::Unbounded,
        1 => BoundedMode::Latest,
        2 => {
            if !has_group {
                p.problem(format!("'{KEY}' 'group-offsets' needs 'properties.group.id'"));
                return None;
            }
            BoundedMode::GroupOffsets
        }
        3 => BoundedMode::Timestamp(p.timestamp_millis("scan.bounded.timestamp-millis")?),
        _ => BoundedMode::Specific(p.specific_offsets("scan.bounded.specific-offsets")?),
    })
}

/// The declared fields: `schema` (json and csv need one; raw without one reads the value as
/// `value: string`).
fn declared_schema(p: &mut Params, format: KafkaFormat) -> Option<Schema> {
    let given = p.get("schema", false).is_some();
    match format {
        KafkaFormat::Raw if !given => Some(Schema::new(vec![Field::nullable("value", FieldType::String)])),
        KafkaFormat::Raw => super::schema_param(p),
        _ if !given => {
            p.problem("formats 'json' and 'csv' need a 'schema': an object of field name to type".to_owned());
            None
        }
        _ => super::schema_param(p),
    }
}

/// `key.format` with `key.fields`, if given.
type KeyOption = Option<(KafkaFormat, Vec<String>)>;

/// `key.format`, `key.fields` and `value.fields-include` (`true`: `ALL`), checked against
/// `schema` (the sink's input, the source's declared fields) when it is known.
fn key_options(p: &mut Params, schema: Option<&Schema>) -> Option<(KeyOption, bool)> {
    let key_fields =
        if p.get("key.fields", false).is_some() { p.key_fields("key.fields", schema).map(Some) } else { Some(None) };
    let key_format = if p.get("key.format", false).is_some() {
        match p.string("key.format", true).as_deref() {
            Some("json") => Some(Some(KafkaFormat::Json)),
            Some("raw") => Some(Some(KafkaFormat::Raw)),
            Some("csv") => Some(Some(KafkaFormat::Csv { delimiter: b',' })),
            Some(other) => {
                p.problem(format!("parameter 'key.format' must be one of 'json', 'raw', 'csv', got '{other}'"));
                None
            }
            None => None,
        }
    } else {
        Some(None)
    };
    let include = p.choice("value.fields-include", &[("ALL", true), ("EXCEPT_KEY", false)], true);
    let (key_fields, key_format, include) = (key_fields?, key_format?, include?);
    let key = match (key_fields, key_format) {
        (Some(fields), Some(format)) => Some((format, fields)),
        (None, None) => None,
        (Some(_), None) => {
            p.problem("parameter 'key.fields' needs 'key.format'".to_owned());
            return None;
        }
        (None, Some(_)) => {
            p.problem("parameter 'key.format' needs 'key.fields'".to_owned());
            return None;
        }
    };
    if !include && key.is_none() {
        p.problem("'value.fields-include' 'EXCEPT_KEY' needs 'key.fields'".to_owned());
        return None;
    }
    Some((key, include))
}

/// Format `raw` (of the value or the key) takes exactly one field of type string or bytes.
fn check_raw(p: &mut Params, schema: &Schema, what: &str, fields: &[String]) -> bool {
    let ok = match fields {
        [one] => schema.field(one).is_some_and(|f| matches!(f.ty, FieldType::String | FieldType::Bytes)),
        _ => false,
    };
    if !ok {
        p.problem(format!(
            "{what} format 'raw' needs exactly one field of type string or bytes, got {}",
            if fields.is_empty() { "none".to_owned() } else { fields.join(", ") }
        ));
    }
    ok
}

fn metadata(p: &mut Params, value: &Schema) -> Option<Vec<(String, MetadataKey)>> {
    if p.get("metadata", false).is_none() {
        return Some(Vec::new());
    }
    let entries = p.map("metadata")?;
    let mut out: Vec<(String, MetadataKey)> = Vec::new();
    let mut ok = true;
    for (name, key) in entries {
        let found = key.as_str().and_then(|k| MetadataKey::ALL.iter().find(|(n, _)| *n == k));
        match found {
            Some((_, key)) if value.field(name).is_none() => out.push((name.clone(), *key)),
            Some(_) => {
                p.problem(format!("metadata field '{name}' is also a field of 'schema'"));
                ok = false;
            }
            None => {
                let names: Vec<&str> = MetadataKey::ALL.iter().map(|(n, _)| *n).collect();
                p.problem(format!(
                    "metadata field '{name}': unknown metadata {} (known: {})",
                    key.describe(),
                    names.join(", ")
                ));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn watermark(p: &mut Params, output: &Schema) -> Option<Option<KafkaWatermark>> {
    if p.get("timestamp_field", false).is_none() {
        for key in ["max_out_of_orderness", "scan.watermark.idle-timeout"] {
            if p.get(key, false).is_some() {
                p.problem(format!("parameter '{key}' needs 'timestamp_field' (the event time field)"));
                return None;
            }
        }
        return Some(None);
    }
    let field = p.string("timestamp_field", true)?;
    match output.field(&field).map(|f| f.ty) {
        Some(FieldType::Int) => {}
        Some(other) => {
            p.problem(format!(
                "timestamp field '{field}' has type {other}; it must be an integer (epoch milliseconds)"
            ));
            return None;
        }
        None => {
            p.problem(format!(
                "timestamp field '{field}' is not a field of the source (fields: {})",
                output.names_list()
            ));
            return None;
        }
    }
    let max_out_of_orderness = if p.get("max_out_of_orderness", false).is_some() {
        p.duration("max_out_of_orderness", false)?
    } else {
        Duration::ZERO
    };
    let idle_timeout = if p.get("scan.watermark.idle-timeout", false).is_some() {
        Some(p.duration("scan.watermark.idle-timeout", false)?).filter(|d| !d.is_zero())
    } else {
        None
    };
    Some(Some(KafkaWatermark { field, max_out_of_orderness, idle_timeout }))
}

/// `source.kafka`.
pub(super) fn source(p: &mut Params) -> Option<(super::OperatorKind, Option<Schema>)> {
    let topics = topics(p);
    let properties = p.kafka_properties(Role::Source);
    let known = properties.as_deref().unwrap_or_default();
    let has_group = property(known, "group.id").is_some();
    let reset = property(known, "auto.offset.reset").map(str::to_owned);
    let startup = startup(p, has_group, reset.as_deref());
    let bounded = bounded(p, has_group);
    let specific =
        matches!(startup, Some(StartupMode::Specific(_))) || matches!(bounded, Some(BoundedMode::Specific(_)));
    if specific && topics.is_some() && !matches!(&topics, Some(KafkaTopics::List(names)) if names.len() == 1) {
        p.problem("specific offsets need a single 'topic'".to_owned());
        return None;
    }
    let discovery_interval = match p.get("scan.topic-partition-discovery.interval", false) {
        None => Some(Duration::from_secs(300)),
        Some(_) => Some(p.duration("scan.topic-partition-discovery.interval", false)?),
    }
    .filter(|d| !d.is_zero());
    let format = p.kafka_format("format", true)?;
    let ignore_key = match format {
        KafkaFormat::Json => Some("json.ignore-parse-errors"),
        KafkaFormat::Csv { .. } => Some("csv.ignore-parse-errors"),
        KafkaFormat::Raw => None,
    };
    for key in ["json.ignore-parse-errors", "csv.ignore-parse-errors"] {
        if Some(key) != ignore_key && p.get(key, false).is_some() {
            p.problem(format!("parameter '{key}' does not apply to this format"));
        }
    }
    let ignore_parse_errors = match ignore_key {
        Some(key) => p.boolean(key)?,
        None => false,
    };
    let declared = declared_schema(p, format)?;
    let (key, include) = key_options(p, Some(&declared))?;
    let in_key = |name: &str| key.as_ref().is_some_and(|(_, fields)| fields.iter().any(|f| f == name));
    let value_schema = Schema::new(declared.fields.iter().filter(|f| include || !in_key(&f.name)).cloned().collect());
    let value_names: Vec<String> = value_schema.fields.iter().map(|f| f.name.clone()).collect();
    if value_names.is_empty() {
        p.problem("no field is left for the record value".to_owned());
        return None;
    }
    if format == KafkaFormat::Raw && !check_raw(p, &declared, "value", &value_names) {
        return None;
    }
    let key = match key {
        Some((KafkaFormat::Raw, fields)) if !check_raw(p, &declared, "key", &fields) => return None,
        Some((format, fields)) => {
            let schema = Schema::new(fields.iter().filter_map(|n| declared.field(n).cloned()).collect());
            Some(KafkaSourceKey { format, schema, declared: declared.clone() })
        }
        None => None,
    };
    let metadata = metadata(p, &declared)?;
    let mut spec = KafkaSourceSpec {
        topics: topics?,
        properties: properties?,
        startup: startup?,
        bounded: bounded?,
        discovery_interval,
        format,
        ignore_parse_errors,
        value_schema,
        key,
        metadata,
        watermark: None,
    };
    let output = spec.output_schema();
    spec.watermark = watermark(p, &output)?;
    Some((super::OperatorKind::KafkaSource(Box::new(spec)), Some(output)))
}

/// `sink.kafka`.
pub(super) fn sink(p: &mut Params, input: Option<&Schema>) -> Option<(super::OperatorKind, Option<Schema>)> {
    let topic = p.string("topic", true).filter(|t| match check_topic_name(t) {
        Ok(()) => true,
        Err(e) => {
            p.problem(format!("parameter 'topic': {e}"));
            false
        }
    });
    let properties = p.kafka_properties(Role::Sink);
    let format = p.kafka_format("format", true);
    let key_options = key_options(p, input);
    let partitioner = p.choice(
        "sink.partitioner",
        &[
            ("default", SinkPartitioner::Default),
            ("fixed", SinkPartitioner::Fixed),
            ("round-robin", SinkPartitioner::RoundRobin),
        ],
        SinkPartitioner::Default,
    );
    let delivery = p.choice(
        "sink.delivery-guarantee",
        &[
            ("none", DeliveryGuarantee::None),
            ("at-least-once", DeliveryGuarantee::AtLeastOnce),
            ("exactly-once", DeliveryGuarantee::ExactlyOnce),
        ],
        DeliveryGuarantee::AtLeastOnce,
    );
    let prefix = if p.get("sink.transactional-id-prefix", false).is_some() {
        p.string("sink.transactional-id-prefix", true).map(Some)
    } else {
        Some(None)
    };
    let (topic, properties, format, (key, include), partitioner, delivery, prefix) =
        (topic?, properties?, format?, key_options?, partitioner?, delivery?, prefix?);
    match (delivery, &prefix) {
        (DeliveryGuarantee::ExactlyOnce, None) => {
            p.problem("'sink.delivery-guarantee' 'exactly-once' needs 'sink.transactional-id-prefix'".to_owned());
            return None;
        }
        (DeliveryGuarantee::ExactlyOnce, Some(prefix)) if prefix.len() > 200 => {
            p.problem("parameter 'sink.transactional-id-prefix' is longer than 200 characters".to_owned());
            return None;
        }
        (DeliveryGuarantee::None | DeliveryGuarantee::AtLeastOnce, Some(_)) => {
            p.problem(
                "parameter 'sink.transactional-id-prefix' is only used with 'sink.delivery-guarantee' 'exactly-once'"
                    .to_owned(),
            );
            return None;
        }
        _ => {}
    }
    let value_fields: Vec<String> = match input {
        Some(schema) => schema
            .fields
            .iter()
            .map(|f| f.name.clone())
            .filter(|n| include || !key.as_ref().is_some_and(|(_, k)| k.contains(n)))
            .collect(),
        None => Vec::new(),
    };
    if let Some(schema) = input {
        if value_fields.is_empty() {
            p.problem("no field is left for the record value".to_owned());
            return None;
        }
        if format == KafkaFormat::Raw && !check_raw(p, schema, "value", &value_fields) {
            return None;
        }
        if let Some((KafkaFormat::Raw, fields)) = &key {
            if !check_raw(p, schema, "key", fields) {
                return None;
            }
        }
    }
    let spec = KafkaSinkSpec {
        topic,
        properties,
        format,
        value_fields,
        key,
        partitioner,
        delivery,
        transactional_id_prefix: prefix,
    };
    Some((super::OperatorKind::KafkaSink(Box::new(spec)), None))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, words};
    use super::super::OperatorKind;
    use super::*;

    const SERVERS: &str = r#""properties.bootstrap.servers": "127.0.0.1:9092""#;

    fn source(json: &str) -> Result<(KafkaSourceSpec, Schema), Vec<String>> {
        let (kind, schema) = check("source.kafka", json, &Schema::default())?;
        match kind {
            OperatorKind::KafkaSource(spec) => Ok((*spec, schema.unwrap())),
            other => panic!("{other:?}"),
        }
    }

    fn sink(json: &str) -> Result<KafkaSinkSpec, Vec<String>> {
        match check("sink.kafka", json, &words())?.0 {
            OperatorKind::KafkaSink(spec) => Ok(*spec),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_source_takes_flinks_option_names() {
        let (spec, schema) = source(&format!(
            r#"{{"topic": "a; b", {SERVERS}, "properties.group.id": "g", "properties.fetch.max.bytes": 1048576,
                "format": "json", "schema": {{"user": "string", "ts": "integer"}},
                "metadata": {{"part": "partition", "off": "offset", "time": "timestamp"}},
                "timestamp_field": "time", "max_out_of_orderness": "2 s", "scan.watermark.idle-timeout": "30 s",
                "scan.bounded.mode": "latest-offset"}}"#
        ))
        .unwrap();
        assert_eq!(spec.topics, KafkaTopics::List(vec!["a".into(), "b".into()]));
        assert_eq!(spec.group_id(), Some("g"));
        assert_eq!(property(&spec.properties, "fetch.max.bytes"), Some("1048576"));
        assert_eq!(spec.startup, StartupMode::GroupOffsets { reset: OffsetReset::Latest });
        assert_eq!(spec.bounded, BoundedMode::Latest);
        assert_eq!(spec.discovery_interval, Some(Duration::from_secs(300)));
        assert_eq!(schema.names_list(), "user, ts, part, off, time");
        let watermark = spec.watermark.unwrap();
        assert_eq!((watermark.field.as_str(), watermark.max_out_of_orderness), ("time", Duration::from_secs(2)));
        assert_eq!(watermark.idle_timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn startup_modes_and_specific_offsets() {
        let (spec, _) = source(&format!(
            r#"{{"topic": "t", {SERVERS}, "format": "raw", "scan.startup.mode": "specific-offsets",
                "scan.startup.specific-offsets": "partition:0,offset:42;partition:1,offset:300"}}"#
        ))
        .unwrap();
        assert_eq!(
            spec.startup,
            StartupMode::Specific(vec![
                PartitionOffset { partition: 0, offset: 42 },
                PartitionOffset { partition: 1, offset: 300 }
            ])
        );
        assert_eq!(spec.output_schema().names_list(), "value");
        let (spec, _) = source(&format!(
            r#"{{"topic-pattern": "orders-.*", {SERVERS}, "format": "csv", "csv.field-delimiter": ";",
                "schema": {{"a": "integer"}}, "scan.startup.mode": "timestamp", "scan.startup.timestamp-millis": 1700000000000,
                "scan.topic-partition-discovery.interval": "0 ms"}}"#
        ))
        .unwrap();
        assert_eq!(spec.startup, StartupMode::Timestamp(1_700_000_000_000));
        assert_eq!(spec.format, KafkaFormat::Csv { delimiter: b';' });
        assert_eq!(spec.discovery_interval, None);
        assert!(topic_pattern("orders-.*").unwrap().is_match("orders-eu"));
        assert!(!topic_pattern("orders-.*").unwrap().is_match("old-orders-eu"), "whole names only");
    }

    #[test]
    fn bad_source_parameters_are_each_reported() {
        let problems = source(
            r#"{"topic": "bad topic", "topic-pattern": "x", "format": "xml", "scan.startup.mode": "group-offsets",
                "properties.enable.auto.commit": true, "scan.startup.timestamp-millis": 5, "typo": 1}"#,
        )
        .unwrap_err()
        .join("\n");
        for expected in [
            "either 'topic' or 'topic-pattern'",
            "'properties.enable.auto.commit' cannot be set",
            "missing required parameter 'properties.bootstrap.servers'",
            "unknown parameter 'typo'",
        ] {
            assert!(problems.contains(expected), "{expected:?} in\n{problems}");
        }
        let problems =
            source(&format!(r#"{{"topic": "t", {SERVERS}, "format": "json", "schema": {{"a": "integer"}}}}"#))
                .unwrap_err()
                .join("\n");
        assert!(problems.contains("needs 'properties.group.id'"), "{problems}");
        let problems = source(&format!(
            r#"{{"topic": "t", {SERVERS}, "format": "raw", "scan.startup.mode": "specific-offsets",
                "scan.startup.specific-offsets": "partition:x"}}"#
        ))
        .unwrap_err()
        .join("\n");
        assert!(problems.contains("'partition:x' is not of the form"), "{problems}");
        let problems = source(&format!(
            r#"{{"topic-pattern": "(", {SERVERS}, "format": "raw", "scan.startup.mode": "earliest-offset",
                "timestamp_field": "value"}}"#
        ))
        .unwrap_err()
        .join("\n");
        assert!(problems.contains("not a valid regular expression"), "{problems}");
        let problems = source(&format!(
            r#"{{"topic": "t", {SERVERS}, "format": "raw", "scan.startup.mode": "earliest-offset", "timestamp_field": "value"}}"#
        ))
        .unwrap_err()
        .join("\n");
        assert!(problems.contains("must be an integer"), "{problems}");
    }

    #[test]
    fn source_keys_are_fields_of_the_declared_schema() {
        // EXCEPT_KEY: the value holds the other fields; the output keeps the declared order.
        let (spec, schema) = source(&format!(
            r#"{{"topic": "t", {SERVERS}, "scan.startup.mode": "earliest-offset", "format": "json",
                "schema": {{"id": "integer", "amount": "float", "user": "string"}},
                "key.format": "csv", "key.fields": ["user", "id"], "value.fields-include": "EXCEPT_KEY",
                "metadata": {{"off": "offset"}}}}"#
        ))
        .unwrap();
        assert_eq!(schema.names_list(), "id, amount, user, off");
        assert_eq!(spec.value_schema.names_list(), "amount");
        let key = spec.key.unwrap();
        assert_eq!((key.format, key.schema.names_list()), (KafkaFormat::Csv { delimiter: b',' }, "user, id".into()));
        // ALL (the default): the value holds every field.
        let (spec, _) = source(&format!(
            r#"{{"topic": "t", {SERVERS}, "scan.startup.mode": "earliest-offset", "format": "raw",
                "schema": {{"k": "string", "v": "bytes"}}, "key.format": "raw", "key.fields": "k",
                "value.fields-include": "EXCEPT_KEY"}}"#
        ))
        .unwrap();
        assert_eq!(spec.value_schema.names_list(), "v");
        assert_eq!(spec.output_schema().names_list(), "k, v");

        for (params, expected) in [
            (
                r#""format": "json", "schema": {"a": "integer"}, "key.fields": ["nope"], "key.format": "json""#,
                "unknown field 'nope'",
            ),
            (r#""format": "json", "schema": {"a": "integer"}, "key.fields": "a""#, "'key.fields' needs 'key.format'"),
            (
                r#""format": "json", "schema": {"a": "integer"}, "value.fields-include": "EXCEPT_KEY""#,
                "needs 'key.fields'",
            ),
            (
                r#""format": "json", "schema": {"a": "integer"}, "key.format": "json", "key.fields": "a", "value.fields-include": "EXCEPT_KEY""#,
                "no field is left",
            ),
            (
                r#""format": "json", "schema": {"a": "integer"}, "key.format": "raw", "key.fields": "a""#,
                "key format 'raw' needs exactly one field of type string or bytes",
            ),
            // Raw values with ALL would read the key field from the value too.
            (
                r#""format": "raw", "schema": {"k": "string", "v": "string"}, "key.format": "raw", "key.fields": "k""#,
                "value format 'raw' needs exactly one field",
            ),
        ] {
            let problems =
                source(&format!(r#"{{"topic": "t", {SERVERS}, "scan.startup.mode": "earliest-offset", {params}}}"#))
                    .unwrap_err()
                    .join("\n");
            assert!(problems.contains(expected), "{expected:?} in\n{problems}");
        }
    }

    #[test]
    fn a_sink_takes_flinks_option_names() {
        let spec = sink(&format!(
            r#"{{"topic": "out", {SERVERS}, "format": "json", "key.format": "raw", "key.fields": "word",
                "value.fields-include": "EXCEPT_KEY", "sink.partitioner": "round-robin",
                "sink.delivery-guarantee": "exactly-once", "sink.transactional-id-prefix": "job-a"}}"#
        ))
        .unwrap();
        assert_eq!(spec.value_fields, vec!["n".to_owned()]);
        assert_eq!(spec.key, Some((KafkaFormat::Raw, vec!["word".to_owned()])));
        assert_eq!(spec.partitioner, SinkPartitioner::RoundRobin);
        assert_eq!(spec.delivery, DeliveryGuarantee::ExactlyOnce);
        assert_eq!(spec.transactional_id_prefix.as_deref(), Some("job-a"));
        let spec = sink(&format!(r#"{{"topic": "out", {SERVERS}, "format": "csv"}}"#)).unwrap();
        assert_eq!(spec.delivery, DeliveryGuarantee::AtLeastOnce, "Flink's default");
        assert_eq!(spec.value_fields, vec!["word".to_owned(), "n".to_owned()]);
    }

    #[test]
    fn bad_sink_parameters_are_each_reported() {
        let cases = [
            (r#""format": "json", "sink.delivery-guarantee": "exactly-once""#, "needs 'sink.transactional-id-prefix'"),
            (r#""format": "json", "sink.transactional-id-prefix": "p""#, "only used with 'sink.delivery-guarantee'"),
            (r#""format": "raw""#, "format 'raw' needs exactly one field"),
            (r#""format": "json", "key.fields": ["nope"], "key.format": "json""#, "unknown field 'nope'"),
            (r#""format": "json", "key.fields": ["word"]"#, "'key.fields' needs 'key.format'"),
            (r#""format": "json", "properties.group.id": "g""#, "only used by source.kafka"),
            (r#""format": "json", "sink.delivery-guarantee": "twice""#, "must be one of 'none'"),
        ];
        for (params, expected) in cases {
            let problems = sink(&format!(r#"{{"topic": "out", {SERVERS}, {params}}}"#)).unwrap_err().join("\n");
            assert!(problems.contains(expected), "{params}: {expected:?} in\n{problems}");
        }
    }
}
