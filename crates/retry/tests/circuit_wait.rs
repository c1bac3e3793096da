//! Waiting out an open circuit breaker below the retry layer
//! (`CircuitWait`), under paused time with mock services.

mod common;

use std::time::Duration;

use common::*;
use fastrand::Rng;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_bedrock_core::{Classified, LocalRejection, RetryStop};
use tower_bedrock_retry::{BuildError, CircuitWait, QuotaAlignedRetryLayer};

const SEED: u64 = 0xC1C;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn open_for(after: Duration) -> tower_bedrock_core::Classification {
    local(LocalRejection::CircuitOpen).with_retry_after(after)
}

async fn call_once<S>(svc: &mut S) -> Result<u32, Error>
where
    S: Service<u32, Response = u32, Error = Error>,
{
    svc.ready().await?.call(7).await
}

fn waiting_layer(policy: CircuitWait) -> QuotaAlignedRetryLayer {
    QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .wait_out_open_circuits(policy)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_waited_out_with_jitter_and_without_retry_budget() {
    // Refused twice (5 s, then 2 s until the breaker probes), then served.
    let mock = Mock::new(
        vec![Some(open_for(secs(5))), Some(open_for(secs(2))), None],
        None,
    );
    let state = mock.state();
    let layer = waiting_layer(CircuitWait::new());
    let mut svc = layer.layer(mock);
    assert_eq!(call_once(&mut svc).await.unwrap(), 7);
    // Each wait is the hint plus a draw in [0, hint / 4], in whole
    // milliseconds, from the call's documented seed.
    let mut rng = Rng::with_seed(SEED);
    let expected = vec![
        secs(5) + Duration::from_millis(rng.u64(0..=1250)),
        secs(2) + Duration::from_millis(rng.u64(0..=500)),
    ];
    assert_eq!(state.gaps(), expected);
    // Nothing reached Bedrock: the retry budget is untouched (the success
    // refill finds it full).
    assert_eq!(layer.retry_budget().available(), 500);
}

#[tokio::test(start_paused = true)]
async fn off_by_default_the_refusal_comes_back_at_once() {
    let mock = Mock::always(open_for(secs(5)));
    let state = mock.state();
    let mut svc = QuotaAlignedRetryLayer::new().layer(mock);
    let start = Instant::now();
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(state.call_count(), 1);
    let ctx = err.context().unwrap();
    assert_eq!(ctx.retry_stop, Some(RetryStop::NotRetryable));
    assert_eq!(ctx.circuit_waits, 0);
}

#[tokio::test(start_paused = true)]
async fn refusals_without_a_hint_or_with_a_hint_past_the_cap_are_returned() {
    for refusal in [local(LocalRejection::CircuitOpen), open_for(secs(31))] {
        let mock = Mock::always(refusal.clone());
        let state = mock.state();
        let mut svc = waiting_layer(CircuitWait::new()).layer(mock);
        let start = Instant::now();
        let err = call_once(&mut svc).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO, "{refusal}");
        assert_eq!(state.call_count(), 1);
        assert_eq!(
            err.context().unwrap().retry_stop,
            Some(RetryStop::NotRetryable)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_would_cross_the_deadline_is_not_taken() {
    let mock = Mock::always(open_for(secs(5)));
    let state = mock.state();
    let mut svc = QuotaAlignedRetryLayer::builder()
        .wait_out_open_circuits(CircuitWait::new())
        .deadline(secs(4))
        .build()
        .unwrap()
        .layer(mock);
    let start = Instant::now();
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(state.call_count(), 1);
    assert_eq!(err.context().unwrap().retry_stop, Some(RetryStop::Deadline));
}

#[tokio::test(start_paused = true)]
async fn the_total_wait_of_a_call_is_bounded_and_counted_on_the_error() {
    // A breaker that keeps saying "10 s more": two waits of 10 to 12.5 s
    // fit in 25 s, a third does not.
    let mock = Mock::always(open_for(secs(10)));
    let state = mock.state();
    let mut svc = waiting_layer(CircuitWait::new().max_total(secs(25))).layer(mock);
    let start = Instant::now();
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(state.call_count(), 3);
    let took = start.elapsed();
    assert!(took >= secs(20) && took <= secs(25), "{took:?}");
    let ctx = err.context().unwrap();
    assert_eq!(ctx.attempts, 3);
    assert_eq!(ctx.circuit_waits, 2);
    assert_eq!(ctx.retry_stop, Some(RetryStop::MaxAttempts));
}

#[tokio::test(start_paused = true)]
async fn waited_out_refusals_do_not_count_towards_max_attempts() {
    // 503, then refused twice while the breaker is open, then served: four
    // calls to the inner service, two of which reached "Bedrock" before
    // the success, within max_attempts(3).
    let mock = Mock::new(
        vec![
            Some(service()),
            Some(open_for(secs(3))),
            Some(open_for(secs(1))),
            None,
        ],
        None,
    );
    let state = mock.state();
    let layer = QuotaAlignedRetryLayer::builder()
        .seed(SEED)
        .max_attempts(3)
        .wait_out_open_circuits(CircuitWait::new())
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    assert_eq!(call_once(&mut svc).await.unwrap(), 7);
    assert_eq!(state.call_count(), 4);
    // One retry of the 503 was charged (5) and given back by its success.
    assert_eq!(layer.retry_budget().available(), 500);
}

#[test]
fn invalid_circuit_waits_are_refused_at_build_time() {
    for policy in [
        CircuitWait::new().max_wait(Duration::ZERO),
        CircuitWait::new().max_total(Duration::ZERO),
        CircuitWait::new().max_wait(secs(86_401)),
    ] {
        assert!(matches!(
            QuotaAlignedRetryLayer::builder()
                .wait_out_open_circuits(policy)
                .build(),
            Err(BuildError::InvalidCircuitWait(_))
        ));
    }
}
