//! Response streams that open as part of the call, with an idle timeout,
//! classified in-stream errors and usage reported when they end.
//!
//! **Opening.** [`BedrockService`](crate::BedrockService) returns a stream
//! only once its first event has arrived (within the idle timeout). A
//! stream that fails before it (an in-stream `throttlingException` or
//! `serviceUnavailableException` sent after HTTP 200, a stall, a broken
//! connection) is the call's error,
//! [`StreamOpenError::FirstEvent`](crate::StreamOpenError::FirstEvent),
//! classified like any failed call: the retry, breaker, budget and fallback
//! layers above treat it as they treat a unary failure. The first event is
//! kept and handed to the reader first.
//!
//! **After the first event.** The SDK's `EventReceiver` has no timeout of
//! its own; [`BedrockStream`] bounds the wait for **every** event by an
//! idle timeout and turns the stream's errors into [`ClassifiedError`]
//! items (exceptions sent inside the stream through
//! [`classify_stream_error`]): a failure ends the stream with a typed
//! error, never a silent truncation. The layers watching the call through
//! [`stream_end`](tower_bedrock_core::stream_end) (the circuit breaker)
//! learn how the stream ended: completed, failed (with its classification)
//! or dropped.
//!
//! **Usage.** Every callback registered with
//! [`ReportsUsage::defer_usage`] (any number of them) is called exactly
//! once when the stream ends, with:
//!
//! | the stream | usage given |
//! |---|---|
//! | read to its end | the final usage event (ConverseStream's `metadata`, the `amazon-bedrock-invocationMetrics` of InvokeModelWithResponseStream's last chunk); `None` if the model sent none |
//! | failed after its first event | the final usage if it had arrived, else **the usage known so far**: the request's input tokens (counted, or the [heuristic](crate::estimate)) plus the output tokens of the events delivered (the same heuristic over their text) |
//! | dropped by its reader before its end | the final usage if it had arrived, else `None` (a budget keeps the reservation: the model may still be generating) |
//!
//! Why the usage so far for a failed stream, and how sure we are:
//!
//! - Bedrock documents that its token quota is reserved when a call is
//!   admitted (input plus `max_tokens` times the burndown rate) and
//!   adjusted to the real usage when the call ends ("How tokens are
//!   counted in Amazon Bedrock",
//!   <https://docs.aws.amazon.com/bedrock/latest/userguide/quotas-token-burndown.html>),
//!   and that on-demand inference is billed per input and output token
//!   processed (<https://aws.amazon.com/bedrock/pricing/>).
//! - It documents the exceptions a stream can end with
//!   (`ConverseStreamOutput`,
//!   <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStreamOutput.html>)
//!   but **not** what is counted or billed for a stream that ends with one
//!   half-way. We found no AWS statement either way.
//! - What we follow: the stream's usage event never comes, generation
//!   stops with the exception, and the output produced is the output sent;
//!   so the usage is the input plus the output delivered. The emulator
//!   settles its quota the same way. It is an estimate (the heuristic
//!   counts the delivered text), documented as one. A stream whose end is
//!   unknown (dropped by its reader) keeps the conservative reservation,
//!   since the model may still be generating.
//!
//! # Example
//!
//! ```
//! use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;
//! use aws_sdk_bedrockruntime::types::{
//!     ContentBlock, ConversationRole, ConverseStreamOutput, Message,
//! };
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_bedrock_classify::ThrottleClassifyLayer;
//! use tower_bedrock_core::{Classified, ErrorClass, ThrottleKind, UnavailableKind};
//! use tower_bedrock_emulator::{Emulator, EmulatorConfig, FaultKind, FaultRule};
//! use tower_bedrock_sdk::{BedrockClientBuilder, BedrockService, ConverseStreamRequest};
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
//! let svc = ServiceBuilder::new()
//!     .layer(ThrottleClassifyLayer::new())
//!     .service(BedrockService::new(client));
//! let ask = || -> Result<ConverseStreamRequest, Box<dyn std::error::Error>> {
//!     Ok(ConverseStreamInput::builder()
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
//!
//! // A throttle sent inside the stream, before any event: the call's error.
//! emulator.set_faults(vec![
//!     FaultRule::new(FaultKind::StreamThrottle { after_events: 0 }).count(1),
//! ])?;
//! let err = svc.clone().oneshot(ask()?).await.unwrap_err();
//! assert_eq!(err.class(), ErrorClass::Throttled(ThrottleKind::TokenRate));
//! assert!(err.inner().unwrap().is_in_stream());
//!
//! // A 503 after two events: the events, then a classified error item.
//! emulator.set_faults(vec![
//!     FaultRule::new(FaultKind::StreamUnavailable { after_events: 2 }).count(1),
//! ])?;
//! let mut answer = svc.clone().oneshot(ask()?).await?;
//! let first = answer.recv().await?.expect("read by the call, handed on");
//! assert!(matches!(first, ConverseStreamOutput::MessageStart(_)));
//! assert!(answer.recv().await?.is_some());
//! let err = answer.recv().await.unwrap_err();
//! assert_eq!(err.class(), ErrorClass::Unavailable(UnavailableKind::Service));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::{
    ContentBlockDelta, ConverseStreamOutput, ReasoningContentBlockDelta, ResponseStream, TokenUsage,
};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::event_stream::RawMessage;
use futures_core::Stream;
use tower_bedrock_classify::{InStreamError, ModelName, classify_stream_error};
use tower_bedrock_core::stream_end::{StreamEnd, StreamOutcome};
use tower_bedrock_core::{
    Classification, ClassifiedError, ErrorClass, ReportsUsage, UnavailableKind, Usage,
    UsageCallback, UsageObservers, names,
};

