//! Overhead of `ModelFallback` on the happy path: the primary answers.
//!
//! Each iteration builds a request (a clone of a template), waits for
//! readiness and runs one call to completion over a mock service that
//! answers at once. The baseline is the same mock without the layer, so
//! the difference is the layer's cost (including the clone of the request
//! it keeps for the later targets).
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service, service_fn};
use tower_bedrock_core::{CallReport, ClassifiedError, ModelRequest, TokenDemand};
use tower_bedrock_fallback::{Chain, ModelFallbackLayer, Target};

#[derive(Clone)]
struct Ask {
    model: String,
    max_tokens: Option<u64>,
    report: Option<CallReport>,
}

impl ModelRequest for Ask {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn set_model_id(&mut self, model_id: &str) {
        self.model = model_id.to_owned();
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand {
            input_tokens: 100,
            max_output_tokens: self.max_tokens,
        }
    }
    fn set_max_output_tokens(&mut self, n: u64) {
        self.max_tokens = Some(n);
    }
    fn report(&self) -> Option<&CallReport> {
        self.report.as_ref()
    }
}

const PRIMARY: &str = "global.anthropic.claude-sonnet-4-20250514-v1:0";

fn mock() -> impl Service<Ask, Response = u64, Error = ClassifiedError<Infallible>> + Clone {
    service_fn(|ask: Ask| async move { Ok(ask.max_tokens.unwrap_or(0)) })
}

fn run<S: Service<Ask>>(svc: &mut S, ask: Ask, cx: &mut Context<'_>) -> Option<S::Response> {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => return None,
    }
    let fut = pin!(svc.call(ask));
    match fut.poll(cx) {
        Poll::Ready(Ok(r)) => Some(r),
        _ => None,
    }
}

fn happy_path(c: &mut Criterion) {
    let mut cx = Context::from_waker(Waker::noop());
    let ask = Ask {
        model: PRIMARY.to_owned(),
        max_tokens: Some(1024),
        report: None,
    };
    let chain = || {
        Chain::cross_region(PRIMARY, &[tower_bedrock_fallback::profile::Geo::Us], true)
            .then(Target::new("us.anthropic.claude-3-5-haiku-20241022-v1:0").max_tokens(512))
    };
    let mut g = c.benchmark_group("fallback_happy_path");

    let mut base = mock();
    g.bench_function("baseline_mock", |b| {
        b.iter(|| black_box(run(&mut base, black_box(ask.clone()), &mut cx)))
    });

    let layer = ModelFallbackLayer::new(Chain::of([PRIMARY]).then_chain(chain())).unwrap();
    let mut svc = layer.layer(mock());
    g.bench_function("chain_of_4_primary_answers", |b| {
        b.iter(|| black_box(run(&mut svc, black_box(ask.clone()), &mut cx)))
    });

    let mut other = ask.clone();
    other.model = "amazon.nova-pro-v1:0".to_owned();
    g.bench_function("passthrough_unmatched_model", |b| {
        b.iter(|| black_box(run(&mut svc, black_box(other.clone()), &mut cx)))
    });

    let memo = ModelFallbackLayer::builder()
        .chain(Chain::of([PRIMARY]).then_chain(chain()))
        .remember_open_circuits(true)
        .build()
        .unwrap();
    let mut svc = memo.layer(mock());
    g.bench_function("chain_of_4_with_open_circuit_memo", |b| {
        b.iter(|| black_box(run(&mut svc, black_box(ask.clone()), &mut cx)))
    });

    let mut reporting = layer.layer(mock());
    g.bench_function("chain_of_4_with_call_report", |b| {
        b.iter(|| {
            let mut a = ask.clone();
            a.report = Some(CallReport::new());
            black_box(run(&mut reporting, black_box(a), &mut cx))
        })
    });
    let mut base = mock();
    g.bench_function("baseline_mock_with_call_report", |b| {
        b.iter(|| {
            let mut a = ask.clone();
            a.report = Some(CallReport::new());
            black_box(run(&mut base, black_box(a), &mut cx))
        })
    });
    g.finish();
}

criterion_group!(benches, happy_path);
criterion_main!(benches);
