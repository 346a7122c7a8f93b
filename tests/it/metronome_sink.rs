//! The Metronome sink through the real app: a tenant with `sink = "metronome"`,
//! the reporter against the fake Metronome (the fake Stripe only makes the
//! process send: nothing of this tenant goes to it).

use crate::support::*;
use chrono::Duration as Span;
use outcome_meter::clock::Clock;
use outcome_meter::contract::ContractTerms;
use outcome_meter::metronome::MetricAggregation;
use outcome_meter::settings::StripeMode;
use outcome_meter::store::ReversalRow;
use std::time::Duration;
use testkit::fake_metronome::{FakeMetronome, Fault};
use testkit::fake_stripe::FakeStripe;

/// The fakes and an app whose tenant bills on Metronome; both fakes tell time
/// by the app's manual clock.
struct World {
    app: TestApp,
    metronome: FakeMetronome,
    _stripe: FakeStripe,
}

async fn world_with(
    backend: Backend,
    contract: ContractTerms,
    tweak: impl FnOnce(&mut outcome_meter::settings::Settings),
) -> World {
    let stripe = FakeStripe::start().await;
    let metronome = FakeMetronome::start().await;
    let app = TestApp::spawn_tweaked(
        Options {
            backend,
            stripe: Some(stripe.base_url()),
            metronome: Some(metronome.base_url()),
            sink: Sink::Metronome,
            contract,
            ..Default::default()
        },
        |s| {
            // The billable metric sums (as the set-up guide says), declared as a
            // tenant with clawback must; a test's tweak may say otherwise.
            let name = s.contract.meter.event_name.clone();
            s.metronome
                .metric_aggregations
                .insert(name, MetricAggregation::Sum);
            tweak(s)
        },
    )
    .await;
    let c = app.clock.clone();
    metronome.set_clock(move || c.now().timestamp());
    let c = app.clock.clone();
    stripe.set_clock(move || c.now().timestamp());
    World {
        app,
        metronome,
        _stripe: stripe,
    }
}

async fn world(backend: Backend) -> World {
    world_with(backend, ContractTerms::default(), |_| {}).await
}

fn clawback_contract() -> ContractTerms {
    ContractTerms {
        clawback: Some(Duration::from_secs(30 * 86_400)),
        ..Default::default()
    }
}

/// `n` tickets resolved by the AI at hour 0, confirmed at hour 73 (not reported).
async fn confirmed(app: &TestApp, n: usize) {
    for i in 0..n {
        let ticket = format!("M{i}");
        let status = app
            .send(&event(
                &format!("{ticket}-r"),
                &ticket,
                "resolved",
                0,
                Some("ai"),
            ))
            .await;
        assert!(status < 300, "{status}");
    }
    app.advance_hours(73);
    app.run_worker().await;
    assert_eq!(app.outcomes().await.len(), n);
}

/// Report, then an hour later again, until nothing is pending (at most `rounds`).
async fn report_until_settled(app: &TestApp, rounds: usize) {
    for _ in 0..rounds {
        app.run_reporter().await;
        if app
            .outcomes()
            .await
            .iter()
            .all(|o| o.state.as_str() != "pending")
        {
            return;
        }
        app.clock.advance(Span::hours(1));
    }
    panic!("outcomes still pending: {:?}", app.outcomes().await);
}

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

