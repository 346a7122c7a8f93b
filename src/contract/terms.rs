//! The contract's terms as they appear in config (`[contract]` and per-tenant
//! `[tenants.contract]` overrides).

use super::names::NameMatching;
use super::ResolutionFacts;
use crate::event::Resolver;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A Stripe meter and the value one outcome adds to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meter {
    #[serde(default = "default_event_name")]
    pub event_name: String,
    #[serde(default = "default_value")]
    pub value: i64,
}

fn default_event_name() -> String {
    "resolved_ticket".into()
}

fn default_value() -> i64 {
    1
}

/// A rule that prices (or declines) a kind of ticket. First match wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    /// Matches when the ticket has any of these tags.
    #[serde(default)]
    pub tags_any: Vec<String>,
    /// Matches when the ticket came through any of these channels.
    #[serde(default)]
    pub channels_any: Vec<String>,
    /// Meter for this category (default: the contract's meter).
    #[serde(default)]
    pub event_name: Option<String>,
    /// Value for this category (default: the contract's value).
    #[serde(default)]
    pub value: Option<i64>,
    /// Never bill this category.
    #[serde(default)]
    pub decline: bool,
}

impl Category {
    pub(super) fn matches(&self, facts: &ResolutionFacts, m: NameMatching) -> bool {
        let tag = self.tags_any.iter().any(|t| facts.has_tag(t, m));
        let channel = self.channels_any.iter().any(|c| facts.has_channel(c, m));
        tag || channel
    }
}

/// Limits on billable outcomes per Stripe customer (UTC day, calendar month).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Caps {
    pub per_day: Option<u32>,
    /// Per billing period, taken as the UTC calendar month.
    pub per_period: Option<u32>,
}

impl Caps {
    pub fn is_set(&self) -> bool {
        self.per_day.is_some() || self.per_period.is_some()
    }
}

/// The full, effective terms of a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContractTerms {
    /// A label the vendor and customer agreed on; stored on every outcome.
    pub version: String,
    /// A resolution reopened within this long is not an outcome.
    #[serde(with = "crate::duration_serde")]
    pub reopen_window: Duration,
    pub billable_resolvers: Vec<Resolver>,
    pub excluded_tags: Vec<String>,
    pub excluded_channels: Vec<String>,
    pub require_customer_message: bool,
    /// The default meter.
    #[serde(flatten)]
    pub meter: Meter,
    pub categories: Vec<Category>,
    /// A reported outcome whose ticket is reopened within this long after its
    /// resolution is reversed in Stripe. `"none"` (default): never.
    #[serde(with = "crate::duration_serde::none_or")]
    pub clawback: Option<Duration>,
    pub caps: Caps,
    /// How tag and channel names are compared (default: ignoring case and
    /// surrounding whitespace). `exact` is the rule of earlier releases.
    pub name_matching: NameMatching,
}

impl Default for ContractTerms {
    fn default() -> Self {
        Self {
            version: "1".into(),
            reopen_window: Duration::from_secs(72 * 3600),
            billable_resolvers: vec![Resolver::Ai],
            excluded_tags: Vec::new(),
            excluded_channels: Vec::new(),
            require_customer_message: false,
            meter: Meter {
                event_name: default_event_name(),
                value: default_value(),
            },
            categories: Vec::new(),
            clawback: None,
            caps: Caps::default(),
            name_matching: NameMatching::default(),
        }
    }
}

impl ContractTerms {
    /// Every meter (`event_name`) these terms can bill on: the default one and
    /// each category's that is not declined.
    pub fn event_names(&self) -> std::collections::BTreeSet<String> {
        let categories = self.categories.iter().filter(|c| !c.decline);
        std::iter::once(&self.meter.event_name)
            .chain(categories.map(|c| c.event_name.as_ref().unwrap_or(&self.meter.event_name)))
            .cloned()
            .collect()
    }

