//! The budget's metrics, observed through a local debugging recorder.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_bedrock_budget::Budget;
use tower_bedrock_budget::testing::{MockBedrock, MockRequest, NOVA, Reply, run_paused, send};
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

#[test]
fn waits_sheds_utilisation_and_effective_limit_are_reported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        run_paused(|| async {
            let budget = Budget::builder()
                .tokens_per_window(1000)
                .max_wait(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut svc = budget
                .tenant("app", 1)
                .unwrap()
                .layer()
                .layer(MockBedrock::new(Duration::ZERO));
            send(&mut svc, MockRequest::new(NOVA, 0, 900, 100))
                .await
                .unwrap();
            // Gauges are updated on admission and settlement, at most once
            // per sub-window.
            let early = snapshotter.snapshot().into_vec();
            assert_eq!(
                find(
                    &early,
                    names::BUDGET_UTILIZATION,
                    &[("model", NOVA), ("window", "tokens")]
                ),
                Some(&DebugValue::Gauge(1.0.into()))
            );
            // Waits 5 s, then is shed.
            assert!(
                send(&mut svc, MockRequest::new(NOVA, 1, 10, 0))
                    .await
                    .is_err()
            );
            // Too large: shed at once.
            assert!(
                send(&mut svc, MockRequest::new(NOVA, 2, 2000, 0))
                    .await
                    .is_err()
            );
            // A token-rate throttle lowers the effective limit.
            tokio::time::sleep(Duration::from_secs(120)).await;
            let throttle = Reply::Fail(ErrorClass::Throttled(ThrottleKind::TokenRate));
            assert!(
                send(&mut svc, MockRequest::new(NOVA, 3, 10, 0).reply(throttle))
                    .await
                    .is_err()
            );
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
    assert_eq!(
        find(&snap, names::BUDGET_EFFECTIVE_LIMIT, &[("model", NOVA)]),
        Some(&DebugValue::Gauge(800.0.into()))
    );
}
