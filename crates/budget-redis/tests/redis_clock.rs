//! The budget over the Redis store on Redis's own clock
//! ([`TimeSource::Redis`], the default), in both window modes, in real
//! time. The behavioural suite (`behaviour.rs`) runs on the caller's clock
//! because it steps tokio's paused time across windows, which Redis's
//! clock does not follow; these checks need no time to pass: a window of
//! one hour, and a check that the hour did not turn during the test (it is
//! run again once if it did).
//!
//! Needs Redis (see `common`); skipped without.

mod common;

use std::time::Duration;

use tower::{Layer, Service, ServiceExt};
use tower_bedrock_budget::testing::{MockBedrock, MockRequest, NOVA, Reply};
use tower_bedrock_budget::{Budget, WindowMode};
use tower_bedrock_budget_redis::RedisStore;
use tower_bedrock_core::{ErrorClass, LocalRejection, Usage};

const HOUR: Duration = Duration::from_secs(3600);

fn hour_index() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / HOUR.as_secs()
}

/// Exact fit, refusal with the time to the next window (fixed) or a
/// window (sliding), settlement to the real usage. False when the hour
/// turned meanwhile (the caller runs it again).
async fn checks(url: &str, mode: WindowMode) -> bool {
    let start = hour_index();
    let store = RedisStore::builder(url)
        .prefix(common::unique_prefix("redis-clock"))
        .build()
        .unwrap();
    assert!(store.wait_connected(Duration::from_secs(5)), "no Redis");
    let budget = Budget::builder()
        .window(HOUR)
        .window_mode(mode)
        .tokens_per_window(200_000)
        .max_wait(Duration::ZERO)
        .fixed_limits()
        .build_with_store(store)
        .unwrap();
    let mut svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    // Ten requests of 20 000 fit a 200 000 window exactly; each uses half.
    for id in 0..10 {
        let req =
            MockRequest::new(NOVA, id, 10_000, 10_000).reply(Reply::Usage(Usage::new(10_000, 0)));
        svc.ready().await.unwrap().call(req).await.unwrap();
    }
    let snap = budget.snapshot(NOVA).unwrap();
    assert_eq!(
        (snap.tokens, snap.reserved_tokens),
        (100_000, 0),
        "{mode:?}"
    );
    // Five more fit in what the settlements gave back; the sixth does not.
    for id in 10..15 {
        let req = MockRequest::new(NOVA, id, 20_000, 0);
        svc.ready().await.unwrap().call(req).await.unwrap();
    }
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(MockRequest::new(NOVA, 15, 1, 0))
        .await
        .unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Local(LocalRejection::BudgetExhausted)
    );
    let after = err.rejection().and_then(|r| r.retry_after()).unwrap();
    // The next hour (fixed), or a window and at most a sub-window (sliding).
    let bound = match mode {
        WindowMode::Fixed => HOUR,
        _ => HOUR + HOUR / 100,
    };
    assert!(
        after > Duration::ZERO && after <= bound + Duration::from_secs(1),
        "{mode:?}: {after:?}"
    );
    hour_index() == start
}

#[tokio::test(flavor = "current_thread")]
async fn fixed_and_sliding_windows_on_redis_time() {
    let Some(url) = common::redis_or_skip("budget-redis redis_clock") else {
        return;
    };
    for mode in [WindowMode::Fixed, WindowMode::Sliding] {
        if !checks(&url, mode).await {
            assert!(checks(&url, mode).await, "the hour turned twice");
        }
    }
}
