//! Emulator configuration: bind address, known models, quotas, latency,
//! faults. Built with [`EmulatorConfig::builder`] or read from TOML with
//! [`EmulatorConfig::from_toml_str`]; both validate and fail with a typed
//! [`ConfigError`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::faults::FaultRule;

/// Foundation model ids the emulator knows by default (any inference profile
/// prefix such as `us.` or `global.`, and ARNs of either, are accepted too).
pub const DEFAULT_MODELS: &[&str] = &[
    "anthropic.claude-opus-4-1-20250805-v1:0",
    "anthropic.claude-opus-4-20250514-v1:0",
    "anthropic.claude-sonnet-4-5-20250929-v1:0",
    "anthropic.claude-sonnet-4-20250514-v1:0",
    "anthropic.claude-haiku-4-5-20251001-v1:0",
    "anthropic.claude-3-7-sonnet-20250219-v1:0",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "anthropic.claude-3-haiku-20240307-v1:0",
    "anthropic.claude-3-sonnet-20240229-v1:0",
    "anthropic.claude-3-opus-20240229-v1:0",
    "amazon.nova-premier-v1:0",
    "amazon.nova-pro-v1:0",
    "amazon.nova-lite-v1:0",
    "amazon.nova-micro-v1:0",
    "meta.llama3-3-70b-instruct-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "meta.llama3-1-8b-instruct-v1:0",
    "meta.llama3-70b-instruct-v1:0",
    "meta.llama3-8b-instruct-v1:0",
    "meta.llama4-maverick-17b-instruct-v1:0",
    "meta.llama4-scout-17b-instruct-v1:0",
];

/// A configuration that cannot work. Returned when a configuration is built
/// or parsed, never later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The quota window length is zero.
    #[error("the quota window must be longer than zero")]
    ZeroWindow,
    /// A quota limit is zero (use `None` for "no limit").
    #[error("quota for {key}: {field} must be greater than zero (omit it for no limit)")]
    ZeroLimit {
        /// `default` or the model id.
        key: String,
        /// `tpm`, `rpm`, `tpd` or `burndown`.
        field: &'static str,
    },
    /// A fault rule has a rate outside `[0, 1]`.
    #[error("fault rule {index}: rate {rate} is not within [0, 1]")]
    BadRate {
        /// Position of the rule in the list.
        index: usize,
        /// The offending rate.
        rate: f64,
    },
    /// The latency scale is negative or not finite.
    #[error("latency scale {0} must be finite and not negative")]
    BadScale(f64),
    /// The body size limit is zero.
    #[error("max_body_bytes must be greater than zero")]
    ZeroBodyLimit,
    /// The connection cap is zero.
    #[error("max_connections must be greater than zero (omit it for no cap)")]
    ZeroConnections,
    /// The TOML text could not be parsed.
    #[error("invalid configuration file: {0}")]
    Toml(#[from] toml::de::Error),
}

/// Quota limits for one key (a model id or an inference profile id).
/// `None` means "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Tokens per window (TPM with the default 60 s window): input plus
    /// output tokens, output multiplied by the burndown rate.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests per window (RPM with the default 60 s window).
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per day: a window 1440 times the quota window. Defaults to
    /// `tpm * 1440` when `tpm` is set and this is not.
    #[serde(default)]
    pub tpd: Option<u64>,
    /// Output-token burndown rate; defaults to the model's
    /// ([`tower_bedrock_core::model::default_burndown_rate`]).
    #[serde(default)]
    pub burndown: Option<u64>,
    /// The output limit reserved when a request sets no `max_tokens`;
    /// defaults to [`EmulatorConfig::default_max_tokens`].
    #[serde(default)]
    pub max_tokens: Option<u64>,
}

impl Quota {
    /// A quota of `tpm` tokens per window and nothing else.
    pub fn tokens(tpm: u64) -> Self {
        Quota {
            tpm: Some(tpm),
            ..Quota::default()
        }
    }

    /// Sets the requests-per-window limit.
    pub fn with_rpm(mut self, rpm: u64) -> Self {
        self.rpm = Some(rpm);
        self
    }

    /// Sets the tokens-per-day limit.
    pub fn with_tpd(mut self, tpd: u64) -> Self {
        self.tpd = Some(tpd);
        self
    }

    /// Sets the burndown rate.
    pub fn with_burndown(mut self, burndown: u64) -> Self {
        self.burndown = Some(burndown);
        self
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let fields = [
            ("tpm", self.tpm),
            ("rpm", self.rpm),
            ("tpd", self.tpd),
            ("burndown", self.burndown),
            ("max_tokens", self.max_tokens),
        ];
        for (field, v) in fields {
            if v == Some(0) {
                return Err(ConfigError::ZeroLimit {
                    key: key.to_owned(),
                    field,
                });
            }
        }
        Ok(())
    }
}

