//! The behavioural test suite of the budget, generic over the store, with
//! its mocks (feature `testing`).
//!
//! Every `pub async fn` taking a store below is one test: it builds a
//! [`Budget`] over the given store, drives it with [`MockBedrock`] under
//! tokio's paused time, and panics on failure. Run them all for a store
//! with [`budget_store_tests!`](crate::budget_store_tests):
//!
//! ```no_run
//! # mod suite {
//! tower_bedrock_budget::budget_store_tests!(tower_bedrock_budget::InMemoryStore::new());
//! # }
//! ```
//!
//! The store expression is evaluated inside the paused runtime, once per
//! test.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::{Instant, sleep, sleep_until};
use tower_bedrock_core::{
    CallReport, Classification, ClassifiedError, ClientKind, ErrorClass, LocalRejection,
    ModelRequest, ReportsUsage, ThrottleKind, TokenDemand, UnavailableKind, Usage, UsageCallback,
};
use tower_layer::Layer;
use tower_service::Service;

use tower_bedrock_core::Clock;

use crate::{
    Budget, BudgetBuilder, BudgetStore, Charge, Limits, Priority, StoreKey, TokenBudget,
    TokenBudgetLayer, WindowMode, WindowSpec,
};

/// Wall time at which every test starts: a whole number of minutes (and of
/// days of 1440 minutes... almost: 1 800 000 000 s is a multiple of 60 and
/// 3600), so window boundaries fall on whole test seconds. Stores that
/// read a clock of their own anchor it here too.
pub const EPOCH: Duration = Duration::from_secs(1_800_000_000);

/// The clock of the suite: [`EPOCH`] now (call it at the start of a test,
/// under paused time).
pub fn test_clock() -> Clock {
    Clock::starting_at(EPOCH)
}

/// Runs a test future on a current-thread runtime with paused time. The
/// closure is called inside the runtime (so stores see paused time).
pub fn run_paused<F: Future>(test: impl FnOnce() -> F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async move { test().await })
}

/// Generates one `#[test]` per behavioural test of [`testing`](crate::testing)
/// for the store built by the given expression.
///
/// `budget_store_tests!(if guard; make)` runs each test only when `guard`
/// (an expression evaluated at the start of each test) is true: a store
/// that needs a server skips its tests where there is none.
#[macro_export]
macro_rules! budget_store_tests {
    (if $guard:expr; $make:expr) => {
        $crate::budget_store_tests!(@each $guard; $make;
            store_contract,
            store_contract_fixed,
            admits_up_to_the_limit_and_not_beyond,
            exact_fit_is_admitted,
            reservations_wait_only_for_settlements,
            fixed_window_boundaries,
            window_refreshes,
            settlement_refunds_and_charges,
            missing_usage_keeps_and_streams_settle_when_they_end,
            errors_refund_or_keep_by_class,
            cancellation_leaks_nothing,
            fifo_order,
            max_wait_sheds_with_retry_after,
            deadline_bounds_the_wait,
            oversized_request_fails_at_once,
            lowered_limit_fails_at_once,
            throttle_marks_the_window_full,
            request_and_day_limits,
            tenant_fairness,
            tenant_weighted_shares,
            priority_classes,
            clones_share_state,
            adaptive_limit_converges,
            seed_scenario
        );
    };
    ($make:expr) => {
        $crate::budget_store_tests!(if true; $make);
    };
    (@each $guard:expr; $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if !$guard {
                    return;
                }
                $crate::testing::run_paused(|| $crate::testing::$name($make));
            }
        )*
    };
}

/// A store wrapper whose reservations answer only on their second poll,
/// like a remote store would: running the suite against
/// `YieldingStore::new(InMemoryStore::new())` exercises the layer's
/// asynchronous reservation path. The inner reservation is made when the
/// future answers, so dropping it pending charges nothing.
#[derive(Debug, Clone)]
pub struct YieldingStore<St>(St);

impl<St> YieldingStore<St> {
    /// Wraps a store.
    pub fn new(store: St) -> Self {
        YieldingStore(store)
    }
}

impl<St: BudgetStore> BudgetStore for YieldingStore<St>
where
    St::Key: Clone + Unpin,
{
    type Key = YieldingKey<St::Key>;

    fn key(&self, key: &str, spec: &WindowSpec) -> Self::Key {
        YieldingKey(self.0.key(key, spec))
    }
}

/// A key of a [`YieldingStore`].
#[derive(Debug, Clone)]
pub struct YieldingKey<K>(K);

/// The reservation future of a [`YieldingKey`].
#[derive(Debug)]
pub struct YieldOnce<K: StoreKey> {
    key: K,
    limits: Limits,
    charge: Charge,
    now: Instant,
    yielded: bool,
    inner: Option<K::Reserve>,
}

impl<K: StoreKey + Clone + Unpin> Future for YieldOnce<K> {
    type Output = Result<crate::Reservation, crate::Refusal>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let now = this.now.max(Instant::now());
        let (key, limits, charge) = (&this.key, this.limits, this.charge);
        let f = this
            .inner
            .get_or_insert_with(|| key.reserve(limits, charge, now));
        Pin::new(f).poll(cx)
    }
}

impl<K: StoreKey + Clone + Unpin> StoreKey for YieldingKey<K> {
    type Reserve = YieldOnce<K>;

    fn reserve(&self, limits: Limits, charge: Charge, now: Instant) -> Self::Reserve {
        YieldOnce {
            key: self.0.clone(),
            limits,
            charge,
            now,
            yielded: false,
            inner: None,
        }
    }

    fn settle(&self, reservation: crate::Reservation, actual: Charge, now: Instant) {
        self.0.settle(reservation, actual, now);
    }

    fn snapshot(&self, now: Instant) -> crate::StoreSnapshot {
        self.0.snapshot(now)
    }
}

/// What the mock model answers to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A response carrying this usage.
    Usage(Usage),
    /// A response without usage.
    NoUsage,
    /// A stream whose usage is known when it ends
    /// ([`MockResponse::finish`]).
    Stream(Usage),
    /// A failure of this class.
    Fail(ErrorClass),
}

/// A request to the mock model.
#[derive(Debug, Clone)]
pub struct MockRequest {
    /// Model id.
    pub model: String,
    /// Caller-chosen id, logged by the mock.
    pub id: u64,
    /// Input tokens (the estimate the budget sees).
    pub input_tokens: u64,
    /// Output cap.
    pub max_tokens: Option<u64>,
    /// What the mock answers.
    pub reply: Reply,
    /// An attached call report.
    pub report: Option<CallReport>,
}

impl MockRequest {
    /// A request of `input + max` tokens answered with exactly that usage.
    pub fn new(model: &str, id: u64, input: u64, max: u64) -> Self {
        MockRequest {
            model: model.to_owned(),
            id,
            input_tokens: input,
            max_tokens: Some(max),
            reply: Reply::Usage(Usage::new(input, max)),
            report: None,
        }
    }

    /// Sets the reply.
    #[must_use]
    pub fn reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }
}

impl ModelRequest for MockRequest {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn set_model_id(&mut self, model_id: &str) {
        self.model = model_id.to_owned();
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand {
            input_tokens: self.input_tokens,
            max_output_tokens: self.max_tokens,
        }
    }
    fn report(&self) -> Option<&CallReport> {
        self.report.as_ref()
    }
}

/// A response of the mock model.
pub struct MockResponse {
    /// The request's id.
    pub id: u64,
    usage: Option<Usage>,
    stream: Option<Usage>,
    settle: Option<UsageCallback>,
}

impl fmt::Debug for MockResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockResponse")
            .field("id", &self.id)
            .finish()
    }
}

impl MockResponse {
    /// Ends a stream, reporting its usage.
    pub fn finish(mut self) {
        if let (Some(cb), Some(u)) = (self.settle.take(), self.stream) {
            cb(Some(u));
        }
    }
}

impl Drop for MockResponse {
    fn drop(&mut self) {
        // A stream dropped before its end reports no usage.
        if let Some(cb) = self.settle.take() {
            cb(None);
        }
    }
}

