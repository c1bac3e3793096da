//! Where the per-key window accounting lives: the [`BudgetStore`] trait and
//! the default [`InMemoryStore`].
//!
//! A store only counts: it keeps, per key, what was charged in the token,
//! request and day windows and what is reserved by calls in flight. Waiting,
//! FIFO order, tenants and the adaptive limit live in [`Budget`](crate::Budget),
//! above the store (which is told each reservation's tenant, see
//! [`StoreKey::reserve_for`], and may use it to hold shares across
//! processes), so another store (Redis, shared by many processes) only
//! has to implement these few operations. The limits are passed with every
//! reservation (they may change: the adaptive limit), and the window
//! geometry when a key is first used.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::window::Ring;

/// The geometry of a budget's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Length of the token and request windows (60 s in production).
    pub window: Duration,
    /// Sub-windows per window: the granularity of the sliding window (see
    /// the [`window`](crate#the-sliding-window) algorithm).
    pub sub_windows: u32,
    /// Length of the daily window (1440 windows by default, so compressed
    /// time compresses the day too).
    pub day: Duration,
    /// Sub-windows of the daily window.
    pub day_sub_windows: u32,
}

impl WindowSpec {
    /// Length of one sub-window of the token and request windows.
    pub fn granularity(&self) -> Duration {
        self.window / self.sub_windows.max(1)
    }
}

impl Default for WindowSpec {
    fn default() -> Self {
        let window = Duration::from_secs(60);
        WindowSpec {
            window,
            sub_windows: 100,
            day: window * 1440,
            day_sub_windows: 24,
        }
    }
}

/// The limits one key is admitted against (already scaled by the adaptive
/// factor when the budget passes them to a store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tokens per window (TPM).
    pub tokens: u64,
    /// Requests per window (RPM), when limited.
    pub requests: Option<u64>,
    /// Tokens per day, when limited.
    pub day_tokens: Option<u64>,
}

impl Limits {
    /// Limits of `tokens` per window, with no request or day limit.
    pub const fn tokens(tokens: u64) -> Self {
        Limits {
            tokens,
            requests: None,
            day_tokens: None,
        }
    }

    /// Adds a request limit per window.
    #[must_use]
    pub const fn with_requests(mut self, requests: u64) -> Self {
        self.requests = Some(requests);
        self
    }

    /// Adds a token limit per day.
    #[must_use]
    pub const fn with_day_tokens(mut self, day_tokens: u64) -> Self {
        self.day_tokens = Some(day_tokens);
        self
    }
}

/// What one call is charged: quota tokens (output already multiplied by
/// the burndown rate) and requests (1 per call, 0 after a refund).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    /// Quota tokens.
    pub tokens: u64,
    /// Requests.
    pub requests: u64,
}

impl Charge {
    /// Nothing: what a fully refunded call is settled to.
    pub const ZERO: Charge = Charge {
        tokens: 0,
        requests: 0,
    };

    /// One request of `tokens` quota tokens.
    pub const fn call(tokens: u64) -> Self {
        Charge {
            tokens,
            requests: 1,
        }
    }
}

/// A reservation made by a store: what was charged and where (the slots
/// it was charged in), so that settlement adjusts the right sub-windows.
///
/// The slot numbers are the store's own (the in-memory store counts
/// sub-windows since its creation); other stores may use wall-clock slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// What was charged.
    pub charge: Charge,
    /// Sub-window of the token and request windows it was charged in.
    pub slot: u64,
    /// Sub-window of the daily window it was charged in.
    pub day_slot: u64,
}

/// Which window refused a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WindowKind {
    /// Tokens per window.
    Tokens,
    /// Requests per window.
    Requests,
    /// Tokens per day.
    Day,
}

impl WindowKind {
    /// Metric label (`tokens`, `requests`, `day`).
    pub const fn label(&self) -> &'static str {
        match self {
            WindowKind::Tokens => "tokens",
            WindowKind::Requests => "requests",
            WindowKind::Day => "day",
        }
    }
}

/// Why a store refused a reservation, and when room is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The window that is full (the one with the latest room, when several
    /// are).
    pub window: WindowKind,
    /// When enough of the window will have expired for this charge, if
    /// nothing else is charged meanwhile. `None` when the charge can never
    /// fit the limits given.
    pub room_at: Option<Instant>,
}

/// The tenant a reservation is made for: its name and weight. A store
/// shared by several processes uses it to hold the tenants' weighted shares
/// across processes (see [`StoreKey::reserve_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantTag<'a> {
    /// The tenant's name (the same in every process).
    pub name: &'a str,
    /// The tenant's weight (at least 1).
    pub weight: u32,
}

