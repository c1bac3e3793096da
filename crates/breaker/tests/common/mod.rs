//! A scriptable mock Bedrock service: each request says how it should end.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};
use tower_bedrock_core::{
    Classification, ClassifiedError, ErrorClass, ModelRequest, ThrottleKind, TokenDemand,
    UnavailableKind,
};

pub type Error = ClassifiedError<()>;

/// How the mock answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    Ok,
    Fail(ErrorClass),
    /// Fails with a retry hint.
    FailHint(ErrorClass, Duration),
    /// Waits (tokio time), then answers.
    After(Duration, Box<Answer>),
    /// Waits until the mock's gate is opened, then succeeds.
    Gate,
}

#[derive(Debug, Clone)]
pub struct Req {
    pub model: String,
    pub answer: Answer,
}

impl Req {
    pub fn new(model: &str, answer: Answer) -> Self {
        Req {
            model: model.to_owned(),
            answer,
        }
    }
}

impl ModelRequest for Req {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn set_model_id(&mut self, model_id: &str) {
        self.model = model_id.to_owned();
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand::default()
    }
}

#[derive(Clone, Default)]
pub struct Mock {
    pub calls: Arc<AtomicUsize>,
    pub polls: Arc<AtomicUsize>,
    pub by_model: Arc<Mutex<HashMap<String, usize>>>,
    /// When set, `poll_ready` is pending until cleared (and woken).
    pub not_ready: Arc<AtomicBool>,
    pub waker: Arc<Mutex<Option<std::task::Waker>>>,
    pub gate: Arc<GateInner>,
}

pub struct GateInner(pub Semaphore);

impl Default for GateInner {
    fn default() -> Self {
        GateInner(Semaphore::new(0))
    }
}

impl Mock {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    pub fn calls_for(&self, model: &str) -> usize {
        self.by_model.lock().get(model).copied().unwrap_or(0)
    }
    pub fn open_gate(&self) {
        self.gate.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }
    pub fn set_ready(&self, ready: bool) {
        self.not_ready.store(!ready, Ordering::SeqCst);
        let waker = if ready {
            self.waker.lock().take()
        } else {
            None
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

fn answer(
    a: Answer,
    gate: Arc<GateInner>,
) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> {
    Box::pin(async move {
        match a {
            Answer::Ok => Ok(()),
            Answer::Fail(class) => Err(ClassifiedError::new((), Classification::new(class))),
            Answer::FailHint(class, hint) => Err(ClassifiedError::new(
                (),
                Classification::new(class).with_retry_after(hint),
            )),
            Answer::After(d, then) => {
                tokio::time::sleep(d).await;
                answer(*then, gate).await
            }
            Answer::Gate => {
                let _permit = gate.0.acquire().await.expect("gate closed");
                Ok(())
            }
        }
    })
}

impl Service<Req> for Mock {
    type Response = ();
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.not_ready.load(Ordering::SeqCst) {
            *self.waker.lock() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.by_model.lock().entry(req.model.clone()).or_default() += 1;
        answer(req.answer, Arc::clone(&self.gate))
    }
}

/// `ready().await` then `call(...).await`.
pub async fn send<S>(svc: &mut S, model: &str, answer: Answer) -> Result<(), Error>
where
    S: Service<Req, Response = (), Error = Error>,
{
    svc.ready().await?.call(Req::new(model, answer)).await
}

pub fn fail(class: ErrorClass) -> Answer {
    Answer::Fail(class)
}

pub const UNAVAILABLE: ErrorClass = ErrorClass::Unavailable(UnavailableKind::Service);
pub const OVERLOADED: ErrorClass = ErrorClass::Throttled(ThrottleKind::ModelOverloaded);

pub fn is_circuit_open(e: &Error) -> bool {
    e.class() == ErrorClass::Local(tower_bedrock_core::LocalRejection::CircuitOpen)
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
