//! Typo warnings for `outcome-meter check`: configured tags, channels, resolver
//! ids and categories that matched no stored event, each with the closest value
//! the helpdesk actually sent. Pure: the caller reads what was seen
//! ([`Vocabulary`]) from the store.

use super::names::{self, NameMatching};
use super::ContractTerms;
use crate::providers::ProviderSettings;
use serde::Serialize;

/// One value seen in stored events, with the number of tickets it was on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub value: String,
    pub tickets: i64,
}

/// What one helpdesk of one tenant sent recently, most used first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Vocabulary {
    pub tags: Vec<Seen>,
    pub channels: Vec<Seen>,
    pub actor_ids: Vec<Seen>,
    /// A list was cut at the query's limit: a rarer value may exist unseen.
    pub truncated: bool,
}

/// What kind of name a setting holds, and so how it is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameKind {
    Tag,
    Channel,
    ResolverId,
}

impl NameKind {
    fn values(self, v: &Vocabulary) -> &[Seen] {
        match self {
            NameKind::Tag => &v.tags,
            NameKind::Channel => &v.channels,
            NameKind::ResolverId => &v.actor_ids,
        }
    }

    /// Whether `configured` matches `seen` as the service compares this kind.
    fn same(self, m: NameMatching, configured: &str, seen: &str) -> bool {
        match self {
            NameKind::Tag | NameKind::Channel => m.same(configured, seen),
            // HubSpot's `userId:<id>` matches `<id>` too (as its parser does).
            NameKind::ResolverId => {
                names::same_id(configured, seen)
                    || seen
                        .strip_prefix("userId:")
                        .is_some_and(|id| names::same_id(configured, id))
            }
        }
    }

    /// The form compared for closeness.
    fn key(self, name: &str) -> String {
        match self {
            NameKind::Tag | NameKind::Channel => names::fold(name),
            NameKind::ResolverId => name.trim().to_string(),
        }
    }
}

/// A value seen, and on which helpdesk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    pub provider: String,
    #[serde(flatten)]
    pub seen: Seen,
}

/// A configured name (or a whole category) that matched no stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub tenant: String,
    /// The provider whose settings hold the name; `None` for the contract.
    pub provider: Option<String>,
    /// Where the name is configured, in words: `excluded tag`, `ai_channels`,
    /// `category `refund` tag`, or `category` for a whole category.
    pub setting: String,
    pub name: String,
    /// The closest value seen, when one is close enough to be a likely typo.
    pub closest: Option<Suggestion>,
    /// With no close value: the most used values of that kind.
    pub most_seen: Vec<Suggestion>,
}

/// A name to look for, and where it is configured.
struct Configured<'a> {
    setting: String,
    name: &'a str,
    kind: NameKind,
}

/// Vocabularies of one tenant's helpdesks, by provider name.
pub type Vocabularies = [(String, Vocabulary)];

/// The same, borrowed.
type Sources<'a> = [(&'a str, &'a Vocabulary)];

/// Warnings for a tenant's effective contract: every excluded tag and channel,
/// every category name, and every category none of whose names matched,
/// against everything the tenant's helpdesks sent.
pub fn lint_contract(tenant: &str, terms: &ContractTerms, seen: &Vocabularies) -> Vec<Warning> {
    let m = terms.name_matching;
    let seen: Vec<(&str, &Vocabulary)> = seen.iter().map(|(p, v)| (p.as_str(), v)).collect();
    let mut out = Vec::new();
    let mut check = |setting: String, name: &str, kind: NameKind| -> bool {
        let c = Configured {
            setting,
            name,
            kind,
        };
        match unmatched(tenant, None, &c, m, &seen) {
            Some(w) => {
                out.push(w);
                false
            }
            None => true,
        }
    };
    for t in &terms.excluded_tags {
        check("excluded tag".into(), t, NameKind::Tag);
    }
    for c in &terms.excluded_channels {
        check("excluded channel".into(), c, NameKind::Channel);
    }
    let mut dead_categories = Vec::new();
    for cat in &terms.categories {
        let mut any = false;
        for t in &cat.tags_any {
            any |= check(format!("category `{}` tag", cat.name), t, NameKind::Tag);
        }
        for c in &cat.channels_any {
            any |= check(
                format!("category `{}` channel", cat.name),
                c,
                NameKind::Channel,
            );
        }
        if !any {
            dead_categories.push(cat.name.clone());
        }
    }
    out.extend(dead_categories.into_iter().map(|name| Warning {
        tenant: tenant.to_string(),
        provider: None,
        setting: "category".into(),
        name,
        closest: None,
        most_seen: Vec::new(),
    }));
    out
}

