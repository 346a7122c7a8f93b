//! Drains the outbox to Stripe: one call at a time per (customer, meter),
//! different pairs concurrently, never above the configured rate.

use super::client::{cancel_form, Ack, MeterEvent, StripeClient, StripeError};
use super::gate::{Hold, PreflightGates};
use super::limits::{
    ahead_reason, check_timestamp, in_doubt_reason, resend_is_deduplicated, too_old_reason,
    TimestampCheck,
};
use super::mode::StripeMode;
use super::preflight::MeterInfo;
use super::retry::{backoff, classify, is_cancel_too_old, maybe_applied, Disposition};
use crate::clock::{to_millis, SharedClock};
use crate::metrics::{Metrics, ReportResult};
use crate::outcome::idempotency_key;
use crate::settings::{MeterAggregation, ReporterSettings, Settings};
use crate::store::{
    ClaimedOutcome, ClaimedReversal, OutcomeAttempt, ReversalAttempt, SetAside, Store, StoreError,
};
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
    /// `None`: dry-run: record what would be sent.
    client: Option<StripeClient>,
    /// The mode calls are made in (`stripe.mode`).
    mode: StripeMode,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    settings: ReporterSettings,
    lease: Duration,
    /// The Stripe client's timeout: a claim must outlast a call.
    call_timeout: Duration,
    limiter: Arc<RateLimiter>,
    /// Aggregation of each meter by event name (`sum` when absent): dry-run only;
    /// otherwise the preflight reads it from Stripe.
    aggregations: Arc<BTreeMap<String, MeterAggregation>>,
    /// The Stripe preflight (`None` in dry-run): what is sent, and how.
    gate: Option<Arc<PreflightGates>>,
}

impl Reporter {
    /// `settings`: the reporter's own section, `worker.lease` (its claims),
    /// `stripe.timeout` (a claim must outlast a call) and the meters' aggregations.
    pub fn new(
        store: Store,
        client: Option<StripeClient>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        settings: &Settings,
    ) -> Reporter {
        let limiter = Arc::new(RateLimiter::new(settings.rate_per_second()));
        let mode = match &client {
            Some(_) => settings.stripe.mode(),
            None => StripeMode::DryRun,
        };
        Reporter {
            store,
            client,
            mode,
            clock,
            metrics,
            settings: settings.reporter.clone(),
            lease: settings.worker.lease,
            call_timeout: settings.stripe.timeout,
            limiter,
            aggregations: Arc::new(settings.stripe.meter_aggregations.clone()),
            gate: None,
        }
    }

    pub fn dry_run(&self) -> bool {
        self.client.is_none()
    }

    /// Say, at start, what this database holds that was sent in another mode and
    /// is therefore not billed in this one, and how to send it.
    pub async fn warn_other_modes(&self) -> Result<(), StoreError> {
        if self.mode == StripeMode::DryRun {
            return Ok(());
        }
        for (mode, n) in self.store.sent_in_other_modes(self.mode).await? {
            let replay = match (mode, self.mode) {
                (StripeMode::DryRun, _) => "outcome-meter replay --dry-run",
                (StripeMode::Test, StripeMode::Live) => "outcome-meter replay --from-test",
                _ => continue, // live outcomes seen from test mode are billed already
            };
            tracing::warn!(outcomes = n, recorded_in = %mode, mode = %self.mode, "outcomes recorded in another mode are not billed in this one; `{replay}` sends them");
        }
        Ok(())
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
        if let Some(g) = &self.gate {
            g.ensure_started().await;
        }
        // Reversals first: an outcome clawed back before it was sent is voided, never sent.
        let reversed = self.reverse_batch().await?;
        let reported = self.report_batch().await?;
        Ok(reported + reversed)
    }

    /// The timestamp (Unix seconds) of an event made now (a correction): this
    /// process's time, but never ahead of the world's, which Stripe keeps
    /// (a drill's positive `clock.offset` would make it refused as future).
    fn stripe_seconds(&self, now: i64) -> i64 {
        now.min(to_millis(self.clock.world_now())).div_euclid(1000)
    }

