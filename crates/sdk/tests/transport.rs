//! Below the SDK: the per-host connection cap, the pool wait timeout, and
//! tower layers / services as the SDK's HTTP client, carrying real SDK
//! traffic.
//!
//! Concurrency is arranged by waiting on the emulator's `in_flight` gauge
//! (a condition, not a guess); stalls are 30 s long so nothing depends on
//! how fast the machine is.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_bedrockruntime::config::SharedHttpClient;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::body::SdkBody;
use common::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_bedrock_classify::ThrottleClassifyLayer;
use tower_bedrock_core::{
    Classified, ErrorClass, ReportsUsage, ThrottleKind, UnavailableKind, Usage,
};
use tower_bedrock_emulator::{EmulatorConfig, EmulatorHandle, FaultKind, FaultRule};
use tower_bedrock_sdk::{
    BedrockService, ConnectionCapLayer, ConnectorService, LayeredHttpClient, PoolWaitTimeout,
    service_http_client,
};

async fn until_in_flight(emu: &EmulatorHandle, n: u64) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while emu.counters().in_flight < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("requests reach the emulator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cap_bedrock_answers_too_many_connections() {
    let emu = emulator(
        EmulatorConfig::builder()
            .max_connections(2)
            .build()
            .unwrap(),
    )
    .await;
    let svc = ServiceBuilder::new()
        .layer(ThrottleClassifyLayer::new())
        .service(BedrockService::new(
            builder(&emu)
                .max_connections_per_host(64)
                .build()
                .await
                .unwrap(),
        ));
    emu.set_faults(vec![
        FaultRule::new(FaultKind::Stall { ms: 30_000 }).count(2),
    ])
    .unwrap();
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(svc.clone().oneshot(converse(HAIKU, "hold", Some(4)))))
        .collect();
    until_in_flight(&emu, 2).await;
    for _ in 0..3 {
        let err = svc
            .clone()
            .oneshot(converse(HAIKU, "one more", Some(4)))
            .await
            .unwrap_err();
        let op = err.inner().unwrap().as_service_error().unwrap();
        assert!(op.is_service_unavailable_exception(), "{op:?}");
        assert_eq!(
            op.message(),
            Some("Too many connections, please wait before trying again.")
        );
        assert_eq!(
            err.class(),
            ErrorClass::Unavailable(UnavailableKind::ConnectionPool)
        );
    }
    assert_eq!(emu.counters().connection_cap, 3);
    for h in held {
        h.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_keeps_requests_in_flight_under_bedrocks_limit() {
    // The server releases a connection's slot only after it notices the
    // request ended, a moment after the client freed its own slot. So a
    // client capped at N can briefly have N requests in flight plus N the
    // server still counts: the server's limit is 2N here, which no lag can
    // cross, while 8 uncapped requests would.
    let emu = emulator(
        EmulatorConfig::builder()
            .max_connections(4)
            .build()
            .unwrap(),
    )
    .await;
    let cap = ConnectionCapLayer::new(2).unwrap();
    let client = builder(&emu)
        .connection_cap(cap.clone())
        .build()
        .await
        .unwrap();
    let svc = BedrockService::new(client);
    let host = emu.addr().to_string();
    // The first two requests hold their connections until released.
    emu.set_faults(vec![
        FaultRule::new(FaultKind::Stall { ms: 30_000 }).count(2),
    ])
    .unwrap();
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(svc.clone().oneshot(converse(HAIKU, "hold", Some(4)))))
        .collect();
    until_in_flight(&emu, 2).await;
    assert_eq!(cap.in_use(&host), 2);
    // Six more wait for a slot instead of being refused by Bedrock.
    let waiting: Vec<_> = (0..6)
        .map(|_| tokio::spawn(svc.clone().oneshot(converse(HAIKU, "queued", Some(4)))))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(emu.counters().requests, 2, "nothing passed the cap");
    assert_eq!(cap.in_use(&host), 2);
    // Releasing the held calls (dropping them closes their connections)
    // lets the queue through, two at a time.
    for h in held {
        h.abort();
    }
    for w in waiting {
        let resp = w.await.unwrap().expect("served after waiting");
        assert_eq!(resp.usage().map(|u| u.output_tokens), Some(4));
    }
    assert_eq!(emu.counters().connection_cap, 0);
    assert_eq!(cap.in_use(&host), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_wait_timeout_fails_fast_as_a_network_error() {
    let emu = emulator(EmulatorConfig::builder().build().unwrap()).await;
    let svc = ServiceBuilder::new()
        .layer(ThrottleClassifyLayer::new())
        .service(BedrockService::new(
            builder(&emu)
                .max_connections_per_host(1)
                .pool_wait_timeout(Duration::from_millis(100))
                .build()
                .await
                .unwrap(),
        ));
    emu.set_faults(vec![
        FaultRule::new(FaultKind::Stall { ms: 30_000 }).count(1),
    ])
    .unwrap();
    let held = tokio::spawn(svc.clone().oneshot(converse(HAIKU, "hold", Some(4))));
    until_in_flight(&emu, 1).await;
    let err = svc
        .clone()
        .oneshot(converse(HAIKU, "next", Some(4)))
        .await
        .unwrap_err();
    let SdkError::DispatchFailure(failure) = err.inner().unwrap() else {
        panic!("{err:?}");
    };
    assert!(failure.is_timeout(), "{failure:?}");
    let source = std::error::Error::source(failure.as_connector_error().unwrap()).unwrap();
    let wait = source.downcast_ref::<PoolWaitTimeout>().unwrap();
    assert_eq!(wait.waited, Duration::from_millis(100));
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Network)
    );
    held.abort();
}

