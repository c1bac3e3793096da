//! The HTTP-level adapter: tower services as the SDK's HTTP client.
//!
//! The SDK sends every request through an `HttpClient` / `HttpConnector`
//! pair. This module bridges both ways:
//!
//! - [`ConnectorService`] turns an SDK connector (the default hyper client,
//!   with its connect and read timeouts) into a tower
//!   `Service<http::Request<SdkBody>>`;
//! - [`ServiceConnector`] turns any such tower service back into an SDK
//!   `HttpConnector`;
//! - [`LayeredHttpClient`] combines both: the SDK's own HTTP client with a
//!   tower [`Layer`] in between, so layers (the
//!   [`ConnectionCapLayer`](crate::ConnectionCapLayer), a classifier over raw
//!   responses, a metrics layer...) run below the SDK, on every HTTP attempt;
//! - [`service_http_client`] uses a bare tower service as the SDK's HTTP
//!   client (tests, custom transports).
//!
//! Errors of the tower service become SDK `ConnectorError`s: a
//! `ConnectorError` is passed through unchanged, a [`PoolWaitTimeout`] or a
//! `tokio` timeout becomes a *timeout* connector error, an `std::io::Error`
//! an *io* error, anything else an *other* error; the original error is
//! kept as the source.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use tower_bedrock_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::PoolWaitTimeout;

/// An SDK `HttpConnector` as a tower service.
///
/// Always ready; each call converts the request to the SDK's form, runs the
/// connector and converts the response back.
#[derive(Clone, Debug)]
pub struct ConnectorService {
    connector: SharedHttpConnector,
}

impl ConnectorService {
    /// Wraps a connector.
    pub fn new(connector: SharedHttpConnector) -> Self {
        ConnectorService { connector }
    }
}

impl Service<http::Request<SdkBody>> for ConnectorService {
    type Response = http::Response<SdkBody>;
    type Error = ConnectorError;
    type Future = ConnectorServiceFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<SdkBody>) -> Self::Future {
        match HttpRequest::try_from(req) {
            Ok(req) => ConnectorServiceFuture {
                state: FutState::Running(self.connector.call(req)),
            },
            Err(e) => ConnectorServiceFuture {
                state: FutState::Failed(Some(ConnectorError::user(e.into()))),
            },
        }
    }
}

/// The future of [`ConnectorService`].
pub struct ConnectorServiceFuture {
    state: FutState,
}

enum FutState {
    Running(HttpConnectorFuture),
    Failed(Option<ConnectorError>),
}

impl fmt::Debug for ConnectorServiceFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorServiceFuture")
            .finish_non_exhaustive()
    }
}

impl Future for ConnectorServiceFuture {
    type Output = Result<http::Response<SdkBody>, ConnectorError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the SDK's future is boxed).
        let this = self.get_mut();
        match &mut this.state {
            FutState::Running(fut) => match Pin::new(fut).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(resp)) => Poll::Ready(
                    resp.try_into_http1x()
                        .map_err(|e| ConnectorError::other(e.into(), None)),
                ),
            },
            FutState::Failed(e) => Poll::Ready(Err(e.take().unwrap_or_else(|| {
                ConnectorError::other(
                    "ConnectorServiceFuture polled after completion".into(),
                    None,
                )
            }))),
        }
    }
}

/// A tower service as an SDK `HttpConnector`.
///
/// Each SDK attempt clones the service (under a short lock, never held
/// across an await), waits for its readiness and calls it.
pub struct ServiceConnector<S> {
    service: Mutex<S>,
}

impl<S> ServiceConnector<S> {
    /// Wraps a service.
    pub fn new(service: S) -> Self {
        ServiceConnector {
            service: Mutex::new(service),
        }
    }
}

impl<S> fmt::Debug for ServiceConnector<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConnector")
            .field("service", &std::any::type_name::<S>())
            .finish()
    }
}

impl<S> HttpConnector for ServiceConnector<S>
where
    S: Service<http::Request<SdkBody>, Response = http::Response<SdkBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut svc = self
            .service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        HttpConnectorFuture::new(async move {
            let req = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(into_connector_error)?;
            let resp = svc.call(req).await.map_err(into_connector_error)?;
            HttpResponse::try_from(resp).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Converts a tower error into the SDK's connector error, keeping the kind
/// where it can be told (see the [module docs](self)).
pub fn into_connector_error(error: impl Into<BoxError>) -> ConnectorError {
    let error: BoxError = error.into();
    let error = match error.downcast::<ConnectorError>() {
        Ok(e) => return *e,
        Err(e) => e,
    };
    if error.is::<PoolWaitTimeout>() || error.is::<tokio::time::error::Elapsed>() {
        ConnectorError::timeout(error)
    } else if error.is::<std::io::Error>() {
        ConnectorError::io(error)
    } else {
        ConnectorError::other(error, None)
    }
}

/// Uses a tower service as the SDK's HTTP client.
///
/// The SDK's connect and read timeout settings are not applied: the service
/// is the transport and decides itself (the SDK's operation and attempt
/// timeouts still apply around it). Use [`LayeredHttpClient`] to keep the
/// SDK's own transport under your layers.
pub fn service_http_client<S>(service: S) -> SharedHttpClient
where
    S: Service<http::Request<SdkBody>, Response = http::Response<SdkBody>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    http_client_fn(move |_settings, _components| {
        SharedHttpConnector::new(ServiceConnector::new(service.clone()))
    })
}

/// The SDK's HTTP client with a tower [`Layer`] between the SDK and the
/// transport.
///
/// When the SDK asks for a connector (once per distinct set of connect /
/// read timeout settings), the base client's connector is wrapped in a
/// [`ConnectorService`], the layer applied and the result turned back into
/// a connector with [`ServiceConnector`]. Every HTTP attempt of every
/// operation then passes through the layer.
pub struct LayeredHttpClient<L> {
    base: SharedHttpClient,
    layer: Arc<L>,
}

impl<L> LayeredHttpClient<L> {
    /// Puts `layer` above the connectors of `base`.
    pub fn new(base: SharedHttpClient, layer: L) -> Self {
        LayeredHttpClient {
            base,
            layer: Arc::new(layer),
        }
    }
}

impl<L> Clone for LayeredHttpClient<L> {
    fn clone(&self) -> Self {
        LayeredHttpClient {
            base: self.base.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<L> fmt::Debug for LayeredHttpClient<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayeredHttpClient")
            .field("base", &self.base)
            .field("layer", &std::any::type_name::<L>())
            .finish()
    }
}

impl<L> HttpClient for LayeredHttpClient<L>
where
    L: Layer<ConnectorService> + Send + Sync + 'static,
    L::Service: Service<http::Request<SdkBody>, Response = http::Response<SdkBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as Service<http::Request<SdkBody>>>::Error: Into<BoxError>,
    <L::Service as Service<http::Request<SdkBody>>>::Future: Send + 'static,
{
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let base = self.base.http_connector(settings, components);
        let svc = self.layer.layer(ConnectorService::new(base));
        SharedHttpConnector::new(ServiceConnector::new(svc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(into_connector_error(io).is_io());
        let t = PoolWaitTimeout::new(std::time::Duration::from_secs(1), "h");
        assert!(into_connector_error(t).is_timeout());
        let c = ConnectorError::user("bad".into());
        assert!(into_connector_error(c).is_user());
        let other: BoxError = "weird".into();
        let e = into_connector_error(other);
        assert!(!e.is_io() && !e.is_timeout() && !e.is_user());
        assert_eq!(e.to_string(), "other");
    }
}
