//! What to send as usage records, when a record may be sent again, what a
//! summary says of a record in doubt, how a reversal is made, and how totals are
//! compared. Pure.
//!
//! The sink's one hard problem: a usage record has no identifier Stripe
//! deduplicates on. The `Idempotency-Key` is the only protection, and Stripe
//! keeps keys only "at least 24 hours" (<https://docs.stripe.com/api/idempotent_requests>).
//! So a record whose call may have been applied (no answer, or a 5xx) is resent
//! under the same key while the key is surely kept ([`plan_resend`]); after that
//! Stripe's own total for the period decides whether it landed ([`judge_doubt`]).
//! Both need outcome-meter to be the only writer of the subscription item.

use super::record::{Period, Recorded, SubscriptionItemInfo, UsageRecord, UsageRecordSummary};
use crate::stripe::client::{Ack, ApiError, StripeError};
pub use crate::stripe::retry::Disposition;
use chrono::{DateTime, Duration, Utc};

/// The `Stripe-Version` pinned for usage records: the last before they were
/// removed (the 2025-03-31.basil changelog links the API reference at it).
pub const LEGACY_API_VERSION: &str = "2025-02-24.acacia";

/// The API version that removed usage records and their summaries.
pub const REMOVED_IN: &str = "2025-03-31.basil";

/// Stripe keeps an idempotency key "at least 24 hours"; a resend under the same
/// key is only relied on within this age of its first use (an hour of margin for
/// clocks and for the call itself).
pub const KEY_SAFE_AGE: Duration = Duration::hours(23);

/// Assumed (Stripe documents no delay for usage record summaries; its meter-event
/// summaries are eventually consistent): a summary includes every record created
/// more than this long ago.
pub const SUMMARY_LAG: Duration = Duration::minutes(15);

/// Margin kept from "must not be in the future", for clock skew with Stripe.
pub const AHEAD_MARGIN: Duration = Duration::seconds(30);

/// In-doubt records of one period [`judge_doubt`] can tell apart (every subset is tried).
pub const MAX_IN_DOUBT: usize = 16;

/// Whether an API version still has usage records: a date-named version
/// (`YYYY-MM-DD`, with or without its release name) before 2025-03-31.
pub fn supports_usage_records(version: &str) -> bool {
    let date = version.split('.').next().unwrap_or_default();
    let shaped = date.len() == 10
        && date.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    shaped && date < "2025-03-31"
}

/// `Idempotency-Key` of call `n` of an outcome's usage record.
pub fn record_key(outcome_id: &str, n: u32) -> String {
    format!("{outcome_id}:usage_record:{n}")
}

/// `Idempotency-Key` of call `n` of an outcome's reversal (`action=set`).
pub fn reversal_key(outcome_id: &str, n: u32) -> String {
    format!("{outcome_id}:usage_set:{n}")
}

// ------------------------------------------------------------------ answers

/// Why Stripe refused a usage-record call for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The `Stripe-Version` has no usage records (2025-03-31.basil or later).
    ApiVersion,
    /// The item's price is on a meter: "not on the legacy metered billing system".
    NotLegacyItem,
    /// No such subscription item (on this account, in this mode).
    NoSuchItem,
    /// The timestamp is outside the item's current billing period, or ahead.
    OutsidePeriod,
    /// A negative or non-integer quantity.
    Quantity,
    /// The key was used before with other parameters (a bug: parameters must be fixed).
    IdempotencyMismatch,
    /// Any other 4xx that is not retried.
    Other,
}

fn lower(e: &ApiError) -> String {
    e.message
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// What kind of refusal a failed call is (`None`: no answer, or one to retry).
pub fn refusal(err: &StripeError) -> Option<Refusal> {
    let StripeError::Api { status, error, .. } = err else {
        return None;
    };
    let (status, msg) = (*status, lower(error));
    let param = error.param.as_deref().unwrap_or_default();
    if !(400..500).contains(&status) || matches!(status, 409 | 424 | 429) {
        return None;
    }
    let refusal = if error.kind == "idempotency_error" {
        Refusal::IdempotencyMismatch
    } else if msg.contains("legacy metered billing") || msg.contains("meter_events instead") {
        Refusal::NotLegacyItem
    } else if (status == 404 && msg.contains("unrecognized request url"))
        || msg.contains("api version")
        || msg.contains("stripe-version")
    {
        Refusal::ApiVersion
    } else if status == 404 {
        Refusal::NoSuchItem
    } else if param == "timestamp" {
        Refusal::OutsidePeriod
    } else if param == "quantity" {
        Refusal::Quantity
    } else {
        Refusal::Other
    };
    Some(refusal)
}

fn same(err: &StripeError) -> StripeError {
    match err {
        StripeError::Network(m) => StripeError::Network(m.clone()),
        StripeError::Api {
            status,
            error,
            request_id,
            should_retry,
            retry_after,
            replayed,
        } => StripeError::Api {
            status: *status,
            error: error.clone(),
            request_id: request_id.clone(),
            should_retry: *should_retry,
            retry_after: *retry_after,
            replayed: *replayed,
        },
    }
}

/// What to do with the answer to a usage-record call: Stripe's rules as for any
/// call ([`crate::stripe::retry::classify`]: `Stripe-Should-Retry` first, then
/// network errors, 409, 424, 429 and 5xx are retried), except that an error never
/// counts as delivered (there is no duplicate-identifier answer here) and the
/// refusals of [`refusal`] are permanent whatever the header says.
pub fn classify(result: &Result<Recorded, StripeError>) -> Disposition {
    let err = match result {
        Ok(_) => return Disposition::Delivered,
        Err(e) => e,
    };
    if matches!(refusal(err), Some(r) if r != Refusal::Other) {
        return Disposition::Permanent;
    }
    match crate::stripe::retry::classify(&Err::<Ack, _>(same(err))) {
        Disposition::Delivered => Disposition::Permanent,
        d => d,
    }
}

/// Whether a failed call may have recorded the usage anyway: no answer, or a 5xx
/// (Stripe saves a 5xx under the key once execution began, and replays it).
pub fn maybe_applied(result: &Result<Recorded, StripeError>) -> bool {
    match result {
        Ok(_) => false,
        Err(StripeError::Network(_)) => true,
        Err(StripeError::Api { status, .. }) => *status >= 500,
    }
}

/// What a resend under the same key says of the earlier call that was in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameKeyAnswer {
    /// A 2xx: Stripe replayed the earlier call's result, or executed this one. Counted once.
    Recorded,
    /// A validation refusal (400 `invalid_request_error`): Stripe saves the result of a call
    /// once it began executing and replays it to the same key, so the earlier call never
    /// executed and nothing was recorded. Assumed: a request that began executing is never
    /// validated again under its key.
    NotRecorded,
    /// No answer, a 5xx (perhaps the earlier one replayed), 409 (the same key in flight),
    /// 429, or any other refusal: still in doubt.
    StillInDoubt,
}

