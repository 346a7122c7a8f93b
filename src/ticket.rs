//! The ticket state machine: replays a ticket's events in the vendor's time
//! order and says, for each resolution, whether it is (or can still become) an
//! outcome. Pure and deterministic: the same set of events in any arrival order,
//! with any duplicates, gives the same answer.

use crate::contract::{ContractTerms, ResolutionFacts, Verdict};
use crate::event::{EventKind, Resolver, TicketEvent};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

/// The last resolution already confirmed (billed or finally declined). History up
/// to it is frozen: events that happened before it no longer change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub seq: u32,
    pub resolved_at: DateTime<Utc>,
}

/// A reopen signal (status back to open, a customer reply, a hand-off) that
/// ended a resolution: inside its window (never an outcome) or after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reopen {
    pub event_key: String,
    pub kind: EventKind,
    pub at: DateTime<Utc>,
}

impl Reopen {
    /// Whether this reopen claws back an outcome resolved at `resolved_at` under a
    /// contract whose `clawback` is `clawback` (`None`: never). The limit is inclusive.
    pub fn claws_back(&self, resolved_at: DateTime<Utc>, clawback: Option<Duration>) -> bool {
        let Some(window) = clawback else {
            return false;
        };
        let limit = chrono::Duration::from_std(window)
            .ok()
            .and_then(|w| resolved_at.checked_add_signed(w))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        resolved_at < self.at && self.at <= limit
    }
}

/// Where a resolution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Still inside its reopen window.
    InWindow,
    /// Window passed with no reopen: ready to confirm.
    Due,
    /// Reopened inside its window: never an outcome.
    Reopened,
}

/// One resolution of a ticket and the contract's view of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub seq: u32,
    pub resolved_at: DateTime<Utc>,
    pub resolver: Option<Resolver>,
    pub settle_at: DateTime<Utc>,
    pub verdict: Verdict,
    /// The reopen that came inside the window, if any: then it is never an outcome.
    pub reopened: Option<Reopen>,
    /// The first reopen after this resolution, inside its window or not: what ended
    /// it. After the window it is what clawback looks at.
    pub next_reopen: Option<Reopen>,
    /// The events of this resolution's cycle, in applied order (the evidence).
    pub evidence: Vec<String>,
}

impl Resolution {
    pub fn standing(&self, now: DateTime<Utc>) -> Standing {
        if self.reopened.is_some() {
            Standing::Reopened
        } else if now >= self.settle_at {
            Standing::Due
        } else {
            Standing::InWindow
        }
    }
}

/// The result of replaying a ticket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketHistory {
    /// Resolutions after the settled one, in order.
    pub resolutions: Vec<Resolution>,
    /// Events that came before the settled resolution and so were not applied.
    pub late: Vec<String>,
    /// The first reopen signal after the settled resolution (a clawback candidate).
    pub reopen_after_settled: Option<Reopen>,
}

impl TicketHistory {
    /// When the ticket next needs the confirmer: the earliest window end of a
    /// resolution not yet reopened.
    pub fn next_settle_at(&self) -> Option<DateTime<Utc>> {
        self.resolutions
            .iter()
            .filter(|r| r.reopened.is_none())
            .map(|r| r.settle_at)
            .min()
    }
}

enum State {
    Open,
    /// Resolved; index into `resolutions`, or `None` for the settled resolution.
    Resolved(Option<usize>),
}

/// Replay `events` (any order, duplicates allowed) under `contract`.
pub fn replay(
    contract: &ContractTerms,
    settled: Option<Settled>,
    events: &[TicketEvent],
) -> TicketHistory {
    replay_pinned(contract, &BTreeMap::new(), settled, events)
}

