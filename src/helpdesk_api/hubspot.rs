//! HubSpot's CRM API: one ticket object and the history of its pipeline stage.
//!
//! One request (Bearer `api.token`, a private app's access token):
//! `GET <base>/crm/v3/objects/tickets/{id}?properties=hs_pipeline_stage,hs_pipeline&propertiesWithHistory=hs_pipeline_stage&archived=false`.
//!
//! Normalization follows the webhook parser ([`crate::providers::hubspot`]): a
//! stage in `closed_stage_ids` is resolved; a stage in `open_stage_ids` (or,
//! when that list is empty, any stage not closed) reached **from a closed
//! stage** is reopened (the webhook counts every later stage change too; they
//! change nothing once the first one reopened). The resolver is AI when the
//! change's `sourceId` (`userId:<id>`, either form) or `updatedByUserId` is in
//! `ai_agent_ids`, or its `sourceType` (HubSpot's change source: `CRM_UI`,
//! `AUTOMATION_PLATFORM`, `INTEGRATION`…) is in `ai_channels`.
//!
//! Keys: the webhook's key hashes HubSpot's `eventId`, which property history
//! does not carry, so the two can never match; API keys are
//! `api:hubspot:<ticket>:hs_pipeline_stage:<ms>:<stage>` (a stage change seen
//! both ways is two events of the same kind at the same time: the state machine
//! reads the same story).
//!
//! Found (sources):
//! - `GET /crm/v3/objects/tickets/{ticketId}` with `properties`,
//!   `propertiesWithHistory` ("the properties to be returned along with their
//!   history of previous values"), `archived`; scope `tickets`; answer
//!   `{id, properties: {name: value}, propertiesWithHistory: {name: [{value,
//!   timestamp, sourceType, sourceId?, sourceLabel?, updatedByUserId?}]},
//!   createdAt, updatedAt, archived}`. A single-object read is not paginated.
//!   https://developers.hubspot.com/docs/api-reference/crm-tickets-v3/guide,
//!   https://github.com/HubSpot/hubspot-api-nodejs (codegen/crm/tickets:
//!   `SimplePublicObjectWithAssociations`, `ValueWithTimestamp`, `BasicApi.getById`)
//! - `hs_pipeline_stage` is the ticket's status (internal stage ids, per
//!   pipeline). https://developers.hubspot.com/docs/api/crm/tickets
//! - Errors: `{status: "error", message, correlationId, category, context?}`
//!   (`ModelError` in the same SDK).
//! - Limits (per account, shared by every app): private apps 100 requests per
//!   10 s (Free/Starter), 190 (Professional/Enterprise), daily 250 000 to
//!   1 000 000; 429 when exceeded.
//!   https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines,
//!   https://developers.hubspot.com/changelog/increasing-our-api-limits
//!
//! Assumed (not documented): the history lists every change of the stage
//! (newest first; sorted here anyway); `sourceType` uses the webhook
//! `changeSource` vocabulary; a 429 may carry `Retry-After` (honoured when it
//! does); an unknown ticket answers 404 (`category: OBJECT_NOT_FOUND`). The
//! API cannot show customer messages (they are associated emails or
//! conversation threads, other objects and scopes) nor hand-offs (the webhook
//! integration does not count owner changes either): [`Sight`] says so.

use super::http::ApiHttp;
use super::{ApiError, ApiFuture, ApiSettings, HelpdeskApi, Sight, TicketLook};
use crate::event::{EventKind, Resolver, TicketEvent};
use crate::providers::ProviderSettings;
use chrono::{DateTime, Utc};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Requests per minute when `api.requests_per_minute` is not set: a sixth of
/// the smallest tier's 100 per 10 s, which every app of the account shares.
pub const REQUESTS_PER_MINUTE: u32 = 100;
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
pub const STAGE: &str = "hs_pipeline_stage";

pub struct HubSpotApi {
    http: ApiHttp,
    base: Url,
    token: String,
    settings: ProviderSettings,
}

