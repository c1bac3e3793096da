//! Errors of the retry layer's own: configuration refused by the builder.
//!
//! At run time the layer returns the inner service's error type `E` (the
//! last attempt's error, with [`ErrorContext`](tower_bedrock_core::ErrorContext)
//! noting the attempts and the [`RetryStop`](tower_bedrock_core::RetryStop)),
//! or `E::from(Rejection)` for a deadline that leaves no room for a first
//! attempt.

use std::fmt;

use tower_bedrock_core::ErrorClass;

/// Why [`QuotaAlignedRetryLayerBuilder::build`](crate::QuotaAlignedRetryLayerBuilder::build)
/// refused the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A retrying policy was given to a class that is never retried
    /// (client errors, local rejections).
    NeverRetried(ErrorClass),
    /// A class's backoff is invalid.
    InvalidBackoff {
        /// The class whose policy was refused.
        class: ErrorClass,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The quota window length is zero.
    ZeroWindow,
    /// The retry hint range has its minimum above its maximum.
    InvalidHintRange,
    /// `max_attempts` is zero: not even the first attempt would be sent.
    ZeroMaxAttempts,
    /// The layer-wide deadline is zero: every call would be refused.
    ZeroDeadline,
    /// The retry budget settings are invalid.
    InvalidBudget(&'static str),
    /// A duration setting is longer than [`MAX_WAIT`](crate::MAX_WAIT)
    /// (a day): waits that long are configuration mistakes, and would
    /// overflow the timer.
    TooLong {
        /// The setting refused.
        setting: &'static str,
    },
    /// The [`CircuitWait`](crate::CircuitWait) settings are invalid.
    InvalidCircuitWait(&'static str),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NeverRetried(class) => {
                write!(f, "{class} is never retried; its policy cannot retry")
            }
            BuildError::InvalidBackoff { class, reason } => {
                write!(f, "invalid backoff for {class}: {reason}")
            }
            BuildError::ZeroWindow => f.write_str("the quota window length must be positive"),
            BuildError::InvalidHintRange => {
                f.write_str("the retry hint range's minimum is above its maximum")
            }
            BuildError::ZeroMaxAttempts => f.write_str("max_attempts must be at least 1"),
            BuildError::ZeroDeadline => f.write_str("the layer-wide deadline must be positive"),
            BuildError::InvalidBudget(reason) => write!(f, "invalid retry budget: {reason}"),
            BuildError::TooLong { setting } => {
                write!(f, "{setting} must not exceed a day")
            }
            BuildError::InvalidCircuitWait(reason) => {
                write!(f, "invalid circuit wait: {reason}")
            }
        }
    }
}

impl std::error::Error for BuildError {}
