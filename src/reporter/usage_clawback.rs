//! Clawback on the `stripe_usage_records` sink. A usage record cannot be
//! deleted or made negative; the documented correction is `action=set` at the
//! record's timestamp with the usage there less the outcome's quantity
//! ([`rules::plan_reversal`]), possible only in the item's current billing
//! period. Anything else is parked with the explanation, for a credit by hand.
//!
//! - never sent: the outcome is voided;
//! - dry-run: what would be sent is recorded;
//! - sent and in doubt: cleared first (its key's 23 hours, then the summaries);
//! - reported: the `set`, under the item's lock, its quantity fixed before the
//!   first call (a resend repeats it: setting it twice subtracts once).

use super::attempt::{CallResult, NextStep, ReversalCall};
use super::reversal_method::Method;
use super::usage_records::{DoubtStep, ITEM_LOCK};
use super::Reporter;
use crate::lifecycle::{OutcomeState, ReversalState};
use crate::settings::MeterAggregation;
use crate::store::{ClaimedReversal, ReversalAttempt, StoreError};
use crate::stripe::client::StripeClient;
use crate::stripe::usage_records::rules::{
    current_period, park_reason, plan_resend, plan_reversal, reversal_key, RecordState, Resend,
    Reversal, ReversalInput, KEY_SAFE_AGE,
};
use crate::stripe::usage_records::UsageRecord;
use crate::time::Millis;
use std::time::Duration;

/// How long a reversal waits when its item cannot be worked on now.
const LATER: Duration = Duration::from_secs(60);

