//! The Stripe edge (issue 11): explicit modes, a fresh idempotency key for every
//! call (Stripe saves a 500 under its key), 424 retried, Stripe Connect.

use crate::support::*;
use outcome_meter::accounting::period::Period;
use outcome_meter::accounting::reconcile::{reconcile, StripeTarget};
use outcome_meter::accounting::{outcomes, statement};
use outcome_meter::clock::Clock;
use outcome_meter::contract::ContractTerms;
use outcome_meter::settings::StripeMode;
use outcome_meter::stripe::limits;
use std::time::Duration;
use testkit::fake_stripe::{FakeStripe, Fault};

/// An app on the fake Stripe (test mode unless `live`), with one billable
/// outcome confirmed and waiting in the outbox.
async fn one_outcome(backend: Backend, stripe: &FakeStripe, live: bool) -> TestApp {
    with_one_outcome(Options {
        backend,
        stripe: Some(stripe.base_url()),
        live,
        ..Default::default()
    })
    .await
}

fn around_now(app: &TestApp) -> Period {
    let now = app.clock.now().timestamp_millis();
    Period {
        from: Millis::from_ms(now - 10 * 86_400_000),
        to: Millis::from_ms(now + 86_400_000),
    }
}

/// Stripe saved a 500 under the first key: the same key would get that 500 for
/// 24 hours. The retry's fresh key gets through, and nothing is billed twice.
async fn a_saved_500_does_not_block_the_retry(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::Saved5xx(500));
    let app = one_outcome(backend, &stripe, false).await;
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!((o.state.as_str(), o.attempts), ("pending", 1));
    app.clock.advance(chrono::Duration::minutes(10));
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "reported");
    let events = stripe.events();
    assert_eq!(events.len(), 1, "billed once");
    assert_eq!(
        events[0].idempotency_key.as_deref(),
        Some(format!("{}:meter_event:1", o.id).as_str())
    );
    let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
    let keys: Vec<_> = attempts
        .iter()
        .map(|a| a.idempotency_key.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        keys,
        [
            format!("{}:meter_event:0", o.id),
            format!("{}:meter_event:1", o.id)
        ]
    );
    assert_eq!(attempts[0].status_code, Some(500));
    assert_eq!(attempts[1].mode.as_deref(), Some("test"));
    assert_eq!(attempts[1].livemode, Some(false), "Stripe's word is kept");
    app.stop().await;
}

/// Stripe recorded the event and then answered 500: the retry under a new key
/// meets Stripe's duplicate-identifier check, which counts as delivered.
async fn accepted_then_500_is_deduplicated_by_the_identifier(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::AcceptThenStatus(500));
    stripe.push_fault(Fault::Status(424));
    let app = one_outcome(backend, &stripe, false).await;
    app.run_reporter().await;
    app.clock.advance(chrono::Duration::minutes(10));
    app.run_reporter().await;
    assert_eq!(
        app.outcomes().await[0].state.as_str(),
        "pending",
        "424 (a dependency outside Stripe failed) is retried"
    );
    app.clock.advance(chrono::Duration::minutes(10));
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "reported");
    assert_eq!(stripe.events().len(), 1);
    assert_eq!(stripe.duplicate_refusals(), 1);
    app.stop().await;
}

