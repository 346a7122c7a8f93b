//! The Zoho Desk client: an OAuth access token from the refresh token, fetched
//! once and reused, the `orgId` header, `from`/`limit` pages to the 204, status
//! types, and `since`.

use super::*;
use testkit::fake_helpdesk::zohodesk::{ZohoDesk, REFRESH_TOKEN, TOKEN_PATH};

fn token_requests(fake: &FakeHelpdesk) -> usize {
    fake.log()
        .iter()
        .filter(|l| l.starts_with(&format!("POST {TOKEN_PATH}")))
        .count()
}

#[tokio::test]
async fn zohodesk_client_reads_status_and_history() {
    let fake = FakeHelpdesk::start(ZohoDesk::default()).await;
    common_checks(&fake).await;
}

#[tokio::test]
async fn zohodesk_token_is_fetched_once_and_reused() {
    let fake = FakeHelpdesk::start(ZohoDesk::default()).await;
    three_resolutions_life(&fake, "201");
    let api = client(&fake);
    api.look("201", None).await.expect("first look");
    api.look("201", Some(at(5))).await.expect("second look");
    assert_eq!(token_requests(&fake), 1, "{:?}", fake.log());
    // The token request carries no secret in its URL (form body).
    let log = fake.log();
    let token_line = log
        .iter()
        .find(|l| l.starts_with("POST"))
        .expect("token request");
    assert_eq!(token_line, &format!("POST {TOKEN_PATH}"));
    assert!(!log.iter().any(|l| l.contains(REFRESH_TOKEN)));
}

#[tokio::test]
async fn zohodesk_a_refused_token_is_renewed_once() {
    let zoho = ZohoDesk::default();
    let fake = FakeHelpdesk::start(zoho.clone()).await;
    fake.set_life(
        "1",
        at(0),
        vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
    );
    let api = client(&fake);
    api.look("1", None).await.expect("look");
    zoho.revoke_tokens();
    let look = api.look("1", None).await.expect("renewed");
    assert!(look.resolved);
    assert_eq!(token_requests(&fake), 2, "{:?}", fake.log());
}

#[tokio::test]
async fn zohodesk_pages_are_followed_to_the_end() {
    let fake = FakeHelpdesk::start(ZohoDesk::default()).await;
    three_resolutions_life(&fake, "201");
    let look = client(&fake).look("201", None).await.expect("look");
    let count = |kind| look.events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count(EventKind::CustomerReplied), 3, "{look:?}");
    assert_eq!(count(EventKind::Resolved), 3, "{look:?}");
    assert_eq!(count(EventKind::Reopened), 2, "{look:?}");
    assert_eq!(count(EventKind::HandedOffToHuman), 1, "{look:?}");
    let ai = look
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Resolved && e.occurred_at < at(7))
        .all(|e| e.resolver == Some(outcome_meter::event::Resolver::Ai));
    assert!(ai, "{look:?}");
    let log = fake.log();
    // History: created + 3 closes + 2 reopens + 1 owner change = 7 entries, 2 a page:
    // from=0, 2, 4, 6 (one entry), then 7 answered 204: `from` advances by what came.
    let history: Vec<_> = log.iter().filter(|l| l.contains("/History")).collect();
    assert_eq!(history.len(), 5, "{log:?}");
    for (line, from) in history.iter().zip([0, 2, 4, 6, 7]) {
        assert!(line.contains(&format!("from={from}&limit=50")), "{line}");
    }
    // Threads: 3 in + 3 out: from=0, 2, 4, then 6 answered 204.
    let threads = log.iter().filter(|l| l.contains("/threads")).count();
    assert_eq!(threads, 4, "{log:?}");
}

#[tokio::test]
async fn zohodesk_since_stops_reading_history_early() {
    let fake = FakeHelpdesk::start(ZohoDesk::default()).await;
    three_resolutions_life(&fake, "201");
    let look = client(&fake).look("201", Some(at(6))).await.expect("look");
    assert!(
        look.events.iter().all(|e| e.occurred_at >= at(6)),
        "{look:?}"
    );
    assert!(look.resolved);
    let history = fake.log().iter().filter(|l| l.contains("/History")).count();
    // Newest first: (7h close, 6h owner), (5h reopen, 4h close) reaches past 6h.
    assert_eq!(history, 2);
}

#[tokio::test]
async fn zohodesk_status_types_and_the_evidence_kept() {
    let fake = FakeHelpdesk::start(ZohoDesk::default()).await;
    fake.set_life(
        "401",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::CustomerReplied),
        ],
    );
    let look = client(&fake).look("401", None).await.expect("look");
    assert_eq!(look.status, "Open");
    assert!(!look.resolved);
    assert_eq!(look.last_customer_message_at, Some(at(2)));
    assert!(look
        .events
        .iter()
        .any(|e| e.kind == EventKind::Reopened && e.occurred_at == at(2)));
    assert!(look
        .events
        .iter()
        .all(|e| e.event_key.starts_with("api:zohodesk:401:")));
    let evidence = look.answer.to_string();
    assert!(!evidence.contains("never to be kept"), "{evidence}");
    assert!(
        !evidence.contains('@') && !evidence.contains("A Customer"),
        "{evidence}"
    );
}

