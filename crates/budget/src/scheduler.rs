//! The waiting requests of one key: per-tenant FIFO queues, the choice of
//! the next request to try (priority, then weighted recent usage), and the
//! key's learned limits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Waker;

use metrics::{Counter, Histogram};
use tokio::time::Instant;
use tower_bedrock_core::{LocalRejection, names};

use crate::adaptive::Learned;
use crate::builder::Config;
use crate::store::{Charge, Limits};
use crate::tenant::{Priority, TenantInfo};

/// An exponentially decayed counter (time constant: one window).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Decayed {
    value: f64,
    at: Option<Instant>,
}

impl Decayed {
    pub(crate) fn get(&self, now: Instant, tau: f64) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                self.value * (-(now.saturating_duration_since(at).as_secs_f64()) / tau).exp()
            }
        }
    }

    fn add(&mut self, x: f64, now: Instant, tau: f64) {
        self.value = self.get(now, tau) + x;
        self.at = Some(now);
    }
}

/// The metric handles of one tenant on one key, made once (no label
/// strings per wait or shed).
pub(crate) struct TenantMetrics {
    pub(crate) waits: Counter,
    pub(crate) wait_seconds: Histogram,
    shed_exhausted: Counter,
    shed_too_large: Counter,
    shed_deadline: Counter,
}

impl TenantMetrics {
    fn new(key: &str, tenant: &str) -> Self {
        let shed = |reason: LocalRejection| metrics::counter!(names::BUDGET_SHEDS, "model" => key.to_owned(), "tenant" => tenant.to_owned(), "reason" => reason.label());
        TenantMetrics {
            waits: metrics::counter!(names::BUDGET_WAITS, "model" => key.to_owned(), "tenant" => tenant.to_owned()),
            wait_seconds: metrics::histogram!(names::BUDGET_WAIT_SECONDS, "model" => key.to_owned(), "tenant" => tenant.to_owned()),
            shed_exhausted: shed(LocalRejection::BudgetExhausted),
            shed_too_large: shed(LocalRejection::RequestTooLarge),
            shed_deadline: shed(LocalRejection::DeadlineExceeded),
        }
    }

    pub(crate) fn shed(&self, reason: LocalRejection) -> &Counter {
        match reason {
            LocalRejection::RequestTooLarge => &self.shed_too_large,
            LocalRejection::DeadlineExceeded => &self.shed_deadline,
            _ => &self.shed_exhausted,
        }
    }
}

pub(crate) struct TenantSlot {
    pub(crate) weight: f64,
    pub(crate) priority: Priority,
    /// Waiters by arrival (id), with the waker of each.
    pub(crate) queue: BTreeMap<u64, Option<Waker>>,
    pub(crate) tokens: Decayed,
    pub(crate) requests: Decayed,
    pub(crate) admitted: Charge,
    pub(crate) waits: u64,
    pub(crate) sheds: u64,
    /// The store refused the tenant its share until then: its waiters are
    /// not chosen before (other tenants' go).
    pub(crate) blocked_until: Option<Instant>,
    /// Made when the tenant is first seen on the key.
    pub(crate) metrics: Option<TenantMetrics>,
}

/// One key's scheduling state (behind the key's lock).
pub(crate) struct Sched {
    key: Arc<str>,
    pub(crate) tenants: Vec<TenantSlot>,
    pub(crate) waiting: usize,
    next_id: u64,
    /// Mirror of `waiting`, readable without the lock.
    waiting_mirror: Arc<AtomicUsize>,
    /// When the last refusal expected room.
    pub(crate) room_at: Option<Instant>,
    /// The settlement epoch at which the head waiter was last refused: while
    /// it has not moved (and `room_at` is ahead), the head cannot go, and a
    /// newcomer may try the store before queueing behind it.
    pub(crate) head_blocked: Option<u64>,
    /// The learned (adaptive) limits and the window marked full.
    pub(crate) learned: Learned,
    /// Burndown and default output of the last model seen on this key.
    pub(crate) model: Option<(Box<str>, u64, u64)>,
}

impl Sched {
    pub(crate) fn new(key: Arc<str>, waiting_mirror: Arc<AtomicUsize>) -> Self {
        Sched {
            key,
            tenants: Vec::new(),
            waiting: 0,
            next_id: 0,
            waiting_mirror,
            room_at: None,
            head_blocked: None,
            learned: Learned::NEW,
            model: None,
        }
    }

    /// The effective limits at `now`.
    pub(crate) fn limits(&self, now: Instant, config: &Config, configured: Limits) -> Limits {
        self.learned.limits(
            now,
            config.adaptive.as_ref(),
            config.spec.window,
            configured,
        )
    }

