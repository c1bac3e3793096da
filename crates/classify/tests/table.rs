//! Table-driven tests of `classify_parts`: every Bedrock Runtime error code,
//! every known message variant, wire forms, letter cases, status-only
//! answers, and garbage.

use tower_bedrock_classify::classify_parts;
use tower_bedrock_core::{ClientKind, ErrorClass, ThrottleKind, UnavailableKind};

const REQ: ErrorClass = ErrorClass::Throttled(ThrottleKind::RequestRate);
const TOK: ErrorClass = ErrorClass::Throttled(ThrottleKind::TokenRate);
const OVER: ErrorClass = ErrorClass::Throttled(ThrottleKind::ModelOverloaded);
const NOT_READY: ErrorClass = ErrorClass::Throttled(ThrottleKind::ModelNotReady);
const THR: ErrorClass = ErrorClass::Throttled(ThrottleKind::Unspecified);
const POOL: ErrorClass = ErrorClass::Unavailable(UnavailableKind::ConnectionPool);
const SVC: ErrorClass = ErrorClass::Unavailable(UnavailableKind::Service);
const NET: ErrorClass = ErrorClass::Unavailable(UnavailableKind::Network);
const VAL: ErrorClass = ErrorClass::Client(ClientKind::Validation);
const DENIED: ErrorClass = ErrorClass::Client(ClientKind::AccessDenied);
const NOT_FOUND: ErrorClass = ErrorClass::Client(ClientKind::NotFound);
const MODEL_ERR: ErrorClass = ErrorClass::Client(ClientKind::ModelError);
const CONFLICT: ErrorClass = ErrorClass::Client(ClientKind::Conflict);
const OTHER: ErrorClass = ErrorClass::Client(ClientKind::Other);

/// (status, code, message, expected class, expected canonical code)
type Row = (
    Option<u16>,
    Option<&'static str>,
    Option<&'static str>,
    ErrorClass,
    Option<&'static str>,
);

