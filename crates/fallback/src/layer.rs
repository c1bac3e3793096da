//! The layer and its builder.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_bedrock_core::ErrorClass;
use tower_layer::Layer;

use crate::chain::{Chain, OpenMemo, Target};
use crate::error::BuildError;
use crate::mode::{Streaming, Tagged, Unary};
use crate::profile::Boundary;
use crate::service::ModelFallback;
use crate::triggers::Triggers;

/// Up to this many keyed chains, a request's chain is found by comparing
/// ids in turn rather than through the map.
const LINEAR_LOOKUP_MAX: usize = 16;

/// One target of a built chain, with its shared open-circuit memo.
pub(crate) struct Slot<Req> {
    pub(crate) target: Target<Req>,
    pub(crate) memo: Arc<OpenMemo>,
}

/// The validated configuration every clone of the layer and its services
/// share.
pub(crate) struct Routes<Req> {
    chains: Box<[Box<[Slot<Req>]>]>,
    by_primary: HashMap<Arc<str>, usize>,
    default: Option<usize>,
    pub(crate) triggers: Triggers,
    pub(crate) remember_open: bool,
    pub(crate) chain_deadline: Option<Duration>,
}

impl<Req> Routes<Req> {
    /// The chain a request for `model_id` uses, if any.
    #[inline]
    pub(crate) fn find(&self, model_id: &str) -> Option<usize> {
        let keyed = self.by_primary.len();
        let found = if keyed <= LINEAR_LOOKUP_MAX {
            // A few string comparisons beat hashing the id.
            self.chains[..keyed]
                .iter()
                .position(|c| c[0].target.id() == model_id)
        } else {
            self.by_primary.get(model_id).copied()
        };
        found.or(self.default)
    }

    #[inline]
    pub(crate) fn chain(&self, index: usize) -> &[Slot<Req>] {
        &self.chains[index]
    }
}

impl<Req> fmt::Debug for Routes<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chains: Vec<Vec<&str>> = self
            .chains
            .iter()
            .map(|c| c.iter().map(|s| s.target.id()).collect())
            .collect();
        f.debug_struct("Routes")
            .field("chains", &chains)
            .field("default", &self.default)
            .field("triggers", &self.triggers)
            .field("remember_open", &self.remember_open)
            .field("chain_deadline", &self.chain_deadline)
            .finish()
    }
}

/// Builds a [`ModelFallbackLayer`]; every misconfiguration is refused by
/// [`build`](Self::build) with a [`BuildError`].
pub struct ModelFallbackBuilder<Req> {
    chains: Vec<Chain<Req>>,
    default: Option<Chain<Req>>,
    triggers: Triggers,
    boundary: Option<Boundary>,
    remember_open: bool,
    chain_deadline: Option<Duration>,
}

impl<Req> fmt::Debug for ModelFallbackBuilder<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFallbackBuilder")
            .field("chains", &self.chains)
            .field("default", &self.default)
            .field("triggers", &self.triggers)
            .field("boundary", &self.boundary)
            .field("remember_open", &self.remember_open)
            .field("chain_deadline", &self.chain_deadline)
            .finish()
    }
}

impl<Req> Default for ModelFallbackBuilder<Req> {
    fn default() -> Self {
        ModelFallbackBuilder {
            chains: Vec::new(),
            default: None,
            triggers: Triggers::default(),
            boundary: None,
            remember_open: false,
            chain_deadline: None,
        }
    }
}

impl<Req> ModelFallbackBuilder<Req> {
    /// Adds a chain for the requests whose model id is the chain's primary
    /// (first) id, compared exactly. Several chains may be added, one per
    /// primary.
    #[must_use]
    pub fn chain(mut self, chain: Chain<Req>) -> Self {
        self.chains.push(chain);
        self
    }

    /// The chain for requests whose model id is no chain's primary: their
    /// model id is replaced by this chain's targets in turn. Without one,
    /// such requests pass through unchanged, without fallback.
    #[must_use]
    pub fn default_chain(mut self, chain: Chain<Req>) -> Self {
        self.default = Some(chain);
        self
    }

