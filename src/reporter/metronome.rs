//! The `metronome` sink: usage events (`POST /v1/ingest`), up to 100 a request,
//! deduplicated by Metronome on their `transaction_id` (the outcome id) for 34
//! days. The rules (batches, retries, the 34-day window) are pure, in
//! [`crate::metronome::rules`]; this module applies them to claimed outcomes.
//! See `docs/metronome.md`.
//!
//! What is recorded per outcome and call (`stripe_attempts`): the outcome's own
//! event as JSON (a batch is the array of these), the status and request id of
//! the batch's answer, and no idempotency key: Metronome dedupes on the
//! event's `transaction_id`, which is in the recorded request, and no
//! `Idempotency-Key` header is sent (a cached 500 would be replayed to every
//! retry). The mode is the process's (`stripe.mode`): Metronome's answers carry
//! no test/live flag; a Metronome sandbox is chosen by the token.

use super::attempt::{Answer, CallResult, Claimed, OutcomeCall};
use super::marks::Outstanding;
use super::{Reporter, Tasks};
use crate::metrics::ReportResult;
use crate::metronome::event::body;
use crate::metronome::rules::{
    ahead_reason, batches, check_timestamp, classify_batch, too_old_reason, BatchDisposition,
    Disposition, TimestampCheck, MAX_BATCH,
};
use crate::metronome::{MetronomeClient, MetronomeSettings, OutcomeInput, UsageEvent};
use crate::sink::Sink;
use crate::store::{ClaimedOutcome, SetAside, StoreError};
use crate::time::Millis;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Why outcomes frozen to Metronome wait when this process cannot reach it.
const NO_TOKEN: &str =
    "not sent: metronome.api_token is not set in this process (outcomes frozen to the \
                        metronome sink wait, unsent, for a process that has it)";

/// The Metronome client of a process that sends (`None` without a token).
pub(super) fn client_from(s: &MetronomeSettings) -> Option<MetronomeClient> {
    if s.token_problem().is_some() {
        return None;
    }
    match MetronomeClient::new(&s.api_base, &s.api_token, s.timeout) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the Metronome client; outcomes for Metronome wait");
            None
        }
    }
}

