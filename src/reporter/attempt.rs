//! After a call to a billing system, the same for every sink and every reversal:
//! read the answer (status, request id, mode, error, whether it may have been
//! applied) by the rules of the API that gave it ([`CallResult`]), decide what
//! follows with the one retry budget and backoff ([`Reporter::next_step`]), and
//! record the attempt as that step ends it ([`Reporter::record_outcome_call`],
//! [`NextStep::end_reversal`]). Each sink keeps its requests, its fencing and
//! its words in the log.

use super::marks::PendingMark;
use super::Reporter;
use crate::lifecycle::{OutcomeState, ReversalState};
use crate::metrics::ReportResult;
use crate::metronome::{Ack as MetronomeAck, MetronomeError};
use crate::store::{OutcomeAttempt, OutcomeMark, ReversalAttempt, StoreError};
use crate::stripe::client::{Ack, StripeError};
use crate::stripe::mode::StripeMode;
use crate::stripe::retry::{backoff, Disposition};
use crate::stripe::usage_records::Recorded;
use crate::time::Millis;
use std::time::Duration;

/// What follows a call, from its disposition and the retry budget: one rule for
/// every sink and every reversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextStep {
    /// The billing system has it.
    Delivered,
    /// Call again at `at` (Unix ms), `delay` from now (capped exponential backoff
    /// with jitter, at least the billing system's `Retry-After`).
    RetryAt { at: Millis, delay: Duration },
    /// Parked as failed: refused (`refused`), or transient failures outlasted the
    /// retry budget (`reporter.max_attempts`).
    Park { refused: bool },
}

impl NextStep {
    /// A reversal's attempt as this step ends it: done (`accepted`), pending again
    /// at its time (`retry`), or failed (`failed`).
    pub(super) fn end_reversal(self, attempt: &mut ReversalAttempt<'_>) {
        match self {
            NextStep::Delivered => {
                attempt.result = "accepted";
                attempt.state = ReversalState::Done;
            }
            NextStep::RetryAt { at, .. } => {
                attempt.result = "retry";
                attempt.state = ReversalState::Pending;
                attempt.next_attempt_at = at;
            }
            NextStep::Park { .. } => {
                attempt.result = "failed";
                attempt.state = ReversalState::Failed;
            }
        }
    }
}

/// The answer to one call, as its attempt records it.
pub(super) struct Answer {
    pub(super) status_code: Option<u16>,
    pub(super) request_id: Option<String>,
    /// Stripe's `livemode` in its answer, when it answered (Metronome gives none).
    pub(super) livemode: Option<bool>,
    /// The error, in words (none for a 2xx).
    pub(super) error: Option<String>,
    /// The call may have been applied without a definite answer (none, or a 5xx).
    pub(super) in_doubt: bool,
    /// What the API's rules make of the answer.
    pub(super) disposition: Disposition,
}

/// A call's result, read by the rules of the API that answered it.
pub(super) trait CallResult {
    fn answer(&self) -> Answer;
}

impl CallResult for Result<Ack, StripeError> {
    fn answer(&self) -> Answer {
        use crate::stripe::retry::{classify, maybe_applied};
        Answer {
            status_code: stripe_status(self.as_ref()),
            request_id: stripe_request_id(self.as_ref()),
            livemode: self.as_ref().ok().and_then(|ack| ack.livemode),
            error: self.as_ref().err().map(|e| e.to_string()),
            in_doubt: maybe_applied(self),
            disposition: classify(self),
        }
    }
}

/// A usage record's create: Stripe's rules for usage records
/// ([`crate::stripe::usage_records::rules`]).
impl CallResult for Result<Recorded, StripeError> {
    fn answer(&self) -> Answer {
        use crate::stripe::usage_records::rules::{classify, maybe_applied};
        Answer {
            status_code: stripe_status(self.as_ref().map(|r| &r.ack)),
            request_id: stripe_request_id(self.as_ref().map(|r| &r.ack)),
            livemode: self.as_ref().ok().and_then(|r| r.ack.livemode),
            error: self.as_ref().err().map(|e| e.to_string()),
            in_doubt: maybe_applied(self),
            disposition: classify(self),
        }
    }
}

