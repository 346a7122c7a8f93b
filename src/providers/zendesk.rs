//! Zendesk: event-subscription webhooks (`zen:event-type:ticket.*`) and
//! trigger/automation webhooks whose JSON body the admin writes (docs/helpdesks.md).
//!
//! Authenticity: `X-Zendesk-Webhook-Signature` =
//! base64(HMAC-SHA256(signing secret, `X-Zendesk-Webhook-Signature-Timestamp` + raw body)),
//! the secret used as its UTF-8 bytes; the timestamp must be within the tolerance.

use super::json::{str_at, strings_at};
use super::signature::{any_secret_matches, b64_decode, hmac_sha256};
use super::{ParseError, Provider, ProviderSettings, VerifyContext, VerifyError, Webhook};
use crate::event::{composite_key, EventKind, TicketEvent};
use serde_json::Value;

pub const SIGNATURE_HEADER: &str = "x-zendesk-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-zendesk-webhook-signature-timestamp";

pub struct Zendesk;

fn is_solved(status: &str) -> bool {
    matches!(status.to_ascii_lowercase().as_str(), "solved" | "closed")
}

fn ticket_id_of(v: &Value) -> Option<String> {
    str_at(v, &["detail", "id"]).or_else(|| {
        str_at(v, &["subject"]).and_then(|s| s.strip_prefix("zen:ticket:").map(str::to_string))
    })
}

/// Tags in a trigger body: `{{ticket.tags}}` renders as a space-separated string.
fn trigger_tags(v: &Value) -> Vec<String> {
    match v.get("tags") {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(_)) => strings_at(v, &["tags"], None),
        _ => Vec::new(),
    }
}

impl Zendesk {
    fn parse_event(
        &self,
        v: &Value,
        kind: &str,
        s: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let event_key =
            str_at(v, &["id"]).ok_or_else(|| ParseError::new("zendesk event has no `id`"))?;
        let ticket_id =
            ticket_id_of(v).ok_or_else(|| ParseError::new("zendesk event has no ticket id"))?;
        let occurred_at = str_at(v, &["time"])
            .and_then(|t| super::parse_time(&t))
            .ok_or_else(|| ParseError::new("zendesk event has no valid `time`"))?;
        let tags = strings_at(v, &["detail", "tags"], None);
        let channel = str_at(v, &["detail", "via", "channel"]);
        let actor = str_at(v, &["detail", "actor_id"]);
        let requester = str_at(v, &["detail", "requester_id"]);
        let kind = match kind {
            "ticket.status_changed" => {
                let current =
                    str_at(v, &["event", "current"]).or_else(|| str_at(v, &["detail", "status"]));
                let previous = str_at(v, &["event", "previous"]).unwrap_or_default();
                match current {
                    Some(c) if is_solved(&c) => Some(EventKind::Resolved),
                    Some(_) if is_solved(&previous) => Some(EventKind::Reopened),
                    Some(_) => None,
                    None => return Err(ParseError::new("status_changed without a status")),
                }
            }
            "ticket.comment_added" => {
                let author = str_at(v, &["event", "comment", "author", "id"]).or(actor.clone());
                let staff = v
                    .pointer("/event/comment/author/is_staff")
                    .and_then(Value::as_bool);
                let by_requester = author.is_some() && author == requester;
                (by_requester || staff == Some(false)).then_some(EventKind::CustomerReplied)
            }
            "ticket.agent_assignment_changed" => {
                let to = str_at(v, &["event", "current"]);
                to.filter(|id| !s.is_ai_agent(id))
                    .map(|_| EventKind::HandedOffToHuman)
            }
            _ => None,
        };
        Ok(kind
            .map(|kind| TicketEvent {
                resolver: (kind == EventKind::Resolved)
                    .then(|| s.resolve(actor.as_deref(), &tags, channel.as_deref())),
                event_key,
                ticket_id,
                kind,
                occurred_at,
                actor_id: actor,
                tags,
                channel,
            })
            .into_iter()
            .collect())
    }

    fn trigger_key(v: &Value) -> Option<String> {
        let ticket = str_at(v, &["ticket_id"])?;
        let status = str_at(v, &["status"])
            .unwrap_or_default()
            .to_ascii_lowercase();
        let at = str_at(v, &["updated_at"]).unwrap_or_default();
        Some(composite_key(&["zendesk-trigger", &ticket, &status, &at]))
    }