const ROWS: &[Row] = &[
    // --- 429 ThrottlingException, the three kinds, with the messages Bedrock sends.
    (
        Some(429),
        Some("ThrottlingException"),
        Some("Too many requests, please wait before trying again."),
        REQ,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        Some(
            "Too many requests, please wait before trying again. You have sent too many requests.  Wait before trying again.",
        ),
        REQ,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        Some("Your request rate is too high. Reduce the frequency of requests."),
        REQ,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        Some("Rate exceeded"),
        REQ,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        Some("Too many tokens, please wait before trying again."),
        TOK,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        Some("Too many tokens per minute, please wait before trying again."),
        TOK,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        Some("Too many tokens per day, please wait before trying again."),
        ErrorClass::QuotaExceeded,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        Some(
            "Model anthropic.claude-haiku-4-5-20251001-v1:0 is currently overloaded. Please try again later.",
        ),
        OVER,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        Some("The model is experiencing high demand. Please try again later."),
        OVER,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        Some("something we have never seen"),
        THR,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        None,
        THR,
        Some("ThrottlingException"),
    ),
    // --- 503 ServiceUnavailableException, the two kinds.
    (
        Some(503),
        Some("ServiceUnavailableException"),
        Some("Too many connections, please wait before trying again."),
        POOL,
        Some("ServiceUnavailableException"),
    ),
    (
        Some(503),
        Some("ServiceUnavailableException"),
        Some(
            "ServiceUnavailableException: An error occurred (ServiceUnavailableException) when calling the ConverseStream operation (reached max retries: 4): Too many connections, please wait before trying again.",
        ),
        POOL,
        Some("ServiceUnavailableException"),
    ),
    (
        Some(503),
        Some("ServiceUnavailableException"),
        Some("Service temporarily unavailable, please try again."),
        SVC,
        Some("ServiceUnavailableException"),
    ),
    (
        Some(503),
        Some("ServiceUnavailableException"),
        Some("Bedrock is unable to process your request."),
        SVC,
        Some("ServiceUnavailableException"),
    ),
    (
        Some(503),
        Some("ServiceUnavailableException"),
        Some("Model anthropic.claude-3-haiku is currently overloaded."),
        OVER,
        Some("ServiceUnavailableException"),
    ),
    // Overload's second face: a 503 saying the model is throttled (seen
    // from Bedrock beside the 429 "is currently overloaded").
    (
        Some(503),
        Some("ServiceUnavailableException"),
        Some("Model is getting throttled. Try your request again."),
        OVER,
        Some("ServiceUnavailableException"),
    ),
    (
        Some(503),
        Some("ServiceUnavailableException"),
        None,
        SVC,
        Some("ServiceUnavailableException"),
    ),
    // --- every other Bedrock Runtime code.
    (
        Some(429),
        Some("ModelNotReadyException"),
        Some("Model is not ready for inference. Wait and try your request again."),
        NOT_READY,
        Some("ModelNotReadyException"),
    ),
    (
        Some(408),
        Some("ModelTimeoutException"),
        Some("Model has timed out in processing the request. Try your request again."),
        ErrorClass::ModelTimeout,
        Some("ModelTimeoutException"),
    ),
    (
        Some(424),
        Some("ModelErrorException"),
        Some("The model failed to process the request."),
        MODEL_ERR,
        Some("ModelErrorException"),
    ),
    (
        Some(424),
        Some("ModelStreamErrorException"),
        Some("An error occurred while streaming the response. Retry your request."),
        SVC,
        Some("ModelStreamErrorException"),
    ),
    (
        Some(400),
        Some("ServiceQuotaExceededException"),
        Some("Your request exceeds the service quota for your account."),
        ErrorClass::QuotaExceeded,
        Some("ServiceQuotaExceededException"),
    ),
    (
        Some(400),
        Some("ValidationException"),
        Some("Input is too long for requested model."),
        VAL,
        Some("ValidationException"),
    ),
    (
        Some(400),
        Some("ValidationException"),
        Some("prompt is too long: 215000 tokens > 200000 maximum"),
        VAL,
        Some("ValidationException"),
    ),
    (
        Some(400),
        Some("ValidationException"),
        Some("The provided model identifier is invalid."),
        VAL,
        Some("ValidationException"),
    ),
    (
        Some(400),
        Some("ValidationException"),
        Some(
            "Invocation of model ID anthropic.claude-sonnet-4 with on-demand throughput isn't supported.",
        ),
        VAL,
        Some("ValidationException"),
    ),
    (
        Some(400),
        Some("ValidationException"),
        Some("Too many tokens, please wait before trying again."),
        TOK,
        Some("ValidationException"),
    ),
    (
        Some(403),
        Some("AccessDeniedException"),
        Some("You don't have access to the model with the specified model ID."),
        DENIED,
        Some("AccessDeniedException"),
    ),
    (
        Some(403),
        Some("AccessDeniedException"),
        Some("Your account is not authorized to invoke this API operation."),
        DENIED,
        Some("AccessDeniedException"),
    ),
    (
        Some(403),
        Some("UnrecognizedClientException"),
        Some("The security token included in the request is invalid."),
        DENIED,
        Some("UnrecognizedClientException"),
    ),
    (
        Some(403),
        Some("ExpiredTokenException"),
        Some("The security token included in the request is expired"),
        DENIED,
        Some("ExpiredTokenException"),
    ),
    (
        Some(403),
        Some("InvalidSignatureException"),
        None,
        DENIED,
        Some("InvalidSignatureException"),
    ),
    (
        Some(404),
        Some("ResourceNotFoundException"),
        Some("Could not resolve the foundation model from the provided model identifier."),
        NOT_FOUND,
        Some("ResourceNotFoundException"),
    ),
    (
        Some(500),
        Some("InternalServerException"),
        Some(
            "The system encountered an unexpected error during processing. Try your request again.",
        ),
        SVC,
        Some("InternalServerException"),
    ),
    (
        Some(409),
        Some("ConflictException"),
        None,
        CONFLICT,
        Some("ConflictException"),
    ),
    // --- wire forms of codes.
    (
        Some(429),
        Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        Some("Too many tokens, please wait before trying again."),
        TOK,
        Some("ThrottlingException"),
    ),
    (
        Some(503),
        Some("com.amazon.bedrock#ServiceUnavailableException"),
        Some("Too many connections, please wait before trying again."),
        POOL,
        Some("ServiceUnavailableException"),
    ),
    (
        Some(400),
        Some("com.amazonaws.bedrockruntime#ValidationException:http://internal"),
        None,
        VAL,
        Some("ValidationException"),
    ),
    (
        None,
        Some("  ThrottlingException  "),
        Some("Too many requests"),
        REQ,
        Some("ThrottlingException"),
    ),
    // --- in-stream exception names (camelCase, no status).
    (
        None,
        Some("throttlingException"),
        Some("Too many tokens, please wait before trying again."),
        TOK,
        Some("ThrottlingException"),
    ),
    (
        None,
        Some("serviceUnavailableException"),
        Some("Service temporarily unavailable, please try again."),
        SVC,
        Some("ServiceUnavailableException"),
    ),
    (
        None,
        Some("modelStreamErrorException"),
        Some("An error occurred"),
        SVC,
        Some("ModelStreamErrorException"),
    ),
    (
        None,
        Some("internalServerException"),
        None,
        SVC,
        Some("InternalServerException"),
    ),
    (
        None,
        Some("validationException"),
        Some("Malformed input request"),
        VAL,
        Some("ValidationException"),
    ),
    (
        None,
        Some("modelTimeoutException"),
        None,
        ErrorClass::ModelTimeout,
        Some("ModelTimeoutException"),
    ),
    // --- letter case of codes and messages.
    (
        Some(429),
        Some("THROTTLINGEXCEPTION"),
        Some("TOO MANY TOKENS, PLEASE WAIT BEFORE TRYING AGAIN."),
        TOK,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("throttlingexception"),
        Some("too many requests, please wait before trying again."),
        REQ,
        Some("ThrottlingException"),
    ),
    (
        Some(429),
        Some("ThrottlingException"),
        Some("MODEL X IS CURRENTLY OVERLOADED. PLEASE TRY AGAIN LATER."),
        OVER,
        Some("ThrottlingException"),
    ),
    (
        Some(503),
        Some("ServiceUnavailableException"),
        Some("TOO MANY CONNECTIONS"),
        POOL,
        Some("ServiceUnavailableException"),
    ),
    // --- generic AWS throttle / fault codes.
    (
        Some(400),
        Some("Throttling"),
        Some("Rate exceeded"),
        REQ,
        Some("Throttling"),
    ),
    (
        Some(429),
        Some("TooManyRequestsException"),
        None,
        THR,
        Some("TooManyRequestsException"),
    ),
    (
        Some(500),
        Some("InternalFailure"),
        None,
        SVC,
        Some("InternalFailure"),
    ),
    (
        Some(408),
        Some("RequestTimeout"),
        None,
        NET,
        Some("RequestTimeout"),
    ),
    // --- status only (code and message missing).
    (Some(429), None, None, THR, None),
    (
        Some(429),
        None,
        Some("Too many tokens, please wait before trying again."),
        TOK,
        None,
    ),
    (
        Some(429),
        None,
        Some("Too many requests, please wait before trying again."),
        REQ,
        None,
    ),
    (Some(503), None, None, SVC, None),
    (
        Some(503),
        None,
        Some("Too many connections, please wait before trying again."),
        POOL,
        None,
    ),
    (Some(500), None, None, SVC, None),
    (Some(502), None, None, SVC, None),
    (Some(504), None, None, SVC, None),
    (Some(599), None, None, SVC, None),
    (Some(408), None, None, ErrorClass::ModelTimeout, None),
    (Some(424), None, None, MODEL_ERR, None),
    (Some(400), None, None, VAL, None),
    (
        Some(400),
        None,
        Some("Too many tokens, please wait before trying again."),
        TOK,
        None,
    ),
    (Some(401), None, None, DENIED, None),
    (Some(403), None, None, DENIED, None),
    (Some(404), None, None, NOT_FOUND, None),
    (Some(409), None, None, CONFLICT, None),
    (Some(413), None, None, OTHER, None),
    (Some(200), None, None, ErrorClass::Unknown, None),
    (Some(0), None, None, ErrorClass::Unknown, None),
    (Some(65535), None, None, ErrorClass::Unknown, None),
    // --- unknown codes fall back on the status.
    (
        Some(429),
        Some("SomethingNew"),
        Some("Too many tokens"),
        TOK,
        Some("SomethingNew"),
    ),
    (
        Some(503),
        Some("SomethingNew"),
        None,
        SVC,
        Some("SomethingNew"),
    ),
    // --- message only.
    (
        None,
        None,
        Some("Too many tokens, please wait before trying again."),
        TOK,
        None,
    ),
    (
        None,
        None,
        Some("Too many requests, please wait before trying again."),
        REQ,
        None,
    ),
    (
        None,
        None,
        Some("Model x is currently overloaded. Please try again later."),
        OVER,
        None,
    ),
    (
        None,
        None,
        Some("Too many connections, please wait before trying again."),
        POOL,
        None,
    ),
    (
        None,
        None,
        Some("Service temporarily unavailable, please try again."),
        SVC,
        None,
    ),
    (
        None,
        None,
        Some("Input is too long for requested model."),
        VAL,
        None,
    ),
    // --- empty and garbage.
    (None, None, None, ErrorClass::Unknown, None),
    (None, Some(""), Some(""), ErrorClass::Unknown, None),
    (None, Some("   "), None, ErrorClass::Unknown, None),
    (
        None,
        Some("#:"),
        Some("\u{0}\u{1}\u{2}"),
        ErrorClass::Unknown,
        None,
    ),
    (
        None,
        None,
        Some("ünïcödé 🚀 速率 トークン"),
        ErrorClass::Unknown,
        None,
    ),
    (
        Some(429),
        None,
        Some("Слишком много запросов 🚀"),
        THR,
        None,
    ),
];

