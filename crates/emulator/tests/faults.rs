//! Faults through the real SDK: every error kind with the SDK's own variant
//! and message, resets, truncated bodies, stalls, in-stream exceptions and
//! stalls, faults toggled through the admin API, and determinism given a
//! seed.

mod common;

use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::error::{ConverseStreamOutputError, ResponseStreamError};
use aws_sdk_bedrockruntime::types::{ConverseStreamOutput, ResponseStream};
use common::*;
use tower_bedrock_emulator::{EmulatorConfig, FaultKind, FaultRule, messages};

async fn converse(c: &Client, model: &str) -> Result<(), SdkError<ConverseError>> {
    c.converse()
        .model_id(model)
        .messages(user("hi"))
        .send()
        .await
        .map(|_| ())
}

#[tokio::test]
async fn faults_toggled_through_the_admin_api() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client(&emu);
    let rules = format!(r#"[{{"kind":"overloaded","model":"{NOVA}"}}]"#);
    let r = admin(&emu, "PUT", "/faults", &rules).await;
    assert_eq!(r.status, 204);
    let r = admin(&emu, "GET", "/faults", "").await;
    assert_eq!(r.json()[0]["kind"], "overloaded");
    assert_eq!(r.json()[0]["rate"], 1.0);

    let err = converse(&c, NOVA).await.expect_err("overloaded");
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 429);
    let e = err.into_service_error();
    assert!(matches!(e, ConverseError::ThrottlingException(_)), "{e:?}");
    assert_eq!(
        e.message(),
        Some("Model amazon.nova-lite-v1:0 is currently overloaded. Please try again later.")
    );
    // Other models are fine; so is the same model once the fault is gone.
    converse(&c, HAIKU3).await.expect("other model");
    let r = admin(&emu, "DELETE", "/faults", "").await;
    assert_eq!(r.status, 204);
    converse(&c, NOVA).await.expect("fault removed");
    assert_eq!(emu.counters().throttled_overloaded, 1);

    // Bad rules are refused whole.
    let r = admin(
        &emu,
        "PUT",
        "/faults",
        r#"[{"kind":"unavailable","rate":2}]"#,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = admin(&emu, "PUT", "/faults", r#"[{"kind":"meteor"}]"#).await;
    assert_eq!(r.status, 400);
    converse(&c, NOVA).await.expect("nothing installed");

    // Overloaded for a period only.
    let r = admin(
        &emu,
        "PUT",
        "/faults",
        r#"[{"kind":"overloaded","for_ms":1000}]"#,
    )
    .await;
    assert_eq!(r.status, 204);
    converse(&c, NOVA).await.expect_err("overloaded now");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    converse(&c, NOVA).await.expect("the period is over");
    emu.shutdown().await;
}

