//! Zendesk Support API: a ticket's status and its audits (every update, with
//! its status changes, comments and assignments).
//!
//! Requests, per look: `GET /api/v2/tickets/{id}.json` (status, requester,
//! tags, channel), then `GET /api/v2/tickets/{id}/audits.json?page[size]=100`
//! and `page[after]=<meta.after_cursor>` while `meta.has_more` (at most
//! [`MAX_PAGES`] pages, then [`ApiError::Malformed`]). The audits endpoint has no
//! time filter, so `since` is applied here; the whole list is read anyway, since
//! the tags a resolution was judged with are rebuilt from it.
//!
//! Normalization follows the webhook parser ([`crate::providers::zendesk`]):
//! a status `Change` to `solved`/`closed` is a resolution (its resolver from the
//! audit's author, the ticket's tags at that audit and the ticket's channel),
//! from `solved`/`closed` to anything else a reopen; a `Comment` whose author is
//! the requester is a customer reply (not the comment that created the ticket:
//! that is the request, not a reply); an `assignee_id` `Change` to someone who
//! is not an AI agent is a hand-off.
//!
//! Event keys: status changes get the key a trigger webhook for the same change
//! gets (`composite_key(["zendesk-trigger", ticket, status, updated_at])`, with
//! the audit's `created_at` as `updated_at`), so a change seen both ways counts
//! once. Event-subscription webhooks key by their own event `id`, which the REST
//! API does not expose, so a change seen both that way and here is two events
//! (the state machine keeps the first resolution; reopen signals are
//! idempotent). Comments and assignments, which triggers do not report, get
//! `api:zendesk:<audit event id>`.
//!
//! Backfill ([`HelpdeskApi::changed_tickets`]): the cursor-based Incremental
//! Ticket Export, `GET /api/v2/incremental/tickets/cursor.json?start_time=<unix
//! seconds of since>&exclude_deleted=true`, then `cursor=<after_cursor>` (and
//! `exclude_deleted=true` again) until `end_of_stream`. The export has no upper
//! bound and returns each ticket once, at its latest change: a ticket solved
//! inside the range is usually changed again after it (closed by Zendesk's
//! automation days later), so the export is read to its end and `until` only
//! leaves out tickets *created* at or after it. The listing is therefore a
//! superset (tickets whose changes after `since` all came after `until` are
//! listed too; importing them is harmless). `next` is `zd-export:` followed by
//! Zendesk's `after_cursor`, which encodes the position (time and ticket id)
//! rather than a server session, so it resumes days later.
//!
//! Found (sources):
//! - Incremental Ticket Export, Cursor Based: "Allowed For: Admins" (an admin's
//!   API token, or an OAuth token with `read`); `start_time` "must be at least
//!   one minute in the past"; `cursor` for "all subsequent exports after the
//!   initial request"; answers `tickets`, `after_cursor`, `after_url`,
//!   `before_cursor`, `end_of_stream` ("true if the current request has returned
//!   all the results up to the current time"); "up to 10 requests per minute" to
//!   the incremental endpoints, over it `429` with `Retry-After`; deleted tickets
//!   are exported with status `deleted` unless `exclude_deleted=true`;
//!   `support_type_scope` defaults to `agent` (tickets worked by agents, which
//!   is what an AI agent acting as a Zendesk agent is).
//!   https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/
//!   https://developer.zendesk.com/documentation/ticketing/managing-tickets/using-the-incremental-export-api
//! - Auth: `Authorization: Basic base64("{email}/token:{api_token}")`, or
//!   `Authorization: Bearer <OAuth access token>`.
//!   https://support.zendesk.com/hc/en-us/articles/4408831452954
//! - Ticket audits need the global OAuth `read` scope ("You can't access the
//!   endpoints using the auditlogs:read or tickets:read scopes"); audits are
//!   "a read-only history of all updates to a ticket", each with `id`,
//!   `author_id`, `created_at`, `via` and `events`.
//!   https://developer.zendesk.com/api-reference/ticketing/tickets/ticket_audits/
//! - List Audits for a Ticket: cursor (recommended) or offset pagination, "a
//!   maximum of 100 records per page"; "Audits for Archived Tickets do not
//!   support pagination for this endpoint"; allowed for agents (Zendesk's
//!   OpenAPI, `ListAuditsForTicket`).
//! - Cursor pagination: `page[size]` (at most 100), answer `meta.has_more`,
//!   `meta.after_cursor`, `links.next`; the next page is `page[after]=<cursor>`.
//!   https://developer.zendesk.com/api-reference/introduction/pagination/
//! - Audit events: `Create`, `Change` (`field_name`, `value`, `previous_value`),
//!   `Comment` (`author_id`, `public`), and many others to be ignored ("Events
//!   may be added at any time").
//!   https://developer.zendesk.com/documentation/ticketing/reference-guides/ticket-audit-events-reference
//! - Rate limits per account and minute by plan: Team 200, Growth and
//!   Professional 400, Enterprise 700, Enterprise Plus / High Volume add-on 2500;
//!   over it, `429` with `Retry-After` in seconds.
//!   https://developer.zendesk.com/api-reference/introduction/rate-limits
//! - 404 body: `{"error":"RecordNotFound","description":"Not found"}`; times are
//!   ISO 8601 UTC (`2015-04-16T09:14:57Z`); ids are 64-bit integers.
//!   https://developer.zendesk.com/api-reference/introduction/data-types
//!
//! Assumed (not documented): audits come oldest first (they are sorted here
//! anyway); status and assignee values in `Change` events are strings or
//! numbers; a `tags` value is an array (a space-separated string is accepted);
//! `{{ticket.updated_at_with_timestamp}}` in a trigger renders the same ISO 8601
//! string as the audit's `created_at` (otherwise the keys differ and the change
//! counts as two events, as with event-subscription webhooks); an archived
//! ticket answers its audits on one page without `meta`. The export's
//! `after_cursor` stays valid without a time limit (none is documented; its
//! decoded form, `<unix time>.0||<ticket id>|`, is a position, not a session);
//! the export's default page size (1,000 tickets) is used, since `per_page` is
//! not documented for it.
//!
//! Rate: the export's own 10 requests a minute are not budgeted separately: a
//! page of 1,000 ids keeps backfill busy with `look`s (two or more requests
//! each) for far longer than six seconds, and a `429` is honoured anyway.

