//! What the legacy usage-records sink keeps beyond the outbox (migration 0009):
//! which call of a record may have been applied, the item's totals as
//! outcome-meter recorded them, and a clawback's `set` quantity. Every query is
//! per subscription item and Stripe account (`sink_target`, `stripe_account`).

use super::{col, state_col, Store, StoreError};
use crate::lifecycle::OutcomeState;
use crate::stripe::mode::StripeMode;
use crate::time::Millis;

/// The outcomes of one item: `sink = stripe_usage_records`, this item, this account.
const ON_ITEM: &str = "o.sink = 'stripe_usage_records' AND o.sink_target = $1 \
     AND COALESCE(o.stripe_account, '') = $2";

/// An outcome of the item whose usage record may have been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDoubt {
    pub id: String,
    pub value: i64,
    /// Unix ms; the record's timestamp is this in seconds.
    pub confirmed_at: Millis,
    /// `Pending` (to be cleared) or `Failed` (parked while in doubt).
    pub state: OutcomeState,
    /// N of the key in doubt, `<id>:usage_record:<N>`.
    pub call: u32,
    /// When that key was first used (Unix ms, before the call).
    pub since: Millis,
    /// Stripe replayed the saved 5xx of that key: asking again under it is useless.
    pub saved: bool,
}

/// One of outcome-meter's records of the item, for reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageLocal {
    /// Unix seconds.
    pub timestamp: i64,
    pub value: i64,
    pub in_doubt: bool,
}

/// The `[start, end]` of a second, in Unix ms.
fn second_ms(ts: i64) -> (i64, i64) {
    (ts.saturating_mul(1000), ts.saturating_mul(1000) + 999)
}

