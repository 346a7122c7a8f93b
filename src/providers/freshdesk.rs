//! Freshdesk: automation rules ("Ticket updates") whose action is **Trigger
//! webhook**, with a JSON body the admin pastes (docs/helpdesks.md, "Freshdesk").
//!
//! Authenticity: Freshdesk does not sign webhooks. The rule sends a per-tenant
//! secret, as Basic auth (`basic_auth_user` + a password from `secrets`) or in a
//! custom header (`auth_header`); it is compared in constant time. No timestamp,
//! so no staleness check; replays are absorbed by the dedupe keys.
//!
//! Body fields (our template): `event` (`ticket_status_changed`,
//! `customer_reply`, `agent_assigned`), `ticket_id`, `status` (`{{ticket.status}}`:
//! Resolved (4) / Closed (5) are resolutions, anything else after one is a
//! reopen), `agent_id` / `agent_email` (matched against `ai_agent_ids`),
//! `source` (channel), `tags` (comma-separated), `updated_at`.
//!
//! `{{ticket.updated_at}}` renders like `Wed, 8 Jan 2025 at 10:14 AM` (minute
//! precision, the helpdesk's time zone, read as UTC); RFC 3339 is accepted too.
//! Dedupe key: there is no event id, so a composite of event, ticket id, status
//! and `updated_at`.

use super::json::str_at;
use super::{ParseError, Provider, ProviderSettings, VerifyContext, VerifyError, Webhook};
use crate::event::{composite_key, EventKind, TicketEvent};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

pub struct Freshdesk;

/// Resolved (4) or Closed (5), by name or number.
pub fn is_resolved_status(status: &str) -> bool {
    matches!(
        status.trim().to_ascii_lowercase().as_str(),
        "resolved" | "closed" | "4" | "5"
    )
}

/// `{{ticket.updated_at}}` as rendered (`Wed, 8 Jan 2025 at 10:14 AM`), or RFC 3339.
pub fn parse_freshdesk_time(s: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = super::parse_time(s) {
        return Some(t);
    }
    let s = s.trim();
    // Drop the weekday ("Wed, "), the word "at" and commas.
    let rest = match s.split_once(", ") {
        Some((day, rest)) if day.chars().all(|c| c.is_ascii_alphabetic()) => rest,
        _ => s,
    };
    let cleaned: String = rest
        .replace(',', " ")
        .split_whitespace()
        .filter(|w| !w.eq_ignore_ascii_case("at"))
        .collect::<Vec<_>>()
        .join(" ");
    [
        "%d %b %Y %I:%M %p",
        "%d %B %Y %I:%M %p",
        "%b %d %Y %I:%M %p",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(&cleaned, f).ok())
    .map(|n| n.and_utc())
}

fn unrendered(v: &str) -> bool {
    v.contains("{{")
}

