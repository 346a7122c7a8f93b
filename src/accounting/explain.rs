//! `outcome-meter explain <tenant> <ticket>`: why a ticket was (or was not) billed.

use super::clause::{deciding_clause, DecidingClause};
use super::fmt_ms;
use crate::lifecycle::{DecisionStatus, OutcomeState};
use crate::store::{
    AttemptRow, DecisionRow, EventRow, OutcomeFilter, OutcomeRow, RejectionRow, ReversalRow, Store,
    StoreError,
};
use crate::time::Millis;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The trail of one ticket number of a tenant. A ticket number belongs to one
/// helpdesk: the same number in two helpdesks is two tickets, each its own trail.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub tenant: String,
    pub ticket_id: String,
    /// The helpdesk asked for (`--provider`); `None`: every helpdesk with this number.
    pub provider: Option<String>,
    /// One trail per helpdesk, by provider name.
    pub providers: Vec<ProviderTrail>,
    /// With `provider` set: the other helpdesks that have a ticket with this number.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_providers: Vec<String>,
}

/// One helpdesk's ticket: its events, decisions (numbered per helpdesk), outcomes
/// and clawbacks.
#[derive(Debug, Default, Serialize)]
pub struct ProviderTrail {
    pub provider: String,
    pub events: Vec<EventRow>,
    /// Checks with the helpdesk's API before billing (verification), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::store::Check>,
    pub decisions: Vec<DecisionView>,
    pub outcomes: Vec<OutcomeTrail>,
    pub reversals: Vec<ReversalRow>,
}

/// A decision as `explain` shows it: `clause` is the clause that decided, as data.
#[derive(Debug, Serialize)]
pub struct DecisionView {
    pub seq: i64,
    pub resolved_at: Millis,
    pub resolver: Option<String>,
    pub settle_at: Millis,
    pub status: DecisionStatus,
    pub billable: bool,
    pub is_final: bool,
    pub clause: DecidingClause,
    pub contract_version: String,
    pub contract_hash: String,
    pub outcome_id: Option<String>,
    pub evidence: serde_json::Value,
}

impl From<DecisionRow> for DecisionView {
    fn from(d: DecisionRow) -> Self {
        DecisionView {
            clause: deciding_clause(&d),
            seq: d.seq,
            resolved_at: d.resolved_at,
            resolver: d.resolver,
            settle_at: d.settle_at,
            status: d.status,
            billable: d.billable,
            is_final: d.is_final,
            contract_version: d.contract_version,
            contract_hash: d.contract_hash,
            outcome_id: d.outcome_id,
            evidence: d.evidence,
        }
    }
}

/// An outcome (its fields, `provider` included), every Stripe attempt for it, and
/// every rejection of its meter events that Stripe reported after accepting them.
#[derive(Debug, Serialize)]
pub struct OutcomeTrail {
    #[serde(flatten)]
    pub outcome: OutcomeRow,
    /// The meter event's `identifier` at Stripe now.
    pub stripe_identifier: String,
    pub attempts: Vec<AttemptRow>,
    pub rejections: Vec<RejectionRow>,
}

/// The stored rows of a ticket number, grouped by helpdesk; attempts not loaded yet.
#[derive(Default)]
struct Rows {
    trail: ProviderTrail,
    outcomes: Vec<OutcomeRow>,
}

/// The trail of `ticket_id` in `provider`, or in every helpdesk of `tenant` that has it.
pub async fn explain(
    store: &Store,
    tenant: &str,
    ticket_id: &str,
    provider: Option<&str>,
) -> Result<Explanation, StoreError> {
    let mut by_provider = load_rows(store, tenant, ticket_id).await?;
    let (chosen, other_providers) = match provider {
        None => (std::mem::take(&mut by_provider), Vec::new()),
        Some(p) => {
            let chosen = by_provider.remove_entry(p).into_iter().collect();
            (chosen, by_provider.into_keys().collect())
        }
    };
    let mut providers = Vec::with_capacity(chosen.len());
    for (_, mut rows) in chosen {
        for outcome in rows.outcomes {
            let attempts = store.attempts(&outcome.id).await?;
            let rejections = store.rejections_of(&outcome.id).await?;
            rows.trail.outcomes.push(OutcomeTrail {
                stripe_identifier: outcome.stripe_identifier(),
                outcome,
                attempts,
                rejections,
            });
        }
        providers.push(rows.trail);
    }
    Ok(Explanation {
        tenant: tenant.to_string(),
        ticket_id: ticket_id.to_string(),
        provider: provider.map(str::to_string),
        providers,
        other_providers,
    })
}

async fn load_rows(
    store: &Store,
    tenant: &str,
    ticket_id: &str,
) -> Result<BTreeMap<String, Rows>, StoreError> {
    let mut by_provider: BTreeMap<String, Rows> = BTreeMap::new();
    for e in store.ticket_events(tenant, ticket_id).await? {
        rows_of(&mut by_provider, &e.provider).trail.events.push(e);
    }
    for c in store.ticket_checks(tenant, ticket_id).await? {
        rows_of(&mut by_provider, &c.provider).trail.checks.push(c);
    }
    for d in store.ticket_decisions(tenant, ticket_id).await? {
        rows_of(&mut by_provider, &d.provider)
            .trail
            .decisions
            .push(d.into());
    }
    let outcomes = store
        .list_outcomes(&OutcomeFilter {
            tenant: Some(tenant.to_string()),
            ticket_id: Some(ticket_id.to_string()),
            ..Default::default()
        })
        .await?;
    for o in outcomes {
        rows_of(&mut by_provider, &o.provider).outcomes.push(o);
    }
    for r in store.reversals(tenant).await? {
        if r.ticket_id == ticket_id {
            rows_of(&mut by_provider, &r.provider)
                .trail
                .reversals
                .push(r);
        }
    }
    Ok(by_provider)
}

