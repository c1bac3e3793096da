//! Streaming responses: fall back before the first event, never after.

mod support;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use support::{Ask, Error, upstream};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_bedrock_core::{ClientKind, ErrorClass, ThrottleKind, Tried};
use tower_bedrock_fallback::stream::Primed;
use tower_bedrock_fallback::{Chain, ModelFallbackLayer};

const A: &str = "eu.anthropic.claude-sonnet-4-20250514-v1:0";
const B: &str = "eu.anthropic.claude-3-7-sonnet-20250219-v1:0";
const OVERLOADED: ErrorClass = ErrorClass::Throttled(ThrottleKind::ModelOverloaded);

type Item = Result<String, Error>;

/// A scripted event stream: each item after its delay. Counts live streams.
struct Script {
    items: VecDeque<(Duration, Item)>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    live: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script")
            .field("left", &self.items.len())
            .finish()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stream for Script {
    type Item = Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let Some((delay, _)) = self.items.front() else {
            return Poll::Ready(None);
        };
        let delay = *delay;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        Poll::Ready(self.items.pop_front().map(|(_, i)| i))
    }
}

use std::future::Future;

type Spec = Result<&'static str, ErrorClass>;
type Scripts = Arc<Mutex<Vec<(String, Vec<(Duration, Spec)>)>>>;

struct Streams {
    scripts: Scripts,
    called: Arc<Mutex<Vec<String>>>,
    live: Arc<AtomicUsize>,
}

impl Streams {
    fn new() -> Self {
        Streams {
            scripts: Arc::default(),
            called: Arc::default(),
            live: Arc::default(),
        }
    }

    fn script(&self, model: &str, items: Vec<(u64, Spec)>) {
        self.scripts.lock().unwrap().push((
            model.to_owned(),
            items
                .into_iter()
                .map(|(ms, i)| (Duration::from_millis(ms), i))
                .collect(),
        ));
    }

    fn called(&self) -> Vec<String> {
        self.called.lock().unwrap().clone()
    }

    /// A service answering each request with its model's script.
    fn service(
        &self,
    ) -> impl Service<Ask, Response = Primed<Script>, Error = Error, Future: Send> + Clone + use<>
    {
        let scripts = self.scripts.clone();
        let called = self.called.clone();
        let live = self.live.clone();
        service_fn(move |ask: Ask| {
            called.lock().unwrap().push(ask.model.clone());
            let items = scripts
                .lock()
                .unwrap()
                .iter()
                .find(|(m, _)| *m == ask.model)
                .map(|(m, items)| {
                    items
                        .iter()
                        .map(|(d, spec)| (*d, spec.map(str::to_owned).map_err(|c| upstream(m, c))))
                        .collect::<VecDeque<_>>()
                })
                .unwrap_or_default();
            live.fetch_add(1, Ordering::SeqCst);
            let script = Script {
                items,
                sleep: None,
                live: live.clone(),
            };
            async move { Ok::<_, Error>(Primed::new(script)) }
        })
    }
}

fn ev(s: &'static str) -> Spec {
    Ok(s)
}

async fn collect(mut s: Primed<Script>) -> Vec<Result<String, ErrorClass>> {
    let mut out = Vec::new();
    while let Some(item) = std::future::poll_fn(|cx| Pin::new(&mut s).poll_next(cx)).await {
        out.push(item.map_err(|e| e.class()));
    }
    out
}

fn layer() -> ModelFallbackLayer<Ask, tower_bedrock_fallback::Streaming> {
    ModelFallbackLayer::new(Chain::of([A, B]))
        .unwrap()
        .streaming()
}

#[tokio::test(start_paused = true)]
async fn a_stream_failing_before_its_first_event_falls_back() {
    let streams = Streams::new();
    streams.script(A, vec![(0, Err(OVERLOADED))]);
    streams.script(B, vec![(0, ev("b1")), (0, ev("b2"))]);
    let (ask, report) = Ask::reporting(A);
    let resp = layer().layer(streams.service()).oneshot(ask).await.unwrap();
    assert_eq!(collect(resp).await, [Ok("b1".into()), Ok("b2".into())]);
    assert_eq!(streams.called(), [A, B]);
    let s = report.summary();
    assert_eq!(s.served_by.as_deref(), Some(B));
    assert_eq!(
        s.tried,
        [Tried {
            target: A.into(),
            class: OVERLOADED
        }]
    );
    assert_eq!(
        streams.live.load(Ordering::SeqCst),
        0,
        "A's stream was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_event_is_awaited_and_a_late_failure_still_falls_back() {
    let streams = Streams::new();
    // Headers come at once; the failure 3 s later, still before any event.
    streams.script(A, vec![(3000, Err(OVERLOADED))]);
    streams.script(B, vec![(1000, ev("b1"))]);
    let start = tokio::time::Instant::now();
    let resp = layer()
        .layer(streams.service())
        .oneshot(Ask::new(A))
        .await
        .unwrap();
    // The response is returned only once B's first event arrived.
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    assert_eq!(collect(resp).await, [Ok("b1".into())]);
    assert_eq!(start.elapsed(), Duration::from_secs(4), "b1 was buffered");
}

#[tokio::test(start_paused = true)]
async fn after_the_first_event_there_is_no_fallback() {
    let streams = Streams::new();
    streams.script(
        A,
        vec![(0, ev("a1")), (500, Err(OVERLOADED)), (0, ev("never"))],
    );
    let (ask, report) = Ask::reporting(A);
    let resp = layer().layer(streams.service()).oneshot(ask).await.unwrap();
    assert_eq!(report.summary().served_by.as_deref(), Some(A));
    let items = collect(resp).await;
    assert_eq!(items[..2], [Ok("a1".into()), Err(OVERLOADED)]);
    assert_eq!(streams.called(), [A], "B was never called");
}

#[tokio::test(start_paused = true)]
async fn an_empty_stream_is_served_and_client_errors_do_not_fall_back() {
    let streams = Streams::new();
    streams.script(A, vec![]);
    let resp = layer()
        .layer(streams.service())
        .oneshot(Ask::new(A))
        .await
        .unwrap();
    assert!(collect(resp).await.is_empty());
    assert_eq!(streams.called(), [A]);

    let streams = Streams::new();
    let validation = ErrorClass::Client(ClientKind::Validation);
    streams.script(A, vec![(0, Err(validation))]);
    let e = layer()
        .layer(streams.service())
        .oneshot(Ask::new(A))
        .await
        .unwrap_err();
    assert_eq!(e.class(), validation);
    assert_eq!(streams.called(), [A]);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_while_awaiting_the_first_event_drops_the_stream() {
    let streams = Streams::new();
    streams.script(A, vec![(10_000, ev("late"))]);
    let mut svc = layer().layer(streams.service());
    svc.ready().await.unwrap();
    let mut task = tokio_test::task::spawn(svc.call(Ask::new(A)));
    assert!(task.poll().is_pending());
    assert_eq!(streams.live.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(task.poll().is_pending());
    drop(task);
    assert_eq!(streams.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn tagged_streams_carry_the_served_target() {
    let streams = Streams::new();
    streams.script(A, vec![(0, Err(OVERLOADED))]);
    streams.script(B, vec![(0, ev("b1"))]);
    let served = layer()
        .tagged()
        .layer(streams.service())
        .oneshot(Ask::new(A))
        .await
        .unwrap();
    assert_eq!(served.served_by.as_deref(), Some(B));
    assert_eq!(served.tried.len(), 1);
    assert_eq!(collect(served.response).await, [Ok("b1".into())]);
}
