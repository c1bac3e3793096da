//! A handle for operators and tests.

use std::sync::Arc;

use tokio::time::Instant;

use crate::breaker::BreakerSnapshot;
use crate::registry::Registry;

/// Reads and steers the breakers of one layer (and every service made from
/// it). Cheap to clone; clones share the breakers.
///
/// Operations that name a key create its breaker if it does not exist yet,
/// so a model can be opened before it is ever called.
#[derive(Debug, Clone)]
pub struct CircuitBreakHandle {
    registry: Arc<Registry>,
}

impl CircuitBreakHandle {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        CircuitBreakHandle { registry }
    }

    /// Every breaker's state and counts, in key order. Expired breakers are
    /// dropped first and not listed.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        self.registry.purge();
        let now = Instant::now();
        self.registry
            .all()
            .iter()
            .map(|b| b.snapshot(now))
            .collect()
    }

    /// One breaker's state and counts, if it exists.
    pub fn get(&self, key: &str) -> Option<BreakerSnapshot> {
        self.registry.find(key).map(|b| b.snapshot(Instant::now()))
    }

    /// How many breakers exist.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// Whether no breaker exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens `key`'s breaker until it is closed or reset. Returns `false`
    /// when the breaker could not be created (the registry is full of
    /// forced-open breakers).
    pub fn force_open(&self, key: &str) -> bool {
        self.registry.get(key).map(|b| b.force_open(None)).is_some()
    }

    /// Opens `key`'s breaker until `until`, then lets probes through as
    /// after any trip. Returns `false` when the breaker could not be
    /// created.
    pub fn open_until(&self, key: &str, until: Instant) -> bool {
        self.registry
            .get(key)
            .map(|b| b.force_open(Some(until)))
            .is_some()
    }

    /// Closes `key`'s breaker now and empties its window; the count of
    /// trips in a row is kept, so a new trip opens it for longer. Returns
    /// `false` if it does not exist.
    pub fn force_closed(&self, key: &str) -> bool {
        self.registry
            .find(key)
            .map(|b| b.force_closed(false))
            .is_some()
    }

    /// Returns `key`'s breaker to its initial state: closed, empty window,
    /// no trips. Returns `false` if it does not exist.
    pub fn reset(&self, key: &str) -> bool {
        self.registry
            .find(key)
            .map(|b| b.force_closed(true))
            .is_some()
    }

    /// Resets every breaker.
    pub fn reset_all(&self) {
        for b in self.registry.all() {
            b.force_closed(true);
        }
    }

    /// Drops breakers idle for longer than the idle timeout now (this also
    /// happens on its own when new keys appear); returns how many.
    pub fn purge_idle(&self) -> usize {
        self.registry.purge()
    }
}
