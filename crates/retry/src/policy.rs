//! Per-class retry policies, backoff curves and jitter.

use std::time::Duration;

use fastrand::Rng;
use tower_bedrock_core::{ErrorClass, ThrottleKind, UnavailableKind};

/// How the random part of a backoff is drawn.
///
/// The definitions are those of the AWS Architecture Blog post
/// "Exponential Backoff And Jitter" (Marc Brooker, 2015), with `n` the
/// number of retries already made for the class (0 for the first retry) and
/// `random_between(a, b)` a uniform draw in `[a, b]`:
///
/// | mode | wait |
/// |---|---|
/// | [`None`](Self::None) | `min(cap, base * 2^n)` |
/// | [`Full`](Self::Full) | `random_between(0, min(cap, base * 2^n))` |
/// | [`Equal`](Self::Equal) | `t = min(cap, base * 2^n)`; `t / 2 + random_between(0, t / 2)` |
/// | [`Decorrelated`](Self::Decorrelated) | `min(cap, random_between(base, previous * 3))`, `previous` starting at `base` |
///
/// Draws are made in whole milliseconds (tokio's timer resolution):
/// `random_between(a, b) = a + rng.u64(0..=(b - a).as_millis())` ms, with a
/// `fastrand::Rng`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Plain exponential backoff, no randomness: every client retries in
    /// lockstep. Only useful in tests and for comparison.
    None,
    /// "Full jitter": the whole wait is random. The blog's recommendation:
    /// fewest calls and least work for contending clients.
    #[default]
    Full,
    /// "Equal jitter": half the wait is fixed, half random.
    Equal,
    /// "Decorrelated jitter": each wait is drawn from the previous one.
    Decorrelated,
}

/// The longest single wait the layer accepts in its configuration (a
/// day): backoffs, the window length, the retry-hint range and circuit
/// waits beyond it are refused when the layer is built, so that no wait
/// computed at run time can overflow.
pub const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// How long to wait before a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backoff {
    /// Wait until the next quota window opens (windows of the layer's
    /// window length, aligned on the UNIX epoch through the layer's
    /// [`Clock`](tower_bedrock_core::Clock)), then `offset` plus a uniform
    /// draw in `[0, spread]` (full jitter over the spread), so that clients
    /// throttled in the same window do not all return at its first instant.
    QuotaWindow {
        /// Fixed delay after the window opens.
        offset: Duration,
        /// Upper bound of the random delay added to `offset`.
        spread: Duration,
    },
    /// Capped exponential backoff with the given jitter.
    Exponential {
        /// Wait of the first retry before jitter (`base` in the blog post).
        base: Duration,
        /// Largest wait (`cap`).
        cap: Duration,
        /// How the wait is randomised.
        jitter: Jitter,
    },
}

impl Backoff {
    /// [`Backoff::QuotaWindow`].
    pub const fn quota_window(offset: Duration, spread: Duration) -> Self {
        Backoff::QuotaWindow { offset, spread }
    }

    /// [`Backoff::Exponential`].
    pub const fn exponential(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Backoff::Exponential { base, cap, jitter }
    }

