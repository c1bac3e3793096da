//! Properties over random configurations: waits stay within the backoff's
//! bounds, calls never outlive their deadline, attempt limits hold.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_bedrock_core::{Classified, ErrorClass, RetryStop, UnavailableKind};
use tower_bedrock_retry::{Backoff, ClassPolicy, Jitter, QuotaAlignedRetryLayer};

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn schedules_respect_bounds_deadlines_and_limits(
        jitter in jitter(),
        base_ms in 1u64..2_000,
        cap_factor in 1u32..40,
        max_retries in 0u32..6,
        max_attempts in 1u32..8,
        deadline_s in 1u64..120,
        failures in 0usize..10,
        seed in any::<u64>(),
    ) {
        let base = Duration::from_millis(base_ms);
        let cap = base * cap_factor;
        let deadline = Duration::from_secs(deadline_s);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (result, elapsed, gaps, calls) = rt.block_on(async {
            let layer = QuotaAlignedRetryLayer::builder()
                .policy(
                    ErrorClass::Unavailable(UnavailableKind::Service),
                    ClassPolicy::retry(max_retries, Backoff::exponential(base, cap, jitter)),
                )
                .max_attempts(max_attempts)
                .deadline(deadline)
                .seed(seed)
                .build()
                .unwrap();
            let mock = Mock::failing(failures, service());
            let state = mock.state();
            let mut svc = layer.layer(mock);
            let start = Instant::now();
            let result = svc.ready().await.unwrap().call(1).await;
            (result, start.elapsed(), state.gaps(), state.call_count())
        });

        // Never sleeps past the deadline.
        prop_assert!(elapsed <= deadline, "{elapsed:?} > {deadline:?}");
        // Attempt limits.
        let limit = max_attempts.min(max_retries + 1) as usize;
        prop_assert!(calls <= limit);
        prop_assert!(calls >= 1);
        // Every wait within the backoff's bounds.
        for (n, gap) in gaps.iter().enumerate() {
            prop_assert!(*gap <= cap, "gap {n} {gap:?} > cap {cap:?}");
            let t = base.saturating_mul(1 << n.min(30)).min(cap);
            match jitter {
                Jitter::None => prop_assert_eq!(*gap, t),
                Jitter::Full => prop_assert!(*gap <= t),
                Jitter::Equal => prop_assert!(*gap >= t / 2 && *gap <= t),
                Jitter::Decorrelated => prop_assert!(*gap >= base),
                _ => {}
            }
        }
        match result {
            Ok(_) => prop_assert_eq!(calls, failures + 1),
            Err(e) => {
                let ctx = e.context().unwrap();
                prop_assert_eq!(ctx.attempts as usize, calls);
                let expected_stop = if max_retries == 0 {
                    RetryStop::NotRetryable
                } else if calls == limit {
                    RetryStop::MaxAttempts
                } else {
                    RetryStop::Deadline
                };
                prop_assert_eq!(ctx.retry_stop, Some(expected_stop));
            }
        }
    }
}
