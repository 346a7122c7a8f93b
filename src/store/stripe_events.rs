//! Stripe event-destination notifications (`stripe_events`) and the meter events Stripe
//! rejected after accepting them (`stripe_rejections`, outcome state `rejected_by_stripe`).

use super::{col, Store, StoreError, Stored};
use crate::lifecycle::{OutcomeState, StripeEventState};
use crate::stripe::events::{outcome_identifier, parse_identifier, Identifier, Sample};
use crate::time::Millis;

/// An authentic notification, as it is stored before Stripe gets its 2xx.
#[derive(Debug, Clone)]
pub struct NewStripeEvent {
    pub id: String,
    pub kind: String,
    pub related_object: Option<String>,
    pub context: Option<String>,
    pub livemode: bool,
    pub created: Option<String>,
    pub received_at: Millis,
    pub body: String,
    /// `Pending` (to process) or `Ignored` (a type outcome-meter does not act on).
    pub state: StripeEventState,
}

/// A stored notification claimed for processing.
#[derive(Debug, Clone)]
pub struct ClaimedStripeEvent {
    pub id: String,
    pub kind: String,
    pub related_object: Option<String>,
    pub context: Option<String>,
    pub attempts: u32,
    /// The claim's `lease_until`: the token this processor holds.
    pub lease_until: Millis,
}

/// What one sample error did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "effect")]
pub enum Effect {
    /// The outcome was marked `rejected_by_stripe` now.
    Marked { tenant: String, event_name: String },
    /// Already marked (the same notification processed again, or another one).
    Already,
    /// It names an identifier the outcome no longer uses (it was resent since).
    /// Names an identifier the outcome no longer uses, or one in another Stripe
    /// mode or account than the outcome's: changes nothing.
    Stale,
    /// A clawback's correcting event was rejected: the reversal is `failed` now.
    ReversalFailed,
    /// The outcome is in a state a rejection does not change (voided, capped,
    /// reversed, dry run), or a reversal that is not a done correction.
    Unchanged { state: String },
    /// Shaped like ours, but no such outcome in this database.
    Unknown,
    /// Not an identifier outcome-meter sends.
    NotOurs,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub identifier: String,
    pub code: String,
    #[serde(flatten)]
    pub effect: Effect,
}

/// A rejection of one of an outcome's Stripe identifiers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RejectionRow {
    pub identifier: String,
    pub stripe_event_id: String,
    pub code: String,
    pub message: String,
    pub rejected_at: Millis,
}

/// Outcomes of one (tenant, customer) on a meter first sent in a time range, and the
/// range of their meter-event timestamps (confirmation times, ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRange {
    pub tenant: String,
    pub stripe_customer_id: String,
    pub first_timestamp: Millis,
    pub last_timestamp: Millis,
    pub count: i64,
}

/// An outcome's `last_error` once Stripe rejected its meter event.
pub fn rejection_text(code: &str, message: &str, stripe_event_id: &str) -> String {
    format!(
        "rejected by Stripe after it accepted the event: {code}: {message} (Stripe event {stripe_event_id}); \
         fix the cause, then `outcome-meter replay --rejected`"
    )
}

/// Outcome states a rejection applies to: sent (or possibly sent) and not taken back.
const REJECTABLE: &str = "('pending', 'reported', 'failed')";

