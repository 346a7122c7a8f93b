//! The `stripe_usage_records` sink through the real app and the fake Stripe, on
//! both databases: each outcome recorded once through lost answers and 5xx, a
//! record in doubt past its key's 23 hours cleared from the summaries (never
//! resent blindly), a timestamp before the period parked, clawback by
//! `action=set` or parked, dry-run, and reconcile.

use crate::dual;
use crate::support::*;
use chrono::Duration;
use outcome_meter::accounting::period::Period as Dates;
use outcome_meter::accounting::reconcile_usage_records::reconcile_usage_records;
use outcome_meter::clock::Clock;
use outcome_meter::settings::StripeMode;
use outcome_meter::store::ReversalRow;
use outcome_meter::stripe::usage_records::item_check;
use outcome_meter::stripe::usage_records::rules::LEGACY_API_VERSION;
use testkit::fake_stripe::{FakeStripe, Fault};

const DAY: i64 = 86_400;

fn clawback_contract() -> outcome_meter::contract::ContractTerms {
    outcome_meter::contract::ContractTerms {
        clawback: Some(std::time::Duration::from_secs(30 * 86_400)),
        ..Default::default()
    }
}

/// An app on the usage-records sink against a fake Stripe whose clock is the
/// app's, with the tenant's item in a period from `start` to `end` (seconds
/// from t0).
async fn app_on(backend: Backend, start: i64, end: i64) -> (TestApp, FakeStripe) {
    let fake = FakeStripe::start().await;
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(fake.base_url()),
        sink: Sink::StripeUsageRecords,
        contract: clawback_contract(),
        ..Default::default()
    })
    .await;
    let c = app.clock.clone();
    fake.set_clock(move || c.now().timestamp());
    let t = t0().timestamp();
    fake.add_subscription_item(SUBSCRIPTION_ITEM, t + start, t + end);
    (app, fake)
}

/// `n` tickets resolved by the AI at hour 0, confirmed (the window passed).
async fn confirm(app: &TestApp, n: usize) {
    for i in 0..n {
        let body = event(
            &format!("e{i}"),
            &format!("T{i}"),
            "resolved",
            0,
            Some("ai"),
        );
        assert!((200..300).contains(&app.send(&body).await));
    }
    app.advance_hours(73);
    app.run_worker().await;
    assert_eq!(app.outcomes().await.len(), n);
    // A record is sent once its second is 30 s behind the world's clock.
    app.clock.advance(Duration::minutes(1));
}

/// Report, then let backoffs pass, a few times.
async fn report_until_quiet(app: &TestApp) {
    for _ in 0..8 {
        app.run_reporter().await;
        app.clock.advance(Duration::minutes(10));
    }
}

async fn states(app: &TestApp) -> Vec<String> {
    app.outcomes()
        .await
        .into_iter()
        .map(|o| o.state.to_string())
        .collect()
}

async fn reversal(app: &TestApp) -> ReversalRow {
    let all = app
        .services
        .store
        .reversals(TENANT)
        .await
        .expect("reversals");
    all.into_iter().next().expect("one reversal")
}

async fn each_outcome_is_recorded_once_through_lost_answers_and_5xx(backend: Backend) {
    let (app, fake) = app_on(backend, -10 * DAY, 30 * DAY).await;
    confirm(&app, 3).await;
    fake.push_usage_record_fault(Fault::AcceptThenDrop);
    fake.push_usage_record_fault(Fault::Status(503));
    fake.push_usage_record_fault(Fault::AcceptThenStatus(500));
    report_until_quiet(&app).await;
    assert_eq!(states(&app).await, ["reported"; 3]);
    assert_eq!(fake.usage_total(SUBSCRIPTION_ITEM), 3, "each counted once");
    let records = fake.usage_records();
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(fake.usage_record_requests() > 3, "faults were injected");
    // Every call carried the record's confirmation second and the pinned version.
    for o in app.outcomes().await {
        let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
        let keys: Vec<_> = attempts
            .iter()
            .filter_map(|a| a.idempotency_key.clone())
            .collect();
        assert!(
            keys.iter()
                .all(|k| k.starts_with(&format!("{}:usage_record:", o.id))),
            "{keys:?}"
        );
        assert!(attempts[0]
            .request
            .contains(&format!("timestamp={}", o.confirmed_at.as_ms() / 1000)));
    }
    app.stop().await;
}

