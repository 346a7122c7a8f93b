//! The clause that decided a resolution, as data: the contract's own clause, or what
//! overruled it afterwards (a reopen inside the window, a cap).

use crate::contract::Clause;
use crate::lifecycle::DecisionStatus;
use crate::store::DecisionRow;
use crate::ticket::Reopen;
use serde::Serialize;

/// Why a resolution is (or is not, or not yet) an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecidingClause {
    /// `reopened_within_window`, `capped`, `awaiting_reopen_window` (billable if not
    /// reopened before the window ends), or the contract clause's code (`billable`,
    /// `excluded_tag`, `resolver_not_billable`, ...).
    pub kind: &'static str,
    /// The decision in plain words.
    pub text: String,
    /// The reopen that ended the resolution inside its window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reopen: Option<Reopen>,
    /// What the contract's clauses said of the resolution itself, with their fields
    /// (`{"clause": "excluded_tag", "tag": "spam"}`).
    pub contract_clause: Clause,
}

/// The deciding clause of a recorded decision. The kinds are the reasons a statement
/// gives for a resolution not billed.
pub fn deciding_clause(d: &DecisionRow) -> DecidingClause {
    let kind = match d.status {
        DecisionStatus::Reopened => "reopened_within_window",
        DecisionStatus::Capped => "capped",
        DecisionStatus::InWindow if d.billable => "awaiting_reopen_window",
        DecisionStatus::Held => "held_for_verification",
        DecisionStatus::InWindow | DecisionStatus::Confirmed | DecisionStatus::NotBillable => {
            d.clause.code()
        }
    };
    DecidingClause {
        kind,
        text: d.detail.clone(),
        reopen: d.reopened.clone(),
        contract_clause: d.clause.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use chrono::{DateTime, Utc};

    fn decision(status: DecisionStatus, billable: bool, clause: Clause) -> DecisionRow {
        DecisionRow {
            ticket_id: "T1".into(),
            provider: "generic".into(),
            seq: 1,
            resolved_at: crate::time::Millis::EPOCH,
            resolver: Some("ai".into()),
            settle_at: crate::time::Millis::EPOCH,
            status,
            billable,
            clause,
            detail: "words".into(),
            contract_version: "1".into(),
            contract_hash: "h".into(),
            evidence: serde_json::Value::Null,
            reopened: None,
            outcome_id: None,
            is_final: false,
        }
    }

    #[test]
    fn a_reopen_inside_the_window_decides_over_a_billable_clause() {
        let mut d = decision(
            DecisionStatus::Reopened,
            false,
            Clause::Billable { category: None },
        );
        d.reopened = Some(Reopen {
            event_key: "e2".into(),
            kind: EventKind::CustomerReplied,
            at: DateTime::<Utc>::UNIX_EPOCH,
        });
        let c = deciding_clause(&d);
        assert_eq!(c.kind, "reopened_within_window");
        assert_eq!(c.reopen, d.reopened);
        let v = serde_json::to_value(&c).expect("json");
        assert_eq!(v["reopen"]["kind"], "customer_replied");
        assert_eq!(v["contract_clause"]["clause"], "billable");
        assert_eq!(v["text"], "words");
    }

    #[test]
    fn kinds_follow_the_status_then_the_contract() {
        let billable = || Clause::Billable { category: None };
        let kind = |d: DecisionRow| deciding_clause(&d).kind;
        assert_eq!(
            kind(decision(DecisionStatus::Capped, false, billable())),
            "capped"
        );
        assert_eq!(
            kind(decision(DecisionStatus::InWindow, true, billable())),
            "awaiting_reopen_window"
        );
        assert_eq!(
            kind(decision(DecisionStatus::Confirmed, true, billable())),
            "billable"
        );
        assert_eq!(
            kind(decision(DecisionStatus::Held, true, billable())),
            "held_for_verification"
        );
        let tag = Clause::ExcludedTag { tag: "spam".into() };
        assert_eq!(
            kind(decision(DecisionStatus::InWindow, false, tag.clone())),
            "excluded_tag"
        );
        let c = deciding_clause(&decision(DecisionStatus::NotBillable, false, tag));
        let v = serde_json::to_value(&c).expect("json");
        assert_eq!(v["contract_clause"]["tag"], "spam");
        assert!(v.get("reopen").is_none());
    }
}
