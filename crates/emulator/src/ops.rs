//! The five Bedrock Runtime operations.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower_bedrock_core::model::{resource_id, split_profile};

use crate::body;
use crate::catalogue;
use crate::faults::{FaultKind, Streaming};
use crate::quota::{Grant, QuotaRefusal};
use crate::state::{InFlight, Shared};
use crate::tokens::{self, Family, Prompt};
use crate::validate::{self, Dialect};
use crate::wire::{BedrockError, event_frame, exception_frame, messages};

/// What the request log line shows about a model request (set as a
/// response extension; never any content).
#[derive(Debug, Clone, Default)]
pub(crate) struct LogInfo {
    pub(crate) op: &'static str,
    pub(crate) model: String,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
}

/// Marker extension: the connection must be closed without an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResetConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Converse,
    ConverseStream,
    Invoke,
    InvokeStream,
    CountTokens,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "converse" => Op::Converse,
            "converse-stream" => Op::ConverseStream,
            "invoke" => Op::Invoke,
            "invoke-with-response-stream" => Op::InvokeStream,
            "count-tokens" => Op::CountTokens,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Op::Converse => "Converse",
            Op::ConverseStream => "ConverseStream",
            Op::Invoke => "InvokeModel",
            Op::InvokeStream => "InvokeModelWithResponseStream",
            Op::CountTokens => "CountTokens",
        }
    }

    fn streaming(self) -> bool {
        matches!(self, Op::ConverseStream | Op::InvokeStream)
    }
}

/// A reservation that settles (or releases, charging the input) on drop.
#[derive(Debug)]
struct Held {
    shared: Arc<Shared>,
    key: String,
    grant: Grant,
    input: u64,
    done: bool,
}

impl Held {
    fn settle(mut self, output: u64) {
        self.done = true;
        self.shared
            .quotas
            .lock()
            .settle(&self.key, self.grant, self.input, output);
        Shared::bump_by(&self.shared.counters.output_tokens, output);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .quotas
                .lock()
                .settle(&self.key, self.grant, self.input, 0);
        }
    }
}

fn fail(shared: &Shared, e: BedrockError) -> BedrockError {
    let c = &shared.counters;
    let counter = match (e.status.as_u16(), e.code) {
        (429, _) => &c.throttled_fault,
        (503, _) => &c.unavailable,
        (500, _) => &c.internal_errors,
        (408, _) => &c.model_timeouts,
        (_, "ServiceQuotaExceededException") => &c.quota_exceeded,
        _ => &c.client_errors,
    };
    Shared::bump(counter);
    e
}

/// Axum handler for `POST /model/{modelId}/{operation}`.
pub(crate) async fn model_op(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let rid = shared.request_id();
    Shared::bump(&shared.counters.requests);
    let mut log = LogInfo::default();
    let mut resp = match serve(&shared, req, &mut log).await {
        Ok(r) => r,
        Err(e) => e.into_response(&rid),
    };
    resp.extensions_mut().insert(log);
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-amzn-RequestId", v);
    }
    resp
}

