//! Streaming responses: fall back only before the first event.
//!
//! A streaming call (ConverseStream, InvokeModelWithResponseStream) returns
//! its response as soon as the headers arrive; the model's failure may come
//! later, as the stream's first item (an in-stream `throttlingException`,
//! `modelStreamErrorException`, `serviceUnavailableException`, ...). In
//! [`Streaming`](crate::Streaming) mode the fallback layer therefore waits
//! for the first event before it returns the response:
//!
//! - the stream fails **before its first event**: the failure is classified
//!   like a call's error and, if its class is a trigger, the next target is
//!   tried; the caller never sees the failed stream;
//! - the first event arrives: the response is returned with that event
//!   buffered, and from then on the layer is out of the way. A failure
//!   **after the first event does not fall back**: part of an answer has
//!   been delivered (or is about to be), and splicing another model's
//!   answer behind it would hand the caller a text no model wrote. The
//!   caller sees the in-stream error;
//! - the stream ends without any event: returned as a (successful, empty)
//!   response.
//!
//! Response types opt in by implementing [`FirstEvent`]. [`Primed`] does it
//! for any `Stream` of `Result`s.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

/// A streaming response that can wait for its first event before being
/// handed to the caller.
pub trait FirstEvent {
    /// The error a stream fails with before its first event. The layer
    /// converts it into the service's error (`Into<S::Error>`) to classify
    /// and, if no fallback applies, return it.
    type Error;

    /// Drives the stream until its first event is buffered inside the
    /// response (`Ready(Ok(()))`, the event is then delivered first by the
    /// response's own interface), the stream ends without an event
    /// (`Ready(Ok(()))`), or it fails before any event (`Ready(Err(e))`).
    ///
    /// Called until it returns `Ready`, never after. A `Pending` must have
    /// registered the waker of `cx`.
    fn poll_first_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;
}

impl<T: FirstEvent + ?Sized> FirstEvent for Box<T> {
    type Error = T::Error;
    fn poll_first_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        (**self).poll_first_event(cx)
    }
}

/// A `Stream` of `Result`s that implements [`FirstEvent`] by buffering its
/// first item, and replays it as its first item.
///
/// The stream must be `Unpin` (wrap it in `Box::pin` otherwise).
///
/// ```
/// use std::task::{Context, Poll};
/// use futures_core::Stream;
/// use tower_bedrock_fallback::stream::{FirstEvent, Primed};
/// # struct Iter(std::vec::IntoIter<Result<u32, String>>);
/// # impl Stream for Iter {
/// #     type Item = Result<u32, String>;
/// #     fn poll_next(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
/// #         Poll::Ready(self.0.next())
/// #     }
/// # }
/// let mut cx = Context::from_waker(std::task::Waker::noop());
/// let mut ok = Primed::new(Iter(vec![Ok(1), Ok(2)].into_iter()));
/// assert_eq!(ok.poll_first_event(&mut cx), Poll::Ready(Ok(())));
/// assert_eq!(std::pin::Pin::new(&mut ok).poll_next(&mut cx), Poll::Ready(Some(Ok(1))));
///
/// let mut failing = Primed::new(Iter(vec![Err("throttled".to_string())].into_iter()));
/// assert_eq!(failing.poll_first_event(&mut cx), Poll::Ready(Err("throttled".to_string())));
/// ```
#[derive(Debug)]
pub struct Primed<St: Stream> {
    stream: St,
    first: Option<St::Item>,
    ended: bool,
}

impl<St: Stream> Primed<St> {
    /// Wraps a stream.
    pub fn new(stream: St) -> Self {
        Primed {
            stream,
            first: None,
            ended: false,
        }
    }

    /// The wrapped stream. An item buffered by
    /// [`poll_first_event`](FirstEvent::poll_first_event) is lost.
    pub fn into_inner(self) -> St {
        self.stream
    }
}

impl<St, T, E> FirstEvent for Primed<St>
where
    St: Stream<Item = Result<T, E>> + Unpin,
{
    type Error = E;

    fn poll_first_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        if self.first.is_some() || self.ended {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.stream).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Some(Err(e))) => {
                self.ended = true;
                Poll::Ready(Err(e))
            }
            Poll::Ready(Some(Ok(item))) => {
                self.first = Some(Ok(item));
                Poll::Ready(Ok(()))
            }
        }
    }
}

// The buffered item is never pinned: only the stream is, and it is `Unpin`.
impl<St: Stream + Unpin> Unpin for Primed<St> {}

impl<St: Stream + Unpin> Stream for Primed<St> {
    type Item = St::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<St::Item>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(first));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let next = Pin::new(&mut this.stream).poll_next(cx);
        if let Poll::Ready(None) = next {
            this.ended = true;
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let extra = usize::from(self.first.is_some());
        if self.ended {
            return (extra, Some(extra));
        }
        let (lo, hi) = self.stream.size_hint();
        (
            lo.saturating_add(extra),
            hi.and_then(|h| h.checked_add(extra)),
        )
    }
}
