//! An axum chat gateway backed by the tower-bedrock stack.
//!
//! ```text
//! cargo run --example axum_gateway                 # against an in-process emulator
//! curl -s localhost:3000/v1/chat -H 'x-tenant: app-a' \
//!      -H 'content-type: application/json' -d '{"prompt":"Hello"}'
//! curl -s localhost:3000/v1/chat -H 'x-tenant: app-a' -H 'x-request-timeout-ms: 5000' \
//!      -H 'content-type: application/json' -d '{"prompt":"Hello"}'
//! curl -sN localhost:3000/v1/chat/stream -H 'x-tenant: app-a' \
//!      -H 'content-type: application/json' -d '{"prompt":"Hello"}'
//! curl -s localhost:3000/metrics
//! ```
//!
//! - `POST /v1/chat` with `{"prompt": "...", "max_tokens": 200}` and an
//!   `x-tenant` header naming the calling application: each tenant has its
//!   own share of one token budget (the same stack otherwise: one breaker
//!   per model, one retry budget, one fallback chain for everyone).
//! - `POST /v1/chat/stream`, same body and header: the answer as
//!   Server-Sent Events (`text/event-stream`), through the same stack for
//!   ConverseStream: `event: delta` with `{"text": ...}` per piece of text,
//!   then `event: done` with the model that answered, whether it was a
//!   fallback, the attempts and the token usage. The stream opens only once
//!   Bedrock's first event has arrived, so a failure before it (an
//!   in-stream throttle or 503 included) is retried or falls back to the
//!   next model, or becomes an HTTP error answer like `/v1/chat`'s. After
//!   the first event the model never changes: a failure ends the stream
//!   with `event: error` and the same JSON as an error answer (class and
//!   kind, never content).
//! - `GET /metrics`: every metric of the stack in the Prometheus text
//!   format, with a `region` label on each series (see `monitoring/`).
//! - Errors become HTTP answers through `tower_bedrock::ErrorReply`
//!   (feature `axum`): a local shed (the budget had no room) is
//!   `429 Too Many Requests` with `Retry-After`; an open circuit is `503`
//!   with `Retry-After`; Bedrock's own throttles and outages that the stack
//!   could not absorb are `429` / `503`; invalid requests (bad JSON, an
//!   empty prompt, a missing `x-tenant`) `400`, an unknown tenant `403`;
//!   timeouts `504`. Bodies are JSON, `{"error": {"class", "kind", "code",
//!   "request_id", "retry_after_seconds"}}`, never the prompt.
//! - Every call ends within the caller's `x-request-timeout-ms` (or
//!   `grpc-timeout`), or `--request-timeout-secs` (20 s) when it sends
//!   none: under load balancers' idle timeouts, so a throttle the stack
//!   cannot absorb reaches the caller as a 429 with `Retry-After` while it
//!   still listens.
//!
//! `--endpoint-url` points it at another Bedrock endpoint (a standalone
//! emulator); `--real-bedrock` at Amazon Bedrock with the default
//! credential chain.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;
use tower_bedrock::ErrorReply;
use tower_bedrock::breaker::CircuitBreakHandle;
use tower_bedrock::budget::{Budget, Limits};
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

/// The stack's error type.
pub type ChatError = ClassifiedError<ConverseSdkError>;
/// One tenant's stack.
pub type ChatService = BoxCloneSyncService<ConverseRequest, ConverseResponse, ChatError>;
/// The streaming stack's error type.
pub type ChatStreamError = ClassifiedError<ConverseStreamCallError>;
/// One tenant's streaming stack (sharing the breakers, the retry budget
/// and the token budget with its unary stack).
pub type ChatStreamService =
    BoxCloneSyncService<ConverseStreamRequest, ConverseStreamResponse, ChatStreamError>;

/// The gateway's settings.
#[derive(Debug, Clone, Parser)]
#[command(about = "A chat gateway backed by the tower-bedrock stack")]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Bedrock endpoint (an emulator); an in-process emulator is started
    /// when neither this nor --real-bedrock is given.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Use Amazon Bedrock with the default credential chain.
    #[arg(long)]
    pub real_bedrock: bool,
    /// AWS region (also the `region` label of every metric).
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
    /// Requests per minute the budget admits per model.
    #[arg(long)]
    pub requests_per_minute: Option<u64>,
    /// Longest wait for budget before a request is shed, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub max_wait_secs: f64,
    /// Quota window in seconds (60 for Bedrock; shorter against an
    /// emulator in compressed time).
    #[arg(long, default_value_t = 60.0)]
    pub window_secs: f64,
    /// Longest time a call may take when the caller sends no
    /// `x-request-timeout-ms` (or `grpc-timeout`), and the cap on what it
    /// sends, in seconds: under load balancers' idle timeouts.
    #[arg(long, default_value_t = 20.0)]
    pub request_timeout_secs: f64,
}

