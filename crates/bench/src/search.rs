//! How much quota does my traffic need? The smallest multiple of the
//! scenario's quotas at which a strategy loses no call, by bisection over
//! bounded runs.

use serde::Serialize;
use tower::BoxError;

use crate::run;
use crate::spec::Scenario;
use crate::strategy::{ClientOptions, Strategy};

/// One probe of the search.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Multiple of the scenario's quotas.
    pub factor: f64,
    /// Primary model's requests per minute at that factor.
    pub rpm: Option<u64>,
    /// Primary model's tokens per minute at that factor.
    pub tpm: u64,
    /// Calls lost.
    pub lost: u64,
    /// 429s the server sent.
    pub server_429: u64,
    /// 99th percentile latency of answered calls, in scenario seconds.
    pub p99_s: Option<f64>,
}

/// The search's answer.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaAnswer {
    /// Smallest factor found with no loss (`None`: even the largest tried
    /// lost calls).
    pub factor: Option<f64>,
    /// Every probe, in order.
    pub probes: Vec<Probe>,
}

/// Bisects the quota multiple in `[lo, hi]` with at most `runs` runs of
/// `strategy`, to a resolution of 2 % of the scenario's quota.
pub async fn smallest_quota(
    scenario: &Scenario,
    strategy: Strategy,
    opts: &ClientOptions,
    (mut lo, mut hi): (f64, f64),
    runs: usize,
) -> Result<QuotaAnswer, BoxError> {
    let mut probes = Vec::new();
    let probe = async |factor: f64, probes: &mut Vec<Probe>| -> Result<bool, BoxError> {
        let s = scenario.with_quota_factor(factor);
        let r = run::run(&s, strategy, opts).await?;
        probes.push(Probe {
            factor,
            rpm: s.models[0].rpm,
            tpm: s.models[0].tpm,
            lost: r.lost,
            server_429: r.server_429,
            p99_s: r.p99_s,
        });
        Ok(r.lost == 0)
    };
    if runs == 0 || !probe(hi, &mut probes).await? {
        return Ok(QuotaAnswer {
            factor: None,
            probes,
        });
    }
    let mut best = hi;
    for _ in 1..runs {
        if hi - lo < 0.02 {
            break;
        }
        let mid = (lo + hi) / 2.0;
        if probe(mid, &mut probes).await? {
            best = mid;
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(QuotaAnswer {
        factor: Some(best),
        probes,
    })
}
