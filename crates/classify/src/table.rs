//! The pure decision table: status, code and message in, [`Classification`] out.

use std::borrow::Cow;

use tower_bedrock_core::{Classification, ClientKind, ErrorClass, ThrottleKind, UnavailableKind};

/// How much of a message is inspected. Bedrock's messages are short; a
/// longer one is garbage or a quoted input, and reading all of it would only
/// cost time.
const MESSAGE_SCAN_CHARS: usize = 512;
/// Longest error code kept verbatim (unknown codes are truncated).
const MAX_CODE_LEN: usize = 64;

/// The error codes Bedrock Runtime (and the AWS front end before it) sends,
/// in canonical form, with their base class. The message may refine a class
/// afterwards (see [`classify_parts`]).
const CODES: &[(&str, Base)] = &[
    ("ThrottlingException", Base::Throttle),
    ("ServiceUnavailableException", Base::Unavailable),
    (
        "ModelNotReadyException",
        Base::Class(ErrorClass::Throttled(ThrottleKind::ModelNotReady)),
    ),
    (
        "ModelTimeoutException",
        Base::Class(ErrorClass::ModelTimeout),
    ),
    (
        "ModelErrorException",
        Base::Class(ErrorClass::Client(ClientKind::ModelError)),
    ),
    (
        "ModelStreamErrorException",
        Base::Class(ErrorClass::Unavailable(UnavailableKind::Service)),
    ),
    (
        "ServiceQuotaExceededException",
        Base::Class(ErrorClass::QuotaExceeded),
    ),
    ("ValidationException", Base::Validation),
    (
        "AccessDeniedException",
        Base::Class(ErrorClass::Client(ClientKind::AccessDenied)),
    ),
    (
        "ResourceNotFoundException",
        Base::Class(ErrorClass::Client(ClientKind::NotFound)),
    ),
    (
        "InternalServerException",
        Base::Class(ErrorClass::Unavailable(UnavailableKind::Service)),
    ),
    (
        "ConflictException",
        Base::Class(ErrorClass::Client(ClientKind::Conflict)),
    ),
    // Codes of the AWS front end (authentication, generic throttles and faults).
    (
        "UnrecognizedClientException",
        Base::Class(ErrorClass::Client(ClientKind::AccessDenied)),
    ),
    (
        "InvalidSignatureException",
        Base::Class(ErrorClass::Client(ClientKind::AccessDenied)),
    ),
    (
        "ExpiredTokenException",
        Base::Class(ErrorClass::Client(ClientKind::AccessDenied)),
    ),
    (
        "MissingAuthenticationTokenException",
        Base::Class(ErrorClass::Client(ClientKind::AccessDenied)),
    ),
    (
        "IncompleteSignatureException",
        Base::Class(ErrorClass::Client(ClientKind::AccessDenied)),
    ),
    (
        "InvalidClientTokenId",
        Base::Class(ErrorClass::Client(ClientKind::AccessDenied)),
    ),
    (
        "SignatureDoesNotMatch",
        Base::Class(ErrorClass::Client(ClientKind::AccessDenied)),
    ),
    ("Throttling", Base::Throttle),
    ("ThrottledException", Base::Throttle),
    ("TooManyRequestsException", Base::Throttle),
    ("RequestLimitExceeded", Base::Throttle),
    ("RequestThrottled", Base::Throttle),
    ("RequestThrottledException", Base::Throttle),
    ("SlowDown", Base::Throttle),
    ("ServiceUnavailable", Base::Unavailable),
    (
        "InternalFailure",
        Base::Class(ErrorClass::Unavailable(UnavailableKind::Service)),
    ),
    (
        "InternalServerError",
        Base::Class(ErrorClass::Unavailable(UnavailableKind::Service)),
    ),
    (
        "InternalError",
        Base::Class(ErrorClass::Unavailable(UnavailableKind::Service)),
    ),
    (
        "RequestTimeout",
        Base::Class(ErrorClass::Unavailable(UnavailableKind::Network)),
    ),
    (
        "RequestTimeoutException",
        Base::Class(ErrorClass::Unavailable(UnavailableKind::Network)),
    ),
    (
        "SerializationException",
        Base::Class(ErrorClass::Client(ClientKind::Validation)),
    ),
    (
        "UnknownOperationException",
        Base::Class(ErrorClass::Client(ClientKind::Other)),
    ),
];

