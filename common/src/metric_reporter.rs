//! Flink's Prometheus metric reporter: every process that has one configured serves its
//! metrics on `http://<host>:<port>/metrics` in the Prometheus exposition format, with
//! Flink's metric and label names.
//!
//! - Configuration as in Flink: `metrics.reporter.<name>.factory.class:
//!   org.apache.flink.metrics.prometheus.PrometheusReporterFactory` (or the legacy
//!   `metrics.reporter.<name>.class: org.apache.flink.metrics.prometheus.PrometheusReporter`),
//!   `metrics.reporter.<name>.port` (default `9249`; ranges such as `9250-9260` and lists:
//!   each process takes the first free port, so a jobmanager and taskmanagers on one
//!   machine share a range), `metrics.reporter.<name>.filterLabelValueCharacters` (default
//!   true), and `metrics.reporters` to pick some of the configured reporters. A reporter of
//!   another kind (JMX, Slf4j, ...) is logged and skipped, as Flink skips a reporter it
//!   cannot instantiate.
//! - [`MetricPoint`]: one value with its [`Scope`] and variables. Names are Flink's:
//!   `flink_<scope>_<metric>` (`flink_taskmanager_job_task_operator_numRecordsIn`), every
//!   character outside `[a-zA-Z0-9:_]` of the metric name replaced by `_`; labels are the
//!   scope's variables (`host`, `tm_id`, `job_id`, `job_name`, `task_name`, `subtask_index`,
//!   ...) with the same replacement in values unless `filterLabelValueCharacters` is off.
//!   Like Flink's reporter, every metric is exposed as a gauge (Flink's counters can go down
//!   across restarts; meters are their rate).
//! - The values are gathered at each scrape by the process ([`Gather`]) and encoded by the
//!   Prometheus project's `prometheus-client` crate through a [`Collector`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tracing::{error, info, warn};

use crate::config::{Configuration, PortRange};

const PROMETHEUS_FACTORY: &str = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory";
const PROMETHEUS_CLASS: &str = "org.apache.flink.metrics.prometheus.PrometheusReporter";
const DEFAULT_PORT: &str = "9249";

/// Which of Flink's metric groups a value belongs to; it names the metric's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    JobManager,
    JobManagerJob,
    TaskManager,
    TaskManagerJobTask,
    TaskManagerJobTaskOperator,
}

impl Scope {
    /// Flink's logical scope with `.` as `_`.
    pub fn prefix(self) -> &'static str {
        match self {
            Scope::JobManager => "jobmanager",
            Scope::JobManagerJob => "jobmanager_job",
            Scope::TaskManager => "taskmanager",
            Scope::TaskManagerJobTask => "taskmanager_job_task",
            Scope::TaskManagerJobTaskOperator => "taskmanager_job_task_operator",
        }
    }
}

/// One metric value with its scope and the scope's variables (label name, value).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPoint {
    pub scope: Scope,
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl MetricPoint {
    /// The Prometheus metric name: `flink_<scope>_<name>`.
    pub fn prometheus_name(&self) -> String {
        format!("flink_{}_{}", self.scope.prefix(), replace_invalid_chars(&self.name))
    }
}

/// Flink's reporter's character filter: everything outside `[a-zA-Z0-9:_]` becomes `_`.
pub fn replace_invalid_chars(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == ':' || c == '_' { c } else { '_' }).collect()
}

/// A configured Prometheus reporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusReporterSpec {
    pub name: String,
    pub ports: PortRange,
    pub filter_label_values: bool,
}

/// A reporter that cannot be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReporterError {
    #[error("invalid value '{value}' for 'metrics.reporter.{reporter}.{key}': {reason}")]
    InvalidOption { reporter: String, key: &'static str, value: String, reason: String },
    #[error("metric reporter '{reporter}' could not bind any port of {ports}: {reason}")]
    NoFreePort { reporter: String, ports: String, reason: String },
}

impl ReporterError {
    /// A bad option stays bad; a busy port range may free up.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReporterError::NoFreePort { .. })
    }
}

