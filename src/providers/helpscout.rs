//! Help Scout: the Webhooks app (Manage → Apps → Webhooks). The body is the
//! Mailbox API 2.0 Conversation object; the event name is in `X-HelpScout-Event`
//! (kept with the delivery, since parsing needs it).
//!
//! Authenticity: `X-HelpScout-Signature` = base64(HMAC-SHA1(secret key, raw body)).
//! No timestamp, so no staleness check; replays are absorbed by the dedupe keys.
//!
//! Events: `convo.status` with status `closed` → resolved (`closedBy` /
//! `closedByUser.id` matched against `ai_agent_ids`, tags, `source.type` as the
//! channel); `convo.status` to `active`/`pending` → reopened;
//! `convo.customer.reply.created` → customer replied; `convo.assigned` to a user
//! who is not an AI agent → hand-off. Others are ignored.
//!
//! Dedupe key: Help Scout sends no event id, so a composite of conversation id,
//! event name, status and `userUpdatedAt` (or `closedAt`).

use super::json::{str_at, strings_at};
use super::signature::{any_secret_matches, b64_decode, hmac_sha1};
use super::{ParseError, Provider, ProviderSettings, VerifyContext, VerifyError, Webhook};
use crate::event::{composite_key, EventKind, TicketEvent};
use serde_json::Value;

pub const SIGNATURE_HEADER: &str = "x-helpscout-signature";
pub const EVENT_HEADER: &str = "x-helpscout-event";

pub struct HelpScout;

fn event_time(v: &Value, event: &str) -> Option<String> {
    let closed = str_at(v, &["status"]).is_some_and(|s| s == "closed");
    let candidates: &[&[&str]] = match event {
        "convo.status" if closed => &[&["closedAt"], &["userUpdatedAt"]],
        "convo.customer.reply.created" => &[&["customerWaitingSince", "time"], &["userUpdatedAt"]],
        _ => &[&["userUpdatedAt"]],
    };
    candidates
        .iter()
        .find_map(|p| str_at(v, p))
        .or_else(|| str_at(v, &["createdAt"]))
}

fn key(v: &Value, event: &str) -> Option<String> {
    let id = str_at(v, &["id"])?;
    let status = str_at(v, &["status"]).unwrap_or_default();
    let at = event_time(v, event).unwrap_or_default();
    Some(composite_key(&["helpscout", &id, event, &status, &at]))
}

