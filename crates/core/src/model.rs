//! Model id helpers shared by the layers and the emulator.
//!
//! Bedrock addresses a call by a foundation model id
//! (`anthropic.claude-sonnet-4-20250514-v1:0`), a cross-region inference
//! profile id (the same with a geographic or `global.` prefix), or an ARN of
//! either. Quotas are kept per id: an inference profile has quotas of its own.

/// The prefixes of cross-region (system-defined) inference profiles, longest
/// first so that `us-gov.` wins over `us.`.
pub const PROFILE_PREFIXES: &[&str] = &["us-gov", "global", "apac", "us", "eu", "jp", "au", "ca"];

/// Splits an id into its inference-profile prefix (without the dot) and the
/// base model id. ARNs are reduced to their resource id first.
///
/// ```
/// use tower_bedrock_core::model::split_profile;
/// assert_eq!(split_profile("us.anthropic.claude-3-haiku-20240307-v1:0"),
///            (Some("us"), "anthropic.claude-3-haiku-20240307-v1:0"));
/// assert_eq!(split_profile("anthropic.claude-3-haiku-20240307-v1:0"),
///            (None, "anthropic.claude-3-haiku-20240307-v1:0"));
/// assert_eq!(split_profile("arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.amazon.nova-lite-v1:0"),
///            (Some("eu"), "amazon.nova-lite-v1:0"));
/// ```
pub fn split_profile(id: &str) -> (Option<&'static str>, &str) {
    let id = resource_id(id);
    for prefix in PROFILE_PREFIXES {
        if let Some(rest) = id.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
            // "us.x" is a profile only if x looks like a model id (has its own dot).
            if rest.contains('.') {
                return (Some(prefix), rest);
            }
        }
    }
    (None, id)
}

/// The resource id of an ARN (`arn:...:foundation-model/ID` gives `ID`), or
/// the input unchanged when it is not an ARN.
pub fn resource_id(id: &str) -> &str {
    if id.starts_with("arn:") {
        id.rsplit_once('/').map_or(id, |(_, r)| r)
    } else {
        id
    }
}

/// The base foundation model id of any id, profile id or ARN.
pub fn base_model(id: &str) -> &str {
    split_profile(id).1
}

/// Bedrock's default output-token burndown rate for a model: 5 for the
/// Claude 4 family (Opus 4, Sonnet 4, Haiku 4.5 and later 4.x releases, in
/// any profile), 1 for every other model. Each output token of a model with
/// burndown `b` counts `b` tokens against the TPM quota.
///
/// ```
/// use tower_bedrock_core::model::default_burndown_rate;
/// assert_eq!(default_burndown_rate("global.anthropic.claude-sonnet-4-5-20250929-v1:0"), 5);
/// assert_eq!(default_burndown_rate("anthropic.claude-3-5-haiku-20241022-v1:0"), 1);
/// assert_eq!(default_burndown_rate("amazon.nova-pro-v1:0"), 1);
/// ```
pub fn default_burndown_rate(id: &str) -> u64 {
    let base = base_model(id).to_ascii_lowercase();
    let Some(rest) = base.strip_prefix("anthropic.claude-") else {
        return 1;
    };
    for family in ["opus-4", "sonnet-4", "haiku-4"] {
        if rest.starts_with(family) {
            return 5;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles() {
        assert_eq!(
            split_profile("us-gov.anthropic.claude-3-haiku"),
            (Some("us-gov"), "anthropic.claude-3-haiku")
        );
        assert_eq!(
            split_profile("global.anthropic.claude-sonnet-4"),
            (Some("global"), "anthropic.claude-sonnet-4")
        );
        assert_eq!(split_profile("us.x"), (None, "us.x"));
        assert_eq!(split_profile(""), (None, ""));
        assert_eq!(
            resource_id("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan"),
            "amazon.titan"
        );
        assert_eq!(
            base_model("apac.amazon.nova-lite-v1:0"),
            "amazon.nova-lite-v1:0"
        );
    }

    #[test]
    fn burndown() {
        assert_eq!(
            default_burndown_rate("anthropic.claude-opus-4-1-20250805-v1:0"),
            5
        );
        assert_eq!(
            default_burndown_rate("us.anthropic.claude-haiku-4-5-20251001-v1:0"),
            5
        );
        assert_eq!(
            default_burndown_rate("anthropic.claude-3-7-sonnet-20250219-v1:0"),
            1
        );
        assert_eq!(default_burndown_rate("meta.llama3-70b"), 1);
    }
}
