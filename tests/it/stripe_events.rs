//! Stripe's asynchronous rejections: meter events accepted with a 200, rejected later and
//! reported through signed thin events at `POST /stripe/events`; outcomes marked
//! `rejected_by_stripe`, shown everywhere, resent once fixed; drift for what the samples
//! do not name; `reconcile` with nothing to compare.

use crate::support::*;
use outcome_meter::accounting::explain::explain;
use outcome_meter::accounting::period::Period;
use outcome_meter::accounting::reconcile::{reconcile, ReconcileError, StripeTarget};
use outcome_meter::accounting::statement;
use outcome_meter::clock::Clock;
use outcome_meter::outcome::outcome_id;
use outcome_meter::settings::StripeMode;
use outcome_meter::store::Effect;
use outcome_meter::stripe::events::{sign, Sample};
use outcome_meter::stripe::Rejections;
use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;
use testkit::fake_stripe::FakeStripe;

const WHSEC: &str = "whsec_test_destination_signing_secret";
const METER: &str = "mtr_resolved";

fn january() -> Period {
    Period::parse("2026-01-01", "2026-01-31").expect("period")
}

/// A service whose Stripe event destination is the fake, on the same clock.
async fn app(backend: Backend, stripe: &FakeStripe) -> TestApp {
    let app = TestApp::spawn_tweaked(
        Options {
            backend,
            stripe: Some(stripe.base_url()),
            ..Default::default()
        },
        |s| {
            s.stripe.webhook_secret = WHSEC.into();
            s.stripe.meter_ids = [("resolved_ticket".to_string(), METER.to_string())].into();
        },
    )
    .await;
    stripe.set_meter(METER, "resolved_ticket");
    let clock = app.clock.clone();
    stripe.set_clock(move || clock.now().timestamp());
    stripe.set_event_destination(&app.url("/stripe/events"), WHSEC);
    app
}

fn rejections(app: &TestApp) -> Rejections {
    app.services
        .rejections()
        .expect("client")
        .expect("a Stripe key is configured")
}

/// Tickets resolved by the AI, confirmed and reported (accepted with a 200 each).
async fn reported(app: &TestApp, tickets: &[&str]) {
    for t in tickets {
        assert_eq!(
            app.send(&event(&format!("{t}-r"), t, "resolved", 0, Some("ai")))
                .await,
            202
        );
    }
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let outcomes = app.outcomes().await;
    assert_eq!(outcomes.len(), tickets.len());
    assert!(outcomes.iter().all(|o| o.state.as_str() == "reported"));
}

async fn state_of(app: &TestApp, ticket: &str) -> String {
    let id = outcome_id(TENANT, "generic", ticket, 1);
    app.outcomes()
        .await
        .into_iter()
        .find(|o| o.id == id)
        .map(|o| o.state.to_string())
        .unwrap_or_default()
}

/// Run `outcome-meter ARGS` on the app's database, its clock shifted to the test's.
fn cli(app: &TestApp, args: &[&str], config: Option<&std::path::Path>) -> Output {
    command(app, args, config)
        .output()
        .expect("run outcome-meter")
}

/// [`cli`] off the test's runtime, so a fake served by that runtime can answer it.
async fn cli_async(app: &TestApp, args: &[&str], config: Option<&std::path::Path>) -> Output {
    let mut cmd = command(app, args, config);
    tokio::task::spawn_blocking(move || cmd.output().expect("run outcome-meter"))
        .await
        .expect("join")
}

