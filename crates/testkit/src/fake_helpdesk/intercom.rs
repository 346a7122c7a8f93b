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
//!
//! Assumed (not documented): Fin closes as author type `bot` with the AI agent's
//! admin id and leaves `ai_agent.resolution_state = assumed_resolution` (reset when
//! a teammate closes); a teammate reopens with an `open` part; a contact's reply to
//! a closed conversation reopens it with no `open` part; a hand-off is an
//! `assignment` part by the bot to the human admin; part ids are numeric strings
//! unique in the workspace.

use super::{
    bearer_ok, json, Happening, Life, Request, Response, State, Vendor, AI_AGENT, CUSTOMER,
    HUMAN_AGENT,
};
use serde_json::{json as j, Value};

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
