//! Stripe event-destination notifications about meter events Stripe rejected after
//! accepting them (pure: signatures, shapes, identifiers).
//!
//! A 200 from `POST /v1/billing/meter_events` only means "accepted for asynchronous
//! validation": events for a customer that does not exist, with a payload the meter
//! cannot read, for an archived meter or an event name with no meter are rejected later,
//! and Stripe says so through two *thin* events delivered to an event destination:
//! `v1.billing.meter.error_report_triggered` and `v1.billing.meter.no_meter_found`
//! (https://docs.stripe.com/api/v2/core/events/event-types,
//! https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-in-bulk#data-issues).
//!
//! A thin notification carries no data: it is `{"id": "evt_…", "object": "v2.core.event",
//! "type": …, "created": "<RFC 3339>", "livemode": …, "context": null | "<account>",
//! "reason": …, "related_object": {"id": "mtr_…", "type": "billing.meter", "url": …}}`.
//! The full event, with `data`, is fetched from `GET /v2/core/events/{id}`
//! (https://docs.stripe.com/api/v2/core/events/object): `data.developer_message_summary`,
//! `data.reason.error_count`, `data.reason.error_types[]` (`code`, `error_count`,
//! `sample_errors[]` with `error_message` and `request.identifier`), and the window
//! `data.validation_start` / `data.validation_end` (RFC 3339).
//!
//! The samples are *samples*: an event with `error_count` 40 may name a few of them. The
//! outcomes they name are marked `rejected_by_stripe`; the rest can only be found by
//! comparing totals (see `super::rejections`).

use crate::providers::signature::{ct_eq, hmac_sha256};
use crate::time::Millis;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::time::Duration;

/// Occurs when a meter has invalid asynchronous usage events.
pub const ERROR_REPORT_TRIGGERED: &str = "v1.billing.meter.error_report_triggered";
/// Occurs when asynchronous usage events have missing or invalid meter ids
/// (no meter has the event's `event_name`).
pub const NO_METER_FOUND: &str = "v1.billing.meter.no_meter_found";

/// The event types outcome-meter acts on; any other authentic event is stored as ignored.
pub fn is_rejection_type(kind: &str) -> bool {
    kind == ERROR_REPORT_TRIGGERED || kind == NO_METER_FOUND
}

/// Why a `Stripe-Signature` does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("Stripe-Signature has no timestamp or no v1 signature")]
    Malformed,
    #[error("Stripe-Signature timestamp outside the tolerance")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
    #[error("no signing secret configured")]
    NoSecret,
}

/// Verify Stripe's `Stripe-Signature` header: `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`
/// (other schemes such as `v0` are ignored), where each `v1` is the hex HMAC-SHA256 of
/// `"<t>.<raw body>"` keyed with the destination's signing secret (the whole `whsec_…`
/// string, as Stripe's libraries use it). Several `v1` values appear while a secret is
/// being rolled; any one matching is enough. The timestamp must be within `tolerance` of
/// `now` (Unix seconds) either way (Stripe's libraries default to 300 s).
/// https://docs.stripe.com/webhooks#verify-manually
///
/// Every `v1` is compared in constant time, with no early exit.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<&str> = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k.trim() {
            "t" => timestamp = Some(v.trim()),
            "v1" => signatures.push(v.trim()),
            _ => {}
        }
    }
    let t_text = timestamp.ok_or(SignatureError::Malformed)?;
    let t: i64 = t_text.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.saturating_sub(t).saturating_abs() > tolerance {
        return Err(SignatureError::Stale);
    }
    let expected = hex::encode(hmac_sha256(
        secret.as_bytes(),
        &[t_text.as_bytes(), b".", body],
    ));
    let matched = signatures.iter().fold(false, |ok, s| {
        ok | ct_eq(expected.as_bytes(), s.to_ascii_lowercase().as_bytes())
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `Stripe-Signature` value Stripe would send for `body` at `t` (tests, the fake).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    let mac = hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex::encode(mac))
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RelatedObject {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// A thin event notification as delivered (or the envelope of a fetched event).
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub object: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub livemode: bool,
    /// The account the event happened on (a connected account): fetch the event with
    /// `Stripe-Context: <context>` (https://docs.stripe.com/context).
    #[serde(default)]
    pub context: Option<String>,
    /// `{}` for `no_meter_found` (no meter to name).
    #[serde(default)]
    pub related_object: Option<RelatedObject>,
}

/// Why a notification body is refused (400).
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("not a Stripe event notification: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a Stripe event notification: {0}")]
    Shape(&'static str),
}

