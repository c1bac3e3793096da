//! An SDK interceptor reading InvokeModel's token count headers, which the
//! SDK does not model.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use tower_bedrock_core::Usage;

/// Header with the input tokens of an InvokeModel call.
pub const INPUT_TOKEN_COUNT_HEADER: &str = "x-amzn-bedrock-input-token-count";
/// Header with the output tokens of an InvokeModel call.
pub const OUTPUT_TOKEN_COUNT_HEADER: &str = "x-amzn-bedrock-output-token-count";
/// Header with the cache-read input tokens, when prompt caching is used.
pub const CACHE_READ_TOKEN_COUNT_HEADER: &str = "x-amzn-bedrock-cache-read-input-token-count";
/// Header with the cache-write input tokens, when prompt caching is used.
pub const CACHE_WRITE_TOKEN_COUNT_HEADER: &str = "x-amzn-bedrock-cache-write-input-token-count";
/// Header with the invocation latency in milliseconds.
pub const INVOCATION_LATENCY_HEADER: &str = "x-amzn-bedrock-invocation-latency";

/// What the headers of one response said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderUsage {
    /// Token usage, when both the input and output counts were present.
    pub usage: Option<Usage>,
    /// The invocation latency, when present.
    pub invocation_latency: Option<Duration>,
}

/// Reads `x-amzn-bedrock-input-token-count`, `-output-token-count`, the
/// cache counts and `-invocation-latency` from a response (InvokeModel's
/// answer carries its usage only there).
///
/// [`BedrockService`](crate::BedrockService) attaches one to each
/// InvokeModel call; with the raw SDK, attach a clone with
/// `client.invoke_model()....customize().interceptor(i.clone())` and read
/// [`get`](Self::get) after the call. Clones share the result.
#[derive(Debug, Clone, Default)]
pub struct TokenCountInterceptor {
    slot: Arc<Mutex<HeaderUsage>>,
}

impl TokenCountInterceptor {
    /// A new interceptor with nothing read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the last response's headers said.
    pub fn get(&self) -> HeaderUsage {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn header_u64(headers: &aws_smithy_runtime_api::http::Headers, name: &str) -> Option<u64> {
    headers.get(name).and_then(|v| v.trim().parse().ok())
}

impl Intercept for TokenCountInterceptor {
    fn name(&self) -> &'static str {
        "TokenCountInterceptor"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let h = context.response().headers();
        let usage = match (
            header_u64(h, INPUT_TOKEN_COUNT_HEADER),
            header_u64(h, OUTPUT_TOKEN_COUNT_HEADER),
        ) {
            (Some(i), Some(o)) => Some(Usage {
                input_tokens: i,
                output_tokens: o,
                cache_read_input_tokens: header_u64(h, CACHE_READ_TOKEN_COUNT_HEADER).unwrap_or(0),
                cache_write_input_tokens: header_u64(h, CACHE_WRITE_TOKEN_COUNT_HEADER)
                    .unwrap_or(0),
            }),
            _ => None,
        };
        let latency = header_u64(h, INVOCATION_LATENCY_HEADER).map(Duration::from_millis);
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = HeaderUsage {
            usage,
            invocation_latency: latency,
        };
        Ok(())
    }
}