fn rows_of<'a>(by_provider: &'a mut BTreeMap<String, Rows>, provider: &str) -> &'a mut Rows {
    by_provider
        .entry(provider.to_string())
        .or_insert_with(|| Rows {
            trail: ProviderTrail {
                provider: provider.to_string(),
                ..Default::default()
            },
            outcomes: Vec::new(),
        })
}

impl Explanation {
    /// Nothing is stored for this ticket (in the helpdesk asked for).
    pub fn is_empty(&self) -> bool {
        self.providers.iter().all(ProviderTrail::is_empty)
    }

    /// The decision trail in plain words, one section per helpdesk.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "Ticket {} of tenant {}", self.ticket_id, self.tenant);
        match &self.provider {
            Some(p) => {
                let _ = writeln!(s, " in helpdesk {p}");
            }
            None if self.providers.len() > 1 => {
                let names: Vec<&str> = self.providers.iter().map(|t| t.provider.as_str()).collect();
                let _ = writeln!(
                    s,
                    ": {} helpdesks have this ticket number ({}); each is its own ticket",
                    names.len(),
                    names.join(", ")
                );
            }
            None => s.push('\n'),
        }
        if self.is_empty() {
            let _ = writeln!(s, "  No events are stored for this ticket.");
            if !self.other_providers.is_empty() {
                let _ = writeln!(
                    s,
                    "  Helpdesks with this ticket number: {} (--provider NAME).",
                    self.other_providers.join(", ")
                );
            }
            return s;
        }
        for t in &self.providers {
            let _ = writeln!(s, "\n== {} ticket {} ==", t.provider, self.ticket_id);
            t.render(&mut s);
        }
        s
    }
}

impl ProviderTrail {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.decisions.is_empty()
    }

    fn render(&self, s: &mut String) {
        self.render_events(s);
        self.render_checks(s);
        self.render_decisions(s);
        if !self.outcomes.is_empty() {
            let _ = writeln!(s, "\nBilled outcomes:");
        }
        for o in &self.outcomes {
            o.render(s);
        }
        self.render_reversals(s);
    }

    fn render_events(&self, s: &mut String) {
        let _ = writeln!(s, "\nEvents (in the helpdesk's time order):");
        for e in &self.events {
            let ev = &e.event;
            let source = match (e.learned_from, e.delivery_id) {
                (Some(check), _) => format!(" (learned from the helpdesk's API, check {check})"),
                (None, 0) => " (imported from the helpdesk's API by backfill)".to_string(),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  {}  {:<20} {}{}{}  [{}]{source}",
                fmt_ms(Millis::from(ev.occurred_at)),
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
                ev.event_key
            );
        }
    }

    fn render_checks(&self, s: &mut String) {
        if !self.checks.is_empty() {
            let _ = writeln!(s, "\nChecks with the helpdesk's API before billing:");
        }
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  check {} at {}: #{} {}: {}{}",
                c.id,
                fmt_ms(c.checked_at),
                c.seq,
                c.result,
                c.detail,
                match (c.learned, c.next_try_at) {
                    (0, None) => String::new(),
                    (0, Some(t)) => format!("; next try {}", fmt_ms(t)),
                    (n, _) => format!("; {n} event(s) learned"),
                }
            );
        }
    }

    fn render_decisions(&self, s: &mut String) {
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
                d.clause.text,
                d.contract_version,
                d.contract_hash,
                fmt_ms(d.settle_at)
            );
        }
    }

    fn render_reversals(&self, s: &mut String) {
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
    }
}

impl OutcomeTrail {
    /// The outcome, where it is billed, every attempt and every rejection by Stripe.
    fn render(&self, s: &mut String) {
        let OutcomeTrail {
            outcome: o,
            stripe_identifier,
            attempts,
            rejections,
        } = self;
        let _ = writeln!(
            s,
            "  {} ({} #{}): {} x{} {} -> {}{}",
            o.id,
            o.provider,
            o.seq,
            fmt_ms(o.confirmed_at),
            o.value,
            super::sink_words::billed_on(
                o.sink,
                &o.event_name,
                &o.stripe_customer_id,
                o.sink_target.as_deref()
            ),
            o.state,
            o.last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        if let Some(note) = super::sink_words::sent_note(o.sink, o.state, stripe_identifier) {
            let _ = writeln!(s, "      {note}");
        }
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
        for r in rejections {
            let _ = writeln!(
                s,
                "      {} Stripe rejected {} after accepting it: {}: {} (Stripe event {})",
                fmt_ms(r.rejected_at),
                r.identifier,
                r.code,
                r.message,
                r.stripe_event_id
            );
        }
        if o.state == OutcomeState::RejectedByStripe {
            let _ = writeln!(
                s,
                "      not billed: Stripe accepted the meter event ({stripe_identifier}) and rejected it in its \
                 asynchronous validation, so it counts nothing. Fix the cause, then resend it (under a new \
                 identifier): outcome-meter replay --rejected --id {} --yes",
                o.id
            );
        } else if !rejections.is_empty() {
            let _ = writeln!(
                s,
                "      resent after Stripe's rejection as {stripe_identifier}"
            );
        }
    }
}
