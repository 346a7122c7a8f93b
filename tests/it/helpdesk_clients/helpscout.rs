//! The Help Scout client: an OAuth token fetched once, the conversation, then
//! its threads page by page until `since`.

use super::*;
use outcome_meter::event::composite_key;
use testkit::fake_helpdesk::helpscout::{HelpScout, TOKEN_PATH};
use testkit::fake_helpdesk::rfc3339;

#[tokio::test]
async fn helpscout_client_reads_status_and_history() {
    let fake = FakeHelpdesk::start(HelpScout).await;
    common_checks(&fake).await;
}

fn token_requests(fake: &FakeHelpdesk) -> usize {
    fake.log()
        .iter()
        .filter(|l| *l == &format!("POST {TOKEN_PATH}"))
        .count()
}

#[tokio::test]
async fn helpscout_follows_every_page_of_threads_for_the_whole_history() {
    let fake = FakeHelpdesk::start(HelpScout).await;
    ai_then_human_life(&fake, "101"); // 6 threads, 2 a page
    let look = client(&fake).look("101", None).await.expect("look");
    let log = fake.log();
    for page in 1..=3 {
        let line = format!("GET /v2/conversations/101/threads?page={page}");
        assert!(log.contains(&line), "{line} in {log:?}");
    }
    assert!(!log.iter().any(|l| l.ends_with("page=4")), "{log:?}");
    let kinds: Vec<_> = look
        .events
        .iter()
        .map(|e| (e.kind, e.occurred_at))
        .collect();
    // The customer's reply reopens the conversation (its status goes back to
    // active); the agent's reopen at 6h changes nothing more. The opening
    // message is not a reply.
    assert_eq!(
        kinds,
        vec![
            (EventKind::Resolved, at(1)),
            (EventKind::Reopened, at(5)),
            (EventKind::CustomerReplied, at(5)),
            (EventKind::HandedOffToHuman, at(7)),
            (EventKind::Resolved, at(9)),
        ],
        "{look:?}"
    );
}

#[tokio::test]
async fn helpscout_stops_paging_once_past_since() {
    let fake = FakeHelpdesk::start(HelpScout).await;
    ai_then_human_life(&fake, "101");
    let look = client(&fake).look("101", Some(at(8))).await.expect("look");
    let pages: Vec<_> = fake
        .log()
        .into_iter()
        .filter(|l| l.contains("/threads"))
        .collect();
    assert_eq!(
        pages,
        vec!["GET /v2/conversations/101/threads?page=1".to_string()]
    );
    let kinds: Vec<_> = look
        .events
        .iter()
        .map(|e| (e.kind, e.occurred_at))
        .collect();
    assert_eq!(
        kinds,
        vec![(EventKind::Resolved, at(9))],
        "the hand-off at 7h is before since"
    );
}

#[tokio::test]
async fn helpscout_token_is_fetched_once_and_replaced_when_refused() {
    let fake = FakeHelpdesk::start(HelpScout).await;
    ai_then_human_life(&fake, "101");
    let api = client(&fake);
    api.look("101", None).await.expect("look");
    api.look("101", Some(at(8))).await.expect("look again");
    assert_eq!(token_requests(&fake), 1, "{:?}", fake.log());
    // Three days on, Help Scout refuses the token: one new token, then the answer.
    fake.set_now(Utc::now() + Duration::days(3));
    api.look("101", Some(at(8)))
        .await
        .expect("look with a new token");
    assert_eq!(token_requests(&fake), 2, "{:?}", fake.log());
}

#[tokio::test]
async fn helpscout_wrong_app_secret_is_refused_before_any_conversation_is_read() {
    let fake = FakeHelpdesk::start(HelpScout).await;
    ai_then_human_life(&fake, "101");
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.token = "not-the-app-secret".into();
    }
    let api = helpdesk_api::client_for("helpscout", &s)
        .expect("builds")
        .expect("on");
    assert!(matches!(
        api.look("101", None).await,
        Err(ApiError::Refused { status: 401, .. })
    ));
    assert_eq!(fake.log(), vec![format!("POST {TOKEN_PATH}")]);
}

