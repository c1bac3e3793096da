//! `bedrock-emulator`: a local Amazon Bedrock Runtime.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tower_bedrock_emulator::{Emulator, EmulatorConfig, FaultKind, FaultRule, Latency};

/// A local Amazon Bedrock Runtime: the real wire protocol, Bedrock's quota
/// model and scriptable faults. Flags override the configuration file.
#[derive(Debug, Parser)]
#[command(name = "bedrock-emulator", version)]
struct Args {
    /// TOML configuration file (every field optional; see the README).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Seed of every random decision.
    #[arg(long)]
    seed: Option<u64>,
    /// Quota window in milliseconds (60000 like Bedrock).
    #[arg(long)]
    window_ms: Option<u64>,
    /// Default tokens per window for every model id.
    #[arg(long)]
    tpm: Option<u64>,
    /// Default requests per window for every model id.
    #[arg(long)]
    rpm: Option<u64>,
    /// Default tokens per day for every model id.
    #[arg(long)]
    tpd: Option<u64>,
    /// Cap on requests in flight (503 "Too many connections" above it).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Time to first token, milliseconds.
    #[arg(long)]
    ttft_ms: Option<u64>,
    /// Time per output token, milliseconds.
    #[arg(long)]
    per_token_ms: Option<f64>,
    /// Multiplier of the latency model (0 = instant).
    #[arg(long)]
    latency_scale: Option<f64>,
    /// Use a realistic latency model (400 ms to first token, 15 ms/token).
    #[arg(long)]
    realistic_latency: bool,
    /// Output tokens per answer (capped by max_tokens).
    #[arg(long)]
    output_tokens: Option<u64>,
    /// Accept any model id.
    #[arg(long)]
    allow_unknown_models: bool,
    /// Accept bare ids of models Bedrock serves only through inference
    /// profiles (Claude 4...), which Bedrock refuses.
    #[arg(long)]
    allow_on_demand_everywhere: bool,
    /// Largest request body in bytes.
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// A fault, `KIND[:RATE]` with KIND one of overloaded, too_many_requests,
    /// too_many_tokens, unavailable, getting_throttled, internal_error,
    /// model_timeout, model_not_ready, model_error, service_quota_exceeded,
    /// reset, truncate (repeatable). In-stream faults go in the
    /// configuration file or the admin API.
    #[arg(long = "fault", value_name = "KIND[:RATE]")]
    faults: Vec<String>,
}

fn parse_fault(s: &str) -> Result<FaultRule, String> {
    let (kind, rate) = match s.split_once(':') {
        Some((k, r)) => (
            k,
            r.parse::<f64>()
                .map_err(|_| format!("bad rate in --fault {s}"))?,
        ),
        None => (s, 1.0),
    };
    let kind = match kind {
        "overloaded" => FaultKind::Overloaded,
        "too_many_requests" => FaultKind::TooManyRequests,
        "too_many_tokens" => FaultKind::TooManyTokens,
        "unavailable" => FaultKind::Unavailable,
        "getting_throttled" => FaultKind::GettingThrottled,
        "internal_error" => FaultKind::InternalError,
        "model_timeout" => FaultKind::ModelTimeout,
        "model_not_ready" => FaultKind::ModelNotReady,
        "model_error" => FaultKind::ModelError,
        "service_quota_exceeded" => FaultKind::ServiceQuotaExceeded,
        "reset" => FaultKind::Reset,
        "truncate" => FaultKind::Truncate,
        other => return Err(format!("unknown fault kind {other:?}")),
    };
    Ok(FaultRule::new(kind).rate(rate))
}

fn config(args: Args) -> Result<EmulatorConfig, String> {
    let mut c = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            EmulatorConfig::from_toml_str(&text).map_err(|e| e.to_string())?
        }
        None => EmulatorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 4010)),
            ..EmulatorConfig::default()
        },
    };
    if let Some(b) = args.bind {
        c.bind = b;
    }
    if let Some(s) = args.seed {
        c.seed = s;
    }
    if let Some(w) = args.window_ms {
        c.window_ms = w;
    }
    if args.tpm.is_some() {
        c.default_quota.tpm = args.tpm;
    }
    if args.rpm.is_some() {
        c.default_quota.rpm = args.rpm;
    }
    if args.tpd.is_some() {
        c.default_quota.tpd = args.tpd;
    }
    if args.max_connections.is_some() {
        c.max_connections = args.max_connections;
    }
    if args.realistic_latency {
        c.latency = Latency::realistic();
    }
    if let Some(v) = args.ttft_ms {
        c.latency.time_to_first_token_ms = v;
    }
    if let Some(v) = args.per_token_ms {
        c.latency.per_token_ms = v;
    }
    if let Some(v) = args.latency_scale {
        c.latency.scale = v;
    }
    if let Some(v) = args.output_tokens {
        c.output_tokens = v;
    }
    if args.allow_unknown_models {
        c.allow_unknown_models = true;
    }
    if args.allow_on_demand_everywhere {
        c.allow_on_demand_everywhere = true;
    }
    if let Some(v) = args.max_body_bytes {
        c.max_body_bytes = v;
    }
    for f in &args.faults {
        c.faults.push(parse_fault(f)?);
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bedrock-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    let handle = match Emulator::start(config).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("bedrock-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The first line on stdout is machine-readable: scripts read the URL.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "bedrock-emulator listening on {}",
        handle.endpoint_url()
    );
    let _ = out.flush();
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    ExitCode::SUCCESS
}
