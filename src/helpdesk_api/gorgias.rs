//! Gorgias REST API: a ticket's status, its audit events and its messages.
//!
//! Requests (all `GET`, `Authorization: Basic base64(<api.user>:<api.token>)`, the
//! email of the API key's user and the key; base `https://<domain>.gorgias.com`):
//! 1. `/api/tickets/<id>`: `status` (`open`/`closed`), `snooze_datetime`,
//!    `closed_datetime`, `updated_datetime`, `last_received_message_datetime`,
//!    `assignee_user`, `channel`, `tags`;
//! 2. `/api/events?object_type=Ticket&object_id=<id>&types=ticket-closed&types=ticket-reopened&types=ticket-assigned&order_by=created_datetime:asc&limit=100[&created_datetime[gte]=<since>]`,
//!    cursor pages (`meta.next_cursor`);
//! 3. `/api/messages?ticket_id=<id>&order_by=created_datetime:desc&limit=100`,
//!    cursor pages, newest first, read until a page reaches back past `since` (the
//!    endpoint has no time filter). Message bodies are never kept.
//!
//! Backfill (`changed_tickets`): `/api/tickets?order_by=updated_datetime:desc&limit=100[&cursor=…]`,
//! read from the most recently updated ticket back to `since` (the list has no
//! time filter), keeping the tickets updated since `since` and created before
//! `until` (the list shows only a ticket's last update: one changed in the range
//! and again later is kept), then a second pass over the top of the list down to
//! where the first began, for tickets updated while the listing ran (they jump
//! above the pages already read). `next` is `<pass>|<high-water mark>|<Gorgias cursor>`.
//!
//! Found (sources):
//! - Auth: HTTP Basic with the user's email and an API key (Settings → REST API);
//!   the key has its user's permissions (an observer agent can read).
//!   https://developers.gorgias.com/docs/access-tokens-api-keys
//! - Rate limit: leaky bucket, 40 requests per 20 s for API-key integrations (80 for
//!   OAuth apps), per account; 429 with `Retry-after` (seconds) and
//!   `X-Gorgias-Account-Api-Call-Limit: n/40`. https://developers.gorgias.com/reference/limitations
//! - Errors: 401 bad or missing key, 403 the user's role forbids it, 404 the
//!   resource does not exist (often deleted). https://developers.gorgias.com/reference/errors-1
//! - Ticket fields (`status`, `closed_datetime`, `snooze_datetime` "when the ticket
//!   will be re-opened", `last_received_message_datetime` "when the last customer's
//!   message was sent", `assignee_user`, `tags`, `channel`, `updated_datetime`);
//!   datetimes like `2019-07-05T14:42:00.384938` (UTC, no offset).
//!   https://developers.gorgias.com/reference/the-ticket-object
//! - Events: `{id, context, created_datetime, data, object_id, object_type, type,
//!   user_id}`; list filters `object_type`, `object_id`, `types` (repeated),
//!   `created_datetime[gte]`, `order_by=created_datetime:asc|desc`, `limit` ≤ 100,
//!   `cursor`; answers `{data, meta: {prev_cursor, next_cursor}}` (null at the end).
//!   https://developers.gorgias.com/reference/the-event-object,
//!   https://developers.gorgias.com/changelog/deprecation-offset-based-pagination
//! - Messages: `GET /api/messages?ticket_id=&order_by=&limit=&cursor=`; a message
//!   has `from_agent` ("sent by your company to a customer, or the opposite"),
//!   `sender.id`, `source.type` (`internal-note` for notes), `created_datetime`.
//!   https://developers.gorgias.com/reference/the-ticketmessage-object
//! - Tickets list: `GET /api/tickets`, cursor pages ordered by `order_by`
//!   (`created_datetime` or `updated_datetime`, `:asc`/`:desc`, default
//!   `created_datetime:desc`), `limit` 1–100 (default 30), filters by customer,
//!   view, rule, external id, `trashed` (default true: trashed tickets included) or
//!   ids; no date filter and no total. https://developers.gorgias.com/reference/get_api-tickets,
//!   https://developers.gorgias.com/reference/pagination
//!
//! Assumed (not documented):
//! - Event types `ticket-reopened` and `ticket-unassigned` exist and `ticket-assigned`
//!   carries `data.assignee_user_id` (the reference's list of types is cut short in
//!   the copy we read; Gorgias's own helpdesk web client renders these types and that
//!   field); `user_id` is who acted (null for rules).
//! - A snoozed ticket is `closed` with a `snooze_datetime`, and its `ticket-closed`
//!   event is separate from the snooze (`ticket-snoozed`): a `ticket-closed` event is
//!   a real close.
//! - The API writes `closed_datetime` and `last_received_message_datetime` as the
//!   HTTP integration's `{{ticket.…}}` variables render them.
//! - List cursors stay valid for days: the documented example decodes to
//!   `prev__6__2021-03-03 06:00:00` (an id and a time: a position in the list, not
//!   a server-side session). A refused stored cursor is an error (400 → malformed):
//!   the backfill is then restarted from the start.
//! - `updated_datetime` changes with every change to the ticket (messages included).
//!
//! Semantics (as the webhook parser, `providers::gorgias`): `closed` without a
//! snooze is resolved; `ticket-closed` is a resolution, `ticket-reopened` a reopen;
//! an incoming message that is not an internal note is a customer reply; assigning
//! the ticket to a user who is not an AI agent is a hand-off (webhooks do not see
//! hand-offs). The resolver is `settings.resolve(actor, ticket tags, channel)` where
//! the actor is the user who closed it (the API says who; the webhook can only name
//! the assignee), else the assignee.
//!
//! Keys: the current closure (the ticket's `closed_datetime`) and the latest
//! customer message (`last_received_message_datetime`) get the webhook parser's
//! composite keys, so they count once when a webhook also brought them; every other
//! event is keyed `api:gorgias:<ticket>:event:<id>` / `api:gorgias:<ticket>:message:<id>`
//! (webhooks carry no ids and cannot describe those).