fn tags_of(v: &Value) -> Vec<String> {
    match v.get("tags") {
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn event_key(v: &Value) -> Option<String> {
    let event = str_at(v, &["event"])?;
    let ticket = str_at(v, &["ticket_id"])?;
    let status = str_at(v, &["status"])
        .unwrap_or_default()
        .to_ascii_lowercase();
    let at = str_at(v, &["updated_at"]).unwrap_or_default();
    Some(composite_key(&["freshdesk", &event, &ticket, &status, &at]))
}

impl Provider for Freshdesk {
    fn name(&self) -> &'static str {
        "freshdesk"
    }

    fn verify(&self, hook: &Webhook<'_>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
        super::shared_secret::verify(hook, ctx, None, "Authorization")
    }

    fn delivery_key(&self, hook: &Webhook<'_>) -> Option<String> {
        let v: Value = serde_json::from_slice(hook.body).ok()?;
        event_key(&v)
    }

    fn parse(
        &self,
        hook: &Webhook<'_>,
        s: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let v: Value = serde_json::from_slice(hook.body)
            .map_err(|e| ParseError::new(format!("freshdesk body: {e}")))?;
        let event = str_at(&v, &["event"]).ok_or_else(|| {
            ParseError::new("freshdesk body has no `event` (see the template in docs/helpdesks.md)")
        })?;
        let ticket_id = str_at(&v, &["ticket_id"])
            .filter(|t| !unrendered(t))
            .ok_or_else(|| {
                ParseError::new("freshdesk body has no rendered `ticket_id`: use {{ticket.id}}")
            })?;
        let raw_time = str_at(&v, &["updated_at"]).unwrap_or_default();
        let occurred_at = parse_freshdesk_time(&raw_time).ok_or_else(|| {
            ParseError::new(format!(
                "freshdesk `updated_at` `{raw_time}` is not a time: use {{{{ticket.updated_at}}}}"
            ))
        })?;
        let actor = str_at(&v, &["agent_id"])
            .filter(|a| !unrendered(a))
            .or_else(|| str_at(&v, &["agent_email"]).filter(|a| !unrendered(a)));
        let is_ai = |s: &ProviderSettings| {
            ["agent_id", "agent_email"]
                .iter()
                .filter_map(|k| str_at(&v, &[k]))
                .any(|a| s.is_ai_agent(&a))
        };
        let tags = tags_of(&v);
        let channel = str_at(&v, &["source"])
            .filter(|c| !unrendered(c))
            .map(|c| c.to_ascii_lowercase());
        let kind = match event.as_str() {
            "ticket_status_changed" => {
                let status = str_at(&v, &["status"])
                    .filter(|x| !unrendered(x))
                    .ok_or_else(|| ParseError::new("freshdesk status event without `status`"))?;
                if is_resolved_status(&status) {
                    EventKind::Resolved
                } else {
                    EventKind::Reopened
                }
            }
            "customer_reply" => EventKind::CustomerReplied,
            "agent_assigned" => match &actor {
                Some(_) if !is_ai(s) => EventKind::HandedOffToHuman,
                _ => return Ok(Vec::new()),
            },
            other => {
                return Err(ParseError::new(format!(
                    "unknown freshdesk `event` `{other}` (expected ticket_status_changed, customer_reply or agent_assigned)"
                )))
            }
        };
        let resolver = (kind == EventKind::Resolved).then(|| {
            if is_ai(s) {
                crate::event::Resolver::Ai
            } else {
                s.resolve(actor.as_deref(), &tags, channel.as_deref())
            }
        });
        Ok(vec![TicketEvent {
            event_key: event_key(&v).unwrap_or_default(),
            ticket_id,
            kind,
            occurred_at,
            resolver,
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
    use crate::providers::testdata::{all_vectors, ctx_at, headers, hook, payload};

    fn settings() -> ProviderSettings {
        ProviderSettings {
            secrets: vec!["test-pass".into()],
            basic_auth_user: Some("sidecar".into()),
            ai_agent_ids: vec!["43012345678".into()],
            ..Default::default()
        }
    }

    #[test]
    fn reference_basic_auth_vector_verifies_and_a_wrong_password_does_not() {
        let v = &all_vectors("freshdesk")[0];
        let auth = v["expected_headers"]["Authorization"]
            .as_str()
            .expect("auth");
        let h = headers(&[("Authorization", auth)]);
        let body = payload("freshdesk-automation-webhook-resolved-rendered.json");
        assert_eq!(
            Freshdesk.verify(&hook(&h, &body), &ctx_at(&settings(), 0)),
            Ok(())
        );
        let wrong = ProviderSettings {
            secrets: vec!["another-secret".into()],
            ..settings()
        };
        assert_eq!(
            Freshdesk.verify(&hook(&h, &body), &ctx_at(&wrong, 0)),
            Err(VerifyError::Mismatch)
        );
        let h = headers(&[]);
        assert_eq!(
            Freshdesk.verify(&hook(&h, &body), &ctx_at(&settings(), 0)),
            Err(VerifyError::Missing("Authorization"))
        );
    }

    #[test]
    fn rendered_reference_payload_is_an_ai_resolution() {
        let h = headers(&[]);
        let body = payload("freshdesk-automation-webhook-resolved-rendered.json");
        let ev = Freshdesk
            .parse(&hook(&h, &body), &settings())
            .expect("parses");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Resolved);
        assert_eq!(ev[0].ticket_id, "1042");
        assert_eq!(ev[0].resolver, Some(Resolver::Ai));
        assert_eq!(ev[0].occurred_at.to_rfc3339(), "2025-01-08T10:14:00+00:00");
        assert_eq!(ev[0].tags, vec!["login"]);
        assert_eq!(ev[0].channel.as_deref(), Some("portal"));
        assert_eq!(
            Freshdesk.delivery_key(&hook(&h, &body)),
            Some(ev[0].event_key.clone())
        );
        // Without the agent configured as AI, the same resolution is human.
        let human = Freshdesk
            .parse(&hook(&h, &body), &ProviderSettings::default())
            .expect("parses");
        assert_eq!(human[0].resolver, Some(Resolver::Human));
    }

    #[test]
    fn unrendered_template_is_a_parse_error() {
        let h = headers(&[]);
        let body = payload("freshdesk-automation-webhook-resolved.json");
        assert!(Freshdesk.parse(&hook(&h, &body), &settings()).is_err());
    }

    #[test]
    fn back_to_open_reopens_and_customer_reply_and_assignment_are_recognised() {
        let h = headers(&[]);
        let body = br#"{"event":"ticket_status_changed","ticket_id":"1042","status":"Open","updated_at":"Thu, 9 Jan 2025 at 8:01 AM"}"#;
        let ev = Freshdesk
            .parse(&hook(&h, body), &settings())
            .expect("parses");
        assert_eq!(ev[0].kind, EventKind::Reopened);
        assert_eq!(ev[0].resolver, None);
        let body = br#"{"event":"ticket_status_changed","ticket_id":"7","status":"5","updated_at":"2025-01-09T08:01:00Z"}"#;
        assert_eq!(
            Freshdesk
                .parse(&hook(&h, body), &settings())
                .expect("parses")[0]
                .kind,
            EventKind::Resolved
        );
        let body = br#"{"event":"customer_reply","ticket_id":"1042","updated_at":"Thu, 9 Jan 2025 at 8:01 AM"}"#;
        assert_eq!(
            Freshdesk
                .parse(&hook(&h, body), &settings())
                .expect("parses")[0]
                .kind,
            EventKind::CustomerReplied
        );
        let body = br#"{"event":"agent_assigned","ticket_id":"1042","agent_email":"human@example.com","updated_at":"Thu, 9 Jan 2025 at 8:01 AM"}"#;
        assert_eq!(
            Freshdesk
                .parse(&hook(&h, body), &settings())
                .expect("parses")[0]
                .kind,
            EventKind::HandedOffToHuman
        );
        let body = br#"{"event":"agent_assigned","ticket_id":"1042","agent_id":"43012345678","updated_at":"Thu, 9 Jan 2025 at 8:01 AM"}"#;
        assert!(Freshdesk
            .parse(&hook(&h, body), &settings())
            .expect("parses")
            .is_empty());
        let body = br#"{"event":"exploded","ticket_id":"1","updated_at":"2025-01-09T08:01:00Z"}"#;
        assert!(Freshdesk.parse(&hook(&h, body), &settings()).is_err());
    }

    #[test]
    fn rendered_times_parse() {
        for (s, want) in [
            ("Wed, 8 Jan 2025 at 10:14 AM", "2025-01-08T10:14:00+00:00"),
            ("Wed, 8 Jan 2025 at 10:14 PM", "2025-01-08T22:14:00+00:00"),
            (
                "Wed, 08 January 2025 at 12:05 AM",
                "2025-01-08T00:05:00+00:00",
            ),
            ("2025-01-08T10:14:22Z", "2025-01-08T10:14:22+00:00"),
        ] {
            assert_eq!(
                parse_freshdesk_time(s).map(|t| t.to_rfc3339()).as_deref(),
                Some(want),
                "{s}"
            );
        }
        assert!(parse_freshdesk_time("{{ticket.updated_at}}").is_none());
    }
}
