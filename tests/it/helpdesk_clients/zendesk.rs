//! The Zendesk client against the fake Zendesk API: ticket + audits, cursor
//! pagination, API-token and OAuth auth, trigger-webhook keys.

use super::*;
use outcome_meter::event::Resolver;
use outcome_meter::providers::{Headers, Provider, Webhook};
use testkit::fake_helpdesk::zendesk::{Zendesk, AGENT_WORDS, CUSTOMER_WORDS};

/// The client with a budget that does not slow a long test down.
fn fast_client(fake: &FakeHelpdesk) -> Arc<dyn HelpdeskApi> {
    let mut s = settings_for(fake);
    if let Some(api) = s.api.as_mut() {
        api.requests_per_minute = Some(60_000);
    }
    helpdesk_api::client_for("zendesk", &s)
        .expect("client builds")
        .expect("on")
}

fn audit_requests(fake: &FakeHelpdesk) -> Vec<String> {
    fake.log()
        .into_iter()
        .filter(|l| l.contains("/audits"))
        .collect()
}

#[tokio::test]
async fn zendesk_client_reads_status_and_history() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    common_checks(&fake).await;
}

#[tokio::test]
async fn zendesk_follows_the_audit_cursor_to_the_last_page() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    let steps: Vec<Step> = (0..4)
        .flat_map(|i| {
            [
                Step::new(at(2 * i + 1), Happening::Resolved { by_ai: true }),
                Step::new(at(2 * i + 2), Happening::CustomerReplied),
            ]
        })
        .collect();
    fake.set_life("500", at(0), steps);
    let look = client(&fake).look("500", None).await.expect("look");
    // 9 audits (the creation and 8 updates), 2 a page: 5 requests, each after
    // the first with the cursor of the one before.
    let pages = audit_requests(&fake);
    assert_eq!(pages.len(), 5, "{pages:?}");
    assert!(pages[0].contains("page%5Bsize%5D=100") && !pages[0].contains("page%5Bafter%5D"));
    assert!(pages[1..].iter().all(|p| p.contains("page%5Bafter%5D=")));
    let resolved = look
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Resolved)
        .count();
    assert_eq!(resolved, 4, "the resolution on the last page too: {look:?}");
    assert_eq!(look.answer["audits"], 9);
    assert_eq!(look.answer["pages"], 5);
}

#[tokio::test]
async fn zendesk_gives_up_after_the_page_bound() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    fake.set_page_size(1);
    let steps = (0..helpdesk_api::MAX_PAGES as i64)
        .map(|i| Step::new(at(i + 1), Happening::HandedOff))
        .collect();
    fake.set_life("501", at(0), steps);
    match fast_client(&fake).look("501", None).await {
        Err(ApiError::Malformed { detail, .. }) => assert!(detail.contains("pages"), "{detail}"),
        other => panic!("101 pages of 1: {other:?}"),
    }
    assert_eq!(
        audit_requests(&fake).len(),
        helpdesk_api::MAX_PAGES as usize
    );
}

#[tokio::test]
async fn zendesk_leaves_out_what_happened_before_since() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    fake.set_life(
        "502",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::CustomerReplied),
            Step::new(at(3), Happening::Resolved { by_ai: false }),
        ],
    );
    let look = client(&fake).look("502", Some(at(3))).await.expect("look");
    assert_eq!(look.events.len(), 1, "{look:?}");
    assert_eq!(look.events[0].kind, EventKind::Resolved);
    assert_eq!(look.events[0].resolver, Some(Resolver::Human));
    assert_eq!(look.last_customer_message_at, Some(at(2)));
    assert_eq!(look.status, "solved");
}

#[tokio::test]
async fn zendesk_authenticates_with_an_oauth_token_when_no_user_is_set() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    fake.set_life(
        "503",
        at(0),
        vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
    );
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.user = None;
    }
    let api = helpdesk_api::client_for("zendesk", &s)
        .expect("builds")
        .expect("on");
    let look = api.look("503", None).await.expect("bearer accepted");
    assert!(look.resolved);
    // An agent email written as Zendesk shows it (`…/token`) works too.
    let mut s = settings_for(&fake);
    if let Some(api) = s.api.as_mut() {
        api.user = Some(format!("{}/token", fake.user()));
        api.base_url = Some(format!("{}/api/v2/", fake.base_url()));
    }
    let api = helpdesk_api::client_for("zendesk", &s)
        .expect("builds")
        .expect("on");
    assert!(api.look("503", None).await.is_ok());
    assert_eq!(fake.state().refused, 0);
}

