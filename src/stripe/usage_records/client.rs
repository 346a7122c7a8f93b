//! The three legacy usage-record calls, on [`StripeClient`] with its plumbing
//! (bearer key, `Stripe-Account`, the headers Stripe returns). They need a
//! `Stripe-Version` before 2025-03-31.basil: make the client with
//! [`StripeClient::legacy_usage`] (`stripe.legacy_api_version`); the main client
//! pins 2025-03-31.basil, where Stripe refuses them.

use super::record::{
    Recorded, SubscriptionItemInfo, UsageRecord, UsageRecordError, UsageRecordObject,
    UsageRecordSummary,
};
use super::rules::supports_usage_records;
use crate::stripe::client::{ApiError, StripeClient, StripeError};
use serde::Deserialize;

/// A summaries answer with more pages than this is taken as a loop, not data
/// (a subscription item has one summary per billing period).
const MAX_PAGES: usize = 1_000;

#[derive(Deserialize)]
struct SummaryPage {
    data: Vec<UsageRecordSummary>,
    #[serde(default)]
    has_more: bool,
}

/// A subscription item id is one path segment (`si_` and letters, digits, `_`).
/// Anything else is refused here, shaped as Stripe's own 400, never sent.
fn item_segment(item: &str) -> Result<&str, StripeError> {
    let ok = item.len() > 3
        && item.starts_with("si_")
        && item.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        return Ok(item);
    }
    let shown: String = item.chars().take(64).collect();
    Err(StripeError::Api {
        status: 400,
        error: Box::new(ApiError {
            kind: "invalid_request_error".into(),
            code: Some("resource_missing".into()),
            message: Some(format!(
                "not sent: `{shown}` is not a subscription item id (si_…)"
            )),
            param: Some("subscription_item".into()),
        }),
        request_id: None,
        should_retry: Some(false),
        retry_after: None,
        replayed: false,
    })
}

impl StripeClient {
    /// The client for a read on `account`: the one named, else this client's own.
    fn acting_on(&self, account: Option<&str>) -> StripeClient {
        match account {
            Some(_) => self.on_account(account),
            None => self.clone(),
        }
    }

    /// This client (its key, base, account and connection pool) pinned to
    /// `legacy_version`, which must be one that still has usage records.
    pub fn legacy_usage(&self, legacy_version: &str) -> Result<StripeClient, UsageRecordError> {
        if !supports_usage_records(legacy_version) {
            return Err(UsageRecordError::VersionWithoutUsageRecords(
                legacy_version.to_string(),
            ));
        }
        Ok(self.with_api_version(legacy_version))
    }

    /// `POST /v1/subscription_items/{item}/usage_records` with this call's
    /// `Idempotency-Key`, on the connected `account` when given, with this
    /// client's `Stripe-Version`. There is no identifier to deduplicate on: the
    /// key is the only protection, for 24 hours (see [`super::rules::plan_resend`]).
    pub async fn create_usage_record(
        &self,
        item: &str,
        record: &UsageRecord,
        idempotency_key: &str,
        account: Option<&str>,
    ) -> Result<Recorded, StripeError> {
        let path = format!(
            "/v1/subscription_items/{}/usage_records",
            item_segment(item)?
        );
        let (ack, body) = self
            .post_form(&path, record.encoded(), idempotency_key, account)
            .await?;
        let record = serde_json::from_slice::<UsageRecordObject>(&body).ok();
        Ok(Recorded { ack, record })
    }

    /// `GET /v1/subscription_items/{item}/usage_record_summaries`, every page,
    /// newest period first, as Stripe lists them.
    pub async fn usage_record_summaries(
        &self,
        item: &str,
        account: Option<&str>,
    ) -> Result<Vec<UsageRecordSummary>, StripeError> {
        let path = format!(
            "/v1/subscription_items/{}/usage_record_summaries",
            item_segment(item)?
        );
        let client = self.acting_on(account);
        let mut out: Vec<UsageRecordSummary> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("limit", "100".to_string())];
            if let Some(a) = &after {
                query.push(("starting_after", a.clone()));
            }
            let body = client.get(&path, &query).await?;
            let page: SummaryPage = serde_json::from_slice(&body).map_err(|e| {
                StripeError::Network(format!("unexpected usage record summaries body: {e}"))
            })?;
            let last = page.data.last().map(|s| s.id.clone());
            out.extend(page.data);
            match (page.has_more, last) {
                (true, Some(last)) if after.as_deref() == Some(last.as_str()) => {
                    return Err(StripeError::Network(format!(
                        "usage record summaries pagination repeats `{last}`"
                    )))
                }
                (true, Some(last)) => after = Some(last),
                _ => return Ok(out),
            }
        }
        Err(StripeError::Network(format!(
            "usage record summaries have more than {MAX_PAGES} pages"
        )))
    }

    /// `GET /v1/subscription_items/{item}`: the item's price and how it meters
    /// (for the preflight, [`super::rules::item_problems`]).
    pub async fn subscription_item(
        &self,
        item: &str,
        account: Option<&str>,
    ) -> Result<SubscriptionItemInfo, StripeError> {
        let path = format!("/v1/subscription_items/{}", item_segment(item)?);
        let client = self.acting_on(account);
        let body = client.get(&path, &[]).await?;
        serde_json::from_slice(&body)
            .map_err(|e| StripeError::Network(format!("unexpected subscription item body: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_subscription_item_id_goes_into_the_path() {
        assert!(item_segment("si_IutmSSymhsWA5i").is_ok());
        for bad in [
            "",
            "si_",
            "sub_1",
            "si_1/../../v1/charges",
            "si_1?x=1",
            " si_1",
        ] {
            let err = item_segment(bad).expect_err(bad);
            assert_eq!(err.status(), Some(400), "{bad}");
        }
    }

    #[test]
    fn only_a_version_with_usage_records_makes_a_legacy_client() {
        let c = StripeClient::new(
            "http://127.0.0.1:1",
            "sk_test_x",
            "2025-03-31.basil",
            std::time::Duration::from_secs(1),
        )
        .expect("client");
        let legacy = c.legacy_usage("2025-02-24.acacia").expect("acacia");
        assert_eq!(legacy.api_version(), "2025-02-24.acacia");
        assert_eq!(
            c.api_version(),
            "2025-03-31.basil",
            "the original is unchanged"
        );
        assert!(matches!(
            c.legacy_usage("2025-03-31.basil"),
            Err(UsageRecordError::VersionWithoutUsageRecords(_))
        ));
    }
}
