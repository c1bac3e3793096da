//! Happy-path overhead per call of every tower-bedrock layer and of the
//! preset stack over a no-op service, beside the closest alternatives, all
//! in one run: tower's `Retry`, `RateLimit` and `ConcurrencyLimit`,
//! governor's `check_n`, tower-resilience's circuit breaker and retry. And
//! contended throughput from two threads sharing one budget / one breaker
//! (and governor's limiter, tower-resilience's breaker).
//!
//! Every contender is driven the same way: `poll_ready`, `call`, polls of
//! the future with a no-op waker until it completes (the inner service
//! answers at once, so single-threaded every future completes on its first
//! poll), inside an entered
//! current-thread tokio runtime (for the layers that read tokio's clock).
//!
//! ```text
//! cargo bench -p tower-bedrock-bench --bench overhead -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(missing_docs)]

use std::borrow::Cow;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use tower::limit::{ConcurrencyLimit, RateLimit, rate::Rate};
use tower::retry::{Policy, Retry};
use tower::{Layer, Service};
use tower_bedrock::breaker::CircuitBreakLayer;
use tower_bedrock::budget::Budget;
use tower_bedrock::classify::ThrottleClassifyLayer;
use tower_bedrock::core::{
    Classification, ClassifiedError, ErrorClass, ModelRequest, ReportsUsage, TokenDemand, Usage,
};
use tower_bedrock::fallback::{Chain, ModelFallbackLayer};
use tower_bedrock::retry::QuotaAlignedRetryLayer;
use tower_resilience::circuitbreaker::CircuitBreakerLayer;
use tower_resilience::retry::RetryLayer;

const PRIMARY: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
const SECONDARY: &str = "amazon.nova-lite-v1:0";

#[derive(Clone, Debug)]
struct Ask {
    model: Cow<'static, str>,
}

impl ModelRequest for Ask {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn set_model_id(&mut self, id: &str) {
        if id != self.model {
            self.model = Cow::Owned(id.to_owned());
        }
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand {
            input_tokens: 100,
            max_output_tokens: Some(100),
        }
    }
}

fn ask() -> Ask {
    Ask {
        model: Cow::Borrowed(PRIMARY),
    }
}

#[derive(Debug)]
struct Answer;
impl ReportsUsage for Answer {
    fn usage(&self) -> Option<Usage> {
        Some(Usage::new(100, 20))
    }
}

/// The raw error of the mock model (what the classify layer classifies).
#[derive(Debug, Clone)]
struct WireError;
impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wire error")
    }
}
impl std::error::Error for WireError {}

type Error = ClassifiedError<WireError>;

/// A no-op model service with the classified error (what every layer but
/// classify sits on).
#[derive(Clone)]
struct Noop;
impl Service<Ask> for Noop {
    type Response = Answer;
    type Error = Error;
    type Future = Ready<Result<Answer, Error>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Ask) -> Self::Future {
        ready(Ok(Answer))
    }
}

/// The same with the raw error (under classify).
#[derive(Clone)]
struct RawNoop;
impl Service<Ask> for RawNoop {
    type Response = Answer;
    type Error = WireError;
    type Future = Ready<Result<Answer, WireError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), WireError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Ask) -> Self::Future {
        ready(Ok(Answer))
    }
}

/// One call: ready, call, poll to completion (spinning on `Pending`:
/// tower-resilience's breaker takes an async lock that another thread may
/// hold; every other contender completes on the first poll).
#[inline]
fn one_call<S: Service<Ask>>(svc: &mut S, cx: &mut Context<'_>) {
    loop {
        match svc.poll_ready(cx) {
            Poll::Ready(Ok(())) => break,
            Poll::Ready(Err(_)) => panic!("the no-op service is always ready"),
            Poll::Pending => std::hint::spin_loop(),
        }
    }
    let mut fut = pin!(svc.call(ask()));
    loop {
        match fut.as_mut().poll(cx) {
            Poll::Ready(Ok(r)) => {
                black_box(r);
                return;
            }
            Poll::Ready(Err(_)) => panic!("the no-op service never fails"),
            Poll::Pending => std::hint::spin_loop(),
        }
    }
}

/// tower's retry policy on the happy path: clone the request (as a
/// retrying policy must), retry nothing that succeeded.
#[derive(Clone)]
struct RetryErrors;
impl Policy<Ask, Answer, Error> for RetryErrors {
    type Future = Ready<()>;
    fn retry(&mut self, _: &mut Ask, result: &mut Result<Answer, Error>) -> Option<Self::Future> {
        result.as_ref().err().map(|_| ready(()))
    }
    fn clone_request(&mut self, req: &Ask) -> Option<Ask> {
        Some(req.clone())
    }
}

fn unlimited_budget() -> Budget {
    Budget::builder()
        .tokens_per_window(u64::MAX / 4)
        .requests_per_window(u64::MAX / 4)
        .build()
        .expect("valid budget")
}

fn classify() -> ThrottleClassifyLayer<impl Fn(&WireError) -> Classification + Clone> {
    ThrottleClassifyLayer::new()
        .classifier(|_: &WireError| Classification::new(ErrorClass::Unknown))
}

