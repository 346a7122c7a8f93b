//! `[[tenants]]`: one per customer, with its helpdesks (providers) and contract changes.

use crate::contract::{ContractOverrides, ContractTerms};
use crate::providers;
use crate::providers::ProviderSettings;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One `[[tenants]]` entry: a customer of the vendor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub id: String,
    /// The Stripe customer billed for this tenant's outcomes.
    pub stripe_customer_id: String,
    /// Stripe Connect: the connected account (`acct_…`) the customer and meters
    /// live on, sent as the `Stripe-Account` header. None: the platform's own.
    #[serde(default)]
    pub stripe_account: Option<String>,
    /// Metronome: the customer billed for this tenant's outcomes, by its id or one
    /// of its ingest aliases. None: the tenant is not billed through Metronome.
    #[serde(default)]
    pub metronome_customer_id: Option<String>,
    /// Legacy usage records: the subscription item (`si_…`) of the tenant's legacy metered price.
    #[serde(default)]
    pub stripe_subscription_item: Option<String>,
    /// Where this tenant's outcomes are billed: `stripe_meters` (the default),
    /// `metronome` (needs `metronome_customer_id`) or `stripe_usage_records`
    /// (needs `stripe_subscription_item`).
    #[serde(default)]
    pub sink: crate::sink::Sink,
    /// Helpdesks this tenant sends from, by provider name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSettings>,
    /// Changes to the global `[contract]` for this tenant.
    #[serde(default)]
    pub contract: ContractOverrides,
}

impl TenantSettings {
    /// A tenant on the generic provider alone, signed with `secret`, under the
    /// global contract (the demo and the benchmarks use this).
    pub fn generic(id: &str, stripe_customer_id: &str, secret: &str) -> TenantSettings {
        TenantSettings {
            id: id.into(),
            stripe_customer_id: stripe_customer_id.into(),
            stripe_account: None,
            metronome_customer_id: None,
            stripe_subscription_item: None,
            sink: crate::sink::Sink::StripeMeters,
            providers: [(
                "generic".to_string(),
                ProviderSettings {
                    secrets: vec![secret.into()],
                    ..Default::default()
                },
            )]
            .into(),
            contract: ContractOverrides::default(),
        }
    }
}

impl TenantSettings {
    /// What is wrong with this tenant (`listed_before`: another tenant has its
    /// id), its helpdesks and its contract over the global `[contract]`.
    pub(super) fn problems(&self, listed_before: bool, global: &ContractTerms) -> Vec<String> {
        let mut errs = Vec::new();
        if self.id.trim().is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            errs.push(format!(
                "tenant id `{}` must be non-empty letters, digits, `-`, `_` or `.`",
                self.id
            ));
        }
        if listed_before {
            errs.push(format!("tenant `{}` is listed twice", self.id));
        }
        if self.stripe_customer_id.trim().is_empty() {
            errs.push(format!("tenant `{}` has no stripe_customer_id", self.id));
        }
        errs.extend(crate::sink::problems(self));
        if let Some(account) = &self.stripe_account {
            if !account.starts_with("acct_")
                || account.len() < 6
                || !account
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                errs.push(format!(
                    "tenant `{}`: stripe_account `{account}` is not a connected account id (acct_…)",
                    self.id
                ));
            }
        }
        if self.providers.is_empty() {
            errs.push(format!(
                "tenant `{}` has no [tenants.providers.<name>] section",
                self.id
            ));
        }
        for (name, p) in &self.providers {
            errs.extend(self.provider_problems(name, p));
        }
        for e in self.contract.apply(global).validate() {
            errs.push(format!("tenant `{}`: {e}", self.id));
        }
        errs
    }

    /// What is wrong with the tenant's `[tenants.providers.<name>]` section.
    fn provider_problems(&self, name: &str, p: &ProviderSettings) -> Vec<String> {
        let mut errs = Vec::new();
        match providers::lookup(name) {
            None => {
                let known: Vec<_> = providers::all().iter().map(|p| p.name()).collect();
                errs.push(format!(
                    "tenant `{}`: unknown provider `{name}` (known: {})",
                    self.id,
                    known.join(", ")
                ));
            }
            Some(provider) => {
                for problem in provider
                    .check_settings(p)
                    .into_iter()
                    .chain(crate::helpdesk_api::problems(name, p))
                {
                    errs.push(format!("tenant `{}`: provider `{name}` {problem}", self.id));
                }
            }
        }
        errs
    }
}
