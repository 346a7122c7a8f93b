//! Stripe's v2 meter event stream (`stripe.meter_event_api = "v2_stream"`): the
//! same Billing Meter events as `POST /v1/billing/meter_events`, up to 100 per
//! request, for accounts whose volume outgrows v1's 1,000 calls per second.
//!
//! Found (docs.stripe.com and Stripe's OpenAPI spec, `docs/stripe.md` has the links):
//! - A session: `POST https://api.stripe.com/v2/billing/meter_event_session`, no
//!   parameters, with the secret key (restricted keys cannot call `/v2`) and a pinned
//!   `Stripe-Version`; it answers `{id, object, authentication_token, created,
//!   expires_at, livemode}`, the times in RFC 3339. The token is valid for 15 minutes.
//! - The stream: `POST https://meter-events.stripe.com/v2/billing/meter_event_stream`,
//!   `Authorization: Bearer <authentication_token>`, JSON `{"events": [...]}`, at most
//!   100 events, each `{event_name, payload: {<key>: "<string>"}, identifier,
//!   timestamp (RFC 3339)}`; a 200 with `{}`. Events are validated asynchronously:
//!   a rejected one is reported later by `v1.billing.meter.error_report_triggered`
//!   (`super::events`), as for v1.
//! - An expired token: `{"error": {"type": "temporary_session_expired", "code":
//!   "billing_meter_event_session_expired"}}` (documented as a 401; Stripe's SDKs
//!   decide on the type, not the status): create a new session and send again.
//! - `identifier` is unique within a rolling 24 hours, as for v1, so a resend after
//!   a lost answer counts once within that window (the reporter's doubt rule,
//!   `super::limits::resend_is_deduplicated`, applies unchanged).
//!
//! Assumed: a duplicate `identifier` in the stream is dropped without an error (the
//! stream declares no such error, unlike `POST /v2/billing/meter_events`); a batch
//! is accepted or refused whole; 5xx and 429 are retried as for v1.

use super::client::{Ack, MeterEvent, StripeClient, StripeError};
use super::retry::{classify, Disposition};
use crate::time::Millis;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Events per stream request, at most (Stripe's limit).
pub const MAX_EVENTS: usize = 100;

/// Stripe's host for the stream (`stripe.meter_events_api_base`).
pub const DEFAULT_BASE: &str = "https://meter-events.stripe.com";

const SESSION_PATH: &str = "/v2/billing/meter_event_session";
const STREAM_PATH: &str = "/v2/billing/meter_event_stream";

/// A session is given up this long before Stripe says it expires (clocks, and a
/// request in flight at the edge).
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// One event of a stream request as JSON, in the meter's payload keys; values
/// are strings. `None` when its timestamp has no date (it is set aside, never
/// sent with another).
pub fn event_json(ev: &MeterEvent) -> Option<String> {
    let timestamp = Millis::from_ms(ev.timestamp.checked_mul(1000)?).rfc3339()?;
    let mut payload = Map::new();
    payload.insert(
        ev.customer_key.clone(),
        Value::String(ev.stripe_customer_id.clone()),
    );
    payload.insert(ev.value_key.clone(), Value::String(ev.value.to_string()));
    let event = json!({
        "event_name": ev.event_name,
        "identifier": ev.identifier,
        "timestamp": timestamp,
        "payload": payload,
    });
    Some(event.to_string())
}

/// The body of a stream request: `events` ([`event_json`]) as they are.
pub fn body<'a>(events: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from(r#"{"events":["#);
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e);
    }
    out.push_str("]}");
    out
}

/// What a stream call's answer means for its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchDisposition {
    /// The same for every event of the batch (each with its own retry budget).
    All(Disposition),
    /// Refused as a payload (400, 413, 422, or a duplicate identifier), so none of
    /// it was counted: each event is sent again alone, and only one Stripe refuses
    /// on its own is parked.
    Isolate,
    /// The request never reached the events (403, 404: the stream's host or the
    /// key's access): held, no attempt spent, as when there is no session.
    Hold,
}

