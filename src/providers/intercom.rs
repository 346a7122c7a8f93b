//! Intercom: conversation webhooks (`notification_event`).
//!
//! Authenticity: `X-Hub-Signature: sha1=<hex HMAC-SHA1(client secret, raw body)>`
//! (no timestamp: Intercom's scheme has none, so staleness cannot be checked;
//! replays are absorbed by the dedupe on the notification id).
//!
//! Topics: `conversation.admin.closed` → resolved (AI when Fin's
//! `ai_agent.resolution_state` is an assumed/confirmed resolution, or the closing
//! admin is a configured AI agent id); `conversation.user.replied` → customer
//! replied; `conversation.admin.opened` → reopened; `conversation.admin.assigned`
//! to a human admin or a team → hand-off.

use super::json::{i64_at, str_at, strings_at};
use super::signature::{any_secret_matches, hmac_sha1};
use super::{ParseError, Provider, ProviderSettings, VerifyContext, VerifyError, Webhook};
use crate::event::{EventKind, Resolver, TicketEvent};
use serde_json::Value;

pub const SIGNATURE_HEADER: &str = "x-hub-signature";

pub struct Intercom;

fn last_part(item: &Value) -> Option<&Value> {
    item.pointer("/conversation_parts/conversation_parts")?
        .as_array()?
        .last()
}

fn resolver(item: &Value, s: &ProviderSettings, tags: &[String]) -> Resolver {
    let channel = str_at(item, &["source", "type"]);
    let fin = item
        .pointer("/ai_agent/resolution_state")
        .and_then(Value::as_str)
        .is_some_and(|st| matches!(st, "assumed_resolution" | "confirmed_resolution"));
    let part = last_part(item);
    let closer = part
        .and_then(|p| str_at(p, &["author", "id"]))
        .or_else(|| str_at(item, &["statistics", "last_closed_by_id"]));
    // A teammate (author type `admin`) who is not a configured AI agent closed it
    // by hand: human, whatever Fin's earlier resolution state says.
    let closed_by_teammate = part
        .and_then(|p| str_at(p, &["author", "type"]))
        .is_some_and(|t| t == "admin")
        && !closer.as_deref().is_some_and(|c| s.is_ai_agent(c));
    if fin && !closed_by_teammate {
        Resolver::Ai
    } else {
        s.resolve(closer.as_deref(), tags, channel.as_deref())
    }
}

