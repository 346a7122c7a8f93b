//! Freshdesk API v2: `GET /api/v2/tickets/{id}[?include=…]` and
//! `GET /api/v2/tickets/{id}/conversations?page=&per_page=`, a ticket's
//! [`Life`] rendered as Freshdesk renders a ticket, its stats and its
//! conversations.
//!
//! Found (sources), https://developers.freshdesk.com/api/ :
//! - Auth: Basic, the API key as user name and any password (`apikey:X`).
//! - A ticket: `id`, `status` (2 Open, 3 Pending, 4 Resolved, 5 Closed),
//!   `source` (2 Portal, …), `requester_id`, `responder_id` (the assigned
//!   agent), `tags`, `spam`, `created_at`, `updated_at`, `description_text`;
//!   `include` takes `conversations`, `requester`, `company`, `stats`
//!   (comma-separated); `stats` holds `resolved_at`, `closed_at`,
//!   `first_responded_at` and more.
//! - Conversations: a JSON array of `{id, body, body_text, incoming, private,
//!   user_id, support_email, source, ticket_id, created_at, updated_at,
//!   from_email, to_emails, attachments}`; `page` from 1, `per_page` 30 by
//!   default and at most 100 ("Invalid values and values greater than 100 will
//!   result in an error"); a `link` header `<url>; rel="next"` while there is a
//!   next page, none on the last.
//! - Errors: `{"description": "Validation failed", "errors": [{field, message,
//!   code}]}` for 400; 404 for an invalid id.
//! - List All Tickets (backfill): `GET /api/v2/tickets`, a JSON array of
//!   tickets; without `updated_since` only tickets created in the past 30 days;
//!   `order_by` `created_at` (default) / `due_by` / `updated_at` / `status`,
//!   `order_type` `asc` / `desc` (default); `per_page` at most 100; at most 300
//!   pages; the `link` header names the next page.
//!
//! Assumed (not documented): `stats` also has `reopened_at`,
//! `status_updated_at`, `agent_responded_at`, `requester_responded_at`,
//! `pending_since`, each the latest such time (Freshdesk's SDK models them);
//! a 404 has an empty body; a customer's reply to a resolved ticket reopens it;
//! the AI agent is assigned from the start, a ticket is resolved by its
//! assignee (a human resolution reassigns it to the human), and a hand-off
//! assigns a human. Pages hold at most `state.page_size` conversations,
//! whatever `per_page` asks. The ticket list: `updated_since` is inclusive;
//! `due_by` and `status` order like `created_at` (the fake has neither); a page
//! past the 300th, or an unknown `order_by` / `order_type`, answers a
//! validation error; the 30 days count back from `state.now`.

use super::{
    json, query_param, rfc3339, Happening, Life, Request, Response, State, Vendor, AI_AGENT,
    CUSTOMER, HUMAN_AGENT,
};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json as j, Value};

pub struct Freshdesk;

/// What a customer and the agents write; the client must never keep it.
pub const CUSTOMER_WORDS: &str = "I still cannot log in, jane@customer.example";
pub const AGENT_WORDS: &str = "Please reset your password from the login page";

const OPEN: u8 = 2;
const RESOLVED: u8 = 4;

fn num(id: &str) -> u64 {
    id.parse().unwrap_or(0)
}

fn validation(field: &str, message: &str) -> Response {
    json(
        400,
        &j!({"description": "Validation failed",
             "errors": [{"field": field, "message": message, "code": "invalid_value"}]}),
    )
}

/// The user name of `Authorization: Basic base64(user:password)`.
fn basic_user(req: &Request) -> Option<String> {
    let encoded = req.header("authorization")?.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.split_once(':').map(|(user, _)| user.to_string())
}

#[derive(Default)]
struct Stats {
    resolved_at: Option<DateTime<Utc>>,
    reopened_at: Option<DateTime<Utc>>,
    status_updated_at: Option<DateTime<Utc>>,
    agent_responded_at: Option<DateTime<Utc>>,
    requester_responded_at: Option<DateTime<Utc>>,
    first_responded_at: Option<DateTime<Utc>>,
}

/// A ticket as the fake renders it.
struct Rendered {
    status: u8,
    responder: &'static str,
    stats: Stats,
    conversations: Vec<Value>,
}

fn conversation(ticket: u64, index: usize, at: DateTime<Utc>, user: &str) -> Value {
    let customer = user == CUSTOMER;
    let words = if customer {
        CUSTOMER_WORDS
    } else {
        AGENT_WORDS
    };
    j!({
        "id": ticket * 100 + index as u64 + 1,
        "body": format!("<div>{words}</div>"),
        "body_text": words,
        "incoming": customer,
        "private": false,
        "user_id": num(user),
        "support_email": if customer { Value::Null } else { j!("support@acme.example") },
        "source": 0,
        "ticket_id": ticket,
        "created_at": rfc3339(at),
        "updated_at": rfc3339(at),
        "from_email": if customer { "jane@customer.example" } else { "support@acme.example" },
        "to_emails": [if customer { "support@acme.example" } else { "jane@customer.example" }],
        "attachments": [],
    })
}

