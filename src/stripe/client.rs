//! The few Stripe calls outcome-meter makes, typed, with the headers Stripe
//! returns (`Request-Id`, `Stripe-Should-Retry`, `Retry-After`) kept.

use serde::Deserialize;
use std::time::Duration;

/// A Billing Meter event (`POST /v1/billing/meter_events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEvent {
    pub event_name: String,
    pub stripe_customer_id: String,
    pub value: i64,
    /// The outcome id: Stripe deduplicates on it.
    pub identifier: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// The payload key the meter reads the customer from
    /// (`customer_mapping.event_payload_key`, read by the preflight).
    pub customer_key: String,
    /// The payload key the meter reads the value from (`value_settings.event_payload_key`).
    pub value_key: String,
}

/// Stripe's default payload keys of a meter: `stripe_customer_id` and `value`.
pub const DEFAULT_CUSTOMER_KEY: &str = "stripe_customer_id";
pub const DEFAULT_VALUE_KEY: &str = "value";

impl Default for MeterEvent {
    fn default() -> Self {
        MeterEvent {
            event_name: String::new(),
            stripe_customer_id: String::new(),
            value: 0,
            identifier: String::new(),
            timestamp: 0,
            customer_key: DEFAULT_CUSTOMER_KEY.into(),
            value_key: DEFAULT_VALUE_KEY.into(),
        }
    }
}

impl MeterEvent {
    pub fn form(&self) -> Vec<(String, String)> {
        vec![
            ("event_name".into(), self.event_name.clone()),
            (
                format!("payload[{}]", self.customer_key),
                self.stripe_customer_id.clone(),
            ),
            (
                format!("payload[{}]", self.value_key),
                self.value.to_string(),
            ),
            ("identifier".into(), self.identifier.clone()),
            ("timestamp".into(), self.timestamp.to_string()),
        ]
    }

    /// The form body exactly as sent (also what dry-run records).
    pub fn encoded(&self) -> String {
        serde_urlencoded::to_string(self.form()).unwrap_or_default()
    }
}

/// Stripe's error object (`{"error": {...}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ApiError,
}

#[derive(Deserialize)]
struct Summary {
    #[serde(default)]
    id: String,
    aggregated_value: f64,
}

#[derive(Deserialize)]
struct SummaryPage {
    data: Vec<Summary>,
    #[serde(default)]
    has_more: bool,
}

/// The form body of a cancel adjustment (also what dry-run records).
pub fn cancel_form(event_name: &str, identifier: &str) -> String {
    serde_urlencoded::to_string([
        ("event_name", event_name),
        ("type", "cancel"),
        ("cancel[identifier]", identifier),
    ])
    .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub status: u16,
    pub request_id: Option<String>,
    /// Stripe replayed the stored response of an earlier request with the same key.
    pub replayed: bool,
    /// `livemode` of the object Stripe returned: the mode the call was made in.
    pub livemode: Option<bool>,
}

#[derive(Deserialize)]
struct Livemode {
    livemode: Option<bool>,
}

pub use crate::retry_after::parse as retry_after;

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe answered {status}: {}", error.message.as_deref().unwrap_or("(no message)"))]
    Api {
        status: u16,
        error: Box<ApiError>,
        request_id: Option<String>,
        should_retry: Option<bool>,
        retry_after: Option<Duration>,
        /// `Idempotent-Replayed: true`: Stripe answered with the saved result of an
        /// earlier request under the same key (a saved 5xx is replayed for as
        /// long as the key is kept: asking again under it says nothing new).
        replayed: bool,
    },
    #[error("network error talking to Stripe: {0}")]
    Network(String),
}

