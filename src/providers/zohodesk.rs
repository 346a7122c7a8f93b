//! Zoho Desk: webhooks (Setup → Developer Space → Webhooks). The body is a JSON
//! **array** of events (Zoho batches them); one delivery expands into all of them.
//!
//! Authenticity: `X-ZDesk-JWT`, an RS256 JWT signed by Zoho, verified against
//! the configured keys (`jwks_file`, or `jwks_url` such as
//! `https://desk.zoho.com/.well-known/jwks.json`, chosen by the header's `kid`),
//! with `iss` = `orgId:<org id>` (`issuer`) and `aud` = `webhookId:<webhook id>`
//! (`audience`; the bare ids are accepted on either side) and `exp`/`iat`
//! checked against the receiver's clock with the configured tolerance (Unix
//! seconds, or milliseconds). Zoho's keys sign every org's webhooks, so the
//! issuer and audience checks are what tie a request to this tenant. The JWT
//! does not cover the body; a token replayed within its lifetime with another
//! body is the residual risk (dedupe absorbs plain replays).
//!
//! Events: `Ticket_Update` whose `statusType` becomes `Closed` → resolved (the
//! resolver from `payload.modifiedBy`, else `assigneeId`, against
//! `ai_agent_ids`, and `payload.channel` against `ai_channels`); from `Closed`
//! back to another status type → reopened (subscribe with `includePrevState`;
//! without `prevState` any non-closed update counts as a reopen, which changes
//! nothing on a ticket that is not resolved); `Ticket_Thread_Add` with
//! `direction` `in` → customer replied. Others are ignored.
//!
//! Dedupe key per event: Zoho sends no event id, so a composite of event type,
//! ticket id, `eventTime` and the new status type (or the thread id). The
//! delivery key is a composite of all its event keys.

use super::json::{i64_at, str_at};
use super::jwks;
use super::{ParseError, Provider, ProviderSettings, VerifyContext, VerifyError, Webhook};
use crate::event::{composite_key, EventKind, TicketEvent};
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::sync::Arc;

pub const JWT_HEADER: &str = "x-zdesk-jwt";

pub struct ZohoDesk;

fn keys(s: &ProviderSettings) -> Result<Arc<JwkSet>, VerifyError> {
    let loaded = match (&s.jwks_file, &s.jwks_url) {
        (Some(path), _) => jwks::from_file(path),
        (None, Some(url)) => jwks::from_url(url),
        (None, None) => return Err(VerifyError::NoSecret),
    };
    loaded.map_err(|e| {
        tracing::warn!(error = %e, "zoho desk keys unavailable");
        if s.jwks_url.is_some() {
            jwks::request_refresh();
        }
        VerifyError::KeysUnavailable
    })
}

fn strip<'a>(value: &'a str, prefix: &str) -> &'a str {
    value.strip_prefix(prefix).unwrap_or(value)
}

/// A claim time in seconds or milliseconds.
fn claim_time(v: &Value, name: &str) -> Option<DateTime<Utc>> {
    let n = v.get(name)?;
    let n = n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?;
    super::unix_seconds_or_millis(n)
}

fn check_claims(claims: &Value, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
    let s = ctx.settings;
    if let Some(expected) = &s.issuer {
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if strip(iss, "orgId:") != strip(expected, "orgId:") {
            return Err(VerifyError::Mismatch);
        }
    }
    if let Some(expected) = &s.audience {
        let want = strip(expected, "webhookId:");
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => strip(a, "webhookId:") == want,
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .any(|a| strip(a, "webhookId:") == want),
            _ => false,
        };
        if !ok {
            return Err(VerifyError::Mismatch);
        }
    }
    // Checked arithmetic: no claim value or tolerance can overflow into a panic.
    let tolerance = chrono::Duration::from_std(ctx.tolerance).unwrap_or(chrono::Duration::MAX);
    let exp = claim_time(claims, "exp").ok_or(VerifyError::Malformed("X-ZDesk-JWT (no exp)"))?;
    if exp
        .checked_add_signed(tolerance)
        .is_some_and(|limit| ctx.now > limit)
    {
        return Err(VerifyError::Stale);
    }
    if let Some(iat) = claim_time(claims, "iat") {
        if ctx
            .now
            .checked_add_signed(tolerance)
            .is_some_and(|limit| iat > limit)
        {
            return Err(VerifyError::Stale);
        }
    }
    Ok(())
}

