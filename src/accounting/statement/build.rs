//! The statement made from the store: the period's outcomes (by confirmation
//! time), reversals (where the billing system applies them) and decisions (by
//! resolution time), each turned into its line of the model.

use super::model::{BilledLine, EvidenceEvent, NotBilledLine, ReversalLine, Statement};
use crate::accounting::clause::deciding_clause;
use crate::accounting::fmt_ms;
use crate::accounting::ledger::{reversal_applied, reversal_effective_at, totals};
use crate::accounting::period::Period;
use crate::lifecycle::{DecisionStatus, OutcomeState};
use crate::store::{DecisionRow, OutcomeRow, ReversalRow, Store, StoreError};
use crate::stripe::mode::StripeMode;
use crate::time::Millis;
use std::collections::BTreeMap;

/// Build the statement of `tenant` for `period` (outcomes by confirmation time,
/// decisions by resolution time).
pub async fn build(
    store: &Store,
    tenant: &str,
    customer: &str,
    mode: StripeMode,
    period: Period,
) -> Result<Statement, StoreError> {
    let (outcomes, reversal_rows) =
        crate::accounting::period::period_rows(store, tenant, period).await?;
    let totals = totals(&outcomes, &reversal_rows, period, mode);
    let billed = billed(&outcomes, mode);
    let reversals = reversal_rows
        .iter()
        .filter(|r| {
            let at = reversal_effective_at(r);
            at >= period.from && at < period.to
        })
        .map(reversal_line)
        .collect();
    let decisions = store.decisions_in(tenant, period.from, period.to).await?;
    let not_billed = not_billed(store, tenant, &outcomes, decisions).await?;
    Ok(Statement {
        tenant: tenant.to_string(),
        stripe_customer_id: customer.to_string(),
        mode: mode.as_str().to_string(),
        from: fmt_ms(period.from),
        to: fmt_ms(period.to),
        billed: billed.lines,
        not_billed: not_billed.lines,
        reversals,
        totals: totals.into_values().collect(),
        billed_count: billed.count,
        disqualified_by_reason: not_billed.by_reason,
        per_day: billed.per_day,
    })
}

/// The billed side of the statement.
struct Billed {
    /// One per outcome sent, to be sent or taken back.
    lines: Vec<BilledLine>,
    /// Those that count (not voided or reversed).
    count: i64,
    /// Those that count, per day of confirmation (UTC).
    per_day: BTreeMap<String, i64>,
}

/// The outcomes of the period that are billed, to be billed or taken back (a
/// capped outcome or one Stripe rejected is listed once, as not billed).
fn billed(outcomes: &[OutcomeRow], mode: StripeMode) -> Billed {
    let mut billed = Billed {
        lines: Vec::with_capacity(outcomes.len()),
        count: 0,
        per_day: BTreeMap::new(),
    };
    for o in outcomes {
        let counted = match o.state {
            // Listed once, under not billed.
            OutcomeState::Capped | OutcomeState::RejectedByStripe => continue,
            OutcomeState::Reported
            | OutcomeState::Pending
            | OutcomeState::Failed
            | OutcomeState::DryRun => true,
            OutcomeState::Voided | OutcomeState::Reversed => false,
        };
        if counted {
            billed.count += 1;
            let at = fmt_ms(o.confirmed_at);
            *billed
                .per_day
                .entry(at.get(..10).unwrap_or(&at).to_string())
                .or_default() += 1;
        }
        billed.lines.push(billed_line(o, mode));
    }
    billed
}

