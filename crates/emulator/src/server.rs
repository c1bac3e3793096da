//! The HTTP server, the in-process handle and the admin API.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Json, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower_service::Service;

use crate::config::{ConfigError, EmulatorConfig, Latency, Quota};
use crate::faults::FaultRule;
use crate::ops::{LogInfo, ResetConnection, model_op};
use crate::quota::BucketSnapshot;
use crate::state::{CounterSnapshot, Shared};

/// The reserved path prefix of the admin API.
pub const ADMIN_PREFIX: &str = "/_emulator";

/// Why the emulator did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// The local Bedrock Runtime. See [`Emulator::start`].
#[derive(Debug, Clone, Copy)]
pub struct Emulator;

impl Emulator {
    /// Validates `config`, binds its address and serves in the background
    /// on the current tokio runtime until the handle is shut down or
    /// dropped.
    pub async fn start(config: EmulatorConfig) -> Result<EmulatorHandle, StartError> {
        config.validate()?;
        let addr = config.bind;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let grace = Duration::from_millis(config.shutdown_grace_ms);
        let shared = Shared::new(config);
        let router = router(shared.clone());
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, router, rx, grace));
        tracing::info!(addr = %local, "bedrock emulator listening");
        Ok(EmulatorHandle {
            addr: local,
            shared,
            shutdown: tx,
            task: Some(task),
        })
    }
}

/// A running emulator. Dropping it stops accepting connections (without
/// waiting); [`shutdown`](Self::shutdown) stops gracefully and waits.
#[derive(Debug)]
pub struct EmulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// A quota change (admin API `PUT /_emulator/quotas` and
/// [`EmulatorHandle::update_quotas`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaUpdate {
    /// New default quota.
    #[serde(default)]
    pub default: Option<Quota>,
    /// Quotas per id to set (replacing any previous one).
    #[serde(default)]
    pub models: BTreeMap<String, Quota>,
    /// New window length in milliseconds.
    #[serde(default)]
    pub window_ms: Option<u64>,
}

/// A clock change (admin API `POST /_emulator/clock`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockUpdate {
    /// Move the quota clock forward by this many milliseconds.
    #[serde(default)]
    pub advance_ms: Option<u64>,
    /// Freeze or unfreeze the quota clock.
    #[serde(default)]
    pub frozen: Option<bool>,
}

impl EmulatorHandle {
    /// The address the emulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for the SDK's `endpoint_url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The admin API's base URL (`http://ADDR/_emulator`).
    pub fn admin_url(&self) -> String {
        format!("http://{}{ADMIN_PREFIX}", self.addr)
    }

    /// The counters now.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters()
    }

    /// Quota usage of one id (as sent: a profile id is its own key).
    pub fn usage(&self, id: &str) -> BucketSnapshot {
        self.shared.quotas.lock().snapshot(id)
    }

    /// Replaces the fault rules (durations count from now).
    pub fn set_faults(&self, rules: Vec<FaultRule>) -> Result<(), ConfigError> {
        validate_rules(&rules)?;
        self.shared.faults.lock().set(&rules);
        Ok(())
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().set(&[]);
    }

    /// Changes quotas.
    pub fn update_quotas(&self, update: QuotaUpdate) -> Result<(), ConfigError> {
        apply_quotas(&self.shared, update)
    }

    /// Sets the quota of one id.
    pub fn set_quota(&self, id: impl Into<String>, quota: Quota) -> Result<(), ConfigError> {
        let mut models = BTreeMap::new();
        models.insert(id.into(), quota);
        self.update_quotas(QuotaUpdate {
            models,
            ..QuotaUpdate::default()
        })
    }

    /// Sets (or removes, with `None`) the cap on requests in flight.
    pub fn set_max_connections(&self, cap: Option<usize>) -> Result<(), ConfigError> {
        if cap == Some(0) {
            return Err(ConfigError::ZeroConnections);
        }
        self.shared
            .max_connections
            .store(cap.unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the latency model.
    pub fn set_latency(&self, latency: Latency) -> Result<(), ConfigError> {
        validate_latency(&latency)?;
        *self.shared.latency.lock() = latency;
        Ok(())
    }

    /// Moves the quota clock forward (windows refresh without waiting).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.quotas.lock().clock.advance(by);
    }

    /// Freezes or unfreezes the quota clock.
    pub fn set_clock_frozen(&self, frozen: bool) {
        self.shared.quotas.lock().clock.set_frozen(frozen);
    }

    /// Back to the startup configuration (counters, usage, quotas, faults
    /// with a reseeded RNG, latency, connection cap); the clock is kept.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting, lets requests in flight finish (up to the configured
    /// grace period, then cuts them) and waits for the server to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn validate_rules(rules: &[FaultRule]) -> Result<(), ConfigError> {
    for (index, r) in rules.iter().enumerate() {
        if !(0.0..=1.0).contains(&r.rate) {
            return Err(ConfigError::BadRate {
                index,
                rate: r.rate,
            });
        }
    }
    Ok(())
}

