//! The client strategies compared: how each application calls Bedrock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_bedrockruntime::config::retry::{RetryConfig, RetryPartition};
use serde::Serialize;
use tower::buffer::Buffer;
use tower::limit::RateLimit;
use tower::retry::{Policy, Retry};
use tower::util::BoxCloneService;
use tower::{BoxError, Service, ServiceExt};
use tower_bedrock::budget::{Budget, BudgetStore, Limits, TokenBudgetLayer};
use tower_bedrock::classify::ThrottleClassifyLayer;
use tower_bedrock::core::{ClassifiedError, ErrorClass};
use tower_bedrock::fallback::{Chain, Target};
use tower_bedrock::sdk::{
    BedrockClientBuilder, BedrockService, ConverseRequest, ConverseResponse,
    ConverseStreamCallError, ConverseStreamRequest, ConverseStreamResponse,
};
use tower_bedrock_budget_redis::RedisStore;
use tower_layer::Layer;

use crate::spec::Scenario;

/// The SDK's error for Converse.
pub type SdkError = aws_sdk_bedrockruntime::error::SdkError<
    aws_sdk_bedrockruntime::operation::converse::ConverseError,
    aws_smithy_runtime_api::client::orchestrator::HttpResponse,
>;
/// The classified SDK error (what the stack and the classify layer return).
pub type StackError = ClassifiedError<SdkError>;
/// The classified error of a ConverseStream call that failed before its
/// first event.
pub type StreamCallError = ClassifiedError<ConverseStreamCallError>;
/// A boxed Converse service with a boxed error (every strategy's common
/// shape).
pub type ChatService = BoxCloneService<ConverseRequest, ConverseResponse, BoxError>;
/// A boxed ConverseStream service with a boxed error (the streaming
/// scenarios' shape).
pub type StreamService = BoxCloneService<ConverseStreamRequest, ConverseStreamResponse, BoxError>;

/// One app's service: Converse or ConverseStream, as the scenario says.
#[derive(Clone)]
pub(crate) enum AppService {
    /// Converse.
    Unary(ChatService),
    /// ConverseStream.
    Stream(StreamService),
}

/// A client strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The seed's hand-written loop: exponential backoff from 1 s, capped at
    /// 60 s, 5 attempts, +-10 % jitter, on throttles only (429s, and
    /// throttles before a stream's first event).
    Naive,
    /// The AWS SDK's standard retry mode (3 attempts, exponential backoff
    /// with full jitter from 1 s capped at 20 s, a retry quota).
    SdkStandard,
    /// The AWS SDK's adaptive retry mode (standard plus a client-side rate
    /// limiter that slows down on throttles).
    SdkAdaptive,
    /// tower's `Retry` (429/503, 5 attempts, exponential backoff with full
    /// jitter) over `RateLimit` at the quota's request rate.
    TowerRetryRateLimit,
    /// The tower-bedrock preset stack with a token budget (a tenant per
    /// app) and the fallback model when the scenario has one.
    Stack,
}

impl Strategy {
    /// Every strategy, in table order.
    pub const ALL: [Strategy; 5] = [
        Strategy::Naive,
        Strategy::SdkStandard,
        Strategy::SdkAdaptive,
        Strategy::TowerRetryRateLimit,
        Strategy::Stack,
    ];

    /// Short name (command line, JSON, tables).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Naive => "naive",
            Strategy::SdkStandard => "sdk-standard",
            Strategy::SdkAdaptive => "sdk-adaptive",
            Strategy::TowerRetryRateLimit => "tower-retry-ratelimit",
            Strategy::Stack => "stack",
        }
    }

    /// Parses a short name.
    pub fn from_name(name: &str) -> Option<Strategy> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Options of a run that are not part of the scenario.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// A Redis server for the stack's budget when the scenario has several
    /// processes (`None`: each process gets its own in-memory budget with
    /// its share of the quota).
    pub redis_url: Option<String>,
    /// A distinct number per run (retry partitions, Redis prefixes).
    pub run_id: u64,
}

/// The services of one process, one per app (same order as the apps of the
/// process), and a note on how they were set up.
pub(crate) struct ProcessClients {
    pub(crate) services: Vec<AppService>,
    pub(crate) note: Option<String>,
}

