//! ModelFallback on top of QuotaAlignedRetry, CircuitBreak and TokenBudget,
//! composed as in the design brief, over a mock Bedrock whose primary model
//! is overloaded: every request is answered by the fallback, and once the
//! primary's breaker has opened the primary receives no more calls (but
//! one half-open probe per open period).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::future::BoxFuture;
use support::{Ask, Error, TestRecorder, upstream};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bedrock_breaker::{CircuitBreakLayer, CircuitState};
use tower_bedrock_budget::Budget;
use tower_bedrock_core::{
    Clock, ErrorClass, LocalRejection, ReportsUsage, ThrottleKind, Tried, Usage,
};
use tower_bedrock_fallback::{Chain, ModelFallbackLayer};
use tower_bedrock_retry::{ModelRequestReport, QuotaAlignedRetryLayer};

const PRIMARY: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const FALLBACK: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
const OVERLOADED: ErrorClass = ErrorClass::Throttled(ThrottleKind::ModelOverloaded);
const CIRCUIT_OPEN: ErrorClass = ErrorClass::Local(LocalRejection::CircuitOpen);

/// A response with its usage, as the budget layer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    model: String,
}

impl ReportsUsage for Answer {
    fn usage(&self) -> Option<Usage> {
        Some(Usage::new(10, 20))
    }
}

/// A mock Bedrock: the primary is overloaded on every call, anything else
/// answers after 200 ms. Counts the calls per model.
#[derive(Clone, Default)]
struct Bedrock {
    calls: Arc<Mutex<HashMap<String, u32>>>,
}

impl Bedrock {
    fn calls(&self, model: &str) -> u32 {
        self.calls.lock().unwrap().get(model).copied().unwrap_or(0)
    }
}

impl Service<Ask> for Bedrock {
    type Response = Answer;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Answer, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ask: Ask) -> Self::Future {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(ask.model.clone())
            .or_default() += 1;
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if ask.model == PRIMARY {
                Err(upstream(&ask.model, OVERLOADED))
            } else {
                Ok(Answer { model: ask.model })
            }
        })
    }
}

struct Stack<S> {
    svc: S,
    bedrock: Bedrock,
    breakers: tower_bedrock_breaker::CircuitBreakHandle,
    budget: Budget,
}

fn stack(
    remember_open: bool,
) -> Stack<
    impl Service<Ask, Response = Answer, Error = Error, Future: Send + 'static> + Clone + Send + 'static,
> {
    let bedrock = Bedrock::default();
    let fallback = ModelFallbackLayer::builder()
        .chain(Chain::of([PRIMARY, FALLBACK]))
        .remember_open_circuits(remember_open)
        .build()
        .unwrap();
    // 50 s into a minute, so retry waits (if any) are deterministic.
    let clock = Clock::starting_at(Duration::from_secs(1_700_000_000 - 1_700_000_000 % 60 + 50));
    let retry = QuotaAlignedRetryLayer::builder()
        .clock(clock)
        .seed(7)
        .call_options(ModelRequestReport)
        .build()
        .unwrap();
    let breaker = CircuitBreakLayer::builder()
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .open_duration_multiplier(1.0)
        .open_jitter(0.0)
        .half_open_probes(1)
        .seed(11)
        .build()
        .unwrap();
    let breakers = breaker.handle();
    let budget = Budget::builder()
        .tokens_per_window(1_000_000)
        .window(Duration::from_secs(60))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(fallback)
        .layer(retry)
        .layer(breaker)
        .layer(budget.layer())
        .service(bedrock.clone());
    Stack {
        svc,
        bedrock,
        breakers,
        budget,
    }
}

