//! `tower::Service` adapters over the official `aws-sdk-bedrockruntime`
//! client, tuned for the tower-bedrock stack.
//!
//! - [`BedrockClientBuilder`]: one shared `aws_sdk_bedrockruntime::Client`
//!   with SDK retries off (the retry layer owns retries), connect / read /
//!   attempt / operation timeouts set, a sized connection pool with a hard
//!   per-host cap ([`ConnectionCapLayer`]), region, endpoint override and
//!   credentials;
//! - [`BedrockService`]: the client as a `tower::Service` for Converse,
//!   ConverseStream, InvokeModel, InvokeModelWithResponseStream and
//!   CountTokens. Requests ([`ConverseRequest`]...) wrap the SDK's inputs and
//!   implement [`ModelRequest`](tower_bedrock_core::ModelRequest) (model id,
//!   [token demand](estimate), output cap, [`CallReport`](tower_bedrock_core::CallReport));
//!   responses implement [`ReportsUsage`](tower_bedrock_core::ReportsUsage)
//!   (Converse's usage, InvokeModel's token headers read by
//!   [`TokenCountInterceptor`], the stream's final metadata event); errors
//!   are the SDK's `SdkError` ([`ConverseSdkError`]...), for
//!   `ThrottleClassifyLayer` to classify;
//! - [`Operation`]: the service restricted to one operation
//!   ([`ConverseService::new`]...), so `ready()` and the stack builder infer
//!   the request type;
//! - [`aws_sdk_bedrockruntime`] itself, re-exported with the features this
//!   crate builds it with: no second HTTP client or TLS stack;
//! - [`BedrockStream`]: response streams with an idle timeout per event,
//!   in-stream exceptions classified, usage reported exactly once at the
//!   end;
//! - [`CountTokensLayer`]: exact input tokens from the CountTokens API
//!   for the budget, where the heuristic is not good enough;
//! - [`adapter`]: tower services as the SDK's HTTP client
//!   ([`LayeredHttpClient`], [`ServiceConnector`], [`ConnectorService`]), so
//!   layers can run below the SDK too.
//!
//! # Example
//!
//! The real client against the local emulator (any Bedrock endpoint works
//! the same), wrapped in the classifier layer:
//!
//! ```
//! use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
//! use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_bedrock_classify::ThrottleClassifyLayer;
//! use tower_bedrock_core::{Classified, ErrorClass, ReportsUsage, ThrottleKind, Usage};
//! use tower_bedrock_emulator::{Emulator, EmulatorConfig, FaultKind, FaultRule};
//! use tower_bedrock_sdk::{BedrockClientBuilder, BedrockService, ConverseRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let emulator = Emulator::start(EmulatorConfig::builder().output_tokens(8).build()?).await?;
//! let client = BedrockClientBuilder::new()
//!     .region("us-east-1")
//!     .endpoint_url(emulator.endpoint_url())
//!     .static_credentials("AKIDEXAMPLE", "secret")
//!     .build()
//!     .await?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(ThrottleClassifyLayer::new())
//!     .service(BedrockService::new(client));
//!
//! let ask = || -> Result<ConverseRequest, Box<dyn std::error::Error>> {
//!     Ok(ConverseInput::builder()
//!         .model_id("anthropic.claude-3-haiku-20240307-v1:0")
//!         .messages(
//!             Message::builder()
//!                 .role(ConversationRole::User)
//!                 .content(ContentBlock::Text("Hello there".into()))
//!                 .build()?,
//!         )
//!         .build()?
//!         .into())
//! };
//! // One service serves every operation: name the request type to call.
//! let answer = ServiceExt::<ConverseRequest>::ready(&mut svc).await?.call(ask()?).await?;
//! assert_eq!(answer.usage(), Some(Usage::new(3, 8)));
//!
//! // An overloaded model: the SDK's own error, classified.
//! emulator.set_faults(vec![FaultRule::new(FaultKind::Overloaded)])?;
//! let err = svc.clone().oneshot(ask()?).await.unwrap_err();
//! assert_eq!(err.class(), ErrorClass::Throttled(ThrottleKind::ModelOverloaded));
//! assert!(err.inner().unwrap().as_service_error().unwrap().is_throttling_exception());
//! # Ok(())
//! # }
//! ```
//!
//! # Observability
//!
//! Errors returned by calls are counted by `ThrottleClassify`, a stream's
//! failure before its first event included (it is the call's error).
//! Errors inside a stream *after* its first event never reach that layer,
//! so [`BedrockStream`] records them itself: a `tracing` warning (target `tower_bedrock::sdk`, with
//! `model`, `code`, `class`, `kind`; never a message or body) and
//! `bedrock_invocation_errors_total{class, kind, model, code}` (plus
//! `bedrock_invocation_throttles_total{kind, model}` for throttles). The
//! connection cap logs at debug level when a request waits for a slot.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapter;
mod cap;
mod client;
mod count;
pub mod error;
pub mod estimate;
mod interceptor;
mod operation;
mod request;
mod response;
mod service;
pub mod stream;

