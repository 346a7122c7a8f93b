//! The preflight of the legacy usage-records sink, for `check --stripe`: each
//! tenant on `stripe_usage_records` has its subscription item read with
//! `stripe.legacy_api_version` (so that the price's `aggregate_usage` is there)
//! and judged by [`super::rules::item_problems`].

use super::rules::item_problems;
use crate::settings::Settings;
use crate::sink::Sink;
use crate::stripe::StripeClient;
use serde::Serialize;
use std::fmt::Write;

/// One tenant's subscription item, as the preflight found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemCheck {
    pub tenant: String,
    pub subscription_item: String,
    pub account: Option<String>,
    /// Empty: fit for usage records.
    pub problems: Vec<String>,
}

/// Read the item of every tenant on the usage-records sink (`client`: the main
/// client; the legacy version is pinned here).
pub async fn check_items(client: &StripeClient, settings: &Settings) -> Vec<ItemCheck> {
    let mut out = Vec::new();
    for t in settings
        .tenants
        .iter()
        .filter(|t| t.sink == Sink::StripeUsageRecords)
    {
        let Some(item) = t.stripe_subscription_item.clone() else {
            continue; // refused at load
        };
        let account = t.stripe_account.clone();
        let problems = match client.legacy_usage(&settings.stripe.legacy_api_version) {
            Err(e) => vec![e.to_string()],
            Ok(legacy) => match legacy.subscription_item(&item, account.as_deref()).await {
                Ok(info) => item_problems(&info),
                Err(e) => vec![format!("cannot read subscription item {item}: {e}")],
            },
        };
        out.push(ItemCheck {
            tenant: t.id.clone(),
            subscription_item: item,
            account,
            problems,
        });
    }
    out
}

/// One line per item, then one per problem.
pub fn render(checks: &[ItemCheck]) -> String {
    let mut s = String::new();
    for c in checks {
        let on = c
            .account
            .as_deref()
            .map(|a| format!(" on {a}"))
            .unwrap_or_default();
        let verdict = if c.problems.is_empty() {
            "ok"
        } else {
            "PROBLEM"
        };
        let _ = writeln!(
            s,
            "{verdict:<8} usage records: tenant {} subscription item {}{on}",
            c.tenant, c.subscription_item
        );
        for p in &c.problems {
            let _ = writeln!(s, "         - {p}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_listed_under_their_item() {
        let checks = [
            ItemCheck {
                tenant: "acme".into(),
                subscription_item: "si_1".into(),
                account: None,
                problems: vec![],
            },
            ItemCheck {
                tenant: "beta".into(),
                subscription_item: "si_2".into(),
                account: Some("acct_1".into()),
                problems: vec!["its price is on the Billing Meter mtr_1".into()],
            },
        ];
        let text = render(&checks);
        assert!(
            text.contains("ok       usage records: tenant acme subscription item si_1\n"),
            "{text}"
        );
        assert!(text.contains("PROBLEM  usage records: tenant beta subscription item si_2 on acct_1\n         - its price is on the Billing Meter mtr_1"), "{text}");
    }
}
