//! Restart strategies: after a job fails, should it restart and how long to wait first.
//!
//! Pure logic with no I/O. The JobMaster calls [`RestartBackoff::on_failure`] once per
//! global failure, passing the current time, and gets back a [`RestartDecision`]. It
//! schedules the restart itself. Time is passed in and the jitter comes from a seed, so
//! tests give exact `Instant`s and never sleep.
//!
//! Layout:
//! - [`RestartStrategyConfig`]: the configured strategy, read from Flink's
//!   `restart-strategy.*` keys ([`RestartStrategyConfig::from_config`]), and the text
//!   `/jobs/:id/config` shows ([`RestartStrategyConfig::description`]).
//! - [`RestartBackoff`]: the state machine for one job, built from a config.
//!
//! The semantics follow Flink's `RestartBackoffTimeStrategy` implementations:
//! - `none`: every failure is final.
//! - `fixed-delay`: restart `attempts` times, each after `delay`; the next failure is final.
//! - `failure-rate`: restart after `delay`, unless more than `max_failures_per_interval`
//!   failures (this one included) fall within the `interval` ending now. A failure exactly
//!   `interval` ago still counts.
//! - `exponential-delay`: the first delay is `initial_backoff`. Each further failure
//!   multiplies it by `multiplier`, up to `max_backoff`. Every returned delay is moved up
//!   or down by a random fraction of at most `jitter_factor`, and never goes above
//!   `max_backoff`. If the job ran without failing for `reset_threshold` after its last
//!   restart (the failure time plus the delay), the backoff goes back to
//!   `initial_backoff` and the attempt count to zero. After `attempts_before_reset`
//!   restarts without a reset, the next failure is final.
//!
//! When nothing chooses a strategy: with checkpointing it is `exponential-delay` (Flink
//! 1.19+'s default: 1 s initial, 1 min max, multiplier 1.5, jitter 0.1, reset after 1 h,
//! unlimited attempts); without checkpointing it is `none`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use flint_common::config::{parse_duration, ConfigValue, Configuration};

/// The strategy type key, and its legacy name.
pub const TYPE_KEY: &str = "restart-strategy.type";
pub const LEGACY_TYPE_KEY: &str = "restart-strategy";

pub const FIXED_DELAY_ATTEMPTS: &str = "restart-strategy.fixed-delay.attempts";
pub const FIXED_DELAY_DELAY: &str = "restart-strategy.fixed-delay.delay";
pub const FAILURE_RATE_MAX_FAILURES: &str = "restart-strategy.failure-rate.max-failures-per-interval";
pub const FAILURE_RATE_INTERVAL: &str = "restart-strategy.failure-rate.failure-rate-interval";
pub const FAILURE_RATE_DELAY: &str = "restart-strategy.failure-rate.delay";
pub const EXPONENTIAL_INITIAL_BACKOFF: &str = "restart-strategy.exponential-delay.initial-backoff";
pub const EXPONENTIAL_MAX_BACKOFF: &str = "restart-strategy.exponential-delay.max-backoff";
pub const EXPONENTIAL_MULTIPLIER: &str = "restart-strategy.exponential-delay.backoff-multiplier";
pub const EXPONENTIAL_RESET_THRESHOLD: &str = "restart-strategy.exponential-delay.reset-backoff-threshold";
pub const EXPONENTIAL_JITTER: &str = "restart-strategy.exponential-delay.jitter-factor";
pub const EXPONENTIAL_ATTEMPTS: &str = "restart-strategy.exponential-delay.attempts-before-reset-backoff";

/// An attempt count meaning "no limit".
pub const UNLIMITED: u32 = u32::MAX;

const TYPE_EXPECTED: &str = "one of none, off, disable, fixed-delay, fixeddelay, failure-rate, failurerate, \
                             exponential-delay, exponentialdelay";

/// A configured restart strategy.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategyConfig {
    /// Never restart.
    None,
    /// Restart up to `attempts` times ([`UNLIMITED`] means no limit), each after `delay`.
    FixedDelay { attempts: u32, delay: Duration },
    /// Restart after `delay` unless more than `max_failures_per_interval` failures fall
    /// within `interval`.
    FailureRate { max_failures_per_interval: u32, interval: Duration, delay: Duration },
    /// Growing delays with jitter, reset after a quiet period.
    ExponentialDelay {
        initial_backoff: Duration,
        max_backoff: Duration,
        multiplier: f64,
        reset_threshold: Duration,
        jitter_factor: f64,
        /// [`UNLIMITED`] means no limit.
        attempts_before_reset: u32,
    },
}

/// The job's config, whose keys win, over the cluster's.
struct Sources<'a> {
    job: &'a BTreeMap<String, String>,
    cluster: &'a Configuration,
}