/// How to take the answer to a stream call with `len` events. A 401 (an expired
/// token or any other) is about the session, not the events: retried under a new
/// one; a 403 or 404 says nothing of the events (held). Everything else as for
/// v1 ([`classify`]): a 5xx or no answer is retried and may have been applied,
/// other 4xx are permanent for the whole batch.
pub fn classify_batch(result: &Result<Ack, StripeError>, len: usize) -> BatchDisposition {
    let Err(err) = result else {
        return BatchDisposition::All(Disposition::Delivered);
    };
    if is_session_expired(err) || err.status() == Some(401) {
        return BatchDisposition::All(Disposition::Retry { after: None });
    }
    if matches!(err.status(), Some(403 | 404)) {
        return BatchDisposition::Hold;
    }
    let refused_payload = matches!(err.status(), Some(400 | 413 | 422));
    match classify(result) {
        Disposition::Delivered | Disposition::Permanent if refused_payload && len > 1 => {
            BatchDisposition::Isolate
        }
        d => BatchDisposition::All(d),
    }
}

/// A meter event session: the token the stream is called with, and how long it
/// may be used from when Stripe gave it.
#[derive(Clone)]
pub struct Session {
    token: String,
    pub usable_for: Duration,
    /// The session's `livemode`: the mode every call under it is made in (the
    /// stream's answer, `{}`, says nothing of it).
    pub livemode: Option<bool>,
}