/// An ingest: Metronome's rules ([`crate::metronome::rules`]).
impl CallResult for Result<MetronomeAck, MetronomeError> {
    fn answer(&self) -> Answer {
        use crate::metronome::rules::{classify, maybe_applied};
        let (status_code, request_id) = match self {
            Ok(ack) => (Some(ack.status), ack.request_id.clone()),
            Err(e) => (e.status(), e.request_id().map(str::to_string)),
        };
        Answer {
            status_code,
            request_id,
            livemode: None,
            error: self.as_ref().err().map(|e| e.to_string()),
            in_doubt: maybe_applied(self),
            disposition: classify(self),
        }
    }
}

fn stripe_status(result: Result<&Ack, &StripeError>) -> Option<u16> {
    match result {
        Ok(ack) => Some(ack.status),
        Err(e) => e.status(),
    }
}

fn stripe_request_id(result: Result<&Ack, &StripeError>) -> Option<String> {
    match result {
        Ok(ack) => ack.request_id.clone(),
        Err(e) => e.request_id().map(str::to_string),
    }
}

/// One call on an outcome, as its attempt records it.
pub(super) struct OutcomeCall<'a> {
    pub(super) outcome_id: &'a str,
    /// When the answer came.
    pub(super) now: Millis,
    /// The outcome's own request (its event, for a batch).
    pub(super) request: &'a str,
    pub(super) idempotency_key: Option<&'a str>,
}

impl Answer {
    /// The attempt of `call`, answered so, made in `mode`: pending, with no result
    /// yet (its end is the caller's to set).
    pub(super) fn outcome_attempt<'a>(
        &'a self,
        call: &OutcomeCall<'a>,
        mode: StripeMode,
    ) -> OutcomeAttempt<'a> {
        OutcomeAttempt {
            outcome_id: call.outcome_id,
            now: call.now,
            mode,
            request: call.request,
            idempotency_key: call.idempotency_key,
            status_code: self.status_code,
            request_id: self.request_id.as_deref(),
            livemode: self.livemode,
            result: "",
            error: None,
            state: OutcomeState::Pending,
            next_attempt_at: call.now,
            in_doubt: self.in_doubt,
        }
    }
}

/// One call of a reversal, as its attempt records it.
pub(super) struct ReversalCall<'a> {
    pub(super) outcome_id: &'a str,
    /// When the answer came.
    pub(super) now: Millis,
    pub(super) method: &'a str,
    pub(super) idempotency_key: Option<&'a str>,
    pub(super) request: &'a str,
    /// The timestamp the reversing event carries, when it has one of its own.
    pub(super) stripe_timestamp: Option<i64>,
}

impl Answer {
    /// The attempt of reversal `call`, answered so, made in `mode`: done
    /// (`accepted`) until [`NextStep::end_reversal`] says otherwise.
    pub(super) fn reversal_attempt<'a>(
        &'a self,
        call: &ReversalCall<'a>,
        mode: StripeMode,
    ) -> ReversalAttempt<'a> {
        ReversalAttempt {
            outcome_id: call.outcome_id,
            now: call.now,
            method: call.method,
            dry_run: false,
            mode,
            livemode: self.livemode,
            idempotency_key: call.idempotency_key,
            request: call.request,
            status_code: self.status_code,
            request_id: self.request_id.as_deref(),
            result: "accepted",
            error: self.error.as_deref(),
            state: ReversalState::Done,
            next_attempt_at: call.now,
            stripe_timestamp: call.stripe_timestamp,
            in_doubt: self.in_doubt,
        }
    }
}

/// A claimed outcome on its way into a batch call, with the fencing token its
/// claim holds (`lease_until`, renewed before a call).
pub(super) trait Claimed {
    fn outcome_id(&self) -> &str;
    fn token(&mut self) -> &mut Millis;
}

impl Reporter {
    /// Fencing for a batch: keep only the outcomes this claim still holds for a
    /// whole call of up to `timeout`, renewing a lease that might not outlast it
    /// (the sink's timeout is shorter than `worker.lease`, so one renewal
    /// suffices). A lost claim (lease expired, outcome voided) is left out of the
    /// call, with a warning naming `callee`.
    pub(super) async fn still_held<T: Claimed>(
        &self,
        batch: Vec<T>,
        timeout: Duration,
        callee: &str,
    ) -> Result<Vec<T>, StoreError> {
        let now = self.clock.now_ms();
        let needed = timeout * 2;
        let mut held = Vec::with_capacity(batch.len());
        for mut r in batch {
            if *r.token() >= now + needed {
                held.push(r);
                continue;
            }
            let until = now + self.lease;
            let token = *r.token();
            if self
                .store
                .renew_outcome_lease(r.outcome_id(), token, until)
                .await?
            {
                *r.token() = until;
                held.push(r);
            } else {
                tracing::warn!(outcome = %r.outcome_id(), callee, "claim lost before the call (lease expired or outcome voided); not sent");
            }
        }
        Ok(held)
    }

