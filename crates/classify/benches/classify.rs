//! `classify_parts` per call, and ThrottleClassify's happy path over a
//! no-op service against the bare service.

use std::convert::Infallible;
use std::hint::black_box;
use std::task::{Context, Poll};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service};
use tower_bedrock_classify::{ThrottleClassifyLayer, classify_parts};
use tower_bedrock_core::{Classification, ErrorClass, ModelRequest, TokenDemand};

struct Ask(&'static str);
impl ModelRequest for Ask {
    fn model_id(&self) -> &str {
        self.0
    }
    fn set_model_id(&mut self, _: &str) {}
    fn token_demand(&self) -> TokenDemand {
        TokenDemand::default()
    }
}

#[derive(Clone, Copy)]
struct Noop;
impl Service<Ask> for Noop {
    type Response = u64;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u64, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Ask) -> Self::Future {
        std::future::ready(Ok(req.0.len() as u64))
    }
}

fn poll_once<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the no-op service is always ready"),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify_parts");
    g.bench_function("throttle_tokens", |b| {
        b.iter(|| {
            classify_parts(
                black_box(Some(429)),
                black_box(Some(
                    "ThrottlingException:http://internal.amazon.com/coral/",
                )),
                black_box(Some("Too many tokens, please wait before trying again.")),
            )
        })
    });
    g.bench_function("pool_503", |b| {
        b.iter(|| {
            classify_parts(
                black_box(Some(503)),
                black_box(Some("ServiceUnavailableException")),
                black_box(Some(
                    "Too many connections, please wait before trying again.",
                )),
            )
        })
    });
    g.bench_function("status_only", |b| {
        b.iter(|| classify_parts(black_box(Some(500)), black_box(None), black_box(None)))
    });
    g.finish();

    let model = "anthropic.claude-sonnet-4-20250514-v1:0";
    let mut g = c.benchmark_group("layer_happy_path");
    g.bench_function("bare_service", |b| {
        let mut svc = Noop;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        b.iter(|| {
            let _ = svc.poll_ready(&mut cx);
            poll_once(svc.call(black_box(Ask(model))))
        })
    });
    g.bench_function("throttle_classify", |b| {
        let mut svc = ThrottleClassifyLayer::new()
            .classifier(|_: &Infallible| Classification::new(ErrorClass::Unknown))
            .layer(Noop);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        b.iter(|| {
            let _ = svc.poll_ready(&mut cx);
            poll_once(svc.call(black_box(Ask(model))))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
