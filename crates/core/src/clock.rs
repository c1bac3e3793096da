use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// How often the system clock re-reads the wall clock: about once a quota
/// window.
pub(crate) const REANCHOR_EVERY: Duration = Duration::from_secs(60);

/// The process-wide anchor of [`Clock::system`]: a wall-clock reading and
/// the tokio instant it was taken at.
static SYSTEM_ANCHOR: RwLock<Option<(Duration, Instant)>> = RwLock::new(None);

/// Wall-clock time derived from tokio's monotonic clock.
///
/// Bedrock's per-minute quotas refresh on wall-clock windows, so a retry is
/// best placed a few seconds after the next window opens. Reading
/// [`SystemTime::now`] directly would make that untestable; a `Clock`
/// instead anchors a wall-clock reading to a [`tokio::time::Instant`] once,
/// and afterwards computes wall time as `anchor + elapsed`. Under
/// `tokio::time::pause()` the elapsed part follows the paused clock, so a
/// test can start the clock at a chosen instant ([`Clock::starting_at`]) and
/// step through minute boundaries deterministically.
///
/// [`Clock::system`] re-reads the wall clock about once a window
/// (every 60 s), so that an NTP step or a VM resume (which moves
/// the wall clock but not the monotonic one) shifts the window alignment
/// for a minute at most, not for the life of the process. The anchor is
/// shared by every system clock of the process. A clock made by
/// [`Clock::starting_at`] is never re-anchored: it is for tests.
///
/// `Clock` is `Copy`; copies share the same anchor.
///
/// ```
/// use std::time::Duration;
/// use tower_bedrock_core::Clock;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // 45 s into a minute.
/// let clock = Clock::starting_at(Duration::from_secs(1_700_000_000 - 1_700_000_000 % 60 + 45));
/// assert_eq!(clock.until_next_window(Duration::from_secs(60)), Duration::from_secs(15));
/// tokio::time::advance(Duration::from_secs(20)).await;
/// assert_eq!(clock.until_next_window(Duration::from_secs(60)), Duration::from_secs(55));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The system's wall clock, through the process-wide anchor.
    System,
    /// A fixed anchor.
    Fixed {
        /// Wall time at the anchor, as a duration since the UNIX epoch.
        wall_anchor: Duration,
        /// Tokio instant at the anchor.
        mono_anchor: Instant,
    },
}

/// The system anchor, re-read when older (or newer, after a jump of the
/// tokio clock) than [`REANCHOR_EVERY`]. Reads share the anchor; the wall
/// clock and the tokio clock are read back to back when re-anchoring.
fn system_anchor() -> (Duration, Instant) {
    let fresh = |anchor: &Option<(Duration, Instant)>| {
        let now = Instant::now();
        anchor.filter(|(_, mono)| {
            now.saturating_duration_since(*mono) < REANCHOR_EVERY
                && mono.saturating_duration_since(now) < REANCHOR_EVERY
        })
    };
    if let Some(anchor) = fresh(&SYSTEM_ANCHOR.read().unwrap_or_else(|p| p.into_inner())) {
        return anchor;
    }
    let mut anchor = SYSTEM_ANCHOR.write().unwrap_or_else(|p| p.into_inner());
    if let Some(current) = fresh(&anchor) {
        return current;
    }
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let mono = Instant::now();
    *anchor = Some((wall, mono));
    (wall, mono)
}

impl Clock {
    /// A clock anchored to the system's wall time now.
    ///
    /// Must be called where tokio's time is available (inside a runtime, or
    /// anywhere outside tests: `Instant::now` falls back to the OS clock).
    pub fn system() -> Self {
        Clock { kind: Kind::System }
    }

    /// A clock whose wall time is `since_epoch` (since the UNIX epoch) now.
    /// Meant for tests and simulations.
    pub fn starting_at(since_epoch: Duration) -> Self {
        Clock {
            kind: Kind::Fixed {
                wall_anchor: since_epoch,
                mono_anchor: Instant::now(),
            },
        }
    }

