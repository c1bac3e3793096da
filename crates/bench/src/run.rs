//! Running a scenario through one strategy against a fresh in-process
//! emulator, and what the run measured.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{BoxError, Service, ServiceExt};
use tower_bedrock::core::CallReport;
use tower_bedrock::sdk::{ConverseRequest, ConverseStreamRequest, ConverseStreamResponse};
use tower_bedrock_emulator::{CounterSnapshot, Emulator};

use crate::metrics;
use crate::spec::Scenario;
use crate::strategy::{self, AppService, ClientOptions, Strategy};

/// One application's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct AppResult {
    /// Name.
    pub name: String,
    /// Calls made.
    pub offered: u64,
    /// Calls answered.
    pub answered: u64,
    /// Its max-min fair share of what the quota could answer.
    pub fair_share: f64,
}

/// One point of the time line (one quarter of a scenario minute).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// Scenario minutes since the start.
    pub minute: f64,
    /// Calls answered during the interval.
    pub answered: u64,
    /// 429s the server sent during the interval.
    pub throttled: u64,
    /// 503s the server sent during the interval.
    pub unavailable: u64,
    /// Exceptions the server sent inside event streams during the
    /// interval.
    pub in_stream: u64,
}

/// Samples per scenario minute on the time line.
pub const SAMPLES_PER_MINUTE: usize = 4;

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Strategy.
    pub strategy: Strategy,
    /// Calls made.
    pub calls: u64,
    /// Calls answered.
    pub answered: u64,
    /// Calls the quota could have answered (see [`metrics::attainable`]).
    pub attainable: f64,
    /// `answered / attainable`.
    pub goodput: f64,
    /// Calls failed after all retries or not finished by the drain deadline.
    pub lost: u64,
    /// Lost calls by reason (error class/kind, or `unfinished`).
    pub lost_by_reason: BTreeMap<String, u64>,
    /// 429s the server sent.
    pub server_429: u64,
    /// 503s the server sent.
    pub server_503: u64,
    /// Requests the server received.
    pub server_requests: u64,
    /// Requests the server received per answered call.
    pub attempts_per_success: f64,
    /// Answers served by the fallback model.
    pub fallbacks: u64,
    /// Exceptions the server sent inside event streams (streaming
    /// scenarios).
    pub stream_exceptions: u64,
    /// Time to the first event of answered streams, percentiles in
    /// scenario seconds (`None` unless the scenario streams).
    pub ttfe_p50_s: Option<f64>,
    /// 95th percentile of the time to the first event.
    pub ttfe_p95_s: Option<f64>,
    /// 99th percentile of the time to the first event.
    pub ttfe_p99_s: Option<f64>,
    /// Latency percentiles of answered calls, in scenario seconds (a
    /// stream's: until its last event).
    pub p50_s: Option<f64>,
    /// 95th percentile.
    pub p95_s: Option<f64>,
    /// 99th percentile.
    pub p99_s: Option<f64>,
    /// Jain's fairness index of the apps' answered calls over their
    /// max-min fair shares.
    pub jain: f64,
    /// The worst-served app's answered calls over its max-min fair share
    /// (1: every app got at least its share).
    pub worst_share: f64,
    /// Per app.
    pub apps: Vec<AppResult>,
    /// The time line.
    pub timeline: Vec<Sample>,
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
    /// How the strategy was set up, when it matters.
    pub note: Option<String>,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// One call of the schedule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planned {
    /// Arrival, in scenario minutes since the start.
    pub(crate) at_min: f64,
    /// Index of the app making it.
    pub(crate) app: usize,
}

/// Every call of the scenario, in time order: each app's calls of a minute
/// spread over it with seeded jitter.
pub(crate) fn schedule(s: &Scenario) -> Vec<Planned> {
    let mut rng = fastrand::Rng::with_seed(s.seed);
    let mut plan = Vec::new();
    for minute in 0..s.minutes {
        for (i, a) in s.apps.iter().enumerate() {
            let n = s.rate(a, minute).round() as u64;
            for j in 0..n {
                plan.push(Planned {
                    at_min: minute as f64 + (j as f64 + rng.f64()) / n as f64,
                    app: i,
                });
            }
        }
    }
    plan.sort_by(|a, b| a.at_min.total_cmp(&b.at_min));
    plan
}

/// A call's request, Converse or ConverseStream.
enum Request {
    Unary(ConverseRequest),
    Stream(ConverseStreamRequest),
}

