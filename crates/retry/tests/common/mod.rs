//! A mock Bedrock for the retry layer's tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;
use tower_bedrock_core::{
    Classification, ClassifiedError, ClientKind, ErrorClass, LocalRejection, ThrottleKind,
    UnavailableKind,
};

/// The inner error of the mock: which attempt failed.
#[derive(Debug)]
pub struct MockFailure(pub u32);

impl fmt::Display for MockFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mock failure on attempt {}", self.0)
    }
}
impl std::error::Error for MockFailure {}

pub type Error = ClassifiedError<MockFailure>;

pub fn class(c: ErrorClass) -> Classification {
    Classification::new(c)
}
pub fn token_rate() -> Classification {
    class(ErrorClass::Throttled(ThrottleKind::TokenRate))
}
pub fn request_rate() -> Classification {
    class(ErrorClass::Throttled(ThrottleKind::RequestRate))
}
pub fn overloaded() -> Classification {
    class(ErrorClass::Throttled(ThrottleKind::ModelOverloaded))
}
pub fn not_ready() -> Classification {
    class(ErrorClass::Throttled(ThrottleKind::ModelNotReady))
}
pub fn service() -> Classification {
    class(ErrorClass::Unavailable(UnavailableKind::Service))
}
pub fn network() -> Classification {
    class(ErrorClass::Unavailable(UnavailableKind::Network))
}
pub fn pool() -> Classification {
    class(ErrorClass::Unavailable(UnavailableKind::ConnectionPool))
}
pub fn validation() -> Classification {
    class(ErrorClass::Client(ClientKind::Validation))
}
pub fn local(kind: LocalRejection) -> Classification {
    class(ErrorClass::Local(kind))
}

/// Shared record of what the mock saw.
#[derive(Default)]
pub struct MockState {
    script: Mutex<VecDeque<Option<Classification>>>,
    /// Outcome once the script is spent (`None`: success).
    then: Mutex<Option<Classification>>,
    /// Instants at which `call` ran.
    calls: Mutex<Vec<Instant>>,
    /// After the first call, `poll_ready` stays pending.
    stall_after_first: AtomicBool,
    /// The `poll_ready` right after the first call fails once with this.
    fail_ready_once: Mutex<Option<Classification>>,
    /// `poll_ready` calls.
    pub ready_polls: AtomicU32,
    /// Live instances of the mock (the original and its clones).
    pub live: AtomicU32,
}

/// A mock service: answers from a script, panics on a `call` not preceded
/// by a successful `poll_ready` on the same instance.
pub struct Mock {
    state: Arc<MockState>,
    ready: bool,
}

impl Clone for Mock {
    fn clone(&self) -> Self {
        self.state.live.fetch_add(1, Ordering::SeqCst);
        // A clone is not ready: tower's contract is per instance.
        Mock {
            state: self.state.clone(),
            ready: false,
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.state.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Mock {
    /// Fails as scripted (`None` is a success), then answers `then`.
    pub fn new(script: Vec<Option<Classification>>, then: Option<Classification>) -> Self {
        let state = MockState {
            script: Mutex::new(script.into()),
            then: Mutex::new(then),
            ..MockState::default()
        };
        state.live.store(1, Ordering::SeqCst);
        Mock {
            state: Arc::new(state),
            ready: false,
        }
    }

    /// Fails `n` times with `c`, then succeeds.
    pub fn failing(n: usize, c: Classification) -> Self {
        Self::new(vec![Some(c); n], None)
    }

    /// Always fails with `c`.
    pub fn always(c: Classification) -> Self {
        Self::new(Vec::new(), Some(c))
    }

    pub fn state(&self) -> Arc<MockState> {
        self.state.clone()
    }

    /// The first `poll_ready` after the first call fails with `c`; later
    /// ones succeed.
    pub fn fail_readiness_once_after_first_call(self, c: Classification) -> Self {
        *self.state.fail_ready_once.lock().unwrap() = Some(c);
        self
    }

    pub fn stall_readiness_after_first_call(self) -> Self {
        self.state.stall_after_first.store(true, Ordering::SeqCst);
        self
    }
}

impl MockState {
    pub fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Gaps between consecutive calls.
    pub fn gaps(&self) -> Vec<Duration> {
        self.calls().windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl Service<u32> for Mock {
    type Response = u32;
    type Error = Error;
    type Future = std::future::Ready<Result<u32, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.state.ready_polls.fetch_add(1, Ordering::SeqCst);
        if self.state.stall_after_first.load(Ordering::SeqCst) && self.state.call_count() > 0 {
            return Poll::Pending;
        }
        if self.state.call_count() > 0
            && let Some(c) = self.state.fail_ready_once.lock().unwrap().take()
        {
            return Poll::Ready(Err(ClassifiedError::new(MockFailure(0), c)));
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        assert!(self.ready, "call without poll_ready");
        self.ready = false;
        let attempt = {
            let mut calls = self.state.calls.lock().unwrap();
            calls.push(Instant::now());
            u32::try_from(calls.len()).unwrap()
        };
        let outcome = match self.state.script.lock().unwrap().pop_front() {
            Some(o) => o,
            None => self.state.then.lock().unwrap().clone(),
        };
        std::future::ready(match outcome {
            None => Ok(req),
            Some(c) => Err(ClassifiedError::new(MockFailure(attempt), c)),
        })
    }
}