fn render(ticket: u64, life: &Life) -> Rendered {
    let mut r = Rendered {
        status: OPEN,
        responder: AI_AGENT,
        stats: Stats::default(),
        conversations: Vec::new(),
    };
    for (_, step) in life.ordered() {
        match step.what {
            Happening::Resolved { by_ai } => {
                r.responder = if by_ai { AI_AGENT } else { HUMAN_AGENT };
                let index = r.conversations.len();
                r.conversations
                    .push(conversation(ticket, index, step.at, r.responder));
                r.stats.agent_responded_at = Some(step.at);
                r.stats.first_responded_at.get_or_insert(step.at);
                r.status = RESOLVED;
                r.stats.resolved_at = Some(step.at);
                r.stats.status_updated_at = Some(step.at);
            }
            Happening::Reopened => reopen(&mut r, step.at),
            Happening::CustomerReplied => {
                let index = r.conversations.len();
                r.conversations
                    .push(conversation(ticket, index, step.at, CUSTOMER));
                r.stats.requester_responded_at = Some(step.at);
                reopen(&mut r, step.at);
            }
            Happening::HandedOff => r.responder = HUMAN_AGENT,
        }
    }
    r
}

fn reopen(r: &mut Rendered, at: DateTime<Utc>) {
    if r.status != OPEN {
        r.status = OPEN;
        r.stats.reopened_at = Some(at);
        r.stats.status_updated_at = Some(at);
    }
}

fn ticket_json(id: u64, life: &Life, r: &Rendered, stats: bool) -> Value {
    let mut v = j!({
        "id": id,
        "status": r.status,
        "priority": 1,
        "source": 2,
        "subject": "Cannot log in",
        "description": format!("<div>{CUSTOMER_WORDS}</div>"),
        "description_text": CUSTOMER_WORDS,
        "requester_id": num(CUSTOMER),
        "responder_id": num(r.responder),
        "group_id": null,
        "company_id": null,
        "type": null,
        "tags": [],
        "cc_emails": [],
        "fwd_emails": [],
        "reply_cc_emails": [],
        "spam": false,
        "is_escalated": false,
        "fr_escalated": false,
        "custom_fields": {},
        "created_at": life.created_at.map(rfc3339),
        "updated_at": life.updated_at().map(rfc3339),
        "attachments": [],
    });
    if stats {
        let s = &r.stats;
        v["stats"] = j!({
            "agent_responded_at": s.agent_responded_at.map(rfc3339),
            "requester_responded_at": s.requester_responded_at.map(rfc3339),
            "first_responded_at": s.first_responded_at.map(rfc3339),
            "status_updated_at": s.status_updated_at.map(rfc3339),
            "reopened_at": s.reopened_at.map(rfc3339),
            "resolved_at": s.resolved_at.map(rfc3339),
            "closed_at": null,
            "pending_since": null,
        });
    }
    v
}

/// `include`'s values, or the validation error Freshdesk gives for others.
fn includes(req: &Request) -> Result<Vec<String>, Response> {
    let Some(raw) = query_param(req, "include") else {
        return Ok(Vec::new());
    };
    let list: Vec<String> = raw.split(',').map(|s| s.trim().to_string()).collect();
    match list
        .iter()
        .find(|i| !matches!(i.as_str(), "conversations" | "requester" | "company" | "stats"))
    {
        Some(bad) => Err(validation(
            "include",
            &format!("It should be one of these values: 'conversations,requester,company,stats' (not {bad})"),
        )),
        None => Ok(list),
    }
}

fn positive(req: &Request, name: &str, default: usize, max: usize) -> Result<usize, Response> {
    match query_param(req, name).map(|v| v.parse::<usize>()) {
        None => Ok(default),
        Some(Ok(n)) if n >= 1 && n <= max => Ok(n),
        _ => Err(validation(name, "It should be a valid positive number")),
    }
}

fn conversations_page(req: &Request, state: &State, id: u64, all: &[Value]) -> Response {
    let (page, per_page) = match (
        positive(req, "page", 1, usize::MAX),
        positive(req, "per_page", 30, 100),
    ) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let size = per_page.min(state.page_size);
    let start = (page - 1).saturating_mul(size).min(all.len());
    let end = (start + size).min(all.len());
    let body = Value::Array(all[start..end].to_vec());
    let mut response = json(200, &body);
    if end < all.len() {
        let host = req.header("host").unwrap_or("127.0.0.1");
        response = response.header(
            "Link",
            format!(
                "<http://{host}/api/v2/tickets/{id}/conversations?page={}&per_page={per_page}>; rel=\"next\"",
                page + 1
            ),
        );
    }
    response
}