#[tokio::test]
async fn helpscout_the_current_close_has_the_webhooks_key() {
    let fake = FakeHelpdesk::start(HelpScout).await;
    ai_then_human_life(&fake, "101");
    let look = client(&fake).look("101", None).await.expect("look");
    let last = look.events.last().expect("events");
    assert_eq!(
        last.event_key,
        composite_key(&[
            "helpscout",
            "101",
            "convo.status",
            "closed",
            &rfc3339(at(9))
        ])
    );
    let first = &look.events[0];
    assert!(
        first.event_key.starts_with("api:helpscout:101:"),
        "{first:?}"
    );
}

#[tokio::test]
async fn helpscout_needs_the_app_id() {
    let fake = FakeHelpdesk::start(HelpScout).await;
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.user = None;
    }
    let err = helpdesk_api::client_for("helpscout", &s)
        .err()
        .expect("refused");
    assert!(err.contains("App ID"), "{err}");
}

#[tokio::test]
async fn helpscout_lists_changed_conversations() {
    let fake = FakeHelpdesk::start(HelpScout).await;
    common_listing_checks(&fake).await;
}

/// Every page of the listing read from `since` to `until`.
async fn list_all(fake: &FakeHelpdesk, since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<String> {
    let api = client(fake);
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let page = api
            .changed_tickets(since, until, cursor.as_deref())
            .await
            .expect("page");
        ids.extend(page.ticket_ids);
        match page.next {
            Some(n) => cursor = Some(n),
            None => return ids,
        }
    }
    panic!("the listing does not end");
}

#[tokio::test]
async fn helpscout_listing_asks_for_every_status_oldest_created_first_and_stops_at_until() {
    let fake = FakeHelpdesk::start(HelpScout).await;
    // Closed (the list's default `active` would hide it), created before the
    // range, changed in it and again after it.
    fake.set_life(
        "401",
        at(-48),
        vec![
            Step::new(at(5), Happening::CustomerReplied),
            Step::new(at(40), Happening::Resolved { by_ai: true }),
        ],
    );
    // Changed only before the range.
    fake.set_life(
        "402",
        at(-30),
        vec![Step::new(at(-20), Happening::Resolved { by_ai: true })],
    );
    fake.set_life(
        "403",
        at(2),
        vec![Step::new(at(3), Happening::Resolved { by_ai: true })],
    );
    // Created after the range: five of them, more than two pages.
    for i in 0..5 {
        fake.set_life(
            &format!("5{i:02}"),
            at(30 + i),
            vec![Step::new(at(31 + i), Happening::CustomerReplied)],
        );
    }
    let ids = list_all(&fake, at(0), at(24)).await;
    assert_eq!(ids, vec!["401".to_string(), "403".to_string()]);
    let lists: Vec<_> = fake
        .log()
        .into_iter()
        .filter(|l| l.starts_with("GET /v2/conversations?"))
        .collect();
    // 401, 403 | 500, 501: the second page reaches `until`, the rest is not read.
    assert_eq!(lists.len(), 2, "{lists:?}");
    let since = "modifiedSince=2025-12-31T23%3A59%3A59Z";
    for (i, line) in lists.iter().enumerate() {
        for want in [
            "status=all",
            since,
            "sortField=createdAt",
            "sortOrder=asc",
            &format!("page={}", i + 1),
        ] {
            assert!(line.contains(want), "{want} in {line}");
        }
    }
}

#[tokio::test]
async fn helpscout_listing_resumes_from_a_page_number_bound_to_its_range() {
    let fake = FakeHelpdesk::start(HelpScout).await;
    three_replied_tickets(&fake);
    let api = client(&fake);
    let next = api
        .changed_tickets(at(0), at(24), None)
        .await
        .expect("first page")
        .next
        .expect("a second page");
    // Conversations modified meanwhile keep their place: the order is by creation.
    fake.push("1", Step::new(at(10), Happening::Resolved { by_ai: true }));
    let page = api
        .changed_tickets(at(0), at(24), Some(&next))
        .await
        .expect("resumed");
    assert_eq!(page.ticket_ids, vec!["3".to_string()]);
    assert_eq!(page.next, None);
    let before = fake.requests();
    match api.changed_tickets(at(1), at(24), Some(&next)).await {
        Err(ApiError::Malformed { .. }) => {}
        other => panic!("a cursor of another range: {other:?}"),
    }
    assert_eq!(fake.requests(), before, "refused before any request");
}
