//! The table of a scenario's runs and its JSON form.

use std::fmt::Write;

use serde::Serialize;

use crate::ideal::Ideal;
use crate::run::RunResult;
use crate::spec::Scenario;
use crate::verdict::{self, Verdict};

/// A scenario and the runs of every strategy: what the JSON file holds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario as run.
    pub scenario: Scenario,
    /// Calls an ideal client could get answered.
    pub attainable: f64,
    /// The ideal FIFO schedule (see [`crate::ideal`]).
    pub ideal: Ideal,
    /// One run per strategy.
    pub runs: Vec<RunResult>,
    /// The project's bar checked on the runs (`None` without a stack run
    /// or without a peer).
    pub verdict: Option<Verdict>,
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{s:.1}"))
}

/// The table: the ideal schedule's row, one row per strategy, the notes
/// per strategy and the verdict.
pub fn table(report: &Report) -> String {
    let s = &report.scenario;
    let mut out = String::new();
    let _ = writeln!(out, "## {} — {}", s.name, s.description);
    let _ = writeln!(
        out,
        "{} calls over {} minutes ({} ms each), attainable {:.0}; latency in scenario seconds; \
         worst: the worst-served app's answers over its fair share; \
         ideal: FIFO at the quota's rate plus the service time",
        s.total_calls(),
        s.minutes,
        s.window_ms,
        report.attainable
    );
    if s.streaming {
        let _ = writeln!(
            out,
            "streams: latency until the last event; ttfe: time to the first event; in-stream: exceptions the server sent inside streams"
        );
    }
    let _ = write!(
        out,
        "{:<22} {:>8} {:>6} {:>6} {:>6} {:>9} {:>7} {:>7} {:>7} {:>6} {:>6}",
        "strategy",
        "goodput",
        "lost",
        "429s",
        "503s",
        "att/succ",
        "p50 s",
        "p95 s",
        "p99 s",
        "Jain",
        "worst"
    );
    if s.streaming {
        let _ = write!(
            out,
            " {:>8} {:>8} {:>9}",
            "ttfe50 s", "ttfe95 s", "in-stream"
        );
    }
    out.push('\n');
    let i = &report.ideal;
    let _ = write!(
        out,
        "{:<22} {:>7.1}% {:>6} {:>6} {:>6} {:>9.2} {:>7} {:>7} {:>7} {:>6} {:>6}",
        "ideal",
        i.served as f64 / report.attainable.max(1.0) * 100.0,
        s.total_calls().saturating_sub(i.served),
        0,
        0,
        1.0,
        secs(i.p50_s),
        secs(i.p95_s),
        secs(i.p99_s),
        "-",
        "-"
    );
    if s.streaming {
        let ttfe = s.ttft_ms as f64 / 1000.0;
        let _ = write!(out, " {:>8.1} {:>8.1} {:>9}", ttfe, ttfe, 0);
    }
    out.push('\n');
    for r in &report.runs {
        let _ = write!(
            out,
            "{:<22} {:>7.1}% {:>6} {:>6} {:>6} {:>9.2} {:>7} {:>7} {:>7} {:>6.3} {:>5.0}%",
            r.strategy.name(),
            r.goodput * 100.0,
            r.lost,
            r.server_429,
            r.server_503,
            r.attempts_per_success,
            secs(r.p50_s),
            secs(r.p95_s),
            secs(r.p99_s),
            r.jain,
            r.worst_share * 100.0
        );
        if s.streaming {
            let _ = write!(
                out,
                " {:>8} {:>8} {:>9}",
                secs(r.ttfe_p50_s),
                secs(r.ttfe_p95_s),
                r.stream_exceptions
            );
        }
        out.push('\n');
    }
    for r in &report.runs {
        let mut extra = Vec::new();
        if !r.lost_by_reason.is_empty() {
            let reasons: Vec<String> = r
                .lost_by_reason
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            extra.push(format!("lost: {}", reasons.join(", ")));
        }
        if r.apps.len() > 1 {
            let apps: Vec<String> = r
                .apps
                .iter()
                .map(|a| format!("{} {}/{}", a.name, a.answered, a.offered))
                .collect();
            extra.push(format!("answered {}", apps.join(" ")));
        }
        if r.fallbacks > 0 {
            extra.push(format!("fallbacks {}", r.fallbacks));
        }
        if let Some(n) = &r.note {
            extra.push(n.clone());
        }
        if !extra.is_empty() {
            let _ = writeln!(out, "  {}: {}", r.strategy.name(), extra.join("; "));
        }
    }
    if let Some(v) = &report.verdict {
        out.push_str(&verdict::render(v));
    }
    out
}
