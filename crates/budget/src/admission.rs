//! The admission of one call: try the store, wait for room in the key's
//! queue, or shed.
//!
//! Rules, in the order they apply:
//!
//! - a request larger than the key's (configured) limits fails at once with
//!   `RequestTooLarge`; one that cannot fit the *current* (possibly
//!   lowered) limits fails at once with `BudgetExhausted` and a retry-after,
//!   so it never holds the head of the queue;
//! - a request that finds no queue tries the store at once; one that finds
//!   a queue whose head cannot go now (refused, and no settlement since)
//!   tries the store too before queueing: a call that fits now is never
//!   delayed by one that does not;
//! - waiters try in turn (the head of the key's queues, see the
//!   scheduler), when a settlement freed room or the refusal's room time
//!   came;
//! - the wait never passes the maximum wait nor the call's deadline: if the
//!   room time is beyond it and no call of this process is in flight (no
//!   settlement can bring room earlier), the request is shed at once;
//!   otherwise at the deadline. Past the call's deadline the rejection is
//!   `DeadlineExceeded`, past the maximum wait `BudgetExhausted`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};
use tower_bedrock_core::{LocalRejection, Rejection};

use crate::key::KeyState;
use crate::scheduler::Sched;
use crate::store::{Charge, Refusal, Reservation, StoreKey, WindowKind};
use crate::tenant::TenantInfo;

/// Membership of a waiting queue; leaving (on drop) wakes the new head.
struct QueueSlot<K: StoreKey> {
    key: Arc<KeyState<K>>,
    tenant: usize,
    id: u64,
    active: bool,
}

