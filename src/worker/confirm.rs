//! Confirmer: resolutions whose window has passed become outcomes (or final
//! non-billable decisions), with evidence, in one transaction.
//!
//! One pass ([`Worker::confirm_once`]) locks a batch of due tickets in one
//! transaction and reads their events and pins in one query each
//! ([`Loaded`]); for each ticket ([`Worker::confirm_ticket`]) every due
//! resolution, in order, is gated by verification, checked against the caps,
//! and decided ([`Worker::decide_due`]); the outcomes, final decisions and ticket
//! saves are kept in [`PassWrites`] and written set-based at the end (before a
//! cap check or a clawback, which read what the pass wrote).
//! When the batch fails for a reason that is not transient, its tickets are
//! confirmed one per transaction ([`Worker::confirm_alone`]), and one that still
//! fails (a pinned contract or a stored state that cannot be read) is postponed
//! an hour: one bad row never stops confirmation for everyone.

use super::clawback::{over_cap, LateReopen};
use super::evidence::{decision, DecisionInput, Pins, Verification};
use super::locked::Loaded;
use super::pass_writes::PassWrites;
use super::{Worker, TX_BUDGET};
use crate::contract::Meter;
use crate::event::TicketEvent;
use crate::lifecycle::{DecisionStatus, OutcomeState};
use crate::outcome::outcome_id;
use crate::store::{DecisionWrite, NewOutcome, StoreError, TicketKey, Tx};
use crate::tenants::Tenant;
use crate::ticket::{replay_pinned, Resolution, Settled, Standing, TicketHistory};
use crate::time::Millis;
use crate::verification::judge::{gate, Gate};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Due means: window ended, plus the grace, before the oldest delivery not yet
/// processed arrived (`oldest`). A reopen still waiting in the inbox (a backlog, a
/// stopped worker) holds confirmation back instead of being ignored.
fn due_horizon(oldest: Option<Millis>, now: Millis, grace: Duration) -> Millis {
    oldest.map_or(now, |received| received.min(now)) - grace
}

/// What a confirmation transaction did, before its commit.
struct Done {
    /// Outcomes confirmed (new, not stopped by a cap).
    outcomes: usize,
    /// Due tickets gone through.
    tickets: usize,
    /// From locking the tickets to the last write: the part that grows with
    /// how many it takes.
    worked: Duration,
}

/// The times of one confirmation pass.
#[derive(Clone, Copy)]
struct Pass {
    now_t: DateTime<Utc>,
    /// `now_t` as an instant.
    now: Millis,
    /// `worker.confirm_grace`.
    grace: Duration,
    /// Resolutions whose window ended by then are due.
    horizon: DateTime<Utc>,
}

/// A due ticket, locked in the pass's transaction, with what its resolutions are
/// decided from.
struct DueTicket<'k, 'a> {
    /// Borrowed from the pass's due list, which outlives its writes.
    key: &'k TicketKey,
    tenant: &'a Tenant,
    events: &'a [TicketEvent],
    pins: &'a Pins,
}

impl DueTicket<'_, '_> {
    fn tenant_id(&self) -> &str {
        &self.key.0
    }

    fn provider(&self) -> &str {
        &self.key.1
    }

    fn ticket_id(&self) -> &str {
        &self.key.2
    }

    /// The decision row of resolution `r`, as [`decision`] writes it: final,
    /// unless it is held.
    fn decision(
        &self,
        r: &Resolution,
        status: DecisionStatus,
        outcome_id: Option<String>,
        verification: Option<&Verification>,
        now: Millis,
    ) -> DecisionWrite {
        decision(DecisionInput {
            tenant: self.tenant,
            provider: self.provider(),
            ticket_id: self.ticket_id(),
            resolution: r,
            events: self.events,
            status,
            outcome_id,
            is_final: status != DecisionStatus::Held,
            now,
            pins: self.pins,
            verification,
        })
    }
}

/// What verification before billing says of a due resolution.
enum Checked {
    /// Go on, with this verification recorded (none for a provider that is not
    /// verified).
    Go(Option<Verification>),
    /// Held until then; its decision is written, not final.
    Held { until: Millis },
}

