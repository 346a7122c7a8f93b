//! Freshdesk API v2: a ticket with its stats, and its conversations.
//!
//! Requests, per look: `GET /api/v2/tickets/{id}?include=stats` (status,
//! assigned agent, tags, source, and the latest resolved / closed / reopened
//! times), then `GET /api/v2/tickets/{id}/conversations?per_page=100&page=N`
//! while the answer's `Link` header has `rel="next"` (at most [`MAX_PAGES`]
//! pages, then [`ApiError::Malformed`]). Conversations have no time filter, so
//! `since` is applied here.
//!
//! What it cannot see: Freshdesk's REST API has no per-ticket history of status
//! changes or assignments. `stats` keeps only the *latest* resolution, closing
//! and reopening, so an earlier solve/reopen pair inside the window is invisible
//! (the webhooks, if delivered, have it), and hand-offs are not visible at all
//! (only the current `responder_id`, kept in the evidence).
//!
//! Normalization follows the webhook parser ([`crate::providers::freshdesk`]):
//! status Resolved (4) or Closed (5) is a resolution, any other status after
//! one a reopen. The webhook judges the resolver by the ticket's assigned agent
//! (`{{ticket.agent.email}}`); so does this client, with the ticket's
//! `responder_id` *now* (a ticket reassigned after its resolution is judged by
//! its new agent), its tags and its source as the channel. `ai_agent_ids` must
//! therefore hold the AI agent's numeric id as well as its e-mail address:
//! resolving an e-mail needs the Agents API, which needs admin rights.
//! A customer message is a conversation written by the requester, or an
//! incoming public one (an e-mail from the customer's side); the ticket's
//! description is the request, not a reply.
//!
//! Event keys: the webhooks key by a hash of the rendered `{{ticket.updated_at}}`
//! (minute precision, the helpdesk's time zone), which the API cannot
//! reproduce, so every key here is `api:freshdesk:…`: the conversation id for
//! messages, `<ticket>:<resolved|closed|reopened|status-N>:<time>` for what the
//! stats show. An event seen both ways is two events; the state machine keeps
//! the first resolution and reopen signals are idempotent.
//!
//! Backfill ([`HelpdeskApi::changed_tickets`]): List All Tickets,
//! `GET /api/v2/tickets?updated_since=<anchor>&order_by=updated_at&order_type=asc&per_page=100&page=<n>`.
//! Page numbers over a list that changes while it is read skip tickets (one
//! updated meanwhile moves to the end and shifts the rest one place back), and
//! the list stops at 300 pages; so each next page is asked from a new anchor,
//! the last `updated_at` seen minus one second (whether `updated_since` is
//! inclusive is not documented: the second of overlap covers both), at page 1.
//! Only when a whole page shares that second does the anchor stay and the page
//! number grow. `next` is `fd-list:<anchor, Unix seconds>:<page>`: a position
//! in time, valid whenever backfill resumes. The list has no upper bound and
//! sorts by the *latest* update, and a ticket resolved inside the range is
//! usually updated after it, so it is read up to now; `until` only leaves out
//! tickets created at or after it (a superset: importing extra tickets is
//! harmless). Spam and deleted tickets are not listed, nor archived ones.
//!
//! Found (sources), https://developers.freshdesk.com/api/ :
//! - List All Tickets: `GET /api/v2/tickets`; "only tickets created within the
//!   past 30 days" are returned by default, older ones with `updated_since`
//!   (ISO 8601); `order_by` `created_at` (default), `due_by`, `updated_at`,
//!   `status`; `order_type` `asc` / `desc` (default); `per_page` at most 100;
//!   at most 300 pages; spam and deleted tickets only through `filter`; the
//!   `link` header names the next page; one API credit a call without includes.
//! - Auth: Basic with the API key as user name and any password (`apikey:X`);
//!   access follows the key's agent's role ("if your Freshdesk Agent Role is …
//!   only allowed to view tickets … you will not be able to … reply").
//! - View a Ticket: `GET /api/v2/tickets/[id]`; `include=stats` "Will return the
//!   ticket's closed_at, resolved_at and first_responded_at time"; each include
//!   costs one more API credit. Ticket fields: `status` (2 Open, 3 Pending,
//!   4 Resolved, 5 Closed), `source` (1 Email, 2 Portal, 3 Phone, 7 Chat,
//!   9 Feedback Widget, 10 Outbound Email), `requester_id`, `responder_id` ("ID
//!   of the agent to whom the ticket has been assigned"), `tags`, `spam`,
//!   `deleted`, `updated_at`.
//! - List All Conversations of a Ticket: `GET /api/v2/tickets/[id]/conversations`,
//!   fields `id`, `incoming` ("created from outside"), `private`, `user_id`,
//!   `source`, `created_at`; 30 a page by default, `per_page` at most 100,
//!   `page` from 1; "The 'link' header in the response will hold the next page
//!   url if exists".
//! - Rate limits per account and minute: Growth 200, Pro 400, Enterprise 700,
//!   trial 50; headers `X-RateLimit-Total`, `X-RateLimit-Remaining`,
//!   `X-RateLimit-Used-CurrentRequest`; over the limit `429` with `Retry-After`
//!   (seconds).
//! - Errors: 401 bad credentials, 403 not allowed for the key's role, 404
//!   "invalid ID", 429, 500; bodies `{"description", "errors": [{field,
//!   message, code}]}` for most errors. Agent APIs need admin privileges.
//!
//! Assumed (not documented): `stats` also carries `reopened_at` and
//! `status_updated_at` (Freshdesk's SDK and stats schema list them; they are
//! optional here), each the latest such time; conversations come oldest first;
//! a 404 may have an empty body; archived tickets (closed and inactive for 120
//! days) answer 404 here, which cannot matter within `verify.max_hold`.
//! The ticket list really is sorted by `updated_at` when asked (a page out of
//! order is refused rather than trusted), and a page past the 300th answers
//! an error rather than an empty list.

