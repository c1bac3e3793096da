//! Behaviour of `ModelFallback` over a mock model service.

mod support;

use std::time::Duration;

use support::{Ask, Behaviour, Mock, TestRecorder, rejection, upstream};
use tower::{Layer, Service, ServiceExt};
use tower_bedrock_core::{
    Classified, ClientKind, ErrorClass, LocalRejection, ThrottleKind, Tried, UnavailableKind,
};
use tower_bedrock_fallback::profile::{Boundary, Geo};
use tower_bedrock_fallback::{BuildError, Chain, ModelFallbackLayer, Target, Triggers};

const A: &str = "global.anthropic.claude-sonnet-4-20250514-v1:0";
const B: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const C: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";

const OVERLOADED: ErrorClass = ErrorClass::Throttled(ThrottleKind::ModelOverloaded);
const NOT_READY: ErrorClass = ErrorClass::Throttled(ThrottleKind::ModelNotReady);
const SERVICE: ErrorClass = ErrorClass::Unavailable(UnavailableKind::Service);
const VALIDATION: ErrorClass = ErrorClass::Client(ClientKind::Validation);

fn abc() -> ModelFallbackLayer<Ask> {
    ModelFallbackLayer::new(Chain::of([A, B, C])).unwrap()
}

fn tried(list: &[(&str, ErrorClass)]) -> Vec<Tried> {
    list.iter()
        .map(|(t, c)| Tried {
            target: (*t).to_owned(),
            class: *c,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn primary_answers_alone() {
    let mock = Mock::new();
    let svc = abc().layer(mock.clone());
    let (ask, report) = Ask::reporting(A);
    assert_eq!(svc.oneshot(ask).await.unwrap(), A);
    assert_eq!(mock.called(), [A]);
    let s = report.summary();
    assert_eq!(s.served_by.as_deref(), Some(A));
    assert!(s.tried.is_empty());
    assert!(!s.degraded());
}

#[tokio::test(start_paused = true)]
async fn targets_are_tried_in_order_and_the_served_one_reported() {
    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED))
        .script(B, Behaviour::fail(NOT_READY));
    let svc = abc().layer(mock.clone());
    let (ask, report) = Ask::reporting(A);
    assert_eq!(svc.oneshot(ask).await.unwrap(), C);
    assert_eq!(mock.called(), [A, B, C]);
    let s = report.summary();
    assert_eq!(s.served_by.as_deref(), Some(C));
    assert_eq!(s.tried, tried(&[(A, OVERLOADED), (B, NOT_READY)]));
    assert!(s.degraded());
    // Each target's call was preceded by its own poll_ready (the mock
    // asserts it): 1 by oneshot, 2 by the layer for B and C.
    assert_eq!(mock.ready_polls(), 3);
}

#[tokio::test(start_paused = true)]
async fn default_triggers_per_class() {
    let cases: &[(ErrorClass, bool)] = &[
        (OVERLOADED, true),
        (NOT_READY, true),
        (ErrorClass::Local(LocalRejection::CircuitOpen), true),
        (ErrorClass::Local(LocalRejection::BudgetExhausted), true),
        (SERVICE, true),
        (ErrorClass::Throttled(ThrottleKind::TokenRate), false),
        (ErrorClass::Throttled(ThrottleKind::RequestRate), false),
        (ErrorClass::Throttled(ThrottleKind::Unspecified), false),
        (ErrorClass::Unavailable(UnavailableKind::Network), false),
        (
            ErrorClass::Unavailable(UnavailableKind::ConnectionPool),
            false,
        ),
        (ErrorClass::ModelTimeout, false),
        (ErrorClass::QuotaExceeded, false),
        (ErrorClass::Local(LocalRejection::RequestTooLarge), false),
        (
            ErrorClass::Local(LocalRejection::RetryBudgetExhausted),
            false,
        ),
        (ErrorClass::Local(LocalRejection::DeadlineExceeded), false),
        (ErrorClass::Unknown, false),
        (VALIDATION, false),
        (ErrorClass::Client(ClientKind::AccessDenied), false),
        (ErrorClass::Client(ClientKind::NotFound), false),
        (ErrorClass::Client(ClientKind::ModelError), false),
    ];
    for (class, falls_back) in cases {
        let mock = Mock::new();
        mock.script(A, Behaviour::fail(*class));
        let result = abc().layer(mock.clone()).oneshot(Ask::new(A)).await;
        if *falls_back {
            assert_eq!(result.unwrap(), B, "{class:?} should fall back");
            assert_eq!(mock.called(), [A, B]);
        } else {
            let e = result.unwrap_err();
            assert_eq!(e.class(), *class);
            assert_eq!(mock.called(), [A], "{class:?} should not fall back");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn configured_triggers() {
    let mock = Mock::new();
    mock.script(A, Behaviour::fail(ErrorClass::QuotaExceeded))
        .script(
            B,
            Behaviour::fail(ErrorClass::Throttled(ThrottleKind::TokenRate)),
        )
        .script(C, Behaviour::fail(OVERLOADED));
    let layer = ModelFallbackLayer::builder()
        .chain(Chain::of([A, B, C]))
        .triggers(Triggers::none().with_rate_throttles())
        .also_on(ErrorClass::QuotaExceeded)
        .build()
        .unwrap();
    // Overload is not a trigger here: C's failure ends the chain with its
    // own error (rule 1).
    let e = layer
        .layer(mock.clone())
        .oneshot(Ask::new(A))
        .await
        .unwrap_err();
    assert_eq!(mock.called(), [A, B, C]);
    assert_eq!(e.class(), OVERLOADED);

    // With C failing on a trigger too, the first upstream error wins (rule 2).
    mock.script(
        C,
        Behaviour::fail(ErrorClass::Throttled(ThrottleKind::TokenRate)),
    );
    let e = layer
        .layer(mock.clone())
        .oneshot(Ask::new(A))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::QuotaExceeded, "first upstream error");
    assert_eq!(e.inner().unwrap().0, A);

    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED));
    let layer = ModelFallbackLayer::builder()
        .chain(Chain::of([A, B]))
        .not_on(OVERLOADED)
        .build()
        .unwrap();
    let e = layer
        .layer(mock.clone())
        .oneshot(Ask::new(A))
        .await
        .unwrap_err();
    assert_eq!(e.class(), OVERLOADED);
    assert_eq!(mock.called(), [A]);
}

#[tokio::test(start_paused = true)]
async fn client_errors_never_fall_back_and_are_returned_unchanged() {
    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED))
        .script(B, Behaviour::fail(VALIDATION));
    let (ask, report) = Ask::reporting(A);
    let e = abc().layer(mock.clone()).oneshot(ask).await.unwrap_err();
    assert_eq!(mock.called(), [A, B]);
    assert_eq!(e.class(), VALIDATION);
    assert_eq!(e.inner().unwrap().0, B);
    let ctx = e.context().unwrap();
    assert_eq!(ctx.tried, tried(&[(A, OVERLOADED), (B, VALIDATION)]));
    let s = report.summary();
    assert_eq!(s.served_by, None);
    assert_eq!(s.tried, ctx.tried);

    // A client class cannot even be configured as a trigger.
    let refused = ModelFallbackLayer::<Ask>::builder()
        .chain(Chain::of([A, B]))
        .also_on(VALIDATION)
        .build()
        .unwrap_err();
    assert_eq!(refused, BuildError::ClientTrigger { class: VALIDATION });
}

