//! The project's bar, checked on every scenario's runs: the stack gets at
//! least the best peer's goodput, draws the fewest 429s, and its p50 and
//! p95 are at most twice those of the fastest peer whose goodput is within
//! 2 points of the best (and at most 1.25 times the ideal schedule's where
//! the quota binds).

use std::fmt::Write;

use serde::Serialize;

use crate::ideal::Ideal;
use crate::run::RunResult;
use crate::strategy::Strategy;

/// How much slower than the fastest comparable peer the stack may be.
pub const PEER_FACTOR: f64 = 2.0;
/// How much slower than the ideal schedule the stack may be where the quota
/// binds.
pub const IDEAL_FACTOR: f64 = 1.25;
/// A peer is comparable when its goodput is within this of the best.
pub const GOODPUT_POINTS: f64 = 0.02;

/// One check of the bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Short name: `goodput`, `429s`, `latency vs peers`, `latency vs ideal`.
    pub name: &'static str,
    /// Whether the stack meets it (checks that do not apply pass).
    pub pass: bool,
    /// The numbers behind it.
    pub detail: String,
}

/// The verdict on one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Every check passed.
    pub pass: bool,
    /// The checks, in the order of the bar.
    pub checks: Vec<Check>,
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{s:.1} s"))
}

/// `stack <= factor x reference` for a latency (an absent stack latency,
/// i.e. nothing answered, fails; an absent reference is not compared).
fn within(stack: Option<f64>, reference: Option<f64>, factor: f64) -> bool {
    match (stack, reference) {
        (Some(s), Some(r)) => s <= factor * r + 1e-9,
        (None, _) => false,
        (Some(_), None) => true,
    }
}

/// Judges the stack's run against the peers' runs and the ideal schedule;
/// `None` when the runs hold no stack or no peer.
pub fn judge(ideal: &Ideal, runs: &[RunResult]) -> Option<Verdict> {
    let stack = runs.iter().find(|r| r.strategy == Strategy::Stack)?;
    let peers: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.strategy != Strategy::Stack)
        .collect();
    let mut checks = Vec::new();

    let best = peers.iter().max_by_key(|r| r.answered)?;
    checks.push(Check {
        name: "goodput",
        // A run in which nothing is answered (a scenario the server
        // refuses) proves nothing: it fails.
        pass: stack.answered >= best.answered && stack.answered > 0,
        detail: format!(
            "stack {:.1} % ({} answered) vs best peer {:.1} % ({}, {})",
            stack.goodput * 100.0,
            stack.answered,
            best.goodput * 100.0,
            best.strategy.name(),
            best.answered
        ),
    });

    let fewest = peers.iter().min_by_key(|r| r.server_429)?;
    checks.push(Check {
        name: "429s",
        pass: stack.server_429 <= fewest.server_429,
        detail: format!(
            "stack {} vs fewest of the peers {} ({})",
            stack.server_429,
            fewest.server_429,
            fewest.strategy.name()
        ),
    });

    let top = runs.iter().map(|r| r.goodput).fold(0.0, f64::max);
    let fastest = peers
        .iter()
        .filter(|r| r.goodput >= top - GOODPUT_POINTS - 1e-12 && r.p50_s.is_some())
        .min_by(|a, b| {
            let key = |r: &RunResult| (r.p50_s.unwrap_or(f64::MAX), r.p95_s.unwrap_or(f64::MAX));
            key(a)
                .0
                .total_cmp(&key(b).0)
                .then(key(a).1.total_cmp(&key(b).1))
        });
    checks.push(match fastest {
        Some(p) => Check {
            name: "latency vs peers",
            pass: within(stack.p50_s, p.p50_s, PEER_FACTOR)
                && within(stack.p95_s, p.p95_s, PEER_FACTOR),
            detail: format!(
                "stack p50/p95 {} / {} vs {PEER_FACTOR} x {} / {} of {} (fastest peer within {:.0} points of the best goodput, {:.1} %)",
                secs(stack.p50_s),
                secs(stack.p95_s),
                secs(p.p50_s),
                secs(p.p95_s),
                p.strategy.name(),
                GOODPUT_POINTS * 100.0,
                top * 100.0
            ),
        },
        None => Check {
            name: "latency vs peers",
            pass: true,
            detail: format!(
                "not compared: no peer within {:.0} points of the best goodput ({:.1} %)",
                GOODPUT_POINTS * 100.0,
                top * 100.0
            ),
        },
    });

    checks.push(if ideal.quota_binds() {
        Check {
            name: "latency vs ideal",
            pass: within(stack.p50_s, ideal.p50_s, IDEAL_FACTOR)
                && within(stack.p95_s, ideal.p95_s, IDEAL_FACTOR),
            detail: format!(
                "stack p50/p95 {} / {} vs {IDEAL_FACTOR} x ideal {} / {} (the quota binds: {} of {} calls wait in the ideal schedule)",
                secs(stack.p50_s),
                secs(stack.p95_s),
                secs(ideal.p50_s),
                secs(ideal.p95_s),
                ideal.delayed,
                ideal.served
            ),
        }
    } else {
        Check {
            name: "latency vs ideal",
            pass: true,
            detail: format!(
                "not compared: the quota does not bind ({} of {} calls wait in the ideal schedule)",
                ideal.delayed, ideal.served
            ),
        }
    });

    Some(Verdict {
        pass: checks.iter().all(|c| c.pass),
        checks,
    })
}

