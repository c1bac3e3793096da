//! The preset stack: the five layers composed in the design's order, each
//! one optional and replaceable.
//!
//! ```text
//! ModelFallback          slot `fallback`  (off by default: needs a chain)
//!   QuotaAlignedRetry    slot `retry`     (on: crate defaults, ModelRequest reports;
//!                                          waits out open breakers when there is no fallback)
//!     CircuitBreak       slot `breaker`   (on: crate defaults)
//!       TokenBudget      slot `budget`    (off by default: needs your quota)
//!         ThrottleClassify slot `classify` (on: SDK errors)
//!           InvocationMetrics slot `metrics` (on: invocations, latency, tokens)
//!             your service
//! ```
//!
//! Every slot holds a [`Slot`]: a default marker ([`DefaultRetry`],
//! [`DefaultBreaker`], [`DefaultClassify`]), [`Off`] (the layer is left
//! out), [`Chains`] (fallback chains, built into a `ModelFallbackLayer`), or
//! [`Custom`] (any [`Layer`] of yours, including a layer of this workspace
//! configured your way). Slots are resolved by
//! [`StackBuilder::into_layer`] and [`StackBuilder::service`], which return a
//! typed [`BuildError`] for any configuration a layer refuses.
//!
//! # The breaker under the retry, and open breakers
//!
//! The breaker sits under the retry layer so that it sees every attempt
//! (each retry is a call to the model: its outcome is the model's health)
//! and refuses retries of a dead model before they reach Bedrock. What the
//! retry layer does with such a refusal (`Local(CircuitOpen)`) depends on
//! what is above it:
//!
//! - **with a fallback chain**, the refusal goes up at once and the
//!   fallback layer moves on to the next target;
//! - **without one** (a single model), the default retry layer waits the
//!   breaker out ([`CircuitWait`]: the refusal's `retry_after` plus up to a
//!   quarter more, at most 30 s per wait, within the call's deadline, no
//!   retry budget spent). Returning the refusal instead failed every call
//!   that was waiting to retry a 503 when the breaker opened: in a storm of
//!   50 % 503s that made the stack answer fewer calls than a plain retry
//!   loop. The breaker still spares Bedrock the retries of those calls.
//!   With the breaker opening at 90 % failures (not 50 %), a model that
//!   answers half its calls keeps its breaker closed and the retries get
//!   the calls answered (`storm-503`: 99.9 % answered, p95 4 s, against
//!   p95 78 s when the breaker opened at 50 % and callers waited it out);
//!   a model that answers almost nothing still trips it, and waiting it
//!   out spares Bedrock the retries. Without a fallback a 503 also gets
//!   more retries (6), the retry budget bounding the extra load.
//!
//! A full connection pool (`Unavailable(ConnectionPool)`, HTTP 503 "Too
//! many connections") does not count against the model's breaker: it says
//! the client opened more connections than Bedrock (or its own pool)
//! accepts, not that the model is sick. The retry layer retries it after a
//! short pause (100 ms to 1 s), and the breaker counts it in
//! `bedrock_connection_pool_exhausted_total{model}`. The cure is on the
//! client's side: share one client and cap its connections below
//! Bedrock's limit (the SDK client builder's `max_connections_per_host`).

use std::fmt;
use std::time::Duration;

use tower::util::{BoxCloneService, BoxCloneSyncService};
use tower_bedrock_breaker::{CircuitBreakLayer, DEFAULT_MAX_OPEN_DURATION, DEFAULT_OPEN_DURATION};
use tower_bedrock_budget::{Budget, BudgetStore, TokenBudgetLayer};
use tower_bedrock_classify::ThrottleClassifyLayer;
use tower_bedrock_core::Clock;
use tower_bedrock_core::{ErrorClass, ThrottleKind, UnavailableKind};
use tower_bedrock_fallback::{Chain, ModelFallbackLayer};
use tower_bedrock_retry::{
    Backoff, CircuitWait, ClassPolicy, DEFAULT_CIRCUIT_MAX_TOTAL, DEFAULT_CIRCUIT_MAX_WAIT,
    DEFAULT_DEADLINE, DEFAULT_HINT_MAX, DEFAULT_HINT_MIN, ModelRequestReport, Policies,
    QuotaAlignedRetryLayer,
};
use tower_layer::{Identity, Layer};

