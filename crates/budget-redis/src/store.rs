//! The store, its keys and the reservation future.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tower_bedrock_budget::{
    BudgetStore, Charge, InMemoryKey, InMemoryStore, Limits, Refusal, Reservation, StoreKey,
    StoreSnapshot, TenantTag, WindowKind, WindowMode, WindowSpec,
};

use crate::config::{Config, RedisStoreBuilder, TimeSource};
use crate::driver::{self, Op, ReplyGuard, SettleOp, SettleTarget, TenantArgs};
use crate::error::BuildError;
use crate::names;

/// Bit 63 of a [`Reservation`]'s slot marks a reservation made from the
/// local share (degraded mode); bits 52..63 hold its local epoch, bits
/// 0..52 the in-memory store's slot. Redis slots (wall-clock sub-windows of
/// at least 1 µs) stay below 2^52 until the year 2112.
const LOCAL_BIT: u64 = 1 << 63;
const EPOCH_SHIFT: u32 = 52;
const EPOCH_MASK: u64 = 0x7FF;
const SLOT_MASK: u64 = (1 << EPOCH_SHIFT) - 1;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What every part of a store shares (workers included).
pub(crate) struct Common {
    pub(crate) config: Config,
    /// This process's instance id (random).
    pub(crate) instance: String,
    /// Last known number of live instances (at least 1).
    pub(crate) live: AtomicU64,
    /// Workers currently degraded.
    pub(crate) degraded_workers: AtomicUsize,
    /// Where degraded-mode reservations are kept.
    pub(crate) fallback: InMemoryStore,
    pub(crate) next_key: AtomicUsize,
}

impl Common {
    pub(crate) fn now_us(&self, now: Instant) -> Option<u64> {
        match self.config.time {
            TimeSource::Redis => None,
            TimeSource::Client(clock) => {
                Some(u64::try_from(clock.wall_at(now).as_micros()).unwrap_or(u64::MAX))
            }
        }
    }

    fn blocking(&self) -> bool {
        matches!(self.config.time, TimeSource::Client(_))
    }
}

/// One worker's state as callers see it.
pub(crate) struct WorkerState {
    pub(crate) degraded: AtomicBool,
    /// Keys that reserved from their local share since the last merge.
    pub(crate) dirty: Mutex<Vec<Arc<KeyShared>>>,
}

struct StoreInner {
    common: Arc<Common>,
    workers: Vec<(mpsc::UnboundedSender<Op>, Arc<WorkerState>)>,
}

/// A [`BudgetStore`] kept in Redis and shared by every process that uses
/// the same Redis, prefix, account and region.
///
/// Build it with [`RedisStore::builder`] and pass it to
/// [`BudgetBuilder::build_with_store`](tower_bedrock_budget::BudgetBuilder::build_with_store).
/// Clones share the connections. See the [crate docs](crate) for the
/// algorithm, the key layout, waiting and degraded mode.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<StoreInner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisStore")
            .field("namespace", &self.inner.common.config.namespace())
            .field("instance", &self.inner.common.instance)
            .field("degraded", &self.is_degraded())
            .finish()
    }
}

