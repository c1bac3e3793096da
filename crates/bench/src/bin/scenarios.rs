//! The scenario harness: named scenarios (or TOML scenario files) run
//! against the in-process emulator with the real AWS SDK on loopback, in
//! compressed time, through each client strategy.
//!
//! ```text
//! cargo run --release -p tower-bedrock-bench --bin scenarios -- --list
//! cargo run --release -p tower-bedrock-bench --bin scenarios            # every scenario
//! cargo run --release -p tower-bedrock-bench --bin scenarios -- -s seed-peak -s noisy-tenant
//! cargo run --release -p tower-bedrock-bench --bin scenarios -- -f crates/bench/scenarios/example.toml
//! cargo run --release -p tower-bedrock-bench --bin scenarios -- -f my.toml --find-quota
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use tower_bedrock_bench::{ClientOptions, Scenario, Strategy, chart, report, search};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "tower-bedrock scenario harness: client strategies against an emulated Bedrock")]
struct Args {
    /// Built-in scenario to run (repeatable; default: all of them unless
    /// --file is given).
    #[arg(short, long = "scenario")]
    scenarios: Vec<String>,
    /// Scenario file (TOML) to run (repeatable).
    #[arg(short, long = "file")]
    files: Vec<PathBuf>,
    /// Strategy to run (repeatable; default: all): naive, sdk-standard,
    /// sdk-adaptive, tower-retry-ratelimit, stack.
    #[arg(short = 'S', long = "strategy")]
    strategies: Vec<String>,
    /// Override every scenario's wall time per scenario minute (ms).
    #[arg(long)]
    window_ms: Option<u64>,
    /// Override every scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Where the JSON and PNG files go.
    #[arg(long, default_value = "target/scenarios")]
    out: PathBuf,
    /// Redis for the stack's shared budget in multi-process scenarios
    /// (without it, each process's budget admits its share of the quota).
    #[arg(long)]
    redis_url: Option<String>,
    /// Instead of comparing strategies: find the smallest multiple of the
    /// scenario's quotas at which the strategy (default: stack) loses no
    /// call.
    #[arg(long)]
    find_quota: bool,
    /// Range of quota multiples searched.
    #[arg(long, num_args = 2, value_names = ["LO", "HI"], default_values_t = [0.25, 2.0])]
    quota_range: Vec<f64>,
    /// Runs the search may make.
    #[arg(long, default_value_t = 6)]
    search_runs: usize,
    /// List the built-in scenarios and exit.
    #[arg(long)]
    list: bool,
}

#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    let args = Args::parse();
    if args.list {
        for name in Scenario::BUILT_IN {
            let s = Scenario::built_in(name).expect("built-in");
            println!("{name:<18} {}", s.description);
        }
        return Ok(());
    }
    let mut scenarios = Vec::new();
    for name in &args.scenarios {
        scenarios
            .push(Scenario::built_in(name).ok_or_else(|| format!("unknown scenario {name:?}"))?);
    }
    for path in &args.files {
        let text = std::fs::read_to_string(path)?;
        scenarios.push(Scenario::from_toml_str(&text)?);
    }
    if args.scenarios.is_empty() && args.files.is_empty() {
        scenarios = Scenario::BUILT_IN
            .iter()
            .filter_map(|n| Scenario::built_in(n))
            .collect();
    }
    for s in &mut scenarios {
        if let Some(w) = args.window_ms {
            s.window_ms = w;
        }
        if let Some(seed) = args.seed {
            s.seed = seed;
        }
        s.validate()?;
    }
    let mut strategies = Vec::new();
    for name in &args.strategies {
        strategies
            .push(Strategy::from_name(name).ok_or_else(|| format!("unknown strategy {name:?}"))?);
    }
    let opts = ClientOptions {
        redis_url: args.redis_url.clone(),
        run_id: 0,
    };
    std::fs::create_dir_all(&args.out)?;
    let started = Instant::now();

    if args.find_quota {
        let strategy = strategies.first().copied().unwrap_or(Strategy::Stack);
        let (lo, hi) = (args.quota_range[0], args.quota_range[1]);
        if !(lo > 0.0 && hi > lo) {
            return Err("--quota-range needs 0 < LO < HI".into());
        }
        for s in &scenarios {
            println!(
                "## {}: smallest quota with no lost call through {} (multiples {lo}..{hi}, at most {} runs)",
                s.name,
                strategy.name(),
                args.search_runs
            );
            let answer =
                search::smallest_quota(s, strategy, &opts, (lo, hi), args.search_runs).await?;
            for p in &answer.probes {
                println!(
                    "  x{:.3}: rpm {:>6} tpm {:>9}  lost {:>5}  429s {:>5}  p99 {:>6} s",
                    p.factor,
                    p.rpm.map_or("-".into(), |r| r.to_string()),
                    p.tpm,
                    p.lost,
                    p.server_429,
                    p.p99_s.map_or("-".into(), |v| format!("{v:.1}"))
                );
            }
            match answer.factor {
                Some(f) => {
                    let q = s.with_quota_factor(f);
                    println!(
                        "  => smallest quota found: x{f:.3} = {} rpm, {} tpm for {}",
                        q.models[0].rpm.map_or("-".into(), |r| r.to_string()),
                        q.models[0].tpm,
                        q.models[0].id
                    );
                }
                None => println!("  => calls lost even at x{hi}: widen --quota-range"),
            }
            let path = args.out.join(format!("{}-quota.json", s.name));
            std::fs::write(&path, serde_json::to_string_pretty(&answer)?)?;
            println!("  written: {}\n", path.display());
        }
    } else {
        let strategies = if strategies.is_empty() {
            Strategy::ALL.to_vec()
        } else {
            strategies
        };
        for s in &scenarios {
            let t = Instant::now();
            let report = tower_bedrock_bench::run_all(s, &strategies, &opts).await?;
            print!("{}", report::table(&report));
            let json = args.out.join(format!("{}.json", s.name));
            std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
            let png = args.out.join(format!("{}.png", s.name));
            chart::draw(&report, &png).map_err(|e| e.to_string())?;
            println!(
                "  ({:.0} s) written: {}, {}\n",
                t.elapsed().as_secs_f64(),
                json.display(),
                png.display()
            );
        }
        println!("chart legend: {}", chart::legend());
    }
    println!("total wall time {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