use crate::observe::InvocationMetricsLayer;
use tower_service::Service;

/// The quota window the defaults assume: Bedrock's per-minute quotas.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Settings shared by the default layers of a [`StackBuilder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackSettings {
    window: Duration,
    seed: Option<u64>,
    clock: Option<Clock>,
    fallback: bool,
}

impl StackSettings {
    /// The quota window the retry layer aligns on (60 s by default).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The factor the default layers' time constants are multiplied by:
    /// `window / 60 s` (1 with the default window).
    pub fn time_scale(&self) -> f64 {
        self.window.as_secs_f64() / DEFAULT_WINDOW.as_secs_f64()
    }

    /// The seed given to the default retry layer and breaker, when set.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// The clock given to the default retry layer, when set (the system
    /// clock otherwise).
    pub fn clock(&self) -> Option<Clock> {
        self.clock
    }

    /// Whether the stack has a fallback layer (its slot is not [`Off`]).
    /// Without one, the default retry layer waits out open breakers.
    pub fn has_fallback(&self) -> bool {
        self.fallback
    }
}

impl Default for StackSettings {
    fn default() -> Self {
        StackSettings {
            window: DEFAULT_WINDOW,
            seed: None,
            clock: None,
            fallback: false,
        }
    }
}

/// What a slot of the [`StackBuilder`] holds, resolved into a layer when the
/// stack is built.
pub trait Slot {
    /// The layer this slot becomes.
    type Layer;

    /// Builds the layer, with the stack's shared settings.
    fn resolve(self, settings: &StackSettings) -> Result<Self::Layer, BuildError>;

    /// Whether this slot leaves its layer out ([`Off`] does).
    fn is_off(&self) -> bool {
        false
    }
}

/// A slot left empty: the layer is not part of the stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Off;

impl Slot for Off {
    type Layer = Identity;
    fn resolve(self, _: &StackSettings) -> Result<Identity, BuildError> {
        Ok(Identity::new())
    }
    fn is_off(&self) -> bool {
        true
    }
}

/// A slot holding a layer built by the caller, used as is.
#[derive(Debug, Clone, Copy)]
pub struct Custom<L>(pub L);

impl<L> Slot for Custom<L> {
    type Layer = L;
    fn resolve(self, _: &StackSettings) -> Result<L, BuildError> {
        Ok(self.0)
    }
}

/// The default retry slot: [`QuotaAlignedRetryLayer`] with the retry crate's
/// defaults (with a window other than 60 s, every wait, hint bound and the
/// deadline scaled by [`StackSettings::time_scale`]), the stack's window,
/// seed and clock, recording attempts into
/// the request's [`CallReport`](tower_bedrock_core::CallReport)
/// ([`ModelRequestReport`]). Without a fallback layer in the stack, it
/// also waits out open breakers ([`CircuitWait`] with its defaults, scaled
/// too); see the [module documentation](self).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultRetry;