fn command(
    app: &TestApp,
    args: &[&str],
    config: Option<&std::path::Path>,
) -> std::process::Command {
    let dir = std::env::temp_dir();
    let offset = (app.clock.now() - chrono::Utc::now()).num_milliseconds();
    let offset = if offset < 0 {
        format!("-{}ms", -offset)
    } else {
        format!("{offset}ms")
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(args)
        .current_dir(dir)
        .env_remove("OUTCOME_METER_CONFIG")
        .env_remove("STRIPE_API_KEY")
        .env("OUTCOME_METER__DATABASE__URL", &app.settings.database.url)
        .env("OUTCOME_METER__CLOCK__OFFSET", offset)
        .env(
            "OUTCOME_METER__STRIPE__MODE",
            if config.is_some() { "test" } else { "dry-run" },
        )
        .env("RUST_LOG", "error");
    cmd
}

fn stdout_ok(out: &Output, args: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn metrics_show(app: &TestApp, lines: &[&str]) {
    let url = app.admin_url("/metrics");
    testkit::poll::until(
        "the metrics",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let text = app
                .http
                .get(&url)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .unwrap_or_default();
            lines.iter().all(|l| text.contains(l))
        },
    )
    .await;
}

/// The whole story: accepted, rejected later, shown as not billed everywhere, resent
/// under a new identifier once the customer exists, billed once.
async fn a_rejected_outcome_is_shown_as_not_billed_and_resent_once_fixed(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_customers(&[]); // CUSTOMER does not exist at Stripe (yet)
    let app = app(backend, &stripe).await;
    reported(&app, &["T1", "T2"]).await;
    assert_eq!(stripe.events().len(), 2, "both accepted with a 200");

    let published = stripe.publish_error_reports().await;
    assert_eq!(published.len(), 1, "one report for the meter");
    assert_eq!(published[0].1, 200, "stored and acknowledged");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stripe_events WHERE state = 'pending'")
            .await,
        1
    );
    assert_eq!(rejections(&app).drain().await.expect("processed"), 1);
    assert_eq!(stripe.v2_event_fetches(), 1);
    for t in ["T1", "T2"] {
        assert_eq!(state_of(&app, t).await, "rejected_by_stripe", "{t}");
    }
    let o = app.outcomes().await.remove(0);
    let err = o.last_error.clone().unwrap_or_default();
    assert!(
        err.contains("meter_event_customer_not_found") && err.contains(&published[0].0),
        "{err}"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stripe_events WHERE state = 'processed'")
            .await,
        1
    );

    // outcomes, explain, statement, reconcile and /metrics all say so.
    let listed = cli(&app, &["outcomes", "--rejected", "--json"], None);
    let page: Value =
        serde_json::from_str(&stdout_ok(&listed, &["outcomes"])).expect("outcomes JSON");
    assert_eq!(page["total"], 2);
    assert_eq!(page["outcomes"][0]["state"], "rejected_by_stripe");
    let store = &app.services.store;
    let e = explain(store, TENANT, "T1", None).await.expect("explain");
    let text = e.render();
    assert!(
        text.contains("not billed: Stripe accepted the meter event")
            && text.contains("replay --rejected")
            && text.contains("meter_event_customer_not_found"),
        "{text}"
    );
    let json = serde_json::to_value(&e).expect("json");
    assert_eq!(
        json["providers"][0]["outcomes"][0]["rejections"][0]["code"],
        "meter_event_customer_not_found"
    );
    let st = statement::build(store, TENANT, CUSTOMER, StripeMode::Test, january())
        .await
        .expect("statement");
    assert_eq!(st.billed_count, 0);
    assert!(st.billed.is_empty(), "not billed");
    let rejected: Vec<_> = st
        .not_billed
        .iter()
        .filter(|n| n.reason == "rejected_by_stripe")
        .collect();
    assert_eq!(rejected.len(), 2);
    assert!(rejected[0]
        .detail
        .contains("meter_event_customer_not_found"));
    assert_eq!(
        st.disqualified_by_reason.get("rejected_by_stripe"),
        Some(&2)
    );
    let t = &st.totals[0];
    assert_eq!((t.rejected_count, t.reported_count, t.net_value), (2, 0, 0));
    assert!(st
        .to_html()
        .contains("rejected by Stripe after it accepted the event"));
    assert!(st.to_csv().contains("rejected by Stripe 2"));
    let client = stripe_client(&stripe);
    let meters = [("resolved_ticket".to_string(), METER.to_string())].into();
    let r = reconcile(store, &client, &meters, TENANT, &test_target(), january())
        .await
        .expect("reconcile");
    assert!(!r.has_drift(), "{}", r.render());
    assert_eq!((r.meters[0].expected, r.meters[0].rejected_count), (0, 2));
    assert!(r.render().contains("rejected by Stripe"), "{}", r.render());
    metrics_show(
        &app,
        &[
            "outcome_meter_outcomes{state=\"rejected_by_stripe\"} 2",
            "outcome_meter_stripe_rejections_total{code=\"meter_event_customer_not_found\"} 2",
            "outcome_meter_stripe_notifications_total{result=\"stored\"} 1",
            "outcome_meter_stripe_events_queued{status=\"pending\"} 0",
        ],
    )
    .await;

    // The reporter leaves them alone: only an operator resends.
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 2);

    // The customer is created in Stripe; the operator lists, then resends.
    stripe.add_customer(CUSTOMER);
    let listed = stdout_ok(
        &cli(&app, &["replay", "--rejected"], None),
        &["replay", "--rejected"],
    );
    assert!(
        listed.contains("2 outcome(s) rejected by Stripe would be sent again"),
        "{listed}"
    );
    assert_eq!(
        state_of(&app, "T1").await,
        "rejected_by_stripe",
        "only with --yes"
    );
    let done = stdout_ok(
        &cli(&app, &["replay", "--rejected", "--yes"], None),
        &["replay", "--rejected", "--yes"],
    );
    assert!(done.contains("2 outcome(s) queued"), "{done}");
    app.clock.advance(chrono::Duration::minutes(1)); // the command's clock ran on a little
    app.run_reporter().await;
    let id = outcome_id(TENANT, "generic", "T1", 1);
    let events = stripe.events();
    assert_eq!(events.len(), 4);
    assert!(
        events
            .iter()
            .any(|e| e.identifier == format!("{id}_resend1")),
        "a new identifier, never the rejected one"
    );
    assert_eq!(stripe.duplicate_refusals(), 0);
    for t in ["T1", "T2"] {
        assert_eq!(state_of(&app, t).await, "reported", "{t}");
    }
    assert!(
        stripe.publish_error_reports().await.is_empty(),
        "accepted for good"
    );
    let r = reconcile(store, &client, &meters, TENANT, &test_target(), january())
        .await
        .expect("reconcile");
    assert!(!r.has_drift(), "{}", r.render());
    assert_eq!((r.meters[0].expected, r.meters[0].stripe), (2, 2.0));
    let st = statement::build(store, TENANT, CUSTOMER, StripeMode::Test, january())
        .await
        .expect("statement");
    assert_eq!(st.billed_count, 2);
    assert!(st
        .billed
        .iter()
        .all(|b| b.stripe_identifier.ends_with("_resend1")));
    let text = explain(store, TENANT, "T1", None)
        .await
        .expect("explain")
        .render();
    assert!(
        text.contains(&format!("resent after Stripe's rejection as {id}_resend1"))
            && text.contains(&format!("Stripe rejected {id} after accepting it")),
        "{text}"
    );
    app.stop().await;
}

