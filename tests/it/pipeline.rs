//! Webhooks in, exact meter events out: the contract's cases end to end.

use crate::support::*;
use outcome_meter::outcome::outcome_id;
use outcome_meter::providers::signature::{b64, hmac_sha1, hmac_sha256};
use testkit::fake_stripe::FakeStripe;

async fn app_with_stripe(backend: Backend) -> (TestApp, FakeStripe) {
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    })
    .await;
    (app, stripe)
}

async fn ai_resolution_never_reopened_is_billed_exactly_once(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    assert_eq!(
        app.send(&event("e1", "T1", "resolved", 0, Some("ai")))
            .await,
        202
    );
    app.run_worker().await;
    app.run_reporter().await;
    assert!(
        app.outcomes().await.is_empty(),
        "nothing before the window ends"
    );

    app.advance_hours(71);
    app.run_worker().await;
    assert!(app.outcomes().await.is_empty(), "71h < 72h window");

    app.advance_hours(2);
    app.run_worker().await;
    app.run_reporter().await;
    let outcomes = app.outcomes().await;
    assert_eq!(outcomes.len(), 1);
    let o = &outcomes[0];
    assert_eq!(o.id, outcome_id(TENANT, "generic", "T1", 1));
    assert_eq!(o.state.as_str(), "reported");
    assert!(o
        .stripe_request_id
        .as_deref()
        .is_some_and(|r| r.starts_with("req_")));

    let events = stripe.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.identifier, o.id);
    assert_eq!(e.event_name, "resolved_ticket");
    assert_eq!(e.customer, CUSTOMER);
    assert_eq!(e.value, "1");
    assert_eq!(e.timestamp, o.confirmed_at.as_ms() / 1000);
    assert_eq!(
        e.idempotency_key.as_deref(),
        Some(format!("{}:meter_event:0", o.id).as_str())
    );
    assert_eq!(e.stripe_version.as_deref(), Some("2025-03-31.basil"));

    // Running every stage again changes nothing.
    app.advance_hours(100);
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 1);
    assert_eq!(stripe.requests(), 1);

    // The evidence names the clause, the events and the contract.
    let evidence: serde_json::Value = serde_json::from_str(&o.evidence).expect("evidence JSON");
    assert_eq!(evidence["clause"]["clause"], "billable");
    assert_eq!(evidence["events"][0]["event_key"], "e1");
    assert_eq!(evidence["contract"]["hash"], o.contract_hash);
    app.stop().await;
}

async fn reopened_inside_the_window_is_not_billed(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    app.send(&event("e1", "T1", "resolved", 0, Some("ai")))
        .await;
    app.send(&event("e2", "T1", "reopened", 10, None)).await;
    app.advance_hours(200);
    app.run_worker().await;
    app.run_reporter().await;
    assert!(app.outcomes().await.is_empty());
    assert_eq!(stripe.requests(), 0);
    let decisions = app
        .services
        .store
        .ticket_decisions(TENANT, "T1")
        .await
        .expect("decisions");
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].status.as_str(), "reopened");
    assert!(
        decisions[0].detail.contains("inside the reopen window"),
        "{}",
        decisions[0].detail
    );
    app.stop().await;
}

async fn reopened_then_resolved_again_is_billed_once_as_seq_2(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    app.send(&event("e1", "T1", "resolved", 0, Some("ai")))
        .await;
    app.send(&event("e2", "T1", "customer_replied", 5, None))
        .await;
    app.send(&event("e3", "T1", "resolved", 6, Some("ai")))
        .await;
    app.advance_hours(100);
    app.run_worker().await;
    app.run_reporter().await;
    let outcomes = app.outcomes().await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].seq, 2);
    assert_eq!(outcomes[0].id, outcome_id(TENANT, "generic", "T1", 2));
    assert_eq!(stripe.events().len(), 1);
    assert_eq!(stripe.events()[0].identifier, outcomes[0].id);
    app.stop().await;
}

