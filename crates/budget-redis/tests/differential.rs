//! The Redis store and the in-memory store make the same decisions, with
//! fixed and with sliding windows: seeded random sequences of
//! reservations, settlements and time steps are run against both (paused time, the Redis store on a client clock anchored
//! where the in-memory store's sub-windows start), and every outcome
//! (admitted or not, which window refused, when room is expected) and
//! every snapshot must be equal.
//!
//! Needs Redis: `BUDGET_REDIS_URL`, default `redis://127.0.0.1:6379`.

mod common;

use std::time::Duration;

use tokio::time::Instant;
use tower_bedrock_budget::{
    BudgetStore, Charge, InMemoryStore, Limits, StoreKey, WindowMode, WindowSpec,
};
use tower_bedrock_budget_redis::{RedisStore, TimeSource};
use tower_bedrock_core::Clock;

async fn run(seed: u64, ops: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    // Sub-windows of a whole number of microseconds (the Redis store's
    // unit), so that both stores cut time at the same instants.
    let divisors = [1, 2, 4, 5, 8, 10, 16, 20, 25, 50, 100];
    let spec = WindowSpec {
        window: Duration::from_secs(10),
        sub_windows: divisors[rng.usize(0..divisors.len())],
        day: Duration::from_secs(100),
        day_sub_windows: divisors[rng.usize(0..6)],
        mode: if rng.bool() {
            WindowMode::Fixed
        } else {
            WindowMode::Sliding
        },
        clock: tower_bedrock_budget::testing::test_clock(),
    };
    let limits = Limits {
        tokens: rng.u64(50..500),
        requests: rng.bool().then(|| rng.u64(2..12)),
        day_tokens: rng.bool().then(|| rng.u64(500..3000)),
    };
    let memory = InMemoryStore::new().key("m", &spec);
    let redis = RedisStore::builder(common::redis_url())
        .prefix(common::unique_prefix("diff"))
        .time_source(TimeSource::Client(Clock::starting_at(Duration::from_secs(
            1_800_000_000,
        ))))
        .build()
        .unwrap();
    assert!(redis.wait_connected(Duration::from_secs(5)), "no Redis");
    let redis = redis.key("m", &spec);
    let mut open = Vec::new();
    for step in 0..ops {
        let now = Instant::now();
        match rng.u8(0..10) {
            0..=4 => {
                let charge = Charge::call(rng.u64(0..limits.tokens / 2 + 2));
                let a = memory.reserve(limits, charge, now).await;
                let b = redis.reserve(limits, charge, now).await;
                match (a, b) {
                    (Ok(a), Ok(b)) => open.push((a, b)),
                    (Err(a), Err(b)) => {
                        assert_eq!(a, b, "seed {seed} step {step}: refusals differ")
                    }
                    (a, b) => panic!("seed {seed} step {step}: {a:?} vs {b:?}"),
                }
            }
            5..=7 if !open.is_empty() => {
                let (a, b) = open.swap_remove(rng.usize(0..open.len()));
                let actual = match rng.u8(0..3) {
                    0 => Charge::ZERO,
                    1 => a.charge,
                    _ => Charge::call(rng.u64(0..limits.tokens)),
                };
                memory.settle(a, actual, now);
                redis.settle(b, actual, now);
            }
            _ => {
                let step = Duration::from_micros(rng.u64(0..4_000_000));
                tokio::time::advance(step).await;
            }
        }
        let now = Instant::now();
        assert_eq!(
            memory.snapshot(now),
            redis.snapshot(now),
            "seed {seed} step {step}: snapshots differ"
        );
    }
}

#[test]
fn same_decisions_as_the_in_memory_store() {
    let Some(_) = common::redis_or_skip("budget-redis differential") else {
        return;
    };
    for seed in 0..24 {
        tower_bedrock_budget::testing::run_paused(|| run(seed, 200));
    }
}
