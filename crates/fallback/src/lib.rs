//! `ModelFallback`: when a model is overloaded or its quota is spent, answer
//! from the next model or inference profile of a chain, degraded but
//! working, and say so.
//!
//! [`ModelFallbackLayer`] wraps a service of requests implementing
//! [`ModelRequest`](tower_bedrock_core::ModelRequest). Each [`Chain`] is an ordered list of [`Target`]s (a
//! model id or inference profile id, with an optional rewrite of the
//! request such as a smaller `max_tokens` for a smaller model). A request
//! whose model id is a chain's primary (first) target is tried on each
//! target in turn until one answers; requests for other models pass through
//! unchanged unless a [default chain](ModelFallbackBuilder::default_chain)
//! is configured.
//!
//! # Where it sits
//!
//! Outermost, above `QuotaAlignedRetry`, `CircuitBreak` and `TokenBudget`:
//! it sees only what the retry layer could not fix, and every target's
//! attempt passes through that target's breaker and budget. Moving to the
//! next target does not restart anything of its own. The retry layer below
//! runs per target; the classes that trigger a fallback by default are ones
//! it answers fast (local rejections are not retried, an overload is
//! retried little if at all), so a chain does not wait out a full retry
//! cycle on a dead primary before moving on. Each target is a new call for
//! the layers below (the retry layer's deadline is per call): bound the
//! whole chain with [`chain_deadline`](ModelFallbackBuilder::chain_deadline).
//! The chain's deadline (that one, or the deadline the call already runs
//! under, see [`tower_bedrock_core::deadline`], whichever is earlier) is
//! the call deadline of every target's call, so the retry layer and the
//! budget below stop waiting at it, and no target is started after it.
//! The test `tests/stack.rs` composes this stack over an overloaded
//! primary.
//!
//! # When it falls back
//!
//! A failure whose class is in the [`Triggers`] moves on to the next target;
//! by default: `Throttled(ModelOverloaded)`, `Throttled(ModelNotReady)`,
//! `Local(CircuitOpen)`, `Local(BudgetExhausted)` and
//! `Unavailable(Service)`. Any other class ends the call with its own
//! error. **Client errors never fall back** (configuring them as triggers is
//! refused at build time).
//!
//! A target whose breaker is open costs nothing: the breaker below answers
//! `Local(CircuitOpen)` at once, without a call to Bedrock, and the layer
//! moves on. With [`remember_open_circuits`](ModelFallbackBuilder::remember_open_circuits)
//! the layer also remembers the rejection's `retry_after` and skips the
//! target without even calling the inner stack until then.
//!
//! # Seeing the degraded mode
//!
//! - Per call, without changing any response type: attach a
//!   [`CallReport`](tower_bedrock_core::CallReport) to the request
//!   ([`ModelRequest::report`](tower_bedrock_core::ModelRequest::report)). The layer records each failed target
//!   (`record_tried`, with its class) and the target that served
//!   (`record_served_by`); [`CallSummary::degraded`](tower_bedrock_core::CallSummary::degraded)
//!   tells a fallback answer apart.
//! - Or, with [`ModelFallbackLayer::tagged`], from the response itself:
//!   each response comes wrapped in [`Served`] (the served target and the
//!   targets tried before). This changes the response type, so it is for
//!   callers who ask for it.
//! - On errors: every failed target is appended to the error's
//!   [`ErrorContext::tried`](tower_bedrock_core::ErrorContext), when the
//!   error type keeps a context (`ClassifiedError` does).
//! - Metrics (names from [`tower_bedrock_core::names`]):
//!   `bedrock_fallback_total{from, to, class, kind}` per move to the next
//!   target (`class` is the class label, `kind` the kind label, for
//!   example `throttled` / `model_overloaded`), the gauge
//!   `bedrock_degraded_requests` of requests in flight past their primary,
//!   and `bedrock_degraded_served_total{target}` per response served by a
//!   fallback target.
//! - A `tracing` event (level `WARN`, fields `from`, `to`, `class`,
//!   `skipped`) per fallback, and one when the layer gives up (field
//!   `reason`: `all_failed` or `chain_deadline`). Events and
//!   metrics carry ids and classes, never request or response content.
//!
//! # When every target fails
//!
//! The error returned is chosen by this rule:
//!
//! 1. a failure whose class is **not** a trigger (a client error, a model
//!    timeout, ...) ends the chain at once and is returned as is: it is the
//!    answer to the request as sent to that target;
//! 2. otherwise (every target failed with a trigger class, or the
//!    [chain deadline](ModelFallbackBuilder::chain_deadline) passed before
//!    the next target could start), the error of
//!    the **first target that failed upstream** (any class but `Local`) is
//!    returned: it says what Bedrock itself answered, and the earliest such
//!    target is the one the caller preferred;
//! 3. if every failure was a local rejection, the one with the **shortest
//!    `retry_after`** is returned (a rejection without one counts as the
//!    longest; the first on ties), so a caller that waits and retries waits
//!    the least.
//!
//! In every case the error's context lists every target tried, in order,
//! with its class. The other errors are dropped (their classes remain in
//! that list).
//!
//! # Streams
//!
//! [`ModelFallbackLayer::streaming`] gives the layer for streaming
//! responses that implement [`stream::FirstEvent`] (wrap any stream of
//! `Result`s in [`stream::Primed`]): the layer waits for the first event
//! before returning the response, so a stream that fails before its first
//! event falls back like a call. **Once the first event has arrived, the
//! layer does not fall back any more**; a later in-stream error reaches the
//! caller. See [`stream`].
//!
//! # Cancellation
//!
//! Dropping the response future drops the inner call in flight (releasing
//! whatever the layers below hold for it) and ends the request's count in
//! the degraded gauge. Nothing else is held.
//!
//! # Cross-region inference
//!
//! [`profile`] parses and builds inference profile ids (`global.`, `us.`,
//! `eu.`, `apac.`, `jp.`, `au.`, `ca.`, `us-gov.`), builds chains such as
//! `global.X -> us.X -> X` ([`Chain::cross_region`]) and checks a
//! geographic [`Boundary`](profile::Boundary) when the layer is built: an
//! EU workload's chain never leaves `eu.`.
//!
//! # Example
//!
//! ```
//! use tower::{Layer, ServiceExt, service_fn};
//! use tower_bedrock_core::{
//!     CallReport, Classification, ClassifiedError, ErrorClass, ModelRequest, ThrottleKind,
//!     TokenDemand,
//! };
//! use tower_bedrock_fallback::{Chain, ModelFallbackLayer, Target, profile::Geo};
//!
//! #[derive(Clone)]
//! struct Ask {
//!     model: String,
//!     max_tokens: Option<u64>,
//!     report: Option<CallReport>,
//! }
//!
//! impl ModelRequest for Ask {
//!     fn model_id(&self) -> &str { &self.model }
//!     fn set_model_id(&mut self, id: &str) { self.model = id.to_owned(); }
//!     fn token_demand(&self) -> TokenDemand {
//!         TokenDemand { input_tokens: 100, max_output_tokens: self.max_tokens }
//!     }
//!     fn set_max_output_tokens(&mut self, n: u64) { self.max_tokens = Some(n); }
//!     fn report(&self) -> Option<&CallReport> { self.report.as_ref() }
//! }
//!
//! #[derive(Debug)]
//! struct SdkError;
//! impl std::fmt::Display for SdkError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str("sdk error")
//!     }
//! }
//! impl std::error::Error for SdkError {}
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! const SONNET: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
//! const HAIKU: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
//!
//! // global.sonnet -> us.sonnet -> us.haiku (at most 512 output tokens)
//! let layer = ModelFallbackLayer::new(
//!     Chain::cross_region(SONNET, &[Geo::Global, Geo::Us], false)
//!         .then(Target::new(HAIKU).max_tokens(512)),
//! )?;
//!
//! // A mock Bedrock where every Sonnet profile is overloaded.
//! let bedrock = service_fn(|ask: Ask| async move {
//!     if ask.model.contains("sonnet") {
//!         let class = ErrorClass::Throttled(ThrottleKind::ModelOverloaded);
//!         Err(ClassifiedError::new(SdkError, Classification::new(class).with_status(429)))
//!     } else {
//!         Ok(format!("answer from {} within {:?} tokens", ask.model, ask.max_tokens))
//!     }
//! });
//! let svc = layer.layer(bedrock);
//!
//! let report = CallReport::new();
//! let ask = Ask {
//!     model: format!("global.{SONNET}"),
//!     max_tokens: Some(4096),
//!     report: Some(report.clone()),
//! };
//! let answer = svc.oneshot(ask).await?;
//! assert_eq!(answer, format!("answer from {HAIKU} within Some(512) tokens"));
//!
//! let summary = report.summary();
//! assert!(summary.degraded());
//! assert_eq!(summary.served_by.as_deref(), Some(HAIKU));
//! assert_eq!(summary.tried.len(), 2); // global.sonnet, us.sonnet
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod chain;
mod future;
mod layer;
mod mode;
mod service;
mod triggers;

pub mod error;
pub mod profile;
pub mod stream;

pub use chain::{Chain, Target};
pub use error::BuildError;
pub use future::ResponseFuture;
pub use layer::{ModelFallbackBuilder, ModelFallbackLayer};
pub use mode::{ResponseMode, Served, Streaming, Tagged, Unary};
pub use service::ModelFallback;
pub use triggers::Triggers;