use super::http::ApiHttp;
use super::MAX_PAGES;
use super::{ApiError, ApiSettings, HelpdeskApi, Sight, TicketLook, TicketPage};
use crate::event::{EventKind, TicketEvent};
use crate::providers::freshdesk::is_resolved_status;
use crate::providers::ProviderSettings;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// Requests per minute when `api.requests_per_minute` is not set: half the
/// Growth plan's 200 credits, since the ticket read costs two (stats included).
pub const REQUESTS_PER_MINUTE: u32 = 100;

/// Conversations per page (Freshdesk's maximum).
const PER_PAGE: u32 = 100;

pub struct FreshdeskApi {
    http: ApiHttp,
    base: String,
    key: String,
    settings: ProviderSettings,
}

pub fn client(api: &ApiSettings, settings: &ProviderSettings) -> Result<FreshdeskApi, String> {
    let base = api
        .base_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or("freshdesk: api.base_url is required (https://<domain>.freshdesk.com)")?;
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/api/v2").unwrap_or(base).to_string();
    if !settings.ai_agent_ids.is_empty() && !settings.ai_agent_ids.iter().any(|a| is_numeric(a)) {
        return Err(
            "freshdesk: verification compares the ticket's assigned agent id with \
            ai_agent_ids, which lists no numeric id: add the AI agent's Freshdesk agent id \
            (next to its e-mail address), or set verify = \"off\""
                .into(),
        );
    }
    Ok(FreshdeskApi {
        http: ApiHttp::for_api(api, REQUESTS_PER_MINUTE)?,
        base,
        key: api.token.clone(),
        settings: settings.clone(),
    })
}

fn is_numeric(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Deserialize)]
struct Ticket {
    #[serde(default)]
    id: Value,
    status: Value,
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    requester_id: Value,
    #[serde(default)]
    responder_id: Value,
    #[serde(default)]
    source: Value,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    spam: Option<bool>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(default)]
    stats: Option<Stats>,
}

#[derive(Deserialize, Default)]
struct Stats {
    #[serde(default)]
    resolved_at: Option<DateTime<Utc>>,
    #[serde(default)]
    closed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    reopened_at: Option<DateTime<Utc>>,
    #[serde(default)]
    status_updated_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Conversation {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    incoming: bool,
    #[serde(default)]
    private: bool,
    #[serde(default)]
    user_id: Value,
    created_at: DateTime<Utc>,
}

/// Tickets per page of the ticket list (Freshdesk's maximum).
const LIST_PER_PAGE: u32 = 100;

/// The last page number the ticket list answers.
pub const LIST_MAX_PAGE: u32 = 300;

/// Where our backfill cursors start.
const LIST_CURSOR: &str = "fd-list:";

/// What the listing reads of a listed ticket.
#[derive(Deserialize)]
struct ListedTicket {
    id: Value,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    /// Required: the next page is anchored on it.
    updated_at: DateTime<Utc>,
}

/// A place in the ticket list: `updated_since` (Unix seconds) and a page number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    anchor: i64,
    page: u32,
}

