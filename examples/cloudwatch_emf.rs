//! The stack's own metrics published to CloudWatch as Embedded Metric
//! Format (EMF).
//!
//! ```text
//! cargo run --example cloudwatch_emf
//! ```
//!
//! Installs [`EmfRecorder`] as the process's `metrics` recorder, sends a
//! few calls through the preset stack to an in-process emulator (one
//! throttled and retried, one to an overloaded model that the fallback
//! serves) and flushes from a thread of its own
//! ([`EmfRecorder::spawn_flusher`]): every 500 ms here (every minute or so
//! in a service), and once more at shutdown. Each stdout line is one EMF
//! document; under Lambda, ECS with the `awslogs` driver or the CloudWatch
//! agent, CloudWatch Logs turns them into metrics of the `TowerBedrock`
//! namespace, which `monitoring/cloudwatch/bedrock-monitoring.yaml` reads.
//! Nothing in them comes from a prompt or a completion: only model ids,
//! classes, kinds, codes and counts.

use std::error::Error;
use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use tower::ServiceExt;
use tower_bedrock::emf::EmfRecorder;
use tower_bedrock::fallback::Chain;
use tower_bedrock::sdk::{BedrockClientBuilder, BedrockService, ConverseRequest};
use tower_bedrock_emulator::{Emulator, EmulatorConfig, FaultKind, FaultRule};

const PRIMARY: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const FALLBACK: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";

fn ask(model: &str) -> Result<ConverseRequest, Box<dyn Error>> {
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("Say hello.".to_owned()))
        .build()?;
    Ok(ConverseInput::builder()
        .model_id(model)
        .messages(message)
        .inference_config(InferenceConfiguration::builder().max_tokens(200).build())
        .build()?
        .into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let recorder = EmfRecorder::builder("TowerBedrock").build()?;
    metrics::set_global_recorder(recorder.clone())?;

    // The periodic flush a service runs (every 60 s is typical), on a
    // thread of its own; stopping it flushes once more.
    let flusher = recorder.spawn_flusher(Duration::from_millis(500), std::io::stdout())?;

    // A 1 s quota window keeps the throttle's retry short.
    let window = Duration::from_secs(1);
    let emulator = Emulator::start(
        EmulatorConfig::builder()
            .window(window)
            .fault(
                FaultRule::new(FaultKind::TooManyTokens)
                    .model(PRIMARY)
                    .count(1),
            )
            .build()?,
    )
    .await?;
    let client = BedrockClientBuilder::new()
        .region("us-east-1")
        .endpoint_url(emulator.endpoint_url())
        .static_credentials("AKIDEXAMPLE", "not-a-secret")
        .build()
        .await?;
    let svc = tower_bedrock::stack()
        .window(window)
        .fallback_chain(Chain::new().then(PRIMARY).then(FALLBACK))
        .service::<_, ConverseRequest, _>(BedrockService::new(client))?;

    // Throttled once ("Too many tokens"), retried after the window.
    svc.clone().oneshot(ask(PRIMARY)?).await?;
    // The primary overloaded: the fallback answers.
    emulator.set_faults(vec![
        FaultRule::new(FaultKind::Overloaded)
            .model(PRIMARY)
            .count(1),
    ])?;
    svc.clone().oneshot(ask(PRIMARY)?).await?;
    svc.oneshot(ask(PRIMARY)?).await?;

    // At shutdown: the last flush.
    flusher.stop();
    emulator.shutdown().await;
    Ok(())
}
