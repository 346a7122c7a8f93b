//! The normalized ticket event every provider parses into.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What happened to a ticket, in the terms the outcome contract cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The ticket was solved/closed; `resolver` says by whom.
    Resolved,
    /// Status went back to open (or an equivalent), by anyone.
    Reopened,
    /// The customer wrote on the ticket.
    CustomerReplied,
    /// The ticket was assigned or escalated to a human.
    HandedOffToHuman,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Resolved,
        EventKind::Reopened,
        EventKind::CustomerReplied,
        EventKind::HandedOffToHuman,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Resolved => "resolved",
            EventKind::Reopened => "reopened",
            EventKind::CustomerReplied => "customer_replied",
            EventKind::HandedOffToHuman => "handed_off_to_human",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind `{s}`"))
    }
}

/// Who resolved a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolver {
    Ai,
    Human,
}

impl Resolver {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolver::Ai => "ai",
            Resolver::Human => "human",
        }
    }
}

impl fmt::Display for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resolver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ai" => Ok(Resolver::Ai),
            "human" => Ok(Resolver::Human),
            other => Err(format!(
                "unknown resolver `{other}` (expected `ai` or `human`)"
            )),
        }
    }
}

/// One normalized event on one ticket. `event_key` is the dedupe key: the vendor's
/// event id where it has one, otherwise a hash of the identifying fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketEvent {
    pub event_key: String,
    pub ticket_id: String,
    pub kind: EventKind,
    pub occurred_at: DateTime<Utc>,
    /// Set on `Resolved` events.
    pub resolver: Option<Resolver>,
    /// The vendor's id of whoever caused the event, when known.
    pub actor_id: Option<String>,
    pub tags: Vec<String>,
    pub channel: Option<String>,
}

impl TicketEvent {
    /// The order events are applied in: the vendor's time, then a fixed tie-break,
    /// so the result never depends on arrival order.
    pub fn sort_key(&self) -> (DateTime<Utc>, EventKind, &str) {
        (self.occurred_at, self.kind, self.event_key.as_str())
    }
}

/// A composite dedupe key for vendors that send no event id.
pub fn composite_key(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    format!("h:{}", hex::encode(&h.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_strings() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
        }
        assert!("closed".parse::<EventKind>().is_err());
    }

    #[test]
    fn composite_key_is_stable_and_unambiguous() {
        assert_eq!(composite_key(&["a", "b"]), composite_key(&["a", "b"]));
        assert_ne!(composite_key(&["ab", ""]), composite_key(&["a", "b"]));
        assert!(composite_key(&["x"]).starts_with("h:"));
    }
}