#[tokio::test]
async fn every_error_kind_reaches_the_sdk_as_its_own_variant() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client(&emu);
    let cases: [(FaultKind, u16, &str, &str); 7] = [
        (
            FaultKind::Unavailable,
            503,
            "ServiceUnavailableException",
            messages::SERVICE_UNAVAILABLE,
        ),
        (
            FaultKind::InternalError,
            500,
            "InternalServerException",
            messages::INTERNAL,
        ),
        (
            FaultKind::ModelTimeout,
            408,
            "ModelTimeoutException",
            messages::MODEL_TIMEOUT,
        ),
        (
            FaultKind::ModelNotReady,
            429,
            "ModelNotReadyException",
            messages::MODEL_NOT_READY,
        ),
        (
            FaultKind::TooManyRequests,
            429,
            "ThrottlingException",
            messages::TOO_MANY_REQUESTS,
        ),
        (
            FaultKind::TooManyTokens,
            429,
            "ThrottlingException",
            messages::TOO_MANY_TOKENS,
        ),
        (
            FaultKind::Overloaded,
            429,
            "ThrottlingException",
            "Model us.amazon.nova-lite-v1:0 is currently overloaded. Please try again later.",
        ),
    ];
    for (kind, status, code, message) in cases {
        emu.set_faults(vec![FaultRule::new(kind).count(1)]).unwrap();
        let err = converse(&c, &format!("us.{NOVA}"))
            .await
            .expect_err("fault");
        assert_eq!(err.raw_response().unwrap().status().as_u16(), status);
        let e = err.into_service_error();
        let variant_ok = match code {
            "ServiceUnavailableException" => {
                matches!(e, ConverseError::ServiceUnavailableException(_))
            }
            "InternalServerException" => matches!(e, ConverseError::InternalServerException(_)),
            "ModelTimeoutException" => matches!(e, ConverseError::ModelTimeoutException(_)),
            "ModelNotReadyException" => matches!(e, ConverseError::ModelNotReadyException(_)),
            _ => matches!(e, ConverseError::ThrottlingException(_)),
        };
        assert!(variant_ok, "{kind:?}: {e:?}");
        assert_eq!(e.code(), Some(code));
        assert_eq!(e.message(), Some(message));
        // count(1): the next call succeeds.
        converse(&c, NOVA).await.expect("fault spent");
    }
    emu.set_faults(vec![FaultRule::new(FaultKind::ModelError).count(1)])
        .unwrap();
    let e = converse(&c, NOVA).await.unwrap_err();
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 424);
    let e = e.into_service_error();
    assert!(matches!(e, ConverseError::ModelErrorException(_)), "{e:?}");
    assert_eq!(e.message(), Some(messages::MODEL_ERROR));
    emu.set_faults(vec![
        FaultRule::new(FaultKind::ServiceQuotaExceeded).count(1),
    ])
    .unwrap();
    let e = c
        .invoke_model()
        .model_id(LLAMA)
        .body(Blob::new(r#"{"prompt":"hi"}"#))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(e, InvokeModelError::ServiceQuotaExceededException(_)),
        "{e:?}"
    );
    assert_eq!(e.message(), Some(messages::SERVICE_QUOTA_EXCEEDED));
    let n = emu.counters();
    assert_eq!(
        (n.unavailable, n.internal_errors, n.model_timeouts),
        (1, 1, 1)
    );
    assert_eq!((n.quota_exceeded, n.client_errors), (1, 1));
    assert_eq!((n.throttled_fault, n.throttled_overloaded), (3, 1));
    emu.shutdown().await;
}

#[tokio::test]
async fn resets_truncations_and_stalls_are_transport_failures() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client_with_timeout(&emu, Some(Duration::from_millis(300)));

    emu.set_faults(vec![FaultRule::new(FaultKind::Reset).count(1)])
        .unwrap();
    let err = converse(&c, NOVA).await.expect_err("reset");
    assert!(
        matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ),
        "{err:?}"
    );
    converse(&c, NOVA).await.expect("after the reset");

    emu.set_faults(vec![FaultRule::new(FaultKind::Truncate).count(1)])
        .unwrap();
    let err = converse(&c, NOVA).await.expect_err("truncated");
    assert!(
        matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ),
        "{err:?}"
    );
    converse(&c, NOVA).await.expect("after the truncation");

    // A 2 s stall against a 300 ms read timeout.
    emu.set_faults(vec![
        FaultRule::new(FaultKind::Stall { ms: 2_000 }).count(1),
    ])
    .unwrap();
    let err = converse(&c, NOVA).await.expect_err("stalled");
    let timed_out = match &err {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(d) => d.is_timeout(),
        _ => false,
    };
    assert!(timed_out, "{err:?}");
    let n = emu.counters();
    assert_eq!((n.resets, n.truncated, n.stalls), (1, 1, 1));
    emu.shutdown().await;
}

#[tokio::test]
async fn converse_stream_with_an_in_stream_throttle() {
    let emu = start(EmulatorConfig::builder().output_tokens(40).build().unwrap()).await;
    let c = client(&emu);
    emu.set_faults(vec![FaultRule::new(FaultKind::StreamThrottle {
        after_events: 3,
    })])
    .unwrap();
    let mut out = c
        .converse_stream()
        .model_id(NOVA)
        .messages(user("hi"))
        .send()
        .await
        .expect("the stream starts: the throttle comes inside it");
    let mut events = 0;
    let err = loop {
        match out.stream.recv().await {
            Ok(Some(ev)) => {
                assert!(!matches!(ev, ConverseStreamOutput::Metadata(_)));
                events += 1;
            }
            Ok(None) => panic!("stream ended without the exception"),
            Err(e) => break e,
        }
    };
    assert_eq!(events, 3);
    let e = err.into_service_error();
    assert!(
        matches!(e, ConverseStreamOutputError::ThrottlingException(_)),
        "{e:?}"
    );
    assert_eq!(e.message(), Some(messages::TOO_MANY_TOKENS));
    // Settled with what was sent: input 1 + two deltas of 4 tokens.
    wait_settled(&emu, NOVA).await;
    assert_eq!(emu.usage(NOVA).used, 1 + 8);
    assert_eq!(emu.counters().stream_exceptions, 1);
    emu.shutdown().await;
}