async fn serve(
    shared: &Arc<Shared>,
    req: Request,
    log: &mut LogInfo,
) -> Result<Response, BedrockError> {
    // 1. Route (acted upon after authentication, like AWS).
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let (raw_id, op) = path
        .strip_prefix("/model/")
        .and_then(|p| p.rsplit_once('/'))
        .unwrap_or(("", ""));
    let op = if parts.method == http::Method::POST {
        Op::parse(op)
    } else {
        None
    };
    log.op = op.map_or("unknown", Op::name);
    log.model = percent_encoding::percent_decode_str(raw_id)
        .decode_utf8_lossy()
        .into_owned();
    let sent_id = resource_id(&log.model).to_owned();
    let spec = catalogue::spec(split_profile(&sent_id).1);
    // 2. The whole body is read (or drained, when too large) before any
    // answer, so that the client is never cut off while still sending.
    let limit = spec.map_or(catalogue::MAX_BODY_BYTES, |s| s.max_body_bytes);
    let limit = limit.min(shared.initial.max_body_bytes);
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = body::read(body, limit, declared).await;
    // 3. Authentication: a SigV4 header must be present (not verified).
    match parts.headers.get(http::header::AUTHORIZATION) {
        None => {
            return Err(fail(
                shared,
                BedrockError::new(403, "AccessDeniedException", messages::MISSING_AUTH),
            ));
        }
        Some(v) if !v.as_bytes().starts_with(b"AWS4-HMAC-SHA256") => {
            return Err(fail(
                shared,
                BedrockError::new(403, "AccessDeniedException", messages::INVALID_AUTH),
            ));
        }
        Some(_) => {}
    }
    // 4. Connection cap.
    let Some(slot) = InFlight::acquire(shared) else {
        Shared::bump(&shared.counters.connection_cap);
        return Err(BedrockError::unavailable(messages::TOO_MANY_CONNECTIONS));
    };
    // 5. Operation and model id.
    let Some(op) = op else {
        return Err(fail(
            shared,
            BedrockError::new(
                404,
                "UnknownOperationException",
                messages::UNKNOWN_OPERATION,
            ),
        ));
    };
    log.op = op.name();
    let id = match percent_encoding::percent_decode_str(raw_id).decode_utf8() {
        // An ARN is reduced to its resource id: the model or profile id.
        Ok(id) if !id.is_empty() => resource_id(&id).to_owned(),
        _ => {
            return Err(fail(
                shared,
                BedrockError::validation(messages::INVALID_MODEL_ID),
            ));
        }
    };
    log.model.clone_from(&id);
    let (_, base) = split_profile(&id);
    let base = base.to_owned();
    if !shared.is_known(&base) {
        return Err(fail(
            shared,
            BedrockError::validation(messages::INVALID_MODEL_ID),
        ));
    }
    if let Some(spec) = spec
        && !shared.initial.allow_on_demand_everywhere
    {
        validate::on_demand(&id, spec).map_err(|e| fail(shared, BedrockError::validation(e.0)))?;
    }
    // 6. Body size, then JSON.
    let raw = match read {
        body::ReadBody::Complete(b) => b,
        body::ReadBody::TooLarge => {
            let msg = if matches!(op, Op::Invoke | Op::InvokeStream) {
                format!(
                    "1 validation error detected: Value at 'body' failed to satisfy constraint: Member must have length less than or equal to {limit}"
                )
            } else {
                format!("The request body exceeds the limit of {limit} bytes.")
            };
            return Err(fail(shared, BedrockError::validation(msg)));
        }
        body::ReadBody::Broken => {
            return Err(fail(shared, BedrockError::validation(messages::MALFORMED)));
        }
    };
    let body: Value = serde_json::from_slice(&raw)
        .map_err(|_| fail(shared, BedrockError::validation(messages::MALFORMED)))?;
    let family = Family::of(&base);
    let prompt = match op {
        Op::Converse | Op::ConverseStream => tokens::converse_prompt(&body, &raw)
            .and_then(|p| validate::conversation(&body, Dialect::Converse).map(|()| p)),
        Op::Invoke | Op::InvokeStream => tokens::invoke_prompt(family, &body, &raw).and_then(|p| {
            match family {
                Family::Anthropic => validate::conversation(&body, Dialect::Anthropic)?,
                Family::Nova => validate::conversation(&body, Dialect::Converse)?,
                Family::Llama | Family::Other => {}
            }
            Ok(p)
        }),
        Op::CountTokens => count_tokens_prompt(family, &body, &raw),
    }
    .and_then(|p| match spec {
        Some(spec) => {
            validate::input_length(p.input_tokens, spec)?;
            if op != Op::CountTokens {
                validate::max_tokens(p.max_tokens, spec)?;
            }
            Ok(p)
        }
        None => Ok(p),
    })
    .map_err(|e| fail(shared, BedrockError::validation(e.0)))?;
    log.input_tokens = Some(prompt.input_tokens);
    // 6. Faults.
    let stream = match op {
        Op::ConverseStream => Streaming::Converse,
        Op::InvokeStream => Streaming::Invoke,
        _ => Streaming::No,
    };
    let drawn = shared.faults.lock().draw(&id, &base, stream);
    let mut truncate = false;
    if let Some(kind) = drawn.request {
        match kind {
            FaultKind::Overloaded => {
                Shared::bump(&shared.counters.throttled_overloaded);
                return Err(BedrockError::throttling(messages::overloaded(&id)));
            }
            FaultKind::TooManyRequests => {
                return Err(fail(
                    shared,
                    BedrockError::throttling(messages::TOO_MANY_REQUESTS),
                ));
            }
            FaultKind::TooManyTokens => {
                return Err(fail(
                    shared,
                    BedrockError::throttling(messages::TOO_MANY_TOKENS),
                ));
            }
            FaultKind::ModelNotReady => {
                return Err(fail(
                    shared,
                    BedrockError::new(429, "ModelNotReadyException", messages::MODEL_NOT_READY),
                ));
            }
            FaultKind::ModelError => {
                return Err(fail(
                    shared,
                    BedrockError::new(424, "ModelErrorException", messages::MODEL_ERROR)
                        .with("originalStatusCode", json!(500))
                        .with("resourceName", json!(id)),
                ));
            }
            FaultKind::ServiceQuotaExceeded => {
                return Err(fail(
                    shared,
                    BedrockError::new(
                        400,
                        "ServiceQuotaExceededException",
                        messages::SERVICE_QUOTA_EXCEEDED,
                    ),
                ));
            }
            FaultKind::Unavailable => {
                return Err(fail(
                    shared,
                    BedrockError::unavailable(messages::SERVICE_UNAVAILABLE),
                ));
            }
            FaultKind::GettingThrottled => {
                return Err(fail(
                    shared,
                    BedrockError::unavailable(messages::GETTING_THROTTLED),
                ));
            }
            FaultKind::InternalError => {
                return Err(fail(
                    shared,
                    BedrockError::new(500, "InternalServerException", messages::INTERNAL),
                ));
            }
            FaultKind::ModelTimeout => {
                return Err(fail(
                    shared,
                    BedrockError::new(408, "ModelTimeoutException", messages::MODEL_TIMEOUT),
                ));
            }
            FaultKind::Stall { ms } => {
                Shared::bump(&shared.counters.stalls);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            FaultKind::Reset => {
                Shared::bump(&shared.counters.resets);
                let mut r = Response::new(Body::empty());
                r.extensions_mut().insert(ResetConnection);
                return Ok(r);
            }
            FaultKind::Truncate => {
                Shared::bump(&shared.counters.truncated);
                truncate = true;
            }
            _ => {}
        }
    }
    if op == Op::CountTokens {
        Shared::bump(&shared.counters.count_tokens);
        let body = json!({ "inputTokens": prompt.input_tokens }).to_string();
        return Ok(json_response(body, truncate));
    }
    // 7. Quota.
    let grant = shared
        .quotas
        .lock()
        .admit(&id, prompt.input_tokens, prompt.max_tokens);
    let grant = match grant {
        Ok(g) => g,
        Err(refusal) => {
            let (counter, msg) = match refusal {
                QuotaRefusal::Tokens => {
                    (&shared.counters.throttled_tokens, messages::TOO_MANY_TOKENS)
                }
                QuotaRefusal::Requests => (
                    &shared.counters.throttled_requests,
                    messages::TOO_MANY_REQUESTS,
                ),
                QuotaRefusal::TokensPerDay => (
                    &shared.counters.throttled_day,
                    messages::TOO_MANY_TOKENS_PER_DAY,
                ),
            };
            Shared::bump(counter);
            return Err(BedrockError::throttling(msg));
        }
    };
    Shared::bump(&shared.counters.admitted);
    Shared::bump_by(&shared.counters.input_tokens, prompt.input_tokens);
    let held = Held {
        shared: shared.clone(),
        key: id.clone(),
        grant,
        input: prompt.input_tokens,
        done: false,
    };
    let output = shared.initial.output_tokens.min(grant.max_tokens);
    log.output_tokens = Some(output);
    let stop = if output >= grant.max_tokens && prompt.max_tokens.is_some() {
        Stop::MaxTokens
    } else {
        Stop::EndTurn
    };
    let g = Generation {
        seed: prompt.fingerprint ^ shared.initial.seed,
        prompt,
        output,
        stop,
        base,
        latency: *shared.latency.lock(),
    };
    if op.streaming() {
        let steps = if op == Op::ConverseStream {
            converse_stream_steps(&g)
        } else {
            invoke_stream_steps(family, &g)
        };
        let steps = apply_stream_fault(shared, steps, drawn.in_stream, truncate);
        let mut r = stream_response(steps, g.latency, held, slot);
        if op == Op::InvokeStream {
            r.headers_mut().insert(
                "X-Amzn-Bedrock-Content-Type",
                HeaderValue::from_static("application/json"),
            );
        }
        return Ok(r);
    }
    let started = Instant::now();
    let delay = g.latency.first_token() + g.latency.tokens(output);
    // A zero sleep would still wait for the timer wheel's next tick (1 ms).
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let latency_ms = started.elapsed().as_millis() as u64;
    held.settle(output);
    drop(slot);
    let text = tokens::generate(g.seed, output);
    let (i, o) = (g.prompt.input_tokens, output);
    if op == Op::Converse {
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": g.stop.converse(),
            "usage": {"inputTokens": i, "outputTokens": o, "totalTokens": i + o},
            "metrics": {"latencyMs": latency_ms},
        });
        return Ok(json_response(body.to_string(), truncate));
    }
    let body = match family {
        Family::Anthropic => json!({
            "id": format!("msg_bdrk_{:016x}", g.seed),
            "type": "message",
            "role": "assistant",
            "model": g.base,
            "content": [{"type": "text", "text": text}],
            "stop_reason": g.stop.anthropic(),
            "stop_sequence": null,
            "usage": {"input_tokens": i, "output_tokens": o},
        }),
        Family::Nova => json!({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": g.stop.converse(),
            "usage": {"inputTokens": i, "outputTokens": o, "totalTokens": i + o},
        }),
        Family::Llama | Family::Other => json!({
            "generation": text,
            "prompt_token_count": i,
            "generation_token_count": o,
            "stop_reason": g.stop.llama(),
        }),
    };
    let mut r = json_response(body.to_string(), truncate);
    let h = r.headers_mut();
    h.insert("x-amzn-bedrock-input-token-count", HeaderValue::from(i));
    h.insert("x-amzn-bedrock-output-token-count", HeaderValue::from(o));
    h.insert(
        "x-amzn-bedrock-invocation-latency",
        HeaderValue::from(latency_ms),
    );
    Ok(r)
}

