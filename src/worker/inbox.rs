//! Inbox poller: parse claimed deliveries, store their events, replay tickets,
//! a batch at a time with set-based statements.

use super::batch::Batch;
use super::clawback::LateReopen;
use super::locked::Loaded;
use super::replay::{replay, TicketAt};
use super::Worker;
use crate::event::TicketEvent;
use crate::providers::{self, Headers, Webhook};
use crate::store::{ClaimedDelivery, StoreError, TicketKey, TicketSave, Tx};
use crate::tenants::Tenant;
use crate::ticket::{Reopen, Settled};
use crate::time::Millis;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What one inbox pass did.
#[derive(Debug, Clone, Copy, Default)]
pub struct InboxPass {
    /// Deliveries handled (applied or quarantined).
    pub deliveries: usize,
    /// How long the batch's transaction held the database (from `BEGIN` done
    /// to `COMMIT` done; on SQLite, the write lock), when it committed as one.
    pub transaction: Option<Duration>,
}

impl Worker {
    /// Claim one batch of deliveries and apply it in one transaction.
    /// Returns how many deliveries were handled.
    pub async fn process_inbox_once(&self) -> Result<usize, StoreError> {
        Ok(self.process_inbox_pass().await?.deliveries)
    }

    /// [`Worker::process_inbox_once`], saying how long its transaction took.
    ///
    /// When the batch's transaction fails for a reason that is not transient (a
    /// value the database refuses, say), the deliveries are applied one per
    /// transaction and the one that still fails is quarantined with the database's
    /// reason, so one poison delivery never holds the others back.
    ///
    /// A transient failure (a full disk, a lost connection) quarantines nothing:
    /// the pass fails, its claims are given back (now, or by the next pass when
    /// storage still refuses), and the deliveries are applied again later.
    pub async fn process_inbox_pass(&self) -> Result<InboxPass, StoreError> {
        self.release_stuck_claims().await?;
        let now = self.clock.now_ms();
        let lease_until = now + self.lease;
        // Read first: an empty inbox never takes a write transaction.
        if !self.store.any_delivery_claimable(now).await? {
            return Ok(InboxPass::default());
        }
        let claimed = self
            .store
            .claim_deliveries(now, lease_until, self.claim.get())
            .await?;
        if claimed.is_empty() {
            return Ok(InboxPass::default());
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
            other => other.map(|transaction| {
                if let Some(took) = transaction {
                    self.claim.record(self.store.backend(), claimed.len(), took);
                }
                InboxPass {
                    deliveries: claimed.len(),
                    transaction,
                }
            }),
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

    /// Apply the batch, or its deliveries one by one when it fails for a reason
    /// that is not transient. Returns the batch transaction's duration, when it
    /// committed as one.
    async fn apply_claimed(
        &self,
        claimed: &[ClaimedDelivery],
        now: Millis,
    ) -> Result<Option<Duration>, StoreError> {
        match self.apply(claimed, now).await {
            Ok(took) => Ok(Some(took)),
            Err(e) if claimed.len() > 1 && !e.is_transient() => {
                tracing::warn!(error = %e, n = claimed.len(), "inbox batch failed; applying its deliveries one by one");
                for d in claimed {
                    self.apply_alone(d, now).await?;
                }
                Ok(None)
            }
            Err(e) => {
                if claimed.len() == 1 && !e.is_transient() {
                    self.apply_alone(&claimed[0], now).await?;
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Apply one delivery in its own transaction; quarantine it if the database
    /// refuses it for good.
    async fn apply_alone(&self, d: &ClaimedDelivery, now: Millis) -> Result<(), StoreError> {
        match self.apply(std::slice::from_ref(d), now).await {
            Ok(_) => Ok(()),
            Err(e) if !e.is_transient() => {
                let reason = format!("the database refused this delivery's events: {e}");
                tracing::error!(delivery = d.id, tenant = %d.tenant, provider = %d.provider, %reason, "delivery quarantined");
                let mut tx = self.store.begin().await?;
                tx.finish_delivery(d.id, now, 0, Some(&reason)).await?;
                tx.commit().await?;
                self.metrics.deliveries_processed(0, 1);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Parse (before the transaction opens), then in one short transaction: lock
    /// every ticket the batch touches, store the events, read the tickets' events
    /// and pinned contracts, replay them in memory, write the decisions, the
    /// tickets and the deliveries' ends. A few statements for the whole batch
    /// (see `store::ticket_batch`), not a few per ticket.
    /// Returns how long the transaction took.
    async fn apply(
        &self,
        claimed: &[ClaimedDelivery],
        now: Millis,
    ) -> Result<Duration, StoreError> {
        let batch = Batch::parse(claimed, |d| {
            self.parse(&d.tenant, &d.provider, &d.headers, &d.body)
        });
        let mut tx = self.store.begin().await?;
        let began = Instant::now();
        if let Err(e) = self.apply_parsed(&mut tx, &batch, now).await {
            // Give the write lock back now, before the next transaction asks for it.
            let _ = tx.rollback().await;
            return Err(e);
        }
        tx.commit().await?;
        let took = began.elapsed();
        let quarantined = batch.quarantined();
        self.metrics
            .deliveries_processed(batch.finished.len() - quarantined, quarantined);
        Ok(took)
    }

    async fn apply_parsed(
        &self,
        tx: &mut Tx,
        batch: &Batch,
        now: Millis,
    ) -> Result<(), StoreError> {
        // A delivery of a tenant no longer configured is quarantined by `parse`.
        let tickets: Vec<(&TicketKey, &Tenant)> = batch
            .tickets
            .keys()
            .filter_map(|k| self.tenants.get(&k.0).map(|t| (k, t)))
            .collect();
        let keys: Vec<TicketKey> = tickets.iter().map(|(k, _)| (*k).clone()).collect();
        // Sorted: concurrent workers lock in one order and cannot deadlock.
        let settled = tx.lock_tickets(&keys, now).await?;
        tx.insert_events(&batch.new_events()).await?;
        // Read after the lock: events a worker committed before it are seen.
        let mut loaded = Loaded::read(tx, &tickets, &keys).await?;
        let mut decisions = Vec::new();
        let mut saves = Vec::with_capacity(tickets.len());
        let mut late = Vec::new();
        for (key, tenant) in &tickets {
            let Some(settled) = settled.get(*key).copied() else {
                // Inserted or already there, and locked: never missing.
                return Err(StoreError::Db(sqlx::Error::RowNotFound));
            };
            let (events, pins) = loaded.take(key);
            let at = TicketAt {
                tenant,
                provider: &key.1,
                ticket_id: &key.2,
            };
            let r = replay(&at, settled, &events, &pins, now);
            decisions.extend(r.decisions);
            saves.push(TicketSave {
                key,
                settled,
                settle_at: r.settle_at,
            });
            if let Some(l) = r.late_reopen {
                late.push((at, l));
            }
        }
        tx.write_decisions(&decisions).await?;
        for (at, l) in &late {
            self.claw_back_late(tx, at, l, now).await?;
        }
        tx.save_tickets(&saves, now).await?;
        tx.finish_deliveries(&batch.finished, now).await
    }

    /// A reopen of the resolution already confirmed (`late`: that resolution
    /// and the reopen): clawback, if the contract says so.
    async fn claw_back_late(
        &self,
        tx: &mut Tx,
        at: &TicketAt<'_>,
        (settled, reopen): &(Settled, Reopen),
        now: Millis,
    ) -> Result<(), StoreError> {
        let late = LateReopen {
            tenant: at.tenant,
            provider: at.provider,
            ticket_id: at.ticket_id,
            seq: settled.seq,
            resolved_at: settled.resolved_at,
            reopen,
        };
        self.clawback(tx, late, now).await
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

    /// Replay one locked ticket and record its (non-final) decisions (the
    /// verification pass, after it learned events).
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
        let at = TicketAt {
            tenant,
            provider,
            ticket_id,
        };
        let r = replay(&at, settled, &events, &pins, now);
        tx.write_decisions(&r.decisions).await?;
        if let Some(l) = &r.late_reopen {
            self.claw_back_late(tx, &at, l, now).await?;
        }
        let key = (
            tenant.settings.id.clone(),
            provider.to_string(),
            ticket_id.to_string(),
        );
        let save = TicketSave {
            key: &key,
            settled,
            settle_at: r.settle_at,
        };
        tx.save_tickets(std::slice::from_ref(&save), now).await
    }
}