async fn wait_settled(emu: &tower_bedrock_emulator::EmulatorHandle, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while emu.usage(id).reserved != 0 {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn invoke_stream_in_stream_errors() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client(&emu);
    let body = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
    for (kind, expect) in [
        (
            FaultKind::StreamUnavailable { after_events: 2 },
            "ServiceUnavailableException",
        ),
        (
            FaultKind::StreamError { after_events: 0 },
            "InternalServerException",
        ),
    ] {
        emu.set_faults(vec![FaultRule::new(kind).count(1)]).unwrap();
        let mut out = c
            .invoke_model_with_response_stream()
            .model_id(HAIKU3)
            .body(Blob::new(body))
            .send()
            .await
            .expect("stream starts");
        let mut chunks = 0;
        let err = loop {
            match out.body.recv().await {
                Ok(Some(ResponseStream::Chunk(_))) => chunks += 1,
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e.into_service_error(),
            }
        };
        match expect {
            "ServiceUnavailableException" => {
                assert_eq!(chunks, 2);
                assert!(
                    matches!(err, ResponseStreamError::ServiceUnavailableException(_)),
                    "{err:?}"
                );
                assert_eq!(err.message(), Some(messages::SERVICE_UNAVAILABLE));
            }
            _ => {
                assert_eq!(chunks, 0);
                assert!(
                    matches!(err, ResponseStreamError::InternalServerException(_)),
                    "{err:?}"
                );
            }
        }
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn a_stall_inside_a_stream_then_the_rest() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client(&emu);
    emu.set_faults(vec![FaultRule::new(FaultKind::StreamStall {
        after_events: 2,
        ms: 1_500,
    })])
    .unwrap();
    let mut out = c
        .converse_stream()
        .model_id(NOVA)
        .messages(user("hi"))
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        out.stream
            .recv()
            .await
            .unwrap()
            .expect("event before the stall");
    }
    // The third event is 1.5 s away: an idle timeout of 200 ms fires.
    let idle = tokio::time::timeout(Duration::from_millis(200), out.stream.recv()).await;
    assert!(idle.is_err(), "the stream should be stalled");
    // Then the stream resumes and ends normally.
    let mut last = None;
    while let Some(ev) = out.stream.recv().await.expect("no error after the stall") {
        last = Some(ev);
    }
    assert!(matches!(last, Some(ConverseStreamOutput::Metadata(_))));
    assert_eq!(emu.counters().stream_stalls, 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_truncated_stream_fails_in_the_middle() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client(&emu);
    emu.set_faults(vec![FaultRule::new(FaultKind::Truncate)])
        .unwrap();
    let mut out = c
        .converse_stream()
        .model_id(NOVA)
        .messages(user("hi"))
        .send()
        .await
        .expect("headers arrive");
    let mut events = 0;
    let err = loop {
        match out.stream.recv().await {
            Ok(Some(_)) => events += 1,
            Ok(None) => panic!("a truncated stream must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert!(events > 0);
    assert!(
        matches!(
            err,
            SdkError::ResponseError(_) | SdkError::DispatchFailure(_)
        ),
        "{err:?}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults() {
    async fn run(seed: u64) -> Vec<bool> {
        let config = EmulatorConfig::builder()
            .seed(seed)
            .fault(FaultRule::new(FaultKind::Unavailable).rate(0.5))
            .build()
            .unwrap();
        let emu = start(config).await;
        let c = client(&emu);
        let mut v = Vec::new();
        for _ in 0..40 {
            v.push(converse(&c, NOVA).await.is_ok());
        }
        // A reset reseeds: the sequence starts over.
        emu.reset();
        for (i, expected) in v.clone().into_iter().enumerate().take(10) {
            assert_eq!(
                converse(&c, NOVA).await.is_ok(),
                expected,
                "call {i} after reset"
            );
        }
        emu.shutdown().await;
        v
    }
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert_ne!(a, run(43).await);
    let failures = a.iter().filter(|ok| !**ok).count();
    assert!((5..35).contains(&failures), "{failures} of 40");
}