    /// A hash of the effective terms, stored on every decision and outcome.
    pub fn hash(&self) -> String {
        // Serializing a struct is deterministic (fields in declaration order).
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(&bytes)[..12])
    }

    /// Terms read back from the `contracts` table, where they are stored as
    /// JSON under `hash`: the one decoder of stored contracts (the store calls
    /// it). A contract stored before `name_matching` existed compared names
    /// exactly, and resolutions pinned to it keep that rule: the key reads as
    /// `exact` when it is absent. Terms it cannot read are an error, never
    /// another contract in their place.
    pub fn from_stored(hash: &str, json: &str) -> Result<ContractTerms, StoredContractError> {
        let unreadable = |source| StoredContractError::Unreadable {
            hash: hash.to_string(),
            source,
        };
        let mut v: serde_json::Value = serde_json::from_str(json).map_err(unreadable)?;
        if let Some(o) = v.as_object_mut() {
            o.entry("name_matching")
                .or_insert_with(|| NameMatching::Exact.as_str().into());
        }
        serde_json::from_value(v).map_err(unreadable)
    }

    pub fn reopen_window_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.reopen_window).unwrap_or(chrono::Duration::MAX)
    }

    /// Problems that make the terms unusable.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.version.trim().is_empty() {
            errs.push("contract.version must not be empty".to_string());
        }
        if self.reopen_window.is_zero() {
            errs.push("contract.reopen_window must be longer than zero".to_string());
        }
        if self.meter.event_name.trim().is_empty() {
            errs.push("contract.event_name must not be empty".to_string());
        }
        if self.meter.value <= 0 {
            errs.push("contract.value must be a positive integer".to_string());
        }
        if self.caps.per_day == Some(0) || self.caps.per_period == Some(0) {
            errs.push(
                "contract.caps: a cap of 0 bills nothing; remove the cap or raise it".to_string(),
            );
        }
        for c in &self.categories {
            if c.tags_any.is_empty() && c.channels_any.is_empty() {
                errs.push(format!(
                    "contract category `{}` matches nothing: give tags_any or channels_any",
                    c.name
                ));
            }
            if c.value.is_some_and(|v| v <= 0) {
                errs.push(format!(
                    "contract category `{}`: value must be positive",
                    c.name
                ));
            }
        }
        errs
    }
}

