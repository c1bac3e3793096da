//! The response future.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;
use tower_bedrock_core::deadline::{call_deadline, call_with_deadline};
use tower_bedrock_core::{
    CallReport, Classified, ErrorClass, LocalRejection, ModelRequest, Tried, names,
};
use tower_service::Service;

use crate::layer::Routes;
use crate::mode::ResponseMode;

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        // The inner call for the current target is in flight, with the
        // chain's deadline (if any) in scope for the layers below.
        Calling { #[pin] fut: TaskLocalFuture<Option<Instant>, F> },
        // A streaming response arrived; waiting for its first event.
        Admitting { resp: Option<R> },
        // Waiting for the inner service to be ready for the next target.
        Readying,
        Done,
    }
}

pin_project! {
    /// The response future of [`ModelFallback`](crate::ModelFallback).
    ///
    /// Dropping it drops the inner call in flight and the degraded-request
    /// gauge it holds.
    pub struct ResponseFuture<S, Req, M>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future, S::Response>,
        attempts: Attempts<S, Req, S::Error>,
        _mode: PhantomData<fn() -> M>,
    }
}

impl<S, Req, M> fmt::Debug for ResponseFuture<S, Req, M>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "calling",
            State::Admitting { .. } => "awaiting first event",
            State::Readying => "awaiting readiness",
            State::Done => "done",
        };
        let mut d = f.debug_struct("ResponseFuture");
        d.field("state", &state);
        if let Some(run) = &self.attempts.run {
            d.field("target", &run.current_id())
                .field("tried", &run.tried.len());
        }
        d.finish()
    }
}

impl<S, Req, M> ResponseFuture<S, Req, M>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        fut: TaskLocalFuture<Option<Instant>, S::Future>,
        attempts: Attempts<S, Req, S::Error>,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            attempts,
            _mode: PhantomData,
        }
    }
}

impl<S, Req, M> Future for ResponseFuture<S, Req, M>
where
    S: Service<Req>,
    S::Error: Classified,
    Req: ModelRequest + Clone,
    M: ResponseMode<S::Response, S::Error>,
{
    type Output = Result<M::Output, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let error = match this.state.as_mut().project() {
                StateProj::Calling { fut } => match ready!(fut.poll(cx)) {
                    Ok(mut resp) => match M::poll_served(&mut resp, cx) {
                        Poll::Ready(Ok(())) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(this.attempts.served::<M, _, _>(resp)));
                        }
                        Poll::Ready(Err(e)) => e,
                        Poll::Pending => {
                            this.state.set(State::Admitting { resp: Some(resp) });
                            return Poll::Pending;
                        }
                    },
                    Err(e) => e,
                },
                StateProj::Admitting { resp } => {
                    let r = resp.as_mut().expect("response taken before it was served");
                    match ready!(M::poll_served(r, cx)) {
                        Ok(()) => {
                            let resp = resp.take().expect("checked above");
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(this.attempts.served::<M, _, _>(resp)));
                        }
                        Err(e) => e,
                    }
                }
                StateProj::Readying => {
                    let svc = this
                        .attempts
                        .svc
                        .as_mut()
                        .expect("a fallback target without a service");
                    match ready!(svc.poll_ready(cx)) {
                        Ok(()) => {
                            let req = this.attempts.next_request();
                            let deadline = this.attempts.deadline();
                            let svc = this.attempts.svc.as_mut().expect("checked above");
                            let fut = call_within(svc, req, deadline);
                            this.state.set(State::Calling { fut });
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                StateProj::Done => panic!("ModelFallback ResponseFuture polled after completion"),
            };
            // The current attempt failed (possibly its response, already
            // in `state`, is dropped by the `set` below).
            match this.attempts.on_error(error) {
                Some(e) => {
                    this.state.set(State::Done);
                    return Poll::Ready(Err(e));
                }
                None => this.state.set(State::Readying),
            }
        }
    }
}

/// Calls `svc` with `deadline` (when set) as the call's deadline for the
/// layers below (see `tower_bedrock_core::deadline`); without one, the
/// deadline already in scope, if any, is kept.
pub(crate) fn call_within<S, Req>(
    svc: &mut S,
    req: Req,
    deadline: Option<Instant>,
) -> TaskLocalFuture<Option<Instant>, S::Future>
where
    S: Service<Req>,
{
    call_with_deadline(deadline, || svc.call(req))
}

