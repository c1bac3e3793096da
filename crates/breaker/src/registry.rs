//! The breakers of one layer, keyed by model id: created on first use,
//! bounded in number, dropped when idle.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::time::Instant;

use crate::breaker::{Breaker, Shared};
use crate::config::Config;

#[derive(Debug)]
struct Map {
    breakers: HashMap<Arc<str>, Arc<Breaker>, foldhash::fast::RandomState>,
    last_sweep: Instant,
}

/// Shared by every clone of a layer, its services and its handles.
#[derive(Debug)]
pub(crate) struct Registry {
    shared: Arc<Shared>,
    map: RwLock<Map>,
}

impl Registry {
    pub(crate) fn new(config: Config) -> Self {
        Registry {
            shared: Arc::new(Shared::new(config)),
            map: RwLock::new(Map {
                breakers: HashMap::default(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// The breaker of `key`, created if needed. `None` only when the
    /// registry is full of breakers that must be kept (forced open).
    ///
    /// The common case is a read lock and a hash lookup by `&str`: no
    /// allocation.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Breaker>> {
        if let Some(b) = self.map.read().breakers.get(key) {
            return Some(Arc::clone(b));
        }
        self.insert(key)
    }

    /// The breaker of `key` if it exists.
    pub(crate) fn find(&self, key: &str) -> Option<Arc<Breaker>> {
        self.map.read().breakers.get(key).cloned()
    }

    #[cold]
    fn insert(&self, key: &str) -> Option<Arc<Breaker>> {
        let now = Instant::now();
        let mut map = self.map.write();
        if let Some(b) = map.breakers.get(key) {
            return Some(Arc::clone(b));
        }
        let config = &self.shared.config;
        if map.breakers.len() >= config.max_breakers
            || now.saturating_duration_since(map.last_sweep) >= config.idle_timeout / 4
        {
            Self::sweep(&mut map, now);
        }
        if map.breakers.len() >= config.max_breakers && !Self::evict_one(&mut map, key) {
            tracing::warn!(
                model = key,
                max_breakers = config.max_breakers,
                "circuit breaker registry full of forced-open breakers: call not guarded"
            );
            return None;
        }
        let key: Arc<str> = Arc::from(key);
        let breaker = Arc::new(Breaker::new(
            Arc::clone(&key),
            Arc::clone(&self.shared),
            now,
        ));
        map.breakers.insert(key, Arc::clone(&breaker));
        Some(breaker)
    }

    /// Drops every expired breaker; returns how many.
    fn sweep(map: &mut Map, now: Instant) -> usize {
        map.last_sweep = now;
        let before = map.breakers.len();
        // The map holds one reference; any other is a call in flight (or a
        // service about to use it).
        map.breakers.retain(|_, b| {
            let expired = b.expired(now, Arc::strong_count(b) > 1);
            if expired {
                b.mark_evicted();
            }
            !expired
        });
        let removed = before - map.breakers.len();
        if removed > 0 {
            tracing::debug!(removed, "idle circuit breakers dropped");
        }
        removed
    }

    /// Makes room for `for_key` by dropping the least recently used breaker
    /// that is not forced open, closed ones first.
    fn evict_one(map: &mut Map, for_key: &str) -> bool {
        let victim = map
            .breakers
            .iter()
            .filter_map(|(k, b)| b.eviction_rank().map(|rank| (rank, k)))
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, k)| Arc::clone(k));
        match victim {
            Some(k) => {
                tracing::debug!(evicted = %k, model = for_key, "circuit breaker registry full: evicting");
                if let Some(b) = map.breakers.remove(&k) {
                    b.mark_evicted();
                }
                true
            }
            None => false,
        }
    }

    /// Drops expired breakers now; returns how many.
    pub(crate) fn purge(&self) -> usize {
        Self::sweep(&mut self.map.write(), Instant::now())
    }

    /// Every breaker, in key order.
    pub(crate) fn all(&self) -> Vec<Arc<Breaker>> {
        let mut all: Vec<_> = self.map.read().breakers.values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().breakers.len()
    }
}
