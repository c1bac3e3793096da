//! Configuration: the builder and what it validates.

use std::sync::Arc;
use std::time::Duration;

use tower_bedrock_core::{ErrorClass, UnavailableKind};

use crate::error::ConfigError;
use crate::key::{KeyFn, ModelIdKey};
use crate::layer::CircuitBreakLayer;
use crate::registry::Registry;

/// How one finished call counts for its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The model answered: counts as a success.
    Success,
    /// The failure says the model or the service is unhealthy: counts as a
    /// failure.
    Failure,
    /// Says nothing about the model's health: not counted at all (and a
    /// half-open probe that ends this way frees its slot).
    Ignored,
}

/// The default decision table from an error's class.
///
/// | class | outcome |
/// |---|---|
/// | `Unavailable(Service \| Network)` | failure |
/// | `Unavailable(ConnectionPool)` | ignored (counted in `bedrock_connection_pool_exhausted_total`) |
/// | `ModelTimeout` | failure |
/// | `Throttled(ModelOverloaded)`, `Throttled(ModelNotReady)` | failure |
/// | `Throttled(RequestRate \| TokenRate \| Unspecified)` | ignored, or failure when `count_rate_throttles` |
/// | `QuotaExceeded`, `Client(_)`, `Local(_)`, `Unknown` | ignored |
///
/// Health failures are those of [`ErrorClass::is_health_failure`] but a
/// full connection pool: rate throttles are quota, not health, so they are
/// ignored unless asked; `Unavailable(ConnectionPool)` ("too many
/// connections") says the client's pool, or the server's connection
/// limit, is full, not that the model is sick. Opening the model's breaker
/// for it would fail every call fast while the cure is on the client's
/// side: share one client and cap its connections below Bedrock's limit.
pub fn default_outcome(class: ErrorClass, count_rate_throttles: bool) -> Outcome {
    if class == ErrorClass::Unavailable(UnavailableKind::ConnectionPool) {
        return Outcome::Ignored;
    }
    if class.is_health_failure() || (count_rate_throttles && class.is_rate_throttle()) {
        Outcome::Failure
    } else {
        Outcome::Ignored
    }
}

/// The sliding window the rate rules are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowConfig {
    /// The last `n` counted calls.
    Count(u32),
    /// `buckets` buckets of `width` each: the calls of the last
    /// `width x buckets`.
    Time { width: Duration, buckets: u32 },
}

/// The validated settings every breaker of a layer shares.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) failure_rate: Option<f64>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) slow: Option<(Duration, f64)>,
    pub(crate) window: WindowConfig,
    pub(crate) minimum_calls: u32,
    pub(crate) open_base: Duration,
    pub(crate) open_max: Duration,
    pub(crate) open_multiplier: f64,
    pub(crate) open_jitter: f64,
    pub(crate) half_open_probes: u32,
    pub(crate) half_open_success_rate: f64,
    pub(crate) overload_open: Option<Duration>,
    pub(crate) count_rate_throttles: bool,
    pub(crate) classify: Option<fn(ErrorClass) -> Outcome>,
    pub(crate) max_breakers: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) busy_retry_after: Duration,
}

/// Default open time after a first trip.
pub const DEFAULT_OPEN_DURATION: Duration = Duration::from_secs(5);
/// Default cap on the open time as it grows over trips in a row: 30 s.
///
/// A 503 storm or an overload ends when it ends; a breaker that keeps a
/// model shut for minutes after that fails calls for nothing. With 5 s
/// doubling to 30 s, a breaker lets probes through at most about 30 s
/// after the service recovered (and callers waiting it out, see the retry
/// crate's `CircuitWait`, wait at most that long).
pub const DEFAULT_MAX_OPEN_DURATION: Duration = Duration::from_secs(30);
/// Default number of half-open probes.
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 3;
/// Default failure rate at which a breaker opens: 90 % of the last 20
/// counted calls. A model answering half its calls is better served by
/// retries than by a breaker; one that answers almost nothing trips it.
pub const DEFAULT_FAILURE_RATE: f64 = 0.9;

/// Default share of the probes that must succeed to close: one half,
/// rounded up, so 2 of 3. A model answering most calls again is closed
/// on; one unlucky probe of three (a 50 %-503 storm fails one call in two)
/// does not reopen the breaker and double its open time.
pub const DEFAULT_HALF_OPEN_SUCCESS_RATE: f64 = 0.5;

