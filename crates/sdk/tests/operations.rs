//! The real SDK client, through `BedrockService` and `ThrottleClassify`,
//! against the in-process emulator: every operation, success and each
//! error kind, asserting the SDK's own error variants and messages and the
//! classification.

mod common;

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::count_tokens::CountTokensError;
use aws_sdk_bedrockruntime::operation::invoke_model::{InvokeModelError, InvokeModelInput};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::StopReason;
use common::*;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bedrock_classify::{ThrottleClassify, ThrottleClassifyLayer};
use tower_bedrock_core::{
    Classified, ClientKind, ErrorClass, ModelRequest, ReportsUsage, ThrottleKind, UnavailableKind,
    Usage,
};
use tower_bedrock_emulator::{EmulatorConfig, FaultKind, FaultRule, Quota};
use tower_bedrock_sdk::{BedrockService, ConverseRequest, CountTokensRequest, InvokeModelRequest};

fn stack(client: aws_sdk_bedrockruntime::Client) -> ThrottleClassify<BedrockService> {
    ServiceBuilder::new()
        .layer(ThrottleClassifyLayer::new())
        .service(BedrockService::new(client))
}

async fn call<R>(
    svc: &ThrottleClassify<BedrockService>,
    req: R,
) -> Result<
    <ThrottleClassify<BedrockService> as Service<R>>::Response,
    <ThrottleClassify<BedrockService> as Service<R>>::Error,
>
where
    ThrottleClassify<BedrockService>: Service<R>,
{
    svc.clone().oneshot(req).await
}

#[tokio::test]
async fn converse_answers_with_usage_that_matches_the_estimate() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(12).build().unwrap()).await;
    let svc = stack(client(&emu).await);
    let req = converse(HAIKU, "Tell me about the weather on the coast", Some(100));
    let demand = req.token_demand();
    let resp = call(&svc, req).await.unwrap();
    let usage = resp.usage().unwrap();
    // The heuristic and the emulator agree on text-only prompts.
    assert_eq!(usage, Usage::new(demand.input_tokens, 12));
    assert_eq!(demand.input_tokens, 10);
    assert_eq!(demand.max_output_tokens, Some(100));
    assert_eq!(resp.output.stop_reason, StopReason::EndTurn);
    let text = resp
        .output
        .output
        .as_ref()
        .unwrap()
        .as_message()
        .unwrap()
        .content[0]
        .as_text()
        .unwrap()
        .clone();
    assert_eq!(text.split(' ').count(), 12);
    // max_tokens caps the answer.
    let resp = call(&svc, converse(HAIKU, "abcd", Some(5))).await.unwrap();
    assert_eq!(resp.usage(), Some(Usage::new(1, 5)));
    assert_eq!(resp.output.stop_reason, StopReason::MaxTokens);
    assert_eq!(emu.counters().admitted, 2);
}

#[tokio::test]
async fn model_id_rewrite_reaches_the_wire() {
    let emu = emulator(EmulatorConfig::builder().build().unwrap()).await;
    let svc = stack(client(&emu).await);
    let mut req = converse("not-a-model", "hi", Some(4));
    req.set_model_id(SONNET4);
    call(&svc, req).await.unwrap();
    // Quotas are kept per id as sent: the profile id was used.
    assert!(emu.usage(SONNET4).used > 0);
}

struct Case {
    fault: FaultKind,
    code: &'static str,
    message: &'static str,
    status: u16,
    class: ErrorClass,
    is_variant: fn(&ConverseError) -> bool,
}

