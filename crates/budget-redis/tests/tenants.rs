//! Tenant shares in the Redis store, step by step (paused time, the store
//! on the caller's clock). Two store instances stand for two processes:
//! each serves one tenant, and neither process's scheduler sees the other
//! tenant, so only the store can hold the shares.
//!
//! Needs Redis: `BUDGET_REDIS_URL`, default `redis://127.0.0.1:6379`.

mod common;

use std::time::Duration;

use tokio::time::Instant;
use tower_bedrock_budget::{
    BudgetStore, Charge, Limits, Reservation, StoreKey, TenantTag, WindowKind, WindowMode,
    WindowSpec,
};
use tower_bedrock_budget_redis::{RedisKey, RedisStore, TimeSource};
use tower_bedrock_core::Clock;

/// Sliding windows: the share rule is checked sub-window by sub-window.
fn spec() -> WindowSpec {
    WindowSpec {
        window: Duration::from_secs(10),
        sub_windows: 10,
        day: Duration::from_secs(1000),
        day_sub_windows: 10,
        mode: WindowMode::Sliding,
        clock: tower_bedrock_budget::testing::test_clock(),
    }
}
const LIMITS: Limits = Limits::tokens(100);
const CHARGE: Charge = Charge::call(10);

/// Two "processes" sharing one key: two stores on the same prefix.
fn two_keys() -> (RedisKey, RedisKey) {
    let prefix = common::unique_prefix("tenants");
    let key = || {
        let store = RedisStore::builder(common::redis_url())
            .prefix(prefix.clone())
            .time_source(TimeSource::Client(Clock::starting_at(Duration::from_secs(
                1_800_000_000,
            ))))
            .build()
            .unwrap();
        assert!(store.wait_connected(Duration::from_secs(5)), "no Redis");
        store.key("model", &spec())
    };
    (key(), key())
}

fn tag(name: &str, weight: u32) -> TenantTag<'_> {
    TenantTag { name, weight }
}

