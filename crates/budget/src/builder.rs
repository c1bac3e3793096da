//! [`BudgetBuilder`] and the budget's validated configuration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tower_bedrock_core::{Clock, ErrorClass};

use crate::adaptive::Adaptive;
use crate::budget::{Budget, Shared};
use crate::error::BuildError;
use crate::estimate::ReservationPolicy;
use crate::settlement::{ErrorSettlement, default_error_settlement};
use crate::store::{BudgetStore, InMemoryStore, Limits, WindowMode, WindowSpec};
use crate::tenant::{Priority, TenantInfo};

pub(crate) struct Config {
    pub(crate) spec: WindowSpec,
    default_limits: Limits,
    key_limits: HashMap<String, Limits>,
    pub(crate) policy: ReservationPolicy,
    pub(crate) max_wait: Duration,
    pub(crate) adaptive: Option<Adaptive>,
    pub(crate) on_error: fn(&ErrorClass) -> ErrorSettlement,
    slack: u64,
}

impl Config {
    /// The limits `key` is admitted against: as configured, minus the
    /// slack on the token window.
    pub(crate) fn limits_of(&self, key: &str) -> Limits {
        let mut l = self.configured_of(key);
        l.tokens = l.tokens.saturating_sub(self.slack).max(1);
        l
    }

    /// The limits configured for `key`.
    pub(crate) fn configured_of(&self, key: &str) -> Limits {
        self.key_limits
            .get(key)
            .copied()
            .unwrap_or(self.default_limits)
    }
}

/// Builds a [`Budget`]. See [`Budget::builder`].
#[derive(Debug, Clone)]
pub struct BudgetBuilder {
    spec: WindowSpec,
    clock: Option<Clock>,
    day: Option<Duration>,
    limits: Limits,
    key_limits: Vec<(String, Limits)>,
    policy: ReservationPolicy,
    max_wait: Duration,
    adaptive: Option<Adaptive>,
    on_error: fn(&ErrorClass) -> ErrorSettlement,
    slack: u64,
}

impl Budget<InMemoryStore> {
    /// A builder with the defaults: fixed 60 s windows aligned on the wall
    /// clock (like Bedrock's per-minute quotas), 100 % of the limits with
    /// no slack, a 1440-window day, 30 s maximum wait, adaptive limits on.
    /// The token limit must be set ([`BudgetBuilder::tokens_per_window`]),
    /// or every key given its own.
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder {
            spec: WindowSpec::default(),
            clock: None,
            day: None,
            limits: Limits::tokens(0),
            key_limits: Vec::new(),
            policy: ReservationPolicy::default(),
            max_wait: Duration::from_secs(30),
            adaptive: Some(Adaptive::default()),
            on_error: default_error_settlement,
            slack: 0,
        }
    }
}

impl BudgetBuilder {
    /// Window length for the token and request limits (60 s by default).
    pub fn window(mut self, window: Duration) -> Self {
        self.spec.window = window;
        self
    }

    /// How windows are counted: [`WindowMode::Fixed`] (the default, like
    /// Bedrock) or [`WindowMode::Sliding`]. See the crate docs
    /// ([Windows](crate#windows-fixed-or-sliding)).
    pub fn window_mode(mut self, mode: WindowMode) -> Self {
        self.spec.mode = mode;
        self
    }

    /// The wall clock windows are aligned on ([`Clock::system`] when the
    /// budget is built, by default). Tests under tokio's paused time pass
    /// [`Clock::starting_at`] to place the window boundaries.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Sub-windows per window (100 by default): the sliding window's
    /// granularity, and how often the gauges are refreshed. Must divide
    /// the window into whole nanoseconds. More is closer to an exact
    /// sliding log (throughput under backlog is `n / (n + 1)` of the limit)
    /// and costs 16 bytes per sub-window and key.
    pub fn sub_windows(mut self, n: u32) -> Self {
        self.spec.sub_windows = n;
        self
    }

    /// Length of the daily window (1440 windows by default).
    pub fn day_length(mut self, day: Duration) -> Self {
        self.day = Some(day);
        self
    }

    /// Sub-windows of the daily window (24 by default; sliding mode).
    pub fn day_sub_windows(mut self, n: u32) -> Self {
        self.spec.day_sub_windows = n;
        self
    }

    /// Tokens per window for every key without limits of its own (TPM):
    /// your quota, all of it (see [`slack_tokens`](Self::slack_tokens)).
    pub fn tokens_per_window(mut self, tokens: u64) -> Self {
        self.limits.tokens = tokens;
        self
    }

    /// Requests per window for every key without limits of its own (RPM).
    pub fn requests_per_window(mut self, requests: u64) -> Self {
        self.limits.requests = Some(requests);
        self
    }

    /// Tokens per day for every key without limits of its own.
    pub fn tokens_per_day(mut self, tokens: u64) -> Self {
        self.limits.day_tokens = Some(tokens);
        self
    }

    /// Limits of one key (a model id, with the default key extractor).
    pub fn key_limits(mut self, key: impl Into<String>, limits: Limits) -> Self {
        self.key_limits.push((key.into(), limits));
        self
    }

