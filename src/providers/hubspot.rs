//! HubSpot: app webhook subscriptions on tickets. The body is a JSON **array**
//! of events (HubSpot batches up to 100 per request); one delivery expands into
//! all its events.
//!
//! Authenticity (v3): `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(app client
//! secret, method + URI + raw body + `X-HubSpot-Request-Timestamp`)), the
//! timestamp in milliseconds and at most 5 minutes old (HubSpot's rule; a
//! shorter `server.signature_tolerance` wins). The URI is the public URL HubSpot
//! called: `webhook_url` when configured (recommended behind a proxy), else
//! rebuilt from `Host`/`X-Forwarded-Proto` and the request path; the
//! URL-encoded characters HubSpot lists (`%3A` `%2F` `%3F` `%40` `%21` `%24`
//! `%27` `%28` `%29` `%2A` `%2C` `%3B`) are decoded first, as its docs say.
//!
//! Events: `ticket.propertyChange` (or `object.propertyChange` on object type
//! `0-5`) of `hs_pipeline_stage`: into one of `closed_stage_ids` → resolved;
//! into one of `open_stage_ids` (or, when that list is empty, any other stage)
//! → reopened. Stage ids are per portal and pipeline (Settings → Objects →
//! Tickets → Pipelines, or the Pipelines API). The resolver is AI when
//! `sourceId` (e.g. `userId:76023669`, or its id part) is in `ai_agent_ids`, or
//! `changeSource` (the channel, e.g. `CRM_UI`, `AUTOMATION_PLATFORM`) is in
//! `ai_channels`.
//!
//! Dedupe key per event: HubSpot documents `eventId` as not guaranteed unique,
//! so a composite of portal, subscription type, `eventId`, object id and
//! `occurredAt`. The delivery key is a composite of all its event keys
//! (`attemptNumber` changes on retries and is left out), so a retried batch is a
//! duplicate delivery.

use super::json::{i64_at, str_at};
use super::signature::{any_secret_matches, b64_decode, hmac_sha256};
use super::{ParseError, Provider, ProviderSettings, VerifyContext, VerifyError, Webhook};
use crate::event::{composite_key, EventKind, TicketEvent};
use serde_json::Value;
use std::time::Duration;

pub const SIGNATURE_HEADER: &str = "x-hubspot-signature-v3";
pub const TIMESTAMP_HEADER: &str = "x-hubspot-request-timestamp";
/// HubSpot: "Reject the request if the timestamp is older than 5 minutes."
pub const MAX_AGE: Duration = Duration::from_secs(300);

pub struct HubSpot;