#[derive(Debug, Clone, Copy)]
enum Base {
    /// A throttle whose kind the message decides.
    Throttle,
    /// A 503 whose kind the message decides.
    Unavailable,
    /// A validation error, unless the message is a throttle's.
    Validation,
    /// Fixed.
    Class(ErrorClass),
}

/// What the message says, when it says something this table knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    TokensPerDay,
    TokenRate,
    RequestRate,
    Overloaded,
    NotReady,
    TooManyConnections,
    ServiceUnavailable,
    ContextWindow,
    Nothing,
}

/// Message fragments, matched on the lowercased message, first match wins.
/// Collected from Bedrock's documentation, AWS re:Post threads and the issue
/// trackers of Bedrock clients (boto3, LangChain, LiteLLM, the AWS SDKs).
const PHRASES: &[(&str, Said)] = &[
    // Daily token quota: waiting a minute does not help.
    ("tokens per day", Said::TokensPerDay),
    ("token per day", Said::TokensPerDay),
    ("daily token", Said::TokensPerDay),
    // Token rate. "Too many tokens" is a throttle, never a context-window error.
    ("too many tokens", Said::TokenRate),
    ("tokens per minute", Said::TokenRate),
    ("token rate", Said::TokenRate),
    ("token limit exceeded", Said::TokenRate),
    // The model's capacity, said as a throttle: Bedrock's 503 "Model is
    // getting throttled. Try your request again." is the second face of
    // the 429 "Model ... is currently overloaded" (before the generic
    // "throttl" below).
    ("model is getting throttled", Said::Overloaded),
    // Request rate.
    ("too many requests", Said::RequestRate),
    ("request rate is too high", Said::RequestRate),
    ("requests per minute", Said::RequestRate),
    ("rate exceeded", Said::RequestRate),
    ("rate limit", Said::RequestRate),
    ("throttl", Said::RequestRate),
    // The model's shared capacity.
    ("is currently overloaded", Said::Overloaded),
    ("overloaded", Said::Overloaded),
    ("high demand", Said::Overloaded),
    ("insufficient capacity", Said::Overloaded),
    ("not ready", Said::NotReady),
    // 503 kinds.
    ("too many connections", Said::TooManyConnections),
    ("service temporarily unavailable", Said::ServiceUnavailable),
    ("service unavailable", Said::ServiceUnavailable),
    ("unable to process your request", Said::ServiceUnavailable),
    // Context window (a validation error).
    ("input is too long", Said::ContextWindow),
    ("prompt is too long", Said::ContextWindow),
    ("too long for requested model", Said::ContextWindow),
    ("context window", Said::ContextWindow),
    ("context length", Said::ContextWindow),
    ("maximum context", Said::ContextWindow),
];

fn read_message(message: Option<&str>) -> Said {
    let Some(message) = message else {
        return Said::Nothing;
    };
    let mut lower = String::with_capacity(message.len().min(MESSAGE_SCAN_CHARS));
    for c in message.chars().take(MESSAGE_SCAN_CHARS) {
        lower.extend(c.to_lowercase());
    }
    PHRASES
        .iter()
        .find(|(phrase, _)| lower.contains(phrase))
        .map_or(Said::Nothing, |(_, said)| *said)
}

/// Reduces a wire-form error code to its bare name: strips a namespace
/// (`com.amazon.bedrock#ThrottlingException`), a suffix after `:`
/// (`ThrottlingException:http://internal.amazon.com/coral/...`) and
/// surrounding whitespace.
pub fn normalize_code(code: &str) -> &str {
    let code = code.trim();
    let code = code.rsplit_once('#').map_or(code, |(_, name)| name);
    let code = code.split_once(':').map_or(code, |(name, _)| name);
    code.trim()
}

/// The canonical spelling of a known code (case-insensitive: in-stream
/// exceptions arrive in camelCase, `throttlingException`).
fn known_code(code: &str) -> Option<(&'static str, Base)> {
    CODES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(code))
        .map(|(known, base)| (*known, *base))
}

