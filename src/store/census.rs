//! How many rows are where: what is stored by state, for an operator's look at
//! a database and for the verdicts of the tests, the chaos suite and the
//! benches; and the work still to do, cheap enough to poll.

use super::{col, Store, StoreError};
use std::collections::BTreeMap;

/// The rows of one table by tenant and state (the value of its `status`,
/// `state` or `result` column, as stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    by_tenant_state: BTreeMap<(String, String), i64>,
}

impl StateCounts {
    /// Every row.
    pub fn total(&self) -> i64 {
        self.by_tenant_state.values().sum()
    }

    /// The rows in `state`, of every tenant.
    pub fn in_state(&self, state: &str) -> i64 {
        self.iter()
            .filter(|(_, s, _)| *s == state)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// The rows of `tenant`, in every state.
    pub fn of_tenant(&self, tenant: &str) -> i64 {
        self.iter()
            .filter(|(t, _, _)| *t == tenant)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// `(tenant, state, rows)`, ordered by tenant then state; only what has rows.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, i64)> + '_ {
        self.by_tenant_state
            .iter()
            .map(|((t, s), n)| (t.as_str(), s.as_str(), *n))
    }
}

/// What a database holds, by state. Reads whole tables: for a look or a
/// verdict, not for polling a busy service (see [`Store::deliveries_pending`]
/// and its neighbours for that).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Census {
    /// Deliveries (raw webhooks) by status: `pending`, `processed`, `quarantined`.
    pub deliveries: StateCounts,
    /// Outcomes by outbox state.
    pub outcomes: StateCounts,
    /// Reversals (clawbacks) by state.
    pub reversals: StateCounts,
    /// Checks with the helpdesk before billing, by result.
    pub verifications: StateCounts,
    /// Ticket events learned from a helpdesk's API by those checks, not brought
    /// by a webhook.
    pub events_learned: i64,
}

impl Store {
    /// Every delivery, outcome, reversal and verification by tenant and state.
    pub async fn census(&self) -> Result<Census, StoreError> {
        let events_learned =
            sqlx::query("SELECT COUNT(*) AS n FROM ticket_events WHERE learned_from IS NOT NULL")
                .fetch_one(&self.reads)
                .await?;
        Ok(Census {
            deliveries: self.state_counts("deliveries", "status").await?,
            outcomes: self.state_counts("outcomes", "state").await?,
            reversals: self.state_counts("reversals", "state").await?,
            verifications: self.state_counts("verifications", "result").await?,
            events_learned: col(&events_learned, "n")?,
        })
    }

    /// `table`'s rows grouped by tenant and the `state` column (names from this module only).
    async fn state_counts(
        &self,
        table: &'static str,
        state: &'static str,
    ) -> Result<StateCounts, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT tenant, {state} AS state, COUNT(*) AS n FROM {table} GROUP BY tenant, {state}"
        ))
        .fetch_all(&self.reads)
        .await?;
        let by_tenant_state = rows
            .iter()
            .map(|r| Ok(((col(r, "tenant")?, col(r, "state")?), col(r, "n")?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(StateCounts { by_tenant_state })
    }

    /// Deliveries not processed yet (an index of pending deliveries only).
    pub async fn deliveries_pending(&self) -> Result<i64, StoreError> {
        self.count_of("SELECT COUNT(*) AS n FROM deliveries WHERE status = 'pending'")
            .await
    }

    /// Outcomes not sent yet (an index of pending outcomes only).
    pub async fn outcomes_pending(&self) -> Result<i64, StoreError> {
        self.count_of("SELECT COUNT(*) AS n FROM outcomes WHERE state = 'pending'")
            .await
    }

    /// Tickets with a resolution waiting for its window to end (an index of
    /// those tickets only).
    pub async fn tickets_waiting(&self) -> Result<i64, StoreError> {
        self.count_of("SELECT COUNT(*) AS n FROM tickets WHERE settle_at IS NOT NULL")
            .await
    }

    async fn count_of(&self, sql: &'static str) -> Result<i64, StoreError> {
        let row = sqlx::query(sql).fetch_one(&self.reads).await?;
        col(&row, "n")
    }
}