fn validate_latency(l: &Latency) -> Result<(), ConfigError> {
    let c = EmulatorConfig {
        latency: *l,
        ..EmulatorConfig::default()
    };
    c.validate()
}

fn apply_quotas(shared: &Shared, update: QuotaUpdate) -> Result<(), ConfigError> {
    let check = EmulatorConfig {
        default_quota: update.default.unwrap_or_default(),
        quotas: update.models.clone(),
        window_ms: update.window_ms.unwrap_or(60_000),
        ..EmulatorConfig::default()
    };
    check.validate()?;
    let mut q = shared.quotas.lock();
    if let Some(d) = update.default {
        q.default_quota = d;
    }
    q.quotas.extend(update.models);
    if let Some(w) = update.window_ms {
        q.window = Duration::from_millis(w);
    }
    Ok(())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/model/{model_id}/{op}", any(model_op))
        .route("/_emulator/health", get(|| async { "ok" }))
        .route("/_emulator/counters", get(admin_counters))
        .route("/_emulator/usage", get(admin_usage_all))
        .route("/_emulator/usage/{id}", get(admin_usage))
        .route("/_emulator/quotas", put(admin_quotas))
        .route(
            "/_emulator/faults",
            get(admin_faults)
                .put(admin_set_faults)
                .delete(admin_clear_faults),
        )
        .route("/_emulator/max-connections", put(admin_max_connections))
        .route("/_emulator/latency", put(admin_latency))
        .route("/_emulator/clock", post(admin_clock))
        .route("/_emulator/reset", post(admin_reset))
        .fallback(not_found)
        .with_state(shared)
}

/// Unknown paths: a JSON 404 with a request id, after reading the body.
async fn not_found(State(s): State<Arc<Shared>>, req: axum::extract::Request) -> Response {
    let _ = crate::body::read(req.into_body(), 0, None).await;
    crate::wire::BedrockError::new(
        404,
        "UnknownOperationException",
        crate::wire::messages::UNKNOWN_OPERATION,
    )
    .into_response(&s.request_id())
}

fn bad(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"message": e.to_string()})),
    )
        .into_response()
}

async fn admin_counters(State(s): State<Arc<Shared>>) -> Json<CounterSnapshot> {
    Json(s.counters())
}

async fn admin_usage(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Json<BucketSnapshot> {
    Json(s.quotas.lock().snapshot(&id))
}

async fn admin_usage_all(State(s): State<Arc<Shared>>) -> Json<BTreeMap<String, BucketSnapshot>> {
    let mut q = s.quotas.lock();
    let keys = q.keys();
    Json(
        keys.into_iter()
            .map(|k| {
                let v = q.snapshot(&k);
                (k, v)
            })
            .collect(),
    )
}

async fn admin_quotas(
    State(s): State<Arc<Shared>>,
    body: Result<Json<QuotaUpdate>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(update) = match body {
        Ok(b) => b,
        Err(e) => return bad(e.body_text()),
    };
    match apply_quotas(&s, update) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => bad(e),
    }
}

async fn admin_faults(State(s): State<Arc<Shared>>) -> Json<Vec<FaultRule>> {
    Json(s.faults.lock().rules())
}