pub fn after_same_key(result: &Result<Recorded, StripeError>) -> SameKeyAnswer {
    match result {
        Ok(_) => SameKeyAnswer::Recorded,
        Err(StripeError::Api {
            status: 400, error, ..
        }) if error.kind == "invalid_request_error" => SameKeyAnswer::NotRecorded,
        Err(_) => SameKeyAnswer::StillInDoubt,
    }
}

/// The reason recorded on a record parked after a permanent refusal.
pub fn park_reason(err: &StripeError, in_doubt: bool) -> String {
    let what = match refusal(err) {
        Some(Refusal::ApiVersion) => format!(
            "Stripe refused usage records on this Stripe-Version: they exist only before {REMOVED_IN} \
             (set stripe.legacy_api_version, default {LEGACY_API_VERSION})"
        ),
        Some(Refusal::NotLegacyItem) => "the subscription item's price is on a Billing Meter, not a legacy \
             metered price: bill this tenant with meter events (the default sink)"
            .into(),
        Some(Refusal::NoSuchItem) => "Stripe has no such subscription item on this account and mode \
             (check tenants[].stripe_subscription_item and stripe_account)"
            .into(),
        Some(Refusal::OutsidePeriod) => "the timestamp is outside the subscription item's current billing \
             period, where Stripe takes usage records"
            .into(),
        Some(Refusal::Quantity) => "Stripe refused the quantity".into(),
        Some(Refusal::IdempotencyMismatch) => "the idempotency key was used before with other parameters \
             (a resend must repeat the first call exactly)"
            .into(),
        Some(Refusal::Other) | None => "Stripe refused it".into(),
    };
    let detail = match err {
        StripeError::Api {
            status,
            error,
            request_id,
            ..
        } => format!(
            " ({status}: {}; request {})",
            error.message.as_deref().unwrap_or("no message"),
            request_id.as_deref().unwrap_or("unknown")
        ),
        StripeError::Network(m) => format!(" ({m})"),
    };
    let doubt = if in_doubt {
        "; an earlier call got no definite answer and may have been recorded: settle it with the usage \
         record summaries before billing it again"
    } else {
        ""
    };
    format!("not billed: {what}{detail}{doubt}")
}

// ------------------------------------------------------------------ resends

/// How to send a usage record again after a call that ended without a 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Send it again under the key of the call in doubt, with the same parameters:
    /// Stripe replays that call's saved result, or (if it never began executing)
    /// executes this one. Either way the usage is counted at most once.
    SameKey,
    /// The key may be forgotten: a resend could count the usage twice. Read the
    /// usage record summaries and [`judge_doubt`] first; send (with a new key) only
    /// what Stripe's total shows did not land.
    CheckSummariesFirst,
    /// No call so far can have been applied: send with a new key.
    Fresh,
}

/// When a usage record may be sent again.
///
/// - `in_doubt`: some earlier call for this record (under any key) got no answer
///   or a 5xx, and no later answer cleared it (a 2xx, or a validation refusal
///   under the same key: [`after_same_key`]). A 429, a 409 or a refusal of a call
///   is not doubt: Stripe did not execute it.
/// - `first_call_at`: when the key of the call in doubt was first used (world time).
///
/// Not in doubt: [`Resend::Fresh`]. In doubt and the key younger than
/// [`KEY_SAFE_AGE`] (23 hours): [`Resend::SameKey`]. Older:
/// [`Resend::CheckSummariesFirst`], never a blind resend.
pub fn plan_resend(first_call_at: DateTime<Utc>, now: DateTime<Utc>, in_doubt: bool) -> Resend {
    if !in_doubt {
        Resend::Fresh
    } else if now < first_call_at + KEY_SAFE_AGE {
        Resend::SameKey
    } else {
        Resend::CheckSummariesFirst
    }
}

// ------------------------------------------------------------------ timestamps

