//! The axum gateway example driven over loopback with raw HTTP/1.1, the
//! real SDK underneath talking to the in-process emulator: answers, tenant
//! checks, the fallback serving once the primary's budget is spent, a local
//! shed as 429 with Retry-After, open circuits as 503 with Retry-After,
//! `/metrics` in the Prometheus format with model and region labels, and
//! the Server-Sent Events endpoint: the answer streamed, a fallback before
//! the first token, a typed error event after it; bad JSON and empty
//! prompts answered in JSON; a throttle the stack cannot absorb reaching
//! the caller as a 429 with Retry-After within its deadline.

#[path = "../examples/axum_gateway.rs"]
mod gateway;
#[path = "support/loopback.rs"]
mod loopback;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_bedrock_emulator::{FaultKind, FaultRule};

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    tenant: Option<&str>,
    body: &str,
) -> Answer {
    let headers: Vec<(&str, &str)> = tenant.map(|t| ("x-tenant", t)).into_iter().collect();
    http_with(addr, method, path, &headers, body).await
}

async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a full HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Serves the gateway's router over `state` on a free loopback port: the
/// server's task and its address.
async fn serve(state: gateway::AppState) -> (tokio::task::JoinHandle<()>, SocketAddr) {
    let (listener, addr) = loopback::listener().await;
    let server = tokio::spawn(async move {
        axum::serve(listener, gateway::router(state)).await.unwrap();
    });
    (server, addr)
}

const CHAT: &str = r#"{"prompt":"Hello there, gateway","max_tokens":190}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_falls_back_sheds_and_reports() {
    // Every answer is 190 tokens: a primary call (Claude 4, burndown 5)
    // settles to 5 + 950 tokens of a 1,000-token budget, a fallback call to
    // 5 + 190.
    let emulator = loopback::emulator(190, true).await;
    let settings = gateway::Settings {
        tokens_per_minute: 1_000,
        max_wait_secs: 0.0,
        ..gateway::Settings::defaults()
    };
    let recorder = gateway::prometheus("eu-west-3");
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder).expect("first recorder");
    let client = loopback::client(&emulator, "eu-west-3").await;
    let state = gateway::state(&settings, client, metrics).unwrap();
    let breakers = state.breakers().clone();
    let (server, addr) = serve(state).await;

    // Tenants are checked.
    let a = http(addr, "POST", "/v1/chat", None, CHAT).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.json()["error"]["code"], "MissingTenant");
    let a = http(addr, "POST", "/v1/chat", Some("mallory"), CHAT).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.json()["error"]["code"], "UnknownTenant");

    // Bad input is answered in JSON, without echoing it; nothing is sent.
    let a = http(
        addr,
        "POST",
        "/v1/chat",
        Some("app-a"),
        r#"{"prompt": "Hello"#,
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(a.json()["error"]["code"], "InvalidJson");
    assert!(!a.body.contains("Hello"), "{}", a.body);
    for path in ["/v1/chat", "/v1/chat/stream"] {
        let a = http(addr, "POST", path, Some("app-a"), r#"{"prompt": " "}"#).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(
            (
                a.json()["error"]["class"].as_str(),
                a.json()["error"]["code"].as_str()
            ),
            (Some("client"), Some("EmptyPrompt"))
        );
    }
    let a = http_with(
        addr,
        "POST",
        "/v1/chat",
        &[("x-tenant", "app-a"), ("x-request-timeout-ms", "soon")],
        CHAT,
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.json()["error"]["code"], "InvalidTimeout");
    assert_eq!(emulator.counters().requests, 0);

    // The primary answers.
    let a = http(addr, "POST", "/v1/chat", Some("app-a"), CHAT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["model"], settings.model.as_str());
    assert_eq!(j["degraded"], false);
    assert_eq!(j["output_tokens"], 190);
    assert_eq!(j["text"].as_str().unwrap().split(' ').count(), 190);

    // Its budget is spent: the fallback model answers, degraded, until its
    // own budget is spent too (5 calls of 195 tokens in 1,000).
    for i in 0..5 {
        let a = http(addr, "POST", "/v1/chat", Some("app-b"), CHAT).await;
        assert_eq!(a.status, 200, "call {i}: {}", a.body);
        let j = a.json();
        assert_eq!(j["model"], settings.fallback_model.as_str(), "call {i}");
        assert_eq!(j["degraded"], true);
    }
    // Then the gateway sheds locally: 429 with Retry-After, nothing sent.
    let sent = emulator.counters().requests;
    let a = http(addr, "POST", "/v1/chat", Some("app-c"), CHAT).await;
    assert_eq!(a.status, 429, "{}", a.body);
    let retry_after: u64 = a
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    // Room comes back as the 60 s window slides (rounded up).
    assert!((1..=61).contains(&retry_after), "{retry_after}");
    let j = &a.json()["error"];
    assert_eq!(
        (j["class"].as_str(), j["kind"].as_str()),
        (Some("local"), Some("budget_exhausted"))
    );
    assert_eq!(j["retry_after_seconds"], retry_after);
    assert!(!a.body.contains("Hello there"), "no prompt in errors");
    assert_eq!(emulator.counters().requests, sent);

    // Both models' breakers forced open: 503 with Retry-After.
    breakers.force_open(&settings.model);
    breakers.force_open(&settings.fallback_model);
    let a = http(addr, "POST", "/v1/chat", Some("app-a"), CHAT).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.header("retry-after").is_some());
    assert_eq!(a.json()["error"]["kind"], "circuit_open");
    assert_eq!(emulator.counters().requests, sent);

    // Metrics, with model and region labels.
    let m = http(addr, "GET", "/metrics", None, "").await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let line = m
        .body
        .lines()
        .find(|l| l.starts_with("bedrock_invocations_total{") && l.contains(&settings.model))
        .unwrap_or_else(|| panic!("no invocations of the primary in:\n{}", m.body));
    assert!(line.contains("region=\"eu-west-3\""), "{line}");
    assert!(line.ends_with(" 1"), "{line}");
    assert!(m.body.contains("bedrock_degraded_served_total{"));
    assert!(m.body.contains("bedrock_budget_sheds_total{"));
    assert!(m.body.contains("bedrock_circuit_rejected_total{"));

    server.abort();
    emulator.shutdown().await;
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

