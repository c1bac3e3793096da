//! Streamed responses: a stream is judged when it ends, not when it opens.
//!
//! A streaming call returns its response once the stream has opened (its
//! first event arrived, for the SDK's services); a failure before that is
//! the call's error and counts like any other. A failure *after* it (an
//! in-stream `serviceUnavailableException` half-way through an answer)
//! reaches the caller as an error item of the stream, which this layer
//! never sees. The breaker therefore watches each call through
//! [`stream_end`](tower_bedrock_core::stream_end): when the inner service
//! answers with a stream that reports its end, the call's outcome is
//! recorded when the stream ends, once:
//!
//! | the stream | recorded as |
//! |---|---|
//! | read to its end | a success |
//! | failed after its first event | a failure of its class (classes the breaker ignores, such as rate throttles, stay ignored) |
//! | dropped by its reader | a success (the model was answering) |
//!
//! Its latency, for slow-call detection, is the time to the stream's
//! answer (its first event), not its length. A half-open probe that is a
//! stream holds its probe slot until the stream ends.

use std::time::Duration;

use tower_bedrock_core::stream_end::{StreamEnd, StreamOutcome};

use crate::breaker::Permit;

/// Records `permit`'s outcome when the stream behind `outcome` ends.
pub(crate) fn finish_at_end(permit: Permit, outcome: &StreamOutcome) {
    let answered_in = permit.elapsed().unwrap_or(Duration::ZERO);
    outcome.on_end(move |end| match end {
        StreamEnd::Failed(c) => permit.finish_answered_in(Some(c), answered_in),
        _ => permit.finish_answered_in(None, answered_in),
    });
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tower::{Layer, ServiceExt, service_fn};
    use tower_bedrock_core::stream_end::open_stream;
    use tower_bedrock_core::{
        Classification, Classified, ClassifiedError, ErrorClass, ThrottleKind, UnavailableKind,
    };

    use super::*;
    use crate::{CircuitBreakLayer, CircuitState};

    /// A stream response: keeps the outcome its service published, to end
    /// it the way the test says.
    struct FakeStream(Option<StreamOutcome>);

    type Err = ClassifiedError<std::io::Error>;

    fn breaker() -> (
        impl tower::Service<&'static str, Response = FakeStream, Error = Err> + Clone,
        crate::CircuitBreakHandle,
    ) {
        let layer = CircuitBreakLayer::builder()
            .key_fn(|_: &&'static str| "m")
            .consecutive_failures(2)
            .disable_failure_rate()
            .build()
            .unwrap();
        let handle = layer.handle();
        let inner = service_fn(|_: &'static str| async { Ok::<_, Err>(FakeStream(open_stream())) });
        (layer.layer(inner), handle)
    }

    fn failed(class: ErrorClass) -> StreamEnd {
        StreamEnd::Failed(Classification::new(class))
    }

    #[tokio::test]
    async fn streams_count_when_they_end() {
        let (svc, h) = breaker();
        let calls = |h: &crate::CircuitBreakHandle| h.get("m").map_or(0, |s| s.calls);
        let a = svc.clone().oneshot("a").await.unwrap();
        let b = svc.clone().oneshot("b").await.unwrap();
        let (a, b) = (a.0.expect("watched"), b.0.expect("watched"));
        assert_eq!(calls(&h), 0, "nothing is judged while the streams run");

        // Two failures after the first event trip the breaker (two
        // consecutive failures); an ignored class in between changes
        // nothing.
        let c = svc.clone().oneshot("c").await.unwrap().0.unwrap();
        c.end(failed(ErrorClass::Throttled(ThrottleKind::TokenRate)));
        a.end(failed(ErrorClass::Unavailable(UnavailableKind::Service)));
        a.end(StreamEnd::Completed); // only the first end counts
        assert_eq!(h.get("m").unwrap().state, CircuitState::Closed);
        b.end(failed(ErrorClass::Unavailable(UnavailableKind::Service)));
        let snap = h.get("m").unwrap();
        assert_eq!(snap.state, CircuitState::Open, "{snap:?}");
        let err = svc.clone().oneshot("d").await.err().expect("open");
        assert_eq!(
            err.classification().class,
            ErrorClass::Local(tower_bedrock_core::LocalRejection::CircuitOpen)
        );
    }

    #[tokio::test]
    async fn completed_and_dropped_streams_are_successes() {
        let (svc, h) = breaker();
        let ends = Arc::new(Mutex::new(0));
        for end in [StreamEnd::Completed, StreamEnd::Dropped] {
            let s = svc.clone().oneshot("x").await.unwrap().0.unwrap();
            let e = ends.clone();
            s.on_end(move |_| *e.lock().unwrap() += 1);
            s.end(end);
        }
        assert_eq!(*ends.lock().unwrap(), 2);
        let snap = h.get("m").unwrap();
        assert_eq!((snap.calls, snap.failures), (2, 0), "{snap:?}");
        // A failure between two successes is not two in a row.
        let s = svc.clone().oneshot("y").await.unwrap().0.unwrap();
        s.end(failed(ErrorClass::Unavailable(UnavailableKind::Service)));
        let snap = h.get("m").unwrap();
        assert_eq!((snap.calls, snap.failures), (3, 1), "{snap:?}");
        assert_eq!(snap.state, CircuitState::Closed);
    }

    #[tokio::test]
    async fn unary_responses_count_at_once() {
        let layer = CircuitBreakLayer::builder()
            .key_fn(|_: &&'static str| "m")
            .build()
            .unwrap();
        let h = layer.handle();
        let svc = layer.layer(service_fn(|_: &'static str| async { Ok::<_, Err>(1) }));
        svc.clone().oneshot("a").await.unwrap();
        assert_eq!(h.get("m").unwrap().calls, 1, "not a stream: judged now");
    }
}
