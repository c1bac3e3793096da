//! Targets and chains of targets.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tower_bedrock_core::ModelRequest;

use crate::profile::{Geo, cross_region_ids};

type Transform<Req> = Arc<dyn Fn(&mut Req) + Send + Sync>;

/// One target of a chain: a model id or inference profile id, with an
/// optional rewrite of the request sent to it.
///
/// ```
/// use tower_bedrock_fallback::Target;
/// # #[derive(Clone)] struct MyRequest;
/// let haiku: Target<MyRequest> = Target::new("anthropic.claude-3-5-haiku-20241022-v1:0")
///     .max_tokens(1024);
/// assert_eq!(haiku.id(), "anthropic.claude-3-5-haiku-20241022-v1:0");
/// ```
pub struct Target<Req> {
    id: Arc<str>,
    max_tokens: Option<u64>,
    transform: Option<Transform<Req>>,
}

impl<Req> Clone for Target<Req> {
    fn clone(&self) -> Self {
        Target {
            id: self.id.clone(),
            max_tokens: self.max_tokens,
            transform: self.transform.clone(),
        }
    }
}

impl<Req> fmt::Debug for Target<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("id", &self.id)
            .field("max_tokens", &self.max_tokens)
            .field("transform", &self.transform.is_some())
            .finish()
    }
}

impl<Req> Target<Req> {
    /// A target that sends the request unchanged but for its model id.
    pub fn new(id: impl AsRef<str>) -> Self {
        Target {
            id: Arc::from(id.as_ref()),
            max_tokens: None,
            transform: None,
        }
    }

    /// Caps the request's output tokens for this target (for a smaller
    /// model): the request's `max_tokens` becomes the smaller of its own
    /// value and `cap`, or `cap` when it has none. Applied through
    /// [`ModelRequest::set_max_output_tokens`].
    #[must_use]
    pub fn max_tokens(mut self, cap: u64) -> Self {
        self.max_tokens = Some(cap);
        self
    }

    /// Rewrites the request sent to this target (after its model id and
    /// output cap are set). Called on a fresh clone of the caller's request
    /// for every attempt of this target.
    ///
    /// It cannot change the model id: the layer checks the id after the
    /// rewrite and puts the target's id back if it changed (with a warning
    /// naming both ids), so that a chain checked against a
    /// [`Boundary`](crate::profile::Boundary) stays inside it. Name another
    /// model with another target.
    #[must_use]
    pub fn map_request<F>(mut self, f: F) -> Self
    where
        F: Fn(&mut Req) + Send + Sync + 'static,
    {
        self.transform = Some(Arc::new(f));
        self
    }

    /// The model or inference profile id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn shared_id(&self) -> &Arc<str> {
        &self.id
    }

    /// Rewrites `req` for this target.
    #[inline]
    pub(crate) fn prepare(&self, req: &mut Req)
    where
        Req: ModelRequest,
    {
        if req.model_id() != &*self.id {
            req.set_model_id(&self.id);
        }
        if let Some(cap) = self.max_tokens {
            let current = req.token_demand().max_output_tokens;
            let capped = current.map_or(cap, |c| c.min(cap));
            if current != Some(capped) {
                req.set_max_output_tokens(capped);
            }
        }
        if let Some(t) = &self.transform {
            t(req);
            if req.model_id() != &*self.id {
                tracing::warn!(
                    target_id = &*self.id,
                    rewritten_to = req.model_id(),
                    "fallback target's map_request changed the model id: the target's id is put back"
                );
                req.set_model_id(&self.id);
            }
        }
    }
}

impl<Req> From<&str> for Target<Req> {
    fn from(id: &str) -> Self {
        Target::new(id)
    }
}

impl<Req> From<String> for Target<Req> {
    fn from(id: String) -> Self {
        Target::new(id)
    }
}