async fn admin_set_faults(
    State(s): State<Arc<Shared>>,
    body: Result<Json<Vec<FaultRule>>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(rules) = match body {
        Ok(b) => b,
        Err(e) => return bad(e.body_text()),
    };
    if let Err(e) = validate_rules(&rules) {
        return bad(e);
    }
    s.faults.lock().set(&rules);
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_clear_faults(State(s): State<Arc<Shared>>) -> StatusCode {
    s.faults.lock().set(&[]);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaxConnections {
    max_connections: Option<usize>,
}

async fn admin_max_connections(
    State(s): State<Arc<Shared>>,
    body: Result<Json<MaxConnections>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(m) = match body {
        Ok(b) => b,
        Err(e) => return bad(e.body_text()),
    };
    if m.max_connections == Some(0) {
        return bad(ConfigError::ZeroConnections);
    }
    s.max_connections
        .store(m.max_connections.unwrap_or(0), Ordering::Relaxed);
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_latency(
    State(s): State<Arc<Shared>>,
    body: Result<Json<Latency>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(l) = match body {
        Ok(b) => b,
        Err(e) => return bad(e.body_text()),
    };
    if let Err(e) = validate_latency(&l) {
        return bad(e);
    }
    *s.latency.lock() = l;
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_clock(
    State(s): State<Arc<Shared>>,
    body: Result<Json<ClockUpdate>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(c) = match body {
        Ok(b) => b,
        Err(e) => return bad(e.body_text()),
    };
    let mut q = s.quotas.lock();
    if let Some(f) = c.frozen {
        q.clock.set_frozen(f);
    }
    if let Some(ms) = c.advance_ms {
        q.clock.advance(Duration::from_millis(ms));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_reset(State(s): State<Arc<Shared>>) -> StatusCode {
    s.reset();
    StatusCode::NO_CONTENT
}

/// The error a connection ends with when a reset fault fires.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by fault injection")
    }
}

impl std::error::Error for Reset {}

async fn handle(
    mut router: Router,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Response, Reset> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let ready: Result<(), Infallible> =
        std::future::poll_fn(|cx| Service::<http::Request<Body>>::poll_ready(&mut router, cx))
            .await;
    let Ok(()) = ready;
    let resp = match router.call(req.map(Body::new)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let rid = resp
        .headers()
        .get("x-amzn-RequestId")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let code = resp
        .headers()
        .get("x-amzn-ErrorType")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let reset = resp.extensions().get::<ResetConnection>().is_some();
    let status = resp.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match resp.extensions().get::<LogInfo>() {
        Some(l) => tracing::info!(
            target: "bedrock_emulator::request",
            op = l.op,
            model = %l.model,
            status,
            code,
            request_id = rid,
            input_tokens = l.input_tokens,
            output_tokens = l.output_tokens,
            reset,
            elapsed_ms,
            "request"
        ),
        None => tracing::info!(
            target: "bedrock_emulator::request",
            %method,
            path,
            status,
            elapsed_ms,
            "non-model request"
        ),
    }
    if reset {
        return Err(Reset);
    }
    Ok(resp)
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let router = router.clone();
                let mut stop = shutdown.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(router.clone(), req));
                    // HTTP/1.1, or HTTP/2 with prior knowledge (h2c) when the
                    // client opens with the HTTP/2 preface, as the AWS SDK for
                    // JavaScript v3 does against an http:// endpoint.
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        () = stopped(&mut stop) => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        }
    }
    drop(listener);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = conns.len(), "grace period over; closing connections");
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    tracing::info!("bedrock emulator stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_address_is_a_start_error() {
        let first = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let config = EmulatorConfig::builder()
            .bind(first.addr())
            .build()
            .unwrap();
        let err = Emulator::start(config).await.unwrap_err();
        assert!(matches!(err, StartError::Bind { .. }), "{err}");
        let bad = EmulatorConfig {
            window_ms: 0,
            ..EmulatorConfig::default()
        };
        assert!(matches!(
            Emulator::start(bad).await.unwrap_err(),
            StartError::Config(ConfigError::ZeroWindow)
        ));
        assert!(first.admin_url().ends_with("/_emulator"));
        first.shutdown().await;
    }
}
