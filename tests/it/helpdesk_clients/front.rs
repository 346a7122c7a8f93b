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

#[tokio::test]
async fn front_lists_changed_conversations() {
    let fake = FakeHelpdesk::start(Front).await;
    common_listing_checks(&fake).await;
}

/// The query of the `n`-th logged request, decoded.
fn logged_query(log: &[String], n: usize) -> Vec<(String, String)> {
    let line = &log[n];
    let url = reqwest::Url::parse(&format!(
        "http://fake{}",
        line.split_once(' ').expect("method").1
    ))
    .expect("url");
    assert_eq!(url.path(), "/events", "{line}");
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn front_listing_asks_for_the_range_oldest_first_and_resumes_by_time() {
    let fake = FakeHelpdesk::start(Front).await;
    // Resolved in the range, reopened after it: listed (its archive is in range).
    fake.set_life(
        "cnv_a",
        at(-10),
        vec![
            Step::new(at(2), Happening::Resolved { by_ai: true }),
            Step::new(at(30), Happening::Reopened),
        ],
    );
    // Created in the range, nothing else.
    fake.set_life("cnv_b", at(3), vec![]);
    // Everything before the range, and everything after it.
    fake.set_life(
        "cnv_old",
        at(-5),
        vec![Step::new(at(-4), Happening::Resolved { by_ai: true })],
    );
    fake.set_life(
        "cnv_new",
        at(25),
        vec![Step::new(at(26), Happening::Resolved { by_ai: true })],
    );
    // An event exactly at `since` is in the range; one exactly at `until` is not.
    fake.set_life(
        "cnv_edge",
        at(-1),
        vec![
            Step::new(at(0), Happening::HandedOff),
            Step::new(at(24), Happening::Resolved { by_ai: false }),
        ],
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
        assert_eq!(page.total, None);
        seen.extend(page.ticket_ids);
        match page.next {
            Some(n) => {
                assert!(n.starts_with("front:"), "our time cursor: {n}");
                cursor = Some(n)
            }
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec!["cnv_a", "cnv_b", "cnv_edge"]);
    let log = fake.log();
    let q = logged_query(&log, 0);
    let get = |k: &str| {
        q.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    // 1 ms before `since` (Front's `after` may be exclusive), `until` as `before`.
    assert_eq!(
        get("q[after]"),
        vec![format!("{}.999", at(0).timestamp() - 1)]
    );
    assert_eq!(
        get("q[before]"),
        vec![format!("{}.000", at(24).timestamp())]
    );
    assert_eq!(get("sort_by"), vec!["created_at"]);
    assert_eq!(
        get("sort_order"),
        vec!["asc"],
        "Front's default is newest first"
    );
    assert_eq!(get("limit"), vec!["15"]);
    assert_eq!(
        get("q[types]"),
        vec!["inbound", "outbound", "archive", "reopen", "reminder", "assign"]
    );
    // The next pages start from the last event seen (time), not Front's token.
    let q2 = logged_query(&log, 1);
    assert!(q2.iter().all(|(k, _)| k != "page_token"), "{q2:?}");
    let after2 = q2
        .iter()
        .find(|(k, _)| k == "q[after]")
        .expect("after")
        .1
        .clone();
    assert!(after2.parse::<f64>().expect("secs") > at(0).timestamp() as f64);
    // A cursor from another provider is refused, not misread.
    assert!(matches!(
        api.changed_tickets(at(0), at(24), Some("12345")).await,
        Err(ApiError::Malformed { .. })
    ));
}