async fn a_record_in_doubt_past_23_hours_that_landed_is_not_resent(backend: Backend) {
    let (app, fake) = app_on(backend, -10 * DAY, 30 * DAY).await;
    confirm(&app, 1).await;
    fake.push_usage_record_fault(Fault::AcceptThenDrop);
    app.run_reporter().await;
    assert_eq!(states(&app).await, ["pending"], "in doubt, to be retried");
    assert_eq!(fake.usage_total(SUBSCRIPTION_ITEM), 1, "Stripe has it");
    // The key is gone after 24 hours: a resend under it would count twice.
    app.advance_hours(25);
    report_until_quiet(&app).await;
    assert_eq!(states(&app).await, ["reported"]);
    assert_eq!(fake.usage_record_requests(), 1, "never resent");
    assert_eq!(fake.usage_total(SUBSCRIPTION_ITEM), 1);
    let o = &app.outcomes().await[0];
    assert!(
        o.last_error
            .as_deref()
            .unwrap_or("")
            .contains("was recorded"),
        "{o:?}"
    );
    app.stop().await;
}

async fn a_record_in_doubt_past_23_hours_that_did_not_land_is_sent_with_a_new_key(
    backend: Backend,
) {
    let (app, fake) = app_on(backend, -10 * DAY, 30 * DAY).await;
    confirm(&app, 1).await;
    // A 500 that Stripe saved under the key: every resend under it is answered the same.
    fake.push_usage_record_fault(Fault::Saved5xx(500));
    app.run_reporter().await;
    assert_eq!(fake.usage_total(SUBSCRIPTION_ITEM), 0);
    app.advance_hours(25);
    report_until_quiet(&app).await;
    assert_eq!(states(&app).await, ["reported"]);
    assert_eq!(
        fake.usage_total(SUBSCRIPTION_ITEM),
        1,
        "sent once more, counted once"
    );
    let o = &app.outcomes().await[0];
    let keys: Vec<String> = app
        .services
        .store
        .attempts(&o.id)
        .await
        .expect("attempts")
        .into_iter()
        .filter_map(|a| a.idempotency_key)
        .collect();
    assert_eq!(
        keys,
        [
            format!("{}:usage_record:0", o.id),
            format!("{}:usage_record:1", o.id)
        ]
    );
    app.stop().await;
}

async fn a_saved_5xx_replayed_under_its_key_is_judged_from_the_summaries_in_minutes(
    backend: Backend,
) {
    let (app, fake) = app_on(backend, -10 * DAY, 30 * DAY).await;
    confirm(&app, 1).await;
    fake.push_usage_record_fault(Fault::Saved5xx(500));
    app.run_reporter().await;
    // The resend under the key in doubt gets the saved 500 back: the key can say
    // nothing more for 24 hours.
    app.clock.advance(Duration::minutes(1));
    app.run_reporter().await;
    assert_eq!(fake.usage_record_requests(), 2);
    assert_eq!(fake.usage_total(SUBSCRIPTION_ITEM), 0);
    // Not asked again under that key, and not resent under another while the
    // summary may still lag the last call.
    app.clock.advance(Duration::minutes(1));
    app.run_reporter().await;
    assert_eq!(fake.usage_record_requests(), 2, "held, not resent");
    assert_eq!(states(&app).await, ["pending"]);
    // Once the summary includes the last call, it shows the record did not land:
    // sent once more with a new key, well before the key's 23 hours.
    app.clock.advance(Duration::minutes(16));
    app.run_reporter().await;
    app.clock.advance(Duration::minutes(1));
    app.run_reporter().await;
    assert_eq!(states(&app).await, ["reported"]);
    assert_eq!(fake.usage_total(SUBSCRIPTION_ITEM), 1, "counted once");
    let o = &app.outcomes().await[0];
    let keys: Vec<String> = app
        .services
        .store
        .attempts(&o.id)
        .await
        .expect("attempts")
        .into_iter()
        .filter_map(|a| a.idempotency_key)
        .collect();
    assert_eq!(
        keys,
        [
            format!("{}:usage_record:0", o.id),
            format!("{}:usage_record:0", o.id),
            // A new key: N counts the calls made (two so far).
            format!("{}:usage_record:2", o.id)
        ]
    );
    app.stop().await;
}

async fn a_record_before_the_current_period_is_parked_with_the_reason(backend: Backend) {
    // The period started after the outcome's confirmation (hour 73).
    let (app, fake) = app_on(backend, 73 * 3600 + 10, 30 * DAY).await;
    confirm(&app, 1).await;
    app.advance_hours(1);
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "failed");
    assert!(
        o.last_error
            .as_deref()
            .unwrap_or("")
            .contains("before the subscription item's current billing period"),
        "{o:?}"
    );
    assert_eq!(fake.usage_record_requests(), 0, "nothing sent");
    app.stop().await;
}