impl Store {
    /// Store an authentic notification once per Stripe event id.
    pub async fn insert_stripe_event(&self, e: &NewStripeEvent) -> Result<Stored, StoreError> {
        let r = sqlx::query(
            "INSERT INTO stripe_events (id, type, related_object, context, livemode, created, received_at, body, \
             state, next_attempt_at, processed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $7, CASE WHEN $9 = 'pending' THEN NULL ELSE $7 END) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&e.id)
        .bind(&e.kind)
        .bind(e.related_object.as_deref())
        .bind(e.context.as_deref())
        .bind(i64::from(e.livemode))
        .bind(e.created.as_deref())
        .bind(e.received_at)
        .bind(&e.body)
        .bind(e.state.as_str())
        // A webhook (Stripe's): it commits like the helpdesks' deliveries,
        // without waiting for a background turn.
        .execute(&mut *self.ingest_writer().await?)
        .await;
        let r = self.observe(r.map_err(StoreError::from))?;
        Ok(if r.rows_affected() == 1 {
            Stored::New
        } else {
            Stored::Duplicate
        })
    }

    /// Claim due notifications with a lease (no transaction held across Stripe calls).
    pub async fn claim_stripe_events(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<ClaimedStripeEvent>, StoreError> {
        let sql = format!(
            "UPDATE stripe_events SET lease_until = $1 WHERE id IN ( \
               SELECT id FROM stripe_events WHERE state = 'pending' AND next_attempt_at <= $2 \
               AND (lease_until IS NULL OR lease_until <= $2) ORDER BY next_attempt_at, id LIMIT $3{}) \
             RETURNING id, type, related_object, context, attempts, lease_until",
            self.backend.skip_locked()
        );
        let rows = sqlx::query(&sql)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *self.writer().await?)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedStripeEvent {
                    id: col(r, "id")?,
                    kind: col(r, "type")?,
                    related_object: col(r, "related_object")?,
                    context: col(r, "context")?,
                    attempts: u32::try_from(col::<i64>(r, "attempts")?).unwrap_or(u32::MAX),
                    lease_until: col(r, "lease_until")?,
                })
            })
            .collect()
    }

    /// Finish a claimed notification (`Processed`, `Ignored` or `Failed`), only while
    /// this claim holds it. Returns whether it did.
    pub async fn finish_stripe_event(
        &self,
        id: &str,
        token: Millis,
        state: StripeEventState,
        error: Option<&str>,
        summary: Option<&str>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE stripe_events SET state = $1, error = $2, summary = $3, processed_at = $4, \
             attempts = attempts + 1, lease_until = NULL WHERE id = $5 AND state = 'pending' AND lease_until = $6",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(summary)
        .bind(now)
        .bind(id)
        .bind(token)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Try a claimed notification again at `next` (a transient failure fetching it).
    pub async fn retry_stripe_event(
        &self,
        id: &str,
        token: Millis,
        next: Millis,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE stripe_events SET attempts = attempts + 1, next_attempt_at = $1, lease_until = NULL, error = $2 \
             WHERE id = $3 AND state = 'pending' AND lease_until = $4",
        )
        .bind(next)
        .bind(error)
        .bind(id)
        .bind(token)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// Mark what each sample names as rejected by Stripe, in one transaction. An
    /// outcome is marked only while the named identifier is the one it uses now, and
    /// only from a state where it was (or may have been) sent; a rejection is recorded
    /// once per identifier. Running it again changes nothing.
    ///
    /// `mode` (`live`/`test`, from the event's `livemode`) and `account` (its
    /// `context`) say where the rejected events were: an outcome reported in
    /// another mode, or sent to another account, is not the one rejected (the
    /// same identifier lives in each mode and account) and is left as it is.
    pub async fn apply_rejections(
        &self,
        stripe_event_id: &str,
        samples: &[Sample],
        mode: &str,
        account: Option<&str>,
        now: Millis,
    ) -> Result<Vec<Applied>, StoreError> {
        let at = RejectedIn {
            stripe_event_id,
            mode,
            account,
            now,
        };
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(samples.len());
        for s in samples {
            let effect = match parse_identifier(&s.identifier) {
                None => Effect::NotOurs,
                Some(Identifier::Outcome {
                    outcome_id,
                    resends,
                }) => reject_outcome(&mut tx, &at, s, &outcome_id, resends).await?,
                Some(Identifier::Reversal { outcome_id }) => {
                    reject_correction(&mut tx, &at, s, &outcome_id).await?
                }
            };
            out.push(Applied {
                identifier: s.identifier.clone(),
                code: s.code.clone(),
                effect,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The rejections of an outcome's Stripe identifiers, oldest first.
    pub async fn rejections_of(&self, outcome_id: &str) -> Result<Vec<RejectionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT identifier, stripe_event_id, code, message, rejected_at FROM stripe_rejections \
             WHERE outcome_id = $1 ORDER BY rejected_at, identifier",
        )
        .bind(outcome_id)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RejectionRow {
                    identifier: col(r, "identifier")?,
                    stripe_event_id: col(r, "stripe_event_id")?,
                    code: col(r, "code")?,
                    message: col(r, "message")?,
                    rejected_at: col(r, "rejected_at")?,
                })
            })
            .collect()
    }

    /// Send outcomes rejected by Stripe again (an operator's `replay --rejected`, after
    /// fixing the cause): pending now, with a fresh retry budget and the next Stripe
    /// identifier (`<outcome id>_resend<N>`), never the rejected one. An outcome being
    /// clawed back is left as it is (the clawback voids it). Returns how many.
    pub async fn requeue_rejected(
        &self,
        tenant: Option<&str>,
        id: Option<&str>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE outcomes SET state = 'pending', stripe_resends = stripe_resends + 1, attempts = 0, \
             next_attempt_at = $1, lease_until = NULL, last_error = NULL, first_sent_at = NULL, reported_at = NULL, \
             doubt_since = NULL WHERE state = 'rejected_by_stripe' AND ($2 = '' OR tenant = $2) AND ($3 = '' OR id = $3) \
             AND NOT EXISTS (SELECT 1 FROM reversals r WHERE r.outcome_id = outcomes.id)",
        )
        .bind(now)
        .bind(tenant.unwrap_or(""))
        .bind(id.unwrap_or(""))
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(r.rows_affected())
    }

    /// Per (tenant, customer): the outcomes on meter `event_name` first taken to be sent
    /// in `[from, to]` (ms), and the range of their timestamps.
    pub async fn sent_between(
        &self,
        event_name: &str,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<SentRange>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, stripe_customer_id, MIN(confirmed_at) AS lo, MAX(confirmed_at) AS hi, COUNT(*) AS n \
             FROM outcomes WHERE event_name = $1 AND first_sent_at >= $2 AND first_sent_at <= $3 \
             GROUP BY tenant, stripe_customer_id ORDER BY tenant, stripe_customer_id",
        )
        .bind(event_name)
        .bind(from)
        .bind(to)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SentRange {
                    tenant: col(r, "tenant")?,
                    stripe_customer_id: col(r, "stripe_customer_id")?,
                    first_timestamp: col(r, "lo")?,
                    last_timestamp: col(r, "hi")?,
                    count: col(r, "n")?,
                })
            })
            .collect()
    }

    /// The current Stripe identifier of an outcome (None: no such outcome).
    pub async fn stripe_identifier(&self, outcome_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT stripe_resends FROM outcomes WHERE id = $1")
            .bind(outcome_id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|r| Ok(outcome_identifier(outcome_id, col(&r, "stripe_resends")?)))
            .transpose()
    }
}

