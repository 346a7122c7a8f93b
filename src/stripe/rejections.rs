//! Meter events Stripe accepted (200) and rejected later, in its asynchronous
//! validation (see [`super::events`]).
//!
//! - **Processing** ([`Rejections::run_once`]): each stored `error_report_triggered` /
//!   `no_meter_found` notification is claimed with a lease (so it is processed at least
//!   once, by one process at a time, also after a crash), its full event is fetched
//!   (`GET /v2/core/events/{id}`), every outcome its sample errors name is marked
//!   `rejected_by_stripe` with Stripe's code and message (idempotent), and the affected
//!   meter is compared with Stripe's summaries over the timestamps of the events sent
//!   around the validation window: the samples do not name every rejected event, and
//!   the unnamed ones can only show as drift. Which unnamed outcome was rejected is
//!   never guessed.
//! - **Periodic reconcile** ([`Rejections::reconcile_all`], `reconcile.every`): the same
//!   comparison for every tenant and configured meter over a recent window, for
//!   operators who cannot expose an endpoint. It can say that Stripe counts less than
//!   was reported, never which outcomes.
//! - **Resending**: `replay --rejected` queues a rejected outcome again under a new
//!   identifier (`<outcome id>_resend<N>`). Stripe documents that an identifier is
//!   unique "within a rolling period of at least 24 hours" and that the check exists
//!   against accidental retries (https://docs.stripe.com/api/billing/meter-event/create),
//!   but not whether an event that failed asynchronous validation still holds its
//!   identifier. Assumed: it does (the uniqueness check answers synchronously, before
//!   validation rejects the event). Resending the same identifier could then be answered
//!   "an event already exists with identifier …", which the reporter must take as
//!   "already delivered": the outcome would be marked reported and never billed. A new
//!   identifier cannot double-bill: the rejected event was never counted.

use super::client::{StripeClient, StripeError};
use super::events::{is_rejection_type, ErrorReport, NO_METER_FOUND};
use super::retry::backoff;
use crate::accounting::fmt_ms;
use crate::accounting::period::Period;
use crate::accounting::reconcile::{
    reconcile, reconcile_meter, MeterLine, ReconcileError, StripeTarget,
};
use crate::clock::SharedClock;
use crate::lifecycle::StripeEventState;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::{Applied, ClaimedStripeEvent, Effect, SentRange, Store, StoreError};
use crate::time::Millis;
use serde::Serialize;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long before `validation_start` an event rejected in that window may have been
/// sent. Assumed: Stripe validates an event within an hour of receiving it (its
/// documented example shows a 10-second window reported 2 seconds after it ends).
const SENT_BEFORE_VALIDATION: Duration = Duration::from_secs(3600);

/// Events sent up to this long after `validation_end` are counted in as well (clocks).
const SENT_AFTER_VALIDATION: Duration = Duration::from_secs(60);

/// A comparison of one tenant's meter with Stripe.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DriftLine {
    pub tenant: String,
    /// From and to (exclusive), RFC 3339: meter-event timestamps compared.
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub line: MeterLine,
}

impl DriftLine {
    pub fn has_drift(&self) -> bool {
        self.line.drift.abs() > f64::EPSILON
    }
}

/// What processing one notification found (stored as the row's `summary`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Rejected events Stripe counted in this report.
    pub error_count: i64,
    /// What each sample named, and what it did.
    pub samples: Vec<Applied>,
    /// Outcomes marked `rejected_by_stripe` now.
    pub marked: usize,
    /// Rejected events the samples do not name (`error_count` minus samples).
    pub unnamed: i64,
    /// Comparisons of the affected meters with Stripe.
    pub reconciled: Vec<DriftLine>,
    pub notes: Vec<String>,
}

/// Processes Stripe's rejection notifications and compares meters with Stripe.
#[derive(Clone)]
pub struct Rejections {
    store: Store,
    client: StripeClient,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    settings: Arc<Settings>,
    /// Where meter ids come from: the preflight's reading of each account.
    gates: Option<Arc<super::PreflightGates>>,
}

