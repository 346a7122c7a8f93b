//! The generic format's verification endpoint (`verify_url`), implemented by the
//! vendor's own helpdesk (docs/helpdesks.md, "Generic: verify_url").
//!
//! Request: `GET <api.base_url>?ticket_id=<id>&since=<RFC 3339>&nonce=<random>`
//! (`since` left out for the whole history) with `Authorization: Bearer <api.token>`.
//!
//! Response `200`, JSON, signed like the generic webhooks:
//! `Outcome-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(signing secret, "<t>.<raw body>")>`
//! with one of the tenant's generic `secrets`:
//! ```json
//! {"ticket_id": "T-1", "nonce": "<the request's nonce>", "status": "solved",
//!  "resolved": true, "updated_at": "2026-01-01T00:00:00Z",
//!  "last_customer_message_at": null,
//!  "events": [ {"event_id": "evt_1", "ticket_id": "T-1", "type": "reopened",
//!               "occurred_at": "…"} ]}
//! ```
//! `events` are generic webhook bodies (same ids: an event seen both ways counts
//! once). The nonce binds the answer to this request, so an old answer replayed
//! by someone on the path cannot pass for a new one; the time in the signature is
//! not compared with a clock. 404: no such ticket.
//!
//! Backfill lists the tickets changed in a time range from the same URL:
//! `GET <api.base_url>?updated_since=<RFC 3339>&updated_until=<RFC 3339>[&cursor=<c>]&nonce=<random>`,
//! answered (signed the same way) with
//! `{"nonce": "…", "ticket_ids": ["T-1", 2], "next_cursor": "c2" | null, "total": 120}`
//! (`total` optional): tickets created or updated in `[updated_since, updated_until)`.

use super::http::ApiHttp;
use super::{ApiError, ApiSettings, HelpdeskApi, Sight, TicketLook, TicketPage};
use crate::providers::generic::{parse_signature_header, SIGNATURE_HEADER};
use crate::providers::signature::{any_secret_matches, hmac_sha256};
use crate::providers::{Headers, Provider, ProviderSettings, Webhook};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// Requests per minute when `api.requests_per_minute` is not set.
pub const REQUESTS_PER_MINUTE: u32 = 600;

pub struct GenericApi {
    http: ApiHttp,
    url: String,
    token: String,
    settings: ProviderSettings,
}

pub fn client(api: &ApiSettings, settings: &ProviderSettings) -> Result<GenericApi, String> {
    let url = api
        .base_url
        .clone()
        .ok_or("generic: api.base_url (the verify_url) is required")?;
    if !settings.has_usable_secret() {
        return Err("generic: verification needs a signing secret to check answers".into());
    }
    Ok(GenericApi {
        http: ApiHttp::for_api(api, REQUESTS_PER_MINUTE)?,
        url,
        token: api.token.clone(),
        settings: settings.clone(),
    })
}

/// A page of `GET <verify_url>?updated_since=…&updated_until=…[&cursor=…]`.
#[derive(Deserialize)]
struct Listing {
    nonce: String,
    ticket_ids: Vec<Value>,
    #[serde(default)]
    next_cursor: Option<String>,
    #[serde(default)]
    total: Option<u64>,
}

#[derive(Deserialize)]
struct Answer {
    ticket_id: Value,
    nonce: String,
    status: String,
    resolved: bool,
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    last_customer_message_at: Option<DateTime<Utc>>,
    #[serde(default)]
    events: Vec<Value>,
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl GenericApi {
    /// `GET <verify_url>?<query>&nonce=<random>`; the answer's body once its
    /// signature is checked.
    async fn signed_get(
        &self,
        mut query: Vec<(&str, String)>,
    ) -> Result<(String, Vec<u8>), ApiError> {
        let nonce = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        query.push(("nonce", nonce.clone()));
        let request = self
            .http
            .client()
            .get(&self.url)
            .query(&query)
            .bearer_auth(&self.token);
        let (headers, body) = self.http.send_with_headers(request).await?;
        let signature = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::malformed("the answer has no Outcome-Signature header"))?;
        self.check_signature(signature, &body)?;
        Ok((nonce, body))
    }