/// An unknown code, kept for logs: only code-like characters, bounded.
fn sanitize_code(code: &str) -> Option<Cow<'static, str>> {
    let clean: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(MAX_CODE_LEN)
        .collect();
    (!clean.is_empty()).then_some(Cow::Owned(clean))
}

fn throttle_from(said: Said) -> ErrorClass {
    match said {
        Said::TokensPerDay => ErrorClass::QuotaExceeded,
        Said::TokenRate => ErrorClass::Throttled(ThrottleKind::TokenRate),
        Said::RequestRate => ErrorClass::Throttled(ThrottleKind::RequestRate),
        Said::Overloaded | Said::ServiceUnavailable => {
            ErrorClass::Throttled(ThrottleKind::ModelOverloaded)
        }
        Said::NotReady => ErrorClass::Throttled(ThrottleKind::ModelNotReady),
        Said::TooManyConnections => ErrorClass::Unavailable(UnavailableKind::ConnectionPool),
        Said::ContextWindow | Said::Nothing => ErrorClass::Throttled(ThrottleKind::Unspecified),
    }
}

fn unavailable_from(said: Said) -> ErrorClass {
    match said {
        Said::TooManyConnections => ErrorClass::Unavailable(UnavailableKind::ConnectionPool),
        Said::Overloaded => ErrorClass::Throttled(ThrottleKind::ModelOverloaded),
        Said::NotReady => ErrorClass::Throttled(ThrottleKind::ModelNotReady),
        _ => ErrorClass::Unavailable(UnavailableKind::Service),
    }
}

fn validation_from(said: Said) -> ErrorClass {
    match said {
        // "Too many tokens, please wait" under a 400 is still a throttle.
        Said::TokenRate => ErrorClass::Throttled(ThrottleKind::TokenRate),
        Said::TokensPerDay => ErrorClass::QuotaExceeded,
        _ => ErrorClass::Client(ClientKind::Validation),
    }
}

fn from_status(status: u16, said: Said) -> ErrorClass {
    match status {
        429 => throttle_from(said),
        503 => unavailable_from(said),
        500 | 502 | 504 => ErrorClass::Unavailable(UnavailableKind::Service),
        408 => ErrorClass::ModelTimeout,
        424 => ErrorClass::Client(ClientKind::ModelError),
        400 => validation_from(said),
        401 | 403 => ErrorClass::Client(ClientKind::AccessDenied),
        404 => ErrorClass::Client(ClientKind::NotFound),
        409 => ErrorClass::Client(ClientKind::Conflict),
        s if (400..500).contains(&s) => ErrorClass::Client(ClientKind::Other),
        s if (500..600).contains(&s) => ErrorClass::Unavailable(UnavailableKind::Service),
        _ => ErrorClass::Unknown,
    }
}

fn from_message_only(said: Said) -> ErrorClass {
    match said {
        Said::TokensPerDay => ErrorClass::QuotaExceeded,
        Said::TokenRate => ErrorClass::Throttled(ThrottleKind::TokenRate),
        Said::RequestRate => ErrorClass::Throttled(ThrottleKind::RequestRate),
        Said::Overloaded => ErrorClass::Throttled(ThrottleKind::ModelOverloaded),
        Said::NotReady => ErrorClass::Throttled(ThrottleKind::ModelNotReady),
        Said::TooManyConnections => ErrorClass::Unavailable(UnavailableKind::ConnectionPool),
        Said::ServiceUnavailable => ErrorClass::Unavailable(UnavailableKind::Service),
        Said::ContextWindow => ErrorClass::Client(ClientKind::Validation),
        Said::Nothing => ErrorClass::Unknown,
    }
}

