use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::Tried;

/// An opt-in record of what the stack did for one call.
///
/// Attach one to a request (request types expose it through
/// [`ModelRequest::report`](crate::ModelRequest::report)), keep a clone, and
/// read it after the call: how many attempts were made, which target served
/// the response, which targets were tried first, how long the budget made
/// the call wait. Response types stay untouched, so users who do not ask pay
/// nothing. Clones share the same record.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    inner: Arc<Mutex<CallSummary>>,
}

/// A snapshot of a [`CallReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallSummary {
    /// Attempts sent to the inner service by the retry layer (across all
    /// fallback targets).
    pub attempts: u32,
    /// The model or profile id that produced the final response, when one
    /// did.
    pub served_by: Option<String>,
    /// Fallback targets tried and failed before the one that served, in
    /// order.
    pub tried: Vec<Tried>,
    /// Total time the call waited for budget.
    pub budget_wait: Duration,
}

impl CallSummary {
    /// Whether the response came from a fallback target rather than the
    /// first one.
    pub fn degraded(&self) -> bool {
        !self.tried.is_empty() && self.served_by.is_some()
    }
}

impl CallReport {
    /// A new, empty report.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, CallSummary> {
        // A panic while holding this lock cannot leave the summary in an
        // inconsistent state worth refusing to read.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more attempt.
    pub fn record_attempt(&self) {
        self.lock().attempts += 1;
    }

    /// Records the target that served the response.
    pub fn record_served_by(&self, target: &str) {
        self.lock().served_by = Some(target.to_owned());
    }

    /// Records a target that was tried and failed.
    pub fn record_tried(&self, tried: Tried) {
        self.lock().tried.push(tried);
    }

    /// Adds time spent waiting for budget.
    pub fn record_budget_wait(&self, waited: Duration) {
        self.lock().budget_wait += waited;
    }

    /// A snapshot of the record.
    pub fn summary(&self) -> CallSummary {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorClass, ThrottleKind};

    #[test]
    fn clones_share_the_record() {
        let r = CallReport::new();
        let c = r.clone();
        c.record_attempt();
        c.record_attempt();
        c.record_tried(Tried {
            target: "a".into(),
            class: ErrorClass::Throttled(ThrottleKind::ModelOverloaded),
        });
        c.record_served_by("b");
        c.record_budget_wait(Duration::from_secs(1));
        let s = r.summary();
        assert_eq!(s.attempts, 2);
        assert_eq!(s.served_by.as_deref(), Some("b"));
        assert!(s.degraded());
        assert_eq!(s.budget_wait, Duration::from_secs(1));
    }
}
