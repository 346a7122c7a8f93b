//! The Freshdesk client against the fake Freshdesk API: ticket stats,
//! conversations paginated by `Link` header, API-key auth, what it cannot see.

use super::*;
use outcome_meter::event::Resolver;
use testkit::fake_helpdesk::freshdesk::{Freshdesk, AGENT_WORDS, CUSTOMER_WORDS};

fn conversation_requests(fake: &FakeHelpdesk) -> Vec<String> {
    fake.log()
        .into_iter()
        .filter(|l| l.contains("/conversations"))
        .collect()
}

#[tokio::test]
async fn freshdesk_client_reads_status_and_history() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    common_checks(&fake).await;
}

#[tokio::test]
async fn freshdesk_sends_the_key_as_basic_user_and_asks_for_stats() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    fake.set_life(
        "600",
        at(0),
        vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
    );
    let look = client(&fake).look("600", None).await.expect("look");
    assert!(look.resolved);
    assert_eq!(look.status, "resolved");
    assert_eq!(fake.state().refused, 0, "key:X accepted");
    let log = fake.log();
    assert_eq!(log[0], "GET /api/v2/tickets/600?include=stats");
    assert!(log[1].starts_with("GET /api/v2/tickets/600/conversations?"));
    assert!(log[1].contains("per_page=100") && log[1].contains("page=1"));
    // The agent's email as user name (what the fake's `user` is) is refused.
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.token = fake.user();
    }
    let wrong = helpdesk_api::client_for("freshdesk", &s)
        .expect("builds")
        .expect("on");
    assert!(matches!(
        wrong.look("600", None).await,
        Err(ApiError::Refused { status: 401, .. })
    ));
}

#[tokio::test]
async fn freshdesk_follows_the_link_header_to_the_last_page() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    let steps: Vec<Step> = (0..3)
        .flat_map(|i| {
            [
                Step::new(at(2 * i + 1), Happening::Resolved { by_ai: true }),
                Step::new(at(2 * i + 2), Happening::CustomerReplied),
            ]
        })
        .collect();
    fake.set_life("601", at(0), steps);
    let look = client(&fake).look("601", None).await.expect("look");
    // 6 conversations, 2 a page: pages 1, 2, 3 and no fourth.
    let pages = conversation_requests(&fake);
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages[2].contains("page=3"));
    let replies: Vec<_> = look
        .events
        .iter()
        .filter(|e| e.kind == EventKind::CustomerReplied)
        .map(|e| e.occurred_at)
        .collect();
    assert_eq!(replies, vec![at(2), at(4), at(6)], "{look:?}");
    assert_eq!(look.last_customer_message_at, Some(at(6)));
    assert!(!look.resolved, "the customer's last reply reopened it");
}

#[tokio::test]
async fn freshdesk_leaves_out_what_happened_before_since() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    fake.set_life(
        "602",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::CustomerReplied),
            Step::new(at(3), Happening::HandedOff),
            Step::new(at(4), Happening::Resolved { by_ai: false }),
        ],
    );
    let look = client(&fake).look("602", Some(at(3))).await.expect("look");
    assert_eq!(look.events.len(), 1, "{look:?}");
    assert_eq!(look.events[0].kind, EventKind::Resolved);
    assert_eq!(look.events[0].occurred_at, at(4));
    assert_eq!(
        look.events[0].resolver,
        Some(Resolver::Human),
        "assigned to the human now"
    );
    assert_eq!(look.last_customer_message_at, Some(at(2)));
}

#[tokio::test]
async fn freshdesk_keys_are_its_own_and_keep_no_words() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    fake.set_life(
        "603",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::CustomerReplied),
        ],
    );
    let look = client(&fake).look("603", None).await.expect("look");
    assert_eq!(look.events.len(), 3, "{look:?}");
    assert!(look
        .events
        .iter()
        .all(|e| e.event_key.starts_with("api:freshdesk:")));
    assert_eq!(look.events[0].resolver, Some(Resolver::Ai));
    assert_eq!(look.events[0].channel.as_deref(), Some("portal"));
    let kept = look.answer.to_string();
    assert!(!kept.contains(CUSTOMER_WORDS) && !kept.contains(AGENT_WORDS) && !kept.contains('@'));
    // Hand-offs are not visible through this API: say so.
    assert!(!client(&fake).sight().assignments);
}

#[tokio::test]
async fn freshdesk_needs_the_ai_agents_numeric_id() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    let mut s = settings_for(&fake);
    s.ai_agent_ids = vec!["bot@acme.example".into()];
    match helpdesk_api::client_for("freshdesk", &s) {
        Err(e) => assert!(e.contains("numeric"), "{e}"),
        Ok(_) => panic!("an email-only ai_agent_ids cannot match responder_id"),
    }
    let problems = helpdesk_api::problems("freshdesk", &s);
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[tokio::test]
async fn freshdesk_ids_that_are_not_numbers_are_never_sent() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    assert!(matches!(
        client(&fake).look("12?include=requester", None).await,
        Err(ApiError::NotFound(_))
    ));
    assert!(fake.log().is_empty());
}