/// The `(event, data)` pairs of a Server-Sent Events body.
fn sse(a: &Answer) -> Vec<(String, serde_json::Value)> {
    assert!(
        a.header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        a.headers
    );
    let body = if a
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(&a.body)
    } else {
        a.body.clone()
    };
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let field = |name: &str| {
                e.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_else(|| panic!("no {name} in {e:?}"))
            };
            let data = field("data:");
            (
                field("event:"),
                serde_json::from_str(&data).unwrap_or_else(|err| panic!("{err}: {data}")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_streams_falls_back_before_the_first_token_and_types_late_errors() {
    let emulator = loopback::emulator(12, true).await;
    // Compressed time: the retry's waits scale with the window. A primary
    // of its own, so that the other test's count of its primary's
    // invocations (in the process-wide recorder) is not disturbed.
    let settings = gateway::Settings {
        window_secs: 0.6,
        model: "anthropic.claude-3-haiku-20240307-v1:0".into(),
        ..gateway::Settings::defaults()
    };
    let client = loopback::client(&emulator, "us-east-1").await;
    // A recorder of its own, not installed: the other test owns the global.
    let metrics = gateway::prometheus("us-east-1").handle();
    let state = gateway::state(&settings, client, metrics).unwrap();
    let breakers = state.breakers().clone();
    let (server, addr) = serve(state).await;
    const ASK: &str = r#"{"prompt":"Stream me something","max_tokens":100}"#;
    let text = |events: &[(String, serde_json::Value)]| -> String {
        events
            .iter()
            .filter(|(e, _)| e == "delta")
            .map(|(_, d)| d["text"].as_str().unwrap().to_owned())
            .collect()
    };

    // The primary streams the answer, then says who answered.
    let a = http(addr, "POST", "/v1/chat/stream", Some("app-a"), ASK).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = sse(&a);
    assert!(events.len() > 2, "{events:?}");
    assert_eq!(text(&events).split_whitespace().count(), 12);
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done");
    assert_eq!(done["model"], settings.model.as_str());
    assert_eq!(done["degraded"], false);
    assert_eq!(done["output_tokens"], 12);

    // The primary fails inside its stream before the first token, every
    // time: the stack retries, then falls back; the client sees a normal
    // stream from the fallback model.
    emulator
        .set_faults(vec![
            FaultRule::new(FaultKind::StreamUnavailable { after_events: 0 })
                .model(settings.model.as_str()),
        ])
        .unwrap();
    let a = http(addr, "POST", "/v1/chat/stream", Some("app-b"), ASK).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = sse(&a);
    assert_eq!(text(&events).split_whitespace().count(), 12);
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    assert_eq!(done["model"], settings.fallback_model.as_str());
    assert_eq!(done["degraded"], true);
    assert!(done["attempts"].as_u64().unwrap() > 2, "{done}");
    let failed = emulator.counters().stream_exceptions;
    assert!(failed > 1, "retried before falling back");
    let primary = breakers.get(&settings.model).unwrap();
    assert_eq!(u64::from(primary.failures), failed, "{primary:?}");

    // After the first token the model never changes: the stream ends with
    // a typed error event.
    emulator
        .set_faults(vec![
            FaultRule::new(FaultKind::StreamUnavailable { after_events: 2 })
                .model(settings.model.as_str())
                .count(1),
        ])
        .unwrap();
    let sent = emulator.counters().requests;
    let a = http(addr, "POST", "/v1/chat/stream", Some("app-c"), ASK).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = sse(&a);
    let (first, _) = &events[0];
    assert_eq!(first, "delta", "{events:?}");
    let (last, failure) = events.last().unwrap();
    assert_eq!(last, "error", "{events:?}");
    assert_eq!(
        (
            failure["error"]["class"].as_str(),
            failure["error"]["kind"].as_str()
        ),
        (Some("unavailable"), Some("service"))
    );
    assert!(!events.iter().any(|(e, _)| e == "done"));
    assert!(!a.body.contains("Stream me"), "no prompt in events");
    assert_eq!(
        emulator.counters().requests,
        sent + 1,
        "no other model tried"
    );
    let after = breakers.get(&settings.model).unwrap();
    assert_eq!(after.failures, primary.failures + 1, "{after:?}");

    // A failure the stack cannot absorb before the stream opens is an HTTP
    // error answer, as for /v1/chat.
    breakers.force_open(&settings.model);
    breakers.force_open(&settings.fallback_model);
    let a = http(addr, "POST", "/v1/chat/stream", Some("app-a"), ASK).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.json()["error"]["kind"], "circuit_open");

    server.abort();
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_the_stack_cannot_absorb_reaches_the_caller_as_429_within_its_deadline() {
    // Bedrock's token-rate throttle on every model, on every call: real
    // 60 s windows, so the default retry would wait minutes for one.
    let emulator = loopback::emulator(8, false).await;
    emulator
        .set_faults(vec![FaultRule::new(FaultKind::TooManyTokens)])
        .unwrap();
    assert!(gateway::Settings::defaults().request_timeout_secs < 30.0);
    // A 3 s default keeps the test short; the default's own bound is
    // tested with paused time in tests/error_reply.rs.
    let settings = gateway::Settings {
        model: "anthropic.claude-3-haiku-20240307-v1:0".into(),
        request_timeout_secs: 3.0,
        ..gateway::Settings::defaults()
    };
    let client = loopback::client(&emulator, "us-east-1").await;
    let metrics = gateway::prometheus("us-east-1").handle();
    let state = gateway::state(&settings, client, metrics).unwrap();
    let (server, addr) = serve(state).await;

    let check = |a: &Answer, took: Duration, limit: Duration| -> serde_json::Value {
        assert_eq!(a.status, 429, "{}", a.body);
        assert!(took < limit + Duration::from_secs(1), "took {took:?}");
        let after: u64 = a
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=61).contains(&after), "{after}");
        let j = a.json()["error"].clone();
        assert_eq!(j["retry_after_seconds"], after, "{j}");
        j
    };
    // No timeout sent: the gateway's own limit. Bedrock's throttle, as
    // Bedrock said it.
    let start = Instant::now();
    let a = http(addr, "POST", "/v1/chat", Some("app-a"), CHAT).await;
    let j = check(&a, start.elapsed(), Duration::from_secs(3));
    assert_eq!(
        (j["class"].as_str(), j["kind"].as_str(), j["code"].as_str()),
        (
            Some("throttled"),
            Some("token_rate"),
            Some("ThrottlingException")
        )
    );
    assert!(j["request_id"].is_string(), "{j}");
    // The caller's own, shorter limit. The throttle told the budget the
    // window's tokens are spent: it sheds the call locally, saying when
    // the next window brings room (nothing is sent to Bedrock meanwhile).
    let sent = emulator.counters().requests;
    let start = Instant::now();
    let headers = [("x-tenant", "app-a"), ("x-request-timeout-ms", "1500")];
    let a = http_with(addr, "POST", "/v1/chat", &headers, CHAT).await;
    let j = check(&a, start.elapsed(), Duration::from_millis(1500));
    assert!(j["class"] == "throttled" || j["class"] == "local", "{j}");
    assert!(emulator.counters().requests <= sent + 1);

    server.abort();
    emulator.shutdown().await;
}