use super::http::ApiHttp;
use super::MAX_PAGES;
use super::{ApiError, ApiSettings, HelpdeskApi, Sight, TicketLook, TicketPage};
use crate::event::{composite_key, EventKind, TicketEvent};
use crate::providers::gorgias::parse_gorgias_time;
use crate::providers::ProviderSettings;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// Gorgias allows API-key integrations 40 requests per 20 s per account.
pub const REQUESTS_PER_MINUTE: u32 = 120;
/// The largest page Gorgias serves.
const PAGE_LIMIT: u32 = 100;
/// The event types this client reads.
const EVENT_TYPES: [&str; 3] = ["ticket-closed", "ticket-reopened", "ticket-assigned"];

pub struct GorgiasApi {
    http: ApiHttp,
    base: String,
    user: String,
    token: String,
    settings: ProviderSettings,
}

pub fn client(api: &ApiSettings, settings: &ProviderSettings) -> Result<GorgiasApi, String> {
    let base = api
        .base_url
        .as_deref()
        .ok_or("gorgias: api.base_url (https://<your-domain>.gorgias.com) is required")?;
    let user = api
        .user
        .clone()
        .filter(|u| !u.trim().is_empty())
        .ok_or("gorgias: api.user (the email of the API key's user) is required")?;
    let base = base.trim_end_matches('/');
    // Accept the base with or without the `/api` suffix the docs show.
    let base = base.strip_suffix("/api").unwrap_or(base).to_string();
    Ok(GorgiasApi {
        http: ApiHttp::for_api(api, REQUESTS_PER_MINUTE)?,
        base,
        user,
        token: api.token.clone(),
        settings: settings.clone(),
    })
}

#[derive(Debug, Deserialize)]
struct Ticket {
    status: String,
    #[serde(default)]
    closed_datetime: Option<String>,
    #[serde(default)]
    snooze_datetime: Option<String>,
    #[serde(default)]
    updated_datetime: Option<String>,
    #[serde(default)]
    last_received_message_datetime: Option<String>,
    #[serde(default)]
    assignee_user: Option<IdOnly>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Value,
}

