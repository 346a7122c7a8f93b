//! Deterministic identity of an outcome: the Stripe meter event `identifier`
//! and the root of every idempotency key. Never a clock or random value.

use sha2::{Digest, Sha256};

pub fn outcome_id(tenant: &str, provider: &str, ticket_id: &str, seq: u32) -> String {
    let mut h = Sha256::new();
    for part in [tenant, provider, ticket_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(seq.to_be_bytes());
    format!("om_{}", hex::encode(&h.finalize()[..16]))
}

/// The `Idempotency-Key` of the `call`-th Stripe call of one kind about one
/// outcome. Each call that got an answer (or none) uses a new one: Stripe saves
/// the first result under a key, a 500 included, and replays it for 24 hours, so
/// a retry under the same key could never get through. A retry after a crash,
/// before the call was recorded, reuses the key (and gets Stripe's saved answer).
/// Stripe's duplicate check on the meter event's `identifier` is what keeps a
/// retry from billing twice.
pub fn idempotency_key(outcome_id: &str, purpose: &str, call: u32) -> String {
    format!("{outcome_id}:{purpose}:{call}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = outcome_id("acme", "zendesk", "42", 1);
        assert_eq!(a, outcome_id("acme", "zendesk", "42", 1));
        assert_ne!(a, outcome_id("acme", "zendesk", "42", 2));
        assert_ne!(a, outcome_id("acme", "intercom", "42", 1));
        assert_ne!(outcome_id("ab", "c", "1", 1), outcome_id("a", "bc", "1", 1));
        assert!(a.starts_with("om_") && a.len() == 35);
        assert!(a.len() <= 100, "Stripe identifiers are limited in length");
    }

    #[test]
    fn every_call_has_its_own_key() {
        let id = outcome_id("acme", "zendesk", "42", 1);
        let first = idempotency_key(&id, "meter_event", 0);
        assert_ne!(first, idempotency_key(&id, "meter_event", 1));
        assert_ne!(first, idempotency_key(&id, "cancel", 0));
        assert!(first.len() <= 255, "Stripe's limit on idempotency keys");
    }
}
