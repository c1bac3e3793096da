//! The store's configuration and its builder.

use std::time::Duration;

use tower_bedrock_core::Clock;

use crate::error::BuildError;
use crate::store::RedisStore;

/// Where the windows' time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// Redis's own clock (`TIME`, read inside the scripts): every process
    /// shares one clock, so clock skew between machines does not matter.
    /// The `now` the budget passes is only used to turn "room at" times
    /// back into local instants. The default.
    Redis,
    /// The caller's clock: the `now` the budget passes, turned into wall
    /// time by a [`Clock`]. Processes must have synchronised clocks (the
    /// skew adds to the error bound). With [`Clock::starting_at`] under
    /// tokio's paused time this gives deterministic tests and simulations:
    /// round trips then run on tokio's blocking pool, which keeps a paused
    /// clock from auto-advancing while Redis answers.
    Client(Clock),
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) account: String,
    pub(crate) region: String,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) snapshot_timeout: Duration,
    pub(crate) fresh_snapshots: bool,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) instance_ttl: Duration,
    pub(crate) expected_instances: u64,
    pub(crate) max_batch: usize,
    pub(crate) time: TimeSource,
}

impl Config {
    /// `prefix:{account:region:key}`: one hash tag per budget key, so a
    /// key's hashes stay in one cluster slot (scripts touch them together).
    pub(crate) fn key_base(&self, key: &str) -> String {
        format!(
            "{}:{{{}:{}:{}}}",
            self.prefix, self.account, self.region, key
        )
    }

    pub(crate) fn instances_key(&self) -> String {
        format!(
            "{}:{{{}:{}}}:instances",
            self.prefix, self.account, self.region
        )
    }

    /// Label for metrics and events: `prefix:account:region`.
    pub(crate) fn namespace(&self) -> String {
        format!("{}:{}:{}", self.prefix, self.account, self.region)
    }
}

/// Builds a [`RedisStore`]. Obtained from [`RedisStore::builder`].
///
/// Everything is validated by [`build`](Self::build), which returns a
/// typed [`BuildError`]; nothing connects until the first use (an
/// unreachable Redis is not a configuration error: the store starts
/// degraded and reconnects on its own).
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    config: Config,
}

impl RedisStoreBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        RedisStoreBuilder {
            config: Config {
                url: url.into(),
                prefix: "tower-bedrock".to_owned(),
                account: "default".to_owned(),
                region: "default".to_owned(),
                pool_size: 2,
                connect_timeout: Duration::from_secs(1),
                response_timeout: Duration::from_millis(250),
                snapshot_timeout: Duration::from_millis(25),
                fresh_snapshots: true,
                reconnect_min: Duration::from_millis(50),
                reconnect_max: Duration::from_secs(2),
                heartbeat: Duration::from_secs(1),
                instance_ttl: Duration::from_secs(3),
                expected_instances: 1,
                max_batch: 64,
                time: TimeSource::Redis,
            },
        }
    }

    /// Prefix of every Redis key (default `tower-bedrock`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// The AWS account the quota belongs to (part of every key; default
    /// `default`).
    pub fn account(mut self, account: impl Into<String>) -> Self {
        self.config.account = account.into();
        self
    }

    /// The AWS region the quota belongs to (part of every key; default
    /// `default`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.config.region = region.into();
        self
    }

    /// Connections to Redis (default 2, at most 64). Each is multiplexed:
    /// the budget keys are spread over them, and each key always uses the
    /// same one, so a key's operations are applied in order.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.config.pool_size = n;
        self
    }

    /// Timeout of a connection attempt (default 1 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// Timeout of one round trip (default 250 ms). A round trip that takes
    /// longer counts as a failure: the store turns degraded.
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.config.response_timeout = d;
        self
    }

    /// How long [`snapshot`](tower_bedrock_budget::StoreKey::snapshot)
    /// blocks for a fresh answer before returning the last known state
    /// (default 25 ms).
    pub fn snapshot_timeout(mut self, d: Duration) -> Self {
        self.config.snapshot_timeout = d;
        self
    }

    /// Whether [`snapshot`](tower_bedrock_budget::StoreKey::snapshot)
    /// reads Redis (default true: a blocking round trip, ordered after this
    /// process's queued settlements, as exact as the in-memory store's) or
    /// answers at once from the window sums of the key's last reply (false:
    /// no blocking, possibly one operation behind). The budget's gauges
    /// always use the latter
    /// ([`gauge_snapshot`](tower_bedrock_budget::StoreKey::gauge_snapshot));
    /// with `false`, `Budget::snapshot` is approximate too.
    pub fn fresh_snapshots(mut self, fresh: bool) -> Self {
        self.config.fresh_snapshots = fresh;
        self
    }

    /// Reconnect backoff: first and longest wait between attempts
    /// (defaults 50 ms and 2 s, doubling).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.reconnect_min = min;
        self.config.reconnect_max = max;
        self
    }

    /// How often this instance registers itself as live (default 1 s), and
    /// how long a registration lasts (default 3 s).
    pub fn heartbeat(mut self, every: Duration, ttl: Duration) -> Self {
        self.config.heartbeat = every;
        self.config.instance_ttl = ttl;
        self
    }

    /// Number of live instances to assume before the first heartbeat
    /// answered (default 1). The degraded share is the quota divided by the
    /// last known number of live instances: set this to the replica count
    /// when Redis may be down when the process starts.
    pub fn expected_instances(mut self, n: u64) -> Self {
        self.config.expected_instances = n;
        self
    }

    /// Operations sent in one pipeline per connection (default 64).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.config.max_batch = n;
        self
    }

    /// Where time comes from (default [`TimeSource::Redis`]).
    pub fn time_source(mut self, time: TimeSource) -> Self {
        self.config.time = time;
        self
    }

    /// Validates the configuration and starts the store's background
    /// thread (it owns the connections; see the crate docs).
    pub fn build(self) -> Result<RedisStore, BuildError> {
        let c = &self.config;
        for (what, v) in [
            ("prefix", &c.prefix),
            ("account", &c.account),
            ("region", &c.region),
        ] {
            if v.is_empty() || v.contains(['{', '}']) || v.contains(char::is_whitespace) {
                return Err(BuildError::BadName(what));
            }
        }
        if !(1..=64).contains(&c.pool_size) {
            return Err(BuildError::BadPoolSize(c.pool_size));
        }
        for (what, d) in [
            ("connect timeout", c.connect_timeout),
            ("response timeout", c.response_timeout),
            ("snapshot timeout", c.snapshot_timeout),
            ("reconnect backoff", c.reconnect_min),
            ("heartbeat interval", c.heartbeat),
        ] {
            if d.is_zero() {
                return Err(BuildError::ZeroDuration(what));
            }
        }
        if c.reconnect_min > c.reconnect_max {
            return Err(BuildError::BadBackoff);
        }
        if c.instance_ttl <= c.heartbeat {
            return Err(BuildError::InstanceTtlTooShort);
        }
        if c.expected_instances == 0 {
            return Err(BuildError::ZeroCount("expected instances"));
        }
        if c.max_batch == 0 {
            return Err(BuildError::ZeroCount("max batch"));
        }
        let client = redis::Client::open(c.url.as_str()).map_err(|e| BuildError::BadUrl {
            reason: e.category().to_owned(),
        })?;
        RedisStore::start(self.config, client)
    }
}
