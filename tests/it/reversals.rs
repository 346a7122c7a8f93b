//! Clawback reversals at Stripe: crash safety, Stripe's 24-hour cancellation window.

use crate::support::*;
use chrono::Duration as Minutes;
use outcome_meter::clock::Clock;
use outcome_meter::contract::ContractTerms;
use outcome_meter::outcome::outcome_id;
use outcome_meter::store::ReversalRow;
use std::time::Duration;
use testkit::fake_stripe::{FakeStripe, Fault, MeterSpec};

fn clawback_contract() -> ContractTerms {
    ContractTerms {
        clawback: Some(Duration::from_secs(30 * 86_400)),
        ..Default::default()
    }
}

/// An app whose fake Stripe tells time by the app's manual clock.
async fn app(backend: Backend, stripe: &FakeStripe) -> TestApp {
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        contract: clawback_contract(),
        ..Default::default()
    })
    .await;
    let clock = app.clock.clone();
    stripe.set_clock(move || clock.now().timestamp());
    app
}

/// Ticket `ticket` resolved by the AI at hour 0, confirmed and reported at hour 73.
async fn billed(app: &TestApp, ticket: &str) {
    app.send(&event(
        &format!("{ticket}-r"),
        ticket,
        "resolved",
        0,
        Some("ai"),
    ))
    .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
}

async fn reversal(app: &TestApp) -> ReversalRow {
    let mut all = app
        .services
        .store
        .reversals(TENANT)
        .await
        .expect("reversals");
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

/// Results of the Stripe attempts about an outcome (`reversal:<method>:<result>`, ...).
async fn attempt_results(app: &TestApp, outcome: &str) -> Vec<String> {
    app.services
        .store
        .attempts(outcome)
        .await
        .expect("attempts")
        .into_iter()
        .map(|a| a.result)
        .collect()
}

/// The reporter dies while Stripe is applying its request: Stripe has it, nothing is
/// recorded locally (the request is delayed at the fake past the point where the
/// reporter is stopped, well inside the client timeout).
async fn crash_during_the_call(app: &TestApp) {
    let crashed = tokio::time::timeout(Duration::from_millis(500), app.run_reporter()).await;
    assert!(
        crashed.is_err(),
        "the reporter was still waiting for Stripe"
    );
}

/// Wait for the fake to finish a request the crashed reporter left behind.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..250 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fake Stripe never got to: {what}");
}

/// With a drill's positive `clock.offset`, a correcting event is stamped by the
/// world's clock (never ahead of it), so Stripe takes it instead of refusing a
/// future timestamp.
async fn a_correction_is_never_stamped_ahead_of_the_world(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_check_timestamps(true);
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        contract: clawback_contract(),
        clock_offset: Minutes::hours(1),
        ..Default::default()
    })
    .await;
    let world = app.clock.clone();
    stripe.set_clock(move || world.now().timestamp());
    // Resolved at service hour 1 (world hour 0); the window passes; the meter
    // event is held an hour (ahead of the world), then sent.
    app.send(&event("Y1-r", "Y1", "resolved", 1, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(stripe.event_count(), 0, "held while ahead of the world");
    app.advance_hours(1);
    app.run_reporter().await;
    assert_eq!(stripe.event_count(), 1);
    // Reopened two days later: past the cancel window, so a correcting event.
    app.advance_hours(48);
    app.send(&event("Y1-o", "Y1", "reopened", 123, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    let r = reversal(&app).await;
    assert_eq!(
        (r.state.as_str(), r.method.as_deref()),
        ("done", Some("correction")),
        "{r:?}"
    );
    let events = stripe.events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].timestamp,
        app.clock.now().timestamp(),
        "the world's time"
    );
    app.stop().await;
}

async fn correction_survives_a_crash_after_stripe_accepted_it(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe).await;
    billed(&app, "X1").await;
    app.advance_hours(48);
    app.send(&event("X1-o", "X1", "reopened", 121, None)).await;
    app.run_worker().await;
    stripe.push_fault(Fault::Delay(Duration::from_millis(1000)));
    crash_during_the_call(&app).await;
    until("record the correction", || stripe.event_count() == 2).await;

    // Restarted a few minutes later (after the lease): same request, same key.
    app.clock.advance(Minutes::minutes(5));
    let app = app.restart().await;
    app.run_reporter().await;
    let r = reversal(&app).await;
    assert_eq!(
        (r.state.as_str(), r.method.as_deref()),
        ("done", Some("correction")),
        "{r:?}"
    );
    let events = stripe.events();
    assert_eq!(events.len(), 2, "one correction");
    assert_eq!(events[1].value, "-1");
    assert_eq!(Some(events[1].timestamp), r.stripe_timestamp);
    app.stop().await;
}

