//! Overhead of the preset stack on the happy path: every layer on
//! (fallback chain, retry, breaker, budget, classify, invocation metrics),
//! the mock model answers at once. The baseline is the same mock alone, so
//! the difference is what the whole stack costs per call (including the
//! boxing into a `BoxCloneService` and the request clones the fallback and
//! retry layers keep).
#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::Service;
use tower_bedrock::budget::Budget;
use tower_bedrock::classify::ThrottleClassifyLayer;
use tower_bedrock::core::{
    Classification, ErrorClass, ModelRequest, ReportsUsage, TokenDemand, Usage,
};
use tower_bedrock::fallback::Chain;

#[derive(Clone)]
struct Ask {
    model: String,
}

impl ModelRequest for Ask {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn set_model_id(&mut self, id: &str) {
        self.model = id.to_owned();
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand {
            input_tokens: 100,
            max_output_tokens: Some(100),
        }
    }
}

struct Answer;
impl ReportsUsage for Answer {
    fn usage(&self) -> Option<Usage> {
        Some(Usage::new(100, 20))
    }
}

#[derive(Debug)]
struct MockError;

const PRIMARY: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

#[derive(Clone)]
struct Mock;

impl Service<Ask> for Mock {
    type Response = Answer;
    type Error = MockError;
    type Future = std::future::Ready<Result<Answer, MockError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), MockError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Ask) -> Self::Future {
        std::future::ready(Ok(Answer))
    }
}

fn mock() -> Mock {
    Mock
}

fn run<S: Service<Ask>>(svc: &mut S, ask: Ask, cx: &mut Context<'_>) -> bool {
    if !matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))) {
        return false;
    }
    let fut = pin!(svc.call(ask));
    matches!(fut.poll(cx), Poll::Ready(Ok(_)))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let ask = Ask {
        model: PRIMARY.to_owned(),
    };
    let classify = || {
        ThrottleClassifyLayer::new()
            .classifier(|_: &MockError| Classification::new(ErrorClass::Unknown))
    };

    let mut group = c.benchmark_group("stack_happy_path");
    let mut bare = mock();
    group.bench_function("bare_service", |b| {
        b.iter(|| black_box(run(&mut bare, ask.clone(), &mut cx)))
    });

    let mut defaults = tower_bedrock::stack()
        .seed(1)
        .classify(classify())
        .service(mock())
        .unwrap();
    group.bench_function("preset_defaults", |b| {
        b.iter(|| black_box(run(&mut defaults, ask.clone(), &mut cx)))
    });

    let budget = Budget::builder()
        .tokens_per_window(u64::MAX / 4)
        .build()
        .unwrap();
    let mut full = tower_bedrock::stack()
        .seed(1)
        .fallback_chain(Chain::new().then(PRIMARY).then("amazon.nova-lite-v1:0"))
        .token_budget(&budget)
        .classify(classify())
        .service(mock())
        .unwrap();
    group.bench_function("preset_all_six_layers", |b| {
        b.iter(|| black_box(run(&mut full, ask.clone(), &mut cx)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
