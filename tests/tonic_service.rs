//! The tonic example driven over loopback with its generated gRPC client,
//! the real SDK underneath talking to the in-process emulator: answers,
//! tenant checks, the fallback serving once the primary's budget is spent,
//! a local shed as RESOURCE_EXHAUSTED with `grpc-retry-pushback-ms`, open
//! circuits as UNAVAILABLE, empty prompts as INVALID_ARGUMENT, a throttle
//! the stack cannot absorb answered within the client's `grpc-timeout`;
//! the server-streaming method: the answer streamed, a fallback before the
//! first token, a typed status after it; and the example's client mode.

#[path = "support/loopback.rs"]
mod loopback;
#[path = "../examples/tonic_service.rs"]
mod service;

use service::proto::AskRequest;
use service::proto::chat_client::ChatClient;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::server::TcpIncoming;

use service::proto::ask_event::Event;
use tower_bedrock_emulator::{FaultKind, FaultRule};

fn ask(tenant: Option<&str>) -> tonic::Request<AskRequest> {
    let mut r = tonic::Request::new(AskRequest {
        prompt: "Hello there, gRPC".into(),
        max_tokens: 190,
    });
    if let Some(t) = tenant {
        r.metadata_mut().insert("x-tenant", t.parse().unwrap());
    }
    r
}

