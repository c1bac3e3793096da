//! ConverseStream and InvokeModelWithResponseStream through
//! `BedrockService` against the emulator: streams open as part of the call
//! (a failure before the first event is the call's error), events, usage
//! reported exactly once to every observer, in-stream exceptions
//! classified, stalls cut by the idle timeout, the stream's end reported
//! to the layers watching the call.
//!
//! Stalls use real time with wide margins (a 30 s stall against a 300 ms
//! idle timeout; a 20 ms pause against a 10 s one): the emulator and the
//! SDK run on real sockets, where tokio's paused clock would fire the
//! SDK's own timeouts while loopback I/O is in flight.

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamInput;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{ConverseStreamOutput, ResponseStream};
use common::*;
use futures_core::Stream;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bedrock_classify::ThrottleClassifyLayer;
use tower_bedrock_core::stream_end::{self, StreamEnd};
use tower_bedrock_core::{
    Classified, ErrorClass, ModelRequest, ReportsUsage, ThrottleKind, UnavailableKind, Usage,
};
use tower_bedrock_emulator::{EmulatorConfig, FaultKind, FaultRule, Latency};
use tower_bedrock_sdk::InStreamError;
use tower_bedrock_sdk::estimate::text_tokens;
use tower_bedrock_sdk::{
    BedrockService, ConverseStreamRequest, ConverseStreamResponse, InvokeModelStreamRequest,
    StreamError,
};

type Settled = Arc<Mutex<Vec<Option<Usage>>>>;

fn watch(resp: &mut impl ReportsUsage) -> Settled {
    let settled: Settled = Arc::default();
    let s = settled.clone();
    assert!(
        resp.defer_usage(Box::new(move |u| s.lock().unwrap().push(u)))
            .is_ok(),
        "streams defer their usage"
    );
    settled
}

async fn open(svc: &BedrockService, req: ConverseStreamRequest) -> ConverseStreamResponse {
    svc.clone().oneshot(req).await.expect("stream opens")
}

fn delta_text(e: &ConverseStreamOutput) -> Option<String> {
    match e {
        ConverseStreamOutput::ContentBlockDelta(d) => {
            d.delta.as_ref().and_then(|d| d.as_text().ok()).cloned()
        }
        _ => None,
    }
}

#[tokio::test]
async fn converse_stream_reports_usage_once_at_the_end() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(10).build().unwrap()).await;
    let svc = BedrockService::new(client(&emu).await);
    let req = converse_stream(HAIKU, "Write a haiku about tea");
    let input_estimate = req.token_demand().input_tokens;
    let mut resp = open(&svc, req).await;
    let settled = watch(&mut resp);
    let mut text = String::new();
    let mut kinds = Vec::new();
    while let Some(event) = resp.recv().await.unwrap() {
        if let Some(t) = delta_text(&event) {
            text.push_str(&t);
        }
        kinds.push(std::mem::discriminant(&event));
        assert!(settled.lock().unwrap().is_empty(), "not before the end");
    }
    assert_eq!(text.split(' ').count(), 10);
    assert!(kinds.len() >= 5, "start, deltas, stops, metadata");
    let usage = Usage::new(input_estimate, 10);
    assert_eq!(resp.usage(), Some(usage));
    assert!(resp.is_finished());
    // Reading past the end stays at the end and settles nothing more.
    assert!(resp.recv().await.unwrap().is_none());
    drop(resp);
    assert_eq!(*settled.lock().unwrap(), vec![Some(usage)]);
}

#[tokio::test]
async fn stream_read_as_a_futures_stream() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(6).build().unwrap()).await;
    let svc = BedrockService::new(client(&emu).await);
    let mut resp = open(&svc, converse_stream(HAIKU, "abcd")).await;
    let mut n = 0;
    while let Some(item) = std::future::poll_fn(|cx| Pin::new(&mut resp).poll_next(cx)).await {
        item.unwrap();
        n += 1;
    }
    // messageStart, 2 deltas of <= 4 tokens, contentBlockStop, messageStop,
    // metadata.
    assert_eq!(n, 6);
    assert_eq!(resp.usage(), Some(Usage::new(1, 6)));
}