    /// Refuses backoffs that cannot work: a zero exponential base, a cap
    /// below the base, or any wait that could exceed [`MAX_WAIT`] (an
    /// offset plus spread, or a cap, of more than a day).
    fn check(&self) -> Result<(), &'static str> {
        match *self {
            Backoff::QuotaWindow { offset, spread } => {
                if offset.checked_add(spread).is_none_or(|w| w > MAX_WAIT) {
                    Err("quota-window offset plus spread must not exceed a day")
                } else {
                    Ok(())
                }
            }
            Backoff::Exponential { base, cap, .. } => {
                if base.is_zero() {
                    Err("exponential backoff base must be positive")
                } else if cap < base {
                    Err("exponential backoff cap must not be below its base")
                } else if cap > MAX_WAIT {
                    Err("exponential backoff cap must not exceed a day")
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// What the retry layer does with one class of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClassPolicy {
    max_retries: u32,
    backoff: Backoff,
    honor_hint: bool,
}

impl ClassPolicy {
    /// Never retry this class.
    pub const fn never() -> Self {
        ClassPolicy {
            max_retries: 0,
            backoff: Backoff::exponential(
                Duration::from_secs(1),
                Duration::from_secs(1),
                Jitter::Full,
            ),
            honor_hint: false,
        }
    }

    /// Retry up to `max_retries` times (for failures of this class within
    /// one call), waiting as `backoff` says. A retry hint carried by the
    /// error (`Classification::retry_after`) replaces the backoff, clamped
    /// to the layer's hint range; see [`ignore_hint`](Self::ignore_hint).
    pub const fn retry(max_retries: u32, backoff: Backoff) -> Self {
        ClassPolicy {
            max_retries,
            backoff,
            honor_hint: true,
        }
    }

    /// Ignore retry hints for this class and always use the backoff.
    #[must_use]
    pub const fn ignore_hint(mut self) -> Self {
        self.honor_hint = false;
        self
    }

    /// Retries allowed for this class within one call (0: never).
    pub const fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff.
    pub const fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Whether a retry hint replaces the backoff.
    pub const fn honors_hint(&self) -> bool {
        self.honor_hint
    }

    /// Whether this policy retries at all.
    pub const fn retries(&self) -> bool {
        self.max_retries > 0
    }

    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.retries() {
            self.backoff.check()
        } else {
            Ok(())
        }
    }
}

/// The classes that have a policy of their own. Client errors and local
/// rejections have none: they are never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    RequestRate = 0,
    TokenRate,
    UnspecifiedThrottle,
    ModelOverloaded,
    ModelNotReady,
    ConnectionPool,
    Service,
    Network,
    ModelTimeout,
    QuotaExceeded,
    Unknown,
}

pub(crate) const SLOTS: usize = 11;

impl Slot {
    pub(crate) fn of(class: ErrorClass) -> Option<Slot> {
        Some(match class {
            ErrorClass::Throttled(ThrottleKind::RequestRate) => Slot::RequestRate,
            ErrorClass::Throttled(ThrottleKind::TokenRate) => Slot::TokenRate,
            ErrorClass::Throttled(ThrottleKind::ModelOverloaded) => Slot::ModelOverloaded,
            ErrorClass::Throttled(ThrottleKind::ModelNotReady) => Slot::ModelNotReady,
            ErrorClass::Throttled(_) => Slot::UnspecifiedThrottle,
            ErrorClass::Unavailable(UnavailableKind::ConnectionPool) => Slot::ConnectionPool,
            ErrorClass::Unavailable(UnavailableKind::Service) => Slot::Service,
            ErrorClass::Unavailable(_) => Slot::Network,
            ErrorClass::ModelTimeout => Slot::ModelTimeout,
            ErrorClass::QuotaExceeded => Slot::QuotaExceeded,
            ErrorClass::Unknown => Slot::Unknown,
            // Client errors, local rejections and classes added later.
            _ => return None,
        })
    }
}

/// The policy of every class: the layer's decision table.
///
/// Defaults:
///
/// | class | retries | wait |
/// |---|---|---|
/// | `Throttled(RequestRate \| TokenRate \| Unspecified)` | 3 | until the next quota window + 1 s + U\[0, 4 s\] |
/// | `Throttled(ModelOverloaded \| ModelNotReady)` | 0 (the fallback's job) | when enabled, e.g. exponential |
/// | `Unavailable(ConnectionPool)` | 3 | full jitter, base 100 ms, cap 1 s |
/// | `Unavailable(Service \| Network)` | 4 | full jitter, base 1 s, cap 20 s |
/// | `ModelTimeout` | 1 | full jitter, base 1 s, cap 5 s |
/// | `QuotaExceeded` (daily) | 0 | |
/// | `Unknown` | 0 | |
/// | `Client(_)`, `Local(_)` | never (not configurable) | |
///
/// A retry hint on the error replaces the wait (clamped to the layer's hint
/// range) for every class whose policy honors hints (all, by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    slots: [ClassPolicy; SLOTS],
}

/// Default wait for rate throttles.
pub const DEFAULT_THROTTLE_BACKOFF: Backoff =
    Backoff::quota_window(Duration::from_secs(1), Duration::from_secs(4));
/// Default wait for connection pool exhaustion.
pub const DEFAULT_POOL_BACKOFF: Backoff = Backoff::exponential(
    Duration::from_millis(100),
    Duration::from_secs(1),
    Jitter::Full,
);
/// Default wait for service unavailability and network failures.
pub const DEFAULT_UNAVAILABLE_BACKOFF: Backoff = Backoff::exponential(
    Duration::from_secs(1),
    Duration::from_secs(20),
    Jitter::Full,
);
/// Default wait for model timeouts.
pub const DEFAULT_TIMEOUT_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_secs(1), Duration::from_secs(5), Jitter::Full);

impl Default for Policies {
    fn default() -> Self {
        let throttle = ClassPolicy::retry(3, DEFAULT_THROTTLE_BACKOFF);
        let unavailable = ClassPolicy::retry(4, DEFAULT_UNAVAILABLE_BACKOFF);
        let mut slots = [ClassPolicy::never(); SLOTS];
        slots[Slot::RequestRate as usize] = throttle;
        slots[Slot::TokenRate as usize] = throttle;
        slots[Slot::UnspecifiedThrottle as usize] = throttle;
        slots[Slot::ConnectionPool as usize] = ClassPolicy::retry(3, DEFAULT_POOL_BACKOFF);
        slots[Slot::Service as usize] = unavailable;
        slots[Slot::Network as usize] = unavailable;
        slots[Slot::ModelTimeout as usize] = ClassPolicy::retry(1, DEFAULT_TIMEOUT_BACKOFF);
        Policies { slots }
    }
}

