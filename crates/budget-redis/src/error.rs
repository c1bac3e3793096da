//! Errors of the Redis store's own: a configuration that cannot work,
//! refused when the store is built.
//!
//! Failures of Redis itself never surface as errors: the store serves from
//! its local share instead (see the crate docs on degraded mode).

use std::fmt;

/// A Redis store configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The Redis URL does not parse. The URL itself is not repeated (it may
    /// hold a password); `reason` is the client's error category.
    BadUrl {
        /// Why the client refused it.
        reason: String,
    },
    /// The pool size is zero or above 64.
    BadPoolSize(usize),
    /// A timeout or interval that must be positive is zero.
    ZeroDuration(&'static str),
    /// The instance TTL is not longer than the heartbeat interval (live
    /// instances would flicker).
    InstanceTtlTooShort,
    /// The reconnect backoff's minimum is above its maximum.
    BadBackoff,
    /// The key prefix, account or region is empty or contains `{`, `}` or
    /// whitespace (they form Redis key names and the cluster hash tag).
    BadName(&'static str),
    /// Zero expected instances, or a batch size of zero.
    ZeroCount(&'static str),
    /// The background thread that talks to Redis could not be started.
    Thread(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::BadUrl { reason } => write!(f, "invalid Redis URL: {reason}"),
            BuildError::BadPoolSize(n) => write!(f, "Redis pool size {n} is not in 1..=64"),
            BuildError::ZeroDuration(what) => write!(f, "{what} must be positive"),
            BuildError::InstanceTtlTooShort => {
                f.write_str("the instance TTL must be longer than the heartbeat interval")
            }
            BuildError::BadBackoff => f.write_str("reconnect backoff: minimum above maximum"),
            BuildError::BadName(what) => {
                write!(f, "{what} must be non-empty, without braces or whitespace")
            }
            BuildError::ZeroCount(what) => write!(f, "{what} must be at least 1"),
            BuildError::Thread(e) => write!(f, "cannot start the Redis store's thread: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}
