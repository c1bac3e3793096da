//! The fallback's `tracing` events: one WARN per fallback, carrying ids and
//! classes, never request content.

mod support;

use std::fmt;
use std::sync::{Arc, Mutex};

use support::{Ask, Behaviour, Mock};
use tower::{Layer, ServiceExt};
use tower_bedrock_core::{ErrorClass, ThrottleKind, UnavailableKind};
use tower_bedrock_fallback::{Chain, ModelFallbackLayer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Records every event as `LEVEL message k=v ...`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push_str(&format!(" {}={}", field.name(), value));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields(event.metadata().level().to_string());
        event.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

const A: &str = "eu.anthropic.claude-sonnet-4-20250514-v1:0";
const B: &str = "eu.anthropic.claude-3-7-sonnet-20250219-v1:0";
const C: &str = "eu.anthropic.claude-3-haiku-20240307-v1:0";

#[tokio::test(start_paused = true)]
async fn one_warn_event_per_fallback_without_request_content() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let mock = Mock::new();
    mock.script(
        A,
        Behaviour::fail(ErrorClass::Throttled(ThrottleKind::ModelOverloaded)),
    )
    .script(
        B,
        Behaviour::fail(ErrorClass::Unavailable(UnavailableKind::Service)),
    );
    let svc = ModelFallbackLayer::new(Chain::of([A, B, C]))
        .unwrap()
        .layer(mock.clone());
    let mut ask = Ask::new(A);
    ask.note = Some("SECRET PROMPT TEXT");
    assert_eq!(svc.oneshot(ask).await.unwrap(), C);

    let events = capture.0.lock().unwrap().clone();
    let warns: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with(Level::WARN.as_str()))
        .collect();
    assert_eq!(warns.len(), 2, "{events:#?}");
    assert_eq!(
        *warns[0],
        format!(
            "WARN message=model fallback from={A} to={B} class=throttled (model overloaded) skipped=false"
        )
    );
    assert_eq!(
        *warns[1],
        format!(
            "WARN message=model fallback from={B} to={C} class=unavailable (service) skipped=false"
        )
    );
    assert!(events.iter().all(|e| !e.contains("SECRET")));
    // The mock did receive the content: the layer forwarded it.
    assert!(
        mock.calls()
            .iter()
            .all(|a| a.note == Some("SECRET PROMPT TEXT"))
    );
}