/// The futures of [`BedrockService`] and of the adapter services.
pub mod future {
    pub use crate::adapter::ConnectorServiceFuture;
    pub use crate::count::CountTokensFuture;
    pub use crate::service::ResponseFuture;
}

pub use adapter::{ConnectorService, LayeredHttpClient, ServiceConnector, service_http_client};
pub use cap::{ConnectionCap, ConnectionCapLayer};
pub use client::{
    BedrockClientBuilder, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_HOST, DEFAULT_OPERATION_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
};
pub use count::{CountTokens, CountTokensLayer, Countable};
pub use error::{
    ClientBuildError, ConverseStreamCallError, InvokeModelStreamCallError, PoolWaitTimeout,
    StreamError, StreamOpenError,
};
pub use interceptor::{
    CACHE_READ_TOKEN_COUNT_HEADER, CACHE_WRITE_TOKEN_COUNT_HEADER, HeaderUsage,
    INPUT_TOKEN_COUNT_HEADER, INVOCATION_LATENCY_HEADER, OUTPUT_TOKEN_COUNT_HEADER,
    TokenCountInterceptor,
};
pub use operation::{
    ConverseService, ConverseStreamService, CountTokensService, InvokeModelService,
    InvokeModelStreamService, Operation,
};
pub use request::{
    ConverseRequest, ConverseStreamRequest, CountTokensRequest, InvokeModelRequest,
    InvokeModelStreamRequest,
};
pub use response::{
    ConverseResponse, ConverseStreamResponse, CountTokensResponse, InvokeModelResponse,
    InvokeModelStreamResponse,
};
pub use service::{BedrockService, DEFAULT_STREAM_IDLE_TIMEOUT};
pub use stream::{BedrockStream, StreamEvent};
pub use tower_bedrock_classify::{InStreamError, classify_stream_error};

/// The AWS SDK for Bedrock Runtime this crate is built on, with the
/// features it was built with (no second HTTP client or TLS stack): build
/// inputs (`aws_sdk_bedrockruntime::operation::converse::ConverseInput`),
/// read outputs and match errors through it instead of depending on the
/// SDK yourself.
pub use aws_sdk_bedrockruntime;
/// The raw HTTP response the SDK's errors carry.
pub use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// The error of [`BedrockService`] for a [`ConverseRequest`]: the SDK's
/// own, for `ThrottleClassifyLayer` to classify (the stack's error is
/// `ClassifiedError<ConverseSdkError>`).
pub type ConverseSdkError = aws_smithy_runtime_api::client::result::SdkError<
    aws_sdk_bedrockruntime::operation::converse::ConverseError,
    HttpResponse,
>;
/// The error of [`BedrockService`] for an [`InvokeModelRequest`].
pub type InvokeModelSdkError = aws_smithy_runtime_api::client::result::SdkError<
    aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError,
    HttpResponse,
>;
/// The error of [`BedrockService`] for a [`CountTokensRequest`].
pub type CountTokensSdkError = aws_smithy_runtime_api::client::result::SdkError<
    aws_sdk_bedrockruntime::operation::count_tokens::CountTokensError,
    HttpResponse,
>;
