//! Shared helpers: an emulator and a client pointed at it.
#![allow(dead_code, unreachable_pub)]

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use tower_bedrock_emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use tower_bedrock_sdk::{BedrockClientBuilder, ConverseRequest, ConverseStreamRequest};

pub const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
// Through the US inference profile: Bedrock (and the emulator) refuse the
// bare Claude 4 id on demand.
pub const SONNET4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

pub async fn emulator(config: EmulatorConfig) -> EmulatorHandle {
    Emulator::start(config).await.expect("emulator starts")
}

pub fn builder(emu: &EmulatorHandle) -> BedrockClientBuilder {
    BedrockClientBuilder::new()
        .region("us-east-1")
        .endpoint_url(emu.endpoint_url())
        .static_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
}

pub async fn client(emu: &EmulatorHandle) -> Client {
    builder(emu).build().await.expect("client builds")
}

pub fn user(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.into()))
        .build()
        .unwrap()
}

pub fn converse(model: &str, text: &str, max_tokens: Option<i32>) -> ConverseRequest {
    let mut b = ConverseInput::builder()
        .model_id(model)
        .messages(user(text));
    if let Some(n) = max_tokens {
        b = b.inference_config(InferenceConfiguration::builder().max_tokens(n).build());
    }
    b.build().unwrap().into()
}

pub fn converse_stream(model: &str, text: &str) -> ConverseStreamRequest {
    ConverseStreamInput::builder()
        .model_id(model)
        .messages(user(text))
        .build()
        .unwrap()
        .into()
}

pub fn anthropic_body(text: &str, max_tokens: u32) -> String {
    serde_json::json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    })
    .to_string()
}
