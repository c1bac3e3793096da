//! `tower-bedrock-budget-redis`: the `TokenBudget` of
//! [`tower_bedrock_budget`] shared by many processes through Redis.
//!
//! Bedrock's quota belongs to the account, per model and region; every
//! replica of every application draws from it. A per-process budget admits
//! the whole quota in each process. [`RedisStore`] keeps the budget's
//! windows in Redis instead, so every process admits against the same
//! counts. Switching is a constructor change:
//! [`BudgetBuilder::build_with_store`](tower_bedrock_budget::BudgetBuilder::build_with_store)
//! with a `RedisStore` instead of `build()`. Waiting, FIFO order and the
//! adaptive limit stay in the [`Budget`](tower_bedrock_budget::Budget);
//! tenant shares are enforced by both (see [Tenants](#tenants-and-weights-across-processes)).
//!
//! # Example
//!
//! Needs a Redis server: `BUDGET_REDIS_URL`, by default the local one
//! (the doctest is skipped without one).
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_bedrock_budget::Budget;
//! use tower_bedrock_budget_redis::RedisStore;
//! use tower_bedrock_core::{ClassifiedError, ModelRequest, ReportsUsage, TokenDemand, Usage};
//!
//! struct Req { model: String, prompt_tokens: u64, max_tokens: u64 }
//! impl ModelRequest for Req {
//!     fn model_id(&self) -> &str { &self.model }
//!     fn set_model_id(&mut self, id: &str) { self.model = id.to_owned() }
//!     fn token_demand(&self) -> TokenDemand {
//!         TokenDemand { input_tokens: self.prompt_tokens, max_output_tokens: Some(self.max_tokens) }
//!     }
//! }
//! struct Resp(Usage);
//! impl ReportsUsage for Resp {
//!     fn usage(&self) -> Option<Usage> { Some(self.0) }
//! }
//! type Error = ClassifiedError<std::io::Error>;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let url = std::env::var("BUDGET_REDIS_URL").unwrap_or("redis://127.0.0.1:6379".into());
//! let store = RedisStore::builder(url)
//!     .prefix(format!("doctest-{}", std::process::id())) // "tower-bedrock" by default
//!     .account("123456789012")
//!     .region("us-east-1")
//!     .build()
//!     .unwrap();
//! # if !store.wait_connected(Duration::from_secs(5)) {
//! #     let line = "skipped: budget-redis doctest: no Redis at BUDGET_REDIS_URL; install Redis or set BUDGET_REDIS_URL";
//! #     assert!(std::env::var("REQUIRE_EXTERNAL_TESTS").as_deref() != Ok("1"), "{line}");
//! #     use std::io::Write;
//! #     let _ = writeln!(std::io::stderr(), "{line}");
//! #     return;
//! # }
//! let budget = Budget::builder()
//!     .tokens_per_window(1_000)
//!     .window(Duration::from_secs(60))
//!     .max_wait(Duration::ZERO)
//!     .build_with_store(store.clone()) // the only change from the in-memory budget
//!     .unwrap();
//! // A mock model: 100 input tokens, 20 output tokens per call.
//! let model = service_fn(|_req: Req| async { Ok::<_, Error>(Resp(Usage::new(100, 20))) });
//! let mut svc = ServiceBuilder::new().layer(budget.layer()).service(model);
//!
//! let req = || Req { model: "amazon.nova-lite-v1:0".into(), prompt_tokens: 100, max_tokens: 400 };
//! // Reserves 100 + 400 in Redis, then settles to 100 + 20.
//! svc.ready().await.unwrap().call(req()).await.unwrap();
//! let snap = budget.snapshot("amazon.nova-lite-v1:0").unwrap();
//! assert_eq!((snap.tokens, snap.reserved_tokens), (120, 0));
//! // Every process with the same Redis, prefix, account and region counts
//! // against these windows.
//! assert_eq!(
//!     store.key_base("amazon.nova-lite-v1:0"),
//!     format!("doctest-{}:{{123456789012:us-east-1:amazon.nova-lite-v1:0}}", std::process::id()),
//! );
//! # }
//! ```
//!
//! # The windows in Redis
//!
//! The store keeps both of the budget's window modes
//! ([`WindowMode`](tower_bedrock_budget::WindowMode)), computed
//! server-side by Lua scripts, with the in-memory store's rules. Every key
//! of one budget key is under `<base>` = `prefix:{account:region:key}` (the
//! braces are a Redis Cluster hash tag: one key's hashes live in one
//! slot).
//!
//! **Fixed windows** (the budget's default, Bedrock's way of counting):
//!
//! - `<base>:fx`, one hash: the current window's index (`w`), the usage
//!   settled in it (`u`), the requests admitted in it (`q`), and the same
//!   for the day (`dw`, `du`); a window index behind the clock reads as an
//!   empty window;
//! - `<base>:rsv`, the reservations of the calls in flight: one field per
//!   instance, `tokens:last_touch`. An instance not heard of on the key for
//!   two windows (at least five minutes) is taken for dead and its field
//!   is pruned, so a crashed process does not hold quota for ever;
//! - **admission** (one `EVALSHA`, atomic): settled + every live instance's
//!   reservations + the charge must fit the limit (and the requests, and
//!   the day); the charge is added to this instance's reservations;
//! - **settlement** removes the reservation from this instance's field and
//!   bills the real usage to the current window (the request stays in the
//!   window it was admitted in, refunded there if still current).
//!
//! **Sliding windows**: the in-memory store's ring of sub-window counters
//! (see the budget crate's docs):
//!
//! - three hashes, `<base>:tok`, `<base>:req` and `<base>:day`. Field `h`
//!   is the newest sub-window, `s` the running sum, and one field per live
//!   sub-window holds its count;
//! - **admission** is one `EVALSHA`: advance the three rings, check every
//!   limited window, charge all three or refuse with the sub-window
//!   boundary at which enough will have expired. One round trip, atomic;
//! - **settlement** adjusts the sub-window the reservation was charged in,
//!   or the current one when that has left the window, exactly like the
//!   in-memory store.
//!
//! In both modes, per tenant that used the key one ring `<base>:t:<tenant>`
//! (its token usage over the last window) and one hash `<base>:ten` of the
//! tenants contending for the key (see
//! [Tenants](#tenants-and-weights-across-processes)). Settlement (and a
//! refund, which is a settlement to zero, and the refund of a reservation
//! whose future was dropped) is queued (settlement runs from `Drop`) and
//! applied in order with the key's other operations. **Every key has an
//! expiry**: two ring spans (2 x (window + sub-window)) for the sliding
//! hashes and the tenants' rings, refreshed whenever their head moves, and
//! for the contention hash, refreshed by each refusal; two day spans for
//! the fixed-window hash, the reservations hash, the day hash and the
//! settlement sequence hash; the instances set expires too. An idle budget
//! leaves nothing behind (`tests/expiry.rs`).
//!
//! Sub-windows and windows are numbered in microseconds since the UNIX
//! epoch (so every process agrees), with lengths rounded down to a whole
//! microsecond. With lengths that are whole numbers of microseconds, the
//! Redis store makes exactly the in-memory store's decisions
//! (`tests/differential.rs` checks this on seeded random sequences in both
//! modes, and `tests/behaviour.rs` runs the budget's whole behavioural
//! suite against this store, on the caller's clock because the suite steps
//! tokio's paused time across windows; `tests/redis_clock.rs` checks both
//! modes through the budget on Redis's own clock, in real time).
//!
//! ## Time, and the error bound across processes
//!
//! By default ([`TimeSource::Redis`]) the scripts read Redis's clock
//! (`TIME`), so all processes share one clock and one atomic
//! check-and-charge. With fixed windows, what all processes have settled
//! in a window plus what they have in flight never exceeds the limit at an
//! admission (the quota's own rule). With sliding windows, the tokens
//! admitted across all processes in any interval of one window's length
//! never exceed the limit (no error in the unsafe direction; clock skew
//! between machines does not enter). The sliding window's conservative
//! error is the ring's: a charge counts at most one
//! sub-window longer than in an exact sliding log, so under a sustained
//! backlog the throughput is `n / (n + 1)` of the quota (99 % with 100
//! sub-windows). `tests/multiprocess.rs` checks both with three OS
//! processes. [`TimeSource::Client`] uses the caller's clock instead
//! (deterministic tests under tokio's paused time; the skew between hosts
//! then adds to the bound).
//!
//! # Waiting across processes: a computed wake-up time
//!
//! A refused reservation comes back with the instant at which enough of
//! the **shared** window expires for it (computed by the script from every
//! process's charges); the budget's head waiter sleeps until then and
//! tries again, so nobody polls Redis. Within a process, a settlement also
//! wakes the head waiter at once. A refund made by *another* process is
//! not signalled: the waiter may sleep until its computed time although
//! room appeared earlier (conservative; bounded by that time). With fixed
//! windows, when it is calls in flight (of any process) that hold the
//! room, the computed time is a twentieth of a window ahead rather than
//! the next window, so a head waiter looks again about twenty times a
//! window while others' calls settle. Pub/sub on
//! refunds would lift this, but the budget has no way yet for a store to
//! wake its waiters (it would need a notification hook in
//! [`BudgetStore`](tower_bedrock_budget::BudgetStore)), so it is not used.
//!
//! # Tenants and weights across processes
//!
//! Each process's [`Budget`](tower_bedrock_budget::Budget) orders the
//! requests waiting *in that process* by priority and weighted recent
//! usage, as in memory. On top of that, the budget tells the store the
//! tenant (name and weight) of every reservation
//! ([`StoreKey::reserve_for`](tower_bedrock_budget::StoreKey::reserve_for)),
//! and the reserve script holds the **token shares globally**, across
//! every process sharing the key:
//!
//! - each tenant's admitted tokens are kept in a sliding-window ring of its
//!   own (`<base>:t:<tenant>`, charged by the reservation, adjusted by its
//!   settlement or refund in the same atomic scripts);
//! - a tenant refused (by a full window or by its share) records itself in
//!   `<base>:ten` as *contending* until its expected retry (at most one
//!   window ahead) plus a tenth of the window (at least two sub-windows),
//!   with its weight;
//! - a charge that fits the windows is still refused when other tenants
//!   contend and it would take the tenant's usage in the window beyond
//!   `limit x weight / (its weight + the contending others' weights)` (at
//!   least one charge). The refusal
//!   ([`WindowKind::Share`](tower_bedrock_budget::WindowKind::Share))
//!   names the sub-window at which the tenant's own usage will have
//!   dropped enough, so the waiter sleeps until then (no polling), and the
//!   budget skips that tenant when it picks the next request to try until
//!   then: another tenant's request waiting behind it in the same process
//!   goes at once (`tests/tenants.rs`,
//!   `a_tenant_refused_its_share_steps_aside`);
//! - a tenant alone, or whose rivals are not waiting, may use the whole
//!   window (it borrows what the others leave idle); when a rival starts
//!   contending, the borrower is held back until its usage has slid down
//!   to its share, and the room it leaves goes to the rival.
//!
//! `tests/tenants.rs` checks the rule step by step (two store instances
//! as two processes, paused time): equal weights split a saturated window
//! 50/50, weights 3:1 give 70/20 of 100 tokens with 10-token charges (a
//! share is rounded down to whole charges, at least one, and what the
//! rounding leaves stays idle while both contend), and refunds lower the
//! tenant's usage. `tests/multiprocess_tenants.rs` checks it with three OS processes: a
//! quiet tenant (one caller) and a noisy one of equal weight (five callers
//! in each of two processes). The quiet tenant gets 50 % of the quota
//! (asserted within 42-58 %), the window never exceeds the limit and the
//! throughput stays at 98 % of the quota; with the tenant hidden from the
//! store the quiet tenant gets about 15 %.
//!
//! What does not hold globally: **priorities** (interactive before batch)
//! order waiters within a process only; the shares cover the **token**
//! limit only (the request and day limits are shared first-come); a tenant
//! must have the same weight in every process (the latest writer's weight
//! is what the others see); and while a connection is **degraded** the
//! local share ignores tenants (each process's own scheduler still divides
//! its local share), and charges made locally are merged into the key's
//! windows but not into the tenants' rings. Contention is known only from
//! refusals, so a tenant that stops sending keeps the others at their
//! shares for up to a tenth of a window after its expected retry, and a
//! borrower is pushed back to its share only as its usage slides out of
//! the window (at most one window). The default tenant of
//! [`Budget::layer`](tower_bedrock_budget::Budget::layer) is a tenant like
//! any other (`default`, weight 1).
//!
//! # Degraded mode: Redis unreachable, slow or restarted
//!
//! A round trip that fails or takes longer than the response timeout turns
//! the connection **degraded**: nothing fails, the budget keeps serving.
//!
//! - Reservations are made from a **local share**: the limits divided by
//!   the last known number of live instances (every instance registers in
//!   a sorted set with a heartbeat; [`RedisStoreBuilder::expected_instances`]
//!   before the first heartbeat), kept in an in-memory store with the
//!   budget's window mode. The local window does not start empty: it is
//!   primed with this instance's part (the same division) of the shared
//!   window's last known usage, so the instances together do not admit a
//!   second quota in the window the outage began in (with fixed windows
//!   the priming leaves when that window ends).
//! - Settlements of reservations made in Redis are kept in order and
//!   replayed after the reconnect. Each carries a sequence number per
//!   instance and key, which the script records: a settlement that reached
//!   Redis although its reply was lost is recognised and skipped. None is
//!   lost, none counted twice (`tests/faults.rs` freezes a server while
//!   settlements are on their way and checks the exact totals).
//! - Reconnection is automatic, with exponential backoff; scripts are
//!   reloaded on every new connection (and on `NOSCRIPT`). A connection
//!   found dropped is replaced at once, before degrading.
//! - After the reconnect, the charges made from local shares are merged
//!   into Redis (current sub-window), and settlements of those local
//!   reservations that end later go to Redis too.
//! - One over-count remains possible, in the safe direction: a reservation
//!   whose reply was lost may have been charged in Redis and is charged
//!   locally too; it leaves the window with it.
//! - **Redis restarted empty** (the connection comes back, the keys are
//!   gone): the next reservation of a key finds its window missing and
//!   re-seeds it, in the same atomic script, with this instance's part of
//!   the window as last seen (its usage divided by the live instances, if
//!   seen in the current window) and, with fixed windows, its own calls in
//!   flight; so the processes do not admit a second quota in the window
//!   after the restart. With one instance, what is admitted after the
//!   restart is at most the limit minus the usage seen before it
//!   (`tests/faults.rs`, `restart_mid_window_reseeds_the_window`: 400 of
//!   1000 left, 1000 admitted without the re-seed); with `N` instances the
//!   seed is an estimate of each one's part.
//! - The settlement sequence hash keeps one field per instance, with the
//!   time it was last written; a field silent for longer than two windows
//!   (at least five minutes: the instance died) is pruned when another
//!   instance records a settlement (`tests/expiry.rs`).
//! - Error bound. While degraded, each instance admits at most its share
//!   in any window, so together at most the quota (if the live count was
//!   right). Across a reconnect, the first instance back admits against a
//!   shared window that does not yet hold the others' local charges: in
//!   that one window, at most `(2N - 1) / N` of the quota for `N`
//!   instances (in practice they reconnect within a backoff of each other
//!   and the merged charges, placed in the current sub-window, hold the
//!   window conservatively). `tests/multiprocess_outage.rs` kills and
//!   restarts Redis under three processes and checks both.
//!
//! The gauge [`names::STORE_DEGRADED`] and a `warn` event
//! (`budget store degraded`) say it; an `info` event
//! (`budget store reconnected to Redis`) and the gauge back to 0 say it
//! is over.
//!
//! # Connections
//!
//! A store owns a bounded pool of [`pool_size`](RedisStoreBuilder::pool_size)
//! multiplexed connections (2 by default) with connect and response
//! timeouts, driven by one background thread with its own small tokio
//! runtime, so the store works from any caller (a runtime without I/O, a
//! paused test clock, `Drop`). Each budget key always uses the same
//! connection; what is queued for a connection is sent as one pipeline,
//! up to four pipelines in flight per connection.
//! The URL comes from configuration: `redis://[user:password@]host:port/db`
//! for authentication, `rediss://` for TLS with the `tls` feature (rustls;
//! install a rustls `CryptoProvider` at start-up), `redis+unix://` for a
//! socket. Passwords never appear in errors, events or `Debug` output.
//! The connections go to one server (or a proxy in front of several): the
//! key layout is ready for Redis Cluster (hash tags), the client is not.
//!
//! # Snapshots
//!
//! [`StoreKey::snapshot`](tower_bedrock_budget::StoreKey::snapshot) is
//! synchronous; this store answers it with a fresh read ordered after this
//! process's queued settlements, blocking the caller up to
//! [`snapshot_timeout`](RedisStoreBuilder::snapshot_timeout) (then the last
//! known state): that is what `Budget::snapshot` and
//! `Budget::snapshots` see. The budget's utilisation gauges, read on the
//! request path, use
//! [`StoreKey::gauge_snapshot`](tower_bedrock_budget::StoreKey::gauge_snapshot)
//! instead, which this store answers from the sums of the key's last reply
//! (never a round trip, possibly one operation behind).
//! [`fresh_snapshots(false)`](RedisStoreBuilder::fresh_snapshots) makes
//! every snapshot answer that way. The reserved counts are this process's
//! calls in flight.
//!
//! # Running the tests
//!
//! `cargo test -p tower-bedrock-budget-redis` uses the Redis server at
//! `BUDGET_REDIS_URL` (default `redis://127.0.0.1:6379`) when one answers
//! there, else starts its own `redis-server` (from `PATH`, or
//! `REDIS_SERVER_BIN`) on a free loopback port, stopped when the tests end;
//! the fault and outage tests always start their own. Where neither is
//! possible, each test that needs Redis prints one line,
//! `skipped: budget-redis <suite>: ...`, and passes, so the command passes
//! on a machine with only a Rust toolchain. With `REQUIRE_EXTERNAL_TESTS=1`
//! (as `.ci/run` sets) a missing Redis fails the test instead.
//!
//! # Metrics and events
//!
//! The budget's own metrics are unchanged. This crate adds, with label
//! `namespace` (`prefix:account:region`): [`names::STORE_DEGRADED`],
//! [`names::STORE_DEGRADED_TRANSITIONS`], [`names::STORE_LOCAL_ADMISSIONS`],
//! [`names::STORE_LIVE_INSTANCES`] and [`names::STORE_REPLAYS_SKIPPED`].
//! Events carry keys, counts and error categories, never URLs or request
//! content.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod driver;
pub mod error;
pub mod names;
mod scripts;
mod store;

pub use config::{RedisStoreBuilder, TimeSource};
pub use error::BuildError;
pub use store::{RedisKey, RedisStore, ReserveFuture};