/// Like [`replay`], but resolution `seq` is judged by `pinned[seq]` when present:
/// the contract it was first decided under, so a contract change never changes
/// a decision already made.
pub fn replay_pinned(
    contract: &ContractTerms,
    pinned: &BTreeMap<u32, ContractTerms>,
    settled: Option<Settled>,
    events: &[TicketEvent],
) -> TicketHistory {
    let mut replay = Replay {
        contract,
        pinned,
        out: TicketHistory::default(),
        seq: settled.map_or(0, |s| s.seq),
        state: if settled.is_some() {
            State::Resolved(None)
        } else {
            State::Open
        },
        facts: Facts::default(),
        cycle: Vec::new(),
    };
    for e in in_time_order(events) {
        // Facts accumulate over the whole history, frozen part included: a tag or
        // a customer message before the settled resolution still counts later.
        replay.facts.learn(e);
        if let Some(s) = settled {
            if e.occurred_at <= s.resolved_at {
                // Its state changes are frozen: the settled resolution stands.
                replay.out.late.push(e.event_key.clone());
                continue;
            }
        }
        replay.cycle.push(e.event_key.clone());
        match (e.kind, &replay.state) {
            (EventKind::Resolved, State::Resolved(_)) => {
                // Already resolved (e.g. "solved" then "closed"): the first one counts.
            }
            (EventKind::Resolved, State::Open) => replay.resolve(e),
            // A reopen signal: status back to open, a customer reply, or a hand-off.
            (kind, _) => replay.reopen(e, kind),
        }
    }
    replay.out
}

/// `events` once each (by key), in the vendor's time order.
fn in_time_order(events: &[TicketEvent]) -> Vec<&TicketEvent> {
    let mut seen = HashSet::new();
    let mut ordered: Vec<&TicketEvent> = events
        .iter()
        .filter(|e| seen.insert(e.event_key.as_str()))
        .collect();
    ordered.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    ordered
}

/// What the contract judges a resolution by, as it accumulates over the history.
#[derive(Default)]
struct Facts {
    tags: BTreeSet<String>,
    channel: Option<String>,
    customer_messaged: bool,
    /// Handed off to a human since the last resolution was reopened.
    handed_off: bool,
}

impl Facts {
    /// What any event tells: its tags, its channel, a customer's message.
    fn learn(&mut self, e: &TicketEvent) {
        self.tags.extend(e.tags.iter().cloned());
        if e.channel.is_some() {
            self.channel.clone_from(&e.channel);
        }
        self.customer_messaged |= e.kind == EventKind::CustomerReplied;
    }

    fn of(&self, resolver: Option<Resolver>) -> ResolutionFacts {
        ResolutionFacts {
            resolver,
            handed_off: self.handed_off,
            tags: self.tags.clone(),
            channel: self.channel.clone(),
            customer_messaged: self.customer_messaged,
        }
    }
}

/// A replay under way.
struct Replay<'a> {
    contract: &'a ContractTerms,
    pinned: &'a BTreeMap<u32, ContractTerms>,
    out: TicketHistory,
    /// The number of the last resolution.
    seq: u32,
    state: State,
    facts: Facts,
    /// The events since the last resolution: the next one's evidence.
    cycle: Vec<String>,
}

