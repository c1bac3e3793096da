use aws_sdk_bedrockruntime::types::ConverseStreamOutput;
use tower::ServiceExt;
use tower_bedrock::budget::Budget;
use tower_bedrock::core::Classified;
use tower_bedrock::fallback::Chain;
use tower_bedrock::sdk::{BedrockClientBuilder, BedrockService, ConverseStreamRequest};

async fn stream_an_answer(req: ConverseStreamRequest) -> Result<(), Box<dyn std::error::Error>> {
    let client = BedrockClientBuilder::new().region("us-east-1").build().await?;
    let budget = Budget::builder().tokens_per_window(200_000).build()?;
    let svc = tower_bedrock::stack()
        .fallback_chain(
            Chain::new()
                .then("us.anthropic.claude-sonnet-4-20250514-v1:0")
                .then("us.anthropic.claude-3-5-haiku-20241022-v1:0"),
        )
        .token_budget(&budget)
        .service::<_, ConverseStreamRequest, _>(BedrockService::new(client))?;

    // Fallback happens here, before the first event.
    let mut answer = svc.oneshot(req).await?;
    loop {
        match answer.recv().await {
            Ok(Some(ConverseStreamOutput::ContentBlockDelta(d))) => {
                if let Some(Ok(text)) = d.delta().map(|d| d.as_text()) {
                    print!("{text}");
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            // After the first event: a typed, classified error.
            Err(e) => return Err(format!("stream failed: {}", e.class()).into()),
        }
    }
    Ok(())
}
