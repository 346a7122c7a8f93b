//! Drains the outbox to Stripe: one call at a time per (customer, meter),
//! different pairs concurrently, never above the configured rate.

use super::client::{cancel_form, Ack, MeterEvent, StripeClient, StripeError};
use super::retry::{backoff, classify, Disposition};
use crate::clock::{to_millis, SharedClock};
use crate::metrics::{Metrics, ReportResult};
use crate::outcome::idempotency_key;
use crate::settings::ReporterSettings;
use crate::store::{ClaimedOutcome, ClaimedReversal, ReversalAttempt, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

/// Spaces calls at least `1 / rate` seconds apart, across all tasks.
#[derive(Debug)]
struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    fn new(rate_per_second: f64) -> Self {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / rate_per_second.max(0.001)),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[derive(Clone)]
pub struct Reporter {
    store: Store,
    /// `None`: dry-run (no API key): record what would be sent.
    client: Option<StripeClient>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    settings: ReporterSettings,
    lease: Duration,
    /// The Stripe client's timeout: a claim must outlast a call.
    call_timeout: Duration,
    limiter: Arc<RateLimiter>,
}

impl Reporter {
    pub fn new(
        store: Store,
        client: Option<StripeClient>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        settings: ReporterSettings,
        lease: Duration,
        call_timeout: Duration,
    ) -> Reporter {
        let limiter = Arc::new(RateLimiter::new(settings.rate_per_second));
        Reporter {
            store,
            client,
            clock,
            metrics,
            settings,
            lease,
            call_timeout,
            limiter,
        }
    }

    pub fn dry_run(&self) -> bool {
        self.client.is_none()
    }

    /// Report everything due now. Returns how many outcomes were attempted.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Report one batch of outcomes, then process one batch of reversals.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        // Reversals first: an outcome clawed back before it was sent is voided, never sent.
        let reversed = self.reverse_batch().await?;
        let reported = self.report_batch().await?;
        Ok(reported + reversed)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Claim one batch of outcomes and report it.
    async fn report_batch(&self) -> Result<usize, StoreError> {
        let now = to_millis(self.clock.now());
        let claimed = self
            .store
            .claim_outcomes(now, now + self.lease_ms(), self.settings.batch_size)
            .await?;
        let n = claimed.len();
        let mut groups: BTreeMap<(String, String), Vec<ClaimedOutcome>> = BTreeMap::new();
        for o in claimed {
            groups
                .entry((o.stripe_customer_id.clone(), o.event_name.clone()))
                .or_default()
                .push(o);
        }
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for ((customer, meter), group) in groups {
            let me = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                // One process at a time per pair (other replicas on PostgreSQL).
                let Some(lock) = me.store.try_lock_pair(&customer, &meter).await? else {
                    let claims: Vec<(String, i64)> = group
                        .iter()
                        .map(|o| (o.id.clone(), o.lease_until))
                        .collect();
                    return me.store.release_outcomes(&claims).await;
                };
                let mut result = Ok(());
                for o in &group {
                    result = me.report_one(o).await;
                    if result.is_err() {
                        break;
                    }
                }
                lock.release().await;
                result
            });
        }
        let mut first_err = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err
                        .get_or_insert(StoreError::corrupt(format!("reporter task failed: {e}")));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    async fn report_one(&self, o: &ClaimedOutcome) -> Result<(), StoreError> {
        let ev = MeterEvent {
            event_name: o.event_name.clone(),
            stripe_customer_id: o.stripe_customer_id.clone(),
            value: o.value,
            identifier: o.id.clone(),
            timestamp: o.confirmed_at.div_euclid(1000),
        };
        let request = ev.encoded();
        let Some(client) = &self.client else {
            let now = to_millis(self.clock.now());
            self.metrics.report(ReportResult::DryRun);
            return self
                .store
                .record_attempt(
                    &o.id, now, true, &request, None, None, "dry_run", None, "dry_run", now,
                )
                .await;
        };
        self.limiter.acquire().await;
        // Fencing: call only while this claim still holds the outcome. While the
        // lease outlasts the call, nobody else can have claimed or voided it (both
        // need an expired lease); when it may not, renew it, only if still ours
        // (stripe.timeout < worker.lease is enforced, so a renewal always suffices).
        let now = to_millis(self.clock.now());
        let needed = i64::try_from((self.call_timeout * 2).as_millis()).unwrap_or(i64::MAX / 4);
        if o.lease_until - now < needed
            && !self
                .store
                .renew_outcome_lease(&o.id, o.lease_until, now + self.lease_ms())
                .await?
        {
            tracing::warn!(outcome = %o.id, "claim lost before the Stripe call (lease expired or outcome voided); not sent");
            return Ok(());
        }
        let result = client
            .create_meter_event(&ev, &idempotency_key(&o.id, "meter_event"))
            .await;
        let now = to_millis(self.clock.now());
        let (status, request_id) = match &result {
            Ok(ack) => (Some(ack.status), ack.request_id.clone()),
            Err(e) => (e.status(), e.request_id().map(str::to_string)),
        };
        let error_text = result.as_ref().err().map(|e| e.to_string());
        match classify(&result) {
            Disposition::Delivered => {
                let how = match &result {
                    Ok(ack) if ack.replayed => "replayed",
                    Ok(_) => "accepted",
                    Err(_) => "already_exists",
                };
                tracing::info!(outcome = %o.id, how, request_id = ?request_id, "reported to Stripe");
                self.metrics.report(ReportResult::Reported);
                self.store
                    .record_attempt(
                        &o.id,
                        now,
                        false,
                        &request,
                        status,
                        request_id.as_deref(),
                        how,
                        None,
                        "reported",
                        now,
                    )
                    .await
            }
            Disposition::Retry { after } if o.attempts + 1 < self.settings.max_attempts => {
                let delay = backoff(
                    o.attempts,
                    self.settings.backoff_base,
                    self.settings.backoff_max,
                    after,
                    fastrand::f64(),
                );
                let next = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 4);
                tracing::warn!(outcome = %o.id, error = ?error_text, retry_in = ?delay, "Stripe call failed; will retry");
                self.metrics.report(ReportResult::Retried);
                self.store
                    .record_attempt(
                        &o.id,
                        now,
                        false,
                        &request,
                        status,
                        request_id.as_deref(),
                        "retry",
                        error_text.as_deref(),
                        "pending",
                        next,
                    )
                    .await
            }
            Disposition::Retry { .. } | Disposition::Permanent => {
                let why = match &result {
                    Err(StripeError::Api { .. }) | Err(StripeError::Network(_)) => {
                        error_text.clone()
                    }
                    Ok(_) => None,
                };
                tracing::error!(outcome = %o.id, error = ?why, request_id = ?request_id, "Stripe refused the event; parked as failed");
                self.metrics.report(ReportResult::Failed);
                self.store
                    .record_attempt(
                        &o.id,
                        now,
                        false,
                        &request,
                        status,
                        request_id.as_deref(),
                        "failed",
                        why.as_deref(),
                        "failed",
                        now,
                    )
                    .await
            }
        }
    }
}