#[tokio::test(start_paused = true)]
async fn transforms_are_applied_per_target() {
    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED))
        .script(B, Behaviour::fail(OVERLOADED));
    let layer = ModelFallbackLayer::new(
        Chain::new()
            .then(A)
            .then(Target::new(B).max_tokens(8192))
            .then(
                Target::new(C)
                    .max_tokens(1024)
                    .map_request(|a: &mut Ask| a.note = Some("short answers please")),
            ),
    )
    .unwrap();
    let mut ask = Ask::new(A);
    ask.max_tokens = Some(4096);
    assert_eq!(layer.layer(mock.clone()).oneshot(ask).await.unwrap(), C);
    let calls = mock.calls();
    assert_eq!(
        calls
            .iter()
            .map(|a| (a.model.as_str(), a.max_tokens, a.note))
            .collect::<Vec<_>>(),
        [
            (A, Some(4096), None),
            // A cap above the request's own value leaves it alone.
            (B, Some(4096), None),
            (C, Some(1024), Some("short answers please")),
        ]
    );

    // Without a max_tokens in the request, the cap sets one.
    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED));
    let layer = ModelFallbackLayer::new(Chain::of([A, B]).max_tokens(512)).unwrap();
    layer
        .layer(mock.clone())
        .oneshot(Ask::new(A))
        .await
        .unwrap();
    assert_eq!(mock.calls()[0].max_tokens, Some(512));
    assert_eq!(mock.calls()[1].max_tokens, Some(512));
}