fn notification(id: &str, kind: &str) -> String {
    json!({
        "id": id,
        "object": "v2.core.event",
        "type": kind,
        "created": "2026-01-04T01:00:00.000Z",
        "livemode": false,
        "context": null,
        "reason": null,
        "related_object": {"id": METER, "type": "billing.meter", "url": format!("/v1/billing/meters/{METER}")},
    })
    .to_string()
}

async fn post_event(app: &TestApp, body: &str, signature: Option<String>) -> (u16, String) {
    let headers: Vec<(&str, String)> = signature
        .map(|s| vec![("Stripe-Signature", s)])
        .unwrap_or_default();
    app.post("/stripe/events", &headers, body.to_string()).await
}

/// Forged, expired, unsigned and malformed notifications are refused and leave nothing
/// behind; without a configured secret the endpoint does not exist.
async fn only_authentic_notifications_are_stored(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe).await;
    let now = app.clock.now().timestamp();
    let body = notification("evt_test_1", "v1.billing.meter.error_report_triggered");
    let refused = [
        (None, "missing_signature"),
        (
            Some(sign("whsec_someone_else_secret", now, body.as_bytes())),
            "bad_signature",
        ),
        (
            Some(sign(WHSEC, now - 301, body.as_bytes())),
            "stale_signature",
        ),
        (
            Some(sign(WHSEC, now + 301, body.as_bytes())),
            "stale_signature",
        ),
        (Some(format!("t={now},v1=")), "bad_signature"),
        (Some("garbage".to_string()), "bad_signature"),
    ];
    for (sig, code) in refused {
        let (status, answer) = post_event(&app, &body, sig.clone()).await;
        assert_eq!(status, 401, "{sig:?}: {answer}");
        assert!(answer.contains(code), "{sig:?}: {answer}");
    }
    // A tampered body under a signature of the original.
    let tampered = body.replace("evt_test_1", "evt_test_2");
    let (status, _) = post_event(&app, &tampered, Some(sign(WHSEC, now, body.as_bytes()))).await;
    assert_eq!(status, 401);
    // Authentic, but not a notification.
    for bad in [
        "not json",
        "{}",
        r#"{"id":"evt_x"}"#,
        r#"{"id":"evt_x","type":"x","object":"event"}"#,
    ] {
        let (status, answer) = post_event(&app, bad, Some(sign(WHSEC, now, bad.as_bytes()))).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM stripe_events").await, 0);

    // Authentic: stored; another type is stored as ignored and never fetched.
    let (status, answer) = post_event(&app, &body, Some(sign(WHSEC, now, body.as_bytes()))).await;
    assert_eq!((status, answer.contains("stored")), (200, true), "{answer}");
    let other = notification("evt_test_3", "v1.billing.meter.updated");
    let (status, _) = post_event(&app, &other, Some(sign(WHSEC, now, other.as_bytes()))).await;
    assert_eq!(status, 200);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stripe_events WHERE state = 'ignored'")
            .await,
        1
    );
    // An event id Stripe does not know (the fake published none): given up, visible.
    assert_eq!(rejections(&app).drain().await.expect("drain"), 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stripe_events WHERE state = 'failed'")
            .await,
        1
    );
    metrics_show(
        &app,
        &[
            "outcome_meter_stripe_notifications_total{result=\"missing_signature\"} 1",
            "outcome_meter_stripe_notifications_total{result=\"stale_signature\"} 2",
            "outcome_meter_stripe_notifications_total{result=\"ignored\"} 1",
            "outcome_meter_stripe_events_queued{status=\"failed\"} 1",
        ],
    )
    .await;
    app.stop().await;

    // No secret configured: 404, nothing stored.
    let plain = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    })
    .await;
    let now = plain.clock.now().timestamp();
    let (status, answer) = post_event(&plain, &body, Some(sign(WHSEC, now, body.as_bytes()))).await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer.contains("not_configured"), "{answer}");
    assert_eq!(plain.count("SELECT COUNT(*) FROM stripe_events").await, 0);
    plain.stop().await;
}

