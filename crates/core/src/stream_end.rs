//! How a streamed response ended, for the layers above the service that
//! opened it.
//!
//! A streaming call (ConverseStream, InvokeModelWithResponseStream) returns
//! its response once the stream has opened; whether the call *succeeded* is
//! only known when the stream ends. A layer that judges calls by their
//! outcome (a circuit breaker) cannot see that from the response type, which
//! it knows nothing about. So the outcome travels with the task, like the
//! [call deadline](crate::deadline):
//!
//! 1. the watching layer runs `inner.call(req)` and polls its future inside
//!    [`watch_call`], which opens an empty *watch frame*;
//! 2. the service that returns a stream calls [`open_stream`] when it
//!    returns it: if a frame is open, a [`StreamOutcome`] is created,
//!    published into the frame, and kept by the stream, which calls
//!    [`StreamOutcome::end`] exactly once when it ends (completed, failed
//!    after its first event, or dropped);
//! 3. when the call's future is ready, the watching layer takes the outcome
//!    out of its frame with [`take_outcome`]: `None` means the response is
//!    not a stream and the call's result is its outcome; `Some` means the
//!    layer learns the outcome later through [`StreamOutcome::on_end`].
//!
//! Frames nest: an outcome taken from an inner frame is published into the
//! enclosing one too, so every watching layer sees the same stream. A
//! service that opens no frame-aware stream costs the watching layer one
//! task-local swap per poll and nothing else. A layer that moves the call
//! to another task (a `Buffer`) loses the frame, as with any task-local.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tower_bedrock_core::stream_end::{StreamEnd, open_stream, take_outcome, watch_call};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The service: returns a "stream" that reports how it ended.
//! let call = || async { open_stream() };
//! let mut fut = std::pin::pin!(watch_call(call));
//! let kept_by_the_stream = (&mut fut).await.expect("a frame was open");
//! let seen = take_outcome(fut.as_mut()).expect("the layer sees the stream");
//! let ends = Arc::new(Mutex::new(Vec::new()));
//! let e = ends.clone();
//! seen.on_end(move |end| e.lock().unwrap().push(end.clone()));
//! kept_by_the_stream.end(StreamEnd::Completed);
//! kept_by_the_stream.end(StreamEnd::Dropped); // only the first end counts
//! assert_eq!(*ends.lock().unwrap(), vec![StreamEnd::Completed]);
//! # }
//! ```

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::futures::TaskLocalFuture;

use crate::Classification;

/// How a streamed response ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEnd {
    /// Read to its normal end.
    Completed,
    /// Failed after its first event (a failure before it is the call's
    /// error, not a stream's end): an in-stream exception, a broken
    /// connection, an idle timeout.
    Failed(Classification),
    /// Dropped by its reader before its end. The stream was working; the
    /// reader lost interest.
    Dropped,
}

type EndCallback = Box<dyn FnOnce(&StreamEnd) + Send + 'static>;

#[derive(Default)]
struct OutcomeState {
    ended: Option<StreamEnd>,
    waiting: Vec<EndCallback>,
}

/// The end of one stream, shared by the stream (which reports it with
/// [`end`](Self::end)) and the layers watching it (which hear it through
/// [`on_end`](Self::on_end)). Clones share the same outcome.
#[derive(Clone, Default)]
pub struct StreamOutcome {
    inner: Arc<Mutex<OutcomeState>>,
}

impl fmt::Debug for StreamOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("StreamOutcome")
            .field("ended", &st.ended)
            .field("waiting", &st.waiting.len())
            .finish()
    }
}

impl StreamOutcome {
    /// An outcome not yet ended, watched by nobody.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, OutcomeState> {
        // Callbacks run outside the lock: a poisoned lock can only come
        // from a panic in this module's own bookkeeping.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `f` once with the stream's end: when it ends, or at once if
    /// it already has.
    pub fn on_end(&self, f: impl FnOnce(&StreamEnd) + Send + 'static) {
        let mut st = self.lock();
        match &st.ended {
            Some(end) => {
                let end = end.clone();
                drop(st);
                f(&end);
            }
            None => st.waiting.push(Box::new(f)),
        }
    }

