//! Meter events on Stripe's v2 stream (`stripe.meter_event_api = "v2_stream"`)
//! against the fake Stripe: batches of at most 100 under one session, an expired
//! session replaced, a lost answer resent and counted once, a batch refused whole
//! sent event by event, connected accounts kept on v1, and dry-run recording what
//! the stream would get. Then what the fake refuses, as Stripe does.

use crate::support::*;
use outcome_meter::clock::Clock;
use outcome_meter::settings::{MeterEventApi, Settings};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use testkit::fake_stripe::{FakeStripe, Fault};

fn on_the_stream(s: &mut Settings) {
    s.stripe.meter_event_api = MeterEventApi::V2Stream;
    s.stripe.meter_events_api_base = s.stripe.api_base.clone();
}

/// An app on the stream with `n` confirmed outcomes waiting (tickets T1..Tn).
async fn app_with_outcomes(opts: Options, n: usize) -> TestApp {
    let app = TestApp::spawn_tweaked(opts, on_the_stream).await;
    for i in 1..=n {
        let body = event(
            &format!("e{i}"),
            &format!("T{i}"),
            "resolved",
            0,
            Some("ai"),
        );
        assert_eq!(app.send(&body).await, 202);
    }
    app.advance_hours(73);
    app.run_worker().await;
    assert_eq!(app.outcomes().await.len(), n);
    app
}

fn stream_opts(backend: Backend, stripe: &FakeStripe) -> Options {
    Options {
        backend,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    }
}

/// Outcomes whose identifier may be at Stripe after a call without a definite answer.
async fn in_doubt(app: &TestApp) -> i64 {
    app.services
        .store
        .test_support()
        .count("SELECT COUNT(*) FROM outcomes WHERE doubt_since IS NOT NULL")
        .await
        .expect("count")
}

/// Every outcome held: pending, no attempt spent, the reason (naming `why`) its last error.
async fn held_without_attempts(app: &TestApp, why: &str) {
    for o in app.outcomes().await {
        assert_eq!(
            (o.state.as_str(), o.attempts),
            ("pending", 0),
            "held, not parked"
        );
        let error = o.last_error.unwrap_or_default();
        assert!(error.contains(why), "{error}");
    }
}

async fn all_reported(app: &TestApp) {
    let outcomes = app.outcomes().await;
    let states: Vec<&str> = outcomes.iter().map(|o| o.state.as_str()).collect();
    assert!(states.iter().all(|s| *s == "reported"), "{states:?}");
}

/// Every outcome's identifier once at the fake, and nothing else.
fn billed_once_each(stripe: &FakeStripe, n: usize) {
    let events = stripe.events();
    let ids: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.identifier.as_str()).collect();
    assert_eq!((events.len(), ids.len()), (n, n), "billed twice or missing");
}

async fn outcomes_go_in_batches_of_at_most_100_under_one_session(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app_with_outcomes(stream_opts(backend, &stripe), 250).await;
    app.run_reporter().await;
    all_reported(&app).await;
    billed_once_each(&stripe, 250);
    assert_eq!(stripe.requests(), 0, "no v1 meter event call");
    assert_eq!(stripe.stream_requests(), 3);
    assert_eq!(stripe.stream_largest_batch(), 100);
    assert_eq!(stripe.stream_sessions(), 1);
    // Each outcome's attempt records its own event as sent, and Stripe's answer.
    let o = &app.outcomes().await[0];
    let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    let sent: serde_json::Value = serde_json::from_str(&attempts[0].request).expect("json");
    assert_eq!(sent["identifier"], o.id.as_str());
    assert_eq!(sent["payload"]["stripe_customer_id"], CUSTOMER);
    assert_eq!(sent["payload"]["value"], "1");
    assert_eq!(attempts[0].status_code, Some(200));
    assert!(attempts[0].request_id.is_some());
    assert_eq!(attempts[0].idempotency_key, None);
    assert_eq!(attempts[0].livemode, Some(false), "the session's mode");
    app.stop().await;
}