impl StripeError {
    pub fn request_id(&self) -> Option<&str> {
        match self {
            StripeError::Api { request_id, .. } => request_id.as_deref(),
            StripeError::Network(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            StripeError::Api { status, .. } => Some(*status),
            StripeError::Network(_) => None,
        }
    }

    /// A saved result of an earlier request with the same key, replayed.
    pub fn replayed(&self) -> bool {
        matches!(self, StripeError::Api { replayed: true, .. })
    }
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    api_base: String,
    api_key: String,
    api_version: String,
    /// Stripe Connect: every call acts on this connected account unless the
    /// call names one (see [`StripeClient::on_account`]).
    account: Option<String>,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("api_base", &self.api_base)
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl StripeClient {
    pub fn new(
        api_base: &str,
        api_key: &str,
        api_version: &str,
        timeout: Duration,
    ) -> Result<Self, StripeError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("outcome-meter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StripeError::Network(e.to_string()))?;
        Ok(StripeClient {
            http,
            api_base: api_base.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            api_version: api_version.to_string(),
            account: None,
        })
    }

    /// `POST /v1/billing/meter_events` with this call's `Idempotency-Key`, on the
    /// connected `account` when given.
    pub async fn create_meter_event(
        &self,
        ev: &MeterEvent,
        idempotency_key: &str,
        account: Option<&str>,
    ) -> Result<Ack, StripeError> {
        self.post_form(
            "/v1/billing/meter_events",
            ev.encoded(),
            idempotency_key,
            account,
        )
        .await
        .map(|(ack, _)| ack)
    }

    /// `POST /v1/billing/meter_event_adjustments`: cancel one event by identifier
    /// (Stripe allows it within 24 hours of receiving the event).
    pub async fn cancel_meter_event(
        &self,
        event_name: &str,
        identifier: &str,
        idempotency_key: &str,
        account: Option<&str>,
    ) -> Result<Ack, StripeError> {
        self.post_form(
            "/v1/billing/meter_event_adjustments",
            cancel_form(event_name, identifier),
            idempotency_key,
            account,
        )
        .await
        .map(|(ack, _)| ack)
    }

    /// Sum of `aggregated_value` of a meter's event summaries for one customer in
    /// `[start, end)` (Unix seconds, whole minutes), following pagination.
    pub async fn meter_total(
        &self,
        meter_id: &str,
        customer: &str,
        start: i64,
        end: i64,
        account: Option<&str>,
    ) -> Result<f64, StripeError> {
        let mut total = 0.0;
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![
                ("customer", customer.to_string()),
                ("start_time", start.to_string()),
                ("end_time", end.to_string()),
                ("limit", "100".to_string()),
            ];
            if let Some(a) = &after {
                query.push(("starting_after", a.clone()));
            }
            let url = format!(
                "{}/v1/billing/meters/{}/event_summaries",
                self.api_base, meter_id
            );
            let resp = self
                .with_account(self.http.get(url).query(&query), account)
                .bearer_auth(&self.api_key)
                .header("Stripe-Version", &self.api_version)
                .send()
                .await
                .map_err(|e| StripeError::Network(e.to_string()))?;
            let (_, body) = Self::read(resp).await?;
            let page: SummaryPage = serde_json::from_slice(&body)
                .map_err(|e| StripeError::Network(format!("unexpected summaries body: {e}")))?;
            total += page.data.iter().map(|s| s.aggregated_value).sum::<f64>();
            match (page.has_more, page.data.last()) {
                (true, Some(last)) => after = Some(last.id.clone()),
                _ => return Ok(total),
            }
        }
    }

    /// The same client (and connection pool), pinned to another `Stripe-Version`
    /// (legacy usage records need one before 2025-03-31.basil).
    pub fn with_api_version(&self, api_version: &str) -> StripeClient {
        StripeClient {
            api_version: api_version.to_string(),
            ..self.clone()
        }
    }

    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The same client, acting on connected `account` (`None`: the platform's own).
    pub fn on_account(&self, account: Option<&str>) -> StripeClient {
        StripeClient {
            account: account.map(str::to_string),
            ..self.clone()
        }
    }

    /// Stripe Connect: act on a connected account (`Stripe-Account`,
    /// <https://docs.stripe.com/connect/authentication>): the one the call names,
    /// else the client's.
    fn with_account(
        &self,
        req: reqwest::RequestBuilder,
        account: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match account.or(self.account.as_deref()) {
            Some(a) => req.header("Stripe-Account", a),
            None => req,
        }
    }

    /// `GET path?query`: the body of a 2xx, or Stripe's error.
    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<u8>, StripeError> {
        let resp = self
            .with_account(
                self.http
                    .get(format!("{}{}", self.api_base, path))
                    .query(query),
                None,
            )
            .bearer_auth(&self.api_key)
            .header("Stripe-Version", &self.api_version)
            .send()
            .await
            .map_err(|e| StripeError::Network(e.to_string()))?;
        Self::read(resp).await.map(|(_, body)| body)
    }

    pub(crate) async fn post_form(
        &self,
        path: &str,
        body: String,
        idempotency_key: &str,
        account: Option<&str>,
    ) -> Result<(Ack, Vec<u8>), StripeError> {
        let resp = self
            .with_account(
                self.http.post(format!("{}{}", self.api_base, path)),
                account,
            )
            .bearer_auth(&self.api_key)
            .header("Stripe-Version", &self.api_version)
            .header("Idempotency-Key", idempotency_key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| StripeError::Network(e.to_string()))?;
        Self::read(resp).await
    }

    /// `POST` a JSON body to an API v2 `url` (on [`StripeClient::api_base`] or
    /// another host), authenticated by `bearer`, or by the secret key when
    /// `None`. No `Idempotency-Key` is sent: the meter event stream dedupes on
    /// each event's `identifier`, and a v2 key would only be generated by Stripe.
    /// Always on the platform's own account: `Stripe-Account` is a v1 header
    /// (connected accounts' meter events go by v1).
    pub(crate) async fn post_v2_json(
        &self,
        url: &str,
        bearer: Option<&str>,
        body: String,
    ) -> Result<(Ack, Vec<u8>), StripeError> {
        let resp = self
            .http
            .post(url)
            .bearer_auth(bearer.unwrap_or(&self.api_key))
            .header("Stripe-Version", &self.api_version)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| StripeError::Network(e.to_string()))?;
        Self::read(resp).await
    }

    /// Where API v1 and v2 calls go (`stripe.api_base`).
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// Split a response into an [`Ack`] or a typed error, keeping Stripe's headers.
    async fn read(resp: reqwest::Response) -> Result<(Ack, Vec<u8>), StripeError> {
        let status = resp.status().as_u16();
        let request_id = header(&resp, "request-id");
        let replayed = header(&resp, "idempotent-replayed").is_some_and(|v| v == "true");
        let should_retry =
            header(&resp, "stripe-should-retry").and_then(|v| v.parse::<bool>().ok());
        let retry_after = header(&resp, "retry-after")
            .and_then(|v| retry_after(&v, header(&resp, "date").as_deref()));
        // Read the whole body so the connection can be reused.
        let body = resp
            .bytes()
            .await
            .map_err(|e| StripeError::Network(e.to_string()))?;
        if (200..300).contains(&status) {
            let livemode = serde_json::from_slice::<Livemode>(&body)
                .ok()
                .and_then(|l| l.livemode);
            return Ok((
                Ack {
                    status,
                    request_id,
                    replayed,
                    livemode,
                },
                body.to_vec(),
            ));
        }
        let error = serde_json::from_slice::<ErrorEnvelope>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| ApiError {
                kind: "unparsed".into(),
                message: Some(String::from_utf8_lossy(&body).chars().take(300).collect()),
                ..Default::default()
            });
        Err(StripeError::Api {
            status,
            error: Box::new(error),
            request_id,
            should_retry,
            retry_after,
            replayed,
        })
    }
}

