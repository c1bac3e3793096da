//! The future returned by [`QuotaAlignedRetry`](crate::QuotaAlignedRetry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use fastrand::Rng;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::{Instant, Sleep};
use tower_bedrock_core::deadline::{call_deadline, call_with_deadline};
use tower_bedrock_core::{
    CallReport, Classified, ErrorClass, LocalRejection, Rejection, RetryStop, UnavailableKind,
    names,
};
use tower_service::Service;

use crate::layer::Shared;
use crate::policy::{Backoff, SLOTS, Slot, exponential_wait, random_between};

pin_project! {
    /// The future of one call through [`QuotaAlignedRetry`](crate::QuotaAlignedRetry):
    /// the attempts, the waits between them and the readiness of the inner
    /// service before each retry.
    ///
    /// Dropping it stops everything: the pending attempt or wait is
    /// dropped, and retry budget withdrawn for a retry not yet sent is
    /// given back.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        request: Req,
        last_error: Option<S::Error>,
        retry: Retrying,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight, polled with the call's deadline in scope
        // (see `tower_bedrock_core::deadline`).
        Calling { #[pin] future: TaskLocalFuture<Option<Instant>, F> },
        // Sleeping before a retry (the timer is in `Retrying`).
        Waiting,
        // Waiting for the inner service to be ready for a retry, bounded by
        // the deadline (the timer is in `Retrying`).
        Readying,
        // Refused before the first attempt; the error is in `last_error`.
        Refused,
        // Finished.
        Done,
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } => "calling",
            State::Waiting => "waiting",
            State::Readying => "readying",
            State::Refused => "refused",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.retry.attempts)
            .finish_non_exhaustive()
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
    Req: Clone,
{
    pub(crate) fn first_attempt(mut service: S, request: Req, mut retry: Retrying) -> Self {
        retry.record_attempt();
        let future = retry.call(&mut service, request.clone());
        ResponseFuture {
            state: State::Calling { future },
            service,
            request,
            last_error: None,
            retry,
        }
    }

    pub(crate) fn refused(service: S, request: Req, retry: Retrying, error: S::Error) -> Self {
        ResponseFuture {
            state: State::Refused,
            service,
            request,
            last_error: Some(error),
            retry,
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Classified + From<Rejection>,
    Req: Clone,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => match ready!(future.poll(cx)) {
                    Ok(response) => {
                        this.retry.succeeded();
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    }
                    Err(mut error) => match this.retry.decide(&error) {
                        Decision::Retry(at) => {
                            *this.last_error = Some(error);
                            this.retry.arm(at);
                            this.state.set(State::Waiting);
                        }
                        Decision::Stop(stop) => {
                            this.retry.mark(&mut error, Some(stop));
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                        Decision::PassThrough => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    },
                },
                StateProj::Waiting => {
                    ready!(this.retry.poll_timer(cx));
                    if let Some(deadline) = this.retry.deadline {
                        this.retry.arm(deadline);
                    }
                    this.state.set(State::Readying);
                }
                StateProj::Readying => match this.service.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        this.retry.record_attempt();
                        *this.last_error = None;
                        let future = this.retry.call(this.service, this.request.clone());
                        this.state.set(State::Calling { future });
                    }
                    Poll::Ready(Err(mut error)) => {
                        // Marked, so that a retry layer above returns it as
                        // is instead of starting a retry cycle of its own
                        // (which would multiply the attempts).
                        this.retry.release();
                        this.retry.mark(&mut error, Some(RetryStop::NotRetryable));
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                    Poll::Pending => {
                        if this.retry.deadline.is_some() && this.retry.poll_timer(cx).is_ready() {
                            this.retry.release();
                            let mut error = this.last_error.take().unwrap_or_else(|| {
                                Rejection::new(LocalRejection::DeadlineExceeded).into()
                            });
                            this.retry.mark(&mut error, Some(RetryStop::Deadline));
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                        return Poll::Pending;
                    }
                },
                StateProj::Refused => {
                    let Some(mut error) = this.last_error.take() else {
                        panic!("QuotaAlignedRetry future polled after completion");
                    };
                    this.retry.mark(&mut error, Some(RetryStop::Deadline));
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("QuotaAlignedRetry future polled after completion"),
            }
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Retry at this instant (budget already withdrawn, when the retry
    /// costs any).
    Retry(Instant),
    /// Return the error, marked with why.
    Stop(RetryStop),
    /// Another retry layer below already decided: return the error as is.
    PassThrough,
}

/// The retry bookkeeping of one call. Kept small: what only retries need
/// lives in [`Scratch`], allocated at the first retry decision, so the happy
/// path moves few bytes and allocates nothing.
pub(crate) struct Retrying {
    shared: Arc<Shared>,
    report: Option<CallReport>,
    deadline: Option<Instant>,
    /// Attempts sent so far.
    attempts: u32,
    /// Budget withdrawn for a retry not sent yet (given back on drop).
    held: u32,
    /// What the last retry sent cost (given back if it succeeds).
    last_cost: u32,
    scratch: Option<Box<Scratch>>,
    /// The timer of the waits and of the deadline while readying, reused.
    timer: Option<Pin<Box<Sleep>>>,
}

/// Retry-only state of one call.
struct Scratch {
    /// Retries scheduled so far, per class.
    per_class: [u32; SLOTS],
    rng: Rng,
    /// The previous exponential wait, for decorrelated jitter.
    previous: Option<Duration>,
    /// Refusals by an open breaker waited out so far.
    circuit_waits: u32,
    /// Their total wait.
    circuit_waited: Duration,
}

impl Retrying {
    #[inline]
    pub(crate) fn new(
        shared: Arc<Shared>,
        report: Option<CallReport>,
        deadline: Option<Duration>,
    ) -> Self {
        // A deadline that cannot be represented is no deadline; one set by
        // a layer above (another retry layer) is kept when it is earlier.
        let own = deadline.and_then(|d| Instant::now().checked_add(d));
        let deadline = match (own, call_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Retrying {
            shared,
            report,
            deadline,
            attempts: 0,
            held: 0,
            last_cost: 0,
            scratch: None,
            timer: None,
        }
    }

    /// Sets the timer to fire at `at`.
    fn arm(&mut self, at: Instant) {
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }

    /// Calls the inner service with the call's deadline in scope, for the
    /// call and for its future.
    #[inline]
    fn call<S, Req>(
        &self,
        service: &mut S,
        request: Req,
    ) -> TaskLocalFuture<Option<Instant>, S::Future>
    where
        S: Service<Req>,
    {
        call_with_deadline(self.deadline, || service.call(request))
    }

    /// Counts an attempt about to be sent; a held retry token becomes spent.
    #[inline]
    fn record_attempt(&mut self) {
        self.attempts += 1;
        if let Some(report) = &self.report {
            report.record_attempt();
        }
        if self.held > 0 {
            self.last_cost = std::mem::take(&mut self.held);
        }
    }

    /// Gives back budget held for a retry that will not be sent.
    #[inline]
    fn release(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.shared.budget.deposit(held);
    }

    #[inline]
    fn succeeded(&mut self) {
        let budget = &self.shared.budget;
        if self.attempts <= 1 {
            budget.deposit(budget.config().success_refill);
        } else {
            budget.deposit(self.last_cost);
        }
    }

    /// Notes the attempts (and why retrying stopped) on the error.
    fn mark<E: Classified>(&self, error: &mut E, stop: Option<RetryStop>) {
        if let Some(ctx) = error.context_mut() {
            ctx.attempts = self.attempts;
            ctx.circuit_waits = self.circuit_waits();
            if stop.is_some() {
                ctx.retry_stop = stop;
            }
        }
    }

    fn circuit_waits(&self) -> u32 {
        self.scratch.as_ref().map_or(0, |s| s.circuit_waits)
    }

    fn scratch(&mut self) -> &mut Scratch {
        Self::scratch_of(&mut self.scratch, &self.shared)
    }

    /// The retry-only state, created at the first retry decision (split
    /// from `scratch` so that `shared` can be borrowed alongside).
    fn scratch_of<'a>(scratch: &'a mut Option<Box<Scratch>>, shared: &Shared) -> &'a mut Scratch {
        scratch.get_or_insert_with(|| {
            Box::new(Scratch {
                per_class: [0; SLOTS],
                rng: Rng::with_seed(shared.next_seed()),
                previous: None,
                circuit_waits: 0,
                circuit_waited: Duration::ZERO,
            })
        })
    }

    /// `now + wait`, unless that crosses the deadline (or cannot be
    /// represented).
    fn fits(&self, wait: Duration) -> Option<Instant> {
        let at = Instant::now().checked_add(wait)?;
        match self.deadline {
            Some(deadline) if at > deadline => None,
            _ => Some(at),
        }
    }

    /// A refusal by an open breaker below: wait it out when the layer is
    /// configured to (see [`CircuitWait`](crate::CircuitWait)).
    fn decide_circuit(&mut self, retry_after: Option<Duration>) -> Decision {
        let Some(policy) = self.shared.circuit_wait else {
            return Decision::Stop(RetryStop::NotRetryable);
        };
        let Some(hint) = retry_after.filter(|h| *h <= policy.longest_wait()) else {
            return Decision::Stop(RetryStop::NotRetryable);
        };
        let scratch = self.scratch();
        let jitter = random_between(&mut scratch.rng, Duration::ZERO, hint / 4);
        let wait = hint.saturating_add(jitter).min(policy.longest_wait());
        let total = scratch.circuit_waited.saturating_add(wait);
        if total > policy.longest_total() {
            return Decision::Stop(RetryStop::MaxAttempts);
        }
        let Some(at) = self.fits(wait) else {
            tracing::debug!(
                attempt = self.attempts,
                wait_ms = millis(wait),
                "not waiting out the open circuit breaker: the wait would cross the deadline"
            );
            return Decision::Stop(RetryStop::Deadline);
        };
        let scratch = self.scratch();
        scratch.circuit_waits += 1;
        scratch.circuit_waited = total;
        metrics::counter!(names::RETRY_CIRCUIT_WAITS).increment(1);
        tracing::debug!(
            attempt = self.attempts,
            wait_ms = millis(wait),
            "circuit breaker open: waiting for it to let calls through"
        );
        Decision::Retry(at)
    }

    fn decide<E: Classified>(&mut self, error: &E) -> Decision {
        if error.context().is_some_and(|c| c.retry_stop.is_some()) {
            return Decision::PassThrough;
        }
        let classification = error.classification();
        let class = classification.class;
        if class == ErrorClass::Local(LocalRejection::CircuitOpen) {
            return self.decide_circuit(classification.retry_after);
        }
        let Some(slot) = Slot::of(class) else {
            return Decision::Stop(RetryStop::NotRetryable);
        };
        let policy = *self.shared.policies.slot(slot);
        if !policy.retries() {
            return Decision::Stop(RetryStop::NotRetryable);
        }
        let n = self
            .scratch
            .as_ref()
            .map_or(0, |s| s.per_class[slot as usize]);
        // Refusals by an open breaker that were waited out reached nothing:
        // they do not count towards the limit.
        let sent = self.attempts.saturating_sub(self.circuit_waits());
        if n >= policy.max_retries() || sent >= self.shared.max_attempts {
            return Decision::Stop(RetryStop::MaxAttempts);
        }
        let shared = &*self.shared;
        let scratch = Self::scratch_of(&mut self.scratch, shared);
        // Saturating: the builder bounds every part by `MAX_WAIT`, but a
        // wait must never panic.
        let wait = match (policy.honors_hint(), classification.retry_after) {
            (true, Some(hint)) => hint.clamp(shared.hint_min, shared.hint_max),
            _ => match policy.backoff() {
                Backoff::QuotaWindow { offset, spread } => shared
                    .clock
                    .until_next_window(shared.window)
                    .saturating_add(offset)
                    .saturating_add(random_between(&mut scratch.rng, Duration::ZERO, spread)),
                Backoff::Exponential { base, cap, jitter } => {
                    let previous = scratch.previous.unwrap_or(base);
                    let wait = exponential_wait(base, cap, jitter, n, previous, &mut scratch.rng);
                    scratch.previous = Some(wait);
                    wait
                }
            },
        };
        let Some(at) = self.fits(wait) else {
            tracing::debug!(
                class = class.label(),
                kind = class.kind_label(),
                attempt = self.attempts,
                wait_ms = millis(wait),
                "not retrying Bedrock call: the wait would cross the deadline"
            );
            return Decision::Stop(RetryStop::Deadline);
        };
        let budget = &self.shared.budget;
        let cost = match class {
            ErrorClass::Unavailable(UnavailableKind::Network) | ErrorClass::ModelTimeout => {
                budget.config().timeout_retry_cost
            }
            _ => budget.config().retry_cost,
        };
        if !budget.try_withdraw(cost) {
            metrics::counter!(names::RETRY_BUDGET_EXHAUSTED).increment(1);
            tracing::debug!(
                class = class.label(),
                kind = class.kind_label(),
                attempt = self.attempts,
                "not retrying Bedrock call: the retry budget is empty"
            );
            return Decision::Stop(RetryStop::BudgetExhausted);
        }
        self.held = cost;
        self.scratch().per_class[slot as usize] = n + 1;
        metrics::counter!(names::RETRIES, "class" => class.label(), "kind" => class.kind_label())
            .increment(1);
        metrics::histogram!(names::RETRY_WAIT_SECONDS, "class" => class.label())
            .record(wait.as_secs_f64());
        tracing::debug!(
            class = class.label(),
            kind = class.kind_label(),
            code = classification.code().unwrap_or(""),
            request_id = classification.request_id.as_deref().unwrap_or(""),
            attempt = self.attempts,
            wait_ms = millis(wait),
            "retrying Bedrock call"
        );
        Decision::Retry(at)
    }
}

impl Drop for Retrying {
    #[inline]
    fn drop(&mut self) {
        self.release();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
