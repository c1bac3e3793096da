//! tower-bedrock: tower layers that make applications calling Amazon
//! Bedrock survive throttling (429) and outages (503).
//!
//! This facade re-exports the layer crates and composes them into one
//! preset stack, in the order the design calls for:
//!
//! ```text
//! ModelFallback        try targets in order: a local rejection or an overload moves on
//!   QuotaAlignedRetry    per-class waits, window alignment, a retry budget, a deadline
//!     CircuitBreak         one breaker per model id; open => fast CircuitOpen
//!       TokenBudget          admit against TPM/RPM/day windows; reserve, then settle
//!         ThrottleClassify     SDK error -> ClassifiedError (class, hint, request id)
//!           InvocationMetrics    invocations, latency, tokens per model (every attempt)
//!             your service       the SDK client (its own retries disabled) or anything else
//! ```
//!
//! Every attempt passes the breaker and the budget; an open breaker spends
//! no budget; a retry does not hammer an open breaker; the fallback sees
//! only what the retry could not fix.
//!
//! [`stack()`] starts a [`StackBuilder`]: each of the six slots is on with
//! documented defaults, off, or replaced by a layer of yours (see the table
//! on [`StackBuilder`]); [`StackBuilder::service`] returns a
//! [`BoxCloneService`], and [`StackBuilder::sync_service`] a
//! [`BoxCloneSyncService`] (also `Sync`, as axum's state must be). The layers are
//! equally usable one by one with `tower::ServiceBuilder`: see each crate
//! ([`classify`], [`retry`], [`budget`], [`breaker`], [`fallback`]).
//!
//! # Example
//!
//! The stack over a mock model service whose primary model is overloaded:
//! the fallback target serves, and the call's [`CallReport`](core::CallReport)
//! says so.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceExt, service_fn};
//! use tower_bedrock::budget::Budget;
//! use tower_bedrock::classify::{ThrottleClassifyLayer, classify_parts};
//! use tower_bedrock::core::{CallReport, ModelRequest, ReportsUsage, TokenDemand, Usage};
//! use tower_bedrock::fallback::{Chain, Target};
//!
//! // Your request and response types tell the stack their model and usage.
//! #[derive(Clone)]
//! struct Ask { model: String, max_tokens: u64, report: Option<CallReport> }
//! impl ModelRequest for Ask {
//!     fn model_id(&self) -> &str { &self.model }
//!     fn set_model_id(&mut self, id: &str) { self.model = id.to_owned() }
//!     fn token_demand(&self) -> TokenDemand {
//!         TokenDemand { input_tokens: 50, max_output_tokens: Some(self.max_tokens) }
//!     }
//!     fn set_max_output_tokens(&mut self, n: u64) { self.max_tokens = n }
//!     fn report(&self) -> Option<&CallReport> { self.report.as_ref() }
//! }
//! struct Answer { model: String, usage: Usage }
//! impl ReportsUsage for Answer {
//!     fn usage(&self) -> Option<Usage> { Some(self.usage) }
//! }
//!
//! // A mock Bedrock failing the way Bedrock does.
//! #[derive(Debug)]
//! struct WireError { status: u16, code: &'static str, message: &'static str }
//! impl std::fmt::Display for WireError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         write!(f, "HTTP {} {}", self.status, self.code)
//!     }
//! }
//! impl std::error::Error for WireError {}
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bedrock = service_fn(|req: Ask| async move {
//!     if req.model == "anthropic.claude-sonnet-4-20250514-v1:0" {
//!         return Err(WireError {
//!             status: 429,
//!             code: "ThrottlingException",
//!             message: "Model is currently overloaded. Please try again later.",
//!         });
//!     }
//!     Ok(Answer { model: req.model, usage: Usage::new(50, 20) })
//! });
//!
//! let budget = Budget::builder().tokens_per_window(100_000).build()?;
//! let mut svc = tower_bedrock::stack()
//!     .seed(7)
//!     .fallback_chain(
//!         Chain::new()
//!             .then("anthropic.claude-sonnet-4-20250514-v1:0")
//!             .then(Target::new("anthropic.claude-3-5-haiku-20241022-v1:0").max_tokens(512)),
//!     )
//!     .token_budget(&budget)
//!     .classify(ThrottleClassifyLayer::new().classifier(|e: &WireError| {
//!         classify_parts(Some(e.status), Some(e.code), Some(e.message))
//!     }))
//!     .service(bedrock)?;
//!
//! let report = CallReport::new();
//! let ask = Ask {
//!     model: "anthropic.claude-sonnet-4-20250514-v1:0".into(),
//!     max_tokens: 1024,
//!     report: Some(report.clone()),
//! };
//! let answer = svc.ready().await?.call(ask).await?;
//! assert_eq!(answer.model, "anthropic.claude-3-5-haiku-20241022-v1:0");
//! let summary = report.summary();
//! assert!(summary.degraded());
//! assert_eq!(summary.served_by.as_deref(), Some("anthropic.claude-3-5-haiku-20241022-v1:0"));
//! // The fallback's usage was charged to the fallback model's budget.
//! assert_eq!(budget.snapshot("anthropic.claude-3-5-haiku-20241022-v1:0").unwrap().tokens, 70);
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! The layers emit, through the `metrics` facade, the names in
//! [`core::names`]; `monitoring/` at the repository root holds Prometheus
//! alerting rules and a Grafana dashboard built on them, and a
//! CloudFormation template of CloudWatch alarms and a dashboard. With the
//! `emf` feature (on by default), `emf::EmfRecorder` writes the same
//! metrics as CloudWatch Embedded Metric Format.
//!
//! # In your service
//!
//! [`ErrorReply`] is what your own caller should see when a call failed:
//! a status from the error's class (429 for throttles and budget sheds,
//! 503 for outages and open circuits, 504 for timeouts, 4xx for the
//! caller's own errors), the code, the request id and when to come back,
//! never a prompt or an error message. With the `axum` feature it is an
//! `IntoResponse` (JSON body, `Retry-After`; see `tower_bedrock::axum`),
//! with the `tonic` feature a `tonic::Status` (`grpc-retry-pushback-ms`;
//! see `tower_bedrock::tonic`). [`caller::CallerDeadline`] reads how long
//! your caller will wait (`grpc-timeout`, `x-request-timeout-ms`, 25 s by
//! default) and [`caller::call_within`] makes it the deadline of the
//! stack's call, so a throttle the stack cannot absorb reaches the caller
//! as a 429 while it still listens.
//!
//! # Logging
//!
//! The stack never logs a prompt, a completion or a credential; the AWS
//! SDK below it does at TRACE (and profile credentials at INFO). Install
//! [`logging::SafeLogFilter`] (or call [`logging::try_init`]) before you
//! turn the log level up.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The layer crates' docs are inlined, so the links to them (from here and
// from every page of this crate) resolve wherever this crate's docs are
// built, `cargo doc --no-deps -p tower-bedrock` included.
#[doc(inline)]
pub use tower_bedrock_breaker as breaker;
#[doc(inline)]
pub use tower_bedrock_budget as budget;
#[doc(inline)]
pub use tower_bedrock_classify as classify;
#[doc(inline)]
pub use tower_bedrock_core as core;
#[doc(inline)]
pub use tower_bedrock_fallback as fallback;
#[doc(inline)]
pub use tower_bedrock_retry as retry;
#[doc(inline)]
pub use tower_bedrock_sdk as sdk;

pub use tower::util::{BoxCloneService, BoxCloneSyncService};

#[cfg(feature = "axum")]
pub mod axum;
pub mod caller;
#[cfg(feature = "emf")]
pub mod emf;
pub mod logging;
pub mod observe;
mod reply;
pub mod stack;
#[cfg(feature = "tonic")]
pub mod tonic;

pub use reply::ErrorReply;
pub use stack::{BedrockStackLayer, BuildError, StackBuilder};

/// Starts the preset stack with its defaults: retry, breaker and classify
/// on; fallback and budget off until given a chain and a quota. See
/// [`StackBuilder`].
pub fn stack() -> StackBuilder {
    StackBuilder::new()
}

/// The README's streaming example (`examples/snippets/readme_streams.rs`,
/// which `tests/streams.rs` checks the README quotes verbatim), compiled
/// as a doc test.
#[cfg(doctest)]
#[doc = concat!(
    "```rust,no_run\n",
    include_str!("../../../examples/snippets/readme_streams.rs"),
    "```"
)]
pub struct ReadmeStreams;
