//! Errors of the budget's own: bad configuration, refused when the budget
//! is built. Refusals of requests are [`Rejection`](tower_bedrock_core::Rejection)s,
//! converted into the stack's error type.

use std::fmt;

/// A budget or tenant configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The window length is zero.
    ZeroWindow,
    /// The day length is zero.
    ZeroDay,
    /// Zero sub-windows, more than 100 000 (memory per key), or a number
    /// that does not divide the window into whole nanoseconds.
    BadSubWindows {
        /// Which window (`window` or `day`).
        window: &'static str,
        /// The value given.
        sub_windows: u32,
    },
    /// A limit of zero (tokens, requests or tokens per day): nothing could
    /// ever be admitted.
    ZeroLimit {
        /// The key (`"default"` for the default limits).
        key: String,
        /// Which limit (`tokens`, `requests`, `day`).
        window: &'static str,
    },
    /// An adaptive-limit parameter out of range.
    BadAdaptive(&'static str),
    /// A tenant weight of zero.
    ZeroWeight {
        /// The tenant.
        tenant: String,
    },
    /// The tenant already exists with another weight or priority.
    TenantConflict {
        /// The tenant.
        tenant: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroWindow => f.write_str("budget window length must be positive"),
            BuildError::ZeroDay => f.write_str("budget day length must be positive"),
            BuildError::BadSubWindows {
                window,
                sub_windows,
            } => write!(
                f,
                "{sub_windows} sub-windows per {window} is out of range (1..=100000, dividing the window into whole nanoseconds)"
            ),
            BuildError::ZeroLimit { key, window } => {
                write!(f, "{window} limit of budget key {key} must be positive")
            }
            BuildError::BadAdaptive(what) => write!(f, "adaptive limit: {what}"),
            BuildError::ZeroWeight { tenant } => {
                write!(f, "weight of tenant {tenant} must be positive")
            }
            BuildError::TenantConflict { tenant } => write!(
                f,
                "tenant {tenant} already exists with another weight or priority"
            ),
        }
    }
}

impl std::error::Error for BuildError {}
