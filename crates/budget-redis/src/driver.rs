//! The background thread that owns the connections.
//!
//! One thread runs a small tokio runtime (so the store works from any
//! caller: a runtime without I/O, a paused clock, or `Drop`). It holds
//! `pool_size` workers; each owns one multiplexed connection and a queue.
//! A key always goes to the same worker, which sends what its queue holds
//! as one pipeline, with up to four pipelines in flight on the connection
//! (which keeps them in order) and their replies handled in order: a key's
//! operations are applied in the order they were queued (so a snapshot or
//! a reservation sees the settlements queued before it).
//!
//! When a round trip fails or times out, the worker turns **degraded**:
//! reservations are served from the key's local share, settlements of
//! reservations made in Redis are kept (in order) and replayed after the
//! reconnect; each carries a per-instance, per-key sequence number that the
//! script records, so a replay of a settlement that was in fact applied is
//! skipped (never lost, never counted twice). This needs each key's
//! settlements to be applied in sequence order: they are numbered when
//! first sent, pending ones are kept sorted, a connection only carries
//! pipelines in order, and a new connection is made only when nothing is
//! in flight on the old one (if pipeline N+1 was applied, so was N).
//! Once reconnected, the charges made from local shares are merged into
//! Redis (in the current sub-window).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Pipeline, Value};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tower_bedrock_budget::{
    Charge, Limits, Refusal, Reservation, StoreKey, WindowKind, WindowMode,
};

use crate::config::TimeSource;
use crate::error::BuildError;
use crate::names;
use crate::scripts::Scripts;
use crate::store::{Common, KeyShared, Pending, Sums, WorkerState, lock};

/// Where a settlement applies.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SettleTarget {
    /// A reservation made in Redis, in these sub-windows.
    Slots(u64, u64),
    /// A reservation made from the local share in an epoch since merged.
    Merged(u64),
    /// The merge of an epoch's local charges (into the current sub-window).
    Merge(u64),
}

pub(crate) struct SettleOp {
    pub(crate) key: Arc<KeyShared>,
    pub(crate) target: SettleTarget,
    /// Tokens, requests, day tokens.
    pub(crate) reserved: [u64; 3],
    pub(crate) actual: [u64; 3],
    pub(crate) now_us: Option<u64>,
    /// The caller's instant (none for merges).
    pub(crate) at: Option<Instant>,
    /// Assigned by the worker when first sent.
    pub(crate) seq: Option<u64>,
    /// The token ring of the reservation's tenant (adjusted too).
    pub(crate) tenant_ring: Option<Arc<str>>,
}

/// The tenant of a reservation, as the reserve script takes it.
pub(crate) struct TenantArgs {
    /// The tenant's token ring.
    pub(crate) ring: Arc<str>,
    pub(crate) name: Box<str>,
    pub(crate) weight: u32,
}

/// Where a reservation's outcome goes. Dropped without an answer (a
/// worker gone wrong), it answers from the local share, so no caller waits
/// forever.
pub(crate) struct ReplyGuard(pub(crate) Option<Arc<Pending>>);

impl ReplyGuard {
    fn complete(mut self, result: Result<Reservation, Refusal>, now: Instant) {
        if let Some(p) = self.0.take() {
            p.complete(result, now);
        }
    }
}

impl Drop for ReplyGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.complete_locally();
        }
    }
}

pub(crate) enum Op {
    Reserve {
        key: Arc<KeyShared>,
        limits: Limits,
        charge: Charge,
        now: Instant,
        now_us: Option<u64>,
        tenant: Option<TenantArgs>,
        reply: ReplyGuard,
    },
    Settle(SettleOp),
    Snapshot {
        key: Arc<KeyShared>,
        now_us: Option<u64>,
        at: Instant,
        reply: std::sync::mpsc::SyncSender<Option<Sums>>,
    },
    Heartbeat,
    Ping {
        reply: std::sync::mpsc::SyncSender<bool>,
    },
    /// Merge local charges now if connected.
    Flush,
}

/// A worker's queue and the state callers read.
pub(crate) type WorkerHandle = (mpsc::UnboundedSender<Op>, Arc<WorkerState>);

