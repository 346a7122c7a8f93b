//! Fake Gorgias REST API: `GET /api/tickets/<id>`, `GET /api/events`, `GET
//! /api/messages` and the tickets list `GET /api/tickets` (backfill), behind HTTP
//! Basic (`state.user` email, `state.token` API key).
//!
//! Found (sources):
//! - Basic auth with the user's email and API key; 401 without valid credentials.
//!   https://developers.gorgias.com/docs/access-tokens-api-keys,
//!   https://developers.gorgias.com/reference/errors-1
//! - Ticket fields `status` (`open`/`closed`), `closed_datetime`,
//!   `snooze_datetime`, `updated_datetime`, `last_message_datetime`,
//!   `last_received_message_datetime`, `assignee_user`, `channel`, `tags`,
//!   `messages`; datetimes like `2019-07-05T14:42:00.384938`.
//!   https://developers.gorgias.com/reference/the-ticket-object
//! - Events `{id, context, created_datetime, data, object_id, object_type, type,
//!   uri, user_id}`, filtered by `object_type`, `object_id`, `types` (repeated),
//!   `created_datetime[gte]`, ordered by `order_by=created_datetime:asc|desc`
//!   (default desc), `limit` (default 30, max 100), `cursor`; lists answer
//!   `{object: "list", uri, data, meta: {prev_cursor, next_cursor}}`.
//!   https://developers.gorgias.com/reference/the-event-object,
//!   https://developers.gorgias.com/changelog/deprecation-offset-based-pagination
//! - Messages `GET /api/messages?ticket_id=&order_by=&limit=&cursor=` with
//!   `from_agent`, `sender`, `source.type`, `body_text`, `created_datetime`,
//!   `sent_datetime`. https://developers.gorgias.com/reference/the-ticketmessage-object
//! - Tickets list `GET /api/tickets` with `order_by` (`created_datetime:asc|desc`,
//!   `updated_datetime:asc|desc`, default `created_datetime:desc`), `cursor`, `limit`
//!   (1–100, default 30) and filters by customer, view, rule, external id, `trashed`
//!   (default true) or `ticket_ids`; no time filter. https://developers.gorgias.com/reference/get_api-tickets
//!
//! Assumed (not documented): `ticket-closed` / `ticket-reopened` events by the
//! acting user (null for Gorgias's own automatic reopen on a customer message),
//! `ticket-assigned` with `data.assignee_user_id`; a customer message on a closed
//! ticket reopens it; the 404 body `{"error": {"msg": "Resource not found"}}`;
//! cursors are opaque (here the next offset in base64, so a ticket that jumps to
//! the top of a list mid-listing shifts the later pages, as an offset would; the
//! real ones look keyset-based); ties in the tickets list are ordered by id; ids are numbers (events
//! `ticket * 1000 + n`, messages `ticket * 1000 + 500 + n`).

use super::{
    basic_ok, json, query_param, Happening, Life, Request, Response, State, Vendor, CUSTOMER,
    HUMAN_AGENT,
};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json as j, Value};

pub struct Gorgias;

/// Gorgias's datetime format: UTC, microseconds, no offset.
pub fn gorgias_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn number(id: &str) -> i64 {
    id.parse().unwrap_or(0)
}

fn user(id: &str) -> i64 {
    number(id)
}

/// What the life shows through Gorgias's API.
struct Rendered {
    events: Vec<Value>,
    messages: Vec<Value>,
    closed_at: Option<DateTime<Utc>>,
    assignee: Option<&'static str>,
    last_customer: Option<DateTime<Utc>>,
}

