//! The documented generic format, for in-house helpdesks.
//!
//! Body (JSON):
//! ```json
//! {"event_id": "evt_1", "ticket_id": "T-1", "type": "resolved",
//!  "occurred_at": "2026-01-01T00:00:00Z", "resolver": "ai",
//!  "actor_id": "bot-7", "tags": ["billing"], "channel": "chat"}
//! ```
//! `type` is one of `resolved`, `reopened`, `customer_replied`,
//! `handed_off_to_human`; `resolver` (`ai` or `human`) is required on `resolved`.
//!
//! Signature, as Stripe signs its webhooks:
//! `Outcome-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`;
//! several `v1=` entries may be given (secret rotation); the timestamp must be
//! within the configured tolerance of now.

use super::signature::{any_secret_matches, hmac_sha256};
use super::{ParseError, Provider, ProviderSettings, VerifyContext, VerifyError, Webhook};
use crate::event::{EventKind, Resolver, TicketEvent};
use chrono::{DateTime, Utc};
use serde::Deserialize;

pub const SIGNATURE_HEADER: &str = "outcome-signature";

pub struct Generic;

/// Unknown fields are ignored, so an in-house helpdesk that adds one keeps
/// billing; an unknown `type` or `resolver` value is still a clear error.
#[derive(Debug, Deserialize)]
struct Body {
    #[serde(deserialize_with = "string_or_integer")]
    event_id: String,
    #[serde(deserialize_with = "string_or_integer")]
    ticket_id: String,
    #[serde(rename = "type")]
    kind: EventKind,
    occurred_at: DateTime<Utc>,
    #[serde(default)]
    resolver: Option<Resolver>,
    #[serde(default, deserialize_with = "optional_string_or_integer")]
    actor_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    tags: Vec<String>,
    #[serde(default)]
    channel: Option<String>,
}

/// An id written as a string or an integer (in-house systems use both).
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Integer(i64),
}

impl From<Id> for String {
    fn from(id: Id) -> String {
        match id {
            Id::Text(s) => s,
            Id::Integer(n) => n.to_string(),
        }
    }
}

fn string_or_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Id::deserialize(d)?.into())
}

fn optional_string_or_integer<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<Id>::deserialize(d)?.map(String::from))
}

/// `"tags": null` reads as no tags, as a missing key does.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// The parts of an `Outcome-Signature` header.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    pub v1: Vec<Vec<u8>>,
}

/// Parse `t=<unix>,v1=<hex>[,v1=<hex>…]`; unknown keys are ignored.
pub fn parse_signature_header(value: &str) -> Result<SignatureHeader, VerifyError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for part in value.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(VerifyError::Malformed("Outcome-Signature"))?;
        match k {
            "t" => {
                timestamp = Some(
                    v.parse::<i64>()
                        .map_err(|_| VerifyError::Malformed("Outcome-Signature"))?,
                )
            }
            "v1" => {
                v1.push(hex::decode(v).map_err(|_| VerifyError::Malformed("Outcome-Signature"))?)
            }
            _ => {}
        }
    }
    match timestamp {
        Some(timestamp) if !v1.is_empty() => Ok(SignatureHeader { timestamp, v1 }),
        _ => Err(VerifyError::Malformed("Outcome-Signature")),
    }
}

/// The header value a sender computes (used by tests, the demo and the bench).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = hmac_sha256(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    );
    format!("t={timestamp},v1={}", hex::encode(mac))
}

/// Reject timestamps further than `tolerance` from `now`, in either direction.
pub fn check_age(ts: DateTime<Utc>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
    let skew = (ctx.now - ts)
        .abs()
        .to_std()
        .unwrap_or(std::time::Duration::MAX);
    if skew > ctx.tolerance {
        Err(VerifyError::Stale)
    } else {
        Ok(())
    }
}

