//! `outcome-meter check --diff OLD NEW`: what a contract change would do to
//! recent tickets, by replaying their stored events under both contracts. Changes
//! nothing: decisions already made are never rewritten.
//!
//! It also replays them under the new contract with names compared exactly, as
//! releases before name folding did, and lists what folding changes: with the
//! same file as OLD and NEW, that is what the matching rule alone would have
//! changed on history.

use crate::contract::{ContractTerms, NameMatching};
use crate::event::TicketEvent;
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use crate::ticket::replay;
use crate::time::Millis;
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub tenant: String,
    pub provider: String,
    pub ticket_id: String,
    pub seq: u32,
    /// `meter x value`, or the clause that refuses it.
    pub old: String,
    pub new: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContractDiff {
    pub tickets: usize,
    pub resolutions: usize,
    pub billable_old: usize,
    pub billable_new: usize,
    pub changes: Vec<Change>,
    /// Resolutions the new contract decides differently because it compares
    /// names ignoring case and whitespace (`old`: with exact names). Empty when
    /// the new contract compares names exactly.
    pub folding_changes: Vec<Change>,
    /// Whether any compared contract folds names (else `folding_changes` is moot).
    pub folding: bool,
    /// Tenants only in the new configuration: nothing to compare.
    pub new_tenants: Vec<String>,
}

/// The shadow run of `check --diff`: replay the stored events of every ticket with an
/// event in `[from, to)` under each tenant's old and new effective contract. Reads only.
pub async fn shadow_run(
    store: &Store,
    old: &Settings,
    new: &Settings,
    from: Millis,
    to: Millis,
) -> Result<ContractDiff, StoreError> {
    let mut d = ContractDiff::default();
    for t in &new.tenants {
        let Some(old_t) = old.tenant(&t.id) else {
            d.new_tenants.push(t.id.clone());
            continue;
        };
        let (oc, nc) = (old.contract_for(old_t), new.contract_for(t));
        for (provider, ticket) in store.tickets_with_events(&t.id, from, to).await? {
            let events = store.events_of(&t.id, &provider, &ticket).await?;
            d.add_ticket(&t.id, &provider, &ticket, &oc, &nc, &events);
        }
    }
    Ok(d)
}

/// One resolution's fate under a contract: `Ok(meter x value)` or `Err(reason)`.
fn fates(contract: &ContractTerms, events: &[TicketEvent]) -> Vec<(u32, Result<String, String>)> {
    replay(contract, None, events)
        .resolutions
        .iter()
        .map(|r| {
            let fate = match (&r.verdict.meter, &r.reopened) {
                (_, Some(re)) => Err(format!("reopened ({}) within the window", re.kind)),
                (Some(m), None) => Ok(format!("{} x{}", m.event_name, m.value)),
                (None, None) => Err(r.verdict.clause.code().to_string()),
            };
            (r.seq, fate)
        })
        .collect()
}

/// The resolutions of one ticket (`(tenant, provider, ticket)`) decided differently.
fn changes(
    (tenant, provider, ticket_id): (&str, &str, &str),
    a: &[(u32, Result<String, String>)],
    b: &[(u32, Result<String, String>)],
) -> Vec<Change> {
    let describe = |v: Option<&(u32, Result<String, String>)>| match v {
        Some((_, Ok(m))) => format!("billed: {m}"),
        Some((_, Err(why))) => format!("not billed: {why}"),
        None => "no such resolution".to_string(),
    };
    (0..a.len().max(b.len()))
        .filter_map(|i| {
            let (x, y) = (describe(a.get(i)), describe(b.get(i)));
            (x != y).then(|| Change {
                tenant: tenant.to_string(),
                provider: provider.to_string(),
                ticket_id: ticket_id.to_string(),
                seq: (i + 1) as u32,
                old: x,
                new: y,
            })
        })
        .collect()
}

fn render_changes(s: &mut String, changes: &[Change]) {
    for c in changes {
        let _ = writeln!(
            s,
            "  {} {} {} #{}: {}  ->  {}",
            c.tenant, c.provider, c.ticket_id, c.seq, c.old, c.new
        );
    }
}