/// The latency model: time to first token plus a time per output token, both
/// multiplied by `scale` (0 makes every answer instant).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Latency {
    /// Time to first token, in milliseconds.
    pub time_to_first_token_ms: u64,
    /// Time per output token, in milliseconds (fractions allowed).
    pub per_token_ms: f64,
    /// Multiplier applied to both.
    pub scale: f64,
}

impl Default for Latency {
    /// No latency at all: the right default for tests.
    fn default() -> Self {
        Latency {
            time_to_first_token_ms: 0,
            per_token_ms: 0.0,
            scale: 1.0,
        }
    }
}

impl Latency {
    /// A realistic model: 400 ms to the first token, 15 ms per token.
    pub fn realistic() -> Self {
        Latency {
            time_to_first_token_ms: 400,
            per_token_ms: 15.0,
            scale: 1.0,
        }
    }

    /// The scaled time to first token.
    pub fn first_token(&self) -> Duration {
        Duration::from_secs_f64(self.time_to_first_token_ms as f64 / 1000.0 * self.scale)
    }

    /// The scaled time for `tokens` output tokens.
    pub fn tokens(&self, tokens: u64) -> Duration {
        Duration::from_secs_f64(self.per_token_ms * tokens as f64 / 1000.0 * self.scale)
    }
}

/// Everything the emulator needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmulatorConfig {
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Seed of every random decision (fault rates, text). Request ids are
    /// random regardless, like Bedrock's.
    pub seed: u64,
    /// Quota window length in milliseconds (60 000 like Bedrock).
    pub window_ms: u64,
    /// Extra known foundation model ids (added to [`DEFAULT_MODELS`] unless
    /// `replace_default_models` is set).
    pub models: Vec<String>,
    /// Use only `models`, not the defaults.
    pub replace_default_models: bool,
    /// Accept any model id (quotas still apply per id; models outside the
    /// [catalogue](crate::catalogue) have no output, context or profile
    /// limits).
    pub allow_unknown_models: bool,
    /// Accept bare model ids of models that Bedrock serves only through
    /// inference profiles (Claude 4, Claude 3.7 Sonnet...), which Bedrock
    /// refuses with "Invocation of model ID ... with on-demand throughput
    /// isn't supported...". Off by default, like Bedrock.
    pub allow_on_demand_everywhere: bool,
    /// Quota applied to every key without an entry in `quotas`.
    pub default_quota: Quota,
    /// Quotas per model id or inference profile id (exact id as sent).
    pub quotas: BTreeMap<String, Quota>,
    /// Output reservation for requests without `max_tokens`.
    pub default_max_tokens: u64,
    /// Output tokens generated when `max_tokens` allows it.
    pub output_tokens: u64,
    /// Latency model.
    pub latency: Latency,
    /// Cap on requests in flight; one more is answered with 503 "Too many
    /// connections".
    pub max_connections: Option<usize>,
    /// Largest accepted request body, in bytes, on top of each model's
    /// limit (25 000 000 bytes, Bedrock's InvokeModel limit, by default).
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for requests in flight, in ms.
    pub shutdown_grace_ms: u64,
    /// Fault rules, evaluated in order for every model request.
    pub faults: Vec<FaultRule>,
    /// Start with the quota clock frozen at the UNIX epoch, a boundary of
    /// every window (it then moves only through
    /// [`crate::EmulatorHandle::advance_clock`] or the admin API): makes
    /// window-based tests independent of timing.
    pub frozen_clock: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 0,
            window_ms: 60_000,
            models: Vec::new(),
            replace_default_models: false,
            allow_unknown_models: false,
            allow_on_demand_everywhere: false,
            default_quota: Quota {
                tpm: Some(200_000),
                ..Quota::default()
            },
            quotas: BTreeMap::new(),
            default_max_tokens: 4096,
            output_tokens: 48,
            latency: Latency::default(),
            max_connections: None,
            max_body_bytes: crate::catalogue::MAX_BODY_BYTES,
            shutdown_grace_ms: 5_000,
            faults: Vec::new(),
            frozen_clock: false,
        }
    }
}

impl EmulatorConfig {
    /// A builder starting from the defaults (loopback, free port, 60 s
    /// window, 200 000 TPM per model, no latency, no faults).
    pub fn builder() -> EmulatorConfigBuilder {
        EmulatorConfigBuilder {
            config: EmulatorConfig::default(),
        }
    }

    /// Parses and validates a TOML configuration (every field optional).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: EmulatorConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The quota window.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.window_ms == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        self.default_quota.validate("default")?;
        for (k, q) in &self.quotas {
            q.validate(k)?;
        }
        for (index, rule) in self.faults.iter().enumerate() {
            if !(0.0..=1.0).contains(&rule.rate) {
                return Err(ConfigError::BadRate {
                    index,
                    rate: rule.rate,
                });
            }
        }
        let s = self.latency.scale;
        if !s.is_finite()
            || s < 0.0
            || !self.latency.per_token_ms.is_finite()
            || self.latency.per_token_ms < 0.0
        {
            return Err(ConfigError::BadScale(s));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::ZeroBodyLimit);
        }
        if self.max_connections == Some(0) {
            return Err(ConfigError::ZeroConnections);
        }
        Ok(())
    }
}

