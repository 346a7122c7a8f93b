//! One module per helpdesk. Each verifies a webhook's authenticity and parses
//! its body into normalized [`TicketEvent`]s.

pub mod freshdesk;
pub mod front;
pub mod generic;
pub mod gorgias;
pub mod helpscout;
pub mod hubspot;
pub mod intercom;
mod json;
pub mod jwks;
mod shared_secret;
pub mod signature;
pub mod zendesk;
pub mod zohodesk;

#[cfg(test)]
mod forgery_tests;

use crate::contract::names;
use crate::event::{Resolver, TicketEvent};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Per-tenant settings of one provider (`[tenants.providers.<name>]`).
/// Every key is optional; each provider says which it needs (`Provider::check_settings`).
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderSettings {
    /// Signing secrets (or shared secrets / passwords for helpdesks that do not
    /// sign); several are accepted during a rotation.
    pub secrets: Vec<String>,
    /// Files holding one more secret each (Docker/Kubernetes secrets); read at
    /// load and added to `secrets` (a trailing newline is dropped).
    pub secret_files: Vec<String>,
    /// Environment variables holding one more secret each; read at load and
    /// added to `secrets`.
    pub secret_env: Vec<String>,
    /// Helpdesk user/admin ids of the AI agent: what they resolve counts as AI.
    pub ai_agent_ids: Vec<String>,
    /// Tags the helpdesk puts on tickets the AI agent resolved. Compared as
    /// the contract compares names ([`names::same`]).
    pub ai_tags: Vec<String>,
    /// Channels (as the helpdesk names them) whose resolutions count as AI,
    /// e.g. a chat channel only the AI agent answers ([`names::same`]).
    pub ai_channels: Vec<String>,
    /// Freshdesk, Gorgias: the request header that carries the shared secret
    /// (e.g. `X-Outcome-Secret`, Gorgias default `x-api-key`).
    pub auth_header: Option<String>,
    /// Freshdesk: the Basic-auth user name (the password is one of `secrets`).
    pub basic_auth_user: Option<String>,
    /// HubSpot: the exact public URL configured as the app's target URL, used
    /// to rebuild the signed URI (behind a proxy the local URL differs).
    pub webhook_url: Option<String>,
    /// HubSpot: pipeline stage ids that mean closed (resolved).
    pub closed_stage_ids: Vec<String>,
    /// HubSpot: stage ids that mean open again; empty = every stage not in
    /// `closed_stage_ids`.
    pub open_stage_ids: Vec<String>,
    /// Zoho Desk: a JWKS file with the keys that sign `X-ZDesk-JWT`.
    pub jwks_file: Option<String>,
    /// Zoho Desk: a JWKS URL (fetched and cached), e.g.
    /// `https://desk.zoho.com/.well-known/jwks.json` for your data centre.
    pub jwks_url: Option<String>,
    /// Zoho Desk: the expected `iss` claim (`orgId:<org id>`; the bare org id is accepted).
    pub issuer: Option<String>,
    /// Zoho Desk: the expected `aud` claim (`webhookId:<webhook id>`; the bare id is accepted).
    pub audience: Option<String>,
    /// Check each outcome with the helpdesk's API before billing it:
    /// `before_billing` (the default when `api` is set) or `off`.
    pub verify: Option<crate::helpdesk_api::VerifyMode>,
    /// Credentials for the helpdesk's REST API (verification, backfill).
    pub api: Option<crate::helpdesk_api::ApiSettings>,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("secret_files", &self.secret_files)
            .field("secret_env", &self.secret_env)
            .field("ai_agent_ids", &self.ai_agent_ids)
            .field("ai_tags", &self.ai_tags)
            .field("ai_channels", &self.ai_channels)
            .field("auth_header", &self.auth_header)
            .field("basic_auth_user", &self.basic_auth_user)
            .field("webhook_url", &self.webhook_url)
            .field("closed_stage_ids", &self.closed_stage_ids)
            .field("open_stage_ids", &self.open_stage_ids)
            .field("jwks_file", &self.jwks_file)
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("verify", &self.verify)
            .field("api", &self.api)
            .finish()
    }
}

impl ProviderSettings {
    /// `verify` as set, or its default: on when API credentials are configured.
    pub fn verify_mode(&self) -> crate::helpdesk_api::VerifyMode {
        use crate::helpdesk_api::VerifyMode;
        self.verify.unwrap_or(if self.api.is_some() {
            VerifyMode::BeforeBilling
        } else {
            VerifyMode::Off
        })
    }

    /// AI when the actor is a configured AI agent or the ticket has an AI tag.
    pub fn resolver_for(&self, actor_id: Option<&str>, tags: &[String]) -> Resolver {
        self.resolve(actor_id, tags, None)
    }

