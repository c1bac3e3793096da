//! The load of the multi-process tests: callers sending requests back to
//! back through clones of one service until a deadline.

use std::fmt::Debug;

use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_bedrock_budget::testing::MockRequest;

/// Runs `callers` tasks, each sending `tokens`-token requests for `model`
/// back to back through its own clone of `svc` until `end`. Request ids are
/// unique per caller. Returns the number of failed calls.
pub async fn run_callers<S>(
    svc: S,
    callers: usize,
    model: &'static str,
    tokens: u64,
    end: Instant,
) -> u64
where
    S: Service<MockRequest> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Debug + Send,
    S::Response: Send,
{
    let mut tasks = Vec::with_capacity(callers);
    for c in 0..callers {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let (mut id, mut failures) = ((c as u64) << 32, 0u64);
            while Instant::now() < end {
                id += 1;
                let req = MockRequest::new(model, id, tokens, 0);
                if svc.ready().await.unwrap().call(req).await.is_err() {
                    failures += 1;
                }
            }
            failures
        }));
    }
    let mut failures = 0;
    for t in tasks {
        failures += t.await.unwrap();
    }
    failures
}