impl Default for Config {
    fn default() -> Self {
        Config {
            // 90 %, not resilience4j's 50 %: a model answering half its
            // calls is better served by retries (the `storm-503` scenario:
            // at 50 % the breaker kept callers waiting for the whole storm,
            // p95 78 s against 20 s for a plain retry loop); a model that
            // answers almost nothing still trips it.
            failure_rate: Some(DEFAULT_FAILURE_RATE),
            consecutive_failures: None,
            slow: None,
            window: WindowConfig::Count(20),
            minimum_calls: 10,
            open_base: DEFAULT_OPEN_DURATION,
            open_max: DEFAULT_MAX_OPEN_DURATION,
            open_multiplier: 2.0,
            open_jitter: 0.1,
            half_open_probes: DEFAULT_HALF_OPEN_PROBES,
            half_open_success_rate: DEFAULT_HALF_OPEN_SUCCESS_RATE,
            overload_open: None,
            count_rate_throttles: false,
            classify: None,
            max_breakers: 1024,
            idle_timeout: Duration::from_secs(600),
            seed: None,
            busy_retry_after: Duration::from_secs(1),
        }
    }
}

fn rate(setting: &'static str, value: f64) -> Result<(), ConfigError> {
    // NaN fails both comparisons.
    if value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::InvalidRate { setting, value })
    }
}

fn nonzero(setting: &'static str, zero: bool) -> Result<(), ConfigError> {
    if zero {
        Err(ConfigError::Zero { setting })
    } else {
        Ok(())
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_rate.is_none()
            && self.consecutive_failures.is_none()
            && self.slow.is_none()
            && self.overload_open.is_none()
        {
            return Err(ConfigError::NoTripRule);
        }
        if let Some(r) = self.failure_rate {
            rate("failure_rate_threshold", r)?;
        }
        if let Some(n) = self.consecutive_failures {
            nonzero("consecutive_failures", n == 0)?;
        }
        if let Some((threshold, r)) = self.slow {
            nonzero("slow_call_duration", threshold.is_zero())?;
            rate("slow_call_rate_threshold", r)?;
        }
        match self.window {
            WindowConfig::Count(n) => {
                nonzero("count_window", n == 0)?;
                if self.minimum_calls > n {
                    return Err(ConfigError::MinimumCallsExceedWindow {
                        minimum_calls: self.minimum_calls,
                        window: n,
                    });
                }
            }
            WindowConfig::Time { width, buckets } => {
                nonzero("time_window bucket width", width.is_zero())?;
                nonzero("time_window buckets", buckets == 0)?;
            }
        }
        nonzero("minimum_calls", self.minimum_calls == 0)?;
        nonzero("open_duration", self.open_base.is_zero())?;
        if self.open_max < self.open_base {
            return Err(ConfigError::OpenDurationRange {
                base: self.open_base,
                max: self.open_max,
            });
        }
        if !(self.open_multiplier.is_finite() && self.open_multiplier >= 1.0) {
            return Err(ConfigError::InvalidMultiplier(self.open_multiplier));
        }
        if !(self.open_jitter >= 0.0 && self.open_jitter < 1.0) {
            return Err(ConfigError::InvalidJitter(self.open_jitter));
        }
        nonzero("half_open_probes", self.half_open_probes == 0)?;
        rate("half_open_success_rate", self.half_open_success_rate)?;
        if let Some(d) = self.overload_open {
            nonzero("open_on_overload", d.is_zero())?;
        }
        nonzero("max_breakers", self.max_breakers == 0)?;
        nonzero("idle_timeout", self.idle_timeout.is_zero())?;
        Ok(())
    }

    /// How a finished call counts.
    pub(crate) fn outcome(&self, class: ErrorClass) -> Outcome {
        match self.classify {
            Some(f) => f(class),
            None => default_outcome(class, self.count_rate_throttles),
        }
    }

    /// Successful probes needed to close from half-open.
    pub(crate) fn required_probe_successes(&self) -> u32 {
        let n = self.half_open_probes;
        let required = (f64::from(n) * self.half_open_success_rate).ceil();
        // In [0, n] since the rate is in (0, 1]; at least one probe must pass.
        (required as u32).clamp(1, n)
    }
}

