//! Where a tenant's outcomes are billed (`sink` per tenant, issue 15).
//!
//! Everything up to the outbox is the same for every sink; the reporter sends
//! each outcome through the sink frozen on it when it was confirmed
//! (`outcomes.sink`, migration 0008), so a tenant moved to another sink later
//! never sends, reverses or reconciles an outcome somewhere it was not billed.

use crate::settings::TenantSettings;
use serde::{Deserialize, Serialize};

/// A billing system outcome-meter reports to.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Sink {
    /// Stripe Billing Meter events (`POST /v1/billing/meter_events`).
    #[default]
    StripeMeters,
    /// Metronome usage events (`POST /v1/ingest`).
    Metronome,
    /// Stripe's legacy usage records on a subscription item.
    StripeUsageRecords,
}

/// A stored sink this build does not know: an error, never a default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sink `{0}` (known: stripe_meters, metronome, stripe_usage_records)")]
pub struct UnknownSink(pub String);

impl Sink {
    pub const ALL: [Sink; 3] = [
        Sink::StripeMeters,
        Sink::Metronome,
        Sink::StripeUsageRecords,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sink::StripeMeters => "stripe_meters",
            Sink::Metronome => "metronome",
            Sink::StripeUsageRecords => "stripe_usage_records",
        }
    }

    pub fn parse(s: &str) -> Result<Sink, UnknownSink> {
        Sink::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownSink(s.to_string()))
    }

    /// Whether calls go to Stripe (its mode, keys and preflight apply).
    pub fn is_stripe(self) -> bool {
        !matches!(self, Sink::Metronome)
    }

    /// Who is billed at the sink, beyond the Stripe customer: the Metronome
    /// customer (id or ingest alias) or the legacy subscription item. `None` for
    /// meter events (the Stripe customer is the target) and when the tenant's
    /// setting is missing (which [`problems`] reports).
    pub fn target(self, t: &TenantSettings) -> Option<String> {
        match self {
            Sink::StripeMeters => None,
            Sink::Metronome => t.metronome_customer_id.clone(),
            Sink::StripeUsageRecords => t.stripe_subscription_item.clone(),
        }
    }
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a tenant's `sink` needs and lacks (called by `Settings::validate`).
pub fn problems(t: &TenantSettings) -> Option<String> {
    let missing = match t.sink {
        Sink::StripeMeters => return None,
        Sink::Metronome => "metronome_customer_id",
        Sink::StripeUsageRecords => "stripe_subscription_item",
    };
    t.sink
        .target(t)
        .is_none()
        .then(|| format!("tenant `{}`: sink = \"{}\" needs {missing}", t.id, t.sink))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_errors() {
        for s in Sink::ALL {
            assert_eq!(Sink::parse(s.as_str()), Ok(s));
        }
        assert_eq!(Sink::parse("stripe"), Err(UnknownSink("stripe".into())));
        assert_eq!(Sink::default(), Sink::StripeMeters);
    }

    #[test]
    fn a_sink_needs_its_target() {
        let mut t = TenantSettings::generic("acme", "cus_1", "s");
        assert_eq!(problems(&t), None);
        t.sink = Sink::Metronome;
        assert!(problems(&t).is_some_and(|p| p.contains("metronome_customer_id")));
        t.metronome_customer_id = Some("acme-alias".into());
        assert_eq!(problems(&t), None);
        assert_eq!(Sink::Metronome.target(&t).as_deref(), Some("acme-alias"));
        t.sink = Sink::StripeUsageRecords;
        assert!(problems(&t).is_some_and(|p| p.contains("stripe_subscription_item")));
    }
}