/// Warnings for one helpdesk's settings (`ai_tags`, `ai_channels`,
/// `ai_agent_ids`) against what that helpdesk sent.
pub fn lint_provider(
    tenant: &str,
    provider: &str,
    settings: &ProviderSettings,
    seen: &Vocabulary,
) -> Vec<Warning> {
    let lists = [
        ("ai_tags", &settings.ai_tags, NameKind::Tag),
        ("ai_channels", &settings.ai_channels, NameKind::Channel),
        ("ai_agent_ids", &settings.ai_agent_ids, NameKind::ResolverId),
    ];
    let seen = [(provider, seen)];
    lists
        .into_iter()
        .flat_map(|(setting, names, kind)| names.iter().map(move |n| (setting, n, kind)))
        .filter_map(|(setting, name, kind)| {
            let c = Configured {
                setting: setting.into(),
                name,
                kind,
            };
            unmatched(tenant, Some(provider), &c, NameMatching::Folded, &seen)
        })
        .collect()
}

/// The warning for `c` when no value seen matches it.
fn unmatched(
    tenant: &str,
    provider: Option<&str>,
    c: &Configured<'_>,
    m: NameMatching,
    seen: &Sources<'_>,
) -> Option<Warning> {
    let values = || {
        seen.iter()
            .flat_map(|(p, v)| c.kind.values(v).iter().map(move |s| (*p, s)))
    };
    if values().any(|(_, s)| c.kind.same(m, c.name, &s.value)) {
        return None;
    }
    let suggest = |(p, s): (&str, &Seen)| Suggestion {
        provider: p.to_string(),
        seen: s.clone(),
    };
    let closest = closest(c.kind, c.name, values()).map(suggest);
    let most_seen = if closest.is_some() {
        Vec::new()
    } else {
        let mut all: Vec<_> = values().collect();
        all.sort_by(|a, b| {
            b.1.tickets
                .cmp(&a.1.tickets)
                .then(a.1.value.cmp(&b.1.value))
        });
        all.into_iter().take(3).map(suggest).collect()
    };
    Some(Warning {
        tenant: tenant.to_string(),
        provider: provider.map(str::to_string),
        setting: c.setting.clone(),
        name: c.name.to_string(),
        closest,
        most_seen,
    })
}

/// The seen value closest to `name`, if it is close enough to be what was
/// meant: at most a third of its characters edited (at least one edit allowed),
/// or one a whole-word part of the other (`spam` and `spam_filter`). Ties go to
/// the value on more tickets.
fn closest<'a>(
    kind: NameKind,
    name: &str,
    values: impl Iterator<Item = (&'a str, &'a Seen)>,
) -> Option<(&'a str, &'a Seen)> {
    let want = kind.key(name);
    let len = want.chars().count();
    values
        .filter_map(|(p, s)| {
            let got = kind.key(&s.value);
            let d = names::distance(&want, &got);
            let part = len >= 3 && (word_part(&want, &got) || word_part(&got, &want));
            (d <= (len / 3).max(1) || part).then_some((d, p, s))
        })
        .min_by(|a, b| {
            a.0.cmp(&b.0)
                .then(b.2.tickets.cmp(&a.2.tickets))
                .then(a.2.value.cmp(&b.2.value))
        })
        .map(|(_, p, s)| (p, s))
}

