//! tower-bedrock: tower layers that make applications calling Amazon
//! Bedrock survive throttling (429) and outages (503).
//!
//! This facade re-exports the layer crates; see the README for the stack.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use tower_bedrock_breaker as breaker;
pub use tower_bedrock_budget as budget;
pub use tower_bedrock_classify as classify;
pub use tower_bedrock_core as core;
pub use tower_bedrock_fallback as fallback;
pub use tower_bedrock_retry as retry;
pub use tower_bedrock_sdk as sdk;
