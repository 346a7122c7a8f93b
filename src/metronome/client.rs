//! The two Metronome calls outcome-meter makes, typed: `POST /v1/ingest` (send
//! usage events) and `POST /v1/usage` (read aggregated usage back, for reconcile).
//!
//! Found in Metronome's documentation (2026-07 snapshots):
//! - Ingest takes "a JSON array of between 1 and 100 usage events" with bearer
//!   auth, and documents only `200 Success`, with no response body
//!   (<https://docs.metronome.com/api-reference/usage/ingest-events>; the SDKs type
//!   the answer as `void`). A duplicate is ignored, not reported: nothing in a
//!   200 says which events were new.
//! - "Every `4XX` error uses this `application/json` format: `{"message":
//!   "Descriptive error text"}`"; a 429 carries `X-Metronome-Rate-Limit-Type`
//!   (`client`: the organization's limit for the endpoint; `customer`: the
//!   targeted customer's) (<https://docs.metronome.com/api-reference/status-codes>).
//! - Usage: `POST /v1/usage` with `{starting_on, ending_before, window_size,
//!   customer_ids, billable_metrics: [{id}]}`, answered `{data: [{customer_id,
//!   billable_metric_id, billable_metric_name, start_timestamp, end_timestamp,
//!   value}], next_page}`; `next_page` (nullable) is passed back as a query
//!   parameter (<https://docs.metronome.com/api-reference/usage/get-batched-usage-data>).
//!   `customer_ids` are Metronome customer ids (UUIDs), not ingest aliases.
//!
//! Assumed (not documented): `Retry-After` is not promised; Metronome's SDKs
//! honour `retry-after-ms`, `retry-after` and `x-should-retry` when present, and so
//! does this client. The request id is read from `x-request-id` or `request-id`
//! if either is sent.

use super::event::{body, UsageEvent};
use super::rules::retry_after;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Metronome's answer to a successful ingest (a 200 without a body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub status: u16,
    pub request_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetronomeError {
    #[error("Metronome answered {status}: {message}")]
    Api {
        status: u16,
        /// The error's `message`, or the start of the body when it has none.
        message: String,
        /// `Retry-After` / `retry-after-ms`, when sent.
        retry_after: Option<Duration>,
        request_id: Option<String>,
        /// `x-should-retry`, when sent.
        should_retry: Option<bool>,
        /// `X-Metronome-Rate-Limit-Type` of a 429: `client` or `customer`.
        rate_limit_type: Option<String>,
    },
    /// No answer: connection refused or reset, timeout, or the answer was cut.
    #[error("network error talking to Metronome: {0}")]
    Network(String),
    /// A 2xx whose body is not what the API documents (usage queries).
    #[error("unexpected answer from Metronome: {0}")]
    Unexpected(String),
}

impl MetronomeError {
    pub fn status(&self) -> Option<u16> {
        match self {
            MetronomeError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            MetronomeError::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
}

/// `window_size` of a usage query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WindowSize {
    Hour,
    Day,
    /// One aggregate for the whole period.
    None,
}

/// `billable_metrics[]` of a usage query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricRef {
    pub id: String,
}

/// The body of `POST /v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageQuery {
    pub starting_on: String,
    pub ending_before: String,
    pub window_size: WindowSize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub customer_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub billable_metrics: Vec<MetricRef>,
}

impl UsageQuery {
    /// One customer's usage of one billable metric in `[start, end)`.
    pub fn one(
        customer_id: &str,
        billable_metric_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        window_size: WindowSize,
    ) -> UsageQuery {
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        UsageQuery {
            starting_on: at(start),
            ending_before: at(end),
            window_size,
            customer_ids: vec![customer_id.to_string()],
            billable_metrics: vec![MetricRef {
                id: billable_metric_id.to_string(),
            }],
        }
    }
}

/// One `UsageBatchAggregate` of a usage answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UsageAggregate {
    pub customer_id: String,
    pub billable_metric_id: String,
    #[serde(default)]
    pub billable_metric_name: String,
    pub start_timestamp: String,
    pub end_timestamp: String,
    /// `null` when nothing matched.
    pub value: Option<f64>,
}

#[derive(Deserialize)]
struct UsagePage {
    data: Vec<UsageAggregate>,
    #[serde(default)]
    next_page: Option<String>,
}

/// A usage answer with more pages than this is taken as a loop, not data.
const MAX_PAGES: usize = 10_000;

#[derive(Clone)]
pub struct MetronomeClient {
    http: reqwest::Client,
    api_base: String,
    token: String,
}

