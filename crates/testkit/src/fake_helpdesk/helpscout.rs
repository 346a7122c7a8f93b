//! Help Scout's Mailbox API 2.0 over a ticket's life: the OAuth token endpoint
//! (client credentials), `GET /v2/conversations/{id}` and
//! `GET /v2/conversations/{id}/threads?page=N`.
//!
//! Found (sources):
//! - `POST /v2/oauth2/token` with `grant_type=client_credentials`, `client_id`,
//!   `client_secret` (form, JSON or query); then `Authorization: Bearer`.
//!   https://developer.helpscout.com/mailbox-api/overview/authentication/
//! - the conversation's fields (`status`, `state`, `closedBy`, `closedByUser`,
//!   `closedAt`, `userUpdatedAt`, `customerWaitingSince`, `source`, `tags`,
//!   `primaryCustomer`, `assignee`).
//!   https://developer.helpscout.com/mailbox-api/endpoints/conversations/get/
//! - threads newest first in `_embedded.threads`, each `{id, type, status, state,
//!   createdBy {id, type}, assignedTo, body, createdAt}`; pages `page {size,
//!   totalElements, totalPages, number}` and `_links` (`next` only when a page
//!   follows). https://developer.helpscout.com/mailbox-api/endpoints/conversations/threads/list/
//!   https://developer.helpscout.com/mailbox-api/overview/pagination/
//! - `GET /v2/conversations` (backfill): `status` (default `active`; `all`),
//!   `modifiedSince`, `sortField` (`createdAt` default, `modifiedAt`, …),
//!   `sortOrder` (`desc` default, `asc`), `page`; HAL `_embedded.conversations`,
//!   `page {size, totalElements, totalPages, number}`, `_links.next`.
//!   https://developer.helpscout.com/mailbox-api/endpoints/conversations/list/
//! - the 429 of the shared core sends `Retry-After`; Help Scout itself sends
//!   `X-RateLimit-Retry-After` (seconds), which the client also reads.
//!   https://developer.helpscout.com/mailbox-api/overview/rate-limiting/
//!
//! Assumed (not documented): the token answer is `{"token_type": "bearer",
//! "access_token", "expires_in": 172800}` and wrong credentials get 401
//! `{"error": "invalid_client"}`; an access token is refused (401) after
//! `expires_in` by the fake's clock (`set_now`); a 404 is `{"logRef", "message"}`;
//! a thread's `status` is the conversation's status after it and `assignedTo` its
//! assignee after it; the conversation's first customer thread is at its
//! `createdAt`; agents close with a reply (`message`) and reopen or assign with a
//! `lineitem`; the page size is `state.page_size` (Help Scout: 50). The list:
//! list items are the conversation object; `modifiedSince` is strictly after, to
//! the second; an empty page has no `_embedded`; a bad parameter is a 400 with
//! `_embedded.errors`; other list filters (`mailbox`, `tag`, `query`, …) are not
//! served (ignored).

use super::{
    json, query_param, rfc3339, Happening, Life, Request, Response, State, Vendor, AI_AGENT,
    CUSTOMER, HUMAN_AGENT,
};
use chrono::{DateTime, Utc};
use serde_json::{json as j, Value};
use sha2::{Digest, Sha256};

/// The token endpoint's path.
pub const TOKEN_PATH: &str = "/v2/oauth2/token";
/// Seconds an access token lives.
pub const EXPIRES_IN: i64 = 172_800;

pub struct HelpScout;

fn id_number(s: &str) -> Value {
    s.parse::<u64>().map_or_else(|_| j!(s), |n| j!(n))
}

/// The id of the thread that renders step `index` (0: the opening message).
pub fn thread_id(ticket: &str, index: usize) -> String {
    format!("{ticket}{index:03}")
}

fn now(state: &State) -> DateTime<Utc> {
    state.now.unwrap_or_else(Utc::now)
}

fn mac(state: &State, issued: i64) -> String {
    let digest = Sha256::digest(format!("{}:{}:{issued}", state.user, state.token));
    hex::encode(&digest[..12])
}

/// An access token the fake issued at `issued` (Unix seconds) for these credentials.
fn access_token(state: &State, issued: i64) -> String {
    format!("hs-{issued}-{}", mac(state, issued))
}