/// Stripe signs with the world's clock: a drill's `clock.offset` does not shift the
/// tolerance window.
async fn signatures_are_checked_against_the_worlds_clock(backend: Backend) {
    let app = TestApp::spawn_tweaked(
        Options {
            backend,
            clock_offset: chrono::Duration::hours(73),
            ..Default::default()
        },
        |s| s.stripe.webhook_secret = WHSEC.into(),
    )
    .await;
    let body = notification("evt_world", "v1.billing.meter.updated");
    let shifted = app.services.clock.now().timestamp();
    let (status, _) = post_event(&app, &body, Some(sign(WHSEC, shifted, body.as_bytes()))).await;
    assert_eq!(status, 401, "signed at the process's shifted time");
    let world = app.clock.now().timestamp();
    let (status, _) = post_event(&app, &body, Some(sign(WHSEC, world, body.as_bytes()))).await;
    assert_eq!(status, 200, "signed at the world's time");
    app.stop().await;
}

/// A rejection that says the identifier was a duplicate is about a resend Stripe
/// dropped: the event it repeats was counted, so the outcome stays reported (marked
/// rejected, `replay --rejected` would bill it again under a new identifier).
async fn a_duplicate_identifier_report_leaves_the_outcome_billed(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.reject_customer(CUSTOMER, "duplicate_meter_event");
    let app = app(backend, &stripe).await;
    reported(&app, &["D1"]).await;
    let published = stripe.publish_error_reports().await;
    assert_eq!(published[0].1, 200);
    assert_eq!(rejections(&app).drain().await.expect("drain"), 1);
    assert_eq!(state_of(&app, "D1").await, "reported");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stripe_rejections").await,
        1,
        "the report is kept for the record"
    );
    app.stop().await;
}

