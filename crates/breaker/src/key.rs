//! How a request is mapped to the breaker that guards it: the
//! [`KeyExtractor`] of `tower-bedrock-core`, shared with the token budget,
//! so one custom key serves both layers.
//!
//! ```
//! use std::borrow::Cow;
//! use tower_bedrock_breaker::{CircuitBreakLayer, KeyExtractor};
//!
//! struct Req {
//!     route: String,
//! }
//!
//! /// One breaker per route, borrowed from the request: no allocation.
//! #[derive(Clone)]
//! struct ByRoute;
//! impl KeyExtractor<Req> for ByRoute {
//!     fn key<'a>(&self, req: &'a Req) -> Cow<'a, str> {
//!         Cow::Borrowed(&req.route)
//!     }
//! }
//!
//! let layer = CircuitBreakLayer::builder()
//!     .key_extractor(ByRoute)
//!     .build()
//!     .unwrap();
//! assert!(layer.handle().is_empty());
//! ```

pub use tower_bedrock_core::key::{KeyExtractor, KeyFn, ModelIdKey};