impl Slot for DefaultRetry {
    type Layer = QuotaAlignedRetryLayer<ModelRequestReport>;
    fn resolve(self, s: &StackSettings) -> Result<Self::Layer, BuildError> {
        let mut b = QuotaAlignedRetryLayer::builder().window(s.window);
        if s.window != DEFAULT_WINDOW && !s.window.is_zero() {
            let k = s.time_scale();
            b = b
                .hint_range(DEFAULT_HINT_MIN.mul_f64(k), DEFAULT_HINT_MAX.mul_f64(k))
                .deadline(DEFAULT_DEADLINE.mul_f64(k));
            let defaults = Policies::default();
            for class in RETRIED_BY_DEFAULT {
                let p = defaults.get(class);
                let mut scaled = ClassPolicy::retry(p.max_retries(), scale_backoff(p.backoff(), k));
                if !p.honors_hint() {
                    scaled = scaled.ignore_hint();
                }
                b = b.policy(class, scaled);
            }
        }
        if !s.fallback {
            let k = s.time_scale();
            // Nothing else can answer: a 503 is worth more attempts. Five
            // attempts lose about one call in 32 of those arriving during
            // a storm of 50 % 503s (measured with the `storm-503`
            // scenario: as many losses as tower's Retry with the same five
            // attempts); seven lose one in 128. The retry budget still
            // bounds the extra load when failures pass one in two.
            let service =
                Policies::default().get(ErrorClass::Unavailable(UnavailableKind::Service));
            let backoff = if s.window != DEFAULT_WINDOW && !s.window.is_zero() {
                scale_backoff(service.backoff(), k)
            } else {
                service.backoff()
            };
            b = b
                .policy(
                    ErrorClass::Unavailable(UnavailableKind::Service),
                    ClassPolicy::retry(NO_FALLBACK_SERVICE_RETRIES, backoff),
                )
                .max_attempts(NO_FALLBACK_SERVICE_RETRIES + 1);
            b = b.wait_out_open_circuits(
                CircuitWait::new()
                    .max_wait(DEFAULT_CIRCUIT_MAX_WAIT.mul_f64(k))
                    .max_total(DEFAULT_CIRCUIT_MAX_TOTAL.mul_f64(k)),
            );
        }
        if let Some(seed) = s.seed {
            b = b.seed(seed);
        }
        if let Some(clock) = s.clock {
            b = b.clock(clock);
        }
        b.call_options(ModelRequestReport)
            .build()
            .map_err(BuildError::Retry)
    }
}

/// Retries of a 503 (`Unavailable(Service)`) when the stack has no
/// fallback chain, instead of the retry crate's 4.
pub const NO_FALLBACK_SERVICE_RETRIES: u32 = 6;

/// The classes the retry crate retries by default (the others never are).
const RETRIED_BY_DEFAULT: [ErrorClass; 7] = [
    ErrorClass::Throttled(ThrottleKind::RequestRate),
    ErrorClass::Throttled(ThrottleKind::TokenRate),
    ErrorClass::Throttled(ThrottleKind::Unspecified),
    ErrorClass::Unavailable(UnavailableKind::ConnectionPool),
    ErrorClass::Unavailable(UnavailableKind::Service),
    ErrorClass::Unavailable(UnavailableKind::Network),
    ErrorClass::ModelTimeout,
];

fn scale_backoff(b: Backoff, k: f64) -> Backoff {
    match b {
        Backoff::QuotaWindow { offset, spread } => {
            Backoff::quota_window(offset.mul_f64(k), spread.mul_f64(k))
        }
        Backoff::Exponential { base, cap, jitter } => {
            Backoff::exponential(base.mul_f64(k), cap.mul_f64(k), jitter)
        }
        other => other,
    }
}

/// The default breaker slot: [`CircuitBreakLayer`] with the breaker crate's
/// defaults (one breaker per model id; with a window other than 60 s, the
/// open durations scaled by [`StackSettings::time_scale`]) and the stack's
/// seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultBreaker;

impl Slot for DefaultBreaker {
    type Layer = CircuitBreakLayer;
    fn resolve(self, s: &StackSettings) -> Result<CircuitBreakLayer, BuildError> {
        let mut b = CircuitBreakLayer::builder();
        if s.window != DEFAULT_WINDOW && !s.window.is_zero() {
            let k = s.time_scale();
            b = b
                .open_duration(BREAKER_OPEN.mul_f64(k))
                .max_open_duration(BREAKER_MAX_OPEN.mul_f64(k))
                .half_open_busy_retry_after(BREAKER_BUSY_RETRY_AFTER.mul_f64(k));
        }
        if let Some(seed) = s.seed {
            b = b.seed(seed);
        }
        b.build().map_err(BuildError::Breaker)
    }
}

