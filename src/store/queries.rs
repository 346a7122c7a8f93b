//! Read-side queries for the CLI, reports and metrics.

use super::tickets::event_from_row;
use super::{col, state_col, Store, StoreError};
use crate::contract::Clause;
use crate::event::TicketEvent;
use crate::lifecycle::{
    DecisionStatus, DeliveryStatus, OutcomeState, ReversalState, StripeEventState,
};
use crate::ticket::Reopen;
use crate::time::Millis;
use serde::Deserialize;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, Default)]
pub struct OutcomeFilter {
    pub tenant: Option<String>,
    pub state: Option<OutcomeState>,
    pub ticket_id: Option<String>,
    /// Confirmation time range `[from, to)`, Unix millis.
    pub confirmed_from: Option<Millis>,
    pub confirmed_to: Option<Millis>,
    /// Only outcomes after this one in the listing order (keyset paging).
    pub after: Option<OutcomeCursor>,
    /// At most this many rows; 0: no limit.
    pub limit: u32,
}

/// A position in the outcome listing, which is ordered by `(confirmed_at, id)`:
/// stable while outcomes are added (they are confirmed now, so they come last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeCursor {
    pub confirmed_at: Millis,
    pub id: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OutcomeRow {
    pub id: String,
    pub tenant: String,
    pub provider: String,
    pub ticket_id: String,
    pub seq: i64,
    pub resolved_at: Millis,
    pub confirmed_at: Millis,
    pub event_name: String,
    pub value: i64,
    pub stripe_customer_id: String,
    pub contract_version: String,
    pub contract_hash: String,
    pub evidence: String,
    pub state: OutcomeState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub stripe_request_id: Option<String>,
    pub reported_at: Option<Millis>,
    /// `live`, `test` or `dry_run` once reported (or recorded); none before modes
    /// were recorded.
    pub reported_mode: Option<String>,
    /// Times it was sent again after Stripe rejected it (`replay --rejected`).
    pub stripe_resends: i64,
    /// Where it is billed (`outcomes.sink`) and who there (`sink_target`).
    pub sink: crate::sink::Sink,
    pub sink_target: Option<String>,
}

#[cfg(test)]
impl OutcomeRow {
    /// An outcome for unit tests: `value` 2 on `resolved_ticket`, the rest empty.
    pub(crate) fn sample(id: &str, state: OutcomeState, confirmed_at: Millis) -> OutcomeRow {
        OutcomeRow {
            id: id.into(),
            tenant: String::new(),
            provider: String::new(),
            ticket_id: String::new(),
            seq: 0,
            resolved_at: Millis::EPOCH,
            confirmed_at,
            event_name: "resolved_ticket".into(),
            value: 2,
            stripe_customer_id: String::new(),
            contract_version: String::new(),
            contract_hash: String::new(),
            evidence: String::new(),
            state,
            attempts: 0,
            last_error: None,
            stripe_request_id: None,
            reported_at: None,
            reported_mode: None,
            stripe_resends: 0,
            sink: crate::sink::Sink::default(),
            sink_target: None,
        }
    }
}