#[tokio::test(start_paused = true)]
async fn open_circuit_rejection_moves_on_and_can_be_remembered() {
    let open = || {
        Behaviour::fail_with(|m| {
            rejection(
                LocalRejection::CircuitOpen,
                m,
                Some(Duration::from_secs(30)),
            )
        })
    };
    let circuit_open = ErrorClass::Local(LocalRejection::CircuitOpen);

    // Without memo: each request asks the (mock) breaker, which refuses.
    let mock = Mock::new();
    mock.script(A, open());
    let svc = abc().layer(mock.clone());
    for _ in 0..3 {
        assert_eq!(svc.clone().oneshot(Ask::new(A)).await.unwrap(), B);
    }
    assert_eq!(mock.called(), [A, B, A, B, A, B]);

    // With memo: after the first rejection, A is skipped without any call
    // to the inner stack until its retry_after passes.
    let mock = Mock::new();
    mock.script(A, open());
    let layer = ModelFallbackLayer::builder()
        .chain(Chain::of([A, B, C]))
        .remember_open_circuits(true)
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    assert_eq!(svc.clone().oneshot(Ask::new(A)).await.unwrap(), B);
    for _ in 0..3 {
        let (ask, report) = Ask::reporting(A);
        // A clone of the service shares the memo.
        assert_eq!(svc.clone().oneshot(ask).await.unwrap(), B);
        let s = report.summary();
        assert_eq!(s.tried, tried(&[(A, circuit_open)]));
        assert_eq!(s.served_by.as_deref(), Some(B));
    }
    assert_eq!(mock.called(), [A, B, B, B, B]);
    tokio::time::advance(Duration::from_secs(30)).await;
    // The breaker may be half-open now: the next request asks it again.
    mock.script(A, Behaviour::ok());
    assert_eq!(svc.clone().oneshot(Ask::new(A)).await.unwrap(), A);
    assert_eq!(mock.called(), [A, B, B, B, B, A]);
}

#[tokio::test(start_paused = true)]
async fn the_last_target_is_never_skipped_by_the_memo() {
    let mock = Mock::new();
    let open = || {
        Behaviour::fail_with(|m| {
            rejection(
                LocalRejection::CircuitOpen,
                m,
                Some(Duration::from_secs(30)),
            )
        })
    };
    mock.script(A, open()).script(B, open());
    let layer = ModelFallbackLayer::builder()
        .chain(Chain::of([A, B]))
        .remember_open_circuits(true)
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    let e = svc.clone().oneshot(Ask::new(A)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Local(LocalRejection::CircuitOpen));
    let e = svc.clone().oneshot(Ask::new(A)).await.unwrap_err();
    assert_eq!(e.rejection().unwrap().key(), Some(B));
    // First request: A, B. Second: A skipped, B asked again.
    assert_eq!(mock.called(), [A, B, B]);
    assert_eq!(e.context().unwrap().tried.len(), 2);
}

