//! What to send to Metronome and what to do with its answers. Pure.
//!
//! Metronome's rules, as documented:
//! - Retry: "If your call to the Metronome `/ingest` endpoint fails with a network
//!   error or a `5xx` HTTP status code, some of your events may have been ingested,
//!   but others may not. Always retry a failed call to `/ingest` until you receive
//!   a `200` status code." A 429: "back off and retry the call after a delay [...]
//!   wait for an exponentially increasing amount of time between retries." Any
//!   other 4xx "indicates an issue with the payload. **Do not** automatically retry
//!   such a call" (<https://docs.metronome.com/guides/events/send-usage-events>).
//! - Dedupe: "Once a usage event is accepted with a given transaction ID,
//!   subsequent events within the next 34 days with the same ID are treated as
//!   duplicates and ignored" (same page).
//! - Backdating: "Historical events can be backdated up to 34 days"
//!   (<https://docs.metronome.com/api-reference/usage/ingest-events>); "Timestamps
//!   more than 24 hours in the future are rejected by the API" (send-usage-events).
//! - Corrections: for usage of "the current billing period with an invoice in the
//!   `DRAFT` state, you can correct this in Metronome by passing in an event that
//!   negates the original usage [...] pass an event with a *negative*
//!   quantity/value that matches the billable metric"; for a `finalized` invoice
//!   "grant the customer a credit towards future billings or create a credit memo
//!   [...] Metronome doesn't allow the correction/adjustment of usage events for
//!   finalized invoices"
//!   (<https://docs.metronome.com/guides/invoices/invoice-optimization/issue-credit-memos>).

use super::client::{Ack, MetronomeError};
use super::event::{rfc3339, OutcomeInput, UsageEvent, VALUE_PROPERTY};
use super::settings::MetricAggregation;
pub use crate::stripe::retry::Disposition;
use crate::time::Millis;
use chrono::{DateTime, Duration as Span, Utc};
use std::time::Duration;

/// Events per ingest request: "a JSON array of between 1 and 100 usage events".
pub const MAX_BATCH: usize = 100;

/// How old a timestamp Metronome accepts: backdated "up to 34 days".
pub const MAX_AGE: Span = Span::days(34);

/// Margin kept inside [`MAX_AGE`]: a call takes time, retries more, and clocks differ.
pub const AGE_MARGIN: Span = Span::hours(1);

/// How far ahead Metronome accepts a timestamp ("more than 24 hours in the future
/// are rejected").
pub const MAX_AHEAD: Span = Span::hours(24);

/// How far ahead this sink sends a timestamp: much less than Metronome allows, so
/// that every resend that passes [`check_timestamp`] falls inside the 34 days
/// during which Metronome ignores a repeated `transaction_id`. An event first
/// accepted at `a` has `timestamp <= a + HOLD_AHEAD`; a resend at `t` passes only
/// if `timestamp >= t - (MAX_AGE - AGE_MARGIN)`, so `t <= a + 34 days - 55 min`.
pub const HOLD_AHEAD: Span = Span::minutes(5);

/// The suffix of a correcting event's `transaction_id`: its own, stable, so the
/// correction is deduplicated like any event (and never collides with the
/// outcome's own id).
pub const REVERSAL_SUFFIX: &str = "_reversal";

/// Split `items` into ingest batches of at most `max` (clamped to 1..=100).
///
/// Exactly-once does not depend on how events are batched: Metronome dedupes each
/// event on its `transaction_id`, so a batch lost in flight or partly refused can
/// be resent whole, or regrouped with other events, without counting any twice.
pub fn batches<T>(items: &[T], max: usize) -> std::slice::Chunks<'_, T> {
    items.chunks(max.clamp(1, MAX_BATCH))
}

/// What to do with the answer to an ingest call (for every event of its batch).
/// Network errors, 408, 409, 429 and 5xx: retry (a resend is safe); an explicit
/// `x-should-retry` wins (Metronome's SDKs obey it); any other 4xx: permanent.
/// A 409 is not documented for ingest; Metronome's SDKs retry it ("lock
/// timeouts") and a resend cannot double count, so it is retried here too.
pub fn classify(result: &Result<Ack, MetronomeError>) -> Disposition {
    let err = match result {
        Ok(_) => return Disposition::Delivered,
        Err(e) => e,
    };
    match err {
        MetronomeError::Network(_) | MetronomeError::Unexpected(_) => {
            Disposition::Retry { after: None }
        }
        MetronomeError::Api {
            status,
            should_retry,
            retry_after,
            ..
        } => {
            let retry =
                should_retry.unwrap_or_else(|| matches!(status, 408 | 409 | 429) || *status >= 500);
            if retry {
                Disposition::Retry {
                    after: *retry_after,
                }
            } else {
                Disposition::Permanent
            }
        }
    }
}