pub fn client(api: &ApiSettings, settings: &ProviderSettings) -> Result<HubSpotApi, String> {
    if api.token.trim().is_empty() {
        return Err("hubspot: api.token (a private app access token) is required".into());
    }
    if !api.refresh_token.is_empty() || api.token_url.is_some() {
        return Err(
            "hubspot: OAuth refresh is not supported; use a private app access token in api.token"
                .into(),
        );
    }
    if settings
        .closed_stage_ids
        .iter()
        .all(|s| s.trim().is_empty())
    {
        return Err("hubspot: verification needs closed_stage_ids".into());
    }
    let base = Url::parse(&api.base(DEFAULT_BASE_URL))
        .map_err(|e| format!("hubspot: api.base_url is not a URL: {e}"))?;
    Ok(HubSpotApi {
        http: ApiHttp::for_api(api, REQUESTS_PER_MINUTE)?,
        base,
        token: api.token.clone(),
        settings: settings.clone(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ticket {
    id: String,
    #[serde(default)]
    properties: HashMap<String, Option<String>>,
    #[serde(default)]
    properties_with_history: HashMap<String, Vec<Change>>,
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Change {
    value: String,
    timestamp: DateTime<Utc>,
    #[serde(default)]
    source_type: Option<String>,
    #[serde(default)]
    source_id: Option<String>,
    #[serde(default)]
    updated_by_user_id: Option<i64>,
}

fn is_closed(s: &ProviderSettings, stage: &str) -> bool {
    s.closed_stage_ids.iter().any(|c| c == stage)
}

fn counts_as_open(s: &ProviderSettings, stage: &str) -> bool {
    !is_closed(s, stage)
        && (s.open_stage_ids.is_empty() || s.open_stage_ids.iter().any(|o| o == stage))
}

/// AI when the change's source or user is an AI agent, or its source type is an AI channel.
fn resolver(s: &ProviderSettings, c: &Change) -> Resolver {
    let by_source = c.source_id.as_deref().is_some_and(|src| {
        s.is_ai_agent(src) || src.split_once(':').is_some_and(|(_, id)| s.is_ai_agent(id))
    });
    let by_user = c
        .updated_by_user_id
        .is_some_and(|u| s.is_ai_agent(&u.to_string()));
    if by_source || by_user {
        Resolver::Ai
    } else {
        s.resolve(None, &[], c.source_type.as_deref())
    }
}

/// The stage history, oldest first, as events (before `since` dropped).
fn stage_events(
    ticket_id: &str,
    history: &[Change],
    since: Option<DateTime<Utc>>,
    s: &ProviderSettings,
) -> Vec<TicketEvent> {
    let mut changes = history.to_vec();
    changes.sort_by_key(|c| c.timestamp);
    let mut was_closed = false;
    let mut out = Vec::new();
    for c in &changes {
        // A stage neither closed nor counted as open leaves the ticket as it was.
        let kind = if is_closed(s, &c.value) {
            let kind = Some(EventKind::Resolved);
            was_closed = true;
            kind
        } else if counts_as_open(s, &c.value) {
            let kind = was_closed.then_some(EventKind::Reopened);
            was_closed = false;
            kind
        } else {
            None
        };
        let Some(kind) = kind else { continue };
        if since.is_some_and(|t| c.timestamp < t) {
            continue;
        }
        let actor = c
            .source_id
            .clone()
            .or_else(|| c.updated_by_user_id.map(|u| format!("userId:{u}")));
        out.push(TicketEvent {
            event_key: format!(
                "api:hubspot:{ticket_id}:{STAGE}:{}:{}",
                c.timestamp.timestamp_millis(),
                c.value
            ),
            ticket_id: ticket_id.to_string(),
            kind,
            occurred_at: c.timestamp,
            resolver: (kind == EventKind::Resolved).then(|| resolver(s, c)),
            actor_id: actor,
            tags: Vec::new(),
            channel: c.source_type.clone(),
        });
    }
    out
}

fn look_from(
    body: &Value,
    ticket_id: &str,
    since: Option<DateTime<Utc>>,
    s: &ProviderSettings,
) -> Result<TicketLook, ApiError> {
    let t: Ticket = serde_json::from_value(body.clone())
        .map_err(|e| ApiError::malformed(format!("hubspot ticket: {e}")))?;
    if t.id != ticket_id {
        return Err(ApiError::malformed("hubspot answered about another ticket"));
    }
    let status = t
        .properties
        .get(STAGE)
        .cloned()
        .flatten()
        .ok_or_else(|| ApiError::malformed("hubspot ticket has no hs_pipeline_stage"))?;
    let history = t
        .properties_with_history
        .get(STAGE)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let events = stage_events(ticket_id, history, since, s);
    let answer = json!({
        "ticket_id": t.id,
        "stage": status,
        "pipeline": t.properties.get("hs_pipeline").cloned().flatten(),
        "updated_at": t.updated_at,
        "stage_changes_read": history.len(),
        "events": events.iter().map(|e| json!({
            "id": e.event_key, "kind": e.kind, "at": e.occurred_at,
            "actor": e.actor_id, "source_type": e.channel, "resolver": e.resolver,
        })).collect::<Vec<_>>(),
    });
    Ok(TicketLook {
        resolved: is_closed(s, &status),
        status,
        updated_at: t.updated_at,
        last_customer_message_at: None,
        events,
        answer,
    })
}

impl HubSpotApi {
    async fn fetch(
        &self,
        ticket_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<TicketLook, ApiError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| ApiError::malformed("hubspot: api.base_url cannot have paths"))?
            .pop_if_empty()
            .extend(["crm", "v3", "objects", "tickets", ticket_id]);
        url.query_pairs_mut()
            .append_pair("properties", &format!("{STAGE},hs_pipeline"))
            .append_pair("propertiesWithHistory", STAGE)
            .append_pair("archived", "false");
        let request = self.http.client().get(url).bearer_auth(&self.token);
        let body = self.http.json(request).await?;
        look_from(&body, ticket_id, since, &self.settings)
    }
}

impl HelpdeskApi for HubSpotApi {
    fn provider(&self) -> &'static str {
        "hubspot"
    }

    fn sight(&self) -> Sight {
        Sight {
            status_history: true,
            customer_messages: false,
            assignments: false,
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
            closed_stage_ids: vec!["4".into()],
            ai_agent_ids: vec!["76023669".into()],
            ai_channels: vec!["INTEGRATION".into()],
            ..Default::default()
        }
    }

    fn body(history: Value, stage: &str) -> Value {
        json!({"id": "11", "properties": {"hs_pipeline_stage": stage, "hs_pipeline": "0"},
               "propertiesWithHistory": {"hs_pipeline_stage": history},
               "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T09:00:00Z",
               "archived": false})
    }

    #[test]
    fn stage_history_becomes_resolutions_and_reopens() {
        let history = json!([
            {"value": "4", "timestamp": "2026-01-01T09:00:00Z", "sourceType": "CRM_UI", "sourceId": "userId:1", "updatedByUserId": 1},
            {"value": "3", "timestamp": "2026-01-01T07:00:00Z", "sourceType": "CRM_UI"},
            {"value": "2", "timestamp": "2026-01-01T06:00:00Z", "sourceType": "CRM_UI", "sourceId": "userId:1"},
            {"value": "4", "timestamp": "2026-01-01T01:00:00Z", "sourceType": "CRM_UI", "sourceId": "userId:76023669"},
            {"value": "1", "timestamp": "2026-01-01T00:00:00Z", "sourceType": "CRM_UI"}
        ]);
        let look = look_from(&body(history.clone(), "4"), "11", None, &settings()).expect("look");
        assert!(look.resolved);
        let kinds: Vec<_> = look.events.iter().map(|e| (e.kind, e.resolver)).collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Resolved, Some(Resolver::Ai)),
                (EventKind::Reopened, None),
                (EventKind::Resolved, Some(Resolver::Human)),
            ]
        );
        assert!(look
            .events
            .iter()
            .all(|e| e.event_key.starts_with("api:hubspot:11:")));
        let since = "2026-01-01T05:00:00Z".parse().ok();
        let later = look_from(&body(history, "4"), "11", since, &settings()).expect("look");
        assert_eq!(later.events.len(), 2);
    }

    #[test]
    fn an_ai_channel_or_user_id_makes_the_resolver_ai() {
        let history = json!([
            {"value": "4", "timestamp": "2026-01-01T01:00:00Z", "sourceType": "INTEGRATION"},
        ]);
        let look = look_from(&body(history, "4"), "11", None, &settings()).expect("look");
        assert_eq!(look.events[0].resolver, Some(Resolver::Ai));
        let history = json!([
            {"value": "4", "timestamp": "2026-01-01T01:00:00Z", "sourceType": "CRM_UI", "updatedByUserId": 76023669},
        ]);
        let look = look_from(&body(history, "4"), "11", None, &settings()).expect("look");
        assert_eq!(look.events[0].resolver, Some(Resolver::Ai));
    }

    #[test]
    fn open_stage_ids_limit_what_reopens() {
        let mut s = settings();
        s.open_stage_ids = vec!["2".into()];
        let history = json!([
            {"value": "4", "timestamp": "2026-01-01T01:00:00Z", "sourceType": "CRM_UI"},
            {"value": "5", "timestamp": "2026-01-01T02:00:00Z", "sourceType": "CRM_UI"},
            {"value": "2", "timestamp": "2026-01-01T03:00:00Z", "sourceType": "CRM_UI"},
        ]);
        let look = look_from(&body(history, "2"), "11", None, &s).expect("look");
        assert!(!look.resolved);
        let kinds: Vec<_> = look
            .events
            .iter()
            .map(|e| (e.kind, e.occurred_at.timestamp() % 86400))
            .collect();
        assert_eq!(
            kinds,
            vec![(EventKind::Resolved, 3600), (EventKind::Reopened, 3 * 3600)]
        );
    }

    #[test]
    fn an_answer_about_another_ticket_or_without_a_stage_is_malformed() {
        assert!(look_from(&body(json!([]), "4"), "12", None, &settings()).is_err());
        let mut b = body(json!([]), "4");
        b["properties"] = json!({});
        assert!(look_from(&b, "11", None, &settings()).is_err());
    }
}
