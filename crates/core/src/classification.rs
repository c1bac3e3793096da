use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::ErrorClass;

/// What the stack knows about one failure: its class and the metadata that
/// is safe to log.
///
/// A `Classification` never carries a request or response body, a prompt, a
/// completion or a credential. The error *message* is deliberately absent:
/// Bedrock messages can echo parts of the input (validation errors quote
/// fields), so only the code is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The class of the failure.
    pub class: ErrorClass,
    /// How long the server (or a local layer) suggests to wait before trying
    /// again, when known.
    pub retry_after: Option<Duration>,
    /// The HTTP status code, when the failure came with a response.
    pub status: Option<u16>,
    /// The normalized error code (`ThrottlingException`, ...), when known.
    pub code: Option<Cow<'static, str>>,
    /// The AWS request id (`x-amzn-RequestId`), when known.
    pub request_id: Option<String>,
}

impl Classification {
    /// A classification with only a class.
    pub const fn new(class: ErrorClass) -> Self {
        Classification {
            class,
            retry_after: None,
            status: None,
            code: None,
            request_id: None,
        }
    }

    /// Sets the retry hint.
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Sets the HTTP status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the error code.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets the request id.
    #[must_use]
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// The code as a `&str`, when known.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for Classification {
    /// `"<class>[: <code>][, HTTP <status>][, request id <id>][, retry after <d>]"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.class)?;
        if let Some(code) = &self.code {
            write!(f, ": {code}")?;
        }
        if let Some(status) = self.status {
            write!(f, ", HTTP {status}")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, ", request id {id}")?;
        }
        if let Some(after) = self.retry_after {
            write!(f, ", retry after {after:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LocalRejection, UnavailableKind};

    #[test]
    fn display_names_class_code_status_and_id() {
        let c = Classification::new(ErrorClass::Unavailable(UnavailableKind::ConnectionPool))
            .with_status(503)
            .with_code("ServiceUnavailableException")
            .with_request_id("abc-123");
        assert_eq!(
            c.to_string(),
            "unavailable (connection pool): ServiceUnavailableException, HTTP 503, request id abc-123"
        );
        let l = Classification::new(ErrorClass::Local(LocalRejection::CircuitOpen))
            .with_retry_after(Duration::from_millis(1500));
        assert_eq!(
            l.to_string(),
            "rejected locally (circuit open), retry after 1.5s"
        );
    }
}
