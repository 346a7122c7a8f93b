//! Intercom: one conversation, read with `GET /conversations/{id}` (REST API,
//! `Intercom-Version: 2.11`), its parts normalized like the webhooks of
//! [`crate::providers::intercom`].
//!
//! Found (sources):
//! - Auth: `Authorization: Bearer <access token>`; a private app's token is under
//!   Developer Hub → your app → Configure → Authentication. The app needs the
//!   *Read conversations* permission.
//!   https://developers.intercom.com/docs/build-an-integration/learn-more/authentication/
//!   https://developers.intercom.com/docs/build-an-integration/learn-more/authentication/oauth-scopes/
//! - Hosts: `https://api.intercom.io` (US), `https://api.eu.intercom.io`,
//!   `https://api.au.intercom.io`. https://developers.intercom.com/building-apps/docs/rest-apis
//! - `GET /conversations/{conversation_id}` answers the conversation with `state`
//!   (`open`, `closed`, `snoozed`), `open`, `updated_at`, `statistics`
//!   (`last_contact_reply_at`, `last_close_at`, `last_closed_by_id`, …), `tags`,
//!   `source`, `ai_agent.resolution_state` (`assumed_resolution`,
//!   `confirmed_resolution`, `routed_to_team`, `abandoned`, null) and
//!   `conversation_parts {conversation_parts: [{id, part_type, created_at,
//!   assigned_to {type, id}, author {type, id}}], total_count}`. "The maximum
//!   number of conversation parts that can be returned via the API is 500. If you
//!   have more than that we will return the 500 most recent conversation parts."
//!   There is no other pagination of parts. 404: `{"type": "error.list",
//!   "errors": [{"code": "not_found", "message": "Resource Not Found"}]}`; 401
//!   `unauthorized`; 403 `api_plan_restricted`. Intercom's OpenAPI description,
//!   https://github.com/intercom/Intercom-OpenAPI `descriptions/2.11/api.intercom.io.yaml`
//! - Parts to act on: `close`, `open` (and `assign_and_reopen`), `comment` by a
//!   contact (`user`/`lead`), assignments (`assigned_to` set). Same OpenAPI file
//!   (manage-conversation `message_type`s) and the conversation part model,
//!   https://developers.intercom.com/docs/references/1.0/rest-api/conversations/conversation-part-model
//! - Rate limits: 10,000 calls a minute per app, 25,000 per workspace, spread over
//!   10-second windows; a 429 carries `X-RateLimit-Reset` (Unix time), no
//!   `Retry-After`. https://developers.intercom.com/docs/references/rest-api/errors/rate-limiting
//! - Backfill listing: `POST /conversations/search` with `{"query": {"operator":
//!   "AND", "value": [{"field", "operator", "value"}…]}, "pagination": {"per_page",
//!   "starting_after"}}`; `created_at` / `updated_at` are searchable as Unix
//!   timestamps with `>` and `<`; 20 a page by default, at most 150; the answer is
//!   `{"type": "conversation.list", "conversations": [{id, created_at, updated_at,
//!   …}], "total_count", "pages": {page, per_page, total_pages, next:
//!   {per_page, starting_after}}}` (`next` absent on the last page). No sort option.
//!   OpenAPI `searchConversations` (same file);
//!   https://developers.intercom.com/docs/build-an-integration/learn-more/rest-apis/pagination/
//! - Timestamps in searches are matched by calendar day in the workspace's time
//!   zone and `>` starts at the next day (documented for the contacts search, in
//!   the same OpenAPI file, from 2.15 on).
//!
//! Assumed (not documented): parts come oldest first (they are sorted here
//! anyway); a contact's reply to a closed conversation reopens it without an
//! `open` part (the reply counts as the reopen signal); `note_and_reopen` and
//! `assign_and_reopen` reopen like `open`; `default_assignment`,
//! `away_mode_assignment` and `assign_and_*` parts assign like `assignment` when
//! `assigned_to` is set; `total_count` counts every part, so fewer parts than it
//! means the oldest were cut (kept as `parts_truncated` in the evidence). Backfill:
//! the conversations search truncates timestamps to days as the contacts search
//! does (so the filters are widened by two days and the exact range applied
//! here); a `starting_after` cursor stays valid for days (Intercom says nothing of
//! its lifetime; if it is refused, the listing starts over, which is harmless);
//! the search has no result cap.
//!
//! Semantics, as the webhooks: a `close` part is a resolution, AI when Fin's
//! `ai_agent.resolution_state` is an assumed/confirmed resolution and no teammate
//! (author `admin` that is not a configured AI agent) closed it, else by
//! [`ProviderSettings::resolve`] on the closer, tags and `source.type`; a
//! contact's comment is a customer reply; `open` is a reopen; an assignment to a
//! team or to an admin that is not an AI agent is a hand-off.
//!
//! Event keys: webhooks are keyed by the notification id (`notif_…`), which the
//! REST API never shows, so the keys here cannot match them:
//! `api:intercom:<conversation>:<part id>:<kind>` (one part may reopen and assign).
//! `since` is applied here: the API has no filter for one conversation's parts.

