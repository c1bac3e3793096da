//! The budget's metrics, observed through a local debugging recorder.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::time::{Instant, sleep, sleep_until};
use tower_bedrock_budget::Budget;
use tower_bedrock_budget::testing::{
    MockBedrock, MockRequest, NOVA, Reply, run_paused, send, test_clock,
};
use tower_bedrock_core::{ErrorClass, ThrottleKind, names};
use tower_layer::Layer;

fn find<'a>(
    snapshot: &'a [(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    snapshot.iter().find_map(|(k, _, _, v)| {
        let key = k.key();
        let all = labels
            .iter()
            .all(|(l, want)| key.labels().any(|x| x.key() == *l && x.value() == *want));
        (key.name() == name && all).then_some(v)
    })
}

fn gauge(
    snapshotter: &metrics_util::debugging::Snapshotter,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    match find(&snapshotter.snapshot().into_vec(), name, labels) {
        Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
        _ => None,
    }
}

#[test]
fn waits_sheds_utilisation_and_effective_limit_are_reported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let tokens = [("model", NOVA), ("window", "tokens")];
    metrics::with_local_recorder(&recorder, || {
        run_paused(|| async {
            let budget = Budget::builder()
                .clock(test_clock())
                .tokens_per_window(1000)
                .max_wait(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut svc = budget
                .tenant("app", 1)
                .unwrap()
                .layer()
                .layer(MockBedrock::new(Duration::ZERO));
            let t0 = Instant::now();
            send(&mut svc, MockRequest::new(NOVA, 0, 900, 100))
                .await
                .unwrap();
            sleep(Duration::from_millis(1)).await;
            assert_eq!(
                gauge(&snapshotter, names::BUDGET_UTILIZATION, &tokens),
                Some(1.0)
            );
            // A burst, then silence: the gauge falls when the window ends,
            // with no request to update it.
            sleep_until(t0 + Duration::from_millis(60_001)).await;
            assert_eq!(
                gauge(&snapshotter, names::BUDGET_UTILIZATION, &tokens),
                Some(0.0)
            );
            // Traffic again: the gauge follows at once.
            send(&mut svc, MockRequest::new(NOVA, 1, 1000, 0))
                .await
                .unwrap();
            sleep(Duration::from_millis(1)).await;
            assert_eq!(
                gauge(&snapshotter, names::BUDGET_UTILIZATION, &tokens),
                Some(1.0)
            );
            // (Snapshots drain counters: the ones below are read at the end.)
            // Waits 1 s for the next window, then goes.
            sleep_until(t0 + Duration::from_secs(119)).await;
            send(&mut svc, MockRequest::new(NOVA, 2, 10, 0))
                .await
                .unwrap();
            assert_eq!(t0.elapsed(), Duration::from_secs(120));
            // No room before the next window and nothing in flight: shed
            // at once.
            assert!(
                send(&mut svc, MockRequest::new(NOVA, 3, 995, 0))
                    .await
                    .is_err()
            );
            // Too large: shed at once.
            assert!(
                send(&mut svc, MockRequest::new(NOVA, 4, 2000, 0))
                    .await
                    .is_err()
            );
            // Token-rate throttles in two consecutive windows lower the
            // effective limit.
            let throttle = || {
                MockRequest::new(NOVA, 5, 10, 0)
                    .reply(Reply::Fail(ErrorClass::Throttled(ThrottleKind::TokenRate)))
            };
            sleep_until(t0 + Duration::from_secs(130)).await;
            assert!(send(&mut svc, throttle()).await.is_err());
            assert_eq!(budget.snapshot(NOVA).unwrap().effective.tokens, 1000);
            sleep_until(t0 + Duration::from_secs(190)).await;
            assert!(send(&mut svc, throttle()).await.is_err());
            assert_eq!(budget.snapshot(NOVA).unwrap().effective.tokens, 800);
        })
    });
    let snap = snapshotter.snapshot().into_vec();
    let labels = [("model", NOVA), ("tenant", "app")];
    assert_eq!(
        find(&snap, names::BUDGET_WAITS, &labels),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        find(
            &snap,
            names::BUDGET_SHEDS,
            &[("model", NOVA), ("reason", "budget_exhausted")]
        ),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        find(
            &snap,
            names::BUDGET_SHEDS,
            &[("model", NOVA), ("reason", "request_too_large")]
        ),
        Some(&DebugValue::Counter(1))
    );
    match find(&snap, names::BUDGET_WAIT_SECONDS, &labels) {
        Some(DebugValue::Histogram(v)) => assert_eq!(v.len(), 1),
        other => panic!("wait histogram: {other:?}"),
    }
    // The learned limit.
    assert_eq!(
        find(&snap, names::BUDGET_EFFECTIVE_LIMIT, &[("model", NOVA)]),
        Some(&DebugValue::Gauge(800.0.into()))
    );
}
