//! The default store: each key's windows in this process's memory.

use std::future::{Ready, ready};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::fixed::Fixed;
use crate::store::{
    BudgetStore, Charge, Limits, Refusal, Reservation, StoreKey, StoreSnapshot, WindowKind,
    WindowMode, WindowSpec,
};
use crate::window::Ring;

/// The default store: the windows of each key in this process's memory.
///
/// With fixed windows (the default) a key holds two window counters (the
/// token and request window, the day) and the reservations in flight;
/// with sliding windows, three rings of sub-window counters (see the crate
/// docs' algorithm section). Admission is O(1) and memory per key is
/// bounded by the geometry (about 2 KiB of counters for sliding windows
/// with the default 100 + 24 sub-windows, a few dozen bytes for fixed
/// ones), whatever the traffic. Clones share the same windows.
#[derive(Debug, Clone, Default)]
pub struct InMemoryStore {
    _private: (),
}

impl InMemoryStore {
    /// A new, empty store. Its windows are aligned on the clock of the
    /// budget's [`WindowSpec`].
    pub fn new() -> Self {
        InMemoryStore { _private: () }
    }
}

impl BudgetStore for InMemoryStore {
    type Key = InMemoryKey;

    fn key(&self, _key: &str, spec: &WindowSpec) -> InMemoryKey {
        let counters = match spec.mode {
            WindowMode::Sliding => Counters::Sliding {
                tokens: Ring::new(spec.window, spec.sub_windows),
                requests: Ring::new(spec.window, spec.sub_windows),
                day: Ring::new(spec.day, spec.day_sub_windows),
            },
            WindowMode::Fixed => Counters::Fixed {
                window: Fixed::default(),
                day: Fixed::default(),
            },
        };
        InMemoryKey {
            spec: *spec,
            windows: Arc::new(Mutex::new(Windows {
                counters,
                reserved: Charge::ZERO,
            })),
        }
    }
}

/// One key of an [`InMemoryStore`].
#[derive(Debug, Clone)]
pub struct InMemoryKey {
    spec: WindowSpec,
    windows: Arc<Mutex<Windows>>,
}

#[derive(Debug)]
enum Counters {
    Sliding {
        tokens: Ring,
        requests: Ring,
        day: Ring,
    },
    Fixed {
        window: Fixed,
        day: Fixed,
    },
}

#[derive(Debug)]
struct Windows {
    counters: Counters,
    /// Charged by calls in flight (reserved, not settled yet).
    reserved: Charge,
}

impl Windows {
    /// Moves every window to `now`; returns the current slots (sub-window
    /// or fixed-window indices).
    fn advance(&mut self, spec: &WindowSpec, now: Instant) -> (u64, u64) {
        match &mut self.counters {
            Counters::Sliding {
                tokens,
                requests,
                day,
            } => {
                let wall = spec.wall(now);
                let slot = tokens.slot_of(wall);
                let day_slot = day.slot_of(wall);
                tokens.advance(slot);
                requests.advance(slot);
                day.advance(day_slot);
                (tokens.head(), day.head())
            }
            Counters::Fixed { window, day } => {
                window.advance(spec.index_at(now, spec.window));
                day.advance(spec.index_at(now, spec.day));
                (window.index, day.index)
            }
        }
    }
}

/// Of two refusals, the one with the latest room (never beats "no room").
fn later(current: Option<Refusal>, kind: WindowKind, room_at: Option<Instant>) -> Refusal {
    let replace = match (&current, room_at) {
        (None, _) => true,
        (Some(r), Some(at)) => r.room_at.is_some_and(|prev| at > prev),
        (Some(_), None) => true,
    };
    match current {
        Some(r) if !replace => r,
        _ => Refusal {
            window: kind,
            room_at,
        },
    }
}

