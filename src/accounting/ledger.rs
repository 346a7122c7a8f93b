//! What Stripe holds for one customer in a period, meter by meter: the money arithmetic
//! that statements and reconciliation share, so the two always agree. Pure.
//!
//! An outcome's meter event counts at its timestamp (the confirmation time). A reversal
//! counts where Stripe applies it: a cancel removes the original event, so it nets out in
//! the outcome's period; a correcting event is a new event, counted at its own timestamp
//! (often the next month).

use super::period::Period;
use crate::lifecycle::{OutcomeState, ReversalState};
use crate::store::{OutcomeRow, ReversalRow};
use crate::stripe::mode::StripeMode;
use crate::time::Millis;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MeterTotals {
    pub event_name: String,
    /// Outcomes of the period accepted by Stripe (including later reversed ones).
    pub reported_count: i64,
    pub reported_value: i64,
    /// Reversals Stripe applied in the period (cancels of the period's outcomes, and
    /// correcting events timestamped in it, whatever the period of their outcome).
    pub reversed_count: i64,
    pub reversed_value: i64,
    /// What Stripe bills for the period: reported minus reversed.
    pub net_value: i64,
    /// Confirmed, still in the outbox (pending or failed).
    pub awaiting_count: i64,
    pub awaiting_value: i64,
    pub dry_run_count: i64,
    pub capped_count: i64,
    /// Sent, accepted, then rejected by Stripe in its asynchronous validation: not
    /// billed (until resent, `replay --rejected`).
    pub rejected_count: i64,
    pub rejected_value: i64,
    /// Reported in another Stripe mode than this ledger's (test-mode events seen
    /// from live mode): not billed here.
    pub other_mode_count: i64,
}

/// Whether an outcome's event counts in `mode`'s account: reported there, or
/// before modes were recorded (taken as this mode's).
pub fn reported_in(o: &OutcomeRow, mode: StripeMode) -> bool {
    o.reported_mode
        .as_deref()
        .is_none_or(|m| m == mode.as_str())
}

/// When a reversal takes effect at Stripe: a correcting event at its own timestamp;
/// anything else (a cancel, a void, a dry run, one not done) with its outcome.
pub fn reversal_effective_at(r: &ReversalRow) -> Millis {
    match (r.method.as_deref(), r.stripe_timestamp) {
        (Some("correction"), Some(ts)) => Millis::from_ms(ts.saturating_mul(1000)),
        _ => r.outcome_confirmed_at,
    }
}

/// Whether a reversal changed what Stripe bills (done, by a cancel or a correction).
pub fn reversal_applied(r: &ReversalRow) -> bool {
    r.state == ReversalState::Done && matches!(r.method.as_deref(), Some("cancel" | "correction"))
}

/// The totals of meter `name`, created empty.
pub fn meter<'a>(out: &'a mut BTreeMap<String, MeterTotals>, name: &str) -> &'a mut MeterTotals {
    out.entry(name.to_string()).or_insert_with(|| MeterTotals {
        event_name: name.to_string(),
        ..Default::default()
    })
}

