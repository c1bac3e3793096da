//! Happy-path overhead per call: `QuotaAlignedRetry` against
//! `tower::retry::Retry` with a policy that never retries, over an inner
//! service that answers at once.
#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::retry::{Policy, Retry};
use tower::{Layer, Service};
use tower_bedrock_core::ClassifiedError;
use tower_bedrock_retry::QuotaAlignedRetryLayer;

type Error = ClassifiedError<std::io::Error>;

/// Answers every request at once.
#[derive(Clone)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Error;
    type Future = std::future::Ready<Result<u64, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        std::future::ready(Ok(req))
    }
}

/// A tower retry policy that never retries (but clones the request, as a
/// retrying policy must).
#[derive(Clone)]
struct NoRetry;

impl Policy<u64, u64, Error> for NoRetry {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _req: &mut u64, _result: &mut Result<u64, Error>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// One `poll_ready` + `call` + poll to completion.
fn one_call<S>(svc: &mut S, cx: &mut Context<'_>, req: u64) -> u64
where
    S: Service<u64, Response = u64, Error = Error>,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => unreachable!("always ready"),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(cx) {
        Poll::Ready(Ok(v)) => v,
        _ => unreachable!("answers at once"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut group = c.benchmark_group("happy_path");
    let mut inner = Echo;
    group.bench_function("inner_service_alone", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(one_call(&mut inner, &mut cx, black_box(i)))
        });
    });
    let mut tower_retry = Retry::new(NoRetry, Echo);
    group.bench_function("tower_retry_no_retry_policy", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(one_call(&mut tower_retry, &mut cx, black_box(i)))
        });
    });
    let mut ours = QuotaAlignedRetryLayer::new().layer(Echo);
    group.bench_function("quota_aligned_retry_defaults", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(one_call(&mut ours, &mut cx, black_box(i)))
        });
    });
    let mut ours_no_deadline = QuotaAlignedRetryLayer::builder()
        .no_deadline()
        .build()
        .unwrap()
        .layer(Echo);
    group.bench_function("quota_aligned_retry_no_deadline", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(one_call(&mut ours_no_deadline, &mut cx, black_box(i)))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
