//! The preset's per-call cost does not grow with the prompt: requests
//! clone in O(1) (the SDK input is shared; the fallback's and budget's
//! rewrites are kept beside it), so the copies the retry and fallback
//! layers keep cost the same for a 1 KiB prompt and a 1 MiB one.
//!
//! Every layer is on (fallback chain, retry, breaker, budget, classify,
//! invocation metrics) over a mock that answers at once with a usage. The
//! request carries counted input tokens, as after `CountTokensLayer`, so
//! the budget does not run the estimate (which reads the prompt, by
//! nature). What is left out: the SDK itself, which serializes the prompt
//! (O(n)) and, when the input is still shared by a retry's copy, copies it
//! once per attempt before sending.
//!
//! `cargo bench -p tower-bedrock --bench prompt_size -- --warm-up-time 1 --measurement-time 2`
#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tower::Service;
use tower_bedrock::budget::Budget;
use tower_bedrock::classify::ThrottleClassifyLayer;
use tower_bedrock::core::{Classification, ErrorClass, ModelRequest, ReportsUsage, Usage};
use tower_bedrock::fallback::Chain;
use tower_bedrock::sdk::ConverseRequest;

const PRIMARY: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

struct Answer;
impl ReportsUsage for Answer {
    fn usage(&self) -> Option<Usage> {
        Some(Usage::new(100, 20))
    }
}

#[derive(Debug)]
struct MockError;

/// Answers at once; reads only the model id, as a service would to route.
#[derive(Clone)]
struct Mock;

impl Service<ConverseRequest> for Mock {
    type Response = Answer;
    type Error = MockError;
    type Future = std::future::Ready<Result<Answer, MockError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), MockError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: ConverseRequest) -> Self::Future {
        black_box(req.model_id());
        std::future::ready(Ok(Answer))
    }
}

fn ask(prompt_bytes: usize) -> ConverseRequest {
    let mut req: ConverseRequest = ConverseInput::builder()
        .model_id(PRIMARY)
        .messages(
            Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text("x".repeat(prompt_bytes)))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
        .into();
    req.counted_input_tokens = Some((prompt_bytes / 4) as u64);
    req
}

fn run<S: Service<ConverseRequest>>(
    svc: &mut S,
    req: ConverseRequest,
    cx: &mut Context<'_>,
) -> bool {
    if !matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))) {
        return false;
    }
    let fut = pin!(svc.call(req));
    matches!(fut.poll(cx), Poll::Ready(Ok(_)))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let budget = Budget::builder()
        .tokens_per_window(u64::MAX / 4)
        .build()
        .unwrap();
    let mut svc = tower_bedrock::stack()
        .seed(1)
        .fallback_chain(Chain::new().then(PRIMARY).then("amazon.nova-lite-v1:0"))
        .token_budget(&budget)
        .classify(
            ThrottleClassifyLayer::new()
                .classifier(|_: &MockError| Classification::new(ErrorClass::Unknown)),
        )
        .service(Mock)
        .unwrap();

    let mut group = c.benchmark_group("preset_per_call_by_prompt_size");
    for bytes in [1 << 10, 1 << 17, 1 << 20] {
        let template = ask(bytes);
        group.bench_with_input(BenchmarkId::from_parameter(bytes), &template, |b, t| {
            b.iter(|| black_box(run(&mut svc, t.clone(), &mut cx)))
        });
    }
    group.finish();

    // For scale: one deep copy of the SDK input, what each clone of a
    // request cost before requests shared it (the preset made two or
    // three per call).
    let mut group = c.benchmark_group("reference_one_deep_copy_of_the_input");
    for bytes in [1 << 10, 1 << 17, 1 << 20] {
        let template = ask(bytes);
        group.bench_with_input(BenchmarkId::from_parameter(bytes), &template, |b, t| {
            b.iter(|| black_box(t.input().clone()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
