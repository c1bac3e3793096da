//! The service.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_bedrock_core::{Classified, ModelRequest};
use tower_service::Service;

use crate::future::{Attempts, ResponseFuture, call_within};
use crate::layer::Routes;
use crate::mode::{ResponseMode, Unary};

/// The service of [`ModelFallbackLayer`](crate::ModelFallbackLayer): tries
/// a chain of targets in order. See the [crate docs](crate).
///
/// Clones share the configuration and the open-circuit memo.
pub struct ModelFallback<S, Req, M = Unary> {
    inner: S,
    routes: Arc<Routes<Req>>,
    _mode: PhantomData<fn() -> M>,
}

impl<S, Req, M> ModelFallback<S, Req, M> {
    pub(crate) fn from_parts(inner: S, routes: Arc<Routes<Req>>) -> Self {
        ModelFallback {
            inner,
            routes,
            _mode: PhantomData,
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

    /// Consumes the layer's service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, Req, M> Clone for ModelFallback<S, Req, M> {
    fn clone(&self) -> Self {
        ModelFallback {
            inner: self.inner.clone(),
            routes: self.routes.clone(),
            _mode: PhantomData,
        }
    }
}

impl<S: fmt::Debug, Req, M> fmt::Debug for ModelFallback<S, Req, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFallback")
            .field("inner", &self.inner)
            .field("routes", &self.routes)
            .finish()
    }
}

impl<S, Req, M> Service<Req> for ModelFallback<S, Req, M>
where
    S: Service<Req> + Clone,
    S::Error: Classified,
    Req: ModelRequest + Clone,
    M: ResponseMode<S::Response, S::Error>,
{
    type Response = M::Output;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(chain) = self.routes.find(req.model_id()) else {
            // No chain for this model: one call, unchanged.
            return ResponseFuture::new(
                call_within(&mut self.inner, req, None),
                Attempts::passthrough(),
            );
        };
        let (mut attempts, first) = Attempts::start(self.routes.clone(), chain, req);
        if attempts.has_more() {
            // Keep a clone for the later targets; the service that was
            // polled ready takes this call.
            let clone = self.inner.clone();
            let mut ready = std::mem::replace(&mut self.inner, clone);
            let fut = call_within(&mut ready, first, attempts.deadline());
            attempts.keep_service(ready);
            ResponseFuture::new(fut, attempts)
        } else {
            let fut = call_within(&mut self.inner, first, attempts.deadline());
            ResponseFuture::new(fut, attempts)
        }
    }
}
