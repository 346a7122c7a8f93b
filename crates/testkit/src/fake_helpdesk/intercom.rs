//! Intercom's `GET /conversations/{id}` over a ticket's life.
//!
//! Found (sources):
//! - `Authorization: Bearer <access token>`;
//!   https://developers.intercom.com/docs/build-an-integration/learn-more/authentication/
//! - the conversation: `state` (`open`/`closed`/`snoozed`), `open`, `updated_at`,
//!   `statistics {last_contact_reply_at, last_close_at, last_closed_by_id}`,
//!   `ai_agent {resolution_state}`, `conversation_parts {conversation_parts,
//!   total_count}` with the 500 most recent parts (no pagination), each part
//!   `{type, id, part_type, body, created_at, updated_at, notified_at, assigned_to,
//!   author {type, id, name, email}, redacted}`; 404 `{"type": "error.list",
//!   "request_id", "errors": [{"code": "not_found", "message": "Resource Not Found"}]}`.
//!   https://github.com/intercom/Intercom-OpenAPI `descriptions/2.11/api.intercom.io.yaml`
//! - the 429 of the shared core sends `Retry-After`; Intercom itself sends
//!   `X-RateLimit-Reset` (Unix time), which the client also reads.
//!   https://developers.intercom.com/docs/references/rest-api/errors/rate-limiting
//! - `POST /conversations/search` (backfill): `{"query": {"operator": "AND",
//!   "value": [{field, operator, value}]}, "pagination": {per_page (max 150),
//!   starting_after}}`, dates as Unix seconds; answer `{"type": "conversation.list",
//!   "conversations", "total_count", "pages": {type, page, per_page, total_pages,
//!   next: {per_page, starting_after}}}`, `next` absent on the last page. OpenAPI
//!   `searchConversations` (same file).
//!
//! Assumed (not documented): Fin closes as author type `bot` with the AI agent's
//! admin id and leaves `ai_agent.resolution_state = assumed_resolution` (reset when
//! a teammate closes); a teammate reopens with an `open` part; a contact's reply to
//! a closed conversation reopens it with no `open` part; a hand-off is an
//! `assignment` part by the bot to the human admin; part ids are numeric strings
//! unique in the workspace. The search answers 400 (`error.list`,
//! `parameter_invalid`) to a query it cannot read; this fake serves only the
//! backfill query (`updated_at >` AND `created_at <`), matches times to the second
//! (Intercom matches searched dates by day) and lists search results without parts.

use super::{
    bearer_ok, json, Happening, Life, Request, Response, State, Vendor, AI_AGENT, CUSTOMER,
    HUMAN_AGENT,
};
use chrono::{DateTime, Utc};
use serde_json::{json as j, Value};

/// The largest `pagination.per_page` Intercom accepts in a search.
pub const SEARCH_MAX_PER_PAGE: u64 = 150;

/// The most recent parts Intercom returns.
pub const PART_LIMIT: usize = 500;

pub struct Intercom;

/// The id of the part that renders step `index` of `ticket`.
pub fn part_id(ticket: &str, index: usize) -> String {
    format!("{ticket}{index:04}")
}

fn admin(id: &str) -> Value {
    j!({"type": "admin", "id": id, "name": "Agent", "email": "agent@acme.example"})
}

fn part(ticket: &str, index: usize, step: &super::Step) -> Value {
    let at = step.at.timestamp();
    let (part_type, author, assigned_to, body) = match step.what {
        Happening::Resolved { by_ai: true } => (
            "close",
            j!({"type": "bot", "id": AI_AGENT, "name": "Fin", "email": "operator@intercom.io"}),
            Value::Null,
            Value::Null,
        ),
        Happening::Resolved { by_ai: false } => {
            ("close", admin(HUMAN_AGENT), Value::Null, Value::Null)
        }
        Happening::Reopened => ("open", admin(HUMAN_AGENT), Value::Null, Value::Null),
        Happening::CustomerReplied => (
            "comment",
            j!({"type": "user", "id": CUSTOMER, "name": "Customer", "email": "customer@example.com"}),
            Value::Null,
            j!("<p>It is broken again.</p>"),
        ),
        Happening::HandedOff => (
            "assignment",
            j!({"type": "bot", "id": AI_AGENT, "name": "Fin", "email": "operator@intercom.io"}),
            j!({"type": "admin", "id": HUMAN_AGENT}),
            Value::Null,
        ),
    };
    j!({
        "type": "conversation_part", "id": part_id(ticket, index), "part_type": part_type,
        "body": body, "created_at": at, "updated_at": at, "notified_at": at,
        "assigned_to": assigned_to, "author": author, "attachments": [],
        "external_id": null, "redacted": false,
    })
}