    fn parse_trigger(
        &self,
        v: &Value,
        s: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let ticket_id = str_at(v, &["ticket_id"])
            .ok_or_else(|| ParseError::new("trigger body has no `ticket_id`"))?;
        let status = str_at(v, &["status"])
            .ok_or_else(|| ParseError::new("trigger body has no `status`"))?;
        let occurred_at = str_at(v, &["updated_at"])
            .and_then(|t| super::parse_time(&t))
            .ok_or_else(|| {
                ParseError::new("trigger body `updated_at` must be RFC 3339: use {{ticket.updated_at_with_timestamp}}")
            })?;
        let tags = trigger_tags(v);
        let actor = str_at(v, &["updated_by_id"]);
        let kind = if is_solved(&status) {
            EventKind::Resolved
        } else {
            EventKind::Reopened
        };
        let event_key = Self::trigger_key(v).unwrap_or_default();
        let channel = str_at(v, &["via"]).map(|c| c.to_ascii_lowercase());
        Ok(vec![TicketEvent {
            resolver: (kind == EventKind::Resolved)
                .then(|| s.resolve(actor.as_deref(), &tags, channel.as_deref())),
            event_key,
            ticket_id,
            kind,
            occurred_at,
            actor_id: actor,
            tags,
            channel,
        }])
    }
}

