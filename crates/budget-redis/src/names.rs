//! Metric names of this crate, defined with every other name in
//! [`tower_bedrock_core::names`] (the budget's own metrics keep theirs).
//! Label `namespace` is `prefix:account:region`.

pub use tower_bedrock_core::names::{
    STORE_DEGRADED, STORE_DEGRADED_TRANSITIONS, STORE_LIVE_INSTANCES, STORE_LOCAL_ADMISSIONS,
    STORE_REPLAYS_SKIPPED,
};
