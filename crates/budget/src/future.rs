//! The response future of [`TokenBudget`](crate::TokenBudget): admission
//! (waiting, shedding), then the inner call, then settlement.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_bedrock_core::{
    Classified, ErrorClass, LocalRejection, ModelRequest, Rejection, ReportsUsage, UsageCallback,
    names,
};
use tower_service::Service;

use crate::budget::{ErrorSettlement, KeyState, TenantInfo};
use crate::store::{Charge, Refusal, Reservation, StoreKey};

pin_project! {
    /// The future of a budgeted call. Dropping it while it waits leaves the
    /// queue; dropping it while the call is in flight keeps the reservation
    /// (the request may be running at Bedrock), so nothing leaks and nothing
    /// is counted twice.
    pub struct ResponseFuture<S, Req, K>
    where
        S: Service<Req>,
        K: StoreKey,
    {
        #[pin]
        inner: Option<S::Future>,
        pending: Option<(S, Req)>,
        admission: Admission<K>,
        held: Option<Held<K>>,
        burndown: u64,
    }
}

impl<S, Req, K> fmt::Debug for ResponseFuture<S, Req, K>
where
    S: Service<Req>,
    K: StoreKey,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("key", &self.admission.key.name)
            .field("tokens", &self.admission.charge.tokens)
            .field("forwarded", &self.inner.is_some())
            .finish()
    }
}

impl<S, Req, K> ResponseFuture<S, Req, K>
where
    S: Service<Req>,
    K: StoreKey,
{
    pub(crate) fn new(admission: Admission<K>, service: S, req: Req, burndown: u64) -> Self {
        ResponseFuture {
            inner: None,
            pending: Some((service, req)),
            admission,
            held: None,
            burndown,
        }
    }
}

impl<S, Req, K> Future for ResponseFuture<S, Req, K>
where
    S: Service<Req>,
    S::Response: ReportsUsage,
    S::Error: Classified + From<Rejection>,
    Req: ModelRequest,
    K: StoreKey,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if this.inner.is_none() {
            let admitted = ready!(this.admission.poll(cx));
            let (mut service, req) = this
                .pending
                .take()
                .expect("budget future polled after completion");
            let waited = this.admission.waited();
            if !waited.is_zero()
                && let Some(report) = req.report()
            {
                report.record_budget_wait(waited);
            }
            match admitted {
                Err(rejection) => return Poll::Ready(Err(S::Error::from(rejection))),
                Ok(reservation) => {
                    *this.held = Some(Held {
                        key: this.admission.key.clone(),
                        tenant: this.admission.tenant.clone(),
                        reservation,
                        done: false,
                    });
                    this.inner.set(Some(service.call(req)));
                }
            }
        }
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            unreachable!("inner future set above")
        };
        let out = ready!(inner.poll(cx));
        let held = this.held.take();
        match out {
            Ok(mut response) => {
                if let Some(held) = held {
                    let burndown = *this.burndown;
                    if let Some(usage) = response.usage() {
                        held.settle(Charge::call(usage.quota_tokens(burndown)));
                    } else {
                        let settle: UsageCallback = Box::new(move |usage| match usage {
                            Some(u) => held.settle(Charge::call(u.quota_tokens(burndown))),
                            // No usage: keep the reservation (dropping does).
                            None => drop(held),
                        });
                        // Not deferred: dropping the callback keeps the
                        // reservation.
                        let _ = response.defer_usage(settle);
                    }
                }
                Poll::Ready(Ok(response))
            }
            Err(error) => {
                let class = error.classification().class;
                if let Some(held) = held {
                    let key = held.key.clone();
                    match (key.config.on_error)(&class) {
                        ErrorSettlement::Refund => held.settle(Charge::ZERO),
                        ErrorSettlement::Keep => drop(held),
                    }
                    if let ErrorClass::Throttled(kind) = class
                        && class.is_rate_throttle()
                    {
                        key.on_throttle(kind, Instant::now());
                    }
                }
                Poll::Ready(Err(error))
            }
        }
    }
}

/// A reservation held by a call in flight. Settles when told; dropped
/// unsettled, keeps the reservation.
pub(crate) struct Held<K: StoreKey> {
    key: Arc<KeyState<K>>,
    tenant: Arc<TenantInfo>,
    reservation: Reservation,
    done: bool,
}

impl<K: StoreKey> Held<K> {
    fn settle(mut self, actual: Charge) {
        self.done = true;
        let now = Instant::now();
        let reserved = self.reservation.charge;
        self.key
            .store
            .settle_for(self.tenant.tag(), self.reservation, actual, now);
        if actual.tokens < reserved.tokens || actual.requests < reserved.requests {
            self.key.on_settled();
        }
        self.key.update_gauges(now);
    }
}