/// What to do with a batch after an ingest call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchDisposition {
    /// The same for every event of the batch.
    All(Disposition),
    /// Metronome refused the payload (400, 413 or 422) and the batch holds more
    /// than one event. Metronome does not say which event is at fault, nor whether
    /// it recorded the valid ones (the ingest reference documents no per-event
    /// result): send each event alone, so only a faulty one is parked. A valid
    /// event that was recorded after all is ignored as a duplicate when resent.
    Isolate,
}

/// [`classify`], for a batch of `len` events.
pub fn classify_batch(result: &Result<Ack, MetronomeError>, len: usize) -> BatchDisposition {
    let refused_payload = matches!(
        result,
        Err(MetronomeError::Api {
            status: 400 | 413 | 422,
            ..
        })
    );
    match classify(result) {
        Disposition::Permanent if refused_payload && len > 1 => BatchDisposition::Isolate,
        d => BatchDisposition::All(d),
    }
}

/// Whether a failed call may nevertheless have recorded events: no answer, or a
/// 5xx ("some of your events may have been ingested"). A later resend is safe
/// only within the 34-day dedupe window, which [`check_timestamp`] guarantees.
pub fn maybe_applied(result: &Result<Ack, MetronomeError>) -> bool {
    match result {
        Ok(_) => false,
        Err(MetronomeError::Network(_)) => true,
        Err(MetronomeError::Api { status, .. }) => *status >= 500,
        Err(MetronomeError::Unexpected(_)) => false,
    }
}

/// How long to wait, from Metronome's headers. Metronome documents none of them
/// (its status-codes page says only "backoff and try again later"); its SDKs read
/// `retry-after-ms` (milliseconds) first, then `retry-after` as seconds or an HTTP
/// date. A date is measured from the response's own `Date` (neither clock's skew
/// counts); without `Date` it is ignored.
pub fn retry_after(ms: Option<&str>, value: Option<&str>, date: Option<&str>) -> Option<Duration> {
    // `try_`: a value too large for a Duration is no wait, not a panic.
    if let Some(wait) = ms
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
    {
        return Some(wait);
    }
    crate::retry_after::parse(value?, date)
}

/// What Metronome would say of a timestamp, by the world's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampCheck {
    Acceptable,
    /// Further ahead than this sink sends ([`HOLD_AHEAD`]); acceptable from `ready_at`.
    Ahead {
        ready_at: DateTime<Utc>,
    },
    /// Older than Metronome accepts: park it with [`too_old_reason`].
    TooOld,
}

/// The oldest timestamp sent to Metronome at `world_now`.
pub fn oldest_acceptable(world_now: DateTime<Utc>) -> Millis {
    Millis::from(world_now - (MAX_AGE - AGE_MARGIN))
}

/// Check an event's timestamp before each send, resends included.
pub fn check_timestamp(at_ms: Millis, world_now: DateTime<Utc>) -> TimestampCheck {
    if at_ms < oldest_acceptable(world_now) {
        return TimestampCheck::TooOld;
    }
    let latest = world_now + HOLD_AHEAD;
    if at_ms > Millis::from(latest) {
        let ready_at =
            DateTime::from_timestamp_millis(at_ms.as_ms()).map_or(latest, |t| t - HOLD_AHEAD);
        return TimestampCheck::Ahead { ready_at };
    }
    TimestampCheck::Acceptable
}

fn when(at_ms: Millis) -> String {
    DateTime::from_timestamp_millis(at_ms.as_ms())
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| at_ms.to_string())
}