impl RedisStore {
    /// A builder for a store at `url`: `redis://[user:password@]host:port[/db]`,
    /// `rediss://...` for TLS (with this crate's `tls` feature), or
    /// `redis+unix:///path`.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(url)
    }

    pub(crate) fn start(config: Config, client: redis::Client) -> Result<RedisStore, BuildError> {
        let common = Arc::new(Common {
            instance: instance_id(),
            live: AtomicU64::new(config.expected_instances),
            degraded_workers: AtomicUsize::new(0),
            fallback: InMemoryStore::new(),
            next_key: AtomicUsize::new(0),
            config,
        });
        let workers = driver::spawn(common.clone(), client)?;
        Ok(RedisStore {
            inner: Arc::new(StoreInner { common, workers }),
        })
    }

    /// Whether any connection is down (the store serves from local shares
    /// for the keys on it).
    pub fn is_degraded(&self) -> bool {
        self.inner.common.degraded_workers.load(Ordering::Relaxed) > 0
    }

    /// The last known number of live instances sharing this namespace.
    pub fn live_instances(&self) -> u64 {
        self.inner.common.live.load(Ordering::Relaxed)
    }

    /// This process's instance id, as registered in Redis.
    pub fn instance_id(&self) -> &str {
        &self.inner.common.instance
    }

    /// The Redis key prefix of one budget key: its hashes are `<base>:fx`
    /// and `<base>:rsv` (fixed windows) or `<base>:tok`, `<base>:req` and
    /// `<base>:day` (sliding windows), and `<base>:seq`.
    pub fn key_base(&self, key: &str) -> String {
        self.inner.common.config.key_base(key)
    }

    /// Waits (on the calling thread, up to `timeout`) until every
    /// connection has answered once; false if some did not. Meant for
    /// start-up checks and tests; the store works without it.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        for (tx, _) in &self.inner.workers {
            let (reply, rx) = std::sync::mpsc::sync_channel(1);
            if tx.send(Op::Ping { reply }).is_err() {
                return false;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !matches!(rx.recv_timeout(left), Ok(true)) {
                return false;
            }
        }
        true
    }
}

fn instance_id() -> String {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(t.as_nanos());
    format!("{}-{:016x}", std::process::id(), h.finish())
}

impl BudgetStore for RedisStore {
    type Key = RedisKey;

    fn key(&self, key: &str, spec: &WindowSpec) -> RedisKey {
        let common = &self.inner.common;
        let id = common.next_key.fetch_add(1, Ordering::Relaxed);
        let worker = id % self.inner.workers.len();
        let base = common.config.key_base(key);
        let g_us = micros(spec.granularity());
        let dg_us = micros(spec.day / spec.day_sub_windows.max(1));
        let k = micros(spec.window).div_ceil(g_us);
        let dk = micros(spec.day).div_ceil(dg_us);
        let ms = |g: u64, k: u64| (2 * (k + 1)).saturating_mul(g).div_ceil(1000).max(1000);
        let window_us = micros(spec.window);
        let shared = Arc::new(KeyShared {
            id,
            name: key.into(),
            mode: spec.mode,
            fx: format!("{base}:fx"),
            rsv: format!("{base}:rsv"),
            tok: format!("{base}:tok"),
            req: format!("{base}:req"),
            day: format!("{base}:day"),
            seq_key: format!("{base}:seq"),
            contention: format!("{base}:ten"),
            tenant_rings: Mutex::new(Vec::new()),
            base,
            geometry: Geometry {
                g_us,
                k,
                dg_us,
                dk,
                ttl_ms: ms(g_us, k),
                day_ttl_ms: ms(dg_us, dk),
                window_us,
                day_us: micros(spec.day),
                // A call in flight longer than this (and no other operation
                // of its instance on the key) is taken for a dead
                // instance's.
                stale_us: window_us.saturating_mul(2).max(300_000_000),
            },
            spec: *spec,
            reserved_tokens: AtomicU64::new(0),
            reserved_requests: AtomicU64::new(0),
            last: Mutex::new(Sums::default()),
            local: Mutex::new(Local {
                epoch: 0,
                key: common.fallback.key(key, spec),
                used: false,
                pre: None,
            }),
            next_seq: AtomicU64::new(1),
            common: common.clone(),
            worker: self.inner.workers[worker].1.clone(),
            tx: self.inner.workers[worker].0.clone(),
        });
        RedisKey { shared }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The windows' geometry in the scripts' units (µs, ms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) g_us: u64,
    pub(crate) k: u64,
    pub(crate) dg_us: u64,
    pub(crate) dk: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) day_ttl_ms: u64,
    /// Fixed windows: the window and day lengths.
    pub(crate) window_us: u64,
    pub(crate) day_us: u64,
    /// Fixed windows: after how long without news an instance's
    /// reservations in flight are pruned.
    pub(crate) stale_us: u64,
}