impl Reporter {
    pub(super) async fn reverse_usage_record(&self, r: &ClaimedReversal) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let method = self.method_for(r, now, MeterAggregation::Sum);
        let done =
            |result: &'static str, method: Method| self.reversal_done(r, now, method, result);
        match method {
            Method::WaitForLive => {
                tracing::warn!(outcome = %r.outcome_id, mode = %self.mode, "clawback: the usage record was reported in live mode; only a live-mode process reverses it");
                self.store
                    .postpone_reversal(&r.outcome_id, now + 5 * LATER)
                    .await
            }
            Method::Nothing => {
                let a = done("nothing_to_reverse", Method::Nothing);
                self.store.record_reversal_attempt(&a).await
            }
            Method::DryRun => {
                let request = format!(
                    "action=set&timestamp={}&quantity=<usage at that second less {}>",
                    self.record_timestamp(r).await?.unwrap_or_default(),
                    r.value
                );
                let mut a = done("dry_run", Method::DryRun);
                a.dry_run = true;
                a.request = &request;
                self.store.record_reversal_attempt(&a).await
            }
            Method::Void => self.void_usage_record(r, now).await,
            Method::Manual => {
                let mut a = done("not_reversible", Method::Manual);
                a.state = ReversalState::Failed;
                a.error = Some("not reversed in Stripe: parked for a credit by hand");
                self.store.record_reversal_attempt(&a).await
            }
            Method::Cancel | Method::Correction | Method::UsageSet => {
                self.reverse_at_item(r, now).await
            }
        }
    }

    async fn record_timestamp(&self, r: &ClaimedReversal) -> Result<Option<i64>, StoreError> {
        Ok(self
            .store
            .outcome_confirmed_at(&r.outcome_id)
            .await?
            .map(Millis::as_secs))
    }

    /// Not reported: void it, unless a call for it may have been applied (then
    /// clear that first).
    async fn void_usage_record(&self, r: &ClaimedReversal, now: Millis) -> Result<(), StoreError> {
        let doubt = match &r.sink_target {
            Some(item) => self
                .store
                .usage_in_doubt(item, r.stripe_account.as_deref())
                .await?
                .into_iter()
                .find(|d| d.id == r.outcome_id),
            None => None,
        };
        if let (Some(d), Some(item)) = (doubt, &r.sink_target) {
            if d.state == OutcomeState::Pending {
                return self
                    .clear_doubt_before_reversal(r, item, d.since, now)
                    .await;
            }
            // Parked while in doubt: Stripe may hold it; an operator decides.
            let why = "not reversed: a call for this usage record got no definite answer and it was parked; \
                       check the item's usage record summaries, then credit by hand if it was billed";
            let a = ReversalAttempt {
                outcome_id: &r.outcome_id,
                now,
                method: Method::Manual.as_str(),
                dry_run: false,
                mode: self.mode,
                livemode: None,
                idempotency_key: None,
                request: "",
                status_code: None,
                request_id: None,
                result: "not_reversible",
                error: Some(why),
                state: ReversalState::Failed,
                next_attempt_at: now,
                stripe_timestamp: None,
                in_doubt: false,
            };
            return self.store.record_reversal_attempt(&a).await;
        }
        if self.store.void_outcome_if_idle(&r.outcome_id, now).await? {
            tracing::info!(outcome = %r.outcome_id, "clawback: usage record voided before it was sent");
            let a = ReversalAttempt {
                outcome_id: &r.outcome_id,
                now,
                method: Method::Void.as_str(),
                dry_run: false,
                mode: self.mode,
                livemode: None,
                idempotency_key: None,
                request: "",
                status_code: None,
                request_id: None,
                result: "voided_before_sending",
                error: None,
                state: ReversalState::Done,
                next_attempt_at: now,
                stripe_timestamp: None,
                in_doubt: false,
            };
            self.store.record_reversal_attempt(&a).await
        } else {
            let next = r.outcome_lease_until.unwrap_or(now).max(now) + Duration::from_secs(1);
            self.store.postpone_reversal(&r.outcome_id, next).await
        }
    }

    /// A clawed-back outcome whose record is in doubt is never claimed again, so
    /// the reversal clears it: within its key's 23 hours it waits (Stripe may
    /// still replay the call); after, it clears the item from the summaries.
    async fn clear_doubt_before_reversal(
        &self,
        r: &ClaimedReversal,
        item: &str,
        since: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let now_t = self.clock.now();
        if plan_resend(since.to_datetime(), now_t, true) == Resend::SameKey {
            let next = Millis::from_ms(since.as_ms() + KEY_SAFE_AGE.num_milliseconds());
            tracing::info!(outcome = %r.outcome_id, "clawback: the usage record is in doubt; settled once its key's safe age has passed");
            return self.store.postpone_reversal(&r.outcome_id, next).await;
        }
        let Some(client) = self.legacy.clone() else {
            return self
                .store
                .postpone_reversal(&r.outcome_id, now + 5 * LATER)
                .await;
        };
        let account = r.stripe_account.as_deref();
        let Some(lock) = self.store.try_lock_pair(item, ITEM_LOCK).await? else {
            return self
                .store
                .postpone_reversal(&r.outcome_id, now + Duration::from_secs(1))
                .await;
        };
        let step = match self.read_summaries(&client, account, item).await {
            Ok(summaries) => self.clear_item_doubt(account, item, &summaries).await,
            Err(e) => {
                tracing::warn!(outcome = %r.outcome_id, error = %e, "clawback: cannot read the usage record summaries; later");
                Ok(DoubtStep::Wait(now + 5 * LATER))
            }
        };
        lock.release().await;
        let next = match step? {
            DoubtStep::Wait(until) => until,
            DoubtStep::Nothing | DoubtStep::Changed => now,
        };
        self.store.postpone_reversal(&r.outcome_id, next).await
    }

    /// Reported in this mode: plan the `set` (or park) under the item's lock.
    async fn reverse_at_item(&self, r: &ClaimedReversal, now: Millis) -> Result<(), StoreError> {
        let (Some(item), Some(client)) = (r.sink_target.clone(), self.legacy.clone()) else {
            if r.sink_target.is_none() {
                return self
                    .park_reversal(
                        r,
                        now,
                        "not reversed: the outcome names no subscription item",
                    )
                    .await;
            }
            return self
                .store
                .postpone_reversal(&r.outcome_id, now + 5 * LATER)
                .await;
        };
        let Some(timestamp) = self.record_timestamp(r).await? else {
            return self
                .park_reversal(r, now, "not reversed: the outcome is missing")
                .await;
        };
        let Some(lock) = self.store.try_lock_pair(&item, ITEM_LOCK).await? else {
            return self
                .store
                .postpone_reversal(&r.outcome_id, now + Duration::from_secs(1))
                .await;
        };
        let result = self.plan_and_set(r, &client, &item, timestamp, now).await;
        lock.release().await;
        result
    }

    async fn plan_and_set(
        &self,
        r: &ClaimedReversal,
        client: &StripeClient,
        item: &str,
        timestamp: i64,
        now: Millis,
    ) -> Result<(), StoreError> {
        let account = r.stripe_account.as_deref();
        // A `set` already fixed: repeat it as it was, whatever changed since.
        if let Some(quantity) = self.store.usage_set_quantity(&r.outcome_id).await? {
            return match UsageRecord::set(quantity, timestamp) {
                Ok(record) => self.send_set(r, client, item, &record, now).await,
                Err(e) => {
                    self.park_reversal(r, now, &format!("not reversed: {e}"))
                        .await
                }
            };
        }
        let summaries = match self.read_summaries(client, account, item).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(outcome = %r.outcome_id, error = %e, "clawback: cannot read the usage record summaries; later");
                return self
                    .store
                    .postpone_reversal(&r.outcome_id, now + 5 * LATER)
                    .await;
            }
        };
        let Some(current) = current_period(&summaries) else {
            return self
                .store
                .postpone_reversal(&r.outcome_id, now + 5 * LATER)
                .await;
        };
        let invoice = summaries
            .iter()
            .find(|s| s.billing_period().is_some_and(|p| p.contains(timestamp)))
            .and_then(|s| s.invoice.as_deref());
        let input = ReversalInput {
            timestamp,
            quantity: r.value,
            state: RecordState::Landed,
            at_timestamp: self
                .store
                .usage_at_second(item, account, self.mode, timestamp)
                .await?,
            others_in_doubt: self
                .store
                .usage_others_in_doubt(item, account, timestamp, &r.outcome_id)
                .await?,
            current_period: current,
            invoice,
        };
        match plan_reversal(&input) {
            Reversal::Set(record) => {
                let quantity = i64::try_from(record.quantity).unwrap_or(i64::MAX);
                let Some((method, stored)) = self
                    .store
                    .start_usage_set(&r.outcome_id, quantity, timestamp)
                    .await?
                else {
                    return Ok(()); // no longer pending
                };
                match (
                    Method::parse(&method),
                    stored.map(|q| UsageRecord::set(q, timestamp)),
                ) {
                    (Ok(Method::UsageSet), Some(Ok(record))) => {
                        self.send_set(r, client, item, &record, now).await
                    }
                    _ => self.store.postpone_reversal(&r.outcome_id, now).await,
                }
            }
            Reversal::ClearDoubtFirst => {
                tracing::info!(outcome = %r.outcome_id, "clawback: another usage record at that second is unsettled; later");
                self.store
                    .postpone_reversal(&r.outcome_id, now + LATER)
                    .await
            }
            Reversal::NothingToReverse => {
                let a = self.reversal_done(r, now, Method::Nothing, "nothing_to_reverse");
                self.store.record_reversal_attempt(&a).await
            }
            Reversal::Manual(why) => self.park_reversal(r, now, &why).await,
        }
    }
    /// Send the reversal's `set`, with a new key per call (resending the same
    /// value is safe at any age).
    async fn send_set(
        &self,
        r: &ClaimedReversal,
        client: &StripeClient,
        item: &str,
        record: &UsageRecord,
        now: Millis,
    ) -> Result<(), StoreError> {
        let key = reversal_key(&r.outcome_id, r.attempts);
        let request = record.encoded();
        self.limiter.acquire().await;
        let result = self
            .timed(
                "usage_set",
                client.create_usage_record(item, record, &key, r.stripe_account.as_deref()),
            )
            .await;
        let answer = result.answer();
        let call = ReversalCall {
            outcome_id: &r.outcome_id,
            now: now.max(self.clock.now_ms()),
            method: Method::UsageSet.as_str(),
            idempotency_key: Some(&key),
            request: &request,
            stripe_timestamp: Some(record.timestamp),
        };
        let mut attempt = answer.reversal_attempt(&call, self.mode);
        let step = self.next_step(answer.disposition, r.attempts, call.now);
        step.end_reversal(&mut attempt);
        let parked;
        if let (NextStep::Park { .. }, Err(e)) = (step, &result) {
            parked = format!(
                "not reversed in Stripe ({}); credit the customer by hand",
                park_reason(e, attempt.in_doubt)
            );
            attempt.error = Some(&parked);
        }
        tracing::info!(outcome = %r.outcome_id, state = attempt.state.as_str(), quantity = record.quantity, "clawback: usage record set");
        self.store.record_reversal_attempt(&attempt).await
    }
}