/// A point-in-time view of one key's windows in a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// Tokens charged in the current token window (reservations included).
    pub tokens: u64,
    /// Requests charged in the current request window.
    pub requests: u64,
    /// Tokens charged in the current daily window.
    pub day_tokens: u64,
    /// Tokens reserved by calls in flight (not settled yet).
    pub reserved_tokens: u64,
    /// Calls in flight (reserved, not settled yet).
    pub reserved_requests: u64,
}

/// A backend that keeps the budget's per-key windows.
///
/// Implementations must be safe to share (`Send + Sync`) and cheap to call;
/// [`key`](Self::key) is called once per key and budget, and the returned
/// handle is kept.
pub trait BudgetStore: Send + Sync + 'static {
    /// The handle of one key.
    type Key: StoreKey;

    /// The handle of `key`, whose windows have the geometry `spec`.
    fn key(&self, key: &str, spec: &WindowSpec) -> Self::Key;
}

/// One key's windows in a [`BudgetStore`].
///
/// The contract every store meets (the tests in
/// [`testing`](crate#testing-another-store) check it):
///
/// - `reserve` admits a charge iff every limited window has room for it
///   (never more than the limit in any window of the spec's length), charges
///   it, and counts it as reserved; otherwise it charges nothing and says
///   when room is expected;
/// - `settle` replaces a reservation by the actual charge (refunding or
///   charging the difference in the sub-window the reservation was made
///   in, or in the current one when that one has left the window) and
///   stops counting it as reserved. It is synchronous because it runs from
///   `Drop`; a remote store may queue the update;
/// - dropping a pending `reserve` future leaves nothing charged;
/// - polling a `reserve` future never blocks the thread: the budget polls
///   it once while holding the key's local lock.
pub trait StoreKey: Send + Sync + 'static {
    /// The future of a reservation. The in-memory store answers at once
    /// ([`Ready`]).
    type Reserve: Future<Output = Result<Reservation, Refusal>> + Send + Unpin + 'static;

    /// Tries to reserve `charge` against `limits` at `now`.
    fn reserve(&self, limits: Limits, charge: Charge, now: Instant) -> Self::Reserve;

    /// Settles a reservation to the `actual` charge.
    fn settle(&self, reservation: Reservation, actual: Charge, now: Instant);

    /// Like [`reserve`](Self::reserve), for `tenant`. The budget always
    /// calls this one. A store shared by many processes may also refuse a
    /// charge that fits the window but would take the tenant beyond its
    /// weighted share while other tenants contend for the key (so the
    /// shares hold across processes). The default ignores the tenant: the
    /// budget's own scheduler already divides what one process is admitted
    /// among its tenants.
    fn reserve_for(
        &self,
        tenant: TenantTag<'_>,
        limits: Limits,
        charge: Charge,
        now: Instant,
    ) -> Self::Reserve {
        let _ = tenant;
        self.reserve(limits, charge, now)
    }

    /// Like [`settle`](Self::settle), for a reservation made by
    /// [`reserve_for`](Self::reserve_for) with `tenant`, so that a store
    /// keeping per-tenant usage adjusts it too. The default is `settle`.
    fn settle_for(
        &self,
        tenant: TenantTag<'_>,
        reservation: Reservation,
        actual: Charge,
        now: Instant,
    ) {
        let _ = tenant;
        self.settle(reservation, actual, now);
    }

    /// The key's windows at `now` (a remote store may answer from its last
    /// known state).
    fn snapshot(&self, now: Instant) -> StoreSnapshot;

    /// The key's windows for the utilisation gauges, read on the request
    /// path (at most once per sub-window per key). It must not block: a
    /// remote store answers from its last known state. The default is
    /// [`snapshot`](Self::snapshot), right for stores that never block.
    fn gauge_snapshot(&self, now: Instant) -> StoreSnapshot {
        self.snapshot(now)
    }

    /// Bytes of this process's memory the key's windows take (0 for a
    /// store that keeps them elsewhere).
    fn memory_bytes(&self) -> usize {
        0
    }
}

/// The default store: the windows of each key in this process's memory.
///
/// Each key holds three rings of sub-window counters (see the crate docs'
/// algorithm section); admission is O(1) and memory per key is bounded by
/// the geometry (about 2 KiB of counters with the default 100 + 24 sub-windows),
/// whatever the traffic. Clones share the same windows.
#[derive(Debug, Clone)]
pub struct InMemoryStore {
    origin: Instant,
}

