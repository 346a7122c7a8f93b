//! The verification pass: before the confirmer bills a due resolution of a
//! provider with API credentials, ask the helpdesk what happened to the ticket.
//!
//! Three steps, so no transaction is open while a helpdesk is called: read the
//! due tickets and their events without a lock; call the APIs (a few at once,
//! each client within its rate budget); then write each ticket's check, and the
//! events it learned, in a short transaction of its own, replaying the ticket so
//! the state machine decides with them.

use super::Worker;
use crate::event::TicketEvent;
use crate::helpdesk_api::{ApiError, HelpdeskApi, TicketLook};
use crate::store::{Check, CheckResult, StoreError};
use crate::tenants::Tenant;
use crate::ticket::{replay_pinned, Standing};
use crate::time::Millis;
use crate::verification::judge::{finding, learned_events, CheckedHistory, Question};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::task::JoinSet;

/// A due resolution to check.
struct Candidate {
    tenant: String,
    provider: String,
    ticket_id: String,
    seq: u32,
    resolved_at: DateTime<Utc>,
    /// Later due resolutions of the ticket (the confirmer may reach them in the
    /// same pass): checked with the same answer when it comes.
    then: Vec<(u32, DateTime<Utc>)>,
    /// History from here on is what the check asks for (the settled resolution).
    after: Option<DateTime<Utc>>,
    /// Same-kind events this close are one happening (`HelpdeskApi::same_happening`).
    same_within: chrono::Duration,
    /// The newest earlier check, if it failed (its failures and hold start carry on).
    failed_before: Option<Check>,
}

