//! The breaker's metrics: state gauge, transitions and rejections, labelled
//! with the model id.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use parking_lot::Mutex;
use tower::Layer;
use tower_bedrock_breaker::CircuitBreakLayer;
use tower_bedrock_core::names;

/// Keeps the last value of every gauge and the total of every counter,
/// keyed by `name{label=value,...}`.
#[derive(Default)]
struct Capture {
    values: Mutex<BTreeMap<String, Arc<Cell>>>,
}

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.0.store(value as u64, Ordering::SeqCst);
    }
}

impl Capture {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(self.values.lock().entry(name).or_default())
    }
    fn get(&self, name: &str) -> Option<u64> {
        self.values
            .lock()
            .get(name)
            .map(|c| c.0.load(Ordering::SeqCst))
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn transitions_and_rejections_are_counted_per_model() {
    let capture = Capture::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&capture, || {
        rt.block_on(async {
            let layer = CircuitBreakLayer::builder()
                .disable_failure_rate()
                .consecutive_failures(1)
                .open_duration(secs(1))
                .open_jitter(0.0)
                .half_open_probes(1)
                .idle_timeout(secs(600))
                .build()
                .unwrap();
            let mut svc = layer.layer(Mock::default());
            send(&mut svc, "m", fail(UNAVAILABLE)).await.unwrap_err();
            assert_eq!(
                capture.get(&format!("{}{{model=m}}", names::CIRCUIT_STATE)),
                Some(2)
            );
            for _ in 0..3 {
                send(&mut svc, "m", Answer::Ok).await.unwrap_err();
            }
            tokio::time::advance(secs(1)).await;
            send(&mut svc, "m", Answer::Ok).await.unwrap();
            send(&mut svc, "other", Answer::Ok).await.unwrap();

            // An open breaker dropped as idle (past its open time) reads
            // closed again: the next call gets a fresh breaker.
            send(&mut svc, "gone", fail(UNAVAILABLE)).await.unwrap_err();
            assert_eq!(
                capture.get(&format!("{}{{model=gone}}", names::CIRCUIT_STATE)),
                Some(2)
            );
            tokio::time::advance(secs(3600)).await;
            assert_eq!(layer.handle().purge_idle(), 3);
            assert_eq!(
                capture.get(&format!("{}{{model=gone}}", names::CIRCUIT_STATE)),
                Some(0)
            );
        })
    });
    let t = |from: &str, to: &str| {
        capture.get(&format!(
            "{}{{model=m,from={from},to={to}}}",
            names::CIRCUIT_TRANSITIONS
        ))
    };
    assert_eq!(t("closed", "open"), Some(1));
    assert_eq!(t("open", "half_open"), Some(1));
    assert_eq!(t("half_open", "closed"), Some(1));
    assert_eq!(
        capture.get(&format!("{}{{model=m}}", names::CIRCUIT_REJECTED)),
        Some(3)
    );
    assert_eq!(
        capture.get(&format!("{}{{model=m}}", names::CIRCUIT_STATE)),
        Some(0)
    );
    assert_eq!(
        capture.get(&format!("{}{{model=other}}", names::CIRCUIT_STATE)),
        Some(0)
    );
    assert_eq!(
        capture.get(&format!("{}{{model=other}}", names::CIRCUIT_REJECTED)),
        None
    );
}

#[test]
fn full_connection_pools_are_counted_per_model_apart_from_failures() {
    let capture = Capture::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let pool = tower_bedrock_core::ErrorClass::Unavailable(
        tower_bedrock_core::UnavailableKind::ConnectionPool,
    );
    metrics::with_local_recorder(&capture, || {
        rt.block_on(async {
            let layer = CircuitBreakLayer::builder()
                .consecutive_failures(1)
                .build()
                .unwrap();
            let mut svc = layer.layer(Mock::default());
            for _ in 0..4 {
                send(&mut svc, "m", fail(pool)).await.unwrap_err();
            }
            send(&mut svc, "m", Answer::Ok).await.unwrap();
        })
    });
    assert_eq!(
        capture.get(&format!("{}{{model=m}}", names::CONNECTION_POOL_EXHAUSTED)),
        Some(4)
    );
    assert_eq!(
        capture.get(&format!("{}{{model=m}}", names::CIRCUIT_STATE)),
        Some(0)
    );
}
