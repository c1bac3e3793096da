//! The quickstart scenario, shared by `examples/quickstart.rs` and the
//! end-to-end test `tests/quickstart_scenario.rs` (which runs it at a
//! smaller scale).
//!
//! Three applications share one model's quota (150 requests and 200,000
//! tokens per minute) with peaks of 75, 50 and 50 requests per minute; one
//! of them sends a burst of large documents; the primary model is
//! overloaded for two minutes and answers a few 503s all along; a smaller
//! fallback model has a quota of its own. Time is compressed: one scenario
//! minute lasts `Scenario::window` of wall time, and the emulator's quota
//! window, its latencies and every wait of both clients are scaled alike.
//!
//! The same traffic is sent twice, each time to a fresh emulator: once
//! through the seed's naive retry (exponential backoff, base 1 s, cap 60 s,
//! 5 attempts, 10 % jitter, throttles only) and once through the
//! tower-bedrock stack.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};
use tower_bedrock::breaker::CircuitBreakHandle;
use tower_bedrock::budget::{Budget, Limits};
use tower_bedrock::classify::ThrottleClassifyLayer;
use tower_bedrock::core::{CallReport, Classified, ClassifiedError};
use tower_bedrock::fallback::{Chain, Target};
use tower_bedrock::sdk::{BedrockClientBuilder, BedrockService, ConverseRequest, ConverseResponse};
use tower_bedrock_emulator::{
    CounterSnapshot, Emulator, EmulatorConfig, EmulatorHandle, FaultKind, FaultRule, Latency, Quota,
};
use tower_layer::Layer;

/// The primary model (Claude 4 family: output tokens count 5x against TPM).
// Claude 4 through the US inference profile: Bedrock refuses its bare id on demand.
pub const PRIMARY: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
/// The fallback model.
pub const FALLBACK: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
/// The three applications.
pub const APPS: [&str; 3] = ["app-a", "app-b", "app-c"];

/// Requests per minute of each application, minute by minute: peaks of 75,
/// 50 and 50 (175 together) against a quota of 150.
const PROFILE: [[u32; 10]; 3] = [
    [40, 55, 75, 75, 75, 75, 75, 60, 45, 30],
    [30, 40, 50, 50, 50, 50, 50, 40, 30, 20],
    [20, 35, 50, 50, 50, 50, 50, 40, 30, 20],
];
/// The primary model's quotas, per minute.
const RPM_QUOTA: f64 = 150.0;
const TPM_QUOTA: f64 = 200_000.0;
/// The fallback model's quotas, per minute.
const FALLBACK_RPM: f64 = 200.0;
const FALLBACK_TPM: f64 = 300_000.0;
/// The large-document burst of app-a: minutes 3 and 4, documents of about
/// 24,000 tokens.
const DOC_MINUTES: std::ops::Range<usize> = 3..5;
const DOCS_PER_MINUTE: f64 = 6.0;
const DOC_CHARS: usize = 96_000;
/// The primary model is overloaded during minutes 6 and 7.
const OVERLOAD_MINUTES: std::ops::Range<usize> = 6..8;
/// Share of primary calls answered 503 all along.
const UNAVAILABLE_RATE: f64 = 0.02;
/// A normal prompt: about 300 tokens, answers capped at 200.
const PROMPT_CHARS: usize = 1_200;
const MAX_TOKENS: i32 = 200;
const DOC_MAX_TOKENS: i32 = 400;
/// Tokens of every answer from the emulator.
const OUTPUT_TOKENS: u64 = 60;

/// How the scenario is run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Wall time of one scenario minute (the quota window).
    pub window: Duration,
    /// Scenario minutes (at most 10).
    pub minutes: usize,
    /// Multiplier of the traffic and of every quota.
    pub load: f64,
    /// Seed of the emulator, the traffic jitter and the stack.
    pub seed: u64,
    /// Print a progress line every scenario minute.
    pub progress: bool,
}

impl Scenario {
    /// The quickstart: 10 scenario minutes of 2 s each, full load.
    pub fn quickstart() -> Self {
        Scenario {
            window: Duration::from_secs(2),
            minutes: 10,
            load: 1.0,
            seed: 42,
            progress: true,
        }
    }

    /// A smaller run for tests: 1 s minutes, 40 % of the traffic and
    /// quotas.
    pub fn small() -> Self {
        Scenario {
            window: Duration::from_secs(1),
            minutes: 10,
            load: 0.4,
            seed: 7,
            progress: false,
        }
    }

    /// Wall time per scenario second.
    fn k(&self) -> f64 {
        self.window.as_secs_f64() / 60.0
    }

