//! Safe logging: the whole preset stack over the real SDK against the
//! in-process emulator, logged at TRACE into a buffer.
//!
//! Without a filter, the SDK writes the completion (whole and streamed)
//! and the access key id into the log, and the prompt too when the process
//! runs with `LOG_SIGNABLE_BODY=true` (as this test does): the test
//! first proves that it detects them. With [`SafeLogFilter`] (even over directives that
//! try to re-enable the SDK's targets) and with [`safe_env_filter`], none
//! of them appears.

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseStreamOutput, InferenceConfiguration, Message,
};
use tower::ServiceExt;
use tower_bedrock::logging::{SAFE_LOG_FILTER, SafeLogFilter, safe_env_filter};
use tower_bedrock::sdk::{
    BedrockClientBuilder, BedrockService, ConverseRequest, ConverseStreamRequest,
};
use tower_bedrock_emulator::{Emulator, EmulatorConfig};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
/// In the prompt of every call; never in a log.
const PROMPT_MARKER: &str = "prompt-marker-5f0c2a9e71d4";
/// The access key id of the client's static credentials.
const ACCESS_KEY_ID: &str = "AKIASAFELOG7Q3M9X2";
const SECRET: &str = "secret-marker-b81e44d0";

/// Everything the subscriber writes, shared with the test.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// What the calls returned: the secrets the log must not hold.
struct Secrets {
    /// The whole Converse completion.
    completion: String,
    /// The streamed deltas, each several words long.
    deltas: Vec<String>,
}

fn message(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .unwrap()
}

/// Runs a Converse and a ConverseStream call through the preset stack on a
/// fresh runtime while `subscriber` is the default, and returns what the
/// model answered.
fn run_calls<S>(subscriber: S) -> Secrets
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    let _guard = tracing::subscriber::set_default(subscriber);
    // One thread: every task (the SDK's connections, the emulator) runs
    // under the subscriber set above.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let emulator =
            Emulator::start(EmulatorConfig::builder().output_tokens(24).build().unwrap())
                .await
                .unwrap();
        let client = BedrockClientBuilder::new()
            .region("us-east-1")
            .endpoint_url(emulator.endpoint_url())
            .static_credentials(ACCESS_KEY_ID, SECRET)
            .build()
            .await
            .unwrap();
        let bedrock = BedrockService::new(client);
        let prompt = format!("Summarise {PROMPT_MARKER} in a few words.");

        let converse = tower_bedrock::stack()
            .seed(1)
            .service::<_, ConverseRequest, _>(bedrock.clone())
            .unwrap();
        let request: ConverseRequest = ConverseInput::builder()
            .model_id(MODEL)
            .messages(message(&prompt))
            .inference_config(InferenceConfiguration::builder().max_tokens(100).build())
            .build()
            .unwrap()
            .into();
        let answer = converse.oneshot(request).await.unwrap();
        let completion = answer
            .output
            .output()
            .and_then(|o| o.as_message().ok())
            .and_then(|m| m.content().first())
            .and_then(|c| c.as_text().ok())
            .cloned()
            .unwrap();

        let stream = tower_bedrock::stack()
            .seed(2)
            .service::<_, ConverseStreamRequest, _>(bedrock)
            .unwrap();
        let request: ConverseStreamRequest = ConverseStreamInput::builder()
            .model_id(MODEL)
            .messages(message(&format!("Stream about {PROMPT_MARKER}.")))
            .inference_config(InferenceConfiguration::builder().max_tokens(100).build())
            .build()
            .unwrap()
            .into();
        let mut answer = stream.oneshot(request).await.unwrap();
        let mut deltas = Vec::new();
        while let Some(event) = answer.stream.recv().await.unwrap() {
            if let ConverseStreamOutput::ContentBlockDelta(d) = event
                && let Some(Ok(text)) = d.delta().map(|delta| delta.as_text())
            {
                deltas.push(text.trim().to_owned());
            }
        }
        drop(answer);
        emulator.shutdown().await;
        Secrets { completion, deltas }
    })
}

/// The secrets found in `log`, by name.
fn leaks(log: &str, secrets: &Secrets) -> Vec<String> {
    let mut found = Vec::new();
    let mut check = |name: &str, needle: &str| {
        // As text, or as a `Debug`-printed byte slice ("112, 114, 111, ...",
        // how the SDK's signer prints a body).
        let bytes = format!("{:?}", needle.as_bytes());
        let bytes = bytes.trim_start_matches('[').trim_end_matches(']');
        let hit = |l: &&str| l.contains(needle) || l.contains(bytes);
        let lines = log.lines().filter(hit).count();
        if lines > 0 {
            let example = log.lines().find(hit).unwrap();
            let example: String = example.chars().take(300).collect();
            found.push(format!("{name} in {lines} lines, e.g. {example}"));
        }
    };
    check("the prompt marker", PROMPT_MARKER);
    check("the access key id", ACCESS_KEY_ID);
    check("the secret key", SECRET);
    check("the completion", &secrets.completion);
    for d in &secrets.deltas {
        check("a streamed delta", d);
    }
    found
}

fn fmt_layer<S>(buffer: &Buffer) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(buffer.clone())
        .with_ansi(false)
        .with_target(true)
}

