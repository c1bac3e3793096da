//! The quota model, per model id and per inference profile id (the id as
//! sent is the key: a profile has quotas of its own).
//!
//! Windows are fixed and aligned on the (emulated) wall clock: with the
//! default 60 s window they start on the minute, like Bedrock's per-minute
//! quotas. At admission a request reserves `input + max_tokens x burndown`
//! (the configured default output limit when the request sets none); it is
//! refused with "Too many tokens" when used + reserved + its reservation
//! would exceed the TPM. At completion the reservation is replaced by the
//! real usage, `input + output x burndown`. RPM counts admitted requests per
//! window; the day window is 1440 quota windows long.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tower_bedrock_core::Clock;
use tower_bedrock_core::model::default_burndown_rate;

use crate::config::Quota;

/// Why a request was refused by the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuotaRefusal {
    Tokens,
    Requests,
    TokensPerDay,
}

/// The quota clock: the core [`Clock`] plus a manual offset, optionally
/// frozen.
#[derive(Debug)]
pub(crate) struct QuotaClock {
    clock: Clock,
    frozen_at: Option<Duration>,
    /// Signed offset in nanoseconds (unfreezing can move it backwards).
    offset_ns: i128,
}

impl QuotaClock {
    /// A frozen clock starts at the UNIX epoch, on a window boundary of
    /// every window length, so that tests see the same phases every run.
    pub(crate) fn new(frozen: bool) -> Self {
        let clock = Clock::system();
        QuotaClock {
            frozen_at: frozen.then_some(Duration::ZERO),
            clock,
            offset_ns: 0,
        }
    }

    pub(crate) fn now(&self) -> Duration {
        let base = self.frozen_at.unwrap_or_else(|| self.clock.since_epoch());
        let t = (base.as_nanos() as i128 + self.offset_ns).max(0);
        Duration::from_nanos(u64::try_from(t).unwrap_or(u64::MAX))
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.offset_ns += by.as_nanos() as i128;
    }

    pub(crate) fn set_frozen(&mut self, frozen: bool) {
        match (frozen, self.frozen_at) {
            (true, None) => self.frozen_at = Some(self.clock.since_epoch()),
            (false, Some(at)) => {
                // Keep the emulated time continuous.
                let real = self.clock.since_epoch();
                self.offset_ns += at.as_nanos() as i128 - real.as_nanos() as i128;
                self.frozen_at = None;
            }
            _ => {}
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    window: u64,
    used: u64,
    requests: u64,
    day: u64,
    day_used: u64,
    reserved: u64,
}

/// A usage snapshot of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketSnapshot {
    /// Tokens settled in the current window.
    pub used: u64,
    /// Tokens reserved by requests in flight.
    pub reserved: u64,
    /// Requests admitted in the current window.
    pub requests: u64,
    /// Tokens settled in the current day window.
    pub day_used: u64,
    /// Milliseconds until the next window opens.
    pub next_window_in_ms: u64,
}

#[derive(Debug)]
pub(crate) struct QuotaState {
    pub(crate) clock: QuotaClock,
    pub(crate) window: Duration,
    pub(crate) default_quota: Quota,
    pub(crate) quotas: BTreeMap<String, Quota>,
    pub(crate) default_max_tokens: u64,
    buckets: HashMap<String, Bucket>,
}

/// A granted reservation (settle it or release it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) reserved: u64,
    pub(crate) burndown: u64,
    pub(crate) max_tokens: u64,
}

fn index(t: Duration, len: Duration) -> u64 {
    u64::try_from(t.as_nanos() / len.as_nanos().max(1)).unwrap_or(u64::MAX)
}

impl QuotaState {
    pub(crate) fn new(
        clock: QuotaClock,
        window: Duration,
        default_quota: Quota,
        quotas: BTreeMap<String, Quota>,
        default_max_tokens: u64,
    ) -> Self {
        QuotaState {
            clock,
            window,
            default_quota,
            quotas,
            default_max_tokens,
            buckets: HashMap::new(),
        }
    }

