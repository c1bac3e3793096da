//! The model catalogue: every limit the emulator enforces per foundation
//! model, in one table.
//!
//! Sources, per column:
//! - **max output tokens**: the model cards of the Amazon Bedrock user
//!   guide and Anthropic's models overview, and the limits Bedrock's
//!   Converse API was seen enforcing ("The maximum tokens you requested
//!   exceeds the model limit of 4096..." on Claude 3 Haiku and Claude 3.5
//!   Sonnet v1, 2048 on Llama 3.1, quoted in public issue threads of
//!   boto3, vercel/ai and aws-samples/bedrock-access-gateway).
//! - **context window**: the same model cards (200k for Claude, 300k for
//!   Nova Lite/Pro, 128k for Nova Micro and Llama 3.1/3.3, 8k for Llama 3).
//! - **body size**: the `body` member of InvokeModel, "Maximum length of
//!   25000000" in the Bedrock Runtime API reference; the same bound is
//!   applied to every operation's request body.
//! - **burndown**: Bedrock's quota documentation (5 output tokens counted
//!   per output token for the Claude 4 family, 1 otherwise), as in
//!   [`tower_bedrock_core::model::default_burndown_rate`].
//! - **profile required**: the "supported inference types" of each model in
//!   the user guide: models offered only through cross-region inference
//!   profiles refuse a bare model id with "Invocation of model ID ... with
//!   on-demand throughput isn't supported...".
//!
//! Limits that vary by region or by beta header (Claude's 1M context,
//! 128k output for Claude 3.7 Sonnet) take the default, regionless value.

/// The InvokeModel body limit of the Bedrock Runtime API, in bytes.
pub const MAX_BODY_BYTES: usize = 25_000_000;

/// What the emulator knows about one foundation model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// The foundation model id.
    pub id: &'static str,
    /// The largest `maxTokens` / `max_tokens` / `max_gen_len` accepted.
    pub max_output_tokens: u64,
    /// The largest prompt, in input tokens.
    pub context_window: u64,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Output-token burndown rate of the quota.
    pub burndown: u64,
    /// Whether Bedrock serves the model only through an inference profile
    /// (a bare model id is refused).
    pub profile_required: bool,
}

const fn m(
    id: &'static str,
    max_output_tokens: u64,
    context_window: u64,
    burndown: u64,
    profile_required: bool,
) -> ModelSpec {
    ModelSpec {
        id,
        max_output_tokens,
        context_window,
        max_body_bytes: MAX_BODY_BYTES,
        burndown,
        profile_required,
    }
}

/// The catalogue. [`crate::DEFAULT_MODELS`] lists the same ids.
pub const CATALOGUE: &[ModelSpec] = &[
    m(
        "anthropic.claude-opus-4-1-20250805-v1:0",
        32_000,
        200_000,
        5,
        true,
    ),
    m(
        "anthropic.claude-opus-4-20250514-v1:0",
        32_000,
        200_000,
        5,
        true,
    ),
    m(
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        64_000,
        200_000,
        5,
        true,
    ),
    m(
        "anthropic.claude-sonnet-4-20250514-v1:0",
        64_000,
        200_000,
        5,
        true,
    ),
    m(
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        64_000,
        200_000,
        5,
        true,
    ),
    m(
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        64_000,
        200_000,
        1,
        true,
    ),
    m(
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        8_192,
        200_000,
        1,
        false,
    ),
    m(
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        4_096,
        200_000,
        1,
        false,
    ),
    m(
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        8_192,
        200_000,
        1,
        false,
    ),
    m(
        "anthropic.claude-3-haiku-20240307-v1:0",
        4_096,
        200_000,
        1,
        false,
    ),
    m(
        "anthropic.claude-3-sonnet-20240229-v1:0",
        4_096,
        200_000,
        1,
        false,
    ),
    m(
        "anthropic.claude-3-opus-20240229-v1:0",
        4_096,
        200_000,
        1,
        false,
    ),
    m("amazon.nova-premier-v1:0", 32_000, 1_000_000, 1, true),
    m("amazon.nova-pro-v1:0", 10_000, 300_000, 1, false),
    m("amazon.nova-lite-v1:0", 10_000, 300_000, 1, false),
    m("amazon.nova-micro-v1:0", 10_000, 128_000, 1, false),
    m("meta.llama3-3-70b-instruct-v1:0", 2_048, 128_000, 1, false),
    m("meta.llama3-1-70b-instruct-v1:0", 2_048, 128_000, 1, false),
    m("meta.llama3-1-8b-instruct-v1:0", 2_048, 128_000, 1, false),
    m("meta.llama3-70b-instruct-v1:0", 2_048, 8_192, 1, false),
    m("meta.llama3-8b-instruct-v1:0", 2_048, 8_192, 1, false),
    m(
        "meta.llama4-maverick-17b-instruct-v1:0",
        8_192,
        1_000_000,
        1,
        true,
    ),
    m(
        "meta.llama4-scout-17b-instruct-v1:0",
        8_192,
        3_500_000,
        1,
        true,
    ),
];

/// The catalogue entry of a foundation model id (not a profile id: pass the
/// base id).
pub fn spec(base: &str) -> Option<&'static ModelSpec> {
    CATALOGUE.iter().find(|s| s.id == base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_bedrock_core::model::default_burndown_rate;

    #[test]
    fn the_catalogue_and_the_default_models_agree() {
        let ids: Vec<&str> = CATALOGUE.iter().map(|s| s.id).collect();
        assert_eq!(ids, crate::DEFAULT_MODELS);
    }

    #[test]
    fn burndown_agrees_with_the_layers() {
        // The layers (budget, estimates) use core's rule; the emulator's
        // quota must charge the same.
        for s in CATALOGUE {
            assert_eq!(s.burndown, default_burndown_rate(s.id), "{}", s.id);
            assert_eq!(
                s.burndown,
                default_burndown_rate(&format!("us.{}", s.id)),
                "{}",
                s.id
            );
        }
    }

    #[test]
    fn lookups() {
        let haiku = spec("anthropic.claude-3-haiku-20240307-v1:0").unwrap();
        assert_eq!(haiku.max_output_tokens, 4096);
        assert!(!haiku.profile_required);
        assert!(
            spec("anthropic.claude-sonnet-4-20250514-v1:0")
                .unwrap()
                .profile_required
        );
        assert!(spec("us.anthropic.claude-sonnet-4-20250514-v1:0").is_none());
        assert!(spec("acme.private-v1:0").is_none());
    }
}
