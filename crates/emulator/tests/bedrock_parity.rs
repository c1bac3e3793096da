//! Where the emulator used to differ from Bedrock (issue: "the emulator
//! answers every official SDK the way Bedrock would"), checked with the Rust
//! SDK and raw HTTP/1.1 and HTTP/2 so that they run without Python or Node
//! (tests/conformance.rs checks the same with boto3 and the JavaScript SDK).

mod common;

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::error::{ConverseStreamOutputError, ResponseStreamError};
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_bedrock_emulator::{EmulatorConfig, FaultKind, FaultRule, messages};

fn assistant(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::Assistant)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_on_the_same_port() {
    let emu = start(EmulatorConfig::default()).await;
    let tcp = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let body = r#"{"messages":[{"role":"user","content":[{"text":"Hello there"}]}]}"#;
    for _ in 0..2 {
        let req = http::Request::post(format!(
            "{}/model/{}/converse",
            emu.endpoint_url(),
            HAIKU3.replace(':', "%3A")
        ))
        .header("authorization", SIGV4.1)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
        let resp = send.send_request(req).await.expect("an HTTP/2 answer");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["usage"]["inputTokens"], 3);
    }
    // HTTP/1.1 still works on the same port.
    let r = model_call(emu.addr(), HAIKU3, "converse", body).await;
    assert_eq!(r.status, 200);
    assert_eq!(emu.counters().admitted, 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn bodies_up_to_25_mb_are_taken_and_larger_ones_are_read_before_the_refusal() {
    let emu = start(EmulatorConfig::default()).await;
    // 20 MB of image: accepted (Bedrock takes InvokeModel bodies up to
    // 25,000,000 bytes).
    let image = "A".repeat(20_000_000);
    let body = format!(
        r#"{{"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"messages":[{{"role":"user","content":[{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{image}"}}}},{{"type":"text","text":"what is it"}}]}}]}}"#
    );
    let r = model_call(emu.addr(), HAIKU3, "invoke", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // 26 MB: the whole body is read (the raw client writes all of it before
    // reading, so an early answer and close would fail its write), then
    // refused.
    let big = "x".repeat(26_000_000);
    let r = model_call(emu.addr(), HAIKU3, "invoke", &big).await;
    assert_eq!(
        (r.status, r.header("x-amzn-ErrorType")),
        (400, Some("ValidationException"))
    );
    assert_eq!(
        r.json()["message"],
        "1 validation error detected: Value at 'body' failed to satisfy constraint: Member must have length less than or equal to 25000000"
    );
    // An error found before the body is looked at (no signature) also
    // waits for the whole body.
    let path = format!("/model/{}/invoke", HAIKU3.replace(':', "%3A"));
    let r = raw(emu.addr(), "POST", &path, &[], big.as_bytes()).await;
    assert_eq!(r.status, 403);
    emu.shutdown().await;
}

#[tokio::test]
async fn validation_answers_like_bedrock() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client(&emu);
    let validation = |e: aws_sdk_bedrockruntime::error::SdkError<
        ConverseError,
        aws_sdk_bedrockruntime::config::http::HttpResponse,
    >| {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let se = e.into_service_error();
        assert!(
            matches!(se, ConverseError::ValidationException(_)),
            "{se:?}"
        );
        assert_eq!(status, Some(400));
        se.message().unwrap().to_owned()
    };
    // maxTokens above the model's output limit: refused, not throttled.
    let e = c
        .converse()
        .model_id(HAIKU3)
        .messages(user("hi"))
        .inference_config(max_tokens(100_000))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        validation(e),
        "The maximum tokens you requested exceeds the model limit of 4096. Try again with a maximum tokens value that is lower than 4096."
    );
    let e = c
        .converse()
        .model_id(SONNET4)
        .messages(user("hi"))
        .inference_config(max_tokens(100_000))
        .send()
        .await
        .unwrap_err();
    assert!(validation(e).contains("model limit of 64000."));
    // The limit itself is accepted.
    c.converse()
        .model_id(HAIKU3)
        .messages(user("hi"))
        .inference_config(max_tokens(4096))
        .send()
        .await
        .unwrap();
    // Unknown model id.
    let e = c
        .converse()
        .model_id("anthropic.claude-does-not-exist-v9:0")
        .messages(user("hi"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(validation(e), messages::INVALID_MODEL_ID);
    // A bare Claude 4 id.
    let e = c
        .converse()
        .model_id(SONNET4_BASE)
        .messages(user("hi"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        validation(e),
        format!(
            "Invocation of model ID {SONNET4_BASE} with on-demand throughput isn't supported. Retry your request with the ID or ARN of an inference profile that contains this model."
        )
    );
    // Conversation shape.
    let e = c
        .converse()
        .model_id(HAIKU3)
        .messages(assistant("hello"))
        .messages(user("hi"))
        .send()
        .await
        .unwrap_err();
    assert!(validation(e).starts_with("A conversation must start with a user message."));
    let e = c
        .converse()
        .model_id(HAIKU3)
        .messages(user("hi"))
        .messages(user("again"))
        .send()
        .await
        .unwrap_err();
    assert!(validation(e).starts_with("A conversation must alternate between user and assistant"));
    let e = c
        .converse()
        .model_id(HAIKU3)
        .messages(user("hi"))
        .messages(
            Message::builder()
                .role(ConversationRole::Assistant)
                .set_content(Some(Vec::new()))
                .build()
                .unwrap(),
        )
        .messages(user("again"))
        .send()
        .await
        .unwrap_err();
    assert!(
        validation(e)
            .starts_with("The content field in the Message object at messages.1 is empty.")
    );
    assert_eq!(emu.counters().admitted, 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn the_escape_hatches_accept_what_bedrock_refuses() {
    let emu = start(
        EmulatorConfig::builder()
            .allow_on_demand_everywhere(true)
            .allow_unknown_models(true)
            .build()
            .unwrap(),
    )
    .await;
    let c = client(&emu);
    for id in [SONNET4_BASE, "acme.private-v1:0"] {
        c.converse()
            .model_id(id)
            .messages(user("hi"))
            .send()
            .await
            .unwrap();
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn in_stream_faults_reach_the_sdk_as_modelled_exceptions() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client(&emu);
    emu.set_faults(vec![FaultRule::new(FaultKind::StreamModelError {
        after_events: 2,
    })])
    .unwrap();
    let mut out = c
        .converse_stream()
        .model_id(HAIKU3)
        .messages(user("hi"))
        .send()
        .await
        .unwrap();
    let mut events = 0;
    let err = loop {
        match out.stream.recv().await {
            Ok(Some(_)) => events += 1,
            Ok(None) => panic!("the stream ended without the exception"),
            Err(e) => break e.into_service_error(),
        }
    };
    assert_eq!(events, 2);
    let ConverseStreamOutputError::ModelStreamErrorException(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.original_status_code(), Some(500));
    assert_eq!(e.message(), Some(messages::MODEL_STREAM_ERROR));

    emu.set_faults(vec![FaultRule::new(FaultKind::StreamModelTimeout {
        after_events: 1,
    })])
    .unwrap();
    let body = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut out = c
        .invoke_model_with_response_stream()
        .model_id(HAIKU3)
        .body(Blob::new(body))
        .send()
        .await
        .unwrap();
    let mut events = 0;
    let err = loop {
        match out.body.recv().await {
            Ok(Some(_)) => events += 1,
            Ok(None) => panic!("the stream ended without the exception"),
            Err(e) => break e.into_service_error(),
        }
    };
    assert_eq!(events, 1);
    assert!(
        matches!(err, ResponseStreamError::ModelTimeoutException(_)),
        "{err:?}"
    );
    // ConverseStream does not model it: the rule does not apply there.
    let mut out = c
        .converse_stream()
        .model_id(HAIKU3)
        .messages(user("hi"))
        .send()
        .await
        .unwrap();
    while out.stream.recv().await.expect("no exception").is_some() {}
    emu.shutdown().await;
}

#[tokio::test]
async fn overload_as_503_model_error_members_404s_and_request_ids() {
    let emu = start(EmulatorConfig::default()).await;
    emu.set_faults(vec![
        FaultRule::new(FaultKind::GettingThrottled).count(1),
        FaultRule::new(FaultKind::ModelError).count(1),
    ])
    .unwrap();
    let body = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
    let r = model_call(emu.addr(), HAIKU3, "converse", body).await;
    assert_eq!(
        (r.status, r.header("x-amzn-ErrorType")),
        (503, Some("ServiceUnavailableException"))
    );
    assert_eq!(
        r.json()["message"],
        "Model is getting throttled. Try your request again."
    );
    let r = model_call(emu.addr(), HAIKU3, "converse", body).await;
    assert_eq!(r.status, 424);
    assert_eq!(r.json()["originalStatusCode"], 500);
    assert_eq!(r.json()["resourceName"], HAIKU3);
    // Unknown paths: JSON with a request id.
    let r = raw(emu.addr(), "GET", "/nowhere", &[], b"").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["message"], "Unknown operation");
    let rid = r
        .header("x-amzn-RequestId")
        .expect("a request id")
        .to_owned();
    // Request ids are random UUIDs: they differ between two emulators with
    // the same seed (they used to be a per-seed counter).
    let other = start(EmulatorConfig::default()).await;
    let r2 = raw(other.addr(), "GET", "/nowhere", &[], b"").await;
    let rid2 = r2.header("x-amzn-RequestId").unwrap();
    assert_ne!(rid, rid2);
    for id in [rid.as_str(), rid2] {
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{id}"
        );
        assert!(
            parts[2].starts_with('4') && "89ab".contains(&parts[3][..1]),
            "{id}"
        );
    }
    other.shutdown().await;
    emu.shutdown().await;
}