async fn an_expired_session_is_replaced_and_the_batch_sent_again(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let offset = Arc::new(AtomicI64::new(0));
    let fake_offset = offset.clone();
    stripe.set_clock(move || chrono::Utc::now().timestamp() + fake_offset.load(Ordering::Relaxed));
    let app = app_with_outcomes(stream_opts(backend, &stripe), 1).await;
    app.preflight().await;
    // One reporter for both passes, as in `serve`: its session is kept between them.
    let reporter = app.services.reporter().expect("reporter");
    reporter.drain().await.expect("drain");
    assert_eq!(stripe.stream_sessions(), 1);

    // A ticket due ten minutes later (a 72-hour window and 5 minutes' grace): the
    // session is still in its 14 minutes of use on this process's clock.
    let body = event_after(
        "e2",
        "T2",
        "resolved",
        chrono::Duration::minutes(65),
        Some("ai"),
    );
    assert_eq!(app.send(&body).await, 202);
    app.clock.advance(chrono::Duration::minutes(11));
    app.run_worker().await;
    assert_eq!(app.outcomes().await.len(), 2);
    // Stripe's 15 minutes are over, though not on this process's clock.
    offset.store(16 * 60, Ordering::Relaxed);
    reporter.drain().await.expect("drain");
    all_reported(&app).await;
    billed_once_each(&stripe, 2);
    assert_eq!(
        stripe.stream_sessions(),
        2,
        "a new session after the expiry"
    );
    assert_eq!(
        stripe.stream_requests(),
        3,
        "the refused call, then the same batch again"
    );
    for o in app.outcomes().await {
        assert_eq!(o.attempts, 1, "the expiry spends no attempt");
        let calls: Vec<(String, Option<i64>)> = app
            .services
            .store
            .attempts(&o.id)
            .await
            .expect("attempts")
            .into_iter()
            .map(|a| (a.result, a.status_code))
            .collect();
        let expected = match o.ticket_id.as_str() {
            "T1" => vec![("accepted".to_string(), Some(200))],
            // Every call is on the outcome's record, the refused one too.
            _ => vec![
                ("session_expired".to_string(), Some(401)),
                ("accepted".to_string(), Some(200)),
            ],
        };
        assert_eq!(calls, expected, "{}", o.ticket_id);
    }
    app.stop().await;
}

async fn a_session_is_renewed_before_its_15_minutes_are_up(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app_with_outcomes(stream_opts(backend, &stripe), 1).await;
    app.preflight().await;
    let reporter = app.services.reporter().expect("reporter");
    reporter.drain().await.expect("drain");
    // A ticket due at the session's 14th minute (a 72-hour window and 5
    // minutes' grace).
    let body = event_after(
        "e2",
        "T2",
        "resolved",
        chrono::Duration::minutes(69),
        Some("ai"),
    );
    assert_eq!(app.send(&body).await, 202);
    // 14½ minutes on by this process's clock, past the session's 14 minutes of
    // use (Stripe gives 15): a new session is asked for before Stripe (whose
    // clock has not moved here) would refuse the old one.
    app.clock.advance(chrono::Duration::seconds(14 * 60 + 30));
    app.run_worker().await;
    reporter.drain().await.expect("drain");
    all_reported(&app).await;
    billed_once_each(&stripe, 2);
    assert_eq!(
        stripe.stream_sessions(),
        2,
        "a new session, asked for in time"
    );
    assert_eq!(stripe.stream_requests(), 2, "no call refused as expired");
    app.stop().await;
}

async fn a_failed_session_creation_is_asked_again_once_its_batches_hold_is_over(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_session_failure(Some(401));
    let app = app_with_outcomes(stream_opts(backend, &stripe), 2).await;
    app.preflight().await;
    // One reporter throughout, as in `serve`: the failure is remembered in it.
    let reporter = app.services.reporter().expect("reporter");
    reporter.drain().await.expect("drain");
    held_without_attempts(&app, "meter event session").await;
    assert_eq!(stripe.stream_session_requests(), 1);
    stripe.set_session_failure(None);
    // Past the batches' hold, and so past the ten seconds the failure answers
    // for (those ten seconds: the unit test of `Kept`).
    app.clock.advance(chrono::Duration::minutes(2));
    reporter.drain().await.expect("drain");
    all_reported(&app).await;
    billed_once_each(&stripe, 2);
    assert_eq!(stripe.stream_session_requests(), 2);
    app.stop().await;
}

