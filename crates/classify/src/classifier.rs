#[cfg(feature = "sdk")]
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
#[cfg(feature = "sdk")]
use aws_smithy_runtime_api::client::result::SdkError;
#[cfg(feature = "sdk")]
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
#[cfg(feature = "sdk")]
use aws_smithy_types::event_stream::RawMessage;
use tower_bedrock_core::{Classification, ClassifiedError, ModelRequest};

use crate::ModelName;
#[cfg(feature = "sdk")]
use crate::sdk::{InStreamError, classify_sdk_error, classify_stream_error};

/// Turns an error of type `E` into a [`Classification`].
///
/// Implemented by [`BedrockClassifier`] for the SDK's errors and by any
/// `Fn(&E) -> Classification` closure, so a service with its own error type
/// can still use [`ThrottleClassify`](crate::ThrottleClassify).
pub trait Classifier<E> {
    /// Classifies `error`. Must not panic.
    fn classify(&self, error: &E) -> Classification;

    /// Wraps `error` with its classification. The default,
    /// [`ClassifiedError::new`], works for any type; classifiers of
    /// `std::error::Error` types override it with
    /// [`ClassifiedError::with_source`] so that `source()` returns the
    /// error itself ([`BedrockClassifier`] does).
    fn wrap(&self, error: E, classification: Classification) -> ClassifiedError<E> {
        ClassifiedError::new(error, classification)
    }
}

impl<E, F> Classifier<E> for F
where
    F: Fn(&E) -> Classification,
{
    fn classify(&self, error: &E) -> Classification {
        self(error)
    }
}

/// The classifier for `aws-sdk-bedrockruntime` errors: `SdkError<E,
/// HttpResponse>` of every operation and `SdkError<E, RawMessage>` of event
/// streams (with the `sdk` feature, on by default). See
/// `classify_sdk_error` and `classify_stream_error`. The wrapped error's
/// `source()` is the `SdkError` itself.
///
/// It is [`ThrottleClassifyLayer`](crate::ThrottleClassifyLayer)'s default
/// classifier; without the `sdk` feature it classifies nothing, and the
/// layer needs a classifier of yours
/// ([`classifier`](crate::ThrottleClassifyLayer::classifier)).
#[derive(Debug, Clone, Copy, Default)]
pub struct BedrockClassifier;

#[cfg(feature = "sdk")]
impl<E> Classifier<SdkError<E, HttpResponse>> for BedrockClassifier
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn classify(&self, error: &SdkError<E, HttpResponse>) -> Classification {
        classify_sdk_error(error)
    }

    fn wrap(
        &self,
        error: SdkError<E, HttpResponse>,
        classification: Classification,
    ) -> ClassifiedError<SdkError<E, HttpResponse>> {
        ClassifiedError::with_source(error, classification)
    }
}

#[cfg(feature = "sdk")]
impl<E> Classifier<SdkError<E, RawMessage>> for BedrockClassifier
where
    E: InStreamError + std::error::Error + 'static,
{
    fn classify(&self, error: &SdkError<E, RawMessage>) -> Classification {
        classify_stream_error(error)
    }

    fn wrap(
        &self,
        error: SdkError<E, RawMessage>,
        classification: Classification,
    ) -> ClassifiedError<SdkError<E, RawMessage>> {
        ClassifiedError::with_source(error, classification)
    }
}

/// Tells the layer which model a request is for, to label errors in traces
/// and metrics.
pub trait ModelOf<Req> {
    /// The model id of `req` (empty when unknown).
    fn model_of(&self, req: &Req) -> ModelName;
}

/// Reads the model id through [`ModelRequest`]. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromModelRequest;

impl<Req: ModelRequest> ModelOf<Req> for FromModelRequest {
    fn model_of(&self, req: &Req) -> ModelName {
        ModelName::new(req.model_id())
    }
}

/// Reads the model id from the path of a Bedrock Runtime HTTP request
/// (`/model/{modelId}/converse` and the other operations), for layers that
/// run below the SDK.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromHttpPath;

impl<B> ModelOf<http::Request<B>> for FromHttpPath {
    fn model_of(&self, req: &http::Request<B>) -> ModelName {
        let path = req.uri().path();
        let id = path
            .strip_prefix("/model/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("");
        ModelName::new(id)
    }
}

/// Labels nothing: for requests without a model id.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModel;

impl<Req> ModelOf<Req> for NoModel {
    fn model_of(&self, _req: &Req) -> ModelName {
        ModelName::EMPTY
    }
}