/// What the future knows of the chain it runs: `None` for a request that
/// matched no chain (one call, passed through).
pub(crate) struct Attempts<S, Req, E> {
    svc: Option<S>,
    run: Option<Run<Req, E>>,
}

impl<S, Req, E> Attempts<S, Req, E> {
    pub(crate) fn passthrough() -> Self {
        Attempts {
            svc: None,
            run: None,
        }
    }

    pub(crate) fn keep_service(&mut self, svc: S) {
        self.svc = Some(svc);
    }

    /// The instant after which no further target is started: the chain
    /// deadline or the caller's deadline, whichever is earlier.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.run.as_ref().and_then(|r| r.deadline)
    }
}

impl<S, Req, E> Attempts<S, Req, E>
where
    Req: ModelRequest + Clone,
    E: Classified,
{
    /// Starts a run of chain `chain` for `req`; returns the request for the
    /// first target to call (targets remembered open are skipped).
    pub(crate) fn start(routes: Arc<Routes<Req>>, chain: usize, req: Req) -> (Self, Req) {
        let report = req.report().cloned();
        let mut run = Run {
            routes,
            chain,
            pos: 0,
            req: Some(req),
            report,
            tried: Vec::new(),
            best: None,
            degraded: None,
            deadline: None,
        };
        // The chain deadline, or the deadline of the call this chain runs
        // in (set by the caller or a layer above), whichever is earlier.
        let own = run
            .routes
            .chain_deadline
            .and_then(|limit| Instant::now().checked_add(limit));
        run.deadline = match (own, call_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        run.skip_open();
        let first = run.request();
        (
            Attempts {
                svc: None,
                run: Some(run),
            },
            first,
        )
    }

    /// Whether a target follows the current one (so the service must be
    /// kept for it).
    pub(crate) fn has_more(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.req.is_some())
    }

    fn next_request(&mut self) -> Req {
        self.run
            .as_mut()
            .expect("a fallback target without a run")
            .request()
    }

    /// The response of the current target counts as served.
    fn served<M, R, Err>(&mut self, resp: R) -> M::Output
    where
        M: ResponseMode<R, Err>,
    {
        // Nothing more to call.
        self.svc = None;
        match &mut self.run {
            Some(run) => {
                run.served();
                let tried = std::mem::take(&mut run.tried);
                let id = run.routes.chain(run.chain)[run.pos].target.shared_id();
                M::output(resp, Some(id), tried)
            }
            None => M::output(resp, None, Vec::new()),
        }
    }

    /// Handles a failure of the current target: `None` to try the next
    /// target, `Some(error)` to return.
    fn on_error(&mut self, e: E) -> Option<E> {
        let Some(run) = &mut self.run else {
            return Some(e);
        };
        let out = run.on_error(e);
        if out.is_some() {
            // Nothing more to call: release the kept service now.
            self.svc = None;
        }
        out
    }
}

struct Run<Req, E> {
    routes: Arc<Routes<Req>>,
    chain: usize,
    /// The target being tried.
    pos: usize,
    /// The caller's request, kept for the targets after the current one
    /// (moved into the request for the last target).
    req: Option<Req>,
    report: Option<CallReport>,
    tried: Vec<Tried>,
    /// The error to return if every target fails (see the crate docs).
    best: Option<E>,
    degraded: Option<DegradedGuard>,
    /// When no further target may be started.
    deadline: Option<Instant>,
}

impl<Req, E> Run<Req, E> {
    fn current_id(&self) -> &str {
        self.routes.chain(self.chain)[self.pos].target.id()
    }
}

