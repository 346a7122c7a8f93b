//! The generic format's `verify_url`, as docs/helpdesks.md specifies it: `GET
//! ?ticket_id=&since=&nonce=` with `Authorization: Bearer <token>`; a JSON
//! answer that echoes the nonce, signed with `Outcome-Signature` like the
//! generic webhooks. Event ids are the ones webhooks would carry
//! (`<ticket>-<step index>`), so an event seen both ways counts once.

use super::{bearer_ok, json, query_param, rfc3339, Happening, Request, Response, State, Vendor};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json as j, Value};
use sha2::Sha256;

pub struct Generic;

/// The event id a generic webhook for step `index` of `ticket` carries.
pub fn event_id(ticket: &str, index: usize) -> String {
    format!("{ticket}-{index}")
}

/// The generic webhook body for one step (tests send these as webhooks).
pub fn event_body(ticket: &str, index: usize, step: &super::Step) -> Value {
    let (kind, resolver) = match step.what {
        Happening::Resolved { by_ai } => ("resolved", Some(if by_ai { "ai" } else { "human" })),
        Happening::Reopened => ("reopened", None),
        Happening::CustomerReplied => ("customer_replied", None),
        Happening::HandedOff => ("handed_off_to_human", None),
    };
    let mut v = j!({
        "event_id": event_id(ticket, index),
        "ticket_id": ticket,
        "type": kind,
        "occurred_at": rfc3339(step.at),
    });
    if let Some(r) = resolver {
        v["resolver"] = j!(r);
    }
    v
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl Vendor for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }

    fn authorized(&self, req: &Request, state: &State) -> bool {
        bearer_ok(req, &state.token)
    }

    fn handle(&self, req: &Request, state: &State) -> Response {
        if req.method != "GET" {
            return json(405, &j!({"error": "method not allowed"}));
        }
        if let Some(since) = query_param(req, "updated_since") {
            return list(req, state, &since);
        }
        let (Some(ticket), Some(nonce)) =
            (query_param(req, "ticket_id"), query_param(req, "nonce"))
        else {
            return json(400, &j!({"error": "ticket_id and nonce are required"}));
        };
        let since: Option<DateTime<Utc>> = match query_param(req, "since") {
            None => None,
            Some(s) => match DateTime::parse_from_rfc3339(&s) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(_) => return json(400, &j!({"error": "since is not RFC 3339"})),
            },
        };
        let view = match state.events.get(&ticket) {
            Some(given) => exact(given, since),
            None => match state.tickets.get(&ticket) {
                Some(life) => View {
                    events: life
                        .ordered()
                        .into_iter()
                        .filter(|(_, s)| since.is_none_or(|t| s.at >= t))
                        .map(|(i, s)| event_body(&ticket, i, &s))
                        .collect(),
                    resolved: life.resolved(),
                    updated_at: life.updated_at(),
                    last_customer_message_at: life.last_customer_message_at(),
                },
                None => return json(404, &j!({"error": "no such ticket"})),
            },
        };
        let body = j!({
            "ticket_id": ticket,
            "nonce": nonce,
            "status": if view.resolved { "solved" } else { "open" },
            "resolved": view.resolved,
            "updated_at": view.updated_at.map(rfc3339),
            "last_customer_message_at": view.last_customer_message_at.map(rfc3339),
            "events": view.events,
        })
        .to_string();
        let t = state.now.unwrap_or_else(Utc::now).timestamp();
        Response::new(200, body.clone())
            .header("Content-Type", "application/json".into())
            .header(
                "Outcome-Signature",
                sign(&state.signing_secret, t, body.as_bytes()),
            )
    }
}

/// What an answer says about a ticket.
struct View {
    events: Vec<Value>,
    resolved: bool,
    updated_at: Option<DateTime<Utc>>,
    last_customer_message_at: Option<DateTime<Utc>>,
}

/// A ticket given as exact webhook bodies ([`super::FakeHelpdesk::set_events`]):
/// those at or after `since` in time order; resolved when the last status
/// change (a hand-off is not one, as in [`super::Life::resolved`]) was a resolution.
fn exact(given: &[Value], since: Option<DateTime<Utc>>) -> View {
    let at = |e: &Value| {
        e["occurred_at"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let mut all: Vec<(Option<DateTime<Utc>>, &Value)> = given.iter().map(|e| (at(e), e)).collect();
    all.sort_by_key(|(t, _)| *t);
    let kind = |e: &Value| e["type"].as_str().unwrap_or_default().to_string();
    View {
        events: all
            .iter()
            .filter(|(t, _)| since.is_none_or(|s| t.is_some_and(|t| t >= s)))
            .map(|(_, e)| (*e).clone())
            .collect(),
        resolved: all
            .iter()
            .rev()
            .map(|(_, e)| kind(e))
            .find(|k| k != "handed_off_to_human")
            .is_some_and(|k| k == "resolved"),
        updated_at: all.iter().filter_map(|(t, _)| *t).max(),
        last_customer_message_at: all
            .iter()
            .filter(|(_, e)| kind(e) == "customer_replied")
            .filter_map(|(t, _)| *t)
            .max(),
    }
}

/// The listing for backfill: `updated_since`, `updated_until`, `cursor` (an offset
/// into the listing, as text), `page_size` tickets a page.
fn list(req: &Request, state: &State, since: &str) -> Response {
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
    let (Ok(since), Some(Ok(until)), Some(nonce)) = (
        parse(since),
        query_param(req, "updated_until").map(|u| parse(&u)),
        query_param(req, "nonce"),
    ) else {
        return json(
            400,
            &j!({"error": "updated_since, updated_until and nonce are required"}),
        );
    };
    let all = state.changed_tickets(since, until);
    let from: usize = match query_param(req, "cursor").map(|c| c.parse()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return json(400, &j!({"error": "bad cursor"})),
    };
    let page: Vec<&String> = all.iter().skip(from).take(state.page_size).collect();
    let next = (from + page.len() < all.len()).then(|| (from + page.len()).to_string());
    let body = j!({"nonce": nonce, "ticket_ids": page, "next_cursor": next, "total": all.len()})
        .to_string();
    let t = state.now.unwrap_or_else(Utc::now).timestamp();
    Response::new(200, body.clone())
        .header("Content-Type", "application/json".into())
        .header(
            "Outcome-Signature",
            sign(&state.signing_secret, t, body.as_bytes()),
        )
}
