use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::classifier::{BedrockClassifier, Classifier, FromModelRequest, ModelOf};
use crate::future::ResponseFuture;

/// A [`Layer`] that wraps services in [`ThrottleClassify`].
///
/// `C` classifies the inner errors ([`BedrockClassifier`] by default), `M`
/// names the model of each request for traces and metrics
/// ([`FromModelRequest`] by default).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThrottleClassifyLayer<C = BedrockClassifier, M = FromModelRequest> {
    classifier: C,
    model_of: M,
}

impl ThrottleClassifyLayer {
    /// The layer for `aws-sdk-bedrockruntime` errors, naming models through
    /// `ModelRequest`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C, M> ThrottleClassifyLayer<C, M> {
    /// Uses another classifier (any `Fn(&E) -> Classification` works).
    pub fn classifier<C2>(self, classifier: C2) -> ThrottleClassifyLayer<C2, M> {
        ThrottleClassifyLayer {
            classifier,
            model_of: self.model_of,
        }
    }

    /// Uses another way of naming a request's model
    /// ([`FromHttpPath`](crate::FromHttpPath), [`NoModel`](crate::NoModel),
    /// or your own [`ModelOf`]).
    pub fn model_of<M2>(self, model_of: M2) -> ThrottleClassifyLayer<C, M2> {
        ThrottleClassifyLayer {
            classifier: self.classifier,
            model_of,
        }
    }
}

impl<S, C: Clone, M: Clone> Layer<S> for ThrottleClassifyLayer<C, M> {
    type Service = ThrottleClassify<S, C, M>;

    fn layer(&self, inner: S) -> Self::Service {
        ThrottleClassify {
            inner,
            classifier: self.classifier.clone(),
            model_of: self.model_of.clone(),
        }
    }
}

/// Maps the inner service's errors into
/// [`ClassifiedError`](tower_bedrock_core::ClassifiedError), leaving
/// responses untouched.
///
/// Each classified error emits one `tracing` event (target
/// `tower_bedrock::classify`, with `model`, `code`, `class`, `kind`,
/// `status` and `request_id`; never a message or body) and increments
/// `bedrock_invocation_errors_total{class, kind, model, code}` (plus
/// `bedrock_invocation_throttles_total{kind, model}` for throttles).
/// `poll_ready` is forwarded unchanged; a readiness error is classified
/// like a call error.
#[derive(Debug, Clone)]
pub struct ThrottleClassify<S, C = BedrockClassifier, M = FromModelRequest> {
    inner: S,
    classifier: C,
    model_of: M,
}

impl<S> ThrottleClassify<S> {
    /// Wraps `inner` with the default classifier and model naming.
    pub fn new(inner: S) -> Self {
        ThrottleClassify {
            inner,
            classifier: BedrockClassifier,
            model_of: FromModelRequest,
        }
    }
}

impl<S, C, M> ThrottleClassify<S, C, M> {
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

impl<S, C, M, Req> Service<Req> for ThrottleClassify<S, C, M>
where
    S: Service<Req>,
    C: Classifier<S::Error> + Clone,
    M: ModelOf<Req>,
{
    type Response = S::Response;
    type Error = tower_bedrock_core::ClassifiedError<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(crate::future::classify_and_record(
                &self.classifier,
                e,
                &crate::ModelName::EMPTY,
            ))),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let model = self.model_of.model_of(&req);
        ResponseFuture::new(self.inner.call(req), self.classifier.clone(), model)
    }
}