/// Stripe redelivers until it gets a 2xx: a redelivery is acknowledged, stored once
/// and processed once; processing the same report again changes nothing.
async fn a_redelivered_notification_is_processed_once(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.reject_customer(CUSTOMER, "meter_event_no_customer_defined");
    let app = app(backend, &stripe).await;
    reported(&app, &["D1"]).await;
    let published = stripe.publish_error_reports().await;
    let id = &published[0].0;
    assert_eq!(published[0].1, 200);
    assert_eq!(stripe.redeliver(id).await, 200);
    assert_eq!(app.count("SELECT COUNT(*) FROM stripe_events").await, 1);
    let r = rejections(&app);
    assert_eq!(r.drain().await.expect("drain"), 1);
    assert_eq!(stripe.redeliver(id).await, 200, "after processing too");
    assert_eq!(
        r.drain().await.expect("drain"),
        0,
        "nothing left to process"
    );
    assert_eq!(stripe.v2_event_fetches(), 1);
    assert_eq!(state_of(&app, "D1").await, "rejected_by_stripe");
    // Processing the same samples again (a crash after marking, before finishing).
    let oid = outcome_id(TENANT, "generic", "D1", 1);
    let sample = Sample {
        identifier: oid.clone(),
        code: "meter_event_no_customer_defined".into(),
        message: "again".into(),
    };
    let again = app
        .services
        .store
        .apply_rejections(id, &[sample], "test", None, Millis::EPOCH)
        .await
        .expect("apply");
    assert_eq!(again[0].effect, Effect::Already);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stripe_rejections").await,
        1,
        "one rejection per identifier"
    );
    // A rejection naming an identifier the outcome no longer uses changes nothing.
    app.services
        .store
        .requeue_rejected(None, Some(&oid), Millis::EPOCH)
        .await
        .expect("requeue");
    let stale = Sample {
        identifier: oid.clone(),
        code: "x".into(),
        message: "late".into(),
    };
    let late = app
        .services
        .store
        .apply_rejections(
            "evt_late",
            std::slice::from_ref(&stale),
            "test",
            None,
            Millis::EPOCH,
        )
        .await
        .expect("apply");
    assert_eq!(late[0].effect, Effect::Stale);
    assert_eq!(state_of(&app, "D1").await, "pending");
    // A rejection in another mode or account than the outcome's is not about it
    // (the same identifier lives in each).
    app.run_reporter().await;
    assert_eq!(state_of(&app, "D1").await, "reported");
    let d1 = app
        .outcomes()
        .await
        .into_iter()
        .find(|o| o.id == oid)
        .expect("D1");
    let resent = Sample {
        identifier: d1.stripe_identifier(),
        ..stale
    };
    for (mode, account) in [("live", None), ("test", Some("acct_1Other"))] {
        let other = app
            .services
            .store
            .apply_rejections(
                "evt_other",
                std::slice::from_ref(&resent),
                mode,
                account,
                Millis::EPOCH,
            )
            .await
            .expect("apply");
        assert_eq!(other[0].effect, Effect::Stale, "{mode} {account:?}");
    }
    assert_eq!(state_of(&app, "D1").await, "reported");
    app.stop().await;
}

/// A stored notification survives a failed fetch and a restart, and is processed then.
async fn a_stored_notification_is_processed_after_a_failure_and_a_restart(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_customers(&[]);
    let app = app(backend, &stripe).await;
    reported(&app, &["C1"]).await;
    stripe.push_v2_event_fault(503);
    assert_eq!(stripe.publish_error_reports().await[0].1, 200);
    assert_eq!(rejections(&app).drain().await.expect("drain"), 1);
    assert_eq!(state_of(&app, "C1").await, "reported", "not fetched yet");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stripe_events WHERE state = 'pending' AND attempts = 1")
            .await,
        1
    );
    let app = app.restart().await;
    app.advance_hours(1);
    assert_eq!(rejections(&app).drain().await.expect("drain"), 1);
    assert_eq!(state_of(&app, "C1").await, "rejected_by_stripe");
    assert_eq!(stripe.v2_event_fetches(), 2);
    app.stop().await;
}