use super::http::{ApiHttp, ResetHeader};
use super::{ApiError, ApiSettings, HelpdeskApi, Sight, TicketLook, TicketPage};
use crate::event::{EventKind, Resolver, TicketEvent};
use crate::providers::ProviderSettings;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Requests per minute when `api.requests_per_minute` is not set: far under
/// Intercom's 10,000, since the vendor's other integrations share the app's budget.
pub const REQUESTS_PER_MINUTE: u32 = 600;
/// The US host; EU and AU workspaces set `api.base_url`.
pub const DEFAULT_BASE_URL: &str = "https://api.intercom.io";
/// The API version the shapes here were read from.
pub const API_VERSION: &str = "2.11";

pub struct IntercomApi {
    http: ApiHttp,
    base: String,
    token: String,
    settings: ProviderSettings,
}

pub fn client(api: &ApiSettings, settings: &ProviderSettings) -> Result<IntercomApi, String> {
    if api.token.trim().is_empty() {
        return Err("intercom: api.token (the app's access token) is required".into());
    }
    let base = api.base(DEFAULT_BASE_URL);
    reqwest::Url::parse(&base).map_err(|e| format!("intercom: api.base_url `{base}`: {e}"))?;
    Ok(IntercomApi {
        http: ApiHttp::for_api(api, REQUESTS_PER_MINUTE)?
            .with_reset_header(ResetHeader::UnixTime("x-ratelimit-reset")),
        base,
        token: api.token.clone(),
        settings: settings.clone(),
    })
}