    fn scaled(&self, per_minute: f64) -> u64 {
        (per_minute * self.load).round().max(1.0) as u64
    }

    /// Scenario seconds of a wall-time duration.
    pub fn scenario_secs(&self, wall: Duration) -> f64 {
        wall.as_secs_f64() / self.k()
    }

    fn emulator_config(&self) -> EmulatorConfig {
        EmulatorConfig::builder()
            .seed(self.seed)
            .window(self.window)
            .quota(
                PRIMARY,
                Quota::tokens(self.scaled(TPM_QUOTA)).with_rpm(self.scaled(RPM_QUOTA)),
            )
            .quota(
                FALLBACK,
                Quota::tokens(self.scaled(FALLBACK_TPM)).with_rpm(self.scaled(FALLBACK_RPM)),
            )
            .output_tokens(OUTPUT_TOKENS)
            .latency(Latency {
                time_to_first_token_ms: 400,
                per_token_ms: 15.0,
                scale: self.k(),
            })
            .fault(base_fault())
            .build()
            .expect("valid emulator configuration")
    }

    /// Every call of the scenario, in time order.
    fn schedule(&self) -> Vec<Planned> {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let mut plan = Vec::new();
        let minutes = self.minutes.min(10);
        for minute in 0..minutes {
            for (app, profile) in PROFILE.iter().enumerate() {
                let n = self.scaled(f64::from(profile[minute]));
                for i in 0..n {
                    let at = (minute as f64 + (i as f64 + rng.f64()) / n as f64) * 60.0;
                    plan.push(Planned {
                        at_secs: at,
                        app,
                        doc: false,
                    });
                }
            }
            if DOC_MINUTES.contains(&minute) {
                let n = (DOCS_PER_MINUTE * self.load).ceil() as u64;
                for i in 0..n {
                    let at = (minute as f64 + (i as f64 + rng.f64()) / n as f64) * 60.0;
                    plan.push(Planned {
                        at_secs: at,
                        app: 0,
                        doc: true,
                    });
                }
            }
        }
        plan.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
        plan
    }
}

fn base_fault() -> FaultRule {
    FaultRule::new(FaultKind::Unavailable)
        .rate(UNAVAILABLE_RATE)
        .model(PRIMARY)
}

#[derive(Debug, Clone, Copy)]
struct Planned {
    at_secs: f64,
    app: usize,
    doc: bool,
}

/// The two ways of calling Bedrock compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The seed's naive retry.
    Naive,
    /// The tower-bedrock preset stack.
    Stack,
}

