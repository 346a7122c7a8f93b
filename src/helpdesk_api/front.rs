//! Front's Core API: one conversation and its events.
//!
//! Requests (Bearer `api.token`, an API token or an OAuth access token):
//! 1. `GET <base>/conversations/{id}`: the current `status` (`archived` is
//!    resolved, as an `archive` webhook is), `tags`, `updated_at`;
//! 2. `GET <base>/conversations/{id}/events?limit=100`, then each
//!    `_pagination.next` URL until it is `null` (at most [`MAX_PAGES`] pages).
//!
//! Events are normalized by the webhook parser itself
//! ([`crate::providers::front::Front`]): `archive` → resolved (resolver from the
//! archiving teammate/rule id and the conversation's tags), `reopen` and
//! `reminder` → reopened, `inbound` → customer replied, `assign` to a teammate
//! who is not an AI agent → hand-off. The `event_key` is Front's event `id`
//! (`evt_…`), the key the webhook of the same event carries: an event seen both
//! ways counts once.
//!
//! Backfill ([`HelpdeskApi::changed_tickets`]) lists the company's events:
//! `GET <base>/events?q[after]=<s>&q[before]=<s>&q[types]=inbound&…&sort_by=created_at&sort_order=asc&limit=15`
//! (times in seconds with milliseconds), and returns the conversation ids of the
//! events in `[since, until)` (the `cnv_…` ids webhooks carry). Only the event
//! types the webhook parser reads, plus `outbound` (a conversation an agent
//! started), are asked for: tags, comments or moves alone change nothing billed.
//! The cursor ([`ListCursor`]) is time-based, `front:<q[after] in ms>`: the next
//! page asks again from 1 ms before the last event seen (so events sharing that
//! millisecond are listed again, harmlessly, rather than skipped), which stays
//! valid for days. Only when a page cannot advance the time (all its events in
//! one millisecond, or an empty page with a next link) does it carry Front's
//! `page_token` as well (`front:<ms>:<token>`), whose lifetime Front does not
//! document.
//!
//! Found (sources):
//! - Bearer authentication, API tokens created under Settings → Developers → API
//!   tokens, company-wide, with a chosen scope/namespace:
//!   https://dev.frontapp.com/docs/authentication,
//!   https://dev.frontapp.com/docs/create-and-revoke-api-tokens
//! - `GET /conversations/{conversation_id}` (scope `conversations:read`; `301` to
//!   the merged conversation); `status` is one of `archived`, `unassigned`,
//!   `deleted`, `assigned`; `updated_at` is Unix seconds with decimals; with
//!   ticketing, `status_category` `open`/`waiting`/`resolved` as well.
//!   `GET /conversations/{conversation_id}/events` (scope `events:*:read`):
//!   "in reverse chronological order (newest first)", parameters `limit`
//!   (max 100) and `page_token`; answer `{_pagination: {next}, _results: [Event]}`;
//!   an Event has `id`, `type`, `emitted_at` (Unix seconds), `source`
//!   (`_meta.type` teammate/rule/…, `data`), `target`, `conversation`.
//!   OpenAPI: https://github.com/frontapp/front-api-specs (core-api/core-api.json),
//!   https://dev.frontapp.com/reference/list-conversation-events
//! - Pagination: follow `_pagination.next` (a full URL, possibly on
//!   `<company>.api.frontapp.com`) until it is `null`; fewer results than `limit`
//!   do not mean the end. https://dev.frontapp.com/docs/pagination
//! - `GET /events` (scope `events:*:read`): "all the detailed events which
//!   occurred in the inboxes of the company", `q` with `before`/`after` ("a
//!   timestamp in seconds with up to 3 decimal places"), `types`, `inboxes`;
//!   `limit` at most 15; `sort_by=created_at`, `sort_order` `asc`/`desc`;
//!   `page_token`. Multiple values repeat the key (`q[types]=a&q[types]=b`).
//!   OpenAPI (core-api.json, `list-events`), https://dev.frontapp.com/docs/query-object-q
//! - Rate limits per company: 50 (Starter), 100, 200 requests a minute, shared by
//!   every API token of the company (OAuth partner apps: 120 rpm apart); a 429
//!   carries `retry-after` in seconds; some routes add a short burst limit
//!   (`x-front-tier`). https://dev.frontapp.com/docs/rate-limiting
//!
//! Assumed (not documented): the list is not filtered by time (no `since`
//! parameter exists), and the "bump settings" note on its order means the order
//! may not be strict, so every page is read and `since` is applied here; an
//! unknown conversation answers `404` (body
//! `{"_error": {"status": 404, "title": "Not found", "message": …}}`, not read);
//! ticketing statuses (`ticket_status_update`, `status_category`) are not
//! resolutions, as for webhooks, and are only kept as evidence. For backfill:
//! whether `q[after]`/`q[before]` are inclusive (asked 1 ms early, filtered
//! here), how long a `page_token` stays valid, and how far back `/events` goes
//! (no limit documented).