impl Notification {
    /// Parse a delivered notification. It must have a non-empty `id` and `type`, and
    /// when it says what it is, be a `v2.core.event`.
    pub fn parse(body: &[u8]) -> Result<Notification, NotificationError> {
        let n: Notification = serde_json::from_slice(body)?;
        if n.id.trim().is_empty() || n.id.len() > 255 || n.id.contains('\0') {
            return Err(NotificationError::Shape("bad `id`"));
        }
        if n.kind.trim().is_empty() || n.kind.len() > 255 || n.kind.contains('\0') {
            return Err(NotificationError::Shape("bad `type`"));
        }
        if n.object.as_deref().is_some_and(|o| o != "v2.core.event") {
            return Err(NotificationError::Shape("`object` is not v2.core.event"));
        }
        Ok(n)
    }

    /// The related object's id (a meter, `mtr_…`), when there is one.
    pub fn related_id(&self) -> Option<&str> {
        self.related_object
            .as_ref()
            .and_then(|r| r.id.as_deref())
            .filter(|id| !id.is_empty())
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct SampleRequest {
    /// The meter event's identifier (what the reference calls "the request
    /// idempotency key": for meter events, the `identifier`).
    #[serde(default)]
    pub identifier: Option<String>,
    /// Seen instead of `identifier` in one documented example (an S3 import):
    /// Assumed: it holds the request's `Idempotency-Key`, which outcome-meter derives
    /// from the identifier (`<identifier>:<purpose>`), so either names the event.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct SampleError {
    #[serde(default)]
    pub error_message: String,
    #[serde(default)]
    pub request: SampleRequest,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ErrorType {
    /// An open enum: `archived_meter`, `meter_event_customer_not_found`,
    /// `meter_event_dimension_count_too_high`, `meter_event_invalid_value`,
    /// `meter_event_no_customer_defined`, `meter_event_value_not_found`,
    /// `missing_dimension_payload_keys`, `no_meter`, `timestamp_in_future`,
    /// `timestamp_too_far_in_past`, and any Stripe adds.
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub error_count: i64,
    #[serde(default)]
    pub sample_errors: Vec<SampleError>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Reason {
    #[serde(default)]
    pub error_count: i64,
    #[serde(default)]
    pub error_types: Vec<ErrorType>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ErrorReportData {
    #[serde(default)]
    pub developer_message_summary: Option<String>,
    #[serde(default)]
    pub reason: Reason,
    #[serde(default)]
    pub validation_start: Option<String>,
    #[serde(default)]
    pub validation_end: Option<String>,
}

/// A fetched `v1.billing.meter.error_report_triggered` or `…no_meter_found` event.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    pub id: String,
    pub kind: String,
    /// The meter the errors are about (none for `no_meter_found`).
    pub meter_id: Option<String>,
    pub data: ErrorReportData,
    /// `validation_start` / `validation_end`, when readable.
    pub validation_start: Option<Millis>,
    pub validation_end: Option<Millis>,
    /// Live or test mode, and the connected account (`context`), of the events.
    pub livemode: bool,
    pub context: Option<String>,
}

/// One rejected meter event named by a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The Stripe identifier (or, failing that, what the idempotency key names).
    pub identifier: String,
    pub code: String,
    pub message: String,
}

fn rfc3339_millis(s: Option<&str>) -> Option<Millis> {
    s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| Millis::from(t.with_timezone(&Utc)))
}

impl ErrorReport {
    /// Parse the body of `GET /v2/core/events/{id}`.
    pub fn parse(body: &[u8]) -> Result<ErrorReport, NotificationError> {
        #[derive(Deserialize)]
        struct Full {
            #[serde(flatten)]
            envelope: Notification,
            #[serde(default)]
            data: Option<ErrorReportData>,
        }
        let full: Full = serde_json::from_slice(body)?;
        let data = full
            .data
            .ok_or(NotificationError::Shape("the event has no `data`"))?;
        Ok(ErrorReport {
            meter_id: full.envelope.related_id().map(str::to_string),
            livemode: full.envelope.livemode,
            context: full.envelope.context.clone(),
            id: full.envelope.id,
            kind: full.envelope.kind,
            validation_start: rfc3339_millis(data.validation_start.as_deref()),
            validation_end: rfc3339_millis(data.validation_end.as_deref()),
            data,
        })
    }

    /// Every sample error, with the identifier it names (samples that name none are
    /// skipped), in Stripe's order.
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for t in &self.data.reason.error_types {
            for s in &t.sample_errors {
                let named = s
                    .request
                    .identifier
                    .as_deref()
                    .filter(|i| !i.is_empty())
                    .or_else(|| {
                        s.request
                            .idempotency_key
                            .as_deref()
                            .map(|k| k.split(':').next().unwrap_or(k))
                            .filter(|i| !i.is_empty())
                    });
                if let Some(identifier) = named {
                    out.push(Sample {
                        identifier: identifier.to_string(),
                        code: t.code.clone(),
                        message: s.error_message.clone(),
                    });
                }
            }
        }
        out
    }

    /// Errors Stripe counted (the total, or the sum of the types when absent).
    pub fn error_count(&self) -> i64 {
        let by_type: i64 = self
            .data
            .reason
            .error_types
            .iter()
            .map(|t| t.error_count)
            .sum();
        self.data.reason.error_count.max(by_type)
    }
}

/// What a Stripe identifier sent by outcome-meter stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    /// An outcome's meter event: the outcome id itself (`resends` = 0), or
    /// `<outcome id>_resend<N>` after N operator resends.
    Outcome { outcome_id: String, resends: i64 },
    /// A clawback's correcting event (`<outcome id>_reversal`).
    Reversal { outcome_id: String },
}