#[tokio::test]
async fn in_stream_exceptions_are_classified_and_settle_the_usage_so_far() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(16).build().unwrap()).await;
    let svc = BedrockService::new(client(&emu).await);
    let cases: [(FaultKind, &str, &str, ErrorClass); 3] = [
        (
            FaultKind::StreamThrottle { after_events: 2 },
            "ThrottlingException",
            "Too many tokens, please wait before trying again.",
            ErrorClass::Throttled(ThrottleKind::TokenRate),
        ),
        (
            FaultKind::StreamUnavailable { after_events: 2 },
            "ServiceUnavailableException",
            "Service temporarily unavailable, please try again.",
            ErrorClass::Unavailable(UnavailableKind::Service),
        ),
        (
            FaultKind::StreamError { after_events: 2 },
            "InternalServerException",
            "The system encountered an unexpected error during processing. Try your request again.",
            ErrorClass::Unavailable(UnavailableKind::Service),
        ),
    ];
    for (fault, code, message, class) in cases {
        emu.set_faults(vec![FaultRule::new(fault).count(1)])
            .unwrap();
        let req = converse_stream(HAIKU, "hello");
        let input = req.token_demand().input_tokens;
        let mut resp = open(&svc, req).await;
        let settled = watch(&mut resp);
        let mut output = 0;
        for _ in 0..2 {
            let event = resp.recv().await.unwrap().expect("an event");
            output += delta_text(&event).map_or(0, |t| text_tokens(&t));
        }
        assert!(output > 0, "one delta was delivered");
        let err = resp.recv().await.unwrap_err();
        let Some(StreamError::Sdk(SdkError::ServiceError(ctx))) = err.inner() else {
            panic!("{fault:?}: expected a modeled in-stream error, got {err:?}");
        };
        let e: &ConverseStreamOutputError = ctx.err();
        match fault {
            FaultKind::StreamThrottle { .. } => assert!(e.is_throttling_exception(), "{e:?}"),
            FaultKind::StreamUnavailable { .. } => {
                assert!(e.is_service_unavailable_exception(), "{e:?}")
            }
            _ => assert!(e.is_internal_server_exception(), "{e:?}"),
        }
        assert_eq!(e.message(), Some(message), "{fault:?}");
        assert_eq!(err.class(), class, "{fault:?}");
        // The SDK leaves the code of in-stream exceptions empty; it is
        // named from the exception's variant.
        assert_eq!(ctx.err().code(), None);
        assert_eq!(err.classification().code(), Some(code), "{fault:?}");
        // The stream is over; its usage was never reported, so the usage
        // known so far is: the input and the output delivered.
        assert!(resp.recv().await.unwrap().is_none());
        assert_eq!(
            *settled.lock().unwrap(),
            vec![Some(Usage::new(input, output))]
        );
        assert!(err.classification().request_id.is_some(), "{err:?}");
    }
    assert_eq!(emu.counters().stream_exceptions, 3);
}

#[tokio::test]
async fn a_stalled_stream_is_cut_by_the_idle_timeout() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(16).build().unwrap()).await;
    let svc = BedrockService::new(client(&emu).await)
        .stream_idle_timeout(Some(Duration::from_millis(300)));
    emu.set_faults(vec![
        FaultRule::new(FaultKind::StreamStall {
            after_events: 2,
            ms: 30_000,
        })
        .count(1),
    ])
    .unwrap();
    let req = converse_stream(HAIKU, "hello");
    let input = req.token_demand().input_tokens;
    let mut resp = open(&svc, req).await;
    let settled = watch(&mut resp);
    let mut output = 0;
    for _ in 0..2 {
        let event = resp.recv().await.unwrap().expect("an event");
        output += delta_text(&event).map_or(0, |t| text_tokens(&t));
    }
    let started = std::time::Instant::now();
    let err = resp.recv().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "cut long before the stall ends"
    );
    assert!(err.inner().unwrap().is_idle_timeout(), "{err:?}");
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Network)
    );
    assert_eq!(err.classification().code(), Some("StreamIdleTimeout"));
    assert!(resp.recv().await.unwrap().is_none());
    assert_eq!(
        *settled.lock().unwrap(),
        vec![Some(Usage::new(input, output))]
    );
    assert_eq!(emu.counters().stream_stalls, 1);

    // A pause shorter than the idle timeout is waited out.
    let svc = svc.stream_idle_timeout(Some(Duration::from_secs(10)));
    emu.set_faults(vec![
        FaultRule::new(FaultKind::StreamStall {
            after_events: 1,
            ms: 20,
        })
        .count(1),
    ])
    .unwrap();
    let mut resp = open(&svc, converse_stream(HAIKU, "hello")).await;
    while resp.recv().await.unwrap().is_some() {}
    assert_eq!(resp.usage().map(|u| u.output_tokens), Some(16));
}

