//! One locked ticket replayed, in memory: the (non-final) decision of each of its
//! resolutions, when it is due next, and a reopen of its settled resolution.
//! Pure: the inbox batch and the verification pass write what it returns.

use super::evidence::{decision, DecisionInput, Pins};
use crate::event::TicketEvent;
use crate::lifecycle::DecisionStatus;
use crate::store::DecisionWrite;
use crate::tenants::Tenant;
use crate::ticket::{replay_pinned, Reopen, Settled};
use crate::time::Millis;

/// What replaying one ticket comes to, before it is written.
#[derive(Debug)]
pub(super) struct Replayed {
    /// One per resolution after the settled one: in its window, or reopened.
    pub decisions: Vec<DecisionWrite>,
    /// When the confirmer next needs the ticket.
    pub settle_at: Option<Millis>,
    /// The settled resolution and the reopen that ended it after its window:
    /// a clawback, if the contract says so.
    pub late_reopen: Option<(Settled, Reopen)>,
}

/// The ticket at hand.
pub(super) struct TicketAt<'a> {
    pub tenant: &'a Tenant,
    pub provider: &'a str,
    pub ticket_id: &'a str,
}

/// Replay the ticket's `events` after its `settled` prefix, each resolution
/// under its pinned contract (or the tenant's current one).
pub(super) fn replay(
    at: &TicketAt<'_>,
    settled: Option<Settled>,
    events: &[TicketEvent],
    pins: &Pins,
    now: Millis,
) -> Replayed {
    let history = replay_pinned(&at.tenant.contract, &pins.terms, settled, events);
    let decisions = history
        .resolutions
        .iter()
        .map(|r| {
            decision(DecisionInput {
                tenant: at.tenant,
                provider: at.provider,
                ticket_id: at.ticket_id,
                resolution: r,
                events,
                status: if r.reopened.is_some() {
                    DecisionStatus::Reopened
                } else {
                    DecisionStatus::InWindow
                },
                outcome_id: None,
                is_final: false,
                now,
                pins,
                verification: None,
            })
        })
        .collect();
    Replayed {
        decisions,
        settle_at: history.next_settle_at().map(Millis::from),
        late_reopen: settled.zip(history.reopen_after_settled),
    }
}