    pub(crate) fn quota_for(&self, key: &str) -> Quota {
        let q = self.quotas.get(key).copied().unwrap_or(self.default_quota);
        Quota {
            tpd: q.tpd.or(q.tpm.map(|t| t.saturating_mul(1440))),
            burndown: Some(q.burndown.unwrap_or_else(|| default_burndown_rate(key))),
            max_tokens: Some(q.max_tokens.unwrap_or(self.default_max_tokens)),
            ..q
        }
    }

    fn bucket(&mut self, key: &str) -> &mut Bucket {
        let now = self.clock.now();
        let w = index(now, self.window);
        let d = index(now, self.window * 1440);
        if !self.buckets.contains_key(key) {
            self.buckets.insert(key.to_owned(), Bucket::default());
        }
        let b = self.buckets.get_mut(key).expect("inserted above");
        if b.window != w {
            b.window = w;
            b.used = 0;
            b.requests = 0;
        }
        if b.day != d {
            b.day = d;
            b.day_used = 0;
        }
        b
    }

    /// Admission: reserve `input + max_tokens x burndown`.
    pub(crate) fn admit(
        &mut self,
        key: &str,
        input: u64,
        max_tokens: Option<u64>,
    ) -> Result<Grant, QuotaRefusal> {
        let q = self.quota_for(key);
        let burndown = q.burndown.unwrap_or(1);
        let max_tokens = max_tokens
            .or(q.max_tokens)
            .unwrap_or(self.default_max_tokens);
        let demand = input.saturating_add(max_tokens.saturating_mul(burndown));
        let b = self.bucket(key);
        if let Some(rpm) = q.rpm
            && b.requests >= rpm
        {
            return Err(QuotaRefusal::Requests);
        }
        if let Some(tpm) = q.tpm
            && b.used.saturating_add(b.reserved).saturating_add(demand) > tpm
        {
            return Err(QuotaRefusal::Tokens);
        }
        if let Some(tpd) = q.tpd
            && b.day_used.saturating_add(b.reserved).saturating_add(demand) > tpd
        {
            return Err(QuotaRefusal::TokensPerDay);
        }
        b.requests += 1;
        b.reserved += demand;
        Ok(Grant {
            reserved: demand,
            burndown,
            max_tokens,
        })
    }

    /// Settlement: replace the reservation with the real usage.
    pub(crate) fn settle(&mut self, key: &str, grant: Grant, input: u64, output: u64) {
        let cost = input.saturating_add(output.saturating_mul(grant.burndown));
        let b = self.bucket(key);
        b.reserved = b.reserved.saturating_sub(grant.reserved);
        b.used = b.used.saturating_add(cost);
        b.day_used = b.day_used.saturating_add(cost);
    }

    pub(crate) fn snapshot(&mut self, key: &str) -> BucketSnapshot {
        let window = self.window;
        let phase = Duration::from_nanos(
            u64::try_from(self.clock.now().as_nanos() % window.as_nanos().max(1)).unwrap_or(0),
        );
        let b = *self.bucket(key);
        BucketSnapshot {
            used: b.used,
            reserved: b.reserved,
            requests: b.requests,
            day_used: b.day_used,
            next_window_in_ms: u64::try_from((window - phase).as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX),
        }
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        self.buckets.keys().cloned().collect()
    }

