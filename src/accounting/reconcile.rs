//! `outcome-meter reconcile`: what Stripe's meter summaries say against what we
//! reported, per customer and meter. Any drift makes the command exit non-zero.

use super::fmt_ms;
use super::ledger::{totals, MeterTotals};
use super::period::{period_rows_on, Period};
use crate::sink::Sink;
use crate::store::{Store, StoreError};
use crate::stripe::{StripeClient, StripeError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error("no Stripe meter found for event name(s) {0:?}: create the meter in Stripe, or name it in [stripe.meter_ids] <event_name> = \"mtr_...\"")]
    MissingMeterIds(Vec<String>),
    /// No outcome of the tenant in the period and no meter id configured: there is
    /// nothing to ask Stripe about, and "no drift" would be a claim nobody checked.
    #[error("nothing to compare for tenant `{tenant}` from {from} to {to}: it has no outcome in the period and no meter is configured, so Stripe was not asked; set [stripe.meter_ids] <event_name> = \"mtr_...\" for each meter (usage at Stripe with no outcome here is drift too)")]
    NothingToCompare {
        tenant: String,
        from: String,
        to: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MeterLine {
    pub event_name: String,
    pub meter_id: String,
    /// What Stripe should have: reported values minus reversals, by Stripe timestamp.
    pub expected: i64,
    pub stripe: f64,
    pub drift: f64,
    /// Confirmed but not at Stripe yet (pending or failed in the outbox).
    pub outbox_count: i64,
    pub outbox_value: i64,
    /// Accepted, then rejected by Stripe (named by a rejection event): not expected.
    pub rejected_count: i64,
    pub rejected_value: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    pub tenant: String,
    pub stripe_customer_id: String,
    pub from: String,
    pub to: String,
    pub meters: Vec<MeterLine>,
}

impl Reconciliation {
    pub fn has_drift(&self) -> bool {
        self.meters.iter().any(|m| m.drift.abs() > f64::EPSILON)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Reconciliation of tenant {} (Stripe customer {}) from {} to {}",
            self.tenant, self.stripe_customer_id, self.from, self.to
        );
        let _ = writeln!(
            s,
            "{:<24} {:<22} {:>10} {:>10} {:>8} {:>14}",
            "meter", "meter id", "expected", "stripe", "drift", "outbox (value)"
        );
        for m in &self.meters {
            let _ = writeln!(
                s,
                "{:<24} {:<22} {:>10} {:>10} {:>8} {:>8} ({})",
                m.event_name,
                m.meter_id,
                m.expected,
                m.stripe,
                m.drift,
                m.outbox_count,
                m.outbox_value
            );
        }
        for m in self.meters.iter().filter(|m| m.rejected_count > 0) {
            let _ = writeln!(
                s,
                "{}: {} outcome(s) (value {}) rejected by Stripe after it accepted them, not expected: \
                 `outcomes --state rejected_by_stripe`, resend with `replay --rejected` once the cause is fixed.",
                m.event_name, m.rejected_count, m.rejected_value
            );
        }
        let _ = writeln!(
            s,
            "{}",
            if self.has_drift() {
                "DRIFT: Stripe and outcome-meter disagree (summaries are eventually consistent: re-run after a few minutes before acting)."
            } else {
                "No drift."
            }
        );
        if self.meters.iter().any(|m| m.drift < -f64::EPSILON) {
            let _ = writeln!(
                s,
                "Stripe counts less than outcome-meter reported: it may have rejected events after accepting them \
                 without naming them (its rejection events name samples only). Check the meter's errors in the \
                 Stripe Dashboard; see docs/stripe.md, \"Stripe's asynchronous rejections\"."
            );
        }
        s
    }
}

/// Where a tenant's usage is at Stripe: its customer, on the platform or a
/// connected account, in one mode.
#[derive(Debug, Clone, Copy)]
pub struct StripeTarget<'a> {
    pub customer: &'a str,
    pub account: Option<&'a str>,
    pub mode: crate::stripe::mode::StripeMode,
}