fn event_key(e: &Value) -> Option<String> {
    let kind = str_at(e, &["eventType"])?;
    let p = e.get("payload")?;
    let ticket = ticket_of(&kind, p)?;
    let detail = if kind == "Ticket_Thread_Add" {
        str_at(p, &["id"]).unwrap_or_default()
    } else {
        str_at(p, &["statusType"]).unwrap_or_default()
    };
    let at = str_at(e, &["eventTime"])
        .or_else(|| str_at(p, &["modifiedTime"]))
        .unwrap_or_default();
    Some(composite_key(&["zohodesk", &kind, &ticket, &at, &detail]))
}

fn ticket_of(kind: &str, p: &Value) -> Option<String> {
    if kind == "Ticket_Thread_Add" {
        str_at(p, &["ticketId"])
    } else {
        str_at(p, &["id"])
    }
}

fn events_of(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => Vec::new(),
    }
}

fn is_closed(status_type: Option<String>) -> bool {
    status_type.is_some_and(|s| s.eq_ignore_ascii_case("closed"))
}

impl ZohoDesk {
    fn parse_one(
        &self,
        e: &Value,
        s: &ProviderSettings,
    ) -> Result<Option<TicketEvent>, ParseError> {
        let kind_name = str_at(e, &["eventType"])
            .ok_or_else(|| ParseError::new("zoho desk event has no `eventType`"))?;
        let Some(p) = e.get("payload").filter(|p| p.is_object()) else {
            return Err(ParseError::new("zoho desk event has no `payload`"));
        };
        let (kind, actor) = match kind_name.as_str() {
            "Ticket_Update" => {
                let now_closed = is_closed(str_at(p, &["statusType"]));
                let prev = e.get("prevState").filter(|x| x.is_object());
                let was_closed = prev.map(|x| is_closed(str_at(x, &["statusType"])));
                let actor = str_at(p, &["modifiedBy"]).or_else(|| str_at(p, &["assigneeId"]));
                match (now_closed, was_closed) {
                    (true, Some(true)) => return Ok(None),
                    (true, _) => (EventKind::Resolved, actor),
                    (false, Some(false)) => return Ok(None),
                    (false, _) => (EventKind::Reopened, actor),
                }
            }
            "Ticket_Thread_Add" => {
                let inbound =
                    str_at(p, &["direction"]).is_some_and(|d| d.eq_ignore_ascii_case("in"));
                if !inbound {
                    return Ok(None);
                }
                (EventKind::CustomerReplied, str_at(p, &["author", "id"]))
            }
            _ => return Ok(None),
        };
        let ticket_id = ticket_of(&kind_name, p)
            .ok_or_else(|| ParseError::new("zoho desk event has no ticket id"))?;
        let occurred_at = i64_at(e, &["eventTime"])
            .and_then(super::unix_seconds_or_millis)
            .or_else(|| str_at(p, &["modifiedTime"]).and_then(|t| super::parse_time(&t)))
            .ok_or_else(|| ParseError::new("zoho desk event has no usable `eventTime`"))?;
        let channel = str_at(p, &["channel"]);
        Ok(Some(TicketEvent {
            resolver: (kind == EventKind::Resolved)
                .then(|| s.resolve(actor.as_deref(), &[], channel.as_deref())),
            event_key: event_key(e).unwrap_or_default(),
            ticket_id,
            kind,
            occurred_at,
            actor_id: actor,
            tags: Vec::new(),
            channel,
        }))
    }
}