use super::http::ApiHttp;
use super::MAX_PAGES;
use super::{ApiError, ApiSettings, HelpdeskApi, Sight, TicketLook, TicketPage};
use crate::event::{composite_key, EventKind, TicketEvent};
use crate::providers::ProviderSettings;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// Requests per minute when `api.requests_per_minute` is not set: the Team
/// plan's account-wide limit (the lowest); raise it on bigger plans, lower it
/// when other integrations share the account.
pub const REQUESTS_PER_MINUTE: u32 = 200;

/// Audits per page (Zendesk's maximum).
const PAGE_SIZE: u32 = 100;

enum Auth {
    /// An agent's email and API token.
    ApiToken { email: String, token: String },
    /// An OAuth access token with the `read` scope.
    OAuth(String),
}

pub struct ZendeskApi {
    http: ApiHttp,
    base: String,
    auth: Auth,
    settings: ProviderSettings,
}

pub fn client(api: &ApiSettings, settings: &ProviderSettings) -> Result<ZendeskApi, String> {
    let base = api
        .base_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or("zendesk: api.base_url is required (https://<subdomain>.zendesk.com)")?;
    // Accept the API root as well as the account URL.
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/api/v2").unwrap_or(base).to_string();
    let auth = match api.user.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        // `user` may be written the way Zendesk shows it (`me@acme.com/token`).
        Some(user) => Auth::ApiToken {
            email: user.strip_suffix("/token").unwrap_or(user).to_string(),
            token: api.token.clone(),
        },
        None => Auth::OAuth(api.token.clone()),
    };
    Ok(ZendeskApi {
        http: ApiHttp::for_api(api, REQUESTS_PER_MINUTE)?,
        base,
        auth,
        settings: settings.clone(),
    })
}

#[derive(Deserialize)]
struct TicketAnswer {
    ticket: Ticket,
}

#[derive(Deserialize)]
struct Ticket {
    #[serde(default)]
    id: Value,
    status: String,
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    requester_id: Value,
    #[serde(default)]
    assignee_id: Value,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    via: Value,
}

#[derive(Deserialize)]
struct AuditPage {
    audits: Vec<Audit>,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    after_cursor: Option<String>,
}

