//! The worker's batch, set-based: every ticket a batch of deliveries touches is
//! locked, read and written with a few statements for all of them (multi-row
//! `VALUES`, in the groups of `rows::groups`: on SQLite a few sizes, kept
//! prepared; on PostgreSQL as many rows as its parameter limit allows), not a
//! few per ticket.
//!
//! Tickets are locked in sorted order (PostgreSQL: `FOR UPDATE`; SQLite's
//! `BEGIN IMMEDIATE` already serializes writers), and their events are read
//! after the lock: a worker that waited for another's batch sees its events.

use super::tickets::{event_from_row, settled_from_row, DecisionWrite};
use super::{col, rows, Backend, PinnedContract, StoreError, Tx};
use crate::event::TicketEvent;
use crate::lifecycle::DeliveryStatus;
use crate::ticket::Settled;
use crate::time::Millis;
use std::collections::{BTreeMap, HashMap};

/// A ticket: (tenant, provider, ticket id).
pub type TicketKey = (String, String, String);

/// An event to store, with the delivery that brought it.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub tenant: &'a str,
    pub provider: &'a str,
    pub delivery_id: i64,
    pub event: &'a TicketEvent,
}

/// A replayed ticket's row: its settled prefix (as read) and when it is due next.
#[derive(Debug, Clone)]
pub struct TicketSave<'a> {
    pub key: &'a TicketKey,
    pub settled: Option<Settled>,
    pub settle_at: Option<Millis>,
}

/// How a claimed delivery ends: processed with its number of events, or
/// quarantined with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub id: i64,
    pub events: usize,
    pub quarantine: Option<String>,
}

/// Deliveries that end the same way (status, reason, event count): one UPDATE each.
fn finish_groups(finished: &[Finished]) -> BTreeMap<(Option<&str>, usize), Vec<i64>> {
    let mut groups: BTreeMap<(Option<&str>, usize), Vec<i64>> = BTreeMap::new();
    for f in finished {
        groups
            .entry((f.quarantine.as_deref(), f.events))
            .or_default()
            .push(f.id);
    }
    groups
}

/// Ids per UPDATE of [`Tx::finish_deliveries`] (written into the statement).
const IDS: usize = 1000;

