//! The `stripe_meters` sink on Stripe's v2 meter event stream
//! (`stripe.meter_event_api = "v2_stream"`, [`crate::stripe::meter_stream`]): the
//! same events, checks and marks as [`super::meter_events`], up to 100 outcomes a
//! call, customers and meters mixed (the stream has no one-call-per-pair rule),
//! under a session token created when first needed and kept until a minute before
//! it expires.
//!
//! A batch refused as a whole for good is sent again event by event, so one bad
//! event never parks the others; an expired token is replaced and the batch sent
//! again once. Outcomes of tenants on a connected account go by v1
//! ([`super::meter_events`]).

use super::attempt::{CallResult, NextStep, OutcomeCall};
use super::marks::Outstanding;
use super::meter_events::meter_event;
use super::{Reporter, Tasks};
use crate::store::{ClaimedOutcome, StoreError};
use crate::stripe::client::{Ack, StripeError};
use crate::stripe::gate::Hold;
use crate::stripe::meter_stream::{self, is_session_expired, Session, MAX_EVENTS};
use crate::stripe::retry::{is_duplicate_identifier, Disposition};
use crate::stripe::StripeClient;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

/// The stream's host and the session in use, shared by the reporter's clones.
pub(super) struct Stream {
    base: String,
    /// The session, and when to stop using it.
    session: Mutex<Option<(Session, Instant)>>,
}

impl Stream {
    pub(super) fn new(base: &str) -> Stream {
        Stream {
            base: base.to_string(),
            session: Mutex::new(None),
        }
    }

    /// The session in use, or a new one (one at a time: concurrent batches wait
    /// for the same new session rather than each creating its own).
    async fn session(
        &self,
        reporter: &Reporter,
        client: &StripeClient,
    ) -> Result<Session, StripeError> {
        let mut current = self.session.lock().await;
        if let Some((s, until)) = current.as_ref() {
            if Instant::now() < *until {
                return Ok(s.clone());
            }
        }
        let s = reporter
            .timed("meter_event_session", client.create_meter_event_session())
            .await?;
        *current = Some((s.clone(), Instant::now() + s.usable_for));
        Ok(s)
    }

    /// Stripe said the session expired: the next call creates another.
    async fn forget(&self) {
        *self.session.lock().await = None;
    }
}

/// An outcome ready to go: its claim and its event, as sent and as recorded.
struct Ready {
    o: ClaimedOutcome,
    event: serde_json::Value,
    /// The outcome's own event as JSON: its attempt's `request`.
    request: String,
}

