//! The axum gateway example driven over loopback with raw HTTP/1.1, the
//! real SDK underneath talking to the in-process emulator: answers, tenant
//! checks, the fallback serving once the primary's budget is spent, a local
//! shed as 429 with Retry-After, open circuits as 503 with Retry-After, and
//! `/metrics` in the Prometheus format with model and region labels.

#[path = "../examples/axum_gateway.rs"]
mod gateway;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_bedrock_emulator::{Emulator, EmulatorConfig, Latency};

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
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n");
    if let Some(t) = tenant {
        req.push_str(&format!("x-tenant: {t}\r\n"));
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

const CHAT: &str = r#"{"prompt":"Hello there, gateway","max_tokens":190}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_falls_back_sheds_and_reports() {
    // Every answer is 190 tokens: a primary call (Claude 4, burndown 5)
    // settles to 5 + 950 tokens of a 1,000-token budget, a fallback call to
    // 5 + 190.
    let emulator = Emulator::start(
        EmulatorConfig::builder()
            .output_tokens(190)
            .latency(Latency::default())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let settings = gateway::Settings {
        tokens_per_minute: 1_000,
        max_wait_secs: 0.0,
        ..gateway::Settings::defaults()
    };
    let recorder = gateway::prometheus("eu-west-3");
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder).expect("first recorder");
    let client = tower_bedrock::sdk::BedrockClientBuilder::new()
        .region("eu-west-3")
        .endpoint_url(emulator.endpoint_url())
        .static_credentials("AKIDEXAMPLE", "not-a-secret")
        .build()
        .await
        .unwrap();
    let state = gateway::state(&settings, client, metrics).unwrap();
    let breakers = state.breakers().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, gateway::router(state)).await.unwrap();
    });

    // Tenants are checked.
    let a = http(addr, "POST", "/v1/chat", None, CHAT).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = http(addr, "POST", "/v1/chat", Some("mallory"), CHAT).await;
    assert_eq!(a.status, 403, "{}", a.body);

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
    let j = a.json();
    assert_eq!(
        (j["error"].as_str(), j["kind"].as_str()),
        (Some("local"), Some("budget_exhausted"))
    );
    assert!(!a.body.contains("Hello there"), "no prompt in errors");
    assert_eq!(emulator.counters().requests, sent);

    // Both models' breakers forced open: 503 with Retry-After.
    breakers.force_open(&settings.model);
    breakers.force_open(&settings.fallback_model);
    let a = http(addr, "POST", "/v1/chat", Some("app-a"), CHAT).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.header("retry-after").is_some());
    assert_eq!(a.json()["kind"], "circuit_open");
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