use super::http::ApiHttp;
use super::MAX_PAGES;
use super::{ApiError, ApiSettings, HelpdeskApi, Sight, TicketLook, TicketPage};
use crate::event::TicketEvent;
use crate::providers::{Headers, Provider, ProviderSettings, Webhook};
use chrono::{DateTime, Utc};
use reqwest::Url;
use serde_json::{json, Value};

/// Requests per minute when `api.requests_per_minute` is not set: half of the
/// smallest plan's 50, since every integration of the company shares that budget.
pub const REQUESTS_PER_MINUTE: u32 = 25;
/// Front's documented API host.
pub const DEFAULT_BASE_URL: &str = "https://api2.frontapp.com";
/// Events per page (Front's maximum).
pub const PAGE_LIMIT: u32 = 100;
/// Events per page of the company-wide events list (Front's maximum there).
pub const EVENTS_LIST_LIMIT: u32 = 15;
/// The event types that make a conversation worth importing (backfill): those
/// the webhook parser normalizes, and `outbound` for a conversation an agent started.
pub const LISTED_EVENT_TYPES: &[&str] = &[
    "inbound", "outbound", "archive", "reopen", "reminder", "assign",
];

pub struct FrontApi {
    http: ApiHttp,
    base: Url,
    token: String,
    settings: ProviderSettings,
}

pub fn client(api: &ApiSettings, settings: &ProviderSettings) -> Result<FrontApi, String> {
    if api.token.trim().is_empty() {
        return Err("front: api.token (a Front API token) is required".into());
    }
    let base = Url::parse(&api.base(DEFAULT_BASE_URL))
        .map_err(|e| format!("front: api.base_url is not a URL: {e}"))?;
    Ok(FrontApi {
        http: ApiHttp::for_api(api, REQUESTS_PER_MINUTE)?,
        base,
        token: api.token.clone(),
        settings: settings.clone(),
    })
}

/// Front's times: Unix seconds with decimals.
fn time_of(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let secs = v?.as_f64()?;
    DateTime::from_timestamp_millis((secs * 1000.0).round() as i64)
}

fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// Whether the client may send its token to `next`: the configured origin, or
/// Front's own HTTPS hosts (its `next` links name the company's subdomain).
fn trusted_next(base: &Url, next: &Url) -> bool {
    let same_origin = next.scheme() == base.scheme()
        && next.host_str() == base.host_str()
        && next.port_or_known_default() == base.port_or_known_default();
    let front_host = next.scheme() == "https"
        && next
            .host_str()
            .is_some_and(|h| h == "frontapp.com" || h.ends_with(".frontapp.com"));
    same_origin || front_host
}

/// Where a page of the events listing starts: the `q[after]` sent (ms), and
/// Front's `page_token` when the time alone cannot advance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub after_ms: i64,
    pub page_token: Option<String>,
}

