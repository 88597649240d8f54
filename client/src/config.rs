//! Locating and reading the cluster configuration, and working out which REST
//! endpoint the client talks to.
//!
//! The configuration directory is, in this order: `--configDir`, the
//! `FLINT_CONF_DIR` or `FLINK_CONF_DIR` environment variables, `$FLINT_HOME/conf`,
//! or the `conf/` directory of the installation (`<home>/bin/flint`) or of the
//! repository (`<repo>/target/release/flint`) the binary belongs to. Within it,
//! `config.yaml` (nested or flat YAML, as in Flink 1.19+) is read, else the
//! legacy flat `flink-conf.yaml`. Without either, defaults apply.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use yaml_rust2::{Yaml, YamlLoader};

/// Default port of the REST endpoint (`rest.port`).
pub const DEFAULT_REST_PORT: u16 = 8081;
/// Default address of the REST endpoint.
pub const DEFAULT_REST_ADDRESS: &str = "localhost";

/// A flat view of a configuration file: dotted keys to string values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Config {
    values: BTreeMap<String, String>,
    /// The file the values were read from, for messages.
    source: Option<PathBuf>,
}

impl Config {
    /// Reads the configuration of a directory: `config.yaml`, else
    /// `flink-conf.yaml`, else an empty configuration.
    pub fn load_dir(dir: &Path) -> Result<Config> {
        let yaml = dir.join("config.yaml");
        let legacy = dir.join("flink-conf.yaml");
        let (path, mut config) = if yaml.is_file() {
            let text = read(&yaml)?;
            let config =
                Config::parse_yaml(&text).with_context(|| format!("Invalid configuration file {}", yaml.display()))?;
            (yaml, config)
        } else if legacy.is_file() {
            let text = read(&legacy)?;
            (legacy, Config::parse_legacy(&text))
        } else {
            return Ok(Config::default());
        };
        config.source = Some(path);
        Ok(config)
    }

    /// Parses a `config.yaml`: nested mappings are flattened into dotted keys
    /// (`rest: {port: 8081}` is `rest.port`), flat dotted keys are taken as they
    /// are, and a later occurrence of a key wins.
    pub fn parse_yaml(text: &str) -> Result<Config> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut config = Config::default();
        for doc in &docs {
            match doc {
                Yaml::Hash(_) => flatten("", doc, &mut config.values),
                Yaml::Null => {}
                _ => bail!("the top level must be a mapping of option names to values"),
            }
        }
        Ok(config)
    }

    /// Parses a legacy `flink-conf.yaml` the way Flink does: one `key: value`
    /// per line, everything after a `#` is a comment, values are not unquoted,
    /// and the last occurrence of a key wins.
    pub fn parse_legacy(text: &str) -> Config {
        let mut config = Config::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some((key, value)) = line.split_once(": ") {
                let (key, value) = (key.trim(), value.trim());
                if !key.is_empty() && !value.is_empty() {
                    config.values.insert(key.to_string(), value.to_string());
                }
            }
        }
        config
    }

    /// The value of a dotted key, if set (and not empty).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every key and value (the TLS options are read through Flint's typed options).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Describes where the configuration came from, for messages.
    pub fn source_description(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => "the default configuration".to_string(),
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("Could not read configuration file {}", path.display()))
}

/// Flattens a YAML node into `out` under the key prefix `prefix`.
fn flatten(prefix: &str, node: &Yaml, out: &mut BTreeMap<String, String>) {
    match node {
        Yaml::Hash(map) => {
            for (key, value) in map {
                let Some(key) = scalar(key) else { continue };
                let full = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                flatten(&full, value, out);
            }
        }
        Yaml::Array(items) => {
            // Flink accepts lists for list-typed options; keep them in its
            // flat notation ("a;b;c").
            let items: Vec<String> = items.iter().filter_map(scalar).collect();
            out.insert(prefix.to_string(), items.join(";"));
        }
        Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => {}
        other => {
            if let Some(value) = scalar(other) {
                out.insert(prefix.to_string(), value);
            }
        }
    }
}