impl ReportsUsage for MockResponse {
    fn usage(&self) -> Option<Usage> {
        self.usage
    }
    fn defer_usage(&mut self, settle: UsageCallback) -> Result<(), UsageCallback> {
        if self.stream.is_some() {
            self.settle = Some(settle);
            Ok(())
        } else {
            Err(settle)
        }
    }
}

/// The mock's own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockFailure;

impl fmt::Display for MockFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock failure")
    }
}

impl std::error::Error for MockFailure {}

/// The stack error of the mock.
pub type MockError = ClassifiedError<MockFailure>;

/// One call that reached the mock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockCall {
    /// The request's id.
    pub id: u64,
    /// When it arrived.
    pub at: Instant,
    /// Whether the mock's capacity refused it (429).
    pub throttled: bool,
}

#[derive(Default)]
struct MockState {
    calls: Vec<MockCall>,
    /// Accepted requests in the capacity window: (arrival, tokens).
    accepted: VecDeque<(Instant, u64)>,
}

/// The capacity a [`MockBedrock`] enforces: an exact sliding log, or
/// fixed windows on a wall clock (Bedrock's way).
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Window length.
    pub window: Duration,
    /// Requests per window.
    pub requests: Option<u64>,
    /// Tokens (input + output cap) per window.
    pub tokens: Option<u64>,
    /// Fixed windows aligned on this clock; `None`: a sliding log.
    pub fixed: Option<Clock>,
}

/// A mock Bedrock: answers each request as its [`Reply`] says after a fixed
/// latency, logs every call, optionally enforces a capacity with an exact
/// sliding log (answering `Throttled(RequestRate | TokenRate)`), and checks
/// that `poll_ready` was called before every `call`.
#[derive(Clone)]
pub struct MockBedrock {
    latency: Duration,
    capacity: Option<Capacity>,
    state: Arc<Mutex<MockState>>,
    ready: bool,
}

impl fmt::Debug for MockBedrock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockBedrock")
            .field("latency", &self.latency)
            .finish()
    }
}

impl MockBedrock {
    /// A mock answering after `latency`, without capacity limits.
    pub fn new(latency: Duration) -> Self {
        MockBedrock {
            latency,
            capacity: None,
            state: Arc::default(),
            ready: false,
        }
    }

    /// Enforces a capacity.
    #[must_use]
    pub fn with_capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<MockCall> {
        self.state.lock().calls.clone()
    }

    /// Calls refused by the capacity.
    pub fn throttled(&self) -> usize {
        self.state
            .lock()
            .calls
            .iter()
            .filter(|c| c.throttled)
            .count()
    }

    fn admit(&self, req: &MockRequest, now: Instant) -> Option<ThrottleKind> {
        let cap = self.capacity?;
        let mut s = self.state.lock();
        if let Some(clock) = cap.fixed {
            // Only this window's admissions count.
            let w = cap.window.as_nanos().max(1);
            let index = clock.wall_at(now).as_nanos() / w;
            while s
                .accepted
                .front()
                .is_some_and(|(t, _)| clock.wall_at(*t).as_nanos() / w < index)
            {
                s.accepted.pop_front();
            }
        }
        while s.accepted.front().is_some_and(|(t, _)| {
            cap.fixed.is_none() && now.saturating_duration_since(*t) >= cap.window
        }) {
            s.accepted.pop_front();
        }
        let tokens = req.input_tokens + req.max_tokens.unwrap_or(0);
        if cap.requests.is_some_and(|r| s.accepted.len() as u64 >= r) {
            return Some(ThrottleKind::RequestRate);
        }
        let used: u64 = s.accepted.iter().map(|(_, t)| t).sum();
        if cap.tokens.is_some_and(|t| used + tokens > t) {
            return Some(ThrottleKind::TokenRate);
        }
        s.accepted.push_back((now, tokens));
        None
    }
}

impl Service<MockRequest> for MockBedrock {
    type Response = MockResponse;
    type Error = MockError;
    type Future = Pin<Box<dyn Future<Output = Result<MockResponse, MockError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), MockError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: MockRequest) -> Self::Future {
        assert!(
            std::mem::replace(&mut self.ready, false),
            "call without poll_ready"
        );
        let now = Instant::now();
        let throttle = self.admit(&req, now);
        self.state.lock().calls.push(MockCall {
            id: req.id,
            at: now,
            throttled: throttle.is_some(),
        });
        let latency = self.latency;
        Box::pin(async move {
            if let Some(kind) = throttle {
                return Err(ClassifiedError::new(
                    MockFailure,
                    Classification::new(ErrorClass::Throttled(kind)).with_status(429),
                ));
            }
            sleep(latency).await;
            match req.reply {
                Reply::Usage(u) => Ok(MockResponse {
                    id: req.id,
                    usage: Some(u),
                    stream: None,
                    settle: None,
                }),
                Reply::NoUsage => Ok(MockResponse {
                    id: req.id,
                    usage: None,
                    stream: None,
                    settle: None,
                }),
                Reply::Stream(u) => Ok(MockResponse {
                    id: req.id,
                    usage: None,
                    stream: Some(u),
                    settle: None,
                }),
                Reply::Fail(class) => Err(ClassifiedError::new(
                    MockFailure,
                    Classification::new(class),
                )),
            }
        })
    }
}

/// The service under test.
pub type Svc<St> = TokenBudget<MockBedrock, St>;

/// A model id with burndown 1.
pub const NOVA: &str = "amazon.nova-lite-v1:0";
/// A Claude 4 model id (burndown 5).
pub const SONNET4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

fn builder() -> BudgetBuilder {
    Budget::builder().clock(test_clock())
}

/// Sends one request through the service: `ready`, then `call`.
pub fn send<St: BudgetStore>(
    svc: &mut Svc<St>,
    req: MockRequest,
) -> impl Future<Output = Result<MockResponse, MockError>> + Send + 'static {
    use std::task::Waker;
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        svc.poll_ready(&mut cx).is_ready(),
        "the mock is always ready"
    );
    svc.call(req)
}

/// Spawns a request; its result comes back through the join handle.
pub fn spawn<St: BudgetStore>(
    svc: &mut Svc<St>,
    req: MockRequest,
) -> tokio::task::JoinHandle<Result<MockResponse, MockError>> {
    tokio::spawn(send(svc, req))
}

fn local(e: &MockError) -> Option<LocalRejection> {
    match e.class() {
        ErrorClass::Local(k) => Some(k),
        _ => None,
    }
}

/// Sends one request that the budget must refuse itself with `kind`;
/// returns the error.
async fn shed<St: BudgetStore>(
    svc: &mut Svc<St>,
    req: MockRequest,
    kind: LocalRejection,
) -> MockError {
    let err = send(svc, req).await.unwrap_err();
    assert_eq!(local(&err), Some(kind));
    err
}

/// A 10-token request on [`NOVA`] that the model answers with a token-rate
/// throttle.
fn rate_throttled(id: u64) -> MockRequest {
    MockRequest::new(NOVA, id, 10, 0)
        .reply(Reply::Fail(ErrorClass::Throttled(ThrottleKind::TokenRate)))
}

/// Lets every spawned task run until it blocks on time (advances 1 ms).
pub async fn run_tasks() {
    sleep(Duration::from_millis(1)).await;
}

fn snapshot<St: BudgetStore>(b: &Budget<St>, key: &str) -> crate::KeySnapshot {
    b.snapshot(key).expect("the key was used")
}

/// The windows both store contracts run on: 10 s in tenths, a 100 s day in
/// tenths, on the test clock.
fn contract_spec(mode: WindowMode) -> WindowSpec {
    WindowSpec {
        window: Duration::from_secs(10),
        sub_windows: 10,
        day: Duration::from_secs(100),
        day_sub_windows: 10,
        mode,
        clock: test_clock(),
    }
}

/// Reserves `tokens` (one request) that must fit; panics with `why` if not.
async fn admit<K: StoreKey>(
    key: &K,
    limits: Limits,
    tokens: u64,
    at: Instant,
    why: &str,
) -> crate::Reservation {
    key.reserve(limits, Charge::call(tokens), at)
        .await
        .expect(why)
}

