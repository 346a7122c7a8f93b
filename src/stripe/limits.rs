//! Stripe's documented limits on a meter event's `timestamp`: "within the past
//! 35 calendar days" and "no more than 5 minutes in the future" (Billing Meter
//! events API reference). Checked before a call so an event Stripe would refuse
//! is never sent: its outcome is held (future) or parked (too old) with the
//! reason instead of spending its retry budget on certain 400s.

use crate::time::Millis;
use chrono::{DateTime, Duration, Utc};

/// How far ahead of Stripe's clock a timestamp may be.
pub const MAX_AHEAD: Duration = Duration::minutes(5);

/// Margin kept inside [`MAX_AHEAD`] for clock skew between us and Stripe.
pub const AHEAD_MARGIN: Duration = Duration::seconds(30);

/// How old a timestamp Stripe accepts ("within the past 35 calendar days").
pub const MAX_AGE: Duration = Duration::days(35);

/// Margin kept inside [`MAX_AGE`]: a call takes time, and retries more.
pub const AGE_MARGIN: Duration = Duration::hours(1);

/// The oldest timestamp (Unix seconds) sent to Stripe at `world_now`.
pub fn oldest_acceptable(world_now: DateTime<Utc>) -> i64 {
    (world_now - (MAX_AGE - AGE_MARGIN)).timestamp()
}

/// [`oldest_acceptable`] as an instant: the oldest confirmation time
/// (`outcomes.confirmed_at`, the event's timestamp) sent to Stripe.
pub fn oldest_acceptable_ms(world_now: DateTime<Utc>) -> Millis {
    Millis::from_ms(1000 * oldest_acceptable(world_now))
}

/// What Stripe would say of a timestamp, by the world's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampCheck {
    Acceptable,
    /// Too far in Stripe's future; acceptable from `ready_at` (world time).
    Ahead {
        ready_at: DateTime<Utc>,
    },
    /// Older than Stripe accepts: only an operator can bill it now
    /// (`replay --too-old`), at the current time.
    TooOld,
}

/// Check a meter event timestamp (Unix seconds) against the world's clock.
pub fn check_timestamp(timestamp: i64, world_now: DateTime<Utc>) -> TimestampCheck {
    let Some(at) = DateTime::from_timestamp(timestamp, 0) else {
        return TimestampCheck::Acceptable;
    };
    let allowed = MAX_AHEAD - AHEAD_MARGIN;
    if timestamp < oldest_acceptable(world_now) {
        TimestampCheck::TooOld
    } else if at > world_now + allowed {
        TimestampCheck::Ahead {
            ready_at: at - allowed,
        }
    } else {
        TimestampCheck::Acceptable
    }
}

/// The reason recorded on an outcome held for a future timestamp.
pub fn ahead_reason(timestamp: i64, world_now: DateTime<Utc>) -> String {
    let ahead = DateTime::from_timestamp(timestamp, 0)
        .map(|at| at - world_now)
        .unwrap_or_default();
    format!(
        "not sent: timestamp {timestamp} is {} ahead of Stripe's clock, which refuses more than 5 minutes \
         (is clock.offset set?); held until then",
        humantime::format_duration(ahead.to_std().unwrap_or_default())
    )
}

/// The reason recorded on an outcome parked because it is too old for Stripe.
pub fn too_old_reason(timestamp: i64, outcome_id: &str) -> String {
    let at = DateTime::from_timestamp(timestamp, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| timestamp.to_string());
    format!(
        "not sent: its timestamp ({at}) is older than Stripe accepts (35 days). Bill it now, by \
         operator decision, with `outcome-meter replay --too-old --id {outcome_id} --yes`"
    )
}

/// Stripe deduplicates a meter event's `identifier` "within a rolling period of
/// at least 24 hours" (<https://docs.stripe.com/api/billing/meter-event/create>):
/// an event whose first unanswered call is older than this (an hour of margin)
/// is not sent again blindly.
pub const IDENTIFIER_DEDUPE: std::time::Duration = std::time::Duration::from_secs(23 * 3600);

/// Whether an outcome whose call for its identifier first went unanswered (or
/// got a 5xx) at `doubt_since` may still be sent again under Stripe's dedupe.
pub fn resend_is_deduplicated(doubt_since: Option<Millis>, now: Millis) -> bool {
    doubt_since.is_none_or(|since| now < since + IDENTIFIER_DEDUPE)
}

/// Why such an outcome is parked instead of sent.
pub fn in_doubt_reason(outcome_id: &str, doubt_since: Millis) -> String {
    let at = DateTime::from_timestamp_millis(doubt_since.as_ms())
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| doubt_since.to_string());
    format!(
        "not sent again: a call at {at} got no answer or a 5xx, so Stripe may have the event, and \
         Stripe deduplicates identifiers for 24 hours only; check the customer's meter in Stripe \
         (`outcome-meter reconcile`), then `outcome-meter replay --failed --id {outcome_id} \
         --include-in-doubt` if it is not there"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap_or_default()
    }

    #[test]
    fn now_and_the_past_are_acceptable() {
        let now = t(1_767_225_600);
        assert_eq!(
            check_timestamp(1_767_225_600, now),
            TimestampCheck::Acceptable
        );
        assert_eq!(
            check_timestamp(1_767_225_600 - 86_400, now),
            TimestampCheck::Acceptable
        );
        assert_eq!(
            check_timestamp(1_767_225_600 + 270, now),
            TimestampCheck::Acceptable
        );
    }

    #[test]
    fn older_than_35_days_less_an_hour_is_too_old() {
        let now = t(1_767_225_600);
        let limit = 1_767_225_600 - 35 * 86_400 + 3600;
        assert_eq!(check_timestamp(limit, now), TimestampCheck::Acceptable);
        assert_eq!(check_timestamp(limit - 1, now), TimestampCheck::TooOld);
        assert!(too_old_reason(limit - 1, "om_x").contains("replay --too-old --id om_x"));
    }

    #[test]
    fn more_than_four_and_a_half_minutes_ahead_is_held_until_acceptable() {
        let now = t(1_767_225_600);
        let ts = 1_767_225_600 + 73 * 3600;
        assert_eq!(
            check_timestamp(ts, now),
            TimestampCheck::Ahead {
                ready_at: t(ts - 270)
            }
        );
        assert!(
            ahead_reason(ts, now).contains("3days 1h"),
            "{}",
            ahead_reason(ts, now)
        );
    }

    #[test]
    fn an_old_doubt_stops_a_resend() {
        let h = |n: i64| Millis::from_ms(n * 3_600_000);
        assert!(resend_is_deduplicated(None, h(100)));
        assert!(resend_is_deduplicated(Some(h(90)), h(100)));
        assert!(!resend_is_deduplicated(Some(h(77)), h(100)));
        assert!(in_doubt_reason("om_1", Millis::EPOCH).contains("--include-in-doubt"));
    }
}
