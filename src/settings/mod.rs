//! Typed configuration, one module per section. Load order: the built-in
//! defaults (each section's `Default` impl: the one source of defaults), `--config
//! FILE`, then environment variables `OUTCOME_METER__SECTION__KEY` (and
//! `STRIPE_API_KEY`). Secrets are never logged.

mod clock;
mod database;
mod loading;
mod log;
mod reconcile;
mod reporter;
mod server;
mod stripe;
mod tenants;
#[cfg(test)]
mod tests;
mod validation;
mod worker;

pub use self::stripe::{MeterAggregation, MeterEventApi, StripeSettings};
pub use crate::stripe::mode::StripeMode;
pub use clock::ClockSettings;
pub use database::DatabaseSettings;
pub use log::{LogFormat, LogSettings};
pub use reconcile::ReconcileSettings;
pub use reporter::ReporterSettings;
pub use server::ServerSettings;
pub use tenants::TenantSettings;
pub use worker::WorkerSettings;

use crate::contract::ContractTerms;
use crate::sink::Sink;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The loader's message, with every double-quoted value hidden: a type
    /// error would otherwise echo the value, which may be a secret.
    #[error("could not read configuration: {0}")]
    Load(String),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    /// `config/default.toml` in the working directory says something else than
    /// the built-in defaults: earlier releases read it, this one does not.
    #[error(
        "{path} differs from the built-in defaults, and outcome-meter no longer reads it from the \
         working directory (earlier releases did): pass it with --config {path} (or \
         OUTCOME_METER_CONFIG) to keep using it, or remove it"
    )]
    UnreadDefaults { path: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    pub reporter: ReporterSettings,
    pub stripe: StripeSettings,
    pub metronome: crate::metronome::settings::MetronomeSettings,
    pub contract: ContractTerms,
    pub tenants: Vec<TenantSettings>,
    pub clock: ClockSettings,
    pub log: LogSettings,
    pub reconcile: ReconcileSettings,
    pub verify: crate::helpdesk_api::VerifySettings,
}

impl Settings {
    /// Stripe calls per second for this process: `reporter.rate_per_second`,
    /// or the default of the Stripe mode.
    pub fn rate_per_second(&self) -> f64 {
        self.reporter
            .rate_per_second
            .unwrap_or_else(|| self.stripe.mode().default_rate_per_second())
    }

    /// Calls per second on the v2 meter event stream, apart from
    /// [`Settings::rate_per_second`]: `reporter.stream_rate_per_second`, or the
    /// default of the Stripe mode.
    pub fn stream_rate_per_second(&self) -> f64 {
        self.reporter
            .stream_rate_per_second
            .unwrap_or_else(|| self.stripe.mode().default_stream_rate_per_second())
    }

    /// Whether the v2 meter event stream carries anything: it is configured and
    /// some tenant of Stripe meter events is on the platform's account (those
    /// on a connected account go by v1; see [`MeterEventApi::V2Stream`]).
    pub fn meter_event_stream_in_use(&self) -> bool {
        self.stripe.meter_event_api == MeterEventApi::V2Stream
            && self
                .tenants
                .iter()
                .any(|t| t.sink == Sink::StripeMeters && t.stripe_account.is_none())
    }

    /// Every Stripe account the tenants bill on, once each: the platform's own
    /// (`None`) and each Connect account (`tenants[].stripe_account`); the
    /// platform's alone when there is no tenant.
    pub fn stripe_accounts(&self) -> Vec<Option<String>> {
        let mut accounts: Vec<Option<String>> = self
            .tenants
            .iter()
            .map(|t| t.stripe_account.clone())
            .collect();
        if accounts.is_empty() {
            accounts.push(None);
        }
        accounts.sort();
        accounts.dedup();
        accounts
    }

    pub fn tenant(&self, id: &str) -> Option<&TenantSettings> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// Whether any tenant bills through Stripe (meter events or usage records):
    /// then a mode that sends needs a Stripe key. A deployment whose tenants all
    /// bill on Metronome needs none.
    pub fn uses_stripe(&self) -> bool {
        self.tenants.iter().any(|t| t.sink.is_stripe())
    }

    /// The effective contract of a tenant.
    pub fn contract_for(&self, tenant: &TenantSettings) -> ContractTerms {
        tenant.contract.apply(&self.contract)
    }
}
