//! Identifiers in plain words, for finance readers: reasons a resolution was not
//! billed, decision statuses, outcome states, reversal methods, event kinds. The
//! identifiers stay what programs read (JSON, CSV, `data-*` attributes); pages show
//! these words. One mapping each, here, so every report says the same thing.

use crate::lifecycle::{OutcomeState, ReversalState};
use std::borrow::Cow;

/// Anything without an entry: the identifier with spaces, never a blank.
fn fallback(code: &str) -> Cow<'static, str> {
    if code.is_empty() {
        Cow::Borrowed("none")
    } else {
        Cow::Owned(code.replace('_', " "))
    }
}

/// Why a resolution was not billed (a statement's `reason`: a clause code, or
/// `reopened_within_window`, `capped`, `awaiting_reopen_window`).
pub fn reason(code: &str) -> Cow<'static, str> {
    Cow::Borrowed(match code {
        "reopened_within_window" => "reopened within the reopen window",
        "capped" => "over the contract's cap",
        "awaiting_reopen_window" => "still inside its reopen window",
        "held_for_verification" => "held until the helpdesk confirms it",
        "billable" => "billable",
        "excluded_tag" => "has an excluded tag",
        "excluded_channel" => "came through an excluded channel",
        "resolver_not_billable" => "resolved by someone the contract does not bill",
        "handed_off_to_human" => "handed off to a human",
        "no_customer_message" => "the customer never wrote",
        "category_declined" => "in a category the contract declines",
        "rejected_by_stripe" => "rejected by Stripe after it accepted the event",
        "unknown" => "unknown reason",
        other => return fallback(other),
    })
}

/// A decision's status (`reopened`, `not_billable`, `capped`, `in_window`, `confirmed`).
pub fn status(code: &str) -> Cow<'static, str> {
    Cow::Borrowed(match code {
        "reopened" => "reopened",
        "not_billable" => "not billable",
        "capped" => "capped",
        "rejected_by_stripe" => "rejected by Stripe",
        "in_window" => "not final yet: inside its reopen window",
        "held" => "not final yet: held until the helpdesk confirms it",
        "confirmed" => "confirmed",
        other => return fallback(other),
    })
}

/// An outcome's state in the outbox.
pub fn outcome_state(state: OutcomeState) -> &'static str {
    match state {
        OutcomeState::Pending => "awaiting report",
        OutcomeState::Reported => "reported to Stripe",
        OutcomeState::DryRun => "dry run (not sent)",
        OutcomeState::Failed => "refused by Stripe",
        OutcomeState::Capped => "capped (not billed)",
        OutcomeState::Voided => "voided before sending",
        OutcomeState::Reversed => "reversed (clawback)",
        OutcomeState::RejectedByStripe => "rejected by Stripe (not billed)",
    }
}

/// How a clawback reversal was (or is to be) done.
pub fn reversal_method(code: &str) -> Cow<'static, str> {
    Cow::Borrowed(match code {
        "" => "not yet attempted",
        "cancel" => "event cancelled",
        "correction" => "correcting event",
        "void" => "voided before sending",
        "dry_run" => "dry run (not sent)",
        "manual" => "by hand (credit note)",
        other => return fallback(other),
    })
}

/// A reversal's state.
pub fn reversal_state(state: ReversalState) -> &'static str {
    match state {
        ReversalState::Pending => "in progress",
        ReversalState::Done => "done",
        ReversalState::Failed => "needs a person",
    }
}

/// A ticket event's kind, with who resolved it when known.
pub fn event(kind: &str, resolver: Option<&str>) -> String {
    let kind: Cow<'static, str> = match kind {
        "resolved" => "resolved".into(),
        "reopened" => "reopened".into(),
        "customer_replied" => "customer replied".into(),
        "handed_off_to_human" => "handed off to a human".into(),
        other => fallback(other),
    };
    match resolver {
        Some("ai") => format!("{kind} by the AI agent"),
        Some("human") => format!("{kind} by a human"),
        Some(r) => format!("{kind} by {r}"),
        None => kind.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Clause;
    use crate::event::{EventKind, Resolver};

    #[test]
    fn every_clause_and_event_kind_has_words() {
        let clauses = [
            Clause::Billable { category: None },
            Clause::ExcludedTag { tag: "t".into() },
            Clause::ExcludedChannel {
                channel: "c".into(),
            },
            Clause::ResolverNotBillable { resolver: None },
            Clause::HandedOffToHuman,
            Clause::NoCustomerMessage,
            Clause::CategoryDeclined {
                category: "c".into(),
            },
        ];
        for c in clauses {
            // A new clause fails to compile here: give it words in `reason`.
            match c {
                Clause::Billable { .. } => continue,
                Clause::ExcludedTag { .. }
                | Clause::ExcludedChannel { .. }
                | Clause::ResolverNotBillable { .. }
                | Clause::HandedOffToHuman
                | Clause::NoCustomerMessage
                | Clause::CategoryDeclined { .. } => {}
            }
            assert_ne!(reason(c.code()), c.code().replace('_', " "), "{}", c.code());
        }
        for k in EventKind::ALL {
            assert!(!event(k.as_str(), None).contains('_'), "{k}");
        }
        assert_eq!(
            event("resolved", Some(Resolver::Ai.as_str())),
            "resolved by the AI agent"
        );
        assert_eq!(reason("handed_off_to_human"), "handed off to a human");
        assert_eq!(reason("something_new"), "something new");
    }
}