impl Provider for Zendesk {
    fn name(&self) -> &'static str {
        "zendesk"
    }

    fn verify(&self, hook: &Webhook<'_>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
        if !ctx.settings.has_usable_secret() {
            return Err(VerifyError::NoSecret);
        }
        let sig = hook
            .header(SIGNATURE_HEADER)
            .ok_or(VerifyError::Missing("X-Zendesk-Webhook-Signature"))?;
        let ts = hook.header(TIMESTAMP_HEADER).ok_or(VerifyError::Missing(
            "X-Zendesk-Webhook-Signature-Timestamp",
        ))?;
        let given = b64_decode(sig).ok_or(VerifyError::Malformed("X-Zendesk-Webhook-Signature"))?;
        let at = super::parse_time(ts).ok_or(VerifyError::Malformed(
            "X-Zendesk-Webhook-Signature-Timestamp",
        ))?;
        if !any_secret_matches(ctx.settings, &given, |k| {
            hmac_sha256(k, &[ts.as_bytes(), hook.body])
        }) {
            return Err(VerifyError::Mismatch);
        }
        super::generic::check_age(at, ctx)
    }

    fn delivery_key(&self, hook: &Webhook<'_>) -> Option<String> {
        let v: Value = serde_json::from_slice(hook.body).ok()?;
        match str_at(&v, &["type"]) {
            Some(t) if t.starts_with("zen:event-type:") => str_at(&v, &["id"]),
            _ => Self::trigger_key(&v),
        }
    }

    fn parse(
        &self,
        hook: &Webhook<'_>,
        s: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let v: Value = serde_json::from_slice(hook.body)
            .map_err(|e| ParseError::new(format!("zendesk body: {e}")))?;
        match str_at(&v, &["type"]) {
            Some(t) => match t.strip_prefix("zen:event-type:") {
                Some(kind) => self.parse_event(&v, kind, s),
                None => Err(ParseError::new(format!("unknown zendesk event type `{t}`"))),
            },
            None => self.parse_trigger(&v, s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Resolver;
    use crate::providers::testdata::{headers, hook, payload, vectors};

    fn settings(secret: &str) -> ProviderSettings {
        ProviderSettings {
            secrets: vec![secret.into()],
            ai_agent_ids: vec!["8447388090494".into()],
            ..Default::default()
        }
    }

    fn ctx<'a>(s: &'a ProviderSettings, now: &str) -> VerifyContext<'a> {
        VerifyContext {
            settings: s,
            now: super::super::parse_time(now).expect("time"),
            tolerance: std::time::Duration::from_secs(300),
        }
    }

    #[test]
    fn reference_vectors_verify() {
        let vs = vectors("zendesk");
        assert_eq!(vs.len(), 2);
        for v in vs {
            let body = v["body"].as_str().expect("body").as_bytes();
            let ts = v["headers_in"]["X-Zendesk-Webhook-Signature-Timestamp"]
                .as_str()
                .expect("ts");
            let sig = v["expected_headers"]["X-Zendesk-Webhook-Signature"]
                .as_str()
                .expect("sig");
            let s = settings(v["secret"].as_str().expect("secret"));
            let h = headers(&[(SIGNATURE_HEADER, sig), (TIMESTAMP_HEADER, ts)]);
            let webhook = hook(&h, body);
            assert_eq!(Zendesk.verify(&webhook, &ctx(&s, ts)), Ok(()));
            // An hour later the same request is stale.
            assert_eq!(
                Zendesk.verify(&webhook, &ctx(&s, "2025-01-08T11:14:23Z")),
                Err(VerifyError::Stale)
            );
            let wrong = settings("another-secret");
            assert_eq!(
                Zendesk.verify(&webhook, &ctx(&wrong, ts)),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn solved_then_reopened_from_reference_payloads() {
        let s = settings("x");
        let h = headers(&[]);
        let body = payload("zendesk-ticket.status_changed-solved.json");
        let webhook = hook(&h, &body);
        let ev = Zendesk.parse(&webhook, &s).expect("solved parses");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Resolved);
        assert_eq!(ev[0].ticket_id, "35436");
        assert_eq!(
            ev[0].resolver,
            Some(Resolver::Ai),
            "actor is the configured AI agent"
        );
        assert_eq!(ev[0].event_key, "5d3ac8a1-1c0e-4b9c-8f43-6a9b1f3a2e11");
        assert_eq!(
            Zendesk.delivery_key(&webhook).as_deref(),
            Some("5d3ac8a1-1c0e-4b9c-8f43-6a9b1f3a2e11")
        );

        let body = payload("zendesk-ticket.status_changed-reopened.json");
        let webhook = hook(&h, &body);
        let ev = Zendesk.parse(&webhook, &s).expect("reopen parses");
        assert_eq!(ev[0].kind, EventKind::Reopened);
        assert_eq!(ev[0].channel.as_deref(), Some("email"));
    }

    #[test]
    fn human_actor_resolves_as_human() {
        let s = ProviderSettings::default();
        let h = headers(&[]);
        let body = payload("zendesk-ticket.status_changed-solved.json");
        let ev = Zendesk.parse(&hook(&h, &body), &s).expect("parses");
        assert_eq!(ev[0].resolver, Some(Resolver::Human));
    }

    #[test]
    fn trigger_body_with_rendered_placeholders() {
        let s = ProviderSettings {
            ai_tags: vec!["ai_resolved".into()],
            ..Default::default()
        };
        let body = br#"{"event":"ticket_solved","ticket_id":"88","status":"Solved","via":"Web Form","assignee_id":"1","requester_id":"2","updated_by_id":"1","tags":"billing ai_resolved","updated_at":"2025-01-08T10:14:22Z"}"#;
        let h = headers(&[]);
        let webhook = hook(&h, body);
        let ev = Zendesk.parse(&webhook, &s).expect("parses");
        assert_eq!(ev[0].kind, EventKind::Resolved);
        assert_eq!(ev[0].resolver, Some(Resolver::Ai));
        assert_eq!(ev[0].tags, vec!["billing", "ai_resolved"]);
        assert!(Zendesk
            .delivery_key(&webhook)
            .is_some_and(|k| k == ev[0].event_key));
    }

    #[test]
    fn unrendered_template_is_a_parse_error() {
        let body = payload("zendesk-trigger-webhook-solved.json");
        let h = headers(&[]);
        assert!(Zendesk
            .parse(&hook(&h, &body), &ProviderSettings::default())
            .is_err());
    }

    #[test]
    fn comment_by_requester_is_a_customer_reply_and_assignment_a_hand_off() {
        let s = settings("x");
        let h = headers(&[]);
        let comment = br#"{"type":"zen:event-type:ticket.comment_added","id":"c1","time":"2025-01-09T08:00:00Z","subject":"zen:ticket:35436","detail":{"id":"35436","requester_id":"42","actor_id":"42"},"event":{"comment":{"id":"9","author":{"id":"42","is_staff":false}}}}"#;
        let ev = Zendesk.parse(&hook(&h, comment), &s).expect("parses");
        assert_eq!(ev[0].kind, EventKind::CustomerReplied);
        let assign = br#"{"type":"zen:event-type:ticket.agent_assignment_changed","id":"a1","time":"2025-01-09T08:00:00Z","detail":{"id":"35436"},"event":{"current":"777","previous":"8447388090494"}}"#;
        let ev = Zendesk.parse(&hook(&h, assign), &s).expect("parses");
        assert_eq!(ev[0].kind, EventKind::HandedOffToHuman);
        let to_ai = br#"{"type":"zen:event-type:ticket.agent_assignment_changed","id":"a2","time":"2025-01-09T08:00:00Z","detail":{"id":"35436"},"event":{"current":"8447388090494"}}"#;
        assert!(Zendesk
            .parse(&hook(&h, to_ai), &s)
            .expect("parses")
            .is_empty());
    }
}
