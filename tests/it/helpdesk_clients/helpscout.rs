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

fn long_life(fake: &FakeHelpdesk) {
    fake.set_life(
        "101",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(5), Happening::CustomerReplied),
            Step::new(at(6), Happening::Reopened),
            Step::new(at(7), Happening::HandedOff),
            Step::new(at(9), Happening::Resolved { by_ai: false }),
        ],
    );
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
    long_life(&fake); // 6 threads, 2 a page
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
    long_life(&fake);
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
    long_life(&fake);
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
    long_life(&fake);
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
    long_life(&fake);
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
