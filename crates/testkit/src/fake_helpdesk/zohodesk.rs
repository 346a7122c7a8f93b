//! Fake Zoho Desk REST API with its own OAuth token endpoint: `POST
//! /oauth/v2/token` (refresh-token grant: client id `state.user`, client secret
//! `state.token`, refresh token [`REFRESH_TOKEN`]), then `GET /api/v1/tickets/<id>`,
//! `…/History`, `…/threads` and the tickets search `GET /api/v1/tickets/search`
//! (backfill) with `Authorization: Zoho-oauthtoken <access token>`
//! and `orgId: <`[`ORG_ID`]`>`.
//!
//! Found (sources):
//! - `Authorization: Zoho-oauthtoken …` and `orgId` on every call.
//!   https://desk.zoho.com/DeskAPIDocument
//! - Token refresh `POST /oauth/v2/token` with `client_id`, `client_secret`,
//!   `grant_type=refresh_token`, `refresh_token`; answer `{access_token,
//!   expires_in: 3600, api_domain, token_type: "Bearer"}`.
//!   https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token-expiry.html
//! - History `from` (0-based) / `limit` (1–50), entries newest first, `{eventName,
//!   eventTime, actor {id, name, type}, source, eventInfo [{propertyName,
//!   propertyValue, propertyType, systemProperty}]}`; `TicketCreated` lists
//!   `Status` and `Case Owner`.
//!   https://help.zoho.com/portal/en/kb/desk/developer-space/rest-apis/articles/get-ticket-history-api-explained-in-detail,
//!   https://help.zoho.com/portal/en/kb/desk/developer-space/rest-apis/articles/events-supported-in-get-ticket-history-api
//! - Threads with `direction` `in`/`out`, `createdTime`, `author`.
//! - Tickets search `GET /api/v1/tickets/search` (scopes `Desk.search.READ`,
//!   `Desk.tickets.READ`) with `from` (index, from 0), `limit`, `modifiedTimeRange` /
//!   `createdTimeRange` and `sortBy`. https://desk.zoho.com/DeskAPIDocument#Search
//!
//! Assumed (not documented): a status change is a `TicketUpdated` entry whose
//! `Status` value is `{previousValue, updatedValue}`, an owner change the same with
//! `Case Owner`; a customer thread on a closed ticket reopens it (actor: the
//! contact); threads are listed newest first; an exhausted list answers 204 with no
//! body; the token endpoint refuses bad client credentials or refresh tokens with
//! HTTP 200 `{"error": "invalid_client"}` / `{"error": "invalid_code"}`; a missing
//! ticket is 404 `{"errorCode": "URL_NOT_FOUND", …}`; a wrong or missing `orgId` is
//! refused like a bad token (401); the search's `modifiedTimeRange` is
//! `<ISO>,<ISO>` with both ends included, `sortBy` takes `modifiedTime` (`-` for
//! descending), `from` stops at 4999 and `limit` at 100 (422 beyond, as for an
//! unknown parameter), answers `{data, count}` and 204 when empty (these from
//! third-party integration notes, not Zoho's reference). Ids: agents `70000000<id>` (17 digits in real
//! Zoho; shorter here), threads `<ticket>000<n>`.

use super::{
    json, query_param, Happening, Life, Request, Response, State, Vendor, AI_AGENT, CUSTOMER,
    HUMAN_AGENT,
};
use chrono::{DateTime, Utc};
use serde_json::{json as j, Value};
use std::sync::{Arc, Mutex};

/// The organization id the fake serves.
pub const ORG_ID: &str = "54983163";
/// The refresh token the fake accepts.
pub const REFRESH_TOKEN: &str = "1000.fake-refresh-token.5678";
pub const TOKEN_PATH: &str = "/oauth/v2/token";

/// The fake, remembering the access tokens it minted (clones share them, so a
/// test can keep a handle to revoke them).
#[derive(Default, Clone)]
pub struct ZohoDesk {
    issued: Arc<Mutex<Vec<String>>>,
}

