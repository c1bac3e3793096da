//! The shipped monitoring (`monitoring/prometheus/bedrock-alerts.yml` and
//! `monitoring/grafana/bedrock-dashboard.json`) names only metrics and
//! labels that the code emits.
//!
//! A recording `metrics` recorder captures every metric the preset stack
//! registers while a scripted mock Bedrock walks it through throttles,
//! 503s, retries (until the retry budget runs out), budget waits and sheds,
//! an open breaker and a fallback. Every metric an alert or a panel
//! queries must be among them, with the labels it filters or groups by
//! (`region` is attached per process by the scrape or the exporter, `le`
//! by Prometheus histograms). Each alert also needs a severity and a
//! runbook, and the seed's six alarms must all be there.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower::{Service, ServiceExt};
use tower_bedrock::breaker::CircuitBreakLayer;
use tower_bedrock::budget::{Budget, Limits};
use tower_bedrock::classify::{ThrottleClassifyLayer, classify_parts};
use tower_bedrock::core::{CallReport, ModelRequest, ReportsUsage, TokenDemand, Usage, names};
use tower_bedrock::fallback::Chain;
use tower_bedrock::retry::{QuotaAlignedRetryLayer, RetryBudgetConfig};

const RULES: &str = include_str!("../monitoring/prometheus/bedrock-alerts.yml");
const DASHBOARD: &str = include_str!("../monitoring/grafana/bedrock-dashboard.json");

/// Labels that are not emitted by the code: `region` is attached per
/// process, `le` belongs to Prometheus histogram buckets.
const EXTERNAL_LABELS: [&str; 2] = ["region", "le"];

// ---------------------------------------------------------------- capture

type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

#[derive(Default)]
struct Capture(Seen);

impl Capture {
    fn note(&self, key: &Key) {
        let mut seen = self.0.lock().unwrap();
        let labels = seen.entry(key.name().to_owned()).or_default();
        for l in key.labels() {
            labels.insert(l.key().to_owned());
        }
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.note(key);
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.note(key);
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.note(key);
        Histogram::noop()
    }
}

// ---------------------------------------------------------------- mock

const PRIMARY: &str = "anthropic.claude-3-5-sonnet-20241022-v2:0";
const SECONDARY: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
const OTHER: &str = "amazon.nova-lite-v1:0";

#[derive(Clone)]
struct Ask {
    model: String,
    input: u64,
    report: Option<CallReport>,
}

impl ModelRequest for Ask {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn set_model_id(&mut self, id: &str) {
        self.model = id.to_owned();
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand {
            input_tokens: self.input,
            max_output_tokens: Some(100),
        }
    }
    fn report(&self) -> Option<&CallReport> {
        self.report.as_ref()
    }
}

struct Answer;
impl ReportsUsage for Answer {
    fn usage(&self) -> Option<Usage> {
        Some(Usage::new(100, 20))
    }
}

#[derive(Debug)]
struct WireError(u16, &'static str, &'static str);

/// Replies of the primary model, in order (`None`: success); the
/// secondary always answers.
type Script = Arc<Mutex<VecDeque<Option<WireError>>>>;

fn throttle() -> Option<WireError> {
    Some(WireError(
        429,
        "ThrottlingException",
        "Too many tokens, please wait before trying again.",
    ))
}
fn unavailable() -> Option<WireError> {
    Some(WireError(
        503,
        "ServiceUnavailableException",
        "Service temporarily unavailable, please try again.",
    ))
}
fn pool() -> Option<WireError> {
    Some(WireError(
        503,
        "ServiceUnavailableException",
        "Too many connections, please wait before trying again.",
    ))
}

async fn call<S>(svc: &mut S, model: &str, input: u64)
where
    S: Service<Ask>,
{
    let ask = Ask {
        model: model.to_owned(),
        input,
        report: Some(CallReport::new()),
    };
    if let Ok(ready) = svc.ready().await {
        let _ = ready.call(ask).await;
    }
}