fn primary_state(handle: &tower_bedrock_breaker::CircuitBreakHandle) -> Option<CircuitState> {
    handle
        .snapshot()
        .into_iter()
        .find(|b| b.key == PRIMARY)
        .map(|b| b.state)
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_primary_is_answered_by_the_fallback_and_then_left_alone() {
    let Stack {
        svc,
        bedrock,
        breakers,
        budget,
    } = stack(false);

    // The first three requests reach the primary (overloaded: not retried,
    // counted by its breaker), then fall back.
    for i in 1..=3 {
        let (ask, report) = Ask::reporting(PRIMARY);
        let answer = svc.clone().oneshot(ask).await.unwrap();
        assert_eq!(answer.model, FALLBACK);
        assert_eq!(bedrock.calls(PRIMARY), i);
        let s = report.summary();
        assert_eq!(s.served_by.as_deref(), Some(FALLBACK));
        assert_eq!(
            s.tried,
            [Tried {
                target: PRIMARY.into(),
                class: OVERLOADED
            }]
        );
    }
    assert_eq!(primary_state(&breakers), Some(CircuitState::Open));

    // From now on the breaker refuses the primary at once: 50 requests,
    // 10 at a time, all served by the fallback, none reaching the primary.
    for _ in 0..5 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let svc = svc.clone();
            set.spawn(async move {
                let (ask, report) = Ask::reporting(PRIMARY);
                let answer = svc.oneshot(ask).await.unwrap();
                (answer, report.summary())
            });
        }
        while let Some(done) = set.join_next().await {
            let (answer, summary) = done.unwrap();
            assert_eq!(answer.model, FALLBACK);
            assert!(summary.degraded());
            assert_eq!(
                summary.tried,
                [Tried {
                    target: PRIMARY.into(),
                    class: CIRCUIT_OPEN
                }]
            );
        }
    }
    assert_eq!(bedrock.calls(PRIMARY), 3, "no call once the breaker opened");
    assert_eq!(bedrock.calls(FALLBACK), 53);
    // The fallback's calls went through its budget.
    let fb = budget.snapshot(FALLBACK).unwrap();
    assert_eq!(fb.reserved_tokens, 0);
    assert!(fb.tokens > 0);

    // After the open period, one request probes the primary (still
    // overloaded: the breaker reopens), and is answered by the fallback.
    tokio::time::advance(Duration::from_secs(30)).await;
    let answer = svc.clone().oneshot(Ask::new(PRIMARY)).await.unwrap();
    assert_eq!(answer.model, FALLBACK);
    assert_eq!(bedrock.calls(PRIMARY), 4, "one half-open probe");
    assert_eq!(primary_state(&breakers), Some(CircuitState::Open));
    for _ in 0..10 {
        let answer = svc.clone().oneshot(Ask::new(PRIMARY)).await.unwrap();
        assert_eq!(answer.model, FALLBACK);
    }
    assert_eq!(bedrock.calls(PRIMARY), 4);
}

#[tokio::test(start_paused = true)]
async fn with_the_memo_an_open_primary_is_not_even_asked_of_the_breaker() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let Stack { svc, bedrock, .. } = stack(true);
    for _ in 0..3 {
        svc.clone().oneshot(Ask::new(PRIMARY)).await.unwrap();
    }
    // The breaker is open now; the first refusal teaches the fallback layer
    // when to come back.
    for _ in 0..20 {
        let (ask, report) = Ask::reporting(PRIMARY);
        assert_eq!(svc.clone().oneshot(ask).await.unwrap().model, FALLBACK);
        assert_eq!(report.summary().tried[0].class, CIRCUIT_OPEN);
    }
    assert_eq!(bedrock.calls(PRIMARY), 3);
    assert_eq!(
        recorder.counter(&format!(
            "bedrock_circuit_rejected_total{{model={PRIMARY}}}"
        )),
        1,
        "only the first refusal reached the breaker: {:?}",
        recorder.keys()
    );
    // When the open period ends, the next request goes down to the
    // breaker again, which lets it probe.
    tokio::time::advance(Duration::from_secs(30)).await;
    svc.clone().oneshot(Ask::new(PRIMARY)).await.unwrap();
    assert_eq!(bedrock.calls(PRIMARY), 4);
}
