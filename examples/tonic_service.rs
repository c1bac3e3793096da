//! A gRPC chat service (tonic) backed by the tower-bedrock stack.
//!
//! ```text
//! cargo run --example tonic_service      # against an in-process emulator
//! cargo run --example tonic_service -- --client "Hello"            # ask it
//! cargo run --example tonic_service -- --client "Hello" --stream   # AskStream
//! ```
//!
//! The client mode calls a running service (`--listen`, 127.0.0.1:50051 by
//! default) as tenant `--tenant` (app-a) with a `--timeout-secs` (10)
//! deadline, sent as `grpc-timeout`, and prints the answer, or the status
//! with its `grpc-retry-pushback-ms`. Any gRPC client works the same way,
//! e.g. `grpcurl -plaintext -import-path examples/proto -proto chat.proto
//! -H 'x-tenant: app-a' -max-time 10 -d '{"prompt":"Hello"}'
//! 127.0.0.1:50051 towerbedrock.chat.v1.Chat/Ask`.
//!
//! The API is `examples/proto/chat.proto` (`towerbedrock.chat.v1.Chat/Ask`,
//! and `AskStream`, the answer as a server stream);
//! the code tonic generates from it is checked in (`examples/proto/chat.rs`),
//! so no protoc is needed to build. Each caller names its application in an
//! `x-tenant` metadata entry and gets its own share of one token budget.
//!
//! Errors become gRPC statuses through `tower_bedrock::ErrorReply`
//! (feature `tonic`): a local shed (the budget had no room) or a throttle
//! the stack could not absorb is `RESOURCE_EXHAUSTED` with
//! `grpc-retry-pushback-ms` metadata (when to come back, in milliseconds);
//! open circuits and Bedrock outages are `UNAVAILABLE` (also with the
//! pushback); invalid requests (an empty prompt included)
//! `INVALID_ARGUMENT`; timeouts `DEADLINE_EXCEEDED`; a missing or unknown
//! tenant `UNAUTHENTICATED`. Messages start with `class/kind` and never
//! hold the prompt.
//!
//! Every call ends within the client's `grpc-timeout`, or
//! `--request-timeout-secs` (20 s) when it sends none: a throttle the stack
//! cannot absorb reaches the client while it still waits.
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

use clap::Parser;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tower::util::BoxCloneSyncService;
use tower_bedrock::ErrorReply;
use tower_bedrock::breaker::CircuitBreakHandle;
use tower_bedrock::budget::Budget;
use tower_bedrock::caller::{CallerDeadline, call_within};
use tower_bedrock::core::{
    CallReport, Classified, ClassifiedError, ClientKind, Clock, ReportsUsage,
};
use tower_bedrock::fallback::{Chain, Target};
use tower_bedrock::sdk::aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use tower_bedrock::sdk::aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;
use tower_bedrock::sdk::aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseStreamOutput, InferenceConfiguration, Message,
};
use tower_bedrock::sdk::{
    BedrockClientBuilder, BedrockService, ConverseRequest, ConverseResponse, ConverseSdkError,
    ConverseStreamCallError, ConverseStreamRequest, ConverseStreamResponse,
};

/// The code generated from `chat.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
pub mod proto {
    include!("proto/chat.rs");
}

use proto::ask_event::Event;
use proto::chat_client::ChatClient;
use proto::chat_server::{Chat, ChatServer};
use proto::{AskEvent, AskReply, AskRequest};

/// The stack's error type.
pub type ChatError = ClassifiedError<ConverseSdkError>;
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
    /// Longest time a call may take when the client sends no
    /// `grpc-timeout`, and the cap on what it sends, in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub request_timeout_secs: f64,
    /// Client mode: ask a running service (at --listen) this prompt.
    #[arg(long, value_name = "PROMPT")]
    pub client: Option<String>,
    /// Client mode: the tenant to ask as.
    #[arg(long, default_value = "app-a")]
    pub tenant: String,
    /// Client mode: use AskStream and print the answer as it arrives.
    #[arg(long)]
    pub stream: bool,
    /// Client mode: the call's deadline (sent as `grpc-timeout`), in
    /// seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout_secs: f64,
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
    deadline: CallerDeadline,
    window: Duration,
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
        let timeout = Duration::from_secs_f64(settings.request_timeout_secs);
        Ok(Gateway {
            tenants: Arc::new(tenants),
            streams: Arc::new(streams),
            model: Arc::from(settings.model.as_str()),
            breakers: layer.breaker_layer().handle(),
            deadline: CallerDeadline::new()
                .default_limit(timeout)
                .max_limit(timeout),
            window,
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

    /// The status of a failed call (retry hints fall back to this
    /// service's quota window).
    fn status(&self, e: &impl Classified) -> Status {
        ErrorReply::from_error_in(e, &Clock::system(), self.window).into()
    }
}

/// The caller's stack of `services`, by its `x-tenant` metadata.
fn tenant<'a, S>(
    services: &'a HashMap<String, S>,
    metadata: &MetadataMap,
) -> Result<&'a S, Status> {
    let name = metadata
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::unauthenticated("missing x-tenant metadata"))?;
    services
        .get(name)
        .ok_or_else(|| Status::unauthenticated("unknown tenant"))
}

