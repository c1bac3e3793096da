//! The preset stack over mock services, under paused time: order of the
//! layers, each slot on, off and replaced, typed build errors, poll_ready
//! before every call, shared state across clones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Service, ServiceExt};
use tower_bedrock::breaker::{CircuitBreakLayer, CircuitState};
use tower_bedrock::budget::Budget;
use tower_bedrock::classify::{ThrottleClassifyLayer, classify_parts};
use tower_bedrock::core::{
    CallReport, Classification, Classified, ClassifiedError, Clock, ErrorClass, LocalRejection,
    ModelRequest, ReportsUsage, ThrottleKind, TokenDemand, UnavailableKind, Usage,
};
use tower_bedrock::fallback::{Chain, Target};
use tower_bedrock::retry::QuotaAlignedRetryLayer;
use tower_bedrock::stack::BuildError;

const PRIMARY: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
const SECONDARY: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

#[derive(Clone, Debug)]
struct Ask {
    model: String,
    input: u64,
    max_tokens: u64,
    report: Option<CallReport>,
}

impl Ask {
    fn new(model: &str) -> Self {
        Ask {
            model: model.to_owned(),
            input: 100,
            max_tokens: 100,
            report: None,
        }
    }
    fn reported(mut self) -> (Self, CallReport) {
        let r = CallReport::new();
        self.report = Some(r.clone());
        (self, r)
    }
}

impl ModelRequest for Ask {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn set_model_id(&mut self, id: &str) {
        self.model = id.to_owned();
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand {
            input_tokens: self.input,
            max_output_tokens: Some(self.max_tokens),
        }
    }
    fn set_max_output_tokens(&mut self, n: u64) {
        self.max_tokens = n;
    }
    fn report(&self) -> Option<&CallReport> {
        self.report.as_ref()
    }
}

#[derive(Debug)]
struct Answer {
    model: String,
}

impl ReportsUsage for Answer {
    fn usage(&self) -> Option<Usage> {
        Some(Usage::new(100, 10))
    }
}

/// What a mock Bedrock answers, per model, in order (the last one repeats).
#[derive(Debug, Clone, Copy)]
enum Reply {
    Ok,
    Overloaded,
    TooManyTokens,
    Unavailable,
    Validation,
}

#[derive(Debug)]
struct WireError {
    status: u16,
    code: &'static str,
    message: &'static str,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.code)
    }
}
impl std::error::Error for WireError {}

fn classify_wire(e: &WireError) -> Classification {
    classify_parts(Some(e.status), Some(e.code), Some(e.message))
}

/// A mock Bedrock: scripted replies per model, counts readiness checks and
/// calls (clones share the counters).
#[derive(Clone)]
struct Mock {
    primary: Arc<Vec<Reply>>,
    secondary: Arc<Vec<Reply>>,
    calls_primary: Arc<AtomicU32>,
    calls_secondary: Arc<AtomicU32>,
    ready: Arc<AtomicU32>,
    /// Calls made without a `poll_ready` returning `Ready` first.
    unready_calls: Arc<AtomicU32>,
    is_ready: bool,
}

impl Mock {
    fn new(primary: &[Reply], secondary: &[Reply]) -> Self {
        Mock {
            primary: Arc::new(primary.to_vec()),
            secondary: Arc::new(secondary.to_vec()),
            calls_primary: Arc::default(),
            calls_secondary: Arc::default(),
            ready: Arc::default(),
            unready_calls: Arc::default(),
            is_ready: false,
        }
    }
    fn primary_calls(&self) -> u32 {
        self.calls_primary.load(Ordering::SeqCst)
    }
    fn secondary_calls(&self) -> u32 {
        self.calls_secondary.load(Ordering::SeqCst)
    }
}

