//! Verification before billing: a due resolution of a tenant whose provider has
//! API credentials is checked with the helpdesk's own API before the confirmer
//! bills it (the pass itself is [`crate::worker`]'s `verify_due`).
//!
//! [`Verifier`] holds one API client per (tenant, provider), built once so each
//! keeps its rate budget; [`judge`] holds the pure rules.

pub mod judge;

use crate::clock::SharedClock;
use crate::helpdesk_api::{self, HelpdeskApi, VerifySettings};
use crate::settings::Settings;
use std::collections::HashMap;
use std::sync::Arc;

/// The API clients of every (tenant, provider) with verification on.
#[derive(Clone, Default)]
pub struct Verifier {
    /// By tenant, then provider (looked up without allocating: the confirmer asks per resolution).
    clients: HashMap<String, HashMap<String, Arc<dyn HelpdeskApi>>>,
    pub settings: VerifySettings,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut on: Vec<_> = self
            .clients
            .iter()
            .flat_map(|(t, ps)| ps.keys().map(move |p| (t, p)))
            .collect();
        on.sort();
        f.debug_struct("Verifier")
            .field("on", &on)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Verifier {
    /// Build the clients the settings ask for (they were validated: an error
    /// here is a client that cannot be built, e.g. no TLS roots).
    pub fn from_settings(s: &Settings, clock: &SharedClock) -> Result<Verifier, String> {
        let mut clients = HashMap::new();
        for t in &s.tenants {
            for (name, p) in &t.providers {
                if let Some(client) = helpdesk_api::client_for(name, &with_clock(p, clock))
                    .map_err(|e| format!("tenant `{}`: provider `{name}`: {e}", t.id))?
                {
                    clients
                        .entry(t.id.clone())
                        .or_insert_with(HashMap::new)
                        .insert(name.clone(), client);
                }
            }
        }
        Ok(Verifier {
            clients,
            settings: s.verify.clone(),
        })
    }

    /// The client of a tenant's provider, when its outcomes are verified.
    pub fn client(&self, tenant: &str, provider: &str) -> Option<&Arc<dyn HelpdeskApi>> {
        self.clients.get(tenant)?.get(provider)
    }

    pub fn is_on(&self, tenant: &str, provider: &str) -> bool {
        self.client(tenant, provider).is_some()
    }

    /// No tenant is verified: the confirmer skips the verification pass.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// A provider's settings with the service's clock on its `api` (the clients keep
/// `Retry-After` pauses by it).
pub fn with_clock(
    p: &crate::providers::ProviderSettings,
    clock: &SharedClock,
) -> crate::providers::ProviderSettings {
    let mut p = p.clone();
    if let Some(api) = p.api.as_mut() {
        api.clock = Some(clock.clone());
    }
    p
}

/// What `check` says of a tenant's provider: whether its outcomes are verified
/// before billing, and with what.
pub fn describe(
    provider: &str,
    p: &crate::providers::ProviderSettings,
    s: &VerifySettings,
) -> String {
    use crate::helpdesk_api::{OnUnreachable, VerifyMode};
    match (&p.api, p.verify_mode()) {
        (None, _) => {
            "billed on webhooks alone (no [api] credentials: no verification, no backfill)".into()
        }
        (Some(api), VerifyMode::Off) => format!(
            "verify = \"off\": billed on webhooks alone; backfill through {}",
            api.base_url.as_deref().unwrap_or("the vendor's API")
        ),
        (Some(api), VerifyMode::BeforeBilling) => format!(
            "each due outcome is checked with the {provider} API ({}) before it is billed; \
             an unreachable helpdesk holds it up to {}, then {}",
            api.base_url
                .as_deref()
                .unwrap_or("the vendor's default host"),
            humantime::format_duration(s.max_hold),
            match s.on_unreachable {
                OnUnreachable::Hold => "keeps holding it (verify.on_unreachable = \"hold\")",
                OnUnreachable::Bill =>
                    "bills it marked \"not verified\" (verify.on_unreachable = \"bill\")",
            }
        ),
    }
}