impl ContractDiff {
    /// Add one ticket's comparison (pure).
    pub fn add_ticket(
        &mut self,
        tenant: &str,
        provider: &str,
        ticket_id: &str,
        old: &ContractTerms,
        new: &ContractTerms,
        events: &[TicketEvent],
    ) {
        self.tickets += 1;
        let (a, b) = (fates(old, events), fates(new, events));
        self.resolutions += a.len().max(b.len());
        self.billable_old += a.iter().filter(|(_, f)| f.is_ok()).count();
        self.billable_new += b.iter().filter(|(_, f)| f.is_ok()).count();
        let at = (tenant, provider, ticket_id);
        self.changes.extend(changes(at, &a, &b));
        if new.name_matching == NameMatching::Folded {
            self.folding = true;
            let exact = ContractTerms {
                name_matching: NameMatching::Exact,
                ..new.clone()
            };
            self.folding_changes
                .extend(changes(at, &fates(&exact, events), &b));
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for t in &self.new_tenants {
            let _ = writeln!(s, "tenant {t} is new: nothing to compare");
        }
        let _ = writeln!(
            s,
            "Shadow run over {} ticket(s), {} resolution(s): billable {} under the old contract, {} under the new ({:+}).",
            self.tickets,
            self.resolutions,
            self.billable_old,
            self.billable_new,
            self.billable_new as i64 - self.billable_old as i64
        );
        if self.changes.is_empty() {
            let _ = writeln!(s, "No resolution would be decided differently.");
        }
        render_changes(&mut s, &self.changes);
        if self.folding {
            let _ = writeln!(
                s,
                "Names compared ignoring case and surrounding whitespace: {} resolution(s) decided differently \
                 by the new contract than with exact names (exact  ->  ignoring case).",
                self.folding_changes.len()
            );
            render_changes(&mut s, &self.folding_changes);
        }
        let _ = writeln!(s, "Decisions already made are not changed; the new contract applies to resolutions confirmed after it is deployed.");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Resolver};

    fn ev(key: &str, kind: EventKind, h: i64, r: Option<Resolver>, tags: &[&str]) -> TicketEvent {
        TicketEvent {
            event_key: key.into(),
            ticket_id: "T".into(),
            kind,
            occurred_at: Millis::from_ms(1_767_225_600_000 + h * 3_600_000).to_datetime(),
            resolver: r,
            actor_id: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            channel: None,
        }
    }

    #[test]
    fn excluding_a_tag_and_shortening_the_window_show_up() {
        let old = ContractTerms::default();
        let new = ContractTerms {
            excluded_tags: vec!["vip".into()],
            reopen_window: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let mut d = ContractDiff::default();
        d.add_ticket(
            "acme",
            "generic",
            "A",
            &old,
            &new,
            &[ev(
                "a",
                EventKind::Resolved,
                0,
                Some(Resolver::Ai),
                &["vip"],
            )],
        );
        // Reopened after 2h: inside 72h, outside 1h.
        d.add_ticket(
            "acme",
            "generic",
            "B",
            &old,
            &new,
            &[
                ev("b1", EventKind::Resolved, 0, Some(Resolver::Ai), &[]),
                ev("b2", EventKind::Reopened, 2, None, &[]),
            ],
        );
        assert_eq!((d.billable_old, d.billable_new), (1, 1));
        assert_eq!(d.changes.len(), 2);
        assert!(d.changes[0].new.contains("excluded_tag"));
        assert!(d.changes[1].old.contains("reopened"));
        assert!(d.changes[1].new.starts_with("billed"));
        assert!(d.render().contains("A #1"));
        assert!(d.folding_changes.is_empty(), "no name differs only by case");
    }

    #[test]
    fn the_same_contract_shows_what_folding_names_changes() {
        let c = ContractTerms {
            excluded_tags: vec!["Spam".into()],
            ..Default::default()
        };
        let mut d = ContractDiff::default();
        for (ticket, tag) in [("S", "spam "), ("T", "Spam"), ("U", "ham")] {
            let e = ev(ticket, EventKind::Resolved, 0, Some(Resolver::Ai), &[tag]);
            d.add_ticket("acme", "generic", ticket, &c, &c, &[e]);
        }
        assert!(d.changes.is_empty(), "the same contract");
        assert_eq!(d.folding_changes.len(), 1, "{:?}", d.folding_changes);
        let change = &d.folding_changes[0];
        assert_eq!(change.ticket_id, "S");
        assert!(change.old.starts_with("billed"), "{change:?}");
        assert_eq!(change.new, "not billed: excluded_tag");
        let text = d.render();
        assert!(
            text.contains("1 resolution(s) decided differently"),
            "{text}"
        );
        assert!(text.contains("acme generic S #1"), "{text}");

        let exact = ContractTerms {
            name_matching: NameMatching::Exact,
            ..c.clone()
        };
        let mut d = ContractDiff::default();
        let e = ev("S", EventKind::Resolved, 0, Some(Resolver::Ai), &["spam "]);
        d.add_ticket("acme", "generic", "S", &exact, &c, &[e]);
        assert_eq!(d.changes.len(), 1, "old exact, new folded: a change");
    }
}
