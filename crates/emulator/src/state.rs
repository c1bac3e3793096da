//! State shared by every connection: configuration, quotas, faults,
//! counters.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::{DEFAULT_MODELS, EmulatorConfig, Latency};
use crate::faults::FaultState;
use crate::quota::{QuotaClock, QuotaState};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug, Default)]
        pub(crate) struct Counters { $(pub(crate) $name: AtomicU64,)* }

        /// A snapshot of the emulator's counters (since start or the last
        /// reset).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[non_exhaustive]
        pub struct CounterSnapshot {
            $($(#[$doc])* pub $name: u64,)*
            /// Model requests being served right now (streams included).
            pub in_flight: u64,
        }

        impl Counters {
            pub(crate) fn snapshot(&self, in_flight: u64) -> CounterSnapshot {
                CounterSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* in_flight }
            }
            pub(crate) fn reset(&self) {
                $(self.$name.store(0, Ordering::Relaxed);)*
            }
        }
    };
}

counters! {
    /// Model requests received (every operation, admin calls excluded).
    requests,
    /// Requests admitted by the quota and answered (or streamed).
    admitted,
    /// 429 "Too many tokens" from the TPM quota.
    throttled_tokens,
    /// 429 "Too many requests" from the RPM quota.
    throttled_requests,
    /// 429 "Too many tokens per day" from the day quota.
    throttled_day,
    /// 429 "Model … is currently overloaded" (fault).
    throttled_overloaded,
    /// Other 429s scripted by faults (too many requests/tokens, model not ready).
    throttled_fault,
    /// 503 "Too many connections" from the connection cap.
    connection_cap,
    /// Other 503 ServiceUnavailableException answers.
    unavailable,
    /// 500 InternalServerException answers.
    internal_errors,
    /// 408 ModelTimeoutException answers.
    model_timeouts,
    /// Connections reset without an answer.
    resets,
    /// Bodies truncated on purpose.
    truncated,
    /// Requests stalled before their answer.
    stalls,
    /// Exceptions sent inside event streams.
    stream_exceptions,
    /// Pauses inside event streams.
    stream_stalls,
    /// 400 ServiceQuotaExceededException answers (fault).
    quota_exceeded,
    /// 4xx client errors (access denied, validation, not found).
    client_errors,
    /// Input tokens of admitted requests.
    input_tokens,
    /// Output tokens generated.
    output_tokens,
    /// CountTokens requests answered.
    count_tokens,
}

/// Everything the connections share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) initial: EmulatorConfig,
    pub(crate) known: HashSet<String>,
    pub(crate) quotas: Mutex<QuotaState>,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) latency: Mutex<Latency>,
    pub(crate) counters: Counters,
    pub(crate) in_flight: AtomicU64,
    /// 0 means no cap.
    pub(crate) max_connections: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(config: EmulatorConfig) -> Arc<Self> {
        let mut known: HashSet<String> = config.models.iter().cloned().collect();
        if !config.replace_default_models {
            known.extend(DEFAULT_MODELS.iter().map(|s| (*s).to_owned()));
        }
        Arc::new(Shared {
            known,
            quotas: Mutex::new(QuotaState::new(
                QuotaClock::new(config.frozen_clock),
                config.window(),
                config.default_quota,
                config.quotas.clone(),
                config.default_max_tokens,
            )),
            faults: Mutex::new(FaultState::new(config.seed, &config.faults)),
            latency: Mutex::new(config.latency),
            counters: Counters::default(),
            in_flight: AtomicU64::new(0),
            max_connections: AtomicUsize::new(config.max_connections.unwrap_or(0)),
            initial: config,
        })
    }

    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bump_by(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn counters(&self) -> CounterSnapshot {
        self.counters
            .snapshot(self.in_flight.load(Ordering::Relaxed))
    }

    /// A request id shaped like Bedrock's (a random version 4 UUID). Not
    /// derived from the seed: ids never repeat across runs, like Bedrock's.
    pub(crate) fn request_id(&self) -> String {
        let (a, b) = (fastrand::u64(..), fastrand::u64(..));
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            a as u16 & 0xfff,
            8 | (b >> 62) as u8,
            (b >> 48) as u16 & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }

    /// Back to the startup configuration: counters, usage, quotas, faults
    /// (reseeded), latency and connection cap. The clock is left alone.
    pub(crate) fn reset(&self) {
        self.counters.reset();
        {
            let mut q = self.quotas.lock();
            q.reset();
            q.default_quota = self.initial.default_quota;
            q.quotas = self.initial.quotas.clone();
            q.window = self.initial.window();
        }
        {
            let mut f = self.faults.lock();
            f.reseed(self.initial.seed);
            f.set(&self.initial.faults);
        }
        *self.latency.lock() = self.initial.latency;
        self.max_connections
            .store(self.initial.max_connections.unwrap_or(0), Ordering::Relaxed);
    }

    pub(crate) fn is_known(&self, base: &str) -> bool {
        self.initial.allow_unknown_models || self.known.contains(base)
    }
}

/// Holds one in-flight slot; released on drop.
#[derive(Debug)]
pub(crate) struct InFlight(pub(crate) Arc<Shared>);

impl InFlight {
    /// Takes a slot, or `None` when the cap is reached.
    pub(crate) fn acquire(shared: &Arc<Shared>) -> Option<InFlight> {
        let cap = shared.max_connections.load(Ordering::Relaxed) as u64;
        let now = shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if cap != 0 && now > cap {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(shared.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
