//! Date ranges on the command line: `--from 2026-01-01 --to 2026-01-31` means the
//! whole of both days (UTC); RFC 3339 times are taken as given (`--to` exclusive).

use crate::time::Millis;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Inclusive.
    pub from: Millis,
    /// Exclusive.
    pub to: Millis,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeriodError {
    #[error("`{0}` is not a date (YYYY-MM-DD) or an RFC 3339 time")]
    BadDate(String),
    #[error("the period is empty: --from must be before --to")]
    Empty,
}

fn parse(s: &str, end_of_day: bool) -> Result<DateTime<Utc>, PeriodError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| PeriodError::BadDate(s.to_string()))?;
    let d = if end_of_day {
        d.succ_opt().unwrap_or(d)
    } else {
        d
    };
    Ok(Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)))
}

impl Period {
    pub fn parse(from: &str, to: &str) -> Result<Period, PeriodError> {
        let p = Period {
            from: Millis::from(parse(from, false)?),
            to: Millis::from(parse(to, true)?),
        };
        if p.from >= p.to {
            return Err(PeriodError::Empty);
        }
        Ok(p)
    }
}

/// What statements and reconciliation read of a tenant's period: the outcomes
/// confirmed in it, and every reversal of the tenant (a correction may take
/// effect in another period than its outcome's; see `ledger`).
pub async fn period_rows(
    store: &crate::store::Store,
    tenant: &str,
    period: Period,
) -> Result<
    (
        Vec<crate::store::OutcomeRow>,
        Vec<crate::store::ReversalRow>,
    ),
    crate::store::StoreError,
> {
    let outcomes = store
        .list_outcomes(&crate::store::OutcomeFilter {
            tenant: Some(tenant.to_string()),
            confirmed_from: Some(period.from),
            confirmed_to: Some(period.to),
            ..Default::default()
        })
        .await?;
    let reversals = store.reversals(tenant).await?;
    Ok((outcomes, reversals))
}

/// [`period_rows`] of the outcomes billed on `sink` alone (and their reversals):
/// what a reconcile compares with that billing system. A tenant moved between
/// sinks keeps its earlier outcomes where they were billed.
pub async fn period_rows_on(
    store: &crate::store::Store,
    tenant: &str,
    period: Period,
    sink: crate::sink::Sink,
) -> Result<
    (
        Vec<crate::store::OutcomeRow>,
        Vec<crate::store::ReversalRow>,
    ),
    crate::store::StoreError,
> {
    let (mut outcomes, mut reversals) = period_rows(store, tenant, period).await?;
    outcomes.retain(|o| o.sink == sink);
    reversals.retain(|r| r.sink == sink);
    Ok((outcomes, reversals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cover_whole_days() {
        let p = Period::parse("2026-01-01", "2026-01-31").expect("valid");
        assert_eq!(p.to.as_ms() - p.from.as_ms(), 31 * 86_400_000);
        let p = Period::parse("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z").expect("valid");
        assert_eq!(p.to.as_ms() - p.from.as_ms(), 86_400_000);
        assert_eq!(
            Period::parse("2026-02-01", "2026-01-01"),
            Err(PeriodError::Empty)
        );
        assert!(matches!(
            Period::parse("yesterday", "2026-01-01"),
            Err(PeriodError::BadDate(_))
        ));
    }
}
