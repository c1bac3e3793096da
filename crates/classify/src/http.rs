//! Classification of raw HTTP answers, for services that speak Bedrock's
//! wire protocol without the SDK (proxies, gateways, layers below the SDK).

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_bedrock_core::{Classification, ClassifiedError, ErrorClass, UnavailableKind};
use tower_layer::Layer;
use tower_service::Service;

use crate::classifier::{FromHttpPath, ModelOf};
use crate::headers::{
    ERROR_TYPE_HEADER, REQUEST_ID_HEADER, parse_retry_after, sanitize_request_id,
};
use crate::{ModelName, classify_parts};

/// Classifies an HTTP response: `None` for a success (status below 400),
/// otherwise the class from the status and the `x-amzn-ErrorType` header,
/// with the request id and `Retry-After` hint. The body is not read, so
/// throttle kinds that only the message tells apart come out as
/// `Throttled(Unspecified)`; use [`classify_http_parts`] when the message
/// is at hand.
pub fn classify_http_response<B>(response: &http::Response<B>) -> Option<Classification> {
    classify_http_parts(response.status(), response.headers(), None)
}

/// Like [`classify_http_response`], with the error message (from the JSON
/// body's `message` field) when the caller has read it.
pub fn classify_http_parts(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    message: Option<&str>,
) -> Option<Classification> {
    if status.as_u16() < 400 {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut c = classify_parts(Some(status.as_u16()), header(ERROR_TYPE_HEADER), message);
    c.request_id = header(REQUEST_ID_HEADER).and_then(sanitize_request_id);
    c.retry_after = header("retry-after").and_then(parse_retry_after);
    Some(c)
}

/// The inner error of [`ClassifyHttp`]: an error status answered by the
/// server (the whole response is kept) or a transport error.
pub enum HttpError<E, B> {
    /// The server answered with an error status.
    Status(http::Response<B>),
    /// The inner service failed without an answer.
    Transport(E),
}

impl<E: fmt::Display, B> fmt::Display for HttpError<E, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Status(r) => write!(f, "HTTP {}", r.status().as_u16()),
            HttpError::Transport(e) => write!(f, "transport error: {e}"),
        }
    }
}

impl<E: fmt::Debug, B> fmt::Debug for HttpError<E, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Status(r) => f.debug_tuple("Status").field(&r.status()).finish(),
            HttpError::Transport(e) => f.debug_tuple("Transport").field(e).finish(),
        }
    }
}

impl<E: Error + 'static, B> Error for HttpError<E, B> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            HttpError::Status(_) => None,
            HttpError::Transport(e) => Some(e),
        }
    }
}

/// A layer that makes an HTTP service's error statuses into classified
/// errors: [`ClassifyHttp`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassifyHttpLayer<M = FromHttpPath> {
    model_of: M,
}

impl ClassifyHttpLayer {
    /// The layer, naming models from Bedrock Runtime request paths.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<M> ClassifyHttpLayer<M> {
    /// Uses another way of naming a request's model.
    pub fn model_of<M2>(self, model_of: M2) -> ClassifyHttpLayer<M2> {
        ClassifyHttpLayer { model_of }
    }
}

impl<S, M: Clone> Layer<S> for ClassifyHttpLayer<M> {
    type Service = ClassifyHttp<S, M>;
    fn layer(&self, inner: S) -> Self::Service {
        ClassifyHttp {
            inner,
            model_of: self.model_of.clone(),
        }
    }
}

/// Turns responses with a status of 400 or more into
/// `ClassifiedError<HttpError::Status(response)>` (the response is kept
/// whole, nothing is lost) and transport errors into
/// `Unavailable(Network)`; successes pass untouched. Records the same
/// events and metrics as [`ThrottleClassify`](crate::ThrottleClassify).
#[derive(Debug, Clone)]
pub struct ClassifyHttp<S, M = FromHttpPath> {
    inner: S,
    model_of: M,
}

impl<S, M, Req, B> Service<Req> for ClassifyHttp<S, M>
where
    S: Service<Req, Response = http::Response<B>>,
    M: ModelOf<Req>,
{
    type Response = http::Response<B>;
    type Error = ClassifiedError<HttpError<S::Error, B>>;
    type Future = HttpFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(transport(e, &ModelName::EMPTY))),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let model = self.model_of.model_of(&req);
        HttpFuture {
            inner: self.inner.call(req),
            model,
        }
    }
}

fn transport<E, B>(e: E, model: &ModelName) -> ClassifiedError<HttpError<E, B>> {
    let c = Classification::new(ErrorClass::Unavailable(UnavailableKind::Network))
        .with_code("TransportError");
    crate::future::record(&c, model);
    ClassifiedError::new(HttpError::Transport(e), c)
}

pin_project! {
    /// The response future of [`ClassifyHttp`].
    #[derive(Debug)]
    pub struct HttpFuture<F> {
        #[pin]
        inner: F,
        model: ModelName,
    }
}

impl<F, B, E> Future for HttpFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, ClassifiedError<HttpError<E, B>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(response) => match classify_http_response(&response) {
                None => Poll::Ready(Ok(response)),
                Some(c) => {
                    crate::future::record(&c, this.model);
                    Poll::Ready(Err(ClassifiedError::new(HttpError::Status(response), c)))
                }
            },
            Err(e) => Poll::Ready(Err(transport(e, this.model))),
        }
    }
}
