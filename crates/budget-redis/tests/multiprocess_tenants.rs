//! Tenant shares hold across OS processes sharing one quota through Redis.
//!
//! The test binary re-runs itself three times with `BUDGET_REDIS_MT_ROLE`
//! set. Two tenants of weight 1 share one key's quota:
//!
//! - `quiet` runs in one process with **one** caller;
//! - `noisy` runs in two processes with **five** callers each (ten times the
//!   quiet tenant's concurrency).
//!
//! Every caller sends 100-token requests back to back for a few seconds
//! (both tenants want far more than the quota); every waiter retries as
//! soon as Redis says room appears. Each
//! process only sees its own tenant, so per-process fairness cannot help:
//! without global shares (measured by making the store ignore the tenant)
//! the eleven callers race for the room as it appears and the quiet tenant
//! got about 15 % of the quota. With the Redis store, the reserve script
//! keeps each tenant's usage and the tenants contending for the key, and
//! refuses a tenant beyond its weighted share while the other contends
//! (measured: 50.0 % for the quiet tenant). The parent checks, from the
//! recorded admissions (tenant, sub-window, tokens):
//!
//! - **safety**: the tokens admitted in any `K + 1` consecutive
//!   sub-windows never exceed the limit (no tolerance);
//! - **shares**: over the steady period (whole windows while all three
//!   ran, after the first window), the quiet tenant got between 42 % and
//!   58 % of what was admitted (its share is 50 %; the tolerance covers the
//!   sub-window granularity of the shares and the retry timing), and so the
//!   noisy tenant got the rest;
//! - **throughput**: what was admitted in the steady period is at least
//!   90 % of the quota (borrowing and the shares leave little idle).
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

const ROLE: &str = "BUDGET_REDIS_MT_ROLE";
const PREFIX: &str = "BUDGET_REDIS_MT_PREFIX";
const START: &str = "BUDGET_REDIS_MT_START_MS";

/// (tenant, callers) of each process.
const PROCESSES: [(&str, usize); 3] = [("quiet", 1), ("noisy", 5), ("noisy", 5)];
const WINDOW: Duration = Duration::from_secs(1);
const SUB_WINDOWS: u32 = 50;
const LIMIT: u64 = 10_000;
const REQUEST_TOKENS: u64 = 100;
const RUN: Duration = Duration::from_secs(5);
const MODEL: &str = "amazon.nova-lite-v1:0";

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The child's part (a no-op unless started by the parent).
#[test]
fn tenant_child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let (tenant, callers) = PROCESSES[role.parse::<usize>().unwrap()];
    let prefix = std::env::var(PREFIX).expect("prefix");
    let start_ms: u64 = std::env::var(START).expect("start").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = RedisStore::builder(common::redis_url())
            .prefix(prefix)
            .account("mt")
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
        let layer = budget.tenant(tenant, 1).unwrap().layer();
        let svc = layer.layer(MockBedrock::new(Duration::ZERO));
        let now = epoch_ms();
        tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(now))).await;
        let end = tokio::time::Instant::now() + RUN;
        let failures = common::callers::run_callers(svc, callers, MODEL, REQUEST_TOKENS, end).await;
        let log = log.lock().unwrap();
        for (r, _) in log.iter() {
            println!("ADMIT {role} {} {}", r.slot, r.charge.tokens);
        }
        println!(
            "DONE {role} tenant={tenant} admitted={} failures={failures} degraded={}",
            log.len(),
            store.is_degraded()
        );
    });
}

#[test]
fn tenant_shares_hold_across_processes() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let Some(url) = common::redis_or_skip("budget-redis multiprocess_tenants") else {
        return;
    };
    let prefix = common::unique_prefix("mt");
    let start = epoch_ms() + 1500;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES.len())
        .map(|i| {
            Command::new(&exe)
                .args([
                    "tenant_child_role",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROLE, i.to_string())
                .env("BUDGET_REDIS_URL", &url)
                .env(PREFIX, &prefix)
                .env(START, start.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a child process")
        })
        .collect();
    // slot -> tokens in total and of the quiet tenant.
    let mut per_slot: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut first_last = [(u64::MAX, 0u64); PROCESSES.len()];
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
                    let e = per_slot.entry(slot).or_default();
                    e.0 += tokens;
                    if PROCESSES[p].0 == "quiet" {
                        e.1 += tokens;
                    }
                    first_last[p].0 = first_last[p].0.min(slot);
                    first_last[p].1 = first_last[p].1.max(slot);
                }
                ["DONE", ..] => {
                    println!("{line}");
                    assert!(line.contains("failures=0"), "{line}");
                    assert!(line.contains("degraded=false"), "{line}");
                    done += 1;
                }
                _ => {}
            }
        }
        assert!(child.wait().unwrap().success(), "a child failed");
    }
    assert_eq!(done, PROCESSES.len(), "every child reported");

    let k = u64::from(SUB_WINDOWS);
    // Safety: every K + 1 consecutive sub-windows hold at most the limit.
    let lo = *per_slot.keys().next().unwrap();
    let hi = *per_slot.keys().last().unwrap();
    let mut worst = 0;
    for s in lo..=hi {
        let sum: u64 = per_slot.range(s..=s + k).map(|(_, t)| t.0).sum();
        worst = worst.max(sum);
        assert!(
            sum <= LIMIT,
            "{sum} tokens admitted in sub-windows {s}..={}",
            s + k
        );
    }
    // The steady period: whole ring spans while all three ran, after the
    // first window.
    let from = first_last.iter().map(|f| f.0).max().unwrap() + k + 1;
    let last = first_last.iter().map(|f| f.1).min().unwrap();
    let spans = last.saturating_sub(from) / (k + 1);
    assert!(
        spans >= 2,
        "a steady period of at least two windows ({from}..{last})"
    );
    let to = from + spans * (k + 1);
    let (total, quiet) = per_slot
        .range(from..to)
        .fold((0, 0), |(t, q), (_, e)| (t + e.0, q + e.1));
    let quota = LIMIT as f64 * (to - from) as f64 / k as f64;
    let quiet_share = quiet as f64 / total as f64;
    let throughput = total as f64 / quota;
    println!(
        "worst window {worst}/{LIMIT}; steady period {:.2} windows: quiet {quiet} of {total} tokens ({quiet_share:.3}), throughput {throughput:.3} of the quota",
        (to - from) as f64 / k as f64
    );
    assert!(
        (0.42..=0.58).contains(&quiet_share),
        "quiet tenant got {quiet_share:.3} of the admitted tokens (share 0.5)"
    );
    assert!(throughput >= 0.9, "throughput {throughput:.3} of the quota");
}