#[test]
fn geographic_boundary_is_enforced_at_build_time() {
    let base = "anthropic.claude-sonnet-4-20250514-v1:0";
    let eu = Boundary::within(Geo::Eu).home_region("eu-central-1");
    // eu.X -> X (in eu-central-1): inside.
    assert!(
        ModelFallbackLayer::<Ask>::builder()
            .chain(Chain::cross_region(base, &[Geo::Eu], true))
            .boundary(eu.clone())
            .build()
            .is_ok()
    );
    // global.X -> eu.X: global may leave the EU.
    let e = ModelFallbackLayer::<Ask>::builder()
        .chain(Chain::cross_region(base, &[Geo::Global, Geo::Eu], false))
        .boundary(eu.clone())
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        BuildError::OutsideBoundary {
            target: format!("global.{base}"),
            boundary: "eu (home region eu-central-1)".into()
        }
    );
    // The default chain is checked too.
    let e = ModelFallbackLayer::<Ask>::builder()
        .default_chain(Chain::of([format!("eu.{base}"), format!("us.{base}")]))
        .boundary(eu)
        .build()
        .unwrap_err();
    assert!(
        matches!(e, BuildError::OutsideBoundary { target, .. } if target == format!("us.{base}"))
    );
    // A plain id under a boundary that does not know its region.
    let e = ModelFallbackLayer::<Ask>::builder()
        .chain(Chain::cross_region(base, &[Geo::Eu], true))
        .boundary(Boundary::within(Geo::Eu))
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        BuildError::RegionUnknown {
            target: base.into()
        }
    );
    assert!(e.to_string().contains("without a home region"));
}

#[test]
fn bad_configurations_are_refused_at_build_time() {
    let build = |b: tower_bedrock_fallback::ModelFallbackBuilder<Ask>| b.build().unwrap_err();
    assert_eq!(build(ModelFallbackLayer::builder()), BuildError::NoChain);
    assert_eq!(
        build(ModelFallbackLayer::builder().chain(Chain::new())),
        BuildError::EmptyChain
    );
    assert_eq!(
        build(ModelFallbackLayer::builder().chain(Chain::of([A, B, A]))),
        BuildError::DuplicateTarget { target: A.into() }
    );
    assert_eq!(
        build(
            ModelFallbackLayer::builder()
                .chain(Chain::of([A, B]))
                .chain(Chain::of([A, C]))
        ),
        BuildError::DuplicateChain { primary: A.into() }
    );
    assert_eq!(
        build(ModelFallbackLayer::builder().chain(Chain::of([A, "bad id"]))),
        BuildError::InvalidTarget {
            target: "bad id".into()
        }
    );
    assert_eq!(
        build(ModelFallbackLayer::builder().chain(Chain::of([A, ""]))),
        BuildError::InvalidTarget { target: "".into() }
    );
}

#[tokio::test(start_paused = true)]
async fn all_fail_returns_the_first_upstream_error_with_everything_tried() {
    let circuit_open = ErrorClass::Local(LocalRejection::CircuitOpen);
    let mock = Mock::new();
    mock.script(
        A,
        Behaviour::fail_with(|m| rejection(LocalRejection::CircuitOpen, m, None)),
    )
    .script(B, Behaviour::fail(SERVICE))
    .script(C, Behaviour::fail(OVERLOADED));
    let (ask, report) = Ask::reporting(A);
    let e = abc().layer(mock.clone()).oneshot(ask).await.unwrap_err();
    assert_eq!(mock.called(), [A, B, C]);
    // B's is the first error from upstream.
    assert_eq!(e.class(), SERVICE);
    assert_eq!(e.inner().unwrap().0, B);
    let all = tried(&[(A, circuit_open), (B, SERVICE), (C, OVERLOADED)]);
    assert_eq!(e.context().unwrap().tried, all);
    assert_eq!(report.summary().tried, all);
    assert_eq!(report.summary().served_by, None);
    assert!(e.to_string().contains("tried 3 targets"));
}