    /// Run one Stripe call and record how long it took (`/metrics`).
    async fn timed<T>(&self, call: &'static str, f: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let out = f.await;
        self.metrics.stripe_call(call, started.elapsed());
        out
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
        // By (account, customer, meter): Stripe serializes calls per customer and
        // meter, and each Connect account has its own meters and customers.
        type Pair = (Option<String>, String, String);
        let mut groups: BTreeMap<Pair, Vec<ClaimedOutcome>> = BTreeMap::new();
        for o in claimed {
            groups
                .entry((
                    o.stripe_account.clone(),
                    o.stripe_customer_id.clone(),
                    o.event_name.clone(),
                ))
                .or_default()
                .push(o);
        }
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for ((account, customer, meter), group) in groups {
            let me = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let info = match me.admit(account.as_deref(), &customer, &meter) {
                    Ok(info) => info,
                    Err(hold) => return me.hold_outcomes(&customer, &meter, &group, &hold).await,
                };
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
                    result = me.report_one(o, &info).await;
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

    async fn report_one(&self, o: &ClaimedOutcome, meter: &MeterInfo) -> Result<(), StoreError> {
        let ev = MeterEvent {
            event_name: o.event_name.clone(),
            stripe_customer_id: o.stripe_customer_id.clone(),
            value: o.value,
            // The outcome id; after a rejection and a resend, `<id>_resend<N>` (see
            // `super::rejections`: a rejected identifier is never reused).
            identifier: o.stripe_identifier(),
            timestamp: o.confirmed_at.div_euclid(1000),
            customer_key: meter.customer_key.clone(),
            value_key: meter.value_key.clone(),
        };
        let request = ev.encoded();
        let Some(client) = &self.client else {
            let now = to_millis(self.clock.now());
            self.metrics.report(ReportResult::DryRun);
            return self
                .store
                .record_attempt(&OutcomeAttempt {
                    outcome_id: &o.id,
                    now,
                    mode: StripeMode::DryRun,
                    request: &request,
                    idempotency_key: None,
                    status_code: None,
                    request_id: None,
                    livemode: None,
                    result: "dry_run",
                    error: None,
                    state: "dry_run",
                    next_attempt_at: now,
                    in_doubt: false,
                })
                .await;
        };
        let world_now = self.clock.world_now();
        match check_timestamp(ev.timestamp, world_now) {
            TimestampCheck::Acceptable => {}
            TimestampCheck::Ahead { ready_at } => {
                // Stripe would refuse it with a 400: hold it, unspent, until it is not.
                // Check again within 5 minutes: if the clock is set right (the
                // offset removed), it goes out then, not a whole offset later.
                let wait = (ready_at - world_now)
                    .clamp(chrono::Duration::zero(), chrono::Duration::minutes(5));
                let next = to_millis(self.clock.now() + wait);
                let reason = ahead_reason(ev.timestamp, world_now);
                tracing::warn!(outcome = %o.id, %reason, "meter event held");
                return self
                    .store
                    .set_aside(&o.id, o.lease_until, &reason, SetAside::RetryAt(next))
                    .await;
            }
            TimestampCheck::TooOld => {
                let reason = too_old_reason(ev.timestamp, &o.id);
                tracing::error!(outcome = %o.id, %reason, "meter event too old for Stripe; parked as failed");
                self.metrics.report(ReportResult::Failed);
                return self
                    .store
                    .set_aside(&o.id, o.lease_until, &reason, SetAside::Park)
                    .await;
            }
        }
        if !resend_is_deduplicated(o.doubt_since, to_millis(self.clock.now())) {
            let since = o.doubt_since.unwrap_or_default();
            let reason = in_doubt_reason(&o.id, since);
            tracing::error!(outcome = %o.id, %reason, "meter event in doubt past Stripe's dedupe window; parked as failed");
            self.metrics.report(ReportResult::Failed);
            return self
                .store
                .set_aside(&o.id, o.lease_until, &reason, SetAside::Park)
                .await;
        }
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
        let key = idempotency_key(&ev.identifier, "meter_event", o.calls);
        let result = self
            .timed(
                "meter_event",
                client.create_meter_event(&ev, &key, o.stripe_account.as_deref()),
            )
            .await;
        let now = to_millis(self.clock.now());
        let (status, request_id) = match &result {
            Ok(ack) => (Some(ack.status), ack.request_id.clone()),
            Err(e) => (e.status(), e.request_id().map(str::to_string)),
        };
        let livemode = result.as_ref().ok().and_then(|ack| ack.livemode);
        if livemode.is_some_and(|live| StripeMode::from_livemode(live) != self.mode) {
            tracing::error!(outcome = %o.id, mode = %self.mode, ?livemode, "Stripe answered in the other mode than stripe.mode; recorded as Stripe says");
        }
        let error_text = result.as_ref().err().map(|e| e.to_string());
        let attempt = OutcomeAttempt {
            outcome_id: &o.id,
            now,
            mode: self.mode,
            request: &request,
            idempotency_key: Some(&key),
            status_code: status,
            request_id: request_id.as_deref(),
            livemode,
            result: "",
            error: None,
            state: "",
            next_attempt_at: now,
            in_doubt: maybe_applied(&result),
        };
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
                    .record_attempt(&OutcomeAttempt {
                        result: how,
                        state: "reported",
                        ..attempt
                    })
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
                    .record_attempt(&OutcomeAttempt {
                        result: "retry",
                        error: error_text.as_deref(),
                        state: "pending",
                        next_attempt_at: next,
                        ..attempt
                    })
                    .await
            }
            disposition @ (Disposition::Retry { .. } | Disposition::Permanent) => {
                let why = match &result {
                    Err(StripeError::Api { .. }) | Err(StripeError::Network(_)) => {
                        error_text.clone()
                    }
                    Ok(_) => None,
                };
                // Say what happened: a refusal, or a transient failure that outlasted the budget.
                if matches!(disposition, Disposition::Permanent) {
                    tracing::error!(outcome = %o.id, error = ?why, request_id = ?request_id, "Stripe refused the event; parked as failed");
                } else {
                    tracing::error!(outcome = %o.id, error = ?why, request_id = ?request_id, attempts = o.attempts + 1, "Stripe kept failing or could not be reached for the whole retry budget (reporter.max_attempts); parked as failed");
                }
                self.metrics.report(ReportResult::Failed);
                self.store
                    .record_attempt(&OutcomeAttempt {
                        result: "failed",
                        error: why.as_deref(),
                        state: "failed",
                        ..attempt
                    })
                    .await
            }
        }
    }
}

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
    /// Reported in live mode, and this process is not: wait for one that is
    /// (never stored; nothing is sent).
    WaitForLive,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Void => "void",
            Method::Cancel => "cancel",
            Method::Correction => "correction",
            Method::DryRun => "dry_run",
            Method::Nothing => "none",
            Method::Manual => "manual",
            Method::WaitForLive => "wait_for_live",
        }
    }

    pub fn parse(s: &str) -> Method {
        match s {
            "void" => Method::Void,
            "cancel" => Method::Cancel,
            "correction" => Method::Correction,
            "dry_run" => Method::DryRun,
            "manual" => Method::Manual,
            _ => Method::Nothing,
        }
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
        return Method::parse(m);
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

    async fn reverse_one(&self, r: &ClaimedReversal) -> Result<(), StoreError> {
        let now = to_millis(self.clock.now());
        // A cancel or a correction goes to the customer's meter: both must pass
        // the preflight (a correction for a deleted customer would be rejected).
        let meter = self.admit(
            r.stripe_account.as_deref(),
            &r.stripe_customer_id,
            &r.event_name,
        );
        // A meter failing the preflight waits below; its placeholder never parks anything.
        let aggregation = meter
            .as_ref()
            .map_or(MeterAggregation::Sum, |m| m.aggregation);
        let method = choose_method(
            r.method.as_deref(),
            &r.outcome_state,
            r.outcome_reported_mode
                .as_deref()
                .and_then(StripeMode::parse),
            self.mode,
            r.outcome_first_sent_at,
            now,
            aggregation,
        );
        let done = |request: &'static str, result: &'static str, dry_run: bool| ReversalAttempt {
            outcome_id: &r.outcome_id,
            now,
            method: method.as_str(),
            dry_run,
            mode: self.mode,
            livemode: None,
            idempotency_key: None,
            request,
            status_code: None,
            request_id: None,
            result,
            error: None,
            state: "done",
            next_attempt_at: now,
            stripe_timestamp: None,
            in_doubt: false,
        };
        let meter = match (method, meter) {
            (Method::Cancel | Method::Correction | Method::Manual, Err(hold)) => {
                tracing::warn!(outcome = %r.outcome_id, method = method.as_str(), reason = hold.reason, why = %hold.text, "clawback reversal waits for the Stripe preflight");
                return self
                    .store
                    .postpone_reversal(&r.outcome_id, hold.until)
                    .await;
            }
            (_, meter) => meter.unwrap_or_else(|_| MeterInfo::defaults(aggregation)),
        };
        match method {
            Method::WaitForLive => {
                tracing::warn!(outcome = %r.outcome_id, mode = %self.mode, "clawback: the outcome was reported in live mode; only a live-mode process reverses it");
                let next = now + 5 * 60_000;
                self.store.postpone_reversal(&r.outcome_id, next).await
            }
            Method::Nothing => {
                let a = done("", "nothing_to_reverse", false);
                self.store.record_reversal_attempt(&a).await
            }
            Method::Void => {
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
            Method::DryRun => {
                let request = cancel_form(&r.event_name, &r.outcome_id);
                let mut a = done("", "dry_run", true);
                a.request = &request;
                self.store.record_reversal_attempt(&a).await
            }
            Method::Manual => {
                let why = manual_reason(&r.event_name, aggregation);
                tracing::error!(outcome = %r.outcome_id, %why, "clawback: reversal parked as failed");
                let mut a = done("", "not_reversible", false);
                a.state = "failed";
                a.error = Some(&why);
                self.store.record_reversal_attempt(&a).await
            }
            Method::Cancel | Method::Correction => {
                self.reverse_at_stripe(r, method, now, &meter).await
            }
        }
    }

    async fn reverse_at_stripe(
        &self,
        r: &ClaimedReversal,
        method: Method,
        now: i64,
        meter: &MeterInfo,
    ) -> Result<(), StoreError> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        // Persist the method (and a correction's timestamp) before Stripe can see the
        // request: a retry after a crash then sends the very same request and key.
        let Some((stored, stored_ts)) = self
            .store
            .start_reversal_call(&r.outcome_id, method.as_str(), self.stripe_seconds(now))
            .await?
        else {
            return Ok(()); // no longer pending: another reporter finished it
        };
        let method = Method::parse(&stored);
        let stripe_timestamp = stored_ts.unwrap_or(self.stripe_seconds(now));
        let key = idempotency_key(
            &r.outcome_id,
            if method == Method::Cancel {
                "cancel"
            } else {
                "reversal"
            },
            r.attempts,
        );
        let (request, result): (String, Result<Ack, StripeError>) = match method {
            Method::Cancel => {
                self.limiter.acquire().await;
                // A fresh key per call (see `idempotency_key`). A cancel has no
                // identifier of its own for Stripe to dedupe, but it names the one
                // event it cancels: a second cancel of the same event cannot take
                // away anything more. What could subtract twice is a correction
                // after a cancel that may have been applied: `cancel_in_doubt`
                // keeps that from happening (see `after_cancel_too_old`).
                let res = self
                    .timed(
                        "cancel",
                        client.cancel_meter_event(
                            &r.event_name,
                            &r.outcome_identifier,
                            &key,
                            r.stripe_account.as_deref(),
                        ),
                    )
                    .await;
                (cancel_form(&r.event_name, &r.outcome_identifier), res)
            }
            Method::Correction => {
                // After Stripe's cancellation window: a correcting event with the negative value.
                let ev = MeterEvent {
                    event_name: r.event_name.clone(),
                    stripe_customer_id: r.stripe_customer_id.clone(),
                    value: -r.value,
                    identifier: format!("{}_reversal", r.outcome_id),
                    timestamp: stripe_timestamp,
                    customer_key: meter.customer_key.clone(),
                    value_key: meter.value_key.clone(),
                };
                self.limiter.acquire().await;
                // Stripe dedupes the correction on its identifier across keys.
                let res = self
                    .timed(
                        "correction",
                        client.create_meter_event(&ev, &key, r.stripe_account.as_deref()),
                    )
                    .await;
                (ev.encoded(), res)
            }
            other => {
                // Stored by another path meanwhile: plan again on the next pass.
                tracing::warn!(outcome = %r.outcome_id, method = other.as_str(), "reversal method changed; planning again");
                return self.store.postpone_reversal(&r.outcome_id, now).await;
            }
        };
        let (status_code, request_id) = match &result {
            Ok(ack) => (Some(ack.status), ack.request_id.clone()),
            Err(e) => (e.status(), e.request_id().map(str::to_string)),
        };
        let error = result.as_ref().err().map(|e| e.to_string());
        let mut attempt = ReversalAttempt {
            outcome_id: &r.outcome_id,
            now,
            method: method.as_str(),
            dry_run: false,
            mode: self.mode,
            livemode: result.as_ref().ok().and_then(|ack| ack.livemode),
            idempotency_key: Some(&key),
            request: &request,
            status_code,
            request_id: request_id.as_deref(),
            result: "accepted",
            error: error.as_deref(),
            state: "done",
            next_attempt_at: now,
            stripe_timestamp: (method == Method::Correction).then_some(stripe_timestamp),
            in_doubt: maybe_applied(&result),
        };
        let too_old =
            method == Method::Cancel && result.as_ref().err().is_some_and(is_cancel_too_old);
        let parked;
        if too_old {
            attempt.result = "too_old";
            match after_cancel_too_old(r.cancel_in_doubt, &r.event_name, meter.aggregation) {
                Ok(_) => {
                    tracing::warn!(outcome = %r.outcome_id, "Stripe refused the cancel as too old: switching to a correcting event");
                    self.store
                        .switch_reversal_to_correction(&attempt, self.stripe_seconds(now))
                        .await?;
                    return Ok(());
                }
                Err(why) => {
                    parked = format!("{why} (Stripe: {})", error.as_deref().unwrap_or(""));
                    attempt.state = "failed";
                    attempt.error = Some(&parked);
                }
            }
        } else {
            match classify(&result) {
                Disposition::Delivered => {}
                Disposition::Retry { after } if r.attempts + 1 < self.settings.max_attempts => {
                    let delay = backoff(
                        r.attempts,
                        self.settings.backoff_base,
                        self.settings.backoff_max,
                        after,
                        fastrand::f64(),
                    );
                    attempt.state = "pending";
                    attempt.result = "retry";
                    attempt.next_attempt_at =
                        now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 4);
                }
                _ => {
                    attempt.state = "failed";
                    attempt.result = "failed";
                }
            }
        }
        tracing::info!(outcome = %r.outcome_id, method = method.as_str(), state = attempt.state, "clawback reversal attempt");
        self.store.record_reversal_attempt(&attempt).await
    }
}