use crate::error::StreamError;
use crate::estimate::text_tokens;

/// Code of the classification of an idle timeout.
pub const IDLE_TIMEOUT_CODE: &str = "StreamIdleTimeout";

/// An event of a Bedrock response stream that may carry the call's usage.
pub trait StreamEvent {
    /// The usage this event reports, if it is the one that does.
    fn usage(&self) -> Option<Usage>;

    /// Estimated output tokens this event delivers (its generated text, by
    /// the [heuristic](crate::estimate)), for the usage of a stream that
    /// fails before its usage event. Zero by default.
    fn output_tokens(&self) -> u64 {
        0
    }
}

fn clamp(n: i32) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Converts the SDK's token usage.
pub fn usage_from_sdk(u: &TokenUsage) -> Usage {
    Usage {
        input_tokens: clamp(u.input_tokens),
        output_tokens: clamp(u.output_tokens),
        cache_read_input_tokens: u.cache_read_input_tokens.map_or(0, clamp),
        cache_write_input_tokens: u.cache_write_input_tokens.map_or(0, clamp),
    }
}

impl StreamEvent for ConverseStreamOutput {
    /// The `metadata` event's usage.
    fn usage(&self) -> Option<Usage> {
        match self {
            ConverseStreamOutput::Metadata(m) => m.usage.as_ref().map(usage_from_sdk),
            _ => None,
        }
    }

    /// Text, tool input and reasoning text of a `contentBlockDelta`.
    fn output_tokens(&self) -> u64 {
        let ConverseStreamOutput::ContentBlockDelta(d) = self else {
            return 0;
        };
        match d.delta.as_ref() {
            Some(ContentBlockDelta::Text(t)) => text_tokens(t),
            Some(ContentBlockDelta::ToolUse(t)) => text_tokens(&t.input),
            Some(ContentBlockDelta::ReasoningContent(ReasoningContentBlockDelta::Text(t))) => {
                text_tokens(t)
            }
            _ => 0,
        }
    }
}

const METRICS_KEY: &[u8] = b"amazon-bedrock-invocationMetrics";

fn chunk_json(event: &ResponseStream) -> Option<serde_json::Value> {
    let ResponseStream::Chunk(part) = event else {
        return None;
    };
    serde_json::from_slice(part.bytes.as_ref()?.as_ref()).ok()
}