    /// AI when the actor is a configured AI agent, the ticket has an AI tag, or
    /// it came through an AI channel.
    pub fn resolve(
        &self,
        actor_id: Option<&str>,
        tags: &[String],
        channel: Option<&str>,
    ) -> Resolver {
        let by_actor = actor_id.is_some_and(|a| self.is_ai_agent(a));
        let by_tag = tags
            .iter()
            .any(|t| self.ai_tags.iter().any(|a| names::same(a, t)));
        let by_channel =
            channel.is_some_and(|c| self.ai_channels.iter().any(|a| names::same(a, c)));
        if by_actor || by_tag || by_channel {
            Resolver::Ai
        } else {
            Resolver::Human
        }
    }

    /// `id` is one of `ai_agent_ids` ([`names::same_id`]: case counts, padding does not).
    pub fn is_ai_agent(&self, id: &str) -> bool {
        self.ai_agent_ids.iter().any(|a| names::same_id(a, id))
    }

    /// The secrets a verifier may use: those that pass [`secret_problem`].
    /// An empty or implausibly short key never verifies anything, even when a
    /// caller skipped `Settings::validate`.
    pub fn usable_secrets(&self) -> impl Iterator<Item = &str> {
        self.secrets
            .iter()
            .map(String::as_str)
            .filter(|s| secret_problem(s).is_none())
    }

    pub fn has_usable_secret(&self) -> bool {
        self.usable_secrets().next().is_some()
    }

    /// The usual rule: at least one secret, and every configured secret usable
    /// (a rotation with an unset old-secret variable must not open a hole).
    pub fn secret_problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .secrets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| secret_problem(s).map(|p| format!("secrets[{i}] {p}")))
            .collect();
        if self.secrets.is_empty() {
            problems.push("needs at least one secret".into());
        }
        problems
    }
}

/// The shortest signing secret (or shared secret) accepted, in characters.
pub const MIN_SECRET_CHARS: usize = 8;

/// Why a configured secret cannot be used, in words that never repeat it.
/// One rule for every provider: an HMAC made with an empty key is something
/// anyone can compute, so empty, blank and very short secrets are refused.
pub fn secret_problem(secret: &str) -> Option<String> {
    if secret.trim().is_empty() {
        Some("is empty or blank (an unset environment variable?)".into())
    } else if secret.trim() != secret {
        Some("has leading or trailing whitespace (a newline from a file?)".into())
    } else if secret.chars().count() < MIN_SECRET_CHARS {
        Some(format!(
            "is shorter than {MIN_SECRET_CHARS} characters, too short to be a signing secret"
        ))
    } else {
        None
    }
}

/// Headers by lower-case name.
pub type Headers = BTreeMap<String, String>;

/// An incoming webhook as the provider sees it.
#[derive(Debug, Clone, Copy)]
pub struct Webhook<'a> {
    /// The HTTP method (`POST`); HubSpot signs it.
    pub method: &'a str,
    /// The request path and query as received (`/webhooks/hubspot/acme?x=1`);
    /// HubSpot signs the full URI. Empty when replaying a stored delivery.
    pub path_and_query: &'a str,
    pub headers: &'a Headers,
    pub body: &'a [u8],
}

impl<'a> Webhook<'a> {
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Why a request is not authentic. Never tells the caller which secret was tried.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing signature header `{0}`")]
    Missing(&'static str),
    #[error("malformed signature header `{0}`")]
    Malformed(&'static str),
    #[error("signature does not match")]
    Mismatch,
    #[error("signature timestamp is outside the allowed tolerance")]
    Stale,
    #[error("no signing secret is configured for this tenant and provider")]
    NoSecret,
    /// The keys to verify with could not be loaded right now (a JWKS URL not
    /// fetched yet, an unreadable key file): the sender should retry later.
    #[error("verification keys are unavailable; retry later")]
    KeysUnavailable,
}

/// Why an authentic body could not be turned into events (it is quarantined).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// What verification may depend on besides the request.
#[derive(Debug, Clone, Copy)]
pub struct VerifyContext<'a> {
    pub settings: &'a ProviderSettings,
    pub now: DateTime<Utc>,
    pub tolerance: Duration,
}

pub trait Provider: Send + Sync + 'static {
    /// The name in the webhook URL and config.
    fn name(&self) -> &'static str;

