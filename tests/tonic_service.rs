//! The tonic example driven over loopback with its generated gRPC client,
//! the real SDK underneath talking to the in-process emulator: answers,
//! tenant checks, the fallback serving once the primary's budget is spent,
//! a local shed as RESOURCE_EXHAUSTED with `retry-after`, open circuits as
//! UNAVAILABLE.

#[path = "../examples/tonic_service.rs"]
mod service;

use service::proto::AskRequest;
use service::proto::chat_client::ChatClient;
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tower_bedrock_emulator::{Emulator, EmulatorConfig, Latency};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_service_answers_falls_back_sheds_and_maps_errors() {
    // Every answer is 190 tokens: a primary call (burndown 5) settles to
    // 5 + 950 of a 1,000-token budget, a fallback call to 5 + 190.
    let emulator = Emulator::start(
        EmulatorConfig::builder()
            .output_tokens(190)
            .latency(Latency::default())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let settings = service::Settings {
        tokens_per_minute: 1_000,
        max_wait_secs: 0.0,
        ..service::Settings::defaults()
    };
    let client = tower_bedrock::sdk::BedrockClientBuilder::new()
        .region("us-east-1")
        .endpoint_url(emulator.endpoint_url())
        .static_credentials("AKIDEXAMPLE", "not-a-secret")
        .build()
        .await
        .unwrap();
    let gateway = service::Gateway::new(&settings, client).unwrap();
    let breakers = gateway.breakers().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(gateway.into_server())
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let mut chat = ChatClient::connect(format!("http://{addr}")).await.unwrap();

    // Tenants are checked.
    let e = chat.ask(ask(None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = chat.ask(ask(Some("mallory"))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

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
    let retry_after: u64 = e
        .metadata()
        .get("retry-after")
        .expect("retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry_after), "{retry_after}");
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
    assert!(e.metadata().get("retry-after").is_some());
    assert!(
        e.message().starts_with("local/circuit_open"),
        "{}",
        e.message()
    );
    assert_eq!(emulator.counters().requests, sent);

    server.abort();
    emulator.shutdown().await;
}
