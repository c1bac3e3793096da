//! 50 clients against a model with a fixed capacity per quota window: the
//! window-aligned, full-jitter retries of `QuotaAlignedRetry` finish all the
//! work with fewer attempts than the seed's policy (base 1 s, cap 60 s,
//! 5 attempts, 10 % jitter, throttles only).

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::{Error, MockFailure};
use fastrand::Rng;
use tokio::time::{Instant, Sleep};
use tower::retry::{Policy, Retry};
use tower::{Layer, Service, ServiceExt};
use tower_bedrock_core::{Classified, ClassifiedError, Clock, ErrorClass, ThrottleKind};
use tower_bedrock_retry::QuotaAlignedRetryLayer;

const CLIENTS: u64 = 50;
const JOBS_PER_CLIENT: u64 = 2;
/// Requests the model admits per 60 s window.
const CAPACITY: u64 = 20;
const WINDOW: Duration = Duration::from_secs(60);
/// When a call fails for good, the application waits this long and submits
/// the job again (the same for both policies).
const RESUBMIT_AFTER: Duration = Duration::from_secs(1);

/// A model that admits `CAPACITY` requests per wall-clock window and
/// throttles (too many tokens) the rest.
#[derive(Clone)]
struct WindowedModel {
    clock: Clock,
    used: Arc<Mutex<(u64, u64)>>,
    attempts: Arc<AtomicU64>,
    /// Jobs served, by job number (a job served twice shows as 2).
    served: Arc<Mutex<Vec<u32>>>,
}

impl WindowedModel {
    fn new(clock: Clock) -> Self {
        WindowedModel {
            clock,
            used: Arc::new(Mutex::new((u64::MAX, 0))),
            attempts: Arc::new(AtomicU64::new(0)),
            served: Arc::new(Mutex::new(vec![0; (CLIENTS * JOBS_PER_CLIENT) as usize])),
        }
    }
}

impl Service<u64> for WindowedModel {
    type Response = u64;
    type Error = Error;
    type Future = std::future::Ready<Result<u64, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: u64) -> Self::Future {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst);
        let window = self.clock.since_epoch().as_secs() / WINDOW.as_secs();
        let mut used = self.used.lock().unwrap();
        if used.0 != window {
            *used = (window, 0);
        }
        std::future::ready(if used.1 < CAPACITY {
            used.1 += 1;
            self.served.lock().unwrap()[usize::try_from(job).unwrap()] += 1;
            Ok(job)
        } else {
            let c = tower_bedrock_core::Classification::new(ErrorClass::Throttled(
                ThrottleKind::TokenRate,
            ))
            .with_status(429);
            Err(ClassifiedError::new(
                MockFailure(u32::try_from(n).unwrap()),
                c,
            ))
        })
    }
}

/// The seed's retry policy: exponential from 1 s, capped at 60 s, 5
/// attempts, +-10 % jitter, throttles only.
#[derive(Clone)]
struct SeedPolicy {
    attempt: u32,
    rng: Arc<Mutex<Rng>>,
}

impl Policy<u64, u64, Error> for SeedPolicy {
    type Future = Pin<Box<Sleep>>;

    fn retry(&mut self, _req: &mut u64, result: &mut Result<u64, Error>) -> Option<Self::Future> {
        let err = result.as_ref().err()?;
        if !err.classification().class.is_throttle() || self.attempt + 1 >= 5 {
            return None;
        }
        let exp = Duration::from_secs(1)
            .saturating_mul(1 << self.attempt)
            .min(Duration::from_secs(60));
        let factor = 0.9 + 0.2 * self.rng.lock().unwrap().f64();
        self.attempt += 1;
        Some(Box::pin(tokio::time::sleep(exp.mul_f64(factor))))
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// Runs every client's jobs to completion through `svc`; returns the time
/// the last job finished.
async fn run_clients<S>(svc: S) -> Duration
where
    S: Service<u64, Response = u64, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let mut svc = svc.clone();
        tasks.spawn(async move {
            for j in 0..JOBS_PER_CLIENT {
                let job = client * JOBS_PER_CLIENT + j;
                loop {
                    match svc.ready().await.unwrap().call(job).await {
                        Ok(done) => {
                            assert_eq!(done, job);
                            break;
                        }
                        Err(_) => tokio::time::sleep(RESUBMIT_AFTER).await,
                    }
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    start.elapsed()
}

fn clock() -> Clock {
    // 20 s into a minute.
    Clock::starting_at(Duration::from_secs(1_700_000_000 - 1_700_000_000 % 60 + 20))
}

#[tokio::test(start_paused = true)]
async fn window_aligned_retries_finish_the_work_with_fewer_attempts_than_the_seed() {
    let jobs = CLIENTS * JOBS_PER_CLIENT;
    let min_windows = jobs.div_ceil(CAPACITY);

    // The seed's policy.
    let clock_a = clock();
    let model = WindowedModel::new(clock_a);
    let seed_attempts = model.attempts.clone();
    let seed_served = model.served.clone();
    let policy = SeedPolicy {
        attempt: 0,
        rng: Arc::new(Mutex::new(Rng::with_seed(42))),
    };
    let seed_took = run_clients(Retry::new(policy, model)).await;
    let seed_total = seed_attempts.load(Ordering::SeqCst);

    // QuotaAlignedRetry with its defaults.
    let clock_b = clock();
    let model = WindowedModel::new(clock_b);
    let ours_attempts = model.attempts.clone();
    let ours_served = model.served.clone();
    let layer = QuotaAlignedRetryLayer::builder()
        .clock(clock_b)
        .seed(42)
        .build()
        .unwrap();
    let ours_took = run_clients(layer.layer(model)).await;
    let ours_total = ours_attempts.load(Ordering::SeqCst);

    println!(
        "{CLIENTS} clients x {JOBS_PER_CLIENT} jobs, {CAPACITY} per {WINDOW:?} window \
         (at least {min_windows} windows):"
    );
    println!(
        "  seed policy (1 s base, 60 s cap, 5 attempts, 10 % jitter): {seed_total} attempts, done after {seed_took:?}"
    );
    println!(
        "  QuotaAlignedRetry (window-aligned, full jitter):            {ours_total} attempts, done after {ours_took:?}"
    );

    // All the work is done either way: the model served every job exactly
    // once (a lost or duplicated job shows here).
    let once = vec![1; usize::try_from(jobs).unwrap()];
    assert_eq!(*seed_served.lock().unwrap(), once);
    assert_eq!(*ours_served.lock().unwrap(), once);
    assert!(
        ours_total < seed_total,
        "window-aligned retries used {ours_total} attempts, the seed's {seed_total}"
    );
    // Ours wastes at most one failed attempt per job per window it waited.
    assert!(ours_total <= jobs + jobs * min_windows, "{ours_total}");
    // And is not slower than the capacity allows by more than a window.
    assert!(ours_took <= WINDOW * u32::try_from(min_windows + 1).unwrap());
}