fn count_tokens_prompt(
    family: Family,
    body: &Value,
    raw: &[u8],
) -> Result<Prompt, tokens::Invalid> {
    let input = body.get("input");
    if let Some(c) = input.and_then(|i| i.get("converse")) {
        let p = tokens::converse_prompt(c, raw)?;
        validate::conversation(c, Dialect::Converse)?;
        return Ok(p);
    }
    if let Some(b) = input
        .and_then(|i| i.get("invokeModel"))
        .and_then(|i| i.get("body"))
        .and_then(Value::as_str)
    {
        let bytes = aws_smithy_types::base64::decode(b)
            .map_err(|_| tokens::Invalid(messages::MALFORMED.into()))?;
        let inner: Value = serde_json::from_slice(&bytes)
            .map_err(|_| tokens::Invalid(messages::MALFORMED.into()))?;
        let p = tokens::invoke_prompt(family, &inner, raw)?;
        match family {
            Family::Anthropic => validate::conversation(&inner, Dialect::Anthropic)?,
            Family::Nova => validate::conversation(&inner, Dialect::Converse)?,
            Family::Llama | Family::Other => {}
        }
        return Ok(p);
    }
    Err(tokens::Invalid(
        "1 validation error detected: Value null at 'input' failed to satisfy constraint: Member must not be null".into(),
    ))
}

