//! The ideal client: the attainable FIFO schedule of a scenario's calls
//! against its quotas, and its latencies.
//!
//! Every call of the scenario's seeded schedule (the same arrival times the
//! strategies get) joins one FIFO queue. The quota is counted as the
//! emulator counts a fixed window, with each call charged what the server
//! settles it to: one request, and `input + min(output_tokens, max_tokens)
//! x burndown` tokens. The head of the queue is admitted at once when it
//! fits the current scenario minute of the primary model (or else of the
//! fallback model, when the scenario has one), and otherwise at the start
//! of the first later minute where it fits. Nothing is admitted out of
//! order, and a model taken out by a fault (an overload or a throttle at a
//! rate of 1) admits nothing during those minutes; partial 503 faults are ignored
//! (an ideal client retries them at no cost). A call admitted before the
//! end of the drain minutes is *served*; its latency is its wait plus the
//! emulator's service time (`ttft_ms + min(output_tokens, max_tokens) x
//! per_token_ms`).
//!
//! This is a bound, not a prediction: a real client cannot know when its
//! calls will settle, the emulator also counts the reservation
//! (`input + max_tokens x burndown`) of calls still in flight, and usage
//! is billed to the minute in which a call completes.

use serde::Serialize;
use tower_bedrock::core::model::default_burndown_rate;

use crate::metrics::percentile;
use crate::run::{SAMPLES_PER_MINUTE, schedule};
use crate::spec::{AppSpec, Scenario};

/// The ideal schedule's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ideal {
    /// Calls admitted before the end of the drain minutes.
    pub served: u64,
    /// Served calls that had to wait for a later minute.
    pub delayed: u64,
    /// Latency percentiles of served calls, in scenario seconds.
    pub p50_s: Option<f64>,
    /// 95th percentile.
    pub p95_s: Option<f64>,
    /// 99th percentile.
    pub p99_s: Option<f64>,
    /// Service time of the scenario's most common request (no wait), in
    /// scenario seconds.
    pub service_s: f64,
    /// Served calls completed per quarter scenario minute (the same bins as
    /// the runs' time lines).
    pub timeline: Vec<u64>,
}

impl Ideal {
    /// Whether the quota binds: the ideal schedule makes at least 1 % of
    /// the served calls wait for a later minute.
    pub fn quota_binds(&self) -> bool {
        self.served > 0 && self.delayed * 100 >= self.served
    }
}

/// Service time of one of `app`'s calls, in scenario seconds.
pub fn service_s(s: &Scenario, app: &AppSpec) -> f64 {
    (s.ttft_ms as f64 + app.max_tokens.min(s.output_tokens) as f64 * s.per_token_ms) / 1000.0
}

/// Tokens the server settles one of `app`'s calls to on `model`.
fn settled_tokens(s: &Scenario, app: &AppSpec, model: &str) -> u64 {
    let burn = default_burndown_rate(model);
    app.input_tokens + app.max_tokens.min(s.output_tokens) * burn
}

/// Whether a fault takes model `model` out entirely in `minute`
/// (throttling faults at rate 1).
pub(crate) fn model_out(s: &Scenario, model: &str, minute: usize) -> bool {
    s.faults.iter().any(|f| {
        f.rate >= 1.0
            && matches!(
                f.kind.as_str(),
                "overloaded" | "too_many_requests" | "too_many_tokens" | "model_not_ready"
            )
            && f.model.as_deref().unwrap_or(s.models[0].id.as_str()) == model
            && minute >= f.from_minute
            && f.minutes.is_none_or(|n| minute < f.from_minute + n)
    })
}

/// Usage of one model in the current minute.
#[derive(Debug, Clone, Copy, Default)]
struct Used {
    tokens: u64,
    requests: u64,
}

