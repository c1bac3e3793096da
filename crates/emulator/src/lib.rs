//! A local Amazon Bedrock Runtime for tests, benchmarks and incident
//! rehearsals.
//!
//! The official `aws-sdk-bedrockruntime` client (or any AWS SDK) talks to it
//! unchanged through `endpoint_url`, over HTTP/1.1 or HTTP/2 with prior
//! knowledge on the same port. It speaks Bedrock's wire protocol
//! (restJson1 errors with `x-amzn-ErrorType` and `x-amzn-RequestId`,
//! `application/vnd.amazon.eventstream` streams), serves Converse,
//! ConverseStream, InvokeModel, InvokeModelWithResponseStream and
//! CountTokens, enforces Bedrock's quota model ([`Quota`]:
//! TPM with reservation at admission and settlement at completion, burndown,
//! optional RPM, tokens per day, a configurable window) and can be told to
//! misbehave ([`FaultRule`]s, deterministic given a seed). An admin API under
//! [`ADMIN_PREFIX`] reads counters and changes quotas, faults, latency and
//! the quota clock at run time.
//!
//! Ids: the known foundation models are [`DEFAULT_MODELS`] plus
//! [`EmulatorConfig::models`]; any inference profile prefix (`us.`,
//! `global.`...) or ARN of a known model is accepted; quotas are kept per id
//! (an ARN counts as its resource id), so a profile has quotas of its own.
//! An unknown id is a 400 ValidationException, as on Bedrock.
//!
//! Validation: the [`catalogue`] holds each model's limits (output tokens,
//! context window, body size, burndown, whether a bare id is refused in
//! favour of an inference profile) and their sources; requests beyond them,
//! and conversations Bedrock refuses, get Bedrock's ValidationException.
//!
//! Tokens: see [`tokens`] for the heuristic shared by CountTokens, usage
//! and quotas.
//!
//! In tests: the default [`Latency`] is zero; a [`EmulatorConfig::frozen_clock`]
//! makes quota windows move only through [`EmulatorHandle::advance_clock`],
//! so no outcome depends on when a wall-clock window turns; fault draws are
//! deterministic given [`EmulatorConfig::seed`] and the order of requests.
//! Use an SDK client with retries disabled, so that every 429/503 is seen.
//!
//! Logging: one `tracing` event per request (target
//! `bedrock_emulator::request`) with the operation, model id, status, error
//! code, request id and token counts; never a body or a credential.
//!
//! # Example
//!
//! ```
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tower_bedrock_emulator::{Emulator, EmulatorConfig, Quota};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = EmulatorConfig::builder()
//!     .default_quota(Quota::tokens(10_000))
//!     .build()?;
//! let emulator = Emulator::start(config).await?;
//! // Point the SDK at `emulator.endpoint_url()`; here, a bare HTTP call.
//! let body = r#"{"input":{"converse":{"messages":[{"role":"user","content":[{"text":"Hello there"}]}]}}}"#;
//! let req = format!(
//!     "POST /model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/count-tokens HTTP/1.1\r\n\
//!      Host: x\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKID/...\r\n\
//!      Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
//!     body.len()
//! );
//! let mut tcp = tokio::net::TcpStream::connect(emulator.addr()).await?;
//! tcp.write_all(req.as_bytes()).await?;
//! let mut answer = String::new();
//! tcp.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200"));
//! assert!(answer.ends_with(r#"{"inputTokens":3}"#));
//! assert_eq!(emulator.counters().count_tokens, 1);
//! emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
pub mod catalogue;
mod config;
mod faults;
mod ops;
mod quota;
mod server;
mod state;
pub mod tokens;
mod validate;
mod wire;

pub use catalogue::{CATALOGUE, ModelSpec};
pub use config::{
    ConfigError, DEFAULT_MODELS, EmulatorConfig, EmulatorConfigBuilder, Latency, Quota,
};
pub use faults::{FaultKind, FaultRule};
pub use quota::BucketSnapshot;
pub use server::{ADMIN_PREFIX, ClockUpdate, Emulator, EmulatorHandle, QuotaUpdate, StartError};
pub use state::CounterSnapshot;
pub use wire::messages;
