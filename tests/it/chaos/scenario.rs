//! A random but reproducible helpdesk history, and an oracle that says which
//! outcomes it must produce, computed independently of the service's code.

use chrono::{DateTime, Duration, Utc};
use outcome_meter::outcome::outcome_id;
use std::collections::{BTreeMap, BTreeSet};

pub const WINDOW_HOURS: i64 = 72;
pub const EXCLUDED_TAG: &str = "spam";
const REOPEN_KINDS: [&str; 3] = ["reopened", "customer_replied", "handed_off_to_human"];

#[derive(Clone, Debug)]
pub struct Event {
    pub tenant: String,
    pub ticket: String,
    pub event_id: String,
    pub kind: &'static str,
    pub at: DateTime<Utc>,
    pub resolver: Option<&'static str>,
    pub tags: Vec<String>,
}

impl Event {
    /// The generic provider's JSON body.
    pub fn body(&self) -> String {
        let mut v = serde_json::json!({
            "event_id": self.event_id, "ticket_id": self.ticket, "type": self.kind,
            "occurred_at": self.at.to_rfc3339(), "tags": self.tags,
        });
        if let Some(r) = self.resolver {
            v["resolver"] = serde_json::json!(r);
        }
        v.to_string()
    }
}

pub struct Scenario {
    pub events: Vec<Event>,
    /// Latest event time: the clock must pass this plus the window.
    pub last: DateTime<Utc>,
}

/// `tickets` tickets spread over `tenants`, starting at `start`. Each has one to
/// three resolve/reopen cycles: AI or human resolutions, hand-offs before a
/// resolution, reopen signals inside or after the window, an excluded tag now and then.
pub fn generate(
    rng: &mut fastrand::Rng,
    tenants: &[&str],
    tickets: usize,
    start: DateTime<Utc>,
) -> Scenario {
    let mut events = Vec::new();
    for i in 0..tickets {
        let tenant = tenants[i % tenants.len()].to_string();
        let ticket = format!("T{i}");
        let spam = rng.f64() < 0.05;
        let mut t = start + Duration::seconds(rng.i64(0..86_400));
        let mut tag_first = spam;
        let mut push = |kind: &'static str, at: DateTime<Utc>, resolver: Option<&'static str>| {
            let tags = if std::mem::take(&mut tag_first) {
                vec![EXCLUDED_TAG.to_string()]
            } else {
                vec![]
            };
            events.push(Event {
                tenant: tenant.clone(),
                ticket: ticket.clone(),
                event_id: format!("{ticket}-e{}", events.len()),
                kind,
                at,
                resolver,
                tags,
            });
        };
        for _cycle in 0..rng.usize(1..=3) {
            if rng.f64() < 0.15 {
                push("handed_off_to_human", t, None);
                t += Duration::minutes(rng.i64(1..60));
            }
            let resolver = if rng.f64() < 0.8 { "ai" } else { "human" };
            push("resolved", t, Some(resolver));
            if rng.f64() < 0.5 {
                break; // stays resolved
            }
            let after = if rng.f64() < 0.7 {
                Duration::minutes(rng.i64(1..WINDOW_HOURS * 60 - 1))
            } else {
                Duration::hours(WINDOW_HOURS) + Duration::minutes(rng.i64(1..1200))
            };
            t += after;
            push(REOPEN_KINDS[rng.usize(..REOPEN_KINDS.len())], t, None);
            t += Duration::minutes(rng.i64(1..120));
        }
    }
    let last = events.iter().map(|e| e.at).max().unwrap_or(start);
    Scenario { events, last }
}

/// The outcome ids the contract bills: a resolution from an open ticket, by the
/// AI, with no hand-off since the ticket was last reopened, no excluded tag seen
/// so far, and no reopen signal before its window ends.
pub fn oracle(events: &[Event]) -> BTreeSet<String> {
    oracle_resolutions(events).into_keys().collect()
}