impl Client {
    /// Column title.
    pub fn title(&self) -> &'static str {
        match self {
            Client::Naive => "naive retry",
            Client::Stack => "tower-bedrock",
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Calls made by the applications.
    pub calls: u64,
    /// Calls answered.
    pub successes: u64,
    /// Calls that failed, by error class label.
    pub failures: Vec<(String, u64)>,
    /// 429s answered by the emulator (every attempt).
    pub server_429: u64,
    /// 503s answered by the emulator (every attempt).
    pub server_503: u64,
    /// Requests the emulator received.
    pub server_requests: u64,
    /// Attempts beyond the first per target.
    pub retries: u64,
    /// Answers served by the fallback model.
    pub fallbacks: u64,
    /// Calls that waited for the token budget.
    pub budget_waits: u64,
    /// Latency of the successful calls (wall time).
    pub latencies: Vec<Duration>,
    /// Successful calls per application.
    pub per_app: [u64; 3],
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl RunResult {
    /// A latency percentile of the successful calls, in wall time.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v = self.latencies.clone();
        v.sort();
        let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        Some(v[idx.min(v.len() - 1)])
    }

    /// Each application's share of the successful calls, in percent.
    pub fn shares(&self) -> [f64; 3] {
        let total = self.per_app.iter().sum::<u64>().max(1) as f64;
        self.per_app.map(|n| n as f64 * 100.0 / total)
    }

    /// Calls that failed.
    pub fn failed(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }
}

type SdkError = aws_sdk_bedrockruntime::error::SdkError<
    aws_sdk_bedrockruntime::operation::converse::ConverseError,
    aws_smithy_runtime_api::client::orchestrator::HttpResponse,
>;
/// The stack's error type over the SDK.
pub type StackError = ClassifiedError<SdkError>;
/// A boxed Converse service.
pub type ChatService = BoxCloneService<ConverseRequest, ConverseResponse, StackError>;

#[derive(Default)]
struct Live {
    done: AtomicU64,
    ok: AtomicU64,
    fallbacks: AtomicU64,
    retries: AtomicU64,
}

/// Runs the scenario once with `client` against a fresh emulator.
pub async fn run(scenario: &Scenario, client: Client) -> RunResult {
    let emulator = Emulator::start(scenario.emulator_config())
        .await
        .expect("emulator starts");
    let sdk = BedrockClientBuilder::new()
        .region("us-east-1")
        .endpoint_url(emulator.endpoint_url())
        .static_credentials("AKIDEXAMPLE", "not-a-secret")
        .build()
        .await
        .expect("SDK client");
    let bedrock = BedrockService::new(sdk);
    let (watch, services) = match client {
        Client::Naive => {
            let svc: ChatService =
                BoxCloneService::new(ThrottleClassifyLayer::new().layer(bedrock));
            (Watch::default(), [svc.clone(), svc.clone(), svc])
        }
        Client::Stack => stack_services(scenario, bedrock),
    };
    let result = drive(scenario, client, &emulator, &watch, services).await;
    emulator.shutdown().await;
    result
}

/// The stack of each application: one shared fallback, retry and breaker;
/// one token budget with a tenant per application.
pub fn stack_services(scenario: &Scenario, bedrock: BedrockService) -> (Watch, [ChatService; 3]) {
    // Admit a little under the quotas: the budget's sliding window never
    // lets more than its limit through in any window.
    let limits = |tpm: f64, rpm: f64| {
        Limits::tokens((scenario.load * tpm * 0.95) as u64)
            .with_requests((scenario.load * rpm * 0.95) as u64)
    };
    let budget = Budget::builder()
        .window(scenario.window)
        .key_limits(PRIMARY, limits(TPM_QUOTA, RPM_QUOTA))
        .key_limits(FALLBACK, limits(FALLBACK_TPM, FALLBACK_RPM))
        .tokens_per_window(scenario.scaled(TPM_QUOTA))
        // Wait up to 10 s for room, then let the fallback model answer.
        .max_wait(scenario.window / 6)
        .build()
        .expect("valid budget");
    let layer = tower_bedrock::stack()
        .window(scenario.window)
        .seed(scenario.seed)
        .fallback_chain(
            Chain::new()
                .then(PRIMARY)
                .then(Target::new(FALLBACK).max_tokens(MAX_TOKENS as u64)),
        )
        .into_layer()
        .expect("valid stack");
    let services = APPS.map(|app| {
        let tenant = budget.tenant(app, 1).expect("tenant");
        layer
            .with_budget_layer(tenant.layer())
            .boxed::<_, ConverseRequest, _>(bedrock.clone())
    });
    let watch = Watch {
        budget: Some(budget),
        breakers: Some(layer.breaker_layer().handle()),
    };
    (watch, services)
}

/// What the progress lines show of the stack's state.
#[derive(Default)]
pub struct Watch {
    budget: Option<Budget>,
    breakers: Option<CircuitBreakHandle>,
}

impl Watch {
    fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(s) = self.budget.as_ref().and_then(|b| b.snapshot(PRIMARY)) {
            out.push_str(&format!(
                "  budget {:>3.0} % waiting {:>3}",
                s.utilization * 100.0,
                s.waiting
            ));
            if s.effective.tokens < s.limits.tokens {
                out.push_str(&format!(
                    " (limit lowered to {} tokens)",
                    s.effective.tokens
                ));
            }
        }
        if let Some(s) = self.breakers.as_ref().and_then(|h| h.get(PRIMARY)) {
            out.push_str(&format!("  breaker {}", s.state.label()));
        }
        out
    }
}

fn request(doc: bool, n: u64) -> ConverseRequest {
    // Text of the right size; the content itself does not matter.
    let chars = if doc { DOC_CHARS } else { PROMPT_CHARS };
    let mut text = format!("request {n}: ");
    while text.len() < chars {
        text.push_str("lorem ipsum dolor sit amet ");
    }
    text.truncate(chars);
    let input = ConverseInput::builder()
        .model_id(PRIMARY)
        .messages(
            Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text(text))
                .build()
                .expect("valid message"),
        )
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(if doc { DOC_MAX_TOKENS } else { MAX_TOKENS })
                .build(),
        )
        .build()
        .expect("valid input");
    ConverseRequest::new(input)
}

struct Outcome {
    app: usize,
    latency: Duration,
    result: Result<(), String>,
    retries: u64,
    fallback: bool,
    budget_wait: bool,
}