impl Provider for Intercom {
    fn name(&self) -> &'static str {
        "intercom"
    }

    fn verify(&self, hook: &Webhook<'_>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
        if !ctx.settings.has_usable_secret() {
            return Err(VerifyError::NoSecret);
        }
        let header = hook
            .header(SIGNATURE_HEADER)
            .ok_or(VerifyError::Missing("X-Hub-Signature"))?;
        let given = header
            .trim()
            .strip_prefix("sha1=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or(VerifyError::Malformed("X-Hub-Signature"))?;
        if any_secret_matches(ctx.settings, &given, |k| hmac_sha1(k, &[hook.body])) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    fn delivery_key(&self, hook: &Webhook<'_>) -> Option<String> {
        let v: Value = serde_json::from_slice(hook.body).ok()?;
        str_at(&v, &["id"])
    }

    fn parse(
        &self,
        hook: &Webhook<'_>,
        s: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let v: Value = serde_json::from_slice(hook.body)
            .map_err(|e| ParseError::new(format!("intercom body: {e}")))?;
        let topic = str_at(&v, &["topic"])
            .ok_or_else(|| ParseError::new("intercom notification has no `topic`"))?;
        let event_key = str_at(&v, &["id"])
            .ok_or_else(|| ParseError::new("intercom notification has no `id`"))?;
        let item = v
            .pointer("/data/item")
            .ok_or_else(|| ParseError::new("intercom notification has no data.item"))?;
        let kind = match topic.as_str() {
            "conversation.admin.closed" => EventKind::Resolved,
            "conversation.user.replied" => EventKind::CustomerReplied,
            "conversation.admin.opened" => EventKind::Reopened,
            "conversation.admin.assigned" => {
                let team = str_at(item, &["team_assignee_id"]).is_some_and(|t| t != "0");
                let human_admin = str_at(item, &["admin_assignee_id"])
                    .or_else(|| str_at(item, &["assignee", "id"]))
                    .is_some_and(|a| a != "0" && !s.is_ai_agent(&a));
                if team || human_admin {
                    EventKind::HandedOffToHuman
                } else {
                    return Ok(Vec::new());
                }
            }
            _ => return Ok(Vec::new()),
        };
        let ticket_id = str_at(item, &["id"])
            .ok_or_else(|| ParseError::new("intercom conversation has no id"))?;
        let at = last_part(item)
            .and_then(|p| i64_at(p, &["created_at"]))
            .or_else(|| {
                (kind == EventKind::Resolved)
                    .then(|| i64_at(item, &["statistics", "last_close_at"]))
                    .flatten()
            })
            .or_else(|| i64_at(item, &["updated_at"]))
            .or_else(|| i64_at(&v, &["created_at"]))
            .and_then(super::unix_seconds)
            .ok_or_else(|| ParseError::new("intercom notification has no usable time"))?;
        let tags = strings_at(item, &["tags", "tags"], Some("name"));
        Ok(vec![TicketEvent {
            resolver: (kind == EventKind::Resolved).then(|| resolver(item, s, &tags)),
            actor_id: last_part(item).and_then(|p| str_at(p, &["author", "id"])),
            event_key,
            ticket_id,
            kind,
            occurred_at: at,
            channel: str_at(item, &["source", "type"]),
            tags,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testdata::{headers, hook, payload, vectors};

    fn ctx(s: &ProviderSettings) -> VerifyContext<'_> {
        VerifyContext {
            settings: s,
            now: chrono::Utc::now(),
            tolerance: std::time::Duration::from_secs(300),
        }
    }

    #[test]
    fn reference_vectors_verify() {
        let vs = vectors("intercom");
        assert_eq!(vs.len(), 2);
        for v in vs {
            let body = v["body"].as_str().expect("body").as_bytes();
            let sig = v["expected_headers"]["X-Hub-Signature"]
                .as_str()
                .expect("sig");
            let s = ProviderSettings {
                secrets: vec![v["secret"].as_str().expect("secret").into()],
                ..Default::default()
            };
            let h = headers(&[(SIGNATURE_HEADER, sig)]);
            assert_eq!(Intercom.verify(&hook(&h, body), &ctx(&s)), Ok(()));
            let tampered = [body, b" "].concat();
            assert_eq!(
                Intercom.verify(&hook(&h, &tampered), &ctx(&s)),
                Err(VerifyError::Mismatch)
            );
        }
        let s = ProviderSettings {
            secrets: vec!["intercom-secret".into()],
            ..Default::default()
        };
        let h = headers(&[(SIGNATURE_HEADER, "md5=00")]);
        assert_eq!(
            Intercom.verify(&hook(&h, b"{}"), &ctx(&s)),
            Err(VerifyError::Malformed("X-Hub-Signature"))
        );
    }

    #[test]
    fn fin_resolution_is_ai_and_reply_reopens() {
        let s = ProviderSettings::default();
        let h = headers(&[]);
        let body = payload("intercom-conversation.admin.closed-fin.json");
        let ev = Intercom.parse(&hook(&h, &body), &s).expect("parses");
        assert_eq!(ev[0].kind, EventKind::Resolved);
        assert_eq!(ev[0].resolver, Some(Resolver::Ai));
        assert_eq!(ev[0].ticket_id, "471");
        assert_eq!(ev[0].occurred_at.timestamp(), 1_734_541_120);

        let body = payload("intercom-conversation.user.replied-reopen.json");
        let ev = Intercom.parse(&hook(&h, &body), &s).expect("parses");
        assert_eq!(ev[0].kind, EventKind::CustomerReplied);
        assert_eq!(ev[0].occurred_at.timestamp(), 1_734_600_000);
    }

    #[test]
    fn admin_close_is_human_unless_admin_is_configured_as_ai() {
        let h = headers(&[]);
        let body = payload("intercom-conversation.admin.closed.json");
        let webhook = hook(&h, &body);
        let ev = Intercom
            .parse(&webhook, &ProviderSettings::default())
            .expect("parses");
        assert_eq!(ev[0].resolver, Some(Resolver::Human));
        let s = ProviderSettings {
            ai_agent_ids: vec!["3330619".into()],
            ..Default::default()
        };
        assert_eq!(
            Intercom.parse(&webhook, &s).expect("parses")[0].resolver,
            Some(Resolver::Ai)
        );
    }

    #[test]
    fn a_teammate_closing_by_hand_is_human_despite_a_stale_fin_state() {
        let h = headers(&[]);
        let mut v: serde_json::Value =
            serde_json::from_slice(&payload("intercom-conversation.admin.closed.json"))
                .expect("json");
        v["data"]["item"]["ai_agent"] =
            serde_json::json!({"resolution_state": "assumed_resolution"});
        let body = v.to_string().into_bytes();
        let webhook = hook(&h, &body);
        let ev = Intercom
            .parse(&webhook, &ProviderSettings::default())
            .expect("parses");
        assert_eq!(ev[0].resolver, Some(Resolver::Human));
    }

    #[test]
    fn assignment_to_a_team_is_a_hand_off_and_other_topics_are_ignored() {
        let h = headers(&[]);
        let body = br#"{"type":"notification_event","id":"notif_1","topic":"conversation.admin.assigned","created_at":1734600000,"data":{"item":{"type":"conversation","id":"471","team_assignee_id":"5","admin_assignee_id":null,"updated_at":1734600000}}}"#;
        let ev = Intercom
            .parse(&hook(&h, body), &ProviderSettings::default())
            .expect("parses");
        assert_eq!(ev[0].kind, EventKind::HandedOffToHuman);
        let ping =
            br#"{"type":"notification_event","id":"notif_2","topic":"ping","data":{"item":{}}}"#;
        assert!(Intercom
            .parse(&hook(&h, ping), &ProviderSettings::default())
            .expect("parses")
            .is_empty());
    }
}
