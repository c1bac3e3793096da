//! Scriptable faults. A [`FaultRule`] says what goes wrong ([`FaultKind`]),
//! how often (`rate`, drawn from the emulator's seeded RNG, so a run is
//! deterministic given the seed and the order of requests), for which model,
//! for how long and how many times.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 ThrottlingException "Model … is currently overloaded. Please try
    /// again later."
    Overloaded,
    /// 429 ThrottlingException "Too many requests, please wait before trying
    /// again." regardless of quota.
    TooManyRequests,
    /// 429 ThrottlingException "Too many tokens, please wait before trying
    /// again." regardless of quota.
    TooManyTokens,
    /// 503 ServiceUnavailableException "Service temporarily unavailable,
    /// please try again."
    Unavailable,
    /// Overload's other face: 503 ServiceUnavailableException "Model is
    /// getting throttled. Try your request again."
    GettingThrottled,
    /// 500 InternalServerException.
    InternalError,
    /// 408 ModelTimeoutException.
    ModelTimeout,
    /// 429 ModelNotReadyException.
    ModelNotReady,
    /// 424 ModelErrorException (with `originalStatusCode` and
    /// `resourceName`).
    ModelError,
    /// 400 ServiceQuotaExceededException (InvokeModel models it; other
    /// operations see an unmodelled error with that code).
    ServiceQuotaExceeded,
    /// Hold the request this long before answering it normally.
    Stall {
        /// Milliseconds.
        ms: u64,
    },
    /// Close the connection without an answer.
    Reset,
    /// Send the headers and half of the body, then close the connection.
    Truncate,
    /// In a stream: a `throttlingException` after this many events.
    StreamThrottle {
        /// Events sent before the exception.
        after_events: u32,
    },
    /// In a stream: a `serviceUnavailableException` after this many events.
    StreamUnavailable {
        /// Events sent before the exception.
        after_events: u32,
    },
    /// In a stream: an `internalServerException` after this many events.
    StreamError {
        /// Events sent before the exception.
        after_events: u32,
    },
    /// In a stream: a `modelStreamErrorException` after this many events.
    StreamModelError {
        /// Events sent before the exception.
        after_events: u32,
    },
    /// In an InvokeModelWithResponseStream stream: a
    /// `modelTimeoutException` after this many events (ConverseStream does
    /// not model it, so the rule does not apply there).
    StreamModelTimeout {
        /// Events sent before the exception.
        after_events: u32,
    },
    /// In a stream: a `validationException` after this many events.
    StreamValidation {
        /// Events sent before the exception.
        after_events: u32,
    },
    /// In a stream: pause this long after this many events, then go on.
    StreamStall {
        /// Events sent before the pause.
        after_events: u32,
        /// Milliseconds.
        ms: u64,
    },
}

impl FaultKind {
    /// Whether the fault only makes sense inside an event stream.
    pub fn is_in_stream(&self) -> bool {
        matches!(
            self,
            FaultKind::StreamThrottle { .. }
                | FaultKind::StreamUnavailable { .. }
                | FaultKind::StreamError { .. }
                | FaultKind::StreamModelError { .. }
                | FaultKind::StreamModelTimeout { .. }
                | FaultKind::StreamValidation { .. }
                | FaultKind::StreamStall { .. }
        )
    }

    /// Whether the fault can happen on a request of this kind.
    pub(crate) fn applies_to(&self, stream: Streaming) -> bool {
        match self {
            FaultKind::StreamModelTimeout { .. } => stream == Streaming::Invoke,
            k if k.is_in_stream() => stream != Streaming::No,
            _ => true,
        }
    }
}

/// Which kind of response a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streaming {
    /// A plain JSON answer.
    No,
    /// A ConverseStream event stream.
    Converse,
    /// An InvokeModelWithResponseStream event stream.
    Invoke,
}

fn one() -> f64 {
    1.0
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// The fault.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Probability in `[0, 1]` that a matching request gets it (default 1).
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests for this id (as sent, or its base model id); all
    /// models when unset.
    #[serde(default)]
    pub model: Option<String>,
    /// Active for this many milliseconds after it is installed; forever when
    /// unset.
    #[serde(default)]
    pub for_ms: Option<u64>,
    /// Fires at most this many times; unlimited when unset.
    #[serde(default)]
    pub count: Option<u64>,
}

impl FaultRule {
    /// A rule that always fires, for every model, forever.
    pub fn new(kind: FaultKind) -> Self {
        FaultRule {
            kind,
            rate: 1.0,
            model: None,
            for_ms: None,
            count: None,
        }
    }

