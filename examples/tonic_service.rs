//! A gRPC chat service (tonic) backed by the tower-bedrock stack.
//!
//! ```text
//! cargo run --example tonic_service      # against an in-process emulator
//! ```
//!
//! The API is `examples/proto/chat.proto` (`towerbedrock.chat.v1.Chat/Ask`,
//! and `AskStream`, the answer as a server stream);
//! the code tonic generates from it is checked in (`examples/proto/chat.rs`),
//! so no protoc is needed to build. Each caller names its application in an
//! `x-tenant` metadata entry and gets its own share of one token budget.
//!
//! Errors become gRPC status codes: a local shed (the budget had no room)
//! or a throttle the stack could not absorb is `RESOURCE_EXHAUSTED` with a
//! `retry-after` metadata entry (seconds); open circuits and Bedrock
//! outages are `UNAVAILABLE` (also with `retry-after`); invalid requests
//! `INVALID_ARGUMENT`; model timeouts `DEADLINE_EXCEEDED`; an unknown
//! tenant `UNAUTHENTICATED`. Messages name the error class, never the
//! prompt.
//!
//! `AskStream` goes through the same stack for ConverseStream. The stream
//! starts once Bedrock's first event has arrived, so a failure before it
//! (an in-stream throttle or 503 included) is retried or falls back to the
//! next model, or fails the call with the codes above. After the first
//! event the model never changes: a failure ends the stream with the
//! status of its class in place of the final `done` event.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput as Output, ConverseStreamOutput,
    InferenceConfiguration, Message,
};
use clap::Parser;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use tower_bedrock::breaker::CircuitBreakHandle;
use tower_bedrock::budget::Budget;
use tower_bedrock::core::{
    CallReport, Classification, Classified, ClassifiedError, ErrorClass, LocalRejection,
    ReportsUsage,
};
use tower_bedrock::fallback::{Chain, Target};
use tower_bedrock::sdk::{
    BedrockClientBuilder, BedrockService, ConverseRequest, ConverseResponse,
    ConverseStreamCallError, ConverseStreamRequest, ConverseStreamResponse,
};

/// The code generated from `chat.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
pub mod proto {
    include!("proto/chat.rs");
}

use proto::ask_event::Event;
use proto::chat_server::{Chat, ChatServer};
use proto::{AskEvent, AskReply, AskRequest};

type SdkError = aws_sdk_bedrockruntime::error::SdkError<
    aws_sdk_bedrockruntime::operation::converse::ConverseError,
    aws_smithy_runtime_api::client::orchestrator::HttpResponse,
>;
/// The stack's error type.
pub type ChatError = ClassifiedError<SdkError>;
type ChatService = BoxCloneSyncService<ConverseRequest, ConverseResponse, ChatError>;
/// The streaming stack's error type.
pub type ChatStreamError = ClassifiedError<ConverseStreamCallError>;
type ChatStreamService =
    BoxCloneSyncService<ConverseStreamRequest, ConverseStreamResponse, ChatStreamError>;

/// The service's settings.
#[derive(Debug, Clone, Parser)]
#[command(about = "A gRPC chat service backed by the tower-bedrock stack")]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Bedrock endpoint (an emulator); an in-process emulator is started
    /// when neither this nor --real-bedrock is given.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Use Amazon Bedrock with the default credential chain.
    #[arg(long)]
    pub real_bedrock: bool,
    /// AWS region.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Primary model.
    #[arg(long, default_value = "us.anthropic.claude-sonnet-4-20250514-v1:0")]
    pub model: String,
    /// Fallback model.
    #[arg(long, default_value = "anthropic.claude-3-5-haiku-20241022-v1:0")]
    pub fallback_model: String,
    /// Tenants as name=weight, comma separated.
    #[arg(long, default_value = "app-a=2,app-b=1,app-c=1")]
    pub tenants: String,
    /// Tokens per minute the budget admits per model.
    #[arg(long, default_value_t = 200_000)]
    pub tokens_per_minute: u64,
    /// Longest wait for budget before a request is shed, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub max_wait_secs: f64,
}

impl Settings {
    /// The defaults, as the command line gives them.
    pub fn defaults() -> Self {
        Settings::parse_from(["tonic_service"])
    }
}

/// The gRPC service: one stack per tenant over one SDK client.
#[derive(Clone)]
pub struct Gateway {
    tenants: Arc<HashMap<String, ChatService>>,
    streams: Arc<HashMap<String, ChatStreamService>>,
    model: Arc<str>,
    breakers: CircuitBreakHandle,
}

impl Gateway {
    /// Builds every tenant's stack (60 s quota windows).
    pub fn new(
        settings: &Settings,
        client: aws_sdk_bedrockruntime::Client,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        Self::with_window(settings, client, Duration::from_secs(60))
    }