// ------------------------------------------------------------------ v2 events
// (Stripe's asynchronous rejections, see `super::events`.)

impl StripeClient {
    /// `GET /v2/core/events/{id}`: the full event behind a thin notification, as raw
    /// JSON. `context` (the notification's `context`, a connected account) is sent as
    /// `Stripe-Context` (https://docs.stripe.com/context). Only secret keys can read
    /// `/v2` (https://docs.stripe.com/api-v2-overview).
    ///
    /// Assumed: the pinned `Stripe-Version` serves `/v2` too (Stripe's SDKs send their
    /// one pinned version with every request; v2 events are generally available since
    /// 2024-09-30.acacia, and `stripe.api_version` defaults to 2025-03-31.basil).
    pub async fn v2_event(&self, id: &str, context: Option<&str>) -> Result<Vec<u8>, StripeError> {
        // An event id is opaque: keep it one path segment.
        let id: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let mut req = self
            .http
            .get(format!("{}/v2/core/events/{id}", self.api_base))
            .bearer_auth(&self.api_key)
            .header("Stripe-Version", &self.api_version);
        if let Some(ctx) = context.filter(|c| !c.is_empty()) {
            req = req.header("Stripe-Context", ctx);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| StripeError::Network(e.to_string()))?;
        Self::read(resp).await.map(|(_, body)| body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_has_stripe_field_names() {
        let ev = MeterEvent {
            event_name: "resolved_ticket".into(),
            stripe_customer_id: "cus_1".into(),
            value: 1,
            identifier: "om_x".into(),
            timestamp: 1_700_000_000,
            ..Default::default()
        };
        assert_eq!(
            ev.encoded(),
            "event_name=resolved_ticket&payload%5Bstripe_customer_id%5D=cus_1&payload%5Bvalue%5D=1&identifier=om_x&timestamp=1700000000"
        );
    }

    #[test]
    fn form_uses_the_meters_payload_keys() {
        let ev = MeterEvent {
            event_name: "resolved_ticket".into(),
            stripe_customer_id: "cus_1".into(),
            value: 2,
            identifier: "om_x".into(),
            timestamp: 1_700_000_000,
            customer_key: "account".into(),
            value_key: "tickets".into(),
        };
        assert_eq!(
            ev.encoded(),
            "event_name=resolved_ticket&payload%5Baccount%5D=cus_1&payload%5Btickets%5D=2&identifier=om_x&timestamp=1700000000"
        );
    }
}
