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

/// The crate documentation's rules, applied to the whole list of outcomes
/// at once (not step by step as the layer runs):
///
/// - the chain runs until the first target that answers or fails with a
///   class that is not a trigger; every target before it failed with a
///   trigger class and is listed as tried;
/// - a non-trigger failure is returned as is;
/// - when every target failed with a trigger class, the error returned is
///   the first one from upstream (not a local rejection); with none, the
///   local rejection with the shortest `retry_after` (a rejection without
///   one counts as the longest), the first on ties.
fn expected(ids: &[String], outcomes: &[Outcome], triggers: &Triggers) -> Expected {
    let class_of = |i: usize| outcomes[i].map(|(c, _)| CLASSES[c]);
    let ends_chain = |i: usize| class_of(i).is_none_or(|c| !triggers.contains(&c));
    let last = (0..outcomes.len())
        .find(|&i| ends_chain(i))
        .unwrap_or(outcomes.len() - 1);
    let failed: Vec<usize> = (0..=last).filter(|&i| class_of(i).is_some()).collect();
    let tried = failed
        .iter()
        .map(|&i| Tried {
            target: ids[i].clone(),
            class: class_of(i).unwrap(),
        })
        .collect();
    let result = match class_of(last) {
        None => Ok(last),
        Some(c) if !triggers.contains(&c) => Err(last),
        Some(_) => Err(failed
            .iter()
            .copied()
            .find(|&i| !class_of(i).unwrap().is_local())
            .unwrap_or_else(|| {
                *failed
                    .iter()
                    .min_by_key(|&&i| (outcomes[i].unwrap().1.unwrap_or(u64::MAX), i))
                    .unwrap()
            })),
    };
    Expected {
        called: last + 1,
        result,
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
