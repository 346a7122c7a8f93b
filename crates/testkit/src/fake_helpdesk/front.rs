//! Front's Core API as the client reads it: `GET /conversations/{id}` and
//! `GET /conversations/{id}/events` (newest first, `limit` + `page_token`,
//! `_pagination.next` a full URL), behind `Authorization: Bearer <token>`.
//!
//! Found (sources): Bearer tokens (https://dev.frontapp.com/docs/authentication);
//! the Conversation (`status` `archived`/`unassigned`/`assigned`/`deleted`,
//! times in Unix seconds with decimals) and Event (`id`, `type`, `emitted_at`,
//! `source {_meta {type}, data}`, `target`, `conversation`) shapes and the
//! events list `{_pagination {next}, _links, _results}` "newest first" with
//! `limit` ≤ 100 (https://github.com/frontapp/front-api-specs,
//! core-api/core-api.json); pagination until `next` is `null`
//! (https://dev.frontapp.com/docs/pagination); 429 with `retry-after` seconds
//! (https://dev.frontapp.com/docs/rate-limiting, played by the shared core).
//!
//! Backfill's listing: `GET /events` (the company's events) with `q[after]`,
//! `q[before]` (seconds with decimals, both exclusive here), repeated
//! `q[types]`, `sort_by=created_at`, `sort_order` (`desc` by default, as
//! documented: newest first), `limit` ≤ 15, `page_token`, `_pagination.next` a full
//! URL (OpenAPI core-api.json `list-events`; https://dev.frontapp.com/docs/query-object-q).
//! It renders the tickets of `state.changed_tickets` with their steps, and each
//! conversation's creation as its first `inbound` event (`evt_<ticket>_c`; the
//! per-conversation list leaves the creation out, as before).
//!
//! Assumed (not documented): the 404 body
//! `{"_error": {"status": 404, "title": "Not found", "message": …}}` and the 401
//! body; `page_token` is opaque (here: an offset); teammate ids `tea_<n>`;
//! an inbound message does not add a separate `reopen` event (the life's own
//! `Reopened` steps do).
//!
//! Rendering of a life: `Resolved` → `archive` by the AI (`tea_9001`) or a human
//! (`tea_9002`); `Reopened` → `reopen` by the human; `CustomerReplied` →
//! `inbound` from an inbox; `HandedOff` → `assign` to the human. Event ids are
//! [`event_id`], what Front's webhooks of the same events carry.

use super::{
    bearer_ok, json, query_param, Happening, Life, Request, Response, State, Vendor, AI_AGENT,
    HUMAN_AGENT,
};
use chrono::{DateTime, Utc};
use serde_json::{json as j, Value};

pub struct Front;

/// A teammate id in Front's shape.
pub fn teammate(id: &str) -> String {
    format!("tea_{id}")
}

/// The event id of step `index` of `ticket` (the webhook of that event carries it too).
pub fn event_id(ticket: &str, index: usize) -> String {
    format!("evt_{ticket}_{index}")
}

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn teammate_ref(id: &str) -> Value {
    j!({"_meta": {"type": "teammate"}, "data": {"id": teammate(id), "username": "agent"}})
}

fn conversation(ticket: &str, life: &Life) -> Value {
    let handed_off = life.steps.iter().any(|s| s.what == Happening::HandedOff);
    let status = if life.resolved() {
        "archived"
    } else if handed_off {
        "assigned"
    } else {
        "unassigned"
    };
    j!({
        "_links": {"self": format!("/conversations/{ticket}")},
        "id": ticket,
        "type": "conversation",
        "subject": "(subject)",
        "status": status,
        "assignee": if handed_off { j!({"id": teammate(HUMAN_AGENT)}) } else { Value::Null },
        "tags": [],
        "links": [],
        "created_at": life.created_at.map(secs),
        "updated_at": life.updated_at().map(secs),
        "is_private": false,
    })
}

/// One step as a Front event (with the conversation it happened on).
pub fn event(
    ticket: &str,
    index: usize,
    at: DateTime<Utc>,
    what: Happening,
    conv: &Value,
) -> Value {
    let (kind, source, target) = match what {
        Happening::Resolved { by_ai } => (
            "archive",
            teammate_ref(if by_ai { AI_AGENT } else { HUMAN_AGENT }),
            Value::Null,
        ),
        Happening::Reopened => ("reopen", teammate_ref(HUMAN_AGENT), Value::Null),
        Happening::CustomerReplied => (
            "inbound",
            j!({"_meta": {"type": "inboxes"}, "data": [{"id": "inb_1"}]}),
            j!({"_meta": {"type": "message"}, "data": {"id": format!("msg_{ticket}_{index}")}}),
        ),
        Happening::HandedOff => ("assign", teammate_ref(AI_AGENT), teammate_ref(HUMAN_AGENT)),
    };
    j!({
        "_links": {"self": format!("/events/{}", event_id(ticket, index))},
        "id": event_id(ticket, index),
        "type": kind,
        "emitted_at": secs(at),
        "source": source,
        "target": target,
        "conversation": conv,
    })
}

fn not_found() -> Response {
    json(
        404,
        &j!({"_error": {"status": 404, "title": "Not found", "message": "Unknown conversation"}}),
    )
}

fn bad_request(message: &str) -> Response {
    json(
        400,
        &j!({"_error": {"status": 400, "title": "Bad request", "message": message}}),
    )
}