#[tokio::test]
async fn zendesk_requester_replies_and_hand_offs_keep_vendor_ids_and_no_words() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    fake.set_life(
        "504",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::CustomerReplied),
            Step::new(at(3), Happening::HandedOff),
        ],
    );
    let look = client(&fake).look("504", None).await.expect("look");
    let kinds: Vec<_> = look.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Resolved,
            EventKind::CustomerReplied,
            EventKind::Reopened,
            EventKind::HandedOffToHuman
        ],
        "the ticket's first message is not a reply; the AI's comment is not the customer's"
    );
    assert_eq!(look.events[0].resolver, Some(Resolver::Ai));
    assert!(look.events[1].event_key.starts_with("api:zendesk:"));
    assert!(look.events[3].event_key.starts_with("api:zendesk:"));
    assert!(!look.resolved);
    let kept = look.answer.to_string();
    assert!(!kept.contains(CUSTOMER_WORDS) && !kept.contains(AGENT_WORDS) && !kept.contains('@'));
}

#[tokio::test]
async fn zendesk_status_changes_count_once_with_trigger_webhooks() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    fake.set_life(
        "505",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::Reopened),
        ],
    );
    let settings = settings_for(&fake);
    let look = client(&fake).look("505", None).await.expect("look");
    // The trigger bodies docs/helpdesks.md configures, as Zendesk renders them.
    for (status, hours, kind) in [
        ("Solved", 1, EventKind::Resolved),
        ("Open", 2, EventKind::Reopened),
    ] {
        let body = serde_json::json!({"event": "ticket_status", "ticket_id": "505",
            "status": status, "via": "Email", "updated_by_id": "9001", "tags": "",
            "updated_at": testkit::fake_helpdesk::rfc3339(at(hours))})
        .to_string();
        let h = Headers::new();
        let hook = Webhook {
            method: "POST",
            path_and_query: "/webhooks/zendesk/t",
            headers: &h,
            body: body.as_bytes(),
        };
        let webhook = outcome_meter::providers::zendesk::Zendesk
            .parse(&hook, &settings)
            .expect("parses");
        let api = look
            .events
            .iter()
            .find(|e| e.kind == kind)
            .expect("seen by the API");
        assert_eq!(api.event_key, webhook[0].event_key, "{status}");
        assert_eq!(api.resolver, webhook[0].resolver);
    }
}

#[tokio::test]
async fn zendesk_ids_that_are_not_integers_are_never_sent() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    match client(&fake).look("1/../../users/me", None).await {
        Err(ApiError::NotFound(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(fake.log().is_empty());
}

#[tokio::test]
async fn zendesk_lists_changed_tickets() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    common_listing_checks(&fake).await;
}

fn export_requests(fake: &FakeHelpdesk) -> Vec<String> {
    fake.log()
        .into_iter()
        .filter(|l| l.contains("/incremental/"))
        .collect()
}

#[tokio::test]
async fn zendesk_backfill_reads_the_cursor_export_to_its_end() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    // Solved inside the range, then closed long after it: listed by its last
    // change, which is after `until`, and still listed.
    fake.set_life(
        "301",
        at(1),
        vec![
            Step::new(at(2), Happening::Resolved { by_ai: true }),
            Step::new(at(100), Happening::Reopened),
        ],
    );
    fake.set_life(
        "302",
        at(3),
        vec![Step::new(at(4), Happening::Resolved { by_ai: true })],
    );
    // Created after the range: left out, though the export shows it.
    fake.set_life(
        "303",
        at(30),
        vec![Step::new(at(31), Happening::Resolved { by_ai: true })],
    );
    // Changed only before the range: not exported at all.
    fake.set_life(
        "304",
        at(-10),
        vec![Step::new(at(-9), Happening::Resolved { by_ai: true })],
    );
    let api = client(&fake);
    let (mut ids, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = api
            .changed_tickets(at(0), at(24), cursor.as_deref())
            .await
            .expect("page");
        pages += 1;
        assert!(pages < 10);
        assert_eq!(page.total, None);
        ids.extend(page.ticket_ids);
        match page.next {
            Some(n) => {
                assert!(n.starts_with("zd-export:"), "{n}");
                cursor = Some(n)
            }
            None => break,
        }
    }
    ids.sort();
    assert_eq!(ids, vec!["301", "302"]);
    let log = export_requests(&fake);
    // 3 tickets exported (302, 303, 301 by last change), 2 a page.
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log
        .iter()
        .all(|l| l.starts_with("GET /api/v2/incremental/tickets/cursor.json?")));
    assert!(
        log[0].contains(&format!("start_time={}", at(0).timestamp()))
            && log[0].contains("exclude_deleted=true")
            && !log[0].contains("cursor="),
        "{}",
        log[0]
    );
    assert!(
        log[1].contains("cursor=") && !log[1].contains("start_time="),
        "the next page by Zendesk's cursor alone: {}",
        log[1]
    );
    assert_eq!(fake.state().refused, 0);
}

#[tokio::test]
async fn zendesk_refuses_cursors_it_did_not_write() {
    let fake = FakeHelpdesk::start(Zendesk).await;
    match client(&fake)
        .changed_tickets(at(0), at(1), Some("MTU3NjYxMzUzOS4wfHw0Njd8"))
        .await
    {
        Err(ApiError::Malformed { detail, .. }) => assert!(detail.contains("cursor"), "{detail}"),
        other => panic!("a foreign cursor: {other:?}"),
    }
    assert!(fake.log().is_empty(), "nothing was sent");
}
