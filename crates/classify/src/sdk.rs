//! Classifiers for the errors of the official `aws-sdk-bedrockruntime`
//! client: `SdkError<E, HttpResponse>` of every operation (Converse,
//! ConverseStream, InvokeModel, InvokeModelWithResponseStream, CountTokens)
//! and `SdkError<E, RawMessage>` of the errors that arrive inside an event
//! stream.

use std::borrow::Cow;

use aws_sdk_bedrockruntime::types::error::{ConverseStreamOutputError, ResponseStreamError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::{DispatchFailure, SdkError};
use aws_smithy_runtime_api::http::Headers;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::event_stream::RawMessage;
use tower_bedrock_core::{Classification, ClientKind, ErrorClass, UnavailableKind};

use crate::classify_parts;
use crate::headers::{
    ERROR_TYPE_HEADER, REQUEST_ID_HEADER, parse_retry_after, sanitize_request_id,
};

/// Classifies an error of any Bedrock Runtime operation.
///
/// | `SdkError` variant | class |
/// |---|---|
/// | `ServiceError` | [`classify_parts`] of status, code (modeled, else `x-amzn-ErrorType`) and message; request id and `Retry-After` from the response |
/// | `DispatchFailure` (io, timeout, other) | `Unavailable(Network)`; a *user* dispatch failure is `Client(Other)` |
/// | `TimeoutError` | `Unavailable(Network)` (an SDK operation or attempt timeout) |
/// | `ResponseError` | by status when it is an error status, else `Unavailable(Network)` (a truncated or unreadable response) |
/// | `ConstructionFailure` | `Client(Other)` (the request could not be built) |
///
/// ```
/// use aws_sdk_bedrockruntime::error::SdkError;
/// use aws_sdk_bedrockruntime::operation::converse::ConverseError;
/// use aws_sdk_bedrockruntime::types::error::ThrottlingException;
/// use aws_smithy_runtime_api::http::{Response, StatusCode};
/// use aws_smithy_types::body::SdkBody;
/// use tower_bedrock_classify::classify_sdk_error;
/// use tower_bedrock_core::{ErrorClass, ThrottleKind};
///
/// let err = ConverseError::ThrottlingException(
///     ThrottlingException::builder()
///         .message("Too many requests, please wait before trying again.")
///         .meta(aws_smithy_types::error::ErrorMetadata::builder()
///             .code("ThrottlingException")
///             .message("Too many requests, please wait before trying again.")
///             .build())
///         .build(),
/// );
/// let raw = Response::new(StatusCode::try_from(429).unwrap(), SdkBody::empty());
/// let sdk_err = SdkError::service_error(err, raw);
/// let c = classify_sdk_error(&sdk_err);
/// assert_eq!(c.class, ErrorClass::Throttled(ThrottleKind::RequestRate));
/// ```
pub fn classify_sdk_error<E>(error: &SdkError<E, HttpResponse>) -> Classification
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(ctx) => {
            let raw = ctx.raw();
            let err = ctx.err();
            let headers = raw.headers();
            let code = err.code().or_else(|| headers.get(ERROR_TYPE_HEADER));
            let mut c = classify_parts(Some(raw.status().as_u16()), code, err.message());
            add_response_metadata(&mut c, headers);
            c
        }
        SdkError::ResponseError(ctx) => {
            let raw = ctx.raw();
            let headers = raw.headers();
            let status = raw.status().as_u16();
            let mut c = if status >= 400 {
                classify_parts(Some(status), headers.get(ERROR_TYPE_HEADER), None)
            } else {
                Classification::new(ErrorClass::Unknown)
            };
            if c.class == ErrorClass::Unknown {
                c.class = ErrorClass::Unavailable(UnavailableKind::Network);
                c.code = Some(Cow::Borrowed("ResponseError"));
            }
            c.status = Some(status);
            add_response_metadata(&mut c, headers);
            c
        }
        other => classify_transport(other),
    }
}

/// An exception type of a Bedrock response stream
/// (`ConverseStreamOutputError`, `ResponseStreamError`).
///
/// The SDK decodes in-stream exceptions into their variant (from the
/// frame's `:exception-type` header) but leaves the error metadata's code
/// empty, so a classifier reading only the metadata sees no code. This
/// names the code from the variant.
pub trait InStreamError: ProvideErrorMetadata {
    /// The Bedrock error code of this exception (`ThrottlingException`...),
    /// when it is a modeled one.
    fn exception_code(&self) -> Option<&'static str>;
}