/// The breaker crate's default open duration (scaled with the window).
const BREAKER_OPEN: Duration = DEFAULT_OPEN_DURATION;
/// The breaker crate's default cap on the open duration.
const BREAKER_MAX_OPEN: Duration = DEFAULT_MAX_OPEN_DURATION;
/// The breaker crate's default hint for calls refused while probes run.
const BREAKER_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The default classify slot: [`ThrottleClassifyLayer::new`], which
/// classifies the errors of `aws-sdk-bedrockruntime` (`SdkError<…>` of every
/// operation) and names models through
/// [`ModelRequest`](tower_bedrock_core::ModelRequest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassify;

impl Slot for DefaultClassify {
    type Layer = ThrottleClassifyLayer;
    fn resolve(self, _: &StackSettings) -> Result<ThrottleClassifyLayer, BuildError> {
        Ok(ThrottleClassifyLayer::new())
    }
}

/// The default invocation-metrics slot: [`InvocationMetricsLayer`]
/// (`bedrock_invocations_total`, latency and token counters per model).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultMetrics;

impl Slot for DefaultMetrics {
    type Layer = InvocationMetricsLayer;
    fn resolve(self, _: &StackSettings) -> Result<InvocationMetricsLayer, BuildError> {
        Ok(InvocationMetricsLayer::new())
    }
}

/// A fallback slot holding chains, built into a [`ModelFallbackLayer`] with
/// the fallback crate's default triggers.
pub struct Chains<Req>(pub Vec<Chain<Req>>);

impl<Req> fmt::Debug for Chains<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Chains").field(&self.0).finish()
    }
}

impl<Req> Slot for Chains<Req> {
    type Layer = ModelFallbackLayer<Req>;
    fn resolve(self, _: &StackSettings) -> Result<Self::Layer, BuildError> {
        let mut b = ModelFallbackLayer::builder();
        for chain in self.0 {
            b = b.chain(chain);
        }
        b.build().map_err(BuildError::Fallback)
    }
}

/// Why a stack could not be built: the layer that refused its
/// configuration, with that layer's own typed error.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BuildError {
    /// The retry layer refused its configuration.
    Retry(tower_bedrock_retry::BuildError),
    /// The breaker refused its configuration.
    Breaker(tower_bedrock_breaker::ConfigError),
    /// The fallback layer refused its chains or triggers.
    Fallback(tower_bedrock_fallback::BuildError),
    /// The budget refused its configuration (for callers that build their
    /// budget next to the stack and want one error type).
    Budget(tower_bedrock_budget::BuildError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Retry(e) => write!(f, "retry layer: {e}"),
            BuildError::Breaker(e) => write!(f, "circuit breaker: {e}"),
            BuildError::Fallback(e) => write!(f, "model fallback: {e}"),
            BuildError::Budget(e) => write!(f, "token budget: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Retry(e) => Some(e),
            BuildError::Breaker(e) => Some(e),
            BuildError::Fallback(e) => Some(e),
            BuildError::Budget(e) => Some(e),
        }
    }
}

impl From<tower_bedrock_retry::BuildError> for BuildError {
    fn from(e: tower_bedrock_retry::BuildError) -> Self {
        BuildError::Retry(e)
    }
}

impl From<tower_bedrock_breaker::ConfigError> for BuildError {
    fn from(e: tower_bedrock_breaker::ConfigError) -> Self {
        BuildError::Breaker(e)
    }
}

impl From<tower_bedrock_fallback::BuildError> for BuildError {
    fn from(e: tower_bedrock_fallback::BuildError) -> Self {
        BuildError::Fallback(e)
    }
}

impl From<tower_bedrock_budget::BuildError> for BuildError {
    fn from(e: tower_bedrock_budget::BuildError) -> Self {
        BuildError::Budget(e)
    }
}