    /// The current tokio instant.
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// The current wall time as a duration since the UNIX epoch.
    pub fn since_epoch(&self) -> Duration {
        self.wall_at(Instant::now())
    }

    /// The wall time (since the UNIX epoch) at a given tokio instant.
    pub fn wall_at(&self, at: Instant) -> Duration {
        let (wall_anchor, mono_anchor) = match self.kind {
            Kind::System => system_anchor(),
            Kind::Fixed {
                wall_anchor,
                mono_anchor,
            } => (wall_anchor, mono_anchor),
        };
        if at >= mono_anchor {
            wall_anchor.saturating_add(at - mono_anchor)
        } else {
            wall_anchor.saturating_sub(mono_anchor - at)
        }
    }

    /// The current wall time as a [`SystemTime`].
    pub fn wall(&self) -> SystemTime {
        UNIX_EPOCH + self.since_epoch()
    }

    /// How far into its current window the wall clock is, for windows of
    /// length `window` aligned on the UNIX epoch (so 60 s windows start on
    /// the minute). A zero `window` gives zero.
    pub fn window_phase(&self, window: Duration) -> Duration {
        phase(self.since_epoch(), window)
    }

    /// Time until the next window of length `window` opens. Always in
    /// `(0, window]`; a zero `window` gives zero.
    pub fn until_next_window(&self, window: Duration) -> Duration {
        if window.is_zero() {
            return Duration::ZERO;
        }
        window - self.window_phase(window)
    }

    /// The tokio instant at which the next window opens.
    pub fn next_window_start(&self, window: Duration) -> Instant {
        Instant::now() + self.until_next_window(window)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

fn phase(t: Duration, window: Duration) -> Duration {
    let w = window.as_nanos();
    if w == 0 {
        return Duration::ZERO;
    }
    let rem = t.as_nanos() % w;
    // rem < w <= u64::MAX nanos for any realistic window; saturate otherwise.
    Duration::from_nanos(u64::try_from(rem).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time_across_a_minute_boundary() {
        let minute = Duration::from_secs(60);
        let clock = Clock::starting_at(Duration::from_secs(600 + 58));
        assert_eq!(clock.window_phase(minute), Duration::from_secs(58));
        assert_eq!(clock.until_next_window(minute), Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.since_epoch(), Duration::from_secs(661));
        assert_eq!(clock.window_phase(minute), Duration::from_secs(1));
        assert_eq!(clock.until_next_window(minute), Duration::from_secs(59));
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_on_a_boundary_waits_a_whole_window() {
        let clock = Clock::starting_at(Duration::from_secs(120));
        assert_eq!(
            clock.until_next_window(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(clock.until_next_window(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_is_re_anchored_about_once_a_window() {
        // Paused tokio time runs away from the wall clock, as the wall
        // clock runs away from the monotonic one after an NTP step or a VM
        // resume. Before, the anchor was read once and the clock stayed an
        // hour off here.
        let clock = Clock::system();
        let first = clock.since_epoch();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let read = clock.since_epoch();
        let off = read.abs_diff(wall);
        assert!(off < REANCHOR_EVERY, "{off:?} off the wall clock");
        assert!(read >= first);
        // Within a window, the clock follows the tokio clock.
        let before = clock.since_epoch();
        tokio::time::advance(Duration::from_secs(1)).await;
        let after = clock.since_epoch();
        assert!(after >= before && after - before <= Duration::from_secs(2));
        assert_eq!(Clock::system(), clock);
    }

    #[tokio::test(start_paused = true)]
    async fn copies_share_the_anchor() {
        let a = Clock::starting_at(Duration::from_secs(5));
        let b = a;
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(a.since_epoch(), b.since_epoch());
        assert_eq!(a.since_epoch(), Duration::from_millis(5250));
        let earlier = a.wall_at(a.now() - Duration::from_secs(1));
        assert_eq!(earlier, Duration::from_millis(4250));
    }
}
