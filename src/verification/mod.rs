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
    clients: HashMap<(String, String), Arc<dyn HelpdeskApi>>,
    pub settings: VerifySettings,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut on: Vec<_> = self.clients.keys().collect();
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
                let mut p = p.clone();
                if let Some(api) = p.api.as_mut() {
                    api.clock = Some(clock.clone());
                }
                if let Some(client) = helpdesk_api::client_for(name, &p)
                    .map_err(|e| format!("tenant `{}`: provider `{name}`: {e}", t.id))?
                {
                    clients.insert((t.id.clone(), name.clone()), client);
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
        self.clients
            .get(&(tenant.to_string(), provider.to_string()))
    }

    pub fn is_on(&self, tenant: &str, provider: &str) -> bool {
        self.client(tenant, provider).is_some()
    }

    /// No tenant is verified: the confirmer skips the verification pass.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}
