//! Gorgias: HTTP integrations (Settings → Apps → HTTP integration) triggered on
//! *Ticket updated* and *Ticket message created*, with a JSON body the admin
//! pastes (docs/helpdesks.md, "Gorgias"); Gorgias renders `{{ticket.*}}` variables into it.
//!
//! Authenticity: Gorgias does not sign requests; the integration sends a custom
//! header the admin adds, here a per-tenant secret in `auth_header` (default
//! `x-api-key`), compared in constant time. No timestamp, so no staleness check.
//!
//! Body fields (our template): `event` (`ticket-updated`,
//! `ticket-message-created`, `ticket-self-unsnoozed`), `ticket_id`, `status`
//! (`closed` → resolved, `open` → reopened), `snooze_datetime` (a snoozed ticket
//! is closed but not resolved: ignored), `assignee_user_id` (matched against
//! `ai_agent_ids`), `channel`, `tags`, `updated_datetime`, `closed_datetime`;
//! for messages, `last_message_datetime` and `last_received_message_datetime`:
//! when they are equal the new message came from the customer (customer replied).
//!
//! Dedupe key: no event id, so a composite: ticket id + `closed_datetime` for a
//! resolution (later updates of a closed ticket are the same resolution), ticket
//! id + event + status + `updated_datetime` otherwise, ticket id + message time
//! for a customer message.

use super::json::str_at;
use super::{ParseError, Provider, ProviderSettings, VerifyContext, VerifyError, Webhook};
use crate::event::{composite_key, EventKind, TicketEvent};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

pub const DEFAULT_AUTH_HEADER: &str = "x-api-key";

pub struct Gorgias;

/// A rendered, non-empty template value.
fn field(v: &Value, key: &str) -> Option<String> {
    str_at(v, &[key]).filter(|s| {
        !s.contains("{{") && !s.eq_ignore_ascii_case("none") && !s.eq_ignore_ascii_case("null")
    })
}

/// Gorgias datetimes are ISO 8601, sometimes without an offset (UTC).
pub fn parse_gorgias_time(s: &str) -> Option<DateTime<Utc>> {
    super::parse_time(s).or_else(|| {
        [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s.trim(), f).ok())
        .map(|n| n.and_utc())
    })
}

fn tags_of(v: &Value) -> Vec<String> {
    match v.get("tags") {
        Some(Value::String(s)) if !s.contains("{{") => s
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|t| t.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .or_else(|| str_at(t, &["name"]))
            })
            .collect(),
        _ => Vec::new(),
    }
}

enum Shape {
    Resolved { at: String },
    Reopened { at: String },
    CustomerMessage { at: String },
    Ignored,
}

fn shape(v: &Value) -> Result<Shape, ParseError> {
    let event = field(v, "event").unwrap_or_else(|| "ticket-updated".into());
    let updated = field(v, "updated_datetime");
    match event.as_str() {
        "ticket-updated" | "ticket-self-unsnoozed" | "ticket-created" => {
            let status = field(v, "status")
                .ok_or_else(|| {
                    ParseError::new("gorgias body has no rendered `status`: use {{ticket.status}}")
                })?
                .to_ascii_lowercase();
            let snoozed = field(v, "snooze_datetime").is_some();
            match status.as_str() {
                "closed" if snoozed => Ok(Shape::Ignored),
                "closed" => field(v, "closed_datetime")
                    .or(updated)
                    .map(|at| Shape::Resolved { at })
                    .ok_or_else(|| {
                        ParseError::new(
                            "closed gorgias ticket without closed_datetime or updated_datetime",
                        )
                    }),
                "open" => updated.map(|at| Shape::Reopened { at }).ok_or_else(|| {
                    ParseError::new("gorgias body has no rendered `updated_datetime`")
                }),
                _ => Ok(Shape::Ignored),
            }
        }
        "ticket-message-created" => {
            let last = field(v, "last_message_datetime");
            let received = field(v, "last_received_message_datetime");
            match (last, received) {
                (Some(l), Some(r)) if l == r => Ok(Shape::CustomerMessage { at: r }),
                (Some(_), _) => Ok(Shape::Ignored),
                _ => Err(ParseError::new(
                    "gorgias message body needs {{ticket.last_message_datetime}} and {{ticket.last_received_message_datetime}}",
                )),
            }
        }
        other => Err(ParseError::new(format!(
            "unknown gorgias `event` `{other}` (expected ticket-updated or ticket-message-created)"
        ))),
    }
}