/// Window sums as Redis last reported them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sums {
    /// When they were read (the caller's instant of the operation), if
    /// known.
    pub(crate) at: Option<Instant>,
    pub(crate) tokens: u64,
    pub(crate) requests: u64,
    pub(crate) day: u64,
}

pub(crate) struct Local {
    /// Bumped each time the local charges are merged into Redis.
    pub(crate) epoch: u64,
    pub(crate) key: InMemoryKey,
    /// Used (primed) in this epoch.
    pub(crate) used: bool,
    /// The priming charge (this instance's part of the last known shared
    /// window), refunded before the merge: Redis already has it.
    pub(crate) pre: Option<Reservation>,
}

/// Everything one key of a store keeps.
pub(crate) struct KeyShared {
    pub(crate) id: usize,
    pub(crate) name: Box<str>,
    /// Fixed (`<base>:fx`, `<base>:rsv`) or sliding (`<base>:tok`, `:req`,
    /// `:day`) windows.
    pub(crate) mode: WindowMode,
    pub(crate) fx: String,
    pub(crate) rsv: String,
    pub(crate) tok: String,
    pub(crate) req: String,
    pub(crate) day: String,
    pub(crate) seq_key: String,
    /// The tenants contending for the key (see the reserve script).
    pub(crate) contention: String,
    /// The token rings of the tenants seen, `<base>:t:<tenant>`.
    tenant_rings: Mutex<Vec<(Box<str>, Arc<str>)>>,
    base: String,
    pub(crate) geometry: Geometry,
    spec: WindowSpec,
    reserved_tokens: AtomicU64,
    reserved_requests: AtomicU64,
    pub(crate) last: Mutex<Sums>,
    pub(crate) local: Mutex<Local>,
    next_seq: AtomicU64,
    pub(crate) common: Arc<Common>,
    pub(crate) worker: Arc<WorkerState>,
    tx: mpsc::UnboundedSender<Op>,
}

impl KeyShared {
    /// Records window sums read at `at` (keeps the previous time if the
    /// operation had none).
    pub(crate) fn set_last(&self, sums: Sums, at: Option<Instant>) {
        let mut last = lock(&self.last);
        let at = at.or(last.at);
        *last = Sums { at, ..sums };
    }

    /// What a reservation re-seeds the window with if Redis lost it
    /// (restarted empty): this instance's part of the window's usage as
    /// last seen, if seen in the current window, and (fixed windows) its
    /// own tokens in flight. `[tokens, requests, in flight]`.
    pub(crate) fn seed(&self, now: Instant) -> [u64; 3] {
        let last = *lock(&self.last);
        let live = self.common.live.load(Ordering::Relaxed).max(1);
        let mine = self.reserved_tokens.load(Ordering::Relaxed);
        let current = last.at.is_some_and(|at| match self.mode {
            WindowMode::Fixed => {
                self.spec.index_at(at, self.spec.window)
                    == self.spec.index_at(now, self.spec.window)
            }
            _ => now.saturating_duration_since(at) < self.spec.window,
        });
        if !current {
            return [0, 0, mine];
        }
        let tokens = last.tokens / live;
        match self.mode {
            // The in-flight part is seeded apart.
            WindowMode::Fixed => [tokens.saturating_sub(mine), last.requests / live, mine],
            _ => [tokens, last.requests / live, 0],
        }
    }

    /// The Redis key of `tenant`'s token ring (made once per tenant).
    fn tenant_ring(&self, tenant: &str) -> Arc<str> {
        let mut rings = lock(&self.tenant_rings);
        if let Some((_, r)) = rings.iter().find(|(n, _)| &**n == tenant) {
            return r.clone();
        }
        let ring: Arc<str> = Arc::from(format!("{}:t:{tenant}", self.base));
        rings.push((Box::from(tenant), ring.clone()));
        ring
    }