/// A helpdesk user id as Zoho Desk renders it.
pub fn zoho_id(id: &str) -> String {
    format!("70000000{id}")
}

fn zoho_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn agent(id: &str) -> Value {
    j!({"id": zoho_id(id), "name": "Agent", "type": "Agent"})
}

fn status_entry(at: DateTime<Utc>, actor: Value, from: &str, to: &str) -> Value {
    j!({
        "eventName": "TicketUpdated", "eventTime": zoho_time(at), "actor": actor, "source": "API",
        "eventInfo": [{"propertyName": "Status", "propertyType": "Text", "systemProperty": true,
                       "propertyValue": {"previousValue": from, "updatedValue": to}}],
    })
}

/// What a life shows through Zoho Desk's API (lists oldest first).
struct Rendered {
    history: Vec<Value>,
    threads: Vec<Value>,
    closed_at: Option<DateTime<Utc>>,
    owner: Option<&'static str>,
}

fn render(ticket: &str, life: &Life) -> Rendered {
    let mut history = vec![j!({
        "eventName": "TicketCreated",
        "eventTime": life.created_at.map(zoho_time),
        "actor": {"id": zoho_id(CUSTOMER), "name": "A Customer", "type": "Contact"},
        "source": "Email",
        "eventInfo": [
            {"propertyName": "Status", "propertyValue": "Open", "propertyType": "Text", "systemProperty": true},
            {"propertyName": "Email", "propertyValue": "customer@people.example", "propertyType": "Text", "systemProperty": true}
        ],
    })];
    let mut threads = Vec::new();
    let mut closed_at = None;
    let mut owner: Option<&'static str> = None;
    let thread = |threads: &mut Vec<Value>, at, who: &str, direction: &str| {
        let id = format!("{ticket}000{}", threads.len() + 1);
        let author = if direction == "in" {
            j!({"id": zoho_id(who), "name": "A Customer", "type": "END_USER", "email": "customer@people.example"})
        } else {
            j!({"id": zoho_id(who), "name": "Agent", "type": "AGENT", "email": "agent@agents.example"})
        };
        threads.push(j!({
            "id": id, "channel": "EMAIL", "status": "SUCCESS", "direction": direction,
            "createdTime": zoho_time(at), "author": author, "summary": "message text (never to be kept)",
            "isForward": false, "hasAttach": false, "visibility": "public",
        }));
    };
    for (_, step) in life.ordered() {
        match step.what {
            Happening::Resolved { by_ai } => {
                let who = if by_ai { AI_AGENT } else { HUMAN_AGENT };
                owner.get_or_insert(who);
                thread(&mut threads, step.at, who, "out");
                let from = if closed_at.is_some() {
                    "Closed"
                } else {
                    "Open"
                };
                history.push(status_entry(step.at, agent(who), from, "Closed"));
                closed_at = Some(step.at);
            }
            Happening::Reopened => {
                if closed_at.take().is_some() {
                    history.push(status_entry(step.at, agent(HUMAN_AGENT), "Closed", "Open"));
                }
            }
            Happening::CustomerReplied => {
                thread(&mut threads, step.at, CUSTOMER, "in");
                if closed_at.take().is_some() {
                    let contact =
                        j!({"id": zoho_id(CUSTOMER), "name": "A Customer", "type": "Contact"});
                    history.push(status_entry(step.at, contact, "Closed", "Open"));
                }
            }
            Happening::HandedOff => {
                let previous = owner.map(agent);
                owner = Some(HUMAN_AGENT);
                history.push(j!({
                    "eventName": "TicketUpdated", "eventTime": zoho_time(step.at),
                    "actor": agent(HUMAN_AGENT), "source": "Web",
                    "eventInfo": [{"propertyName": "Case Owner", "propertyType": "Entity", "systemProperty": true,
                                   "propertyValue": {"previousValue": previous, "updatedValue": agent(HUMAN_AGENT)}}],
                }));
            }
        }
    }
    Rendered {
        history,
        threads,
        closed_at,
        owner,
    }
}

