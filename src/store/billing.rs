//! Caps, clawback reversals and the contract registry.

use super::{col, state_col, Backend, Store, StoreError, Tx};
use crate::lifecycle::{OutcomeState, ReversalState};
use crate::stripe::mode::StripeMode;
use crate::time::Millis;

/// What clawback needs to know about a confirmed outcome.
#[derive(Debug, Clone)]
pub struct OutcomeBrief {
    pub id: String,
    pub state: OutcomeState,
    pub event_name: String,
    pub value: i64,
    pub stripe_customer_id: String,
    /// The contract the outcome was decided under.
    pub contract_version: String,
    pub contract_hash: String,
}

#[derive(Debug, Clone)]
pub struct NewReversal {
    pub outcome_id: String,
    pub tenant: String,
    pub provider: String,
    pub ticket_id: String,
    pub event_name: String,
    pub value: i64,
    pub stripe_customer_id: String,
    pub reopen_event_key: String,
    pub reopened_at: Millis,
    pub created_at: Millis,
    pub evidence: String,
}

/// A reversal claimed by a reporter, with its outcome's current state.
#[derive(Debug, Clone)]
pub struct ClaimedReversal {
    pub outcome_id: String,
    pub event_name: String,
    pub value: i64,
    pub stripe_customer_id: String,
    /// The outcome's Stripe Connect account, if any.
    pub stripe_account: Option<String>,
    pub method: Option<String>,
    pub attempts: u32,
    pub outcome_state: OutcomeState,
    /// Where the outcome's event was reported (`None`: no mode recorded, a row
    /// from before modes were; an unknown spelling makes the reversal
    /// [`UnreadableReversal`]).
    pub outcome_reported_mode: Option<StripeMode>,
    /// When the outcome was first taken to be sent to Stripe (no later than Stripe
    /// received it; `reported_at` for rows older than that column).
    pub outcome_first_sent_at: Option<Millis>,
    pub outcome_lease_until: Option<Millis>,
    /// Timestamp of the correcting event, fixed before the first correction request.
    pub stripe_timestamp: Option<i64>,
    /// An earlier cancel request may have been applied without us hearing so:
    /// one is under way (or was cut by a crash), or any earlier one got no answer
    /// or a 5xx.
    pub cancel_in_doubt: bool,
    /// The identifier of the outcome's meter event at Stripe (what a cancel names):
    /// the outcome id, or `<outcome id>_resend<N>` once resent after a rejection.
    pub outcome_identifier: String,
    /// When a call for the outcome first went without a definite answer
    /// (`outcomes.doubt_since`): a failed outcome with it may be billed after all.
    pub outcome_doubt_since: Option<Millis>,
    /// Where the outcome is billed (`outcomes.sink`): the reversal goes there.
    pub sink: crate::sink::Sink,
    /// The Metronome customer or the subscription item, for those sinks.
    pub sink_target: Option<String>,
    /// The outcome's identity and contract (a Metronome correction carries them).
    pub identity: super::OutcomeIdentity,
}

/// A claimed reversal whose row holds a value this build cannot act on (its
/// outcome's state, the mode it was reported in, its sink): parked for an
/// operator, never carried out on a guess. The other reversals claimed with it
/// go on.
#[derive(Debug, Clone)]
pub struct UnreadableReversal {
    pub outcome_id: String,
    /// What cannot be read: the column, the value and the row.
    pub why: String,
}

/// How a reversal attempt ended.
#[derive(Debug, Clone)]
pub struct ReversalAttempt<'a> {
    pub outcome_id: &'a str,
    pub now: Millis,
    pub method: &'a str,
    pub dry_run: bool,
    /// The mode the request was made in (or would have been: dry-run).
    pub mode: StripeMode,
    /// Stripe's `livemode` in its answer, when it answered.
    pub livemode: Option<bool>,
    pub idempotency_key: Option<&'a str>,
    pub request: &'a str,
    pub status_code: Option<u16>,
    pub request_id: Option<&'a str>,
    pub result: &'a str,
    pub error: Option<&'a str>,
    /// `Pending` (retry at `next_attempt_at`), `Done` or `Failed`.
    pub state: ReversalState,
    pub next_attempt_at: Millis,
    pub stripe_timestamp: Option<i64>,
    /// The request may have been applied without a definite answer (network error,
    /// 5xx): a cancel stays "in doubt".
    pub in_doubt: bool,
}