/// The filter kept the SDK's other TRACE events: only the silenced
/// targets are gone.
fn assert_sdk_trace_is_on(log: &str) {
    assert!(
        log.lines().any(
            |l| l.contains(" TRACE ") && l.contains("aws_smithy_runtime::client::interceptors")
        ),
        "the SDK's TRACE output is there: {log}"
    );
}

fn check_secrets(secrets: &Secrets) {
    // 24 three-letter words; deltas of several words: long enough that a
    // match in a log line is no coincidence.
    assert_eq!(
        secrets.completion.split(' ').count(),
        24,
        "{}",
        secrets.completion
    );
    assert!(!secrets.deltas.is_empty());
    assert!(
        secrets.deltas.iter().all(|d| d.len() >= 11),
        "{:?}",
        secrets.deltas
    );
}

/// Set in the child process that runs the checks.
const CHILD: &str = "TOWER_BEDROCK_SAFE_LOGGING_CHILD";
const TEST_NAME: &str =
    "the_sdk_logs_payloads_and_credentials_at_trace_and_the_safe_filter_silences_them";

#[test]
fn the_sdk_logs_payloads_and_credentials_at_trace_and_the_safe_filter_silences_them() {
    // The SDK redacts request and response bodies unless the process runs
    // with LOG_SENSITIVE_BODIES=true and LOG_SIGNABLE_BODY=true, which a
    // user chasing a bug may well set: run the checks in a child process
    // (this test again) with both.
    if std::env::var_os(CHILD).is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env("LOG_SENSITIVE_BODIES", "true")
            .env("LOG_SIGNABLE_BODY", "true")
            .status()
            .unwrap();
        assert!(status.success(), "the checks failed in the child: {status}");
        return;
    }

    // 1. No filter: the detector sees what the SDK writes.
    let buffer = Buffer::default();
    let secrets = run_calls(
        tracing_subscriber::registry()
            .with(fmt_layer(&buffer).with_filter(EnvFilter::new("trace"))),
    );
    check_secrets(&secrets);
    let log = buffer.text();
    let found = leaks(&log, &secrets);
    for f in &found {
        eprintln!("unfiltered: {f}");
    }
    for what in [
        "the prompt marker",
        "the access key id",
        "the completion",
        "a streamed delta",
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(what)),
            "without a filter, {what} should appear in the SDK's TRACE output: {found:#?}"
        );
    }

    // 2. SafeLogFilter as the global filter, over directives that try to
    //    bring the SDK's targets back (a more specific target, a span
    //    directive enabling everything inside the SDK's `try_attempt` span).
    let buffer = Buffer::default();
    let secrets = run_calls(
        tracing_subscriber::registry()
            .with(SafeLogFilter::new(EnvFilter::new(
                "trace,aws_smithy_runtime::client::orchestrator::http=trace,[try_attempt]=trace",
            )))
            .with(fmt_layer(&buffer)),
    );
    check_secrets(&secrets);
    let log = buffer.text();
    assert_sdk_trace_is_on(&log);
    assert_eq!(leaks(&log, &secrets), Vec::<String>::new());

    //    The same directives with SAFE_LOG_FILTER in a plain EnvFilter: the
    //    span directive brings the SDK's payload logging back (which is
    //    why SafeLogFilter exists).
    let buffer = Buffer::default();
    let secrets = run_calls(
        tracing_subscriber::registry().with(fmt_layer(&buffer).with_filter(EnvFilter::new(
            format!("trace,{SAFE_LOG_FILTER},[try_attempt]=trace"),
        ))),
    );
    let found = leaks(&buffer.text(), &secrets);
    assert!(
        found.iter().any(|f| f.starts_with("the completion")),
        "{found:#?}"
    );

    // 3. SafeLogFilter as a per-layer filter.
    let buffer = Buffer::default();
    let secrets = run_calls(
        tracing_subscriber::registry()
            .with(fmt_layer(&buffer).with_filter(SafeLogFilter::new(EnvFilter::new("trace")))),
    );
    let log = buffer.text();
    assert_sdk_trace_is_on(&log);
    assert_eq!(leaks(&log, &secrets), Vec::<String>::new());

    // 4. The plain EnvFilter route: the user's directives plus
    //    SAFE_LOG_FILTER (through safe_env_filter, which also drops the
    //    directive re-enabling a silenced target).
    let buffer = Buffer::default();
    let secrets = run_calls(
        tracing_subscriber::registry().with(
            fmt_layer(&buffer)
                .with_filter(safe_env_filter("trace,aws_sigv4::http_request=trace").unwrap()),
        ),
    );
    let log = buffer.text();
    assert_sdk_trace_is_on(&log);
    assert_eq!(leaks(&log, &secrets), Vec::<String>::new());

    // 5. And the constant alone, appended to the user's directives.
    let buffer = Buffer::default();
    let secrets =
        run_calls(tracing_subscriber::registry().with(
            fmt_layer(&buffer).with_filter(EnvFilter::new(format!("trace,{SAFE_LOG_FILTER}"))),
        ));
    let log = buffer.text();
    assert_sdk_trace_is_on(&log);
    assert_eq!(leaks(&log, &secrets), Vec::<String>::new());
}
