//! Process metrics in the OpenMetrics text format (`GET /metrics` on the admin
//! listener), kept with the maintained `prometheus-client` crate. Every scrape
//! costs O(1): counters and histograms move as work happens, and the queue
//! gauges come from a snapshot a background task refreshes
//! (`server.metrics_refresh`), never from a query per scrape.

use crate::lifecycle::{OutcomeState, StripeEventState};
use crate::store::QueueCounts;
use crate::time::Millis;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MeterLabel {
    tenant: String,
    meter: String,
}

/// Stripe's rejection codes, as labels: a code Stripe adds later is `other`, so the
/// label set stays bounded whatever Stripe sends.
/// https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-in-bulk#error-codes
pub fn rejection_code_label(code: &str) -> &'static str {
    const KNOWN: [&str; 11] = [
        "archived_meter",
        "meter_event_customer_not_found",
        "meter_event_dimension_count_too_high",
        "meter_event_invalid_value",
        "meter_event_no_customer_defined",
        "meter_event_value_not_found",
        "missing_dimension_payload_keys",
        "no_meter",
        "timestamp_in_future",
        "timestamp_too_far_in_past",
        "other",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("other")
}

/// How a webhook request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    Stored,
    Duplicate,
    /// Refused for what the request is (4xx): the reason is its error code.
    Rejected(&'static str),
    /// Not stored because of us (503): storage down, overloaded, keys missing.
    Unavailable(&'static str),
}

/// How a Stripe report ended, for counting.
#[derive(Debug, Clone, Copy)]
pub enum ReportResult {
    Reported,
    Retried,
    Failed,
    DryRun,
}

impl ReportResult {
    fn label(self) -> &'static str {
        match self {
            ReportResult::Reported => "reported",
            ReportResult::Retried => "retried",
            ReportResult::Failed => "failed",
            ReportResult::DryRun => "dry_run",
        }
    }
}

/// Counts one webhook request in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct Metrics {
    registry: Registry,
    webhooks: Family<ResultLabel, Counter>,
    webhooks_rejected: Family<ReasonLabel, Counter>,
    webhooks_unavailable: Family<ReasonLabel, Counter>,
    ack_seconds: Histogram,
    in_flight: Gauge,
    connections_refused: Counter,
    deliveries: Family<ResultLabel, Counter>,
    outcomes_confirmed: Counter,
    tickets_postponed: Family<ReasonLabel, Counter>,
    stripe_reports: Family<ResultLabel, Counter>,
    stripe_call_seconds: Family<CallLabel, Histogram>,
    queue_deliveries: Family<StatusLabel, Gauge>,
    queue_outcomes: Family<StateLabel, Gauge>,
    tickets_in_window: Gauge,
    held_for_verification: Gauge,
    unbilled_other_mode: Gauge,
    oldest_unbilled_seconds: Gauge,
    snapshot_age_seconds: Gauge,
    outcomes_held: Family<ReasonLabel, Counter>,
    preflight_runs: Family<ResultLabel, Counter>,
    preflight_problems: Family<ReasonLabel, Gauge>,
    /// Confirmation time (ms) of the oldest unbilled outcome in the snapshot; -1: none.
    oldest_unbilled_at: AtomicI64,
    /// When the snapshot was taken (ms); -1: never.
    snapshot_at: AtomicI64,
    stripe: StripeEventMetrics,
    verification: VerificationMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderResultLabel {
    provider: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderReasonLabel {
    provider: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderStatusLabel {
    provider: &'static str,
    status: String,
}

/// Checks with the helpdesks' APIs before billing (issue 12).
struct VerificationMetrics {
    checks: Family<ProviderResultLabel, Counter>,
    disagreements: Family<ProviderReasonLabel, Counter>,
    holds: Family<ProviderReasonLabel, Counter>,
    api_errors: Family<ProviderStatusLabel, Counter>,
}

impl VerificationMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = VerificationMetrics {
            checks: Family::default(),
            disagreements: Family::default(),
            holds: Family::default(),
            api_errors: Family::default(),
        };
        registry.register(
            "verifications",
            "Checks of due outcomes with the helpdesk's API, by provider and result: agreed, disagreed, unreachable",
            m.checks.clone(),
        );
        registry.register(
            "verification_disagreements",
            "Checks where the helpdesk showed what no webhook brought and the outcome was not billed, by provider and what it showed: reopened, customer_replied, handed_off_to_human, other",
            m.disagreements.clone(),
        );
        registry.register(
            "verification_holds",
            "Confirmation passes that held a due outcome unbilled, by provider and reason: waiting (not checked yet), unreachable (retrying), past_max_hold (verify.on_unreachable = hold)",
            m.holds.clone(),
        );
        registry.register(
            "helpdesk_api_errors",
            "Failed calls to a helpdesk's API, by provider and HTTP status (429, 503, 401, 404, …) or network",
            m.api_errors.clone(),
        );
        m
    }
}