fn json_response(body: String, truncate: bool) -> Response {
    let len = body.len();
    let mut r = if truncate {
        let half = Bytes::from(body).slice(..len / 2);
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(half),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "truncated by fault injection",
            )),
        ];
        Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
    } else {
        Response::new(Body::from(body))
    };
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    EndTurn,
    MaxTokens,
}

impl Stop {
    fn converse(self) -> &'static str {
        match self {
            Stop::EndTurn => "end_turn",
            Stop::MaxTokens => "max_tokens",
        }
    }
    fn anthropic(self) -> &'static str {
        self.converse()
    }
    fn llama(self) -> &'static str {
        match self {
            Stop::EndTurn => "stop",
            Stop::MaxTokens => "length",
        }
    }
}

#[derive(Debug)]
struct Generation {
    seed: u64,
    prompt: Prompt,
    output: u64,
    stop: Stop,
    base: String,
    latency: crate::config::Latency,
}

impl Generation {
    fn latency_ms(&self) -> u64 {
        (self.latency.first_token() + self.latency.tokens(self.output)).as_millis() as u64
    }
}

/// One step of a stream: a frame carrying `tokens` output tokens (paced by
/// the per-token latency), a pause, or an abort.
#[derive(Debug)]
enum Step {
    Frame(Bytes, u64),
    Pause(Duration),
    Abort,
}

