//! Response modes: when a response counts as served, and what the caller
//! receives.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_bedrock_core::Tried;

use crate::stream::FirstEvent;

/// Decides when a response counts as served (so that failures before that
/// point fall back like errors of the call) and what the caller receives.
///
/// Implemented by [`Unary`] (a response is served when the call returns
/// it), [`Streaming`] (a streaming response is served once its first event
/// arrived) and [`Tagged`] (either of those, with the response wrapped in
/// [`Served`]).
pub trait ResponseMode<R, E> {
    /// What the caller receives.
    type Output;

    /// Polls `resp` until it counts as served (`Ready(Ok(()))`) or failed
    /// (`Ready(Err(e))`, classified like an error of the call).
    fn poll_served(resp: &mut R, cx: &mut Context<'_>) -> Poll<Result<(), E>>;

    /// Builds what the caller receives from a served response, the target
    /// that served it (`None` when the request matched no chain and passed
    /// through) and the targets tried and failed before it.
    fn output(resp: R, served_by: Option<&Arc<str>>, tried: Vec<Tried>) -> Self::Output;
}

/// Plain calls: a response is served when the inner call returns it, and
/// is returned unchanged. The default mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unary;

/// Streaming calls: a response is served once its first event arrived; a
/// stream that fails before it falls back. See [`stream`](crate::stream).
/// The response is returned unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streaming;

/// Mode `M`, with every response wrapped in [`Served`]: for callers who
/// would rather read the served target from the response than attach a
/// [`CallReport`](tower_bedrock_core::CallReport) to their requests. See
/// [`ModelFallbackLayer::tagged`](crate::ModelFallbackLayer::tagged).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tagged<M = Unary>(M);

/// A response with the target that served it and the targets tried before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served<R> {
    /// The response.
    pub response: R,
    /// The model or profile id that served it; `None` when the request
    /// matched no chain and was passed through unchanged.
    pub served_by: Option<Arc<str>>,
    /// The targets tried and failed before, in order, with their classes.
    pub tried: Vec<Tried>,
}

impl<R> Served<R> {
    /// Whether a fallback target served the response.
    pub fn degraded(&self) -> bool {
        !self.tried.is_empty()
    }

    /// The response alone.
    pub fn into_inner(self) -> R {
        self.response
    }
}

impl<R, E> ResponseMode<R, E> for Unary {
    type Output = R;

    #[inline(always)]
    fn poll_served(_: &mut R, _: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    #[inline(always)]
    fn output(resp: R, _: Option<&Arc<str>>, _: Vec<Tried>) -> R {
        resp
    }
}

impl<R, E> ResponseMode<R, E> for Streaming
where
    R: FirstEvent,
    R::Error: Into<E>,
{
    type Output = R;

    fn poll_served(resp: &mut R, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        resp.poll_first_event(cx).map_err(Into::into)
    }

    #[inline(always)]
    fn output(resp: R, _: Option<&Arc<str>>, _: Vec<Tried>) -> R {
        resp
    }
}

impl<R, E, M> ResponseMode<R, E> for Tagged<M>
where
    M: ResponseMode<R, E>,
{
    type Output = Served<R>;

    fn poll_served(resp: &mut R, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        M::poll_served(resp, cx)
    }

    fn output(resp: R, served_by: Option<&Arc<str>>, tried: Vec<Tried>) -> Served<R> {
        Served {
            response: resp,
            served_by: served_by.cloned(),
            tried,
        }
    }
}
