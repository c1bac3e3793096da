//! `TokenBudget`: a token-aware limiter for Amazon Bedrock.
//!
//! Most 429s are self-inflicted: a process sends what the quota cannot
//! hold. This crate admits each request against the model's quota *before*
//! sending it, counting the way Bedrock itself does:
//!
//! - at admission it **reserves** the request's demand: estimated input
//!   tokens plus the output cap (`max_tokens`, or a per-model default when
//!   unset) times the model's output burndown rate (5 for the Claude 4
//!   family, 1 otherwise; configurable);
//! - when the response arrives it **settles** the reservation to the real
//!   usage (input + cache writes + output x burndown), refunding or charging
//!   the difference; streams settle when they end
//!   ([`ReportsUsage::defer_usage`](tower_bedrock_core::ReportsUsage::defer_usage));
//!   a response without usage keeps its reservation;
//! - a failed call is settled with what Bedrock can have counted: nothing
//!   for a refusal or a 503, the input for a model that ran and failed,
//!   everything when the request may still be running (see
//!   [`default_error_settlement`] for the table and the evidence).
//!
//! Limits are per key (the model or inference profile id by default): tokens
//! per window (TPM), optionally requests per window (RPM) and tokens per
//! day, **all of the quota** by default
//! ([`BudgetBuilder::slack_tokens`] holds some back for estimate error, in
//! tokens: configure your quota as it is). When there is no room, a request
//! **waits** in FIFO order per key and tenant, up to the budget's maximum
//! wait and never past the call's deadline
//! ([`call_deadline`](tower_bedrock_core::deadline::call_deadline)), and is
//! then **shed** with `Local(BudgetExhausted)` (or `Local(DeadlineExceeded)`)
//! carrying when room is expected. A request larger than the whole window
//! fails at once with `Local(RequestTooLarge)`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_bedrock_budget::Budget;
//! use tower_bedrock_core::{
//!     ClassifiedError, LocalRejection, ModelRequest, ReportsUsage, TokenDemand, Usage,
//! };
//!
//! struct Req { model: String, prompt_tokens: u64, max_tokens: u64 }
//! impl ModelRequest for Req {
//!     fn model_id(&self) -> &str { &self.model }
//!     fn set_model_id(&mut self, id: &str) { self.model = id.to_owned() }
//!     fn token_demand(&self) -> TokenDemand {
//!         TokenDemand { input_tokens: self.prompt_tokens, max_output_tokens: Some(self.max_tokens) }
//!     }
//! }
//! #[derive(Debug)]
//! struct Resp(Usage);
//! impl ReportsUsage for Resp {
//!     fn usage(&self) -> Option<Usage> { Some(self.0) }
//! }
//! type Error = ClassifiedError<std::io::Error>;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let budget = Budget::builder()
//!     .tokens_per_window(1_000) // the quota: 1 000 tokens per minute
//!     .window(Duration::from_secs(60))
//!     .max_wait(Duration::ZERO) // shed at once, for the example
//!     .build()
//!     .unwrap();
//! // A mock model: 100 input tokens, 20 output tokens per call.
//! let model = service_fn(|_req: Req| async { Ok::<_, Error>(Resp(Usage::new(100, 20))) });
//! let mut svc = ServiceBuilder::new().layer(budget.layer()).service(model);
//!
//! let req = || Req { model: "amazon.nova-lite-v1:0".into(), prompt_tokens: 100, max_tokens: 400 };
//! // Reserves 100 + 400, then settles to 100 + 20.
//! svc.ready().await.unwrap().call(req()).await.unwrap();
//! let snap = budget.snapshot("amazon.nova-lite-v1:0").unwrap();
//! assert_eq!((snap.tokens, snap.reserved_tokens), (120, 0));
//!
//! // Two more fit (120 + 2 x 500 would not, but settled calls make room).
//! svc.ready().await.unwrap().call(req()).await.unwrap();
//! svc.ready().await.unwrap().call(req()).await.unwrap();
//! assert_eq!(budget.snapshot("amazon.nova-lite-v1:0").unwrap().tokens, 360);
//!
//! // A request larger than the whole window is refused at once.
//! let huge = Req { max_tokens: 5_000, ..req() };
//! let err = svc.ready().await.unwrap().call(huge).await.unwrap_err();
//! assert_eq!(err.class(), tower_bedrock_core::ErrorClass::Local(LocalRejection::RequestTooLarge));
//! # }
//! ```
//!
//! # Windows: fixed or sliding
//!
//! **Fixed windows** ([`WindowMode::Fixed`], the default) count like
//! Bedrock's quota as the workspace's emulator models it: windows aligned on
//! the wall clock ([`BudgetBuilder::clock`]; minutes for a 60 s window,
//! numbered from the UNIX epoch so every process agrees), and a request is
//! admitted when
//!
//! ```text
//! usage settled in this window + reservations of the calls in flight + its demand <= limit
//! ```
//!
//! A call's real usage is billed to the window in which it **completes**;
//! its reservation counts in every window until then; requests count in the
//! window they were admitted in. When a window turns, its settled usage is
//! gone at once: a backlog is admitted on the minute, as Bedrock would.
//!
//! **Sliding windows** ([`WindowMode::Sliding`]) count every charge
//! (reservations included) for one window after it was made, to one
//! sub-window ([the algorithm](#the-sliding-window)). They never admit more
//! than the limit in *any* interval of one window's length, which is safe
//! whatever the server's window is, and costly: a charge holds room for a
//! whole window after the call ended, so a budget that slides against a
//! quota that resets on the minute waits where Bedrock would admit.
//!
//! The evidence, and where it is thin. AWS documents the reservation at
//! the start of a request (input plus `max_tokens` times the burndown rate,
//! against the tokens-per-minute quota) and its adjustment to the real
//! usage at the end; the quotas are stated per minute. AWS does **not**
//! document the window's shape (fixed minutes or sliding), nor in which
//! window an adjustment lands. The workspace's emulator, whose model the
//! default follows, implements fixed minute windows on the wall clock; the
//! retry layer's window alignment (retrying a few seconds after the next
//! minute starts) rests on the same reading, and users report throttles
//! that clear at the top of the minute. If your account's quota turns out
//! to slide, pick [`WindowMode::Sliding`]: it can never admit more than a
//! sliding quota would.
//!
//! # Admission, waiting and shedding
//!
//! - A request that fits now goes now: it tries the store at once when no
//!   request waits, and also when the request at the head of the queue
//!   cannot go (it was refused, and no settlement freed room since): a
//!   small request is never held behind a large one that waits for the next
//!   window. Requests already waiting keep their FIFO order per tenant.
//! - A request that cannot fit the current limits at all (larger than the
//!   limit lowered by the adaptive rule) fails at once with
//!   `Local(BudgetExhausted)` and a retry-after, instead of holding the
//!   head of the queue.
//! - A waiting request is woken when a settlement frees room, or when the
//!   refusal said room appears: for fixed windows the next window, or a
//!   twentieth of a window later when only calls in flight hold the room
//!   (a store shared by processes hears of the others' settlements only by
//!   looking again).
//! - The wait never passes the budget's maximum wait nor the call's
//!   deadline. When the room time is beyond that end and no call of this
//!   process is in flight (so no settlement can free room sooner), the
//!   request is shed at once: waiting would buy nothing.
//! - There is no pacing: nothing holds back a request that fits. (The
//!   pacing of earlier versions drained a sliding window's backlog at
//!   `limit / window` measured in *reserved* tokens; with a 5x burndown and
//!   a generous `max_tokens` it admitted a fraction of what the quota
//!   allowed: 5 of 12 concurrent calls, with the window 1 % used, in the
//!   axum example. Fixed windows free their room on the minute, as Bedrock
//!   does, so there is no burst pattern to spread.)
//!
//! Several applications share one quota through **tenants**:
//! [`Budget::tenant`]`(name, weight)` gives each its own layer. Each tenant
//! has its own FIFO queue per key; when room appears, the next request is
//! taken from the tenant with the lowest weighted recent usage (its share of
//! the key's tokens or requests, whichever is scarcer, decayed over one
//! window, divided by its weight), so a noisy tenant cannot starve a quiet
//! one, and a tenant may use whatever the others leave idle (nothing is set
//! aside for a tenant that sends nothing). With fixed windows the shares
//! apply to the requests waiting when room appears (typically on the
//! minute): give requests a maximum wait of about a window for the shares
//! to hold. Tenants in the [`Priority::Interactive`] class are served
//! before [`Priority::Batch`]. With a single tenant the order is plain FIFO
//! per key.
//!
//! When a rate throttle comes back despite admission (other processes share
//! the account, or an estimate ran low), the window is marked full until
//! its end; only throttles in consecutive windows lower the limit, and it
//! recovers within about a window of clean traffic ([`Adaptive`]).
//!
//! # The sliding window
//!
//! A window of length `W` is cut into `n` sub-windows ("slots", 100 by
//! default) of length `g = W / n`; the builder refuses an `n` that does not
//! divide `W` into whole nanoseconds. Time is numbered in slots since the
//! UNIX epoch on the budget's clock; each key keeps one counter per slot
//! for the newest `n + 1` slots and their running sum.
//!
//! - **Admission** of `x` at `t`: advance the ring to `t`'s slot (zeroing
//!   the slots that fell out, at most `n + 1`), admit iff `sum + x <=
//!   limit`, add `x` to the current slot. O(1).
//! - **Settlement** adjusts the slot the reservation was charged in if it is
//!   still in the ring (else the charge already left the window; an extra
//!   charge then goes to the current slot).
//! - **When room is expected** (on refusal only, O(n)): the first slot
//!   boundary at which enough will have expired.
//!
//! Memory is fixed per key: 8 bytes per slot and window (tokens, requests,
//! and the day window with 24 slots by default), about 2 KiB, plus about
//! 1 KiB of queue, tenant and adaptive state: about 3 KiB per key whatever
//! the traffic (`Budget::key_memory_bytes` reports it). Fixed windows take
//! a few dozen bytes of counters.
//!
//! **Error bound against an exact sliding log.** An exact log admits `x` at
//! `t` iff the charges in `(t - W, t]` plus `x` fit. The ring counts the
//! slots covering `[t - W - φ, t]`, where `φ < g` is how far `t` is into its
//! slot: a superset. Hence the error is one-sided and bounded by one
//! sub-window:
//!
//! 1. the tokens admitted in *any* interval of length `W` never exceed the
//!    limit (everything in such an interval was counted when its last
//!    charge was admitted);
//! 2. whenever the ring refuses, an exact log over `(t - W - g, t]` would
//!    refuse too: a charge stops counting at most `g` later than in an exact
//!    log.
//!
//! Under a sustained backlog admissions fall on slot boundaries, so each
//! unit of quota is held `W + g`: throughput is `n / (n + 1)` of the limit
//! (99 % by default). The property test `tests/window_prop.rs` checks both
//! bounds (and that the expected room time is exact) on random arrival
//! sequences with refunds.
//!
//! # Stores
//!
//! The per-key windows live in a [`BudgetStore`]; [`InMemoryStore`] is the
//! default. Waiting, FIFO order, tenants and the adaptive limit stay in the
//! [`Budget`], so another store (a Redis store shared by many processes)
//! only implements reservation, settlement and a snapshot, for both window
//! modes, and switching is a constructor change:
//! [`BudgetBuilder::build_with_store`]. The budget tells the store each
//! reservation's tenant ([`StoreKey::reserve_for`], [`StoreKey::settle_for`]);
//! the in-memory store ignores it (the scheduler above already divides one
//! process's admissions), while a store shared by many processes can use it
//! to hold the tenants' shares across them, refusing with
//! [`WindowKind::Share`] (the budget then lets other tenants' requests go
//! first until the refusal's room time).
//!
//! # Testing another store
//!
//! With the `testing` feature, the `testing` module holds the behavioural
//! test suite of this crate as functions generic over the store (with its
//! mocks), and the `budget_store_tests!` macro generates a `#[test]` for
//! each:
//!
//! ```no_run
//! # #[cfg(feature = "testing")]
//! # mod suite {
//! // In a test file of the store's crate (here with the in-memory store):
//! tower_bedrock_budget::budget_store_tests!(tower_bedrock_budget::InMemoryStore::new());
//! # }
//! ```
//!
//! # Metrics and events
//!
//! Through the `metrics` facade, with the names of
//! [`tower_bedrock_core::names`]: `bedrock_budget_utilization_ratio{model,
//! window}` (windows `tokens`, `requests`, `day`),
//! `bedrock_budget_effective_limit_tokens{model}` (the learned limit),
//! `bedrock_budget_waits_total{model, tenant}`,
//! `bedrock_budget_sheds_total{model, tenant, reason}` and the histogram
//! `bedrock_budget_wait_seconds{model, tenant}`. The gauges are kept true
//! as time passes: each key has a small task (on the runtime that first
//! used it) that rewrites them every sub-window while the window holds
//! usage, calls in flight or waiters, and sleeps once it is empty, so a
//! burst followed by silence lets the utilisation fall to zero when the
//! window ends. A `tracing` event is emitted when a request waits (debug),
//! is shed (info) or when the adaptive limit is lowered (info). Events
//! carry keys, tenants and token counts, never request content. Metric
//! handles are made when a key (and a tenant on it) is first used: install
//! the metrics recorder before the first call.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod adaptive;
mod admission;
mod budget;
mod builder;
pub mod error;
mod estimate;
mod fixed;
pub mod future;
mod gauges;
mod key;
mod layer;
mod memory;
mod scheduler;
mod settlement;
mod snapshot;
pub mod store;
mod tenant;
mod window;

#[cfg(feature = "testing")]
pub mod testing;

pub use adaptive::Adaptive;
pub use budget::Budget;
pub use builder::BudgetBuilder;
pub use error::BuildError;
pub use estimate::{RequestDemand, ReservationPolicy, TokenEstimator};
pub use future::ResponseFuture;
pub use layer::{KeyExtractor, KeyFn, ModelIdKey, TokenBudget, TokenBudgetLayer};
pub use settlement::{ErrorSettlement, default_error_settlement};
pub use snapshot::{KeySnapshot, TenantSnapshot};
pub use store::{
    BudgetStore, Charge, InMemoryKey, InMemoryStore, Limits, Refusal, Reservation, StoreKey,
    StoreSnapshot, TenantTag, WindowKind, WindowMode, WindowSpec,
};
pub use tenant::{Priority, Tenant};