    /// Tokens of every key's token window held back for estimate error (0
    /// by default: the whole quota, so `n` requests that fit it exactly
    /// are all admitted). Set it to how far your input estimates may run
    /// below Bedrock's count in one window (the default estimator and
    /// Bedrock's reservation both take the request's `max_tokens`; only
    /// the input is estimated). A slack at least as large as the limit
    /// leaves one token.
    pub fn slack_tokens(mut self, tokens: u64) -> Self {
        self.slack = tokens;
        self
    }

    /// Longest a request waits for room before it is shed (30 s by
    /// default), counted from the first poll of its response future. Zero
    /// sheds at once when there is no room. The call's deadline
    /// ([`call_deadline`](tower_bedrock_core::deadline::call_deadline)),
    /// when earlier, bounds the wait too.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Output tokens reserved for requests without `max_tokens` (4096 by
    /// default; Bedrock reserves the model's maximum).
    pub fn default_max_output_tokens(mut self, tokens: u64) -> Self {
        self.policy.set_default_max_output(tokens);
        self
    }

    /// Output tokens reserved for requests without `max_tokens` to models
    /// whose base id starts with `prefix`.
    pub fn max_output_tokens_for(mut self, prefix: &str, tokens: u64) -> Self {
        self.policy.add_max_output(prefix, tokens);
        self
    }

    /// Output burndown rate of models whose base id starts with `prefix`
    /// (overrides the default: 5 for Claude 4, 1 otherwise).
    pub fn burndown_for(mut self, prefix: &str, rate: u64) -> Self {
        self.policy.add_burndown(prefix, rate);
        self
    }

    /// Adaptive-limit parameters (on by default with [`Adaptive::default`]).
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// Turns the adaptive limit off: throttles neither lower the limits
    /// nor mark a window full.
    pub fn fixed_limits(mut self) -> Self {
        self.adaptive = None;
        self
    }

    /// Replaces the rule deciding what a failed call is settled to
    /// ([`default_error_settlement`] by default).
    pub fn on_error(mut self, rule: fn(&ErrorClass) -> ErrorSettlement) -> Self {
        self.on_error = rule;
        self
    }

    /// Builds a budget kept in this process's memory.
    pub fn build(self) -> Result<Budget<InMemoryStore>, BuildError> {
        self.build_with_store(InMemoryStore::new())
    }

    /// Builds a budget kept in `store`.
    pub fn build_with_store<St: BudgetStore>(self, store: St) -> Result<Budget<St>, BuildError> {
        let mut spec = self.spec;
        if spec.window.is_zero() {
            return Err(BuildError::ZeroWindow);
        }
        spec.day = match self.day {
            Some(d) => d,
            None => spec.window.saturating_mul(1440),
        };
        if spec.day.is_zero() {
            return Err(BuildError::ZeroDay);
        }
        spec.clock = self.clock.unwrap_or_else(Clock::system);
        check_sub_windows("window", spec.window, spec.sub_windows)?;
        check_sub_windows("day", spec.day, spec.day_sub_windows)?;
        check_limits("default", &self.limits)?;
        let mut key_limits = HashMap::new();
        for (k, l) in self.key_limits {
            check_limits(&k, &l)?;
            key_limits.insert(k, l);
        }
        if let Some(a) = &self.adaptive {
            if !(a.decrease > 0.0 && a.decrease < 1.0) {
                return Err(BuildError::BadAdaptive("decrease must be in (0, 1)"));
            }
            if !(a.recovery > 0.0 && a.recovery <= 1.0) {
                return Err(BuildError::BadAdaptive("recovery must be in (0, 1]"));
            }
            if !(a.min_factor > 0.0 && a.min_factor <= 1.0) {
                return Err(BuildError::BadAdaptive("min_factor must be in (0, 1]"));
            }
        }
        let default_tenant = Arc::new(TenantInfo {
            name: Arc::from("default"),
            index: 0,
            weight: 1,
            priority: Priority::Interactive,
        });
        Ok(Budget {
            shared: Arc::new(Shared {
                store,
                config: Arc::new(Config {
                    spec,
                    default_limits: self.limits,
                    key_limits,
                    policy: self.policy,
                    max_wait: self.max_wait,
                    adaptive: self.adaptive,
                    on_error: self.on_error,
                    slack: self.slack,
                }),
                keys: RwLock::new(HashMap::new()),
                tenants: Mutex::new(vec![default_tenant]),
            }),
        })
    }
}

fn check_sub_windows(window: &'static str, len: Duration, n: u32) -> Result<(), BuildError> {
    if n == 0 || n > 100_000 || (len / n).is_zero() || !len.as_nanos().is_multiple_of(u128::from(n))
    {
        return Err(BuildError::BadSubWindows {
            window,
            sub_windows: n,
        });
    }
    Ok(())
}

fn check_limits(key: &str, l: &Limits) -> Result<(), BuildError> {
    let zero = |window| BuildError::ZeroLimit {
        key: key.to_owned(),
        window,
    };
    if l.tokens == 0 {
        return Err(zero("tokens"));
    }
    if l.requests == Some(0) {
        return Err(zero("requests"));
    }
    if l.day_tokens == Some(0) {
        return Err(zero("day"));
    }
    Ok(())
}
