//! The token heuristic shared by `count-tokens`, the usage in responses and
//! the quota, and the deterministic text generator.
//!
//! **Heuristic.** A piece of text costs `ceil(chars / 4)` tokens (chars are
//! Unicode scalar values); a request's input tokens are the sum over its
//! pieces: every text block of every message and of the system prompt; an
//! image block costs [`IMAGE_TOKENS`]; any other non-text block (document,
//! tool use...) costs its JSON encoding's length over 4. The generated answer of `n` tokens is `n` three-letter
//! words separated by single spaces, which costs exactly `n` tokens.

use serde_json::Value;

/// Tokens of one piece of text: `ceil(chars / 4)`.
///
/// ```
/// use tower_bedrock_emulator::tokens::count_text;
/// assert_eq!(count_text(""), 0);
/// assert_eq!(count_text("abcd"), 1);
/// assert_eq!(count_text("abcde"), 2);
/// ```
pub fn count_text(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

fn count_json(v: &Value) -> u64 {
    (v.to_string().chars().count() as u64).div_ceil(4)
}

/// Which InvokeModel body format a model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Anthropic,
    Nova,
    Llama,
    Other,
}

impl Family {
    pub(crate) fn of(base: &str) -> Family {
        if base.starts_with("anthropic.") {
            Family::Anthropic
        } else if base.starts_with("amazon.nova") {
            Family::Nova
        } else if base.starts_with("meta.") {
            Family::Llama
        } else {
            Family::Other
        }
    }
}

/// What the emulator needs to know about a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prompt {
    pub(crate) input_tokens: u64,
    pub(crate) max_tokens: Option<u64>,
    /// Seeds the generated text.
    pub(crate) fingerprint: u64,
}

/// Why a body is not acceptable; the text is Bedrock-style and never
/// quotes the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid(pub(crate) String);

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn max_tokens_field(v: Option<&Value>, field: &str) -> Result<Option<u64>, Invalid> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(Invalid(format!(
                "1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must have value greater than or equal to 1"
            ))),
        },
    }
}

/// What an image costs, whatever its size: Anthropic's estimate for the
/// largest image it takes without resizing (about 1.15 megapixels / 750).
pub const IMAGE_TOKENS: u64 = 1600;

/// A Converse (`{"image": ...}`) or Anthropic (`{"type": "image"}`) image
/// block.
fn is_image(b: &Value) -> bool {
    b.get("image").is_some() || b.get("type").and_then(Value::as_str) == Some("image")
}

fn content_blocks(v: &Value) -> u64 {
    match v {
        Value::String(s) => count_text(s),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("text").and_then(Value::as_str) {
                Some(t) => count_text(t),
                None if is_image(b) => IMAGE_TOKENS,
                None => count_json(b),
            })
            .sum(),
        Value::Null => 0,
        other => count_json(other),
    }
}

fn messages_tokens(body: &Value) -> Result<u64, Invalid> {
    let Some(messages) = body.get("messages") else {
        return Err(Invalid(
            "1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null".into(),
        ));
    };
    let Some(messages) = messages.as_array() else {
        return Err(Invalid("Malformed input request: messages must be an array, please reformat your input and try again.".into()));
    };
    if messages.is_empty() {
        return Err(Invalid(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.".into(),
        ));
    }
    let mut total = 0;
    for m in messages {
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            _ => {
                return Err(Invalid(
                    "Malformed input request: every message needs a role of user or assistant, please reformat your input and try again.".into(),
                ));
            }
        }
        total += content_blocks(m.get("content").unwrap_or(&Value::Null));
    }
    total += content_blocks(body.get("system").unwrap_or(&Value::Null));
    Ok(total)
}

/// A Converse / ConverseStream request body (also the `converse` input of
/// CountTokens, which has no `inferenceConfig`).
pub(crate) fn converse_prompt(body: &Value, raw: &[u8]) -> Result<Prompt, Invalid> {
    let input_tokens = messages_tokens(body)?;
    let max_tokens = max_tokens_field(
        body.get("inferenceConfig").and_then(|c| c.get("maxTokens")),
        "inferenceConfig.maxTokens",
    )?;
    Ok(Prompt {
        input_tokens,
        max_tokens,
        fingerprint: fnv(raw),
    })
}