impl ListCursor {
    pub fn parse(text: &str) -> Result<ListCursor, ApiError> {
        let bad = || ApiError::malformed(format!("front: not a listing cursor: `{text}`"));
        let rest = text.strip_prefix("front:").ok_or_else(bad)?;
        let (ms, token) = match rest.split_once(':') {
            Some((ms, token)) if !token.is_empty() => (ms, Some(token.to_string())),
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        Ok(ListCursor {
            after_ms: ms.parse().map_err(|_| bad())?,
            page_token: token,
        })
    }

    pub fn text(&self) -> String {
        match &self.page_token {
            Some(t) => format!("front:{}:{t}", self.after_ms),
            None => format!("front:{}", self.after_ms),
        }
    }
}

/// Milliseconds as Front's seconds with 3 decimals.
fn front_secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// One page of the events listing: the conversations of the events in
/// `[since, until)` (first appearance order) and the cursor of the next page.
fn list_page(
    page: &Value,
    asked: &ListCursor,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<TicketPage, ApiError> {
    let (results, next) = read_page(page)?;
    let mut ticket_ids: Vec<String> = Vec::new();
    let mut last_ms = None;
    for event in &results {
        let at = time_of(event.get("emitted_at"))
            .ok_or_else(|| ApiError::malformed("front event without `emitted_at`"))?;
        last_ms = Some(at.timestamp_millis());
        if at < since || at >= until {
            continue;
        }
        let id = event
            .get("conversation")
            .and_then(|c| str_of(c, "id"))
            .map(str::to_string);
        if let Some(id) = id.filter(|id| !ticket_ids.contains(id)) {
            ticket_ids.push(id);
        }
    }
    let next = match next {
        None => None,
        Some(url) => {
            // Ask again from 1 ms before the last event: events sharing its
            // millisecond are listed twice rather than skipped.
            let by_time = last_ms
                .map(|ms| ms - 1)
                .filter(|&after| after > asked.after_ms);
            let cursor = match by_time {
                Some(after_ms) => ListCursor {
                    after_ms,
                    page_token: None,
                },
                None => ListCursor {
                    after_ms: asked.after_ms,
                    page_token: Some(page_token_of(&url)?),
                },
            };
            if &cursor == asked {
                return Err(ApiError::malformed(
                    "front: the events listing does not advance (same cursor)",
                ));
            }
            Some(cursor.text())
        }
    };
    Ok(TicketPage {
        ticket_ids,
        next,
        total: None,
    })
}

/// The `page_token` of a `_pagination.next` URL.
fn page_token_of(next: &str) -> Result<String, ApiError> {
    Url::parse(next)
        .map_err(|e| ApiError::malformed(format!("front: next page URL: {e}")))?
        .query_pairs()
        .find(|(k, _)| k == "page_token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace))
        .ok_or_else(|| ApiError::malformed("front: the next page URL has no page_token"))
}

/// One page of events: the results and the next page's URL.
fn read_page(page: &Value) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let results = page
        .get("_results")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::malformed("front events: no `_results` array"))?
        .clone();
    let next = page
        .get("_pagination")
        .and_then(|p| p.get("next"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok((results, next))
}

/// Normalize one API event with the webhook parser (same semantics, same key).
/// Events without an embedded conversation get the one read.
fn normalize(
    event: &Value,
    ticket_id: &str,
    conversation: &Value,
    settings: &ProviderSettings,
) -> Result<Vec<TicketEvent>, ApiError> {
    let mut event = event.clone();
    if !event.get("conversation").is_some_and(Value::is_object) {
        event["conversation"] = json!({
            "id": ticket_id,
            "tags": conversation.get("tags").cloned().unwrap_or(json!([])),
        });
    }
    let body = serde_json::to_vec(&event).map_err(|e| ApiError::malformed(e.to_string()))?;
    let headers = Headers::new();
    let parsed = crate::providers::front::Front
        .parse(
            &Webhook {
                method: "GET",
                path_and_query: "",
                headers: &headers,
                body: &body,
            },
            settings,
        )
        .map_err(|e| ApiError::malformed(format!("front event: {e}")))?;
    // The events endpoint is the conversation's: a merged conversation's events
    // belong to the ticket asked about.
    Ok(parsed
        .into_iter()
        .map(|mut e| {
            e.ticket_id = ticket_id.to_string();
            e
        })
        .collect())
}

/// The look from the conversation and all its events.
fn look_from(
    ticket_id: &str,
    conversation: &Value,
    raw_events: &[Value],
    since: Option<DateTime<Utc>>,
    settings: &ProviderSettings,
) -> Result<TicketLook, ApiError> {
    let status = str_of(conversation, "status")
        .ok_or_else(|| ApiError::malformed("front conversation has no `status`"))?
        .to_string();
    let last_customer_message_at = raw_events
        .iter()
        .filter(|e| str_of(e, "type") == Some("inbound"))
        .filter_map(|e| time_of(e.get("emitted_at")))
        .max();
    let mut events = Vec::new();
    for raw in raw_events {
        events.extend(normalize(raw, ticket_id, conversation, settings)?);
    }
    events.retain(|e| since.is_none_or(|t| e.occurred_at >= t));
    events.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let answer = json!({
        "conversation_id": str_of(conversation, "id"),
        "status": status,
        "status_category": str_of(conversation, "status_category"),
        "updated_at": time_of(conversation.get("updated_at")),
        "last_inbound_at": last_customer_message_at,
        "events_read": raw_events.len(),
        "events": events.iter().map(|e| json!({
            "id": e.event_key, "kind": e.kind, "at": e.occurred_at,
            "actor": e.actor_id, "resolver": e.resolver,
        })).collect::<Vec<_>>(),
    });
    Ok(TicketLook {
        resolved: status == "archived",
        status,
        updated_at: time_of(conversation.get("updated_at")),
        last_customer_message_at,
        events,
        answer,
    })
}

impl FrontApi {
    fn url(&self, path: &[&str]) -> Result<Url, ApiError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| ApiError::malformed("front: api.base_url cannot have paths"))?
            .pop_if_empty()
            .extend(path);
        Ok(url)
    }

    async fn get(&self, url: Url) -> Result<Value, ApiError> {
        let request = self.http.client().get(url).bearer_auth(&self.token);
        self.http.json(request).await
    }

    /// Every event of the conversation, following `_pagination.next`.
    async fn all_events(&self, ticket_id: &str) -> Result<Vec<Value>, ApiError> {
        let mut url = self.url(&["conversations", ticket_id, "events"])?;
        url.query_pairs_mut()
            .append_pair("limit", &PAGE_LIMIT.to_string());
        let mut events = Vec::new();
        for _ in 0..MAX_PAGES {
            let (results, next) = read_page(&self.get(url).await?)?;
            events.extend(results);
            let Some(next) = next else {
                return Ok(events);
            };
            url = Url::parse(&next)
                .map_err(|e| ApiError::malformed(format!("front: next page URL: {e}")))?;
            if !trusted_next(&self.base, &url) {
                return Err(ApiError::malformed(
                    "front: the next page is on a host that is not Front's",
                ));
            }
        }
        Err(ApiError::malformed(format!(
            "front: more than {MAX_PAGES} pages of events"
        )))
    }

    async fn fetch(
        &self,
        ticket_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<TicketLook, ApiError> {
        let conversation = self.get(self.url(&["conversations", ticket_id])?).await?;
        let events = self.all_events(ticket_id).await?;
        look_from(ticket_id, &conversation, &events, since, &self.settings)
    }

    /// One page of `GET /events` (backfill), oldest first.
    async fn list(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<TicketPage, ApiError> {
        let asked = match cursor {
            Some(c) => ListCursor::parse(c)?,
            // 1 ms early: an event exactly at `since` is in the range, whether
            // Front's `after` is inclusive or not.
            None => ListCursor {
                after_ms: since.timestamp_millis() - 1,
                page_token: None,
            },
        };
        let mut url = self.url(&["events"])?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("q[after]", &front_secs(asked.after_ms))
                .append_pair("q[before]", &front_secs(until.timestamp_millis()));
            for t in LISTED_EVENT_TYPES {
                q.append_pair("q[types]", t);
            }
            q.append_pair("sort_by", "created_at")
                .append_pair("sort_order", "asc")
                .append_pair("limit", &EVENTS_LIST_LIMIT.to_string());
            if let Some(t) = &asked.page_token {
                q.append_pair("page_token", t);
            }
        }
        list_page(&self.get(url).await?, &asked, since, until)
    }
}

impl HelpdeskApi for FrontApi {
    fn provider(&self) -> &'static str {
        "front"
    }

    fn sight(&self) -> Sight {
        Sight::EVERYTHING
    }

    super::look_and_list_by_fetch_and_list!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Resolver};

