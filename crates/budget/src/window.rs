//! The sliding-window counter: a ring of sub-window buckets.
//!
//! The algorithm and its error bound are documented in the crate docs
//! ("The sliding window").

use std::time::Duration;

/// One window's ring of sub-window counters.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    slots: Box<[u64]>,
    /// Slot length in nanoseconds (>= 1).
    slot_nanos: u64,
    /// `K`: slots older than the newest that still count.
    span: u64,
    /// Absolute index of the newest slot.
    head: u64,
    sum: u64,
}

impl Ring {
    /// A ring for windows of `window`, cut into `sub_windows` slots.
    /// Callers validate `window / sub_windows >= 1 ns`.
    pub(crate) fn new(window: Duration, sub_windows: u32) -> Ring {
        let w = window_nanos(window);
        let slot_nanos = (w / u64::from(sub_windows.max(1))).max(1);
        let span = w.div_ceil(slot_nanos);
        let len = usize::try_from(span + 1).unwrap_or(usize::MAX);
        Ring {
            slots: vec![0; len].into_boxed_slice(),
            slot_nanos,
            span,
            head: 0,
            sum: 0,
        }
    }

    /// The slot of an instant `elapsed` after the origin.
    pub(crate) fn slot_of(&self, elapsed: Duration) -> u64 {
        window_nanos(elapsed) / self.slot_nanos
    }

    /// Offset from the origin at which `slot` starts.
    pub(crate) fn slot_start(&self, slot: u64) -> Duration {
        Duration::from_nanos(slot.saturating_mul(self.slot_nanos))
    }

    /// The slot length.
    #[cfg(test)]
    pub(crate) fn slot_len(&self) -> Duration {
        Duration::from_nanos(self.slot_nanos)
    }

    fn len(&self) -> u64 {
        self.span + 1
    }

    fn idx(&self, slot: u64) -> usize {
        // len fits in usize (it was allocated), so the remainder does too.
        (slot % self.len()) as usize
    }

    /// Moves the newest slot to `slot`, expiring what fell out. Never moves
    /// backwards.
    pub(crate) fn advance(&mut self, slot: u64) {
        if slot <= self.head {
            return;
        }
        let steps = slot - self.head;
        if steps >= self.len() {
            self.slots.fill(0);
            self.sum = 0;
        } else {
            for s in self.head + 1..=slot {
                let i = self.idx(s);
                self.sum -= self.slots[i];
                self.slots[i] = 0;
            }
        }
        self.head = slot;
    }

    /// Whether `slot` still counts.
    pub(crate) fn is_live(&self, slot: u64) -> bool {
        slot <= self.head && slot + self.span >= self.head
    }

    /// Charged in the window (after [`advance`](Self::advance)).
    pub(crate) fn sum(&self) -> u64 {
        self.sum
    }

    /// The newest slot.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// Adds to `slot` if it is live, else to the newest slot.
    pub(crate) fn add(&mut self, slot: u64, amount: u64) {
        let slot = if self.is_live(slot) { slot } else { self.head };
        let i = self.idx(slot);
        self.slots[i] = self.slots[i].saturating_add(amount);
        self.sum = self.sum.saturating_add(amount);
    }

    /// Removes up to `amount` from `slot` if it is still live.
    pub(crate) fn sub(&mut self, slot: u64, amount: u64) {
        if !self.is_live(slot) {
            return;
        }
        let i = self.idx(slot);
        let take = amount.min(self.slots[i]);
        self.slots[i] -= take;
        self.sum -= take;
    }

    /// The first slot (after the newest) at which the window's sum will be
    /// at most `target`, if nothing else is charged. `None` when it already
    /// is (no wait needed).
    pub(crate) fn slot_with_room(&self, target: u64) -> Option<u64> {
        if self.sum <= target {
            return None;
        }
        let mut remaining = self.sum;
        // Slot `x` stops counting when the newest slot is `x + K + 1`.
        for x in self.head.saturating_sub(self.span)..=self.head {
            remaining -= self.slots[self.idx(x)];
            if remaining <= target {
                return Some(x + self.span + 1);
            }
        }
        Some(self.head + self.span + 1)
    }

    /// Heap bytes used by this ring.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }
}

fn window_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_expires() {
        let mut r = Ring::new(Duration::from_secs(60), 60);
        assert_eq!(r.slot_len(), Duration::from_secs(1));
        r.advance(0);
        r.add(0, 10);
        r.advance(30);
        r.add(30, 5);
        assert_eq!(r.sum(), 15);
        // Slot 0 still counts at slot 60 (span K = 60 covers >= W).
        r.advance(60);
        assert_eq!(r.sum(), 15);
        r.advance(61);
        assert_eq!(r.sum(), 5);
        r.advance(1000);
        assert_eq!(r.sum(), 0);
    }

    #[test]
    fn room_is_found_at_the_right_slot() {
        let mut r = Ring::new(Duration::from_secs(10), 10);
        r.add(0, 4);
        r.advance(3);
        r.add(3, 4);
        assert_eq!(r.slot_with_room(8), None);
        // Slot 0 leaves at slot 11, slot 3 at 14.
        assert_eq!(r.slot_with_room(4), Some(11));
        assert_eq!(r.slot_with_room(0), Some(14));
        r.sub(0, 100);
        assert_eq!(r.sum(), 4);
        r.advance(20);
        r.sub(3, 1);
        r.add(3, 2); // expired slot: goes to the newest
        assert_eq!(r.sum(), 2);
    }

    #[test]
    fn uneven_division_still_covers_the_window() {
        let r = Ring::new(Duration::from_nanos(1000), 3);
        assert_eq!(r.slot_len(), Duration::from_nanos(333));
        assert!(r.span * r.slot_nanos >= 1000);
    }
}