/// One audit. Its events stay loose JSON: Zendesk adds event types at any time,
/// and one odd event must not make the whole history unreadable.
#[derive(Deserialize)]
struct Audit {
    #[serde(default)]
    id: Value,
    created_at: String,
    #[serde(default)]
    author_id: Value,
    #[serde(default)]
    events: Vec<Value>,
}

/// Where our backfill cursors start: what follows is Zendesk's `after_cursor`.
const EXPORT_CURSOR: &str = "zd-export:";

/// A page of the cursor-based incremental ticket export.
#[derive(Deserialize)]
struct ExportPage {
    tickets: Vec<ExportedTicket>,
    #[serde(default)]
    after_cursor: Option<String>,
    /// Required: without it the listing could not know it is over.
    end_of_stream: bool,
}

/// What the listing reads of an exported ticket (the rest is ignored).
#[derive(Deserialize)]
struct ExportedTicket {
    id: Value,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
}

/// Solved or closed: the statuses the webhook parser counts as resolutions.
pub fn is_solved(status: &str) -> bool {
    matches!(status.to_ascii_lowercase().as_str(), "solved" | "closed")
}

/// An id as text, from a JSON number or string.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// A `tags` value: an array of strings, or a space-separated string.
fn tag_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

impl ZendeskApi {
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.client().get(url);
        match &self.auth {
            Auth::ApiToken { email, token } => {
                request.basic_auth(format!("{email}/token"), Some(token))
            }
            Auth::OAuth(token) => request.bearer_auth(token),
        }
    }

    async fn fetch(
        &self,
        ticket_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<TicketLook, ApiError> {
        let id = super::integer_id("Zendesk", ticket_id)?;
        let url = format!("{}/api/v2/tickets/{id}.json", self.base);
        let answer = self.http.json(self.get(&url)).await?;
        let ticket: TicketAnswer = serde_json::from_value(answer)
            .map_err(|e| ApiError::malformed(format!("ticket: {e}")))?;
        let (audits, pages) = self.audits(id).await?;
        read(id, &ticket.ticket, audits, pages, since, &self.settings)
    }

    /// Every audit of the ticket, following the cursor to the last page.
    async fn audits(&self, id: &str) -> Result<(Vec<Audit>, u32), ApiError> {
        let url = format!("{}/api/v2/tickets/{id}/audits.json", self.base);
        let mut audits = Vec::new();
        let mut after: Option<String> = None;
        for page in 1..=MAX_PAGES {
            let mut query = vec![("page[size]", PAGE_SIZE.to_string())];
            if let Some(cursor) = &after {
                query.push(("page[after]", cursor.clone()));
            }
            let answer = self.http.json(self.get(&url).query(&query)).await?;
            let p: AuditPage = serde_json::from_value(answer)
                .map_err(|e| ApiError::malformed(format!("audits: {e}")))?;
            audits.extend(p.audits);
            match p.meta {
                Some(Meta {
                    has_more: true,
                    after_cursor: Some(next),
                }) if !next.is_empty() => {
                    // A cursor that does not move would loop until the bound.
                    if after.as_deref() == Some(next.as_str()) {
                        return Err(ApiError::malformed("audits: the cursor did not advance"));
                    }
                    after = Some(next);
                }
                _ => return Ok((audits, page)),
            }
        }
        Err(ApiError::malformed(format!(
            "audits: more than {MAX_PAGES} pages of {PAGE_SIZE}"
        )))
    }
}

impl ZendeskApi {
    /// One page of the incremental ticket export, from `since` or from our cursor.
    async fn list(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<TicketPage, ApiError> {
        let mut query = match cursor {
            None => vec![("start_time", since.timestamp().max(0).to_string())],
            Some(c) => vec![("cursor", vendor_cursor(c)?.to_string())],
        };
        // Deleted tickets answer 404 to `look`: nothing to import.
        query.push(("exclude_deleted", "true".into()));
        let url = format!("{}/api/v2/incremental/tickets/cursor.json", self.base);
        let answer = self.http.json(self.get(&url).query(&query)).await?;
        let page: ExportPage = serde_json::from_value(answer)
            .map_err(|e| ApiError::malformed(format!("ticket export: {e}")))?;
        export_page(page, until, cursor)
    }
}

/// Zendesk's cursor inside one of ours; a cursor this client did not write is refused.
fn vendor_cursor(ours: &str) -> Result<&str, ApiError> {
    ours.strip_prefix(EXPORT_CURSOR)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ApiError::malformed(format!(
                "`{ours}` is not a Zendesk export cursor (they start with `{EXPORT_CURSOR}`)"
            ))
        })
}

