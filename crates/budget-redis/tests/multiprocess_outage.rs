//! Three OS processes share one quota through a Redis that is killed and
//! restarted (empty) mid-run: the test starts its own `redis-server` on a
//! free loopback port, and re-runs its own binary three times as children
//! (`BUDGET_REDIS_OUTAGE_ROLE`), each a budget over a [`RedisStore`] with
//! eight callers sending 100-token requests back to back (3 x the quota).
//!
//! Checked: every request is answered (none lost, none failed); each
//! process turns degraded during the outage and reconnects after it; the
//! heartbeats saw three instances, so each local share is a third of the
//! quota, and the tokens admitted from local shares in any window-long
//! interval stay within the quota; admissions go through Redis again after
//! the restart. The whole run's worst window is reported, with the bound
//! documented in the crate docs for the reconnect transition.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower::Layer;
use tower_bedrock_budget::testing::MockBedrock;
use tower_bedrock_budget::{Budget, WindowMode};
use tower_bedrock_budget_redis::RedisStore;

use common::recording::Recording;
use common::server::RedisServer;

const ROLE: &str = "BUDGET_REDIS_OUTAGE_ROLE";
const PREFIX: &str = "BUDGET_REDIS_OUTAGE_PREFIX";
const START: &str = "BUDGET_REDIS_OUTAGE_START_MS";
const URL: &str = "BUDGET_REDIS_OUTAGE_URL";

