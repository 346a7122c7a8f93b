//! Help Scout: one conversation through the Mailbox API 2.0, normalized like the
//! webhooks of [`crate::providers::helpscout`].
//!
//! Requests: an OAuth token (client credentials, fetched once and reused until it
//! expires or is refused), `GET /v2/conversations/{id}` for the current status,
//! then `GET /v2/conversations/{id}/threads?page=N`, newest first, until a thread
//! older than `since` (or the last page). Backfill lists conversations with
//! `GET /v2/conversations?status=all&modifiedSince=…&sortField=createdAt&sortOrder=asc&page=N`.
//!
//! Found (sources):
//! - Auth: OAuth 2.0; for an internal integration the Client Credentials flow:
//!   `POST https://api.helpscout.net/v2/oauth2/token` with `grant_type=client_credentials`,
//!   `client_id` (the app's App ID), `client_secret` (App Secret), form, JSON or
//!   query; then `Authorization: Bearer <access_token>`. Apps are created under
//!   Your Profile → My Apps; there are no scopes: the app sees what its user sees
//!   ("All credentials must be associated with an active, invited user").
//!   https://developer.helpscout.com/mailbox-api/overview/authentication/
//! - Conversation: `status` (`active`, `pending`, `closed`, `spam`), `state`
//!   (`published`, `draft`, `deleted`), `closedBy`, `closedByUser`, `closedAt`,
//!   `userUpdatedAt`, `customerWaitingSince`, `source.type`, `tags`.
//!   https://developer.helpscout.com/mailbox-api/endpoints/conversations/get/
//! - Threads: "sorted by createdAt (from newest to oldest)", HAL
//!   `_embedded.threads[]` with `id`, `type` (`customer`, `message`, `note`,
//!   `lineitem`, `chat`, `phone`, …), `status`, `createdBy {id, type: user|customer}`,
//!   `assignedTo {id, type}`, `createdAt`; the v2 endpoint reports AI system users
//!   as `user`. https://developer.helpscout.com/mailbox-api/endpoints/conversations/threads/list/
//!   https://developer.helpscout.com/mailbox-api/endpoints/conversations/threads/list-v3/
//! - Pagination: 50 items a page, `page` query parameter, `page {size,
//!   totalElements, totalPages, number}` and `_links.next` (absent on the last page).
//!   https://developer.helpscout.com/mailbox-api/overview/pagination/
//! - Rate limits: per account, by plan; a 429 says in `X-RateLimit-Retry-After`
//!   how many seconds to wait (the 1.0 API used `Retry-After`, also read); reads
//!   count once, writes twice. https://developer.helpscout.com/mailbox-api/overview/rate-limiting/
//!   (the legacy 1.0 page documented 200 requests a minute per account:
//!   https://developer.helpscout.com/help-desk-api)
//! - A thread's status in the 1.0 API was `nochange` when it changed nothing.
//!   https://developer.helpscout.com/help-desk-api/objects/thread/
//! - Backfill listing: `GET /v2/conversations` lists only `active` conversations
//!   sorted by `createdAt` newest first unless told otherwise: `status=all`,
//!   `modifiedSince` ("conversations modified after this timestamp", ISO 8601),
//!   `sortField` (`createdAt`, `modifiedAt`, …), `sortOrder` (`asc`/`desc`),
//!   `query` (advanced search), `page`; the answer is HAL:
//!   `_embedded.conversations[]` (with `id`, `createdAt`, `userUpdatedAt`, …),
//!   `page {size, totalElements, totalPages, number}`, `_links.next`.
//!   https://developer.helpscout.com/mailbox-api/endpoints/conversations/list/
//!
//! Assumed (not documented): a thread's `status` is the conversation's status
//! after it (status changes are read between consecutive threads; `nochange` or
//! none keeps the previous one); `assignedTo`, when present, is the assignee after
//! it; the first thread (created with the conversation) is not a customer *reply*;
//! the token endpoint answers 401 (or 400 `invalid_client`) to wrong credentials;
//! `expires_in` is seconds (172,800 observed by integrators). Backfill: sorting by
//! `createdAt` is stable (ties in a fixed order), so a page number counted days
//! ago still points at the same place unless conversations in the range were
//! deleted meanwhile (a deletion shifts later pages back: a conversation may then
//! be skipped); an empty page has no `_embedded`; the list has no result cap and
//! reaches back to the account's first conversation.
//!
//! Semantics, as the webhooks: status `closed` is a resolution (resolver from the
//! closing thread's user, tags and `source.type`); back from `closed` to `active`
//! or `pending` is a reopen; a thread by the customer is a customer reply; a new
//! assignee that is not an AI agent is a hand-off.
//!
//! Event keys: Help Scout webhooks carry no id; their key is a hash of
//! conversation id, event, status and a time from the body. The current close is
//! the one case the API shows the same way: it gets the webhook's own key
//! (`composite_key(["helpscout", id, "convo.status", "closed", closedAt])`), so
//! a close seen both ways counts once. Every other event is
//! `api:helpscout:<conversation>:<thread id>:<kind>`.

