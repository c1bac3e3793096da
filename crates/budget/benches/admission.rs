//! Admission + settlement per call, single-threaded and contended from two
//! threads, against governor's `check_n` (direct and keyed) in the same run;
//! and the memory held per key.
//!
//! The budget is measured through the whole layer (`poll_ready`, `call`,
//! one poll of the response future: key lookup, demand estimate,
//! reservation, inner call, settlement to the reported usage) over an inner
//! service that answers at once, and through the store alone (reserve +
//! settle). Limits are high enough that nothing waits.
//!
//! `backlog_drain` measures the other path: `n` requests waiting for the
//! next window (paused time), then admitted one after the other as the
//! window opens. The time per request should not grow with `n` (queue
//! removal and waker hand-over are O(log n), not a scan of the queue).

use std::future::{Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant as StdInstant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;
use tower_bedrock_budget::{Budget, BudgetStore, Charge, InMemoryStore, Limits, StoreKey};
use tower_bedrock_core::{ClassifiedError, ModelRequest, ReportsUsage, TokenDemand, Usage};
use tower_layer::Layer;
use tower_service::Service;

const MODEL: &str = "amazon.nova-lite-v1:0";

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

type Error = ClassifiedError<std::io::Error>;

#[derive(Clone)]
struct Instant0;

impl Service<Req> for Instant0 {
    type Response = Resp;
    type Error = Error;
    type Future = Ready<Result<Resp, Error>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Req) -> Self::Future {
        ready(Ok(Resp))
    }
}

fn budget() -> Budget {
    Budget::builder()
        .tokens_per_window(u64::MAX / 4)
        .requests_per_window(u64::MAX / 4)
        .build()
        .expect("valid budget")
}

/// One call through the layer: ready, call, poll to completion.
fn one_call<S>(svc: &mut S, cx: &mut Context<'_>)
where
    S: Service<Req, Response = Resp, Error = Error>,
{
    assert!(svc.poll_ready(cx).is_ready());
    let fut = pin!(svc.call(Req));
    match fut.poll(cx) {
        Poll::Ready(Ok(r)) => {
            black_box(r);
        }
        _ => panic!("an unlimited budget admits at once"),
    }
}

fn two_threads(iters: u64, work: impl Fn(u64) + Send + Sync + 'static) -> Duration {
    let work = Arc::new(work);
    let start = StdInstant::now();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let work = work.clone();
            std::thread::spawn(move || work(iters / 2))
        })
        .collect();
    for h in handles {
        h.join().expect("bench thread");
    }
    start.elapsed()
}

fn single_threaded(c: &mut Criterion) {
    let mut g = c.benchmark_group("admit_settle_1thread");
    let budget = budget();
    let mut svc = budget.layer().layer(Instant0);
    let mut cx = Context::from_waker(Waker::noop());
    g.bench_function("token_budget_layer", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });

    let store = InMemoryStore::new();
    let key = store.key(MODEL, &budget.spec());
    let limits = Limits::tokens(u64::MAX / 4).with_requests(u64::MAX / 4);
    g.bench_function("in_memory_store_reserve_settle", |b| {
        b.iter(|| {
            let now = Instant::now();
            let r = key
                .reserve(limits, Charge::call(500), now)
                .into_inner()
                .expect("room");
            key.settle(r, Charge::call(150), now);
        })
    });

    let quota = Quota::per_minute(NonZeroU32::MAX);
    let direct = RateLimiter::direct(quota);
    let n = NonZeroU32::new(500).expect("non-zero");
    g.bench_function("governor_check_n_direct", |b| {
        b.iter(|| black_box(direct.check_n(n)).ok())
    });
    let keyed = RateLimiter::keyed(quota);
    g.bench_function("governor_check_key_n_keyed", |b| {
        b.iter(|| black_box(keyed.check_key_n(&MODEL, n)).ok())
    });
    g.finish();
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("admit_settle_2threads");
    let budget = budget();
    {
        let budget = budget.clone();
        g.bench_function("token_budget_layer", move |b| {
            let budget = budget.clone();
            b.iter_custom(move |iters| {
                let budget = budget.clone();
                two_threads(iters, move |n| {
                    let mut svc = budget.layer().layer(Instant0);
                    let mut cx = Context::from_waker(Waker::noop());
                    for _ in 0..n {
                        one_call(&mut svc, &mut cx);
                    }
                })
            })
        });
    }
    let quota = Quota::per_minute(NonZeroU32::MAX);
    let direct = Arc::new(RateLimiter::direct(quota));
    g.bench_function("governor_check_n_direct", move |b| {
        let direct = direct.clone();
        b.iter_custom(move |iters| {
            let direct = direct.clone();
            two_threads(iters, move |n| {
                let k = NonZeroU32::new(500).expect("non-zero");
                for _ in 0..n {
                    let _ = black_box(direct.check_n(k));
                }
            })
        })
    });
    let keyed = Arc::new(RateLimiter::keyed(quota));
    g.bench_function("governor_check_key_n_keyed", move |b| {
        let keyed = keyed.clone();
        b.iter_custom(move |iters| {
            let keyed = keyed.clone();
            two_threads(iters, move |n| {
                let k = NonZeroU32::new(500).expect("non-zero");
                for _ in 0..n {
                    let _ = black_box(keyed.check_key_n(&MODEL, k));
                }
            })
        })
    });
    g.finish();
}

fn memory_per_key(c: &mut Criterion) {
    let budget = budget();
    let mut svc = budget.layer().layer(Instant0);
    let mut cx = Context::from_waker(Waker::noop());
    one_call(&mut svc, &mut cx);
    let bytes = budget.key_memory_bytes(MODEL).expect("key used");
    let store_bytes = budget.store_key(MODEL).memory_bytes();
    println!(
        "memory per key: {bytes} bytes ({store_bytes} in the in-memory store's windows, \
         fixed windows (the default), one tenant)"
    );
    // Creating a key (first call with a new model id) costs a store entry.
    let store = InMemoryStore::new();
    let spec = budget.spec();
    c.bench_function("new_key_in_memory_store", |b| {
        b.iter(|| black_box(store.key(MODEL, &spec)))
    });
}

fn backlog_drain(c: &mut Criterion) {
    use tower_bedrock_budget::testing::{
        MockBedrock, MockRequest, NOVA, run_paused, send, spawn, test_clock,
    };
    let mut g = c.benchmark_group("backlog_drain");
    g.sample_size(10);
    for n in [500u64, 2000, 8000] {
        g.throughput(criterion::Throughput::Elements(n));
        g.bench_function(format!("{n}_waiters"), |b| {
            b.iter(|| {
                run_paused(|| async move {
                    let budget = Budget::builder()
                        .clock(test_clock())
                        .tokens_per_window(n)
                        .max_wait(Duration::from_secs(600))
                        .build()
                        .expect("valid budget");
                    let mut svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
                    send(&mut svc, MockRequest::new(NOVA, 0, n, 0))
                        .await
                        .expect("fills the window");
                    let handles: Vec<_> = (1..=n)
                        .map(|id| spawn(&mut svc, MockRequest::new(NOVA, id, 1, 0)))
                        .collect();
                    for h in handles {
                        h.await.expect("task").expect("admitted in the next window");
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    single_threaded,
    contended,
    memory_per_key,
    backlog_drain
);
criterion_main!(benches);
