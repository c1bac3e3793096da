//! Streams through the preset stack, over the real SDK against the
//! emulator: a stream's failure before its first event is the call's
//! failure (retried, falling back, counted by the breaker, settled by the
//! budget as any failed call); after the first event it reaches the caller
//! as a typed error, counts in the breaker of its model, never switches
//! model, and the budget settles the usage known so far.
//!
//! The emulator is a real server, so time is compressed (a 600 ms window
//! for the stack's retry and breaker) rather than paused; assertions are
//! about counts and states, never about how long something took.

use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamInput;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseStreamOutput, InferenceConfiguration, Message,
};
use tower::ServiceExt;
use tower::util::BoxCloneService;
use tower_bedrock::breaker::{CircuitBreakHandle, CircuitBreakLayer};
use tower_bedrock::budget::{Budget, ErrorSettlement, default_error_settlement};
use tower_bedrock::core::{
    CallReport, ClassifiedError, ErrorClass, ModelRequest, ThrottleKind, UnavailableKind,
};
use tower_bedrock::fallback::Chain;
use tower_bedrock::sdk::estimate::text_tokens;
use tower_bedrock::sdk::{
    BedrockClientBuilder, BedrockService, ConverseStreamCallError, ConverseStreamRequest,
    ConverseStreamResponse, InvokeModelStreamRequest,
};
use tower_bedrock_emulator::{Emulator, EmulatorConfig, EmulatorHandle, FaultKind, FaultRule};

const PRIMARY: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const FALLBACK: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
const MAX_TOKENS: u64 = 100;
const OUTPUT: u64 = 12;

type Stack = BoxCloneService<
    ConverseStreamRequest,
    ConverseStreamResponse,
    ClassifiedError<ConverseStreamCallError>,
>;

async fn emulator() -> EmulatorHandle {
    Emulator::start(
        EmulatorConfig::builder()
            .output_tokens(OUTPUT)
            .build()
            .unwrap(),
    )
    .await
    .expect("emulator starts")
}

async fn bedrock(e: &EmulatorHandle) -> BedrockService {
    let client = BedrockClientBuilder::new()
        .region("us-east-1")
        .endpoint_url(e.endpoint_url())
        .static_credentials("AKIDEXAMPLE", "not-a-secret")
        .build()
        .await
        .expect("SDK client");
    BedrockService::new(client)
}

/// A budget with a fixed limit: with its adaptive limit on, a throttle
/// would make the retry wait for the budget's next 60 s window, which is
/// the budget's own matter, not the streams'.
fn budget() -> Budget {
    Budget::builder()
        .tokens_per_window(1_000_000)
        .fixed_limits()
        .build()
        .unwrap()
}

/// What the budget keeps of a failed call's reservation, by its
/// documented rule ([`default_error_settlement`]).
fn kept_on_failure(class: ErrorClass, input: u64) -> u64 {
    match default_error_settlement(&class) {
        ErrorSettlement::Refund => 0,
        ErrorSettlement::Input => input,
        ErrorSettlement::Keep => input + MAX_TOKENS,
        other => panic!("a settlement this test does not know: {other:?}"),
    }
}

/// The preset with a fallback chain and a budget; `breaker` replaces the
/// default breaker when given.
async fn stack(
    e: &EmulatorHandle,
    budget: &Budget,
    breaker: Option<CircuitBreakLayer>,
) -> (Stack, CircuitBreakHandle) {
    let b = tower_bedrock::stack()
        .window(Duration::from_millis(600))
        .seed(11)
        .fallback_chain(Chain::new().then(PRIMARY).then(FALLBACK))
        .token_budget(budget);
    let breaker = breaker.unwrap_or_else(|| CircuitBreakLayer::builder().seed(11).build().unwrap());
    let handle = breaker.handle();
    let layer = b.breaker(breaker).into_layer().unwrap();
    let svc = layer.boxed(bedrock(e).await);
    (svc, handle)
}

fn ask(model: &str) -> ConverseStreamRequest {
    ConverseStreamInput::builder()
        .model_id(model)
        .messages(
            Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text("Stream me a few words.".into()))
                .build()
                .unwrap(),
        )
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(MAX_TOKENS as i32)
                .build(),
        )
        .build()
        .unwrap()
        .into()
}

