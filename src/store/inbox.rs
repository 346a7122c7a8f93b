//! The deliveries inbox.

use super::{col, rows, Backend, Store, StoreError, Tx};
use crate::lifecycle::DeliveryStatus;
use crate::time::Millis;
use sqlx::AnyConnection;
use std::collections::HashSet;

/// A verified delivery to store.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub tenant: String,
    pub provider: String,
    pub delivery_key: String,
    pub received_at: Millis,
    /// JSON object of the headers the provider needs to parse it.
    pub headers: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub tenant: String,
    pub provider: String,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Store {
    /// Store a group of deliveries in one transaction (one fsync for all), with
    /// multi-row INSERTs. The dedupe key is claimed by the same statement that
    /// writes the row (`ON CONFLICT DO NOTHING`); the result says, per delivery,
    /// whether it is new (the first of its key) or a duplicate.
    pub async fn insert_deliveries(
        &self,
        batch: &[NewDelivery],
    ) -> Result<Vec<Stored>, StoreError> {
        let new = self.observe(self.write_rows(batch).await)?;
        Ok(classify(batch, new))
    }

    async fn write_rows(&self, batch: &[NewDelivery]) -> Result<HashSet<Key>, StoreError> {
        // One statement is atomic on its own: a batch that fits in one needs no
        // BEGIN and COMMIT round trips (the group commit's cycle is the ack latency).
        if batch.len() <= ROWS {
            let mut conn = self.ingest_writer().await?;
            self.insert_rows(&mut conn, batch).await
        } else {
            let mut tx = self.begin_ingest().await?;
            let new = self.insert_rows(&mut tx.tx, batch).await?;
            tx.commit().await?;
            Ok(new)
        }
    }

    async fn insert_rows(
        &self,
        conn: &mut AnyConnection,
        batch: &[NewDelivery],
    ) -> Result<HashSet<Key>, StoreError> {
        match self.backend {
            Backend::Postgres => insert_returning(conn, batch).await,
            Backend::Sqlite => insert_counting(conn, batch).await,
        }
    }

    /// Claim up to `limit` pending deliveries whose lease is free, oldest first.
    pub async fn claim_deliveries(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let sql = format!(
            "UPDATE deliveries SET lease_until = $1 WHERE id IN ( \
               SELECT id FROM deliveries WHERE status = 'pending' \
               AND (lease_until IS NULL OR lease_until <= $2) ORDER BY id LIMIT $3{}) \
             RETURNING id, tenant, provider, headers, body",
            self.backend.skip_locked()
        );
        let rows = sqlx::query(&sql)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *self.writer().await?)
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(ClaimedDelivery {
                    id: col(r, "id")?,
                    tenant: col(r, "tenant")?,
                    provider: col(r, "provider")?,
                    headers: col(r, "headers")?,
                    body: col::<Option<Vec<u8>>>(r, "body")?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    /// Give back claims taken with lease `lease_until` (a pass that failed for
    /// a transient reason), so the next pass takes them at once instead of
    /// after the lease. A claim someone else took over meanwhile is left alone.
    pub async fn release_deliveries(
        &self,
        ids: &[i64],
        lease_until: Millis,
    ) -> Result<(), StoreError> {
        for chunk in ids.chunks(ROWS) {
            let sql = format!(
                "UPDATE deliveries SET lease_until = NULL \
                 WHERE status = 'pending' AND lease_until = $1 AND id IN ({})",
                rows::id_list(chunk)
            );
            rows::with_values_in_text(&sql)
                .bind(lease_until)
                .execute(&mut *self.writer().await?)
                .await?;
        }
        Ok(())
    }

    /// Put quarantined deliveries back in the queue (`replay`). Returns how many.
    pub async fn requeue_quarantined(
        &self,
        tenant: Option<&str>,
        id: Option<i64>,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_until = NULL, error = NULL \
             WHERE status = 'quarantined' AND ($1 = '' OR tenant = $1) AND ($2 < 0 OR id = $2)",
        )
        .bind(tenant.unwrap_or(""))
        .bind(id.unwrap_or(-1))
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(r.rows_affected())
    }

    /// Drop the bodies of processed deliveries received before `before`.
    pub async fn prune_delivery_bodies(&self, before: Millis) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE deliveries SET body = NULL WHERE status = 'processed' AND received_at < $1 AND body IS NOT NULL",
        )
        .bind(before)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(r.rows_affected())
    }
}

type Key = (String, String, String);

fn key(d: &NewDelivery) -> Key {
    (d.tenant.clone(), d.provider.clone(), d.delivery_key.clone())
}

/// Rows per statement: 6 parameters each, far below both engines' limits.
const ROWS: usize = 256;