impl Position {
    fn encode(self) -> String {
        format!("{LIST_CURSOR}{}:{}", self.anchor, self.page)
    }

    fn decode(cursor: &str) -> Result<Position, ApiError> {
        let bad = || {
            ApiError::malformed(format!(
                "`{cursor}` is not a Freshdesk list cursor (`{LIST_CURSOR}<time>:<page>`)"
            ))
        };
        let (anchor, page) = cursor
            .strip_prefix(LIST_CURSOR)
            .and_then(|c| c.split_once(':'))
            .ok_or_else(bad)?;
        let anchor: i64 = anchor.parse().map_err(|_| bad())?;
        let page: u32 = page.parse().map_err(|_| bad())?;
        if anchor < 0 || !(1..=LIST_MAX_PAGE).contains(&page) {
            return Err(bad());
        }
        Ok(Position { anchor, page })
    }
}

/// The ids of a list page, and where the next one starts (pure: unit-tested).
fn list_page(
    tickets: &[ListedTicket],
    more: bool,
    at: Position,
    until: DateTime<Utc>,
) -> Result<TicketPage, ApiError> {
    if tickets
        .windows(2)
        .any(|w| w[0].updated_at > w[1].updated_at)
    {
        return Err(ApiError::malformed(
            "the ticket list is not sorted by updated_at as asked",
        ));
    }
    let mut ticket_ids = Vec::with_capacity(tickets.len());
    for t in tickets {
        let id = id_text(&t.id).ok_or_else(|| ApiError::malformed("a listed ticket has no id"))?;
        // Created at or after `until`: nothing of it happened in the range.
        if t.created_at.is_none_or(|c| c < until) {
            ticket_ids.push(id);
        }
    }
    let next = match tickets.last() {
        Some(last) if more => {
            let anchor = last.updated_at.timestamp() - 1;
            let next = if anchor > at.anchor {
                Position { anchor, page: 1 }
            } else {
                // A whole page inside one second: page on from the same anchor.
                Position {
                    anchor: at.anchor,
                    page: at.page + 1,
                }
            };
            if next.page > LIST_MAX_PAGE {
                return Err(ApiError::malformed(format!(
                    "more than {LIST_MAX_PAGE} pages of tickets updated within one second \
                     (Freshdesk lists {LIST_MAX_PAGE} pages at most)"
                )));
            }
            if next == at {
                return Err(ApiError::malformed("the ticket list did not move on"));
            }
            Some(next.encode())
        }
        _ => None,
    };
    Ok(TicketPage {
        ticket_ids,
        next,
        total: None,
    })
}

/// An id as text, from a JSON number or string.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// The status in Freshdesk's words; custom statuses keep their number.
pub fn status_name(status: &Value) -> String {
    match status.as_i64() {
        Some(2) => "open".into(),
        Some(3) => "pending".into(),
        Some(4) => "resolved".into(),
        Some(5) => "closed".into(),
        _ => id_text(status).unwrap_or_default(),
    }
}

/// The source as `{{ticket.source}}` renders it (lower case, like the webhook's
/// channel); sources Freshdesk does not document have no channel.
fn channel_name(source: &Value) -> Option<String> {
    let name = match source.as_i64()? {
        1 => "email",
        2 => "portal",
        3 => "phone",
        7 => "chat",
        9 => "feedback widget",
        10 => "outbound email",
        _ => return None,
    };
    Some(name.into())
}

/// Whether the answer's `Link` header points at a next page.
fn has_next(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|link| {
            link.split(';').skip(1).any(|p| {
                p.trim()
                    .replace(' ', "")
                    .eq_ignore_ascii_case("rel=\"next\"")
            })
        })
}