/// An outcome id: `om_` and 32 lower-case hex digits (see `crate::outcome::outcome_id`).
fn is_outcome_id(s: &str) -> bool {
    s.len() == 35
        && s.starts_with("om_")
        && s[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The Stripe identifier of an outcome's meter event after `resends` resends.
pub fn outcome_identifier(outcome_id: &str, resends: i64) -> String {
    if resends <= 0 {
        outcome_id.to_string()
    } else {
        format!("{outcome_id}_resend{resends}")
    }
}

/// Which of our outcomes (or reversals) a Stripe identifier names; `None` for an
/// identifier outcome-meter never sends.
pub fn parse_identifier(identifier: &str) -> Option<Identifier> {
    let id = identifier.get(..35).filter(|id| is_outcome_id(id))?;
    let rest = &identifier[35..];
    let outcome_id = id.to_string();
    if rest.is_empty() {
        return Some(Identifier::Outcome {
            outcome_id,
            resends: 0,
        });
    }
    if rest == "_reversal" {
        return Some(Identifier::Reversal { outcome_id });
    }
    let n = rest.strip_prefix("_resend")?;
    if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let resends: i64 = n.parse().ok()?;
    Some(Identifier::Outcome {
        outcome_id,
        resends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret_for_unit_tests";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"v2.core.event","type":"v1.billing.meter.error_report_triggered"}"#;
    const NOW: i64 = 1_767_225_600;
    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let h = sign(SECRET, NOW, BODY);
        assert_eq!(
            verify_signature(Some(&h), BODY, SECRET, NOW, FIVE_MIN),
            Ok(())
        );
        // The reference algorithm, spelled out: hex HMAC-SHA256 of "t.body".
        let mut signed = format!("{NOW}.").into_bytes();
        signed.extend_from_slice(BODY);
        let expected = hex::encode(hmac_sha256(SECRET.as_bytes(), &[&signed]));
        assert_eq!(h, format!("t={NOW},v1={expected}"));
    }

    #[test]
    fn a_tampered_body_or_another_secret_does_not() {
        let h = sign(SECRET, NOW, BODY);
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verify_signature(Some(&h), &tampered, SECRET, NOW, FIVE_MIN),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&h), BODY, "whsec_another_secret_x", NOW, FIVE_MIN),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed too: moving it breaks the signature.
        let moved = h.replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert_eq!(
            verify_signature(Some(&moved), BODY, SECRET, NOW, FIVE_MIN),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_of_several_v1_signatures_may_match_and_other_schemes_are_ignored() {
        let good = sign(SECRET, NOW, BODY);
        let v1 = good.split_once("v1=").map(|(_, v)| v).unwrap_or_default();
        let bad = "0".repeat(64);
        let h = format!("t={NOW},v0={v1},v1={bad},v1={v1}");
        assert_eq!(
            verify_signature(Some(&h), BODY, SECRET, NOW, FIVE_MIN),
            Ok(())
        );
        // The right value under another scheme only does not count.
        let h = format!("t={NOW},v0={v1},v1={bad}");
        assert_eq!(
            verify_signature(Some(&h), BODY, SECRET, NOW, FIVE_MIN),
            Err(SignatureError::Mismatch)
        );
        // Upper-case hex is the same signature.
        let h = format!("t={NOW}, v1={}", v1.to_ascii_uppercase());
        assert_eq!(
            verify_signature(Some(&h), BODY, SECRET, NOW, FIVE_MIN),
            Ok(())
        );
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_is_stale_either_way() {
        for t in [NOW - 301, NOW + 301] {
            let h = sign(SECRET, t, BODY);
            assert_eq!(
                verify_signature(Some(&h), BODY, SECRET, NOW, FIVE_MIN),
                Err(SignatureError::Stale),
                "t = now {:+}",
                t - NOW
            );
        }
        for t in [NOW - 300, NOW + 300] {
            let h = sign(SECRET, t, BODY);
            assert_eq!(
                verify_signature(Some(&h), BODY, SECRET, NOW, FIVE_MIN),
                Ok(())
            );
        }
    }

    #[test]
    fn missing_or_malformed_headers_and_no_secret_never_verify() {
        assert_eq!(
            verify_signature(None, BODY, SECRET, NOW, FIVE_MIN),
            Err(SignatureError::Missing)
        );
        for h in ["", "v1=abc", &format!("t={NOW}"), "t=soon,v1=ab", "garbage"] {
            assert_eq!(
                verify_signature(Some(h), BODY, SECRET, NOW, FIVE_MIN),
                Err(SignatureError::Malformed),
                "{h:?}"
            );
        }
        // A signature made with an empty key is something anyone can compute.
        let h = sign("", NOW, BODY);
        assert_eq!(
            verify_signature(Some(&h), BODY, "", NOW, FIVE_MIN),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn a_thin_notification_parses_and_anything_else_is_refused() {
        let n = Notification::parse(
            br#"{"id":"evt_test_65R2","object":"v2.core.event","type":"v1.billing.meter.error_report_triggered",
                "created":"2024-08-28T20:54:12.051Z","livemode":false,"context":null,"reason":null,
                "related_object":{"id":"mtr_test_61R2","type":"billing.meter","url":"/v1/billing/meters/mtr_test_61R2"}}"#,
        )
        .expect("a notification");
        assert_eq!(n.id, "evt_test_65R2");
        assert_eq!(n.kind, ERROR_REPORT_TRIGGERED);
        assert_eq!(n.related_id(), Some("mtr_test_61R2"));
        assert!(is_rejection_type(&n.kind));
        let none = Notification::parse(
            br#"{"id":"evt_2","object":"v2.core.event","type":"v1.billing.meter.no_meter_found","related_object":{}}"#,
        )
        .expect("a notification");
        assert_eq!(none.related_id(), None);
        for bad in [
            &b"not json"[..],
            br#"{"type":"v1.billing.meter.no_meter_found"}"#,
            br#"{"id":"","type":"x"}"#,
            br#"{"id":"evt_1","type":""}"#,
            br#"{"id":"evt_1","type":"x","object":"event"}"#,
            br#"[1,2]"#,
        ] {
            assert!(
                Notification::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Stripe's documented example of a fetched event (API reference, "The Event
    /// object"), and the S3 guide's variant with `idempotency_key` instead.
    #[test]
    fn a_fetched_error_report_gives_its_samples_and_window() {
        let body = br#"{
          "id": "evt_test_65RCjj4EqW1sabcjs2Z16RCMoNQdSQkOWvfL6L5uU2K40u",
          "object": "v2.core.event", "context": null, "created": "2024-09-26T17:46:22.134Z",
          "data": {
            "developer_message_summary": "There is 1 invalid event",
            "reason": {"error_count": 3, "error_types": [
              {"code": "meter_event_no_customer_defined", "error_count": 1, "sample_errors": [
                {"error_message": "Customer mapping key stripe_customer_id not found in payload.",
                 "request": {"identifier": "om_0123456789abcdef0123456789abcdef"}}]},
              {"code": "meter_event_customer_not_found", "error_count": 2, "sample_errors": [
                {"error_message": "No customer found", "request": {"id": "", "idempotency_key": "om_ffffffffffffffffffffffffffffffff_resend2:meter_event"}},
                {"error_message": "unnamed", "request": {}}]}
            ]},
            "validation_end": "2024-09-26T17:46:20.000Z",
            "validation_start": "2024-09-26T17:46:10.000Z"
          },
          "livemode": false, "reason": null,
          "related_object": {"id": "mtr_test_61RCjiqd", "type": "billing.meter", "url": "/v1/billing/meters/mtr_test_61RCjiqd"},
          "type": "v1.billing.meter.error_report_triggered"
        }"#;
        let r = ErrorReport::parse(body).expect("parses");
        assert_eq!(r.meter_id.as_deref(), Some("mtr_test_61RCjiqd"));
        assert_eq!(r.error_count(), 3);
        assert_eq!(r.validation_start, Some(Millis::from_ms(1_727_372_770_000)));
        assert_eq!(r.validation_end, Some(Millis::from_ms(1_727_372_780_000)));
        assert_eq!(
            r.samples(),
            vec![
                Sample {
                    identifier: "om_0123456789abcdef0123456789abcdef".into(),
                    code: "meter_event_no_customer_defined".into(),
                    message: "Customer mapping key stripe_customer_id not found in payload.".into(),
                },
                Sample {
                    identifier: "om_ffffffffffffffffffffffffffffffff_resend2".into(),
                    code: "meter_event_customer_not_found".into(),
                    message: "No customer found".into(),
                },
            ]
        );
        assert!(
            ErrorReport::parse(br#"{"id":"evt_1","type":"x"}"#).is_err(),
            "no data"
        );
    }

    #[test]
    fn identifiers_map_back_to_outcomes_and_reversals() {
        let id = "om_0123456789abcdef0123456789abcdef";
        assert_eq!(outcome_identifier(id, 0), id);
        assert_eq!(outcome_identifier(id, 2), format!("{id}_resend2"));
        for n in [0, 1, 12] {
            assert_eq!(
                parse_identifier(&outcome_identifier(id, n)),
                Some(Identifier::Outcome {
                    outcome_id: id.into(),
                    resends: n
                })
            );
        }
        assert_eq!(
            parse_identifier(&format!("{id}_reversal")),
            Some(Identifier::Reversal {
                outcome_id: id.into()
            })
        );
        for other in [
            "df5d4002-515b-4090-8fe2-a1b1f6f5b945",
            "om_0123",
            "om_0123456789ABCDEF0123456789abcdef",
            &format!("{id}_resend"),
            &format!("{id}_resend01"),
            &format!("{id}_resendx"),
            &format!("{id}x"),
            "",
        ] {
            assert_eq!(parse_identifier(other), None, "{other}");
        }
    }
}
