//! The input-token heuristic used by
//! [`ModelRequest::token_demand`](tower_bedrock_core::ModelRequest::token_demand).
//!
//! **Heuristic: one token per 4 characters**, rounded up per piece of text
//! (characters are Unicode scalar values). English prose averages about 4
//! characters per token with the Claude, Nova and Llama tokenizers; code
//! and non-Latin scripts use more tokens per character, so the estimate is
//! low for them: call CountTokens (see
//! [`CountTokensLayer`](crate::CountTokensLayer)) where precision matters. The
//! same rule is used by the emulator, so its quotas and this estimate agree.
//!
//! What is counted:
//! - every text block of every message and of the system prompt,
//!   reasoning text, tool results (text, and JSON by its encoded length);
//! - tool uses and tool definitions (name, description, input schema) by
//!   the length of their JSON encoding;
//! - documents by their text, or by their size in bytes for binary
//!   sources (PDF, DOCX...: an over-estimate);
//! - each image as [`IMAGE_TOKENS`] (Claude's cost of an image at its
//!   largest size, about 1.15 megapixels / 750);
//! - video, audio, cache points, guard content and other blocks: 0 (they
//!   are not known before the call).

use aws_sdk_bedrockruntime::types::{
    ContentBlock, DocumentBlock, DocumentContentBlock, DocumentSource, Message,
    ReasoningContentBlock, SystemContentBlock, Tool, ToolConfiguration, ToolInputSchema,
    ToolResultContentBlock,
};
use aws_smithy_types::Document;
use aws_smithy_types::Number;
use serde_json::Value;

/// Estimated tokens of one image.
pub const IMAGE_TOKENS: u64 = 1_600;

/// Characters per token of the heuristic.
pub const CHARS_PER_TOKEN: u64 = 4;

/// Tokens of a piece of text: `ceil(chars / 4)`.
pub fn text_tokens(text: &str) -> u64 {
    chars_tokens(text.chars().count() as u64)
}

fn chars_tokens(chars: u64) -> u64 {
    chars.div_ceil(CHARS_PER_TOKEN)
}

/// Approximate length of the JSON encoding of a document.
fn document_len(d: &Document) -> u64 {
    match d {
        Document::Object(m) => {
            2 + m
                .iter()
                .map(|(k, v)| k.chars().count() as u64 + 4 + document_len(v))
                .sum::<u64>()
        }
        Document::Array(a) => 2 + a.iter().map(|v| document_len(v) + 1).sum::<u64>(),
        Document::Number(Number::PosInt(n)) => n.checked_ilog10().map_or(1, |l| u64::from(l) + 1),
        Document::Number(Number::NegInt(n)) => n
            .unsigned_abs()
            .checked_ilog10()
            .map_or(1, |l| u64::from(l) + 2),
        Document::Number(Number::Float(_)) => 8,
        Document::String(s) => s.chars().count() as u64 + 2,
        Document::Bool(true) | Document::Null => 4,
        Document::Bool(false) => 5,
    }
}