/// Each outcome becomes the documented event, once, although the first call's
/// answer is lost after Metronome recorded the batch, the next gets a 503, and
/// the one after that records one event and answers 500.
async fn outcomes_reach_metronome_exactly_once_through_faults(backend: Backend) {
    let w = world(backend).await;
    confirmed(&w.app, 3).await;
    w.metronome.push_fault(Fault::AcceptThenDrop);
    w.metronome.push_fault(Fault::Status(503));
    w.metronome.push_fault(Fault::AcceptSomeThenStatus(1, 500));
    report_until_settled(&w.app, 10).await;

    assert_eq!(w.metronome.faults_injected(), 3);
    assert_eq!(w.metronome.event_count(), 3, "{:?}", w.metronome.events());
    assert!(
        w.metronome.duplicates_ignored() >= 3,
        "the resends were ignored"
    );
    let outcomes = w.app.outcomes().await;
    for o in &outcomes {
        assert_eq!(o.state.as_str(), "reported", "{o:?}");
        let ev = w
            .metronome
            .events()
            .into_iter()
            .find(|e| e.transaction_id == o.id)
            .expect("the outcome's event");
        assert_eq!(ev.customer_id, METRONOME_CUSTOMER);
        assert_eq!(ev.event_type, o.event_name);
        assert_eq!(
            ev.at_ms,
            o.confirmed_at.as_ms(),
            "dated at the confirmation"
        );
        assert_eq!(ev.properties["value"], o.value.to_string());
        assert_eq!(ev.properties["ticket"], o.ticket_id.as_str());
        assert_eq!(ev.properties["provider"], "generic");
        assert_eq!(ev.properties["contract_hash"], o.contract_hash.as_str());
        let results = attempt_results(&w.app, &o.id).await;
        assert_eq!(results.len(), 4, "every call recorded: {results:?}");
        assert_eq!(results.last().map(String::as_str), Some("accepted"));
        let attempts = w
            .app
            .services
            .store
            .attempts(&o.id)
            .await
            .expect("attempts");
        assert!(attempts.iter().all(|a| a.idempotency_key.is_none()));
        assert!(attempts[0].request.contains(&o.id));
        assert_eq!(attempts[0].mode.as_deref(), Some("test"));
    }
    // Nothing more is sent later.
    w.app.clock.advance(Span::hours(2));
    w.app.run_reporter().await;
    assert_eq!(w.metronome.requests(), 4);
    w.app.stop().await;
}

/// 150 outcomes claimed at once go out as 100 + 50 events.
async fn more_than_one_hundred_outcomes_are_sent_in_batches_of_one_hundred(backend: Backend) {
    let w = world_with(backend, ContractTerms::default(), |s| {
        s.reporter.batch_size = 250;
    })
    .await;
    confirmed(&w.app, 150).await;
    w.app.run_reporter().await;
    assert_eq!(w.metronome.requests(), 2);
    assert_eq!(w.metronome.event_count(), 150);
    assert!(w
        .app
        .outcomes()
        .await
        .iter()
        .all(|o| o.state.as_str() == "reported"));
    w.app.stop().await;
}

/// A batch refused as a payload is sent again event by event; each attempt is recorded.
async fn a_refused_batch_is_split_into_single_events(backend: Backend) {
    let w = world(backend).await;
    confirmed(&w.app, 3).await;
    w.metronome.push_fault(Fault::Status(400));
    w.app.run_reporter().await;
    assert_eq!(w.metronome.requests(), 4, "one batch, then three alone");
    assert_eq!(w.metronome.event_count(), 3);
    for o in w.app.outcomes().await {
        assert_eq!(o.state.as_str(), "reported");
        assert_eq!(attempt_results(&w.app, &o.id).await, ["split", "accepted"]);
    }
    // A single event refused is parked with Metronome's message.
    let w2 = world(Backend::Sqlite).await;
    confirmed(&w2.app, 1).await;
    w2.metronome.push_fault(Fault::Status(400));
    w2.app.run_reporter().await;
    let o = &w2.app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "failed");
    assert!(
        o.last_error.as_deref().is_some_and(|e| e.contains("400")),
        "{o:?}"
    );
    w2.app.stop().await;
    w.app.stop().await;
}