const TOKENS_PER_DELTA: u64 = 4;

fn converse_stream_steps(g: &Generation) -> Vec<Step> {
    let (i, o) = (g.prompt.input_tokens, g.output);
    let mut v = vec![Step::Frame(
        event_frame("messageStart", json!({"role": "assistant"}).to_string()),
        0,
    )];
    for (text, n) in tokens::generate_chunks(g.seed, o, TOKENS_PER_DELTA) {
        let p = json!({"contentBlockIndex": 0, "delta": {"text": text}});
        v.push(Step::Frame(
            event_frame("contentBlockDelta", p.to_string()),
            n,
        ));
    }
    v.push(Step::Frame(
        event_frame(
            "contentBlockStop",
            json!({"contentBlockIndex": 0}).to_string(),
        ),
        0,
    ));
    v.push(Step::Frame(
        event_frame(
            "messageStop",
            json!({"stopReason": g.stop.converse()}).to_string(),
        ),
        0,
    ));
    let meta = json!({
        "usage": {"inputTokens": i, "outputTokens": o, "totalTokens": i + o},
        "metrics": {"latencyMs": g.latency_ms()},
    });
    v.push(Step::Frame(event_frame("metadata", meta.to_string()), 0));
    v
}

fn chunk(payload: Value) -> Bytes {
    let b64 = aws_smithy_types::base64::encode(payload.to_string());
    event_frame("chunk", json!({ "bytes": b64 }).to_string())
}

