//! The shipped monitoring (`monitoring/prometheus/bedrock-alerts.yml` and
//! `monitoring/grafana/bedrock-dashboard.json`) lights up with the code a
//! user writes.
//!
//! Each scenario runs a real stack over the real `aws-sdk-bedrockruntime`
//! client against the in-process emulator on 127.0.0.1, records its
//! metrics with the axum example's Prometheus exporter (the same builder:
//! histogram buckets, the `region` global label), renders the exposition
//! text a scrape would read, and checks every series that an alert, a
//! panel or a dashboard variable queries, exactly as written (`_bucket`
//! included), with the labels and label values it selects or groups by.
//!
//! The stacks: the README's by-hand `ServiceBuilder` stack, the preset
//! `tower_bedrock::stack()`, and the preset over a Redis budget store (its
//! own series need a `redis-server` binary; without one that scenario
//! prints a `skipped:` line, or fails when `REQUIRE_EXTERNAL_TESTS=1`).
//!
//! The emulator is a real server, so time is compressed (1 s quota
//! windows) rather than paused; the assertions are about which series
//! exist, never about how long anything took.

#[path = "../examples/axum_gateway.rs"]
mod gateway;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use metrics_exporter_prometheus::PrometheusRecorder;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bedrock::breaker::CircuitBreakLayer;
use tower_bedrock::budget::{Budget, Limits};
use tower_bedrock::classify::ThrottleClassifyLayer;
use tower_bedrock::core::{Classified, ErrorClass, UnavailableKind, names};
use tower_bedrock::fallback::{Chain, ModelFallbackLayer};
use tower_bedrock::observe::InvocationMetricsLayer;
use tower_bedrock::retry::{
    Backoff, ClassPolicy, Jitter, ModelRequestReport, QuotaAlignedRetryLayer, RetryBudgetConfig,
};
use tower_bedrock::sdk::{BedrockClientBuilder, BedrockService, ConverseRequest};
use tower_bedrock_budget_redis::RedisStore;
use tower_bedrock_emulator::{Emulator, EmulatorConfig, EmulatorHandle, FaultKind, FaultRule};

const RULES: &str = include_str!("../monitoring/prometheus/bedrock-alerts.yml");
const DASHBOARD: &str = include_str!("../monitoring/grafana/bedrock-dashboard.json");

const REGION: &str = "us-east-1";
/// The prompt of every call (it must never reach a metric).
const PROMPT: &str = "Tell me about quotas, marker 7f3a9c.";
const WINDOW: Duration = Duration::from_secs(1);

/// The fallback chain's primary: throttled once, then failing with 503s
/// until its breaker opens.
const PRIMARY: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
/// The chain's second target, always healthy.
const SECONDARY: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
/// Holds the emulator's only connection slot while `POOLED` asks for one.
const HOLDER: &str = "amazon.nova-pro-v1:0";
/// Refused with 503 "Too many connections".
const POOLED: &str = "amazon.nova-micro-v1:0";
/// A small token budget of its own: waits and sheds.
const SCARCE: &str = "amazon.nova-lite-v1:0";

// ---------------------------------------------------------------- exposition

/// One series of a Prometheus text exposition: its labels.
type Labels = BTreeMap<String, String>;

/// The series of an exposition, by name (`_bucket`, `_sum`, `_count` are
/// names of their own, as a scrape stores them).
#[derive(Debug, Default)]
struct Exposition(BTreeMap<String, Vec<Labels>>);

impl Exposition {
    /// Parses the text format (`name{label="value",...} number` lines;
    /// comments skipped).
    fn parse(text: &str) -> Exposition {
        let mut out: BTreeMap<String, Vec<Labels>> = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .expect("a name, then labels or a value");
            let name = &line[..name_end];
            let mut labels = Labels::new();
            if line[name_end..].starts_with('{') {
                let mut rest = &line[name_end + 1..];
                loop {
                    rest = rest.trim_start_matches(',');
                    if let Some(after) = rest.strip_prefix('}') {
                        rest = after;
                        break;
                    }
                    let eq = rest.find("=\"").expect("label=\"value\"");
                    let key = rest[..eq].to_owned();
                    let mut value = String::new();
                    let mut chars = rest[eq + 2..].char_indices();
                    let end = loop {
                        match chars.next().expect("closed label value") {
                            (_, '\\') => {
                                let (_, c) = chars.next().expect("escaped character");
                                value.push(if c == 'n' { '\n' } else { c });
                            }
                            (i, '"') => break eq + 2 + i + 1,
                            (_, c) => value.push(c),
                        }
                    };
                    labels.insert(key, value);
                    rest = &rest[end..];
                }
                assert!(!rest.trim().is_empty(), "no value in {line}");
            }
            out.entry(name.to_owned()).or_default().push(labels);
        }
        Exposition(out)
    }

    fn series(&self, name: &str) -> &[Labels] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }

    /// The values of `label` over the series whose name starts with
    /// `prefix`.
    fn label_values(&self, prefix: &str, label: &str) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .flat_map(|(_, series)| series.iter().filter_map(|l| l.get(label).cloned()))
            .collect()
    }
}

// ---------------------------------------------------------------- PromQL

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Metric names in a PromQL expression, exactly as written.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(pos) = rest.find("bedrock_") {
        let before_ok = !rest[..pos]
            .chars()
            .last()
            .is_some_and(|c| is_ident(c) || c == '"');
        let end = rest[pos..]
            .find(|c: char| !is_ident(c))
            .map_or(rest.len(), |e| pos + e);
        if before_ok {
            out.insert(rest[pos..end].to_owned());
        }
        rest = &rest[end..];
    }
    out
}

/// A label matcher of a selector.
#[derive(Debug, PartialEq)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

impl Matcher {
    /// The literal values a matcher names (`a` for `="a"`, `a`, `b` for
    /// `=~"a|b"`); none when it depends on a dashboard variable or is
    /// negative.
    fn literals(&self) -> Vec<&str> {
        if self.value.contains('$') || self.op.starts_with('!') {
            return Vec::new();
        }
        match self.op.as_str() {
            "=" => vec![self.value.as_str()],
            _ if self
                .value
                .chars()
                .all(|c| is_ident(c) || c == '|' || c == '-') =>
            {
                self.value.split('|').collect()
            }
            _ => Vec::new(),
        }
    }