    /// Next settlement sequence number (assigned by the worker, in the
    /// order it applies them).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn add_reserved(&self, c: Charge) {
        self.reserved_tokens.fetch_add(c.tokens, Ordering::Relaxed);
        self.reserved_requests
            .fetch_add(c.requests, Ordering::Relaxed);
    }

    fn release_reserved(&self, c: Charge) {
        let sub = |a: &AtomicU64, x: u64| {
            let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(x))
            });
        };
        sub(&self.reserved_tokens, c.tokens);
        sub(&self.reserved_requests, c.requests);
    }

    /// Reserves from this process's share of the limits (degraded mode):
    /// the limits divided by the last known number of live instances.
    pub(crate) fn local_reserve(
        self: &Arc<Self>,
        limits: Limits,
        charge: Charge,
        now: Instant,
    ) -> Result<Reservation, Refusal> {
        let live = self.common.live.load(Ordering::Relaxed).max(1);
        let share = Limits {
            tokens: limits.tokens / live,
            requests: limits.requests.map(|r| r / live),
            day_tokens: limits.day_tokens.map(|d| d / live),
        };
        // A charge above the share (but within the limits) cannot be
        // admitted until Redis is back: retry after the longest backoff.
        let too_big = [
            (WindowKind::Tokens, Some(share.tokens), charge.tokens),
            (WindowKind::Requests, share.requests, charge.requests),
            (WindowKind::Day, share.day_tokens, charge.tokens),
        ]
        .into_iter()
        .find(|(_, lim, amount)| lim.is_some_and(|l| *amount > l));
        if let Some((window, _, _)) = too_big {
            return Err(Refusal {
                window,
                room_at: Some(now + self.common.config.reconnect_max),
            });
        }
        let (result, first_use) = {
            let mut l = lock(&self.local);
            // Fixed windows: the priming charge stands for the usage of the
            // window it was read in, and leaves with it.
            if self.mode == WindowMode::Fixed
                && let Some(p) = l.pre
                && p.slot < self.spec.index_at(now, self.spec.window)
            {
                l.key.settle(p, Charge::ZERO, now);
                l.pre = None;
            }
            let first_use = !l.used;
            if first_use {
                // The local window starts where the shared one was last
                // seen, for this instance's part: the window is not empty
                // just because Redis cannot be reached.
                // Charged when it was read, so it leaves the local window
                // about when those charges leave the shared one (at most
                // one window after they were read).
                let last = *lock(&self.last);
                let pre = Charge {
                    tokens: last.tokens / live,
                    requests: last.requests / live,
                };
                // Fixed windows: usage read in an earlier window is gone.
                let stale = self.mode == WindowMode::Fixed
                    && last.at.is_none_or(|at| {
                        self.spec.index_at(at, self.spec.window)
                            < self.spec.index_at(now, self.spec.window)
                    });
                if pre != Charge::ZERO && !stale {
                    let unlimited = Limits::tokens(u64::MAX);
                    let at = last.at.map_or(now, |at| at.min(now));
                    l.pre = l.key.reserve(unlimited, pre, at).into_inner().ok();
                }
                l.used = true;
            }
            let r = l.key.reserve(share, charge, now).into_inner();
            (r.map(|r| (r, l.epoch)), first_use)
        };
        if first_use {
            lock(&self.worker.dirty).push(self.clone());
            // Tell the worker, so the charges are merged as soon as it is
            // connected (possibly already).
            let _ = self.tx.send(Op::Flush);
        }
        let (r, epoch) = result?;
        self.add_reserved(charge);
        metrics::counter!(names::STORE_LOCAL_ADMISSIONS, "namespace" => self.common.config.namespace())
            .increment(1);
        Ok(Reservation {
            charge,
            slot: LOCAL_BIT | ((epoch & EPOCH_MASK) << EPOCH_SHIFT) | (r.slot & SLOT_MASK),
            day_slot: r.day_slot,
        })
    }

    fn settle(
        self: &Arc<Self>,
        r: Reservation,
        actual: Charge,
        now: Instant,
        tenant_ring: Option<Arc<str>>,
    ) {
        self.release_reserved(r.charge);
        let target = if r.slot & LOCAL_BIT != 0 {
            let epoch = (r.slot >> EPOCH_SHIFT) & EPOCH_MASK;
            let l = lock(&self.local);
            if l.epoch & EPOCH_MASK == epoch {
                let local = Reservation {
                    slot: r.slot & SLOT_MASK,
                    ..r
                };
                l.key.settle(local, actual, now);
                return;
            }
            // Its epoch was merged into Redis: settle there.
            SettleTarget::Merged(epoch)
        } else {
            SettleTarget::Slots(r.slot, r.day_slot)
        };
        let op = SettleOp {
            key: self.clone(),
            target,
            reserved: [r.charge.tokens, r.charge.requests, r.charge.tokens],
            actual: [actual.tokens, actual.requests, actual.tokens],
            now_us: self.common.now_us(now),
            at: Some(now),
            seq: None,
            tenant_ring,
        };
        if self.tx.send(Op::Settle(op)).is_err() {
            tracing::error!(key = %self.name, "budget store thread gone: settlement dropped");
        }
    }

    fn snapshot(self: &Arc<Self>, now: Instant, fresh: bool) -> StoreSnapshot {
        let fresh = if self.worker.degraded.load(Ordering::Relaxed) || !fresh {
            None
        } else {
            let (reply, rx) = std::sync::mpsc::sync_channel(1);
            let op = Op::Snapshot {
                key: self.clone(),
                now_us: self.common.now_us(now),
                at: now,
                reply,
            };
            match self.tx.send(op) {
                Ok(()) => rx
                    .recv_timeout(self.common.config.snapshot_timeout)
                    .ok()
                    .flatten(),
                Err(_) => None,
            }
        };
        let mut sums = fresh.unwrap_or_else(|| *lock(&self.last));
        // Fixed windows: sums read in an earlier window say nothing of this
        // one but the calls still in flight.
        if fresh.is_none()
            && self.mode == WindowMode::Fixed
            && sums.at.is_some_and(|at| {
                self.spec.index_at(at, self.spec.window) < self.spec.index_at(now, self.spec.window)
            })
        {
            sums.tokens = self.reserved_tokens.load(Ordering::Relaxed);
            sums.requests = 0;
        }
        // In degraded mode, add what this process charged locally.
        let local = {
            let l = lock(&self.local);
            if l.used {
                let pre = l.pre.map_or(Charge::ZERO, |p| p.charge);
                Some((l.key.snapshot(now), pre))
            } else {
                None
            }
        };
        // What this process charged locally, without the priming charge.
        let (lt, lr, ld) = local.map_or((0, 0, 0), |(s, pre)| {
            (
                s.tokens.saturating_sub(pre.tokens),
                s.requests.saturating_sub(pre.requests),
                s.day_tokens.saturating_sub(pre.tokens),
            )
        });
        StoreSnapshot {
            tokens: sums.tokens + lt,
            requests: sums.requests + lr,
            day_tokens: sums.day + ld,
            reserved_tokens: self.reserved_tokens.load(Ordering::Relaxed),
            reserved_requests: self.reserved_requests.load(Ordering::Relaxed),
        }
    }

    /// The window spec this key was created with.
    pub(crate) fn spec(&self) -> &WindowSpec {
        &self.spec
    }
}