    async fn fetch(
        &self,
        ticket_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<TicketLook, ApiError> {
        let mut query = vec![("ticket_id", ticket_id.to_string())];
        if let Some(s) = since {
            query.push(("since", s.to_rfc3339_opts(SecondsFormat::Millis, true)));
        }
        let (nonce, body) = self.signed_get(query).await?;
        self.read(ticket_id, &nonce, &body)
    }

    async fn list(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<TicketPage, ApiError> {
        let mut query = vec![
            (
                "updated_since",
                since.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
            (
                "updated_until",
                until.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        ];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_string()));
        }
        let (nonce, body) = self.signed_get(query).await?;
        let page: Listing = serde_json::from_slice(&body)
            .map_err(|e| ApiError::malformed(format!("listing: {e}")))?;
        if page.nonce != nonce {
            return Err(ApiError::malformed(
                "the listing is not for this request (nonce differs): a replayed answer?",
            ));
        }
        let ticket_ids = page
            .ticket_ids
            .iter()
            .map(|v| {
                id_text(v)
                    .ok_or_else(|| ApiError::malformed("a ticket id is not a string or integer"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if page.next_cursor.as_deref() == cursor && cursor.is_some() {
            return Err(ApiError::malformed(
                "the listing's next_cursor repeats the cursor asked for",
            ));
        }
        Ok(TicketPage {
            ticket_ids,
            next: page.next_cursor,
            total: page.total,
        })
    }

    fn check_signature(&self, signature: &str, body: &[u8]) -> Result<(), ApiError> {
        let sig = parse_signature_header(signature)
            .map_err(|_| ApiError::malformed("the answer's Outcome-Signature is malformed"))?;
        let t = sig.timestamp.to_string();
        let authentic = sig.v1.iter().fold(false, |ok, given| {
            ok | any_secret_matches(&self.settings, given, |k| {
                hmac_sha256(k, &[t.as_bytes(), b".", body])
            })
        });
        if authentic {
            Ok(())
        } else {
            Err(ApiError::malformed(
                "the answer's signature does not match the tenant's secret",
            ))
        }
    }

    /// Check the answer's nonce and ticket, then normalize it.
    fn read(&self, ticket_id: &str, nonce: &str, body: &[u8]) -> Result<TicketLook, ApiError> {
        let a: Answer = serde_json::from_slice(body)
            .map_err(|e| ApiError::malformed(format!("answer: {e}")))?;
        if a.nonce != nonce {
            return Err(ApiError::malformed(
                "the answer is not for this request (nonce differs): a replayed answer?",
            ));
        }
        if id_text(&a.ticket_id).as_deref() != Some(ticket_id) {
            return Err(ApiError::malformed("the answer is about another ticket"));
        }
        let mut events = Vec::with_capacity(a.events.len());
        let headers = Headers::new();
        for e in &a.events {
            let bytes = serde_json::to_vec(e).map_err(|e| ApiError::malformed(e.to_string()))?;
            let parsed = crate::providers::generic::Generic
                .parse(
                    &Webhook {
                        method: "GET",
                        path_and_query: "",
                        headers: &headers,
                        body: &bytes,
                    },
                    &self.settings,
                )
                .map_err(|e| ApiError::malformed(format!("event: {e}")))?;
            events.extend(parsed.into_iter().filter(|e| e.ticket_id == ticket_id));
        }
        let answer = json!({
            "status": a.status,
            "resolved": a.resolved,
            "updated_at": a.updated_at,
            "last_customer_message_at": a.last_customer_message_at,
            "events": events.iter().map(|e| json!({"id": e.event_key, "kind": e.kind, "at": e.occurred_at})).collect::<Vec<_>>(),
        });
        Ok(TicketLook {
            status: a.status,
            resolved: a.resolved,
            updated_at: a.updated_at,
            last_customer_message_at: a.last_customer_message_at,
            events,
            answer,
        })
    }
}

impl HelpdeskApi for GenericApi {
    fn provider(&self) -> &'static str {
        "generic"
    }

    fn sight(&self) -> Sight {
        Sight::EVERYTHING
    }

    super::look_and_list_by_fetch_and_list!();
}
