//! `outcome-meter statement`: every billed outcome of a period with its evidence,
//! every resolution not billed and why, and totals that match what Stripe received.

use super::clause::deciding_clause;
use super::fmt_ms;
pub use super::ledger::MeterTotals;
use super::ledger::{reversal_applied, reversal_effective_at, totals};
use super::period::Period;
use crate::lifecycle::{DecisionStatus, OutcomeState, ReversalState};
use crate::store::{DecisionRow, Store, StoreError};
use crate::stripe::mode::StripeMode;
use crate::time::Millis;
use serde::Serialize;
use std::collections::BTreeMap;

mod csv;
mod html;

pub use html::escape;

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
    fn line(&self) -> String {
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
    /// (`handed_off_to_human`, ...); [`crate::report::words::reason`] says it in words.
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

/// Why an outcome is not billed in `mode` (yet): the reason it waits or was
/// parked, or the other Stripe mode it was reported in; `None` when billed.
fn status_note(o: &crate::store::OutcomeRow, mode: StripeMode) -> Option<String> {
    match o.state {
        OutcomeState::Reported | OutcomeState::Reversed if !super::ledger::reported_in(o, mode) => {
            Some(format!(
                "reported in {} mode, not billed in {} mode",
                o.reported_mode
                    .as_deref()
                    .unwrap_or("another")
                    .replace('_', "-"),
                mode.config_name()
            ))
        }
        OutcomeState::Pending | OutcomeState::Failed | OutcomeState::RejectedByStripe => {
            o.last_error.clone()
        }
        OutcomeState::Reported
        | OutcomeState::Reversed
        | OutcomeState::DryRun
        | OutcomeState::Capped
        | OutcomeState::Voided => None,
    }
}

/// Build the statement of `tenant` for `period` (outcomes by confirmation time,
/// decisions by resolution time).
pub async fn build(
    store: &Store,
    tenant: &str,
    customer: &str,
    mode: StripeMode,
    period: Period,
) -> Result<Statement, StoreError> {
    let (outcomes, reversal_rows) = super::period::period_rows(store, tenant, period).await?;
    let totals = totals(&outcomes, &reversal_rows, period, mode);
    let mut per_day: BTreeMap<String, i64> = BTreeMap::new();
    let mut billed = Vec::with_capacity(outcomes.len());
    let mut billed_count = 0;
    for o in &outcomes {
        let counted = match o.state {
            // Listed once, under not billed (below).
            OutcomeState::Capped | OutcomeState::RejectedByStripe => continue,
            OutcomeState::Reported
            | OutcomeState::Pending
            | OutcomeState::Failed
            | OutcomeState::DryRun => true,
            OutcomeState::Voided | OutcomeState::Reversed => false,
        };
        if counted {
            billed_count += 1;
            let at = fmt_ms(o.confirmed_at);
            *per_day
                .entry(at.get(..10).unwrap_or(&at).to_string())
                .or_default() += 1;
        }
        let ev: serde_json::Value = serde_json::from_str(&o.evidence).unwrap_or_default();
        let evidence: Vec<EvidenceEvent> = ev["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| EvidenceEvent {
                        occurred_at: e["occurred_at"].as_str().unwrap_or("").to_string(),
                        kind: e["kind"].as_str().unwrap_or("").to_string(),
                        resolver: e["resolver"].as_str().map(str::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let billed_late = crate::stripe::too_old::late_note(&ev);
        billed.push(BilledLine {
            outcome_id: o.id.clone(),
            stripe_identifier: o.stripe_identifier(),
            sink: o.sink,
            ticket_id: o.ticket_id.clone(),
            provider: o.provider.clone(),
            seq: o.seq,
            resolved_at: fmt_ms(o.resolved_at),
            confirmed_at: fmt_ms(o.confirmed_at),
            event_name: o.event_name.clone(),
            billed_on: crate::report::sink_words::billed_on(
                o.sink,
                &o.event_name,
                &o.stripe_customer_id,
                o.sink_target.as_deref(),
            ),
            value: o.value,
            state: o.state,
            reported_mode: o.reported_mode.clone(),
            status_note: status_note(o, mode),
            stripe_request_id: o.stripe_request_id.clone(),
            why: {
                let mut why = ev["explanation"].as_str().unwrap_or_default().to_string();
                // "verified with <helpdesk> at <time>", or "not verified: …".
                if let Some(note) = ev["verification"]["note"].as_str() {
                    why = format!("{why}; {note}");
                }
                match &billed_late {
                    Some(note) => format!("{why} {note}"),
                    None => why,
                }
            },
            billed_late,
            evidence_events: evidence.iter().map(EvidenceEvent::line).collect(),
            evidence,
            contract: format!("{} ({})", o.contract_version, o.contract_hash),
        });
    }
    let mut reversals = Vec::new();
    for r in &reversal_rows {
        let at = reversal_effective_at(r);
        if at < period.from || at >= period.to {
            continue;
        }
        let ev: serde_json::Value = serde_json::from_str(&r.evidence).unwrap_or_default();
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let method = r.method.clone().unwrap_or_default();
        let counted = reversal_applied(r);
        reversals.push(ReversalLine {
            outcome_id: r.outcome_id.clone(),
            stripe_identifier: if method == "correction" {
                format!("{}_reversal", r.outcome_id)
            } else {
                r.outcome_id.clone()
            },
            ticket_id: r.ticket_id.clone(),
            provider: r.provider.clone(),
            seq: ev["seq"].as_i64().unwrap_or_default(),
            event_name: r.event_name.clone(),
            value: r.value,
            net_effect: if counted { -r.value } else { 0 },
            method,
            state: r.state,
            counted,
            at: fmt_ms(at),
            stripe_request_id: r.stripe_request_id.clone(),
            reopen_event_key: r.reopen_event_key.clone(),
            reopen_kind: text(&ev["reopen"]["kind"]),
            reopened_at: fmt_ms(r.reopened_at),
            clause: text(&ev["clause"]),
            explanation: text(&ev["explanation"]),
            contract: format!(
                "{} ({})",
                text(&ev["contract"]["version"]),
                text(&ev["contract"]["hash"])
            ),
            error: r.last_error.clone(),
        });
    }
    let decisions = store.decisions_in(tenant, period.from, period.to).await?;
    // (resolution time, ticket, seq) orders the lines as the query does.
    let mut not_billed: Vec<((Millis, String, i64), NotBilledLine)> = Vec::new();
    let mut disqualified_by_reason: BTreeMap<String, i64> = BTreeMap::new();
    // A capped outcome counts in the period it was confirmed in, like the totals'
    // `capped_count`: one line from the outcome, with its decision's cap.
    for o in outcomes.iter().filter(|o| o.state == OutcomeState::Capped) {
        let mine = |d: &DecisionRow| d.outcome_id.as_deref() == Some(o.id.as_str());
        let decision = match decisions.iter().find(|d| mine(d)) {
            Some(d) => Some(d.clone()),
            // Resolved before the period, confirmed in it.
            None => store
                .ticket_decisions(tenant, &o.ticket_id)
                .await?
                .into_iter()
                .find(|d| mine(d)),
        };
        let detail = decision
            .map(|d| d.detail)
            .unwrap_or_else(|| "capped: over a cap of the contract".into());
        *disqualified_by_reason.entry("capped".into()).or_default() += 1;
        not_billed.push((
            (o.resolved_at, o.ticket_id.clone(), o.seq),
            NotBilledLine {
                ticket_id: o.ticket_id.clone(),
                provider: o.provider.clone(),
                seq: o.seq,
                resolved_at: fmt_ms(o.resolved_at),
                status: OutcomeState::Capped.to_string(),
                reason: "capped".into(),
                detail,
                outcome_id: Some(o.id.clone()),
                confirmed_at: Some(fmt_ms(o.confirmed_at)),
                event_name: Some(o.event_name.clone()),
            },
        ));
    }
    // An outcome Stripe rejected after accepting its meter event is not billed: one
    // line, with Stripe's reason, in the period it was confirmed in (as the totals'
    // `rejected_count`).
    for o in outcomes
        .iter()
        .filter(|o| o.state == OutcomeState::RejectedByStripe)
    {
        *disqualified_by_reason
            .entry("rejected_by_stripe".into())
            .or_default() += 1;
        not_billed.push((
            (o.resolved_at, o.ticket_id.clone(), o.seq),
            NotBilledLine {
                ticket_id: o.ticket_id.clone(),
                provider: o.provider.clone(),
                seq: o.seq,
                resolved_at: fmt_ms(o.resolved_at),
                status: OutcomeState::RejectedByStripe.to_string(),
                reason: "rejected_by_stripe".into(),
                detail: format!(
                    "sent to Stripe as {}; {}",
                    o.stripe_identifier(),
                    o.last_error
                        .as_deref()
                        .unwrap_or("rejected by Stripe after it accepted the event")
                ),
                outcome_id: Some(o.id.clone()),
                confirmed_at: Some(fmt_ms(o.confirmed_at)),
                event_name: Some(o.event_name.clone()),
            },
        ));
    }
    for d in decisions {
        let disqualified = match d.status {
            // Billed, or capped: those come from their outcomes, above.
            DecisionStatus::Confirmed | DecisionStatus::Capped => continue,
            // Not final yet.
            DecisionStatus::InWindow | DecisionStatus::Held => false,
            DecisionStatus::Reopened | DecisionStatus::NotBillable => true,
        };
        let reason = deciding_clause(&d).kind.to_string();
        if disqualified {
            *disqualified_by_reason.entry(reason.clone()).or_default() += 1;
        }
        not_billed.push((
            (d.resolved_at, d.ticket_id.clone(), d.seq),
            NotBilledLine {
                ticket_id: d.ticket_id,
                provider: d.provider,
                seq: d.seq,
                resolved_at: fmt_ms(d.resolved_at),
                status: d.status.to_string(),
                reason,
                detail: d.detail,
                outcome_id: None,
                confirmed_at: None,
                event_name: None,
            },
        ));
    }
    not_billed.sort_by(|a, b| a.0.cmp(&b.0));
    let not_billed = not_billed.into_iter().map(|(_, line)| line).collect();
    Ok(Statement {
        tenant: tenant.to_string(),
        stripe_customer_id: customer.to_string(),
        mode: mode.as_str().to_string(),
        from: fmt_ms(period.from),
        to: fmt_ms(period.to),
        billed,
        not_billed,
        reversals,
        totals: totals.into_values().collect(),
        billed_count,
        disqualified_by_reason,
        per_day,
    })
}

impl ReversalLine {
    /// The reopening event, in words.
    pub fn reopen_evidence(&self) -> String {
        format!(
            "{} {} (event {})",
            self.reopened_at, self.reopen_kind, self.reopen_event_key
        )
    }
}
