//! The budget's behavioural suite (`tower_bedrock_budget::testing`), the
//! same tests the in-memory store passes, against the Redis store.
//!
//! Needs a Redis server (see `common`: `BUDGET_REDIS_URL`, default
//! `redis://127.0.0.1:6379`, or one started here; skipped without).
//! Each test uses its own key prefix. The suite
//! runs under tokio's paused clock, so the store takes its time from the
//! caller ([`TimeSource::Client`]) through a `Clock` anchored on a round
//! wall time (sub-window boundaries fall where the in-memory store's do).

mod common;

use std::time::Duration;

use tower_bedrock_budget::testing::EPOCH;
use tower_bedrock_budget_redis::{RedisStore, TimeSource};
use tower_bedrock_core::Clock;

fn store() -> RedisStore {
    let url = common::redis_url();
    let store = RedisStore::builder(url.clone())
        .prefix(common::unique_prefix("suite"))
        .time_source(TimeSource::Client(Clock::starting_at(EPOCH)))
        .build()
        .expect("a valid configuration");
    assert!(
        store.wait_connected(Duration::from_secs(5)),
        "no Redis at {url}"
    );
    store
}

tower_bedrock_budget::budget_store_tests!(
    if common::redis_or_skip("budget-redis behaviour").is_some();
    store()
);