    /// Builds every tenant's stack, the quota window given (shorter
    /// against an emulator in compressed time).
    pub fn with_window(
        settings: &Settings,
        client: aws_sdk_bedrockruntime::Client,
        window: Duration,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let budget = Budget::builder()
            .window(window)
            .tokens_per_window(settings.tokens_per_minute)
            .max_wait(Duration::from_secs_f64(settings.max_wait_secs))
            .build()?;
        let layer = tower_bedrock::stack()
            .window(window)
            .fallback_chain(chain(settings))
            .into_layer()?;
        // Streams share the breakers and the retry budget (clones of the
        // layers share their state).
        let stream_layer = tower_bedrock::stack()
            .window(window)
            .fallback_chain(chain(settings))
            .retry(layer.retry_layer().clone())
            .breaker(layer.breaker_layer().clone())
            .into_layer()?;
        let bedrock = BedrockService::new(client);
        let mut tenants = HashMap::new();
        let mut streams = HashMap::new();
        for spec in settings.tenants.split(',').filter(|s| !s.is_empty()) {
            let (name, weight) = spec.split_once('=').unwrap_or((spec, "1"));
            let tenant = budget.tenant(name.trim(), weight.trim().parse()?)?;
            let svc: ChatService = layer
                .with_budget_layer(tenant.layer())
                .boxed_sync::<_, ConverseRequest, _>(bedrock.clone());
            tenants.insert(name.trim().to_owned(), svc);
            let stream: ChatStreamService =
                stream_layer
                    .with_budget_layer(tenant.layer())
                    .boxed_sync::<_, ConverseStreamRequest, _>(bedrock.clone());
            streams.insert(name.trim().to_owned(), stream);
        }
        Ok(Gateway {
            tenants: Arc::new(tenants),
            streams: Arc::new(streams),
            model: Arc::from(settings.model.as_str()),
            breakers: layer.breaker_layer().handle(),
        })
    }

    /// The breakers of every model.
    pub fn breakers(&self) -> &CircuitBreakHandle {
        &self.breakers
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> ChatServer<Gateway> {
        ChatServer::new(self)
    }
}

#[tonic::async_trait]
impl Chat for Gateway {
    async fn ask(&self, request: Request<AskRequest>) -> Result<Response<AskReply>, Status> {
        let tenant = request
            .metadata()
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("missing x-tenant metadata"))?;
        let mut svc = self
            .tenants
            .get(tenant)
            .ok_or_else(|| Status::unauthenticated("unknown tenant"))?
            .clone();
        let ask = request.into_inner();
        let max_tokens = if ask.max_tokens == 0 {
            512
        } else {
            ask.max_tokens.min(8192)
        };
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(ask.prompt))
            .build()
            .map_err(|_| Status::invalid_argument("invalid message"))?;
        let input = ConverseInput::builder()
            .model_id(&*self.model)
            .messages(message)
            .inference_config(
                InferenceConfiguration::builder()
                    .max_tokens(max_tokens as i32)
                    .build(),
            )
            .build()
            .map_err(|_| Status::invalid_argument("invalid request"))?;
        let report = CallReport::new();
        let answer = svc
            .ready()
            .await
            .map_err(|e| status(&e))?
            .call(ConverseRequest::new(input).with_report(report.clone()))
            .await
            .map_err(|e| status(&e))?;
        let s = report.summary();
        let usage = answer.usage().unwrap_or_default();
        let text = match &answer.output.output {
            Some(Output::Message(m)) => m
                .content
                .iter()
                .filter_map(|c| c.as_text().ok().cloned())
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        };
        Ok(Response::new(AskReply {
            text,
            model: s.served_by.clone().unwrap_or_default(),
            degraded: s.degraded(),
            attempts: s.attempts,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
        }))
    }

    type AskStreamStream =
        Pin<Box<dyn futures_util::Stream<Item = Result<AskEvent, Status>> + Send + 'static>>;

    async fn ask_stream(
        &self,
        request: Request<AskRequest>,
    ) -> Result<Response<Self::AskStreamStream>, Status> {
        let tenant = request
            .metadata()
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("missing x-tenant metadata"))?;
        let mut svc = self
            .streams
            .get(tenant)
            .ok_or_else(|| Status::unauthenticated("unknown tenant"))?
            .clone();
        let ask = request.into_inner();
        let max_tokens = if ask.max_tokens == 0 {
            512
        } else {
            ask.max_tokens.min(8192)
        };
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(ask.prompt))
            .build()
            .map_err(|_| Status::invalid_argument("invalid message"))?;
        let input = ConverseStreamInput::builder()
            .model_id(&*self.model)
            .messages(message)
            .inference_config(
                InferenceConfiguration::builder()
                    .max_tokens(max_tokens as i32)
                    .build(),
            )
            .build()
            .map_err(|_| Status::invalid_argument("invalid request"))?;
        let report = CallReport::new();
        // Retries and fallbacks happen here: the stack answers once the
        // stream's first event has arrived.
        let answer = svc
            .ready()
            .await
            .map_err(|e| classified_status(e.classification(), &e.to_string()))?
            .call(ConverseStreamRequest::new(input).with_report(report.clone()))
            .await
            .map_err(|e| classified_status(e.classification(), &e.to_string()))?;
        Ok(Response::new(Box::pin(events(answer, report))))
    }
}