impl OutcomeRow {
    /// The `identifier` of its meter event at Stripe now: the outcome id, or
    /// `<outcome id>_resend<N>` once resent after a rejection.
    pub fn stripe_identifier(&self) -> String {
        crate::stripe::events::outcome_identifier(&self.id, self.stripe_resends)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DecisionRow {
    pub ticket_id: String,
    pub provider: String,
    pub seq: i64,
    pub resolved_at: Millis,
    pub resolver: Option<String>,
    pub settle_at: Millis,
    pub status: DecisionStatus,
    pub billable: bool,
    /// The contract's clause on this resolution (before its reopen window is known).
    pub clause: Clause,
    pub detail: String,
    pub contract_version: String,
    pub contract_hash: String,
    pub evidence: serde_json::Value,
    /// The reopen that ended this resolution inside its window (from the evidence).
    pub reopened: Option<Reopen>,
    pub outcome_id: Option<String>,
    pub is_final: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReversalRow {
    pub outcome_id: String,
    pub provider: String,
    pub ticket_id: String,
    pub event_name: String,
    pub value: i64,
    /// The reopening event (its key) and when it happened.
    pub reopen_event_key: String,
    pub reopened_at: Millis,
    pub created_at: Millis,
    pub evidence: String,
    pub method: Option<String>,
    pub state: ReversalState,
    pub last_error: Option<String>,
    /// `Request-Id` of Stripe's answer to the reversal request.
    pub stripe_request_id: Option<String>,
    /// The correcting event's timestamp (Unix seconds; method `correction`).
    pub stripe_timestamp: Option<i64>,
    pub done_at: Option<Millis>,
    /// When the reversed outcome was confirmed (its meter event's timestamp).
    pub outcome_confirmed_at: Millis,
    /// Where the reversed outcome was reported (`OutcomeRow::reported_mode`).
    pub outcome_reported_mode: Option<String>,
    /// Where the reversed outcome is billed (`OutcomeRow::sink`).
    pub sink: crate::sink::Sink,
}

const DECISION_COLUMNS: &str =
    "ticket_id, provider, seq, resolved_at, resolver, settle_at, status, billable, clause, \
     detail, contract_version, contract_hash, evidence, outcome_id, final";

fn decision_from_row(r: &AnyRow) -> Result<DecisionRow, StoreError> {
    let ticket_id: String = col(r, "ticket_id")?;
    let provider: String = col(r, "provider")?;
    let seq: i64 = col(r, "seq")?;
    let corrupt = |what: &str, e: serde_json::Error| {
        StoreError::corrupt(format!(
            "decision on {provider} ticket {ticket_id} #{seq}: {what}: {e}"
        ))
    };
    let clause: Clause =
        serde_json::from_str(&col::<String>(r, "clause")?).map_err(|e| corrupt("clause", e))?;
    let evidence: serde_json::Value =
        serde_json::from_str(&col::<String>(r, "evidence")?).map_err(|e| corrupt("evidence", e))?;
    let reopened = evidence
        .get("reopened")
        .map(Option::<Reopen>::deserialize)
        .transpose()
        .map_err(|e| corrupt("evidence.reopened", e))?
        .flatten();
    Ok(DecisionRow {
        resolved_at: col(r, "resolved_at")?,
        resolver: col(r, "resolver")?,
        settle_at: col(r, "settle_at")?,
        status: state_col(r, "status", || {
            format!("decision on {provider} ticket {ticket_id} #{seq}")
        })?,
        billable: col::<i64>(r, "billable")? != 0,
        clause,
        detail: col(r, "detail")?,
        contract_version: col(r, "contract_version")?,
        contract_hash: col(r, "contract_hash")?,
        evidence,
        reopened,
        outcome_id: col(r, "outcome_id")?,
        is_final: col::<i64>(r, "final")? != 0,
        ticket_id,
        provider,
        seq,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    pub provider: String,
    /// The webhook delivery that brought it; 0 when it came from the helpdesk's
    /// API (a verification check, or a backfill).
    pub delivery_id: i64,
    /// The verification check that learned it (`verifications.id`), if one did.
    pub learned_from: Option<i64>,
    pub event: TicketEvent,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub tenant: String,
    pub provider: String,
    pub delivery_key: String,
    pub received_at: Millis,
    pub status: DeliveryStatus,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRow {
    pub attempted_at: Millis,
    pub dry_run: bool,
    pub request: String,
    pub status_code: Option<i64>,
    pub request_id: Option<String>,
    pub result: String,
    pub error: Option<String>,
    /// `live`, `test` or `dry_run` (none before modes were recorded).
    pub mode: Option<String>,
    /// Stripe's `livemode` in its answer.
    pub livemode: Option<bool>,
    pub idempotency_key: Option<String>,
}

/// Sizes of every queue, for `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueCounts {
    pub deliveries: Vec<(DeliveryStatus, i64)>,
    pub outcomes: Vec<(OutcomeState, i64)>,
    /// Outcomes in a state this build does not know (a newer release's, or a
    /// damaged row), by the state as stored: counted and warned about, never a
    /// reason for the snapshot to fail.
    pub outcomes_unknown: Vec<(String, i64)>,
    pub tickets_waiting: i64,
    /// Due resolutions held for verification with the helpdesk (decision `held`).
    pub held_for_verification: i64,
    /// Confirmation time of the oldest outcome not billed: pending, failed or
    /// rejected by Stripe.
    pub oldest_unbilled_outcome: Option<Millis>,
    /// Outcomes sent (or recorded as a dry-run) in another Stripe mode than the
    /// service's: not billed in its mode until replayed.
    pub unbilled_other_mode: i64,
    /// Stripe event notifications waiting to be processed, or failed, by state.
    pub stripe_events: Vec<(StripeEventState, i64)>,
}

const OUTCOME_COLUMNS: &str = "id, tenant, provider, ticket_id, seq, resolved_at, confirmed_at, event_name, value, \
     stripe_customer_id, contract_version, contract_hash, evidence, state, attempts, last_error, stripe_request_id, reported_at, \
     reported_mode, stripe_resends, sink, sink_target";

fn outcome_from_row(r: &AnyRow) -> Result<OutcomeRow, StoreError> {
    let id: String = col(r, "id")?;
    Ok(OutcomeRow {
        state: state_col(r, "state", || format!("outcome {id}"))?,
        id,
        tenant: col(r, "tenant")?,
        provider: col(r, "provider")?,
        ticket_id: col(r, "ticket_id")?,
        seq: col(r, "seq")?,
        resolved_at: col(r, "resolved_at")?,
        confirmed_at: col(r, "confirmed_at")?,
        event_name: col(r, "event_name")?,
        value: col(r, "value")?,
        stripe_customer_id: col(r, "stripe_customer_id")?,
        contract_version: col(r, "contract_version")?,
        contract_hash: col(r, "contract_hash")?,
        evidence: col(r, "evidence")?,
        attempts: col(r, "attempts")?,
        last_error: col(r, "last_error")?,
        stripe_request_id: col(r, "stripe_request_id")?,
        reported_at: col(r, "reported_at")?,
        reported_mode: col(r, "reported_mode")?,
        stripe_resends: col(r, "stripe_resends")?,
        sink: super::sink_col(r)?,
        sink_target: col(r, "sink_target")?,
    })
}

/// The conditions of an [`OutcomeFilter`], on parameters `$1`..`$5`
/// (see [`bind_outcome_filter`]).
const OUTCOME_FILTER: &str = "($1 = '' OR tenant = $1) AND ($2 = '' OR state = $2) \
     AND ($3 = '' OR ticket_id = $3) AND confirmed_at >= $4 AND confirmed_at < $5";

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind_outcome_filter<'q>(q: AnyQuery<'q>, f: &'q OutcomeFilter) -> AnyQuery<'q> {
    q.bind(f.tenant.as_deref().unwrap_or(""))
        .bind(f.state.map_or("", OutcomeState::as_str))
        .bind(f.ticket_id.as_deref().unwrap_or(""))
        .bind(f.confirmed_from.unwrap_or(Millis::from_ms(i64::MIN)))
        .bind(f.confirmed_to.unwrap_or(Millis::from_ms(i64::MAX)))
}

impl Store {
    /// Outcomes matching `f`, ordered by `(confirmed_at, id)`, after `f.after`,
    /// at most `f.limit` (0: all).
    pub async fn list_outcomes(&self, f: &OutcomeFilter) -> Result<Vec<OutcomeRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTCOME_COLUMNS} FROM outcomes WHERE {OUTCOME_FILTER} \
             AND (confirmed_at > $6 OR (confirmed_at = $6 AND id > $7)) \
             ORDER BY confirmed_at, id LIMIT $8"
        );
        // No cursor: before every row (ids are never empty).
        let (after_at, after_id) = f
            .after
            .as_ref()
            .map_or((Millis::from_ms(i64::MIN), ""), |c| {
                (c.confirmed_at, c.id.as_str())
            });
        let limit = if f.limit == 0 { u32::MAX >> 1 } else { f.limit };
        let rows = bind_outcome_filter(sqlx::query(&sql), f)
            .bind(after_at)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(outcome_from_row).collect()
    }

    /// How many outcomes match `f`, whatever its cursor and limit.
    pub async fn count_outcomes(&self, f: &OutcomeFilter) -> Result<i64, StoreError> {
        let sql = format!("SELECT COUNT(*) AS n FROM outcomes WHERE {OUTCOME_FILTER}");
        let row = bind_outcome_filter(sqlx::query(&sql), f)
            .fetch_one(&self.reads)
            .await?;
        col(&row, "n")
    }

    /// Where outcome `id` stands in the listing order; `None` if there is no such outcome.
    pub async fn outcome_cursor(&self, id: &str) -> Result<Option<OutcomeCursor>, StoreError> {
        let row = sqlx::query("SELECT confirmed_at FROM outcomes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|r| {
            Ok(OutcomeCursor {
                confirmed_at: col(&r, "confirmed_at")?,
                id: id.to_string(),
            })
        })
        .transpose()
    }

    pub async fn ticket_events(
        &self,
        tenant: &str,
        ticket_id: &str,
    ) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT provider, delivery_id, learned_from, event_key, ticket_id, kind, occurred_at, resolver, actor_id, tags, channel \
             FROM ticket_events WHERE tenant = $1 AND ticket_id = $2 ORDER BY occurred_at, event_key",
        )
        .bind(tenant)
        .bind(ticket_id)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    provider: col(r, "provider")?,
                    delivery_id: col(r, "delivery_id")?,
                    learned_from: col(r, "learned_from")?,
                    event: event_from_row(r)?,
                })
            })
            .collect()
    }

    pub async fn ticket_decisions(
        &self,
        tenant: &str,
        ticket_id: &str,
    ) -> Result<Vec<DecisionRow>, StoreError> {
        let sql = format!(
            "SELECT {DECISION_COLUMNS} FROM decisions WHERE tenant = $1 AND ticket_id = $2 ORDER BY provider, seq"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(ticket_id)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(decision_from_row).collect()
    }

    /// Decisions of a tenant on resolutions in `[from, to)` with one of `statuses`.
    pub async fn decisions_in(
        &self,
        tenant: &str,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<DecisionRow>, StoreError> {
        let sql = format!(
            "SELECT {DECISION_COLUMNS} FROM decisions WHERE tenant = $1 AND resolved_at >= $2 AND resolved_at < $3 \
             ORDER BY resolved_at, ticket_id, seq"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(from)
            .bind(to)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(decision_from_row).collect()
    }

    /// Clawback reversals of a tenant.
    pub async fn reversals(&self, tenant: &str) -> Result<Vec<ReversalRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.outcome_id, r.provider, r.ticket_id, r.event_name, r.value, r.reopen_event_key, r.reopened_at, \
             r.created_at, r.evidence, r.method, r.state, r.last_error, r.stripe_request_id, r.stripe_timestamp, \
             r.done_at, o.confirmed_at AS outcome_confirmed_at, o.reported_mode AS outcome_reported_mode, o.sink \
             FROM reversals r JOIN outcomes o ON o.id = r.outcome_id \
             WHERE r.tenant = $1 ORDER BY r.created_at, r.outcome_id",
        )
        .bind(tenant)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                let outcome_id: String = col(r, "outcome_id")?;
                Ok(ReversalRow {
                    state: state_col(r, "state", || format!("reversal of outcome {outcome_id}"))?,
                    outcome_id,
                    provider: col(r, "provider")?,
                    ticket_id: col(r, "ticket_id")?,
                    event_name: col(r, "event_name")?,
                    value: col(r, "value")?,
                    reopen_event_key: col(r, "reopen_event_key")?,
                    reopened_at: col(r, "reopened_at")?,
                    created_at: col(r, "created_at")?,
                    evidence: col(r, "evidence")?,
                    method: col(r, "method")?,
                    last_error: col(r, "last_error")?,
                    stripe_request_id: col(r, "stripe_request_id")?,
                    stripe_timestamp: col(r, "stripe_timestamp")?,
                    done_at: col(r, "done_at")?,
                    outcome_confirmed_at: col(r, "outcome_confirmed_at")?,
                    outcome_reported_mode: col(r, "outcome_reported_mode")?,
                    sink: super::sink_col(r)?,
                })
            })
            .collect()
    }

    /// Distinct tickets of a tenant with an event in `[from, to)`.
    pub async fn tickets_with_events(
        &self,
        tenant: &str,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT provider, ticket_id FROM ticket_events WHERE tenant = $1 AND occurred_at >= $2 \
             AND occurred_at < $3 ORDER BY provider, ticket_id",
        )
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| Ok((col(r, "provider")?, col(r, "ticket_id")?)))
            .collect()
    }

    /// All stored events of one ticket.
    pub async fn events_of(
        &self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
    ) -> Result<Vec<TicketEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_key, ticket_id, kind, occurred_at, resolver, actor_id, tags, channel FROM ticket_events \
             WHERE tenant = $1 AND provider = $2 AND ticket_id = $3",
        )
        .bind(tenant)
        .bind(provider)
        .bind(ticket_id)
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub async fn attempts(&self, outcome_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT attempted_at, dry_run, request, status_code, request_id, result, error, mode, livemode, \
             idempotency_key FROM stripe_attempts \
             WHERE outcome_id = $1 ORDER BY id",
        )
        .bind(outcome_id)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    attempted_at: col(r, "attempted_at")?,
                    dry_run: col::<i64>(r, "dry_run")? != 0,
                    request: col(r, "request")?,
                    status_code: col(r, "status_code")?,
                    request_id: col(r, "request_id")?,
                    result: col(r, "result")?,
                    error: col(r, "error")?,
                    mode: col(r, "mode")?,
                    livemode: col::<Option<i64>>(r, "livemode")?.map(|v| v != 0),
                    idempotency_key: col(r, "idempotency_key")?,
                })
            })
            .collect()
    }

    /// Deliveries of a tenant by status (e.g. `quarantined`), newest first.
    pub async fn deliveries(
        &self,
        tenant: Option<&str>,
        status: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant, provider, delivery_key, received_at, status, error FROM deliveries \
             WHERE ($1 = '' OR tenant = $1) AND status = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant.unwrap_or(""))
        .bind(status)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = col(r, "id")?;
                Ok(DeliveryRow {
                    status: state_col(r, "status", || format!("delivery {id}"))?,
                    id,
                    tenant: col(r, "tenant")?,
                    provider: col(r, "provider")?,
                    delivery_key: col(r, "delivery_key")?,
                    received_at: col(r, "received_at")?,
                    error: col(r, "error")?,
                })
            })
            .collect()
    }

    /// Queue sizes for the metrics snapshot. Each query reads a partial index
    /// (pending and quarantined deliveries, tickets in a window, pending
    /// outcomes) or the outcomes table, never the stored delivery bodies.
    /// Sizes of every queue, for `/metrics`, as seen by a service in Stripe `mode`.
    pub async fn queue_counts(
        &self,
        mode: crate::stripe::mode::StripeMode,
    ) -> Result<QueueCounts, StoreError> {
        let count = |sql: &'static str| async move {
            let row = sqlx::query(sql).fetch_one(&self.reads).await?;
            col::<i64>(&row, "n")
        };
        let deliveries = vec![
            (
                DeliveryStatus::Pending,
                count("SELECT COUNT(*) AS n FROM deliveries WHERE status = 'pending'").await?,
            ),
            (
                DeliveryStatus::Quarantined,
                count("SELECT COUNT(*) AS n FROM deliveries WHERE status = 'quarantined'").await?,
            ),
        ];
        let (mut outcomes, mut outcomes_unknown) = (Vec::new(), Vec::new());
        for r in sqlx::query("SELECT state AS status, COUNT(*) AS n FROM outcomes GROUP BY state")
            .fetch_all(&self.reads)
            .await?
        {
            let (stored, n): (String, i64) = (col(&r, "status")?, col(&r, "n")?);
            match stored.parse::<OutcomeState>() {
                Ok(state) => outcomes.push((state, n)),
                Err(e) => {
                    // As `census` counts them: under the stored spelling.
                    tracing::warn!(error = %e, outcomes = n, "outcomes in a state this build does not know (counted as stored; `outcomes` and the reporter refuse them)");
                    outcomes_unknown.push((stored, n));
                }
            }
        }
        let tickets_waiting =
            count("SELECT COUNT(*) AS n FROM tickets WHERE settle_at IS NOT NULL").await?;
        // The partial index `decisions_held` keeps this O(held).
        let held_for_verification =
            count("SELECT COUNT(*) AS n FROM decisions WHERE status = 'held'").await?;
        // Sent in another mode than the service's (a dry-run's, or test mode's seen from
        // live): not billed here either, and ageing towards Stripe's 35 days as well.
        const OTHER_MODE: &str =
            "(state = 'dry_run' OR (state = 'reported' AND reported_mode IS NOT NULL \
             AND reported_mode <> $1))";
        // One pass over the outcomes for both.
        let unbilled = sqlx::query(&format!(
            "SELECT MIN(confirmed_at) AS m, \
             COALESCE(SUM(CASE WHEN $2 = 1 AND {OTHER_MODE} THEN 1 ELSE 0 END), 0) AS other \
             FROM outcomes WHERE state IN ('pending', 'failed', 'rejected_by_stripe') \
             OR ($2 = 1 AND {OTHER_MODE})"
        ))
        .bind(mode.as_str())
        .bind(i64::from(mode.sends()))
        .fetch_one(&self.reads)
        .await?;
        let stripe_events = sqlx::query(
            "SELECT state AS status, COUNT(*) AS n FROM stripe_events WHERE state IN ('pending', 'failed') GROUP BY state",
        )
        .fetch_all(&self.reads)
        .await?
        .iter()
        .map(|r| Ok((col::<String>(r, "status")?.parse()?, col(r, "n")?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(QueueCounts {
            deliveries,
            outcomes,
            outcomes_unknown,
            tickets_waiting,
            held_for_verification,
            oldest_unbilled_outcome: col(&unbilled, "m")?,
            unbilled_other_mode: col(&unbilled, "other")?,
            stripe_events,
        })
    }
}
