//! Waiting out an open circuit breaker below the retry layer.

use std::time::Duration;

use crate::policy::MAX_WAIT;

/// Default longest single wait for an open breaker.
pub const DEFAULT_CIRCUIT_MAX_WAIT: Duration = Duration::from_secs(30);
/// Default longest total time one call spends waiting for open breakers.
pub const DEFAULT_CIRCUIT_MAX_TOTAL: Duration = Duration::from_secs(180);

/// What the retry layer does with `Local(CircuitOpen)`: a call refused by
/// an open circuit breaker below it.
///
/// Off by default (the refusal is returned at once, marked
/// `RetryStop::NotRetryable`): with a fallback chain above, the refusal
/// must reach the fallback layer at once so that it moves on to the next
/// target. With nowhere else to go (a single model), returning the refusal
/// turns every open period of the breaker into failed calls, most of them
/// from calls that were already waiting to retry a 503 when the breaker
/// opened. Turned on
/// ([`QuotaAlignedRetryLayerBuilder::wait_out_open_circuits`](crate::QuotaAlignedRetryLayerBuilder::wait_out_open_circuits)),
/// the layer instead waits for the breaker to let calls through again:
///
/// - the wait is the refusal's `retry_after` (the time until the breaker
///   probes again, or its short "probe slots busy" hint) plus a uniform
///   draw in `[0, retry_after / 4]` (in whole milliseconds), so that the
///   callers refused together do not all return at the breaker's first
///   instant; never more than [`max_wait`](Self::max_wait);
/// - a refusal without `retry_after` (a breaker forced open by an
///   operator) or with one above `max_wait` is returned at once
///   (`RetryStop::NotRetryable`);
/// - the wait must fit the call's deadline (`RetryStop::Deadline`
///   otherwise) and the call's waits for open breakers must not add up to
///   more than [`max_total`](Self::max_total) (`RetryStop::MaxAttempts`
///   otherwise);
/// - it costs no retry budget (nothing reached Bedrock) and does not count
///   towards `max_attempts` or any class's retries; it is counted in
///   `bedrock_retry_circuit_waits_total` and in
///   `ErrorContext::circuit_waits`.
///
/// The breaker stays below the retry layer: it must see every attempt
/// (each retry is a call to the model, and its outcome is the model's
/// health), and it must refuse retries of a dead model without letting
/// them reach Bedrock. The waiting belongs to the retry layer, which knows
/// the call's deadline and whether anything else (a fallback) can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitWait {
    max_wait: Duration,
    max_total: Duration,
}

impl Default for CircuitWait {
    fn default() -> Self {
        CircuitWait {
            max_wait: DEFAULT_CIRCUIT_MAX_WAIT,
            max_total: DEFAULT_CIRCUIT_MAX_TOTAL,
        }
    }
}

impl CircuitWait {
    /// The defaults: single waits up to 30 s (the breaker's default
    /// longest open time), at most 180 s in all per call.
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest single wait (a refusal whose `retry_after` is longer is
    /// returned at once).
    #[must_use]
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.max_wait = max;
        self
    }

    /// The longest total time one call may spend waiting for open
    /// breakers.
    #[must_use]
    pub fn max_total(mut self, max: Duration) -> Self {
        self.max_total = max;
        self
    }

    /// The longest single wait.
    pub fn longest_wait(&self) -> Duration {
        self.max_wait
    }

    /// The longest total of one call's waits.
    pub fn longest_total(&self) -> Duration {
        self.max_total
    }

    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.max_wait.is_zero() || self.max_total.is_zero() {
            Err("circuit waits must be allowed a positive time")
        } else if self.max_wait > MAX_WAIT || self.max_total > MAX_WAIT {
            Err("circuit waits longer than a day are refused")
        } else {
            Ok(())
        }
    }
}
