use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tower_bedrock_core::{Clock, ErrorClass, ThrottleKind};
use tower_layer::Layer;

use crate::budget::{RetryBudget, RetryBudgetConfig};
use crate::circuit::CircuitWait;
use crate::error::BuildError;
use crate::options::NoCallOptions;
use crate::policy::{ClassPolicy, MAX_WAIT, Policies};
use crate::service::QuotaAlignedRetry;

/// Default quota window length.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default lower bound of a retry hint.
pub const DEFAULT_HINT_MIN: Duration = Duration::from_millis(50);
/// Default upper bound of a retry hint.
pub const DEFAULT_HINT_MAX: Duration = Duration::from_secs(60);
/// Default maximum number of attempts of one call, all classes together.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default maximum total time of one call: 210 s, so that the default
/// rate-throttle policy can always make its three retries.
///
/// The arithmetic: a throttle retry waits for the next quota window, then
/// 1 s plus up to 4 s. The worst case is a throttle answered just after a
/// window opened: each of the three retries then goes out a whole window
/// later, the third one at most `3 x 60 s + 1 s + 4 s = 185 s` after the
/// first throttle. The 25 s left cover the first attempt itself (a
/// throttle is answered at once, but the call may first queue for budget).
/// With 180 s, the third retry of such a call was always refused.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(210);

/// State shared by a layer, every service it makes, and their clones.
pub(crate) struct Shared {
    pub(crate) policies: Policies,
    pub(crate) window: Duration,
    pub(crate) hint_min: Duration,
    pub(crate) hint_max: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) deadline: Option<Duration>,
    pub(crate) clock: Clock,
    pub(crate) budget: RetryBudget,
    pub(crate) circuit_wait: Option<CircuitWait>,
    seed: u64,
    draws: AtomicU64,
}

impl Shared {
    /// The seed of the next call that needs random draws: the configured
    /// seed for the first, then `seed + k * 0x9E37_79B9_7F4A_7C15` for the
    /// k-th (fastrand mixes the seed, so neighbouring seeds give unrelated
    /// sequences).
    pub(crate) fn next_seed(&self) -> u64 {
        let k = self.draws.fetch_add(1, Ordering::Relaxed);
        self.seed
            .wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("policies", &self.policies)
            .field("window", &self.window)
            .field("hint_min", &self.hint_min)
            .field("hint_max", &self.hint_max)
            .field("max_attempts", &self.max_attempts)
            .field("deadline", &self.deadline)
            .field("budget", &self.budget)
            .field("circuit_wait", &self.circuit_wait)
            .finish_non_exhaustive()
    }
}

/// Applies [`QuotaAlignedRetry`] to services.
///
/// Every service this layer makes, and every clone of those, shares one
/// [`RetryBudget`] and one random sequence. Build one with
/// [`builder`](Self::builder); [`new`](Self::new) takes every default.
///
/// The type parameter `O` reads per-call options (a
/// [`CallReport`](tower_bedrock_core::CallReport), a deadline) from
/// requests; see [`CallOptions`](crate::CallOptions).
#[derive(Clone)]
pub struct QuotaAlignedRetryLayer<O = NoCallOptions> {
    shared: Arc<Shared>,
    options: O,
}

impl QuotaAlignedRetryLayer {
    /// A layer with every default (see the crate documentation's table).
    pub fn new() -> Self {
        // The defaults are valid; this cannot fail.
        match Self::builder().build() {
            Ok(layer) => layer,
            Err(e) => unreachable!("default retry configuration refused: {e}"),
        }
    }

    /// A builder starting from the defaults.
    pub fn builder() -> QuotaAlignedRetryLayerBuilder<NoCallOptions> {
        QuotaAlignedRetryLayerBuilder::new()
    }
}

impl Default for QuotaAlignedRetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<O> QuotaAlignedRetryLayer<O> {
    /// The retry budget shared by the services this layer makes.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.shared.budget
    }

    /// The per-class policies.
    pub fn policies(&self) -> &Policies {
        &self.shared.policies
    }
}

impl<O> fmt::Debug for QuotaAlignedRetryLayer<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaAlignedRetryLayer")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, O: Clone> Layer<S> for QuotaAlignedRetryLayer<O> {
    type Service = QuotaAlignedRetry<S, O>;

    fn layer(&self, inner: S) -> Self::Service {
        QuotaAlignedRetry::from_parts(inner, self.shared.clone(), self.options.clone())
    }
}

/// Builds a [`QuotaAlignedRetryLayer`]; [`build`](Self::build) checks the
/// configuration and returns a typed [`BuildError`] when it is invalid.
pub struct QuotaAlignedRetryLayerBuilder<O> {
    policies: Policies,
    window: Duration,
    hint_min: Duration,
    hint_max: Duration,
    max_attempts: u32,
    deadline: Option<Duration>,
    clock: Option<Clock>,
    budget: RetryBudgetConfig,
    circuit_wait: Option<CircuitWait>,
    seed: Option<u64>,
    options: O,
    error: Option<BuildError>,
}

impl<O> fmt::Debug for QuotaAlignedRetryLayerBuilder<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaAlignedRetryLayerBuilder")
            .field("policies", &self.policies)
            .field("window", &self.window)
            .field("max_attempts", &self.max_attempts)
            .field("deadline", &self.deadline)
            .field("budget", &self.budget)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl QuotaAlignedRetryLayerBuilder<NoCallOptions> {
    fn new() -> Self {
        QuotaAlignedRetryLayerBuilder {
            policies: Policies::default(),
            window: DEFAULT_WINDOW,
            hint_min: DEFAULT_HINT_MIN,
            hint_max: DEFAULT_HINT_MAX,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            deadline: Some(DEFAULT_DEADLINE),
            clock: None,
            budget: RetryBudgetConfig::default(),
            circuit_wait: None,
            seed: None,
            options: NoCallOptions,
            error: None,
        }
    }
}

