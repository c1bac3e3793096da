//! Real `SdkError` values of every Bedrock Runtime operation, built with the
//! SDK's own builders (no server needed), and their classes.

use aws_sdk_bedrockruntime::error::{ConnectorError, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::operation::count_tokens::CountTokensError;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamError;
use aws_sdk_bedrockruntime::types::error::{
    AccessDeniedException, ConverseStreamOutputError, InternalServerException, ModelErrorException,
    ModelNotReadyException, ModelStreamErrorException, ModelTimeoutException,
    ResourceNotFoundException, ResponseStreamError, ServiceQuotaExceededException,
    ServiceUnavailableException, ThrottlingException, ValidationException,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::ErrorMetadata;
use aws_smithy_types::event_stream::{Message, RawMessage};
use tower_bedrock_classify::{classify_sdk_error, classify_stream_error};
use tower_bedrock_core::{ClientKind, ErrorClass, ThrottleKind, UnavailableKind};

fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn raw(status: u16, code: &str) -> HttpResponse {
    let mut r = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
    r.headers_mut().insert("x-amzn-ErrorType", code.to_owned());
    r.headers_mut()
        .insert("x-amzn-RequestId", "7c0e3a6b-1d2f-4b1a-9f43-3d1c2b7a9e10");
    r
}

macro_rules! throttling {
    ($msg:expr) => {
        ThrottlingException::builder()
            .message($msg)
            .meta(meta("ThrottlingException", $msg))
            .build()
    };
}

const TOKENS: &str = "Too many tokens, please wait before trying again.";
const REQUESTS: &str = "Too many requests, please wait before trying again.";
const OVERLOADED: &str = "Model anthropic.claude-haiku-4-5-20251001-v1:0 is currently overloaded. Please try again later.";
const CONNECTIONS: &str = "Too many connections, please wait before trying again.";
const UNAVAILABLE: &str = "Service temporarily unavailable, please try again.";

#[test]
fn converse_service_errors() {
    let cases: Vec<(ConverseError, u16, &str, ErrorClass)> = vec![
        (
            ConverseError::ThrottlingException(throttling!(TOKENS)),
            429,
            "ThrottlingException",
            ErrorClass::Throttled(ThrottleKind::TokenRate),
        ),
        (
            ConverseError::ThrottlingException(throttling!(REQUESTS)),
            429,
            "ThrottlingException",
            ErrorClass::Throttled(ThrottleKind::RequestRate),
        ),
        (
            ConverseError::ThrottlingException(throttling!(OVERLOADED)),
            429,
            "ThrottlingException",
            ErrorClass::Throttled(ThrottleKind::ModelOverloaded),
        ),
        (
            ConverseError::ServiceUnavailableException(
                ServiceUnavailableException::builder()
                    .message(CONNECTIONS)
                    .meta(meta("ServiceUnavailableException", CONNECTIONS))
                    .build(),
            ),
            503,
            "ServiceUnavailableException",
            ErrorClass::Unavailable(UnavailableKind::ConnectionPool),
        ),
        (
            ConverseError::ServiceUnavailableException(
                ServiceUnavailableException::builder()
                    .message(UNAVAILABLE)
                    .meta(meta("ServiceUnavailableException", UNAVAILABLE))
                    .build(),
            ),
            503,
            "ServiceUnavailableException",
            ErrorClass::Unavailable(UnavailableKind::Service),
        ),
        (
            ConverseError::ModelNotReadyException(
                ModelNotReadyException::builder()
                    .meta(meta("ModelNotReadyException", "not ready"))
                    .build(),
            ),
            429,
            "ModelNotReadyException",
            ErrorClass::Throttled(ThrottleKind::ModelNotReady),
        ),
        (
            ConverseError::ModelTimeoutException(
                ModelTimeoutException::builder()
                    .meta(meta("ModelTimeoutException", "timed out"))
                    .build(),
            ),
            408,
            "ModelTimeoutException",
            ErrorClass::ModelTimeout,
        ),
        (
            ConverseError::ModelErrorException(
                ModelErrorException::builder()
                    .meta(meta("ModelErrorException", "bad"))
                    .build(),
            ),
            424,
            "ModelErrorException",
            ErrorClass::Client(ClientKind::ModelError),
        ),
        (
            ConverseError::ValidationException(
                ValidationException::builder()
                    .meta(meta(
                        "ValidationException",
                        "Input is too long for requested model.",
                    ))
                    .build(),
            ),
            400,
            "ValidationException",
            ErrorClass::Client(ClientKind::Validation),
        ),
        (
            ConverseError::AccessDeniedException(
                AccessDeniedException::builder()
                    .meta(meta("AccessDeniedException", "no"))
                    .build(),
            ),
            403,
            "AccessDeniedException",
            ErrorClass::Client(ClientKind::AccessDenied),
        ),
        (
            ConverseError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .meta(meta("ResourceNotFoundException", "no"))
                    .build(),
            ),
            404,
            "ResourceNotFoundException",
            ErrorClass::Client(ClientKind::NotFound),
        ),
        (
            ConverseError::InternalServerException(
                InternalServerException::builder()
                    .meta(meta("InternalServerException", "oops"))
                    .build(),
            ),
            500,
            "InternalServerException",
            ErrorClass::Unavailable(UnavailableKind::Service),
        ),
    ];
    for (err, status, code, class) in cases {
        let e = SdkError::service_error(err, raw(status, code));
        let c = classify_sdk_error(&e);
        assert_eq!(c.class, class, "{code} {status}");
        assert_eq!(c.status, Some(status));
        assert_eq!(c.code(), Some(code));
        assert_eq!(
            c.request_id.as_deref(),
            Some("7c0e3a6b-1d2f-4b1a-9f43-3d1c2b7a9e10")
        );
    }
}

#[test]
fn unhandled_errors_use_the_error_type_header() {
    // An unmodeled code: the SDK produces `Unhandled` with the metadata it
    // parsed; when even that is missing, the header decides.
    let err = ConverseError::generic(ErrorMetadata::builder().build());
    let e = SdkError::service_error(err, raw(503, "ServiceUnavailableException:http://x/"));
    let c = classify_sdk_error(&e);
    assert_eq!(c.class, ErrorClass::Unavailable(UnavailableKind::Service));
    assert_eq!(c.code(), Some("ServiceUnavailableException"));
}

#[test]
fn invoke_model_quota_exceeded() {
    // ServiceQuotaExceededException is modeled on InvokeModel, not Converse.
    let err = InvokeModelError::ServiceQuotaExceededException(
        ServiceQuotaExceededException::builder()
            .meta(meta("ServiceQuotaExceededException", "quota"))
            .build(),
    );
    let c = classify_sdk_error(&SdkError::service_error(
        err,
        raw(400, "ServiceQuotaExceededException"),
    ));
    assert_eq!(c.class, ErrorClass::QuotaExceeded);
}

#[test]
fn retry_after_header_becomes_the_hint() {
    let mut r = raw(429, "ThrottlingException");
    r.headers_mut().insert("Retry-After", "7");
    let e = SdkError::service_error(ConverseError::ThrottlingException(throttling!(TOKENS)), r);
    assert_eq!(
        classify_sdk_error(&e).retry_after,
        Some(std::time::Duration::from_secs(7))
    );
}

#[test]
fn every_operation_classifies() {
    let t = || throttling!(TOKENS);
    let tok = ErrorClass::Throttled(ThrottleKind::TokenRate);
    assert_eq!(
        classify_sdk_error(&SdkError::service_error(
            ConverseStreamError::ThrottlingException(t()),
            raw(429, "ThrottlingException")
        ))
        .class,
        tok
    );
    assert_eq!(
        classify_sdk_error(&SdkError::service_error(
            InvokeModelError::ThrottlingException(t()),
            raw(429, "ThrottlingException")
        ))
        .class,
        tok
    );
    assert_eq!(
        classify_sdk_error(&SdkError::service_error(
            InvokeModelWithResponseStreamError::ThrottlingException(t()),
            raw(429, "ThrottlingException")
        ))
        .class,
        tok
    );
    assert_eq!(
        classify_sdk_error(&SdkError::service_error(
            CountTokensError::ThrottlingException(t()),
            raw(429, "ThrottlingException")
        ))
        .class,
        tok
    );
    let pool = ServiceUnavailableException::builder()
        .message(CONNECTIONS)
        .meta(meta("ServiceUnavailableException", CONNECTIONS))
        .build();
    assert_eq!(
        classify_sdk_error(&SdkError::service_error(
            ConverseStreamError::ServiceUnavailableException(pool),
            raw(503, "ServiceUnavailableException")
        ))
        .class,
        ErrorClass::Unavailable(UnavailableKind::ConnectionPool)
    );
}

#[test]
fn dispatch_timeout_response_and_construction_failures() {
    let net = ErrorClass::Unavailable(UnavailableKind::Network);
    let io: SdkError<ConverseError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::io("connection reset by peer".into()));
    assert_eq!(classify_sdk_error(&io).class, net);
    assert_eq!(classify_sdk_error(&io).code(), Some("DispatchFailure"));

    let timeout: SdkError<ConverseError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::timeout("connect timed out".into()));
    assert_eq!(classify_sdk_error(&timeout).class, net);
    assert_eq!(classify_sdk_error(&timeout).code(), Some("ConnectTimeout"));

    let other: SdkError<ConverseError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::other("tls".into(), None));
    assert_eq!(classify_sdk_error(&other).class, net);

    let user: SdkError<ConverseError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::user("bad uri".into()));
    assert_eq!(
        classify_sdk_error(&user).class,
        ErrorClass::Client(ClientKind::Other)
    );

    let op_timeout: SdkError<InvokeModelError, HttpResponse> =
        SdkError::timeout_error("operation timed out");
    assert_eq!(classify_sdk_error(&op_timeout).class, net);
    assert_eq!(classify_sdk_error(&op_timeout).code(), Some("TimeoutError"));

    // A truncated 200 body: the SDK could not parse the response.
    let truncated: SdkError<ConverseError, HttpResponse> = SdkError::response_error(
        "unexpected EOF",
        HttpResponse::new(StatusCode::try_from(200).unwrap(), SdkBody::empty()),
    );
    let c = classify_sdk_error(&truncated);
    assert_eq!(c.class, net);
    assert_eq!(c.status, Some(200));

    // An unparseable 503 body still says 503.
    let garbled: SdkError<ConverseError, HttpResponse> =
        SdkError::response_error("bad json", raw(503, "ServiceUnavailableException"));
    assert_eq!(
        classify_sdk_error(&garbled).class,
        ErrorClass::Unavailable(UnavailableKind::Service)
    );

    let construction: SdkError<CountTokensError, HttpResponse> =
        SdkError::construction_failure("missing model id");
    assert_eq!(
        classify_sdk_error(&construction).class,
        ErrorClass::Client(ClientKind::Other)
    );
}