fn render(ticket: &str, life: &Life) -> Rendered {
    let base = number(ticket) * 1000;
    let mut events = Vec::new();
    let mut messages = Vec::new();
    let mut closed = false;
    let mut closed_at = None;
    let mut assignee: Option<&'static str> = None;
    let mut event = |kind: &str, at: DateTime<Utc>, user_id: Option<&str>, data: Value| {
        let id = base + events.len() as i64 + 1;
        events.push(j!({
            "id": id, "context": format!("ctx-{id}"), "created_datetime": gorgias_time(at),
            "data": data, "object_id": number(ticket), "object_type": "Ticket", "type": kind,
            "uri": format!("/api/events/{id}/"), "user_id": user_id.map(user),
        }));
    };
    for (_, step) in life.ordered() {
        match step.what {
            Happening::Resolved { by_ai } => {
                let who = if by_ai { super::AI_AGENT } else { HUMAN_AGENT };
                assignee.get_or_insert(who);
                closed = true;
                closed_at = Some(step.at);
                event("ticket-closed", step.at, Some(who), Value::Null);
                messages.push(message(
                    base + 500 + messages.len() as i64,
                    ticket,
                    step.at,
                    who,
                    true,
                ));
            }
            Happening::Reopened if closed => {
                closed = false;
                event("ticket-reopened", step.at, Some(HUMAN_AGENT), Value::Null);
            }
            Happening::Reopened => {}
            Happening::CustomerReplied => {
                messages.push(message(
                    base + 500 + messages.len() as i64,
                    ticket,
                    step.at,
                    CUSTOMER,
                    false,
                ));
                if closed {
                    closed = false;
                    event("ticket-reopened", step.at, None, Value::Null);
                }
            }
            Happening::HandedOff => {
                assignee = Some(HUMAN_AGENT);
                event(
                    "ticket-assigned",
                    step.at,
                    Some(HUMAN_AGENT),
                    j!({"assignee_user_id": user(HUMAN_AGENT)}),
                );
            }
        }
    }
    Rendered {
        events,
        messages,
        closed_at: if closed { closed_at } else { None },
        assignee,
        last_customer: life.last_customer_message_at(),
    }
}

fn message(id: i64, ticket: &str, at: DateTime<Utc>, sender: &str, from_agent: bool) -> Value {
    j!({
        "id": id, "uri": format!("/api/messages/{id}"), "ticket_id": number(ticket),
        "channel": "email", "via": "email", "from_agent": from_agent,
        "sender": {"id": user(sender), "email": format!("{sender}@people.example"), "name": "Someone"},
        "source": {"type": "email", "from": {"address": format!("{sender}@people.example"), "name": "Someone"}},
        "body_text": "message body (never to be kept)",
        "created_datetime": gorgias_time(at), "sent_datetime": gorgias_time(at),
    })
}

fn ticket_json(id: &str, life: &Life, r: &Rendered) -> Value {
    let resolved = r.closed_at.is_some();
    j!({
        "id": number(id), "uri": format!("/api/tickets/{id}/"), "external_id": null,
        "status": if resolved { "closed" } else { "open" },
        "channel": "email", "via": "email", "spam": false,
        "customer": {"id": user(CUSTOMER), "email": "customer@people.example", "name": "A Customer"},
        "assignee_user": r.assignee.map(|a| j!({"id": user(a), "email": format!("{a}@agents.example"), "name": "Agent"})),
        "assignee_user_id": r.assignee.map(user),
        "tags": [{"id": 1, "name": "billing"}],
        "messages": r.messages,
        "created_datetime": life.created_at.map(gorgias_time),
        "updated_datetime": life.updated_at().map(gorgias_time),
        "closed_datetime": r.closed_at.map(gorgias_time),
        "snooze_datetime": null,
        "last_message_datetime": life.steps.iter().map(|s| s.at).max().map(gorgias_time),
        "last_received_message_datetime": r.last_customer.map(gorgias_time),
    })
}

fn all_params(req: &Request, name: &str) -> Vec<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&req.query)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect()
}

/// One cursor page of `items` (oldest first; reversed when the newest are asked
/// for first), Gorgias-shaped.
fn page(req: &Request, state: &State, path: &str, mut items: Vec<Value>) -> Response {
    if query_param(req, "order_by")
        .as_deref()
        .unwrap_or("created_datetime:desc")
        == "created_datetime:desc"
    {
        items.reverse();
    }
    paginate(req, state, path, items)
}

/// One cursor page of `items`, already in the order asked for.
fn paginate(req: &Request, state: &State, path: &str, items: Vec<Value>) -> Response {
    let limit = query_param(req, "limit")
        .map(|l| l.parse::<usize>().unwrap_or(0))
        .unwrap_or(30);
    if !(1..=100).contains(&limit) {
        return json(
            400,
            &j!({"error": {"msg": "limit must be between 1 and 100"}}),
        );
    }
    let size = limit.min(state.page_size);
    let start = match query_param(req, "cursor") {
        None => 0,
        Some(c) => match base64::engine::general_purpose::STANDARD
            .decode(&c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.strip_prefix("next__")
                    .and_then(|n| n.parse::<usize>().ok())
            }) {
            Some(n) => n,
            None => return json(400, &j!({"error": {"msg": "invalid cursor"}})),
        },
    };
    let end = (start + size).min(items.len());
    let data: Vec<Value> = items
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let cursor = |n: usize| base64::engine::general_purpose::STANDARD.encode(format!("next__{n}"));
    json(
        200,
        &j!({
            "object": "list", "uri": path, "data": data,
            "meta": {
                "prev_cursor": (start > 0).then(|| cursor(start.saturating_sub(size))),
                "next_cursor": (end < items.len()).then(|| cursor(end)),
            },
        }),
    )
}

