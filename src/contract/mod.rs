//! The outcome contract: the terms, written as data, that decide whether a
//! resolution is a billable outcome. Pure: no I/O, no clock.

mod describe;
pub mod lint;
pub mod names;
mod terms;

pub use describe::describe;
pub use names::NameMatching;
pub use terms::{Caps, Category, ContractOverrides, ContractTerms, Meter, StoredContractError};

use crate::event::Resolver;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What the contract needs to know about one resolution.
#[derive(Debug, Clone, Default)]
pub struct ResolutionFacts {
    pub resolver: Option<Resolver>,
    /// A hand-off to a human happened since the ticket was last (re)opened.
    pub handed_off: bool,
    /// Every tag seen on the ticket up to the resolution.
    pub tags: BTreeSet<String>,
    /// The channel on the resolving event, or the latest one seen before it.
    pub channel: Option<String>,
    /// The customer wrote at least once before the resolution.
    pub customer_messaged: bool,
}

impl ResolutionFacts {
    /// The ticket has a tag that is `name` under rule `m`.
    pub fn has_tag(&self, name: &str, m: NameMatching) -> bool {
        self.tags.iter().any(|t| m.same(name, t))
    }

    /// The ticket's channel is `name` under rule `m`.
    pub fn has_channel(&self, name: &str, m: NameMatching) -> bool {
        self.channel.as_deref().is_some_and(|c| m.same(name, c))
    }
}

/// The clause of the contract that decided a resolution. Stored as JSON with
/// every decision, so explanations survive later contract changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "clause", rename_all = "snake_case")]
pub enum Clause {
    /// Billable under the named category (or the default meter).
    Billable {
        category: Option<String>,
    },
    ExcludedTag {
        tag: String,
    },
    ExcludedChannel {
        channel: String,
    },
    ResolverNotBillable {
        resolver: Option<Resolver>,
    },
    HandedOffToHuman,
    NoCustomerMessage,
    CategoryDeclined {
        category: String,
    },
}

impl Clause {
    /// A short stable code, for filters and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Clause::Billable { .. } => "billable",
            Clause::ExcludedTag { .. } => "excluded_tag",
            Clause::ExcludedChannel { .. } => "excluded_channel",
            Clause::ResolverNotBillable { .. } => "resolver_not_billable",
            Clause::HandedOffToHuman => "handed_off_to_human",
            Clause::NoCustomerMessage => "no_customer_message",
            Clause::CategoryDeclined { .. } => "category_declined",
        }
    }

    /// The clause in plain words, for customers and finance.
    pub fn explain(&self) -> String {
        match self {
            Clause::Billable { category: Some(c) } => {
                format!("billable: resolved by an allowed resolver, category `{c}`")
            }
            Clause::Billable { category: None } => {
                "billable: resolved by an allowed resolver, no exclusion applies".into()
            }
            Clause::ExcludedTag { tag } => {
                format!("not billable: the ticket has excluded tag `{tag}`")
            }
            Clause::ExcludedChannel { channel } => {
                format!("not billable: channel `{channel}` is excluded")
            }
            Clause::ResolverNotBillable { resolver: Some(r) } => {
                format!("not billable: resolved by `{r}`, which the contract does not bill")
            }
            Clause::ResolverNotBillable { resolver: None } => {
                "not billable: the helpdesk did not say who resolved it".into()
            }
            Clause::HandedOffToHuman => {
                "not billable: the ticket was handed off to a human before it was resolved".into()
            }
            Clause::NoCustomerMessage => {
                "not billable: the customer never wrote on the ticket".into()
            }
            Clause::CategoryDeclined { category } => {
                format!("not billable: category `{category}` is declined by the contract")
            }
        }
    }
}

/// The contract's verdict on one resolution (before the reopen window is known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub clause: Clause,
    /// The meter to report to, when billable.
    pub meter: Option<Meter>,
}