/// What the confirmer decided of one due resolution, before it is written.
struct Decided<'a> {
    r: &'a Resolution,
    /// Its outcome id and meter, when the contract bills it.
    billable: Option<(String, Meter)>,
    /// Why a cap stopped it (a billable one only).
    capped: Option<String>,
    verification: Option<Verification>,
}

/// What deciding one due resolution came to.
enum Step {
    /// Settled: its final decision is written, and its outcome when billable.
    Settled,
    /// Held by verification until then: the resolutions after it wait.
    Held { until: Millis },
}

/// What deciding a ticket's due resolutions came to.
struct Progress {
    /// The ticket's settled resolution before the pass.
    before: Option<Settled>,
    /// The last resolution settled now (`before` if none was).
    settled: Option<Settled>,
    /// A resolution held by verification until then.
    hold_until: Option<Millis>,
}

impl Worker {
    /// Confirm one batch of due tickets. Touches only tickets whose `settle_at`
    /// has passed (an index range), never the whole open set.
    pub async fn confirm_once(&self) -> Result<usize, StoreError> {
        let now_t = self.clock.now();
        let now = Millis::from(now_t);
        let grace = self.confirm_grace;
        // Read first: a pass with nothing due never opens a write transaction.
        let oldest = self.store.peek_oldest_pending_delivery().await?;
        let peeked = due_horizon(oldest, now, grace);
        if !self.store.any_ticket_due(peeked).await? {
            return Ok(0);
        }
        if !self.verifier.is_empty() {
            // Ask the helpdesks first, before this pass's write transaction opens.
            self.verify_due(peeked, now).await?;
        }
        let mut tx = self.store.begin().await?;
        let horizon = due_horizon(tx.oldest_pending_delivery().await?, now, grace);
        let due = tx.due_tickets(horizon, self.confirm_claim.get()).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let pass = Pass {
            now_t,
            now,
            grace,
            horizon: horizon.to_datetime(),
        };
        match self.confirm_batch(tx, &pass, &due).await {
            Ok(done) => {
                self.metrics.outcomes_confirmed(done.outcomes);
                // The commit, the same for any size, left out.
                self.confirm_claim
                    .record(self.store.backend(), done.tickets, done.worked);
                return Ok(done.tickets);
            }
            // One ticket's stored data the store cannot read (a pinned contract, a
            // state) must not hold back every other tenant's: one per transaction.
            Err(e) if !e.is_transient() => {
                tracing::warn!(error = %e, n = due.len(), "confirmation batch failed; confirming its tickets one by one");
                for key in &due {
                    match self.confirm_alone(&pass, key).await {
                        Ok(()) => {}
                        Err(e) if e.is_transient() => return Err(e),
                        // Not even postponed: logged, and the others still go on.
                        Err(e) => {
                            let (tenant_id, provider, ticket_id) = key;
                            tracing::error!(%tenant_id, %provider, %ticket_id, reason = %e, "due ticket can be neither confirmed nor postponed");
                        }
                    }
                }
            }
            Err(e) => return Err(e),
        }
        Ok(due.len())
    }