/// Configures the preset stack. Made by [`stack()`](crate::stack()) or
/// [`StackBuilder::new`].
///
/// | slot | default | change it with | leave it out with |
/// |---|---|---|---|
/// | fallback | off (there is no sensible default chain) | [`fallback_chain`](Self::fallback_chain), [`fallback`](Self::fallback) | [`without_fallback`](Self::without_fallback) |
/// | retry | [`DefaultRetry`]: per-class policies, window alignment, retry budget 500/5 (5 back per success), 5 attempts, 210 s deadline; when the fallback slot is off, 6 retries of a 503 (7 attempts) and open breakers waited out | [`retry`](Self::retry) | [`without_retry`](Self::without_retry) |
/// | breaker | [`DefaultBreaker`]: per model, opens at 90 % failures over 20 calls (10 minimum), 5 s doubling to 30 s, 2 of 3 probes close it; a full connection pool does not count | [`breaker`](Self::breaker) | [`without_breaker`](Self::without_breaker) |
/// | budget | off (your TPM quota is yours to state) | [`budget`](Self::budget), [`token_budget`](Self::token_budget) | [`without_budget`](Self::without_budget) |
/// | classify | [`DefaultClassify`]: `aws-sdk-bedrockruntime` errors | [`classify`](Self::classify) | [`without_classify`](Self::without_classify) (for services whose errors are already `Classified`) |
/// | metrics | [`DefaultMetrics`]: invocations, latency, tokens per model, per attempt | [`metrics`](Self::metrics) | [`without_metrics`](Self::without_metrics) |
///
/// The settings [`window`](Self::window), [`seed`](Self::seed) and
/// [`clock`](Self::clock) reach the default layers only; a [`Custom`] layer
/// is used exactly as given. A window other than 60 s (compressed-time
/// demos and tests) scales every time constant of the default retry layer
/// and breaker by `window / 60 s`, so the stack behaves the same, faster.
pub struct StackBuilder<
    F = Off,
    R = DefaultRetry,
    B = DefaultBreaker,
    T = Off,
    C = DefaultClassify,
    M = DefaultMetrics,
> {
    settings: StackSettings,
    fallback: F,
    retry: R,
    breaker: B,
    budget: T,
    classify: C,
    metrics: M,
}

impl<F: fmt::Debug, R: fmt::Debug, B: fmt::Debug, T: fmt::Debug, C: fmt::Debug, M: fmt::Debug>
    fmt::Debug for StackBuilder<F, R, B, T, C, M>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBuilder")
            .field("settings", &self.settings)
            .field("fallback", &self.fallback)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("budget", &self.budget)
            .field("classify", &self.classify)
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl StackBuilder {
    /// The defaults: retry, breaker and classify on; fallback and budget
    /// off until given a chain and a quota.
    pub fn new() -> Self {
        StackBuilder {
            settings: StackSettings::default(),
            fallback: Off,
            retry: DefaultRetry,
            breaker: DefaultBreaker,
            budget: Off,
            classify: DefaultClassify,
            metrics: DefaultMetrics,
        }
    }
}

