use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::event_stream::RawMessage;
use tower_bedrock_core::{Classification, ModelRequest};

use crate::ModelName;
use crate::sdk::{InStreamError, classify_sdk_error, classify_stream_error};

/// Turns an error of type `E` into a [`Classification`].
///
/// Implemented by [`BedrockClassifier`] for the SDK's errors and by any
/// `Fn(&E) -> Classification` closure, so a service with its own error type
/// can still use [`ThrottleClassify`](crate::ThrottleClassify).
pub trait Classifier<E> {
    /// Classifies `error`. Must not panic.
    fn classify(&self, error: &E) -> Classification;
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
/// streams. See [`classify_sdk_error`] and [`classify_stream_error`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BedrockClassifier;

impl<E: ProvideErrorMetadata> Classifier<SdkError<E, HttpResponse>> for BedrockClassifier {
    fn classify(&self, error: &SdkError<E, HttpResponse>) -> Classification {
        classify_sdk_error(error)
    }
}

impl<E: InStreamError> Classifier<SdkError<E, RawMessage>> for BedrockClassifier {
    fn classify(&self, error: &SdkError<E, RawMessage>) -> Classification {
        classify_stream_error(error)
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
