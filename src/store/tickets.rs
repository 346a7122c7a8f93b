//! Ticket events, ticket rows and decisions: written by the worker inside one
//! transaction per batch, with the ticket row locked while it is replayed.

use super::{col, PinnedContract, StoreError, Tx};
use crate::event::TicketEvent;
use crate::lifecycle::DecisionStatus;
use crate::ticket::Settled;
use crate::time::Millis;
use sqlx::any::AnyRow;

/// What the worker needs to replay one ticket.
#[derive(Debug, Clone, Default)]
pub struct TicketState {
    pub settled: Option<Settled>,
    pub events: Vec<TicketEvent>,
}

/// One decision row (see the `decisions` table).
#[derive(Debug, Clone)]
pub struct DecisionWrite {
    pub tenant: String,
    pub provider: String,
    pub ticket_id: String,
    pub seq: u32,
    pub resolved_at: Millis,
    pub resolver: Option<String>,
    pub settle_at: Millis,
    pub status: DecisionStatus,
    pub billable: bool,
    pub clause: String,
    pub detail: String,
    pub contract_version: String,
    pub contract_hash: String,
    pub evidence: String,
    pub outcome_id: Option<String>,
    pub is_final: bool,
    pub decided_at: Millis,
}

pub(crate) fn event_from_row(r: &AnyRow) -> Result<TicketEvent, StoreError> {
    let kind: String = col(r, "kind")?;
    let resolver: Option<String> = col(r, "resolver")?;
    let tags: String = col(r, "tags")?;
    Ok(TicketEvent {
        event_key: col(r, "event_key")?,
        ticket_id: col(r, "ticket_id")?,
        kind: kind.parse().map_err(StoreError::corrupt)?,
        occurred_at: col::<Millis>(r, "occurred_at")?.to_datetime(),
        resolver: resolver
            .map(|s| s.parse())
            .transpose()
            .map_err(StoreError::corrupt)?,
        actor_id: col(r, "actor_id")?,
        tags: serde_json::from_str(&tags).map_err(|e| StoreError::corrupt(format!("tags: {e}")))?,
        channel: col(r, "channel")?,
    })
}

