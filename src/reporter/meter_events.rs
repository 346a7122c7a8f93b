//! The `stripe_meters` sink: one Billing Meter event per outcome
//! (`POST /v1/billing/meter_events`), deduplicated by Stripe on its `identifier`
//! (the outcome id) for at least 24 hours, sent one at a time per (account,
//! customer, meter) and only as the Stripe preflight admits.

use super::attempt::{CallResult, NextStep, OutcomeCall};
use super::marks::{Outstanding, PendingMark};
use super::{Reporter, Tasks};
use crate::metrics::ReportResult;
use crate::outcome::idempotency_key;
use crate::store::{ClaimedOutcome, SetAside, StoreError};
use crate::stripe::client::{Ack, MeterEvent, StripeError};
use crate::stripe::gate::{Hold, PreflightGates};
use crate::stripe::limits::{
    ahead_reason, check_timestamp, in_doubt_reason, resend_is_deduplicated, too_old_reason,
    TimestampCheck,
};
use crate::stripe::preflight::MeterInfo;
use crate::time::Millis;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

impl Reporter {
    /// Send meter events: by (account, customer, meter), one at a time per
    /// pair (Stripe serializes calls per customer and meter, and each Connect
    /// account has its own), different pairs concurrently.
    pub(super) fn spawn_meter_events(
        &self,
        claimed: Vec<ClaimedOutcome>,
        permits: &Arc<Semaphore>,
        tasks: &mut Tasks,
    ) {
        type Pair = (Option<String>, String, String);
        let mut groups: BTreeMap<Pair, Vec<ClaimedOutcome>> = BTreeMap::new();
        for o in claimed {
            groups
                .entry((
                    o.stripe_account.clone(),
                    o.stripe_customer_id.clone(),
                    o.event_name.clone(),
                ))
                .or_default()
                .push(o);
        }
        for ((account, customer, meter), group) in groups {
            let me = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let info = match me.admit(account.as_deref(), &customer, &meter) {
                    Ok(info) => info,
                    Err(hold) => return me.hold_outcomes(&customer, &meter, &group, &hold).await,
                };
                let permit = permits.acquire_owned().await;
                // One process at a time per pair (other replicas on PostgreSQL).
                let Some(lock) = me.store.try_lock_pair(&customer, &meter).await? else {
                    let claims: Vec<(String, Millis)> = group
                        .iter()
                        .map(|o| (o.id.clone(), o.lease_until))
                        .collect();
                    return me.store.release_outcomes(&claims).await;
                };
                // Each call's mark is committed in a group with other pairs' while
                // this pair makes its next call; all are committed before the pair
                // is given up. A failed commit stops the pair (storage is failing):
                // its outcomes stay claimed, resent after the lease with the same keys.
                let mut marks = Outstanding::default();
                let mut result = Ok(());
                for o in &group {
                    result = marks.check();
                    if result.is_err() {
                        break;
                    }
                    match me.report_one(o, &info).await {
                        Ok(Some(mark)) => marks.push(mark),
                        Ok(None) => {}
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                // The calls are over: another pair may call while these commit.
                drop(permit);
                let committed = marks.all_committed().await;
                lock.release().await;
                result.and(committed)
            });
        }
    }

    /// Send one outcome's meter event, or set it aside with the reason. Returns
    /// the call's mark (its attempt) handed to the group commit, not yet awaited;
    /// `None` when nothing is left to await.
    async fn report_one(
        &self,
        o: &ClaimedOutcome,
        meter: &MeterInfo,
    ) -> Result<Option<PendingMark>, StoreError> {
        let ev = meter_event(o, meter);
        let request = ev.encoded();
        let Some(client) = &self.client else {
            if !self.dry_run() {
                self.hold_without_stripe(std::slice::from_ref(o)).await?;
                return Ok(None);
            }
            return Ok(Some(self.hand_dry_run(o, &request).await));
        };
        if self.set_aside_unsendable(o, ev.timestamp).await? {
            return Ok(None);
        }
        self.limiter.acquire().await;
        if !self.still_claimed(o).await? {
            return Ok(None);
        }
        let key = idempotency_key(&ev.identifier, "meter_event", o.calls);
        let result = self
            .timed(
                "meter_event",
                client.create_meter_event(&ev, &key, o.stripe_account.as_deref()),
            )
            .await;
        let call = OutcomeCall {
            outcome_id: &o.id,
            now: self.clock.now_ms(),
            request: &request,
            idempotency_key: Some(&key),
        };
        Ok(Some(self.record_meter_event(o, &call, &result).await))
    }