#[derive(Debug, Deserialize)]
struct Tag {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Event {
    id: Value,
    #[serde(rename = "type")]
    kind: String,
    created_datetime: String,
    #[serde(default)]
    user_id: Value,
    #[serde(default)]
    data: Value,
}

#[derive(Debug, Deserialize)]
struct Message {
    id: Value,
    #[serde(default)]
    from_agent: bool,
    created_datetime: String,
    #[serde(default)]
    sent_datetime: Option<String>,
    #[serde(default)]
    sender: Option<IdOnly>,
    #[serde(default)]
    source: Option<Source>,
}

#[derive(Debug, Deserialize)]
struct Source {
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Page<T> {
    data: Vec<T>,
    #[serde(default)]
    meta: Option<Meta>,
}

/// A ticket as the tickets list shows it (only what backfill needs).
#[derive(Debug, Deserialize)]
struct Listed {
    id: Value,
    #[serde(default)]
    created_datetime: Option<String>,
    #[serde(default)]
    updated_datetime: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Meta {
    #[serde(default)]
    next_cursor: Option<String>,
}

/// A JSON id (Gorgias ids are numbers) as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A non-empty datetime field.
fn present(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn time(s: &str) -> Result<DateTime<Utc>, ApiError> {
    parse_gorgias_time(s).ok_or_else(|| ApiError::malformed(format!("gorgias time `{s}`")))
}

impl Ticket {
    /// Closed and not snoozed, as the webhook parser reads it.
    fn resolved(&self) -> bool {
        self.status.eq_ignore_ascii_case("closed") && present(&self.snooze_datetime).is_none()
    }

    fn tag_names(&self) -> Vec<String> {
        self.tags.iter().filter_map(|t| t.name.clone()).collect()
    }

    fn assignee(&self) -> Option<String> {
        self.assignee_user.as_ref().and_then(|u| id_text(&u.id))
    }
}

impl Message {
    fn is_customers(&self) -> bool {
        !self.from_agent
            && self
                .source
                .as_ref()
                .and_then(|s| s.kind.as_deref())
                .is_none_or(|k| k != "internal-note")
    }
}

impl GorgiasApi {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .client()
            .get(format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.token))
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// Follow `meta.next_cursor` until it is null, `enough` says so, or the bound.
    async fn pages<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        enough: impl Fn(&[T]) -> bool,
    ) -> Result<(Vec<T>, u32), ApiError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 1..=MAX_PAGES {
            let mut q: Vec<(&str, String)> = query.to_vec();
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let v = self.http.json(self.get(path).query(&q)).await?;
            let p: Page<T> = serde_json::from_value(v)
                .map_err(|e| ApiError::malformed(format!("gorgias {path} page: {e}")))?;
            let stop = enough(&p.data);
            items.extend(p.data);
            cursor = p.meta.and_then(|m| m.next_cursor).filter(|c| !c.is_empty());
            if stop || cursor.is_none() {
                return Ok((items, page));
            }
        }
        Err(ApiError::malformed(format!(
            "gorgias {path}: more than {MAX_PAGES} pages"
        )))
    }

    async fn fetch(
        &self,
        ticket_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<TicketLook, ApiError> {
        super::integer_id("Gorgias", ticket_id)?;
        let v = self
            .http
            .json(self.get(&format!("/api/tickets/{ticket_id}")))
            .await?;
        let ticket: Ticket = serde_json::from_value(v)
            .map_err(|e| ApiError::malformed(format!("gorgias ticket: {e}")))?;

        let mut query: Vec<(&str, String)> = vec![
            ("object_type", "Ticket".into()),
            ("object_id", ticket_id.into()),
        ];
        query.extend(EVENT_TYPES.iter().map(|t| ("types", t.to_string())));
        query.push(("order_by", "created_datetime:asc".into()));
        query.push(("limit", PAGE_LIMIT.to_string()));
        if let Some(s) = since {
            query.push((
                "created_datetime[gte]",
                s.to_rfc3339_opts(SecondsFormat::Micros, true),
            ));
        }
        let (events, event_pages) = self
            .pages::<Event>("/api/events", &query, |_| false)
            .await?;

        let query = [
            ("ticket_id", ticket_id.to_string()),
            ("order_by", "created_datetime:desc".into()),
            ("limit", PAGE_LIMIT.to_string()),
        ];
        // Newest first: once a page reaches back before `since`, older pages cannot matter.
        let (messages, message_pages) = self
            .pages::<Message>("/api/messages", &query, |page| {
                since.is_some_and(|s| {
                    page.last()
                        .and_then(|m| parse_gorgias_time(&m.created_datetime))
                        .is_some_and(|t| t < s)
                })
            })
            .await?;

        let read = Read {
            ticket_id,
            since,
            ticket: &ticket,
            settings: &self.settings,
        };
        let mut out = read.status_events(&events)?;
        out.extend(read.customer_messages(&messages)?);
        out.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));

