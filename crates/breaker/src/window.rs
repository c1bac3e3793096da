//! Sliding windows of call outcomes, allocated once per breaker.

use tokio::time::Instant;

use crate::config::WindowConfig;

/// Calls, failures and slow calls currently in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

#[derive(Debug)]
pub(crate) enum Window {
    Count {
        ring: Box<[u8]>,
        next: usize,
        len: usize,
        failures: u32,
        slow: u32,
    },
    Time {
        buckets: Box<[Bucket]>,
        width_nanos: u128,
        base: Instant,
    },
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bucket {
    /// Absolute bucket number (time since `base` over the width).
    index: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Window {
    pub(crate) fn new(config: WindowConfig, base: Instant) -> Self {
        match config {
            WindowConfig::Count(n) => Window::Count {
                ring: vec![0; n as usize].into_boxed_slice(),
                next: 0,
                len: 0,
                failures: 0,
                slow: 0,
            },
            WindowConfig::Time { width, buckets } => Window::Time {
                buckets: vec![Bucket::default(); buckets as usize].into_boxed_slice(),
                width_nanos: width.as_nanos().max(1),
                base,
            },
        }
    }

    fn bucket_index(base: Instant, width_nanos: u128, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(base).as_nanos();
        u64::try_from(elapsed / width_nanos).unwrap_or(u64::MAX)
    }

    /// Adds one counted call.
    pub(crate) fn record(&mut self, now: Instant, failed: bool, slow: bool) {
        match self {
            Window::Count {
                ring,
                next,
                len,
                failures,
                slow: slow_total,
            } => {
                if *len == ring.len() {
                    let old = ring[*next];
                    *failures -= u32::from(old & FAILED != 0);
                    *slow_total -= u32::from(old & SLOW != 0);
                } else {
                    *len += 1;
                }
                let mut flags = 0;
                if failed {
                    flags |= FAILED;
                    *failures += 1;
                }
                if slow {
                    flags |= SLOW;
                    *slow_total += 1;
                }
                ring[*next] = flags;
                *next = (*next + 1) % ring.len();
            }
            Window::Time {
                buckets,
                width_nanos,
                base,
            } => {
                let index = Self::bucket_index(*base, *width_nanos, now);
                let n = buckets.len() as u64;
                let bucket = &mut buckets[(index % n) as usize];
                if bucket.index != index {
                    *bucket = Bucket {
                        index,
                        ..Bucket::default()
                    };
                }
                bucket.calls += 1;
                bucket.failures += u32::from(failed);
                bucket.slow += u32::from(slow);
            }
        }
    }

    /// What the window holds at `now`.
    pub(crate) fn totals(&self, now: Instant) -> Totals {
        match self {
            Window::Count {
                len,
                failures,
                slow,
                ..
            } => Totals {
                calls: *len as u32,
                failures: *failures,
                slow: *slow,
            },
            Window::Time {
                buckets,
                width_nanos,
                base,
            } => {
                let current = Self::bucket_index(*base, *width_nanos, now);
                let n = buckets.len() as u64;
                let mut t = Totals::default();
                for b in buckets.iter() {
                    // Live buckets are the `n` most recent ones, current
                    // included; a bucket never written has calls == 0.
                    if b.index <= current && current - b.index < n {
                        t.calls += b.calls;
                        t.failures += b.failures;
                        t.slow += b.slow;
                    }
                }
                t
            }
        }
    }

    /// Forgets every call.
    pub(crate) fn clear(&mut self) {
        match self {
            Window::Count {
                ring,
                next,
                len,
                failures,
                slow,
            } => {
                ring.fill(0);
                *next = 0;
                *len = 0;
                *failures = 0;
                *slow = 0;
            }
            Window::Time { buckets, .. } => buckets.fill(Bucket::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn count_window_keeps_the_last_n() {
        let now = Instant::now();
        let mut w = Window::new(WindowConfig::Count(3), now);
        w.record(now, true, false);
        w.record(now, true, true);
        assert_eq!(
            w.totals(now),
            Totals {
                calls: 2,
                failures: 2,
                slow: 1
            }
        );
        w.record(now, false, false);
        w.record(now, false, false); // pushes out the first failure
        assert_eq!(
            w.totals(now),
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        w.record(now, false, false); // pushes out the slow failure
        assert_eq!(
            w.totals(now),
            Totals {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
        w.clear();
        assert_eq!(w.totals(now), Totals::default());
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let base = Instant::now();
        let s = Duration::from_secs;
        let mut w = Window::new(
            WindowConfig::Time {
                width: s(1),
                buckets: 3,
            },
            base,
        );
        w.record(base, true, false);
        w.record(base + s(1), false, true);
        w.record(base + s(2), true, false);
        let t = w.totals(base + s(2));
        assert_eq!((t.calls, t.failures, t.slow), (3, 2, 1));
        // At 3 s the bucket of 0 s has left the window.
        let t = w.totals(base + Duration::from_millis(3500));
        assert_eq!((t.calls, t.failures, t.slow), (2, 1, 1));
        // Writing at 3 s reuses the slot of 0 s.
        w.record(base + s(3), false, false);
        let t = w.totals(base + s(3));
        assert_eq!((t.calls, t.failures, t.slow), (3, 1, 1));
        // Long after, nothing is left.
        assert_eq!(w.totals(base + s(60)), Totals::default());
    }

    proptest::proptest! {
        // A fixed seed: the same cases on every run.
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6272_6b72),
            cases: 512,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// The ring's running totals always equal a recount of the last
        /// `n` calls.
        #[test]
        fn count_window_matches_a_recount(
            n in 1u32..16,
            calls in proptest::collection::vec((proptest::bool::ANY, proptest::bool::ANY), 0..64),
        ) {
            let now = Instant::now();
            let mut w = Window::new(WindowConfig::Count(n), now);
            for (i, &(failed, slow)) in calls.iter().enumerate() {
                w.record(now, failed, slow);
                let start = (i + 1).saturating_sub(n as usize);
                let last = &calls[start..=i];
                let expected = Totals {
                    calls: last.len() as u32,
                    failures: last.iter().filter(|c| c.0).count() as u32,
                    slow: last.iter().filter(|c| c.1).count() as u32,
                };
                proptest::prop_assert_eq!(w.totals(now), expected);
            }
        }

        /// The buckets always equal a recount of the calls made within the
        /// last `buckets` bucket widths.
        #[test]
        fn time_window_matches_a_recount(
            buckets in 1u32..8,
            calls in proptest::collection::vec((0u64..3000, proptest::bool::ANY), 0..64),
        ) {
            let base = Instant::now();
            let width = Duration::from_millis(100);
            let mut w = Window::new(WindowConfig::Time { width, buckets }, base);
            let mut t = 0u64;
            let mut seen: Vec<(u64, bool)> = Vec::new();
            for &(step, failed) in &calls {
                t += step;
                let now = base + Duration::from_millis(t);
                w.record(now, failed, false);
                seen.push((t / 100, failed));
                // Read now and at every later bucket until all have left.
                for later in 0..=u64::from(buckets) {
                    let at = t + later * 100;
                    let current = at / 100;
                    let live: Vec<_> = seen
                        .iter()
                        .filter(|(b, _)| current - b < u64::from(buckets))
                        .collect();
                    let totals = w.totals(base + Duration::from_millis(at));
                    proptest::prop_assert_eq!(totals.calls as usize, live.len());
                    proptest::prop_assert_eq!(
                        totals.failures as usize,
                        live.iter().filter(|(_, f)| *f).count()
                    );
                }
            }
        }
    }
}