impl IntercomApi {
    /// The request for one conversation (ids go in as one escaped path segment).
    fn request(&self, ticket_id: &str) -> Result<reqwest::RequestBuilder, ApiError> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| ApiError::malformed(format!("base url: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| ApiError::malformed("base url cannot take a path"))?
            .pop_if_empty()
            .push("conversations")
            .push(ticket_id);
        Ok(self
            .http
            .client()
            .get(url)
            .bearer_auth(&self.token)
            .header("Intercom-Version", API_VERSION)
            .header(reqwest::header::ACCEPT, "application/json"))
    }

    async fn fetch(
        &self,
        ticket_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<TicketLook, ApiError> {
        let conversation = self.http.json(self.request(ticket_id)?).await?;
        read(&conversation, ticket_id, since, &self.settings)
    }

    /// One page of `POST /conversations/search` for backfill (see [`search_body`]).
    async fn list(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<TicketPage, ApiError> {
        let starting_after = cursor
            .map(|c| ListCursor::parse(c, since, until))
            .transpose()?;
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| ApiError::malformed(format!("base url: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| ApiError::malformed("base url cannot take a path"))?
            .pop_if_empty()
            .extend(["conversations", "search"]);
        let request = self
            .http
            .client()
            .post(url)
            .bearer_auth(&self.token)
            .header("Intercom-Version", API_VERSION)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&search_body(since, until, starting_after.as_deref()));
        let answer = self.http.json(request).await?;
        read_listing(&answer, since, until, starting_after.as_deref())
    }
}

/// Results a search page asks for: Intercom's maximum.
pub const SEARCH_PAGE_SIZE: u32 = 150;
/// How far the search's time filters are widened on each side. Intercom matches
/// timestamps in searches by calendar day in the workspace's time zone (documented
/// for contacts; conversations share the search engine), and `>` starts at the
/// next day: two days more on each side cover any time zone, and the exact range
/// is applied here to the returned `created_at` / `updated_at`.
const SEARCH_SLACK_SECS: i64 = 2 * 86_400;

/// The search for conversations that may have changed in `[since, until)`:
/// updated at or after `since` (their last update) and created before `until`.
/// Filtering on the *last* update alone (`updated_at < until`) would lose a
/// conversation that changed in the range and again after it.
fn search_body(since: DateTime<Utc>, until: DateTime<Utc>, starting_after: Option<&str>) -> Value {
    let mut pagination = json!({"per_page": SEARCH_PAGE_SIZE});
    if let Some(c) = starting_after {
        pagination["starting_after"] = json!(c);
    }
    json!({
        "query": {"operator": "AND", "value": [
            {"field": "updated_at", "operator": ">", "value": since.timestamp() - SEARCH_SLACK_SECS},
            {"field": "created_at", "operator": "<", "value": until.timestamp() + SEARCH_SLACK_SECS},
        ]},
        "pagination": pagination,
    })
}

/// Our listing cursor: `ic1:<since>:<until>:<Intercom's starting_after>` (Unix
/// seconds), so a cursor is only ever used for the range it was made for.
struct ListCursor;

impl ListCursor {
    const PREFIX: &'static str = "ic1";

    fn make(since: DateTime<Utc>, until: DateTime<Utc>, starting_after: &str) -> String {
        format!(
            "{}:{}:{}:{starting_after}",
            Self::PREFIX,
            since.timestamp(),
            until.timestamp()
        )
    }

    /// Intercom's `starting_after` in a cursor made for this range.
    fn parse(cursor: &str, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<String, ApiError> {
        let mut parts = cursor.splitn(4, ':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Self::PREFIX), Some(s), Some(u), Some(after))
                if !after.is_empty()
                    && s == since.timestamp().to_string()
                    && u == until.timestamp().to_string() =>
            {
                Ok(after.to_string())
            }
            _ => Err(ApiError::malformed(format!(
                "`{cursor}` is not an Intercom listing cursor for this time range"
            ))),
        }
    }
}

/// The ids of a search page in `[since, until)` (created before `until`, last
/// updated at or after `since`), and our cursor for the next page.
fn read_listing(
    answer: &Value,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    asked: Option<&str>,
) -> Result<TicketPage, ApiError> {
    let list = answer
        .get("conversations")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::malformed("the search answer has no conversations"))?;
    let mut ticket_ids = Vec::with_capacity(list.len());
    for c in list {
        let id = text(c, &["id"])
            .ok_or_else(|| ApiError::malformed("a listed conversation has no id"))?;
        let (Some(created), Some(updated)) = (unix(c, &["created_at"]), unix(c, &["updated_at"]))
        else {
            return Err(ApiError::malformed(format!(
                "listed conversation {id} has no created_at or updated_at"
            )));
        };
        if created < until && updated >= since {
            ticket_ids.push(id);
        }
    }
    let next = text(answer, &["pages", "next", "starting_after"]);
    if next.is_some() && next.as_deref() == asked {
        return Err(ApiError::malformed(
            "the search's next starting_after repeats the one asked for",
        ));
    }
    Ok(TicketPage {
        ticket_ids,
        next: next.map(|n| ListCursor::make(since, until, &n)),
        // Counts the widened search: an upper bound, for progress only.
        total: answer.get("total_count").and_then(Value::as_u64),
    })
}

/// One conversation part, as far as verification reads it.
struct Part {
    id: String,
    part_type: String,
    at: DateTime<Utc>,
    author_type: Option<String>,
    author_id: Option<String>,
    assigned_type: Option<String>,
    assigned_id: Option<String>,
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

fn unix(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    DateTime::from_timestamp(cur.as_i64()?, 0)
}

fn parts(conversation: &Value) -> Result<Vec<Part>, ApiError> {
    let Some(list) = conversation
        .pointer("/conversation_parts/conversation_parts")
        .and_then(Value::as_array)
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        let id = text(p, &["id"]).ok_or_else(|| ApiError::malformed("a part has no id"))?;
        let at = unix(p, &["created_at"])
            .ok_or_else(|| ApiError::malformed(format!("part {id} has no created_at")))?;
        out.push(Part {
            part_type: text(p, &["part_type"]).unwrap_or_default(),
            at,
            author_type: text(p, &["author", "type"]),
            author_id: text(p, &["author", "id"]),
            assigned_type: text(p, &["assigned_to", "type"]),
            assigned_id: text(p, &["assigned_to", "id"]),
            id,
        });
    }
    out.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    Ok(out)
}

/// Whether an author type is the customer (Intercom calls contacts users or leads).
fn is_contact(author_type: Option<&str>) -> bool {
    matches!(author_type, Some("user" | "lead" | "contact"))
}

/// What the conversation as a whole says about who resolved it.
struct Context {
    fin_resolved: bool,
    tags: Vec<String>,
    channel: Option<String>,
}

impl Context {
    fn of(conversation: &Value) -> Context {
        Context {
            fin_resolved: conversation
                .pointer("/ai_agent/resolution_state")
                .and_then(Value::as_str)
                .is_some_and(|s| matches!(s, "assumed_resolution" | "confirmed_resolution")),
            tags: conversation
                .pointer("/tags/tags")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.get("name")?.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            channel: text(conversation, &["source", "type"]),
        }
    }

    /// The webhook's rule for a close part.
    fn resolver(&self, part: &Part, s: &ProviderSettings) -> Resolver {
        let closed_by_teammate = part.author_type.as_deref() == Some("admin")
            && !part.author_id.as_deref().is_some_and(|a| s.is_ai_agent(a));
        if self.fin_resolved && !closed_by_teammate {
            Resolver::Ai
        } else {
            s.resolve(
                part.author_id.as_deref(),
                &self.tags,
                self.channel.as_deref(),
            )
        }
    }
}

/// Whether the part hands the conversation to a person: a team, or an admin
/// that is not an AI agent (`nobody_admin` and id `0` are unassignments).
fn hands_off(part: &Part, s: &ProviderSettings) -> bool {
    let Some(id) = part.assigned_id.as_deref().filter(|id| *id != "0") else {
        return false;
    };
    match part.assigned_type.as_deref() {
        Some("team") => true,
        Some("admin") => !s.is_ai_agent(id),
        _ => false,
    }
}

/// The kinds of event one part stands for, in the webhook's terms.
fn kinds(part: &Part, s: &ProviderSettings) -> Vec<EventKind> {
    let mut kinds = Vec::new();
    match part.part_type.as_str() {
        "close" => kinds.push(EventKind::Resolved),
        "open" | "assign_and_reopen" | "note_and_reopen" => kinds.push(EventKind::Reopened),
        "comment" if is_contact(part.author_type.as_deref()) => {
            kinds.push(EventKind::CustomerReplied)
        }
        _ => {}
    }
    if hands_off(part, s) {
        kinds.push(EventKind::HandedOffToHuman);
    }
    kinds
}

/// Normalize one conversation answer.
fn read(
    conversation: &Value,
    ticket_id: &str,
    since: Option<DateTime<Utc>>,
    s: &ProviderSettings,
) -> Result<TicketLook, ApiError> {
    let id = text(conversation, &["id"])
        .ok_or_else(|| ApiError::malformed("the answer has no conversation id"))?;
    if id != ticket_id {
        return Err(ApiError::malformed(
            "the answer is about another conversation",
        ));
    }
    let status = text(conversation, &["state"])
        .or_else(|| {
            conversation
                .get("open")
                .and_then(Value::as_bool)
                .map(|open| if open { "open" } else { "closed" }.to_string())
        })
        .ok_or_else(|| ApiError::malformed("the conversation has no state"))?;
    let all = parts(conversation)?;
    let ctx = Context::of(conversation);
    let mut events = Vec::new();
    for part in all.iter().filter(|p| since.is_none_or(|t| p.at >= t)) {
        for kind in kinds(part, s) {
            events.push(TicketEvent {
                event_key: format!("api:intercom:{id}:{}:{kind}", part.id),
                ticket_id: id.clone(),
                kind,
                occurred_at: part.at,
                resolver: (kind == EventKind::Resolved).then(|| ctx.resolver(part, s)),
                actor_id: match kind {
                    EventKind::HandedOffToHuman => part.assigned_id.clone(),
                    _ => part.author_id.clone(),
                },
                tags: ctx.tags.clone(),
                channel: ctx.channel.clone(),
            });
        }
    }
    events.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let last_customer_message_at = unix(conversation, &["statistics", "last_contact_reply_at"])
        .into_iter()
        .chain(
            all.iter()
                .filter(|p| p.part_type == "comment" && is_contact(p.author_type.as_deref()))
                .map(|p| p.at),
        )
        .max();
    let total = conversation
        .pointer("/conversation_parts/total_count")
        .and_then(Value::as_u64);
    let answer = json!({
        "conversation_id": id,
        "state": status,
        "updated_at": unix(conversation, &["updated_at"]),
        "last_close_at": unix(conversation, &["statistics", "last_close_at"]),
        "last_contact_reply_at": last_customer_message_at,
        "ai_resolution_state": conversation.pointer("/ai_agent/resolution_state"),
        "parts_returned": all.len(),
        "parts_total": total,
        "parts_truncated": total.is_some_and(|t| t > all.len() as u64),
        "events": events.iter().map(|e| json!({"id": e.event_key, "kind": e.kind, "at": e.occurred_at, "resolver": e.resolver})).collect::<Vec<_>>(),
    });
    Ok(TicketLook {
        resolved: status == "closed",
        status,
        updated_at: unix(conversation, &["updated_at"]),
        last_customer_message_at,
        events,
        answer,
    })
}

impl HelpdeskApi for IntercomApi {
    fn provider(&self) -> &'static str {
        "intercom"
    }

    fn sight(&self) -> Sight {
        // The 500 most recent parts: closes, opens, contact comments, assignments.
        Sight::EVERYTHING
    }

    super::look_and_list_by_fetch_and_list!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProviderSettings {
        ProviderSettings {
            ai_agent_ids: vec!["814860".into()],
            ..Default::default()
        }
    }

    fn conversation(state: &str, parts: Value) -> Value {
        json!({
            "type": "conversation", "id": "471", "state": state, "open": state != "closed",
            "updated_at": 1_734_600_000,
            "source": {"type": "conversation", "author": {"type": "user", "id": "c1"}, "body": "<p>secret</p>"},
            "tags": {"type": "tag.list", "tags": [{"id": "1", "name": "billing"}]},
            "statistics": {"last_contact_reply_at": 1_734_500_000},
            "conversation_parts": {"type": "conversation_part.list", "conversation_parts": parts, "total_count": 3}
        })
    }

    #[test]
    fn snoozed_is_not_resolved_and_bodies_stay_out_of_the_evidence() {
        let c = conversation(
            "snoozed",
            json!([{"id": "9", "part_type": "snoozed", "created_at": 1_734_500_100,
                    "author": {"type": "admin", "id": "5", "name": "Ann", "email": "ann@x.example"},
                    "body": "<p>private words</p>"}]),
        );
        let look = read(&c, "471", None, &settings()).expect("reads");
        assert!(!look.resolved);
        assert_eq!(look.status, "snoozed");
        assert!(look.events.is_empty());
        let evidence = look.answer.to_string();
        for secret in ["secret", "private", "Ann", "ann@"] {
            assert!(!evidence.contains(secret), "{evidence}");
        }
        assert_eq!(look.answer["parts_truncated"], json!(true));
    }

    #[test]
    fn a_teammate_close_is_human_even_with_a_fin_resolution_state() {
        let mut c = conversation(
            "closed",
            json!([
                {"id": "1", "part_type": "close", "created_at": 1_734_500_200, "author": {"type": "bot", "id": "814860"}},
                {"id": "2", "part_type": "comment", "created_at": 1_734_500_300, "author": {"type": "lead", "id": "c1"}},
                {"id": "3", "part_type": "close", "created_at": 1_734_500_400, "author": {"type": "admin", "id": "42"}}
            ]),
        );
        c["ai_agent"] = json!({"resolution_state": "assumed_resolution"});
        let look = read(&c, "471", None, &settings()).expect("reads");
        let kinds: Vec<_> = look.events.iter().map(|e| (e.kind, e.resolver)).collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Resolved, Some(Resolver::Ai)),
                (EventKind::CustomerReplied, None),
                (EventKind::Resolved, Some(Resolver::Human)),
            ]
        );
        assert_eq!(look.events[0].event_key, "api:intercom:471:1:resolved");
        assert_eq!(look.events[0].tags, vec!["billing".to_string()]);
        assert_eq!(
            look.last_customer_message_at.map(|t| t.timestamp()),
            Some(1_734_500_300)
        );
    }