use super::http::{ApiHttp, ResetHeader};
use super::MAX_PAGES;
use super::{ApiError, ApiSettings, HelpdeskApi, Sight, TicketLook, TicketPage};
use crate::event::{composite_key, EventKind, TicketEvent};
use crate::providers::ProviderSettings;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

/// Requests per minute when `api.requests_per_minute` is not set: under the
/// smallest documented account budget (200), shared with the account's other apps.
pub const REQUESTS_PER_MINUTE: u32 = 100;
pub const DEFAULT_BASE_URL: &str = "https://api.helpscout.net";
/// The token endpoint's path on the API host (`api.token_url` overrides it).
pub const TOKEN_PATH: &str = "/v2/oauth2/token";
/// A token this close to its expiry is replaced before use.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// How far the closing thread's time may be from `closedAt` for the close to be
/// the one the conversation reports.
const CLOSED_AT_SLACK: i64 = 60;

pub struct HelpScoutApi {
    http: ApiHttp,
    base: String,
    token_url: String,
    app_id: String,
    app_secret: String,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    settings: ProviderSettings,
}

struct AccessToken {
    value: String,
    expires: Instant,
}

pub fn client(api: &ApiSettings, settings: &ProviderSettings) -> Result<HelpScoutApi, String> {
    let app_id = api
        .user
        .clone()
        .filter(|u| !u.trim().is_empty())
        .ok_or("helpscout: api.user (the OAuth app's App ID) is required")?;
    if api.token.trim().is_empty() {
        return Err("helpscout: api.token (the OAuth app's App Secret) is required".into());
    }
    let base = api.base(DEFAULT_BASE_URL);
    reqwest::Url::parse(&base).map_err(|e| format!("helpscout: api.base_url `{base}`: {e}"))?;
    let token_url = api
        .token_url
        .clone()
        .unwrap_or_else(|| format!("{base}{TOKEN_PATH}"));
    reqwest::Url::parse(&token_url)
        .map_err(|e| format!("helpscout: api.token_url `{token_url}`: {e}"))?;
    Ok(HelpScoutApi {
        http: ApiHttp::for_api(api, REQUESTS_PER_MINUTE)?
            .with_reset_header(ResetHeader::Seconds("x-ratelimit-retry-after")),
        base,
        token_url,
        app_id,
        app_secret: api.token.clone(),
        token: tokio::sync::Mutex::new(None),
        settings: settings.clone(),
    })
}