/// Reserves `tokens` (one request) that must be refused; returns the refusal.
async fn refuse<K: StoreKey>(key: &K, limits: Limits, tokens: u64, at: Instant) -> crate::Refusal {
    match key.reserve(limits, Charge::call(tokens), at).await {
        Ok(_) => panic!("{tokens} tokens were admitted; the test expects a refusal"),
        Err(refusal) => refusal,
    }
}

/// Settled tokens, requests, and the tokens and requests reserved in flight.
fn held<K: StoreKey>(key: &K, at: Instant) -> (u64, u64, u64, u64) {
    let s = key.snapshot(at);
    (s.tokens, s.requests, s.reserved_tokens, s.reserved_requests)
}

/// Store contract: reserve admits iff there is room, settle adjusts and
/// releases the reservation, refusals say when room is expected.
pub async fn store_contract<St: BudgetStore>(store: St) {
    let spec = contract_spec(WindowMode::Sliding);
    let key = store.key("contract", &spec);
    let limits = Limits::tokens(100).with_requests(3).with_day_tokens(150);
    let t0 = Instant::now();
    let a = admit(&key, limits, 60, t0, "room").await;
    assert_eq!(held(&key, t0), (60, 1, 60, 1));
    let refusal = refuse(&key, limits, 50, t0).await;
    assert_eq!(refusal.window, crate::WindowKind::Tokens);
    // The first sub-window leaves the ring at 11 s (one sub-window late at most).
    let room = refusal.room_at.expect("fits once the window moves");
    assert!(room > t0 + spec.window && room <= t0 + spec.window + spec.granularity());
    // Settling to less refunds at once.
    key.settle(a, Charge::call(20), t0);
    let s = key.snapshot(t0);
    assert_eq!((s.tokens, s.reserved_tokens), (20, 0));
    let b = admit(&key, limits, 50, t0, "room after refund").await;
    // Settling to more charges the difference.
    key.settle(b, Charge::call(70), t0);
    assert_eq!(key.snapshot(t0).tokens, 90);
    // Full refund removes the request too.
    let c = admit(&key, limits, 10, t0, "room").await;
    key.settle(c, Charge::ZERO, t0);
    let s = key.snapshot(t0);
    assert_eq!((s.tokens, s.requests), (90, 2));
    // A charge that can never fit has no room time.
    let never = refuse(&key, limits, 101, t0).await;
    assert_eq!(never.room_at, None);
    // The window slides: after 11 s everything left the token window...
    let t1 = t0 + Duration::from_secs(11);
    let s = key.snapshot(t1);
    assert_eq!((s.tokens, s.requests, s.day_tokens), (0, 0, 90));
    // ...but not the day window.
    let day = refuse(&key, limits, 61, t1).await;
    assert_eq!(day.window, crate::WindowKind::Day);
    admit(&key, limits, 60, t1, "fits the day").await;
    // Settling a reservation whose sub-window has expired refunds nothing
    // and charges extra into the current window.
    let d = admit(&key, Limits::tokens(1000), 5, t1, "room").await;
    let t2 = t1 + Duration::from_secs(12);
    key.settle(d, Charge::call(8), t2);
    assert_eq!(key.snapshot(t2).tokens, 3);
    // Requests are limited too.
    let t3 = t2 + Duration::from_secs(20);
    let big = Limits::tokens(1000).with_requests(3);
    for _ in 0..3 {
        admit(&key, big, 1, t3, "room").await;
    }
    let r = refuse(&key, big, 1, t3).await;
    assert_eq!(r.window, crate::WindowKind::Requests);
}

/// Store contract, fixed windows (Bedrock's rule): a charge is admitted iff
/// the usage settled in this window, plus the reservations of every call in
/// flight, plus the charge fit; the real usage is billed to the window the
/// call completes in; requests count in the window they were admitted in;
/// reservations in flight carry over a window boundary.
pub async fn store_contract_fixed<St: BudgetStore>(store: St) {
    let spec = contract_spec(WindowMode::Fixed);
    let key = store.key("contract-fixed", &spec);
    let limits = Limits::tokens(100).with_requests(3).with_day_tokens(250);
    // EPOCH is a multiple of both window lengths: t0 starts a window.
    let t0 = Instant::now();
    let a = admit(&key, limits, 60, t0, "room").await;
    assert_eq!(held(&key, t0), (60, 1, 60, 1));
    let refusal = refuse(&key, limits, 50, t0).await;
    assert_eq!(refusal.window, crate::WindowKind::Tokens);
    // Only the call in flight holds the room: look again in a twentieth of
    // the window (its settlement may free it).
    let poll = spec.window / 20;
    assert_eq!(refusal.room_at, Some(t0 + poll));
    key.settle(a, Charge::call(20), t0);
    let b = admit(&key, limits, 50, t0, "room after refund").await;
    let c = admit(&key, limits, 30, t0, "exactly the limit").await;
    assert_eq!(key.snapshot(t0).requests, 3);
    let full = refuse(&key, limits, 1, t0).await;
    // The requests are full too: the later room wins.
    assert_eq!(full.room_at, Some(t0 + spec.window));
    // Settled usage alone fills the window: room comes with the next one.
    let settled_full = Limits::tokens(25);
    let r = refuse(&key, settled_full, 10, t0).await;
    assert_eq!(r.room_at, Some(t0 + spec.window), "the next window");
    let never = refuse(&key, limits, 101, t0).await;
    assert_eq!(never.room_at, None);
    // The next window: settled usage and requests start again, the two
    // calls in flight still count.
    let t1 = t0 + spec.window;
    let s = key.snapshot(t1);
    assert_eq!(
        (s.tokens, s.requests, s.day_tokens, s.reserved_tokens),
        (80, 0, 100, 80)
    );
    let r = refuse(&key, limits, 30, t1).await;
    assert_eq!(r.room_at, Some(t1 + poll));
    // b completes in this window: its usage is billed here, its request
    // stays in the window it was admitted in.
    key.settle(b, Charge::call(50), t1);
    key.settle(c, Charge::ZERO, t1);
    let s = key.snapshot(t1);
    assert_eq!((s.tokens, s.requests, s.reserved_tokens), (50, 0, 0));
    let d = admit(&key, limits, 50, t1, "room").await;
    key.settle(d, Charge::call(50), t1);
    // The day counts everything settled in it: 20 + 50 + 50.
    let t2 = t0 + 4 * spec.window;
    let e = admit(&key, limits, 100, t2, "room").await;
    key.settle(e, Charge::call(100), t2);
    let t3 = t0 + 5 * spec.window;
    assert_eq!(key.snapshot(t3).day_tokens, 220);
    let day = refuse(&key, limits, 31, t3).await;
    assert_eq!(day.window, crate::WindowKind::Day);
    assert_eq!(day.room_at, Some(t0 + spec.day));
    admit(&key, limits, 30, t3, "fits the day").await;
}

/// A budget of `tokens` a window that sheds at once (no wait) in front of a
/// mock answering in 5 s, with `n` calls (ids `0..n`) of `each` input tokens
/// and `each` max output tokens admitted and in flight.
async fn no_wait_in_flight<St: BudgetStore>(
    store: St,
    tokens: u64,
    n: u64,
    each: u64,
) -> (Budget<St>, MockBedrock, Svc<St>, Vec<InFlight>) {
    let budget = builder()
        .tokens_per_window(tokens)
        .max_wait(Duration::ZERO)
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::from_secs(5));
    let mut svc = budget.layer().layer(mock.clone());
    let inflight = (0..n)
        .map(|id| spawn(&mut svc, MockRequest::new(NOVA, id, each, each)))
        .collect();
    run_tasks().await;
    (budget, mock, svc, inflight)
}

/// A call spawned with [`spawn`].
type InFlight = tokio::task::JoinHandle<Result<MockResponse, MockError>>;