/// An outcome older than Metronome's 34 days is parked with the reason, unsent.
async fn a_too_old_outcome_is_parked_with_the_reason(backend: Backend) {
    let w = world(backend).await;
    confirmed(&w.app, 1).await;
    w.app.clock.advance(Span::days(34));
    w.app.run_reporter().await;
    assert_eq!(w.metronome.requests(), 0);
    let o = &w.app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "failed");
    let why = o.last_error.as_deref().unwrap_or_default();
    assert!(
        why.contains("34 days") && why.contains("replay --too-old"),
        "{why}"
    );
    // The command the reason names finds it now (34 days, not Stripe's 35), and
    // `replay --failed` leaves it, counted as too old.
    let oldest = outcome_meter::stripe::limits::oldest_acceptable_ms(w.app.clock.world_now());
    let store = &w.app.services.store;
    let found = store
        .too_old_outcomes(None, None, oldest)
        .await
        .expect("too old");
    assert_eq!(found.len(), 1, "{found:?}");
    let now = Millis::from(w.app.clock.now());
    let (requeued, too_old, _) = store
        .requeue_failed(None, None, now, oldest, false)
        .await
        .expect("requeue");
    assert_eq!((requeued, too_old), (0, 1));
    w.app.stop().await;
}

/// A reported outcome clawed back: one correcting event, dated now, however
/// often the reporter runs.
async fn a_clawback_after_reporting_sends_one_correcting_event(backend: Backend) {
    let w = world_with(backend, clawback_contract(), |_| {}).await;
    confirmed(&w.app, 1).await;
    w.app.run_reporter().await;
    let id = w.app.outcomes().await[0].id.clone();
    w.app.advance_hours(48);
    w.app
        .send(&event("M0-o", "M0", "reopened", 121, None))
        .await;
    w.app.run_worker().await;
    w.metronome.push_fault(Fault::AcceptThenDrop);
    w.app.run_reporter().await;
    assert_eq!(
        reversal(&w.app).await.state.as_str(),
        "pending",
        "retried after the drop"
    );
    w.app.advance_hours(1);
    w.app.run_reporter().await;
    w.app.advance_hours(1);
    w.app.run_reporter().await;

    let r = reversal(&w.app).await;
    assert_eq!(
        (r.state.as_str(), r.method.as_deref()),
        ("done", Some("correction")),
        "{r:?}"
    );
    let events = w.metronome.events();
    assert_eq!(events.len(), 2, "{events:?}");
    let c = &events[1];
    assert_eq!(c.transaction_id, format!("{id}_reversal"));
    assert_eq!(c.customer_id, METRONOME_CUSTOMER);
    assert_eq!(c.properties["value"], "-1");
    assert_eq!(c.properties["reverses"], id.as_str());
    assert_eq!(
        Some(c.at_ms / 1000),
        r.stripe_timestamp,
        "dated once, resent as dated"
    );
    assert_eq!(
        w.metronome.sum(METRONOME_CUSTOMER, &c.event_type, "value"),
        0.0
    );
    assert_eq!(w.app.outcomes().await[0].state.as_str(), "reversed");
    w.app.stop().await;
}

/// On a `count` metric a negative event would count: parked with the explanation.
async fn a_clawback_on_a_count_metric_is_parked_with_the_explanation(backend: Backend) {
    let w = world_with(backend, clawback_contract(), |s| {
        let name = s.contract.meter.event_name.clone();
        s.metronome
            .metric_aggregations
            .insert(name, MetricAggregation::Count);
    })
    .await;
    confirmed(&w.app, 1).await;
    w.app.run_reporter().await;
    w.app.advance_hours(48);
    w.app
        .send(&event("M0-o", "M0", "reopened", 121, None))
        .await;
    w.app.run_worker().await;
    w.app.run_reporter().await;
    let r = reversal(&w.app).await;
    assert_eq!(
        (r.state.as_str(), r.method.as_deref()),
        ("failed", Some("manual")),
        "{r:?}"
    );
    let why = r.last_error.unwrap_or_default();
    assert!(why.contains("`count`") && why.contains("credit"), "{why}");
    assert_eq!(w.metronome.event_count(), 1, "no correcting event");
    w.app.stop().await;
}

