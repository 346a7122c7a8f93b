//! The Front client: a conversation and its paginated events, normalized as
//! Front's webhooks are (same event ids).

use super::*;
use outcome_meter::providers::{Headers, Provider, Webhook};
use testkit::fake_helpdesk::front::{self, Front};

fn long_life(fake: &FakeHelpdesk) {
    fake.set_life(
        "cnv_7",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::CustomerReplied),
            Step::new(at(3), Happening::Reopened),
            Step::new(at(4), Happening::HandedOff),
            Step::new(at(5), Happening::Resolved { by_ai: false }),
        ],
    );
}

#[tokio::test]
async fn front_client_reads_status_and_history() {
    let fake = FakeHelpdesk::start(Front).await;
    common_checks(&fake).await;
}

#[tokio::test]
async fn front_events_are_read_to_the_last_page_with_a_bearer_token() {
    let fake = FakeHelpdesk::start(Front).await;
    long_life(&fake);
    let look = client(&fake).look("cnv_7", None).await.expect("look");
    assert_eq!(look.status, "archived");
    assert!(look.resolved);
    assert_eq!(look.events.len(), 5, "{look:?}");
    // 1 conversation + 3 pages of 2, 2 and 1 events, each following `next`.
    let log = fake.log();
    assert_eq!(
        log,
        vec![
            "GET /conversations/cnv_7".to_string(),
            "GET /conversations/cnv_7/events?limit=100".into(),
            "GET /conversations/cnv_7/events?limit=2&page_token=2".into(),
            "GET /conversations/cnv_7/events?limit=2&page_token=4".into(),
        ]
    );
    // Another token is refused with Front's 401, not retried as unreachable.
    let mut s = settings_for(&fake);
    s.api.as_mut().expect("api").token = "not-the-token-123".into();
    let wrong = helpdesk_api::client_for("front", &s)
        .expect("builds")
        .expect("on");
    assert!(matches!(
        wrong.look("cnv_7", None).await,
        Err(ApiError::Refused { status: 401, .. })
    ));
}

#[tokio::test]
async fn front_api_events_have_the_keys_of_the_same_webhooks() {
    let fake = FakeHelpdesk::start(Front).await;
    long_life(&fake);
    let s = settings_for(&fake);
    let look = client(&fake).look("cnv_7", None).await.expect("look");
    let life = fake.state().tickets["cnv_7"].clone();
    let headers = Headers::new();
    for (i, step) in life.ordered() {
        // The webhook Front would have sent for this step: the same Event object.
        let body = serde_json::json!({
            "type": "event", "authorization": {"id": "cmp_1"},
            "payload": front::event("cnv_7", i, step.at, step.what,
                                    &serde_json::json!({"id": "cnv_7", "tags": []})),
        });
        let bytes = serde_json::to_vec(&body).expect("json");
        let hook = Webhook {
            method: "POST",
            path_and_query: "",
            headers: &headers,
            body: &bytes,
        };
        let from_hook = outcome_meter::providers::front::Front
            .parse(&hook, &s)
            .expect("parses");
        assert_eq!(from_hook.len(), 1);
        assert!(
            look.events.contains(&from_hook[0]),
            "step {i}: {:?} not in {:?}",
            from_hook[0],
            look.events
        );
        assert_eq!(from_hook[0].event_key, front::event_id("cnv_7", i));
    }
}

#[tokio::test]
async fn front_since_drops_earlier_events_but_keeps_the_last_customer_message() {
    let fake = FakeHelpdesk::start(Front).await;
    long_life(&fake);
    let look = client(&fake)
        .look("cnv_7", Some(at(3)))
        .await
        .expect("look");
    let kinds: Vec<_> = look.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Reopened,
            EventKind::HandedOffToHuman,
            EventKind::Resolved
        ]
    );
    assert_eq!(look.last_customer_message_at, Some(at(2)));
    // The evidence has ids and times, not the conversation's subject.
    assert!(!look.answer.to_string().contains("subject"));
}

#[tokio::test]
async fn front_assignment_to_the_ai_agent_is_not_a_hand_off() {
    let fake = FakeHelpdesk::start(Front).await;
    long_life(&fake);
    let mut s = settings_for(&fake);
    // Declare the human of the fake an AI agent as well: its assignment is no hand-off.
    s.ai_agent_ids
        .push(front::teammate(testkit::fake_helpdesk::HUMAN_AGENT));
    let api = helpdesk_api::client_for("front", &s)
        .expect("builds")
        .expect("on");
    let look = api.look("cnv_7", None).await.expect("look");
    assert!(look
        .events
        .iter()
        .all(|e| e.kind != EventKind::HandedOffToHuman));
}
