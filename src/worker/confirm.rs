//! Confirmer: resolutions whose window has passed become outcomes (or final
//! non-billable decisions), with evidence, in one transaction.

use super::clawback::{over_cap, LateReopen};
use super::evidence::{decision, evidence, DecisionInput};
use super::Worker;
use crate::lifecycle::{DecisionStatus, OutcomeState};
use crate::outcome::outcome_id;
use crate::store::{NewOutcome, StoreError};
use crate::ticket::{replay_pinned, Settled, Standing};
use crate::time::Millis;
use crate::verification::judge::{gate, Gate};
use std::time::Duration;

/// Due means: window ended, plus the grace, before the oldest delivery not yet
/// processed arrived (`oldest`). A reopen still waiting in the inbox (a backlog, a
/// stopped worker) holds confirmation back instead of being ignored.
fn due_horizon(oldest: Option<Millis>, now: Millis, grace: Duration) -> Millis {
    oldest.map_or(now, |received| received.min(now)) - grace
}

impl Worker {
    /// Confirm one batch of due tickets. Touches only tickets whose `settle_at`
    /// has passed (an index range), never the whole open set.
    pub async fn confirm_once(&self) -> Result<usize, StoreError> {
        let now_t = self.clock.now();
        let now = Millis::from(now_t);
        let grace = self.confirm_grace;
        if !self.verifier.is_empty() {
            // Ask the helpdesks first, before this pass's write transaction opens.
            let oldest = self.store.peek_oldest_pending_delivery().await?;
            self.verify_due(due_horizon(oldest, now, grace), now)
                .await?;
        }
        let mut tx = self.store.begin().await?;
        let horizon = due_horizon(tx.oldest_pending_delivery().await?, now, grace);
        let horizon_t = horizon.to_datetime();
        let due = tx.due_tickets(horizon, self.batch).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut confirmed = 0usize;
        for (tenant_id, provider, ticket_id) in &due {
            let Some(tenant) = self.tenants.get(tenant_id) else {
                tracing::error!(%tenant_id, %ticket_id, "due ticket of an unconfigured tenant: postponed one hour");
                let settled = tx.lock_ticket(tenant_id, provider, ticket_id, now).await?;
                tx.save_ticket(
                    tenant_id,
                    provider,
                    ticket_id,
                    settled,
                    Some(now + Duration::from_secs(3600)),
                    now,
                )
                .await?;
                continue;
            };
            let settled = tx.lock_ticket(tenant_id, provider, ticket_id, now).await?;
            let events = tx.load_events(tenant_id, provider, ticket_id).await?;
            let pins = self.pins(&mut tx, tenant, provider, ticket_id).await?;
            let history = replay_pinned(&tenant.contract, &pins.terms, settled, &events);
            let mut new_settled = settled;
            let mut hold_until: Option<Millis> = None;
            for r in &history.resolutions {
                match r.standing(horizon_t) {
                    Standing::Reopened => continue,
                    Standing::InWindow => break,
                    Standing::Due => {}
                }
                let billable = r
                    .verdict
                    .meter
                    .clone()
                    .map(|m| (outcome_id(tenant_id, provider, ticket_id, r.seq), m));
                // Caps of the contract this resolution is pinned to (the one it was first
                // decided under), like every other term.
                let caps = &pins.terms.get(&r.seq).unwrap_or(&tenant.contract).caps;
                // Verification before billing: bill only what the helpdesk agreed to
                // (or, past verify.max_hold, what verify.on_unreachable allows). A
                // resolution not billed is checked too before it is settled: settling
                // freezes the history before it, lost webhooks included.
                let mut verification = None;
                if self.verifier.is_on(tenant_id, provider) {
                    let latest = tx
                        .latest_check(
                            tenant_id,
                            provider,
                            ticket_id,
                            r.seq,
                            Millis::from(r.resolved_at),
                        )
                        .await?;
                    match gate(
                        provider,
                        latest.as_ref(),
                        Millis::from(r.settle_at),
                        now,
                        &self.verifier.settings,
                    ) {
                        Gate::Bill { verified, note } => verification = Some((verified, note)),
                        Gate::Hold { until, why, reason } => {
                            self.metrics.verification_hold(provider, reason);
                            let mut d = decision(DecisionInput {
                                tenant,
                                provider,
                                ticket_id,
                                resolution: r,
                                events: &events,
                                status: DecisionStatus::Held,
                                outcome_id: None,
                                is_final: false,
                                now,
                                pins: &pins,
                                verification: None,
                            });
                            d.detail = why;
                            tx.write_decision(&d).await?;
                            hold_until = Some(until);
                            break;
                        }
                    }
                }
                let capped = match &billable {
                    Some(_) => {
                        over_cap(&mut tx, caps, &tenant.settings.stripe_customer_id, now_t).await?
                    }
                    None => None,
                };
                if let Some((id, meter)) = &billable {
                    let contract = pins.contract_id(r.seq, tenant);
                    // A resolution that became an outcome longer ago than the billing
                    // system accepts (imported late by a backfill, or a worker stopped
                    // for weeks) keeps that time: the reporter parks it as too old, so
                    // it is never billed into today's period by accident (`replay
                    // --too-old` bills it on purpose).
                    let became = Millis::from(r.settle_at);
                    let oldest =
                        crate::stripe::limits::oldest_acceptable_ms(self.clock.world_now());
                    let confirmed_at = if became < oldest { became } else { now };
                    let inserted = tx
                        .insert_outcome(&NewOutcome {
                            id: id.clone(),
                            tenant: tenant_id.clone(),
                            provider: provider.clone(),
                            ticket_id: ticket_id.clone(),
                            seq: r.seq,
                            resolved_at: Millis::from(r.resolved_at),
                            confirmed_at,
                            event_name: meter.event_name.clone(),
                            value: meter.value,
                            stripe_customer_id: tenant.settings.stripe_customer_id.clone(),
                            stripe_account: tenant.settings.stripe_account.clone(),
                            sink: tenant.settings.sink,
                            sink_target: tenant.settings.sink.target(&tenant.settings),
                            contract_version: contract.0.to_string(),
                            contract_hash: contract.1.to_string(),
                            evidence: evidence(r, &events, contract, verification.as_ref()),
                            state: if capped.is_some() {
                                OutcomeState::Capped
                            } else {
                                OutcomeState::Pending
                            },
                        })
                        .await?;
                    confirmed += usize::from(inserted && capped.is_none());
                }
                let status = match (&billable, &capped) {
                    (Some(_), Some(_)) => DecisionStatus::Capped,
                    (Some(_), None) => DecisionStatus::Confirmed,
                    (None, _) => DecisionStatus::NotBillable,
                };
                let mut d = decision(DecisionInput {
                    tenant,
                    provider,
                    ticket_id,
                    resolution: r,
                    events: &events,
                    status,
                    outcome_id: billable.map(|(id, _)| id),
                    is_final: true,
                    now,
                    pins: &pins,
                    verification: verification.as_ref(),
                });
                if let Some(why) = capped {
                    d.billable = false;
                    d.detail = why;
                }
                tx.write_decision(&d).await?;
                new_settled = Some(Settled {
                    seq: r.seq,
                    resolved_at: r.resolved_at,
                });
                // A reopen already stored after this resolution's window may claw back the
                // outcome just confirmed: checked for every resolution confirmed in this pass,
                // so the result does not depend on how many are confirmed at once.
                if let Some(reopen) = &r.next_reopen {
                    self.clawback(
                        &mut tx,
                        LateReopen {
                            tenant,
                            provider,
                            ticket_id,
                            seq: r.seq,
                            resolved_at: r.resolved_at,
                            reopen,
                        },
                        now,
                    )
                    .await?;
                }
            }
            let next = if new_settled != settled {
                if let Some(s) = new_settled {
                    tx.finalize_decisions_through(tenant_id, provider, ticket_id, s.seq)
                        .await?;
                }
                replay_pinned(&tenant.contract, &pins.terms, new_settled, &events).next_settle_at()
            } else {
                history.next_settle_at()
            };
            let mut next = next.map(Millis::from);
            if let Some(until) = hold_until {
                // Due means `settle_at <= now - grace`: held until `until`, not a grace later.
                next = Some(until - grace);
            }
            if new_settled == settled && hold_until.is_none() && next.is_some_and(|n| n <= now) {
                // Cannot happen (a due resolution is always confirmed above); guard the queue anyway.
                tracing::error!(%tenant_id, %ticket_id, "due ticket had nothing to confirm: postponed one minute");
                next = Some(now + Duration::from_secs(60));
            }
            tx.save_ticket(tenant_id, provider, ticket_id, new_settled, next, now)
                .await?;
        }
        tx.commit().await?;
        self.metrics.outcomes_confirmed(confirmed);
        Ok(due.len())
    }
}