#[tokio::test]
async fn a_truncated_stream_is_a_network_error() {
    // Tokens take a little time, so the frames before the cut arrive one
    // by one, ahead of it.
    let emu = emulator(
        EmulatorConfig::builder()
            .output_tokens(16)
            .latency(Latency {
                per_token_ms: 2.0,
                ..Latency::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let svc = BedrockService::new(client(&emu).await);
    emu.set_faults(vec![FaultRule::new(FaultKind::Truncate).count(1)])
        .unwrap();
    let req = converse_stream(HAIKU, "hello");
    let input = req.token_demand().input_tokens;
    let mut resp = open(&svc, req).await;
    let settled = watch(&mut resp);
    let mut output = 0;
    let err = loop {
        match resp.recv().await {
            Ok(Some(event)) => output += delta_text(&event).map_or(0, |t| text_tokens(&t)),
            Ok(None) => panic!("a truncated stream must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Network)
    );
    assert_eq!(
        *settled.lock().unwrap(),
        vec![Some(Usage::new(input, output))]
    );
}

#[tokio::test]
async fn dropping_a_stream_early_settles_none_once() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(40).build().unwrap()).await;
    let svc = BedrockService::new(client(&emu).await);
    let mut resp = open(&svc, converse_stream(HAIKU, "hello")).await;
    let settled = watch(&mut resp);
    assert!(resp.recv().await.unwrap().is_some());
    drop(resp);
    assert_eq!(*settled.lock().unwrap(), vec![None]);

    // Registering after the end settles at once, with the usage.
    let mut resp = open(&svc, converse_stream(HAIKU, "hello")).await;
    while resp.recv().await.unwrap().is_some() {}
    let settled = watch(&mut resp);
    assert_eq!(*settled.lock().unwrap(), vec![Some(Usage::new(2, 40))]);
    drop(resp);
    assert_eq!(settled.lock().unwrap().len(), 1, "exactly once");
}

#[tokio::test]
async fn invoke_model_stream_usage_from_invocation_metrics() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(9).build().unwrap()).await;
    let svc = BedrockService::new(client(&emu).await);
    let req = InvokeModelStreamRequest::new(
        InvokeModelWithResponseStreamInput::builder()
            .model_id(HAIKU)
            .content_type("application/json")
            .body(Blob::new(anthropic_body("Name three rivers", 50)))
            .build()
            .unwrap(),
    );
    let demand = req.token_demand();
    let mut resp = svc.clone().oneshot(req).await.unwrap();
    let settled = watch(&mut resp);
    let mut types = Vec::new();
    while let Some(ResponseStream::Chunk(part)) = resp.recv().await.unwrap() {
        let v: serde_json::Value = serde_json::from_slice(part.bytes.unwrap().as_ref()).unwrap();
        types.push(v["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(types.first().map(String::as_str), Some("message_start"));
    assert_eq!(types.last().map(String::as_str), Some("message_stop"));
    let usage = Usage::new(demand.input_tokens, 9);
    assert_eq!(resp.usage(), Some(usage));
    drop(resp);
    assert_eq!(*settled.lock().unwrap(), vec![Some(usage)]);

    // An in-stream throttle in InvokeModelWithResponseStream.
    emu.set_faults(vec![
        FaultRule::new(FaultKind::StreamThrottle { after_events: 1 }).count(1),
    ])
    .unwrap();
    let mut resp = svc
        .clone()
        .oneshot(InvokeModelStreamRequest::new(
            InvokeModelWithResponseStreamInput::builder()
                .model_id(HAIKU)
                .body(Blob::new(anthropic_body("hi", 50)))
                .build()
                .unwrap(),
        ))
        .await
        .unwrap();
    assert!(resp.recv().await.unwrap().is_some());
    let err = resp.recv().await.unwrap_err();
    let Some(StreamError::Sdk(SdkError::ServiceError(ctx))) = err.inner() else {
        panic!("{err:?}");
    };
    assert!(ctx.err().is_throttling_exception());
    assert_eq!(err.class(), ErrorClass::Throttled(ThrottleKind::TokenRate));
}

#[tokio::test]
async fn the_first_event_is_part_of_the_call_and_handed_on() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(6).build().unwrap()).await;
    let svc = BedrockService::new(client(&emu).await);
    let mut resp = open(&svc, converse_stream(HAIKU, "abcd")).await;
    // The stream is open: its first event was read by the call, and is
    // the first the reader gets.
    assert!(!resp.is_finished());
    assert!(resp.request_id().is_some());
    let first = resp.recv().await.unwrap().expect("the first event");
    assert!(
        matches!(first, ConverseStreamOutput::MessageStart(_)),
        "{first:?}"
    );
    let mut rest = 0;
    while resp.recv().await.unwrap().is_some() {
        rest += 1;
    }
    // 2 deltas, contentBlockStop, messageStop, metadata.
    assert_eq!(rest, 5);
}

#[tokio::test]
async fn a_failure_before_the_first_event_is_the_calls_classified_error() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(16).build().unwrap()).await;
    let svc = ServiceBuilder::new()
        .layer(ThrottleClassifyLayer::new())
        .service(BedrockService::new(client(&emu).await));
    let cases: [(FaultKind, &str, ErrorClass); 3] = [
        (
            FaultKind::StreamThrottle { after_events: 0 },
            "ThrottlingException",
            ErrorClass::Throttled(ThrottleKind::TokenRate),
        ),
        (
            FaultKind::StreamUnavailable { after_events: 0 },
            "ServiceUnavailableException",
            ErrorClass::Unavailable(UnavailableKind::Service),
        ),
        (
            FaultKind::StreamError { after_events: 0 },
            "InternalServerException",
            ErrorClass::Unavailable(UnavailableKind::Service),
        ),
    ];
    for (fault, code, class) in cases {
        emu.set_faults(vec![FaultRule::new(fault).count(1)])
            .unwrap();
        let err = svc
            .clone()
            .oneshot(converse_stream(HAIKU, "hello"))
            .await
            .expect_err("the stream failed before its first event");
        assert_eq!(err.class(), class, "{fault:?}");
        assert_eq!(err.classification().code(), Some(code), "{fault:?}");
        assert!(err.classification().request_id.is_some(), "{fault:?}");
        let inner = err.inner().expect("the SDK's error is kept");
        assert!(inner.is_in_stream(), "{inner:?}");
        let Some(StreamError::Sdk(SdkError::ServiceError(ctx))) = inner.as_first_event() else {
            panic!("{fault:?}: expected a modeled in-stream error, got {inner:?}");
        };
        assert_eq!(ctx.err().exception_code(), Some(code));
        // The fault fired once: the same call streams now.
        let mut resp = svc
            .clone()
            .oneshot(converse_stream(HAIKU, "hello"))
            .await
            .unwrap();
        while resp.recv().await.unwrap().is_some() {}
        assert_eq!(resp.usage().map(|u| u.output_tokens), Some(16));
    }
    assert_eq!(emu.counters().stream_exceptions, 3);

    // InvokeModelWithResponseStream alike.
    emu.set_faults(vec![
        FaultRule::new(FaultKind::StreamThrottle { after_events: 0 }).count(1),
    ])
    .unwrap();
    let err = svc
        .clone()
        .oneshot(InvokeModelStreamRequest::new(
            InvokeModelWithResponseStreamInput::builder()
                .model_id(HAIKU)
                .body(Blob::new(anthropic_body("hi", 50)))
                .build()
                .unwrap(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Throttled(ThrottleKind::TokenRate));
    assert!(err.inner().unwrap().is_in_stream());

    // An HTTP error stays the request's error.
    emu.set_faults(vec![FaultRule::new(FaultKind::Overloaded).count(1)])
        .unwrap();
    let err = svc
        .clone()
        .oneshot(converse_stream(HAIKU, "hello"))
        .await
        .unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Throttled(ThrottleKind::ModelOverloaded)
    );
    assert!(err.inner().unwrap().as_request().is_some());
}

#[tokio::test]
async fn the_wait_for_the_first_event_is_bounded_by_the_idle_timeout() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(8).build().unwrap()).await;
    let svc = ServiceBuilder::new()
        .layer(ThrottleClassifyLayer::new())
        .service(
            BedrockService::new(client(&emu).await)
                .stream_idle_timeout(Some(Duration::from_millis(300))),
        );
    emu.set_faults(vec![
        FaultRule::new(FaultKind::StreamStall {
            after_events: 0,
            ms: 30_000,
        })
        .count(1),
    ])
    .unwrap();
    let started = std::time::Instant::now();
    let err = svc
        .clone()
        .oneshot(converse_stream(HAIKU, "hello"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Network)
    );
    assert_eq!(err.classification().code(), Some("StreamIdleTimeout"));
    assert!(
        err.inner()
            .unwrap()
            .as_first_event()
            .unwrap()
            .is_idle_timeout()
    );
}