impl Provider for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }

    fn verify(&self, hook: &Webhook<'_>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
        if !ctx.settings.has_usable_secret() {
            return Err(VerifyError::NoSecret);
        }
        let header = hook
            .header(SIGNATURE_HEADER)
            .ok_or(VerifyError::Missing("Outcome-Signature"))?;
        let sig = parse_signature_header(header)?;
        let t = sig.timestamp.to_string();
        let ok = sig.v1.iter().fold(false, |ok, given| {
            ok | any_secret_matches(ctx.settings, given, |k| {
                hmac_sha256(k, &[t.as_bytes(), b".", hook.body])
            })
        });
        if !ok {
            return Err(VerifyError::Mismatch);
        }
        let ts = super::unix_seconds(sig.timestamp).ok_or(VerifyError::Stale)?;
        check_age(ts, ctx)
    }

    fn delivery_key(&self, hook: &Webhook<'_>) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(hook.body).ok()?;
        super::json::str_at(&v, &["event_id"])
    }

    fn parse(
        &self,
        hook: &Webhook<'_>,
        _settings: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let b: Body = serde_json::from_slice(hook.body)
            .map_err(|e| ParseError::new(format!("generic body: {e}")))?;
        if b.event_id.trim().is_empty() || b.ticket_id.trim().is_empty() {
            return Err(ParseError::new("event_id and ticket_id must not be empty"));
        }
        if b.kind == EventKind::Resolved && b.resolver.is_none() {
            return Err(ParseError::new(
                "a `resolved` event needs `resolver` (ai or human)",
            ));
        }
        Ok(vec![TicketEvent {
            event_key: b.event_id,
            ticket_id: b.ticket_id,
            kind: b.kind,
            occurred_at: b.occurred_at,
            resolver: if b.kind == EventKind::Resolved {
                b.resolver
            } else {
                None
            },
            actor_id: b.actor_id,
            tags: b.tags,
            channel: b.channel,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testdata::headers;

    const BODY: &[u8] = br#"{"event_id":"e1","ticket_id":"T1","type":"resolved","occurred_at":"2026-01-01T00:00:00Z","resolver":"ai","tags":["x"],"channel":"chat"}"#;

    fn settings() -> ProviderSettings {
        ProviderSettings {
            secrets: vec!["whsec_test".into()],
            ..Default::default()
        }
    }

    fn ctx(s: &ProviderSettings, now: i64) -> VerifyContext<'_> {
        VerifyContext {
            settings: s,
            now: crate::providers::unix_seconds(now).expect("time"),
            tolerance: std::time::Duration::from_secs(300),
        }
    }

    #[test]
    fn signed_body_verifies_and_parses() {
        let s = settings();
        let h = headers(&[(
            "Outcome-Signature",
            &sign("whsec_test", 1_767_225_600, BODY),
        )]);
        let hook = Webhook {
            method: "POST",
            path_and_query: "/",
            headers: &h,
            body: BODY,
        };
        assert_eq!(Generic.verify(&hook, &ctx(&s, 1_767_225_650)), Ok(()));
        assert_eq!(Generic.delivery_key(&hook).as_deref(), Some("e1"));
        let ev = Generic.parse(&hook, &s).expect("parses");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Resolved);
        assert_eq!(ev[0].resolver, Some(Resolver::Ai));
        assert_eq!(ev[0].channel.as_deref(), Some("chat"));
    }

    #[test]
    fn rotation_accepts_any_configured_secret() {
        let s = ProviderSettings {
            secrets: vec!["old-secret".into(), "new-secret".into()],
            ..Default::default()
        };
        let h = headers(&[(
            "Outcome-Signature",
            &sign("new-secret", 1_767_225_600, BODY),
        )]);
        let hook = Webhook {
            method: "POST",
            path_and_query: "/",
            headers: &h,
            body: BODY,
        };
        assert_eq!(Generic.verify(&hook, &ctx(&s, 1_767_225_600)), Ok(()));
    }

    #[test]
    fn bad_stale_missing_and_malformed_signatures_are_rejected() {
        let s = settings();
        let good = sign("whsec_test", 1_767_225_600, BODY);
        let cases = [
            (
                Some(sign("wrong", 1_767_225_600, BODY)),
                1_767_225_600,
                VerifyError::Mismatch,
            ),
            (Some(good.clone()), 1_767_225_600 + 301, VerifyError::Stale),
            (Some(good), 1_767_225_600 - 301, VerifyError::Stale),
            (
                None,
                1_767_225_600,
                VerifyError::Missing("Outcome-Signature"),
            ),
            (
                Some("t=abc,v1=zz".into()),
                1_767_225_600,
                VerifyError::Malformed("Outcome-Signature"),
            ),
            (
                Some("t=1".into()),
                1_767_225_600,
                VerifyError::Malformed("Outcome-Signature"),
            ),
        ];
        for (header, now, expected) in cases {
            let h = match &header {
                Some(v) => headers(&[("Outcome-Signature", v)]),
                None => headers(&[]),
            };
            let hook = Webhook {
                method: "POST",
                path_and_query: "/",
                headers: &h,
                body: BODY,
            };
            assert_eq!(
                Generic.verify(&hook, &ctx(&s, now)),
                Err(expected),
                "{header:?}"
            );
        }
    }

    #[test]
    fn tampered_body_fails() {
        let s = settings();
        let h = headers(&[(
            "Outcome-Signature",
            &sign("whsec_test", 1_767_225_600, BODY),
        )]);
        let body = br#"{"event_id":"e1","ticket_id":"T2"}"#;
        let hook = Webhook {
            method: "POST",
            path_and_query: "/",
            headers: &h,
            body,
        };
        assert_eq!(
            Generic.verify(&hook, &ctx(&s, 1_767_225_600)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn resolved_without_resolver_is_a_parse_error() {
        let body = br#"{"event_id":"e1","ticket_id":"T1","type":"resolved","occurred_at":"2026-01-01T00:00:00Z"}"#;
        let h = headers(&[]);
        let hook = Webhook {
            method: "POST",
            path_and_query: "/",
            headers: &h,
            body,
        };
        assert!(Generic.parse(&hook, &settings()).is_err());
    }

    fn parse_body(body: &[u8]) -> Result<Vec<TicketEvent>, ParseError> {
        let h = headers(&[]);
        let hook = Webhook {
            method: "POST",
            path_and_query: "/",
            headers: &h,
            body,
        };
        Generic.parse(&hook, &settings())
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let body = br#"{"event_id":"e1","ticket_id":"T1","type":"resolved","occurred_at":"2026-01-01T00:00:00Z","resolver":"ai","priority":"high","sla":{"breached":false},"tags":null}"#;
        let events = parse_body(body).expect("an extra field is not an error");
        assert_eq!(events.len(), 1);
        let numeric = br#"{"event_id":17,"ticket_id":4021,"type":"resolved","occurred_at":"2026-01-01T00:00:00Z","resolver":"ai","actor_id":7}"#;
        let ev = parse_body(numeric).expect("integer ids");
        assert_eq!(
            (
                ev[0].event_key.as_str(),
                ev[0].ticket_id.as_str(),
                ev[0].actor_id.as_deref()
            ),
            ("17", "4021", Some("7"))
        );
        assert_eq!(events[0].resolver, Some(Resolver::Ai));
        assert!(events[0].tags.is_empty());
    }

    #[test]
    fn an_unknown_value_of_a_known_enumeration_is_a_clear_error() {
        let bad_type = br#"{"event_id":"e1","ticket_id":"T1","type":"escalated","occurred_at":"2026-01-01T00:00:00Z"}"#;
        let err = parse_body(bad_type).expect_err("unknown type");
        assert!(err.0.contains("escalated"), "{err}");
        let bad_resolver = br#"{"event_id":"e1","ticket_id":"T1","type":"resolved","occurred_at":"2026-01-01T00:00:00Z","resolver":"robot"}"#;
        let err = parse_body(bad_resolver).expect_err("unknown resolver");
        assert!(err.0.contains("robot"), "{err}");
    }

    #[test]
    fn header_parser_never_panics_on_junk() {
        for junk in [
            "",
            ",",
            "=",
            "t=",
            "v1=",
            "t=1,v1=",
            "t=99999999999999999999,v1=00",
        ] {
            let _ = parse_signature_header(junk);
        }
    }
}