impl std::fmt::Debug for MetronomeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetronomeClient")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl MetronomeClient {
    pub fn new(api_base: &str, token: &str, timeout: Duration) -> Result<Self, MetronomeError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("outcome-meter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MetronomeError::Network(e.to_string()))?;
        Ok(MetronomeClient {
            http,
            api_base: api_base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// `POST /v1/ingest` with `events` as one batch (1 to 100 events: see
    /// [`super::rules::batches`]; the client sends what it is given).
    ///
    /// A 200 means every event of the batch is recorded or was already (a
    /// repeated `transaction_id` within 34 days is ignored). After a network
    /// error or a 5xx "some of your events may have been ingested, but others may
    /// not. Always retry a failed call to `/ingest` until you receive a `200`
    /// status code. The unique `transaction_id` in each event prevents duplicate
    /// processing, so retries are always safe"
    /// (<https://docs.metronome.com/guides/events/send-usage-events>).
    pub async fn ingest(&self, events: &[UsageEvent]) -> Result<Ack, MetronomeError> {
        let resp = self
            .http
            .post(format!("{}/v1/ingest", self.api_base))
            .bearer_auth(&self.token)
            .header("Content-Type", "application/json")
            .body(body(events))
            .send()
            .await
            .map_err(|e| MetronomeError::Network(e.to_string()))?;
        Self::read(resp).await.map(|(ack, _)| ack)
    }

    /// `POST /v1/usage`, every page (`next_page` until it is null or empty).
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageAggregate>, MetronomeError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut req = self
                .http
                .post(format!("{}/v1/usage", self.api_base))
                .bearer_auth(&self.token)
                .json(query);
            if let Some(c) = &cursor {
                req = req.query(&[("next_page", c)]);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| MetronomeError::Network(e.to_string()))?;
            let (_, body) = Self::read(resp).await?;
            let page: UsagePage = serde_json::from_slice(&body)
                .map_err(|e| MetronomeError::Unexpected(format!("usage body: {e}")))?;
            out.extend(page.data);
            match page.next_page.filter(|n| !n.is_empty()) {
                Some(next) if cursor.as_ref() == Some(&next) => {
                    return Err(MetronomeError::Unexpected(format!(
                        "usage pagination repeats its cursor `{next}`"
                    )))
                }
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
        Err(MetronomeError::Unexpected(format!(
            "usage answer has more than {MAX_PAGES} pages"
        )))
    }

    /// The usage Metronome holds for one customer (its Metronome customer id, not
    /// an ingest alias) and one billable metric in `[start, end)`: the sum of the
    /// values of every page (a `null` value is nothing). For reconcile.
    pub async fn usage_total(
        &self,
        customer_id: &str,
        billable_metric_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<f64, MetronomeError> {
        let q = UsageQuery::one(
            customer_id,
            billable_metric_id,
            start,
            end,
            WindowSize::None,
        );
        let rows = self.usage(&q).await?;
        Ok(rows
            .iter()
            .filter(|r| r.customer_id == customer_id && r.billable_metric_id == billable_metric_id)
            .filter_map(|r| r.value)
            .sum())
    }

    /// Split a response into an [`Ack`] and its body, or a typed error.
    async fn read(resp: reqwest::Response) -> Result<(Ack, Vec<u8>), MetronomeError> {
        let status = resp.status().as_u16();
        let request_id = header(&resp, "x-request-id").or_else(|| header(&resp, "request-id"));
        let retry = retry_after(
            header(&resp, "retry-after-ms").as_deref(),
            header(&resp, "retry-after").as_deref(),
            header(&resp, "date").as_deref(),
        );
        let should_retry = header(&resp, "x-should-retry").and_then(|v| v.parse::<bool>().ok());
        let rate_limit_type = header(&resp, "x-metronome-rate-limit-type");
        // Read the whole body so the connection can be reused.
        let body = resp
            .bytes()
            .await
            .map_err(|e| MetronomeError::Network(e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok((Ack { status, request_id }, body.to_vec()));
        }
        Err(MetronomeError::Api {
            status,
            message: error_message(&body),
            retry_after: retry,
            request_id,
            should_retry,
            rate_limit_type,
        })
    }
}

/// The `message` of Metronome's error body, or the start of the body.
fn error_message(body: &[u8]) -> String {
    let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
    match parsed.as_ref().and_then(|v| v.get("message")) {
        Some(serde_json::Value::String(m)) => m.clone(),
        Some(other) => other.to_string(),
        None if body.is_empty() => "(no message)".into(),
        None => String::from_utf8_lossy(body).chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_the_documented_envelope() {
        assert_eq!(
            error_message(br#"{"message":"bad timestamp"}"#),
            "bad timestamp"
        );
        assert_eq!(error_message(br#"{"message":["a","b"]}"#), r#"["a","b"]"#);
        assert_eq!(error_message(b""), "(no message)");
        assert_eq!(
            error_message(b"<html>Bad gateway</html>"),
            "<html>Bad gateway</html>"
        );
    }

    #[test]
    fn a_usage_query_is_shaped_as_documented() {
        let start = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        let end = DateTime::from_timestamp(1_767_312_000, 0).unwrap_or_default();
        let q = UsageQuery::one("cust-uuid", "metric-uuid", start, end, WindowSize::None);
        assert_eq!(
            serde_json::to_string(&q).unwrap_or_default(),
            concat!(
                r#"{"starting_on":"2026-01-01T00:00:00Z","ending_before":"2026-01-02T00:00:00Z","#,
                r#""window_size":"NONE","customer_ids":["cust-uuid"],"billable_metrics":[{"id":"metric-uuid"}]}"#
            )
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = MetronomeClient::new(
            "http://127.0.0.1:1",
            "mtr_secret_token",
            Duration::from_secs(1),
        );
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("mtr_secret_token"), "{dbg}");
    }
}