/// Stripe's samples name some of the rejected events: those are marked; the rest show
/// as drift, right after the report and in the periodic reconcile, never guessed.
async fn rejections_the_samples_do_not_name_show_as_drift(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_customers(&[]);
    stripe.set_sample_limit(1);
    let app = app(backend, &stripe).await;
    reported(&app, &["U1", "U2", "U3"]).await;
    stripe.publish_error_reports().await;
    rejections(&app).drain().await.expect("drain");
    let states: Vec<String> = app
        .outcomes()
        .await
        .into_iter()
        .map(|o| o.state.to_string())
        .collect();
    assert_eq!(
        states.iter().filter(|s| *s == "rejected_by_stripe").count(),
        1,
        "{states:?}"
    );
    assert_eq!(states.iter().filter(|s| *s == "reported").count(), 2);
    let summary = app
        .services
        .store
        .test_support()
        .text_rows("SELECT summary FROM stripe_events", &[])
        .await
        .expect("summary")
        .first()
        .map(|r| r[0].clone())
        .expect("summary");
    let summary: Value = serde_json::from_str(&summary).expect("summary JSON");
    assert_eq!(
        (summary["error_count"].as_i64(), summary["unnamed"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        summary["reconciled"][0]["drift"].as_f64(),
        Some(-2.0),
        "{summary}"
    );
    metrics_show(
        &app,
        &["outcome_meter_reconcile_drift{tenant=\"acme\",meter=\"resolved_ticket\"} -2.0"],
    )
    .await;

    // The periodic reconcile (reconcile.every) finds the same, without any notification.
    app.advance_hours(1); // past reconcile.lag
    let lines = rejections(&app).reconcile_all().await.expect("reconcile");
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (
            lines[0].line.expected,
            lines[0].line.stripe,
            lines[0].line.drift,
            lines[0].line.rejected_count
        ),
        (2, 0.0, -2.0, 1)
    );
    let client = stripe_client(&stripe);
    let meters = [("resolved_ticket".to_string(), METER.to_string())].into();
    let r = reconcile(
        &app.services.store,
        &client,
        &meters,
        TENANT,
        &test_target(),
        january(),
    )
    .await
    .expect("reconcile");
    assert!(r.has_drift());
    assert!(
        r.render()
            .contains("Stripe counts less than outcome-meter reported"),
        "{}",
        r.render()
    );
    app.stop().await;
}

/// Events for an event name with no meter are reported by `no_meter_found`.
async fn events_for_a_meter_that_does_not_exist_are_rejected(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_strict_meters(true);
    let app = TestApp::spawn_tweaked(
        Options {
            backend,
            stripe: Some(stripe.base_url()),
            ..Default::default()
        },
        |s| s.stripe.webhook_secret = WHSEC.into(),
    )
    .await;
    let clock = app.clock.clone();
    stripe.set_clock(move || clock.now().timestamp());
    stripe.set_event_destination(&app.url("/stripe/events"), WHSEC);
    // The preflight passes, then the meter goes (Stripe's check of it comes
    // later, asynchronously): sent before the next preflight, then rejected.
    assert_eq!(
        app.send(&event("N1-r", "N1", "resolved", 0, Some("ai")))
            .await,
        202
    );
    app.advance_hours(73);
    app.run_worker().await;
    app.preflight().await;
    let meter = stripe
        .meter_id("resolved_ticket")
        .expect("the harness's meter");
    stripe.update_meter(&meter, |m| m.event_name = "gone".into());
    app.run_reporter().await;
    assert_eq!(app.outcomes().await[0].state.as_str(), "reported");
    assert_eq!(stripe.publish_error_reports().await[0].1, 200);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM stripe_events WHERE type = 'v1.billing.meter.no_meter_found'"
        )
        .await,
        1
    );
    rejections(&app).drain().await.expect("drain");
    assert_eq!(state_of(&app, "N1").await, "rejected_by_stripe");
    let o = app.outcomes().await.remove(0);
    assert!(o.last_error.unwrap_or_default().contains("no_meter"));
    app.stop().await;
}