    /// Reports the end. The first report wins; later ones do nothing.
    pub fn end(&self, end: StreamEnd) {
        let waiting = {
            let mut st = self.lock();
            if st.ended.is_some() {
                return;
            }
            st.ended = Some(end.clone());
            std::mem::take(&mut st.waiting)
        };
        for f in waiting {
            f(&end);
        }
    }

    /// The end, once reported.
    pub fn ended(&self) -> Option<StreamEnd> {
        self.lock().ended.clone()
    }
}

/// The watch frame of one call (see the [module docs](self)). Opaque.
#[derive(Debug, Default)]
pub struct WatchFrame {
    outcome: RefCell<Option<StreamOutcome>>,
}

tokio::task_local! {
    static FRAME: WatchFrame;
}

/// A call's future polled inside its watch frame (see [`watch_call`]).
pub type Watched<F> = TaskLocalFuture<WatchFrame, F>;

/// Runs `call` (typically `inner.call(req)`) and polls the future it
/// returns inside a new watch frame. When the future is ready, read the
/// frame with [`take_outcome`].
pub fn watch_call<C, F>(call: C) -> Watched<F>
where
    C: FnOnce() -> F,
    F: Future,
{
    // A stream opened synchronously by `call` lands in this first frame;
    // it is carried into the frame the future is polled in.
    let (fut, opened) = FRAME.sync_scope(WatchFrame::default(), || {
        let fut = call();
        (fut, FRAME.with(|f| f.outcome.take()))
    });
    FRAME.scope(
        WatchFrame {
            outcome: RefCell::new(opened),
        },
        fut,
    )
}

/// For the service that returns a stream: a [`StreamOutcome`] published
/// to the layers watching this call, or `None` when none is (the stream
/// then has nothing to report to). Call it once per stream returned, in
/// the call or its future.
pub fn open_stream() -> Option<StreamOutcome> {
    FRAME
        .try_with(|f| {
            let outcome = StreamOutcome::new();
            *f.outcome.borrow_mut() = Some(outcome.clone());
            outcome
        })
        .ok()
}

/// After a [`Watched`] future is ready: the stream its response opened, if
/// it is one. Also publishes it into the enclosing frame, if any, so that
/// watching layers further out see it. Returns `None` the second time.
pub fn take_outcome<F: Future>(fut: Pin<&mut Watched<F>>) -> Option<StreamOutcome> {
    let outcome = fut.take_value()?.outcome.into_inner()?;
    let _ = FRAME.try_with(|outer| *outer.outcome.borrow_mut() = Some(outcome.clone()));
    Some(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_frame_no_outcome() {
        assert!(open_stream().is_none());
        let mut fut = std::pin::pin!(watch_call(|| async { 7 }));
        assert_eq!((&mut fut).await, 7);
        assert!(take_outcome(fut.as_mut()).is_none(), "not a stream");
    }

    #[tokio::test]
    async fn nested_frames_all_see_the_stream() {
        let mut outer = std::pin::pin!(watch_call(|| async {
            let mut inner = std::pin::pin!(watch_call(|| {
                // Opened synchronously, in the call itself.
                let s = open_stream();
                async move { s }
            }));
            let kept = (&mut inner).await.expect("frame open");
            let seen_inside = take_outcome(inner.as_mut()).expect("inner layer sees it");
            assert!(take_outcome(inner.as_mut()).is_none(), "taken once");
            (kept, seen_inside)
        }));
        let (kept, inside) = (&mut outer).await;
        let outside = take_outcome(outer.as_mut()).expect("outer layer sees it too");
        let log = Arc::new(Mutex::new(Vec::new()));
        for (name, o) in [("inside", &inside), ("outside", &outside)] {
            let log = log.clone();
            o.on_end(move |e| log.lock().unwrap().push((name, e.clone())));
        }
        let failed = StreamEnd::Failed(Classification::new(crate::ErrorClass::Unavailable(
            crate::UnavailableKind::Service,
        )));
        kept.end(failed.clone());
        kept.end(StreamEnd::Completed);
        // Registered after the end: told at once.
        let late = log.clone();
        outside.on_end(move |e| late.lock().unwrap().push(("late", e.clone())));
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                ("inside", failed.clone()),
                ("outside", failed.clone()),
                ("late", failed.clone())
            ]
        );
        assert_eq!(kept.ended(), Some(failed));
    }
}