/// The whole quota, not a percentage of it: `n` requests that fit the
/// limit exactly are all admitted; a slack stated in tokens holds back
/// exactly that many.
pub async fn exact_fit_is_admitted<St: BudgetStore>(store: St) {
    let (budget, mock, mut svc, inflight) = no_wait_in_flight(store, 200_000, 10, 10_000).await;
    shed(
        &mut svc,
        MockRequest::new(NOVA, 10, 1, 0),
        LocalRejection::BudgetExhausted,
    )
    .await;
    for h in inflight {
        h.await.unwrap().expect("all ten fit the quota");
    }
    assert_eq!(mock.calls().len(), 10);
    assert_eq!(snapshot(&budget, NOVA).tokens, 200_000);
    // With a slack of one request's worth, nine fit.
    let slack = builder()
        .tokens_per_window(200_000)
        .slack_tokens(20_000)
        .max_wait(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(slack.limits(NOVA).tokens, 180_000);
    let mut svc = slack.layer().layer(MockBedrock::new(Duration::ZERO));
    let mut ok = 0;
    for id in 0..10 {
        if send(&mut svc, MockRequest::new(NOVA, id, 10_000, 10_000))
            .await
            .is_ok()
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 9);
}

/// Twelve concurrent calls whose reservations (Claude 4: 5x burndown,
/// `max_tokens` 8192) are far above what they use: the quota holds four
/// reservations at once, and each of the others waits only for the
/// settlement of calls admitted ahead of it, not for a pace or the next
/// window; none is shed (issue 13's axum example: 7 of 12 were shed).
pub async fn reservations_wait_only_for_settlements<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(200_000)
        .max_wait(Duration::from_secs(10))
        .build_with_store(store)
        .unwrap();
    let latency = Duration::from_secs(2);
    let mock = MockBedrock::new(latency);
    let mut svc = budget.layer().layer(mock.clone());
    let t0 = Instant::now();
    let handles: Vec<_> = (0..12)
        .map(|id| {
            let req = MockRequest::new(SONNET4, id, 1000, 8192)
                .reply(Reply::Usage(Usage::new(1000, 200)));
            spawn(&mut svc, req)
        })
        .collect();
    for h in handles {
        h.await.unwrap().expect("every call is answered");
    }
    let calls = mock.calls();
    assert_eq!(calls.len(), 12);
    let admitted_at = |n: usize| calls[n].at - t0;
    // Four at once, four when those settle, four when those settle.
    assert_eq!(admitted_at(3), Duration::ZERO);
    assert_eq!(admitted_at(7), latency);
    assert_eq!(admitted_at(11), 2 * latency);
    let s = snapshot(&budget, SONNET4);
    assert_eq!((s.tenants[0].sheds, s.reserved_tokens), (0, 0));
    assert_eq!(s.tokens, 12 * 2000);
}

/// Fixed windows at their boundaries: the window starts empty on the
/// minute; calls in flight across the boundary keep their reservation in
/// the new window and bill their usage to the window they complete in.
pub async fn fixed_window_boundaries<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(1000)
        .max_wait(Duration::ZERO)
        .fixed_limits()
        .build_with_store(store)
        .unwrap();
    let mut fast = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    let mut slow = budget
        .layer()
        .layer(MockBedrock::new(Duration::from_secs(2)));
    let t0 = Instant::now();
    send(&mut fast, MockRequest::new(NOVA, 0, 600, 0))
        .await
        .unwrap();
    sleep_until(t0 + Duration::from_millis(59_990)).await;
    let err = send(&mut fast, MockRequest::new(NOVA, 1, 500, 0))
        .await
        .unwrap_err();
    let after = err.rejection().and_then(|r| r.retry_after());
    assert_eq!(after, Some(Duration::from_millis(10)), "room on the minute");
    send(&mut fast, MockRequest::new(NOVA, 2, 400, 0))
        .await
        .expect("exactly the limit");
    sleep_until(t0 + Duration::from_secs(60)).await;
    send(&mut fast, MockRequest::new(NOVA, 3, 1000, 0))
        .await
        .expect("a new window starts empty");
    // A call in flight across the next boundary.
    sleep_until(t0 + Duration::from_secs(119)).await;
    let across = spawn(&mut slow, MockRequest::new(SONNET4, 4, 500, 0));
    sleep_until(t0 + Duration::from_secs(120)).await;
    shed(
        &mut fast,
        MockRequest::new(SONNET4, 5, 600, 0),
        LocalRejection::BudgetExhausted,
    )
    .await;
    let second = spawn(&mut slow, MockRequest::new(SONNET4, 6, 500, 0));
    across.await.unwrap().expect("admitted before the boundary");
    second.await.unwrap().expect("fits beside the reservation");
    let s = snapshot(&budget, SONNET4);
    assert_eq!((s.tokens, s.reserved_tokens), (1000, 0));
    sleep_until(t0 + Duration::from_secs(180)).await;
    assert_eq!(snapshot(&budget, SONNET4).tokens, 0);
}

/// Reservations are admitted up to the limit and not beyond; settlement
/// leaves the real usage in the window.
pub async fn admits_up_to_the_limit_and_not_beyond<St: BudgetStore>(store: St) {
    let (budget, mock, mut svc, inflight) = no_wait_in_flight(store, 1000, 5, 100).await;
    let s = snapshot(&budget, NOVA);
    assert_eq!(
        (s.tokens, s.reserved_tokens, s.reserved_requests),
        (1000, 1000, 5)
    );
    assert!((s.utilization - 1.0).abs() < 1e-9);
    // The sixth does not fit: shed at once (max wait zero) with a retry hint.
    let err = shed(
        &mut svc,
        MockRequest::new(NOVA, 5, 1, 0),
        LocalRejection::BudgetExhausted,
    )
    .await;
    let rejection = err.rejection().expect("a local rejection");
    assert_eq!(rejection.key(), Some(NOVA));
    // The calls in flight hold the room: try again when they may have
    // settled (a twentieth of the window).
    assert_eq!(rejection.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(mock.calls().len(), 5);
    for h in inflight {
        h.await.unwrap().expect("admitted calls succeed");
    }
    let s = snapshot(&budget, NOVA);
    assert_eq!(
        (s.tokens, s.reserved_tokens, s.used_tokens()),
        (1000, 0, 1000)
    );
    assert_eq!(s.tenants[0].admitted_requests, 5);
    assert_eq!(s.tenants[0].sheds, 1);
}

/// Sliding windows: room comes back one window (plus at most one
/// sub-window) after the charge, and not before.
pub async fn window_refreshes<St: BudgetStore>(store: St) {
    let budget = builder()
        .window_mode(WindowMode::Sliding)
        .tokens_per_window(1000)
        .max_wait(Duration::ZERO)
        .build_with_store(store)
        .unwrap();
    let g = budget.spec().granularity();
    let mut svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    let t0 = Instant::now();
    send(&mut svc, MockRequest::new(NOVA, 0, 500, 500))
        .await
        .unwrap();
    sleep_until(t0 + Duration::from_secs(59)).await;
    let err = send(&mut svc, MockRequest::new(NOVA, 1, 10, 0))
        .await
        .unwrap_err();
    let after = err
        .rejection()
        .and_then(|r| r.retry_after())
        .expect("a hint");
    // Room at the first sub-window boundary after t0 + 60 s.
    assert_eq!(after, Duration::from_secs(1) + g);
    sleep_until(t0 + Duration::from_secs(60)).await;
    assert!(
        send(&mut svc, MockRequest::new(NOVA, 2, 10, 0))
            .await
            .is_err()
    );
    sleep_until(t0 + Duration::from_secs(60) + g).await;
    send(&mut svc, MockRequest::new(NOVA, 3, 500, 500))
        .await
        .expect("room again");
    assert_eq!(snapshot(&budget, NOVA).tokens, 1000);
}

/// Settlement replaces the reservation by the real usage: input + cache
/// writes + output x burndown; cache reads do not count.
pub async fn settlement_refunds_and_charges<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(10_000)
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::from_secs(1));
    let mut svc = budget.layer().layer(mock);
    // Reserve 100 + 500, use 100 + 50.
    let h = spawn(
        &mut svc,
        MockRequest::new(NOVA, 0, 100, 500).reply(Reply::Usage(Usage::new(100, 50))),
    );
    run_tasks().await;
    assert_eq!(snapshot(&budget, NOVA).reserved_tokens, 600);
    h.await.unwrap().unwrap();
    let s = snapshot(&budget, NOVA);
    assert_eq!((s.tokens, s.reserved_tokens), (150, 0));
    // Reserve 100 + 10, use more (cache writes): the difference is charged.
    let used = Usage {
        input_tokens: 100,
        output_tokens: 10,
        cache_read_input_tokens: 5000,
        cache_write_input_tokens: 200,
    };
    send(
        &mut svc,
        MockRequest::new(NOVA, 1, 100, 10).reply(Reply::Usage(used)),
    )
    .await
    .unwrap();
    assert_eq!(snapshot(&budget, NOVA).tokens, 150 + 310);
    // Claude 4: output burns down 5x, reservation and usage alike.
    let h = spawn(
        &mut svc,
        MockRequest::new(SONNET4, 2, 100, 100).reply(Reply::Usage(Usage::new(100, 20))),
    );
    run_tasks().await;
    assert_eq!(snapshot(&budget, SONNET4).reserved_tokens, 600);
    h.await.unwrap().unwrap();
    assert_eq!(snapshot(&budget, SONNET4).tokens, 200);
    // No max_tokens: the default output (4096) is reserved.
    let mut req = MockRequest::new(NOVA, 3, 10, 0).reply(Reply::Usage(Usage::new(10, 1)));
    req.max_tokens = None;
    let h = spawn(&mut svc, req);
    run_tasks().await;
    assert_eq!(snapshot(&budget, NOVA).reserved_tokens, 4106);
    h.await.unwrap().unwrap();
    assert_eq!(snapshot(&budget, NOVA).tokens, 460 + 11);
}

