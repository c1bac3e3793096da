//! Learning the account's real capacity from throttles, calmly.

use std::time::Duration;

use tokio::time::Instant;

use crate::store::{Limits, WindowSpec};

/// Learning the account's real capacity from throttles.
///
/// When a call the budget admitted still comes back as a rate throttle
/// (`Throttled(TokenRate | RequestRate | Unspecified)`), the server's
/// window is full although the budget believed it had room (another
/// process shares the quota, or an estimate ran low):
///
/// 1. the key's current window (on the wall clock, like Bedrock's) is
///    marked **full until its end**: requests arriving meanwhile wait for
///    the next window instead of drawing more 429s (the retry layer already
///    waits for the next window with the throttled call);
/// 2. the effective limit drops (multiplied by `decrease`) only when
///    throttles **repeat across windows**: a throttle in the window right
///    after one that was throttled too. One throttle, often a one-off, does
///    not cost the next windows anything;
/// 3. after one whole window without throttles the limit **recovers**
///    linearly by `recovery` of the configured limit per window (by
///    default back to the configured limit within one more window); it
///    never drops below `min_factor` of it.
///
/// `Throttled(RequestRate)` lowers the request limit (the token limit when
/// no request limit is set); the others lower the token limit. The learned
/// token limit is the gauge `bedrock_budget_effective_limit_tokens`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    /// Multiplicative decrease when throttles repeat, in `(0, 1)`.
    /// Default 0.8.
    pub decrease: f64,
    /// Recovery per window after a clean window, as a fraction of the
    /// configured limit, in `(0, 1]`. Default 1.0.
    pub recovery: f64,
    /// Lowest effective limit, as a fraction of the configured one, in
    /// `(0, 1]`. Default 0.05.
    pub min_factor: f64,
    /// Minimum time between two decreases. Default: one window.
    pub cooldown: Option<Duration>,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            decrease: 0.8,
            recovery: 1.0,
            min_factor: 0.05,
            cooldown: None,
        }
    }
}

/// One limit's learned factor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Factor {
    /// The factor when last lowered or throttled.
    value: f64,
    /// The last throttle (recovery starts one window after it).
    at: Option<Instant>,
    /// Fixed-window index of the last throttle.
    last_window: Option<u64>,
    last_decrease: Option<Instant>,
}

impl Factor {
    pub(crate) const FULL: Factor = Factor {
        value: 1.0,
        at: None,
        last_window: None,
        last_decrease: None,
    };

    /// The factor at `now`.
    pub(crate) fn current(&self, now: Instant, a: &Adaptive, window: Duration) -> f64 {
        match self.at {
            None => self.value,
            Some(at) => {
                let clean = now.saturating_duration_since(at).as_secs_f64() / window.as_secs_f64();
                let windows = (clean - 1.0).max(0.0);
                (self.value + a.recovery * windows).min(1.0)
            }
        }
    }

    /// A throttle at `now`: true when the factor dropped.
    pub(crate) fn throttled(&mut self, now: Instant, a: &Adaptive, spec: &WindowSpec) -> bool {
        let window = spec.index_at(now, spec.window);
        let repeated = self
            .last_window
            .is_some_and(|w| w.saturating_add(1) == window);
        let cooled = self
            .last_decrease
            .is_none_or(|t| now.saturating_duration_since(t) >= a.cooldown.unwrap_or(spec.window));
        let current = self.current(now, a, spec.window);
        let dropped = repeated && cooled;
        self.value = if dropped {
            (current * a.decrease).max(a.min_factor)
        } else {
            current
        };
        if dropped {
            self.last_decrease = Some(now);
        }
        self.at = Some(now);
        self.last_window = Some(window);
        dropped
    }
}

/// A key's adaptive state: the learned factors and the window marked full.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Learned {
    pub(crate) tokens: Factor,
    pub(crate) requests: Factor,
    /// Until when the current window is believed full (a throttle came
    /// back in it).
    pub(crate) full_until: Option<Instant>,
}

impl Learned {
    pub(crate) const NEW: Learned = Learned {
        tokens: Factor::FULL,
        requests: Factor::FULL,
        full_until: None,
    };

    /// The effective limits at `now`.
    pub(crate) fn limits(
        &self,
        now: Instant,
        adaptive: Option<&Adaptive>,
        window: Duration,
        configured: Limits,
    ) -> Limits {
        let Some(a) = adaptive else {
            return configured;
        };
        Limits {
            tokens: scale(configured.tokens, self.tokens.current(now, a, window)),
            requests: configured
                .requests
                .map(|r| scale(r, self.requests.current(now, a, window))),
            day_tokens: configured.day_tokens,
        }
    }

    /// When the window marked full ends, if it is still running.
    pub(crate) fn full(&self, now: Instant) -> Option<Instant> {
        self.full_until.filter(|t| *t > now)
    }
}

/// `limit x f`, rounded down, at least 1 (the configured limit itself at
/// a full factor).
pub(crate) fn scale(limit: u64, f: f64) -> u64 {
    if f >= 1.0 {
        limit
    } else {
        // Truncation is intended: the effective limit rounds down.
        ((limit as f64 * f) as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_bedrock_core::Clock;

    fn spec() -> WindowSpec {
        WindowSpec {
            clock: Clock::starting_at(Duration::from_secs(6000)),
            ..WindowSpec::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn drops_only_on_repeated_windows_and_recovers_after_a_clean_one() {
        let (a, spec) = (Adaptive::default(), spec());
        let w = spec.window;
        let t0 = Instant::now();
        let mut f = Factor::FULL;
        // One throttle, twice in the same window: no drop.
        assert!(!f.throttled(t0, &a, &spec));
        assert!(!f.throttled(t0 + Duration::from_secs(10), &a, &spec));
        assert_eq!(f.current(t0 + Duration::from_secs(10), &a, w), 1.0);
        // Again in the next window: 0.8.
        assert!(f.throttled(t0 + w + Duration::from_secs(5), &a, &spec));
        let at = t0 + w + Duration::from_secs(5);
        assert!((f.current(at, &a, w) - 0.8).abs() < 1e-9);
        // A window later (clean) it starts recovering, and is back one
        // window after that.
        assert!((f.current(at + w, &a, w) - 0.8).abs() < 1e-9);
        assert!((f.current(at + w + w / 10, &a, w) - 0.9).abs() < 1e-9);
        assert_eq!(f.current(at + 2 * w, &a, w), 1.0);
        // Skipping a window between throttles does not drop it.
        let later = at + 3 * w;
        assert!(!f.throttled(later, &a, &spec));
        assert!(!f.throttled(later + 2 * w, &a, &spec));
        assert_eq!(scale(200_000, 0.8), 160_000);
        assert_eq!(scale(10, 0.01), 1);
    }
}