#[tokio::test]
async fn freshdesk_gives_up_after_the_page_bound() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    fake.set_page_size(1);
    let pages = helpdesk_api::MAX_PAGES;
    let steps = (0..=i64::from(pages))
        .map(|i| Step::new(at(i + 1), Happening::CustomerReplied))
        .collect();
    fake.set_life("604", at(0), steps);
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.requests_per_minute = Some(60_000);
    }
    let api = helpdesk_api::client_for("freshdesk", &s)
        .expect("builds")
        .expect("on");
    match api.look("604", None).await {
        Err(ApiError::Malformed { detail, .. }) => assert!(detail.contains("pages"), "{detail}"),
        other => panic!("101 pages of 1: {other:?}"),
    }
    assert_eq!(conversation_requests(&fake).len(), pages as usize);
}

#[tokio::test]
async fn freshdesk_lists_changed_tickets() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    common_listing_checks(&fake).await;
}

fn list_requests(fake: &FakeHelpdesk) -> Vec<String> {
    fake.log()
        .into_iter()
        .filter(|l| l.starts_with("GET /api/v2/tickets?"))
        .collect()
}

/// Every page of the listing, from the first.
async fn list_all(
    api: &dyn HelpdeskApi,
    since: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let (mut ids, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = api
            .changed_tickets(since, until, cursor.as_deref())
            .await
            .expect("page");
        pages += 1;
        assert!(pages < 30, "the listing ends");
        ids.extend(page.ticket_ids);
        match page.next {
            Some(n) => cursor = Some(n),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn freshdesk_backfill_asks_by_update_time_oldest_first_and_reanchors() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    // Two months later: without `updated_since` Freshdesk lists only the
    // tickets created in the past 30 days, none of these.
    fake.set_now(at(24 * 60));
    for (id, hours) in [("701", 1), ("702", 2), ("703", 3)] {
        fake.set_life(
            id,
            at(hours),
            vec![Step::new(
                at(hours + 1),
                Happening::Resolved { by_ai: true },
            )],
        );
    }
    // Resolved in the range, reopened after it: listed (by its latest update).
    fake.set_life(
        "704",
        at(4),
        vec![
            Step::new(at(5), Happening::Resolved { by_ai: true }),
            Step::new(at(200), Happening::CustomerReplied),
        ],
    );
    let mut ids = list_all(client(&fake).as_ref(), at(0), at(24)).await;
    ids.sort();
    ids.dedup();
    assert_eq!(ids, vec!["701", "702", "703", "704"]);
    let log = list_requests(&fake);
    let first = &log[0];
    for part in [
        "updated_since=2026-01-01T00%3A00%3A00Z",
        "order_by=updated_at",
        "order_type=asc",
        "per_page=100",
        "page=1",
    ] {
        assert!(first.contains(part), "{part} in {first}");
    }
    // The next page from the last update seen (702's, 03:00) less a second, at page 1.
    assert!(
        log[1].contains("updated_since=2026-01-01T02%3A59%3A59Z") && log[1].contains("page=1"),
        "{}",
        log[1]
    );
    assert!(log.iter().all(|l| l.contains("page=1")), "{log:?}");
}

#[tokio::test]
async fn freshdesk_backfill_pages_through_tickets_updated_in_one_second() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    // A bulk update: five tickets changed at the same second.
    for id in ["801", "802", "803", "804", "805"] {
        fake.set_life(
            id,
            at(1),
            vec![Step::new(at(2), Happening::Resolved { by_ai: true })],
        );
    }
    let mut ids = list_all(client(&fake).as_ref(), at(0), at(24)).await;
    ids.sort();
    ids.dedup();
    assert_eq!(ids, vec!["801", "802", "803", "804", "805"]);
    let log = list_requests(&fake);
    assert!(log.len() <= 5, "{log:?}");
    assert!(log.iter().any(|l| l.contains("page=3")), "{log:?}");
}

#[tokio::test]
async fn freshdesk_refuses_cursors_it_did_not_write() {
    let fake = FakeHelpdesk::start(Freshdesk).await;
    for bad in ["2", "fd-list:1767225600:301", "zd-export:abc"] {
        match client(&fake).changed_tickets(at(0), at(1), Some(bad)).await {
            Err(ApiError::Malformed { detail, .. }) => {
                assert!(detail.contains("cursor"), "{detail}")
            }
            other => panic!("cursor {bad}: {other:?}"),
        }
    }
    assert!(fake.log().is_empty(), "nothing was sent");
}
