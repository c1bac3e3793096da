//! The fault matrix, bounded: every fault kind of the emulator through the
//! whole preset stack (fallback, retry, breaker, budget, classify, metrics)
//! and the real `aws-sdk-bedrockruntime` client, against the in-process
//! emulator on 127.0.0.1, in three configurations: unary Converse, Converse
//! with a fallback chain (the fault on the primary only), and
//! ConverseStream. In every cell a seeded third of the calls is cancelled
//! (its future or its stream dropped) at a random point.
//!
//! For each cell: every call ends (a response or a classified error) well
//! within a bound, nothing panics (no call, and no task of the emulator or
//! the client), the budget holds no reservation and no
//! waiter afterwards, and both the emulator's in-flight count and the
//! client's connection slots come back to zero.
//!
//! Time is compressed (250 ms quota windows, the stack's constants scaled
//! to match), so the whole matrix takes seconds. The server is real, so the
//! only waits are bounded polls for the server and the client to notice
//! that a dropped call's connection is gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tower::ServiceExt;
use tower_bedrock::budget::Budget;
use tower_bedrock::core::{Classified, ErrorClass};
use tower_bedrock::fallback::Chain;
use tower_bedrock::sdk::{
    BedrockClientBuilder, BedrockService, ConnectionCapLayer, ConverseRequest,
    ConverseStreamRequest,
};
use tower_bedrock_emulator::{
    Emulator, EmulatorConfig, EmulatorHandle, FaultKind, FaultRule, Latency,
};

const PRIMARY: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
const FALLBACK: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const WINDOW: Duration = Duration::from_millis(250);
/// Calls per cell, all at once.
const CALLS: usize = 10;
/// Client connection slots (below the number of calls: some wait).
const SLOTS: usize = 6;
/// No call may take longer than this (the stack's own deadline, scaled to
/// the window, is 0.75 s; the budget's longest wait is 1 s).
const CALL_BOUND: Duration = Duration::from_secs(5);
/// How long the server and the client may take to notice dropped
/// connections.
const SETTLE_BOUND: Duration = Duration::from_secs(3);

const KINDS: [FaultKind; 9] = [
    FaultKind::Overloaded,
    FaultKind::TooManyRequests,
    FaultKind::TooManyTokens,
    FaultKind::Unavailable,
    FaultKind::InternalError,
    FaultKind::ModelTimeout,
    FaultKind::ModelNotReady,
    FaultKind::Reset,
    FaultKind::Truncate,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unary,
    Fallback,
    Stream,
}

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Answered,
    Failed(ErrorClass),
    Cancelled,
}

fn message(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .unwrap()
}

fn converse(model: &str, i: usize) -> ConverseRequest {
    ConverseInput::builder()
        .model_id(model)
        .messages(message(&format!("Call {i}: tell me about quotas.")))
        .inference_config(InferenceConfiguration::builder().max_tokens(64).build())
        .build()
        .unwrap()
        .into()
}

fn converse_stream(model: &str, i: usize) -> ConverseStreamRequest {
    ConverseStreamInput::builder()
        .model_id(model)
        .messages(message(&format!("Call {i}: stream about quotas.")))
        .inference_config(InferenceConfiguration::builder().max_tokens(64).build())
        .build()
        .unwrap()
        .into()
}

/// Waits (bounded) until `done` holds; false if it never did.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > SETTLE_BOUND {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Runs `fut` unless `cancel_after` is set and elapses first (the future
/// is then dropped wherever it was).
async fn maybe_cancel(
    cancel_after: Option<Duration>,
    fut: impl Future<Output = Result<(), ErrorClass>>,
) -> End {
    let r = match cancel_after {
        Some(d) => match timeout(d, fut).await {
            Ok(r) => r,
            Err(_) => return End::Cancelled,
        },
        None => fut.await,
    };
    match r {
        Ok(()) => End::Answered,
        Err(class) => End::Failed(class),
    }
}

struct Cell {
    kind: FaultKind,
    mode: Mode,
    seed: u64,
}