fn request(model: &str, input_tokens: u64, max_tokens: u64, n: u64, streaming: bool) -> Request {
    // Text of the right size (the emulator counts 4 chars a token); the
    // content does not matter.
    let chars = (input_tokens * 4) as usize;
    let mut text = format!("request {n}: ");
    while text.len() < chars {
        text.push_str("lorem ipsum dolor sit amet ");
    }
    text.truncate(chars.max(1));
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text))
        .build()
        .expect("role and content are set");
    let config = InferenceConfiguration::builder()
        .max_tokens(i32::try_from(max_tokens).unwrap_or(i32::MAX))
        .build();
    if streaming {
        let input = ConverseStreamInput::builder()
            .model_id(model)
            .messages(message)
            .inference_config(config)
            .build()
            .expect("valid input");
        Request::Stream(ConverseStreamRequest::new(input))
    } else {
        let input = ConverseInput::builder()
            .model_id(model)
            .messages(message)
            .inference_config(config)
            .build()
            .expect("valid input");
        Request::Unary(ConverseRequest::new(input))
    }
}

struct Outcome {
    app: usize,
    done_at: Duration,
    latency: Duration,
    /// Time to the first event of a stream.
    first_event: Option<Duration>,
    result: Result<(), String>,
    fallback: bool,
}

/// One call through `svc` as `strategy` makes it: the seed's loop for the
/// naive strategy, a call report for the stack (fallbacks), a plain call
/// otherwise.
async fn through<Req: Clone + Send + 'static, Res: Send + 'static>(
    strategy: Strategy,
    svc: BoxCloneService<Req, Res, BoxError>,
    req: Req,
    k: f64,
    seed: u64,
) -> Result<Res, BoxError> {
    match strategy {
        Strategy::Naive => strategy::naive_call(svc, req, k, seed).await,
        _ => {
            let mut svc = svc;
            match svc.ready().await {
                Ok(s) => s.call(req).await,
                Err(e) => Err(e),
            }
        }
    }
}

/// What one call came to: the result (a failure's label), whether a
/// fallback model answered, and a stream's time to its first event.
struct Done {
    result: Result<(), String>,
    fallback: bool,
    first_event: Option<Duration>,
}

async fn one_call(strategy: Strategy, svc: AppService, req: Request, k: f64, seed: u64) -> Done {
    let report = CallReport::new();
    match (svc, req) {
        (AppService::Unary(svc), Request::Unary(req)) => {
            let req = if strategy == Strategy::Stack {
                req.with_report(report.clone())
            } else {
                req
            };
            let r = through(strategy, svc, req, k, seed).await;
            Done {
                result: r.map(|_| ()).map_err(|e| strategy::failure_label(&e)),
                fallback: report.summary().degraded(),
                first_event: None,
            }
        }
        (AppService::Stream(svc), Request::Stream(req)) => {
            let req = if strategy == Strategy::Stack {
                req.with_report(report.clone())
            } else {
                req
            };
            let t0 = Instant::now();
            let r = through(strategy, svc, req, k, seed).await;
            // The response comes once the first event has arrived.
            let first_event = t0.elapsed();
            let result = match r {
                Ok(stream) => read_to_end(stream).await,
                Err(e) => Err(strategy::failure_label(&e)),
            };
            Done {
                result,
                fallback: report.summary().degraded(),
                first_event: Some(first_event),
            }
        }
        _ => Done {
            result: Err("harness: request and service kinds differ".into()),
            fallback: false,
            first_event: None,
        },
    }
}

/// Reads a stream to its end; a failure after the first event is labelled
/// `in-stream/<class>/<kind>`.
async fn read_to_end(mut stream: ConverseStreamResponse) -> Result<(), String> {
    loop {
        match stream.recv().await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("in-stream/{}", strategy::class_label(&e.class()))),
        }
    }
}

fn throttles(c: &CounterSnapshot) -> u64 {
    c.throttled_tokens
        + c.throttled_requests
        + c.throttled_day
        + c.throttled_overloaded
        + c.throttled_fault
}

fn unavailable(c: &CounterSnapshot) -> u64 {
    c.unavailable + c.connection_cap
}

/// Time from now to the next multiple of `window` on the system clock.
fn until_next_window(window: Duration) -> Duration {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let w = window.as_nanos().max(1);
    let phase = since.as_nanos() % w;
    Duration::from_nanos(u64::try_from(w - phase).unwrap_or(0))
}