        let answer = json!({
            "ticket_id": ticket_id,
            "status": ticket.status,
            "resolved": ticket.resolved(),
            "closed_datetime": ticket.closed_datetime,
            "snooze_datetime": ticket.snooze_datetime,
            "updated_datetime": ticket.updated_datetime,
            "last_received_message_datetime": ticket.last_received_message_datetime,
            "assignee_user_id": ticket.assignee(),
            "pages": {"events": event_pages, "messages": message_pages},
            "events": out.iter().map(|e| json!({
                "key": e.event_key, "kind": e.kind, "at": e.occurred_at, "actor": e.actor_id,
            })).collect::<Vec<_>>(),
        });
        Ok(TicketLook {
            status: ticket.status.clone(),
            resolved: ticket.resolved(),
            updated_at: present(&ticket.updated_datetime).and_then(parse_gorgias_time),
            last_customer_message_at: present(&ticket.last_received_message_datetime)
                .and_then(parse_gorgias_time),
            events: out,
            answer,
        })
    }
}

/// Where a backfill listing stands (`TicketPage::next`), as text:
/// `<pass>|<high-water mark>|<Gorgias cursor>`.
///
/// Pass 1 reads `GET /api/tickets?order_by=updated_datetime:desc` from the most
/// recently updated ticket back to `since`. The high-water mark is the
/// `updated_datetime` at the top of the list when pass 1 began: a ticket updated
/// while the listing runs jumps to the top, past pages already read, so pass 2
/// reads the top of the list again down to that mark to catch it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    second_pass: bool,
    mark: String,
    cursor: Option<String>,
}

impl Position {
    fn parse(text: &str) -> Result<Position, ApiError> {
        let bad = || ApiError::malformed(format!("not a gorgias listing cursor: `{text}`"));
        let mut parts = text.splitn(3, '|');
        let second_pass = match parts.next() {
            Some("1") => false,
            Some("2") => true,
            _ => return Err(bad()),
        };
        let mark = parts.next().filter(|m| !m.is_empty()).ok_or_else(bad)?;
        time(mark).map_err(|_| bad())?;
        let cursor = parts.next().ok_or_else(bad)?;
        Ok(Position {
            second_pass,
            mark: mark.to_string(),
            cursor: (!cursor.is_empty()).then(|| cursor.to_string()),
        })
    }

    fn text(&self) -> String {
        format!(
            "{}|{}|{}",
            if self.second_pass { 2 } else { 1 },
            self.mark,
            self.cursor.as_deref().unwrap_or_default()
        )
    }
}

/// Whether a listed ticket may have changed in `[since, until)`: updated since
/// `since` (its last update; an earlier one in the range is then possible) and
/// created before `until`. A ticket updated in the range and again later is
/// kept: the list shows only the last update.
fn may_have_changed(t: &Listed, since: DateTime<Utc>, until: DateTime<Utc>) -> bool {
    let updated = present(&t.updated_datetime).and_then(parse_gorgias_time);
    let created = present(&t.created_datetime).and_then(parse_gorgias_time);
    updated.is_none_or(|u| u >= since) && created.is_none_or(|c| c < until)
}