/// The reason recorded on an outcome held for a timestamp ahead of the world's clock.
pub fn ahead_reason(at_ms: Millis, world_now: DateTime<Utc>) -> String {
    let ahead = DateTime::from_timestamp_millis(at_ms.as_ms())
        .map(|t| t - world_now)
        .unwrap_or_default();
    format!(
        "not sent: timestamp {} is {} ahead of the world's clock (is clock.offset set?); held until \
         it is less than 5 minutes ahead, so a resend always stays within Metronome's 34-day dedupe window",
        when(at_ms),
        humantime::format_duration(ahead.to_std().unwrap_or_default())
    )
}

/// The reason recorded on an outcome parked because it is too old for Metronome.
pub fn too_old_reason(at_ms: Millis, outcome_id: &str) -> String {
    format!(
        "not sent: its timestamp ({}) is older than the 34 days Metronome accepts for backdated usage \
         (https://docs.metronome.com/api-reference/usage/ingest-events). Bill it at the current time by \
         operator decision (`outcome-meter replay --too-old --id {outcome_id} --yes`), or ask Metronome: \
         \"corrections beyond 34 days [are] handled by our operations team\" \
         (https://docs.metronome.com/guides/events/high-volume-ingestion)",
        when(at_ms)
    )
}

/// The `transaction_id` of the event correcting an outcome.
pub fn reversal_transaction_id(outcome_id: &str) -> String {
    format!("{outcome_id}{REVERSAL_SUFFIX}")
}

/// The event that reverses a reported outcome (clawback): its own
/// `transaction_id` (`<outcome id>_reversal`), the same customer and event type,
/// the negative value, and `reverses` = the outcome id; `at_ms` is now (world
/// time), fixed before the first send and kept for every resend.
///
/// Dated now, not at the outcome's time: Metronome corrects usage only while the
/// period's invoice is a draft, and the period that holds the current time is one
/// by definition; the outcome's own period may have been finalized, and an event
/// dated into it would not change that invoice. Assumed (not documented): a
/// negative event in the current period of a `SUM` metric subtracts even when
/// the usage it cancels was in an earlier period (the customer's total is then
/// right; the earlier invoice still shows the usage, the current one the credit).
///
/// `Err` with the explanation when the metric does not sum: a correcting event
/// would be counted, or taken as a maximum or latest value, not subtracted.
pub fn reversal_event(
    o: &OutcomeInput,
    at_ms: Millis,
    aggregation: MetricAggregation,
) -> Result<UsageEvent, String> {
    if aggregation != MetricAggregation::Sum {
        return Err(manual_reason(&o.event_type, aggregation));
    }
    let mut ev = UsageEvent::from_outcome(o);
    let (timestamp, at) = rfc3339(at_ms);
    ev.transaction_id = reversal_transaction_id(&o.id);
    ev.timestamp = timestamp;
    ev.at_ms = at;
    ev.properties
        .insert(VALUE_PROPERTY.into(), (-i128::from(o.value)).to_string());
    ev.properties.insert("reverses".into(), o.id.clone());
    Ok(ev)
}

/// Why a reversal cannot be done with a correcting event.
pub fn manual_reason(event_type: &str, aggregation: MetricAggregation) -> String {
    let effect = match aggregation {
        MetricAggregation::Count => "counted as one more event",
        MetricAggregation::Max => "ignored by the maximum",
        MetricAggregation::Latest => "taken as the latest value",
        MetricAggregation::Unique => "counted as one more distinct value",
        MetricAggregation::Sum => "subtracted", // never parked for this reason
    };
    format!(
        "not reversed in Metronome: the billable metric of `{event_type}` aggregates by `{aggregation}`, \
         so a correcting event with a negative value would be {effect}, not subtracted (Metronome corrects \
         usage only with a negating event on the metric, \
         https://docs.metronome.com/guides/invoices/invoice-optimization/issue-credit-memos); grant the \
         customer a credit in Metronome or a credit memo in the A/R system"
    )
}