#[tokio::test(start_paused = true)]
async fn all_local_failures_return_the_shortest_retry_after() {
    let mock = Mock::new();
    mock.script(
        A,
        Behaviour::fail_with(|m| {
            rejection(
                LocalRejection::CircuitOpen,
                m,
                Some(Duration::from_secs(20)),
            )
        }),
    )
    .script(
        B,
        Behaviour::fail_with(|m| {
            rejection(
                LocalRejection::BudgetExhausted,
                m,
                Some(Duration::from_secs(5)),
            )
        }),
    )
    .script(
        C,
        Behaviour::fail_with(|m| rejection(LocalRejection::CircuitOpen, m, None)),
    );
    let e = abc()
        .layer(mock.clone())
        .oneshot(Ask::new(A))
        .await
        .unwrap_err();
    assert_eq!(
        e.class(),
        ErrorClass::Local(LocalRejection::BudgetExhausted)
    );
    assert_eq!(e.rejection().unwrap().key(), Some(B));
    assert_eq!(e.context().unwrap().tried.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn requests_for_other_models_pass_through_or_take_the_default_chain() {
    let other = "amazon.nova-pro-v1:0";
    let mock = Mock::new();
    mock.script(other, Behaviour::fail(OVERLOADED));
    let (ask, report) = Ask::reporting(other);
    let e = abc().layer(mock.clone()).oneshot(ask).await.unwrap_err();
    assert_eq!(e.class(), OVERLOADED);
    assert!(e.context().unwrap().tried.is_empty());
    assert_eq!(mock.called(), [other]);
    assert_eq!(report.summary(), Default::default());

    // A non-primary member of a chain is not a chain key either.
    let mock = Mock::new();
    mock.script(B, Behaviour::fail(OVERLOADED));
    assert!(
        abc()
            .layer(mock.clone())
            .oneshot(Ask::new(B))
            .await
            .is_err()
    );
    assert_eq!(mock.called(), [B]);

    // With a default chain, such requests are retargeted.
    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED));
    let layer = ModelFallbackLayer::builder()
        .chain(Chain::of([C]))
        .default_chain(Chain::of([A, B]))
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    assert_eq!(svc.clone().oneshot(Ask::new(other)).await.unwrap(), B);
    assert_eq!(svc.oneshot(Ask::new(C)).await.unwrap(), C);
    assert_eq!(mock.called(), [A, B, C]);
}

#[tokio::test(start_paused = true)]
async fn cancellation_releases_the_call_and_the_degraded_gauge() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED))
        .script(B, Behaviour::Hang);
    let mut svc = abc().layer(mock.clone());
    svc.ready().await.unwrap();
    let fut = svc.call(Ask::new(A));
    let mut task = tokio_test::task::spawn(fut);
    assert!(task.poll().is_pending());
    assert_eq!(mock.called(), [A, B]);
    assert_eq!(mock.in_flight(), 1);
    assert_eq!(recorder.gauge("bedrock_degraded_requests{}"), 1.0);
    drop(task);
    assert_eq!(mock.in_flight(), 0, "the call to B was dropped");
    assert_eq!(recorder.gauge("bedrock_degraded_requests{}"), 0.0);
    // Nothing else was called after the drop.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(mock.called(), [A, B]);
}

#[tokio::test(start_paused = true)]
async fn slow_failures_are_awaited_in_order() {
    let mock = Mock::new();
    mock.script(
        A,
        Behaviour::Fail(
            std::sync::Arc::new(|m| upstream(m, OVERLOADED)),
            Duration::from_secs(2),
        ),
    )
    .script(B, Behaviour::Ok(Duration::from_secs(3)));
    let start = tokio::time::Instant::now();
    assert_eq!(
        abc()
            .layer(mock.clone())
            .oneshot(Ask::new(A))
            .await
            .unwrap(),
        B
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn metrics_make_the_degraded_mode_visible() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED))
        .script(B, Behaviour::fail(SERVICE));
    let svc = abc().layer(mock.clone());
    for _ in 0..2 {
        assert_eq!(svc.clone().oneshot(Ask::new(A)).await.unwrap(), C);
    }
    assert_eq!(
        recorder.counter(&format!(
            "bedrock_fallback_total{{from={A},to={B},class=throttled,kind=model_overloaded}}"
        )),
        2
    );
    assert_eq!(
        recorder.counter(&format!(
            "bedrock_fallback_total{{from={B},to={C},class=unavailable,kind=service}}"
        )),
        2
    );
    assert_eq!(
        recorder.counter(&format!("bedrock_degraded_served_total{{target={C}}}")),
        2
    );
    assert_eq!(recorder.gauge("bedrock_degraded_requests{}"), 0.0);
    // The primary answering emits nothing.
    mock.script(A, Behaviour::ok());
    let before = recorder.keys();
    svc.oneshot(Ask::new(A)).await.unwrap();
    assert_eq!(recorder.keys(), before);
}