/// The verdict as printed under a scenario's table: a `verdict:` line,
/// then one line per check.
pub fn render(v: &Verdict) -> String {
    let mut out = String::new();
    let failed: Vec<&str> = v
        .checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| c.name)
        .collect();
    if failed.is_empty() {
        let _ = writeln!(out, "verdict: PASS");
    } else {
        let _ = writeln!(out, "verdict: FAIL ({})", failed.join(", "));
    }
    for c in &v.checks {
        let _ = writeln!(
            out,
            "  {:<4} {}: {}",
            if c.pass { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn run(strategy: Strategy, answered: u64, r429: u64, p50: f64, p95: f64) -> RunResult {
        RunResult {
            strategy,
            calls: 100,
            answered,
            attainable: 100.0,
            goodput: answered as f64 / 100.0,
            lost: 100 - answered,
            lost_by_reason: BTreeMap::new(),
            server_429: r429,
            server_503: 0,
            server_requests: answered,
            attempts_per_success: 1.0,
            fallbacks: 0,
            stream_exceptions: 0,
            ttfe_p50_s: None,
            ttfe_p95_s: None,
            ttfe_p99_s: None,
            p50_s: Some(p50),
            p95_s: Some(p95),
            p99_s: Some(p95),
            jain: 1.0,
            worst_share: 1.0,
            apps: vec![],
            timeline: vec![],
            elapsed_s: 1.0,
            note: None,
        }
    }

    fn ideal(delayed: u64, p50: f64, p95: f64) -> Ideal {
        Ideal {
            served: 100,
            delayed,
            p50_s: Some(p50),
            p95_s: Some(p95),
            p99_s: Some(p95),
            service_s: 1.3,
            timeline: vec![],
        }
    }

    fn failed(v: &Verdict) -> Vec<&'static str> {
        v.checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn no_stack_or_no_peer_no_verdict() {
        let i = ideal(0, 1.3, 1.3);
        assert!(judge(&i, &[run(Strategy::Naive, 90, 3, 1.4, 2.0)]).is_none());
        assert!(judge(&i, &[run(Strategy::Stack, 90, 3, 1.4, 2.0)]).is_none());
    }

    #[test]
    fn the_bar_passes_when_the_stack_matches_the_best_peer() {
        let runs = [
            run(Strategy::Naive, 94, 1000, 1.4, 16.0),
            run(Strategy::SdkAdaptive, 99, 180, 1.4, 38.0),
            run(Strategy::TowerRetryRateLimit, 100, 50, 13.0, 57.0),
            run(Strategy::Stack, 100, 0, 2.5, 70.0),
        ];
        // sdk-adaptive (99 %) is within 2 points of the best (100 %) and
        // the fastest: 2.5 <= 2 x 1.4 and 70 <= 2 x 38. The quota binds:
        // 2.5 <= 1.25 x 2.1 and 70 <= 1.25 x 60.
        let v = judge(&ideal(40, 2.1, 60.0), &runs).expect("verdict");
        assert!(v.pass, "{}", render(&v));
        assert!(render(&v).starts_with("verdict: PASS\n"));
    }

    #[test]
    fn each_part_of_the_bar_can_fail() {
        let peers = || {
            vec![
                run(Strategy::SdkAdaptive, 99, 180, 1.4, 38.0),
                run(Strategy::TowerRetryRateLimit, 100, 50, 13.0, 57.0),
            ]
        };
        let binds = ideal(40, 2.1, 60.0);
        // Fewer answers than tower-retry-ratelimit.
        let mut runs = peers();
        runs.push(run(Strategy::Stack, 99, 0, 2.5, 70.0));
        assert_eq!(failed(&judge(&binds, &runs).expect("v")), ["goodput"]);
        // More 429s than tower-retry-ratelimit.
        let mut runs = peers();
        runs.push(run(Strategy::Stack, 100, 51, 2.5, 70.0));
        assert_eq!(failed(&judge(&binds, &runs).expect("v")), ["429s"]);
        // p95 over twice sdk-adaptive's and over 1.25 x the ideal's.
        let mut runs = peers();
        runs.push(run(Strategy::Stack, 100, 0, 2.5, 77.0));
        let v = judge(&binds, &runs).expect("v");
        assert_eq!(failed(&v), ["latency vs peers", "latency vs ideal"]);
        assert!(render(&v).starts_with("verdict: FAIL (latency vs peers, latency vs ideal)\n"));
        // Where the quota does not bind, the ideal is not compared.
        let v = judge(&ideal(0, 1.3, 1.3), &runs).expect("v");
        assert_eq!(failed(&v), ["latency vs peers"]);
    }

    #[test]
    fn nothing_answered_fails() {
        // Every strategy refused by the server (say, a bad model id): no
        // comparison makes that a pass.
        let mut none = run(Strategy::Naive, 0, 0, 0.0, 0.0);
        none.p50_s = None;
        none.p95_s = None;
        let mut stack = none.clone();
        stack.strategy = Strategy::Stack;
        let v = judge(&ideal(0, 1.3, 1.3), &[none, stack]).expect("v");
        assert!(!v.pass);
        assert!(failed(&v).contains(&"goodput"));
    }

    #[test]
    fn peers_far_below_the_best_goodput_are_not_compared() {
        // The stack answers everything, the peers 97 % at best: a peer that
        // drops calls is not a latency reference.
        let runs = [
            run(Strategy::Naive, 90, 300, 1.4, 1.5),
            run(Strategy::SdkStandard, 97, 300, 1.4, 1.5),
            run(Strategy::Stack, 100, 0, 30.0, 90.0),
        ];
        let v = judge(&ideal(0, 1.3, 1.3), &runs).expect("v");
        assert!(v.pass, "{}", render(&v));
        assert!(v.checks[2].detail.starts_with("not compared"));
    }
}