    /// Replaces the set of trigger classes (default: [`Triggers::default`]).
    #[must_use]
    pub fn triggers(mut self, triggers: Triggers) -> Self {
        self.triggers = triggers;
        self
    }

    /// Adds a trigger class.
    #[must_use]
    pub fn also_on(mut self, class: ErrorClass) -> Self {
        self.triggers = self.triggers.with(class);
        self
    }

    /// Removes a trigger class.
    #[must_use]
    pub fn not_on(mut self, class: ErrorClass) -> Self {
        self.triggers = self.triggers.without(class);
        self
    }

    /// Refuses, at build time, any chain with a target that may route
    /// outside `boundary`.
    #[must_use]
    pub fn boundary(mut self, boundary: Boundary) -> Self {
        self.boundary = Some(boundary);
        self
    }

    /// Remembers, per target, the `retry_after` of a `Local(CircuitOpen)`
    /// rejection, and until it passes skips that target without calling
    /// the inner stack at all (recorded as tried with class
    /// `Local(CircuitOpen)`). Off by default: the breaker below already
    /// answers an open target instantly, so this only saves the request
    /// clone and one pass through the inner layers. The last target of a
    /// chain is never skipped this way, so the caller always gets the inner
    /// stack's own answer. When the memo expires the next request calls the
    /// target again, which is what lets the breaker send its half-open
    /// probe. Rejections without a `retry_after` are not remembered.
    #[must_use]
    pub fn remember_open_circuits(mut self, on: bool) -> Self {
        self.remember_open = on;
        self
    }

    /// Bounds the time a call may spend across targets: once `limit` has
    /// passed since the call started, no further target is tried and the
    /// most relevant error so far is returned (see the crate docs). The
    /// limit is also the call deadline the layers below see
    /// ([`tower_bedrock_core::deadline`]): a retry layer below does not
    /// start a retry, nor a budget a wait, that would cross it. An attempt
    /// in flight is never cut short. This keeps a chain of N targets, each
    /// with its own retry cycle below, from taking N times the latency the
    /// caller accepts. Off by default (a deadline the call already runs
    /// under still applies); a zero limit is refused
    /// ([`BuildError::ZeroChainDeadline`]).
    #[must_use]
    pub fn chain_deadline(mut self, limit: Duration) -> Self {
        self.chain_deadline = Some(limit);
        self
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<ModelFallbackLayer<Req>, BuildError> {
        self.triggers.validate()?;
        if self.chain_deadline == Some(Duration::ZERO) {
            return Err(BuildError::ZeroChainDeadline);
        }
        if self.chains.is_empty() && self.default.is_none() {
            return Err(BuildError::NoChain);
        }
        let mut memos: HashMap<Arc<str>, Arc<OpenMemo>> = HashMap::new();
        let mut by_primary = HashMap::new();
        let mut chains = Vec::with_capacity(self.chains.len() + 1);
        let has_default = self.default.is_some();
        // Keyed chains first, the default chain (if any) last.
        for chain in self.chains.into_iter().chain(self.default) {
            chains.push(compile(chain, self.boundary.as_ref(), &mut memos)?);
        }
        // Configured targets keep their own metric labels in every layer
        // (see `tower_bedrock_core::labels`).
        tower_bedrock_core::labels::register_models(
            chains
                .iter()
                .flat_map(|c| c.iter().map(|slot| slot.target.shared_id().clone())),
        );
        let keyed = if has_default {
            chains.len() - 1
        } else {
            chains.len()
        };
        for (i, chain) in chains.iter().enumerate().take(keyed) {
            let primary = chain[0].target.shared_id().clone();
            if by_primary.insert(primary.clone(), i).is_some() {
                return Err(BuildError::DuplicateChain {
                    primary: primary.to_string(),
                });
            }
        }
        Ok(ModelFallbackLayer {
            routes: Arc::new(Routes {
                default: has_default.then_some(keyed),
                chains: chains.into_boxed_slice(),
                by_primary,
                triggers: self.triggers,
                remember_open: self.remember_open,
                chain_deadline: self.chain_deadline,
            }),
            _mode: PhantomData,
        })
    }
}

fn compile<Req>(
    chain: Chain<Req>,
    boundary: Option<&Boundary>,
    memos: &mut HashMap<Arc<str>, Arc<OpenMemo>>,
) -> Result<Box<[Slot<Req>]>, BuildError> {
    if chain.is_empty() {
        return Err(BuildError::EmptyChain);
    }
    let targets = chain.into_targets();
    for (i, t) in targets.iter().enumerate() {
        let id = t.id();
        if id.is_empty() || id.chars().any(char::is_whitespace) {
            return Err(BuildError::InvalidTarget {
                target: id.to_owned(),
            });
        }
        if targets[..i].iter().any(|o| o.id() == id) {
            return Err(BuildError::DuplicateTarget {
                target: id.to_owned(),
            });
        }
        if let Some(b) = boundary {
            b.check(id)?;
        }
    }
    Ok(targets
        .into_iter()
        .map(|target| {
            let memo = memos.entry(target.shared_id().clone()).or_default().clone();
            Slot { target, memo }
        })
        .collect())
}

/// Tries a chain of models or inference profiles in order: a failure of a
/// [trigger](Triggers) class moves the call on to the next target.
///
/// `M` is the response mode: [`Unary`] (the default) or [`Streaming`]
/// (see [`ModelFallbackLayer::streaming`]). See the [crate docs](crate)
/// for the behaviour.
pub struct ModelFallbackLayer<Req, M = Unary> {
    routes: Arc<Routes<Req>>,
    _mode: PhantomData<fn() -> M>,
}

impl<Req, M> Clone for ModelFallbackLayer<Req, M> {
    fn clone(&self) -> Self {
        ModelFallbackLayer {
            routes: self.routes.clone(),
            _mode: PhantomData,
        }
    }
}

impl<Req, M> fmt::Debug for ModelFallbackLayer<Req, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFallbackLayer")
            .field("routes", &self.routes)
            .finish()
    }
}