/// A clawback's correcting event (`<id>_reversal`) Stripe rejects: the reversal is
/// failed with Stripe's reason, and the outcome still counts as billed, as at Stripe.
async fn a_rejected_correction_fails_its_reversal(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn_tweaked(
        Options {
            backend,
            stripe: Some(stripe.base_url()),
            contract: outcome_meter::contract::ContractTerms {
                clawback: Some(Duration::from_secs(30 * 86_400)),
                ..Default::default()
            },
            ..Default::default()
        },
        |s| {
            s.stripe.webhook_secret = WHSEC.into();
            s.stripe.meter_ids = [("resolved_ticket".to_string(), METER.to_string())].into();
        },
    )
    .await;
    stripe.set_meter(METER, "resolved_ticket");
    let clock = app.clock.clone();
    stripe.set_clock(move || clock.now().timestamp());
    stripe.set_event_destination(&app.url("/stripe/events"), WHSEC);
    reported(&app, &["R1"]).await;
    // Reopened a day later: past Stripe's cancellation window, so a correcting event.
    stripe.reject_customer(CUSTOMER, "meter_event_customer_not_found");
    app.advance_hours(25);
    app.send(&event("R1-o", "R1", "reopened", 98, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    let id = outcome_id(TENANT, "generic", "R1", 1);
    assert_eq!(
        stripe.rejected_identifiers(),
        vec![format!("{id}_reversal")]
    );
    assert_eq!(stripe.publish_error_reports().await[0].1, 200);
    rejections(&app).drain().await.expect("drain");
    let store = &app.services.store;
    let r = store.reversals(TENANT).await.expect("reversals").remove(0);
    assert_eq!(
        (r.method.as_deref(), r.state.as_str()),
        (Some("correction"), "failed")
    );
    assert!(
        r.last_error
            .unwrap_or_default()
            .contains("meter_event_customer_not_found"),
        "Stripe's reason is kept"
    );
    let period = Period::parse("2026-01-01", "2026-01-31").expect("period");
    let st = statement::build(store, TENANT, CUSTOMER, StripeMode::Test, period)
        .await
        .expect("statement");
    assert_eq!(st.totals[0].net_value, 1, "still billed, as at Stripe");
    let client = stripe_client(&stripe);
    let meters = [("resolved_ticket".to_string(), METER.to_string())].into();
    let r = reconcile(store, &client, &meters, TENANT, &test_target(), period)
        .await
        .expect("reconcile");
    assert!(!r.has_drift(), "{}", r.render());
    app.stop().await;
}

/// Issue 11.5: with no outcome in the period and no meter configured, `reconcile` has
/// nothing to ask Stripe: an error with the reason, never "No drift.".
async fn reconcile_with_nothing_to_compare_fails_and_says_why(backend: Backend) {
    let stripe = FakeStripe::start().await;
    // An account with no meter at all (no harness set-up), and no outcome.
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        stripe_setup: false,
        ..Default::default()
    })
    .await;
    let client = stripe_client(&stripe);
    let r = reconcile(
        &app.services.store,
        &client,
        &Default::default(),
        TENANT,
        &test_target(),
        january(),
    )
    .await;
    assert!(
        matches!(r, Err(ReconcileError::NothingToCompare { .. })),
        "{r:?}"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("om.toml");
    std::fs::write(
        &config,
        format!(
            "[stripe]\nmode = \"test\"\napi_key = \"{}\"\napi_base = \"{}\"\n\n[[tenants]]\nid = \"{TENANT}\"\n\
             stripe_customer_id = \"{CUSTOMER}\"\n[tenants.providers.generic]\nsecrets = [\"{GENERIC_SECRET}\"]\n",
            FakeStripe::API_KEY,
            stripe.base_url()
        ),
    )
    .expect("config");
    let out = cli_async(
        &app,
        &[
            "reconcile",
            "--tenant",
            TENANT,
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-31",
        ],
        Some(&config),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing to compare"), "{stderr}");
    assert!(stderr.contains("[stripe.meter_ids]"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("No drift"));
    assert_eq!(stripe.requests(), 0);
    app.stop().await;
}

/// Without `[stripe.meter_ids]` and without an event destination, the periodic
/// reconcile still compares every meter, with the ids the preflight read.
async fn the_periodic_reconcile_needs_no_configured_meter_ids(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    })
    .await;
    let clock = app.clock.clone();
    stripe.set_clock(move || clock.now().timestamp());
    stripe.reject_customer(CUSTOMER, "meter_event_customer_not_found");
    reported(&app, &["P1", "P2"]).await;
    app.advance_hours(1); // past reconcile.lag
    let lines = rejections(&app).reconcile_all().await.expect("reconcile");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let meter = stripe
        .meter_id("resolved_ticket")
        .expect("the account's meter");
    assert_eq!(lines[0].line.meter_id, meter);
    assert_eq!((lines[0].line.expected, lines[0].line.stripe), (2, 0.0));
    app.stop().await;
}

/// The state of outcome `ticket`, read without the other outcomes (one may hold
/// a state this build cannot read).
async fn state_alone(app: &TestApp, ticket: &str) -> String {
    let rows = app
        .services
        .store
        .list_outcomes(&outcome_meter::store::OutcomeFilter {
            ticket_id: Some(ticket.into()),
            ..Default::default()
        })
        .await
        .expect("outcome");
    rows.first()
        .map(|o| o.state.to_string())
        .unwrap_or_default()
}

/// A sample naming an outcome whose stored state this build does not know
/// changes nothing for it and fails nothing: the other outcome the notification
/// names is marked, and the notification is processed.
async fn an_unknown_outcome_state_does_not_stop_a_rejection(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_customers(&[]);
    let app = app(backend, &stripe).await;
    reported(&app, &["V1", "V2"]).await;
    let v1 = outcome_id(TENANT, "generic", "V1", 1);
    assert_eq!(
        app.services
            .store
            .test_support()
            .execute("UPDATE outcomes SET state = 'parked' WHERE id = $1", &[&v1])
            .await
            .expect("a state from elsewhere"),
        1
    );
    let published = stripe.publish_error_reports().await;
    assert_eq!(published.len(), 1, "one report names both");
    assert_eq!(published[0].1, 200);
    assert_eq!(rejections(&app).drain().await.expect("drain"), 1);
    assert_eq!(state_alone(&app, "V2").await, "rejected_by_stripe");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outcomes WHERE state = 'parked'")
            .await,
        1,
        "V1 is left as it is"
    );
    let rows = app
        .services
        .store
        .test_support()
        .text_rows("SELECT state, summary FROM stripe_events", &[])
        .await
        .expect("the notification");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], "processed");
    let summary: Value = serde_json::from_str(&rows[0][1]).expect("summary JSON");
    let v1_sample = summary["samples"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["identifier"] == json!(v1)))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (v1_sample["effect"].as_str(), v1_sample["state"].as_str()),
        (Some("unchanged"), Some("parked")),
        "{summary}"
    );
    app.stop().await;
}