fn token_valid(req: &Request, state: &State) -> bool {
    let Some(token) = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let mut parts = token.splitn(3, '-');
    let (Some("hs"), Some(issued), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(issued) = issued.parse::<i64>() else {
        return false;
    };
    sig == mac(state, issued) && now(state).timestamp() < issued + EXPIRES_IN
}

fn form(req: &Request) -> Vec<(String, String)> {
    let body = String::from_utf8_lossy(&req.body);
    if let Ok(v) = serde_json::from_str::<serde_json::Map<String, Value>>(&body) {
        return v
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
            .collect();
    }
    let mut pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(&body).unwrap_or_default();
    pairs.extend(
        serde_urlencoded::from_str::<Vec<(String, String)>>(&req.query).unwrap_or_default(),
    );
    pairs
}

fn token(req: &Request, state: &State) -> Response {
    let f = form(req);
    let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("grant_type") != Some("client_credentials") {
        return json(400, &j!({"error": "unsupported_grant_type"}));
    }
    if get("client_id") != Some(state.user.as_str())
        || get("client_secret") != Some(state.token.as_str())
    {
        return json(
            401,
            &j!({"error": "invalid_client", "error_description": "Bad client credentials"}),
        );
    }
    json(
        200,
        &j!({"token_type": "bearer", "access_token": access_token(state, now(state).timestamp()), "expires_in": EXPIRES_IN}),
    )
}

fn not_found() -> Response {
    json(
        404,
        &j!({"logRef": "fake-log-ref#1", "message": "Resource not found", "_links": {}}),
    )
}

fn person(id: &str, kind: &str) -> Value {
    j!({"id": id_number(id), "type": kind, "first": "Pat", "last": "Doe", "email": format!("{kind}{id}@acme.example")})
}

/// The threads of a life, oldest first, each with the status and assignee after it.
fn threads(ticket: &str, life: &Life) -> Vec<Value> {
    let created = life
        .created_at
        .or(life.updated_at())
        .unwrap_or_else(Utc::now);
    let mut out = vec![j!({
        "id": id_number(&thread_id(ticket, 0)), "type": "customer", "status": "active", "state": "published",
        "body": "Help!", "source": {"type": "email", "via": "customer"},
        "createdBy": person(CUSTOMER, "customer"), "createdAt": rfc3339(created),
    })];
    let mut status = "active";
    let mut assignee: Option<&str> = None;
    for (i, step) in life.ordered() {
        let (kind, by, body) = match step.what {
            Happening::Resolved { by_ai } => {
                status = "closed";
                (
                    "message",
                    person(if by_ai { AI_AGENT } else { HUMAN_AGENT }, "user"),
                    "All done.",
                )
            }
            Happening::Reopened => {
                status = "active";
                ("lineitem", person(HUMAN_AGENT, "user"), "")
            }
            Happening::CustomerReplied => {
                status = "active";
                ("customer", person(CUSTOMER, "customer"), "Still broken.")
            }
            Happening::HandedOff => {
                assignee = Some(HUMAN_AGENT);
                ("lineitem", person(AI_AGENT, "user"), "")
            }
        };
        let mut t = j!({
            "id": id_number(&thread_id(ticket, i + 1)), "type": kind, "status": status, "state": "published",
            "body": body, "source": {"type": "email", "via": if kind == "customer" { "customer" } else { "user" }},
            "createdBy": by, "createdAt": rfc3339(step.at),
        });
        if let Some(a) = assignee {
            t["assignedTo"] = person(a, "user");
        }
        out.push(t);
    }
    out
}

fn conversation(ticket: &str, life: &Life) -> Value {
    let ordered = life.ordered();
    let resolved = life.resolved();
    let last_close = ordered
        .iter()
        .rev()
        .find(|(_, s)| matches!(s.what, Happening::Resolved { .. }))
        .map(|(_, s)| *s);
    let closer = last_close.filter(|_| resolved).map(|s| match s.what {
        Happening::Resolved { by_ai: true } => AI_AGENT,
        _ => HUMAN_AGENT,
    });
    let created = life
        .created_at
        .or(life.updated_at())
        .unwrap_or_else(Utc::now);
    let waiting = life.last_customer_message_at().unwrap_or(created);
    let handed_off = ordered.iter().any(|(_, s)| s.what == Happening::HandedOff);
    j!({
        "id": id_number(ticket), "number": 1000 + ordered.len(), "threads": ordered.len() + 1,
        "type": "email", "folderId": 1, "status": if resolved { "closed" } else { "active" },
        "state": "published", "subject": "Help", "preview": "Help!", "mailboxId": 1,
        "assignee": if handed_off { person(HUMAN_AGENT, "user") } else { Value::Null },
        "createdBy": person(CUSTOMER, "customer"), "createdAt": rfc3339(created),
        "closedBy": closer.map_or(j!(0), id_number),
        "closedByUser": closer.map(|c| person(c, "user")),
        "closedAt": last_close.filter(|_| resolved).map(|s| rfc3339(s.at)),
        "userUpdatedAt": life.updated_at().map(rfc3339),
        "customerWaitingSince": {"time": rfc3339(waiting), "friendly": "a while ago"},
        "source": {"type": "email", "via": "customer"},
        "tags": [], "cc": [], "bcc": [],
        "primaryCustomer": person(CUSTOMER, "customer"),
        "customFields": [],
    })
}

fn thread_page(req: &Request, ticket: &str, life: &Life, size: usize) -> Response {
    let mut all = threads(ticket, life);
    all.reverse(); // newest first
    let page: usize = query_param(req, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let total_pages = all.len().div_ceil(size).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect();
    let href = |p: usize| j!({"href": format!("/v2/conversations/{ticket}/threads?page={p}")});
    let mut links = j!({"self": href(page), "first": href(1), "last": href(total_pages),
                        "page": {"href": format!("/v2/conversations/{ticket}/threads{{?page}}"), "templated": true}});
    if page < total_pages {
        links["next"] = href(page + 1);
    }
    if page > 1 {
        links["previous"] = href(page - 1);
    }
    json(
        200,
        &j!({"_embedded": {"threads": items}, "_links": links,
             "page": {"size": size, "totalElements": all.len(), "totalPages": total_pages, "number": page}}),
    )
}

impl Vendor for HelpScout {
    fn name(&self) -> &'static str {
        "helpscout"
    }

    fn authorized(&self, req: &Request, state: &State) -> bool {
        // The token endpoint checks the app's credentials itself.
        (req.method == "POST" && req.path == TOKEN_PATH) || token_valid(req, state)
    }

    fn handle(&self, req: &Request, state: &State) -> Response {
        if req.path == TOKEN_PATH {
            return token(req, state);
        }
        if req.path == "/v2/conversations" && req.method == "GET" {
            return list(req, state);
        }
        let Some(rest) = req.path.strip_prefix("/v2/conversations/") else {
            return not_found();
        };
        let (ticket, threads) = match rest.split_once('/') {
            Some((t, "threads")) => (t, true),
            Some(_) => return not_found(),
            None => (rest, false),
        };
        let Some(life) = state.tickets.get(ticket).filter(|_| req.method == "GET") else {
            return not_found();
        };
        if threads {
            thread_page(req, ticket, life, state.page_size.max(1))
        } else {
            json(200, &conversation(ticket, life))
        }
    }
}

fn bad_request(message: &str) -> Response {
    json(
        400,
        &j!({"logRef": "fake-log-ref#2", "message": "Bad request",
             "_embedded": {"errors": [{"path": "", "message": message, "source": "QUERY"}]}}),
    )
}

/// `GET /v2/conversations`: `status` (default `active`), `modifiedSince`
/// (modified strictly after), `sortField` `createdAt` or `modifiedAt` (default
/// `createdAt`), `sortOrder` (default `desc`), `page`; `state.page_size` a page.
fn list(req: &Request, state: &State) -> Response {
    let status = query_param(req, "status").unwrap_or_else(|| "active".into());
    let keep = |life: &Life| match status.as_str() {
        "all" => true,
        "closed" => life.resolved(),
        "active" | "open" => !life.resolved(),
        _ => false,
    };
    let ids: Vec<String> = match query_param(req, "modifiedSince") {
        None => state.tickets.keys().cloned().collect(),
        Some(m) => match DateTime::parse_from_rfc3339(&m) {
            Ok(t) => state.changed_tickets(
                t.with_timezone(&Utc) + chrono::Duration::seconds(1),
                DateTime::<Utc>::MAX_UTC,
            ),
            Err(_) => return bad_request("modifiedSince must be an ISO 8601 date-time"),
        },
    };
    let mut all: Vec<(&String, &Life)> = ids
        .iter()
        .filter_map(|id| state.tickets.get_key_value(id))
        .filter(|(_, l)| keep(l))
        .collect();
    let sort_field = query_param(req, "sortField").unwrap_or_else(|| "createdAt".into());
    let key = |l: &Life| match sort_field.as_str() {
        "modifiedAt" => l.updated_at(),
        _ => l.created_at,
    };
    all.sort_by(|a, b| (key(a.1), a.0).cmp(&(key(b.1), b.0)));
    match query_param(req, "sortOrder").as_deref() {
        Some("asc") => {}
        None | Some("desc") => all.reverse(),
        Some(_) => return bad_request("sortOrder must be asc or desc"),
    }
    let size = state.page_size.max(1);
    let page: usize = query_param(req, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let total_pages = all.len().div_ceil(size);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|(id, life)| conversation(id, life))
        .collect();
    let href = |p: usize| j!({"href": format!("/v2/conversations?page={p}")});
    let mut links = j!({"self": href(page), "first": href(1), "last": href(total_pages.max(1)),
                        "page": {"href": "/v2/conversations{?page}", "templated": true}});
    if page < total_pages {
        links["next"] = href(page + 1);
    }
    let mut body = j!({"_links": links,
        "page": {"size": size, "totalElements": all.len(), "totalPages": total_pages, "number": page}});
    if !items.is_empty() {
        body["_embedded"] = j!({"conversations": items});
    }
    json(200, &body)
}