fn delta_tokens(event: &ConverseStreamOutput) -> u64 {
    match event {
        ConverseStreamOutput::ContentBlockDelta(d) => d
            .delta()
            .and_then(|d| d.as_text().ok())
            .map_or(0, |t| text_tokens(t)),
        _ => 0,
    }
}

/// Reads a stream to its end; the output tokens delivered.
async fn read_all(resp: &mut ConverseStreamResponse) -> u64 {
    let mut output = 0;
    while let Some(event) = resp.recv().await.expect("no in-stream error") {
        output += delta_tokens(&event);
    }
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_stream_throttle_before_the_first_event_is_retried_and_counted() {
    let e = emulator().await;
    let budget = budget();
    // Rate throttles are ignored by the default breaker; count them here
    // to see the failure reach it.
    let breaker = CircuitBreakLayer::builder()
        .count_rate_throttles(true)
        .build()
        .unwrap();
    let (svc, breakers) = stack(&e, &budget, Some(breaker)).await;
    e.set_faults(vec![
        FaultRule::new(FaultKind::StreamThrottle { after_events: 0 })
            .model(PRIMARY)
            .count(1),
    ])
    .unwrap();
    let report = CallReport::new();
    let req = ask(PRIMARY).with_report(report.clone());
    let input = req.token_demand().input_tokens;
    let mut resp = svc.clone().oneshot(req).await.expect("retried");
    assert_eq!(read_all(&mut resp).await, OUTPUT);
    drop(resp);

    let summary = report.summary();
    assert_eq!(summary.attempts, 2, "{summary:?}");
    assert_eq!(summary.served_by.as_deref(), Some(PRIMARY));
    assert!(!summary.degraded());
    assert_eq!(e.counters().stream_exceptions, 1);
    let b = breakers.get(PRIMARY).unwrap();
    assert_eq!((b.calls, b.failures), (2, 1), "{b:?}");
    // The throttled attempt was settled by the budget's rule for failed
    // calls (a throttle: refunded); the stream to its real usage.
    let snap = budget.snapshot(PRIMARY).unwrap();
    assert_eq!(snap.reserved_tokens, 0, "{snap:?}");
    let throttled = kept_on_failure(ErrorClass::Throttled(ThrottleKind::TokenRate), input);
    assert_eq!(snap.tokens, throttled + input + OUTPUT, "{snap:?}");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_before_the_first_event_is_retried_then_falls_back() {
    let e = emulator().await;
    let budget = budget();
    let (svc, breakers) = stack(&e, &budget, None).await;
    e.set_faults(vec![
        FaultRule::new(FaultKind::StreamUnavailable { after_events: 0 }).model(PRIMARY),
    ])
    .unwrap();
    let report = CallReport::new();
    let req = ask(PRIMARY).with_report(report.clone());
    let input = req.token_demand().input_tokens;
    let mut resp = svc
        .clone()
        .oneshot(req)
        .await
        .expect("the fallback answers");
    assert_eq!(read_all(&mut resp).await, OUTPUT);
    drop(resp);

    let summary = report.summary();
    assert_eq!(summary.served_by.as_deref(), Some(FALLBACK), "{summary:?}");
    assert!(summary.degraded());
    let failed_on_primary = e.counters().stream_exceptions;
    assert!(failed_on_primary > 1, "the 503 was retried first");
    assert_eq!(u64::from(summary.attempts), failed_on_primary + 1);
    // Every failed attempt counted in the primary's breaker; the fallback's
    // stream counted as a success when it ended.
    let b = breakers.get(PRIMARY).unwrap();
    assert_eq!(
        (u64::from(b.calls), u64::from(b.failures)),
        (failed_on_primary, failed_on_primary),
        "{b:?}"
    );
    let b = breakers.get(FALLBACK).unwrap();
    assert_eq!((b.calls, b.failures), (1, 0), "{b:?}");
    // Each failed attempt was settled by the budget's rule for a 503,
    // like a 503 status; the fallback settled to its real usage.
    let snap = budget.snapshot(PRIMARY).unwrap();
    assert_eq!(snap.reserved_tokens, 0, "{snap:?}");
    let per_failure = kept_on_failure(ErrorClass::Unavailable(UnavailableKind::Service), input);
    assert_eq!(snap.tokens, failed_on_primary * per_failure, "{snap:?}");
    let snap = budget.snapshot(FALLBACK).unwrap();
    assert_eq!(snap.tokens, input + OUTPUT, "{snap:?}");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_first_event_a_failure_is_the_callers_typed_error_and_counts() {
    let e = emulator().await;
    let budget = budget();
    let (svc, breakers) = stack(&e, &budget, None).await;
    for (fault, class) in [
        (
            FaultKind::StreamUnavailable { after_events: 2 },
            ErrorClass::Unavailable(UnavailableKind::Service),
        ),
        (
            FaultKind::StreamThrottle { after_events: 2 },
            ErrorClass::Throttled(ThrottleKind::TokenRate),
        ),
    ] {
        let before = (e.counters().requests, budget.snapshot(PRIMARY));
        let breaker_before = breakers.get(PRIMARY);
        e.set_faults(vec![FaultRule::new(fault).model(PRIMARY).count(1)])
            .unwrap();
        let report = CallReport::new();
        let req = ask(PRIMARY).with_report(report.clone());
        let input = req.token_demand().input_tokens;
        let mut resp = svc.clone().oneshot(req).await.expect("the stream opened");
        let mut output = 0;
        let err = loop {
            match resp.recv().await {
                Ok(Some(event)) => output += delta_tokens(&event),
                Ok(None) => panic!("{fault:?}: the stream ended without its exception"),
                Err(err) => break err,
            }
        };
        assert!(output > 0, "part of the answer was delivered");
        assert_eq!(err.class(), class, "{fault:?}");
        assert!(resp.recv().await.unwrap().is_none(), "nothing after it");
        drop(resp);

        // No other model was tried: the caller had seen events.
        assert_eq!(e.counters().requests, before.0 + 1, "{fault:?}");
        let summary = report.summary();
        assert_eq!(summary.served_by.as_deref(), Some(PRIMARY));
        assert_eq!(summary.attempts, 1);
        // The breaker of the model counted the stream when it failed (a
        // rate throttle is recorded too, and ignored by the default
        // policy, like a 429).
        let (calls0, failures0) = breaker_before.map_or((0, 0), |b| (b.calls, b.failures));
        let b = breakers.get(PRIMARY).unwrap();
        match class {
            ErrorClass::Unavailable(_) => {
                assert_eq!((b.calls, b.failures), (calls0 + 1, failures0 + 1), "{b:?}")
            }
            _ => assert_eq!((b.calls, b.failures), (calls0, failures0), "{b:?}"),
        }
        // The budget settled the usage known so far: the input and the
        // output delivered, not the reservation.
        let snap = budget.snapshot(PRIMARY).unwrap();
        let tokens0 = before.1.map_or(0, |s| s.tokens);
        assert_eq!(snap.reserved_tokens, 0, "{snap:?}");
        assert_eq!(snap.tokens - tokens0, input + output, "{fault:?} {snap:?}");
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_budgets_both_settle_one_stream() {
    let e = emulator().await;
    let (first, second) = (budget(), budget());
    let (svc, _) = stack(&e, &first, None).await;
    // A second usage reader around the stack: another budget.
    let svc = tower::ServiceBuilder::new()
        .layer(second.layer())
        .service(svc);
    let req = ask(PRIMARY);
    let input = req.token_demand().input_tokens;
    let mut resp = svc.oneshot(req).await.unwrap();
    assert_eq!(read_all(&mut resp).await, OUTPUT);
    drop(resp);
    for b in [&first, &second] {
        let snap = b.snapshot(PRIMARY).unwrap();
        assert_eq!(
            (snap.tokens, snap.reserved_tokens),
            (input + OUTPUT, 0),
            "{snap:?}"
        );
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_model_streams_fall_back_before_their_first_chunk() {
    let e = emulator().await;
    let svc = tower_bedrock::stack()
        .window(Duration::from_millis(600))
        .seed(3)
        .without_retry()
        .fallback_chain(Chain::new().then(PRIMARY).then(FALLBACK))
        .service::<_, InvokeModelStreamRequest, _>(bedrock(&e).await)
        .unwrap();
    e.set_faults(vec![
        FaultRule::new(FaultKind::StreamUnavailable { after_events: 0 }).model(PRIMARY),
    ])
    .unwrap();
    let report = CallReport::new();
    let body = serde_json::json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    });
    let req = InvokeModelStreamRequest::new(
        InvokeModelWithResponseStreamInput::builder()
            .model_id(PRIMARY)
            .body(Blob::new(body.to_string()))
            .build()
            .unwrap(),
    )
    .with_report(report.clone());
    let mut resp = svc.oneshot(req).await.expect("the fallback answers");
    let mut chunks = 0;
    while resp.recv().await.unwrap().is_some() {
        chunks += 1;
    }
    assert!(chunks > 2);
    assert_eq!(report.summary().served_by.as_deref(), Some(FALLBACK));
    assert_eq!(e.counters().stream_exceptions, 1);
    e.shutdown().await;
}

/// The issue's measurement, reversed: streaming calls whose primary fails
/// in-stream before any event used to leave its breaker closed with no
/// failure counted, and every call went to the primary first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_stream_failures_before_the_first_event_open_the_primary_breaker() {
    let e = emulator().await;
    // Open long enough that no probe reaches the primary during the test.
    let breaker = CircuitBreakLayer::builder()
        .seed(2)
        .open_duration(Duration::from_secs(600))
        .max_open_duration(Duration::from_secs(600))
        .build()
        .unwrap();
    let breakers = breaker.handle();
    let svc = tower_bedrock::stack()
        .window(Duration::from_millis(600))
        .without_retry()
        .fallback_chain(Chain::new().then(PRIMARY).then(FALLBACK))
        .breaker(breaker)
        .service::<_, ConverseStreamRequest, _>(bedrock(&e).await)
        .unwrap();
    e.set_faults(vec![
        FaultRule::new(FaultKind::StreamUnavailable { after_events: 0 }).model(PRIMARY),
    ])
    .unwrap();
    for i in 0..40 {
        let report = CallReport::new();
        let mut resp = svc
            .clone()
            .oneshot(ask(PRIMARY).with_report(report.clone()))
            .await
            .unwrap_or_else(|err| panic!("call {i}: {err}"));
        assert_eq!(read_all(&mut resp).await, OUTPUT, "call {i}");
        assert_eq!(report.summary().served_by.as_deref(), Some(FALLBACK));
    }
    let b = breakers.get(PRIMARY).unwrap();
    assert_eq!(b.state, tower_bedrock::breaker::CircuitState::Open, "{b:?}");
    // Once open, the primary is skipped without a call: it saw only the
    // calls that opened it (the default breaker opens at 10 calls).
    assert_eq!(e.counters().stream_exceptions, 10);
    e.shutdown().await;
}

/// The invocation metrics read a stream's usage as a second observer,
/// beside the budget: both get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tokens_reach_the_metrics_and_the_budget() {
    // A model no other test of this binary calls: its series are this
    // test's alone in the process-wide recorder.
    const SONNET4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
    let e = emulator().await;
    let budget = budget();
    let svc = tower_bedrock::stack()
        .token_budget(&budget)
        .service::<_, ConverseStreamRequest, _>(bedrock(&e).await)
        .unwrap();
    let req = ask(SONNET4);
    let input = req.token_demand().input_tokens;
    let mut resp = svc.oneshot(req).await.unwrap();
    assert_eq!(read_all(&mut resp).await, OUTPUT);
    drop(resp);
    let rendered = metrics.render();
    let value = |name: &str| -> Option<u64> {
        rendered
            .lines()
            .find(|l| l.starts_with(name) && l.contains(SONNET4))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        value("bedrock_output_tokens_total{"),
        Some(OUTPUT),
        "{rendered}"
    );
    assert_eq!(
        value("bedrock_input_tokens_total{"),
        Some(input),
        "{rendered}"
    );
    // Burndown 5 for Claude 4: the budget settled the same usage.
    let snap = budget.snapshot(SONNET4).unwrap();
    assert_eq!(snap.tokens, input + 5 * OUTPUT, "{snap:?}");
    e.shutdown().await;
}

#[test]
fn the_readme_quotes_the_compiled_streaming_example() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/snippets/readme_streams.rs");
    assert!(
        readme.contains(&format!("```rust,no_run\n{example}```")),
        "README.md's streaming example differs from examples/snippets/readme_streams.rs"
    );
}