/// The item's current billing period: the newest summary's (Stripe lists "the most
/// current usage period that hasn't ended yet" first; the latest start is taken
/// whatever the order).
pub fn current_period(summaries: &[UsageRecordSummary]) -> Option<Period> {
    summaries
        .iter()
        .filter_map(UsageRecordSummary::billing_period)
        .max_by_key(|p| p.start)
}

/// What Stripe would say of a record's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampCheck {
    Acceptable,
    /// In the future ("must not be in the future"): acceptable from `ready_at`.
    Ahead {
        ready_at: DateTime<Utc>,
    },
    /// In an earlier billing period: Stripe refuses it ("timestamps must be after the
    /// subscription's last invoice period"), with no grace while the invoice is a draft.
    BeforePeriod,
    /// After the end of the period known here: that period is over; read the
    /// summaries again for the current one.
    AfterPeriod,
}

/// Check a record's timestamp (Unix seconds) against the item's current period
/// and the world's clock, before each send, resends included.
pub fn check_timestamp(
    timestamp: i64,
    current: Period,
    world_now: DateTime<Utc>,
) -> TimestampCheck {
    if timestamp <= current.start {
        return TimestampCheck::BeforePeriod;
    }
    let latest = world_now - AHEAD_MARGIN;
    if timestamp > latest.timestamp() {
        let ready_at =
            DateTime::from_timestamp(timestamp, 0).map_or(world_now, |t| t + AHEAD_MARGIN);
        return TimestampCheck::Ahead { ready_at };
    }
    if timestamp > current.end {
        return TimestampCheck::AfterPeriod;
    }
    TimestampCheck::Acceptable
}

fn when(timestamp: i64) -> String {
    DateTime::from_timestamp(timestamp, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| timestamp.to_string())
}

/// The reason recorded on an outcome whose timestamp is before the current period.
pub fn before_period_reason(timestamp: i64, current: Period, outcome_id: &str) -> String {
    format!(
        "not sent: its timestamp ({}) is before the subscription item's current billing period (from {}); \
         Stripe takes usage records only within the current period, with no grace while the last invoice \
         is a draft. It is not billed (outcome {outcome_id}): add an invoice item to the customer's next \
         invoice for it",
        when(timestamp),
        when(current.start)
    )
}

// ------------------------------------------------------------------ records in doubt

/// A record whose call may have been applied, and whose key is too old to resend under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubt {
    pub id: String,
    pub quantity: i64,
}

/// What outcome-meter knows of one subscription item's usage in one billing period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodLedger<'a> {
    pub period: Period,
    /// What Stripe's `total_usage` for the period must be if none of `in_doubt`
    /// landed: the quantities of the records Stripe acknowledged (2xx), less what
    /// acknowledged reversals took away.
    pub known_total: i64,
    /// The period's records in doubt (first call first).
    pub in_doubt: &'a [InDoubt],
    /// The latest call of any kind on the item (world time).
    pub last_call_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoubtVerdict {
    /// Stripe's total is the known total plus exactly the `landed` records:
    /// mark them reported; the `not_landed` ones are sent again with a new key
    /// (when [`check_timestamp`] allows). With equal quantities several choices
    /// add up the same; the earliest records are taken as landed (Stripe's records
    /// carry no outcome id, so which one landed is unknowable and the bill is the same).
    Decided {
        landed: Vec<String>,
        not_landed: Vec<String>,
    },
    /// A call on the item is too recent for the summary to be trusted: hold new
    /// calls on the item and judge again from `until`.
    Wait { until: DateTime<Utc> },
    /// Stripe's total cannot be explained by these records (another writer on the
    /// item, a manual change, a lost acknowledgement): park them for an operator.
    Undecidable { reason: String },
}

/// Decide from Stripe's summary of the period which records in doubt landed.
/// Assumes outcome-meter is the only writer of the item and its price sums usage
/// (`aggregate_usage=sum`, checked by [`item_problems`]).
pub fn judge_doubt(
    ledger: &PeriodLedger<'_>,
    summaries: &[UsageRecordSummary],
    now: DateTime<Utc>,
) -> DoubtVerdict {
    if let Some(until) = ledger.last_call_at.map(|t| t + SUMMARY_LAG) {
        if now < until {
            return DoubtVerdict::Wait { until };
        }
    }
    let Some(summary) = summaries
        .iter()
        .find(|s| s.billing_period() == Some(ledger.period))
    else {
        return DoubtVerdict::Undecidable {
            reason: format!(
                "Stripe lists no usage summary for the period {} to {}",
                when(ledger.period.start),
                when(ledger.period.end)
            ),
        };
    };
    let n = ledger.in_doubt.len();
    if n > MAX_IN_DOUBT {
        return DoubtVerdict::Undecidable {
            reason: format!(
                "{n} records of the period are in doubt, more than the {MAX_IN_DOUBT} that can be told apart"
            ),
        };
    }
    let diff = i128::from(summary.total_usage) - i128::from(ledger.known_total);
    // Bit (n - 1 - i) stands for record i, so a larger mask lands earlier records.
    let mut best: Option<u32> = None;
    for mask in 0u32..(1u32 << n) {
        let sum: i128 = (0..n)
            .filter(|i| mask & (1 << (n - 1 - i)) != 0)
            .map(|i| i128::from(ledger.in_doubt[i].quantity))
            .sum();
        if sum == diff {
            best = Some(best.map_or(mask, |b| b.max(mask)));
        }
    }
    let Some(mask) = best else {
        return DoubtVerdict::Undecidable {
            reason: format!(
                "Stripe's total usage for the period is {}, the records Stripe acknowledged make {}, and no \
                 combination of the {n} record(s) in doubt makes up the difference of {diff}: is another system \
                 writing usage records on this subscription item?",
                summary.total_usage, ledger.known_total
            ),
        };
    };
    let (mut landed, mut not_landed) = (Vec::new(), Vec::new());
    for (i, d) in ledger.in_doubt.iter().enumerate() {
        if mask & (1 << (n - 1 - i)) != 0 {
            landed.push(d.id.clone());
        } else {
            not_landed.push(d.id.clone());
        }
    }
    DoubtVerdict::Decided { landed, not_landed }
}