impl Policies {
    /// The policy for a class (`never` for client errors and local
    /// rejections).
    pub fn get(&self, class: ErrorClass) -> ClassPolicy {
        match Slot::of(class) {
            Some(slot) => self.slots[slot as usize],
            None => ClassPolicy::never(),
        }
    }

    pub(crate) fn slot(&self, slot: Slot) -> &ClassPolicy {
        &self.slots[slot as usize]
    }

    /// Sets the policy of a class. `Err` (with the policy unchanged) when
    /// the class is one that is never retried and `policy` retries.
    pub(crate) fn set(&mut self, class: ErrorClass, policy: ClassPolicy) -> Result<(), ()> {
        match Slot::of(class) {
            Some(slot) => {
                self.slots[slot as usize] = policy;
                Ok(())
            }
            None if !policy.retries() => Ok(()),
            None => Err(()),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ClassPolicy> {
        self.slots.iter()
    }
}

/// A uniform draw in `[lo, hi]` in whole milliseconds (tokio's timer
/// resolution); `lo` when `hi <= lo`.
pub(crate) fn random_between(rng: &mut Rng, lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = u64::try_from((hi - lo).as_millis()).unwrap_or(u64::MAX);
    lo + Duration::from_millis(rng.u64(0..=span))
}

/// `min(cap, base * 2^n)`, saturating.
pub(crate) fn capped_exponential(base: Duration, cap: Duration, n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).map_or(cap, |t| t.min(cap))
}

/// The exponential wait of the `n`-th retry (0-based) of a class;
/// `previous` is the previous wait of this call, for decorrelated jitter
/// (start it at `base`).
pub(crate) fn exponential_wait(
    base: Duration,
    cap: Duration,
    jitter: Jitter,
    n: u32,
    previous: Duration,
    rng: &mut Rng,
) -> Duration {
    match jitter {
        Jitter::None => capped_exponential(base, cap, n),
        Jitter::Full => random_between(rng, Duration::ZERO, capped_exponential(base, cap, n)),
        Jitter::Equal => {
            let t = capped_exponential(base, cap, n);
            let half = t / 2;
            half + random_between(rng, Duration::ZERO, half)
        }
        Jitter::Decorrelated => {
            let hi = previous.max(base).saturating_mul(3);
            random_between(rng, base, hi).min(cap)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_exponential_doubles_and_saturates() {
        let b = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        let got: Vec<_> = (0..6).map(|n| capped_exponential(b, cap, n)).collect();
        assert_eq!(
            got,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        assert_eq!(capped_exponential(b, cap, 200), cap);
        assert_eq!(
            capped_exponential(Duration::from_secs(u64::MAX / 2), Duration::MAX, 4),
            Duration::MAX
        );
    }

    #[test]
    fn jitter_modes_follow_the_blog_definitions() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(20);
        for seed in 0..200 {
            let mut rng = Rng::with_seed(seed);
            for n in 0..8 {
                let t = capped_exponential(base, cap, n);
                let full = exponential_wait(base, cap, Jitter::Full, n, base, &mut rng);
                assert!(full <= t);
                let equal = exponential_wait(base, cap, Jitter::Equal, n, base, &mut rng);
                assert!(equal >= t / 2 && equal <= t, "{equal:?} vs {t:?}");
                let prev = Duration::from_secs(n.into()) + base;
                let dec = exponential_wait(base, cap, Jitter::Decorrelated, n, prev, &mut rng);
                assert!(dec >= base && dec <= cap.min(prev * 3));
                assert_eq!(
                    exponential_wait(base, cap, Jitter::None, n, base, &mut rng),
                    t
                );
            }
        }
    }

    #[test]
    fn full_jitter_is_the_draw_documented() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        let mut a = Rng::with_seed(9);
        let mut b = Rng::with_seed(9);
        let w = exponential_wait(base, cap, Jitter::Full, 2, base, &mut a);
        assert_eq!(w, Duration::from_millis(b.u64(0..=400)));
    }

    #[test]
    fn client_and_local_have_no_slot() {
        use tower_bedrock_core::{ClientKind, LocalRejection};
        let mut p = Policies::default();
        assert!(Slot::of(ErrorClass::Client(ClientKind::Validation)).is_none());
        assert!(Slot::of(ErrorClass::Local(LocalRejection::CircuitOpen)).is_none());
        assert!(
            p.set(
                ErrorClass::Client(ClientKind::Validation),
                ClassPolicy::retry(1, DEFAULT_POOL_BACKOFF)
            )
            .is_err()
        );
        assert!(
            p.set(
                ErrorClass::Local(LocalRejection::CircuitOpen),
                ClassPolicy::never()
            )
            .is_ok()
        );
        assert_eq!(
            p.get(ErrorClass::Throttled(ThrottleKind::Unspecified))
                .max_retries(),
            3
        );
    }
}