impl Sources<'_> {
    /// The first of `keys` set in the job's config, else the first set in the cluster's,
    /// with the key that was found.
    fn lookup(&self, keys: &[&'static str]) -> Option<(&'static str, &str)> {
        let in_job = keys.iter().find_map(|&k| self.job.get(k).map(|v| (k, v.as_str())));
        in_job.or_else(|| keys.iter().find_map(|&k| self.cluster.get_raw(k).map(|v| (k, v))))
    }

    /// Parses `key` with `parse`, or gives `default` when it is not set.
    fn get<T>(
        &self,
        key: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<(T, &'static str, String), String> {
        match self.lookup(&[key]) {
            Some((key, value)) => parse(value).map(|v| (v, key, value.to_owned())).map_err(|e| invalid(key, value, &e)),
            None => Ok((default, key, String::new())),
        }
    }

    /// Like [`Sources::get`], then checks `ok`; `rule` says what a valid value is.
    fn get_checked<T: Copy>(
        &self,
        key: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
        ok: impl FnOnce(T) -> bool,
        rule: &str,
    ) -> Result<T, String> {
        let (value, key, text) = self.get(key, default, parse)?;
        if ok(value) {
            Ok(value)
        } else {
            Err(invalid(key, &text, rule))
        }
    }

    fn duration(&self, key: &'static str, default: Duration) -> Result<Duration, String> {
        self.get(key, default, parse_duration).map(|(v, _, _)| v)
    }
}

fn invalid(key: &str, value: &str, expected: &str) -> String {
    format!("invalid value '{value}' for {key}: expected {expected}")
}

fn milliseconds(d: Duration) -> u128 {
    d.as_millis()
}

fn attempts_text(attempts: u32) -> String {
    if attempts == UNLIMITED {
        "unlimited".to_owned()
    } else {
        attempts.to_string()
    }
}

impl RestartStrategyConfig {
    /// Reads the strategy from a job's config map and the cluster configuration; a key
    /// set in the job's config wins over the same key in the cluster's. The type comes
    /// from `restart-strategy.type` (legacy `restart-strategy`); without one, the default
    /// is exponential-delay when `checkpointing_enabled`, else `none`. Only the chosen strategy's keys are read. The error names the key and
    /// the value.
    pub fn from_config(
        job: &BTreeMap<String, String>,
        cluster: &Configuration,
        checkpointing_enabled: bool,
    ) -> Result<Self, String> {
        let src = Sources { job, cluster };
        // As Flink 1.19+: without a type, checkpointing jobs use exponential-delay (with its
        // keys' values, if set), others none.
        let (type_key, type_value) = match src.lookup(&[TYPE_KEY, LEGACY_TYPE_KEY]) {
            Some(found) => found,
            None if checkpointing_enabled => (TYPE_KEY, "exponential-delay"),
            None => return Ok(RestartStrategyConfig::None),
        };
        match type_value.trim().to_ascii_lowercase().as_str() {
            "none" | "off" | "disable" => Ok(RestartStrategyConfig::None),
            "fixed-delay" | "fixeddelay" => Ok(RestartStrategyConfig::FixedDelay {
                attempts: src.get(FIXED_DELAY_ATTEMPTS, 1, u32::parse_config)?.0,
                delay: src.duration(FIXED_DELAY_DELAY, Duration::from_secs(1))?,
            }),
            "failure-rate" | "failurerate" => Ok(RestartStrategyConfig::FailureRate {
                max_failures_per_interval: src.get_checked(
                    FAILURE_RATE_MAX_FAILURES,
                    1,
                    u32::parse_config,
                    |n| n >= 1,
                    "at least 1",
                )?,
                interval: src.get_checked(
                    FAILURE_RATE_INTERVAL,
                    Duration::from_secs(60),
                    parse_duration,
                    |d| !d.is_zero(),
                    "a duration greater than zero",
                )?,
                delay: src.duration(FAILURE_RATE_DELAY, Duration::from_secs(1))?,
            }),
            "exponential-delay" | "exponentialdelay" => {
                let initial_backoff = src.get_checked(
                    EXPONENTIAL_INITIAL_BACKOFF,
                    Duration::from_secs(1),
                    parse_duration,
                    |d| !d.is_zero(),
                    "a duration greater than zero",
                )?;
                let rule = format!("a duration of at least the initial backoff ({} ms)", milliseconds(initial_backoff));
                let max_backoff = src.get_checked(
                    EXPONENTIAL_MAX_BACKOFF,
                    Duration::from_secs(60),
                    parse_duration,
                    |d| d >= initial_backoff,
                    &rule,
                )?;
                Ok(RestartStrategyConfig::ExponentialDelay {
                    initial_backoff,
                    max_backoff,
                    multiplier: src.get_checked(
                        EXPONENTIAL_MULTIPLIER,
                        1.5,
                        f64::parse_config,
                        |m| m >= 1.0,
                        "a number of at least 1",
                    )?,
                    reset_threshold: src.get_checked(
                        EXPONENTIAL_RESET_THRESHOLD,
                        Duration::from_secs(3600),
                        parse_duration,
                        |d| !d.is_zero(),
                        "a duration greater than zero",
                    )?,
                    jitter_factor: src.get_checked(
                        EXPONENTIAL_JITTER,
                        0.1,
                        f64::parse_config,
                        |j| (0.0..=1.0).contains(&j),
                        "a number between 0 and 1",
                    )?,
                    attempts_before_reset: src.get_checked(
                        EXPONENTIAL_ATTEMPTS,
                        UNLIMITED,
                        u32::parse_config,
                        |n| n >= 1,
                        "at least 1",
                    )?,
                })
            }
            _ => Err(invalid(type_key, type_value, TYPE_EXPECTED)),
        }
    }

    /// A sentence describing the strategy, for `/jobs/:id/config` (`restart-strategy`).
    pub fn description(&self) -> String {
        match *self {
            RestartStrategyConfig::None => "Restart deactivated.".to_owned(),
            RestartStrategyConfig::FixedDelay { attempts, delay } => {
                let delay = milliseconds(delay);
                if attempts == UNLIMITED {
                    format!("Restart with fixed delay ({delay} ms). Unlimited restart attempts.")
                } else {
                    format!("Restart with fixed delay ({delay} ms). #{attempts} restart attempts.")
                }
            }
            RestartStrategyConfig::FailureRate { max_failures_per_interval, interval, delay } => format!(
                "Failure rate restart with maximum of {max_failures_per_interval} failures within interval {} ms \
                 and fixed delay {} ms.",
                milliseconds(interval),
                milliseconds(delay)
            ),
            RestartStrategyConfig::ExponentialDelay {
                initial_backoff,
                max_backoff,
                multiplier,
                reset_threshold,
                jitter_factor,
                attempts_before_reset,
            } => {
                let attempts = if attempts_before_reset == UNLIMITED {
                    "Unlimited restart attempts before a reset.".to_owned()
                } else {
                    format!("#{attempts_before_reset} restart attempts before a reset.")
                };
                format!(
                    "Restart with exponential delay: starting at {} ms, increasing by {multiplier}, with maximum {} \
                     ms. Delay resets after {} ms with jitter {jitter_factor}. {attempts}",
                    milliseconds(initial_backoff),
                    milliseconds(max_backoff),
                    milliseconds(reset_threshold),
                )
            }
        }
    }

    /// Flink's name for the strategy with its parameters, used in failure reasons.
    fn strategy_name(&self) -> String {
        match *self {
            RestartStrategyConfig::None => "NoRestartBackoffTimeStrategy".to_owned(),
            RestartStrategyConfig::FixedDelay { attempts, delay } => format!(
                "FixedDelayRestartBackoffTimeStrategy(maxNumberRestartAttempts={}, backoffTimeMS={})",
                attempts_text(attempts),
                milliseconds(delay)
            ),
            RestartStrategyConfig::FailureRate { max_failures_per_interval, interval, delay } => format!(
                "FailureRateRestartBackoffTimeStrategy(failuresIntervalMS={}, backoffTimeMS={}, \
                 maxFailuresPerInterval={max_failures_per_interval})",
                milliseconds(interval),
                milliseconds(delay)
            ),
            RestartStrategyConfig::ExponentialDelay {
                initial_backoff,
                max_backoff,
                multiplier,
                reset_threshold,
                jitter_factor,
                attempts_before_reset,
            } => format!(
                "ExponentialDelayRestartBackoffTimeStrategy(initialBackoffMS={}, maxBackoffMS={}, \
                 backoffMultiplier={multiplier}, resetBackoffThresholdMS={}, jitterFactor={jitter_factor}, \
                 attemptsBeforeResetBackoff={})",
                milliseconds(initial_backoff),
                milliseconds(max_backoff),
                milliseconds(reset_threshold),
                attempts_text(attempts_before_reset)
            ),
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart the job after `delay`.
    Restart { delay: Duration },
    /// Fail the job for good.
    Fail { reason: String },
}

/// A small deterministic generator (SplitMix64), so the jitter follows from the seed.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The restart state of one job: decides, failure by failure, whether to restart.
///
/// Feed it failures in time order. After a [`RestartDecision::Fail`] the job is over;
/// further calls still answer but mean nothing.
#[derive(Debug, Clone)]
pub struct RestartBackoff {
    config: RestartStrategyConfig,
    /// Restarts decided so far.
    restarts: u32,
    /// Failure-rate: the latest failure times, oldest first.
    failures: VecDeque<Instant>,
    /// Exponential delay: the backoff before jitter for the latest restart.
    backoff: Duration,
    /// Exponential delay: restarts since the last reset.
    attempts_since_reset: u32,
    /// Exponential delay: when the latest restart was due (failure time plus delay).
    restarted_at: Option<Instant>,
    rng: SplitMix64,
}

impl RestartBackoff {
    /// A fresh state for `config`; `seed` drives the jitter of the exponential-delay strategy.
    pub fn new(config: RestartStrategyConfig, seed: u64) -> Self {
        Self {
            config,
            restarts: 0,
            failures: VecDeque::new(),
            backoff: Duration::ZERO,
            attempts_since_reset: 0,
            restarted_at: None,
            rng: SplitMix64(seed),
        }
    }

    /// The strategy this state follows.
    pub fn config(&self) -> &RestartStrategyConfig {
        &self.config
    }

    /// Number of restarts decided so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Records a failure at `now` and decides whether to restart. Call it once per global
    /// failure.
    pub fn on_failure(&mut self, now: Instant) -> RestartDecision {
        let delay = match self.config {
            RestartStrategyConfig::None => None,
            RestartStrategyConfig::FixedDelay { attempts, delay } => {
                (attempts == UNLIMITED || self.restarts < attempts).then_some(delay)
            }
            RestartStrategyConfig::FailureRate { max_failures_per_interval, interval, delay } => {
                self.failures.push_back(now);
                while self.failures.front().is_some_and(|&t| now.saturating_duration_since(t) > interval) {
                    self.failures.pop_front();
                }
                // One more than the limit is enough to decide; older entries are not needed.
                let keep = max_failures_per_interval as usize + 1;
                while self.failures.len() > keep {
                    self.failures.pop_front();
                }
                (self.failures.len() <= max_failures_per_interval as usize).then_some(delay)
            }
            RestartStrategyConfig::ExponentialDelay {
                initial_backoff,
                max_backoff,
                multiplier,
                reset_threshold,
                jitter_factor,
                attempts_before_reset,
            } => {
                let reset = self.restarted_at.is_none_or(|at| now.saturating_duration_since(at) >= reset_threshold);
                if reset {
                    self.backoff = initial_backoff.min(max_backoff);
                    self.attempts_since_reset = 0;
                } else {
                    self.backoff = grow(self.backoff, multiplier, max_backoff);
                }
                if attempts_before_reset != UNLIMITED && self.attempts_since_reset >= attempts_before_reset {
                    None
                } else {
                    self.attempts_since_reset += 1;
                    let delay = self.jitter(self.backoff, jitter_factor, max_backoff);
                    self.restarted_at = Some(now.checked_add(delay).unwrap_or(now));
                    Some(delay)
                }
            }
        };
        match delay {
            Some(delay) => {
                self.restarts = self.restarts.saturating_add(1);
                RestartDecision::Restart { delay }
            }
            None => {
                RestartDecision::Fail { reason: format!("Recovery is suppressed by {}", self.config.strategy_name()) }
            }
        }
    }

    /// `backoff` moved by a random fraction in `[-factor, +factor]` of itself, at most `max`.
    fn jitter(&mut self, backoff: Duration, factor: f64, max: Duration) -> Duration {
        let factor = if factor.is_nan() { 0.0 } else { factor.clamp(0.0, 1.0) };
        if factor == 0.0 {
            return backoff.min(max);
        }
        let offset = (self.rng.next_unit() * 2.0 - 1.0) * factor;
        let secs = backoff.as_secs_f64() * (1.0 + offset);
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(max).min(max)
    }
}

/// `backoff` times `multiplier`, at most `max`. A multiplier below 1 (or not a number)
/// leaves the backoff as it is.
fn grow(backoff: Duration, multiplier: f64, max: Duration) -> Duration {
    if multiplier.is_nan() || multiplier <= 1.0 {
        return backoff.min(max);
    }
    Duration::try_from_secs_f64(backoff.as_secs_f64() * multiplier).unwrap_or(max).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    fn cluster(pairs: &[(&str, &str)]) -> Configuration {
        let mut c = Configuration::new();
        for &(k, v) in pairs {
            c.set(k, v);
        }
        c
    }

    fn from_job(pairs: &[(&str, &str)]) -> Result<RestartStrategyConfig, String> {
        RestartStrategyConfig::from_config(&job(pairs), &Configuration::new(), false)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    fn restart(delay: Duration) -> RestartDecision {
        RestartDecision::Restart { delay }
    }

    fn is_fail(d: &RestartDecision) -> bool {
        matches!(d, RestartDecision::Fail { .. })
    }

    fn exponential(
        initial: Duration,
        max: Duration,
        multiplier: f64,
        reset: Duration,
        jitter: f64,
        attempts: u32,
    ) -> RestartStrategyConfig {
        RestartStrategyConfig::ExponentialDelay {
            initial_backoff: initial,
            max_backoff: max,
            multiplier,
            reset_threshold: reset,
            jitter_factor: jitter,
            attempts_before_reset: attempts,
        }
    }

    // ---- configuration ---------------------------------------------------------------

    #[test]
    fn default_without_checkpointing_is_none() {
        let c = RestartStrategyConfig::from_config(&BTreeMap::new(), &Configuration::new(), false).unwrap();
        assert_eq!(c, RestartStrategyConfig::None);
    }

    #[test]
    fn default_with_checkpointing_is_flinks_exponential_delay() {
        let c = RestartStrategyConfig::from_config(&BTreeMap::new(), &Configuration::new(), true).unwrap();
        assert_eq!(c, exponential(secs(1), secs(60), 1.5, secs(3600), 0.1, UNLIMITED));
        // Parameters of another strategy alone do not choose it; exponential-delay's own
        // parameters shape the default, as in Flink.
        let c = RestartStrategyConfig::from_config(&job(&[(FIXED_DELAY_ATTEMPTS, "3")]), &Configuration::new(), true)
            .unwrap();
        assert_eq!(c, exponential(secs(1), secs(60), 1.5, secs(3600), 0.1, UNLIMITED));
        let c =
            RestartStrategyConfig::from_config(&job(&[(EXPONENTIAL_MAX_BACKOFF, "10 s")]), &Configuration::new(), true)
                .unwrap();
        assert_eq!(c, exponential(secs(1), secs(10), 1.5, secs(3600), 0.1, UNLIMITED));
    }

    #[test]
    fn explicit_none_wins_over_checkpointing_default() {
        for value in ["none", "off", "disable", "NONE", " Off "] {
            let c = RestartStrategyConfig::from_config(&job(&[(TYPE_KEY, value)]), &Configuration::new(), true);
            assert_eq!(c.unwrap(), RestartStrategyConfig::None, "{value}");
        }
    }

    #[test]
    fn type_aliases_are_case_insensitive() {
        for value in ["fixed-delay", "fixeddelay", "Fixed-Delay", "FIXEDDELAY"] {
            assert!(matches!(from_job(&[(TYPE_KEY, value)]), Ok(RestartStrategyConfig::FixedDelay { .. })), "{value}");
        }
        for value in ["failure-rate", "failurerate", "Failure-Rate", "FAILURERATE"] {
            assert!(matches!(from_job(&[(TYPE_KEY, value)]), Ok(RestartStrategyConfig::FailureRate { .. })), "{value}");
        }
        for value in ["exponential-delay", "exponentialdelay", "Exponential-Delay", "EXPONENTIALDELAY"] {
            assert!(
                matches!(from_job(&[(TYPE_KEY, value)]), Ok(RestartStrategyConfig::ExponentialDelay { .. })),
                "{value}"
            );
        }
    }

    #[test]
    fn legacy_type_key_is_read_and_new_key_wins() {
        assert_eq!(
            from_job(&[(LEGACY_TYPE_KEY, "fixed-delay")]).unwrap(),
            RestartStrategyConfig::FixedDelay { attempts: 1, delay: secs(1) }
        );
        let c = from_job(&[(LEGACY_TYPE_KEY, "fixed-delay"), (TYPE_KEY, "none")]).unwrap();
        assert_eq!(c, RestartStrategyConfig::None);
        let c =
            RestartStrategyConfig::from_config(&BTreeMap::new(), &cluster(&[(LEGACY_TYPE_KEY, "failure-rate")]), false);
        assert!(matches!(c, Ok(RestartStrategyConfig::FailureRate { .. })));
    }

    #[test]
    fn job_keys_override_cluster_keys() {
        let cluster = cluster(&[(TYPE_KEY, "failure-rate"), (FIXED_DELAY_ATTEMPTS, "7"), (FIXED_DELAY_DELAY, "2 s")]);
        // The cluster's type and parameters.
        let c = RestartStrategyConfig::from_config(&BTreeMap::new(), &cluster, false).unwrap();
        assert!(matches!(c, RestartStrategyConfig::FailureRate { .. }));
        // The job's type with the cluster's parameters, except those the job sets.
        let c = RestartStrategyConfig::from_config(
            &job(&[(TYPE_KEY, "fixed-delay"), (FIXED_DELAY_DELAY, "300 ms")]),
            &cluster,
            false,
        )
        .unwrap();
        assert_eq!(c, RestartStrategyConfig::FixedDelay { attempts: 7, delay: ms(300) });
        // A job's legacy type key still beats the cluster's new one.
        let c = RestartStrategyConfig::from_config(&job(&[(LEGACY_TYPE_KEY, "none")]), &cluster, true).unwrap();
        assert_eq!(c, RestartStrategyConfig::None);
    }

    #[test]
    fn fixed_delay_defaults_and_keys() {
        assert_eq!(
            from_job(&[(TYPE_KEY, "fixed-delay")]).unwrap(),
            RestartStrategyConfig::FixedDelay { attempts: 1, delay: secs(1) }
        );
        assert_eq!(
            from_job(&[(TYPE_KEY, "fixed-delay"), (FIXED_DELAY_ATTEMPTS, " 3 "), (FIXED_DELAY_DELAY, "500 ms")])
                .unwrap(),
            RestartStrategyConfig::FixedDelay { attempts: 3, delay: ms(500) }
        );
        // Plain numbers are milliseconds; zero attempts and zero delay are allowed.
        assert_eq!(
            from_job(&[(TYPE_KEY, "fixed-delay"), (FIXED_DELAY_ATTEMPTS, "0"), (FIXED_DELAY_DELAY, "250")]).unwrap(),
            RestartStrategyConfig::FixedDelay { attempts: 0, delay: ms(250) }
        );
    }

    #[test]
    fn failure_rate_defaults_and_keys() {
        assert_eq!(
            from_job(&[(TYPE_KEY, "failure-rate")]).unwrap(),
            RestartStrategyConfig::FailureRate { max_failures_per_interval: 1, interval: secs(60), delay: secs(1) }
        );
        assert_eq!(
            from_job(&[
                (TYPE_KEY, "failure-rate"),
                (FAILURE_RATE_MAX_FAILURES, "3"),
                (FAILURE_RATE_INTERVAL, "5 min"),
                (FAILURE_RATE_DELAY, "10 s"),
            ])
            .unwrap(),
            RestartStrategyConfig::FailureRate { max_failures_per_interval: 3, interval: secs(300), delay: secs(10) }
        );
    }

    #[test]
    fn exponential_delay_defaults_and_keys() {
        assert_eq!(
            from_job(&[(TYPE_KEY, "exponential-delay")]).unwrap(),
            exponential(secs(1), secs(60), 1.5, secs(3600), 0.1, UNLIMITED)
        );
        assert_eq!(
            from_job(&[
                (TYPE_KEY, "exponential-delay"),
                (EXPONENTIAL_INITIAL_BACKOFF, "100 ms"),
                (EXPONENTIAL_MAX_BACKOFF, "10 s"),
                (EXPONENTIAL_MULTIPLIER, "2"),
                (EXPONENTIAL_RESET_THRESHOLD, "30 min"),
                (EXPONENTIAL_JITTER, "0"),
                (EXPONENTIAL_ATTEMPTS, "4"),
            ])
            .unwrap(),
            exponential(ms(100), secs(10), 2.0, secs(1800), 0.0, 4)
        );
        // The bounds themselves are valid.
        assert_eq!(
            from_job(&[
                (TYPE_KEY, "exponential-delay"),
                (EXPONENTIAL_INITIAL_BACKOFF, "5 s"),
                (EXPONENTIAL_MAX_BACKOFF, "5 s"),
                (EXPONENTIAL_MULTIPLIER, "1"),
                (EXPONENTIAL_JITTER, "1"),
                (EXPONENTIAL_ATTEMPTS, "1"),
            ])
            .unwrap(),
            exponential(secs(5), secs(5), 1.0, secs(3600), 1.0, 1)
        );
    }

    #[test]
    fn invalid_values_name_key_and_value() {
        let cases: &[(&str, &str, &str)] = &[
            ("fixed-delay", FIXED_DELAY_ATTEMPTS, "three"),
            ("fixed-delay", FIXED_DELAY_ATTEMPTS, "-1"),
            ("fixed-delay", FIXED_DELAY_DELAY, "1 fortnight"),
            ("fixed-delay", FIXED_DELAY_DELAY, "-5 s"),
            ("failure-rate", FAILURE_RATE_MAX_FAILURES, "0"),
            ("failure-rate", FAILURE_RATE_MAX_FAILURES, "x"),
            ("failure-rate", FAILURE_RATE_INTERVAL, "0 s"),
            ("failure-rate", FAILURE_RATE_INTERVAL, "soon"),
            ("failure-rate", FAILURE_RATE_DELAY, "1 yr"),
            ("exponential-delay", EXPONENTIAL_INITIAL_BACKOFF, "0 ms"),
            ("exponential-delay", EXPONENTIAL_INITIAL_BACKOFF, "abc"),
            ("exponential-delay", EXPONENTIAL_MAX_BACKOFF, "500 ms"),
            ("exponential-delay", EXPONENTIAL_MAX_BACKOFF, "big"),
            ("exponential-delay", EXPONENTIAL_MULTIPLIER, "0.5"),
            ("exponential-delay", EXPONENTIAL_MULTIPLIER, "NaN"),
            ("exponential-delay", EXPONENTIAL_MULTIPLIER, "fast"),
            ("exponential-delay", EXPONENTIAL_RESET_THRESHOLD, "0"),
            ("exponential-delay", EXPONENTIAL_RESET_THRESHOLD, "later"),
            ("exponential-delay", EXPONENTIAL_JITTER, "1.5"),
            ("exponential-delay", EXPONENTIAL_JITTER, "-0.1"),
            ("exponential-delay", EXPONENTIAL_JITTER, "some"),
            ("exponential-delay", EXPONENTIAL_ATTEMPTS, "0"),
            ("exponential-delay", EXPONENTIAL_ATTEMPTS, "many"),
        ];
        for &(ty, key, value) in cases {
            let err = from_job(&[(TYPE_KEY, ty), (key, value)]).unwrap_err();
            assert!(err.contains(key) && err.contains(&format!("'{value}'")), "{key}={value}: {err}");
            // The same from the cluster configuration.
            let err =
                RestartStrategyConfig::from_config(&BTreeMap::new(), &cluster(&[(TYPE_KEY, ty), (key, value)]), false)
                    .unwrap_err();
            assert!(err.contains(key) && err.contains(&format!("'{value}'")), "{key}={value}: {err}");
        }
    }

    #[test]
    fn keys_of_other_strategies_are_not_read() {
        let c = from_job(&[(TYPE_KEY, "fixed-delay"), (EXPONENTIAL_JITTER, "nonsense")]);
        assert_eq!(c.unwrap(), RestartStrategyConfig::FixedDelay { attempts: 1, delay: secs(1) });
    }

    #[test]
    fn invalid_type_names_key_and_value() {
        let err = from_job(&[(TYPE_KEY, "sometimes")]).unwrap_err();
        assert!(err.contains(TYPE_KEY) && err.contains("'sometimes'"), "{err}");
        let err = from_job(&[(LEGACY_TYPE_KEY, "")]).unwrap_err();
        assert!(err.starts_with("invalid value '' for restart-strategy:"), "{err}");
    }

    #[test]
    fn descriptions() {
        assert_eq!(RestartStrategyConfig::None.description(), "Restart deactivated.");
        assert_eq!(
            RestartStrategyConfig::FixedDelay { attempts: 3, delay: secs(1) }.description(),
            "Restart with fixed delay (1000 ms). #3 restart attempts."
        );
        assert_eq!(
            RestartStrategyConfig::FixedDelay { attempts: UNLIMITED, delay: secs(1) }.description(),
            "Restart with fixed delay (1000 ms). Unlimited restart attempts."
        );
        assert_eq!(
            RestartStrategyConfig::FailureRate { max_failures_per_interval: 2, interval: secs(60), delay: ms(500) }
                .description(),
            "Failure rate restart with maximum of 2 failures within interval 60000 ms and fixed delay 500 ms."
        );
        assert_eq!(
            exponential(secs(1), secs(60), 1.5, secs(3600), 0.1, UNLIMITED).description(),
            "Restart with exponential delay: starting at 1000 ms, increasing by 1.5, with maximum 60000 ms. \
             Delay resets after 3600000 ms with jitter 0.1. Unlimited restart attempts before a reset."
        );
        assert!(exponential(secs(1), secs(60), 2.0, secs(10), 0.0, 5).description().ends_with(
            "increasing by 2, with maximum 60000 ms. Delay resets after 10000 ms with jitter 0. \
                        #5 restart attempts before a reset."
        ));
    }

    // ---- none and fixed delay --------------------------------------------------------

    #[test]
    fn none_fails_at_once() {
        let mut b = RestartBackoff::new(RestartStrategyConfig::None, 0);
        assert_eq!(
            b.on_failure(Instant::now()),
            RestartDecision::Fail { reason: "Recovery is suppressed by NoRestartBackoffTimeStrategy".to_owned() }
        );
        assert_eq!(b.restarts(), 0);
    }

    #[test]
    fn fixed_delay_restarts_attempts_times_then_fails() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new(RestartStrategyConfig::FixedDelay { attempts: 3, delay: ms(1500) }, 0);
        for i in 1..=3 {
            assert_eq!(b.on_failure(t0 + secs(i)), restart(ms(1500)));
            assert_eq!(b.restarts(), i as u32);
        }
        assert_eq!(
            b.on_failure(t0 + secs(4)),
            RestartDecision::Fail {
                reason: "Recovery is suppressed by FixedDelayRestartBackoffTimeStrategy(maxNumberRestartAttempts=3, \
                         backoffTimeMS=1500)"
                    .to_owned()
            }
        );
        assert_eq!(b.restarts(), 3);
    }

    #[test]
    fn fixed_delay_with_zero_attempts_fails_first_failure() {
        let mut b = RestartBackoff::new(RestartStrategyConfig::FixedDelay { attempts: 0, delay: secs(1) }, 0);
        assert!(is_fail(&b.on_failure(Instant::now())));
        assert_eq!(b.restarts(), 0);
    }

    #[test]
    fn fixed_delay_unlimited_never_fails() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new(RestartStrategyConfig::FixedDelay { attempts: UNLIMITED, delay: secs(1) }, 0);
        for i in 0..10_000 {
            assert_eq!(b.on_failure(t0 + ms(i)), restart(secs(1)));
        }
        assert_eq!(b.restarts(), 10_000);
    }

    // ---- failure rate ----------------------------------------------------------------

    #[test]
    fn failure_rate_fails_when_more_than_max_failures_within_interval() {
        let t0 = Instant::now();
        let config =
            RestartStrategyConfig::FailureRate { max_failures_per_interval: 2, interval: secs(10), delay: ms(200) };
        let mut b = RestartBackoff::new(config, 0);
        assert_eq!(b.on_failure(t0), restart(ms(200)));
        assert_eq!(b.on_failure(t0 + secs(1)), restart(ms(200)));
        assert_eq!(
            b.on_failure(t0 + secs(2)),
            RestartDecision::Fail {
                reason: "Recovery is suppressed by FailureRateRestartBackoffTimeStrategy(failuresIntervalMS=10000, \
                         backoffTimeMS=200, maxFailuresPerInterval=2)"
                    .to_owned()
            }
        );
        assert_eq!(b.restarts(), 2);
    }

    #[test]
    fn failure_rate_window_slides() {
        let t0 = Instant::now();
        let config =
            RestartStrategyConfig::FailureRate { max_failures_per_interval: 2, interval: secs(10), delay: secs(1) };
        let mut b = RestartBackoff::new(config, 0);
        assert_eq!(b.on_failure(t0), restart(secs(1)));
        assert_eq!(b.on_failure(t0 + secs(5)), restart(secs(1)));
        // Exactly one interval after the first failure: it still counts (3 in the window).
        let mut at_boundary = b.clone();
        assert!(is_fail(&at_boundary.on_failure(t0 + secs(10))));
        // Just after: the first failure has left the window (5 s and 10.001 s remain).
        assert_eq!(b.on_failure(t0 + ms(10_001)), restart(secs(1)));
        // 5 s, 10.001 s and 15 s are within 10 s of 15 s.
        let mut crowded = b.clone();
        assert!(is_fail(&crowded.on_failure(t0 + secs(15))));
        // At 15.001 s the 5 s failure has left: 10.001 s and 15.001 s remain.
        assert_eq!(b.on_failure(t0 + ms(15_001)), restart(secs(1)));
        // Slow failures, one per interval, restart forever.
        for i in 3..50 {
            assert_eq!(b.on_failure(t0 + secs(11 * i)), restart(secs(1)));
        }
        assert_eq!(b.restarts(), 51);
    }

    #[test]
    fn failure_rate_of_one_allows_one_failure_per_interval() {
        let t0 = Instant::now();
        let config =
            RestartStrategyConfig::FailureRate { max_failures_per_interval: 1, interval: secs(60), delay: secs(1) };
        let mut b = RestartBackoff::new(config, 0);
        assert_eq!(b.on_failure(t0), restart(secs(1)));
        assert_eq!(b.on_failure(t0 + secs(61)), restart(secs(1)));
        assert!(is_fail(&b.on_failure(t0 + secs(62))));
    }

    // ---- exponential delay -----------------------------------------------------------

    #[test]
    fn exponential_delay_grows_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new(exponential(secs(1), secs(5), 2.0, secs(3600), 0.0, UNLIMITED), 0);
        let delays: Vec<_> = (0..6)
            .map(|i| match b.on_failure(t0 + secs(i)) {
                RestartDecision::Restart { delay } => delay,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(delays, vec![secs(1), secs(2), secs(4), secs(5), secs(5), secs(5)]);
        assert_eq!(b.restarts(), 6);
    }

    #[test]
    fn exponential_delay_with_fractional_multiplier() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new(exponential(ms(1000), secs(60), 1.5, secs(3600), 0.0, UNLIMITED), 0);
        assert_eq!(b.on_failure(t0), restart(ms(1000)));
        assert_eq!(b.on_failure(t0 + secs(2)), restart(ms(1500)));
        assert_eq!(b.on_failure(t0 + secs(4)), restart(ms(2250)));
    }

    #[test]
    fn exponential_delay_resets_after_the_threshold() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new(exponential(secs(1), secs(60), 2.0, secs(100), 0.0, UNLIMITED), 0);
        assert_eq!(b.on_failure(t0), restart(secs(1)));
        assert_eq!(b.on_failure(t0 + secs(10)), restart(secs(2)));
        // The job restarted at 12 s. Failing 99.999 s later is no reset.
        let mut early = b.clone();
        assert_eq!(early.on_failure(t0 + ms(111_999)), restart(secs(4)));
        // Failing 100 s after the restart is: back to the initial backoff.
        assert_eq!(b.on_failure(t0 + secs(112)), restart(secs(1)));
        assert_eq!(b.on_failure(t0 + secs(113)), restart(secs(2)));
    }

    #[test]
    fn exponential_delay_fails_after_attempts_without_reset() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new(exponential(secs(1), secs(60), 2.0, secs(100), 0.0, 2), 0);
        assert_eq!(b.on_failure(t0), restart(secs(1)));
        assert_eq!(b.on_failure(t0 + secs(5)), restart(secs(2)));
        let mut exhausted = b.clone();
        let RestartDecision::Fail { reason } = exhausted.on_failure(t0 + secs(10)) else { panic!("should fail") };
        assert_eq!(
            reason,
            "Recovery is suppressed by ExponentialDelayRestartBackoffTimeStrategy(initialBackoffMS=1000, \
             maxBackoffMS=60000, backoffMultiplier=2, resetBackoffThresholdMS=100000, jitterFactor=0, \
             attemptsBeforeResetBackoff=2)"
        );
        assert_eq!(exhausted.restarts(), 2);
        // After a quiet period (restart at 7 s, +100 s) the attempts count again from zero.
        assert_eq!(b.on_failure(t0 + secs(107)), restart(secs(1)));
        assert_eq!(b.on_failure(t0 + secs(108)), restart(secs(2)));
        assert!(is_fail(&b.on_failure(t0 + secs(109))));
        assert_eq!(b.restarts(), 4);
    }

    fn jittered_delays(seed: u64, config: RestartStrategyConfig, n: u64) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new(config, seed);
        (0..n)
            .map(|i| match b.on_failure(t0 + ms(i)) {
                RestartDecision::Restart { delay } => delay,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn exponential_jitter_is_deterministic_and_bounded() {
        let config = exponential(secs(1), secs(1_000_000), 1.0, secs(3600), 0.25, UNLIMITED);
        let a = jittered_delays(42, config.clone(), 500);
        assert_eq!(a, jittered_delays(42, config.clone(), 500), "same seed, same delays");
        assert_ne!(a, jittered_delays(43, config.clone(), 500), "another seed, other delays");
        // Multiplier 1: every base delay is 1 s, so each delay lies in [0.75 s, 1.25 s].
        assert!(a.iter().all(|&d| d >= ms(750) && d <= ms(1250)), "{a:?}");
        // The jitter goes both ways and spreads over the range.
        assert!(a.iter().any(|&d| d < ms(800)) && a.iter().any(|&d| d > ms(1200)), "{a:?}");
        assert!(a.iter().any(|&d| d < secs(1)) && a.iter().any(|&d| d > secs(1)));
    }

    #[test]
    fn exponential_jitter_follows_the_growing_base_and_stays_below_max() {
        let config = exponential(secs(1), secs(8), 2.0, secs(3600), 0.1, UNLIMITED);
        for seed in 0..50 {
            let delays = jittered_delays(seed, config.clone(), 6);
            let bases = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0];
            for (d, base) in delays.iter().zip(bases) {
                let s = d.as_secs_f64();
                assert!(s >= base * 0.9 - 1e-9 && s <= (base * 1.1).min(8.0) + 1e-9, "seed {seed}: {delays:?}");
            }
        }
    }

    #[test]
    fn exponential_zero_jitter_gives_exact_delays_for_any_seed() {
        let config = exponential(ms(300), secs(60), 3.0, secs(3600), 0.0, UNLIMITED);
        for seed in [0, 1, u64::MAX] {
            assert_eq!(jittered_delays(seed, config.clone(), 3), vec![ms(300), ms(900), ms(2700)]);
        }
    }

    #[test]
    fn exponential_defaults_from_config_behave() {
        let config = from_job(&[(TYPE_KEY, "exponential-delay"), (EXPONENTIAL_JITTER, "0")]).unwrap();
        let t0 = Instant::now();
        let mut b = RestartBackoff::new(config, 7);
        assert_eq!(b.on_failure(t0), restart(secs(1)));
        assert_eq!(b.on_failure(t0 + secs(2)), restart(ms(1500)));
        // Reset after an hour of running.
        assert_eq!(b.on_failure(t0 + secs(2) + ms(1500) + secs(3600)), restart(secs(1)));
    }

    #[test]
    fn exponential_huge_multiplier_saturates_at_max() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new(exponential(secs(1), secs(60), 1e300, secs(3600), 0.0, UNLIMITED), 0);
        assert_eq!(b.on_failure(t0), restart(secs(1)));
        assert_eq!(b.on_failure(t0 + secs(1)), restart(secs(60)));
        assert_eq!(b.on_failure(t0 + secs(2)), restart(secs(60)));
    }
}
