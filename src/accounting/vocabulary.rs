//! `outcome-meter check`: every configured tag, channel, resolver id and
//! category checked against the events each helpdesk stored in the last days,
//! so a typo (`spam-filter` for `spam_filter`) is found before it bills a ticket.
//! Reads only.

use crate::contract::lint::{lint_contract, lint_provider, Suggestion, Warning};
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use crate::time::Millis;
use serde::Serialize;
use std::fmt::Write;

/// At most this many distinct values of each kind are read per helpdesk.
pub const VOCABULARY_LIMIT: u32 = 10_000;

#[derive(Debug, Clone, Default, Serialize)]
pub struct NameCheck {
    /// The events of this many days were read.
    pub days: i64,
    pub warnings: Vec<Warning>,
    /// What is not a warning: a helpdesk with no recent event, a list cut short.
    pub notes: Vec<String>,
    /// Why nothing could be checked (no database yet, unreachable, not migrated).
    pub unchecked: Option<String>,
    /// Helpdesks with no event in the period: their names were not checked.
    pub helpdesks_skipped: usize,
    /// Tenants none of whose helpdesks had an event: nothing of theirs was checked.
    pub tenants_unchecked: Vec<String>,
}

/// Check every tenant's names against its helpdesks' events since `since`
/// (Unix millis): provider settings against that helpdesk's events, the
/// tenant's contract against all of them.
pub async fn check_names(
    store: &Store,
    settings: &Settings,
    since: Millis,
    days: i64,
) -> Result<NameCheck, StoreError> {
    let mut out = NameCheck {
        days,
        ..Default::default()
    };
    for t in &settings.tenants {
        let mut seen = Vec::new();
        let mut by_provider = Vec::new();
        for (provider, p) in &t.providers {
            let Some(v) = store
                .vocabulary(&t.id, provider, since, VOCABULARY_LIMIT)
                .await?
            else {
                out.notes.push(format!(
                    "{}: no {provider} event in the last {days} days: its names were not checked",
                    t.id
                ));
                out.helpdesks_skipped += 1;
                continue;
            };
            if v.truncated {
                out.notes.push(format!(
                    "{}: {provider} sent more than {VOCABULARY_LIMIT} distinct values of a kind: \
                     only the most used were compared",
                    t.id
                ));
            }
            by_provider.extend(lint_provider(&t.id, provider, p, &v));
            seen.push((provider.clone(), v));
        }
        if seen.is_empty() {
            out.tenants_unchecked.push(t.id.clone());
        } else {
            out.warnings
                .extend(lint_contract(&t.id, &settings.contract_for(t), &seen));
        }
        out.warnings.extend(by_provider);
    }
    Ok(out)
}

/// [`check_names`] on the configured database, `days` before `now`. A database that does not exist yet (it is never created here) or
/// cannot be read leaves the names unchecked, with the reason.
pub async fn check_configured(settings: &Settings, now: Millis, days: i64) -> NameCheck {
    let unchecked = |why: String| NameCheck {
        days,
        unchecked: Some(why),
        ..Default::default()
    };
    let url = &settings.database.url;
    if crate::store::sqlite_file(url).is_some_and(|f| !f.exists()) {
        return unchecked(format!(
            "no database yet at {}: nothing stored to check names against",
            crate::redact::url(url)
        ));
    }
    let store = match Store::connect(&settings.database).await {
        Ok(s) => s,
        Err(e) => return unchecked(format!("cannot open the database: {e}")),
    };
    let since = Millis::from_ms(now.as_ms().saturating_sub(days.saturating_mul(86_400_000)));
    let result = check_names(&store, settings, since, days).await;
    store.close().await;
    result.unwrap_or_else(|e| unchecked(format!("cannot read stored events: {e}")))
}

impl NameCheck {
    /// Whether `check` fails: with `strict`, any warning, names left unchecked,
    /// or a tenant none of whose names could be checked (no recent event).
    pub fn fails(&self, strict: bool) -> bool {
        strict
            && (!self.warnings.is_empty()
                || self.unchecked.is_some()
                || !self.tenants_unchecked.is_empty())
    }

    /// One line per warning (`error:` with `strict`) and note.
    pub fn render(&self, strict: bool) -> String {
        let level = if strict { "error" } else { "warning" };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Names checked against the events of the last {} days:",
            self.days
        );
        if let Some(why) = &self.unchecked {
            let _ = writeln!(s, "{}: names not checked: {why}", level_or_note(strict));
        }
        for t in &self.tenants_unchecked {
            let _ = writeln!(
                s,
                "{}: {t}: no helpdesk of this tenant sent an event in the last {} days: none of its names was checked",
                level_or_note(strict),
                self.days
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "{level}: {}", describe(w));
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        if self.unchecked.is_none() && self.warnings.is_empty() && self.helpdesks_skipped == 0 {
            let _ = writeln!(
                s,
                "Every configured tag, channel, resolver id and category matched stored events."
            );
        }
        s
    }
}