fn document_source_tokens(d: &DocumentBlock) -> u64 {
    match &d.source {
        Some(DocumentSource::Bytes(b)) => chars_tokens(b.as_ref().len() as u64),
        Some(DocumentSource::Text(t)) => text_tokens(t),
        Some(DocumentSource::Content(blocks)) => blocks
            .iter()
            .map(|b| match b {
                DocumentContentBlock::Text(t) => text_tokens(t),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

fn content_tokens(block: &ContentBlock) -> u64 {
    match block {
        ContentBlock::Text(t) => text_tokens(t),
        ContentBlock::Image(_) => IMAGE_TOKENS,
        ContentBlock::Document(d) => document_source_tokens(d),
        ContentBlock::ToolUse(t) => {
            chars_tokens(t.name.chars().count() as u64 + document_len(&t.input))
        }
        ContentBlock::ToolResult(r) => r
            .content
            .iter()
            .map(|c| match c {
                ToolResultContentBlock::Text(t) => text_tokens(t),
                ToolResultContentBlock::Json(d) => chars_tokens(document_len(d)),
                ToolResultContentBlock::Image(_) => IMAGE_TOKENS,
                ToolResultContentBlock::Document(d) => document_source_tokens(d),
                _ => 0,
            })
            .sum(),
        ContentBlock::ReasoningContent(ReasoningContentBlock::ReasoningText(r)) => {
            text_tokens(&r.text)
        }
        _ => 0,
    }
}

/// Estimated input tokens of messages, a system prompt and a tool
/// configuration.
pub fn converse_tokens(
    messages: &[Message],
    system: &[SystemContentBlock],
    tools: Option<&ToolConfiguration>,
) -> u64 {
    let m: u64 = messages
        .iter()
        .flat_map(|m| m.content.iter())
        .map(content_tokens)
        .sum();
    let s: u64 = system
        .iter()
        .map(|b| match b {
            SystemContentBlock::Text(t) => text_tokens(t),
            _ => 0,
        })
        .sum();
    let t: u64 = tools.map_or(0, |c| {
        c.tools
            .iter()
            .map(|t| match t {
                Tool::ToolSpec(spec) => {
                    let schema = match &spec.input_schema {
                        Some(ToolInputSchema::Json(d)) => document_len(d),
                        _ => 0,
                    };
                    chars_tokens(
                        spec.name.chars().count() as u64
                            + spec
                                .description
                                .as_deref()
                                .map_or(0, |d| d.chars().count() as u64)
                            + schema,
                    )
                }
                _ => 0,
            })
            .sum()
    });
    m.saturating_add(s).saturating_add(t)
}

fn json_content_tokens(v: &Value) -> u64 {
    match v {
        Value::String(s) => text_tokens(s),
        Value::Array(blocks) => blocks
            .iter()
            .map(
                |b| match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (_, Some(Value::String(t))) => text_tokens(t),
                    (Some("image"), _) => IMAGE_TOKENS,
                    _ => chars_tokens(b.to_string().chars().count() as u64),
                },
            )
            .sum(),
        Value::Null => 0,
        other => chars_tokens(other.to_string().chars().count() as u64),
    }
}

/// What an InvokeModel body says about its demand: estimated input tokens
/// and the output cap, for the Anthropic messages format (`messages`,
/// `system`, `tools`, `max_tokens`), Amazon Nova (`messages`, `system`,
/// `inferenceConfig.maxTokens` / `max_new_tokens`), Meta Llama (`prompt`,
/// `max_gen_len`), Titan (`inputText`, `textGenerationConfig.maxTokenCount`)
/// and others (`prompt`, else the whole body; `max_tokens`). A body that is
/// not JSON counts as text.
pub fn invoke_body_demand(body: &[u8]) -> (u64, Option<u64>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (chars_tokens(body.len() as u64), None);
    };
    let input = if let Some(messages) = v.get("messages").and_then(Value::as_array) {
        let m: u64 = messages
            .iter()
            .map(|m| json_content_tokens(m.get("content").unwrap_or(&Value::Null)))
            .sum();
        let s = json_content_tokens(v.get("system").unwrap_or(&Value::Null));
        let t = v
            .get("tools")
            .map_or(0, |t| chars_tokens(t.to_string().chars().count() as u64));
        m + s + t
    } else if let Some(p) = ["prompt", "inputText"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
    {
        text_tokens(p)
    } else {
        chars_tokens(body.len() as u64)
    };
    (input, invoke_max_tokens(&v))
}

fn invoke_max_tokens(v: &Value) -> Option<u64> {
    let candidates = [
        v.get("max_tokens"),
        v.get("max_gen_len"),
        v.get("inferenceConfig")
            .and_then(|c| c.get("maxTokens").or_else(|| c.get("max_new_tokens"))),
        v.get("textGenerationConfig")
            .and_then(|c| c.get("maxTokenCount")),
    ];
    candidates.into_iter().flatten().find_map(Value::as_u64)
}

/// Rewrites the output cap of an InvokeModel body, in whichever field the
/// body already uses (`max_tokens` when it uses none). Returns `None` when
/// the body is not a JSON object.
pub fn set_invoke_max_tokens(body: &[u8], max_tokens: u64) -> Option<Vec<u8>> {
    let mut v = serde_json::from_slice::<Value>(body).ok()?;
    let obj = v.as_object_mut()?;
    let n = Value::from(max_tokens);
    if obj.contains_key("max_gen_len") {
        obj.insert("max_gen_len".into(), n);
    } else if let Some(c) = obj
        .get_mut("inferenceConfig")
        .and_then(Value::as_object_mut)
    {
        let key = if c.contains_key("max_new_tokens") {
            "max_new_tokens"
        } else {
            "maxTokens"
        };
        c.insert(key.into(), n);
    } else if let Some(c) = obj
        .get_mut("textGenerationConfig")
        .and_then(Value::as_object_mut)
    {
        c.insert("maxTokenCount".into(), n);
    } else {
        obj.insert("max_tokens".into(), n);
    }
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_bedrockruntime::types::{ConversationRole, ToolSpecification};

    #[test]
    fn text_rounds_up_per_piece() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(text_tokens("éééé"), 1);
    }

    #[test]
    fn converse_counts_messages_system_and_tools() {
        let msg = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text("Hello there".into())) // 3
            .content(ContentBlock::Text("abcd".into())) // 1
            .build()
            .unwrap();
        let sys = [SystemContentBlock::Text("You are terse.".into())]; // 4
        assert_eq!(converse_tokens(std::slice::from_ref(&msg), &sys, None), 8);
        let tools = ToolConfiguration::builder()
            .tools(Tool::ToolSpec(
                ToolSpecification::builder()
                    .name("get") // 3 chars
                    .description("fetch") // 5 chars
                    .input_schema(ToolInputSchema::Json(Document::Object(
                        [("type".to_string(), Document::String("object".into()))].into(),
                    ))) // {"type":"object"} = 2 + 4 + 4 + 8 = 18
                    .build()
                    .unwrap(),
            ))
            .build()
            .unwrap();
        // 3 + 5 + 18 = 26 chars: 7 tokens.
        assert_eq!(converse_tokens(&[msg], &sys, Some(&tools)), 15);
    }

    #[test]
    fn invoke_bodies_by_family() {
        let anthropic = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":300,
            "system":"Be brief.","messages":[{"role":"user","content":[{"type":"text","text":"Hello there"}]},
            {"role":"assistant","content":"abcd"}]}"#;
        assert_eq!(invoke_body_demand(anthropic), (3 + 3 + 1, Some(300)));
        let llama = br#"{"prompt":"abcdefgh","max_gen_len":64}"#;
        assert_eq!(invoke_body_demand(llama), (2, Some(64)));
        let nova = br#"{"messages":[{"role":"user","content":[{"text":"abc"}]}],"inferenceConfig":{"maxTokens":9}}"#;
        assert_eq!(invoke_body_demand(nova), (1, Some(9)));
        let titan = br#"{"inputText":"abcde","textGenerationConfig":{"maxTokenCount":7}}"#;
        assert_eq!(invoke_body_demand(titan), (2, Some(7)));
        assert_eq!(invoke_body_demand(b"not json!"), (3, None));
    }

    #[test]
    fn max_tokens_rewritten_in_place() {
        let b = set_invoke_max_tokens(br#"{"max_tokens":300,"messages":[]}"#, 50).unwrap();
        assert_eq!(invoke_body_demand(&b).1, Some(50));
        let b = set_invoke_max_tokens(br#"{"prompt":"x","max_gen_len":300}"#, 5).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["max_gen_len"], 5);
        assert!(v.get("max_tokens").is_none());
        let b = set_invoke_max_tokens(br#"{"inferenceConfig":{"max_new_tokens":3}}"#, 4).unwrap();
        assert_eq!(invoke_body_demand(&b).1, Some(4));
        let b = set_invoke_max_tokens(br#"{"messages":[]}"#, 8).unwrap();
        assert_eq!(invoke_body_demand(&b).1, Some(8));
        assert!(set_invoke_max_tokens(b"[1]", 8).is_none());
    }
}