// ------------------------------------------------------------------ clawback

/// Where a reported outcome's usage record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// Stripe acknowledged it (or [`judge_doubt`] found it landed).
    Landed,
    /// Never recorded (refused, or [`judge_doubt`] found it did not land).
    NotLanded,
    /// A call may have been applied and nothing has cleared it yet.
    InDoubt,
}

/// What is needed to reverse one outcome's usage record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalInput<'a> {
    /// The record's timestamp (Unix seconds) and quantity, as sent.
    pub timestamp: i64,
    pub quantity: i64,
    pub state: RecordState,
    /// The usage Stripe holds at exactly `timestamp` from outcome-meter's records
    /// (acknowledged increments, less acknowledged reversals), this one included.
    pub at_timestamp: i64,
    /// Another record of the item at exactly `timestamp` is unsent, in flight or in doubt.
    pub others_in_doubt: bool,
    /// The item's current billing period (from the summaries).
    pub current_period: Period,
    /// The invoice of the period holding `timestamp`, when it has ended (summaries).
    pub invoice: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reversal {
    /// Stripe never counted it: void the outcome, nothing to send.
    NothingToReverse,
    /// Not yet: the record (or another at its timestamp) is in doubt; plan again later.
    ClearDoubtFirst,
    /// Send this `action=set` record: the usage at the timestamp becomes what it
    /// was less the outcome's quantity. Resending it (any key, any time) is safe:
    /// setting the same value twice subtracts once.
    Set(UsageRecord),
    /// Usage records cannot do it: park the reversal with this reason.
    Manual(String),
}

/// Plan the reversal of a reported outcome (clawback).
///
/// An increment cannot be negative, and a usage record cannot be deleted; the
/// documented correction is `action=set` on the record's timestamp with "the
/// current total usage reported for that timestamp" less the quantity to remove.
/// It works only while the timestamp is in the current billing period (Stripe
/// refuses any other), on a subscription without billing thresholds (Stripe then
/// allows only `increment`: its refusal parks the reversal), and it replaces
/// whatever is at that second: a concurrent increment at the same timestamp by
/// anyone else would be lost. Hence: outcome-meter must be the only writer of the
/// item, calls on an item are serialized, and a set is planned only when every
/// record of ours at that second is cleared.
pub fn plan_reversal(input: &ReversalInput<'_>) -> Reversal {
    match input.state {
        RecordState::NotLanded => return Reversal::NothingToReverse,
        RecordState::InDoubt => return Reversal::ClearDoubtFirst,
        RecordState::Landed => {}
    }
    if !input.current_period.contains(input.timestamp) {
        let invoice = input
            .invoice
            .map(|i| format!(" (invoice {i})"))
            .unwrap_or_default();
        return Reversal::Manual(format!(
            "not reversed in Stripe: the usage ({} at {}) is in a billing period that has ended{invoice}; Stripe \
             takes usage records, corrections included, only in the current period. Credit the customer with a \
             credit note on that invoice, or an invoice item on the next",
            input.quantity,
            when(input.timestamp)
        ));
    }
    if input.others_in_doubt {
        return Reversal::ClearDoubtFirst;
    }
    let left = i128::from(input.at_timestamp) - i128::from(input.quantity);
    match i64::try_from(left).ok().map(|q| UsageRecord::set(q, input.timestamp)) {
        Some(Ok(record)) => Reversal::Set(record),
        _ => Reversal::Manual(format!(
            "not reversed in Stripe: outcome-meter's records put {} at {}, less than the {} to take away; \
             run reconcile and correct the usage by hand",
            input.at_timestamp,
            when(input.timestamp),
            input.quantity
        )),
    }
}

// ------------------------------------------------------------------ reconcile