/// Builder of [`EmulatorConfig`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct EmulatorConfigBuilder {
    config: EmulatorConfig,
}

impl EmulatorConfigBuilder {
    /// Address to listen on (default `127.0.0.1:0`).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.config.bind = addr;
        self
    }

    /// Seed of every random decision.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Quota window length (default 60 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Adds a known foundation model id.
    pub fn model(mut self, id: impl Into<String>) -> Self {
        self.config.models.push(id.into());
        self
    }

    /// Accept any model id.
    pub fn allow_unknown_models(mut self, allow: bool) -> Self {
        self.config.allow_unknown_models = allow;
        self
    }

    /// Accept bare model ids of profile-only models (see
    /// [`EmulatorConfig::allow_on_demand_everywhere`]).
    pub fn allow_on_demand_everywhere(mut self, allow: bool) -> Self {
        self.config.allow_on_demand_everywhere = allow;
        self
    }

    /// Quota for every key without its own.
    pub fn default_quota(mut self, quota: Quota) -> Self {
        self.config.default_quota = quota;
        self
    }

    /// Quota for one model id or inference profile id.
    pub fn quota(mut self, id: impl Into<String>, quota: Quota) -> Self {
        self.config.quotas.insert(id.into(), quota);
        self
    }

    /// Output reservation for requests without `max_tokens`.
    pub fn default_max_tokens(mut self, tokens: u64) -> Self {
        self.config.default_max_tokens = tokens;
        self
    }

    /// Output tokens generated per answer (capped by `max_tokens`).
    pub fn output_tokens(mut self, tokens: u64) -> Self {
        self.config.output_tokens = tokens;
        self
    }

    /// Latency model.
    pub fn latency(mut self, latency: Latency) -> Self {
        self.config.latency = latency;
        self
    }

    /// Cap on requests in flight.
    pub fn max_connections(mut self, cap: usize) -> Self {
        self.config.max_connections = Some(cap);
        self
    }

    /// Largest accepted request body.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.config.max_body_bytes = bytes;
        self
    }

    /// Adds a fault rule.
    pub fn fault(mut self, rule: FaultRule) -> Self {
        self.config.faults.push(rule);
        self
    }

    /// Freeze the quota clock at start.
    pub fn frozen_clock(mut self, frozen: bool) -> Self {
        self.config.frozen_clock = frozen;
        self
    }

    /// Graceful shutdown wait.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<EmulatorConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultKind;

    #[test]
    fn bad_configurations_fail_when_built() {
        let b = EmulatorConfig::builder;
        assert!(matches!(
            b().window(Duration::ZERO).build(),
            Err(ConfigError::ZeroWindow)
        ));
        assert!(matches!(
            b().quota("m", Quota::tokens(0)).build(),
            Err(ConfigError::ZeroLimit { field: "tpm", .. })
        ));
        assert!(matches!(
            b().fault(FaultRule::new(FaultKind::Reset).rate(1.5))
                .build(),
            Err(ConfigError::BadRate { index: 0, .. })
        ));
        let lat = Latency {
            scale: -1.0,
            ..Latency::default()
        };
        assert!(matches!(
            b().latency(lat).build(),
            Err(ConfigError::BadScale(_))
        ));
        assert!(matches!(
            b().max_body_bytes(0).build(),
            Err(ConfigError::ZeroBodyLimit)
        ));
        assert!(matches!(
            b().max_connections(0).build(),
            Err(ConfigError::ZeroConnections)
        ));
        assert!(b().window(Duration::from_secs(1)).build().is_ok());
    }

    #[test]
    fn toml_files() {
        let c = EmulatorConfig::from_toml_str(
            r#"
            window_ms = 1000
            [default_quota]
            tpm = 10
            rpm = 2
            [quotas."us.amazon.nova-lite-v1:0"]
            tpm = 5
            burndown = 2
            [latency]
            per_token_ms = 1.5
            [[faults]]
            kind = "stream_stall"
            after_events = 2
            ms = 100
            rate = 0.5
            "#,
        )
        .unwrap();
        assert_eq!(c.window(), Duration::from_secs(1));
        assert_eq!(c.default_quota, Quota::tokens(10).with_rpm(2));
        assert_eq!(c.quotas["us.amazon.nova-lite-v1:0"].burndown, Some(2));
        assert_eq!(c.latency.per_token_ms, 1.5);
        assert_eq!(
            c.faults[0].kind,
            FaultKind::StreamStall {
                after_events: 2,
                ms: 100
            }
        );
        assert!(matches!(
            EmulatorConfig::from_toml_str("nonsense = 1"),
            Err(ConfigError::Toml(_))
        ));
        assert!(matches!(
            EmulatorConfig::from_toml_str("[default_quota]\ntpm = 0"),
            Err(ConfigError::ZeroLimit { .. })
        ));
    }
}