    /// Fires with this probability.
    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    /// Only for this model id.
    pub fn model(mut self, id: impl Into<String>) -> Self {
        self.model = Some(id.into());
        self
    }

    /// Active for this long after installation.
    pub fn for_duration(mut self, d: Duration) -> Self {
        self.for_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Fires at most `n` times.
    pub fn count(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }
}

#[derive(Debug)]
struct Active {
    rule: FaultRule,
    until: Option<Instant>,
    remaining: Option<u64>,
}

/// The installed rules and the seeded RNG.
#[derive(Debug)]
pub(crate) struct FaultState {
    rules: Vec<Active>,
    rng: fastrand::Rng,
}

impl FaultState {
    pub(crate) fn new(seed: u64, rules: &[FaultRule]) -> Self {
        let mut s = FaultState {
            rules: Vec::new(),
            rng: fastrand::Rng::with_seed(seed),
        };
        s.set(rules);
        s
    }

    pub(crate) fn set(&mut self, rules: &[FaultRule]) {
        let now = Instant::now();
        self.rules = rules
            .iter()
            .map(|r| Active {
                until: r.for_ms.map(|ms| now + Duration::from_millis(ms)),
                remaining: r.count,
                rule: r.clone(),
            })
            .collect();
    }

    pub(crate) fn reseed(&mut self, seed: u64) {
        self.rng = fastrand::Rng::with_seed(seed);
    }

    pub(crate) fn rules(&self) -> Vec<FaultRule> {
        self.rules.iter().map(|a| a.rule.clone()).collect()
    }

    /// Draws the faults for one request: at most one request-level fault and
    /// at most one in-stream fault. Every active, matching rule draws once
    /// from the RNG, in order.
    pub(crate) fn draw(&mut self, id: &str, base: &str, stream: Streaming) -> Drawn {
        let now = Instant::now();
        let mut drawn = Drawn::default();
        self.rules
            .retain(|a| a.until.is_none_or(|u| now < u) && a.remaining != Some(0));
        for a in &mut self.rules {
            let r = &a.rule;
            if !r.kind.applies_to(stream) {
                continue;
            }
            if let Some(m) = &r.model
                && m != id
                && m != base
            {
                continue;
            }
            let slot_taken = if r.kind.is_in_stream() {
                drawn.in_stream.is_some()
            } else {
                drawn.request.is_some()
            };
            if slot_taken {
                continue;
            }
            let x = self.rng.f64();
            if x < r.rate || r.rate >= 1.0 {
                if let Some(n) = &mut a.remaining {
                    *n -= 1;
                }
                if r.kind.is_in_stream() {
                    drawn.in_stream = Some(r.kind);
                } else {
                    drawn.request = Some(r.kind);
                }
            }
        }
        drawn
    }
}

/// Faults chosen for one request.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Drawn {
    pub(crate) request: Option<FaultKind>,
    pub(crate) in_stream: Option<FaultKind>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn same_seed_same_faults() {
        let rules = [FaultRule::new(FaultKind::Unavailable).rate(0.3)];
        let run = |seed| {
            let mut s = FaultState::new(seed, &rules);
            (0..200)
                .map(|_| s.draw("m", "m", Streaming::No).request.is_some())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let hits = a.iter().filter(|h| **h).count();
        assert!((30..90).contains(&hits), "{hits}");
    }

    #[tokio::test(start_paused = true)]
    async fn count_duration_and_model_filter() {
        let rules = [
            FaultRule::new(FaultKind::Overloaded).model("a").count(2),
            FaultRule::new(FaultKind::Reset).for_duration(Duration::from_secs(1)),
            FaultRule::new(FaultKind::StreamThrottle { after_events: 1 }),
        ];
        let mut s = FaultState::new(1, &rules);
        assert_eq!(
            s.draw("b", "b", Streaming::No).request,
            Some(FaultKind::Reset)
        );
        assert_eq!(
            s.draw("a", "a", Streaming::No).request,
            Some(FaultKind::Overloaded)
        );
        let d = s.draw("us.a", "a", Streaming::Converse);
        assert_eq!(d.request, Some(FaultKind::Overloaded));
        assert_eq!(
            d.in_stream,
            Some(FaultKind::StreamThrottle { after_events: 1 })
        );
        assert_eq!(
            s.draw("a", "a", Streaming::No).request,
            Some(FaultKind::Reset)
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.draw("a", "a", Streaming::No).request, None);
        assert_eq!(s.rules().len(), 1);
    }
}
