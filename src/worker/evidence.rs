//! Decision rows and evidence built from a replayed resolution.

use crate::contract::ContractTerms;
use crate::event::TicketEvent;
use crate::lifecycle::DecisionStatus;
use crate::store::DecisionWrite;
use crate::tenants::Tenant;
use crate::ticket::Resolution;
use crate::time::Millis;
use serde_json::json;
use std::collections::BTreeMap;

/// Contracts pinned to resolutions decided under an earlier contract.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    pub terms: BTreeMap<u32, ContractTerms>,
    /// `(version, hash)` of each pinned contract.
    pub ids: BTreeMap<u32, (String, String)>,
}

impl Pins {
    /// The `(version, hash)` that judged resolution `seq`.
    pub(crate) fn contract_id<'a>(&'a self, seq: u32, t: &'a Tenant) -> (&'a str, &'a str) {
        match self.ids.get(&seq) {
            Some((v, h)) => (v, h),
            None => (&t.contract.version, &t.contract_hash),
        }
    }
}

/// Whether and how the helpdesk was asked before billing: `(verified, words)`.
pub(crate) type Verification = (bool, String);

/// The evidence for one resolution: its events, the clause, the contract, and
/// the verification with the helpdesk when there was one.
fn evidence(
    r: &Resolution,
    events: &[TicketEvent],
    contract: (&str, &str),
    verification: Option<&Verification>,
) -> String {
    let evs: Vec<_> = r
        .evidence
        .iter()
        .filter_map(|k| events.iter().find(|e| &e.event_key == k))
        .collect();
    let mut v = json!({
        "seq": r.seq,
        "resolved_at": r.resolved_at,
        "resolver": r.resolver,
        "settle_at": r.settle_at,
        "clause": r.verdict.clause,
        "explanation": r.verdict.clause.explain(),
        "reopened": r.reopened,
        "events": evs,
        "contract": { "version": contract.0, "hash": contract.1 },
    });
    if let Some((verified, words)) = verification {
        v["verification"] = json!({ "verified": verified, "note": words });
    }
    v.to_string()
}

pub(crate) struct DecisionInput<'a> {
    pub tenant: &'a Tenant,
    pub provider: &'a str,
    pub ticket_id: &'a str,
    pub resolution: &'a Resolution,
    pub events: &'a [TicketEvent],
    pub status: DecisionStatus,
    pub outcome_id: Option<String>,
    pub is_final: bool,
    pub now: Millis,
    pub pins: &'a Pins,
    pub verification: Option<&'a Verification>,
}

pub(crate) fn decision(d: DecisionInput<'_>) -> DecisionWrite {
    let r = d.resolution;
    let contract = d.pins.contract_id(r.seq, d.tenant);
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let detail = match (&r.reopened, d.status) {
        (Some(re), _) => format!(
            "not an outcome: {} at {} inside the reopen window (ends {})",
            re.kind,
            ts(re.at),
            ts(r.settle_at)
        ),
        (None, DecisionStatus::InWindow) => format!(
            "{}; confirmed if not reopened by {}",
            r.verdict.clause.explain(),
            ts(r.settle_at)
        ),
        (
            None,
            DecisionStatus::Reopened
            | DecisionStatus::Held
            | DecisionStatus::Confirmed
            | DecisionStatus::NotBillable
            | DecisionStatus::Capped,
        ) => r.verdict.clause.explain(),
    };
    let detail = match d.verification {
        Some((_, words)) => format!("{detail}; {words}"),
        None => detail,
    };
    DecisionWrite {
        tenant: d.tenant.settings.id.clone(),
        provider: d.provider.to_string(),
        ticket_id: d.ticket_id.to_string(),
        seq: r.seq,
        resolved_at: Millis::from(r.resolved_at),
        resolver: r.resolver.map(|x| x.as_str().to_string()),
        settle_at: Millis::from(r.settle_at),
        status: d.status,
        billable: r.verdict.billable() && r.reopened.is_none(),
        clause: serde_json::to_string(&r.verdict.clause).unwrap_or_default(),
        detail,
        contract_version: contract.0.to_string(),
        contract_hash: contract.1.to_string(),
        evidence: evidence(r, d.events, contract, d.verification),
        outcome_id: d.outcome_id,
        is_final: d.is_final,
        decided_at: d.now,
    }
}