/// A cancel that got a 500 is sent again under a new key; the event is
/// cancelled once and no correcting event is ever sent for it.
async fn a_cancel_after_a_500_never_reverses_twice(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_adjustment_fault(Fault::AcceptThenStatus(500));
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        contract: ContractTerms {
            clawback: Some(Duration::from_secs(30 * 86_400)),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let clock = app.clock.clone();
    stripe.set_clock(move || clock.now().timestamp());
    app.send(&event("C1-r", "C1", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    app.send(&event("C1-o", "C1", "reopened", 74, None)).await;
    app.advance_hours(2);
    app.run_worker().await;
    app.run_reporter().await;
    app.clock.advance(chrono::Duration::minutes(10));
    app.run_reporter().await;
    let r = app
        .services
        .store
        .reversals(TENANT)
        .await
        .expect("reversals");
    assert_eq!(
        (r[0].state.as_str(), r[0].method.as_deref()),
        ("done", Some("cancel"))
    );
    assert_eq!(stripe.adjustments().len(), 2, "sent twice, under two keys");
    let id = app.outcomes().await[0].id.clone();
    let attempts = app.services.store.attempts(&id).await.expect("attempts");
    let cancels: Vec<_> = attempts
        .iter()
        .filter(|a| a.result.starts_with("reversal:cancel:"))
        .collect();
    assert_eq!(cancels.len(), 2, "{attempts:?}");
    assert!(
        cancels
            .iter()
            .all(|a| a.mode.as_deref() == Some("test") && a.idempotency_key.is_some()),
        "{cancels:?}"
    );
    assert_eq!(
        cancels[1].livemode,
        Some(false),
        "Stripe's livemode is kept for reversals too"
    );
    assert_eq!(stripe.events().len(), 1, "no correcting event");
    let client = stripe_client(&stripe);
    let mut meters = std::collections::BTreeMap::new();
    meters.insert("resolved_ticket".to_string(), "mtr_1".to_string());
    stripe.set_meter("mtr_1", "resolved_ticket");
    let period = around_now(&app);
    let rec = reconcile(
        &app.services.store,
        &client,
        &meters,
        TENANT,
        &StripeTarget {
            customer: CUSTOMER,
            account: None,
            mode: StripeMode::Test,
        },
        period,
    )
    .await
    .expect("reconcile");
    assert!(!rec.has_drift(), "{}", rec.render());
    app.stop().await;
}

/// Reported in test mode is not billed in live mode: the live statement says
/// so, and `replay --from-test` sends it to live Stripe with its identifier.
async fn test_mode_outcomes_are_sent_to_live_only_by_replay(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = one_outcome(backend, &stripe, false).await;
    app.run_reporter().await;
    let o = app.outcomes().await.remove(0);
    assert_eq!(
        (o.state.as_str(), o.reported_mode.as_deref()),
        ("reported", Some("test"))
    );
    // The same database, now in live mode.
    let mut app = app;
    app.settings.stripe.mode = Some(StripeMode::Live);
    app.settings.stripe.api_key = FakeStripe::API_KEY_LIVE.into();
    let app = app.restart().await;
    let store = &app.services.store;
    let st = statement::build(store, TENANT, CUSTOMER, StripeMode::Live, around_now(&app))
        .await
        .expect("statement");
    assert_eq!(st.mode, "live");
    assert_eq!(
        (st.totals[0].reported_count, st.totals[0].other_mode_count),
        (0, 1),
        "nothing billed in live mode yet"
    );
    assert_eq!(
        st.billed[0].status_note.as_deref(),
        Some("reported in test mode, not billed in live mode")
    );
    assert!(st.to_html().contains("not billed in live mode"));
    assert!(st.to_csv().contains("not billed in live mode"));
    let page = outcomes::page(store, &Default::default())
        .await
        .expect("outcomes");
    assert!(
        outcomes::render(&page).contains("reported (test)"),
        "{}",
        outcomes::render(&page)
    );
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 1, "nothing is sent by itself");
    let q = store.queue_counts(StripeMode::Live).await.expect("counts");
    assert_eq!(
        (q.unbilled_other_mode, q.oldest_unbilled_outcome),
        (1, Some(o.confirmed_at)),
        "/metrics shows it unbilled, and ageing"
    );

    let oldest = limits::oldest_acceptable_ms(app.clock.world_now());
    assert_eq!(
        store
            .count_sent_in(StripeMode::Test, None, None, oldest)
            .await
            .expect("count"),
        (1, 0)
    );
    let now = Millis::from(app.clock.now());
    let queued = store
        .requeue_sent_in(StripeMode::Test, None, None, now)
        .await
        .expect("requeue");
    assert_eq!(queued, 1);
    app.run_reporter().await;
    let events = stripe.events();
    assert_eq!(events.len(), 2);
    assert!(!events[0].livemode && events[1].livemode);
    assert_eq!(
        events[1].identifier, o.id,
        "the same identifier, in live mode"
    );
    let o = app.outcomes().await.remove(0);
    assert_eq!(
        (o.state.as_str(), o.reported_mode.as_deref()),
        ("reported", Some("live"))
    );
    let st = statement::build(store, TENANT, CUSTOMER, StripeMode::Live, around_now(&app))
        .await
        .expect("statement");
    assert_eq!(
        (st.totals[0].reported_count, st.totals[0].other_mode_count),
        (1, 0)
    );
    // Nothing left to move; the test mode's statement no longer counts it.
    assert_eq!(
        store
            .requeue_sent_in(StripeMode::Test, None, None, now)
            .await
            .expect("requeue"),
        0
    );
    app.stop().await;
}

/// A dry-run records; `replay --dry-run` sends what it recorded once the
/// service reports. Those older than Stripe's 35 days are parked as too old.
async fn dry_run_outcomes_are_sent_by_replay_and_too_old_ones_parked(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    app.send(&event("d1", "D1", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    app.advance_hours(40 * 24);
    app.send(&event("d2", "D2", "resolved", 73 + 40 * 24, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let all = app.outcomes().await;
    assert!(all.iter().all(|o| o.state.as_str() == "dry_run"), "{all:?}");
    let mut app = app;
    app.settings.stripe.mode = Some(StripeMode::Test);
    app.settings.stripe.api_base = stripe.base_url();
    app.settings.stripe.api_key = FakeStripe::API_KEY.into();
    let app = app.restart().await;
    let store = &app.services.store;
    let oldest = limits::oldest_acceptable_ms(app.clock.world_now());
    assert_eq!(
        store
            .count_sent_in(StripeMode::DryRun, None, None, oldest)
            .await
            .expect("count"),
        (2, 1)
    );
    let now = Millis::from(app.clock.now());
    store
        .requeue_sent_in(StripeMode::DryRun, None, None, now)
        .await
        .expect("requeue");
    app.run_reporter().await;
    let mut all = app.outcomes().await;
    all.sort_by_key(|o| o.confirmed_at);
    assert_eq!(all[0].state.as_str(), "failed");
    assert!(
        all[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("older than Stripe accepts")),
        "{:?}",
        all[0].last_error
    );
    assert_eq!(
        (all[1].state.as_str(), all[1].reported_mode.as_deref()),
        ("reported", Some("test"))
    );
    // The statement shows why the old one is not billed.
    let from = Millis::from_ms(all[0].confirmed_at.as_ms() - 86_400_000);
    let period = Period {
        from,
        to: Millis::from_ms(app.clock.now().timestamp_millis() + 86_400_000),
    };
    let st = statement::build(store, TENANT, CUSTOMER, StripeMode::Test, period)
        .await
        .expect("statement");
    let line = st
        .billed
        .iter()
        .find(|b| b.outcome_id == all[0].id)
        .expect("the parked outcome's line");
    assert!(
        line.status_note
            .as_deref()
            .is_some_and(|n| n.contains("older than Stripe accepts")),
        "{line:?}"
    );
    assert_eq!(stripe.events().len(), 1);
    app.stop().await;
}

/// Stripe Connect: the tenant's connected account goes in `Stripe-Account` on
/// every call, the event lives there, and reconcile reads it there.
async fn a_connected_account_is_sent_as_stripe_account(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        stripe_account: Some("acct_1ConnectedTest".into()),
        ..Default::default()
    })
    .await;
    app.send(&event("k1", "K1", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let events = stripe.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].account.as_deref(), Some("acct_1ConnectedTest"));
    stripe.set_meter("mtr_1", "resolved_ticket");
    let meters = [("resolved_ticket".to_string(), "mtr_1".to_string())].into();
    let client = stripe_client(&stripe);
    let period = around_now(&app);
    let store = &app.services.store;
    let on_account = reconcile(
        store,
        &client,
        &meters,
        TENANT,
        &StripeTarget {
            customer: CUSTOMER,
            account: Some("acct_1ConnectedTest"),
            mode: StripeMode::Test,
        },
        period,
    )
    .await
    .expect("reconcile");
    assert!(!on_account.has_drift(), "{}", on_account.render());
    let on_platform = reconcile(
        store,
        &client,
        &meters,
        TENANT,
        &StripeTarget {
            customer: CUSTOMER,
            account: None,
            mode: StripeMode::Test,
        },
        period,
    )
    .await
    .expect("reconcile");
    assert!(
        on_platform.has_drift(),
        "the platform's own account does not hold it"
    );
    app.stop().await;
}

/// Stripe applied a call but its answer was lost, and the outcome could not be
/// sent again within a day (a preflight problem, a stopped reporter): Stripe's
/// identifier dedupe may have expired, so it is parked for an operator, not
/// sent into a second bill; `replay --failed` leaves it unless told.
async fn an_unanswered_call_is_not_resent_past_stripes_dedupe_window(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::AcceptThenDrop);
    let app = one_outcome(backend, &stripe, false).await;
    let clock = app.clock.clone();
    stripe.set_clock(move || clock.now().timestamp());
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 1, "Stripe has it");
    assert_eq!(app.outcomes().await[0].state.as_str(), "pending");
    app.advance_hours(25);
    app.run_reporter().await;
    let o = app.outcomes().await.remove(0);
    assert_eq!(o.state.as_str(), "failed");
    assert!(
        o.last_error
            .as_deref()
            .is_some_and(|e| e.contains("24 hours") && e.contains("--include-in-doubt")),
        "{:?}",
        o.last_error
    );
    assert_eq!(stripe.events().len(), 1, "not sent a second time");
    let store = &app.services.store;
    let now = Millis::from(app.clock.now());
    assert_eq!(
        store
            .requeue_failed(None, None, now, Millis::from_ms(i64::MIN), false)
            .await
            .expect("requeue"),
        (0, 0, 1),
        "left in doubt"
    );
    assert_eq!(
        store
            .requeue_failed(None, None, now, Millis::from_ms(i64::MIN), true)
            .await
            .expect("requeue"),
        (1, 0, 0),
        "an operator who checked Stripe sends it"
    );
    app.stop().await;
}

crate::dual!(
    an_unanswered_call_is_not_resent_past_stripes_dedupe_window,
    a_saved_500_does_not_block_the_retry,
    accepted_then_500_is_deduplicated_by_the_identifier,
    a_cancel_after_a_500_never_reverses_twice,
    test_mode_outcomes_are_sent_to_live_only_by_replay,
    dry_run_outcomes_are_sent_by_replay_and_too_old_ones_parked,
    a_connected_account_is_sent_as_stripe_account,
);

/// Run `outcome-meter` with a configuration file and an environment.
fn run(config: &str, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("om.toml");
    let db = dir.path().join("om.db");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n{config}\n[[tenants]]\nid = \"acme\"\nstripe_customer_id = \"cus_1\"\n\
             [tenants.providers.generic]\nsecrets = [\"{GENERIC_SECRET}\"]\n",
            db.display()
        ),
    )
    .expect("config");
    let command = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"));
        cmd.arg("--config")
            .arg(&path)
            .args(args)
            .current_dir(dir.path())
            .env_remove("STRIPE_API_KEY")
            .env("RUST_LOG", "error")
            .env("OUTCOME_METER__SERVER__LISTEN", "127.0.0.1:0")
            .env("OUTCOME_METER__SERVER__ADMIN_LISTEN", "");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run outcome-meter")
    };
    // The schema first (when the configuration loads at all): migrating needs no key.
    let _ = command(&["migrate"]);
    command(args)
}

