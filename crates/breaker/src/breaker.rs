//! One breaker: the state machine behind one key.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tower_bedrock_core::sent::SentAt;
use tower_bedrock_core::{
    Classification, ErrorClass, ThrottleKind, UnavailableKind, labels, names,
};

use crate::config::{Config, Outcome};
use crate::window::Window;

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls pass and are counted.
    Closed,
    /// A fixed number of probes pass; the others are rejected.
    HalfOpen,
    /// Calls are rejected until the open time is over.
    Open,
}

impl CircuitState {
    /// Stable metric label: `closed`, `half_open`, `open`.
    pub const fn label(&self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Open => "open",
        }
    }

    /// The value of the `bedrock_circuit_state` gauge: 0 closed, 1
    /// half-open, 2 open.
    pub const fn gauge_value(&self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }

    const fn code(self) -> u64 {
        match self {
            CircuitState::Closed => CLOSED,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

const CLOSED: u64 = 0;
const STATE_BITS: u64 = 0b11;

/// What an operator sees of one breaker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The breaker's key (the model id by default).
    pub key: String,
    /// Its state. An open breaker whose open time is over stays `Open`
    /// here until the next call moves it to half-open.
    pub state: CircuitState,
    /// Forced open by an operator: stays open until closed or reset.
    pub forced_open: bool,
    /// Counted calls in the window.
    pub calls: u32,
    /// Failures in the window.
    pub failures: u32,
    /// Slow calls in the window.
    pub slow_calls: u32,
    /// Failures in a row (closed state).
    pub consecutive_failures: u32,
    /// Trips in a row since the breaker was last closed from half-open:
    /// what the open duration grows with.
    pub trips: u32,
    /// When open: the time left until calls may probe again (`None` when
    /// forced open).
    pub retry_after: Option<Duration>,
    /// When half-open: probe slots taken (in flight or finished).
    pub probes_taken: u32,
    /// When half-open: probes that succeeded.
    pub probe_successes: u32,
    /// When half-open: probes that failed.
    pub probe_failures: u32,
    /// Time since the breaker was last used.
    pub idle: Duration,
}

/// What every breaker of a layer shares: the settings and the jitter's
/// generator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    rng: Mutex<fastrand::Rng>,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let rng = match config.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Shared {
            config,
            rng: Mutex::new(rng),
        }
    }

    /// The open duration after `trips` trips in a row: base x
    /// multiplier^(trips - 1), capped, then shortened by the jitter.
    pub(crate) fn open_duration(&self, trips: u32) -> Duration {
        let c = &self.config;
        let exp = i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = c.open_base.as_secs_f64() * c.open_multiplier.powi(exp);
        let capped = if grown.is_finite() && grown < c.open_max.as_secs_f64() {
            Duration::from_secs_f64(grown)
        } else {
            c.open_max
        };
        if c.open_jitter > 0.0 {
            let r = self.rng.lock().f64();
            capped.mul_f64(1.0 - c.open_jitter * r)
        } else {
            capped
        }
    }
}

/// The mutable part of a breaker, behind a short lock that is never held
/// across an await.
#[derive(Debug)]
struct Inner {
    state: CircuitState,
    epoch: u64,
    held: bool,
    open_until: Instant,
    trips: u32,
    window: Window,
    consecutive: u32,
    probes_taken: u32,
    probe_ok: u32,
    probe_failed: u32,
    last_used: Instant,
}

/// One breaker.
///
/// `word` mirrors `(epoch << 2) | state` so that the closed-state admission
/// is a single atomic load; every transition happens under the lock and
/// bumps the epoch, so an outcome of a call admitted before a transition is
/// recognised as stale and dropped.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Breaker {
    pub(crate) key: Arc<str>,
    /// The `model` label of its metrics: the key, or `other` once the
    /// process has seen too many distinct model ids (see
    /// `tower_bedrock_core::labels`).
    pub(crate) label: Arc<str>,
    word: AtomicU64,
    /// Set once the registry has dropped this breaker: services that cached
    /// it must look the key up again.
    evicted: AtomicBool,
    shared: Arc<Shared>,
    /// On a cache line of its own: the lock is written by every call that
    /// ends, the fields above are read by every call that starts.
    inner: CacheLine<Mutex<Inner>>,
}

/// Aligns its content to a cache line, so that writes to it do not slow
/// down readers of neighbouring data (and `Breaker`, aligned too, keeps
/// the `Arc` counts on a line of their own).
#[derive(Debug)]
#[repr(align(64))]
struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// `at + d`, or about 30 years after `at` if that overflows: an absurd
/// configured duration must not panic.
fn saturating_add(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(86_400 * 365 * 30)))
        .unwrap_or(at)
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    /// Time until a probe may pass, when known.
    pub(crate) retry_after: Option<Duration>,
}

