//! The budget's gauges, and the task that keeps them true while time
//! passes without requests.
//!
//! Each key gets one refresher task (spawned on the runtime that first
//! used the key, if any). While the key has usage in its window, calls in
//! flight or waiters, it rewrites the gauges every sub-window; once the
//! window is empty it sleeps until the next admission (or the end of the
//! day window, for the day gauge). It holds the key weakly and ends with
//! the budget.

use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::Gauge;
use tokio::time::{Instant, sleep_until, timeout_at};
use tower_bedrock_core::names;

use crate::key::KeyState;
use crate::store::{Limits, StoreKey, StoreSnapshot};

pub(crate) struct Gauges {
    tokens: Gauge,
    requests: Gauge,
    day: Gauge,
    pub(crate) effective: Gauge,
}

impl Gauges {
    pub(crate) fn new(name: &str) -> Self {
        let gauge = |w: &'static str| metrics::gauge!(names::BUDGET_UTILIZATION, "model" => name.to_owned(), "window" => w);
        Gauges {
            tokens: gauge("tokens"),
            requests: gauge("requests"),
            day: gauge("day"),
            effective: metrics::gauge!(names::BUDGET_EFFECTIVE_LIMIT, "model" => name.to_owned()),
        }
    }

    pub(crate) fn write(&self, snap: &StoreSnapshot, limits: Limits) {
        self.tokens.set(ratio(snap.tokens, limits.tokens));
        self.effective.set(limits.tokens as f64);
        if let Some(r) = limits.requests {
            self.requests.set(ratio(snap.requests, r));
        }
        if let Some(d) = limits.day_tokens {
            self.day.set(ratio(snap.day_tokens, d));
        }
    }
}

pub(crate) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Starts the refresher of `key` on the current runtime (none outside
/// one: the gauges are then written on admission and settlement only).
pub(crate) fn spawn_refresher<K: StoreKey>(key: &std::sync::Arc<KeyState<K>>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = std::sync::Arc::downgrade(key);
    let activity = key.activity.clone();
    let spec = key.config.spec;
    let period = spec.granularity().max(Duration::from_millis(10));
    handle.spawn(async move {
        loop {
            let now = Instant::now();
            let idle_until = {
                let Some(k) = weak.upgrade() else { return };
                // Idle first: an admission from here on wakes the task.
                k.refresher_idle.store(true, Ordering::Release);
                let (snap, waiting) = k.write_gauges(now);
                let busy = snap.tokens > 0
                    || snap.requests > 0
                    || snap.reserved_tokens > 0
                    || snap.reserved_requests > 0
                    || waiting > 0
                    || k.sched.lock().learned.full(now).is_some();
                if busy {
                    k.refresher_idle.store(false, Ordering::Release);
                    None
                } else {
                    // The day gauge still falls at the end of the day.
                    Some((snap.day_tokens > 0).then(|| {
                        let day = spec.index_at(now, spec.day);
                        spec.start_of(day.saturating_add(1), spec.day, now)
                    }))
                }
            };
            match idle_until {
                None => sleep_until(now + period).await,
                Some(None) => activity.notified().await,
                Some(Some(at)) => {
                    let _ = timeout_at(at, activity.notified()).await;
                }
            }
        }
    });
}