#[tokio::test]
async fn every_usage_observer_gets_the_usage_once() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(10).build().unwrap()).await;
    let svc = BedrockService::new(client(&emu).await);
    let req = converse_stream(HAIKU, "Write a haiku about tea");
    let input = req.token_demand().input_tokens;
    let mut resp = open(&svc, req).await;
    let budget = watch(&mut resp);
    let metrics = watch(&mut resp);
    while resp.recv().await.unwrap().is_some() {}
    let late = watch(&mut resp);
    drop(resp);
    let usage = Usage::new(input, 10);
    for seen in [budget, metrics, late] {
        assert_eq!(*seen.lock().unwrap(), vec![Some(usage)]);
    }
}

#[tokio::test]
async fn the_layers_watching_the_call_learn_how_the_stream_ended() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(16).build().unwrap()).await;
    let svc = BedrockService::new(client(&emu).await);
    // What a watching layer (the breaker) does: call inside a frame, take
    // the outcome when the call returns.
    async fn call(
        svc: &BedrockService,
        req: ConverseStreamRequest,
    ) -> (ConverseStreamResponse, Arc<Mutex<Vec<StreamEnd>>>) {
        let mut svc = svc.clone();
        let mut fut = std::pin::pin!(stream_end::watch_call(|| svc.call(req)));
        let resp = (&mut fut).await.expect("stream opens");
        let outcome = stream_end::take_outcome(fut.as_mut()).expect("a stream reports its end");
        let ends: Arc<Mutex<Vec<StreamEnd>>> = Arc::default();
        let e = ends.clone();
        outcome.on_end(move |end| e.lock().unwrap().push(end.clone()));
        (resp, ends)
    }

    let (mut resp, ends) = call(&svc, converse_stream(HAIKU, "hello")).await;
    while resp.recv().await.unwrap().is_some() {
        assert!(ends.lock().unwrap().is_empty(), "not before the end");
    }
    assert_eq!(*ends.lock().unwrap(), vec![StreamEnd::Completed]);
    drop(resp);
    assert_eq!(ends.lock().unwrap().len(), 1, "exactly once");

    emu.set_faults(vec![
        FaultRule::new(FaultKind::StreamUnavailable { after_events: 2 }).count(1),
    ])
    .unwrap();
    let (mut resp, ends) = call(&svc, converse_stream(HAIKU, "hello")).await;
    let err = loop {
        match resp.recv().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without its exception"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        *ends.lock().unwrap(),
        vec![StreamEnd::Failed(err.classification().clone())]
    );

    let (mut resp, ends) = call(&svc, converse_stream(HAIKU, "hello")).await;
    assert!(resp.recv().await.unwrap().is_some());
    drop(resp);
    assert_eq!(*ends.lock().unwrap(), vec![StreamEnd::Dropped]);

    // Nobody watching: nothing to report to, nothing allocated for it.
    let mut resp = open(&svc, converse_stream(HAIKU, "hello")).await;
    while resp.recv().await.unwrap().is_some() {}
}