impl InStreamError for ConverseStreamOutputError {
    fn exception_code(&self) -> Option<&'static str> {
        Some(match self {
            ConverseStreamOutputError::ThrottlingException(_) => "ThrottlingException",
            ConverseStreamOutputError::ServiceUnavailableException(_) => {
                "ServiceUnavailableException"
            }
            ConverseStreamOutputError::InternalServerException(_) => "InternalServerException",
            ConverseStreamOutputError::ModelStreamErrorException(_) => "ModelStreamErrorException",
            ConverseStreamOutputError::ValidationException(_) => "ValidationException",
            _ => return None,
        })
    }
}

impl InStreamError for ResponseStreamError {
    fn exception_code(&self) -> Option<&'static str> {
        Some(match self {
            ResponseStreamError::ThrottlingException(_) => "ThrottlingException",
            ResponseStreamError::ServiceUnavailableException(_) => "ServiceUnavailableException",
            ResponseStreamError::InternalServerException(_) => "InternalServerException",
            ResponseStreamError::ModelStreamErrorException(_) => "ModelStreamErrorException",
            ResponseStreamError::ValidationException(_) => "ValidationException",
            ResponseStreamError::ModelTimeoutException(_) => "ModelTimeoutException",
            _ => return None,
        })
    }
}

/// Classifies an error read from a ConverseStream or
/// InvokeModelWithResponseStream event stream (`EventReceiver::recv`).
///
/// Modeled in-stream exceptions (`throttlingException`,
/// `serviceUnavailableException`, `modelStreamErrorException`,
/// `internalServerException`, `validationException`,
/// `modelTimeoutException`) go through [`classify_parts`] without a status,
/// with the code from the metadata or, as the SDK leaves it empty, from the
/// variant ([`InStreamError`]); an exception naming nothing known is
/// `Unavailable(Service)` (it ended the response); an undecodable frame or a
/// broken connection is `Unavailable(Network)`.
pub fn classify_stream_error<E>(error: &SdkError<E, RawMessage>) -> Classification
where
    E: InStreamError,
{
    match error {
        SdkError::ServiceError(ctx) => {
            let err = ctx.err();
            let code = err.code().or_else(|| err.exception_code());
            let mut c = classify_parts(None, code, err.message());
            if c.class == ErrorClass::Unknown {
                // An exception inside a stream that names nothing we know
                // still ended the response: the service failed it.
                c.class = ErrorClass::Unavailable(UnavailableKind::Service);
            }
            c
        }
        SdkError::ResponseError(_) => {
            Classification::new(ErrorClass::Unavailable(UnavailableKind::Network))
                .with_code("ResponseError")
        }
        other => classify_transport(other),
    }
}

/// The variants that carry no answer from Bedrock, alike for operations and
/// event streams.
fn classify_transport<E, R>(error: &SdkError<E, R>) -> Classification {
    match error {
        SdkError::DispatchFailure(failure) => classify_dispatch(failure),
        SdkError::TimeoutError(_) => {
            Classification::new(ErrorClass::Unavailable(UnavailableKind::Network))
                .with_code("TimeoutError")
        }
        SdkError::ConstructionFailure(_) => {
            Classification::new(ErrorClass::Client(ClientKind::Other))
                .with_code("ConstructionFailure")
        }
        _ => Classification::new(ErrorClass::Unknown),
    }
}

fn classify_dispatch(failure: &DispatchFailure) -> Classification {
    if failure.is_user() {
        Classification::new(ErrorClass::Client(ClientKind::Other)).with_code("DispatchFailure")
    } else if failure.is_timeout() {
        Classification::new(ErrorClass::Unavailable(UnavailableKind::Network))
            .with_code("ConnectTimeout")
    } else {
        Classification::new(ErrorClass::Unavailable(UnavailableKind::Network))
            .with_code("DispatchFailure")
    }
}

/// Adds the request id and a `Retry-After` hint (seconds) from response
/// headers. Nothing else of the response is read.
fn add_response_metadata(c: &mut Classification, headers: &Headers) {
    if let Some(id) = headers.get(REQUEST_ID_HEADER) {
        c.request_id = sanitize_request_id(id);
    }
    if let Some(after) = headers.get("retry-after").and_then(parse_retry_after) {
        c.retry_after = Some(after);
    }
}
