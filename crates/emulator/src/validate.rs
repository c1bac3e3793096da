//! The checks Bedrock makes before a model runs: the shape of the
//! conversation, the requested output limit, the prompt's length and the
//! need for an inference profile. Every refusal is a 400
//! ValidationException with Bedrock's text (Converse's wording for
//! Converse, ConverseStream, CountTokens and Nova bodies; Anthropic's for
//! Anthropic InvokeModel bodies, which Bedrock passes through). No message
//! quotes the request's content.

use serde_json::Value;

use crate::catalogue::ModelSpec;
use crate::tokens::Invalid;

/// Whose wording a refusal uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// The Converse API (and Nova's InvokeModel body).
    Converse,
    /// Anthropic's Messages API inside InvokeModel.
    Anthropic,
}

fn role(m: &Value) -> &str {
    m.get("role").and_then(Value::as_str).unwrap_or("")
}

fn is_empty(content: Option<&Value>) -> bool {
    match content {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// Checks the order and content of `body.messages` (already known to be a
/// non-empty array of messages with valid roles; anything else passes).
pub(crate) fn conversation(body: &Value, dialect: Dialect) -> Result<(), Invalid> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Ok(());
    };
    let Some(first) = messages.first() else {
        return Ok(());
    };
    if role(first) != "user" {
        return Err(Invalid(match dialect {
            Dialect::Converse => "A conversation must start with a user message. Try again with a conversation that starts with a user message.".into(),
            Dialect::Anthropic => "messages: first message must use the \"user\" role".into(),
        }));
    }
    let last = messages.len() - 1;
    for (i, m) in messages.iter().enumerate() {
        if i > 0 && role(m) == role(&messages[i - 1]) {
            return Err(Invalid(match dialect {
                Dialect::Converse => "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".into(),
                Dialect::Anthropic => format!(
                    "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"{}\" roles in a row",
                    role(m)
                ),
            }));
        }
        if is_empty(m.get("content")) {
            match dialect {
                Dialect::Converse => {
                    return Err(Invalid(format!(
                        "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
                    )));
                }
                // A final assistant message may be empty (a prefill).
                Dialect::Anthropic if !(i == last && role(m) == "assistant") => {
                    return Err(Invalid(format!(
                        "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
                    )));
                }
                Dialect::Anthropic => {}
            }
        }
    }
    Ok(())
}

/// The requested output limit against the model's.
pub(crate) fn max_tokens(requested: Option<u64>, spec: &ModelSpec) -> Result<(), Invalid> {
    match requested {
        Some(n) if n > spec.max_output_tokens => {
            let limit = spec.max_output_tokens;
            Err(Invalid(format!(
                "The maximum tokens you requested exceeds the model limit of {limit}. Try again with a maximum tokens value that is lower than {limit}."
            )))
        }
        _ => Ok(()),
    }
}

/// The prompt's length against the model's context window.
pub(crate) fn input_length(input_tokens: u64, spec: &ModelSpec) -> Result<(), Invalid> {
    if input_tokens > spec.context_window {
        return Err(Invalid("Input is too long for requested model.".into()));
    }
    Ok(())
}

/// A bare model id of a model Bedrock serves only through inference
/// profiles.
pub(crate) fn on_demand(sent_id: &str, spec: &ModelSpec) -> Result<(), Invalid> {
    if spec.profile_required && sent_id == spec.id {
        return Err(Invalid(format!(
            "Invocation of model ID {} with on-demand throughput isn't supported. Retry your request with the ID or ARN of an inference profile that contains this model.",
            spec.id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::spec;
    use serde_json::json;

    fn msg(role: &str, text: &str) -> Value {
        json!({"role": role, "content": [{"text": text}]})
    }

    #[test]
    fn conversation_rules() {
        let ok = json!({"messages": [msg("user", "a"), msg("assistant", "b"), msg("user", "c")]});
        assert_eq!(conversation(&ok, Dialect::Converse), Ok(()));
        let starts_wrong = json!({"messages": [msg("assistant", "a"), msg("user", "b")]});
        let e = conversation(&starts_wrong, Dialect::Converse).unwrap_err();
        assert!(e.0.starts_with("A conversation must start with a user message"));
        let twice = json!({"messages": [msg("user", "a"), msg("user", "b")]});
        let e = conversation(&twice, Dialect::Converse).unwrap_err();
        assert!(e.0.starts_with("A conversation must alternate"));
        let e = conversation(&twice, Dialect::Anthropic).unwrap_err();
        assert!(e.0.contains("multiple \"user\" roles in a row"));
        let empty = json!({"messages": [msg("user", "a"), msg("assistant", "b"), {"role": "user", "content": []}]});
        let e = conversation(&empty, Dialect::Converse).unwrap_err();
        assert!(e.0.contains("at messages.2 is empty"), "{}", e.0);
        let prefill = json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]});
        assert_eq!(conversation(&prefill, Dialect::Anthropic), Ok(()));
        let e = conversation(&prefill, Dialect::Converse).unwrap_err();
        assert!(e.0.contains("messages.1"));
    }

    #[test]
    fn limits() {
        let haiku = spec("anthropic.claude-3-haiku-20240307-v1:0").unwrap();
        assert_eq!(max_tokens(Some(4096), haiku), Ok(()));
        assert_eq!(max_tokens(None, haiku), Ok(()));
        let e = max_tokens(Some(4097), haiku).unwrap_err();
        assert!(e.0.contains("model limit of 4096."), "{}", e.0);
        assert_eq!(input_length(200_000, haiku), Ok(()));
        assert!(input_length(200_001, haiku).is_err());
        let sonnet = spec("anthropic.claude-sonnet-4-20250514-v1:0").unwrap();
        assert!(on_demand("anthropic.claude-sonnet-4-20250514-v1:0", sonnet).is_err());
        assert_eq!(
            on_demand("us.anthropic.claude-sonnet-4-20250514-v1:0", sonnet),
            Ok(())
        );
        assert_eq!(
            on_demand("anthropic.claude-3-haiku-20240307-v1:0", haiku),
            Ok(())
        );
    }
}