/// Why a correcting event that has waited too long is not sent (its timestamp,
/// fixed at the first attempt, left the 34 days): sending it again at a new time
/// could subtract twice if an earlier attempt was recorded.
pub fn correction_too_old_reason(at_ms: Millis, in_doubt: bool) -> String {
    let doubt = if in_doubt {
        "an earlier attempt got no definite answer, so Metronome may hold it: check the event \
         (Event Search by transaction id) before crediting; "
    } else {
        ""
    };
    format!(
        "not reversed in Metronome: the correcting event dated {} is now older than the 34 days \
         Metronome accepts; {doubt}grant the customer a credit or a credit memo by hand",
        when(at_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(
        status: u16,
        should_retry: Option<bool>,
        after: Option<u64>,
    ) -> Result<Ack, MetronomeError> {
        Err(MetronomeError::Api {
            status,
            message: "x".into(),
            retry_after: after.map(Duration::from_secs),
            request_id: None,
            should_retry,
            rate_limit_type: None,
        })
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn ms(v: i64) -> Millis {
        Millis::from_ms(v)
    }

    #[test]
    fn classification_follows_metronomes_guide() {
        let ok = Ok(Ack {
            status: 200,
            request_id: None,
        });
        assert_eq!(classify(&ok), Disposition::Delivered);
        assert_eq!(
            classify(&Err(MetronomeError::Network("reset".into()))),
            Disposition::Retry { after: None }
        );
        for s in [408, 409, 500, 502, 503, 504] {
            assert_eq!(
                classify(&api(s, None, None)),
                Disposition::Retry { after: None },
                "{s}"
            );
        }
        assert_eq!(
            classify(&api(429, None, Some(7))),
            Disposition::Retry {
                after: Some(Duration::from_secs(7))
            },
            "Retry-After is passed on"
        );
        for s in [400, 401, 403, 404, 413, 422] {
            assert_eq!(classify(&api(s, None, None)), Disposition::Permanent, "{s}");
        }
        assert_eq!(
            classify(&api(500, Some(false), None)),
            Disposition::Permanent
        );
        assert_eq!(
            classify(&api(400, Some(true), None)),
            Disposition::Retry { after: None }
        );
    }

    #[test]
    fn a_refused_batch_is_split_but_a_single_event_or_bad_auth_is_parked() {
        assert_eq!(
            classify_batch(&api(400, None, None), 100),
            BatchDisposition::Isolate
        );
        assert_eq!(
            classify_batch(&api(413, None, None), 2),
            BatchDisposition::Isolate
        );
        assert_eq!(
            classify_batch(&api(400, None, None), 1),
            BatchDisposition::All(Disposition::Permanent)
        );
        assert_eq!(
            classify_batch(&api(401, None, None), 100),
            BatchDisposition::All(Disposition::Permanent),
            "a bad token is not the payload's fault"
        );
        assert_eq!(
            classify_batch(&api(503, None, None), 100),
            BatchDisposition::All(Disposition::Retry { after: None })
        );
    }

    #[test]
    fn only_no_answer_or_a_server_error_may_have_recorded_events() {
        assert!(maybe_applied(&Err(MetronomeError::Network(
            "timeout".into()
        ))));
        assert!(maybe_applied(&api(502, None, None)));
        assert!(!maybe_applied(&api(429, None, None)));
        assert!(!maybe_applied(&api(400, None, None)));
    }

    #[test]
    fn batches_hold_at_most_one_hundred() {
        let items: Vec<u32> = (0..250).collect();
        let sizes: Vec<usize> = batches(&items, 100).map(<[u32]>::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        assert_eq!(batches(&items, 500).next().map(<[u32]>::len), Some(100));
        assert_eq!(batches(&items, 0).next().map(<[u32]>::len), Some(1));
        assert_eq!(batches::<u32>(&[], 100).count(), 0);
    }

    #[test]
    fn retry_after_in_milliseconds_seconds_or_a_date() {
        assert_eq!(
            retry_after(Some("1500"), Some("9"), None),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(None, Some("30"), None),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(Some("soon"), Some("2"), None),
            Some(Duration::from_secs(2))
        );
        let date = Some("Wed, 21 Oct 2026 07:28:00 GMT");
        assert_eq!(
            retry_after(None, Some("Wed, 21 Oct 2026 07:29:30 GMT"), date),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after(None, Some("Wed, 21 Oct 2026 07:29:30 GMT"), None),
            None
        );
        assert_eq!(retry_after(Some("-5"), Some("-1"), None), None);
        assert_eq!(retry_after(Some("1e300"), None, None), None, "no panic");
        assert_eq!(retry_after(None, None, None), None);
    }

    #[test]
    fn thirty_four_days_less_an_hour_back_and_five_minutes_ahead() {
        let now = t(NOW);
        let limit = (NOW - 34 * 86_400 + 3600) * 1000;
        assert_eq!(check_timestamp(ms(limit), now), TimestampCheck::Acceptable);
        assert_eq!(check_timestamp(ms(limit - 1), now), TimestampCheck::TooOld);
        assert_eq!(
            check_timestamp(ms(NOW * 1000), now),
            TimestampCheck::Acceptable
        );
        assert_eq!(
            check_timestamp(ms((NOW + 300) * 1000), now),
            TimestampCheck::Acceptable
        );
        assert_eq!(
            check_timestamp(ms((NOW + 3600) * 1000), now),
            TimestampCheck::Ahead {
                ready_at: t(NOW + 3300)
            }
        );
        assert_eq!(check_timestamp(ms(0), now), TimestampCheck::TooOld);
        let why = too_old_reason(ms(limit - 1), "om_x");
        assert!(
            why.contains("34 days") && why.contains("--id om_x"),
            "{why}"
        );
        assert!(why.contains("2025-11-28 00:59 UTC"), "{why}");
        assert!(ahead_reason(ms((NOW + 3600) * 1000), now).contains("1h"));
    }

    #[test]
    fn every_resend_that_passes_the_check_is_inside_the_dedupe_window() {
        // First accepted at `a`, with the latest timestamp the check lets through.
        let a = NOW;
        let ts = (a + HOLD_AHEAD.num_seconds()) * 1000;
        assert_eq!(check_timestamp(ms(ts), t(a)), TimestampCheck::Acceptable);
        // The last moment a resend still passes is before a + 34 days.
        let last = (ts / 1000) + (MAX_AGE - AGE_MARGIN).num_seconds();
        assert_eq!(check_timestamp(ms(ts), t(last)), TimestampCheck::Acceptable);
        assert_eq!(check_timestamp(ms(ts), t(last + 1)), TimestampCheck::TooOld);
        assert!(last < a + MAX_AGE.num_seconds());
    }

    fn outcome() -> OutcomeInput {
        OutcomeInput {
            id: "om_0123456789abcdef0123456789abcdef".into(),
            customer_id: "team@example.com".into(),
            event_type: "resolved_ticket".into(),
            value: 3,
            confirmed_at: ms(1_767_225_600_123),
            ticket_id: "42".into(),
            provider: "zendesk".into(),
            seq: 2,
            contract_hash: "c0ffee".into(),
        }
    }

    #[test]
    fn a_reversal_is_a_negative_event_with_its_own_transaction_id() {
        let at = ms((NOW + 10 * 86_400) * 1000);
        let ev = reversal_event(&outcome(), at, MetricAggregation::Sum).expect("a sum metric");
        assert_eq!(
            super::super::event::body(std::slice::from_ref(&ev)),
            concat!(
                r#"[{"transaction_id":"om_0123456789abcdef0123456789abcdef_reversal","#,
                r#""customer_id":"team@example.com","event_type":"resolved_ticket","#,
                r#""timestamp":"2026-01-11T00:00:00.000Z","#,
                r#""properties":{"contract_hash":"c0ffee","provider":"zendesk","#,
                r#""reverses":"om_0123456789abcdef0123456789abcdef","seq":"2","ticket":"42","value":"-3"}}]"#
            )
        );
        assert_eq!(ev.at_ms, at);
        let mut big = outcome();
        big.value = i64::MIN;
        let ev = reversal_event(&big, at, MetricAggregation::Sum).expect("sum");
        assert_eq!(ev.properties["value"], "9223372036854775808");
    }

    #[test]
    fn a_metric_that_does_not_sum_gets_no_correcting_event() {
        for agg in [
            MetricAggregation::Count,
            MetricAggregation::Max,
            MetricAggregation::Latest,
            MetricAggregation::Unique,
        ] {
            let why = reversal_event(&outcome(), ms(NOW * 1000), agg).expect_err("manual");
            assert!(
                why.contains(&format!("`{agg}`")) && why.contains("credit"),
                "{why}"
            );
        }
        let why = correction_too_old_reason(ms(NOW * 1000), true);
        assert!(why.contains("may hold it"), "{why}");
        assert!(!correction_too_old_reason(ms(NOW * 1000), false).contains("may hold it"));
    }
}