impl FreshdeskApi {
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        // The key is the user name; Freshdesk ignores the password.
        self.http.client().get(url).basic_auth(&self.key, Some("X"))
    }

    async fn fetch(
        &self,
        ticket_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<TicketLook, ApiError> {
        super::integer_id("Freshdesk", ticket_id)?;
        let url = format!("{}/api/v2/tickets/{ticket_id}", self.base);
        let answer = self
            .http
            .json(self.get(&url).query(&[("include", "stats")]))
            .await?;
        let ticket: Ticket = serde_json::from_value(answer)
            .map_err(|e| ApiError::malformed(format!("ticket: {e}")))?;
        let (conversations, pages) = self.conversations(ticket_id).await?;
        read(
            ticket_id,
            &ticket,
            &conversations,
            pages,
            since,
            &self.settings,
        )
    }

    /// Every conversation of the ticket, page after page while `Link` says so.
    async fn conversations(&self, id: &str) -> Result<(Vec<Conversation>, u32), ApiError> {
        let url = format!("{}/api/v2/tickets/{id}/conversations", self.base);
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let query = [("per_page", PER_PAGE), ("page", page)];
            let (headers, body) = self
                .http
                .send_with_headers(self.get(&url).query(&query))
                .await?;
            let list: Vec<Conversation> = serde_json::from_slice(&body)
                .map_err(|e| ApiError::malformed(format!("conversations: {e}")))?;
            let empty = list.is_empty();
            all.extend(list);
            // An empty page ends the list even if a `Link` insists.
            if empty || !has_next(&headers) {
                return Ok((all, page));
            }
        }
        Err(ApiError::malformed(format!(
            "conversations: more than {MAX_PAGES} pages of {PER_PAGE}"
        )))
    }
}