pub(crate) fn spawn(
    common: Arc<Common>,
    client: redis::Client,
) -> Result<Vec<WorkerHandle>, BuildError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BuildError::Thread(e.to_string()))?;
    let mut handles = Vec::new();
    let mut workers = Vec::new();
    for index in 0..common.config.pool_size {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(WorkerState {
            degraded: std::sync::atomic::AtomicBool::new(false),
            dirty: std::sync::Mutex::new(Vec::new()),
        });
        workers.push(Worker {
            index,
            common: common.clone(),
            state: state.clone(),
            client: client.clone(),
            rx,
            conn: None,
            scripts: Scripts::new(),
            pending: Vec::new(),
            merge_slots: HashMap::new(),
            backoff: common.config.reconnect_min,
            next_attempt: None,
        });
        handles.push((tx, state));
    }
    let heartbeat_tx = handles[0].0.downgrade();
    let every = common.config.heartbeat;
    std::thread::Builder::new()
        .name("budget-redis".into())
        .spawn(move || {
            rt.block_on(async move {
                let hb = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        let Some(tx) = heartbeat_tx.upgrade() else {
                            break;
                        };
                        if tx.send(Op::Heartbeat).is_err() {
                            break;
                        }
                    }
                });
                let tasks: Vec<_> = workers.into_iter().map(|w| tokio::spawn(w.run())).collect();
                for t in tasks {
                    let _ = t.await;
                }
                hb.abort();
            });
        })
        .map_err(|e| BuildError::Thread(e.to_string()))?;
    Ok(handles)
}

struct Worker {
    index: usize,
    common: Arc<Common>,
    state: Arc<WorkerState>,
    client: redis::Client,
    rx: mpsc::UnboundedReceiver<Op>,
    conn: Option<MultiplexedConnection>,
    scripts: Scripts,
    /// Settlements not acknowledged yet, in the order to apply them.
    pending: Vec<SettleOp>,
    /// Sub-windows each merged epoch's charges went to, per key.
    merge_slots: HashMap<(usize, u64), (u64, u64)>,
    backoff: Duration,
    next_attempt: Option<Instant>,
}

/// Pipelines in flight per connection at most (the connection keeps them
/// in order; replies are handled in order).
const MAX_IN_FLIGHT: usize = 4;

/// What a round trip carried.
struct Flight {
    replay: Vec<SettleOp>,
    ops: Vec<Op>,
    now: Instant,
}

/// The replies, or why there are none and whether the connection was
/// refused or dropped (worth one immediate reconnect) rather than slow.
type FlightResult = Result<Vec<Value>, (String, bool)>;
type FlightFuture = Pin<Box<dyn Future<Output = (Flight, FlightResult)> + Send>>;
type InFlight = FuturesOrdered<FlightFuture>;

async fn query(conn: &mut MultiplexedConnection, pipe: &Pipeline, limit: Duration) -> FlightResult {
    match timeout(limit, pipe.query_async::<Vec<Value>>(conn)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((
            e.category().to_owned(),
            !e.is_timeout()
                && (e.is_connection_dropped() || e.is_connection_refusal() || e.is_io_error()),
        )),
        Err(_) => Err(("response timeout".into(), false)),
    }
}

/// One parsed script reply: `{flag, a, b, now_us, tokens, requests, day}`.
struct Reply {
    flag: i64,
    a: i64,
    b: i64,
    now_us: i64,
    sums: Sums,
}

fn parse(v: &Value) -> Option<Reply> {
    let Value::Array(items) = v else { return None };
    let n: Vec<i64> = items
        .iter()
        .map(|x| match x {
            Value::Int(i) => Some(*i),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let u = |i: i64| u64::try_from(i).unwrap_or(0);
    match n.as_slice() {
        [flag, a, b, now_us, t, r, d] => Some(Reply {
            flag: *flag,
            a: *a,
            b: *b,
            now_us: *now_us,
            sums: Sums {
                at: None,
                tokens: u(*t),
                requests: u(*r),
                day: u(*d),
            },
        }),
        [now_us, t, r, d] => Some(Reply {
            flag: 1,
            a: 0,
            b: 0,
            now_us: *now_us,
            sums: Sums {
                at: None,
                tokens: u(*t),
                requests: u(*r),
                day: u(*d),
            },
        }),
        _ => None,
    }
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript))
}