/// No usage keeps the reservation; a stream settles when it ends, and a
/// stream dropped before its end keeps the reservation.
pub async fn missing_usage_keeps_and_streams_settle_when_they_end<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(10_000)
        .build_with_store(store)
        .unwrap();
    let mut svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    send(
        &mut svc,
        MockRequest::new(NOVA, 0, 100, 400).reply(Reply::NoUsage),
    )
    .await
    .unwrap();
    let s = snapshot(&budget, NOVA);
    assert_eq!((s.tokens, s.reserved_tokens), (500, 0));
    let stream = send(
        &mut svc,
        MockRequest::new(NOVA, 1, 100, 400).reply(Reply::Stream(Usage::new(100, 7))),
    )
    .await
    .unwrap();
    let s = snapshot(&budget, NOVA);
    assert_eq!((s.tokens, s.reserved_tokens), (1000, 500));
    stream.finish();
    let s = snapshot(&budget, NOVA);
    assert_eq!((s.tokens, s.reserved_tokens), (607, 0));
    let broken = send(
        &mut svc,
        MockRequest::new(NOVA, 2, 100, 400).reply(Reply::Stream(Usage::new(1, 1))),
    )
    .await
    .unwrap();
    drop(broken);
    let s = snapshot(&budget, NOVA);
    assert_eq!((s.tokens, s.reserved_tokens), (1107, 0));
}

/// Failed calls are settled with what Bedrock can have counted, per class
/// (the default table of [`default_error_settlement`](crate::default_error_settlement)):
/// refunded when refused before inference, the input kept when the model
/// ran and failed, everything kept when the request may still be running.
pub async fn errors_refund_or_keep_by_class<St: BudgetStore>(store: St) {
    use crate::ErrorSettlement::{Input, Keep, Refund};
    let budget = builder()
        .tokens_per_window(100_000)
        .requests_per_window(1000)
        .fixed_limits()
        .build_with_store(store)
        .unwrap();
    let mut svc = budget
        .layer()
        .layer(MockBedrock::new(Duration::from_millis(10)));
    let cases = [
        (ErrorClass::Local(LocalRejection::CircuitOpen), Refund),
        (ErrorClass::Throttled(ThrottleKind::TokenRate), Refund),
        (ErrorClass::Throttled(ThrottleKind::RequestRate), Refund),
        (ErrorClass::Throttled(ThrottleKind::ModelOverloaded), Refund),
        (ErrorClass::Throttled(ThrottleKind::ModelNotReady), Refund),
        (ErrorClass::QuotaExceeded, Refund),
        (ErrorClass::Client(ClientKind::Validation), Refund),
        (ErrorClass::Client(ClientKind::AccessDenied), Refund),
        (ErrorClass::Unavailable(UnavailableKind::Service), Refund),
        (
            ErrorClass::Unavailable(UnavailableKind::ConnectionPool),
            Refund,
        ),
        (ErrorClass::Client(ClientKind::ModelError), Input),
        (ErrorClass::ModelTimeout, Input),
        (ErrorClass::Unavailable(UnavailableKind::Network), Keep),
        (ErrorClass::Unknown, Keep),
    ];
    let mut expected = Charge::ZERO;
    for (i, (class, settlement)) in cases.into_iter().enumerate() {
        assert_eq!(crate::default_error_settlement(&class), settlement);
        // Reserves 100 input + 100 output.
        let err = send(
            &mut svc,
            MockRequest::new(NOVA, i as u64, 100, 100).reply(Reply::Fail(class)),
        )
        .await
        .unwrap_err();
        assert_eq!(err.class(), class, "errors pass through unchanged");
        assert!(err.inner().is_some(), "the inner error is kept");
        let counted = match settlement {
            Refund => Charge::ZERO,
            Input => Charge::call(100),
            _ => Charge::call(200),
        };
        expected.tokens += counted.tokens;
        expected.requests += counted.requests;
        let s = snapshot(&budget, NOVA);
        assert_eq!(
            (s.tokens, s.requests),
            (expected.tokens, expected.requests),
            "{class}"
        );
        assert_eq!(s.reserved_tokens, 0);
    }
    // Two inputs and two whole calls counted, as four requests.
    let s = snapshot(&budget, NOVA);
    assert_eq!((s.tokens, s.requests), (600, 4));
}

/// Dropping the future at every await point leaks nothing: before the
/// first poll, waiting behind others, waiting at the head, in flight, and
/// a stream dropped after the response. Reserved tokens and waiting
/// requests return to zero, and the queue keeps moving.
pub async fn cancellation_leaks_nothing<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(1000)
        .max_wait(Duration::from_secs(120))
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::from_secs(10));
    let mut svc = budget.layer().layer(mock.clone());
    // Never polled.
    drop(send(&mut svc, MockRequest::new(NOVA, 100, 10, 10)));
    // Fill the window with a call in flight.
    let inflight = spawn(&mut svc, MockRequest::new(NOVA, 0, 500, 500));
    run_tasks().await;
    // Two waiters: the head (1) and one behind it (2), then a third (3).
    let head = spawn(&mut svc, MockRequest::new(NOVA, 1, 100, 100));
    let behind = spawn(&mut svc, MockRequest::new(NOVA, 2, 100, 100));
    let last = spawn(&mut svc, MockRequest::new(NOVA, 3, 100, 100));
    run_tasks().await;
    assert_eq!(snapshot(&budget, NOVA).waiting, 3);
    behind.abort();
    run_tasks().await;
    assert_eq!(snapshot(&budget, NOVA).waiting, 2);
    head.abort();
    run_tasks().await;
    assert_eq!(snapshot(&budget, NOVA).waiting, 1);
    // Dropping the call in flight keeps its reservation as a charge.
    inflight.abort();
    run_tasks().await;
    let s = snapshot(&budget, NOVA);
    assert_eq!(
        (s.tokens, s.reserved_tokens, s.reserved_requests),
        (1000, 0, 0)
    );
    // The remaining waiter is admitted when the window moves, not stuck
    // behind the dropped ones.
    let resp = last.await.unwrap().expect("the last waiter is admitted");
    assert_eq!(resp.id, 3);
    let ids: Vec<u64> = mock.calls().iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![0, 3]);
    // A stream dropped after its response keeps its reservation.
    let stream = send(
        &mut svc,
        MockRequest::new(NOVA, 4, 100, 100).reply(Reply::Stream(Usage::new(1, 1))),
    )
    .await
    .unwrap();
    drop(stream);
    sleep(Duration::from_secs(200)).await;
    let s = snapshot(&budget, NOVA);
    assert_eq!(
        (s.reserved_tokens, s.reserved_requests, s.waiting),
        (0, 0, 0)
    );
    assert_eq!(s.tokens, 0, "everything left the window");
}