#[tokio::test(start_paused = true)]
async fn readiness_errors_of_a_fallback_target_count_as_its_failure() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    // A service whose second poll_ready fails (as a breaker or budget
    // might refuse in poll_ready).
    #[derive(Clone)]
    struct FlakyReady(Mock, Arc<AtomicUsize>);
    impl Service<Ask> for FlakyReady {
        type Response = String;
        type Error = support::Error;
        type Future = <Mock as Service<Ask>>::Future;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.1.fetch_add(1, Ordering::SeqCst) == 1 {
                return Poll::Ready(Err(upstream("ready", SERVICE)));
            }
            self.0.poll_ready(cx)
        }
        fn call(&mut self, ask: Ask) -> Self::Future {
            self.0.call(ask)
        }
    }
    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED));
    let svc = abc().layer(FlakyReady(mock.clone(), Arc::default()));
    let (ask, report) = Ask::reporting(A);
    assert_eq!(svc.oneshot(ask).await.unwrap(), C);
    // B was never called: its readiness failed.
    assert_eq!(mock.called(), [A, C]);
    assert_eq!(
        report.summary().tried,
        tried(&[(A, OVERLOADED), (B, SERVICE)])
    );
}

#[tokio::test(start_paused = true)]
async fn many_chains_route_by_their_primary() {
    // More chains than the linear lookup handles: the map is used.
    let mut builder = ModelFallbackLayer::builder();
    for i in 0..40 {
        builder = builder.chain(Chain::of([
            format!("m.primary-{i}"),
            format!("m.backup-{i}"),
        ]));
    }
    let svc = builder.build().unwrap().layer(Mock::new());
    let mock = svc.get_ref().clone();
    mock.script("m.primary-33", Behaviour::fail(OVERLOADED));
    assert_eq!(
        svc.clone().oneshot(Ask::new("m.primary-33")).await.unwrap(),
        "m.backup-33"
    );
    assert_eq!(
        svc.clone().oneshot(Ask::new("m.primary-7")).await.unwrap(),
        "m.primary-7"
    );
    assert_eq!(svc.oneshot(Ask::new("m.other")).await.unwrap(), "m.other");
    assert_eq!(
        mock.called(),
        ["m.primary-33", "m.backup-33", "m.primary-7", "m.other"]
    );
}

#[tokio::test(start_paused = true)]
async fn tagged_responses_carry_the_served_target() {
    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED));
    let svc = abc().tagged().layer(mock.clone());
    let served = svc.clone().oneshot(Ask::new(A)).await.unwrap();
    assert_eq!(served.response, B);
    assert_eq!(served.served_by.as_deref(), Some(B));
    assert_eq!(served.tried, tried(&[(A, OVERLOADED)]));
    assert!(served.degraded());

    mock.script(A, Behaviour::ok());
    let served = svc.clone().oneshot(Ask::new(A)).await.unwrap();
    assert_eq!(served.served_by.as_deref(), Some(A));
    assert!(!served.degraded());

    // A request that matched no chain passed through.
    let served = svc.oneshot(Ask::new("amazon.nova-pro-v1:0")).await.unwrap();
    assert_eq!(served.served_by, None);
    assert_eq!(served.into_inner(), "amazon.nova-pro-v1:0");
}