impl<K: StoreKey> Drop for QueueSlot<K> {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let waker = {
            let mut s = self.key.sched.lock();
            s.remove(self.tenant, self.id);
            s.take_head_waker(Instant::now(), &self.key.config, self.key.configured())
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

enum Phase<R> {
    TooLarge,
    Start,
    Trying(R),
    Waiting { refused: bool },
    Done,
}

/// The admission part of a budgeted call.
pub(crate) struct Admission<K: StoreKey> {
    pub(crate) key: Arc<KeyState<K>>,
    pub(crate) tenant: Arc<TenantInfo>,
    pub(crate) charge: Charge,
    /// The call's deadline, as seen when the call was made.
    call_deadline: Option<Instant>,
    /// When the wait ends (set by the first poll): the earlier of the
    /// maximum wait and the call's deadline.
    deadline: Option<Instant>,
    /// Whether `deadline` is the call's deadline.
    deadline_is_call: bool,
    phase: Phase<K::Reserve>,
    queued: Option<QueueSlot<K>>,
    waited_since: Option<Instant>,
    waited: Duration,
    retry_at: Option<Instant>,
    epoch: u64,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<K: StoreKey> Admission<K> {
    pub(crate) fn new(
        key: Arc<KeyState<K>>,
        tenant: Arc<TenantInfo>,
        charge: Charge,
        call_deadline: Option<Instant>,
    ) -> Self {
        let limits = key.configured();
        let too_large = charge.tokens > limits.tokens
            || limits.day_tokens.is_some_and(|d| charge.tokens > d)
            || limits.requests.is_some_and(|r| charge.requests > r);
        Admission {
            key,
            tenant,
            charge,
            call_deadline,
            deadline: None,
            deadline_is_call: false,
            phase: if too_large {
                Phase::TooLarge
            } else {
                Phase::Start
            },
            queued: None,
            waited_since: None,
            waited: Duration::ZERO,
            retry_at: None,
            epoch: 0,
            sleep: None,
        }
    }

    fn deadline(&self) -> Instant {
        self.deadline.unwrap_or_else(Instant::now)
    }

    /// How long the call waited for room.
    pub(crate) fn waited(&self) -> Duration {
        self.waited
    }

    fn granularity(&self) -> Duration {
        self.key.config.spec.granularity()
    }

    fn join_queue(&mut self, s: &mut Sched, now: Instant) {
        if self.queued.is_some() {
            return;
        }
        self.queued = Some(QueueSlot {
            key: self.key.clone(),
            tenant: self.tenant.index,
            id: s.enqueue(&self.tenant),
            active: true,
        });
        self.waited_since = Some(now);
        tracing::debug!(
            key = %self.key.name,
            tenant = %self.tenant.name,
            tokens = self.charge.tokens,
            "request waits for budget"
        );
    }

    fn finish_wait(&mut self, now: Instant, s: &mut Sched) {
        if let Some(since) = self.waited_since.take() {
            self.waited = now.saturating_duration_since(since);
            s.metrics(&self.tenant)
                .wait_seconds
                .record(self.waited.as_secs_f64());
        }
    }

    /// The rejection past the wait's end (or when the room is beyond it).
    fn late_kind(&self) -> LocalRejection {
        if self.deadline_is_call {
            LocalRejection::DeadlineExceeded
        } else {
            LocalRejection::BudgetExhausted
        }
    }

    fn shed(&mut self, now: Instant, kind: LocalRejection, retry: Option<Instant>) -> Rejection {
        self.phase = Phase::Done;
        {
            let key = self.key.clone();
            let mut s = key.sched.lock();
            self.finish_wait(now, &mut s);
            s.slot(&self.tenant).sheds += 1;
            s.metrics(&self.tenant).shed(kind).increment(1);
        }
        // Leaving the queue wakes the next waiter.
        self.queued = None;
        let mut rejection = Rejection::new(kind).with_key(self.key.name.to_string());
        if kind == LocalRejection::RequestTooLarge {
            tracing::info!(
                key = %self.key.name,
                tenant = %self.tenant.name,
                tokens = self.charge.tokens,
                limit = self.key.configured().tokens,
                "request shed: larger than the whole budget window"
            );
            return rejection;
        }
        let after = retry
            .map_or(self.granularity(), |t| t.saturating_duration_since(now))
            .max(Duration::from_millis(1));
        rejection = rejection.with_retry_after(after);
        tracing::info!(
            key = %self.key.name,
            tenant = %self.tenant.name,
            tokens = self.charge.tokens,
            reason = kind.label(),
            waited_ms = self.waited.as_millis() as u64,
            retry_after_ms = after.as_millis() as u64,
            "request shed: no budget before the end of its wait"
        );
        rejection
    }

    /// Admitted: leave the queue, record it, wake the next waiter.
    fn admitted(&mut self, now: Instant) {
        self.phase = Phase::Done;
        let tau = self.key.config.spec.window.as_secs_f64();
        let waker = {
            let key = self.key.clone();
            let mut s = key.sched.lock();
            self.finish_wait(now, &mut s);
            s.admitted(&self.tenant, self.charge, now, tau);
            match self.queued.take() {
                Some(mut q) => {
                    s.remove(q.tenant, q.id);
                    // Already removed: its drop has nothing to do.
                    q.active = false;
                    if s.head_blocked.is_some() && !s.has_waiters() {
                        s.head_blocked = None;
                    }
                    s.take_head_waker(now, &self.key.config, self.key.configured())
                }
                None => None,
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        self.key.wake_refresher();
    }

    /// The store refused (or the window is marked full): wait, joining the
    /// queue if not in it yet, or shed when waiting cannot help.
    fn refused(&mut self, refusal: Refusal, now: Instant) -> Option<Rejection> {
        let Some(room) = refusal.room_at else {
            // Cannot fit the current limits (lowered by throttles): never
            // hold the queue; try again when the limit has recovered.
            let retry = self.key.config.spec.next_window_start(now);
            return Some(self.shed(now, LocalRejection::BudgetExhausted, Some(retry)));
        };
        let retry = room.max(now + Duration::from_millis(1));
        self.retry_at = Some(retry);
        let deadline = self.deadline();
        if retry > deadline {
            // Only a settlement of a call in flight can bring room before
            // the deadline; without one, waiting buys nothing.
            let in_flight = self.key.store.gauge_snapshot(now).reserved_requests > 0;
            if !in_flight || now >= deadline {
                return Some(self.shed(now, self.late_kind(), Some(retry)));
            }
        }
        let key = self.key.clone();
        let mut s = key.sched.lock();
        self.join_queue(&mut s, now);
        let me = self.queued.as_ref().map(|q| (q.tenant, q.id));
        if refusal.window == WindowKind::Share {
            // Refused its share across processes: other tenants go first
            // (wake the one that is now at the head).
            s.slot(&self.tenant).blocked_until = Some(retry);
            let waker = s.take_head_waker(now, &self.key.config, self.key.configured());
            drop(s);
            if let Some(w) = waker {
                w.wake();
            }
            self.phase = Phase::Waiting { refused: true };
            return None;
        } else if me.is_some() && s.head(now, &self.key.config, self.key.configured()) == me {
            s.head_blocked = Some(self.epoch);
            s.room_at = Some(retry);
        }
        drop(s);
        self.phase = Phase::Waiting { refused: true };
        None
    }

    /// Starts a reservation in the store (or a local refusal while the
    /// window is marked full). Called with the key's lock held.
    fn try_store(&mut self, s: &Sched, now: Instant) -> Result<K::Reserve, Refusal> {
        self.epoch = self.key.epoch.load(Ordering::SeqCst);
        if let Some(until) = s.learned.full(now) {
            return Err(Refusal {
                window: WindowKind::Tokens,
                room_at: Some(until),
            });
        }
        let limits = s.limits(now, &self.key.config, self.key.configured());
        Ok(self
            .key
            .store
            .reserve_for(self.tenant.tag(), limits, self.charge, now))
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reservation, Rejection>> {
        loop {
            match &mut self.phase {
                Phase::Done => panic!("budget admission polled after completion"),
                Phase::TooLarge => {
                    let now = Instant::now();
                    return Poll::Ready(Err(self.shed(now, LocalRejection::RequestTooLarge, None)));
                }
                Phase::Start => {
                    let now = Instant::now();
                    // A maximum wait too long for the clock means "no limit".
                    let wait_end = now
                        .checked_add(self.key.config.max_wait)
                        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
                    let call = match (
                        self.call_deadline,
                        tower_bedrock_core::deadline::call_deadline(),
                    ) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    self.deadline_is_call = call.is_some_and(|c| c <= wait_end);
                    self.deadline = Some(call.map_or(wait_end, |c| c.min(wait_end)));
                    let key = self.key.clone();
                    let mut s = key.sched.lock();
                    let head_cannot_go = s.head_blocked
                        == Some(self.key.epoch.load(Ordering::SeqCst))
                        && s.room_at.is_some_and(|t| now < t);
                    if s.has_waiters() && !head_cannot_go {
                        self.join_queue(&mut s, now);
                        drop(s);
                        self.phase = Phase::Waiting { refused: false };
                        continue;
                    }
                    // Direct path: one lock of the key's state, the store's
                    // reservation polled once under it.
                    let attempt = self.try_store(&s, now);
                    let result = match attempt {
                        Ok(mut fut) => match Pin::new(&mut fut).poll(cx) {
                            Poll::Ready(r) => r,
                            Poll::Pending => {
                                drop(s);
                                self.phase = Phase::Trying(fut);
                                return Poll::Pending;
                            }
                        },
                        Err(refusal) => Err(refusal),
                    };
                    drop(s);
                    match result {
                        Ok(reservation) => {
                            self.admitted(now);
                            return Poll::Ready(Ok(reservation));
                        }
                        Err(refusal) => {
                            if let Some(rejection) = self.refused(refusal, now) {
                                return Poll::Ready(Err(rejection));
                            }
                        }
                    }
                }
                Phase::Trying(fut) => {
                    let result = ready!(Pin::new(fut).poll(cx));
                    let now = Instant::now();
                    match result {
                        Ok(reservation) => {
                            self.admitted(now);
                            return Poll::Ready(Ok(reservation));
                        }
                        Err(refusal) => {
                            if let Some(rejection) = self.refused(refusal, now) {
                                return Poll::Ready(Err(rejection));
                            }
                        }
                    }
                }
                Phase::Waiting { refused } => {
                    let refused = *refused;
                    let now = Instant::now();
                    let Some(q) = &self.queued else {
                        unreachable!("a waiting admission is queued")
                    };
                    let (tenant, id) = (q.tenant, q.id);
                    let key = self.key.clone();
                    let mut s = key.sched.lock();
                    let is_head =
                        s.head(now, &self.key.config, self.key.configured()) == Some((tenant, id));
                    let room_may_exist = !refused
                        || self.key.epoch.load(Ordering::SeqCst) != self.epoch
                        || self.retry_at.is_some_and(|t| now >= t);
                    if is_head && room_may_exist {
                        match self.try_store(&s, now) {
                            Ok(fut) => {
                                drop(s);
                                self.phase = Phase::Trying(fut);
                                continue;
                            }
                            Err(refusal) => {
                                drop(s);
                                if let Some(rejection) = self.refused(refusal, now) {
                                    return Poll::Ready(Err(rejection));
                                }
                                continue;
                            }
                        }
                    }
                    if now >= self.deadline() {
                        drop(s);
                        let kind = self.late_kind();
                        let retry = self.retry_at.or(s_room_at(&self.key));
                        return Poll::Ready(Err(self.shed(now, kind, retry)));
                    }
                    s.set_waker(tenant, id, cx.waker());
                    let blocked = s.front_blocked(tenant, id, now);
                    drop(s);
                    let wake_at = match (is_head, self.retry_at, blocked) {
                        (true, Some(t), _) => t.min(self.deadline()),
                        (false, _, Some(t)) => t.min(self.deadline()),
                        _ => self.deadline(),
                    };
                    let sleep = self
                        .sleep
                        .get_or_insert_with(|| Box::pin(sleep_until(wake_at)));
                    if sleep.deadline() != wake_at {
                        sleep.as_mut().reset(wake_at);
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

fn s_room_at<K: StoreKey>(key: &KeyState<K>) -> Option<Instant> {
    key.sched.lock().room_at
}
