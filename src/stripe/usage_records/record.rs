//! A usage record as sent (the form of `POST
//! /v1/subscription_items/{id}/usage_records`) and the objects Stripe answers
//! with (`usage_record`, `usage_record_summary`, `subscription_item`). Pure.

use super::super::client::Ack;
use serde::Deserialize;

/// `action` of a usage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageAction {
    /// Added to the usage at the timestamp (Stripe's default).
    Increment,
    /// Replaces the usage at the timestamp (a correction; not allowed when the
    /// subscription has billing thresholds).
    Set,
}

impl UsageAction {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageAction::Increment => "increment",
            UsageAction::Set => "set",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageRecordError {
    /// Stripe takes no negative quantity: usage records cannot subtract.
    #[error(
        "a usage record's quantity cannot be negative ({0}): Stripe takes only non-negative integers; \
         a reversal is an `action=set` on the record's timestamp (see rules::plan_reversal)"
    )]
    NegativeQuantity(i64),
    #[error("Stripe-Version `{0}` has no usage records: they were removed in 2025-03-31.basil; pin an earlier version (e.g. 2025-02-24.acacia)")]
    VersionWithoutUsageRecords(String),
}

/// One usage record, exactly as sent. The timestamp is fixed before the first
/// call and kept for every resend: Stripe refuses the same `Idempotency-Key`
/// with other parameters (`idempotency_error`), and `now` would put a resend at
/// another time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub quantity: u64,
    /// Unix seconds.
    pub timestamp: i64,
    pub action: UsageAction,
}

impl UsageRecord {
    /// `quantity` more usage at `timestamp` (`action=increment`).
    pub fn increment(quantity: i64, timestamp: i64) -> Result<UsageRecord, UsageRecordError> {
        Self::new(quantity, timestamp, UsageAction::Increment)
    }

    /// The usage at `timestamp` becomes `quantity` (`action=set`).
    pub fn set(quantity: i64, timestamp: i64) -> Result<UsageRecord, UsageRecordError> {
        Self::new(quantity, timestamp, UsageAction::Set)
    }

    fn new(
        quantity: i64,
        timestamp: i64,
        action: UsageAction,
    ) -> Result<UsageRecord, UsageRecordError> {
        let quantity =
            u64::try_from(quantity).map_err(|_| UsageRecordError::NegativeQuantity(quantity))?;
        Ok(UsageRecord {
            quantity,
            timestamp,
            action,
        })
    }

    pub fn form(&self) -> Vec<(&'static str, String)> {
        vec![
            ("quantity", self.quantity.to_string()),
            ("timestamp", self.timestamp.to_string()),
            ("action", self.action.as_str().to_string()),
        ]
    }

    /// The form body exactly as sent (also what a dry-run would record).
    pub fn encoded(&self) -> String {
        serde_urlencoded::to_string(self.form()).unwrap_or_default()
    }
}

/// The `usage_record` object Stripe answers a create with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UsageRecordObject {
    pub id: String,
    #[serde(default)]
    pub livemode: bool,
    pub quantity: i64,
    pub subscription_item: String,
    pub timestamp: i64,
}

/// The answer to a create: Stripe's headers, and the object when the body
/// parses (a 2xx is a recorded usage record either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub ack: Ack,
    pub record: Option<UsageRecordObject>,
}

/// `period` of a summary. Stripe types both ends as nullable timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct SummaryPeriod {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// One `usage_record_summary`: the usage of a subscription item in one billing period.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UsageRecordSummary {
    pub id: String,
    /// The invoice that billed this period (`None` while it is open).
    #[serde(default)]
    pub invoice: Option<String>,
    #[serde(default)]
    pub livemode: bool,
    #[serde(default)]
    pub period: SummaryPeriod,
    pub subscription_item: String,
    pub total_usage: i64,
}

impl UsageRecordSummary {
    /// The summary's billing period, when Stripe gives both ends.
    pub fn billing_period(&self) -> Option<Period> {
        Some(Period {
            start: self.period.start?,
            end: self.period.end?,
        })
    }
}

/// A billing period of a subscription item, in Unix seconds. As Stripe's
/// summaries define it, it holds "All usage after the start date and up to, and
/// including, the end date": `start < t <= end`, so consecutive periods tile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

impl Period {
    pub fn contains(&self, timestamp: i64) -> bool {
        self.start < timestamp && timestamp <= self.end
    }
}

/// What the preflight reads of a subscription item (`GET
/// /v1/subscription_items/{id}`): its price's metering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SubscriptionItemInfo {
    pub id: String,
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub price: Option<PriceInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PriceInfo {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub recurring: Option<Recurring>,
}

/// `price.recurring`: a legacy metered price has `usage_type: metered`, no
/// `meter`, and (before 2025-03-31.basil) an `aggregate_usage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Recurring {
    #[serde(default)]
    pub usage_type: Option<String>,
    #[serde(default)]
    pub aggregate_usage: Option<String>,
    #[serde(default)]
    pub meter: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_has_stripes_field_names() {
        let r = UsageRecord::increment(3, 1_767_225_600).expect("non-negative");
        assert_eq!(
            r.encoded(),
            "quantity=3&timestamp=1767225600&action=increment"
        );
        let s = UsageRecord::set(0, 1_767_225_600).expect("non-negative");
        assert_eq!(s.encoded(), "quantity=0&timestamp=1767225600&action=set");
    }

    #[test]
    fn a_negative_quantity_cannot_be_built() {
        let err = UsageRecord::increment(-1, 1).expect_err("negative");
        assert_eq!(err, UsageRecordError::NegativeQuantity(-1));
        assert!(err.to_string().contains("action=set"), "{err}");
        assert!(UsageRecord::set(-5, 1).is_err());
    }

    #[test]
    fn objects_parse_as_documented() {
        let rec: UsageRecordObject = serde_json::from_str(
            r#"{"id":"mbur_1IJ3zE2eZvKYlo2CsJAtf1Jl","object":"usage_record","livemode":false,
                "quantity":100,"subscription_item":"si_IutmSSymhsWA5i","timestamp":1571252444}"#,
        )
        .expect("usage_record");
        assert_eq!(rec.quantity, 100);
        let sum: UsageRecordSummary = serde_json::from_str(
            r#"{"id":"sis_1Bnyrd2eZvKYlo2CuVcUbXln","object":"usage_record_summary",
                "invoice":"in_1Bnyrd2eZvKYlo2CSV57GLV8","livemode":false,
                "period":{"end":1711987200,"start":1709312400},
                "subscription_item":"si_18UXa82eZvKYlo2CbYoIEZVv","total_usage":1}"#,
        )
        .expect("usage_record_summary");
        assert_eq!(
            sum.billing_period(),
            Some(Period {
                start: 1_709_312_400,
                end: 1_711_987_200
            })
        );
        let open: UsageRecordSummary = serde_json::from_str(
            r#"{"id":"sis_x","invoice":null,"period":{"start":null,"end":null},
                "subscription_item":"si_x","total_usage":0}"#,
        )
        .expect("nullable fields");
        assert_eq!(open.invoice, None);
        assert_eq!(open.billing_period(), None);
    }

    #[test]
    fn a_period_holds_its_end_not_its_start() {
        let p = Period {
            start: 100,
            end: 200,
        };
        assert!(!p.contains(100));
        assert!(p.contains(101));
        assert!(p.contains(200));
        assert!(!p.contains(201));
    }
}
