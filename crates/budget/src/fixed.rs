//! The fixed window: Bedrock's way of counting a quota.
//!
//! One counter per window length, aligned on the wall clock: the window
//! `[k W, (k + 1) W)` since the UNIX epoch. When time enters a new window,
//! the settled usage and the request count start again from zero; the
//! reservations of calls in flight are kept apart (see
//! [`InMemoryStore`](crate::InMemoryStore)) and count in every window until
//! they settle.

/// One fixed window's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fixed {
    /// The window's index (wall time / window length).
    pub(crate) index: u64,
    /// Usage settled in this window.
    pub(crate) settled: u64,
    /// Requests admitted in this window.
    pub(crate) requests: u64,
}

impl Fixed {
    /// Moves to window `index` (never backwards), starting it empty.
    pub(crate) fn advance(&mut self, index: u64) {
        if index > self.index {
            *self = Fixed {
                index,
                settled: 0,
                requests: 0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_window_starts_empty_and_time_never_goes_back() {
        let mut f = Fixed::default();
        f.advance(5);
        f.settled = 10;
        f.requests = 2;
        f.advance(5);
        assert_eq!((f.settled, f.requests), (10, 2));
        f.advance(4);
        assert_eq!((f.index, f.settled), (5, 10));
        f.advance(6);
        assert_eq!((f.index, f.settled, f.requests), (6, 0, 0));
    }
}
