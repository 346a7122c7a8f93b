//! The `stripe_usage_records` sink: one legacy usage record per outcome
//! (`POST /v1/subscription_items/{item}/usage_records`, `action=increment`,
//! the outcome's value at its confirmation second), on the pinned
//! `stripe.legacy_api_version`. See `docs/usage-records.md`.
//!
//! A usage record has no identifier Stripe deduplicates on; the
//! `Idempotency-Key` is the only protection, and Stripe keeps keys "at least 24
//! hours" (<https://docs.stripe.com/api/idempotent_requests>). So:
//! - before each call the call is marked as possibly applied (migration 0009),
//!   and only an answer clears it ([`super::usage_doubt::doubt_after`]);
//! - a record in doubt is resent under the same key within 23 hours, and after
//!   that only once Stripe's usage record summaries say it did not land
//!   ([`rules::judge_doubt`]), never blindly;
//! - calls on one subscription item are serialized across tasks and replicas
//!   (the item lock), as judging doubts, reversals and reconcile compare Stripe's totals
//!   with outcome-meter's and need it to be the only writer.

use super::attempt::{CallResult, NextStep, OutcomeCall};
use super::usage_doubt::{
    blocked_by_sets, doubt_after, in_period, is_saved_failure, next_call, periods_to_judge,
    DoubtAfter, DoubtBudget,
};
use super::{Reporter, Tasks};
use crate::lifecycle::OutcomeState;
use crate::metrics::ReportResult;
use crate::store::{ClaimedOutcome, SetAside, StoreError, UsageDoubt};
use crate::stripe::client::{StripeClient, StripeError};
use crate::stripe::limits::ahead_reason;
use crate::stripe::usage_records::rules::{
    before_period_reason, check_timestamp, current_period, judge_doubt, park_reason, record_key,
    DoubtVerdict, InDoubt, PeriodLedger, Resend, TimestampCheck, MAX_IN_DOUBT,
};
use crate::stripe::usage_records::{Period, Recorded, UsageRecord, UsageRecordSummary};
use crate::time::Millis;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The second name of an item's lock (the first is the item id).
pub(super) const ITEM_LOCK: &str = "usage_records";

/// How long a record waits when the sink cannot go on with its item now.
const LATER: Duration = Duration::from_secs(60);

/// What judging an item's records in doubt came to.
pub(super) enum DoubtStep {
    /// No doubt to judge now.
    Nothing,
    /// Records changed state: plan again from the store.
    Changed,
    /// A call on the item is too recent for its summary: hold every call on the
    /// item until then.
    Wait(Millis),
}

/// A subscription item the sink calls, under the item's lock.
struct ItemAt<'a> {
    client: &'a StripeClient,
    account: Option<&'a str>,
    item: &'a str,
}

/// The records in doubt of an item being judged from Stripe's summaries.
struct Judging<'a> {
    account: Option<&'a str>,
    item: &'a str,
    summaries: &'a [UsageRecordSummary],
    now: DateTime<Utc>,
}

