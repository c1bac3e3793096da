//! Property: for any chain and any outcome per target, the layer calls a
//! prefix of the chain in order, stops where the documented rules say, and
//! returns the documented response or error, with everything tried listed.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use support::{Ask, Behaviour, Error, Mock, rejection, upstream};
use tower::{Layer, ServiceExt};
use tower_bedrock_core::{
    Classified, ClientKind, ErrorClass, LocalRejection, ThrottleKind, Tried, UnavailableKind,
};
use tower_bedrock_fallback::{Chain, ModelFallbackLayer, Triggers};

const CLASSES: &[ErrorClass] = &[
    ErrorClass::Throttled(ThrottleKind::ModelOverloaded),
    ErrorClass::Throttled(ThrottleKind::ModelNotReady),
    ErrorClass::Throttled(ThrottleKind::TokenRate),
    ErrorClass::Unavailable(UnavailableKind::Service),
    ErrorClass::Unavailable(UnavailableKind::Network),
    ErrorClass::ModelTimeout,
    ErrorClass::QuotaExceeded,
    ErrorClass::Client(ClientKind::Validation),
    ErrorClass::Unknown,
    ErrorClass::Local(LocalRejection::CircuitOpen),
    ErrorClass::Local(LocalRejection::BudgetExhausted),
    ErrorClass::Local(LocalRejection::DeadlineExceeded),
];

/// One target's outcome: `None` answers; otherwise a class and, for local
/// rejections, an optional retry-after in seconds.
type Outcome = Option<(usize, Option<u64>)>;

fn make_error(model: &str, class: ErrorClass, after: Option<u64>) -> Error {
    match class {
        ErrorClass::Local(kind) => rejection(kind, model, after.map(Duration::from_secs)),
        other => upstream(model, other),
    }
}

fn origin(e: &Error) -> String {
    match e.rejection() {
        Some(r) => r.key().unwrap().to_owned(),
        None => e.inner().unwrap().0.clone(),
    }
}

struct Expected {
    called: usize,
    result: Result<usize, usize>,
    tried: Vec<Tried>,
}

/// The documented rules, written out plainly.
fn expected(ids: &[String], outcomes: &[Outcome], triggers: &Triggers) -> Expected {
    let mut tried = Vec::new();
    let mut best: Option<usize> = None;
    for (i, o) in outcomes.iter().enumerate() {
        let Some((c, after)) = o else {
            return Expected {
                called: i + 1,
                result: Ok(i),
                tried,
            };
        };
        let class = CLASSES[*c];
        tried.push(Tried {
            target: ids[i].clone(),
            class,
        });
        if !triggers.contains(&class) {
            return Expected {
                called: i + 1,
                result: Err(i),
                tried,
            };
        }
        let local = class.is_local();
        best = match best {
            None => Some(i),
            Some(b) => {
                let (bc, ba) = outcomes[b].unwrap();
                let b_local = CLASSES[bc].is_local();
                let after = if local { *after } else { None };
                let ba = if b_local { ba } else { None };
                let replace = match (b_local, local) {
                    (false, _) => false,
                    (true, false) => true,
                    (true, true) => match (ba, after) {
                        (Some(b), Some(n)) => n < b,
                        (None, Some(_)) => true,
                        _ => false,
                    },
                };
                Some(if replace { i } else { b })
            }
        };
    }
    Expected {
        called: outcomes.len(),
        result: Err(best.unwrap()),
        tried,
    }
}

#[test]
fn any_chain_follows_the_documented_rules() {
    let outcome = prop_oneof![
        1 => Just(None),
        3 => (0..CLASSES.len(), prop::option::of(1u64..60)).prop_map(Some),
    ];
    let strategy = prop::collection::vec(outcome, 1..=5);
    let config = Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[42; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    runner
        .run(&strategy, |outcomes: Vec<Outcome>| {
            let ids: Vec<String> = (0..outcomes.len())
                .map(|i| format!("us.vendor.model-{i}-v1:0"))
                .collect();
            let mock = Mock::new();
            for (id, o) in ids.iter().zip(&outcomes) {
                if let Some((c, after)) = *o {
                    mock.script(
                        id,
                        Behaviour::fail_with(move |m| make_error(m, CLASSES[c], after)),
                    );
                }
            }
            let layer = ModelFallbackLayer::new(Chain::of(ids.clone())).unwrap();
            let (ask, report) = Ask::reporting(&ids[0]);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let result = rt.block_on(layer.layer(mock.clone()).oneshot(ask));
            let want = expected(&ids, &outcomes, &Triggers::default());

            prop_assert_eq!(mock.called(), ids[..want.called].to_vec());
            let summary = report.summary();
            prop_assert_eq!(&summary.tried, &want.tried);
            match (result, want.result) {
                (Ok(served), Ok(i)) => {
                    prop_assert_eq!(&served, &ids[i]);
                    prop_assert_eq!(summary.served_by.as_deref(), Some(ids[i].as_str()));
                    prop_assert_eq!(summary.degraded(), i > 0);
                }
                (Err(e), Err(i)) => {
                    prop_assert_eq!(origin(&e), ids[i].clone());
                    prop_assert_eq!(&e.context().unwrap().tried, &want.tried);
                    prop_assert_eq!(summary.served_by, None);
                }
                (got, want) => {
                    return Err(TestCaseError::fail(format!(
                        "got {:?}, want {want:?}",
                        got.map_err(|e| e.class())
                    )));
                }
            }
            Ok(())
        })
        .unwrap();
}
