//! The outbox: confirmed outcomes waiting to be (or already) reported to Stripe.

use super::{col, sink_col, state_col, Backend, Store, StoreError, Tx};
use crate::lifecycle::OutcomeState;
use crate::sink::Sink;
use crate::stripe::mode::StripeMode;
use crate::time::Millis;
use std::collections::HashSet;

#[derive(Debug, Clone)]
pub struct NewOutcome {
    pub id: String,
    pub tenant: String,
    pub provider: String,
    pub ticket_id: String,
    pub seq: u32,
    pub resolved_at: Millis,
    pub confirmed_at: Millis,
    pub event_name: String,
    pub value: i64,
    pub stripe_customer_id: String,
    /// Stripe Connect account (`Stripe-Account`), if the tenant bills on one.
    pub stripe_account: Option<String>,
    pub contract_version: String,
    pub contract_hash: String,
    pub evidence: String,
    /// `Pending` (to report) or `Capped` (recorded, never reported).
    pub state: OutcomeState,
    /// Where it is billed, frozen from the tenant's `sink`.
    pub sink: Sink,
    /// The Metronome customer or the subscription item (`Sink::target`).
    pub sink_target: Option<String>,
}

/// An outcome claimed by a reporter, with what it needs to send it.
/// Where [`Store::set_aside`] puts a claimed outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAside {
    /// Still pending, to be claimed again from this time.
    RetryAt(Millis),
    /// Failed, for an operator to decide.
    Park,
}

/// An outcome Stripe would refuse as too old (`Store::too_old_outcomes`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TooOld {
    pub id: String,
    pub tenant: String,
    pub confirmed_at: Millis,
    #[serde(skip)]
    pub evidence: String,
    pub state: OutcomeState,
    /// Calls whose answer was lost or a 5xx: Stripe may have recorded the event.
    pub attempts_in_doubt: i64,
}

#[derive(Debug, Clone)]
pub struct ClaimedOutcome {
    pub id: String,
    pub event_name: String,
    pub value: i64,
    pub stripe_customer_id: String,
    pub stripe_account: Option<String>,
    pub confirmed_at: Millis,
    /// Failed attempts in the current retry budget (a replay resets it).
    pub attempts: u32,
    /// Stripe calls ever made for it: the next call's idempotency-key counter.
    pub calls: u32,
    /// When a call for its current identifier first went unanswered or got a
    /// 5xx (Stripe may have the event); see migration 0007.
    pub doubt_since: Option<Millis>,
    /// The claim's `lease_until`: the fencing token this reporter holds.
    pub lease_until: Millis,
    /// Times it was sent again after Stripe rejected it: its identifier is
    /// `crate::stripe::events::outcome_identifier(id, resends)`.
    pub resends: i64,
    /// Where it is billed (`outcomes.sink`).
    pub sink: Sink,
    /// The Metronome customer or the subscription item, for those sinks.
    pub sink_target: Option<String>,
    /// The outcome's identity (tenant, helpdesk ticket, resolution sequence) and
    /// contract, for sinks that send it along (Metronome's event properties).
    pub identity: OutcomeIdentity,
}

/// Who an outcome is about and under which contract it was decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutcomeIdentity {
    pub tenant: String,
    pub provider: String,
    pub ticket_id: String,
    pub seq: u32,
    pub contract_hash: String,
}

impl OutcomeIdentity {
    /// Read from a row holding `tenant`, `provider`, `ticket_id`, `seq`, `contract_hash`.
    pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<OutcomeIdentity, StoreError> {
        Ok(OutcomeIdentity {
            tenant: col(r, "tenant")?,
            provider: col(r, "provider")?,
            ticket_id: col(r, "ticket_id")?,
            seq: u32::try_from(col::<i64>(r, "seq")?)
                .map_err(|_| StoreError::corrupt("outcome seq out of range"))?,
            contract_hash: col(r, "contract_hash")?,
        })
    }
}

impl ClaimedOutcome {
    /// The `identifier` to send: never one Stripe rejected.
    pub fn stripe_identifier(&self) -> String {
        crate::stripe::events::outcome_identifier(&self.id, self.resends)
    }
}