impl Default for StackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<F, R, B, T, C, M> StackBuilder<F, R, B, T, C, M> {
    /// The quota window the default retry layer aligns its throttle retries
    /// on (60 s by default; shorter for compressed-time demos and tests, in
    /// which case the default layers' time constants scale with it).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.settings.window = window;
        self
    }

    /// Seeds the default retry layer's and breaker's random draws.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = Some(seed);
        self
    }

    /// The clock the default retry layer reads the window phase from.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.settings.clock = Some(clock);
        self
    }

    /// The settings given to the default layers.
    pub fn settings(&self) -> &StackSettings {
        &self.settings
    }

    /// Replaces the fallback slot with a layer of yours (a
    /// [`ModelFallbackLayer`] built with its own builder, or any layer).
    pub fn fallback<L>(self, layer: L) -> StackBuilder<Custom<L>, R, B, T, C, M> {
        self.with_fallback(Custom(layer))
    }

    /// Falls back along `chain` (one chain per primary model id; replaces
    /// any chain given before).
    pub fn fallback_chain<Req>(
        self,
        chain: Chain<Req>,
    ) -> StackBuilder<Chains<Req>, R, B, T, C, M> {
        self.with_fallback(Chains(vec![chain]))
    }

    /// Falls back along these chains, one per primary model id.
    pub fn fallback_chains<Req, I>(self, chains: I) -> StackBuilder<Chains<Req>, R, B, T, C, M>
    where
        I: IntoIterator<Item = Chain<Req>>,
    {
        self.with_fallback(Chains(chains.into_iter().collect()))
    }

    /// Leaves the fallback layer out.
    pub fn without_fallback(self) -> StackBuilder<Off, R, B, T, C, M> {
        self.with_fallback(Off)
    }

    fn with_fallback<F2>(self, fallback: F2) -> StackBuilder<F2, R, B, T, C, M> {
        StackBuilder {
            settings: self.settings,
            fallback,
            retry: self.retry,
            breaker: self.breaker,
            budget: self.budget,
            classify: self.classify,
            metrics: self.metrics,
        }
    }

    /// Replaces the retry slot with a layer of yours.
    pub fn retry<L>(self, layer: L) -> StackBuilder<F, Custom<L>, B, T, C, M> {
        self.with_retry(Custom(layer))
    }

    /// Leaves the retry layer out.
    pub fn without_retry(self) -> StackBuilder<F, Off, B, T, C, M> {
        self.with_retry(Off)
    }

    fn with_retry<R2>(self, retry: R2) -> StackBuilder<F, R2, B, T, C, M> {
        StackBuilder {
            settings: self.settings,
            fallback: self.fallback,
            retry,
            breaker: self.breaker,
            budget: self.budget,
            classify: self.classify,
            metrics: self.metrics,
        }
    }

    /// Replaces the breaker slot with a layer of yours (keep its
    /// [`CircuitBreakHandle`](tower_bedrock_breaker::CircuitBreakHandle) to
    /// watch or force the breakers).
    pub fn breaker<L>(self, layer: L) -> StackBuilder<F, R, Custom<L>, T, C, M> {
        self.with_breaker(Custom(layer))
    }

    /// Leaves the breaker out.
    pub fn without_breaker(self) -> StackBuilder<F, R, Off, T, C, M> {
        self.with_breaker(Off)
    }

    fn with_breaker<B2>(self, breaker: B2) -> StackBuilder<F, R, B2, T, C, M> {
        StackBuilder {
            settings: self.settings,
            fallback: self.fallback,
            retry: self.retry,
            breaker,
            budget: self.budget,
            classify: self.classify,
            metrics: self.metrics,
        }
    }

    /// Replaces the budget slot with a layer of yours (typically
    /// `budget.layer()` or `budget.tenant(name, weight)?.layer()`).
    pub fn budget<L>(self, layer: L) -> StackBuilder<F, R, B, Custom<L>, C, M> {
        self.with_budget(Custom(layer))
    }

    /// Admits requests against `budget`, as its default tenant.
    pub fn token_budget<St: BudgetStore>(
        self,
        budget: &Budget<St>,
    ) -> StackBuilder<F, R, B, Custom<TokenBudgetLayer<St>>, C, M> {
        self.with_budget(Custom(budget.layer()))
    }

    /// Leaves the budget out.
    pub fn without_budget(self) -> StackBuilder<F, R, B, Off, C, M> {
        self.with_budget(Off)
    }

    fn with_budget<T2>(self, budget: T2) -> StackBuilder<F, R, B, T2, C, M> {
        StackBuilder {
            settings: self.settings,
            fallback: self.fallback,
            retry: self.retry,
            breaker: self.breaker,
            budget,
            classify: self.classify,
            metrics: self.metrics,
        }
    }

    /// Replaces the classify slot (for a service whose errors are not the
    /// SDK's: `ThrottleClassifyLayer::new().classifier(|e: &MyError| ...)`).
    pub fn classify<L>(self, layer: L) -> StackBuilder<F, R, B, T, Custom<L>, M> {
        self.with_classify(Custom(layer))
    }

    /// Leaves the classifier out: the inner service's errors must already
    /// implement [`Classified`](tower_bedrock_core::Classified) and
    /// `From<Rejection>`.
    pub fn without_classify(self) -> StackBuilder<F, R, B, T, Off, M> {
        self.with_classify(Off)
    }

    fn with_classify<C2>(self, classify: C2) -> StackBuilder<F, R, B, T, C2, M> {
        StackBuilder {
            settings: self.settings,
            fallback: self.fallback,
            retry: self.retry,
            breaker: self.breaker,
            budget: self.budget,
            classify,
            metrics: self.metrics,
        }
    }

    /// Replaces the invocation-metrics slot with a layer of yours.
    pub fn metrics<L>(self, layer: L) -> StackBuilder<F, R, B, T, C, Custom<L>> {
        self.with_metrics(Custom(layer))
    }

    /// Leaves the invocation metrics out (errors are still counted by the
    /// classifier).
    pub fn without_metrics(self) -> StackBuilder<F, R, B, T, C, Off> {
        self.with_metrics(Off)
    }

    fn with_metrics<M2>(self, metrics: M2) -> StackBuilder<F, R, B, T, C, M2> {
        StackBuilder {
            settings: self.settings,
            fallback: self.fallback,
            retry: self.retry,
            breaker: self.breaker,
            budget: self.budget,
            classify: self.classify,
            metrics,
        }
    }
}