impl Breaker {
    pub(crate) fn new(key: Arc<str>, shared: Arc<Shared>, now: Instant) -> Self {
        let window = Window::new(shared.config.window, now);
        let label = labels::model_label(&key);
        metrics::gauge!(names::CIRCUIT_STATE, "model" => label.clone())
            .set(CircuitState::Closed.gauge_value());
        Breaker {
            key,
            label,
            word: AtomicU64::new(CLOSED),
            evicted: AtomicBool::new(false),
            shared,
            inner: CacheLine(Mutex::new(Inner {
                state: CircuitState::Closed,
                epoch: 0,
                held: false,
                open_until: now,
                trips: 0,
                window,
                consecutive: 0,
                probes_taken: 0,
                probe_ok: 0,
                probe_failed: 0,
                last_used: now,
            })),
        }
    }

    /// Whether the registry has dropped this breaker.
    #[inline]
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Called by the registry when it drops this breaker: the next call for
    /// the key starts from a fresh, closed breaker, and the gauge says so.
    pub(crate) fn mark_evicted(&self) {
        self.evicted.store(true, Ordering::Release);
        metrics::gauge!(names::CIRCUIT_STATE, "model" => self.label.clone())
            .set(CircuitState::Closed.gauge_value());
    }

    /// Admits a call or refuses it. Closed: one atomic load, no lock.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Result<Permit, Refusal> {
        let word = self.word.load(Ordering::Acquire);
        if word & STATE_BITS == CLOSED {
            return Ok(self.permit(word >> 2, false));
        }
        self.acquire_slow()
    }

    fn permit(self: &Arc<Self>, epoch: u64, probe: bool) -> Permit {
        let started = self.shared.config.slow.map(|_| Instant::now());
        let sent = self.shared.config.slow.map(|_| SentAt::new());
        Permit {
            breaker: Arc::clone(self),
            epoch,
            probe,
            started,
            sent,
            done: false,
        }
    }

    #[cold]
    fn acquire_slow(self: &Arc<Self>) -> Result<Permit, Refusal> {
        let now = Instant::now();
        let mut st = self.inner.lock();
        st.last_used = now;
        match st.state {
            CircuitState::Closed => {
                let epoch = st.epoch;
                drop(st);
                Ok(self.permit(epoch, false))
            }
            CircuitState::Open if st.held => Err(Refusal { retry_after: None }),
            CircuitState::Open if now < st.open_until => Err(Refusal {
                retry_after: Some(st.open_until - now),
            }),
            CircuitState::Open | CircuitState::HalfOpen => {
                if st.state == CircuitState::Open {
                    self.transition(&mut st, CircuitState::HalfOpen, "open time over");
                }
                if st.probes_taken < self.shared.config.half_open_probes {
                    st.probes_taken += 1;
                    let epoch = st.epoch;
                    drop(st);
                    Ok(self.permit(epoch, true))
                } else {
                    Err(Refusal {
                        retry_after: Some(self.shared.config.busy_retry_after),
                    })
                }
            }
        }
    }

    /// Records the outcome of an admitted call.
    fn record(
        &self,
        epoch: u64,
        probe: bool,
        started: Option<Instant>,
        err: Option<&Classification>,
    ) {
        let config = &self.shared.config;
        let outcome = match err {
            None => Outcome::Success,
            Some(c) => config.outcome(c.class),
        };
        if err.is_some_and(|c| c.class == ErrorClass::Unavailable(UnavailableKind::ConnectionPool))
        {
            // Not the model's health (see `default_outcome`), but worth an
            // alert of its own.
            metrics::counter!(names::CONNECTION_POOL_EXHAUSTED, "model" => self.label.clone())
                .increment(1);
        }
        let overload = match (err, config.overload_open) {
            (Some(c), Some(d))
                if c.class == ErrorClass::Throttled(ThrottleKind::ModelOverloaded) =>
            {
                // A server hint longer than the configured time wins, up to
                // the open-duration cap.
                Some(
                    c.retry_after
                        .map_or(d, |hint| hint.min(config.open_max).max(d)),
                )
            }
            _ => None,
        };
        let now = Instant::now();
        let slow = match (started, config.slow) {
            (Some(s), Some((threshold, _))) => {
                outcome != Outcome::Ignored && now.saturating_duration_since(s) >= threshold
            }
            _ => false,
        };
        let mut st = self.inner.lock();
        st.last_used = now;
        if st.epoch != epoch {
            return;
        }
        if let Some(d) = overload {
            self.trip(&mut st, now, Some(d), "model overloaded");
            return;
        }
        match st.state {
            CircuitState::Closed => {
                match outcome {
                    Outcome::Ignored => return,
                    Outcome::Success => st.consecutive = 0,
                    Outcome::Failure => st.consecutive += 1,
                }
                st.window.record(now, outcome == Outcome::Failure, slow);
                if let Some(reason) = self.trip_reason(&st, now) {
                    self.trip(&mut st, now, None, reason);
                }
            }
            CircuitState::HalfOpen if probe => {
                match outcome {
                    Outcome::Ignored => {
                        st.probes_taken = st.probes_taken.saturating_sub(1);
                        return;
                    }
                    Outcome::Success if !slow => st.probe_ok += 1,
                    _ => st.probe_failed += 1,
                }
                let required = config.required_probe_successes();
                if st.probe_ok >= required {
                    st.trips = 0;
                    self.transition(&mut st, CircuitState::Closed, "probes succeeded");
                } else if st.probe_failed > config.half_open_probes - required {
                    self.trip(&mut st, now, None, "probe failed");
                }
            }
            // Same epoch as a half-open state but not a probe, or open:
            // cannot happen (every transition bumps the epoch).
            CircuitState::HalfOpen | CircuitState::Open => {}
        }
    }

    fn trip_reason(&self, st: &Inner, now: Instant) -> Option<&'static str> {
        let config = &self.shared.config;
        if config
            .consecutive_failures
            .is_some_and(|n| st.consecutive >= n)
        {
            return Some("consecutive failures");
        }
        if config.failure_rate.is_none() && config.slow.is_none() {
            return None;
        }
        let totals = st.window.totals(now);
        if totals.calls < config.minimum_calls || totals.calls == 0 {
            return None;
        }
        let calls = f64::from(totals.calls);
        if config
            .failure_rate
            .is_some_and(|threshold| f64::from(totals.failures) / calls >= threshold)
        {
            return Some("failure rate");
        }
        if config
            .slow
            .is_some_and(|(_, threshold)| f64::from(totals.slow) / calls >= threshold)
        {
            return Some("slow call rate");
        }
        None
    }

    /// Opens the breaker: for `duration`, or for the grown open duration.
    fn trip(&self, st: &mut Inner, now: Instant, duration: Option<Duration>, reason: &'static str) {
        st.trips = st.trips.saturating_add(1);
        let d = duration.unwrap_or_else(|| self.shared.open_duration(st.trips));
        st.open_until = saturating_add(now, d);
        st.held = false;
        if st.state == CircuitState::Open {
            // Already open (an operator's hold being replaced): new epoch,
            // no transition.
            st.epoch += 1;
            self.publish(st);
        } else {
            self.transition(st, CircuitState::Open, reason);
        }
        tracing::debug!(model = %self.key, open_for = ?d, trips = st.trips, "circuit breaker open time set");
    }

    fn publish(&self, st: &Inner) {
        self.word
            .store((st.epoch << 2) | st.state.code(), Ordering::Release);
    }

    fn transition(&self, st: &mut Inner, to: CircuitState, reason: &'static str) {
        let from = st.state;
        st.state = to;
        st.epoch += 1;
        st.probes_taken = 0;
        st.probe_ok = 0;
        st.probe_failed = 0;
        if to != CircuitState::HalfOpen {
            st.window.clear();
            st.consecutive = 0;
        }
        self.publish(st);
        metrics::gauge!(names::CIRCUIT_STATE, "model" => self.label.clone()).set(to.gauge_value());
        metrics::counter!(
            names::CIRCUIT_TRANSITIONS,
            "model" => self.label.clone(),
            "from" => from.label(),
            "to" => to.label()
        )
        .increment(1);
        match to {
            CircuitState::Open => tracing::warn!(
                model = %self.key, from = from.label(), to = to.label(), reason,
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                model = %self.key, from = from.label(), to = to.label(), reason,
                "circuit breaker state changed"
            ),
        }
    }

    /// Frees the slot of a probe that ended without an outcome.
    fn release_probe(&self, epoch: u64) {
        let mut st = self.inner.lock();
        if st.epoch == epoch && st.state == CircuitState::HalfOpen {
            st.probes_taken = st.probes_taken.saturating_sub(1);
        }
    }

    /// Operator: open now, until `until` (`None`: until closed or reset).
    pub(crate) fn force_open(&self, until: Option<Instant>) {
        let now = Instant::now();
        let mut st = self.inner.lock();
        st.last_used = now;
        st.held = until.is_none();
        st.open_until = until.unwrap_or(now);
        if st.state == CircuitState::Open {
            st.epoch += 1;
            self.publish(&st);
        } else {
            self.transition(&mut st, CircuitState::Open, "forced open");
        }
        // `transition` does not touch `held` / `open_until`.
    }

    /// Operator: close now; with `reset`, also forget the trips in a row.
    pub(crate) fn force_closed(&self, reset: bool) {
        let now = Instant::now();
        let mut st = self.inner.lock();
        st.last_used = now;
        st.held = false;
        if reset {
            st.trips = 0;
        }
        let reason = if reset { "reset" } else { "forced closed" };
        if st.state == CircuitState::Closed {
            st.epoch += 1;
            st.window.clear();
            st.consecutive = 0;
            self.publish(&st);
        } else {
            self.transition(&mut st, CircuitState::Closed, reason);
        }
    }

    pub(crate) fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let st = self.inner.lock();
        let totals = st.window.totals(now);
        BreakerSnapshot {
            key: self.key.to_string(),
            state: st.state,
            forced_open: st.held,
            calls: totals.calls,
            failures: totals.failures,
            slow_calls: totals.slow,
            consecutive_failures: st.consecutive,
            trips: st.trips,
            retry_after: (st.state == CircuitState::Open && !st.held)
                .then(|| st.open_until.saturating_duration_since(now)),
            probes_taken: st.probes_taken,
            probe_successes: st.probe_ok,
            probe_failures: st.probe_failed,
            idle: now.saturating_duration_since(st.last_used),
        }
    }

    /// Whether the breaker may be dropped: unused for the idle timeout, no
    /// call in flight (`in_use`), not forced open, not within an open time.
    pub(crate) fn expired(&self, now: Instant, in_use: bool) -> bool {
        if in_use {
            return false;
        }
        let st = self.inner.lock();
        !st.held
            && now.saturating_duration_since(st.last_used) >= self.shared.config.idle_timeout
            && (st.state != CircuitState::Open || now >= st.open_until)
    }

    /// Eviction order when the registry is full: not forced open, closed
    /// first, least recently used first. `None` if it must be kept.
    pub(crate) fn eviction_rank(&self) -> Option<(bool, Instant)> {
        let st = self.inner.lock();
        (!st.held).then_some((st.state != CircuitState::Closed, st.last_used))
    }
}