/// One key of a [`RedisStore`]: its windows are three Redis hashes (see the
/// crate docs). Clones share the same state.
#[derive(Clone)]
pub struct RedisKey {
    shared: Arc<KeyShared>,
}

impl std::fmt::Debug for RedisKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKey")
            .field("key", &self.shared.name)
            .finish()
    }
}

impl RedisKey {
    /// The budget key (model id) of this handle.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    fn reserve_inner(
        &self,
        tenant: Option<TenantTag<'_>>,
        limits: Limits,
        charge: Charge,
        now: Instant,
    ) -> ReserveFuture {
        let key = &self.shared;
        if key.worker.degraded.load(Ordering::Relaxed) {
            return ReserveFuture::ready(key.local_reserve(limits, charge, now));
        }
        let tenant = tenant.map(|t| TenantArgs {
            ring: key.tenant_ring(t.name),
            name: Box::from(t.name),
            weight: t.weight,
        });
        let ring = tenant.as_ref().map(|t| t.ring.clone());
        let pending = Arc::new(Pending::new(key.clone(), (limits, charge, now), ring));
        let op = Op::Reserve {
            key: key.clone(),
            limits,
            charge,
            now,
            now_us: key.common.now_us(now),
            tenant,
            reply: ReplyGuard(Some(pending.clone())),
        };
        if key.tx.send(op).is_err() {
            return ReserveFuture::ready(key.local_reserve(limits, charge, now));
        }
        let blocking = if key.common.blocking() {
            let wait = key.common.config.connect_timeout
                + key.common.config.response_timeout * 2
                + Duration::from_millis(100);
            let p = pending.clone();
            tokio::runtime::Handle::try_current()
                .ok()
                .map(|h| h.spawn_blocking(move || p.wait(wait)))
        } else {
            None
        };
        ReserveFuture {
            state: FutState::Waiting {
                pending,
                blocking,
                fallback: (limits, charge, now),
            },
        }
    }
}

