//! Pure rules of verification: what a helpdesk's answer adds to what webhooks
//! said ([`learned_events`]), what the check found ([`finding`]), and whether the
//! confirmer may bill a due resolution now ([`gate`]).

use crate::contract::ContractTerms;
use crate::event::{composite_key, EventKind, TicketEvent};
use crate::helpdesk_api::{OnUnreachable, TicketLook, VerifySettings};
use crate::store::{Check, CheckResult};
use crate::ticket::{replay_pinned, Settled, Standing};
use crate::time::Millis;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, HashSet};

/// Two events of the same kind this close are taken as one happening seen twice
/// (a webhook and the API's history stamp the same change a moment apart). A
/// helpdesk whose webhooks carry coarser times says so
/// ([`crate::helpdesk_api::HelpdeskApi::same_happening`]: Freshdesk, a minute).
pub const SAME_HAPPENING: Duration = Duration::seconds(2);

/// Whether `e` is a happening already in `pool` under another key: the same kind
/// within `within`.
pub fn seen_again(e: &TicketEvent, pool: &[TicketEvent], within: Duration) -> bool {
    pool.iter()
        .any(|k| k.kind == e.kind && (k.occurred_at - e.occurred_at).abs() <= within)
}

fn is_reopen_signal(kind: EventKind) -> bool {
    kind != EventKind::Resolved
}

/// What a check asks a helpdesk about: one ticket's resolution.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    pub provider: &'a str,
    pub ticket_id: &'a str,
    /// The settled resolution's time: the history up to it is frozen.
    pub after: Option<DateTime<Utc>>,
    /// The resolution asked about.
    pub resolved_at: DateTime<Utc>,
    /// Same-kind events this close are one happening ([`SAME_HAPPENING`], or
    /// the helpdesk's own).
    pub within: Duration,
}

/// The events of `look` that no webhook brought, plus what the current status
/// and the last customer message imply when the history does not show it:
/// - history entries whose key is unknown and that are not a known happening
///   seen again ([`SAME_HAPPENING`]), after the settled point (`after`);
/// - the ticket is open now but nothing after `resolved_at` says why: a reopen
///   right after the resolution (not knowing when must not bill);
/// - the customer wrote after `resolved_at` and no event says so: a customer
///   message at that time.
pub fn learned_events(
    q: &Question<'_>,
    known: &[TicketEvent],
    look: &TicketLook,
) -> Vec<TicketEvent> {
    let Question {
        provider,
        ticket_id,
        after,
        resolved_at,
        within,
    } = *q;
    let keys: HashSet<&str> = known.iter().map(|e| e.event_key.as_str()).collect();
    let mut learned: Vec<TicketEvent> = Vec::new();
    for e in &look.events {
        if e.ticket_id != ticket_id
            || keys.contains(e.event_key.as_str())
            || after.is_some_and(|a| e.occurred_at <= a)
            || seen_again(e, known, within)
            || learned.iter().any(|l| l.event_key == e.event_key)
        {
            continue;
        }
        learned.push(e.clone());
    }
    let reopened_since = known
        .iter()
        .chain(learned.iter())
        .any(|e| is_reopen_signal(e.kind) && e.occurred_at > resolved_at);
    if !look.resolved && !reopened_since {
        // When it was reopened is not known: `updated_at` is the last change of
        // any kind (a note, a tag), not the reopen. Not knowing when must not
        // bill: right after the resolution, inside any window. (Verification runs
        // as the window ends, so "open now" is nearly always a reopen inside it.)
        let at = resolved_at + Duration::milliseconds(1);
        learned.push(synthesized(
            provider,
            ticket_id,
            EventKind::Reopened,
            at,
            &["status", &look.status],
        ));
    }
    if let Some(at) = look.last_customer_message_at.filter(|t| *t > resolved_at) {
        let told = known
            .iter()
            .chain(learned.iter())
            .any(|e| e.kind == EventKind::CustomerReplied && (e.occurred_at - at).abs() <= within);
        if !told {
            learned.push(synthesized(
                provider,
                ticket_id,
                EventKind::CustomerReplied,
                at,
                &["customer_message"],
            ));
        }
    }
    learned
}

