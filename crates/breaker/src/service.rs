//! The service.

use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tower_bedrock_core::sent::watch_sent;
use tower_bedrock_core::stream_end;
use tower_bedrock_core::{Classified, LocalRejection, Rejection, names};
use tower_service::Service;

use crate::breaker::{Breaker, Permit};
use crate::future::ResponseFuture;
use crate::handle::CircuitBreakHandle;
use crate::key::{KeyExtractor, ModelIdKey};
use crate::registry::Registry;

/// Fails fast while the breaker of a request's key is open.
///
/// - `poll_ready` is the inner service's.
/// - `call` finds the key's breaker (creating it on first use). Closed: the
///   call goes to the inner service and its outcome is counted. Open, or
///   half-open with every probe slot taken: the call returns at once with
///   `S::Error::from(Rejection)` of kind [`LocalRejection::CircuitOpen`],
///   carrying the key and a retry hint, and the inner service is not
///   touched. The hint is the time until the breaker lets probes through
///   (open), the configured busy hint (half-open, slots taken), or absent
///   (forced open by an operator).
///
/// Clones share the breakers.
#[derive(Debug, Clone)]
pub struct CircuitBreak<S, K = ModelIdKey> {
    inner: S,
    key: K,
    registry: Arc<Registry>,
    /// The breaker of the previous call: a service that keeps calling the
    /// same model skips the map lookup. Weak, so it neither keeps a dropped
    /// breaker alive nor counts as a call in flight.
    last: Weak<Breaker>,
}

impl<S, K> CircuitBreak<S, K> {
    pub(crate) fn from_parts(inner: S, key: K, registry: Arc<Registry>) -> Self {
        CircuitBreak {
            inner,
            key,
            registry,
            last: Weak::new(),
        }
    }

    /// A handle on the breakers this service shares with its layer.
    pub fn handle(&self) -> CircuitBreakHandle {
        CircuitBreakHandle::new(Arc::clone(&self.registry))
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, K, Req> Service<Req> for CircuitBreak<S, K>
where
    S: Service<Req>,
    S::Error: Classified + From<Rejection>,
    K: KeyExtractor<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let registry = &self.registry;
        let last = &mut self.last;
        let key = self.key.key(&req);
        let admission = (|key: &str| {
            let breaker = match last.upgrade() {
                Some(b) if *b.key == *key && !b.is_evicted() => b,
                _ => match registry.get(key) {
                    Some(b) => {
                        *last = Arc::downgrade(&b);
                        b
                    }
                    None => return Ok(None),
                },
            };
            match breaker.try_acquire() {
                Ok(permit) => Ok(Some(permit)),
                Err(refusal) => Err((breaker, refusal)),
            }
        })(&key);
        drop(key);
        match admission {
            Ok(permit) => {
                // Timed calls count from when the layers below send them on
                // (after a budget's queue), see `tower_bedrock_core::sent`.
                let sent = permit.as_ref().and_then(Permit::sent_watch);
                let inner = &mut self.inner;
                let future = stream_end::watch_call(|| watch_sent(sent, || inner.call(req)));
                ResponseFuture::admitted(future, permit)
            }
            Err((breaker, refusal)) => {
                metrics::counter!(names::CIRCUIT_REJECTED, "model" => breaker.label.clone())
                    .increment(1);
                tracing::debug!(
                    model = %breaker.key,
                    retry_after = ?refusal.retry_after,
                    "call rejected: circuit breaker open"
                );
                let mut rejection =
                    Rejection::new(LocalRejection::CircuitOpen).with_key(&*breaker.key);
                if let Some(after) = refusal.retry_after {
                    rejection = rejection.with_retry_after(after);
                }
                ResponseFuture::rejected(S::Error::from(rejection))
            }
        }
    }
}