/// Runs one cell; returns how each call ended, after checking every
/// invariant.
async fn run_cell(cell: &Cell) -> Vec<End> {
    let rule = FaultRule::new(cell.kind);
    let rule = match cell.mode {
        Mode::Fallback => rule.model(PRIMARY),
        _ => rule.rate(0.5),
    };
    let emulator: EmulatorHandle = Emulator::start(
        EmulatorConfig::builder()
            .seed(cell.seed)
            .window(WINDOW)
            .output_tokens(16)
            .latency(Latency {
                time_to_first_token_ms: 10,
                per_token_ms: 1.0,
                scale: 1.0,
            })
            .fault(rule)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let cap = ConnectionCapLayer::new(SLOTS).unwrap();
    let client = BedrockClientBuilder::new()
        .region("us-east-1")
        .endpoint_url(emulator.endpoint_url())
        .static_credentials("AKIDFAULTMATRIX", "not-a-secret")
        .connection_cap(cap.clone())
        .build()
        .await
        .unwrap();
    let bedrock = BedrockService::new(client);
    // Room for about half the calls at once: the rest wait in the budget.
    let budget = Budget::builder()
        .window(WINDOW)
        .tokens_per_window(5 * 100)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let stack = || {
        tower_bedrock::stack()
            .window(WINDOW)
            .seed(cell.seed)
            .token_budget(&budget)
    };

    let mut rng = fastrand::Rng::with_seed(cell.seed);
    let mut calls = JoinSet::new();
    match cell.mode {
        Mode::Unary | Mode::Fallback => {
            let svc = if cell.mode == Mode::Fallback {
                stack()
                    .fallback_chain(Chain::new().then(PRIMARY).then(FALLBACK))
                    .service::<_, ConverseRequest, _>(bedrock)
                    .unwrap()
            } else {
                stack().service::<_, ConverseRequest, _>(bedrock).unwrap()
            };
            for i in 0..CALLS {
                let cancel = (rng.u8(..3) == 0).then(|| Duration::from_millis(rng.u64(0..60)));
                let svc = svc.clone();
                calls.spawn(maybe_cancel(cancel, async move {
                    svc.oneshot(converse(PRIMARY, i))
                        .await
                        .map(drop)
                        .map_err(|e| e.classification().class)
                }));
            }
        }
        Mode::Stream => {
            let svc = stack()
                .service::<_, ConverseStreamRequest, _>(bedrock)
                .unwrap();
            for i in 0..CALLS {
                let cancel = (rng.u8(..3) == 0).then(|| Duration::from_millis(rng.u64(0..60)));
                let svc = svc.clone();
                calls.spawn(maybe_cancel(cancel, async move {
                    let mut answer = svc
                        .oneshot(converse_stream(PRIMARY, i))
                        .await
                        .map_err(|e| e.classification().class)?;
                    // Read to the end; a stream has at most a few dozen
                    // events, and each wait is bounded by CALL_BOUND.
                    while answer
                        .stream
                        .recv()
                        .await
                        .map_err(|e| e.classification().class)?
                        .is_some()
                    {}
                    Ok(())
                }));
            }
        }
    }

    let mut ends = Vec::with_capacity(CALLS);
    let deadline = Instant::now() + CALL_BOUND;
    while let Some(joined) = tokio::time::timeout_at(deadline, calls.join_next())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{:?} {:?}: {} calls still running after {CALL_BOUND:?}",
                cell.kind,
                cell.mode,
                CALLS - ends.len()
            )
        })
    {
        let end = joined.unwrap_or_else(|e| panic!("{:?} {:?}: {e}", cell.kind, cell.mode));
        if let End::Failed(class) = end {
            assert_ne!(
                class,
                ErrorClass::Unknown,
                "{:?} {:?}",
                cell.kind,
                cell.mode
            );
        }
        ends.push(end);
    }
    assert_eq!(ends.len(), CALLS);

    // The budget holds nothing for anyone.
    for snap in budget.snapshots() {
        assert_eq!(
            (snap.reserved_tokens, snap.reserved_requests, snap.waiting),
            (0, 0, 0),
            "{:?} {:?}: leaked reservation {snap:?}",
            cell.kind,
            cell.mode
        );
    }
    // The client's connection slots and the server's requests in flight
    // come back to zero once the dropped connections are noticed.
    let host = emulator.addr().to_string();
    assert!(
        eventually(|| cap.in_use(&host) == 0).await,
        "{:?} {:?}: {} connection slots still held",
        cell.kind,
        cell.mode,
        cap.in_use(&host)
    );
    assert!(
        eventually(|| emulator.counters().in_flight == 0).await,
        "{:?} {:?}: the emulator still serves {:?}",
        cell.kind,
        cell.mode,
        emulator.counters()
    );
    // The cell was not vacuous: the fault happened.
    let c = emulator.counters();
    let injected = match cell.kind {
        FaultKind::Overloaded => c.throttled_overloaded,
        FaultKind::TooManyRequests | FaultKind::TooManyTokens | FaultKind::ModelNotReady => {
            c.throttled_fault
        }
        FaultKind::Unavailable => c.unavailable,
        FaultKind::InternalError => c.internal_errors,
        FaultKind::ModelTimeout => c.model_timeouts,
        FaultKind::Reset => c.resets,
        FaultKind::Truncate => c.truncated,
        other => unreachable!("not in the matrix: {other:?}"),
    };
    assert!(
        injected > 0,
        "{:?} {:?}: never injected: {c:?}",
        cell.kind,
        cell.mode
    );
    emulator.shutdown().await;
    ends
}

/// Panics anywhere in the process (the emulator's and the client's
/// connection tasks included, whose panics no caller would see).
static PANICS: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_ends_and_nothing_leaks_under_every_fault() {
    // The only test of this binary: the hook is not shared with others.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info)
    }));
    let started = Instant::now();
    let mut seed = 0;
    let mut totals = [0usize; 3];
    for mode in [Mode::Unary, Mode::Fallback, Mode::Stream] {
        for kind in KINDS {
            seed += 1;
            let cell = Cell { kind, mode, seed };
            let ends = run_cell(&cell).await;
            assert_eq!(
                PANICS.load(Ordering::SeqCst),
                0,
                "{mode:?} {kind:?}: a task panicked"
            );
            let count = |f: fn(&End) -> bool| ends.iter().filter(|e| f(e)).count();
            let (ok, failed, cancelled) = (
                count(|e| matches!(e, End::Answered)),
                count(|e| matches!(e, End::Failed(_))),
                count(|e| matches!(e, End::Cancelled)),
            );
            eprintln!(
                "{mode:?} {kind:?}: {ok} answered, {failed} failed, {cancelled} cancelled; {:?}",
                ends.iter()
                    .filter_map(|e| match e {
                        End::Failed(c) => Some(*c),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            );
            totals[0] += ok;
            totals[1] += failed;
            totals[2] += cancelled;
        }
    }
    eprintln!(
        "matrix: {} answered, {} failed, {} cancelled in {:?}",
        totals[0],
        totals[1],
        totals[2],
        started.elapsed()
    );
    // The matrix exercised all three outcomes.
    assert!(totals.iter().all(|n| *n > 0), "{totals:?}");
}
