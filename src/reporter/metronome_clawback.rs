//! Clawback on the `metronome` sink. Metronome cannot delete or cancel an
//! ingested event: a reported outcome is reversed with a correcting event (the
//! negative value, its own `transaction_id`, dated now), only on a `sum`
//! billable metric and inside the 34-day backdating window; otherwise the
//! reversal is parked with the explanation, for a credit by hand. See
//! [`crate::metronome::rules::reversal_event`] and `docs/metronome.md`.

use super::attempt::{CallResult, ReversalCall};
use super::reversal_method::Method;
use super::Reporter;
use crate::lifecycle::{OutcomeState, ReversalState};
use crate::metronome::event::body;
use crate::metronome::rules::{
    check_timestamp, correction_too_old_reason, manual_reason, reversal_event, TimestampCheck,
};
use crate::metronome::{MetricAggregation, OutcomeInput, UsageEvent};
use crate::store::{ClaimedReversal, ReversalAttempt, StoreError};
use crate::stripe::mode::StripeMode;
use crate::time::Millis;
use std::time::Duration;

/// How to reverse an outcome billed on Metronome (pure). A method already stored
/// is kept (it may have reached Metronome). Never sent: void. Recorded in a
/// dry-run, or reported while this process is one: record what would be sent.
/// Reported in this process's mode: a correcting event on a `sum` metric, else
/// [`Method::Manual`]. Reported in another mode: as on Stripe, a live outcome
/// waits for a live process, a test one has nothing billed here.
pub fn choose_metronome_method(
    stored: Option<&str>,
    outcome_state: OutcomeState,
    reported_in: Option<StripeMode>,
    mode: StripeMode,
    aggregation: MetricAggregation,
) -> Method {
    if let Some(m) = stored {
        return Method::parse(m).unwrap_or(Method::Manual);
    }
    let reported_in = reported_in.unwrap_or(mode);
    match outcome_state {
        OutcomeState::Pending | OutcomeState::Failed | OutcomeState::RejectedByStripe => {
            Method::Void
        }
        OutcomeState::DryRun => Method::DryRun,
        OutcomeState::Reported if reported_in == StripeMode::Live && mode != StripeMode::Live => {
            Method::WaitForLive
        }
        OutcomeState::Reported if mode == StripeMode::DryRun => Method::DryRun,
        OutcomeState::Reported if reported_in != mode => Method::Nothing,
        OutcomeState::Reported if aggregation == MetricAggregation::Sum => Method::Correction,
        OutcomeState::Reported => Method::Manual,
        // Never billed (capped), or taken back already.
        OutcomeState::Capped | OutcomeState::Voided | OutcomeState::Reversed => Method::Nothing,
    }
}

/// The outcome a reversal negates, as the correcting event is built from it.
fn reversed_outcome(r: &ClaimedReversal) -> OutcomeInput {
    OutcomeInput {
        id: r.outcome_id.clone(),
        customer_id: r.sink_target.clone().unwrap_or_default(),
        event_type: r.event_name.clone(),
        value: r.value,
        confirmed_at: Millis::EPOCH, // the correction is dated at the reversal, not the outcome
        ticket_id: r.identity.ticket_id.clone(),
        provider: r.identity.provider.clone(),
        seq: r.identity.seq,
        contract_hash: r.identity.contract_hash.clone(),
    }
}