#[tokio::test]
async fn converse_error_kinds_keep_sdk_variants_and_are_classified() {
    let emu = emulator(EmulatorConfig::builder().build().unwrap()).await;
    let svc = stack(client(&emu).await);
    let overloaded_msg = format!("Model {HAIKU} is currently overloaded. Please try again later.");
    let cases = [
        Case {
            fault: FaultKind::TooManyTokens,
            code: "ThrottlingException",
            message: "Too many tokens, please wait before trying again.",
            status: 429,
            class: ErrorClass::Throttled(ThrottleKind::TokenRate),
            is_variant: ConverseError::is_throttling_exception,
        },
        Case {
            fault: FaultKind::TooManyRequests,
            code: "ThrottlingException",
            message: "Too many requests, please wait before trying again.",
            status: 429,
            class: ErrorClass::Throttled(ThrottleKind::RequestRate),
            is_variant: ConverseError::is_throttling_exception,
        },
        Case {
            fault: FaultKind::Overloaded,
            code: "ThrottlingException",
            message: "",
            status: 429,
            class: ErrorClass::Throttled(ThrottleKind::ModelOverloaded),
            is_variant: ConverseError::is_throttling_exception,
        },
        Case {
            fault: FaultKind::ModelNotReady,
            code: "ModelNotReadyException",
            message: "Model is not ready to serve inference requests. Try your request again later.",
            status: 429,
            class: ErrorClass::Throttled(ThrottleKind::ModelNotReady),
            is_variant: ConverseError::is_model_not_ready_exception,
        },
        Case {
            fault: FaultKind::Unavailable,
            code: "ServiceUnavailableException",
            message: "Service temporarily unavailable, please try again.",
            status: 503,
            class: ErrorClass::Unavailable(UnavailableKind::Service),
            is_variant: ConverseError::is_service_unavailable_exception,
        },
        Case {
            fault: FaultKind::InternalError,
            code: "InternalServerException",
            message: "The system encountered an unexpected error during processing. Try your request again.",
            status: 500,
            class: ErrorClass::Unavailable(UnavailableKind::Service),
            is_variant: ConverseError::is_internal_server_exception,
        },
        Case {
            fault: FaultKind::ModelTimeout,
            code: "ModelTimeoutException",
            message: "Model has timed out in processing the request. Try your request again.",
            status: 408,
            class: ErrorClass::ModelTimeout,
            is_variant: ConverseError::is_model_timeout_exception,
        },
    ];
    for case in cases {
        emu.set_faults(vec![FaultRule::new(case.fault).count(1)])
            .unwrap();
        let err = call(&svc, converse(HAIKU, "hello", Some(10)))
            .await
            .unwrap_err();
        let sdk = err.inner().expect("an SDK error, not a local one");
        let op = sdk.as_service_error().expect("a service error");
        assert!((case.is_variant)(op), "{:?}: got {op:?}", case.fault);
        assert_eq!(op.code(), Some(case.code), "{:?}", case.fault);
        let expected = if case.message.is_empty() {
            overloaded_msg.as_str()
        } else {
            case.message
        };
        assert_eq!(op.message(), Some(expected), "{:?}", case.fault);
        assert_eq!(sdk.raw_response().unwrap().status().as_u16(), case.status);
        let c = err.classification();
        assert_eq!(c.class, case.class, "{:?}", case.fault);
        assert_eq!(c.status, Some(case.status));
        assert_eq!(c.code(), Some(case.code));
        assert!(c.request_id.is_some(), "request id kept: {c:?}");
        // The fault fired once: the next call succeeds.
        call(&svc, converse(HAIKU, "hello", Some(10)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn client_errors_validation_not_found_access_denied() {
    let emu = emulator(EmulatorConfig::builder().build().unwrap()).await;
    let svc = stack(client(&emu).await);

    let err = call(&svc, converse("acme.no-such-model-v1:0", "hi", None))
        .await
        .unwrap_err();
    // Bedrock answers an unknown id with a 400 ValidationException.
    let op = err.inner().unwrap().as_service_error().unwrap();
    assert!(op.is_validation_exception(), "{op:?}");
    assert_eq!(
        op.message(),
        Some("The provided model identifier is invalid.")
    );
    assert_eq!(err.class(), ErrorClass::Client(ClientKind::Validation));

    // maxTokens 0 is refused by Bedrock's validation.
    let err = call(&svc, converse(HAIKU, "hi", Some(0)))
        .await
        .unwrap_err();
    let op = err.inner().unwrap().as_service_error().unwrap();
    assert!(op.is_validation_exception(), "{op:?}");
    assert!(op.message().unwrap().contains("inferenceConfig.maxTokens"));
    assert_eq!(err.class(), ErrorClass::Client(ClientKind::Validation));

    // Credentials that are not SigV4 (a layer below the SDK rewrites the
    // Authorization header): access denied.
    let strip = tower::layer::layer_fn(|inner: tower_bedrock_sdk::ConnectorService| {
        tower::util::MapRequest::new(inner, |mut req: http::Request<_>| {
            req.headers_mut()
                .insert("authorization", http::HeaderValue::from_static("Bearer x"));
            req
        })
    });
    let b = builder(&emu);
    let base = b.default_transport();
    let bad = b
        .http_client(aws_sdk_bedrockruntime::config::SharedHttpClient::new(
            tower_bedrock_sdk::LayeredHttpClient::new(base, strip),
        ))
        .build()
        .await
        .unwrap();
    let err = call(&stack(bad), converse(HAIKU, "hi", None))
        .await
        .unwrap_err();
    let op = err.inner().unwrap().as_service_error().unwrap();
    assert!(op.is_access_denied_exception(), "{op:?}");
    assert_eq!(
        op.message(),
        Some("The security token included in the request is invalid.")
    );
    assert_eq!(err.class(), ErrorClass::Client(ClientKind::AccessDenied));
}

#[tokio::test]
async fn tpm_quota_throttles_with_too_many_tokens_and_refreshes() {
    let emu = emulator(
        EmulatorConfig::builder()
            .quota(HAIKU, Quota::tokens(100))
            .frozen_clock(true)
            .output_tokens(48)
            .build()
            .unwrap(),
    )
    .await;
    let svc = stack(client(&emu).await);
    // Reserves 3 + 50, settles to 3 + 48 = 51.
    call(&svc, converse(HAIKU, "Hello there", Some(50)))
        .await
        .unwrap();
    // 51 used + 53 reserved > 100.
    let err = call(&svc, converse(HAIKU, "Hello there", Some(50)))
        .await
        .unwrap_err();
    let op = err.inner().unwrap().as_service_error().unwrap();
    assert!(op.is_throttling_exception());
    assert_eq!(
        op.message(),
        Some("Too many tokens, please wait before trying again.")
    );
    assert_eq!(err.class(), ErrorClass::Throttled(ThrottleKind::TokenRate));
    // A small reservation still fits: 51 + 3 + 10 <= 100.
    call(&svc, converse(HAIKU, "Hello there", Some(10)))
        .await
        .unwrap();
    // The next window admits the large one again.
    emu.advance_clock(std::time::Duration::from_secs(60));
    call(&svc, converse(HAIKU, "Hello there", Some(50)))
        .await
        .unwrap();
    assert_eq!(emu.counters().throttled_tokens, 1);
}

#[tokio::test]
async fn invoke_model_usage_from_headers() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(7).build().unwrap()).await;
    let svc = stack(client(&emu).await);
    let req = InvokeModelRequest::new(
        InvokeModelInput::builder()
            .model_id(HAIKU)
            .content_type("application/json")
            .body(Blob::new(anthropic_body(
                "What is the capital of France?",
                64,
            )))
            .build()
            .unwrap(),
    );
    let demand = req.token_demand();
    assert_eq!(demand.max_output_tokens, Some(64));
    let resp = call(&svc, req).await.unwrap();
    assert_eq!(resp.usage(), Some(Usage::new(demand.input_tokens, 7)));
    assert!(resp.invocation_latency.is_some());
    let body: serde_json::Value = serde_json::from_slice(resp.output.body.as_ref()).unwrap();
    assert_eq!(body["usage"]["output_tokens"], 7);
    assert_eq!(body["role"], "assistant");

    // A malformed body: the SDK's ValidationException, a client error.
    let err = call(
        &svc,
        InvokeModelRequest::new(
            InvokeModelInput::builder()
                .model_id(HAIKU)
                .body(Blob::new("{not json"))
                .build()
                .unwrap(),
        ),
    )
    .await
    .unwrap_err();
    let op: &InvokeModelError = err.inner().unwrap().as_service_error().unwrap();
    assert!(op.is_validation_exception(), "{op:?}");
    assert_eq!(
        op.message(),
        Some("Malformed input request, please reformat your input and try again.")
    );
    assert_eq!(err.class(), ErrorClass::Client(ClientKind::Validation));

    // Overloaded InvokeModel: same classification as Converse.
    emu.set_faults(vec![FaultRule::new(FaultKind::Overloaded).count(1)])
        .unwrap();
    let err = call(
        &svc,
        InvokeModelRequest::new(
            InvokeModelInput::builder()
                .model_id(HAIKU)
                .body(Blob::new(anthropic_body("hi", 8)))
                .build()
                .unwrap(),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        err.inner()
            .unwrap()
            .as_service_error()
            .unwrap()
            .is_throttling_exception()
    );
    assert_eq!(
        err.class(),
        ErrorClass::Throttled(ThrottleKind::ModelOverloaded)
    );
}

#[tokio::test]
async fn count_tokens_matches_usage_and_costs_nothing() {
    let emu = emulator(EmulatorConfig::builder().build().unwrap()).await;
    let svc = stack(client(&emu).await);
    let conv: ConverseRequest = converse(SONNET4, "Count these words for me please", Some(10));
    let counted = call(
        &svc,
        CountTokensRequest::for_converse(conv.input()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(counted.input_tokens(), conv.token_demand().input_tokens);
    assert_eq!(counted.usage(), Some(Usage::default()));
    let answered = call(&svc, conv).await.unwrap();
    assert_eq!(
        answered.usage().unwrap().input_tokens,
        counted.input_tokens()
    );
    // InvokeModel bodies can be counted too.
    let invoke = InvokeModelInput::builder()
        .model_id(SONNET4)
        .body(Blob::new(anthropic_body(
            "Count these words for me please",
            10,
        )))
        .build()
        .unwrap();
    let counted = call(&svc, CountTokensRequest::for_invoke(&invoke).unwrap())
        .await
        .unwrap();
    assert_eq!(counted.input_tokens(), 8);

    let mut bad = CountTokensRequest::for_converse(converse(HAIKU, "x", None).input()).unwrap();
    bad.set_model_id("acme.unknown-v1:0");
    let err = call(&svc, bad).await.unwrap_err();
    let op: &CountTokensError = err.inner().unwrap().as_service_error().unwrap();
    assert!(op.is_validation_exception(), "{op:?}");
    assert_eq!(err.class(), ErrorClass::Client(ClientKind::Validation));
    assert_eq!(emu.counters().count_tokens, 2);
}

#[tokio::test]
async fn transport_failures_are_network_errors() {
    let emu = emulator(EmulatorConfig::builder().build().unwrap()).await;
    let svc = stack(
        builder(&emu)
            .read_timeout(std::time::Duration::from_millis(300))
            .build()
            .await
            .unwrap(),
    );
    // A reset connection: a dispatch failure.
    emu.set_faults(vec![FaultRule::new(FaultKind::Reset).count(1)])
        .unwrap();
    let err = call(&svc, converse(HAIKU, "hi", Some(5)))
        .await
        .unwrap_err();
    let sdk = err.inner().unwrap();
    assert!(
        matches!(
            sdk,
            aws_sdk_bedrockruntime::error::SdkError::DispatchFailure(_)
                | aws_sdk_bedrockruntime::error::SdkError::ResponseError(_)
        ),
        "{sdk:?}"
    );
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Network)
    );

    // A truncated body: the response cannot be read.
    emu.set_faults(vec![FaultRule::new(FaultKind::Truncate).count(1)])
        .unwrap();
    let err = call(&svc, converse(HAIKU, "hi", Some(5)))
        .await
        .unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Network)
    );
    assert_eq!(emu.counters().truncated, 1);

    // A stall far beyond the read timeout (30 s against 300 ms): the read
    // timeout fires as a connector timeout.
    emu.set_faults(vec![
        FaultRule::new(FaultKind::Stall { ms: 30_000 }).count(1),
    ])
    .unwrap();
    let err = call(&svc, converse(HAIKU, "hi", Some(5)))
        .await
        .unwrap_err();
    match err.inner().unwrap() {
        aws_sdk_bedrockruntime::error::SdkError::DispatchFailure(f) => {
            assert!(f.is_timeout(), "{f:?}")
        }
        other => panic!("expected a dispatch timeout, got {other:?}"),
    }
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Network)
    );
    assert_eq!(err.classification().code(), Some("ConnectTimeout"));
    // And the client is still usable.
    call(&svc, converse(HAIKU, "hi", Some(5))).await.unwrap();
}
