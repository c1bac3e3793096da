//! Quickstart: watch the stack survive throttles and an overloaded model,
//! on your laptop, without an AWS account.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Starts an in-process Bedrock emulator with the seed's scenario in
//! compressed time (one scenario minute lasts two seconds): three
//! applications with peaks of 75, 50 and 50 requests per minute share a
//! quota of 150 requests and 200,000 tokens per minute; one sends a burst of
//! large documents; the primary model is overloaded for two minutes; a
//! fallback model is available. The same traffic runs twice: through the
//! seed's naive retry, then through the tower-bedrock stack. About a minute
//! in all; no credentials needed (the emulator accepts dummy ones).
//!
//! `--real-bedrock` sends a few calls through the stack to Amazon Bedrock
//! instead, with credentials from the default provider chain (never the
//! default: it costs money).

#[path = "common/scenario.rs"]
mod scenario;

use std::time::Duration;

use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use clap::Parser;
use tower::{Service, ServiceExt};
use tower_bedrock::core::CallReport;
use tower_bedrock::fallback::{Chain, Target};
use tower_bedrock::sdk::{BedrockClientBuilder, BedrockService, ConverseRequest};

use scenario::{Client, Scenario};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    about = "tower-bedrock quickstart: naive retries vs the stack, against an emulated Bedrock"
)]
struct Args {
    /// Wall-clock seconds per scenario minute.
    #[arg(long, default_value_t = 2.0)]
    seconds_per_minute: f64,
    /// Seed of the emulator, the traffic and the stack.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Call Amazon Bedrock instead of the emulator (credentials from the
    /// default provider chain; a few real, billed calls).
    #[arg(long)]
    real_bedrock: bool,
    /// Region for --real-bedrock.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Primary model for --real-bedrock.
    #[arg(long, default_value = "us.anthropic.claude-sonnet-4-20250514-v1:0")]
    model: String,
    /// Fallback model for --real-bedrock.
    #[arg(long, default_value = "us.anthropic.claude-3-5-haiku-20241022-v1:0")]
    fallback_model: String,
    /// Calls to send with --real-bedrock.
    #[arg(long, default_value_t = 3)]
    calls: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // Logs to stderr by RUST_LOG (default: warnings). The filter keeps the
    // AWS SDK's TRACE output of prompts, completions and the access key id
    // out of the log at every level (see tower_bedrock::logging).
    tower_bedrock::logging::try_init("warn")?;
    if args.real_bedrock {
        return real_bedrock(&args).await;
    }
    let scenario = Scenario {
        window: Duration::from_secs_f64(args.seconds_per_minute.max(0.2)),
        seed: args.seed,
        ..Scenario::quickstart()
    };
    println!(
        "Scenario: 3 apps (peaks 75/50/50 rpm) share 150 rpm and 200k tokens/min of {}.",
        scenario::PRIMARY
    );
    println!(
        "Minutes 3-4: large-document burst; minutes 6-7: primary overloaded; 2 % 503s all along."
    );
    println!(
        "One scenario minute = {:.1} s of wall time.\n",
        scenario.window.as_secs_f64()
    );

    println!("Run 1/2: the seed's naive retry (backoff 1 s..60 s, 5 attempts, 429s only)");
    let naive = scenario::run(&scenario, Client::Naive).await;
    println!("  done in {:.1} s\n", naive.elapsed.as_secs_f64());
    println!(
        "Run 2/2: tower-bedrock (fallback > retry > breaker > budget > classify), fallback {}",
        scenario::FALLBACK
    );
    let stack = scenario::run(&scenario, Client::Stack).await;
    println!("  done in {:.1} s\n", stack.elapsed.as_secs_f64());

    print!("{}", scenario::table(&scenario, &naive, &stack));
    Ok(())
}

/// A few calls through the default stack to Amazon Bedrock.
async fn real_bedrock(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "Calling Amazon Bedrock in {} ({} calls, primary {}, fallback {}).",
        args.region, args.calls, args.model, args.fallback_model
    );
    let client = BedrockClientBuilder::new()
        .region(args.region.clone())
        .build()
        .await?;
    let mut svc = tower_bedrock::stack()
        .fallback_chain(
            Chain::new()
                .then(args.model.as_str())
                .then(Target::new(&args.fallback_model).max_tokens(256)),
        )
        .service::<_, ConverseRequest, _>(BedrockService::new(client))?;
    for i in 0..args.calls {
        let input = ConverseInput::builder()
            .model_id(&args.model)
            .messages(
                Message::builder()
                    .role(ConversationRole::User)
                    .content(ContentBlock::Text(
                        "In one sentence, what is a circuit breaker?".into(),
                    ))
                    .build()?,
            )
            .inference_config(InferenceConfiguration::builder().max_tokens(256).build())
            .build()?;
        let report = CallReport::new();
        let started = std::time::Instant::now();
        let answer = svc
            .ready()
            .await?
            .call(ConverseRequest::new(input).with_report(report.clone()))
            .await;
        let s = report.summary();
        match answer {
            Ok(a) => {
                let usage = tower_bedrock::core::ReportsUsage::usage(&a);
                println!(
                    "call {}: ok in {:.2} s, served by {}, {} attempt(s), usage {:?}",
                    i + 1,
                    started.elapsed().as_secs_f64(),
                    s.served_by.as_deref().unwrap_or("?"),
                    s.attempts,
                    usage
                );
            }
            Err(e) => println!(
                "call {}: failed ({}) after {} attempt(s): {e}",
                i + 1,
                e.class(),
                s.attempts
            ),
        }
    }
    Ok(())
}
