//! Marks: what ends the reporter's handling of a claimed outcome, the attempt of
//! a call (its `stripe_attempts` row and the outcome's new state, as
//! [`Store::record_attempt`]) or the outcome set aside without a call (as
//! [`Store::set_aside`]), written many to one transaction by the reporter's
//! group commit (`crate::reporter`'s mark writer): one commit, one fsync, for
//! every mark that arrived while the last one was being written.

use super::outbox::{insert_attempt, move_outcome, set_aside_on};
use super::{OutcomeAttempt, SetAside, Store, StoreError};
use crate::lifecycle::OutcomeState;
use crate::stripe::mode::StripeMode;
use crate::time::Millis;

/// Attempt rows per `INSERT` (11 parameters each: 704, under every SQLite's limit).
const ROWS: usize = 64;

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
    /// only while the claim holds it). Attempt rows go in multi-row inserts;
    /// each outcome moves by its own statement, in the order given.
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
        for m in marks {
            match m {
                OutcomeMark::Attempt(a) => move_outcome(&mut *tx.tx, &a.as_attempt()).await?,
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