impl<F: Slot, R: Slot, B: Slot, T: Slot, C: Slot, M: Slot> StackBuilder<F, R, B, T, C, M> {
    /// Builds every slot into one [`Layer`] (cheap to clone; clones and the
    /// services they make share the layers' state: breakers, budgets, the
    /// retry budget).
    #[allow(clippy::type_complexity)]
    pub fn into_layer(
        self,
    ) -> Result<
        BedrockStackLayer<F::Layer, R::Layer, B::Layer, T::Layer, C::Layer, M::Layer>,
        BuildError,
    > {
        let mut settings = self.settings;
        settings.fallback = !self.fallback.is_off();
        let s = &settings;
        Ok(BedrockStackLayer {
            fallback: self.fallback.resolve(s)?,
            retry: self.retry.resolve(s)?,
            breaker: self.breaker.resolve(s)?,
            budget: self.budget.resolve(s)?,
            classify: self.classify.resolve(s)?,
            metrics: self.metrics.resolve(s)?,
        })
    }

    /// Builds the stack over `inner` and boxes it into a
    /// [`BoxCloneService`], easy to keep in application state. (`X`, the
    /// unboxed service, is inferred.)
    #[allow(clippy::type_complexity)]
    pub fn service<S, Req, X>(
        self,
        inner: S,
    ) -> Result<BoxCloneService<Req, X::Response, X::Error>, BuildError>
    where
        BedrockStackLayer<F::Layer, R::Layer, B::Layer, T::Layer, C::Layer, M::Layer>:
            Layer<S, Service = X>,
        X: Service<Req> + Clone + Send + 'static,
        X::Future: Send + 'static,
    {
        Ok(BoxCloneService::new(self.into_layer()?.layer(inner)))
    }