/// Builds the clients of process `process` for `strategy`.
pub(crate) async fn build(
    scenario: &Scenario,
    strategy: Strategy,
    process: usize,
    endpoint: &str,
    opts: &ClientOptions,
) -> Result<ProcessClients, BoxError> {
    let k = scenario.time_scale();
    let apps: Vec<_> = scenario
        .apps
        .iter()
        .filter(|a| a.process == process)
        .collect();
    let builder = BedrockClientBuilder::new()
        .region("us-east-1")
        .endpoint_url(endpoint)
        .static_credentials("AKIDEXAMPLE", "not-a-secret");
    let partition = format!("bench-{}-{}", opts.run_id, process);
    // The SDK's own retry modes run in scenario time: its clock (which the
    // adaptive mode's rate limiter reads) runs 1/k times faster and its
    // sleeps (backoffs, the limiter's delays, timeouts) last k times less,
    // so its backoff and its rate limiter's recovery are compressed like
    // the scenario. The connect timeout is stretched back to 5 s of wall
    // time.
    let sdk_with = |retry: RetryConfig| async {
        let conf = builder
            .clone()
            .connect_timeout(Duration::from_secs(5).div_f64(k))
            .build_config()
            .await?;
        let conf = conf
            .to_builder()
            .retry_config(retry)
            .retry_partition(RetryPartition::new(partition.clone()))
            .time_source(ScenarioTime::new(k))
            .sleep_impl(ScenarioSleep { k })
            .build();
        Ok::<_, BoxError>(aws_sdk_bedrockruntime::Client::from_conf(conf))
    };
    let streaming = scenario.streaming;
    let classified = |bedrock: BedrockService| -> AppService {
        if streaming {
            AppService::Stream(classified_stream(bedrock))
        } else {
            AppService::Unary(classified_unary(bedrock))
        }
    };
    let n = apps.len();
    let mut note = None;
    let services = match strategy {
        Strategy::Naive => {
            let sdk = builder.clone().build().await?;
            vec![classified(BedrockService::new(sdk)); n]
        }
        Strategy::SdkStandard | Strategy::SdkAdaptive => {
            let base = if strategy == Strategy::SdkStandard {
                RetryConfig::standard()
            } else {
                RetryConfig::adaptive()
            };
            // The SDK's defaults, in scenario time.
            let retry = base
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_secs(1))
                .with_max_backoff(Duration::from_secs(20));
            let sdk = sdk_with(retry).await?;
            vec![classified(BedrockService::new(sdk)); n]
        }
        Strategy::TowerRetryRateLimit => {
            let sdk = builder.clone().build().await?;
            let bedrock = BedrockService::new(sdk);
            let per_minute = request_rate(scenario) / scenario.processes as f64;
            let num = (per_minute.floor() as u64).max(1);
            let rate = tower::limit::rate::Rate::new(num, scenario.window());
            let policy = TowerPolicy {
                left: 4,
                attempt: 0,
                k,
                seeds: Arc::new(AtomicU64::new(scenario.seed)),
            };
            let svc = if streaming {
                AppService::Stream(tower_stream(bedrock, rate, policy))
            } else {
                AppService::Unary(tower_unary(bedrock, rate, policy))
            };
            note = Some(format!("RateLimit {num} requests per window per process"));
            vec![svc; n]
        }
        Strategy::Stack => {
            let sdk = builder.clone().build().await?;
            let bedrock = BedrockService::new(sdk);
            let shared = scenario.processes > 1 && opts.redis_url.is_some();
            let share = if scenario.processes > 1 && !shared {
                1.0 / scenario.processes as f64
            } else {
                1.0
            };
            // Configured as a user would: the budget's defaults (fixed
            // windows aligned on the wall clock like Bedrock's minutes, all
            // of the quota, adaptive limits), the scenario's minute, and
            // each model's real quota. Without Redis, each of several
            // processes can only state its share of the quota.
            let part = |limit: u64| ((limit as f64 * share).floor() as u64).max(1);
            let mut bb = Budget::builder()
                .window(scenario.window())
                // Wait for room up to the scenario's max wait (three
                // minutes by default, the budget's own default being 30 s):
                // a peak's backlog is served when the traffic drops.
                .max_wait(scenario.window().mul_f64(scenario.stack_max_wait_minutes))
                .tokens_per_window(part(scenario.models[0].tpm));
            for m in &scenario.models {
                let mut l = Limits::tokens(part(m.tpm));
                if let Some(r) = m.rpm {
                    l = l.with_requests(part(r));
                }
                bb = bb.key_limits(m.id.clone(), l);
            }
            let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
            match (&opts.redis_url, shared) {
                (Some(url), true) => {
                    let store = RedisStore::builder(url.clone())
                        .prefix(format!("bench-{}-{}", std::process::id(), opts.run_id))
                        .build()?;
                    if !store.wait_connected(Duration::from_secs(5)) {
                        return Err("Redis not reachable".into());
                    }
                    note = Some("budgets shared through Redis".into());
                    let budget = bb.build_with_store(store)?;
                    if streaming {
                        stack_stream(scenario, budget, &names, bedrock)?
                    } else {
                        stack_unary(scenario, budget, &names, bedrock)?
                    }
                }
                _ => {
                    if scenario.processes > 1 {
                        note = Some(format!(
                            "no Redis: each process's in-memory budget admits 1/{} of the quota",
                            scenario.processes
                        ));
                    }
                    let budget = bb.build()?;
                    if streaming {
                        stack_stream(scenario, budget, &names, bedrock)?
                    } else {
                        stack_unary(scenario, budget, &names, bedrock)?
                    }
                }
            }
        }
    };
    Ok(ProcessClients { services, note })
}

