//! [`ErrorReply`]: what a service built on the stack tells its own caller
//! when a call failed: a status from the error's class, the code, the
//! request id and when to come back; never a prompt, a completion or an
//! error message.
//!
//! The `axum` feature makes it an `IntoResponse` (HTTP status, JSON body,
//! `Retry-After`), the `tonic` feature a `tonic::Status` (gRPC code,
//! `grpc-retry-pushback-ms`); [`http_status`](ErrorReply::http_status)
//! and the accessors serve any other framework.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use tower_bedrock_core::{
    Classification, Classified, ClassifiedError, ClientKind, Clock, ErrorClass, LocalRejection,
    Rejection,
};

use crate::caller::InvalidTimeout;
use crate::stack::DEFAULT_WINDOW;

/// A failed call, as the caller of your service may see it.
///
/// Built from the stack's error ([`from_error`](Self::from_error), or
/// `?` / `From` on a [`ClassifiedError`] or a [`Rejection`]), or for your
/// own refusals ([`client`](Self::client)). It keeps only what is safe to
/// show: the [`ErrorClass`], the error code, the AWS request id and a retry
/// hint.
///
/// # Status by class
///
/// | class | HTTP | gRPC |
/// |---|---|---|
/// | `Throttled(_)`, `QuotaExceeded` | 429 | `RESOURCE_EXHAUSTED` |
/// | `Local(BudgetExhausted)` (shed by the budget) | 429 | `RESOURCE_EXHAUSTED` |
/// | `Unavailable(_)`, `Local(CircuitOpen)`, `Local(RetryBudgetExhausted)` | 503 | `UNAVAILABLE` |
/// | `Local(DeadlineExceeded)` with a retry hint (the budget had no room before the call's deadline, and says when it will) | 429 | `RESOURCE_EXHAUSTED` |
/// | `ModelTimeout`, `Local(DeadlineExceeded)` without a hint | 504 | `DEADLINE_EXCEEDED` |
/// | `Local(RequestTooLarge)` | 413 | `INVALID_ARGUMENT` |
/// | `Client(Validation)`, `Client(Other)` | 400 | `INVALID_ARGUMENT` |
/// | `Client(ModelError)` (the model failed on this input) | 422 | `INVALID_ARGUMENT` |
/// | `Client(AccessDenied)` | 403 | `PERMISSION_DENIED` |
/// | `Client(NotFound)` | 404 | `NOT_FOUND` |
/// | `Client(Conflict)` | 409 | `ABORTED` |
/// | `Unknown` | 502 | `UNKNOWN` |
///
/// # When to come back
///
/// [`retry_after`](Self::retry_after) is the error's own hint (a breaker's
/// open time, the budget's next room, a server's `Retry-After`); without
/// one, for throttles, unavailability and the stack's budget and breaker
/// refusals, the time until the next quota window opens (60 s windows by
/// default, see [`from_error_in`](Self::from_error_in)). Other classes
/// (client errors, daily quotas, timeouts) get none: coming back sooner or
/// later does not help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    class: ErrorClass,
    code: Option<Cow<'static, str>>,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    http_status: Option<u16>,
}

impl ErrorReply {
    /// The reply for an error of the stack, with 60 s quota windows on the
    /// system clock for the retry hint's fallback.
    pub fn from_error<E: Classified + ?Sized>(error: &E) -> Self {
        Self::from_classification(error.classification(), &Clock::system(), DEFAULT_WINDOW)
    }

    /// The reply for an error of the stack whose quota windows are `window`
    /// long on `clock` (a stack built with a compressed
    /// [`window`](crate::StackBuilder::window), a test clock).
    pub fn from_error_in<E: Classified + ?Sized>(
        error: &E,
        clock: &Clock,
        window: Duration,
    ) -> Self {
        Self::from_classification(error.classification(), clock, window)
    }