impl HelpScoutApi {
    /// A valid access token: the cached one, or a new one (one fetch at a time).
    async fn access_token(&self, refresh: bool) -> Result<String, ApiError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            if !refresh && t.expires > Instant::now() + TOKEN_MARGIN {
                return Ok(t.value.clone());
            }
        }
        let request = self.http.client().post(&self.token_url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", self.app_id.as_str()),
            ("client_secret", self.app_secret.as_str()),
        ]);
        let answer = self.http.json(request).await.map_err(|e| match e {
            // The only inputs are the app's credentials: a 400 is a refusal.
            ApiError::Malformed {
                status: Some(400),
                detail,
            } => ApiError::Refused {
                status: 400,
                detail,
            },
            other => other,
        })?;
        let value = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::malformed("the token answer has no access_token"))?
            .to_string();
        let lifetime = answer
            .get("expires_in")
            .and_then(Value::as_u64)
            .map_or(Duration::from_secs(3600), Duration::from_secs);
        *cached = Some(AccessToken {
            value: value.clone(),
            expires: Instant::now() + lifetime,
        });
        Ok(value)
    }

    fn url(&self, ticket_id: &str, threads: bool) -> Result<reqwest::Url, ApiError> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| ApiError::malformed(format!("base url: {e}")))?;
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| ApiError::malformed("base url cannot take a path"))?;
            path.pop_if_empty()
                .extend(["v2", "conversations", ticket_id]);
            if threads {
                path.push("threads");
            }
        }
        Ok(url)
    }

    /// GET with the access token; a refused token is replaced once (it may have
    /// been revoked or expired early), then the refusal stands.
    async fn get(&self, url: reqwest::Url) -> Result<Value, ApiError> {
        let token = self.access_token(false).await?;
        match self
            .http
            .json(self.http.client().get(url.clone()).bearer_auth(token))
            .await
        {
            Err(ApiError::Refused { status: 401, .. }) => {
                let token = self.access_token(true).await?;
                self.http
                    .json(self.http.client().get(url).bearer_auth(token))
                    .await
            }
            other => other,
        }
    }

    /// Threads newest first, down to the first one older than `since` (kept: it
    /// says what the status and assignee were when the window opened).
    async fn threads(
        &self,
        ticket_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<(Vec<Value>, u32), ApiError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut url = self.url(ticket_id, true)?;
            url.query_pairs_mut().append_pair("page", &page.to_string());
            let answer = self.get(url).await?;
            let threads = answer
                .pointer("/_embedded/threads")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let reached_since =
                since.is_some_and(|s| threads.iter().filter_map(thread_time).any(|t| t < s));
            all.extend(threads);
            if reached_since || !has_next(&answer, page) {
                return Ok((all, page));
            }
        }
        Err(ApiError::malformed(format!(
            "conversation {ticket_id} has more than {MAX_PAGES} pages of threads"
        )))
    }

    async fn fetch(
        &self,
        ticket_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<TicketLook, ApiError> {
        let conversation = self.get(self.url(ticket_id, false)?).await?;
        let (threads, pages) = self.threads(ticket_id, since).await?;
        read(
            &conversation,
            &threads,
            pages,
            ticket_id,
            since,
            &self.settings,
        )
    }
}