    /// [`NextStep`] after a call answered as `disposition`, with `attempts`
    /// failed calls already spent from the budget.
    pub(crate) fn next_step(
        &self,
        disposition: Disposition,
        attempts: u32,
        now: Millis,
    ) -> NextStep {
        match disposition {
            Disposition::Delivered => NextStep::Delivered,
            Disposition::Retry { after } if attempts + 1 < self.settings.max_attempts => {
                let delay = backoff(
                    attempts,
                    self.settings.backoff_base,
                    self.settings.backoff_max,
                    after,
                    fastrand::f64(),
                );
                NextStep::RetryAt {
                    at: now + delay,
                    delay,
                }
            }
            Disposition::Retry { .. } => NextStep::Park { refused: false },
            Disposition::Permanent => NextStep::Park { refused: true },
        }
    }

    /// Count (`/metrics`) and record the attempt of `call`, answered as `answer`,
    /// as `step` ends it: reported (`delivered` says how), pending again at its
    /// time with the answer's error, or failed with `parked` as its error.
    /// Returns once it is committed (in a group commit with other marks).
    pub(super) async fn record_outcome_call<'a>(
        &self,
        call: &OutcomeCall<'a>,
        answer: &'a Answer,
        step: NextStep,
        delivered: &'a str,
        parked: Option<&'a str>,
    ) -> Result<(), StoreError> {
        self.hand_outcome_call(call, answer, step, delivered, parked)
            .await
            .committed()
            .await
    }

    /// [`Reporter::record_outcome_call`] handed to the group commit, not
    /// awaited: the caller awaits the mark before it gives its claim up.
    pub(super) async fn hand_outcome_call<'a>(
        &self,
        call: &OutcomeCall<'a>,
        answer: &'a Answer,
        step: NextStep,
        delivered: &'a str,
        parked: Option<&'a str>,
    ) -> PendingMark {
        let attempt = answer.outcome_attempt(call, self.mode);
        let attempt = match step {
            NextStep::Delivered => {
                self.metrics.count_report(ReportResult::Reported);
                OutcomeAttempt {
                    result: delivered,
                    state: OutcomeState::Reported,
                    ..attempt
                }
            }
            NextStep::RetryAt { at, .. } => {
                self.metrics.count_report(ReportResult::Retried);
                OutcomeAttempt {
                    result: "retry",
                    error: answer.error.as_deref(),
                    state: OutcomeState::Pending,
                    next_attempt_at: at,
                    ..attempt
                }
            }
            NextStep::Park { .. } => {
                self.metrics.count_report(ReportResult::Failed);
                OutcomeAttempt {
                    result: "failed",
                    error: parked,
                    state: OutcomeState::Failed,
                    ..attempt
                }
            }
        };
        self.marks()
            .hand(OutcomeMark::Attempt(attempt.to_owned_attempt()))
            .await
    }

    /// A call that leaves the outcome as it was, logged on it as `result`: a
    /// batch refused as a payload, to be sent again alone (`split`); a stream
    /// call refused because its session expired (`session_expired`, sent again
    /// at once under a new one). No attempt is spent.
    pub(super) async fn log_call(
        &self,
        call: &OutcomeCall<'_>,
        answer: &Answer,
        result: &str,
    ) -> Result<(), StoreError> {
        self.store
            .log_attempt(&OutcomeAttempt {
                result,
                error: answer.error.as_deref(),
                // Not moved: `log_attempt` only logs the call.
                state: OutcomeState::Pending,
                ..answer.outcome_attempt(call, self.mode)
            })
            .await
    }

    /// Stripe's answer says another mode than the process's (`stripe.mode`): say
    /// so; the attempt is recorded as Stripe says.
    pub(super) fn warn_other_mode(&self, outcome_id: &str, livemode: Option<bool>) {
        if livemode.is_some_and(|live| StripeMode::from_livemode(live) != self.mode) {
            tracing::error!(outcome = %outcome_id, mode = %self.mode, ?livemode, "Stripe answered in the other mode than stripe.mode; recorded as Stripe says");
        }
    }
}
