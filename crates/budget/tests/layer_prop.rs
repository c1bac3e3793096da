//! Property test through the whole layer: for random arrival sequences
//! (sizes, gaps, maximum waits, outcomes that keep their reservation,
//! cancellations at random moments), with sliding windows what reaches the
//! model in any window never exceeds the token and request limits, and in
//! both window modes, when everything has finished nothing is left
//! reserved or waiting. (The fixed windows' admission rule is checked step
//! by step by the suite's `store_contract_fixed` and
//! `fixed_window_boundaries`.)

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::{Instant, sleep, sleep_until};
use tower_bedrock_budget::testing::{
    MockBedrock, MockRequest, NOVA, Reply, run_paused, spawn, test_clock,
};
use tower_bedrock_budget::{Budget, WindowMode};
use tower_bedrock_core::{ErrorClass, LocalRejection, UnavailableKind};
use tower_layer::Layer;

const TOKENS: u64 = 1000;
const REQUESTS: u64 = 6;
const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Outcome {
    Usage,
    NoUsage,
    ServerError,
    /// Dropped this many milliseconds after it was sent (waiting or in
    /// flight).
    Cancel(u64),
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Usage),
        1 => Just(Outcome::NoUsage),
        1 => Just(Outcome::ServerError),
        2 => (0u64..4000).prop_map(Outcome::Cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn what_reaches_the_model_fits_every_window(
        arrivals in proptest::collection::vec((0u64..1500, 1u64..600, outcome()), 1..80),
        max_wait_ms in 0u64..15_000,
        sliding in any::<bool>(),
    ) {
        run_paused(|| async move {
            let budget = Budget::builder()
                .window(WINDOW)
                .sub_windows(10)
                .tokens_per_window(TOKENS)
                .requests_per_window(REQUESTS)
                .max_wait(Duration::from_millis(max_wait_ms))
                .window_mode(if sliding { WindowMode::Sliding } else { WindowMode::Fixed })
                .clock(test_clock())
                .fixed_limits()
                .build()
                .unwrap();
            let mock = MockBedrock::new(Duration::from_millis(700));
            let mut svc = budget.layer().layer(mock.clone());
            let t0 = Instant::now();
            let mut at = t0;
            let mut handles = Vec::new();
            let mut sizes = std::collections::HashMap::new();
            // Refunded at once (a 503 answered instead of the call: Bedrock
            // counted nothing), so they do not count in the window.
            let mut refunded = std::collections::HashSet::new();
            for (id, (gap, tokens, outcome)) in arrivals.iter().enumerate() {
                at += Duration::from_millis(*gap);
                sleep_until(at).await;
                let id = id as u64;
                sizes.insert(id, *tokens);
                let reply = match outcome {
                    Outcome::Usage | Outcome::Cancel(_) => Reply::Usage(tower_bedrock_core::Usage::new(*tokens, 0)),
                    Outcome::NoUsage => Reply::NoUsage,
                    Outcome::ServerError => {
                        refunded.insert(id);
                        Reply::Fail(ErrorClass::Unavailable(UnavailableKind::Service))
                    }
                };
                let h = spawn(&mut svc, MockRequest::new(NOVA, id, *tokens, 0).reply(reply));
                if let Outcome::Cancel(after) = outcome {
                    let after = Duration::from_millis(*after);
                    tokio::spawn(async move {
                        sleep(after).await;
                        h.abort();
                    });
                } else {
                    handles.push(h);
                }
            }
            for h in handles {
                match h.await.unwrap() {
                    Ok(_) => {}
                    Err(e) => assert!(matches!(
                        e.class(),
                        ErrorClass::Unavailable(_) | ErrorClass::Local(LocalRejection::BudgetExhausted)
                    )),
                }
            }
            sleep(WINDOW * 10).await;
            let calls = mock.calls();
            for c in calls.iter().filter(|_| sliding) {
                let in_window: Vec<_> = calls
                    .iter()
                    .filter(|o| !refunded.contains(&o.id))
                    .filter(|o| o.at <= c.at && c.at.saturating_duration_since(o.at) < WINDOW)
                    .collect();
                let tokens: u64 = in_window.iter().map(|o| sizes[&o.id]).sum();
                assert!(tokens <= TOKENS, "{tokens} tokens reached the model within one window");
                assert!(in_window.len() as u64 <= REQUESTS, "{} requests within one window", in_window.len());
            }
            let snap = budget.snapshot(NOVA).unwrap();
            assert_eq!((snap.reserved_tokens, snap.reserved_requests, snap.waiting), (0, 0, 0));
            assert_eq!(snap.tokens, 0);
        });
    }
}