fn refused(out: &std::process::Output, words: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must refuse: {stderr}");
    assert!(stderr.contains(words), "{stderr}");
}

/// Nothing is a dry-run by accident: no mode, a lost key, or a key of the other
/// kind stops `serve` before it listens.
#[test]
fn serve_refuses_a_mode_it_cannot_honour() {
    refused(&run("", &[], &["serve"]), "stripe.mode is required");
    refused(
        &run("[stripe]\nmode = \"live\"", &[], &["serve"]),
        "no Stripe key is set",
    );
    refused(
        &run(
            "[stripe]\nmode = \"live\"",
            &[("STRIPE_API_KEY", "sk_test_abcdefghijkl")],
            &["serve"],
        ),
        "the Stripe key is a test key",
    );
    refused(
        &run(
            "[stripe]\nmode = \"test\"",
            &[("STRIPE_API_KEY", "rk_live_abcdefghijkl")],
            &["serve"],
        ),
        "the Stripe key is a live key",
    );
    refused(
        &run(
            "[stripe]\nmode = \"dry-run\"",
            &[("STRIPE_API_KEY", "sk_live_abcdefghijkl")],
            &["serve"],
        ),
        "nothing would be sent",
    );
    // Reading the database needs no key, whatever the mode.
    let out = run("[stripe]\nmode = \"live\"", &[], &["outcomes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The replay of a dry-run's outcomes asks before it does anything.
    let out = run("[stripe]\nmode = \"live\"", &[], &["replay", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("--yes"), "{stdout}");
    refused(
        &run(
            "[stripe]\nmode = \"test\"",
            &[],
            &["replay", "--from-test", "--yes"],
        ),
        "sent from live mode",
    );
}