fn conversation(ticket: &str, life: &Life) -> Value {
    let ordered = life.ordered();
    let parts: Vec<Value> = ordered
        .iter()
        .skip(ordered.len().saturating_sub(PART_LIMIT))
        .map(|(i, s)| part(ticket, *i, s))
        .collect();
    let last = |pred: fn(&Happening) -> bool| {
        ordered
            .iter()
            .rev()
            .find(|(_, s)| pred(&s.what))
            .map(|(_, s)| *s)
    };
    let last_close = last(|h| matches!(h, Happening::Resolved { .. }));
    let resolved = life.resolved();
    let fin = resolved
        && matches!(
            last_close.map(|s| s.what),
            Some(Happening::Resolved { by_ai: true })
        );
    let created = life
        .created_at
        .or(life.updated_at())
        .map_or(0, |t| t.timestamp());
    j!({
        "type": "conversation", "id": ticket, "title": null,
        "created_at": created,
        "updated_at": life.updated_at().map_or(created, |t| t.timestamp()),
        "waiting_since": null, "snoozed_until": null,
        "source": {"type": "conversation", "id": format!("{ticket}0"), "delivered_as": "customer_initiated",
                   "subject": "", "body": "<p>Help!</p>",
                   "author": {"type": "user", "id": CUSTOMER, "name": "Customer", "email": "customer@example.com"},
                   "attachments": [], "url": null, "redacted": false},
        "contacts": {"type": "contact.list", "contacts": [{"type": "contact", "id": CUSTOMER}]},
        "admin_assignee_id": last(|h| *h == Happening::HandedOff).map(|_| HUMAN_AGENT),
        "team_assignee_id": null,
        "open": !resolved, "state": if resolved { "closed" } else { "open" }, "read": true,
        "tags": {"type": "tag.list", "tags": []},
        "statistics": {
            "type": "conversation_statistics",
            "last_contact_reply_at": life.last_customer_message_at().map(|t| t.timestamp()),
            "last_close_at": last_close.map(|s| s.at.timestamp()),
            "last_closed_by_id": last_close.map(|s| match s.what {
                Happening::Resolved { by_ai: true } => AI_AGENT,
                _ => HUMAN_AGENT,
            }),
        },
        "ai_agent": if fin { j!({"source_type": "essentials_plan_setup", "resolution_state": "assumed_resolution"}) } else { Value::Null },
        "ai_agent_participated": ordered.iter().any(|(_, s)| s.what == Happening::Resolved { by_ai: true }),
        "conversation_parts": {"type": "conversation_part.list", "conversation_parts": parts, "total_count": ordered.len()},
    })
}

fn not_found() -> Response {
    json(
        404,
        &j!({"type": "error.list", "request_id": "fake-request-1",
             "errors": [{"code": "not_found", "message": "Resource Not Found"}]}),
    )
}

impl Vendor for Intercom {
    fn name(&self) -> &'static str {
        "intercom"
    }

    fn authorized(&self, req: &Request, state: &State) -> bool {
        bearer_ok(req, &state.token)
    }

    fn handle(&self, req: &Request, state: &State) -> Response {
        if req.path == "/conversations/search" {
            return match req.method.as_str() {
                "POST" => search(req, state),
                _ => not_found(),
            };
        }
        let Some(ticket) = req.path.strip_prefix("/conversations/") else {
            return not_found();
        };
        if req.method != "GET" || ticket.contains('/') {
            return not_found();
        }
        match state.tickets.get(ticket) {
            Some(life) => json(200, &conversation(ticket, life)),
            None => not_found(),
        }
    }
}