#[tokio::test(start_paused = true)]
async fn a_pending_readiness_before_a_fallback_target_wakes_the_caller() {
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    /// Ready only while open; a closed gate keeps the waker and wakes it on
    /// opening (as a concurrency limit would).
    #[derive(Clone, Default)]
    struct Gate(Arc<Mutex<(bool, Option<Waker>)>>);
    impl Gate {
        fn set(&self, open: bool) {
            let mut g = self.0.lock().unwrap();
            g.0 = open;
            if open && let Some(w) = g.1.take() {
                w.wake();
            }
        }
    }
    #[derive(Clone)]
    struct Gated(Mock, Gate);
    impl Service<Ask> for Gated {
        type Response = String;
        type Error = support::Error;
        type Future = <Mock as Service<Ask>>::Future;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            let mut g = (self.1).0.lock().unwrap();
            if !g.0 {
                g.1 = Some(cx.waker().clone());
                return Poll::Pending;
            }
            drop(g);
            self.0.poll_ready(cx)
        }
        fn call(&mut self, ask: Ask) -> Self::Future {
            self.0.call(ask)
        }
    }

    let mock = Mock::new();
    mock.script(A, Behaviour::fail(OVERLOADED));
    let gate = Gate::default();
    gate.set(true);
    let mut svc = abc().layer(Gated(mock.clone(), gate.clone()));
    svc.ready().await.unwrap();
    gate.set(false);
    let mut task = tokio_test::task::spawn(svc.call(Ask::new(A)));
    assert!(task.poll().is_pending());
    assert_eq!(mock.called(), [A], "B waits for readiness");
    assert!(!task.is_woken());
    gate.set(true);
    assert!(task.is_woken());
    match task.poll() {
        std::task::Poll::Ready(Ok(served)) => assert_eq!(served, B),
        other => panic!("expected B's answer, got {other:?}"),
    }
    assert_eq!(mock.called(), [A, B]);
}

#[test]
fn layer_service_and_future_are_send_and_sync_where_it_matters() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<ModelFallbackLayer<Ask>>();
    send_sync::<ModelFallbackLayer<Ask, tower_bedrock_fallback::Streaming>>();
    let mut svc = abc().layer(Mock::new());
    send(&svc);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        svc.ready().await.unwrap();
        let fut = svc.call(Ask::new(A));
        send(&fut);
        assert_eq!(fut.await.unwrap(), A);
    });
}

#[tokio::test(start_paused = true)]
async fn the_chain_deadline_stops_starting_new_targets() {
    let slow = |class| {
        Behaviour::Fail(
            std::sync::Arc::new(move |m| upstream(m, class)),
            Duration::from_secs(3),
        )
    };
    let mock = Mock::new();
    mock.script(A, slow(OVERLOADED)).script(B, slow(SERVICE));
    let layer = ModelFallbackLayer::builder()
        .chain(Chain::of([A, B, C]))
        .chain_deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let (ask, report) = Ask::reporting(A);
    let e = layer.layer(mock.clone()).oneshot(ask).await.unwrap_err();
    // A failed at 3 s (B may start), B at 6 s: past the deadline, C is not
    // started. A's error is the first upstream one.
    assert_eq!(start.elapsed(), Duration::from_secs(6));
    assert_eq!(mock.called(), [A, B]);
    assert_eq!(e.class(), OVERLOADED);
    assert_eq!(
        e.context().unwrap().tried,
        tried(&[(A, OVERLOADED), (B, SERVICE)])
    );
    assert_eq!(report.summary().tried.len(), 2);

    assert_eq!(
        ModelFallbackLayer::<Ask>::builder()
            .chain(Chain::of([A, B]))
            .chain_deadline(Duration::ZERO)
            .build()
            .unwrap_err(),
        BuildError::ZeroChainDeadline
    );
}

/// The deadlines seen by each target's call, in order.
type SeenDeadlines = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<tokio::time::Instant>)>>>;

/// A model service that records the call deadline it sees in `call` and in
/// its future, then fails with `OVERLOADED` after `took`.
fn deadline_recorder(
    took: Duration,
) -> (
    impl Service<Ask, Response = String, Error = support::Error, Future = impl Send> + Clone,
    SeenDeadlines,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let svc = tower::service_fn(move |ask: Ask| {
        let in_call = tower_bedrock_core::deadline::call_deadline();
        let log = log.clone();
        async move {
            tokio::time::sleep(took).await;
            assert_eq!(tower_bedrock_core::deadline::call_deadline(), in_call);
            log.lock().unwrap().push((ask.model.clone(), in_call));
            Err::<String, _>(upstream(&ask.model, OVERLOADED))
        }
    });
    (svc, seen)
}

