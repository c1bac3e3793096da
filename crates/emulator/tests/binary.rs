//! The `bedrock-emulator` binary: starts from its flags and a config file on
//! a free loopback port, answers the SDK, and stops cleanly on SIGINT.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use common::{NOVA, user};

fn spawn(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bedrock-emulator"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .trim()
        .strip_prefix("bedrock-emulator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

fn sdk(url: &str) -> Client {
    Client::from_conf(
        aws_sdk_bedrockruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
            .endpoint_url(url)
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

/// SIGINT (ctrl-c), then the exit status within 10 s.
fn interrupt(mut child: Child) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            let mut log = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
            return (s, log);
        }
        assert!(Instant::now() < deadline, "did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn the_binary_answers_and_stops_cleanly() {
    let (child, url) = spawn(&[
        "--bind",
        "127.0.0.1:0",
        "--tpm",
        "150",
        "--output-tokens",
        "7",
    ]);
    let c = sdk(&url);
    let out = c
        .converse()
        .model_id(NOVA)
        .messages(user("hello"))
        .inference_config(common::max_tokens(100))
        .send()
        .await
        .expect("answer");
    assert_eq!(out.usage().unwrap().output_tokens(), 7);
    // --tpm 150: each call reserves 2 + 100 and settles at 2 + 7 = 9, so
    // the window fills up after a handful of calls.
    let mut refused = None;
    for _ in 0..20 {
        if let Err(e) = c
            .converse()
            .model_id(NOVA)
            .messages(user("hello"))
            .inference_config(common::max_tokens(100))
            .send()
            .await
        {
            refused = Some(e.into_service_error());
            break;
        }
    }
    let e = refused.expect("the --tpm flag applies");
    assert_eq!(
        e.message(),
        Some("Too many tokens, please wait before trying again.")
    );
    let (status, log) = interrupt(child);
    assert!(status.success(), "{status:?}\n{log}");
    // One line per request, without bodies.
    assert!(log.contains("request"), "{log}");
    assert!(log.contains("ThrottlingException"), "{log}");
    assert!(!log.contains("hello"), "bodies must not be logged");
    assert!(log.contains("bedrock emulator stopped"), "{log}");
}

#[tokio::test]
async fn the_binary_reads_a_config_file() {
    let dir = std::env::temp_dir().join(format!("bedrock-emulator-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("emulator.toml");
    std::fs::write(
        &path,
        r#"
bind = "127.0.0.1:0"
seed = 3
models = ["acme.private-v1:0"]

[[faults]]
kind = "unavailable"
model = "acme.private-v1:0"
"#,
    )
    .unwrap();
    let (child, url) = spawn(&["--config", path.to_str().unwrap()]);
    let c = sdk(&url);
    let e = c
        .converse()
        .model_id("acme.private-v1:0")
        .messages(user("hi"))
        .send()
        .await
        .expect_err("the configured fault")
        .into_service_error();
    assert_eq!(e.code(), Some("ServiceUnavailableException"));
    c.converse()
        .model_id(NOVA)
        .messages(user("hi"))
        .send()
        .await
        .expect("default models still known");
    let (status, _) = interrupt(child);
    assert!(status.success());

    // A bad file is refused at start with a non-zero exit.
    std::fs::write(&path, "window_ms = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bedrock-emulator"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("window"));
    let _ = std::fs::remove_dir_all(&dir);
}
