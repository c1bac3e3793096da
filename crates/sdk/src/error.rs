//! Errors of this crate's own: a client configuration that cannot work, a
//! stream that went idle, a stream that failed before its first event, a
//! wait for a pooled connection that took too long.
//!
//! Errors of the unary Bedrock operations stay the SDK's own
//! `SdkError<OpError, HttpResponse>`; the streaming operations fail with
//! [`StreamOpenError`], the SDK's error or the stream's own failure before
//! its first event. The `ThrottleClassify` layer of
//! `tower-bedrock-classify` classifies both.

use std::fmt;
use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamError;
use aws_sdk_bedrockruntime::types::error::{ConverseStreamOutputError, ResponseStreamError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::event_stream::RawMessage;
use tower_bedrock_classify::{BedrockClassifier, Classifier, InStreamError, classify_sdk_error};
use tower_bedrock_core::{Classification, ErrorClass, LocalRejection, UnavailableKind};

use crate::stream::IDLE_TIMEOUT_CODE;

/// A client configuration that cannot work, reported by
/// [`BedrockClientBuilder::build`](crate::BedrockClientBuilder::build).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientBuildError {
    /// A timeout was set to zero.
    #[error("the {0} timeout must be longer than zero")]
    ZeroTimeout(&'static str),
    /// The per-attempt timeout is longer than the whole operation's.
    #[error(
        "the operation attempt timeout ({attempt:?}) must not exceed the operation timeout ({operation:?})"
    )]
    AttemptLongerThanOperation {
        /// The attempt timeout.
        attempt: Duration,
        /// The operation timeout.
        operation: Duration,
    },
    /// The connection cap was set to zero.
    #[error("max_connections_per_host must be greater than zero")]
    ZeroConnections,
    /// The endpoint override is not an absolute `http://` or `https://`
    /// URL.
    #[error("endpoint url {0:?} is not an absolute http(s) URL")]
    BadEndpoint(String),
    /// No region was given and the default provider chain found none.
    #[error("no region configured (set one on the builder or through AWS_REGION)")]
    MissingRegion,
    /// No credentials provider could be set up.
    #[error("no credentials provider configured")]
    MissingCredentials,
}

/// A wait for a connection slot (see
/// [`ConnectionCapLayer`](crate::ConnectionCapLayer)) that exceeded the
/// configured pool wait timeout. The SDK sees it as a connector timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no connection slot to {host_hint} freed within {waited:?}")]
pub struct PoolWaitTimeout {
    /// How long the request waited.
    pub waited: Duration,
    /// `host` or `host:port` (no path, no query).
    host_hint: HostHint,
}

impl PoolWaitTimeout {
    pub(crate) fn new(waited: Duration, host: &str) -> Self {
        PoolWaitTimeout {
            waited,
            host_hint: HostHint::new(host),
        }
    }

    /// The host whose connections were all busy.
    pub fn host(&self) -> &str {
        self.host_hint.as_str()
    }
}

/// A bounded, inline copy of a host name (errors stay `Copy` and never
/// allocate).
#[derive(Clone, Copy, PartialEq, Eq)]
struct HostHint {
    len: u8,
    bytes: [u8; 64],
}

impl HostHint {
    fn new(host: &str) -> Self {
        let mut end = host.len().min(64);
        while !host.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; 64];
        bytes[..end].copy_from_slice(&host.as_bytes()[..end]);
        HostHint {
            len: end as u8,
            bytes,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for HostHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HostHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why reading the next event of a response stream failed.
///
/// Streams yield it wrapped in
/// [`ClassifiedError`](tower_bedrock_core::ClassifiedError), classified by
/// [`classify_stream_error`](crate::classify_stream_error)
/// (or as `Unavailable(Network)` with code `StreamIdleTimeout` for an idle
/// timeout).
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamError<E> {
    /// The SDK's receiver failed: an exception sent inside the stream
    /// (`ServiceError`), an undecodable frame (`ResponseError`) or a broken
    /// connection (`DispatchFailure`).
    Sdk(SdkError<E, RawMessage>),
    /// No event arrived within the idle timeout.
    IdleTimeout(Duration),
    /// The call's deadline passed before the stream's first event arrived
    /// (classified `Local(DeadlineExceeded)`: the caller's limit, not a
    /// failure of the model).
    Deadline,
}

impl<E> StreamError<E> {
    /// The SDK error, unless this is an idle timeout.
    pub fn as_sdk(&self) -> Option<&SdkError<E, RawMessage>> {
        match self {
            StreamError::Sdk(e) => Some(e),
            StreamError::IdleTimeout(_) | StreamError::Deadline => None,
        }
    }

    /// Whether the stream went idle.
    pub fn is_idle_timeout(&self) -> bool {
        matches!(self, StreamError::IdleTimeout(_))
    }
}

impl<E> fmt::Display for StreamError<E>
where
    E: std::error::Error + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Sdk(e) => write!(f, "event stream failed: {e}"),
            StreamError::IdleTimeout(d) => write!(f, "no stream event within {d:?}"),
            StreamError::Deadline => {
                f.write_str("the call's deadline passed before the stream's first event")
            }
        }
    }
}

