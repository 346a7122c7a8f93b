//! Inbox poller: parse claimed deliveries, store their events, replay tickets.

use super::clawback::LateReopen;
use super::evidence::{decision, DecisionInput};
use super::Worker;
use crate::event::TicketEvent;
use crate::lifecycle::DecisionStatus;
use crate::providers::{self, Headers, Webhook};
use crate::store::{ClaimedDelivery, StoreError, Tx};
use crate::tenants::Tenant;
use crate::ticket::replay_pinned;
use crate::time::Millis;
use std::collections::BTreeMap;

type TicketKey = (String, String, String);

impl Worker {
    /// Claim one batch of deliveries and apply it in one transaction.
    /// Returns how many deliveries were handled.
    ///
    /// When the batch's transaction fails for a reason that is not transient (a
    /// value the database refuses, say), the deliveries are applied one per
    /// transaction and the one that still fails is quarantined with the database's
    /// reason, so one poison delivery never holds the others back.
    ///
    /// A transient failure (a full disk, a lost connection) quarantines nothing:
    /// the pass fails, its claims are given back (now, or by the next pass when
    /// storage still refuses), and the deliveries are applied again later.
    pub async fn process_inbox_once(&self) -> Result<usize, StoreError> {
        self.release_stuck_claims().await?;
        let now = self.clock.now_ms();
        let lease_until = now + self.lease;
        // Read first: an empty inbox never takes a write transaction.
        if !self.store.any_delivery_claimable(now).await? {
            return Ok(0);
        }
        let claimed = self
            .store
            .claim_deliveries(now, lease_until, self.batch)
            .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        match self.apply_claimed(&claimed, now).await {
            Err(e) if e.is_transient() => {
                let ids: Vec<i64> = claimed.iter().map(|d| d.id).collect();
                if self
                    .store
                    .release_deliveries(&ids, lease_until)
                    .await
                    .is_err()
                {
                    self.stuck_claims()
                        .extend(ids.into_iter().map(|id| (id, lease_until)));
                }
                Err(e)
            }
            other => other.map(|()| claimed.len()),
        }
    }