/// An event the API implies without an id of its own; its key is stable, so a
/// second check finds the same event, not a new one.
fn synthesized(
    provider: &str,
    ticket_id: &str,
    kind: EventKind,
    at: DateTime<Utc>,
    what: &[&str],
) -> TicketEvent {
    let ms = Millis::from(at).to_string();
    let mut parts = vec![provider, ticket_id, kind.as_str(), ms.as_str()];
    parts.extend_from_slice(what);
    TicketEvent {
        event_key: format!("api:{provider}:{}", composite_key(&parts)),
        ticket_id: ticket_id.to_string(),
        kind,
        occurred_at: at,
        resolver: None,
        actor_id: None,
        tags: Vec::new(),
        channel: None,
    }
}

/// What a check compares: a ticket's history as webhooks brought it (`known`)
/// and with what the helpdesk's API adds (`learned`), replayed under the
/// tenant's contract and the contracts pinned to its resolutions, at `horizon`.
pub struct CheckedHistory<'a> {
    pub contract: &'a ContractTerms,
    pub pins: &'a BTreeMap<u32, ContractTerms>,
    pub settled: Option<Settled>,
    pub known: &'a [TicketEvent],
    pub learned: &'a [TicketEvent],
    pub horizon: DateTime<Utc>,
}

/// What a check found about resolution `seq` (resolved at `resolved_at`) once
/// `learned` is added to `known`: the state machine decides.
pub fn finding(
    h: &CheckedHistory<'_>,
    seq: u32,
    resolved_at: DateTime<Utc>,
) -> (CheckResult, String) {
    let CheckedHistory {
        contract,
        pins,
        settled,
        known,
        learned,
        horizon,
    } = *h;
    let mut events = known.to_vec();
    events.extend_from_slice(learned);
    let history = replay_pinned(contract, pins, settled, &events);
    // Whether webhooks alone made it billable: a resolution the contract does not
    // bill is checked too (before it is settled), and agreeing with that is agreeing.
    let billable_before = replay_pinned(contract, pins, settled, known)
        .resolutions
        .iter()
        .find(|r| r.seq == seq && r.resolved_at == resolved_at)
        .is_some_and(|r| r.verdict.billable());
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let Some(r) = history
        .resolutions
        .iter()
        .find(|r| r.seq == seq && r.resolved_at == resolved_at)
    else {
        let first = history.resolutions.first().map(|r| ts(r.resolved_at));
        return (
            CheckResult::Disagreed,
            format!(
                "the helpdesk's history puts this ticket's resolution at {} (not {})",
                first.as_deref().unwrap_or("no time: it is not resolved"),
                ts(resolved_at)
            ),
        );
    };
    match r.standing(horizon) {
        Standing::Reopened => {
            let re = r.reopened.as_ref();
            (
                CheckResult::Disagreed,
                format!(
                    "the helpdesk shows {} at {} inside the reopen window (ends {})",
                    re.map_or("a reopen".into(), |x| x.kind.to_string()),
                    re.map_or_else(String::new, |x| ts(x.at)),
                    ts(r.settle_at)
                ),
            )
        }
        _ if !r.verdict.billable() && billable_before => (
            CheckResult::Disagreed,
            format!(
                "with the helpdesk's history: {}",
                r.verdict.clause.explain()
            ),
        ),
        Standing::Due => (
            CheckResult::Agreed,
            if learned.is_empty() {
                "the helpdesk agrees".into()
            } else {
                format!(
                    "the helpdesk agrees ({} event(s) no webhook brought change nothing)",
                    learned.len()
                )
            },
        ),
        Standing::InWindow => (
            CheckResult::Disagreed,
            format!("still inside its window until {}", ts(r.settle_at)),
        ),
    }
}