/// Stripe lets an event be cancelled within 24 hours of receiving it; keep a margin.
const CANCEL_WINDOW_MS: i64 = 23 * 3_600_000;

impl Reporter {
    /// Claim one batch of clawback reversals and carry them out.
    async fn reverse_batch(&self) -> Result<usize, StoreError> {
        let now = to_millis(self.clock.now());
        let claimed = self
            .store
            .claim_reversals(now, now + self.lease_ms(), self.settings.batch_size)
            .await?;
        for r in &claimed {
            self.reverse_one(r).await?;
        }
        Ok(claimed.len())
    }

    /// The method is chosen once, from the outcome's state, and then kept.
    fn choose_method(&self, r: &ClaimedReversal, now: i64) -> &'static str {
        match r.method.as_deref() {
            Some("void") => "void",
            Some("cancel") => "cancel",
            Some("correction") => "correction",
            Some("dry_run") => "dry_run",
            Some(_) => "none",
            None => match r.outcome_state.as_str() {
                "pending" | "failed" => "void",
                "dry_run" => "dry_run",
                "reported" if self.client.is_none() => "dry_run",
                "reported" => {
                    let age = now - r.outcome_reported_at.unwrap_or(now);
                    if age < CANCEL_WINDOW_MS {
                        "cancel"
                    } else {
                        "correction"
                    }
                }
                _ => "none",
            },
        }
    }

    async fn reverse_one(&self, r: &ClaimedReversal) -> Result<(), StoreError> {
        let now = to_millis(self.clock.now());
        let method = self.choose_method(r, now);
        let done = |request: &'static str, result: &'static str, dry_run: bool| ReversalAttempt {
            outcome_id: &r.outcome_id,
            now,
            method,
            dry_run,
            request,
            status_code: None,
            request_id: None,
            result,
            error: None,
            state: "done",
            next_attempt_at: now,
            stripe_timestamp: None,
        };
        match method {
            "none" => {
                let a = done("", "nothing_to_reverse", false);
                self.store.record_reversal_attempt(&a).await
            }
            "void" => {
                if self.store.void_outcome_if_idle(&r.outcome_id, now).await? {
                    tracing::info!(outcome = %r.outcome_id, "clawback: outcome voided before it was sent");
                    let a = done("", "voided_before_sending", false);
                    self.store.record_reversal_attempt(&a).await
                } else {
                    // A reporter holds it right now: look again when its lease ends.
                    let next = r.outcome_lease_until.unwrap_or(now).max(now) + 1_000;
                    self.store.postpone_reversal(&r.outcome_id, next).await
                }
            }
            "dry_run" => {
                let request = cancel_form(&r.event_name, &r.outcome_id);
                let mut a = done("", "dry_run", true);
                a.request = &request;
                self.store.record_reversal_attempt(&a).await
            }
            _ => self.reverse_at_stripe(r, method, now).await,
        }
    }

    async fn reverse_at_stripe(
        &self,
        r: &ClaimedReversal,
        method: &'static str,
        now: i64,
    ) -> Result<(), StoreError> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        let stripe_timestamp = r.stripe_timestamp.unwrap_or(now.div_euclid(1000));
        let (request, result): (String, Result<Ack, StripeError>) = if method == "cancel" {
            self.limiter.acquire().await;
            let key = idempotency_key(&r.outcome_id, "cancel");
            let res = client
                .cancel_meter_event(&r.event_name, &r.outcome_id, &key)
                .await;
            (cancel_form(&r.event_name, &r.outcome_id), res)
        } else {
            // After Stripe's cancellation window: a correcting event with the negative value.
            let ev = MeterEvent {
                event_name: r.event_name.clone(),
                stripe_customer_id: r.stripe_customer_id.clone(),
                value: -r.value,
                identifier: format!("{}_reversal", r.outcome_id),
                timestamp: stripe_timestamp,
            };
            self.limiter.acquire().await;
            let key = idempotency_key(&r.outcome_id, "reversal");
            (ev.encoded(), client.create_meter_event(&ev, &key).await)
        };
        let (status_code, request_id) = match &result {
            Ok(ack) => (Some(ack.status), ack.request_id.clone()),
            Err(e) => (e.status(), e.request_id().map(str::to_string)),
        };
        let error = result.as_ref().err().map(|e| e.to_string());
        let (state, result_text, next) = match classify(&result) {
            Disposition::Delivered => ("done", "accepted", now),
            Disposition::Retry { after } if r.attempts + 1 < self.settings.max_attempts => {
                let delay = backoff(
                    r.attempts,
                    self.settings.backoff_base,
                    self.settings.backoff_max,
                    after,
                    fastrand::f64(),
                );
                (
                    "pending",
                    "retry",
                    now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 4),
                )
            }
            _ => ("failed", "failed", now),
        };
        tracing::info!(outcome = %r.outcome_id, method, state, "clawback reversal attempt");
        self.store
            .record_reversal_attempt(&ReversalAttempt {
                outcome_id: &r.outcome_id,
                now,
                method,
                dry_run: false,
                request: &request,
                status_code,
                request_id: request_id.as_deref(),
                result: result_text,
                error: error.as_deref(),
                state,
                next_attempt_at: next,
                stripe_timestamp: (method == "correction").then_some(stripe_timestamp),
            })
            .await
    }
}
