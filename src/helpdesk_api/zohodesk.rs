//! Zoho Desk REST API: a ticket's status, its history and its threads, with an
//! OAuth access token minted from a refresh token.
//!
//! Token: `POST <api.token_url>` (default `https://accounts.zoho.com/oauth/v2/token`;
//! `accounts.zoho.eu`, `.in`, `.com.au`, `.jp`, `zohocloud.ca` for other data
//! centres), form `grant_type=refresh_token&refresh_token=<api.refresh_token>&client_id=<api.user>&client_secret=<api.token>`.
//! The access token is kept until a minute before its `expires_in` and fetched
//! again once when Desk refuses it (401).
//!
//! Requests (all `GET`, `Authorization: Zoho-oauthtoken <access token>`,
//! `orgId: <api.org_id>`; base `https://desk.zoho.com` or the data centre's):
//! 1. `/api/v1/tickets/<id>`: `status`, `statusType`, `modifiedTime`, `closedTime`,
//!    `customerResponseTime`, `assigneeId`, `channel`;
//! 2. `/api/v1/tickets/<id>/History?from=<n>&limit=50`: newest first, read until a
//!    page reaches back past `since` or the list ends (204 or an empty page);
//! 3. `/api/v1/tickets/<id>/threads?from=<n>&limit=50`: read to the end (the order is
//!    not documented), filtered by `since` here. Thread contents are never kept.
//!
//! Backfill (`changed_tickets`): `/api/v1/tickets/search?modifiedTimeRange=<start>,<end>&sortBy=modifiedTime&from=<skip>&limit=100`,
//! oldest change first. `modifiedTime` is a ticket's last change, so the window
//! runs from `since` to past now (a ticket changed in the range and again later is
//! kept when created before `until`, which is checked here) and each page moves the
//! window's start to the last `modifiedTime` it saw (`next` is `<start>|<tickets
//! already listed at start>`): no offset past 4999, and a ticket modified while the
//! listing runs moves to the end of the window instead of shifting pages.
//!
//! Found (sources):
//! - Every call needs `Authorization: Zoho-oauthtoken …` and the `orgId` header;
//!   root `https://desk.zoho.com/api/v1`. https://desk.zoho.com/DeskAPIDocument
//! - Refresh: `POST {accounts-server}/oauth/v2/token` with `client_id`,
//!   `client_secret`, `grant_type=refresh_token`, `refresh_token`; answers
//!   `{access_token, expires_in: 3600, api_domain, token_type}`; at most ten access
//!   tokens per refresh token in ten minutes (so the token must be reused).
//!   https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token-expiry.html
//! - History: `GET api/v1/tickets/{id}/History`, scope `Desk.tickets.READ`, `from`
//!   (default 0), `limit` 1–50 (default 10), entries `{eventName, eventTime, actor
//!   {id, name, type}, source, eventInfo [{propertyName, propertyValue,
//!   propertyType}]}` "in descending order of time". The `TicketCreated` example
//!   names the assignee property `Case Owner` and the status property `Status`.
//!   https://help.zoho.com/portal/en/kb/desk/developer-space/rest-apis/articles/get-ticket-history-api-explained-in-detail,
//!   https://help.zoho.com/portal/en/kb/desk/developer-space/rest-apis/articles/events-supported-in-get-ticket-history-api
//! - Threads: `GET api/v1/tickets/{id}/threads` with `from`/`limit`; a thread has
//!   `direction` `in`/`out`, `createdTime`, `author`. https://desk.zoho.com/DeskAPIDocument#Threads
//! - Limits: API credits per organization per day (by edition and agents) and a
//!   concurrency limit, shown in Setup → Developer Space → APIs; no per-minute
//!   figure. https://help.zoho.com/portal/en/kb/desk/developer-space/apidashboard/articles/working-with-api-credits
//! - Tickets search: `GET api/v1/tickets/search`, scopes `Desk.search.READ` and
//!   `Desk.tickets.READ`, `from` (index from 0), `limit`, `modifiedTimeRange` and
//!   `createdTimeRange`, `sortBy`; without `departmentId` it searches the departments
//!   the user may see. https://desk.zoho.com/DeskAPIDocument#Search_TicketsSearchAPI
//!
//! Assumed (not documented):
//! - A status change is a history entry with `eventInfo` `Status` whose
//!   `propertyValue` is `{previousValue, updatedValue}` (status names); an owner
//!   change the same with `Case Owner` (or `Ticket Owner`) and agent objects.
//! - History status names are not typed: `Closed`, and the ticket's current
//!   status when its `statusType` is `Closed`, count as closed. A custom
//!   closed-type status that is not the current one is not recognised in history.
//! - An empty list is answered 204 without a body (as other Zoho Desk lists).
//! - The token endpoint answers refusals with HTTP 200 and `{"error": "invalid_client"}`
//!   (or `invalid_code`), and token throttling with `error_description`
//!   "…too many requests…". 429 carries `Retry-After` when Zoho sends one.
//! - The ticket 404 body is Zoho's usual `{"errorCode": …, "message": …}`.
//! - Search (from third-party integration notes, not Zoho's reference): ranges are
//!   `<ISO>,<ISO>` with both ends included and may end in the future; `sortBy`
//!   takes `modifiedTime` (ascending; `-` descending) with a stable order among
//!   equal times; `limit` 1–100, `from` 0–4999 (422 beyond); answers `{data,
//!   count}` and 204 when nothing matches; `count` counts the whole window.
//!
//! Semantics (as the webhook parser, `providers::zohodesk`): status type `Closed` is
//! resolved; a change into a closed status is a resolution by the history entry's
//! actor (the webhook's `modifiedBy`), a change out of it a reopen; a thread with
//! direction `in` is a customer reply; an owner change to an agent who is not an AI
//! agent is a hand-off (webhooks do not see hand-offs). Channel: the ticket's.
//!
//! Keys: the webhook keys hash the webhook's own `eventTime` (milliseconds of the
//! delivery), which the API does not show, so API events never share them: history
//! entries are keyed `api:zohodesk:<ticket>:history:<hash of time, property, values>`,
//! threads `api:zohodesk:<ticket>:thread:<thread id>`.