async fn naive_call(mut svc: ChatService, req: ConverseRequest, k: f64, seed: u64) -> Outcome {
    // The seed's client: exponential backoff from 1 s, capped at 60 s, at
    // most 5 attempts, +-10 % jitter, on throttles (429) only.
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut retries = 0;
    let start = Instant::now();
    let mut attempt = 0;
    let result = loop {
        let answer = match svc.ready().await {
            Ok(ready) => ready.call(req.clone()).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(_) => break Ok(()),
            Err(e) if e.classification().status == Some(429) && attempt < 4 => {
                let wait = (2f64.powi(attempt)).min(60.0) * (0.9 + 0.2 * rng.f64());
                tokio::time::sleep(Duration::from_secs_f64(wait * k)).await;
                attempt += 1;
                retries += 1;
            }
            Err(e) => break Err(e.class().label().to_owned()),
        }
    };
    Outcome {
        app: 0,
        latency: start.elapsed(),
        result,
        retries,
        fallback: false,
        budget_wait: false,
    }
}

async fn stack_call(mut svc: ChatService, req: ConverseRequest) -> Outcome {
    let report = CallReport::new();
    let req = req.with_report(report.clone());
    let start = Instant::now();
    let answer = match svc.ready().await {
        Ok(ready) => ready.call(req).await,
        Err(e) => Err(e),
    };
    let s = report.summary();
    let targets = s.tried.len() as u64 + u64::from(s.served_by.is_some());
    Outcome {
        app: 0,
        latency: start.elapsed(),
        result: answer.map(|_| ()).map_err(|e| {
            let c = e.class();
            format!("{}/{}", c.label(), c.kind_label())
        }),
        retries: u64::from(s.attempts).saturating_sub(targets.max(1)),
        fallback: s.degraded(),
        budget_wait: !s.budget_wait.is_zero(),
    }
}

async fn drive(
    scenario: &Scenario,
    client: Client,
    emulator: &EmulatorHandle,
    watch: &Watch,
    services: [ChatService; 3],
) -> RunResult {
    let plan = scenario.schedule();
    let k = scenario.k();
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut next_minute = 0usize;
    let mut overload_installed = false;
    for (n, p) in plan.iter().enumerate() {
        let at = start + Duration::from_secs_f64(p.at_secs * k);
        // Minute boundaries: progress and the overload stretch.
        while (next_minute as f64) * 60.0 <= p.at_secs {
            let boundary = start + scenario.window * next_minute as u32;
            tokio::time::sleep_until(boundary).await;
            if next_minute > 0 && scenario.progress {
                progress(scenario, client, next_minute, emulator, watch, &live);
            }
            if next_minute == OVERLOAD_MINUTES.start && !overload_installed {
                let stretch = scenario.window * OVERLOAD_MINUTES.len() as u32;
                emulator
                    .set_faults(vec![
                        FaultRule::new(FaultKind::Overloaded)
                            .model(PRIMARY)
                            .for_duration(stretch),
                        base_fault(),
                    ])
                    .expect("valid faults");
                overload_installed = true;
            }
            next_minute += 1;
        }
        tokio::time::sleep_until(at).await;
        let svc = services[p.app].clone();
        let req = request(p.doc, n as u64);
        let live = live.clone();
        let app = p.app;
        let seed = scenario.seed.wrapping_add(n as u64);
        tasks.spawn(async move {
            let mut out = match client {
                Client::Naive => naive_call(svc, req, k, seed).await,
                Client::Stack => stack_call(svc, req).await,
            };
            out.app = app;
            live.done.fetch_add(1, Ordering::Relaxed);
            live.retries.fetch_add(out.retries, Ordering::Relaxed);
            if out.result.is_ok() {
                live.ok.fetch_add(1, Ordering::Relaxed);
            }
            if out.fallback {
                live.fallbacks.fetch_add(1, Ordering::Relaxed);
            }
            out
        });
    }
    // The last minute, then the calls still retrying or waiting.
    let end = start + scenario.window * scenario.minutes.min(10) as u32;
    tokio::time::sleep_until(end).await;
    if scenario.progress {
        progress(
            scenario,
            client,
            scenario.minutes.min(10),
            emulator,
            watch,
            &live,
        );
    }
    let mut result = RunResult {
        calls: plan.len() as u64,
        ..RunResult::default()
    };
    let mut failures: std::collections::BTreeMap<String, u64> = Default::default();
    while let Some(joined) = tasks.join_next().await {
        let out = joined.expect("call task");
        result.retries += out.retries;
        result.fallbacks += u64::from(out.fallback);
        result.budget_waits += u64::from(out.budget_wait);
        match out.result {
            Ok(()) => {
                result.successes += 1;
                result.per_app[out.app] += 1;
                result.latencies.push(out.latency);
            }
            Err(class) => *failures.entry(class).or_default() += 1,
        }
    }
    result.elapsed = start.elapsed();
    result.failures = failures.into_iter().collect();
    let c = emulator.counters();
    result.server_429 = throttles(&c);
    result.server_503 = c.unavailable + c.connection_cap;
    result.server_requests = c.requests;
    result
}