impl StreamEvent for ResponseStream {
    /// The `amazon-bedrock-invocationMetrics` of the last chunk
    /// (`inputTokenCount`, `outputTokenCount`, and the cache counts when
    /// present). Only chunks containing that key are parsed.
    fn usage(&self) -> Option<Usage> {
        let ResponseStream::Chunk(part) = self else {
            return None;
        };
        let bytes = part.bytes.as_ref()?.as_ref();
        if !bytes.windows(METRICS_KEY.len()).any(|w| w == METRICS_KEY) {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let m = v.get("amazon-bedrock-invocationMetrics")?;
        let n = |k: &str| m.get(k).and_then(serde_json::Value::as_u64);
        Some(Usage {
            input_tokens: n("inputTokenCount")?,
            output_tokens: n("outputTokenCount")?,
            cache_read_input_tokens: n("cacheReadInputTokenCount").unwrap_or(0),
            cache_write_input_tokens: n("cacheWriteInputTokenCount").unwrap_or(0),
        })
    }

    /// The generated text of a chunk, in the model families' formats:
    /// Anthropic `delta.text`, Nova `contentBlockDelta.delta.text`, Llama
    /// `generation`, Titan `outputText`, legacy Anthropic `completion`.
    fn output_tokens(&self) -> u64 {
        let Some(v) = chunk_json(self) else {
            return 0;
        };
        let text = v
            .pointer("/delta/text")
            .or_else(|| v.pointer("/contentBlockDelta/delta/text"))
            .or_else(|| v.get("generation"))
            .or_else(|| v.get("outputText"))
            .or_else(|| v.get("completion"))
            .and_then(serde_json::Value::as_str);
        text.map_or(0, text_tokens)
    }
}

type Recv<T, E> = (
    Box<EventReceiver<T, E>>,
    Result<Option<T>, SdkError<E, RawMessage>>,
);
type RecvFuture<T, E> = Pin<Box<dyn Future<Output = Recv<T, E>> + Send>>;

enum State<T, E> {
    Idle(Box<EventReceiver<T, E>>),
    Reading(RecvFuture<T, E>),
    Done,
}

/// The error type of a [`BedrockStream`]'s items.
pub type StreamItemError<E> = ClassifiedError<StreamError<E>>;

/// A Bedrock response stream: an SDK `EventReceiver` with an idle timeout
/// per event, classified errors, and usage reported at its end (see the
/// [module docs](self) for what each end reports).
///
/// Read it with [`recv`](Self::recv) or as a [`Stream`] of
/// `Result<T, ClassifiedError<StreamError<E>>>`. After an error or the end
/// the stream yields nothing more. Streams returned by
/// [`BedrockService`](crate::BedrockService) have already received their
/// first event, which `recv` returns first.
///
/// Usage: [`ReportsUsage::usage`] is `Some` once the usage event has been
/// read. Every callback registered with [`ReportsUsage::defer_usage`] is
/// called exactly once; immediately when the stream had already finished.
pub struct BedrockStream<T, E> {
    state: State<T, E>,
    idle_timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The first event, read when the stream opened, not yet handed out.
    first: Option<T>,
    usage: Option<Usage>,
    input_tokens: u64,
    output_tokens: u64,
    observers: UsageObservers,
    outcome: Option<StreamOutcome>,
    finished: bool,
    model: ModelName,
    request_id: Option<String>,
}

// Nothing is ever pinned inside: the receiver is moved in and out of a
// boxed future, the timer is boxed.
impl<T, E> Unpin for BedrockStream<T, E> {}

impl<T, E> fmt::Debug for BedrockStream<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockStream")
            .field("model", &self.model)
            .field("request_id", &self.request_id)
            .field("idle_timeout", &self.idle_timeout)
            .field("usage", &self.usage)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// One raw read: an event, the end, or a classified failure (not yet
/// recorded anywhere).
type Raw<T, E> = Option<Result<T, (StreamError<E>, Classification)>>;

impl<T, E> BedrockStream<T, E>
where
    T: StreamEvent + Send + 'static,
    E: InStreamError + Send + 'static,
{
    /// Wraps a receiver. `idle_timeout` bounds the wait for each event
    /// (`None`: wait forever, as the SDK does); `model` labels traces and
    /// metrics.
    pub fn new(receiver: EventReceiver<T, E>, idle_timeout: Option<Duration>, model: &str) -> Self {
        BedrockStream {
            state: State::Idle(Box::new(receiver)),
            idle_timeout,
            sleep: None,
            first: None,
            usage: None,
            input_tokens: 0,
            output_tokens: 0,
            observers: UsageObservers::new(),
            outcome: None,
            finished: false,
            model: ModelName::new(model),
            request_id: None,
        }
    }

    /// The request's input tokens (counted or estimated), for the usage of
    /// a stream that fails before its usage event.
    #[must_use]
    pub fn with_input_tokens(mut self, input_tokens: u64) -> Self {
        self.input_tokens = input_tokens;
        self
    }

    /// The request id of the call (from the response headers), added to
    /// the classification of in-stream errors.
    #[must_use]
    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// Reads the first event and keeps it for the reader: the opening of
    /// the stream, part of the call. A failure before the first event is
    /// returned (not recorded: the call's error is classified and counted
    /// by the layers above) and ends the stream. An empty stream opens and
    /// is finished at once.
    ///
    /// The wait is bounded by the idle timeout and, when a layer above set
    /// one, by the call's deadline
    /// ([`call_deadline`](tower_bedrock_core::deadline::call_deadline)):
    /// a first event that has not come by then ends the stream with
    /// [`StreamError::Deadline`].
    pub async fn open(&mut self) -> Result<(), StreamError<E>> {
        if self.first.is_some() || self.finished {
            return Ok(());
        }
        let first = match tower_bedrock_core::deadline::call_deadline() {
            Some(at) => {
                match tokio::time::timeout_at(at, std::future::poll_fn(|cx| self.poll_raw(cx)))
                    .await
                {
                    Ok(first) => first,
                    Err(_) => {
                        // Dropping the read drops the receiver and with it
                        // the connection.
                        self.state = State::Done;
                        self.finished = true;
                        return Err(StreamError::Deadline);
                    }
                }
            }
            None => std::future::poll_fn(|cx| self.poll_raw(cx)).await,
        };
        match first {
            Some(Ok(event)) => {
                self.first = Some(event);
                Ok(())
            }
            None => {
                self.finish(StreamEnd::Completed);
                Ok(())
            }
            Some(Err((e, _))) => {
                // Nobody has seen this stream: nothing to report but the
                // call's error.
                self.finished = true;
                Err(e)
            }
        }
    }

    /// The next event; `Ok(None)` at the end.
    pub async fn recv(&mut self) -> Result<Option<T>, StreamItemError<E>> {
        std::future::poll_fn(|cx| self.poll_event(cx))
            .await
            .transpose()
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, StreamItemError<E>>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        match std::task::ready!(self.poll_raw(cx)) {
            Some(Ok(event)) => Poll::Ready(Some(Ok(event))),
            None => {
                self.finish(StreamEnd::Completed);
                Poll::Ready(None)
            }
            Some(Err((e, mut c))) => {
                if c.request_id.is_none() {
                    c.request_id.clone_from(&self.request_id);
                }
                self.record_error(&c);
                self.finish(StreamEnd::Failed(c.clone()));
                Poll::Ready(Some(Err(ClassifiedError::new(e, c))))
            }
        }
    }

    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Raw<T, E>> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Idle(mut rx) => {
                    self.state = State::Reading(Box::pin(async move {
                        let r = rx.recv().await;
                        (rx, r)
                    }));
                    if let Some(idle) = self.idle_timeout {
                        let deadline = tokio::time::Instant::now() + idle;
                        match &mut self.sleep {
                            Some(s) => s.as_mut().reset(deadline),
                            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                    }
                }
                State::Reading(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready((rx, Ok(Some(event)))) => {
                        if let Some(u) = event.usage() {
                            self.usage = Some(u);
                        }
                        self.output_tokens =
                            self.output_tokens.saturating_add(event.output_tokens());
                        self.state = State::Idle(rx);
                        return Poll::Ready(Some(Ok(event)));
                    }
                    Poll::Ready((_, Ok(None))) => return Poll::Ready(None),
                    Poll::Ready((_, Err(e))) => {
                        let c = classify_stream_error(&e);
                        return Poll::Ready(Some(Err((StreamError::Sdk(e), c))));
                    }
                    Poll::Pending => {
                        if let (Some(idle), Some(sleep)) = (self.idle_timeout, &mut self.sleep)
                            && sleep.as_mut().poll(cx).is_ready()
                        {
                            // Dropping the read future drops the receiver
                            // and with it the connection.
                            drop(fut);
                            let c = Classification::new(ErrorClass::Unavailable(
                                UnavailableKind::Network,
                            ))
                            .with_code(IDLE_TIMEOUT_CODE);
                            return Poll::Ready(Some(Err((StreamError::IdleTimeout(idle), c))));
                        }
                        self.state = State::Reading(fut);
                        return Poll::Pending;
                    }
                },
            }
        }
    }

    fn record_error(&self, c: &Classification) {
        let model = self.model.as_str().to_owned();
        let code = c.code().unwrap_or("").to_owned();
        tracing::warn!(
            target: "tower_bedrock::sdk",
            model = %self.model,
            code = %code,
            class = c.class.label(),
            kind = c.class.kind_label(),
            request_id = c.request_id.as_deref().unwrap_or(""),
            "bedrock response stream failed"
        );
        metrics::counter!(
            names::INVOCATION_ERRORS,
            "class" => c.class.label(),
            "kind" => c.class.kind_label(),
            "model" => model.clone(),
            "code" => code,
        )
        .increment(1);
        if c.class.is_throttle() {
            metrics::counter!(
                names::INVOCATION_THROTTLES,
                "kind" => c.class.kind_label(),
                "model" => model,
            )
            .increment(1);
        }
    }
}

