//! Clawback reversals: claimed in batches and carried out on the sink the
//! outcome was billed on; on `stripe_meters`, a void, a cancel within 24 hours
//! or a correcting event (see [`super::reversal_method`]).

use super::attempt::{CallResult, ReversalCall};
use super::reversal_method::{
    after_cancel_too_old, choose_method, manual_reason, Method, MethodInput,
};
use super::Reporter;
use crate::lifecycle::{OutcomeState, ReversalState};
use crate::outcome::idempotency_key;
use crate::settings::MeterAggregation;
use crate::sink::Sink;
use crate::store::{ClaimedReversal, ReversalAttempt, StoreError, UnreadableReversal};
use crate::stripe::client::{cancel_form, Ack, MeterEvent, StripeClient, StripeError};
use crate::stripe::preflight::MeterInfo;
use crate::stripe::retry::is_cancel_too_old;
use crate::time::Millis;
use std::time::Duration;

/// A stored reversal method this build does not know: never taken as done (the
/// customer could stay billed), parked for an operator.
fn unreadable_method(r: &ClaimedReversal) -> Option<String> {
    let stored = r.method.as_deref()?;
    Method::parse(stored).is_err().then(|| {
        format!(
            "not reversed: its stored method `{stored}` is unknown to this build (a newer or damaged \
             record); check what reached the billing system and credit by hand, or run the release \
             that wrote it"
        )
    })
}

/// A clawback of an outcome parked as failed after calls without a definite
/// answer: the billing system may hold it after all, so it is neither voided (the
/// customer could stay billed, unseen) nor sent again here. Parked for an
/// operator with what to check. (Usage records settle their own doubt first.)
fn billed_in_doubt(r: &ClaimedReversal) -> Option<String> {
    if r.method.is_some()
        || r.outcome_state != OutcomeState::Failed
        || r.outcome_doubt_since.is_none()
    {
        return None;
    }
    let check = match r.sink {
        Sink::StripeUsageRecords => return None,
        Sink::StripeMeters => format!(
            "Stripe may hold its meter event (identifier {}): check the meter's event summaries",
            r.outcome_identifier
        ),
        Sink::Metronome => format!(
            "Metronome may hold its usage event (transaction_id {}): check Metronome's events",
            r.outcome_id
        ),
    };
    Some(format!(
        "not reversed: the outcome was parked after calls without a definite answer, so it may be \
         billed after all; {check}, and credit the customer by hand if it is there"
    ))
}

impl Reporter {
    /// Claim one batch of clawback reversals and carry them out. One whose row
    /// this build cannot read is set aside an hour; the others go on.
    pub(super) async fn reverse_batch(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        if !self.store.any_reversal_due(now).await? {
            return Ok(0);
        }
        let claimed = self
            .store
            .claim_reversals(now, now + self.lease, self.settings.batch_size)
            .await?;
        for r in &claimed {
            let r = match r {
                Ok(r) => r,
                Err(unreadable) => {
                    self.set_unreadable_aside(unreadable, self.clock.now_ms())
                        .await?;
                    continue;
                }
            };
            if let Some(why) = unreadable_method(r).or_else(|| billed_in_doubt(r)) {
                self.park_reversal(r, self.clock.now_ms(), &why).await?;
                continue;
            }
            match r.sink {
                Sink::StripeMeters => self.reverse_one(r).await?,
                Sink::Metronome => self.reverse_metronome(r).await?,
                Sink::StripeUsageRecords => self.reverse_usage_record(r).await?,
            }
        }
        Ok(claimed.len())
    }

