//! The Intercom client: one `GET /conversations/{id}` per look, parts
//! normalized like the webhooks, keys that never collide with them.

use super::*;
use outcome_meter::event::Resolver;
use testkit::fake_helpdesk::intercom::{part_id, Intercom, PART_LIMIT};

#[tokio::test]
async fn intercom_client_reads_status_and_history() {
    let fake = FakeHelpdesk::start(Intercom).await;
    common_checks(&fake).await;
}

#[tokio::test]
async fn intercom_look_is_one_request_and_drops_parts_before_since() {
    let fake = FakeHelpdesk::start(Intercom).await;
    ai_then_human_life(&fake, "101");
    let api = client(&fake);
    let look = api.look("101", Some(at(6))).await.expect("look");
    assert_eq!(fake.log(), vec!["GET /conversations/101".to_string()]);
    let kinds: Vec<_> = look
        .events
        .iter()
        .map(|e| (e.kind, e.occurred_at))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Reopened, at(6)),
            (EventKind::HandedOffToHuman, at(7)),
            (EventKind::Resolved, at(9)),
        ]
    );
    assert_eq!(look.status, "closed");
    assert_eq!(
        look.last_customer_message_at,
        Some(at(5)),
        "from the statistics"
    );
}

#[tokio::test]
async fn intercom_keys_are_prefixed_stable_and_name_the_part() {
    let fake = FakeHelpdesk::start(Intercom).await;
    ai_then_human_life(&fake, "101");
    let api = client(&fake);
    let a = api.look("101", None).await.expect("look");
    let b = api.look("101", None).await.expect("look again");
    let keys: Vec<_> = a.events.iter().map(|e| e.event_key.clone()).collect();
    assert_eq!(
        keys,
        b.events
            .iter()
            .map(|e| e.event_key.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        keys[0],
        format!("api:intercom:101:{}:resolved", part_id("101", 0))
    );
    assert!(keys.iter().all(|k| k.starts_with("api:intercom:101:")));
    // Fin's close is the AI's; the teammate's close after it is a person's.
    assert_eq!(a.events[0].resolver, Some(Resolver::Ai));
    assert_eq!(
        a.events.last().and_then(|e| e.resolver),
        Some(Resolver::Human)
    );
}

#[tokio::test]
async fn intercom_a_resolution_by_an_unconfigured_bot_without_fin_state_is_human() {
    let fake = FakeHelpdesk::start(Intercom).await;
    fake.set_life(
        "7",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::CustomerReplied),
        ],
    );
    // Without the AI agent's id configured, and with Fin's state gone (the
    // conversation is open again), the bot's close cannot be told from a person's.
    let mut s = settings_for(&fake);
    s.ai_agent_ids.clear();
    let api = helpdesk_api::client_for("intercom", &s)
        .expect("builds")
        .expect("on");
    let look = api.look("7", None).await.expect("look");
    assert!(!look.resolved);
    assert_eq!(look.events[0].resolver, Some(Resolver::Human));
}

#[tokio::test]
async fn intercom_more_than_500_parts_is_flagged_in_the_evidence() {
    let fake = FakeHelpdesk::start(Intercom).await;
    let steps = (0..=PART_LIMIT as i64)
        .map(|i| Step::new(at(1) + Duration::minutes(i), Happening::CustomerReplied))
        .collect();
    fake.set_life("8", at(0), steps);
    let look = client(&fake).look("8", None).await.expect("look");
    assert_eq!(look.events.len(), PART_LIMIT);
    assert_eq!(look.answer["parts_truncated"], serde_json::json!(true));
}

#[tokio::test]
async fn intercom_without_a_token_the_client_is_not_built() {
    let fake = FakeHelpdesk::start(Intercom).await;
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.token.clear();
    }
    let err = helpdesk_api::client_for("intercom", &s)
        .err()
        .expect("refused");
    assert!(err.contains("api.token"), "{err}");
}

#[tokio::test]
async fn intercom_lists_changed_conversations() {
    let fake = FakeHelpdesk::start(Intercom).await;
    common_listing_checks(&fake).await;
}

#[tokio::test]
async fn intercom_listing_searches_by_last_update_and_creation_in_seconds() {
    let fake = FakeHelpdesk::start(Intercom).await;
    // Created before the range, changed in it, and changed again after it: its
    // last update is past `until`, and it must still be listed.
    fake.set_life(
        "301",
        at(-48),
        vec![
            Step::new(at(5), Happening::Resolved { by_ai: true }),
            Step::new(at(40), Happening::CustomerReplied),
        ],
    );
    // Changed only a day before the range (inside the search's two-day slack).
    fake.set_life(
        "302",
        at(-30),
        vec![Step::new(at(-20), Happening::Resolved { by_ai: true })],
    );
    // Created a day after the range (inside the slack too).
    fake.set_life(
        "303",
        at(30),
        vec![Step::new(at(31), Happening::Resolved { by_ai: true })],
    );
    let api = client(&fake);
    let (since, until) = (at(0), at(24));
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = api
            .changed_tickets(since, until, cursor.as_deref())
            .await
            .expect("page");
        ids.extend(page.ticket_ids);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    // 302 and 303 come back from the widened search and are dropped here.
    assert_eq!(ids, vec!["301".to_string()]);
    // Every request was the search (the fake answers 400 to any other query
    // shape, to dates in milliseconds and to per_page above 150).
    let log = fake.log();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|l| l == "POST /conversations/search"),
        "{log:?}"
    );
}

#[tokio::test]
async fn intercom_listing_cursor_is_bound_to_its_range() {
    let fake = FakeHelpdesk::start(Intercom).await;
    three_replied_tickets(&fake);
    let api = client(&fake);
    let page = api
        .changed_tickets(at(0), at(24), None)
        .await
        .expect("first page");
    let next = page.next.expect("a second page");
    assert!(next.starts_with("ic1:"), "{next}");
    let before = fake.requests();
    match api.changed_tickets(at(0), at(48), Some(&next)).await {
        Err(ApiError::Malformed { .. }) => {}
        other => panic!("a cursor of another range: {other:?}"),
    }
    match api.changed_tickets(at(0), at(24), Some("WzE2")).await {
        Err(ApiError::Malformed { .. }) => {}
        other => panic!("a bare vendor cursor: {other:?}"),
    }
    assert_eq!(fake.requests(), before, "refused before any request");
}