impl<O> QuotaAlignedRetryLayerBuilder<O> {
    fn fail(&mut self, e: BuildError) {
        self.error.get_or_insert(e);
    }

    /// Sets the policy of one class (kinds matter: `Throttled(TokenRate)`
    /// and `Throttled(RequestRate)` have policies of their own).
    ///
    /// Client errors and local rejections are never retried: giving them a
    /// policy that retries makes [`build`](Self::build) fail with
    /// [`BuildError::NeverRetried`].
    #[must_use]
    pub fn policy(mut self, class: ErrorClass, policy: ClassPolicy) -> Self {
        if let Err(reason) = policy.check() {
            self.fail(BuildError::InvalidBackoff { class, reason });
        } else if self.policies.set(class, policy).is_err() {
            self.fail(BuildError::NeverRetried(class));
        }
        self
    }

    /// Sets the policy of the three rate throttles (request rate, token
    /// rate, unspecified).
    #[must_use]
    pub fn rate_throttles(self, policy: ClassPolicy) -> Self {
        self.policy(ErrorClass::Throttled(ThrottleKind::RequestRate), policy)
            .policy(ErrorClass::Throttled(ThrottleKind::TokenRate), policy)
            .policy(ErrorClass::Throttled(ThrottleKind::Unspecified), policy)
    }

    /// The quota window length (60 s by default; shorter in compressed
    /// tests and demos). Windows are aligned on the UNIX epoch.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The range retry hints are clamped to (50 ms to 60 s by default).
    #[must_use]
    pub fn hint_range(mut self, min: Duration, max: Duration) -> Self {
        self.hint_min = min;
        self.hint_max = max;
        self
    }

    /// The maximum number of attempts of one call, all classes together
    /// (5 by default), on top of each class's own maximum.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The maximum total time of one call (210 s by default), measured from
    /// `call`. The layer never sleeps past it: when the next wait would
    /// cross it, the last error is returned. Requests may override it
    /// through [`CallOptions`](crate::CallOptions).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// No layer-wide deadline (requests may still set one).
    #[must_use]
    pub fn no_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// The clock that gives the quota window's phase (the system clock by
    /// default). Tests use [`Clock::starting_at`] under paused time.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Waits out refusals by an open circuit breaker below
    /// (`Local(CircuitOpen)`) instead of returning them, as `policy` says.
    /// Off by default; turn it on when nothing above can use the refusal
    /// (no fallback chain). See [`CircuitWait`].
    #[must_use]
    pub fn wait_out_open_circuits(mut self, policy: CircuitWait) -> Self {
        self.circuit_wait = Some(policy);
        self
    }

    /// Returns refusals by an open circuit breaker at once (the default).
    #[must_use]
    pub fn no_circuit_wait(mut self) -> Self {
        self.circuit_wait = None;
        self
    }

    /// The retry budget's settings.
    #[must_use]
    pub fn retry_budget(mut self, config: RetryBudgetConfig) -> Self {
        self.budget = config;
        self
    }

    /// Seeds the random draws, for reproducible waits (random by default).
    ///
    /// Each call that computes a wait gets its own `fastrand::Rng`, created
    /// at its first wait computation: the first such call uses `Rng::with_seed(seed)`, the
    /// k-th (counting from 0) `Rng::with_seed(seed + k * 0x9E37_79B9_7F4A_7C15)`
    /// (wrapping). With one call at a time, or a single-threaded runtime
    /// under paused time, the waits are fully reproducible.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How per-call options are read from requests.
    pub fn call_options<O2>(self, options: O2) -> QuotaAlignedRetryLayerBuilder<O2> {
        QuotaAlignedRetryLayerBuilder {
            policies: self.policies,
            window: self.window,
            hint_min: self.hint_min,
            hint_max: self.hint_max,
            max_attempts: self.max_attempts,
            deadline: self.deadline,
            clock: self.clock,
            budget: self.budget,
            circuit_wait: self.circuit_wait,
            seed: self.seed,
            options,
            error: self.error,
        }
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<QuotaAlignedRetryLayer<O>, BuildError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.window.is_zero() {
            return Err(BuildError::ZeroWindow);
        }
        if self.window > MAX_WAIT {
            return Err(BuildError::TooLong { setting: "window" });
        }
        if self.hint_min > self.hint_max {
            return Err(BuildError::InvalidHintRange);
        }
        if self.hint_max > MAX_WAIT {
            return Err(BuildError::TooLong {
                setting: "hint_range",
            });
        }
        if let Some(Err(reason)) = self.circuit_wait.map(|c| c.check()) {
            return Err(BuildError::InvalidCircuitWait(reason));
        }
        if self.max_attempts == 0 {
            return Err(BuildError::ZeroMaxAttempts);
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(BuildError::ZeroDeadline);
        }
        self.budget.check().map_err(BuildError::InvalidBudget)?;
        debug_assert!(self.policies.iter().all(|p| p.check().is_ok()));
        let shared = Shared {
            policies: self.policies,
            window: self.window,
            hint_min: self.hint_min,
            hint_max: self.hint_max,
            max_attempts: self.max_attempts,
            deadline: self.deadline,
            clock: self.clock.unwrap_or_else(Clock::system),
            budget: RetryBudget::new(self.budget),
            circuit_wait: self.circuit_wait,
            seed: self.seed.unwrap_or_else(|| fastrand::u64(..)),
            draws: AtomicU64::new(0),
        };
        Ok(QuotaAlignedRetryLayer {
            shared: Arc::new(shared),
            options: self.options,
        })
    }
}
