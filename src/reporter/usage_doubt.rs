//! The usage-records sink's bookkeeping of records in doubt: when an answer
//! clears a call, and which billing periods must be cleared from Stripe's
//! summaries before anything more is sent. Pure; the rules themselves are in
//! [`crate::stripe::usage_records::rules`].

use crate::lifecycle::OutcomeState;
use crate::store::UsageDoubt;
use crate::stripe::client::StripeError;
use crate::stripe::usage_records::rules::{
    after_same_key, maybe_applied, plan_resend, DoubtVerdict, Resend, SameKeyAnswer,
};
use crate::stripe::usage_records::{Period, Recorded, UsageRecordSummary};
use chrono::{DateTime, Utc};

/// Whether a record is still in doubt after the answer to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DoubtAfter {
    /// Cleared: recorded (a 2xx), or Stripe did not execute the call in doubt.
    Clear,
    /// It may have been recorded: resend only as `plan_resend` says.
    Keep,
}

/// What the answer to a call sent as `resend` says of the record.
///
/// - A 2xx: recorded, once (a replay of the call in doubt, or this one).
/// - A fresh key: in doubt if the call may have been applied (no answer, a 5xx).
/// - The key of a call in doubt: cleared only by a 2xx or a validation refusal
///   (Stripe would have replayed the earlier call's saved result had it executed,
///   see [`after_same_key`]); anything else leaves the earlier call in doubt.
pub(crate) fn doubt_after(resend: Resend, result: &Result<Recorded, StripeError>) -> DoubtAfter {
    let in_doubt = match resend {
        _ if result.is_ok() => false,
        Resend::SameKey => after_same_key(result) == SameKeyAnswer::StillInDoubt,
        Resend::Fresh | Resend::CheckSummariesFirst => maybe_applied(result),
    };
    if in_doubt {
        DoubtAfter::Keep
    } else {
        DoubtAfter::Clear
    }
}

/// How a record in doubt may be sent again: [`plan_resend`], except that once
/// Stripe replayed the saved 5xx of its key (`saved`), that key can only repeat
/// it for as long as Stripe keeps it: the summaries decide, without waiting out
/// the key's safe age. A replayed 5xx means the call finished executing, so the
/// summary (once it includes the call) says whether it recorded anything.
pub(crate) fn plan_for(d: &UsageDoubt, now: DateTime<Utc>) -> Resend {
    if d.saved {
        return Resend::CheckSummariesFirst;
    }
    plan_resend(d.since.to_datetime(), now, true)
}

/// Whether an answer under the key in doubt is the saved 5xx of that key
/// (`Idempotent-Replayed: true`, <https://docs.stripe.com/api/idempotent_requests>:
/// "Subsequent requests with the same key return the same result, including
/// 500 errors").
pub(crate) fn is_saved_failure(resend: Resend, result: &Result<Recorded, StripeError>) -> bool {
    resend == Resend::SameKey
        && result
            .as_ref()
            .err()
            .is_some_and(|e| e.replayed() && e.status().is_some_and(|s| s >= 500))
}

/// How to send a record now: under the key of its call in doubt (`SameKey`,
/// call `n`), after settling it from the summaries, or fresh (call `calls`).
pub(crate) fn next_call(
    doubt: Option<&UsageDoubt>,
    calls: u32,
    now: DateTime<Utc>,
) -> (Resend, u32) {
    match doubt {
        Some(d) => match plan_for(d, now) {
            Resend::SameKey => (Resend::SameKey, d.call),
            other => (other, calls),
        },
        None => (Resend::Fresh, calls),
    }
}