impl Tx {
    /// Create the rows of `keys` (sorted, distinct) where missing, and lock them
    /// all, in that order. Returns each ticket's settled prefix.
    ///
    /// Every worker inserts in the same order and locks in the database's order
    /// (`ORDER BY`), so two batches never wait for each other in a cycle. (A batch
    /// of more than one statement's worth of tickets, over 10,000, locks chunk by
    /// chunk; should that ever meet another such batch in a cycle, PostgreSQL
    /// breaks it with a deadlock error, which is transient: the claims are given
    /// back and applied again.)
    pub async fn lock_tickets(
        &mut self,
        keys: &[TicketKey],
        now: Millis,
    ) -> Result<HashMap<TicketKey, Option<Settled>>, StoreError> {
        let backend = self.backend;
        for chunk in rows::groups(backend, keys, rows::per_statement(4)) {
            let sql = format!(
                "INSERT INTO tickets (tenant, provider, ticket_id, updated_at) VALUES {} \
                 ON CONFLICT (tenant, provider, ticket_id) DO NOTHING",
                rows::values(backend, chunk.len(), 4, 1)
            );
            let mut q = rows::grouped(backend, &sql, chunk.len());
            for (tenant, provider, ticket) in chunk {
                q = q.bind(tenant).bind(provider).bind(ticket).bind(now);
            }
            q.execute(&mut *self.tx).await?;
        }
        let lock = match backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE OF t",
        };
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in rows::groups(backend, keys, rows::per_statement(3)) {
            let sql = format!(
                "WITH k (tenant, provider, ticket_id) AS (VALUES {}) \
                 SELECT t.tenant, t.provider, t.ticket_id, t.settled_seq, t.settled_resolved_at \
                 FROM k {join} tickets t ON t.tenant = k.tenant AND t.provider = k.provider \
                 AND t.ticket_id = k.ticket_id \
                 ORDER BY t.tenant, t.provider, t.ticket_id{lock}",
                rows::values(backend, chunk.len(), 3, 1),
                join = rows::keys_join(backend),
            );
            let found = bind_keys(rows::grouped(backend, &sql, chunk.len()), chunk)
                .fetch_all(&mut *self.tx)
                .await?;
            for r in &found {
                out.insert(row_key(r)?, settled_from_row(r)?);
            }
        }
        Ok(out)
    }

    /// Insert events whose key is not stored yet (the first of a key wins, as
    /// [`Tx::insert_event`] one by one would).
    pub async fn insert_events(&mut self, events: &[NewEvent<'_>]) -> Result<(), StoreError> {
        const COLUMNS: usize = 12;
        for chunk in rows::groups(self.backend, events, rows::per_statement(COLUMNS)) {
            let tags = chunk
                .iter()
                .map(|e| serde_json::to_string(&e.event.tags))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|err| StoreError::corrupt(err.to_string()))?;
            let sql = format!(
                "INSERT INTO ticket_events (tenant, provider, event_key, ticket_id, kind, occurred_at, resolver, \
                 actor_id, tags, channel, delivery_id, learned_from) VALUES {} \
                 ON CONFLICT (tenant, provider, event_key) DO NOTHING",
                rows::values(self.backend, chunk.len(), COLUMNS, 1)
            );
            let mut q = rows::grouped(self.backend, &sql, chunk.len());
            for (n, tags) in chunk.iter().zip(&tags) {
                let e = n.event;
                q = q
                    .bind(n.tenant)
                    .bind(n.provider)
                    .bind(&e.event_key)
                    .bind(&e.ticket_id)
                    .bind(e.kind.as_str())
                    .bind(Millis::from(e.occurred_at))
                    .bind(e.resolver.map(|r| r.as_str()))
                    .bind(e.actor_id.as_deref())
                    .bind(tags)
                    .bind(e.channel.as_deref())
                    .bind(n.delivery_id)
                    .bind(None::<i64>);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// The stored events of each ticket of `keys` (a ticket without any has none).
    pub async fn load_events_of(
        &mut self,
        keys: &[TicketKey],
    ) -> Result<HashMap<TicketKey, Vec<TicketEvent>>, StoreError> {
        let mut out: HashMap<TicketKey, Vec<TicketEvent>> = HashMap::with_capacity(keys.len());
        for chunk in rows::groups(self.backend, keys, rows::per_statement(3)) {
            let sql = format!(
                "WITH k (tenant, provider, ticket_id) AS (VALUES {}) \
                 SELECT e.tenant, e.provider, e.event_key, e.ticket_id, e.kind, e.occurred_at, e.resolver, \
                 e.actor_id, e.tags, e.channel \
                 FROM k {join} ticket_events e ON e.tenant = k.tenant AND e.provider = k.provider \
                 AND e.ticket_id = k.ticket_id",
                rows::values(self.backend, chunk.len(), 3, 1),
                join = rows::keys_join(self.backend),
            );
            let found = bind_keys(rows::grouped(self.backend, &sql, chunk.len()), chunk)
                .fetch_all(&mut *self.tx)
                .await?;
            for r in &found {
                out.entry(row_key(r)?).or_default().push(event_from_row(r)?);
            }
        }
        Ok(out)
    }

    /// [`Tx::pinned_contracts`] of many tickets: for each `(ticket, current
    /// contract hash)`, the contracts of its non-final decisions made under
    /// another contract. A contract missing or unreadable is [`StoreError::Contract`].
    pub async fn pinned_contracts_of(
        &mut self,
        tickets: &[(&TicketKey, &str)],
    ) -> Result<HashMap<TicketKey, Vec<PinnedContract>>, StoreError> {
        let mut out: HashMap<TicketKey, Vec<PinnedContract>> = HashMap::new();
        for chunk in rows::groups(self.backend, tickets, rows::per_statement(4)) {
            // A LEFT JOIN: a decision whose contract is missing is an error, not left out.
            let sql = format!(
                "WITH k (tenant, provider, ticket_id, current_hash) AS (VALUES {}) \
                 SELECT d.tenant, d.provider, d.ticket_id, d.seq, d.contract_hash, c.version, c.terms \
                 FROM k {join} decisions d ON d.tenant = k.tenant AND d.provider = k.provider \
                 AND d.ticket_id = k.ticket_id \
                 LEFT JOIN contracts c ON c.hash = d.contract_hash \
                 WHERE d.final = 0 AND d.contract_hash <> k.current_hash",
                rows::values(self.backend, chunk.len(), 4, 1),
                join = rows::keys_join(self.backend),
            );
            let mut q = rows::grouped(self.backend, &sql, chunk.len());
            for ((tenant, provider, ticket), hash) in chunk {
                q = q.bind(tenant).bind(provider).bind(ticket).bind(*hash);
            }
            for r in &q.fetch_all(&mut *self.tx).await? {
                out.entry(row_key(r)?)
                    .or_default()
                    .push(super::contracts::pinned_from_row(r)?);
            }
        }
        Ok(out)
    }

    /// [`Tx::write_decision`] of many decisions (distinct tickets and
    /// sequences): final decisions are never changed again.
    pub async fn write_decisions(&mut self, decisions: &[DecisionWrite]) -> Result<(), StoreError> {
        const COLUMNS: usize = 17;
        for chunk in rows::groups(self.backend, decisions, rows::per_statement(COLUMNS)) {
            let sql = format!(
                "INSERT INTO decisions (tenant, provider, ticket_id, seq, resolved_at, resolver, settle_at, status, \
                 billable, clause, detail, contract_version, contract_hash, evidence, outcome_id, final, decided_at) \
                 VALUES {} \
                 ON CONFLICT (tenant, provider, ticket_id, seq) DO UPDATE SET \
                   resolved_at = excluded.resolved_at, resolver = excluded.resolver, settle_at = excluded.settle_at, \
                   status = excluded.status, billable = excluded.billable, clause = excluded.clause, \
                   detail = excluded.detail, contract_version = excluded.contract_version, \
                   contract_hash = excluded.contract_hash, evidence = excluded.evidence, \
                   outcome_id = excluded.outcome_id, final = excluded.final, decided_at = excluded.decided_at \
                 WHERE decisions.final = 0",
                rows::values(self.backend, chunk.len(), COLUMNS, 1)
            );
            let mut q = rows::grouped(self.backend, &sql, chunk.len());
            for d in chunk {
                q = q
                    .bind(&d.tenant)
                    .bind(&d.provider)
                    .bind(&d.ticket_id)
                    .bind(i64::from(d.seq))
                    .bind(d.resolved_at)
                    .bind(d.resolver.as_deref())
                    .bind(d.settle_at)
                    .bind(d.status.as_str())
                    .bind(i64::from(d.billable))
                    .bind(&d.clause)
                    .bind(&d.detail)
                    .bind(&d.contract_version)
                    .bind(&d.contract_hash)
                    .bind(&d.evidence)
                    .bind(d.outcome_id.as_deref())
                    .bind(i64::from(d.is_final))
                    .bind(d.decided_at);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Saves many (locked, distinct) tickets (their state and when they are due
    /// next), one upsert per chunk.
    pub async fn save_tickets(
        &mut self,
        saves: &[TicketSave<'_>],
        now: Millis,
    ) -> Result<(), StoreError> {
        const COLUMNS: usize = 7;
        for chunk in rows::groups(self.backend, saves, rows::per_statement(COLUMNS)) {
            let sql = format!(
                "INSERT INTO tickets (tenant, provider, ticket_id, settled_seq, settled_resolved_at, settle_at, updated_at) \
                 VALUES {} \
                 ON CONFLICT (tenant, provider, ticket_id) DO UPDATE SET \
                   settled_seq = excluded.settled_seq, settled_resolved_at = excluded.settled_resolved_at, \
                   settle_at = excluded.settle_at, updated_at = excluded.updated_at",
                rows::values(self.backend, chunk.len(), COLUMNS, 1)
            );
            let mut q = rows::grouped(self.backend, &sql, chunk.len());
            for s in chunk {
                let (tenant, provider, ticket) = s.key;
                q = q
                    .bind(tenant)
                    .bind(provider)
                    .bind(ticket)
                    .bind(s.settled.map_or(0, |x| i64::from(x.seq)))
                    .bind(s.settled.map(|x| Millis::from(x.resolved_at)))
                    .bind(s.settle_at)
                    .bind(now);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Freeze the decisions of each ticket (each once) up to and including
    /// its sequence.
    pub async fn finalize_decisions(
        &mut self,
        through: &[(&TicketKey, u32)],
    ) -> Result<(), StoreError> {
        for chunk in rows::groups(self.backend, through, rows::per_statement(4)) {
            // The decisions found through the keys (each ticket's own index
            // range), then updated by their primary key.
            let sql = format!(
                "WITH k (tenant, provider, ticket_id, seq) AS (VALUES {}) \
                 UPDATE decisions SET final = 1 WHERE final = 0 AND (tenant, provider, ticket_id, seq) IN ( \
                   SELECT d.tenant, d.provider, d.ticket_id, d.seq FROM k {join} decisions d \
                   ON d.tenant = k.tenant AND d.provider = k.provider AND d.ticket_id = k.ticket_id \
                   AND d.seq <= k.seq)",
                rows::values(self.backend, chunk.len(), 4, 1),
                join = rows::keys_join(self.backend),
            );
            let mut q = rows::grouped(self.backend, &sql, chunk.len());
            for ((tenant, provider, ticket), seq) in chunk {
                q = q
                    .bind(tenant)
                    .bind(provider)
                    .bind(ticket)
                    .bind(i64::from(*seq));
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// [`Tx::finish_delivery`] of many: one UPDATE for the deliveries that end
    /// alike (processed with the same number of events, usually all of them;
    /// quarantined with the same reason).
    pub async fn finish_deliveries(
        &mut self,
        finished: &[Finished],
        now: Millis,
    ) -> Result<(), StoreError> {
        for ((reason, events), ids) in finish_groups(finished) {
            let status = if reason.is_some() {
                DeliveryStatus::Quarantined
            } else {
                DeliveryStatus::Processed
            };
            for chunk in ids.chunks(IDS) {
                let sql = format!(
                    "UPDATE deliveries SET status = $1, error = $2, event_count = $3, processed_at = $4, \
                     lease_until = NULL WHERE id IN ({})",
                    rows::id_list(chunk)
                );
                rows::with_values_in_text(&sql)
                    .bind(status.as_str())
                    .bind(reason)
                    .bind(i64::try_from(events).unwrap_or(i64::MAX))
                    .bind(now)
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        Ok(())
    }
}

fn bind_keys<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    keys: &'q [TicketKey],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for (tenant, provider, ticket) in keys {
        q = q.bind(tenant).bind(provider).bind(ticket);
    }
    q
}

fn row_key(r: &sqlx::any::AnyRow) -> Result<TicketKey, StoreError> {
    Ok((col(r, "tenant")?, col(r, "provider")?, col(r, "ticket_id")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: i64, events: usize, quarantine: Option<&str>) -> Finished {
        Finished {
            id,
            events,
            quarantine: quarantine.map(String::from),
        }
    }

    #[test]
    fn deliveries_that_end_alike_are_finished_together() {
        let finished = [
            f(1, 1, None),
            f(2, 1, None),
            f(3, 0, Some("bad json")),
            f(4, 3, None),
            f(5, 1, None),
            f(6, 0, Some("bad json")),
            f(7, 0, Some("unknown provider")),
        ];
        let groups = finish_groups(&finished);
        let got: Vec<_> = groups.iter().map(|(k, ids)| (*k, ids.clone())).collect();
        assert_eq!(
            got,
            vec![
                ((None, 1), vec![1, 2, 5]),
                ((None, 3), vec![4]),
                ((Some("bad json"), 0), vec![3, 6]),
                ((Some("unknown provider"), 0), vec![7]),
            ]
        );
        let all: usize = groups.values().map(Vec::len).sum();
        assert_eq!(all, finished.len(), "every delivery is finished once");
    }
}
