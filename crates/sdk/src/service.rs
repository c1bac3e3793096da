//! [`BedrockService`]: the SDK client as a `tower::Service` per operation.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::operation::RequestId;
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::count_tokens::CountTokensError;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use tower_bedrock_classify::InStreamError;
use tower_bedrock_core::ModelRequest;
use tower_bedrock_core::stream_end;
use tower_service::Service;

use crate::error::{
    ConverseStreamCallError, InvokeModelStreamCallError, StreamError, StreamOpenError,
};
use crate::interceptor::TokenCountInterceptor;
use crate::request::{
    ConverseRequest, ConverseStreamRequest, CountTokensRequest, InvokeModelRequest,
    InvokeModelStreamRequest,
};
use crate::response::{
    ConverseResponse, ConverseStreamResponse, CountTokensResponse, InvokeModelResponse,
    InvokeModelStreamResponse,
};
use crate::stream::{BedrockStream, StreamEvent};

/// Default idle timeout of response streams: 60 s between two events
/// (time to first token of a long prompt included).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The `aws-sdk-bedrockruntime` client as a [`tower::Service`] for
/// Converse, ConverseStream, InvokeModel, InvokeModelWithResponseStream and
/// CountTokens.
///
/// Always ready (the client's pool and its cap do the waiting); clones
/// share the client. Errors of the unary operations are the SDK's own
/// `SdkError<OperationError, HttpResponse>`, unchanged; the streaming
/// operations fail with [`StreamOpenError`] (the SDK's error, or a failure
/// inside the stream before its first event). Put `ThrottleClassifyLayer`
/// of `tower-bedrock-classify` above to classify them. Responses implement
/// [`ReportsUsage`](tower_bedrock_core::ReportsUsage); streams are
/// [`BedrockStream`]s, returned once their first event has arrived, with
/// [`stream_idle_timeout`](Self::stream_idle_timeout) applied to every
/// event, the first one included.
///
/// [`tower::Service`]: tower_service::Service
#[derive(Clone)]
pub struct BedrockService {
    client: Client,
    stream_idle_timeout: Option<Duration>,
}

impl fmt::Debug for BedrockService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockService")
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .finish_non_exhaustive()
    }
}

impl BedrockService {
    /// Wraps a client (build it with
    /// [`BedrockClientBuilder`](crate::BedrockClientBuilder)), with the
    /// default stream idle timeout.
    pub fn new(client: Client) -> Self {
        BedrockService {
            client,
            stream_idle_timeout: Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        }
    }

    /// Sets the longest wait for one stream event (`None`: unbounded, as
    /// the SDK does by itself).
    #[must_use]
    pub fn stream_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The future of every [`BedrockService`] call.
pub struct ResponseFuture<T, E> {
    inner: Pin<Box<dyn Future<Output = Result<T, E>> + Send>>,
}

impl<T, E> ResponseFuture<T, E> {
    fn new(f: impl Future<Output = Result<T, E>> + Send + 'static) -> Self {
        ResponseFuture { inner: Box::pin(f) }
    }
}

impl<T, E> fmt::Debug for ResponseFuture<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<T, E> Future for ResponseFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

macro_rules! always_ready {
    () => {
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    };
}

/// Every field of a Converse or ConverseStream input (distinct SDK types
/// with the same fields) into the operation's fluent builder.
macro_rules! converse_fields {
    ($builder:expr, $i:ident) => {
        $builder
            .set_model_id($i.model_id)
            .set_messages($i.messages)
            .set_system($i.system)
            .set_inference_config($i.inference_config)
            .set_tool_config($i.tool_config)
            .set_guardrail_config($i.guardrail_config)
            .set_additional_model_request_fields($i.additional_model_request_fields)
            .set_prompt_variables($i.prompt_variables)
            .set_additional_model_response_field_paths($i.additional_model_response_field_paths)
            .set_request_metadata($i.request_metadata)
            .set_performance_config($i.performance_config)
            .set_service_tier($i.service_tier)
            .set_output_config($i.output_config)
    };
}

/// Every field of an InvokeModel or InvokeModelWithResponseStream input
/// into the operation's fluent builder.
macro_rules! invoke_fields {
    ($builder:expr, $i:ident) => {
        $builder
            .set_body($i.body)
            .set_content_type($i.content_type)
            .set_accept($i.accept)
            .set_model_id($i.model_id)
            .set_trace($i.trace)
            .set_guardrail_identifier($i.guardrail_identifier)
            .set_guardrail_version($i.guardrail_version)
            .set_performance_config_latency($i.performance_config_latency)
            .set_service_tier($i.service_tier)
            .set_request_metadata($i.request_metadata)
    };
}

impl Service<ConverseRequest> for BedrockService {
    type Response = ConverseResponse;
    type Error = SdkError<ConverseError, HttpResponse>;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    always_ready!();