/// Where and when Stripe rejected the events a notification names.
struct RejectedIn<'a> {
    stripe_event_id: &'a str,
    /// `live` or `test`.
    mode: &'a str,
    /// The Connect account (`None`: the platform's).
    account: Option<&'a str>,
    now: Millis,
}

/// Mark the outcome a sample names as rejected, while the named identifier
/// (`resends`) is the one it uses now, in the mode and account the rejection
/// came from, and from a state where it was (or may have been) sent.
async fn reject_outcome(
    tx: &mut super::Tx,
    at: &RejectedIn<'_>,
    s: &Sample,
    outcome_id: &str,
    resends: i64,
) -> Result<Effect, StoreError> {
    let sql = format!(
        "SELECT state, stripe_resends, tenant, event_name, reported_mode, stripe_account \
         FROM outcomes WHERE id = $1{}",
        tx.backend.for_update()
    );
    let Some(row) = sqlx::query(&sql)
        .bind(outcome_id)
        .fetch_optional(&mut *tx.tx)
        .await?
    else {
        return Ok(Effect::Unknown);
    };
    // Read as stored: only compared with `rejected_by_stripe` and shown. A state
    // this build does not know changes nothing (the update below leaves it), and
    // never fails the notification and the others claimed with it.
    let state: String = col(&row, "state")?;
    let current: i64 = col(&row, "stripe_resends")?;
    let reported_mode: Option<String> = col(&row, "reported_mode")?;
    let sent_to: Option<String> = col(&row, "stripe_account")?;
    let elsewhere =
        reported_mode.as_deref().is_some_and(|m| m != at.mode) || sent_to.as_deref() != at.account;
    if current != resends || elsewhere {
        return Ok(Effect::Stale);
    }
    if crate::stripe::retry::says_duplicate(&s.code, &s.message) {
        // A resend Stripe dropped because it had the identifier already: the event
        // it repeats was counted, so the outcome stays billed (marking it rejected
        // would let `replay --rejected` bill it again under a new identifier).
        record_rejection(tx, outcome_id, s, at.stripe_event_id, at.now).await?;
        return Ok(Effect::Unchanged { state });
    }
    record_rejection(tx, outcome_id, s, at.stripe_event_id, at.now).await?;
    let text = rejection_text(&s.code, &s.message, at.stripe_event_id);
    let r = sqlx::query(&format!(
        "UPDATE outcomes SET state = 'rejected_by_stripe', last_error = $1, lease_until = NULL \
         WHERE id = $2 AND stripe_resends = $3 AND state IN {REJECTABLE}"
    ))
    .bind(&text)
    .bind(outcome_id)
    .bind(resends)
    .execute(&mut *tx.tx)
    .await?;
    Ok(if r.rows_affected() == 1 {
        Effect::Marked {
            tenant: col(&row, "tenant")?,
            event_name: col(&row, "event_name")?,
        }
    } else if state == OutcomeState::RejectedByStripe.as_str() {
        Effect::Already
    } else {
        Effect::Unchanged { state }
    })
}

