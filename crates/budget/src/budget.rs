//! The shared [`Budget`]: its keys, tenants and introspection.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::builder::Config;
use crate::error::BuildError;
use crate::key::KeyState;
use crate::layer::TokenBudgetLayer;
use crate::scheduler::TenantSlot;
use crate::snapshot::KeySnapshot;
use crate::store::{BudgetStore, InMemoryStore, Limits, StoreKey, WindowSpec};
use crate::tenant::{Priority, Tenant, TenantInfo};

/// A token budget shared by every layer, tenant and clone made from it.
///
/// Holds the limits per key (the model id by default), the store that
/// counts the windows ([`InMemoryStore`] unless built with
/// [`BudgetBuilder::build_with_store`](crate::BudgetBuilder::build_with_store)),
/// the waiting queues and the adaptive limits. Cloning is cheap: clones
/// share everything.
pub struct Budget<St: BudgetStore = InMemoryStore> {
    pub(crate) shared: Arc<Shared<St>>,
}

impl<St: BudgetStore> Clone for Budget<St> {
    fn clone(&self) -> Self {
        Budget {
            shared: self.shared.clone(),
        }
    }
}

impl<St: BudgetStore> std::fmt::Debug for Budget<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("spec", &self.shared.config.spec)
            .field("limits", &self.shared.config.limits_of("default"))
            .field("keys", &self.shared.keys.read().len())
            .finish()
    }
}

pub(crate) struct Shared<St: BudgetStore> {
    pub(crate) store: St,
    pub(crate) config: Arc<Config>,
    pub(crate) keys: RwLock<KeyMap<St::Key>>,
    pub(crate) tenants: Mutex<Vec<Arc<TenantInfo>>>,
}

type KeyMap<K> = HashMap<Box<str>, Arc<KeyState<K>>>;

impl<St: BudgetStore> Budget<St> {
    /// The layer of the default tenant (named `default`, weight 1).
    pub fn layer(&self) -> TokenBudgetLayer<St> {
        let info = self.shared.tenants.lock()[0].clone();
        TokenBudgetLayer::new(self.clone(), info)
    }

    /// The tenant `name` with `weight` (its share under contention is
    /// `weight / sum of the weights of the tenants that want more`), in the
    /// interactive priority class. Asking again for the same name gives the
    /// same tenant.
    pub fn tenant(&self, name: &str, weight: u32) -> Result<Tenant<St>, BuildError> {
        self.tenant_with_priority(name, weight, Priority::Interactive)
    }

    /// Like [`tenant`](Self::tenant), in a given priority class.
    pub fn tenant_with_priority(
        &self,
        name: &str,
        weight: u32,
        priority: Priority,
    ) -> Result<Tenant<St>, BuildError> {
        if weight == 0 {
            return Err(BuildError::ZeroWeight {
                tenant: name.to_owned(),
            });
        }
        let mut tenants = self.shared.tenants.lock();
        if let Some(t) = tenants.iter().find(|t| &*t.name == name) {
            if t.weight != weight || t.priority != priority {
                return Err(BuildError::TenantConflict {
                    tenant: name.to_owned(),
                });
            }
            return Ok(Tenant {
                budget: self.clone(),
                info: t.clone(),
            });
        }
        let info = Arc::new(TenantInfo {
            name: Arc::from(name),
            index: tenants.len(),
            weight,
            priority,
        });
        tenants.push(info.clone());
        Ok(Tenant {
            budget: self.clone(),
            info,
        })
    }

    /// The window geometry.
    pub fn spec(&self) -> WindowSpec {
        self.shared.config.spec
    }

    /// The limits `key` is admitted against before any adaptive lowering:
    /// as configured, minus the slack.
    pub fn limits(&self, key: &str) -> Limits {
        self.shared.config.limits_of(key)
    }

    /// The store's handle of `key` (created on first use).
    pub fn store_key(&self, key: &str) -> St::Key
    where
        St::Key: Clone,
    {
        self.shared.key_state(key).store.clone()
    }

    /// Approximate bytes this process holds for `key` (its windows in the
    /// store, when the store keeps them here, plus the budget's own per-key
    /// state: queues, tenant counters, adaptive factors, metric handles).
    /// Constant in the traffic; grows only with the number of tenants that
    /// used the key and the requests waiting. `None` for a key never used.
    pub fn key_memory_bytes(&self, key: &str) -> Option<usize> {
        let ks = self.shared.keys.read().get(key).cloned()?;
        let sched = ks.sched.lock();
        let waiter = std::mem::size_of::<(u64, Option<std::task::Waker>)>() + 16;
        let tenants = sched.tenants.capacity() * std::mem::size_of::<TenantSlot>()
            + sched
                .tenants
                .iter()
                .map(|t| t.queue.len() * waiter)
                .sum::<usize>();
        let model = sched.model.as_ref().map_or(0, |(m, _, _)| m.len());
        Some(
            ks.store.memory_bytes()
                + std::mem::size_of::<KeyState<St::Key>>()
                + 2 * std::mem::size_of::<usize>()
                + 2 * key.len() // the map's key and the state's name
                + std::mem::size_of::<(Box<str>, Arc<()>)>()
                + tenants
                + model,
        )
    }

    /// Introspection of one key: usage, reservations, limits, utilisation,
    /// waiting requests and each tenant's share. `None` for a key never
    /// used. With a remote store this may wait for a round trip; no lock
    /// of the budget is held meanwhile.
    pub fn snapshot(&self, key: &str) -> Option<KeySnapshot> {
        let ks = self.shared.keys.read().get(key).cloned()?;
        let tenants = self.shared.tenants.lock().clone();
        Some(ks.snapshot(&tenants))
    }

    /// Introspection of every key used so far, sorted by key.
    pub fn snapshots(&self) -> Vec<KeySnapshot> {
        let keys: Vec<_> = self.shared.keys.read().values().cloned().collect();
        let tenants = self.shared.tenants.lock().clone();
        let mut v: Vec<_> = keys.iter().map(|k| k.snapshot(&tenants)).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }
}

impl<St: BudgetStore> Shared<St> {
    pub(crate) fn key_state(&self, key: &str) -> Arc<KeyState<St::Key>> {
        if let Some(ks) = self.keys.read().get(key) {
            return ks.clone();
        }
        let mut keys = self.keys.write();
        if let Some(ks) = keys.get(key) {
            return ks.clone();
        }
        let ks = Arc::new(KeyState::new(
            key,
            self.store.key(key, &self.config.spec),
            self.config.clone(),
        ));
        keys.insert(Box::from(key), ks.clone());
        drop(keys);
        crate::gauges::spawn_refresher(&ks);
        ks
    }
}