/// Runs `scenario` once through `strategy` against a fresh emulator.
pub async fn run(
    scenario: &Scenario,
    strategy: Strategy,
    opts: &ClientOptions,
) -> Result<RunResult, BoxError> {
    scenario.validate()?;
    let emulator = Arc::new(Emulator::start(scenario.emulator_config()?).await?);
    let opts = ClientOptions {
        run_id: RUNS.fetch_add(1, Ordering::Relaxed) ^ (opts.run_id << 20),
        ..opts.clone()
    };
    // The clients of every process; app i's service.
    let mut services: Vec<Option<AppService>> = vec![None; scenario.apps.len()];
    let mut notes = Vec::new();
    for p in 0..scenario.processes {
        let clients =
            strategy::build(scenario, strategy, p, &emulator.endpoint_url(), &opts).await?;
        notes.extend(clients.note);
        let idx = scenario
            .apps
            .iter()
            .enumerate()
            .filter(|(_, a)| a.process == p)
            .map(|(i, _)| i);
        for (i, svc) in idx.zip(clients.services) {
            services[i] = Some(svc);
        }
    }
    let services: Vec<AppService> = services
        .into_iter()
        .map(|s| s.expect("every app has a process"))
        .collect();
    notes.dedup();

    let k = scenario.time_scale();
    let window = scenario.window();
    let plan = schedule(scenario);
    let primary = scenario.models[0].id.clone();
    // Start on a quota window's boundary: the emulator's windows (like
    // Bedrock's minutes) are aligned on the wall clock, so scenario minute
    // m (its traffic, its faults) is the server's window m, as in the ideal
    // schedule.
    tokio::time::sleep(until_next_window(window)).await;
    let start = Instant::now();
    let total_minutes = scenario.minutes + scenario.drain_minutes;

    // The sampler: server counters every quarter minute.
    let samples: Arc<std::sync::Mutex<Vec<CounterSnapshot>>> = Arc::default();
    let sampler = {
        let emulator = emulator.clone();
        let samples = samples.clone();
        tokio::spawn(async move {
            let step = window / SAMPLES_PER_MINUTE as u32;
            let mut next = start;
            for _ in 0..(total_minutes * SAMPLES_PER_MINUTE) {
                next += step;
                tokio::time::sleep_until(next).await;
                let c = emulator.counters();
                samples.lock().expect("not poisoned").push(c);
            }
        })
    };

    let mut tasks = JoinSet::new();
    let mut minute_faults = usize::MAX;
    for (n, p) in plan.iter().enumerate() {
        let minute = p.at_min.floor() as usize;
        if minute != minute_faults {
            // Faults change at minute boundaries.
            for m in (if minute_faults == usize::MAX {
                0
            } else {
                minute_faults + 1
            })..=minute
            {
                tokio::time::sleep_until(start + window * m as u32).await;
                emulator.set_faults(scenario.faults_in(m))?;
            }
            minute_faults = minute;
        }
        tokio::time::sleep_until(start + Duration::from_secs_f64(p.at_min * window.as_secs_f64()))
            .await;
        let app = &scenario.apps[p.app];
        let req = request(
            &primary,
            app.input_tokens,
            app.max_tokens,
            n as u64,
            scenario.streaming,
        );
        let svc = services[p.app].clone();
        let app_idx = p.app;
        let seed = scenario.seed.wrapping_add(n as u64);
        tasks.spawn(async move {
            let t0 = Instant::now();
            let done = one_call(strategy, svc, req, k, seed).await;
            Outcome {
                app: app_idx,
                done_at: start.elapsed(),
                latency: t0.elapsed(),
                first_event: done.first_event,
                result: done.result,
                fallback: done.fallback,
            }
        });
    }
    // Faults of the minutes after the last call.
    for m in (minute_faults.wrapping_add(1))..scenario.minutes {
        tokio::time::sleep_until(start + window * m as u32).await;
        emulator.set_faults(scenario.faults_in(m))?;
    }
    tokio::time::sleep_until(start + window * scenario.minutes as u32).await;
    emulator.clear_faults();

    let deadline = start + window * total_minutes as u32;
    let mut outcomes = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(joined)) => outcomes.push(joined?),
            Ok(None) => break,
            Err(_) => break,
        }
    }
    let unfinished = tasks.len() as u64;
    tasks.shutdown().await;
    let elapsed = start.elapsed();
    sampler.abort();
    let _ = sampler.await;
    let counters = emulator.counters();
    if let Ok(e) = Arc::try_unwrap(emulator) {
        e.shutdown().await;
    }
    let samples = std::mem::take(&mut *samples.lock().expect("not poisoned"));
    let mut result = summarize(
        scenario, strategy, &outcomes, unfinished, &counters, &samples, elapsed,
    );
    result.note = if notes.is_empty() {
        None
    } else {
        Some(notes.join("; "))
    };
    Ok(result)
}

