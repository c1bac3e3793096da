//! Shared helpers of the integration tests: where Redis is.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};

/// The Redis the tests use: `BUDGET_REDIS_URL`, by default the local
/// server on 127.0.0.1:6379 (`.ci/run` starts one when it is missing).
pub fn redis_url() -> String {
    std::env::var("BUDGET_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
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
