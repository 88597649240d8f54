//! Configuration: loading `conf/config.yaml` (or the legacy `flink-conf.yaml`), applying
//! dynamic `-D key=value` overrides, and reading typed options with Flink's semantics.
//!
//! Layout of this module:
//! - [`Configuration`]: a flat map from dotted keys to string values, kept sorted by key.
//!   It is built by [`Configuration::load`] (configuration directory plus overrides),
//!   [`Configuration::from_yaml_str`] (standard YAML, nested maps flattened with `.`,
//!   lists joined with `;`) or [`Configuration::from_legacy_str`] (one `key: value` per
//!   line). Values are stored as text, exactly as written, and are only parsed on access.
//! - [`ConfigOption`] and [`ConfigValue`]: a typed option (key, textual default, deprecated
//!   keys, description) and the parsers for the value types: strings, booleans, integers,
//!   floats, [`Duration`] ([`parse_duration`] / [`format_duration`]), [`MemorySize`] and
//!   [`PortRange`]. Defaults are written as a user would write them (`"10 s"`,
//!   `"128 mb"`) and go through the same parser as user values.
//! - [`options`]: every option Flint understands, plus the known-key list and the key
//!   prefixes reserved for later features; used by [`Configuration::warn_unknown_keys`]
//!   and [`Configuration::validate`].
//! - [`ConfigError`]: everything that can go wrong, with messages naming the file, line,
//!   key and value involved.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use yaml_rust2::{yaml::Hash, Yaml};

/// Name of the standard YAML configuration file inside the configuration directory.
pub const CONFIG_FILE_NAME: &str = "config.yaml";

/// Name of the legacy flat configuration file, read only when `config.yaml` is absent.
pub const LEGACY_CONFIG_FILE_NAME: &str = "flink-conf.yaml";

/// Origin used in error messages for configurations parsed from a string.
const STRING_ORIGIN: &str = "<string>";

/// Everything that can go wrong while loading or reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file exists but could not be read.
    #[error("failed to read configuration file '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `config.yaml` is not valid YAML.
    #[error("YAML syntax error in '{file}' at line {line}, column {column}: {message}")]
    Yaml { file: String, line: usize, column: usize, message: String },
    /// `config.yaml` is valid YAML but not a mapping of keys to values.
    #[error("malformed configuration file '{file}': {message}")]
    Malformed { file: String, message: String },
    /// An option without a default has no value.
    #[error("missing value for configuration key '{key}', which has no default")]
    Missing { key: String },
    /// A value does not parse as the option's type.
    #[error("invalid value '{value}' for configuration key '{key}': expected {expected}")]
    InvalidValue { key: String, value: String, expected: String },
    /// [`Configuration::validate`] found one or more problems.
    #[error("invalid configuration: {}", problems.join("; "))]
    Invalid { problems: Vec<String> },
    /// A `-D` argument is not of the form `key=value`.
    #[error("invalid dynamic property '{input}': {reason}")]
    InvalidDynamicProperty { input: String, reason: String },
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// A flat, sorted map of configuration keys to their textual values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Configuration {
    entries: BTreeMap<String, String>,
}

/// Deprecated keys already warned about, so each is reported once per process.
static WARNED_DEPRECATED_KEYS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

impl Configuration {
    /// An empty configuration: every option takes its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads `<conf_dir>/config.yaml`, or else `<conf_dir>/flink-conf.yaml`, or else nothing,
    /// then applies the `dynamic` overrides in order. With `conf_dir = None` only the
    /// overrides are used.
    pub fn load(conf_dir: Option<&Path>, dynamic: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut conf = match conf_dir {
            Some(dir) => Self::load_dir(dir)?,
            None => Self::new(),
        };
        for (key, value) in dynamic {
            conf.set(key.as_str(), value.as_str());
        }
        Ok(conf)
    }

    fn load_dir(dir: &Path) -> Result<Self, ConfigError> {
        let yaml_path = dir.join(CONFIG_FILE_NAME);
        let legacy_path = dir.join(LEGACY_CONFIG_FILE_NAME);
        if yaml_path.is_file() {
            if legacy_path.is_file() {
                let ignored = legacy_path.display();
                warn!(file = %ignored, "config.yaml present, ignoring legacy configuration file");
            }
            let text = read_file(&yaml_path)?;
            let conf = Self::parse_yaml(&text, &yaml_path.display().to_string())?;
            debug!(file = %yaml_path.display(), entries = conf.len(), "loaded configuration");
            Ok(conf)
        } else if legacy_path.is_file() {
            let text = read_file(&legacy_path)?;
            let conf = Self::parse_legacy(&text, &legacy_path.display().to_string());
            let file = legacy_path.display();
            debug!(file = %file, entries = conf.len(), "loaded legacy configuration");
            Ok(conf)
        } else {
            if !dir.is_dir() {
                let dir = dir.display();
                warn!(dir = %dir, "configuration directory does not exist, using defaults");
            } else {
                debug!(dir = %dir.display(), "no configuration file found, using defaults");
            }
            Ok(Self::new())
        }
    }

    /// Parses standard YAML: nested maps are flattened with `.`, scalars are kept as
    /// written, lists become Flink's `a;b;c` form.
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse_yaml(text, STRING_ORIGIN)
    }

    /// Parses the legacy flat format: `key: value` per line, `#` comments, later
    /// duplicates win, malformed lines are warned about and skipped.
    pub fn from_legacy_str(text: &str) -> Self {
        Self::parse_legacy(text, STRING_ORIGIN)
    }

    fn parse_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let docs = crate::yaml::load_plain(text).map_err(|e| ConfigError::Yaml {
            file: origin.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.reason(),
        })?;
        let mut conf = Self::new();
        match docs.as_slice() {
            [] | [Yaml::Null] => {}
            [Yaml::Hash(map)] => flatten_yaml(map, "", origin, &mut conf.entries)?,
            [_] => {
                return Err(ConfigError::Malformed {
                    file: origin.to_owned(),
                    message: "the top level must be a mapping of keys to values".to_owned(),
                })
            }
            many => {
                return Err(ConfigError::Malformed {
                    file: origin.to_owned(),
                    message: format!("expected a single YAML document, found {}", many.len()),
                })
            }
        }
        Ok(conf)
    }

    fn parse_legacy(text: &str, origin: &str) -> Self {
        let mut conf = Self::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = strip_legacy_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(": ") else {
                warn!(
                    file = origin,
                    line = line_no,
                    content = line,
                    "skipping configuration line without 'key: value'"
                );
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || value.is_empty() {
                warn!(
                    file = origin,
                    line = line_no,
                    content = line,
                    "skipping configuration line with empty key or value"
                );
                continue;
            }
            conf.set(key, value);
        }
        conf
    }

    /// Sets `key` to `value`, replacing any previous value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.insert(key.into(), value.into());
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.entries.remove(key)
    }

    /// The value stored under exactly `key` (no deprecated keys, no default).
    pub fn get_raw(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Whether exactly `key` is set.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Number of keys set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `opt`: its key, else the first deprecated key present, else its default.
    /// No value and no default gives [`ConfigError::Missing`].
    pub fn get<T: ConfigValue>(&self, opt: &ConfigOption<T>) -> Result<T, ConfigError> {
        self.get_optional(opt)?.ok_or_else(|| ConfigError::Missing { key: opt.key.to_owned() })
    }

    /// Like [`Configuration::get`], but `Ok(None)` when there is neither a value nor a default.
    pub fn get_optional<T: ConfigValue>(&self, opt: &ConfigOption<T>) -> Result<Option<T>, ConfigError> {
        let (key, value) = match self.lookup(opt.key, opt.deprecated_keys) {
            Some((key, value)) => {
                if key != opt.key {
                    warn_deprecated_once(key, opt.key);
                }
                (key, value)
            }
            None => match opt.default {
                Some(default) => (opt.key, default),
                None => return Ok(None),
            },
        };
        parse_value(key, value).map(Some)
    }

    /// The key actually set for an option (its own key first, then deprecated keys in
    /// order) and its value.
    fn lookup(&self, key: &'static str, deprecated: &'static [&'static str]) -> Option<(&'static str, &str)> {
        std::iter::once(key).chain(deprecated.iter().copied()).find_map(|k| self.get_raw(k).map(|v| (k, v)))
    }

    /// The text an option resolves to (configured or default), for messages.
    fn effective_text<T>(&self, opt: &ConfigOption<T>) -> Option<&str> {
        self.lookup(opt.key, opt.deprecated_keys).map(|(_, v)| v).or(opt.default)
    }

    /// Warns once per key that is neither an option key, a deprecated key, an extra known
    /// key, nor under a known prefix; returns those keys in order.
    pub fn warn_unknown_keys(&self) -> Vec<String> {
        self.entries
            .keys()
            .filter(|key| !options::is_known_key(key))
            .map(|key| {
                let key = key.as_str();
                warn!(key, "unknown configuration key");
                key.to_owned()
            })
            .collect()
    }

    /// Parses every known option present with its type and checks the cross-field rules;
    /// all problems are reported at once in [`ConfigError::Invalid`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        use options::*;

        let mut problems: Vec<String> =
            options::ALL_OPTIONS.iter().filter_map(|opt| opt.check(self).err()).map(|e| e.to_string()).collect();

        if let Ok(slots) = self.get(&TASK_MANAGER_NUM_TASK_SLOTS) {
            if slots < 1 {
                problems.push(format!(
                    "'{}' must be at least 1, got '{}'",
                    TASK_MANAGER_NUM_TASK_SLOTS.key,
                    self.effective_text(&TASK_MANAGER_NUM_TASK_SLOTS).unwrap_or_default()
                ));
            }
        }

        let interval = self.get(&HEARTBEAT_INTERVAL).ok();
        let timeout = self.get(&HEARTBEAT_TIMEOUT).ok();
        let interval_text = self.effective_text(&HEARTBEAT_INTERVAL).unwrap_or_default();
        if interval == Some(Duration::ZERO) {
            problems.push(format!("'{}' must be greater than 0, got '{interval_text}'", HEARTBEAT_INTERVAL.key));
        }
        if let (Some(interval), Some(timeout)) = (interval, timeout) {
            if timeout <= interval {
                problems.push(format!(
                    "'{}' ('{}') must be greater than '{}' ('{interval_text}')",
                    HEARTBEAT_TIMEOUT.key,
                    self.effective_text(&HEARTBEAT_TIMEOUT).unwrap_or_default(),
                    HEARTBEAT_INTERVAL.key,
                ));
            }
        }

        if let Ok(frame) = self.get(&PEKKO_FRAMESIZE) {
            if frame.bytes() < 1024 {
                problems.push(format!(
                    "'{}' must be at least 1 kb, got '{}'",
                    PEKKO_FRAMESIZE.key,
                    self.effective_text(&PEKKO_FRAMESIZE).unwrap_or_default()
                ));
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// Splits a `-D` argument `key=value` at the first `=`; the key is trimmed and must not
    /// be empty, the value is kept verbatim.
    pub fn parse_dynamic_property(s: &str) -> Result<(String, String), ConfigError> {
        let invalid =
            |reason: &str| ConfigError::InvalidDynamicProperty { input: s.to_owned(), reason: reason.to_owned() };
        let (key, value) = s.split_once('=').ok_or_else(|| invalid("expected 'key=value'"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid("the key is empty, expected 'key=value'"));
        }
        Ok((key.to_owned(), value.to_owned()))
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })
}

fn warn_deprecated_once(deprecated_key: &'static str, key: &'static str) {
    let first_time = WARNED_DEPRECATED_KEYS.lock().unwrap_or_else(PoisonError::into_inner).insert(deprecated_key);
    if first_time {
        warn!(deprecated_key, key, "deprecated configuration key used, use the new key instead");
    }
}

fn parse_value<T: ConfigValue>(key: &str, value: &str) -> Result<T, ConfigError> {
    T::parse_config(value).map_err(|expected| ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    })
}

/// Cuts a legacy line at the first `#` that starts the line or follows whitespace.
fn strip_legacy_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let cut = bytes
        .iter()
        .enumerate()
        .find(|&(i, &b)| b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()))
        .map(|(i, _)| i);
    match cut {
        Some(i) => &line[..i],
        None => line,
    }
}

