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

use std::time::Duration;

use tokio::time::Instant;
use tower_bedrock_core::Clock;

pub use crate::memory::{InMemoryKey, InMemoryStore};

/// How a store counts a window: the way Bedrock's quota does (fixed
/// windows on the wall clock, the default) or as a sliding window.
///
/// See the crate docs ([Windows](crate#windows-fixed-or-sliding)) for the
/// rules and the evidence behind each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WindowMode {
    /// Windows aligned on the wall clock (`[k W, (k + 1) W)` since the UNIX
    /// epoch: minutes for `W = 60 s`). A charge is admitted when the usage
    /// settled in the current window, plus the reservations of every call
    /// in flight, plus the charge fit the limit; a settled call's real usage
    /// is billed to the window in which it completes, and the window starts
    /// empty (except for the calls still in flight). Requests count in the
    /// window they were admitted in. The model of Bedrock's quota that the
    /// workspace's emulator implements.
    #[default]
    Fixed,
    /// A sliding window: the charges of the last `W` (to one sub-window),
    /// reservations included, charged in the sub-window of their admission
    /// and adjusted there at settlement. Never admits more than the limit in
    /// *any* interval of length `W`.
    Sliding,
}

/// The geometry of a budget's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Length of the token and request windows (60 s in production).
    pub window: Duration,
    /// Sub-windows per window: the granularity of the sliding window (see
    /// the [`window`](crate#the-sliding-window) algorithm). Unused by fixed
    /// windows, except to pace the gauges' refresh.
    pub sub_windows: u32,
    /// Length of the daily window (1440 windows by default, so compressed
    /// time compresses the day too).
    pub day: Duration,
    /// Sub-windows of the daily window (sliding mode).
    pub day_sub_windows: u32,
    /// Fixed (Bedrock-aligned, the default) or sliding windows.
    pub mode: WindowMode,
    /// The wall clock the windows are aligned on (sub-windows and fixed
    /// windows are numbered from the UNIX epoch, so processes agree). It
    /// follows tokio's paused time: tests anchor it with
    /// [`Clock::starting_at`].
    pub clock: Clock,
}

impl WindowSpec {
    /// Length of one sub-window of the token and request windows.
    pub fn granularity(&self) -> Duration {
        self.window / self.sub_windows.max(1)
    }

    /// Wall time (since the UNIX epoch) at `now`.
    pub fn wall(&self, now: Instant) -> Duration {
        self.clock.wall_at(now)
    }

    /// Index of the fixed window (of length `len`) holding `now`.
    pub fn index_at(&self, now: Instant, len: Duration) -> u64 {
        let n = len.as_nanos().max(1);
        u64::try_from(self.wall(now).as_nanos() / n).unwrap_or(u64::MAX)
    }

    /// The instant at which window `index` (of length `len`) starts, seen
    /// from `now`.
    pub fn start_of(&self, index: u64, len: Duration, now: Instant) -> Instant {
        let nanos = u128::from(index) * len.as_nanos();
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
        // The remainder is below 10^9.
        let sub = (nanos % 1_000_000_000) as u32;
        self.instant_at(Duration::new(secs, sub), now)
    }

    /// The instant at which the wall clock reads `wall` (since the UNIX
    /// epoch), seen from `now` (`now` itself for times too far back).
    pub fn instant_at(&self, wall: Duration, now: Instant) -> Instant {
        let here = self.wall(now);
        if wall >= here {
            now.checked_add(wall - here).unwrap_or(now)
        } else {
            now.checked_sub(here - wall).unwrap_or(now)
        }
    }

    /// When the token window after the one holding `now` starts.
    pub fn next_window_start(&self, now: Instant) -> Instant {
        let i = self.index_at(now, self.window);
        self.start_of(i.saturating_add(1), self.window, now)
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
            mode: WindowMode::Fixed,
            clock: Clock::system(),
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
/// The slot numbers are the store's own (the in-memory store numbers
/// sub-windows, or fixed windows, since the UNIX epoch on the spec's
/// clock).
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
    /// The tenant's weighted share of the token window, while other
    /// tenants contend for it (a store that holds shares across processes).
    Share,
}

impl WindowKind {
    /// Metric label (`tokens`, `requests`, `day`).
    pub const fn label(&self) -> &'static str {
        match self {
            WindowKind::Tokens => "tokens",
            WindowKind::Requests => "requests",
            WindowKind::Day => "day",
            WindowKind::Share => "share",
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
    /// nothing else is charged meanwhile. With fixed windows: the next
    /// window, or, when only the reservations of calls in flight hold the
    /// room, a twentieth of a window ahead (their settlements free it; a
    /// store shared by processes hears of the others' only by looking
    /// again). `None` when the charge can never fit the limits given.
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
    /// ([`Ready`](std::future::Ready)).
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