use super::http::ApiHttp;
use super::MAX_PAGES;
use super::{ApiError, ApiSettings, HelpdeskApi, Sight, TicketLook, TicketPage};
use crate::event::{composite_key, EventKind, TicketEvent};
use crate::providers::{parse_time, ProviderSettings};
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Zoho Desk documents daily credits, not a per-minute rate: a conservative pace.
pub const REQUESTS_PER_MINUTE: u32 = 60;
pub const DEFAULT_BASE_URL: &str = "https://desk.zoho.com";
pub const DEFAULT_TOKEN_URL: &str = "https://accounts.zoho.com/oauth/v2/token";
/// The largest history page Zoho serves (threads use the same).
const PAGE_LIMIT: usize = 50;
/// The largest page the tickets search serves.
const SEARCH_LIMIT: usize = 100;
/// The search's `from` stops at 4999: a listing never pages that deep by offset
/// (it moves its time window instead), except through ties.
const SEARCH_MAX_FROM: usize = 4999;
/// Renew the access token this long before Zoho says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

pub struct ZohoDeskApi {
    http: ApiHttp,
    base: String,
    token_url: String,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    org_id: String,
    settings: ProviderSettings,
    /// The access token and when to stop using it; the lock also keeps concurrent
    /// looks from minting one token each (Zoho allows ten per ten minutes).
    access: Mutex<Option<(String, Instant)>>,
}

fn required(value: Option<&str>, what: &str) -> Result<String, String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("zohodesk: {what} is required"))
}