/// Tenant `a` fills the window alone (it may: nobody else wants room),
/// then both try once per sub-window, `a` first. Checks that no K + 1
/// consecutive sub-windows (the ring's span) hold more than the limit, and
/// returns the tokens each tenant got in the last such span.
async fn contend(wa: u32, wb: u32) -> (u64, u64) {
    let (ka, kb) = two_keys();
    let (a, b) = (tag("a", wa), tag("b", wb));
    // Alone, `a` borrows the whole window.
    for _ in 0..10 {
        ka.reserve_for(a, LIMITS, CHARGE, Instant::now())
            .await
            .expect("room for a tenant alone");
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    // Tokens admitted per sub-window (one second): (a, b).
    let mut per_sec = vec![(CHARGE.tokens, 0); 10];
    for _ in 10..41 {
        let now = Instant::now();
        let got_a = ka.reserve_for(a, LIMITS, CHARGE, now).await.is_ok();
        let got_b = kb.reserve_for(b, LIMITS, CHARGE, now).await.is_ok();
        per_sec.push((
            u64::from(got_a) * CHARGE.tokens,
            u64::from(got_b) * CHARGE.tokens,
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let span = spec().sub_windows as usize + 1;
    for (i, w) in per_sec.windows(span).enumerate() {
        let sum: u64 = w.iter().map(|(a, b)| a + b).sum();
        assert!(
            sum <= LIMITS.tokens,
            "{sum} tokens in seconds {i}..{}",
            i + span
        );
    }
    per_sec[per_sec.len() - span..]
        .iter()
        .fold((0, 0), |(x, y), (a, b)| (x + a, y + b))
}

#[test]
fn equal_weights_split_the_window_evenly() {
    let Some(_) = common::redis_or_skip("budget-redis tenants") else {
        return;
    };
    let (a, b) = tower_bedrock_budget::testing::run_paused(|| contend(1, 1));
    assert_eq!((a, b), (50, 50));
}

#[test]
fn weights_set_the_shares() {
    let Some(_) = common::redis_or_skip("budget-redis tenants") else {
        return;
    };
    // Shares 75 and 25; with 10-token charges `a` holds 70 and `b` 20 (a
    // share is rounded down to whole charges, at least one: the 10 left
    // stay idle while both contend).
    let (a, b) = tower_bedrock_budget::testing::run_paused(|| contend(3, 1));
    assert_eq!((a, b), (70, 20));
}

#[test]
fn refusal_by_share_and_refunds_adjust_the_tenant_usage() {
    let Some(_) = common::redis_or_skip("budget-redis tenants") else {
        return;
    };
    tower_bedrock_budget::testing::run_paused(|| async {
        let (ka, kb) = two_keys();
        let (a, b) = (tag("a", 1), tag("b", 1));
        let mut held: Vec<Reservation> = Vec::new();
        for _ in 0..10 {
            held.push(
                ka.reserve_for(a, LIMITS, CHARGE, Instant::now())
                    .await
                    .unwrap(),
            );
        }
        let now = Instant::now();
        // The window is full: `a` and `b` are refused, and now contend.
        assert!(ka.reserve_for(a, LIMITS, CHARGE, now).await.is_err());
        let r = kb.reserve_for(b, LIMITS, CHARGE, now).await.unwrap_err();
        assert_eq!(r.window, WindowKind::Tokens);
        // `a`'s calls fail and are refunded: 60 tokens free in the window
        // and in `a`'s usage.
        for r in held.drain(..6) {
            ka.settle_for(a, r, Charge::ZERO, now);
        }
        // A fresh snapshot is ordered after this store's queued
        // settlements: they are applied before `b` tries.
        assert_eq!(ka.snapshot(now).tokens, 40);
        // `b` takes its share (50) and no more, though 10 are left.
        for i in 0..5 {
            kb.reserve_for(b, LIMITS, CHARGE, now)
                .await
                .unwrap_or_else(|r| panic!("b's charge {i} refused: {r:?}"));
        }
        let r = kb.reserve_for(b, LIMITS, CHARGE, now).await.unwrap_err();
        // Refused for its share (the budget then lets other tenants go).
        assert_eq!(r.window, WindowKind::Share);
        let room = r.room_at.expect("room when b's usage slides out");
        assert!(room > now, "{room:?} after {now:?}");
        // `a`, at 40 of its 50 after the refunds, takes the last 10.
        ka.reserve_for(a, LIMITS, CHARGE, now)
            .await
            .expect("a's refunded usage leaves it room");
        // The window is full again.
        assert!(ka.reserve_for(a, LIMITS, CHARGE, now).await.is_err());
        let snap = kb.snapshot(now);
        assert_eq!(snap.tokens, 100);
    });
}

/// Through the budget, two processes (two stores on one prefix): a tenant
/// refused its share across processes is skipped for head selection until
/// its retry time, so another tenant's request waiting behind it in the
/// same process goes at once (no head-of-line blocking across tenants).
#[test]
fn a_tenant_refused_its_share_steps_aside() {
    use tower::Layer;
    use tower_bedrock_budget::Budget;
    use tower_bedrock_budget::testing::{
        MockBedrock, MockRequest, NOVA, run_paused, run_tasks, send, spawn, test_clock,
    };
    let Some(url) = common::redis_or_skip("budget-redis tenants") else {
        return;
    };
    run_paused(|| async move {
        let prefix = common::unique_prefix("step-aside");
        let budget = || {
            let store = RedisStore::builder(url.clone())
                .prefix(prefix.clone())
                .time_source(TimeSource::Client(test_clock()))
                .build()
                .unwrap();
            assert!(store.wait_connected(Duration::from_secs(5)), "no Redis");
            Budget::builder()
                .clock(test_clock())
                .window(Duration::from_secs(10))
                .tokens_per_window(100)
                .max_wait(Duration::from_secs(60))
                .fixed_limits()
                .build_with_store(store)
                .unwrap()
        };
        let (one, two) = (budget(), budget());
        let mock = MockBedrock::new(Duration::ZERO);
        let t0 = Instant::now();
        // Process two: `x` takes 60 of the 100, `z` the rest.
        let mut x2 = two.tenant("x", 1).unwrap().layer().layer(mock.clone());
        let mut z2 = two.tenant("z", 1).unwrap().layer().layer(mock.clone());
        for id in 0..6 {
            send(&mut x2, MockRequest::new(NOVA, id, 10, 0))
                .await
                .unwrap();
        }
        for id in 10..14 {
            send(&mut z2, MockRequest::new(NOVA, id, 10, 0))
                .await
                .unwrap();
        }
        // Process one: `x` waits for the next window at the head, then `y`.
        let mut x1 = one.tenant("x", 1).unwrap().layer().layer(mock.clone());
        let mut y1 = one.tenant("y", 1).unwrap().layer().layer(mock.clone());
        tokio::time::sleep_until(t0 + Duration::from_secs(1)).await;
        let hx = spawn(&mut x1, MockRequest::new(NOVA, 20, 10, 0));
        run_tasks().await;
        tokio::time::sleep_until(t0 + Duration::from_secs(2)).await;
        let hy = spawn(&mut y1, MockRequest::new(NOVA, 21, 10, 0));
        run_tasks().await;
        hy.await.unwrap().expect("y is admitted");
        hx.await
            .unwrap()
            .expect("x is admitted once its usage slid out");
        let at = |id| mock.calls().iter().find(|c| c.id == id).unwrap().at;
        // `x` (60 of its share of 50 while `y` contends) is refused its
        // share in the next window; `y` does not wait behind it.
        assert!(
            at(21) < t0 + Duration::from_millis(10_050),
            "y waited until {:?}",
            at(21) - t0
        );
        assert!(at(20) > at(21), "x went first");
    });
}