impl<Req> ModelFallbackLayer<Req> {
    /// A builder with the default triggers and no chain yet.
    pub fn builder() -> ModelFallbackBuilder<Req> {
        ModelFallbackBuilder::default()
    }

    /// A layer with one chain and the default settings.
    pub fn new(chain: Chain<Req>) -> Result<Self, BuildError> {
        Self::builder().chain(chain).build()
    }

    /// The same layer for streaming responses: a response counts as served
    /// only once its first event arrived, so a stream failing before it
    /// falls back (see [`stream`](crate::stream)).
    ///
    /// Not needed over `tower-bedrock-sdk`'s `BedrockService`: its stream
    /// responses are returned only once their first event has arrived (a
    /// failure before it is the call's error), so the plain layer already
    /// falls back before the first event and never after it. This mode is
    /// for services whose responses open lazily and implement
    /// [`FirstEvent`](crate::stream::FirstEvent).
    pub fn streaming(self) -> ModelFallbackLayer<Req, Streaming> {
        ModelFallbackLayer {
            routes: self.routes,
            _mode: PhantomData,
        }
    }
}

impl<Req, M> ModelFallbackLayer<Req, M> {
    /// The same layer, with every response wrapped in
    /// [`Served`](crate::Served): the served target and the targets tried
    /// before, readable from the response itself. Works with both modes
    /// (`layer.streaming().tagged()`).
    pub fn tagged(self) -> ModelFallbackLayer<Req, Tagged<M>> {
        ModelFallbackLayer {
            routes: self.routes,
            _mode: PhantomData,
        }
    }
}

impl<S, Req, M> Layer<S> for ModelFallbackLayer<Req, M> {
    type Service = ModelFallback<S, Req, M>;

    fn layer(&self, inner: S) -> Self::Service {
        ModelFallback::from_parts(inner, self.routes.clone())
    }
}