    fn stuck_claims(&self) -> std::sync::MutexGuard<'_, Vec<(i64, Millis)>> {
        self.stuck.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give back the claims of failed passes that could not be given back then.
    async fn release_stuck_claims(&self) -> Result<(), StoreError> {
        let stuck = std::mem::take(&mut *self.stuck_claims());
        let mut by_lease: BTreeMap<Millis, Vec<i64>> = BTreeMap::new();
        for (id, lease) in &stuck {
            by_lease.entry(*lease).or_default().push(*id);
        }
        for (lease, ids) in &by_lease {
            if let Err(e) = self.store.release_deliveries(ids, *lease).await {
                *self.stuck_claims() = stuck;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn apply_claimed(
        &self,
        claimed: &[ClaimedDelivery],
        now: Millis,
    ) -> Result<(), StoreError> {
        match self.apply(claimed, now).await {
            Ok(()) => {}
            Err(e) if claimed.len() > 1 && !e.is_transient() => {
                tracing::warn!(error = %e, n = claimed.len(), "inbox batch failed; applying its deliveries one by one");
                for d in claimed {
                    self.apply_alone(d, now).await?;
                }
            }
            Err(e) => {
                if claimed.len() == 1 && !e.is_transient() {
                    self.apply_alone(&claimed[0], now).await?;
                } else {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Apply one delivery in its own transaction; quarantine it if the database
    /// refuses it for good.
    async fn apply_alone(&self, d: &ClaimedDelivery, now: Millis) -> Result<(), StoreError> {
        match self.apply(std::slice::from_ref(d), now).await {
            Err(e) if !e.is_transient() => {
                let reason = format!("the database refused this delivery's events: {e}");
                tracing::error!(delivery = d.id, tenant = %d.tenant, provider = %d.provider, %reason, "delivery quarantined");
                let mut tx = self.store.begin().await?;
                tx.finish_delivery(d.id, now, 0, Some(&reason)).await?;
                tx.commit().await?;
                self.metrics.deliveries_processed(0, 1);
                Ok(())
            }
            other => other,
        }
    }

    /// Parse, store the events, replay their tickets and mark the deliveries
    /// done: one transaction.
    async fn apply(&self, claimed: &[ClaimedDelivery], now: Millis) -> Result<(), StoreError> {
        let mut by_ticket: BTreeMap<TicketKey, Vec<(i64, TicketEvent)>> = BTreeMap::new();
        let mut finished: Vec<(i64, usize, Option<String>)> = Vec::with_capacity(claimed.len());
        for d in claimed {
            match self.parse(&d.tenant, &d.provider, &d.headers, &d.body) {
                Ok(events) => {
                    finished.push((d.id, events.len(), None));
                    for e in events {
                        by_ticket
                            .entry((d.tenant.clone(), d.provider.clone(), e.ticket_id.clone()))
                            .or_default()
                            .push((d.id, e));
                    }
                }
                Err(reason) => {
                    tracing::warn!(delivery = d.id, tenant = %d.tenant, provider = %d.provider, %reason, "delivery quarantined");
                    finished.push((d.id, 0, Some(reason)));
                }
            }
        }
        let mut tx = self.store.begin().await?;
        // Tickets are locked in sorted order, so concurrent workers cannot deadlock.
        for ((tenant_id, provider, ticket_id), events) in &by_ticket {
            let Some(tenant) = self.tenants.get(tenant_id) else {
                continue;
            };
            let settled = tx.lock_ticket(tenant_id, provider, ticket_id, now).await?;
            for (delivery_id, e) in events {
                tx.insert_event(tenant_id, provider, *delivery_id, None, e)
                    .await?;
            }
            self.replay_ticket(&mut tx, tenant, provider, ticket_id, settled, now)
                .await?;
        }
        for (id, n, reason) in &finished {
            tx.finish_delivery(*id, now, *n, reason.as_deref()).await?;
        }
        tx.commit().await?;
        let quarantined = finished.iter().filter(|f| f.2.is_some()).count();
        self.metrics
            .deliveries_processed(finished.len() - quarantined, quarantined);
        Ok(())
    }

    fn parse(
        &self,
        tenant_id: &str,
        provider_name: &str,
        headers: &str,
        body: &[u8],
    ) -> Result<Vec<TicketEvent>, String> {
        let tenant = self
            .tenants
            .get(tenant_id)
            .ok_or_else(|| format!("tenant `{tenant_id}` is no longer configured"))?;
        let provider = providers::lookup(provider_name)
            .ok_or_else(|| format!("unknown provider `{provider_name}`"))?;
        let settings = tenant
            .settings
            .providers
            .get(provider_name)
            .ok_or_else(|| {
                format!(
                    "provider `{provider_name}` is no longer configured for tenant `{tenant_id}`"
                )
            })?;
        let headers: Headers =
            serde_json::from_str(headers).map_err(|e| format!("stored headers: {e}"))?;
        provider
            .parse(
                &Webhook {
                    method: "POST",
                    path_and_query: "",
                    headers: &headers,
                    body,
                },
                settings,
            )
            .map_err(|e| e.to_string())
    }

    /// Replay one locked ticket and record its (non-final) decisions.
    pub(super) async fn replay_ticket(
        &self,
        tx: &mut Tx,
        tenant: &Tenant,
        provider: &str,
        ticket_id: &str,
        settled: Option<crate::ticket::Settled>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let events = tx
            .load_events(&tenant.settings.id, provider, ticket_id)
            .await?;
        let pins = self.pins(tx, tenant, provider, ticket_id).await?;
        let history = replay_pinned(&tenant.contract, &pins.terms, settled, &events);
        for r in &history.resolutions {
            let status = if r.reopened.is_some() {
                DecisionStatus::Reopened
            } else {
                DecisionStatus::InWindow
            };
            let d = decision(DecisionInput {
                tenant,
                provider,
                ticket_id,
                resolution: r,
                events: &events,
                status,
                outcome_id: None,
                is_final: false,
                now,
                pins: &pins,
                verification: None,
            });
            tx.write_decision(&d).await?;
        }
        if let (Some(s), Some(reopen)) = (settled, &history.reopen_after_settled) {
            // A reopen of the resolution already confirmed: clawback, if the contract says so.
            self.clawback(
                tx,
                LateReopen {
                    tenant,
                    provider,
                    ticket_id,
                    seq: s.seq,
                    resolved_at: s.resolved_at,
                    reopen,
                },
                now,
            )
            .await?;
        }
        let next = history.next_settle_at().map(Millis::from);
        tx.save_ticket(&tenant.settings.id, provider, ticket_id, settled, next, now)
            .await
    }
}