impl<Req, E> Run<Req, E>
where
    Req: ModelRequest + Clone,
    E: Classified,
{
    /// The request for the current target.
    fn request(&mut self) -> Req {
        let slots = self.routes.chain(self.chain);
        let last = self.pos + 1 == slots.len();
        let mut req = if last {
            self.req.take()
        } else {
            self.req.clone()
        }
        .expect("the caller's request was already used for the last target");
        slots[self.pos].target.prepare(&mut req);
        req
    }

    /// Notes a failed (or skipped) target.
    fn record_failure(&mut self, class: ErrorClass) {
        let tried = Tried {
            target: self.current_id().to_owned(),
            class,
        };
        if let Some(report) = &self.report {
            report.record_tried(tried.clone());
        }
        self.tried.push(tried);
    }

    /// Moves from the current target to the next one.
    fn advance(&mut self, class: ErrorClass, skipped: bool) {
        let slots = self.routes.chain(self.chain);
        let from = slots[self.pos].target.shared_id();
        let to = slots[self.pos + 1].target.shared_id();
        metrics::counter!(
            names::FALLBACKS,
            "from" => from.clone(),
            "to" => to.clone(),
            "class" => class.label(),
            "kind" => class.kind_label(),
        )
        .increment(1);
        tracing::warn!(
            from = &**from,
            to = &**to,
            class = %class,
            skipped,
            "model fallback"
        );
        self.pos += 1;
        if self.degraded.is_none() {
            self.degraded = Some(DegradedGuard::new());
        }
    }

    /// Skips targets remembered open (never the last one).
    fn skip_open(&mut self) {
        if !self.routes.remember_open {
            return;
        }
        let len = self.routes.chain(self.chain).len();
        while self.pos + 1 < len && self.routes.chain(self.chain)[self.pos].memo.is_open() {
            let class = ErrorClass::Local(LocalRejection::CircuitOpen);
            self.record_failure(class);
            self.advance(class, true);
        }
    }

    fn on_error(&mut self, e: E) -> Option<E> {
        let classification = e.classification();
        let class = classification.class;
        let retry_after = classification.retry_after;
        self.record_failure(class);
        if !self.routes.triggers.contains(&class) {
            // Client errors and non-trigger classes end the chain with
            // their own error.
            return Some(self.finish_err(e, None));
        }
        if self.routes.remember_open
            && class == ErrorClass::Local(LocalRejection::CircuitOpen)
            && let Some(after) = retry_after
        {
            self.routes.chain(self.chain)[self.pos]
                .memo
                .remember(Instant::now() + after);
        }
        self.consider(e);
        let last = self.pos + 1 >= self.routes.chain(self.chain).len();
        let out_of_time = !last && self.deadline.is_some_and(|d| Instant::now() >= d);
        if last || out_of_time {
            let best = self.best.take().expect("an error was just considered");
            let why = if last { "all_failed" } else { "chain_deadline" };
            return Some(self.finish_err(best, Some(why)));
        }
        self.advance(class, false);
        self.skip_open();
        None
    }

    /// Keeps the most relevant error so far: the first one from upstream
    /// (not a local rejection); failing that, the local rejection with the
    /// shortest `retry_after` (the first one on ties).
    fn consider(&mut self, e: E) {
        let replace = match &self.best {
            None => true,
            Some(best) => {
                let (b, n) = (best.classification(), e.classification());
                match (b.class.is_local(), n.class.is_local()) {
                    (false, _) => false,
                    (true, false) => true,
                    (true, true) => match (b.retry_after, n.retry_after) {
                        (Some(b), Some(n)) => n < b,
                        (None, Some(_)) => true,
                        _ => false,
                    },
                }
            }
        };
        if replace {
            self.best = Some(e);
        }
    }

    /// The error to return, with every target tried noted on it.
    /// `given_up` says why the chain was abandoned when it was not ended by
    /// this error's own (non-trigger) class.
    fn finish_err(&mut self, mut e: E, given_up: Option<&'static str>) -> E {
        self.degraded = None;
        self.best = None;
        if let Some(reason) = given_up {
            tracing::warn!(
                tried = self.tried.len(),
                class = %e.classification().class,
                reason,
                "model fallback gave up"
            );
        }
        let tried = std::mem::take(&mut self.tried);
        if let Some(ctx) = e.context_mut() {
            ctx.tried.extend(tried);
        }
        e
    }

    fn served(&mut self) {
        let id = self.routes.chain(self.chain)[self.pos].target.shared_id();
        if let Some(report) = &self.report {
            report.record_served_by(id);
        }
        if self.pos > 0 {
            metrics::counter!(names::DEGRADED_SERVED, "target" => id.clone()).increment(1);
            tracing::debug!(
                target_id = &**id,
                tried = self.tried.len(),
                "served by a fallback target"
            );
        }
        self.degraded = None;
        self.best = None;
    }
}

/// Counts a request in the degraded-in-flight gauge while it lives.
struct DegradedGuard(());

impl DegradedGuard {
    fn new() -> Self {
        metrics::gauge!(names::DEGRADED_IN_FLIGHT).increment(1.0);
        DegradedGuard(())
    }
}

impl Drop for DegradedGuard {
    fn drop(&mut self) {
        metrics::gauge!(names::DEGRADED_IN_FLIGHT).decrement(1.0);
    }
}
