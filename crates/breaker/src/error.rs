//! Errors of the layer's own: invalid configuration.
//!
//! Calls refused by an open breaker are not errors of this module: they are
//! [`Rejection`](tower_bedrock_core::Rejection)s of kind
//! [`LocalRejection::CircuitOpen`](tower_bedrock_core::LocalRejection::CircuitOpen),
//! converted into the inner service's error type with `From<Rejection>`.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// A [`CircuitBreakBuilder`](crate::CircuitBreakBuilder) setting that cannot
/// work, reported by `build()`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A rate (failure rate, slow-call rate, half-open success rate) outside
    /// `(0, 1]`.
    InvalidRate {
        /// The builder setting.
        setting: &'static str,
        /// The value given.
        value: f64,
    },
    /// A count or duration that must not be zero was zero.
    Zero {
        /// The builder setting.
        setting: &'static str,
    },
    /// The minimum number of calls is larger than the count-based window:
    /// the failure-rate and slow-call rules could never trip.
    MinimumCallsExceedWindow {
        /// The minimum number of calls.
        minimum_calls: u32,
        /// The window size.
        window: u32,
    },
    /// Every trip rule is disabled: the breaker could never open.
    NoTripRule,
    /// The maximum open duration is shorter than the base.
    OpenDurationRange {
        /// The base open duration.
        base: Duration,
        /// The cap.
        max: Duration,
    },
    /// The open-duration multiplier is below 1 or not finite.
    InvalidMultiplier(f64),
    /// The jitter fraction is outside `[0, 1)`.
    InvalidJitter(f64),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidRate { setting, value } => {
                write!(
                    f,
                    "circuit breaker: {setting} must be in (0, 1], got {value}"
                )
            }
            ConfigError::Zero { setting } => {
                write!(f, "circuit breaker: {setting} must not be zero")
            }
            ConfigError::MinimumCallsExceedWindow {
                minimum_calls,
                window,
            } => write!(
                f,
                "circuit breaker: minimum_calls ({minimum_calls}) exceeds the count window ({window} calls)"
            ),
            ConfigError::NoTripRule => {
                f.write_str("circuit breaker: every trip rule is disabled, it could never open")
            }
            ConfigError::OpenDurationRange { base, max } => write!(
                f,
                "circuit breaker: max open duration {max:?} is shorter than the base {base:?}"
            ),
            ConfigError::InvalidMultiplier(m) => write!(
                f,
                "circuit breaker: open duration multiplier must be finite and >= 1, got {m}"
            ),
            ConfigError::InvalidJitter(j) => {
                write!(f, "circuit breaker: jitter must be in [0, 1), got {j}")
            }
        }
    }
}

impl Error for ConfigError {}