impl Service<Ask> for Mock {
    type Response = Answer;
    type Error = WireError;
    type Future = std::future::Ready<Result<Answer, WireError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), WireError>> {
        self.ready.fetch_add(1, Ordering::SeqCst);
        self.is_ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Ask) -> Self::Future {
        if !std::mem::replace(&mut self.is_ready, false) {
            self.unready_calls.fetch_add(1, Ordering::SeqCst);
        }
        let (script, counter) = if req.model == PRIMARY {
            (&self.primary, &self.calls_primary)
        } else {
            (&self.secondary, &self.calls_secondary)
        };
        let n = counter.fetch_add(1, Ordering::SeqCst) as usize;
        let reply = script[n.min(script.len() - 1)];
        let err = |status, code, message| {
            Err(WireError {
                status,
                code,
                message,
            })
        };
        std::future::ready(match reply {
            Reply::Ok => Ok(Answer { model: req.model }),
            Reply::Overloaded => err(
                429,
                "ThrottlingException",
                "Model is currently overloaded. Please try again later.",
            ),
            Reply::TooManyTokens => err(
                429,
                "ThrottlingException",
                "Too many tokens, please wait before trying again.",
            ),
            Reply::Unavailable => err(
                503,
                "ServiceUnavailableException",
                "Service temporarily unavailable, please try again.",
            ),
            Reply::Validation => err(400, "ValidationException", "Malformed input request."),
        })
    }
}

fn classify() -> ThrottleClassifyLayer<fn(&WireError) -> Classification> {
    ThrottleClassifyLayer::new().classifier(classify_wire as fn(&WireError) -> Classification)
}

fn chain() -> Chain<Ask> {
    Chain::new()
        .then(PRIMARY)
        .then(Target::new(SECONDARY).max_tokens(50))
}

/// 50 s into a minute, so that a throttle retry waits for the next window.
fn clock() -> Clock {
    Clock::starting_at(Duration::from_secs(1_700_000_000 - 1_700_000_000 % 60 + 50))
}