impl GorgiasApi {
    async fn list(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<TicketPage, ApiError> {
        let position = cursor.map(Position::parse).transpose()?;
        let mut query: Vec<(&str, String)> = vec![
            ("order_by", "updated_datetime:desc".into()),
            ("limit", PAGE_LIMIT.to_string()),
        ];
        if let Some(c) = position.as_ref().and_then(|p| p.cursor.clone()) {
            query.push(("cursor", c));
        }
        let v = self
            .http
            .json(self.get("/api/tickets").query(&query))
            .await?;
        let page: Page<Listed> = serde_json::from_value(v)
            .map_err(|e| ApiError::malformed(format!("gorgias tickets page: {e}")))?;
        let updated = |t: &Listed| present(&t.updated_datetime).and_then(parse_gorgias_time);

        // Newest first: once a ticket was last updated before the stop time, the
        // rest of the list is older still.
        let stop_at = match &position {
            Some(p) if p.second_pass => time(&p.mark)?,
            _ => since,
        };
        let reached_stop = page
            .data
            .iter()
            .any(|t| updated(t).is_some_and(|u| u < stop_at));
        // Pass 2 only wants the tickets that jumped above the mark.
        let jumped = |t: &Listed| {
            !position.as_ref().is_some_and(|p| p.second_pass)
                || updated(t).is_none_or(|u| u >= stop_at)
        };
        let ticket_ids = page
            .data
            .iter()
            .filter(|t| may_have_changed(t, since, until) && jumped(t))
            .map(|t| {
                id_text(&t.id).ok_or_else(|| ApiError::malformed("a gorgias ticket id is missing"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let vendor_next = page
            .meta
            .and_then(|m| m.next_cursor)
            .filter(|c| !c.is_empty() && !reached_stop);

        let next = match (position, vendor_next) {
            // The first page: the top of the list is the high-water mark.
            (None, Some(c)) => match page.data.first().and_then(|t| present(&t.updated_datetime)) {
                Some(mark) => Some(Position {
                    second_pass: false,
                    mark: mark.to_string(),
                    cursor: Some(c),
                }),
                None => {
                    return Err(ApiError::malformed(
                        "gorgias ticket without updated_datetime",
                    ))
                }
            },
            // One page was the whole listing: nothing could jump over it.
            (None, None) => None,
            (Some(p), Some(c)) => Some(Position {
                cursor: Some(c),
                ..p
            }),
            (Some(p), None) if !p.second_pass => Some(Position {
                second_pass: true,
                mark: p.mark,
                cursor: None,
            }),
            (Some(_), None) => None,
        }
        .map(|p| p.text());
        if next.is_some() && next.as_deref() == cursor {
            return Err(ApiError::malformed(
                "gorgias listing: the next cursor repeats the one asked for",
            ));
        }
        Ok(TicketPage {
            ticket_ids,
            next,
            total: None,
        })
    }
}

/// One ticket's answers, normalized like `providers::gorgias`.
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
        let tags = self.ticket.tag_names();
        let channel = self.ticket.channel.clone();
        TicketEvent {
            resolver: (kind == EventKind::Resolved).then(|| {
                self.settings
                    .resolve(actor.as_deref(), &tags, channel.as_deref())
            }),
            event_key: key,
            ticket_id: self.ticket_id.to_string(),
            kind,
            occurred_at: at,
            actor_id: actor,
            tags,
            channel,
        }
    }

    fn in_window(&self, at: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| at >= s)
    }

    fn api_key(&self, what: &str, id: &Value) -> String {
        format!(
            "api:gorgias:{}:{what}:{}",
            self.ticket_id,
            id_text(id).unwrap_or_default()
        )
    }

    /// The webhook parser's key for the ticket's current closure.
    fn closure_key(&self, closed: &str) -> String {
        composite_key(&["gorgias", self.ticket_id, "closed", closed])
    }

    /// Closures, reopens and hand-offs from the audit events; the current closure
    /// takes the ticket's `closed_datetime` and the webhook's key.
    fn status_events(&self, events: &[Event]) -> Result<Vec<TicketEvent>, ApiError> {
        let mut out = Vec::new();
        let mut current_closure: Option<usize> = None;
        for e in events {
            let at = time(&e.created_datetime)?;
            if !self.in_window(at) {
                continue;
            }
            let actor = id_text(&e.user_id);
            match e.kind.as_str() {
                "ticket-closed" => {
                    let actor = actor.or_else(|| self.ticket.assignee());
                    current_closure = Some(out.len());
                    out.push(self.event(
                        self.api_key("event", &e.id),
                        EventKind::Resolved,
                        at,
                        actor,
                    ));
                }
                "ticket-reopened" => {
                    current_closure = None;
                    out.push(self.event(
                        self.api_key("event", &e.id),
                        EventKind::Reopened,
                        at,
                        actor,
                    ));
                }
                "ticket-assigned" => {
                    let to = e.data.get("assignee_user_id").and_then(id_text);
                    if let Some(to) = to.filter(|t| !self.settings.is_ai_agent(t)) {
                        out.push(self.event(
                            self.api_key("event", &e.id),
                            EventKind::HandedOffToHuman,
                            at,
                            Some(to),
                        ));
                    }
                }
                _ => {}
            }
        }
        self.bind_current_closure(&mut out, current_closure)?;
        Ok(out)
    }

    /// Give the closure the ticket still is in the webhook's key and time; when the
    /// events missed it (but the ticket says it happened in the window), add it.
    fn bind_current_closure(
        &self,
        out: &mut Vec<TicketEvent>,
        current: Option<usize>,
    ) -> Result<(), ApiError> {
        let Some(closed) = present(&self.ticket.closed_datetime).filter(|_| self.ticket.resolved())
        else {
            return Ok(());
        };
        let at = time(closed)?;
        let key = self.closure_key(closed);
        let last_is_closure = out
            .iter()
            .rev()
            .find(|e| e.kind != EventKind::HandedOffToHuman)
            .is_some_and(|e| e.kind == EventKind::Resolved);
        match current
            .filter(|_| last_is_closure)
            .and_then(|i| out.get_mut(i))
        {
            Some(e) => {
                e.event_key = key;
                e.occurred_at = at;
            }
            None if self.in_window(at) => {
                out.push(self.event(key, EventKind::Resolved, at, self.ticket.assignee()));
            }
            None => {}
        }
        Ok(())
    }

    /// Customer messages in the window; the latest takes the webhook's key.
    fn customer_messages(&self, messages: &[Message]) -> Result<Vec<TicketEvent>, ApiError> {
        let latest = present(&self.ticket.last_received_message_datetime)
            .map(|raw| parse_gorgias_time(raw).map(|t| (raw, t)))
            .unwrap_or(None);
        let mut out = Vec::new();
        let mut bound = false;
        for m in messages.iter().filter(|m| m.is_customers()) {
            let at = time(&m.created_datetime)?;
            if !self.in_window(at) {
                continue;
            }
            let sent = m.sent_datetime.as_deref().and_then(parse_gorgias_time);
            let actor = m.sender.as_ref().and_then(|s| id_text(&s.id));
            match latest {
                Some((raw, t)) if !bound && (t == at || Some(t) == sent) => {
                    bound = true;
                    let key = composite_key(&["gorgias", self.ticket_id, "message-in", raw]);
                    out.push(self.event(key, EventKind::CustomerReplied, t, actor));
                }
                _ => out.push(self.event(
                    self.api_key("message", &m.id),
                    EventKind::CustomerReplied,
                    at,
                    actor,
                )),
            }
        }
        Ok(out)
    }
}

impl HelpdeskApi for GorgiasApi {
    fn provider(&self) -> &'static str {
        "gorgias"
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
            ai_agent_ids: vec!["9001".into()],
            ..Default::default()
        }
    }