/// A clawback's correcting event was rejected: its reversal (pending or done)
/// is failed, and the outcome stays billed.
async fn reject_correction(
    tx: &mut super::Tx,
    at: &RejectedIn<'_>,
    s: &Sample,
    outcome_id: &str,
) -> Result<Effect, StoreError> {
    let Some(row) =
        sqlx::query("SELECT state FROM reversals WHERE outcome_id = $1 AND method = 'correction'")
            .bind(outcome_id)
            .fetch_optional(&mut *tx.tx)
            .await?
    else {
        return Ok(Effect::Unknown);
    };
    // As stored: only shown (see `reject_outcome`).
    let state: String = col(&row, "state")?;
    record_rejection(tx, outcome_id, s, at.stripe_event_id, at.now).await?;
    let text = format!(
        "the correcting event was rejected by Stripe after it accepted it: {}: {} \
         (Stripe event {}); the outcome is still billed: credit the \
         customer by hand",
        s.code, s.message, at.stripe_event_id
    );
    let r = sqlx::query(
        "UPDATE reversals SET state = 'failed', last_error = $1, lease_until = NULL \
         WHERE outcome_id = $2 AND method = 'correction' AND state IN ('pending', 'done')",
    )
    .bind(&text)
    .bind(outcome_id)
    .execute(&mut *tx.tx)
    .await?;
    Ok(if r.rows_affected() == 1 {
        Effect::ReversalFailed
    } else {
        Effect::Unchanged { state }
    })
}

async fn record_rejection(
    tx: &mut super::Tx,
    outcome_id: &str,
    s: &Sample,
    stripe_event_id: &str,
    now: Millis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO stripe_rejections (identifier, outcome_id, stripe_event_id, code, message, rejected_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (identifier) DO NOTHING",
    )
    .bind(&s.identifier)
    .bind(outcome_id)
    .bind(stripe_event_id)
    .bind(&s.code)
    .bind(&s.message)
    .bind(now)
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}