/// Whether a failed fetch is worth retrying (Stripe's `Stripe-Should-Retry` first;
/// otherwise no answer, 409, 429 and 5xx), and Stripe's `Retry-After`.
fn transient(e: &StripeError) -> (bool, Option<Duration>) {
    match e {
        StripeError::Network(_) => (true, None),
        StripeError::Api {
            status,
            should_retry,
            retry_after,
            ..
        } => (
            should_retry.unwrap_or(*status == 409 || *status == 429 || *status >= 500),
            *retry_after,
        ),
    }
}

/// `t` down to a whole minute (Stripe's summaries take minute-aligned times).
fn floor_minute(t: Millis) -> Millis {
    Millis::from_ms(t.as_ms().div_euclid(60_000) * 60_000)
}

impl Rejections {
    pub fn new(
        store: Store,
        client: StripeClient,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        settings: Arc<Settings>,
    ) -> Rejections {
        Rejections {
            store,
            client,
            clock,
            metrics,
            settings,
            gates: None,
        }
    }

    /// Take meter ids from the preflight (Stripe's meters), not only from
    /// `[stripe.meter_ids]`.
    pub fn with_preflight(mut self, gates: Option<Arc<super::PreflightGates>>) -> Rejections {
        self.gates = gates;
        self
    }

    /// Meter ids by event name: those the preflight read from Stripe (on
    /// `account`, or on every account for `None`), `[stripe.meter_ids]` winning.
    fn meter_ids(&self, account: Option<Option<&str>>) -> BTreeMap<String, String> {
        let mut ids = match (&self.gates, account) {
            (Some(g), Some(account)) => g.meter_ids(account),
            (Some(g), None) => g.all_meter_ids(),
            (None, _) => BTreeMap::new(),
        };
        ids.extend(self.settings.stripe.meter_ids.clone());
        ids
    }

    /// Process every notification due now. Returns how many were handled.
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

