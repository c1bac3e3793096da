//! Mock request, error, service and metrics recorder shared by the tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::future::BoxFuture;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use tower_bedrock_core::{
    CallReport, Classification, ClassifiedError, ErrorClass, ModelRequest, Rejection, TokenDemand,
};
use tower_service::Service;

/// A request of the mock API.
#[derive(Debug, Clone)]
pub struct Ask {
    pub model: String,
    pub max_tokens: Option<u64>,
    pub note: Option<&'static str>,
    pub report: Option<CallReport>,
}

impl Ask {
    pub fn new(model: &str) -> Self {
        Ask {
            model: model.to_owned(),
            max_tokens: None,
            note: None,
            report: None,
        }
    }

    pub fn reporting(model: &str) -> (Self, CallReport) {
        let report = CallReport::new();
        let mut ask = Ask::new(model);
        ask.report = Some(report.clone());
        (ask, report)
    }
}

impl ModelRequest for Ask {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn set_model_id(&mut self, model_id: &str) {
        self.model = model_id.to_owned();
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand {
            input_tokens: 10,
            max_output_tokens: self.max_tokens,
        }
    }
    fn set_max_output_tokens(&mut self, max_tokens: u64) {
        self.max_tokens = Some(max_tokens);
    }
    fn report(&self) -> Option<&CallReport> {
        self.report.as_ref()
    }
}

/// The mock's own error (stands for an SDK error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockError(pub String);

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mock error from {}", self.0)
    }
}

impl std::error::Error for MockError {}

pub type Error = ClassifiedError<MockError>;

/// An upstream error of a class, from `model`.
pub fn upstream(model: &str, class: ErrorClass) -> Error {
    ClassifiedError::new(MockError(model.to_owned()), Classification::new(class))
}

/// A local rejection with a retry-after.
pub fn rejection(
    kind: tower_bedrock_core::LocalRejection,
    model: &str,
    after: Option<Duration>,
) -> Error {
    let mut r = Rejection::new(kind).with_key(model);
    if let Some(a) = after {
        r = r.with_retry_after(a);
    }
    r.into()
}

/// How the mock answers one model.
#[derive(Clone)]
pub enum Behaviour {
    /// Answers `"<model>"` after `delay`.
    Ok(Duration),
    /// Fails with this error after `delay`.
    Fail(Arc<dyn Fn(&str) -> Error + Send + Sync>, Duration),
    /// Never answers.
    Hang,
}

impl Behaviour {
    pub fn ok() -> Self {
        Behaviour::Ok(Duration::ZERO)
    }
    pub fn fail(class: ErrorClass) -> Self {
        Behaviour::Fail(Arc::new(move |m| upstream(m, class)), Duration::ZERO)
    }
    pub fn fail_with(f: impl Fn(&str) -> Error + Send + Sync + 'static) -> Self {
        Behaviour::Fail(Arc::new(f), Duration::ZERO)
    }
}

#[derive(Default)]
struct MockState {
    behaviours: HashMap<String, Behaviour>,
    calls: Vec<Ask>,
    in_flight: usize,
}

/// A mock model service. Clones share the script and the call log; each
/// clone checks that `poll_ready` came before its `call`.
#[derive(Clone)]
pub struct Mock {
    state: Arc<Mutex<MockState>>,
    ready: bool,
    polls: Arc<AtomicU64>,
}

impl Mock {
    pub fn new() -> Self {
        Mock {
            state: Arc::default(),
            ready: false,
            polls: Arc::default(),
        }
    }

    pub fn script(&self, model: &str, b: Behaviour) -> &Self {
        self.state
            .lock()
            .unwrap()
            .behaviours
            .insert(model.to_owned(), b);
        self
    }

    /// Every request the mock received, in order.
    pub fn calls(&self) -> Vec<Ask> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The model ids called, in order.
    pub fn called(&self) -> Vec<String> {
        self.calls().into_iter().map(|a| a.model).collect()
    }

    /// Calls whose future is still alive.
    pub fn in_flight(&self) -> usize {
        self.state.lock().unwrap().in_flight
    }

    pub fn ready_polls(&self) -> u64 {
        self.polls.load(Ordering::SeqCst)
    }
}

struct InFlight(Arc<Mutex<MockState>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

impl Service<Ask> for Mock {
    type Response = String;
    type Error = Error;
    type Future = BoxFuture<'static, Result<String, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ask: Ask) -> Self::Future {
        assert!(self.ready, "call without poll_ready");
        self.ready = false;
        let behaviour = {
            let mut s = self.state.lock().unwrap();
            s.calls.push(ask.clone());
            s.in_flight += 1;
            s.behaviours
                .get(&ask.model)
                .cloned()
                .unwrap_or(Behaviour::ok())
        };
        let guard = InFlight(self.state.clone());
        Box::pin(async move {
            let _guard = guard;
            match behaviour {
                Behaviour::Ok(d) => {
                    tokio::time::sleep(d).await;
                    Ok(ask.model)
                }
                Behaviour::Fail(f, d) => {
                    tokio::time::sleep(d).await;
                    Err(f(&ask.model))
                }
                Behaviour::Hang => std::future::pending().await,
            }
        })
    }
}

/// A metrics recorder that keeps counters and gauges by their rendered key
/// (`name{k=v,...}`, labels in emission order).
#[derive(Default, Clone)]
pub struct TestRecorder {
    values: Arc<Mutex<HashMap<String, Arc<Cell>>>>,
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
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

impl Cell {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                Some(f(f64::from_bits(b)).to_bits())
            });
    }
}

fn render(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        self.values
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone()
    }

    /// A counter's value (0 when never emitted).
    pub fn counter(&self, rendered: &str) -> u64 {
        self.values
            .lock()
            .unwrap()
            .get(rendered)
            .map_or(0, |c| c.0.load(Ordering::SeqCst))
    }

    /// A gauge's value (0 when never emitted).
    pub fn gauge(&self, rendered: &str) -> f64 {
        self.values
            .lock()
            .unwrap()
            .get(rendered)
            .map_or(0.0, |c| f64::from_bits(c.0.load(Ordering::SeqCst)))
    }

    /// Every key emitted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.values.lock().unwrap().keys().cloned().collect();
        k.sort();
        k
    }
}

impl Recorder for TestRecorder {
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