/// One call to Stripe (or, in dry-run, one that would have been made) for an
/// outcome's meter event, and the outcome's new state.
#[derive(Debug, Clone)]
pub struct OutcomeAttempt<'a> {
    pub outcome_id: &'a str,
    pub now: Millis,
    /// The mode the call was made in (`dry_run`: not made).
    pub mode: StripeMode,
    pub request: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub status_code: Option<u16>,
    pub request_id: Option<&'a str>,
    /// Stripe's `livemode` in its answer, when it answered.
    pub livemode: Option<bool>,
    pub result: &'a str,
    pub error: Option<&'a str>,
    /// `Reported`, `DryRun`, `Failed` or `Pending` (retry at `next_attempt_at`).
    pub state: OutcomeState,
    pub next_attempt_at: Millis,
    /// The call may have been applied without a definite answer (none, or a 5xx).
    pub in_doubt: bool,
}

impl OutcomeAttempt<'_> {
    /// The attempt leaves the outcome sent (or recorded in a dry-run): its
    /// `reported_at` and `reported_mode` are set.
    pub(super) fn sent(&self) -> bool {
        match self.state {
            OutcomeState::Reported | OutcomeState::DryRun => true,
            OutcomeState::Pending
            | OutcomeState::Failed
            | OutcomeState::RejectedByStripe
            | OutcomeState::Capped
            | OutcomeState::Voided
            | OutcomeState::Reversed => false,
        }
    }

    /// The mode the event is reported in: Stripe's word when it gave one.
    pub(super) fn reported_mode(&self) -> StripeMode {
        match self.livemode {
            Some(live) if self.mode.sends() => StripeMode::from_livemode(live),
            _ => self.mode,
        }
    }
}

/// How much later than Stripe's oldest acceptable confirmation time Metronome's
/// is (it accepts 34 days of backdating, Stripe 35; each less its margin), in ms:
/// `replay --too-old` and `replay --failed` judge each outcome by its own sink.
fn metronome_horizon_shift_ms() -> i64 {
    let stripe = crate::stripe::limits::MAX_AGE - crate::stripe::limits::AGE_MARGIN;
    let metronome = crate::metronome::rules::MAX_AGE - crate::metronome::rules::AGE_MARGIN;
    (stripe - metronome).num_milliseconds()
}

/// An outcome's oldest acceptable confirmation time, given Stripe's at `$oldest`
/// and the Metronome shift at `$shift`.
fn horizon_sql(oldest: &str, shift: &str) -> String {
    format!("(CASE WHEN sink = 'metronome' THEN {oldest} + {shift} ELSE {oldest} END)")
}

/// Outcomes recorded in the mode bound to `$2`: `dry_run` ones, or reported there.
const SENT_IN: &str =
    "((state = 'dry_run' AND $2 = 'dry_run') OR (state = 'reported' AND reported_mode = $2))";

impl Tx {
    /// Insert a confirmed outcome into the outbox (idempotent on its id):
    /// whether it is new.
    pub async fn insert_outcome(&mut self, o: &NewOutcome) -> Result<bool, StoreError> {
        Ok(!self
            .insert_outcomes(std::slice::from_ref(o))
            .await?
            .is_empty())
    }

    /// [`Tx::insert_outcome`] of many: the ids of those that are new.
    pub async fn insert_outcomes(
        &mut self,
        outcomes: &[NewOutcome],
    ) -> Result<HashSet<String>, StoreError> {
        const COLUMNS: usize = 18;
        let mut new = HashSet::with_capacity(outcomes.len());
        for chunk in
            super::rows::groups(self.backend, outcomes, super::rows::per_statement(COLUMNS))
        {
            let sql = format!(
                "INSERT INTO outcomes (id, tenant, provider, ticket_id, seq, resolved_at, confirmed_at, event_name, value, \
                 stripe_customer_id, contract_version, contract_hash, evidence, next_attempt_at, state, stripe_account, sink, sink_target) \
                 VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                super::rows::values(self.backend, chunk.len(), COLUMNS, 1)
            );
            let mut q = super::rows::grouped(self.backend, &sql, chunk.len());
            for o in chunk {
                q = q
                    .bind(&o.id)
                    .bind(&o.tenant)
                    .bind(&o.provider)
                    .bind(&o.ticket_id)
                    .bind(i64::from(o.seq))
                    .bind(o.resolved_at)
                    .bind(o.confirmed_at)
                    .bind(&o.event_name)
                    .bind(o.value)
                    .bind(&o.stripe_customer_id)
                    .bind(&o.contract_version)
                    .bind(&o.contract_hash)
                    .bind(&o.evidence)
                    // First due when it was confirmed.
                    .bind(o.confirmed_at)
                    .bind(o.state.as_str())
                    .bind(o.stripe_account.as_deref())
                    .bind(o.sink.as_str())
                    .bind(o.sink_target.as_deref());
            }
            for r in q.fetch_all(&mut *self.tx).await? {
                new.insert(col(&r, "id")?);
            }
        }
        Ok(new)
    }
}