/// The ids of an export page, and where the next one starts (pure: unit-tested).
fn export_page(
    page: ExportPage,
    until: DateTime<Utc>,
    asked: Option<&str>,
) -> Result<TicketPage, ApiError> {
    let mut ticket_ids = Vec::with_capacity(page.tickets.len());
    for t in &page.tickets {
        let id =
            id_text(&t.id).ok_or_else(|| ApiError::malformed("an exported ticket has no id"))?;
        // Created at or after `until`: nothing of it happened in the range.
        let later = t.created_at.is_some_and(|c| c >= until);
        if !later && t.status.as_deref() != Some("deleted") {
            ticket_ids.push(id);
        }
    }
    let next = if page.end_of_stream {
        None
    } else {
        let after = page
            .after_cursor
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::malformed("the export is not over and has no after_cursor"))?;
        let next = format!("{EXPORT_CURSOR}{after}");
        if asked == Some(next.as_str()) {
            return Err(ApiError::malformed(
                "the export's after_cursor repeats the cursor asked for",
            ));
        }
        Some(next)
    };
    Ok(TicketPage {
        ticket_ids,
        next,
        total: None,
    })
}

/// What the walk through the audits needs to know about the ticket.
struct Context<'a> {
    ticket_id: &'a str,
    requester: Option<String>,
    channel: Option<String>,
    settings: &'a ProviderSettings,
}

/// Normalize a ticket and its audits (pure: unit-tested below).
fn read(
    ticket_id: &str,
    ticket: &Ticket,
    mut audits: Vec<Audit>,
    pages: u32,
    since: Option<DateTime<Utc>>,
    settings: &ProviderSettings,
) -> Result<TicketLook, ApiError> {
    if id_text(&ticket.id).is_some_and(|id| id != ticket_id) {
        return Err(ApiError::malformed("the answer is about another ticket"));
    }
    let mut timed = Vec::with_capacity(audits.len());
    for audit in audits.drain(..) {
        let at = crate::providers::parse_time(&audit.created_at).ok_or_else(|| {
            ApiError::malformed(format!("audit created_at `{}`", audit.created_at))
        })?;
        timed.push((at, audit));
    }
    // Oldest first, whatever order the pages came in.
    timed.sort_by(|(a, x), (b, y)| (a, id_text(&x.id)).cmp(&(b, id_text(&y.id))));
    let cx = Context {
        ticket_id,
        requester: id_text(&ticket.requester_id),
        channel: ticket
            .via
            .get("channel")
            .and_then(Value::as_str)
            .map(str::to_string),
        settings,
    };
    let mut tags: Option<Vec<String>> = None;
    let mut last_customer_message_at = None;
    let mut events = Vec::new();
    for (at, audit) in &timed {
        // A tag change applies to the status change in the same update (the
        // webhook's `detail.tags` is the ticket after the update).
        for e in &audit.events {
            if field(e) == Some("tags") && matches!(kind(e), Some("Create" | "Change")) {
                tags = Some(tag_list(e.get("value").unwrap_or(&Value::Null)));
            }
        }
        let tags_now = tags
            .clone()
            .unwrap_or_else(|| ticket.tags.clone().unwrap_or_default());
        let creates = audit.events.iter().any(|e| kind(e) == Some("Create"));
        for (index, e) in audit.events.iter().enumerate() {
            if is_customer_comment(e, audit, &cx) {
                last_customer_message_at = last_customer_message_at.max(Some(*at));
                if creates {
                    continue;
                }
            }
            let Some(ev) = normalize(e, index, *at, audit, &tags_now, &cx) else {
                continue;
            };
            if since.is_none_or(|s| ev.occurred_at >= s) {
                events.push(ev);
            }
        }
    }
    let answer = json!({
        "ticket": {
            "id": ticket.id,
            "status": ticket.status,
            "updated_at": ticket.updated_at,
            "requester_id": ticket.requester_id,
            "assignee_id": ticket.assignee_id,
        },
        "since": since,
        "audits": timed.len(),
        "pages": pages,
        "events": events.iter().map(|e| json!({
            "key": e.event_key, "kind": e.kind, "at": e.occurred_at, "actor": e.actor_id,
        })).collect::<Vec<_>>(),
    });
    Ok(TicketLook {
        status: ticket.status.clone(),
        resolved: is_solved(&ticket.status),
        updated_at: ticket.updated_at,
        last_customer_message_at,
        events,
        answer,
    })
}