impl InMemoryStore {
    /// A new, empty store. Its sub-windows are counted from now.
    pub fn new() -> Self {
        InMemoryStore {
            origin: Instant::now(),
        }
    }
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl BudgetStore for InMemoryStore {
    type Key = InMemoryKey;

    fn key(&self, _key: &str, spec: &WindowSpec) -> InMemoryKey {
        InMemoryKey {
            origin: self.origin,
            windows: Arc::new(Mutex::new(Windows {
                tokens: Ring::new(spec.window, spec.sub_windows),
                requests: Ring::new(spec.window, spec.sub_windows),
                day: Ring::new(spec.day, spec.day_sub_windows),
                reserved: Charge::ZERO,
            })),
        }
    }
}

/// One key of an [`InMemoryStore`].
#[derive(Debug, Clone)]
pub struct InMemoryKey {
    origin: Instant,
    windows: Arc<Mutex<Windows>>,
}

#[derive(Debug)]
struct Windows {
    tokens: Ring,
    requests: Ring,
    day: Ring,
    reserved: Charge,
}

impl Windows {
    fn advance(&mut self, elapsed: Duration) -> (u64, u64) {
        let slot = self.tokens.slot_of(elapsed);
        let day_slot = self.day.slot_of(elapsed);
        self.tokens.advance(slot);
        self.requests.advance(slot);
        self.day.advance(day_slot);
        (self.tokens.head(), self.day.head())
    }
}

impl InMemoryKey {
    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }

    fn try_reserve(
        &self,
        limits: Limits,
        charge: Charge,
        now: Instant,
    ) -> Result<Reservation, Refusal> {
        let mut w = self.windows.lock();
        let (slot, day_slot) = w.advance(self.elapsed(now));
        // (window, ring, limit, amount) for each limited window.
        let checks = [
            (
                WindowKind::Tokens,
                &w.tokens,
                Some(limits.tokens),
                charge.tokens,
            ),
            (
                WindowKind::Requests,
                &w.requests,
                limits.requests,
                charge.requests,
            ),
            (WindowKind::Day, &w.day, limits.day_tokens, charge.tokens),
        ];
        let mut refusal: Option<Refusal> = None;
        for (kind, ring, limit, amount) in checks {
            let Some(limit) = limit else { continue };
            if ring.sum().saturating_add(amount) <= limit {
                continue;
            }
            let room_at = limit.checked_sub(amount).map(|target| {
                let at = ring.slot_with_room(target).unwrap_or(ring.head() + 1);
                self.origin + ring.slot_start(at)
            });
            let later = match (&refusal, room_at) {
                (None, _) => true,
                (Some(r), Some(at)) => r.room_at.is_some_and(|prev| at > prev),
                (Some(_), None) => true,
            };
            if later {
                refusal = Some(Refusal {
                    window: kind,
                    room_at,
                });
            }
        }
        if let Some(r) = refusal {
            return Err(r);
        }
        w.tokens.add(slot, charge.tokens);
        w.requests.add(slot, charge.requests);
        w.day.add(day_slot, charge.tokens);
        w.reserved.tokens = w.reserved.tokens.saturating_add(charge.tokens);
        w.reserved.requests = w.reserved.requests.saturating_add(charge.requests);
        Ok(Reservation {
            charge,
            slot,
            day_slot,
        })
    }
}

fn adjust(ring: &mut Ring, slot: u64, reserved: u64, actual: u64) {
    if actual < reserved {
        ring.sub(slot, reserved - actual);
    } else if actual > reserved {
        ring.add(slot, actual - reserved);
    }
}

impl StoreKey for InMemoryKey {
    type Reserve = Ready<Result<Reservation, Refusal>>;

    fn reserve(&self, limits: Limits, charge: Charge, now: Instant) -> Self::Reserve {
        ready(self.try_reserve(limits, charge, now))
    }

    fn settle(&self, reservation: Reservation, actual: Charge, now: Instant) {
        let mut w = self.windows.lock();
        w.advance(self.elapsed(now));
        let r = reservation.charge;
        adjust(&mut w.tokens, reservation.slot, r.tokens, actual.tokens);
        adjust(
            &mut w.requests,
            reservation.slot,
            r.requests,
            actual.requests,
        );
        adjust(&mut w.day, reservation.day_slot, r.tokens, actual.tokens);
        w.reserved.tokens = w.reserved.tokens.saturating_sub(r.tokens);
        w.reserved.requests = w.reserved.requests.saturating_sub(r.requests);
    }

    fn snapshot(&self, now: Instant) -> StoreSnapshot {
        let mut w = self.windows.lock();
        w.advance(self.elapsed(now));
        StoreSnapshot {
            tokens: w.tokens.sum(),
            requests: w.requests.sum(),
            day_tokens: w.day.sum(),
            reserved_tokens: w.reserved.tokens,
            reserved_requests: w.reserved.requests,
        }
    }

    /// The three rings' counters plus the mutex-protected block and the
    /// handle.
    fn memory_bytes(&self) -> usize {
        let w = self.windows.lock();
        std::mem::size_of::<Self>()
            + std::mem::size_of::<Mutex<Windows>>()
            + 2 * std::mem::size_of::<usize>() // Arc counts
            + w.tokens.heap_bytes()
            + w.requests.heap_bytes()
            + w.day.heap_bytes()
    }
}
