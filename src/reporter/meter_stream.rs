//! The `stripe_meters` sink on Stripe's v2 meter event stream
//! (`stripe.meter_event_api = "v2_stream"`, [`crate::stripe::meter_stream`]): the
//! same events as [`super::meter_events`], up to 100 outcomes a call, customers
//! and meters mixed (the stream has no one-call-per-pair rule), under a session
//! token created when first needed and kept until a minute before it expires.
//!
//! - Fencing as for Metronome's batches: every lease that might not outlast the
//!   call is renewed right before it (after the rate limit and the session), and
//!   an outcome whose claim was lost is left out of the call.
//! - No session (Stripe refused or did not answer its creation): nothing is sent,
//!   the batch is held, pending, without spending an attempt, and tried again a
//!   minute later; a failed creation is remembered for ten seconds, so the other
//!   batches waiting for it are held at once.
//! - A 401 (an expired token or any other) drops the session: an expired one is
//!   replaced and the batch sent again at once; any other 401 is retried later
//!   (an attempt spent). A 403 or 404 (the stream's host, the key's access) holds
//!   the batch as when there is no session.
//! - A batch refused as a payload (400, 413, 422) is logged on each outcome
//!   (`split`) and sent again event by event, so only an event Stripe refuses on
//!   its own is parked. Other answers apply to every event of the batch, as for
//!   v1 ([`crate::stripe::meter_stream::classify_batch`]).
//! - Connected accounts (`stripe_account`) go by v1.

use super::attempt::{Answer, CallResult, Claimed, NextStep, OutcomeCall};
use super::marks::Outstanding;
use super::meter_events::meter_event;
use super::rate_limit::RateLimiter;
use super::{Reporter, Tasks};
use crate::metrics::ReportResult;
use crate::store::{ClaimedOutcome, SetAside, StoreError};
use crate::stripe::client::{Ack, StripeError};
use crate::stripe::gate::Hold;
use crate::stripe::meter_stream::{
    self, classify_batch, is_session_expired, BatchDisposition, Session, MAX_EVENTS,
};
use crate::stripe::retry::Disposition;
use crate::stripe::StripeClient;
use crate::time::Millis;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};

/// How long a batch with no session waits before it is tried again.
const NO_SESSION_HOLD: Duration = Duration::from_secs(60);
/// How long a failed session creation answers for the batches that wait on it.
const FAILED_SESSION_KEPT: Duration = Duration::from_secs(10);

/// The stream's host, its rate limit and the session in use, shared by the
/// reporter's clones.
pub(super) struct Stream {
    base: String,
    /// Calls on the stream per second (`reporter.stream_rate_per_second`), apart
    /// from v1's budget.
    limiter: RateLimiter,
    slot: Mutex<Slot>,
}

/// Times are the reporter's clock (so tests can move them).
#[derive(Default)]
struct Slot {
    /// The session, for as long as it may be used.
    current: Option<Kept<Session>>,
    /// The last failed creation's words, for as long as they are the answer.
    failed: Option<Kept<String>>,
}

/// A value good from `from` until just before `until`. A clock stepped back
/// before `from` ends it too: it would otherwise be kept for the step's length
/// on top of its own.
struct Kept<T> {
    value: T,
    from: Millis,
    until: Millis,
}

impl<T> Kept<T> {
    fn new(value: T, from: Millis, kept: Duration) -> Kept<T> {
        Kept {
            value,
            from,
            until: from + kept,
        }
    }

    fn at(&self, now: Millis) -> Option<&T> {
        (self.from <= now && now < self.until).then_some(&self.value)
    }
}

impl Stream {
    pub(super) fn new(base: &str, rate_per_second: f64) -> Stream {
        Stream {
            base: base.to_string(),
            limiter: RateLimiter::new(rate_per_second),
            slot: Mutex::new(Slot::default()),
        }
    }