impl Verdict {
    pub fn billable(&self) -> bool {
        self.meter.is_some()
    }
}

impl ContractTerms {
    /// Apply the contract's clauses, in a fixed order, to one resolution.
    pub fn evaluate(&self, facts: &ResolutionFacts) -> Verdict {
        let refuse = |clause| Verdict {
            clause,
            meter: None,
        };
        let m = self.name_matching;
        if let Some(tag) = self.excluded_tags.iter().find(|t| facts.has_tag(t, m)) {
            return refuse(Clause::ExcludedTag { tag: tag.clone() });
        }
        if let Some(channel) = self
            .excluded_channels
            .iter()
            .find(|c| facts.has_channel(c, m))
        {
            return refuse(Clause::ExcludedChannel {
                channel: channel.clone(),
            });
        }
        match facts.resolver {
            Some(r) if self.billable_resolvers.contains(&r) => {}
            other => return refuse(Clause::ResolverNotBillable { resolver: other }),
        }
        if facts.handed_off {
            return refuse(Clause::HandedOffToHuman);
        }
        if self.require_customer_message && !facts.customer_messaged {
            return refuse(Clause::NoCustomerMessage);
        }
        match self.categories.iter().find(|c| c.matches(facts, m)) {
            Some(c) if c.decline => refuse(Clause::CategoryDeclined {
                category: c.name.clone(),
            }),
            Some(c) => Verdict {
                clause: Clause::Billable {
                    category: Some(c.name.clone()),
                },
                meter: Some(Meter {
                    event_name: c
                        .event_name
                        .clone()
                        .unwrap_or_else(|| self.meter.event_name.clone()),
                    value: c.value.unwrap_or(self.meter.value),
                }),
            },
            None => Verdict {
                clause: Clause::Billable { category: None },
                meter: Some(self.meter.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ai_facts() -> ResolutionFacts {
        ResolutionFacts {
            resolver: Some(Resolver::Ai),
            ..Default::default()
        }
    }

    #[test]
    fn ai_resolution_is_billable_on_the_default_meter() {
        let c = ContractTerms::default();
        let v = c.evaluate(&ai_facts());
        assert_eq!(v.clause, Clause::Billable { category: None });
        assert_eq!(v.meter, Some(c.meter.clone()));
    }

    #[test]
    fn human_resolution_is_not_billable_by_default() {
        let c = ContractTerms::default();
        let v = c.evaluate(&ResolutionFacts {
            resolver: Some(Resolver::Human),
            ..Default::default()
        });
        assert!(!v.billable());
        assert_eq!(v.clause.code(), "resolver_not_billable");
    }

    #[test]
    fn unknown_resolver_is_not_billable() {
        let v = ContractTerms::default().evaluate(&ResolutionFacts::default());
        assert_eq!(v.clause, Clause::ResolverNotBillable { resolver: None });
    }

    #[test]
    fn hand_off_disqualifies() {
        let mut f = ai_facts();
        f.handed_off = true;
        assert_eq!(
            ContractTerms::default().evaluate(&f).clause,
            Clause::HandedOffToHuman
        );
    }

    #[test]
    fn exclusions_come_first() {
        let c = ContractTerms {
            excluded_tags: vec!["spam".into()],
            excluded_channels: vec!["voice".into()],
            ..Default::default()
        };
        let mut f = ai_facts();
        f.tags.insert("spam".into());
        f.handed_off = true;
        assert_eq!(c.evaluate(&f).clause.code(), "excluded_tag");
        let mut f = ai_facts();
        f.channel = Some("voice".into());
        assert_eq!(c.evaluate(&f).clause.code(), "excluded_channel");
    }

    /// Issue 16: names copied by hand from screens and e-mails.
    fn hand_written_contract() -> ContractTerms {
        ContractTerms {
            excluded_tags: vec!["Spam".into()],
            excluded_channels: vec![" Phone ".into()],
            categories: vec![Category {
                name: "refund".into(),
                tags_any: vec!["REFUND".into()],
                channels_any: vec!["Chat".into()],
                event_name: Some("resolved_refund".into()),
                value: Some(3),
                decline: false,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn exclusions_ignore_case_and_surrounding_whitespace() {
        let c = hand_written_contract();
        for tag in ["spam", "SPAM", "spam ", " Spam\n"] {
            let mut f = ai_facts();
            f.tags.insert(tag.into());
            let v = c.evaluate(&f);
            assert_eq!(
                v.clause,
                Clause::ExcludedTag { tag: "Spam".into() },
                "{tag:?}"
            );
        }
        for channel in ["phone", "PHONE", "Phone", "phone\t"] {
            let mut f = ai_facts();
            f.channel = Some(channel.into());
            assert_eq!(
                c.evaluate(&f).clause.code(),
                "excluded_channel",
                "{channel:?}"
            );
        }
        let mut f = ai_facts();
        f.tags.insert("spam_filter".into());
        f.channel = Some("phone-in".into());
        assert!(c.evaluate(&f).billable(), "other words are not excluded");
    }

    #[test]
    fn categories_ignore_case_and_surrounding_whitespace() {
        let c = hand_written_contract();
        for (tag, channel) in [
            (Some("refund"), None),
            (Some(" Refund"), None),
            (None, Some("chat")),
        ] {
            let mut f = ai_facts();
            f.tags.extend(tag.map(String::from));
            f.channel = channel.map(String::from);
            let v = c.evaluate(&f);
            assert_eq!(
                v.clause,
                Clause::Billable {
                    category: Some("refund".into())
                },
                "{tag:?} {channel:?}"
            );
            assert_eq!(v.meter.map(|m| m.value), Some(3));
        }
    }

    #[test]
    fn a_contract_pinned_to_exact_matching_keeps_it() {
        let c = ContractTerms {
            name_matching: NameMatching::Exact,
            ..hand_written_contract()
        };
        let mut f = ai_facts();
        f.tags.insert("spam".into());
        f.channel = Some("PHONE".into());
        assert_eq!(c.evaluate(&f).clause, Clause::Billable { category: None });
        f.tags.insert("Spam".into());
        assert_eq!(c.evaluate(&f).clause.code(), "excluded_tag");
    }

    #[test]
    fn customer_message_requirement() {
        let c = ContractTerms {
            require_customer_message: true,
            ..Default::default()
        };
        assert_eq!(c.evaluate(&ai_facts()).clause, Clause::NoCustomerMessage);
        let mut f = ai_facts();
        f.customer_messaged = true;
        assert!(c.evaluate(&f).billable());
    }

    #[test]
    fn categories_pick_meter_and_value_or_decline() {
        let c = ContractTerms {
            categories: vec![
                Category {
                    name: "refund".into(),
                    tags_any: vec!["refund".into()],
                    channels_any: vec![],
                    event_name: Some("resolved_refund".into()),
                    value: Some(3),
                    decline: false,
                },
                Category {
                    name: "legal".into(),
                    tags_any: vec!["legal".into()],
                    channels_any: vec![],
                    event_name: None,
                    value: None,
                    decline: true,
                },
            ],
            ..Default::default()
        };
        let mut f = ai_facts();
        f.tags.insert("refund".into());
        let v = c.evaluate(&f);
        assert_eq!(
            v.meter,
            Some(Meter {
                event_name: "resolved_refund".into(),
                value: 3
            })
        );
        let mut f = ai_facts();
        f.tags.insert("legal".into());
        assert_eq!(c.evaluate(&f).clause.code(), "category_declined");
    }

    #[test]
    fn every_clause_explains_itself() {
        for clause in [
            Clause::Billable { category: None },
            Clause::HandedOffToHuman,
            Clause::NoCustomerMessage,
        ] {
            assert!(!clause.explain().is_empty());
        }
    }
}