impl Session {
    /// Whether `other` is this same session (the same token).
    pub fn is(&self, other: &Session) -> bool {
        self.token == other.token
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never printed.
        f.debug_struct("Session")
            .field("usable_for", &self.usable_for)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SessionBody {
    authentication_token: String,
    created: String,
    expires_at: String,
    #[serde(default)]
    livemode: Option<bool>,
}

/// How long a session given at `created` and expiring at `expires_at` (RFC 3339)
/// may be used, less [`EXPIRY_MARGIN`]; none when either time is unreadable
/// (the session is then used for one call and created again).
pub fn usable_for(created: &str, expires_at: &str) -> Duration {
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    match (parse(created), parse(expires_at)) {
        (Some(c), Some(e)) => (e - c)
            .to_std()
            .unwrap_or_default()
            .saturating_sub(EXPIRY_MARGIN),
        _ => Duration::ZERO,
    }
}

/// Stripe's answer that the session's token has expired.
pub fn is_session_expired(err: &StripeError) -> bool {
    match err {
        StripeError::Api { error, .. } => {
            error.kind == "temporary_session_expired"
                || error.code.as_deref() == Some("billing_meter_event_session_expired")
        }
        StripeError::Network(_) => false,
    }
}

impl StripeClient {
    /// `POST /v2/billing/meter_event_session` with the secret key.
    pub async fn create_meter_event_session(&self) -> Result<Session, StripeError> {
        let url = format!("{}{SESSION_PATH}", self.api_base());
        let (_, raw) = self.post_v2_json(&url, None, "{}".into()).await?;
        let s: SessionBody = serde_json::from_slice(&raw).map_err(|e| {
            StripeError::Network(format!("unexpected meter event session body: {e}"))
        })?;
        Ok(Session {
            usable_for: usable_for(&s.created, &s.expires_at),
            token: s.authentication_token,
            livemode: s.livemode,
        })
    }

    /// `POST {base}/v2/billing/meter_event_stream`: `body` ([`body`]) with the
    /// session's token.
    pub async fn send_meter_event_stream(
        &self,
        base: &str,
        session: &Session,
        body: String,
    ) -> Result<Ack, StripeError> {
        let url = format!("{}{STREAM_PATH}", base.trim_end_matches('/'));
        let (ack, _) = self.post_v2_json(&url, Some(&session.token), body).await?;
        Ok(Ack {
            livemode: ack.livemode.or(session.livemode),
            ..ack
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::client::ApiError;
    use crate::stripe::retry::api;

    #[test]
    fn events_carry_the_meters_keys_and_string_values() {
        let ev = MeterEvent {
            event_name: "resolved_ticket".into(),
            stripe_customer_id: "cus_1".into(),
            value: 2,
            identifier: "om_x".into(),
            timestamp: 1_700_000_000,
            customer_key: "account".into(),
            value_key: "tickets".into(),
        };
        let ev_json = event_json(&ev).expect("a date");
        assert_eq!(
            body([ev_json.as_str()]),
            r#"{"events":[{"event_name":"resolved_ticket","identifier":"om_x","payload":{"account":"cus_1","tickets":"2"},"timestamp":"2023-11-14T22:13:20Z"}]}"#
        );
    }

    #[test]
    fn a_timestamp_with_no_date_makes_no_event() {
        let ev = MeterEvent {
            timestamp: i64::MAX,
            ..Default::default()
        };
        assert_eq!(event_json(&ev), None);
    }

    #[test]
    fn a_batch_is_isolated_only_when_refused_as_a_payload() {
        use BatchDisposition::{All, Hold, Isolate};
        let ok = Ok(Ack {
            status: 200,
            request_id: None,
            replayed: false,
            livemode: None,
        });
        assert_eq!(classify_batch(&ok, 100), All(Disposition::Delivered));
        for status in [400, 413, 422] {
            assert_eq!(classify_batch(&api(status, None, "bad"), 100), Isolate);
            // Alone, a refusal is the event's own: parked.
            assert_eq!(
                classify_batch(&api(status, None, "bad"), 1),
                All(Disposition::Permanent)
            );
        }
        let duplicate = api(
            400,
            Some(false),
            "An event already exists with identifier x.",
        );
        assert_eq!(
            classify_batch(&duplicate, 2),
            Isolate,
            "which one is unknown"
        );
        assert_eq!(classify_batch(&duplicate, 1), All(Disposition::Delivered));
        // The token, not the events: retried (under a new session).
        let retry = All(Disposition::Retry { after: None });
        assert_eq!(classify_batch(&api(401, None, "Invalid token"), 100), retry);
        // The whole request refused, or maybe applied: the same for every event.
        for status in [403, 404] {
            assert_eq!(classify_batch(&api(status, None, "x"), 100), Hold);
            assert_eq!(classify_batch(&api(status, None, "x"), 1), Hold);
        }
        assert_eq!(
            classify_batch(&api(402, None, "x"), 100),
            All(Disposition::Permanent)
        );
        assert_eq!(
            classify_batch(&api(500, Some(false), "x"), 100),
            All(Disposition::Permanent)
        );
        assert_eq!(classify_batch(&api(503, None, "x"), 100), retry);
        assert_eq!(
            classify_batch(&Err(StripeError::Network("reset".into())), 100),
            retry
        );
    }

    #[test]
    fn a_session_is_used_until_a_minute_before_it_expires() {
        let d = usable_for("2024-06-01T12:00:00.000Z", "2024-06-01T12:15:00.000Z");
        assert_eq!(d, Duration::from_secs(14 * 60));
        assert_eq!(
            usable_for("2024-06-01T12:00:00Z", "garbage"),
            Duration::ZERO
        );
        // Already expired, or about to: not used again.
        assert_eq!(
            usable_for("2024-06-01T12:00:00Z", "2024-06-01T12:00:30Z"),
            Duration::ZERO
        );
        let s = Session {
            token: "secret_token".into(),
            usable_for: d,
            livemode: Some(false),
        };
        assert!(!format!("{s:?}").contains("secret_token"));
    }

    #[test]
    fn expiry_is_read_from_the_error_type_or_code() {
        let err = |status, kind: &str, code: Option<&str>| StripeError::Api {
            status,
            error: Box::new(ApiError {
                kind: kind.into(),
                code: code.map(str::to_string),
                ..Default::default()
            }),
            request_id: None,
            should_retry: None,
            retry_after: None,
            replayed: false,
        };
        assert!(is_session_expired(&err(
            401,
            "temporary_session_expired",
            None
        )));
        assert!(is_session_expired(&err(
            400,
            "",
            Some("billing_meter_event_session_expired")
        )));
        assert!(!is_session_expired(&err(
            401,
            "invalid_request_error",
            None
        )));
        assert!(!is_session_expired(&StripeError::Network("x".into())));
    }
}