    /// Claim one batch of stored notifications and process them.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let claimed = self
            .store
            .claim_stripe_events(
                now,
                now + self.settings.worker.lease,
                self.settings.reporter.batch_size,
            )
            .await?;
        for e in &claimed {
            self.process(e).await?;
        }
        Ok(claimed.len())
    }

    async fn process(&self, e: &ClaimedStripeEvent) -> Result<(), StoreError> {
        if !is_rejection_type(&e.kind) {
            // Stored as ignored on receipt; only a row written otherwise gets here.
            let now = self.clock.now_ms();
            self.store
                .finish_stripe_event(
                    &e.id,
                    e.lease_until,
                    StripeEventState::Ignored,
                    None,
                    None,
                    now,
                )
                .await?;
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        let fetched = self.client.v2_event(&e.id, e.context.as_deref()).await;
        self.metrics.stripe_call("v2_event", started.elapsed());
        let now = self.clock.now_ms();
        let body = match fetched {
            Ok(body) => body,
            Err(err) => return self.fetch_failed(e, &err, now).await,
        };
        let report = match ErrorReport::parse(&body) {
            Ok(r) => r,
            Err(err) => {
                let why = format!("cannot read event {} from Stripe: {err}", e.id);
                tracing::error!(event = %e.id, error = %why, "Stripe event not processed");
                self.metrics.stripe_event_processed("failed");
                self.store
                    .finish_stripe_event(
                        &e.id,
                        e.lease_until,
                        StripeEventState::Failed,
                        Some(&why),
                        None,
                        now,
                    )
                    .await?;
                return Ok(());
            }
        };
        let summary = self.apply(e, &report, now).await?;
        let text = serde_json::to_string(&summary).unwrap_or_default();
        let now = self.clock.now_ms();
        if self
            .store
            .finish_stripe_event(
                &e.id,
                e.lease_until,
                StripeEventState::Processed,
                None,
                Some(&text),
                now,
            )
            .await?
        {
            self.metrics.stripe_event_processed("processed");
        }
        Ok(())
    }

    async fn fetch_failed(
        &self,
        e: &ClaimedStripeEvent,
        err: &StripeError,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (retry, after) = transient(err);
        let why = format!("fetching event {} from Stripe: {err}", e.id);
        let r = &self.settings.reporter;
        if retry && e.attempts + 1 < r.max_attempts {
            let delay = backoff(
                e.attempts,
                r.backoff_base,
                r.backoff_max,
                after,
                fastrand::f64(),
            );
            tracing::warn!(event = %e.id, error = %why, retry_in = ?delay, "Stripe event not fetched; will retry");
            self.metrics.stripe_event_processed("retried");
            let next = now + delay;
            return self
                .store
                .retry_stripe_event(&e.id, e.lease_until, next, &why)
                .await;
        }
        tracing::error!(event = %e.id, error = %why, request_id = ?err.request_id(), "Stripe event not fetched; given up (outcomes it names are not marked)");
        self.metrics.stripe_event_processed("failed");
        self.store
            .finish_stripe_event(
                &e.id,
                e.lease_until,
                StripeEventState::Failed,
                Some(&why),
                None,
                now,
            )
            .await?;
        Ok(())
    }

    /// Mark what the samples name, then compare the affected meters with Stripe.
    async fn apply(
        &self,
        e: &ClaimedStripeEvent,
        report: &ErrorReport,
        now: Millis,
    ) -> Result<Summary, StoreError> {
        let (mut summary, mut event_names) = self.mark_named(e, report, now).await?;
        let meter_ids = &self.meter_ids(None);
        let meter_id = report.meter_id.clone().or_else(|| e.related_object.clone());
        if let Some(m) = &meter_id {
            match meter_ids.iter().find(|(_, id)| *id == m) {
                Some((name, _)) => {
                    event_names.insert(name.clone());
                }
                None => summary.notes.push(format!(
                    "meter {m} is neither among the meters the preflight read nor in [stripe.meter_ids]: its totals are compared only for event names a sample named"
                )),
            }
        }
        if report.kind == NO_METER_FOUND {
            for name in &event_names {
                let note = format!(
                    "no meter at Stripe has event name `{name}`: every event sent to it is rejected until one is created"
                );
                tracing::error!(meter = %name, "{note}");
                summary.notes.push(note);
            }
            return Ok(summary);
        }
        let vs = report.validation_start.unwrap_or(now);
        let ve = report.validation_end.unwrap_or(now).max(vs);
        for name in &event_names {
            let id = meter_ids.get(name).cloned().or_else(|| {
                // Named by a sample but not configured: the event's own meter.
                meter_id.clone().filter(|_| event_names.len() == 1)
            });
            let Some(id) = id else {
                summary.notes.push(format!(
                    "no meter id for `{name}` (from the preflight or [stripe.meter_ids]): its totals were not compared"
                ));
                continue;
            };
            self.compare_sent(&mut summary, name, &id, (vs, ve)).await?;
        }
        Ok(summary)
    }

    /// Mark the outcomes the samples name (and fail the corrections they name),
    /// saying what each sample did. Returns the summary so far and the event
    /// names of the outcomes marked.
    async fn mark_named(
        &self,
        e: &ClaimedStripeEvent,
        report: &ErrorReport,
        now: Millis,
    ) -> Result<(Summary, BTreeSet<String>), StoreError> {
        let samples = report.samples();
        let mode = if report.livemode { "live" } else { "test" };
        let account = report.context.as_deref().or(e.context.as_deref());
        let applied = self
            .store
            .apply_rejections(&e.id, &samples, mode, account, now)
            .await?;
        let mut summary = Summary {
            error_count: report.error_count(),
            unnamed: (report.error_count() - samples.len() as i64).max(0),
            ..Default::default()
        };
        let mut event_names = BTreeSet::new();
        for a in &applied {
            match &a.effect {
                Effect::Marked { tenant, event_name } => {
                    summary.marked += 1;
                    event_names.insert(event_name.clone());
                    self.metrics.stripe_rejection(&a.code);
                    tracing::warn!(identifier = %a.identifier, %tenant, meter = %event_name, code = %a.code, stripe_event = %e.id,
                        "Stripe rejected a meter event it had accepted; outcome marked rejected_by_stripe (resend with `replay --rejected` once the cause is fixed)");
                }
                Effect::ReversalFailed => {
                    tracing::error!(identifier = %a.identifier, code = %a.code, stripe_event = %e.id,
                        "Stripe rejected a clawback's correcting event; the reversal is failed and the outcome still billed");
                }
                Effect::Already | Effect::Stale => {}
                Effect::Unchanged { state } => {
                    tracing::warn!(identifier = %a.identifier, %state, code = %a.code, "Stripe rejected an event of an outcome in a state a rejection does not change");
                }
                Effect::Unknown | Effect::NotOurs => {
                    tracing::warn!(identifier = %a.identifier, code = %a.code, stripe_event = %e.id,
                        "Stripe rejected an event outcome-meter has no outcome for (sent by something else?)");
                }
            }
        }
        summary.samples = applied;
        if summary.unnamed > 0 {
            tracing::warn!(stripe_event = %e.id, error_count = summary.error_count, named = samples.len(),
                "Stripe counted more rejected events than its samples name: those are not marked; comparing the meter with Stripe to surface them");
        }
        Ok((summary, event_names))
    }

    /// Compare meter `meter_id` (event name `name`) with Stripe for each tenant
    /// and customer that sent events on it around the validation window
    /// (`from`, `to`), adding each comparison, or why there was none,
    /// to `summary`.
    async fn compare_sent(
        &self,
        summary: &mut Summary,
        name: &str,
        meter_id: &str,
        (from, to): (Millis, Millis),
    ) -> Result<(), StoreError> {
        let sent = self
            .store
            .sent_between(
                name,
                from - SENT_BEFORE_VALIDATION,
                to + SENT_AFTER_VALIDATION,
            )
            .await?;
        if sent.is_empty() {
            summary.notes.push(format!(
                "no outcome on `{name}` was sent around the validation window ({} to {})",
                fmt_ms(from),
                fmt_ms(to)
            ));
        }
        for range in sent {
            match self.compare(&range, name, meter_id).await {
                Ok(d) => summary.reconciled.push(d),
                Err(ReconcileError::Store(err)) if err.is_transient() => return Err(err),
                // A tenant's stored rows that cannot be read: noted, as an
                // unanswered comparison is (see the periodic reconcile).
                Err(err) => {
                    self.metrics.reconcile_run("error");
                    tracing::warn!(tenant = %range.tenant, meter = %name, error = %err, "could not compare the meter with Stripe after a rejection");
                    summary
                        .notes
                        .push(format!("{} `{name}`: not compared: {err}", range.tenant));
                }
            }
        }
        Ok(())
    }

    /// Compare a tenant's meter over the timestamps of the events it sent in a range.
    async fn compare(
        &self,
        range: &SentRange,
        event_name: &str,
        meter_id: &str,
    ) -> Result<DriftLine, ReconcileError> {
        let period = Period {
            from: floor_minute(range.first_timestamp),
            to: floor_minute(range.last_timestamp) + Duration::from_secs(60),
        };
        let at = StripeTarget {
            customer: &range.stripe_customer_id,
            account: self
                .settings
                .tenant(&range.tenant)
                .and_then(|t| t.stripe_account.as_deref()),
            mode: self.settings.stripe.mode(),
        };
        let line = reconcile_meter(
            &self.store,
            &self.client,
            &range.tenant,
            &at,
            event_name,
            meter_id,
            period,
        )
        .await?;
        let d = DriftLine {
            tenant: range.tenant.clone(),
            from: fmt_ms(period.from),
            to: fmt_ms(period.to),
            line,
        };
        self.observe(&d, "after a Stripe rejection event");
        Ok(d)
    }

    /// Record one comparison: the gauge, the run counter, and a warning on drift.
    fn observe(&self, d: &DriftLine, when: &'static str) {
        self.metrics
            .reconcile_drift(&d.tenant, &d.line.event_name, d.line.drift);
        if d.has_drift() {
            self.metrics.reconcile_run("drift");
            tracing::warn!(
                tenant = %d.tenant, meter = %d.line.event_name, meter_id = %d.line.meter_id,
                from = %d.from, to = %d.to, expected = d.line.expected, stripe = d.line.stripe, drift = d.line.drift,
                rejected_named = d.line.rejected_count,
                "{}", drift_message(d, when)
            );
        } else {
            self.metrics.reconcile_run("no_drift");
        }
    }

    /// The periodic reconcile (`reconcile.every`): every tenant, every meter it bills on
    /// (as the preflight read the account; `[stripe.meter_ids]` winning),
    /// over `[now - reconcile.window, now - reconcile.lag)` in whole minutes. Drift is
    /// logged and set on `outcome_meter_reconcile_drift`; which outcomes Stripe did not
    /// count cannot be said from totals.
    pub async fn reconcile_all(&self) -> Result<Vec<DriftLine>, StoreError> {
        let s = &self.settings;
        let now = self.clock.now_ms();
        let period = Period {
            from: floor_minute(now - s.reconcile.window),
            to: floor_minute(now - s.reconcile.lag),
        };
        let mut out = Vec::new();
        if period.to <= period.from {
            return Ok(out);
        }
        for t in &s.tenants {
            let meter_ids = self.meter_ids(Some(t.stripe_account.as_deref()));
            if meter_ids.is_empty() {
                tracing::info!(tenant = %t.id, "periodic reconcile: no meter known yet (no preflight has read the account, and no [stripe.meter_ids])");
                continue;
            }
            let r = reconcile(
                &self.store,
                &self.client,
                &meter_ids,
                &t.id,
                &StripeTarget {
                    customer: &t.stripe_customer_id,
                    account: t.stripe_account.as_deref(),
                    mode: s.stripe.mode(),
                },
                period,
            )
            .await;
            let r = match r {
                Ok(r) => r,
                Err(ReconcileError::Store(e)) if e.is_transient() => return Err(e),
                // What one tenant's rows hold (a state this build cannot read)
                // never keeps the others from being compared.
                Err(ReconcileError::Store(e)) => {
                    self.metrics.reconcile_run("error");
                    tracing::error!(tenant = %t.id, error = %e, "periodic reconcile: the tenant's stored outcomes cannot be read; not compared");
                    continue;
                }
                Err(e) => {
                    self.metrics.reconcile_run("error");
                    tracing::warn!(tenant = %t.id, error = %e, "periodic reconcile: could not compare with Stripe");
                    continue;
                }
            };
            for line in r.meters {
                let d = DriftLine {
                    tenant: t.id.clone(),
                    from: r.from.clone(),
                    to: r.to.clone(),
                    line,
                };
                self.observe(&d, "periodic reconcile (reconcile.every)");
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Run [`Self::reconcile_all`] every `every` until cancelled, the first time a
    /// minute after start (or `every`, when shorter).
    pub async fn run_periodic(self, every: Duration, token: CancellationToken) {
        let mut wait = every.min(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = self.reconcile_all().await {
                self.store.write_failed(&e);
                self.metrics.reconcile_run("error");
                tracing::error!(error = %e, "periodic reconcile failed");
            }
            wait = every;
        }
        tracing::info!(role = "reconcile", "stopped");
    }
}

/// What drift means, in words, for the log.
fn drift_message(d: &DriftLine, when: &str) -> String {
    let l = &d.line;
    if l.drift < 0.0 {
        format!(
            "drift ({when}): Stripe counts {} where outcome-meter reported {} for {} on meter {} from {} to {}: \
             Stripe may have rejected events after accepting them without naming them (its rejection events \
             name samples only), so outcome-meter cannot say which outcomes; check the meter's errors in the \
             Stripe Dashboard and `outcome-meter reconcile`",
            l.stripe, l.expected, d.tenant, l.event_name, d.from, d.to
        )
    } else {
        format!(
            "drift ({when}): Stripe counts {} where outcome-meter reported {} for {} on meter {} from {} to {}: \
             usage from elsewhere, or summaries not caught up yet (re-run `outcome-meter reconcile` before acting)",
            l.stripe, l.expected, d.tenant, l.event_name, d.from, d.to
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_answer_that_may_change_is_retried() {
        let api = |status: u16, should_retry: Option<bool>| StripeError::Api {
            status,
            error: Box::default(),
            request_id: None,
            should_retry,
            retry_after: None,
            replayed: false,
        };
        assert!(transient(&StripeError::Network("reset".into())).0);
        for s in [409, 429, 500, 503] {
            assert!(transient(&api(s, None)).0, "{s}");
        }
        for s in [400, 401, 403, 404] {
            assert!(!transient(&api(s, None)).0, "{s}");
        }
        assert!(!transient(&api(503, Some(false))).0);
        assert!(transient(&api(400, Some(true))).0);
    }

    #[test]
    fn minutes_are_floored() {
        let m = Millis::from_ms;
        assert_eq!(floor_minute(m(119_999)), m(60_000));
        assert_eq!(floor_minute(m(120_000)), m(120_000));
        assert_eq!(floor_minute(m(-1)), m(-60_000));
    }
}
