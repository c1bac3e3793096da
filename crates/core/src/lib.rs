//! The shared vocabulary of `tower-bedrock`.
//!
//! Every layer of the stack decides what to do from one question: *what kind of
//! failure was this?* This crate holds the answer's vocabulary and nothing
//! heavy (no AWS SDK):
//!
//! - [`ErrorClass`] with [`ThrottleKind`], [`UnavailableKind`], [`ClientKind`]
//!   and [`LocalRejection`]: the taxonomy of Bedrock failures;
//! - [`Classification`]: a class plus a retry hint, the HTTP status, the error
//!   code and the request id (never a request or response body);
//! - [`Classified`]: implemented by error types that know their class, and
//!   [`ClassifiedError`], the error type the whole stack shares;
//! - [`Rejection`]: a local refusal (budget exhausted, circuit open, ...)
//!   produced by a layer without reaching Bedrock;
//! - [`ModelRequest`] and [`TokenDemand`]: read and rewrite a request's model
//!   id, and learn how many tokens it may consume;
//! - [`Usage`] and [`ReportsUsage`]: the tokens a response really consumed;
//! - [`CallReport`]: an opt-in record of what the stack did for one call
//!   (attempts, the target that served it);
//! - [`Clock`]: wall-time alignment that follows tokio's paused time in tests;
//! - [`model`]: model id helpers (inference profile prefixes, burndown rates);
//! - [`names`]: the metric names every crate emits;
//! - [`deadline`]: the deadline of the call in progress, for the layers below
//!   the one that set it;
//! - [`stream_end`]: how a streamed response ended, for the layers above the
//!   service that opened it (a breaker counts a stream failing half-way).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_bedrock_core::{Classification, ErrorClass, ThrottleKind};
//!
//! let c = Classification::new(ErrorClass::Throttled(ThrottleKind::TokenRate))
//!     .with_status(429)
//!     .with_code("ThrottlingException")
//!     .with_retry_after(Duration::from_secs(3));
//! assert!(c.class.is_throttle());
//! assert_eq!(
//!     c.to_string(),
//!     "throttled (token rate): ThrottlingException, HTTP 429, retry after 3s"
//! );
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod class;
mod classification;
mod clock;
pub mod deadline;
mod error;
pub mod key;
pub mod labels;
mod report;
mod request;
mod usage;

pub mod model;
pub mod names;
pub mod sent;
pub mod stream_end;

pub use class::{ClientKind, ErrorClass, LocalRejection, ThrottleKind, UnavailableKind};
pub use classification::Classification;
pub use clock::Clock;
pub use error::{Classified, ClassifiedError, ErrorContext, Rejection, RetryStop, Tried};
pub use report::{CallReport, CallSummary};
pub use request::{ModelRequest, TokenDemand};
pub use usage::{ReportsUsage, Usage, UsageCallback, UsageObservers};

/// A type-erased error, as tower uses it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
