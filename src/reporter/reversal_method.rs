//! How a clawback is carried out on the `stripe_meters` sink, chosen from the
//! outcome's state and age and the meter's aggregation. Pure.

use crate::lifecycle::UnknownValue;
use crate::settings::MeterAggregation;
use crate::stripe::mode::StripeMode;

/// Stripe lets an event be cancelled within 24 hours of receiving it; keep a margin.
const CANCEL_WINDOW_MS: i64 = 23 * 3_600_000;

/// How a clawback reversal is carried out (stored in `reversals.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The outcome was never sent: void it.
    Void,
    /// A meter event adjustment cancels the event by its identifier (within 24h).
    Cancel,
    /// A correcting event with the negative value (`<outcome id>_reversal`).
    Correction,
    /// Dry-run: record what would be sent.
    DryRun,
    /// Nothing to reverse.
    Nothing,
    /// Cannot be reversed at Stripe (too late to cancel, and the meter does not sum):
    /// parked as failed with the explanation, for a credit by hand.
    Manual,
    /// Stripe legacy usage records: `action=set` at the record's timestamp to the
    /// usage there less the outcome's quantity (`reversals.usage_set_quantity`).
    UsageSet,
    /// Reported in live mode, and this process is not: wait for one that is
    /// (never stored; nothing is sent).
    WaitForLive,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Void => "void",
            Method::Cancel => "cancel",
            Method::Correction => "correction",
            Method::DryRun => "dry_run",
            Method::Nothing => "none",
            Method::Manual => "manual",
            Method::UsageSet => "usage_set",
            Method::WaitForLive => "wait_for_live",
        }
    }

    /// The methods that are stored ([`Method::WaitForLive`] never is).
    pub const STORED: [Method; 7] = [
        Method::Void,
        Method::Cancel,
        Method::Correction,
        Method::DryRun,
        Method::Nothing,
        Method::Manual,
        Method::UsageSet,
    ];

    /// A stored method; an error for a value this build does not know (the
    /// reporter parks such a reversal for an operator, never takes it as done).
    pub fn parse(s: &str) -> Result<Method, UnknownValue> {
        Method::STORED
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownValue {
                column: "reversals.method",
                value: s.to_string(),
                known: &STORED_SPELLINGS,
            })
    }
}

/// The spellings of [`Method::STORED`].
const STORED_SPELLINGS: [&str; Method::STORED.len()] = {
    let mut out = [""; Method::STORED.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = Method::STORED[i].as_str();
        i += 1;
    }
    out
};

impl std::str::FromStr for Method {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Method, UnknownValue> {
        Method::parse(s)
    }
}

/// Choose how to reverse an outcome (pure). A method already stored is kept: it was
/// fixed before the first request and may have reached Stripe. Otherwise: not sent,
/// void; sent less than 23 hours ago (counted from when it was first taken to be
/// sent, which is no later than Stripe received it), cancel; older, a correction if
/// the meter sums its events, else nothing Stripe can do ([`Method::Manual`]).
///
/// An outcome reported in another mode than this process's: reported in test
/// mode, nothing was billed in live mode (nothing to reverse there; a dry-run
/// records what it would send); reported in live mode, only a live-mode process
/// may reverse it ([`Method::WaitForLive`]). `reported_in` is `None` for rows
/// older than the modes: taken as reported in this process's mode.
pub fn choose_method(
    stored: Option<&str>,
    outcome_state: &str,
    reported_in: Option<StripeMode>,
    mode: StripeMode,
    first_sent_at: Option<i64>,
    now: i64,
    aggregation: MeterAggregation,
) -> Method {
    if let Some(m) = stored {
        // Unknown (caught before, see `clawback::unreadable_method`): a person decides.
        return Method::parse(m).unwrap_or(Method::Manual);
    }
    let reported_in = reported_in.unwrap_or(mode);
    match outcome_state {
        // Rejected by Stripe after it accepted the event: nothing is billed.
        "pending" | "failed" | "rejected_by_stripe" => Method::Void,
        "dry_run" => Method::DryRun,
        "reported" if reported_in == StripeMode::Live && mode != StripeMode::Live => {
            Method::WaitForLive
        }
        "reported" if mode == StripeMode::DryRun => Method::DryRun,
        "reported" if reported_in != mode => Method::Nothing,
        "reported" => {
            let age = now - first_sent_at.unwrap_or(now);
            if age < CANCEL_WINDOW_MS {
                Method::Cancel
            } else {
                correction_for(aggregation)
            }
        }
        _ => Method::Nothing,
    }
}

