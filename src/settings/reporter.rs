//! `[reporter]`: the loop that drains the outbox to the sinks.

use serde::Deserialize;
use std::time::Duration;

/// `[reporter]`: the loop that drains the outbox to the sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReporterSettings {
    /// Run the Stripe reporter in `serve`.
    pub enabled: bool,
    #[serde(with = "crate::duration_serde")]
    pub poll_interval: Duration,
    /// Outcomes claimed per pass: enough to keep `concurrency` pairs busy
    /// (see `docs/configuration.md`).
    pub batch_size: u32,
    /// Never more than this many Stripe calls per second, per process. Unset: the
    /// mode's default ([`crate::settings::StripeMode::default_rate_per_second`]).
    pub rate_per_second: Option<f64>,
    /// Never more than this many calls per second on Stripe's v2 meter event
    /// stream (`stripe.meter_event_api = "v2_stream"`), each up to 100 events,
    /// apart from `rate_per_second`. Unset: the mode's default
    /// ([`crate::settings::StripeMode::default_stream_rate_per_second`]).
    pub stream_rate_per_second: Option<f64>,
    /// Different (customer, meter) pairs reported at once (one call at a time
    /// per pair, Stripe's rule), or batches of the v2 stream or of Metronome;
    /// sized against Stripe's live meter-event limit in `docs/configuration.md`.
    pub concurrency: usize,
    #[serde(with = "crate::duration_serde")]
    pub backoff_base: Duration,
    #[serde(with = "crate::duration_serde")]
    pub backoff_max: Duration,
    /// After this many failed attempts the outcome is parked as failed.
    pub max_attempts: u32,
}

impl Default for ReporterSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: Duration::from_millis(500),
            batch_size: 500,
            rate_per_second: None,
            stream_rate_per_second: None,
            concurrency: 64,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            max_attempts: 50,
        }
    }
}