impl<E> std::error::Error for StreamError<E>
where
    E: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::Sdk(e) => Some(e),
            StreamError::IdleTimeout(_) | StreamError::Deadline => None,
        }
    }
}

/// Why a streaming call (ConverseStream, InvokeModelWithResponseStream)
/// failed: its request failed, or its stream opened (HTTP 200) and failed
/// before its first event.
///
/// Bedrock reports some failures inside the stream after answering 200: a
/// `throttlingException` or `serviceUnavailableException` as the first
/// frame is as much a refusal of the call as a 429 or a 503 status.
/// [`BedrockService`](crate::BedrockService) therefore waits for the first
/// event before returning a stream, and returns such a failure as the
/// call's error, so that retry, breaker, budget and fallback handle it like
/// any failed call. [`BedrockClassifier`] classifies it (the default
/// classifier of `ThrottleClassifyLayer`): the request's error as any SDK
/// error, the stream's through
/// [`classify_stream_error`](tower_bedrock_classify::classify_stream_error)
/// (an idle timeout is `Unavailable(Network)`, code `StreamIdleTimeout`),
/// with the call's request id.
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamOpenError<O, E> {
    /// The request failed: an error status, a transport failure, a
    /// timeout (the SDK's own error, as for any operation).
    Request(SdkError<O, HttpResponse>),
    /// The stream opened but failed before its first event.
    FirstEvent {
        /// The stream's failure.
        error: StreamError<E>,
        /// The request id of the call, when the response carried one.
        request_id: Option<String>,
    },
}

/// The error of a ConverseStream call through
/// [`BedrockService`](crate::BedrockService).
pub type ConverseStreamCallError = StreamOpenError<ConverseStreamError, ConverseStreamOutputError>;

/// The error of an InvokeModelWithResponseStream call through
/// [`BedrockService`](crate::BedrockService).
pub type InvokeModelStreamCallError =
    StreamOpenError<InvokeModelWithResponseStreamError, ResponseStreamError>;

impl<O, E> StreamOpenError<O, E> {
    /// The request's error, unless the stream failed after opening.
    pub fn as_request(&self) -> Option<&SdkError<O, HttpResponse>> {
        match self {
            StreamOpenError::Request(e) => Some(e),
            StreamOpenError::FirstEvent { .. } => None,
        }
    }

    /// The stream's failure before its first event, if that is what
    /// happened.
    pub fn as_first_event(&self) -> Option<&StreamError<E>> {
        match self {
            StreamOpenError::Request(_) => None,
            StreamOpenError::FirstEvent { error, .. } => Some(error),
        }
    }

    /// Whether the failure arrived inside the stream (after HTTP 200).
    pub fn is_in_stream(&self) -> bool {
        matches!(self, StreamOpenError::FirstEvent { .. })
    }
}

impl<O, E> fmt::Display for StreamOpenError<O, E>
where
    O: std::error::Error + 'static,
    E: std::error::Error + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamOpenError::Request(e) => write!(f, "stream request failed: {e}"),
            StreamOpenError::FirstEvent { error, .. } => {
                write!(f, "stream failed before its first event: {error}")
            }
        }
    }
}

impl<O, E> std::error::Error for StreamOpenError<O, E>
where
    O: std::error::Error + 'static,
    E: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamOpenError::Request(e) => Some(e),
            StreamOpenError::FirstEvent { error, .. } => Some(error),
        }
    }
}

/// Classifies a stream's failure (an in-stream exception, a broken
/// connection, an idle timeout).
pub(crate) fn classify_stream_failure<E: InStreamError>(e: &StreamError<E>) -> Classification {
    match e {
        StreamError::Sdk(e) => tower_bedrock_classify::classify_stream_error(e),
        StreamError::IdleTimeout(_) => {
            Classification::new(ErrorClass::Unavailable(UnavailableKind::Network))
                .with_code(IDLE_TIMEOUT_CODE)
        }
        StreamError::Deadline => {
            Classification::new(ErrorClass::Local(LocalRejection::DeadlineExceeded))
        }
    }
}

impl<O, E> Classifier<StreamOpenError<O, E>> for BedrockClassifier
where
    O: ProvideErrorMetadata,
    E: InStreamError,
{
    fn classify(&self, error: &StreamOpenError<O, E>) -> Classification {
        match error {
            StreamOpenError::Request(e) => classify_sdk_error(e),
            StreamOpenError::FirstEvent { error, request_id } => {
                let mut c = classify_stream_failure(error);
                if c.request_id.is_none() {
                    c.request_id.clone_from(request_id);
                }
                c
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_hint_is_bounded_on_char_boundaries() {
        let long = "é".repeat(40);
        let e = PoolWaitTimeout::new(Duration::from_secs(1), &long);
        assert_eq!(e.host().len(), 64);
        assert_eq!(e.host(), "é".repeat(32));
        let e = PoolWaitTimeout::new(Duration::from_millis(5), "127.0.0.1:80");
        assert_eq!(
            e.to_string(),
            "no connection slot to 127.0.0.1:80 freed within 5ms"
        );
    }
}