/// A provider name as a bounded label: one of the known providers, else `other`.
fn provider_label(name: &str) -> &'static str {
    crate::providers::all()
        .into_iter()
        .map(|p| p.name())
        .find(|p| *p == name)
        .unwrap_or("other")
}

/// Stripe's asynchronous rejections: notifications at `POST /stripe/events`, their
/// processing, the outcomes they mark, and the drift reconciliation finds.
struct StripeEventMetrics {
    notifications: Family<ResultLabel, Counter>,
    processed: Family<ResultLabel, Counter>,
    queued: Family<StatusLabel, Gauge>,
    rejections: Family<CodeLabel, Counter>,
    drift: Family<MeterLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    reconcile_runs: Family<ResultLabel, Counter>,
}

impl StripeEventMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = StripeEventMetrics {
            notifications: Family::default(),
            processed: Family::default(),
            queued: Family::default(),
            rejections: Family::default(),
            drift: Family::default(),
            reconcile_runs: Family::default(),
        };
        registry.register(
            "stripe_notifications",
            "Requests to POST /stripe/events by result: stored, duplicate, ignored (an event type not acted on), or the refusal's code",
            m.notifications.clone(),
        );
        registry.register(
            "stripe_events_processed",
            "Stored Stripe event notifications processed, by result: processed, retried, failed",
            m.processed.clone(),
        );
        registry.register(
            "stripe_events_queued",
            "Stripe event notifications waiting (pending) or given up on (failed), from the last snapshot",
            m.queued.clone(),
        );
        registry.register(
            "stripe_rejections",
            "Outcomes marked rejected_by_stripe (Stripe accepted the meter event, then rejected it), by Stripe's error code",
            m.rejections.clone(),
        );
        registry.register(
            "reconcile_drift",
            "Stripe's meter total minus what outcome-meter reported, per tenant and meter, at the last comparison (after a rejection event, or reconcile.every)",
            m.drift.clone(),
        );
        registry.register(
            "reconcile_runs",
            "Comparisons with Stripe's meter summaries by result: no_drift, drift, error",
            m.reconcile_runs.clone(),
        );
        m
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("outcome_meter");
        let webhooks = Family::<ResultLabel, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook requests by result: stored, duplicate, rejected (4xx), unavailable (503)",
            webhooks.clone(),
        );
        let webhooks_rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "webhooks_rejected",
            "Webhook requests refused for what they are (4xx), by error code",
            webhooks_rejected.clone(),
        );
        let webhooks_unavailable = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "webhooks_unavailable",
            "Webhook requests answered 503 (the sender retries), by reason",
            webhooks_unavailable.clone(),
        );
        let ack_seconds = latency_histogram();
        registry.register(
            "webhook_ack_seconds",
            "Time from a webhook request to its answer (for stored ones: after the commit)",
            ack_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "webhooks_in_flight",
            "Webhook requests being handled now (at most server.max_in_flight)",
            in_flight.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections answered 503 and closed because server.max_connections were open",
            connections_refused.clone(),
        );
        let deliveries = Family::<ResultLabel, Counter>::default();
        registry.register(
            "deliveries",
            "Deliveries handled by the worker",
            deliveries.clone(),
        );
        let outcomes_confirmed = Counter::default();
        registry.register(
            "outcomes_confirmed",
            "Outcomes confirmed into the outbox",
            outcomes_confirmed.clone(),
        );
        let tickets_postponed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "tickets_postponed",
            "Due tickets the confirmer postponed an hour instead of confirming, by reason: unreadable (a pinned contract or a stored state it cannot read; logged with the tenant and ticket)",
            tickets_postponed.clone(),
        );
        let stripe_reports = Family::<ResultLabel, Counter>::default();
        registry.register(
            "stripe_reports",
            "Stripe report attempts by result",
            stripe_reports.clone(),
        );
        let stripe_call_seconds =
            Family::<CallLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "stripe_call_seconds",
            "Duration of each call to Stripe, by call",
            stripe_call_seconds.clone(),
        );
        let queue_deliveries = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "deliveries_queued",
            "Stored deliveries waiting (pending) or kept aside (quarantined), from the last snapshot",
            queue_deliveries.clone(),
        );
        let queue_outcomes = Family::<StateLabel, Gauge>::default();
        registry.register(
            "outcomes",
            "Outcomes by outbox state, from the last snapshot",
            queue_outcomes.clone(),
        );
        let tickets_in_window = Gauge::default();
        registry.register(
            "tickets_in_window",
            "Tickets waiting for a reopen window to pass, from the last snapshot",
            tickets_in_window.clone(),
        );
        let held_for_verification = Gauge::default();
        registry.register(
            "outcomes_held_for_verification",
            "Due resolutions held until their helpdesk's API answers (verification before billing), from the last snapshot",
            held_for_verification.clone(),
        );
        let oldest_unbilled_seconds = Gauge::default();
        registry.register(
            "oldest_unreported_outcome_seconds",
            "Age of the oldest outcome not billed yet (pending, failed, rejected by Stripe, or sent in another Stripe mode than the service's); Stripe refuses events older than 35 days",
            oldest_unbilled_seconds.clone(),
        );
        let unbilled_other_mode = Gauge::default();
        registry.register(
            "outcomes_unbilled_other_mode",
            "Outcomes recorded by a dry-run or reported in test mode while the service sends in another mode: not billed there until `replay --dry-run` / `--from-test`",
            unbilled_other_mode.clone(),
        );
        let snapshot_age_seconds = Gauge::default();
        registry.register(
            "queue_snapshot_age_seconds",
            "Age of the snapshot the queue gauges come from (-1: none yet)",
            snapshot_age_seconds.clone(),
        );
        let stripe = StripeEventMetrics::register(&mut registry);
        let verification = VerificationMetrics::register(&mut registry);
        let outcomes_held = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "outcomes_held",
            "Outcomes set aside unsent because their meter or customer fails the Stripe preflight (each time one is looked at), by reason",
            outcomes_held.clone(),
        );
        let preflight_runs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "preflight_runs",
            "Stripe preflights run, by result: ok, or failed (Stripe not reached; the last good result stays in use)",
            preflight_runs.clone(),
        );
        let preflight_problems = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "preflight_problems",
            "Problems found by the last Stripe preflight that reached Stripe, by reason (meters, then tenants' customers)",
            preflight_problems.clone(),
        );
        Metrics {
            stripe,
            verification,
            registry,
            outcomes_held,
            preflight_runs,
            preflight_problems,
            webhooks,
            webhooks_rejected,
            webhooks_unavailable,
            ack_seconds,
            in_flight,
            connections_refused,
            deliveries,
            outcomes_confirmed,
            tickets_postponed,
            stripe_reports,
            stripe_call_seconds,
            queue_deliveries,
            queue_outcomes,
            tickets_in_window,
            held_for_verification,
            unbilled_other_mode,
            oldest_unbilled_seconds,
            snapshot_age_seconds,
            oldest_unbilled_at: AtomicI64::new(-1),
            snapshot_at: AtomicI64::new(-1),
        }
    }
}