fn key(v: &Value) -> Option<String> {
    let ticket = field(v, "ticket_id")?;
    let event = field(v, "event").unwrap_or_default();
    let status = field(v, "status").unwrap_or_default().to_ascii_lowercase();
    Some(match shape(v).ok()? {
        Shape::Resolved { at } => composite_key(&["gorgias", &ticket, "closed", &at]),
        Shape::CustomerMessage { at } => composite_key(&["gorgias", &ticket, "message-in", &at]),
        Shape::Reopened { at } => composite_key(&["gorgias", &ticket, &event, &status, &at]),
        Shape::Ignored => composite_key(&[
            "gorgias",
            &ticket,
            &event,
            &status,
            &field(v, "updated_datetime").unwrap_or_default(),
        ]),
    })
}

impl Provider for Gorgias {
    fn name(&self) -> &'static str {
        "gorgias"
    }

    fn verify(&self, hook: &Webhook<'_>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
        super::shared_secret::verify(
            hook,
            ctx,
            Some(DEFAULT_AUTH_HEADER),
            "x-api-key (or auth_header)",
        )
    }

    fn delivery_key(&self, hook: &Webhook<'_>) -> Option<String> {
        let v: Value = serde_json::from_slice(hook.body).ok()?;
        key(&v)
    }

    fn parse(
        &self,
        hook: &Webhook<'_>,
        s: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let v: Value = serde_json::from_slice(hook.body)
            .map_err(|e| ParseError::new(format!("gorgias body: {e}")))?;
        let ticket_id = field(&v, "ticket_id").ok_or_else(|| {
            ParseError::new("gorgias body has no rendered `ticket_id`: use {{ticket.id}}")
        })?;
        let (kind, at) = match shape(&v)? {
            Shape::Resolved { at } => (EventKind::Resolved, at),
            Shape::Reopened { at } => (EventKind::Reopened, at),
            Shape::CustomerMessage { at } => (EventKind::CustomerReplied, at),
            Shape::Ignored => return Ok(Vec::new()),
        };
        let occurred_at = parse_gorgias_time(&at)
            .ok_or_else(|| ParseError::new(format!("gorgias time `{at}` is not ISO 8601")))?;
        let tags = tags_of(&v);
        let channel = field(&v, "channel");
        let actor = field(&v, "assignee_user_id");
        Ok(vec![TicketEvent {
            resolver: (kind == EventKind::Resolved)
                .then(|| s.resolve(actor.as_deref(), &tags, channel.as_deref())),
            event_key: key(&v).unwrap_or_default(),
            ticket_id,
            kind,
            occurred_at,
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
            secrets: vec!["abcdef12345".into()],
            ai_agent_ids: vec!["555".into()],
            ..Default::default()
        }
    }

    const CLOSED: &[u8] = br#"{"event":"ticket-updated","ticket_id":"9001","status":"closed","assignee_user_id":"555","channel":"chat","tags":"billing, ai-handled","updated_datetime":"2026-01-01T00:00:05.123456","closed_datetime":"2026-01-01T00:00:00.000000","snooze_datetime":""}"#;

    #[test]
    fn reference_header_vector_verifies_and_others_do_not() {
        let v = &all_vectors("gorgias")[0];
        let key = v["expected_headers"]["x-api-key"].as_str().expect("key");
        let h = headers(&[("x-api-key", key)]);
        assert_eq!(
            Gorgias.verify(&hook(&h, CLOSED), &ctx_at(&settings(), 0)),
            Ok(())
        );
        let h = headers(&[("x-api-key", "abcdef12346")]);
        assert_eq!(
            Gorgias.verify(&hook(&h, CLOSED), &ctx_at(&settings(), 0)),
            Err(VerifyError::Mismatch)
        );
        let h = headers(&[]);
        assert!(matches!(
            Gorgias.verify(&hook(&h, CLOSED), &ctx_at(&settings(), 0)),
            Err(VerifyError::Missing(_))
        ));
        // A custom header name replaces the default.
        let custom = ProviderSettings {
            auth_header: Some("X-Outcome-Secret".into()),
            ..settings()
        };
        let h = headers(&[("x-outcome-secret", key)]);
        assert_eq!(
            Gorgias.verify(&hook(&h, CLOSED), &ctx_at(&custom, 0)),
            Ok(())
        );
        let h = headers(&[("x-api-key", key)]);
        assert!(Gorgias
            .verify(&hook(&h, CLOSED), &ctx_at(&custom, 0))
            .is_err());
    }

    #[test]
    fn closed_ticket_is_a_resolution_by_the_assignee() {
        let h = headers(&[]);
        let ev = Gorgias
            .parse(&hook(&h, CLOSED), &settings())
            .expect("parses");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Resolved);
        assert_eq!(ev[0].resolver, Some(Resolver::Ai));
        assert_eq!(ev[0].occurred_at.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(ev[0].tags, vec!["billing", "ai-handled"]);
        assert_eq!(
            Gorgias.delivery_key(&hook(&h, CLOSED)),
            Some(ev[0].event_key.clone())
        );
        // Another update of the closed ticket is the same resolution (same key).
        let later = String::from_utf8_lossy(CLOSED).replace("00:00:05.123456", "00:10:00");
        assert_eq!(
            Gorgias
                .parse(&hook(&h, later.as_bytes()), &settings())
                .expect("parses")[0]
                .event_key,
            ev[0].event_key
        );
        let by_tag = ProviderSettings {
            ai_tags: vec!["ai-handled".into()],
            ..Default::default()
        };
        assert_eq!(
            Gorgias.parse(&hook(&h, CLOSED), &by_tag).expect("parses")[0].resolver,
            Some(Resolver::Ai)
        );
        assert_eq!(
            Gorgias
                .parse(&hook(&h, CLOSED), &ProviderSettings::default())
                .expect("parses")[0]
                .resolver,
            Some(Resolver::Human)
        );
    }

    #[test]
    fn reopen_snooze_and_customer_message() {
        let h = headers(&[]);
        let open = br#"{"event":"ticket-updated","ticket_id":"9001","status":"open","updated_datetime":"2026-01-02T00:00:00"}"#;
        assert_eq!(
            Gorgias.parse(&hook(&h, open), &settings()).expect("parses")[0].kind,
            EventKind::Reopened
        );
        let snoozed = String::from_utf8_lossy(CLOSED).replace(
            r#""snooze_datetime":"""#,
            r#""snooze_datetime":"2026-01-05T00:00:00""#,
        );
        assert!(Gorgias
            .parse(&hook(&h, snoozed.as_bytes()), &settings())
            .expect("parses")
            .is_empty());
        let inbound = br#"{"event":"ticket-message-created","ticket_id":"9001","status":"open","last_message_datetime":"2026-01-02T01:00:00","last_received_message_datetime":"2026-01-02T01:00:00"}"#;
        assert_eq!(
            Gorgias
                .parse(&hook(&h, inbound), &settings())
                .expect("parses")[0]
                .kind,
            EventKind::CustomerReplied
        );
        let outbound = br#"{"event":"ticket-message-created","ticket_id":"9001","last_message_datetime":"2026-01-02T02:00:00","last_received_message_datetime":"2026-01-02T01:00:00"}"#;
        assert!(Gorgias
            .parse(&hook(&h, outbound), &settings())
            .expect("parses")
            .is_empty());
    }

    #[test]
    fn the_reference_template_unrendered_is_a_parse_error() {
        let h = headers(&[]);
        let body = payload("gorgias-http-integration-ticket-updated.json");
        assert!(Gorgias.parse(&hook(&h, &body), &settings()).is_err());
    }
}