    /// The session in use, or a new one, or why there is none. One creation at a
    /// time: concurrent batches wait for the same new session (or failure).
    async fn session(&self, reporter: &Reporter, client: &StripeClient) -> Result<Session, String> {
        let mut slot = self.slot.lock().await;
        let now = reporter.clock.now_ms();
        if let Some(s) = slot.current.as_ref().and_then(|k| k.at(now)) {
            return Ok(s.clone());
        }
        if let Some(why) = slot.failed.as_ref().and_then(|k| k.at(now)) {
            return Err(why.clone());
        }
        let created = reporter
            .timed("meter_event_session", client.create_meter_event_session())
            .await;
        match created {
            Ok(s) => {
                slot.current = Some(Kept::new(s.clone(), reporter.clock.now_ms(), s.usable_for));
                slot.failed = None;
                Ok(s)
            }
            Err(e) => {
                let why = format!("cannot create a Stripe meter event session: {e}");
                tracing::error!(error = %e, request_id = ?e.request_id(), "cannot create a Stripe meter event session; meter events held");
                slot.failed = Some(Kept::new(
                    why.clone(),
                    reporter.clock.now_ms(),
                    FAILED_SESSION_KEPT,
                ));
                Err(why)
            }
        }
    }

    /// Stripe refused `stale`'s token: the next call creates another session
    /// (unless another batch has already replaced it).
    async fn forget(&self, stale: &Session) {
        let mut slot = self.slot.lock().await;
        if slot.current.as_ref().is_some_and(|k| k.value.is(stale)) {
            slot.current = None;
        }
    }
}

/// An outcome ready to go: its claim, the claim's current fencing token
/// (`lease_until`, renewed before a call), and its event.
struct Ready {
    o: ClaimedOutcome,
    token: Millis,
    /// The event's timestamp, Unix seconds (checked against Stripe's window).
    timestamp: i64,
    /// The outcome's own event as JSON: what the call carries, and its
    /// attempt's `request`.
    request: String,
}

impl Ready {
    /// The call on this outcome, answered at `now`, as its attempt records it.
    fn call(&self, now: Millis) -> OutcomeCall<'_> {
        OutcomeCall {
            outcome_id: &self.o.id,
            now,
            request: &self.request,
            idempotency_key: None,
        }
    }
}

