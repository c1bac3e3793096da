//! The response future of [`TokenBudget`](crate::TokenBudget): admission
//! (waiting, shedding), then the inner call, then settlement.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_bedrock_core::{
    Classified, ErrorClass, ModelRequest, Rejection, ReportsUsage, UsageCallback,
};
use tower_service::Service;

use crate::admission::Admission;
use crate::key::KeyState;
use crate::settlement::ErrorSettlement;
use crate::store::{Charge, Reservation, StoreKey};
use crate::tenant::TenantInfo;

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
        input: u64,
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
    pub(crate) fn new(
        admission: Admission<K>,
        service: S,
        req: Req,
        burndown: u64,
        input: u64,
    ) -> Self {
        ResponseFuture {
            inner: None,
            pending: Some((service, req)),
            admission,
            held: None,
            burndown,
            input,
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
                        ErrorSettlement::Input => {
                            let tokens = (*this.input).min(held.reservation.charge.tokens);
                            held.settle(Charge::call(tokens));
                        }
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