/// Serves `gateway` over gRPC on a free loopback port: the server's task
/// and a client connected to it.
async fn serve(
    gateway: service::Gateway,
) -> (
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ChatClient<tonic::transport::Channel>,
) {
    let (listener, addr) = loopback::listener().await;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(gateway.into_server())
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let chat = ChatClient::connect(format!("http://{addr}")).await.unwrap();
    (server, chat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_service_answers_falls_back_sheds_and_maps_errors() {
    // Every answer is 190 tokens: a primary call (burndown 5) settles to
    // 5 + 950 of a 1,000-token budget, a fallback call to 5 + 190.
    let emulator = loopback::emulator(190, true).await;
    let settings = service::Settings {
        tokens_per_minute: 1_000,
        max_wait_secs: 0.0,
        ..service::Settings::defaults()
    };
    let client = loopback::client(&emulator, "us-east-1").await;
    let gateway = service::Gateway::new(&settings, client).unwrap();
    let breakers = gateway.breakers().clone();
    let (server, mut chat) = serve(gateway).await;

    // Tenants are checked.
    let e = chat.ask(ask(None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = chat.ask(ask(Some("mallory"))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // So are prompts, before anything is sent.
    let mut empty = ask(Some("app-a"));
    empty.get_mut().prompt = "  ".into();
    let e = chat.ask(empty).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("EmptyPrompt"), "{}", e.message());
    assert_eq!(
        e.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "-1",
        "do not retry"
    );
    assert_eq!(emulator.counters().requests, 0);

    // The primary answers.
    let reply = chat.ask(ask(Some("app-a"))).await.unwrap().into_inner();
    assert_eq!(reply.model, settings.model);
    assert!(!reply.degraded);
    assert_eq!(reply.output_tokens, 190);
    assert_eq!(reply.text.split(' ').count(), 190);

    // Its budget is spent: the fallback answers, until its budget is spent.
    for i in 0..5 {
        let reply = chat.ask(ask(Some("app-b"))).await.unwrap().into_inner();
        assert_eq!(reply.model, settings.fallback_model, "call {i}");
        assert!(reply.degraded);
    }
    // Then the service sheds locally, without calling Bedrock.
    let sent = emulator.counters().requests;
    let e = chat.ask(ask(Some("app-c"))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let pushback_ms: u64 = e
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("grpc-retry-pushback-ms")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61_000).contains(&pushback_ms), "{pushback_ms}");
    assert!(
        e.message().starts_with("local/budget_exhausted"),
        "{}",
        e.message()
    );
    assert!(!e.message().contains("Hello there"), "no prompt in errors");
    assert_eq!(emulator.counters().requests, sent);

    // Both breakers forced open: UNAVAILABLE, with retry-after.
    breakers.force_open(&settings.model);
    breakers.force_open(&settings.fallback_model);
    let e = chat.ask(ask(Some("app-a"))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.metadata().get("grpc-retry-pushback-ms").is_some());
    assert!(
        e.message().starts_with("local/circuit_open"),
        "{}",
        e.message()
    );
    assert_eq!(emulator.counters().requests, sent);

    server.abort();
    emulator.shutdown().await;
}

/// Reads a stream to its end: the text, the `done` reply if it came, the
/// status it failed with if it did.
async fn read(
    stream: &mut tonic::codec::Streaming<service::proto::AskEvent>,
) -> (
    String,
    Option<service::proto::AskReply>,
    Option<tonic::Status>,
) {
    let mut text = String::new();
    let mut done = None;
    loop {
        match stream.message().await {
            Ok(Some(event)) => match event.event {
                Some(Event::Text(t)) => {
                    assert!(done.is_none(), "text after done");
                    text.push_str(&t);
                }
                Some(Event::Done(d)) => done = Some(d),
                None => panic!("an empty event"),
            },
            Ok(None) => return (text, done, None),
            Err(status) => return (text, done, Some(status)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_stream_falls_back_before_the_first_token_and_ends_with_a_typed_status() {
    let emulator = loopback::emulator(12, true).await;
    let settings = service::Settings::defaults();
    let client = loopback::client(&emulator, "us-east-1").await;
    // Compressed time: the retry's waits scale with the window.
    let gateway =
        service::Gateway::with_window(&settings, client, Duration::from_millis(600)).unwrap();
    let breakers = gateway.breakers().clone();
    let (server, mut chat) = serve(gateway).await;

    // Tenants are checked.
    let e = chat.ask_stream(ask(None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // The primary streams the answer, then says who answered.
    let mut s = chat
        .ask_stream(ask(Some("app-a")))
        .await
        .unwrap()
        .into_inner();
    let (text, done, failed) = read(&mut s).await;
    assert!(failed.is_none(), "{failed:?}");
    assert_eq!(text.split_whitespace().count(), 12);
    let done = done.expect("a done event");
    assert_eq!(done.model, settings.model);
    assert!(!done.degraded);
    assert_eq!(done.output_tokens, 12);

    // The primary fails inside its stream before the first token, every
    // time: retried, then the fallback model streams.
    emulator
        .set_faults(vec![
            FaultRule::new(FaultKind::StreamUnavailable { after_events: 0 })
                .model(settings.model.as_str()),
        ])
        .unwrap();
    let mut s = chat
        .ask_stream(ask(Some("app-b")))
        .await
        .unwrap()
        .into_inner();
    let (text, done, failed) = read(&mut s).await;
    assert!(failed.is_none(), "{failed:?}");
    assert_eq!(text.split_whitespace().count(), 12);
    let done = done.expect("a done event");
    assert_eq!(done.model, settings.fallback_model);
    assert!(done.degraded);
    let failed_on_primary = emulator.counters().stream_exceptions;
    assert!(failed_on_primary > 1, "retried before falling back");
    assert_eq!(u64::from(done.attempts), failed_on_primary + 1);
    let primary = breakers.get(&settings.model).unwrap();
    assert_eq!(
        u64::from(primary.failures),
        failed_on_primary,
        "{primary:?}"
    );

    // After the first token the model never changes: the stream ends with
    // the failure's status, in place of `done`.
    emulator
        .set_faults(vec![
            FaultRule::new(FaultKind::StreamUnavailable { after_events: 2 })
                .model(settings.model.as_str())
                .count(1),
        ])
        .unwrap();
    let sent = emulator.counters().requests;
    let mut s = chat
        .ask_stream(ask(Some("app-c")))
        .await
        .unwrap()
        .into_inner();
    let (text, done, failed) = read(&mut s).await;
    assert!(!text.is_empty(), "part of the answer arrived");
    assert!(done.is_none());
    let status = failed.expect("a typed status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().starts_with("unavailable/service"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("Hello there"), "no prompt");
    assert_eq!(
        emulator.counters().requests,
        sent + 1,
        "no other model tried"
    );
    let after = breakers.get(&settings.model).unwrap();
    assert_eq!(after.failures, primary.failures + 1, "{after:?}");

    // Nothing can answer before the stream opens: the call's status.
    breakers.force_open(&settings.model);
    breakers.force_open(&settings.fallback_model);
    let e = chat.ask_stream(ask(Some("app-a"))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().starts_with("local/circuit_open"),
        "{}",
        e.message()
    );

    server.abort();
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_is_answered_within_the_clients_deadline_and_the_client_mode_asks() {
    let emulator = loopback::emulator(6, false).await;
    let client = loopback::client(&emulator, "us-east-1").await;
    assert!(service::Settings::defaults().request_timeout_secs < 30.0);
    let (listener, addr) = loopback::listener().await;
    let settings = service::Settings {
        model: "anthropic.claude-3-haiku-20240307-v1:0".into(),
        listen: addr,
        ..service::Settings::defaults()
    };
    let gateway = service::Gateway::new(&settings, client).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(gateway.into_server())
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    // The example's client mode asks the running service, streaming or not.
    service::ask_as_client(&settings, "Hello there".into())
        .await
        .unwrap();
    let streaming = service::Settings {
        stream: true,
        ..settings.clone()
    };
    service::ask_as_client(&streaming, "Hello there".into())
        .await
        .unwrap();
    assert_eq!(emulator.counters().requests, 2);

    // A model that takes 5 s, a client that waits 1 s: the service's own
    // answer (the stack's call ended at the client's deadline, less the
    // margin), not the transport's cancellation.
    emulator
        .set_faults(vec![FaultRule::new(FaultKind::Stall { ms: 5_000 })])
        .unwrap();
    let mut request = ask(Some("app-b"));
    request.set_timeout(Duration::from_secs(1));
    let start = Instant::now();
    let mut chat = ChatClient::connect(format!("http://{addr}")).await.unwrap();
    let e = chat.ask(request).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message().starts_with("local/deadline_exceeded: "),
        "{}",
        e.message()
    );

    // Bedrock throttles every call on every model (real 60 s windows): the
    // answer comes within the client's 2 s grpc-timeout, with a pushback.
    emulator
        .set_faults(vec![FaultRule::new(FaultKind::TooManyTokens)])
        .unwrap();
    let mut request = ask(Some("app-a"));
    request.set_timeout(Duration::from_secs(2));
    let start = Instant::now();
    let e = chat.ask(request).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().starts_with("throttled/token_rate: "),
        "{}",
        e.message()
    );
    let pushback_ms: u64 = e
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("grpc-retry-pushback-ms")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61_000).contains(&pushback_ms), "{pushback_ms}");
    // The client mode reports the status and the pushback.
    let failed = service::ask_as_client(&settings, "Hello there".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(failed.starts_with("ResourceExhausted: "), "{failed}");
    assert!(failed.contains("grpc-retry-pushback-ms: "), "{failed}");

    server.abort();
    emulator.shutdown().await;
}
