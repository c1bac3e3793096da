//! Every key the store writes has an expiry (LiteLLM's keys without one
//! pile up), and the budget's keys are namespaced by prefix, account,
//! region and model.
//!
//! Needs Redis: `BUDGET_REDIS_URL`, default `redis://127.0.0.1:6379`.

mod common;

use tower_bedrock_core::Clock;

use std::time::Duration;

use redis::Commands;
use tower_bedrock_budget::{
    BudgetStore, Charge, Limits, StoreKey, TenantTag, WindowMode, WindowSpec,
};
use tower_bedrock_budget_redis::RedisStore;

#[tokio::test(flavor = "current_thread")]
async fn every_key_expires_and_is_namespaced() {
    let Some(_) = common::redis_or_skip("budget-redis expiry") else {
        return;
    };
    let prefix = common::unique_prefix("expiry");
    let store = RedisStore::builder(common::redis_url())
        .prefix(&prefix)
        .account("123456789012")
        .region("eu-west-1")
        .heartbeat(Duration::from_millis(100), Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(store.wait_connected(Duration::from_secs(5)), "no Redis");
    let spec = WindowSpec {
        window: Duration::from_secs(1),
        sub_windows: 10,
        day: Duration::from_secs(10),
        day_sub_windows: 10,
        mode: WindowMode::Sliding,
        clock: Clock::system(),
    };
    let fixed = WindowSpec {
        mode: WindowMode::Fixed,
        ..spec
    };
    for (model, spec) in [
        ("amazon.nova-lite-v1:0", spec),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", spec),
        ("meta.llama3-8b-instruct-v1:0", fixed),
    ] {
        let key = store.key(model, &spec);
        let now = tokio::time::Instant::now();
        let r = key
            .reserve(Limits::tokens(1000), Charge::call(10), now)
            .await
            .unwrap();
        key.settle(r, Charge::call(5), now);
        assert_eq!(key.snapshot(now).tokens, 5);
    }
    // A tenant's usage ring, and the contention record its refusal writes.
    let key = store.key("amazon.nova-lite-v1:0", &spec);
    let tenant = TenantTag {
        name: "quiet",
        weight: 1,
    };
    let now = tokio::time::Instant::now();
    let r = key
        .reserve_for(tenant, Limits::tokens(1000), Charge::call(990), now)
        .await
        .unwrap();
    assert!(
        key.reserve_for(tenant, Limits::tokens(1000), Charge::call(20), now)
            .await
            .is_err()
    );
    key.settle_for(tenant, r, Charge::call(990), now);
    // Let a heartbeat register the instance.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut conn = redis::Client::open(common::redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = conn.keys(format!("{prefix}:*")).unwrap();
    assert!(keys.len() > 2 * 4, "{keys:?}");
    for k in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(k).query(&mut conn).unwrap();
        assert!(ttl > 0, "{k} has no expiry ({ttl})");
        // The longest is two day spans (2 x 11 s).
        assert!(ttl <= 22_000, "{k}: {ttl} ms");
        assert!(
            k.starts_with(&format!("{prefix}:{{123456789012:eu-west-1")),
            "{k} is namespaced"
        );
    }
    assert!(
        keys.iter()
            .any(|k| k.contains(":amazon.nova-lite-v1:0}:tok"))
    );
    assert!(keys.iter().any(|k| k.ends_with("}:instances")));
    assert!(
        keys.iter()
            .any(|k| k.ends_with("llama3-8b-instruct-v1:0}:fx")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.ends_with("llama3-8b-instruct-v1:0}:rsv")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.ends_with("}:t:quiet")), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("}:ten")), "{keys:?}");
}

/// The settlement-sequence hash keeps one field per instance; the field of
/// an instance silent for longer than the reservations' staleness (two
/// windows, at least five minutes: it died) is pruned when another
/// instance records a settlement.
#[test]
fn sequence_records_of_dead_instances_are_pruned() {
    use tower_bedrock_budget::testing::{run_paused, test_clock};
    use tower_bedrock_budget_redis::TimeSource;
    let Some(url) = common::redis_or_skip("budget-redis expiry") else {
        return;
    };
    run_paused(|| async move {
        let prefix = common::unique_prefix("seq-prune");
        let store = || {
            let s = RedisStore::builder(url.clone())
                .prefix(prefix.clone())
                .time_source(TimeSource::Client(test_clock()))
                .build()
                .unwrap();
            assert!(s.wait_connected(Duration::from_secs(5)), "no Redis");
            s
        };
        let (a, b) = (store(), store());
        let spec = WindowSpec {
            window: Duration::from_secs(10),
            sub_windows: 10,
            day: Duration::from_secs(100),
            day_sub_windows: 10,
            mode: WindowMode::Fixed,
            clock: test_clock(),
        };
        let (ka, kb) = (a.key("m", &spec), b.key("m", &spec));
        let now = tokio::time::Instant::now();
        let r = ka
            .reserve(Limits::tokens(100), Charge::call(10), now)
            .await
            .unwrap();
        ka.settle(r, Charge::call(5), now);
        let mut conn = redis::Client::open(url.clone())
            .unwrap()
            .get_connection()
            .unwrap();
        let seq = format!("{}:seq", a.key_base("m"));
        // A fresh snapshot is ordered after the queued settlement.
        ka.snapshot(now);
        let fields: Vec<String> = conn.hkeys(&seq).unwrap();
        assert_eq!(fields, vec![a.instance_id().to_owned()]);
        // `a` falls silent for six minutes; `b` settles.
        tokio::time::advance(Duration::from_secs(360)).await;
        let now = tokio::time::Instant::now();
        let r = kb
            .reserve(Limits::tokens(100), Charge::call(10), now)
            .await
            .unwrap();
        kb.settle(r, Charge::call(5), now);
        kb.snapshot(now);
        let fields: Vec<String> = conn.hkeys(&seq).unwrap();
        assert_eq!(fields, vec![b.instance_id().to_owned()]);
    });
}