impl FreshdeskApi {
    /// One page of the ticket list, oldest update first, from `since` or our cursor.
    async fn list(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<TicketPage, ApiError> {
        let at = match cursor {
            None => Position {
                anchor: since.timestamp().max(0),
                page: 1,
            },
            Some(c) => Position::decode(c)?,
        };
        let anchor = DateTime::from_timestamp(at.anchor, 0)
            .ok_or_else(|| ApiError::malformed("the cursor's time is out of range"))?;
        let query = [
            (
                "updated_since",
                anchor.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
            ("order_by", "updated_at".into()),
            ("order_type", "asc".into()),
            ("per_page", LIST_PER_PAGE.to_string()),
            ("page", at.page.to_string()),
        ];
        let url = format!("{}/api/v2/tickets", self.base);
        let (headers, body) = self
            .http
            .send_with_headers(self.get(&url).query(&query))
            .await?;
        let tickets: Vec<ListedTicket> = serde_json::from_slice(&body)
            .map_err(|e| ApiError::malformed(format!("ticket list: {e}")))?;
        list_page(&tickets, has_next(&headers), at, until)
    }
}

/// Normalize a ticket and its conversations (pure: unit-tested below).
fn read(
    ticket_id: &str,
    ticket: &Ticket,
    conversations: &[Conversation],
    pages: u32,
    since: Option<DateTime<Utc>>,
    s: &ProviderSettings,
) -> Result<TicketLook, ApiError> {
    if id_text(&ticket.id).is_some_and(|id| id != ticket_id) {
        return Err(ApiError::malformed("the answer is about another ticket"));
    }
    let status = status_name(&ticket.status);
    let resolved = is_resolved_status(&id_text(&ticket.status).unwrap_or_default());
    let stats = ticket.stats.as_ref().ok_or_else(|| {
        ApiError::malformed("the ticket came without the `stats` asked for (include=stats)")
    })?;
    let agent = id_text(&ticket.responder_id);
    let tags = ticket.tags.clone().unwrap_or_default();
    let channel = channel_name(&ticket.source);
    // What the stats show is keyed by ticket, kind and time.
    let stat_key = |what: &str, at: DateTime<Utc>| {
        format!(
            "api:freshdesk:{ticket_id}:{what}:{}",
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    };
    let event = |kind: EventKind, at: DateTime<Utc>, event_key: String| TicketEvent {
        event_key,
        ticket_id: ticket_id.to_string(),
        kind,
        occurred_at: at,
        resolver: (kind == EventKind::Resolved)
            .then(|| s.resolve(agent.as_deref(), &tags, channel.as_deref())),
        actor_id: agent.clone(),
        tags: tags.clone(),
        channel: channel.clone(),
    };
    let mut events = Vec::new();
    if let Some(at) = stats.resolved_at {
        events.push(event(EventKind::Resolved, at, stat_key("resolved", at)));
    }
    // Closing a resolved ticket is a resolution too (the webhook sees status 5).
    if let Some(at) = stats.closed_at.filter(|c| Some(*c) != stats.resolved_at) {
        events.push(event(EventKind::Resolved, at, stat_key("closed", at)));
    }
    if let Some(at) = stats.reopened_at {
        events.push(event(EventKind::Reopened, at, stat_key("reopened", at)));
    }
    // Resolved -> Pending is a reopen for the webhook, and maybe not a
    // `reopened_at`: the status' own time says it.
    let last_resolution = stats.resolved_at.max(stats.closed_at);
    if let (false, Some(at)) = (resolved, stats.status_updated_at) {
        if last_resolution.is_some_and(|r| at > r) && stats.reopened_at != Some(at) {
            let what = format!("status-{}", id_text(&ticket.status).unwrap_or_default());
            events.push(event(EventKind::Reopened, at, stat_key(&what, at)));
        }
    }
    let requester = id_text(&ticket.requester_id);
    let mut last_customer_message_at = None;
    for c in conversations {
        let by_requester = requester.is_some() && id_text(&c.user_id) == requester;
        if !(by_requester || (c.incoming && !c.private)) {
            continue;
        }
        last_customer_message_at = last_customer_message_at.max(Some(c.created_at));
        // Conversation ids are unique in the account: the vendor's id.
        let key = format!(
            "api:freshdesk:conversation:{}",
            id_text(&c.id).unwrap_or_default()
        );
        let mut e = event(EventKind::CustomerReplied, c.created_at, key);
        e.actor_id = id_text(&c.user_id);
        events.push(e);
    }
    events.retain(|e| since.is_none_or(|t| e.occurred_at >= t));
    events.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let answer = json!({
        "ticket": {
            "id": ticket.id,
            "status": ticket.status,
            "updated_at": ticket.updated_at,
            "requester_id": ticket.requester_id,
            "responder_id": ticket.responder_id,
            "source": ticket.source,
            "spam": ticket.spam,
            "deleted": ticket.deleted,
        },
        "stats": {
            "resolved_at": stats.resolved_at,
            "closed_at": stats.closed_at,
            "reopened_at": stats.reopened_at,
            "status_updated_at": stats.status_updated_at,
        },
        "since": since,
        "conversations": conversations.len(),
        "pages": pages,
        "events": events.iter().map(|e| json!({
            "key": e.event_key, "kind": e.kind, "at": e.occurred_at, "actor": e.actor_id,
        })).collect::<Vec<_>>(),
    });
    Ok(TicketLook {
        status,
        resolved,
        updated_at: ticket.updated_at,
        last_customer_message_at,
        events,
        answer,
    })
}

impl HelpdeskApi for FreshdeskApi {
    /// Freshdesk's webhook times are rendered to the minute.
    fn same_happening(&self) -> chrono::Duration {
        chrono::Duration::seconds(60)
    }

    fn provider(&self) -> &'static str {
        "freshdesk"
    }

    fn sight(&self) -> Sight {
        Sight {
            // Only the latest resolution / reopening (ticket stats).
            status_history: false,
            customer_messages: true,
            assignments: false,
        }
    }

    super::look_and_list_by_fetch_and_list!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Resolver;
    use reqwest::header::{HeaderMap, HeaderValue, LINK};

    fn settings() -> ProviderSettings {
        ProviderSettings {
            ai_agent_ids: vec!["bot@acme.example".into(), "43000000001".into()],
            ..Default::default()
        }
    }

    fn ticket(v: Value) -> Ticket {
        serde_json::from_value(v).expect("ticket")
    }

    fn conversations(v: Value) -> Vec<Conversation> {
        serde_json::from_value(v).expect("conversations")
    }

    fn t(s: &str) -> DateTime<Utc> {
        crate::providers::parse_time(s).expect("time")
    }

    #[test]
    fn stats_and_conversations_normalize_like_webhooks() {
        let tk = ticket(
            json!({"id": 20, "status": 4, "responder_id": 43000000001_u64,
            "requester_id": 7, "source": 2, "tags": ["login"], "description_text": "secret",
            "updated_at": "2026-01-01T09:00:00Z",
            "stats": {"resolved_at": "2026-01-01T09:00:00Z", "reopened_at": "2026-01-01T05:00:00Z",
                      "closed_at": null, "status_updated_at": "2026-01-01T09:00:00Z",
                      "first_responded_at": "2026-01-01T01:00:00Z"}}),
        );
        let cs = conversations(json!([
            {"id": 1, "incoming": false, "private": false, "user_id": 43000000001_u64,
             "created_at": "2026-01-01T01:00:00Z", "body_text": "try this"},
            {"id": 2, "incoming": true, "private": false, "user_id": 7,
             "created_at": "2026-01-01T05:00:00Z", "body_text": "did not work", "from_email": "c@x.example"},
            {"id": 3, "incoming": false, "private": true, "user_id": 555,
             "created_at": "2026-01-01T06:00:00Z", "body_text": "internal"},
            {"id": 4, "incoming": false, "private": false, "user_id": 7,
             "created_at": "2026-01-01T07:00:00Z", "body_text": "from the portal"}
        ]));
        let look = read("20", &tk, &cs, 1, None, &settings()).expect("reads");
        assert!(look.resolved);
        assert_eq!(look.status, "resolved");
        let seen: Vec<_> = look
            .events
            .iter()
            .map(|e| (e.kind, e.occurred_at))
            .collect();
        assert_eq!(
            seen,
            vec![
                (EventKind::Reopened, t("2026-01-01T05:00:00Z")),
                (EventKind::CustomerReplied, t("2026-01-01T05:00:00Z")),
                (EventKind::CustomerReplied, t("2026-01-01T07:00:00Z")),
                (EventKind::Resolved, t("2026-01-01T09:00:00Z")),
            ]
        );
        let resolution = &look.events[3];
        assert_eq!(resolution.resolver, Some(Resolver::Ai));
        assert_eq!(resolution.channel.as_deref(), Some("portal"));
        assert!(look
            .events
            .iter()
            .all(|e| e.event_key.starts_with("api:freshdesk:")));
        assert_eq!(
            look.last_customer_message_at,
            Some(t("2026-01-01T07:00:00Z"))
        );
        let kept = look.answer.to_string();
        assert!(!kept.contains("secret") && !kept.contains("did not work") && !kept.contains('@'));
    }

    #[test]
    fn resolved_then_pending_is_a_reopen_and_a_close_a_resolution() {
        let tk = ticket(
            json!({"id": 21, "status": 3, "responder_id": 555, "requester_id": 7,
            "stats": {"resolved_at": "2026-01-01T01:00:00Z", "status_updated_at": "2026-01-01T02:00:00Z"}}),
        );
        let look = read("21", &tk, &[], 1, None, &settings()).expect("reads");
        assert!(!look.resolved);
        assert_eq!(look.status, "pending");
        assert_eq!(look.events.len(), 2);
        assert_eq!(look.events[0].resolver, Some(Resolver::Human));
        assert_eq!(look.events[1].kind, EventKind::Reopened);
        let tk = ticket(json!({"id": 22, "status": 5, "responder_id": 555,
            "stats": {"resolved_at": "2026-01-01T01:00:00Z", "closed_at": "2026-01-03T01:00:00Z"}}));
        let look = read(
            "22",
            &tk,
            &[],
            1,
            Some(t("2026-01-02T00:00:00Z")),
            &settings(),
        )
        .expect("reads");
        assert!(look.resolved);
        assert_eq!(
            look.events.len(),
            1,
            "the resolution before since is left out"
        );
        assert_eq!(look.events[0].kind, EventKind::Resolved);
    }

    #[test]
    fn status_vocabulary() {
        for (n, name, resolved) in [
            (2, "open", false),
            (3, "pending", false),
            (4, "resolved", true),
            (5, "closed", true),
            (6, "6", false),
        ] {
            assert_eq!(status_name(&json!(n)), name);
            assert_eq!(is_resolved_status(&n.to_string()), resolved, "{n}");
        }
    }

    #[test]
    fn a_ticket_without_stats_is_malformed() {
        let tk = ticket(json!({"id": 23, "status": 2}));
        assert!(matches!(
            read("23", &tk, &[], 1, None, &settings()),
            Err(ApiError::Malformed { .. })
        ));
    }

    #[test]
    fn link_header_next_page() {
        let mut h = HeaderMap::new();
        assert!(!has_next(&h));
        h.insert(
            LINK,
            HeaderValue::from_static(
                "< https://acme.freshdesk.com/api/v2/tickets/1/conversations?page=2>;rel=\"next\"",
            ),
        );
        assert!(has_next(&h));
        h.insert(
            LINK,
            HeaderValue::from_static("<https://a.example/x?page=1>; rel=\"prev\""),
        );
        assert!(!has_next(&h));
    }

    #[test]
    fn email_only_ai_agents_are_refused() {
        let api = ApiSettings {
            base_url: Some("https://acme.freshdesk.com".into()),
            token: "key-123456789".into(),
            ..Default::default()
        };
        let only_email = ProviderSettings {
            ai_agent_ids: vec!["bot@acme.example".into()],
            ..Default::default()
        };
        assert!(client(&api, &only_email).is_err());
        assert!(client(&api, &settings()).is_ok());
        assert!(client(&api, &ProviderSettings::default()).is_ok());
    }

    fn listed(v: Value) -> Vec<ListedTicket> {
        serde_json::from_value(v).expect("tickets")
    }

    fn time(s: &str) -> DateTime<Utc> {
        crate::providers::parse_time(s).expect("time")
    }

    #[test]
    fn the_next_list_page_is_anchored_on_the_last_update() {
        let at = Position {
            anchor: time("2026-01-01T00:00:00Z").timestamp(),
            page: 1,
        };
        let page = listed(json!([
            {"id": 1, "created_at": "2025-12-01T00:00:00Z", "updated_at": "2026-01-01T01:00:00Z", "subject": "x"},
            {"id": 2, "created_at": "2026-01-03T00:00:00Z", "updated_at": "2026-01-03T00:00:00Z"},
            {"id": 3, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-04T00:00:00Z"}]));
        let p = list_page(&page, true, at, time("2026-01-02T00:00:00Z")).expect("reads");
        assert_eq!(p.ticket_ids, vec!["1", "3"], "2 was created after until");
        let next = Position::decode(p.next.as_deref().expect("more")).expect("ours");
        assert_eq!(next.anchor, time("2026-01-04T00:00:00Z").timestamp() - 1);
        assert_eq!(next.page, 1);
        assert_eq!(
            list_page(&page, false, at, time("2026-01-02T00:00:00Z"))
                .expect("reads")
                .next,
            None
        );
    }

    #[test]
    fn a_page_within_one_second_pages_on_from_the_same_anchor() {
        let t = time("2026-01-01T00:00:00Z");
        let page = listed(json!([
            {"id": 1, "updated_at": "2026-01-01T00:00:00Z"},
            {"id": 2, "updated_at": "2026-01-01T00:00:00Z"}]));
        let at = Position {
            anchor: t.timestamp() - 1,
            page: 4,
        };
        let p = list_page(&page, true, at, t).expect("reads");
        assert_eq!(
            Position::decode(p.next.as_deref().expect("more")).expect("ours"),
            Position {
                anchor: t.timestamp() - 1,
                page: 5
            }
        );
        let last = Position {
            page: LIST_MAX_PAGE,
            ..at
        };
        assert!(matches!(
            list_page(&page, true, last, t),
            Err(ApiError::Malformed { .. })
        ));
    }

    #[test]
    fn an_unsorted_list_or_a_foreign_cursor_is_malformed() {
        let page = listed(json!([
            {"id": 1, "updated_at": "2026-01-02T00:00:00Z"},
            {"id": 2, "updated_at": "2026-01-01T00:00:00Z"}]));
        let at = Position { anchor: 0, page: 1 };
        assert!(matches!(
            list_page(&page, true, at, time("2026-01-03T00:00:00Z")),
            Err(ApiError::Malformed { .. })
        ));
        for bad in [
            "",
            "fd-list:",
            "fd-list:1",
            "fd-list:-1:1",
            "fd-list:1:0",
            "fd-list:1:301",
            "zd-export:abc",
        ] {
            assert!(Position::decode(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Position::decode("fd-list:1767225600:2")
                .expect("ours")
                .encode(),
            "fd-list:1767225600:2"
        );
    }
}