impl Provider for ZohoDesk {
    fn name(&self) -> &'static str {
        "zohodesk"
    }

    fn verify(&self, hook: &Webhook<'_>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError> {
        let raw = hook
            .header(JWT_HEADER)
            .ok_or(VerifyError::Missing("X-ZDesk-JWT"))?
            .trim();
        let token = raw.strip_prefix("Bearer ").unwrap_or(raw).trim();
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| VerifyError::Malformed("X-ZDesk-JWT"))?;
        if header.alg != Algorithm::RS256 {
            return Err(VerifyError::Malformed("X-ZDesk-JWT (not RS256)"));
        }
        let set = keys(ctx.settings)?;
        let candidates: Vec<_> = match &header.kid {
            Some(kid) => set.find(kid).into_iter().collect(),
            None => set.keys.iter().collect(),
        };
        if candidates.is_empty() {
            // A key we may not have yet (Zoho rotated its keys): until the set
            // has been fetched again, have the sender retry (503); after that,
            // or with a key file, the key is not Zoho's: refuse (401).
            let may_appear = match (&header.kid, &ctx.settings.jwks_url) {
                (Some(kid), Some(url)) if ctx.settings.jwks_file.is_none() => {
                    jwks::unknown_kid_may_appear(url, kid)
                }
                _ => false,
            };
            return Err(if may_appear {
                VerifyError::KeysUnavailable
            } else {
                VerifyError::Mismatch
            });
        }
        let mut validation = Validation::new(Algorithm::RS256);
        // Time and audience are checked below against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = candidates
            .into_iter()
            .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok())
            .find_map(|key| jsonwebtoken::decode::<Value>(token, &key, &validation).ok())
            .ok_or(VerifyError::Mismatch)?;
        check_claims(&claims.claims, ctx)
    }

    fn delivery_key(&self, hook: &Webhook<'_>) -> Option<String> {
        let v: Value = serde_json::from_slice(hook.body).ok()?;
        let mut keys: Vec<String> = events_of(&v).into_iter().filter_map(event_key).collect();
        if keys.is_empty() {
            return None;
        }
        keys.sort();
        keys.dedup();
        let mut parts = vec!["zohodesk-batch"];
        parts.extend(keys.iter().map(String::as_str));
        Some(composite_key(&parts))
    }

    fn parse(
        &self,
        hook: &Webhook<'_>,
        s: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError> {
        let v: Value = serde_json::from_slice(hook.body)
            .map_err(|e| ParseError::new(format!("zoho desk body: {e}")))?;
        if !v.is_array() && !v.is_object() {
            return Err(ParseError::new("zoho desk body is not an array of events"));
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
        let mut errs = Vec::new();
        match (&s.jwks_file, &s.jwks_url) {
            (None, None) => errs.push(
                "needs jwks_file or jwks_url (e.g. https://desk.zoho.com/.well-known/jwks.json)"
                    .into(),
            ),
            (Some(path), _) => {
                if let Err(e) = jwks::from_file(path) {
                    errs.push(e.to_string());
                }
            }
            (None, Some(url)) if !url.starts_with("https://") && !url.starts_with("http://") => {
                errs.push(format!("jwks_url `{url}` is not an http(s) URL"))
            }
            _ => {}
        }
        if s.issuer.as_deref().is_none_or(|x| x.trim().is_empty()) {
            errs.push("needs issuer (`orgId:<your Zoho Desk org id>`)".into());
        }
        if s.audience.as_deref().is_none_or(|x| x.trim().is_empty()) {
            errs.push("needs audience (`webhookId:<the webhook's id>`)".into());
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Resolver;
    use crate::providers::testdata::{all_vectors, batch_payload, ctx_at, headers, hook};

    struct Fixture {
        _dir: tempfile::TempDir,
        settings: ProviderSettings,
        jwt: String,
        at: i64,
        body: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let v = all_vectors("zohodesk").remove(0);
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("zoho-jwks.json");
        std::fs::write(&path, v["jwks"].to_string()).expect("write jwks");
        Fixture {
            settings: ProviderSettings {
                jwks_file: Some(path.display().to_string()),
                issuer: Some("orgId:54983163".into()),
                audience: Some("31138000012345678".into()),
                ..Default::default()
            },
            jwt: v["expected_headers"]["X-ZDesk-JWT"]
                .as_str()
                .expect("jwt")
                .into(),
            at: v["verify_at_unix"].as_i64().expect("at"),
            body: v["body"].as_str().expect("body").as_bytes().to_vec(),
            _dir: dir,
        }
    }

    #[test]
    fn reference_jwt_verifies_at_its_time_and_is_stale_later() {
        let f = fixture();
        let h = headers(&[(JWT_HEADER, &f.jwt)]);
        assert_eq!(
            ZohoDesk.verify(&hook(&h, &f.body), &ctx_at(&f.settings, f.at)),
            Ok(())
        );
        // exp is iat + 300 s; with a 5-minute tolerance it is stale 10 minutes later.
        assert_eq!(
            ZohoDesk.verify(&hook(&h, &f.body), &ctx_at(&f.settings, f.at + 601)),
            Err(VerifyError::Stale)
        );
        // Issued in the future.
        assert_eq!(
            ZohoDesk.verify(&hook(&h, &f.body), &ctx_at(&f.settings, f.at - 3600)),
            Err(VerifyError::Stale)
        );
    }

    #[test]
    fn wrong_issuer_audience_key_or_token_is_refused() {
        let f = fixture();
        let h = headers(&[(JWT_HEADER, &f.jwt)]);
        let at = |s: &ProviderSettings| ZohoDesk.verify(&hook(&h, &f.body), &ctx_at(s, f.at));
        let mut s = f.settings.clone();
        s.issuer = Some("orgId:1".into());
        assert_eq!(at(&s), Err(VerifyError::Mismatch));
        let mut s = f.settings.clone();
        s.audience = Some("webhookId:2".into());
        assert_eq!(at(&s), Err(VerifyError::Mismatch));
        let mut s = f.settings.clone();
        s.audience = Some("webhookId:31138000012345678".into());
        assert_eq!(at(&s), Ok(()), "the documented prefixed form is accepted");
        // A tampered signature or claims.
        let mut parts: Vec<String> = f.jwt.split('.').map(str::to_string).collect();
        parts[2] = format!("A{}", &parts[2][1..]);
        let bad = parts.join(".");
        let h2 = headers(&[(JWT_HEADER, &bad)]);
        assert_eq!(
            ZohoDesk.verify(&hook(&h2, &f.body), &ctx_at(&f.settings, f.at)),
            Err(VerifyError::Mismatch)
        );
        let h3 = headers(&[(JWT_HEADER, "not-a-jwt")]);
        assert!(matches!(
            ZohoDesk.verify(&hook(&h3, &f.body), &ctx_at(&f.settings, f.at)),
            Err(VerifyError::Malformed(_))
        ));
        let h4 = headers(&[]);
        assert_eq!(
            ZohoDesk.verify(&hook(&h4, &f.body), &ctx_at(&f.settings, f.at)),
            Err(VerifyError::Missing("X-ZDesk-JWT"))
        );
        assert_eq!(
            ZohoDesk.verify(
                &hook(&h, &f.body),
                &ctx_at(&ProviderSettings::default(), f.at)
            ),
            Err(VerifyError::NoSecret)
        );
    }

    #[test]
    fn closed_then_reopened_batches_parse() {
        let h = headers(&[]);
        let s = ProviderSettings::default();
        let body = batch_payload("zohodesk-Ticket_Update-closed.json");
        let ev = ZohoDesk.parse(&hook(&h, &body), &s).expect("parses");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Resolved);
        assert_eq!(ev[0].ticket_id, "31138000011967402");
        assert_eq!(ev[0].resolver, Some(Resolver::Human));
        assert_eq!(ev[0].occurred_at.timestamp_millis(), 1_618_493_667_780);
        let body = batch_payload("zohodesk-Ticket_Update-reopened.json");
        assert_eq!(
            ZohoDesk.parse(&hook(&h, &body), &s).expect("parses")[0].kind,
            EventKind::Reopened
        );
        // On Hold → Open is neither.
        let body = batch_payload("zohodesk-Ticket_Update-documented-sample-excerpt.json");
        assert!(ZohoDesk
            .parse(&hook(&h, &body), &s)
            .expect("parses")
            .is_empty());
    }

    #[test]
    fn a_batch_expands_into_every_event_with_its_own_key() {
        let h = headers(&[]);
        let s = ProviderSettings {
            ai_agent_ids: vec!["900".into()],
            ..Default::default()
        };
        let body = br#"[
          {"eventType":"Ticket_Update","eventTime":"1618493667780","orgId":"1","payload":{"id":"T1","statusType":"Closed","modifiedBy":"900","channel":"Chat"},"prevState":{"id":"T1","statusType":"Open"}},
          {"eventType":"Ticket_Update","eventTime":"1618493667790","orgId":"1","payload":{"id":"T2","statusType":"Closed","modifiedBy":"12"},"prevState":{"id":"T2","statusType":"Open"}},
          {"eventType":"Ticket_Thread_Add","eventTime":"1618493667800","orgId":"1","payload":{"id":"TH9","ticketId":"T3","direction":"in","author":{"id":"c1"}}},
          {"eventType":"Ticket_Thread_Add","eventTime":"1618493667801","orgId":"1","payload":{"id":"TH10","ticketId":"T3","direction":"out"}},
          {"eventType":"Contact_Add","eventTime":"1618493667802","orgId":"1","payload":{"id":"C1"}}
        ]"#;
        let ev = ZohoDesk.parse(&hook(&h, body), &s).expect("parses");
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].resolver, Some(Resolver::Ai));
        assert_eq!(ev[1].resolver, Some(Resolver::Human));
        assert_eq!(ev[2].kind, EventKind::CustomerReplied);
        assert_eq!(ev[2].ticket_id, "T3");
        let keys: std::collections::BTreeSet<_> = ev.iter().map(|e| &e.event_key).collect();
        assert_eq!(keys.len(), 3);
        assert!(ZohoDesk.delivery_key(&hook(&h, body)).is_some());
    }

    #[test]
    fn an_unknown_key_id_is_retry_later_until_the_set_is_fetched_again() {
        let f = fixture();
        let v = all_vectors("zohodesk").remove(0);
        let mut rotated = v["jwks"].clone();
        if let Some(keys) = rotated["keys"].as_array_mut() {
            for k in keys {
                k["kid"] = "a-newer-key".into();
            }
        }
        let set = || jwks::parse("test", rotated.to_string().as_bytes()).expect("jwks");
        let url = "https://keys.test/rotation-jwks.json";
        jwks::fetched_for_test(url, set());
        let s = ProviderSettings {
            jwks_file: None,
            jwks_url: Some(url.into()),
            ..f.settings.clone()
        };
        let h = headers(&[(JWT_HEADER, &f.jwt)]);
        let verify = |s: &ProviderSettings| ZohoDesk.verify(&hook(&h, &f.body), &ctx_at(s, f.at));
        // Not in the set yet: retry later (the set is fetched again meanwhile).
        assert_eq!(verify(&s), Err(VerifyError::KeysUnavailable));
        assert_eq!(verify(&s), Err(VerifyError::KeysUnavailable));
        // Fetched again and still absent: not Zoho's key.
        jwks::fetched_for_test(url, set());
        assert_eq!(verify(&s), Err(VerifyError::Mismatch));
        // A key file is the operator's: an unknown key id is refused at once.
        let path = f._dir.path().join("rotated-jwks.json");
        std::fs::write(&path, rotated.to_string()).expect("write jwks");
        let file = ProviderSettings {
            jwks_file: Some(path.display().to_string()),
            ..f.settings.clone()
        };
        assert_eq!(verify(&file), Err(VerifyError::Mismatch));
    }

    #[test]
    fn settings_problems_are_reported() {
        let errs = ZohoDesk.check_settings(&ProviderSettings::default());
        assert_eq!(errs.len(), 3, "{errs:?}");
        let f = fixture();
        assert!(ZohoDesk.check_settings(&f.settings).is_empty());
        let missing = ProviderSettings {
            jwks_file: Some("/nonexistent/keys.json".into()),
            ..f.settings.clone()
        };
        assert!(ZohoDesk.check_settings(&missing)[0].contains("cannot read"));
        // At run time an unreadable key file or an unfetched URL is "retry later".
        let h = headers(&[(JWT_HEADER, &f.jwt)]);
        assert_eq!(
            ZohoDesk.verify(&hook(&h, &f.body), &ctx_at(&missing, f.at)),
            Err(VerifyError::KeysUnavailable)
        );
        let unfetched = ProviderSettings {
            jwks_file: None,
            jwks_url: Some("https://keys.invalid/jwks.json".into()),
            ..f.settings.clone()
        };
        assert_eq!(
            ZohoDesk.verify(&hook(&h, &f.body), &ctx_at(&unfetched, f.at)),
            Err(VerifyError::KeysUnavailable)
        );
    }
}