impl InMemoryKey {
    fn try_reserve(
        &self,
        limits: Limits,
        charge: Charge,
        now: Instant,
    ) -> Result<Reservation, Refusal> {
        let spec = &self.spec;
        let mut guard = self.windows.lock();
        let w = &mut *guard;
        let (slot, day_slot) = w.advance(spec, now);
        let reserved = w.reserved;
        let mut refusal: Option<Refusal> = None;
        match &mut w.counters {
            Counters::Sliding {
                tokens,
                requests,
                day,
            } => {
                // (window, ring, limit, amount) for each limited window.
                let checks = [
                    (
                        WindowKind::Tokens,
                        &*tokens,
                        Some(limits.tokens),
                        charge.tokens,
                    ),
                    (
                        WindowKind::Requests,
                        &*requests,
                        limits.requests,
                        charge.requests,
                    ),
                    (WindowKind::Day, &*day, limits.day_tokens, charge.tokens),
                ];
                for (kind, ring, limit, amount) in checks {
                    let Some(limit) = limit else { continue };
                    if ring.sum().saturating_add(amount) <= limit {
                        continue;
                    }
                    let room_at = limit.checked_sub(amount).map(|target| {
                        let at = ring.slot_with_room(target).unwrap_or(ring.head() + 1);
                        spec.instant_at(ring.slot_start(at), now)
                    });
                    refusal = Some(later(refusal, kind, room_at));
                }
                if let Some(r) = refusal {
                    return Err(r);
                }
                tokens.add(slot, charge.tokens);
                requests.add(slot, charge.requests);
                day.add(day_slot, charge.tokens);
            }
            Counters::Fixed { window, day } => {
                let next = spec.start_of(window.index.saturating_add(1), spec.window, now);
                let next_day = spec.start_of(day.index.saturating_add(1), spec.day, now);
                // When only the calls in flight hold the room, it comes when
                // they settle: look again after a twentieth of the window
                // (a store shared by processes is not told of the others'
                // settlements; here a settlement also wakes the waiter).
                let token_room = if window.settled.saturating_add(charge.tokens) <= limits.tokens {
                    next.min(now + poll_after(spec))
                } else {
                    next
                };
                // (window, used, limit, amount, when the window turns over).
                let checks = [
                    (
                        WindowKind::Tokens,
                        window.settled.saturating_add(reserved.tokens),
                        Some(limits.tokens),
                        charge.tokens,
                        token_room,
                    ),
                    (
                        WindowKind::Requests,
                        window.requests,
                        limits.requests,
                        charge.requests,
                        next,
                    ),
                    (
                        WindowKind::Day,
                        day.settled.saturating_add(reserved.tokens),
                        limits.day_tokens,
                        charge.tokens,
                        next_day,
                    ),
                ];
                for (kind, used, limit, amount, turn) in checks {
                    let Some(limit) = limit else { continue };
                    if used.saturating_add(amount) <= limit {
                        continue;
                    }
                    // The settled part leaves at the turn of the window;
                    // reservations leave when their calls settle (which
                    // wakes the budget's waiters before then).
                    let room_at = (amount <= limit).then_some(turn);
                    refusal = Some(later(refusal, kind, room_at));
                }
                if let Some(r) = refusal {
                    return Err(r);
                }
                window.requests = window.requests.saturating_add(charge.requests);
            }
        }
        w.reserved.tokens = w.reserved.tokens.saturating_add(charge.tokens);
        w.reserved.requests = w.reserved.requests.saturating_add(charge.requests);
        Ok(Reservation {
            charge,
            slot,
            day_slot,
        })
    }
}

/// A twentieth of the window, in whole microseconds (at least one), as the
/// Redis store computes it.
pub(crate) fn poll_after(spec: &WindowSpec) -> std::time::Duration {
    let us = u64::try_from(spec.window.as_micros()).unwrap_or(u64::MAX);
    std::time::Duration::from_micros((us / 20).max(1))
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
        let mut guard = self.windows.lock();
        let w = &mut *guard;
        w.advance(&self.spec, now);
        let r = reservation.charge;
        match &mut w.counters {
            Counters::Sliding {
                tokens,
                requests,
                day,
            } => {
                adjust(tokens, reservation.slot, r.tokens, actual.tokens);
                adjust(requests, reservation.slot, r.requests, actual.requests);
                adjust(day, reservation.day_slot, r.tokens, actual.tokens);
            }
            Counters::Fixed { window, day } => {
                // The real usage is billed to the window the call completes
                // in; the request stays in the window it was admitted in.
                window.settled = window.settled.saturating_add(actual.tokens);
                day.settled = day.settled.saturating_add(actual.tokens);
                if reservation.slot == window.index {
                    window.requests = window
                        .requests
                        .saturating_sub(r.requests)
                        .saturating_add(actual.requests);
                } else if actual.requests > r.requests {
                    window.requests = window.requests.saturating_add(actual.requests - r.requests);
                }
            }
        }
        w.reserved.tokens = w.reserved.tokens.saturating_sub(r.tokens);
        w.reserved.requests = w.reserved.requests.saturating_sub(r.requests);
    }

    fn snapshot(&self, now: Instant) -> StoreSnapshot {
        let mut guard = self.windows.lock();
        let w = &mut *guard;
        w.advance(&self.spec, now);
        let reserved = w.reserved;
        let (tokens, requests, day_tokens) = match &w.counters {
            Counters::Sliding {
                tokens,
                requests,
                day,
            } => (tokens.sum(), requests.sum(), day.sum()),
            Counters::Fixed { window, day } => (
                window.settled.saturating_add(reserved.tokens),
                window.requests,
                day.settled.saturating_add(reserved.tokens),
            ),
        };
        StoreSnapshot {
            tokens,
            requests,
            day_tokens,
            reserved_tokens: reserved.tokens,
            reserved_requests: reserved.requests,
        }
    }

    /// The counters plus the mutex-protected block and the handle.
    fn memory_bytes(&self) -> usize {
        let w = self.windows.lock();
        let rings = match &w.counters {
            Counters::Sliding {
                tokens,
                requests,
                day,
            } => tokens.heap_bytes() + requests.heap_bytes() + day.heap_bytes(),
            Counters::Fixed { .. } => 0,
        };
        std::mem::size_of::<Self>()
            + std::mem::size_of::<Mutex<Windows>>()
            + 2 * std::mem::size_of::<usize>() // Arc counts
            + rings
    }
}