fn kind(e: &Value) -> Option<&str> {
    e.get("type").and_then(Value::as_str)
}

fn field(e: &Value) -> Option<&str> {
    e.get("field_name").and_then(Value::as_str)
}

fn value_text(e: &Value, key: &str) -> Option<String> {
    e.get(key).and_then(id_text)
}

fn is_customer_comment(e: &Value, audit: &Audit, cx: &Context<'_>) -> bool {
    if kind(e) != Some("Comment") {
        return false;
    }
    let author = value_text(e, "author_id").or_else(|| id_text(&audit.author_id));
    author.is_some() && author == cx.requester
}

/// One audit event as a normalized event, when it is one the contract cares about.
fn normalize(
    e: &Value,
    index: usize,
    at: DateTime<Utc>,
    audit: &Audit,
    tags: &[String],
    cx: &Context<'_>,
) -> Option<TicketEvent> {
    let actor = id_text(&audit.author_id);
    // Comments and assignments: the vendor's event id, in our own namespace.
    let own_key = || match value_text(e, "id") {
        Some(id) => format!("api:zendesk:{id}"),
        None => format!(
            "api:zendesk:{}:{index}",
            id_text(&audit.id).unwrap_or_default()
        ),
    };
    let (kind, event_key) = match (kind(e)?, field(e)) {
        ("Change", Some("status")) => {
            let current = value_text(e, "value")?.to_ascii_lowercase();
            let previous = value_text(e, "previous_value").unwrap_or_default();
            let kind = if is_solved(&current) {
                EventKind::Resolved
            } else if is_solved(&previous) {
                EventKind::Reopened
            } else {
                return None;
            };
            // The key a trigger webhook reporting this change carries.
            let key =
                composite_key(&["zendesk-trigger", cx.ticket_id, &current, &audit.created_at]);
            (kind, key)
        }
        ("Comment", _) if is_customer_comment(e, audit, cx) => {
            (EventKind::CustomerReplied, own_key())
        }
        ("Change", Some("assignee_id")) => {
            let to = value_text(e, "value")?;
            if cx.settings.is_ai_agent(&to) {
                return None;
            }
            (EventKind::HandedOffToHuman, own_key())
        }
        _ => return None,
    };
    Some(TicketEvent {
        resolver: (kind == EventKind::Resolved).then(|| {
            cx.settings
                .resolve(actor.as_deref(), tags, cx.channel.as_deref())
        }),
        event_key,
        ticket_id: cx.ticket_id.to_string(),
        kind,
        occurred_at: at,
        actor_id: actor,
        tags: tags.to_vec(),
        channel: cx.channel.clone(),
    })
}

impl HelpdeskApi for ZendeskApi {
    fn provider(&self) -> &'static str {
        "zendesk"
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
    use crate::providers::{Headers, Provider, Webhook};

    fn settings() -> ProviderSettings {
        ProviderSettings {
            ai_agent_ids: vec!["900".into()],
            ai_tags: vec!["ai_resolved".into()],
            ..Default::default()
        }
    }

    fn ticket(status: &str) -> Ticket {
        serde_json::from_value(json!({
            "id": 42, "status": status, "requester_id": 7, "assignee_id": 900,
            "tags": ["billing"], "via": {"channel": "email"},
            "updated_at": "2026-01-01T05:00:00Z", "description": "secret words"
        }))
        .expect("ticket")
    }

    fn audits(v: Value) -> Vec<Audit> {
        serde_json::from_value(v).expect("audits")
    }