fn bad_request(message: &str) -> Response {
    json(
        400,
        &j!({"type": "error.list", "request_id": "fake-request-2",
             "errors": [{"code": "parameter_invalid", "message": message}]}),
    )
}

/// The `(field, operator) -> value` conditions of an `AND` query of single
/// filters; `None` if the query has another shape.
fn conditions(query: &Value) -> Option<Vec<(String, String, Value)>> {
    if query.get("operator")?.as_str()? != "AND" {
        return None;
    }
    query
        .get("value")?
        .as_array()?
        .iter()
        .map(|c| {
            Some((
                c.get("field")?.as_str()?.to_string(),
                c.get("operator")?.as_str()?.to_string(),
                c.get("value")?.clone(),
            ))
        })
        .collect()
}

/// A date filter's value: Unix seconds (Intercom reads a millisecond value as a
/// date thousands of years away, and strings fail the query).
fn seconds(v: &Value) -> Option<DateTime<Utc>> {
    let n = v.as_i64().filter(|n| n.abs() < 100_000_000_000)?;
    DateTime::from_timestamp(n, 0)
}

/// `POST /conversations/search` for the one query backfill needs: `updated_at >
/// A AND created_at < B`, Unix seconds. The conversations listed are the core's
/// `changed_tickets` from A on (a conversation's last update is at or after A
/// exactly when something happened to it since A) created before B, in the
/// core's order, `min(per_page, state.page_size)` a page; `starting_after` is
/// an opaque cursor (here the offset, hex-encoded behind a prefix).
fn search(req: &Request, state: &State) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return bad_request("the body is not JSON");
    };
    let Some(conds) = body.get("query").and_then(conditions) else {
        return bad_request("query must be an AND of single filters");
    };
    let find = |field: &str, op: &str| {
        conds
            .iter()
            .find(|(f, o, _)| f == field && o == op)
            .map(|(_, _, v)| seconds(v))
    };
    let (Some(Some(after)), Some(Some(before))) =
        (find("updated_at", ">"), find("created_at", "<"))
    else {
        return bad_request("expected updated_at > <unix seconds> AND created_at < <unix seconds>");
    };
    if conds.len() != 2 {
        return bad_request("unexpected filters");
    }
    let per_page = body
        .pointer("/pagination/per_page")
        .and_then(Value::as_u64)
        .unwrap_or(20);
    if per_page == 0 || per_page > SEARCH_MAX_PER_PAGE {
        return bad_request("per_page must be between 1 and 150");
    }
    let from = match body.pointer("/pagination/starting_after") {
        None | Some(Value::Null) => 0,
        Some(v) => match v
            .as_str()
            .and_then(|c| c.strip_prefix("WzE"))
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        {
            Some(n) => n,
            None => return bad_request("starting_after is not a cursor of this search"),
        },
    };
    let far = DateTime::<Utc>::MAX_UTC;
    let all: Vec<(&String, &Life)> = state
        .changed_tickets(after, far)
        .into_iter()
        .filter_map(|id| state.tickets.get_key_value(&id))
        .filter(|(_, l)| l.created_at.is_some_and(|c| c < before))
        .collect();
    let size = (per_page as usize).min(state.page_size.max(1));
    let items: Vec<Value> = all
        .iter()
        .skip(from)
        .take(size)
        .map(|(id, life)| {
            let mut c = conversation(id, life);
            // Search results carry no parts.
            if let Some(o) = c.as_object_mut() {
                o.remove("conversation_parts");
            }
            c
        })
        .collect();
    let total_pages = all.len().div_ceil(size).max(1);
    let mut pages = j!({"type": "pages", "page": from / size + 1, "per_page": size, "total_pages": total_pages});
    if from + items.len() < all.len() {
        pages["next"] =
            j!({"per_page": size, "starting_after": format!("WzE{:x}", from + items.len())});
    }
    json(
        200,
        &j!({"type": "conversation.list", "conversations": items, "total_count": all.len(), "pages": pages}),
    )
}