/// The billing periods whose doubts are judged from the summaries now: those holding a pending
/// record in doubt whose key can no longer tell (23 hours or older, or its saved
/// 5xx replayed), and no pending record in doubt whose key still can: a resend
/// under that key clears it for certain, and every record left in doubt is one
/// more unknown in the period's total (only [`MAX_IN_DOUBT`] can be told apart).
/// Also returns the ids of such records whose timestamp is in no period Stripe
/// lists.
///
/// [`MAX_IN_DOUBT`]: crate::stripe::usage_records::rules::MAX_IN_DOUBT
pub(crate) fn periods_to_judge(
    doubts: &[UsageDoubt],
    summaries: &[UsageRecordSummary],
    now: DateTime<Utc>,
) -> (Vec<Period>, Vec<String>) {
    let mut periods: Vec<Period> = Vec::new();
    let mut unplaced = Vec::new();
    for d in doubts.iter().filter(|d| d.state == OutcomeState::Pending) {
        if plan_for(d, now) != Resend::CheckSummariesFirst {
            continue;
        }
        let ts = d.confirmed_at.as_secs();
        match summaries
            .iter()
            .filter_map(UsageRecordSummary::billing_period)
            .find(|p| p.contains(ts))
        {
            Some(p) if !periods.contains(&p) => periods.push(p),
            Some(_) => {}
            None => unplaced.push(d.id.clone()),
        }
    }
    periods.retain(|p| {
        !doubts.iter().any(|d| {
            d.state == OutcomeState::Pending
                && p.contains(d.confirmed_at.as_secs())
                && plan_for(d, now) == Resend::SameKey
        })
    });
    (periods, unplaced)
}

/// A period cannot be cleared while a clawback `set` on one of its records has
/// no definite answer (its method is stored before the first call, so it may
/// have moved Stripe's total): wait while it is retried (`pending`); once it is
/// parked, no total can tell a record that landed from one that did not, so the
/// records in doubt are parked for an operator. `None`: nothing blocks.
pub(crate) fn blocked_by_sets(
    pending: i64,
    parked: i64,
    now: DateTime<Utc>,
) -> Option<DoubtVerdict> {
    if parked > 0 {
        return Some(DoubtVerdict::Undecidable {
            reason: format!(
                "a clawback `set` of this billing period is parked without a definite answer ({parked}), \
                 so Stripe's total for the period cannot tell which records in doubt landed; check the \
                 item's usage in Stripe"
            ),
        });
    }
    (pending > 0).then(|| DoubtVerdict::Wait {
        until: now + chrono::Duration::minutes(5),
    })
}

/// The records in doubt (pending or parked) with a timestamp in `period`.
pub(crate) fn in_period(doubts: &[UsageDoubt], period: Period) -> Vec<&UsageDoubt> {
    doubts
        .iter()
        .filter(|d| period.contains(d.confirmed_at.as_secs()))
        .collect()
}

/// How many records of the item's current billing period are in doubt, kept
/// while a group is sent: a fresh record is sent only while fewer than
/// [`MAX_IN_DOUBT`] are, since each call that ends in doubt is one more unknown
/// in the period's total, and past that many no total tells which landed (they
/// would all be parked for an operator). Held records wait for the summaries to
/// settle the doubts, then go.
///
/// [`MAX_IN_DOUBT`]: crate::stripe::usage_records::rules::MAX_IN_DOUBT
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DoubtBudget {
    in_doubt: usize,
}

impl DoubtBudget {
    /// The records in doubt among `doubts` whose timestamp is in `current`.
    pub(crate) fn of_period(doubts: &[UsageDoubt], current: Period) -> DoubtBudget {
        DoubtBudget {
            in_doubt: in_period(doubts, current).len(),
        }
    }

    /// Whether a record not in doubt may be sent now.
    pub(crate) fn may_send_fresh(self) -> bool {
        self.in_doubt < crate::stripe::usage_records::rules::MAX_IN_DOUBT
    }

