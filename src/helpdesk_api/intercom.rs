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
//!
//! Assumed (not documented): parts come oldest first (they are sorted here
//! anyway); a contact's reply to a closed conversation reopens it without an
//! `open` part (the reply counts as the reopen signal); `note_and_reopen` and
//! `assign_and_reopen` reopen like `open`; `default_assignment`,
//! `away_mode_assignment` and `assign_and_*` parts assign like `assignment` when
//! `assigned_to` is set; `total_count` counts every part, so fewer parts than it
//! means the oldest were cut (kept as `parts_truncated` in the evidence).
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
use super::{ApiError, ApiFuture, ApiSettings, HelpdeskApi, Sight, TicketLook};
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
        Sight {
            status_history: true,
            customer_messages: true,
            assignments: true,
        }
    }

    fn look<'a>(
        &'a self,
        ticket_id: &'a str,
        since: Option<DateTime<Utc>>,
    ) -> ApiFuture<'a, TicketLook> {
        Box::pin(self.fetch(ticket_id, since))
    }
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