    #[test]
    fn assignments_to_teams_and_people_hand_off_and_to_the_ai_or_nobody_do_not() {
        let c = conversation(
            "open",
            json!([
                {"id": "1", "part_type": "assignment", "created_at": 10, "author": {"type": "bot", "id": "814860"}, "assigned_to": {"type": "admin", "id": "814860"}},
                {"id": "2", "part_type": "assign_and_reopen", "created_at": 20, "author": {"type": "admin", "id": "1"}, "assigned_to": {"type": "nobody_admin", "id": null}},
                {"id": "3", "part_type": "default_assignment", "created_at": 30, "author": {"type": "bot", "id": "814860"}, "assigned_to": {"type": "team", "id": "5"}},
                {"id": "4", "part_type": "assignment", "created_at": 40, "author": {"type": "admin", "id": "1"}, "assigned_to": {"type": "admin", "id": "77"}}
            ]),
        );
        let look = read(&c, "471", None, &settings()).expect("reads");
        let kinds: Vec<_> = look
            .events
            .iter()
            .map(|e| (e.kind, e.occurred_at.timestamp()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Reopened, 20),
                (EventKind::HandedOffToHuman, 30),
                (EventKind::HandedOffToHuman, 40),
            ]
        );
        assert_eq!(look.events[2].actor_id.as_deref(), Some("77"));
    }

    #[test]
    fn another_conversation_or_a_shapeless_answer_is_malformed() {
        let c = conversation("open", json!([]));
        assert!(matches!(
            read(&c, "472", None, &settings()),
            Err(ApiError::Malformed { .. })
        ));
        assert!(matches!(
            read(&json!({"id": "471"}), "471", None, &settings()),
            Err(ApiError::Malformed { .. })
        ));
    }

    #[test]
    fn the_listing_search_is_widened_and_the_range_applied_here() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).expect("time");
        let (since, until) = (t(1_000_000), t(2_000_000));
        let body = search_body(since, until, Some("WzE1"));
        assert_eq!(
            body["query"]["value"],
            json!([
                {"field": "updated_at", "operator": ">", "value": 1_000_000 - 172_800},
                {"field": "created_at", "operator": "<", "value": 2_000_000 + 172_800},
            ])
        );
        assert_eq!(
            body["pagination"],
            json!({"per_page": 150, "starting_after": "WzE1"})
        );
        let answer = json!({"conversations": [
            {"id": "1", "created_at": 900_000, "updated_at": 1_000_000},
            {"id": "2", "created_at": 900_000, "updated_at": 999_999},
            {"id": "3", "created_at": 2_000_000, "updated_at": 2_000_001},
            {"id": "4", "created_at": 1_999_999, "updated_at": 3_000_000}
        ], "total_count": 9, "pages": {"next": {"starting_after": "WzE2"}}});
        let page = read_listing(&answer, since, until, Some("WzE1")).expect("page");
        assert_eq!(page.ticket_ids, vec!["1".to_string(), "4".to_string()]);
        let next = page.next.expect("next");
        assert_eq!(next, "ic1:1000000:2000000:WzE2");
        assert_eq!(
            ListCursor::parse(&next, since, until).ok().as_deref(),
            Some("WzE2")
        );
        // The same starting_after again would list forever.
        assert!(matches!(
            read_listing(&answer, since, until, Some("WzE2")),
            Err(ApiError::Malformed { .. })
        ));
    }

    #[test]
    fn the_request_carries_bearer_auth_and_the_api_version() {
        let api = client(
            &ApiSettings {
                token: "tok-123456789".into(),
                base_url: Some("https://api.eu.intercom.io/".into()),
                ..Default::default()
            },
            &settings(),
        )
        .expect("client");
        let req = api
            .request("12/34")
            .expect("request")
            .build()
            .expect("builds");
        assert_eq!(
            req.url().as_str(),
            "https://api.eu.intercom.io/conversations/12%2F34"
        );
        assert_eq!(
            req.headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer tok-123456789")
        );
        assert_eq!(
            req.headers()
                .get("intercom-version")
                .and_then(|v| v.to_str().ok()),
            Some(API_VERSION)
        );
    }
}
