//! `CountTokensLayer` against the emulator: exact counts reach the layers
//! below, small prompts are skipped, a failed count keeps the estimate.

mod common;

use std::sync::{Arc, Mutex};

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::types::{Tool, ToolConfiguration, ToolInputSchema, ToolSpecification};
use aws_smithy_types::Document;
use common::*;
use tower::{Layer, ServiceExt};
use tower_bedrock_core::{ModelRequest, ReportsUsage, TokenDemand};
use tower_bedrock_emulator::EmulatorConfig;
use tower_bedrock_sdk::{BedrockService, ConverseRequest, ConverseResponse, CountTokensLayer};

/// Records the demand each request shows when it reaches the service below
/// (where a budget layer would read it), then calls Bedrock.
type ConverseErr = aws_sdk_bedrockruntime::error::SdkError<
    aws_sdk_bedrockruntime::operation::converse::ConverseError,
    aws_smithy_runtime_api::client::orchestrator::HttpResponse,
>;
type Recording = tower::util::BoxCloneService<ConverseRequest, ConverseResponse, ConverseErr>;
type Seen = Arc<Mutex<Vec<TokenDemand>>>;

fn recording(svc: BedrockService) -> (Recording, Seen) {
    let seen: Arc<Mutex<Vec<TokenDemand>>> = Arc::default();
    let log = seen.clone();
    let svc = tower::service_fn(move |req: ConverseRequest| {
        log.lock().unwrap().push(req.token_demand());
        svc.clone().oneshot(req)
    });
    (Recording::new(svc), seen)
}

fn with_tool(model: &str) -> ConverseRequest {
    let mut input: ConverseInput =
        converse(model, "What is the weather in Paris today?", Some(20)).into_input();
    input.tool_config = Some(
        ToolConfiguration::builder()
            .tools(Tool::ToolSpec(
                ToolSpecification::builder()
                    .name("get_weather")
                    .description("Current weather for a city, in Celsius.")
                    .input_schema(ToolInputSchema::Json(Document::Object(
                        [("type".to_owned(), Document::String("object".into()))].into(),
                    )))
                    .build()
                    .unwrap(),
            ))
            .build()
            .unwrap(),
    );
    input.into()
}

#[tokio::test]
async fn exact_counts_replace_the_estimate() {
    let emu = emulator(EmulatorConfig::builder().build().unwrap()).await;
    let bedrock = BedrockService::new(client(&emu).await);
    let (inner, seen) = recording(bedrock.clone());
    let svc = CountTokensLayer::new(bedrock).layer(inner);

    let req = with_tool(SONNET4);
    let estimate = req.token_demand();
    let resp = svc.clone().oneshot(req).await.unwrap();
    let billed = resp.usage().unwrap().input_tokens;
    // The emulator does not bill tool definitions; the heuristic counts
    // them, so the two differ and the counted value must be Bedrock's.
    assert!(estimate.input_tokens > billed, "{estimate:?} vs {billed}");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![TokenDemand {
            input_tokens: billed,
            max_output_tokens: Some(20)
        }]
    );
    assert_eq!(emu.counters().count_tokens, 1);
}

#[tokio::test]
async fn small_prompts_skip_the_count_and_failures_keep_the_estimate() {
    let emu = emulator(
        EmulatorConfig::builder()
            .allow_unknown_models(false)
            .build()
            .unwrap(),
    )
    .await;
    let bedrock = BedrockService::new(client(&emu).await);
    let (inner, seen) = recording(bedrock.clone());
    let svc = CountTokensLayer::new(bedrock.clone())
        .min_estimate(1_000)
        .layer(inner);
    let req = with_tool(SONNET4);
    let estimate = req.token_demand();
    svc.clone().oneshot(req).await.unwrap();
    assert_eq!(emu.counters().count_tokens, 0, "below min_estimate");
    assert_eq!(*seen.lock().unwrap(), vec![estimate]);

    // A count that fails (here the model is unknown, so the call fails too)
    // leaves the estimate and still makes the call.
    let (inner, seen) = recording(bedrock.clone());
    let svc = CountTokensLayer::new(bedrock).layer(inner);
    let req = with_tool("acme.unknown-v1:0");
    let estimate = req.token_demand();
    let err = svc.clone().oneshot(req).await.unwrap_err();
    assert!(err.as_service_error().unwrap().is_validation_exception());
    assert_eq!(*seen.lock().unwrap(), vec![estimate]);
}