impl Store {
    /// Right before a usage-record call, only while this claim holds the outcome
    /// (`token`): mark the call as possibly applied (call `n`, first used `now`,
    /// unless a call is already in doubt: its marks stay) and extend the lease to
    /// `until`. A crash during the call leaves it in doubt, as it should.
    /// `false`: the claim was lost; do not call.
    pub async fn begin_usage_call(
        &self,
        id: &str,
        token: Millis,
        until: Millis,
        n: u32,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE outcomes SET lease_until = $1, usage_doubt_call = COALESCE(usage_doubt_call, $2), \
             usage_doubt_since = COALESCE(usage_doubt_since, $3) \
             WHERE id = $4 AND state = 'pending' AND lease_until = $5",
        )
        .bind(until)
        .bind(i64::from(n))
        .bind(now)
        .bind(id)
        .bind(token)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// An answer cleared the record (a 2xx, or Stripe did not execute the call):
    /// nothing is in doubt any more.
    pub async fn clear_usage_doubt(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outcomes SET usage_doubt_call = NULL, usage_doubt_since = NULL, usage_doubt_saved = 0 WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// Stripe replayed the saved 5xx of the key in doubt: clear the record from
    /// the summaries instead of asking again under that key.
    pub async fn mark_usage_doubt_saved(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outcomes SET usage_doubt_saved = 1 WHERE id = $1 AND usage_doubt_call IS NOT NULL",
        )
        .bind(id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// The item's records in doubt (pending or parked), first call first.
    pub async fn usage_in_doubt(
        &self,
        item: &str,
        account: Option<&str>,
    ) -> Result<Vec<UsageDoubt>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT o.id, o.value, o.confirmed_at, o.state, o.usage_doubt_call, o.usage_doubt_since, o.usage_doubt_saved \
             FROM outcomes o WHERE {ON_ITEM} AND o.usage_doubt_call IS NOT NULL \
             AND o.state IN ('pending', 'failed') ORDER BY o.usage_doubt_since, o.id"
        ))
        .bind(item)
        .bind(account.unwrap_or(""))
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = col(r, "id")?;
                Ok(UsageDoubt {
                    state: state_col(r, "state", || format!("outcome {id}"))?,
                    id,
                    value: col(r, "value")?,
                    confirmed_at: col(r, "confirmed_at")?,
                    call: u32::try_from(col::<i64>(r, "usage_doubt_call")?).unwrap_or(u32::MAX),
                    since: col(r, "usage_doubt_since")?,
                    saved: col::<i64>(r, "usage_doubt_saved")? != 0,
                })
            })
            .collect()
    }

    /// The usage Stripe acknowledged for the item in `mode` with a timestamp
    /// (seconds) in `[from, to]`: reported records; a record reversed by `set`
    /// counts nothing (its increment and its reversal cancel out).
    pub async fn usage_known_total(
        &self,
        item: &str,
        account: Option<&str>,
        mode: StripeMode,
        from: i64,
        to: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT CAST(COALESCE(SUM(o.value), 0) AS BIGINT) AS total FROM outcomes o WHERE {ON_ITEM} \
             AND o.state = 'reported' AND o.reported_mode = $3 AND o.confirmed_at >= $4 AND o.confirmed_at <= $5"
        ))
        .bind(item)
        .bind(account.unwrap_or(""))
        .bind(mode.as_str())
        .bind(second_ms(from).0)
        .bind(second_ms(to).1)
        .fetch_one(&self.reads)
        .await?;
        col(&row, "total")
    }

    /// Clawback `set`s on the item's records confirmed in `[from, to]` (seconds)
    /// whose effect at Stripe is not cleared: their method is stored before the
    /// first call, so a set not `done` may have been applied. (Still pending,
    /// parked.) The period's total cannot tell records in doubt apart while one is.
    pub async fn usage_sets_in_doubt(
        &self,
        item: &str,
        account: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(&format!(
            "SELECT CAST(COALESCE(SUM(CASE WHEN r.state = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending, \
             CAST(COALESCE(SUM(CASE WHEN r.state = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS parked \
             FROM reversals r JOIN outcomes o ON o.id = r.outcome_id WHERE {ON_ITEM} \
             AND r.method = 'usage_set' AND r.state <> 'done' AND o.confirmed_at >= $3 AND o.confirmed_at <= $4"
        ))
        .bind(item)
        .bind(account.unwrap_or(""))
        .bind(second_ms(from).0)
        .bind(second_ms(to).1)
        .fetch_one(&self.reads)
        .await?;
        Ok((col(&row, "pending")?, col(&row, "parked")?))
    }

    /// The latest call (not a dry-run) on the item, record or reversal.
    pub async fn usage_last_call(
        &self,
        item: &str,
        account: Option<&str>,
    ) -> Result<Option<Millis>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT MAX(a.attempted_at) AS last FROM stripe_attempts a JOIN outcomes o ON o.id = a.outcome_id \
             WHERE {ON_ITEM} AND a.dry_run = 0"
        ))
        .bind(item)
        .bind(account.unwrap_or(""))
        .fetch_one(&self.reads)
        .await?;
        col(&row, "last")
    }

    /// The summaries showed these records landed: reported (in `mode`, at `now`),
    /// with `note` as their last word, whether pending or parked.
    pub async fn usage_landed(
        &self,
        ids: &[String],
        mode: StripeMode,
        now: Millis,
        note: &str,
    ) -> Result<(), StoreError> {
        for id in ids {
            sqlx::query(
                "UPDATE outcomes SET state = 'reported', reported_at = $1, reported_mode = $2, lease_until = NULL, \
                 last_error = $3, usage_doubt_call = NULL, usage_doubt_since = NULL, usage_doubt_saved = 0 \
                 WHERE id = $4 AND state IN ('pending', 'failed') AND usage_doubt_call IS NOT NULL",
            )
            .bind(now)
            .bind(mode.as_str())
            .bind(note)
            .bind(id)
            .execute(&mut *self.writer().await?)
            .await?;
        }
        Ok(())
    }

    /// The summaries showed these records did not land: no longer in doubt; a
    /// pending one is due at `now` (sent with a new key), a parked one stays parked.
    pub async fn usage_not_landed(
        &self,
        ids: &[String],
        now: Millis,
        note: &str,
    ) -> Result<(), StoreError> {
        for id in ids {
            sqlx::query(
                "UPDATE outcomes SET usage_doubt_call = NULL, usage_doubt_since = NULL, usage_doubt_saved = 0, last_error = $1, \
                 next_attempt_at = CASE WHEN state = 'pending' THEN $2 ELSE next_attempt_at END, \
                 lease_until = CASE WHEN state = 'pending' THEN NULL ELSE lease_until END \
                 WHERE id = $3 AND state IN ('pending', 'failed') AND usage_doubt_call IS NOT NULL",
            )
            .bind(note)
            .bind(now)
            .bind(id)
            .execute(&mut *self.writer().await?)
            .await?;
        }
        Ok(())
    }

    /// Park pending records (still in doubt) for an operator, with the reason.
    pub async fn park_usage(&self, ids: &[String], reason: &str) -> Result<(), StoreError> {
        for id in ids {
            sqlx::query(
                "UPDATE outcomes SET state = 'failed', lease_until = NULL, last_error = $1 \
                 WHERE id = $2 AND state = 'pending'",
            )
            .bind(reason)
            .bind(id)
            .execute(&mut *self.writer().await?)
            .await?;
        }
        Ok(())
    }

    /// The usage outcome-meter's acknowledged records put on the item at exactly
    /// second `ts` in `mode`.
    pub async fn usage_at_second(
        &self,
        item: &str,
        account: Option<&str>,
        mode: StripeMode,
        ts: i64,
    ) -> Result<i64, StoreError> {
        self.usage_known_total(item, account, mode, ts, ts).await
    }

    /// Whether another record of the item at second `ts` is unsent, in flight or
    /// in doubt, or another reversal `set` there is under way.
    pub async fn usage_others_in_doubt(
        &self,
        item: &str,
        account: Option<&str>,
        ts: i64,
        except: &str,
    ) -> Result<bool, StoreError> {
        let (from, to) = second_ms(ts);
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM outcomes o WHERE {ON_ITEM} AND o.id <> $3 \
             AND o.confirmed_at >= $4 AND o.confirmed_at <= $5 \
             AND (o.state = 'pending' OR (o.state = 'failed' AND o.usage_doubt_call IS NOT NULL) \
               OR EXISTS (SELECT 1 FROM reversals r WHERE r.outcome_id = o.id AND r.state = 'pending' \
                          AND r.method = 'usage_set'))"
        ))
        .bind(item)
        .bind(account.unwrap_or(""))
        .bind(except)
        .bind(from)
        .bind(to)
        .fetch_one(&self.reads)
        .await?;
        Ok(col::<i64>(&row, "n")? > 0)
    }

    /// Fix a clawback's `set` (method `usage_set`, the quantity, the record's
    /// timestamp) before its first call, so every resend repeats it. Returns the
    /// stored method and quantity (an earlier call's win), or `None` when the
    /// reversal is no longer pending.
    pub async fn start_usage_set(
        &self,
        outcome_id: &str,
        quantity: i64,
        timestamp: i64,
    ) -> Result<Option<(String, Option<i64>)>, StoreError> {
        let row = sqlx::query(
            "UPDATE reversals SET method = COALESCE(method, 'usage_set'), \
             usage_set_quantity = COALESCE(usage_set_quantity, $1), \
             stripe_timestamp = COALESCE(stripe_timestamp, $2) \
             WHERE outcome_id = $3 AND state = 'pending' RETURNING method, usage_set_quantity",
        )
        .bind(quantity)
        .bind(timestamp)
        .bind(outcome_id)
        .fetch_optional(&mut *self.writer().await?)
        .await?;
        row.map(|r| Ok((col(&r, "method")?, col(&r, "usage_set_quantity")?)))
            .transpose()
    }

    /// A reversal's stored `set` quantity, when one was fixed.
    pub async fn usage_set_quantity(&self, outcome_id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT usage_set_quantity FROM reversals WHERE outcome_id = $1")
            .bind(outcome_id)
            .fetch_optional(&self.reads)
            .await?;
        match row {
            Some(r) => col(&r, "usage_set_quantity"),
            None => Ok(None),
        }
    }

    /// outcome-meter's records of the item in `mode` (for reconcile): reported
    /// ones, and those in doubt. Records reversed by `set` are left out: their
    /// increment and their reversal cancel out.
    pub async fn usage_local_records(
        &self,
        item: &str,
        account: Option<&str>,
        mode: StripeMode,
    ) -> Result<Vec<UsageLocal>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT o.confirmed_at, o.value, \
             CASE WHEN o.state = 'reported' THEN 0 ELSE 1 END AS in_doubt FROM outcomes o WHERE {ON_ITEM} \
             AND ((o.state = 'reported' AND o.reported_mode = $3) \
               OR (o.state IN ('pending', 'failed') AND o.usage_doubt_call IS NOT NULL)) \
             ORDER BY o.confirmed_at"
        ))
        .bind(item)
        .bind(account.unwrap_or(""))
        .bind(mode.as_str())
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageLocal {
                    timestamp: col::<i64>(r, "confirmed_at")?.div_euclid(1000),
                    value: col(r, "value")?,
                    in_doubt: col::<i64>(r, "in_doubt")? != 0,
                })
            })
            .collect()
    }

    /// An outcome's confirmation time (Unix ms): its usage record's timestamp in seconds.
    pub async fn outcome_confirmed_at(&self, id: &str) -> Result<Option<Millis>, StoreError> {
        let row = sqlx::query("SELECT confirmed_at FROM outcomes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|r| col(&r, "confirmed_at")).transpose()
    }
}