impl<T, E> BedrockStream<T, E> {
    /// The usage known so far: the request's input tokens and the
    /// estimated output tokens of the events read (see the
    /// [module docs](self)).
    pub fn usage_so_far(&self) -> Usage {
        Usage::new(self.input_tokens, self.output_tokens)
    }

    /// Reports how the stream ends to the layers watching it (the
    /// [`StreamOutcome`] of the call), at once if it already ended.
    pub fn watch(&mut self, outcome: Option<StreamOutcome>) {
        if let Some(outcome) = outcome {
            if self.finished {
                outcome.end(StreamEnd::Completed);
            } else {
                self.outcome = Some(outcome);
            }
        }
    }

    fn finish(&mut self, end: StreamEnd) {
        self.state = State::Done;
        self.finished = true;
        let usage = match end {
            StreamEnd::Failed(_) => self.usage.or(Some(self.usage_so_far())),
            _ => self.usage,
        };
        self.observers.finish(usage);
        if let Some(outcome) = self.outcome.take() {
            outcome.end(end);
        }
    }

    /// Whether the stream has ended (normally or not).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The request id of the call, when the response carried one.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
}

impl<T, E> Stream for BedrockStream<T, E>
where
    T: StreamEvent + Send + 'static,
    E: InStreamError + Send + 'static,
{
    type Item = Result<T, StreamItemError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

impl<T, E> ReportsUsage for BedrockStream<T, E> {
    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Adds an observer; every observer gets the usage exactly once.
    fn defer_usage(&mut self, settle: UsageCallback) -> Result<(), UsageCallback> {
        self.observers.register(settle);
        Ok(())
    }
}

impl<T, E> Drop for BedrockStream<T, E> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(StreamEnd::Dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_bedrockruntime::primitives::Blob;
    use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
    use aws_sdk_bedrockruntime::types::{ConverseStreamMetadataEvent, PayloadPart};

    fn chunk(json: &str) -> ResponseStream {
        ResponseStream::Chunk(PayloadPart::builder().bytes(Blob::new(json)).build())
    }

    #[test]
    fn usage_from_the_final_events_only() {
        let meta = ConverseStreamOutput::Metadata(
            ConverseStreamMetadataEvent::builder()
                .usage(
                    TokenUsage::builder()
                        .input_tokens(12)
                        .output_tokens(34)
                        .total_tokens(46)
                        .cache_read_input_tokens(5)
                        .build()
                        .unwrap(),
                )
                .build(),
        );
        assert_eq!(
            meta.usage(),
            Some(Usage {
                input_tokens: 12,
                output_tokens: 34,
                cache_read_input_tokens: 5,
                cache_write_input_tokens: 0
            })
        );
        let last = chunk(
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":7,"outputTokenCount":9,"invocationLatency":3,"firstByteLatency":1}}"#,
        );
        assert_eq!(last.usage(), Some(Usage::new(7, 9)));
        // A delta mentioning the key in its text is not the metrics event.
        let delta = chunk(
            r#"{"type":"content_block_delta","delta":{"text":"amazon-bedrock-invocationMetrics"}}"#,
        );
        assert_eq!(delta.usage(), None);
        assert_eq!(
            chunk("not json amazon-bedrock-invocationMetrics").usage(),
            None
        );
        assert_eq!(chunk(r#"{"type":"ping"}"#).usage(), None);
    }

    #[test]
    fn in_stream_codes_come_from_the_variant() {
        use aws_sdk_bedrockruntime::types::error::ThrottlingException;
        let e = ConverseStreamOutputError::ThrottlingException(
            ThrottlingException::builder()
                .message("Too many tokens, please wait before trying again.")
                // As the SDK decodes it: message in the metadata, no code.
                .meta(
                    aws_smithy_types::error::ErrorMetadata::builder()
                        .message("Too many tokens, please wait before trying again.")
                        .build(),
                )
                .build(),
        );
        assert_eq!(e.exception_code(), Some("ThrottlingException"));
        let raw = RawMessage::invalid(None);
        let c = classify_stream_error(&SdkError::service_error(e, raw));
        assert_eq!(
            c.class,
            ErrorClass::Throttled(tower_bedrock_core::ThrottleKind::TokenRate)
        );
        assert_eq!(c.code(), Some("ThrottlingException"));
    }
}