impl Tx {
    /// Serialize cap checks per Stripe customer (PostgreSQL advisory lock for
    /// this transaction; SQLite already has one writer).
    pub async fn lock_customer(&mut self, customer: &str) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query(
                "SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS l",
            )
            .bind(customer)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Outcomes of a customer confirmed in `[from, to)` that count against caps: not
    /// capped, voided or reversed, and not being reversed (a clawback is recorded).
    pub async fn count_billed(
        &mut self,
        customer: &str,
        from: Millis,
        to: Millis,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM outcomes WHERE stripe_customer_id = $1 AND confirmed_at >= $2 \
             AND confirmed_at < $3 AND state NOT IN ('capped', 'voided', 'reversed') \
             AND NOT EXISTS (SELECT 1 FROM reversals r WHERE r.outcome_id = outcomes.id)",
        )
        .bind(customer)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *self.tx)
        .await?;
        col(&row, "n")
    }

    pub async fn outcome_for_seq(
        &mut self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
        seq: u32,
    ) -> Result<Option<OutcomeBrief>, StoreError> {
        let row = sqlx::query(
            "SELECT id, state, event_name, value, stripe_customer_id, contract_version, contract_hash FROM outcomes \
             WHERE tenant = $1 AND provider = $2 AND ticket_id = $3 AND seq = $4",
        )
        .bind(tenant)
        .bind(provider)
        .bind(ticket_id)
        .bind(i64::from(seq))
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            let id: String = col(&r, "id")?;
            Ok(OutcomeBrief {
                state: state_col(&r, "state", || format!("outcome {id}"))?,
                id,
                event_name: col(&r, "event_name")?,
                value: col(&r, "value")?,
                stripe_customer_id: col(&r, "stripe_customer_id")?,
                contract_version: col(&r, "contract_version")?,
                contract_hash: col(&r, "contract_hash")?,
            })
        })
        .transpose()
    }

    /// The terms of a contract ever used, by hash, decoded; missing or
    /// unreadable is [`StoreError::Contract`].
    pub async fn contract_terms(
        &mut self,
        hash: &str,
    ) -> Result<crate::contract::ContractTerms, StoreError> {
        let row = sqlx::query("SELECT terms FROM contracts WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&mut *self.tx)
            .await?;
        let terms: Option<String> = row.map(|r| col(&r, "terms")).transpose()?;
        super::contracts::decode(hash, terms.as_deref())
    }

    /// Record a reversal once per outcome, naming the earliest late reopen.
    /// Returns whether it is new.
    pub async fn insert_reversal(&mut self, r: &NewReversal) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "INSERT INTO reversals (outcome_id, tenant, provider, ticket_id, event_name, value, stripe_customer_id, \
             reopen_event_key, reopened_at, created_at, evidence, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10) ON CONFLICT (outcome_id) DO NOTHING",
        )
        .bind(&r.outcome_id)
        .bind(&r.tenant)
        .bind(&r.provider)
        .bind(&r.ticket_id)
        .bind(&r.event_name)
        .bind(r.value)
        .bind(&r.stripe_customer_id)
        .bind(&r.reopen_event_key)
        .bind(r.reopened_at)
        .bind(r.created_at)
        .bind(&r.evidence)
        .execute(&mut *self.tx)
        .await?;
        if res.rows_affected() == 1 {
            return Ok(true);
        }
        // Already queued for another late reopen: it names the earliest one, in
        // whatever order the reopens were applied (batches side by side apply a
        // ticket's events in either order), as long as nothing was done with it yet.
        sqlx::query(
            "UPDATE reversals SET reopen_event_key = $1, reopened_at = $2, evidence = $3 \
             WHERE outcome_id = $4 AND state = 'pending' AND attempts = 0 AND method IS NULL \
             AND lease_until IS NULL \
             AND (reopened_at > $2 OR (reopened_at = $2 AND reopen_event_key > $1))",
        )
        .bind(&r.reopen_event_key)
        .bind(r.reopened_at)
        .bind(&r.evidence)
        .bind(&r.outcome_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(false)
    }
}

