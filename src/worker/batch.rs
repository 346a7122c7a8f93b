//! A claimed batch of deliveries, parsed before its transaction opens and
//! grouped by ticket (pure): what the inbox pass locks, stores and replays.

use crate::event::TicketEvent;
use crate::store::{ClaimedDelivery, Finished, NewEvent, TicketKey};
use std::collections::BTreeMap;

/// A parsed batch.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// The events of each ticket, sorted by ticket (the order tickets are
    /// locked in), each with its delivery, in delivery order.
    pub tickets: BTreeMap<TicketKey, Vec<(i64, TicketEvent)>>,
    /// How each delivery ends, in claim order.
    pub finished: Vec<Finished>,
}

impl Batch {
    /// Parse each delivery with `parse`; one that cannot be parsed is
    /// quarantined with the reason.
    pub(super) fn parse<F>(claimed: &[ClaimedDelivery], parse: F) -> Batch
    where
        F: Fn(&ClaimedDelivery) -> Result<Vec<TicketEvent>, String>,
    {
        let mut batch = Batch {
            tickets: BTreeMap::new(),
            finished: Vec::with_capacity(claimed.len()),
        };
        for d in claimed {
            match parse(d) {
                Ok(events) => {
                    batch.finished.push(Finished {
                        id: d.id,
                        events: events.len(),
                        quarantine: None,
                    });
                    for e in events {
                        batch
                            .tickets
                            .entry((d.tenant.clone(), d.provider.clone(), e.ticket_id.clone()))
                            .or_default()
                            .push((d.id, e));
                    }
                }
                Err(reason) => {
                    tracing::warn!(delivery = d.id, tenant = %d.tenant, provider = %d.provider, %reason, "delivery quarantined");
                    batch.finished.push(Finished {
                        id: d.id,
                        events: 0,
                        quarantine: Some(reason),
                    });
                }
            }
        }
        batch
    }

    /// The events to store, ticket by ticket in sorted order, each ticket's in
    /// delivery order: of two with one key, the first is kept.
    pub(super) fn new_events(&self) -> Vec<NewEvent<'_>> {
        self.tickets
            .iter()
            .flat_map(|((tenant, provider, _), events)| {
                events.iter().map(move |(delivery_id, event)| NewEvent {
                    tenant,
                    provider,
                    delivery_id: *delivery_id,
                    event,
                })
            })
            .collect()
    }

    /// How many deliveries are quarantined.
    pub(super) fn quarantined(&self) -> usize {
        self.finished
            .iter()
            .filter(|f| f.quarantine.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use chrono::{TimeZone, Utc};

    fn delivery(id: i64, tenant: &str, body: &str) -> ClaimedDelivery {
        ClaimedDelivery {
            id,
            tenant: tenant.into(),
            provider: "generic".into(),
            headers: "{}".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn event(key: &str, ticket: &str) -> TicketEvent {
        TicketEvent {
            event_key: key.into(),
            ticket_id: ticket.into(),
            kind: EventKind::Resolved,
            occurred_at: Utc.timestamp_opt(1_767_225_600, 0).single().expect("time"),
            resolver: None,
            actor_id: None,
            tags: Default::default(),
            channel: None,
        }
    }

    /// A body is `ticket:key ticket:key …`, or `bad` (cannot be parsed).
    fn parse(d: &ClaimedDelivery) -> Result<Vec<TicketEvent>, String> {
        let body = String::from_utf8_lossy(&d.body).to_string();
        if body == "bad" {
            return Err("bad body".into());
        }
        Ok(body
            .split_whitespace()
            .filter_map(|w| w.split_once(':'))
            .map(|(ticket, key)| event(key, ticket))
            .collect())
    }

    #[test]
    fn events_are_grouped_by_ticket_in_sorted_order_and_every_delivery_finishes() {
        let claimed = [
            delivery(1, "t1", "T2:a T1:b"),
            delivery(2, "t1", "bad"),
            delivery(3, "t0", "T9:c"),
            delivery(4, "t1", "T1:d T1:b"),
            delivery(5, "t1", ""),
        ];
        let batch = Batch::parse(&claimed, parse);
        type Grouped<'a> = Vec<(&'a str, &'a str, Vec<(i64, &'a str)>)>;
        let tickets: Grouped<'_> = batch
            .tickets
            .iter()
            .map(|((tenant, _, ticket), evs)| {
                (
                    tenant.as_str(),
                    ticket.as_str(),
                    evs.iter()
                        .map(|(d, e)| (*d, e.event_key.as_str()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            tickets,
            vec![
                ("t0", "T9", vec![(3, "c")]),
                ("t1", "T1", vec![(1, "b"), (4, "d"), (4, "b")]),
                ("t1", "T2", vec![(1, "a")]),
            ]
        );
        let finished: Vec<(i64, usize, bool)> = batch
            .finished
            .iter()
            .map(|f| (f.id, f.events, f.quarantine.is_some()))
            .collect();
        assert_eq!(
            finished,
            vec![
                (1, 2, false),
                (2, 0, true),
                (3, 1, false),
                (4, 2, false),
                (5, 0, false)
            ]
        );
        assert_eq!(batch.quarantined(), 1);
        let stored: Vec<(&str, i64)> = batch
            .new_events()
            .iter()
            .map(|n| (n.event.event_key.as_str(), n.delivery_id))
            .collect();
        assert_eq!(
            stored,
            vec![("c", 3), ("b", 1), ("d", 4), ("b", 4), ("a", 1)],
            "ticket by ticket; the first delivery of a key comes first"
        );
    }
}
