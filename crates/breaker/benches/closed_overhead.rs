//! Closed-state overhead per call: a bare service, `CircuitBreak`, and
//! tower-resilience's circuit breaker, from one thread and from two threads
//! sharing the breaker; and, for comparison, the cost of a rejection by an
//! open breaker.
//!
//! Futures are driven by a minimal spin `block_on` outside any tokio
//! runtime, the same way for every contender (the inner service is ready
//! at once).

use std::borrow::Cow;
use std::future::Future;
use std::hint::black_box;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service};
use tower_bedrock_breaker::CircuitBreakLayer;
use tower_bedrock_core::{ClassifiedError, ModelRequest, TokenDemand};
use tower_resilience::circuitbreaker::CircuitBreakerLayer;

struct Req(Cow<'static, str>);

impl ModelRequest for Req {
    fn model_id(&self) -> &str {
        &self.0
    }
    fn set_model_id(&mut self, model_id: &str) {
        self.0 = Cow::Owned(model_id.to_owned());
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand::default()
    }
}

type Error = ClassifiedError<()>;

const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

fn inner() -> impl Service<Req, Response = u64, Error = Error, Future: Send> + Clone + Send + 'static
{
    tower::service_fn(|_req: Req| std::future::ready(Ok::<u64, Error>(1)))
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::hint::spin_loop();
    }
}

/// One call: `poll_ready`, then `call`, then the future to completion.
#[inline]
fn one_call<S>(svc: &mut S) -> bool
where
    S: Service<Req>,
{
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => break,
            Poll::Ready(Err(_)) => return false,
            Poll::Pending => std::hint::spin_loop(),
        }
    }
    block_on(svc.call(Req(Cow::Borrowed(black_box(MODEL))))).is_ok()
}

fn ours() -> impl Service<Req, Response = u64, Error = Error> + Clone + Send {
    CircuitBreakLayer::builder()
        .build()
        .expect("valid settings")
        .layer(inner())
}

fn theirs() -> impl Service<Req, Response = u64> + Clone + Send {
    CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(20)
        .minimum_number_of_calls(10)
        .build()
        .expect("valid settings")
        .layer(inner())
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_1_thread");
    let mut bare = inner();
    g.bench_function("bare_service", |b| b.iter(|| one_call(&mut bare)));
    let mut svc = ours();
    assert!(one_call(&mut svc));
    g.bench_function("tower_bedrock_breaker", |b| b.iter(|| one_call(&mut svc)));
    let mut svc = theirs();
    assert!(one_call(&mut svc));
    g.bench_function("tower_resilience", |b| b.iter(|| one_call(&mut svc)));
    g.finish();
}

/// Two threads, each with its own clone of the service (so they share the
/// breaker), each making `iters` calls; the time is the wall time of both,
/// so it reads as time per call per thread.
fn two_threads<S>(svc: &S, iters: u64) -> Duration
where
    S: Service<Req> + Clone + Send,
{
    let barrier = Barrier::new(2);
    let times: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let mut svc = svc.clone();
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(one_call(&mut svc));
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    times.into_iter().max().unwrap_or_default()
}

fn two_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_2_threads");
    let bare = inner();
    g.bench_function("bare_service", |b| b.iter_custom(|n| two_threads(&bare, n)));
    let svc = ours();
    g.bench_function("tower_bedrock_breaker", |b| {
        b.iter_custom(|n| two_threads(&svc, n))
    });
    let svc = theirs();
    g.bench_function("tower_resilience", |b| {
        b.iter_custom(|n| two_threads(&svc, n))
    });
    g.finish();
}

/// For comparison: the cost of a rejection by an open breaker (building
/// the error included).
fn open_rejection(c: &mut Criterion) {
    let mut g = c.benchmark_group("open_reject_1_thread");
    let layer = CircuitBreakLayer::builder()
        .build()
        .expect("valid settings");
    assert!(layer.handle().force_open(MODEL));
    let mut svc = layer.layer(inner());
    assert!(!one_call(&mut svc));
    g.bench_function("tower_bedrock_breaker", |b| b.iter(|| one_call(&mut svc)));
    let (layer, handle) = CircuitBreakerLayer::builder()
        .build_with_handle()
        .expect("valid settings");
    block_on(handle.force_open());
    let mut svc = layer.layer(inner());
    assert!(!one_call(&mut svc));
    g.bench_function("tower_resilience", |b| b.iter(|| one_call(&mut svc)));
    g.finish();
}

criterion_group!(benches, single_thread, two_thread, open_rejection);
criterion_main!(benches);
