//! `InvocationMetrics`: the CloudWatch-style per-call metrics that the
//! classifier does not emit: invocations, latency, input and output tokens.
//!
//! `ThrottleClassify` counts errors (`bedrock_invocation_errors_total`,
//! `bedrock_invocation_throttles_total`); a success rate also needs the
//! calls that succeeded. This layer sits right above the service that talks
//! to Bedrock (innermost in the preset stack, so every attempt counts, as in
//! CloudWatch) and, when each call ends:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `bedrock_invocations_total` ([`names::INVOCATIONS`]) | counter | `model` |
//! | `bedrock_invocation_latency_seconds` ([`INVOCATION_LATENCY`]) | histogram | `model`, `outcome` (`ok` / `error`) |
//! | `bedrock_input_tokens_total` ([`INPUT_TOKENS`]) | counter | `model` |
//! | `bedrock_output_tokens_total` ([`OUTPUT_TOKENS`]) | counter | `model` |
//!
//! Each call is also marked as sent
//! ([`tower_bedrock_core::sent::mark_sent`]), so that the circuit
//! breaker's slow-call rule times it from here, not from before the token
//! budget's queue.
//!
//! The `model` label is bounded
//! ([`tower_bedrock_core::labels::model_label`]): ids of configured
//! fallback targets and the first 100 distinct ids seen keep their own
//! label, any other id is counted as `other`, so junk model ids in requests
//! cannot create series without end.
//!
//! Token counters are incremented for responses that carry their usage
//! ([`ReportsUsage::usage`]) when the call ends, and for streamed
//! responses when the stream ends, through a usage observer
//! ([`ReportsUsage::defer_usage`], beside the budget's): the final usage,
//! or the usage known so far for a stream that failed after its first
//! event; nothing for a stream dropped before its usage arrived. A call
//! whose future is dropped before it ends is not counted. Errors and
//! responses pass through untouched.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::time::Instant;
use tower_bedrock_core::{ModelRequest, ReportsUsage, labels, names};
use tower_layer::Layer;
use tower_service::Service;

pub use tower_bedrock_core::names::{INPUT_TOKENS, INVOCATION_LATENCY, OUTPUT_TOKENS};

/// Applies [`InvocationMetrics`] to services.
#[derive(Debug, Clone, Copy, Default)]
pub struct InvocationMetricsLayer {
    _priv: (),
}

impl InvocationMetricsLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for InvocationMetricsLayer {
    type Service = InvocationMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InvocationMetrics { inner }
    }
}

/// Counts invocations, their latency and tokens per model (see the
/// [module docs](self)).
#[derive(Debug, Clone)]
pub struct InvocationMetrics<S> {
    inner: S,
}

impl<S> InvocationMetrics<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        InvocationMetrics { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for InvocationMetrics<S>
where
    S: Service<Req>,
    S::Response: ReportsUsage,
    Req: ModelRequest,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let model: Arc<str> = labels::model_label(req.model_id());
        // The request leaves for Bedrock now: a breaker above times it from
        // here, not from before a budget's queue.
        tower_bedrock_core::sent::mark_sent();
        ResponseFuture {
            inner: self.inner.call(req),
            model,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// Future of [`InvocationMetrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        model: Arc<str>,
        start: Instant,
    }
}

impl<F: std::fmt::Debug> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    T: ReportsUsage,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut out = ready!(this.inner.poll(cx));
        // Labels share the model label (no allocation for a model seen
        // before).
        let model = metrics::SharedString::from(Arc::clone(this.model));
        let elapsed = this.start.elapsed().as_secs_f64();
        metrics::counter!(names::INVOCATIONS, "model" => model.clone()).increment(1);
        let outcome = if out.is_ok() { "ok" } else { "error" };
        metrics::histogram!(INVOCATION_LATENCY, "model" => model.clone(), "outcome" => outcome)
            .record(elapsed);
        if let Ok(response) = out.as_mut() {
            match response.usage() {
                Some(u) => count_tokens(model, u),
                None => {
                    // A stream: counted when it ends. A response that does
                    // not defer its usage hands the callback back; dropped.
                    let _ = response.defer_usage(Box::new(move |u| {
                        if let Some(u) = u {
                            count_tokens(model, u);
                        }
                    }));
                }
            }
        }
        Poll::Ready(out)
    }
}

fn count_tokens(model: metrics::SharedString, u: tower_bedrock_core::Usage) {
    let input = u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens;
    metrics::counter!(INPUT_TOKENS, "model" => model.clone()).increment(input);
    metrics::counter!(OUTPUT_TOKENS, "model" => model).increment(u.output_tokens);
}