async fn exercise_the_stack() {
    let script: Script = Arc::default();
    let replies = script.clone();
    let bedrock = tower::service_fn(move |req: Ask| {
        let reply = if req.model == PRIMARY {
            replies.lock().unwrap().pop_front().flatten()
        } else {
            None
        };
        async move {
            match reply {
                None => Ok(Answer),
                Some(e) => Err(e),
            }
        }
    });
    let budget = Budget::builder()
        .tokens_per_window(100_000)
        .key_limits(OTHER, Limits::tokens(1_000))
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let tenant = budget.tenant("app-a", 1).unwrap();
    let layer = tower_bedrock::stack()
        .seed(11)
        .fallback_chain(Chain::new().then(PRIMARY).then(SECONDARY))
        .retry(
            QuotaAlignedRetryLayer::builder()
                .seed(11)
                .retry_budget(
                    RetryBudgetConfig::new()
                        .capacity(10)
                        .retry_cost(5)
                        .success_refill(0),
                )
                .build()
                .unwrap(),
        )
        .breaker(
            CircuitBreakLayer::builder()
                .consecutive_failures(4)
                .build()
                .unwrap(),
        )
        .budget(tenant.layer())
        .classify(
            ThrottleClassifyLayer::new()
                .classifier(|e: &WireError| classify_parts(Some(e.0), Some(e.1), Some(e.2))),
        )
        .into_layer()
        .unwrap();
    let mut svc = layer.boxed(bedrock);

    // A throttle, retried after the window: invocations, errors, throttles,
    // retries, budget utilisation, tokens, latency.
    script.lock().unwrap().extend([throttle(), None]);
    call(&mut svc, PRIMARY, 100).await;
    // A connection-pool 503, retried.
    script.lock().unwrap().extend([pool(), None]);
    call(&mut svc, PRIMARY, 100).await;
    // Service 503s until the retry budget (10 tokens, 5 per retry, no
    // refill) is spent and the breaker (4 in a row) opens: retry budget
    // exhausted, breaker transitions, then a fallback to the secondary.
    script
        .lock()
        .unwrap()
        .extend([unavailable(), unavailable(), unavailable(), unavailable()]);
    call(&mut svc, PRIMARY, 100).await;
    call(&mut svc, PRIMARY, 100).await;
    // The breaker is open: rejected at once, served by the fallback.
    call(&mut svc, PRIMARY, 100).await;
    // Budget pressure on a third model: a call reserves its whole window
    // (900 + 100 of 1,000) and settles to 920; the next waits for room
    // (budget wait) and is shed after its maximum wait of 1 s.
    call(&mut svc, OTHER, 900).await;
    call(&mut svc, OTHER, 900).await;
}

fn emitted() -> BTreeMap<String, BTreeSet<String>> {
    let capture = Capture::default();
    let seen = capture.0.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    {
        let _guard = metrics::set_default_local_recorder(&capture);
        rt.block_on(exercise_the_stack());
    }
    seen.lock().unwrap().clone()
}

// ---------------------------------------------------------------- parsing

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

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A series name without the suffixes Prometheus adds to histograms.
fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// Metric names in a PromQL expression, without histogram suffixes.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(pos) = rest.find("bedrock_") {
        let before_ok = pos == 0 || !is_ident(rest[..pos].chars().last().unwrap());
        let end = rest[pos..]
            .find(|c: char| !is_ident(c))
            .map_or(rest.len(), |e| pos + e);
        if before_ok {
            out.insert(base_name(&rest[pos..end]).to_owned());
        }
        rest = &rest[end..];
    }
    out
}

