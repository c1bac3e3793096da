//! End-to-end: the preset stack over the real `aws-sdk-bedrockruntime`
//! client (through `tower-bedrock-sdk`) against the in-process emulator on
//! 127.0.0.1, so the wire format is the one the official client speaks.
//!
//! The emulator is a real server, so time is compressed (1 s quota
//! windows) rather than paused; every assertion is about counts and
//! states, with wide margins, never about how long something took.

use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseStreamOutput, InferenceConfiguration, Message,
};
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};
use tower_bedrock::breaker::CircuitState;
use tower_bedrock::budget::{Budget, Limits};
use tower_bedrock::classify::ThrottleClassifyLayer;
use tower_bedrock::core::{
    CallReport, Classified, ErrorClass, LocalRejection, ThrottleKind, UnavailableKind,
};
use tower_bedrock::fallback::{Chain, Target};
use tower_bedrock::sdk::{
    BedrockClientBuilder, BedrockService, ConverseRequest, ConverseStreamRequest,
};
use tower_bedrock_emulator::{
    Emulator, EmulatorConfig, EmulatorHandle, FaultKind, FaultRule, Latency, Quota,
};
use tower_layer::Layer;

// Claude 4 through the US inference profile: Bedrock refuses its bare id on demand.
const PRIMARY: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const FALLBACK: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
const HAIKU3: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const WINDOW: Duration = Duration::from_secs(1);

async fn emulator(config: EmulatorConfig) -> EmulatorHandle {
    Emulator::start(config).await.expect("emulator starts")
}

async fn bedrock(emulator: &EmulatorHandle, max_connections: usize) -> BedrockService {
    let client = BedrockClientBuilder::new()
        .region("us-east-1")
        .endpoint_url(emulator.endpoint_url())
        .static_credentials("AKIDEXAMPLE", "not-a-secret")
        .max_connections_per_host(max_connections)
        .build()
        .await
        .expect("SDK client");
    BedrockService::new(client)
}

fn message(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .unwrap()
}

fn converse(model: &str, max_tokens: i32) -> ConverseRequest {
    ConverseInput::builder()
        .model_id(model)
        .messages(message("Tell me about quotas, briefly."))
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(max_tokens)
                .build(),
        )
        .build()
        .unwrap()
        .into()
}

fn throttles(e: &EmulatorHandle) -> u64 {
    let c = e.counters();
    c.throttled_tokens + c.throttled_requests + c.throttled_day + c.throttled_overloaded
}

