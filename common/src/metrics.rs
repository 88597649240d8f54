//! Metrics as Flink names and serves them.
//!
//! - [`RateWindow`]: a per-second rate over a sliding window of cumulative samples, as
//!   Flink's `MeterView` and `TimerGauge` compute `numRecordsInPerSecond` and
//!   `busyTimeMsPerSecond` (60 s windows), except that a young window averages over the
//!   history it has instead of counting the missing seconds as zero.
//! - [`MetricsQuery`]: the `get=` and `agg=` parameters of Flink's metric REST calls, and the
//!   JSON those calls answer: `[{"id"}]` without `get`, `[{"id","value"}]` for one
//!   component, `[{"id","min","max","avg","sum","skew"}]` aggregated over several.
//!
//! Values travel as numbers (`f64`); the REST API prints them as Flink does: integers
//! without a fraction, `NaN` as the string `NaN`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Flink's window for meters and time gauges.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// A per-second rate over the last `span` of cumulative samples.
#[derive(Clone, Debug)]
pub struct RateWindow {
    span: Duration,
    samples: VecDeque<(Instant, f64)>,
}

impl RateWindow {
    pub fn new(span: Duration) -> Self {
        Self { span, samples: VecDeque::new() }
    }

    /// Records the cumulative value at `now`. Keeps one sample at or before the window's
    /// start, so the rate always spans the whole window once it is full.
    pub fn record(&mut self, now: Instant, cumulative: f64) {
        self.samples.push_back((now, cumulative));
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= self.span {
            self.samples.pop_front();
        }
    }

    /// The increase per second between the oldest and the newest sample; 0 with fewer
    /// than two samples.
    pub fn per_second(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, v0)), Some((t1, v1))) if t1 > t0 => (v1 - v0) / t1.duration_since(*t0).as_secs_f64(),
            _ => 0.0,
        }
    }
}

impl Default for RateWindow {
    fn default() -> Self {
        Self::new(RATE_WINDOW)
    }
}

/// An aggregation of Flink's metric REST calls (`agg=min,max,avg,sum,skew`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregation {
    Min,
    Max,
    Avg,
    Sum,
    Skew,
}

impl Aggregation {
    /// Flink's order when no `agg` is given.
    pub const ALL: [Aggregation; 5] =
        [Aggregation::Min, Aggregation::Max, Aggregation::Avg, Aggregation::Sum, Aggregation::Skew];

    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Avg => "avg",
            Aggregation::Sum => "sum",
            Aggregation::Skew => "skew",
        }
    }

    fn parse(text: &str) -> Result<Self, MetricsQueryError> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| MetricsQueryError::UnknownAggregation { given: text.chars().take(64).collect() })
    }

    /// The aggregate of `values` (not empty). Skew is Flink's: the mean absolute deviation
    /// as a percentage of the mean, at most 100, and 0 for a mean of 0.
    pub fn apply(self, values: &[f64]) -> f64 {
        let n = values.len() as f64;
        let sum: f64 = values.iter().sum();
        match self {
            Aggregation::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregation::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Aggregation::Sum => sum,
            Aggregation::Avg => sum / n,
            Aggregation::Skew => {
                let avg = sum / n;
                if avg == 0.0 || values.is_empty() {
                    return 0.0;
                }
                let deviation = values.iter().map(|v| (avg - v).abs()).sum::<f64>() / n;
                (deviation / avg * 100.0).min(100.0)
            }
        }
    }
}

/// A metric query that cannot be answered (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsQueryError {
    #[error("Invalid value for query parameter 'agg': '{given}'. Known aggregations: min, max, avg, sum, skew.")]
    UnknownAggregation { given: String },
}

impl MetricsQueryError {
    /// A bad query stays bad.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// The query parameters of Flink's metric calls.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct MetricsQuery {
    pub get: Option<String>,
    pub agg: Option<String>,
}

impl MetricsQuery {
    /// The metric ids asked for with `get`, in their order, without duplicates; `None`
    /// without `get` (the call then lists the available ids).
    pub fn requested(&self) -> Option<Vec<&str>> {
        let get = self.get.as_deref()?;
        let mut ids: Vec<&str> = Vec::new();
        for id in get.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Some(ids)
    }