/// The ideal FIFO schedule of `s` (see the module docs).
pub fn ideal(s: &Scenario) -> Ideal {
    let plan = schedule(s);
    let total = s.minutes + s.drain_minutes;
    // The models that serve: the primary, then the fallback.
    let mut models = vec![0usize];
    if let Some(i) = s
        .fallback
        .as_ref()
        .and_then(|f| s.models.iter().position(|m| &m.id == f))
    {
        models.push(i);
    }
    let mut used = vec![Used::default(); s.models.len()];
    let mut minute = 0usize;
    // The admission time of the call ahead (FIFO), in scenario minutes.
    let mut head = 0.0f64;
    let mut latencies = Vec::new();
    let mut delayed = 0;
    let mut timeline = vec![0u64; total * SAMPLES_PER_MINUTE];
    'calls: for call in &plan {
        let app = &s.apps[call.app];
        let fits = |m: usize, used: &Used| {
            let spec = &s.models[m];
            let tokens = settled_tokens(s, app, &spec.id);
            used.tokens + tokens <= spec.tpm && spec.rpm.is_none_or(|r| used.requests < r)
        };
        // A call no model can ever take is not served and does not hold
        // the queue.
        if !models.iter().any(|&m| fits(m, &Used::default())) {
            continue;
        }
        let mut t = call.at_min.max(head);
        loop {
            let w = t.floor() as usize;
            if w >= total {
                break 'calls;
            }
            if w > minute {
                minute = w;
                used.fill(Used::default());
            }
            let chosen = models
                .iter()
                .copied()
                .find(|&m| !model_out(s, &s.models[m].id, w) && fits(m, &used[m]));
            match chosen {
                Some(m) => {
                    used[m].tokens += settled_tokens(s, app, &s.models[m].id);
                    used[m].requests += 1;
                    break;
                }
                None => t = (w + 1) as f64,
            }
        }
        if t > call.at_min {
            delayed += 1;
        }
        head = t;
        let done_min = t + service_s(s, app) / 60.0;
        if let Some(bin) = timeline.get_mut((done_min * SAMPLES_PER_MINUTE as f64) as usize) {
            *bin += 1;
        }
        latencies.push((t - call.at_min) * 60.0 + service_s(s, app));
    }
    latencies.sort_by(f64::total_cmp);
    let common = s
        .apps
        .iter()
        .max_by(|a, b| {
            let n = |x: &AppSpec| (0..s.minutes).map(|m| s.rate(x, m)).sum::<f64>();
            n(a).total_cmp(&n(b))
        })
        .map_or(0.0, |a| service_s(s, a));
    Ideal {
        served: latencies.len() as u64,
        delayed,
        p50_s: percentile(&latencies, 50.0),
        p95_s: percentile(&latencies, 95.0),
        p99_s: percentile(&latencies, 99.0),
        service_s: common,
        timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn without_queueing_the_latency_is_the_service_time() {
        // 100 rpm on 150: nothing waits; 400 ms + 60 tokens x 15 ms.
        let s = Scenario::storm_503();
        let i = ideal(&s);
        assert_eq!(i.served, 800);
        assert_eq!(i.delayed, 0);
        assert!(!i.quota_binds());
        assert!(close(i.p50_s, 1.3) && close(i.p99_s, 1.3), "{i:?}");
        assert!((i.service_s - 1.3).abs() < 1e-9);
    }

    #[test]
    fn a_queue_at_the_quota_rate() {
        // One app, 4 minutes at 30 rpm on a quota of 20 rpm. Minute 0
        // admits calls 0-19 as they come; from then on minute w admits
        // calls 20w..20w+19: in minute 1 the 10 left over at its start and
        // the first 10 of its own as they come, every later call waits.
        // The 120 calls are all served by minute 5 (the second drain
        // minute).
        let s = Scenario::from_toml_str(
            r#"
            name = "q"
            minutes = 4
            drain_minutes = 2
            output_tokens = 60
            [[models]]
            id = "anthropic.claude-3-5-haiku-20241022-v1:0"
            rpm = 20
            tpm = 1000000
            [[apps]]
            name = "a"
            rpm = [30]
            "#,
        )
        .expect("valid");
        let i = ideal(&s);
        assert_eq!(i.served, 120);
        // Calls 0-19 and 30-39 go at once.
        assert_eq!(i.delayed, 90);
        assert!(i.quota_binds());
        // The longest wait: call 100 arrives at 3 + (10 + jitter)/30
        // minutes and is admitted at 5:00, 98 to 100 s later; p99 (the
        // 119th of 120) is call 101's, 96 to 98 s, plus 1.3 s of service.
        let p99 = i.p99_s.expect("served");
        assert!((97.3..=99.3).contains(&p99), "{p99}");
        // The median waits about a minute: not the service time alone.
        assert!(i.p50_s.expect("served") > 30.0, "{i:?}");
    }

    #[test]
    fn tokens_bind_by_the_settled_cost_not_the_reservation() {
        // 5x burndown, 1000 input + 300 output: 2500 settled tokens; a
        // 25,000 tpm quota takes 10 a minute whatever max_tokens is.
        let text = |max: u64| {
            format!(
                r#"
                name = "t"
                minutes = 3
                drain_minutes = 0
                output_tokens = 300
                [[models]]
                id = "us.anthropic.claude-sonnet-4-20250514-v1:0"
                tpm = 25000
                [[apps]]
                name = "a"
                rpm = [10]
                input_tokens = 1000
                max_tokens = {max}
                "#
            )
        };
        for max in [300, 8192] {
            let i = ideal(&Scenario::from_toml_str(&text(max)).expect("valid"));
            assert_eq!(i.served, 30);
            assert_eq!(i.delayed, 0);
            // 400 ms + 300 x 15 ms.
            assert!(close(i.p50_s, 4.9), "{i:?}");
        }
    }

    #[test]
    fn a_fallback_takes_what_the_primary_cannot() {
        let mut s = Scenario::overload_fallback();
        let with = ideal(&s);
        // 100 rpm offered; the fallback's 200 rpm takes the whole overload.
        assert_eq!(with.served, 800);
        assert_eq!(with.delayed, 0);
        s.fallback = None;
        let without = ideal(&s);
        // Two minutes of 100 calls wait for the primary's return, served
        // at 150 a minute beside the new traffic.
        assert_eq!(without.served, 800);
        assert!(without.delayed >= 200);
        assert!(without.p99_s > with.p99_s);
    }

    #[test]
    fn a_call_no_model_can_take_does_not_block_the_queue() {
        let s = Scenario::from_toml_str(
            r#"
            name = "big"
            minutes = 1
            [[models]]
            id = "anthropic.claude-3-5-haiku-20241022-v1:0"
            tpm = 10000
            [[apps]]
            name = "huge"
            rpm = [1]
            input_tokens = 20000
            [[apps]]
            name = "small"
            rpm = [5]
            "#,
        )
        .expect("valid");
        let i = ideal(&s);
        assert_eq!(i.served, 5);
        assert_eq!(i.delayed, 0);
    }
}