/// How long a claimed row this build cannot read is set aside before it is tried
/// again (outcomes and reversals alike).
pub const UNREADABLE_RETRY_SECS: u64 = 3600;

impl Store {
    /// Claim pending outcomes that are due, with a lease. No transaction stays
    /// open while Stripe is called: the lease is what keeps others away. The first
    /// claim also stamps `first_sent_at`: Stripe cannot have received the event
    /// earlier, so its cancellation window is measured from there. A claimed row
    /// holding a value this build does not know (its sink) is set aside an hour
    /// with the reason instead of returned.
    pub async fn claim_outcomes(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<ClaimedOutcome>, StoreError> {
        let sql = format!(
            "UPDATE outcomes SET lease_until = $1, first_sent_at = COALESCE(first_sent_at, $2) WHERE id IN ( \
               SELECT id FROM outcomes WHERE state = 'pending' AND next_attempt_at <= $2 \
               AND (lease_until IS NULL OR lease_until <= $2) \
               AND NOT EXISTS (SELECT 1 FROM reversals r WHERE r.outcome_id = outcomes.id) \
               ORDER BY next_attempt_at, id LIMIT $3{}) \
             RETURNING id, event_name, value, stripe_customer_id, stripe_account, confirmed_at, attempts, calls, lease_until, stripe_resends, \
             doubt_since, sink, sink_target, tenant, provider, ticket_id, seq, contract_hash",
            self.backend.skip_locked()
        );
        let rows = sqlx::query(&sql)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *self.writer().await?)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            match claimed_outcome(r) {
                Ok(o) => out.push(o),
                // One row this build cannot act on (a sink it does not know, as one a
                // newer release wrote) is set aside an hour, not the batch: the others
                // are sent, and it is sent once it can be read (repaired, or claimed by
                // the release that wrote it).
                Err(e) if !e.is_transient() => {
                    let id: String = col(r, "id")?;
                    let why = format!(
                        "not sent yet: its stored data cannot be read ({e}); retried every hour; \
                         check the outcome, or run the release that wrote it"
                    );
                    tracing::error!(outcome = %id, reason = %e, "claimed outcome cannot be read: set aside one hour");
                    let again = now + std::time::Duration::from_secs(UNREADABLE_RETRY_SECS);
                    self.set_aside(&id, col(r, "lease_until")?, &why, SetAside::RetryAt(again))
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The Stripe customers of outcomes still to be sent (pending), once each:
    /// the preflight checks them too, whether a tenant still names them or not.
    pub async fn unsent_customers(&self, account: Option<&str>) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT stripe_customer_id FROM outcomes WHERE state = 'pending' \
             AND COALESCE(stripe_account, '') = $1 ORDER BY stripe_customer_id",
        )
        .bind(account.unwrap_or(""))
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(|r| col(r, "stripe_customer_id")).collect()
    }

    /// Right before a Stripe call: extend this reporter's lease on a claimed
    /// outcome, only if it still holds it (`token` = the `lease_until` it set) and
    /// the outcome is still pending. `false`: the claim was lost (the lease expired
    /// and another process took the outcome, or a clawback voided it), so the call
    /// must not be made. Returns the new token otherwise.
    pub async fn renew_outcome_lease(
        &self,
        id: &str,
        token: Millis,
        until: Millis,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE outcomes SET lease_until = $1 WHERE id = $2 AND state = 'pending' AND lease_until = $3",
        )
        .bind(until)
        .bind(id)
        .bind(token)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Give claimed outcomes back (lease cleared) without an attempt, e.g. when
    /// another process is reporting the same (customer, meter) pair right now.
    pub async fn release_outcomes(&self, claims: &[(String, Millis)]) -> Result<(), StoreError> {
        for (id, token) in claims {
            sqlx::query(
                "UPDATE outcomes SET lease_until = NULL WHERE id = $1 AND lease_until = $2",
            )
            .bind(id)
            .bind(*token)
            .execute(&mut *self.writer().await?)
            .await?;
        }
        Ok(())
    }

    /// Give a claimed outcome back without a call and without spending an
    /// attempt, with the reason it was not sent: to be tried again later
    /// (a timestamp Stripe would refuse as future) or parked as failed (a
    /// timestamp older than Stripe accepts). Only while this claim holds it.
    pub async fn set_aside(
        &self,
        id: &str,
        token: Millis,
        reason: &str,
        how: SetAside,
    ) -> Result<(), StoreError> {
        set_aside_on(&mut *self.writer().await?, id, token, reason, how).await
    }

    /// Log one call (or dry-run) to Stripe and move the outcome to its new state,
    /// in one transaction. A call that was made counts in `calls` (the next key).
    pub async fn record_attempt(&self, a: &OutcomeAttempt<'_>) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let one = std::slice::from_ref(a);
        insert_attempts(&mut *tx.tx, tx.backend, one).await?;
        move_outcomes(&mut *tx.tx, tx.backend, one).await?;
        tx.commit().await
    }

    /// Log one call for an outcome without changing the outcome: a batch refused
    /// as a whole before each of its events is sent alone (Metronome), whose
    /// own attempts then move the outcome.
    pub async fn log_attempt(&self, a: &OutcomeAttempt<'_>) -> Result<(), StoreError> {
        insert_attempts(
            &mut *self.writer().await?,
            self.backend,
            std::slice::from_ref(a),
        )
        .await
    }

    /// Outcomes sent (or recorded as a dry-run) in another mode than `mode`, by
    /// that mode: in live mode, those were never billed. A recorded mode this
    /// build does not know is logged and left out (this feeds a warning at
    /// start; one damaged row must not stop the reporter from starting).
    pub async fn sent_in_other_modes(
        &self,
        mode: StripeMode,
    ) -> Result<Vec<(StripeMode, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT reported_mode, COUNT(*) AS n FROM outcomes WHERE state IN ('reported', 'dry_run') \
             AND reported_mode IS NOT NULL AND reported_mode <> $1 GROUP BY reported_mode ORDER BY reported_mode",
        )
        .bind(mode.as_str())
        .fetch_all(&self.reads)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let stored: String = col(&r, "reported_mode")?;
            let n: i64 = col(&r, "n")?;
            match StripeMode::from_stored(&stored) {
                Ok(mode) => out.push((mode, n)),
                Err(e) => {
                    tracing::warn!(error = %e, outcomes = n, "outcomes recorded in a Stripe mode this build does not know; their reversals are parked for an operator");
                }
            }
        }
        Ok(out)
    }

    /// Outcomes recorded in `from` (dry-run: state `dry_run`; test: `reported` in
    /// test mode), of a tenant or one id: how many, and how many of those were
    /// confirmed before `oldest` (ms), older than Stripe accepts.
    pub async fn count_sent_in(
        &self,
        from: StripeMode,
        tenant: Option<&str>,
        id: Option<&str>,
        oldest: Millis,
    ) -> Result<(u64, u64), StoreError> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN confirmed_at < $1 THEN 1 ELSE 0 END), 0) AS old \
             FROM outcomes WHERE {} AND ($3 = '' OR tenant = $3) AND ($4 = '' OR id = $4)",
            SENT_IN
        ))
        .bind(oldest)
        .bind(from.as_str())
        .bind(tenant.unwrap_or(""))
        .bind(id.unwrap_or(""))
        .fetch_one(&self.reads)
        .await?;
        let n: i64 = col(&row, "n")?;
        let old: i64 = col(&row, "old")?;
        Ok((
            u64::try_from(n).unwrap_or(0),
            u64::try_from(old).unwrap_or(0),
        ))
    }

    /// Queue the outcomes recorded in `from` to be sent in this mode, with their
    /// identifiers, as if never sent: a fresh retry budget, and the cancellation
    /// window counted from their first call in this mode.
    pub async fn requeue_sent_in(
        &self,
        from: StripeMode,
        tenant: Option<&str>,
        id: Option<&str>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let note = format!("recorded in {from} mode, queued to be sent by an operator's replay");
        let r = sqlx::query(&format!(
            "UPDATE outcomes SET state = 'pending', attempts = 0, next_attempt_at = $1, lease_until = NULL, \
             last_error = $5, stripe_request_id = NULL, reported_at = NULL, reported_mode = NULL, first_sent_at = NULL \
             WHERE {} AND ($3 = '' OR tenant = $3) AND ($4 = '' OR id = $4)",
            SENT_IN
        ))
        .bind(now)
        .bind(from.as_str())
        .bind(tenant.unwrap_or(""))
        .bind(id.unwrap_or(""))
        .bind(note)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(r.rows_affected())
    }

    /// Put failed outcomes back in the queue (an operator's `replay --failed`),
    /// with a fresh retry budget (the attempts stay in `stripe_attempts`).
    /// Outcomes confirmed before `oldest` (ms) are left alone: Stripe would
    /// refuse their timestamp (`replay --too-old` bills them at the current time).
    /// Meter events whose identifier may already be at Stripe past its dedupe
    /// window (`doubt_since` set) are requeued only with `include_in_doubt`, once
    /// an operator checked Stripe. The other sinks resend safely on their own
    /// (Metronome dedupes a transaction id for 34 days, and the sink never sends
    /// one older; a usage record in doubt is resent under its key or judged from
    /// Stripe's summaries). Returns (requeued, left because too old, left in doubt).
    pub async fn requeue_failed(
        &self,
        tenant: Option<&str>,
        id: Option<&str>,
        now: Millis,
        oldest: Millis,
        include_in_doubt: bool,
    ) -> Result<(u64, u64, u64), StoreError> {
        let r = sqlx::query(&format!(
            "UPDATE outcomes SET state = 'pending', next_attempt_at = $1, lease_until = NULL, attempts = 0, \
             doubt_since = NULL \
             WHERE state = 'failed' AND ($2 = '' OR tenant = $2) AND ($3 = '' OR id = $3) \
             AND confirmed_at >= {} AND ($5 = 1 OR doubt_since IS NULL OR sink <> 'stripe_meters')",
            horizon_sql("$4", "$6")
        ))
        .bind(now)
        .bind(tenant.unwrap_or(""))
        .bind(id.unwrap_or(""))
        .bind(oldest)
        .bind(i64::from(include_in_doubt))
        .bind(metronome_horizon_shift_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        let in_doubt = sqlx::query(
            "SELECT COUNT(*) AS n FROM outcomes WHERE state = 'failed' AND doubt_since IS NOT NULL \
             AND sink = 'stripe_meters' AND ($1 = '' OR tenant = $1) AND ($2 = '' OR id = $2) AND confirmed_at >= $3",
        )
        .bind(tenant.unwrap_or(""))
        .bind(id.unwrap_or(""))
        .bind(oldest)
        .fetch_one(&self.reads)
        .await?;
        let in_doubt: i64 = col(&in_doubt, "n")?;
        let left = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM outcomes WHERE state = 'failed' \
             AND ($1 = '' OR tenant = $1) AND ($2 = '' OR id = $2) AND confirmed_at < {}",
            horizon_sql("$3", "$4")
        ))
        .bind(tenant.unwrap_or(""))
        .bind(id.unwrap_or(""))
        .bind(oldest)
        .bind(metronome_horizon_shift_ms())
        .fetch_one(&self.reads)
        .await?;
        let left: i64 = col(&left, "n")?;
        Ok((
            r.rows_affected(),
            u64::try_from(left).unwrap_or(0),
            u64::try_from(in_doubt).unwrap_or(0),
        ))
    }

    /// Outcomes not billed (pending or failed) confirmed before `oldest` (ms):
    /// Stripe refuses their timestamps. With the Stripe attempts of each, so an
    /// operator can see which ones Stripe may have recorded after all.
    pub async fn too_old_outcomes(
        &self,
        tenant: Option<&str>,
        id: Option<&str>,
        oldest: Millis,
    ) -> Result<Vec<TooOld>, StoreError> {
        let rows = sqlx::query(
            // A usage record's call cut by a crash leaves no attempt row, only
            // `usage_doubt_call`: in doubt too (rebilling it at a new timestamp could
            // count it in two periods).
            &format!("SELECT o.id, o.tenant, o.confirmed_at, o.evidence, o.state, \
             (SELECT COUNT(*) FROM stripe_attempts a WHERE a.outcome_id = o.id AND a.dry_run = 0 \
              AND (a.status_code IS NULL OR a.status_code >= 500)) \
             + CASE WHEN o.usage_doubt_call IS NULL THEN 0 ELSE 1 END AS in_doubt \
             FROM outcomes o WHERE o.state IN ('pending', 'failed') AND o.confirmed_at < {} \
             AND ($2 = '' OR o.tenant = $2) AND ($3 = '' OR o.id = $3) ORDER BY o.confirmed_at, o.id",
            horizon_sql("$1", "$4")
        ))
        .bind(oldest)
        .bind(tenant.unwrap_or(""))
        .bind(id.unwrap_or(""))
        .bind(metronome_horizon_shift_ms())
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = col(r, "id")?;
                Ok(TooOld {
                    state: state_col(r, "state", || format!("outcome {id}"))?,
                    id,
                    tenant: col(r, "tenant")?,
                    confirmed_at: col(r, "confirmed_at")?,
                    evidence: col(r, "evidence")?,
                    attempts_in_doubt: col(r, "in_doubt")?,
                })
            })
            .collect()
    }

    /// Bill a too-old outcome at `now` by operator decision: its confirmation
    /// time becomes `now` (the meter event's timestamp), `evidence` (with the
    /// original time recorded) replaces the old, and it is queued with a fresh
    /// retry budget. Only if it is still as read (`confirmed_at` unchanged).
    pub async fn rebill_at(
        &self,
        id: &str,
        was_confirmed_at: Millis,
        now: Millis,
        evidence: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE outcomes SET confirmed_at = $1, evidence = $2, state = 'pending', attempts = 0, \
             next_attempt_at = $1, lease_until = NULL, last_error = NULL \
             WHERE id = $3 AND confirmed_at = $4 AND state IN ('pending', 'failed') \
             AND (lease_until IS NULL OR lease_until < $1)",
        )
        .bind(now)
        .bind(evidence)
        .bind(id)
        .bind(was_confirmed_at)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

