//! Outcomes older than Stripe accepts (35 days): the reporter parks them
//! instead of sending (see [`super::limits`]); an operator can decide to bill
//! them now, at the current time, with the original time kept in the evidence
//! (`outcome-meter replay --too-old`). Outcomes with a call whose answer was
//! lost or a 5xx are set apart: Stripe may have recorded them, and an event
//! with the same identifier sent more than 24 hours later could be counted
//! again, so they are billed late only when the operator says so after checking.

use crate::store::{Store, StoreError, TooOld};
use crate::time::Millis;
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum RebillError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("outcome {id}: stored evidence is not a JSON object")]
    Evidence { id: String },
}

/// Which too-old outcomes can be billed late now.
#[derive(Debug, Default)]
pub struct Plan {
    /// Never reached Stripe as far as we know: safe to bill at the current time.
    pub ready: Vec<TooOld>,
    /// A call's answer was lost or was a 5xx: Stripe may have it already.
    pub in_doubt: Vec<TooOld>,
}

/// Split the too-old outcomes; `include_in_doubt` bills those too.
pub fn plan(outcomes: Vec<TooOld>, include_in_doubt: bool) -> Plan {
    let (in_doubt, ready): (Vec<_>, Vec<_>) = outcomes
        .into_iter()
        .partition(|o| o.attempts_in_doubt > 0 && !include_in_doubt);
    Plan { ready, in_doubt }
}

/// The evidence of an outcome billed late: the original one, plus what the
/// operator decided and when, and the time it was first confirmed.
pub fn late_evidence(evidence: &str, first_confirmed_at: Millis, now: Millis) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(evidence).ok()?;
    let o = v.as_object_mut()?;
    o.insert(
        "billed_late".into(),
        serde_json::json!({
            "decision": "operator",
            "billed_at": now,
            "first_confirmed_at": first_confirmed_at,
            "reason": "older than Stripe accepts (35 days); billed at the current time",
        }),
    );
    Some(v.to_string())
}

/// In words, for statements and `explain`: when it was first confirmed and
/// when it was billed instead. `None` when the outcome was billed on time.
pub fn late_note(evidence: &serde_json::Value) -> Option<String> {
    let late = evidence.get("billed_late")?;
    let fmt = |ms: Option<i64>| {
        ms.and_then(DateTime::<Utc>::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "?".into())
    };
    Some(format!(
        "Billed late by operator decision on {}: first confirmed {}, past Stripe's 35-day limit.",
        fmt(late["billed_at"].as_i64()),
        fmt(late["first_confirmed_at"].as_i64()),
    ))
}

/// Bill each outcome of `ready` at `now` (ms). Returns how many were queued
/// (one changed meanwhile, e.g. sent by a reporter, is left as it is).
pub async fn rebill(store: &Store, ready: &[TooOld], now: Millis) -> Result<usize, RebillError> {
    let mut n = 0;
    for o in ready {
        let evidence = late_evidence(&o.evidence, o.confirmed_at, now)
            .ok_or_else(|| RebillError::Evidence { id: o.id.clone() })?;
        if store
            .rebill_at(&o.id, o.confirmed_at, now, &evidence)
            .await?
        {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn too_old(id: &str, in_doubt: i64) -> TooOld {
        TooOld {
            id: id.into(),
            tenant: "t".into(),
            confirmed_at: Millis::EPOCH,
            evidence: "{}".into(),
            state: crate::lifecycle::OutcomeState::Failed,
            attempts_in_doubt: in_doubt,
        }
    }

    #[test]
    fn outcomes_stripe_may_have_are_set_apart_unless_included() {
        let p = plan(vec![too_old("a", 0), too_old("b", 2)], false);
        assert_eq!(p.ready.len(), 1);
        assert_eq!(p.in_doubt.len(), 1);
        assert_eq!(p.in_doubt[0].id, "b");
        let p = plan(vec![too_old("a", 0), too_old("b", 2)], true);
        assert_eq!(p.ready.len(), 2);
    }

    #[test]
    fn late_evidence_keeps_the_original_and_says_so_in_words() {
        let e = late_evidence(
            r#"{"seq":1,"events":[]}"#,
            Millis::from_ms(1_700_000_000_000),
            Millis::from_ms(1_767_225_600_000),
        )
        .expect("an object");
        let v: serde_json::Value = serde_json::from_str(&e).expect("json");
        assert_eq!(v["seq"], 1);
        assert_eq!(v["billed_late"]["first_confirmed_at"], 1_700_000_000_000i64);
        let note = late_note(&v).expect("a note");
        assert!(note.contains("2026-01-01 00:00 UTC"), "{note}");
        assert!(note.contains("2023-11-14"), "{note}");
        assert!(late_evidence("[1]", Millis::EPOCH, Millis::EPOCH).is_none());
        assert!(late_note(&serde_json::json!({"seq": 1})).is_none());
    }
}