    /// Whether a series' labels satisfy the matcher (a variable matches
    /// any value the label has).
    fn accepts(&self, labels: &Labels) -> bool {
        let Some(v) = labels.get(&self.label) else {
            return self.op.starts_with('!');
        };
        let literals = self.literals();
        if self.op.starts_with('!') {
            return !self.value.split('|').any(|x| x == v);
        }
        literals.is_empty() || literals.contains(&v.as_str())
    }
}

/// The selectors `metric{matchers}` of an expression (a bare metric has
/// none), and the labels of its `by (...)` clauses.
fn selectors_in(expr: &str) -> (Vec<(String, Vec<Matcher>)>, BTreeSet<String>) {
    let mut selectors: Vec<(String, Vec<Matcher>)> = metrics_in(expr)
        .into_iter()
        .map(|m| (m, Vec::new()))
        .collect();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let name: String = rest[..open]
            .chars()
            .rev()
            .take_while(|c| is_ident(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let close = open + rest[open..].find('}').expect("closed selector");
        let mut matchers = Vec::new();
        for m in rest[open + 1..close].split(',') {
            let m = m.trim();
            if m.is_empty() {
                continue;
            }
            let label: String = m.chars().take_while(|c| is_ident(*c)).collect();
            let after = m[label.len()..].trim_start();
            let op: String = after.chars().take_while(|c| "=!~".contains(*c)).collect();
            let value = after[op.len()..].trim().trim_matches('"').to_owned();
            matchers.push(Matcher { label, op, value });
        }
        if let Some(slot) = selectors
            .iter_mut()
            .find(|(n, ms)| *n == name && ms.is_empty())
        {
            slot.1 = matchers;
        } else {
            selectors.push((name, matchers));
        }
        rest = &rest[close + 1..];
    }
    let mut by = BTreeSet::new();
    let mut rest = expr;
    while let Some(pos) = rest.find("by (") {
        let after = &rest[pos + 4..];
        let close = after.find(')').expect("closed by clause");
        for l in after[..close].split(',') {
            by.insert(l.trim().to_owned());
        }
        rest = &after[close..];
    }
    (selectors, by)
}

/// Every series `expr` reads exists in the exposition with the labels and
/// label values it selects and groups by.
fn check_expr(where_: &str, expr: &str, scrape: &Exposition) {
    let (selectors, by) = selectors_in(expr);
    assert!(!selectors.is_empty(), "{where_}: no metric in {expr}");
    let known = || scrape.0.keys().collect::<Vec<_>>();
    for (metric, matchers) in &selectors {
        let series = scrape.series(metric);
        assert!(
            !series.is_empty(),
            "{where_}: no series {metric} in the scrape (it has {:?})",
            known()
        );
        assert!(
            series.iter().any(|l| matchers.iter().all(|m| m.accepts(l))),
            "{where_}: no series {metric} matches {matchers:?}: {series:?}"
        );
        for m in matchers {
            assert!(
                series.iter().any(|l| l.contains_key(&m.label)) || m.op.starts_with('!'),
                "{where_}: {metric} has no label {} ({series:?})",
                m.label
            );
            for value in m.literals() {
                assert!(
                    series
                        .iter()
                        .any(|l| l.get(&m.label).map(String::as_str) == Some(value)),
                    "{where_}: no series {metric}{{{}=\"{value}\"}} ({series:?})",
                    m.label
                );
            }
        }
    }
    for label in &by {
        assert!(
            selectors
                .iter()
                .any(|(m, _)| scrape.series(m).iter().any(|l| l.contains_key(label))),
            "{where_}: no series of `{expr}` has the label {label}"
        );
    }
}

/// A `label_values({__name__=~"prefix.+", ...}, label)` variable: the
/// values it offers in this scrape.
fn variable_values(query: &str, scrape: &Exposition) -> BTreeSet<String> {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values query: {query}"));
    let (selector, label) = inner.rsplit_once(',').expect("selector, label");
    let (selectors, _) = selectors_in(&format!("x{}", selector.trim()));
    let matchers = &selectors
        .iter()
        .find(|(n, _)| n == "x")
        .expect("a selector")
        .1;
    let name = matchers
        .iter()
        .find(|m| m.label == "__name__" && m.op == "=~")
        .unwrap_or_else(|| panic!("{query}: select the stack's series by name"));
    let prefix = name
        .value
        .strip_suffix(".+")
        .filter(|p| p.chars().all(is_ident))
        .unwrap_or_else(|| panic!("{query}: name regex should be `prefix.+`"));
    let others: Vec<&Matcher> = matchers.iter().filter(|m| m.label != "__name__").collect();
    scrape
        .0
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .flat_map(|(_, series)| series.iter())
        .filter(|l| others.iter().all(|m| m.accepts(l)))
        .filter_map(|l| l.get(label.trim()).cloned())
        .collect()
}

// ---------------------------------------------------------------- rules and dashboard

#[derive(Debug, Default)]
struct Alert {
    name: String,
    expr: String,
    severity: Option<String>,
    runbook: String,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The alerts of a Prometheus rules file (the subset of YAML it uses:
/// `- alert:` items with `expr`, `labels.severity` and
/// `annotations.runbook`, scalars inline or as `|` blocks).
fn parse_rules(text: &str) -> Vec<Alert> {
    let lines: Vec<&str> = text.lines().collect();
    let mut alerts: Vec<Alert> = Vec::new();
    let mut i = 0;
    let block = |start: usize, lines: &[&str]| -> (String, usize) {
        let own = indent(lines[start]);
        let mut j = start + 1;
        let mut out = Vec::new();
        while j < lines.len() && (lines[j].trim().is_empty() || indent(lines[j]) > own) {
            out.push(lines[j].trim());
            j += 1;
        }
        (out.join("\n"), j)
    };
    while i < lines.len() {
        let t = lines[i].trim();
        if let Some(name) = t.strip_prefix("- alert:") {
            alerts.push(Alert {
                name: name.trim().to_owned(),
                ..Alert::default()
            });
        } else if let Some(a) = alerts.last_mut() {
            for (field, slot) in [("expr:", 0), ("runbook:", 1)] {
                if let Some(rest) = t.strip_prefix(field) {
                    let value = if rest.trim() == "|" {
                        let (v, next) = block(i, &lines);
                        i = next - 1;
                        v
                    } else {
                        rest.trim().trim_matches('"').to_owned()
                    };
                    if slot == 0 {
                        a.expr = value;
                    } else {
                        a.runbook = value;
                    }
                }
            }
            if let Some(rest) = t.strip_prefix("severity:") {
                a.severity = Some(rest.trim().to_owned());
            }
        }
        i += 1;
    }
    alerts
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(DASHBOARD).expect("valid JSON")
}

/// Every (place, expression) of the dashboard's panels.
fn panel_queries() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().expect("targets") {
            out.push((
                format!("panel {title:?}"),
                t["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    out
}

/// The dashboard's query variables: (name, query).
fn variables() -> Vec<(String, String)> {
    let d = dashboard();
    d["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = &v["query"];
            let query = q["query"].as_str().or(q.as_str()).expect("variable query");
            (
                v["name"].as_str().expect("name").to_owned(),
                query.to_owned(),
            )
        })
        .collect()
}

/// The series the alerts and the panels read.
fn queried_series() -> BTreeSet<String> {
    parse_rules(RULES)
        .iter()
        .map(|a| a.expr.clone())
        .chain(panel_queries().into_iter().map(|(_, e)| e))
        .flat_map(|e| metrics_in(&e))
        .collect()
}

/// Series of the Redis budget store (present only when a store is).
fn is_store_series(name: &str) -> bool {
    name.starts_with("bedrock_budget_store_")
}

/// Checks every alert, panel and variable against a scrape; `with_store`:
/// the scrape includes a Redis budget store.
fn check_scrape(scrape: &Exposition, with_store: bool) {
    let applies = |expr: &str| with_store || !metrics_in(expr).iter().any(|m| is_store_series(m));
    let alerts = parse_rules(RULES);
    assert!(alerts.len() >= 6, "{alerts:?}");
    for a in alerts.iter().filter(|a| applies(&a.expr)) {
        check_expr(&format!("alert {}", a.name), &a.expr, scrape);
    }
    for (place, expr) in panel_queries().iter().filter(|(_, e)| applies(e)) {
        check_expr(place, expr, scrape);
    }
    // The variables offer the region and every model the stack called,
    // whichever layers the stack has.
    let vars: BTreeMap<String, String> = variables().into_iter().collect();
    let regions = variable_values(&vars["region"], scrape);
    assert_eq!(regions, BTreeSet::from([REGION.to_owned()]));
    let models = variable_values(&vars["model"].replace("$region", REGION), scrape);
    for m in [PRIMARY, SECONDARY, POOLED, SCARCE] {
        assert!(models.contains(m), "variable model misses {m}: {models:?}");
    }
}

// ---------------------------------------------------------------- the stacks at work

async fn emulator() -> EmulatorHandle {
    Emulator::start(
        EmulatorConfig::builder()
            .window(WINDOW)
            .output_tokens(20)
            .build()
            .unwrap(),
    )
    .await
    .expect("emulator starts")
}

async fn bedrock(e: &EmulatorHandle) -> BedrockService {
    let client = BedrockClientBuilder::new()
        .region(REGION)
        .endpoint_url(e.endpoint_url())
        .static_credentials("AKIDEXAMPLE", "not-a-secret")
        .max_connections_per_host(8)
        .build()
        .await
        .expect("SDK client");
    BedrockService::new(client)
}

fn converse(model: &str, max_tokens: i32) -> ConverseRequest {
    ConverseInput::builder()
        .model_id(model)
        .messages(
            Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text(PROMPT.to_owned()))
                .build()
                .unwrap(),
        )
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(max_tokens)
                .build(),
        )
        .build()
        .unwrap()
        .into()
}

/// The token budget of the scenarios: plenty for every model but
/// `SCARCE`, which has 1,000 tokens per 1 s window.
fn budget_builder() -> tower_bedrock::budget::BudgetBuilder {
    Budget::builder()
        .window(WINDOW)
        .tokens_per_window(100_000)
        .key_limits(SCARCE, Limits::tokens(1_000))
        .max_wait(Duration::from_secs(3))
}

/// The retry layer of both stacks: the defaults' classes with waits for a
/// 1 s window, and a retry budget of two retries that never refills (so
/// it runs out during the scenario).
fn retry_layer() -> QuotaAlignedRetryLayer<ModelRequestReport> {
    let quick = Backoff::exponential(
        Duration::from_millis(5),
        Duration::from_millis(20),
        Jitter::Full,
    );
    QuotaAlignedRetryLayer::builder()
        .window(WINDOW)
        .seed(7)
        .hint_range(Duration::from_millis(1), WINDOW)
        .deadline(Duration::from_secs(10))
        .rate_throttles(ClassPolicy::retry(
            2,
            Backoff::quota_window(Duration::from_millis(10), Duration::from_millis(20)),
        ))
        .policy(
            ErrorClass::Unavailable(UnavailableKind::Service),
            ClassPolicy::retry(3, quick),
        )
        .policy(
            ErrorClass::Unavailable(UnavailableKind::ConnectionPool),
            ClassPolicy::retry(3, quick),
        )
        .retry_budget(
            RetryBudgetConfig::new()
                .capacity(10)
                .retry_cost(5)
                .success_refill(0),
        )
        .call_options(ModelRequestReport)
        .build()
        .unwrap()
}

/// The breaker of both stacks: opens after 4 failures in a row and stays
/// open for the rest of the scenario.
fn breaker_layer() -> CircuitBreakLayer {
    CircuitBreakLayer::builder()
        .consecutive_failures(4)
        .open_duration(Duration::from_secs(20))
        .seed(7)
        .build()
        .unwrap()
}

fn chain() -> Chain<ConverseRequest> {
    Chain::new().then(PRIMARY).then(SECONDARY)
}

/// What each call ended with, for the scenario's own checks.
#[derive(Debug, Default)]
struct Outcomes(Vec<(&'static str, Result<(), ErrorClass>)>);

/// Walks a stack through what the monitoring watches: a throttle retried
/// after the window, a connection-pool 503, service 503s until the retry
/// budget runs out and the breaker opens (the fallback serves), a budget
/// wait and a budget shed.
async fn exercise<S>(svc: S, e: &EmulatorHandle) -> Outcomes
where
    S: Service<ConverseRequest> + Clone + Send + 'static,
    S::Error: Classified + Send + std::fmt::Debug,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    let mut out = Outcomes::default();
    let call = |model: &'static str, max_tokens: i32| {
        let svc = svc.clone();
        async move {
            svc.oneshot(converse(model, max_tokens))
                .await
                .map(|_| ())
                .map_err(|e| e.classification().class)
        }
    };

    // A token-rate throttle, retried after the next window opens.
    e.set_faults(vec![
        FaultRule::new(FaultKind::TooManyTokens)
            .model(PRIMARY)
            .count(1),
    ])
    .unwrap();
    out.0.push((PRIMARY, call(PRIMARY, 100).await));

    // Connection pool: the emulator takes one request at a time, one call
    // holds it (stalled for 3 s), another is refused with 503 "Too many
    // connections", retried, and out of retries (three retries of 5 to 20
    // ms) long before the holder lets go.
    e.set_max_connections(Some(1)).unwrap();
    e.set_faults(vec![
        FaultRule::new(FaultKind::Stall { ms: 3_000 })
            .model(HOLDER)
            .count(1),
    ])
    .unwrap();
    let holder = tokio::spawn(call(HOLDER, 100));
    let mut polls = 0;
    while e.counters().in_flight == 0 {
        polls += 1;
        assert!(polls < 500, "the holder never reached the emulator");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out.0.push((POOLED, call(POOLED, 100).await));
    out.0.push((HOLDER, holder.await.unwrap()));
    e.set_max_connections(None).unwrap();

    // Service 503s on the primary: the retry budget runs out, the breaker
    // opens after 4 failures in a row, the fallback serves every call, the
    // last one refused by the open breaker without reaching Bedrock.
    e.set_faults(vec![FaultRule::new(FaultKind::Unavailable).model(PRIMARY)])
        .unwrap();
    for _ in 0..5 {
        out.0.push((PRIMARY, call(PRIMARY, 100).await));
    }
    e.clear_faults();

    // Budget pressure on SCARCE (1,000 tokens per window): two calls at
    // once each reserve about 900 tokens, so one waits for the other to
    // settle; a call that could never fit is shed at once.
    let (a, b) = tokio::join!(call(SCARCE, 900), call(SCARCE, 900));
    out.0.push((SCARCE, a));
    out.0.push((SCARCE, b));
    out.0.push((SCARCE, call(SCARCE, 5_000).await));
    out
}

/// The scenario's own outcomes: what the monitoring should show happened.
fn check_outcomes(out: &Outcomes) {
    let by_model = |m: &str| -> Vec<&Result<(), ErrorClass>> {
        out.0
            .iter()
            .filter(|(x, _)| *x == m)
            .map(|(_, r)| r)
            .collect()
    };
    // Every call to the primary was answered (after a retry, or by the
    // fallback).
    assert!(by_model(PRIMARY).iter().all(|r| r.is_ok()), "{out:?}");
    assert_eq!(by_model(HOLDER), vec![&Ok(())], "{out:?}");
    let scarce = by_model(SCARCE);
    assert_eq!(&scarce[..2], &[&Ok(()), &Ok(())], "{out:?}");
    assert!(
        matches!(scarce[2], Err(ErrorClass::Local(_))),
        "the oversized call is shed: {out:?}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    // One thread: the thread-local recorder sees every task of the
    // scenario (the stack's, the SDK's and the emulator's).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The exposition of `recorder` after `scenario` ran with it as this
/// thread's recorder.
fn scrape_of<F>(recorder: PrometheusRecorder, scenario: F) -> (Exposition, String)
where
    F: std::future::Future<Output = ()>,
{
    let handle = recorder.handle();
    {
        let _guard = metrics::set_default_local_recorder(&recorder);
        runtime().block_on(scenario);
    }
    let text = handle.render();
    (Exposition::parse(&text), text)
}

/// Series every stack of the scenario must produce, whatever the
/// dashboard asks: the whole stack was at work.
const STACK_SERIES: [&str; 14] = [
    names::INVOCATIONS,
    names::INVOCATION_ERRORS,
    names::INVOCATION_THROTTLES,
    "bedrock_invocation_latency_seconds_bucket",
    names::RETRIES,
    names::RETRY_BUDGET_EXHAUSTED,
    names::BUDGET_UTILIZATION,
    names::BUDGET_WAITS,
    "bedrock_budget_wait_seconds_bucket",
    names::BUDGET_SHEDS,
    names::CIRCUIT_STATE,
    names::CIRCUIT_REJECTED,
    names::FALLBACKS,
    names::DEGRADED_SERVED,
];

fn check_stack_scrape(scrape: &Exposition, text: &str) {
    for name in STACK_SERIES {
        assert!(
            !scrape.series(name).is_empty(),
            "{name} not in the scrape:\n{text}"
        );
    }
    // Latency is a histogram with buckets (not a summary): `le` bounds up
    // to +Inf, every series labelled with the region.
    let buckets = scrape.series("bedrock_invocation_latency_seconds_bucket");
    assert!(
        buckets
            .iter()
            .any(|l| l.get("le").map(String::as_str) == Some("+Inf"))
    );
    assert!(
        buckets
            .iter()
            .all(|l| l.get("region").map(String::as_str) == Some(REGION))
    );
    check_scrape(scrape, false);
}

#[test]
fn the_readme_by_hand_stack_lights_up_every_alert_and_panel() {
    let (scrape, text) = scrape_of(gateway::prometheus(REGION), async {
        let e = emulator().await;
        let budget = budget_builder().build().unwrap();
        // The README's "By hand with tower::ServiceBuilder" stack (with
        // this test's compressed-time retry and breaker settings).
        let svc = ServiceBuilder::new()
            .layer(ModelFallbackLayer::new(chain()).unwrap())
            .layer(retry_layer())
            .layer(breaker_layer())
            .layer(budget.layer())
            .layer(ThrottleClassifyLayer::new())
            .layer(InvocationMetricsLayer::new())
            .service(bedrock(&e).await);
        let out = exercise(svc, &e).await;
        check_outcomes(&out);
        e.shutdown().await;
    });
    check_stack_scrape(&scrape, &text);
}

#[test]
fn the_preset_stack_lights_up_every_alert_and_panel() {
    let (scrape, text) = scrape_of(gateway::prometheus(REGION), async {
        let e = emulator().await;
        let budget = budget_builder().build().unwrap();
        let svc = tower_bedrock::stack()
            .window(WINDOW)
            .seed(7)
            .fallback_chain(chain())
            .retry(retry_layer())
            .breaker(breaker_layer())
            .token_budget(&budget)
            .service::<_, ConverseRequest, _>(bedrock(&e).await)
            .unwrap();
        let out = exercise(svc, &e).await;
        check_outcomes(&out);
        e.shutdown().await;
    });
    check_stack_scrape(&scrape, &text);
}

// ---------------------------------------------------------------- CloudWatch EMF

const CLOUDFORMATION: &str = include_str!("../monitoring/cloudwatch/bedrock-monitoring.yaml");

/// The text of one resource of the CloudFormation template: its line and
/// the lines indented below it.
fn resource_block(logical_id: &str) -> String {
    let lines: Vec<&str> = CLOUDFORMATION.lines().collect();
    // `Id:`, or `Id&{ModelId}:` inside the `Fn::ForEach` (the first one
    // after the list's `- `).
    let key = |l: &str| -> Option<usize> {
        let t = l.trim_start();
        let (t, extra) = t.strip_prefix("- ").map_or((t, 0), |t| (t, 2));
        let named =
            t.starts_with(&format!("{logical_id}:")) || t.starts_with(&format!("{logical_id}&"));
        named.then_some(indent(l) + extra)
    };
    let (start, own) = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| key(l).map(|own| (i, own)))
        .unwrap_or_else(|| panic!("resource {logical_id} missing"));
    let end = lines[start + 1..]
        .iter()
        .position(|l| !l.trim().is_empty() && indent(l) <= own)
        .map_or(lines.len(), |e| start + 1 + e);
    lines[start..end].join("\n")
}

/// The folded (`>-`) scalar of `field` in a resource block, as one line.
fn folded(block: &str, field: &str) -> String {
    let lines: Vec<&str> = block.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {block}"));
    let own = indent(lines[at]);
    lines[at + 1..]
        .iter()
        .take_while(|l| indent(l) > own)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The dashboard body: the JSON under the dashboard's `Fn::Sub`.
fn cloudwatch_dashboard() -> serde_json::Value {
    let marker = "Fn::Sub:\n          - |\n";
    let start = CLOUDFORMATION.find(marker).expect("the dashboard body") + marker.len();
    let end = start
        + CLOUDFORMATION[start..]
            .find("\n          - FirstModelId")
            .expect("the body's variables");
    let body: Vec<&str> = CLOUDFORMATION[start..end]
        .lines()
        .map(|l| l.strip_prefix("            ").unwrap_or(l))
        .collect();
    // The one number CloudFormation substitutes.
    let body = body
        .join("\n")
        .replace("${QuotaUtilisationThreshold}", "0.8");
    serde_json::from_str(&body).expect("the dashboard body is JSON")
}

#[test]
fn the_cloudwatch_template_holds_the_seed_alarms_dashboard_and_queries() {
    // The seed's alarms, per model, each with a severity, a runbook and an
    // SNS action, and a description CloudWatch accepts (1,024 characters,
    // with room for a model id and the parameters).
    let alarms = [
        ("ThrottlesIn5Minutes", "[warning]"),
        ("ThrottlesSustained", "[critical]"),
        ("TokenQuotaUtilisation", "[warning]"),
        ("RequestQuotaUtilisation", "[warning]"),
        ("SuccessRateLow", "[critical]"),
        ("ServerErrorSpike", "[critical]"),
        ("ConnectionPoolSaturated", "[warning]"),
    ];
    for (id, severity) in alarms {
        let block = resource_block(id);
        assert!(block.contains("Type: AWS::CloudWatch::Alarm"), "{id}");
        assert_eq!(block.matches("AlarmName:").count(), 1, "{id}: one resource");
        let description = folded(&block, "AlarmDescription");
        assert!(description.starts_with(severity), "{id}: {description}");
        assert!(description.contains("Runbook:"), "{id}: {description}");
        assert!(
            description.len() < 900,
            "{id}: {} characters",
            description.len()
        );
        assert!(
            block
                .contains("AlarmActions: [!If [CreateTopic, !Ref AlarmTopic, !Ref AlarmTopicArn]]"),
            "{id}"
        );
    }
    let five_minutes = resource_block("ThrottlesIn5Minutes");
    assert!(
        five_minutes.contains("MetricName: InvocationThrottles")
            && five_minutes.contains("Period: 300")
    );
    let sustained = resource_block("ThrottlesSustained");
    for line in [
        "Period: 60",
        "EvaluationPeriods: 5",
        "DatapointsToAlarm: 5",
        "Threshold: 0",
    ] {
        assert!(sustained.contains(line), "ThrottlesSustained: {line}");
    }
    let quota = resource_block("TokenQuotaUtilisation");
    assert!(quota.contains("InputTokenCount") && quota.contains("OutputTokenCount"));
    assert!(CLOUDFORMATION.contains("QuotaUtilisationThreshold:\n    Type: Number\n    Description: Alarm when a model uses more than this share of its per-minute quota.\n    Default: 0.8"));
    let success = resource_block("SuccessRateLow");
    assert!(
        success.contains("Period: 600")
            && success.contains("ComparisonOperator: LessThanThreshold")
    );
    let spike = resource_block("ServerErrorSpike");
    assert!(spike.contains("InvocationServerErrors") && spike.contains("IF("));
    // Per model id, on the AWS/Bedrock namespace.
    assert!(
        CLOUDFORMATION.contains("Fn::ForEach::ModelAlarms:\n    - ModelId\n    - !Ref ModelIds")
    );
    assert!(CLOUDFORMATION.contains("Name: ModelId\n              Value: !Ref ModelId"));

    // The Logs Insights queries: 429s per 5 minutes, 503s per minute.
    let q429 = resource_block("ThrottlesPer5MinutesQuery");
    assert!(q429.contains("AWS::Logs::QueryDefinition"));
    assert!(q429.contains("/ThrottlingException/") && q429.contains("by bin(5m)"));
    let q503 = resource_block("ServiceUnavailablePerMinuteQuery");
    assert!(q503.contains("/ServiceUnavailableException/") && q503.contains("by bin(1m)"));

    // The dashboard: 429 and 5xx in separate widgets, by model, in both
    // regions; weekly bars.
    let dashboard = cloudwatch_dashboard();
    let widgets = dashboard["widgets"].as_array().expect("widgets");
    let text_of = |w: &serde_json::Value| w["properties"]["metrics"].to_string();
    for region in ["${AWS::Region}", "${SecondaryRegion}"] {
        let in_region: Vec<&serde_json::Value> = widgets
            .iter()
            .filter(|w| w["properties"]["region"] == region && w["type"] == "metric")
            .collect();
        let throttles = in_region
            .iter()
            .find(|w| {
                w["properties"]["title"]
                    .as_str()
                    .unwrap()
                    .starts_with("429")
            })
            .unwrap_or_else(|| panic!("no 429 widget in {region}"));
        let errors = in_region
            .iter()
            .find(|w| {
                w["properties"]["title"]
                    .as_str()
                    .unwrap()
                    .starts_with("5xx")
            })
            .unwrap_or_else(|| panic!("no 5xx widget in {region}"));
        assert!(text_of(throttles).contains("InvocationThrottles"));
        assert!(!text_of(throttles).contains("InvocationServerErrors"));
        assert!(text_of(errors).contains("InvocationServerErrors"));
        assert!(!text_of(errors).contains("InvocationThrottles"));
        for w in [throttles, errors] {
            assert!(
                text_of(w).contains("{AWS/Bedrock,ModelId}"),
                "by model: {w}"
            );
        }
    }
    let weekly: Vec<&serde_json::Value> = widgets
        .iter()
        .filter(|w| w["properties"]["period"] == 604_800)
        .collect();
    assert!(weekly.len() >= 2, "weekly widgets");
    assert!(weekly.iter().all(|w| w["properties"]["start"] == "-P5W"));
    let logs: Vec<String> = widgets
        .iter()
        .filter(|w| w["type"] == "log")
        .map(|w| w["properties"]["query"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        logs.iter()
            .any(|q| q.contains("ThrottlingException") && q.contains("bin(5m)"))
    );
    assert!(
        logs.iter()
            .any(|q| q.contains("ServiceUnavailableException") && q.contains("bin(1m)"))
    );
}

/// The (metric, dimension names) pairs the CloudFormation template reads
/// from the stack's own namespace: its dashboard's `SEARCH` schemas and
/// its alarm's Metrics Insights `SCHEMA`.
#[cfg(feature = "emf")]
fn template_stack_metrics() -> Vec<(String, BTreeSet<String>)> {
    const NS: &str = "${StackMetricsNamespace}";
    let mut out = Vec::new();
    let mut rest = CLOUDFORMATION;
    while let Some(pos) = rest.find(&format!("{{{NS},")) {
        let after = &rest[pos + NS.len() + 2..];
        let close = after.find('}').expect("closed SEARCH schema");
        let dims = after[..close]
            .split(',')
            .map(|d| d.trim().to_owned())
            .collect();
        let name_at = after.find(r#"MetricName=\""#).expect("a MetricName") + 13;
        let name_end = name_at + after[name_at..].find('\\').expect("closed name");
        out.push((after[name_at..name_end].to_owned(), dims));
        rest = &after[close..];
    }
    let mut rest = CLOUDFORMATION;
    while let Some(pos) = rest.find(&format!("SCHEMA(\"{NS}\",")) {
        let before = &rest[..pos];
        let sum = before.rfind("SUM(").expect("SELECT SUM(metric)") + 4;
        let name = before[sum..].split(')').next().unwrap().trim().to_owned();
        let after = &rest[pos + NS.len() + 10..];
        let close = after.find(')').expect("closed SCHEMA");
        let dims = after[..close]
            .split(',')
            .map(|d| d.trim().to_owned())
            .collect();
        out.push((name, dims));
        rest = &after[close..];
    }
    out
}

#[cfg(feature = "emf")]
#[test]
fn the_stack_publishes_embedded_metric_format_that_the_cloudwatch_template_reads() {
    use tower_bedrock::emf::EmfRecorder;

    let recorder = EmfRecorder::builder("TowerBedrock").build().unwrap();
    {
        let _guard = metrics::set_default_local_recorder(&recorder);
        runtime().block_on(async {
            let e = emulator().await;
            let budget = budget_builder().build().unwrap();
            let svc = tower_bedrock::stack()
                .window(WINDOW)
                .seed(7)
                .fallback_chain(chain())
                .retry(retry_layer())
                .breaker(breaker_layer())
                .token_budget(&budget)
                .service::<_, ConverseRequest, _>(bedrock(&e).await)
                .unwrap();
            check_outcomes(&exercise(svc, &e).await);
            e.shutdown().await;
        });
    }
    let mut out = Vec::new();
    let written = recorder.flush(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        !text.contains("marker 7f3a9c"),
        "the prompt reached a metric"
    );
    assert!(!text.contains("not-a-secret") && !text.contains("AKIDEXAMPLE"));

    // JSON lines, each an EMF document: namespace, one dimension set whose
    // names are fields of the document, metric definitions whose names are
    // fields too.
    let docs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(docs.len(), written);
    let mut found: BTreeMap<String, Vec<(BTreeSet<String>, serde_json::Value)>> = BTreeMap::new();
    for d in &docs {
        let cw = &d["_aws"]["CloudWatchMetrics"];
        assert_eq!(cw.as_array().map(Vec::len), Some(1), "{d}");
        assert_eq!(cw[0]["Namespace"], "TowerBedrock");
        assert!(
            d["_aws"]["Timestamp"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000)
        );
        let dims: BTreeSet<String> = cw[0]["Dimensions"][0]
            .as_array()
            .expect("one dimension set")
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        for name in &dims {
            assert!(d[name].is_string(), "dimension {name} of {d}");
        }
        for m in cw[0]["Metrics"].as_array().expect("metric definitions") {
            let name = m["Name"].as_str().unwrap();
            assert!(!d[name].is_null(), "metric {name} has no value: {d}");
            found
                .entry(name.to_owned())
                .or_default()
                .push((dims.clone(), d.clone()));
        }
    }
    // Invocations and latency by model, the latency as a distribution in
    // seconds.
    let models: BTreeSet<&str> = found[names::INVOCATIONS]
        .iter()
        .map(|(dims, d)| {
            assert_eq!(dims, &BTreeSet::from(["model".to_owned()]));
            d["model"].as_str().unwrap()
        })
        .collect();
    for m in [PRIMARY, SECONDARY, POOLED, SCARCE] {
        assert!(models.contains(m), "{m} not in {models:?}");
    }
    let latency = &found[names::INVOCATION_LATENCY];
    assert!(latency.iter().all(|(_, d)| {
        let h = &d[names::INVOCATION_LATENCY];
        h["Values"].as_array().is_some_and(|v| !v.is_empty())
            && h["Counts"].as_array().map(Vec::len) == h["Values"].as_array().map(Vec::len)
    }));
    // The connection-pool errors the template's alarm selects.
    assert!(found[names::INVOCATION_ERRORS].iter().any(|(_, d)| {
        d["kind"] == "connection_pool" && d["class"] == "unavailable" && d["model"] == POOLED
    }));

    // Every metric the CloudFormation template reads from the stack's
    // namespace is published with exactly the dimensions it names.
    let wanted = template_stack_metrics();
    assert!(wanted.len() >= 5, "{wanted:?}");
    for (name, dims) in wanted {
        let published = found
            .get(&name)
            .map(|v| v.iter().map(|(d, _)| d).collect::<Vec<_>>());
        assert!(
            published.as_ref().is_some_and(|p| p.contains(&&dims)),
            "the template reads {name} with dimensions {dims:?}; published: {published:?}"
        );
    }
}

// ---------------------------------------------------------------- Redis store

/// A `redis-server` child process on a free loopback port, killed on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or says what is missing.
    fn start() -> Result<RedisServer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {bin} ({e})"))?;
        let server = RedisServer {
            port,
            child: Some(child),
        };
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("{bin} did not listen on port {port} within 5 s"))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[test]
fn the_redis_budget_store_lights_up_its_alert_and_panels() {
    let mut server = match RedisServer::start() {
        Ok(s) => s,
        Err(missing) => {
            let msg = format!(
                "skipped: monitoring (Redis store): {missing}; install redis-server \
                 (apt-get install redis-server) or set REDIS_SERVER_BIN"
            );
            if std::env::var("REQUIRE_EXTERNAL_TESTS").as_deref() == Ok("1") {
                panic!("{msg}");
            }
            // Straight to stderr: `eprintln!` is captured by the test
            // harness for passing tests, and the skip must be seen.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{msg}");
            return;
        }
    };
    // The store's own thread reports connection state and heartbeats, so
    // this scenario records through the global recorder (the only test of
    // this binary that installs one).
    let recorder = gateway::prometheus(REGION);
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only global recorder");
    let store = RedisStore::builder(format!("redis://127.0.0.1:{}", server.port))
        .prefix(format!("monitoring-{}", std::process::id()))
        .region(REGION)
        .heartbeat(Duration::from_millis(50), Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(200))
        .response_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert!(
        store.wait_connected(Duration::from_secs(5)),
        "Redis answers"
    );
    runtime().block_on(async {
        let e = emulator().await;
        let budget = budget_builder().build_with_store(store.clone()).unwrap();
        let svc = tower_bedrock::stack()
            .window(WINDOW)
            .seed(7)
            .fallback_chain(chain())
            .retry(retry_layer())
            .breaker(breaker_layer())
            .token_budget(&budget)
            .service::<_, ConverseRequest, _>(bedrock(&e).await)
            .unwrap();
        let out = exercise(svc.clone(), &e).await;
        check_outcomes(&out);
        let live = || {
            Exposition::parse(&handle.render())
                .series(names::STORE_LIVE_INSTANCES)
                .len()
        };
        until("a heartbeat", || live() > 0).await;
        // Redis goes away: the store degrades and admits from its local
        // share; calls still succeed.
        server.kill();
        for _ in 0..3 {
            svc.clone()
                .oneshot(converse(SECONDARY, 100))
                .await
                .expect("served from the local share");
        }
        let degraded = || {
            Exposition::parse(&handle.render())
                .series(names::STORE_LOCAL_ADMISSIONS)
                .len()
        };
        until("a local admission", || degraded() > 0).await;
        e.shutdown().await;
    });
    let text = handle.render();
    let scrape = Exposition::parse(&text);
    for name in [
        names::STORE_DEGRADED,
        names::STORE_DEGRADED_TRANSITIONS,
        names::STORE_LOCAL_ADMISSIONS,
        names::STORE_LIVE_INSTANCES,
    ] {
        assert!(!scrape.series(name).is_empty(), "{name}:\n{text}");
    }
    let queried = queried_series();
    assert!(
        queried.iter().any(|m| is_store_series(m)),
        "the monitoring watches the Redis store: {queried:?}"
    );
    check_scrape(&scrape, true);
}

// ---------------------------------------------------------------- the files themselves

#[test]
fn every_alert_has_a_severity_and_a_runbook_and_the_seed_alarms_are_there() {
    let alerts = parse_rules(RULES);
    for a in &alerts {
        let severity = a.severity.as_deref().unwrap_or("");
        assert!(
            ["warning", "critical"].contains(&severity),
            "{}: severity {severity:?}",
            a.name
        );
        assert!(a.runbook.len() > 80, "{}: runbook too short", a.name);
        assert!(!a.expr.is_empty(), "{}: no expr", a.name);
    }
    let find = |name: &str| {
        alerts
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("alert {name} missing"))
    };
    // Many throttles in 5 minutes.
    assert!(find("BedrockManyThrottles").expr.contains("[5m]"));
    // Throttles non-zero for several periods.
    assert!(
        find("BedrockThrottlesSustained")
            .expr
            .contains("bedrock_invocation_throttles_total")
    );
    assert!(RULES.contains("alert: BedrockThrottlesSustained\n        expr: |\n          sum by (model, region) (rate(bedrock_invocation_throttles_total[1m])) > 0\n        for: 5m"));
    // Quota utilisation above 80 %.
    assert!(find("BedrockQuotaUtilizationHigh").expr.contains("> 0.8"));
    // Success rate under 95 % over 10 minutes.
    let success = find("BedrockSuccessRateLow");
    assert!(success.expr.contains("[10m]") && success.expr.contains("< 0.95"));
    // A 503 spike for one model or region.
    let spike = find("BedrockServiceUnavailableSpike");
    assert!(spike.expr.contains("by (model, region)") && spike.expr.contains("kind=\"service\""));
    // Connection-pool saturation.
    assert!(
        find("BedrockConnectionPoolSaturated")
            .expr
            .contains("connection_pool")
    );
    // The Redis budget store running on its local share.
    assert!(
        find("BedrockBudgetStoreDegraded")
            .expr
            .contains(names::STORE_DEGRADED)
    );
}

#[test]
fn the_dashboard_keeps_429_and_503_apart_by_model_and_region() {
    let panels = panel_queries();
    let expr_of = |needle: &str| -> Vec<&String> {
        panels
            .iter()
            .filter(|(p, _)| p.contains(needle))
            .map(|(_, e)| e)
            .collect()
    };
    let throttles = expr_of("Throttles (429) by model and region");
    let unavailable = expr_of("Service unavailable (503/500) by model and region");
    assert_eq!((throttles.len(), unavailable.len()), (1, 1));
    assert!(throttles[0].contains("bedrock_invocation_throttles_total"));
    assert!(!throttles[0].contains("unavailable"));
    assert!(unavailable[0].contains("class=\"unavailable\""));
    assert!(!unavailable[0].contains("throttles"));
    for e in throttles.iter().chain(&unavailable) {
        assert!(e.contains("by (model, region)"), "{e}");
    }
}

#[test]
fn the_dashboard_variables_read_every_series_of_the_stack() {
    // Not one layer's metric: any `bedrock_*` series carrying the label,
    // so a stack without InvocationMetricsLayer still fills them.
    for (name, query) in variables() {
        assert!(
            query.contains("__name__=~\"bedrock_.+\""),
            "variable {name}: {query}"
        );
    }
    let scrape = Exposition::parse(
        "# TYPE bedrock_circuit_state gauge\n\
         bedrock_circuit_state{model=\"m1\",region=\"r1\"} 0\n\
         bedrock_budget_utilization_ratio{model=\"m2\",window=\"tokens\",region=\"r2\"} 0.5\n\
         other_total{model=\"m3\",region=\"r3\"} 1\n",
    );
    let vars: BTreeMap<String, String> = variables().into_iter().collect();
    assert_eq!(
        variable_values(&vars["region"], &scrape),
        BTreeSet::from(["r1".to_owned(), "r2".to_owned()])
    );
    assert_eq!(
        variable_values(&vars["model"].replace("$region", "r2"), &scrape),
        BTreeSet::from(["m2".to_owned()])
    );
}

#[test]
fn the_parsers_read_what_they_should() {
    let (selectors, by) = selectors_in(
        r#"sum by (model, region) (rate(bedrock_x_total{class="a", kind=~"b|c"}[1m])) / bedrock_y_total"#,
    );
    assert_eq!(selectors.len(), 2);
    assert_eq!(selectors[0].0, "bedrock_x_total");
    assert_eq!(
        selectors[0].1,
        vec![
            Matcher {
                label: "class".into(),
                op: "=".into(),
                value: "a".into()
            },
            Matcher {
                label: "kind".into(),
                op: "=~".into(),
                value: "b|c".into()
            },
        ]
    );
    assert_eq!(selectors[0].1[1].literals(), vec!["b", "c"]);
    assert_eq!(selectors[1], ("bedrock_y_total".to_owned(), Vec::new()));
    assert_eq!(by, ["model", "region"].map(String::from).into());
    // Histogram suffixes stay: `_bucket` is its own series.
    assert_eq!(
        metrics_in(
            "histogram_quantile(0.5, rate(bedrock_lat_seconds_bucket[5m])) / bedrock_n_total"
        ),
        ["bedrock_lat_seconds_bucket", "bedrock_n_total"]
            .map(String::from)
            .into()
    );
    let scrape = Exposition::parse(
        "# HELP x y\n# TYPE bedrock_lat_seconds histogram\n\
         bedrock_lat_seconds_bucket{model=\"a:0\",le=\"0.5\"} 1\n\
         bedrock_lat_seconds_bucket{model=\"a:0\",le=\"+Inf\"} 2\n\
         bedrock_lat_seconds_sum{model=\"a:0\"} 0.7\n\
         bedrock_n_total 3\n\
         bedrock_q{v=\"say \\\"hi\\\", ok\"} 1\n",
    );
    assert_eq!(scrape.series("bedrock_lat_seconds_bucket").len(), 2);
    assert_eq!(scrape.series("bedrock_lat_seconds_bucket")[1]["le"], "+Inf");
    assert_eq!(scrape.series("bedrock_n_total"), &[Labels::new()]);
    assert_eq!(scrape.series("bedrock_q")[0]["v"], "say \"hi\", ok");
    assert!(scrape.series("bedrock_lat_seconds").is_empty());
    assert_eq!(
        scrape.label_values("bedrock_lat", "model"),
        BTreeSet::from(["a:0".to_owned()])
    );
    let alerts = parse_rules(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |\n          up\n          > 1\n        labels:\n          severity: warning\n        annotations:\n          runbook: |\n            do this\n",
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].expr, "up\n> 1");
    assert_eq!(alerts[0].severity.as_deref(), Some("warning"));
    assert_eq!(alerts[0].runbook, "do this");
}

#[test]
fn a_summary_exporter_fails_the_check() {
    // Without buckets the exporter renders a summary: no `_bucket` series,
    // and the check refuses the dashboard's latency panel.
    let scrape = Exposition::parse(
        "bedrock_invocation_latency_seconds{model=\"m\",region=\"r\",quantile=\"0.5\"} 0.1\n\
         bedrock_invocation_latency_seconds_count{model=\"m\",region=\"r\"} 1\n",
    );
    let (_, latency) = panel_queries()
        .into_iter()
        .find(|(_, e)| e.contains("bedrock_invocation_latency_seconds_bucket"))
        .expect("a latency quantile panel");
    let refused = std::panic::catch_unwind(|| check_expr("latency", &latency, &scrape));
    assert!(refused.is_err());
}
