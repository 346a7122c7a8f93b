//! `[reconcile]`: the periodic comparison with Stripe.

use serde::Deserialize;
use std::time::Duration;

/// `[reconcile]`: the periodic comparison with Stripe's meter summaries that `serve`
/// runs (the reporter role), for what no event destination names: Stripe's rejection
/// events name only samples of the events they reject.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileSettings {
    /// How often; `"none"`: never. Runs only with a Stripe key and `[stripe.meter_ids]`.
    #[serde(with = "crate::duration_serde::none_or")]
    pub every: Option<Duration>,
    /// How far back each run compares (by meter-event timestamp).
    #[serde(with = "crate::duration_serde")]
    pub window: Duration,
    /// The most recent stretch left out: Stripe's summaries are eventually consistent.
    #[serde(with = "crate::duration_serde")]
    pub lag: Duration,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            every: Some(Duration::from_secs(3600)),
            window: Duration::from_secs(48 * 3600),
            lag: Duration::from_secs(15 * 60),
        }
    }
}

impl ReconcileSettings {
    /// What is wrong with `[reconcile]`.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.every.is_some_and(|d| d < Duration::from_secs(60)) {
            errs.push("reconcile.every must be at least 1m (or \"none\")".into());
        }
        if self.window <= self.lag {
            errs.push(format!(
                "reconcile.window ({}) must be longer than reconcile.lag ({})",
                humantime::format_duration(self.window),
                humantime::format_duration(self.lag)
            ));
        }
        errs
    }
}
