//! Marks: what ends the reporter's handling of a claimed outcome, the attempt of
//! a call (its `stripe_attempts` row and the outcome's new state, as
//! [`Store::record_attempt`]) or the outcome set aside without a call (as
//! [`Store::set_aside`]), written many to one transaction by the reporter's
//! group commit (`crate::reporter`'s mark writer): one commit, one fsync, for
//! every mark that arrived while the last one was being written.

use super::outbox::{insert_attempt, set_aside_on};
use super::{OutcomeAttempt, SetAside, Store, StoreError};
use crate::lifecycle::OutcomeState;
use crate::stripe::mode::StripeMode;
use crate::time::Millis;
use std::collections::HashSet;

/// Attempt rows per `INSERT` (11 parameters each: 704, under every SQLite's limit).
const ROWS: usize = 64;

/// Outcomes moved per `UPDATE` ([`MOVE_COLUMNS`] parameters each: 640).
const MOVES: usize = 64;
const MOVE_COLUMNS: usize = 10;

/// An [`OutcomeAttempt`] owning its text: handed to the group commit and
/// recorded there, with others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedAttempt {
    pub outcome_id: String,
    pub now: Millis,
    pub mode: StripeMode,
    pub request: String,
    pub idempotency_key: Option<String>,
    pub status_code: Option<u16>,
    pub request_id: Option<String>,
    pub livemode: Option<bool>,
    pub result: String,
    pub error: Option<String>,
    pub state: OutcomeState,
    pub next_attempt_at: Millis,
    pub in_doubt: bool,
}

impl OutcomeAttempt<'_> {
    /// The same attempt, owning its text.
    pub fn to_owned_attempt(&self) -> OwnedAttempt {
        OwnedAttempt {
            outcome_id: self.outcome_id.to_string(),
            now: self.now,
            mode: self.mode,
            request: self.request.to_string(),
            idempotency_key: self.idempotency_key.map(str::to_string),
            status_code: self.status_code,
            request_id: self.request_id.map(str::to_string),
            livemode: self.livemode,
            result: self.result.to_string(),
            error: self.error.map(str::to_string),
            state: self.state,
            next_attempt_at: self.next_attempt_at,
            in_doubt: self.in_doubt,
        }
    }
}

impl OwnedAttempt {
    pub fn as_attempt(&self) -> OutcomeAttempt<'_> {
        OutcomeAttempt {
            outcome_id: &self.outcome_id,
            now: self.now,
            mode: self.mode,
            request: &self.request,
            idempotency_key: self.idempotency_key.as_deref(),
            status_code: self.status_code,
            request_id: self.request_id.as_deref(),
            livemode: self.livemode,
            result: &self.result,
            error: self.error.as_deref(),
            state: self.state,
            next_attempt_at: self.next_attempt_at,
            in_doubt: self.in_doubt,
        }
    }
}

/// One write ending the handling of a claimed outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeMark {
    /// A call made (or a dry-run): as [`Store::record_attempt`].
    Attempt(OwnedAttempt),
    /// No call: as [`Store::set_aside`].
    SetAside {
        id: String,
        token: Millis,
        reason: String,
        how: SetAside,
    },
}

impl OutcomeMark {
    /// The outcome it is about.
    pub fn outcome_id(&self) -> &str {
        match self {
            OutcomeMark::Attempt(a) => &a.outcome_id,
            OutcomeMark::SetAside { id, .. } => id,
        }
    }
}

impl Store {
    /// Write `marks` in one transaction, all or none, each as its own method
    /// would (the same guards: an outcome moves only while pending, a set-aside
    /// only while the claim holds it). Attempt rows go in multi-row inserts.
    /// When every mark is about a different outcome (as the reporter's are: one
    /// mark ends one claim), the attempts' outcomes move by one statement per
    /// [`MOVES`] and each set-aside by its own; otherwise each mark moves its
    /// outcome by its own statement, in the order given.
    pub async fn record_marks(&self, marks: &[OutcomeMark]) -> Result<(), StoreError> {
        if marks.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let attempts: Vec<OutcomeAttempt<'_>> = marks
            .iter()
            .filter_map(|m| match m {
                OutcomeMark::Attempt(a) => Some(a.as_attempt()),
                OutcomeMark::SetAside { .. } => None,
            })
            .collect();
        for chunk in attempts.chunks(ROWS) {
            if let [one] = chunk {
                insert_attempt(&mut *tx.tx, one).await?;
            } else {
                insert_attempts(&mut tx, chunk).await?;
            }
        }
        let one_mark_per_outcome = marks.len()
            == marks
                .iter()
                .map(OutcomeMark::outcome_id)
                .collect::<HashSet<_>>()
                .len();
        if one_mark_per_outcome {
            for chunk in attempts.chunks(MOVES) {
                move_outcomes(&mut tx, chunk).await?;
            }
        }
        for m in marks {
            match m {
                OutcomeMark::Attempt(a) if !one_mark_per_outcome => {
                    move_outcomes(&mut tx, &[a.as_attempt()]).await?
                }
                OutcomeMark::Attempt(_) => {}
                OutcomeMark::SetAside {
                    id,
                    token,
                    reason,
                    how,
                } => set_aside_on(&mut *tx.tx, id, *token, reason, *how).await?,
            }
        }
        tx.commit().await
    }
}

/// Move the outcome of each attempt in `rows` (each a different outcome), in
/// one statement, to the state its attempt ends in, only while it is still
/// pending: the retry budget spent, a call made counted in `calls` (the next
/// idempotency key), when it is due next, its lease cleared, its last error,
/// Stripe's request id (the earlier one kept when none came), when and in which
/// mode it was sent (when the attempt sent it), and since when it is in doubt
/// (kept from an earlier attempt). The one way an attempt moves an outcome
/// (`record_attempt` moves one); one row's statement is kept prepared.
pub(super) async fn move_outcomes(
    tx: &mut super::Tx,
    rows: &[OutcomeAttempt<'_>],
) -> Result<(), StoreError> {
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
        super::rows::values(tx.backend, rows.len(), MOVE_COLUMNS, 1)
    );
    let mut q = super::rows::multi_row(&sql, rows.len());
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
    q.execute(&mut *tx.tx).await?;
    Ok(())
}

/// `stripe_attempts` rows, one statement.
async fn insert_attempts(
    tx: &mut super::Tx,
    rows: &[OutcomeAttempt<'_>],
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO stripe_attempts (outcome_id, attempted_at, dry_run, request, status_code, request_id, result, error, \
         mode, livemode, idempotency_key) VALUES {}",
        super::rows::values(tx.backend, rows.len(), 11, 1)
    );
    let mut q = super::rows::multi_row(&sql, rows.len());
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
    q.execute(&mut *tx.tx).await?;
    Ok(())
}
