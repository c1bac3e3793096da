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

impl ConverseResponse {
    /// The text of the answer: its message's text blocks, joined (empty
    /// when the answer holds no text, e.g. only a tool use).
    pub fn text(&self) -> String {
        match &self.output.output {
            Some(aws_sdk_bedrockruntime::types::ConverseOutput::Message(m)) => m
                .content
                .iter()
                .filter_map(|c| c.as_text().ok().map(String::as_str))
                .collect(),
            _ => String::new(),
        }
    }
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

#[cfg(test)]
mod text_tests {
    use aws_sdk_bedrockruntime::types::{
        ContentBlock, ConversationRole, ConverseMetrics, ConverseOutput as Output, Message,
        StopReason, TokenUsage, ToolUseBlock,
    };
    use aws_smithy_types::Document;

    use super::*;

    fn answer(content: Vec<ContentBlock>) -> ConverseResponse {
        let message = Message::builder()
            .role(ConversationRole::Assistant)
            .set_content(Some(content))
            .build()
            .unwrap();
        ConverseResponse {
            output: ConverseOutput::builder()
                .output(Output::Message(message))
                .stop_reason(StopReason::EndTurn)
                .usage(
                    TokenUsage::builder()
                        .input_tokens(3)
                        .output_tokens(2)
                        .total_tokens(5)
                        .build()
                        .unwrap(),
                )
                .metrics(ConverseMetrics::builder().latency_ms(10).build().unwrap())
                .build()
                .unwrap(),
        }
    }

    #[test]
    fn text_joins_the_text_blocks_only() {
        let tool = ToolUseBlock::builder()
            .tool_use_id("t1")
            .name("lookup")
            .input(Document::Null)
            .build()
            .unwrap();
        let r = answer(vec![
            ContentBlock::Text("Hello, ".into()),
            ContentBlock::ToolUse(tool),
            ContentBlock::Text("world".into()),
        ]);
        assert_eq!(r.text(), "Hello, world");
        assert_eq!(answer(vec![]).text(), "");
    }
}