/// A stored contract billing cannot use. A resolution pinned to it is not
/// confirmed, and an outcome decided under it is not clawed back, under any
/// other contract: the work waits for the contract (an operator's repair).
#[derive(Debug, thiserror::Error)]
pub enum StoredContractError {
    /// A decision or an outcome names a contract the `contracts` table lacks.
    #[error("contract {hash} is not in the contracts table")]
    Missing { hash: String },
    /// The stored terms are not terms this release can read (damaged, or
    /// written by a later release with terms this one does not know).
    #[error("stored contract {hash} cannot be read: {source}")]
    Unreadable {
        hash: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Per-tenant changes to the global terms; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContractOverrides {
    pub version: Option<String>,
    #[serde(with = "crate::duration_serde::option")]
    pub reopen_window: Option<Duration>,
    pub billable_resolvers: Option<Vec<Resolver>>,
    pub excluded_tags: Option<Vec<String>>,
    pub excluded_channels: Option<Vec<String>>,
    pub require_customer_message: Option<bool>,
    pub event_name: Option<String>,
    pub value: Option<i64>,
    pub categories: Option<Vec<Category>>,
    #[serde(with = "crate::duration_serde::none_or_option")]
    pub clawback: Option<Option<Duration>>,
    pub caps: Option<Caps>,
    pub name_matching: Option<NameMatching>,
}

impl ContractOverrides {
    pub fn apply(&self, base: &ContractTerms) -> ContractTerms {
        let b = base.clone();
        ContractTerms {
            version: self.version.clone().unwrap_or(b.version),
            reopen_window: self.reopen_window.unwrap_or(b.reopen_window),
            billable_resolvers: self
                .billable_resolvers
                .clone()
                .unwrap_or(b.billable_resolvers),
            excluded_tags: self.excluded_tags.clone().unwrap_or(b.excluded_tags),
            excluded_channels: self
                .excluded_channels
                .clone()
                .unwrap_or(b.excluded_channels),
            require_customer_message: self
                .require_customer_message
                .unwrap_or(b.require_customer_message),
            meter: Meter {
                event_name: self.event_name.clone().unwrap_or(b.meter.event_name),
                value: self.value.unwrap_or(b.meter.value),
            },
            categories: self.categories.clone().unwrap_or(b.categories),
            clawback: self.clawback.unwrap_or(b.clawback),
            caps: self.caps.unwrap_or(b.caps),
            name_matching: self.name_matching.unwrap_or(b.name_matching),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_changes_with_any_term() {
        let a = ContractTerms::default();
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        b.reopen_window = Duration::from_secs(3600);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let base = ContractTerms::default();
        let o = ContractOverrides {
            reopen_window: Some(Duration::from_secs(3600)),
            value: Some(5),
            ..Default::default()
        };
        let t = o.apply(&base);
        assert_eq!(t.reopen_window, Duration::from_secs(3600));
        assert_eq!(t.meter.value, 5);
        assert_eq!(t.meter.event_name, base.meter.event_name);
        assert_eq!(t.billable_resolvers, base.billable_resolvers);
    }

    #[test]
    fn terms_parse_from_toml_like_config() {
        let t: ContractTerms = serde_json::from_value(serde_json::json!({
            "version": "2026-11",
            "reopen_window": "48h",
            "event_name": "ai_resolution",
            "value": 2,
            "billable_resolvers": ["ai", "human"]
        }))
        .expect("valid terms");
        assert_eq!(t.reopen_window, Duration::from_secs(48 * 3600));
        assert_eq!(t.meter.event_name, "ai_resolution");
        assert_eq!(t.billable_resolvers, vec![Resolver::Ai, Resolver::Human]);
        assert!(t.validate().is_empty());
    }

    #[test]
    fn a_partial_contract_section_keeps_the_defaults() {
        let t: ContractTerms =
            serde_json::from_value(serde_json::json!({"reopen_window": "1h"})).expect("valid");
        assert_eq!(t.meter, ContractTerms::default().meter);
    }

    #[test]
    fn clawback_and_caps_parse() {
        let t: ContractTerms = serde_json::from_value(serde_json::json!({
            "clawback": "30days", "caps": {"per_day": 100}
        }))
        .expect("valid");
        assert_eq!(t.clawback, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(t.caps.per_day, Some(100));
        let t: ContractTerms =
            serde_json::from_value(serde_json::json!({"clawback": "none"})).expect("valid");
        assert_eq!(t.clawback, None);
        let o: ContractOverrides =
            serde_json::from_value(serde_json::json!({"clawback": "none"})).expect("valid");
        let base = ContractTerms {
            clawback: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        assert_eq!(
            o.apply(&base).clawback,
            None,
            "a tenant can switch clawback off"
        );
        assert_eq!(
            ContractOverrides::default().apply(&base).clawback,
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn names_are_folded_unless_a_stored_contract_predates_the_rule() {
        let t: ContractTerms = serde_json::from_value(serde_json::json!({})).expect("valid");
        assert_eq!(t.name_matching, NameMatching::Folded);
        let stored = serde_json::to_string(&t).expect("json");
        let back = ContractTerms::from_stored("h", &stored).expect("stored terms");
        assert_eq!(back, t, "a stored folded contract stays folded");
        // A contract stored by an earlier release has no `name_matching`.
        let mut legacy: serde_json::Value = serde_json::from_str(&stored).expect("json");
        legacy.as_object_mut().map(|o| o.remove("name_matching"));
        let old = ContractTerms::from_stored("h", &legacy.to_string()).expect("legacy terms");
        assert_eq!(old.name_matching, NameMatching::Exact);
        assert_ne!(
            old.hash(),
            t.hash(),
            "the rule is part of the hash: pinned resolutions keep theirs"
        );
        assert!(ContractTerms::from_stored("h", "not json").is_err());
    }

    /// Terms this release cannot read (not JSON, an unknown term from a later
    /// release, a term of the wrong type) are an error naming the contract.
    #[test]
    fn stored_terms_that_cannot_be_read_are_an_error_naming_the_contract() {
        let mut later = serde_json::to_value(ContractTerms::default()).expect("json");
        later["refund_policy"] = "strict".into();
        let mut wrong = serde_json::to_value(ContractTerms::default()).expect("json");
        wrong["value"] = "one".into();
        for json in [
            "not json",
            "",
            "null",
            &later.to_string(),
            &wrong.to_string(),
        ] {
            let err = ContractTerms::from_stored("c0ffee", json).expect_err(json);
            assert!(
                matches!(&err, StoredContractError::Unreadable { hash, .. } if hash == "c0ffee"),
                "{json}: {err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("stored contract c0ffee cannot be read: "),
                "{err}"
            );
        }
    }

    #[test]
    fn validation_names_each_problem() {
        let t = ContractTerms {
            version: " ".into(),
            reopen_window: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(t.validate().len(), 2);
    }
}