/// Decode the percent-escapes HubSpot's docs list for the v3 URI.
pub fn decode_uri(uri: &str) -> String {
    const ESCAPES: [(&str, &str); 12] = [
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match ESCAPES
            .iter()
            .find(|(e, _)| tail.get(..3).is_some_and(|t| t.eq_ignore_ascii_case(e)))
        {
            Some((_, c)) => {
                out.push_str(c);
                rest = &tail[3..];
            }
            None => {
                out.push('%');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The URI HubSpot signed.
fn signed_uri(hook: &Webhook<'_>, s: &ProviderSettings) -> Option<String> {
    if let Some(url) = s.webhook_url.as_deref().filter(|u| !u.trim().is_empty()) {
        return Some(decode_uri(url.trim()));
    }
    let host = hook
        .header("x-forwarded-host")
        .or_else(|| hook.header("host"))?;
    let proto = hook
        .header("x-forwarded-proto")
        .and_then(|p| p.split(',').next())
        .map(str::trim)
        .unwrap_or("https");
    Some(decode_uri(&format!(
        "{proto}://{host}{}",
        hook.path_and_query
    )))
}

fn events_of(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => Vec::new(),
    }
}

fn event_key(e: &Value) -> Option<String> {
    let event_id = str_at(e, &["eventId"])?;
    Some(composite_key(&[
        "hubspot",
        &str_at(e, &["portalId"]).unwrap_or_default(),
        &str_at(e, &["subscriptionType"]).unwrap_or_default(),
        &event_id,
        &str_at(e, &["objectId"]).unwrap_or_default(),
        &str_at(e, &["occurredAt"]).unwrap_or_default(),
    ]))
}

fn is_ticket_stage_change(e: &Value) -> bool {
    let kind = str_at(e, &["subscriptionType"]).unwrap_or_default();
    let on_ticket = kind == "ticket.propertyChange"
        || (kind == "object.propertyChange"
            && str_at(e, &["objectTypeId"]).as_deref() == Some("0-5"));
    on_ticket && str_at(e, &["propertyName"]).as_deref() == Some("hs_pipeline_stage")
}

impl HubSpot {
    fn parse_one(
        &self,
        e: &Value,
        s: &ProviderSettings,
    ) -> Result<Option<TicketEvent>, ParseError> {
        if !is_ticket_stage_change(e) {
            return Ok(None);
        }
        let stage = str_at(e, &["propertyValue"])
            .ok_or_else(|| ParseError::new("hubspot stage change without `propertyValue`"))?;
        let kind = if s.closed_stage_ids.contains(&stage) {
            EventKind::Resolved
        } else if s.open_stage_ids.is_empty() || s.open_stage_ids.contains(&stage) {
            EventKind::Reopened
        } else {
            return Ok(None);
        };
        let event_key =
            event_key(e).ok_or_else(|| ParseError::new("hubspot event has no `eventId`"))?;
        let ticket_id = str_at(e, &["objectId"])
            .ok_or_else(|| ParseError::new("hubspot event has no `objectId`"))?;
        let occurred_at = i64_at(e, &["occurredAt"])
            .and_then(chrono::DateTime::from_timestamp_millis)
            .ok_or_else(|| ParseError::new("hubspot event has no valid `occurredAt`"))?;
        let source = str_at(e, &["sourceId"]);
        let channel = str_at(e, &["changeSource"]);
        let ai_source = source.as_deref().is_some_and(|src| {
            s.is_ai_agent(src) || src.split_once(':').is_some_and(|(_, id)| s.is_ai_agent(id))
        });
        let resolver = (kind == EventKind::Resolved).then(|| {
            if ai_source {
                crate::event::Resolver::Ai
            } else {
                s.resolve(None, &[], channel.as_deref())
            }
        });
        Ok(Some(TicketEvent {
            event_key,
            ticket_id,
            kind,
            occurred_at,
            resolver,
            actor_id: source,
            tags: Vec::new(),
            channel,
        }))
    }
}

impl Provider for HubSpot {
    fn name(&self) -> &'static str {
        "hubspot"
    }

    fn verify(&self, hook: &Webhook<'_>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
        if !ctx.settings.has_usable_secret() {
            return Err(VerifyError::NoSecret);
        }
        let sig = hook
            .header(SIGNATURE_HEADER)
            .ok_or(VerifyError::Missing("X-HubSpot-Signature-v3"))?;
        let ts = hook
            .header(TIMESTAMP_HEADER)
            .ok_or(VerifyError::Missing("X-HubSpot-Request-Timestamp"))?
            .trim();
        let given = b64_decode(sig).ok_or(VerifyError::Malformed("X-HubSpot-Signature-v3"))?;
        let at = ts
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .ok_or(VerifyError::Malformed("X-HubSpot-Request-Timestamp"))?;
        let uri = signed_uri(hook, ctx.settings).ok_or(VerifyError::Missing(
            "Host (or configure webhook_url for HubSpot)",
        ))?;
        if !any_secret_matches(ctx.settings, &given, |k| {
            hmac_sha256(
                k,
                &[
                    hook.method.as_bytes(),
                    uri.as_bytes(),
                    hook.body,
                    ts.as_bytes(),
                ],
            )
        }) {
            return Err(VerifyError::Mismatch);
        }
        let strict = VerifyContext {
            tolerance: ctx.tolerance.min(MAX_AGE),
            ..*ctx
        };
        super::generic::check_age(at, &strict)
    }

    fn delivery_key(&self, hook: &Webhook<'_>) -> Option<String> {
        let v: Value = serde_json::from_slice(hook.body).ok()?;
        let mut keys: Vec<String> = events_of(&v).into_iter().filter_map(event_key).collect();
        if keys.is_empty() {
            return None;
        }
        keys.sort();
        keys.dedup();
        let mut parts = vec!["hubspot-batch"];
        parts.extend(keys.iter().map(String::as_str));
        Some(composite_key(&parts))
    }

    fn parse(
        &self,
        hook: &Webhook<'_>,
        s: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let v: Value = serde_json::from_slice(hook.body)
            .map_err(|e| ParseError::new(format!("hubspot body: {e}")))?;
        if !v.is_array() && !v.is_object() {
            return Err(ParseError::new("hubspot body is not an array of events"));
        }
        let mut out = Vec::new();
        for e in events_of(&v) {
            if let Some(ev) = self.parse_one(e, s)? {
                out.push(ev);
            }
        }
        Ok(out)
    }

    fn check_settings(&self, s: &ProviderSettings) -> Vec<String> {
        let mut errs = s.secret_problems();
        if s.closed_stage_ids.iter().all(|x| x.trim().is_empty()) {
            errs.push("needs closed_stage_ids (the hs_pipeline_stage ids that mean closed)".into());
        }
        if let Some(u) = &s.webhook_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                errs.push(format!("webhook_url `{u}` is not an http(s) URL"));
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Resolver;
    use crate::providers::testdata::{batch_payload, ctx_at, headers, vectors};

    fn settings(secret: &str, url: &str) -> ProviderSettings {
        ProviderSettings {
            secrets: vec![secret.into()],
            webhook_url: Some(url.into()),
            closed_stage_ids: vec!["4".into()],
            ai_agent_ids: vec!["76023669".into()],
            ..Default::default()
        }
    }

    fn post<'a>(h: &'a super::super::Headers, body: &'a [u8]) -> Webhook<'a> {
        Webhook {
            method: "POST",
            path_and_query: "/webhooks/hubspot",
            headers: h,
            body,
        }
    }

    #[test]
    fn reference_vectors_verify_and_go_stale_after_five_minutes() {
        let vs = vectors("hubspot");
        assert_eq!(vs.len(), 2);
        for v in vs {
            let body = v["body"].as_str().expect("body").as_bytes();
            let ts = v["headers_in"]["X-HubSpot-Request-Timestamp"]
                .as_str()
                .expect("ts");
            let sig = v["expected_headers"]["X-HubSpot-Signature-v3"]
                .as_str()
                .expect("sig");
            let s = settings(
                v["secret"].as_str().expect("secret"),
                v["uri"].as_str().expect("uri"),
            );
            let now = ts.parse::<i64>().expect("ms") / 1000;
            let h = headers(&[(SIGNATURE_HEADER, sig), (TIMESTAMP_HEADER, ts)]);
            assert_eq!(
                HubSpot.verify(&post(&h, body), &ctx_at(&s, now + 60)),
                Ok(())
            );
            assert_eq!(
                HubSpot.verify(&post(&h, body), &ctx_at(&s, now + 301)),
                Err(VerifyError::Stale)
            );
            // A longer server tolerance does not stretch HubSpot's 5 minutes.
            let mut long = ctx_at(&s, now + 400);
            long.tolerance = Duration::from_secs(3600);
            assert_eq!(
                HubSpot.verify(&post(&h, body), &long),
                Err(VerifyError::Stale)
            );
            let tampered = [body, b" "].concat();
            assert_eq!(
                HubSpot.verify(&post(&h, &tampered), &ctx_at(&s, now)),
                Err(VerifyError::Mismatch)
            );
            let other_url = settings(
                v["secret"].as_str().expect("secret"),
                "https://elsewhere.example/x",
            );
            assert_eq!(
                HubSpot.verify(&post(&h, body), &ctx_at(&other_url, now)),
                Err(VerifyError::Mismatch)
            );
            let mut get = post(&h, body);
            get.method = "GET";
            assert_eq!(
                HubSpot.verify(&get, &ctx_at(&s, now)),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn uri_is_rebuilt_from_host_and_path_without_webhook_url() {
        let v = &vectors("hubspot")[0];
        let body = v["body"].as_str().expect("body").as_bytes();
        let ts = v["headers_in"]["X-HubSpot-Request-Timestamp"]
            .as_str()
            .expect("ts");
        let sig = v["expected_headers"]["X-HubSpot-Signature-v3"]
            .as_str()
            .expect("sig");
        let mut s = settings(v["secret"].as_str().expect("secret"), "");
        s.webhook_url = None;
        let h = headers(&[
            (SIGNATURE_HEADER, sig),
            (TIMESTAMP_HEADER, ts),
            ("Host", "sidecar.example.com"),
        ]);
        let now = ts.parse::<i64>().expect("ms") / 1000;
        assert_eq!(HubSpot.verify(&post(&h, body), &ctx_at(&s, now)), Ok(()));
    }

    #[test]
    fn listed_escapes_are_decoded() {
        assert_eq!(
            decode_uri("https://h.example/p%3Fa%3Db%2Cc%25d%2a"),
            "https://h.example/p?a%3Db,c%25d*"
        );
        assert_eq!(decode_uri("%"), "%");
        assert_eq!(decode_uri("100%3"), "100%3");
    }

    #[test]
    fn closed_and_reopened_batches_parse() {
        let s = settings("k", "https://x.example");
        let h = headers(&[]);
        let body = batch_payload("hubspot-ticket.propertyChange-closed.json");
        let ev = HubSpot.parse(&post(&h, &body), &s).expect("parses");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Resolved);
        assert_eq!(ev[0].ticket_id, "25810011223");
        assert_eq!(
            ev[0].resolver,
            Some(Resolver::Ai),
            "userId:76023669 is the AI agent"
        );
        assert_eq!(ev[0].occurred_at.timestamp_millis(), 1_752_613_920_733);
        assert_eq!(ev[0].channel.as_deref(), Some("CRM_UI"));
        let mut human = s.clone();
        human.ai_agent_ids.clear();
        assert_eq!(
            HubSpot.parse(&post(&h, &body), &human).expect("parses")[0].resolver,
            Some(Resolver::Human)
        );

        let body = batch_payload("hubspot-ticket.propertyChange-reopened.json");
        let ev = HubSpot.parse(&post(&h, &body), &s).expect("parses");
        assert_eq!(ev[0].kind, EventKind::Reopened);
        let mut strict = s.clone();
        strict.open_stage_ids = vec!["2".into()];
        assert!(HubSpot
            .parse(&post(&h, &body), &strict)
            .expect("parses")
            .is_empty());
    }

    #[test]
    fn a_batch_expands_into_every_event_and_retries_keep_the_delivery_key() {
        let s = settings("k", "https://x.example");
        let h = headers(&[]);
        let batch = |attempt: u32| {
            format!(
                r#"[{{"eventId":1,"portalId":9,"occurredAt":1752613920733,"subscriptionType":"ticket.propertyChange","attemptNumber":{attempt},"objectId":11,"propertyName":"hs_pipeline_stage","propertyValue":"4","sourceId":"userId:76023669"}},
                   {{"eventId":2,"portalId":9,"occurredAt":1752613920999,"subscriptionType":"ticket.propertyChange","attemptNumber":{attempt},"objectId":12,"propertyName":"hs_pipeline_stage","propertyValue":"4","sourceId":"userId:1"}},
                   {{"eventId":3,"portalId":9,"occurredAt":1752613921000,"subscriptionType":"ticket.propertyChange","attemptNumber":{attempt},"objectId":12,"propertyName":"subject","propertyValue":"x"}},
                   {{"eventId":4,"portalId":9,"occurredAt":1752613921000,"subscriptionType":"ticket.creation","attemptNumber":{attempt},"objectId":13}}]"#
            )
        };
        let first = batch(0);
        let ev = HubSpot
            .parse(&post(&h, first.as_bytes()), &s)
            .expect("parses");
        assert_eq!(ev.len(), 2);
        assert_ne!(ev[0].event_key, ev[1].event_key);
        assert_eq!(ev[1].resolver, Some(Resolver::Human));
        let retry = batch(1);
        assert_eq!(
            HubSpot.delivery_key(&post(&h, first.as_bytes())),
            HubSpot.delivery_key(&post(&h, retry.as_bytes()))
        );
        assert!(HubSpot.parse(&post(&h, b"42"), &s).is_err());
    }

    #[test]
    fn settings_without_closed_stages_are_reported() {
        let errs = HubSpot.check_settings(&ProviderSettings::default());
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[1].contains("closed_stage_ids"));
    }
}