impl Metrics {
    pub fn webhook(&self, result: WebhookResult, took: Duration) {
        let label = match result {
            WebhookResult::Stored => "stored",
            WebhookResult::Duplicate => "duplicate",
            WebhookResult::Rejected(reason) => {
                self.webhooks_rejected
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
                "rejected"
            }
            WebhookResult::Unavailable(reason) => {
                self.webhooks_unavailable
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
                "unavailable"
            }
        };
        self.webhooks
            .get_or_create(&ResultLabel { result: label })
            .inc();
        self.ack_seconds.observe(took.as_secs_f64());
    }

    /// A webhook request started being handled; it ends when the guard drops.
    pub fn request_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn deliveries_processed(&self, ok: usize, quarantined: usize) {
        let add = |result, n: usize| {
            self.deliveries
                .get_or_create(&ResultLabel { result })
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        };
        add("processed", ok);
        add("quarantined", quarantined);
    }

    pub fn outcomes_confirmed(&self, n: usize) {
        self.outcomes_confirmed
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// A due ticket was postponed instead of confirmed (`reason`: `unreadable`).
    pub fn tickets_postponed(&self, reason: &'static str) {
        self.tickets_postponed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn count_report(&self, r: ReportResult) {
        self.stripe_reports
            .get_or_create(&ResultLabel { result: r.label() })
            .inc();
    }

    /// One call to Stripe took `took` (`call`: `meter_event`, `cancel`, …).
    pub fn stripe_call(&self, call: &'static str, took: Duration) {
        self.stripe_call_seconds
            .get_or_create(&CallLabel { call })
            .observe(took.as_secs_f64());
    }

    /// A check with `provider`'s API ended with `result` (`agreed`, `disagreed`, `unreachable`).
    pub fn verification(&self, provider: &str, result: &'static str) {
        self.verification
            .checks
            .get_or_create(&ProviderResultLabel {
                provider: provider_label(provider),
                result,
            })
            .inc();
    }

    /// A check found what no webhook brought (`reason`: the event kind it learned).
    pub fn verification_disagreement(&self, provider: &str, reason: &'static str) {
        self.verification
            .disagreements
            .get_or_create(&ProviderReasonLabel {
                provider: provider_label(provider),
                reason,
            })
            .inc();
    }

    /// The confirmer held a due outcome for verification (`reason`: waiting,
    /// unreachable, past_max_hold).
    pub fn verification_hold(&self, provider: &str, reason: &'static str) {
        self.verification
            .holds
            .get_or_create(&ProviderReasonLabel {
                provider: provider_label(provider),
                reason,
            })
            .inc();
    }

    /// A call to `provider`'s API failed with `status` (a bounded label).
    pub fn helpdesk_api_error(&self, provider: &str, status: String) {
        self.verification
            .api_errors
            .get_or_create(&ProviderStatusLabel {
                provider: provider_label(provider),
                status,
            })
            .inc();
    }

    /// `n` outcomes were set aside unsent by the preflight, for `reason`.
    pub fn outcomes_held(&self, reason: &'static str, n: usize) {
        self.outcomes_held
            .get_or_create(&ReasonLabel { reason })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// A Stripe preflight ended (`ok` or `failed`).
    pub fn preflight_ran(&self, result: &'static str) {
        self.preflight_runs
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The problems of the latest preflight, by reason (a reason absent reads as gone).
    pub fn set_preflight_problems(&self, problems: &std::collections::BTreeMap<&'static str, i64>) {
        self.preflight_problems.clear();
        for (reason, n) in problems {
            self.preflight_problems
                .get_or_create(&ReasonLabel { reason })
                .set(*n);
        }
    }

    /// Take a fresh queue snapshot (the background refresher calls this).
    pub fn set_queues(&self, q: &QueueCounts, now: Millis) {
        // A state absent from this snapshot has no rows: it reads 0, not its
        // last value (an alert on failed outcomes must clear).
        self.queue_deliveries.clear();
        self.queue_outcomes.clear();
        self.stripe.queued.clear();
        for status in [StripeEventState::Pending, StripeEventState::Failed] {
            self.stripe
                .queued
                .get_or_create(&StatusLabel {
                    status: status.to_string(),
                })
                .set(0);
        }
        for (status, n) in &q.stripe_events {
            self.stripe
                .queued
                .get_or_create(&StatusLabel {
                    status: status.to_string(),
                })
                .set(*n);
        }
        for state in [
            OutcomeState::Pending,
            OutcomeState::Failed,
            OutcomeState::RejectedByStripe,
        ] {
            self.queue_outcomes
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(0);
        }
        for (status, n) in &q.deliveries {
            self.queue_deliveries
                .get_or_create(&StatusLabel {
                    status: status.to_string(),
                })
                .set(*n);
        }
        for (state, n) in &q.outcomes {
            self.queue_outcomes
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(*n);
        }
        // A state this build does not know, under its stored spelling.
        for (state, n) in &q.outcomes_unknown {
            self.queue_outcomes
                .get_or_create(&StateLabel {
                    state: state.clone(),
                })
                .set(*n);
        }
        self.tickets_in_window.set(q.tickets_waiting);
        self.held_for_verification.set(q.held_for_verification);
        self.unbilled_other_mode.set(q.unbilled_other_mode);
        self.oldest_unbilled_at
            .store(q.oldest_unbilled_outcome.map_or(-1, Millis::as_ms), Relaxed);
        self.snapshot_at.store(now.as_ms(), Relaxed);
    }

    /// How a request to `POST /stripe/events` ended (`stored`, `duplicate`,
    /// `ignored`, or a refusal's code).
    pub fn stripe_notification(&self, result: &'static str) {
        self.stripe
            .notifications
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A stored notification was `processed`, `retried` or `failed`.
    pub fn stripe_event_processed(&self, result: &'static str) {
        self.stripe
            .processed
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// An outcome was marked rejected by Stripe with this error code.
    pub fn stripe_rejection(&self, code: &str) {
        self.stripe
            .rejections
            .get_or_create(&CodeLabel {
                code: rejection_code_label(code),
            })
            .inc();
    }

    /// The drift of one tenant's meter at the last comparison (0: none).
    pub fn reconcile_drift(&self, tenant: &str, meter: &str, drift: f64) {
        self.stripe
            .drift
            .get_or_create(&MeterLabel {
                tenant: tenant.into(),
                meter: meter.into(),
            })
            .set(drift);
    }

    /// One comparison with Stripe ended: `no_drift`, `drift` or `error`.
    pub fn reconcile_run(&self, result: &'static str) {
        self.stripe
            .reconcile_runs
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The OpenMetrics text. Costs the same whatever the database holds.
    pub fn render(&self, now: Millis) -> String {
        let age_seconds =
            |at: i64| i64::try_from(now.since(Millis::from_ms(at)).as_secs()).unwrap_or(i64::MAX);
        let oldest = self.oldest_unbilled_at.load(Relaxed);
        self.oldest_unbilled_seconds
            .set(if oldest < 0 { 0 } else { age_seconds(oldest) });
        let taken = self.snapshot_at.load(Relaxed);
        self.snapshot_age_seconds
            .set(if taken < 0 { -1 } else { age_seconds(taken) });
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.webhook(WebhookResult::Stored, Duration::from_millis(3));
        m.webhook(WebhookResult::Duplicate, Duration::from_millis(1));
        m.webhook(WebhookResult::Rejected("bad_signature"), Duration::ZERO);
        m.webhook(WebhookResult::Unavailable("unavailable"), Duration::ZERO);
        m.count_report(ReportResult::Failed);
        m.stripe_call("meter_event", Duration::from_millis(40));
        m.outcomes_held("customer_deleted", 2);
        m.preflight_ran("ok");
        m.set_preflight_problems(&[("meter_missing", 1)].into());
        let q = QueueCounts {
            outcomes: vec![(OutcomeState::Pending, 3)],
            oldest_unbilled_outcome: Some(Millis::EPOCH),
            ..Default::default()
        };
        m.set_queues(&q, Millis::from_ms(5_000));
        let text = m.render(Millis::from_ms(10_000));
        let later = QueueCounts {
            outcomes: vec![(OutcomeState::Reported, 3)],
            ..Default::default()
        };
        m.set_queues(&later, Millis::from_ms(20_000));
        let after = m.render(Millis::from_ms(20_000));
        assert!(
            after.contains("outcome_meter_outcomes{state=\"pending\"} 0"),
            "{after}"
        );
        assert!(
            after.contains("outcome_meter_outcomes{state=\"failed\"} 0"),
            "{after}"
        );
        assert!(after.contains("outcome_meter_outcomes{state=\"reported\"} 3"));
        assert!(
            after.contains("outcome_meter_outcomes{state=\"rejected_by_stripe\"} 0"),
            "{after}"
        );
        assert!(
            after.contains("outcome_meter_stripe_events_queued{status=\"failed\"} 0"),
            "{after}"
        );
        for line in [
            "outcome_meter_webhooks_total{result=\"stored\"} 1",
            "outcome_meter_webhooks_total{result=\"rejected\"} 1",
            "outcome_meter_webhooks_total{result=\"unavailable\"} 1",
            "outcome_meter_webhooks_rejected_total{reason=\"bad_signature\"} 1",
            "outcome_meter_webhooks_unavailable_total{reason=\"unavailable\"} 1",
            "outcome_meter_webhook_ack_seconds_count 4",
            "outcome_meter_stripe_call_seconds_count{call=\"meter_event\"} 1",
            "outcome_meter_stripe_reports_total{result=\"failed\"} 1",
            "outcome_meter_outcomes{state=\"pending\"} 3",
            "outcome_meter_oldest_unreported_outcome_seconds 10",
            "outcome_meter_queue_snapshot_age_seconds 5",
            "outcome_meter_outcomes_held_total{reason=\"customer_deleted\"} 2",
            "outcome_meter_preflight_runs_total{result=\"ok\"} 1",
            "outcome_meter_preflight_problems{reason=\"meter_missing\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn rejections_and_drift_are_counted_with_bounded_labels() {
        let m = Metrics::default();
        m.stripe_notification("stored");
        m.stripe_notification("bad_signature");
        m.stripe_event_processed("processed");
        m.stripe_rejection("meter_event_customer_not_found");
        m.stripe_rejection("a_code_stripe_adds_next_year");
        m.reconcile_drift("acme", "resolved_ticket", -2.0);
        m.reconcile_run("drift");
        let text = m.render(Millis::EPOCH);
        for line in [
            "outcome_meter_stripe_notifications_total{result=\"stored\"} 1",
            "outcome_meter_stripe_notifications_total{result=\"bad_signature\"} 1",
            "outcome_meter_stripe_events_processed_total{result=\"processed\"} 1",
            "outcome_meter_stripe_rejections_total{code=\"meter_event_customer_not_found\"} 1",
            "outcome_meter_stripe_rejections_total{code=\"other\"} 1",
            "outcome_meter_reconcile_drift{tenant=\"acme\",meter=\"resolved_ticket\"} -2.0",
            "outcome_meter_reconcile_runs_total{result=\"drift\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