/// Builds a [`CircuitBreakLayer`]; [`build`](Self::build) checks the
/// settings and returns a typed [`ConfigError`] for any that cannot work.
///
/// Defaults: failure rate >= 90 % over the last 20 counted calls with at
/// least 10 calls; no consecutive-failure or slow-call rule; open for 5 s,
/// doubling on every trip in a row up to 30 s, up to 10 % shorter at
/// random; 3 half-open probes of which 2 must succeed; rate throttles and
/// full connection pools ignored;
/// no overload rule; at most 1024 breakers, each dropped after 10 minutes
/// idle.
#[derive(Debug, Clone)]
pub struct CircuitBreakBuilder<K = ModelIdKey> {
    config: Config,
    key: K,
}

impl CircuitBreakBuilder<ModelIdKey> {
    pub(crate) fn new() -> Self {
        CircuitBreakBuilder {
            config: Config::default(),
            key: ModelIdKey,
        }
    }
}

impl<K> CircuitBreakBuilder<K> {
    /// Keys breakers with a function of the request instead of its model id
    /// (a region and a model, a route...).
    ///
    /// ```
    /// use tower_bedrock_breaker::CircuitBreakLayer;
    ///
    /// struct Req {
    ///     region: &'static str,
    ///     model: String,
    /// }
    /// let layer = CircuitBreakLayer::builder()
    ///     .key_fn(|r: &Req| format!("{}/{}", r.region, r.model))
    ///     .build()
    ///     .unwrap();
    /// ```
    ///
    /// A function returning a `String` allocates on every call; to borrow
    /// the key from the request instead, implement
    /// [`KeyExtractor`](crate::KeyExtractor).
    pub fn key_fn<F>(self, f: F) -> CircuitBreakBuilder<KeyFn<F>> {
        self.key_extractor(KeyFn(f))
    }

    /// Keys breakers with any [`KeyExtractor`](crate::KeyExtractor).
    pub fn key_extractor<K2>(self, key: K2) -> CircuitBreakBuilder<K2> {
        CircuitBreakBuilder {
            config: self.config,
            key,
        }
    }

    /// Trips when the failure rate over the window reaches `threshold` (in
    /// `(0, 1]`), once the window holds [`minimum_calls`](Self::minimum_calls).
    pub fn failure_rate_threshold(mut self, threshold: f64) -> Self {
        self.config.failure_rate = Some(threshold);
        self
    }

    /// Turns the failure-rate rule off (another rule must stay on).
    pub fn disable_failure_rate(mut self) -> Self {
        self.config.failure_rate = None;
        self
    }