const PROCESSES: usize = 3;
const WINDOW: Duration = Duration::from_secs(2);
const LIMIT: u64 = 20_000;
const REQUEST_TOKENS: u64 = 100;
const RUN: Duration = Duration::from_secs(10);
const DOWN_AT: Duration = Duration::from_secs(3);
const UP_AT: Duration = Duration::from_secs(6);
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
fn outage_child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let start_ms: u64 = std::env::var(START).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = RedisStore::builder(std::env::var(URL).unwrap())
            .prefix(std::env::var(PREFIX).unwrap())
            .connect_timeout(Duration::from_millis(100))
            .response_timeout(Duration::from_millis(100))
            .snapshot_timeout(Duration::from_millis(10))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .heartbeat(Duration::from_millis(200), Duration::from_millis(1000))
            .build()
            .unwrap();
        assert!(store.wait_connected(Duration::from_secs(5)), "no Redis");
        let log = Arc::new(Mutex::new(Vec::new()));
        let budget = Budget::builder()
            // The checks below are the sliding window's bounds.
            .window_mode(WindowMode::Sliding)
            .window(WINDOW)
            .tokens_per_window(LIMIT)
            .fixed_limits()
            .max_wait(Duration::from_secs(10))
            .build_with_store(Recording {
                inner: store.clone(),
                log: log.clone(),
            })
            .unwrap();
        let svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
        tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(epoch_ms()))).await;
        let end = tokio::time::Instant::now() + RUN;
        let seen_degraded = Arc::new(AtomicBool::new(false));
        let watch = {
            let (store, seen) = (store.clone(), seen_degraded.clone());
            tokio::spawn(async move {
                while tokio::time::Instant::now() < end {
                    if store.is_degraded() {
                        seen.store(true, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let failures = common::callers::run_callers(svc, CALLERS, MODEL, REQUEST_TOKENS, end).await;
        watch.await.unwrap();
        for (r, wall) in log.lock().unwrap().iter() {
            let local = u8::from(r.slot >= 1 << 63);
            println!("ADMIT {role} {wall} {} {local}", r.charge.tokens);
        }
        println!(
            "DONE {role} failures={failures} seen_degraded={} degraded={} live={}",
            seen_degraded.load(Ordering::Relaxed),
            store.is_degraded(),
            store.live_instances()
        );
    });
}

/// Tokens per window-long interval, sliding by 10 ms.
fn worst_window(admissions: &[(u64, u64)]) -> u64 {
    let step = 10_000u64;
    let w = WINDOW.as_micros() as u64;
    let mut per_step: BTreeMap<u64, u64> = BTreeMap::new();
    for (t, tokens) in admissions {
        *per_step.entry(t / step).or_default() += tokens;
    }
    let Some((&lo, _)) = per_step.first_key_value() else {
        return 0;
    };
    let hi = *per_step.keys().last().unwrap();
    // Intervals of exactly W: [s, s + W / step) in steps, so one window.
    (lo..=hi)
        .map(|s| per_step.range(s..s + w / step).map(|(_, t)| t).sum())
        .max()
        .unwrap_or(0)
}

#[test]
fn three_processes_through_a_redis_outage() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let Some(mut server) = RedisServer::start_or_skip("budget-redis multiprocess_outage") else {
        return;
    };
    let prefix = common::unique_prefix("outage");
    let start = epoch_ms() + 1500;
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "outage_child_role",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROLE, i.to_string())
                .env(PREFIX, &prefix)
                .env(START, start.to_string())
                .env(URL, server.url())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a child process")
        })
        .collect();
    let sleep_until =
        |ms: u64| std::thread::sleep(Duration::from_millis(ms.saturating_sub(epoch_ms())));
    sleep_until(start + DOWN_AT.as_millis() as u64);
    server.kill();
    let down = epoch_ms() * 1000;
    sleep_until(start + UP_AT.as_millis() as u64);
    server.restart();
    let up = epoch_ms() * 1000;

    let mut all = Vec::new();
    let mut local = Vec::new();
    let mut after_restart_redis = [0u64; PROCESSES];
    let mut local_per_process = [0u64; PROCESSES];
    let mut done = 0;
    for child in &mut children {
        let out = BufReader::new(child.stdout.take().unwrap());
        for line in out.lines() {
            let line = line.unwrap();
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["ADMIT", role, wall, tokens, is_local] => {
                    let p: usize = role.parse().unwrap();
                    let (wall, tokens): (u64, u64) =
                        (wall.parse().unwrap(), tokens.parse().unwrap());
                    all.push((wall, tokens));
                    if *is_local == "1" {
                        local.push((wall, tokens));
                        local_per_process[p] += tokens;
                    } else if wall > up {
                        after_restart_redis[p] += tokens;
                    }
                }
                ["DONE", ..] => {
                    println!("{line}");
                    assert!(
                        line.contains("failures=0"),
                        "every request answered: {line}"
                    );
                    assert!(line.contains("seen_degraded=true"), "{line}");
                    assert!(line.contains("degraded=false"), "reconnected: {line}");
                    assert!(line.contains(&format!("live={PROCESSES}")), "{line}");
                    done += 1;
                }
                _ => {}
            }
        }
    }
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child failed");
    }
    assert_eq!(done, PROCESSES);
    let mut hist: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (t, k) in &all {
        hist.entry((t / 1000).saturating_sub(start) / 500)
            .or_default()
            .0 += k;
    }
    for (t, k) in &local {
        hist.entry((t / 1000).saturating_sub(start) / 500)
            .or_default()
            .1 += k;
    }
    println!("tokens admitted per 500 ms since the start (all, from local shares): {hist:?}");
    let in_outage = all.iter().filter(|(t, _)| *t >= down && *t < up).count();
    println!(
        "outage {}..{} ms after start; admissions during it: {in_outage}; local per process \
         {local_per_process:?}; Redis after restart {after_restart_redis:?}",
        (down / 1000).saturating_sub(start),
        (up / 1000).saturating_sub(start)
    );
    for p in 0..PROCESSES {
        assert!(
            local_per_process[p] > 0,
            "process {p} served from its local share"
        );
        assert!(after_restart_redis[p] > 0, "process {p} went back to Redis");
    }
    let local_worst = worst_window(&local);
    let outage: u64 = all
        .iter()
        .filter(|(t, _)| *t >= down && *t < up)
        .map(|(_, k)| k)
        .sum();
    let outage_quota = LIMIT as f64 * (up - down) as f64 / WINDOW.as_micros() as f64;
    let overall_worst = worst_window(&all);
    println!(
        "local shares: worst window {local_worst}/{LIMIT}; during the outage {outage} tokens \
         ({:.3} of the quota); whole run: worst window {overall_worst}/{LIMIT}",
        outage as f64 / outage_quota
    );
    // Each process's local ring admits at most a third of the quota in any
    // window, so together at most the quota.
    assert!(
        local_worst <= LIMIT,
        "local shares admitted {local_worst} in one window"
    );
    // The outage does not let more than the quota through (the local
    // windows start primed with the shared window's last known usage).
    assert!(
        outage as f64 <= outage_quota + LIMIT as f64 / 100.0,
        "{outage} during the outage"
    );
    // The documented bound for the whole run, reconnect included: the
    // first instance back may admit against a shared window that lacks the
    // others' local charges, (2N - 1) / N of the quota at worst.
    let bound = LIMIT * (2 * PROCESSES as u64 - 1) / PROCESSES as u64;
    assert!(
        overall_worst <= bound,
        "{overall_worst} in one window (bound {bound})"
    );
}