/// The right of one admitted call to report its outcome; a half-open probe
/// slot while the call is in flight. Dropping it without an outcome (the
/// response future was dropped) frees the slot.
#[derive(Debug)]
pub(crate) struct Permit {
    breaker: Arc<Breaker>,
    epoch: u64,
    probe: bool,
    /// When the breaker admitted the call (slow-call rule only).
    started: Option<Instant>,
    /// When the layers below sent it on (slow-call rule only; see
    /// `tower_bedrock_core::sent`).
    sent: Option<Arc<SentAt>>,
    done: bool,
}

impl Permit {
    /// The record the layers below mark when they send the call on, when
    /// calls are timed.
    pub(crate) fn sent_watch(&self) -> Option<Arc<SentAt>> {
        self.sent.clone()
    }

    /// When the call's latency counts from: when a layer below sent it on
    /// (after a budget's queue), else when the breaker admitted it.
    fn start(&self) -> Option<Instant> {
        let sent = self.sent.as_ref().and_then(|s| s.get());
        self.started
            .map(|admitted| sent.map_or(admitted, |s| s.max(admitted)))
    }

    /// Reports how the call ended: `None` for a success.
    pub(crate) fn finish(mut self, err: Option<&Classification>) {
        self.done = true;
        let start = self.start();
        self.breaker.record(self.epoch, self.probe, start, err);
    }

    /// Time since the call's latency started counting (`None` when slow
    /// calls are not tracked).
    pub(crate) fn elapsed(&self) -> Option<Duration> {
        self.start().map(|s| s.elapsed())
    }

    /// Reports how a call ended whose latency was `answered_in`: a stream,
    /// answered at its first event and ending much later, is judged slow
    /// or not by its answer, not by its length.
    pub(crate) fn finish_answered_in(
        mut self,
        err: Option<&Classification>,
        answered_in: Duration,
    ) {
        if self.started.is_some() {
            self.started = Instant::now().checked_sub(answered_in);
            self.sent = None;
        }
        self.finish(err);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe && !self.done {
            self.breaker.release_probe(self.epoch);
        }
    }
}
