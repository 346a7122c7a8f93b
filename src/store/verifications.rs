//! Checks of due resolutions with the helpdesk's API (`verifications`), and the
//! events they learned (`ticket_events.learned_from`).

use super::{col, state_col, Store, StoreError, Tx};
use crate::time::Millis;

pub use crate::lifecycle::CheckResult;

/// One check of one resolution (a `verifications` row).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// `verifications.id` (0 before it is stored).
    pub id: i64,
    pub tenant: String,
    pub provider: String,
    pub ticket_id: String,
    pub seq: u32,
    /// Unix ms, like every time below.
    pub resolved_at: Millis,
    pub result: CheckResult,
    pub checked_at: Millis,
    pub failures: u32,
    /// The kind of failure ([`crate::helpdesk_api::ApiError::failure_kind`]); `None` for an answer.
    pub failure: Option<String>,
    pub held_since: Option<Millis>,
    pub next_try_at: Option<Millis>,
    pub detail: String,
    pub answer: String,
    pub learned: u32,
}

const CHECK_COLUMNS: &str = "tenant, provider, ticket_id, seq, resolved_at, result, checked_at, \
     failures, failure, held_since, next_try_at, detail, answer, learned";

fn check_from_row(r: &sqlx::any::AnyRow) -> Result<Check, StoreError> {
    let small = |name: &str| -> Result<u32, StoreError> {
        let v: i64 = col(r, name)?;
        u32::try_from(v)
            .map_err(|_| StoreError::corrupt(format!("verifications.{name} out of range")))
    };
    let id: i64 = col(r, "id")?;
    Ok(Check {
        result: state_col(r, "result", || format!("verification check {id}"))?,
        id,
        tenant: col(r, "tenant")?,
        provider: col(r, "provider")?,
        ticket_id: col(r, "ticket_id")?,
        seq: small("seq")?,
        resolved_at: col(r, "resolved_at")?,
        checked_at: col(r, "checked_at")?,
        failures: small("failures")?,
        failure: col(r, "failure")?,
        held_since: col(r, "held_since")?,
        next_try_at: col(r, "next_try_at")?,
        detail: col(r, "detail")?,
        answer: col(r, "answer")?,
        learned: small("learned")?,
    })
}

impl Store {
    /// The newest check of one resolution.
    pub async fn latest_check(
        &self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
        seq: u32,
        resolved_at: Millis,
    ) -> Result<Option<Check>, StoreError> {
        latest(&self.reads, tenant, provider, ticket_id, seq, resolved_at).await
    }

    /// Every check of a ticket, oldest first (`explain`).
    pub async fn ticket_checks(
        &self,
        tenant: &str,
        ticket_id: &str,
    ) -> Result<Vec<Check>, StoreError> {
        let sql = format!(
            "SELECT id, {CHECK_COLUMNS} FROM verifications WHERE tenant = $1 AND ticket_id = $2 ORDER BY id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(ticket_id)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(check_from_row).collect()
    }
}

async fn latest<'c, E>(
    executor: E,
    tenant: &str,
    provider: &str,
    ticket_id: &str,
    seq: u32,
    resolved_at: Millis,
) -> Result<Option<Check>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let sql = format!(
        "SELECT id, {CHECK_COLUMNS} FROM verifications WHERE tenant = $1 AND provider = $2 \
         AND ticket_id = $3 AND seq = $4 AND resolved_at = $5 ORDER BY id DESC LIMIT 1"
    );
    let row = sqlx::query(&sql)
        .bind(tenant)
        .bind(provider)
        .bind(ticket_id)
        .bind(i64::from(seq))
        .bind(resolved_at)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(check_from_row).transpose()
}

impl Tx {
    /// The newest check of one resolution, inside this transaction.
    pub async fn latest_check(
        &mut self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
        seq: u32,
        resolved_at: Millis,
    ) -> Result<Option<Check>, StoreError> {
        latest(&mut *self.tx, tenant, provider, ticket_id, seq, resolved_at).await
    }

    /// Record a check; returns its id.
    pub async fn insert_check(&mut self, c: &Check) -> Result<i64, StoreError> {
        let sql = format!(
            "INSERT INTO verifications ({CHECK_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id"
        );
        let row = sqlx::query(&sql)
            .bind(&c.tenant)
            .bind(&c.provider)
            .bind(&c.ticket_id)
            .bind(i64::from(c.seq))
            .bind(c.resolved_at)
            .bind(c.result.as_str())
            .bind(c.checked_at)
            .bind(i64::from(c.failures))
            .bind(c.failure.as_deref())
            .bind(c.held_since)
            .bind(c.next_try_at)
            .bind(&c.detail)
            .bind(&c.answer)
            .bind(i64::from(c.learned))
            .fetch_one(&mut *self.tx)
            .await?;
        col(&row, "id")
    }
}