impl StoreKey for RedisKey {
    type Reserve = ReserveFuture;

    /// One round trip: a Lua script checks and charges the three windows
    /// atomically. From the local share at once when degraded.
    fn reserve(&self, limits: Limits, charge: Charge, now: Instant) -> ReserveFuture {
        self.reserve_inner(None, limits, charge, now)
    }

    /// Like `reserve`, and the tenant's weighted share holds across every
    /// process sharing the key (see the [crate docs](crate#tenants-and-weights-across-processes)).
    fn reserve_for(
        &self,
        tenant: TenantTag<'_>,
        limits: Limits,
        charge: Charge,
        now: Instant,
    ) -> ReserveFuture {
        self.reserve_inner(Some(tenant), limits, charge, now)
    }

    /// Queued to the connection that owns this key, applied in order and
    /// exactly once (replayed after a reconnect if the reply was lost).
    fn settle(&self, reservation: Reservation, actual: Charge, now: Instant) {
        self.shared.settle(reservation, actual, now, None);
    }

    /// Like `settle`, adjusting the tenant's usage too.
    fn settle_for(
        &self,
        tenant: TenantTag<'_>,
        reservation: Reservation,
        actual: Charge,
        now: Instant,
    ) {
        let ring = self.shared.tenant_ring(tenant.name);
        self.shared.settle(reservation, actual, now, Some(ring));
    }

    /// A fresh read (one round trip, blocking the calling thread up to the
    /// snapshot timeout, ordered after this process's queued settlements),
    /// or the last known state when degraded, slow, or configured so
    /// ([`RedisStoreBuilder::fresh_snapshots`]). Reserved counts are this
    /// process's calls in flight.
    fn snapshot(&self, now: Instant) -> StoreSnapshot {
        self.shared
            .snapshot(now, self.shared.common.config.fresh_snapshots)
    }

    /// The last known state (plus this process's local charges when
    /// degraded): never a round trip, so the budget's gauges cost the
    /// request path nothing.
    fn gauge_snapshot(&self, now: Instant) -> StoreSnapshot {
        self.shared.snapshot(now, false)
    }
}

/// Where a worker delivers a reservation's outcome.
pub(crate) struct Pending {
    key: Arc<KeyShared>,
    /// The request, to answer from the local share if need be.
    request: (Limits, Charge, Instant),
    /// The tenant's token ring, to refund a reservation nobody awaits.
    tenant_ring: Option<Arc<str>>,
    state: Mutex<PendingState>,
    cond: Condvar,
}

#[derive(Default)]
struct PendingState {
    result: Option<Result<Reservation, Refusal>>,
    waker: Option<Waker>,
    cancelled: bool,
}

impl Pending {
    fn new(
        key: Arc<KeyShared>,
        request: (Limits, Charge, Instant),
        tenant_ring: Option<Arc<str>>,
    ) -> Self {
        Pending {
            key,
            request,
            tenant_ring,
            state: Mutex::new(PendingState::default()),
            cond: Condvar::new(),
        }
    }