/// Waiting requests are admitted in arrival order per key, and a newcomer
/// that fits now is not held behind a head that cannot go before the next
/// window (no head-of-line blocking): 2 and 3 pass 1, which waits for the
/// next window; 4 and 5 do not fit now and queue behind 1.
pub async fn fifo_order<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(1000)
        .max_wait(Duration::from_secs(600))
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::from_secs(1));
    let mut svc = budget.layer().layer(mock.clone());
    send(&mut svc, MockRequest::new(NOVA, 0, 700, 0))
        .await
        .unwrap();
    // 300 left: 1 needs 800 and must wait for the window; 2 and 3 fit now.
    let sizes = [800, 100, 100, 300, 200];
    let mut handles = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        handles.push(spawn(
            &mut svc,
            MockRequest::new(NOVA, i as u64 + 1, size, 0),
        ));
        run_tasks().await;
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let ids: Vec<u64> = mock.calls().iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![0, 2, 3, 1, 4, 5]);
}

/// A request whose room is beyond its maximum wait is shed at once when no
/// call in flight can free room sooner (waiting would buy nothing); with
/// calls in flight it waits up to the maximum wait. Either way the
/// rejection is `Local(BudgetExhausted)` saying when room is expected, and
/// the wait is recorded in the call report.
pub async fn max_wait_sheds_with_retry_after<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(1000)
        .max_wait(Duration::from_secs(5))
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::ZERO);
    let mut svc = budget.layer().layer(mock.clone());
    let mut slow = budget
        .layer()
        .layer(MockBedrock::new(Duration::from_secs(30)));
    let t0 = Instant::now();
    send(&mut svc, MockRequest::new(NOVA, 0, 1000, 0))
        .await
        .unwrap();
    let report = CallReport::new();
    let mut req = MockRequest::new(NOVA, 1, 10, 0);
    req.report = Some(report.clone());
    let err = send(&mut svc, req).await.unwrap_err();
    assert_eq!(t0.elapsed(), Duration::ZERO, "nothing to wait for");
    assert_eq!(local(&err), Some(LocalRejection::BudgetExhausted));
    let after = err.rejection().and_then(|r| r.retry_after()).unwrap();
    assert_eq!(after, Duration::from_secs(60));
    // A call in flight may settle below its reservation: wait for it, up
    // to the maximum wait.
    sleep_until(t0 + Duration::from_secs(60)).await;
    let inflight = spawn(&mut slow, MockRequest::new(NOVA, 2, 1000, 0));
    run_tasks().await;
    let report = CallReport::new();
    let mut req = MockRequest::new(NOVA, 3, 10, 0);
    req.report = Some(report.clone());
    let start = Instant::now();
    let err = send(&mut svc, req).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(local(&err), Some(LocalRejection::BudgetExhausted));
    // It looked again 3 s in (a twentieth of the window), and would again
    // 3 s after that.
    let after = err.rejection().and_then(|r| r.retry_after()).unwrap();
    assert_eq!(after, Duration::from_secs(1));
    assert_eq!(report.summary().budget_wait, Duration::from_secs(5));
    inflight.await.unwrap().unwrap();
    // A waiter that gets room within the wait succeeds and records its wait.
    sleep_until(t0 + Duration::from_secs(118)).await;
    let report = CallReport::new();
    let mut req = MockRequest::new(NOVA, 4, 10, 0);
    req.report = Some(report.clone());
    send(&mut svc, req).await.unwrap();
    assert_eq!(report.summary().budget_wait, Duration::from_secs(2));
    let s = snapshot(&budget, NOVA);
    assert_eq!(
        (s.waiting, s.tenants[0].waits, s.tenants[0].sheds),
        (0, 2, 2)
    );
    assert_eq!(mock.calls().len(), 2);
}

/// The call's deadline bounds the wait: behind a full budget with a call
/// in flight, a call with a 3 s deadline ends at 3 s with
/// `Local(DeadlineExceeded)`; with nothing in flight (no room before the
/// next window) it ends at once. Never later than the deadline.
pub async fn deadline_bounds_the_wait<St: BudgetStore>(store: St) {
    use tower_bedrock_core::deadline::with_call_deadline;
    let budget = builder()
        .tokens_per_window(1000)
        .max_wait(Duration::from_secs(600))
        .build_with_store(store)
        .unwrap();
    let mut svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    let mut slow = budget
        .layer()
        .layer(MockBedrock::new(Duration::from_secs(10)));
    let t0 = Instant::now();
    let inflight = spawn(&mut slow, MockRequest::new(NOVA, 0, 1000, 0));
    run_tasks().await;
    let start = Instant::now();
    let call = send(&mut svc, MockRequest::new(NOVA, 1, 10, 0));
    let err = with_call_deadline(start + Duration::from_secs(3), call)
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(local(&err), Some(LocalRejection::DeadlineExceeded));
    assert!(err.rejection().and_then(|r| r.retry_after()).is_some());
    inflight.await.unwrap().unwrap();
    // The window is full of settled usage: nothing can free room before
    // the next window, which is past the deadline.
    let start = Instant::now();
    let call = send(&mut svc, MockRequest::new(NOVA, 2, 10, 0));
    let err = with_call_deadline(start + Duration::from_secs(3), call)
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(local(&err), Some(LocalRejection::DeadlineExceeded));
    // Without a deadline the call waits for the next window.
    send(&mut svc, MockRequest::new(NOVA, 3, 10, 0))
        .await
        .expect("room in the next window");
    assert_eq!(t0.elapsed(), Duration::from_secs(60));
}

/// A request larger than the whole window (or day) fails at once, without
/// waiting and without reaching the model.
pub async fn oversized_request_fails_at_once<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(1000)
        .tokens_per_day(1500)
        .key_limits(SONNET4, Limits::tokens(5000).with_day_tokens(800))
        .max_wait(Duration::from_secs(60))
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::ZERO);
    let mut svc = budget.layer().layer(mock.clone());
    let t0 = Instant::now();
    let err = shed(
        &mut svc,
        MockRequest::new(NOVA, 0, 500, 501),
        LocalRejection::RequestTooLarge,
    )
    .await;
    assert_eq!(err.rejection().and_then(|r| r.key()), Some(NOVA));
    // Larger than the day limit of this key (100 + 200 x 5 = 1100 > 800).
    shed(
        &mut svc,
        MockRequest::new(SONNET4, 1, 100, 200),
        LocalRejection::RequestTooLarge,
    )
    .await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(mock.calls().is_empty());
    send(&mut svc, MockRequest::new(NOVA, 2, 500, 500))
        .await
        .expect("exactly the limit fits");
}

/// A request that fits the configured limit but not the limit lowered by
/// repeated throttles fails at once (it never holds the queue), with a
/// retry-after; a smaller request behind it is admitted at once.
pub async fn lowered_limit_fails_at_once<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(1000)
        .max_wait(Duration::from_secs(600))
        .build_with_store(store)
        .unwrap();
    let mut svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    let t0 = Instant::now();
    // Throttles in two consecutive windows lower the limit to 800.
    send(&mut svc, rate_throttled(0)).await.unwrap_err();
    assert_eq!(snapshot(&budget, NOVA).effective.tokens, 1000);
    sleep_until(t0 + Duration::from_secs(60)).await;
    send(&mut svc, rate_throttled(1)).await.unwrap_err();
    assert_eq!(snapshot(&budget, NOVA).effective.tokens, 800);
    sleep_until(t0 + Duration::from_secs(120)).await;
    let start = Instant::now();
    let err = send(&mut svc, MockRequest::new(NOVA, 2, 900, 0))
        .await
        .unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no wait for what cannot fit"
    );
    assert_eq!(local(&err), Some(LocalRejection::BudgetExhausted));
    assert!(err.rejection().and_then(|r| r.retry_after()).is_some());
    send(&mut svc, MockRequest::new(NOVA, 3, 100, 0))
        .await
        .expect("a small request goes at once");
    assert_eq!(start.elapsed(), Duration::ZERO);
    // A clean window later the limit is back.
    sleep_until(t0 + Duration::from_secs(240)).await;
    assert_eq!(snapshot(&budget, NOVA).effective.tokens, 1000);
    send(&mut svc, MockRequest::new(NOVA, 4, 900, 0))
        .await
        .expect("fits the recovered limit");
}