    /// The aggregations asked for with `agg`, or all of them, in Flink's order.
    pub fn aggregations(&self) -> Result<Vec<Aggregation>, MetricsQueryError> {
        match self.agg.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(Aggregation::ALL.to_vec()),
            Some(list) => {
                let asked = list.split(',').filter(|s| !s.trim().is_empty()).map(Aggregation::parse).collect::<Result<
                    Vec<_>,
                    _,
                >>(
                )?;
                Ok(Aggregation::ALL.into_iter().filter(|a| asked.contains(a)).collect())
            }
        }
    }

    /// The answer for one component's metrics (`name → value`): the ids, or the values of
    /// the requested ids that exist (unknown ids are left out, as Flink does).
    pub fn answer(&self, metrics: &BTreeMap<String, f64>) -> Value {
        match self.requested() {
            None => Value::Array(metrics.keys().map(|id| json!({ "id": id })).collect()),
            Some(ids) => Value::Array(
                ids.into_iter()
                    .filter_map(|id| metrics.get(id).map(|v| json!({ "id": id, "value": format_value(*v) })))
                    .collect(),
            ),
        }
    }

    /// The answer aggregated over several components' metrics: the ids any component has,
    /// or per requested id the aggregations over the components that have it.
    pub fn answer_aggregated(&self, components: &[&BTreeMap<String, f64>]) -> Result<Value, MetricsQueryError> {
        let aggs = self.aggregations()?;
        let Some(ids) = self.requested() else {
            let mut all: Vec<&String> = components.iter().flat_map(|m| m.keys()).collect();
            all.sort();
            all.dedup();
            return Ok(Value::Array(all.into_iter().map(|id| json!({ "id": id })).collect()));
        };
        let mut out = Vec::new();
        for id in ids {
            let values: Vec<f64> = components.iter().filter_map(|m| m.get(id)).copied().collect();
            if values.is_empty() {
                continue;
            }
            let mut entry = Map::new();
            entry.insert("id".into(), Value::String(id.to_string()));
            for a in &aggs {
                entry.insert(a.name().into(), number(a.apply(&values)));
            }
            out.push(Value::Object(entry));
        }
        Ok(Value::Array(out))
    }
}

/// A metric value as Flink's REST API prints it: a string, integers without a fraction.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == i64::MIN as f64 {
        // "No watermark yet": Flink's Long.MIN_VALUE, exactly.
        i64::MIN.to_string()
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

/// A JSON number for an aggregate (Flink prints doubles; non-finite values become strings).
fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or_else(|| Value::String(format_value(v)), Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(get: Option<&str>, agg: Option<&str>) -> MetricsQuery {
        MetricsQuery { get: get.map(str::to_string), agg: agg.map(str::to_string) }
    }

    #[test]
    fn rates_span_the_history_they_have_and_then_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(Duration::from_secs(10));
        assert_eq!(w.per_second(), 0.0);
        w.record(t0, 0.0);
        assert_eq!(w.per_second(), 0.0);
        w.record(t0 + Duration::from_secs(2), 200.0);
        assert_eq!(w.per_second(), 100.0);
        // 100/s for 20 s, then nothing for 10 s: the window sees only the quiet part.
        for s in 3..=20 {
            w.record(t0 + Duration::from_secs(s), 100.0 * s as f64);
        }
        assert_eq!(w.per_second(), 100.0);
        for s in 21..=30 {
            w.record(t0 + Duration::from_secs(s), 2000.0);
        }
        assert_eq!(w.per_second(), 0.0);
        assert!(w.samples.len() <= 12, "{}", w.samples.len());
    }

    #[test]
    fn aggregations_are_flinks_including_the_skew() {
        let v = [1.0, 3.0];
        assert_eq!(Aggregation::Min.apply(&v), 1.0);
        assert_eq!(Aggregation::Max.apply(&v), 3.0);
        assert_eq!(Aggregation::Avg.apply(&v), 2.0);
        assert_eq!(Aggregation::Sum.apply(&v), 4.0);
        assert_eq!(Aggregation::Skew.apply(&v), 50.0);
        assert_eq!(Aggregation::Skew.apply(&[0.0, 0.0]), 0.0);
        assert_eq!(Aggregation::Skew.apply(&[0.0, 0.0, 0.0, 100.0]), 100.0);
    }

    #[test]
    fn answers_have_flinks_shapes() {
        let mut a = BTreeMap::new();
        a.insert("numRecordsOut".to_string(), 51467.0);
        a.insert("busyTimeMsPerSecond".to_string(), f64::NAN);
        let mut b = BTreeMap::new();
        b.insert("numRecordsOut".to_string(), 51456.0);
        assert_eq!(query(None, None).answer(&a), json!([{ "id": "busyTimeMsPerSecond" }, { "id": "numRecordsOut" }]));
        assert_eq!(
            query(Some("numRecordsOut,unknown,busyTimeMsPerSecond"), None).answer(&a),
            json!([{ "id": "numRecordsOut", "value": "51467" }, { "id": "busyTimeMsPerSecond", "value": "NaN" }])
        );
        assert_eq!(
            query(Some("numRecordsOut"), Some("sum,max")).answer_aggregated(&[&a, &b]).unwrap(),
            json!([{ "id": "numRecordsOut", "sum": 102923.0, "max": 51467.0 }])
        );
        let all = query(Some("numRecordsOut"), None).answer_aggregated(&[&a, &b]).unwrap();
        assert_eq!(all[0].as_object().unwrap().len(), 6);
        assert_eq!(query(None, None).answer_aggregated(&[&a, &b]).unwrap().as_array().unwrap().len(), 2);
        let bad = query(Some("numRecordsOut"), Some("median")).answer_aggregated(&[&a]);
        assert!(matches!(bad, Err(MetricsQueryError::UnknownAggregation { .. })));
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(i64::MIN as f64), "-9223372036854775808");
    }
}