fn ticket_json(id: &str, life: &Life, r: &Rendered) -> Value {
    let closed = r.closed_at.is_some();
    j!({
        "id": id, "ticketNumber": format!("1{id}"), "subject": "A subject",
        "status": if closed { "Closed" } else { "Open" },
        "statusType": if closed { "Closed" } else { "Open" },
        "createdTime": life.created_at.map(zoho_time),
        "modifiedTime": life.updated_at().map(zoho_time),
        "closedTime": r.closed_at.map(zoho_time),
        "customerResponseTime": life.last_customer_message_at().map(zoho_time),
        "assigneeId": r.owner.map(zoho_id),
        "channel": "Email", "email": "customer@people.example",
        "contactId": zoho_id(CUSTOMER), "departmentId": "7000000013224",
        "threadCount": r.threads.len().to_string(),
    })
}

/// One `from`/`limit` page of `items` (newest first); 204 once past the end.
fn page(req: &Request, state: &State, mut items: Vec<Value>) -> Response {
    items.reverse();
    let from = query_param(req, "from").map_or(Ok(0), |f| f.parse::<usize>());
    let limit = query_param(req, "limit").map_or(Ok(10), |l| l.parse::<usize>());
    let (Ok(from), Ok(limit)) = (from, limit) else {
        return json(
            422,
            &j!({"errorCode": "INVALID_DATA", "message": "from and limit are numbers"}),
        );
    };
    if !(1..=50).contains(&limit) {
        return json(
            422,
            &j!({"errorCode": "INVALID_DATA", "message": "limit must be 1 to 50"}),
        );
    }
    let end = (from + limit.min(state.page_size)).min(items.len());
    match items.get(from..end) {
        Some(data) if !data.is_empty() => json(200, &j!({"data": data})),
        _ => Response::new(204, String::new()),
    }
}

fn unprocessable(message: &str) -> Response {
    json(
        422,
        &j!({"errorCode": "UNPROCESSABLE_ENTITY", "message": message}),
    )
}

/// `GET /api/v1/tickets/search` as backfill uses it: `modifiedTimeRange=<from>,<to>`
/// (ISO, both ends included), `sortBy` (`modifiedTime`, `createdTime`, `-` for
/// newest first; ties by id), `from` 0–4999, `limit` 1–100; `{data, count}`, or 204
/// when nothing is left.
fn search(req: &Request, state: &State) -> Response {
    const KNOWN: [&str; 8] = [
        "from",
        "limit",
        "sortBy",
        "modifiedTimeRange",
        "createdTimeRange",
        "departmentId",
        "status",
        "id",
    ];
    let params: Vec<(String, String)> = serde_urlencoded::from_str(&req.query).unwrap_or_default();
    if let Some((k, _)) = params.iter().find(|(k, _)| !KNOWN.contains(&k.as_str())) {
        return unprocessable(&format!("unknown parameter {k}"));
    }
    let from = query_param(req, "from").map_or(Ok(0), |f| f.parse::<usize>());
    let limit = query_param(req, "limit").map_or(Ok(10), |l| l.parse::<usize>());
    let (Ok(from), Ok(limit)) = (from, limit) else {
        return unprocessable("from and limit are numbers");
    };
    if from > 4999 || !(1..=100).contains(&limit) {
        return unprocessable("from must be 0 to 4999 and limit 1 to 100");
    }
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
    let range = match query_param(req, "modifiedTimeRange") {
        None => None,
        Some(r) => match r.split_once(',').map(|(a, b)| (parse(a), parse(b))) {
            Some((Ok(a), Ok(b))) => Some((a, b)),
            _ => return unprocessable("modifiedTimeRange is `<ISO>,<ISO>`"),
        },
    };
    let sort = query_param(req, "sortBy").unwrap_or_else(|| "relevance".into());
    let (desc, field) = match sort.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, sort.as_str()),
    };
    if !matches!(field, "modifiedTime" | "createdTime") {
        return unprocessable("this fake sorts by modifiedTime or createdTime");
    }
    let mut found: Vec<(Option<DateTime<Utc>>, &String, &Life)> = state
        .tickets
        .iter()
        .filter(|(_, life)| {
            range.is_none_or(|(a, b)| life.updated_at().is_some_and(|t| a <= t && t <= b))
        })
        .map(|(id, life)| {
            let key = if field == "modifiedTime" {
                life.updated_at()
            } else {
                life.created_at
            };
            (key, id, life)
        })
        .collect();
    found.sort_by_key(|(t, id, _)| (*t, *id));
    if desc {
        found.reverse();
    }
    let count = found.len();
    let end = (from + limit.min(state.page_size)).min(count);
    let data: Vec<Value> = found
        .get(from..end)
        .unwrap_or_default()
        .iter()
        .map(|(_, id, life)| ticket_json(id, life, &render(id, life)))
        .collect();
    if data.is_empty() {
        return Response::new(204, String::new());
    }
    json(200, &j!({"data": data, "count": count.to_string()}))
}