    async fn reverse_one(&self, r: &ClaimedReversal) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        // A cancel or a correction goes to the customer's meter: both must pass
        // the preflight (a correction for a deleted customer would be rejected).
        let meter = self.admit(
            r.stripe_account.as_deref(),
            &r.stripe_customer_id,
            &r.event_name,
        );
        // A meter failing the preflight waits below; its placeholder never parks anything.
        let aggregation = meter
            .as_ref()
            .map_or(MeterAggregation::Sum, |m| m.aggregation);
        let method = self.method_for(r, now, aggregation);
        let done = |request: &'static str, result: &'static str, dry_run: bool| ReversalAttempt {
            request,
            dry_run,
            ..self.reversal_done(r, now, method, result)
        };
        let meter = match (method, meter) {
            (Method::Cancel | Method::Correction | Method::Manual, Err(hold)) => {
                tracing::warn!(outcome = %r.outcome_id, method = method.as_str(), reason = hold.reason, why = %hold.text, "clawback reversal waits for the Stripe preflight");
                return self
                    .store
                    .postpone_reversal(&r.outcome_id, hold.until)
                    .await;
            }
            (_, meter) => meter.unwrap_or_else(|_| MeterInfo::defaults(aggregation)),
        };
        match method {
            Method::WaitForLive => {
                tracing::warn!(outcome = %r.outcome_id, mode = %self.mode, "clawback: the outcome was reported in live mode; only a live-mode process reverses it");
                let next = now + Duration::from_secs(300);
                self.store.postpone_reversal(&r.outcome_id, next).await
            }
            Method::Nothing => {
                let a = done("", "nothing_to_reverse", false);
                self.store.record_reversal_attempt(&a).await
            }
            Method::Void => {
                if self.store.void_outcome_if_idle(&r.outcome_id, now).await? {
                    tracing::info!(outcome = %r.outcome_id, "clawback: outcome voided before it was sent");
                    let a = done("", "voided_before_sending", false);
                    self.store.record_reversal_attempt(&a).await
                } else {
                    // A reporter holds it right now: look again when its lease ends.
                    let next =
                        r.outcome_lease_until.unwrap_or(now).max(now) + Duration::from_secs(1);
                    self.store.postpone_reversal(&r.outcome_id, next).await
                }
            }
            Method::DryRun => {
                let request = cancel_form(&r.event_name, &r.outcome_id);
                let mut a = done("", "dry_run", true);
                a.request = &request;
                self.store.record_reversal_attempt(&a).await
            }
            Method::Manual => {
                let why = manual_reason(&r.event_name, aggregation);
                tracing::error!(outcome = %r.outcome_id, %why, "clawback: reversal parked as failed");
                let mut a = done("", "not_reversible", false);
                a.state = ReversalState::Failed;
                a.error = Some(&why);
                self.store.record_reversal_attempt(&a).await
            }
            Method::Cancel | Method::Correction => {
                self.reverse_at_stripe(r, method, now, &meter).await
            }
            Method::UsageSet => {
                let mut a = done("", "not_reversible", false);
                a.state = ReversalState::Failed;
                a.error = Some("a usage-record reversal stored for a meter event: credit by hand");
                self.store.record_reversal_attempt(&a).await
            }
        }
    }

    /// Cancel the meter event, or send a correcting event, and record the attempt.
    async fn reverse_at_stripe(
        &self,
        r: &ClaimedReversal,
        method: Method,
        now: Millis,
        meter: &MeterInfo,
    ) -> Result<(), StoreError> {
        let Some(client) = &self.client else {
            tracing::warn!(outcome = %r.outcome_id, "clawback reversal waits: no Stripe key in this process");
            return self
                .store
                .postpone_reversal(&r.outcome_id, now + Duration::from_secs(300))
                .await;
        };
        // Persist the method (and a correction's timestamp) before Stripe can see the
        // request: a retry after a crash then sends the very same request and key.
        let Some((stored, stored_ts)) = self
            .store
            .start_reversal_call(&r.outcome_id, method.as_str(), self.stripe_seconds(now))
            .await?
        else {
            return Ok(()); // no longer pending: another reporter finished it
        };
        let Ok(method) = Method::parse(&stored) else {
            // Caught on the next pass (`unreadable_method`).
            return self.store.postpone_reversal(&r.outcome_id, now).await;
        };
        let stripe_timestamp = stored_ts.unwrap_or(self.stripe_seconds(now));
        let key = idempotency_key(
            &r.outcome_id,
            if method == Method::Cancel {
                "cancel"
            } else {
                "reversal"
            },
            r.attempts,
        );
        let (request, result) = match method {
            Method::Cancel => self.cancel_at_stripe(client, r, &key).await,
            Method::Correction => {
                self.correct_at_stripe(client, r, &key, stripe_timestamp, meter)
                    .await
            }
            other => {
                // Stored by another path meanwhile: plan again on the next pass.
                tracing::warn!(outcome = %r.outcome_id, method = other.as_str(), "reversal method changed; planning again");
                return self.store.postpone_reversal(&r.outcome_id, now).await;
            }
        };
        let call = ReversalCall {
            outcome_id: &r.outcome_id,
            now,
            method: method.as_str(),
            idempotency_key: Some(&key),
            request: &request,
            stripe_timestamp: (method == Method::Correction).then_some(stripe_timestamp),
        };
        self.record_stripe_reversal(r, method, &call, &result, meter.aggregation)
            .await
    }

    /// Cancel the outcome's meter event. Returns the request and Stripe's answer.
    async fn cancel_at_stripe(
        &self,
        client: &StripeClient,
        r: &ClaimedReversal,
        key: &str,
    ) -> (String, Result<Ack, StripeError>) {
        self.limiter.acquire().await;
        // A fresh key per call (see `idempotency_key`). A cancel has no
        // identifier of its own for Stripe to dedupe, but it names the one
        // event it cancels: a second cancel of the same event cannot take
        // away anything more. What could subtract twice is a correction
        // after a cancel that may have been applied: `cancel_in_doubt`
        // keeps that from happening (see `after_cancel_too_old`).
        let res = self
            .timed(
                "cancel",
                client.cancel_meter_event(
                    &r.event_name,
                    &r.outcome_identifier,
                    key,
                    r.stripe_account.as_deref(),
                ),
            )
            .await;
        (cancel_form(&r.event_name, &r.outcome_identifier), res)
    }

    /// After Stripe's cancellation window: a correcting event with the negative
    /// value, dated `stripe_timestamp`. Returns the request and Stripe's answer.
    async fn correct_at_stripe(
        &self,
        client: &StripeClient,
        r: &ClaimedReversal,
        key: &str,
        stripe_timestamp: i64,
        meter: &MeterInfo,
    ) -> (String, Result<Ack, StripeError>) {
        let ev = MeterEvent {
            event_name: r.event_name.clone(),
            stripe_customer_id: r.stripe_customer_id.clone(),
            value: -r.value,
            identifier: format!("{}_reversal", r.outcome_id),
            timestamp: stripe_timestamp,
            customer_key: meter.customer_key.clone(),
            value_key: meter.value_key.clone(),
        };
        self.limiter.acquire().await;
        // Stripe dedupes the correction on its identifier across keys.
        let res = self
            .timed(
                "correction",
                client.create_meter_event(&ev, key, r.stripe_account.as_deref()),
            )
            .await;
        (ev.encoded(), res)
    }

    /// Record Stripe's answer to a cancel or a correction: done, retried later,
    /// failed; a cancel refused as too old switches to a correcting event on a
    /// meter that can take one (`aggregation`), else it is failed.
    async fn record_stripe_reversal(
        &self,
        r: &ClaimedReversal,
        method: Method,
        call: &ReversalCall<'_>,
        result: &Result<Ack, StripeError>,
        aggregation: MeterAggregation,
    ) -> Result<(), StoreError> {
        let answer = result.answer();
        let mut attempt = answer.reversal_attempt(call, self.mode);
        let too_old =
            method == Method::Cancel && result.as_ref().err().is_some_and(is_cancel_too_old);
        let parked;
        if too_old {
            attempt.result = "too_old";
            match after_cancel_too_old(r.cancel_in_doubt, &r.event_name, aggregation) {
                Ok(_) => {
                    tracing::warn!(outcome = %r.outcome_id, "Stripe refused the cancel as too old: switching to a correcting event");
                    self.store
                        .switch_reversal_to_correction(&attempt, self.stripe_seconds(call.now))
                        .await?;
                    return Ok(());
                }
                Err(why) => {
                    parked = format!("{why} (Stripe: {})", answer.error.as_deref().unwrap_or(""));
                    attempt.state = ReversalState::Failed;
                    attempt.error = Some(&parked);
                }
            }
        } else {
            self.next_step(answer.disposition, r.attempts, call.now)
                .end_reversal(&mut attempt);
        }
        tracing::info!(outcome = %r.outcome_id, method = method.as_str(), state = attempt.state.as_str(), "clawback reversal attempt");
        self.store.record_reversal_attempt(&attempt).await
    }
}