/// `INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING` for `chunk.len()` rows.
/// SQLite gets anonymous `?` placeholders: the driver resolves each `$N` by name,
/// a linear search per parameter, which makes a large statement quadratic.
fn insert_sql(backend: Backend, rows: usize, returning: bool) -> String {
    let mut sql = format!(
        "INSERT INTO deliveries (tenant, provider, delivery_key, received_at, headers, body) VALUES {} \
         ON CONFLICT (tenant, provider, delivery_key) DO NOTHING",
        rows::values(backend, rows, 6, 1)
    );
    if returning {
        sql.push_str(" RETURNING tenant, provider, delivery_key");
    }
    sql
}

fn bind_rows<'q>(
    sql: &'q str,
    chunk: &'q [NewDelivery],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let mut q = rows::multi_row(sql, chunk.len());
    for d in chunk {
        q = q
            .bind(&d.tenant)
            .bind(&d.provider)
            .bind(&d.delivery_key)
            .bind(d.received_at)
            .bind(&d.headers)
            .bind(&d.body);
    }
    q
}

/// PostgreSQL: the new rows come back with `RETURNING` (concurrent receivers
/// may interleave their ids, so ids say nothing).
async fn insert_returning(
    conn: &mut AnyConnection,
    batch: &[NewDelivery],
) -> Result<HashSet<Key>, StoreError> {
    let mut new = HashSet::with_capacity(batch.len());
    for chunk in batch.chunks(ROWS) {
        let sql = insert_sql(Backend::Postgres, chunk.len(), true);
        for r in bind_rows(&sql, chunk).fetch_all(&mut *conn).await? {
            new.insert((
                col(&r, "tenant")?,
                col(&r, "provider")?,
                col(&r, "delivery_key")?,
            ));
        }
    }
    Ok(new)
}

/// SQLite: when every distinct key was inserted, the row count says so without
/// reading anything back (each row read is a hop to the driver's thread).
/// Otherwise the rows this connection just inserted are the `affected` ids up to
/// its `last_insert_rowid()` (AUTOINCREMENT under the write lock: contiguous),
/// and only those are read back.
async fn insert_counting(
    conn: &mut AnyConnection,
    batch: &[NewDelivery],
) -> Result<HashSet<Key>, StoreError> {
    let mut affected = 0i64;
    for chunk in batch.chunks(ROWS) {
        let sql = insert_sql(Backend::Sqlite, chunk.len(), false);
        let n = bind_rows(&sql, chunk)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        affected += i64::try_from(n).unwrap_or(i64::MAX);
    }
    let distinct: HashSet<Key> = batch.iter().map(key).collect();
    if usize::try_from(affected).is_ok_and(|n| n == distinct.len()) {
        return Ok(distinct);
    }
    let rows = sqlx::query(
        "SELECT tenant, provider, delivery_key FROM deliveries \
         WHERE id > last_insert_rowid() - $1 AND id <= last_insert_rowid()",
    )
    .bind(affected)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                col(r, "tenant")?,
                col(r, "provider")?,
                col(r, "delivery_key")?,
            ))
        })
        .collect()
}

/// The first of a key in the batch is new if its row was inserted; a repeat is a duplicate.
fn classify(batch: &[NewDelivery], mut new: HashSet<Key>) -> Vec<Stored> {
    batch
        .iter()
        .map(|d| {
            if new.remove(&key(d)) {
                Stored::New
            } else {
                Stored::Duplicate
            }
        })
        .collect()
}

impl Tx {
    /// When the oldest delivery not yet processed was received, if any.
    pub async fn oldest_pending_delivery(&mut self) -> Result<Option<Millis>, StoreError> {
        oldest_pending(&mut *self.tx).await
    }

    pub async fn finish_delivery(
        &mut self,
        id: i64,
        now: Millis,
        events: usize,
        quarantine_reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET status = $1, error = $2, event_count = $3, processed_at = $4, lease_until = NULL \
             WHERE id = $5",
        )
        .bind(
            if quarantine_reason.is_some() {
                DeliveryStatus::Quarantined
            } else {
                DeliveryStatus::Processed
            }
            .as_str(),
        )
        .bind(quarantine_reason)
        .bind(events as i64)
        .bind(now)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl Store {
    /// [`Tx::oldest_pending_delivery`], read without a lock.
    pub async fn peek_oldest_pending_delivery(&self) -> Result<Option<Millis>, StoreError> {
        oldest_pending(&self.reads).await
    }
}

/// When the oldest delivery still waiting in the inbox was received: an index
/// search (`deliveries_pending_received`), asked by every confirmation pass.
/// `'pending'` stays a literal: PostgreSQL matches a partial index's `WHERE`
/// reliably only against the same literal, not a bound parameter.
pub(super) const OLDEST_PENDING: &str =
    "SELECT MIN(received_at) AS m FROM deliveries WHERE status = 'pending'";

async fn oldest_pending<'c, E>(executor: E) -> Result<Option<Millis>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query(OLDEST_PENDING).fetch_one(executor).await?;
    col(&row, "m")
}
