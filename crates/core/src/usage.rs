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
#[diagnostic::on_unimplemented(
    message = "the response type `{Self}` does not report its token usage (it is not `ReportsUsage`)",
    label = "the token budget settles each reservation with the response's usage",
    note = "the response types of tower-bedrock-sdk implement it; for your own response type implement `ReportsUsage::usage` (return `None` when unknown: the reservation is then kept)"
)]
pub trait ReportsUsage {
    /// The usage, when the response carries it now.
    fn usage(&self) -> Option<Usage>;

    /// For responses whose usage is only known later (streams): registers a
    /// callback called exactly once, with the usage, when the response ends
    /// (or is dropped). Returns the callback back when the response does
    /// not defer its usage; that is the default.
    ///
    /// **Any number of callbacks** may be registered on one response (a
    /// budget, a second budget, a metrics layer...): each one is called
    /// exactly once, with the same value. A callback registered after the
    /// response ended is called at once. [`UsageObservers`] implements this
    /// bookkeeping for response types.
    ///
    /// The value is the usage the response reported, or, for a stream that
    /// failed or was dropped before its final usage event, the usage known
    /// so far as the response type documents it (`None` when it knows
    /// nothing). A budget settles to it; `None` keeps the reservation.
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

/// The usage callbacks registered on one response: each is called exactly
/// once, with the same value.
///
/// A response type that defers its usage keeps one, forwards
/// [`ReportsUsage::defer_usage`] to [`register`](Self::register) and calls
/// [`finish`](Self::finish) when it ends. Callbacks registered after
/// `finish` are called at once with the same value. Dropped unfinished, it
/// calls the callbacks still waiting with `None`, so none is ever lost.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tower_bedrock_core::{Usage, UsageObservers};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let mut observers = UsageObservers::new();
/// for name in ["budget", "metrics"] {
///     let seen = seen.clone();
///     observers.register(Box::new(move |u| seen.lock().unwrap().push((name, u))));
/// }
/// observers.finish(Some(Usage::new(10, 5)));
/// observers.finish(None); // a second end changes nothing
/// let late = seen.clone();
/// observers.register(Box::new(move |u| late.lock().unwrap().push(("late", u))));
/// assert_eq!(
///     *seen.lock().unwrap(),
///     vec![
///         ("budget", Some(Usage::new(10, 5))),
///         ("metrics", Some(Usage::new(10, 5))),
///         ("late", Some(Usage::new(10, 5))),
///     ]
/// );
/// ```
#[derive(Default)]
pub struct UsageObservers {
    waiting: Vec<UsageCallback>,
    /// `Some(value)` once finished.
    finished: Option<Option<Usage>>,
}

impl std::fmt::Debug for UsageObservers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageObservers")
            .field("waiting", &self.waiting.len())
            .field("finished", &self.finished)
            .finish()
    }
}

impl UsageObservers {
    /// No callbacks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a callback; called at once if the response already finished.
    pub fn register(&mut self, callback: UsageCallback) {
        match self.finished {
            Some(value) => callback(value),
            None => self.waiting.push(callback),
        }
    }

    /// Calls every waiting callback with `usage`; the first call wins,
    /// later ones do nothing.
    pub fn finish(&mut self, usage: Option<Usage>) {
        if self.finished.is_some() {
            return;
        }
        self.finished = Some(usage);
        for callback in self.waiting.drain(..) {
            callback(usage);
        }
    }

    /// Whether [`finish`](Self::finish) was called.
    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// Callbacks still waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

impl Drop for UsageObservers {
    fn drop(&mut self) {
        self.finish(None);
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

    #[test]
    fn every_observer_gets_the_usage_exactly_once() {
        use std::sync::{Arc, Mutex};
        type Log = Arc<Mutex<Vec<(u32, Option<Usage>)>>>;
        let calls: Log = Arc::default();
        let observe = |id: u32| -> UsageCallback {
            let calls = calls.clone();
            Box::new(move |u| calls.lock().unwrap().push((id, u)))
        };
        let mut o = UsageObservers::new();
        o.register(observe(1));
        o.register(observe(2));
        assert_eq!(o.waiting(), 2);
        assert!(calls.lock().unwrap().is_empty(), "nothing before the end");
        o.finish(Some(Usage::new(3, 4)));
        o.finish(Some(Usage::new(9, 9)));
        o.register(observe(3));
        drop(o);
        assert_eq!(
            *calls.lock().unwrap(),
            vec![
                (1, Some(Usage::new(3, 4))),
                (2, Some(Usage::new(3, 4))),
                (3, Some(Usage::new(3, 4)))
            ]
        );

        // Dropped unfinished: every waiting observer hears `None`, once.
        calls.lock().unwrap().clear();
        let mut o = UsageObservers::new();
        o.register(observe(4));
        o.register(observe(5));
        drop(o);
        assert_eq!(*calls.lock().unwrap(), vec![(4, None), (5, None)]);
    }
}
