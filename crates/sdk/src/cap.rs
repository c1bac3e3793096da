//! A hard cap on the connections in use per host, as a tower layer below
//! the SDK.
//!
//! The SDK's hyper client pools connections but never limits how many it
//! opens: `pool_max_idle_per_host` only bounds the *idle* ones. Under a
//! burst it opens one connection per request in flight, and Bedrock answers
//! the excess with 503 "Too many connections". [`ConnectionCap`] holds one
//! semaphore permit per request in flight per host (`host:port`), from the
//! moment the request is sent until its response body is finished or
//! dropped, which is exactly when hyper can reuse or close the connection.
//! Requests over the cap wait for a permit (bounded by the SDK's attempt
//! timeout, or by [`ConnectionCapLayer::wait_timeout`]).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_bedrock_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::PoolWaitTimeout;

struct CapState {
    per_host: usize,
    wait_timeout: Option<Duration>,
    hosts: Mutex<HashMap<Box<str>, Arc<HostSlots>>>,
}

/// The slots of one host (the name is kept for errors and traces, so a
/// call allocates nothing once its host is known).
struct HostSlots {
    host: Box<str>,
    semaphore: Arc<Semaphore>,
}

impl CapState {
    fn slots(&self, host: &str) -> Arc<HostSlots> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = hosts.get(host) {
            return s.clone();
        }
        let s = Arc::new(HostSlots {
            host: host.into(),
            semaphore: Arc::new(Semaphore::new(self.per_host)),
        });
        hosts.insert(host.into(), s.clone());
        s
    }
}

/// A [`Layer`] capping the requests (hence connections) in flight per host.
/// Clones share the same permits.
///
/// The SDK's hyper client pools connections but never limits how many it
/// opens: `pool_max_idle_per_host` only bounds the *idle* ones. Under a
/// burst it opens one connection per request in flight, and Bedrock answers
/// the excess with 503 "Too many connections". [`ConnectionCap`] holds one
/// semaphore permit per request in flight per host (`host:port`), from the
/// moment the request is sent until its response body is finished or
/// dropped, which is exactly when hyper can reuse or close the connection.
/// Requests over the cap wait for a permit (bounded by the SDK's attempt
/// timeout, or by [`with_wait_timeout`](Self::with_wait_timeout)).
///
/// [`BedrockClientBuilder`](crate::BedrockClientBuilder) installs one
/// below the SDK through [`LayeredHttpClient`](crate::LayeredHttpClient).
#[derive(Clone)]
pub struct ConnectionCapLayer {
    state: Arc<CapState>,
}

impl fmt::Debug for ConnectionCapLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionCapLayer")
            .field("per_host", &self.state.per_host)
            .field("wait_timeout", &self.state.wait_timeout)
            .finish()
    }
}

impl ConnectionCapLayer {
    /// At most `per_host` requests in flight per host; `None` when
    /// `per_host` is zero.
    pub fn new(per_host: usize) -> Option<Self> {
        Self::with_wait_timeout(per_host, None)
    }

