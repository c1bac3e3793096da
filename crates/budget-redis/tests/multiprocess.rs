//! Three OS processes share one quota through Redis.
//!
//! The test binary re-runs itself three times with `BUDGET_REDIS_MP_ROLE`
//! set; each child runs the `child_role` test: a budget over a shared
//! [`RedisStore`] (Redis's clock), eight concurrent callers sending
//! 100-token requests back to back (3 x the quota in total) for a few
//! seconds, every admitted reservation recorded with its sub-window. The
//! parent collects the records and checks:
//!
//! - **safety**: the tokens admitted in any `K + 1` consecutive
//!   sub-windows (the ring's span, which covers every interval of one
//!   window's length) never exceed the limit, with no tolerance: check and
//!   charge are one atomic script on one clock;
//! - **throughput**: once the first window has passed, the tokens admitted
//!   per window are within 3 % of the quota (the ring's bound is
//!   `n / (n + 1)`, 99 % with 100 sub-windows);
//! - each process got a real part of the quota.
//!
//! Waiting across processes uses the computed wake-up time: a refusal says
//! at which sub-window boundary enough of the shared window expires, and
//! the head waiter of each process sleeps until then (no polling).
//!
//! Needs Redis: `BUDGET_REDIS_URL`, default `redis://127.0.0.1:6379`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower::Layer;
use tower_bedrock_budget::testing::MockBedrock;
use tower_bedrock_budget::{Budget, WindowMode};
use tower_bedrock_budget_redis::RedisStore;

use common::recording::Recording;

const ROLE: &str = "BUDGET_REDIS_MP_ROLE";
const PREFIX: &str = "BUDGET_REDIS_MP_PREFIX";
const START: &str = "BUDGET_REDIS_MP_START_MS";

const PROCESSES: usize = 3;
const WINDOW: Duration = Duration::from_secs(2);
const SUB_WINDOWS: u32 = 100;
const LIMIT: u64 = 20_000;
const REQUEST_TOKENS: u64 = 100;
const RUN: Duration = Duration::from_secs(7);
const CALLERS: usize = 8;
const MODEL: &str = "amazon.nova-lite-v1:0";

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The child's part (a no-op unless started by the parent).
#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let prefix = std::env::var(PREFIX).expect("prefix");
    let start_ms: u64 = std::env::var(START).expect("start").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = RedisStore::builder(common::redis_url())
            .prefix(prefix)
            .account("mp")
            .region("local")
            .build()
            .unwrap();
        assert!(store.wait_connected(Duration::from_secs(5)), "no Redis");
        let log = Arc::new(Mutex::new(Vec::new()));
        let budget = Budget::builder()
            // The checks below are the sliding window's bounds.
            .window_mode(WindowMode::Sliding)
            .window(WINDOW)
            .sub_windows(SUB_WINDOWS)
            .tokens_per_window(LIMIT)
            .fixed_limits()
            .max_wait(Duration::from_secs(10))
            .build_with_store(Recording {
                inner: store.clone(),
                log: log.clone(),
            })
            .unwrap();
        let svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
        // Start together, on the wall clock.
        let now = epoch_ms();
        tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(now))).await;
        let end = tokio::time::Instant::now() + RUN;
        let failures = common::callers::run_callers(svc, CALLERS, MODEL, REQUEST_TOKENS, end).await;
        let log = log.lock().unwrap();
        for (r, _) in log.iter() {
            println!("ADMIT {role} {} {}", r.slot, r.charge.tokens);
        }
        println!(
            "DONE {role} admitted={} failures={failures} degraded={} live={}",
            log.len(),
            store.is_degraded(),
            store.live_instances()
        );
    });
}

#[test]
fn three_processes_share_one_quota() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let Some(url) = common::redis_or_skip("budget-redis multiprocess") else {
        return;
    };
    let prefix = common::unique_prefix("mp");
    let start = epoch_ms() + 1500;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(&exe)
                .args(["child_role", "--exact", "--nocapture", "--test-threads=1"])
                .env(ROLE, i.to_string())
                .env("BUDGET_REDIS_URL", &url)
                .env(PREFIX, &prefix)
                .env(START, start.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a child process")
        })
        .collect();
    // slot -> tokens, and per-process totals.
    let mut per_slot: BTreeMap<u64, u64> = BTreeMap::new();
    let mut per_process = [0u64; PROCESSES];
    let mut first_last = [(u64::MAX, 0u64); PROCESSES];
    let mut done = 0;
    for mut child in children {
        let out = BufReader::new(child.stdout.take().unwrap());
        for line in out.lines() {
            let line = line.unwrap();
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["ADMIT", role, slot, tokens] => {
                    let (p, slot, tokens): (usize, u64, u64) = (
                        role.parse().unwrap(),
                        slot.parse().unwrap(),
                        tokens.parse().unwrap(),
                    );
                    *per_slot.entry(slot).or_default() += tokens;
                    per_process[p] += tokens;
                    first_last[p].0 = first_last[p].0.min(slot);
                    first_last[p].1 = first_last[p].1.max(slot);
                }
                ["DONE", ..] => {
                    println!("{line}");
                    assert!(line.contains("degraded=false"), "{line}");
                    // The heartbeats saw all three processes.
                    assert!(line.contains(&format!("live={PROCESSES}")), "{line}");
                    done += 1;
                }
                _ => {}
            }
        }
        assert!(child.wait().unwrap().success(), "a child failed");
    }
    assert_eq!(done, PROCESSES, "every child reported");

    let k = u64::from(SUB_WINDOWS); // K = ceil(W / g) = n
    // Safety: every K + 1 consecutive sub-windows hold at most the limit.
    let lo = *per_slot.keys().next().unwrap();
    let hi = *per_slot.keys().last().unwrap();
    let mut worst = 0;
    for s in lo..=hi {
        let sum: u64 = per_slot.range(s..=s + k).map(|(_, t)| t).sum();
        worst = worst.max(sum);
        assert!(
            sum <= LIMIT,
            "{sum} tokens admitted in sub-windows {s}..={}",
            s + k
        );
    }
    // Throughput, while all three ran, after the first window, over whole
    // ring spans (the admissions come in bursts where room reappears, so a
    // partial span would over- or under-count).
    let from = first_last.iter().map(|f| f.0).max().unwrap() + k + 1;
    let last = first_last.iter().map(|f| f.1).min().unwrap();
    let spans = last.saturating_sub(from) / (k + 1);
    assert!(
        spans >= 2,
        "a steady period of at least two windows ({from}..{last})"
    );
    let to = from + spans * (k + 1);
    let admitted: u64 = per_slot.range(from..to).map(|(_, t)| t).sum();
    // The quota over that time: LIMIT per window of K sub-windows.
    let quota = LIMIT as f64 * (to - from) as f64 / k as f64;
    let ratio = admitted as f64 / quota;
    println!(
        "worst window {worst}/{LIMIT}; steady throughput {ratio:.4} of the quota over {:.2} windows; per process {per_process:?}",
        (to - from) as f64 / k as f64
    );
    assert!(
        (0.97..=1.0).contains(&ratio),
        "throughput {ratio:.4} of the quota"
    );
    let total: u64 = per_process.iter().sum();
    for (p, t) in per_process.iter().enumerate() {
        assert!(
            *t as f64 >= 0.2 * total as f64,
            "process {p} got {t} of {total}"
        );
    }
}
