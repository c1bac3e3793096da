//! The background thread that owns the connections.
//!
//! One thread runs a small tokio runtime (so the store works from any
//! caller: a runtime without I/O, a paused clock, or `Drop`). It holds
//! `pool_size` workers; each owns one multiplexed connection and a queue.
//! A key always goes to the same worker, which sends what its queue holds
//! as one pipeline and waits for the replies before the next: a key's
//! operations are applied in the order they were queued (so a snapshot or
//! a reservation sees the settlements queued before it).
//!
//! When a round trip fails or times out, the worker turns **degraded**:
//! reservations are served from the key's local share, settlements of
//! reservations made in Redis are kept (in order) and replayed after the
//! reconnect; each carries a per-instance, per-key sequence number that the
//! script records, so a replay of a settlement that was in fact applied is
//! skipped (never lost, never counted twice). Once reconnected, the charges
//! made from local shares are merged into Redis (in the current sub-window).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Pipeline, Value};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tower_bedrock_budget::{Charge, Limits, Refusal, Reservation, StoreKey, WindowKind};

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
    /// Assigned by the worker when first sent.
    pub(crate) seq: Option<u64>,
}

pub(crate) enum Op {
    Reserve {
        key: Arc<KeyShared>,
        limits: Limits,
        charge: Charge,
        now: Instant,
        now_us: Option<u64>,
        reply: Arc<Pending>,
    },
    Settle(SettleOp),
    Snapshot {
        key: Arc<KeyShared>,
        now_us: Option<u64>,
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
            pending: VecDeque::new(),
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
    /// Settlements sent but not acknowledged, oldest first.
    pending: VecDeque<SettleOp>,
    /// Sub-windows each merged epoch's charges went to, per key.
    merge_slots: HashMap<(usize, u64), (u64, u64)>,
    backoff: Duration,
    next_attempt: Option<Instant>,
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
        loop {
            let first = match (self.conn.is_some(), self.next_attempt) {
                (false, Some(at)) => {
                    tokio::select! {
                        op = self.rx.recv() => match op { Some(op) => Some(op), None => break },
                        () = sleep_until(at) => None,
                    }
                }
                _ => match self.rx.recv().await {
                    Some(op) => Some(op),
                    None => break,
                },
            };
            let mut batch: Vec<Op> = first.into_iter().collect();
            while batch.len() < self.common.config.max_batch {
                match self.rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.process(batch).await;
        }
        // Every handle is gone: one last attempt at what is still pending.
        if !self.pending.is_empty() {
            self.process(Vec::new()).await;
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

    fn recovered(&mut self) {
        if self.state.degraded.swap(false, Ordering::Relaxed) {
            let n = self.common.degraded_workers.fetch_sub(1, Ordering::Relaxed) - 1;
            let ns = self.common.config.namespace();
            metrics::gauge!(names::STORE_DEGRADED, "namespace" => ns.clone()).set(n as f64);
            metrics::counter!(names::STORE_DEGRADED_TRANSITIONS, "namespace" => ns.clone(), "to" => "connected")
                .increment(1);
            tracing::info!(
                namespace = %ns,
                connection = self.index,
                replayed = self.pending.len(),
                "budget store reconnected to Redis"
            );
        }
    }

    /// Moves the local charges of keys that used their local share into
    /// the pending queue (merged with the next round trip).
    fn queue_merges(&mut self, now: Instant) {
        let dirty = std::mem::take(&mut *lock(&self.state.dirty));
        for key in dirty {
            let snap = {
                let mut l = lock(&key.local);
                if !l.used {
                    continue;
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
            self.pending.push_back(SettleOp {
                key: key.clone(),
                target: SettleTarget::Merge(epoch & 0x7FF),
                reserved: [0; 3],
                actual: [s.tokens, s.requests, s.day_tokens],
                now_us: key.common.now_us(now),
                seq: None,
            });
        }
    }

    fn settle_cmd(&self, p: &mut Pipeline, op: &SettleOp) {
        let k = &op.key;
        let g = k.geometry;
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
            .arg(4)
            .arg(&k.tok)
            .arg(&k.req)
            .arg(&k.day)
            .arg(&k.seq_key)
            .arg(now_arg(op.now_us))
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
            .arg(op.seq.unwrap_or(0));
    }

    fn op_cmd(&self, p: &mut Pipeline, op: &Op) {
        match op {
            Op::Reserve {
                key,
                limits,
                charge,
                now_us,
                ..
            } => {
                let g = key.geometry;
                p.cmd("EVALSHA")
                    .arg(self.scripts.reserve.get_hash())
                    .arg(3)
                    .arg(&key.tok)
                    .arg(&key.req)
                    .arg(&key.day)
                    .arg(now_arg(*now_us))
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
            }
            Op::Settle(s) => self.settle_cmd(p, s),
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

    /// One pipeline. The error says why, and whether the connection was
    /// refused or dropped (worth one immediate reconnect) rather than slow.
    async fn round_trip(&mut self, ops: &[Op]) -> Result<Vec<Value>, (String, bool)> {
        let mut p = redis::pipe();
        p.ignore_errors();
        for s in &self.pending {
            self.settle_cmd(&mut p, s);
        }
        for op in ops {
            self.op_cmd(&mut p, op);
        }
        let limit = self.common.config.response_timeout;
        let Some(conn) = self.conn.as_mut() else {
            return Err(("not connected".into(), true));
        };
        match timeout(limit, p.query_async::<Vec<Value>>(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err((
                e.category().to_owned(),
                !e.is_timeout()
                    && (e.is_connection_dropped() || e.is_connection_refusal() || e.is_io_error()),
            )),
            Err(_) => Err(("response timeout".into(), false)),
        }
    }

    async fn process(&mut self, mut ops: Vec<Op>) {
        let now = Instant::now();
        if self.conn.is_none() && self.next_attempt.is_none_or(|at| now >= at) {
            self.connect().await;
        }
        if self.conn.is_none() {
            self.answer_degraded(ops, now);
            return;
        }
        self.queue_merges(now);
        // Sequence numbers in the order the settlements are applied.
        for s in self.pending.iter_mut() {
            if s.seq.is_none() {
                s.seq = Some(s.key.next_seq());
            }
        }
        for op in ops.iter_mut() {
            if let Op::Settle(s) = op {
                s.seq = Some(s.key.next_seq());
            }
        }
        let mut result = self.round_trip(&ops).await;
        if let Err((_, true)) = &result {
            // The connection was dropped (a restarted server, an idle
            // connection closed): one fresh connection before degrading.
            self.conn = None;
            self.connect().await;
            if self.conn.is_some() {
                result = self.round_trip(&ops).await;
            }
        }
        if let Ok(values) = &result
            && values.iter().any(is_noscript)
        {
            // Redis restarted or its script cache was flushed: nothing
            // with NOSCRIPT was applied, reload and send again.
            let mut loaded = true;
            if let Some(conn) = self.conn.as_mut() {
                for s in self.scripts.all() {
                    loaded &= s.load_async(conn).await.is_ok();
                }
            }
            result = if loaded {
                self.round_trip(&ops).await
            } else {
                Err(("script load failed".into(), false))
            };
        }
        match result {
            Ok(values) if values.len() == self.pending.len() + ops.len() => {
                self.recovered();
                let mut values = values.into_iter();
                let pending = std::mem::take(&mut self.pending);
                for (s, v) in pending.into_iter().zip(values.by_ref()) {
                    self.settled(&s, &v);
                }
                for (op, v) in ops.into_iter().zip(values) {
                    self.answer(op, &v, now);
                }
            }
            Ok(_) => {
                self.failed("unexpected reply");
                self.answer_degraded(ops, now);
            }
            Err((reason, _)) => {
                self.failed(&reason);
                self.answer_degraded(ops, now);
            }
        }
    }

    fn settled(&mut self, s: &SettleOp, v: &Value) {
        match parse(v) {
            Some(r) => {
                *lock(&s.key.last) = r.sums;
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
                        *lock(&key.last) = r.sums;
                        key.add_reserved(charge);
                        Ok(Reservation {
                            charge,
                            slot: u64::try_from(r.a).unwrap_or(0),
                            day_slot: u64::try_from(r.b).unwrap_or(0),
                        })
                    }
                    Some(r) => {
                        *lock(&key.last) = r.sums;
                        let window = match r.a {
                            2 => WindowKind::Requests,
                            3 => WindowKind::Day,
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
            Op::Snapshot { key, reply, .. } => {
                let sums = parse(v).map(|r| r.sums);
                if let Some(s) = sums {
                    *lock(&key.last) = s;
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
                Op::Settle(s) => self.pending.push_back(s),
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
