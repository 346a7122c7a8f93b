//! Read-only "anything to do?" checks for the polling loops. A pass that finds
//! nothing to do never takes a write transaction: on SQLite, the one writer
//! connection stays free for the webhooks' commits. A check may be a moment
//! stale (it reads what was committed when it ran); the next poll sees the rest.

use super::{Store, StoreError};
use crate::time::Millis;

impl Store {
    /// Whether some ticket has a window that ended at or before `horizon`.
    pub async fn any_ticket_due(&self, horizon: Millis) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 AS x FROM tickets WHERE settle_at <= $1 LIMIT 1",
            horizon,
        )
        .await
    }

    /// Whether some delivery waits in the inbox with no live claim on it.
    pub async fn any_delivery_claimable(&self, now: Millis) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 AS x FROM deliveries WHERE status = 'pending' \
             AND (lease_until IS NULL OR lease_until <= $1) LIMIT 1",
            now,
        )
        .await
    }

    /// Whether some outcome is due to be sent with no live claim on it.
    pub async fn any_outcome_due(&self, now: Millis) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 AS x FROM outcomes WHERE state = 'pending' AND next_attempt_at <= $1 \
             AND (lease_until IS NULL OR lease_until <= $1) LIMIT 1",
            now,
        )
        .await
    }

    /// Whether some reversal is due with no live claim on it.
    pub async fn any_reversal_due(&self, now: Millis) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 AS x FROM reversals WHERE state = 'pending' AND next_attempt_at <= $1 \
             AND (lease_until IS NULL OR lease_until <= $1) LIMIT 1",
            now,
        )
        .await
    }

    async fn exists(&self, sql: &str, at: Millis) -> Result<bool, StoreError> {
        Ok(sqlx::query(sql)
            .bind(at)
            .fetch_optional(&self.reads)
            .await?
            .is_some())
    }
}