/// The Prometheus reporters the configuration asks for.
pub fn prometheus_reporters(config: &Configuration) -> Result<Vec<PrometheusReporterSpec>, ReporterError> {
    let mut names: Vec<String> = config
        .entries()
        .filter_map(|(key, _)| key.strip_prefix("metrics.reporter."))
        .filter_map(|rest| rest.strip_suffix(".factory.class").or_else(|| rest.strip_suffix(".class")))
        .filter(|name| !name.is_empty() && !name.contains('.'))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    if let Some(chosen) = config.get_raw("metrics.reporters") {
        let chosen: Vec<&str> = chosen.split(',').map(str::trim).collect();
        names.retain(|n| chosen.contains(&n.as_str()));
    }
    let mut specs = Vec::new();
    for name in names {
        let option = |key: &str| config.get_raw(&format!("metrics.reporter.{name}.{key}")).map(str::trim);
        let factory = option("factory.class");
        let class = option("class");
        if factory != Some(PROMETHEUS_FACTORY) && class != Some(PROMETHEUS_CLASS) {
            warn!(reporter = %name, kind = factory.or(class).unwrap_or(""), "metric reporter not available in Flint, not started");
            continue;
        }
        let port_text = option("port").unwrap_or(DEFAULT_PORT);
        let ports: PortRange = port_text.parse().map_err(|reason| ReporterError::InvalidOption {
            reporter: name.clone(),
            key: "port",
            value: port_text.to_string(),
            reason,
        })?;
        let filter_label_values = match option("filterLabelValueCharacters").map(str::to_ascii_lowercase).as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(ReporterError::InvalidOption {
                    reporter: name,
                    key: "filterLabelValueCharacters",
                    value: other.to_string(),
                    reason: "expected true or false".into(),
                })
            }
        };
        specs.push(PrometheusReporterSpec { name, ports, filter_label_values });
    }
    Ok(specs)
}