fn flatten_yaml(map: &Hash, prefix: &str, origin: &str, out: &mut BTreeMap<String, String>) -> Result<(), ConfigError> {
    let malformed = |message: String| ConfigError::Malformed { file: origin.to_owned(), message };
    for (k, v) in map {
        let part = yaml_scalar(k).ok_or_else(|| malformed(format!("keys must be scalars, found {k:?}")))?;
        let key = if prefix.is_empty() { part } else { format!("{prefix}.{part}") };
        match v {
            Yaml::Hash(inner) => flatten_yaml(inner, &key, origin, out)?,
            Yaml::Null => {
                let key = key.as_str();
                warn!(file = origin, key, "ignoring configuration key without a value");
            }
            other => {
                let value = yaml_value(other).ok_or_else(|| malformed(format!("unsupported value for key '{key}'")))?;
                out.insert(key, value);
            }
        }
    }
    Ok(())
}

/// A scalar as written: strings verbatim, numbers and booleans in their textual form.
fn yaml_scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value inside or as a list: lists join their items with `;`, maps become Flink's
/// `k:v,k:v` form, nulls become empty.
fn yaml_value(y: &Yaml) -> Option<String> {
    match y {
        Yaml::Array(items) => items.iter().map(yaml_value).collect::<Option<Vec<_>>>().map(|v| v.join(";")),
        Yaml::Hash(map) => map
            .iter()
            .map(|(k, v)| Some(format!("{}:{}", yaml_scalar(k)?, yaml_value(v)?)))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        Yaml::Null => Some(String::new()),
        scalar => yaml_scalar(scalar),
    }
}

// ---------------------------------------------------------------------------------------
// Typed options and value parsers
// ---------------------------------------------------------------------------------------

/// A typed configuration option. The default is text, parsed like a user value.
pub struct ConfigOption<T> {
    pub key: &'static str,
    pub default: Option<&'static str>,
    pub deprecated_keys: &'static [&'static str],
    pub description: &'static str,
    _t: PhantomData<fn() -> T>,
}

impl<T> ConfigOption<T> {
    pub const fn new(
        key: &'static str,
        default: Option<&'static str>,
        deprecated_keys: &'static [&'static str],
        description: &'static str,
    ) -> Self {
        Self { key, default, deprecated_keys, description, _t: PhantomData }
    }
}

impl<T> Clone for ConfigOption<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ConfigOption<T> {}

impl<T> fmt::Debug for ConfigOption<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigOption")
            .field("key", &self.key)
            .field("default", &self.default)
            .field("deprecated_keys", &self.deprecated_keys)
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

/// A [`ConfigOption`] with its value type erased, so options of all types can be listed
/// together (see [`options::ALL_OPTIONS`]).
pub trait AnyConfigOption: Sync {
    fn key(&self) -> &'static str;
    fn default_value(&self) -> Option<&'static str>;
    fn deprecated_keys(&self) -> &'static [&'static str];
    fn description(&self) -> &'static str;
    /// Parses the configured value (own key or deprecated key), if any, with the option's type.
    fn check(&self, conf: &Configuration) -> Result<(), ConfigError>;
    /// Parses the default, if any, with the option's type.
    fn check_default(&self) -> Result<(), ConfigError>;
}

impl<T: ConfigValue> AnyConfigOption for ConfigOption<T> {
    fn key(&self) -> &'static str {
        self.key
    }

    fn default_value(&self) -> Option<&'static str> {
        self.default
    }

    fn deprecated_keys(&self) -> &'static [&'static str] {
        self.deprecated_keys
    }

    fn description(&self) -> &'static str {
        self.description
    }

    fn check(&self, conf: &Configuration) -> Result<(), ConfigError> {
        match conf.lookup(self.key, self.deprecated_keys) {
            Some((key, value)) => parse_value::<T>(key, value).map(drop),
            None => Ok(()),
        }
    }

    fn check_default(&self) -> Result<(), ConfigError> {
        match self.default {
            Some(value) => parse_value::<T>(self.key, value).map(drop),
            None => Ok(()),
        }
    }
}

/// A type that configuration values can be parsed into. The error is a description of
/// what was expected, e.g. `"a duration such as '10 s' or '500 ms'"`.
pub trait ConfigValue: Sized {
    fn parse_config(s: &str) -> Result<Self, String>;
}

impl ConfigValue for String {
    fn parse_config(s: &str) -> Result<Self, String> {
        Ok(s.to_owned())
    }
}

impl ConfigValue for bool {
    fn parse_config(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("true") {
            Ok(true)
        } else if s.eq_ignore_ascii_case("false") {
            Ok(false)
        } else {
            Err("'true' or 'false'".to_owned())
        }
    }
}

macro_rules! integer_config_value {
    ($($t:ty),*) => {$(
        impl ConfigValue for $t {
            fn parse_config(s: &str) -> Result<Self, String> {
                s.trim()
                    .parse::<$t>()
                    .map_err(|_| format!("an integer between {} and {}", <$t>::MIN, <$t>::MAX))
            }
        }
    )*};
}

integer_config_value!(u16, u32, u64, i32, i64, usize);

impl ConfigValue for f64 {
    fn parse_config(s: &str) -> Result<Self, String> {
        match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err("a number such as '1' or '2.5'".to_owned()),
        }
    }
}