async fn a_lost_answer_is_resent_and_counted_once(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::AcceptThenDrop);
    stripe.push_fault(Fault::AcceptThenStatus(500));
    let app = app_with_outcomes(stream_opts(backend, &stripe), 3).await;
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!((o.state.as_str(), o.attempts), ("pending", 1));
    assert_eq!(in_doubt(&app).await, 3, "the events may be at Stripe");
    for _ in 0..2 {
        app.clock.advance(chrono::Duration::minutes(30));
        app.run_reporter().await;
    }
    all_reported(&app).await;
    billed_once_each(&stripe, 3);
    assert_eq!(stripe.stream_requests(), 3);
    assert_eq!(
        stripe.stream_duplicates(),
        6,
        "both resends dropped by identifier"
    );
    app.stop().await;
}

async fn a_session_stripe_did_not_give_sends_nothing_and_leaves_no_doubt(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_session_fault(500);
    let app = app_with_outcomes(stream_opts(backend, &stripe), 2).await;
    app.run_reporter().await;
    assert_eq!(stripe.stream_requests(), 0);
    assert_eq!(
        in_doubt(&app).await,
        0,
        "no event left, so none may have been counted"
    );
    held_without_attempts(&app, "meter event session").await;
    app.clock.advance(chrono::Duration::minutes(30));
    app.run_reporter().await;
    all_reported(&app).await;
    billed_once_each(&stripe, 2);
    app.stop().await;
}

async fn a_refused_session_holds_every_batch_without_spending_attempts(backend: Backend) {
    let stripe = FakeStripe::start().await;
    // A key Stripe's /v2 refuses, or one of a test-mode account without /v2.
    stripe.set_session_failure(Some(401));
    let app = app_with_outcomes(stream_opts(backend, &stripe), 250).await;
    app.run_reporter().await;
    assert_eq!(stripe.stream_requests(), 0);
    assert_eq!(
        stripe.stream_session_requests(),
        1,
        "the other batches are held on the same failure, not each asking again"
    );
    held_without_attempts(&app, "meter event session").await;
    // Fixed (a secret key of a sandbox, say): sent once the hold is over.
    stripe.set_session_failure(None);
    app.clock.advance(chrono::Duration::minutes(2));
    app.run_reporter().await;
    all_reported(&app).await;
    billed_once_each(&stripe, 250);
    app.stop().await;
}

async fn a_refused_token_drops_the_session_and_is_retried(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::Status(401));
    let app = app_with_outcomes(stream_opts(backend, &stripe), 2).await;
    app.run_reporter().await;
    for o in app.outcomes().await {
        assert_eq!((o.state.as_str(), o.attempts), ("pending", 1), "not parked");
    }
    app.clock.advance(chrono::Duration::minutes(30));
    app.run_reporter().await;
    all_reported(&app).await;
    billed_once_each(&stripe, 2);
    app.stop().await;
}

async fn a_stream_that_is_not_there_holds_the_batch_without_spending_attempts(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::Status(404));
    let app = app_with_outcomes(stream_opts(backend, &stripe), 3).await;
    app.run_reporter().await;
    held_without_attempts(&app, "meter_events_api_base").await;
    app.clock.advance(chrono::Duration::minutes(2));
    app.run_reporter().await;
    all_reported(&app).await;
    billed_once_each(&stripe, 3);
    app.stop().await;
}

async fn a_final_server_error_parks_the_batch_in_doubt_without_splitting(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::ShouldRetryFalse(500));
    let app = app_with_outcomes(stream_opts(backend, &stripe), 3).await;
    app.run_reporter().await;
    assert_eq!(
        stripe.stream_requests(),
        1,
        "a 5xx may have been applied: no split"
    );
    for o in app.outcomes().await {
        assert_eq!(o.state.as_str(), "failed");
    }
    assert_eq!(in_doubt(&app).await, 3, "Stripe may have counted them");
    app.stop().await;
}