/// Compare one meter of one tenant's customer with Stripe over `period` (sent to
/// Stripe in whole minutes: give a minute-aligned period for an exact comparison).
pub async fn reconcile_meter(
    store: &Store,
    client: &StripeClient,
    tenant: &str,
    at: &StripeTarget<'_>,
    event_name: &str,
    meter_id: &str,
    period: Period,
) -> Result<MeterLine, ReconcileError> {
    let (outcomes, reversals) = period_rows_on(store, tenant, period, Sink::StripeMeters).await?;
    let t = totals(&outcomes, &reversals, period, at.mode)
        .remove(event_name)
        .unwrap_or_default();
    let (start, end) = (
        (period.from.as_ms() / 60_000) * 60,
        (period.to.as_ms() / 60_000) * 60,
    );
    let stripe = client
        .meter_total(meter_id, at.customer, start, end, at.account)
        .await?;
    let mut line = MeterLine::expecting(t);
    line.event_name = event_name.to_string();
    line.meter_id = meter_id.to_string();
    line.stripe = stripe;
    line.drift = stripe - line.expected as f64;
    Ok(line)
}

impl MeterLine {
    /// What the ledger expects at Stripe for a meter (Stripe's side not yet read).
    fn expecting(t: MeterTotals) -> MeterLine {
        MeterLine {
            event_name: t.event_name,
            expected: t.net_value,
            outbox_count: t.awaiting_count,
            outbox_value: t.awaiting_value,
            rejected_count: t.rejected_count,
            rejected_value: t.rejected_value,
            ..Default::default()
        }
    }
}

/// Compare the local reported totals with Stripe's meter event summaries, for every
/// meter with local outcomes in the period and every meter in `meter_ids`.
pub async fn reconcile(
    store: &Store,
    client: &StripeClient,
    meter_ids: &BTreeMap<String, String>,
    tenant: &str,
    at: &StripeTarget<'_>,
    period: Period,
) -> Result<Reconciliation, ReconcileError> {
    reconcile_with(store, client, meter_ids, &|_| None, tenant, at, period).await
}

/// [`reconcile`], where an event name with local outcomes that `meter_ids` does
/// not name gets its meter id from `lookup` (the account's meters, as the
/// preflight read them).
pub async fn reconcile_with(
    store: &Store,
    client: &StripeClient,
    meter_ids: &BTreeMap<String, String>,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    tenant: &str,
    at: &StripeTarget<'_>,
    period: Period,
) -> Result<Reconciliation, ReconcileError> {
    let (customer, account, mode) = (at.customer, at.account, at.mode);
    let mut meter_ids = meter_ids.clone();
    let (outcomes, reversals) = period_rows_on(store, tenant, period, Sink::StripeMeters).await?;
    // The same arithmetic as the statement's totals (see `ledger`).
    let mut lines: BTreeMap<String, MeterLine> = totals(&outcomes, &reversals, period, mode)
        .into_values()
        .map(|t| (t.event_name.clone(), MeterLine::expecting(t)))
        .collect();
    // Every configured meter too: usage at Stripe with no local outcome is drift.
    for event_name in meter_ids.keys() {
        lines
            .entry(event_name.clone())
            .or_insert_with(|| MeterLine {
                event_name: event_name.clone(),
                ..Default::default()
            });
    }
    for name in lines.keys() {
        if !meter_ids.contains_key(name) {
            if let Some(id) = lookup(name) {
                meter_ids.insert(name.clone(), id);
            }
        }
    }
    let missing: Vec<String> = lines
        .keys()
        .filter(|k| !meter_ids.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(ReconcileError::MissingMeterIds(missing));
    }
    if lines.is_empty() {
        return Err(ReconcileError::NothingToCompare {
            tenant: tenant.to_string(),
            from: fmt_ms(period.from),
            to: fmt_ms(period.to),
        });
    }
    // Stripe wants whole minutes.
    let (start, end) = (
        (period.from.as_ms() / 60_000) * 60,
        (period.to.as_ms() / 60_000) * 60,
    );
    for l in lines.values_mut() {
        l.meter_id = meter_ids.get(&l.event_name).cloned().unwrap_or_default();
        l.stripe = client
            .meter_total(&l.meter_id, customer, start, end, account)
            .await?;
        l.drift = l.stripe - l.expected as f64;
    }
    Ok(Reconciliation {
        tenant: tenant.to_string(),
        stripe_customer_id: customer.to_string(),
        from: fmt_ms(period.from),
        to: fmt_ms(period.to),
        meters: lines.into_values().collect(),
    })
}