impl Reporter {
    pub(super) fn reversal_done<'a>(
        &self,
        r: &'a ClaimedReversal,
        now: Millis,
        method: Method,
        result: &'a str,
    ) -> ReversalAttempt<'a> {
        self.reversal_done_of(&r.outcome_id, now, method, result)
    }

    /// [`Reporter::reversal_done`] of the reversal of `outcome_id`.
    fn reversal_done_of<'a>(
        &self,
        outcome_id: &'a str,
        now: Millis,
        method: Method,
        result: &'a str,
    ) -> ReversalAttempt<'a> {
        ReversalAttempt {
            outcome_id,
            now,
            method: method.as_str(),
            dry_run: false,
            mode: self.mode,
            livemode: None,
            idempotency_key: None,
            request: "",
            status_code: None,
            request_id: None,
            result,
            error: None,
            state: ReversalState::Done,
            next_attempt_at: now,
            stripe_timestamp: None,
            in_doubt: false,
        }
    }

    /// Park the reversal (state failed) with the explanation, for a credit by hand.
    pub(super) async fn park_reversal(
        &self,
        r: &ClaimedReversal,
        now: Millis,
        why: &str,
    ) -> Result<(), StoreError> {
        self.park_reversal_of(&r.outcome_id, now, why).await
    }

    /// Park a reversal whose row holds a value this build does not know (its
    /// outcome's state or reported mode, its sink): never carried out on a guess.
    /// How this process reverses claimed reversal `r` ([`choose_method`]).
    pub(super) fn method_for(
        &self,
        r: &ClaimedReversal,
        now: Millis,
        aggregation: MeterAggregation,
    ) -> Method {
        choose_method(MethodInput {
            stored: r.method.as_deref(),
            outcome_state: r.outcome_state,
            reported_in: r.outcome_reported_mode,
            mode: self.mode,
            first_sent_at: r.outcome_first_sent_at,
            now,
            aggregation,
        })
    }

    async fn set_unreadable_aside(
        &self,
        r: &UnreadableReversal,
        now: Millis,
    ) -> Result<(), StoreError> {
        let why = format!(
            "not reversed yet: its stored data cannot be read ({}); retried every hour; check the \
             outcome, or run the release that wrote it",
            r.why
        );
        tracing::error!(outcome = %r.outcome_id, %why, "clawback: reversal set aside one hour");
        let again = now + Duration::from_secs(crate::store::UNREADABLE_RETRY_SECS);
        self.store
            .set_reversal_aside(&r.outcome_id, again, &why)
            .await
    }

    async fn park_reversal_of(
        &self,
        outcome_id: &str,
        now: Millis,
        why: &str,
    ) -> Result<(), StoreError> {
        tracing::error!(outcome = %outcome_id, %why, "clawback: reversal parked as failed");
        let mut a = self.reversal_done_of(outcome_id, now, Method::Manual, "not_reversible");
        a.state = ReversalState::Failed;
        a.error = Some(why);
        self.store.record_reversal_attempt(&a).await
    }
}
