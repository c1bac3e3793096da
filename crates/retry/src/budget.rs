//! The retry budget shared by every clone of a layer's services.

use std::sync::atomic::{AtomicU32, Ordering};

/// Settings of a [`RetryBudget`].
///
/// The defaults follow the AWS SDKs' "standard" retry quota (500 tokens, a
/// retry costs 5, 10 after a timeout-like failure, and a call that succeeds
/// after retrying puts back what its last retry cost) with one change: a
/// call that succeeds on its first attempt puts back 5 (one retry), not 1.
/// With the SDK's 1, a storm of 50 % 503s drains the bucket within about
/// 300 calls and every later failure is final (the SDK's standard mode
/// loses 6 % of the calls of the `storm-503` scenario that way); with 5,
/// retries can match successes one for one, so a model answering half its
/// calls gets them all answered, and the bucket still drains as soon as
/// failures outnumber successes (an outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryBudgetConfig {
    /// Tokens in a full bucket (and the starting amount).
    pub capacity: u32,
    /// Cost of one retry.
    pub retry_cost: u32,
    /// Cost of a retry after a network failure or a model timeout: those
    /// may have reached Bedrock and consumed capacity, so they cost more.
    pub timeout_retry_cost: u32,
    /// Tokens returned by a call that succeeds on its first attempt.
    pub success_refill: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            capacity: 500,
            retry_cost: 5,
            timeout_retry_cost: 10,
            success_refill: 5,
        }
    }
}

impl RetryBudgetConfig {
    /// The default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`capacity`](Self::capacity).
    #[must_use]
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets [`retry_cost`](Self::retry_cost).
    #[must_use]
    pub fn retry_cost(mut self, cost: u32) -> Self {
        self.retry_cost = cost;
        self
    }

    /// Sets [`timeout_retry_cost`](Self::timeout_retry_cost).
    #[must_use]
    pub fn timeout_retry_cost(mut self, cost: u32) -> Self {
        self.timeout_retry_cost = cost;
        self
    }

    /// Sets [`success_refill`](Self::success_refill).
    #[must_use]
    pub fn success_refill(mut self, refill: u32) -> Self {
        self.success_refill = refill;
        self
    }

    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.capacity == 0 {
            Err("retry budget capacity must be positive")
        } else if self.retry_cost == 0 || self.timeout_retry_cost == 0 {
            Err("retry costs must be positive (a free retry is an unbounded one)")
        } else if self.retry_cost > self.capacity || self.timeout_retry_cost > self.capacity {
            Err("retry costs must not exceed the budget capacity")
        } else {
            Ok(())
        }
    }
}

/// A token bucket that bounds retries, shared by all services made by one
/// layer and all their clones.
///
/// # Why a token bucket
///
/// This is the AWS SDKs' retry quota rather than tower's percentage
/// `TpsBudget`, for three reasons:
///
/// - It refills only through successes, never through time. During a full
///   outage every call fails, nothing refills it, and retrying stops after
///   `capacity / retry_cost` retries in total, however long the outage lasts
///   and however many calls arrive: retries cannot multiply an outage. A
///   time-based percentage budget keeps minting retries every second.
/// - Under partial failure the steady state is a bounded fraction of
///   traffic: each success buys `success_refill / retry_cost` of a retry
///   (one by default, so retries never outnumber successes for long).
/// - Its waits do not interact with it: a window-aligned retry may sleep a
///   minute, which a percentage budget with a seconds-long TTL would have
///   forgotten by then. It is also deterministic, which keeps tests exact.
///
/// Tokens are withdrawn when a retry is scheduled. If the call's future is
/// dropped (or stopped by its deadline) before the retry is sent, they are
/// given back.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: AtomicU32,
    config: RetryBudgetConfig,
}

impl RetryBudget {
    pub(crate) fn new(config: RetryBudgetConfig) -> Self {
        RetryBudget {
            tokens: AtomicU32::new(config.capacity),
            config,
        }
    }

    /// Tokens left.
    pub fn available(&self) -> u32 {
        self.tokens.load(Ordering::Relaxed)
    }

    /// The settings.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    /// Takes `cost` tokens if there are that many.
    pub(crate) fn try_withdraw(&self, cost: u32) -> bool {
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(cost))
            .is_ok()
    }

    /// Puts `amount` tokens back, up to the capacity.
    #[inline]
    pub(crate) fn deposit(&self, amount: u32) {
        let cap = self.config.capacity;
        // The common case on the happy path: a full bucket, nothing to write.
        if amount == 0 || self.tokens.load(Ordering::Relaxed) >= cap {
            return;
        }
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < cap).then(|| t.saturating_add(amount).min(cap))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdraws_until_empty_and_refills_to_capacity() {
        let b = RetryBudget::new(RetryBudgetConfig::new().capacity(12).retry_cost(5));
        assert!(b.try_withdraw(5));
        assert!(b.try_withdraw(5));
        assert!(!b.try_withdraw(5));
        assert_eq!(b.available(), 2);
        b.deposit(1);
        assert_eq!(b.available(), 3);
        b.deposit(100);
        assert_eq!(b.available(), 12);
    }

    #[test]
    fn concurrent_withdrawals_never_exceed_the_capacity() {
        let b = std::sync::Arc::new(RetryBudget::new(RetryBudgetConfig::new()));
        let granted: u32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let b = &b;
                    s.spawn(move || (0..1000).filter(|_| b.try_withdraw(5)).count() as u32)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, 100);
        assert_eq!(b.available(), 0);
    }

    #[test]
    fn config_is_checked() {
        assert!(RetryBudgetConfig::new().check().is_ok());
        assert!(RetryBudgetConfig::new().capacity(0).check().is_err());
        assert!(RetryBudgetConfig::new().retry_cost(0).check().is_err());
        assert!(RetryBudgetConfig::new().capacity(4).check().is_err());
    }
}
