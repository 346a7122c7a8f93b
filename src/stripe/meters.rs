//! What the account holds, as the preflight reads it: Billing Meters
//! (`GET /v1/billing/meters`, every page) and customers (`GET /v1/customers/{id}`).
//!
//! A meter decides what a correct meter event looks like: the payload keys it
//! reads the customer and the value from, how it aggregates, whether it takes
//! events at all (status) and whether it keeps only the latest event of each
//! hour or day (`event_time_window`). See
//! <https://docs.stripe.com/api/billing/meter/object> and
//! <https://docs.stripe.com/api/billing/meter/list>.

use super::client::{StripeClient, StripeError, DEFAULT_CUSTOMER_KEY, DEFAULT_VALUE_KEY};
use serde::{Deserialize, Serialize};

/// A Billing Meter (`billing.meter`), the fields the preflight reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Meter {
    pub id: String,
    pub event_name: String,
    #[serde(default)]
    pub display_name: String,
    /// `active` or `inactive` (an inactive meter accepts no events).
    pub status: String,
    #[serde(default)]
    pub default_aggregation: DefaultAggregation,
    #[serde(default)]
    pub customer_mapping: CustomerMapping,
    #[serde(default)]
    pub value_settings: ValueSettings,
    /// `day` or `hour` for a pre-aggregated meter (only the latest event of each
    /// window counts); `null` for raw events.
    #[serde(default)]
    pub event_time_window: Option<String>,
}

impl Meter {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// `default_aggregation`: `sum`, `count` or `last`, kept as Stripe wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct DefaultAggregation {
    #[serde(default)]
    pub formula: String,
}

/// `customer_mapping`: the payload key holding the customer id (`type` is `by_id`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CustomerMapping {
    pub event_payload_key: String,
    #[serde(rename = "type", default = "by_id")]
    pub kind: String,
}

fn by_id() -> String {
    "by_id".into()
}

impl Default for CustomerMapping {
    fn default() -> Self {
        CustomerMapping {
            event_payload_key: DEFAULT_CUSTOMER_KEY.into(),
            kind: by_id(),
        }
    }
}

/// `value_settings`: the payload key holding the value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ValueSettings {
    pub event_payload_key: String,
}

impl Default for ValueSettings {
    fn default() -> Self {
        ValueSettings {
            event_payload_key: DEFAULT_VALUE_KEY.into(),
        }
    }
}

#[derive(Deserialize)]
struct MeterPage {
    data: Vec<Meter>,
    #[serde(default)]
    has_more: bool,
}

/// A customer as `GET /v1/customers/{id}` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomerState {
    Exists,
    /// Stripe answers a deleted customer with `{"id", "object": "customer", "deleted": true}`.
    Deleted,
    /// 404 `resource_missing`: no such customer in this account (or mode).
    Missing,
}

#[derive(Deserialize)]
struct CustomerBody {
    #[serde(default)]
    deleted: bool,
}

/// Stripe's largest page of a list (`limit` ranges from 1 to 100).
const PAGE: usize = 100;
/// Pages read at most (100,000 meters): a cursor that never ends is an error, not a hang.
const MAX_PAGES: usize = 1000;

fn unexpected(what: &str, e: serde_json::Error) -> StripeError {
    StripeError::Network(format!("unexpected {what} body from Stripe: {e}"))
}

/// An id as one URL path segment: anything but letters, digits, `_`, `-` and `.`
/// percent-encoded, so a configured value can never reach another endpoint.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl StripeClient {
    /// Every meter of the account, active or not, following `has_more` with
    /// `starting_after` (pages of 100).
    pub async fn list_meters(&self) -> Result<Vec<Meter>, StripeError> {
        let mut all: Vec<Meter> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("limit", PAGE.to_string())];
            if let Some(a) = &after {
                query.push(("starting_after", a.clone()));
            }
            let body = self.get("/v1/billing/meters", &query).await?;
            let page: MeterPage =
                serde_json::from_slice(&body).map_err(|e| unexpected("meter list", e))?;
            let last = page.data.last().map(|m| m.id.clone());
            all.extend(page.data);
            match (page.has_more, last) {
                (true, Some(last)) if after.as_deref() != Some(last.as_str()) => after = Some(last),
                (true, _) => {
                    return Err(StripeError::Network(
                        "Stripe's meter list says it has more but gave no new cursor".into(),
                    ))
                }
                (false, _) => return Ok(all),
            }
        }
        Err(StripeError::Network(format!(
            "Stripe's meter list did not end within {MAX_PAGES} pages"
        )))
    }

    /// Whether the customer exists, was deleted, or is unknown to this account.
    pub async fn customer(&self, id: &str) -> Result<CustomerState, StripeError> {
        if matches!(id.trim(), "" | "." | "..") {
            return Ok(CustomerState::Missing); // no such id, and not a path to send
        }
        match self
            .get(&format!("/v1/customers/{}", segment(id)), &[])
            .await
        {
            Ok(body) => {
                let c: CustomerBody =
                    serde_json::from_slice(&body).map_err(|e| unexpected("customer", e))?;
                Ok(if c.deleted {
                    CustomerState::Deleted
                } else {
                    CustomerState::Exists
                })
            }
            Err(StripeError::Api { status: 404, .. }) => Ok(CustomerState::Missing),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_stays_one_path_segment() {
        assert_eq!(segment("cus_NffrFeUfNV2Hib"), "cus_NffrFeUfNV2Hib");
        assert_eq!(segment("../v1/x?y=1"), "..%2Fv1%2Fx%3Fy%3D1");
    }

    #[test]
    fn a_meter_reads_as_stripe_documents_it() {
        // The example of https://docs.stripe.com/api/billing/meter/object
        let json = r#"{
          "id": "mtr_123", "object": "billing.meter", "created": 1704824589,
          "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
          "default_aggregation": {"formula": "sum"},
          "display_name": "Search API Calls", "event_name": "ai_search_api",
          "event_time_window": null, "livemode": false, "status": "active",
          "status_transitions": {"deactivated_at": null}, "updated": 1704898330,
          "value_settings": {"event_payload_key": "value"}
        }"#;
        let m: Meter = serde_json::from_str(json).expect("meter");
        assert_eq!(m.id, "mtr_123");
        assert!(m.is_active());
        assert_eq!(m.default_aggregation.formula, "sum");
        assert_eq!(m.customer_mapping.event_payload_key, "stripe_customer_id");
        assert_eq!(m.customer_mapping.kind, "by_id");
        assert_eq!(m.value_settings.event_payload_key, "value");
        assert_eq!(m.event_time_window, None);
        let windowed: Meter = serde_json::from_str(
            r#"{"id": "mtr_1", "event_name": "x", "status": "inactive", "event_time_window": "day"}"#,
        )
        .expect("meter");
        assert_eq!(windowed.event_time_window.as_deref(), Some("day"));
        assert!(!windowed.is_active());
        assert_eq!(windowed.value_settings.event_payload_key, "value");
    }
}