    /// Headers that parsing needs, stored with the delivery (lower-case names).
    fn kept_headers(&self) -> &'static [&'static str] {
        &[]
    }

    /// Check the request is authentic (constant-time comparisons).
    fn verify(&self, hook: &Webhook<'_>, ctx: &VerifyContext<'_>) -> Result<(), VerifyError>;

    /// The delivery's dedupe key: the vendor's event id where it has one,
    /// otherwise a composite of identifying fields. `None` when the body cannot
    /// be read at all (the caller falls back to a hash of the body).
    fn delivery_key(&self, hook: &Webhook<'_>) -> Option<String>;

    /// Normalize the body. An empty list means "authentic, nothing billable-relevant".
    /// A batch body (HubSpot, Zoho Desk) gives several events, each with its own key.
    fn parse(
        &self,
        hook: &Webhook<'_>,
        settings: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError>;

    /// A subscription handshake to answer instead of storing the request (Front's
    /// `x-front-challenge`). Asked only after `verify` accepted the request; the
    /// receiver answers 200 with `{"challenge": <value>}` and stores nothing.
    fn challenge(&self, _hook: &Webhook<'_>) -> Option<String> {
        None
    }

    /// What is missing or wrong in a tenant's settings for this provider, in
    /// words for the admin (`Settings::validate`). Default: a secret is needed.
    fn check_settings(&self, settings: &ProviderSettings) -> Vec<String> {
        settings.secret_problems()
    }
}

static GENERIC: generic::Generic = generic::Generic;
static ZENDESK: zendesk::Zendesk = zendesk::Zendesk;
static INTERCOM: intercom::Intercom = intercom::Intercom;
static FRESHDESK: freshdesk::Freshdesk = freshdesk::Freshdesk;
static HELPSCOUT: helpscout::HelpScout = helpscout::HelpScout;
static FRONT: front::Front = front::Front;
static HUBSPOT: hubspot::HubSpot = hubspot::HubSpot;
static GORGIAS: gorgias::Gorgias = gorgias::Gorgias;
static ZOHODESK: zohodesk::ZohoDesk = zohodesk::ZohoDesk;

/// Every provider this build knows, by URL name.
pub fn all() -> [&'static dyn Provider; 9] {
    [
        &GENERIC, &ZENDESK, &INTERCOM, &FRESHDESK, &HELPSCOUT, &FRONT, &HUBSPOT, &GORGIAS,
        &ZOHODESK,
    ]
}

pub fn lookup(name: &str) -> Option<&'static dyn Provider> {
    all().into_iter().find(|p| p.name() == name)
}

/// Unix seconds or milliseconds (values past year 5138 in seconds are milliseconds).
pub fn unix_seconds_or_millis(n: i64) -> Option<DateTime<Utc>> {
    // `unsigned_abs`: `i64::MIN.abs()` overflows (found by the fuzz target).
    if n.unsigned_abs() >= 100_000_000_000 {
        DateTime::from_timestamp_millis(n)
    } else {
        unix_seconds(n)
    }
}

/// Timestamps in vendor payloads: RFC 3339, or Unix seconds.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| s.trim().parse::<i64>().ok().and_then(unix_seconds))
}