#[tokio::test(start_paused = true)]
async fn the_chain_deadline_is_the_call_deadline_of_every_target() {
    // The layers below (a retry layer, a budget) see the chain deadline
    // and do not wait past it.
    let (svc, seen) = deadline_recorder(Duration::from_secs(1));
    let layer = ModelFallbackLayer::builder()
        .chain(Chain::of([A, B]))
        .chain_deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let e = layer.layer(svc).oneshot(Ask::new(A)).await.unwrap_err();
    assert_eq!(e.class(), OVERLOADED);
    let at = Some(start + Duration::from_secs(5));
    assert_eq!(
        *seen.lock().unwrap(),
        [(A.to_owned(), at), (B.to_owned(), at)]
    );
}

#[tokio::test(start_paused = true)]
async fn the_caller_deadline_bounds_the_chain() {
    // No chain deadline configured: the deadline the call runs under (set
    // by the caller or a layer above) stops the chain. Before, B and C
    // were started after it had passed.
    let (svc, seen) = deadline_recorder(Duration::from_secs(3));
    let layer = ModelFallbackLayer::new(Chain::of([A, B, C])).unwrap();
    let start = tokio::time::Instant::now();
    let at = start + Duration::from_secs(4);
    let e =
        tower_bedrock_core::deadline::with_call_deadline(at, layer.layer(svc).oneshot(Ask::new(A)))
            .await
            .unwrap_err();
    // A fails at 3 s, B starts and fails at 6 s: past the deadline, C is
    // not started.
    assert_eq!(start.elapsed(), Duration::from_secs(6));
    assert_eq!(
        *seen.lock().unwrap(),
        [(A.to_owned(), Some(at)), (B.to_owned(), Some(at))]
    );
    assert_eq!(e.context().unwrap().tried.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn map_request_cannot_move_a_target_outside_its_boundary() {
    const EU_A: &str = "eu.anthropic.claude-sonnet-4-20250514-v1:0";
    const EU_B: &str = "eu.amazon.nova-pro-v1:0";
    let mock = Mock::new();
    mock.script(EU_A, Behaviour::fail(OVERLOADED));
    // The boundary accepts the ids; the rewrite would send B's requests to
    // a global profile.
    let layer = ModelFallbackLayer::builder()
        .boundary(Boundary::within(Geo::Eu))
        .chain(
            Chain::new().then(EU_A).then(
                Target::new(EU_B)
                    .map_request(|a: &mut Ask| a.model = "global.amazon.nova-pro-v1:0".into()),
            ),
        )
        .build()
        .unwrap();
    assert_eq!(
        layer
            .layer(mock.clone())
            .oneshot(Ask::new(EU_A))
            .await
            .unwrap(),
        EU_B
    );
    assert_eq!(mock.called(), [EU_A, EU_B]);
}

#[test]
fn application_profiles_are_refused_under_a_boundary_unless_allowed() {
    let app = "arn:aws:bedrock:eu-central-1:123456789012:application-inference-profile/x1y2z3";
    let chain = || Chain::<Ask>::of(["eu.amazon.nova-pro-v1:0", app]);
    assert_eq!(
        ModelFallbackLayer::builder()
            .boundary(Boundary::within(Geo::Eu))
            .chain(chain())
            .build()
            .unwrap_err(),
        BuildError::ApplicationProfile {
            target: app.to_owned()
        }
    );
    assert!(
        ModelFallbackLayer::builder()
            .boundary(Boundary::within(Geo::Eu).allow_application_profiles())
            .chain(chain())
            .build()
            .is_ok()
    );
    // Without a boundary there is nothing to check.
    assert!(ModelFallbackLayer::new(chain()).is_ok());
}