async fn a_claim_lost_while_waiting_for_the_session_is_not_sent(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_session_delay(std::time::Duration::from_millis(1500));
    let app = TestApp::spawn_tweaked(stream_opts(backend, &stripe), |s| {
        on_the_stream(s);
        s.stripe.timeout = std::time::Duration::from_secs(10);
    })
    .await;
    for i in 1..=2 {
        let body = event(
            &format!("e{i}"),
            &format!("T{i}"),
            "resolved",
            0,
            Some("ai"),
        );
        assert_eq!(app.send(&body).await, 202);
    }
    app.advance_hours(73);
    app.run_worker().await;
    app.preflight().await;
    let voided = app.outcomes().await[0].id.clone();
    let reporter = app.services.reporter().expect("reporter");
    let pass = tokio::spawn(async move { reporter.drain().await });
    // While the reporter waits for its session, its leases run out and a clawback
    // voids one of the two outcomes.
    let fake = stripe.clone();
    testkit::poll::until(
        "the session request",
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(5),
        || {
            let fake = fake.clone();
            async move { fake.stream_session_requests() == 1 }
        },
    )
    .await;
    app.advance_hours(1);
    let now = Millis::from(app.clock.now());
    let store = &app.services.store;
    assert!(store
        .void_outcome_if_idle(&voided, now)
        .await
        .expect("void"));
    pass.await.expect("join").expect("drain");
    let events = stripe.events();
    assert_eq!(
        events.len(),
        1,
        "the voided outcome is left out of the call"
    );
    assert_ne!(events[0].identifier, voided);
    for o in app.outcomes().await {
        let expected = if o.id == voided { "voided" } else { "reported" };
        assert_eq!(o.state.as_str(), expected);
    }
    app.stop().await;
}

async fn a_batch_refused_whole_is_sent_event_by_event(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::ShouldRetryFalse(400));
    let app = app_with_outcomes(stream_opts(backend, &stripe), 3).await;
    app.run_reporter().await;
    all_reported(&app).await;
    billed_once_each(&stripe, 3);
    assert_eq!(
        stripe.stream_requests(),
        4,
        "the refused batch, then one call per event"
    );
    for o in app.outcomes().await {
        let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
        let results: Vec<&str> = attempts.iter().map(|a| a.result.as_str()).collect();
        assert_eq!(results, ["split", "accepted"]);
        assert_eq!(attempts[0].status_code, Some(400));
    }

    // A single event refused for good is parked, with Stripe's answer.
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::ShouldRetryFalse(400));
    let app = app_with_outcomes(stream_opts(backend, &stripe), 1).await;
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "failed");
    assert!(o.last_error.as_deref().is_some_and(|e| e.contains("400")));
    assert_eq!(stripe.events().len(), 0);
    app.stop().await;
}

async fn a_connected_accounts_outcomes_stay_on_v1(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let opts = Options {
        stripe_account: Some("acct_1StreamTest".into()),
        ..stream_opts(backend, &stripe)
    };
    let app = app_with_outcomes(opts, 2).await;
    app.run_reporter().await;
    all_reported(&app).await;
    billed_once_each(&stripe, 2);
    assert_eq!((stripe.requests(), stripe.stream_requests()), (2, 0));
    app.stop().await;
}

