//! When the call in progress actually left for Bedrock.
//!
//! A layer that times calls (the circuit breaker's slow-call rule) sits
//! above layers that may hold a call back first (a token budget queueing
//! it): timing from its own `call` would count the queueing as slowness.
//! Instead, it runs the inner call inside [`watch_sent`], and the layer
//! that hands the request to the network (the facade's invocation metrics,
//! innermost in the preset stack) calls [`mark_sent`]. The watcher then
//! reads [`SentAt::get`]: the instant the request was sent, or `None` when
//! no layer below marked it (time from the watcher's own start then).
//!
//! Like [`deadline`](crate::deadline), this travels with the task: a layer
//! that moves the call to another task loses it.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

tokio::task_local! {
    static SENT: Option<Arc<SentAt>>;
}

/// Where [`mark_sent`] records the instant a watched call was sent.
#[derive(Debug, Default)]
pub struct SentAt {
    at: Mutex<Option<Instant>>,
}

impl SentAt {
    /// A new, unmarked record.
    pub fn new() -> Arc<Self> {
        Arc::new(SentAt::default())
    }

    /// When the call was last sent, if a layer below marked it.
    pub fn get(&self) -> Option<Instant> {
        *self.at.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `call` (typically `inner.call(req)`) and polls its future with
/// `watch` (when `Some`) as the record [`mark_sent`] writes to. With
/// `None`, nothing is watched (and an outer watcher is hidden: the layer
/// asked not to know).
pub fn watch_sent<F, Fut>(
    watch: Option<Arc<SentAt>>,
    call: F,
) -> TaskLocalFuture<Option<Arc<SentAt>>, Fut>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let fut = SENT.sync_scope(watch.clone(), call);
    SENT.scope(watch, fut)
}

/// Records that the call in progress is being sent now, for the layer
/// above that watches it (if any).
pub fn mark_sent() {
    let _ = SENT.try_with(|watch| {
        if let Some(w) = watch {
            *w.at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_watcher_sees_when_the_call_was_sent() {
        let watch = SentAt::new();
        let start = Instant::now();
        watch_sent(Some(watch.clone()), || async {
            // Queued for a while by a layer below, then sent.
            tokio::time::sleep(Duration::from_secs(2)).await;
            mark_sent();
        })
        .await;
        assert_eq!(watch.get(), Some(start + Duration::from_secs(2)));
        // Outside a watched call, marking does nothing.
        mark_sent();
        let unwatched = SentAt::new();
        watch_sent(None, || async { mark_sent() }).await;
        assert_eq!(unwatched.get(), None);
    }
}