fn throttles(c: &CounterSnapshot) -> u64 {
    c.throttled_tokens
        + c.throttled_requests
        + c.throttled_day
        + c.throttled_overloaded
        + c.throttled_fault
}

fn progress(
    scenario: &Scenario,
    client: Client,
    minute: usize,
    emulator: &EmulatorHandle,
    watch: &Watch,
    live: &Live,
) {
    let c = emulator.counters();
    let note = if OVERLOAD_MINUTES.contains(&(minute - 1)) {
        "  <- primary model overloaded"
    } else if DOC_MINUTES.contains(&(minute - 1)) {
        "  <- large-document burst"
    } else {
        ""
    };
    println!(
        "  [{:<13}] minute {minute:>2}/{}  done {:>5}  ok {:>5}  429s {:>4}  503s {:>3}  retries {:>4}  fallbacks {:>4}{}{note}",
        client.title(),
        scenario.minutes.min(10),
        live.done.load(Ordering::Relaxed),
        live.ok.load(Ordering::Relaxed),
        throttles(&c),
        c.unavailable + c.connection_cap,
        live.retries.load(Ordering::Relaxed),
        live.fallbacks.load(Ordering::Relaxed),
        watch.describe(),
    );
}

/// The side-by-side table of two runs.
pub fn table(scenario: &Scenario, naive: &RunResult, stack: &RunResult) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let pct = |n: u64, of: u64| n as f64 * 100.0 / of.max(1) as f64;
    let lat = |r: &RunResult, p: f64| {
        r.percentile(p)
            .map(|d| format!("{:.1} s", scenario.scenario_secs(d)))
            .unwrap_or_else(|| "-".into())
    };
    let share = |r: &RunResult| {
        let s = r.shares();
        format!("{:.0} / {:.0} / {:.0} %", s[0], s[1], s[2])
    };
    let rows: Vec<(String, String, String)> = vec![
        (
            "calls".into(),
            naive.calls.to_string(),
            stack.calls.to_string(),
        ),
        (
            "successes".into(),
            format!(
                "{} ({:.1} %)",
                naive.successes,
                pct(naive.successes, naive.calls)
            ),
            format!(
                "{} ({:.1} %)",
                stack.successes,
                pct(stack.successes, stack.calls)
            ),
        ),
        (
            "failures".into(),
            naive.failed().to_string(),
            stack.failed().to_string(),
        ),
        (
            "429s seen by the server".into(),
            naive.server_429.to_string(),
            stack.server_429.to_string(),
        ),
        (
            "503s seen by the server".into(),
            naive.server_503.to_string(),
            stack.server_503.to_string(),
        ),
        (
            "requests sent to Bedrock".into(),
            naive.server_requests.to_string(),
            stack.server_requests.to_string(),
        ),
        (
            "retries".into(),
            naive.retries.to_string(),
            stack.retries.to_string(),
        ),
        (
            "fallbacks served".into(),
            naive.fallbacks.to_string(),
            stack.fallbacks.to_string(),
        ),
        (
            "calls that waited for budget".into(),
            naive.budget_waits.to_string(),
            stack.budget_waits.to_string(),
        ),
        (
            "p50 latency (scenario time)".into(),
            lat(naive, 50.0),
            lat(stack, 50.0),
        ),
        (
            "p99 latency (scenario time)".into(),
            lat(naive, 99.0),
            lat(stack, 99.0),
        ),
        (
            "share of answers a / b / c".into(),
            share(naive),
            share(stack),
        ),
    ];
    let _ = writeln!(
        out,
        "{:<30} {:>18} {:>18}",
        "",
        Client::Naive.title(),
        Client::Stack.title()
    );
    let _ = writeln!(out, "{}", "-".repeat(68));
    for (name, a, b) in rows {
        let _ = writeln!(out, "{name:<30} {a:>18} {b:>18}");
    }
    for (title, r) in [
        (Client::Naive.title(), naive),
        (Client::Stack.title(), stack),
    ] {
        if !r.failures.is_empty() {
            let list: Vec<String> = r.failures.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let _ = writeln!(out, "failures of {title}: {}", list.join(", "));
        }
    }
    out
}