/// [`oracle`], with the `event_id` of the resolution each outcome bills.
pub fn oracle_resolutions(events: &[Event]) -> BTreeMap<String, String> {
    let mut by_ticket: BTreeMap<(&str, &str), Vec<&Event>> = Default::default();
    for e in events {
        by_ticket.entry((&e.tenant, &e.ticket)).or_default().push(e);
    }
    let window = Duration::hours(WINDOW_HOURS);
    let mut billed = BTreeMap::new();
    for ((tenant, ticket), mut evs) in by_ticket {
        evs.sort_by_key(|e| e.at);
        // (seq, resolved_at, billable so far, the resolution's event id)
        let mut open_resolution: Option<(u32, DateTime<Utc>, bool, &str)> = None;
        let mut resolved = false;
        let (mut seq, mut handed_off, mut excluded) = (0u32, false, false);
        let mut settle = |r: Option<(u32, DateTime<Utc>, bool, &str)>| {
            if let Some((s, _, true, id)) = r {
                billed.insert(outcome_id(tenant, "generic", ticket, s), id.to_string());
            }
        };
        for e in evs {
            excluded |= e.tags.iter().any(|t| t == EXCLUDED_TAG);
            if e.kind == "resolved" {
                if !resolved {
                    seq += 1;
                    let ok = e.resolver == Some("ai") && !handed_off && !excluded;
                    open_resolution = Some((seq, e.at, ok, &e.event_id));
                    resolved = true;
                }
                continue;
            }
            if resolved {
                let r = open_resolution.take();
                // Reopened inside the window: that resolution is not an outcome.
                settle(r.filter(|(_, at, _, _)| e.at >= *at + window));
                handed_off = false;
                resolved = false;
            }
            handed_off |= e.kind == "handed_off_to_human";
        }
        settle(open_resolution);
    }
    billed
}

/// The `(tenant, ticket)`s whose `events` show a resolution that stands past its
/// window (no reopen signal before it ends), billable or not: with verification
/// on, the tickets whose due resolution the service checks with the helpdesk.
pub fn with_a_standing_resolution(events: &[Event]) -> BTreeSet<(String, String)> {
    let mut by_ticket: BTreeMap<(&str, &str), Vec<&Event>> = Default::default();
    for e in events {
        by_ticket.entry((&e.tenant, &e.ticket)).or_default().push(e);
    }
    let window = Duration::hours(WINDOW_HOURS);
    by_ticket
        .into_iter()
        .filter(|(_, evs)| {
            let mut evs = evs.clone();
            evs.sort_by_key(|e| e.at);
            let mut resolved_at: Option<DateTime<Utc>> = None;
            for e in evs {
                match (e.kind, resolved_at) {
                    ("resolved", None) => resolved_at = Some(e.at),
                    ("resolved", Some(_)) => {}
                    (_, Some(at)) if e.at >= at + window => return true,
                    (_, _) => resolved_at = None,
                }
            }
            resolved_at.is_some()
        })
        .map(|((t, k), _)| (t.to_string(), k.to_string()))
        .collect()
}

#[test]
fn oracle_follows_the_contract_in_plain_cases() {
    let t0 = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    let ev =
        |ticket: &str, n: u32, kind: &'static str, h: i64, resolver: Option<&'static str>| Event {
            tenant: "a".into(),
            ticket: ticket.into(),
            event_id: format!("{ticket}{n}"),
            kind,
            at: t0 + Duration::hours(h),
            resolver,
            tags: vec![],
        };
    let events = vec![
        ev("billed", 1, "resolved", 0, Some("ai")),
        ev("human", 1, "resolved", 0, Some("human")),
        ev("reopened", 1, "resolved", 0, Some("ai")),
        ev("reopened", 2, "customer_replied", 10, None),
        ev("reopened", 3, "resolved", 20, Some("ai")),
        ev("late-reopen", 1, "resolved", 0, Some("ai")),
        ev("late-reopen", 2, "reopened", 80, None),
        ev("handoff", 1, "handed_off_to_human", 0, None),
        ev("handoff", 2, "resolved", 1, Some("ai")),
    ];
    let want: BTreeSet<String> = [("billed", 1), ("reopened", 2), ("late-reopen", 1)]
        .iter()
        .map(|(t, s)| outcome_id("a", "generic", t, *s))
        .collect();
    assert_eq!(oracle(&events), want);
}