/// An outcome's line, with its evidence and why it is billed.
fn billed_line(o: &OutcomeRow, mode: StripeMode) -> BilledLine {
    let ev: serde_json::Value = serde_json::from_str(&o.evidence).unwrap_or_default();
    let evidence = evidence_events(&ev);
    let billed_late = crate::stripe::too_old::late_note(&ev);
    BilledLine {
        outcome_id: o.id.clone(),
        stripe_identifier: o.stripe_identifier(),
        sink: o.sink,
        ticket_id: o.ticket_id.clone(),
        provider: o.provider.clone(),
        seq: o.seq,
        resolved_at: fmt_ms(o.resolved_at),
        confirmed_at: fmt_ms(o.confirmed_at),
        event_name: o.event_name.clone(),
        billed_on: crate::accounting::sink_words::billed_on(
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
        why: why_billed(&ev, billed_late.as_deref()),
        billed_late,
        evidence_events: evidence.iter().map(EvidenceEvent::line).collect(),
        evidence,
        contract: format!("{} ({})", o.contract_version, o.contract_hash),
    }
}

/// The events of an outcome's stored evidence.
fn evidence_events(ev: &serde_json::Value) -> Vec<EvidenceEvent> {
    ev["events"]
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
        .unwrap_or_default()
}

/// Why an outcome is billed: the clause's explanation, the verification with the
/// helpdesk, and `billed_late` when an operator billed it late.
fn why_billed(ev: &serde_json::Value, billed_late: Option<&str>) -> String {
    let mut why = ev["explanation"].as_str().unwrap_or_default().to_string();
    // "verified with <helpdesk> at <time>", or "not verified: …".
    if let Some(note) = ev["verification"]["note"].as_str() {
        why = format!("{why}; {note}");
    }
    match billed_late {
        Some(note) => format!("{why} {note}"),
        None => why,
    }
}

/// Why an outcome is not billed in `mode` (yet): the reason it waits or was
/// parked, or the other Stripe mode it was reported in; `None` when billed.
fn status_note(o: &OutcomeRow, mode: StripeMode) -> Option<String> {
    match o.state {
        OutcomeState::Reported | OutcomeState::Reversed
            if !crate::accounting::ledger::reported_in(o, mode) =>
        {
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

/// A clawback reversal's line, counted when the billing system applied it.
fn reversal_line(r: &ReversalRow) -> ReversalLine {
    let ev: serde_json::Value = serde_json::from_str(&r.evidence).unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let method = r.method.clone().unwrap_or_default();
    let counted = reversal_applied(r);
    ReversalLine {
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
        at: fmt_ms(reversal_effective_at(r)),
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
    }
}

/// The not-billed side of the statement.
struct NotBilled {
    /// By resolution time, then ticket and resolution number.
    lines: Vec<NotBilledLine>,
    /// Resolutions not billed for good, by reason.
    by_reason: BTreeMap<String, i64>,
}

/// The capped outcomes and those Stripe rejected, confirmed in the period (as in
/// the totals' `capped_count` and `rejected_count`), and the decisions of the
/// period that bill nothing.
async fn not_billed(
    store: &Store,
    tenant: &str,
    outcomes: &[OutcomeRow],
    decisions: Vec<DecisionRow>,
) -> Result<NotBilled, StoreError> {
    // (resolution time, ticket, seq) orders the lines as the query does.
    let mut lines: Vec<((Millis, String, i64), NotBilledLine)> = Vec::new();
    let mut by_reason: BTreeMap<String, i64> = BTreeMap::new();
    let key = |o: &OutcomeRow| (o.resolved_at, o.ticket_id.clone(), o.seq);
    // A capped outcome counts in the period it was confirmed in, like the totals'
    // `capped_count`: one line from the outcome, with its decision's cap.
    for o in outcomes.iter().filter(|o| o.state == OutcomeState::Capped) {
        let detail = capped_detail(store, tenant, o, &decisions).await?;
        *by_reason.entry("capped".into()).or_default() += 1;
        lines.push((
            key(o),
            outcome_line(o, OutcomeState::Capped, "capped", detail),
        ));
    }
    // An outcome Stripe rejected after accepting its meter event is not billed: one
    // line, with Stripe's reason, in the period it was confirmed in (as the totals'
    // `rejected_count`).
    for o in outcomes
        .iter()
        .filter(|o| o.state == OutcomeState::RejectedByStripe)
    {
        *by_reason.entry("rejected_by_stripe".into()).or_default() += 1;
        let detail = format!(
            "sent to Stripe as {}; {}",
            o.stripe_identifier(),
            o.last_error
                .as_deref()
                .unwrap_or("rejected by Stripe after it accepted the event")
        );
        lines.push((
            key(o),
            outcome_line(
                o,
                OutcomeState::RejectedByStripe,
                "rejected_by_stripe",
                detail,
            ),
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
            *by_reason.entry(reason.clone()).or_default() += 1;
        }
        lines.push((
            (d.resolved_at, d.ticket_id.clone(), d.seq),
            decision_line(d, reason),
        ));
    }
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(NotBilled {
        lines: lines.into_iter().map(|(_, line)| line).collect(),
        by_reason,
    })
}

/// The cap that stopped a capped outcome, from its decision (among the period's,
/// or the ticket's when it was resolved before the period).
async fn capped_detail(
    store: &Store,
    tenant: &str,
    o: &OutcomeRow,
    decisions: &[DecisionRow],
) -> Result<String, StoreError> {
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
    Ok(decision
        .map(|d| d.detail)
        .unwrap_or_else(|| "capped: over a cap of the contract".into()))
}

/// The line of an outcome not billed (`status`: capped, or rejected by Stripe).
fn outcome_line(
    o: &OutcomeRow,
    status: OutcomeState,
    reason: &str,
    detail: String,
) -> NotBilledLine {
    NotBilledLine {
        ticket_id: o.ticket_id.clone(),
        provider: o.provider.clone(),
        seq: o.seq,
        resolved_at: fmt_ms(o.resolved_at),
        status: status.to_string(),
        reason: reason.into(),
        detail,
        outcome_id: Some(o.id.clone()),
        confirmed_at: Some(fmt_ms(o.confirmed_at)),
        event_name: Some(o.event_name.clone()),
    }
}

/// The line of a decision that bills nothing, with the clause that decided it.
fn decision_line(d: DecisionRow, reason: String) -> NotBilledLine {
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
    }
}