fn invoke_stream_steps(family: Family, g: &Generation) -> Vec<Step> {
    let (i, o) = (g.prompt.input_tokens, g.output);
    let metrics = json!({
        "inputTokenCount": i,
        "outputTokenCount": o,
        "invocationLatency": g.latency_ms(),
        "firstByteLatency": g.latency.first_token().as_millis() as u64,
    });
    let chunks = tokens::generate_chunks(g.seed, o, TOKENS_PER_DELTA);
    let mut v = Vec::new();
    match family {
        Family::Anthropic => {
            v.push(Step::Frame(
                chunk(json!({"type": "message_start", "message": {
                    "id": format!("msg_bdrk_{:016x}", g.seed), "type": "message", "role": "assistant",
                    "model": g.base, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": i, "output_tokens": 0}}})),
                0,
            ));
            v.push(Step::Frame(
                chunk(json!({"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}})),
                0,
            ));
            for (text, n) in chunks {
                v.push(Step::Frame(
                    chunk(json!({"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": text}})),
                    n,
                ));
            }
            v.push(Step::Frame(
                chunk(json!({"type": "content_block_stop", "index": 0})),
                0,
            ));
            v.push(Step::Frame(
                chunk(json!({"type": "message_delta",
                             "delta": {"stop_reason": g.stop.anthropic(), "stop_sequence": null},
                             "usage": {"output_tokens": o}})),
                0,
            ));
            v.push(Step::Frame(
                chunk(json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics})),
                0,
            ));
        }
        Family::Nova => {
            v.push(Step::Frame(
                chunk(json!({"messageStart": {"role": "assistant"}})),
                0,
            ));
            for (text, n) in chunks {
                v.push(Step::Frame(
                    chunk(json!({"contentBlockDelta": {"delta": {"text": text}, "contentBlockIndex": 0}})),
                    n,
                ));
            }
            v.push(Step::Frame(
                chunk(json!({"contentBlockStop": {"contentBlockIndex": 0}})),
                0,
            ));
            v.push(Step::Frame(
                chunk(json!({"messageStop": {"stopReason": g.stop.converse()}})),
                0,
            ));
            v.push(Step::Frame(
                chunk(
                    json!({"metadata": {"usage": {"inputTokens": i, "outputTokens": o}},
                             "amazon-bedrock-invocationMetrics": metrics}),
                ),
                0,
            ));
        }
        Family::Llama | Family::Other => {
            let mut so_far = 0;
            for (k, (text, n)) in chunks.into_iter().enumerate() {
                so_far += n;
                v.push(Step::Frame(
                    chunk(json!({"generation": text,
                                 "prompt_token_count": if k == 0 { Some(i) } else { None },
                                 "generation_token_count": so_far, "stop_reason": null})),
                    n,
                ));
            }
            v.push(Step::Frame(
                chunk(json!({"generation": "", "prompt_token_count": null,
                             "generation_token_count": o, "stop_reason": g.stop.llama(),
                             "amazon-bedrock-invocationMetrics": metrics})),
                0,
            ));
        }
    }
    v
}

fn apply_stream_fault(
    shared: &Shared,
    mut steps: Vec<Step>,
    fault: Option<FaultKind>,
    truncate: bool,
) -> Vec<Step> {
    if truncate {
        let keep = steps.len() / 2;
        steps.truncate(keep);
        steps.push(Step::Abort);
        return steps;
    }
    let Some(fault) = fault else { return steps };
    let (after, insert) = match fault {
        FaultKind::StreamThrottle { after_events } => (
            after_events,
            Some(BedrockError::throttling(messages::TOO_MANY_TOKENS)),
        ),
        FaultKind::StreamUnavailable { after_events } => (
            after_events,
            Some(BedrockError::unavailable(messages::SERVICE_UNAVAILABLE)),
        ),
        FaultKind::StreamError { after_events } => (
            after_events,
            Some(BedrockError::new(
                500,
                "InternalServerException",
                messages::INTERNAL,
            )),
        ),
        FaultKind::StreamModelError { after_events } => (
            after_events,
            Some(
                BedrockError::new(
                    424,
                    "ModelStreamErrorException",
                    messages::MODEL_STREAM_ERROR,
                )
                .with("originalStatusCode", json!(500))
                .with("originalMessage", json!(messages::INTERNAL)),
            ),
        ),
        FaultKind::StreamModelTimeout { after_events } => (
            after_events,
            Some(BedrockError::new(
                408,
                "ModelTimeoutException",
                messages::MODEL_TIMEOUT,
            )),
        ),
        FaultKind::StreamValidation { after_events } => (
            after_events,
            Some(BedrockError::validation(messages::MALFORMED)),
        ),
        FaultKind::StreamStall { after_events, ms } => {
            Shared::bump(&shared.counters.stream_stalls);
            let at = (after_events as usize).min(steps.len());
            steps.insert(at, Step::Pause(Duration::from_millis(ms)));
            return steps;
        }
        _ => return steps,
    };
    if let Some(err) = insert {
        Shared::bump(&shared.counters.stream_exceptions);
        let at = (after as usize).min(steps.len());
        steps.truncate(at);
        steps.push(Step::Frame(exception_frame(&err), 0));
    }
    steps
}

/// Sleeps `d` unless the receiver goes away first; `false` if it did.
async fn wait(tx: &mpsc::Sender<Result<Bytes, std::io::Error>>, d: Duration) -> bool {
    if d.is_zero() {
        return !tx.is_closed();
    }
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = tx.closed() => false,
    }
}

fn stream_response(
    steps: Vec<Step>,
    latency: crate::config::Latency,
    held: Held,
    slot: InFlight,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        let _slot = slot;
        let mut sent = 0;
        // Every wait ends early when the client goes away, so that its
        // reservation and in-flight slot are released at once.
        'run: {
            if !wait(&tx, latency.first_token()).await {
                break 'run;
            }
            for step in steps {
                match step {
                    Step::Frame(bytes, tokens) => {
                        if tokens > 0 && !wait(&tx, latency.tokens(tokens)).await {
                            break 'run;
                        }
                        if tx.send(Ok(bytes)).await.is_err() {
                            break 'run;
                        }
                        sent += tokens;
                    }
                    Step::Pause(d) => {
                        if !wait(&tx, d).await {
                            break 'run;
                        }
                    }
                    Step::Abort => {
                        let _ = tx
                            .send(Err(std::io::Error::new(
                                std::io::ErrorKind::ConnectionReset,
                                "truncated by fault injection",
                            )))
                            .await;
                        break 'run;
                    }
                }
            }
        }
        held.settle(sent);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    r
}
