//! `[stripe]`: the Stripe account, its mode and key, its meters.

use super::StripeMode;
use crate::providers;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[stripe]`: the Stripe account, its mode and key, its meters.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeSettings {
    /// `live`, `test` or `dry-run`; required (see [`StripeMode`]).
    pub mode: Option<StripeMode>,
    /// Secret or restricted key, of the mode's kind; none in dry-run.
    pub api_key: String,
    /// A file holding the secret key instead (Docker/Kubernetes secrets).
    pub api_key_file: Option<String>,
    pub api_base: String,
    /// Pinned `Stripe-Version`.
    pub api_version: String,
    /// `Stripe-Version` of legacy usage records (before 2025-03-31.basil).
    pub legacy_api_version: String,
    #[serde(with = "crate::duration_serde")]
    pub timeout: Duration,
    /// Optional override: the Stripe meter id (`mtr_…`) to use for an event name
    /// (otherwise the preflight finds the account's active meter of that name).
    pub meter_ids: BTreeMap<String, String>,
    /// Optional: how each meter (by event name) is expected to aggregate; the
    /// preflight reads the formula from Stripe and calls any difference a problem.
    /// Only a `sum` meter can take a correcting event.
    pub meter_aggregations: BTreeMap<String, MeterAggregation>,
    /// The signing secret (`whsec_…`) of the Stripe event destination that sends
    /// meter-event errors to `POST /stripe/events`. Empty: that endpoint answers 404.
    pub webhook_secret: String,
    /// A file holding `webhook_secret` instead (Docker/Kubernetes secrets).
    pub webhook_secret_file: Option<String>,
    /// A `Stripe-Signature` timestamp further than this from now is refused (401).
    #[serde(with = "crate::duration_serde")]
    pub webhook_tolerance: Duration,
    /// How often `serve` runs the Stripe preflight (meters and customers).
    #[serde(with = "crate::duration_serde")]
    pub preflight_every: Duration,
}

/// A Stripe meter's aggregation formula (`default_aggregation.formula`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MeterAggregation {
    /// Sum of the values: a negative correcting event subtracts.
    #[default]
    Sum,
    /// Number of events: a correcting event would add one more.
    Count,
    /// Last value in the period: a correcting event would replace it.
    Last,
}

impl MeterAggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            MeterAggregation::Sum => "sum",
            MeterAggregation::Count => "count",
            MeterAggregation::Last => "last",
        }
    }
}

impl std::fmt::Display for MeterAggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            mode: None,
            api_key: String::new(),
            api_key_file: None,
            api_base: "https://api.stripe.com".into(),
            api_version: "2025-03-31.basil".into(),
            legacy_api_version: crate::stripe::usage_records::rules::LEGACY_API_VERSION.into(),
            timeout: Duration::from_secs(20),
            meter_ids: BTreeMap::new(),
            meter_aggregations: BTreeMap::new(),
            webhook_secret: String::new(),
            webhook_secret_file: None,
            webhook_tolerance: Duration::from_secs(300),
            preflight_every: Duration::from_secs(300),
        }
    }
}

const MODE_REQUIRED: &str = "stripe.mode is required: \"live\", \"test\" or \"dry-run\" \
     (a dry-run records what would be sent and sends nothing; it is never chosen for you)";

impl StripeSettings {
    /// The configured mode. `stripe.mode` is required when settings are loaded
    /// ([`crate::settings::Settings::validate`]); settings built in code without one send nothing.
    pub fn mode(&self) -> StripeMode {
        self.mode.unwrap_or(StripeMode::DryRun)
    }

    pub fn dry_run(&self) -> bool {
        !self.mode().sends()
    }

    /// The Stripe client of this configuration (whatever the mode; see
    /// [`StripeSettings::key_problem`] before calling).
    pub fn client(&self) -> Result<crate::stripe::StripeClient, crate::stripe::StripeError> {
        crate::stripe::StripeClient::new(
            &self.api_base,
            &self.api_key,
            &self.api_version,
            self.timeout,
        )
    }

    /// Why this configuration cannot call Stripe, if it can't: no key for a
    /// mode that sends, a key of the other kind, or a key in dry-run.
    pub fn key_problem(&self, needs_key: bool) -> Option<String> {
        match self.mode {
            None => Some(MODE_REQUIRED.into()),
            Some(mode) => crate::stripe::mode::key_problem(mode, &self.api_key, needs_key),
        }
    }

    /// What is wrong with `stripe.webhook_secret` (when set) and `stripe.webhook_tolerance`.
    pub(super) fn events_problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let secret = &self.webhook_secret;
        if !secret.is_empty() {
            if let Some(p) = providers::secret_problem(secret) {
                errs.push(format!("stripe.webhook_secret {p}"));
            } else if !secret.starts_with("whsec_") {
                errs.push(
                    "stripe.webhook_secret is not an event destination's signing secret (they start with whsec_)"
                        .into(),
                );
            }
        }
        if self.webhook_tolerance.is_zero() {
            errs.push("stripe.webhook_tolerance must be longer than zero".into());
        }
        errs
    }

    /// The aggregation of the meter of `event_name` (`sum` unless configured).
    pub fn aggregation(&self, event_name: &str) -> MeterAggregation {
        self.meter_aggregations
            .get(event_name)
            .copied()
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("mode", &self.mode)
            .field(
                "api_key",
                &if self.api_key.trim().is_empty() {
                    "(none)"
                } else {
                    "(redacted)"
                },
            )
            .field("api_key_file", &self.api_key_file)
            .field("api_base", &self.api_base)
            .field("api_version", &self.api_version)
            .field("legacy_api_version", &self.legacy_api_version)
            .field("timeout", &self.timeout)
            .field("meter_ids", &self.meter_ids)
            .field("meter_aggregations", &self.meter_aggregations)
            .field(
                "webhook_secret",
                &if self.webhook_secret.is_empty() {
                    "(none)"
                } else {
                    "(redacted)"
                },
            )
            .field("webhook_secret_file", &self.webhook_secret_file)
            .field("webhook_tolerance", &self.webhook_tolerance)
            .field("preflight_every", &self.preflight_every)
            .finish()
    }
}
