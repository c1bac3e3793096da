//! How much a request reserves: the token estimator and the reservation
//! policy (output defaults and burndown rates).

use tower_bedrock_core::model::{base_model, default_burndown_rate};
use tower_bedrock_core::{ModelRequest, TokenDemand};

/// Estimates a request's token demand before it is sent.
///
/// The default, [`RequestDemand`], trusts the request's own
/// [`ModelRequest::token_demand`]. An estimator that asks Bedrock's
/// CountTokens API belongs in the SDK crate (it needs the client); any
/// other heuristic (characters / 4, a tokenizer) can be plugged in with
/// [`TokenBudgetLayer::estimator`](crate::TokenBudgetLayer::estimator).
pub trait TokenEstimator<Req> {
    /// The request's input estimate and output cap.
    fn estimate(&self, req: &Req) -> TokenDemand;
}

/// The default estimator: the request's [`ModelRequest::token_demand`]
/// (whose `input_tokens` the request type estimates, typically from its
/// text length), with the input optionally inflated by a safety margin in
/// percent (0 by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDemand {
    margin_percent: u32,
}

impl RequestDemand {
    /// Inflates input estimates by `percent` % (for request types whose
    /// estimate is known to run low).
    pub const fn with_margin_percent(percent: u32) -> Self {
        RequestDemand {
            margin_percent: percent,
        }
    }
}

impl<Req: ModelRequest> TokenEstimator<Req> for RequestDemand {
    fn estimate(&self, req: &Req) -> TokenDemand {
        let mut d = req.token_demand();
        if self.margin_percent > 0 {
            let extra = d
                .input_tokens
                .saturating_mul(u64::from(self.margin_percent))
                .div_ceil(100);
            d.input_tokens = d.input_tokens.saturating_add(extra);
        }
        d
    }
}

impl<Req, F> TokenEstimator<Req> for F
where
    F: Fn(&Req) -> TokenDemand,
{
    fn estimate(&self, req: &Req) -> TokenDemand {
        self(req)
    }
}

/// Per-model rules of a reservation: the output reserved when a request
/// sets no `max_tokens`, and the output burndown rate.
///
/// Rules match the base model id (inference-profile prefixes and ARNs are
/// stripped first) by prefix; the longest matching prefix wins. Without a
/// rule, the burndown is [`default_burndown_rate`] (5 for the Claude 4
/// family, 1 otherwise) and the output default is the policy's
/// `default_max_output` (4096 unless configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationPolicy {
    default_max_output: u64,
    max_output: Vec<(String, u64)>,
    burndown: Vec<(String, u64)>,
}

impl Default for ReservationPolicy {
    fn default() -> Self {
        ReservationPolicy {
            default_max_output: 4096,
            max_output: Vec::new(),
            burndown: Vec::new(),
        }
    }
}

fn longest<'a>(rules: &'a [(String, u64)], model: &str) -> Option<&'a (String, u64)> {
    let base = base_model(model);
    rules
        .iter()
        .filter(|(p, _)| base.starts_with(p.as_str()))
        .max_by_key(|(p, _)| p.len())
}

impl ReservationPolicy {
    pub(crate) fn set_default_max_output(&mut self, n: u64) {
        self.default_max_output = n;
    }

    pub(crate) fn add_max_output(&mut self, prefix: &str, n: u64) {
        self.max_output.push((prefix.to_owned(), n));
    }

    pub(crate) fn add_burndown(&mut self, prefix: &str, rate: u64) {
        self.burndown.push((prefix.to_owned(), rate));
    }

    /// The output burndown rate of `model`.
    pub fn burndown(&self, model: &str) -> u64 {
        longest(&self.burndown, model).map_or_else(|| default_burndown_rate(model), |r| r.1)
    }

    /// The output reserved for `model` when a request sets no cap.
    pub fn default_max_output(&self, model: &str) -> u64 {
        longest(&self.max_output, model).map_or(self.default_max_output, |r| r.1)
    }

    /// Quota tokens reserved for a demand: input plus the output cap (or
    /// the model's default) times the burndown rate.
    pub fn reservation(&self, demand: TokenDemand, default_output: u64, burndown: u64) -> u64 {
        let out = demand.max_output_tokens.unwrap_or(default_output);
        demand
            .input_tokens
            .saturating_add(out.saturating_mul(burndown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_longest_prefix_of_the_base_model() {
        let mut p = ReservationPolicy::default();
        p.add_burndown("amazon.", 2);
        p.add_burndown("amazon.nova-pro", 3);
        p.add_max_output("anthropic.", 8192);
        assert_eq!(p.burndown("us.amazon.nova-pro-v1:0"), 3);
        assert_eq!(p.burndown("amazon.nova-lite-v1:0"), 2);
        assert_eq!(p.burndown("global.anthropic.claude-sonnet-4-5-v1:0"), 5);
        assert_eq!(p.burndown("meta.llama3"), 1);
        assert_eq!(p.default_max_output("eu.anthropic.claude-3-haiku"), 8192);
        assert_eq!(p.default_max_output("meta.llama3"), 4096);
        let d = TokenDemand {
            input_tokens: 100,
            max_output_tokens: None,
        };
        assert_eq!(p.reservation(d, 50, 5), 350);
        let d = TokenDemand {
            input_tokens: 100,
            max_output_tokens: Some(10),
        };
        assert_eq!(p.reservation(d, 50, 5), 150);
    }
}