/// Every value of a repeated query parameter (`q[types]=a&q[types]=b`).
fn query_values(req: &Request, name: &str) -> Vec<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&req.query)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect()
}

/// A `q[after]`/`q[before]` time: seconds with up to 3 decimals.
fn q_time(req: &Request, name: &str) -> Result<Option<DateTime<Utc>>, Response> {
    match query_param(req, name) {
        None => Ok(None),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .and_then(|s| DateTime::from_timestamp_millis((s * 1000.0).round() as i64))
            .map(Some)
            .ok_or_else(|| bad_request(&format!("{name} is not a timestamp"))),
    }
}

/// `GET /events`: the company's events, filtered by `q`, paginated.
fn company_events(req: &Request, state: &State) -> Response {
    let (after, before) = match (q_time(req, "q[after]"), q_time(req, "q[before]")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let types = query_values(req, "q[types]");
    let far = |y| DateTime::from_timestamp(y, 0).unwrap_or_default();
    let tickets = state.changed_tickets(
        after.unwrap_or_else(|| far(0)),
        before.unwrap_or_else(|| far(32_503_680_000)),
    );
    let mut all: Vec<(DateTime<Utc>, String, Value)> = Vec::new();
    for ticket in &tickets {
        let Some(life) = state.tickets.get(ticket) else {
            continue;
        };
        let conv = conversation(ticket, life);
        if let Some(created) = life.created_at {
            let mut first = event(ticket, 0, created, Happening::CustomerReplied, &conv);
            first["id"] = j!(format!("evt_{ticket}_c"));
            all.push((created, format!("evt_{ticket}_c"), first));
        }
        for (i, s) in life.ordered() {
            all.push((
                s.at,
                event_id(ticket, i),
                event(ticket, i, s.at, s.what, &conv),
            ));
        }
    }
    all.retain(|(at, _, e)| {
        after.is_none_or(|a| *at > a)
            && before.is_none_or(|b| *at < b)
            && (types.is_empty() || types.iter().any(|t| e["type"] == j!(t)))
    });
    all.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    match query_param(req, "sort_order").as_deref() {
        None | Some("desc") => all.reverse(),
        Some("asc") => {}
        Some(_) => return bad_request("sort_order is asc or desc"),
    }
    let limit = query_param(req, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(15)
        .clamp(1, 15)
        .min(state.page_size);
    let offset = match query_param(req, "page_token").map(|t| t.parse::<usize>()) {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => return bad_request("invalid page_token"),
    };
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(_, _, e)| e.clone())
        .collect();
    let host = req.header("host").unwrap_or("127.0.0.1");
    let next = (offset + limit < all.len()).then(|| {
        let mut q: Vec<(String, String)> =
            serde_urlencoded::from_str(&req.query).unwrap_or_default();
        q.retain(|(k, _)| k != "page_token");
        q.push(("page_token".into(), (offset + limit).to_string()));
        let q = serde_urlencoded::to_string(&q).unwrap_or_default();
        format!("http://{host}/events?{q}")
    });
    json(
        200,
        &j!({
            "_pagination": {"next": next},
            "_links": {"self": format!("http://{host}/events")},
            "_results": page,
        }),
    )
}

fn events_page(req: &Request, state: &State, ticket: &str, life: &Life) -> Response {
    let limit = query_param(req, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 100)
        .min(state.page_size);
    let offset = match query_param(req, "page_token") {
        None => 0,
        Some(t) => match t.parse::<usize>() {
            Ok(o) => o,
            Err(_) => {
                return json(
                    400,
                    &j!({"_error": {"status": 400, "title": "Bad request", "message": "invalid page_token"}}),
                )
            }
        },
    };
    let conv = conversation(ticket, life);
    let mut all = life.ordered();
    all.reverse(); // newest first
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(i, s)| event(ticket, *i, s.at, s.what, &conv))
        .collect();
    let host = req.header("host").unwrap_or("127.0.0.1");
    let next = (offset + limit < all.len()).then(|| {
        format!(
            "http://{host}/conversations/{ticket}/events?limit={limit}&page_token={}",
            offset + limit
        )
    });
    json(
        200,
        &j!({
            "_pagination": {"next": next},
            "_links": {"self": format!("http://{host}/conversations/{ticket}/events")},
            "_results": page,
        }),
    )
}

impl Vendor for Front {
    fn name(&self) -> &'static str {
        "front"
    }

    fn authorized(&self, req: &Request, state: &State) -> bool {
        bearer_ok(req, &state.token)
    }

    fn handle(&self, req: &Request, state: &State) -> Response {
        if req.method != "GET" {
            return json(
                405,
                &j!({"_error": {"status": 405, "title": "Method not allowed"}}),
            );
        }
        let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["events"] => company_events(req, state),
            ["conversations", id] => match state.tickets.get(*id) {
                Some(life) => json(200, &conversation(id, life)),
                None => not_found(),
            },
            ["conversations", id, "events"] => match state.tickets.get(*id) {
                Some(life) => events_page(req, state, id, life),
                None => not_found(),
            },
            _ => json(
                404,
                &j!({"_error": {"status": 404, "title": "Not found", "message": "Unknown route"}}),
            ),
        }
    }

    fn ai_agent_id(&self) -> String {
        teammate(AI_AGENT)
    }
}