/// An outcome reversed before it was sent is voided and never sent.
async fn a_clawback_before_sending_voids_the_outcome(backend: Backend) {
    let w = world_with(backend, clawback_contract(), |_| {}).await;
    confirmed(&w.app, 1).await;
    w.app.send(&event("M0-o", "M0", "reopened", 74, None)).await;
    w.app.advance_hours(1);
    w.app.run_worker().await;
    w.app.run_reporter().await;
    assert_eq!(reversal(&w.app).await.method.as_deref(), Some("void"));
    assert_eq!(w.app.outcomes().await[0].state.as_str(), "voided");
    assert_eq!(w.metronome.requests(), 0);
    w.app.stop().await;
}

/// A clawback of an outcome parked after calls without an answer: Metronome may
/// hold it, so it is neither voided nor sent: parked with what to check.
async fn a_clawback_of_a_failed_outcome_in_doubt_is_parked_not_voided(backend: Backend) {
    let w = world_with(backend, clawback_contract(), |s| {
        s.reporter.max_attempts = 2;
    })
    .await;
    confirmed(&w.app, 1).await;
    w.metronome.push_fault(Fault::AcceptThenDrop);
    w.metronome.push_fault(Fault::AcceptThenDrop);
    w.app.run_reporter().await;
    w.app.clock.advance(Span::hours(1));
    w.app.run_reporter().await;
    assert_eq!(w.app.outcomes().await[0].state.as_str(), "failed");
    w.app.send(&event("M0-o", "M0", "reopened", 76, None)).await;
    w.app.advance_hours(1);
    w.app.run_worker().await;
    w.app.run_reporter().await;
    let r = reversal(&w.app).await;
    assert_eq!(r.state.as_str(), "failed", "{r:?}");
    let why = r.last_error.unwrap_or_default();
    assert!(
        why.contains("Metronome may hold") && why.contains("transaction_id"),
        "{why}"
    );
    assert_eq!(
        w.app.outcomes().await[0].state.as_str(),
        "failed",
        "not voided"
    );
    assert_eq!(w.metronome.event_count(), 1, "nothing more sent");
    w.app.stop().await;
}

/// In a dry-run the event is recorded as it would be sent; Metronome is not called.
async fn dry_run_records_the_event_and_calls_nothing(backend: Backend) {
    let metronome = FakeMetronome::start().await;
    let app = TestApp::spawn(Options {
        backend,
        metronome: Some(metronome.base_url()),
        sink: Sink::Metronome,
        ..Default::default()
    })
    .await;
    confirmed(&app, 1).await;
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "dry_run");
    let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].dry_run);
    let sent: serde_json::Value = serde_json::from_str(&attempts[0].request).expect("JSON");
    assert_eq!(sent[0]["transaction_id"], o.id.as_str());
    assert_eq!(sent[0]["customer_id"], METRONOME_CUSTOMER);
    assert_eq!(metronome.requests(), 0);
    app.stop().await;
}

/// A process that sends refuses to start its reporter for a Metronome tenant
/// without a token; a dry-run needs none.
async fn the_reporter_refuses_to_start_without_a_token(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        sink: Sink::Metronome,
        ..Default::default()
    })
    .await;
    let err = app
        .services
        .reporter()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("metronome.api_token") && err.contains("acme"),
        "{err}"
    );
    app.stop().await;
    let dry = TestApp::spawn(Options {
        backend,
        sink: Sink::Metronome,
        ..Default::default()
    })
    .await;
    assert!(dry.services.reporter().is_ok());
    dry.stop().await;
}

