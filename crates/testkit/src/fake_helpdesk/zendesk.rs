//! Zendesk Support API: `GET /api/v2/tickets/{id}.json` and
//! `GET /api/v2/tickets/{id}/audits.json`, a ticket's [`Life`] rendered as
//! Zendesk renders a ticket and its audits.
//!
//! Found (sources):
//! - Auth: `Basic base64("{email}/token:{api_token}")` or `Bearer <OAuth token>`.
//!   https://support.zendesk.com/hc/en-us/articles/4408831452954
//! - Show Ticket answers `{"ticket": {...}}`: `id` (integer), `status` (`new`,
//!   `open`, `pending`, `hold`, `solved`, `closed`), `requester_id`,
//!   `assignee_id`, `tags`, `via.channel`, `created_at`, `updated_at`, plus the
//!   subject and description. Times are ISO 8601 UTC, ids 64-bit integers.
//!   https://developer.zendesk.com/api-reference/introduction/data-types
//! - Audits: `{id, ticket_id, created_at, author_id, via, metadata, events}`;
//!   events `Create` / `Change` (`field_name`, `value`, `previous_value`),
//!   `Comment` (`author_id`, `body`, `public`), `Notification`, ….
//!   https://developer.zendesk.com/api-reference/ticketing/tickets/ticket_audits/
//!   https://developer.zendesk.com/documentation/ticketing/reference-guides/ticket-audit-events-reference
//! - Pagination: with `page[size]` (at most 100) cursor pagination — `meta:
//!   {has_more, after_cursor, before_cursor}`, `links: {next, prev}`, next page
//!   `page[after]=<cursor>`; without it, offset pagination (`page`,
//!   `next_page`, `previous_page`, `count`).
//!   https://developer.zendesk.com/api-reference/introduction/pagination/
//! - 404: `{"error":"RecordNotFound","description":"Not found"}`.
//! - Incremental Ticket Export, Cursor Based (backfill):
//!   `GET /api/v2/incremental/tickets/cursor.json?start_time=<unix seconds>`,
//!   then `?cursor=<after_cursor>`; answers `{tickets, after_cursor, after_url,
//!   before_cursor, before_url, end_of_stream}`, tickets in the order they last
//!   changed; `exclude_deleted=true` leaves deleted tickets out; admins only.
//!   https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/
//! - A requester's reply to a solved ticket reopens it (status `open`).
//!
//! Assumed (not documented): the cursor's form (opaque here: base64 of an
//! offset); a bad cursor or page size answers 400 with an `error` /
//! `description` body like other Zendesk validation errors; `Change` values are
//! strings, as in Zendesk's examples; the AI agent works the ticket from its
//! creation (assigned to it), resolves with a public comment, and hands off by
//! assigning to a human. Pages hold at most `state.page_size` audits, whatever
//! the client asks for. The export's cursor is what Zendesk's decode to,
//! `base64("<unix time>.0||<ticket id>|")` of the last ticket sent (the next
//! page starts after that ticket, wherever tickets moved since), pages hold
//! `state.page_size` tickets (Zendesk: 1,000), `end_of_stream` is true on the
//! page that reaches the end; a request without `start_time` or `cursor`, or
//! with an unreadable one, answers 400 (Zendesk's wording assumed); the last
//! minute is not held back, and `generated_timestamp` is `updated_at`.

use super::{
    basic_ok, bearer_ok, json, query_param, rfc3339, Happening, Life, Request, Response, State,
    Vendor, AI_AGENT, CUSTOMER, HUMAN_AGENT,
};
use base64::Engine;
use serde_json::{json as j, Value};

pub struct Zendesk;

/// What a customer and the agents write; the client must never keep it.
pub const CUSTOMER_WORDS: &str = "My order 1234 never arrived, jane@customer.example";
pub const AGENT_WORDS: &str = "Here is your tracking link, sorry for the delay";

fn num(id: &str) -> u64 {
    id.parse().unwrap_or(0)
}

fn not_found() -> Response {
    json(
        404,
        &j!({"error": "RecordNotFound", "description": "Not found"}),
    )
}

fn invalid(description: &str) -> Response {
    json(
        400,
        &j!({"error": "InvalidPaginationParameter", "description": description}),
    )
}

/// A ticket as the fake renders it: its audits and where they leave it.
struct Rendered {
    audits: Vec<Value>,
    status: &'static str,
    assignee: u64,
}

/// Builds one audit after another, numbering audits and their events.
struct Audits {
    ticket: u64,
    list: Vec<Value>,
}

impl Audits {
    fn push(
        &mut self,
        at: chrono::DateTime<chrono::Utc>,
        author: &str,
        channel: &str,
        events: Vec<Value>,
    ) {
        let audit_id = self.ticket * 1000 + self.list.len() as u64 + 1;
        let events: Vec<Value> = events
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e["id"] = j!(audit_id * 100 + i as u64 + 1);
                e
            })
            .collect();
        self.list.push(j!({
            "id": audit_id,
            "ticket_id": self.ticket,
            "created_at": rfc3339(at),
            "author_id": num(author),
            "via": {"channel": channel, "source": {"from": {}, "to": {}, "rel": null}},
            "metadata": {"system": {"client": "fake", "ip_address": "192.0.2.1"}, "custom": {}},
            "events": events,
        }));
    }
}

