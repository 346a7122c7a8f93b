//! Front: application webhooks (an app's Webhooks feature) and, for older set-ups,
//! rule webhooks ("Send to a Webhook" rule action).
//!
//! Authenticity:
//! - application webhooks: `X-Front-Signature` = base64(HMAC-SHA256(app signing
//!   key, `<X-Front-Request-Timestamp>:<raw body>`)), the timestamp in
//!   milliseconds and within the tolerance (Front recommends 5 minutes);
//! - rule webhooks (legacy, no timestamp header): `X-Front-Signature` =
//!   base64(HMAC-SHA1(API secret, raw body)); no staleness check possible.
//!
//! Handshake: saving an application webhook sends a signed `{"type":"sync"}`
//! request with `x-front-challenge`; after the signature verifies, the receiver
//! answers 200 with `{"challenge": <value>}` and stores nothing.
//!
//! Body: an application webhook wraps Front's Event object as
//! `{"type", "authorization": {"id"}, "payload": <event>}`; a rule webhook sends
//! the event itself. Event types (Front's Events reference): `archive` →
//! resolved; `reopen` and `reminder` (a snooze ending) → reopened; `inbound` →
//! customer replied; `assign` to a teammate who is not an AI agent → hand-off.
//! The archiving teammate (or rule) id is matched against `ai_agent_ids`,
//! conversation tags against `ai_tags`. Dedupe key: the event `id`.

use super::json::{str_at, strings_at};
use super::signature::{any_secret_matches, b64_decode, hmac_sha1, hmac_sha256};
use super::{ParseError, Provider, ProviderSettings, VerifyContext, VerifyError, Webhook};
use crate::event::{EventKind, TicketEvent};
use serde_json::Value;

pub const SIGNATURE_HEADER: &str = "x-front-signature";
pub const TIMESTAMP_HEADER: &str = "x-front-request-timestamp";
pub const CHALLENGE_HEADER: &str = "x-front-challenge";

pub struct Front;

/// The Event object: the application webhook's `payload`, or the body itself.
fn event_of(v: &Value) -> &Value {
    match v.get("payload") {
        Some(p) if p.is_object() => p,
        _ => v,
    }
}

