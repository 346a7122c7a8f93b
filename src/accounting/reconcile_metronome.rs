//! `outcome-meter reconcile` for a tenant billed on Metronome: what we reported
//! (outcomes frozen to the `metronome` sink, less applied corrections, by the
//! ledger's arithmetic) against Metronome's usage API (`POST /v1/usage`, one
//! aggregate per billable metric over the period), per event type. Any drift
//! makes the command exit non-zero, as the Stripe reconcile does.
//!
//! The usage API takes Metronome customer ids (UUIDs), not ingest aliases
//! (<https://docs.metronome.com/api-reference/usage/get-batched-usage-data>), and
//! asks by billable metric, not by event type: `metronome.billable_metric_ids`
//! names the metric of each event type.

use super::fmt_ms;
use super::ledger::{totals, MeterTotals};
use super::period::{period_rows_on, Period};
use crate::metronome::{MetronomeClient, MetronomeError};
use crate::settings::{Settings, TenantSettings};
use crate::sink::Sink;
use crate::store::{Store, StoreError};
use crate::stripe::mode::StripeMode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, thiserror::Error)]
pub enum MetronomeReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Metronome(#[from] MetronomeError),
    /// The configuration cannot read Metronome's usage (dry-run, no token, no customer).
    #[error("reconcile: {0}")]
    Setup(String),
    #[error("no Metronome billable metric id for event type(s) {0:?}: name each in [metronome.billable_metric_ids] <event_type> = \"<uuid>\"")]
    MissingMetricIds(Vec<String>),
    /// Nothing billed on Metronome in the period and no metric configured: nothing
    /// to ask Metronome about, and "no drift" would be a claim nobody checked.
    #[error("nothing to compare for tenant `{tenant}` from {from} to {to}: it has no outcome billed on Metronome in the period and no billable metric is configured; set [metronome.billable_metric_ids] <event_type> = \"<uuid>\"")]
    NothingToCompare {
        tenant: String,
        from: String,
        to: String,
    },
}

/// One event type of a tenant's Metronome customer over the period.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MetricLine {
    pub event_type: String,
    pub billable_metric_id: String,
    /// What Metronome should hold: reported values minus applied corrections
    /// (a correction counts at its own timestamp).
    pub expected: i64,
    pub metronome: f64,
    pub drift: f64,
    /// Confirmed, not at Metronome yet (pending or failed in the outbox).
    pub outbox_count: i64,
    pub outbox_value: i64,
}

