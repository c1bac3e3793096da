//! The layer.

use std::sync::Arc;

use tower_layer::Layer;

use crate::config::{CircuitBreakBuilder, Config};
use crate::handle::CircuitBreakHandle;
use crate::key::ModelIdKey;
use crate::registry::Registry;
use crate::service::CircuitBreak;

/// Wraps a service in [`CircuitBreak`]: one circuit breaker per key (the
/// model id by default).
///
/// Every service made by one layer (and by its clones) shares the same
/// breakers, so a layer applied to several clients still has one breaker
/// per model.
#[derive(Debug, Clone)]
pub struct CircuitBreakLayer<K = ModelIdKey> {
    key: K,
    registry: Arc<Registry>,
}

impl CircuitBreakLayer<ModelIdKey> {
    /// A layer with the default settings (see [`CircuitBreakBuilder`]),
    /// keyed by model id.
    pub fn new() -> Self {
        // The defaults are valid (checked by a test), so no validation here.
        CircuitBreakLayer::from_parts(ModelIdKey, Arc::new(Registry::new(Config::default())))
    }

    /// Starts configuring a layer.
    pub fn builder() -> CircuitBreakBuilder<ModelIdKey> {
        CircuitBreakBuilder::new()
    }
}

impl Default for CircuitBreakLayer<ModelIdKey> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> CircuitBreakLayer<K> {
    pub(crate) fn from_parts(key: K, registry: Arc<Registry>) -> Self {
        CircuitBreakLayer { key, registry }
    }

    /// A handle on the layer's breakers.
    pub fn handle(&self) -> CircuitBreakHandle {
        CircuitBreakHandle::new(Arc::clone(&self.registry))
    }
}

impl<S, K: Clone> Layer<S> for CircuitBreakLayer<K> {
    type Service = CircuitBreak<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreak::from_parts(inner, self.key.clone(), Arc::clone(&self.registry))
    }
}
