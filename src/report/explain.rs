//! `outcome-meter explain <tenant> <ticket>`: why a ticket was (or was not) billed.

use super::fmt_ms;
use crate::clock::to_millis;
use crate::store::{
    AttemptRow, DecisionRow, EventRow, OutcomeFilter, OutcomeRow, ReversalRow, Store, StoreError,
};
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub tenant: String,
    pub ticket_id: String,
    pub events: Vec<EventRow>,
    pub decisions: Vec<DecisionRow>,
    pub outcomes: Vec<(OutcomeRow, Vec<AttemptRow>)>,
    pub reversals: Vec<ReversalRow>,
}

pub async fn explain(
    store: &Store,
    tenant: &str,
    ticket_id: &str,
) -> Result<Explanation, StoreError> {
    let events = store.ticket_events(tenant, ticket_id).await?;
    let decisions = store.ticket_decisions(tenant, ticket_id).await?;
    let rows = store
        .list_outcomes(&OutcomeFilter {
            tenant: Some(tenant.to_string()),
            ticket_id: Some(ticket_id.to_string()),
            ..Default::default()
        })
        .await?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for o in rows {
        let attempts = store.attempts(&o.id).await?;
        outcomes.push((o, attempts));
    }
    let reversals = store
        .reversals(tenant)
        .await?
        .into_iter()
        .filter(|r| r.ticket_id == ticket_id)
        .collect();
    Ok(Explanation {
        tenant: tenant.to_string(),
        ticket_id: ticket_id.to_string(),
        events,
        decisions,
        outcomes,
        reversals,
    })
}

impl Explanation {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.decisions.is_empty()
    }

    /// The decision trail in plain words.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Ticket {} of tenant {}", self.ticket_id, self.tenant);
        if self.is_empty() {
            let _ = writeln!(s, "  No events are stored for this ticket.");
            return s;
        }
        let _ = writeln!(s, "\nEvents (in the helpdesk's time order):");
        for e in &self.events {
            let ev = &e.event;
            let _ = writeln!(
                s,
                "  {}  {:<20} {}{}{}  [{} {}]",
                fmt_ms(to_millis(ev.occurred_at)),
                ev.kind.as_str(),
                ev.resolver.map(|r| format!("by {r} ")).unwrap_or_default(),
                ev.actor_id
                    .as_deref()
                    .map(|a| format!("actor {a} "))
                    .unwrap_or_default(),
                if ev.tags.is_empty() {
                    String::new()
                } else {
                    format!("tags {}", ev.tags.join(","))
                },
                e.provider,
                ev.event_key
            );
        }
        let _ = writeln!(s, "\nDecisions (one per resolution):");
        for d in &self.decisions {
            let _ = writeln!(
                s,
                "  #{} resolved {} by {} -> {}{}\n      {}\n      contract {} (hash {}), window ends {}",
                d.seq,
                fmt_ms(d.resolved_at),
                d.resolver.as_deref().unwrap_or("unknown"),
                d.status,
                if d.is_final { " (final)" } else { "" },
                d.detail,
                d.contract_version,
                d.contract_hash,
                fmt_ms(d.settle_at)
            );
        }
        if !self.outcomes.is_empty() {
            let _ = writeln!(s, "\nBilled outcomes:");
        }
        for (o, attempts) in &self.outcomes {
            let _ = writeln!(
                s,
                "  {} #{}: {} x{} on meter {} for {} -> {}{}",
                o.id,
                o.seq,
                fmt_ms(o.confirmed_at),
                o.value,
                o.event_name,
                o.stripe_customer_id,
                o.state,
                o.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            for a in attempts {
                let _ = writeln!(
                    s,
                    "      {} {}{}{}",
                    fmt_ms(a.attempted_at),
                    a.result,
                    a.status_code
                        .map(|c| format!(" HTTP {c}"))
                        .unwrap_or_default(),
                    a.request_id
                        .as_deref()
                        .map(|r| format!(" request {r}"))
                        .unwrap_or_default()
                );
            }
        }
        for r in &self.reversals {
            let why = serde_json::from_str::<serde_json::Value>(&r.evidence)
                .ok()
                .and_then(|v| v["explanation"].as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "\nClawback of {}: {} -> {} by {}{}",
                r.outcome_id,
                why,
                r.state,
                r.method.as_deref().unwrap_or("(not yet attempted)"),
                r.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        s
    }
}
