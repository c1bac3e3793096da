//! The deadline of the call in progress, visible to every layer below the
//! one that set it.
//!
//! The retry layer knows how long a call may take in all (its deadline,
//! from its configuration or the request's [`CallOptions`]); the layers
//! below it (a budget that queues, a breaker's half-open wait, a fallback
//! chain) must not wait past that instant. Rather than thread an extra
//! field through every request type, the deadline travels with the task:
//! a layer runs the inner service's `call` and polls its future inside
//! [`with_call_deadline`] / [`call_with_deadline`], and any layer below
//! reads it with [`call_deadline`].
//!
//! Scopes nest: an inner scope can only shorten the deadline, never extend
//! it. The deadline is a [`tokio::time::Instant`], so it follows
//! `tokio::time::pause()` in tests.
//!
//! A layer that moves the call to another task (`tower::buffer::Buffer`,
//! a spawned worker) loses the scope, as it would lose any task-local
//! value: put such layers above the one that sets the deadline, or set the
//! deadline again below them.
//!
//! [`CallOptions`]: https://docs.rs/tower-bedrock-retry/latest/tower_bedrock_retry/trait.CallOptions.html
//!
//! ```
//! use std::time::Duration;
//! use tokio::time::Instant;
//! use tower_bedrock_core::deadline::{call_deadline, with_call_deadline};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! assert_eq!(call_deadline(), None);
//! let at = Instant::now() + Duration::from_secs(3);
//! let seen = with_call_deadline(at, async {
//!     // A layer further down asks how long it may wait.
//!     call_deadline()
//! })
//! .await;
//! assert_eq!(seen, Some(at));
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

tokio::task_local! {
    static CALL_DEADLINE: Option<Instant>;
}

/// The deadline of the call this task is running, if a layer above set
/// one.
pub fn call_deadline() -> Option<Instant> {
    CALL_DEADLINE.try_with(|at| *at).ok().flatten()
}

/// Time left until [`call_deadline`], zero once it has passed; `None`
/// without a deadline.
pub fn remaining() -> Option<Duration> {
    call_deadline().map(|at| at.saturating_duration_since(Instant::now()))
}

/// The earlier of `at` and the deadline already in scope.
fn effective(at: Instant) -> Instant {
    call_deadline().map_or(at, |outer| outer.min(at))
}

/// Polls `fut` with `at` (or the earlier deadline already in scope) as the
/// call's deadline.
pub fn with_call_deadline<F: Future>(at: Instant, fut: F) -> TaskLocalFuture<Option<Instant>, F> {
    CALL_DEADLINE.scope(Some(effective(at)), fut)
}

/// Runs `call` (typically `inner.call(req)`) and polls the future it
/// returns with `at` as the call's deadline, so that layers reading the
/// deadline in `call` and in their futures both see it. With `at ==
/// None`, the deadline already in scope (if any) is kept.
pub fn call_with_deadline<F, Fut>(
    at: Option<Instant>,
    call: F,
) -> TaskLocalFuture<Option<Instant>, Fut>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let at = at.map(effective).or_else(call_deadline);
    let fut = CALL_DEADLINE.sync_scope(at, call);
    CALL_DEADLINE.scope(at, fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn inner_scopes_only_shorten() {
        let now = Instant::now();
        let outer = now + Duration::from_secs(10);
        let got = with_call_deadline(outer, async {
            let longer =
                with_call_deadline(now + Duration::from_secs(60), async { call_deadline() }).await;
            let shorter =
                with_call_deadline(now + Duration::from_secs(2), async { call_deadline() }).await;
            (longer, shorter)
        })
        .await;
        assert_eq!(got.0, Some(outer));
        assert_eq!(got.1, Some(now + Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn call_sees_the_deadline_synchronously_and_in_its_future() {
        let at = Instant::now() + Duration::from_secs(5);
        let (in_call, in_future) = call_with_deadline(Some(at), || {
            let seen = call_deadline();
            async move { (seen, call_deadline()) }
        })
        .await;
        assert_eq!(in_call, Some(at));
        assert_eq!(in_future, Some(at));
        assert_eq!(call_deadline(), None, "the scope ends with the call");
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_to_zero() {
        let at = Instant::now() + Duration::from_secs(3);
        let left = with_call_deadline(at, async {
            let first = remaining();
            tokio::time::advance(Duration::from_secs(5)).await;
            (first, remaining())
        })
        .await;
        assert_eq!(left, (Some(Duration::from_secs(3)), Some(Duration::ZERO)));
        assert_eq!(remaining(), None);
    }
}