    /// Delivers the outcome. A reservation whose future was dropped is
    /// refunded at once.
    pub(crate) fn complete(&self, result: Result<Reservation, Refusal>, now: Instant) {
        let mut s = lock(&self.state);
        if s.cancelled {
            drop(s);
            if let Ok(r) = result {
                self.key
                    .settle(r, Charge::ZERO, now, self.tenant_ring.clone());
            }
            return;
        }
        s.result = Some(result);
        let waker = s.waker.take();
        drop(s);
        self.cond.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Answers from the local share (the worker could not answer).
    pub(crate) fn complete_locally(&self) {
        let (limits, charge, at) = self.request;
        let r = self.key.local_reserve(limits, charge, at);
        self.complete(r, Instant::now());
    }

    /// Blocks until the outcome is there (blocking pool, client time).
    fn wait(&self, timeout: Duration) {
        let s = lock(&self.state);
        let _ = self
            .cond
            .wait_timeout_while(s, timeout, |s| s.result.is_none() && !s.cancelled);
    }

    fn take(&self, waker: Option<&Waker>) -> Option<Result<Reservation, Refusal>> {
        let mut s = lock(&self.state);
        let r = s.result.take();
        if r.is_none()
            && let Some(w) = waker
        {
            s.waker = Some(w.clone());
        }
        r
    }

    fn cancel(&self) {
        let mut s = lock(&self.state);
        s.cancelled = true;
        let result = s.result.take();
        drop(s);
        self.cond.notify_all();
        if let Some(Ok(r)) = result {
            self.key
                .settle(r, Charge::ZERO, Instant::now(), self.tenant_ring.clone());
        }
    }
}

/// The future of [`RedisKey::reserve`]: the reply of one round trip.
/// Dropping it before it completes leaves nothing charged (a reservation
/// that arrives for a dropped future is refunded).
pub struct ReserveFuture {
    state: FutState,
}

enum FutState {
    Ready(Option<Result<Reservation, Refusal>>),
    Waiting {
        pending: Arc<Pending>,
        blocking: Option<tokio::task::JoinHandle<()>>,
        fallback: (Limits, Charge, Instant),
    },
    Done,
}

impl std::fmt::Debug for ReserveFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReserveFuture").finish_non_exhaustive()
    }
}

impl ReserveFuture {
    fn ready(r: Result<Reservation, Refusal>) -> Self {
        ReserveFuture {
            state: FutState::Ready(Some(r)),
        }
    }
}

impl Future for ReserveFuture {
    type Output = Result<Reservation, Refusal>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match &mut this.state {
            FutState::Ready(r) => {
                let r = r.take().expect("ReserveFuture polled after completion");
                this.state = FutState::Done;
                Poll::Ready(r)
            }
            FutState::Waiting {
                pending,
                blocking,
                fallback,
            } => {
                if let Some(handle) = blocking {
                    // Client time: the blocking task waits for the reply
                    // (and keeps a paused clock from auto-advancing).
                    if Pin::new(handle).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let r = pending.take(None);
                    let out = match r {
                        Some(r) => r,
                        None => {
                            // No reply in time: give up on it (a late
                            // reservation is refunded) and serve locally.
                            pending.cancel();
                            let (l, c, n) = *fallback;
                            pending.key.local_reserve(l, c, n)
                        }
                    };
                    this.state = FutState::Done;
                    return Poll::Ready(out);
                }
                match pending.take(Some(cx.waker())) {
                    Some(r) => {
                        this.state = FutState::Done;
                        Poll::Ready(r)
                    }
                    None => Poll::Pending,
                }
            }
            FutState::Done => panic!("ReserveFuture polled after completion"),
        }
    }
}

impl Drop for ReserveFuture {
    fn drop(&mut self) {
        if let FutState::Waiting { pending, .. } = &self.state {
            pending.cancel();
        }
    }
}
