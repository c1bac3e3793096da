//! Response modes: when a response counts as served.

use std::task::{Context, Poll};

use crate::stream::FirstEvent;

/// Decides when a response counts as served, so that failures before that
/// point fall back like errors of the call.
///
/// Implemented by [`Unary`] (a response is served when the call returns
/// it) and [`Streaming`] (a streaming response is served once its first
/// event arrived).
pub trait ResponseMode<R, E> {
    /// Polls `resp` until it counts as served (`Ready(Ok(()))`) or failed
    /// (`Ready(Err(e))`, classified like an error of the call).
    fn poll_served(resp: &mut R, cx: &mut Context<'_>) -> Poll<Result<(), E>>;
}

/// Plain calls: a response is served when the inner call returns it. The
/// default mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unary;

/// Streaming calls: a response is served once its first event arrived; a
/// stream that fails before it falls back. See [`stream`](crate::stream).
#[derive(Debug, Clone, Copy, Default)]
pub struct Streaming;

impl<R, E> ResponseMode<R, E> for Unary {
    #[inline(always)]
    fn poll_served(_: &mut R, _: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }
}

impl<R, E> ResponseMode<R, E> for Streaming
where
    R: FirstEvent,
    R::Error: Into<E>,
{
    fn poll_served(resp: &mut R, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        resp.poll_first_event(cx).map_err(Into::into)
    }
}
