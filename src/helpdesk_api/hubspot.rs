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
//! Backfill ([`HelpdeskApi::changed_tickets`]) searches:
//! `POST <base>/crm/v3/objects/tickets/search` with `hs_lastmodifieddate GTE
//! <since>` AND `createdate LT <until>`, sorted by `hs_lastmodifieddate`
//! ascending, 200 a page. HubSpot only knows a ticket's *last* change, so
//! `hs_lastmodifieddate < until` would drop a ticket changed in the range and again
//! later: the listing is the tickets created before `until` and changed since
//! `since` (a superset; backfill reads each history by time anyway). The cursor
//! is keyset, `hubspot:<ms>:<offset>`: the next page searches again from the last
//! `hs_lastmodifieddate` seen (its ties listed again, harmlessly), so it stays
//! valid for days, a ticket modified during the listing moves later instead of
//! shifting offsets past an unseen one, and no search goes near HubSpot's cap of
//! 10 000 results; only a page whose tickets all share one millisecond advances by
//! HubSpot's offset (`after`). `total` is given on the first page only (later
//! searches count what is left).
//!
//! Found (sources):
//! - `POST /crm/v3/objects/tickets/search` (scope `tickets`): body
//!   `{filterGroups: [{filters: [{propertyName, operator, value}]}], sorts,
//!   properties, limit, after}`, answer `{total, results: [{id, properties,
//!   createdAt, updatedAt, archived}], paging?: {next: {after, link}}}`; date
//!   values in Unix milliseconds; at most 200 a page and 10 000 results a search
//!   (paging further is a 400); 4 search requests a second per token, on top of
//!   the account's limits; search results can lag a change by a few moments.
//!   https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm,
//!   https://developers.hubspot.com/changelog/crm-search-api-rate-limit-increase,
//!   SDK codegen/crm/tickets (`PublicObjectSearchRequest`,
//!   `CollectionResponseWithTotalSimplePublicObjectForwardPaging`)
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
//! integration does not count owner changes either): [`Sight`] says so. For
//! backfill: `after` is sent as a string of digits (the SDKs have typed it as a
//! string and as a number); ties in `hs_lastmodifieddate` come back in a stable
//! order across pages of one search.

use super::http::ApiHttp;
use super::{ApiError, ApiSettings, HelpdeskApi, Sight, TicketLook, TicketPage};
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
/// A ticket's last change (the tickets' name for it; contacts use `lastmodifieddate`).
pub const LAST_MODIFIED: &str = "hs_lastmodifieddate";
/// Tickets per search page (HubSpot's maximum).
pub const SEARCH_LIMIT: u32 = 200;
/// Results one search can page through (HubSpot's cap).
pub const SEARCH_RESULT_CAP: u64 = 10_000;

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

/// Where a page of the search starts: `hs_lastmodifieddate >= from_ms`, and how
/// many of those results were already read (HubSpot's `after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub from_ms: i64,
    pub offset: u64,
}

impl ListCursor {
    pub fn parse(text: &str) -> Result<ListCursor, ApiError> {
        let bad = || ApiError::malformed(format!("hubspot: not a listing cursor: `{text}`"));
        let (ms, offset) = text
            .strip_prefix("hubspot:")
            .and_then(|r| r.split_once(':'))
            .ok_or_else(bad)?;
        Ok(ListCursor {
            from_ms: ms.parse().map_err(|_| bad())?,
            offset: offset.parse().map_err(|_| bad())?,
        })
    }

    pub fn text(&self) -> String {
        format!("hubspot:{}:{}", self.from_ms, self.offset)
    }
}

/// The search request for one page.
fn search_body(c: ListCursor, until: DateTime<Utc>) -> Value {
    let mut body = json!({
        "filterGroups": [{"filters": [
            {"propertyName": LAST_MODIFIED, "operator": "GTE", "value": c.from_ms.to_string()},
            {"propertyName": "createdate", "operator": "LT",
             "value": until.timestamp_millis().to_string()},
        ]}],
        "sorts": [{"propertyName": LAST_MODIFIED, "direction": "ASCENDING"}],
        "properties": [LAST_MODIFIED, "createdate"],
        "limit": SEARCH_LIMIT,
    });
    if c.offset > 0 {
        body["after"] = json!(c.offset.to_string());
    }
    body
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Found {
    id: String,
    #[serde(default)]
    properties: HashMap<String, Option<String>>,
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
}

impl Found {
    /// `hs_lastmodifieddate` (ISO 8601 or Unix ms), else `updatedAt`.
    fn last_modified(&self) -> Option<DateTime<Utc>> {
        let text = self.properties.get(LAST_MODIFIED).cloned().flatten();
        text.and_then(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|d| d.with_timezone(&Utc))
                .ok()
                .or_else(|| t.parse().ok().and_then(DateTime::from_timestamp_millis))
        })
        .or(self.updated_at)
    }
}