/// What the Metronome sink knows of an outcome, as its event is built from it.
pub(super) fn outcome_input(o: &ClaimedOutcome) -> OutcomeInput {
    OutcomeInput {
        id: o.id.clone(),
        // Missing: `UsageEvent::problem` parks it instead of sending it.
        customer_id: o.sink_target.clone().unwrap_or_default(),
        event_type: o.event_name.clone(),
        value: o.value,
        confirmed_at: o.confirmed_at,
        ticket_id: o.identity.ticket_id.clone(),
        provider: o.identity.provider.clone(),
        seq: o.identity.seq,
        contract_hash: o.identity.contract_hash.clone(),
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

/// A claimed outcome ready to be sent: its claim, the claim's current fencing
/// token (`lease_until`, renewed before a call), and its event.
struct Ready {
    o: ClaimedOutcome,
    token: Millis,
    ev: UsageEvent,
}

impl Reporter {
    /// Send usage events: the claimed outcomes in batches of up to 100 (any
    /// customers mixed: Metronome has no per-customer ordering to respect), each
    /// batch a task.
    pub(super) fn spawn_metronome(
        &self,
        claimed: Vec<ClaimedOutcome>,
        permits: &Arc<Semaphore>,
        tasks: &mut Tasks,
    ) {
        for chunk in batches(&claimed, MAX_BATCH) {
            let me = self.clone();
            let permits = permits.clone();
            let group = chunk.to_vec();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                me.send_to_metronome(group).await
            });
        }
    }

    async fn send_to_metronome(&self, group: Vec<ClaimedOutcome>) -> Result<(), StoreError> {
        if self.dry_run() {
            return self.record_metronome_dry_run(&group).await;
        }
        let ready = self.ready_for_metronome(group).await?;
        if ready.is_empty() {
            return Ok(());
        }
        let Some(client) = self.metronome.clone() else {
            let next = self.clock.now_ms() + Duration::from_secs(300);
            tracing::warn!(outcomes = ready.len(), sink = %Sink::Metronome, "{NO_TOKEN}");
            for r in &ready {
                self.set_aside(&r.o.id, r.token, NO_TOKEN, SetAside::RetryAt(next))
                    .await?;
            }
            return Ok(());
        };
        // A refused batch is sent again event by event; a single event is never split.
        let alone = self.ingest_batch(&client, ready).await?;
        for r in alone {
            self.ingest_batch(&client, vec![r]).await?;
        }
        Ok(())
    }

    /// Dry-run: record each event that would be sent, send nothing.
    async fn record_metronome_dry_run(&self, group: &[ClaimedOutcome]) -> Result<(), StoreError> {
        let mut marks = Outstanding::default();
        for o in group {
            let ev = UsageEvent::from_outcome(&outcome_input(o));
            let request = body(std::slice::from_ref(&ev));
            marks.push(self.hand_dry_run(o, &request).await);
        }
        marks.all_committed().await
    }

    /// Build each outcome's event and check it as Metronome would, before every
    /// send (resends included): an event Metronome's schema refuses, or one older
    /// than the 34 days it accepts, is parked with the reason; one ahead of the
    /// world's clock is held. Together with [`check_timestamp`]'s bounds this keeps
    /// every resend inside the 34-day dedupe window (`docs/metronome.md`).
    async fn ready_for_metronome(
        &self,
        group: Vec<ClaimedOutcome>,
    ) -> Result<Vec<Ready>, StoreError> {
        let world_now = self.clock.world_now();
        let mut ready = Vec::with_capacity(group.len());
        for o in group {
            let ev = UsageEvent::from_outcome(&outcome_input(&o));
            if let Some(reason) = ev.problem() {
                tracing::error!(outcome = %o.id, %reason, "usage event Metronome would refuse; parked as failed");
                self.metrics.count_report(ReportResult::Failed);
                self.set_aside(&o.id, o.lease_until, &reason, SetAside::Park)
                    .await?;
                continue;
            }
            match check_timestamp(ev.at_ms, world_now) {
                TimestampCheck::Acceptable => ready.push(Ready {
                    token: o.lease_until,
                    o,
                    ev,
                }),
                TimestampCheck::Ahead { ready_at } => {
                    // Check again within 5 minutes: a clock set right goes out then.
                    let wait = (ready_at - world_now)
                        .clamp(chrono::Duration::zero(), chrono::Duration::minutes(5));
                    let next = Millis::from(self.clock.now() + wait);
                    let reason = ahead_reason(ev.at_ms, world_now);
                    tracing::warn!(outcome = %o.id, %reason, "usage event held");
                    self.set_aside(&o.id, o.lease_until, &reason, SetAside::RetryAt(next))
                        .await?;
                }
                TimestampCheck::TooOld => {
                    let reason = too_old_reason(ev.at_ms, &o.id);
                    tracing::error!(outcome = %o.id, %reason, "usage event too old for Metronome; parked as failed");
                    self.metrics.count_report(ReportResult::Failed);
                    self.set_aside(&o.id, o.lease_until, &reason, SetAside::Park)
                        .await?;
                }
            }
        }
        Ok(ready)
    }

    /// One `POST /v1/ingest` with `batch`, and each outcome's attempt recorded.
    /// Returns the outcomes to send again one by one (a batch refused as a payload).
    async fn ingest_batch(
        &self,
        client: &MetronomeClient,
        batch: Vec<Ready>,
    ) -> Result<Vec<Ready>, StoreError> {
        let batch = self
            .still_held(batch, self.metronome_settings.timeout, "Metronome")
            .await?;
        if batch.is_empty() {
            return Ok(batch);
        }
        let events: Vec<UsageEvent> = batch.iter().map(|r| r.ev.clone()).collect();
        self.metronome_limiter.acquire().await;
        let result = self.timed("metronome_ingest", client.ingest(&events)).await;
        let now = self.clock.now_ms();
        let answer = result.answer();
        match classify_batch(&result, batch.len()) {
            BatchDisposition::Isolate => {
                self.log_split(&batch, &answer, now).await?;
                Ok(batch)
            }
            BatchDisposition::All(disposition) => {
                self.record_batch(&batch, &answer, disposition, now).await?;
                Ok(Vec::new())
            }
        }
    }

    /// Metronome refused the batch as a payload: log the call on each outcome (its
    /// state unchanged), to be sent again alone.
    async fn log_split(
        &self,
        batch: &[Ready],
        answer: &Answer,
        now: Millis,
    ) -> Result<(), StoreError> {
        tracing::warn!(events = batch.len(), error = ?answer.error, request_id = ?answer.request_id, "Metronome refused the batch; sending each event alone");
        for r in batch {
            let request = body(std::slice::from_ref(&r.ev));
            let call = OutcomeCall {
                outcome_id: &r.o.id,
                now,
                request: &request,
                idempotency_key: None,
            };
            self.log_call(&call, answer, "split").await?;
        }
        Ok(())
    }

    /// Record the answer on each outcome of the batch, as `disposition` says for
    /// every one of them (each with its own retry budget).
    async fn record_batch(
        &self,
        batch: &[Ready],
        answer: &Answer,
        disposition: Disposition,
        now: Millis,
    ) -> Result<(), StoreError> {
        // Every outcome's mark handed over, then all awaited: one group commit
        // for the batch's events, not one per event.
        let mut marks = Outstanding::default();
        for r in batch {
            let request = body(std::slice::from_ref(&r.ev));
            let call = OutcomeCall {
                outcome_id: &r.o.id,
                now,
                request: &request,
                idempotency_key: None,
            };
            let step = self.next_step(disposition, r.o.attempts, now);
            let parked = answer.error.as_deref();
            marks.push(
                self.hand_outcome_call(&call, answer, step, "accepted", parked)
                    .await,
            );
        }
        marks.all_committed().await?;
        let (error, request_id) = (&answer.error, &answer.request_id);
        match disposition {
            Disposition::Delivered => {
                tracing::info!(events = batch.len(), request_id = ?request_id, "reported to Metronome")
            }
            Disposition::Retry { .. } => {
                tracing::warn!(events = batch.len(), error = ?error, "Metronome call failed; will retry (parked once reporter.max_attempts is spent)")
            }
            Disposition::Permanent => {
                tracing::error!(events = batch.len(), error = ?error, request_id = ?request_id, "Metronome refused the events; parked as failed")
            }
        }
        Ok(())
    }
}