async fn clawback_sets_the_usage_at_the_records_second(backend: Backend) {
    let (app, fake) = app_on(backend, -10 * DAY, 30 * DAY).await;
    confirm(&app, 2).await;
    app.run_reporter().await;
    assert_eq!(fake.usage_total(SUBSCRIPTION_ITEM), 2);
    app.send(&event("o0", "T0", "reopened", 80, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    let r = reversal(&app).await;
    assert_eq!(
        (r.state.as_str(), r.method.as_deref()),
        ("done", Some("usage_set")),
        "{r:?}"
    );
    // Both outcomes were confirmed in the same second: the set leaves the other's 1.
    assert_eq!(fake.usage_total(SUBSCRIPTION_ITEM), 1);
    let last = fake.usage_records().pop().expect("the set");
    assert_eq!(last.action, "set");
    assert_eq!(last.quantity, 1);
    app.stop().await;
}

async fn clawback_of_a_closed_period_is_parked_with_the_invoice(backend: Backend) {
    let (app, fake) = app_on(backend, -10 * DAY, 4 * DAY).await;
    confirm(&app, 1).await;
    app.run_reporter().await;
    app.advance_hours(48);
    let t = t0().timestamp();
    let invoice = fake
        .start_next_period(SUBSCRIPTION_ITEM, t + 40 * DAY)
        .expect("invoice");
    app.send(&event("o0", "T0", "reopened", 130, None)).await;
    app.run_worker().await;
    app.run_reporter().await;
    let r = reversal(&app).await;
    assert_eq!(r.state.as_str(), "failed", "{r:?}");
    let why = r.last_error.unwrap_or_default();
    assert!(why.contains("has ended") && why.contains(&invoice), "{why}");
    assert_eq!(
        fake.usage_total(SUBSCRIPTION_ITEM),
        0,
        "the new period holds nothing"
    );
    app.stop().await;
}

async fn dry_run_records_what_would_be_sent(backend: Backend) {
    let app = with_one_outcome(Options {
        backend,
        sink: Sink::StripeUsageRecords,
        ..Default::default()
    })
    .await;
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "dry_run");
    let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert!(
        attempts[0].request.contains("action=increment"),
        "{attempts:?}"
    );
    app.stop().await;
}

async fn reconcile_matches_then_shows_drift(backend: Backend) {
    let (app, fake) = app_on(backend, -10 * DAY, 30 * DAY).await;
    confirm(&app, 2).await;
    app.run_reporter().await;
    let legacy = stripe_client(&fake)
        .legacy_usage(LEGACY_API_VERSION)
        .expect("legacy");
    let dates = Dates::parse("2025-12-01", "2026-02-28").expect("dates");
    let run = || {
        reconcile_usage_records(
            &app.services.store,
            &legacy,
            TENANT,
            SUBSCRIPTION_ITEM,
            None,
            StripeMode::Test,
            dates,
            app.clock.now(),
        )
    };
    let r = run().await.expect("reconcile");
    assert!(!r.has_drift(), "{}", r.render());
    assert_eq!((r.lines[0].local, r.lines[0].stripe), (2, 2));
    // Someone else writes on the item: Stripe bills one more.
    let other = outcome_meter::stripe::usage_records::UsageRecord::increment(1, t0().timestamp())
        .expect("record");
    legacy
        .create_usage_record(SUBSCRIPTION_ITEM, &other, "someone-else", None)
        .await
        .expect("created");
    let r = run().await.expect("reconcile");
    assert!(r.has_drift());
    assert!(r.render().contains("delta +1"), "{}", r.render());
    app.stop().await;
}

async fn check_stripe_reports_an_item_unfit_for_usage_records(backend: Backend) {
    let (app, fake) = app_on(backend, -10 * DAY, 30 * DAY).await;
    let client = stripe_client(&fake);
    let checks = item_check::check_items(&client, &app.settings).await;
    assert_eq!(checks.len(), 1);
    assert!(checks[0].problems.is_empty(), "{checks:?}");
    fake.set_subscription_item_price(SUBSCRIPTION_ITEM, "max", None);
    let checks = item_check::check_items(&client, &app.settings).await;
    let text = item_check::render(&checks);
    assert!(text.contains("PROBLEM") && text.contains("`max`"), "{text}");
    app.stop().await;
}

dual!(
    check_stripe_reports_an_item_unfit_for_usage_records,
    each_outcome_is_recorded_once_through_lost_answers_and_5xx,
    a_record_in_doubt_past_23_hours_that_landed_is_not_resent,
    a_record_in_doubt_past_23_hours_that_did_not_land_is_sent_with_a_new_key,
    a_saved_5xx_replayed_under_its_key_is_judged_from_the_summaries_in_minutes,
    a_record_before_the_current_period_is_parked_with_the_reason,
    clawback_sets_the_usage_at_the_records_second,
    clawback_of_a_closed_period_is_parked_with_the_invoice,
    dry_run_records_what_would_be_sent,
    reconcile_matches_then_shows_drift,
);
