//! The HubSpot client: one ticket read with its `hs_pipeline_stage` history.

use super::*;
use testkit::fake_helpdesk::hubspot::HubSpot;

#[tokio::test]
async fn hubspot_client_reads_status_and_history() {
    let fake = FakeHelpdesk::start(HubSpot).await;
    common_checks(&fake).await;
}

#[tokio::test]
async fn hubspot_reads_one_ticket_with_its_stage_history_in_one_request() {
    let fake = FakeHelpdesk::start(HubSpot).await;
    fake.set_life(
        "501",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::Reopened),
            Step::new(at(3), Happening::Resolved { by_ai: false }),
        ],
    );
    let look = client(&fake).look("501", None).await.expect("look");
    assert_eq!(look.status, "4");
    assert!(look.resolved);
    assert_eq!(
        fake.log(),
        vec!["GET /crm/v3/objects/tickets/501?properties=hs_pipeline_stage%2Chs_pipeline&propertiesWithHistory=hs_pipeline_stage&archived=false".to_string()]
    );
    let kinds: Vec<_> = look
        .events
        .iter()
        .map(|e| (e.kind, e.resolver, e.occurred_at))
        .collect();
    use outcome_meter::event::Resolver;
    assert_eq!(
        kinds,
        vec![
            (EventKind::Resolved, Some(Resolver::Ai), at(1)),
            (EventKind::Reopened, None, at(2)),
            (EventKind::Resolved, Some(Resolver::Human), at(3)),
        ]
    );
    assert!(look
        .events
        .iter()
        .all(|e| e.event_key.starts_with("api:hubspot:501:")));
    // The stage at creation is no reopen; customer messages are not visible.
    assert_eq!(look.last_customer_message_at, None);
    assert!(!client(&fake).sight().customer_messages);
}

#[tokio::test]
async fn hubspot_since_and_open_stage_ids_are_honoured() {
    let fake = FakeHelpdesk::start(HubSpot).await;
    fake.set_life(
        "502",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::Reopened),
        ],
    );
    let look = client(&fake).look("502", Some(at(2))).await.expect("look");
    assert!(!look.resolved);
    assert_eq!(look.events.len(), 1);
    assert_eq!(look.events[0].kind, EventKind::Reopened);

    // Stage "2" is not one of the stages listed as open: moving there reopens nothing.
    let mut s = settings_for(&fake);
    s.open_stage_ids = vec!["3".into()];
    let api = helpdesk_api::client_for("hubspot", &s)
        .expect("builds")
        .expect("on");
    let look = api.look("502", None).await.expect("look");
    assert!(look.events.iter().all(|e| e.kind == EventKind::Resolved));
    assert!(!look.resolved, "the stage is still not a closed one");
}

#[tokio::test]
async fn hubspot_settings_without_closed_stages_or_with_oauth_refresh_are_refused() {
    let fake = FakeHelpdesk::start(HubSpot).await;
    let mut s = settings_for(&fake);
    s.closed_stage_ids.clear();
    let err = helpdesk_api::client_for("hubspot", &s)
        .err()
        .expect("refused");
    assert!(err.contains("closed_stage_ids"), "{err}");
    let mut s = settings_for(&fake);
    s.api.as_mut().expect("api").refresh_token = "refresh-123".into();
    let err = helpdesk_api::client_for("hubspot", &s)
        .err()
        .expect("refused");
    assert!(err.contains("private app"), "{err}");
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn hubspot_lists_changed_tickets() {
    let fake = FakeHelpdesk::start(HubSpot).await;
    common_listing_checks(&fake).await;
}

#[tokio::test]
async fn hubspot_listing_searches_changes_since_and_creations_before_until() {
    let fake = FakeHelpdesk::start(HubSpot).await;
    // Resolved in the range and reopened after it: its last change is after
    // `until`, and it must still be listed.
    fake.set_life(
        "601",
        at(-10),
        vec![
            Step::new(at(2), Happening::Resolved { by_ai: true }),
            Step::new(at(30), Happening::Reopened),
        ],
    );
    fake.set_life(
        "602",
        at(3),
        vec![Step::new(at(4), Happening::Resolved { by_ai: true })],
    );
    // Last changed before the range; created after it.
    fake.set_life(
        "603",
        at(-5),
        vec![Step::new(at(-4), Happening::Resolved { by_ai: true })],
    );
    fake.set_life(
        "604",
        at(25),
        vec![Step::new(at(26), Happening::Resolved { by_ai: true })],
    );
    let api = client(&fake);
    let (mut cursor, mut seen, mut pages) = (None::<String>, Vec::new(), 0);
    loop {
        let page = api
            .changed_tickets(at(0), at(24), cursor.as_deref())
            .await
            .expect("page");
        pages += 1;
        assert!(pages < 20);
        if pages == 1 {
            assert_eq!(page.total, Some(2));
        }
        seen.extend(page.ticket_ids);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec!["601", "602"]);
    assert!(fake
        .log()
        .iter()
        .all(|l| l == "POST /crm/v3/objects/tickets/search"));
    // A cursor from another provider is refused, not misread.
    assert!(matches!(
        api.changed_tickets(at(0), at(24), Some("front:1")).await,
        Err(ApiError::Malformed { .. })
    ));
}

#[tokio::test]
async fn hubspot_listing_resumes_by_last_change_not_by_offset() {
    let fake = FakeHelpdesk::start(HubSpot).await;
    for (id, h) in [("701", 1), ("702", 2), ("703", 3), ("704", 4)] {
        fake.set_life(
            id,
            at(h),
            vec![Step::new(
                at(h) + Duration::minutes(5),
                Happening::Resolved { by_ai: true },
            )],
        );
    }
    let api = client(&fake);
    let first = api
        .changed_tickets(at(0), at(24), None)
        .await
        .expect("page");
    assert_eq!(first.ticket_ids, vec!["701", "702"]);
    // 701 changes while the listing is paused: an offset would now skip 703.
    fake.push("701", Step::new(at(10), Happening::Reopened));
    let mut seen = Vec::new();
    let mut cursor = first.next;
    while let Some(c) = cursor {
        let page = api
            .changed_tickets(at(0), at(24), Some(&c))
            .await
            .expect("page");
        seen.extend(page.ticket_ids);
        cursor = page.next;
    }
    for id in ["703", "704", "701"] {
        assert!(seen.iter().any(|s| s == id), "{id} not in {seen:?}");
    }
}