    /// The reply for a [`Classification`].
    pub fn from_classification(c: &Classification, clock: &Clock, window: Duration) -> Self {
        let retry_after = c.retry_after.or_else(|| {
            comes_back_later(&c.class)
                .then(|| clock.until_next_window(window))
                .filter(|d| !d.is_zero())
        });
        ErrorReply {
            class: c.class,
            code: c.code.clone(),
            request_id: c.request_id.clone(),
            retry_after,
            http_status: None,
        }
    }

    /// A refusal of your own: the caller's request is at fault (a missing
    /// field, an unknown tenant...). `code` names the problem for the
    /// caller's code (`EmptyPrompt`); it is not a message, and should
    /// never quote the request.
    pub fn client(kind: ClientKind, code: &'static str) -> Self {
        ErrorReply {
            class: ErrorClass::Client(kind),
            code: Some(Cow::Borrowed(code)),
            request_id: None,
            retry_after: None,
            http_status: None,
        }
    }

    /// Replaces the HTTP status the class gives (say `415` for a missing
    /// content type).
    #[must_use]
    pub fn with_http_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// The class of the failure.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The error code (`ThrottlingException`, ...), when known.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The AWS request id of the failed attempt, when known.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// When the caller may try again (see the type's docs).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up, at
    /// least 1 (the form of HTTP's `Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
    }

    /// The HTTP status for this reply (see the table on the type).
    pub fn http_status(&self) -> u16 {
        self.http_status.unwrap_or_else(|| {
            if self.is_shed() {
                429
            } else {
                http_status(&self.class)
            }
        })
    }

    /// A deadline refusal that knows when room comes back: the budget
    /// could not admit the call before its deadline. To the caller that is
    /// a shed (come back then), not a timeout.
    pub(crate) fn is_shed(&self) -> bool {
        self.class == ErrorClass::Local(LocalRejection::DeadlineExceeded)
            && self.retry_after.is_some()
    }
}

/// Whether a caller should come back later for an error of this class
/// (and is told when, at worst at the next quota window).
fn comes_back_later(class: &ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::Throttled(_)
            | ErrorClass::Unavailable(_)
            | ErrorClass::Local(
                LocalRejection::BudgetExhausted
                    | LocalRejection::CircuitOpen
                    | LocalRejection::RetryBudgetExhausted
            )
    )
}

/// The HTTP status of a class (see [`ErrorReply`]).
pub(crate) fn http_status(class: &ErrorClass) -> u16 {
    match class {
        ErrorClass::Throttled(_) | ErrorClass::QuotaExceeded => 429,
        ErrorClass::Unavailable(_) => 503,
        ErrorClass::ModelTimeout => 504,
        ErrorClass::Local(kind) => match kind {
            LocalRejection::BudgetExhausted => 429,
            LocalRejection::RequestTooLarge => 413,
            LocalRejection::CircuitOpen | LocalRejection::RetryBudgetExhausted => 503,
            LocalRejection::DeadlineExceeded => 504,
            _ => 503,
        },
        ErrorClass::Client(kind) => match kind {
            ClientKind::AccessDenied => 403,
            ClientKind::NotFound => 404,
            ClientKind::Conflict => 409,
            ClientKind::ModelError => 422,
            _ => 400,
        },
        _ => 502,
    }
}

impl fmt::Display for ErrorReply {
    /// `"<class>[: <code>][, request id <id>][, retry after <n>s]"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.class)?;
        if let Some(code) = &self.code {
            write!(f, ": {code}")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, ", request id {id}")?;
        }
        if let Some(secs) = self.retry_after_secs() {
            write!(f, ", retry after {secs}s")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorReply {}

impl<E> From<ClassifiedError<E>> for ErrorReply {
    fn from(e: ClassifiedError<E>) -> Self {
        ErrorReply::from_error(&e)
    }
}

impl From<Rejection> for ErrorReply {
    fn from(r: Rejection) -> Self {
        ErrorReply::from_error(&r)
    }
}

impl From<InvalidTimeout> for ErrorReply {
    /// `Client(Validation)`, code `InvalidTimeout`.
    fn from(_: InvalidTimeout) -> Self {
        ErrorReply::client(ClientKind::Validation, "InvalidTimeout")
    }
}