#[tokio::test]
async fn the_wait_for_the_first_event_is_bounded_by_the_call_deadline() {
    // The idle timeout (10 s) would let a 30 s stall run long; the call's
    // deadline (set by a layer above, 300 ms away) ends the wait first, as
    // the caller's limit: `Local(DeadlineExceeded)`, not a network failure
    // that a breaker would count.
    let emu = emulator(EmulatorConfig::builder().output_tokens(8).build().unwrap()).await;
    let svc = ServiceBuilder::new()
        .layer(ThrottleClassifyLayer::new())
        .service(
            BedrockService::new(client(&emu).await)
                .stream_idle_timeout(Some(Duration::from_secs(10))),
        );
    emu.set_faults(vec![
        FaultRule::new(FaultKind::StreamStall {
            after_events: 0,
            ms: 30_000,
        })
        .count(1),
    ])
    .unwrap();
    let started = std::time::Instant::now();
    let at = tokio::time::Instant::now() + Duration::from_millis(300);
    let err = tower_bedrock_core::deadline::with_call_deadline(
        at,
        svc.clone().oneshot(converse_stream(HAIKU, "hello")),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        err.class(),
        ErrorClass::Local(tower_bedrock_core::LocalRejection::DeadlineExceeded)
    );
    assert!(matches!(
        err.inner().unwrap().as_first_event().unwrap(),
        tower_bedrock_sdk::StreamError::Deadline
    ));
}