    /// The metric handles of `tenant` on this key.
    pub(crate) fn metrics(&mut self, tenant: &TenantInfo) -> &TenantMetrics {
        let key = self.key.clone();
        self.slot(tenant)
            .metrics
            .get_or_insert_with(|| TenantMetrics::new(&key, &tenant.name))
    }

    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting > 0
    }

    pub(crate) fn slot(&mut self, tenant: &TenantInfo) -> &mut TenantSlot {
        while self.tenants.len() <= tenant.index {
            self.tenants.push(TenantSlot {
                weight: 1.0,
                priority: Priority::Interactive,
                queue: BTreeMap::new(),
                tokens: Decayed::default(),
                requests: Decayed::default(),
                admitted: Charge::ZERO,
                waits: 0,
                sheds: 0,
                blocked_until: None,
                metrics: None,
            });
        }
        let key = &self.key;
        let t = &mut self.tenants[tenant.index];
        if t.metrics.is_none() {
            t.metrics = Some(TenantMetrics::new(key, &tenant.name));
        }
        t.weight = f64::from(tenant.weight);
        t.priority = tenant.priority;
        t
    }

    /// Joins the tenant's queue; returns the waiter's id.
    pub(crate) fn enqueue(&mut self, tenant: &TenantInfo) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let t = self.slot(tenant);
        t.queue.insert(id, None);
        t.waits += 1;
        if let Some(m) = &t.metrics {
            m.waits.increment(1);
        }
        self.waiting += 1;
        self.waiting_mirror.store(self.waiting, Ordering::SeqCst);
        id
    }

    /// Leaves the queue (admitted, shed or dropped). O(log n).
    pub(crate) fn remove(&mut self, tenant: usize, id: u64) {
        if let Some(t) = self.tenants.get_mut(tenant)
            && t.queue.remove(&id).is_some()
        {
            self.waiting -= 1;
            self.waiting_mirror.store(self.waiting, Ordering::SeqCst);
        }
    }

    /// Weighted recent cost of a tenant: the larger of its token and
    /// request shares of the limits (dominant resource), over its weight.
    pub(crate) fn cost(t: &TenantSlot, now: Instant, tau: f64, limits: Limits) -> f64 {
        let tok = t.tokens.get(now, tau) / limits.tokens.max(1) as f64;
        let req = limits
            .requests
            .map_or(0.0, |r| t.requests.get(now, tau) / r.max(1) as f64);
        tok.max(req) / t.weight
    }

    /// The waiter allowed to try next: the front of the queue of the
    /// tenant in the highest priority class with the lowest weighted recent
    /// cost (ties: the earliest arrival), skipping tenants the store
    /// refused their share until later. With one tenant, plain FIFO.
    pub(crate) fn head(
        &self,
        now: Instant,
        config: &Config,
        limits: Limits,
    ) -> Option<(usize, u64)> {
        if self.waiting == 0 {
            return None;
        }
        let tau = config.spec.window.as_secs_f64();
        let mut best: Option<(usize, Priority, f64, u64)> = None;
        for (i, t) in self.tenants.iter().enumerate() {
            let Some((&front, _)) = t.queue.first_key_value() else {
                continue;
            };
            if t.blocked_until.is_some_and(|at| at > now) {
                continue;
            }
            let cost = Self::cost(t, now, tau, limits);
            let better = match best {
                None => true,
                Some((_, p, c, id)) => (t.priority, cost, front) < (p, c, id),
            };
            if better {
                best = Some((i, t.priority, cost, front));
            }
        }
        best.map(|(i, _, _, id)| (i, id))
    }

    /// Whether `id` is the front of `tenant`'s queue, and until when the
    /// tenant is held back, if it is.
    pub(crate) fn front_blocked(&self, tenant: usize, id: u64, now: Instant) -> Option<Instant> {
        let t = self.tenants.get(tenant)?;
        let (&front, _) = t.queue.first_key_value()?;
        (front == id)
            .then_some(t.blocked_until)
            .flatten()
            .filter(|at| *at > now)
    }

    pub(crate) fn take_head_waker(
        &mut self,
        now: Instant,
        config: &Config,
        limits: Limits,
    ) -> Option<Waker> {
        let (t, id) = self.head(now, config, limits)?;
        self.tenants[t].queue.get_mut(&id)?.take()
    }

    pub(crate) fn set_waker(&mut self, tenant: usize, id: u64, waker: &Waker) {
        if let Some(w) = self
            .tenants
            .get_mut(tenant)
            .and_then(|t| t.queue.get_mut(&id))
        {
            match w {
                Some(old) if old.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        }
    }

    /// Records an admission for fairness and introspection.
    pub(crate) fn admitted(&mut self, tenant: &TenantInfo, charge: Charge, now: Instant, tau: f64) {
        let t = self.slot(tenant);
        t.tokens.add(charge.tokens as f64, now, tau);
        t.requests.add(charge.requests as f64, now, tau);
        t.admitted.tokens = t.admitted.tokens.saturating_add(charge.tokens);
        t.admitted.requests = t.admitted.requests.saturating_add(charge.requests);
        t.blocked_until = None;
    }
}
