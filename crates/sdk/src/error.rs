//! Errors of this crate's own: a client configuration that cannot work, a
//! stream that went idle, a wait for a pooled connection that took too
//! long.
//!
//! Errors of the Bedrock operations themselves stay the SDK's own
//! `SdkError<OpError, HttpResponse>`: the `ThrottleClassify` layer of
//! `tower-bedrock-classify` classifies them.

use std::fmt;
use std::time::Duration;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::event_stream::RawMessage;

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
}

impl<E> StreamError<E> {
    /// The SDK error, unless this is an idle timeout.
    pub fn as_sdk(&self) -> Option<&SdkError<E, RawMessage>> {
        match self {
            StreamError::Sdk(e) => Some(e),
            StreamError::IdleTimeout(_) => None,
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
            StreamError::IdleTimeout(_) => None,
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
