//! The response future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower_bedrock_core::Classified;
use tower_bedrock_core::sent::SentAt;
use tower_bedrock_core::stream_end::{Watched, take_outcome};

use crate::breaker::Permit;

pin_project! {
    /// The future of [`CircuitBreak`](crate::CircuitBreak): the inner call,
    /// whose outcome is reported to the breaker when it completes, or a
    /// rejection ready at once.
    ///
    /// Dropping it before completion reports nothing and frees the
    /// half-open probe slot it may hold. A response that is a stream
    /// reporting its end is recorded when the stream ends (see
    /// [`stream`](crate::stream)).
    #[derive(Debug)]
    pub struct ResponseFuture<F, E> {
        #[pin]
        kind: Kind<F, E>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, E> {
        Admitted {
            #[pin]
            future: Watched<Sent<F>>,
            permit: Option<Permit>,
        },
        Rejected {
            error: Option<E>,
        },
    }
}

/// The inner call, polled where the layers below can mark when they sent
/// it on (see `tower_bedrock_core::sent`).
type Sent<F> = TaskLocalFuture<Option<Arc<SentAt>>, F>;

impl<F, E> ResponseFuture<F, E> {
    pub(crate) fn admitted(future: Watched<Sent<F>>, permit: Option<Permit>) -> Self {
        ResponseFuture {
            kind: Kind::Admitted { future, permit },
        }
    }

    pub(crate) fn rejected(error: E) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<T, E>>,
    E: Classified,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { mut future, permit } => {
                let output = ready!(future.as_mut().poll(cx));
                let stream = take_outcome(future);
                if let Some(permit) = permit.take() {
                    match (&output, stream) {
                        (Ok(_), Some(stream)) => crate::stream::finish_at_end(permit, &stream),
                        _ => permit.finish(output.as_ref().err().map(|e| e.classification())),
                    }
                }
                Poll::Ready(output)
            }
            KindProj::Rejected { error } => match error.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => panic!("CircuitBreak ResponseFuture polled after completion"),
            },
        }
    }
}