async fn human_resolution_and_hand_off_are_not_billed_but_recorded(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    app.send(&event("e1", "H1", "resolved", 0, Some("human")))
        .await;
    app.send(&event("e2", "H2", "handed_off_to_human", 0, None))
        .await;
    app.send(&event("e3", "H2", "resolved", 1, Some("ai")))
        .await;
    app.advance_hours(100);
    app.run_worker().await;
    app.run_reporter().await;
    assert!(app.outcomes().await.is_empty());
    assert_eq!(stripe.requests(), 0);
    let d1 = app
        .services
        .store
        .ticket_decisions(TENANT, "H1")
        .await
        .expect("decisions");
    assert_eq!(
        (d1[0].status.as_str(), d1[0].is_final),
        ("not_billable", true)
    );
    assert_eq!(d1[0].clause.code(), "resolver_not_billable");
    let d2 = app
        .services
        .store
        .ticket_decisions(TENANT, "H2")
        .await
        .expect("decisions");
    assert_eq!(d2[0].clause.code(), "handed_off_to_human");
    app.stop().await;
}

async fn redelivered_webhooks_are_stored_and_counted_once(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    let body = event("e1", "T1", "resolved", 0, Some("ai"));
    assert_eq!(app.send(&body).await, 202);
    assert_eq!(app.send(&body).await, 200);
    app.run_worker().await;
    assert_eq!(
        app.send(&body).await,
        200,
        "still a duplicate after processing"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM ticket_events").await, 1);
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 1);
    app.stop().await;
}

/// A scenario of many tickets; each entry is one webhook body.
fn scenario() -> Vec<String> {
    let mut out = Vec::new();
    for t in 0..30 {
        let id = format!("S{t}");
        let ev = |n: u32, kind: &str, h: i64, r: Option<&str>| {
            event(&format!("{id}-{n}"), &id, kind, h, r)
        };
        match t % 6 {
            0 => out.push(ev(1, "resolved", 1, Some("ai"))),
            1 => {
                out.push(ev(1, "resolved", 1, Some("ai")));
                out.push(ev(2, "reopened", 3, None));
            }
            2 => {
                out.push(ev(1, "resolved", 1, Some("ai")));
                out.push(ev(2, "customer_replied", 2, None));
                out.push(ev(3, "resolved", 4, Some("ai")));
            }
            3 => out.push(ev(1, "resolved", 2, Some("human"))),
            4 => {
                out.push(ev(1, "handed_off_to_human", 0, None));
                out.push(ev(2, "resolved", 3, Some("ai")));
                out.push(ev(3, "reopened", 80, None));
                out.push(ev(4, "resolved", 81, Some("ai")));
            }
            _ => {
                out.push(ev(1, "resolved", 1, Some("ai")));
                out.push(ev(2, "resolved", 2, Some("human")));
                out.push(ev(3, "reopened", 90, None));
            }
        }
    }
    out
}

async fn billed_identifiers(backend: Backend, bodies: &[String]) -> Vec<String> {
    let (app, stripe) = app_with_stripe(backend).await;
    for b in bodies {
        assert_eq!(app.send(b).await, 202);
        // Interleave processing with arrival, as a live worker would.
        if fastrand::u8(..4) == 0 {
            app.run_worker().await;
        }
    }
    app.advance_hours(500);
    app.run_worker().await;
    app.run_reporter().await;
    let mut ids: Vec<String> = stripe.events().into_iter().map(|e| e.identifier).collect();
    ids.sort();
    assert_eq!(ids.len(), stripe.requests(), "one request per event");
    app.stop().await;
    ids
}

async fn shuffled_delivery_order_gives_the_same_outcomes(backend: Backend) {
    let bodies = scenario();
    let expected = billed_identifiers(backend, &bodies).await;
    // 5 AI-only tickets, 5 resolved-again tickets (seq 2), 5 late reopen after a hand-off (seq 2),
    // 5 AI resolutions reopened only after the window.
    assert_eq!(expected.len(), 20);
    for seed in [1u64, 2, 3] {
        let mut shuffled = bodies.clone();
        fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
        assert_eq!(
            billed_identifiers(backend, &shuffled).await,
            expected,
            "seed {seed}"
        );
    }
}