    /// Also trips after `n` failures in a row (ignored calls do not break
    /// the run; a success does).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// Also trips when the share of calls slower than `threshold` reaches
    /// `rate` over the window (with the minimum number of calls). Slow
    /// calls count whether they succeeded or failed; a slow half-open probe
    /// counts as a failed probe.
    ///
    /// A call is timed from when the layers below send it on to Bedrock
    /// (the facade's invocation metrics mark it, see
    /// `tower_bedrock_core::sent`), so time queued in a token budget below
    /// is not slowness. Without such a layer below, it is timed from the
    /// breaker's admission, queueing included: keep the slow-call rule off
    /// then, or put the metrics layer (or any layer calling `mark_sent`)
    /// under the budget. A half-open probe holds its slot while it queues.
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.config.slow = Some((threshold, rate));
        self
    }

    /// Computes rates over the last `calls` counted calls.
    pub fn count_window(mut self, calls: u32) -> Self {
        self.config.window = WindowConfig::Count(calls);
        self
    }

    /// Computes rates over the calls of the last `bucket x buckets`,
    /// counted in `buckets` buckets of `bucket` each.
    pub fn time_window(mut self, bucket: Duration, buckets: u32) -> Self {
        self.config.window = WindowConfig::Time {
            width: bucket,
            buckets,
        };
        self
    }

    /// Calls the window must hold before a rate rule may trip.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// How long a breaker stays open after its first trip.
    pub fn open_duration(mut self, base: Duration) -> Self {
        self.config.open_base = base;
        self
    }

    /// The cap on the open duration as it grows over trips in a row.
    pub fn max_open_duration(mut self, max: Duration) -> Self {
        self.config.open_max = max;
        self
    }

    /// Growth factor of the open duration on each trip in a row (a reopen
    /// from half-open); 1 keeps it constant.
    pub fn open_duration_multiplier(mut self, multiplier: f64) -> Self {
        self.config.open_multiplier = multiplier;
        self
    }

    /// Shortens each open duration by a random fraction up to `jitter` (in
    /// `[0, 1)`), so breakers of many processes do not probe together. The
    /// cap is never exceeded.
    pub fn open_jitter(mut self, jitter: f64) -> Self {
        self.config.open_jitter = jitter;
        self
    }

    /// Seeds the jitter's random generator (for reproducible tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Probes admitted at once in half-open; other calls are rejected.
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.config.half_open_probes = n;
        self
    }

    /// Share of the probes that must succeed to close (in `(0, 1]`);
    /// reopens as soon as that share can no longer be reached.
    pub fn half_open_success_rate(mut self, rate: f64) -> Self {
        self.config.half_open_success_rate = rate;
        self
    }

    /// Opens the breaker at once when the model answers "overloaded"
    /// (`Throttled(ModelOverloaded)`), for `duration` or the error's retry
    /// hint when longer (a hint is capped at the maximum open duration).
    pub fn open_on_overload(mut self, duration: Duration) -> Self {
        self.config.overload_open = Some(duration);
        self
    }

    /// Counts request-rate, token-rate and unspecified throttles as
    /// failures (default: ignored, they are quota, not health).
    pub fn count_rate_throttles(mut self, count: bool) -> Self {
        self.config.count_rate_throttles = count;
        self
    }

    /// Replaces the decision table ([`default_outcome`]) entirely.
    pub fn classify_with(mut self, f: fn(ErrorClass) -> Outcome) -> Self {
        self.config.classify = Some(f);
        self
    }

    /// The most breakers kept at once. When full, idle breakers are dropped
    /// first, then the least recently used one that is not forced open;
    /// when every breaker is forced open, calls for new keys pass through
    /// unguarded.
    pub fn max_breakers(mut self, n: usize) -> Self {
        self.config.max_breakers = n;
        self
    }

    /// How long a breaker may go unused before it is dropped (closed ones,
    /// or open ones past their open time; never one forced open or with
    /// calls in flight).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.config.idle_timeout = idle;
        self
    }

    /// The retry hint of calls rejected because every half-open probe slot
    /// is taken (default 1 s).
    pub fn half_open_busy_retry_after(mut self, after: Duration) -> Self {
        self.config.busy_retry_after = after;
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<CircuitBreakLayer<K>, ConfigError> {
        self.config.validate()?;
        Ok(CircuitBreakLayer::from_parts(
            self.key,
            Arc::new(Registry::new(self.config)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use tower_bedrock_core::{ClientKind, LocalRejection, ThrottleKind, UnavailableKind};

    use super::*;
    use crate::CircuitBreakLayer;

    fn err(b: CircuitBreakBuilder) -> ConfigError {
        b.build().expect_err("invalid settings are refused")
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        CircuitBreakLayer::builder().build().unwrap();
    }

    #[test]
    fn invalid_settings_fail_at_build_time() {
        let b = CircuitBreakLayer::builder;
        assert_eq!(
            err(b().failure_rate_threshold(0.0)),
            ConfigError::InvalidRate {
                setting: "failure_rate_threshold",
                value: 0.0
            }
        );
        assert!(matches!(
            err(b().failure_rate_threshold(f64::NAN)),
            ConfigError::InvalidRate { .. }
        ));
        assert!(matches!(
            err(b().slow_calls(Duration::from_secs(1), 1.5)),
            ConfigError::InvalidRate {
                setting: "slow_call_rate_threshold",
                ..
            }
        ));
        assert_eq!(
            err(b().slow_calls(Duration::ZERO, 0.5)),
            ConfigError::Zero {
                setting: "slow_call_duration"
            }
        );
        assert_eq!(
            err(b().half_open_success_rate(-1.0)),
            ConfigError::InvalidRate {
                setting: "half_open_success_rate",
                value: -1.0
            }
        );
        assert_eq!(
            err(b().count_window(5).minimum_calls(6)),
            ConfigError::MinimumCallsExceedWindow {
                minimum_calls: 6,
                window: 5
            }
        );
        assert_eq!(
            err(b().count_window(0).minimum_calls(0)),
            ConfigError::Zero {
                setting: "count_window"
            }
        );
        assert_eq!(
            err(b().minimum_calls(0)),
            ConfigError::Zero {
                setting: "minimum_calls"
            }
        );
        assert!(matches!(
            err(b().time_window(Duration::ZERO, 10)),
            ConfigError::Zero { .. }
        ));
        assert!(matches!(
            err(b().time_window(Duration::from_secs(1), 0)),
            ConfigError::Zero { .. }
        ));
        // A time window has no size to compare the minimum with.
        b().time_window(Duration::from_secs(1), 10)
            .minimum_calls(1000)
            .build()
            .unwrap();
        assert_eq!(err(b().disable_failure_rate()), ConfigError::NoTripRule);
        b().disable_failure_rate()
            .open_on_overload(Duration::from_secs(5))
            .build()
            .unwrap();
        assert_eq!(
            err(b().consecutive_failures(0)),
            ConfigError::Zero {
                setting: "consecutive_failures"
            }
        );
        assert_eq!(
            err(b().open_duration(Duration::ZERO)),
            ConfigError::Zero {
                setting: "open_duration"
            }
        );
        assert_eq!(
            err(b()
                .open_duration(Duration::from_secs(10))
                .max_open_duration(Duration::from_secs(5))),
            ConfigError::OpenDurationRange {
                base: Duration::from_secs(10),
                max: Duration::from_secs(5)
            }
        );
        assert_eq!(
            err(b().open_duration_multiplier(0.5)),
            ConfigError::InvalidMultiplier(0.5)
        );
        assert!(matches!(
            err(b().open_duration_multiplier(f64::INFINITY)),
            ConfigError::InvalidMultiplier(_)
        ));
        assert_eq!(err(b().open_jitter(1.0)), ConfigError::InvalidJitter(1.0));
        assert_eq!(
            err(b().half_open_probes(0)),
            ConfigError::Zero {
                setting: "half_open_probes"
            }
        );
        assert!(matches!(
            err(b().open_on_overload(Duration::ZERO)),
            ConfigError::Zero { .. }
        ));
        assert!(matches!(err(b().max_breakers(0)), ConfigError::Zero { .. }));
        assert!(matches!(
            err(b().idle_timeout(Duration::ZERO)),
            ConfigError::Zero { .. }
        ));
        assert_eq!(
            err(b().open_jitter(-0.1)).to_string(),
            "circuit breaker: jitter must be in [0, 1), got -0.1"
        );
    }

    #[test]
    fn default_decision_table() {
        use ErrorClass as C;
        let failures = [
            C::Unavailable(UnavailableKind::Service),
            C::Unavailable(UnavailableKind::Network),
            C::ModelTimeout,
            C::Throttled(ThrottleKind::ModelOverloaded),
            C::Throttled(ThrottleKind::ModelNotReady),
        ];
        let rate = [
            C::Throttled(ThrottleKind::RequestRate),
            C::Throttled(ThrottleKind::TokenRate),
            C::Throttled(ThrottleKind::Unspecified),
        ];
        let ignored = [
            C::Unavailable(UnavailableKind::ConnectionPool),
            C::QuotaExceeded,
            C::Client(ClientKind::Validation),
            C::Client(ClientKind::NotFound),
            C::Local(LocalRejection::CircuitOpen),
            C::Local(LocalRejection::BudgetExhausted),
            C::Unknown,
        ];
        for c in failures {
            assert_eq!(default_outcome(c, false), Outcome::Failure, "{c}");
        }
        for c in rate {
            assert_eq!(default_outcome(c, false), Outcome::Ignored, "{c}");
            assert_eq!(default_outcome(c, true), Outcome::Failure, "{c}");
        }
        for c in ignored {
            assert_eq!(default_outcome(c, true), Outcome::Ignored, "{c}");
        }
        let custom = Config {
            classify: Some(|c| {
                if c.is_client() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }),
            ..Config::default()
        };
        assert_eq!(
            custom.outcome(C::Client(ClientKind::Other)),
            Outcome::Failure
        );
        assert_eq!(custom.outcome(C::ModelTimeout), Outcome::Success);
    }

    #[test]
    fn required_probe_successes_round_up() {
        let with = |probes, rate| Config {
            half_open_probes: probes,
            half_open_success_rate: rate,
            ..Config::default()
        };
        assert_eq!(with(3, 1.0).required_probe_successes(), 3);
        assert_eq!(with(4, 0.5).required_probe_successes(), 2);
        assert_eq!(with(3, 0.5).required_probe_successes(), 2);
        assert_eq!(with(10, 0.01).required_probe_successes(), 1);
    }
}