/// A rate throttle in a window the budget believed had room marks that
/// window full until its end (nothing more is admitted in it), without
/// lowering the limit; the next window admits again.
pub async fn throttle_marks_the_window_full<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(1000)
        .max_wait(Duration::ZERO)
        .build_with_store(store)
        .unwrap();
    let mut svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    let t0 = Instant::now();
    sleep_until(t0 + Duration::from_secs(10)).await;
    let throttled = rate_throttled(0);
    send(&mut svc, throttled).await.unwrap_err();
    let s = snapshot(&budget, NOVA);
    assert_eq!(s.full_until, Some(t0 + Duration::from_secs(60)));
    assert_eq!((s.tokens, s.effective.tokens), (0, 1000));
    let err = shed(
        &mut svc,
        MockRequest::new(NOVA, 1, 10, 0),
        LocalRejection::BudgetExhausted,
    )
    .await;
    assert_eq!(
        err.rejection().and_then(|r| r.retry_after()),
        Some(Duration::from_secs(50))
    );
    sleep_until(t0 + Duration::from_secs(60)).await;
    send(&mut svc, MockRequest::new(NOVA, 2, 1000, 0))
        .await
        .expect("the next window admits");
    assert_eq!(snapshot(&budget, NOVA).full_until, None);
}

/// Request limits (RPM) and tokens per day are enforced like tokens.
pub async fn request_and_day_limits<St: BudgetStore>(store: St) {
    let budget = builder()
        .window(Duration::from_secs(1))
        .tokens_per_window(1000)
        .requests_per_window(3)
        .tokens_per_day(2500)
        .max_wait(Duration::ZERO)
        .build_with_store(store)
        .unwrap();
    assert_eq!(budget.spec().day, Duration::from_secs(1440));
    let mut svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    for id in 0..3 {
        send(&mut svc, MockRequest::new(NOVA, id, 1, 0))
            .await
            .unwrap();
    }
    shed(
        &mut svc,
        MockRequest::new(NOVA, 3, 1, 0),
        LocalRejection::BudgetExhausted,
    )
    .await;
    let mut id = 10;
    let mut admitted = 3;
    for _ in 0..4 {
        sleep(Duration::from_secs(2)).await;
        id += 1;
        if send(&mut svc, MockRequest::new(NOVA, id, 999, 0))
            .await
            .is_ok()
        {
            admitted += 999;
        }
    }
    // 3 + 2 x 999 fit the day; the third 999 does not.
    assert_eq!(admitted, 3 + 2 * 999);
    assert_eq!(snapshot(&budget, NOVA).day_tokens, 3 + 2 * 999);
}

/// Two tenants of equal weight, one sending 10x the other: the quiet one
/// still gets what it asks (below its share), and the noisy one uses the
/// idle remainder, so the quota is used in full.
pub async fn tenant_fairness<St: BudgetStore>(store: St) {
    let rpm = 60;
    let budget = builder()
        .tokens_per_window(1_000_000)
        .requests_per_window(rpm)
        // Long enough to wait for the next window: the waiting requests
        // are drained in share order when it opens.
        .max_wait(Duration::from_secs(120))
        .fixed_limits()
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::from_millis(500));
    let quiet = budget
        .tenant("quiet", 1)
        .unwrap()
        .layer()
        .layer(mock.clone());
    let noisy = budget
        .tenant("noisy", 1)
        .unwrap()
        .layer()
        .layer(mock.clone());
    let minutes = 10u64;
    let t0 = Instant::now();
    // Quiet: 20 rpm (a third of the quota, below its half share); noisy: 200 rpm.
    let q = tokio::spawn(drive(quiet, Duration::from_secs(3), minutes, 0));
    let n = tokio::spawn(drive(noisy, Duration::from_millis(300), minutes, 1_000_000));
    let quiet_results = q.await.unwrap();
    let noisy_results = n.await.unwrap();
    // Ignore the first window: the noisy tenant may fill it before the
    // quiet one shows up (nothing is taken back once admitted).
    let after_first = |r: &[(Instant, bool)]| {
        let v: Vec<_> = r
            .iter()
            .filter(|(at, _)| *at >= t0 + Duration::from_secs(60))
            .collect();
        (v.len(), v.iter().filter(|(_, ok)| *ok).count())
    };
    let (q_sent, q_ok) = after_first(&quiet_results);
    let (_, n_ok) = after_first(&noisy_results);
    assert!(
        q_ok as f64 >= 0.97 * q_sent as f64,
        "quiet tenant got {q_ok} of {q_sent}"
    );
    let total = (q_ok + n_ok) as f64;
    let quota = (rpm * (minutes - 1)) as f64;
    assert!(
        total >= 0.97 * quota && total <= quota + rpm as f64,
        "used {total} of {quota}"
    );
    assert!(
        n_ok as f64 >= quota - q_sent as f64 - 0.03 * quota,
        "noisy got {n_ok}"
    );
    let s = snapshot(&budget, NOVA);
    let share = |name: &str| s.tenants.iter().find(|t| t.name == name).unwrap().clone();
    assert!(share("noisy").sheds > 0 && share("quiet").admitted_requests > 0);
    assert_eq!(mock.throttled(), 0);
}

/// Weighted shares under contention: both tenants want more than the
/// quota; the one of weight 2 (sending 60 rpm) gets two thirds of it and
/// the one of weight 1 (sending 600 rpm) one third, however much more it
/// sends.
pub async fn tenant_weighted_shares<St: BudgetStore>(store: St) {
    let rpm = 60;
    let budget = builder()
        .tokens_per_window(1_000_000)
        .requests_per_window(rpm)
        // Long enough to wait for the next window: the waiting requests
        // are drained in share order when it opens.
        .max_wait(Duration::from_secs(120))
        .fixed_limits()
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::from_millis(500));
    let heavy = budget
        .tenant("weight2", 2)
        .unwrap()
        .layer()
        .layer(mock.clone());
    let light = budget
        .tenant("weight1", 1)
        .unwrap()
        .layer()
        .layer(mock.clone());
    let minutes = 12u64;
    let t0 = Instant::now();
    let h = tokio::spawn(drive(heavy, Duration::from_secs(1), minutes, 0));
    let l = tokio::spawn(drive(light, Duration::from_millis(100), minutes, 1_000_000));
    let heavy = h.await.unwrap();
    let light = l.await.unwrap();
    // Count admissions from the third minute on (the first window is
    // first come, first served).
    let from = t0 + Duration::from_secs(120);
    let ok = |r: &[(Instant, bool)]| r.iter().filter(|(at, ok)| *at >= from && *ok).count() as f64;
    let (h_ok, l_ok) = (ok(&heavy), ok(&light));
    let total = h_ok + l_ok;
    let share = h_ok / total;
    assert!(
        (0.62..=0.72).contains(&share),
        "weight 2 got {h_ok}, weight 1 got {l_ok}: share {share:.3}"
    );
    let quota = (rpm * (minutes - 2)) as f64;
    assert!(total >= 0.95 * quota, "used {total} of {quota}");
    assert_eq!(mock.throttled(), 0);
}