    fn settings() -> ProviderSettings {
        ProviderSettings {
            ai_agent_ids: vec!["tea_ai".into()],
            ..Default::default()
        }
    }

    fn event(id: &str, kind: &str, at: f64, source: &str, target: Value) -> Value {
        json!({"id": id, "type": kind, "emitted_at": at,
               "source": {"_meta": {"type": "teammate"}, "data": {"id": source}},
               "target": target,
               "conversation": {"id": "cnv_1", "status": "archived", "tags": []}})
    }

    #[test]
    fn events_normalize_like_webhooks_and_since_filters() {
        let conv =
            json!({"id": "cnv_1", "status": "archived", "updated_at": 1767229200.5, "tags": []});
        let raw = vec![
            event("evt_4", "archive", 400.0, "tea_hum", Value::Null),
            event(
                "evt_3",
                "assign",
                300.0,
                "tea_ai",
                json!({"data": {"id": "tea_hum"}}),
            ),
            event("evt_2", "inbound", 200.0, "inb_1", Value::Null),
            event("evt_1", "archive", 100.0, "tea_ai", Value::Null),
            event("evt_0", "tag", 50.0, "tea_ai", Value::Null),
        ];
        let look = look_from("cnv_1", &conv, &raw, None, &settings()).expect("look");
        assert!(look.resolved);
        let kinds: Vec<_> = look
            .events
            .iter()
            .map(|e| (e.event_key.as_str(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("evt_1", EventKind::Resolved),
                ("evt_2", EventKind::CustomerReplied),
                ("evt_3", EventKind::HandedOffToHuman),
                ("evt_4", EventKind::Resolved),
            ]
        );
        assert_eq!(look.events[0].resolver, Some(Resolver::Ai));
        assert_eq!(look.events[3].resolver, Some(Resolver::Human));
        assert_eq!(
            look.last_customer_message_at,
            DateTime::from_timestamp(200, 0)
        );
        let since = DateTime::from_timestamp(250, 0);
        let later = look_from("cnv_1", &conv, &raw, since, &settings()).expect("look");
        assert_eq!(later.events.len(), 2);
        // The customer's last message is known even when it is before `since`.
        assert_eq!(
            later.last_customer_message_at,
            DateTime::from_timestamp(200, 0)
        );
    }

    #[test]
    fn only_front_or_the_configured_origin_gets_the_token() {
        let base = Url::parse("https://api2.frontapp.com").expect("url");
        let ok = |u: &str| trusted_next(&base, &Url::parse(u).expect("url"));
        assert!(ok(
            "https://acme.api.frontapp.com/conversations/cnv_1/events?page_token=x"
        ));
        assert!(ok("https://api2.frontapp.com/x"));
        assert!(!ok("https://evil.example/x"));
        assert!(!ok("https://frontapp.com.evil.example/x"));
        assert!(!ok("http://acme.api.frontapp.com/x"));
    }

    #[test]
    fn a_page_without_results_is_malformed() {
        assert!(read_page(&json!({"_pagination": {"next": null}})).is_err());
        let (r, next) =
            read_page(&json!({"_pagination": {"next": null}, "_results": []})).expect("page");
        assert!(r.is_empty() && next.is_none());
    }

    fn listed(id: &str, conv: &str, at_ms: i64) -> Value {
        json!({"id": id, "type": "archive", "emitted_at": at_ms as f64 / 1000.0,
               "conversation": {"id": conv}})
    }

    #[test]
    fn listing_cursors_round_trip_and_reject_garbage() {
        for c in [
            ListCursor {
                after_ms: 1_767_225_600_123,
                page_token: None,
            },
            ListCursor {
                after_ms: -1,
                page_token: Some("abc123".into()),
            },
        ] {
            assert_eq!(ListCursor::parse(&c.text()).expect("parses"), c);
        }
        for bad in ["", "12", "front:", "front:x", "front:12:", "zendesk:12"] {
            assert!(ListCursor::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(front_secs(1_767_225_600_005), "1767225600.005");
    }

    #[test]
    fn a_listing_page_keeps_the_range_dedupes_and_advances_by_time() {
        let since = DateTime::from_timestamp(100, 0).expect("t");
        let until = DateTime::from_timestamp(200, 0).expect("t");
        let asked = ListCursor {
            after_ms: 99_999,
            page_token: None,
        };
        let page = json!({
            "_pagination": {"next": "https://acme.api.frontapp.com/events?page_token=tok2"},
            "_results": [listed("e1", "cnv_a", 100_000), listed("e2", "cnv_b", 150_000),
                         listed("e3", "cnv_a", 160_000), listed("e4", "cnv_c", 200_000)],
        });
        let p = list_page(&page, &asked, since, until).expect("page");
        assert_eq!(p.ticket_ids, vec!["cnv_a", "cnv_b"]);
        assert_eq!(p.next.as_deref(), Some("front:199999"));
        // The last page.
        let last = json!({"_pagination": {"next": null}, "_results": []});
        assert_eq!(
            list_page(&last, &asked, since, until).expect("page").next,
            None
        );
    }

    #[test]
    fn a_page_stuck_in_one_millisecond_goes_on_with_fronts_token_then_fails() {
        let since = DateTime::from_timestamp(100, 0).expect("t");
        let until = DateTime::from_timestamp(200, 0).expect("t");
        let asked = ListCursor {
            after_ms: 149_999,
            page_token: None,
        };
        let page = json!({
            "_pagination": {"next": "https://acme.api.frontapp.com/events?q%5Bafter%5D=1&page_token=tok2"},
            "_results": [listed("e1", "cnv_a", 150_000), listed("e2", "cnv_b", 150_000)],
        });
        let p = list_page(&page, &asked, since, until).expect("page");
        assert_eq!(p.next.as_deref(), Some("front:149999:tok2"));
        // The same answer again for that cursor: no progress, no endless loop.
        let again = ListCursor::parse("front:149999:tok2").expect("cursor");
        assert!(matches!(
            list_page(&page, &again, since, until),
            Err(ApiError::Malformed { .. })
        ));
    }
}