/// One of outcome-meter's records of an item, for reconcile: its timestamp and
/// net effect (a record's quantity; for a reversal, the negative change it made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRecord {
    pub timestamp: i64,
    pub quantity: i64,
    pub in_doubt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStatus {
    Match,
    /// Stripe's total is between the known total and the known total plus the
    /// records in doubt: [`judge_doubt`] them.
    WithinDoubt,
    /// Stripe's total less outcome-meter's (positive: Stripe bills more).
    Differs {
        delta: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileLine {
    pub period: Period,
    pub invoice: Option<String>,
    /// The period has not ended: Stripe's figure is "unstable until the
    /// subscription billing period ends".
    pub open: bool,
    /// outcome-meter's known total and its total in doubt.
    pub local: i64,
    pub in_doubt: i64,
    pub stripe: i64,
    pub status: LineStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    /// One line per summarized period, newest first.
    pub lines: Vec<ReconcileLine>,
    /// Local quantity in no period Stripe lists (before the subscription, or a
    /// period Stripe does not summarize): nothing Stripe can bill.
    pub outside: i64,
}

/// Compare outcome-meter's records of one item with Stripe's summaries, period by period.
pub fn reconcile(
    local: &[LocalRecord],
    summaries: &[UsageRecordSummary],
    world_now: DateTime<Utc>,
) -> Reconciliation {
    let mut placed = vec![false; local.len()];
    let mut periods: Vec<(Period, &UsageRecordSummary)> = summaries
        .iter()
        .filter_map(|s| s.billing_period().map(|p| (p, s)))
        .collect();
    periods.sort_by_key(|(p, _)| std::cmp::Reverse(p.start));
    let lines = periods
        .into_iter()
        .map(|(period, s)| {
            let (mut cleared, mut doubt) = (0i64, 0i64);
            for (i, r) in local.iter().enumerate() {
                if !placed[i] && period.contains(r.timestamp) {
                    placed[i] = true;
                    if r.in_doubt {
                        doubt = doubt.saturating_add(r.quantity);
                    } else {
                        cleared = cleared.saturating_add(r.quantity);
                    }
                }
            }
            let stripe = s.total_usage;
            let status = if stripe == cleared && doubt == 0 {
                LineStatus::Match
            } else if doubt > 0 && cleared <= stripe && stripe <= cleared.saturating_add(doubt) {
                LineStatus::WithinDoubt
            } else {
                LineStatus::Differs {
                    delta: stripe.saturating_sub(cleared),
                }
            };
            ReconcileLine {
                period,
                invoice: s.invoice.clone(),
                open: period.end >= world_now.timestamp(),
                local: cleared,
                in_doubt: doubt,
                stripe,
                status,
            }
        })
        .collect();
    let outside = local
        .iter()
        .zip(&placed)
        .filter(|(_, p)| !**p)
        .map(|(r, _)| r.quantity)
        .fold(0i64, i64::saturating_add);
    Reconciliation { lines, outside }
}

// ------------------------------------------------------------------ preflight

/// What is wrong with a subscription item for this sink (read with the legacy
/// `Stripe-Version`, so that `aggregate_usage` is present).
pub fn item_problems(item: &SubscriptionItemInfo) -> Vec<String> {
    let id = &item.id;
    let Some(recurring) = item.price.as_ref().and_then(|p| p.recurring.as_ref()) else {
        return vec![format!(
            "subscription item {id}: its price is not recurring: usage records need a legacy metered price"
        )];
    };
    let mut problems = Vec::new();
    if recurring.usage_type.as_deref() != Some("metered") {
        problems.push(format!(
            "subscription item {id}: its price is not metered (usage_type {}): Stripe bills it by quantity, not usage",
            recurring.usage_type.as_deref().unwrap_or("unknown")
        ));
    }
    if let Some(meter) = &recurring.meter {
        problems.push(format!(
            "subscription item {id}: its price is on the Billing Meter {meter}, not a legacy metered price: bill \
             this tenant with meter events (the default sink); Stripe refuses usage records for it"
        ));
    }
    match recurring.aggregate_usage.as_deref() {
        Some("sum") => {}
        Some(other) => problems.push(format!(
            "subscription item {id}: its price aggregates usage by `{other}`: in-doubt checks, reversals and \
             reconcile need `sum`"
        )),
        None if recurring.meter.is_none() => problems.push(format!(
            "subscription item {id}: Stripe did not say how its price aggregates usage (read it with a \
             Stripe-Version before {REMOVED_IN}); `sum` is needed"
        )),
        None => {}
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::super::record::{PriceInfo, Recurring, SummaryPeriod};
    use super::*;

    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    fn api(status: u16, kind: &str, param: Option<&str>, message: &str) -> StripeError {
        StripeError::Api {
            status,
            error: Box::new(ApiError {
                kind: kind.into(),
                code: None,
                message: Some(message.into()),
                param: param.map(str::to_string),
            }),
            request_id: Some("req_1".into()),
            should_retry: None,
            retry_after: None,
            replayed: false,
        }
    }

    fn ok() -> Result<Recorded, StripeError> {
        Ok(Recorded {
            ack: Ack {
                status: 200,
                request_id: None,
                replayed: false,
                livemode: Some(false),
            },
            record: None,
        })
    }

    fn summary(start: i64, end: i64, total: i64, invoice: Option<&str>) -> UsageRecordSummary {
        UsageRecordSummary {
            id: format!("sis_{start}"),
            invoice: invoice.map(str::to_string),
            livemode: false,
            period: SummaryPeriod {
                start: Some(start),
                end: Some(end),
            },
            subscription_item: "si_1".into(),
            total_usage: total,
        }
    }

    #[test]
    fn versions_before_basil_have_usage_records() {
        for v in [
            "2025-02-24.acacia",
            "2024-06-20",
            "2020-08-27",
            "2024-12-18.acacia",
        ] {
            assert!(supports_usage_records(v), "{v}");
        }
        for v in [
            "2025-03-31.basil",
            "2025-05-28.basil",
            "2025-09-30.clover",
            "",
            "latest",
            "2025-2-24",
            "20250224",
        ] {
            assert!(!supports_usage_records(v), "{v}");
        }
        assert!(supports_usage_records(LEGACY_API_VERSION));
        assert!(!supports_usage_records(REMOVED_IN));
    }

    #[test]
    fn keys_are_per_outcome_kind_and_call() {
        assert_eq!(record_key("om_1", 0), "om_1:usage_record:0");
        assert_eq!(reversal_key("om_1", 2), "om_1:usage_set:2");
    }

    #[test]
    fn classification_follows_stripe_rules_and_never_counts_an_error_as_delivered() {
        assert_eq!(classify(&ok()), Disposition::Delivered);
        assert_eq!(
            classify(&Err(StripeError::Network("reset".into()))),
            Disposition::Retry { after: None }
        );
        for s in [409, 429, 500, 503] {
            let r = Err(api(s, "api_error", None, "x"));
            assert_eq!(classify(&r), Disposition::Retry { after: None }, "{s}");
        }
        let dup = Err(api(
            400,
            "invalid_request_error",
            None,
            "An event already exists with identifier x.",
        ));
        assert_eq!(classify(&dup), Disposition::Permanent);
        // A known refusal is permanent even if the header says retry.
        let mut refused = api(400, "invalid_request_error", Some("timestamp"), "Cannot create the usage record with this timestamp because timestamps must be after the subscription's last invoice period (or current period start time).");
        if let StripeError::Api { should_retry, .. } = &mut refused {
            *should_retry = Some(true);
        }
        assert_eq!(classify(&Err(refused)), Disposition::Permanent);
    }

    #[test]
    fn refusals_are_recognized() {
        let cases = [
            (api(404, "invalid_request_error", None, "Unrecognized request URL (POST: /v1/subscription_items/si_1/usage_records)."), Refusal::ApiVersion),
            (api(400, "invalid_request_error", None, "Usage records are not available in API version 2025-03-31.basil or later."), Refusal::ApiVersion),
            (api(400, "invalid_request_error", None, "Cannot create a usage record for `si_1` because it is not on the legacy metered billing system. Call /v1/billing/meter_events instead."), Refusal::NotLegacyItem),
            (api(404, "invalid_request_error", Some("id"), "No such subscription item: 'si_1'"), Refusal::NoSuchItem),
            (api(400, "invalid_request_error", Some("timestamp"), "Cannot create the usage record with this timestamp"), Refusal::OutsidePeriod),
            (api(400, "invalid_request_error", Some("quantity"), "Invalid non-negative integer"), Refusal::Quantity),
            (api(400, "idempotency_error", None, "Keys for idempotent requests can only be used with the same parameters"), Refusal::IdempotencyMismatch),
            (api(401, "invalid_request_error", None, "Invalid API Key provided"), Refusal::Other),
        ];
        for (err, want) in cases {
            assert_eq!(refusal(&err), Some(want), "{err}");
            assert!(park_reason(&err, false).starts_with("not billed: "));
        }
        assert_eq!(
            refusal(&api(429, "invalid_request_error", None, "rate")),
            None
        );
        assert_eq!(refusal(&api(500, "api_error", None, "x")), None);
        assert_eq!(refusal(&StripeError::Network("x".into())), None);
        let why = park_reason(
            &api(400, "invalid_request_error", Some("timestamp"), "t"),
            true,
        );
        assert!(
            why.contains("settle it with the usage record summaries"),
            "{why}"
        );
        assert!(why.contains("req_1"), "{why}");
    }

    #[test]
    fn only_no_answer_or_a_5xx_may_have_been_applied() {
        assert!(maybe_applied(&Err(StripeError::Network("timeout".into()))));
        assert!(maybe_applied(&Err(api(500, "api_error", None, "x"))));
        assert!(!maybe_applied(&Err(api(
            429,
            "invalid_request_error",
            None,
            "x"
        ))));
        assert!(!maybe_applied(&Err(api(
            400,
            "invalid_request_error",
            None,
            "x"
        ))));
        assert!(!maybe_applied(&ok()));
    }

    #[test]
    fn a_same_key_answer_settles_the_doubt_or_not() {
        assert_eq!(after_same_key(&ok()), SameKeyAnswer::Recorded);
        let refused = Err(api(400, "invalid_request_error", Some("timestamp"), "x"));
        assert_eq!(after_same_key(&refused), SameKeyAnswer::NotRecorded);
        for r in [
            Err(api(500, "api_error", None, "x")),
            Err(api(409, "idempotency_error", None, "in progress")),
            Err(api(400, "idempotency_error", None, "other params")),
            Err(api(429, "invalid_request_error", None, "rate")),
            Err(StripeError::Network("x".into())),
        ] {
            assert_eq!(after_same_key(&r), SameKeyAnswer::StillInDoubt, "{r:?}");
        }
    }

    #[test]
    fn a_record_in_doubt_is_resent_under_its_key_for_23_hours_then_checked() {
        let first = t(NOW);
        assert_eq!(plan_resend(first, t(NOW), false), Resend::Fresh);
        assert_eq!(plan_resend(first, t(NOW + 30 * 3600), false), Resend::Fresh);
        assert_eq!(plan_resend(first, t(NOW + 60), true), Resend::SameKey);
        assert_eq!(
            plan_resend(first, t(NOW + 23 * 3600 - 1), true),
            Resend::SameKey
        );
        assert_eq!(
            plan_resend(first, t(NOW + 23 * 3600), true),
            Resend::CheckSummariesFirst
        );
        assert_eq!(
            plan_resend(first, t(NOW + 40 * 86_400), true),
            Resend::CheckSummariesFirst
        );
        assert_eq!(
            plan_resend(first, t(NOW - 600), true),
            Resend::SameKey,
            "clock behind"
        );
    }

    #[test]
    fn timestamps_must_be_in_the_current_period_and_not_ahead() {
        let p = Period {
            start: NOW - 10 * 86_400,
            end: NOW + 20 * 86_400,
        };
        assert_eq!(
            check_timestamp(NOW - 3600, p, t(NOW)),
            TimestampCheck::Acceptable
        );
        assert_eq!(
            check_timestamp(p.start + 1, p, t(NOW)),
            TimestampCheck::Acceptable
        );
        assert_eq!(
            check_timestamp(p.start, p, t(NOW)),
            TimestampCheck::BeforePeriod
        );
        assert_eq!(
            check_timestamp(p.start - 86_400, p, t(NOW)),
            TimestampCheck::BeforePeriod
        );
        assert_eq!(
            check_timestamp(NOW - 30, p, t(NOW)),
            TimestampCheck::Acceptable
        );
        assert_eq!(
            check_timestamp(NOW - 29, p, t(NOW)),
            TimestampCheck::Ahead {
                ready_at: t(NOW + 1)
            }
        );
        let ended = Period {
            start: NOW - 40 * 86_400,
            end: NOW - 10 * 86_400,
        };
        assert_eq!(
            check_timestamp(NOW - 86_400, ended, t(NOW)),
            TimestampCheck::AfterPeriod
        );
        let why = before_period_reason(p.start, p, "om_x");
        assert!(
            why.contains("2025-12-22 00:00:00 UTC") && why.contains("om_x"),
            "{why}"
        );
        let sums = [
            summary(p.start - 30 * 86_400, p.start, 7, Some("in_1")),
            summary(p.start, p.end, 2, None),
        ];
        assert_eq!(current_period(&sums), Some(p));
        assert_eq!(current_period(&[]), None);
    }

    fn doubt(ids: &[(&str, i64)]) -> Vec<InDoubt> {
        ids.iter()
            .map(|(id, q)| InDoubt {
                id: (*id).into(),
                quantity: *q,
            })
            .collect()
    }

    #[test]
    fn a_summary_tells_which_records_in_doubt_landed() {
        let p = Period {
            start: NOW - 86_400,
            end: NOW + 29 * 86_400,
        };
        let in_doubt = doubt(&[("a", 1)]);
        let ledger = PeriodLedger {
            period: p,
            known_total: 5,
            in_doubt: &in_doubt,
            last_call_at: Some(t(NOW)),
        };
        let later = t(NOW + 24 * 3600);
        let landed = [summary(p.start, p.end, 6, None)];
        assert_eq!(
            judge_doubt(&ledger, &landed, later),
            DoubtVerdict::Decided {
                landed: vec!["a".into()],
                not_landed: vec![]
            }
        );
        let lost = [summary(p.start, p.end, 5, None)];
        assert_eq!(
            judge_doubt(&ledger, &lost, later),
            DoubtVerdict::Decided {
                landed: vec![],
                not_landed: vec!["a".into()]
            }
        );
        for total in [4, 7] {
            let odd = [summary(p.start, p.end, total, None)];
            let DoubtVerdict::Undecidable { reason } = judge_doubt(&ledger, &odd, later) else {
                panic!("{total} resolved");
            };
            assert!(reason.contains("another system"), "{reason}");
        }
        assert_eq!(
            judge_doubt(&ledger, &landed, t(NOW + 60)),
            DoubtVerdict::Wait {
                until: t(NOW + 15 * 60)
            },
            "a recent call may not be in the summary yet"
        );
        let other_period = [summary(p.start - 86_400, p.start, 6, None)];
        assert!(matches!(
            judge_doubt(&ledger, &other_period, later),
            DoubtVerdict::Undecidable { .. }
        ));
    }

    #[test]
    fn several_in_doubt_resolve_to_the_total_earliest_first() {
        let p = Period {
            start: NOW - 86_400,
            end: NOW + 29 * 86_400,
        };
        let in_doubt = doubt(&[("a", 1), ("b", 1), ("c", 3)]);
        let ledger = PeriodLedger {
            period: p,
            known_total: 10,
            in_doubt: &in_doubt,
            last_call_at: None,
        };
        let total = |n| [summary(p.start, p.end, n, None)];
        let resolved = |landed: &[&str], not: &[&str]| DoubtVerdict::Decided {
            landed: landed.iter().map(|s| s.to_string()).collect(),
            not_landed: not.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            judge_doubt(&ledger, &total(11), t(NOW)),
            resolved(&["a"], &["b", "c"])
        );
        assert_eq!(
            judge_doubt(&ledger, &total(12), t(NOW)),
            resolved(&["a", "b"], &["c"])
        );
        assert_eq!(
            judge_doubt(&ledger, &total(14), t(NOW)),
            resolved(&["a", "c"], &["b"])
        );
        assert_eq!(
            judge_doubt(&ledger, &total(15), t(NOW)),
            resolved(&["a", "b", "c"], &[])
        );
        assert_eq!(
            judge_doubt(&ledger, &total(10), t(NOW)),
            resolved(&[], &["a", "b", "c"])
        );
        assert!(matches!(
            judge_doubt(&ledger, &total(16), t(NOW)),
            DoubtVerdict::Undecidable { .. }
        ));
        let many = doubt(&[("x", 1); MAX_IN_DOUBT + 1]);
        let big = PeriodLedger {
            in_doubt: &many,
            ..ledger
        };
        assert!(matches!(
            judge_doubt(&big, &total(10), t(NOW)),
            DoubtVerdict::Undecidable { .. }
        ));
    }

    fn reversal(state: RecordState) -> ReversalInput<'static> {
        ReversalInput {
            timestamp: NOW - 3600,
            quantity: 2,
            state,
            at_timestamp: 5,
            others_in_doubt: false,
            current_period: Period {
                start: NOW - 86_400,
                end: NOW + 29 * 86_400,
            },
            invoice: None,
        }
    }

    #[test]
    fn a_reversal_sets_the_usage_at_its_timestamp_or_is_parked() {
        assert_eq!(
            plan_reversal(&reversal(RecordState::Landed)),
            Reversal::Set(UsageRecord::set(3, NOW - 3600).expect("set"))
        );
        assert_eq!(
            plan_reversal(&reversal(RecordState::NotLanded)),
            Reversal::NothingToReverse
        );
        assert_eq!(
            plan_reversal(&reversal(RecordState::InDoubt)),
            Reversal::ClearDoubtFirst
        );
        let busy = ReversalInput {
            others_in_doubt: true,
            ..reversal(RecordState::Landed)
        };
        assert_eq!(plan_reversal(&busy), Reversal::ClearDoubtFirst);
        let past = ReversalInput {
            timestamp: NOW - 2 * 86_400,
            invoice: Some("in_123"),
            ..reversal(RecordState::Landed)
        };
        let Reversal::Manual(why) = plan_reversal(&past) else {
            panic!("past period")
        };
        assert!(
            why.contains("in_123") && why.contains("credit note"),
            "{why}"
        );
        let short = ReversalInput {
            at_timestamp: 1,
            ..reversal(RecordState::Landed)
        };
        let Reversal::Manual(why) = plan_reversal(&short) else {
            panic!("inconsistent")
        };
        assert!(why.contains("reconcile"), "{why}");
        let exact = ReversalInput {
            at_timestamp: 2,
            ..reversal(RecordState::Landed)
        };
        assert_eq!(
            plan_reversal(&exact),
            Reversal::Set(UsageRecord::set(0, NOW - 3600).expect("set"))
        );
    }

    #[test]
    fn reconcile_compares_each_period() {
        let current = Period {
            start: NOW - 86_400,
            end: NOW + 29 * 86_400,
        };
        let past = Period {
            start: current.start - 30 * 86_400,
            end: current.start,
        };
        let sums = [
            summary(past.start, past.end, 4, Some("in_past")),
            summary(current.start, current.end, 7, None),
        ];
        let local = [
            LocalRecord {
                timestamp: past.end,
                quantity: 3,
                in_doubt: false,
            },
            LocalRecord {
                timestamp: past.start + 10,
                quantity: 1,
                in_doubt: false,
            },
            LocalRecord {
                timestamp: current.start + 10,
                quantity: 5,
                in_doubt: false,
            },
            LocalRecord {
                timestamp: current.start + 20,
                quantity: 4,
                in_doubt: true,
            },
            LocalRecord {
                timestamp: past.start - 10,
                quantity: 2,
                in_doubt: false,
            },
        ];
        let r = reconcile(&local, &sums, t(NOW));
        assert_eq!(r.outside, 2);
        assert_eq!(r.lines.len(), 2);
        assert_eq!(r.lines[0].period, current, "newest first");
        assert!(r.lines[0].open);
        assert_eq!(
            (r.lines[0].local, r.lines[0].in_doubt, r.lines[0].stripe),
            (5, 4, 7)
        );
        assert_eq!(r.lines[0].status, LineStatus::WithinDoubt);
        assert_eq!(r.lines[1].status, LineStatus::Match);
        assert_eq!(r.lines[1].invoice.as_deref(), Some("in_past"));
        assert!(!r.lines[1].open);
        let over = [summary(past.start, past.end, 6, Some("in_past"))];
        let r = reconcile(&local[..2], &over, t(NOW));
        assert_eq!(r.lines[0].status, LineStatus::Differs { delta: 2 });
    }

    fn item(
        usage_type: &str,
        aggregate: Option<&str>,
        meter: Option<&str>,
    ) -> SubscriptionItemInfo {
        SubscriptionItemInfo {
            id: "si_1".into(),
            subscription: Some("sub_1".into()),
            price: Some(PriceInfo {
                id: "price_1".into(),
                recurring: Some(Recurring {
                    usage_type: Some(usage_type.into()),
                    aggregate_usage: aggregate.map(str::to_string),
                    meter: meter.map(str::to_string),
                }),
            }),
        }
    }

    #[test]
    fn the_item_must_be_a_legacy_metered_price_that_sums() {
        assert!(item_problems(&item("metered", Some("sum"), None)).is_empty());
        let p = item_problems(&item("metered", Some("max"), None));
        assert!(p.len() == 1 && p[0].contains("`max`"), "{p:?}");
        let p = item_problems(&item("metered", None, Some("mtr_1")));
        assert!(p.len() == 1 && p[0].contains("mtr_1"), "{p:?}");
        let p = item_problems(&item("licensed", None, None));
        assert_eq!(p.len(), 2, "{p:?}");
        let p = item_problems(&SubscriptionItemInfo {
            id: "si_1".into(),
            ..Default::default()
        });
        assert!(p[0].contains("not recurring"), "{p:?}");
    }
}
