//! How a clawback is carried out on the `stripe_meters` sink, chosen from the
//! outcome's state and age and the meter's aggregation. Pure.

use crate::lifecycle::{OutcomeState, UnknownValue};
use crate::settings::MeterAggregation;
use crate::stripe::mode::StripeMode;
use crate::time::Millis;

/// Stripe lets an event be cancelled within 24 hours of receiving it; keep a margin.
const CANCEL_WINDOW: std::time::Duration = std::time::Duration::from_secs(23 * 3600);

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
                row: None,
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

/// What [`choose_method`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct MethodInput<'a> {
    /// The method stored at the first attempt, if any (`reversals.method`).
    pub stored: Option<&'a str>,
    /// The reversed outcome's state.
    pub outcome_state: OutcomeState,
    /// Where the outcome was reported; `None` for rows older than the modes
    /// (taken as reported in `mode`).
    pub reported_in: Option<StripeMode>,
    /// This process's mode.
    pub mode: StripeMode,
    /// When the outcome was first taken to be sent.
    pub first_sent_at: Option<Millis>,
    pub now: Millis,
    /// The meter's aggregation.
    pub aggregation: MeterAggregation,
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
pub fn choose_method(input: MethodInput<'_>) -> Method {
    let MethodInput {
        stored,
        outcome_state,
        reported_in,
        mode,
        first_sent_at,
        now,
        aggregation,
    } = input;
    if let Some(m) = stored {
        // Unknown (caught before, see `clawback::unreadable_method`): a person decides.
        return Method::parse(m).unwrap_or(Method::Manual);
    }
    let reported_in = reported_in.unwrap_or(mode);
    match outcome_state {
        // Rejected by Stripe after it accepted the event: nothing is billed.
        OutcomeState::Pending | OutcomeState::Failed | OutcomeState::RejectedByStripe => {
            Method::Void
        }
        OutcomeState::DryRun => Method::DryRun,
        OutcomeState::Reported if reported_in == StripeMode::Live && mode != StripeMode::Live => {
            Method::WaitForLive
        }
        OutcomeState::Reported if mode == StripeMode::DryRun => Method::DryRun,
        OutcomeState::Reported if reported_in != mode => Method::Nothing,
        OutcomeState::Reported => {
            if now < first_sent_at.unwrap_or(now) + CANCEL_WINDOW {
                Method::Cancel
            } else {
                correction_for(aggregation)
            }
        }
        // Never billed (capped), or taken back already.
        OutcomeState::Capped | OutcomeState::Voided | OutcomeState::Reversed => Method::Nothing,
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
    use OutcomeState::{DryRun, Failed, Pending, RejectedByStripe, Reported, Voided};

    const H: i64 = 3_600_000;
    const SUM: MeterAggregation = MeterAggregation::Sum;
    const LIVE: StripeMode = StripeMode::Live;

    /// A live-mode process deciding on a reported outcome with no method stored,
    /// first sent at `first_sent_at`; each test changes what it is about.
    fn input(first_sent_at: Option<i64>, now: i64) -> MethodInput<'static> {
        MethodInput {
            stored: None,
            outcome_state: Reported,
            reported_in: None,
            mode: LIVE,
            first_sent_at: first_sent_at.map(Millis::from_ms),
            now: Millis::from_ms(now),
            aggregation: SUM,
        }
    }

    fn in_state(outcome_state: OutcomeState, first_sent_at: Option<i64>, now: i64) -> Method {
        choose_method(MethodInput {
            outcome_state,
            ..input(first_sent_at, now)
        })
    }

    #[test]
    fn method_follows_the_outcome_and_the_age_since_first_sent() {
        let now = 100 * H;
        assert_eq!(in_state(Pending, None, now), Method::Void);
        assert_eq!(in_state(Failed, Some(now - 50 * H), now), Method::Void);
        assert_eq!(
            in_state(RejectedByStripe, Some(now), now),
            Method::Void,
            "Stripe rejected it: nothing is billed, nothing to cancel"
        );
        assert_eq!(in_state(DryRun, None, now), Method::DryRun);
        assert_eq!(
            choose_method(MethodInput {
                mode: StripeMode::DryRun,
                ..input(Some(now), now)
            }),
            Method::DryRun
        );
        assert_eq!(in_state(Reported, Some(now - 22 * H), now), Method::Cancel);
        assert_eq!(
            in_state(Reported, Some(now - 23 * H), now),
            Method::Correction,
            "one hour of margin before Stripe's 24 hours"
        );
        assert_eq!(in_state(Voided, None, now), Method::Nothing);
    }

    #[test]
    fn an_outcome_never_billed_or_taken_back_has_nothing_to_reverse() {
        let now = 100 * H;
        for state in [
            OutcomeState::Capped,
            OutcomeState::Voided,
            OutcomeState::Reversed,
        ] {
            assert_eq!(in_state(state, Some(now), now), Method::Nothing, "{state}");
        }
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
            choose_method(MethodInput {
                stored: Some("refund"),
                ..input(None, 0)
            }),
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
            for first_sent_at in [Some(now - 30 * H), Some(now)] {
                assert_eq!(
                    choose_method(MethodInput {
                        stored: Some(m.as_str()),
                        ..input(first_sent_at, now)
                    }),
                    m
                );
            }
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
        for aggregation in [MeterAggregation::Count, MeterAggregation::Last] {
            assert_eq!(
                choose_method(MethodInput {
                    aggregation,
                    ..input(old, now)
                }),
                Method::Manual
            );
            assert_eq!(
                choose_method(MethodInput {
                    aggregation,
                    ..input(Some(now - H), now)
                }),
                Method::Cancel,
                "any meter can cancel within the window"
            );
        }
        assert_eq!(choose_method(input(old, now)), Method::Correction);
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
        let from = |reported_in, mode| {
            choose_method(MethodInput {
                reported_in,
                mode,
                ..input(sent, now)
            })
        };
        assert_eq!(
            from(test, LIVE),
            Method::Nothing,
            "test mode billed nothing in live mode"
        );
        for mode in [StripeMode::Test, StripeMode::DryRun] {
            assert_eq!(
                from(live, mode),
                Method::WaitForLive,
                "a live event is never marked reversed by a {mode} process"
            );
        }
        assert_eq!(from(test, StripeMode::Test), Method::Cancel);
        assert_eq!(from(test, StripeMode::DryRun), Method::DryRun);
        assert_eq!(
            from(None, LIVE),
            Method::Cancel,
            "rows from before the modes count as this process's"
        );
    }
}