/// Totals per meter, in the account of Stripe `mode`. `outcomes`: those confirmed
/// in `period`; `reversals`: any (those taking effect outside `period` are skipped).
pub fn totals(
    outcomes: &[OutcomeRow],
    reversals: &[ReversalRow],
    period: Period,
    mode: StripeMode,
) -> BTreeMap<String, MeterTotals> {
    let mut out: BTreeMap<String, MeterTotals> = BTreeMap::new();
    let method_of: HashMap<&str, Option<&str>> = reversals
        .iter()
        .map(|r| (r.outcome_id.as_str(), r.method.as_deref()))
        .collect();
    for o in outcomes {
        let t = meter(&mut out, &o.event_name);
        match o.state {
            OutcomeState::Reported | OutcomeState::Reversed if !reported_in(o, mode) => {
                t.other_mode_count += 1
            }
            OutcomeState::Reported => {
                t.reported_count += 1;
                t.reported_value += o.value;
            }
            OutcomeState::Reversed if method_of.get(o.id.as_str()) == Some(&Some("dry_run")) => {
                t.dry_run_count += 1;
            }
            OutcomeState::Reversed => {
                t.reported_count += 1;
                t.reported_value += o.value;
            }
            OutcomeState::Pending | OutcomeState::Failed => {
                t.awaiting_count += 1;
                t.awaiting_value += o.value;
            }
            OutcomeState::DryRun => t.dry_run_count += 1,
            OutcomeState::Capped => t.capped_count += 1,
            OutcomeState::RejectedByStripe => {
                t.rejected_count += 1;
                t.rejected_value += o.value;
            }
            // Never sent: nothing at Stripe, nothing owed.
            OutcomeState::Voided => {}
        }
    }
    for r in reversals {
        let at = reversal_effective_at(r);
        let here = r
            .outcome_reported_mode
            .as_deref()
            .is_none_or(|m| m == mode.as_str());
        if here && reversal_applied(r) && period.from <= at && at < period.to {
            let t = meter(&mut out, &r.event_name);
            t.reversed_count += 1;
            t.reversed_value += r.value;
        }
    }
    for t in out.values_mut() {
        t.net_value = t.reported_value - t.reversed_value;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutcomeState::{Capped, Failed, Pending, RejectedByStripe, Reported, Reversed, Voided};
    use ReversalState::Done;

    const DAY: i64 = 86_400_000;
    const JAN: Period = Period {
        from: Millis::EPOCH,
        to: Millis::from_ms(31 * DAY),
    };
    const FEB: Period = Period {
        from: Millis::from_ms(31 * DAY),
        to: Millis::from_ms(59 * DAY),
    };

    fn outcome(id: &str, state: OutcomeState, confirmed_at: i64) -> OutcomeRow {
        OutcomeRow::sample(id, state, Millis::from_ms(confirmed_at))
    }

    fn reversal(
        id: &str,
        method: &str,
        state: ReversalState,
        confirmed_at: i64,
        ts: Option<i64>,
    ) -> ReversalRow {
        ReversalRow {
            outcome_id: id.into(),
            provider: String::new(),
            ticket_id: String::new(),
            event_name: "resolved_ticket".into(),
            value: 2,
            reopen_event_key: String::new(),
            reopened_at: Millis::EPOCH,
            created_at: Millis::EPOCH,
            evidence: String::new(),
            method: Some(method.into()),
            state,
            last_error: None,
            stripe_request_id: None,
            stripe_timestamp: ts,
            done_at: None,
            outcome_confirmed_at: Millis::from_ms(confirmed_at),
            outcome_reported_mode: None,
            sink: crate::sink::Sink::default(),
        }
    }

    fn net(outcomes: &[OutcomeRow], reversals: &[ReversalRow], p: Period) -> (i64, i64, i64) {
        let t = totals(outcomes, reversals, p, StripeMode::Live);
        let t = t.get("resolved_ticket").cloned().unwrap_or_default();
        (t.reported_value, t.reversed_value, t.net_value)
    }

    #[test]
    fn a_correction_counts_in_the_period_of_its_own_timestamp() {
        // Confirmed 30 January, corrected 2 February.
        let o = [outcome("a", Reversed, 30 * DAY)];
        let r = [reversal(
            "a",
            "correction",
            Done,
            30 * DAY,
            Some(33 * 86_400),
        )];
        assert_eq!(net(&o, &r, JAN), (2, 0, 2), "January keeps its event");
        assert_eq!(
            net(&[], &r, FEB),
            (0, 2, -2),
            "February gets the correcting event"
        );
    }

    #[test]
    fn a_cancel_nets_out_in_the_outcomes_period() {
        let o = [outcome("a", Reversed, 30 * DAY)];
        let r = [reversal("a", "cancel", Done, 30 * DAY, None)];
        assert_eq!(net(&o, &r, JAN), (2, 2, 0));
        assert_eq!(net(&[], &r, FEB), (0, 0, 0));
    }

    #[test]
    fn reversals_not_applied_change_nothing() {
        let o = [
            outcome("a", Reported, DAY),
            outcome("b", Voided, DAY),
            outcome("c", Reversed, DAY),
        ];
        let r = [
            reversal(
                "a",
                "correction",
                ReversalState::Failed,
                DAY,
                Some(2 * 86_400),
            ),
            reversal("b", "void", Done, DAY, None),
            reversal("c", "dry_run", Done, DAY, None),
        ];
        let t = totals(&o, &r, JAN, StripeMode::Live);
        let t = &t["resolved_ticket"];
        assert_eq!((t.reported_value, t.reversed_value, t.net_value), (2, 0, 2));
        assert_eq!(t.dry_run_count, 1, "a dry-run reversal was never at Stripe");
    }

    #[test]
    fn the_outbox_is_counted_apart() {
        let o = [
            outcome("a", Pending, DAY),
            outcome("b", Failed, DAY),
            outcome("c", Capped, DAY),
        ];
        let t = totals(&o, &[], JAN, StripeMode::Live);
        let t = &t["resolved_ticket"];
        assert_eq!((t.awaiting_count, t.awaiting_value), (2, 4));
        assert_eq!((t.capped_count, t.net_value), (1, 0));
    }

    #[test]
    fn an_outcome_stripe_rejected_is_not_billed() {
        let o = [
            outcome("a", Reported, DAY),
            outcome("b", RejectedByStripe, DAY),
        ];
        let t = totals(&o, &[], JAN, StripeMode::Live);
        let t = &t["resolved_ticket"];
        assert_eq!((t.reported_count, t.net_value), (1, 2));
        assert_eq!((t.rejected_count, t.rejected_value), (1, 2));
        assert_eq!(t.awaiting_count, 0, "not in the outbox until resent");
    }

    #[test]
    fn effective_time_of_each_kind() {
        let c = reversal("a", "correction", Done, DAY, Some(5));
        assert_eq!(reversal_effective_at(&c), Millis::from_ms(5_000));
        let k = reversal("a", "cancel", Done, DAY, None);
        assert_eq!(reversal_effective_at(&k), Millis::from_ms(DAY));
        let pending = reversal("a", "correction", ReversalState::Pending, DAY, None);
        assert_eq!(reversal_effective_at(&pending), Millis::from_ms(DAY));
    }
}
