//! Tenants as the running system sees them: config plus the effective contract.

use crate::contract::ContractTerms;
use crate::settings::{Settings, TenantSettings};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Tenant {
    pub settings: TenantSettings,
    pub contract: ContractTerms,
    pub contract_hash: String,
}

#[derive(Debug, Clone, Default)]
pub struct Tenants {
    by_id: HashMap<String, Tenant>,
}

impl Tenants {
    pub fn from_settings(s: &Settings) -> Tenants {
        let by_id = s
            .tenants
            .iter()
            .map(|t| {
                let contract = s.contract_for(t);
                let contract_hash = contract.hash();
                (
                    t.id.clone(),
                    Tenant {
                        settings: t.clone(),
                        contract,
                        contract_hash,
                    },
                )
            })
            .collect();
        Tenants { by_id }
    }

    pub fn get(&self, id: &str) -> Option<&Tenant> {
        self.by_id.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tenant> {
        self.by_id.values()
    }
}