/// Attempt rows per `INSERT` ([`ATTEMPT_COLUMNS`] parameters each: 704, under
/// every SQLite's limit).
pub(super) const ATTEMPT_ROWS: usize = 64;
const ATTEMPT_COLUMNS: usize = 11;

/// Outcomes moved per `UPDATE` ([`MOVE_COLUMNS`] parameters each: 640).
pub(super) const MOVES: usize = 64;
const MOVE_COLUMNS: usize = 10;

/// Move the outcome of each attempt in `rows` (each a different outcome), in
/// one statement, to the state its attempt ends in, only while it is still
/// pending: the retry budget spent, a call made counted in `calls` (the next
/// idempotency key), when it is due next, its lease cleared, its last error,
/// Stripe's request id (the earlier one kept when none came), when and in which
/// mode it was sent (when the attempt sent it), and since when it is in doubt
/// (kept from an earlier attempt). The one way an attempt moves an outcome
/// (`record_attempt` moves one). Its caller gives it one of `rows::groups`'s
/// groups (or one row), whose statement is kept prepared (`rows::grouped`).
pub(super) async fn move_outcomes<'e, E>(
    exec: E,
    backend: Backend,
    rows: &[OutcomeAttempt<'_>],
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    // The list's columns are named apart from the table's: PostgreSQL would
    // find `calls` (say) ambiguous in the SET expressions.
    let sql = format!(
        "WITH m (m_id, m_state, m_calls, m_next, m_error, m_request_id, m_sent, m_now, m_mode, m_doubt) \
         AS (VALUES {}) \
         UPDATE outcomes SET state = m_state, attempts = attempts + 1, calls = calls + m_calls, \
         next_attempt_at = m_next, lease_until = NULL, last_error = m_error, \
         stripe_request_id = COALESCE(m_request_id, stripe_request_id), \
         reported_at = CASE WHEN m_sent = 1 THEN m_now ELSE reported_at END, \
         reported_mode = CASE WHEN m_sent = 1 THEN m_mode ELSE reported_mode END, \
         doubt_since = CASE WHEN m_doubt = 1 THEN COALESCE(doubt_since, m_now) ELSE doubt_since END \
         FROM m WHERE outcomes.id = m_id AND outcomes.state = 'pending'",
        super::rows::values(backend, rows.len(), MOVE_COLUMNS, 1)
    );
    let mut q = super::rows::grouped(backend, &sql, rows.len());
    for a in rows {
        q = q
            .bind(a.outcome_id)
            .bind(a.state.as_str())
            .bind(i64::from(a.mode.sends()))
            .bind(a.next_attempt_at)
            .bind(a.error)
            .bind(a.request_id)
            .bind(i64::from(a.sent()))
            .bind(a.now)
            .bind(a.reported_mode().as_str())
            .bind(i64::from(a.in_doubt));
    }
    q.execute(exec).await?;
    Ok(())
}