/// The fallback chain, for either request type.
fn chain<Req>(settings: &Settings) -> Chain<Req> {
    Chain::new()
        .then(settings.model.as_str())
        .then(Target::new(&settings.fallback_model).max_tokens(1024))
}

/// The stream's events: `text`s, then `done`, or the failure's status when
/// the stream fails after its first event.
fn events(
    answer: ConverseStreamResponse,
    report: CallReport,
) -> impl futures_util::Stream<Item = Result<AskEvent, Status>> + Send + 'static {
    futures_util::stream::unfold(Some((answer, report)), |state| async move {
        let (mut answer, report) = state?;
        loop {
            match answer.recv().await {
                Ok(Some(ConverseStreamOutput::ContentBlockDelta(d))) => {
                    let Some(Ok(text)) = d.delta().map(|d| d.as_text()) else {
                        continue;
                    };
                    let event = AskEvent {
                        event: Some(Event::Text(text.clone())),
                    };
                    return Some((Ok(event), Some((answer, report))));
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    let usage = answer.usage().unwrap_or_default();
                    let s = report.summary();
                    let done = AskReply {
                        text: String::new(),
                        model: s.served_by.clone().unwrap_or_default(),
                        degraded: s.degraded(),
                        attempts: s.attempts,
                        input_tokens: usage.input_tokens,
                        output_tokens: usage.output_tokens,
                    };
                    let event = AskEvent {
                        event: Some(Event::Done(done)),
                    };
                    return Some((Ok(event), None));
                }
                Err(e) => {
                    let status = classified_status(e.classification(), &e.to_string());
                    return Some((Err(status), None));
                }
            }
        }
    })
}

/// Maps the stack's error to a gRPC status.
pub fn status(e: &ChatError) -> Status {
    classified_status(e.classification(), &e.to_string())
}

/// Maps a classified failure to a gRPC status (`message` names the class
/// and code, never content).
pub fn classified_status(c: &Classification, message: &str) -> Status {
    let code = match c.class {
        ErrorClass::Local(LocalRejection::CircuitOpen) => Code::Unavailable,
        ErrorClass::Local(LocalRejection::RequestTooLarge) => Code::InvalidArgument,
        ErrorClass::Local(LocalRejection::DeadlineExceeded) => Code::DeadlineExceeded,
        ErrorClass::Local(_) => Code::ResourceExhausted,
        ErrorClass::Throttled(_) | ErrorClass::QuotaExceeded => Code::ResourceExhausted,
        ErrorClass::Unavailable(_) => Code::Unavailable,
        ErrorClass::ModelTimeout => Code::DeadlineExceeded,
        ErrorClass::Client(_) => Code::InvalidArgument,
        _ => Code::Unknown,
    };
    let mut status = Status::new(
        code,
        format!("{}/{}: {message}", c.class.label(), c.class.kind_label()),
    );
    let retry_after = c.retry_after.or(match code {
        Code::ResourceExhausted | Code::Unavailable => Some(Duration::from_secs(1)),
        _ => None,
    });
    if let Some(after) = retry_after {
        let secs = (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1);
        if let Ok(v) = MetadataValue::try_from(secs.to_string()) {
            status.metadata_mut().insert("retry-after", v);
        }
    }
    status
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::parse();
    // Logs to stderr by RUST_LOG (default: warnings). The filter keeps the
    // AWS SDK's TRACE output of prompts, completions and the access key id
    // out of the log at every level (see tower_bedrock::logging).
    tower_bedrock::logging::try_init("warn")?;
    let mut emulator = None;
    let mut client = BedrockClientBuilder::new().region(settings.region.clone());
    if !settings.real_bedrock {
        let url = match &settings.endpoint_url {
            Some(url) => url.clone(),
            None => {
                let e = tower_bedrock_emulator::Emulator::start(
                    tower_bedrock_emulator::EmulatorConfig::default(),
                )
                .await?;
                let url = e.endpoint_url();
                println!("emulated Bedrock at {url}");
                emulator = Some(e);
                url
            }
        };
        client = client
            .endpoint_url(url)
            .static_credentials("AKIDEXAMPLE", "not-a-secret");
    }
    let gateway = Gateway::new(&settings, client.build().await?)?;
    println!("gRPC chat service on {}", settings.listen);
    tonic::transport::Server::builder()
        .add_service(gateway.into_server())
        .serve(settings.listen)
        .await?;
    drop(emulator);
    Ok(())
}