#[tokio::test]
async fn zohodesk_wrong_org_or_refresh_token_is_refused() {
    let fake = FakeHelpdesk::start(ZohoDesk::default()).await;
    fake.set_life(
        "1",
        at(0),
        vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
    );
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.org_id = Some("1".into());
    }
    let api = helpdesk_api::client_for("zohodesk", &s)
        .expect("builds")
        .expect("on");
    assert!(matches!(
        api.look("1", None).await,
        Err(ApiError::Refused { .. })
    ));
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.refresh_token = "1000.someone-elses".into();
    }
    let api = helpdesk_api::client_for("zohodesk", &s)
        .expect("builds")
        .expect("on");
    match api.look("1", None).await {
        Err(ApiError::Refused { detail, .. }) => {
            assert!(detail.contains("invalid_code"), "{detail}")
        }
        other => panic!("wrong refresh token: {other:?}"),
    }
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.org_id = None;
    }
    let err = helpdesk_api::client_for("zohodesk", &s)
        .err()
        .expect("refused");
    assert!(err.contains("api.org_id"), "{err}");
}

#[tokio::test]
async fn zohodesk_lists_changed_tickets() {
    let fake = FakeHelpdesk::start(ZohoDesk::default()).await;
    common_listing_checks(&fake).await;
}

fn resolved_at(fake: &FakeHelpdesk, id: &str, created: DateTime<Utc>, steps: &[DateTime<Utc>]) {
    let steps = steps
        .iter()
        .map(|t| Step::new(*t, Happening::Resolved { by_ai: true }))
        .collect();
    fake.set_life(id, created, steps);
}

#[tokio::test]
async fn zohodesk_listing_searches_by_modified_time_and_moves_its_window() {
    let fake = FakeHelpdesk::start(ZohoDesk::default()).await;
    // Last modified before `since`: not in the window.
    resolved_at(&fake, "40", at(-10), &[at(-5)]);
    // Three tickets modified at the same millisecond, more than a page holds.
    for id in ["41", "42", "43"] {
        resolved_at(&fake, id, at(1), &[at(2)]);
    }
    resolved_at(&fake, "44", at(1), &[at(3)]);
    // Changed in the range and again after `until`: only its last change shows,
    // so it is found past `until` and kept (created before `until`).
    resolved_at(&fake, "45", at(4), &[at(5), at(30)]);
    // Created after `until`.
    resolved_at(&fake, "46", at(26), &[at(27)]);

    let api = client(&fake);
    let (mut ids, mut cursor, mut pages, mut total) = (Vec::new(), None::<String>, 0, None);
    loop {
        let page = api
            .changed_tickets(at(0), at(24), cursor.as_deref())
            .await
            .expect("a page");
        if pages == 0 {
            total = page.total;
        }
        pages += 1;
        assert!(pages < 20, "the listing ends");
        ids.extend(page.ticket_ids);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    // Keyset pages: every ticket exactly once, ties included.
    assert_eq!(ids, ["41", "42", "43", "44", "45"]);
    assert_eq!(total, Some(6), "the search's count on the first page");

    let log = fake.log();
    let searches: Vec<_> = log
        .iter()
        .filter(|l| l.starts_with("GET /api/v1/tickets/search?"))
        .collect();
    assert!(
        searches[0].contains("modifiedTimeRange=2026-01-01T00%3A00%3A00.000Z%2C")
            && searches[0].contains("sortBy=modifiedTime")
            && searches[0].contains("from=0")
            && searches[0].contains("limit=100"),
        "{searches:?}"
    );
    // (41, 42) at 2h; then from 2h skipping the two seen: (43, 44); then from 3h
    // skipping 44: (46 at 27h, left out; 45 at 30h); then from 30h skipping 45:
    // nothing (204).
    assert!(
        searches[1].contains("modifiedTimeRange=2026-01-01T02%3A00%3A00.000Z%2C")
            && searches[1].contains("from=2"),
        "{searches:?}"
    );
    assert!(
        searches[2].contains("modifiedTimeRange=2026-01-01T03%3A00%3A00.000Z%2C")
            && searches[2].contains("from=1"),
        "{searches:?}"
    );
    assert_eq!(searches.len(), 4, "{searches:?}");
}

#[tokio::test]
async fn zohodesk_a_foreign_or_too_deep_listing_cursor_is_refused() {
    let fake = FakeHelpdesk::start(ZohoDesk::default()).await;
    let api = client(&fake);
    for bad in [
        "abc",
        "2026-01-01T00:00:00.000Z|x",
        "2026-01-01T00:00:00.000Z|5000",
    ] {
        match api.changed_tickets(at(0), at(24), Some(bad)).await {
            Err(ApiError::Malformed { .. }) => {}
            other => panic!("cursor {bad}: {other:?}"),
        }
    }
    assert_eq!(fake.requests(), 0);
}