impl Tx {
    /// Create the ticket row if needed and lock it (PostgreSQL: `FOR UPDATE`), so
    /// two workers never replay the same ticket at once. Returns the settled prefix.
    pub async fn lock_ticket(
        &mut self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
        now: Millis,
    ) -> Result<Option<Settled>, StoreError> {
        sqlx::query(
            "INSERT INTO tickets (tenant, provider, ticket_id, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, provider, ticket_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(provider)
        .bind(ticket_id)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        let sql = format!(
            "SELECT settled_seq, settled_resolved_at FROM tickets \
             WHERE tenant = $1 AND provider = $2 AND ticket_id = $3{}",
            self.backend.for_update()
        );
        let row = sqlx::query(&sql)
            .bind(tenant)
            .bind(provider)
            .bind(ticket_id)
            .fetch_one(&mut *self.tx)
            .await?;
        settled_from_row(&row)
    }

    /// Insert an event unless its key is already stored. Returns whether it was new.
    /// `delivery_id` is the webhook delivery that brought it (0: the helpdesk's
    /// API); `learned_from` the verification check that learned it, if one did.
    pub async fn insert_event(
        &mut self,
        tenant: &str,
        provider: &str,
        delivery_id: i64,
        learned_from: Option<i64>,
        e: &TicketEvent,
    ) -> Result<bool, StoreError> {
        let tags =
            serde_json::to_string(&e.tags).map_err(|err| StoreError::corrupt(err.to_string()))?;
        let r = sqlx::query(
            "INSERT INTO ticket_events (tenant, provider, event_key, ticket_id, kind, occurred_at, resolver, \
             actor_id, tags, channel, delivery_id, learned_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (tenant, provider, event_key) DO NOTHING",
        )
        .bind(tenant)
        .bind(provider)
        .bind(&e.event_key)
        .bind(&e.ticket_id)
        .bind(e.kind.as_str())
        .bind(Millis::from(e.occurred_at))
        .bind(e.resolver.map(|r| r.as_str()))
        .bind(e.actor_id.as_deref())
        .bind(tags)
        .bind(e.channel.as_deref())
        .bind(delivery_id)
        .bind(learned_from)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn load_events(
        &mut self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
    ) -> Result<Vec<TicketEvent>, StoreError> {
        events_of(&mut *self.tx, tenant, provider, ticket_id).await
    }

    /// Make a due ticket due again at `until`, without reading it (a ticket whose
    /// stored data cannot be read can still be moved out of the way). Only while
    /// it is still due by `now`: a ticket another worker saved meanwhile is left.
    pub async fn postpone_ticket(
        &mut self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
        until: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tickets SET settle_at = $1, updated_at = $2 \
             WHERE tenant = $3 AND provider = $4 AND ticket_id = $5 AND settle_at <= $2",
        )
        .bind(until)
        .bind(now)
        .bind(tenant)
        .bind(provider)
        .bind(ticket_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Tickets whose window has ended, locked for this transaction (PostgreSQL
    /// skips tickets another worker holds). Uses the `settle_at` index only.
    pub async fn due_tickets(
        &mut self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let lock = self.backend.skip_locked();
        due(&mut *self.tx, now, limit, lock).await
    }

    /// Record a decision. Final decisions are never changed again.
    pub async fn write_decision(&mut self, d: &DecisionWrite) -> Result<(), StoreError> {
        self.write_decisions(std::slice::from_ref(d)).await
    }

    /// The contracts of a ticket's non-final decisions made under another
    /// contract than `current_hash`, decoded; a contract missing or unreadable
    /// is [`StoreError::Contract`].
    pub async fn pinned_contracts(
        &mut self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
        current_hash: &str,
    ) -> Result<Vec<PinnedContract>, StoreError> {
        pinned(&mut *self.tx, tenant, provider, ticket_id, current_hash).await
    }
}

impl super::Store {
    /// [`Tx::pinned_contracts`], read without a lock (the verification pass).
    pub async fn pinned_contracts(
        &self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
        current_hash: &str,
    ) -> Result<Vec<PinnedContract>, StoreError> {
        pinned(&self.reads, tenant, provider, ticket_id, current_hash).await
    }
}

async fn pinned<'c, E>(
    executor: E,
    tenant: &str,
    provider: &str,
    ticket_id: &str,
    current_hash: &str,
) -> Result<Vec<PinnedContract>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    // A LEFT JOIN: a decision whose contract is missing is an error, not left out
    // (left out, its resolution would be replayed under the current contract).
    let rows = sqlx::query(
        "SELECT d.seq, d.contract_hash, c.version, c.terms FROM decisions d LEFT JOIN contracts c ON c.hash = d.contract_hash \
         WHERE d.tenant = $1 AND d.provider = $2 AND d.ticket_id = $3 AND d.final = 0 AND d.contract_hash <> $4",
    )
    .bind(tenant)
    .bind(provider)
    .bind(ticket_id)
    .bind(current_hash)
    .fetch_all(executor)
    .await?;
    rows.iter().map(super::contracts::pinned_from_row).collect()
}

impl super::Store {
    /// Tickets whose window has ended, without locking anything: the candidates a
    /// verification pass reads before it calls any API.
    pub async fn peek_due_tickets(
        &self,
        horizon: Millis,
        limit: u32,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        due(&self.reads, horizon, limit, "").await
    }

    /// A ticket's settled prefix and events, read without a lock.
    pub async fn read_ticket(
        &self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
    ) -> Result<(Option<Settled>, Vec<TicketEvent>), StoreError> {
        let row = sqlx::query(
            "SELECT settled_seq, settled_resolved_at FROM tickets \
             WHERE tenant = $1 AND provider = $2 AND ticket_id = $3",
        )
        .bind(tenant)
        .bind(provider)
        .bind(ticket_id)
        .fetch_optional(&self.reads)
        .await?;
        let settled = match row {
            Some(r) => settled_from_row(&r)?,
            None => None,
        };
        Ok((
            settled,
            events_of(&self.reads, tenant, provider, ticket_id).await?,
        ))
    }
}

/// The settled prefix of a `tickets` row (`settled_seq`, `settled_resolved_at`).
pub(super) fn settled_from_row(row: &AnyRow) -> Result<Option<Settled>, StoreError> {
    let seq: i64 = col(row, "settled_seq")?;
    let at: Option<Millis> = col(row, "settled_resolved_at")?;
    Ok(match at {
        Some(at) if seq > 0 => Some(Settled {
            seq: u32::try_from(seq).map_err(|_| StoreError::corrupt("settled_seq out of range"))?,
            resolved_at: at.to_datetime(),
        }),
        _ => None,
    })
}

async fn events_of<'c, E>(
    executor: E,
    tenant: &str,
    provider: &str,
    ticket_id: &str,
) -> Result<Vec<TicketEvent>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT event_key, ticket_id, kind, occurred_at, resolver, actor_id, tags, channel \
         FROM ticket_events WHERE tenant = $1 AND provider = $2 AND ticket_id = $3",
    )
    .bind(tenant)
    .bind(provider)
    .bind(ticket_id)
    .fetch_all(executor)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// Tickets with `settle_at <= now`, oldest first; `lock` is the locking suffix
/// (`FOR UPDATE SKIP LOCKED` on PostgreSQL inside a transaction, or none).
async fn due<'c, E>(
    executor: E,
    now: Millis,
    limit: u32,
    lock: &str,
) -> Result<Vec<(String, String, String)>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let sql = format!(
        "SELECT tenant, provider, ticket_id FROM tickets WHERE settle_at <= $1 \
         ORDER BY settle_at LIMIT $2{lock}"
    );
    let rows = sqlx::query(&sql)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|r| Ok((col(r, "tenant")?, col(r, "provider")?, col(r, "ticket_id")?)))
        .collect()
}