fn scalar(node: &Yaml) -> Option<String> {
    match node {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Where the environment says the configuration lives.
#[derive(Debug, Default, Clone)]
pub struct Environment {
    pub flint_conf_dir: Option<String>,
    pub flink_conf_dir: Option<String>,
    pub flint_home: Option<String>,
    /// The path of the running executable.
    pub exe: Option<PathBuf>,
}

impl Environment {
    /// The environment of this process.
    pub fn from_process() -> Environment {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Environment {
            flint_conf_dir: var("FLINT_CONF_DIR"),
            flink_conf_dir: var("FLINK_CONF_DIR"),
            flint_home: var("FLINT_HOME"),
            exe: std::env::current_exe().ok(),
        }
    }
}

/// Picks the configuration directory (see the module documentation). A
/// directory given explicitly (option or environment) must exist; the
/// implicit candidates are skipped when missing, and `None` means defaults.
pub fn find_conf_dir(cli: Option<&Path>, env: &Environment) -> Result<Option<PathBuf>> {
    let explicit = cli
        .map(|p| (p.to_path_buf(), "--configDir"))
        .or_else(|| env.flint_conf_dir.as_ref().map(|p| (PathBuf::from(p), "FLINT_CONF_DIR")))
        .or_else(|| env.flink_conf_dir.as_ref().map(|p| (PathBuf::from(p), "FLINK_CONF_DIR")));
    if let Some((dir, origin)) = explicit {
        if !dir.is_dir() {
            bail!("The configuration directory {} (from {origin}) does not exist", dir.display());
        }
        return Ok(Some(dir));
    }

    let mut candidates = Vec::new();
    if let Some(home) = &env.flint_home {
        candidates.push(Path::new(home).join("conf"));
    }
    if let Some(bin_dir) = env.exe.as_deref().and_then(Path::parent) {
        // <home>/bin/flint
        if let Some(home) = bin_dir.parent() {
            candidates.push(home.join("conf"));
            // <repo>/target/<profile>/flint
            if home.file_name().is_some_and(|name| name == "target") {
                if let Some(repo) = home.parent() {
                    candidates.push(repo.join("conf"));
                }
            }
        }
    }
    Ok(candidates.into_iter().find(|dir| dir.is_dir()))
}

/// The REST endpoint of a JobManager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `http` or `https` when `-m` named one; else the configuration decides
    /// (`security.ssl.rest.enabled`).
    pub scheme: Option<&'static str>,
}

impl Endpoint {
    /// The base URL, e.g. `http://localhost:8081` or, with `https`, `https://localhost:8081`
    /// (IPv6 hosts in brackets).
    pub fn base_url(&self, https: bool) -> String {
        let scheme = if https { "https" } else { "http" };
        format!("{scheme}://{self}")
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Works out the REST endpoint: `-m`/`--jobmanager` (`host`, `host:port`,
/// `[v6]:port`, optionally prefixed with `http://` or `https://`), else `rest.address`
/// (falling back to `jobmanager.rpc.address`, then `localhost`) and
/// `rest.port` (8081) from the configuration. A `-m` without a port uses the
/// configured `rest.port`.
pub fn resolve_endpoint(jobmanager: Option<&str>, config: &Config) -> Result<Endpoint> {
    let configured_port = || -> Result<u16> {
        match config.get("rest.port") {
            None => Ok(DEFAULT_REST_PORT),
            Some(p) => {
                parse_port(p).with_context(|| format!("Invalid rest.port '{p}' in {}", config.source_description()))
            }
        }
    };

    let Some(arg) = jobmanager else {
        let host = config
            .get("rest.address")
            .or_else(|| config.get("jobmanager.rpc.address"))
            .unwrap_or(DEFAULT_REST_ADDRESS)
            .to_string();
        return Ok(Endpoint { host, port: configured_port()?, scheme: None });
    };

    let invalid = |why: &str| anyhow::anyhow!("Invalid JobManager address '{arg}': {why}");
    let mut rest = arg.trim();
    let mut scheme = None;
    if let Some(stripped) = rest.strip_prefix("http://") {
        (rest, scheme) = (stripped, Some("http"));
    } else if let Some(stripped) = rest.strip_prefix("https://") {
        (rest, scheme) = (stripped, Some("https"));
    } else if rest.contains("://") {
        return Err(invalid("expected host:port"));
    }
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(invalid("expected host:port"));
    }

    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| invalid("unterminated '['"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(invalid("expected host:port")),
            },
        }
    } else {
        match rest.matches(':').count() {
            0 => (rest, None),
            // A bare IPv6 address.
            n if n > 1 => (rest, None),
            _ => {
                let (host, port) = rest.split_once(':').unwrap_or((rest, ""));
                (host, Some(port))
            }
        }
    };
    if host.is_empty() {
        return Err(invalid("the host is missing"));
    }
    let port = match port {
        Some(p) => parse_port(p).map_err(|e| invalid(&e.to_string()))?,
        None => configured_port()?,
    };
    Ok(Endpoint { host: host.to_string(), port, scheme })
}

fn parse_port(text: &str) -> Result<u16> {
    match text.trim().parse::<u16>() {
        Ok(0) => bail!("port 0 cannot be connected to"),
        Ok(port) => Ok(port),
        Err(_) => bail!("'{}' is not a valid port", text.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Config {
        Config::parse_yaml(text).expect("valid yaml")
    }

    #[test]
    fn nested_yaml_is_flattened() {
        let c = yaml(
            "jobmanager:\n  rpc:\n    address: jm\n    port: 6123\nrest:\n  port: 9000\n  \
             enabled: true\n  ratio: 0.5\n",
        );
        assert_eq!(c.get("jobmanager.rpc.address"), Some("jm"));
        assert_eq!(c.get("jobmanager.rpc.port"), Some("6123"));
        assert_eq!(c.get("rest.port"), Some("9000"));
        assert_eq!(c.get("rest.enabled"), Some("true"));
        assert_eq!(c.get("rest.ratio"), Some("0.5"));
        assert_eq!(c.get("rest"), None);
        assert_eq!(c.get("missing"), None);
    }

    #[test]
    fn flat_and_mixed_yaml() {
        let c = yaml(
            "# comment\nrest.port: 18081\nrest.address: \"host-a\" # trailing\n\
             env:\n  log.dir: /var/log\nempty:\nlist: [a, b]\n",
        );
        assert_eq!(c.get("rest.port"), Some("18081"));
        assert_eq!(c.get("rest.address"), Some("host-a"));
        assert_eq!(c.get("env.log.dir"), Some("/var/log"));
        assert_eq!(c.get("empty"), None);
        assert_eq!(c.get("list"), Some("a;b"));
    }

    #[test]
    fn empty_yaml_is_empty_config() {
        assert_eq!(yaml(""), Config::default());
        assert_eq!(yaml("# only comments\n"), Config::default());
    }

    #[test]
    fn invalid_yaml_is_an_error() {
        assert!(Config::parse_yaml("rest: [unclosed\n").is_err());
        assert!(Config::parse_yaml("- a\n- b\n").is_err());
    }

    #[test]
    fn legacy_config_last_wins_and_strips_comments() {
        let c = Config::parse_legacy(
            "rest.port: 1\n# rest.port: 3\nrest.address: a # comment\nrest.port: 2\n\
             nospace:x\nempty: \n",
        );
        assert_eq!(c.get("rest.port"), Some("2"));
        assert_eq!(c.get("rest.address"), Some("a"));
        assert_eq!(c.get("nospace"), None);
        assert_eq!(c.get("empty"), None);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flint-client-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn load_dir_prefers_config_yaml() {
        let dir = temp_dir("prefer");
        assert_eq!(Config::load_dir(&dir).unwrap(), Config::default());
        std::fs::write(dir.join("flink-conf.yaml"), "rest.port: 1111\n").unwrap();
        assert_eq!(Config::load_dir(&dir).unwrap().get("rest.port"), Some("1111"));
        std::fs::write(dir.join("config.yaml"), "rest:\n  port: 2222\n").unwrap();
        let c = Config::load_dir(&dir).unwrap();
        assert_eq!(c.get("rest.port"), Some("2222"));
        assert!(c.source_description().ends_with("config.yaml"));
        std::fs::write(dir.join("config.yaml"), "rest: [\n").unwrap();
        let err = Config::load_dir(&dir).unwrap_err();
        assert!(format!("{err:#}").contains("Invalid configuration file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conf_dir_precedence() {
        let a = temp_dir("conf-a");
        let b = temp_dir("conf-b");
        let home = temp_dir("home");
        std::fs::create_dir_all(home.join("conf")).unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_string();

        let env = Environment {
            flint_conf_dir: Some(s(&a)),
            flink_conf_dir: Some(s(&b)),
            flint_home: Some(s(&home)),
            exe: None,
        };
        assert_eq!(find_conf_dir(Some(&b), &env).unwrap(), Some(b.clone()));
        assert_eq!(find_conf_dir(None, &env).unwrap(), Some(a.clone()));
        let env = Environment { flint_conf_dir: None, ..env };
        assert_eq!(find_conf_dir(None, &env).unwrap(), Some(b.clone()));
        let env = Environment { flink_conf_dir: None, ..env };
        assert_eq!(find_conf_dir(None, &env).unwrap(), Some(home.join("conf")));

        // Installed layout: <home>/bin/flint next to <home>/conf.
        let env = Environment { flint_home: None, exe: Some(home.join("bin").join("flint")), ..Environment::default() };
        assert_eq!(find_conf_dir(None, &env).unwrap(), Some(home.join("conf")));
        // Repository layout: <repo>/target/release/flint next to <repo>/conf.
        let env =
            Environment { exe: Some(home.join("target").join("release").join("flint")), ..Environment::default() };
        assert_eq!(find_conf_dir(None, &env).unwrap(), Some(home.join("conf")));
        // Nothing found: defaults.
        assert_eq!(find_conf_dir(None, &Environment::default()).unwrap(), None);

        // An explicit directory must exist.
        let missing = a.join("missing");
        let err = find_conf_dir(Some(&missing), &Environment::default()).unwrap_err();
        assert!(err.to_string().contains("--configDir"), "{err}");
        let env = Environment { flink_conf_dir: Some(s(&missing)), ..Environment::default() };
        assert!(find_conf_dir(None, &env).unwrap_err().to_string().contains("FLINK_CONF_DIR"));

        for dir in [a, b, home] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    fn endpoint(host: &str, port: u16) -> Endpoint {
        Endpoint { host: host.to_string(), port, scheme: None }
    }

    #[test]
    fn endpoint_from_config() {
        let none = Config::default();
        assert_eq!(resolve_endpoint(None, &none).unwrap(), endpoint("localhost", 8081));
        let rpc_only = yaml("jobmanager.rpc.address: jm\n");
        assert_eq!(resolve_endpoint(None, &rpc_only).unwrap(), endpoint("jm", 8081));
        let both = yaml("jobmanager.rpc.address: jm\nrest:\n  address: web\n  port: 9091\n");
        assert_eq!(resolve_endpoint(None, &both).unwrap(), endpoint("web", 9091));
        let bad = yaml("rest.port: eighty\n");
        let err = resolve_endpoint(None, &bad).unwrap_err();
        assert!(format!("{err:#}").contains("Invalid rest.port 'eighty'"), "{err:#}");
    }

    #[test]
    fn endpoint_from_option() {
        let c = yaml("rest.address: web\nrest.port: 9091\n");
        let r = |arg: &str| resolve_endpoint(Some(arg), &c);
        assert_eq!(r("jm:8082").unwrap(), endpoint("jm", 8082));
        assert_eq!(r("jm").unwrap(), endpoint("jm", 9091));
        assert_eq!(r("http://jm:8082/").unwrap(), Endpoint { scheme: Some("http"), ..endpoint("jm", 8082) });
        assert_eq!(r("https://jm:8082").unwrap(), Endpoint { scheme: Some("https"), ..endpoint("jm", 8082) });
        assert_eq!(r("[::1]:8082").unwrap(), endpoint("::1", 8082));
        assert_eq!(r("[::1]").unwrap(), endpoint("::1", 9091));
        assert_eq!(r("::1").unwrap(), endpoint("::1", 9091));
        for bad in ["jm:", "jm:x", "jm:70000", "jm:0", ":8081", "ftp://jm:1", "jm:1/x", "[::1"] {
            assert!(r(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn endpoint_urls() {
        assert_eq!(endpoint("jm", 1).base_url(false), "http://jm:1");
        assert_eq!(endpoint("::1", 2).base_url(false), "http://[::1]:2");
        assert_eq!(endpoint("jm", 1).base_url(true), "https://jm:1");
    }
}
