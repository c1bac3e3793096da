//! [`TokenBudgetLayer`] and the [`TokenBudget`] service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_bedrock_core::{Classified, ModelRequest, Rejection, ReportsUsage};
use tower_layer::Layer;
use tower_service::Service;

use crate::admission::Admission;
use crate::budget::Budget;
use crate::estimate::{RequestDemand, TokenEstimator};
use crate::future::ResponseFuture;
use crate::key::KeyState;
use crate::store::{BudgetStore, Charge, InMemoryStore};
use crate::tenant::TenantInfo;

pub use tower_bedrock_core::key::{KeyExtractor, KeyFn, ModelIdKey};

/// Admits requests against a [`Budget`]: reserves their token demand
/// before forwarding them, waits (FIFO per key and tenant) when there is
/// no room, sheds at the budget's maximum wait or the call's deadline
/// (sooner when waiting cannot help), and settles the reservation to the
/// real usage when the response arrives.
///
/// Made by [`Budget::layer`] or [`Tenant::layer`](crate::Tenant::layer).
pub struct TokenBudgetLayer<St: BudgetStore = InMemoryStore, K = ModelIdKey, E = RequestDemand> {
    budget: Budget<St>,
    tenant: Arc<TenantInfo>,
    key: K,
    estimator: E,
}

impl<St: BudgetStore, K: Clone, E: Clone> Clone for TokenBudgetLayer<St, K, E> {
    fn clone(&self) -> Self {
        TokenBudgetLayer {
            budget: self.budget.clone(),
            tenant: self.tenant.clone(),
            key: self.key.clone(),
            estimator: self.estimator.clone(),
        }
    }
}

impl<St: BudgetStore, K, E> fmt::Debug for TokenBudgetLayer<St, K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBudgetLayer")
            .field("tenant", &self.tenant.name)
            .finish_non_exhaustive()
    }
}

impl<St: BudgetStore> TokenBudgetLayer<St> {
    pub(crate) fn new(budget: Budget<St>, tenant: Arc<TenantInfo>) -> Self {
        TokenBudgetLayer {
            budget,
            tenant,
            key: ModelIdKey,
            estimator: RequestDemand::default(),
        }
    }
}

impl<St: BudgetStore, K, E> TokenBudgetLayer<St, K, E> {
    /// Keys the budget with any [`KeyExtractor`] (the same trait the
    /// breaker takes, so one custom key serves both) instead of the model
    /// id.
    pub fn key_extractor<K2>(self, key: K2) -> TokenBudgetLayer<St, K2, E> {
        TokenBudgetLayer {
            budget: self.budget,
            tenant: self.tenant,
            key,
            estimator: self.estimator,
        }
    }

    /// Keys the budget with a function of the request returning a `String`
    /// or a `&'static str` (for example one budget for a model family), as
    /// the breaker's builder does.
    ///
    /// ```
    /// use tower_bedrock_budget::Budget;
    ///
    /// struct Req {
    ///     region: &'static str,
    /// }
    /// let budget = Budget::builder().tokens_per_window(200_000).build().unwrap();
    /// let layer = budget.layer().key_fn(|r: &Req| r.region);
    /// # let _ = layer;
    /// ```
    pub fn key_fn<F>(self, f: F) -> TokenBudgetLayer<St, KeyFn<F>, E> {
        self.key_extractor(KeyFn(f))
    }

    /// The same as [`key_extractor`](Self::key_extractor) (its earlier
    /// name).
    pub fn key_by<K2>(self, key: K2) -> TokenBudgetLayer<St, K2, E> {
        self.key_extractor(key)
    }

    /// Estimates token demand with another estimator.
    pub fn estimator<E2>(self, estimator: E2) -> TokenBudgetLayer<St, K, E2> {
        TokenBudgetLayer {
            budget: self.budget,
            tenant: self.tenant,
            key: self.key,
            estimator,
        }
    }

    /// The budget this layer admits against.
    pub fn budget(&self) -> &Budget<St> {
        &self.budget
    }
}

impl<S, St: BudgetStore, K: Clone, E: Clone> Layer<S> for TokenBudgetLayer<St, K, E> {
    type Service = TokenBudget<S, St, K, E>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenBudget {
            inner,
            budget: self.budget.clone(),
            last: None,
            tenant: self.tenant.clone(),
            key: self.key.clone(),
            estimator: self.estimator.clone(),
        }
    }
}

/// The service made by [`TokenBudgetLayer`]. Clones share the budget.
pub struct TokenBudget<S, St: BudgetStore = InMemoryStore, K = ModelIdKey, E = RequestDemand> {
    inner: S,
    budget: Budget<St>,
    /// The state of the key used last (saves the shared map's lock).
    last: Option<Arc<KeyState<St::Key>>>,
    tenant: Arc<TenantInfo>,
    key: K,
    estimator: E,
}

impl<S: Clone, St: BudgetStore, K: Clone, E: Clone> Clone for TokenBudget<S, St, K, E> {
    fn clone(&self) -> Self {
        TokenBudget {
            inner: self.inner.clone(),
            budget: self.budget.clone(),
            last: self.last.clone(),
            tenant: self.tenant.clone(),
            key: self.key.clone(),
            estimator: self.estimator.clone(),
        }
    }
}

impl<S: fmt::Debug, St: BudgetStore, K, E> fmt::Debug for TokenBudget<S, St, K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBudget")
            .field("inner", &self.inner)
            .field("tenant", &self.tenant.name)
            .finish_non_exhaustive()
    }
}

impl<S, St: BudgetStore, K, E> TokenBudget<S, St, K, E> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The budget.
    pub fn budget(&self) -> &Budget<St> {
        &self.budget
    }
}

impl<S, Req, St, K, E> Service<Req> for TokenBudget<S, St, K, E>
where
    S: Service<Req> + Clone,
    S::Response: ReportsUsage,
    S::Error: Classified + From<Rejection>,
    Req: ModelRequest,
    St: BudgetStore,
    K: KeyExtractor<Req>,
    E: TokenEstimator<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, St::Key>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let name = self.key.key(&req);
        let key = match &self.last {
            Some(k) if *k.name == *name => k.clone(),
            _ => {
                let k = self.budget.shared.key_state(&name);
                self.last = Some(k.clone());
                k
            }
        };
        let demand = self.estimator.estimate(&req);
        let (burndown, default_output) = key.model_rules(req.model_id());
        let tokens = key
            .config
            .policy
            .reservation(demand, default_output, burndown);
        // The readied service goes with the call; a clone stays behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let deadline = tower_bedrock_core::deadline::call_deadline();
        let admission = Admission::new(key, self.tenant.clone(), Charge::call(tokens), deadline);
        ResponseFuture::new(admission, inner, req, burndown, demand.input_tokens)
    }
}