    /// Set `o` aside instead of sending its event (dated `timestamp`, Unix seconds)
    /// when Stripe would refuse it now or a resend could count twice: ahead of
    /// Stripe's clock (held, unspent, until it is not), older than Stripe accepts,
    /// or in doubt past Stripe's dedupe window (parked as failed). Returns whether
    /// it did.
    pub(super) async fn set_aside_unsendable(
        &self,
        o: &ClaimedOutcome,
        timestamp: i64,
    ) -> Result<bool, StoreError> {
        let world_now = self.clock.world_now();
        let (reason, how) = match check_timestamp(timestamp, world_now) {
            TimestampCheck::Acceptable
                if resend_is_deduplicated(o.doubt_since, self.clock.now_ms()) =>
            {
                return Ok(false);
            }
            TimestampCheck::Acceptable => {
                let since = o.doubt_since.unwrap_or_default();
                let reason = in_doubt_reason(&o.id, since);
                tracing::error!(outcome = %o.id, %reason, "meter event in doubt past Stripe's dedupe window; parked as failed");
                self.metrics.count_report(ReportResult::Failed);
                (reason, SetAside::Park)
            }
            TimestampCheck::Ahead { ready_at } => {
                // Stripe would refuse it with a 400: hold it, unspent, until it is not.
                // Check again within 5 minutes: if the clock is set right (the
                // offset removed), it goes out then, not a whole offset later.
                let wait = (ready_at - world_now)
                    .clamp(chrono::Duration::zero(), chrono::Duration::minutes(5));
                let next = Millis::from(self.clock.now() + wait);
                let reason = ahead_reason(timestamp, world_now);
                tracing::warn!(outcome = %o.id, %reason, "meter event held");
                (reason, SetAside::RetryAt(next))
            }
            TimestampCheck::TooOld => {
                let reason = too_old_reason(timestamp, &o.id);
                tracing::error!(outcome = %o.id, %reason, "meter event too old for Stripe; parked as failed");
                self.metrics.count_report(ReportResult::Failed);
                (reason, SetAside::Park)
            }
        };
        self.set_aside(&o.id, o.lease_until, &reason, how)
            .await
            .map(|()| true)
    }

    /// Fencing: call only while this claim still holds the outcome. While the
    /// lease outlasts the call, nobody else can have claimed or voided it (both
    /// need an expired lease); when it may not, renew it, only if still ours
    /// (stripe.timeout < worker.lease is enforced, so a renewal always suffices).
    /// Returns whether the claim holds.
    pub(super) async fn still_claimed(&self, o: &ClaimedOutcome) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        if o.lease_until < now + self.call_timeout * 2
            && !self
                .store
                .renew_outcome_lease(&o.id, o.lease_until, now + self.lease)
                .await?
        {
            tracing::warn!(outcome = %o.id, "claim lost before the Stripe call (lease expired or outcome voided); not sent");
            return Ok(false);
        }
        Ok(true)
    }

    /// Record Stripe's answer to `o`'s meter event: reported, retried later, or
    /// parked as failed (refused, or the retry budget spent); the mark is handed
    /// to the group commit, for the caller to await.
    async fn record_meter_event(
        &self,
        o: &ClaimedOutcome,
        call: &OutcomeCall<'_>,
        result: &Result<Ack, StripeError>,
    ) -> PendingMark {
        let answer = result.answer();
        self.warn_other_mode(&o.id, answer.livemode);
        let step = self.next_step(answer.disposition, o.attempts, call.now);
        let how = match result {
            Ok(ack) if ack.replayed => "replayed",
            Ok(_) => "accepted",
            Err(_) => "already_exists",
        };
        let (error, request_id) = (&answer.error, &answer.request_id);
        match step {
            NextStep::Delivered => {
                tracing::info!(outcome = %o.id, how, request_id = ?request_id, "reported to Stripe");
            }
            NextStep::RetryAt { delay, .. } => {
                tracing::warn!(outcome = %o.id, error = ?error, retry_in = ?delay, "Stripe call failed; will retry");
            }
            // Say what happened: a refusal, or a transient failure that outlasted the budget.
            NextStep::Park { refused: true } => {
                tracing::error!(outcome = %o.id, error = ?error, request_id = ?request_id, "Stripe refused the event; parked as failed");
            }
            NextStep::Park { refused: false } => {
                tracing::error!(outcome = %o.id, error = ?error, request_id = ?request_id, attempts = o.attempts + 1, "Stripe kept failing or could not be reached for the whole retry budget (reporter.max_attempts); parked as failed");
            }
        }
        self.hand_outcome_call(call, &answer, step, how, answer.error.as_deref())
            .await
    }
}