/// An outcome parked after calls without an answer goes back with a plain
/// `replay --failed`: Metronome ignores a repeated transaction id for 34 days
/// (the sink never sends one older), so no operator check is needed first.
async fn a_failed_outcome_in_doubt_is_replayed_without_include_in_doubt(backend: Backend) {
    let w = world_with(backend, ContractTerms::default(), |s| {
        s.reporter.max_attempts = 2;
    })
    .await;
    confirmed(&w.app, 1).await;
    w.metronome.push_fault(Fault::AcceptThenDrop);
    w.metronome.push_fault(Fault::AcceptThenDrop);
    w.app.run_reporter().await;
    w.app.clock.advance(Span::hours(1));
    w.app.run_reporter().await;
    assert_eq!(w.app.outcomes().await[0].state.as_str(), "failed");
    let now = Millis::from(w.app.clock.now());
    let (requeued, too_old, in_doubt) = w
        .app
        .services
        .store
        .requeue_failed(None, None, now, Millis::EPOCH, false)
        .await
        .expect("requeue");
    assert_eq!((requeued, too_old, in_doubt), (1, 0, 0));
    w.app.run_reporter().await;
    assert_eq!(w.app.outcomes().await[0].state.as_str(), "reported");
    assert_eq!(w.metronome.event_count(), 1, "counted once");
    assert_eq!(
        w.metronome.duplicates_ignored(),
        2,
        "the resends were ignored"
    );
    w.app.stop().await;
}

/// Metronome's answers do not say which environment they come from: a process
/// that sends refuses to start unless `metronome.environment` is declared and
/// matches `stripe.mode` (its outcomes are recorded in that mode).
async fn the_metronome_environment_must_match_the_mode(backend: Backend) {
    use outcome_meter::metronome::settings::MetronomeEnvironment;
    for (env, expected) in [
        (None, "metronome.environment is not set"),
        (
            Some(MetronomeEnvironment::Production),
            "production goes with live",
        ),
    ] {
        let w = world_with(backend, ContractTerms::default(), |s| {
            s.metronome.environment = env;
        })
        .await;
        let err = w
            .app
            .services
            .reporter()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(expected), "{err}");
        w.app.stop().await;
    }
}

/// Every tenant on Metronome: a process that sends needs no Stripe key.
async fn a_deployment_billing_only_on_metronome_needs_no_stripe_key(backend: Backend) {
    let w = world_with(backend, ContractTerms::default(), |s| {
        s.stripe.api_key = String::new();
    })
    .await;
    assert!(!w.app.services.settings.uses_stripe());
    confirmed(&w.app, 2).await;
    w.app.run_reporter().await;
    assert_eq!(
        w.metronome.event_count(),
        2,
        "sent, not recorded as a dry-run"
    );
    for o in w.app.outcomes().await {
        assert_eq!(o.state.as_str(), "reported", "{o:?}");
        assert_eq!(o.reported_mode.as_deref(), Some("test"), "{o:?}");
    }
    w.app.stop().await;
}

const CUSTOMER_ID: &str = "d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc";
const METRIC_ID: &str = "9570e4f3-d1da-4b95-ba81-bd40ee002727";