    /// Forget all usage (reservations of requests in flight are kept).
    pub(crate) fn reset(&mut self) {
        for b in self.buckets.values_mut() {
            *b = Bucket {
                reserved: b.reserved,
                ..Bucket::default()
            };
            b.window = u64::MAX;
            b.day = u64::MAX;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(q: Quota) -> QuotaState {
        QuotaState::new(
            QuotaClock::new(true),
            Duration::from_secs(60),
            q,
            BTreeMap::new(),
            1000,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_then_settle_then_refresh() {
        let mut s = state(Quota::tokens(1000).with_burndown(1));
        let g = s.admit("m", 100, Some(400)).unwrap();
        assert_eq!(g.reserved, 500);
        s.admit("m", 100, Some(300)).unwrap();
        assert_eq!(s.admit("m", 100, Some(10)), Err(QuotaRefusal::Tokens));
        s.settle("m", g, 100, 20);
        // 120 used + 400 reserved: 480 left.
        assert!(s.admit("m", 100, Some(380)).is_ok());
        assert_eq!(s.admit("other", 100, Some(10)).map(|g| g.reserved), Ok(110));
        let next = s.snapshot("m").next_window_in_ms;
        s.clock.advance(Duration::from_millis(next));
        let snap = s.snapshot("m");
        assert_eq!((snap.used, snap.requests, snap.reserved), (0, 0, 880));
    }

    #[tokio::test(start_paused = true)]
    async fn burndown_rpm_and_day() {
        let mut s = state(Quota::tokens(10_000).with_rpm(2).with_tpd(12_000));
        // Claude 4: burndown 5 by default.
        let g = s
            .admit("us.anthropic.claude-sonnet-4-20250514-v1:0", 10, Some(100))
            .unwrap();
        assert_eq!(g.reserved, 510);
        assert!(s.admit("m", 1, Some(1)).is_ok());
        assert!(s.admit("m", 1, Some(1)).is_ok());
        assert_eq!(s.admit("m", 1, Some(1)), Err(QuotaRefusal::Requests));
        let g = s.admit("n", 0, Some(9000)).unwrap();
        s.settle("n", g, 0, 9000);
        s.clock.advance(Duration::from_secs(60));
        assert_eq!(s.admit("n", 0, Some(5000)), Err(QuotaRefusal::TokensPerDay));
        s.reset();
        assert!(s.admit("n", 0, Some(5000)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn unfreezing_keeps_time_continuous() {
        let mut c = QuotaClock::new(true);
        let t0 = c.now();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(2));
        c.set_frozen(false);
        assert_eq!(c.now(), t0 + Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.now(), t0 + Duration::from_secs(3));
    }

    proptest::proptest! {
        /// Whatever the order of admissions and settlements: used + reserved
        /// never passes the TPM at admission, reserved is the sum of the
        /// grants outstanding, and settling them all leaves nothing reserved.
        #[test]
        fn reservations_add_up(ops in proptest::collection::vec((0u64..200, 1u64..400, 0u64..500, proptest::bool::ANY), 1..60)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let mut s = state(Quota::tokens(2000).with_burndown(2));
                let mut open: Vec<(Grant, u64)> = Vec::new();
                for (input, max, output, settle_first) in ops {
                    if settle_first && let Some((g, i)) = open.pop() {
                        let out = output.min(g.max_tokens);
                        s.settle("k", g, i, out);
                    }
                    let before = s.snapshot("k");
                    match s.admit("k", input, Some(max)) {
                        Ok(g) => {
                            proptest::prop_assert_eq!(g.reserved, input + 2 * max);
                            proptest::prop_assert!(before.used + before.reserved + g.reserved <= 2000);
                            open.push((g, input));
                        }
                        Err(r) => {
                            proptest::prop_assert_eq!(r, QuotaRefusal::Tokens);
                            proptest::prop_assert!(before.used + before.reserved + input + 2 * max > 2000);
                        }
                    }
                    let outstanding: u64 = open.iter().map(|(g, _)| g.reserved).sum();
                    proptest::prop_assert_eq!(s.snapshot("k").reserved, outstanding);
                }
                for (g, i) in open.drain(..) {
                    s.settle("k", g, i, 0);
                }
                proptest::prop_assert_eq!(s.snapshot("k").reserved, 0);
                Ok(())
            })?;
        }
    }
}