/// The meter event of `o`, in the payload keys of its meter.
pub(super) fn meter_event(o: &ClaimedOutcome, meter: &MeterInfo) -> MeterEvent {
    MeterEvent {
        event_name: o.event_name.clone(),
        stripe_customer_id: o.stripe_customer_id.clone(),
        value: o.value,
        // The outcome id; after a rejection and a resend, `<id>_resend<N>` (see
        // `super::rejections`: a rejected identifier is never reused).
        identifier: o.stripe_identifier(),
        timestamp: o.confirmed_at.as_secs(),
        customer_key: meter.customer_key.clone(),
        value_key: meter.value_key.clone(),
    }
}

impl Reporter {
    /// Send only what the Stripe preflight admits (`gate`: `None` in dry-run).
    pub fn with_preflight(mut self, gate: Option<Arc<PreflightGates>>) -> Reporter {
        self.gate = gate;
        self
    }

    /// The meter of `event_name` on `account` as the preflight read it; without a
    /// preflight (dry-run): Stripe's default payload keys and the configured aggregation.
    pub(super) fn meter_info(
        &self,
        account: Option<&str>,
        event_name: &str,
    ) -> Result<MeterInfo, Hold> {
        match &self.gate {
            Some(g) => g.meter(account, event_name),
            None => Ok(MeterInfo::defaults(
                self.aggregations
                    .get(event_name)
                    .copied()
                    .unwrap_or_default(),
            )),
        }
    }

    /// Whether outcomes for (`customer`, `event_name`) on `account` may be sent
    /// now, and how.
    pub(super) fn admit(
        &self,
        account: Option<&str>,
        customer: &str,
        event_name: &str,
    ) -> Result<MeterInfo, Hold> {
        match &self.gate {
            Some(g) => g.admit(account, customer, event_name),
            None => self.meter_info(account, event_name),
        }
    }

    /// Give claimed outcomes back unsent, pending, with the preflight's reason as
    /// their last error, until after the next preflight; no attempt is spent.
    pub(super) async fn hold_outcomes(
        &self,
        customer: &str,
        event_name: &str,
        group: &[ClaimedOutcome],
        hold: &Hold,
    ) -> Result<(), StoreError> {
        tracing::warn!(customer, meter = event_name, outcomes = group.len(), reason = hold.reason, why = %hold.text, "outcomes held by the Stripe preflight, not sent");
        self.metrics.outcomes_held(hold.reason, group.len());
        let claims: Vec<(&str, Millis)> = group
            .iter()
            .map(|o| (o.id.as_str(), o.lease_until))
            .collect();
        self.hold_all(&claims, &hold.text, hold.until).await
    }

    /// Stripe outcomes in a process that sends but has no Stripe key (all its
    /// tenants bill on Metronome now; these were confirmed under a Stripe sink):
    /// held unsent with the reason, never recorded as a dry-run.
    pub(super) async fn hold_without_stripe(
        &self,
        outcomes: &[ClaimedOutcome],
    ) -> Result<(), StoreError> {
        let reason = "held: no Stripe key in this process (no tenant bills through Stripe now); \
                      set stripe.api_key to send outcomes confirmed under a Stripe sink";
        let next = self.clock.now_ms() + Duration::from_secs(300);
        tracing::warn!(outcomes = outcomes.len(), reason, "Stripe outcomes held");
        let claims: Vec<(&str, Millis)> = outcomes
            .iter()
            .map(|o| (o.id.as_str(), o.lease_until))
            .collect();
        self.hold_all(&claims, reason, next).await
    }
}