impl MetricLine {
    fn expecting(t: MeterTotals) -> MetricLine {
        MetricLine {
            event_type: t.event_name,
            expected: t.net_value,
            outbox_count: t.awaiting_count,
            outbox_value: t.awaiting_value,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MetronomeReconciliation {
    pub tenant: String,
    /// The Metronome customer id the usage was read for.
    pub metronome_customer_id: String,
    pub from: String,
    pub to: String,
    pub metrics: Vec<MetricLine>,
}

impl MetronomeReconciliation {
    pub fn has_drift(&self) -> bool {
        self.metrics.iter().any(|m| m.drift.abs() > f64::EPSILON)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Reconciliation of tenant {} (Metronome customer {}) from {} to {}",
            self.tenant, self.metronome_customer_id, self.from, self.to
        );
        let _ = writeln!(
            s,
            "{:<24} {:<38} {:>10} {:>10} {:>8} {:>14}",
            "event type", "billable metric", "expected", "metronome", "drift", "outbox (value)"
        );
        for m in &self.metrics {
            let _ = writeln!(
                s,
                "{:<24} {:<38} {:>10} {:>10} {:>8} {:>8} ({})",
                m.event_type,
                m.billable_metric_id,
                m.expected,
                m.metronome,
                m.drift,
                m.outbox_count,
                m.outbox_value
            );
        }
        let _ = writeln!(
            s,
            "{}",
            if self.has_drift() {
                "DRIFT: Metronome and outcome-meter disagree (Metronome aggregates usage asynchronously: re-run after a few minutes before acting)."
            } else {
                "No drift."
            }
        );
        s
    }
}

/// Where the usage is read: the Metronome customer id (a UUID), in the mode the
/// outcomes were reported in (`stripe.mode` of the process that sent them).
#[derive(Debug, Clone, Copy)]
pub struct MetronomeTarget<'a> {
    pub customer_id: &'a str,
    pub mode: StripeMode,
}

/// Compare what we reported to Metronome for `tenant` over `period` with
/// Metronome's usage, for every event type with outcomes billed on Metronome in
/// the period and every event type in `metric_ids`.
pub async fn reconcile_metronome(
    store: &Store,
    client: &MetronomeClient,
    metric_ids: &BTreeMap<String, String>,
    tenant: &str,
    at: &MetronomeTarget<'_>,
    period: Period,
) -> Result<MetronomeReconciliation, MetronomeReconcileError> {
    let (outcomes, reversals) = period_rows_on(store, tenant, period, Sink::Metronome).await?;
    let mut lines: BTreeMap<String, MetricLine> = totals(&outcomes, &reversals, period, at.mode)
        .into_values()
        .map(|t| (t.event_name.clone(), MetricLine::expecting(t)))
        .collect();
    // Every configured metric too: usage at Metronome with no outcome here is drift.
    for event_type in metric_ids.keys() {
        lines
            .entry(event_type.clone())
            .or_insert_with(|| MetricLine {
                event_type: event_type.clone(),
                ..Default::default()
            });
    }
    let missing: Vec<String> = lines
        .keys()
        .filter(|k| !metric_ids.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(MetronomeReconcileError::MissingMetricIds(missing));
    }
    if lines.is_empty() {
        return Err(MetronomeReconcileError::NothingToCompare {
            tenant: tenant.to_string(),
            from: fmt_ms(period.from),
            to: fmt_ms(period.to),
        });
    }
    // The usage API takes whole seconds (RFC 3339).
    let start = period.from.to_datetime();
    let end = period.to.to_datetime();
    for l in lines.values_mut() {
        l.billable_metric_id = metric_ids.get(&l.event_type).cloned().unwrap_or_default();
        l.metronome = client
            .usage_total(at.customer_id, &l.billable_metric_id, start, end)
            .await?;
        l.drift = l.metronome - l.expected as f64;
    }
    Ok(MetronomeReconciliation {
        tenant: tenant.to_string(),
        metronome_customer_id: at.customer_id.to_string(),
        from: fmt_ms(period.from),
        to: fmt_ms(period.to),
        metrics: lines.into_values().collect(),
    })
}

/// `reconcile` of a tenant on the `metronome` sink, as the command runs it:
/// Metronome's usage read with `[metronome]`'s token for `customer_id` (default:
/// the tenant's `metronome_customer_id`, which must then be the customer's id,
/// not an ingest alias), the metrics of `metronome.billable_metric_ids`.
pub async fn reconcile_tenant(
    settings: &Settings,
    store: &Store,
    tenant: &TenantSettings,
    customer_id: Option<&str>,
    period: Period,
) -> Result<MetronomeReconciliation, MetronomeReconcileError> {
    let setup = |why: String| MetronomeReconcileError::Setup(why);
    if settings.stripe.dry_run() {
        return Err(setup(
            "reconcile reads Metronome's usage: stripe.mode is \"dry-run\", so nothing was sent to compare".into(),
        ));
    }
    let m = &settings.metronome;
    if let Some(problem) = m.token_problem() {
        return Err(setup(problem));
    }
    let Some(customer_id) = customer_id.or(tenant.metronome_customer_id.as_deref()) else {
        return Err(setup(format!(
            "tenant `{}` has no metronome_customer_id: pass --metronome-customer <id>",
            tenant.id
        )));
    };
    let client = MetronomeClient::new(&m.api_base, &m.api_token, m.timeout)?;
    reconcile_metronome(
        store,
        &client,
        &m.billable_metric_ids,
        &tenant.id,
        &MetronomeTarget {
            customer_id,
            mode: settings.stripe.mode(),
        },
        period,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(metronome: f64) -> MetronomeReconciliation {
        MetronomeReconciliation {
            tenant: "acme".into(),
            metronome_customer_id: "cust-uuid".into(),
            from: "2026-01-01T00:00:00Z".into(),
            to: "2026-02-01T00:00:00Z".into(),
            metrics: vec![MetricLine {
                event_type: "resolved_ticket".into(),
                billable_metric_id: "metric-uuid".into(),
                expected: 3,
                metronome,
                drift: metronome - 3.0,
                outbox_count: 1,
                outbox_value: 1,
            }],
        }
    }

    #[test]
    fn a_line_matches_or_drifts() {
        let same = rec(3.0);
        assert!(!same.has_drift());
        let text = same.render();
        assert!(text.contains("Metronome customer cust-uuid"), "{text}");
        assert!(
            text.contains("metric-uuid") && text.ends_with("No drift.\n"),
            "{text}"
        );
        let off = rec(4.0);
        assert!(off.has_drift());
        assert!(off.render().contains("DRIFT"));
    }
}