fn level_or_note(strict: bool) -> &'static str {
    if strict {
        "error"
    } else {
        "note"
    }
}

/// `acme: excluded tag `spam-filter` matched nothing; seen: `spam_filter` (412 tickets on zendesk)`.
fn describe(w: &Warning) -> String {
    let whose = match &w.provider {
        Some(p) => format!("{} {p}", w.tenant),
        None => w.tenant.clone(),
    };
    if w.setting == "category" {
        return format!(
            "{whose}: category `{}` matched no ticket: none of its tags or channels was seen",
            w.name
        );
    }
    let hint = match (&w.closest, w.most_seen.as_slice()) {
        (Some(c), _) => format!("seen: {}", seen(c)),
        (None, []) => "no value of this kind was seen".to_string(),
        (None, most) => {
            let most: Vec<String> = most.iter().map(seen).collect();
            format!("nothing similar seen; most seen: {}", most.join(", "))
        }
    };
    format!(
        "{whose}: {} `{}` matched nothing; {hint}",
        w.setting, w.name
    )
}

fn seen(s: &Suggestion) -> String {
    format!(
        "`{}` ({} ticket{} on {})",
        s.seen.value,
        s.seen.tickets,
        if s.seen.tickets == 1 { "" } else { "s" },
        s.provider
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::lint::Seen;

    fn warning(closest: Option<(&str, i64)>, most: &[(&str, i64)]) -> Warning {
        let suggest = |(v, n): (&str, i64)| Suggestion {
            provider: "zendesk".into(),
            seen: Seen {
                value: v.into(),
                tickets: n,
            },
        };
        Warning {
            tenant: "acme".into(),
            provider: None,
            setting: "excluded tag".into(),
            name: "spam-filter".into(),
            closest: closest.map(suggest),
            most_seen: most.iter().copied().map(suggest).collect(),
        }
    }

    #[test]
    fn a_warning_names_the_near_miss() {
        let check = NameCheck {
            days: 30,
            warnings: vec![warning(Some(("spam_filter", 412)), &[])],
            ..Default::default()
        };
        let text = check.render(false);
        assert!(
            text.contains(
                "warning: acme: excluded tag `spam-filter` matched nothing; seen: `spam_filter` (412 tickets on zendesk)"
            ),
            "{text}"
        );
        assert!(!check.fails(false));
        assert!(check.fails(true));
        assert!(check.render(true).contains("error: acme: excluded tag"));
    }

    #[test]
    fn without_a_near_miss_the_most_used_values_are_shown() {
        let w = warning(None, &[("email", 300), ("web", 1)]);
        assert_eq!(
            describe(&w),
            "acme: excluded tag `spam-filter` matched nothing; nothing similar seen; most seen: \
             `email` (300 tickets on zendesk), `web` (1 ticket on zendesk)"
        );
    }

    #[test]
    fn nothing_to_say_is_said_and_passes_strict() {
        let check = NameCheck {
            days: 30,
            ..Default::default()
        };
        assert!(check.render(true).contains("Every configured tag"));
        assert!(!check.fails(true));
        let unchecked = NameCheck {
            unchecked: Some("no database yet".into()),
            ..check
        };
        assert!(unchecked.render(false).contains("note: names not checked"));
        assert!(unchecked.fails(true), "strict needs the names checked");
    }

    #[test]
    fn a_tenant_with_no_recent_event_is_not_called_all_matched() {
        let quiet = NameCheck {
            days: 30,
            helpdesks_skipped: 1,
            tenants_unchecked: vec!["acme".into()],
            notes: vec!["acme: no generic event in the last 30 days".into()],
            ..Default::default()
        };
        let text = quiet.render(true);
        assert!(!text.contains("Every configured tag"), "{text}");
        assert!(
            text.contains("error: acme: no helpdesk of this tenant"),
            "{text}"
        );
        assert!(quiet.fails(true));
        assert!(!quiet.fails(false));
        // One quiet helpdesk beside a checked one: a note, not a failure.
        let partly = NameCheck {
            tenants_unchecked: Vec::new(),
            ..quiet
        };
        assert!(!partly.render(false).contains("Every configured tag"));
        assert!(!partly.fails(true));
    }
}
