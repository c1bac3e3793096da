use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_bedrock_core::{Classified, LocalRejection, Rejection};
use tower_service::Service;

use crate::budget::RetryBudget;
use crate::future::{ResponseFuture, Retrying};
use crate::layer::Shared;
use crate::options::{CallOptions, NoCallOptions};

/// Retries failed calls per their class, aligned with the quota window,
/// under a shared retry budget and a deadline.
///
/// Made by [`QuotaAlignedRetryLayer`](crate::QuotaAlignedRetryLayer). The
/// inner service is cloned for each call (the clone made ready by
/// `poll_ready` serves the first attempt) and `poll_ready` is called on it
/// again before every retry. Clones share the layer's retry budget.
#[derive(Clone)]
pub struct QuotaAlignedRetry<S, O = NoCallOptions> {
    inner: S,
    shared: Arc<Shared>,
    options: O,
}

impl<S, O> QuotaAlignedRetry<S, O> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, options: O) -> Self {
        QuotaAlignedRetry {
            inner,
            shared,
            options,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The retry budget this service shares with its clones and its layer.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.shared.budget
    }
}

impl<S: fmt::Debug, O> fmt::Debug for QuotaAlignedRetry<S, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaAlignedRetry")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, O, Req, E> Service<Req> for QuotaAlignedRetry<S, O>
where
    S: Service<Req, Error = E> + Clone,
    Req: Clone,
    E: Classified + From<Rejection>,
    O: CallOptions<Req>,
{
    type Response = S::Response;
    type Error = E;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let per_call = self.options.per_call(&req);
        let deadline = per_call.deadline.or(self.shared.deadline);
        // The service made ready by `poll_ready` serves the first attempt
        // and is kept (and made ready again) for the retries.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let retry = Retrying::new(self.shared.clone(), per_call.report, deadline);
        if deadline == Some(Duration::ZERO) {
            let refused = E::from(Rejection::new(LocalRejection::DeadlineExceeded));
            return ResponseFuture::refused(service, req, retry, refused);
        }
        ResponseFuture::first_attempt(service, req, retry)
    }
}
