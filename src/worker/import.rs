//! Events that arrive without a webhook delivery (backfill from a helpdesk's
//! API): stored like a delivery's events (`delivery_id` 0) and their tickets
//! replayed, in one transaction per call.

use super::Worker;
use crate::event::TicketEvent;
use crate::store::StoreError;
use std::collections::BTreeMap;

impl Worker {
    /// Store `events` of `tenant_id`'s `provider` (an event whose key is already
    /// stored, by a webhook or an earlier import, counts once) and replay the
    /// tickets they touch. Returns how many events were new.
    pub async fn import_events(
        &self,
        tenant_id: &str,
        provider: &str,
        events: &[TicketEvent],
    ) -> Result<usize, StoreError> {
        self.import_history(tenant_id, provider, events, None).await
    }

    /// [`Worker::import_events`] for a history read from the helpdesk's API
    /// (backfill): an event of the same kind as a stored one within `same_within`
    /// is that event seen again under the API's own key (a webhook brought it),
    /// and is skipped.
    pub async fn import_history(
        &self,
        tenant_id: &str,
        provider: &str,
        events: &[TicketEvent],
        same_within: Option<chrono::Duration>,
    ) -> Result<usize, StoreError> {
        let Some(tenant) = self.tenants.get(tenant_id) else {
            return Ok(0);
        };
        let now = self.clock.now_ms();
        let mut by_ticket: BTreeMap<&str, Vec<&TicketEvent>> = BTreeMap::new();
        for e in events {
            by_ticket.entry(e.ticket_id.as_str()).or_default().push(e);
        }
        let mut new = 0usize;
        let mut tx = self.store.begin().await?;
        // Sorted ticket order, as the inbox locks them: no deadlock between workers.
        for (ticket_id, evs) in by_ticket {
            let settled = tx.lock_ticket(tenant_id, provider, ticket_id, now).await?;
            let known = match same_within {
                Some(_) => tx.load_events(tenant_id, provider, ticket_id).await?,
                None => Vec::new(),
            };
            for e in evs {
                if let Some(within) = same_within {
                    let others: Vec<TicketEvent> = known
                        .iter()
                        .filter(|k| k.event_key != e.event_key)
                        .cloned()
                        .collect();
                    if crate::verification::judge::seen_again(e, &others, within) {
                        continue;
                    }
                }
                new += usize::from(tx.insert_event(tenant_id, provider, 0, None, e).await?);
            }
            self.replay_ticket(&mut tx, tenant, provider, ticket_id, settled, now)
                .await?;
        }
        tx.commit().await?;
        Ok(new)
    }
}