/// The per-request-type builders: the classified SDK service, tower's
/// `Retry` over `RateLimit`, and the preset stack with a budget tenant per
/// app, for Converse and for ConverseStream.
macro_rules! per_request {
    ($req:ty, $resp:ty, $variant:ident, $classified:ident, $tower:ident, $stack:ident) => {
        fn $classified(bedrock: BedrockService) -> BoxCloneService<$req, $resp, BoxError> {
            BoxCloneService::new(ServiceExt::<$req>::map_err(
                ThrottleClassifyLayer::new().layer(bedrock),
                BoxError::from,
            ))
        }

        fn $tower(
            bedrock: BedrockService,
            rate: tower::limit::rate::Rate,
            policy: TowerPolicy,
        ) -> BoxCloneService<$req, $resp, BoxError> {
            let inner = ThrottleClassifyLayer::new().layer(bedrock);
            let limited = RateLimit::new(inner, rate);
            let shared: Buffer<$req, _> = Buffer::new(limited, 4096);
            BoxCloneService::new(Retry::new(policy, shared))
        }

        fn $stack<St: BudgetStore + Clone + Send + Sync + 'static>(
            scenario: &Scenario,
            budget: Budget<St>,
            apps: &[&str],
            bedrock: BedrockService,
        ) -> Result<Vec<AppService>, BoxError>
        where
            TokenBudgetLayer<St>: Clone,
        {
            let primary = scenario.models[0].id.as_str();
            let mut out = Vec::new();
            match &scenario.fallback {
                Some(fb) => {
                    let max = scenario
                        .apps
                        .iter()
                        .map(|a| a.max_tokens)
                        .max()
                        .unwrap_or(200);
                    let layer = tower_bedrock::stack()
                        .window(scenario.window())
                        .seed(scenario.seed)
                        .fallback_chain(
                            Chain::new()
                                .then(primary)
                                .then(Target::new(fb).max_tokens(max)),
                        )
                        .into_layer()?;
                    for app in apps {
                        let svc = layer
                            .with_budget_layer(budget.tenant(app, 1)?.layer())
                            .boxed::<_, $req, _>(bedrock.clone());
                        out.push(AppService::$variant(BoxCloneService::new(
                            svc.map_err(BoxError::from),
                        )));
                    }
                }
                None => {
                    let layer = tower_bedrock::stack()
                        .window(scenario.window())
                        .seed(scenario.seed)
                        .into_layer()?;
                    for app in apps {
                        let svc = layer
                            .with_budget_layer(budget.tenant(app, 1)?.layer())
                            .boxed::<_, $req, _>(bedrock.clone());
                        out.push(AppService::$variant(BoxCloneService::new(
                            svc.map_err(BoxError::from),
                        )));
                    }
                }
            }
            Ok(out)
        }
    };
}

per_request!(
    ConverseRequest,
    ConverseResponse,
    Unary,
    classified_unary,
    tower_unary,
    stack_unary
);
per_request!(
    ConverseStreamRequest,
    ConverseStreamResponse,
    Stream,
    classified_stream,
    tower_stream,
    stack_stream
);