impl Replay<'_> {
    /// An open ticket is resolved: a new resolution, judged by its contract.
    fn resolve(&mut self, e: &TicketEvent) {
        self.seq += 1;
        let terms = self.pinned.get(&self.seq).unwrap_or(self.contract);
        self.out.resolutions.push(Resolution {
            seq: self.seq,
            resolved_at: e.occurred_at,
            resolver: e.resolver,
            settle_at: e.occurred_at + terms.reopen_window_chrono(),
            verdict: terms.evaluate(&self.facts.of(e.resolver)),
            reopened: None,
            next_reopen: None,
            evidence: std::mem::take(&mut self.cycle),
        });
        self.state = State::Resolved(Some(self.out.resolutions.len() - 1));
    }

    /// A reopen signal (`kind`): it ends the resolution before it, inside its
    /// window (never an outcome) or after it (what clawback looks at).
    fn reopen(&mut self, e: &TicketEvent, kind: EventKind) {
        let reopen = Reopen {
            event_key: e.event_key.clone(),
            kind,
            at: e.occurred_at,
        };
        match self.state {
            State::Resolved(Some(i)) => {
                let r = &mut self.out.resolutions[i];
                if e.occurred_at < r.settle_at {
                    r.reopened = Some(reopen.clone());
                }
                r.next_reopen = Some(reopen);
            }
            State::Resolved(None) => self.out.reopen_after_settled = Some(reopen),
            State::Open => {}
        }
        if matches!(self.state, State::Resolved(_)) {
            self.facts.handed_off = false;
        }
        self.state = State::Open;
        self.facts.handed_off |= kind == EventKind::HandedOffToHuman;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        crate::time::Millis::from_ms(1_767_225_600_000).to_datetime() // 2026-01-01T00:00:00Z
    }

    fn ev(key: &str, kind: EventKind, hours: i64, resolver: Option<Resolver>) -> TicketEvent {
        TicketEvent {
            event_key: key.into(),
            ticket_id: "T1".into(),
            kind,
            occurred_at: t0() + Duration::hours(hours),
            resolver,
            actor_id: None,
            tags: vec![],
            channel: None,
        }
    }

    fn resolved(key: &str, hours: i64, r: Resolver) -> TicketEvent {
        ev(key, EventKind::Resolved, hours, Some(r))
    }

    fn c() -> ContractTerms {
        ContractTerms::default()
    }

    #[test]
    fn ai_resolution_not_reopened_becomes_due_after_the_window() {
        let h = replay(&c(), None, &[resolved("a", 1, Resolver::Ai)]);
        assert_eq!(h.resolutions.len(), 1);
        let r = &h.resolutions[0];
        assert_eq!(r.seq, 1);
        assert!(r.verdict.billable());
        assert_eq!(r.settle_at, t0() + Duration::hours(73));
        assert_eq!(r.standing(t0() + Duration::hours(72)), Standing::InWindow);
        assert_eq!(r.standing(t0() + Duration::hours(73)), Standing::Due);
        assert_eq!(h.next_settle_at(), Some(r.settle_at));
    }

    #[test]
    fn reopen_inside_window_disqualifies_and_next_resolution_is_seq_2() {
        let h = replay(
            &c(),
            None,
            &[
                resolved("a", 1, Resolver::Ai),
                ev("b", EventKind::Reopened, 10, None),
                resolved("c", 20, Resolver::Ai),
            ],
        );
        assert_eq!(h.resolutions.len(), 2);
        assert_eq!(h.resolutions[0].standing(t0()), Standing::Reopened);
        assert_eq!(h.resolutions[1].seq, 2);
        assert!(h.resolutions[1].reopened.is_none());
        assert_eq!(h.next_settle_at(), Some(t0() + Duration::hours(92)));
    }

    #[test]
    fn customer_reply_and_hand_off_are_reopen_signals() {
        for kind in [EventKind::CustomerReplied, EventKind::HandedOffToHuman] {
            let h = replay(
                &c(),
                None,
                &[resolved("a", 1, Resolver::Ai), ev("b", kind, 2, None)],
            );
            assert_eq!(
                h.resolutions[0].reopened.as_ref().map(|r| r.kind),
                Some(kind)
            );
        }
    }

    #[test]
    fn reopen_after_the_window_leaves_the_outcome_standing() {
        let h = replay(
            &c(),
            None,
            &[
                resolved("a", 0, Resolver::Ai),
                ev("b", EventKind::Reopened, 80, None),
            ],
        );
        assert!(h.resolutions[0].reopened.is_none());
    }

    #[test]
    fn hand_off_before_resolution_disqualifies_that_resolution_only() {
        let h = replay(
            &c(),
            None,
            &[
                ev("h", EventKind::HandedOffToHuman, 0, None),
                resolved("a", 1, Resolver::Ai),
                ev("b", EventKind::Reopened, 2, None),
                resolved("c", 3, Resolver::Ai),
            ],
        );
        assert_eq!(
            h.resolutions[0].verdict.clause.code(),
            "handed_off_to_human"
        );
        assert!(h.resolutions[1].verdict.billable());
    }

    #[test]
    fn second_resolve_without_reopen_is_ignored() {
        let h = replay(
            &c(),
            None,
            &[
                resolved("a", 1, Resolver::Ai),
                resolved("b", 2, Resolver::Human),
            ],
        );
        assert_eq!(h.resolutions.len(), 1);
        assert_eq!(h.resolutions[0].resolver, Some(Resolver::Ai));
    }

    #[test]
    fn a_pinned_contract_judges_its_resolution() {
        let strict = ContractTerms {
            reopen_window: std::time::Duration::from_secs(3600),
            billable_resolvers: vec![],
            ..Default::default()
        };
        let events = [
            resolved("a", 0, Resolver::Ai),
            ev("b", EventKind::Reopened, 2, None),
            resolved("c", 3, Resolver::Ai),
        ];
        let pinned = [(1u32, strict)].into_iter().collect();
        let h = replay_pinned(&c(), &pinned, None, &events);
        assert_eq!(
            h.resolutions[0].verdict.clause.code(),
            "resolver_not_billable"
        );
        assert!(
            h.resolutions[0].reopened.is_none(),
            "1h window: the reopen at 2h is after it"
        );
        assert!(
            h.resolutions[1].verdict.billable(),
            "seq 2 uses the current contract"
        );
    }

    #[test]
    fn settled_history_is_frozen() {
        let settled = Settled {
            seq: 1,
            resolved_at: t0() + Duration::hours(5),
        };
        let h = replay(
            &c(),
            Some(settled),
            &[
                resolved("a", 5, Resolver::Ai),
                ev("late", EventKind::Reopened, 3, None),
                ev("r", EventKind::Reopened, 6, None),
                resolved("c", 7, Resolver::Ai),
            ],
        );
        assert_eq!(h.late, vec!["late".to_string(), "a".to_string()]);
        assert_eq!(
            h.reopen_after_settled
                .as_ref()
                .map(|r| r.event_key.as_str()),
            Some("r")
        );
        assert_eq!(h.resolutions.len(), 1);
        assert_eq!(h.resolutions[0].seq, 2);
    }

    #[test]
    fn each_resolution_knows_the_reopen_that_ended_it() {
        let h = replay(
            &c(),
            None,
            &[
                resolved("a", 0, Resolver::Ai),
                ev("o1", EventKind::Reopened, 80, None), // after seq 1's window
                resolved("b", 90, Resolver::Ai),
                ev("o2", EventKind::CustomerReplied, 95, None), // inside seq 2's window
                ev("o3", EventKind::Reopened, 96, None),
                resolved("c", 100, Resolver::Ai),
            ],
        );
        let keys = |r: &Resolution| {
            (
                r.reopened.as_ref().map(|x| x.event_key.clone()),
                r.next_reopen.as_ref().map(|x| x.event_key.clone()),
            )
        };
        assert_eq!(keys(&h.resolutions[0]), (None, Some("o1".into())));
        assert_eq!(
            keys(&h.resolutions[1]),
            (Some("o2".into()), Some("o2".into()))
        );
        assert_eq!(keys(&h.resolutions[2]), (None, None));
    }

    /// docs/contract.md, "What the contract means": any reopen signal after a confirmed
    /// resolution is a clawback reopen; a second resolution event is not.
    #[test]
    fn a_customer_reply_or_hand_off_after_confirmation_is_a_clawback_reopen() {
        let settled = Settled {
            seq: 1,
            resolved_at: t0(),
        };
        let clawback = Some(std::time::Duration::from_secs(30 * 86_400));
        for kind in [EventKind::CustomerReplied, EventKind::HandedOffToHuman] {
            let h = replay(
                &c(),
                Some(settled),
                &[
                    resolved("a", 0, Resolver::Ai),
                    resolved("closed", 75, Resolver::Human),
                    ev("x", kind, 100, None),
                    ev("y", EventKind::Reopened, 101, None),
                ],
            );
            let reopen = h.reopen_after_settled.expect("a reopen");
            assert_eq!((reopen.kind, reopen.event_key.as_str()), (kind, "x"));
            assert!(reopen.claws_back(t0(), clawback));
            assert!(
                h.resolutions.is_empty(),
                "`closed` did not start a resolution"
            );
        }
        let h = replay(
            &c(),
            Some(settled),
            &[
                resolved("a", 0, Resolver::Ai),
                resolved("closed", 75, Resolver::Human),
            ],
        );
        assert_eq!(h.reopen_after_settled, None, "closing again is no reopen");
    }

    /// docs/contract.md, "What the contract means": tags (and the channel) are read up to
    /// and including the resolving event; a tag added later changes only the
    /// ticket's later resolutions, even inside the window.
    #[test]
    fn a_tag_added_after_the_resolution_counts_only_for_later_resolutions() {
        let terms = ContractTerms {
            excluded_tags: vec!["spam".into()],
            excluded_channels: vec!["voice".into()],
            ..c()
        };
        let tagged = |key: &str, kind, hours, r, tag: &str, channel: &str| TicketEvent {
            tags: vec![tag.into()],
            channel: Some(channel.into()),
            ..ev(key, kind, hours, r)
        };
        let h = replay(
            &terms,
            None,
            &[
                tagged("t", EventKind::CustomerReplied, 0, None, "billing", "chat"),
                resolved("a", 1, Resolver::Ai),
                tagged(
                    "b",
                    EventKind::Resolved,
                    2,
                    Some(Resolver::Ai),
                    "spam",
                    "voice",
                ),
                ev("o", EventKind::Reopened, 80, None),
                resolved("c", 81, Resolver::Ai),
            ],
        );
        let clauses: Vec<&str> = h
            .resolutions
            .iter()
            .map(|r| r.verdict.clause.code())
            .collect();
        assert_eq!(clauses, vec!["billable", "excluded_tag"]);
        assert!(h.resolutions[0].reopened.is_none());
    }

    #[test]
    fn clawback_limit_is_inclusive_and_none_never_claws_back() {
        let reopen = |h: i64| Reopen {
            event_key: "o".into(),
            kind: EventKind::Reopened,
            at: t0() + Duration::hours(h),
        };
        let day = Some(std::time::Duration::from_secs(86_400));
        assert!(reopen(10).claws_back(t0(), day));
        assert!(reopen(24).claws_back(t0(), day));
        assert!(!reopen(25).claws_back(t0(), day));
        assert!(!reopen(0).claws_back(t0(), day), "not after the resolution");
        assert!(!reopen(10).claws_back(t0(), None));
        let forever = Some(std::time::Duration::MAX);
        assert!(reopen(1_000_000).claws_back(t0(), forever));
    }

    fn arb_event() -> impl Strategy<Value = TicketEvent> {
        (0u8..4, 0i64..200, any::<bool>(), 0u32..1000).prop_map(|(k, h, ai, n)| {
            let kind = EventKind::ALL[k as usize];
            let resolver = (kind == EventKind::Resolved).then_some(if ai {
                Resolver::Ai
            } else {
                Resolver::Human
            });
            ev(&format!("e{n}"), kind, h, resolver)
        })
    }

    fn dedup_by_key(events: Vec<TicketEvent>) -> Vec<TicketEvent> {
        let mut seen = HashSet::new();
        events
            .into_iter()
            .filter(|e| seen.insert(e.event_key.clone()))
            .collect()
    }

    /// Events at distinct hours, with tags and channels that the contract excludes.
    fn arb_history() -> impl Strategy<Value = Vec<TicketEvent>> {
        let one = (0u8..4, any::<bool>(), 0u8..6, 0u8..4);
        (prop::collection::vec(one, 0..16), any::<u64>()).prop_map(|(specs, seed)| {
            let mut hours: Vec<i64> = (0..200).collect();
            fastrand::Rng::with_seed(seed).shuffle(&mut hours);
            specs
                .into_iter()
                .zip(hours)
                .enumerate()
                .map(|(n, ((k, ai, tag, chan), h))| {
                    let kind = EventKind::ALL[k as usize];
                    let resolver = (kind == EventKind::Resolved).then_some(if ai {
                        Resolver::Ai
                    } else {
                        Resolver::Human
                    });
                    let mut e = ev(&format!("e{n}"), kind, h, resolver);
                    if tag == 0 {
                        e.tags = vec!["spam".into()];
                    }
                    e.channel = ["voice", "chat"].get(chan as usize).map(|c| c.to_string());
                    e
                })
                .collect()
        })
    }

    proptest! {
        /// Confirming resolution by resolution (history frozen up to each) decides
        /// every later resolution as one replay of everything would.
        #[test]
        fn settling_step_by_step_equals_replaying_everything(events in arb_history()) {
            let terms = ContractTerms {
                excluded_tags: vec!["spam".into()],
                excluded_channels: vec!["voice".into()],
                require_customer_message: true,
                ..c()
            };
            let all = replay(&terms, None, &events);
            for (k, settled) in all.resolutions.iter().enumerate() {
                let frozen = Settled { seq: settled.seq, resolved_at: settled.resolved_at };
                let later = replay(&terms, Some(frozen), &events);
                let verdicts = |rs: &[Resolution]| -> Vec<(u32, Verdict)> {
                    rs.iter().map(|r| (r.seq, r.verdict.clone())).collect()
                };
                prop_assert_eq!(verdicts(&later.resolutions), verdicts(&all.resolutions[k + 1..]));
            }
        }

        #[test]
        fn any_permutation_gives_the_same_history(
            events in prop::collection::vec(arb_event(), 0..24).prop_map(dedup_by_key),
            seed in any::<u64>(),
        ) {
            let expected = replay(&c(), None, &events);
            let mut shuffled = events.clone();
            let mut rng = fastrand::Rng::with_seed(seed);
            rng.shuffle(&mut shuffled);
            prop_assert_eq!(replay(&c(), None, &shuffled), expected);
        }

        #[test]
        fn duplicated_events_change_nothing(
            events in prop::collection::vec(arb_event(), 0..24).prop_map(dedup_by_key),
            dup_idx in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let expected = replay(&c(), None, &events);
            let mut doubled = events.clone();
            if !events.is_empty() {
                for i in dup_idx {
                    doubled.push(events[i.index(events.len())].clone());
                }
            }
            prop_assert_eq!(replay(&c(), None, &doubled), expected);
        }

        #[test]
        fn every_resolution_but_the_last_was_ended_by_a_reopen(
            events in prop::collection::vec(arb_event(), 0..24).prop_map(dedup_by_key),
        ) {
            let h = replay(&c(), None, &events);
            let n = h.resolutions.len();
            for (i, r) in h.resolutions.iter().enumerate() {
                if i + 1 < n {
                    let next = r.next_reopen.as_ref();
                    prop_assert!(next.is_some());
                    prop_assert!(next.is_some_and(|x| x.at >= r.resolved_at && x.at <= h.resolutions[i + 1].resolved_at));
                }
                if r.reopened.is_some() {
                    prop_assert_eq!(&r.reopened, &r.next_reopen);
                }
            }
        }

        #[test]
        fn sequence_numbers_are_consecutive(
            events in prop::collection::vec(arb_event(), 0..24).prop_map(dedup_by_key),
        ) {
            let h = replay(&c(), None, &events);
            for (i, r) in h.resolutions.iter().enumerate() {
                prop_assert_eq!(r.seq as usize, i + 1);
            }
        }
    }
}
