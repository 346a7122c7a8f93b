//! The Gorgias client: Basic auth, cursor pages of events and messages, the
//! status vocabulary, `since`, and keys shared with the webhook parser.

use super::*;
use outcome_meter::providers::gorgias::Gorgias as GorgiasHook;
use outcome_meter::providers::{Headers, Provider, Webhook};
use testkit::fake_helpdesk::gorgias::{gorgias_time, Gorgias};

#[tokio::test]
async fn gorgias_client_reads_status_and_history() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    common_checks(&fake).await;
}

#[tokio::test]
async fn gorgias_pages_are_followed_to_the_end() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    three_resolutions_life(&fake, "201");
    let look = client(&fake).look("201", None).await.expect("look");
    let count = |kind| look.events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count(EventKind::CustomerReplied), 3, "{look:?}");
    assert_eq!(count(EventKind::Resolved), 3, "{look:?}");
    assert_eq!(count(EventKind::Reopened), 2, "{look:?}");
    assert_eq!(count(EventKind::HandedOffToHuman), 1, "{look:?}");
    let log = fake.log();
    assert!(log[0].starts_with("GET /api/tickets/201"), "{log:?}");
    let events: Vec<_> = log
        .iter()
        .filter(|l| l.starts_with("GET /api/events"))
        .collect();
    // 6 events, 2 a page: three requests, the later ones with the cursor.
    assert_eq!(events.len(), 3, "{log:?}");
    assert!(events[0].contains("object_type=Ticket") && events[0].contains("object_id=201"));
    assert!(
        events[0].contains("types=ticket-closed") && events[0].contains("types=ticket-reopened")
    );
    assert!(
        events[0].contains("order_by=created_datetime%3Aasc") && events[0].contains("limit=100")
    );
    assert!(
        !events[0].contains("cursor=")
            && events[1].contains("cursor=")
            && events[2].contains("cursor=")
    );
    // 6 messages (3 customer, 3 agent), 2 a page.
    let messages = log
        .iter()
        .filter(|l| l.starts_with("GET /api/messages"))
        .count();
    assert_eq!(messages, 3, "{log:?}");
}

#[tokio::test]
async fn gorgias_since_filters_events_at_the_source_and_stops_reading_messages() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    three_resolutions_life(&fake, "201");
    let look = client(&fake).look("201", Some(at(5))).await.expect("look");
    assert!(
        look.events.iter().all(|e| e.occurred_at >= at(5)),
        "{look:?}"
    );
    assert!(look
        .events
        .iter()
        .any(|e| e.kind == EventKind::CustomerReplied && e.occurred_at == at(5)));
    let log = fake.log();
    let events: Vec<_> = log
        .iter()
        .filter(|l| l.starts_with("GET /api/events"))
        .collect();
    assert!(
        events[0].contains("created_datetime%5Bgte%5D=2026-01-01T05%3A00%3A00"),
        "{events:?}"
    );
    // Newest first, 2 a page: (7h, 5h), then (4h, 3h) reaches back before 5h, so
    // the third page (2h, 1h) is not read.
    let messages = log
        .iter()
        .filter(|l| l.starts_with("GET /api/messages"))
        .count();
    assert_eq!(messages, 2, "{log:?}");
}

#[tokio::test]
async fn gorgias_keys_of_the_current_state_match_the_webhooks() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    fake.set_life(
        "301",
        at(0),
        vec![
            Step::new(at(1), Happening::CustomerReplied),
            Step::new(at(2), Happening::Resolved { by_ai: true }),
        ],
    );
    let s = settings_for(&fake);
    let look = client(&fake).look("301", None).await.expect("look");
    let headers = Headers::new();
    let parse = |body: serde_json::Value| {
        let bytes = body.to_string().into_bytes();
        GorgiasHook
            .parse(
                &Webhook {
                    method: "POST",
                    path_and_query: "",
                    headers: &headers,
                    body: &bytes,
                },
                &s,
            )
            .expect("webhook parses")
    };
    // The bodies docs/helpdesks.md has Gorgias render, with the fake's values.
    let closed = parse(serde_json::json!({
        "event": "ticket-updated", "ticket_id": "301", "status": "closed",
        "assignee_user_id": fake.vendor().ai_agent_id(), "channel": "email", "tags": "billing",
        "updated_datetime": gorgias_time(at(2)), "closed_datetime": gorgias_time(at(2)),
        "snooze_datetime": ""
    }));
    let message = parse(serde_json::json!({
        "event": "ticket-message-created", "ticket_id": "301", "status": "open",
        "last_message_datetime": gorgias_time(at(1)),
        "last_received_message_datetime": gorgias_time(at(1))
    }));
    for hook in [&closed[0], &message[0]] {
        let api = look
            .events
            .iter()
            .find(|e| e.kind == hook.kind)
            .expect("the API shows it too");
        assert_eq!(api.event_key, hook.event_key, "{:?}", hook.kind);
        assert_eq!(api.occurred_at, hook.occurred_at);
        assert_eq!(api.resolver, hook.resolver);
    }
}

#[tokio::test]
async fn gorgias_status_vocabulary_and_the_evidence_kept() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    fake.set_life(
        "401",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::CustomerReplied),
        ],
    );
    let look = client(&fake).look("401", None).await.expect("look");
    // A customer message reopens a closed Gorgias ticket: `open`, not resolved.
    assert_eq!(look.status, "open");
    assert!(!look.resolved);
    assert!(look
        .events
        .iter()
        .any(|e| e.kind == EventKind::Reopened && e.occurred_at == at(2)));
    assert_eq!(look.last_customer_message_at, Some(at(2)));
    let evidence = look.answer.to_string();
    assert!(!evidence.contains("message body"), "{evidence}");
    assert!(!evidence.contains('@'), "no emails: {evidence}");
    assert!(!evidence.contains("Someone") && !evidence.contains("A Customer"));
}