/// `(metric, label)` pairs of the selectors `metric{label="..."}` in an
/// expression, and the labels of its `by (...)` clauses.
fn labels_in(expr: &str) -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut selectors = Vec::new();
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
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .expect("closed selector");
        for matcher in rest[open + 1..close].split(',') {
            let label: String = matcher
                .trim()
                .chars()
                .take_while(|c| is_ident(*c))
                .collect();
            if !label.is_empty() {
                selectors.push((base_name(&name).to_owned(), label));
            }
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

fn check_expr(where_: &str, expr: &str, emitted: &BTreeMap<String, BTreeSet<String>>) {
    let metrics = metrics_in(expr);
    assert!(!metrics.is_empty(), "{where_}: no metric in {expr}");
    for m in &metrics {
        assert!(
            emitted.contains_key(m),
            "{where_}: metric {m} is not emitted by the code (emitted: {:?})",
            emitted.keys().collect::<Vec<_>>()
        );
    }
    let (selectors, by) = labels_in(expr);
    for (metric, label) in selectors {
        if EXTERNAL_LABELS.contains(&label.as_str()) {
            continue;
        }
        let known = emitted.get(&metric).map(|l| l.contains(&label));
        assert_eq!(
            known,
            Some(true),
            "{where_}: {metric} has no label {label} (it has {:?})",
            emitted.get(&metric)
        );
    }
    for label in by {
        if EXTERNAL_LABELS.contains(&label.as_str()) {
            continue;
        }
        assert!(
            metrics
                .iter()
                .any(|m| emitted.get(m).is_some_and(|l| l.contains(&label))),
            "{where_}: no metric of `{expr}` has the label {label}"
        );
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn every_metric_the_alerts_and_the_dashboard_query_is_emitted() {
    let emitted = emitted();
    // The capture itself saw the whole stack at work.
    for name in [
        names::INVOCATIONS,
        names::INVOCATION_ERRORS,
        names::INVOCATION_THROTTLES,
        names::RETRIES,
        names::RETRY_BUDGET_EXHAUSTED,
        names::BUDGET_UTILIZATION,
        names::BUDGET_WAITS,
        names::BUDGET_SHEDS,
        names::CIRCUIT_STATE,
        names::CIRCUIT_REJECTED,
        names::FALLBACKS,
        names::DEGRADED_SERVED,
    ] {
        assert!(
            emitted.contains_key(name),
            "{name} not captured: {emitted:?}"
        );
    }

    let alerts = parse_rules(RULES);
    assert!(alerts.len() >= 6, "{alerts:?}");
    for a in &alerts {
        check_expr(&a.name, &a.expr, &emitted);
    }

    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().expect("targets") {
            check_expr(title, t["expr"].as_str().expect("expr"), &emitted);
            exprs += 1;
        }
    }
    assert!(exprs >= panels.len());
}

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
    assert!(RULES.contains("alert: BedrockThrottlesSustained"));
    assert!(
        find("BedrockThrottlesSustained")
            .expr
            .contains("bedrock_invocation_throttles_total")
    );
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
}

#[test]
fn the_dashboard_keeps_429_and_503_apart_by_model_and_region() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let expr_of = |needle: &str| -> Vec<String> {
        panels
            .iter()
            .filter(|p| p["title"].as_str().unwrap_or("").contains(needle))
            .flat_map(|p| p["targets"].as_array().unwrap().iter())
            .map(|t| t["expr"].as_str().unwrap().to_owned())
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
fn the_parsers_read_what_they_should() {
    let (selectors, by) =
        labels_in(r#"sum by (model, region) (rate(bedrock_x_total{class="a", kind=~"b|c"}[1m]))"#);
    assert_eq!(
        selectors,
        vec![
            ("bedrock_x_total".to_owned(), "class".to_owned()),
            ("bedrock_x_total".to_owned(), "kind".to_owned())
        ]
    );
    assert_eq!(by, ["model", "region"].map(String::from).into());
    assert_eq!(
        metrics_in(
            "histogram_quantile(0.5, rate(bedrock_lat_seconds_bucket[5m])) / bedrock_n_total"
        ),
        ["bedrock_lat_seconds", "bedrock_n_total"]
            .map(String::from)
            .into()
    );
    let alerts = parse_rules(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |\n          up\n          > 1\n        labels:\n          severity: warning\n        annotations:\n          runbook: |\n            do this\n",
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].expr, "up\n> 1");
    assert_eq!(alerts[0].severity.as_deref(), Some("warning"));
    assert_eq!(alerts[0].runbook, "do this");
}
