//! Tenants: applications sharing one budget with weighted shares.

use std::sync::Arc;

use crate::budget::Budget;
use crate::layer::TokenBudgetLayer;
use crate::store::{BudgetStore, InMemoryStore, TenantTag};

/// Priority class of a tenant: waiting requests of interactive tenants are
/// admitted before those of batch tenants, whatever their shares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Served first.
    #[default]
    Interactive,
    /// Served when no interactive request waits.
    Batch,
}

#[derive(Debug)]
pub(crate) struct TenantInfo {
    pub(crate) name: Arc<str>,
    pub(crate) index: usize,
    pub(crate) weight: u32,
    pub(crate) priority: Priority,
}

impl TenantInfo {
    /// What a store is told about the tenant.
    pub(crate) fn tag(&self) -> TenantTag<'_> {
        TenantTag {
            name: &self.name,
            weight: self.weight,
        }
    }
}

/// A tenant of a [`Budget`]: one application with its weighted share of
/// the shared quota. Make its layer with [`Tenant::layer`].
#[derive(Debug)]
pub struct Tenant<St: BudgetStore = InMemoryStore> {
    pub(crate) budget: Budget<St>,
    pub(crate) info: Arc<TenantInfo>,
}

impl<St: BudgetStore> Clone for Tenant<St> {
    fn clone(&self) -> Self {
        Tenant {
            budget: self.budget.clone(),
            info: self.info.clone(),
        }
    }
}

impl<St: BudgetStore> Tenant<St> {
    /// The tenant's layer.
    pub fn layer(&self) -> TokenBudgetLayer<St> {
        TokenBudgetLayer::new(self.budget.clone(), self.info.clone())
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }
}
