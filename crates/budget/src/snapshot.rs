//! Introspection: point-in-time views of a key and its tenants.

use tokio::time::Instant;

use crate::store::Limits;
use crate::tenant::Priority;

/// A point-in-time view of one budget key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeySnapshot {
    /// The key (model id by default).
    pub key: String,
    /// The configured limits (minus the slack).
    pub limits: Limits,
    /// The effective limits now (lowered by throttles, see [`Adaptive`](crate::Adaptive)).
    pub effective: Limits,
    /// Tokens charged in the current window: settled usage plus
    /// reservations.
    pub tokens: u64,
    /// Tokens reserved by calls in flight.
    pub reserved_tokens: u64,
    /// Calls in flight.
    pub reserved_requests: u64,
    /// Requests charged in the current window.
    pub requests: u64,
    /// Tokens charged in the current day.
    pub day_tokens: u64,
    /// `tokens / effective.tokens`.
    pub utilization: f64,
    /// Requests waiting for room.
    pub waiting: usize,
    /// When a rate throttle came back in the current window, its end: the
    /// budget admits nothing more in it ([`Adaptive`](crate::Adaptive)).
    pub full_until: Option<Instant>,
    /// Per tenant that used this key.
    pub tenants: Vec<TenantSnapshot>,
}

impl KeySnapshot {
    /// Tokens used by settled calls in the current window (charged minus
    /// reserved).
    pub fn used_tokens(&self) -> u64 {
        self.tokens.saturating_sub(self.reserved_tokens)
    }
}

/// One tenant's activity on one key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TenantSnapshot {
    /// The tenant.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Its priority class.
    pub priority: Priority,
    /// Requests admitted since the key was first used.
    pub admitted_requests: u64,
    /// Tokens reserved at admission since the key was first used.
    pub admitted_tokens: u64,
    /// Requests that had to wait.
    pub waits: u64,
    /// Requests shed.
    pub sheds: u64,
    /// Requests waiting now.
    pub waiting: usize,
    /// Its share of the key's recent admissions (exponentially decayed over
    /// one window; by requests or tokens, whichever is the scarcer
    /// resource), in `[0, 1]`.
    pub recent_share: f64,
}