async fn cancel_survives_a_crash_across_the_23h_boundary(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe).await;
    billed(&app, "X2").await;
    app.advance_hours(22); // 22h after sending: a cancel
    app.send(&event("X2-o", "X2", "reopened", 95, None)).await;
    app.run_worker().await;
    stripe.push_adjustment_fault(Fault::Delay(Duration::from_millis(1000)));
    crash_during_the_call(&app).await;
    until("apply the cancel", || stripe.adjustments().len() == 1).await;

    // Back 90 minutes later: past our 23-hour margin, so a fresh choice would be a
    // correction, which would reverse the outcome a second time.
    app.clock.advance(Minutes::minutes(90));
    let app = app.restart().await;
    app.run_reporter().await;
    let r = reversal(&app).await;
    assert_eq!(
        (r.state.as_str(), r.method.as_deref()),
        ("done", Some("cancel")),
        "{r:?}"
    );
    assert_eq!(stripe.adjustments().len(), 1);
    assert_eq!(stripe.events().len(), 1, "no correcting event");
    app.stop().await;
}

async fn cancel_age_counts_from_the_first_send_not_the_recorded_report(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe).await;
    app.send(&event("X3-r", "X3", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    // Stripe receives the event at 73h but the answer is lost; the retry 5 hours later
    // is what records the outcome as reported.
    stripe.push_fault(Fault::AcceptThenDrop);
    app.run_reporter().await;
    app.advance_hours(5);
    app.run_reporter().await;
    let id = outcome_id(TENANT, "generic", "X3", 1);
    assert_eq!(app.outcomes().await[0].state.as_str(), "reported");

    // 20 hours after the recorded report, 25 after Stripe received the event.
    app.advance_hours(20);
    app.send(&event("X3-o", "X3", "reopened", 98, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    let r = reversal(&app).await;
    assert_eq!(
        (r.state.as_str(), r.method.as_deref()),
        ("done", Some("correction")),
        "{r:?}"
    );
    assert!(
        !attempt_results(&app, &id)
            .await
            .iter()
            .any(|a| a.starts_with("reversal:cancel")),
        "too late to cancel: not even tried"
    );
    app.stop().await;
}

async fn a_cancel_refused_as_too_old_switches_to_a_correction_once(backend: Backend) {
    let stripe = FakeStripe::start().await;
    // This Stripe only lets events be cancelled for an hour: our 23 hours are too many.
    stripe.set_cancel_window(Duration::from_secs(3600));
    let app = app(backend, &stripe).await;
    billed(&app, "X4").await;
    app.advance_hours(2);
    app.send(&event("X4-o", "X4", "reopened", 75, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    let id = outcome_id(TENANT, "generic", "X4", 1);
    let r = reversal(&app).await;
    assert_eq!(
        (r.state.as_str(), r.method.as_deref()),
        ("done", Some("correction")),
        "{r:?}"
    );
    assert!(stripe.adjustments().is_empty());
    assert_eq!(stripe.events().len(), 2);
    let results = attempt_results(&app, &id).await;
    assert_eq!(
        results
            .iter()
            .filter(|a| a.starts_with("reversal:"))
            .collect::<Vec<_>>(),
        vec!["reversal:cancel:too_old", "reversal:correction:accepted"]
    );
    app.advance_hours(1);
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 2, "nothing more");
    app.stop().await;
}

async fn a_cancel_in_doubt_then_too_old_is_parked_not_reversed_twice(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_cancel_window(Duration::from_secs(3600));
    let app = app(backend, &stripe).await;
    billed(&app, "X5").await;
    app.clock.advance(Minutes::minutes(30));
    app.send(&event("X5-o", "X5", "reopened", 73, None)).await;
    app.run_worker().await;
    // No definite answer to the cancel: Stripe may or may not have applied it.
    stripe.push_adjustment_fault(Fault::Status(502));
    app.run_reporter().await;
    assert_eq!(reversal(&app).await.state.as_str(), "pending");
    app.advance_hours(2);
    app.run_reporter().await;
    let r = reversal(&app).await;
    assert_eq!(r.state.as_str(), "failed", "{r:?}");
    let why = r.last_error.unwrap_or_default();
    assert!(why.contains("may have been applied"), "{why}");
    assert_eq!(stripe.events().len(), 1, "no correcting event");
    app.stop().await;
}

async fn a_meter_that_does_not_sum_gets_no_correcting_event(backend: Backend) {
    let stripe = FakeStripe::start().await;
    // The meter counts its events: the preflight reads that from Stripe.
    stripe.add_meter(MeterSpec {
        formula: "count".into(),
        ..MeterSpec::new("resolved_ticket")
    });
    let app = app(backend, &stripe).await;
    app.send(&event("Y1-r", "Y1", "resolved", 0, Some("ai")))
        .await;
    app.send(&event("Y2-r", "Y2", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    // Within 24 hours any meter can cancel.
    app.advance_hours(7);
    app.send(&event("Y1-o", "Y1", "reopened", 80, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(stripe.adjustments().len(), 1);
    // After that, a negative event would count one more: parked, not sent.
    app.advance_hours(41);
    app.send(&event("Y2-o", "Y2", "reopened", 121, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(
        stripe.events().len(),
        2,
        "no correcting event on a count meter"
    );
    let y2 = outcome_id(TENANT, "generic", "Y2", 1);
    let r = app
        .services
        .store
        .reversals(TENANT)
        .await
        .expect("reversals")
        .into_iter()
        .find(|r| r.outcome_id == y2)
        .expect("Y2 reversal");
    assert_eq!(r.state.as_str(), "failed", "{r:?}");
    let why = r.last_error.unwrap_or_default();
    assert!(
        why.contains("aggregates by `count`") && why.contains("credit the customer"),
        "{why}"
    );
    let explained =
        outcome_meter::accounting::explain::explain(&app.services.store, TENANT, "Y2", None)
            .await
            .expect("explain")
            .render();
    assert!(explained.contains("aggregates by `count`"), "{explained}");
    assert_eq!(
        app.outcomes()
            .await
            .iter()
            .find(|o| o.id == y2)
            .map(|o| o.state.to_string()),
        Some("reported".to_string()),
        "still billed at Stripe, and shown so"
    );
    app.stop().await;
}

crate::dual!(
    a_correction_is_never_stamped_ahead_of_the_world,
    correction_survives_a_crash_after_stripe_accepted_it,
    cancel_survives_a_crash_across_the_23h_boundary,
    cancel_age_counts_from_the_first_send_not_the_recorded_report,
    a_cancel_refused_as_too_old_switches_to_a_correction_once,
    a_cancel_in_doubt_then_too_old_is_parked_not_reversed_twice,
    a_meter_that_does_not_sum_gets_no_correcting_event,
);

/// Each cancel call has its own idempotency key, so a definite answer to a later
/// call (a 429) says nothing about an earlier one that got a 502 after Stripe
/// applied it: once the event is too old to cancel, no correcting event is sent
/// (that would reverse twice); the reversal is parked for an operator.
async fn a_cancel_once_in_doubt_stays_in_doubt(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_cancel_window(Duration::from_secs(3600));
    let app = app(backend, &stripe).await;
    billed(&app, "X9").await;
    app.clock.advance(Minutes::minutes(30));
    app.send(&event("X9-o", "X9", "reopened", 73, None)).await;
    app.run_worker().await;
    stripe.push_adjustment_fault(Fault::AcceptThenStatus(502));
    app.run_reporter().await;
    assert_eq!(reversal(&app).await.state.as_str(), "pending");
    stripe.push_adjustment_fault(Fault::Status(429));
    app.clock.advance(Minutes::minutes(10));
    app.run_reporter().await;
    assert_eq!(reversal(&app).await.state.as_str(), "pending");
    app.advance_hours(2);
    app.run_reporter().await;
    let r = reversal(&app).await;
    assert_eq!(stripe.events().len(), 1, "no correcting event: {r:?}");
    assert_eq!(r.state.as_str(), "failed", "{r:?}");
    assert!(
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("may have been applied")),
        "{r:?}"
    );
    app.stop().await;
}

crate::dual!(a_cancel_once_in_doubt_stays_in_doubt,);

/// A stored reversal method this build does not know is never taken as done (the
/// customer could stay billed): the reversal is parked for an operator, nothing is
/// sent, and the outcome stays reported.
async fn an_unknown_stored_method_is_parked_not_taken_as_done(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe).await;
    billed(&app, "X10").await;
    app.advance_hours(1);
    app.send(&event("X10-o", "X10", "reopened", 74, None)).await;
    app.run_worker().await;
    let id = reversal(&app).await.outcome_id;
    app.services
        .store
        .test_support()
        .execute(
            "UPDATE reversals SET method = 'refund' WHERE outcome_id = $1",
            &[&id],
        )
        .await
        .expect("store a method from elsewhere");
    app.run_reporter().await;
    let r = reversal(&app).await;
    assert_eq!(
        (r.state.as_str(), r.method.as_deref()),
        ("failed", Some("refund")),
        "{r:?}"
    );
    assert!(
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("`refund` is unknown to this build")),
        "{r:?}"
    );
    assert!(stripe.adjustments().is_empty(), "nothing cancelled");
    assert_eq!(stripe.events().len(), 1, "no correcting event");
    assert_eq!(app.outcomes().await[0].state.as_str(), "reported");
    app.stop().await;
}

/// A stored state this build does not know is an error where it is read for a
/// decision, naming the column, the value and the row: never a default, never
/// skipped. The metrics snapshot counts it under its stored spelling instead of
/// failing (the gauges would freeze).
async fn an_unknown_stored_state_is_an_error(backend: Backend) {
    use outcome_meter::store::{OutcomeFilter, StoreError};
    use outcome_meter::stripe::mode::StripeMode;
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe).await;
    billed(&app, "X11").await;
    app.advance_hours(1);
    app.send(&event("X11-o", "X11", "reopened", 74, None)).await;
    app.run_worker().await;
    let store = &app.services.store;
    let unknown = |e: StoreError| match e {
        StoreError::Unknown(e) => (e.column, e.value),
        other => panic!("not an unknown value: {other}"),
    };
    store
        .test_support()
        .execute("UPDATE reversals SET state = 'abandoned'", &[])
        .await
        .expect("a state from elsewhere");
    assert_eq!(
        unknown(store.reversals(TENANT).await.expect_err("unknown")),
        ("reversals.state", "abandoned".to_string())
    );
    store
        .test_support()
        .execute("UPDATE outcomes SET state = 'parked'", &[])
        .await
        .expect("a state from elsewhere");
    assert_eq!(
        unknown(
            store
                .list_outcomes(&OutcomeFilter::default())
                .await
                .expect_err("unknown")
        ),
        ("outcomes.state", "parked".to_string())
    );
    let e = store
        .list_outcomes(&OutcomeFilter::default())
        .await
        .expect_err("unknown");
    let x11 = outcome_id(TENANT, "generic", "X11", 1);
    assert!(
        e.to_string()
            .contains("unknown outcomes.state `parked` (known: pending, reported,")
            && e.to_string().ends_with(&format!(" in outcome {x11}")),
        "{e}"
    );
    let q = store
        .queue_counts(StripeMode::Live)
        .await
        .expect("the snapshot counts what it cannot decode");
    assert_eq!(
        (q.outcomes.len(), q.outcomes_unknown),
        (0, vec![("parked".to_string(), 1)])
    );
    let metrics = app.admin_url("/metrics");
    testkit::poll::until(
        "the gauges count the unknown state",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let text = app
                .http
                .get(&metrics)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .unwrap_or_default();
            text.contains("outcome_meter_outcomes{state=\"parked\"} 1")
        },
    )
    .await;
    app.stop().await;
}

/// The outcome of one claimed reversal holds a state this build does not know:
/// that reversal is set aside an hour with the column, the value and the
/// row; the reversal of another tenant claimed with it, and an outcome waiting
/// to be sent, still go through in the same pass.
async fn an_unreadable_reversal_is_set_aside_and_holds_back_no_other(backend: Backend) {
    use outcome_meter::store::OutcomeFilter;
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn_tweaked(
        Options {
            backend,
            stripe: Some(stripe.base_url()),
            contract: clawback_contract(),
            ..Default::default()
        },
        with_other_tenant,
    )
    .await;
    let clock = app.clock.clone();
    stripe.set_clock(move || clock.now().timestamp());
    app.send(&event("X1-r", "X1", "resolved", 0, Some("ai")))
        .await;
    app.send_for(
        OTHER_TENANT,
        &event("Y1-r", "Y1", "resolved", 0, Some("ai")),
    )
    .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 2);
    // Both reopened (clawed back); Z1 resolved, to be sent when its window ends.
    app.advance_hours(1);
    app.send(&event("X1-o", "X1", "reopened", 74, None)).await;
    app.send_for(OTHER_TENANT, &event("Y1-o", "Y1", "reopened", 74, None))
        .await;
    app.send(&event("Z1-r", "Z1", "resolved", 74, Some("ai")))
        .await;
    app.run_worker().await;
    app.advance_hours(73);
    app.run_worker().await;
    let x1 = outcome_id(TENANT, "generic", "X1", 1);
    let y1 = outcome_id(OTHER_TENANT, "generic", "Y1", 1);
    let store = &app.services.store;
    assert_eq!(
        store
            .test_support()
            .execute("UPDATE outcomes SET state = 'parked' WHERE id = $1", &[&x1])
            .await
            .expect("a state from elsewhere"),
        1
    );
    app.run_reporter().await;

    let x = reversal(&app).await;
    assert_eq!(
        (x.outcome_id.as_str(), x.state.as_str()),
        (x1.as_str(), "pending"),
        "set aside, never taken as done or failed"
    );
    let why = x.last_error.unwrap_or_default();
    assert!(
        why.contains("unknown outcomes.state `parked`")
            && why.contains(&format!("in outcome {x1}")),
        "{why}"
    );
    let y = store
        .reversals(OTHER_TENANT)
        .await
        .expect("reversals")
        .remove(0);
    assert_eq!(
        (y.outcome_id.as_str(), y.state.as_str()),
        (y1.as_str(), "done")
    );
    let z1 = store
        .list_outcomes(&OutcomeFilter {
            ticket_id: Some("Z1".into()),
            ..Default::default()
        })
        .await
        .expect("Z1");
    assert_eq!(z1[0].state.as_str(), "reported");
    let sent: Vec<String> = stripe.events().into_iter().map(|e| e.identifier).collect();
    assert!(
        sent.contains(&format!("{y1}_reversal")) && sent.contains(&z1[0].id),
        "{sent:?}"
    );
    assert!(!sent.contains(&format!("{x1}_reversal")), "{sent:?}");
    app.stop().await;
}

/// An outcome whose recorded Stripe mode is a spelling this build does not know
/// is never taken as "reported in this process's mode" (a live outcome would be
/// cancelled in test mode and the reversal marked done): its reversal is set
/// aside an hour, still pending, with the reason, and nothing is sent.
async fn a_reversal_of_an_outcome_reported_in_an_unknown_mode_is_set_aside(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app(backend, &stripe).await;
    billed(&app, "X12").await;
    let id = outcome_id(TENANT, "generic", "X12", 1);
    assert_eq!(
        app.services
            .store
            .test_support()
            .execute(
                "UPDATE outcomes SET reported_mode = 'production' WHERE id = $1",
                &[&id]
            )
            .await
            .expect("a mode from elsewhere"),
        1
    );
    app.services
        .reporter()
        .expect("reporter")
        .warn_other_modes()
        .await
        .expect("an unknown mode is warned about at start, never a reason not to start");
    app.advance_hours(1);
    app.send(&event("X12-o", "X12", "reopened", 74, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    let r = reversal(&app).await;
    assert_eq!(
        r.state.as_str(),
        "pending",
        "set aside, never done nor failed: {r:?}"
    );
    let why = r.last_error.unwrap_or_default();
    assert!(
        why.contains("unknown outcomes.reported_mode `production`") && why.contains(&id),
        "{why}"
    );
    assert!(stripe.adjustments().is_empty(), "nothing cancelled");
    assert_eq!(stripe.events().len(), 1, "no correcting event");
    assert_eq!(app.outcomes().await[0].state.as_str(), "reported");
    app.stop().await;
}

crate::dual!(
    an_unknown_stored_method_is_parked_not_taken_as_done,
    an_unknown_stored_state_is_an_error,
    an_unreadable_reversal_is_set_aside_and_holds_back_no_other,
    a_reversal_of_an_outcome_reported_in_an_unknown_mode_is_set_aside,
);