#[test]
fn every_row_of_the_table() {
    let mut failures = Vec::new();
    for (i, &(status, code, message, class, canonical)) in ROWS.iter().enumerate() {
        let c = classify_parts(status, code, message);
        if c.class != class || c.code() != canonical || c.status != status {
            failures.push(format!(
                "row {i}: ({status:?}, {code:?}, {message:?}) gave {:?} / {:?}, want {class:?} / {canonical:?}",
                c.class,
                c.code()
            ));
        }
        // Never a body: the classification keeps no message.
        assert!(c.retry_after.is_none() && c.request_id.is_none());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn too_many_tokens_is_never_a_context_window_error() {
    for status in [None, Some(400), Some(429)] {
        for code in [
            None,
            Some("ThrottlingException"),
            Some("ValidationException"),
        ] {
            let c = classify_parts(
                status,
                code,
                Some("Too many tokens, please wait before trying again."),
            );
            assert_eq!(c.class, TOK, "{status:?} {code:?}");
        }
    }
}

#[test]
fn very_long_messages_are_bounded_and_still_classified() {
    let mut long = String::from("Too many tokens, please wait before trying again. ");
    long.push_str(&"x".repeat(1_000_000));
    assert_eq!(classify_parts(Some(429), None, Some(&long)).class, TOK);
    // A phrase far past the scanned prefix is not read.
    let mut buried = "y".repeat(100_000);
    buried.push_str("too many tokens");
    assert_eq!(classify_parts(Some(429), None, Some(&buried)).class, THR);
}

#[test]
fn messages_never_reach_display() {
    let c = classify_parts(
        Some(400),
        Some("ValidationException"),
        Some("secret prompt text that must not leak"),
    );
    assert!(!c.to_string().contains("secret"));
    assert!(!format!("{c:?}").contains("secret"));
}
