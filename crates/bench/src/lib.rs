//! The benchmarks and the scenario harness of tower-bedrock.
//!
//! - `benches/overhead.rs`: criterion micro-benchmarks of every layer and
//!   of the preset stack over a no-op service, beside tower's `Retry`,
//!   `RateLimit` and `ConcurrencyLimit`, governor and tower-resilience, and
//!   contended throughput from two threads.
//! - the `scenarios` binary: named [`Scenario`]s (or TOML files) run
//!   against the in-process emulator with the real AWS SDK on loopback, in
//!   compressed time, through each [`Strategy`] (Converse, or
//!   ConverseStream when the scenario streams); per scenario a table with
//!   the ideal schedule's row ([`ideal`]), a verdict on the project's bar
//!   ([`verdict`]), a JSON file and a PNG chart with a bundled font
//!   ([`chart`]); and a search for the smallest quota at which no call is
//!   lost ([`search::smallest_quota`]).
//!
//! See `docs/BENCHMARKS.md` for the method and the numbers.
//!
//! # Example
//!
//! A scenario described in TOML, checked, and its attainable calls:
//!
//! ```
//! use tower_bedrock_bench::{Scenario, metrics};
//!
//! let s = Scenario::from_toml_str(r#"
//!     name = "my-peak"
//!     minutes = 4
//!     window_ms = 500
//!     [[models]]
//!     id = "anthropic.claude-3-5-haiku-20241022-v1:0"
//!     rpm = 100
//!     tpm = 400000
//!     [[apps]]
//!     name = "chat"
//!     rpm = [60, 120, 120, 60]
//! "#)?;
//! assert_eq!(s.total_calls(), 360);
//! // 100 a minute: the 40 over the quota in minutes 1 and 2 are served
//! // in minute 3 and the drain.
//! assert_eq!(metrics::attainable(&s), 360.0);
//! # Ok::<(), tower_bedrock_bench::spec::SpecError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chart;
pub mod ideal;
pub mod metrics;
pub mod report;
pub mod run;
pub mod search;
pub mod spec;
pub mod strategy;
pub mod verdict;

pub use report::Report;
pub use run::{RunResult, run};
pub use spec::Scenario;
pub use strategy::{ClientOptions, Strategy};

/// Runs `scenario` through each of `strategies` in turn (a fresh emulator
/// each time) and collects the report.
pub async fn run_all(
    scenario: &Scenario,
    strategies: &[Strategy],
    opts: &ClientOptions,
) -> Result<Report, tower::BoxError> {
    let mut runs = Vec::new();
    for &s in strategies {
        runs.push(run::run(scenario, s, opts).await?);
    }
    let ideal = ideal::ideal(scenario);
    let verdict = verdict::judge(&ideal, &runs);
    Ok(Report {
        scenario: scenario.clone(),
        attainable: ideal.served as f64,
        ideal,
        runs,
        verdict,
    })
}
