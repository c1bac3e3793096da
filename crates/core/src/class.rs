use std::fmt;

/// What kind of failure an error is: the taxonomy every layer decides from.
///
/// | class | typical Bedrock answer | retried? | trips a breaker? | falls back? |
/// |---|---|---|---|---|
/// | [`Throttled`](Self::Throttled) | 429 `ThrottlingException` | rate: after the window; overload: no | overload only | overload |
/// | [`Unavailable`](Self::Unavailable) | 503, 500, transport failures | yes, with backoff | yes, except a full connection pool | service errors (not network or pool: one endpoint and pool serve every model) |
/// | [`ModelTimeout`](Self::ModelTimeout) | 408 `ModelTimeoutException` | once | yes | no |
/// | [`QuotaExceeded`](Self::QuotaExceeded) | 400 `ServiceQuotaExceededException` | no | no | configurable |
/// | [`Client`](Self::Client) | 400/403/404/409/424 | never | never | never |
/// | [`Local`](Self::Local) | refused by this stack | never (an open circuit is waited out when opted in, as the preset does without a fallback) | never | budget / circuit |
/// | [`Unknown`](Self::Unknown) | anything else | no | no | no |
///
/// The columns give the defaults of the layers in this workspace; each layer
/// documents its own table and lets it be overridden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// HTTP 429 and friends: the request was refused for quota or capacity.
    Throttled(ThrottleKind),
    /// HTTP 503/500 or a transport failure: the service could not answer.
    Unavailable(UnavailableKind),
    /// HTTP 408 `ModelTimeoutException`: the model took too long.
    ModelTimeout,
    /// `ServiceQuotaExceededException`: a daily or account quota is spent;
    /// waiting a minute does not help.
    QuotaExceeded,
    /// The caller's own fault: never retried, never trips a breaker, never
    /// falls back.
    Client(ClientKind),
    /// Refused by a layer of this stack without reaching Bedrock.
    Local(LocalRejection),
    /// Nothing matched: treated conservatively (not retried, not counted).
    Unknown,
}

/// The three (plus two) kinds of Bedrock throttles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ThrottleKind {
    /// "Too many requests, please wait before trying again." (RPM)
    RequestRate,
    /// "Too many tokens, please wait before trying again." (TPM)
    TokenRate,
    /// "Model … is currently overloaded. Please try again later."
    ModelOverloaded,
    /// `ModelNotReadyException`: the model is being loaded or scaled.
    ModelNotReady,
    /// A throttle whose message matched no known variant (treated like a
    /// rate throttle by the retry layer).
    Unspecified,
}

/// The kinds of unavailability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnavailableKind {
    /// 503 "Too many connections": usually the client's own pool is too
    /// small or a client is built per request.
    ConnectionPool,
    /// Other 503s, 500 `InternalServerException`, in-stream service errors.
    Service,
    /// Dispatch failures, connection resets, truncated responses and
    /// transport timeouts: the request may or may not have reached Bedrock.
    Network,
}

/// The kinds of caller faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientKind {
    /// 400 `ValidationException` (includes context-window overflows).
    Validation,
    /// 403 `AccessDeniedException` (and unrecognized credentials).
    AccessDenied,
    /// 404 `ResourceNotFoundException`.
    NotFound,
    /// 424 `ModelErrorException`: the model failed on this input.
    ModelError,
    /// 409 `ConflictException`.
    Conflict,
    /// The request could not be built or sent as given (SDK construction
    /// failures, other 4xx).
    Other,
}

/// Why a layer of this stack refused a request without sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LocalRejection {
    /// The token budget had no room within the maximum wait.
    BudgetExhausted,
    /// The request alone is larger than the whole budget window: it can
    /// never be admitted.
    RequestTooLarge,
    /// The model's circuit breaker is open (or its half-open probes are
    /// taken).
    CircuitOpen,
    /// The retry budget is spent: no more retries for now.
    RetryBudgetExhausted,
    /// The call's deadline does not leave room for another attempt.
    DeadlineExceeded,
}