// ------------------------------------------------------------------ preflight

impl Reporter {
    /// Send only what the Stripe preflight admits (`gate`: `None` in dry-run).
    pub fn with_preflight(mut self, gate: Option<Arc<PreflightGates>>) -> Reporter {
        self.gate = gate;
        self
    }

    /// The meter of `event_name` on `account` as the preflight read it; without a
    /// preflight (dry-run): Stripe's default payload keys and the configured aggregation.
    fn meter_info(&self, account: Option<&str>, event_name: &str) -> Result<MeterInfo, Hold> {
        match &self.gate {
            Some(g) => g.meter(account, event_name),
            None => Ok(MeterInfo::defaults(
                self.aggregations
                    .get(event_name)
                    .copied()
                    .unwrap_or_default(),
            )),
        }
    }

    /// Whether outcomes for (`customer`, `event_name`) on `account` may be sent
    /// now, and how.
    fn admit(
        &self,
        account: Option<&str>,
        customer: &str,
        event_name: &str,
    ) -> Result<MeterInfo, Hold> {
        match &self.gate {
            Some(g) => g.admit(account, customer, event_name),
            None => self.meter_info(account, event_name),
        }
    }

    /// Give claimed outcomes back unsent, pending, with the preflight's reason as
    /// their last error, until after the next preflight; no attempt is spent.
    async fn hold_outcomes(
        &self,
        customer: &str,
        event_name: &str,
        group: &[ClaimedOutcome],
        hold: &Hold,
    ) -> Result<(), StoreError> {
        tracing::warn!(customer, meter = event_name, outcomes = group.len(), reason = hold.reason, why = %hold.text, "outcomes held by the Stripe preflight, not sent");
        self.metrics.outcomes_held(hold.reason, group.len());
        for o in group {
            self.store
                .set_aside(
                    &o.id,
                    o.lease_until,
                    &hold.text,
                    SetAside::RetryAt(hold.until),
                )
                .await?;
        }
        Ok(())
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