impl Reporter {
    /// Send meter events on the stream, up to [`MAX_EVENTS`] a call, each batch a
    /// task; outcomes of a connected account go by v1.
    pub(super) fn spawn_meter_stream(
        &self,
        stream: &Arc<Stream>,
        claimed: Vec<ClaimedOutcome>,
        permits: &Arc<Semaphore>,
        tasks: &mut Tasks,
    ) {
        let (connect, own): (Vec<_>, Vec<_>) = claimed
            .into_iter()
            .partition(|o| o.stripe_account.is_some());
        if !connect.is_empty() {
            self.spawn_meter_events(connect, permits, tasks);
        }
        for chunk in own.chunks(MAX_EVENTS) {
            let me = self.clone();
            let stream = stream.clone();
            let permits = permits.clone();
            let group = chunk.to_vec();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                me.stream_batch(&stream, group).await
            });
        }
    }

    async fn stream_batch(
        &self,
        stream: &Stream,
        group: Vec<ClaimedOutcome>,
    ) -> Result<(), StoreError> {
        let admitted = self.admitted_for_stream(group).await?;
        let Some(client) = self.client.clone() else {
            if !self.dry_run() {
                let held: Vec<ClaimedOutcome> = admitted.into_iter().map(|r| r.o).collect();
                return self.hold_without_stripe(&held).await;
            }
            let mut marks = Outstanding::default();
            for r in &admitted {
                marks.push(self.hand_dry_run(&r.o, &r.request).await);
            }
            return marks.all_committed().await;
        };
        let mut ready = Vec::with_capacity(admitted.len());
        for r in admitted {
            if !self.set_aside_unsendable(&r.o, r.timestamp).await? {
                ready.push(r);
            }
        }
        let alone = self.stream_send(stream, &client, ready).await?;
        for r in alone {
            self.stream_send(stream, &client, vec![r]).await?;
        }
        Ok(())
    }

    /// The outcomes the Stripe preflight admits, with their events; the others are
    /// held (pending, no attempt spent) with its reason.
    async fn admitted_for_stream(
        &self,
        group: Vec<ClaimedOutcome>,
    ) -> Result<Vec<Ready>, StoreError> {
        let mut pairs: BTreeMap<(String, String), Vec<ClaimedOutcome>> = BTreeMap::new();
        for o in group {
            pairs
                .entry((o.stripe_customer_id.clone(), o.event_name.clone()))
                .or_default()
                .push(o);
        }
        let mut ready = Vec::new();
        let mut held: Vec<(String, String, Vec<ClaimedOutcome>, Hold)> = Vec::new();
        for ((customer, meter), outcomes) in pairs {
            let info = match self.admit(None, &customer, &meter) {
                Ok(info) => info,
                Err(hold) => {
                    held.push((customer, meter, outcomes, hold));
                    continue;
                }
            };
            for o in outcomes {
                let ev = meter_event(&o, &info);
                let Some(request) = meter_stream::event_json(&ev) else {
                    let reason = format!(
                        "timestamp {} has no date: no meter event can carry it",
                        ev.timestamp
                    );
                    tracing::error!(outcome = %o.id, %reason, "parked as failed");
                    self.metrics.count_report(ReportResult::Failed);
                    self.set_aside(&o.id, o.lease_until, &reason, SetAside::Park)
                        .await?;
                    continue;
                };
                ready.push(Ready {
                    token: o.lease_until,
                    timestamp: ev.timestamp,
                    o,
                    request,
                });
            }
        }
        for (customer, meter, outcomes, hold) in held {
            self.hold_outcomes(&customer, &meter, &outcomes, &hold)
                .await?;
        }
        Ok(ready)
    }

    /// One stream call for `batch` (a second one under a new session when Stripe
    /// says the token expired), each outcome's attempt recorded. Returns the
    /// events to send again one by one (the batch was refused as a payload).
    async fn stream_send(
        &self,
        stream: &Stream,
        client: &StripeClient,
        batch: Vec<Ready>,
    ) -> Result<Vec<Ready>, StoreError> {
        if batch.is_empty() {
            return Ok(batch);
        }
        let (batch, mut result) = match self.stream_call(stream, client, batch).await? {
            Call::Made(batch, result) => (batch, result),
            Call::Nothing => return Ok(Vec::new()),
        };
        let batch = match &result {
            Err(e) if is_session_expired(e) => {
                let refused = result.answer();
                self.log_stream_calls(&batch, &refused, self.clock.now_ms(), "session_expired")
                    .await?;
                match self.stream_call(stream, client, batch).await? {
                    Call::Made(batch, again) => {
                        result = again;
                        batch
                    }
                    Call::Nothing => return Ok(Vec::new()),
                }
            }
            _ => batch,
        };
        let answer = result.answer();
        let now = self.clock.now_ms();
        match classify_batch(&result, batch.len()) {
            BatchDisposition::Hold => {
                let why = format!(
                    "the meter event stream refused the request ({}): check stripe.meter_events_api_base and the key's access",
                    answer.error.as_deref().unwrap_or("no message")
                );
                tracing::error!(events = batch.len(), request_id = ?answer.request_id, "{why}; meter events held");
                self.hold_without_session(&batch, &why).await?;
                Ok(Vec::new())
            }
            BatchDisposition::Isolate => {
                tracing::warn!(events = batch.len(), error = ?answer.error, request_id = ?answer.request_id, "Stripe refused a meter event stream batch; sending each event alone");
                self.log_stream_calls(&batch, &answer, now, "split").await?;
                Ok(batch)
            }
            BatchDisposition::All(disposition) => {
                self.record_stream_batch(&batch, &result, &answer, disposition, now)
                    .await?;
                Ok(Vec::new())
            }
        }
    }

    /// Make one call: wait for the rate limit and the session, keep only the
    /// outcomes whose claims hold for the call, send them. Without a session the
    /// batch is held and nothing is sent.
    async fn stream_call(
        &self,
        stream: &Stream,
        client: &StripeClient,
        batch: Vec<Ready>,
    ) -> Result<Call, StoreError> {
        let session = match stream.session(self, client).await {
            Ok(s) => s,
            Err(why) => {
                self.hold_without_session(&batch, &why).await?;
                return Ok(Call::Nothing);
            }
        };
        stream.limiter.acquire().await;
        let batch = self
            .still_held(batch, self.call_timeout, "Stripe meter event stream")
            .await?;
        if batch.is_empty() {
            return Ok(Call::Nothing);
        }
        let result = self
            .timed(
                "meter_event_stream",
                client.send_meter_event_stream(
                    &stream.base,
                    &session,
                    meter_stream::body(batch.iter().map(|r| r.request.as_str())),
                ),
            )
            .await;
        if result
            .as_ref()
            .is_err_and(|e| is_session_expired(e) || matches!(e.status(), Some(401 | 403 | 404)))
        {
            stream.forget(&session).await;
        }
        Ok(Call::Made(batch, result))
    }

    /// No session, or a stream that refused the request itself: give the batch
    /// back, pending, no attempt spent, with the reason.
    async fn hold_without_session(&self, batch: &[Ready], why: &str) -> Result<(), StoreError> {
        self.metrics.outcomes_held("stream_session", batch.len());
        let next = self.clock.now_ms() + NO_SESSION_HOLD;
        let reason = format!("held, nothing sent: {why}");
        let claims: Vec<(&str, Millis)> =
            batch.iter().map(|r| (r.o.id.as_str(), r.token)).collect();
        self.hold_all(&claims, &reason, next).await
    }

    /// A call that leaves the batch's outcomes as they were (see
    /// [`Reporter::log_call`]): logged on each, as `result`.
    async fn log_stream_calls(
        &self,
        batch: &[Ready],
        answer: &Answer,
        now: Millis,
        result: &str,
    ) -> Result<(), StoreError> {
        for r in batch {
            self.log_call(&r.call(now), answer, result).await?;
        }
        Ok(())
    }

    /// Record the answer on each outcome of the batch, as `disposition` says for
    /// every one of them (each with its own retry budget), in one group commit.
    async fn record_stream_batch(
        &self,
        batch: &[Ready],
        result: &Result<Ack, StripeError>,
        answer: &Answer,
        disposition: Disposition,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.warn_other_mode(&batch[0].o.id, answer.livemode);
        // Delivered on an error: Stripe already had this one event's identifier.
        let how = if result.is_ok() {
            "accepted"
        } else {
            "already_exists"
        };
        let mut marks = Outstanding::default();
        for r in batch {
            let call = r.call(now);
            let step = self.next_step(disposition, r.o.attempts, now);
            if let NextStep::Park { refused } = step {
                tracing::error!(outcome = %r.o.id, refused, error = ?answer.error, request_id = ?answer.request_id, attempts = r.o.attempts + 1, "meter event parked as failed (refused by Stripe, or reporter.max_attempts spent)");
            }
            marks.push(
                self.hand_outcome_call(&call, answer, step, how, answer.error.as_deref())
                    .await,
            );
        }
        marks.all_committed().await?;
        let (error, request_id) = (&answer.error, &answer.request_id);
        match disposition {
            Disposition::Delivered => {
                tracing::info!(events = batch.len(), request_id = ?request_id, "reported to Stripe (meter event stream)");
            }
            Disposition::Retry { .. } => {
                tracing::warn!(events = batch.len(), error = ?error, request_id = ?request_id, "Stripe meter event stream call failed; will retry");
            }
            Disposition::Permanent => {
                tracing::error!(events = batch.len(), error = ?error, request_id = ?request_id, "Stripe refused the meter event stream call; its events are parked as failed");
            }
        }
        Ok(())
    }
}

impl Claimed for Ready {
    fn outcome_id(&self) -> &str {
        &self.o.id
    }

    fn token(&mut self) -> &mut Millis {
        &mut self.token
    }
}

/// What [`Reporter::stream_call`] did.
enum Call {
    /// Sent these outcomes (the others' claims were lost), answered so.
    Made(Vec<Ready>, Result<Ack, StripeError>),
    /// Sent nothing (no session: the batch is held; or no claim held).
    Nothing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_value_lasts_its_time_and_no_longer_after_a_clock_step_back() {
        let t = Millis::from_ms(1_000_000);
        let k = Kept::new("why", t, FAILED_SESSION_KEPT);
        assert_eq!(k.at(t), Some(&"why"));
        assert_eq!(k.at(t + Duration::from_millis(9_999)), Some(&"why"));
        assert_eq!(k.at(t + FAILED_SESSION_KEPT), None, "ten seconds, not more");
        // The clock stepped back an hour: not an hour and ten seconds more.
        assert_eq!(k.at(Millis::from_ms(1_000_000 - 3_600_000)), None);
    }
}