#[tokio::test(start_paused = true)]
async fn overload_falls_back_and_the_primary_breaker_opens() {
    let mock = Mock::new(&[Reply::Overloaded], &[Reply::Ok]);
    let breaker = CircuitBreakLayer::builder()
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .open_jitter(0.0)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = tower_bedrock::stack()
        .seed(1)
        .clock(clock())
        .fallback_chain(chain())
        .breaker(breaker)
        .classify(classify())
        .service(mock.clone())
        .unwrap();

    for i in 0..6 {
        let (ask, report) = Ask::new(PRIMARY).reported();
        let answer = svc.ready().await.unwrap().call(ask).await.unwrap();
        assert_eq!(answer.model, SECONDARY, "call {i}");
        let s = report.summary();
        assert!(s.degraded());
        assert_eq!(s.served_by.as_deref(), Some(SECONDARY));
    }
    // Overload is not retried (left to the fallback): one primary call per
    // request until the breaker opened after 3; then none at all.
    assert_eq!(mock.primary_calls(), 3);
    assert_eq!(mock.secondary_calls(), 6);
    assert_eq!(handle.get(PRIMARY).unwrap().state, CircuitState::Open);
    assert_eq!(mock.unready_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn rate_throttles_are_retried_after_the_window_opens() {
    let mock = Mock::new(&[Reply::TooManyTokens, Reply::Ok], &[Reply::Ok]);
    let mut svc = tower_bedrock::stack()
        .seed(2)
        .clock(clock())
        .fallback_chain(chain())
        .classify(classify())
        .service(mock.clone())
        .unwrap();
    let (ask, report) = Ask::new(PRIMARY).reported();
    let start = tokio::time::Instant::now();
    let answer = svc.ready().await.unwrap().call(ask).await.unwrap();
    assert_eq!(answer.model, PRIMARY);
    let waited = start.elapsed();
    // 10 s to the next minute, then 1 to 5 s into it.
    assert!(
        waited >= Duration::from_secs(11) && waited <= Duration::from_secs(15),
        "{waited:?}"
    );
    assert_eq!(report.summary().attempts, 2);
    assert!(!report.summary().degraded());
    assert_eq!(mock.primary_calls(), 2);
    assert_eq!(mock.secondary_calls(), 0);
    // poll_ready before every call, the retry included.
    assert_eq!(mock.unready_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_budget_moves_on_to_the_fallback_without_calling_the_primary() {
    let mock = Mock::new(&[Reply::Ok], &[Reply::Ok]);
    // Room for one primary call per window, not two: a call reserves
    // 100 + 100 x 5 (Claude 4 burndown) and settles to 100 + 10 x 5.
    let budget = Budget::builder()
        .tokens_per_window(700)
        .max_wait(Duration::ZERO)
        .build()
        .unwrap();
    let mut svc = tower_bedrock::stack()
        .seed(3)
        .clock(clock())
        .fallback_chain(chain())
        .token_budget(&budget)
        .classify(classify())
        .service(mock.clone())
        .unwrap();
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(Ask::new(PRIMARY))
        .await
        .unwrap();
    assert_eq!(first.model, PRIMARY);
    let (ask, report) = Ask::new(PRIMARY).reported();
    let second = svc.ready().await.unwrap().call(ask).await.unwrap();
    assert_eq!(second.model, SECONDARY);
    let s = report.summary();
    assert_eq!(s.tried.len(), 1);
    assert_eq!(
        s.tried[0].class,
        ErrorClass::Local(LocalRejection::BudgetExhausted)
    );
    assert_eq!(mock.primary_calls(), 1);
    // The fallback target was capped to 50 output tokens, and settled.
    assert_eq!(budget.snapshot(SECONDARY).unwrap().tokens, 110);
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_returned_as_is() {
    let mock = Mock::new(&[Reply::Validation], &[Reply::Ok]);
    let mut svc = tower_bedrock::stack()
        .seed(4)
        .fallback_chain(chain())
        .classify(classify())
        .service(mock.clone())
        .unwrap();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Ask::new(PRIMARY))
        .await
        .unwrap_err();
    assert!(matches!(err.class(), ErrorClass::Client(_)));
    assert_eq!(err.inner().unwrap().code, "ValidationException");
    assert_eq!(err.context().unwrap().attempts, 1);
    assert_eq!(mock.secondary_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn slots_can_be_left_out() {
    // A service whose errors are already classified: no classifier, no
    // retry, no breaker: the error comes back from the first call.
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let inner = tower::service_fn(move |_: Ask| {
        seen.fetch_add(1, Ordering::SeqCst);
        async {
            let c = Classification::new(ErrorClass::Unavailable(UnavailableKind::Service))
                .with_status(503);
            Err::<Answer, _>(ClassifiedError::new(std::io::Error::other("down"), c))
        }
    });
    let mut svc = tower_bedrock::stack()
        .without_retry()
        .without_breaker()
        .without_classify()
        .service(inner)
        .unwrap();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Ask::new(PRIMARY))
        .await
        .unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Service)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn unavailability_is_retried_by_the_default_retry() {
    let mock = Mock::new(&[Reply::Unavailable, Reply::Unavailable, Reply::Ok], &[]);
    let mut svc = tower_bedrock::stack()
        .seed(5)
        .classify(classify())
        .service(mock.clone())
        .unwrap();
    let (ask, report) = Ask::new(PRIMARY).reported();
    let answer = svc.ready().await.unwrap().call(ask).await.unwrap();
    assert_eq!(answer.model, PRIMARY);
    assert_eq!(report.summary().attempts, 3);
    assert_eq!(mock.unready_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn clones_share_breakers_and_budgets() {
    let mock = Mock::new(&[Reply::Unavailable], &[Reply::Ok]);
    let layer = tower_bedrock::stack()
        .seed(6)
        .breaker(
            CircuitBreakLayer::builder()
                .consecutive_failures(2)
                .build()
                .unwrap(),
        )
        .retry(
            QuotaAlignedRetryLayer::builder()
                .max_attempts(1)
                .seed(6)
                .build()
                .unwrap(),
        )
        .classify(classify())
        .into_layer()
        .unwrap();
    let handle = layer.breaker_layer().handle();
    let mut a = layer.boxed(mock.clone());
    let mut b = a.clone();
    for svc in [&mut a, &mut b] {
        let e = svc
            .ready()
            .await
            .unwrap()
            .call(Ask::new(PRIMARY))
            .await
            .unwrap_err();
        assert_eq!(e.class(), ErrorClass::Unavailable(UnavailableKind::Service));
    }
    assert_eq!(handle.get(PRIMARY).unwrap().state, CircuitState::Open);
    // A third service made by the same layer sees the open breaker too.
    let mut c = layer.boxed(mock.clone());
    let e = c
        .ready()
        .await
        .unwrap()
        .call(Ask::new(PRIMARY))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Local(LocalRejection::CircuitOpen));
    assert_eq!(mock.primary_calls(), 2);
}

#[test]
fn bad_configuration_fails_at_build_time_with_a_typed_error() {
    let mock = Mock::new(&[Reply::Ok], &[Reply::Ok]);
    let empty = tower_bedrock::stack()
        .fallback_chain(Chain::<Ask>::new())
        .classify(classify())
        .service::<_, Ask, _>(mock.clone());
    assert!(matches!(
        empty.map(|_| ()),
        Err(BuildError::Fallback(
            tower_bedrock::fallback::error::BuildError::EmptyChain
        ))
    ));
    let zero_window = tower_bedrock::stack()
        .window(Duration::ZERO)
        .classify(classify())
        .service::<_, Ask, _>(mock);
    let err = zero_window.map(|_| ()).unwrap_err();
    assert!(matches!(
        err,
        BuildError::Retry(tower_bedrock::retry::BuildError::ZeroWindow)
    ));
    assert!(err.to_string().starts_with("retry layer:"));
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test(start_paused = true)]
async fn throttles_in_the_emitted_classes() {
    // The default classify slot is the SDK classifier; a throttle read by
    // a custom classifier keeps its kind through the whole stack.
    let mock = Mock::new(&[Reply::TooManyTokens], &[]);
    let mut svc = tower_bedrock::stack()
        .seed(8)
        .clock(clock())
        .retry(
            QuotaAlignedRetryLayer::builder()
                .max_attempts(2)
                .clock(clock())
                .seed(8)
                .build()
                .unwrap(),
        )
        .classify(classify())
        .service(mock.clone())
        .unwrap();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Ask::new(PRIMARY))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Throttled(ThrottleKind::TokenRate));
    assert_eq!(err.context().unwrap().attempts, 2);
    assert_eq!(mock.primary_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_shorter_window_scales_the_default_time_constants() {
    // A 6 s window: one tenth of every default. 50 s into the minute is
    // 2 s into a 6 s window, so a throttle waits 4 s for the next window
    // plus 0.1 s and up to 0.4 s of jitter (1 s + 4 s by default).
    let mock = Mock::new(&[Reply::TooManyTokens, Reply::Ok], &[]);
    let mut svc = tower_bedrock::stack()
        .window(Duration::from_secs(6))
        .seed(9)
        .clock(clock())
        .classify(classify())
        .service(mock.clone())
        .unwrap();
    let start = tokio::time::Instant::now();
    svc.ready()
        .await
        .unwrap()
        .call(Ask::new(PRIMARY))
        .await
        .unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(4_100) && waited <= Duration::from_millis(4_500),
        "{waited:?}"
    );
    assert_eq!(mock.primary_calls(), 2);

    // The breaker's open duration scales too: 5 s becomes 0.5 s.
    let failing = Mock::new(&[Reply::Unavailable], &[]);
    let layer = tower_bedrock::stack()
        .window(Duration::from_secs(6))
        .seed(9)
        .without_retry()
        .classify(classify())
        .into_layer()
        .unwrap();
    let handle = layer.breaker_layer().handle();
    let mut svc = layer.boxed(failing.clone());
    for _ in 0..10 {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(Ask::new(PRIMARY))
            .await
            .unwrap_err();
    }
    let snap = handle.get(PRIMARY).unwrap();
    assert_eq!(snap.state, CircuitState::Open);
    let after = snap.retry_after.unwrap();
    // 0.5 s, up to 10 % shorter at random.
    assert!(
        after <= Duration::from_millis(500) && after >= Duration::from_millis(450),
        "{after:?}"
    );
}

/// Counts every counter increment and histogram record by metric name and
/// `model` label.
#[derive(Default, Clone)]
struct Counting(Arc<std::sync::Mutex<Tallies>>);

type Tallies = std::collections::BTreeMap<(String, String), Arc<Tally>>;

#[derive(Default)]
struct Tally(std::sync::atomic::AtomicU64);

impl metrics::CounterFn for Tally {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl metrics::HistogramFn for Tally {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counting {
    fn tally(&self, key: &metrics::Key) -> Arc<Tally> {
        let model = key
            .labels()
            .find(|l| l.key() == "model")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .entry((key.name().to_owned(), model))
            .or_default()
            .clone()
    }
    fn get(&self, name: &str, model: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(&(name.to_owned(), model.to_owned()))
            .map_or(0, |t| t.0.load(Ordering::SeqCst))
    }
}

impl metrics::Recorder for Counting {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.tally(key))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.tally(key))
    }
}

#[tokio::test(start_paused = true)]
async fn invocation_metrics_count_every_attempt_and_its_tokens() {
    let recorder = Counting::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // Throttled once, then answered: two invocations of the primary, one
    // error, one success with 100 input and 10 output tokens.
    let mock = Mock::new(&[Reply::TooManyTokens, Reply::Ok], &[]);
    let mut svc = tower_bedrock::stack()
        .seed(10)
        .clock(clock())
        .classify(classify())
        .service(mock.clone())
        .unwrap();
    svc.ready()
        .await
        .unwrap()
        .call(Ask::new(PRIMARY))
        .await
        .unwrap();
    use tower_bedrock::core::names;
    use tower_bedrock::observe;
    assert_eq!(recorder.get(names::INVOCATIONS, PRIMARY), 2);
    assert_eq!(recorder.get(names::INVOCATION_ERRORS, PRIMARY), 1);
    assert_eq!(recorder.get(names::INVOCATION_THROTTLES, PRIMARY), 1);
    assert_eq!(recorder.get(observe::INVOCATION_LATENCY, PRIMARY), 2);
    assert_eq!(recorder.get(observe::INPUT_TOKENS, PRIMARY), 100);
    assert_eq!(recorder.get(observe::OUTPUT_TOKENS, PRIMARY), 10);

    // Without the metrics slot, invocations are not counted (errors still
    // are, by the classifier).
    let mock = Mock::new(&[Reply::Ok], &[Reply::Unavailable, Reply::Ok]);
    let mut svc = tower_bedrock::stack()
        .seed(10)
        .without_metrics()
        .classify(classify())
        .service(mock)
        .unwrap();
    svc.ready()
        .await
        .unwrap()
        .call(Ask::new(SECONDARY))
        .await
        .unwrap();
    assert_eq!(recorder.get(names::INVOCATIONS, SECONDARY), 0);
    assert_eq!(recorder.get(names::INVOCATION_ERRORS, SECONDARY), 1);
}

#[tokio::test(start_paused = true)]
async fn a_sync_boxed_stack_can_live_in_shared_state() {
    fn assert_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
    let mock = Mock::new(&[Reply::Ok], &[]);
    let svc = tower_bedrock::stack()
        .seed(12)
        .classify(classify())
        .sync_service(mock)
        .unwrap();
    assert_sync(&svc);
    let shared = Arc::new(svc);
    let answer = (*shared).clone().oneshot(Ask::new(PRIMARY)).await.unwrap();
    assert_eq!(answer.model, PRIMARY);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_spends_no_budget_and_the_retry_does_not_hammer_it() {
    // The order of the design: the breaker sits above the budget, the
    // retry above the breaker.
    let mock = Mock::new(&[Reply::Ok], &[Reply::Ok]);
    let budget = Budget::builder()
        .tokens_per_window(100_000)
        .build()
        .unwrap();
    let layer = tower_bedrock::stack()
        .seed(13)
        .token_budget(&budget)
        .classify(classify())
        .into_layer()
        .unwrap();
    let breakers = layer.breaker_layer().handle();
    let mut svc = layer.boxed(mock.clone());
    breakers.force_open(PRIMARY);
    let (ask, report) = Ask::new(PRIMARY).reported();
    let err = svc.ready().await.unwrap().call(ask).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Local(LocalRejection::CircuitOpen));
    // One attempt (a local rejection is never retried), nothing reserved
    // or charged, nothing sent.
    assert_eq!(report.summary().attempts, 1);
    assert!(
        budget
            .snapshot(PRIMARY)
            .is_none_or(|s| s.tokens == 0 && s.requests == 0)
    );
    assert_eq!(mock.primary_calls(), 0);
}

// ------------------------------------------------------------ 503 storm

/// A Bedrock in a 503 storm: between `from` and `to`, each call is
/// answered 503 with probability one half (seeded); every call takes
/// `STORM_LATENCY`. Counts what reached it.
#[derive(Clone)]
struct StormBedrock {
    from: tokio::time::Instant,
    to: tokio::time::Instant,
    rng: Arc<std::sync::Mutex<fastrand::Rng>>,
    sent: Arc<AtomicU32>,
    unavailable: Arc<AtomicU32>,
}

const STORM_LATENCY: Duration = Duration::from_millis(300);

impl Service<Ask> for StormBedrock {
    type Response = Answer;
    type Error = WireError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Answer, WireError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), WireError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Ask) -> Self::Future {
        let now = tokio::time::Instant::now();
        self.sent.fetch_add(1, Ordering::SeqCst);
        let fail = now >= self.from && now < self.to && self.rng.lock().unwrap().bool();
        if fail {
            self.unavailable.fetch_add(1, Ordering::SeqCst);
        }
        Box::pin(async move {
            tokio::time::sleep(STORM_LATENCY).await;
            if fail {
                Err(WireError {
                    status: 503,
                    code: "ServiceUnavailableException",
                    message: "Service temporarily unavailable, please try again.",
                })
            } else {
                Ok(Answer { model: req.model })
            }
        })
    }
}

/// What 20 clients saw through one stack over a 60 s storm.
#[derive(Debug)]
struct StormOutcome {
    calls: u32,
    failures: u32,
    failures_after_storm: u32,
    served_during_storm: u32,
    circuit_open_failures: u32,
    sent_to_bedrock: u32,
    unavailable_from_bedrock: u32,
}

const STORM_CLIENTS: usize = 20;
/// Calm before the storm, the storm, calm after it.
const STORM_START: Duration = Duration::from_secs(10);
const STORM_LENGTH: Duration = Duration::from_secs(60);
const STORM_AFTER: Duration = Duration::from_secs(60);

/// Runs 20 clients, each sending one call after another (0.5 s apart),
/// through `svc` over a [`StormBedrock`] made by `over`, from before the
/// storm until a minute after it.
async fn run_storm<S>(make: impl Fn(StormBedrock) -> S, seed: u64) -> StormOutcome
where
    S: Service<Ask, Response = Answer, Error = ClassifiedError<WireError>> + Clone + Send + 'static,
    S::Future: Send,
{
    let t0 = tokio::time::Instant::now();
    let storm_end = t0 + STORM_START + STORM_LENGTH;
    let bedrock = StormBedrock {
        from: t0 + STORM_START,
        to: storm_end,
        rng: Arc::new(std::sync::Mutex::new(fastrand::Rng::with_seed(seed))),
        sent: Arc::default(),
        unavailable: Arc::default(),
    };
    let svc = make(bedrock.clone());
    let stop = storm_end + STORM_AFTER;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..STORM_CLIENTS {
        let mut svc = svc.clone();
        clients.spawn(async move {
            // (ended at, class of the failure)
            let mut outcomes = Vec::new();
            while tokio::time::Instant::now() < stop {
                let r = svc.ready().await.unwrap().call(Ask::new(PRIMARY)).await;
                outcomes.push((tokio::time::Instant::now(), r.err().map(|e| e.class())));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            outcomes
        });
    }
    let mut out = StormOutcome {
        calls: 0,
        failures: 0,
        failures_after_storm: 0,
        served_during_storm: 0,
        circuit_open_failures: 0,
        sent_to_bedrock: 0,
        unavailable_from_bedrock: 0,
    };
    while let Some(done) = clients.join_next().await {
        for (at, failure) in done.unwrap() {
            out.calls += 1;
            out.served_during_storm +=
                u32::from(failure.is_none() && at > t0 + STORM_START && at <= storm_end);
            if let Some(class) = failure {
                out.failures += 1;
                out.failures_after_storm += u32::from(at > storm_end);
                out.circuit_open_failures +=
                    u32::from(class == ErrorClass::Local(LocalRejection::CircuitOpen));
            }
        }
    }
    out.sent_to_bedrock = bedrock.sent.load(Ordering::SeqCst);
    out.unavailable_from_bedrock = bedrock.unavailable.load(Ordering::SeqCst);
    out
}

#[tokio::test(start_paused = true)]
async fn a_503_storm_without_fallback_fails_no_call_after_it_ends() {
    // The preset, no fallback: the retry layer waits out the open breaker.
    let now = run_storm(
        |bedrock| {
            tower_bedrock::stack()
                .seed(5)
                .classify(classify())
                .without_metrics()
                .service(bedrock)
                .unwrap()
        },
        42,
    )
    .await;
    // The same stack as it was: refusals by the open breaker returned at
    // once, open times doubling up to 120 s, every probe had to succeed,
    // the breaker opening at 50 % failures, 3 retries of a 503 under a
    // retry budget refilled by 1 a success, a 180 s deadline.
    let before = run_storm(
        |bedrock| {
            let retry = QuotaAlignedRetryLayer::builder()
                .seed(5)
                .policy(
                    ErrorClass::Unavailable(UnavailableKind::Service),
                    tower_bedrock::retry::ClassPolicy::retry(
                        3,
                        tower_bedrock::retry::DEFAULT_UNAVAILABLE_BACKOFF,
                    ),
                )
                .retry_budget(tower_bedrock::retry::RetryBudgetConfig::new().success_refill(1))
                .deadline(Duration::from_secs(180))
                .call_options(tower_bedrock::retry::ModelRequestReport)
                .build()
                .unwrap();
            let breaker = CircuitBreakLayer::builder()
                .seed(5)
                .failure_rate_threshold(0.5)
                .max_open_duration(Duration::from_secs(120))
                .half_open_success_rate(1.0)
                .build()
                .unwrap();
            tower_bedrock::stack()
                .retry(retry)
                .breaker(breaker)
                .classify(classify())
                .without_metrics()
                .service(bedrock)
                .unwrap()
        },
        42,
    )
    .await;
    println!("503 storm, 20 clients, 60 s of 50 % 503s, paused time:");
    println!("  before: {before:?}");
    println!("  now:    {now:?}");
    assert_eq!(now.failures_after_storm, 0, "{now:?}");
    assert_eq!(now.circuit_open_failures, 0, "{now:?}");
    assert!(now.failures < before.failures, "{now:?} vs {before:?}");
    // The old stack really lost calls after the storm: the comparison
    // measures something.
    assert!(before.failures_after_storm > 0, "{before:?}");
}

#[tokio::test(start_paused = true)]
async fn junk_model_ids_do_not_grow_the_metric_labels_without_end() {
    use tower_bedrock::core::labels::{MODEL_LABEL_LIMIT, OTHER, register_models};
    use tower_bedrock::core::names;
    // The ids the other tests of this file use keep their labels whatever
    // runs first.
    register_models([PRIMARY, SECONDARY]);
    let recorder = Counting::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // Every call fails with a code the classifier does not know, for a
    // model id never seen before. Before, each made a series of its own
    // (and one per unknown code).
    let mut svc = tower_bedrock::stack()
        .without_retry()
        .without_breaker()
        .classify(ThrottleClassifyLayer::new().classifier(|_: &WireError| {
            classify_parts(Some(400), Some("SomethingNewException"), None)
        }))
        .service(tower::service_fn(|_: Ask| async {
            Err::<Answer, _>(WireError {
                status: 400,
                code: "SomethingNewException",
                message: "",
            })
        }))
        .unwrap();
    let calls = 2 * MODEL_LABEL_LIMIT;
    for i in 0..calls {
        let junk = format!("junk-model-{i}");
        svc.ready()
            .await
            .unwrap()
            .call(Ask::new(&junk))
            .await
            .unwrap_err();
    }
    let tallies = recorder.0.lock().unwrap();
    let models: std::collections::BTreeSet<&str> = tallies
        .keys()
        .filter(|(name, _)| name == names::INVOCATIONS)
        .map(|(_, model)| model.as_str())
        .collect();
    assert!(models.len() <= MODEL_LABEL_LIMIT + 1, "{}", models.len());
    assert!(models.contains(OTHER));
    let folded = tallies
        .get(&(names::INVOCATIONS.to_owned(), OTHER.to_owned()))
        .map_or(0, |t| t.0.load(Ordering::SeqCst));
    assert!(folded >= (calls - MODEL_LABEL_LIMIT) as u64, "{folded}");
    // The classifier folds the errors of those ids the same way.
    drop(tallies);
    assert_eq!(recorder.get(names::INVOCATION_ERRORS, OTHER), folded);
}

#[tokio::test(start_paused = true)]
async fn a_call_with_a_3_s_deadline_behind_a_full_budget_ends_at_3_s() {
    // A budget with room for one call, taken by a call Bedrock answers in
    // 10 s; the next call, with a 3 s deadline (the retry layer's), waits
    // for room behind it. Before, the budget did not see the deadline and
    // the call waited until the first one settled.
    // (A call reserves 100 input + 5 x 100 output tokens: Claude 4's
    // output burndown.)
    let budget = Budget::builder()
        .tokens_per_window(1000)
        .max_wait(Duration::from_secs(600))
        .build()
        .unwrap();
    let retry = QuotaAlignedRetryLayer::builder()
        .deadline(Duration::from_secs(3))
        .call_options(tower_bedrock::retry::ModelRequestReport)
        .build()
        .unwrap();
    let slow = tower::service_fn(|ask: Ask| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, WireError>(Answer { model: ask.model })
    });
    let svc = tower_bedrock::stack()
        .retry(retry)
        .token_budget(&budget)
        .classify(classify())
        .without_metrics()
        .service(slow)
        .unwrap();
    let first = tokio::spawn(svc.clone().oneshot(Ask::new(PRIMARY)));
    tokio::task::yield_now().await;
    let start = tokio::time::Instant::now();
    let err = svc.oneshot(Ask::new(PRIMARY)).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(
        err.class(),
        ErrorClass::Local(LocalRejection::DeadlineExceeded)
    );
    assert_eq!(
        err.context().unwrap().retry_stop,
        Some(tower_bedrock::core::RetryStop::NotRetryable)
    );
    // The first call was not disturbed.
    first.await.unwrap().unwrap();
}