/// Rows of `stripe_attempts` (every sink's calls are logged there), one
/// statement for one of `rows::groups`'s groups (or one row), kept prepared
/// (`rows::grouped`).
pub(super) async fn insert_attempts<'e, E>(
    exec: E,
    backend: Backend,
    rows: &[OutcomeAttempt<'_>],
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "INSERT INTO stripe_attempts (outcome_id, attempted_at, dry_run, request, status_code, request_id, result, error, \
         mode, livemode, idempotency_key) VALUES {}",
        super::rows::values(backend, rows.len(), ATTEMPT_COLUMNS, 1)
    );
    let mut q = super::rows::grouped(backend, &sql, rows.len());
    for a in rows {
        q = q
            .bind(a.outcome_id)
            .bind(a.now)
            .bind(i64::from(!a.mode.sends()))
            .bind(a.request)
            .bind(a.status_code.map(i64::from))
            .bind(a.request_id)
            .bind(a.result)
            .bind(a.error)
            .bind(a.mode.as_str())
            .bind(a.livemode.map(i64::from))
            .bind(a.idempotency_key);
    }
    q.execute(exec).await?;
    Ok(())
}

/// [`Store::set_aside`] on `exec` (the pool, or a group's transaction).
pub(super) async fn set_aside_on<'e, E>(
    exec: E,
    id: &str,
    token: Millis,
    reason: &str,
    how: SetAside,
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let (state, next_attempt_at) = match how {
        SetAside::RetryAt(at) => (OutcomeState::Pending, Some(at)),
        SetAside::Park => (OutcomeState::Failed, None),
    };
    sqlx::query(
        "UPDATE outcomes SET state = $1, next_attempt_at = COALESCE($2, next_attempt_at), \
         lease_until = NULL, last_error = $3 WHERE id = $4 AND state = 'pending' AND lease_until = $5",
    )
    .bind(state.as_str())
    .bind(next_attempt_at)
    .bind(reason)
    .bind(id)
    .bind(token)
    .execute(exec)
    .await?;
    Ok(())
}

/// A claimed outcome's row (see [`Store::claim_outcomes`]), decoded.
fn claimed_outcome(r: &sqlx::any::AnyRow) -> Result<ClaimedOutcome, StoreError> {
    Ok(ClaimedOutcome {
        id: col(r, "id")?,
        event_name: col(r, "event_name")?,
        value: col(r, "value")?,
        stripe_customer_id: col(r, "stripe_customer_id")?,
        stripe_account: col(r, "stripe_account")?,
        confirmed_at: col(r, "confirmed_at")?,
        attempts: u32::try_from(col::<i64>(r, "attempts")?).unwrap_or(u32::MAX),
        calls: u32::try_from(col::<i64>(r, "calls")?).unwrap_or(u32::MAX),
        doubt_since: col(r, "doubt_since")?,
        lease_until: col(r, "lease_until")?,
        resends: col(r, "stripe_resends")?,
        sink: sink_col(r)?,
        sink_target: col(r, "sink_target")?,
        identity: OutcomeIdentity::from_row(r)?,
    })
}
