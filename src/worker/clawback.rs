//! Clawback and caps: the contract's two limits on what stays billed.

use super::Worker;
use crate::contract::{Caps, ContractTerms};
use crate::lifecycle::OutcomeState;
use crate::store::{NewReversal, StoreError, Tx};
use crate::tenants::Tenant;
use crate::ticket::Reopen;
use crate::time::Millis;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde_json::json;

/// `[start, end)` of the UTC day and UTC calendar month containing `t`.
pub fn day_and_month(t: DateTime<Utc>) -> ((Millis, Millis), (Millis, Millis)) {
    let day = t.date_naive();
    let start = |d: chrono::NaiveDate| {
        Millis::from(Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)))
    };
    let next_day = day.succ_opt().unwrap_or(day);
    let month_start = day.with_day(1).unwrap_or(day);
    let next_month = if month_start.month() == 12 {
        chrono::NaiveDate::from_ymd_opt(month_start.year() + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(month_start.year(), month_start.month() + 1, 1)
    }
    .unwrap_or(month_start);
    (
        (start(day), start(next_day)),
        (start(month_start), start(next_month)),
    )
}

/// Why an outcome confirmed now for `customer` is over a cap, if it is.
pub(super) async fn over_cap(
    tx: &mut Tx,
    caps: &Caps,
    customer: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    if !caps.is_set() {
        return Ok(None);
    }
    tx.lock_customer(customer).await?;
    let ((d0, d1), (m0, m1)) = day_and_month(now);
    if let Some(n) = caps.per_day {
        if tx.count_billed(customer, d0, d1).await? >= i64::from(n) {
            return Ok(Some(format!("capped: the customer already has {n} billed outcomes this day (UTC), the contract's daily cap")));
        }
    }
    if let Some(n) = caps.per_period {
        if tx.count_billed(customer, m0, m1).await? >= i64::from(n) {
            return Ok(Some(format!(
                "capped: the customer already has {n} billed outcomes this month (UTC), the contract's period cap"
            )));
        }
    }
    Ok(None)
}

impl Worker {
    /// The terms of contract `hash` (one this tenant used): the current
    /// contract's, or the stored ones. Missing or unreadable is an error: a
    /// clawback never proceeds under another contract than its outcome's.
    pub(super) async fn decided_under(
        &self,
        tx: &mut Tx,
        tenant: &Tenant,
        hash: &str,
    ) -> Result<ContractTerms, StoreError> {
        if hash == tenant.contract_hash {
            return Ok(tenant.contract.clone());
        }
        tx.contract_terms(hash).await
    }

    /// A resolution was ended by a reopen after its window. When that resolution
    /// is a billed outcome and the reopen is within the contract's clawback
    /// duration, record its reversal (once per outcome: the reversals table is
    /// keyed by the outcome id).
    pub(super) async fn clawback(
        &self,
        tx: &mut Tx,
        late: LateReopen<'_>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let LateReopen {
            tenant,
            provider,
            ticket_id,
            seq,
            resolved_at,
            reopen,
        } = late;
        let Some(o) = tx
            .outcome_for_seq(&tenant.settings.id, provider, ticket_id, seq)
            .await?
        else {
            return Ok(()); // that resolution was not billable: nothing to reverse
        };
        match o.state {
            // Never billed, or taken back already: nothing (more) to reverse.
            OutcomeState::Capped | OutcomeState::Voided | OutcomeState::Reversed => {
                return Ok(());
            }
            OutcomeState::Pending
            | OutcomeState::Reported
            | OutcomeState::DryRun
            | OutcomeState::Failed
            | OutcomeState::RejectedByStripe => {}
        }
        // The clawback term of the contract the outcome was decided under, not today's.
        let window = self
            .decided_under(tx, tenant, &o.contract_hash)
            .await?
            .clawback;
        if !reopen.claws_back(resolved_at, window) {
            return Ok(());
        }
        let evidence = json!({
            "clause": "clawback",
            "explanation": format!(
                "reversed: the ticket was reopened ({}) at {} within the clawback period of {} after its resolution at {}",
                reopen.kind,
                reopen.at.to_rfc3339(),
                window.map(|w| humantime::format_duration(w).to_string()).unwrap_or_default(),
                resolved_at.to_rfc3339()
            ),
            "outcome_id": o.id,
            "seq": seq,
            "reopen": reopen,
            "contract": { "version": o.contract_version, "hash": o.contract_hash },
        });
        let new = tx
            .insert_reversal(&NewReversal {
                outcome_id: o.id.clone(),
                tenant: tenant.settings.id.clone(),
                provider: provider.to_string(),
                ticket_id: ticket_id.to_string(),
                event_name: o.event_name,
                value: o.value,
                stripe_customer_id: o.stripe_customer_id,
                reopen_event_key: reopen.event_key.clone(),
                reopened_at: Millis::from(reopen.at),
                created_at: now,
                evidence: evidence.to_string(),
            })
            .await?;
        if new {
            tracing::info!(outcome = %o.id, %ticket_id, seq, "ticket reopened within the clawback period: reversal queued");
        }
        Ok(())
    }
}

/// A reopen that ended resolution `seq` of a ticket (resolved at
/// `resolved_at`) after its reopen window: what [`Worker::clawback`] judges.
pub(super) struct LateReopen<'a> {
    pub tenant: &'a Tenant,
    pub provider: &'a str,
    pub ticket_id: &'a str,
    pub seq: u32,
    pub resolved_at: DateTime<Utc>,
    pub reopen: &'a Reopen,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_and_month_bounds() {
        let t = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 0)
            .single()
            .expect("time");
        let ((d0, d1), (m0, m1)) = day_and_month(t);
        assert_eq!(d1.as_ms() - d0.as_ms(), 86_400_000);
        assert_eq!(m0.to_datetime().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(m1.to_datetime().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert!(d0 <= Millis::from(t) && Millis::from(t) < d1);
    }
}
