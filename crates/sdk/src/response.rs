//! Response types: the SDK's outputs with their usage.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::operation::count_tokens::CountTokensOutput;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelOutput;
use aws_sdk_bedrockruntime::types::error::{ConverseStreamOutputError, ResponseStreamError};
use aws_sdk_bedrockruntime::types::{ConverseStreamOutput, ResponseStream};
use tower_bedrock_core::{ReportsUsage, Usage, UsageCallback};

use crate::stream::{BedrockStream, usage_from_sdk};

/// The answer of a Converse call.
#[derive(Debug)]
pub struct ConverseResponse {
    /// The SDK's output.
    pub output: ConverseOutput,
}

impl ReportsUsage for ConverseResponse {
    /// The output's `usage`.
    fn usage(&self) -> Option<Usage> {
        self.output.usage.as_ref().map(usage_from_sdk)
    }
}

/// The answer of an InvokeModel call, with the usage read from its
/// `x-amzn-bedrock-*-token-count` headers.
#[derive(Debug)]
pub struct InvokeModelResponse {
    /// The SDK's output.
    pub output: InvokeModelOutput,
    /// Usage from the token count headers (absent for models or errors
    /// that send none).
    pub usage: Option<Usage>,
    /// `x-amzn-bedrock-invocation-latency`, when sent.
    pub invocation_latency: Option<Duration>,
}

impl ReportsUsage for InvokeModelResponse {
    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The answer of a CountTokens call.
#[derive(Debug)]
pub struct CountTokensResponse {
    /// The SDK's output.
    pub output: CountTokensOutput,
}

impl CountTokensResponse {
    /// The counted input tokens.
    pub fn input_tokens(&self) -> u64 {
        u64::try_from(self.output.input_tokens).unwrap_or(0)
    }
}

impl ReportsUsage for CountTokensResponse {
    /// Zero: CountTokens consumes no quota.
    fn usage(&self) -> Option<Usage> {
        Some(Usage::default())
    }
}

/// The answer of a ConverseStream call: a [`BedrockStream`] of
/// ConverseStream events (dereferences to it).
#[derive(Debug)]
pub struct ConverseStreamResponse {
    /// The events.
    pub stream: BedrockStream<ConverseStreamOutput, ConverseStreamOutputError>,
}

/// The answer of an InvokeModelWithResponseStream call: a [`BedrockStream`]
/// of payload chunks (dereferences to it).
#[derive(Debug)]
pub struct InvokeModelStreamResponse {
    /// The chunks.
    pub stream: BedrockStream<ResponseStream, ResponseStreamError>,
    /// The content type of the chunks.
    pub content_type: String,
}

macro_rules! deref_stream {
    ($name:ident, $t:ty, $e:ty) => {
        impl Deref for $name {
            type Target = BedrockStream<$t, $e>;
            fn deref(&self) -> &Self::Target {
                &self.stream
            }
        }

        impl DerefMut for $name {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.stream
            }
        }

        impl ReportsUsage for $name {
            fn usage(&self) -> Option<Usage> {
                self.stream.usage()
            }

            fn defer_usage(&mut self, settle: UsageCallback) -> Result<(), UsageCallback> {
                self.stream.defer_usage(settle)
            }
        }

        impl futures_core::Stream for $name {
            type Item = <BedrockStream<$t, $e> as futures_core::Stream>::Item;

            fn poll_next(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                std::pin::Pin::new(&mut self.get_mut().stream).poll_next(cx)
            }
        }
    };
}

deref_stream!(
    ConverseStreamResponse,
    ConverseStreamOutput,
    ConverseStreamOutputError
);
deref_stream!(
    InvokeModelStreamResponse,
    ResponseStream,
    ResponseStreamError
);