pub fn unix_seconds(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

#[cfg(test)]
pub(crate) mod testdata {
    //! The shared reference payloads and signature vectors.
    use std::path::PathBuf;

    pub(crate) fn reference_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/helpdesk")
    }

    /// A reference payload with its `_source` key removed, as compact JSON.
    pub(crate) fn payload(name: &str) -> Vec<u8> {
        let path = reference_dir().join("payloads").join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut v: serde_json::Value = serde_json::from_str(&text).expect("payload is JSON");
        if let Some(o) = v.as_object_mut() {
            o.remove("_source");
        }
        serde_json::to_vec(&v).expect("serialize")
    }

    /// The signature vectors for one vendor.
    pub(crate) fn vectors(vendor: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(reference_dir().join("vectors.json")).expect("vectors");
        let v: serde_json::Value = serde_json::from_str(&text).expect("vectors JSON");
        v["vectors"]
            .as_array()
            .expect("vectors array")
            .iter()
            .filter(|x| x["vendor"] == vendor && x.get("body").is_some())
            .cloned()
            .collect()
    }

    /// A batch reference payload (HubSpot, Zoho Desk): the array under `body`.
    pub(crate) fn batch_payload(name: &str) -> Vec<u8> {
        let path = reference_dir().join("payloads").join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let v: serde_json::Value = serde_json::from_str(&text).expect("payload is JSON");
        serde_json::to_vec(&v["body"]).expect("serialize")
    }

    /// Every vector of one vendor, including those without a body.
    pub(crate) fn all_vectors(vendor: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(reference_dir().join("vectors.json")).expect("vectors");
        let v: serde_json::Value = serde_json::from_str(&text).expect("vectors JSON");
        v["vectors"]
            .as_array()
            .expect("vectors array")
            .iter()
            .filter(|x| x["vendor"] == vendor)
            .cloned()
            .collect()
    }

    pub(crate) fn headers(pairs: &[(&str, &str)]) -> super::Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    /// A POST to `/` with these headers and body.
    pub(crate) fn hook<'a>(h: &'a super::Headers, body: &'a [u8]) -> super::Webhook<'a> {
        super::Webhook {
            method: "POST",
            path_and_query: "/",
            headers: h,
            body,
        }
    }

    pub(crate) fn ctx_at(s: &super::ProviderSettings, unix: i64) -> super::VerifyContext<'_> {
        super::VerifyContext {
            settings: s,
            now: super::unix_seconds(unix).expect("time"),
            tolerance: std::time::Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod matching {
    use super::*;

    #[test]
    fn ai_tags_channels_and_ids_match_hand_written_settings() {
        let s = ProviderSettings {
            ai_agent_ids: vec![" 8447388090494 ".into(), "Bot@Acme.example".into()],
            ai_tags: vec!["AI_Resolved".into()],
            ai_channels: vec!["Chat ".into()],
            ..Default::default()
        };
        let ai = Some(Resolver::Ai);
        let resolve = |actor: Option<&str>, tag: &str, channel: Option<&str>| {
            Some(s.resolve(actor, &[tag.to_string()], channel))
        };
        assert_eq!(resolve(None, "ai_resolved ", None), ai);
        assert_eq!(resolve(None, "AI_RESOLVED", None), ai);
        assert_eq!(resolve(None, "x", Some("CHAT")), ai);
        assert_eq!(resolve(Some("8447388090494"), "x", None), ai);
        assert_eq!(resolve(Some("bot@acme.example"), "x", None), ai);
        assert_eq!(
            resolve(None, "ai-resolved", Some("chats")),
            Some(Resolver::Human)
        );
        assert!(!s.is_ai_agent("84473880904"));
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use proptest::prelude::*;

    fn junk_settings() -> ProviderSettings {
        ProviderSettings {
            secrets: vec!["junk-secret".into()],
            closed_stage_ids: vec!["4".into()],
            jwks_file: Some("/nonexistent/jwks.json".into()),
            issuer: Some("orgId:1".into()),
            audience: Some("webhookId:2".into()),
            ..Default::default()
        }
    }

    #[test]
    fn extreme_unix_times_are_refused_not_a_panic() {
        for n in [
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            -100_000_000_000,
            100_000_000_000,
        ] {
            let _ = unix_seconds_or_millis(n);
        }
        assert!(unix_seconds_or_millis(i64::MIN).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// No body, header or JSON shape makes a provider panic.
        #[test]
        fn providers_never_panic_on_junk(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            json in prop_oneof![
                Just("[]".to_string()),
                Just("[1,{},null]".to_string()),
                Just(r#"{"payload":{"type":"archive","conversation":{}},"type":"x"}"#.to_string()),
                Just(r#"[{"eventType":"Ticket_Update","payload":{"statusType":"Closed"},"eventTime":"99999999999999999999"}]"#.to_string()),
                Just(r#"[{"eventId":1,"subscriptionType":"ticket.propertyChange","propertyName":"hs_pipeline_stage","propertyValue":"4","occurredAt":-9223372036854775808}]"#.to_string()),
                Just(r#"{"event":"ticket-updated","ticket_id":"1","status":"closed","closed_datetime":"garbage"}"#.to_string()),
                Just(r#"{"id":1,"status":"closed","closedAt":"x"}"#.to_string()),
                Just(r#"{"id":"evt","type":"archive","emitted_at":1e300,"conversation":{"id":"c"}}"#.to_string()),
                Just(r#"[{"eventType":"Ticket_Update","payload":{"id":"1","statusType":"Closed"},"eventTime":-9223372036854775808}]"#.to_string()),
            ],
            header in "[ -~]{0,64}",
        ) {
            let s = junk_settings();
            let names = [
                "authorization", "x-api-key", "x-helpscout-signature", "x-helpscout-event",
                "x-front-signature", "x-front-request-timestamp", "x-hubspot-signature-v3",
                "x-hubspot-request-timestamp", "x-zdesk-jwt", "host",
            ];
            let h: Headers = names.iter().map(|n| (n.to_string(), header.clone())).collect();
            let ctx = VerifyContext {
                settings: &s,
                now: Utc::now(),
                tolerance: Duration::from_secs(300),
            };
            for p in all() {
                for b in [body.as_slice(), json.as_bytes()] {
                    let hook = Webhook { method: "POST", path_and_query: "/", headers: &h, body: b };
                    let _ = p.verify(&hook, &ctx);
                    let _ = p.delivery_key(&hook);
                    let _ = p.parse(&hook, &s);
                    let _ = p.challenge(&hook);
                }
            }
        }
    }
}