impl Store {
    /// Claim due reversals with a lease (no transaction held across Stripe calls).
    /// Each row is decoded on its own: one holding a value this build does not
    /// know is an [`UnreadableReversal`] (to park), never an error for the batch.
    pub async fn claim_reversals(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<Result<ClaimedReversal, UnreadableReversal>>, StoreError> {
        let sql = format!(
            "UPDATE reversals SET lease_until = $1 WHERE outcome_id IN ( \
               SELECT outcome_id FROM reversals WHERE state = 'pending' AND next_attempt_at <= $2 \
               AND (lease_until IS NULL OR lease_until <= $2) ORDER BY next_attempt_at, outcome_id LIMIT $3{}) \
             RETURNING outcome_id",
            self.backend.skip_locked()
        );
        let ids = sqlx::query(&sql)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *self.writer().await?)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for r in ids {
            let id: String = col(&r, "outcome_id")?;
            let row = sqlx::query(
                "SELECT r.outcome_id, r.event_name, r.value, r.stripe_customer_id, r.method, r.attempts, r.stripe_timestamp, \
                 r.cancel_in_doubt, o.stripe_account, o.reported_mode, o.state AS outcome_state, COALESCE(o.first_sent_at, o.reported_at) AS first_sent_at, \
                 o.lease_until AS outcome_lease, o.stripe_resends AS outcome_resends, o.sink, o.sink_target, o.doubt_since AS outcome_doubt_since, \
                 o.tenant, o.provider, o.ticket_id, o.seq, o.contract_hash, \
                 (SELECT COUNT(*) FROM stripe_attempts a WHERE a.outcome_id = r.outcome_id AND a.dry_run = 0 \
                  AND a.result LIKE 'reversal:cancel:%' AND (a.status_code IS NULL OR a.status_code >= 500)) \
                  AS cancels_unanswered \
                 FROM reversals r JOIN outcomes o ON o.id = r.outcome_id WHERE r.outcome_id = $1",
            )
            .bind(&id)
            .fetch_one(&self.reads)
            .await?;
            out.push(match claimed_reversal(&id, &row) {
                Ok(r) => Ok(r),
                Err(e) if !e.is_transient() => Err(UnreadableReversal {
                    outcome_id: id,
                    why: e.to_string(),
                }),
                Err(e) => return Err(e),
            });
        }
        Ok(out)
    }