/// The user's message; an empty prompt is refused.
fn message(prompt: String) -> Result<Message, Status> {
    if prompt.trim().is_empty() {
        return Err(ErrorReply::client(ClientKind::Validation, "EmptyPrompt").into());
    }
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(prompt))
        .build()
        .map_err(|_| ErrorReply::client(ClientKind::Validation, "InvalidMessage").into())
}

/// The answer's token cap: 512 when zero, at most 8,192.
fn inference(max_tokens: u32) -> InferenceConfiguration {
    let n = if max_tokens == 0 {
        512
    } else {
        max_tokens.min(8192)
    };
    InferenceConfiguration::builder()
        .max_tokens(n as i32)
        .build()
}

fn invalid_request<E>(_: E) -> Status {
    ErrorReply::client(ClientKind::Validation, "InvalidRequest").into()
}

#[tonic::async_trait]
impl Chat for Gateway {
    async fn ask(&self, request: Request<AskRequest>) -> Result<Response<AskReply>, Status> {
        let svc = tenant(&self.tenants, request.metadata())?;
        let limit = tower_bedrock::tonic::caller_deadline(&self.deadline, request.metadata())?;
        let ask = request.into_inner();
        let input = ConverseInput::builder()
            .model_id(&*self.model)
            .messages(message(ask.prompt)?)
            .inference_config(inference(ask.max_tokens))
            .build()
            .map_err(invalid_request)?;
        let report = CallReport::new();
        let request = ConverseRequest::new(input).with_report(report.clone());
        let answer = call_within(&mut svc.clone(), request, limit)
            .await
            .map_err(|e| self.status(&e))?;
        let s = report.summary();
        let usage = answer.usage().unwrap_or_default();
        Ok(Response::new(AskReply {
            text: answer.text(),
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
        let svc = tenant(&self.streams, request.metadata())?;
        let limit = tower_bedrock::tonic::caller_deadline(&self.deadline, request.metadata())?;
        let ask = request.into_inner();
        let input = ConverseStreamInput::builder()
            .model_id(&*self.model)
            .messages(message(ask.prompt)?)
            .inference_config(inference(ask.max_tokens))
            .build()
            .map_err(invalid_request)?;
        let report = CallReport::new();
        // Retries and fallbacks happen here: the stack answers once the
        // stream's first event has arrived (within the caller's limit).
        let request = ConverseStreamRequest::new(input).with_report(report.clone());
        let answer = call_within(&mut svc.clone(), request, limit)
            .await
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(Box::pin(events(answer, report, self.window))))
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
    window: Duration,
) -> impl futures_util::Stream<Item = Result<AskEvent, Status>> + Send + 'static {
    futures_util::stream::unfold(Some((answer, report)), move |state| async move {
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
                    let status = ErrorReply::from_error_in(&e, &Clock::system(), window).into();
                    return Some((Err(status), None));
                }
            }
        }
    })
}

/// Client mode: asks the service at `settings.listen` and prints the
/// answer (or the status and when to come back).
pub async fn ask_as_client(
    settings: &Settings,
    prompt: String,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut chat = ChatClient::connect(format!("http://{}", settings.listen)).await?;
    let mut request = Request::new(AskRequest {
        prompt,
        max_tokens: 0,
    });
    request
        .metadata_mut()
        .insert("x-tenant", settings.tenant.parse()?);
    request.set_timeout(Duration::from_secs_f64(settings.timeout_secs));
    let failed = |status: Status| -> Box<dyn std::error::Error> {
        let pushback = status
            .metadata()
            .get(tower_bedrock::tonic::RETRY_PUSHBACK_MS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        format!(
            "{:?}: {} (grpc-retry-pushback-ms: {pushback})",
            status.code(),
            status.message()
        )
        .into()
    };
    let done = if settings.stream {
        let mut events = chat.ask_stream(request).await.map_err(failed)?.into_inner();
        let mut done = None;
        while let Some(event) = events.message().await.map_err(failed)? {
            match event.event {
                Some(Event::Text(text)) => print!("{text}"),
                Some(Event::Done(reply)) => done = Some(reply),
                None => {}
            }
        }
        println!();
        done.ok_or("the stream ended without its done event")?
    } else {
        let reply = chat.ask(request).await.map_err(failed)?.into_inner();
        println!("{}", reply.text);
        reply
    };
    eprintln!(
        "model {}{}, {} attempt(s), {} input and {} output tokens",
        done.model,
        if done.degraded { " (fallback)" } else { "" },
        done.attempts,
        done.input_tokens,
        done.output_tokens
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::parse();
    // Logs to stderr by RUST_LOG (default: warnings). The filter keeps the
    // AWS SDK's TRACE output of prompts, completions and the access key id
    // out of the log at every level (see tower_bedrock::logging).
    tower_bedrock::logging::try_init("warn")?;
    if let Some(prompt) = settings.client.clone() {
        return ask_as_client(&settings, prompt).await;
    }
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
