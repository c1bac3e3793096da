//! A store wrapper that records every admitted reservation (slot and
//! charge), to check the windows from outside.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_bedrock_budget::{
    BudgetStore, Charge, Limits, Refusal, Reservation, StoreKey, StoreSnapshot, TenantTag,
    WindowSpec,
};

/// Admitted reservations, in order, with the wall-clock time (µs since
/// the UNIX epoch) they were admitted at.
pub type Log = Arc<Mutex<Vec<(Reservation, u64)>>>;

/// Wraps a store; every admitted reservation is appended to the log.
#[derive(Clone)]
pub struct Recording<St> {
    pub inner: St,
    pub log: Log,
}

pub struct RecordingKey<K> {
    inner: K,
    log: Log,
}

impl<St: BudgetStore> BudgetStore for Recording<St> {
    type Key = RecordingKey<St::Key>;

    fn key(&self, key: &str, spec: &WindowSpec) -> Self::Key {
        RecordingKey {
            inner: self.inner.key(key, spec),
            log: self.log.clone(),
        }
    }
}

pub struct Rec<F> {
    inner: F,
    log: Log,
}

impl<F> Future for Rec<F>
where
    F: Future<Output = Result<Reservation, Refusal>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = Pin::new(&mut self.inner).poll(cx);
        if let Poll::Ready(Ok(res)) = &r {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros() as u64;
            self.log.lock().unwrap().push((*res, wall));
        }
        r
    }
}

impl<K: StoreKey> StoreKey for RecordingKey<K> {
    type Reserve = Rec<K::Reserve>;

    fn reserve(&self, limits: Limits, charge: Charge, now: Instant) -> Self::Reserve {
        Rec {
            inner: self.inner.reserve(limits, charge, now),
            log: self.log.clone(),
        }
    }

    fn settle(&self, reservation: Reservation, actual: Charge, now: Instant) {
        self.inner.settle(reservation, actual, now);
    }

    fn reserve_for(
        &self,
        tenant: TenantTag<'_>,
        limits: Limits,
        charge: Charge,
        now: Instant,
    ) -> Self::Reserve {
        Rec {
            inner: self.inner.reserve_for(tenant, limits, charge, now),
            log: self.log.clone(),
        }
    }

    fn settle_for(&self, tenant: TenantTag<'_>, r: Reservation, actual: Charge, now: Instant) {
        self.inner.settle_for(tenant, r, actual, now);
    }

    fn snapshot(&self, now: Instant) -> StoreSnapshot {
        self.inner.snapshot(now)
    }
}
