//! Every operation through the real `aws-sdk-bedrockruntime` client:
//! successes, and client errors with the SDK's own variants and messages.

mod common;

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::operation::RequestId;
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    ConverseOutput, ConverseStreamOutput, ConverseTokensRequest, CountTokensInput,
    InvokeModelTokensRequest, ResponseStream, StopReason,
};
use common::*;
use serde_json::{Value, json};
use tower_bedrock_emulator::tokens::count_text;
use tower_bedrock_emulator::{EmulatorConfig, messages};

const PROMPT: &str = "Tell me about throttling in three words.";

#[tokio::test]
async fn converse_answers_with_output_usage_and_metrics() {
    let emu = start(EmulatorConfig::builder().output_tokens(20).build().unwrap()).await;
    let c = client(&emu);
    let out = c
        .converse()
        .model_id(SONNET4)
        .messages(user(PROMPT))
        .inference_config(max_tokens(100))
        .send()
        .await
        .expect("converse succeeds");
    let Some(ConverseOutput::Message(m)) = out.output() else {
        panic!("no message")
    };
    let text = m.content()[0].as_text().expect("text block");
    assert_eq!(count_text(text), 20);
    assert_eq!(out.stop_reason(), &StopReason::EndTurn);
    let usage = out.usage().expect("usage");
    assert_eq!(usage.input_tokens() as u64, count_text(PROMPT));
    assert_eq!(usage.output_tokens(), 20);
    assert_eq!(usage.total_tokens(), usage.input_tokens() + 20);
    assert!(out.metrics().is_some());

    // Deterministic text for the same request; max_tokens caps the output.
    let again = c
        .converse()
        .model_id(SONNET4)
        .messages(user(PROMPT))
        .inference_config(max_tokens(100))
        .send()
        .await
        .unwrap();
    assert_eq!(again.output(), out.output());
    let short = c
        .converse()
        .model_id(SONNET4.to_owned())
        .messages(user(PROMPT))
        .inference_config(max_tokens(5))
        .send()
        .await
        .unwrap();
    assert_eq!(short.stop_reason(), &StopReason::MaxTokens);
    assert_eq!(short.usage().unwrap().output_tokens(), 5);

    let n = emu.counters();
    assert_eq!((n.requests, n.admitted, n.output_tokens), (3, 3, 45));
    assert_eq!(n.input_tokens, 3 * count_text(PROMPT));
    assert_eq!(n.in_flight, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn converse_stream_sends_the_whole_event_sequence() {
    let emu = start(EmulatorConfig::builder().output_tokens(10).build().unwrap()).await;
    let c = client(&emu);
    let mut out = c
        .converse_stream()
        .model_id(format!("global.{SONNET4_BASE}"))
        .messages(user(PROMPT))
        .send()
        .await
        .expect("stream starts");
    let mut kinds = Vec::new();
    let mut text = String::new();
    let mut usage = None;
    while let Some(ev) = out.stream.recv().await.expect("no stream error") {
        match &ev {
            ConverseStreamOutput::MessageStart(_) => kinds.push("start"),
            ConverseStreamOutput::ContentBlockDelta(d) => {
                kinds.push("delta");
                text.push_str(d.delta().unwrap().as_text().unwrap());
            }
            ConverseStreamOutput::ContentBlockStop(_) => kinds.push("block_stop"),
            ConverseStreamOutput::MessageStop(s) => {
                assert_eq!(s.stop_reason(), &StopReason::EndTurn);
                kinds.push("stop")
            }
            ConverseStreamOutput::Metadata(m) => {
                kinds.push("metadata");
                usage = m.usage().cloned();
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(
        kinds,
        [
            "start",
            "delta",
            "delta",
            "delta",
            "block_stop",
            "stop",
            "metadata"
        ]
    );
    assert_eq!(count_text(&text), 10);
    let usage = usage.expect("metadata usage");
    assert_eq!(usage.input_tokens() as u64, count_text(PROMPT));
    assert_eq!(usage.output_tokens(), 10);
    // Settled when the stream ended: the global profile has its own bucket.
    let u = emu.usage(&format!("global.{SONNET4_BASE}"));
    assert_eq!((u.reserved, u.used), (0, count_text(PROMPT) + 10 * 5));
    assert_eq!(emu.usage(SONNET4_BASE).used, 0);
    emu.shutdown().await;
}

fn anthropic_body(max: u64) -> String {
    json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
    })
    .to_string()
}

#[tokio::test]
async fn invoke_model_speaks_the_anthropic_format_with_token_headers() {
    let emu = start(EmulatorConfig::builder().output_tokens(12).build().unwrap()).await;
    let c = client(&emu);
    let out = c
        .invoke_model()
        .model_id(HAIKU3)
        .content_type("application/json")
        .body(Blob::new(anthropic_body(200)))
        .send()
        .await
        .expect("invoke succeeds");
    let v: Value = serde_json::from_slice(out.body().as_ref()).unwrap();
    let input = count_text(PROMPT) + count_text("Be brief.");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], input);
    assert_eq!(v["usage"]["output_tokens"], 12);
    assert_eq!(count_text(v["content"][0]["text"].as_str().unwrap()), 12);
    assert_eq!(out.content_type(), "application/json");

    // The token headers, as Bedrock sends them.
    let r = model_call(emu.addr(), HAIKU3, "invoke", &anthropic_body(200)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-amzn-bedrock-input-token-count"),
        Some(input.to_string().as_str())
    );
    assert_eq!(r.header("x-amzn-bedrock-output-token-count"), Some("12"));
    assert!(r.header("x-amzn-bedrock-invocation-latency").is_some());
    assert!(r.header("x-amzn-RequestId").is_some());

    // Other families.
    let nova = c
        .invoke_model()
        .model_id(NOVA)
        .body(Blob::new(
            json!({"messages":[{"role":"user","content":[{"text":PROMPT}]}],"inferenceConfig":{"maxTokens":3}})
                .to_string(),
        ))
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(nova.body().as_ref()).unwrap();
    assert_eq!(v["stopReason"], "max_tokens");
    assert_eq!(v["usage"]["outputTokens"], 3);
    let llama = c
        .invoke_model()
        .model_id(LLAMA)
        .body(Blob::new(
            json!({"prompt": PROMPT, "max_gen_len": 50}).to_string(),
        ))
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(llama.body().as_ref()).unwrap();
    assert_eq!(v["generation_token_count"], 12);
    assert_eq!(v["prompt_token_count"], count_text(PROMPT));
    emu.shutdown().await;
}

#[tokio::test]
async fn invoke_with_response_stream_sends_anthropic_chunks() {
    let emu = start(EmulatorConfig::builder().output_tokens(9).build().unwrap()).await;
    let c = client(&emu);
    let mut out = c
        .invoke_model_with_response_stream()
        .model_id(HAIKU3)
        .body(Blob::new(anthropic_body(100)))
        .send()
        .await
        .expect("stream starts");
    assert_eq!(out.content_type(), "application/json");
    let mut types = Vec::new();
    let mut text = String::new();
    let mut metrics = Value::Null;
    while let Some(ev) = out.body.recv().await.expect("no stream error") {
        let ResponseStream::Chunk(part) = ev else {
            panic!("not a chunk")
        };
        let v: Value = serde_json::from_slice(part.bytes().unwrap().as_ref()).unwrap();
        let t = v["type"].as_str().unwrap().to_owned();
        if t == "content_block_delta" {
            text.push_str(v["delta"]["text"].as_str().unwrap());
        }
        if t == "message_stop" {
            metrics = v["amazon-bedrock-invocationMetrics"].clone();
        }
        types.push(t);
    }
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(count_text(&text), 9);
    assert_eq!(metrics["outputTokenCount"], 9);
    assert_eq!(
        metrics["inputTokenCount"],
        count_text(PROMPT) + count_text("Be brief.")
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn count_tokens_agrees_with_usage() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client(&emu);
    let conv = c
        .count_tokens()
        .model_id(SONNET4)
        .input(CountTokensInput::Converse(
            ConverseTokensRequest::builder()
                .messages(user(PROMPT))
                .build(),
        ))
        .send()
        .await
        .expect("count tokens");
    let used = c
        .converse()
        .model_id(SONNET4)
        .messages(user(PROMPT))
        .send()
        .await
        .unwrap();
    assert_eq!(conv.input_tokens(), used.usage().unwrap().input_tokens());
    let inv = c
        .count_tokens()
        .model_id(HAIKU3)
        .input(CountTokensInput::InvokeModel(
            InvokeModelTokensRequest::builder()
                .body(Blob::new(anthropic_body(10)))
                .build()
                .unwrap(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        inv.input_tokens() as u64,
        count_text(PROMPT) + count_text("Be brief.")
    );
    // CountTokens costs no quota.
    assert_eq!(emu.usage(HAIKU3).used, 0);
    assert_eq!(emu.counters().count_tokens, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn unknown_models_are_not_found_and_known_forms_are_accepted() {
    let emu = start(
        EmulatorConfig::builder()
            .model("acme.custom-v1:0")
            .build()
            .unwrap(),
    )
    .await;
    let c = client(&emu);
    let err = c
        .converse()
        .model_id("anthropic.claude-does-not-exist-v9:0")
        .messages(user("hi"))
        .send()
        .await
        .expect_err("unknown model");
    // Bedrock: 400 ValidationException, not 404 ResourceNotFound.
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    let se = err.into_service_error();
    assert!(
        matches!(se, ConverseError::ValidationException(_)),
        "{se:?}"
    );
    assert_eq!(se.message(), Some(messages::INVALID_MODEL_ID));
    assert!(se.request_id().is_some());
    for id in [
        "acme.custom-v1:0",
        "eu.amazon.nova-pro-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/apac.anthropic.claude-3-haiku-20240307-v1:0",
    ] {
        c.converse()
            .model_id(id)
            .messages(user("hi"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{id}: {e:?}"));
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_get_validation_exceptions() {
    let emu = start(
        EmulatorConfig::builder()
            .max_body_bytes(4096)
            .build()
            .unwrap(),
    )
    .await;
    let c = client(&emu);
    let expect_validation =
        |r: Result<_, aws_sdk_bedrockruntime::error::SdkError<InvokeModelError, _>>| {
            let err = r.expect_err("must fail");
            let se = err.into_service_error();
            assert!(
                matches!(se, InvokeModelError::ValidationException(_)),
                "{se:?}"
            );
            se.message().unwrap().to_owned()
        };
    let malformed = c
        .invoke_model()
        .model_id(HAIKU3)
        .body(Blob::new("{not json"))
        .send()
        .await;
    assert_eq!(expect_validation(malformed), messages::MALFORMED);
    let missing = c
        .invoke_model()
        .model_id(HAIKU3)
        .body(Blob::new(
            r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5}"#,
        ))
        .send()
        .await;
    assert!(expect_validation(missing).contains("'messages'"));
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}],"max_tokens":5}}"#,
        "x".repeat(10_000)
    );
    let oversized = c
        .invoke_model()
        .model_id(HAIKU3)
        .body(Blob::new(big))
        .send()
        .await;
    assert_eq!(
        expect_validation(oversized),
        "1 validation error detected: Value at 'body' failed to satisfy constraint: Member must have length less than or equal to 4096"
    );
    let zero = c
        .converse()
        .model_id(SONNET4)
        .messages(user("hi"))
        .inference_config(max_tokens(0))
        .send()
        .await
        .expect_err("max_tokens 0");
    assert!(matches!(
        zero.into_service_error(),
        ConverseError::ValidationException(_)
    ));
    // Raw: malformed Converse JSON, wrong role, and a lying Content-Length.
    let r = model_call(emu.addr(), SONNET4, "converse", "[[[").await;
    assert_eq!(
        (r.status, r.header("x-amzn-ErrorType")),
        (400, Some("ValidationException"))
    );
    assert_eq!(r.json()["message"], messages::MALFORMED);
    let r = model_call(
        emu.addr(),
        SONNET4,
        "converse",
        r#"{"messages":[{"role":"robot","content":[]}]}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = model_call(emu.addr(), SONNET4, "dance", "{}").await;
    assert_eq!(r.status, 404);
    let path = format!("/model/{}/converse", SONNET4.replace(':', "%3A"));
    let r = raw(emu.addr(), "GET", &path, &[SIGV4], b"").await;
    assert_eq!(
        (r.status, r.header("x-amzn-ErrorType")),
        (404, Some("UnknownOperationException"))
    );
    let n = emu.counters();
    assert_eq!(n.client_errors, 8);
    assert_eq!(n.admitted, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn requests_without_sigv4_are_denied() {
    let emu = start(EmulatorConfig::default()).await;
    let body = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
    let path = format!("/model/{}/converse", SONNET4.replace(':', "%3A"));
    let r = raw(emu.addr(), "POST", &path, &[], body.as_bytes()).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-amzn-ErrorType"), Some("AccessDeniedException"));
    assert!(r.header("x-amzn-RequestId").is_some());
    assert_eq!(r.json()["message"], messages::MISSING_AUTH);
    let r = raw(
        emu.addr(),
        "POST",
        &path,
        &[("Authorization", "Bearer abc")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["message"], messages::INVALID_AUTH);
    let health = admin(&emu, "GET", "/health", "").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let ok = model_call(emu.addr(), SONNET4, "converse", body).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["usage"]["inputTokens"], 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_a_stream_in_flight_finish_then_refuses_connections() {
    let config = EmulatorConfig::builder()
        .output_tokens(20)
        .latency(tower_bedrock_emulator::Latency {
            time_to_first_token_ms: 0,
            per_token_ms: 10.0,
            scale: 1.0,
        })
        .build()
        .unwrap();
    let emu = start(config).await;
    let addr = emu.addr();
    let c = client(&emu);
    let mut out = c
        .converse_stream()
        .model_id(NOVA)
        .messages(user(PROMPT))
        .send()
        .await
        .unwrap();
    out.stream.recv().await.unwrap().expect("first event");
    let stopping = tokio::spawn(emu.shutdown());
    let mut last = None;
    while let Some(ev) = out.stream.recv().await.expect("the stream finishes") {
        last = Some(ev);
    }
    assert!(matches!(last, Some(ConverseStreamOutput::Metadata(_))));
    stopping.await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
