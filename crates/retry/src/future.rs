//! The future returned by [`QuotaAlignedRetry`](crate::QuotaAlignedRetry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use fastrand::Rng;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
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
        // An attempt is in flight.
        Calling { #[pin] future: F },
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
        let future = service.call(request.clone());
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
                        Decision::Retry(wait) => {
                            *this.last_error = Some(error);
                            this.retry.arm(Instant::now() + wait);
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
                        let future = this.service.call(this.request.clone());
                        this.state.set(State::Calling { future });
                    }
                    Poll::Ready(Err(mut error)) => {
                        this.retry.release();
                        this.retry.mark(&mut error, None);
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
    /// Retry after this wait (budget already withdrawn).
    Retry(Duration),
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
}

impl Retrying {
    #[inline]
    pub(crate) fn new(
        shared: Arc<Shared>,
        report: Option<CallReport>,
        deadline: Option<Duration>,
    ) -> Self {
        let deadline = deadline.and_then(|d| Instant::now().checked_add(d));
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
            if stop.is_some() {
                ctx.retry_stop = stop;
            }
        }
    }

    fn decide<E: Classified>(&mut self, error: &E) -> Decision {
        if error.context().is_some_and(|c| c.retry_stop.is_some()) {
            return Decision::PassThrough;
        }
        let shared = &*self.shared;
        let classification = error.classification();
        let class = classification.class;
        let Some(slot) = Slot::of(class) else {
            return Decision::Stop(RetryStop::NotRetryable);
        };
        let policy = shared.policies.slot(slot);
        if !policy.retries() {
            return Decision::Stop(RetryStop::NotRetryable);
        }
        let n = self
            .scratch
            .as_ref()
            .map_or(0, |s| s.per_class[slot as usize]);
        if n >= policy.max_retries() || self.attempts >= shared.max_attempts {
            return Decision::Stop(RetryStop::MaxAttempts);
        }
        let scratch = self.scratch.get_or_insert_with(|| {
            Box::new(Scratch {
                per_class: [0; SLOTS],
                rng: Rng::with_seed(shared.next_seed()),
                previous: None,
            })
        });
        let wait = match (policy.honors_hint(), classification.retry_after) {
            (true, Some(hint)) => hint.clamp(shared.hint_min, shared.hint_max),
            _ => match policy.backoff() {
                Backoff::QuotaWindow { offset, spread } => {
                    shared.clock.until_next_window(shared.window)
                        + offset
                        + random_between(&mut scratch.rng, Duration::ZERO, spread)
                }
                Backoff::Exponential { base, cap, jitter } => {
                    let previous = scratch.previous.unwrap_or(base);
                    let wait = exponential_wait(base, cap, jitter, n, previous, &mut scratch.rng);
                    scratch.previous = Some(wait);
                    wait
                }
            },
        };
        if let Some(deadline) = self.deadline
            && Instant::now()
                .checked_add(wait)
                .is_none_or(|at| at > deadline)
        {
            tracing::debug!(
                class = class.label(),
                kind = class.kind_label(),
                attempt = self.attempts,
                wait_ms = millis(wait),
                "not retrying Bedrock call: the wait would cross the deadline"
            );
            return Decision::Stop(RetryStop::Deadline);
        }
        let budget = &shared.budget;
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
        scratch.per_class[slot as usize] = n + 1;
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
        Decision::Retry(wait)
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
