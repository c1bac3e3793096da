//! Dropping a reservation future leaves nothing charged, whether it is
//! dropped before its round trip or while Redis is answering (the
//! reservation that arrives for a dropped future is refunded).
//!
//! Needs Redis: `BUDGET_REDIS_URL`, default `redis://127.0.0.1:6379`.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use tower_bedrock_budget::{BudgetStore, Charge, Limits, StoreKey, WindowSpec};
use tower_bedrock_budget_redis::RedisStore;

#[tokio::test(flavor = "current_thread")]
async fn dropped_reservations_leave_nothing_charged() {
    let Some(_) = common::redis_or_skip("budget-redis cancel") else {
        return;
    };
    let store = RedisStore::builder(common::redis_url())
        .prefix(common::unique_prefix("cancel"))
        .build()
        .unwrap();
    assert!(store.wait_connected(Duration::from_secs(5)), "no Redis");
    let key = store.key("m", &WindowSpec::default());
    let limits = Limits::tokens(1000);
    let now = tokio::time::Instant::now();
    // Never polled.
    drop(key.reserve(limits, Charge::call(100), now));
    // Polled once (the script is on its way or done), then dropped.
    for _ in 0..20 {
        let mut f = key.reserve(limits, Charge::call(100), now);
        let _ = Pin::new(&mut f).poll(&mut Context::from_waker(Waker::noop()));
        drop(f);
    }
    // Dropped after the reply arrived but before it was taken.
    let mut f = key.reserve(limits, Charge::call(100), now);
    let _ = Pin::new(&mut f).poll(&mut Context::from_waker(Waker::noop()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(f);
    // The snapshot is ordered after the refunds.
    let s = key.snapshot(now);
    assert_eq!(
        (s.tokens, s.requests, s.reserved_tokens, s.reserved_requests),
        (0, 0, 0, 0)
    );
    // And the whole limit is available.
    let r = key
        .reserve(limits, Charge::call(1000), now)
        .await
        .expect("room");
    key.settle(r, Charge::ZERO, now);
}

/// Without fresh snapshots, a snapshot answers at once from the sums the
/// key's last reply carried.
#[tokio::test(flavor = "current_thread")]
async fn last_known_snapshots_come_from_the_replies() {
    let Some(_) = common::redis_or_skip("budget-redis cancel") else {
        return;
    };
    let store = RedisStore::builder(common::redis_url())
        .prefix(common::unique_prefix("lastknown"))
        .fresh_snapshots(false)
        .build()
        .unwrap();
    assert!(store.wait_connected(Duration::from_secs(5)), "no Redis");
    let key = store.key("m", &WindowSpec::default());
    let limits = Limits::tokens(1000);
    let now = tokio::time::Instant::now();
    let a = key.reserve(limits, Charge::call(300), now).await.unwrap();
    let s = key.snapshot(now);
    assert_eq!((s.tokens, s.requests, s.reserved_tokens), (300, 1, 300));
    key.settle(a, Charge::call(100), now);
    // The settlement is queued; the next reply carries its effect.
    let b = key.reserve(limits, Charge::call(50), now).await.unwrap();
    let s = key.snapshot(now);
    assert_eq!((s.tokens, s.requests, s.reserved_tokens), (150, 2, 50));
    key.settle(b, Charge::ZERO, now);
}
