//! How a request is mapped to the state a layer keeps per key: one budget
//! and one breaker per model by default.
//!
//! [`TokenBudget`] and [`CircuitBreak`] take the same extractor, so one
//! custom key (per region and model, per model family, one for all) is
//! written once and given to both.
//!
//! [`TokenBudget`]: https://docs.rs/tower-bedrock-budget
//! [`CircuitBreak`]: https://docs.rs/tower-bedrock-breaker
//!
//! ```
//! use std::borrow::Cow;
//! use tower_bedrock_core::key::{KeyExtractor, KeyFn, ModelIdKey};
//!
//! struct Req {
//!     region: &'static str,
//!     model: String,
//! }
//!
//! /// One key per region and model, borrowed where it can be.
//! struct ByRegion;
//! impl KeyExtractor<Req> for ByRegion {
//!     fn key<'a>(&self, req: &'a Req) -> Cow<'a, str> {
//!         Cow::Owned(format!("{}/{}", req.region, req.model))
//!     }
//! }
//!
//! let req = Req { region: "us-east-1", model: "anthropic.claude-3-haiku".into() };
//! assert_eq!(ByRegion.key(&req), "us-east-1/anthropic.claude-3-haiku");
//! // The same from a closure; a `&'static str` costs no allocation.
//! assert_eq!(KeyFn(|_: &Req| "all").key(&req), "all");
//! # let _ = ModelIdKey;
//! ```

use std::borrow::Cow;
use std::fmt;

use crate::ModelRequest;

/// Picks the key of a request. Keys name models, profiles, routes or
/// regions, and appear in metrics and logs: never derive one from request
/// content.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot pick a key for `{Req}`",
    label = "not a key extractor for `{Req}`",
    note = "use `ModelIdKey` (the request's model id, needs `{Req}: ModelRequest`), `KeyFn(|req: &{Req}| ...)` or implement `KeyExtractor<{Req}>`"
)]
pub trait KeyExtractor<Req> {
    /// The key of `req`, borrowed from it where possible.
    fn key<'a>(&self, req: &'a Req) -> Cow<'a, str>;
}

/// The default key: the request's model (or inference profile) id, so each
/// model and each profile has a state of its own, as Bedrock's quotas do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelIdKey;

impl<Req: ModelRequest> KeyExtractor<Req> for ModelIdKey {
    #[inline]
    fn key<'a>(&self, req: &'a Req) -> Cow<'a, str> {
        Cow::Borrowed(req.model_id())
    }
}

/// A key from a function of the request returning a `String` or a
/// `&'static str` (no allocation for the latter).
#[derive(Clone, Copy)]
pub struct KeyFn<F>(pub F);

impl<F> fmt::Debug for KeyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyFn")
    }
}

impl<Req, F, K> KeyExtractor<Req> for KeyFn<F>
where
    F: Fn(&Req) -> K,
    K: Into<Cow<'static, str>>,
{
    #[inline]
    fn key<'a>(&self, req: &'a Req) -> Cow<'a, str> {
        (self.0)(req).into()
    }
}
