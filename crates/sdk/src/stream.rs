//! Response streams with an idle timeout, classified in-stream errors and
//! usage reported when they end.
//!
//! The SDK's `EventReceiver` has no timeout of its own: a stream whose
//! server stops sending (a stalled model, a half-dead connection) waits
//! forever, and the read timeout of the client covers only the response
//! headers. [`BedrockStream`] bounds the wait for **every** event by an
//! idle timeout, turns the stream's errors into
//! [`ClassifiedError`]s (exceptions sent inside the stream through
//! [`classify_stream_error`]) and reports the final usage (ConverseStream's
//! `metadata` event, or the `amazon-bedrock-invocationMetrics` of
//! InvokeModelWithResponseStream's last chunk) exactly once through
//! [`ReportsUsage::defer_usage`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::{ConverseStreamOutput, ResponseStream, TokenUsage};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::event_stream::RawMessage;
use futures_core::Stream;
use tower_bedrock_classify::{InStreamError, ModelName, classify_stream_error};
use tower_bedrock_core::{
    Classification, ClassifiedError, ErrorClass, ReportsUsage, UnavailableKind, Usage,
    UsageCallback, names,
};

use crate::error::StreamError;

/// Code of the classification of an idle timeout.
pub const IDLE_TIMEOUT_CODE: &str = "StreamIdleTimeout";

/// An event of a Bedrock response stream that may carry the call's usage.
pub trait StreamEvent {
    /// The usage this event reports, if it is the one that does.
    fn usage(&self) -> Option<Usage>;
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
}

const METRICS_KEY: &[u8] = b"amazon-bedrock-invocationMetrics";

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
/// per event, classified errors, and usage reported at its end.
///
/// Read it with [`recv`](Self::recv) or as a [`Stream`] of
/// `Result<T, ClassifiedError<StreamError<E>>>`. After an error or the end
/// the stream yields nothing more.
///
/// Usage: [`ReportsUsage::usage`] is `Some` once the usage event has been
/// read. A callback registered with [`ReportsUsage::defer_usage`] is called
/// exactly once: with the usage when the stream ends (or fails, or is
/// dropped) after the usage event, with `None` when it ends, fails or is
/// dropped before it; immediately when the stream had already finished.
pub struct BedrockStream<T, E> {
    state: State<T, E>,
    idle_timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    usage: Option<Usage>,
    settle: Option<UsageCallback>,
    finished: bool,
    model: ModelName,
}

// Nothing is ever pinned inside: the receiver is moved in and out of a
// boxed future, the timer is boxed.
impl<T, E> Unpin for BedrockStream<T, E> {}

impl<T, E> fmt::Debug for BedrockStream<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockStream")
            .field("model", &self.model)
            .field("idle_timeout", &self.idle_timeout)
            .field("usage", &self.usage)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

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
            usage: None,
            settle: None,
            finished: false,
            model: ModelName::new(model),
        }
    }

    /// The next event; `Ok(None)` at the end.
    pub async fn recv(&mut self) -> Result<Option<T>, StreamItemError<E>> {
        std::future::poll_fn(|cx| self.poll_event(cx))
            .await
            .transpose()
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, StreamItemError<E>>>> {
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
                        self.state = State::Idle(rx);
                        return Poll::Ready(Some(Ok(event)));
                    }
                    Poll::Ready((_, Ok(None))) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Poll::Ready((_, Err(e))) => {
                        let c = classify_stream_error(&e);
                        self.record_error(&c);
                        self.finish();
                        return Poll::Ready(Some(Err(ClassifiedError::new(
                            StreamError::Sdk(e),
                            c,
                        ))));
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
                            self.record_error(&c);
                            self.finish();
                            return Poll::Ready(Some(Err(ClassifiedError::new(
                                StreamError::IdleTimeout(idle),
                                c,
                            ))));
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
    fn finish(&mut self) {
        self.state = State::Done;
        self.finished = true;
        if let Some(settle) = self.settle.take() {
            settle(self.usage);
        }
    }

    /// Whether the stream has ended (normally or not).
    pub fn is_finished(&self) -> bool {
        self.finished
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

    fn defer_usage(&mut self, settle: UsageCallback) -> Result<(), UsageCallback> {
        if self.finished {
            settle(self.usage);
        } else if let Some(previous) = self.settle.replace(settle) {
            // A second registration replaces the first; the first is told
            // nothing more will come, so it still runs exactly once.
            previous(None);
        }
        Ok(())
    }
}

impl<T, E> Drop for BedrockStream<T, E> {
    fn drop(&mut self) {
        if let Some(settle) = self.settle.take() {
            settle(self.usage);
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