/// A correction when the meter sums its events; otherwise a negative event would be
/// counted (or taken as the last value), not subtracted.
fn correction_for(aggregation: MeterAggregation) -> Method {
    match aggregation {
        MeterAggregation::Sum => Method::Correction,
        MeterAggregation::Count | MeterAggregation::Last => Method::Manual,
    }
}

/// Why a reversal is parked as [`Method::Manual`].
pub fn manual_reason(event_name: &str, aggregation: MeterAggregation) -> String {
    let effect = match aggregation {
        MeterAggregation::Count => "counted as one more event",
        MeterAggregation::Last => "taken as the meter's last value",
        MeterAggregation::Sum => "subtracted", // never parked for this reason
    };
    format!(
        "not reversed at Stripe: Stripe's 24-hour cancellation window has passed, and meter \
         `{event_name}` aggregates by `{aggregation}`, so a correcting event with a negative value \
         would be {effect}, not subtracted; credit the customer by hand (e.g. a credit note)"
    )
}

/// Stripe refused a cancel as too old. Switch to a correction, unless an earlier cancel
/// request may have been applied (then reversing again could reverse twice) or the meter
/// does not sum: `Err` with the explanation for an operator.
pub fn after_cancel_too_old(
    cancel_in_doubt: bool,
    event_name: &str,
    aggregation: MeterAggregation,
) -> Result<Method, String> {
    if cancel_in_doubt {
        return Err("Stripe refuses to cancel the event (more than 24 hours old), and an earlier cancel \
                    request got no definite answer, so it may have been applied: check the event in \
                    Stripe; if it is still billed, credit the customer by hand"
            .to_string());
    }
    match correction_for(aggregation) {
        Method::Correction => Ok(Method::Correction),
        _ => Err(manual_reason(event_name, aggregation)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const SUM: MeterAggregation = MeterAggregation::Sum;
    const LIVE: StripeMode = StripeMode::Live;

    #[test]
    fn method_follows_the_outcome_and_the_age_since_first_sent() {
        let now = 100 * H;
        assert_eq!(
            choose_method(None, "pending", None, LIVE, None, now, SUM),
            Method::Void
        );
        assert_eq!(
            choose_method(None, "failed", None, LIVE, Some(now - 50 * H), now, SUM),
            Method::Void
        );
        assert_eq!(
            choose_method(None, "rejected_by_stripe", None, LIVE, Some(now), now, SUM),
            Method::Void,
            "Stripe rejected it: nothing is billed, nothing to cancel"
        );
        assert_eq!(
            choose_method(None, "dry_run", None, LIVE, None, now, SUM),
            Method::DryRun
        );
        assert_eq!(
            choose_method(
                None,
                "reported",
                None,
                StripeMode::DryRun,
                Some(now),
                now,
                SUM
            ),
            Method::DryRun
        );
        assert_eq!(
            choose_method(None, "reported", None, LIVE, Some(now - 22 * H), now, SUM),
            Method::Cancel
        );
        assert_eq!(
            choose_method(None, "reported", None, LIVE, Some(now - 23 * H), now, SUM),
            Method::Correction,
            "one hour of margin before Stripe's 24 hours"
        );
        assert_eq!(
            choose_method(None, "voided", None, LIVE, None, now, SUM),
            Method::Nothing
        );
    }

    #[test]
    fn stored_methods_round_trip_and_an_unknown_one_is_an_error() {
        for m in [
            Method::Void,
            Method::Cancel,
            Method::Correction,
            Method::DryRun,
            Method::Nothing,
            Method::Manual,
            Method::UsageSet,
        ] {
            assert_eq!(Method::parse(m.as_str()), Ok(m));
            assert_eq!(m.as_str().parse::<Method>(), Ok(m));
        }
        let err = Method::parse("refund").expect_err("unknown");
        assert_eq!(
            (err.column, err.value.as_str()),
            ("reversals.method", "refund")
        );
        assert_eq!(
            err.to_string(),
            "unknown reversals.method `refund` (known: void, cancel, correction, dry_run, none, manual, usage_set)"
        );
        assert!(
            Method::parse(Method::WaitForLive.as_str()).is_err(),
            "never stored"
        );
        assert_eq!(
            choose_method(Some("refund"), "reported", None, LIVE, None, 0, SUM),
            Method::Manual,
            "never taken as nothing to reverse"
        );
    }

    #[test]
    fn a_stored_method_is_kept_whatever_the_age() {
        let now = 100 * H;
        for m in [
            Method::Cancel,
            Method::Correction,
            Method::Void,
            Method::DryRun,
        ] {
            assert_eq!(
                choose_method(
                    Some(m.as_str()),
                    "reported",
                    None,
                    LIVE,
                    Some(now - 30 * H),
                    now,
                    SUM
                ),
                m
            );
            assert_eq!(
                choose_method(
                    Some(m.as_str()),
                    "reported",
                    None,
                    LIVE,
                    Some(now),
                    now,
                    SUM
                ),
                m
            );
        }
    }

    #[test]
    fn too_old_switches_to_a_correction_unless_a_cancel_is_in_doubt() {
        assert_eq!(
            after_cancel_too_old(false, "m", SUM),
            Ok(Method::Correction)
        );
        let why = after_cancel_too_old(true, "m", SUM).expect_err("parked");
        assert!(why.contains("may have been applied"), "{why}");
        let why = after_cancel_too_old(false, "m", MeterAggregation::Count).expect_err("parked");
        assert!(why.contains("aggregates by `count`"), "{why}");
    }

    #[test]
    fn a_meter_that_does_not_sum_never_gets_a_correction() {
        let now = 100 * H;
        let old = Some(now - 30 * H);
        for agg in [MeterAggregation::Count, MeterAggregation::Last] {
            assert_eq!(
                choose_method(None, "reported", None, LIVE, old, now, agg),
                Method::Manual
            );
            assert_eq!(
                choose_method(None, "reported", None, LIVE, Some(now - H), now, agg),
                Method::Cancel,
                "any meter can cancel within the window"
            );
        }
        assert_eq!(
            choose_method(None, "reported", None, LIVE, old, now, SUM),
            Method::Correction
        );
        let why = manual_reason("escalation", MeterAggregation::Last);
        assert!(
            why.contains("`escalation`") && why.contains("credit"),
            "{why}"
        );
    }

    #[test]
    fn an_outcome_reported_in_another_mode_is_reversed_only_where_it_was_billed() {
        let now = 100 * H;
        let sent = Some(now - H);
        let test = Some(StripeMode::Test);
        let live = Some(StripeMode::Live);
        assert_eq!(
            choose_method(None, "reported", test, LIVE, sent, now, SUM),
            Method::Nothing,
            "test mode billed nothing in live mode"
        );
        for mode in [StripeMode::Test, StripeMode::DryRun] {
            assert_eq!(
                choose_method(None, "reported", live, mode, sent, now, SUM),
                Method::WaitForLive,
                "a live event is never marked reversed by a {mode} process"
            );
        }
        assert_eq!(
            choose_method(None, "reported", test, StripeMode::Test, sent, now, SUM),
            Method::Cancel
        );
        assert_eq!(
            choose_method(None, "reported", test, StripeMode::DryRun, sent, now, SUM),
            Method::DryRun
        );
        assert_eq!(
            choose_method(None, "reported", None, LIVE, sent, now, SUM),
            Method::Cancel,
            "rows from before the modes count as this process's"
        );
    }
}
