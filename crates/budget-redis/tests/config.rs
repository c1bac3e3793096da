//! Bad configuration fails when the store is built, with a typed error;
//! an unreachable Redis is not a configuration error (the store starts
//! degraded and serves from its local share). No Redis needed.

use std::time::Duration;

use tower_bedrock_budget::{BudgetStore, Charge, Limits, StoreKey, WindowSpec};
use tower_bedrock_budget_redis::{BuildError, RedisStore};

fn ok() -> tower_bedrock_budget_redis::RedisStoreBuilder {
    RedisStore::builder("redis://127.0.0.1:6379")
}

#[test]
fn bad_configurations_are_refused_at_build_time() {
    let err = |b: tower_bedrock_budget_redis::RedisStoreBuilder| b.build().unwrap_err();
    let e = err(RedisStore::builder("http://user:secret@example.com"));
    assert!(matches!(e, BuildError::BadUrl { .. }), "{e:?}");
    assert!(
        !e.to_string().contains("secret"),
        "the URL's password is not repeated: {e}"
    );
    assert_eq!(err(ok().pool_size(0)), BuildError::BadPoolSize(0));
    assert_eq!(err(ok().pool_size(65)), BuildError::BadPoolSize(65));
    assert_eq!(
        err(ok().response_timeout(Duration::ZERO)),
        BuildError::ZeroDuration("response timeout")
    );
    assert_eq!(
        err(ok().reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1))),
        BuildError::BadBackoff
    );
    assert_eq!(
        err(ok().heartbeat(Duration::from_secs(2), Duration::from_secs(2))),
        BuildError::InstanceTtlTooShort
    );
    assert_eq!(err(ok().prefix("")), BuildError::BadName("prefix"));
    assert_eq!(err(ok().account("a{b}")), BuildError::BadName("account"));
    assert_eq!(err(ok().region("us east")), BuildError::BadName("region"));
    assert_eq!(
        err(ok().expected_instances(0)),
        BuildError::ZeroCount("expected instances")
    );
    assert_eq!(err(ok().max_batch(0)), BuildError::ZeroCount("max batch"));
}

#[test]
fn debug_output_hides_the_url() {
    let store = RedisStore::builder("redis://:hunter2@127.0.0.1:1")
        .build()
        .unwrap();
    let dbg = format!("{store:?}");
    assert!(
        !dbg.contains("hunter2") && dbg.contains("tower-bedrock:default:default"),
        "{dbg}"
    );
}

/// Nothing listens on port 1: the store is degraded from the start and
/// serves the local share, the quota divided by the expected instances.
#[test]
fn unreachable_redis_serves_the_local_share() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = RedisStore::builder("redis://127.0.0.1:1")
            .connect_timeout(Duration::from_millis(100))
            .expected_instances(4)
            .build()
            .unwrap();
        assert!(!store.wait_connected(Duration::from_secs(2)));
        assert!(store.is_degraded());
        let key = store.key("m", &WindowSpec::default());
        let now = tokio::time::Instant::now();
        let limits = Limits::tokens(1000);
        // 1000 / 4 instances = 250 locally.
        let a = key
            .reserve(limits, Charge::call(200), now)
            .await
            .expect("within the share");
        let refused = key
            .reserve(limits, Charge::call(100), now)
            .await
            .unwrap_err();
        assert!(refused.room_at.is_some(), "room once the window moves");
        // Larger than the share but not than the limit: retry later, not
        // "too large".
        let big = key
            .reserve(limits, Charge::call(300), now)
            .await
            .unwrap_err();
        assert!(big.room_at.is_some_and(|at| at > now));
        key.settle(a, Charge::call(50), now);
        let s = key.snapshot(now);
        assert_eq!(
            (s.tokens, s.reserved_tokens, s.reserved_requests),
            (50, 0, 0)
        );
    });
}