type Seen = Arc<Mutex<Vec<(String, String, u16)>>>;

#[tokio::test]
async fn a_tower_layer_below_the_sdk_sees_every_attempt() {
    let emu = emulator(EmulatorConfig::builder().output_tokens(3).build().unwrap()).await;
    let seen: Seen = Arc::default();
    let log = seen.clone();
    // A recording layer: method, path and status of each HTTP exchange.
    let record = tower::layer::layer_fn(move |inner: ConnectorService| {
        let log = log.clone();
        tower::service_fn(move |req: http::Request<SdkBody>| {
            let log = log.clone();
            let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
            let call = inner.clone().oneshot(req);
            async move {
                let resp = call.await?;
                log.lock()
                    .unwrap()
                    .push((method, path, resp.status().as_u16()));
                Ok::<_, aws_smithy_runtime_api::client::result::ConnectorError>(resp)
            }
        })
    });
    let b = builder(&emu);
    let base = b.default_transport();
    let client = b
        .http_client(SharedHttpClient::new(LayeredHttpClient::new(base, record)))
        .build()
        .await
        .unwrap();
    let svc = BedrockService::new(client);
    let ok = svc
        .clone()
        .oneshot(converse(HAIKU, "abcd", Some(8)))
        .await
        .unwrap();
    assert_eq!(ok.usage(), Some(Usage::new(1, 3)));
    emu.set_faults(vec![FaultRule::new(FaultKind::Overloaded).count(1)])
        .unwrap();
    svc.clone()
        .oneshot(converse(HAIKU, "abcd", Some(8)))
        .await
        .unwrap_err();
    let path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse".to_owned();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("POST".to_owned(), path.clone(), 200),
            ("POST".to_owned(), path, 429)
        ],
        "one HTTP attempt per call: SDK retries are off"
    );
}

#[tokio::test]
async fn a_plain_tower_service_as_the_transport() {
    // No network: a service answering as Bedrock does.
    let transport = tower::service_fn(|req: http::Request<SdkBody>| async move {
        assert!(
            req.headers()
                .get("authorization")
                .is_some_and(|v| v.as_bytes().starts_with(b"AWS4-HMAC-SHA256")),
            "the SDK signed the request"
        );
        let resp = if req.uri().path().contains("haiku") {
            http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(SdkBody::from(
                    r#"{"output":{"message":{"role":"assistant","content":[{"text":"sun oak"}]}},
                        "stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":2,"totalTokens":7},
                        "metrics":{"latencyMs":1}}"#,
                ))
        } else {
            http::Response::builder()
                .status(429)
                .header("x-amzn-ErrorType", "ThrottlingException")
                .header("x-amzn-RequestId", "req-1")
                .body(SdkBody::from(
                    r#"{"message":"Too many tokens, please wait before trying again."}"#,
                ))
        };
        Ok::<_, std::convert::Infallible>(resp.unwrap())
    });
    let client = tower_bedrock_sdk::BedrockClientBuilder::new()
        .region("us-west-2")
        .static_credentials("AKID", "SECRET")
        .http_client(service_http_client(transport))
        .build()
        .await
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(ThrottleClassifyLayer::new())
        .service(BedrockService::new(client));
    let ok = svc
        .clone()
        .oneshot(converse(HAIKU, "hi", None))
        .await
        .unwrap();
    assert_eq!(ok.usage(), Some(Usage::new(5, 2)));
    let err = svc
        .clone()
        .oneshot(converse(SONNET4, "hi", None))
        .await
        .unwrap_err();
    let op = err.inner().unwrap().as_service_error().unwrap();
    assert!(op.is_throttling_exception());
    assert_eq!(
        op.message(),
        Some("Too many tokens, please wait before trying again.")
    );
    assert_eq!(err.class(), ErrorClass::Throttled(ThrottleKind::TokenRate));
    assert_eq!(err.classification().request_id.as_deref(), Some("req-1"));
}

#[tokio::test]
async fn connection_refused_is_a_dispatch_failure() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = tower_bedrock_sdk::BedrockClientBuilder::new()
        .region("us-east-1")
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .static_credentials("AKID", "SECRET")
        .build()
        .await
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(ThrottleClassifyLayer::new())
        .service(BedrockService::new(client));
    let err = svc.oneshot(converse(HAIKU, "hi", None)).await.unwrap_err();
    assert!(
        matches!(err.inner().unwrap(), SdkError::DispatchFailure(f) if f.is_io()),
        "{err:?}"
    );
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Network)
    );
}