fn stream_raw() -> RawMessage {
    RawMessage::Decoded(Message::new(&b""[..]))
}

#[test]
fn in_stream_exceptions() {
    let e: SdkError<ConverseStreamOutputError, RawMessage> = SdkError::service_error(
        ConverseStreamOutputError::ThrottlingException(
            ThrottlingException::builder()
                .message(TOKENS)
                .meta(meta("throttlingException", TOKENS))
                .build(),
        ),
        stream_raw(),
    );
    let c = classify_stream_error(&e);
    assert_eq!(c.class, ErrorClass::Throttled(ThrottleKind::TokenRate));
    assert_eq!(c.status, None);

    let e: SdkError<ConverseStreamOutputError, RawMessage> = SdkError::service_error(
        ConverseStreamOutputError::ModelStreamErrorException(
            ModelStreamErrorException::builder()
                .meta(meta("modelStreamErrorException", "stream broke"))
                .build(),
        ),
        stream_raw(),
    );
    assert_eq!(
        classify_stream_error(&e).class,
        ErrorClass::Unavailable(UnavailableKind::Service)
    );

    let e: SdkError<ResponseStreamError, RawMessage> = SdkError::service_error(
        ResponseStreamError::ModelTimeoutException(
            ModelTimeoutException::builder()
                .meta(meta("modelTimeoutException", "slow"))
                .build(),
        ),
        stream_raw(),
    );
    assert_eq!(classify_stream_error(&e).class, ErrorClass::ModelTimeout);

    // The SDK leaves the code of in-stream exceptions empty: the variant
    // names it.
    let e: SdkError<ConverseStreamOutputError, RawMessage> = SdkError::service_error(
        ConverseStreamOutputError::ServiceUnavailableException(
            ServiceUnavailableException::builder()
                .message(CONNECTIONS)
                .meta(ErrorMetadata::builder().message(CONNECTIONS).build())
                .build(),
        ),
        stream_raw(),
    );
    let c = classify_stream_error(&e);
    assert_eq!(
        c.class,
        ErrorClass::Unavailable(UnavailableKind::ConnectionPool)
    );
    assert_eq!(c.code(), Some("ServiceUnavailableException"));

    // An exception we do not know still ended the stream: a service failure.
    let e: SdkError<ResponseStreamError, RawMessage> = SdkError::service_error(
        ResponseStreamError::generic(meta("brandNewException", "?")),
        stream_raw(),
    );
    assert_eq!(
        classify_stream_error(&e).class,
        ErrorClass::Unavailable(UnavailableKind::Service)
    );

    // A frame that could not be decoded.
    let e: SdkError<ResponseStreamError, RawMessage> =
        SdkError::response_error("bad prelude crc", RawMessage::Invalid(None));
    assert_eq!(
        classify_stream_error(&e).class,
        ErrorClass::Unavailable(UnavailableKind::Network)
    );
}

#[tokio::test]
async fn the_layer_keeps_the_sdk_error_as_the_source() {
    use std::error::Error;
    use tower::{Layer, ServiceExt, service_fn};
    use tower_bedrock_classify::{NoModel, ThrottleClassifyLayer};

    type Converse = SdkError<ConverseError, HttpResponse>;
    let svc = ThrottleClassifyLayer::new()
        .model_of(NoModel)
        .layer(service_fn(|_: ()| async {
            Err::<(), Converse>(SdkError::service_error(
                ConverseError::ThrottlingException(throttling!(TOKENS)),
                raw(429, "ThrottlingException"),
            ))
        }));
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Throttled(ThrottleKind::TokenRate));
    // source() is the SdkError itself: downcast and chain work.
    let source = err.source().unwrap();
    let sdk = source.downcast_ref::<Converse>().expect("the SdkError");
    assert!(
        sdk.as_service_error()
            .is_some_and(|e| e.is_throttling_exception())
    );
    assert!(source.source().is_some());
}