fn comment(author: &str, words: &str, public: bool) -> Value {
    j!({"type": "Comment", "author_id": num(author), "body": words, "html_body": format!("<p>{words}</p>"),
        "plain_body": words, "public": public, "attachments": []})
}

fn change(field: &str, value: &str, previous: &str) -> Value {
    j!({"type": "Change", "field_name": field, "value": value, "previous_value": previous})
}

fn render(ticket: u64, life: &Life) -> Rendered {
    let mut audits = Audits {
        ticket,
        list: Vec::new(),
    };
    let created = life
        .created_at
        .or_else(|| life.steps.first().map(|s| s.at))
        .unwrap_or_default();
    audits.push(
        created,
        CUSTOMER,
        "email",
        vec![
            comment(CUSTOMER, CUSTOMER_WORDS, true),
            j!({"type": "Create", "field_name": "status", "value": "new"}),
            j!({"type": "Create", "field_name": "requester_id", "value": CUSTOMER}),
            j!({"type": "Create", "field_name": "assignee_id", "value": AI_AGENT}),
            j!({"type": "Notification", "subject": "New ticket", "body": CUSTOMER_WORDS,
                "recipients": [num(AI_AGENT)]}),
        ],
    );
    let mut status = "new";
    let mut assignee = AI_AGENT;
    for (_, step) in life.ordered() {
        let mut events = Vec::new();
        let (author, channel) = match step.what {
            Happening::Resolved { by_ai } => {
                let agent = if by_ai { AI_AGENT } else { HUMAN_AGENT };
                events.push(comment(agent, AGENT_WORDS, true));
                events.push(change("status", "solved", status));
                status = "solved";
                (agent, "web")
            }
            Happening::Reopened => {
                if status == "open" {
                    // Nothing to change: the agent leaves an internal note.
                    events.push(comment(HUMAN_AGENT, "Looking again", false));
                } else {
                    events.push(change("status", "open", status));
                    status = "open";
                }
                (HUMAN_AGENT, "web")
            }
            Happening::CustomerReplied => {
                events.push(comment(CUSTOMER, CUSTOMER_WORDS, true));
                if status == "solved" {
                    events.push(change("status", "open", status));
                    status = "open";
                }
                (CUSTOMER, "email")
            }
            Happening::HandedOff => {
                events.push(change("assignee_id", HUMAN_AGENT, assignee));
                assignee = HUMAN_AGENT;
                (AI_AGENT, "web")
            }
        };
        audits.push(step.at, author, channel, events);
    }
    Rendered {
        audits: audits.list,
        status,
        assignee: num(assignee),
    }
}

fn ticket_json(id: u64, life: &Life, r: &Rendered) -> Value {
    j!({"ticket": {
        "id": id,
        "url": format!("https://acme.zendesk.com/api/v2/tickets/{id}.json"),
        "status": r.status,
        "subject": "Where is my order?",
        "description": CUSTOMER_WORDS,
        "requester_id": num(CUSTOMER),
        "submitter_id": num(CUSTOMER),
        "assignee_id": r.assignee,
        "tags": [],
        "via": {"channel": "email", "source": {"from": {}, "to": {}, "rel": null}},
        "created_at": life.created_at.map(rfc3339),
        "updated_at": life.updated_at().map(rfc3339),
    }})
}

fn cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("zd:{offset}"))
}

fn offset_of(cursor: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("zd:")?
        .parse()
        .ok()
}

/// The audits page a request asks for, cursor- or offset-paginated.
fn audits_page(req: &Request, state: &State, id: u64, all: &[Value]) -> Response {
    let host = req.header("host").unwrap_or("127.0.0.1");
    let url = format!("http://{host}/api/v2/tickets/{id}/audits.json");
    let Some(size) = query_param(req, "page[size]") else {
        return offset_page(req, state, &url, all);
    };
    let size = match size.parse::<usize>() {
        Ok(n) if (1..=100).contains(&n) => n,
        _ => return invalid("page[size] must be between 1 and 100"),
    };
    let start = match query_param(req, "page[after]") {
        None => 0,
        Some(c) => match offset_of(&c) {
            Some(o) if o <= all.len() => o,
            _ => return invalid("page[after] is not a valid cursor"),
        },
    };
    let end = (start + size.min(state.page_size)).min(all.len());
    let has_more = end < all.len();
    let after = (end > start).then(|| cursor(end));
    let before = (end > start).then(|| cursor(start));
    json(
        200,
        &j!({
            "audits": &all[start..end],
            "meta": {"has_more": has_more, "after_cursor": after, "before_cursor": before},
            "links": {
                "next": has_more.then(|| format!("{url}?page[size]={size}&page[after]={}", cursor(end))),
                "prev": (start > 0).then(|| format!("{url}?page[size]={size}&page[before]={}", cursor(start))),
            },
        }),
    )
}