impl HelpScoutApi {
    /// One page of `GET /v2/conversations` for backfill: every status, modified
    /// since `since`, oldest created first, up to the first created at or after
    /// `until` (see [`list_url`]).
    async fn list(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<TicketPage, ApiError> {
        let page = match cursor {
            None => 1,
            Some(c) => ListCursor::parse(c, since, until)?,
        };
        let answer = self.get(list_url(&self.base, since, page)?).await?;
        read_listing(&answer, since, until, page)
    }
}

/// `/v2/conversations?status=all&modifiedSince=…&sortField=createdAt&sortOrder=asc&page=N`.
/// `status=all`: the list shows only active conversations by default.
/// `modifiedSince` (a conversation's last change) rather than a `modifiedAt`
/// range: a conversation changed in the range and again after it must be listed.
/// Sorting by creation (which never changes) keeps page numbers stable while
/// conversations are modified, so a page number resumes days later, and lets the
/// listing stop at the first conversation created at or after `until`.
fn list_url(base: &str, since: DateTime<Utc>, page: u32) -> Result<reqwest::Url, ApiError> {
    let mut url =
        reqwest::Url::parse(base).map_err(|e| ApiError::malformed(format!("base url: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| ApiError::malformed("base url cannot take a path"))?
        .pop_if_empty()
        .extend(["v2", "conversations"]);
    // "Modified after": one second earlier includes a change at `since` itself.
    let modified_since =
        (since - chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    url.query_pairs_mut()
        .append_pair("status", "all")
        .append_pair("modifiedSince", &modified_since)
        .append_pair("sortField", "createdAt")
        .append_pair("sortOrder", "asc")
        .append_pair("page", &page.to_string());
    Ok(url)
}

/// Our listing cursor: `hs1:<since>:<until>:<page>` (Unix seconds), so a page
/// number is only ever used for the range it was counted in.
struct ListCursor;

impl ListCursor {
    const PREFIX: &'static str = "hs1";

    fn make(since: DateTime<Utc>, until: DateTime<Utc>, page: u32) -> String {
        format!(
            "{}:{}:{}:{page}",
            Self::PREFIX,
            since.timestamp(),
            until.timestamp()
        )
    }

    fn parse(cursor: &str, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<u32, ApiError> {
        let mut parts = cursor.splitn(4, ':');
        let page = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Self::PREFIX), Some(s), Some(u), Some(page))
                if s == since.timestamp().to_string() && u == until.timestamp().to_string() =>
            {
                page.parse::<u32>().ok().filter(|p| *p >= 2)
            }
            _ => None,
        };
        page.ok_or_else(|| {
            ApiError::malformed(format!(
                "`{cursor}` is not a Help Scout listing cursor for this time range"
            ))
        })
    }
}

/// The ids on a page of the listing created before `until`, and the cursor of
/// the next page (none once a conversation created at or after `until` shows up:
/// the rest are newer still).
fn read_listing(
    answer: &Value,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    page: u32,
) -> Result<TicketPage, ApiError> {
    let list = match answer.pointer("/_embedded/conversations") {
        // Help Scout leaves `_embedded` out of an empty page.
        None => &Vec::new(),
        Some(v) => v
            .as_array()
            .ok_or_else(|| ApiError::malformed("the listing's conversations are not a list"))?,
    };
    let mut ticket_ids = Vec::with_capacity(list.len());
    let mut past_until = false;
    for c in list {
        let id = text(c, &["id"])
            .ok_or_else(|| ApiError::malformed("a listed conversation has no id"))?;
        let created = time(c, &["createdAt"]).ok_or_else(|| {
            ApiError::malformed(format!("listed conversation {id} has no createdAt"))
        })?;
        if created < until {
            ticket_ids.push(id);
        } else {
            past_until = true;
        }
    }
    // An empty page ends the listing even if it links to another (no endless walk).
    let next = match (!past_until && !list.is_empty() && has_next(answer, page))
        .then(|| page.checked_add(1))
    {
        None => None,
        Some(Some(n)) => Some(ListCursor::make(since, until, n)),
        Some(None) => return Err(ApiError::malformed("the listing has too many pages")),
    };
    Ok(TicketPage {
        ticket_ids,
        next,
        // Counts conversations created after `until` too: an upper bound, for progress.
        total: answer
            .pointer("/page/totalElements")
            .and_then(Value::as_u64),
    })
}

/// Whether another page follows `page` (the `next` link, or the page counts).
fn has_next(answer: &Value, page: u32) -> bool {
    let by_link = answer.pointer("/_links/next/href").is_some();
    let by_count = answer
        .pointer("/page/totalPages")
        .and_then(Value::as_u64)
        .is_some_and(|total| u64::from(page) < total);
    by_link || by_count
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    match cur {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn time(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    crate::providers::parse_time(&text(v, path)?)
}

fn thread_time(t: &Value) -> Option<DateTime<Utc>> {
    time(t, &["createdAt"])
}

/// One thread, as far as verification reads it.
struct Thread {
    id: String,
    at: DateTime<Utc>,
    /// The conversation status the thread set (`None`: no change).
    status: Option<String>,
    by_customer: bool,
    author: Option<String>,
    assignee: Option<String>,
}

fn thread(t: &Value) -> Result<Thread, ApiError> {
    let id = text(t, &["id"]).ok_or_else(|| ApiError::malformed("a thread has no id"))?;
    let at = thread_time(t)
        .ok_or_else(|| ApiError::malformed(format!("thread {id} has no createdAt")))?;
    let kind = text(t, &["type"]).unwrap_or_default();
    let author_type = text(t, &["createdBy", "type"]);
    Ok(Thread {
        status: text(t, &["status"])
            .filter(|s| matches!(s.as_str(), "active" | "pending" | "closed" | "spam")),
        by_customer: kind == "customer" || author_type.as_deref() == Some("customer"),
        author: text(t, &["createdBy", "id"]),
        assignee: text(t, &["assignedTo", "id"]).filter(|a| a != "0"),
        id,
        at,
    })
}

/// What the conversation says: who, which channel, the current close.
struct Conversation {
    id: String,
    status: String,
    created_at: Option<DateTime<Utc>>,
    closed_at: Option<String>,
    tags: Vec<String>,
    channel: Option<String>,
}

impl Conversation {
    fn of(v: &Value, ticket_id: &str) -> Result<Conversation, ApiError> {
        let id = text(v, &["id"])
            .ok_or_else(|| ApiError::malformed("the answer has no conversation id"))?;
        if id != ticket_id {
            return Err(ApiError::malformed(
                "the answer is about another conversation",
            ));
        }
        let tags = v
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| {
                        t.get("tag")
                            .or_else(|| t.get("name"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Conversation {
            status: text(v, &["status"])
                .ok_or_else(|| ApiError::malformed("the conversation has no status"))?,
            created_at: time(v, &["createdAt"]),
            closed_at: text(v, &["closedAt"]),
            channel: text(v, &["source", "type"]).or_else(|| text(v, &["type"])),
            tags,
            id,
        })
    }

    /// A customer's thread after the opening message (which is not a reply).
    fn is_reply(&self, t: &Thread) -> bool {
        t.by_customer && self.created_at.is_none_or(|created| t.at > created)
    }

    /// The webhook's key for a close at `at`, when it is the close the
    /// conversation reports now.
    fn current_close(&self, at: DateTime<Utc>) -> Option<(String, DateTime<Utc>)> {
        if self.status != "closed" {
            return None;
        }
        let raw = self.closed_at.as_deref()?;
        let closed = crate::providers::parse_time(raw)?;
        ((closed - at).num_seconds().abs() <= CLOSED_AT_SLACK).then(|| {
            (
                composite_key(&["helpscout", &self.id, "convo.status", "closed", raw]),
                closed,
            )
        })
    }
}

/// Normalize the conversation and its threads (newest first, as Help Scout sends them).
fn read(
    conversation: &Value,
    raw_threads: &[Value],
    pages: u32,
    ticket_id: &str,
    since: Option<DateTime<Utc>>,
    s: &ProviderSettings,
) -> Result<TicketLook, ApiError> {
    let c = Conversation::of(conversation, ticket_id)?;
    let mut threads = raw_threads
        .iter()
        .map(thread)
        .collect::<Result<Vec<_>, _>>()?;
    threads.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    threads.dedup_by(|a, b| a.id == b.id);

    let mut events = Vec::new();
    let (mut status, mut assignee): (Option<String>, Option<String>) = (None, None);
    for t in &threads {
        let in_window = since.is_none_or(|w| t.at >= w);
        let event = |kind: EventKind, actor: Option<String>| TicketEvent {
            event_key: format!("api:helpscout:{}:{}:{kind}", c.id, t.id),
            ticket_id: c.id.clone(),
            kind,
            occurred_at: t.at,
            resolver: None,
            actor_id: actor,
            tags: c.tags.clone(),
            channel: c.channel.clone(),
        };
        if let Some(new) = t
            .status
            .as_deref()
            .filter(|n| status.as_deref() != Some(*n))
        {
            if in_window && new == "closed" {
                let mut e = event(EventKind::Resolved, t.author.clone());
                e.resolver = Some(s.resolve(t.author.as_deref(), &c.tags, c.channel.as_deref()));
                events.push(e);
            }
            if in_window
                && matches!(new, "active" | "pending")
                && status.as_deref() == Some("closed")
            {
                events.push(event(EventKind::Reopened, t.author.clone()));
            }
            status = Some(new.to_string());
        }
        if in_window && c.is_reply(t) {
            events.push(event(EventKind::CustomerReplied, t.author.clone()));
        }
        if let Some(new) = t
            .assignee
            .as_deref()
            .filter(|n| assignee.as_deref() != Some(*n))
        {
            if in_window && !s.is_ai_agent(new) {
                events.push(event(EventKind::HandedOffToHuman, Some(new.to_string())));
            }
            assignee = Some(new.to_string());
        }
    }
    events.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    // The last close, if it is the one the conversation reports, takes the
    // webhook's key and the conversation's own time.
    if let Some(last) = events
        .iter_mut()
        .rev()
        .find(|e| e.kind == EventKind::Resolved)
    {
        if let Some((key, at)) = c.current_close(last.occurred_at) {
            last.event_key = key;
            last.occurred_at = at;
        }
    }
    let last_customer_message_at = threads.iter().filter(|t| c.is_reply(t)).map(|t| t.at).max();
    let updated_at = time(conversation, &["userUpdatedAt"])
        .into_iter()
        .chain(threads.iter().map(|t| t.at))
        .max();
    let answer = json!({
        "conversation_id": c.id,
        "status": c.status,
        "state": text(conversation, &["state"]),
        "closed_at": c.closed_at,
        "closed_by": text(conversation, &["closedBy"]),
        "updated_at": updated_at,
        "threads_read": threads.len(),
        "thread_pages": pages,
        "events": events.iter().map(|e| json!({"id": e.event_key, "kind": e.kind, "at": e.occurred_at, "resolver": e.resolver})).collect::<Vec<_>>(),
    });
    Ok(TicketLook {
        resolved: c.status == "closed",
        status: c.status,
        updated_at,
        last_customer_message_at,
        events,
        answer,
    })
}

impl HelpdeskApi for HelpScoutApi {
    fn provider(&self) -> &'static str {
        "helpscout"
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

    fn settings() -> ProviderSettings {
        ProviderSettings {
            ai_agent_ids: vec!["256".into()],
            ..Default::default()
        }
    }

    fn conversation(status: &str, closed_at: Option<&str>) -> Value {
        json!({"id": 2391938111u64, "status": status, "state": "published",
               "createdAt": "2025-01-08T09:00:00Z", "closedAt": closed_at,
               "source": {"type": "email", "via": "customer"},
               "tags": [{"id": 1, "tag": "billing"}],
               "primaryCustomer": {"id": 7, "email": "c@x.example"}})
    }

    fn t(id: u64, at: &str, kind: &str, status: &str, by: (&str, u64)) -> Value {
        json!({"id": id, "type": kind, "status": status, "createdAt": at,
               "createdBy": {"type": by.0, "id": by.1, "email": "who@x.example"},
               "body": "private words"})
    }

    #[test]
    fn status_changes_between_threads_and_the_current_close_keeps_the_webhook_key() {
        let threads = vec![
            t(5, "2025-01-08T12:00:00Z", "message", "closed", ("user", 9)),
            t(
                4,
                "2025-01-08T11:00:00Z",
                "customer",
                "active",
                ("customer", 7),
            ),
            t(3, "2025-01-08T10:30:00Z", "note", "nochange", ("user", 9)),
            t(
                2,
                "2025-01-08T10:14:22Z",
                "message",
                "closed",
                ("user", 256),
            ),
            t(
                1,
                "2025-01-08T09:00:00Z",
                "customer",
                "active",
                ("customer", 7),
            ),
        ];
        let c = conversation("closed", Some("2025-01-08T12:00:00Z"));
        let look = read(&c, &threads, 1, "2391938111", None, &settings()).expect("reads");
        let kinds: Vec<_> = look.events.iter().map(|e| (e.kind, e.resolver)).collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Resolved, Some(Resolver::Ai)),
                (EventKind::Reopened, None),
                (EventKind::CustomerReplied, None),
                (EventKind::Resolved, Some(Resolver::Human)),
            ],
            "{look:?}"
        );
        assert_eq!(
            look.events[0].event_key,
            "api:helpscout:2391938111:2:resolved"
        );
        assert_eq!(
            look.events[3].event_key,
            composite_key(&[
                "helpscout",
                "2391938111",
                "convo.status",
                "closed",
                "2025-01-08T12:00:00Z"
            ])
        );
        assert!(look.resolved);
        assert_eq!(look.events[0].channel.as_deref(), Some("email"));
        let evidence = look.answer.to_string();
        assert!(
            !evidence.contains("private") && !evidence.contains("@x.example"),
            "{evidence}"
        );
    }

    #[test]
    fn pending_is_not_resolved_and_events_before_since_only_set_the_baseline() {
        let threads = vec![
            t(
                3,
                "2025-01-08T12:00:00Z",
                "lineitem",
                "pending",
                ("user", 9),
            ),
            t(
                2,
                "2025-01-08T10:00:00Z",
                "message",
                "closed",
                ("user", 256),
            ),
            t(
                1,
                "2025-01-08T09:00:00Z",
                "customer",
                "active",
                ("customer", 7),
            ),
        ];
        let since = crate::providers::parse_time("2025-01-08T11:00:00Z");
        let look = read(
            &conversation("pending", None),
            &threads,
            1,
            "2391938111",
            since,
            &settings(),
        )
        .expect("reads");
        assert!(!look.resolved);
        let kinds: Vec<_> = look.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![EventKind::Reopened],
            "the close before since only opens the window"
        );
    }

    #[test]
    fn a_new_human_assignee_hands_off_and_the_ai_does_not() {
        let mut a = t(
            2,
            "2025-01-08T10:00:00Z",
            "lineitem",
            "active",
            ("user", 256),
        );
        a["assignedTo"] = json!({"id": 256, "type": "user"});
        let mut b = t(
            3,
            "2025-01-08T11:00:00Z",
            "lineitem",
            "active",
            ("user", 256),
        );
        b["assignedTo"] = json!({"id": 12, "type": "user"});
        let mut c2 = t(4, "2025-01-08T11:30:00Z", "note", "nochange", ("user", 12));
        c2["assignedTo"] = json!({"id": 12, "type": "user"});
        let look = read(
            &conversation("active", None),
            &[c2, b, a],
            1,
            "2391938111",
            None,
            &settings(),
        )
        .expect("reads");
        let kinds: Vec<_> = look
            .events
            .iter()
            .map(|e| (e.kind, e.actor_id.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![(EventKind::HandedOffToHuman, Some("12".into()))]
        );
    }

    #[test]
    fn the_listing_stops_at_until_and_an_empty_page_ends_it() {
        let t = |s: &str| crate::providers::parse_time(s).expect("time");
        let (since, until) = (t("2025-01-01T00:00:00Z"), t("2025-01-02T00:00:00Z"));
        let url = list_url("https://api.helpscout.net", since, 3).expect("url");
        assert_eq!(
            url.as_str(),
            "https://api.helpscout.net/v2/conversations?status=all&modifiedSince=2024-12-31T23%3A59%3A59Z&sortField=createdAt&sortOrder=asc&page=3"
        );
        let answer = json!({"_embedded": {"conversations": [
            {"id": 1, "createdAt": "2024-12-01T00:00:00Z"},
            {"id": 2, "createdAt": "2025-01-02T00:00:00Z"}
        ]}, "page": {"totalPages": 9, "totalElements": 17}});
        let page = read_listing(&answer, since, until, 3).expect("page");
        assert_eq!(page.ticket_ids, vec!["1".to_string()]);
        assert_eq!(page.next, None, "created at until: the rest is newer");
        assert_eq!(page.total, Some(17));
        let more = json!({"_embedded": {"conversations": [{"id": 1, "createdAt": "2024-12-01T00:00:00Z"}]},
                          "page": {"totalPages": 9}});
        let next = read_listing(&more, since, until, 3).expect("page").next;
        assert_eq!(next.as_deref(), Some("hs1:1735689600:1735776000:4"));
        assert_eq!(
            ListCursor::parse("hs1:1735689600:1735776000:4", since, until).ok(),
            Some(4)
        );
        let empty = json!({"page": {"totalPages": 9}, "_links": {"next": {"href": "x"}}});
        assert_eq!(
            read_listing(&empty, since, until, 5).expect("page").next,
            None
        );
    }

    #[test]
    fn pages_continue_on_a_next_link_or_the_page_count() {
        assert!(has_next(&json!({"_links": {"next": {"href": "x"}}}), 1));
        assert!(has_next(
            &json!({"page": {"totalPages": 3, "number": 2}}),
            2
        ));
        assert!(!has_next(
            &json!({"page": {"totalPages": 3, "number": 3}}),
            3
        ));
        assert!(!has_next(&json!({}), 1));
    }
}
