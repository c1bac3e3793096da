//! [`CountTokensLayer`]: exact input tokens from the CountTokens API before
//! a call, for the layers that budget by token demand.
//!
//! The [heuristic](crate::estimate) is cheap but only an estimate. Placed
//! above `TokenBudget`, this layer asks Bedrock's CountTokens (free, no
//! quota) for the exact input tokens of each request whose estimate is at
//! least [`min_estimate`](CountTokensLayer::min_estimate) and stores them in
//! the request's `counted_input_tokens`, which its
//! [`token_demand`](tower_bedrock_core::ModelRequest::token_demand) then
//! reports. Small prompts skip the extra round trip; a failed count (a
//! model without CountTokens support, a throttle, a network error) keeps
//! the estimate and never fails the call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_bedrock_classify::classify_sdk_error;
use tower_bedrock_core::ModelRequest;
use tower_layer::Layer;
use tower_service::Service;

use crate::request::{
    ConverseRequest, ConverseStreamRequest, CountTokensRequest, InvokeModelRequest,
    InvokeModelStreamRequest,
};
use crate::service::BedrockService;

/// A request whose input tokens the CountTokens API can count.
pub trait Countable: ModelRequest {
    /// The CountTokens call for this request, if one can be built.
    fn count_request(&self) -> Option<CountTokensRequest>;
    /// The counted input tokens, when known.
    fn counted_input_tokens(&self) -> Option<u64>;
    /// Stores the counted input tokens.
    fn set_counted_input_tokens(&mut self, tokens: u64);
}

macro_rules! countable {
    ($name:ty, $ctor:ident) => {
        impl Countable for $name {
            fn count_request(&self) -> Option<CountTokensRequest> {
                let mut count = CountTokensRequest::$ctor(self.input()).ok()?;
                count.set_model_id(self.model_id());
                Some(count)
            }
            fn counted_input_tokens(&self) -> Option<u64> {
                self.counted_input_tokens
            }
            fn set_counted_input_tokens(&mut self, tokens: u64) {
                self.counted_input_tokens = Some(tokens);
            }
        }
    };
}

countable!(ConverseRequest, for_converse);
countable!(ConverseStreamRequest, for_converse_stream);
countable!(InvokeModelRequest, for_invoke);
countable!(InvokeModelStreamRequest, for_invoke_stream);

/// A [`Layer`] that counts input tokens with the CountTokens API before
/// each call.
///
/// The [heuristic](crate::estimate) is cheap but only an estimate. Placed
/// above `TokenBudget`, this layer asks Bedrock's CountTokens (free, no
/// quota) for the exact input tokens of each request whose estimate is at
/// least [`min_estimate`](CountTokensLayer::min_estimate) and stores them in
/// the request's `counted_input_tokens`, which its
/// [`token_demand`](tower_bedrock_core::ModelRequest::token_demand) then
/// reports. Small prompts skip the extra round trip; a failed count (a
/// model without CountTokens support, a throttle, a network error) keeps
/// the estimate and never fails the call.
#[derive(Debug, Clone)]
pub struct CountTokensLayer {
    counter: BedrockService,
    min_estimate: u64,
}

impl CountTokensLayer {
    /// Counts through `counter` (usually the same client as the calls).
    /// Every request is counted until [`min_estimate`](Self::min_estimate)
    /// says otherwise.
    pub fn new(counter: BedrockService) -> Self {
        CountTokensLayer {
            counter,
            min_estimate: 0,
        }
    }

    /// Counts only requests whose heuristic estimate is at least `tokens`
    /// (where a misestimate matters).
    #[must_use]
    pub fn min_estimate(mut self, tokens: u64) -> Self {
        self.min_estimate = tokens;
        self
    }
}

impl<S> Layer<S> for CountTokensLayer {
    type Service = CountTokens<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountTokens {
            inner,
            counter: self.counter.clone(),
            min_estimate: self.min_estimate,
        }
    }
}

/// Counts input tokens before calling the inner service; see
/// [`CountTokensLayer`].
///
/// `poll_ready` forwards the inner service's readiness; the ready service
/// is moved into the call's future and called once the count is known.
#[derive(Debug, Clone)]
pub struct CountTokens<S> {
    inner: S,
    counter: BedrockService,
    min_estimate: u64,
}

/// The future of [`CountTokens`].
pub struct CountTokensFuture<T, E> {
    inner: Pin<Box<dyn Future<Output = Result<T, E>> + Send>>,
}

impl<T, E> fmt::Debug for CountTokensFuture<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountTokensFuture").finish_non_exhaustive()
    }
}

impl<T, E> Future for CountTokensFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, R> Service<R> for CountTokens<S>
where
    R: Countable + Send + 'static,
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CountTokensFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: R) -> Self::Future {
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let count = (req.counted_input_tokens().is_none()
            && req.token_demand().input_tokens >= self.min_estimate)
            .then(|| req.count_request())
            .flatten();
        let mut counter = self.counter.clone();
        CountTokensFuture {
            inner: Box::pin(async move {
                if let Some(count) = count {
                    let counted = async {
                        std::future::poll_fn(|cx| {
                            Service::<CountTokensRequest>::poll_ready(&mut counter, cx)
                        })
                        .await?;
                        counter.call(count).await
                    };
                    match counted.await {
                        Ok(resp) => req.set_counted_input_tokens(resp.input_tokens()),
                        Err(e) => {
                            let c = classify_sdk_error(&e);
                            tracing::debug!(
                                target: "tower_bedrock::sdk",
                                model = req.model_id(),
                                code = c.code().unwrap_or(""),
                                class = c.class.label(),
                                "CountTokens failed; keeping the estimate"
                            );
                        }
                    }
                }
                ready.call(req).await
            }),
        }
    }
}
