use std::ops::Add;

/// Tokens a call really consumed, as Bedrock reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Input tokens, not counting cache reads or writes.
    pub input_tokens: u64,
    /// Output tokens generated.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_input_tokens: u64,
}

impl Usage {
    /// A usage with input and output tokens only.
    pub const fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Usage {
            input_tokens,
            output_tokens,
            cache_read_input_tokens: 0,
            cache_write_input_tokens: 0,
        }
    }

    /// All tokens reported, as Bedrock bills them: input, output, cache
    /// reads and writes.
    pub const fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_write_input_tokens)
    }

    /// What the call counts against a TPM quota: input plus cache writes
    /// plus output times the model's output burndown rate. Cache reads do
    /// not count against Bedrock's TPM quota.
    pub const fn quota_tokens(&self, burndown: u64) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_write_input_tokens)
            .saturating_add(self.output_tokens.saturating_mul(burndown))
    }
}

impl Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(o.input_tokens),
            output_tokens: self.output_tokens.saturating_add(o.output_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .saturating_add(o.cache_read_input_tokens),
            cache_write_input_tokens: self
                .cache_write_input_tokens
                .saturating_add(o.cache_write_input_tokens),
        }
    }
}

/// A one-shot callback that receives a response's final usage, or `None`
/// when the response ended without reporting any (a broken stream).
pub type UsageCallback = Box<dyn FnOnce(Option<Usage>) + Send + 'static>;

/// A response that can tell how many tokens its call consumed.
pub trait ReportsUsage {
    /// The usage, when the response carries it now.
    fn usage(&self) -> Option<Usage>;

    /// For responses whose usage is only known later (streams): registers a
    /// callback called exactly once, with the final usage, when the
    /// response ends (or is dropped). Returns the callback back when the
    /// response does not defer its usage; that is the default.
    fn defer_usage(&mut self, settle: UsageCallback) -> Result<(), UsageCallback> {
        Err(settle)
    }
}

impl<T: ReportsUsage> ReportsUsage for Box<T> {
    fn usage(&self) -> Option<Usage> {
        (**self).usage()
    }
    fn defer_usage(&mut self, settle: UsageCallback) -> Result<(), UsageCallback> {
        (**self).defer_usage(settle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_tokens_apply_burndown_and_skip_cache_reads() {
        let u = Usage {
            input_tokens: 100,
            output_tokens: 10,
            cache_read_input_tokens: 1000,
            cache_write_input_tokens: 50,
        };
        assert_eq!(u.total(), 1160);
        assert_eq!(u.quota_tokens(1), 160);
        assert_eq!(u.quota_tokens(5), 200);
        assert_eq!((u + Usage::new(1, 1)).input_tokens, 101);
        assert_eq!(Usage::new(u64::MAX, 2).quota_tokens(5), u64::MAX);
    }
}
