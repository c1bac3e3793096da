//! The caller's deadline: how long the client of *your* service will wait,
//! read from its request, made the deadline of the stack's call.
//!
//! The retry layer's default deadline (210 s) is longer than load
//! balancers' idle timeouts and than most clients' patience: a throttle the
//! stack cannot absorb would keep a caller waiting minutes for a `429`.
//! [`CallerDeadline`] turns what the caller said (gRPC's `grpc-timeout`, or
//! an HTTP header such as `x-request-timeout-ms`), or a default when it said
//! nothing, into a time limit; [`call_within`] runs one call of the stack
//! with that limit as its deadline (see [`core::deadline`](crate::core::deadline)):
//! the retry layer stops retrying before it, the budget does not queue past
//! it, and the caller gets the stack's best answer (the throttle with its
//! retry hint, say) in time, or `Local(DeadlineExceeded)` at the latest.
//!
//! ```
//! use std::time::Duration;
//! use tower_bedrock::caller::CallerDeadline;
//!
//! let policy = CallerDeadline::new()
//!     .default_limit(Duration::from_secs(20))
//!     .max_limit(Duration::from_secs(25))
//!     .margin(Duration::from_millis(100));
//! // The caller said nothing: the default.
//! assert_eq!(policy.resolve(|_| None), Ok(Some(Duration::from_secs(20))));
//! // The caller will wait 5 s: a little less, to answer in time.
//! let limit = policy.resolve(|name| (name == "x-request-timeout-ms").then_some("5000"));
//! assert_eq!(limit, Ok(Some(Duration::from_millis(4900))));
//! // gRPC's own header, in its own format (here 2 minutes), capped.
//! let limit = policy.resolve(|name| (name == "grpc-timeout").then_some("2M"));
//! assert_eq!(limit, Ok(Some(Duration::from_secs(25))));
//! ```

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceExt;
use tower_bedrock_core::deadline::with_call_deadline;
use tower_bedrock_core::{LocalRejection, Rejection};
use tower_service::Service;

/// gRPC's timeout header (`grpc-timeout`: at most 8 digits and a unit,
/// `H`, `M`, `S`, `m`, `u` or `n`).
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// The HTTP header [`CallerDeadline`] reads by default: the caller's time
/// limit in whole milliseconds.
pub const REQUEST_TIMEOUT_MS_HEADER: &str = "x-request-timeout-ms";

/// The default limit of [`CallerDeadline::new`] for callers that send no
/// timeout: under the 29 s of API Gateway's integrations and the 30 s
/// many clients and proxies allow.
pub const DEFAULT_CALLER_LIMIT: Duration = Duration::from_secs(25);

/// The default [`margin`](CallerDeadline::margin): time kept back from a
/// caller's own timeout to send the answer.
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(100);

/// How long a call may take, from what its caller sent.
///
/// Reads `grpc-timeout` first, then the millisecond header
/// ([`REQUEST_TIMEOUT_MS_HEADER`] unless [`header`](Self::header) names
/// another); takes off the [`margin`](Self::margin); caps the result at
/// [`max_limit`](Self::max_limit); uses [`default_limit`](Self::default_limit)
/// when neither header is present. A header that is present but not a valid
/// timeout is an [`InvalidTimeout`] (answer it with a `400` /
/// `INVALID_ARGUMENT`), never silently ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerDeadline {
    header: &'static str,
    default_limit: Option<Duration>,
    max_limit: Option<Duration>,
    margin: Duration,
}

impl Default for CallerDeadline {
    fn default() -> Self {
        Self::new()
    }
}

impl CallerDeadline {
    /// Reads `grpc-timeout` and `x-request-timeout-ms`; a
    /// [`DEFAULT_CALLER_LIMIT`] default, also the cap; a
    /// [`DEFAULT_MARGIN`].
    pub const fn new() -> Self {
        CallerDeadline {
            header: REQUEST_TIMEOUT_MS_HEADER,
            default_limit: Some(DEFAULT_CALLER_LIMIT),
            max_limit: Some(DEFAULT_CALLER_LIMIT),
            margin: DEFAULT_MARGIN,
        }
    }

    /// The HTTP header holding the caller's limit in milliseconds (lower
    /// case).
    #[must_use]
    pub const fn header(mut self, name: &'static str) -> Self {
        self.header = name;
        self
    }

    /// The limit of calls whose caller sent none.
    #[must_use]
    pub const fn default_limit(mut self, limit: Duration) -> Self {
        self.default_limit = Some(limit);
        self
    }

    /// No limit for calls whose caller sent none: the stack's own deadline
    /// applies.
    #[must_use]
    pub const fn no_default_limit(mut self) -> Self {
        self.default_limit = None;
        self
    }

    /// The longest limit, whatever the caller asks for.
    #[must_use]
    pub const fn max_limit(mut self, limit: Duration) -> Self {
        self.max_limit = Some(limit);
        self
    }

    /// No cap on what callers ask for.
    #[must_use]
    pub const fn no_max_limit(mut self) -> Self {
        self.max_limit = None;
        self
    }