/// Sends one request every `every` for `minutes`, each on its own task;
/// returns (arrival, admitted-and-succeeded) per request.
async fn drive<St: BudgetStore>(
    mut svc: Svc<St>,
    every: Duration,
    minutes: u64,
    first_id: u64,
) -> Vec<(Instant, bool)> {
    let start = Instant::now();
    let end = start + Duration::from_secs(60 * minutes);
    let mut handles = Vec::new();
    let mut next = start;
    let mut id = first_id;
    while next < end {
        sleep_until(next).await;
        handles.push((next, spawn(&mut svc, MockRequest::new(NOVA, id, 10, 10))));
        id += 1;
        next += every;
    }
    let mut out = Vec::new();
    for (at, h) in handles {
        out.push((at, h.await.unwrap().is_ok()));
    }
    out
}

/// Interactive tenants are served before batch tenants when both wait.
/// (The interactive tenant has the larger weight: a store that holds
/// weighted shares across processes would otherwise refuse it beyond its
/// share, which priorities do not override.)
pub async fn priority_classes<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(1000)
        .max_wait(Duration::from_secs(600))
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::ZERO);
    let batch = budget
        .tenant_with_priority("batch", 1, Priority::Batch)
        .unwrap();
    let interactive = budget.tenant("interactive", 10).unwrap();
    let mut b = batch.layer().layer(mock.clone());
    let mut i = interactive.layer().layer(mock.clone());
    send(&mut b, MockRequest::new(NOVA, 0, 1000, 0))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for id in 1..=3 {
        handles.push(spawn(&mut b, MockRequest::new(NOVA, id, 400, 0)));
        run_tasks().await;
    }
    for id in 11..=13 {
        handles.push(spawn(&mut i, MockRequest::new(NOVA, id, 400, 0)));
        run_tasks().await;
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let ids: Vec<u64> = mock.calls().iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![0, 11, 12, 13, 1, 2, 3]);
    assert!(matches!(
        budget.tenant("batch", 10),
        Err(crate::BuildError::TenantConflict { .. })
    ));
}

/// Clones of the budget, the layer and the service share one state.
pub async fn clones_share_state<St: BudgetStore>(store: St) {
    let budget = builder()
        .tokens_per_window(1000)
        .max_wait(Duration::ZERO)
        .build_with_store(store)
        .unwrap();
    let layer: TokenBudgetLayer<St> = budget.clone().layer();
    let mut a = layer.clone().layer(MockBedrock::new(Duration::ZERO));
    let mut b = a.clone();
    let mut c = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    send(&mut a, MockRequest::new(NOVA, 0, 400, 0))
        .await
        .unwrap();
    send(&mut b, MockRequest::new(NOVA, 1, 400, 0))
        .await
        .unwrap();
    assert!(
        send(&mut c, MockRequest::new(NOVA, 2, 400, 0))
            .await
            .is_err()
    );
    let clone = budget.clone();
    assert_eq!(snapshot(&clone, NOVA).tokens, 800);
}

/// With a server whose real capacity (60 rpm, fixed windows) is below the
/// configured limit (100 rpm): each throttle marks its window full, so few
/// 429s come back and the capacity is used; repeated throttles lower the
/// limit; without throttles it recovers to the configured one.
pub async fn adaptive_limit_converges<St: BudgetStore>(store: St) {
    let capacity = 60u64;
    let budget = builder()
        .tokens_per_window(1_000_000)
        .requests_per_window(100)
        .max_wait(Duration::from_secs(5))
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::from_secs(1)).with_capacity(Capacity {
        window: Duration::from_secs(60),
        requests: Some(capacity),
        tokens: None,
        fixed: Some(test_clock()),
    });
    let svc = budget.layer().layer(mock.clone());
    let minutes = 30u64;
    let t0 = Instant::now();
    drive(svc, Duration::from_millis(400), minutes, 0).await;
    let settle_from = t0 + Duration::from_secs(5 * 60);
    let calls = mock.calls();
    let late: Vec<_> = calls.iter().filter(|c| c.at >= settle_from).collect();
    let throttled = late.iter().filter(|c| c.throttled).count();
    let accepted = late.len() - throttled;
    let window_minutes = (minutes - 5) as f64;
    assert!(
        accepted as f64 >= 0.9 * capacity as f64 * window_minutes,
        "accepted {accepted} in {window_minutes} minutes"
    );
    assert!(
        (throttled as f64) <= 0.05 * late.len() as f64,
        "{throttled} throttles of {}",
        late.len()
    );
    let effective = snapshot(&budget, NOVA).effective.requests.unwrap();
    assert!(effective <= 100, "effective limit {effective}");
    // Without throttles the limit recovers to the configured one.
    sleep(Duration::from_secs(60 * 30)).await;
    assert_eq!(snapshot(&budget, NOVA).effective.requests, Some(100));
}

/// The seed's scenario: apps A, B and C at 75, 50 and 50 rpm against a 150
/// RPM quota for 10 virtual minutes, each a tenant of equal weight. The
/// mock server (an exact 60 s sliding log of 150 requests) never answers
/// 429, the quota is used within 2 %, and each app's share is reported.
pub async fn seed_scenario<St: BudgetStore>(store: St) {
    let quota = 150u64;
    let budget = builder()
        // Shares under contention are the scheduler's, which the sliding
        // window exercises continuously (fixed windows drain at their start).
        .window_mode(WindowMode::Sliding)
        .tokens_per_window(10_000_000)
        .requests_per_window(quota)
        .max_wait(Duration::from_secs(30))
        .build_with_store(store)
        .unwrap();
    let mock = MockBedrock::new(Duration::from_secs(2)).with_capacity(Capacity {
        window: Duration::from_secs(60),
        requests: Some(quota),
        tokens: None,
        fixed: None,
    });
    let minutes = 10u64;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(60 * minutes);
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut apps = Vec::new();
    for (i, (name, rpm)) in [("A", 75u64), ("B", 50), ("C", 50)].into_iter().enumerate() {
        let svc = budget.tenant(name, 1).unwrap().layer().layer(mock.clone());
        let jitter = Duration::from_millis(rng.u64(0..500));
        apps.push(tokio::spawn(drive_app(
            svc,
            rpm,
            minutes,
            (i as u64) << 32,
            jitter,
        )));
    }
    for a in apps {
        a.await.unwrap();
    }
    let calls = mock.calls();
    assert_eq!(mock.throttled(), 0, "the server never throttled");
    let served = calls.iter().filter(|c| c.at < end).count() as f64;
    let total_quota = (quota * minutes) as f64;
    assert!(
        served >= 0.98 * total_quota && served <= total_quota,
        "served {served} of {total_quota}"
    );
    let snap = snapshot(&budget, NOVA);
    let mut report = String::new();
    for t in &snap.tenants {
        let per_minute = t.admitted_requests as f64 / minutes as f64;
        report.push_str(&format!(
            "{}: {} admitted ({per_minute:.1} rpm), {} waited, {} shed; ",
            t.name, t.admitted_requests, t.waits, t.sheds
        ));
    }
    println!("seed scenario: served {served} of {total_quota}: {report}");
    let admitted = |name: &str| {
        snap.tenants
            .iter()
            .find(|t| t.name == name)
            .map_or(0, |t| t.admitted_requests)
    };
    // B and C ask for their share and get it; A gets its share, not more.
    for name in ["B", "C"] {
        assert!(admitted(name) as f64 >= 0.97 * 500.0, "{report}");
    }
    assert!(
        admitted("A") as f64 >= 0.93 * 500.0 && admitted("A") <= 560,
        "{report}"
    );
}

async fn drive_app<St: BudgetStore>(
    mut svc: Svc<St>,
    rpm: u64,
    minutes: u64,
    first_id: u64,
    offset: Duration,
) {
    let every = Duration::from_secs(60) / u32::try_from(rpm).unwrap_or(1);
    let start = Instant::now() + offset;
    let end = Instant::now() + Duration::from_secs(60 * minutes);
    let mut next = start;
    let mut id = first_id;
    let mut handles = Vec::new();
    while next < end {
        sleep_until(next).await;
        handles.push(spawn(&mut svc, MockRequest::new(NOVA, id, 10, 10)));
        id += 1;
        next += every;
    }
    for h in handles {
        let _ = h.await.unwrap();
    }
}