fn not_found() -> Response {
    json(404, &j!({"error": {"msg": "Resource not found"}}))
}

fn events(req: &Request, state: &State) -> Response {
    let (Some("Ticket"), Some(id)) = (
        query_param(req, "object_type").as_deref(),
        query_param(req, "object_id"),
    ) else {
        return json(
            400,
            &j!({"error": {"msg": "this fake lists ticket events only"}}),
        );
    };
    let gte = match query_param(req, "created_datetime[gte]") {
        None => None,
        Some(s) => match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                return json(
                    400,
                    &j!({"error": {"msg": "created_datetime[gte] is not a datetime"}}),
                )
            }
        },
    };
    let types = all_params(req, "types");
    let items = state
        .tickets
        .get(&id)
        .map(|life| render(&id, life).events)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| types.is_empty() || types.iter().any(|t| e["type"] == t.as_str()))
        .filter(|e| {
            gte.is_none_or(|g| {
                e["created_datetime"]
                    .as_str()
                    .and_then(|s| {
                        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
                    })
                    .is_some_and(|t| t.and_utc() >= g)
            })
        })
        .collect();
    page(req, state, "/api/events", items)
}

/// `GET /api/tickets`: every ticket (Gorgias has no time filter), ordered by
/// `order_by` (`created_datetime` or `updated_datetime`, `:asc` or `:desc`;
/// default `created_datetime:desc`), ties by id.
fn tickets(req: &Request, state: &State) -> Response {
    let order = query_param(req, "order_by").unwrap_or_else(|| "created_datetime:desc".into());
    let Some((field, direction)) = order.split_once(':').filter(|(f, d)| {
        matches!(*f, "created_datetime" | "updated_datetime") && matches!(*d, "asc" | "desc")
    }) else {
        return json(
            400,
            &j!({"error": {"msg": format!("invalid order_by `{order}`")}}),
        );
    };
    let mut all: Vec<(Option<DateTime<Utc>>, i64, Value)> = state
        .tickets
        .iter()
        .map(|(id, life)| {
            let at = if field == "created_datetime" {
                life.created_at
            } else {
                life.updated_at()
            };
            (at, number(id), ticket_json(id, life, &render(id, life)))
        })
        .collect();
    all.sort_by_key(|(at, id, _)| (*at, *id));
    if direction == "desc" {
        all.reverse();
    }
    paginate(
        req,
        state,
        "/api/tickets",
        all.into_iter().map(|(_, _, t)| t).collect(),
    )
}

fn messages(req: &Request, state: &State) -> Response {
    let Some(id) = query_param(req, "ticket_id") else {
        return json(
            400,
            &j!({"error": {"msg": "this fake lists one ticket's messages"}}),
        );
    };
    let items = state
        .tickets
        .get(&id)
        .map(|life| render(&id, life).messages)
        .unwrap_or_default();
    page(req, state, "/api/messages", items)
}

impl Vendor for Gorgias {
    fn name(&self) -> &'static str {
        "gorgias"
    }

    fn authorized(&self, req: &Request, state: &State) -> bool {
        basic_ok(req, &state.user, &state.token)
    }

    fn handle(&self, req: &Request, state: &State) -> Response {
        if req.method != "GET" {
            return json(405, &j!({"error": {"msg": "method not allowed"}}));
        }
        match req.path.as_str() {
            "/api/events" => events(req, state),
            "/api/messages" => messages(req, state),
            "/api/tickets" | "/api/tickets/" => tickets(req, state),
            path => match path
                .strip_prefix("/api/tickets/")
                .map(|p| p.trim_end_matches('/'))
            {
                Some(id) => match state.tickets.get(id) {
                    Some(life) => json(200, &ticket_json(id, life, &render(id, life))),
                    None => not_found(),
                },
                None => not_found(),
            },
        }
    }
}