impl Reporter {
    pub(super) async fn reverse_metronome(&self, r: &ClaimedReversal) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let aggregation = self.metronome_settings.aggregation(&r.event_name);
        let method = choose_metronome_method(
            r.method.as_deref(),
            r.outcome_state,
            r.outcome_reported_mode,
            self.mode,
            aggregation,
        );
        let done = |result: &'static str, dry_run: bool| ReversalAttempt {
            dry_run,
            ..self.reversal_done(r, now, method, result)
        };
        match method {
            Method::WaitForLive => {
                tracing::warn!(outcome = %r.outcome_id, mode = %self.mode, "clawback: the outcome was reported in live mode; only a live-mode process reverses it");
                self.store
                    .postpone_reversal(&r.outcome_id, now + Duration::from_secs(300))
                    .await
            }
            Method::Nothing | Method::Cancel => {
                self.store
                    .record_reversal_attempt(&done("nothing_to_reverse", false))
                    .await
            }
            Method::Void => {
                if self.store.void_outcome_if_idle(&r.outcome_id, now).await? {
                    tracing::info!(outcome = %r.outcome_id, "clawback: outcome voided before it was sent to Metronome");
                    self.store
                        .record_reversal_attempt(&done("voided_before_sending", false))
                        .await
                } else {
                    // A reporter holds it right now: look again when its lease ends.
                    let next =
                        r.outcome_lease_until.unwrap_or(now).max(now) + Duration::from_secs(1);
                    self.store.postpone_reversal(&r.outcome_id, next).await
                }
            }
            Method::DryRun => {
                let at_ms = Millis::from_ms(self.stripe_seconds(now) * 1000);
                let request = reversal_event(&reversed_outcome(r), at_ms, aggregation)
                    .map(|ev| body(std::slice::from_ref(&ev)))
                    .unwrap_or_default();
                let mut a = done("dry_run", true);
                a.request = &request;
                self.store.record_reversal_attempt(&a).await
            }
            Method::Manual => {
                let why = manual_reason(&r.event_name, aggregation);
                tracing::error!(outcome = %r.outcome_id, %why, "clawback: reversal parked as failed");
                let mut a = done("not_reversible", false);
                a.state = ReversalState::Failed;
                a.error = Some(&why);
                self.store.record_reversal_attempt(&a).await
            }
            Method::Correction => self.correct_at_metronome(r, now, aggregation).await,
            Method::UsageSet => {
                let mut a = done("not_reversible", false);
                a.state = ReversalState::Failed;
                a.error =
                    Some("a usage-record reversal stored for a Metronome event: credit by hand");
                self.store.record_reversal_attempt(&a).await
            }
        }
    }

    /// Send the correcting event, its timestamp fixed before the first request
    /// and reused on every resend (same `transaction_id`, same event).
    async fn correct_at_metronome(
        &self,
        r: &ClaimedReversal,
        now: Millis,
        aggregation: MetricAggregation,
    ) -> Result<(), StoreError> {
        let Some(client) = self.metronome.clone() else {
            tracing::warn!(outcome = %r.outcome_id, "clawback waits: metronome.api_token is not set in this process");
            return self
                .store
                .postpone_reversal(&r.outcome_id, now + Duration::from_secs(300))
                .await;
        };
        let Some((stored, stored_ts)) = self
            .store
            .start_reversal_call(
                &r.outcome_id,
                Method::Correction.as_str(),
                self.stripe_seconds(now),
            )
            .await?
        else {
            return Ok(()); // no longer pending: another reporter finished it
        };
        if Method::parse(&stored) != Ok(Method::Correction) {
            tracing::warn!(outcome = %r.outcome_id, method = %stored, "reversal method changed; planning again");
            return self.store.postpone_reversal(&r.outcome_id, now).await;
        }
        let seconds = stored_ts.unwrap_or(self.stripe_seconds(now));
        let at_ms = Millis::from_ms(seconds.saturating_mul(1000));
        let ev = match self.correcting_event(r, at_ms, aggregation) {
            Ok(ev) => ev,
            Err((result, why)) => {
                let attempt = ReversalAttempt {
                    error: Some(&why),
                    state: ReversalState::Failed,
                    stripe_timestamp: Some(seconds),
                    ..self.reversal_done(r, now, Method::Correction, result)
                };
                return self.store.record_reversal_attempt(&attempt).await;
            }
        };
        let request = body(std::slice::from_ref(&ev));
        self.metronome_limiter.acquire().await;
        let result = self
            .timed(
                "metronome_correction",
                client.ingest(std::slice::from_ref(&ev)),
            )
            .await;
        let answer = result.answer();
        let call = ReversalCall {
            outcome_id: &r.outcome_id,
            now,
            method: Method::Correction.as_str(),
            idempotency_key: None,
            request: &request,
            stripe_timestamp: Some(seconds),
        };
        let mut attempt = answer.reversal_attempt(&call, self.mode);
        self.next_step(answer.disposition, r.attempts, now)
            .end_reversal(&mut attempt);
        tracing::info!(outcome = %r.outcome_id, state = attempt.state.as_str(), "clawback correction sent to Metronome");
        self.store.record_reversal_attempt(&attempt).await
    }

    /// The correcting event of `r`, dated `at_ms`; or why none is sent, as the
    /// failed attempt's result and error: too old for Metronome (an earlier
    /// attempt may have been recorded: never resent at a new time), or not
    /// reversible.
    fn correcting_event(
        &self,
        r: &ClaimedReversal,
        at_ms: Millis,
        aggregation: MetricAggregation,
    ) -> Result<UsageEvent, (&'static str, String)> {
        if check_timestamp(at_ms, self.clock.world_now()) == TimestampCheck::TooOld {
            let why = correction_too_old_reason(at_ms, r.attempts > 0);
            tracing::error!(outcome = %r.outcome_id, %why, "clawback: correction parked as failed");
            return Err(("too_old", why));
        }
        reversal_event(&reversed_outcome(r), at_ms, aggregation)
            .map_err(|why| ("not_reversible", why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MetricAggregation::{Count, Sum};
    use OutcomeState::Reported;
    use StripeMode::{DryRun, Live, Test};

    #[test]
    fn never_sent_is_voided_and_a_stored_method_is_kept() {
        for state in [
            OutcomeState::Pending,
            OutcomeState::Failed,
            OutcomeState::RejectedByStripe,
        ] {
            assert_eq!(
                choose_metronome_method(None, state, None, Test, Sum),
                Method::Void
            );
        }
        assert_eq!(
            choose_metronome_method(Some("correction"), Reported, None, Test, Count),
            Method::Correction,
            "a correction possibly sent is never replanned"
        );
    }

    #[test]
    fn a_reported_outcome_is_corrected_only_on_a_sum_metric() {
        assert_eq!(
            choose_metronome_method(None, Reported, Some(Test), Test, Sum),
            Method::Correction
        );
        for agg in [
            Count,
            MetricAggregation::Max,
            MetricAggregation::Latest,
            MetricAggregation::Unique,
        ] {
            assert_eq!(
                choose_metronome_method(None, Reported, Some(Live), Live, agg),
                Method::Manual
            );
        }
    }

    #[test]
    fn modes_decide_as_on_stripe() {
        assert_eq!(
            choose_metronome_method(None, OutcomeState::DryRun, None, Live, Sum),
            Method::DryRun
        );
        assert_eq!(
            choose_metronome_method(None, Reported, Some(Test), DryRun, Sum),
            Method::DryRun
        );
        assert_eq!(
            choose_metronome_method(None, Reported, Some(Live), Test, Sum),
            Method::WaitForLive
        );
        assert_eq!(
            choose_metronome_method(None, Reported, Some(Test), Live, Sum),
            Method::Nothing
        );
        assert_eq!(
            choose_metronome_method(None, Reported, None, Live, Sum),
            Method::Correction,
            "a row without a mode is taken as this process's"
        );
        assert_eq!(
            choose_metronome_method(None, OutcomeState::Voided, None, Live, Sum),
            Method::Nothing
        );
        for state in [OutcomeState::Capped, OutcomeState::Reversed] {
            assert_eq!(
                choose_metronome_method(None, state, None, Live, Sum),
                Method::Nothing,
                "{state}"
            );
        }
    }
}
