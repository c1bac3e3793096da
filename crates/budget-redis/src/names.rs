//! Metric names of this crate (the budget's own metrics keep their names
//! from [`tower_bedrock_core::names`]). Label `namespace` is
//! `prefix:account:region`.

/// Gauge: connections of the store that are degraded (Redis unreachable,
/// serving from the local share); 0 when all is well.
pub const STORE_DEGRADED: &str = "bedrock_budget_store_degraded";
/// Counter: transitions between connected and degraded. Labels:
/// `namespace`, `to` (`degraded`, `connected`).
pub const STORE_DEGRADED_TRANSITIONS: &str = "bedrock_budget_store_transitions_total";
/// Counter: reservations served from the local share.
pub const STORE_LOCAL_ADMISSIONS: &str = "bedrock_budget_store_local_admissions_total";
/// Gauge: live instances sharing the namespace (from the heartbeats).
pub const STORE_LIVE_INSTANCES: &str = "bedrock_budget_store_live_instances";
/// Counter: settlements found already applied when replayed after a lost
/// reply (skipped: the proof that nothing was counted twice).
pub const STORE_REPLAYS_SKIPPED: &str = "bedrock_budget_store_replays_skipped_total";