impl Settings {
    /// The defaults, as the command line gives them.
    pub fn defaults() -> Self {
        Settings::parse_from(["axum_gateway"])
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    tenants: Arc<HashMap<String, ChatService>>,
    streams: Arc<HashMap<String, ChatStreamService>>,
    model: Arc<str>,
    metrics: PrometheusHandle,
    breakers: CircuitBreakHandle,
    deadline: CallerDeadline,
    window: Duration,
}

impl AppState {
    /// The breakers of every model (to watch them, or force one open
    /// during an incident).
    pub fn breakers(&self) -> &CircuitBreakHandle {
        &self.breakers
    }

    /// The answer to a failed call (retry hints fall back to this
    /// gateway's quota window).
    fn reply(&self, e: &impl Classified) -> ErrorReply {
        ErrorReply::from_error_in(e, &Clock::system(), self.window)
    }
}

/// The caller's stack of `services`, by its `x-tenant` header.
fn tenant<'a, S>(
    services: &'a HashMap<String, S>,
    headers: &HeaderMap,
) -> Result<&'a S, ErrorReply> {
    let name = headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .ok_or(ErrorReply::client(ClientKind::Validation, "MissingTenant"))?;
    services.get(name).ok_or(ErrorReply::client(
        ClientKind::AccessDenied,
        "UnknownTenant",
    ))
}

/// The user's message; an empty prompt is refused.
fn message(prompt: String) -> Result<Message, ErrorReply> {
    if prompt.trim().is_empty() {
        return Err(ErrorReply::client(ClientKind::Validation, "EmptyPrompt"));
    }
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(prompt))
        .build()
        .map_err(|_| ErrorReply::client(ClientKind::Validation, "InvalidMessage"))
}

/// The answer's token cap: 512 unless asked, at most 8,192.
fn inference(max_tokens: Option<u32>) -> InferenceConfiguration {
    InferenceConfiguration::builder()
        .max_tokens(max_tokens.unwrap_or(512).clamp(1, 8192) as i32)
        .build()
}

/// Builds every tenant's stack over one SDK client.
pub fn state(
    settings: &Settings,
    client: aws_sdk_bedrockruntime::Client,
    metrics: PrometheusHandle,
) -> Result<AppState, Box<dyn std::error::Error>> {
    let window = Duration::from_secs_f64(settings.window_secs);
    let mut limits = Limits::tokens(settings.tokens_per_minute);
    if let Some(rpm) = settings.requests_per_minute {
        limits = limits.with_requests(rpm);
    }
    let mut budget = Budget::builder()
        .window(window)
        .tokens_per_window(limits.tokens)
        .max_wait(Duration::from_secs_f64(settings.max_wait_secs));
    if let Some(rpm) = limits.requests {
        budget = budget.requests_per_window(rpm);
    }
    let budget = budget.build()?;
    let layer = tower_bedrock::stack()
        .window(window)
        .fallback_chain(
            Chain::new()
                .then(settings.model.as_str())
                .then(Target::new(&settings.fallback_model).max_tokens(1024)),
        )
        .into_layer()?;
    // Streams: the same breakers and retry budget (the layers are shared
    // by clones), a fallback chain for the streaming request type.
    let stream_layer = tower_bedrock::stack()
        .window(window)
        .fallback_chain(
            Chain::new()
                .then(settings.model.as_str())
                .then(Target::new(&settings.fallback_model).max_tokens(1024)),
        )
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
        let stream: ChatStreamService = stream_layer
            .with_budget_layer(tenant.layer())
            .boxed_sync::<_, ConverseStreamRequest, _>(bedrock.clone());
        streams.insert(name.trim().to_owned(), stream);
    }
    let timeout = Duration::from_secs_f64(settings.request_timeout_secs);
    Ok(AppState {
        tenants: Arc::new(tenants),
        streams: Arc::new(streams),
        model: Arc::from(settings.model.as_str()),
        metrics,
        breakers: layer.breaker_layer().handle(),
        deadline: CallerDeadline::new()
            .default_limit(timeout)
            .max_limit(timeout),
        window,
    })
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat", post(chat))
        .route("/v1/chat/stream", post(chat_stream))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Bucket bounds (seconds) of the stack's histograms: attempt latency,
/// retry waits and budget waits, from a fast refusal to a long stream.
pub const SECONDS_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// A Prometheus recorder whose series all carry `region`. Histograms
/// (`*_seconds`) are exported with buckets (`_bucket`, what the Grafana
/// dashboard's `histogram_quantile` panels read), not as summaries.
pub fn prometheus(region: &str) -> metrics_exporter_prometheus::PrometheusRecorder {
    PrometheusBuilder::new()
        .add_global_label("region", region)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &SECONDS_BUCKETS,
        )
        .expect("bucket bounds are non-empty")
        .build_recorder()
}