fn offset_page(req: &Request, state: &State, url: &str, all: &[Value]) -> Response {
    let page = match query_param(req, "page").map(|p| p.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        _ => return invalid("page must be a positive integer"),
    };
    let per = state.page_size.min(100);
    let start = ((page - 1) * per).min(all.len());
    let end = (start + per).min(all.len());
    json(
        200,
        &j!({
            "audits": &all[start..end],
            "next_page": (end < all.len()).then(|| format!("{url}?page={}", page + 1)),
            "previous_page": (page > 1).then(|| format!("{url}?page={}", page - 1)),
            "count": all.len(),
        }),
    )
}

impl Vendor for Zendesk {
    fn name(&self) -> &'static str {
        "zendesk"
    }

    fn authorized(&self, req: &Request, state: &State) -> bool {
        basic_ok(req, &format!("{}/token", state.user), &state.token)
            || bearer_ok(req, &state.token)
    }

    fn handle(&self, req: &Request, state: &State) -> Response {
        if req.method != "GET" {
            return json(405, &j!({"error": "MethodNotAllowed"}));
        }
        if req.path == "/api/v2/incremental/tickets/cursor.json" {
            return export(req, state);
        }
        let Some(rest) = req.path.strip_prefix("/api/v2/tickets/") else {
            return json(
                404,
                &j!({"error": "InvalidEndpoint", "description": "Not found"}),
            );
        };
        let rest = rest.strip_suffix(".json").unwrap_or(rest);
        let (id, audits) = match rest.split_once('/') {
            None => (rest, false),
            Some((id, "audits")) => (id, true),
            Some(_) => {
                return json(
                    404,
                    &j!({"error": "InvalidEndpoint", "description": "Not found"}),
                )
            }
        };
        let (Some(life), Ok(n)) = (state.tickets.get(id), id.parse::<u64>()) else {
            return not_found();
        };
        let rendered = render(n, life);
        if audits {
            audits_page(req, state, n, &rendered.audits)
        } else {
            json(200, &ticket_json(n, life, &rendered))
        }
    }
}

/// `base64("<unix time>.0||<ticket id>|")`, the position after `ticket`.
fn export_cursor(updated: i64, ticket: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{updated}.0||{ticket}|"))
}

fn export_position(cursor: &str) -> Option<(i64, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (time, rest) = text.split_once(".0||")?;
    let id = rest.strip_suffix('|')?;
    Some((time.parse().ok()?, id.to_string()))
}

/// The cursor-based incremental ticket export: the tickets changed since
/// `start_time` (or after the cursor's position), by last change then id.
fn export(req: &Request, state: &State) -> Response {
    let (from, after) = match (query_param(req, "cursor"), query_param(req, "start_time")) {
        (Some(c), _) => match export_position(&c) {
            Some((t, id)) => (t, Some((t, id))),
            None => return invalid_value("cursor is invalid"),
        },
        (None, Some(t)) => match t.parse::<i64>() {
            Ok(t) if t >= 0 => (t, None),
            _ => return invalid_value("start_time must be a Unix time"),
        },
        (None, None) => return invalid_value("start_time or cursor is required"),
    };
    let Some(from) = chrono::DateTime::from_timestamp(from, 0) else {
        return invalid_value("start_time is out of range");
    };
    let key = |id: &String| {
        let updated = state
            .tickets
            .get(id)
            .and_then(|l| l.updated_at())
            .map_or(0, |t| t.timestamp());
        (updated, id.clone())
    };
    let rest: Vec<(i64, String)> = state
        .changed_tickets(from, chrono::DateTime::<chrono::Utc>::MAX_UTC)
        .iter()
        .map(key)
        .filter(|k| after.as_ref().is_none_or(|a| k > a))
        .collect();
    let page = &rest[..rest.len().min(state.page_size)];
    let tickets: Vec<Value> = page
        .iter()
        .filter_map(|(updated, id)| {
            let (life, n) = (state.tickets.get(id)?, id.parse::<u64>().ok()?);
            let mut t = ticket_json(n, life, &render(n, life))["ticket"].take();
            t["generated_timestamp"] = j!(updated);
            Some(t)
        })
        .collect();
    let after_cursor = page.last().map(|(t, id)| export_cursor(*t, id));
    let host = req.header("host").unwrap_or("127.0.0.1");
    let url = format!("http://{host}/api/v2/incremental/tickets/cursor.json");
    json(
        200,
        &j!({
            "tickets": tickets,
            "after_cursor": after_cursor,
            "after_url": after_cursor.as_ref().map(|c| format!("{url}?cursor={c}")),
            "before_cursor": null,
            "before_url": null,
            "end_of_stream": rest.len() <= page.len(),
        }),
    )
}

fn invalid_value(description: &str) -> Response {
    json(
        400,
        &j!({"error": "InvalidValue", "description": description}),
    )
}