pub fn client(api: &ApiSettings, settings: &ProviderSettings) -> Result<ZohoDeskApi, String> {
    let client_id = required(api.user.as_deref(), "api.user (the OAuth client id)")?;
    let refresh_token = required(
        Some(&api.refresh_token),
        "api.refresh_token (or refresh_token_env / refresh_token_file)",
    )?;
    let org_id = required(
        api.org_id.as_deref(),
        "api.org_id (Setup → Developer Space → API)",
    )?;
    if !org_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("zohodesk: api.org_id `{org_id}` is not a number"));
    }
    let token_url = api.token_url.as_deref().unwrap_or(DEFAULT_TOKEN_URL);
    match reqwest::Url::parse(token_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            return Err(format!(
                "zohodesk: api.token_url `{token_url}` is not an http(s) URL"
            ))
        }
    }
    Ok(ZohoDeskApi {
        http: ApiHttp::for_api(api, REQUESTS_PER_MINUTE)?,
        base: api.base(DEFAULT_BASE_URL),
        token_url: token_url.to_string(),
        client_id,
        client_secret: api.token.clone(),
        refresh_token,
        org_id,
        settings: settings.clone(),
        access: Mutex::new(None),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ticket {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    status_type: Option<String>,
    #[serde(default)]
    modified_time: Option<String>,
    #[serde(default)]
    closed_time: Option<String>,
    #[serde(default)]
    customer_response_time: Option<String>,
    #[serde(default)]
    assignee_id: Option<Value>,
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryEntry {
    #[serde(default)]
    event_name: Option<String>,
    event_time: String,
    #[serde(default)]
    actor: Option<Actor>,
    #[serde(default)]
    event_info: Vec<Property>,
}

#[derive(Debug, Deserialize)]
struct Actor {
    #[serde(default)]
    id: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Property {
    #[serde(default)]
    property_name: String,
    #[serde(default)]
    property_value: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Thread {
    id: Value,
    #[serde(default)]
    direction: Option<String>,
    created_time: String,
    #[serde(default)]
    author: Option<Actor>,
}

/// A ticket as the search lists it (only what backfill needs).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    id: Value,
    #[serde(default)]
    created_time: Option<String>,
    #[serde(default)]
    modified_time: Option<String>,
}

/// A page of the tickets search: `{data, count}`.
#[derive(Debug, Deserialize)]
struct Found {
    #[serde(default)]
    data: Vec<Listed>,
    #[serde(default)]
    count: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn time(s: &str) -> Result<DateTime<Utc>, ApiError> {
    parse_time(s).ok_or_else(|| ApiError::malformed(format!("zoho desk time `{s}`")))
}

/// A token endpoint's refusal: throttling is a rate limit, anything else refused
/// credentials (Zoho says both with HTTP 200 or 400 and an `error` field).
fn token_error(error: &str, description: &str) -> ApiError {
    let text = format!("{error} {description}").to_ascii_lowercase();
    if text.contains("too many requests") {
        return ApiError::RateLimited { retry_after: None };
    }
    ApiError::Refused {
        status: 401,
        detail: format!("zoho token endpoint: {error}"),
    }
}

impl ZohoDeskApi {
    /// A valid access token: the kept one, or a new one from the refresh token.
    async fn access_token(&self, renew: bool) -> Result<String, ApiError> {
        let mut access = self.access.lock().await;
        if let Some((token, until)) = access.as_ref() {
            if !renew && *until > Instant::now() {
                return Ok(token.clone());
            }
        }
        *access = None;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", self.refresh_token.as_str()),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
        ];
        let body = serde_urlencoded::to_string(form)
            .map_err(|e| ApiError::malformed(format!("token form: {e}")))?;
        let request = self
            .http
            .client()
            .post(&self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        let answer: TokenAnswer = match self.http.json(request).await {
            Ok(v) => serde_json::from_value(v)
                .map_err(|e| ApiError::malformed(format!("token answer: {e}")))?,
            // Zoho answers some refusals 400 with the same JSON.
            Err(ApiError::Malformed {
                status: Some(400),
                detail,
            }) => serde_json::from_str(&detail).map_err(|_| ApiError::Refused {
                status: 400,
                detail: "zoho token endpoint refused the request".into(),
            })?,
            Err(e) => return Err(e),
        };
        match (answer.access_token, answer.error) {
            (Some(token), None) if !token.is_empty() => {
                let life = Duration::from_secs(answer.expires_in.unwrap_or(3600));
                let until = Instant::now() + life.saturating_sub(TOKEN_MARGIN);
                *access = Some((token.clone(), until));
                Ok(token)
            }
            (_, Some(error)) => Err(token_error(
                &error,
                answer.error_description.as_deref().unwrap_or_default(),
            )),
            _ => Err(ApiError::malformed("token answer without access_token")),
        }
    }

    /// GET a Desk path: `None` for 204 (an empty list). A refused token is renewed once.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Option<Value>, ApiError> {
        let mut renew = false;
        loop {
            let token = self.access_token(renew).await?;
            let request = self
                .http
                .client()
                .get(format!("{}{path}", self.base))
                .query(query)
                .header(
                    reqwest::header::AUTHORIZATION,
                    format!("Zoho-oauthtoken {token}"),
                )
                .header("orgId", &self.org_id);
            match self.http.send(request).await {
                Ok((StatusCode::NO_CONTENT, _)) => return Ok(None),
                Ok((_, body)) if body.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                Ok((status, body)) => {
                    return serde_json::from_slice(&body).map(Some).map_err(|e| {
                        ApiError::Malformed {
                            status: Some(status.as_u16()),
                            detail: format!("not JSON: {e}"),
                        }
                    })
                }
                Err(ApiError::Refused { status: 401, .. }) if !renew => renew = true,
                Err(e) => return Err(e),
            }
        }
    }

    /// Read `from`/`limit` pages until an empty one, `enough`, or the bound.
    async fn pages<T: DeserializeOwned>(
        &self,
        path: &str,
        enough: impl Fn(&[T]) -> bool,
    ) -> Result<(Vec<T>, u32), ApiError> {
        let mut items = Vec::new();
        for page in 1..=MAX_PAGES {
            let query = [
                ("from", items.len().to_string()),
                ("limit", PAGE_LIMIT.to_string()),
            ];
            let Some(v) = self.get(path, &query).await? else {
                return Ok((items, page));
            };
            let list: List<T> = serde_json::from_value(v)
                .map_err(|e| ApiError::malformed(format!("zoho desk {path} page: {e}")))?;
            if list.data.is_empty() {
                return Ok((items, page));
            }
            let stop = enough(&list.data);
            items.extend(list.data);
            if stop {
                return Ok((items, page));
            }
        }
        Err(ApiError::malformed(format!(
            "zoho desk {path}: more than {MAX_PAGES} pages"
        )))
    }

    async fn fetch(
        &self,
        ticket_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<TicketLook, ApiError> {
        super::integer_id("Zoho Desk", ticket_id)?;
        let path = format!("/api/v1/tickets/{ticket_id}");
        let v = self
            .get(&path, &[])
            .await?
            .ok_or_else(|| ApiError::malformed("the ticket answer is empty"))?;
        let ticket: Ticket = serde_json::from_value(v)
            .map_err(|e| ApiError::malformed(format!("zoho desk ticket: {e}")))?;
        // Newest first: once a page reaches back before `since`, older pages cannot matter.
        let (history, history_pages) = self
            .pages::<HistoryEntry>(&format!("{path}/History"), |page| {
                since.is_some_and(|s| {
                    page.last()
                        .and_then(|e| parse_time(&e.event_time))
                        .is_some_and(|t| t < s)
                })
            })
            .await?;
        let (threads, thread_pages) = self
            .pages::<Thread>(&format!("{path}/threads"), |_| false)
            .await?;

        let read = Read {
            ticket_id,
            since,
            ticket: &ticket,
            settings: &self.settings,
        };
        let mut events = read.history(&history)?;
        events.extend(read.customer_threads(&threads)?);
        events.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));

        let status = ticket.status.clone().unwrap_or_default();
        let answer = json!({
            "ticket_id": ticket_id,
            "status": status,
            "status_type": ticket.status_type,
            "resolved": ticket.resolved(),
            "modified_time": ticket.modified_time,
            "closed_time": ticket.closed_time,
            "customer_response_time": ticket.customer_response_time,
            "assignee_id": ticket.assignee_id.as_ref().and_then(id_text),
            "pages": {"history": history_pages, "threads": thread_pages},
            "events": events.iter().map(|e| json!({
                "key": e.event_key, "kind": e.kind, "at": e.occurred_at, "actor": e.actor_id,
            })).collect::<Vec<_>>(),
        });
        Ok(TicketLook {
            status,
            resolved: ticket.resolved(),
            updated_at: ticket.modified_time.as_deref().and_then(parse_time),
            last_customer_message_at: ticket
                .customer_response_time
                .as_deref()
                .and_then(parse_time),
            events,
            answer,
        })
    }
}

/// Where a backfill listing stands (`TicketPage::next`), as text: `<start>|<skip>`,
/// the `modifiedTime` the search window starts at and how many tickets modified
/// exactly then were already listed.
///
/// The listing searches `modifiedTime` from `start`, oldest first, and each page
/// moves `start` up to the last `modifiedTime` it saw (keyset pagination): an
/// offset would skip a ticket whenever one before it moved out of the window
/// (modified while the listing runs), and the search's offset stops at 4999.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    start: DateTime<Utc>,
    skip: usize,
}

impl Position {
    fn parse(text: &str) -> Result<Position, ApiError> {
        let bad = || ApiError::malformed(format!("not a zoho desk listing cursor: `{text}`"));
        let (start, skip) = text.split_once('|').ok_or_else(bad)?;
        let start = DateTime::parse_from_rfc3339(start).map_err(|_| bad())?;
        let skip = skip.parse().map_err(|_| bad())?;
        Ok(Position {
            start: start.with_timezone(&Utc),
            skip,
        })
    }

    fn text(&self) -> String {
        format!("{}|{}", iso(self.start), self.skip)
    }

    /// Where the page after `modified` (the page's times, oldest first) starts.
    fn after(&self, modified: &[DateTime<Utc>]) -> Result<Option<Position>, ApiError> {
        let Some(&last) = modified.last() else {
            return Ok(None);
        };
        if modified.iter().any(|t| *t < self.start) {
            return Err(ApiError::malformed(
                "zoho desk search answered tickets modified before the window asked for",
            ));
        }
        let at_last = modified.iter().filter(|t| **t == last).count();
        let skip = if last == self.start {
            self.skip + at_last
        } else {
            at_last
        };
        Ok(Some(Position { start: last, skip }))
    }
}

/// Zoho's ISO form: milliseconds, `Z`.
fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl ZohoDeskApi {
    async fn list(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<TicketPage, ApiError> {
        let position = match cursor {
            Some(c) => Position::parse(c)?,
            None => Position {
                start: since,
                skip: 0,
            },
        };
        if position.skip > SEARCH_MAX_FROM {
            return Err(ApiError::malformed(format!(
                "zoho desk: more than {SEARCH_MAX_FROM} tickets modified at {}",
                iso(position.start)
            )));
        }
        // The window ends after now, not at `until`: `modifiedTime` is a ticket's
        // last change, so one changed in the range and again later is only found
        // past `until` (kept when created before `until`), and a ticket modified
        // while the listing runs moves to the end of the window instead of out of it.
        let end = until.max(self.http.world_now() + chrono::Duration::hours(1));
        let query = [
            (
                "modifiedTimeRange",
                format!("{},{}", iso(position.start), iso(end)),
            ),
            ("sortBy", "modifiedTime".into()),
            ("from", position.skip.to_string()),
            ("limit", SEARCH_LIMIT.to_string()),
        ];
        let found = match self.get("/api/v1/tickets/search", &query).await? {
            Some(v) => serde_json::from_value::<Found>(v)
                .map_err(|e| ApiError::malformed(format!("zoho desk search page: {e}")))?,
            // 204: nothing (more) in the window.
            None => Found {
                data: Vec::new(),
                count: Some(Value::from(0)),
            },
        };
        let modified = found
            .data
            .iter()
            .map(|t| {
                t.modified_time
                    .as_deref()
                    .ok_or_else(|| ApiError::malformed("zoho desk ticket without modifiedTime"))
                    .and_then(time)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut ticket_ids = Vec::with_capacity(found.data.len());
        for t in &found.data {
            let created = t.created_time.as_deref().map(time).transpose()?;
            if created.is_none_or(|c| c < until) {
                ticket_ids.push(
                    id_text(&t.id).ok_or_else(|| ApiError::malformed("zoho desk ticket id"))?,
                );
            }
        }
        let next = position.after(&modified)?.map(|p| p.text());
        if next.is_some() && next.as_deref() == cursor {
            return Err(ApiError::malformed(
                "zoho desk listing: the next cursor repeats the one asked for",
            ));
        }
        // The count is the whole window's only on the first page (later windows start later).
        let total = cursor
            .is_none()
            .then_some(())
            .and(found.count)
            .and_then(|c| {
                c.as_u64()
                    .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
            });
        Ok(TicketPage {
            ticket_ids,
            next,
            total,
        })
    }
}

impl Ticket {
    /// Status type `Closed`, as the webhook parser reads it.
    fn resolved(&self) -> bool {
        self.status_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("closed"))
    }

    /// Whether a status name from the history is a closed one.
    fn closed_name(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("closed")
            || (self.resolved()
                && self
                    .status
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(name)))
    }
}

/// A change in one history entry: `(previous, updated)` of `property`.
fn change<'a>(e: &'a HistoryEntry, names: &[&str]) -> Option<(&'a Value, &'a Value)> {
    let p = e.event_info.iter().find(|p| {
        names
            .iter()
            .any(|n| p.property_name.eq_ignore_ascii_case(n))
    })?;
    let v = &p.property_value;
    Some((v.get("previousValue")?, v.get("updatedValue")?))
}

/// One ticket's answers, normalized like `providers::zohodesk`.
struct Read<'a> {
    ticket_id: &'a str,
    since: Option<DateTime<Utc>>,
    ticket: &'a Ticket,
    settings: &'a ProviderSettings,
}

impl Read<'_> {
    fn event(
        &self,
        key: String,
        kind: EventKind,
        at: DateTime<Utc>,
        actor: Option<String>,
    ) -> TicketEvent {
        let channel = self.ticket.channel.clone();
        TicketEvent {
            resolver: (kind == EventKind::Resolved).then(|| {
                self.settings
                    .resolve(actor.as_deref(), &[], channel.as_deref())
            }),
            event_key: key,
            ticket_id: self.ticket_id.to_string(),
            kind,
            occurred_at: at,
            actor_id: actor,
            tags: Vec::new(),
            channel,
        }
    }

    fn in_window(&self, at: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| at >= s)
    }

    fn history_key(&self, e: &HistoryEntry, property: &str, from: &Value, to: &Value) -> String {
        let hash = composite_key(&[&e.event_time, property, &from.to_string(), &to.to_string()]);
        format!("api:zohodesk:{}:history:{hash}", self.ticket_id)
    }

    /// Resolutions, reopens and hand-offs from status and owner changes.
    fn history(&self, entries: &[HistoryEntry]) -> Result<Vec<TicketEvent>, ApiError> {
        let mut out = Vec::new();
        for e in entries {
            let at = time(&e.event_time)?;
            if !self.in_window(at) || e.event_name.as_deref() == Some("TicketCreated") {
                continue;
            }
            let actor = e.actor.as_ref().and_then(|a| id_text(&a.id));
            if let Some((from, to)) = change(e, &["Status"]) {
                let closed = |v: &Value| v.as_str().is_some_and(|s| self.ticket.closed_name(s));
                let kind = match (closed(from), closed(to)) {
                    (false, true) => Some(EventKind::Resolved),
                    (true, false) => Some(EventKind::Reopened),
                    _ => None,
                };
                if let Some(kind) = kind {
                    // The webhook's resolver: `modifiedBy`, else the assignee.
                    let actor = actor
                        .clone()
                        .or_else(|| self.ticket.assignee_id.as_ref().and_then(id_text));
                    out.push(self.event(self.history_key(e, "Status", from, to), kind, at, actor));
                }
            }
            if let Some((from, to)) = change(e, &["Case Owner", "Ticket Owner"]) {
                let owner = to.get("id").and_then(id_text);
                if let Some(owner) = owner.filter(|o| !self.settings.is_ai_agent(o)) {
                    out.push(self.event(
                        self.history_key(e, "Owner", from, to),
                        EventKind::HandedOffToHuman,
                        at,
                        Some(owner),
                    ));
                }
            }
        }
        self.closure_from_ticket(&mut out)?;
        Ok(out)
    }

    /// A closure the history missed, when the ticket says it is closed and when.
    fn closure_from_ticket(&self, out: &mut Vec<TicketEvent>) -> Result<(), ApiError> {
        let Some(closed) = self
            .ticket
            .closed_time
            .as_deref()
            .filter(|_| self.ticket.resolved())
        else {
            return Ok(());
        };
        let at = time(closed)?;
        let seen = out
            .iter()
            .any(|e| e.kind == EventKind::Resolved && e.occurred_at >= at);
        if !seen && self.in_window(at) {
            let actor = self.ticket.assignee_id.as_ref().and_then(id_text);
            let key = format!("api:zohodesk:{}:closed:{closed}", self.ticket_id);
            out.push(self.event(key, EventKind::Resolved, at, actor));
        }
        Ok(())
    }

    fn customer_threads(&self, threads: &[Thread]) -> Result<Vec<TicketEvent>, ApiError> {
        let mut out = Vec::new();
        for t in threads {
            if !t
                .direction
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case("in"))
            {
                continue;
            }
            let at = time(&t.created_time)?;
            if self.in_window(at) {
                let key = format!(
                    "api:zohodesk:{}:thread:{}",
                    self.ticket_id,
                    id_text(&t.id).unwrap_or_default()
                );
                let author = t.author.as_ref().and_then(|a| id_text(&a.id));
                out.push(self.event(key, EventKind::CustomerReplied, at, author));
            }
        }
        Ok(out)
    }
}