/// reconcile reads Metronome's usage for the customer's id (the tenant reports
/// under an ingest alias): no drift after reporting and a correction; drift once
/// Metronome holds usage that outcome-meter never sent.
async fn reconcile_matches_after_reporting_and_shows_drift(backend: Backend) {
    use outcome_meter::accounting::period::Period;
    use outcome_meter::accounting::reconcile_metronome::reconcile_tenant;
    let w = world_with(backend, clawback_contract(), |s| {
        let name = s.contract.meter.event_name.clone();
        s.metronome
            .billable_metric_ids
            .insert(name, METRIC_ID.into());
    })
    .await;
    let event_type = w.app.settings.contract.meter.event_name.clone();
    w.metronome.set_billable_metric(
        METRIC_ID,
        "Resolved tickets",
        &event_type,
        testkit::fake_metronome::Aggregate::Sum("value".into()),
    );
    w.metronome
        .add_ingest_alias(METRONOME_CUSTOMER, CUSTOMER_ID);
    confirmed(&w.app, 3).await;
    w.app.run_reporter().await;
    // One of them clawed back: a correcting event, dated now (still January).
    w.app.advance_hours(48);
    w.app
        .send(&event("M0-o", "M0", "reopened", 121, None))
        .await;
    w.app.run_worker().await;
    w.app.run_reporter().await;
    assert_eq!(reversal(&w.app).await.state.as_str(), "done");

    let period = Period::parse("2026-01-01", "2026-01-31").expect("period");
    let tenant = w.app.settings.tenant(TENANT).expect("tenant").clone();
    let run = || {
        reconcile_tenant(
            &w.app.settings,
            &w.app.services.store,
            &tenant,
            Some(CUSTOMER_ID),
            period,
        )
    };
    let r = run().await.expect("reconcile");
    assert!(!r.has_drift(), "{}", r.render());
    assert_eq!(r.metrics.len(), 1);
    assert_eq!((r.metrics[0].expected, r.metrics[0].metronome), (2, 2.0));
    assert_eq!(r.metrics[0].billable_metric_id, METRIC_ID);
    assert!(r.render().contains("No drift."));

    // Another sender's event for the same customer and metric.
    let client = outcome_meter::metronome::MetronomeClient::new(
        &w.metronome.base_url(),
        FakeMetronome::TOKEN,
        Duration::from_secs(5),
    )
    .expect("client");
    let mut stray = outcome_meter::metronome::UsageEvent::from_outcome(
        &outcome_meter::metronome::OutcomeInput {
            id: "stray".into(),
            customer_id: CUSTOMER_ID.into(),
            event_type: event_type.clone(),
            value: 5,
            confirmed_at: Millis::from(w.app.clock.now()),
            ticket_id: "X".into(),
            provider: "generic".into(),
            seq: 1,
            contract_hash: "h".into(),
        },
    );
    stray.properties.insert("value".into(), "5".into());
    client.ingest(&[stray]).await.expect("ingest");
    let r = run().await.expect("reconcile");
    assert!(r.has_drift());
    assert_eq!(r.metrics[0].drift, 5.0);
    assert!(r.render().contains("DRIFT"), "{}", r.render());

    // A dry-run has nothing to compare.
    let mut dry = w.app.settings.clone();
    dry.stripe.mode = Some(StripeMode::DryRun);
    let refused = reconcile_tenant(&dry, &w.app.services.store, &tenant, None, period)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(refused.contains("dry-run"), "{refused}");
    w.app.stop().await;
}

/// explain and the statement say the outcome went to Metronome, under which key.
async fn explain_and_the_statement_name_metronome(backend: Backend) {
    use outcome_meter::accounting::{explain::explain, period::Period, statement};
    let w = world(backend).await;
    confirmed(&w.app, 1).await;
    w.app.run_reporter().await;
    let id = w.app.outcomes().await[0].id.clone();
    let text = explain(&w.app.services.store, TENANT, "M0", None)
        .await
        .expect("explain")
        .render();
    assert!(
        text.contains(&format!(
            "sent to Metronome as a usage event, transaction_id {id}"
        )),
        "{text}"
    );
    let st = statement::build(
        &w.app.services.store,
        TENANT,
        CUSTOMER,
        StripeMode::Test,
        Period::parse("2026-01-01", "2026-01-31").expect("period"),
    )
    .await
    .expect("statement");
    assert_eq!(st.billed[0].sink, Sink::Metronome);
    assert!(st.to_html().contains("sent to Metronome as a usage event"));
    w.app.stop().await;
}

crate::dual!(
    explain_and_the_statement_name_metronome,
    reconcile_matches_after_reporting_and_shows_drift,
    outcomes_reach_metronome_exactly_once_through_faults,
    more_than_one_hundred_outcomes_are_sent_in_batches_of_one_hundred,
    a_refused_batch_is_split_into_single_events,
    a_too_old_outcome_is_parked_with_the_reason,
    a_clawback_after_reporting_sends_one_correcting_event,
    a_clawback_on_a_count_metric_is_parked_with_the_explanation,
    a_clawback_before_sending_voids_the_outcome,
    dry_run_records_the_event_and_calls_nothing,
    the_reporter_refuses_to_start_without_a_token,
    a_deployment_billing_only_on_metronome_needs_no_stripe_key,
    a_failed_outcome_in_doubt_is_replayed_without_include_in_doubt,
    a_clawback_of_a_failed_outcome_in_doubt_is_parked_not_voided,
    the_metronome_environment_must_match_the_mode,
);