    /// Try a reversal again later without counting an attempt (its outcome is busy).
    /// Set a pending reversal aside until `next_attempt_at`, saying why (a row this
    /// build cannot read: retried, never taken as done or failed).
    pub async fn set_reversal_aside(
        &self,
        outcome_id: &str,
        next_attempt_at: Millis,
        why: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE reversals SET next_attempt_at = $1, lease_until = NULL, last_error = $2 \
             WHERE outcome_id = $3 AND state = 'pending'",
        )
        .bind(next_attempt_at)
        .bind(why)
        .bind(outcome_id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    pub async fn postpone_reversal(
        &self,
        outcome_id: &str,
        next_attempt_at: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE reversals SET next_attempt_at = $1, lease_until = NULL WHERE outcome_id = $2",
        )
        .bind(next_attempt_at)
        .bind(outcome_id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// Void an outcome that was never delivered (or that Stripe rejected after
    /// accepting it), unless a reporter holds it now.
    pub async fn void_outcome_if_idle(&self, id: &str, now: Millis) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE outcomes SET state = 'voided', lease_until = NULL \
             WHERE id = $1 AND state IN ('pending', 'failed', 'rejected_by_stripe') AND (lease_until IS NULL OR lease_until <= $2)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Fix the reversal's method (and, for a correction, its Stripe timestamp) before
    /// the first request, so a retry after a crash sends exactly the same request with
    /// the same idempotency key. A cancel is marked in doubt until a definite answer.
    /// Returns the stored method and timestamp (an earlier call's win), or `None` when
    /// the reversal is no longer pending.
    pub async fn start_reversal_call(
        &self,
        outcome_id: &str,
        method: &str,
        stripe_timestamp: i64,
    ) -> Result<Option<(String, Option<i64>)>, StoreError> {
        let row = sqlx::query(
            "UPDATE reversals SET method = COALESCE(method, $1), \
             stripe_timestamp = CASE WHEN COALESCE(method, $1) = 'correction' \
               THEN COALESCE(stripe_timestamp, $2) ELSE stripe_timestamp END, \
             cancel_in_doubt = CASE WHEN COALESCE(method, $1) = 'cancel' THEN 1 ELSE cancel_in_doubt END \
             WHERE outcome_id = $3 AND state = 'pending' RETURNING method, stripe_timestamp",
        )
        .bind(method)
        .bind(stripe_timestamp)
        .bind(outcome_id)
        .fetch_optional(&mut *self.writer().await?)
        .await?;
        row.map(|r| Ok((col(&r, "method")?, col(&r, "stripe_timestamp")?)))
            .transpose()
    }

    /// Log a reversal attempt and move the reversal to its new state (one transaction).
    /// The method is fixed before the first request and never changes afterwards, but
    /// for [`Store::switch_reversal_to_correction`].
    pub async fn record_reversal_attempt(&self, a: &ReversalAttempt<'_>) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        log_reversal_attempt(&mut tx, a).await?;
        sqlx::query(
            "UPDATE reversals SET method = COALESCE(method, $1), state = $2, attempts = attempts + 1, \
             next_attempt_at = $3, lease_until = NULL, last_error = $4, \
             stripe_request_id = COALESCE($5, stripe_request_id), \
             stripe_timestamp = COALESCE(stripe_timestamp, $6), \
             done_at = CASE WHEN $2 = 'done' THEN $7 ELSE done_at END, \
             cancel_in_doubt = CASE WHEN $9 = 1 THEN cancel_in_doubt ELSE 0 END \
             WHERE outcome_id = $8 AND state = 'pending'",
        )
        .bind(a.method)
        .bind(a.state.as_str())
        .bind(a.next_attempt_at)
        .bind(a.error)
        .bind(a.request_id)
        .bind(a.stripe_timestamp)
        .bind(a.now)
        .bind(a.outcome_id)
        .bind(i64::from(a.in_doubt))
        .execute(&mut *tx.tx)
        .await?;
        if a.state == ReversalState::Done {
            sqlx::query("UPDATE outcomes SET state = 'reversed' WHERE id = $1 AND state IN ('reported', 'dry_run')")
                .bind(a.outcome_id)
                .execute(&mut *tx.tx)
                .await?;
        }
        tx.commit().await
    }

    /// Stripe refused a cancel because the event is too old to cancel, and no earlier
    /// cancel request is in doubt: log that answer and switch the reversal, once, to a
    /// correcting event with `stripe_timestamp`, due at once. Returns whether it switched.
    pub async fn switch_reversal_to_correction(
        &self,
        a: &ReversalAttempt<'_>,
        stripe_timestamp: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        log_reversal_attempt(&mut tx, a).await?;
        let r = sqlx::query(
            "UPDATE reversals SET method = 'correction', stripe_timestamp = $1, cancel_in_doubt = 0, \
             attempts = attempts + 1, next_attempt_at = $2, lease_until = NULL, last_error = $3, \
             stripe_request_id = COALESCE($4, stripe_request_id) \
             WHERE outcome_id = $5 AND state = 'pending' AND method = 'cancel'",
        )
        .bind(stripe_timestamp)
        .bind(a.next_attempt_at)
        .bind(a.error)
        .bind(a.request_id)
        .bind(a.outcome_id)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Remember an effective contract (idempotent).
    pub async fn record_contract(
        &self,
        hash: &str,
        version: &str,
        terms: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO contracts (hash, version, terms, first_seen) VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(version)
        .bind(terms)
        .bind(now)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }
}

/// A claimed reversal's row (see [`Store::claim_reversals`]), decoded.
fn claimed_reversal(id: &str, row: &sqlx::any::AnyRow) -> Result<ClaimedReversal, StoreError> {
    let reported_mode: Option<String> = col(row, "reported_mode")?;
    Ok(ClaimedReversal {
        outcome_id: col(row, "outcome_id")?,
        event_name: col(row, "event_name")?,
        value: col(row, "value")?,
        stripe_customer_id: col(row, "stripe_customer_id")?,
        stripe_account: col(row, "stripe_account")?,
        method: col(row, "method")?,
        attempts: u32::try_from(col::<i64>(row, "attempts")?).unwrap_or(u32::MAX),
        outcome_state: state_col(row, "outcome_state", || format!("outcome {id}"))?,
        outcome_reported_mode: reported_mode
            .as_deref()
            .map(|m| StripeMode::from_stored(m).map_err(|e| e.in_row(format!("outcome {id}"))))
            .transpose()?,
        outcome_first_sent_at: col(row, "first_sent_at")?,
        outcome_lease_until: col(row, "outcome_lease")?,
        stripe_timestamp: col(row, "stripe_timestamp")?,
        // In doubt for good once any cancel call went unanswered or got a 5xx
        // (each call has its own key: a later definite answer says nothing
        // about an earlier call), or one is under way or was cut by a crash.
        cancel_in_doubt: col::<i64>(row, "cancel_in_doubt")? != 0
            || col::<i64>(row, "cancels_unanswered")? > 0,
        outcome_identifier: crate::stripe::events::outcome_identifier(
            id,
            col(row, "outcome_resends")?,
        ),
        outcome_doubt_since: col(row, "outcome_doubt_since")?,
        sink: super::sink_col(row)?,
        sink_target: col(row, "sink_target")?,
        identity: super::OutcomeIdentity::from_row(row)?,
    })
}

/// One row of `stripe_attempts` for a reversal request (`result` = `reversal:<method>:<result>`).
async fn log_reversal_attempt(tx: &mut Tx, a: &ReversalAttempt<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO stripe_attempts (outcome_id, attempted_at, dry_run, request, status_code, request_id, result, error, \
         mode, idempotency_key, livemode) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(a.outcome_id)
    .bind(a.now)
    .bind(i64::from(a.dry_run))
    .bind(a.request)
    .bind(a.status_code.map(i64::from))
    .bind(a.request_id)
    .bind(format!("reversal:{}:{}", a.method, a.result))
    .bind(a.error)
    .bind(if a.dry_run { StripeMode::DryRun } else { a.mode }.as_str())
    .bind(a.idempotency_key)
    .bind(a.livemode.map(i64::from))
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}
