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

/// A ticket with more events and messages than a page holds.
fn long_life(fake: &FakeHelpdesk) {
    fake.set_life(
        "201",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::CustomerReplied),
            Step::new(at(3), Happening::CustomerReplied),
            Step::new(at(4), Happening::Resolved { by_ai: true }),
            Step::new(at(5), Happening::CustomerReplied),
            Step::new(at(6), Happening::HandedOff),
            Step::new(at(7), Happening::Resolved { by_ai: false }),
        ],
    );
}

#[tokio::test]
async fn gorgias_pages_are_followed_to_the_end() {
    let fake = FakeHelpdesk::start(Gorgias).await;
    long_life(&fake);
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
    long_life(&fake);
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
