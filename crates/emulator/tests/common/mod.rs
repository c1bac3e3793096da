//! Helpers shared by the integration tests: an SDK client pointed at the
//! emulator and a tiny raw HTTP/1.1 client for the admin API and for
//! requests the SDK cannot make (no signature, malformed bodies).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::config::{
    BehaviorVersion, Credentials, Region, StalledStreamProtectionConfig,
};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_bedrock_emulator::{Emulator, EmulatorConfig, EmulatorHandle};

/// Claude Sonnet 4 through the US inference profile (Bedrock refuses its
/// bare id on demand).
pub const SONNET4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
/// The foundation model id of [`SONNET4`].
pub const SONNET4_BASE: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
pub const HAIKU3: &str = "anthropic.claude-3-haiku-20240307-v1:0";
pub const NOVA: &str = "amazon.nova-lite-v1:0";
pub const LLAMA: &str = "meta.llama3-8b-instruct-v1:0";

pub fn client_with_timeout(handle: &EmulatorHandle, read: Option<Duration>) -> Client {
    let mut timeouts = TimeoutConfig::builder().connect_timeout(Duration::from_secs(5));
    if let Some(r) = read {
        timeouts = timeouts.read_timeout(r);
    }
    let conf = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
        .endpoint_url(handle.endpoint_url())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts.build())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .build();
    Client::from_conf(conf)
}

pub fn client(handle: &EmulatorHandle) -> Client {
    client_with_timeout(handle, None)
}

pub async fn start(config: EmulatorConfig) -> EmulatorHandle {
    Emulator::start(config).await.expect("emulator starts")
}

pub fn user(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .expect("valid message")
}

pub fn max_tokens(n: i32) -> InferenceConfiguration {
    InferenceConfiguration::builder().max_tokens(n).build()
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

/// One request on a fresh connection (`Connection: close`).
pub async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(req.as_bytes()).await.expect("write");
    tcp.write_all(body).await.expect("write body");
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status = lines.next().expect("status line")[9..12]
        .parse()
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Raw {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub const SIGV4: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00",
);

/// A signed-looking model call.
pub async fn model_call(addr: SocketAddr, model: &str, op: &str, body: &str) -> Raw {
    let path = format!("/model/{}/{op}", model.replace(':', "%3A"));
    raw(
        addr,
        "POST",
        &path,
        &[SIGV4, ("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
}

/// An admin call with a JSON body.
pub async fn admin(handle: &EmulatorHandle, method: &str, path: &str, body: &str) -> Raw {
    raw(
        handle.addr(),
        method,
        &format!("/_emulator{path}"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
}