/// An ordered list of targets: the first is the primary, the others are
/// tried in order when it fails with a [trigger](crate::Triggers) class.
///
/// A chain is keyed by its primary id: requests whose model id is the
/// primary's use it (see
/// [`ModelFallbackBuilder::chain`](crate::ModelFallbackBuilder::chain)).
///
/// ```
/// use tower_bedrock_fallback::{Chain, profile::Geo};
/// # #[derive(Clone)] struct MyRequest;
/// // global.sonnet -> us.sonnet -> sonnet -> us.haiku (capped at 1024 tokens)
/// let chain: Chain<MyRequest> =
///     Chain::cross_region("anthropic.claude-sonnet-4-20250514-v1:0", &[Geo::Global, Geo::Us], true)
///         .then(tower_bedrock_fallback::Target::new("us.anthropic.claude-3-5-haiku-20241022-v1:0").max_tokens(1024));
/// assert_eq!(chain.primary(), Some("global.anthropic.claude-sonnet-4-20250514-v1:0"));
/// assert_eq!(chain.len(), 4);
/// ```
pub struct Chain<Req> {
    targets: Vec<Target<Req>>,
}

impl<Req> Clone for Chain<Req> {
    fn clone(&self) -> Self {
        Chain {
            targets: self.targets.clone(),
        }
    }
}

impl<Req> fmt::Debug for Chain<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.targets).finish()
    }
}

impl<Req> Default for Chain<Req> {
    fn default() -> Self {
        Chain::new()
    }
}

impl<Req> Chain<Req> {
    /// An empty chain (refused by the builder until a target is added).
    pub fn new() -> Self {
        Chain {
            targets: Vec::new(),
        }
    }

    /// A chain of the given targets, in order.
    pub fn of<I, T>(targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<Target<Req>>,
    {
        Chain {
            targets: targets.into_iter().map(Into::into).collect(),
        }
    }

    /// The same model through each scope in order, then (if `in_region`)
    /// in the client's own region: `global.X -> us.X -> X` for
    /// `cross_region(X, &[Geo::Global, Geo::Us], true)`. `base` may be any
    /// id of the model (an existing prefix is replaced).
    pub fn cross_region(base: &str, scopes: &[Geo], in_region: bool) -> Self {
        Chain::of(cross_region_ids(base, scopes, in_region))
    }

    /// Appends a target.
    #[must_use]
    pub fn then(mut self, target: impl Into<Target<Req>>) -> Self {
        self.targets.push(target.into());
        self
    }

    /// Appends every target of another chain (for example a smaller model's
    /// own cross-region chain).
    #[must_use]
    pub fn then_chain(mut self, other: Chain<Req>) -> Self {
        self.targets.extend(other.targets);
        self
    }

    /// Applies an output cap to every target appended so far that has
    /// none (see [`Target::max_tokens`]).
    #[must_use]
    pub fn max_tokens(mut self, cap: u64) -> Self {
        for t in &mut self.targets {
            if t.max_tokens.is_none() {
                t.max_tokens = Some(cap);
            }
        }
        self
    }

    /// The primary (first) target id.
    pub fn primary(&self) -> Option<&str> {
        self.targets.first().map(Target::id)
    }

    /// The targets, in order.
    pub fn targets(&self) -> &[Target<Req>] {
        &self.targets
    }

    /// How many targets the chain has.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the chain has no target.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub(crate) fn into_targets(self) -> Vec<Target<Req>> {
        self.targets
    }
}

/// What the layer remembers of a target whose breaker said it is open.
///
/// `armed` lets the common case (nothing remembered) skip both the lock
/// and the clock read.
#[derive(Debug, Default)]
pub(crate) struct OpenMemo {
    armed: AtomicBool,
    until: Mutex<Option<Instant>>,
}

impl OpenMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the target is known open now.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        if !self.armed.load(Ordering::Acquire) {
            return false;
        }
        let mut g = self.lock();
        match *g {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *g = None;
                self.armed.store(false, Ordering::Release);
                false
            }
            None => false,
        }
    }

    /// Remembers the target open until `until` (the later of two notes
    /// wins).
    pub(crate) fn remember(&self, until: Instant) {
        let mut g = self.lock();
        if g.is_none_or(|u| u < until) {
            *g = Some(until);
        }
        self.armed.store(true, Ordering::Release);
    }
}
