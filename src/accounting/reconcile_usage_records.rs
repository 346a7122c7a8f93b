//! `outcome-meter reconcile` for a tenant on the `stripe_usage_records` sink:
//! outcome-meter's usage records of the subscription item against Stripe's
//! usage record summaries, one line per billing period overlapping the asked
//! dates ([`rules::reconcile`]). Any line that is not a match is drift.
//!
//! Stripe: a summary's figure for a period that has not ended "should be seen as
//! unstable until the subscription billing period ends"
//! (<https://docs.stripe.com/api/usage-record-summary/list?api-version=2025-02-24.acacia>).

use super::fmt_ms;
use super::period::Period as Dates;
use crate::store::{Store, StoreError};
use crate::stripe::mode::StripeMode;
use crate::stripe::usage_records::rules::{self, LineStatus, LocalRecord, ReconcileLine};
use crate::stripe::{StripeClient, StripeError};
use crate::time::Millis;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, thiserror::Error)]
pub enum UsageReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the usage record summaries: {0}")]
    Stripe(#[from] StripeError),
}

/// One billing period, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageLine {
    /// Unix seconds, `start < t <= end`.
    pub period_start: i64,
    pub period_end: i64,
    pub invoice: Option<String>,
    /// Not ended: Stripe's figure may still change.
    pub open: bool,
    pub local: i64,
    pub in_doubt: i64,
    pub stripe: i64,
    /// `match`, `within_doubt` or `drift`.
    pub status: &'static str,
    /// Stripe's total less outcome-meter's (positive: Stripe bills more).
    pub delta: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReconcile {
    pub tenant: String,
    pub subscription_item: String,
    pub lines: Vec<UsageLine>,
    /// outcome-meter's usage in no period Stripe lists.
    pub outside: i64,
}

impl UsageReconcile {
    pub fn has_drift(&self) -> bool {
        self.outside != 0 || self.lines.iter().any(|l| l.status != "match")
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Reconciliation of tenant {} (usage records on subscription item {})",
            self.tenant, self.subscription_item
        );
        if self.lines.is_empty() {
            let _ = writeln!(s, "no billing period of the item overlaps the dates asked");
        }
        for l in &self.lines {
            let period = format!(
                "{} to {}{}",
                fmt_ms(Millis::from_ms(l.period_start.saturating_mul(1000))),
                fmt_ms(Millis::from_ms(l.period_end.saturating_mul(1000))),
                if l.open {
                    " (open: Stripe's figure may change)"
                } else {
                    ""
                }
            );
            let invoice = l
                .invoice
                .as_deref()
                .map(|i| format!(", invoice {i}"))
                .unwrap_or_default();
            let detail = match l.status {
                "match" => String::new(),
                "within_doubt" => format!(
                    ": {} in doubt here would explain it; the reporter settles them from this summary",
                    l.in_doubt
                ),
                _ => format!(": delta {:+} (positive: Stripe bills more)", l.delta),
            };
            let _ = writeln!(
                s,
                "{:<13} {period}{invoice}: outcome-meter {} (+{} in doubt), Stripe {}{detail}",
                l.status, l.local, l.in_doubt, l.stripe
            );
        }
        if self.outside != 0 {
            let _ = writeln!(
                s,
                "drift         {} of outcome-meter's usage is in no billing period Stripe lists for the item",
                self.outside
            );
        }
        s
    }
}

/// Place `line` as printed.
fn line(l: ReconcileLine) -> UsageLine {
    let (status, delta) = match l.status {
        LineStatus::Match => ("match", 0),
        LineStatus::WithinDoubt => ("within_doubt", l.stripe.saturating_sub(l.local)),
        LineStatus::Differs { delta } => ("drift", delta),
    };
    UsageLine {
        period_start: l.period.start,
        period_end: l.period.end,
        invoice: l.invoice,
        open: l.open,
        local: l.local,
        in_doubt: l.in_doubt,
        stripe: l.stripe,
        status,
        delta,
    }
}

/// Whether a billing period (seconds, `start < t <= end`) overlaps the dates asked.
fn overlaps(start: i64, end: i64, dates: Dates) -> bool {
    Millis::from_ms(start.saturating_mul(1000)) < dates.to
        && Millis::from_ms(end.saturating_mul(1000)) >= dates.from
}

/// Compare the item's records in `mode` with Stripe's summaries (`client`: the
/// legacy client, on the tenant's account).
#[allow(clippy::too_many_arguments)]
pub async fn reconcile_usage_records(
    store: &Store,
    client: &StripeClient,
    tenant: &str,
    item: &str,
    account: Option<&str>,
    mode: StripeMode,
    dates: Dates,
    world_now: DateTime<Utc>,
) -> Result<UsageReconcile, UsageReconcileError> {
    let summaries = client.usage_record_summaries(item, account).await?;
    let local: Vec<LocalRecord> = store
        .usage_local_records(item, account, mode)
        .await?
        .into_iter()
        .map(|r| LocalRecord {
            timestamp: r.timestamp,
            quantity: r.value,
            in_doubt: r.in_doubt,
        })
        .collect();
    let r = rules::reconcile(&local, &summaries, world_now);
    Ok(UsageReconcile {
        tenant: tenant.to_string(),
        subscription_item: item.to_string(),
        lines: r
            .lines
            .into_iter()
            .filter(|l| overlaps(l.period.start, l.period.end, dates))
            .map(line)
            .collect(),
        outside: r.outside,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::usage_records::Period;

    fn l(status: LineStatus, local: i64, stripe: i64) -> ReconcileLine {
        ReconcileLine {
            period: Period {
                start: 0,
                end: 86_400,
            },
            invoice: Some("in_1".into()),
            open: false,
            local,
            in_doubt: 0,
            stripe,
            status,
        }
    }

    #[test]
    fn only_matching_lines_are_not_drift() {
        let mut r = UsageReconcile {
            tenant: "acme".into(),
            subscription_item: "si_1".into(),
            lines: vec![line(l(LineStatus::Match, 3, 3))],
            outside: 0,
        };
        assert!(!r.has_drift(), "{}", r.render());
        assert!(r.render().contains("match"), "{}", r.render());
        r.lines
            .push(line(l(LineStatus::Differs { delta: 1 }, 3, 4)));
        assert!(r.has_drift());
        assert!(r.render().contains("delta +1"), "{}", r.render());
        r.lines.truncate(1);
        r.outside = 2;
        assert!(r.has_drift());
    }

    #[test]
    fn periods_are_kept_when_they_overlap_the_dates() {
        let dates = Dates {
            from: Millis::from_ms(10_000),
            to: Millis::from_ms(20_000),
        };
        assert!(overlaps(5, 15, dates));
        assert!(overlaps(19, 40, dates));
        assert!(!overlaps(20, 40, dates));
        assert!(!overlaps(1, 9, dates));
    }
}