async fn dry_run_records_the_events_the_stream_would_get(backend: Backend) {
    let app = app_with_outcomes(
        Options {
            backend,
            ..Default::default()
        },
        2,
    )
    .await;
    app.run_reporter().await;
    for o in app.outcomes().await {
        assert_eq!(o.state.as_str(), "dry_run");
        let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
        let sent: serde_json::Value = serde_json::from_str(&attempts[0].request).expect("json");
        assert_eq!(sent["identifier"], o.id.as_str());
        assert!(sent["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    app.stop().await;
}

crate::dual!(
    a_session_is_renewed_before_its_15_minutes_are_up,
    a_failed_session_creation_is_asked_again_once_its_batches_hold_is_over,
    outcomes_go_in_batches_of_at_most_100_under_one_session,
    an_expired_session_is_replaced_and_the_batch_sent_again,
    a_lost_answer_is_resent_and_counted_once,
    a_batch_refused_whole_is_sent_event_by_event,
    a_session_stripe_did_not_give_sends_nothing_and_leaves_no_doubt,
    a_refused_session_holds_every_batch_without_spending_attempts,
    a_refused_token_drops_the_session_and_is_retried,
    a_final_server_error_parks_the_batch_in_doubt_without_splitting,
    a_stream_that_is_not_there_holds_the_batch_without_spending_attempts,
    a_claim_lost_while_waiting_for_the_session_is_not_sent,
    a_connected_accounts_outcomes_stay_on_v1,
    dry_run_records_the_events_the_stream_would_get,
);

/// What the fake refuses, as Stripe does: the tests above pass only because our
/// requests are not among these.
#[tokio::test]
async fn the_fake_stream_refuses_what_stripe_refuses() {
    let stripe = FakeStripe::start().await;
    let http = reqwest::Client::new();
    let base = stripe.base_url();
    let session = |key: &'static str, version: Option<&'static str>| {
        let mut req = http
            .post(format!("{base}/v2/billing/meter_event_session"))
            .bearer_auth(key);
        if let Some(v) = version {
            req = req.header("Stripe-Version", v);
        }
        req.send()
    };
    assert_eq!(
        session("rk_test_restricted", Some("2025-03-31.basil"))
            .await
            .expect("send")
            .status(),
        401,
        "restricted keys cannot call /v2"
    );
    assert_eq!(
        session(FakeStripe::API_KEY, None)
            .await
            .expect("send")
            .status(),
        400,
        "Stripe-Version is required on /v2"
    );
    let s: serde_json::Value = session(FakeStripe::API_KEY, Some("2025-03-31.basil"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(s["object"], "v2.billing.meter_event_session");
    let token = s["authentication_token"]
        .as_str()
        .expect("token")
        .to_string();

    let event = |i: usize| {
        serde_json::json!({
            "event_name": "resolved_ticket",
            "identifier": format!("id_{i}"),
            "timestamp": "2026-01-01T00:00:00Z",
            "payload": {"stripe_customer_id": "cus_1", "value": "1"},
        })
    };
    let post = |bearer: String, body: serde_json::Value| {
        http.post(format!("{base}/v2/billing/meter_event_stream"))
            .bearer_auth(bearer)
            .header("Stripe-Version", "2025-03-31.basil")
            .json(&body)
            .send()
    };
    let status = |r: reqwest::Result<reqwest::Response>| r.expect("send").status().as_u16();
    let many: Vec<_> = (0..101).map(event).collect();
    assert_eq!(
        status(post(token.clone(), serde_json::json!({"events": many})).await),
        400
    );
    assert_eq!(
        status(post(token.clone(), serde_json::json!({"events": []})).await),
        400
    );
    let mut numeric = event(1);
    numeric["payload"]["value"] = serde_json::json!(1);
    assert_eq!(
        status(post(token.clone(), serde_json::json!({"events": [numeric]})).await),
        400,
        "payload values are strings"
    );
    let mut unix = event(1);
    unix["timestamp"] = serde_json::json!(1_700_000_000);
    assert_eq!(
        status(post(token.clone(), serde_json::json!({"events": [unix]})).await),
        400,
        "timestamps are RFC 3339 strings"
    );
    assert_eq!(
        status(
            post(
                FakeStripe::API_KEY.into(),
                serde_json::json!({"events": [event(1)]})
            )
            .await
        ),
        401,
        "the stream takes the session's token, not the secret key"
    );
    assert_eq!(stripe.events().len(), 0);
    let ok = post(
        token.clone(),
        serde_json::json!({"events": [event(1), event(2)]}),
    )
    .await
    .expect("send");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("body").trim(), "{}");
    assert_eq!(stripe.events().len(), 2);

    // Past its 15 minutes the token is refused with Stripe's expiry error.
    stripe.set_clock(|| chrono::Utc::now().timestamp() + 15 * 60 + 1);
    let expired = post(token, serde_json::json!({"events": [event(3)]}))
        .await
        .expect("send");
    assert_eq!(expired.status(), 401);
    let body: serde_json::Value = expired.json().await.expect("json");
    assert_eq!(body["error"]["type"], "temporary_session_expired");
}