impl HelpdeskApi for ZohoDeskApi {
    fn provider(&self) -> &'static str {
        "zohodesk"
    }

    fn sight(&self) -> Sight {
        Sight::EVERYTHING
    }

    super::look_and_list_by_fetch_and_list!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Resolver;

    fn ticket(v: Value) -> Ticket {
        serde_json::from_value(v).expect("ticket")
    }

    fn entries(v: Value) -> Vec<HistoryEntry> {
        serde_json::from_value(v).expect("history")
    }

    fn status(at: &str, actor: &str, from: &str, to: &str) -> Value {
        json!({"eventName": "TicketUpdated", "eventTime": at, "actor": {"id": actor, "type": "Agent"},
               "eventInfo": [{"propertyName": "Status", "propertyType": "Text",
                              "propertyValue": {"previousValue": from, "updatedValue": to}}]})
    }

    #[test]
    fn status_names_of_the_closed_type_are_resolutions() {
        let s = ProviderSettings {
            ai_agent_ids: vec!["900".into()],
            ..Default::default()
        };
        let t =
            ticket(json!({"status": "Solved by bot", "statusType": "Closed", "channel": "Chat"}));
        let r = Read {
            ticket_id: "1",
            since: None,
            ticket: &t,
            settings: &s,
        };
        let h = entries(json!([
            status("2026-01-01T03:00:00.000Z", "900", "Open", "Solved by bot"),
            status("2026-01-01T02:00:00.000Z", "12", "Closed", "On Hold"),
            status("2026-01-01T01:00:00.000Z", "12", "Open", "Closed"),
            status("2026-01-01T00:30:00.000Z", "12", "Open", "On Hold")
        ]));
        let out = r.history(&h).expect("normalizes");
        let kinds: Vec<_> = out.iter().map(|e| (e.kind, e.resolver)).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::Resolved, Some(Resolver::Ai)),
                (EventKind::Reopened, None),
                (EventKind::Resolved, Some(Resolver::Human)),
            ]
        );
        assert!(out
            .iter()
            .all(|e| e.event_key.starts_with("api:zohodesk:1:history:")));
    }

    #[test]
    fn owner_changes_to_humans_are_hand_offs() {
        let s = ProviderSettings {
            ai_agent_ids: vec!["900".into()],
            ..Default::default()
        };
        let t = ticket(json!({"status": "Open", "statusType": "Open"}));
        let r = Read {
            ticket_id: "1",
            since: None,
            ticket: &t,
            settings: &s,
        };
        let owner = |to: &str| {
            json!({"eventName": "TicketUpdated", "eventTime": "2026-01-01T01:00:00.000Z",
            "actor": {"id": "12"}, "eventInfo": [{"propertyName": "Case Owner", "propertyType": "Entity",
            "propertyValue": {"previousValue": null, "updatedValue": {"id": to, "type": "Agent"}}}]})
        };
        let out = r
            .history(&entries(json!([owner("900"), owner("13")])))
            .expect("normalizes");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, EventKind::HandedOffToHuman);
        assert_eq!(out[0].actor_id.as_deref(), Some("13"));
    }

    #[test]
    fn token_errors_are_refusals_or_throttling() {
        assert!(matches!(
            token_error("invalid_client", ""),
            ApiError::Refused { status: 401, .. }
        ));
        assert!(matches!(
            token_error(
                "Access Denied",
                "You have made too many requests continuously."
            ),
            ApiError::RateLimited { .. }
        ));
    }

    #[test]
    fn listing_positions_move_to_the_last_time_seen() {
        let t = |h: i64| DateTime::from_timestamp(1_767_225_600 + h * 3600, 0).expect("t");
        let p = Position {
            start: t(0),
            skip: 0,
        };
        assert_eq!(Position::parse(&p.text()), Ok(p));
        assert_eq!(p.text(), "2026-01-01T00:00:00.000Z|0");
        // Ties at the start add up; a later time starts its own count.
        let q = Position {
            start: t(2),
            skip: 1,
        };
        assert_eq!(
            q.after(&[t(2), t(2)]),
            Ok(Some(Position {
                start: t(2),
                skip: 3
            }))
        );
        assert_eq!(
            q.after(&[t(2), t(3), t(3)]),
            Ok(Some(Position {
                start: t(3),
                skip: 2
            }))
        );
        assert_eq!(q.after(&[]), Ok(None));
        assert!(q.after(&[t(1)]).is_err(), "a time before the window");
    }
}
