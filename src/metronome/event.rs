//! A Metronome usage event, built from an outcome (pure).
//!
//! The shape is the ingest API's (`POST /v1/ingest`,
//! <https://docs.metronome.com/api-reference/usage/ingest-events>): four required
//! non-empty strings, `transaction_id` (at most 128 characters), `customer_id`
//! (a Metronome customer id or one of its ingest aliases), `event_type`, and
//! `timestamp` ("an RFC 3339 string with a 4-digit year",
//! <https://docs.metronome.com/guides/events/send-usage-events>), plus an optional
//! `properties` object. Property values are sent as strings: "All keys and values
//! in the `properties` map should be represented as strings, even though the
//! values are often numeric [...] Metronome uses arbitrary precision decimals"
//! (same page).

use crate::time::Millis;
use chrono::{DateTime, SecondsFormat};
use serde::Serialize;
use std::collections::BTreeMap;

/// The longest `transaction_id` Metronome takes (ingest API schema, `maxLength: 128`).
pub const MAX_TRANSACTION_ID: usize = 128;

/// The property a billable metric sums: the outcome's value.
pub const VALUE_PROPERTY: &str = "value";

/// What the outbox knows of an outcome, as the Metronome sink needs it. The
/// reporter maps its claimed outcome into this (the outcome row holds the
/// ticket, provider, resolution sequence and contract hash beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeInput {
    /// The outcome id (`om_…`): the event's `transaction_id`, Metronome's dedupe key.
    pub id: String,
    /// The tenant's `metronome_customer_id`: a customer id or an ingest alias.
    pub customer_id: String,
    /// The meter of the contract or category: the event's `event_type`.
    pub event_type: String,
    pub value: i64,
    /// When the outcome was confirmed: the event's `timestamp`.
    pub confirmed_at: Millis,
    pub ticket_id: String,
    pub provider: String,
    /// The ticket's resolution sequence.
    pub seq: u32,
    /// The hash of the contract version that qualified the outcome.
    pub contract_hash: String,
}

/// One usage event, serialized exactly as `POST /v1/ingest` takes it (an array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageEvent {
    pub transaction_id: String,
    pub customer_id: String,
    pub event_type: String,
    /// RFC 3339, UTC, milliseconds (`2026-01-01T00:00:00.000Z`).
    pub timestamp: String,
    pub properties: BTreeMap<String, String>,
    /// `timestamp` as an instant (not sent): what the window checks read.
    #[serde(skip)]
    pub at_ms: Millis,
}

/// An instant as Metronome's timestamp. Out of chrono's range: the epoch (and
/// `at_ms` the epoch, so the window check parks the event as too old, never sends it).
pub fn rfc3339(at: Millis) -> (String, Millis) {
    match DateTime::from_timestamp_millis(at.as_ms()) {
        Some(t) => (t.to_rfc3339_opts(SecondsFormat::Millis, true), at),
        None => (
            DateTime::UNIX_EPOCH.to_rfc3339_opts(SecondsFormat::Millis, true),
            Millis::EPOCH,
        ),
    }
}

impl UsageEvent {
    /// The event reporting an outcome: `transaction_id` = the outcome id (a resend,
    /// in any batch, is ignored by Metronome for 34 days), `timestamp` = when it was
    /// confirmed, the value and the outcome's identity as string properties.
    pub fn from_outcome(o: &OutcomeInput) -> UsageEvent {
        let (timestamp, at_ms) = rfc3339(o.confirmed_at);
        let properties = BTreeMap::from([
            (VALUE_PROPERTY.to_string(), o.value.to_string()),
            ("ticket".to_string(), o.ticket_id.clone()),
            ("provider".to_string(), o.provider.clone()),
            ("seq".to_string(), o.seq.to_string()),
            ("contract_hash".to_string(), o.contract_hash.clone()),
        ]);
        UsageEvent {
            transaction_id: o.id.clone(),
            customer_id: o.customer_id.clone(),
            event_type: o.event_type.clone(),
            timestamp,
            properties,
            at_ms,
        }
    }

    /// Why Metronome's schema would refuse this event, if it would (checked
    /// before sending, so a certain 400 does not refuse the batch it travels in).
    pub fn problem(&self) -> Option<String> {
        let id = &self.transaction_id;
        if id.is_empty() || id.chars().count() > MAX_TRANSACTION_ID {
            return Some(format!(
                "not sent: transaction_id `{id}` must be 1 to {MAX_TRANSACTION_ID} characters"
            ));
        }
        for (field, v) in [
            ("customer_id", &self.customer_id),
            ("event_type", &self.event_type),
        ] {
            if v.trim().is_empty() {
                return Some(format!(
                    "not sent: {field} is empty (Metronome requires it)"
                ));
            }
        }
        None
    }
}

/// The request body of `POST /v1/ingest` (also what a dry-run records).
pub fn body(events: &[UsageEvent]) -> String {
    serde_json::to_string(events).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> OutcomeInput {
        OutcomeInput {
            id: "om_0123456789abcdef0123456789abcdef".into(),
            customer_id: "d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc".into(),
            event_type: "resolved_ticket".into(),
            value: 3,
            confirmed_at: Millis::from_ms(1_767_225_600_123),
            ticket_id: "42".into(),
            provider: "zendesk".into(),
            seq: 2,
            contract_hash: "c0ffee".into(),
        }
    }

    #[test]
    fn an_outcome_becomes_exactly_this_json() {
        let ev = UsageEvent::from_outcome(&outcome());
        assert_eq!(ev.at_ms, Millis::from_ms(1_767_225_600_123));
        assert_eq!(
            body(std::slice::from_ref(&ev)),
            concat!(
                r#"[{"transaction_id":"om_0123456789abcdef0123456789abcdef","#,
                r#""customer_id":"d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc","#,
                r#""event_type":"resolved_ticket","#,
                r#""timestamp":"2026-01-01T00:00:00.123Z","#,
                r#""properties":{"contract_hash":"c0ffee","provider":"zendesk","seq":"2","ticket":"42","value":"3"}}]"#
            )
        );
        assert_eq!(ev.problem(), None);
    }

    #[test]
    fn timestamps_have_a_four_digit_year_and_bad_ones_are_never_sent_as_now() {
        assert_eq!(rfc3339(Millis::EPOCH).0, "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(Millis::from_ms(i64::MAX)),
            ("1970-01-01T00:00:00.000Z".into(), Millis::EPOCH)
        );
    }

    #[test]
    fn what_metronome_would_refuse_is_named() {
        let mut ev = UsageEvent::from_outcome(&outcome());
        ev.transaction_id = "x".repeat(129);
        assert!(ev.problem().is_some_and(|p| p.contains("1 to 128")));
        ev.transaction_id = "x".repeat(128);
        assert_eq!(ev.problem(), None);
        ev.customer_id = " ".into();
        assert!(ev.problem().is_some_and(|p| p.contains("customer_id")));
    }
}