impl Reporter {
    /// Send meter events on the stream, up to [`MAX_EVENTS`] a call, each batch a
    /// task; outcomes of a connected account go by v1.
    pub(super) fn spawn_meter_stream(
        &self,
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
            let permits = permits.clone();
            let group = chunk.to_vec();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                me.stream_batch(group).await
            });
        }
    }

    async fn stream_batch(&self, group: Vec<ClaimedOutcome>) -> Result<(), StoreError> {
        let admitted = self.admitted_for_stream(group).await?;
        let mut marks = Outstanding::default();
        let Some(client) = self.client.clone() else {
            if !self.dry_run() {
                let held: Vec<ClaimedOutcome> = admitted.into_iter().map(|r| r.o).collect();
                return self.hold_without_stripe(&held).await;
            }
            for r in &admitted {
                marks.push(self.hand_dry_run(&r.o, &r.request).await);
            }
            return marks.all_committed().await;
        };
        let mut ready = Vec::with_capacity(admitted.len());
        for r in admitted {
            let timestamp = r.event_timestamp();
            if self.set_aside_unsendable(&r.o, timestamp).await?
                || !self.still_claimed(&r.o).await?
            {
                continue;
            }
            ready.push(r);
        }
        let result = match self.stream_call(&client, &ready, &mut marks).await {
            Ok(alone) => self.one_by_one(&client, &alone, &mut marks).await,
            Err(e) => Err(e),
        };
        let committed = marks.all_committed().await;
        result.and(committed)
    }

    /// The events of a batch refused as a whole, each in a call of its own, so
    /// only a bad one is parked.
    async fn one_by_one(
        &self,
        client: &StripeClient,
        alone: &[Ready],
        marks: &mut Outstanding,
    ) -> Result<(), StoreError> {
        for r in alone {
            self.stream_call(client, std::slice::from_ref(r), marks)
                .await?;
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
            match self.admit(None, &customer, &meter) {
                Ok(info) => ready.extend(outcomes.into_iter().map(|o| {
                    let event = meter_stream::event_json(&meter_event(&o, &info));
                    let request = event.to_string();
                    Ready { o, event, request }
                })),
                Err(hold) => held.push((customer, meter, outcomes, hold)),
            }
        }
        for (customer, meter, outcomes, hold) in held {
            self.hold_outcomes(&customer, &meter, &outcomes, &hold)
                .await?;
        }
        Ok(ready)
    }

    /// One stream call for `batch`, its marks handed to `marks`. Returns the
    /// events to send again one by one when the batch was refused as a whole.
    async fn stream_call(
        &self,
        client: &StripeClient,
        batch: &[Ready],
        marks: &mut Outstanding,
    ) -> Result<Vec<Ready>, StoreError> {
        let Some(stream) = self.stream.as_deref() else {
            return Ok(Vec::new());
        };
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        marks.check()?;
        let events: Vec<serde_json::Value> = batch.iter().map(|r| r.event.clone()).collect();
        let body = meter_stream::body(&events);
        let (mut result, mut sent) = self.send_stream(stream, client, body.clone()).await;
        if result.as_ref().is_err_and(is_session_expired) {
            stream.forget().await;
            (result, sent) = self.send_stream(stream, client, body).await;
        }
        let mut answer = result.answer();
        if !sent {
            // No session, so no event left: nothing Stripe may have counted.
            answer.in_doubt = false;
        }
        if result.as_ref().is_err_and(is_session_expired) {
            // Expired again at once: a clock or Stripe problem, not the events'.
            answer.disposition = Disposition::Retry { after: None };
        }
        let refused_whole = match &result {
            Err(e) if batch.len() > 1 => {
                answer.disposition == Disposition::Permanent || is_duplicate_identifier(e)
            }
            _ => false,
        };
        if refused_whole {
            tracing::warn!(events = batch.len(), error = ?answer.error, request_id = ?answer.request_id, "Stripe refused a meter event stream batch; sending its events one by one");
            return Ok(batch.iter().map(Ready::again).collect());
        }
        self.warn_other_mode(&batch[0].o.id, answer.livemode);
        let how = if result.is_ok() {
            "accepted"
        } else {
            "already_exists"
        };
        let now = self.clock.now_ms();
        let mut delivered = 0;
        for r in batch {
            let step = self.next_step(answer.disposition, r.o.attempts, now);
            match step {
                NextStep::Delivered => delivered += 1,
                NextStep::RetryAt { delay, .. } => {
                    tracing::warn!(outcome = %r.o.id, error = ?answer.error, retry_in = ?delay, "Stripe meter event stream call failed; will retry");
                }
                NextStep::Park { refused } => {
                    tracing::error!(outcome = %r.o.id, refused, error = ?answer.error, request_id = ?answer.request_id, attempts = r.o.attempts + 1, "meter event parked as failed (refused by Stripe, or the retry budget spent)");
                }
            }
            let call = OutcomeCall {
                outcome_id: &r.o.id,
                now,
                request: &r.request,
                idempotency_key: None,
            };
            marks.push(
                self.hand_outcome_call(&call, &answer, step, how, answer.error.as_deref())
                    .await,
            );
        }
        if delivered > 0 {
            tracing::info!(events = delivered, request_id = ?answer.request_id, "reported to Stripe (meter event stream)");
        }
        Ok(Vec::new())
    }

    /// One request on the stream, under the current session, and whether it was
    /// made (a session that cannot be created is the answer, and nothing was sent).
    async fn send_stream(
        &self,
        stream: &Stream,
        client: &StripeClient,
        body: String,
    ) -> (Result<Ack, StripeError>, bool) {
        self.limiter.acquire().await;
        let session = match stream.session(self, client).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a Stripe meter event session");
                return (Err(e), false);
            }
        };
        let result = self
            .timed(
                "meter_event_stream",
                client.send_meter_event_stream(&stream.base, &session, body),
            )
            .await;
        (result, true)
    }
}

impl Ready {
    fn again(&self) -> Ready {
        Ready {
            o: self.o.clone(),
            event: self.event.clone(),
            request: self.request.clone(),
        }
    }

    /// The event's timestamp, Unix seconds (the outcome's confirmation).
    fn event_timestamp(&self) -> i64 {
        self.o.confirmed_at.as_secs()
    }
}
