//! Shared helpers of the integration tests: where Redis is, or why the
//! test is skipped.
//!
//! A test that needs a Redis server calls [`redis_or_skip`]: it gets the
//! server at `BUDGET_REDIS_URL` (default `redis://127.0.0.1:6379`) when
//! one answers there, else one this test binary starts on a free loopback
//! port (`redis-server` on `PATH`, or `REDIS_SERVER_BIN`), else `None`
//! after printing one `skipped: ...` line. With `REQUIRE_EXTERNAL_TESTS=1`
//! (CI) a missing Redis is a failure instead.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The Redis URL the tests were pointed at: `BUDGET_REDIS_URL`, by default
/// the local server on 127.0.0.1:6379.
pub fn configured_url() -> String {
    std::env::var("BUDGET_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The Redis the tests use (see the module docs). Panics when there is
/// none: call [`redis_or_skip`] first.
pub fn redis_url() -> String {
    available()
        .clone()
        .expect("a Redis server (see redis_or_skip)")
}

/// The Redis the tests use, or `None` after printing why the suite is
/// skipped (a failure under `REQUIRE_EXTERNAL_TESTS=1`).
pub fn redis_or_skip(suite: &str) -> Option<String> {
    match available() {
        Some(url) => Some(url.clone()),
        None => {
            skip(
                suite,
                &format!(
                    "no Redis answers at {} and no redis-server could be started",
                    configured_url()
                ),
            );
            None
        }
    }
}

/// Prints the one skip line, or panics with it when external tests are
/// required.
pub fn skip(suite: &str, missing: &str) {
    let line = format!(
        "skipped: {suite}: {missing}; install Redis (apt-get install redis-server, brew install redis) or set BUDGET_REDIS_URL / REDIS_SERVER_BIN"
    );
    if std::env::var("REQUIRE_EXTERNAL_TESTS").is_ok_and(|v| v == "1") {
        panic!("{line} (REQUIRE_EXTERNAL_TESTS=1)");
    }
    // To the process's stderr directly, past the test harness's capture,
    // so that `cargo test` shows it.
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn available() -> &'static Option<String> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        let url = configured_url();
        if answers(&url) {
            return Some(url);
        }
        // Our own, for the whole test binary (it stops with this process).
        server::RedisServer::start_detached().map(|port| format!("redis://127.0.0.1:{port}"))
    })
}

/// Whether something listens where `url` points (`redis://` and
/// `rediss://` URLs; others are taken as they are).
fn answers(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    else {
        return true;
    };
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    let addr = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:6379")
    };
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// A key prefix no other test (or earlier run) uses.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    format!(
        "tbtest-{name}-{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub mod callers;
pub mod recording;
pub mod server;