    /// Confirm the due tickets in one transaction and commit it; on an error
    /// nothing is written.
    async fn confirm_batch(
        &self,
        mut tx: Tx,
        pass: &Pass,
        due: &[TicketKey],
    ) -> Result<Done, StoreError> {
        match self.confirm_tickets(&mut tx, pass, due).await {
            Ok(done) => {
                tx.commit().await?;
                Ok(done)
            }
            Err(e) => {
                // Give the write lock back now, before the next transaction asks for it.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Confirm one due ticket in a transaction of its own (after its batch failed).
    /// A ticket that fails for a reason that is not transient (a pinned contract or
    /// a stored state that cannot be read) is postponed an hour with an error that
    /// names it, and counted: never confirmed under another contract, and never in
    /// the way of the others.
    async fn confirm_alone(&self, pass: &Pass, key: &TicketKey) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        // What waits in the inbox now, as a batch's transaction would see it.
        let horizon = due_horizon(tx.oldest_pending_delivery().await?, pass.now, pass.grace);
        let pass = Pass {
            horizon: horizon.to_datetime(),
            ..*pass
        };
        let e = match self
            .confirm_tickets(&mut tx, &pass, std::slice::from_ref(key))
            .await
        {
            Ok(done) => {
                tx.commit().await?;
                self.metrics.outcomes_confirmed(done.outcomes);
                return Ok(());
            }
            Err(e) => e,
        };
        let _ = tx.rollback().await;
        if e.is_transient() {
            return Err(e);
        }
        let (tenant_id, provider, ticket_id) = key;
        tracing::error!(%tenant_id, %provider, %ticket_id, reason = %e, "due ticket cannot be confirmed: postponed one hour (not confirmed under another contract; repair the stored data)");
        let mut tx = self.store.begin().await?;
        postpone_an_hour(&mut tx, &pass, key).await?;
        tx.commit().await?;
        self.metrics.tickets_postponed("unreadable");
        Ok(())
    }

    /// Confirm the due tickets in `tx`: lock them all and read their events
    /// and pinned contracts (four statements for the batch, more past the
    /// engines' parameter limits), then decide them
    /// in order until [`TX_BUDGET`] has passed (the rest stay due for the next
    /// pass, and the writer, on SQLite everyone's, is given back soon), keeping
    /// the writes for a few multi-row statements ([`PassWrites`]).
    async fn confirm_tickets(
        &self,
        tx: &mut Tx,
        pass: &Pass,
        due: &[TicketKey],
    ) -> Result<Done, StoreError> {
        let started = std::time::Instant::now();
        let tickets: Vec<(&TicketKey, &Tenant)> = due
            .iter()
            .filter_map(|k| self.tenants.get(&k.0).map(|t| (k, t)))
            .collect();
        let mut keys: Vec<TicketKey> = tickets.iter().map(|(k, _)| (*k).clone()).collect();
        // Sorted: concurrent workers lock in one order and cannot deadlock.
        keys.sort();
        keys.dedup();
        let settled = tx.lock_tickets(&keys, pass.now).await?;
        let mut loaded = Loaded::read(tx, &tickets, &keys).await?;
        let mut writes = PassWrites::default();
        let mut done = 0usize;
        for key in due {
            if done > 0 && started.elapsed() >= TX_BUDGET {
                break;
            }
            done += 1;
            let Some(tenant) = self.tenants.get(&key.0) else {
                let (tenant_id, _, ticket_id) = key;
                tracing::error!(%tenant_id, %ticket_id, "due ticket of an unconfigured tenant: postponed one hour");
                postpone_an_hour(tx, pass, key).await?;
                continue;
            };
            let Some(settled) = settled.get(key).copied() else {
                // Inserted or already there, and locked: never missing.
                return Err(StoreError::Db(sqlx::Error::RowNotFound));
            };
            let (events, pins) = loaded.take(key);
            let t = DueTicket {
                key,
                tenant,
                events: &events,
                pins: &pins,
            };
            self.confirm_ticket(tx, &mut writes, pass, &t, settled)
                .await?;
        }
        writes.flush(tx, pass.now).await?;
        Ok(Done {
            outcomes: writes.confirmed(),
            tickets: done,
            worked: started.elapsed(),
        })
    }

    /// Decide the due resolutions of one locked ticket, in order, and save it
    /// with the time it is due next (written with the pass's other writes).
    async fn confirm_ticket<'k>(
        &self,
        tx: &mut Tx,
        writes: &mut PassWrites<'k>,
        pass: &Pass,
        t: &DueTicket<'k, '_>,
        settled: Option<Settled>,
    ) -> Result<(), StoreError> {
        let history = replay_pinned(&t.tenant.contract, &t.pins.terms, settled, t.events);
        let mut progress = Progress {
            before: settled,
            settled,
            hold_until: None,
        };
        for r in &history.resolutions {
            match r.standing(pass.horizon) {
                Standing::Reopened => continue,
                Standing::InWindow => break,
                Standing::Due => {}
            }
            match self.decide_due(tx, writes, pass, t, r).await? {
                Step::Settled => {
                    progress.settled = Some(Settled {
                        seq: r.seq,
                        resolved_at: r.resolved_at,
                    });
                }
                Step::Held { until } => {
                    progress.hold_until = Some(until);
                    break;
                }
            }
        }
        if progress.settled != progress.before {
            if let Some(s) = progress.settled {
                writes.finalize_through(t.key, s.seq);
            }
        }
        let next = next_due(pass, t, &history, &progress);
        writes.save(t.key, progress.settled, next);
        Ok(())
    }

    /// Decide one due resolution: verification first, then the caps, then its
    /// outcome and final decision, then a clawback of it by a reopen already stored.
    async fn decide_due(
        &self,
        tx: &mut Tx,
        writes: &mut PassWrites<'_>,
        pass: &Pass,
        t: &DueTicket<'_, '_>,
        r: &Resolution,
    ) -> Result<Step, StoreError> {
        let verification = match self.check_verified(tx, writes, pass, t, r).await? {
            Checked::Go(verification) => verification,
            Checked::Held { until } => return Ok(Step::Held { until }),
        };
        let (tenant_id, provider, ticket_id) = t.key;
        let billable = r
            .verdict
            .meter
            .clone()
            .map(|m| (outcome_id(tenant_id, provider, ticket_id, r.seq), m));
        // Caps of the contract this resolution is pinned to (the one it was first
        // decided under), like every other term.
        let caps = &t.pins.terms.get(&r.seq).unwrap_or(&t.tenant.contract).caps;
        let capped = match &billable {
            Some(_) if caps.is_set() => {
                // The count includes the outcomes this pass has not written yet.
                writes.flush(tx, pass.now).await?;
                over_cap(tx, caps, &t.tenant.settings.stripe_customer_id, pass.now_t).await?
            }
            _ => None,
        };
        let decided = Decided {
            r,
            billable,
            capped,
            verification,
        };
        // The outcome keeps its final decision's evidence (built once).
        let decision = final_decision(pass, t, &decided);
        if let Some(o) = self.new_outcome(pass, t, &decided, &decision.evidence) {
            writes.outcome(o);
        }
        writes.decision(decision);
        // A reopen already stored after this resolution's window may claw back the
        // outcome just confirmed: checked for every resolution confirmed in this pass,
        // so the result does not depend on how many are confirmed at once.
        if let Some(reopen) = &r.next_reopen {
            // The clawback reads the outcome just decided.
            writes.flush(tx, pass.now).await?;
            self.clawback(
                tx,
                LateReopen {
                    tenant: t.tenant,
                    provider,
                    ticket_id,
                    seq: r.seq,
                    resolved_at: r.resolved_at,
                    reopen,
                },
                pass.now,
            )
            .await?;
        }
        Ok(Step::Settled)
    }

    /// Verification before billing: bill only what the helpdesk agreed to (or,
    /// past verify.max_hold, what verify.on_unreachable allows). A resolution not
    /// billed is checked too before it is settled: settling freezes the history
    /// before it, lost webhooks included. A held one gets a decision that is not final.
    async fn check_verified(
        &self,
        tx: &mut Tx,
        writes: &mut PassWrites<'_>,
        pass: &Pass,
        t: &DueTicket<'_, '_>,
        r: &Resolution,
    ) -> Result<Checked, StoreError> {
        if !self.verifier.is_on(t.tenant_id(), t.provider()) {
            return Ok(Checked::Go(None));
        }
        let latest = tx
            .latest_check(
                t.tenant_id(),
                t.provider(),
                t.ticket_id(),
                r.seq,
                Millis::from(r.resolved_at),
            )
            .await?;
        match gate(
            t.provider(),
            latest.as_ref(),
            Millis::from(r.settle_at),
            pass.now,
            &self.verifier.settings,
        ) {
            Gate::Bill { verified, note } => Ok(Checked::Go(Some((verified, note)))),
            Gate::Hold { until, why, reason } => {
                self.metrics.verification_hold(t.provider(), reason);
                let mut d = t.decision(r, DecisionStatus::Held, None, None, pass.now);
                d.detail = why;
                writes.decision(d);
                Ok(Checked::Held { until })
            }
        }
    }

    /// The outcome of a billable resolution (`None`: the contract does not bill it),
    /// `capped` when a cap stopped it, with the `evidence` of its final decision.
    fn new_outcome(
        &self,
        pass: &Pass,
        t: &DueTicket<'_, '_>,
        d: &Decided<'_>,
        evidence: &str,
    ) -> Option<NewOutcome> {
        let (id, meter) = d.billable.as_ref()?;
        let r = d.r;
        let contract = t.pins.contract_id(r.seq, t.tenant);
        // A resolution that became an outcome longer ago than the billing
        // system accepts (imported late by a backfill, or a worker stopped
        // for weeks) keeps that time: the reporter parks it as too old, so
        // it is never billed into today's period by accident (`replay
        // --too-old` bills it on purpose).
        let became = Millis::from(r.settle_at);
        let oldest = crate::stripe::limits::oldest_acceptable_ms(self.clock.world_now());
        let confirmed_at = if became < oldest { became } else { pass.now };
        let settings = &t.tenant.settings;
        Some(NewOutcome {
            id: id.clone(),
            tenant: t.tenant_id().to_string(),
            provider: t.provider().to_string(),
            ticket_id: t.ticket_id().to_string(),
            seq: r.seq,
            resolved_at: Millis::from(r.resolved_at),
            confirmed_at,
            event_name: meter.event_name.clone(),
            value: meter.value,
            stripe_customer_id: settings.stripe_customer_id.clone(),
            stripe_account: settings.stripe_account.clone(),
            sink: settings.sink,
            sink_target: settings.sink.target(settings),
            contract_version: contract.0.to_string(),
            contract_hash: contract.1.to_string(),
            evidence: evidence.to_string(),
            state: if d.capped.is_some() {
                OutcomeState::Capped
            } else {
                OutcomeState::Pending
            },
        })
    }
}

/// A due ticket left as it is (its tenant is no longer configured, or its stored
/// data cannot be read), due again in an hour. Written without reading the ticket.
async fn postpone_an_hour(tx: &mut Tx, pass: &Pass, key: &TicketKey) -> Result<(), StoreError> {
    let (tenant_id, provider, ticket_id) = key;
    tx.postpone_ticket(
        tenant_id,
        provider,
        ticket_id,
        pass.now + Duration::from_secs(3600),
        pass.now,
    )
    .await
}

/// The final decision of a settled resolution: confirmed, capped (not billable,
/// with the cap that stopped it) or not billable.
fn final_decision(pass: &Pass, t: &DueTicket<'_, '_>, d: &Decided<'_>) -> DecisionWrite {
    let status = match (&d.billable, &d.capped) {
        (Some(_), Some(_)) => DecisionStatus::Capped,
        (Some(_), None) => DecisionStatus::Confirmed,
        (None, _) => DecisionStatus::NotBillable,
    };
    let mut w = t.decision(
        d.r,
        status,
        d.billable.as_ref().map(|(id, _)| id.clone()),
        d.verification.as_ref(),
        pass.now,
    );
    if let Some(why) = &d.capped {
        w.billable = false;
        w.detail = why.clone();
    }
    w
}

/// When the ticket is due next (Unix ms): the earliest window end of a
/// resolution not reopened after the one settled now, or the end of a hold.
fn next_due(
    pass: &Pass,
    t: &DueTicket<'_, '_>,
    history: &TicketHistory,
    progress: &Progress,
) -> Option<Millis> {
    let moved = progress.settled != progress.before;
    let next = if moved {
        replay_pinned(
            &t.tenant.contract,
            &t.pins.terms,
            progress.settled,
            t.events,
        )
        .next_settle_at()
    } else {
        history.next_settle_at()
    };
    let mut next = next.map(Millis::from);
    if let Some(until) = progress.hold_until {
        // Due means `settle_at <= now - grace`: held until `until`, not a grace later.
        next = Some(until - pass.grace);
    }
    if !moved && progress.hold_until.is_none() && next.is_some_and(|n| n <= pass.now) {
        // Cannot happen (a due resolution is always confirmed above); guard the queue anyway.
        tracing::error!(tenant_id = %t.tenant_id(), ticket_id = %t.ticket_id(), "due ticket had nothing to confirm: postponed one minute");
        next = Some(pass.now + Duration::from_secs(60));
    }
    next
}
