//! The response future of [`ThrottleClassify`](crate::ThrottleClassify).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_bedrock_core::{ClassifiedError, ErrorClass, names};

use crate::ModelName;
use crate::classifier::Classifier;

pin_project! {
    /// Resolves to the inner response, or to the inner error wrapped in a
    /// [`ClassifiedError`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: F,
        classifier: C,
        model: ModelName,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(inner: F, classifier: C, model: ModelName) -> Self {
        ResponseFuture {
            inner,
            classifier,
            model,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classifier<E>,
{
    type Output = Result<T, ClassifiedError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(response) => Poll::Ready(Ok(response)),
            Err(e) => Poll::Ready(Err(classify_and_record(this.classifier, e, this.model))),
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// Classifies `error`, emits the tracing event and the metrics, wraps it.
pub(crate) fn classify_and_record<C, E>(
    classifier: &C,
    error: E,
    model: &ModelName,
) -> ClassifiedError<E>
where
    C: Classifier<E>,
{
    let c = classifier.classify(&error);
    record(&c, model);
    classifier.wrap(error, c)
}

/// Emits the event and metrics for one classified failure. Only the model
/// id, the code, the class, the status and the request id are recorded.
pub(crate) fn record(c: &tower_bedrock_core::Classification, model: &ModelName) {
    let class = c.class.label();
    let kind = c.class.kind_label();
    let code = c.code().unwrap_or("");
    let request_id = c.request_id.as_deref().unwrap_or("");
    let status = c.status.unwrap_or(0);
    match c.class {
        ErrorClass::Client(_) | ErrorClass::Local(_) => tracing::debug!(
            target: "tower_bedrock::classify",
            model = model.as_str(), code, class, kind, status, request_id,
            "bedrock call failed"
        ),
        _ => tracing::warn!(
            target: "tower_bedrock::classify",
            model = model.as_str(), code, class, kind, status, request_id,
            "bedrock call failed"
        ),
    }
    metrics::counter!(
        names::INVOCATION_ERRORS,
        "class" => class,
        "kind" => kind,
        "model" => tower_bedrock_core::labels::model_label(model.as_str()),
        "code" => tower_bedrock_core::labels::code_label(c),
    )
    .increment(1);
    if c.class.is_throttle() {
        metrics::counter!(
            names::INVOCATION_THROTTLES,
            "kind" => kind,
            "model" => tower_bedrock_core::labels::model_label(model.as_str()),
        )
        .increment(1);
    }
}
