//! Backfill progress (`backfills`): the cursor of the next page of a helpdesk's
//! listing, so an interrupted backfill continues where it stopped.

use super::{col, Store, StoreError};
use crate::time::Millis;

/// One backfill's row. Times in Unix ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRow {
    pub tenant: String,
    pub provider: String,
    pub since: Millis,
    pub until: Millis,
    /// The next page to read; `None` before the first page (or when finished).
    pub cursor: Option<String>,
    pub pages: u64,
    pub tickets: u64,
    pub events_new: u64,
    pub total: Option<u64>,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
}

const COLUMNS: &str =
    "tenant, provider, since, until, cursor, pages, tickets, events_new, total, started_at, finished_at";

fn count(r: &sqlx::any::AnyRow, name: &str) -> Result<u64, StoreError> {
    let v: i64 = col(r, name)?;
    u64::try_from(v).map_err(|_| StoreError::corrupt(format!("backfills.{name} is negative")))
}

fn row(r: &sqlx::any::AnyRow) -> Result<BackfillRow, StoreError> {
    let total: Option<i64> = col(r, "total")?;
    Ok(BackfillRow {
        tenant: col(r, "tenant")?,
        provider: col(r, "provider")?,
        since: col(r, "since")?,
        until: col(r, "until")?,
        cursor: col(r, "cursor")?,
        pages: count(r, "pages")?,
        tickets: count(r, "tickets")?,
        events_new: count(r, "events_new")?,
        total: total.and_then(|t| u64::try_from(t).ok()),
        started_at: col(r, "started_at")?,
        finished_at: col(r, "finished_at")?,
    })
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// The backfill of exactly this range, if one was started.
    pub async fn backfill(
        &self,
        tenant: &str,
        provider: &str,
        since: Millis,
        until: Millis,
    ) -> Result<Option<BackfillRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM backfills WHERE tenant = $1 AND provider = $2 AND since = $3 AND until = $4"
        );
        let r = sqlx::query(&sql)
            .bind(tenant)
            .bind(provider)
            .bind(since)
            .bind(until)
            .fetch_optional(&self.reads)
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// The newest unfinished backfill from `since` (a rerun without `--until` continues it).
    pub async fn unfinished_backfill(
        &self,
        tenant: &str,
        provider: &str,
        since: Millis,
    ) -> Result<Option<BackfillRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM backfills WHERE tenant = $1 AND provider = $2 AND since = $3 \
             AND finished_at IS NULL ORDER BY started_at DESC LIMIT 1"
        );
        let r = sqlx::query(&sql)
            .bind(tenant)
            .bind(provider)
            .bind(since)
            .fetch_optional(&self.reads)
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// Start (or restart from the beginning) the backfill of this range.
    pub async fn start_backfill(
        &self,
        tenant: &str,
        provider: &str,
        since: Millis,
        until: Millis,
        now: Millis,
    ) -> Result<BackfillRow, StoreError> {
        sqlx::query(
            "INSERT INTO backfills (tenant, provider, since, until, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (tenant, provider, since, until) DO UPDATE SET cursor = NULL, pages = 0, \
             tickets = 0, events_new = 0, total = NULL, started_at = $5, updated_at = $5, finished_at = NULL",
        )
        .bind(tenant)
        .bind(provider)
        .bind(since)
        .bind(until)
        .bind(now)
        .execute(&mut *self.writer().await?)
        .await?;
        self.backfill(tenant, provider, since, until)
            .await?
            .ok_or_else(|| StoreError::corrupt("backfill row vanished after its insert"))
    }

    /// A page is imported: move the cursor past it (`None`: that was the last
    /// page, and the backfill is finished at `now`).
    pub async fn advance_backfill(&self, b: &BackfillRow, now: Millis) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE backfills SET cursor = $1, pages = $2, tickets = $3, events_new = $4, total = $5, \
             updated_at = $6, finished_at = $7 \
             WHERE tenant = $8 AND provider = $9 AND since = $10 AND until = $11",
        )
        .bind(b.cursor.as_deref())
        .bind(signed(b.pages))
        .bind(signed(b.tickets))
        .bind(signed(b.events_new))
        .bind(b.total.map(signed))
        .bind(now)
        .bind(b.finished_at)
        .bind(&b.tenant)
        .bind(&b.provider)
        .bind(b.since)
        .bind(b.until)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// Outcomes of a tenant's provider resolved in `[from, to)`, and how many of
    /// them were confirmed before `oldest` (too old to send): `(all, too_old)`.
    pub async fn outcomes_resolved_in(
        &self,
        tenant: &str,
        provider: &str,
        from: Millis,
        to: Millis,
        oldest: Millis,
    ) -> Result<(u64, u64), StoreError> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN confirmed_at < $5 THEN 1 ELSE 0 END), 0) AS old \
             FROM outcomes WHERE tenant = $1 AND provider = $2 AND resolved_at >= $3 AND resolved_at < $4",
        )
        .bind(tenant)
        .bind(provider)
        .bind(from)
        .bind(to)
        .bind(oldest)
        .fetch_one(&self.reads)
        .await?;
        Ok((count(&r, "n")?, count(&r, "old")?))
    }
}
