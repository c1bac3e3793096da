//! The adapter's overhead over a raw SDK call, against the emulator on
//! loopback (zero latency model, so the numbers are the client's and the
//! loopback's costs).
//!
//! - `converse/raw_sdk_default_transport`: the SDK's fluent call on a client
//!   with the SDK's default HTTP client (retries off, like ours);
//! - `converse/raw_sdk_capped_transport`: the same call on the client of
//!   `BedrockClientBuilder` (the connection cap as a tower layer below the
//!   SDK, through `LayeredHttpClient`): the HTTP-level adapter's cost;
//! - `converse/bedrock_service`: `BedrockService` on that client (request
//!   wrapper, field moves, boxed future);
//! - `converse/classified_service`: plus `ThrottleClassify` above;
//! - `invoke/raw_sdk` vs `invoke/bedrock_service`: InvokeModel, whose
//!   adapter adds a per-call interceptor reading the token headers.
//!
//! Loopback calls cost about a millisecond, which hides microseconds; the
//! `in_memory` group replaces the network by a canned Converse answer so
//! the adapters' own costs show:
//!
//! - `in_memory/raw_sdk_native_connector`: the SDK with a plain
//!   `HttpConnector` (no tower anywhere): the baseline;
//! - `in_memory/raw_sdk_service_connector`: the same answer from a tower
//!   `service_fn` through `service_http_client` (`ServiceConnector`);
//! - `in_memory/raw_sdk_capped`: plus `LayeredHttpClient` with the
//!   connection cap, as `BedrockClientBuilder` builds it;
//! - `in_memory/bedrock_service`: plus `BedrockService` on top.
#![allow(missing_docs)]

use aws_sdk_bedrockruntime::config::SharedHttpClient;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelInput;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message};
use aws_sdk_bedrockruntime::{Client, Config};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::RetryConfig;
use criterion::{Criterion, criterion_group, criterion_main};
use tower::{ServiceBuilder, ServiceExt};
use tower_bedrock_classify::ThrottleClassifyLayer;
use tower_bedrock_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Quota};
use tower_bedrock_sdk::{
    BedrockClientBuilder, BedrockService, ConverseRequest, InvokeModelRequest, service_http_client,
};

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

fn message() -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("Hello there, how are you?".into()))
        .build()
        .unwrap()
}

fn converse_input() -> ConverseInput {
    ConverseInput::builder()
        .model_id(MODEL)
        .messages(message())
        .build()
        .unwrap()
}

const BODY: &str = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":16,"messages":[{"role":"user","content":"Hello there, how are you?"}]}"#;

struct Bed {
    _emu: EmulatorHandle,
    default_client: Client,
    capped_client: Client,
}

async fn setup() -> Bed {
    let emu = Emulator::start(
        EmulatorConfig::builder()
            .default_quota(Quota::tokens(1_000_000_000_000))
            .output_tokens(16)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let default_client = Client::from_conf(
        Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "bench"))
            .endpoint_url(emu.endpoint_url())
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let capped_client = BedrockClientBuilder::new()
        .region("us-east-1")
        .endpoint_url(emu.endpoint_url())
        .static_credentials("AKID", "SECRET")
        .build()
        .await
        .unwrap();
    Bed {
        _emu: emu,
        default_client,
        capped_client,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bed = rt.block_on(setup());

    let mut g = c.benchmark_group("converse");
    for (name, client) in [
        ("raw_sdk_default_transport", bed.default_client.clone()),
        ("raw_sdk_capped_transport", bed.capped_client.clone()),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let client = client.clone();
                async move {
                    client
                        .converse()
                        .model_id(MODEL)
                        .messages(message())
                        .send()
                        .await
                        .unwrap()
                }
            })
        });
    }
    let svc = BedrockService::new(bed.capped_client.clone());
    g.bench_function("bedrock_service", |b| {
        b.to_async(&rt)
            .iter(|| svc.clone().oneshot(ConverseRequest::new(converse_input())))
    });
    let classified = ServiceBuilder::new()
        .layer(ThrottleClassifyLayer::new())
        .service(svc.clone());
    g.bench_function("classified_service", |b| {
        b.to_async(&rt).iter(|| async {
            classified
                .clone()
                .oneshot(ConverseRequest::new(converse_input()))
                .await
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("invoke");
    let client = bed.capped_client.clone();
    g.bench_function("raw_sdk", |b| {
        b.to_async(&rt).iter(|| {
            let client = client.clone();
            async move {
                client
                    .invoke_model()
                    .model_id(MODEL)
                    .body(Blob::new(BODY))
                    .send()
                    .await
                    .unwrap()
            }
        })
    });
    g.bench_function("bedrock_service", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = svc
                .clone()
                .oneshot(InvokeModelRequest::new(
                    InvokeModelInput::builder()
                        .model_id(MODEL)
                        .body(Blob::new(BODY))
                        .build()
                        .unwrap(),
                ))
                .await
                .unwrap();
            assert!(resp.usage.is_some());
            resp
        })
    });
    g.finish();
}

const CANNED: &str = r#"{"output":{"message":{"role":"assistant","content":[{"text":"sun oak ice"}]}},"stopReason":"end_turn","usage":{"inputTokens":7,"outputTokens":3,"totalTokens":10},"metrics":{"latencyMs":1}}"#;

fn canned() -> http::Response<SdkBody> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(SdkBody::from(CANNED))
        .unwrap()
}

#[derive(Debug)]
struct NativeConnector;

impl HttpConnector for NativeConnector {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        HttpConnectorFuture::ready(Ok(HttpResponse::try_from(canned()).unwrap()))
    }
}

fn in_memory_config(http: SharedHttpClient) -> Config {
    Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "bench"))
        .retry_config(RetryConfig::disabled())
        .http_client(http)
        .build()
}

fn bench_in_memory(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let transport = tower::service_fn(|_req: http::Request<SdkBody>| async {
        Ok::<_, std::convert::Infallible>(canned())
    });
    let native = Client::from_conf(in_memory_config(http_client_fn(|_, _| {
        SharedHttpConnector::new(NativeConnector)
    })));
    let service = Client::from_conf(in_memory_config(service_http_client(transport)));
    let capped = rt.block_on(async {
        BedrockClientBuilder::new()
            .region("us-east-1")
            .static_credentials("AKID", "SECRET")
            .http_client(service_http_client(transport))
            .build()
            .await
            .unwrap()
    });
    let mut g = c.benchmark_group("in_memory");
    for (name, client) in [
        ("raw_sdk_native_connector", native),
        ("raw_sdk_service_connector", service),
        ("raw_sdk_capped", capped.clone()),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let client = client.clone();
                async move {
                    client
                        .converse()
                        .model_id(MODEL)
                        .messages(message())
                        .send()
                        .await
                        .unwrap()
                }
            })
        });
    }
    let svc = BedrockService::new(capped);
    g.bench_function("bedrock_service", |b| {
        b.to_async(&rt).iter(|| async {
            svc.clone()
                .oneshot(ConverseRequest::new(converse_input()))
                .await
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_in_memory, bench);
criterion_main!(benches);