/// Requests per minute the quota allows for the scenario's traffic: the RPM
/// quota, or the TPM quota over the average request's reservation (input +
/// `max_tokens` x burndown) when there is no RPM quota (what a user of
/// `RateLimit` would configure).
pub fn request_rate(scenario: &Scenario) -> f64 {
    let m = &scenario.models[0];
    let burn = tower_bedrock::core::model::default_burndown_rate(&m.id) as f64;
    let (mut weight, mut cost) = (0.0, 0.0);
    for a in &scenario.apps {
        let r: f64 = (0..scenario.minutes).map(|i| scenario.rate(a, i)).sum();
        weight += r;
        cost += r * (a.input_tokens as f64 + a.max_tokens as f64 * burn);
    }
    let per_request = if weight > 0.0 { cost / weight } else { 1.0 };
    let by_tokens = m.tpm as f64 / per_request.max(1.0);
    match m.rpm {
        Some(r) => (r as f64).min(by_tokens),
        None => by_tokens,
    }
}

/// The class of a boxed error, when it is one of the classified errors a
/// strategy returns (a Converse call's or a ConverseStream call's).
pub fn class_of(e: &BoxError) -> Option<ErrorClass> {
    if let Some(c) = e.downcast_ref::<StackError>() {
        return Some(c.class());
    }
    e.downcast_ref::<StreamCallError>().map(|c| c.class())
}

/// A label for a class: `class/kind`.
pub fn class_label(class: &ErrorClass) -> String {
    format!("{}/{}", class.label(), class.kind_label())
}

/// A label for a failed call.
pub fn failure_label(e: &BoxError) -> String {
    class_of(e).map_or_else(|| "other".into(), |c| class_label(&c))
}

/// tower's `Retry` policy a user would write: retry 429s and 503s with
/// exponential backoff and full jitter (1 s base, 20 s cap, in scenario
/// time), at most `left` retries.
#[derive(Clone)]
struct TowerPolicy {
    left: u32,
    attempt: u32,
    k: f64,
    seeds: Arc<AtomicU64>,
}

impl<Req: Clone, Res> Policy<Req, Res, BoxError> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Req,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        let e = result.as_ref().err()?;
        let retryable = class_of(e)
            .is_some_and(|c| matches!(c, ErrorClass::Throttled(_) | ErrorClass::Unavailable(_)));
        if !retryable || self.left == 0 {
            return None;
        }
        self.left -= 1;
        let cap = 2f64.powi(self.attempt as i32).min(20.0);
        self.attempt += 1;
        let mut rng = fastrand::Rng::with_seed(self.seeds.fetch_add(1, Ordering::Relaxed));
        let wait = cap * rng.f64() * self.k;
        Some(tokio::time::sleep(Duration::from_secs_f64(wait)))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// The seed's retry loop around one call: on a throttle (a 429, or a
/// `throttlingException` before a stream's first event), up to 4 retries.
pub(crate) async fn naive_call<Req: Clone, Res>(
    mut svc: BoxCloneService<Req, Res, BoxError>,
    req: Req,
    k: f64,
    seed: u64,
) -> Result<Res, BoxError> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut attempt = 0;
    loop {
        let answer = match svc.ready().await {
            Ok(ready) => ready.call(req.clone()).await,
            Err(e) => Err(e),
        };
        match answer {
            Err(e) if attempt < 4 && matches!(class_of(&e), Some(ErrorClass::Throttled(_))) => {
                let wait = 2f64.powi(attempt).min(60.0) * (0.9 + 0.2 * rng.f64());
                tokio::time::sleep(Duration::from_secs_f64(wait * k)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The SDK's clock in scenario time: starts at the real time and runs
/// `1/k` times faster.
#[derive(Debug, Clone)]
struct ScenarioTime {
    origin_wall: std::time::SystemTime,
    origin: std::time::Instant,
    speed: f64,
}

impl ScenarioTime {
    fn new(k: f64) -> Self {
        ScenarioTime {
            origin_wall: std::time::SystemTime::now(),
            origin: std::time::Instant::now(),
            speed: 1.0 / k,
        }
    }
}

impl aws_smithy_async::time::TimeSource for ScenarioTime {
    fn now(&self) -> std::time::SystemTime {
        self.origin_wall + self.origin.elapsed().mul_f64(self.speed)
    }
}

/// The SDK's sleeps in scenario time: `k` times shorter.
#[derive(Debug, Clone)]
struct ScenarioSleep {
    k: f64,
}

impl aws_sdk_bedrockruntime::config::AsyncSleep for ScenarioSleep {
    fn sleep(&self, d: Duration) -> aws_sdk_bedrockruntime::config::Sleep {
        aws_sdk_bedrockruntime::config::Sleep::new(tokio::time::sleep(d.mul_f64(self.k)))
    }
}
