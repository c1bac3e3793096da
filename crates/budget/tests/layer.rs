//! Configuration errors, key extractors, estimators and concurrency of the
//! in-memory budget (the store-generic behaviour is in `behaviour.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tower_bedrock_budget::testing::{MockBedrock, MockRequest, NOVA, SONNET4, run_paused};
use tower_bedrock_budget::{Adaptive, Budget, BuildError, Limits, RequestDemand};
use tower_bedrock_core::{ErrorClass, LocalRejection, TokenDemand};
use tower_layer::Layer;
use tower_service::Service;

#[test]
fn bad_configuration_fails_when_built() {
    assert_eq!(
        Budget::builder().build().unwrap_err(),
        BuildError::ZeroLimit {
            key: "default".into(),
            window: "tokens"
        }
    );
    let ok = || Budget::builder().tokens_per_window(100);
    assert_eq!(
        ok().window(Duration::ZERO).build().unwrap_err(),
        BuildError::ZeroWindow
    );
    assert!(matches!(
        ok().sub_windows(0).build(),
        Err(BuildError::BadSubWindows { .. })
    ));
    // 60 s / 7 is not a whole number of nanoseconds.
    assert!(matches!(
        ok().sub_windows(7).build(),
        Err(BuildError::BadSubWindows {
            window: "window",
            ..
        })
    ));
    assert!(matches!(
        ok().requests_per_window(0).build(),
        Err(BuildError::ZeroLimit {
            window: "requests",
            ..
        })
    ));
    assert!(matches!(
        ok().key_limits("m", Limits::tokens(10).with_day_tokens(0))
            .build(),
        Err(BuildError::ZeroLimit { window: "day", .. })
    ));
    assert_eq!(
        ok().day_length(Duration::ZERO).build().unwrap_err(),
        BuildError::ZeroDay
    );
    for bad in [
        Adaptive {
            decrease: 1.0,
            ..Adaptive::default()
        },
        Adaptive {
            recovery: 0.0,
            ..Adaptive::default()
        },
        Adaptive {
            min_factor: f64::NAN,
            ..Adaptive::default()
        },
    ] {
        assert!(matches!(
            ok().adaptive(bad).build(),
            Err(BuildError::BadAdaptive(_))
        ));
    }
    let budget = ok().build().unwrap();
    assert!(matches!(
        budget.tenant("a", 0),
        Err(BuildError::ZeroWeight { .. })
    ));
    budget.tenant("a", 2).unwrap();
    assert!(budget.tenant("a", 2).is_ok());
    assert!(matches!(
        budget.tenant("a", 3),
        Err(BuildError::TenantConflict { .. })
    ));
    assert_eq!(
        BuildError::ZeroWindow.to_string(),
        "budget window length must be positive"
    );
}

#[test]
fn custom_keys_and_estimators() {
    run_paused(|| async {
        let budget = Budget::builder()
            .tokens_per_window(1000)
            .max_wait(Duration::ZERO)
            .build()
            .unwrap();
        // One budget for every model, and a 50 % input margin.
        let layer = budget
            .layer()
            .key_fn(|_: &MockRequest| "shared")
            .estimator(RequestDemand::with_margin_percent(50));
        let mut svc = layer.layer(MockBedrock::new(Duration::ZERO));
        let mut send = |req| {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(svc.poll_ready(&mut cx).is_ready());
            svc.call(req)
        };
        let h = send(MockRequest::new(NOVA, 0, 100, 0).reply(
            tower_bedrock_budget::testing::Reply::Stream(tower_bedrock_core::Usage::new(1, 1)),
        ));
        let stream = h.await.unwrap();
        let snap = budget.snapshot("shared").unwrap();
        assert_eq!(snap.reserved_tokens, 150);
        assert!(budget.snapshot(NOVA).is_none());
        drop(stream);
        // A closure estimator.
        let mut svc2 = budget
            .layer()
            .key_fn(|_: &MockRequest| "shared")
            .estimator(|_: &MockRequest| TokenDemand {
                input_tokens: 900,
                max_output_tokens: Some(0),
            })
            .layer(MockBedrock::new(Duration::ZERO));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(svc2.poll_ready(&mut cx).is_ready());
        let err = svc2
            .call(MockRequest::new(SONNET4, 1, 1, 0))
            .await
            .unwrap_err();
        assert_eq!(
            err.class(),
            ErrorClass::Local(LocalRejection::BudgetExhausted)
        );
    });
}

#[test]
fn burndown_and_output_defaults_are_configurable() {
    run_paused(|| async {
        let budget = Budget::builder()
            .tokens_per_window(100_000)
            .burndown_for("amazon.nova", 3)
            .max_output_tokens_for("amazon.", 1000)
            .build()
            .unwrap();
        let mut svc = budget
            .layer()
            .layer(MockBedrock::new(Duration::from_secs(1)));
        let mut req = MockRequest::new(NOVA, 0, 10, 0);
        req.max_tokens = None;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let h = tokio::spawn(svc.call(req));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(budget.snapshot(NOVA).unwrap().reserved_tokens, 10 + 3000);
        h.await.unwrap().unwrap();
    });
}

/// Two threads hammer one key: the store never admits more than the limit,
/// and everything settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admissions_never_exceed_the_limit() {
    let budget = Budget::builder()
        .tokens_per_window(10_000)
        .window(Duration::from_secs(3600))
        .max_wait(Duration::ZERO)
        .fixed_limits()
        .build()
        .unwrap();
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..2u64 {
        let mut svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
        let admitted = admitted.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500u64 {
                let call = {
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    assert!(svc.poll_ready(&mut cx).is_ready());
                    svc.call(MockRequest::new(NOVA, t * 1000 + i, 15, 0))
                };
                if call.await.is_ok() {
                    admitted.fetch_add(15, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let snap = budget.snapshot(NOVA).unwrap();
    // 10_000 / 15 = 666 calls fit; the rest were shed.
    assert_eq!(admitted.load(Ordering::Relaxed), 666 * 15);
    assert_eq!(snap.tokens, 666 * 15);
    assert_eq!(snap.reserved_tokens, 0);
}