/// A label value written in the exposition format's escaping (`\`, `"` and newlines).
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A metric's label names and values.
type Labels = Vec<(&'static str, String)>;

/// One scrape's values, grouped into families by Prometheus name.
#[derive(Debug)]
struct Scrape {
    families: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, series) in &self.families {
            let gauge = ConstGauge::new(0.0f64);
            let mut family = encoder.encode_descriptor(name, name, None, gauge.metric_type())?;
            for (labels, value) in series {
                let labels: Vec<(&str, Escaped)> = labels.iter().map(|(k, v)| (*k, Escaped(v))).collect();
                ConstGauge::new(*value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The exposition text of `points` (OpenMetrics, which Prometheus reads).
pub fn encode(points: Vec<MetricPoint>, filter_label_values: bool) -> String {
    let mut families: BTreeMap<String, Vec<(Labels, f64)>> = BTreeMap::new();
    for point in points {
        let name = point.prometheus_name();
        let labels = point
            .labels
            .into_iter()
            .map(|(k, v)| (k, if filter_label_values { replace_invalid_chars(&v) } else { v }))
            .collect();
        families.entry(name).or_default().push((labels, point.value));
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { families }));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// What a process reports at each scrape.
pub type Gather = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<MetricPoint>>>> + Send + Sync>;

struct ReporterState {
    gather: Gather,
    filter_label_values: bool,
}

async fn scrape(state: web::Data<ReporterState>) -> HttpResponse {
    let points = (state.gather)().await;
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(encode(points, state.filter_label_values))
}

/// Starts the configured Prometheus reporters (inside an actix or tokio runtime); a
/// reporter that cannot start is logged and skipped, as in Flink. Returns the bound
/// addresses.
pub fn start_prometheus_reporters(config: &Configuration, bind_host: &str, gather: Gather) -> Vec<SocketAddr> {
    let specs = match prometheus_reporters(config) {
        Ok(specs) => specs,
        Err(e) => {
            error!(error = %e, "metric reporters not started");
            return Vec::new();
        }
    };
    let mut bound = Vec::new();
    for spec in specs {
        match start_one(&spec, bind_host, gather.clone()) {
            Ok(address) => {
                info!(reporter = %spec.name, %address, "started the Prometheus reporter");
                bound.push(address);
            }
            Err(e) => error!(error = %e, "metric reporter not started"),
        }
    }
    bound
}

fn start_one(spec: &PrometheusReporterSpec, bind_host: &str, gather: Gather) -> Result<SocketAddr, ReporterError> {
    let no_port = |reason: String| ReporterError::NoFreePort {
        reporter: spec.name.clone(),
        ports: spec.ports.to_string(),
        reason,
    };
    let mut last_error = String::from("no port given");
    let listener = spec
        .ports
        .iter()
        .find_map(|port| match std::net::TcpListener::bind((bind_host, port)) {
            Ok(l) => Some(l),
            Err(e) => {
                last_error = e.to_string();
                None
            }
        })
        .ok_or_else(|| no_port(last_error.clone()))?;
    let address = listener.local_addr().map_err(|e| no_port(e.to_string()))?;
    let state = web::Data::new(ReporterState { gather, filter_label_values: spec.filter_label_values });
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().app_data(state.clone()).default_service(web::get().to(scrape))
    })
    .workers(1)
    .max_connections(64)
    .client_request_timeout(std::time::Duration::from_secs(10))
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(|e| no_port(e.to_string()))?
    .run();
    actix_web::rt::spawn(server);
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entries: &[(&str, &str)]) -> Configuration {
        let mut c = Configuration::new();
        for (k, v) in entries {
            c.set(*k, *v);
        }
        c
    }

    #[test]
    fn reporters_are_configured_with_flinks_keys() {
        let c = config(&[
            ("metrics.reporter.prom.factory.class", PROMETHEUS_FACTORY),
            ("metrics.reporter.prom.port", "9250-9260"),
            ("metrics.reporter.old.class", PROMETHEUS_CLASS),
            ("metrics.reporter.old.filterLabelValueCharacters", "false"),
            ("metrics.reporter.jmx.factory.class", "org.apache.flink.metrics.jmx.JMXReporterFactory"),
        ]);
        let specs = prometheus_reporters(&c).unwrap();
        assert_eq!(specs.len(), 2, "{specs:?}");
        assert_eq!(specs[0].name, "old");
        assert!(!specs[0].filter_label_values);
        assert_eq!(specs[0].ports.ports(), vec![9249]);
        assert_eq!(specs[1].ports.ranges(), &[(9250, 9260)]);
        let mut chosen = c.clone();
        chosen.set("metrics.reporters", "prom");
        assert_eq!(prometheus_reporters(&chosen).unwrap().len(), 1);
        let bad = config(&[("metrics.reporter.p.factory.class", PROMETHEUS_FACTORY), ("metrics.reporter.p.port", "x")]);
        let err = prometheus_reporters(&bad).unwrap_err();
        assert!(err.to_string().contains("metrics.reporter.p.port"), "{err}");
        assert!(!err.is_retryable());
        assert!(prometheus_reporters(&Configuration::new()).unwrap().is_empty());
    }

    #[test]
    fn the_text_has_flinks_names_and_escaped_labels() {
        let point = |name: &str, job: &str, value: f64| MetricPoint {
            scope: Scope::TaskManagerJobTaskOperator,
            name: name.to_string(),
            labels: vec![("job_name", job.to_string()), ("subtask_index", "0".to_string())],
            value,
        };
        let points =
            vec![point("numRecordsIn", "my job", 12.0), point("numRecordsIn", "b", 3.0), point("x.y", "q\"\n", 0.5)];
        let filtered = encode(points.clone(), true);
        assert!(filtered.contains("# TYPE flink_taskmanager_job_task_operator_numRecordsIn gauge"), "{filtered}");
        assert!(
            filtered.contains(
                "flink_taskmanager_job_task_operator_numRecordsIn{job_name=\"my_job\",subtask_index=\"0\"} 12.0"
            ),
            "{filtered}"
        );
        assert!(filtered.contains("flink_taskmanager_job_task_operator_x_y{job_name=\"q__\""), "{filtered}");
        assert_eq!(filtered.matches("# TYPE flink_taskmanager_job_task_operator_numRecordsIn").count(), 1);
        let raw = encode(points, false);
        assert!(raw.contains("job_name=\"q\\\"\\n\""), "{raw}");
    }
}