impl Vendor for Freshdesk {
    fn name(&self) -> &'static str {
        "freshdesk"
    }

    fn authorized(&self, req: &Request, state: &State) -> bool {
        // The key is the user name; the password is ignored.
        basic_user(req).is_some_and(|user| user == state.token)
    }

    fn handle(&self, req: &Request, state: &State) -> Response {
        if req.method != "GET" {
            return json(405, &j!({"description": "Method not allowed"}));
        }
        if req.path == "/api/v2/tickets" {
            return list(req, state);
        }
        let Some(rest) = req.path.strip_prefix("/api/v2/tickets/") else {
            return Response::new(404, String::new());
        };
        let (id, conversations) = match rest.split_once('/') {
            None => (rest, false),
            Some((id, "conversations")) => (id, true),
            Some(_) => return Response::new(404, String::new()),
        };
        let (Some(life), Ok(n)) = (state.tickets.get(id), id.parse::<u64>()) else {
            return Response::new(404, String::new());
        };
        let rendered = render(n, life);
        if conversations {
            return conversations_page(req, state, n, &rendered.conversations);
        }
        let list = match includes(req) {
            Ok(list) => list,
            Err(e) => return e,
        };
        let mut ticket = ticket_json(n, life, &rendered, list.iter().any(|i| i == "stats"));
        if list.iter().any(|i| i == "conversations") {
            // "up to ten conversations sorted by created_at in ascending order"
            let first: Vec<Value> = rendered.conversations.iter().take(10).cloned().collect();
            ticket["conversations"] = Value::Array(first);
        }
        json(200, &ticket)
    }
}

/// List All Tickets: `updated_since`, `order_by`, `order_type`, `page`, `per_page`.
fn list(req: &Request, state: &State) -> Response {
    let (page, per_page) = match (
        positive(req, "page", 1, 300),
        positive(req, "per_page", 30, 100),
    ) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let order_by = query_param(req, "order_by").unwrap_or_else(|| "created_at".into());
    if !matches!(
        order_by.as_str(),
        "created_at" | "due_by" | "updated_at" | "status"
    ) {
        return validation(
            "order_by",
            "It should be one of these values: 'created_at,due_by,updated_at,status'",
        );
    }
    let descending = match query_param(req, "order_type").as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return validation("order_type", "It should be one of these values: 'asc,desc'"),
    };
    let ids: Vec<String> = match query_param(req, "updated_since") {
        Some(since) => match DateTime::parse_from_rfc3339(&since) {
            Ok(t) => state.changed_tickets(t.with_timezone(&Utc), DateTime::<Utc>::MAX_UTC),
            Err(_) => {
                return validation(
                    "updated_since",
                    "It should be in the 'valid date time' format",
                )
            }
        },
        // The default list: tickets created in the past 30 days.
        None => {
            let from = state.now.unwrap_or_else(Utc::now) - chrono::Duration::days(30);
            state
                .tickets
                .iter()
                .filter(|(_, l)| l.created_at.is_some_and(|c| c >= from))
                .map(|(id, _)| id.clone())
                .collect()
        }
    };
    let mut rows: Vec<(Option<DateTime<Utc>>, String)> = ids
        .into_iter()
        .filter_map(|id| {
            let life = state.tickets.get(&id)?;
            let key = if order_by == "updated_at" {
                life.updated_at()
            } else {
                life.created_at
            };
            Some((key, id))
        })
        .collect();
    rows.sort();
    if descending {
        rows.reverse();
    }
    let size = per_page.min(state.page_size);
    let start = (page - 1).saturating_mul(size).min(rows.len());
    let end = (start + size).min(rows.len());
    let tickets: Vec<Value> = rows[start..end]
        .iter()
        .filter_map(|(_, id)| {
            let (life, n) = (state.tickets.get(id)?, id.parse::<u64>().ok()?);
            Some(ticket_json(n, life, &render(n, life), false))
        })
        .collect();
    let mut response = json(200, &Value::Array(tickets));
    if end < rows.len() && page < 300 {
        let host = req.header("host").unwrap_or("127.0.0.1");
        let mut next: Vec<(String, String)> =
            serde_urlencoded::from_str(&req.query).unwrap_or_default();
        next.retain(|(k, _)| k != "page");
        next.push(("page".into(), (page + 1).to_string()));
        let query = serde_urlencoded::to_string(&next).unwrap_or_default();
        response = response.header(
            "Link",
            format!("<http://{host}/api/v2/tickets?{query}>; rel=\"next\""),
        );
    }
    response
}
