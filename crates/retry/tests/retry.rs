//! Behaviour of `QuotaAlignedRetry` under paused tokio time with mock services.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use fastrand::Rng;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_bedrock_core::{
    CallReport, Classified, Clock, ErrorClass, LocalRejection, ModelRequest, RetryStop,
    ThrottleKind, TokenDemand, UnavailableKind,
};
use tower_bedrock_retry::{
    Backoff, BuildError, ClassPolicy, Jitter, ModelRequestReport, PerCall, QuotaAlignedRetryLayer,
    RetryBudgetConfig,
};

const SEED: u64 = 0x5EED;
/// A UNIX time on a minute boundary.
const MINUTE_START: u64 = 1_700_000_000 - 1_700_000_000 % 60;

fn clock_at(second_of_minute: u64) -> Clock {
    Clock::starting_at(Duration::from_secs(MINUTE_START + second_of_minute))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The draws `rng.u64(0..=span)` (milliseconds) the layer makes for its
/// first call with `seed`.
fn draws(seed: u64, spans_ms: &[u64]) -> Vec<Duration> {
    let mut rng = Rng::with_seed(seed);
    spans_ms.iter().map(|&s| ms(rng.u64(0..=s))).collect()
}

async fn call_once<S>(svc: &mut S) -> Result<u32, Error>
where
    S: Service<u32, Response = u32, Error = Error>,
{
    svc.ready().await?.call(7).await
}

fn context(e: &Error) -> (u32, Option<RetryStop>) {
    let ctx = e.context().expect("ClassifiedError keeps a context");
    (ctx.attempts, ctx.retry_stop)
}

// ---------------------------------------------------------------- schedules

#[tokio::test(start_paused = true)]
async fn token_rate_throttle_waits_for_the_next_window_across_minute_boundaries() {
    let mock = Mock::failing(2, token_rate());
    let state = mock.state();
    let clock = clock_at(58);
    let layer = QuotaAlignedRetryLayer::builder()
        .clock(clock)
        .seed(SEED)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    assert_eq!(call_once(&mut svc).await.unwrap(), 7);

    // Offset 1 s + U[0, 4 s] after each window opens.
    let d = draws(SEED, &[4000, 4000]);
    let calls = state.calls();
    assert_eq!(calls.len(), 3);
    let wall: Vec<Duration> = calls.iter().map(|&t| clock.wall_at(t)).collect();
    let minute = |k: u64| secs(MINUTE_START + 60 * k);
    assert_eq!(wall[0], minute(0) + secs(58));
    // 2 s to the boundary, then 1 s + jitter into the next minute.
    assert_eq!(wall[1], minute(1) + secs(1) + d[0]);
    // Then into the minute after, whatever the phase of the failure.
    assert_eq!(wall[2], minute(2) + secs(1) + d[1]);
    assert_eq!(state.gaps(), vec![secs(3) + d[0], secs(60) - d[0] + d[1]]);
}

#[tokio::test(start_paused = true)]
async fn request_rate_throttle_uses_the_configured_window_length() {
    let mock = Mock::failing(1, request_rate());
    let state = mock.state();
    let clock = clock_at(7);
    let layer = QuotaAlignedRetryLayer::builder()
        .clock(clock)
        .window(secs(10))
        .rate_throttles(ClassPolicy::retry(
            2,
            Backoff::quota_window(ms(250), ms(500)),
        ))
        .seed(SEED)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    call_once(&mut svc).await.unwrap();
    let d = draws(SEED, &[500]);
    // 3 s to the 10 s boundary, then 250 ms + U[0, 500 ms].
    assert_eq!(state.gaps(), vec![secs(3) + ms(250) + d[0]]);
}

#[tokio::test(start_paused = true)]
async fn service_unavailable_full_jitter_schedule_is_exact() {
    let mock = Mock::failing(3, service());
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    call_once(&mut svc).await.unwrap();
    // base 1 s, cap 20 s: U[0, 1 s], U[0, 2 s], U[0, 4 s].
    assert_eq!(state.gaps(), draws(SEED, &[1000, 2000, 4000]));
}

#[tokio::test(start_paused = true)]
async fn network_failures_share_the_unavailable_schedule() {
    let mock = Mock::failing(2, network());
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    call_once(&mut svc).await.unwrap();
    assert_eq!(state.gaps(), draws(SEED, &[1000, 2000]));
}

#[tokio::test(start_paused = true)]
async fn connection_pool_short_full_jitter_schedule_is_exact() {
    let mock = Mock::failing(3, pool());
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    call_once(&mut svc).await.unwrap();
    // base 100 ms, cap 1 s.
    assert_eq!(state.gaps(), draws(SEED, &[100, 200, 400]));
}

#[tokio::test(start_paused = true)]
async fn connection_pool_gives_up_after_three_retries() {
    let mock = Mock::always(pool());
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(context(&err), (4, Some(RetryStop::MaxAttempts)));
    assert_eq!(state.call_count(), 4);
    // The last attempt's error comes back, nothing converted.
    assert_eq!(err.inner().unwrap().0, 4);
    assert_eq!(
        err.to_string(),
        "bedrock call failed: unavailable (connection pool) (after 4 attempts)"
    );
}

#[tokio::test(start_paused = true)]
async fn plain_exponential_without_jitter_doubles_to_the_cap() {
    let mock = Mock::failing(4, service());
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .policy(
            ErrorClass::Unavailable(UnavailableKind::Service),
            ClassPolicy::retry(4, Backoff::exponential(secs(1), secs(5), Jitter::None)),
        )
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    call_once(&mut svc).await.unwrap();
    assert_eq!(state.gaps(), vec![secs(1), secs(2), secs(4), secs(5)]);
}

#[tokio::test(start_paused = true)]
async fn equal_jitter_schedule_is_exact() {
    let mock = Mock::failing(3, service());
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .policy(
            ErrorClass::Unavailable(UnavailableKind::Service),
            ClassPolicy::retry(3, Backoff::exponential(secs(1), secs(3), Jitter::Equal)),
        )
        .seed(SEED)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    call_once(&mut svc).await.unwrap();
    // t = 1 s, 2 s, 3 s (capped): t/2 + U[0, t/2].
    let d = draws(SEED, &[500, 1000, 1500]);
    assert_eq!(
        state.gaps(),
        vec![ms(500) + d[0], ms(1000) + d[1], ms(1500) + d[2]]
    );
}

#[tokio::test(start_paused = true)]
async fn decorrelated_jitter_schedule_is_exact() {
    let mock = Mock::failing(4, service());
    let state = mock.state();
    let base = secs(1);
    let cap = secs(8);
    let layer = QuotaAlignedRetryLayer::builder()
        .policy(
            ErrorClass::Unavailable(UnavailableKind::Service),
            ClassPolicy::retry(4, Backoff::exponential(base, cap, Jitter::Decorrelated)),
        )
        .seed(SEED)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    call_once(&mut svc).await.unwrap();
    // sleep = min(cap, random_between(base, sleep * 3)), sleep starting at base.
    let mut rng = Rng::with_seed(SEED);
    let mut sleep = base;
    let mut expected = Vec::new();
    for _ in 0..4 {
        let hi = sleep * 3;
        let span = u64::try_from((hi - base).as_millis()).unwrap();
        sleep = (base + ms(rng.u64(0..=span))).min(cap);
        expected.push(sleep);
    }
    assert_eq!(state.gaps(), expected);
}

#[tokio::test(start_paused = true)]
async fn model_timeout_is_retried_at_most_once() {
    let mock = Mock::always(tower_bedrock_core::Classification::new(
        ErrorClass::ModelTimeout,
    ));
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(context(&err), (2, Some(RetryStop::MaxAttempts)));
    assert_eq!(state.gaps(), draws(SEED, &[1000]));
}

#[tokio::test(start_paused = true)]
async fn overloaded_and_not_ready_are_left_to_the_fallback_by_default() {
    for c in [overloaded(), not_ready()] {
        let mock = Mock::always(c);
        let state = mock.state();
        let mut svc = QuotaAlignedRetryLayer::new().layer(mock);
        let start = Instant::now();
        let err = call_once(&mut svc).await.unwrap_err();
        assert_eq!(context(&err), (1, Some(RetryStop::NotRetryable)));
        assert_eq!(state.call_count(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}

#[tokio::test(start_paused = true)]
async fn overloaded_retries_when_configured() {
    let mock = Mock::failing(2, overloaded());
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .policy(
            ErrorClass::Throttled(ThrottleKind::ModelOverloaded),
            ClassPolicy::retry(2, Backoff::exponential(secs(2), secs(10), Jitter::None)),
        )
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    call_once(&mut svc).await.unwrap();
    assert_eq!(state.gaps(), vec![secs(2), secs(4)]);
}

#[tokio::test(start_paused = true)]
async fn per_class_limits_and_the_global_limit_combine() {
    // Two throttles then a timeout then a timeout: the second timeout
    // exceeds the timeout class's single retry.
    let timeout = tower_bedrock_core::Classification::new(ErrorClass::ModelTimeout);
    let mock = Mock::new(
        vec![
            Some(pool()),
            Some(pool()),
            Some(timeout.clone()),
            Some(timeout),
        ],
        None,
    );
    let mut svc = QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .build()
        .unwrap()
        .layer(mock);
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(context(&err), (4, Some(RetryStop::MaxAttempts)));

    // A global limit of 2 attempts stops a class that allows 3 retries.
    let mock = Mock::always(pool());
    let state = mock.state();
    let mut svc = QuotaAlignedRetryLayer::builder()
        .max_attempts(2)
        .build()
        .unwrap()
        .layer(mock);
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(context(&err), (2, Some(RetryStop::MaxAttempts)));
    assert_eq!(state.call_count(), 2);
}

// ------------------------------------------------------------------- hints

#[tokio::test(start_paused = true)]
async fn retry_hints_replace_the_wait_and_are_clamped() {
    for (hint, expected) in [
        (secs(3), secs(3)),       // honoured as is, instead of the window
        (secs(500), secs(60)),    // clamped to the maximum
        (Duration::ZERO, ms(50)), // clamped to the minimum
        (ms(1), ms(50)),
    ] {
        let mock = Mock::failing(1, token_rate().with_retry_after(hint));
        let state = mock.state();
        let mut svc = QuotaAlignedRetryLayer::builder()
            .clock(clock_at(10))
            .build()
            .unwrap()
            .layer(mock);
        call_once(&mut svc).await.unwrap();
        assert_eq!(state.gaps(), vec![expected], "hint {hint:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn hint_range_is_configurable_and_hints_can_be_ignored() {
    let mock = Mock::failing(1, service().with_retry_after(secs(30)));
    let state = mock.state();
    let mut svc = QuotaAlignedRetryLayer::builder()
        .hint_range(secs(1), secs(10))
        .build()
        .unwrap()
        .layer(mock);
    call_once(&mut svc).await.unwrap();
    assert_eq!(state.gaps(), vec![secs(10)]);

    let mock = Mock::failing(1, service().with_retry_after(secs(30)));
    let state = mock.state();
    let mut svc = QuotaAlignedRetryLayer::builder()
        .policy(
            ErrorClass::Unavailable(UnavailableKind::Service),
            ClassPolicy::retry(1, Backoff::exponential(secs(2), secs(2), Jitter::None))
                .ignore_hint(),
        )
        .build()
        .unwrap()
        .layer(mock);
    call_once(&mut svc).await.unwrap();
    assert_eq!(state.gaps(), vec![secs(2)]);
}

// ------------------------------------------------------------ never retried

#[tokio::test(start_paused = true)]
async fn client_errors_quota_exceeded_unknown_and_local_rejections_are_never_retried() {
    let classes = [
        validation(),
        tower_bedrock_core::Classification::new(ErrorClass::QuotaExceeded),
        tower_bedrock_core::Classification::new(ErrorClass::Unknown),
        local(LocalRejection::BudgetExhausted),
        local(LocalRejection::CircuitOpen),
        local(LocalRejection::RetryBudgetExhausted),
        local(LocalRejection::DeadlineExceeded),
        local(LocalRejection::RequestTooLarge).with_retry_after(secs(1)),
    ];
    for c in classes {
        let mock = Mock::always(c.clone());
        let state = mock.state();
        let layer = QuotaAlignedRetryLayer::new();
        let mut svc = layer.layer(mock);
        let start = Instant::now();
        let err = call_once(&mut svc).await.unwrap_err();
        assert_eq!(context(&err), (1, Some(RetryStop::NotRetryable)), "{c}");
        assert_eq!(err.classification(), &c);
        assert_eq!(state.call_count(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(layer.retry_budget().available(), 500);
    }
}

#[test]
fn retrying_a_client_error_or_local_rejection_is_refused_at_build_time() {
    let retry = ClassPolicy::retry(1, Backoff::exponential(secs(1), secs(1), Jitter::Full));
    for class in [
        ErrorClass::Client(tower_bedrock_core::ClientKind::Validation),
        ErrorClass::Local(LocalRejection::CircuitOpen),
    ] {
        let err = QuotaAlignedRetryLayer::builder()
            .policy(class, retry)
            .build()
            .unwrap_err();
        assert_eq!(err, BuildError::NeverRetried(class));
    }
    // `never` is accepted for them (it is what they have anyway).
    assert!(
        QuotaAlignedRetryLayer::builder()
            .policy(
                ErrorClass::Local(LocalRejection::CircuitOpen),
                ClassPolicy::never()
            )
            .build()
            .is_ok()
    );
}

#[test]
fn bad_configuration_fails_at_build_time() {
    let b = QuotaAlignedRetryLayer::builder;
    assert_eq!(
        b().window(Duration::ZERO).build().unwrap_err(),
        BuildError::ZeroWindow
    );
    assert_eq!(
        b().hint_range(secs(2), secs(1)).build().unwrap_err(),
        BuildError::InvalidHintRange
    );
    assert_eq!(
        b().max_attempts(0).build().unwrap_err(),
        BuildError::ZeroMaxAttempts
    );
    assert_eq!(
        b().deadline(Duration::ZERO).build().unwrap_err(),
        BuildError::ZeroDeadline
    );
    assert!(matches!(
        b().retry_budget(RetryBudgetConfig::new().retry_cost(0))
            .build(),
        Err(BuildError::InvalidBudget(_))
    ));
    let service = ErrorClass::Unavailable(UnavailableKind::Service);
    for backoff in [
        Backoff::exponential(Duration::ZERO, secs(1), Jitter::Full),
        Backoff::exponential(secs(2), secs(1), Jitter::Decorrelated),
    ] {
        let err = b()
            .policy(service, ClassPolicy::retry(1, backoff))
            .build()
            .unwrap_err();
        assert!(matches!(err, BuildError::InvalidBackoff { class, .. } if class == service));
        assert!(
            err.to_string()
                .starts_with("invalid backoff for unavailable (service)")
        );
    }
}

// ------------------------------------------------------------------ budget

#[tokio::test(start_paused = true)]
async fn the_budget_stops_a_retry_storm() {
    let mock = Mock::always(service());
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .build()
        .unwrap();
    let svc = layer.layer(mock);
    let config = *layer.retry_budget().config();
    let budgeted = u64::from(config.capacity / config.retry_cost);
    let mut stopped_by_budget = 0;
    for _ in 0..1000 {
        let mut svc = svc.clone();
        let err = call_once(&mut svc).await.unwrap_err();
        if context(&err).1 == Some(RetryStop::BudgetExhausted) {
            stopped_by_budget += 1;
        }
    }
    let retries = state.call_count() as u64 - 1000;
    println!("1000 failing calls: {retries} retries (budget allows {budgeted})");
    assert_eq!(retries, budgeted);
    assert_eq!(layer.retry_budget().available(), 0);
    // 25 calls took 4 retries each (the 100 the budget holds), then the
    // 26th call's first retry met the empty budget, and so did every call
    // after it.
    assert_eq!(stopped_by_budget, 1000 - 25);
}

#[tokio::test(start_paused = true)]
async fn clones_and_sibling_services_share_the_budget() {
    let layer = QuotaAlignedRetryLayer::builder()
        .retry_budget(RetryBudgetConfig::new().capacity(10).retry_cost(5))
        .build()
        .unwrap();
    let mock = Mock::always(pool());
    let state = mock.state();
    let mut a = layer.layer(mock.clone());
    let mut b = a.clone();
    let mut c = layer.layer(mock);

    // Two retries of 5 empty the bucket of 10: `a`'s third retry is refused.
    let err = call_once(&mut a).await.unwrap_err();
    assert_eq!(context(&err), (3, Some(RetryStop::BudgetExhausted)));
    assert_eq!(a.retry_budget().available(), 0);
    assert_eq!(b.retry_budget().available(), 0);
    assert_eq!(c.retry_budget().available(), 0);
    let err = call_once(&mut b).await.unwrap_err();
    assert_eq!(context(&err), (1, Some(RetryStop::BudgetExhausted)));
    let err = call_once(&mut c).await.unwrap_err();
    assert_eq!(context(&err), (1, Some(RetryStop::BudgetExhausted)));
    assert_eq!(state.call_count(), 3 + 1 + 1);
}

#[tokio::test(start_paused = true)]
async fn successes_refill_the_budget() {
    let layer = QuotaAlignedRetryLayer::builder()
        .retry_budget(
            RetryBudgetConfig::new()
                .capacity(20)
                .retry_cost(5)
                .success_refill(1),
        )
        .seed(SEED)
        .build()
        .unwrap();
    // One retry that succeeds: its cost comes back.
    let mut svc = layer.layer(Mock::failing(1, pool()));
    call_once(&mut svc).await.unwrap();
    assert_eq!(layer.retry_budget().available(), 20);
    // Two retries, the second succeeds: only the last retry's cost comes back.
    let mut svc = layer.layer(Mock::failing(2, pool()));
    call_once(&mut svc).await.unwrap();
    assert_eq!(layer.retry_budget().available(), 15);
    // First-attempt successes put back one token each.
    let mut svc = layer.layer(Mock::failing(0, pool()));
    for _ in 0..3 {
        call_once(&mut svc).await.unwrap();
    }
    assert_eq!(layer.retry_budget().available(), 18);
    // Network failures cost the timeout price (10 by default).
    let mut svc = layer.layer(Mock::always(network()));
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(context(&err), (2, Some(RetryStop::BudgetExhausted)));
    assert_eq!(layer.retry_budget().available(), 8);
}

// ---------------------------------------------------------------- deadline

#[tokio::test(start_paused = true)]
async fn the_layer_deadline_stops_before_a_wait_would_cross_it() {
    let mock = Mock::always(service());
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .policy(
            ErrorClass::Unavailable(UnavailableKind::Service),
            ClassPolicy::retry(5, Backoff::exponential(secs(4), secs(20), Jitter::None)),
        )
        .deadline(secs(10))
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    let start = Instant::now();
    let err = call_once(&mut svc).await.unwrap_err();
    // Waits 4 s, then 8 s would end at 12 s > 10 s: stop at 4 s.
    assert_eq!(start.elapsed(), secs(4));
    assert_eq!(context(&err), (2, Some(RetryStop::Deadline)));
    assert_eq!(err.inner().unwrap().0, 2);
    assert_eq!(state.call_count(), 2);
    assert_eq!(layer.retry_budget().available(), 495);
}

#[tokio::test(start_paused = true)]
async fn a_window_wait_past_the_deadline_is_not_taken() {
    let mock = Mock::always(token_rate());
    let mut svc = QuotaAlignedRetryLayer::builder()
        .clock(clock_at(10))
        .deadline(secs(30))
        .build()
        .unwrap()
        .layer(mock);
    let start = Instant::now();
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(context(&err), (1, Some(RetryStop::Deadline)));
}

#[derive(Clone)]
struct Job {
    deadline: Option<Duration>,
}

#[derive(Clone)]
struct JobMock(Mock);

impl Service<Job> for JobMock {
    type Response = u32;
    type Error = Error;
    type Future = <Mock as Service<u32>>::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, _job: Job) -> Self::Future {
        self.0.call(1)
    }
}

#[tokio::test(start_paused = true)]
async fn requests_override_the_deadline() {
    let layer = QuotaAlignedRetryLayer::builder()
        .policy(
            ErrorClass::Unavailable(UnavailableKind::Service),
            ClassPolicy::retry(5, Backoff::exponential(secs(4), secs(20), Jitter::None)),
        )
        .deadline(secs(100))
        .max_attempts(6)
        .call_options(|job: &Job| PerCall::new().deadline(job.deadline))
        .build()
        .unwrap();
    let mock = Mock::always(service());
    let state = mock.state();
    let mut svc = layer.layer(JobMock(mock));

    // A tighter deadline: the first 4 s wait does not fit in 3 s.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Job {
            deadline: Some(secs(3)),
        })
        .await
        .unwrap_err();
    assert_eq!(context(&err), (1, Some(RetryStop::Deadline)));
    assert_eq!(state.call_count(), 1);

    // None: the layer's 100 s; 4 + 8 + 16 + 20 + 20 = 68 s, all five retries.
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Job { deadline: None })
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), secs(68));
    assert_eq!(context(&err), (6, Some(RetryStop::MaxAttempts)));

    // Zero: refused locally without reaching the service.
    let before = state.call_count();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Job {
            deadline: Some(Duration::ZERO),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Local(LocalRejection::DeadlineExceeded)
    );
    assert!(err.rejection().is_some());
    assert_eq!(context(&err), (0, Some(RetryStop::Deadline)));
    assert_eq!(state.call_count(), before);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_waiting_for_readiness_before_a_retry() {
    let mock = Mock::always(service()).stall_readiness_after_first_call();
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .policy(
            ErrorClass::Unavailable(UnavailableKind::Service),
            ClassPolicy::retry(3, Backoff::exponential(secs(1), secs(1), Jitter::None)),
        )
        .deadline(secs(10))
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    let start = Instant::now();
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(10));
    assert_eq!(context(&err), (1, Some(RetryStop::Deadline)));
    assert_eq!(err.inner().unwrap().0, 1);
    assert_eq!(state.call_count(), 1);
    // The retry never went out: its budget came back.
    assert_eq!(layer.retry_budget().available(), 500);
}

// ------------------------------------------------------------ cancellation

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_wait_stops_everything_and_leaks_nothing() {
    let mock = Mock::always(token_rate());
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .clock(clock_at(30))
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    svc.ready().await.unwrap();
    let fut = svc.call(1);
    // Two instances now: the one in `svc` and the one in the future.
    assert_eq!(state.live.load(Ordering::SeqCst), 2);
    let timed_out = tokio::time::timeout(secs(5), fut).await;
    assert!(timed_out.is_err(), "the retry waits for the next window");
    // The future (dropped by `timeout`) held a retry's worth of budget.
    assert_eq!(state.call_count(), 1);
    assert_eq!(layer.retry_budget().available(), 500);
    assert_eq!(state.live.load(Ordering::SeqCst), 1);
    // Nothing fires later.
    tokio::time::sleep(secs(600)).await;
    assert_eq!(state.call_count(), 1);
    drop(svc);
    assert_eq!(state.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_while_waiting_for_readiness_gives_the_budget_back() {
    let mock = Mock::always(pool()).stall_readiness_after_first_call();
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .no_deadline()
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    svc.ready().await.unwrap();
    let fut = svc.call(1);
    assert!(tokio::time::timeout(secs(60), fut).await.is_err());
    assert!(state.ready_polls.load(Ordering::SeqCst) >= 2);
    assert_eq!(layer.retry_budget().available(), 500);
    assert_eq!(state.live.load(Ordering::SeqCst), 1);
}

// -------------------------------------------------------------- poll_ready

#[tokio::test(start_paused = true)]
async fn poll_ready_is_called_before_every_attempt() {
    // The mock panics on a call not preceded by poll_ready on the same
    // instance; three retries go through.
    let mock = Mock::failing(3, service());
    let state = mock.state();
    let mut svc = QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .build()
        .unwrap()
        .layer(mock);
    assert_eq!(call_once(&mut svc).await.unwrap(), 7);
    assert_eq!(state.call_count(), 4);
    assert_eq!(state.ready_polls.load(Ordering::SeqCst), 4);
}

#[test]
#[should_panic(expected = "call without poll_ready")]
fn the_mock_really_panics_without_poll_ready() {
    let mut mock = Mock::failing(0, service());
    drop(mock.call(1));
}

// ------------------------------------------------------ stacking, reports

#[tokio::test(start_paused = true)]
async fn stacked_retry_layers_do_not_multiply_attempts() {
    let mock = Mock::always(service());
    let state = mock.state();
    let inner = QuotaAlignedRetryLayer::builder().seed(1).build().unwrap();
    let outer = QuotaAlignedRetryLayer::builder().seed(2).build().unwrap();
    let mut svc = outer.layer(inner.layer(mock));
    let err = call_once(&mut svc).await.unwrap_err();
    // 5 attempts (the inner layer's), not 5 x 5 = 25.
    assert_eq!(state.call_count(), 5);
    assert_eq!(context(&err), (5, Some(RetryStop::MaxAttempts)));
    assert_eq!(outer.retry_budget().available(), 500);
}

#[derive(Clone)]
struct Converse {
    model: String,
    report: Option<CallReport>,
}

impl ModelRequest for Converse {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn set_model_id(&mut self, model_id: &str) {
        model_id.clone_into(&mut self.model);
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand::default()
    }
    fn report(&self) -> Option<&CallReport> {
        self.report.as_ref()
    }
}

#[derive(Clone)]
struct ConverseMock(Mock);

impl Service<Converse> for ConverseMock {
    type Response = u32;
    type Error = Error;
    type Future = <Mock as Service<u32>>::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, _req: Converse) -> Self::Future {
        self.0.call(1)
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_are_reported_after_successful_and_failed_calls() {
    let layer = QuotaAlignedRetryLayer::builder()
        .call_options(ModelRequestReport)
        .seed(SEED)
        .build()
        .unwrap();
    let mut svc = layer.layer(ConverseMock(Mock::failing(2, pool())));
    let report = CallReport::new();
    let req = Converse {
        model: "anthropic.claude-3-haiku".into(),
        report: Some(report.clone()),
    };
    svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(report.summary().attempts, 3);

    let mut svc = layer.layer(ConverseMock(Mock::always(validation())));
    let report = CallReport::new();
    let req = Converse {
        model: "m".into(),
        report: Some(report.clone()),
    };
    svc.ready()
        .await
        .unwrap()
        .call(req.clone())
        .await
        .unwrap_err();
    assert_eq!(report.summary().attempts, 1);
    // Without a report nothing is recorded, and nothing breaks.
    let req = Converse {
        model: "m".into(),
        report: None,
    };
    svc.ready().await.unwrap().call(req).await.unwrap_err();
}

#[tokio::test(start_paused = true)]
async fn each_call_draws_from_its_own_documented_seed() {
    let layer = QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .build()
        .unwrap();
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let mock = Mock::failing(1, pool());
        let state = mock.state();
        // A call that needs no draw does not take a seed.
        let mut ok = layer.layer(Mock::failing(0, pool()));
        call_once(&mut ok).await.unwrap();
        let mut svc = layer.layer(mock);
        call_once(&mut svc).await.unwrap();
        gaps.extend(state.gaps());
    }
    let expected: Vec<Duration> = (0..3u64)
        .map(|k| {
            draws(
                SEED.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                &[100],
            )[0]
        })
        .collect();
    assert_eq!(gaps, expected);
}

// ------------------------------------------------------------- regressions

#[tokio::test(start_paused = true)]
async fn a_readiness_error_under_stacked_retry_layers_is_not_retried_again() {
    // The inner layer's retry finds its service failing `poll_ready` once.
    // Before, the error came back without a `RetryStop`, the outer layer
    // retried it and the inner one started a fresh cycle: 1 + 4 calls
    // reached Bedrock and both budgets were charged.
    let mock = Mock::always(service()).fail_readiness_once_after_first_call(service());
    let state = mock.state();
    let inner = QuotaAlignedRetryLayer::builder().seed(1).build().unwrap();
    let outer = QuotaAlignedRetryLayer::builder().seed(2).build().unwrap();
    let mut svc = outer.layer(inner.layer(mock));
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(state.call_count(), 1);
    assert_eq!(context(&err), (1, Some(RetryStop::NotRetryable)));
    assert_eq!(outer.retry_budget().available(), 500);
    // The inner layer's retry never went out: its token came back.
    assert_eq!(inner.retry_budget().available(), 500);
}

#[test]
fn waits_that_could_overflow_are_refused_at_build_time() {
    // Before, `quota_window(Duration::MAX, 0)` with no deadline built, then
    // panicked with "overflow when adding durations" at the first retry.
    let throttle = ErrorClass::Throttled(ThrottleKind::TokenRate);
    for backoff in [
        Backoff::quota_window(Duration::MAX, Duration::ZERO),
        Backoff::quota_window(secs(1), Duration::MAX),
        Backoff::quota_window(secs(86_000), secs(401)),
        Backoff::exponential(secs(1), Duration::MAX, Jitter::Full),
    ] {
        let err = QuotaAlignedRetryLayer::builder()
            .no_deadline()
            .policy(throttle, ClassPolicy::retry(1, backoff))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, BuildError::InvalidBackoff { class, .. } if class == throttle),
            "{backoff:?}: {err}"
        );
    }
    assert_eq!(
        QuotaAlignedRetryLayer::builder()
            .window(Duration::MAX)
            .build()
            .unwrap_err(),
        BuildError::TooLong { setting: "window" }
    );
    assert_eq!(
        QuotaAlignedRetryLayer::builder()
            .hint_range(secs(1), Duration::MAX)
            .build()
            .unwrap_err(),
        BuildError::TooLong {
            setting: "hint_range"
        }
    );
    // The longest accepted waits still run without a panic.
    assert!(
        QuotaAlignedRetryLayer::builder()
            .no_deadline()
            .policy(
                throttle,
                ClassPolicy::retry(1, Backoff::quota_window(secs(86_000), secs(400)))
            )
            .build()
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_hint_of_duration_max_does_not_overflow() {
    let mock = Mock::always(service().with_retry_after(Duration::MAX));
    let state = mock.state();
    let mut svc = QuotaAlignedRetryLayer::builder()
        .no_deadline()
        .seed(SEED)
        .build()
        .unwrap()
        .layer(mock);
    let err = call_once(&mut svc).await.unwrap_err();
    // Clamped to the 60 s hint maximum: four retries a minute apart.
    assert_eq!(state.gaps(), vec![secs(60); 4]);
    assert_eq!(context(&err), (5, Some(RetryStop::MaxAttempts)));
}

#[tokio::test(start_paused = true)]
async fn the_default_throttle_policy_fits_the_default_deadline() {
    // The worst phase: throttled right as a window opens. Each retry goes
    // out 1 to 5 s into a later window; the third at most 185 s after the
    // first throttle. With the old 180 s deadline it was always refused.
    let mock = Mock::always(token_rate());
    let state = mock.state();
    let mut svc = QuotaAlignedRetryLayer::builder()
        .clock(clock_at(0))
        .seed(SEED)
        .build()
        .unwrap()
        .layer(mock);
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(state.call_count(), 4);
    assert_eq!(context(&err), (4, Some(RetryStop::MaxAttempts)));
    let last = *state.calls().last().unwrap() - state.calls()[0];
    assert!(last > secs(180) && last <= secs(185), "{last:?}");
}

/// The deadlines one attempt saw: in `call`, and in its future.
type Seen = (Option<Instant>, Option<Instant>);

/// Records the call's deadline seen in `call` and in the future.
#[derive(Clone, Default)]
struct DeadlineProbe {
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl Service<u32> for DeadlineProbe {
    type Response = u32;
    type Error = Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        let in_call = tower_bedrock_core::deadline::call_deadline();
        let seen = self.seen.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            let in_future = tower_bedrock_core::deadline::call_deadline();
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push((in_call, in_future));
                seen.len()
            };
            if n == 1 {
                Err(tower_bedrock_core::ClassifiedError::new(
                    MockFailure(1),
                    service(),
                ))
            } else {
                Ok(req)
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn every_attempt_runs_with_the_call_deadline_in_scope() {
    let probe = DeadlineProbe::default();
    let seen = probe.seen.clone();
    let mut svc = QuotaAlignedRetryLayer::builder()
        .deadline(secs(30))
        .seed(SEED)
        .build()
        .unwrap()
        .layer(probe);
    let start = Instant::now();
    svc.ready().await.unwrap().call(1).await.unwrap();
    let at = Some(start + secs(30));
    assert_eq!(*seen.lock().unwrap(), vec![(at, at), (at, at)]);
    // Outside the call, no deadline.
    assert_eq!(tower_bedrock_core::deadline::call_deadline(), None);
    // A deadline set above (another retry layer, a caller) is kept when it
    // is earlier.
    seen.lock().unwrap().clear();
    let outer = Instant::now() + secs(10);
    tower_bedrock_core::deadline::with_call_deadline(outer, async {
        svc.ready().await.unwrap().call(2).await.unwrap();
    })
    .await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(Some(outer), Some(outer)), (Some(outer), Some(outer))]
    );
}