    /// A fresh record's call ended in doubt.
    pub(crate) fn one_more(&mut self) {
        self.in_doubt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::client::{Ack, ApiError};
    use crate::stripe::usage_records::record::SummaryPeriod;
    use crate::time::Millis;

    const T: i64 = 1_767_225_600;

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

    fn api(status: u16, kind: &str) -> Result<Recorded, StripeError> {
        Err(StripeError::Api {
            status,
            error: Box::new(ApiError {
                kind: kind.into(),
                code: None,
                message: None,
                param: None,
            }),
            request_id: None,
            should_retry: None,
            retry_after: None,
            replayed: false,
        })
    }

    fn network() -> Result<Recorded, StripeError> {
        Err(StripeError::Network("timed out".into()))
    }

    fn doubt(id: &str, ts: i64, since: i64, state: OutcomeState) -> UsageDoubt {
        UsageDoubt {
            id: id.into(),
            value: 1,
            confirmed_at: Millis::from_ms(ts * 1000),
            state,
            call: 0,
            since: Millis::from_ms(since * 1000),
            saved: false,
        }
    }

    fn summary(start: i64, end: i64) -> UsageRecordSummary {
        UsageRecordSummary {
            id: format!("sis_{start}"),
            invoice: None,
            livemode: false,
            period: SummaryPeriod {
                start: Some(start),
                end: Some(end),
            },
            subscription_item: "si_1".into(),
            total_usage: 0,
        }
    }

    #[test]
    fn a_fresh_call_is_in_doubt_only_when_it_may_have_been_applied() {
        assert_eq!(doubt_after(Resend::Fresh, &ok()), DoubtAfter::Clear);
        assert_eq!(doubt_after(Resend::Fresh, &network()), DoubtAfter::Keep);
        assert_eq!(
            doubt_after(Resend::Fresh, &api(500, "api_error")),
            DoubtAfter::Keep
        );
        for (status, kind) in [
            (429, "rate_limit_error"),
            (409, "idempotency_error"),
            (400, "invalid_request_error"),
        ] {
            assert_eq!(
                doubt_after(Resend::Fresh, &api(status, kind)),
                DoubtAfter::Clear,
                "{status}"
            );
        }
    }

    #[test]
    fn a_resend_under_the_same_key_clears_only_on_a_2xx_or_a_validation_refusal() {
        assert_eq!(doubt_after(Resend::SameKey, &ok()), DoubtAfter::Clear);
        assert_eq!(
            doubt_after(Resend::SameKey, &api(400, "invalid_request_error")),
            DoubtAfter::Clear
        );
        // A 429 or a 409 under the same key says nothing of the earlier call.
        for r in [
            network(),
            api(500, "api_error"),
            api(429, "rate_limit_error"),
            api(409, "idempotency_error"),
        ] {
            assert_eq!(doubt_after(Resend::SameKey, &r), DoubtAfter::Keep);
        }
    }

    #[test]
    fn a_set_without_a_definite_answer_blocks_settling_its_period() {
        let now = DateTime::from_timestamp(T, 0).expect("time");
        assert_eq!(blocked_by_sets(0, 0, now), None);
        assert!(matches!(
            blocked_by_sets(1, 0, now),
            Some(DoubtVerdict::Wait { until }) if until > now
        ));
        assert!(matches!(
            blocked_by_sets(1, 2, now),
            Some(DoubtVerdict::Undecidable { reason }) if reason.contains("parked without a definite answer (2)")
        ));
    }

    #[test]
    fn a_period_waits_for_the_records_its_keys_can_still_clear() {
        let now = DateTime::from_timestamp(T, 0).expect("time");
        let summaries = [summary(T - 1000, T + 1000)];
        let mut saved = doubt("om_saved", T - 10, T - 60, OutcomeState::Pending);
        saved.saved = true;
        let young = doubt("om_young", T - 20, T - 60, OutcomeState::Pending);
        let (periods, unplaced) =
            periods_to_judge(&[saved.clone(), young.clone()], &summaries, now);
        assert!(
            periods.is_empty(),
            "a resend under om_young's key settles it first"
        );
        assert!(unplaced.is_empty());
        let parked_young = doubt("om_parked", T - 20, T - 60, OutcomeState::Failed);
        let (periods, _) = periods_to_judge(&[saved, parked_young], &summaries, now);
        assert_eq!(
            periods.len(),
            1,
            "a parked record is never resent: it cannot hold the period"
        );
    }

    #[test]
    fn a_replayed_saved_5xx_sends_the_record_to_the_summaries_at_once() {
        let replayed = |status: u16| -> Result<Recorded, StripeError> {
            match api(status, "api_error") {
                Err(StripeError::Api {
                    status,
                    error,
                    request_id,
                    should_retry,
                    retry_after,
                    ..
                }) => Err(StripeError::Api {
                    status,
                    error,
                    request_id,
                    should_retry,
                    retry_after,
                    replayed: true,
                }),
                other => other,
            }
        };
        assert!(is_saved_failure(Resend::SameKey, &replayed(500)));
        assert!(
            !is_saved_failure(Resend::SameKey, &api(500, "api_error")),
            "not replayed"
        );
        assert!(
            !is_saved_failure(Resend::SameKey, &replayed(400)),
            "a 4xx is not saved"
        );
        assert!(!is_saved_failure(Resend::Fresh, &replayed(500)));
        let now = DateTime::from_timestamp(T, 0).expect("time");
        let mut d = doubt("om_1", T, T - 60, OutcomeState::Pending);
        assert_eq!(plan_for(&d, now), Resend::SameKey, "a minute old: same key");
        d.saved = true;
        assert_eq!(plan_for(&d, now), Resend::CheckSummariesFirst);
        assert_eq!(
            next_call(Some(&d), 3, now),
            (Resend::CheckSummariesFirst, 3)
        );
    }

    #[test]
    fn the_key_in_doubt_is_reused_within_23_hours_then_the_summaries_decide() {
        let now = Millis::from_ms(T * 1000).to_datetime();
        assert_eq!(next_call(None, 4, now), (Resend::Fresh, 4));
        let mut d = doubt("om_1", T, T - 3600, OutcomeState::Pending);
        d.call = 2;
        assert_eq!(next_call(Some(&d), 4, now), (Resend::SameKey, 2));
        d.since = Millis::from_ms((T - 23 * 3600) * 1000);
        assert_eq!(
            next_call(Some(&d), 4, now),
            (Resend::CheckSummariesFirst, 4)
        );
    }

    #[test]
    fn only_old_pending_doubts_make_a_period_to_judge() {
        let now = Millis::from_ms((T + 30 * 3600) * 1000).to_datetime();
        let sums = [summary(T + 100, T + 200), summary(T - 100, T + 100)];
        let doubts = [
            doubt("old", T + 50, T, OutcomeState::Pending),
            doubt("old_same_period", T + 60, T, OutcomeState::Pending),
            doubt("young", T + 150, T + 29 * 3600, OutcomeState::Pending),
            doubt("parked", T + 150, T, OutcomeState::Failed),
            doubt("nowhere", T + 500, T, OutcomeState::Pending),
        ];
        let (periods, unplaced) = periods_to_judge(&doubts, &sums, now);
        assert_eq!(
            periods,
            vec![Period {
                start: T - 100,
                end: T + 100
            }]
        );
        assert_eq!(unplaced, vec!["nowhere".to_string()]);
        let ids: Vec<&str> = in_period(
            &doubts,
            Period {
                start: T + 100,
                end: T + 200,
            },
        )
        .iter()
        .map(|d| d.id.as_str())
        .collect();
        assert_eq!(ids, ["young", "parked"]);
    }

    #[test]
    fn fresh_records_wait_while_the_period_holds_as_many_in_doubt_as_can_be_told_apart() {
        use crate::stripe::usage_records::rules::MAX_IN_DOUBT;
        let period = Period {
            start: 0,
            end: 1_000,
        };
        let doubt = |secs: i64| UsageDoubt {
            id: format!("om_{secs}"),
            value: 1,
            confirmed_at: Millis::from_ms(secs * 1000),
            state: OutcomeState::Pending,
            call: 0,
            since: Millis::from_ms(0),
            saved: true,
        };
        // Records in doubt of another period do not count.
        let mut doubts: Vec<UsageDoubt> =
            (0..MAX_IN_DOUBT as i64).map(|i| doubt(2_000 + i)).collect();
        doubts.extend((1..MAX_IN_DOUBT as i64).map(doubt));
        let mut budget = DoubtBudget::of_period(&doubts, period);
        assert!(
            budget.may_send_fresh(),
            "{} in doubt in the period",
            MAX_IN_DOUBT - 1
        );
        budget.one_more();
        assert!(
            !budget.may_send_fresh(),
            "a 17th would make the total ambiguous"
        );
    }
}