    fn ticket(v: Value) -> Ticket {
        serde_json::from_value(v).expect("ticket")
    }

    #[test]
    fn a_snoozed_closed_ticket_is_not_resolved() {
        let t = ticket(json!({"status": "closed", "snooze_datetime": "2026-01-02T00:00:00"}));
        assert!(!t.resolved());
        let t = ticket(json!({"status": "closed", "snooze_datetime": null}));
        assert!(t.resolved());
        assert!(!ticket(json!({"status": "open"})).resolved());
    }

    #[test]
    fn the_current_closure_takes_the_webhook_key_and_earlier_ones_do_not() {
        let t = ticket(
            json!({"status": "closed", "closed_datetime": "2026-01-01T09:00:00.000000",
            "assignee_user": {"id": 9002}, "channel": "chat", "tags": [{"name": "x"}]}),
        );
        let s = settings();
        let r = Read {
            ticket_id: "5",
            since: None,
            ticket: &t,
            settings: &s,
        };
        let events: Vec<Event> = serde_json::from_value(json!([
            {"id": 1, "type": "ticket-closed", "created_datetime": "2026-01-01T01:00:00.100000", "user_id": 9001},
            {"id": 2, "type": "ticket-reopened", "created_datetime": "2026-01-01T06:00:00", "user_id": null},
            {"id": 3, "type": "ticket-assigned", "created_datetime": "2026-01-01T07:00:00", "user_id": 9002, "data": {"assignee_user_id": 9002}},
            {"id": 4, "type": "ticket-assigned", "created_datetime": "2026-01-01T07:30:00", "user_id": 9002, "data": {"assignee_user_id": 9001}},
            {"id": 5, "type": "ticket-closed", "created_datetime": "2026-01-01T09:00:00.250000", "user_id": 9002}
        ])).expect("events");
        let out = r.status_events(&events).expect("normalizes");
        let kinds: Vec<_> = out.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Resolved,
                EventKind::Reopened,
                EventKind::HandedOffToHuman,
                EventKind::Resolved
            ]
        );
        assert_eq!(out[0].event_key, "api:gorgias:5:event:1");
        assert_eq!(out[0].resolver, Some(Resolver::Ai));
        assert_eq!(
            out[3].event_key,
            composite_key(&["gorgias", "5", "closed", "2026-01-01T09:00:00.000000"])
        );
        assert_eq!(out[3].resolver, Some(Resolver::Human));
        assert_eq!(out[3].occurred_at.to_rfc3339(), "2026-01-01T09:00:00+00:00");
    }

    #[test]
    fn a_closure_the_events_missed_comes_from_the_ticket() {
        let t = ticket(
            json!({"status": "closed", "closed_datetime": "2026-01-01T09:00:00",
            "assignee_user": {"id": 9001}}),
        );
        let s = settings();
        let r = Read {
            ticket_id: "5",
            since: None,
            ticket: &t,
            settings: &s,
        };
        let out = r.status_events(&[]).expect("normalizes");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].resolver, Some(Resolver::Ai));
    }

    #[test]
    fn notes_and_agent_messages_are_not_customer_replies() {
        let t = ticket(
            json!({"status": "open", "last_received_message_datetime": "2026-01-01T05:00:00.000000"}),
        );
        let s = settings();
        let r = Read {
            ticket_id: "5",
            since: None,
            ticket: &t,
            settings: &s,
        };
        let messages: Vec<Message> = serde_json::from_value(json!([
            {"id": 30, "from_agent": true, "created_datetime": "2026-01-01T06:00:00", "source": {"type": "internal-note"}},
            {"id": 20, "from_agent": false, "created_datetime": "2026-01-01T05:00:00.000000", "sender": {"id": 7001}},
            {"id": 10, "from_agent": false, "created_datetime": "2026-01-01T02:00:00", "sender": {"id": 7001}}
        ])).expect("messages");
        let out = r.customer_messages(&messages).expect("normalizes");
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].event_key,
            composite_key(&["gorgias", "5", "message-in", "2026-01-01T05:00:00.000000"])
        );
        assert_eq!(out[1].event_key, "api:gorgias:5:message:10");
    }

    #[test]
    fn listing_positions_round_trip_and_foreign_ones_are_refused() {
        let p = Position {
            second_pass: false,
            mark: "2026-01-01T09:00:00.123456".into(),
            cursor: Some("bmV4dF9fMg==".into()),
        };
        assert_eq!(Position::parse(&p.text()), Ok(p.clone()));
        let p2 = Position {
            second_pass: true,
            cursor: None,
            ..p
        };
        assert_eq!(Position::parse(&p2.text()), Ok(p2));
        for bad in [
            "",
            "3|2026-01-01T09:00:00|x",
            "1||x",
            "1|yesterday|x",
            "1|2026-01-01T09:00:00",
        ] {
            assert!(Position::parse(bad).is_err(), "{bad}");
        }
    }
}