async fn zendesk_and_intercom_reference_payloads_flow_through(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    let ts = app.clock_rfc3339();
    let body = reference_payload("zendesk-ticket.status_changed-solved.json");
    let sig = b64(&hmac_sha256(
        ZENDESK_SECRET.as_bytes(),
        &[ts.as_bytes(), &body],
    ));
    let (status, _) = app
        .post(
            "/webhooks/zendesk/acme",
            &[
                ("X-Zendesk-Webhook-Signature", sig),
                ("X-Zendesk-Webhook-Signature-Timestamp", ts.clone()),
            ],
            body,
        )
        .await;
    assert_eq!(status, 202);

    let body = reference_payload("intercom-conversation.admin.closed-fin.json");
    let sig = format!(
        "sha1={}",
        hex::encode(hmac_sha1(INTERCOM_SECRET.as_bytes(), &[&body]))
    );
    let (status, _) = app
        .post("/webhooks/intercom/acme", &[("X-Hub-Signature", sig)], body)
        .await;
    assert_eq!(status, 202);

    app.run_worker().await;
    app.run_reporter().await;
    // Both resolutions (2025) became outcomes long before the test's clock
    // (2026-01-01): decided and recorded, kept at the time they became outcomes,
    // and parked as too old for Stripe rather than billed into today's period.
    let mut ids: Vec<String> = app.outcomes().await.into_iter().map(|o| o.id).collect();
    ids.sort();
    let mut expected = vec![
        outcome_id(TENANT, "zendesk", "35436", 1),
        outcome_id(TENANT, "intercom", "471", 1),
    ];
    expected.sort();
    assert_eq!(ids, expected, "both resolutions are long past their window");
    assert!(
        stripe.events().is_empty(),
        "nothing older than 35 days is sent"
    );
    for o in app.outcomes().await {
        assert_eq!(o.state.as_str(), "failed");
        assert!(
            o.last_error
                .as_deref()
                .is_some_and(|e| e.contains("replay --too-old")),
            "{:?}",
            o.last_error
        );
    }
    app.stop().await;
}

async fn authentic_but_unparseable_delivery_is_quarantined_and_acknowledged(backend: Backend) {
    let (app, _stripe) = app_with_stripe(backend).await;
    let body = r#"{"event_id":"q1","ticket_id":"Q1","type":"exploded","occurred_at":"2026-01-01T00:00:00Z"}"#;
    assert_eq!(app.send(body).await, 202);
    app.run_worker().await;
    let q = app
        .services
        .store
        .deliveries(Some(TENANT), "quarantined", 10)
        .await
        .expect("deliveries");
    assert_eq!(q.len(), 1);
    assert!(
        q[0].error
            .as_deref()
            .is_some_and(|e| e.contains("exploded")),
        "{:?}",
        q[0].error
    );
    // An operator can requeue it; it is quarantined again (same code), never lost.
    assert_eq!(
        app.services
            .store
            .requeue_quarantined(Some(TENANT), None)
            .await
            .expect("requeue"),
        1
    );
    app.run_worker().await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'quarantined'")
            .await,
        1
    );
    app.stop().await;
}

async fn retention_prunes_processed_bodies_only(backend: Backend) {
    let (app, _stripe) = app_with_stripe(backend).await;
    app.send(&event("e1", "R1", "resolved", 0, Some("ai")))
        .await;
    app.run_worker().await;
    app.send(&event("e2", "R2", "resolved", 0, Some("ai")))
        .await; // still pending
    let later = Millis::from(t0()) + std::time::Duration::from_millis(1);
    assert_eq!(
        app.services
            .store
            .prune_delivery_bodies(later)
            .await
            .expect("prune"),
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE body IS NULL")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND body IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM ticket_events").await,
        1,
        "events are kept"
    );
    app.stop().await;
}