    /// Like [`service`](Self::service), boxed into a [`BoxCloneSyncService`]
    /// (also `Sync`: what axum's router state and other shared state ask
    /// for).
    #[allow(clippy::type_complexity)]
    pub fn sync_service<S, Req, X>(
        self,
        inner: S,
    ) -> Result<BoxCloneSyncService<Req, X::Response, X::Error>, BuildError>
    where
        BedrockStackLayer<F::Layer, R::Layer, B::Layer, T::Layer, C::Layer, M::Layer>:
            Layer<S, Service = X>,
        X: Service<Req> + Clone + Send + Sync + 'static,
        X::Future: Send + 'static,
    {
        Ok(BoxCloneSyncService::new(self.into_layer()?.layer(inner)))
    }
}

/// The layers of the preset stack, composed outermost first: fallback,
/// retry, breaker, budget, classify, invocation metrics. Left-out slots are
/// [`Identity`].
#[derive(Debug, Clone)]
pub struct BedrockStackLayer<F, R, B, T, C, M> {
    fallback: F,
    retry: R,
    breaker: B,
    budget: T,
    classify: C,
    metrics: M,
}

impl<F, R, B, T, C, M> BedrockStackLayer<F, R, B, T, C, M> {
    /// The fallback layer.
    pub fn fallback_layer(&self) -> &F {
        &self.fallback
    }

    /// The retry layer (its retry budget is shared by every service).
    pub fn retry_layer(&self) -> &R {
        &self.retry
    }

    /// The breaker layer (`breaker_layer().handle()` watches the breakers).
    pub fn breaker_layer(&self) -> &B {
        &self.breaker
    }

    /// The budget layer (`budget_layer().budget()` reads the windows).
    pub fn budget_layer(&self) -> &T {
        &self.budget
    }

    /// The classify layer.
    pub fn classify_layer(&self) -> &C {
        &self.classify
    }

    /// The invocation-metrics layer.
    pub fn metrics_layer(&self) -> &M {
        &self.metrics
    }

    /// The same stack with another budget layer, sharing every other layer
    /// (and so their state: breakers, retry budget, fallback memory). One
    /// stack per tenant of a shared [`Budget`]:
    /// `layer.with_budget_layer(budget.tenant("app-a", 1)?.layer())`.
    pub fn with_budget_layer<T2>(&self, budget: T2) -> BedrockStackLayer<F, R, B, T2, C, M>
    where
        F: Clone,
        R: Clone,
        B: Clone,
        C: Clone,
        M: Clone,
    {
        BedrockStackLayer {
            fallback: self.fallback.clone(),
            retry: self.retry.clone(),
            breaker: self.breaker.clone(),
            budget,
            classify: self.classify.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Builds the stack over `inner` and boxes it into a
    /// [`BoxCloneService`]. (`X`, the unboxed service, is inferred.)
    pub fn boxed<S, Req, X>(&self, inner: S) -> BoxCloneService<Req, X::Response, X::Error>
    where
        Self: Layer<S, Service = X>,
        X: Service<Req> + Clone + Send + 'static,
        X::Future: Send + 'static,
    {
        BoxCloneService::new(self.layer(inner))
    }

    /// Builds the stack over `inner` and boxes it into a
    /// [`BoxCloneSyncService`] (also `Sync`, for axum state).
    pub fn boxed_sync<S, Req, X>(&self, inner: S) -> BoxCloneSyncService<Req, X::Response, X::Error>
    where
        Self: Layer<S, Service = X>,
        X: Service<Req> + Clone + Send + Sync + 'static,
        X::Future: Send + 'static,
    {
        BoxCloneSyncService::new(self.layer(inner))
    }
}

impl<S, F, R, B, T, C, M> Layer<S> for BedrockStackLayer<F, R, B, T, C, M>
where
    M: Layer<S>,
    C: Layer<M::Service>,
    T: Layer<C::Service>,
    B: Layer<T::Service>,
    R: Layer<B::Service>,
    F: Layer<R::Service>,
{
    type Service = F::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let observed = self.metrics.layer(inner);
        let classified = self.classify.layer(observed);
        let budgeted = self.budget.layer(classified);
        let guarded = self.breaker.layer(budgeted);
        let retried = self.retry.layer(guarded);
        self.fallback.layer(retried)
    }
}
