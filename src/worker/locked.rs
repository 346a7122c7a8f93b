//! What replaying a batch of locked tickets reads: their stored events and the
//! contracts their undecided resolutions are pinned to, two statements for the
//! whole batch (the inbox pass and the confirmation pass alike).

use super::evidence::Pins;
use super::pins_of;
use crate::event::TicketEvent;
use crate::store::{PinnedContract, StoreError, TicketKey, Tx};
use crate::tenants::Tenant;
use std::collections::HashMap;

/// The events and pinned contracts of locked tickets, taken ticket by ticket.
pub(super) struct Loaded {
    events: HashMap<TicketKey, Vec<TicketEvent>>,
    pinned: HashMap<TicketKey, Vec<PinnedContract>>,
}

impl Loaded {
    /// Read after the tickets are locked (events a worker committed before the
    /// lock are seen). `tickets`: each with its tenant, whose current contract
    /// decides which decisions are pinned to another.
    pub(super) async fn read(
        tx: &mut Tx,
        tickets: &[(&TicketKey, &Tenant)],
        keys: &[TicketKey],
    ) -> Result<Loaded, StoreError> {
        let events = tx.load_events_of(keys).await?;
        let current: Vec<(&TicketKey, &str)> = tickets
            .iter()
            .map(|(k, t)| (*k, t.contract_hash.as_str()))
            .collect();
        let pinned = tx.pinned_contracts_of(&current).await?;
        Ok(Loaded { events, pinned })
    }

    /// One ticket's events (none stored: empty) and pins.
    pub(super) fn take(&mut self, key: &TicketKey) -> (Vec<TicketEvent>, Pins) {
        let events = self.events.remove(key).unwrap_or_default();
        let pins = pins_of(self.pinned.remove(key).unwrap_or_default());
        (events, pins)
    }
}
