//! Marks: what ends the reporter's handling of a claimed outcome, the attempt of
//! a call (its `stripe_attempts` row and the outcome's new state, as
//! [`Store::record_attempt`]) or the outcome set aside without a call (as
//! [`Store::set_aside`]), written many to one transaction by the reporter's
//! group commit (`crate::reporter`'s mark writer): one commit, one fsync, for
//! every mark that arrived while the last one was being written.

use super::outbox::{insert_attempts, move_outcomes, set_aside_on, ATTEMPT_ROWS, MOVES};
use super::rows::groups;
use super::{OutcomeAttempt, SetAside, Store, StoreError};
use crate::lifecycle::OutcomeState;
use crate::stripe::mode::StripeMode;
use crate::time::Millis;
use std::collections::HashSet;

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
    /// group of at most [`MOVES`] (`rows::groups`) and each set-aside by its
    /// own; otherwise each mark moves its outcome by its own statement, in the
    /// order given.
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
        for chunk in groups(tx.backend, &attempts, ATTEMPT_ROWS) {
            insert_attempts(&mut *tx.tx, tx.backend, chunk).await?;
        }
        let one_mark_per_outcome = marks.len()
            == marks
                .iter()
                .map(OutcomeMark::outcome_id)
                .collect::<HashSet<_>>()
                .len();
        if one_mark_per_outcome {
            for chunk in groups(tx.backend, &attempts, MOVES) {
                move_outcomes(&mut *tx.tx, tx.backend, chunk).await?;
            }
        }
        for m in marks {
            match m {
                OutcomeMark::Attempt(a) if !one_mark_per_outcome => {
                    move_outcomes(&mut *tx.tx, tx.backend, &[a.as_attempt()]).await?
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
