//! `QuotaAlignedRetry`: per-class retries for Amazon Bedrock, aligned with
//! the quota window, under a shared retry budget and a deadline.
//!
//! A throttle on a 60-second quota is best retried a few seconds after the
//! next window opens, not after one second in lockstep with every other
//! client; a 503 wants exponential backoff with jitter; an overloaded model
//! wants a fallback, not a retry; a validation error wants nothing. This
//! layer reads each error's class through
//! [`Classified`](tower_bedrock_core::Classified) and acts per class:
//!
//! | class | retries (per call) | wait |
//! |---|---|---|
//! | `Throttled(RequestRate \| TokenRate \| Unspecified)` | 3 | until the next quota window opens + 1 s + U\[0, 4 s\] |
//! | `Throttled(ModelOverloaded \| ModelNotReady)` | 0: left to the fallback | configurable |
//! | `Unavailable(ConnectionPool)` | 3 | full jitter, base 100 ms, cap 1 s |
//! | `Unavailable(Service \| Network)` | 4 | full jitter, base 1 s, cap 20 s |
//! | `ModelTimeout` | 1 | full jitter, base 1 s, cap 5 s |
//! | `QuotaExceeded` (daily), `Unknown` | 0 | configurable |
//! | `Local(CircuitOpen)` | off by default; waited out when [`CircuitWait`] is on | the breaker's `retry_after` + U\[0, 25 %\], at most 30 s |
//! | `Client(_)`, other `Local(_)` | never (not configurable) | |
//!
//! Quota windows are 60 s long by default and aligned on the UNIX epoch;
//! their phase comes from the layer's [`Clock`](tower_bedrock_core::Clock)
//! (the system clock, or `Clock::starting_at` under paused time in tests).
//! A retry hint carried by the error (`Classification::retry_after`)
//! replaces the wait, clamped to \[50 ms, 60 s\]. Every policy is overridable
//! ([`QuotaAlignedRetryLayerBuilder::policy`]); the jitter modes
//! ([`Jitter`]: full, equal, decorrelated) are those of the AWS
//! Architecture Blog's "Exponential Backoff And Jitter". At most 5
//! attempts per call in all (configurable).
//!
//! On top of the per-class table:
//!
//! - **Retry budget** ([`RetryBudget`]): a token bucket shared by every
//!   service the layer makes and their clones (the AWS SDKs' retry quota:
//!   500 tokens, 5 per retry, 10 after a network failure or model timeout,
//!   refilled by successes only). When it is empty the error comes back
//!   with `ErrorContext::retry_stop == Some(RetryStop::BudgetExhausted)`.
//!   Why a bucket rather than a percentage: see [`RetryBudget`].
//! - **Deadline**: 210 s per call by default (room for the three
//!   window-aligned throttle retries: see [`DEFAULT_DEADLINE`] for the
//!   arithmetic), overridable per request ([`CallOptions`]). The layer
//!   never sleeps past it: when the next wait would cross it the last
//!   error comes back, marked `RetryStop::Deadline`, and waiting for the
//!   inner service's readiness before a retry is bounded by it too; a zero
//!   per-request deadline refuses the call with `Local(DeadlineExceeded)`.
//!   Every attempt runs with the deadline in scope
//!   ([`tower_bedrock_core::deadline`]): layers below read it with
//!   `call_deadline()` and do not wait past it (the token budget sheds a
//!   wait that would cross it). A deadline already in scope (a retry layer
//!   above) is kept when earlier. An attempt in flight is never cut short
//!   by this layer (an admitted Bedrock call has already reserved quota):
//!   bound attempts with a timeout below this layer.
//! - **Open breakers** ([`CircuitWait`], off by default): with no fallback
//!   above, a call refused by the breaker below (`Local(CircuitOpen)`)
//!   waits until the breaker lets calls through again instead of failing,
//!   within the deadline, without charging the retry budget. The preset
//!   stack of the `tower-bedrock` crate turns it on when it has no
//!   fallback chain.
//! - **No multiplication**: an error that another retry layer below already
//!   marked with a `RetryStop` is returned as is, not retried again; every
//!   error this layer returns carries one (a readiness error too).
//! - **Observability**: a `tracing` debug event per retry (class, kind,
//!   attempt, wait), the counters `bedrock_retries_total{class,kind}` and
//!   `bedrock_retry_budget_exhausted_total`, `bedrock_retry_circuit_waits_total`,
//!   the histogram
//!   `bedrock_retry_wait_seconds{class}`; on errors that keep an
//!   [`ErrorContext`](tower_bedrock_core::ErrorContext) the attempts made
//!   and the reason retrying stopped; after any call, success included, the
//!   attempts in the request's [`CallReport`](tower_bedrock_core::CallReport)
//!   when [`CallOptions`] supplies one ([`ModelRequestReport`] does it for
//!   [`ModelRequest`](tower_bedrock_core::ModelRequest) requests).
//!
//! `poll_ready` of the inner service is called before every attempt,
//! retries included (a `poll_ready` error during a retry is returned with
//! the attempts noted and `RetryStop::NotRetryable`, so that a retry layer
//! above does not start a cycle of its own). Every wait is bounded by
//! [`MAX_WAIT`] at build time, so no wait overflows at run time. Dropping the response future
//! stops everything and gives back retry budget held for a retry not yet
//! sent. Waits use `tokio::time`, so retries need a tokio runtime with time
//! enabled; the happy path touches no timer.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use tower::{Layer, Service, ServiceBuilder, ServiceExt};
//! use tower_bedrock_core::{
//!     Classification, ClassifiedError, Clock, ErrorClass, RetryStop, ThrottleKind,
//! };
//! use tower_bedrock_retry::QuotaAlignedRetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! type Error = ClassifiedError<std::io::Error>;
//!
//! // A mock Bedrock: the first two calls are throttled (too many tokens).
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let bedrock = tower::service_fn(move |prompt: &'static str| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if n < 2 {
//!             let c = Classification::new(ErrorClass::Throttled(ThrottleKind::TokenRate))
//!                 .with_status(429);
//!             Err(Error::new(std::io::Error::other("throttled"), c))
//!         } else {
//!             Ok(prompt.len())
//!         }
//!     }
//! });
//!
//! // 50 s into a minute (tests and examples pin the clock; production uses
//! // the system clock).
//! let clock = Clock::starting_at(Duration::from_secs(1_700_000_000 - 1_700_000_000 % 60 + 50));
//! let layer = QuotaAlignedRetryLayer::builder().clock(clock).seed(7).build().unwrap();
//! let mut svc = ServiceBuilder::new().layer(layer).service(bedrock);
//!
//! let start = tokio::time::Instant::now();
//! let len = svc.ready().await.unwrap().call("hello").await.unwrap();
//! assert_eq!(len, 5);
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! // Retried after the next two minute boundaries (10 s and 70 s away),
//! // each time 1 to 5 s after the window opened.
//! let took = start.elapsed();
//! assert!(took >= Duration::from_secs(71) && took <= Duration::from_secs(75), "{took:?}");
//!
//! // A validation error is never retried; the error says so.
//! let bad = tower::service_fn(|_: &'static str| async {
//!     let c = Classification::new(ErrorClass::Client(tower_bedrock_core::ClientKind::Validation));
//!     Err::<usize, _>(Error::new(std::io::Error::other("bad"), c))
//! });
//! let mut svc = QuotaAlignedRetryLayer::new().layer(bad);
//! let err = svc.ready().await.unwrap().call("x").await.unwrap_err();
//! let ctx = tower_bedrock_core::Classified::context(&err).unwrap();
//! assert_eq!((ctx.attempts, ctx.retry_stop), (1, Some(RetryStop::NotRetryable)));
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budget;
mod circuit;
pub mod error;
pub mod future;
mod layer;
mod options;
mod policy;
mod service;

pub use budget::{RetryBudget, RetryBudgetConfig};
pub use circuit::{CircuitWait, DEFAULT_CIRCUIT_MAX_TOTAL, DEFAULT_CIRCUIT_MAX_WAIT};
pub use error::BuildError;
pub use layer::{
    DEFAULT_DEADLINE, DEFAULT_HINT_MAX, DEFAULT_HINT_MIN, DEFAULT_MAX_ATTEMPTS, DEFAULT_WINDOW,
    QuotaAlignedRetryLayer, QuotaAlignedRetryLayerBuilder,
};
pub use options::{CallOptions, ModelRequestReport, NoCallOptions, PerCall};
pub use policy::{
    Backoff, ClassPolicy, DEFAULT_POOL_BACKOFF, DEFAULT_THROTTLE_BACKOFF, DEFAULT_TIMEOUT_BACKOFF,
    DEFAULT_UNAVAILABLE_BACKOFF, Jitter, MAX_WAIT, Policies,
};
pub use service::QuotaAlignedRetry;