impl Worker {
    /// Check the due resolutions of verified providers that have no usable
    /// check yet (or whose retry time has come). Returns how many were checked.
    pub(super) async fn verify_due(
        &self,
        horizon: Millis,
        now: Millis,
    ) -> Result<usize, StoreError> {
        if self.verifier.is_empty() {
            return Ok(0);
        }
        let horizon_t = horizon.to_datetime();
        let mut work: Vec<(Arc<dyn HelpdeskApi>, Candidate)> = Vec::new();
        for (tenant_id, provider, ticket_id) in
            self.store.peek_due_tickets(horizon, self.batch).await?
        {
            let (Some(client), Some(tenant)) = (
                self.verifier.client(&tenant_id, &provider),
                self.tenants.get(&tenant_id),
            ) else {
                continue;
            };
            let candidate = match self
                .candidate(tenant, &provider, &ticket_id, horizon_t, now)
                .await
            {
                Ok(c) => c,
                // A ticket whose stored data cannot be read (a pinned contract, a
                // state) is skipped, not the pass: the confirmer postpones it.
                Err(e) if !e.is_transient() => {
                    tracing::error!(tenant = %tenant_id, %provider, ticket = %ticket_id, reason = %e, "verification: due ticket skipped: its stored data cannot be read");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(mut c) = candidate {
                c.same_within = client.same_happening();
                work.push((client.clone(), c));
            }
        }
        if work.is_empty() {
            return Ok(0);
        }
        let n = work.len();
        let mut looks: JoinSet<(Candidate, Result<TicketLook, ApiError>)> = JoinSet::new();
        let mut queue = work.into_iter();
        let mut results = Vec::with_capacity(n);
        loop {
            while looks.len() < self.verifier.settings.concurrency {
                let Some((client, c)) = queue.next() else {
                    break;
                };
                looks.spawn(async move {
                    let look = client.look(&c.ticket_id, c.after).await;
                    (c, look)
                });
            }
            match looks.join_next().await {
                Some(Ok(done)) => results.push(done),
                Some(Err(e)) => tracing::error!(error = %e, "a helpdesk API call panicked"),
                None => break,
            }
        }
        for (c, look) in results {
            let (tenant, provider, ticket) =
                (c.tenant.clone(), c.provider.clone(), c.ticket_id.clone());
            match self.record_check(c, look, horizon_t, now).await {
                Ok(()) => {}
                // Neither its stored data nor the answer can be written or read as
                // they are (a damaged row; a NUL byte PostgreSQL refuses): postponed
                // an hour like the confirmer's, so the helpdesk is not asked again
                // at every pass, and never billed unchecked.
                Err(e) if !e.is_transient() => {
                    tracing::error!(%tenant, %provider, %ticket, reason = %e, "verification: check not recorded: the ticket is postponed one hour");
                    let mut tx = self.store.begin().await?;
                    tx.postpone_ticket(
                        &tenant,
                        &provider,
                        &ticket,
                        now + std::time::Duration::from_secs(3600),
                        now,
                    )
                    .await?;
                    tx.commit().await?;
                    self.metrics.tickets_postponed("unreadable");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// The ticket's first due resolution, if not yet checked (or its retry time
    /// has come). Read without a lock: the write re-reads. A resolution the
    /// contract does not bill is checked too: settling it freezes the history
    /// before it, so a resolution or tag whose webhook was lost must be learned
    /// first (or every later outcome of the ticket is numbered, or judged, wrong).
    async fn candidate(
        &self,
        tenant: &Tenant,
        provider: &str,
        ticket_id: &str,
        horizon: DateTime<Utc>,
        now: Millis,
    ) -> Result<Option<Candidate>, StoreError> {
        let (settled, events) = self
            .store
            .read_ticket(&tenant.settings.id, provider, ticket_id)
            .await?;
        // The pinned contracts too: the same resolution the confirmer will gate.
        let pins = self.pins_unlocked(tenant, provider, ticket_id).await?;
        let history = replay_pinned(&tenant.contract, &pins.terms, settled, &events);
        // The confirmer goes through the resolutions in order, skipping reopened
        // ones and stopping at the first still in its window: those it reaches.
        let mut due = history
            .resolutions
            .iter()
            .filter(|r| r.standing(horizon) != Standing::Reopened)
            .take_while(|r| r.standing(horizon) == Standing::Due);
        let Some(r) = due.next() else {
            return Ok(None);
        };
        let then: Vec<(u32, DateTime<Utc>)> = due.map(|r| (r.seq, r.resolved_at)).collect();
        let latest = self
            .store
            .latest_check(
                &tenant.settings.id,
                provider,
                ticket_id,
                r.seq,
                Millis::from(r.resolved_at),
            )
            .await?;
        let settle_at = Millis::from(r.settle_at);
        let failed_before = match latest {
            Some(c) if c.result == CheckResult::Agreed && c.checked_at >= settle_at => {
                return Ok(None)
            }
            Some(c) if c.result == CheckResult::Unreachable => {
                if c.next_try_at.is_some_and(|t| t > now) {
                    return Ok(None);
                }
                Some(c)
            }
            // A disagreement the state machine did not act on (the events changed
            // since?): asked again, but not more often than retry_base.
            Some(c)
                if c.result == CheckResult::Disagreed
                    && now < c.checked_at + self.verifier.settings.retry_base =>
            {
                return Ok(None)
            }
            _ => None,
        };
        Ok(Some(Candidate {
            tenant: tenant.settings.id.clone(),
            provider: provider.to_string(),
            ticket_id: ticket_id.to_string(),
            seq: r.seq,
            resolved_at: r.resolved_at,
            then,
            after: settled.map(|s| s.resolved_at),
            same_within: crate::verification::judge::SAME_HAPPENING,
            failed_before,
        }))
    }

    /// Write one check, and what it learned, in one transaction with the ticket locked.
    async fn record_check(
        &self,
        c: Candidate,
        look: Result<TicketLook, ApiError>,
        horizon: DateTime<Utc>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let Some(tenant) = self.tenants.get(&c.tenant) else {
            return Ok(());
        };
        let mut tx = self.store.begin().await?;
        let settled = tx
            .lock_ticket(&c.tenant, &c.provider, &c.ticket_id, now)
            .await?;
        let check = unanswered(&c, now);
        let found = match look {
            Ok(look) => {
                let known = tx.load_events(&c.tenant, &c.provider, &c.ticket_id).await?;
                let question = Question {
                    provider: &c.provider,
                    ticket_id: &c.ticket_id,
                    after: settled.map(|s| s.resolved_at),
                    resolved_at: c.resolved_at,
                    within: c.same_within,
                };
                let learned = learned_events(&question, &known, &look);
                let pins = self
                    .pins(&mut tx, tenant, &c.provider, &c.ticket_id)
                    .await?;
                let h = CheckedHistory {
                    contract: &tenant.contract,
                    pins: &pins.terms,
                    settled,
                    known: &known,
                    learned: &learned,
                    horizon,
                };
                let (check, more) = self.answered(&c, &look, &h, check);
                Found {
                    check,
                    more,
                    learned,
                }
            }
            Err(ApiError::Throttled { .. }) => {
                // Nothing was asked (this client's own budget): no check, no
                // failure; the confirmer waits and the next pass asks again.
                return tx.rollback().await;
            }
            Err(e) => Found {
                check: self.unreachable(&c, &e, check),
                more: Vec::new(),
                learned: Vec::new(),
            },
        };
        let id = tx.insert_check(&found.check).await?;
        for m in &found.more {
            tx.insert_check(m).await?;
        }
        for e in &found.learned {
            tx.insert_event(&c.tenant, &c.provider, 0, Some(id), e)
                .await?;
        }
        if !found.learned.is_empty() {
            self.replay_ticket(&mut tx, tenant, &c.provider, &c.ticket_id, settled, now)
                .await?;
        }
        tx.commit().await
    }

    /// The helpdesk answered: what it says of the resolution asked about (and, when
    /// it agrees, of the later due ones, from the same answer: `more`), counted and
    /// logged.
    fn answered(
        &self,
        c: &Candidate,
        look: &TicketLook,
        h: &CheckedHistory<'_>,
        check: Check,
    ) -> (Check, Vec<Check>) {
        let (result, detail) = finding(h, c.seq, c.resolved_at);
        let check = Check {
            result,
            detail: format!("{detail} (status `{}`)", look.status),
            answer: look.answer.to_string(),
            learned: u32::try_from(h.learned.len()).unwrap_or(u32::MAX),
            ..check
        };
        let mut more: Vec<Check> = Vec::new();
        if result == CheckResult::Agreed {
            for (seq, resolved_at) in &c.then {
                let (result, detail) = finding(h, *seq, *resolved_at);
                self.metrics.verification(&c.provider, result.as_str());
                more.push(Check {
                    seq: *seq,
                    resolved_at: Millis::from(*resolved_at),
                    result,
                    detail: format!("{detail} (status `{}`)", look.status),
                    learned: 0,
                    ..check.clone()
                });
            }
        }
        self.metrics.verification(&c.provider, result.as_str());
        if result == CheckResult::Disagreed {
            let reason = h
                .learned
                .iter()
                .map(|e| e.kind)
                .find(|k| *k != crate::event::EventKind::Resolved)
                .map_or("other", |k| k.as_str());
            self.metrics.verification_disagreement(&c.provider, reason);
            tracing::info!(tenant = %c.tenant, provider = %c.provider, ticket = %c.ticket_id, seq = c.seq, detail = %check.detail, "verification: the helpdesk disagrees; not billed");
        }
        (check, more)
    }

    /// The helpdesk could not be asked: the check is a failure, one more than the
    /// last (its hold goes on from when it began), with the time to try again.
    fn unreachable(&self, c: &Candidate, e: &ApiError, check: Check) -> Check {
        let now = check.checked_at;
        let (failures, held_since) = match &c.failed_before {
            Some(prev) => (
                prev.failures.saturating_add(1),
                prev.held_since.unwrap_or(prev.checked_at),
            ),
            None => (1, now),
        };
        let wait = self.verifier.settings.backoff(failures, e.retry_after());
        self.metrics
            .verification(&c.provider, CheckResult::Unreachable.as_str());
        self.metrics
            .helpdesk_api_error(&c.provider, e.status_label());
        if matches!(e, ApiError::Refused { .. }) {
            tracing::error!(tenant = %c.tenant, provider = %c.provider, error = %e, "verification: the helpdesk refused our API credentials; outcomes are held until they are fixed");
        } else {
            tracing::warn!(tenant = %c.tenant, provider = %c.provider, ticket = %c.ticket_id, error = %e, failures, "verification: helpdesk API unavailable; outcome held");
        }
        Check {
            failures,
            failure: Some(e.failure_kind().to_string()),
            held_since: Some(held_since),
            next_try_at: Some(now + wait),
            detail: e.to_string(),
            answer: serde_json::json!({ "error": e.to_string() }).to_string(),
            ..check
        }
    }
}

/// What one check comes to, before it is written: the check of the resolution
/// asked about, checks of the later due ones, and the events the answer taught.
struct Found {
    check: Check,
    more: Vec<Check>,
    learned: Vec<TicketEvent>,
}

/// The check of `c` made `now`, before the answer is known: unreachable, no failure.
fn unanswered(c: &Candidate, now: Millis) -> Check {
    Check {
        id: 0,
        tenant: c.tenant.clone(),
        provider: c.provider.clone(),
        ticket_id: c.ticket_id.clone(),
        seq: c.seq,
        resolved_at: Millis::from(c.resolved_at),
        result: CheckResult::Unreachable,
        checked_at: now,
        failures: 0,
        failure: None,
        held_since: None,
        next_try_at: None,
        detail: String::new(),
        answer: String::new(),
        learned: 0,
    }
}