    fn history() -> Vec<Audit> {
        audits(json!([
            {"id": 1, "created_at": "2026-01-01T00:00:00Z", "author_id": 7, "events": [
                {"id": 11, "type": "Comment", "author_id": 7, "body": "help me", "public": true},
                {"id": 12, "type": "Create", "field_name": "status", "value": "new"},
                {"id": 13, "type": "Create", "field_name": "tags", "value": ["billing"]}]},
            {"id": 3, "created_at": "2026-01-01T02:00:00Z", "author_id": 7, "events": [
                {"id": 31, "type": "Comment", "author_id": 7, "body": "still broken", "public": true},
                {"id": 32, "type": "Change", "field_name": "status", "value": "open", "previous_value": "solved"},
                {"id": 33, "type": "Notification", "body": "to agents", "recipients": [900]}]},
            {"id": 2, "created_at": "2026-01-01T01:00:00Z", "author_id": 900, "events": [
                {"id": 21, "type": "Change", "field_name": "tags", "value": ["billing", "ai_resolved"], "previous_value": ["billing"]},
                {"id": 22, "type": "Change", "field_name": "status", "value": "solved", "previous_value": "new"}]},
            {"id": 4, "created_at": "2026-01-01T03:00:00Z", "author_id": 900, "events": [
                {"id": 41, "type": "Change", "field_name": "assignee_id", "value": "555", "previous_value": "900"},
                {"id": 42, "type": "Change", "field_name": "tags", "value": "billing", "previous_value": ["billing", "ai_resolved"]}]},
            {"id": 5, "created_at": "2026-01-01T04:00:00Z", "author_id": 555, "events": [
                {"id": 51, "type": "Change", "field_name": "status", "value": "pending", "previous_value": "open"},
                {"id": 52, "type": "Change", "field_name": "status", "value": "closed", "previous_value": "pending"}]}
        ]))
    }