impl<K: StoreKey> Drop for Held<K> {
    fn drop(&mut self) {
        if !self.done {
            let r = self.reservation;
            self.key
                .store
                .settle_for(self.tenant.tag(), r, r.charge, Instant::now());
        }
    }
}

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
    key: Arc<KeyState<K>>,
    tenant: Arc<TenantInfo>,
    charge: Charge,
    /// Set on the first poll: the maximum wait counts from there.
    deadline: Option<Instant>,
    phase: Phase<K::Reserve>,
    queued: Option<QueueSlot<K>>,
    waited_since: Option<Instant>,
    waited: Duration,
    retry_at: Option<Instant>,
    epoch: u64,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<K: StoreKey> Admission<K> {
    pub(crate) fn new(key: Arc<KeyState<K>>, tenant: Arc<TenantInfo>, charge: Charge) -> Self {
        let limits = key.configured();
        let too_large = charge.tokens > limits.tokens
            || limits.day_tokens.is_some_and(|d| charge.tokens > d)
            || limits.requests.is_some_and(|r| charge.requests > r);
        Admission {
            key,
            tenant,
            charge,
            deadline: None,
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

    /// When the wait ends (set by the first poll, which every other phase
    /// follows).
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

    fn queue_slot(
        key: &Arc<KeyState<K>>,
        tenant: &TenantInfo,
        s: &mut crate::budget::Sched,
    ) -> QueueSlot<K> {
        QueueSlot {
            key: key.clone(),
            tenant: tenant.index,
            id: s.enqueue(tenant),
            active: true,
        }
    }

    fn note_waiting(&self) {
        metrics::counter!(names::BUDGET_WAITS, "model" => self.key.name.to_string(), "tenant" => self.tenant.name.to_string())
            .increment(1);
        tracing::debug!(
            key = %self.key.name,
            tenant = %self.tenant.name,
            tokens = self.charge.tokens,
            "request waits for budget"
        );
    }

    fn finish_wait(&mut self, now: Instant) {
        if let Some(since) = self.waited_since.take() {
            self.waited = now.saturating_duration_since(since);
            metrics::histogram!(names::BUDGET_WAIT_SECONDS, "model" => self.key.name.to_string(), "tenant" => self.tenant.name.to_string())
                .record(self.waited.as_secs_f64());
        }
    }

    fn shed(&mut self, now: Instant, kind: LocalRejection) -> Rejection {
        self.phase = Phase::Done;
        self.finish_wait(now);
        self.key.sched.lock().count_shed(&self.tenant);
        // Leaving the queue wakes the next waiter.
        self.queued = None;
        let reason = kind.label();
        metrics::counter!(names::BUDGET_SHEDS, "model" => self.key.name.to_string(), "tenant" => self.tenant.name.to_string(), "reason" => reason)
            .increment(1);
        let mut rejection = Rejection::new(kind).with_key(self.key.name.to_string());
        if kind == LocalRejection::BudgetExhausted {
            let room = self.retry_at.or(self.key.sched.lock().room_at);
            let after = room
                .map_or(self.granularity(), |t| t.saturating_duration_since(now))
                .max(Duration::from_millis(1));
            rejection = rejection.with_retry_after(after);
            tracing::info!(
                key = %self.key.name,
                tenant = %self.tenant.name,
                tokens = self.charge.tokens,
                waited_ms = self.waited.as_millis() as u64,
                retry_after_ms = after.as_millis() as u64,
                "request shed: no budget within the maximum wait"
            );
        } else {
            tracing::info!(
                key = %self.key.name,
                tenant = %self.tenant.name,
                tokens = self.charge.tokens,
                limit = self.key.configured().tokens,
                "request shed: larger than the whole budget window"
            );
        }
        rejection
    }

    /// The store refused: wait (joining the queue if not in it yet) or,
    /// past the deadline, shed.
    fn refused(&mut self, refusal: Refusal, now: Instant) -> Option<Rejection> {
        let retry = refusal
            .room_at
            .unwrap_or(now + self.granularity())
            .max(now + Duration::from_millis(1));
        self.retry_at = Some(retry);
        let mut s = self.key.sched.lock();
        s.room_at = Some(retry);
        let joined = self.queued.is_none();
        if joined {
            self.queued = Some(Self::queue_slot(&self.key, &self.tenant, &mut s));
        }
        drop(s);
        if joined {
            self.waited_since = Some(now);
            self.note_waiting();
        }
        if now >= self.deadline() {
            return Some(self.shed(now, LocalRejection::BudgetExhausted));
        }
        self.phase = Phase::Waiting { refused: true };
        None
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reservation, Rejection>> {
        loop {
            match &mut self.phase {
                Phase::Done => panic!("budget admission polled after completion"),
                Phase::TooLarge => {
                    let now = Instant::now();
                    return Poll::Ready(Err(self.shed(now, LocalRejection::RequestTooLarge)));
                }
                Phase::Start => {
                    let now = Instant::now();
                    // A maximum wait too long for the clock means "no limit".
                    self.deadline = Some(
                        now.checked_add(self.key.config.max_wait)
                            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400)),
                    );
                    let mut s = self.key.sched.lock();
                    if s.has_waiters() {
                        self.queued = Some(Self::queue_slot(&self.key, &self.tenant, &mut s));
                        drop(s);
                        self.waited_since = Some(now);
                        self.note_waiting();
                        self.phase = Phase::Waiting { refused: false };
                    } else {
                        // Direct path: one lock of the key's state, the store's
                        // reservation polled once under it.
                        let limits = s.limits(now, &self.key.config, self.key.configured());
                        self.epoch = self.key.epoch.load(Ordering::SeqCst);
                        let mut fut =
                            self.key
                                .store
                                .reserve_for(self.tenant.tag(), limits, self.charge, now);
                        match Pin::new(&mut fut).poll(cx) {
                            Poll::Ready(Ok(reservation)) => {
                                let tau = self.key.config.spec.window.as_secs_f64();
                                s.admitted(&self.tenant, self.charge, now, tau);
                                s.pace_consume(now, &self.key.config, limits, self.charge);
                                drop(s);
                                self.phase = Phase::Done;
                                self.key.update_gauges(now);
                                return Poll::Ready(Ok(reservation));
                            }
                            Poll::Ready(Err(refusal)) => {
                                drop(s);
                                if let Some(rejection) = self.refused(refusal, now) {
                                    return Poll::Ready(Err(rejection));
                                }
                            }
                            Poll::Pending => {
                                self.phase = Phase::Trying(fut);
                                return Poll::Pending;
                            }
                        }
                    }
                }
                Phase::Trying(fut) => {
                    let result = ready!(Pin::new(fut).poll(cx));
                    let now = Instant::now();
                    match result {
                        Ok(reservation) => {
                            self.phase = Phase::Done;
                            self.finish_wait(now);
                            let tau = self.key.config.spec.window.as_secs_f64();
                            let waker = {
                                let mut s = self.key.sched.lock();
                                s.admitted(&self.tenant, self.charge, now, tau);
                                let limits = s.limits(now, &self.key.config, self.key.configured());
                                s.pace_consume(now, &self.key.config, limits, self.charge);
                                match self.queued.take() {
                                    Some(mut q) => {
                                        s.remove(q.tenant, q.id);
                                        // Already removed: its drop has nothing to do.
                                        q.active = false;
                                        s.take_head_waker(
                                            now,
                                            &self.key.config,
                                            self.key.configured(),
                                        )
                                    }
                                    None => None,
                                }
                            };
                            if let Some(w) = waker {
                                w.wake();
                            }
                            self.key.update_gauges(now);
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
                    let mut s = self.key.sched.lock();
                    let is_head =
                        s.head(now, &self.key.config, self.key.configured()) == Some((tenant, id));
                    let room_may_exist = !refused
                        || self.key.epoch.load(Ordering::SeqCst) != self.epoch
                        || self.retry_at.is_some_and(|t| now >= t);
                    if is_head && room_may_exist {
                        let limits = s.limits(now, &self.key.config, self.key.configured());
                        match s.pace_wait(now, &self.key.config, limits, self.charge) {
                            None => {
                                self.epoch = self.key.epoch.load(Ordering::SeqCst);
                                self.phase = Phase::Trying(self.key.store.reserve_for(
                                    self.tenant.tag(),
                                    limits,
                                    self.charge,
                                    now,
                                ));
                                continue;
                            }
                            // Not yet: the backlog drains at the limit's pace.
                            Some(at) => {
                                self.retry_at = Some(at.max(now + Duration::from_millis(1)));
                                self.epoch = self.key.epoch.load(Ordering::SeqCst);
                                self.phase = Phase::Waiting { refused: true };
                            }
                        }
                    }
                    if now >= self.deadline() {
                        drop(s);
                        return Poll::Ready(Err(self.shed(now, LocalRejection::BudgetExhausted)));
                    }
                    s.set_waker(tenant, id, cx.waker());
                    drop(s);
                    let wake_at = match (is_head, self.retry_at) {
                        (true, Some(t)) => t.min(self.deadline()),
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