impl TestApp {
    fn clock_rfc3339(&self) -> String {
        use outcome_meter::clock::Clock;
        self.clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

/// A reopen stored before the window ended but not yet processed (a backlog, a
/// stopped worker) holds confirmation back; once processed it disqualifies.
async fn reopen_waiting_in_the_inbox_holds_confirmation_back(backend: Backend) {
    let (app, stripe) = app_with_stripe(backend).await;
    app.send(&event("e1", "T1", "resolved", 0, Some("ai")))
        .await;
    app.run_worker().await;
    app.advance_hours(5);
    assert_eq!(app.send(&event("e2", "T1", "reopened", 5, None)).await, 202);
    app.advance_hours(70);
    let worker = app.services.worker();
    assert_eq!(
        worker.confirm_once().await.expect("confirm"),
        0,
        "the inbox holds a delivery received before the window ended"
    );
    app.run_worker().await;
    app.run_reporter().await;
    assert!(
        app.outcomes().await.is_empty(),
        "the reopen disqualified it"
    );
    assert_eq!(stripe.events().len(), 0);
    app.stop().await;
}

/// The grace after the window: a resolution is confirmed `worker.confirm_grace`
/// (5 minutes) after its window ended, not at the instant.
async fn confirmation_waits_for_the_grace_after_the_window(backend: Backend) {
    let (app, _stripe) = app_with_stripe(backend).await;
    app.send(&event("e1", "T1", "resolved", 0, Some("ai")))
        .await;
    app.run_worker().await;
    app.clock
        .advance(chrono::Duration::hours(72) + chrono::Duration::minutes(4));
    app.run_worker().await;
    assert!(app.outcomes().await.is_empty(), "inside the grace");
    app.clock.advance(chrono::Duration::minutes(1));
    app.run_worker().await;
    assert_eq!(app.outcomes().await.len(), 1);
    app.stop().await;
}

crate::dual!(
    reopen_waiting_in_the_inbox_holds_confirmation_back,
    confirmation_waits_for_the_grace_after_the_window,
    ai_resolution_never_reopened_is_billed_exactly_once,
    reopened_inside_the_window_is_not_billed,
    reopened_then_resolved_again_is_billed_once_as_seq_2,
    human_resolution_and_hand_off_are_not_billed_but_recorded,
    redelivered_webhooks_are_stored_and_counted_once,
    shuffled_delivery_order_gives_the_same_outcomes,
    zendesk_and_intercom_reference_payloads_flow_through,
    authentic_but_unparseable_delivery_is_quarantined_and_acknowledged,
    retention_prunes_processed_bodies_only
);

/// PostgreSQL refuses NUL in text. An authentic event carrying one (in its ticket
/// id, or in its event id, which is also its delivery key) is still stored and
/// acknowledged, then quarantined with the database's reason; the deliveries that
/// shared its batch are applied all the same.
#[tokio::test]
async fn a_poison_delivery_is_quarantined_without_holding_back_its_batch() {
    if !postgres_or_skip().await {
        return;
    }
    let (app, _stripe) = app_with_stripe(Backend::Postgres).await;
    assert_eq!(
        app.send(&event("e1", "T1", "resolved", 0, Some("ai")))
            .await,
        202
    );
    assert_eq!(
        app.send(&event("e2", "T\u{0}X", "resolved", 0, Some("ai")))
            .await,
        202
    );
    assert_eq!(
        app.send(&event("e\u{0}3", "T3", "resolved", 0, Some("ai")))
            .await,
        202
    );
    assert_eq!(
        app.send(&event("e4", "T4", "resolved", 0, Some("ai")))
            .await,
        202
    );
    app.advance_hours(73);
    app.run_worker().await;
    let quarantined = app
        .count("SELECT COUNT(*) FROM deliveries WHERE status = 'quarantined' AND error LIKE '%database refused%'")
        .await;
    assert_eq!(quarantined, 2, "the two poison deliveries, stored and kept");
    let mut billed: Vec<String> = app
        .outcomes()
        .await
        .into_iter()
        .map(|o| o.ticket_id)
        .collect();
    billed.sort();
    assert_eq!(billed, vec!["T1".to_string(), "T4".to_string()]);
    app.stop().await;
}