fn not_found() -> Response {
    json(
        404,
        &j!({"errorCode": "URL_NOT_FOUND", "message": "The URL you requested could not be found on the server."}),
    )
}

impl ZohoDesk {
    fn token(&self, req: &Request, state: &State) -> Response {
        if req.method != "POST" {
            return json(405, &j!({"error": "method not allowed"}));
        }
        // Zoho takes the parameters in the query (as its docs show) or a form body.
        let mut params: Vec<(String, String)> =
            serde_urlencoded::from_str(&req.query).unwrap_or_default();
        params.extend(
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(&req.body).unwrap_or_default(),
        );
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("grant_type") != Some("refresh_token") {
            return json(200, &j!({"error": "unsupported_grant_type"}));
        }
        if get("client_id") != Some(state.user.as_str())
            || get("client_secret") != Some(state.token.as_str())
        {
            return json(200, &j!({"error": "invalid_client"}));
        }
        if get("refresh_token") != Some(REFRESH_TOKEN) {
            return json(200, &j!({"error": "invalid_code"}));
        }
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let token = format!("1000.fake-access-{}", issued.len() + 1);
        issued.push(token.clone());
        json(
            200,
            &j!({"access_token": token, "expires_in": 3600, "api_domain": "https://www.zohoapis.com", "token_type": "Bearer"}),
        )
    }

    /// Invalidate every access token minted so far (as if they expired early).
    pub fn revoke_tokens(&self) {
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl Vendor for ZohoDesk {
    fn name(&self) -> &'static str {
        "zohodesk"
    }

    fn authorized(&self, req: &Request, _state: &State) -> bool {
        if req.path == TOKEN_PATH {
            // The token endpoint checks the client's credentials itself.
            return true;
        }
        let issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let token_ok = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Zoho-oauthtoken "))
            .is_some_and(|t| issued.iter().any(|i| i == t));
        token_ok && req.header("orgId") == Some(ORG_ID)
    }

    fn handle(&self, req: &Request, state: &State) -> Response {
        if req.path == TOKEN_PATH {
            return self.token(req, state);
        }
        if req.method != "GET" {
            return json(405, &j!({"errorCode": "METHOD_NOT_ALLOWED"}));
        }
        if req.path == "/api/v1/tickets/search" {
            return search(req, state);
        }
        let Some(rest) = req.path.strip_prefix("/api/v1/tickets/") else {
            return not_found();
        };
        let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(life) = state.tickets.get(id) else {
            return not_found();
        };
        let r = render(id, life);
        match sub {
            "" => json(200, &ticket_json(id, life, &r)),
            "History" => page(req, state, r.history),
            "threads" => page(req, state, r.threads),
            _ => not_found(),
        }
    }

    fn ai_agent_id(&self) -> String {
        zoho_id(AI_AGENT)
    }

    fn extra_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("org_id", ORG_ID.into()),
            ("refresh_token", REFRESH_TOKEN.into()),
            ("token_url", TOKEN_PATH.into()),
        ]
    }
}