    fn call(&mut self, req: ConverseRequest) -> Self::Future {
        let client = self.client.clone();
        let i = req.into_input();
        ResponseFuture::new(async move {
            converse_fields!(client.converse(), i)
                .send()
                .await
                .map(|output| ConverseResponse { output })
        })
    }
}

impl Service<ConverseStreamRequest> for BedrockService {
    type Response = ConverseStreamResponse;
    type Error = ConverseStreamCallError;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    always_ready!();

    /// Sends the request and waits for the stream's first event (within
    /// the stream idle timeout) before answering: a failure before it is
    /// the call's error ([`StreamOpenError::FirstEvent`]).
    fn call(&mut self, req: ConverseStreamRequest) -> Self::Future {
        let client = self.client.clone();
        let idle = self.stream_idle_timeout;
        let input_tokens = req.token_demand().input_tokens;
        let i = req.into_input();
        ResponseFuture::new(async move {
            let model = i.model_id.clone().unwrap_or_default();
            let output = converse_fields!(client.converse_stream(), i)
                .send()
                .await
                .map_err(StreamOpenError::Request)?;
            let request_id = output.request_id().map(str::to_owned);
            let stream = BedrockStream::new(output.stream, idle, &model)
                .with_input_tokens(input_tokens)
                .with_request_id(request_id.clone());
            Ok(ConverseStreamResponse {
                stream: open(stream)
                    .await
                    .map_err(first_event(request_id.as_deref()))?,
            })
        })
    }
}

/// Opens a stream (reads its first event) and hands it to the layers
/// watching the call.
async fn open<T, E>(mut stream: BedrockStream<T, E>) -> Result<BedrockStream<T, E>, StreamError<E>>
where
    T: StreamEvent + Send + 'static,
    E: InStreamError + Send + 'static,
{
    stream.open().await?;
    stream.watch(stream_end::open_stream());
    Ok(stream)
}

fn first_event<O, E>(
    request_id: Option<&str>,
) -> impl FnOnce(StreamError<E>) -> StreamOpenError<O, E> {
    let request_id = request_id.map(str::to_owned);
    move |error| StreamOpenError::FirstEvent { error, request_id }
}

impl Service<InvokeModelRequest> for BedrockService {
    type Response = InvokeModelResponse;
    type Error = SdkError<InvokeModelError, HttpResponse>;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    always_ready!();

    fn call(&mut self, req: InvokeModelRequest) -> Self::Future {
        let client = self.client.clone();
        let i = req.into_input();
        ResponseFuture::new(async move {
            let headers = TokenCountInterceptor::new();
            let output = invoke_fields!(client.invoke_model(), i)
                .customize()
                .interceptor(headers.clone())
                .send()
                .await?;
            let h = headers.get();
            Ok(InvokeModelResponse {
                output,
                usage: h.usage,
                invocation_latency: h.invocation_latency,
            })
        })
    }
}

impl Service<InvokeModelStreamRequest> for BedrockService {
    type Response = InvokeModelStreamResponse;
    type Error = InvokeModelStreamCallError;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    always_ready!();

    /// Sends the request and waits for the stream's first chunk (within
    /// the stream idle timeout) before answering: a failure before it is
    /// the call's error ([`StreamOpenError::FirstEvent`]).
    fn call(&mut self, req: InvokeModelStreamRequest) -> Self::Future {
        let client = self.client.clone();
        let idle = self.stream_idle_timeout;
        let input_tokens = req.token_demand().input_tokens;
        let i = req.into_input();
        ResponseFuture::new(async move {
            let model = i.model_id.clone().unwrap_or_default();
            let output = invoke_fields!(client.invoke_model_with_response_stream(), i)
                .send()
                .await
                .map_err(StreamOpenError::Request)?;
            let request_id = output.request_id().map(str::to_owned);
            let stream = BedrockStream::new(output.body, idle, &model)
                .with_input_tokens(input_tokens)
                .with_request_id(request_id.clone());
            Ok(InvokeModelStreamResponse {
                stream: open(stream)
                    .await
                    .map_err(first_event(request_id.as_deref()))?,
                content_type: output.content_type,
            })
        })
    }
}

impl Service<CountTokensRequest> for BedrockService {
    type Response = CountTokensResponse;
    type Error = SdkError<CountTokensError, HttpResponse>;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    always_ready!();

    fn call(&mut self, req: CountTokensRequest) -> Self::Future {
        let client = self.client.clone();
        let i = req.into_input();
        ResponseFuture::new(async move {
            client
                .count_tokens()
                .set_model_id(i.model_id)
                .set_input(i.input)
                .send()
                .await
                .map(|output| CountTokensResponse { output })
        })
    }
}