impl Reporter {
    /// Send usage records: by (account, subscription item), one item at a time
    /// across tasks and replicas, different items concurrently.
    pub(super) fn spawn_usage_records(
        &self,
        claimed: Vec<ClaimedOutcome>,
        permits: &Arc<Semaphore>,
        tasks: &mut Tasks,
    ) {
        type Item = (Option<String>, Option<String>);
        let mut groups: BTreeMap<Item, Vec<ClaimedOutcome>> = BTreeMap::new();
        for o in claimed {
            groups
                .entry((o.stripe_account.clone(), o.sink_target.clone()))
                .or_default()
                .push(o);
        }
        for ((account, item), group) in groups {
            let me = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let Some(item) = item else {
                    let reason = "not sent: the outcome names no subscription item (tenants[].stripe_subscription_item was unset when it was confirmed)";
                    return me.put_aside(&group, reason, SetAside::Park).await;
                };
                if me.dry_run() {
                    for o in &group {
                        me.record_usage_dry_run(o).await?;
                    }
                    return Ok(());
                }
                if me.client.is_none() {
                    return me.hold_without_stripe(&group).await;
                }
                let Some(client) = me.legacy.clone() else {
                    let reason = "held: no Stripe client for stripe.legacy_api_version";
                    let next = me.clock.now_ms() + 5 * LATER;
                    return me.put_aside(&group, reason, SetAside::RetryAt(next)).await;
                };
                let _permit = permits.acquire_owned().await;
                let Some(lock) = me.store.try_lock_pair(&item, ITEM_LOCK).await? else {
                    let claims: Vec<(String, Millis)> = group
                        .iter()
                        .map(|o| (o.id.clone(), o.lease_until))
                        .collect();
                    return me.store.release_outcomes(&claims).await;
                };
                let at = ItemAt {
                    client: &client,
                    account: account.as_deref(),
                    item: &item,
                };
                let result = me.report_item(&at, &group).await;
                lock.release().await;
                result
            });
        }
    }

    /// Set claimed outcomes aside without a call, with `reason`.
    async fn put_aside(
        &self,
        group: &[ClaimedOutcome],
        reason: &str,
        how: SetAside,
    ) -> Result<(), StoreError> {
        if how == SetAside::Park {
            tracing::error!(
                outcomes = group.len(),
                reason,
                "usage records parked as failed"
            );
        } else {
            tracing::warn!(outcomes = group.len(), reason, "usage records held");
        }
        for o in group {
            if how == SetAside::Park {
                self.metrics.count_report(ReportResult::Failed);
            }
            self.set_aside(&o.id, o.lease_until, reason, how).await?;
        }
        Ok(())
    }

    async fn record_usage_dry_run(&self, o: &ClaimedOutcome) -> Result<(), StoreError> {
        let request = UsageRecord::increment(o.value, o.confirmed_at.as_secs())
            .map(|r| r.encoded())
            .unwrap_or_else(|e| e.to_string());
        self.record_dry_run(o, &request).await
    }

    /// Under the item's lock: read the summaries, judge old records in doubt,
    /// then send the group's records one after another.
    async fn report_item(
        &self,
        at: &ItemAt<'_>,
        group: &[ClaimedOutcome],
    ) -> Result<(), StoreError> {
        let item = at.item;
        let summaries = match self.read_summaries(at.client, at.account, item).await {
            Ok(s) => s,
            Err(e) => {
                let reason = format!(
                    "held: cannot read the usage record summaries of {item}, needed before any usage record is sent: {e}"
                );
                let next = self.clock.now_ms() + 5 * LATER;
                return self
                    .put_aside(group, &reason, SetAside::RetryAt(next))
                    .await;
            }
        };
        let Some(current) = current_period(&summaries) else {
            let reason = format!(
                "held: Stripe lists no usage record summary for {item}, so its current billing period is unknown"
            );
            let next = self.clock.now_ms() + 5 * LATER;
            return self
                .put_aside(group, &reason, SetAside::RetryAt(next))
                .await;
        };
        match self.clear_item_doubt(at.account, item, &summaries).await? {
            DoubtStep::Nothing => {}
            DoubtStep::Changed => {
                // Claimed again at once, as the store now says.
                let claims: Vec<(String, Millis)> = group
                    .iter()
                    .map(|o| (o.id.clone(), o.lease_until))
                    .collect();
                return self.store.release_outcomes(&claims).await;
            }
            DoubtStep::Wait(until) => {
                let reason = format!(
                    "held: a record of {item} in doubt is being settled from Stripe's usage record summaries, which \
                     may lag the latest call; no call on the item until then"
                );
                return self
                    .put_aside(group, &reason, SetAside::RetryAt(until))
                    .await;
            }
        }
        let in_doubt = self.store.usage_in_doubt(item, at.account).await?;
        let mut budget = DoubtBudget::of_period(&in_doubt, current);
        let doubts: BTreeMap<String, UsageDoubt> =
            in_doubt.into_iter().map(|d| (d.id.clone(), d)).collect();
        for o in group {
            let doubt = doubts.get(&o.id);
            if doubt.is_none()
                && current.contains(o.confirmed_at.as_secs())
                && !budget.may_send_fresh()
            {
                let reason = format!(
                    "held: {MAX_IN_DOUBT} records of {item}'s billing period are in doubt, as many as Stripe's total \
                     can tell apart; this record waits until the usage record summaries settle them"
                );
                let next = self.clock.now_ms() + LATER;
                self.put_aside(std::slice::from_ref(o), &reason, SetAside::RetryAt(next))
                    .await?;
                continue;
            }
            let left_in_doubt = self.send_record(at, o, doubt, current).await?;
            if left_in_doubt && doubt.is_none() {
                budget.one_more();
            }
        }
        Ok(())
    }

    pub(super) async fn read_summaries(
        &self,
        client: &StripeClient,
        account: Option<&str>,
        item: &str,
    ) -> Result<Vec<UsageRecordSummary>, StripeError> {
        self.limiter.acquire().await;
        self.timed(
            "usage_record_summaries",
            client.usage_record_summaries(item, account),
        )
        .await
    }

    /// Clear, from Stripe's summaries, the periods holding a pending record in
    /// doubt whose key may be forgotten (23 hours or older): the records that
    /// landed are reported, the others are no longer in doubt (and sent again
    /// with a new key), and a total no combination explains parks them.
    pub(super) async fn clear_item_doubt(
        &self,
        account: Option<&str>,
        item: &str,
        summaries: &[UsageRecordSummary],
    ) -> Result<DoubtStep, StoreError> {
        let doubts = self.store.usage_in_doubt(item, account).await?;
        let s = Judging {
            account,
            item,
            summaries,
            now: self.clock.now(),
        };
        let (periods, unplaced) = periods_to_judge(&doubts, summaries, s.now);
        let mut changed = false;
        if !unplaced.is_empty() {
            let reason = format!(
                "not billed, in doubt: an earlier call may have recorded it, its idempotency key may be forgotten, and \
                 its timestamp is in no billing period Stripe lists for {item}; check the item's usage by hand"
            );
            tracing::error!(item, outcomes = ?unplaced, "usage records in doubt outside every listed period; parked");
            self.store.park_usage(&unplaced, &reason).await?;
            changed = true;
        }
        for period in periods {
            let of_period = in_period(&doubts, period);
            let verdict = self.verdict(&s, period, &of_period).await?;
            if let DoubtStep::Wait(until) = self.apply_verdict(&s, &of_period, verdict).await? {
                return Ok(DoubtStep::Wait(until));
            }
            changed = true;
        }
        Ok(if changed {
            DoubtStep::Changed
        } else {
            DoubtStep::Nothing
        })
    }

    /// What Stripe's summary of `period` says of its records in doubt
    /// (`of_period`), against the totals outcome-meter knows cleared.
    async fn verdict(
        &self,
        s: &Judging<'_>,
        period: Period,
        of_period: &[&UsageDoubt],
    ) -> Result<DoubtVerdict, StoreError> {
        let (account, item) = (s.account, s.item);
        let in_doubt: Vec<InDoubt> = of_period
            .iter()
            .map(|d| InDoubt {
                id: d.id.clone(),
                quantity: d.value,
            })
            .collect();
        let known_total = self
            .store
            .usage_known_total(item, account, self.mode, period.start + 1, period.end)
            .await?;
        let last_call_at = self
            .store
            .usage_last_call(item, account)
            .await?
            .map(Millis::to_datetime);
        let ledger = PeriodLedger {
            period,
            known_total,
            in_doubt: &in_doubt,
            last_call_at,
        };
        // A clawback `set` in the period with no definite answer may have moved
        // Stripe's total: wait for it while it is retried; parked, the total
        // cannot judge any doubt (a landed record could pass for one that did not).
        let (sets_pending, sets_parked) = self
            .store
            .usage_sets_in_doubt(item, account, period.start + 1, period.end)
            .await?;
        Ok(blocked_by_sets(sets_pending, sets_parked, s.now)
            .unwrap_or_else(|| judge_doubt(&ledger, s.summaries, s.now)))
    }

    /// Carry out a period's verdict: wait (`Wait`), or mark its records in
    /// doubt landed, not landed or parked (`Changed`).
    async fn apply_verdict(
        &self,
        s: &Judging<'_>,
        of_period: &[&UsageDoubt],
        verdict: DoubtVerdict,
    ) -> Result<DoubtStep, StoreError> {
        let item = s.item;
        let now_ms = Millis::from(s.now);
        match verdict {
            DoubtVerdict::Wait { until } => {
                tracing::info!(item, until = %until, "usage records in doubt: waiting for the summary to include the latest call");
                return Ok(DoubtStep::Wait(Millis::from(until)));
            }
            DoubtVerdict::Decided { landed, not_landed } => {
                tracing::info!(
                    item,
                    ?landed,
                    ?not_landed,
                    "usage records in doubt settled from Stripe's summary"
                );
                let note =
                    "settled from Stripe's usage record summary: the call in doubt was recorded";
                self.store
                    .usage_landed(&landed, self.mode, now_ms, note)
                    .await?;
                for _ in &landed {
                    self.metrics.count_report(ReportResult::Reported);
                }
                let note = "settled from Stripe's usage record summary: the call in doubt was not recorded; sent again with a new key";
                self.store
                    .usage_not_landed(&not_landed, now_ms, note)
                    .await?;
            }
            DoubtVerdict::Undecidable { reason } => {
                let pending: Vec<String> = of_period
                    .iter()
                    .filter(|d| d.state == OutcomeState::Pending)
                    .map(|d| d.id.clone())
                    .collect();
                let reason = format!("not billed, in doubt, parked for an operator: {reason}");
                tracing::error!(item, outcomes = ?pending, %reason, "usage records in doubt cannot be settled");
                for _ in &pending {
                    self.metrics.count_report(ReportResult::Failed);
                }
                self.store.park_usage(&pending, &reason).await?;
            }
        }
        Ok(DoubtStep::Changed)
    }

    /// Send one outcome's usage record, or set it aside with the reason.
    /// Send `o`'s record, or set it aside with the reason. Returns whether the
    /// record is (still) in doubt afterwards.
    async fn send_record(
        &self,
        at: &ItemAt<'_>,
        o: &ClaimedOutcome,
        doubt: Option<&UsageDoubt>,
        current: Period,
    ) -> Result<bool, StoreError> {
        let timestamp = o.confirmed_at.as_secs();
        let record = match UsageRecord::increment(o.value, timestamp) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("not sent: {e}");
                return self
                    .put_aside(std::slice::from_ref(o), &reason, SetAside::Park)
                    .await
                    .map(|()| false);
            }
        };
        if self
            .set_aside_outside_period(o, timestamp, current, doubt.is_some())
            .await?
        {
            return Ok(false);
        }
        let now = self.clock.now();
        let (resend, n) = next_call(doubt, o.calls, now);
        if resend == Resend::CheckSummariesFirst {
            // Cleared before any send (`clear_item_doubt`); never resent blindly.
            let next = Millis::from(now) + LATER;
            let reason = "held: in doubt (past its idempotency key's safe age, or Stripe replayed the saved 5xx of its key); to be settled from the usage record summaries";
            return self
                .put_aside(std::slice::from_ref(o), reason, SetAside::RetryAt(next))
                .await
                .map(|()| true);
        }
        let key = record_key(&o.id, n);
        let request = record.encoded();
        self.limiter.acquire().await;
        if !self.begin_call(o, n).await? {
            return Ok(false);
        }
        let result = self
            .timed(
                "usage_record",
                at.client
                    .create_usage_record(at.item, &record, &key, at.account),
            )
            .await;
        let call = OutcomeCall {
            outcome_id: &o.id,
            now: self.clock.now_ms(),
            request: &request,
            idempotency_key: Some(&key),
        };
        self.record_usage_record(at.item, o, &call, &result, resend)
            .await
    }

    /// Set `o` aside instead of sending its record (dated `timestamp`, Unix
    /// seconds) when the item's current billing period (`current`) does not take
    /// it: ahead of Stripe's clock or after the period (held), or before it
    /// (parked; `was_in_doubt`: an earlier call may have landed in an earlier
    /// period). Returns whether it did.
    async fn set_aside_outside_period(
        &self,
        o: &ClaimedOutcome,
        timestamp: i64,
        current: Period,
        was_in_doubt: bool,
    ) -> Result<bool, StoreError> {
        let world_now = self.clock.world_now();
        let (reason, how) = match check_timestamp(timestamp, current, world_now) {
            TimestampCheck::Acceptable => return Ok(false),
            TimestampCheck::Ahead { ready_at } => {
                let wait = (ready_at - world_now)
                    .clamp(chrono::Duration::zero(), chrono::Duration::minutes(5));
                let next = Millis::from(self.clock.now() + wait);
                (ahead_reason(timestamp, world_now), SetAside::RetryAt(next))
            }
            TimestampCheck::AfterPeriod => {
                let next = self.clock.now_ms() + LATER;
                let reason = "held: the billing period Stripe listed for the item has ended; its summaries are read again";
                (reason.to_string(), SetAside::RetryAt(next))
            }
            TimestampCheck::BeforePeriod => {
                let mut reason = before_period_reason(timestamp, current, &o.id);
                if was_in_doubt {
                    reason.push_str("; an earlier call got no definite answer and may have been recorded in an earlier period: check that period's invoice first");
                }
                (reason, SetAside::Park)
            }
        };
        self.put_aside(std::slice::from_ref(o), &reason, how)
            .await
            .map(|()| true)
    }

    /// Fencing and doubt in one write, right before call `n`: only while this
    /// claim still holds the outcome, with a lease that outlasts the call
    /// (stripe.timeout < worker.lease), marked as possibly applied until an
    /// answer says otherwise (a crash during the call leaves it in doubt).
    /// Returns whether the claim holds.
    async fn begin_call(&self, o: &ClaimedOutcome, n: u32) -> Result<bool, StoreError> {
        let started = self.clock.now_ms();
        if !self
            .store
            .begin_usage_call(&o.id, o.lease_until, started + self.lease, n, started)
            .await?
        {
            tracing::warn!(outcome = %o.id, "claim lost before the Stripe call (lease expired or outcome voided); not sent");
            return Ok(false);
        }
        Ok(true)
    }

    /// Record Stripe's answer to `o`'s usage record on `item` (the call made as
    /// `resend` says), then what the answer says of the record's doubt. Returns
    /// whether the record is still in doubt.
    async fn record_usage_record(
        &self,
        item: &str,
        o: &ClaimedOutcome,
        call: &OutcomeCall<'_>,
        result: &Result<Recorded, StripeError>,
        resend: Resend,
    ) -> Result<bool, StoreError> {
        let answer = result.answer();
        self.warn_other_mode(&o.id, answer.livemode);
        let cleared = doubt_after(resend, result) == DoubtAfter::Clear;
        let step = self.next_step(answer.disposition, o.attempts, call.now);
        let how = match result {
            Ok(r) if r.ack.replayed => "replayed",
            _ => "accepted",
        };
        let request_id = &answer.request_id;
        let mut parked = None;
        match step {
            NextStep::Delivered => {
                tracing::info!(outcome = %o.id, how, item, request_id = ?request_id, "usage record reported to Stripe");
            }
            NextStep::RetryAt { delay, .. } => {
                tracing::warn!(outcome = %o.id, error = ?answer.error, retry_in = ?delay, in_doubt = !cleared, "usage record call failed; will retry");
            }
            NextStep::Park { .. } => {
                let why = match result {
                    Err(e) => park_reason(e, !cleared),
                    Ok(_) => "not billed".to_string(),
                };
                tracing::error!(outcome = %o.id, error = %why, request_id = ?request_id, attempts = o.attempts + 1, "usage record parked as failed");
                parked = Some(why);
            }
        }
        self.record_outcome_call(call, &answer, step, how, parked.as_deref())
            .await?;
        // After the attempt is stored: a crash between the two leaves the record
        // in doubt, which only costs a check of the summaries.
        if cleared {
            self.store.clear_usage_doubt(&o.id).await?;
        } else if is_saved_failure(resend, result) {
            tracing::warn!(outcome = %o.id, item, "Stripe replayed the saved 5xx of the call in doubt; the record is settled from the usage record summaries instead");
            self.store.mark_usage_doubt_saved(&o.id).await?;
        }
        Ok(!cleared)
    }
}
