//! One module per helpdesk. Each verifies a webhook's authenticity and parses
//! its body into normalized [`TicketEvent`]s.

pub mod generic;
pub mod intercom;
mod json;
pub mod signature;
pub mod zendesk;

use crate::event::{Resolver, TicketEvent};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Per-tenant settings of one provider (`[tenants.providers.<name>]`).
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderSettings {
    /// Signing secrets; several are accepted during a rotation.
    pub secrets: Vec<String>,
    /// Helpdesk user/admin ids of the AI agent: what they resolve counts as AI.
    pub ai_agent_ids: Vec<String>,
    /// Tags the helpdesk puts on tickets the AI agent resolved.
    pub ai_tags: Vec<String>,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("ai_agent_ids", &self.ai_agent_ids)
            .field("ai_tags", &self.ai_tags)
            .finish()
    }
}

impl ProviderSettings {
    /// AI when the actor is a configured AI agent or the ticket has an AI tag.
    pub fn resolver_for(&self, actor_id: Option<&str>, tags: &[String]) -> Resolver {
        let by_actor = actor_id.is_some_and(|a| self.ai_agent_ids.iter().any(|id| id == a));
        let by_tag = tags.iter().any(|t| self.ai_tags.contains(t));
        if by_actor || by_tag {
            Resolver::Ai
        } else {
            Resolver::Human
        }
    }

    pub fn is_ai_agent(&self, id: &str) -> bool {
        self.ai_agent_ids.iter().any(|a| a == id)
    }
}

/// Headers by lower-case name.
pub type Headers = BTreeMap<String, String>;

/// An incoming webhook as the provider sees it.
#[derive(Debug, Clone, Copy)]
pub struct Webhook<'a> {
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
    fn parse(
        &self,
        hook: &Webhook<'_>,
        settings: &ProviderSettings,
    ) -> Result<Vec<TicketEvent>, ParseError>;
}

static GENERIC: generic::Generic = generic::Generic;
static ZENDESK: zendesk::Zendesk = zendesk::Zendesk;
static INTERCOM: intercom::Intercom = intercom::Intercom;

/// Every provider this build knows, by URL name.
pub fn all() -> [&'static dyn Provider; 3] {
    [&GENERIC, &ZENDESK, &INTERCOM]
}

pub fn lookup(name: &str) -> Option<&'static dyn Provider> {
    all().into_iter().find(|p| p.name() == name)
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

    pub fn reference_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/helpdesk")
    }

    /// A reference payload with its `_source` key removed, as compact JSON.
    pub fn payload(name: &str) -> Vec<u8> {
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
    pub fn vectors(vendor: &str) -> Vec<serde_json::Value> {
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

    pub fn headers(pairs: &[(&str, &str)]) -> super::Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }
}
