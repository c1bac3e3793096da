//! State transitions are `tracing` events naming the model and the states.

mod common;

use std::fmt::Debug;
use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use tower::Layer;
use tower_bedrock_breaker::CircuitBreakLayer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Records every event at INFO or above as `LEVEL message k=v ...`.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0.push_str(&format!(" {value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(&format!(" {value}"));
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl Subscriber for Events {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::INFO
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        self.0.lock().push(line.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn transitions_are_logged_with_model_and_states() {
    let events = Events::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    tracing::subscriber::with_default(events.clone(), || {
        rt.block_on(async {
            let layer = CircuitBreakLayer::builder()
                .disable_failure_rate()
                .consecutive_failures(2)
                .open_duration(secs(1))
                .open_jitter(0.0)
                .half_open_probes(1)
                .build()
                .unwrap();
            let mut svc = layer.layer(Mock::default());
            for _ in 0..2 {
                send(&mut svc, "amazon.nova-pro", fail(UNAVAILABLE))
                    .await
                    .unwrap_err();
            }
            tokio::time::advance(secs(1)).await;
            send(&mut svc, "amazon.nova-pro", Answer::Ok).await.unwrap();
        })
    });
    let lines = events.0.lock().clone();
    assert_eq!(
        lines,
        [
            "WARN circuit breaker opened model=amazon.nova-pro from=closed to=open reason=consecutive failures",
            "INFO circuit breaker state changed model=amazon.nova-pro from=open to=half_open reason=open time over",
            "INFO circuit breaker state changed model=amazon.nova-pro from=half_open to=closed reason=probes succeeded",
        ]
    );
}