impl ConfigValue for Duration {
    fn parse_config(s: &str) -> Result<Self, String> {
        parse_duration(s)
    }
}

impl ConfigValue for MemorySize {
    fn parse_config(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

impl ConfigValue for PortRange {
    fn parse_config(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

/// Splits `text` (trimmed) into its leading ASCII digits and the trimmed, lowercased rest.
fn split_number_unit(text: &str) -> (&str, String) {
    let trimmed = text.trim();
    let end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    (&trimmed[..end], trimmed[end..].trim().to_lowercase())
}

const DURATION_EXPECTED: &str = "a duration such as '10 s' or '500 ms'";

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Duration units, largest first: (labels, nanoseconds). The first label is used by
/// [`format_duration`].
const DURATION_UNITS: &[(&[&str], u128)] = &[
    (&["d", "day", "days"], 86_400 * NANOS_PER_SECOND),
    (&["h", "hour", "hours"], 3_600 * NANOS_PER_SECOND),
    (&["min", "m", "minute", "minutes"], 60 * NANOS_PER_SECOND),
    (&["s", "sec", "secs", "second", "seconds"], NANOS_PER_SECOND),
    (&["ms", "milli", "millis", "millisecond", "milliseconds"], 1_000_000),
    (&["µs", "us", "micro", "micros", "microsecond", "microseconds", "μs"], 1_000),
    (&["ns", "nano", "nanos", "nanosecond", "nanoseconds"], 1),
];

/// Parses a duration like Flink: digits, optional whitespace, optional unit (`ns`, `µs`/`us`,
/// `ms`, `s`, `min`/`m`, `h`, `d` and their long forms, case-insensitive); no unit means
/// milliseconds. Negative and overflowing values are rejected. The error says what was
/// expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number_unit(text);
    if number.is_empty() {
        return Err(DURATION_EXPECTED.to_owned());
    }
    let value: i64 = number.parse().map_err(|_| format!("{DURATION_EXPECTED} (the number is too large)"))?;
    let per_unit = if unit.is_empty() {
        1_000_000
    } else {
        DURATION_UNITS
            .iter()
            .find(|(labels, _)| labels.contains(&unit.as_str()))
            .map(|&(_, nanos)| nanos)
            .ok_or_else(|| format!("{DURATION_EXPECTED} (unknown time unit '{unit}')"))?
    };
    let total = u128::from(value.unsigned_abs()) * per_unit;
    let secs = u64::try_from(total / NANOS_PER_SECOND)
        .map_err(|_| format!("{DURATION_EXPECTED} (the duration is too large)"))?;
    // The remainder is below one billion, so it fits.
    Ok(Duration::new(secs, (total % NANOS_PER_SECOND) as u32))
}

/// Formats a duration with the largest unit that represents it exactly, as Flink does:
/// `"10 s"`, `"500 ms"`, `"2 min"`; zero is `"0 ms"`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0 ms".to_owned();
    }
    let (labels, per_unit) =
        DURATION_UNITS.iter().find(|&&(_, per_unit)| nanos.is_multiple_of(per_unit)).copied().unwrap_or((&["ns"], 1));
    format!("{} {}", nanos / per_unit, labels[0])
}

/// An amount of memory in bytes, parsed like Flink's `MemorySize` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemorySize(u64);

const MEMORY_EXPECTED: &str = "a memory size such as '64 mb' or '1 gb'";

/// Memory units, largest first: (labels, bytes). The second label is used by `Display`.
const MEMORY_UNITS: &[(&[&str], u64)] = &[
    (&["t", "tb", "tebibytes"], 1 << 40),
    (&["g", "gb", "gibibytes"], 1 << 30),
    (&["m", "mb", "mebibytes"], 1 << 20),
    (&["k", "kb", "kibibytes"], 1 << 10),
    (&["b", "bytes"], 1),
];

impl MemorySize {
    pub const ZERO: MemorySize = MemorySize(0);

    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    /// Saturates at `u64::MAX` bytes.
    pub const fn from_kibibytes(kib: u64) -> Self {
        Self(kib.saturating_mul(1 << 10))
    }

    /// Saturates at `u64::MAX` bytes.
    pub const fn from_mebibytes(mib: u64) -> Self {
        Self(mib.saturating_mul(1 << 20))
    }

    pub const fn bytes(&self) -> u64 {
        self.0
    }

    /// Whole kibibytes, rounded down.
    pub const fn kibibytes(&self) -> u64 {
        self.0 >> 10
    }

    /// Whole mebibytes, rounded down.
    pub const fn mebibytes(&self) -> u64 {
        self.0 >> 20
    }

    /// Whole gibibytes, rounded down.
    pub const fn gibibytes(&self) -> u64 {
        self.0 >> 30
    }
}

impl FromStr for MemorySize {
    type Err = String;

    /// Digits, optional whitespace, optional unit; no unit means bytes.
    fn from_str(text: &str) -> Result<Self, String> {
        let (number, unit) = split_number_unit(text);
        if number.is_empty() {
            return Err(MEMORY_EXPECTED.to_owned());
        }
        let value: u64 = number.parse().map_err(|_| format!("{MEMORY_EXPECTED} (the number is too large)"))?;
        let per_unit = if unit.is_empty() {
            1
        } else {
            MEMORY_UNITS
                .iter()
                .find(|(labels, _)| labels.contains(&unit.as_str()))
                .map(|&(_, bytes)| bytes)
                .ok_or_else(|| format!("{MEMORY_EXPECTED} (unknown memory unit '{unit}')"))?
        };
        value.checked_mul(per_unit).map(MemorySize).ok_or_else(|| format!("{MEMORY_EXPECTED} (the size is too large)"))
    }
}

impl fmt::Display for MemorySize {
    /// The largest unit that represents the size exactly: `"10 mb"`, `"1536 kb"`,
    /// `"100 bytes"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0 bytes");
        }
        let (labels, per_unit) = MEMORY_UNITS
            .iter()
            .find(|&&(_, per_unit)| self.0.is_multiple_of(per_unit))
            .copied()
            .unwrap_or((&["b", "bytes"], 1));
        write!(f, "{} {}", self.0 / per_unit, labels[1])
    }
}

/// A set of ports: `"0"` (any free port), `"6123"`, `"50100-50200"`, or a comma-separated
/// list of those (`"50100,50102-50105"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// Inclusive `(from, to)` ranges in the order written.
    ranges: Vec<(u16, u16)>,
}

const PORT_EXPECTED: &str = "a port, a port range or a comma-separated list of them, such as '6123' or '50100-50200'";

impl PortRange {
    /// Exactly one port (`0` meaning any free port).
    pub fn single(port: u16) -> Self {
        Self { ranges: vec![(port, port)] }
    }

    /// The inclusive ranges, in the order written.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }

    /// Whether this is just port `0`: let the operating system choose.
    pub fn is_any(&self) -> bool {
        self.ranges == [(0, 0)]
    }

