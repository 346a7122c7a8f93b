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
        let Some(life) = state.tickets.get(&ticket) else {
            return json(404, &j!({"error": "no such ticket"}));
        };
        let events: Vec<Value> = life
            .ordered()
            .into_iter()
            .filter(|(_, s)| since.is_none_or(|t| s.at >= t))
            .map(|(i, s)| event_body(&ticket, i, &s))
            .collect();
        let body = j!({
            "ticket_id": ticket,
            "nonce": nonce,
            "status": if life.resolved() { "solved" } else { "open" },
            "resolved": life.resolved(),
            "updated_at": life.updated_at().map(rfc3339),
            "last_customer_message_at": life.last_customer_message_at().map(rfc3339),
            "events": events,
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