impl Provider for Front {
    fn name(&self) -> &'static str {
        "front"
    }

    fn verify(&self, hook: &Webhook<'_>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
        if !ctx.settings.has_usable_secret() {
            return Err(VerifyError::NoSecret);
        }
        let sig = hook
            .header(SIGNATURE_HEADER)
            .ok_or(VerifyError::Missing("X-Front-Signature"))?;
        let given = b64_decode(sig).ok_or(VerifyError::Malformed("X-Front-Signature"))?;
        match hook.header(TIMESTAMP_HEADER) {
            Some(ts) => {
                let ms: i64 = ts
                    .trim()
                    .parse()
                    .map_err(|_| VerifyError::Malformed("X-Front-Request-Timestamp"))?;
                let at = chrono::DateTime::from_timestamp_millis(ms)
                    .ok_or(VerifyError::Malformed("X-Front-Request-Timestamp"))?;
                if !any_secret_matches(ctx.settings, &given, |k| {
                    hmac_sha256(k, &[ts.trim().as_bytes(), b":", hook.body])
                }) {
                    return Err(VerifyError::Mismatch);
                }
                super::generic::check_age(at, ctx)
            }
            None => {
                if any_secret_matches(ctx.settings, &given, |k| hmac_sha1(k, &[hook.body])) {
                    Ok(())
                } else {
                    Err(VerifyError::Mismatch)
                }
            }
        }
    }

    fn delivery_key(&self, hook: &Webhook<'_>) -> Option<String> {
        let v: Value = serde_json::from_slice(hook.body).ok()?;
        str_at(event_of(&v), &["id"])
    }

    fn challenge(&self, hook: &Webhook<'_>) -> Option<String> {
        hook.header(CHALLENGE_HEADER).map(str::to_string)
    }

    fn parse(
        &self,
        hook: &Webhook<'_>,
        s: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let v: Value = serde_json::from_slice(hook.body)
            .map_err(|e| ParseError::new(format!("front body: {e}")))?;
        if str_at(&v, &["type"]).as_deref() == Some("sync") {
            return Ok(Vec::new());
        }
        let e = event_of(&v);
        let kind_name =
            str_at(e, &["type"]).ok_or_else(|| ParseError::new("front event has no `type`"))?;
        let source_id = str_at(e, &["source", "data", "id"]);
        let conversation = e
            .get("conversation")
            .filter(|c| c.is_object())
            .ok_or_else(|| ParseError::new("front event has no `conversation`"))?;
        let (kind, actor) = match kind_name.as_str() {
            "archive" => (EventKind::Resolved, source_id),
            "reopen" | "reminder" => (EventKind::Reopened, source_id),
            "inbound" => (EventKind::CustomerReplied, None),
            "assign" => match str_at(e, &["target", "data", "id"]) {
                Some(t) if !s.is_ai_agent(&t) => (EventKind::HandedOffToHuman, Some(t)),
                _ => return Ok(Vec::new()),
            },
            _ => return Ok(Vec::new()),
        };
        let event_key =
            str_at(e, &["id"]).ok_or_else(|| ParseError::new("front event has no `id`"))?;
        let ticket_id = str_at(conversation, &["id"])
            .ok_or_else(|| ParseError::new("front conversation has no `id`"))?;
        let occurred_at = e
            .get("emitted_at")
            .and_then(Value::as_f64)
            .and_then(
                |secs| chrono::DateTime::from_timestamp_millis((secs * 1000.0).round() as i64),
            )
            .ok_or_else(|| ParseError::new("front event has no valid `emitted_at`"))?;
        let tags = strings_at(conversation, &["tags"], Some("name"));
        Ok(vec![TicketEvent {
            resolver: (kind == EventKind::Resolved)
                .then(|| s.resolve(actor.as_deref(), &tags, None)),
            event_key,
            ticket_id,
            kind,
            occurred_at,
            actor_id: actor,
            tags,
            channel: None,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Resolver;
    use crate::providers::testdata::{ctx_at, headers, hook, payload, vectors};

    fn settings(secret: &str) -> ProviderSettings {
        ProviderSettings {
            secrets: vec![secret.into()],
            ..Default::default()
        }
    }

    #[test]
    fn reference_vectors_verify_app_and_rule_forms() {
        let vs = vectors("front");
        assert_eq!(vs.len(), 4);
        for v in vs {
            let body = v["body"].as_str().expect("body").as_bytes();
            let sig = v["expected_headers"]["X-Front-Signature"]
                .as_str()
                .expect("sig");
            let s = settings(v["secret"].as_str().expect("secret"));
            match v["headers_in"]["X-Front-Request-Timestamp"].as_str() {
                Some(ts) => {
                    let now = ts.parse::<i64>().expect("ms") / 1000;
                    let h = headers(&[(SIGNATURE_HEADER, sig), (TIMESTAMP_HEADER, ts)]);
                    assert_eq!(Front.verify(&hook(&h, body), &ctx_at(&s, now)), Ok(()));
                    assert_eq!(
                        Front.verify(&hook(&h, body), &ctx_at(&s, now + 301)),
                        Err(VerifyError::Stale)
                    );
                    assert_eq!(
                        Front.verify(&hook(&h, body), &ctx_at(&settings("wrong-secret"), now)),
                        Err(VerifyError::Mismatch)
                    );
                    // Dropping the timestamp header does not downgrade to the SHA-1 form.
                    let h = headers(&[(SIGNATURE_HEADER, sig)]);
                    assert_eq!(
                        Front.verify(&hook(&h, body), &ctx_at(&s, now)),
                        Err(VerifyError::Mismatch)
                    );
                }
                None => {
                    let h = headers(&[(SIGNATURE_HEADER, sig)]);
                    assert_eq!(Front.verify(&hook(&h, body), &ctx_at(&s, 0)), Ok(()));
                    let tampered = [body, b" "].concat();
                    assert_eq!(
                        Front.verify(&hook(&h, &tampered), &ctx_at(&s, 0)),
                        Err(VerifyError::Mismatch)
                    );
                }
            }
        }
    }

    #[test]
    fn archive_then_reopen_from_reference_payloads() {
        let h = headers(&[]);
        let s = ProviderSettings {
            ai_agent_ids: vec!["tea_6r55a".into()],
            ..Default::default()
        };
        let body = payload("front-conversation_archived.json");
        let ev = Front.parse(&hook(&h, &body), &s).expect("parses");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Resolved);
        assert_eq!(ev[0].ticket_id, "cnv_55c8c149");
        assert_eq!(ev[0].event_key, "evt_55c8c149");
        assert_eq!(ev[0].resolver, Some(Resolver::Ai));
        assert_eq!(ev[0].occurred_at.timestamp_millis(), 1_736_331_262_129);
        assert_eq!(
            Front.delivery_key(&hook(&h, &body)).as_deref(),
            Some("evt_55c8c149")
        );
        let human = Front
            .parse(&hook(&h, &body), &ProviderSettings::default())
            .expect("parses");
        assert_eq!(human[0].resolver, Some(Resolver::Human));

        let body = payload("front-conversation_reopened.json");
        let ev = Front.parse(&hook(&h, &body), &s).expect("parses");
        assert_eq!(ev[0].kind, EventKind::Reopened);
        assert_eq!(ev[0].event_key, "evt_55c8c150");

        // A rule webhook sends the bare event: same result.
        let v: Value = serde_json::from_slice(&body).expect("json");
        let bare = serde_json::to_vec(&v["payload"]).expect("bytes");
        assert_eq!(Front.parse(&hook(&h, &bare), &s).expect("parses"), ev);
    }

    #[test]
    fn reminder_inbound_assign_sync_and_challenge() {
        let h = headers(&[]);
        let s = ProviderSettings::default();
        let ev = |t: &str, target: &str| {
            format!(
                r#"{{"id":"evt_{t}","type":"{t}","emitted_at":1736417662.5,"target":{target},"conversation":{{"id":"cnv_1","tags":[]}}}}"#
            )
        };
        let kinds: Vec<_> = [
            ("reminder", "null"),
            ("inbound", "null"),
            ("assign", r#"{"data":{"id":"tea_x"}}"#),
        ]
        .iter()
        .map(|(t, target)| {
            Front
                .parse(&hook(&h, ev(t, target).as_bytes()), &s)
                .expect("parses")[0]
                .kind
        })
        .collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::Reopened,
                EventKind::CustomerReplied,
                EventKind::HandedOffToHuman
            ]
        );
        assert!(Front
            .parse(&hook(&h, ev("tag", "null").as_bytes()), &s)
            .expect("parses")
            .is_empty());
        let sync = br#"{"type":"sync","authorization":{"id":"cmp_abc"}}"#;
        assert!(Front.parse(&hook(&h, sync), &s).expect("parses").is_empty());
        let h = headers(&[(CHALLENGE_HEADER, "abc123")]);
        assert_eq!(Front.challenge(&hook(&h, sync)).as_deref(), Some("abc123"));
        assert_eq!(Front.challenge(&hook(&headers(&[]), sync)), None);
    }
}
