//! `CircuitBreak`: per-model circuit breakers that fail fast while a model
//! is unhealthy and recover on their own.
//!
//! When Bedrock answers 503 for capacity reasons, hammering it slows its
//! recovery and makes users wait for timeouts. [`CircuitBreakLayer`] keeps
//! one breaker per key (the model id by default, any [`KeyExtractor`]),
//! created on first use, bounded in number, dropped when idle.
//!
//! - **Closed**: calls pass; outcomes are counted. Trip rules, combinable:
//!   failure rate over a count-based ring of the last N calls or a
//!   time-based window of buckets (with a minimum number of calls);
//!   failures in a row; slow-call rate; and, opt-in, an overloaded model
//!   opens its breaker at once for a set time.
//! - **Open**: calls are rejected at once with `Local(CircuitOpen)` and the
//!   time until the breaker probes again, without touching the inner
//!   service. The open duration grows on trips in a row, capped, jittered
//!   (seeded RNG): 5 s, doubling, at most 30 s by default, so a breaker
//!   lets calls through again soon after the service recovers.
//! - **Half-open**: exactly N probes pass at once (3 by default); the
//!   others are rejected with a short retry hint. Enough successes close it
//!   (2 of 3 by default: one unlucky probe does not reopen it), too many
//!   failures reopen it. A dropped probe frees its slot.
//!
//! What counts is decided by the error's class ([`default_outcome`]):
//! service and network unavailability, model timeouts, overload and
//! not-ready are failures; client errors, quota exceeded, local rejections,
//! unknown errors and a full connection pool (`Unavailable(ConnectionPool)`,
//! the client's problem, counted in `bedrock_connection_pool_exhausted_total`)
//! are ignored; rate throttles are ignored unless
//! [`count_rate_throttles`](CircuitBreakBuilder::count_rate_throttles).
//!
//! # Where it sits
//!
//! Under the retry layer (`QuotaAlignedRetry`), never above it: every
//! retry is a call to the model and must be counted, and a retry of a dead
//! model must be refused without reaching Bedrock. When nothing else can
//! answer (no fallback chain), the retry layer waits out a refusal
//! (`CircuitWait` in the retry crate) instead of failing the call.
//!
//! A [`CircuitBreakHandle`] reads every breaker and forces them open,
//! closed, or back to their initial state. Transitions are `tracing` events
//! and `metrics` (`bedrock_circuit_state{model}`,
//! `bedrock_circuit_transitions_total{model, from, to}`,
//! `bedrock_circuit_rejected_total{model}`, `bedrock_connection_pool_exhausted_total{model}`).
//! The `model` label is the breaker's key, bounded by
//! `tower_bedrock_core::labels::model_label` (past 100 distinct unregistered
//! ids, `other`).
//!
//! The closed-state path takes a read lock for the map lookup by `&str`,
//! one atomic load, and a short lock when the call ends: no allocation, no
//! lock held across an await.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_bedrock_breaker::{CircuitBreakLayer, CircuitState};
//! use tower_bedrock_core::{
//!     Classification, ClassifiedError, ErrorClass, LocalRejection, ModelRequest, TokenDemand,
//!     UnavailableKind,
//! };
//!
//! struct Req(String);
//! impl ModelRequest for Req {
//!     fn model_id(&self) -> &str { &self.0 }
//!     fn set_model_id(&mut self, id: &str) { self.0 = id.to_owned() }
//!     fn token_demand(&self) -> TokenDemand { TokenDemand::default() }
//! }
//! #[derive(Debug)]
//! struct SdkError;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = CircuitBreakLayer::builder()
//!     .consecutive_failures(2)
//!     .open_duration(Duration::from_secs(10))
//!     .open_jitter(0.0)
//!     .build()
//!     .expect("valid settings");
//! let handle = layer.handle();
//!
//! // A model that answers 503 every time.
//! let mut svc = ServiceBuilder::new().layer(layer).service_fn(|_req: Req| async {
//!     let c = Classification::new(ErrorClass::Unavailable(UnavailableKind::Service)).with_status(503);
//!     Err::<(), _>(ClassifiedError::new(SdkError, c))
//! });
//!
//! for _ in 0..2 {
//!     let e = svc.ready().await.unwrap().call(Req("claude".into())).await.unwrap_err();
//!     assert_eq!(e.class(), ErrorClass::Unavailable(UnavailableKind::Service));
//! }
//! // Open: the next call fails fast, and says when to come back.
//! let e = svc.ready().await.unwrap().call(Req("claude".into())).await.unwrap_err();
//! assert_eq!(e.class(), ErrorClass::Local(LocalRejection::CircuitOpen));
//! assert_eq!(e.rejection().unwrap().key(), Some("claude"));
//! assert_eq!(e.rejection().unwrap().retry_after(), Some(Duration::from_secs(10)));
//!
//! let breakers = handle.snapshot();
//! assert_eq!(breakers[0].state, CircuitState::Open);
//!
//! // Other models are not affected.
//! let e = svc.ready().await.unwrap().call(Req("nova".into())).await.unwrap_err();
//! assert!(!e.class().is_local());
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod breaker;
mod config;
pub mod error;
pub mod future;
mod handle;
mod key;
mod layer;
mod registry;
mod service;
pub mod stream;
mod window;

pub use breaker::{BreakerSnapshot, CircuitState};
pub use config::{
    CircuitBreakBuilder, DEFAULT_FAILURE_RATE, DEFAULT_HALF_OPEN_PROBES,
    DEFAULT_HALF_OPEN_SUCCESS_RATE, DEFAULT_MAX_OPEN_DURATION, DEFAULT_OPEN_DURATION, Outcome,
    default_outcome,
};
pub use error::ConfigError;
pub use handle::CircuitBreakHandle;
pub use key::{KeyExtractor, KeyFn, ModelIdKey};
pub use layer::CircuitBreakLayer;
pub use service::CircuitBreak;