fn now_arg(now_us: Option<u64>) -> i64 {
    now_us.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

fn opt(x: Option<u64>) -> i64 {
    x.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl Worker {
    async fn run(mut self) {
        let mut in_flight: InFlight = FuturesOrdered::new();
        let mut open = true;
        loop {
            let reconnect_at = match (self.conn.is_none(), self.next_attempt) {
                (true, Some(at)) if in_flight.is_empty() => Some(at),
                _ => None,
            };
            tokio::select! {
                biased;
                Some((flight, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    let idle = in_flight.is_empty();
                    self.finish(flight, result, idle).await;
                }
                op = self.rx.recv(), if open && in_flight.len() < MAX_IN_FLIGHT => match op {
                    Some(op) => {
                        let mut batch = vec![op];
                        while batch.len() < self.common.config.max_batch {
                            match self.rx.try_recv() {
                                Ok(op) => batch.push(op),
                                Err(_) => break,
                            }
                        }
                        let idle = in_flight.is_empty();
                        if let Some(f) = self.start(batch, idle).await {
                            in_flight.push_back(f);
                        }
                    }
                    None => open = false,
                },
                () = sleep_until(reconnect_at.unwrap_or_else(Instant::now)), if open && reconnect_at.is_some() => {
                    if let Some(f) = self.start(Vec::new(), true).await {
                        in_flight.push_back(f);
                    }
                }
                else => {}
            }
            if !open && in_flight.is_empty() {
                // Every handle is gone: one last attempt at what is pending.
                if !self.pending.is_empty()
                    && let Some(f) = self.start(Vec::new(), true).await
                {
                    let (flight, result) = f.await;
                    self.finish(flight, result, true).await;
                }
                break;
            }
        }
    }

    async fn connect(&mut self) {
        let c = &self.common.config;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(c.connect_timeout))
            .set_response_timeout(Some(c.response_timeout));
        let attempt = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?;
            for s in self.scripts.all() {
                s.load_async(&mut conn).await?;
            }
            Ok::<_, redis::RedisError>(conn)
        };
        match timeout(c.connect_timeout * 2, attempt).await {
            Ok(Ok(conn)) => {
                self.conn = Some(conn);
                self.backoff = c.reconnect_min;
                self.next_attempt = None;
            }
            Ok(Err(e)) => self.failed(e.category()),
            Err(_) => self.failed("connect timeout"),
        }
    }

    /// A round trip or a connection attempt failed.
    fn failed(&mut self, reason: &str) {
        self.conn = None;
        self.next_attempt = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.common.config.reconnect_max);
        if !self.state.degraded.swap(true, Ordering::Relaxed) {
            let n = self.common.degraded_workers.fetch_add(1, Ordering::Relaxed) + 1;
            let ns = self.common.config.namespace();
            metrics::gauge!(names::STORE_DEGRADED, "namespace" => ns.clone()).set(n as f64);
            metrics::counter!(names::STORE_DEGRADED_TRANSITIONS, "namespace" => ns.clone(), "to" => "degraded")
                .increment(1);
            tracing::warn!(
                namespace = %ns,
                connection = self.index,
                reason,
                live_instances = self.common.live.load(Ordering::Relaxed),
                "budget store degraded: Redis unreachable, serving from the local share"
            );
        }
    }

    fn recovered(&mut self, replayed: usize) {
        if self.state.degraded.swap(false, Ordering::Relaxed) {
            let n = self.common.degraded_workers.fetch_sub(1, Ordering::Relaxed) - 1;
            let ns = self.common.config.namespace();
            metrics::gauge!(names::STORE_DEGRADED, "namespace" => ns.clone()).set(n as f64);
            metrics::counter!(names::STORE_DEGRADED_TRANSITIONS, "namespace" => ns.clone(), "to" => "connected")
                .increment(1);
            tracing::info!(
                namespace = %ns,
                connection = self.index,
                replayed,
                "budget store reconnected to Redis"
            );
        }
    }

    /// Moves the local charges of keys that used their local share into
    /// the pending queue (merged with the next round trip).
    fn queue_merges(&mut self, now: Instant) {
        let dirty = std::mem::take(&mut *lock(&self.state.dirty));
        for key in dirty {
            // On the caller's clock (possibly paused or simulated), this
            // thread's instant means nothing: use the key's latest caller
            // instant.
            let now = match self.common.config.time {
                TimeSource::Redis => now,
                TimeSource::Client(_) => lock(&key.last).at.unwrap_or(now),
            };
            let snap = {
                let mut l = lock(&key.local);
                if !l.used {
                    continue;
                }
                // Redis has the priming charge already.
                if let Some(pre) = l.pre.take() {
                    l.key.settle(pre, Charge::ZERO, now);
                }
                let snap = l.key.snapshot(now);
                let epoch = l.epoch;
                l.epoch += 1;
                l.key = tower_bedrock_budget::BudgetStore::key(
                    &self.common.fallback,
                    &key.name,
                    key.spec(),
                );
                l.used = false;
                (snap, epoch)
            };
            let (s, epoch) = snap;
            self.pending.push(SettleOp {
                key: key.clone(),
                target: SettleTarget::Merge(epoch & 0x7FF),
                reserved: [0; 3],
                actual: [s.tokens, s.requests, s.day_tokens],
                now_us: key.common.now_us(now),
                at: None,
                seq: None,
                tenant_ring: None,
            });
        }
    }

    fn settle_cmd_fixed(&self, p: &mut Pipeline, op: &SettleOp) {
        let k = &op.key;
        let g = k.geometry;
        let ring = match op.target {
            SettleTarget::Slots(..) => op.tenant_ring.as_deref(),
            _ => None,
        };
        let (kind, win, ring_slot) = match op.target {
            SettleTarget::Slots(w, r) => (0, opt(Some(w)), opt(Some(r))),
            SettleTarget::Merged(e) => (
                1,
                self.merge_slots
                    .get(&(k.id, e))
                    .map_or(-1, |&(w, _)| opt(Some(w))),
                -1,
            ),
            SettleTarget::Merge(_) => (2, -1, -1),
        };
        p.cmd("EVALSHA")
            .arg(self.scripts.settle_fixed.get_hash())
            .arg(if ring.is_some() { 4 } else { 3 })
            .arg(&k.fx)
            .arg(&k.rsv)
            .arg(&k.seq_key);
        if let Some(ring) = ring {
            p.arg(ring);
        }
        p.arg(now_arg(op.now_us))
            .arg(g.window_us)
            .arg(g.day_us)
            .arg(kind)
            .arg(win)
            .arg(ring_slot)
            .arg(op.reserved[0])
            .arg(op.reserved[1])
            .arg(&op.actual[..])
            .arg(g.day_ttl_ms)
            .arg(&self.common.instance)
            .arg(op.seq.unwrap_or(0))
            .arg(g.stale_us)
            .arg(g.g_us)
            .arg(g.k)
            .arg(g.ttl_ms);
    }

    fn settle_cmd(&self, p: &mut Pipeline, op: &SettleOp) {
        if op.key.mode == WindowMode::Fixed {
            return self.settle_cmd_fixed(p, op);
        }
        let k = &op.key;
        let g = k.geometry;
        // Only a reservation made in Redis was charged to a tenant ring.
        let ring = match op.target {
            SettleTarget::Slots(..) => op.tenant_ring.as_deref(),
            _ => None,
        };
        let (slot, dslot) = match op.target {
            SettleTarget::Slots(s, d) => (opt(Some(s)), opt(Some(d))),
            SettleTarget::Merged(e) => self
                .merge_slots
                .get(&(k.id, e))
                .map_or((-1, -1), |&(s, d)| (opt(Some(s)), opt(Some(d)))),
            SettleTarget::Merge(_) => (-1, -1),
        };
        p.cmd("EVALSHA")
            .arg(self.scripts.settle.get_hash())
            .arg(if ring.is_some() { 5 } else { 4 })
            .arg(&k.tok)
            .arg(&k.req)
            .arg(&k.day)
            .arg(&k.seq_key);
        if let Some(ring) = ring {
            p.arg(ring);
        }
        p.arg(now_arg(op.now_us))
            .arg(g.g_us)
            .arg(g.k)
            .arg(g.dg_us)
            .arg(g.dk)
            .arg(slot)
            .arg(dslot)
            .arg(&op.reserved[..])
            .arg(&op.actual[..])
            .arg(g.ttl_ms)
            .arg(g.day_ttl_ms)
            .arg(&self.common.instance)
            .arg(op.seq.unwrap_or(0))
            .arg(g.stale_us);
    }

    fn op_cmd(&self, p: &mut Pipeline, op: &Op) {
        match op {
            Op::Reserve {
                key,
                limits,
                charge,
                now,
                now_us,
                tenant,
                ..
            } if key.mode == WindowMode::Fixed => {
                let g = key.geometry;
                p.cmd("EVALSHA")
                    .arg(self.scripts.reserve_fixed.get_hash())
                    .arg(if tenant.is_some() { 4 } else { 2 })
                    .arg(&key.fx)
                    .arg(&key.rsv);
                if let Some(t) = tenant {
                    p.arg(&*t.ring).arg(&key.contention);
                }
                p.arg(now_arg(*now_us))
                    .arg(g.window_us)
                    .arg(g.day_us)
                    .arg(limits.tokens)
                    .arg(opt(limits.requests))
                    .arg(opt(limits.day_tokens))
                    .arg(charge.tokens)
                    .arg(charge.requests)
                    .arg(g.day_ttl_ms)
                    .arg(&self.common.instance)
                    .arg(g.stale_us)
                    .arg(g.g_us)
                    .arg(g.k)
                    .arg(g.ttl_ms);
                match tenant {
                    Some(t) => p.arg(&*t.name).arg(t.weight),
                    None => p.arg("").arg(0),
                };
                let seed = key.seed(*now);
                p.arg(seed[0]).arg(seed[1]).arg(seed[2]);
            }
            Op::Reserve {
                key,
                limits,
                charge,
                now,
                now_us,
                tenant,
                ..
            } => {
                let g = key.geometry;
                p.cmd("EVALSHA")
                    .arg(self.scripts.reserve.get_hash())
                    .arg(if tenant.is_some() { 5 } else { 3 })
                    .arg(&key.tok)
                    .arg(&key.req)
                    .arg(&key.day);
                if let Some(t) = tenant {
                    p.arg(&*t.ring).arg(&key.contention);
                }
                p.arg(now_arg(*now_us))
                    .arg(g.g_us)
                    .arg(g.k)
                    .arg(g.dg_us)
                    .arg(g.dk)
                    .arg(limits.tokens)
                    .arg(opt(limits.requests))
                    .arg(opt(limits.day_tokens))
                    .arg(charge.tokens)
                    .arg(charge.requests)
                    .arg(g.ttl_ms)
                    .arg(g.day_ttl_ms);
                match tenant {
                    Some(t) => p.arg(&*t.name).arg(t.weight),
                    None => p.arg("").arg(0),
                };
                let seed = key.seed(*now);
                p.arg(seed[0]).arg(seed[1]);
            }
            Op::Settle(s) => self.settle_cmd(p, s),
            Op::Snapshot { key, now_us, .. } if key.mode == WindowMode::Fixed => {
                let g = key.geometry;
                p.cmd("EVALSHA")
                    .arg(self.scripts.snapshot_fixed.get_hash())
                    .arg(2)
                    .arg(&key.fx)
                    .arg(&key.rsv)
                    .arg(now_arg(*now_us))
                    .arg(g.window_us)
                    .arg(g.day_us)
                    .arg(g.stale_us);
            }
            Op::Snapshot { key, now_us, .. } => {
                let g = key.geometry;
                p.cmd("EVALSHA")
                    .arg(self.scripts.snapshot.get_hash())
                    .arg(3)
                    .arg(&key.tok)
                    .arg(&key.req)
                    .arg(&key.day)
                    .arg(now_arg(*now_us))
                    .arg(g.g_us)
                    .arg(g.k)
                    .arg(g.dg_us)
                    .arg(g.dk)
                    .arg(g.ttl_ms)
                    .arg(g.day_ttl_ms);
            }
            Op::Heartbeat => {
                let ttl =
                    u64::try_from(self.common.config.instance_ttl.as_millis()).unwrap_or(u64::MAX);
                p.cmd("EVALSHA")
                    .arg(self.scripts.heartbeat.get_hash())
                    .arg(1)
                    .arg(self.common.config.instances_key())
                    .arg(&self.common.instance)
                    .arg(ttl);
            }
            Op::Ping { .. } | Op::Flush => {
                p.cmd("PING");
            }
        }
    }

    fn pipeline(&self, replay: &[SettleOp], ops: &[Op]) -> Pipeline {
        let mut p = redis::pipe();
        p.ignore_errors();
        for s in replay {
            self.settle_cmd(&mut p, s);
        }
        for op in ops {
            self.op_cmd(&mut p, op);
        }
        p
    }

    /// Keeps pending settlements in the order they must be applied: those
    /// already numbered by sequence, then the others in arrival order.
    fn requeue(&mut self, replay: Vec<SettleOp>) {
        self.pending.extend(replay);
        self.pending.sort_by_key(|s| (s.seq.is_none(), s.seq));
    }

    /// Starts a round trip for `ops` (with the settlements to replay
    /// first), or answers them without Redis. A connection is (re)made
    /// only when nothing is in flight (`idle`) on the old one.
    async fn start(&mut self, mut ops: Vec<Op>, idle: bool) -> Option<FlightFuture> {
        let now = Instant::now();
        if self.conn.is_none() && idle && self.next_attempt.is_none_or(|at| now >= at) {
            self.connect().await;
        }
        let Some(mut conn) = self.conn.clone() else {
            self.answer_degraded(ops, now);
            return None;
        };
        self.queue_merges(now);
        // Sequence numbers in the order the settlements are applied.
        self.requeue(Vec::new());
        for s in &mut self.pending {
            if s.seq.is_none() {
                s.seq = Some(s.key.next_seq());
            }
        }
        for op in &mut ops {
            if let Op::Settle(s) = op {
                s.seq = Some(s.key.next_seq());
            }
        }
        if ops.is_empty() {
            // A reconnect probe: never an empty pipeline.
            ops.push(Op::Flush);
        }
        let replay = std::mem::take(&mut self.pending);
        let pipe = self.pipeline(&replay, &ops);
        let limit = self.common.config.response_timeout;
        Some(Box::pin(async move {
            let result = query(&mut conn, &pipe, limit).await;
            (Flight { replay, ops, now }, result)
        }))
    }

    /// Handles a round trip's outcome (in the order they were sent).
    async fn finish(&mut self, flight: Flight, result: FlightResult, idle: bool) {
        let Flight { replay, ops, now } = flight;
        let noscript = matches!(&result, Ok(v) if v.iter().any(is_noscript));
        let dropped = matches!(&result, Err((_, true)));
        if !(noscript || (dropped && idle)) {
            return self.conclude(replay, ops, result, now);
        }
        // Once more, at once: with the scripts reloaded (Redis restarted or
        // its cache was flushed: nothing with NOSCRIPT was applied), or on
        // a fresh connection (a restarted server, a closed idle
        // connection). The settlements pending meanwhile go along, in order.
        self.requeue(replay);
        if dropped {
            self.conn = None;
            self.connect().await;
        } else if let Some(conn) = self.conn.as_mut() {
            let mut loaded = true;
            for s in self.scripts.all() {
                loaded &= s.load_async(conn).await.is_ok();
            }
            if !loaded {
                self.failed("script load failed");
            }
        }
        let Some(mut conn) = self.conn.clone() else {
            self.answer_degraded(ops, now);
            return;
        };
        let replay = std::mem::take(&mut self.pending);
        let pipe = self.pipeline(&replay, &ops);
        let result = query(&mut conn, &pipe, self.common.config.response_timeout).await;
        self.conclude(replay, ops, result, now);
    }

    fn conclude(
        &mut self,
        replay: Vec<SettleOp>,
        ops: Vec<Op>,
        result: FlightResult,
        now: Instant,
    ) {
        match result {
            Ok(values)
                if values.len() == replay.len() + ops.len() && !values.iter().any(is_noscript) =>
            {
                if self.conn.is_some() {
                    self.recovered(replay.len());
                }
                let mut values = values.into_iter();
                for (s, v) in replay.into_iter().zip(values.by_ref()) {
                    self.settled(&s, &v);
                }
                for (op, v) in ops.into_iter().zip(values) {
                    self.answer(op, &v, now);
                }
            }
            Ok(_) => {
                self.requeue(replay);
                self.failed("unexpected reply");
                self.answer_degraded(ops, now);
            }
            Err((reason, _)) => {
                self.requeue(replay);
                self.failed(&reason);
                self.answer_degraded(ops, now);
            }
        }
    }

    fn settled(&mut self, s: &SettleOp, v: &Value) {
        match parse(v) {
            Some(r) => {
                s.key.set_last(r.sums, s.at);
                if r.flag == 0 {
                    metrics::counter!(names::STORE_REPLAYS_SKIPPED, "namespace" => self.common.config.namespace())
                        .increment(1);
                    tracing::debug!(key = %s.key.name, seq = s.seq, "settlement already applied: replay skipped");
                }
                if let SettleTarget::Merge(epoch) = s.target
                    && r.flag == 1
                {
                    let slots = (
                        u64::try_from(r.a).unwrap_or(0),
                        u64::try_from(r.b).unwrap_or(0),
                    );
                    self.merge_slots.insert((s.key.id, epoch), slots);
                    // Keep the last few epochs of this key (epochs wrap at 2048).
                    self.merge_slots.retain(|(id, e), _| {
                        *id != s.key.id || (epoch.wrapping_sub(*e) & 0x7FF) < 8
                    });
                }
            }
            None => {
                tracing::error!(key = %s.key.name, reply = ?v, "budget settlement refused by Redis; dropped")
            }
        }
    }

    fn answer(&mut self, op: Op, v: &Value, now: Instant) {
        match op {
            Op::Reserve {
                key,
                limits,
                charge,
                now: at,
                reply,
                ..
            } => {
                let result = match parse(v) {
                    Some(r) if r.flag == 1 => {
                        key.set_last(r.sums, Some(at));
                        key.add_reserved(charge);
                        Ok(Reservation {
                            charge,
                            slot: u64::try_from(r.a).unwrap_or(0),
                            day_slot: u64::try_from(r.b).unwrap_or(0),
                        })
                    }
                    Some(r) => {
                        key.set_last(r.sums, Some(at));
                        let window = match r.a {
                            2 => WindowKind::Requests,
                            3 => WindowKind::Day,
                            4 => WindowKind::Share,
                            _ => WindowKind::Tokens,
                        };
                        let room_at = (r.b >= 0).then(|| {
                            let ahead = u64::try_from(r.b.saturating_sub(r.now_us)).unwrap_or(0);
                            at + Duration::from_micros(ahead)
                        });
                        Err(Refusal { window, room_at })
                    }
                    None => {
                        tracing::error!(key = %key.name, reply = ?v, "budget reservation failed in Redis; served locally");
                        key.local_reserve(limits, charge, at)
                    }
                };
                reply.complete(result, now);
            }
            Op::Settle(s) => self.settled(&s, v),
            Op::Snapshot { key, reply, at, .. } => {
                let sums = parse(v).map(|r| r.sums);
                if let Some(s) = sums {
                    key.set_last(s, Some(at));
                }
                let _ = reply.try_send(sums);
            }
            Op::Heartbeat => {
                if let Value::Int(n) = v {
                    let n = u64::try_from(*n).unwrap_or(1).max(1);
                    self.common.live.store(n, Ordering::Relaxed);
                    metrics::gauge!(names::STORE_LIVE_INSTANCES, "namespace" => self.common.config.namespace())
                        .set(n as f64);
                }
            }
            Op::Ping { reply } => {
                let _ = reply.try_send(true);
            }
            Op::Flush => {}
        }
    }

    /// Answers a batch without Redis.
    fn answer_degraded(&mut self, ops: Vec<Op>, now: Instant) {
        for op in ops {
            match op {
                Op::Reserve {
                    key,
                    limits,
                    charge,
                    now: at,
                    reply,
                    ..
                } => {
                    let r = key.local_reserve(limits, charge, at);
                    reply.complete(r, now);
                }
                Op::Settle(s) => self.requeue(vec![s]),
                Op::Snapshot { reply, .. } => {
                    let _ = reply.try_send(None);
                }
                Op::Ping { reply } => {
                    let _ = reply.try_send(false);
                }
                Op::Heartbeat | Op::Flush => {}
            }
        }
    }
}
