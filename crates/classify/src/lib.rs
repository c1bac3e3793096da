//! ThrottleClassify: turns Amazon Bedrock SDK and HTTP errors into a
//! precise class.
//!
//! Bedrock answers 429 for three different problems (request rate, token
//! rate, an overloaded model) and 503 for two (the client's own connection
//! pool, real service trouble); the right reaction differs for each. This
//! crate decides which one an error is, once, so every other layer can act
//! on it:
//!
//! - [`classify_parts`]: the pure decision table over status, code and
//!   message (every Bedrock Runtime error code, wire forms, message
//!   variants, any letter case; never panics);
//! - `classify_sdk_error` and `classify_stream_error` (feature `sdk`, on
//!   by default): the official SDK's `SdkError` of every operation, and
//!   errors inside event streams;
//! - [`classify_http_response`]: raw `http::Response`s;
//! - [`TimeoutClassifier`]: `tower::timeout`'s boxed errors
//!   ([`classify_elapsed`], [`classify_boxed`]);
//! - [`ThrottleClassifyLayer`] / [`ThrottleClassify`]: a tower layer that maps
//!   the inner error into
//!   [`ClassifiedError`](tower_bedrock_core::ClassifiedError), with a tracing
//!   event and metrics per classified error; [`ClassifyHttpLayer`] does the
//!   same for raw HTTP services, turning error statuses into errors.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_bedrock_classify::ThrottleClassifyLayer;
//! use tower_bedrock_core::{
//!     Classification, Classified, ErrorClass, ModelRequest, ThrottleKind, TokenDemand,
//! };
//! use tower_bedrock_classify::classify_parts;
//!
//! // A request type of your own.
//! struct Ask { model: String }
//! impl ModelRequest for Ask {
//!     fn model_id(&self) -> &str { &self.model }
//!     fn set_model_id(&mut self, m: &str) { self.model = m.to_owned() }
//!     fn token_demand(&self) -> TokenDemand { TokenDemand::default() }
//! }
//!
//! // A service failing the way Bedrock does (status, code, message).
//! #[derive(Debug)]
//! struct WireError { status: u16, code: &'static str, message: &'static str }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let inner = service_fn(|_: Ask| async {
//!     Err::<(), _>(WireError {
//!         status: 429,
//!         code: "ThrottlingException",
//!         message: "Too many tokens, please wait before trying again.",
//!     })
//! });
//! let mut svc = ServiceBuilder::new()
//!     .layer(ThrottleClassifyLayer::new().classifier(|e: &WireError| {
//!         classify_parts(Some(e.status), Some(e.code), Some(e.message))
//!     }))
//!     .service(inner);
//!
//! let err = svc
//!     .ready()
//!     .await
//!     .unwrap()
//!     .call(Ask { model: "anthropic.claude-3-haiku-20240307-v1:0".into() })
//!     .await
//!     .unwrap_err();
//! assert_eq!(err.classification().class, ErrorClass::Throttled(ThrottleKind::TokenRate));
//! // Display names the class and the code, never the message or a body.
//! assert_eq!(
//!     err.to_string(),
//!     "bedrock call failed: throttled (token rate): ThrottlingException, HTTP 429"
//! );
//! # }
//! ```
//!
//! # Features
//!
//! - `sdk` (default): the classifiers of the `aws-sdk-bedrockruntime`
//!   errors ([`BedrockClassifier`]'s impls, `classify_sdk_error`,
//!   `classify_stream_error`, `InStreamError`). Without it the crate does
//!   not depend on the AWS SDK, for services calling Bedrock over raw HTTP
//!   ([`ClassifyHttpLayer`]) or with classifiers of their own:
//!   `tower-bedrock-classify = { version = "0.1", default-features = false }`.
//!
//! # Metrics
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `bedrock_invocation_errors_total` | counter | `class`, `kind`, `model`, `code` |
//! | `bedrock_invocation_throttles_total` | counter | `kind`, `model` |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod classifier;
mod headers;
mod http;
mod layer;
mod name;
#[cfg(feature = "sdk")]
mod sdk;
mod table;
mod timeout;

pub mod future;

/// The error type of this layer, from `tower-bedrock-core`.
pub mod error {
    pub use tower_bedrock_core::ClassifiedError;
}

pub use classifier::{
    BedrockClassifier, Classifier, FromHttpPath, FromModelRequest, ModelOf, NoModel,
};
pub use headers::{ERROR_TYPE_HEADER, REQUEST_ID_HEADER};
pub use http::{
    ClassifyHttp, ClassifyHttpLayer, HttpError, HttpFuture, classify_http_parts,
    classify_http_response,
};
pub use layer::{ThrottleClassify, ThrottleClassifyLayer};
pub use name::{MODEL_NAME_CAPACITY, ModelName};
#[cfg(feature = "sdk")]
pub use sdk::{InStreamError, classify_sdk_error, classify_stream_error};
pub use table::{classify_parts, normalize_code};
pub use timeout::{
    ELAPSED_CODE, TimeoutClassifier, Unclassified, classify_boxed, classify_elapsed,
};