impl Provider for HelpScout {
    fn name(&self) -> &'static str {
        "helpscout"
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &[EVENT_HEADER]
    }

    fn verify(&self, hook: &Webhook<'_>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
        if !ctx.settings.has_usable_secret() {
            return Err(VerifyError::NoSecret);
        }
        let sig = hook
            .header(SIGNATURE_HEADER)
            .ok_or(VerifyError::Missing("X-HelpScout-Signature"))?;
        let given = b64_decode(sig).ok_or(VerifyError::Malformed("X-HelpScout-Signature"))?;
        if any_secret_matches(ctx.settings, &given, |k| hmac_sha1(k, &[hook.body])) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    fn delivery_key(&self, hook: &Webhook<'_>) -> Option<String> {
        let v: Value = serde_json::from_slice(hook.body).ok()?;
        key(&v, hook.header(EVENT_HEADER).unwrap_or_default())
    }

    fn parse(
        &self,
        hook: &Webhook<'_>,
        s: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let event = hook
            .header(EVENT_HEADER)
            .ok_or_else(|| ParseError::new("help scout delivery without X-HelpScout-Event"))?;
        let v: Value = serde_json::from_slice(hook.body)
            .map_err(|e| ParseError::new(format!("help scout body: {e}")))?;
        let ticket_id =
            str_at(&v, &["id"]).ok_or_else(|| ParseError::new("help scout body has no `id`"))?;
        let status = str_at(&v, &["status"]).unwrap_or_default();
        let closer = str_at(&v, &["closedByUser", "id"])
            .or_else(|| str_at(&v, &["closedBy"]).filter(|c| c != "0"));
        let assignee = str_at(&v, &["assignee", "id"]);
        let (kind, actor) = match event {
            "convo.status" if status == "closed" => (EventKind::Resolved, closer),
            "convo.status" if status == "active" || status == "pending" => {
                (EventKind::Reopened, None)
            }
            "convo.customer.reply.created" => (
                EventKind::CustomerReplied,
                str_at(&v, &["primaryCustomer", "id"]),
            ),
            "convo.assigned" => match assignee {
                Some(a) if !s.is_ai_agent(&a) => (EventKind::HandedOffToHuman, Some(a)),
                _ => return Ok(Vec::new()),
            },
            _ => return Ok(Vec::new()),
        };
        let at = event_time(&v, event)
            .and_then(|t| super::parse_time(&t))
            .ok_or_else(|| ParseError::new("help scout conversation has no usable time"))?;
        let tags = {
            let by_tag = strings_at(&v, &["tags"], Some("tag"));
            if by_tag.is_empty() {
                strings_at(&v, &["tags"], Some("name"))
            } else {
                by_tag
            }
        };
        let channel = str_at(&v, &["source", "type"]).or_else(|| str_at(&v, &["type"]));
        Ok(vec![TicketEvent {
            resolver: (kind == EventKind::Resolved)
                .then(|| s.resolve(actor.as_deref(), &tags, channel.as_deref())),
            event_key: key(&v, event).unwrap_or_default(),
            ticket_id,
            kind,
            occurred_at: at,
            actor_id: actor,
            tags,
            channel,
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
            ai_agent_ids: vec!["256".into()],
            ..Default::default()
        }
    }

    #[test]
    fn reference_vectors_verify_and_tampering_fails() {
        let vs = vectors("helpscout");
        assert_eq!(vs.len(), 2);
        for v in vs {
            let body = v["body"].as_str().expect("body").as_bytes();
            let sig = v["expected_headers"]["X-HelpScout-Signature"]
                .as_str()
                .expect("sig");
            let event = v["headers_in"]["X-HelpScout-Event"]
                .as_str()
                .expect("event");
            let s = settings(v["secret"].as_str().expect("secret"));
            let h = headers(&[(SIGNATURE_HEADER, sig), (EVENT_HEADER, event)]);
            assert_eq!(HelpScout.verify(&hook(&h, body), &ctx_at(&s, 0)), Ok(()));
            let tampered = [body, b" "].concat();
            assert_eq!(
                HelpScout.verify(&hook(&h, &tampered), &ctx_at(&s, 0)),
                Err(VerifyError::Mismatch)
            );
            assert_eq!(
                HelpScout.verify(&hook(&h, body), &ctx_at(&settings("wrong-secret"), 0)),
                Err(VerifyError::Mismatch)
            );
        }
        let h = headers(&[(SIGNATURE_HEADER, "***")]);
        assert_eq!(
            HelpScout.verify(&hook(&h, b"{}"), &ctx_at(&settings("test-secret"), 0)),
            Err(VerifyError::Malformed("X-HelpScout-Signature"))
        );
    }

    #[test]
    fn closed_then_customer_reply_from_reference_payloads() {
        let s = settings("test-secret");
        let h = headers(&[(EVENT_HEADER, "convo.status")]);
        let body = payload("helpscout-convo.status-closed.json");
        let ev = HelpScout.parse(&hook(&h, &body), &s).expect("parses");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Resolved);
        assert_eq!(ev[0].ticket_id, "2391938111");
        assert_eq!(
            ev[0].resolver,
            Some(Resolver::Ai),
            "user 256 is configured as AI"
        );
        assert_eq!(ev[0].occurred_at.to_rfc3339(), "2025-01-08T10:14:22+00:00");
        assert_eq!(ev[0].channel.as_deref(), Some("email"));
        assert_eq!(
            HelpScout.delivery_key(&hook(&h, &body)),
            Some(ev[0].event_key.clone())
        );
        let human = HelpScout
            .parse(&hook(&h, &body), &ProviderSettings::default())
            .expect("parses");
        assert_eq!(human[0].resolver, Some(Resolver::Human));

        let h = headers(&[(EVENT_HEADER, "convo.customer.reply.created")]);
        let body = payload("helpscout-convo.customer.reply.created-reopened.json");
        let ev = HelpScout.parse(&hook(&h, &body), &s).expect("parses");
        assert_eq!(ev[0].kind, EventKind::CustomerReplied);
        assert_eq!(ev[0].occurred_at.to_rfc3339(), "2025-01-09T08:01:55+00:00");
    }

    #[test]
    fn status_back_to_active_reopens_assignment_hands_off_and_others_are_ignored() {
        let s = settings("test-secret");
        let body = payload("helpscout-convo.customer.reply.created-reopened.json");
        let h = headers(&[(EVENT_HEADER, "convo.status")]);
        assert_eq!(
            HelpScout.parse(&hook(&h, &body), &s).expect("parses")[0].kind,
            EventKind::Reopened
        );
        // Assigned to user 256, configured as the AI agent: not a hand-off.
        let h = headers(&[(EVENT_HEADER, "convo.assigned")]);
        assert!(HelpScout
            .parse(&hook(&h, &body), &s)
            .expect("parses")
            .is_empty());
        assert_eq!(
            HelpScout
                .parse(&hook(&h, &body), &ProviderSettings::default())
                .expect("parses")[0]
                .kind,
            EventKind::HandedOffToHuman
        );
        let h = headers(&[(EVENT_HEADER, "convo.note.created")]);
        assert!(HelpScout
            .parse(&hook(&h, &body), &s)
            .expect("parses")
            .is_empty());
        let h = headers(&[]);
        assert!(HelpScout.parse(&hook(&h, &body), &s).is_err());
    }
}