/// What the confirmer does with a due, billable resolution of a verified provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Bill it; the words for its evidence (`verified with …` or `not verified: …`).
    Bill { verified: bool, note: String },
    /// Not yet: look again at `until` (Unix ms). `reason` is a metrics label:
    /// `waiting`, `unreachable` or `past_max_hold`.
    Hold {
        until: Millis,
        why: String,
        reason: &'static str,
    },
}

/// The rule, from the newest check of the resolution (`None`: not checked yet).
pub fn gate(
    provider: &str,
    latest: Option<&Check>,
    settle_at: Millis,
    now: Millis,
    s: &VerifySettings,
) -> Gate {
    let ts = |t: Millis| {
        t.to_datetime()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    match latest {
        Some(c) if c.result == CheckResult::Agreed && c.checked_at >= settle_at => Gate::Bill {
            verified: true,
            note: format!("verified with {provider} at {}", ts(c.checked_at)),
        },
        Some(c) if c.result == CheckResult::Unreachable => {
            let since = c.held_since.unwrap_or(c.checked_at);
            let retry = c.next_try_at.unwrap_or(now + s.retry_base).max(now);
            // Refused credentials, an unknown ticket or an answer that cannot be
            // trusted are answers, not an outage: never billed unverified.
            let passing = matches!(
                c.failure.as_deref(),
                None | Some("unreachable" | "rate_limited")
            );
            if !passing {
                return Gate::Hold {
                    until: retry,
                    reason: "needs_attention",
                    why: format!(
                        "held: {provider} answered but not usably ({}) since {}; never billed unverified for this: fix the cause (credentials, the ticket, the verify_url)",
                        c.detail,
                        ts(since)
                    ),
                };
            }
            if now >= since + s.max_hold {
                match s.on_unreachable {
                    OnUnreachable::Bill => Gate::Bill {
                        verified: false,
                        note: format!(
                            "not verified: {provider} could not be asked since {} ({}); billed as verify.on_unreachable = \"bill\"",
                            ts(since),
                            c.detail
                        ),
                    },
                    OnUnreachable::Hold => Gate::Hold {
                        until: retry,
                        reason: "past_max_hold",
                        why: format!(
                            "held: {provider} could not be asked since {} ({}); verify.on_unreachable = \"hold\" keeps it unbilled",
                            ts(since),
                            c.detail
                        ),
                    },
                }
            } else {
                Gate::Hold {
                    until: retry,
                    reason: "unreachable",
                    why: format!(
                        "held until {provider} answers (since {}: {}); next try {}",
                        ts(since),
                        c.detail,
                        ts(retry)
                    ),
                }
            }
        }
        // Not checked since the window ended, or a disagreement the state machine
        // did not act on (events changed since): check again first.
        _ => Gate::Hold {
            until: now + s.retry_base.min(std::time::Duration::from_secs(60)),
            reason: "waiting",
            why: format!("waiting for a check with {provider}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Resolver;

    fn t(h: i64) -> DateTime<Utc> {
        Millis::from_ms(1_767_225_600_000).to_datetime() + Duration::hours(h)
    }

    fn ev(key: &str, kind: EventKind, at: DateTime<Utc>) -> TicketEvent {
        TicketEvent {
            event_key: key.into(),
            ticket_id: "T".into(),
            kind,
            occurred_at: at,
            resolver: (kind == EventKind::Resolved).then_some(Resolver::Ai),
            actor_id: None,
            tags: vec![],
            channel: None,
        }
    }

    /// Resolution 1 of ticket `T` (resolved at 1 h), nothing settled.
    fn asked(provider: &str) -> Question<'_> {
        Question {
            provider,
            ticket_id: "T",
            after: None,
            resolved_at: t(1),
            within: SAME_HAPPENING,
        }
    }

    /// What a check finds about resolution 1 (resolved at 1 h) at 100 h, under
    /// the default contract.
    fn find(known: &[TicketEvent], learned: &[TicketEvent]) -> (CheckResult, String) {
        let contract = ContractTerms::default();
        let pins = BTreeMap::new();
        let h = CheckedHistory {
            contract: &contract,
            pins: &pins,
            settled: None,
            known,
            learned,
            horizon: t(100),
        };
        finding(&h, 1, t(1))
    }

    fn look(resolved: bool, events: Vec<TicketEvent>) -> TicketLook {
        TicketLook {
            status: if resolved { "solved" } else { "open" }.into(),
            resolved,
            updated_at: None,
            last_customer_message_at: None,
            events,
            answer: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_reopen_no_webhook_brought_is_learned_once() {
        let known = vec![ev("w1", EventKind::Resolved, t(1))];
        let l = look(
            true,
            vec![
                ev("a1", EventKind::Resolved, t(1)),
                ev("a2", EventKind::Reopened, t(5)),
                ev("a3", EventKind::Resolved, t(6)),
            ],
        );
        let learned = learned_events(&asked("zendesk"), &known, &l);
        let keys: Vec<_> = learned.iter().map(|e| e.event_key.as_str()).collect();
        // a1 is the webhook's resolution seen again; the reopen and re-solve are new.
        assert_eq!(keys, vec!["a2", "a3"]);
        let (result, why) = find(&known, &learned);
        assert_eq!(result, CheckResult::Disagreed);
        assert!(why.contains("reopened"), "{why}");
    }

    #[test]
    fn open_now_without_history_is_a_reopen_right_after_the_resolution() {
        let known = vec![ev("w1", EventKind::Resolved, t(1))];
        let mut l = look(false, vec![]);
        // The last change (a note, say) came after the window: still not billed,
        // since the reopen itself may have been inside it.
        l.updated_at = Some(t(80));
        let learned = learned_events(&asked("x"), &known, &l);
        assert_eq!(learned.len(), 1);
        assert_eq!(learned[0].kind, EventKind::Reopened);
        assert_eq!(learned[0].occurred_at, t(1) + Duration::milliseconds(1));
        let (result, _) = find(&known, &learned);
        assert_eq!(result, CheckResult::Disagreed);
        // The same look twice gives the same key: a second check adds nothing new.
        assert_eq!(
            learned[0].event_key,
            learned_events(&asked("x"), &known, &l)[0].event_key
        );
        // A reopen the history shows after the window: the outcome stands.
        let l = look(false, vec![ev("a9", EventKind::Reopened, t(80))]);
        let learned = learned_events(&asked("x"), &known, &l);
        let (result, _) = find(&known, &learned);
        assert_eq!(result, CheckResult::Agreed);
    }

    #[test]
    fn a_customer_message_only_the_api_shows_is_learned() {
        let known = vec![ev("w1", EventKind::Resolved, t(1))];
        let mut l = look(true, vec![]);
        l.last_customer_message_at = Some(t(3));
        let learned = learned_events(&asked("x"), &known, &l);
        assert_eq!(learned.len(), 1);
        assert_eq!(learned[0].kind, EventKind::CustomerReplied);
        // Told by a webhook already: nothing learned.
        let known2 = vec![known[0].clone(), ev("w2", EventKind::CustomerReplied, t(3))];
        assert!(learned_events(&asked("x"), &known2, &l).is_empty());
        // Before the resolution: not a reopen signal of this resolution.
        l.last_customer_message_at = Some(t(0));
        assert!(learned_events(&asked("x"), &known, &l).is_empty());
    }

    #[test]
    fn the_helpdesk_agreeing_bills_and_says_so() {
        let known = vec![ev("w1", EventKind::Resolved, t(1))];
        let l = look(true, vec![ev("a1", EventKind::Resolved, t(1))]);
        let learned = learned_events(&asked("x"), &known, &l);
        assert!(learned.is_empty());
        let (result, why) = find(&known, &learned);
        assert_eq!(
            (result, why.as_str()),
            (CheckResult::Agreed, "the helpdesk agrees")
        );
    }

    #[test]
    fn a_resolution_not_billed_is_agreed_when_the_helpdesk_shows_the_same() {
        let mut human = ev("w1", EventKind::Resolved, t(1));
        human.resolver = Some(Resolver::Human);
        let known = vec![human];
        let l = look(true, vec![]);
        let (result, _) = find(&known, &[]);
        assert_eq!(result, CheckResult::Agreed);
        // A lost earlier resolution renumbers it: not agreed (learned, replayed).
        let mut l2 = l;
        l2.events = vec![
            ev("a0", EventKind::Resolved, t(-100)),
            ev("a1", EventKind::Reopened, t(-20)),
        ];
        let learned = learned_events(&asked("x"), &known, &l2);
        assert_eq!(learned.len(), 2);
        let (result, _) = find(&known, &learned);
        assert_eq!(result, CheckResult::Disagreed);
    }

    fn ms(v: i64) -> Millis {
        Millis::from_ms(v)
    }

    fn check(result: CheckResult, checked_at: i64, held_since: Option<i64>) -> Check {
        Check {
            id: 0,
            tenant: "a".into(),
            provider: "zendesk".into(),
            ticket_id: "T".into(),
            seq: 1,
            resolved_at: Millis::EPOCH,
            result,
            checked_at: Millis::from_ms(checked_at),
            failures: u32::from(result == CheckResult::Unreachable),
            failure: (result == CheckResult::Unreachable).then(|| "unreachable".to_string()),
            held_since: held_since.map(Millis::from_ms),
            next_try_at: Some(Millis::from_ms(checked_at + 60_000)),
            detail: "unreachable (503): down".into(),
            answer: String::new(),
            learned: 0,
        }
    }

    #[test]
    fn the_gate_bills_agreed_holds_unreachable_then_follows_on_unreachable() {
        let mut s = VerifySettings::default();
        let hour = 3_600_000;
        // Agreed after the window: bill, verified.
        let g = gate(
            "zendesk",
            Some(&check(CheckResult::Agreed, 10, None)),
            ms(5),
            ms(20),
            &s,
        );
        assert!(
            matches!(g, Gate::Bill { verified: true, ref note } if note.starts_with("verified with zendesk at"))
        );
        // Agreed before the window ended (cannot happen, but): check again.
        assert!(matches!(
            gate(
                "zendesk",
                Some(&check(CheckResult::Agreed, 4, None)),
                ms(5),
                ms(20),
                &s
            ),
            Gate::Hold { .. }
        ));
        // Not checked: hold briefly.
        assert!(matches!(
            gate("zendesk", None, ms(5), ms(20), &s),
            Gate::Hold { until, .. } if until == ms(60_020)
        ));
        // Unreachable for an hour: hold until the next try.
        let c = check(CheckResult::Unreachable, hour, Some(0));
        assert_eq!(
            gate("zendesk", Some(&c), ms(0), ms(hour), &s),
            Gate::Hold {
                until: ms(hour + 60_000),
                reason: "unreachable",
                why: format!(
                    "held until zendesk answers (since 1970-01-01T00:00:00Z: unreachable (503): down); next try {}",
                    ms(hour + 60_000).to_datetime().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            }
        );
        // Past max_hold: hold (default) …
        let late = 25 * hour;
        let c = check(CheckResult::Unreachable, late, Some(0));
        assert!(
            matches!(gate("zendesk", Some(&c), ms(0), ms(late), &s), Gate::Hold { ref why, .. } if why.contains("on_unreachable"))
        );
        // … or bill, unverified, when configured.
        s.on_unreachable = OnUnreachable::Bill;
        assert!(
            matches!(gate("zendesk", Some(&c), ms(0), ms(late), &s), Gate::Bill { verified: false, ref note } if note.starts_with("not verified"))
        );
    }
}