/// `part` begins or ends `whole` at a word boundary (`spam` in `spam_filter`).
fn word_part(part: &str, whole: &str) -> bool {
    let boundary = |c: Option<char>| c.is_some_and(|c| !c.is_alphanumeric());
    part.len() < whole.len()
        && ((whole.starts_with(part) && boundary(whole[part.len()..].chars().next()))
            || (whole.ends_with(part)
                && boundary(whole[..whole.len() - part.len()].chars().next_back())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Category;

    fn seen(pairs: &[(&str, i64)]) -> Vec<Seen> {
        pairs
            .iter()
            .map(|(v, n)| Seen {
                value: v.to_string(),
                tickets: *n,
            })
            .collect()
    }

    fn zendesk() -> Vec<(String, Vocabulary)> {
        vec![(
            "zendesk".into(),
            Vocabulary {
                tags: seen(&[("spam_filter", 412), ("billing", 90), ("Refund", 12)]),
                channels: seen(&[("email", 300), ("web", 120), ("PHONE", 7)]),
                actor_ids: seen(&[("8447388090494", 50), ("userId:76023669", 3)]),
                truncated: false,
            },
        )]
    }

    #[test]
    fn a_typo_names_the_near_miss_with_its_ticket_count() {
        let terms = ContractTerms {
            excluded_tags: vec!["spam-filter".into(), "Billing ".into()],
            excluded_channels: vec!["Phone".into(), "fax".into()],
            ..Default::default()
        };
        let w = lint_contract("acme", &terms, &zendesk());
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            (w[0].setting.as_str(), w[0].name.as_str()),
            ("excluded tag", "spam-filter")
        );
        let near = w[0].closest.as_ref().expect("a near miss");
        assert_eq!(
            (
                near.seen.value.as_str(),
                near.seen.tickets,
                near.provider.as_str()
            ),
            ("spam_filter", 412, "zendesk")
        );
        assert_eq!(w[1].name, "fax");
        assert!(w[1].closest.is_none(), "{w:?}");
        let most: Vec<&str> = w[1]
            .most_seen
            .iter()
            .map(|s| s.seen.value.as_str())
            .collect();
        assert_eq!(most, vec!["email", "web", "PHONE"]);
    }

    #[test]
    fn near_misses_are_typos_not_other_words() {
        let values = seen(&[("email", 9), ("web", 5), ("spam_filter", 3), ("voice", 1)]);
        let pick = |name: &str| {
            closest(
                NameKind::Channel,
                name,
                values.iter().map(|s| ("zendesk", s)),
            )
            .map(|(_, s)| s.value.clone())
        };
        assert_eq!(pick("emial").as_deref(), Some("email"), "a transposition");
        assert_eq!(pick("E-mail").as_deref(), Some("email"));
        assert_eq!(pick("spam").as_deref(), Some("spam_filter"), "a word of it");
        assert_eq!(pick("fax"), None);
        assert_eq!(pick("voicemail"), None, "not a word boundary");
    }

    #[test]
    fn an_exact_contract_warns_about_names_only_case_apart() {
        let terms = ContractTerms {
            excluded_channels: vec!["Phone".into()],
            name_matching: NameMatching::Exact,
            ..Default::default()
        };
        let w = lint_contract("acme", &terms, &zendesk());
        let near = w[0].closest.as_ref().expect("near miss");
        assert_eq!(near.seen.value, "PHONE");
    }

    #[test]
    fn a_category_that_matched_nothing_is_named_once_more() {
        let cat = |name: &str, tags: &[&str], channels: &[&str]| Category {
            name: name.into(),
            tags_any: tags.iter().map(|t| t.to_string()).collect(),
            channels_any: channels.iter().map(|t| t.to_string()).collect(),
            event_name: None,
            value: None,
            decline: true,
        };
        let terms = ContractTerms {
            categories: vec![
                cat("refund", &["refund", "refnd"], &[]),
                cat("voice", &["calls"], &["voicemail"]),
            ],
            ..Default::default()
        };
        let w = lint_contract("acme", &terms, &zendesk());
        let found: Vec<(&str, &str)> = w
            .iter()
            .map(|w| (w.setting.as_str(), w.name.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![
                ("category `refund` tag", "refnd"),
                ("category `voice` tag", "calls"),
                ("category `voice` channel", "voicemail"),
                ("category", "voice"),
            ]
        );
        assert_eq!(
            w[0].closest.as_ref().map(|s| s.seen.value.as_str()),
            Some("Refund")
        );
    }

    #[test]
    fn provider_settings_are_checked_against_their_own_helpdesk() {
        let s = ProviderSettings {
            ai_tags: vec!["ai-resolved".into()],
            ai_channels: vec!["Web".into()],
            ai_agent_ids: vec![
                " 8447388090494".into(),
                "76023669".into(),
                "844738809049".into(),
            ],
            ..Default::default()
        };
        let v = &zendesk()[0].1;
        let w = lint_provider("acme", "zendesk", &s, v);
        let found: Vec<(&str, &str)> = w
            .iter()
            .map(|w| (w.setting.as_str(), w.name.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![("ai_tags", "ai-resolved"), ("ai_agent_ids", "844738809049")]
        );
        assert_eq!(w[1].provider.as_deref(), Some("zendesk"));
        assert_eq!(
            w[1].closest.as_ref().map(|s| s.seen.value.as_str()),
            Some("8447388090494")
        );
    }
}
