//! Emulator throughput through the real `aws-sdk-bedrockruntime` client on
//! loopback: Converse and CountTokens, one call at a time and 32 at once.

use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseTokensRequest, CountTokensInput, Message,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower_bedrock_emulator::{Emulator, EmulatorConfig, Quota};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (emu, client) = rt.block_on(async {
        let config = EmulatorConfig::builder()
            // Effectively unlimited: measure the server, not the quota.
            .default_quota(Quota::tokens(u64::MAX / 4))
            .build()
            .expect("config");
        let emu = Emulator::start(config).await.expect("start");
        let conf = aws_sdk_bedrockruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "bench"))
            .endpoint_url(emu.endpoint_url())
            .retry_config(RetryConfig::disabled())
            .build();
        (emu, Client::from_conf(conf))
    });
    let msg = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("How do I survive throttling?".into()))
        .build()
        .expect("message");
    let model = "anthropic.claude-3-haiku-20240307-v1:0";

    let mut g = c.benchmark_group("emulator");
    g.throughput(Throughput::Elements(1));
    g.bench_function("converse_sdk_sequential", |b| {
        b.to_async(&rt).iter(|| async {
            client
                .converse()
                .model_id(model)
                .messages(msg.clone())
                .send()
                .await
                .expect("converse")
        })
    });
    g.bench_function("count_tokens_sdk_sequential", |b| {
        b.to_async(&rt).iter(|| async {
            client
                .count_tokens()
                .model_id(model)
                .input(CountTokensInput::Converse(
                    ConverseTokensRequest::builder()
                        .messages(msg.clone())
                        .build(),
                ))
                .send()
                .await
                .expect("count tokens")
        })
    });
    const BATCH: usize = 32;
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("converse_sdk_32_concurrent", |b| {
        b.to_async(&rt).iter(|| async {
            let calls = (0..BATCH).map(|_| {
                client
                    .converse()
                    .model_id(model)
                    .messages(msg.clone())
                    .send()
            });
            for r in futures_util::future::join_all(calls).await {
                r.expect("converse");
            }
        })
    });
    g.finish();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), emu.shutdown())
            .await
            .expect("clean shutdown")
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