fn summarize(
    scenario: &Scenario,
    strategy: Strategy,
    outcomes: &[Outcome],
    unfinished: u64,
    counters: &CounterSnapshot,
    samples: &[CounterSnapshot],
    elapsed: Duration,
) -> RunResult {
    let k = scenario.time_scale();
    let mut lost_by_reason = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut first_events = Vec::new();
    let mut per_app = vec![0u64; scenario.apps.len()];
    let mut offered = vec![0u64; scenario.apps.len()];
    let mut fallbacks = 0;
    for o in outcomes {
        offered[o.app] += 1;
        match &o.result {
            Ok(()) => {
                per_app[o.app] += 1;
                latencies.push(o.latency.as_secs_f64() / k);
                if let Some(t) = o.first_event {
                    first_events.push(t.as_secs_f64() / k);
                }
                fallbacks += u64::from(o.fallback);
            }
            Err(label) => *lost_by_reason.entry(label.clone()).or_insert(0) += 1,
        }
    }
    if unfinished > 0 {
        lost_by_reason.insert("unfinished".into(), unfinished);
    }
    // Offered per app from the plan (unfinished calls included).
    let plan_offered = metrics::offered_per_app(scenario);
    let attainable = metrics::attainable(scenario);
    let fair = metrics::fair_shares(&plan_offered, attainable);
    let answered: u64 = per_app.iter().sum();
    let calls: u64 = plan_offered.iter().sum();
    latencies.sort_by(f64::total_cmp);
    first_events.sort_by(f64::total_cmp);
    let apps: Vec<AppResult> = scenario
        .apps
        .iter()
        .enumerate()
        .map(|(i, a)| AppResult {
            name: a.name.clone(),
            offered: plan_offered[i],
            answered: per_app[i],
            fair_share: fair[i],
        })
        .collect();
    let normalized: Vec<f64> = apps
        .iter()
        .map(|a| a.answered as f64 / a.fair_share.max(1e-9))
        .collect();
    let jain = metrics::jain(&normalized);
    let worst_share = normalized
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(1.0);
    // Answers per quarter minute, by completion time.
    let bins = (scenario.minutes + scenario.drain_minutes) * SAMPLES_PER_MINUTE;
    let mut timeline: Vec<Sample> = (0..bins)
        .map(|i| Sample {
            minute: (i + 1) as f64 / SAMPLES_PER_MINUTE as f64,
            ..Sample::default()
        })
        .collect();
    for o in outcomes.iter().filter(|o| o.result.is_ok()) {
        let b = ((o.done_at.as_secs_f64() / (k * 60.0)) * SAMPLES_PER_MINUTE as f64) as usize;
        if let Some(s) = timeline.get_mut(b) {
            s.answered += 1;
        }
    }
    let mut prev = CounterSnapshot::default();
    for (s, c) in timeline.iter_mut().zip(samples) {
        s.throttled = throttles(c) - throttles(&prev);
        s.unavailable = unavailable(c) - unavailable(&prev);
        s.in_stream = c.stream_exceptions - prev.stream_exceptions;
        prev = *c;
    }
    RunResult {
        strategy,
        calls,
        answered,
        attainable,
        goodput: answered as f64 / attainable.max(1.0),
        lost: calls - answered,
        lost_by_reason,
        server_429: throttles(counters),
        server_503: unavailable(counters),
        server_requests: counters.requests,
        attempts_per_success: counters.requests as f64 / answered.max(1) as f64,
        fallbacks,
        stream_exceptions: counters.stream_exceptions,
        ttfe_p50_s: metrics::percentile(&first_events, 50.0),
        ttfe_p95_s: metrics::percentile(&first_events, 95.0),
        ttfe_p99_s: metrics::percentile(&first_events, 99.0),
        p50_s: metrics::percentile(&latencies, 50.0),
        p95_s: metrics::percentile(&latencies, 95.0),
        p99_s: metrics::percentile(&latencies, 99.0),
        jain,
        worst_share,
        apps,
        timeline,
        elapsed_s: elapsed.as_secs_f64(),
        note: None,
    }
}