    /// All ports, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|&(from, to)| from..=to)
    }

    /// All ports, in the order written.
    pub fn ports(&self) -> Vec<u16> {
        self.iter().collect()
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{PORT_EXPECTED} ('{text}' is not a port number)"));
    }
    text.parse::<u16>().map_err(|_| format!("{PORT_EXPECTED} (port {text} is above 65535)"))
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err(PORT_EXPECTED.to_owned());
        }
        let ranges = text
            .split(',')
            .map(|part| {
                let part = part.trim();
                if part.is_empty() {
                    return Err(format!("{PORT_EXPECTED} (empty list element)"));
                }
                match part.split_once('-') {
                    Some((from, to)) => {
                        let (from, to) = (parse_port(from)?, parse_port(to)?);
                        if from > to {
                            return Err(format!("{PORT_EXPECTED} (range {from}-{to} is reversed)"));
                        }
                        Ok((from, to))
                    }
                    None => parse_port(part).map(|p| (p, p)),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { ranges })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(from, to)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if from == to {
                write!(f, "{from}")?;
            } else {
                write!(f, "{from}-{to}")?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

/// Every option Flint understands, with Flink's keys, defaults and deprecated keys.
pub mod options {
    use std::time::Duration;

    use super::{AnyConfigOption, ConfigOption, MemorySize, PortRange};

    // --- JobManager and REST ---

    pub const JOB_MANAGER_RPC_ADDRESS: ConfigOption<String> = ConfigOption::new(
        "jobmanager.rpc.address",
        Some("localhost"),
        &[],
        "Address other processes use to reach the JobManager.",
    );
    pub const JOB_MANAGER_RPC_PORT: ConfigOption<u16> =
        ConfigOption::new("jobmanager.rpc.port", Some("6123"), &[], "Port of the JobManager's RPC endpoint.");
    pub const JOB_MANAGER_BIND_HOST: ConfigOption<String> = ConfigOption::new(
        "jobmanager.bind-host",
        None,
        &[],
        "Local address the JobManager's RPC endpoint binds to; defaults to the RPC address.",
    );
    pub const REST_ADDRESS: ConfigOption<String> =
        ConfigOption::new("rest.address", None, &[], "Address clients use to reach the REST endpoint.");
    pub const REST_PORT: ConfigOption<u16> = ConfigOption::new(
        "rest.port",
        Some("8081"),
        &[],
        "Port clients use to reach the REST endpoint (and the bind port if 'rest.bind-port' is unset).",
    );
    pub const REST_BIND_ADDRESS: ConfigOption<String> =
        ConfigOption::new("rest.bind-address", None, &[], "Local address the REST endpoint binds to.");
    pub const REST_BIND_PORT: ConfigOption<PortRange> = ConfigOption::new(
        "rest.bind-port",
        None,
        &[],
        "Port, range or list of ports the REST endpoint tries to bind to.",
    );

    pub const HIGH_AVAILABILITY_JOB_MANAGER_PORT: ConfigOption<PortRange> = ConfigOption::new(
        "high-availability.jobmanager.port",
        Some("0"),
        &[],
        "With ZooKeeper high availability: port, range or list of ports of the JobManager's RPC endpoint (0: any \
         free port; taskmanagers find it through ZooKeeper).",
    );

    // --- TaskManager ---

    pub const TASK_MANAGER_HOST: ConfigOption<String> =
        ConfigOption::new("taskmanager.host", None, &[], "Address other processes use to reach this TaskManager.");
    pub const TASK_MANAGER_BIND_HOST: ConfigOption<String> =
        ConfigOption::new("taskmanager.bind-host", None, &[], "Local address the TaskManager's endpoints bind to.");
    pub const TASK_MANAGER_RPC_PORT: ConfigOption<PortRange> = ConfigOption::new(
        "taskmanager.rpc.port",
        Some("0"),
        &[],
        "Port, range or list of ports for the TaskManager's RPC endpoint; 0 picks a free port.",
    );
    pub const TASK_MANAGER_DATA_PORT: ConfigOption<PortRange> = ConfigOption::new(
        "taskmanager.data.port",
        Some("0"),
        &[],
        "Port for the TaskManager's data exchange; 0 picks a free port.",
    );
    pub const TASK_MANAGER_NUM_TASK_SLOTS: ConfigOption<u32> =
        ConfigOption::new("taskmanager.numberOfTaskSlots", Some("1"), &[], "Number of slots a TaskManager offers.");
    pub const TASK_MANAGER_RESOURCE_ID: ConfigOption<String> = ConfigOption::new(
        "taskmanager.resource-id",
        None,
        &[],
        "Resource id of the TaskManager; generated when unset.",
    );
    pub const TASK_MANAGER_CPU_CORES: ConfigOption<f64> = ConfigOption::new(
        "taskmanager.cpu.cores",
        None,
        &[],
        "CPU cores the TaskManager reports; defaults to the number of slots.",
    );
    pub const TASK_MANAGER_TASK_HEAP_SIZE: ConfigOption<MemorySize> =
        ConfigOption::new("taskmanager.memory.task.heap.size", None, &[], "Task heap memory the TaskManager reports.");
    pub const TASK_MANAGER_MANAGED_MEMORY_SIZE: ConfigOption<MemorySize> = ConfigOption::new(
        "taskmanager.memory.managed.size",
        Some("128 mb"),
        &[],
        "Managed memory the TaskManager reports.",
    );
    pub const TASK_MANAGER_NETWORK_MEMORY_MIN: ConfigOption<MemorySize> = ConfigOption::new(
        "taskmanager.memory.network.min",
        Some("64 mb"),
        &[],
        "Network memory the TaskManager reports.",
    );
    pub const TASK_MANAGER_PROCESS_SIZE: ConfigOption<MemorySize> =
        ConfigOption::new("taskmanager.memory.process.size", None, &[], "Total process memory of the TaskManager.");

    // --- Heartbeats and RPC ---

    pub const HEARTBEAT_INTERVAL: ConfigOption<Duration> = ConfigOption::new(
        "heartbeat.interval",
        Some("10000"),
        &[],
        "Time between heartbeat requests (plain numbers are milliseconds).",
    );
    pub const HEARTBEAT_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
        "heartbeat.timeout",
        Some("50000"),
        &[],
        "Time without a heartbeat after which the peer is considered lost (plain numbers are milliseconds).",
    );
    pub const HEARTBEAT_RPC_FAILURE_THRESHOLD: ConfigOption<i32> = ConfigOption::new(
        "heartbeat.rpc-failure-threshold",
        Some("2"),
        &[],
        "Consecutive failed heartbeat RPCs after which the peer is considered lost; -1 disables.",
    );
    pub const PEKKO_ASK_TIMEOUT: ConfigOption<Duration> =
        ConfigOption::new("pekko.ask.timeout", Some("10 s"), &["akka.ask.timeout"], "Timeout of RPC asks.");
    pub const PEKKO_FRAMESIZE: ConfigOption<MemorySize> =
        ConfigOption::new("pekko.framesize", Some("10485760b"), &["akka.framesize"], "Largest RPC message frame.");

    // --- Slots and registration ---

    pub const SLOT_REQUEST_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
        "slot.request.timeout",
        Some("300000"),
        &[],
        "Time after which an unfulfilled slot request fails (plain numbers are milliseconds).",
    );
    pub const SLOT_IDLE_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
        "slot.idle.timeout",
        Some("50000"),
        &[],
        "Time after which an idle slot is released (plain numbers are milliseconds).",
    );
    pub const CLUSTER_REGISTRATION_INITIAL_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
        "cluster.registration.initial-timeout",
        Some("100 ms"),
        &[],
        "First registration attempt timeout; doubled after each failure.",
    );
    pub const CLUSTER_REGISTRATION_MAX_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
        "cluster.registration.max-timeout",
        Some("30 s"),
        &[],
        "Upper bound of the registration attempt timeout.",
    );

    // --- Environment and misc ---

    pub const ENV_LOG_DIR: ConfigOption<String> = ConfigOption::new(
        "env.log.dir",
        None,
        &[],
        "Directory for log files; defaults to the distribution's log directory.",
    );
    pub const ENV_PID_DIR: ConfigOption<String> =
        ConfigOption::new("env.pid.dir", Some("/tmp"), &[], "Directory for the daemons' pid files.");
    pub const PARALLELISM_DEFAULT: ConfigOption<u32> =
        ConfigOption::new("parallelism.default", Some("1"), &[], "Parallelism of jobs that do not set one.");
    pub const WEB_REFRESH_INTERVAL: ConfigOption<u64> =
        ConfigOption::new("web.refresh-interval", Some("3000"), &[], "Web UI refresh interval in milliseconds.");
    pub const REST_FLAMEGRAPH_ENABLED: ConfigOption<bool> =
        ConfigOption::new("rest.flamegraph.enabled", Some("false"), &[], "Whether the web UI offers flame graphs.");
    pub const REST_FLAMEGRAPH_REFRESH_INTERVAL: ConfigOption<Duration> = ConfigOption::new(
        "rest.flamegraph.refresh-interval",
        Some("1 min"),
        &[],
        "How long a vertex's flame graph is served before it is sampled again.",
    );
    pub const REST_FLAMEGRAPH_NUM_SAMPLES: ConfigOption<u32> =
        ConfigOption::new("rest.flamegraph.num-samples", Some("100"), &[], "Samples per flame graph and thread.");
    pub const REST_FLAMEGRAPH_DELAY_BETWEEN_SAMPLES: ConfigOption<Duration> = ConfigOption::new(
        "rest.flamegraph.delay-between-samples",
        Some("50 ms"),
        &[],
        "Time between two samples of a flame graph.",
    );
    pub const REST_FLAMEGRAPH_STACK_DEPTH: ConfigOption<u32> =
        ConfigOption::new("rest.flamegraph.stack-depth", Some("100"), &[], "Frames kept per sampled stack.");

    // --- Bounds (hardening) ---

    pub const REST_SERVER_MAX_CONTENT_LENGTH: ConfigOption<u64> = ConfigOption::new(
        "rest.server.max-content-length",
        Some("104857600"),
        &[],
        "Largest request body (bytes) the REST server accepts; larger ones get 413.",
    );
    pub const REST_IDLENESS_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
        "rest.idleness-timeout",
        Some("300000"),
        &[],
        "How long a REST request body may take to arrive before the request gets 408 (plain numbers are ms).",
    );
    pub const TASK_MANAGER_REGISTRATION_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
        "taskmanager.registration.timeout",
        Some("5 min"),
        &[],
        "A taskmanager that cannot register with a resource manager within this time exits.",
    );
    pub const WEB_EXCEPTION_HISTORY_SIZE: ConfigOption<u32> = ConfigOption::new(
        "web.exception-history-size",
        Some("16"),
        &[],
        "Failures kept per job for /jobs/:id/exceptions.",
    );
    pub const JOBSTORE_MAX_CAPACITY: ConfigOption<u32> = ConfigOption::new(
        "jobstore.max-capacity",
        Some("2147483647"),
        &[],
        "Finished jobs kept for the REST API; the oldest are evicted first.",
    );
    pub const JOBSTORE_EXPIRATION_TIME: ConfigOption<u64> = ConfigOption::new(
        "jobstore.expiration-time",
        Some("3600"),
        &[],
        "Seconds a finished job is kept for the REST API.",
    );

    // --- Job packages and artifacts ---

    pub const WEB_SUBMIT_ENABLE: ConfigOption<bool> = ConfigOption::new(
        "web.submit.enable",
        Some("true"),
        &[],
        "Whether jobs can be uploaded and run through /jars.",
    );
    pub const WEB_TMP_DIR: ConfigOption<String> = ConfigOption::new(
        "web.tmpdir",
        None,
        &[],
        "Directory of the REST server's temporary files (default: the system's temp directory).",
    );
    pub const WEB_UPLOAD_DIR: ConfigOption<String> = ConfigOption::new(
        "web.upload.dir",
        None,
        &[],
        "Directory of packages uploaded through /jars/upload; when set it persists and its packages are listed \
         again after a restart (default: a fresh directory under web.tmpdir, removed at shutdown).",
    );
    pub const FLINT_IO_ALLOWED_PATHS: ConfigOption<crate::io_paths::AllowedPaths> = ConfigOption::new(
        "flint.io.allowed-paths",
        None,
        &[],
        "Absolute directories (separated by ';', or a YAML list) under which every local path a job or a request \
         names must lie: source.file and sink.file paths, the job's checkpoint and savepoint directories, \
         savepointPath, savepoint target directories (default: unrestricted).",
    );
    pub const BLOB_STORAGE_DIRECTORY: ConfigOption<String> = ConfigOption::new(
        "blob.storage.directory",
        None,
        &[],
        "Directory of the jobmanager's BlobServer files and of a taskmanager's blob cache and job artifacts \
         (default: the system's temp directory); each process uses fresh subdirectories removed at shutdown.",
    );
    pub const BLOB_OFFLOAD_MINSIZE: ConfigOption<MemorySize> = ConfigOption::new(
        "blob.offload.minsize",
        Some("1 mb"),
        &["jobmanager.tdd.offload.minsize"],
        "A job's artifacts up to this size travel inline with its tasks; larger ones go through the BlobServer.",
    );
    pub const BLOB_SERVER_PORT: ConfigOption<PortRange> = ConfigOption::new(
        "blob.server.port",
        Some("0"),
        &[],
        "Port (or range) of the jobmanager's BlobServer; 0 lets the system choose.",
    );
    pub const BLOB_FETCH_RETRIES: ConfigOption<u32> = ConfigOption::new(
        "blob.fetch.retries",
        Some("5"),
        &[],
        "Retries of a blob download that failed or was corrupt.",
    );
    pub const BLOB_FETCH_NUM_CONCURRENT: ConfigOption<u32> =
        ConfigOption::new("blob.fetch.num-concurrent", Some("50"), &[], "Blob requests the BlobServer serves at once.");
    pub const BLOB_CLIENT_SOCKET_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
        "blob.client.socket.timeout",
        Some("300000"),
        &[],
        "Bound on every read and write of a blob transfer (plain numbers are ms).",
    );
    pub const WASM_MEMORY_MAX: ConfigOption<MemorySize> = ConfigOption::new(
        "wasm.memory.max",
        Some("64 mb"),
        &[],
        "Linear memory of one WebAssembly operator instance; a guest growing past it fails its task (a job's config may set it per job).",
    );
    pub const WASM_CALL_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
        "wasm.call.timeout",
        Some("10 s"),
        &[],
        "The longest one call into a WebAssembly guest may run before it is interrupted and its task fails (a job's config may set it per job).",
    );
    pub const BLOB_SERVICE_CLEANUP_INTERVAL: ConfigOption<u64> = ConfigOption::new(
        "blob.service.cleanup.interval",
        Some("3600"),
        &[],
        "Seconds a taskmanager keeps a job's cached blobs after the job's last task there ended.",
    );

    /// Every option above, type-erased, for validation and the known-key list.
    pub const ALL_OPTIONS: &[&dyn AnyConfigOption] = &[
        &JOB_MANAGER_RPC_ADDRESS,
        &JOB_MANAGER_RPC_PORT,
        &JOB_MANAGER_BIND_HOST,
        &REST_ADDRESS,
        &REST_PORT,
        &REST_BIND_ADDRESS,
        &REST_BIND_PORT,
        &HIGH_AVAILABILITY_JOB_MANAGER_PORT,
        &TASK_MANAGER_HOST,
        &TASK_MANAGER_BIND_HOST,
        &TASK_MANAGER_RPC_PORT,
        &TASK_MANAGER_DATA_PORT,
        &TASK_MANAGER_NUM_TASK_SLOTS,
        &TASK_MANAGER_RESOURCE_ID,
        &TASK_MANAGER_CPU_CORES,
        &TASK_MANAGER_TASK_HEAP_SIZE,
        &TASK_MANAGER_MANAGED_MEMORY_SIZE,
        &TASK_MANAGER_NETWORK_MEMORY_MIN,
        &TASK_MANAGER_PROCESS_SIZE,
        &HEARTBEAT_INTERVAL,
        &HEARTBEAT_TIMEOUT,
        &HEARTBEAT_RPC_FAILURE_THRESHOLD,
        &PEKKO_ASK_TIMEOUT,
        &PEKKO_FRAMESIZE,
        &SLOT_REQUEST_TIMEOUT,
        &SLOT_IDLE_TIMEOUT,
        &CLUSTER_REGISTRATION_INITIAL_TIMEOUT,
        &CLUSTER_REGISTRATION_MAX_TIMEOUT,
        &ENV_LOG_DIR,
        &ENV_PID_DIR,
        &PARALLELISM_DEFAULT,
        &WEB_REFRESH_INTERVAL,
        &REST_FLAMEGRAPH_ENABLED,
        &REST_FLAMEGRAPH_REFRESH_INTERVAL,
        &REST_FLAMEGRAPH_NUM_SAMPLES,
        &REST_FLAMEGRAPH_DELAY_BETWEEN_SAMPLES,
        &REST_FLAMEGRAPH_STACK_DEPTH,
        &REST_SERVER_MAX_CONTENT_LENGTH,
        &REST_IDLENESS_TIMEOUT,
        &TASK_MANAGER_REGISTRATION_TIMEOUT,
        &WEB_EXCEPTION_HISTORY_SIZE,
        &JOBSTORE_MAX_CAPACITY,
        &JOBSTORE_EXPIRATION_TIME,
        &WEB_SUBMIT_ENABLE,
        &WEB_TMP_DIR,
        &WEB_UPLOAD_DIR,
        &FLINT_IO_ALLOWED_PATHS,
        &BLOB_STORAGE_DIRECTORY,
        &BLOB_OFFLOAD_MINSIZE,
        &BLOB_SERVER_PORT,
        &BLOB_FETCH_RETRIES,
        &BLOB_FETCH_NUM_CONCURRENT,
        &BLOB_CLIENT_SOCKET_TIMEOUT,
        &BLOB_SERVICE_CLEANUP_INTERVAL,
        &WASM_MEMORY_MAX,
        &WASM_CALL_TIMEOUT,
        // TLS (common/src/tls/options.rs).
        &crate::tls::options::SSL_INTERNAL_ENABLED,
        &crate::tls::options::SSL_REST_ENABLED,
        &crate::tls::options::SSL_REST_AUTHENTICATION_ENABLED,
        &crate::tls::options::SSL_INTERNAL_KEYSTORE,
        &crate::tls::options::SSL_INTERNAL_KEYSTORE_PASSWORD,
        &crate::tls::options::SSL_INTERNAL_KEY_PASSWORD,
        &crate::tls::options::SSL_INTERNAL_KEYSTORE_TYPE,
        &crate::tls::options::SSL_INTERNAL_TRUSTSTORE,
        &crate::tls::options::SSL_INTERNAL_TRUSTSTORE_PASSWORD,
        &crate::tls::options::SSL_INTERNAL_TRUSTSTORE_TYPE,
        &crate::tls::options::SSL_INTERNAL_CERT_FINGERPRINT,
        &crate::tls::options::SSL_INTERNAL_HANDSHAKE_TIMEOUT,
        &crate::tls::options::SSL_REST_KEYSTORE,
        &crate::tls::options::SSL_REST_KEYSTORE_PASSWORD,
        &crate::tls::options::SSL_REST_KEY_PASSWORD,
        &crate::tls::options::SSL_REST_KEYSTORE_TYPE,
        &crate::tls::options::SSL_REST_TRUSTSTORE,
        &crate::tls::options::SSL_REST_TRUSTSTORE_PASSWORD,
        &crate::tls::options::SSL_REST_TRUSTSTORE_TYPE,
        &crate::tls::options::SSL_REST_CERT_FINGERPRINT,
        &crate::tls::options::SSL_PROTOCOL,
        &crate::tls::options::SSL_ALGORITHMS,
        &crate::tls::options::FLINT_SSL_INTERNAL_CERTIFICATE,
        &crate::tls::options::FLINT_SSL_INTERNAL_PRIVATE_KEY,
        &crate::tls::options::FLINT_SSL_INTERNAL_CA_CERTIFICATES,
        &crate::tls::options::FLINT_SSL_REST_CERTIFICATE,
        &crate::tls::options::FLINT_SSL_REST_PRIVATE_KEY,
        &crate::tls::options::FLINT_SSL_REST_CA_CERTIFICATES,
    ];

    /// Keys Flint does not read as options but that belong in a Flink configuration
    /// (read by the scripts or by Flink's memory model), so they are not reported as unknown.
    pub const EXTRA_KNOWN_KEYS: &[&str] = &[
        "jobmanager.memory.process.size",
        "jobmanager.memory.flink.size",
        "jobmanager.memory.heap.size",
        "jobmanager.memory.off-heap.size",
        "jobmanager.memory.jvm-metaspace.size",
        "jobmanager.memory.jvm-overhead.min",
        "jobmanager.memory.jvm-overhead.max",
        "jobmanager.memory.jvm-overhead.fraction",
        "jobmanager.execution.failover-strategy",
        "taskmanager.memory.flink.size",
        "taskmanager.memory.framework.heap.size",
        "taskmanager.memory.framework.off-heap.size",
        "taskmanager.memory.task.off-heap.size",
        "taskmanager.memory.managed.fraction",
        "taskmanager.memory.network.max",
        "taskmanager.memory.network.fraction",
        "taskmanager.memory.jvm-metaspace.size",
        "taskmanager.memory.jvm-overhead.min",
        "taskmanager.memory.jvm-overhead.max",
        "taskmanager.memory.jvm-overhead.fraction",
        "taskmanager.compute.numa",
    ];

    /// Key prefixes accepted as known: they belong to features added later.
    pub const KNOWN_KEY_PREFIXES: &[&str] =
        &["high-availability", "state.", "execution.", "restart-strategy", "pipeline.", "metrics.", "env."];

    /// Every option key, deprecated key and extra known key, sorted and without duplicates.
    pub fn known_keys() -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = ALL_OPTIONS
            .iter()
            .flat_map(|opt| std::iter::once(opt.key()).chain(opt.deprecated_keys().iter().copied()))
            .chain(EXTRA_KNOWN_KEYS.iter().copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Whether `key` is an option key, a deprecated key, an extra known key, or starts
    /// with one of [`KNOWN_KEY_PREFIXES`].
    pub fn is_known_key(key: &str) -> bool {
        KNOWN_KEY_PREFIXES.iter().any(|p| key.starts_with(p))
            || EXTRA_KNOWN_KEYS.contains(&key)
            || ALL_OPTIONS.iter().any(|opt| opt.key() == key || opt.deprecated_keys().contains(&key))
    }
}

