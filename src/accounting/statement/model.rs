//! The statement's model: what is billed and why, what is not and why, the
//! reversals and the totals, as [`super::build`] makes them from the store. The
//! renderers ([`super::html`], [`super::csv`]) and the JSON output only format it.

pub use crate::accounting::ledger::MeterTotals;
use crate::lifecycle::{OutcomeState, ReversalState};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct BilledLine {
    /// Also the Stripe meter event `identifier` (unless resent: `stripe_identifier`).
    pub outcome_id: String,
    /// The meter event's `identifier` at Stripe: the outcome id, or
    /// `<outcome id>_resend<N>` when it was sent again after Stripe rejected it.
    pub stripe_identifier: String,
    /// Where it is billed (`stripe_identifier` is then Metronome's `transaction_id`
    /// for `metronome`).
    pub sink: crate::sink::Sink,
    pub ticket_id: String,
    pub provider: String,
    pub seq: i64,
    pub resolved_at: String,
    pub confirmed_at: String,
    pub event_name: String,
    /// Where it is billed, in words (`report::sink_words::billed_on`): the meter, or the
    /// usage record's subscription item, …
    pub billed_on: String,
    pub value: i64,
    /// pending | reported | dry_run | failed | voided | reversed
    pub state: OutcomeState,
    /// Where it was reported: `live`, `test` or `dry_run` (none before modes
    /// were recorded, or not yet reported).
    pub reported_mode: Option<String>,
    /// Why it is not (yet) billed in this statement's mode: the reason it is
    /// held or parked (Stripe's error, too old, in doubt, a preflight problem),
    /// or the other mode it was reported in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_note: Option<String>,
    pub stripe_request_id: Option<String>,
    pub why: String,
    /// Set when an operator billed it late (`replay --too-old`): when it was
    /// first confirmed and when it was billed instead. Also at the end of `why`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billed_late: Option<String>,
    /// The evidence events, one string each: `<occurred_at> <kind>[ by <resolver>]`.
    pub evidence_events: Vec<String>,
    /// The same events, in parts, for the page (not in the JSON).
    #[serde(skip)]
    pub evidence: Vec<EvidenceEvent>,
    pub contract: String,
}

/// One event of an outcome's evidence.
#[derive(Debug, Clone)]
pub struct EvidenceEvent {
    /// As the helpdesk gave it (RFC 3339).
    pub occurred_at: String,
    pub kind: String,
    pub resolver: Option<String>,
}

impl EvidenceEvent {
    /// The event in one string: `<occurred_at> <kind>[ by <resolver>]`.
    pub(super) fn line(&self) -> String {
        format!(
            "{} {}{}",
            self.occurred_at,
            self.kind,
            self.resolver
                .as_deref()
                .map(|r| format!(" by {r}"))
                .unwrap_or_default()
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NotBilledLine {
    pub ticket_id: String,
    pub provider: String,
    pub seq: i64,
    pub resolved_at: String,
    /// reopened | not_billable | capped | in_window | rejected_by_stripe
    pub status: String,
    /// reopened_within_window | capped | awaiting_reopen_window | rejected_by_stripe | a clause code
    /// (`handed_off_to_human`, ...); [`crate::accounting::words::reason`] says it in words.
    pub reason: String,
    /// The decision in words; for a capped outcome, the cap that stopped it.
    pub detail: String,
    /// A capped outcome's id (never sent to Stripe), or the id of one Stripe
    /// rejected, else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_id: Option<String>,
    /// When a capped outcome was confirmed (the period it belongs to), else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
    /// A capped outcome's meter, else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
}

/// A clawback reversal, in the period where Stripe applies it (a correcting event at
/// its own timestamp; a cancel, or a reversal not done, with its outcome).
#[derive(Debug, Clone, Serialize)]
pub struct ReversalLine {
    /// The reversed outcome (its meter event's `identifier`).
    pub outcome_id: String,
    /// The Stripe event this reversal is: the cancelled event's identifier, or the
    /// correcting event's (`<outcome id>_reversal`).
    pub stripe_identifier: String,
    pub ticket_id: String,
    pub provider: String,
    pub seq: i64,
    pub event_name: String,
    /// The reversed outcome's value.
    pub value: i64,
    /// What it changes at Stripe in this period: minus the value once applied, else 0.
    pub net_effect: i64,
    /// cancel | correction | void | dry_run | manual | none (not yet attempted: empty)
    pub method: String,
    /// pending | done | failed
    pub state: ReversalState,
    /// Applied at Stripe (done, by cancel or correction): counted in the totals.
    pub counted: bool,
    /// When it counts: the correcting event's timestamp, else the outcome's.
    pub at: String,
    pub stripe_request_id: Option<String>,
    pub reopen_event_key: String,
    pub reopen_kind: String,
    pub reopened_at: String,
    /// The contract clause (`clawback`) and its explanation.
    pub clause: String,
    pub explanation: String,
    pub contract: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    pub tenant: String,
    pub stripe_customer_id: String,
    /// The Stripe mode it is the statement of (`live`, `test`, `dry_run`): only
    /// what was reported in that mode counts as sent.
    pub mode: String,
    pub from: String,
    pub to: String,
    /// Outcomes confirmed in the period and sent, to be sent or taken back (every
    /// state but `capped` and `rejected_by_stripe`: those are not billed and are
    /// listed once, in `not_billed`, with the cap that stopped them or Stripe's reason).
    pub billed: Vec<BilledLine>,
    /// Resolutions of the period not billed (by resolution time), and the capped
    /// outcomes confirmed in the period (as in the totals' `capped_count`).
    pub not_billed: Vec<NotBilledLine>,
    pub reversals: Vec<ReversalLine>,
    pub totals: Vec<MeterTotals>,
    pub billed_count: i64,
    pub disqualified_by_reason: BTreeMap<String, i64>,
    /// Billed outcomes per day of confirmation (UTC), for the chart.
    pub per_day: BTreeMap<String, i64>,
}

impl Statement {
    /// What the billing system received for the period in this mode, every meter
    /// together: the sum of the meters' net values.
    pub fn net_value(&self) -> i64 {
        self.totals.iter().map(|t| t.net_value).sum()
    }

    /// Resolutions of the period not billed for good (the sum of
    /// `disqualified_by_reason`).
    pub fn disqualified_count(&self) -> i64 {
        self.disqualified_by_reason.values().sum()
    }
}