    /// Like [`new`](Self::new), failing a request that waited `timeout` for
    /// a slot with [`PoolWaitTimeout`] (a connector timeout for the SDK).
    pub fn with_wait_timeout(per_host: usize, timeout: Option<Duration>) -> Option<Self> {
        (per_host > 0).then(|| ConnectionCapLayer {
            state: Arc::new(CapState {
                per_host,
                wait_timeout: timeout,
                hosts: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The cap.
    pub fn per_host(&self) -> usize {
        self.state.per_host
    }

    /// The pool wait timeout, when set.
    pub fn wait_timeout(&self) -> Option<Duration> {
        self.state.wait_timeout
    }

    /// Requests to `host` (`host:port` as in the request URI's authority)
    /// holding a slot right now.
    pub fn in_use(&self, host: &str) -> usize {
        let hosts = self.state.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .get(host)
            .map_or(0, |s| self.state.per_host - s.semaphore.available_permits())
    }
}

impl<S> Layer<S> for ConnectionCapLayer {
    type Service = ConnectionCap<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectionCap {
            inner,
            state: self.state.clone(),
        }
    }
}

/// Caps requests in flight per host; see [`ConnectionCapLayer`].
///
/// `poll_ready` forwards the inner service's readiness; the ready inner
/// service is moved into the call's future, which waits for a slot before
/// calling it.
#[derive(Clone)]
pub struct ConnectionCap<S> {
    inner: S,
    state: Arc<CapState>,
}

impl<S> fmt::Debug for ConnectionCap<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionCap")
            .field("per_host", &self.state.per_host)
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> Service<http::Request<SdkBody>> for ConnectionCap<S>
where
    S: Service<http::Request<SdkBody>, Response = http::Response<SdkBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<SdkBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<http::Response<SdkBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<SdkBody>) -> Self::Future {
        // The ready service goes into the future; `self` keeps a fresh
        // clone that must be polled ready again before its next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let slots = self
            .state
            .slots(req.uri().authority().map_or("", |a| a.as_str()));
        let wait_timeout = self.state.wait_timeout;
        Box::pin(async move {
            let permit = match slots.semaphore.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    tracing::debug!(
                        target: "tower_bedrock::sdk",
                        host = %slots.host,
                        "connection cap reached; waiting for a slot"
                    );
                    let acquire = slots.semaphore.clone().acquire_owned();
                    let acquired = match wait_timeout {
                        Some(t) => tokio::time::timeout(t, acquire)
                            .await
                            .map_err(|_| PoolWaitTimeout::new(t, &slots.host))?,
                        None => acquire.await,
                    };
                    // The semaphore is never closed.
                    acquired.map_err(|e| -> BoxError { Box::new(e) })?
                }
            };
            let resp = inner.call(req).await.map_err(Into::into)?;
            Ok(resp.map(|body| {
                SdkBody::from_body_1_x(PermitBody {
                    inner: body,
                    permit: Some(permit),
                })
            }))
        })
    }
}

/// A response body holding its connection slot until it ends or is dropped.
struct PermitBody {
    inner: SdkBody,
    permit: Option<OwnedSemaphorePermit>,
}

impl Body for PermitBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // `SdkBody` is `Unpin`.
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.permit = None,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.permit = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_cap_is_refused() {
        assert!(ConnectionCapLayer::new(0).is_none());
        assert_eq!(ConnectionCapLayer::new(3).unwrap().per_host(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn holds_slots_until_the_body_ends_and_times_out_waiters() {
        use std::convert::Infallible;
        #[derive(Clone)]
        struct Echo;
        impl Service<http::Request<SdkBody>> for Echo {
            type Response = http::Response<SdkBody>;
            type Error = Infallible;
            type Future = std::future::Ready<Result<Self::Response, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: http::Request<SdkBody>) -> Self::Future {
                std::future::ready(Ok(http::Response::new(SdkBody::from("abc"))))
            }
        }
        let layer =
            ConnectionCapLayer::with_wait_timeout(1, Some(Duration::from_millis(100))).unwrap();
        let mut svc = layer.layer(Echo);
        let req = || {
            http::Request::builder()
                .uri("http://h:1/x")
                .body(SdkBody::empty())
                .unwrap()
        };
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let first = svc.call(req()).await.unwrap();
        assert_eq!(layer.in_use("h:1"), 1);
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let err = svc.call(req()).await.unwrap_err();
        let err = err.downcast::<PoolWaitTimeout>().unwrap();
        assert_eq!(err.waited, Duration::from_millis(100));
        assert_eq!(err.host(), "h:1");
        // Reading the body to its end frees the slot.
        let mut body = first.into_body();
        let mut got = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            got.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        assert_eq!(got, b"abc");
        assert_eq!(layer.in_use("h:1"), 0);
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let second = svc.call(req()).await.unwrap();
        assert_eq!(layer.in_use("h:1"), 1);
        // Dropping an unread body frees it too.
        drop(second);
        assert_eq!(layer.in_use("h:1"), 0);
        assert_eq!(layer.in_use("other:1"), 0);
    }
}