impl ErrorClass {
    /// A short, stable, lowercase label for metrics: `throttled`,
    /// `unavailable`, `model_timeout`, `quota_exceeded`, `client`, `local`,
    /// `unknown`.
    pub const fn label(&self) -> &'static str {
        match self {
            ErrorClass::Throttled(_) => "throttled",
            ErrorClass::Unavailable(_) => "unavailable",
            ErrorClass::ModelTimeout => "model_timeout",
            ErrorClass::QuotaExceeded => "quota_exceeded",
            ErrorClass::Client(_) => "client",
            ErrorClass::Local(_) => "local",
            ErrorClass::Unknown => "unknown",
        }
    }

    /// A short, stable, lowercase label of the kind within the class, for
    /// metrics (`token_rate`, `connection_pool`, `circuit_open`, ...). Classes
    /// without kinds repeat their class label.
    pub const fn kind_label(&self) -> &'static str {
        match self {
            ErrorClass::Throttled(k) => k.label(),
            ErrorClass::Unavailable(k) => k.label(),
            ErrorClass::Client(k) => k.label(),
            ErrorClass::Local(k) => k.label(),
            other => other.label(),
        }
    }

    /// Whether this is a throttle of any kind.
    pub const fn is_throttle(&self) -> bool {
        matches!(self, ErrorClass::Throttled(_))
    }

    /// Whether this is a request-rate, token-rate or unspecified throttle:
    /// the quota-window kinds that clear when the window moves on.
    pub const fn is_rate_throttle(&self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled(
                ThrottleKind::RequestRate | ThrottleKind::TokenRate | ThrottleKind::Unspecified
            )
        )
    }

    /// Whether this is a refusal by a layer of this stack.
    pub const fn is_local(&self) -> bool {
        matches!(self, ErrorClass::Local(_))
    }

    /// Whether this is the caller's own fault.
    pub const fn is_client(&self) -> bool {
        matches!(self, ErrorClass::Client(_))
    }

    /// Whether the failure says something about the model's or the
    /// service's health (unavailability, model timeouts, overload, not
    /// ready). Quota throttles, client errors and local rejections do not.
    pub const fn is_health_failure(&self) -> bool {
        matches!(
            self,
            ErrorClass::Unavailable(_)
                | ErrorClass::ModelTimeout
                | ErrorClass::Throttled(
                    ThrottleKind::ModelOverloaded | ThrottleKind::ModelNotReady
                )
        )
    }
}

impl ThrottleKind {
    /// Stable metric label.
    pub const fn label(&self) -> &'static str {
        match self {
            ThrottleKind::RequestRate => "request_rate",
            ThrottleKind::TokenRate => "token_rate",
            ThrottleKind::ModelOverloaded => "model_overloaded",
            ThrottleKind::ModelNotReady => "model_not_ready",
            ThrottleKind::Unspecified => "unspecified",
        }
    }
}

impl UnavailableKind {
    /// Stable metric label.
    pub const fn label(&self) -> &'static str {
        match self {
            UnavailableKind::ConnectionPool => "connection_pool",
            UnavailableKind::Service => "service",
            UnavailableKind::Network => "network",
        }
    }
}

impl ClientKind {
    /// Stable metric label.
    pub const fn label(&self) -> &'static str {
        match self {
            ClientKind::Validation => "validation",
            ClientKind::AccessDenied => "access_denied",
            ClientKind::NotFound => "not_found",
            ClientKind::ModelError => "model_error",
            ClientKind::Conflict => "conflict",
            ClientKind::Other => "other",
        }
    }
}

impl LocalRejection {
    /// Stable metric label.
    pub const fn label(&self) -> &'static str {
        match self {
            LocalRejection::BudgetExhausted => "budget_exhausted",
            LocalRejection::RequestTooLarge => "request_too_large",
            LocalRejection::CircuitOpen => "circuit_open",
            LocalRejection::RetryBudgetExhausted => "retry_budget_exhausted",
            LocalRejection::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = |f: &mut fmt::Formatter<'_>, class: &str, kind: &str| {
            write!(f, "{class} ({})", kind.replace('_', " "))
        };
        match self {
            ErrorClass::Throttled(k) => kind(f, "throttled", k.label()),
            ErrorClass::Unavailable(k) => kind(f, "unavailable", k.label()),
            ErrorClass::Client(k) => kind(f, "client error", k.label()),
            ErrorClass::Local(k) => kind(f, "rejected locally", k.label()),
            ErrorClass::ModelTimeout => f.write_str("model timeout"),
            ErrorClass::QuotaExceeded => f.write_str("service quota exceeded"),
            ErrorClass::Unknown => f.write_str("unknown error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_display() {
        let c = ErrorClass::Throttled(ThrottleKind::TokenRate);
        assert_eq!(c.label(), "throttled");
        assert_eq!(c.kind_label(), "token_rate");
        assert_eq!(c.to_string(), "throttled (token rate)");
        assert_eq!(ErrorClass::ModelTimeout.kind_label(), "model_timeout");
        assert_eq!(
            ErrorClass::Local(LocalRejection::CircuitOpen).to_string(),
            "rejected locally (circuit open)"
        );
    }

    #[test]
    fn predicates() {
        assert!(ErrorClass::Throttled(ThrottleKind::Unspecified).is_rate_throttle());
        assert!(!ErrorClass::Throttled(ThrottleKind::ModelOverloaded).is_rate_throttle());
        assert!(ErrorClass::Throttled(ThrottleKind::ModelOverloaded).is_health_failure());
        assert!(!ErrorClass::Throttled(ThrottleKind::TokenRate).is_health_failure());
        assert!(ErrorClass::Unavailable(UnavailableKind::Network).is_health_failure());
        assert!(!ErrorClass::Client(ClientKind::Validation).is_health_failure());
        assert!(!ErrorClass::QuotaExceeded.is_health_failure());
        assert!(ErrorClass::Local(LocalRejection::BudgetExhausted).is_local());
    }
}
