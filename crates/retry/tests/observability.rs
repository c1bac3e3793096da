//! Metrics and tracing events emitted per retry.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tower::{Layer, Service, ServiceExt};
use tower_bedrock_core::names;
use tower_bedrock_retry::{QuotaAlignedRetryLayer, RetryBudgetConfig};

/// Records counters and histogram samples by `name{label=value,...}`.
#[derive(Default)]
struct TestRecorder {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    samples: Mutex<BTreeMap<String, Arc<Mutex<Vec<f64>>>>>,
}

struct Samples(Arc<Mutex<Vec<f64>>>);
impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}
struct Count(Arc<AtomicU64>);
impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::SeqCst);
    }
}

fn render(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = self
            .counters
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Counter::from_arc(Arc::new(Count(c)))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let s = self
            .samples
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Histogram::from_arc(Arc::new(Samples(s)))
    }
}

impl TestRecorder {
    fn counter(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
    fn samples(&self, key: &str) -> Vec<f64> {
        self.samples
            .lock()
            .unwrap()
            .get(key)
            .map(|s| s.lock().unwrap().clone())
            .unwrap_or_default()
    }
}

/// Collects the fields of `tracing` events as text.
#[derive(Default, Clone)]
struct Events(Arc<Mutex<Vec<String>>>);

struct FieldText(String);
impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = FieldText(String::new());
        event.record(&mut text);
        self.0.lock().unwrap().push(text.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn retries_are_counted_traced_and_timed() {
    let recorder = TestRecorder::default();
    let events = Events::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _tracing = tracing::subscriber::set_default(events.clone());
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let layer = QuotaAlignedRetryLayer::builder()
                .retry_budget(RetryBudgetConfig::new().capacity(15).retry_cost(5))
                .seed(3)
                .build()
                .unwrap();
            // Two pool retries then success: 2 retries.
            let mut svc = layer.layer(Mock::failing(2, pool()));
            svc.ready().await.unwrap().call(1).await.unwrap();
            // 15 - 2 x 5 + 5 (the successful retry's cost comes back) = 10
            // tokens: two retries of an outage (2 s hint), then the budget
            // refuses the third.
            let mut svc = layer.layer(Mock::always(
                service().with_retry_after(Duration::from_secs(2)),
            ));
            svc.ready().await.unwrap().call(1).await.unwrap_err();
        });
    });

    let retries_pool = format!(
        "{}{{class=unavailable,kind=connection_pool}}",
        names::RETRIES
    );
    let retries_service = format!("{}{{class=unavailable,kind=service}}", names::RETRIES);
    assert_eq!(recorder.counter(&retries_pool), 2);
    assert_eq!(recorder.counter(&retries_service), 2);
    assert_eq!(
        recorder.counter(&format!("{}{{}}", names::RETRY_BUDGET_EXHAUSTED)),
        1
    );
    let waits = recorder.samples(&format!(
        "{}{{class=unavailable}}",
        names::RETRY_WAIT_SECONDS
    ));
    assert_eq!(waits.len(), 4);
    assert_eq!(&waits[2..], &[2.0, 2.0]);
    assert!(waits[..2].iter().all(|w| (0.0..=0.2).contains(w)));

    let events = events.0.lock().unwrap();
    let retrying: Vec<&String> = events
        .iter()
        .filter(|e| e.contains("message=retrying Bedrock call"))
        .collect();
    assert_eq!(retrying.len(), 4);
    assert!(
        retrying[0].contains("class=\"unavailable\""),
        "{}",
        retrying[0]
    );
    assert!(retrying[0].contains("kind=\"connection_pool\""));
    assert!(retrying[0].contains("attempt=1"));
    assert!(retrying[3].contains("attempt=2"));
    assert!(retrying[3].contains("wait_ms=2000"));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.contains("the retry budget is empty"))
            .count(),
        1
    );
    // Nothing from the request or the inner error is logged.
    assert!(events.iter().all(|e| !e.contains("mock failure")));
}