/// A chat request.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The user's message.
    pub prompt: String,
    /// Cap on the answer's tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// A chat answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChatAnswer {
    /// The model's text.
    pub text: String,
    /// The model or profile that answered.
    pub model: String,
    /// Whether a fallback model answered.
    pub degraded: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

async fn chat(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Json<ChatAnswer>, ErrorReply> {
    let Json(body) = body?;
    let svc = tenant(&state.tenants, &headers)?;
    let limit = tower_bedrock::axum::caller_deadline(&state.deadline, &headers)?;
    let input = ConverseInput::builder()
        .model_id(&*state.model)
        .messages(message(body.prompt)?)
        .inference_config(inference(body.max_tokens))
        .build()
        .map_err(|_| ErrorReply::client(ClientKind::Validation, "InvalidRequest"))?;
    let report = CallReport::new();
    let request = ConverseRequest::new(input).with_report(report.clone());
    let answer = call_within(&mut svc.clone(), request, limit)
        .await
        .map_err(|e| state.reply(&e))?;
    let summary = report.summary();
    let usage = answer.usage().unwrap_or_default();
    Ok(Json(ChatAnswer {
        text: answer.text(),
        model: summary.served_by.clone().unwrap_or_default(),
        degraded: summary.degraded(),
        attempts: summary.attempts,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
    }))
}

/// The last event of a successful stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamDone {
    /// The model or profile that answered.
    pub model: String,
    /// Whether a fallback model answered.
    pub degraded: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

/// A piece of the answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamDelta {
    /// The text.
    pub text: String,
}

async fn chat_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ErrorReply> {
    let Json(body) = body?;
    let svc = tenant(&state.streams, &headers)?;
    let limit = tower_bedrock::axum::caller_deadline(&state.deadline, &headers)?;
    let input = ConverseStreamInput::builder()
        .model_id(&*state.model)
        .messages(message(body.prompt)?)
        .inference_config(inference(body.max_tokens))
        .build()
        .map_err(|_| ErrorReply::client(ClientKind::Validation, "InvalidRequest"))?;
    let report = CallReport::new();
    // Retries and fallbacks happen here, before anything is sent: the
    // stack answers once the stream's first event has arrived (within the
    // caller's limit; the stream itself then runs to its end).
    let request = ConverseStreamRequest::new(input).with_report(report.clone());
    let answer = call_within(&mut svc.clone(), request, limit)
        .await
        .map_err(|e| state.reply(&e))?;
    Ok(Sse::new(sse_events(answer, report, state.window)).into_response())
}

/// The stream's events as SSE: `delta`s, then `done`, or `error` when the
/// stream fails after its first event.
fn sse_events(
    answer: ConverseStreamResponse,
    report: CallReport,
    window: Duration,
) -> impl futures_util::Stream<Item = Result<Event, axum::Error>> {
    futures_util::stream::unfold(Some((answer, report)), move |state| async move {
        let (mut answer, report) = state?;
        loop {
            match answer.recv().await {
                Ok(Some(ConverseStreamOutput::ContentBlockDelta(d))) => {
                    let Some(Ok(text)) = d.delta().map(|d| d.as_text()) else {
                        continue;
                    };
                    let event = Event::default()
                        .event("delta")
                        .json_data(StreamDelta { text: text.clone() });
                    return Some((event, Some((answer, report))));
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    let usage = answer.usage().unwrap_or_default();
                    let summary = report.summary();
                    let event = Event::default().event("done").json_data(StreamDone {
                        model: summary.served_by.clone().unwrap_or_default(),
                        degraded: summary.degraded(),
                        attempts: summary.attempts,
                        input_tokens: usage.input_tokens,
                        output_tokens: usage.output_tokens,
                    });
                    return Some((event, None));
                }
                Err(e) => {
                    // The same JSON as an error answer.
                    let reply = ErrorReply::from_error_in(&e, &Clock::system(), window);
                    let event = Event::default().event("error").data(reply.json_body());
                    return Some((Ok(event), None));
                }
            }
        }
    })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::parse();
    // Logs to stderr by RUST_LOG (default: warnings). The filter keeps the
    // AWS SDK's TRACE output of prompts, completions and the access key id
    // out of the log at every level (see tower_bedrock::logging).
    tower_bedrock::logging::try_init("warn")?;
    let recorder = prometheus(&settings.region);
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    // The Bedrock endpoint: an in-process emulator unless told otherwise.
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
    let state = state(&settings, client.build().await?, handle)?;
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    println!(
        "chat gateway on http://{}/v1/chat (metrics on /metrics)",
        listener.local_addr()?
    );
    axum::serve(listener, router(state)).await?;
    drop(emulator);
    Ok(())
}
