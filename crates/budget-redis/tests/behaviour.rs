//! The budget's behavioural suite (`tower_bedrock_budget::testing`), the
//! same tests the in-memory store passes, against the Redis store.
//!
//! Needs a Redis server: `BUDGET_REDIS_URL`, default
//! `redis://127.0.0.1:6379`. Each test uses its own key prefix. The suite
//! runs under tokio's paused clock, so the store takes its time from the
//! caller ([`TimeSource::Client`]) through a `Clock` anchored on a round
//! wall time (sub-window boundaries fall where the in-memory store's do).

mod common;

use std::time::Duration;

use tower_bedrock_budget_redis::{RedisStore, TimeSource};
use tower_bedrock_core::Clock;

fn store() -> RedisStore {
    let url = common::redis_url();
    let store = RedisStore::builder(url.clone())
        .prefix(common::unique_prefix("suite"))
        .time_source(TimeSource::Client(Clock::starting_at(Duration::from_secs(
            1_800_000_000,
        ))))
        .build()
        .expect("a valid configuration");
    assert!(
        store.wait_connected(Duration::from_secs(5)),
        "no Redis at {url}: start one (redis-server --port 6379) or set BUDGET_REDIS_URL"
    );
    store
}

tower_bedrock_budget::budget_store_tests!(store());