/// An InvokeModel body in the format of the model's family.
pub(crate) fn invoke_prompt(family: Family, body: &Value, raw: &[u8]) -> Result<Prompt, Invalid> {
    if !body.is_object() {
        return Err(Invalid(
            "Malformed input request: expected a JSON object, please reformat your input and try again.".into(),
        ));
    }
    let (input_tokens, max_tokens) = match family {
        Family::Anthropic => (
            messages_tokens(body)?,
            max_tokens_field(body.get("max_tokens"), "max_tokens")?,
        ),
        Family::Nova => (
            messages_tokens(body)?,
            max_tokens_field(
                body.get("inferenceConfig")
                    .and_then(|c| c.get("maxTokens").or_else(|| c.get("max_new_tokens"))),
                "inferenceConfig.maxTokens",
            )?,
        ),
        Family::Llama => {
            let Some(p) = body.get("prompt").and_then(Value::as_str) else {
                return Err(Invalid(
                    "Malformed input request: #: required key [prompt] not found, please reformat your input and try again.".into(),
                ));
            };
            (
                count_text(p),
                max_tokens_field(body.get("max_gen_len"), "max_gen_len")?,
            )
        }
        Family::Other => {
            let t = ["prompt", "inputText"]
                .iter()
                .find_map(|k| body.get(*k).and_then(Value::as_str))
                .map_or_else(|| count_json(body), count_text);
            (t, None)
        }
    };
    Ok(Prompt {
        input_tokens,
        max_tokens,
        fingerprint: fnv(raw),
    })
}

const SYLLABLES: &[&str] = &[
    "sun", "oak", "ice", "red", "sea", "fog", "ink", "owl", "elm", "bay", "dew", "fir", "jet",
    "kit", "log", "map", "net", "orb", "pen", "ray", "sky", "tea", "urn", "van", "wax", "yew",
    "zen", "ash", "bog", "cub", "den", "eel",
];

/// Deterministic text of exactly `tokens` tokens, split into delta chunks
/// of at most `per_chunk` tokens (each chunk after the first starts with a
/// space so that the concatenation is the whole text).
pub(crate) fn generate_chunks(seed: u64, tokens: u64, per_chunk: u64) -> Vec<(String, u64)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let per_chunk = per_chunk.max(1);
    let mut out = Vec::new();
    let mut left = tokens;
    let mut first = true;
    while left > 0 {
        let n = left.min(per_chunk);
        let mut s = String::with_capacity(n as usize * 4);
        for i in 0..n {
            if !(first && i == 0) {
                s.push(' ');
            }
            s.push_str(SYLLABLES[rng.usize(..SYLLABLES.len())]);
        }
        first = false;
        out.push((s, n));
        left -= n;
    }
    out
}

/// Deterministic text of exactly `tokens` tokens.
pub(crate) fn generate(seed: u64, tokens: u64) -> String {
    generate_chunks(seed, tokens, u64::MAX)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_text_costs_what_it_claims() {
        for n in [0, 1, 2, 7, 48, 301] {
            let t = generate(9, n);
            assert_eq!(count_text(&t), n);
            let chunks = generate_chunks(9, n, 4);
            let joined: String = chunks.iter().map(|(s, _)| s.as_str()).collect();
            assert_eq!(joined, t);
            assert_eq!(chunks.iter().map(|(_, k)| k).sum::<u64>(), n);
        }
        assert_ne!(generate(1, 20), generate(2, 20));
    }

    #[test]
    fn converse_and_invoke_count_alike() {
        let conv = json!({"messages":[{"role":"user","content":[{"text":"hello world, how are you"}]}],
                          "system":[{"text":"be brief"}], "inferenceConfig":{"maxTokens":100}});
        let p = converse_prompt(&conv, b"x").unwrap();
        assert_eq!(p.input_tokens, 6 + 2);
        assert_eq!(p.max_tokens, Some(100));
        let anth = json!({"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"system":"be brief",
                          "messages":[{"role":"user","content":"hello world, how are you"}]});
        let q = invoke_prompt(Family::Anthropic, &anth, b"x").unwrap();
        assert_eq!((q.input_tokens, q.max_tokens), (8, Some(100)));
    }

    #[test]
    fn bad_bodies() {
        assert!(converse_prompt(&json!({}), b"").is_err());
        assert!(converse_prompt(&json!({"messages":[]}), b"").is_err());
        assert!(converse_prompt(&json!({"messages":[{"content":[]}]}), b"").is_err());
        assert!(converse_prompt(&json!({"messages":[{"role":"user","content":[]}],"inferenceConfig":{"maxTokens":0}}), b"").is_err());
        assert!(invoke_prompt(Family::Llama, &json!({"max_gen_len":5}), b"").is_err());
        assert!(invoke_prompt(Family::Anthropic, &json!([1]), b"").is_err());
        let l = invoke_prompt(
            Family::Llama,
            &json!({"prompt":"abcdefgh","max_gen_len":5}),
            b"",
        )
        .unwrap();
        assert_eq!((l.input_tokens, l.max_tokens), (2, Some(5)));
    }

    proptest::proptest! {
        #[test]
        fn any_generated_text_costs_exactly_its_tokens(seed: u64, n in 0u64..400, per in 1u64..9) {
            let chunks = generate_chunks(seed, n, per);
            let joined: String = chunks.iter().map(|(s, _)| s.as_str()).collect();
            proptest::prop_assert_eq!(count_text(&joined), n);
            proptest::prop_assert!(chunks.iter().all(|(_, k)| *k >= 1 && *k <= per));
            proptest::prop_assert_eq!(joined, generate(seed, n));
        }
    }
}