#[cfg(test)]
mod tests {
    use super::options::*;
    use super::*;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let name =
                format!("flint-config-test-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, contents: &str) {
            std::fs::write(self.0.join(name), contents).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn yaml(text: &str) -> Configuration {
        Configuration::from_yaml_str(text).unwrap()
    }

    fn conf(pairs: &[(&str, &str)]) -> Configuration {
        let mut c = Configuration::new();
        for (k, v) in pairs {
            c.set(*k, *v);
        }
        c
    }

    fn entries(c: &Configuration) -> Vec<(String, String)> {
        c.entries().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    #[test]
    fn nested_and_flat_yaml_are_equivalent() {
        let nested = yaml("jobmanager:\n  rpc:\n    address: x\n    port: 6124\n");
        let flat = yaml("jobmanager.rpc.address: x\njobmanager.rpc.port: 6124\n");
        let mixed = yaml("jobmanager.rpc:\n  address: x\n  port: 6124\n");
        assert_eq!(nested, flat);
        assert_eq!(nested, mixed);
        assert_eq!(nested.get_raw("jobmanager.rpc.address"), Some("x"));
    }

    #[test]
    fn yaml_scalars_and_lists_become_strings() {
        let c = yaml(
            "a: 42\nb: 1.50\nc: true\nd: 'quoted: text'\ne: [x, y, 3]\nf:\n  - one\n  - two\n\
             g: 10 s\nh: [{k1: v1, k2: v2}]\ni: []\nj: ~\n",
        );
        assert_eq!(c.get_raw("a"), Some("42"));
        assert_eq!(c.get_raw("b"), Some("1.50"));
        assert_eq!(c.get_raw("c"), Some("true"));
        assert_eq!(c.get_raw("d"), Some("quoted: text"));
        assert_eq!(c.get_raw("e"), Some("x;y;3"));
        assert_eq!(c.get_raw("f"), Some("one;two"));
        assert_eq!(c.get_raw("g"), Some("10 s"));
        assert_eq!(c.get_raw("h"), Some("k1:v1,k2:v2"));
        assert_eq!(c.get_raw("i"), Some(""));
        assert!(!c.contains("j"), "null values are skipped");
    }

    #[test]
    fn empty_yaml_is_empty_and_non_mapping_is_rejected() {
        assert!(yaml("").is_empty());
        assert!(yaml("# only a comment\n").is_empty());
        let err = Configuration::from_yaml_str("- a\n- b\n").unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { .. }), "{err}");
    }

