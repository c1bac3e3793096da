//! Metric names emitted through the [`metrics`](https://docs.rs/metrics)
//! facade by the crates of this workspace.
//!
//! Names follow Prometheus conventions and echo Bedrock's CloudWatch metrics
//! (`Invocations`, `InvocationThrottles`, `InvocationClientErrors`,
//! `InvocationServerErrors`, `InvocationLatency`, `InputTokenCount`,
//! `OutputTokenCount`). Labels never carry request content: only model ids,
//! classes, kinds, tenants, states and windows.

/// Counter: errors classified by `ThrottleClassify`.
/// Labels: `class`, `kind`, `model`, `code`.
pub const INVOCATION_ERRORS: &str = "bedrock_invocation_errors_total";
/// Counter: throttles (429) classified. Labels: `kind`, `model`.
pub const INVOCATION_THROTTLES: &str = "bedrock_invocation_throttles_total";
/// Counter: calls sent to Bedrock (every attempt, successes and failures),
/// counted by the facade's `InvocationMetrics` layer. Labels: `model`.
pub const INVOCATIONS: &str = "bedrock_invocations_total";
/// Histogram (seconds): time from an attempt to its response or error.
/// Labels: `model`, `outcome`.
pub const INVOCATION_LATENCY: &str = "bedrock_invocation_latency_seconds";
/// Counter: input tokens reported by responses (cache reads and writes
/// included). Labels: `model`.
pub const INPUT_TOKENS: &str = "bedrock_input_tokens_total";
/// Counter: output tokens reported by responses. Labels: `model`.
pub const OUTPUT_TOKENS: &str = "bedrock_output_tokens_total";

/// Counter: retries scheduled. Labels: `class`, `kind`.
pub const RETRIES: &str = "bedrock_retries_total";
/// Counter: retries refused because the retry budget was empty.
pub const RETRY_BUDGET_EXHAUSTED: &str = "bedrock_retry_budget_exhausted_total";
/// Histogram (seconds): waits chosen before a retry. Labels: `class`.
pub const RETRY_WAIT_SECONDS: &str = "bedrock_retry_wait_seconds";
/// Counter: calls refused by an open circuit breaker that the retry layer
/// waited out before trying again (nothing reached Bedrock; no retry budget
/// is charged). No labels.
pub const RETRY_CIRCUIT_WAITS: &str = "bedrock_retry_circuit_waits_total";

/// Gauge: budget utilisation (used + reserved over limit).
/// Labels: `model` (the budget key), `window` (`tokens`, `requests`, `day`).
pub const BUDGET_UTILIZATION: &str = "bedrock_budget_utilization_ratio";
/// Counter: requests that waited for budget. Labels: `model`, `tenant`.
pub const BUDGET_WAITS: &str = "bedrock_budget_waits_total";
/// Counter: requests shed by the budget. Labels: `model`, `tenant`, `reason`.
pub const BUDGET_SHEDS: &str = "bedrock_budget_sheds_total";
/// Histogram (seconds): time spent waiting for budget. Labels: `model`, `tenant`.
pub const BUDGET_WAIT_SECONDS: &str = "bedrock_budget_wait_seconds";
/// Gauge: the budget's effective (adaptive) token limit. Labels: `model`.
pub const BUDGET_EFFECTIVE_LIMIT: &str = "bedrock_budget_effective_limit_tokens";

/// Gauge: connections of a shared (Redis) budget store that are degraded
/// (Redis unreachable, serving from the local share); 0 when all is well.
/// Labels: `namespace`.
pub const STORE_DEGRADED: &str = "bedrock_budget_store_degraded";
/// Counter: transitions between connected and degraded. Labels:
/// `namespace`, `to` (`degraded`, `connected`).
pub const STORE_DEGRADED_TRANSITIONS: &str = "bedrock_budget_store_transitions_total";
/// Counter: reservations served from the local share. Labels: `namespace`.
pub const STORE_LOCAL_ADMISSIONS: &str = "bedrock_budget_store_local_admissions_total";
/// Gauge: live instances sharing the namespace (from the heartbeats).
/// Labels: `namespace`.
pub const STORE_LIVE_INSTANCES: &str = "bedrock_budget_store_live_instances";
/// Counter: settlements found already applied when replayed after a lost
/// reply (skipped: the proof that nothing was counted twice).
pub const STORE_REPLAYS_SKIPPED: &str = "bedrock_budget_store_replays_skipped_total";

/// Gauge: breaker state per model (0 closed, 1 half-open, 2 open).
/// Labels: `model`.
pub const CIRCUIT_STATE: &str = "bedrock_circuit_state";
/// Counter: breaker state transitions. Labels: `model`, `from`, `to`.
pub const CIRCUIT_TRANSITIONS: &str = "bedrock_circuit_transitions_total";
/// Counter: calls rejected by an open breaker. Labels: `model`.
pub const CIRCUIT_REJECTED: &str = "bedrock_circuit_rejected_total";
/// Counter: calls that failed with `Unavailable(ConnectionPool)` (the
/// client's or the server's connection limit), seen by the breaker and
/// *not* counted as failures of the model. Alert on its rate: the fix is a
/// shared client with a connection cap below Bedrock's limit. Labels:
/// `model`.
pub const CONNECTION_POOL_EXHAUSTED: &str = "bedrock_connection_pool_exhausted_total";

/// Counter: fallbacks from one target to the next. Labels: `from`, `to`,
/// `class`, `kind`.
pub const FALLBACKS: &str = "bedrock_fallback_total";
/// Gauge: requests in flight that are being served by a fallback target.
pub const DEGRADED_IN_FLIGHT: &str = "bedrock_degraded_requests";
/// Counter: responses served by a fallback target. Labels: `target`.
pub const DEGRADED_SERVED: &str = "bedrock_degraded_served_total";
