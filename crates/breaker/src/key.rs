//! How a request is mapped to the breaker that guards it.

use tower_bedrock_core::ModelRequest;

/// Picks the breaker key of a request: the model id by default.
///
/// The key is handed to a callback as a `&str` so that extractors that can
/// borrow it from the request (like [`ModelIdKey`]) cost no allocation.
/// Keys name models or routes; never derive one from request content.
///
/// ```
/// use tower_bedrock_breaker::{CircuitBreakLayer, KeyExtractor};
///
/// struct Req {
///     route: String,
/// }
///
/// /// One breaker per route, borrowed from the request: no allocation.
/// #[derive(Clone)]
/// struct ByRoute;
/// impl KeyExtractor<Req> for ByRoute {
///     fn with_key<R>(&self, req: &Req, f: impl FnOnce(&str) -> R) -> R {
///         f(&req.route)
///     }
/// }
///
/// let layer = CircuitBreakLayer::builder()
///     .key_extractor(ByRoute)
///     .build()
///     .unwrap();
/// assert!(layer.handle().is_empty());
/// ```
pub trait KeyExtractor<Req> {
    /// Calls `f` with the key of `req`.
    fn with_key<R>(&self, req: &Req, f: impl FnOnce(&str) -> R) -> R;
}

/// The default extractor: [`ModelRequest::model_id`], so one breaker per
/// model or inference profile id.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelIdKey;

impl<Req: ModelRequest> KeyExtractor<Req> for ModelIdKey {
    fn with_key<R>(&self, req: &Req, f: impl FnOnce(&str) -> R) -> R {
        f(req.model_id())
    }
}

/// An extractor made of a function `Fn(&Req) -> K` where `K: AsRef<str>`
/// (a `String`, a `&'static str`, an `Arc<str>`...). Built by
/// [`CircuitBreakBuilder::key_fn`](crate::CircuitBreakBuilder::key_fn).
#[derive(Debug, Clone, Copy)]
pub struct KeyFn<F>(pub F);

impl<Req, F, K> KeyExtractor<Req> for KeyFn<F>
where
    F: Fn(&Req) -> K,
    K: AsRef<str>,
{
    fn with_key<R>(&self, req: &Req, f: impl FnOnce(&str) -> R) -> R {
        let key = (self.0)(req);
        f(key.as_ref())
    }
}