    #[test]
    fn yaml_syntax_error_names_string_origin_and_line() {
        let err = Configuration::from_yaml_str("a: 1\nb: [unclosed\nc: 3\n").unwrap_err();
        match &err {
            ConfigError::Yaml { file, line, .. } => {
                assert_eq!(file, "<string>");
                assert!(*line >= 2, "line {line}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn legacy_format() {
        let text = "# a comment\n\
                    \n\
                    jobmanager.rpc.address: host-a\n\
                    rest.port: 8082   # trailing comment\n\
                    this line is malformed\n\
                    novalue:\n\
                    url: http://x/#frag\n\
                    quoted: \"kept\"\n\
                    jobmanager.rpc.address: host-b\n\
                    \x20  indented.key:   spaced value  \n";
        let c = Configuration::from_legacy_str(text);
        assert_eq!(
            entries(&c),
            vec![
                ("indented.key".to_owned(), "spaced value".to_owned()),
                ("jobmanager.rpc.address".to_owned(), "host-b".to_owned()),
                ("quoted".to_owned(), "\"kept\"".to_owned()),
                ("rest.port".to_owned(), "8082".to_owned()),
                ("url".to_owned(), "http://x/#frag".to_owned()),
            ]
        );
    }

    #[test]
    fn load_prefers_config_yaml_over_legacy() {
        let dir = TempDir::new();
        dir.write(LEGACY_CONFIG_FILE_NAME, "rest.port: 1111\nonly.legacy: yes\n");
        dir.write(CONFIG_FILE_NAME, "rest:\n  port: 2222\n");
        let c = Configuration::load(Some(&dir.0), &[]).unwrap();
        assert_eq!(c.get(&REST_PORT).unwrap(), 2222);
        assert!(!c.contains("only.legacy"));
    }

    #[test]
    fn load_falls_back_to_legacy_then_empty() {
        let dir = TempDir::new();
        assert!(Configuration::load(Some(&dir.0), &[]).unwrap().is_empty());
        dir.write(LEGACY_CONFIG_FILE_NAME, "rest.port: 1111\n");
        let c = Configuration::load(Some(&dir.0), &[]).unwrap();
        assert_eq!(c.get(&REST_PORT).unwrap(), 1111);
        let missing = dir.0.join("does-not-exist");
        assert!(Configuration::load(Some(&missing), &[]).unwrap().is_empty());
    }

    #[test]
    fn dynamic_overrides_win_in_order() {
        let dir = TempDir::new();
        dir.write(CONFIG_FILE_NAME, "rest.port: 2222\nparallelism.default: 4\n");
        let dynamic = vec![
            ("rest.port".to_owned(), "3333".to_owned()),
            ("rest.port".to_owned(), "4444".to_owned()),
            ("new.key".to_owned(), "v".to_owned()),
        ];
        let c = Configuration::load(Some(&dir.0), &dynamic).unwrap();
        assert_eq!(c.get(&REST_PORT).unwrap(), 4444);
        assert_eq!(c.get(&PARALLELISM_DEFAULT).unwrap(), 4);
        assert_eq!(c.get_raw("new.key"), Some("v"));

        let only = Configuration::load(None, &dynamic).unwrap();
        assert_eq!(only.len(), 2);
    }

    #[test]
    fn yaml_syntax_error_in_file_names_file_and_line() {
        let dir = TempDir::new();
        dir.write(CONFIG_FILE_NAME, "a: 1\nb: 2\nc: [oops\n");
        let err = Configuration::load(Some(&dir.0), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("config.yaml"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
        match err {
            ConfigError::Yaml { file, line, .. } => {
                assert!(file.ends_with(CONFIG_FILE_NAME));
                assert!(line >= 3, "line {line}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn deprecated_keys() {
        let old = conf(&[("akka.ask.timeout", "3 s")]);
        assert_eq!(old.get(&PEKKO_ASK_TIMEOUT).unwrap(), Duration::from_secs(3));
        let both = conf(&[("akka.ask.timeout", "3 s"), ("pekko.ask.timeout", "7 s")]);
        assert_eq!(both.get(&PEKKO_ASK_TIMEOUT).unwrap(), Duration::from_secs(7));
        let frame = conf(&[("akka.framesize", "20 mb")]);
        assert_eq!(frame.get(&PEKKO_FRAMESIZE).unwrap(), MemorySize::from_mebibytes(20));
        let err = conf(&[("akka.ask.timeout", "soon")]).get(&PEKKO_ASK_TIMEOUT).unwrap_err();
        assert!(err.to_string().contains("'akka.ask.timeout'"), "{err}");
    }

    #[test]
    fn defaults() {
        let c = Configuration::new();
        assert_eq!(c.get(&JOB_MANAGER_RPC_ADDRESS).unwrap(), "localhost");
        assert_eq!(c.get(&JOB_MANAGER_RPC_PORT).unwrap(), 6123);
        assert_eq!(c.get(&REST_PORT).unwrap(), 8081);
        assert!(c.get(&TASK_MANAGER_RPC_PORT).unwrap().is_any());
        assert_eq!(c.get(&TASK_MANAGER_NUM_TASK_SLOTS).unwrap(), 1);
        assert_eq!(c.get(&HEARTBEAT_INTERVAL).unwrap(), Duration::from_secs(10));
        assert_eq!(c.get(&HEARTBEAT_TIMEOUT).unwrap(), Duration::from_secs(50));
        assert_eq!(c.get(&HEARTBEAT_RPC_FAILURE_THRESHOLD).unwrap(), 2);
        assert_eq!(c.get(&PEKKO_ASK_TIMEOUT).unwrap(), Duration::from_secs(10));
        assert_eq!(c.get(&PEKKO_FRAMESIZE).unwrap().bytes(), 10_485_760);
        assert_eq!(c.get(&SLOT_REQUEST_TIMEOUT).unwrap(), Duration::from_secs(300));
        assert_eq!(c.get(&SLOT_IDLE_TIMEOUT).unwrap(), Duration::from_secs(50));
        assert_eq!(c.get(&CLUSTER_REGISTRATION_INITIAL_TIMEOUT).unwrap(), Duration::from_millis(100));
        assert_eq!(c.get(&CLUSTER_REGISTRATION_MAX_TIMEOUT).unwrap(), Duration::from_secs(30));
        assert_eq!(c.get(&TASK_MANAGER_MANAGED_MEMORY_SIZE).unwrap().mebibytes(), 128);
        assert_eq!(c.get(&TASK_MANAGER_NETWORK_MEMORY_MIN).unwrap().mebibytes(), 64);
        assert_eq!(c.get(&ENV_PID_DIR).unwrap(), "/tmp");
        assert_eq!(c.get(&WEB_REFRESH_INTERVAL).unwrap(), 3000);
        assert!(!c.get(&REST_FLAMEGRAPH_ENABLED).unwrap());
        assert_eq!(c.get_optional(&REST_ADDRESS).unwrap(), None);
        assert_eq!(c.get_optional(&TASK_MANAGER_CPU_CORES).unwrap(), None);
        assert!(matches!(
            c.get(&TASK_MANAGER_HOST),
            Err(ConfigError::Missing { key }) if key == "taskmanager.host"
        ));
        for opt in ALL_OPTIONS {
            opt.check_default().unwrap();
        }
        assert!(c.validate().is_ok());
    }

    #[test]
    fn set_value_wins_over_default() {
        let c = conf(&[("taskmanager.cpu.cores", "2.5"), ("rest.flamegraph.enabled", "TRUE")]);
        assert_eq!(c.get_optional(&TASK_MANAGER_CPU_CORES).unwrap(), Some(2.5));
        assert!(c.get(&REST_FLAMEGRAPH_ENABLED).unwrap());
    }

    #[test]
    fn every_duration_unit() {
        let cases: &[(&str, Duration)] = &[
            ("7", Duration::from_millis(7)),
            ("7ns", Duration::from_nanos(7)),
            ("7 nano", Duration::from_nanos(7)),
            ("7 nanos", Duration::from_nanos(7)),
            ("7 nanosecond", Duration::from_nanos(7)),
            ("7 nanoseconds", Duration::from_nanos(7)),
            ("7µs", Duration::from_micros(7)),
            ("7 us", Duration::from_micros(7)),
            ("7 micro", Duration::from_micros(7)),
            ("7 micros", Duration::from_micros(7)),
            ("7 microsecond", Duration::from_micros(7)),
            ("7 microseconds", Duration::from_micros(7)),
            ("7ms", Duration::from_millis(7)),
            ("7 milli", Duration::from_millis(7)),
            ("7 millis", Duration::from_millis(7)),
            ("7 millisecond", Duration::from_millis(7)),
            ("7 milliseconds", Duration::from_millis(7)),
            ("7s", Duration::from_secs(7)),
            ("7 sec", Duration::from_secs(7)),
            ("7 secs", Duration::from_secs(7)),
            ("7 second", Duration::from_secs(7)),
            ("7 seconds", Duration::from_secs(7)),
            ("7min", Duration::from_secs(7 * 60)),
            ("7 m", Duration::from_secs(7 * 60)),
            ("7 minute", Duration::from_secs(7 * 60)),
            ("7 minutes", Duration::from_secs(7 * 60)),
            ("7h", Duration::from_secs(7 * 3600)),
            ("7 hour", Duration::from_secs(7 * 3600)),
            ("7 hours", Duration::from_secs(7 * 3600)),
            ("7d", Duration::from_secs(7 * 86400)),
            ("7 day", Duration::from_secs(7 * 86400)),
            ("7 days", Duration::from_secs(7 * 86400)),
            // Case and whitespace.
            ("  7   SECONDS  ", Duration::from_secs(7)),
            ("7Ms", Duration::from_millis(7)),
            ("7 MIN", Duration::from_secs(7 * 60)),
            ("\t10\tS\t", Duration::from_secs(10)),
            ("0", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(*expected), "{text}");
        }
    }

    #[test]
    fn invalid_durations() {
        for text in
            ["", "  ", "abc", "-1 s", "10 parsecs", "1.5 s", "s", "9223372036854775808", "9223372036854775807 d"]
        {
            assert!(parse_duration(text).is_err(), "{text:?} should be rejected");
        }
        assert!(parse_duration("9223372036854775807 ms").is_ok());
        let err = conf(&[("heartbeat.interval", "abc")]).get(&HEARTBEAT_INTERVAL).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value 'abc' for configuration key 'heartbeat.interval': \
             expected a duration such as '10 s' or '500 ms'"
        );
    }

    #[test]
    fn duration_formatting() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10 s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500 ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2 min");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2 h");
        assert_eq!(format_duration(Duration::from_secs(86400)), "1 d");
        assert_eq!(format_duration(Duration::from_micros(3)), "3 µs");
        assert_eq!(format_duration(Duration::from_nanos(1)), "1 ns");
        assert_eq!(format_duration(Duration::ZERO), "0 ms");
        for d in [Duration::from_millis(1234), Duration::from_secs(3600), Duration::from_nanos(5)] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn memory_sizes_in_all_units() {
        let cases: &[(&str, u64)] = &[
            ("100", 100),
            ("100b", 100),
            ("100 bytes", 100),
            ("3k", 3 << 10),
            ("3 kb", 3 << 10),
            ("3 kibibytes", 3 << 10),
            ("3m", 3 << 20),
            ("3 MB", 3 << 20),
            ("3 mebibytes", 3 << 20),
            ("3g", 3 << 30),
            ("3 Gb", 3 << 30),
            ("3 gibibytes", 3 << 30),
            ("3t", 3 << 40),
            ("3 tb", 3 << 40),
            ("3 tebibytes", 3 << 40),
            ("  10485760b ", 10_485_760),
        ];
        for (text, bytes) in cases {
            assert_eq!(MemorySize::parse_config(text).map(|m| m.bytes()), Ok(*bytes), "{text}");
        }
        for text in ["", "mb", "-1 mb", "1.5 gb", "10 pb", "18446744073709551615 kb", "99999999999999999999"] {
            assert!(MemorySize::parse_config(text).is_err(), "{text:?} should be rejected");
        }
        assert_eq!(MemorySize::from_mebibytes(10).to_string(), "10 mb");
        assert_eq!(MemorySize::from_bytes(1536).to_string(), "1536 bytes");
        assert_eq!(MemorySize::from_kibibytes(1536).to_string(), "1536 kb");
        assert_eq!(MemorySize::from_bytes(100).to_string(), "100 bytes");
        assert_eq!(MemorySize::ZERO.to_string(), "0 bytes");
        let m = MemorySize::from_bytes(5 << 30);
        assert_eq!((m.kibibytes(), m.mebibytes(), m.gibibytes()), (5 << 20, 5 << 10, 5));
        assert_eq!(m.to_string().parse::<MemorySize>(), Ok(m));
        let err =
            conf(&[("taskmanager.memory.managed.size", "lots")]).get(&TASK_MANAGER_MANAGED_MEMORY_SIZE).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("'lots'") && msg.contains("'taskmanager.memory.managed.size'"), "{msg}");
    }

    #[test]
    fn port_ranges() {
        let p = |s: &str| PortRange::parse_config(s);
        assert!(p("0").unwrap().is_any());
        assert_eq!(p("0").unwrap().ports(), vec![0]);
        assert_eq!(p("6123").unwrap().ports(), vec![6123]);
        assert_eq!(p(" 50100-50103 ").unwrap().ports(), vec![50100, 50101, 50102, 50103]);
        assert_eq!(p("50100, 50102-50104,9").unwrap().ports(), vec![50100, 50102, 50103, 50104, 9]);
        assert_eq!(p("65535").unwrap().ports(), vec![65535]);
        assert_eq!(p("7-7").unwrap().ports(), vec![7]);
        assert_eq!(p("50100,50102-50104").unwrap().to_string(), "50100,50102-50104");
        assert_eq!(PortRange::single(8081).ranges(), &[(8081, 8081)]);
        assert!(!p("6123").unwrap().is_any());
        for text in ["", " ", "abc", "65536", "1-", "-1", "5-3", "1,,2", "1,", "+5", "1-2-3", "80 81"] {
            assert!(p(text).is_err(), "{text:?} should be rejected");
        }
        let err = conf(&[("taskmanager.rpc.port", "70000")]).get(&TASK_MANAGER_RPC_PORT).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("'70000'") && msg.contains("'taskmanager.rpc.port'"), "{msg}");
    }

    #[test]
    fn scalar_parsers() {
        assert_eq!(bool::parse_config("True"), Ok(true));
        assert_eq!(bool::parse_config(" FALSE "), Ok(false));
        for text in ["yes", "1", "", "t"] {
            assert!(bool::parse_config(text).is_err(), "{text:?}");
        }
        assert_eq!(u16::parse_config(" 8081 "), Ok(8081));
        assert!(u16::parse_config("65536").is_err());
        assert!(u32::parse_config("-1").is_err());
        assert_eq!(i32::parse_config("-1"), Ok(-1));
        assert_eq!(i64::parse_config("-9"), Ok(-9));
        assert_eq!(u64::parse_config("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(usize::parse_config("3"), Ok(3));
        assert_eq!(f64::parse_config("0.5"), Ok(0.5));
        assert!(f64::parse_config("NaN").is_err());
        assert!(f64::parse_config("x").is_err());
        assert_eq!(String::parse_config(" kept "), Ok(" kept ".to_owned()));

        let err = conf(&[("rest.flamegraph.enabled", "maybe")]).get(&REST_FLAMEGRAPH_ENABLED).unwrap_err();
        assert!(matches!(
            &err,
            ConfigError::InvalidValue { key, value, .. }
                if key == "rest.flamegraph.enabled" && value == "maybe"
        ));
        let err = conf(&[("rest.port", "http")]).get(&REST_PORT).unwrap_err();
        assert!(err.to_string().contains("'http'") && err.to_string().contains("'rest.port'"));
    }

    #[test]
    fn validate_collects_all_problems() {
        let c = conf(&[
            ("heartbeat.interval", "abc"),
            ("rest.port", "99999"),
            ("taskmanager.memory.managed.size", "lots"),
            ("taskmanager.numberOfTaskSlots", "0"),
            ("akka.framesize", "100b"),
            ("unrelated.key", "whatever"),
        ]);
        let err = c.validate().unwrap_err();
        let ConfigError::Invalid { problems } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(problems.len(), 5, "{problems:#?}");
        let all = err.to_string();
        for needle in [
            "'heartbeat.interval'",
            "'abc'",
            "'rest.port'",
            "'99999'",
            "'lots'",
            "'taskmanager.numberOfTaskSlots' must be at least 1, got '0'",
            "'pekko.framesize' must be at least 1 kb, got '100b'",
        ] {
            assert!(all.contains(needle), "missing {needle} in {all}");
        }
        assert_eq!(all.matches("; ").count(), problems.len() - 1, "{all}");
    }

    #[test]
    fn validate_heartbeat_rules() {
        let err = conf(&[("heartbeat.interval", "60 s")]).validate().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("'heartbeat.timeout' ('50000') must be greater than 'heartbeat.interval' ('60 s')"),
            "{msg}"
        );

        let err = conf(&[("heartbeat.interval", "0")]).validate().unwrap_err();
        let ConfigError::Invalid { problems } = err else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("'heartbeat.interval' must be greater than 0, got '0'"));

        assert!(conf(&[("heartbeat.interval", "1 s"), ("heartbeat.timeout", "5 s")]).validate().is_ok());
    }

    #[test]
    fn unknown_keys_reported_known_prefixes_not() {
        let c = conf(&[
            ("jobmanager.rpc.address", "a"),
            ("akka.ask.timeout", "1 s"),
            ("jobmanager.memory.process.size", "1 gb"),
            ("high-availability.type", "zookeeper"),
            ("state.backend.type", "hashmap"),
            ("execution.checkpointing.interval", "1 min"),
            ("restart-strategy.type", "fixed-delay"),
            ("pipeline.name", "p"),
            ("metrics.reporters", "x"),
            ("env.java.opts.all", "-Xmx1g"),
            ("jobmanager.rpc.adress", "typo"),
            ("zzz", "1"),
        ]);
        assert_eq!(c.warn_unknown_keys(), vec!["jobmanager.rpc.adress".to_owned(), "zzz".to_owned()]);
        assert!(Configuration::new().warn_unknown_keys().is_empty());

        let keys = known_keys();
        assert!(keys.contains(&"akka.framesize"));
        assert!(keys.contains(&"heartbeat.timeout"));
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ALL_OPTIONS.len(), 84);
    }

    #[test]
    fn dynamic_property_parsing() {
        assert_eq!(
            Configuration::parse_dynamic_property(" rest.port =8082").unwrap(),
            ("rest.port".to_owned(), "8082".to_owned())
        );
        assert_eq!(
            Configuration::parse_dynamic_property("env.java.opts.all=-Da=b").unwrap(),
            ("env.java.opts.all".to_owned(), "-Da=b".to_owned())
        );
        assert_eq!(Configuration::parse_dynamic_property("k=").unwrap(), ("k".to_owned(), String::new()));
        for bad in ["novalue", "=v", "  =v", ""] {
            let err = Configuration::parse_dynamic_property(bad).unwrap_err();
            assert!(matches!(err, ConfigError::InvalidDynamicProperty { .. }), "{bad}");
            assert!(err.to_string().contains("key=value"), "{err}");
        }
    }

    #[test]
    fn entries_sorted_and_accessors() {
        let mut c = conf(&[("b", "2"), ("a", "1"), ("c", "3")]);
        assert_eq!(c.entries().map(|(k, _)| k).collect::<Vec<_>>(), vec!["a", "b", "c"]);
        assert!(c.contains("a"));
        assert_eq!(c.remove("a"), Some("1".to_owned()));
        assert!(!c.contains("a"));
        assert_eq!(c.get_raw("b"), Some("2"));
        assert_eq!(c.len(), 2);
    }
}