    /// Time kept back from a caller's own timeout, so the answer reaches
    /// it before it gives up (not taken from the default limit).
    #[must_use]
    pub const fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The limit of one call. `header` looks a header up by its lower-case
    /// name (`|n| headers.get(n).and_then(|v| v.to_str().ok())`); the
    /// integrations call this for you
    /// (`tower_bedrock::axum::caller_deadline`,
    /// `tower_bedrock::tonic::caller_deadline`). `Ok(None)`: no limit
    /// (nothing sent and no default).
    pub fn resolve<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<Duration>, InvalidTimeout> {
        let sent = if let Some(v) = header(GRPC_TIMEOUT_HEADER) {
            Some(parse_grpc_timeout(v).ok_or(InvalidTimeout {
                header: GRPC_TIMEOUT_HEADER,
            })?)
        } else if let Some(v) = header(self.header) {
            Some(parse_millis(v).ok_or(InvalidTimeout {
                header: self.header,
            })?)
        } else {
            None
        };
        let limit = match sent {
            Some(d) => Some(d.saturating_sub(self.margin)),
            None => self.default_limit,
        };
        Ok(match (limit, self.max_limit) {
            (Some(l), Some(max)) => Some(l.min(max)),
            (l, _) => l,
        })
    }
}

/// A timeout header that is present but not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTimeout {
    header: &'static str,
}

impl InvalidTimeout {
    /// The header's name.
    pub const fn header(&self) -> &'static str {
        self.header
    }
}

impl fmt::Display for InvalidTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} header", self.header)
    }
}

impl std::error::Error for InvalidTimeout {}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Parses a whole number of milliseconds (at most 10 digits).
fn parse_millis(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().map(Duration::from_millis)
}

/// Makes `svc` ready and calls it with `req`, with `limit` (from
/// [`CallerDeadline::resolve`]) as the call's deadline: the stack's layers
/// see it through [`core::deadline`](crate::core::deadline) (the retry
/// layer takes the earlier of its own deadline and this one). Should an
/// answer still be on its way when the limit has passed, the call is
/// dropped (releasing what it holds) and the result is
/// `Local(DeadlineExceeded)`. `None`: no limit beyond the stack's own.
///
/// Run it on the task that serves the request (a `tower::buffer` between
/// here and the stack would lose the deadline, see
/// [`core::deadline`](crate::core::deadline)).
pub async fn call_within<S, Req>(
    svc: &mut S,
    req: Req,
    limit: Option<Duration>,
) -> Result<S::Response, S::Error>
where
    S: Service<Req>,
    S::Error: From<Rejection>,
{
    let Some(limit) = limit else {
        return svc.ready().await?.call(req).await;
    };
    if limit.is_zero() {
        return Err(Rejection::new(LocalRejection::DeadlineExceeded).into());
    }
    let Some(at) = Instant::now().checked_add(limit) else {
        return svc.ready().await?.call(req).await;
    };
    let call = with_call_deadline(at, async move { svc.ready().await?.call(req).await });
    match tokio::time::timeout_at(at, call).await {
        Ok(result) => result,
        Err(_) => Err(Rejection::new(LocalRejection::DeadlineExceeded).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("30000000u"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in [
            "",
            "S",
            "123456789S",
            "10",
            "10s",
            "-1S",
            "1.5S",
            "１S",
            "10é",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn header_wins_over_default_and_is_capped() {
        let policy = CallerDeadline::new()
            .header("x-deadline")
            .default_limit(Duration::from_secs(10))
            .max_limit(Duration::from_secs(20))
            .margin(Duration::from_millis(500));
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        };
        assert_eq!(
            policy.resolve(lookup(&[])),
            Ok(Some(Duration::from_secs(10)))
        );
        assert_eq!(
            policy.resolve(lookup(&[("x-deadline", "3000")])),
            Ok(Some(Duration::from_millis(2500)))
        );
        // The default header name is not read once another is configured.
        assert_eq!(
            policy.resolve(lookup(&[("x-request-timeout-ms", "3000")])),
            Ok(Some(Duration::from_secs(10)))
        );
        assert_eq!(
            policy.resolve(lookup(&[("x-deadline", "600000")])),
            Ok(Some(Duration::from_secs(20)))
        );
        // grpc-timeout first.
        assert_eq!(
            policy.resolve(lookup(&[("grpc-timeout", "1S"), ("x-deadline", "9000")])),
            Ok(Some(Duration::from_millis(500)))
        );
        // Shorter than the margin: no time left at all.
        assert_eq!(
            policy.resolve(lookup(&[("x-deadline", "100")])),
            Ok(Some(Duration::ZERO))
        );
        let err = policy
            .resolve(lookup(&[("x-deadline", "soon")]))
            .unwrap_err();
        assert_eq!(err.header(), "x-deadline");
        assert_eq!(err.to_string(), "invalid x-deadline header");
        assert_eq!(
            policy
                .resolve(lookup(&[("grpc-timeout", "forever")]))
                .unwrap_err()
                .header(),
            "grpc-timeout"
        );
        let unbounded = CallerDeadline::new().no_default_limit().no_max_limit();
        assert_eq!(unbounded.resolve(lookup(&[])), Ok(None));
        assert_eq!(
            unbounded.resolve(lookup(&[("grpc-timeout", "10M")])),
            Ok(Some(Duration::from_secs(600) - DEFAULT_MARGIN))
        );
    }
}