/// One search answer as a page of the listing.
fn list_page(body: &Value, asked: ListCursor, first: bool) -> Result<TicketPage, ApiError> {
    let results: Vec<Found> = serde_json::from_value(
        body.get("results")
            .cloned()
            .ok_or_else(|| ApiError::malformed("hubspot search: no `results`"))?,
    )
    .map_err(|e| ApiError::malformed(format!("hubspot search: {e}")))?;
    let more = body
        .pointer("/paging/next/after")
        .is_some_and(|a| !a.is_null());
    let mut last_ms = None;
    for r in &results {
        let ms = r
            .last_modified()
            .ok_or_else(|| ApiError::malformed("hubspot search: a ticket without a last change"))?
            .timestamp_millis();
        if ms < asked.from_ms || last_ms.is_some_and(|l| ms < l) {
            return Err(ApiError::malformed(
                "hubspot search: results not in hs_lastmodifieddate order",
            ));
        }
        last_ms = Some(ms);
    }
    let next = match (more, last_ms) {
        (false, _) => None,
        (true, None) => {
            return Err(ApiError::malformed(
                "hubspot search: an empty page with a next page",
            ))
        }
        // All on the cursor's millisecond: page on with HubSpot's offset.
        (true, Some(ms)) if ms == asked.from_ms => {
            let offset = asked.offset + results.len() as u64;
            if offset >= SEARCH_RESULT_CAP {
                return Err(ApiError::malformed(format!(
                    "hubspot: more than {SEARCH_RESULT_CAP} tickets last changed at one millisecond"
                )));
            }
            Some(ListCursor {
                from_ms: ms,
                offset,
            })
        }
        (true, Some(ms)) => Some(ListCursor {
            from_ms: ms,
            offset: 0,
        }),
    };
    if next == Some(asked) {
        return Err(ApiError::malformed(
            "hubspot: the ticket search does not advance (same cursor)",
        ));
    }
    Ok(TicketPage {
        ticket_ids: results.into_iter().map(|r| r.id).collect(),
        next: next.map(|c| c.text()),
        total: if first {
            body.get("total").and_then(Value::as_u64)
        } else {
            None
        },
    })
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

    /// One page of the ticket search (backfill).
    async fn list(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<TicketPage, ApiError> {
        let asked = match cursor {
            Some(c) => ListCursor::parse(c)?,
            None => ListCursor {
                from_ms: since.timestamp_millis(),
                offset: 0,
            },
        };
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| ApiError::malformed("hubspot: api.base_url cannot have paths"))?
            .pop_if_empty()
            .extend(["crm", "v3", "objects", "tickets", "search"]);
        let request = self
            .http
            .client()
            .post(url)
            .bearer_auth(&self.token)
            .json(&search_body(asked, until));
        let body = self.http.json(request).await?;
        list_page(&body, asked, cursor.is_none())
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

    super::look_and_list_by_fetch_and_list!();
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

    fn found(id: &str, modified: &str) -> Value {
        json!({"id": id, "properties": {"hs_lastmodifieddate": modified, "createdate": null},
               "updatedAt": modified, "archived": false})
    }

    fn search_answer(results: Vec<Value>, more: bool) -> Value {
        let mut v = json!({"total": 7, "results": results});
        if more {
            v["paging"] = json!({"next": {"after": "2", "link": "?after=2"}});
        }
        v
    }

    #[test]
    fn listing_cursors_round_trip_and_reject_garbage() {
        let c = ListCursor {
            from_ms: 1_767_225_600_000,
            offset: 400,
        };
        assert_eq!(ListCursor::parse(&c.text()).expect("parses"), c);
        for bad in [
            "",
            "hubspot:",
            "hubspot:1",
            "hubspot:x:0",
            "front:1:0",
            "hubspot:1:-2",
        ] {
            assert!(ListCursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_next_page_starts_at_the_last_change_seen() {
        let asked = ListCursor {
            from_ms: 1_000,
            offset: 0,
        };
        let answer = search_answer(
            vec![
                found("1", "1970-01-01T00:00:01.000Z"),
                found("2", "1970-01-01T00:00:02.500Z"),
            ],
            true,
        );
        let page = list_page(&answer, asked, true).expect("page");
        assert_eq!(page.ticket_ids, vec!["1", "2"]);
        assert_eq!(page.next.as_deref(), Some("hubspot:2500:0"));
        assert_eq!(page.total, Some(7));
        // Later pages count what is left: no total.
        assert_eq!(list_page(&answer, asked, false).expect("page").total, None);
        let last = search_answer(vec![found("3", "1970-01-01T00:00:03Z")], false);
        assert_eq!(list_page(&last, asked, false).expect("page").next, None);
    }

    #[test]
    fn a_page_in_one_millisecond_pages_by_offset_and_disorder_is_malformed() {
        let asked = ListCursor {
            from_ms: 1_000,
            offset: 2,
        };
        let answer = search_answer(
            vec![
                found("1", "1970-01-01T00:00:01Z"),
                found("2", "1970-01-01T00:00:01Z"),
            ],
            true,
        );
        let page = list_page(&answer, asked, false).expect("page");
        assert_eq!(page.next.as_deref(), Some("hubspot:1000:4"));
        let disorder = search_answer(
            vec![
                found("1", "1970-01-01T00:00:03Z"),
                found("2", "1970-01-01T00:00:02Z"),
            ],
            true,
        );
        assert!(list_page(&disorder, asked, false).is_err());
        let empty_but_more = search_answer(vec![], true);
        assert!(list_page(&empty_but_more, asked, false).is_err());
    }

    #[test]
    fn the_search_asks_for_changes_since_and_creations_before_until() {
        let until = DateTime::from_timestamp(2, 0).expect("t");
        let body = search_body(
            ListCursor {
                from_ms: 1_000,
                offset: 0,
            },
            until,
        );
        assert_eq!(
            body["filterGroups"][0]["filters"],
            json!([
                {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1000"},
                {"propertyName": "createdate", "operator": "LT", "value": "2000"},
            ])
        );
        assert!(body.get("after").is_none());
        let body = search_body(
            ListCursor {
                from_ms: 1_000,
                offset: 200,
            },
            until,
        );
        assert_eq!(body["after"], json!("200"));
    }
}