/// The periodic reconcile goes on past a tenant whose stored outcomes cannot be
/// read: that tenant's comparison is counted as an error, the next tenant is
/// compared.
async fn the_periodic_reconcile_goes_past_a_tenant_it_cannot_read(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn_tweaked(
        Options {
            backend,
            stripe: Some(stripe.base_url()),
            ..Default::default()
        },
        |s| {
            with_other_tenant(s);
            s.stripe.meter_ids = [("resolved_ticket".to_string(), METER.to_string())].into();
        },
    )
    .await;
    stripe.set_meter(METER, "resolved_ticket");
    let clock = app.clock.clone();
    stripe.set_clock(move || clock.now().timestamp());
    app.send(&event("P1-r", "P1", "resolved", 0, Some("ai")))
        .await;
    app.send_for(
        OTHER_TENANT,
        &event("Q1-r", "Q1", "resolved", 0, Some("ai")),
    )
    .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 2);
    let p1 = outcome_id(TENANT, "generic", "P1", 1);
    assert_eq!(
        app.services
            .store
            .test_support()
            .execute("UPDATE outcomes SET state = 'parked' WHERE id = $1", &[&p1])
            .await
            .expect("a state from elsewhere"),
        1
    );
    app.advance_hours(1); // past reconcile.lag
    let lines = rejections(&app)
        .reconcile_all()
        .await
        .expect("the reconcile goes on");
    assert_eq!(
        lines
            .iter()
            .map(|l| (l.tenant.as_str(), l.line.expected))
            .collect::<Vec<_>>(),
        vec![(OTHER_TENANT, 1)]
    );
    let text = app.services.metrics.render(Millis::EPOCH);
    assert!(
        text.contains("outcome_meter_reconcile_runs_total{result=\"error\"} 1"),
        "{text}"
    );
    app.stop().await;
}

crate::dual!(
    a_duplicate_identifier_report_leaves_the_outcome_billed,
    an_unknown_outcome_state_does_not_stop_a_rejection,
    the_periodic_reconcile_goes_past_a_tenant_it_cannot_read,
    the_periodic_reconcile_needs_no_configured_meter_ids,
    a_rejected_outcome_is_shown_as_not_billed_and_resent_once_fixed,
    only_authentic_notifications_are_stored,
    signatures_are_checked_against_the_worlds_clock,
    a_redelivered_notification_is_processed_once,
    a_stored_notification_is_processed_after_a_failure_and_a_restart,
    rejections_the_samples_do_not_name_show_as_drift,
    events_for_a_meter_that_does_not_exist_are_rejected,
    a_rejected_correction_fails_its_reversal,
    reconcile_with_nothing_to_compare_fails_and_says_why,
);

/// The tenant's customer on the platform's account, in test mode.
fn test_target() -> StripeTarget<'static> {
    StripeTarget {
        customer: CUSTOMER,
        account: None,
        mode: StripeMode::Test,
    }
}