    #[test]
    fn audits_normalize_like_webhooks() {
        let look = read("42", &ticket("closed"), history(), 1, None, &settings()).expect("reads");
        assert!(look.resolved);
        let kinds: Vec<_> = look
            .events
            .iter()
            .map(|e| (e.kind, e.occurred_at.to_rfc3339()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Resolved, "2026-01-01T01:00:00+00:00".into()),
                (
                    EventKind::CustomerReplied,
                    "2026-01-01T02:00:00+00:00".into()
                ),
                (EventKind::Reopened, "2026-01-01T02:00:00+00:00".into()),
                (
                    EventKind::HandedOffToHuman,
                    "2026-01-01T03:00:00+00:00".into()
                ),
                (EventKind::Resolved, "2026-01-01T04:00:00+00:00".into()),
            ],
            "the creating comment is the request, not a reply; open -> pending is nothing"
        );
        // The AI's solve carries the tag added in the same update; the human's close does not.
        assert_eq!(look.events[0].resolver, Some(Resolver::Ai));
        assert_eq!(look.events[0].tags, vec!["billing", "ai_resolved"]);
        assert_eq!(look.events[4].resolver, Some(Resolver::Human));
        assert_eq!(look.events[4].tags, vec!["billing"]);
        assert_eq!(look.events[1].event_key, "api:zendesk:31");
        assert_eq!(look.events[3].event_key, "api:zendesk:41");
        assert_eq!(
            look.last_customer_message_at
                .map(|t| t.to_rfc3339())
                .as_deref(),
            Some("2026-01-01T02:00:00+00:00")
        );
        let text = look.answer.to_string();
        assert!(
            !text.contains("help me") && !text.contains("still broken") && !text.contains("secret")
        );
    }

    #[test]
    fn since_leaves_earlier_events_out() {
        let since = crate::providers::parse_time("2026-01-01T02:00:00Z");
        let look = read("42", &ticket("closed"), history(), 1, since, &settings()).expect("reads");
        assert!(look
            .events
            .iter()
            .all(|e| e.occurred_at >= since.expect("t")));
        assert_eq!(look.events.len(), 4);
        // The last customer message is known whatever the window.
        assert!(look.last_customer_message_at.is_some());
    }

    #[test]
    fn status_vocabulary() {
        for (status, resolved) in [
            ("solved", true),
            ("closed", true),
            ("Solved", true),
            ("new", false),
            ("open", false),
            ("pending", false),
            ("hold", false),
        ] {
            assert_eq!(is_solved(status), resolved, "{status}");
        }
    }

    #[test]
    fn assignment_to_the_ai_agent_is_no_hand_off() {
        let a = audits(
            json!([{"id": 9, "created_at": "2026-01-01T00:00:00Z", "author_id": 1, "events": [
            {"id": 91, "type": "Change", "field_name": "assignee_id", "value": 900, "previous_value": null},
            {"id": 92, "type": "Change", "field_name": "assignee_id", "value": null}]}]),
        );
        let look = read("42", &ticket("open"), a, 1, None, &settings()).expect("reads");
        assert!(look.events.is_empty(), "{:?}", look.events);
    }

    #[test]
    fn a_status_change_keys_like_the_trigger_webhook_for_it() {
        let look = read("42", &ticket("solved"), history(), 1, None, &settings()).expect("reads");
        let body = json!({"event": "ticket_status", "ticket_id": "42", "status": "Solved",
            "via": "Email", "updated_by_id": "900", "tags": "billing ai_resolved",
            "updated_at": "2026-01-01T01:00:00Z"})
        .to_string();
        let h = Headers::new();
        let hook = Webhook {
            method: "POST",
            path_and_query: "/webhooks/zendesk/t",
            headers: &h,
            body: body.as_bytes(),
        };
        let from_webhook = crate::providers::zendesk::Zendesk
            .parse(&hook, &settings())
            .expect("parses");
        assert_eq!(look.events[0].event_key, from_webhook[0].event_key);
    }

    #[test]
    fn answers_about_another_ticket_or_with_bad_times_are_malformed() {
        assert!(matches!(
            read("43", &ticket("open"), Vec::new(), 1, None, &settings()),
            Err(ApiError::Malformed { .. })
        ));
        let a = audits(json!([{"id": 1, "created_at": "yesterday", "events": []}]));
        assert!(matches!(
            read("42", &ticket("open"), a, 1, None, &settings()),
            Err(ApiError::Malformed { .. })
        ));
    }

    fn export(v: Value) -> ExportPage {
        serde_json::from_value(v).expect("export page")
    }

    #[test]
    fn an_export_page_leaves_out_deleted_and_later_tickets() {
        let until = crate::providers::parse_time("2026-01-02T00:00:00Z").expect("t");
        let page = export(json!({
            "tickets": [
                {"id": 1, "status": "solved", "created_at": "2026-01-01T00:00:00Z", "subject": "x"},
                {"id": 2, "status": "deleted", "created_at": "2026-01-01T00:00:00Z"},
                {"id": 3, "status": "open", "created_at": "2026-01-02T00:00:00Z"},
                {"id": 4, "status": "closed", "created_at": "2025-06-01T00:00:00Z"}],
            "after_cursor": "MTU3NjYxMzUzOS4wfHw0Njd8", "end_of_stream": false}));
        let p = export_page(page, until, None).expect("reads");
        assert_eq!(p.ticket_ids, vec!["1", "4"]);
        assert_eq!(
            p.next.as_deref(),
            Some("zd-export:MTU3NjYxMzUzOS4wfHw0Njd8")
        );
        let last = export(json!({"tickets": [], "after_cursor": "abc", "end_of_stream": true}));
        assert_eq!(export_page(last, until, None).expect("reads").next, None);
    }

    #[test]
    fn an_export_that_does_not_move_on_is_malformed() {
        let until = crate::providers::parse_time("2026-01-02T00:00:00Z").expect("t");
        let same = export(json!({"tickets": [], "after_cursor": "abc", "end_of_stream": false}));
        assert!(matches!(
            export_page(same, until, Some("zd-export:abc")),
            Err(ApiError::Malformed { .. })
        ));
        let lost = export(json!({"tickets": [], "after_cursor": null, "end_of_stream": false}));
        assert!(matches!(
            export_page(lost, until, None),
            Err(ApiError::Malformed { .. })
        ));
        // No `end_of_stream`: the listing could never know it is over.
        assert!(serde_json::from_value::<ExportPage>(json!({"tickets": []})).is_err());
    }

    #[test]
    fn only_our_cursors_are_sent_back() {
        assert_eq!(vendor_cursor("zd-export:abc").expect("ours"), "abc");
        for bad in ["abc", "zd-export:", "fd-list:1:1"] {
            assert!(vendor_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_integer_ids_reach_a_url() {
        assert!(crate::helpdesk_api::integer_id("Zendesk", "35436").is_ok());
        for bad in ["", "12/../../users", "12?x=1", "abc", "1 2"] {
            assert!(
                matches!(
                    crate::helpdesk_api::integer_id("Zendesk", bad),
                    Err(ApiError::NotFound(_))
                ),
                "{bad}"
            );
        }
    }
}
