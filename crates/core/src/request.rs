use crate::CallReport;

/// How many tokens a request may consume, as known before it is sent.
///
/// Bedrock reserves `input + max_tokens x burndown` against the model's TPM
/// quota when it admits a call; the budget layer mirrors that with this
/// value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenDemand {
    /// Estimated input tokens (prompt, system prompt, tool definitions,
    /// cache writes). An estimate: the exact count is known only after the
    /// call (or from the CountTokens API).
    pub input_tokens: u64,
    /// The request's output cap (`max_tokens` / `maxTokens`), when set.
    /// `None` means the model's default maximum applies.
    pub max_output_tokens: Option<u64>,
}

/// A request addressed to one Bedrock model.
///
/// Layers use it to key their state by model (budgets, breakers), to
/// retarget a request (fallback) and to learn its token demand (budget).
#[diagnostic::on_unimplemented(
    message = "the request type `{Self}` does not tell tower-bedrock its model (it is not `ModelRequest`)",
    label = "the budget, breaker and fallback key their state by the request's model id",
    note = "the request types of tower-bedrock-sdk (`ConverseRequest`, `InvokeModelRequest`...) implement it; for your own request type implement `ModelRequest` (`model_id`, `set_model_id`, `token_demand`)"
)]
pub trait ModelRequest {
    /// The model id, inference profile id or ARN the request is sent to.
    fn model_id(&self) -> &str;

    /// Sends the request to another model or inference profile.
    fn set_model_id(&mut self, model_id: &str);

    /// What the request may consume, as far as it can be told before
    /// sending.
    fn token_demand(&self) -> TokenDemand;

    /// Sets the output cap (used by fallback transforms). The default does
    /// nothing, for request types without one.
    fn set_max_output_tokens(&mut self, max_tokens: u64) {
        let _ = max_tokens;
    }

    /// The caller's [`CallReport`], if one was attached: layers record what
    /// they did for this call into it. The default has none.
    fn report(&self) -> Option<&CallReport> {
        None
    }
}