fn single_thread(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut g = c.benchmark_group("happy_path_1_thread");

    let mut bare = Noop;
    g.bench_function("bare_noop_service", |b| {
        b.iter(|| one_call(&mut bare, &mut cx))
    });

    // tower-bedrock, layer by layer.
    let mut svc = classify().layer(RawNoop);
    g.bench_function("ours/throttle_classify", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });
    let mut svc = QuotaAlignedRetryLayer::new().layer(Noop);
    g.bench_function("ours/quota_aligned_retry", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });
    let budget = unlimited_budget();
    let mut svc = budget.layer().layer(Noop);
    g.bench_function("ours/token_budget", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });
    let mut svc = CircuitBreakLayer::builder()
        .build()
        .expect("valid breaker")
        .layer(Noop);
    g.bench_function("ours/circuit_break", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });
    let mut svc = ModelFallbackLayer::new(Chain::new().then(PRIMARY).then(SECONDARY))
        .expect("valid chain")
        .layer(Noop);
    g.bench_function("ours/model_fallback", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });

    // The preset stack: defaults (retry, breaker, classify, metrics), and
    // all six layers.
    let mut svc = tower_bedrock::stack()
        .seed(1)
        .classify(classify())
        .service(RawNoop)
        .expect("valid stack");
    g.bench_function("ours/preset_stack_defaults", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });
    let stack_budget = unlimited_budget();
    let mut svc = tower_bedrock::stack()
        .seed(1)
        .fallback_chain(Chain::new().then(PRIMARY).then(SECONDARY))
        .token_budget(&stack_budget)
        .classify(classify())
        .service(RawNoop)
        .expect("valid stack");
    g.bench_function("ours/preset_stack_all_six", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });

    // The alternatives.
    let mut svc = Retry::new(RetryErrors, Noop);
    g.bench_function("tower/retry", |b| b.iter(|| one_call(&mut svc, &mut cx)));
    let mut svc = RateLimit::new(Noop, Rate::new(u64::MAX / 4, Duration::from_secs(60)));
    g.bench_function("tower/rate_limit", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });
    let mut svc = ConcurrencyLimit::new(Noop, 1024);
    g.bench_function("tower/concurrency_limit", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });
    let limiter = RateLimiter::direct(Quota::per_minute(NonZeroU32::MAX));
    let n = NonZeroU32::new(200).expect("non-zero");
    g.bench_function("governor/check_n_direct", |b| {
        b.iter(|| black_box(limiter.check_n(n)).is_ok())
    });
    let mut svc = CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(20)
        .minimum_number_of_calls(10)
        .build()
        .expect("valid breaker")
        .layer(Noop);
    g.bench_function("tower_resilience/circuit_breaker", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });
    let mut svc = RetryLayer::<Ask, Answer, Error>::builder()
        .max_attempts(3)
        .build()
        .layer(Noop);
    g.bench_function("tower_resilience/retry", |b| {
        b.iter(|| one_call(&mut svc, &mut cx))
    });
    g.finish();
}

/// Two threads, each with its own clone of `svc` (clones share state),
/// each making `iters` calls; the time is the slower thread's, so it reads
/// as time per call per thread under contention.
fn two_threads<S>(svc: &S, iters: u64) -> Duration
where
    S: Service<Ask> + Clone + Send,
{
    let barrier = Barrier::new(2);
    let times: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let mut svc = svc.clone();
                let barrier = &barrier;
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .expect("runtime");
                    let _guard = rt.enter();
                    let mut cx = Context::from_waker(Waker::noop());
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        one_call(&mut svc, &mut cx);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    times.into_iter().max().unwrap_or_default()
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended_2_threads");
    let bare = Noop;
    g.bench_function("bare_noop_service", |b| {
        b.iter_custom(|n| two_threads(&bare, n))
    });
    let budget = unlimited_budget();
    let svc = budget.layer().layer(Noop);
    g.bench_function("ours/token_budget", |b| {
        b.iter_custom(|n| two_threads(&svc, n))
    });
    let svc = CircuitBreakLayer::builder()
        .build()
        .expect("valid breaker")
        .layer(Noop);
    g.bench_function("ours/circuit_break", |b| {
        b.iter_custom(|n| two_threads(&svc, n))
    });
    let svc = CircuitBreakerLayer::builder()
        .build()
        .expect("valid breaker")
        .layer(Noop);
    g.bench_function("tower_resilience/circuit_breaker", |b| {
        b.iter_custom(|n| two_threads(&svc, n))
    });
    let limiter = Arc::new(RateLimiter::direct(Quota::per_minute(NonZeroU32::MAX)));
    g.bench_function("governor/check_n_direct", |b| {
        b.iter_custom(|iters| {
            let barrier = Barrier::new(2);
            let times: Vec<Duration> = std::thread::scope(|scope| {
                let hs: Vec<_> = (0..2)
                    .map(|_| {
                        let limiter = &limiter;
                        let barrier = &barrier;
                        scope.spawn(move || {
                            let n = NonZeroU32::new(200).expect("non-zero");
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..iters {
                                let _ = black_box(limiter.check_n(n));
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().expect("thread")).collect()
            });
            times.into_iter().max().unwrap_or_default()
        })
    });
    g.finish();
}

criterion_group!(benches, single_thread, contended);
criterion_main!(benches);
