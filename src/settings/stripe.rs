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
    /// How meter events are sent: one per call (`v1`, the default) or up to 100
    /// per call on the v2 stream (`v2_stream`).
    pub meter_event_api: MeterEventApi,
    /// The host of the v2 meter event stream.
    pub meter_events_api_base: String,
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

/// How meter events are sent to Stripe (`stripe.meter_event_api`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterEventApi {
    /// `POST /v1/billing/meter_events`: one event per call, one call at a time per
    /// (customer, meter); Stripe allows 1,000 calls per second in live mode.
    #[default]
    V1,
    /// The v2 meter event stream: up to 100 events per call, sent with a
    /// 15-minute session token; 10,000 events per second in live mode. Outcomes
    /// of tenants on a connected account (`stripe_account`) still go by `v1`.
    V2Stream,
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
            meter_event_api: MeterEventApi::V1,
            meter_events_api_base: crate::stripe::meter_stream::DEFAULT_BASE.into(),
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

    /// What is wrong with the v2 meter event stream's settings, when it is chosen.
    pub(super) fn stream_problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let base = &self.meter_events_api_base;
        if !base.starts_with("http://") && !base.starts_with("https://") {
            errs.push(format!(
                "stripe.meter_events_api_base `{base}` is not an http(s) URL"
            ));
        }
        if self.meter_event_api == MeterEventApi::V2Stream && self.api_key.trim().starts_with("rk_")
        {
            errs.push(
                "stripe.meter_event_api = \"v2_stream\" needs a secret key (sk_...): Stripe's /v2 \
                 APIs do not accept restricted keys"
                    .into(),
            );
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
            .field("meter_event_api", &self.meter_event_api)
            .field("meter_events_api_base", &self.meter_events_api_base)
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