/// Classifies a Bedrock failure from its HTTP status, error code and
/// message: the pure decision table every classifier in this crate ends in.
///
/// The message is read to tell the kinds of one code apart, and is **not**
/// kept: the returned [`Classification`] holds the class, the status and the
/// normalized code only.
///
/// | code (any wire form, any case) | message says | class |
/// |---|---|---|
/// | `ThrottlingException` (or a generic AWS throttle code) | "tokens per day" | `QuotaExceeded` |
/// | | "too many tokens" | `Throttled(TokenRate)` |
/// | | "too many requests", "request rate is too high", "rate exceeded" | `Throttled(RequestRate)` |
/// | | "is currently overloaded", "high demand" | `Throttled(ModelOverloaded)` |
/// | | anything else | `Throttled(Unspecified)` |
/// | `ServiceUnavailableException` | "too many connections" | `Unavailable(ConnectionPool)` |
/// | | "overloaded", "model is getting throttled" | `Throttled(ModelOverloaded)` |
/// | | anything else | `Unavailable(Service)` |
/// | `ModelNotReadyException` | | `Throttled(ModelNotReady)` |
/// | `ModelTimeoutException` | | `ModelTimeout` |
/// | `InternalServerException`, `ModelStreamErrorException` | | `Unavailable(Service)` |
/// | `ServiceQuotaExceededException` | | `QuotaExceeded` |
/// | `ValidationException` | "too many tokens" | `Throttled(TokenRate)` |
/// | | anything else (incl. "input is too long") | `Client(Validation)` |
/// | `AccessDeniedException`, auth codes | | `Client(AccessDenied)` |
/// | `ResourceNotFoundException` | | `Client(NotFound)` |
/// | `ModelErrorException` | | `Client(ModelError)` |
/// | `ConflictException` | | `Client(Conflict)` |
/// | unknown or missing code | | by status: 429 and 503 as above by message, 500/502/504 `Unavailable(Service)`, 408 `ModelTimeout`, 424 `Client(ModelError)`, 400 `Client(Validation)` (or a throttle by message), 401/403 `Client(AccessDenied)`, 404 `Client(NotFound)`, 409 `Client(Conflict)`, other 4xx `Client(Other)`, other 5xx `Unavailable(Service)` |
/// | no code, no status | | by message alone, else `Unknown` |
///
/// `Unknown` is the safe default: the retry layer does not retry it, the
/// breaker does not count it, the fallback does not move on. Never panics,
/// whatever the input (fuzzed with proptest).
///
/// ```
/// use tower_bedrock_classify::classify_parts;
/// use tower_bedrock_core::{ErrorClass, ThrottleKind};
///
/// let c = classify_parts(
///     Some(429),
///     Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
///     Some("Too many tokens, please wait before trying again."),
/// );
/// assert_eq!(c.class, ErrorClass::Throttled(ThrottleKind::TokenRate));
/// assert_eq!(c.code(), Some("ThrottlingException"));
/// assert_eq!(c.status, Some(429));
/// ```
pub fn classify_parts(
    status: Option<u16>,
    code: Option<&str>,
    message: Option<&str>,
) -> Classification {
    let said = read_message(message);
    let normalized = code.map(normalize_code).filter(|c| !c.is_empty());
    let known = normalized.and_then(known_code);

    let class = match known {
        Some((_, Base::Throttle)) => throttle_from(said),
        Some((_, Base::Unavailable)) => unavailable_from(said),
        Some((_, Base::Validation)) => validation_from(said),
        Some((_, Base::Class(class))) => class,
        None => match status {
            Some(status) => from_status(status, said),
            None => from_message_only(said),
        },
    };

    let mut classification = Classification::new(class);
    classification.status = status;
    classification.code = match known {
        Some((canonical, _)) => Some(Cow::Borrowed(canonical)),
        None => normalized.and_then(sanitize_code),
    };
    classification
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_wire_forms() {
        assert_eq!(normalize_code("ThrottlingException"), "ThrottlingException");
        assert_eq!(
            normalize_code(
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
            ),
            "ThrottlingException"
        );
        assert_eq!(
            normalize_code("com.amazon.bedrock#ValidationException"),
            "ValidationException"
        );
        assert_eq!(normalize_code(" aws.protocoltests#Foo:bar "), "Foo");
        assert_eq!(normalize_code(""), "");
    }

    #[test]
    fn unknown_codes_are_sanitized_and_bounded() {
        let c = classify_parts(Some(418), Some("Weird<script>Code"), None);
        assert_eq!(c.code(), Some("WeirdscriptCode"));
        let long = "X".repeat(10_000);
        let c = classify_parts(None, Some(&long), None);
        assert_eq!(c.code().map(str::len), Some(MAX_CODE_LEN));
        assert_eq!(c.class, ErrorClass::Unknown);
    }
}
