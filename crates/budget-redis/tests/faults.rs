//! Faults: Redis frozen, killed and restarted mid-run. Each test starts
//! its own `redis-server` on a free loopback port (see `common::server`),
//! so these need the `redis-server` binary, not a running Redis.
//!
//! Real time (the faults are real), short timeouts; the assertions are on
//! outcomes (every request answered, exact counts in Redis afterwards),
//! never on how long something took.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use redis::Commands;
use tower::{Layer, Service, ServiceExt};
use tower_bedrock_budget::testing::{MockBedrock, MockRequest, Reply};
use tower_bedrock_budget::{Budget, BudgetStore, StoreKey, WindowMode};
use tower_bedrock_budget_redis::{RedisStore, RedisStoreBuilder, names};
use tower_bedrock_core::Usage;

use common::server::RedisServer;

const MODEL: &str = "amazon.nova-lite-v1:0";

/// Metrics and tracing events of the whole test binary.
struct Observed {
    metrics: Arc<Recorded>,
    log: Arc<Mutex<Vec<u8>>>,
}

/// A minimal metrics recorder: current values by `name{label=value,...}`
/// (labels sorted), never reset by reading.
#[derive(Default)]
struct Recorded(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Recorded {
    fn handle(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        self.0.lock().unwrap().entry(id).or_default().clone()
    }
}

struct Rec(Arc<Recorded>);

impl Recorder for Rec {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.handle(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[derive(Clone)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn observed() -> &'static Observed {
    static O: OnceLock<Observed> = OnceLock::new();
    O.get_or_init(|| {
        let metrics = Arc::new(Recorded::default());
        metrics::set_global_recorder(Rec(metrics.clone())).expect("one recorder");
        let log = Arc::new(Mutex::new(Vec::new()));
        let buf = Buf(log.clone());
        tracing_subscriber::fmt()
            .with_writer(move || buf.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        Observed { metrics, log }
    })
}

/// A counter's or gauge's value; `labels` sorted, e.g. `namespace=x,to=y`.
fn metric(name: &str, labels: &str, gauge: bool) -> Option<f64> {
    let id = format!("{name}{{{labels}}}");
    let v = observed()
        .metrics
        .0
        .lock()
        .unwrap()
        .get(&id)?
        .load(Ordering::Relaxed);
    Some(if gauge { f64::from_bits(v) } else { v as f64 })
}

fn log_contains(s: &str) -> bool {
    String::from_utf8_lossy(&observed().log.lock().unwrap()).contains(s)
}

fn builder(url: &str, prefix: &str) -> RedisStoreBuilder {
    RedisStore::builder(url)
        .prefix(prefix)
        .connect_timeout(Duration::from_millis(150))
        .response_timeout(Duration::from_millis(150))
        .snapshot_timeout(Duration::from_millis(50))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

fn store(url: &str, prefix: &str) -> RedisStore {
    builder(url, prefix).build().unwrap()
}

/// Waits (real time, bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn window_tokens(conn: &mut redis::Connection, base: &str) -> u64 {
    let s: Option<u64> = conn.hget(format!("{base}:tok"), "s").unwrap();
    s.unwrap_or(0)
}

/// Redis frozen while settlements are on their way and requests keep
/// coming: every request is served (from the local share), and after the
/// thaw Redis holds exactly what was used: the settlements sent into the
/// frozen server are applied once (the replays are recognised and
/// skipped), none is lost, and the local charges are merged.
#[tokio::test(flavor = "current_thread")]
async fn frozen_redis_loses_and_double_counts_no_settlement() {
    let Some(server) = RedisServer::start_or_skip("budget-redis faults") else {
        return;
    };
    let obs = observed();
    let _ = obs;
    let prefix = common::unique_prefix("frozen");
    // A long heartbeat, so that the first operation to meet the frozen
    // server is a settlement (applied by the server when it thaws).
    let store = builder(&server.url(), &prefix)
        .heartbeat(Duration::from_secs(30), Duration::from_secs(90))
        .build()
        .unwrap();
    assert!(store.wait_connected(Duration::from_secs(5)));
    let ns = format!("namespace={prefix}:default:default");
    let base = store.key_base(MODEL);
    let mut check = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let budget = Budget::builder()
        // The checks read the sliding window's hashes.
        .window_mode(WindowMode::Sliding)
        .tokens_per_window(1_000_000)
        .window(Duration::from_secs(600))
        .fixed_limits()
        .max_wait(Duration::ZERO)
        .build_with_store(store.clone())
        .unwrap();
    // Reserve 100 + 100, use 100 + 10.
    let req = |id| MockRequest::new(MODEL, id, 100, 100).reply(Reply::Usage(Usage::new(100, 10)));
    let mut fast = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    for id in 0..10 {
        fast.ready().await.unwrap().call(req(id)).await.unwrap();
    }
    // A snapshot is ordered after this process's queued settlements.
    assert_eq!(budget.snapshot(MODEL).unwrap().tokens, 10 * 110);
    assert_eq!(window_tokens(&mut check, &base), 10 * 110);

    // Five calls in flight (reserved in Redis) when Redis freezes.
    let slow = budget
        .layer()
        .layer(MockBedrock::new(Duration::from_millis(300)));
    let inflight: Vec<_> = (10..15)
        .map(|id| {
            let mut svc = slow.clone();
            tokio::spawn(async move { svc.ready().await.unwrap().call(req(id)).await })
        })
        .collect();
    eventually("five reservations in Redis", || {
        budget
            .snapshot(MODEL)
            .is_some_and(|s| s.reserved_requests == 5)
    })
    .await;
    assert_eq!(window_tokens(&mut check, &base), 10 * 110 + 5 * 200);
    server.pause();
    // Their settlements go into the frozen server and time out.
    for h in inflight {
        h.await.unwrap().expect("in-flight calls complete");
    }
    eventually("degraded", || store.is_degraded()).await;
    assert_eq!(metric(names::STORE_DEGRADED, &ns, true), Some(1.0));
    assert!(log_contains("budget store degraded"));
    // Requests keep being served, from the local share.
    for id in 100..120 {
        fast.ready()
            .await
            .unwrap()
            .call(req(id))
            .await
            .expect("served while Redis is frozen");
    }
    assert!(metric(names::STORE_LOCAL_ADMISSIONS, &ns, false).unwrap_or(0.0) >= 20.0);
    // While degraded, the snapshot is the last known shared window plus
    // what was charged locally (the local window's priming not counted
    // twice).
    assert_eq!(
        budget.snapshot(MODEL).unwrap().tokens,
        10 * 110 + 5 * 200 + 20 * 110
    );

    server.resume();
    eventually("reconnected", || !store.is_degraded()).await;
    // Something must reach the worker for the merge: a request does.
    fast.ready().await.unwrap().call(req(200)).await.unwrap();
    let expected = (10 + 5 + 20 + 1) * 110;
    eventually("everything settled in Redis", || {
        window_tokens(&mut check, &base) == expected
    })
    .await;
    // And stays so (no late double application).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(window_tokens(&mut check, &base), expected);
    let s = budget.snapshot(MODEL).unwrap();
    assert_eq!(
        (s.tokens, s.reserved_tokens, s.reserved_requests),
        (expected, 0, 0)
    );
    assert_eq!(metric(names::STORE_DEGRADED, &ns, true), Some(0.0));
    assert_eq!(
        metric(
            names::STORE_DEGRADED_TRANSITIONS,
            &format!("{ns},to=connected"),
            false
        ),
        Some(1.0)
    );
    assert!(log_contains("budget store reconnected to Redis"));
    // The settlements sent into the frozen server were applied when it
    // thawed, and their replays recognised.
    let skipped = metric(names::STORE_REPLAYS_SKIPPED, &ns, false).unwrap_or(0.0);
    assert!(skipped >= 1.0, "replays skipped: {skipped}");
}

/// Redis killed and restarted (empty) while traffic flows: no panic, every
/// request answered, the store degraded during the outage and working
/// against the new server afterwards (scripts reloaded).
#[tokio::test(flavor = "current_thread")]
async fn restarted_redis_recovers_without_losing_requests() {
    let Some(mut server) = RedisServer::start_or_skip("budget-redis faults") else {
        return;
    };
    observed();
    let prefix = common::unique_prefix("restart");
    let store = store(&server.url(), &prefix);
    assert!(store.wait_connected(Duration::from_secs(5)));
    let base = store.key_base(MODEL);
    let budget = Budget::builder()
        // The checks read the sliding window's hashes.
        .window_mode(WindowMode::Sliding)
        .tokens_per_window(1_000_000)
        .window(Duration::from_secs(600))
        .fixed_limits()
        .max_wait(Duration::ZERO)
        .build_with_store(store.clone())
        .unwrap();
    let svc = budget
        .layer()
        .layer(MockBedrock::new(Duration::from_millis(5)));
    let sent = Arc::new(Mutex::new((0u64, 0u64))); // (answered ok, failed)
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (sent, stop) = (sent.clone(), stop.clone());
        let mut svc = svc.clone();
        tokio::spawn(async move {
            let mut id = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                id += 1;
                let r = svc
                    .ready()
                    .await
                    .unwrap()
                    .call(MockRequest::new(MODEL, id, 10, 10))
                    .await;
                {
                    let mut s = sent.lock().unwrap();
                    if r.is_ok() { s.0 += 1 } else { s.1 += 1 }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    eventually("traffic", || sent.lock().unwrap().0 >= 20).await;
    server.kill();
    eventually("degraded", || store.is_degraded()).await;
    let during = sent.lock().unwrap().0;
    eventually("served while down", || {
        sent.lock().unwrap().0 >= during + 20
    })
    .await;
    server.restart();
    eventually("reconnected", || !store.is_degraded()).await;
    let mut check = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    eventually("admissions counted by the new server", || {
        window_tokens(&mut check, &base) > 0
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.await.expect("no panic");
    let (ok, failed) = *sent.lock().unwrap();
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    // The key works directly too, after the restart.
    let key = store.key(MODEL, &budget.spec());
    let r = key
        .reserve(
            tower_bedrock_budget::Limits::tokens(1_000_000),
            tower_bedrock_budget::Charge::call(1),
            tokio::time::Instant::now(),
        )
        .await
        .expect("room");
    assert!(r.slot < 1 << 63, "a Redis reservation, not a local one");
    key.settle(
        r,
        tower_bedrock_budget::Charge::ZERO,
        tokio::time::Instant::now(),
    );
}

/// The local share in degraded mode: the limit divided by the last known
/// number of live instances, starting from this instance's part of the
/// shared window's last known usage (not from an empty window).
#[tokio::test(flavor = "current_thread")]
async fn degraded_share_is_divided_and_starts_from_the_shared_window() {
    let Some(server) = RedisServer::start_or_skip("budget-redis faults") else {
        return;
    };
    observed();
    let prefix = common::unique_prefix("share");
    let two = |_| {
        builder(&server.url(), &prefix)
            .heartbeat(Duration::from_millis(100), Duration::from_millis(1000))
            .build()
            .unwrap()
    };
    let (a, b) = (two(0), two(1));
    assert!(a.wait_connected(Duration::from_secs(5)) && b.wait_connected(Duration::from_secs(5)));
    eventually("two live instances", || {
        a.live_instances() == 2 && b.live_instances() == 2
    })
    .await;
    let spec = tower_bedrock_budget::WindowSpec::default();
    let (ka, kb) = (a.key(MODEL, &spec), b.key(MODEL, &spec));
    let limits = tower_bedrock_budget::Limits::tokens(1000);
    let call = tower_bedrock_budget::Charge::call;
    let now = tokio::time::Instant::now();
    // 900 of 1000 used in the shared window, 600 by A and 300 by B.
    ka.reserve(limits, call(600), now).await.unwrap();
    kb.reserve(limits, call(300), now).await.unwrap();
    assert!(
        kb.reserve(limits, call(101), now).await.is_err(),
        "shared window full"
    );
    // A's last reply saw 900 (its own reservation's reply saw 600: ask).
    assert_eq!(ka.snapshot(now).tokens, 900);
    server.pause();
    // A's share is 1000 / 2 = 500, primed with 900 / 2 = 450.
    let refused = ka.reserve(limits, call(60), now).await.unwrap_err();
    assert!(a.is_degraded());
    assert!(refused.room_at.is_some());
    let r = ka
        .reserve(limits, call(50), now)
        .await
        .expect("the rest of the share");
    assert!(r.slot >= 1 << 63, "a local reservation");
    assert!(ka.reserve(limits, call(1), now).await.is_err());
    server.resume();
}

/// Redis restarted (empty) in the middle of a fixed window: the next
/// reservation re-seeds the window from this instance's last known usage,
/// so the process does not admit a second quota in that window. Bound
/// (one instance): what is admitted after the restart in the window is at
/// most the limit minus the usage seen before it.
#[tokio::test(flavor = "current_thread")]
async fn restart_mid_window_reseeds_the_window() {
    let Some(mut server) = RedisServer::start_or_skip("budget-redis faults") else {
        return;
    };
    observed();
    let prefix = common::unique_prefix("reseed");
    // The caller's clock, anchored on a window boundary: the whole test
    // runs in the first of its ten-minute windows.
    let clock = tower_bedrock_budget::testing::test_clock();
    let store = builder(&server.url(), &prefix)
        .time_source(tower_bedrock_budget_redis::TimeSource::Client(clock))
        .build()
        .unwrap();
    assert!(store.wait_connected(Duration::from_secs(5)));
    let budget = Budget::builder()
        .clock(clock)
        .tokens_per_window(1000)
        .window(Duration::from_secs(600))
        .fixed_limits()
        .max_wait(Duration::ZERO)
        .build_with_store(store.clone())
        .unwrap();
    let mut svc = budget.layer().layer(MockBedrock::new(Duration::ZERO));
    let mut id = 0;
    for _ in 0..6 {
        id += 1;
        svc.ready()
            .await
            .unwrap()
            .call(MockRequest::new(MODEL, id, 100, 0))
            .await
            .unwrap();
    }
    assert_eq!(budget.snapshot(MODEL).unwrap().tokens, 600);
    server.restart();
    let mut admitted = 0u64;
    for _ in 0..20 {
        id += 1;
        let r = svc
            .ready()
            .await
            .unwrap()
            .call(MockRequest::new(MODEL, id, 100, 0))
            .await;
        if r.is_ok() {
            admitted += 100;
        }
    }
    assert!(
        admitted <= 400,
        "admitted {admitted} tokens after the restart, over the 400 left"
    );
    assert!(admitted >= 300, "admitted only {admitted}");
    let mut check = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let base = store.key_base(MODEL);
    let settled: u64 = check.hget(format!("{base}:fx"), "u").unwrap();
    assert!(settled >= 600 + admitted - 100, "{settled} in Redis");
}
