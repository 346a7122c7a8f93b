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