#[tokio::test]
async fn gorgias_needs_the_user_email_and_refuses_another_one() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    fake.set_life(
        "1",
        at(0),
        vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
    );
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.user = None;
    }
    let err = helpdesk_api::client_for("gorgias", &s)
        .err()
        .expect("refused");
    assert!(err.contains("api.user"), "{err}");
    if let Some(api) = s.api.as_mut() {
        api.user = Some("someone-else@acme.example".into());
    }
    let api = helpdesk_api::client_for("gorgias", &s)
        .expect("builds")
        .expect("on");
    assert!(matches!(
        api.look("1", None).await,
        Err(ApiError::Refused { status: 401, .. })
    ));
    // A ticket id that is not a number never reaches the network.
    let before = fake.requests();
    assert!(matches!(
        client(&fake).look("../account", None).await,
        Err(ApiError::NotFound(_))
    ));
    assert_eq!(fake.requests(), before);
}

#[tokio::test]
async fn gorgias_lists_changed_tickets() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    common_listing_checks(&fake).await;
}

/// Every page of a listing: the ids (in order, duplicates kept) and the pages read.
async fn list_all(
    api: &dyn HelpdeskApi,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (Vec<String>, usize) {
    let (mut ids, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = api
            .changed_tickets(since, until, cursor.as_deref())
            .await
            .expect("a page");
        pages += 1;
        assert!(pages < 50, "the listing ends");
        ids.extend(page.ticket_ids);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return (ids, pages),
        }
    }
}

fn resolved_at(fake: &FakeHelpdesk, id: &str, created: DateTime<Utc>, steps: &[DateTime<Utc>]) {
    let steps = steps
        .iter()
        .map(|t| Step::new(*t, Happening::Resolved { by_ai: true }))
        .collect();
    fake.set_life(id, created, steps);
}

#[tokio::test]
async fn gorgias_listing_reads_the_newest_first_and_stops_at_since() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    // Last updated before `since`: never listed, and only the first page of
    // them is read.
    for (i, id) in ["10", "11", "12", "13", "14", "15"].iter().enumerate() {
        resolved_at(&fake, id, at(-100), &[at(-50 - i as i64)]);
    }
    resolved_at(&fake, "20", at(1), &[at(2)]);
    resolved_at(&fake, "21", at(3), &[at(4)]);
    // Changed in the range and again after `until`: the list only shows its last
    // update, so it is kept (created before `until`).
    resolved_at(&fake, "22", at(5), &[at(6), at(30)]);
    // Created after `until`: it cannot have changed in the range.
    resolved_at(&fake, "23", at(26), &[at(27)]);

    let api = client(&fake);
    let (mut ids, _) = list_all(api.as_ref(), at(0), at(24)).await;
    ids.sort();
    ids.dedup();
    assert_eq!(ids, ["20", "21", "22"]);

    let log = fake.log();
    let lists: Vec<_> = log
        .iter()
        .filter(|l| l.starts_with("GET /api/tickets?"))
        .collect();
    assert!(
        lists[0].contains("order_by=updated_datetime%3Adesc")
            && lists[0].contains("limit=100")
            && !lists[0].contains("cursor="),
        "{lists:?}"
    );
    // Pass 1: (22, 23), (21, 20), (15, 14) reaches before `since`: stop. Pass 2
    // reads the top again down to the high-water mark (22's update): (22, 23).
    assert_eq!(lists.len(), 4, "{lists:?}");
    assert!(lists[1].contains("cursor=") && lists[2].contains("cursor="));
    assert!(!lists[3].contains("cursor="));
}

#[tokio::test]
async fn gorgias_a_ticket_updated_during_the_listing_is_not_missed() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    for (id, h) in [("31", 1), ("32", 2), ("33", 3), ("34", 4), ("35", 5)] {
        resolved_at(&fake, id, at(h), &[at(h) + Duration::minutes(10)]);
    }
    let api = client(&fake);
    let (since, until) = (at(0), at(24));
    let first = api
        .changed_tickets(since, until, None)
        .await
        .expect("first page");
    assert_eq!(first.ticket_ids, ["35", "34"]);
    // 32 is updated now: it jumps to the top of the list, above the pages read.
    fake.push("32", Step::new(at(6), Happening::CustomerReplied));
    let mut ids = first.ticket_ids;
    let mut cursor = first.next;
    let mut pages = 1;
    while let Some(c) = cursor {
        let page = api
            .changed_tickets(since, until, Some(&c))
            .await
            .expect("a page");
        assert_ne!(page.next.as_deref(), Some(c.as_str()));
        ids.extend(page.ticket_ids);
        cursor = page.next;
        pages += 1;
        assert!(pages < 20);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids, ["31", "32", "33", "34", "35"]);
}

#[tokio::test]
async fn gorgias_a_foreign_listing_cursor_is_refused() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    let api = client(&fake);
    match api.changed_tickets(at(0), at(24), Some("abc")).await {
        Err(ApiError::Malformed { .. }) => {}
        other => panic!("foreign cursor: {other:?}"),
    }
    assert_eq!(fake.requests(), 0);
}
