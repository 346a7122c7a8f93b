//! Process counters and the Prometheus text for `GET /metrics`.

use crate::store::QueueCounts;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    webhooks_stored: AtomicU64,
    webhooks_duplicate: AtomicU64,
    webhooks_rejected: AtomicU64,
    deliveries_processed: AtomicU64,
    deliveries_quarantined: AtomicU64,
    outcomes_confirmed: AtomicU64,
    stripe_reported: AtomicU64,
    stripe_retried: AtomicU64,
    stripe_failed: AtomicU64,
    stripe_dry_run: AtomicU64,
}

/// How a Stripe report ended, for counting.
#[derive(Debug, Clone, Copy)]
pub enum ReportResult {
    Reported,
    Retried,
    Failed,
    DryRun,
}

impl Metrics {
    pub fn webhook(&self, stored: bool, duplicate: bool) {
        match (stored, duplicate) {
            (true, false) => &self.webhooks_stored,
            (true, true) => &self.webhooks_duplicate,
            _ => &self.webhooks_rejected,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn deliveries_processed(&self, ok: usize, quarantined: usize) {
        self.deliveries_processed.fetch_add(ok as u64, Relaxed);
        self.deliveries_quarantined
            .fetch_add(quarantined as u64, Relaxed);
    }

    pub fn outcomes_confirmed(&self, n: usize) {
        self.outcomes_confirmed.fetch_add(n as u64, Relaxed);
    }

    pub fn report(&self, r: ReportResult) {
        match r {
            ReportResult::Reported => &self.stripe_reported,
            ReportResult::Retried => &self.stripe_retried,
            ReportResult::Failed => &self.stripe_failed,
            ReportResult::DryRun => &self.stripe_dry_run,
        }
        .fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition: process counters plus queue gauges.
    pub fn render(&self, q: &QueueCounts, now_ms: i64) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, labels: &[(&str, &AtomicU64)]| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for (l, v) in labels {
                let _ = writeln!(s, "{name}{l} {}", v.load(Relaxed));
            }
        };
        counter(
            "outcome_meter_webhooks_total",
            "Webhook requests by result.",
            &[
                ("{result=\"stored\"}", &self.webhooks_stored),
                ("{result=\"duplicate\"}", &self.webhooks_duplicate),
                ("{result=\"rejected\"}", &self.webhooks_rejected),
            ],
        );
        counter(
            "outcome_meter_deliveries_total",
            "Deliveries handled by the worker.",
            &[
                ("{result=\"processed\"}", &self.deliveries_processed),
                ("{result=\"quarantined\"}", &self.deliveries_quarantined),
            ],
        );
        counter(
            "outcome_meter_outcomes_confirmed_total",
            "Outcomes confirmed into the outbox.",
            &[("", &self.outcomes_confirmed)],
        );
        counter(
            "outcome_meter_stripe_reports_total",
            "Stripe report attempts by result.",
            &[
                ("{result=\"reported\"}", &self.stripe_reported),
                ("{result=\"retried\"}", &self.stripe_retried),
                ("{result=\"failed\"}", &self.stripe_failed),
                ("{result=\"dry_run\"}", &self.stripe_dry_run),
            ],
        );
        let _ = writeln!(s, "# HELP outcome_meter_deliveries Stored deliveries by status.\n# TYPE outcome_meter_deliveries gauge");
        for (status, n) in &q.deliveries {
            let _ = writeln!(s, "outcome_meter_deliveries{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(s, "# HELP outcome_meter_outcomes Outcomes by outbox state.\n# TYPE outcome_meter_outcomes gauge");
        for (state, n) in &q.outcomes {
            let _ = writeln!(s, "outcome_meter_outcomes{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP outcome_meter_tickets_in_window Tickets waiting for a reopen window to pass.\n# TYPE outcome_meter_tickets_in_window gauge\noutcome_meter_tickets_in_window {}",
            q.tickets_waiting
        );
        let age = q
            .oldest_pending_outcome
            .map_or(0, |t| (now_ms - t).max(0) / 1000);
        let _ = writeln!(
            s,
            "# HELP outcome_meter_oldest_unreported_outcome_seconds Age of the oldest outcome not yet reported (Stripe refuses events older than 35 days).\n# TYPE outcome_meter_oldest_unreported_outcome_seconds gauge\noutcome_meter_oldest_unreported_outcome_seconds {age}"
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::default();
        m.webhook(true, false);
        m.webhook(true, true);
        m.report(ReportResult::Failed);
        let q = QueueCounts {
            outcomes: vec![("pending".into(), 3)],
            oldest_pending_outcome: Some(0),
            ..Default::default()
        };
        let text = m.render(&q, 10_000);
        assert!(text.contains("outcome_meter_webhooks_total{result=\"stored\"} 1"));
        assert!(text.contains("outcome_meter_stripe_reports_total{result=\"failed\"} 1"));
        assert!(text.contains("outcome_meter_outcomes{state=\"pending\"} 3"));
        assert!(text.contains("outcome_meter_oldest_unreported_outcome_seconds 10"));
    }
}
