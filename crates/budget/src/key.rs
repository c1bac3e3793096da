//! Everything the budget keeps for one key: its store handle, scheduler,
//! learned limits and gauges.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower_bedrock_core::ThrottleKind;

use crate::builder::Config;
use crate::gauges::Gauges;
use crate::scheduler::Sched;
use crate::snapshot::{KeySnapshot, TenantSnapshot};
use crate::store::{Limits, StoreKey, StoreSnapshot};
use crate::tenant::TenantInfo;

/// Everything the budget keeps for one key.
pub(crate) struct KeyState<K> {
    pub(crate) name: Arc<str>,
    pub(crate) store: K,
    pub(crate) config: Arc<Config>,
    configured: Limits,
    pub(crate) sched: Mutex<Sched>,
    pub(crate) gauges: Gauges,
    /// Bumped by every settlement that frees room: waiters that were
    /// refused retry when it moved.
    pub(crate) epoch: AtomicU64,
    /// Requests waiting (mirror of the queues' length).
    waiting: Arc<AtomicUsize>,
    /// Wakes the gauge refresher when it sleeps on an idle key.
    pub(crate) activity: Arc<Notify>,
    /// Whether the gauge refresher sleeps until the next activity.
    pub(crate) refresher_idle: AtomicBool,
    /// Burndown and default output of the model named like the key (the
    /// default key extractor).
    name_rules: (u64, u64),
}

impl<K: StoreKey> KeyState<K> {
    pub(crate) fn new(key: &str, store: K, config: Arc<Config>) -> Self {
        let configured = config.limits_of(key);
        let name: Arc<str> = Arc::from(key);
        let gauges = Gauges::new(&name);
        gauges.effective.set(configured.tokens as f64);
        let waiting = Arc::new(AtomicUsize::new(0));
        let name_rules = (
            config.policy.burndown(key),
            config.policy.default_max_output(key),
        );
        KeyState {
            sched: Mutex::new(Sched::new(name.clone(), waiting.clone())),
            name,
            store,
            config,
            configured,
            gauges,
            epoch: AtomicU64::new(0),
            waiting,
            activity: Arc::new(Notify::new()),
            refresher_idle: AtomicBool::new(false),
            name_rules,
        }
    }

    /// The configured limits (minus the slack).
    pub(crate) fn configured(&self) -> Limits {
        self.configured
    }

    /// Burndown rate and default output of `model`, cached per key.
    pub(crate) fn model_rules(&self, model: &str) -> (u64, u64) {
        if model == &*self.name {
            return self.name_rules;
        }
        let mut s = self.sched.lock();
        if let Some((m, b, o)) = &s.model
            && &**m == model
        {
            return (*b, *o);
        }
        let p = &self.config.policy;
        let (b, o) = (p.burndown(model), p.default_max_output(model));
        s.model = Some((Box::from(model), b, o));
        (b, o)
    }

    /// A rate throttle came back despite admission: mark the window full
    /// and, if throttles repeat across windows, lower the limit.
    pub(crate) fn on_throttle(&self, kind: ThrottleKind, now: Instant) {
        let Some(a) = self.config.adaptive else {
            return;
        };
        let spec = &self.config.spec;
        let mut s = self.sched.lock();
        let end = spec.next_window_start(now);
        s.learned.full_until = Some(s.learned.full_until.map_or(end, |t| t.max(end)));
        let which = match kind {
            ThrottleKind::RequestRate if self.configured.requests.is_some() => "requests",
            ThrottleKind::RequestRate | ThrottleKind::TokenRate | ThrottleKind::Unspecified => {
                "tokens"
            }
            _ => return,
        };
        let factor = if which == "requests" {
            &mut s.learned.requests
        } else {
            &mut s.learned.tokens
        };
        let dropped = factor.throttled(now, &a, spec);
        let limits = s.limits(now, &self.config, self.configured);
        drop(s);
        self.gauges.effective.set(limits.tokens as f64);
        self.wake_refresher();
        if dropped {
            tracing::info!(
                key = %self.name,
                window = which,
                effective_tokens = limits.tokens,
                effective_requests = limits.requests,
                "budget lowered after throttles in consecutive windows"
            );
        } else {
            tracing::debug!(
                key = %self.name,
                "rate throttle despite admission: window marked full until its end"
            );
        }
    }

    /// After a settlement: room may have appeared, wake the head waiter.
    pub(crate) fn on_settled(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waker =
            self.sched
                .lock()
                .take_head_waker(Instant::now(), &self.config, self.configured);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Wakes the gauge refresher if it sleeps on an idle key.
    pub(crate) fn wake_refresher(&self) {
        if self.refresher_idle.swap(false, Ordering::AcqRel) {
            self.activity.notify_one();
        }
    }

    /// Writes the gauges from the store's non-blocking view; returns it.
    pub(crate) fn write_gauges(&self, now: Instant) -> (StoreSnapshot, usize) {
        let snap = self.store.gauge_snapshot(now);
        let (limits, waiting) = {
            let s = self.sched.lock();
            (s.limits(now, &self.config, self.configured), s.waiting)
        };
        self.gauges.write(&snap, limits);
        (snap, waiting)
    }

    pub(crate) fn snapshot(&self, tenants: &[Arc<TenantInfo>]) -> KeySnapshot {
        let now = Instant::now();
        // The store first, without the key's lock (a remote store may block).
        let st: StoreSnapshot = self.store.snapshot(now);
        let s = self.sched.lock();
        let effective = s.limits(now, &self.config, self.configured);
        let tau = self.config.spec.window.as_secs_f64();
        let scores: Vec<f64> = s
            .tenants
            .iter()
            // Unweighted recent usage (dominant resource) of each tenant.
            .map(|t| Sched::cost(t, now, tau, effective) * t.weight)
            .collect();
        let total: f64 = scores.iter().sum();
        let tenants = s
            .tenants
            .iter()
            .zip(&scores)
            .enumerate()
            .filter(|(_, (t, _))| {
                t.admitted.requests > 0 || t.waits > 0 || t.sheds > 0 || !t.queue.is_empty()
            })
            .map(|(i, (t, score))| {
                let info = tenants.get(i);
                TenantSnapshot {
                    name: info.map_or_else(String::new, |i| i.name.to_string()),
                    weight: info.map_or(1, |i| i.weight),
                    priority: t.priority,
                    admitted_requests: t.admitted.requests,
                    admitted_tokens: t.admitted.tokens,
                    waits: t.waits,
                    sheds: t.sheds,
                    waiting: t.queue.len(),
                    recent_share: if total > 0.0 { score / total } else { 0.0 },
                }
            })
            .collect();
        KeySnapshot {
            key: self.name.to_string(),
            limits: self.configured,
            effective,
            tokens: st.tokens,
            reserved_tokens: st.reserved_tokens,
            reserved_requests: st.reserved_requests,
            requests: st.requests,
            day_tokens: st.day_tokens,
            utilization: crate::gauges::ratio(st.tokens, effective.tokens),
            waiting: s.waiting,
            full_until: s.learned.full(now),
            tenants,
        }
    }
}

impl<K> Drop for KeyState<K> {
    fn drop(&mut self) {
        // Lets the refresher see the key is gone.
        self.activity.notify_one();
    }
}