/// Sends `n` calls at once through `svc`; returns the errors' classes.
async fn burst<S>(svc: &S, n: usize, model: &'static str) -> Vec<ErrorClass>
where
    S: Service<ConverseRequest> + Clone + Send + 'static,
    S::Error: Classified + Send,
    S::Future: Send,
    S::Response: Send,
{
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let svc = svc.clone();
        tasks.spawn(async move { svc.oneshot(converse(model, 100)).await.map(|_| ()) });
    }
    let mut failures = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.unwrap() {
            failures.push(e.classification().class);
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_pressure_loses_no_request() {
    // 20 requests per 1 s window; 40 calls at once.
    let config = || {
        EmulatorConfig::builder()
            .window(WINDOW)
            .quota(PRIMARY, Quota::tokens(100_000).with_rpm(20))
            .output_tokens(20)
            .build()
            .unwrap()
    };

    // A budget under the quota: the excess waits, Bedrock sees no 429.
    let e = emulator(config()).await;
    let budget = Budget::builder()
        .window(WINDOW)
        .tokens_per_window(95_000)
        .key_limits(PRIMARY, Limits::tokens(95_000).with_requests(19))
        .max_wait(10 * WINDOW)
        .build()
        .unwrap();
    let svc = tower_bedrock::stack()
        .window(WINDOW)
        .seed(1)
        .token_budget(&budget)
        .service::<_, ConverseRequest, _>(bedrock(&e, 64).await)
        .unwrap();
    let failures = burst(&svc, 40, PRIMARY).await;
    assert_eq!(failures, vec![], "no request lost");
    assert_eq!(throttles(&e), 0, "{:?}", e.counters());
    assert_eq!(e.counters().admitted, 40);
    e.shutdown().await;

    // A budget that believes in twice the real quota (another process
    // shares it): Bedrock throttles, the retry layer waits for the next
    // window, the budget holds the throttled window as full, and still
    // nothing is lost. (The budget lowers its limit only when throttles
    // repeat across windows: its own tests cover that.)
    let e = emulator(config()).await;
    let budget = Budget::builder()
        .window(WINDOW)
        .tokens_per_window(200_000)
        .key_limits(PRIMARY, Limits::tokens(200_000).with_requests(40))
        .max_wait(10 * WINDOW)
        .build()
        .unwrap();
    let svc = tower_bedrock::stack()
        .window(WINDOW)
        .seed(2)
        .token_budget(&budget)
        .service::<_, ConverseRequest, _>(bedrock(&e, 64).await)
        .unwrap();
    let failures = burst(&svc, 40, PRIMARY).await;
    assert_eq!(failures, vec![], "429s absorbed");
    let c = e.counters();
    assert!(c.throttled_requests > 0, "{c:?}");
    assert_eq!(c.admitted, 40);
    // Each call was throttled at most once: its retry went out in a later
    // window, which the budget did not overfill.
    assert!(c.throttled_requests <= 40, "{c:?}");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_served_by_the_fallback_and_opens_the_primary_breaker() {
    let e = emulator(
        EmulatorConfig::builder()
            .fault(FaultRule::new(FaultKind::Overloaded).model(PRIMARY))
            .build()
            .unwrap(),
    )
    .await;
    // The default 60 s window: the breaker stays open for 5 s once it trips.
    let layer = tower_bedrock::stack()
        .seed(3)
        .fallback_chain(
            Chain::new()
                .then(PRIMARY)
                .then(Target::new(FALLBACK).max_tokens(50)),
        )
        .into_layer()
        .unwrap();
    let breakers = layer.breaker_layer().handle();
    let mut svc = layer.boxed::<_, ConverseRequest, _>(bedrock(&e, 64).await);
    for i in 0..30 {
        let report = CallReport::new();
        let answer = svc
            .ready()
            .await
            .unwrap()
            .call(converse(PRIMARY, 200).with_report(report.clone()))
            .await;
        assert!(answer.is_ok(), "call {i}: {answer:?}");
        let s = report.summary();
        assert!(s.degraded(), "call {i}");
        assert_eq!(s.served_by.as_deref(), Some(FALLBACK));
        let first = &s.tried[0];
        assert_eq!(first.target, PRIMARY);
        assert!(matches!(
            first.class,
            ErrorClass::Throttled(ThrottleKind::ModelOverloaded)
                | ErrorClass::Local(LocalRejection::CircuitOpen)
        ));
    }
    let snap = breakers.get(PRIMARY).unwrap();
    assert_eq!(snap.state, CircuitState::Open, "{snap:?}");
    // Overload is never retried; once open, the primary is not called.
    let overloaded = e.counters().throttled_overloaded;
    assert!(
        overloaded <= 20,
        "{overloaded} calls reached the overloaded model"
    );
    assert_eq!(
        e.counters().admitted,
        30,
        "the fallback answered every call"
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_storm_opens_the_breaker_and_no_call_fails_once_it_is_over() {
    // The storm starts and ends by the test's hand, not by a timer: every
    // assertion is about counts and states, whatever the machine's speed.
    let e = emulator(EmulatorConfig::builder().window(WINDOW).build().unwrap()).await;
    let layer = tower_bedrock::stack()
        .window(WINDOW)
        .seed(4)
        .into_layer()
        .unwrap();
    let breakers = layer.breaker_layer().handle();
    let mut svc = layer.boxed::<_, ConverseRequest, _>(bedrock(&e, 64).await);
    let mut call = async || {
        svc.ready()
            .await
            .unwrap()
            .call(converse(HAIKU3, 50))
            .await
            .map(|_| ())
            .map_err(|e| e.class())
    };
    call().await.expect("healthy before the storm");

    // A full outage of the model: calls fail until the breaker opens.
    e.set_faults(vec![FaultRule::new(FaultKind::Unavailable).model(HAIKU3)])
        .unwrap();
    let mut during = Vec::new();
    for _ in 0..20 {
        during.push(call().await);
        if breakers.get(HAIKU3).unwrap().state != CircuitState::Closed {
            break;
        }
    }
    assert!(during.iter().all(Result::is_err), "{during:?}");
    let snap = breakers.get(HAIKU3).unwrap();
    assert_ne!(
        snap.state,
        CircuitState::Closed,
        "{snap:?} after {during:?}"
    );
    // The storm is over. Without a fallback, the stack waits the open
    // breaker out (at most its open time, 0.5 s with a 1 s window) and
    // probes: no call fails, and the breaker closes through half-open.
    e.clear_faults();
    let unavailable = e.counters().unavailable;
    let mut after = Vec::new();
    for _ in 0..20 {
        after.push(call().await);
    }
    assert!(after.iter().all(Result::is_ok), "{after:?}");
    assert_eq!(e.counters().unavailable, unavailable);
    let snap = breakers.get(HAIKU3).unwrap();
    assert_eq!(snap.state, CircuitState::Closed, "{snap:?}");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_keeps_bedrock_from_answering_too_many_connections() {
    // Bedrock (here, the emulator) accepts 4 requests in flight.
    let config = || {
        EmulatorConfig::builder()
            .max_connections(4)
            .latency(Latency {
                time_to_first_token_ms: 100,
                per_token_ms: 0.0,
                scale: 1.0,
            })
            .build()
            .unwrap()
    };

    // A client capped at 2 connections, through the stack: every call
    // waits for a slot and none is refused. (The server frees a slot a
    // moment after the client does, so a client capped at N may briefly
    // have 2N in flight by the server's count: half the server's limit is
    // the cap no timing can cross.)
    let e = emulator(config()).await;
    let svc = tower_bedrock::stack()
        .seed(5)
        .service::<_, ConverseRequest, _>(bedrock(&e, 2).await)
        .unwrap();
    let failures = burst(&svc, 24, HAIKU3).await;
    assert_eq!(failures, vec![]);
    assert_eq!(e.counters().connection_cap, 0);
    assert_eq!(e.counters().admitted, 24);
    e.shutdown().await;

    // An uncapped client without the stack: Bedrock refuses the excess
    // with 503 "Too many connections", classified as the client's pool.
    let e = emulator(config()).await;
    let raw = ThrottleClassifyLayer::new().layer(bedrock(&e, 64).await);
    let failures = burst(&raw, 24, HAIKU3).await;
    assert!(!failures.is_empty());
    assert!(
        failures
            .iter()
            .all(|c| *c == ErrorClass::Unavailable(UnavailableKind::ConnectionPool)),
        "{failures:?}"
    );
    assert!(e.counters().connection_cap > 0);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_settle_their_budget_fail_in_stream_and_fall_back_before_the_first_event() {
    let e = emulator(EmulatorConfig::builder().output_tokens(12).build().unwrap()).await;
    let budget = Budget::builder()
        .tokens_per_window(100_000)
        .build()
        .unwrap();
    let svc = tower_bedrock::stack()
        .seed(6)
        .fallback_chain(Chain::new().then(PRIMARY).then(HAIKU3))
        .token_budget(&budget)
        .service::<_, ConverseStreamRequest, _>(bedrock(&e, 64).await)
        .unwrap();
    let stream_req = |model: &str| -> ConverseStreamRequest {
        ConverseStreamInput::builder()
            .model_id(model)
            .messages(message("Stream me a few words."))
            .inference_config(InferenceConfiguration::builder().max_tokens(100).build())
            .build()
            .unwrap()
            .into()
    };

    // A whole stream: text arrives, the budget settles to the real usage
    // when it ends (input + 12 output tokens, burndown 1).
    let mut answer = svc.clone().oneshot(stream_req(HAIKU3)).await.unwrap();
    let mut words = 0;
    while let Some(event) = answer.stream.recv().await.unwrap() {
        if let ConverseStreamOutput::ContentBlockDelta(d) = event
            && let Some(Ok(text)) = d.delta().map(|delta| delta.as_text())
        {
            words += text.split_whitespace().count();
        }
    }
    assert_eq!(words, 12);
    let snap = budget.snapshot(HAIKU3).unwrap();
    assert_eq!(snap.reserved_tokens, 0, "{snap:?}");
    let input = e.counters().input_tokens;
    assert_eq!(snap.tokens, input + 12, "{snap:?}");
    drop(answer);

    // An exception inside the stream reaches the caller, classified.
    e.set_faults(vec![
        FaultRule::new(FaultKind::StreamUnavailable { after_events: 2 })
            .model(HAIKU3)
            .count(1),
    ])
    .unwrap();
    let mut answer = svc.clone().oneshot(stream_req(HAIKU3)).await.unwrap();
    let err = loop {
        match answer.stream.recv().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without its exception"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Service)
    );
    drop(answer);

    // A primary refusing before the stream starts: the fallback streams.
    e.set_faults(vec![FaultRule::new(FaultKind::Overloaded).model(PRIMARY)])
        .unwrap();
    let report = CallReport::new();
    let mut answer = svc
        .clone()
        .oneshot(stream_req(PRIMARY).with_report(report.clone()))
        .await
        .unwrap();
    let mut events = 0;
    while answer.stream.recv().await.unwrap().is_some() {
        events += 1;
    }
    assert!(events > 0);
    assert_eq!(report.summary().served_by.as_deref(), Some(HAIKU3));
    assert!(report.summary().degraded());
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_connection_pool_does_not_open_the_breaker() {
    // Bedrock (here, the emulator) accepts 4 requests in flight; a client
    // without a cap sends 16 at once. The excess is answered 503 "Too many
    // connections": the client's problem, not the model's. Before, those
    // opened the model's breaker and most calls then failed fast.
    let e = emulator(
        EmulatorConfig::builder()
            .max_connections(4)
            .latency(Latency {
                time_to_first_token_ms: 50,
                per_token_ms: 0.0,
                scale: 1.0,
            })
            .build()
            .unwrap(),
    )
    .await;
    let layer = tower_bedrock::stack().seed(6).into_layer().unwrap();
    let breakers = layer.breaker_layer().handle();
    let svc = layer.boxed::<_, ConverseRequest, _>(bedrock(&e, 64).await);
    let failures = burst(&svc, 16, HAIKU3).await;
    assert!(e.counters().connection_cap > 0, "{:?}", e.counters());
    let snap = breakers.get(HAIKU3).unwrap();
    assert_eq!(snap.state, CircuitState::Closed, "{snap:?}");
    assert_eq!((snap.calls, snap.failures), (16 - failures.len() as u32, 0));
    // The retry's short pauses got the refused calls through once
    // connections freed up.
    assert_eq!(failures, vec![], "{:?}", e.counters());
    e.shutdown().await;
}
