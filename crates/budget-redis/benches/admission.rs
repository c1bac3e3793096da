//! Admission latency and throughput: the Redis store against a local Redis
//! and the in-memory store, in the same run.
//!
//! - `reserve+settle/*`: one reservation awaited, then settled (the Redis
//!   store's settlement is queued; the next reservation is ordered after
//!   it on the same connection, so its cost shows up here too);
//! - `layer/*`: one call through the whole `TokenBudget` layer over a
//!   service that answers at once (the budget also takes a snapshot after
//!   each settlement for its gauges: a blocking round trip with Redis,
//!   unless `fresh_snapshots(false)`: `layer/redis_last_known_snapshots`);
//! - `concurrent64/*`: 64 reservations in flight at once from 64 tasks,
//!   then settled: throughput (elements per second) with pipelining.
//!
//! Needs Redis: `BUDGET_REDIS_URL`, default `redis://127.0.0.1:6379`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::time::Instant as Now;
use tower::{Layer, Service};
use tower_bedrock_budget::{
    Budget, BudgetStore, Charge, InMemoryStore, Limits, StoreKey, WindowSpec,
};
use tower_bedrock_budget_redis::RedisStore;
use tower_bedrock_core::{ClassifiedError, ModelRequest, ReportsUsage, TokenDemand, Usage};

const MODEL: &str = "amazon.nova-lite-v1:0";
const LIMITS: Limits = Limits::tokens(u64::MAX / 4);

fn redis() -> RedisStore {
    let url = std::env::var("BUDGET_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = RedisStore::builder(url.clone())
        .prefix(format!("tbbench-{}", std::process::id()))
        .pool_size(2)
        .build()
        .unwrap();
    assert!(
        store.wait_connected(Duration::from_secs(5)),
        "no Redis at {url}"
    );
    store
}

struct Req;

impl ModelRequest for Req {
    fn model_id(&self) -> &str {
        MODEL
    }
    fn set_model_id(&mut self, _: &str) {}
    fn token_demand(&self) -> TokenDemand {
        TokenDemand {
            input_tokens: 100,
            max_output_tokens: Some(400),
        }
    }
}

struct Resp;

impl ReportsUsage for Resp {
    fn usage(&self) -> Option<Usage> {
        Some(Usage::new(100, 50))
    }
}

/// A model that answers at once (no timer, unlike a zero sleep).
#[derive(Clone, Copy)]
struct AtOnce;

impl Service<Req> for AtOnce {
    type Response = Resp;
    type Error = ClassifiedError<std::io::Error>;
    type Future = std::future::Ready<Result<Resp, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Req) -> Self::Future {
        std::future::ready(Ok(Resp))
    }
}

/// `poll_ready` (the model is always ready), then `call`.
fn ready_call<S: Service<Req>>(svc: &mut S, req: Req) -> S::Future {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    svc.call(req)
}

fn reserve_settle(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spec = WindowSpec::default();
    let mem = InMemoryStore::new();
    let red = redis();
    let mut g = c.benchmark_group("reserve+settle");
    let mk = rt.block_on(async { mem.key(MODEL, &spec) });
    g.bench_function("in_memory", |b| {
        b.to_async(&rt).iter(|| async {
            let r = mk
                .reserve(LIMITS, Charge::call(500), Now::now())
                .await
                .unwrap();
            mk.settle(black_box(r), Charge::call(150), Now::now());
        })
    });
    let rk = red.key(MODEL, &spec);
    g.bench_function("redis", |b| {
        b.to_async(&rt).iter(|| async {
            let r = rk
                .reserve(LIMITS, Charge::call(500), Now::now())
                .await
                .unwrap();
            rk.settle(black_box(r), Charge::call(150), Now::now());
        })
    });
    g.finish();

    let mut g = c.benchmark_group("concurrent64");
    g.throughput(Throughput::Elements(64));
    for (name, key) in [("in_memory", None), ("redis", Some(rk.clone()))] {
        let mk = mk.clone();
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let (mk, key) = (mk.clone(), key.clone());
                async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for _ in 0..64 {
                        let (mk, key) = (mk.clone(), key.clone());
                        tasks.spawn(async move {
                            let now = Now::now();
                            match key {
                                Some(k) => {
                                    let r =
                                        k.reserve(LIMITS, Charge::call(500), now).await.unwrap();
                                    k.settle(r, Charge::call(150), now);
                                }
                                None => {
                                    let r =
                                        mk.reserve(LIMITS, Charge::call(500), now).await.unwrap();
                                    mk.settle(r, Charge::call(150), now);
                                }
                            }
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("layer");
    let mem_budget = rt.block_on(async {
        Budget::builder()
            .tokens_per_window(u64::MAX / 4)
            .fixed_limits()
            .build()
            .unwrap()
    });
    let red_budget = Budget::builder()
        .tokens_per_window(u64::MAX / 4)
        .fixed_limits()
        .build_with_store(red.clone())
        .unwrap();
    let mut mem_svc = mem_budget.layer().layer(AtOnce);
    let mut red_svc = red_budget.layer().layer(AtOnce);
    g.bench_function("in_memory", |b| {
        b.to_async(&rt).iter(|| {
            let fut = ready_call(&mut mem_svc, Req);
            async move { fut.await.unwrap() }
        })
    });
    g.bench_function("redis", |b| {
        b.to_async(&rt).iter(|| {
            let fut = ready_call(&mut red_svc, Req);
            async move { fut.await.unwrap() }
        })
    });
    // Snapshots (read by the budget after each settlement for its gauges)
    // from the last reply instead of a blocking read.
    let url = std::env::var("BUDGET_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let last_known = RedisStore::builder(url)
        .prefix(format!("tbbench-lk-{}", std::process::id()))
        .fresh_snapshots(false)
        .build()
        .unwrap();
    assert!(last_known.wait_connected(Duration::from_secs(5)));
    let lk_budget = Budget::builder()
        .tokens_per_window(u64::MAX / 4)
        .fixed_limits()
        .build_with_store(last_known)
        .unwrap();
    let mut lk_svc = lk_budget.layer().layer(AtOnce);
    g.bench_function("redis_last_known_snapshots", |b| {
        b.to_async(&rt).iter(|| {
            let fut = ready_call(&mut lk_svc, Req);
            async move { fut.await.unwrap() }
        })
    });
    g.finish();
}

criterion_group!(benches, reserve_settle);
criterion_main!(benches);
